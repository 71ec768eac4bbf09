"""Federated evaluation at the node: score a released cohort against this site's records.

The cohort arrives as CSV bytes; it must be valid against the site's own schema
(it is checked like any file). The site's records are scored with
`protocols.evaluation.evaluate_cohort` without figures, and only the scalar
scores listed in `protocols.messages.REPLY_SCORES` are returned: the rest of
the report, which describes the site's records, stays here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from node.site_data import SiteData
from protocols.errors import RecordError
from protocols.evaluation import evaluate_cohort, site_scores
from protocols.records import drop_identifiers, read_table, validate_records
from protocols.schema import Schema


def score_cohort(schema: Schema, site: SiteData, cohort_csv: bytes) -> dict[str, float]:
    """The whitelisted scores of the cohort against this site's records."""
    with tempfile.TemporaryDirectory(prefix="fedsynth-eval-") as tmp:
        path = Path(tmp) / "cohort.csv"
        path.write_bytes(cohort_csv)
        try:  # messages name the released cohort, not this temporary copy
            frame = drop_identifiers(read_table(path), schema)
        except RecordError as exc:
            raise RecordError(f"Site {site.name} refuses to score the cohort: "
                              f"{str(exc).replace(str(path), 'the released cohort')}") from None
    validation = validate_records(frame, schema, source="the released cohort")
    if not validation.ok:
        raise RecordError(f"Site {site.name} refuses to score the cohort: it does not match "
                          f"the site's schema ({validation.summary()}).")
    report = evaluate_cohort(schema, site.parsed, validation.parsed, figures=False)
    return site_scores(report)
