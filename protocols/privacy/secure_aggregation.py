"""The SecAgg+ contract: how updates are encoded so the coordinator holds only their sum.

With `secure-aggregation = true` a study runs Flower's SecAgg+ protocol
(legacy workflow API: `SecAggPlusWorkflow` at the coordinator,
`secaggplus_mod` at each node). A node quantises its weights into integers,
adds pairwise masks that cancel only in the sum and a private mask whose seed
is secret-shared among the other sites; the coordinator learns the sum (and,
from it, the weighted average) and nothing about any one site's update.

What both sides must agree on lives here:

- `ARRAY_NAMES`: the legacy `FitIns` carries arrays without names, so the
  coordinator sends the global model's names, in order, in the train config.
- The quantisation: each value x (times the site's weight share w / W) is
  clipped to [-C, C] and mapped to an integer in [0, T]; the masked sum lives
  modulo M = 2**32. T = 2**26 keeps the sum of up to `MAX_SITES` = 63 sites
  below M (n·T < M, so the sum never wraps) and the quantisation step 2C/T
  small: 1.9e-6 for the VAE's C = 64, about a float32 ulp at 16. Nodes hand
  the quantiser float64 values (in float32, x + C alone would round by 3.8e-6).
- The clipping range C per generator family, measured, not guessed
  (in-process FedAvg of `protocols.generators.vae.training.train_round` over the 5 demo sites,
  default plan, largest |weight| any site sent): VAE 0.18 at initialisation,
  0.96 after 15 rounds at ε = 3, 1.48 after 40 rounds at ε = 1, 4.5 after
  15 rounds without DP (`epsilon = inf`), 15.7 after 60 rounds without DP
  (weights grow ~0.25 a round without noise, ~0.04 with it; a round moves a
  weight by at most 0.42). C = 64 leaves 4× over the largest of these, 67×
  over the default DP study. Marginals tables
  are noisy counts, bounded by a site's size plus noise: C = 2**20 (a million
  records per cell) with a step of 1/32 of a count, far below the DP noise.
- The masks are expanded from their 32-byte seeds by SHAKE-256 (`expand_mask`),
  on both sides. Flower 1.42's own expansion (`pseudo_rand_gen`) folds the seed to
  32 bits and feeds numpy's MT19937: a coordinator that knows one site's private
  mask seed (it learns every survivor's) can search the 2^32 pairwise seeds and
  recover a single site's update in a two-site study (found in review). Nodes and
  coordinator replace that function in Flower's mod and workflow
  (`node.secure_aggregation`, `coordinator.secure_aggregation`); a node or
  coordinator still using Flower's would not produce masks that cancel, and the
  study would stop at the coordinator's check of the average.
- Nothing is clipped silently: a node refuses to send an update with a value
  beyond C (or a FedAvg weight beyond W), and the coordinator refuses an
  average beyond C. Clipping by the quantiser would bias the average unseen.
- W (`max_weight`): 1, since every site weighs the same (no size leaves a
  node), so the weights are quantised at full precision.
- The threshold t of Shamir shares needed to reconstruct a site's masks is
  round(2/3 · n) (at least 2), with every site holding a share of every other
  (`num_shares` = n): t > n/2, so a coordinator cannot collect both a site's
  private-mask share and its pairwise-key share by telling half the sites it
  dropped out and the other half it survived, and fewer than t colluding sites
  learn nothing. (A coordinator that lists one site as both is refused by the
  sites, `node.secure_aggregation`; the guarantee is against a coordinator
  that follows the protocol: the key exchange it relays is not authenticated.)
  Up to n − t sites may drop out in a round: 1 of 3, 2 of 5, 3 of 10, 7 of 20.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


ARRAY_NAMES = "array-names"

QUANTIZATION_RANGE = 2**26
MODULUS_RANGE = 2**32
MAX_SITES = MODULUS_RANGE // QUANTIZATION_RANGE - 1
RECONSTRUCTION_FRACTION = 2 / 3


@dataclass(frozen=True)
class SecureRanges:
    """The quantisation bounds of one study: |value| ≤ clipping_range, weight ≤ max_weight."""

    clipping_range: float
    max_weight: float


def secure_ranges(clipping_range: float) -> SecureRanges:
    """The bounds of a study: C its generator family's range; W = 1 (equal weights)."""
    return SecureRanges(clipping_range, 1.0)


MASK_DOMAIN = b"fedsynth SecAgg+ mask v1"


def expand_mask(seed: bytes, num_range: int, dimensions_list: list[tuple[int, ...]]
                ) -> list[np.ndarray]:
    """Uniform integers in [0, `num_range`) for each shape in `dimensions_list`, expanded
    from the whole `seed` by SHAKE-256 (an extendable-output function: its output is
    indistinguishable from random without the seed, all 256 bits of it). `num_range` must
    be a power of two up to 2^32, so that 4 bytes reduce to it without bias. The same
    signature as Flower's `pseudo_rand_gen`, which it replaces."""
    if num_range < 2 or num_range > 2**32 or num_range & (num_range - 1):
        raise ValueError(f"mask range {num_range} is not a power of two up to 2^32")
    sizes = [int(np.prod(d)) if len(d) else 1 for d in dimensions_list]
    stream = hashlib.shake_256(MASK_DOMAIN + seed).digest(4 * sum(sizes))
    values = np.frombuffer(stream, dtype="<u4").astype(np.int64) % num_range
    out, start = [], 0
    for dimension, size in zip(dimensions_list, sizes, strict=True):
        part = values[start:start + size]
        out.append(part.reshape(dimension) if len(dimension) else np.array(part[0]))
        start += size
    return out


def reconstruction_threshold(n_sites: int) -> int:
    """Shares needed to unmask a site among `n_sites`, as SecAgg+ rounds our fraction."""
    return max(2, round(RECONSTRUCTION_FRACTION * n_sites))


def out_of_range(arrays: Iterable[tuple[str, np.ndarray]], bound: float) -> str | None:
    """Why `arrays` cannot be quantised within ±`bound` without clipping, or None."""
    for name, value in arrays:
        if not np.all(np.isfinite(value)):
            return f"layer {name} holds NaN or Inf"
        peak = float(np.max(np.abs(value))) if value.size else 0.0
        if peak > bound:
            return (f"layer {name} reaches |{peak:.4g}|, beyond the secure-aggregation "
                    f"range ±{bound:g}")
    return None
