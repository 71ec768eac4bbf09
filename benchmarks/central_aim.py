"""Central AIM on pooled, binned training rows: the privacy–utility benchmark's anchor.

AIM (McKenna, Mullins, Sheldon, Miklau, "AIM: an adaptive and iterative mechanism for
differentially private synthetic data", VLDB 2022), run by smartnoise-synth's
`AIMSynthesizer`, an implementation that is not ours. This script runs in the anchor's own
virtual environment (`benchmarks/anchor.py` makes it), never in fedsynth's: smartnoise-synth
pins packages fedsynth cannot share, so it imports nothing from fedsynth.

    python central_aim.py CODES.csv DOMAIN.json OUT.csv --epsilon 3 --delta 1e-5 \\
        --rows 2000 --seed 0

CODES.csv holds one integer bin code per column and record, DOMAIN.json each column's
number of bins, both cut from the study's schema alone by the caller. smartnoise-synth's
preprocessor is given a transformer fitted on those public code ranges only, so it reads
no bounds or categories from the records and spends none of the budget: AIM's
measurements get all of (ε, δ). The workload is every 3-way marginal of at most
`AIMSynthesizer`'s default 10,000 cells (their 1- and 2-way subsets are AIM's candidates
too); the model size limit and the rounds (16 per column) are AIM's defaults.

AIM's Gaussian noise comes from OpenDP's CSPRNG, which no seed fixes; `--seed` fixes only
NumPy's global generator, which AIM's exponential mechanism and mbi's sampler draw from,
so repeats with different seeds differ in every part.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from snsynth.aim import AIMSynthesizer
from snsynth.transform import LabelTransformer, TableTransformer

WORKLOAD_DEGREE = 3


def main() -> None:
    args = _parser().parse_args()
    domain = json.loads(args.domain.read_text(encoding="utf-8"))
    codes = pd.read_csv(args.codes)[list(domain)]
    np.random.seed(args.seed)
    synthesizer = AIMSynthesizer(epsilon=args.epsilon, delta=args.delta,
                                 degree=WORKLOAD_DEGREE)
    synthesizer.fit(codes, transformer=public_transformer(domain), preprocessor_eps=0.0)
    if synthesizer.epsilon != args.epsilon:
        raise SystemExit(f"smartnoise-synth's preprocessor spent budget: ε left for AIM is "
                         f"{synthesizer.epsilon}, not {args.epsilon}")
    sample = pd.DataFrame(synthesizer.sample(args.rows), columns=list(domain))
    sample.astype(int).to_csv(args.out, index=False)


def public_transformer(domain: dict[str, int]) -> TableTransformer:
    """One label transformer per column, fitted on the codes 0 … bins − 1 (public, from the
    schema), so that its cardinality is the whole declared domain, not the codes seen."""
    transformers = []
    for bins in domain.values():
        column = LabelTransformer(nullable=False)
        column.fit(list(range(bins)))
        transformers.append(column)
    return TableTransformer(transformers)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("codes", type=Path)
    parser.add_argument("domain", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epsilon", type=float, required=True)
    parser.add_argument("--delta", type=float, required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    return parser


if __name__ == "__main__":
    main()
