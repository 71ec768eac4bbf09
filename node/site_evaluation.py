"""Federated evaluation at the node: one DP release per study, of the study's own cohort.

A node that scored whatever a coordinator sent would answer membership
questions for free (a one-row "cohort" holding a patient, scored by its exact
copies). So a node evaluates only when all of this holds, and declines
otherwise:
- the plan asks for it (`evaluation-epsilon` > 0) and the site's operator has
  not turned it off (`federated-evaluation = false`);
- the cohort's manifest is laid out as fedsynth writes it, signed by the
  consortium key the node trusts (from its kit, never from the coordinator),
  names this very study, and lists the cohort sent (sha256 and size);
- the site's ledger holds this study's reserve (the site took part, and the
  study's ε, evaluation included, was committed when it started) and no
  evaluation of it yet. The evaluation is charged before anything is computed.

What leaves is the noisy count tables of `protocols.evaluation.release`; the
scores a hospital wants with figures, exact copies or distances to its records
stay with `fedsynth-node evaluate`, which runs locally and sends nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from node.ledger.anchor import LedgerAnchor
from node.ledger.round_charging import RoundRequest, charge_evaluation
from node.site_config import SiteSource
from protocols.errors import PlanError, RecordError
from protocols.evaluation.release import evaluation_layout, noisy_evaluation_tables
from protocols.generators import family_for
from protocols.plan import StudyPlan
from protocols.privacy.ledger import StudySpend
from protocols.records import drop_identifiers, read_table, validate_records
from protocols.release.verification import load_trusted_key, verify_study_cohort
from protocols.schema import Schema


def evaluation_release(source: SiteSource, state_dir: Path, schema: Schema, plan: StudyPlan,
                       cohort_csv: bytes, manifest_bytes: bytes,
                       anchor: LedgerAnchor = LedgerAnchor()) -> dict[str, np.ndarray]:
    """The site's noisy evaluation tables of the study's released cohort, charged once."""
    if not plan.evaluated:
        raise PlanError("The plan has no evaluation-epsilon: nothing was budgeted for a "
                        "federated evaluation, so the site releases none.")
    if not source.manifest_public_key:
        raise PlanError("This node has no 'manifest-public-key' (the consortium's "
                        "manifest-signing.pub in its kit): it cannot tell the study's "
                        "cohort from any other file, so it evaluates none.")
    trusted = load_trusted_key(Path(source.manifest_public_key))
    study = plan.fingerprint(schema.sha256)
    verify_study_cohort(manifest_bytes, cohort_csv, trusted, study)
    request = RoundRequest(site=source.site_name or "this site", plan=plan,
                           schema_sha256=schema.sha256, round=0, model_sha256="")
    charge_evaluation(state_dir, request,
                      lambda spend: epsilon_with_evaluation(plan, schema, spend), anchor)
    _, site = source.load()
    cohort = _parse_cohort(schema, cohort_csv)
    return noisy_evaluation_tables(evaluation_layout(schema), plan, site.parsed, cohort)


def epsilon_with_evaluation(plan: StudyPlan, schema: Schema, spend: StudySpend) -> float:
    """ε of what the site has released in the study (`spend.steps_total` units of its
    family's release) together with the evaluation release."""
    return family_for(plan).epsilon(plan, schema, spend.steps_total, evaluated=True)


def _parse_cohort(schema: Schema, cohort_csv: bytes):
    with tempfile.TemporaryDirectory(prefix="fedsynth-eval-") as tmp:
        path = Path(tmp) / "cohort.csv"
        path.write_bytes(cohort_csv)
        try:  # messages name the released cohort, not this temporary copy
            frame = drop_identifiers(read_table(path), schema)
        except RecordError as exc:
            raise RecordError(f"The released cohort cannot be read: "
                              f"{str(exc).replace(str(path), 'the released cohort')}") from None
    validation = validate_records(frame, schema, source="the released cohort")
    validation.raise_if_invalid()
    return validation.parsed
