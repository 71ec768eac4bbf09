"""Every random draw that protects a record, from a cryptographically secure source.

Noise that a coordinator could predict is noise it could subtract, so nothing
here uses a seeded or non-cryptographic generator (MT19937, PCG64, torch's CPU
generator): every bit comes from the operating system's CSPRNG (`os.urandom`,
getrandom(2) on Linux) or from OpenDP's samplers, which draw from the same
source.

- Counts get **integer** noise: the discrete Gaussian N_Z(0, σ²), sampled
  exactly by OpenDP (`make_gaussian` on an integer vector domain, the sampler
  of Canonne, Kamath & Steinke, "The Discrete Gaussian for Differential
  Privacy", NeurIPS 2020). A noisy count is an exact integer, so its low bits
  carry nothing (the floating-point attack of Mironov, CCS 2012, needs a
  float's irregular grid). For an integer query of L2 sensitivity Δ, adding
  independent N_Z(0, σ²) to every coordinate is ½(Δ/σ)²-zCDP (CKS20, the
  multivariate discrete Gaussian), the same Rényi curve α·Δ²/(2σ²) as the
  continuous Gaussian, which is how `protocols.privacy.accounting` charges it.
- DP-SGD's Gaussian noise and Poisson masks are floating point by nature.
  Uniforms take 53 random bits each; normals come from Box–Muller in float64,
  and each noise value is the sum of four such normals divided by two (same
  variance), the countermeasure of Holohan & Braghin ("Secure Random Sampling
  in Differential Privacy", ESORICS 2021, §5.1) that Opacus' `secure_mode`
  applies to torch's generator, here over a CSPRNG instead.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import opendp.prelude as dp

dp.enable_features("contrib")  # OpenDP gates its measurements behind this flag

_MANTISSA = 2.0 ** -53
_NORMALS_SUMMED = 4  # Holohan & Braghin's n = 2: 2n normals, summed, divided by √(2n)


def secure_uniform(size: int) -> np.ndarray:
    """`size` independent uniforms in [0, 1), 53 random bits each."""
    words = np.frombuffer(os.urandom(8 * size), dtype=np.uint64)
    return (words >> np.uint64(11)).astype(np.float64) * _MANTISSA


def poisson_mask(size: int, rate: float) -> np.ndarray:
    """Which of `size` records a Poisson-sampled step uses: each one independently with
    probability `rate` (the sampling DP-SGD's amplification theorem assumes)."""
    return secure_uniform(size) < rate


def secure_normal(shape: tuple[int, ...] | int, std: float) -> np.ndarray:
    """Gaussian noise N(0, std²) of `shape`, float64 (see the module docstring)."""
    count = int(np.prod(shape))
    total = np.zeros(count, dtype=np.float64)
    for _ in range(_NORMALS_SUMMED):
        total += _box_muller(count)
    return (total * (std / math.sqrt(_NORMALS_SUMMED))).reshape(shape)


def _box_muller(count: int) -> np.ndarray:
    pairs = (count + 1) // 2
    uniforms = secure_uniform(2 * pairs)
    radius = np.sqrt(-2.0 * np.log1p(-uniforms[:pairs]))  # log(1 − u), u < 1: finite
    angle = (2.0 * math.pi) * uniforms[pairs:]
    out = np.empty(2 * pairs)
    np.multiply(radius, np.cos(angle), out=out[:pairs])
    np.multiply(radius, np.sin(angle), out=out[pairs:])
    return out[:count]


def discrete_gaussian(counts: np.ndarray, sigma: float) -> np.ndarray:
    """`counts` (whole numbers) plus independent N_Z(0, σ²) noise on every cell, exactly
    sampled; same shape, int64. σ = 0 returns the counts unchanged (no DP)."""
    values = np.asarray(counts)
    integral = np.rint(values)
    if not np.array_equal(values, integral):
        raise ValueError("the discrete Gaussian mechanism takes whole-number counts")
    flat = integral.astype(np.int64).ravel()
    if sigma <= 0 or flat.size == 0:
        return flat.reshape(values.shape)
    noisy = _measurement(float(sigma))([int(v) for v in flat])
    return np.asarray(noisy, dtype=np.int64).reshape(values.shape)


def discrete_gaussian_rho(sigma: float) -> float:
    """ρ (zCDP) of the measurement above on a query of L2 sensitivity 1, as OpenDP's own
    privacy map states it; the accountant uses the closed form 1/(2σ²), pinned to this
    by a test. k tables that each move by one count compose to k·ρ."""
    return float(_measurement(float(sigma)).map(1))


@functools.lru_cache(maxsize=32)
def _measurement(sigma: float) -> dp.Measurement:
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.l2_distance(T=int)
    return dp.m.make_gaussian(*space, scale=sigma)
