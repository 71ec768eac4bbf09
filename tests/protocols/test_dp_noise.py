"""Noise from a CSPRNG: exact integer noise for counts, Gaussian noise for DP-SGD.

Includes the floating-point attack of the review (Mironov, CCS 2012, on float64
Gaussian noise added to counts): it tells a count of 0 from a count of 1 with
certainty in a few percent of draws when the noise is a float, and never when the
released value is a whole number.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from protocols.privacy.dp_noise import (discrete_gaussian, discrete_gaussian_rho, poisson_mask,
                                        secure_normal, secure_uniform)


def _float_release(count: int, sigma: float, rng: np.random.Generator) -> float:
    """The old mechanism: a count plus float64 Gaussian noise."""
    return count + rng.normal(0.0, sigma)


def _certainly_zero(released: float) -> bool:
    """Mironov's observation for y = c + z in float64: 1 + z, for any float z in (-1, 0),
    is a multiple of 2^-53 (both terms are, or the sum is rounded to that grid), while z
    alone in (0, 1/2) has finer bits. A y in (0, 1) off that grid cannot be 1 + z: the
    count was 0, with certainty."""
    scaled = released * 2.0 ** 53  # exact: a power of two
    return 0.0 < released < 1.0 and scaled != math.floor(scaled)


def test_the_float_attack_reads_counts_off_float_noise_but_never_off_whole_numbers():
    rng = np.random.default_rng(0)
    float_hits = sum(_certainly_zero(_float_release(0, 1.0, rng)) for _ in range(20_000))
    assert float_hits > 2000  # the attack works on the old mechanism (about 13 % of draws)
    released = discrete_gaussian(np.zeros(20_000), 1.0)
    assert released.dtype == np.int64
    # Every whole number is reachable from a count of 0 and from a count of 1 alike.
    assert not any(_certainly_zero(float(v)) for v in released)


def test_discrete_gaussian_noise_has_the_scale_and_centre_it_claims():
    counts = np.arange(20_000) % 7
    noisy = discrete_gaussian(counts, 4.0)
    residual = noisy - counts
    assert np.array_equal(noisy, np.rint(noisy))
    assert residual.std() == pytest.approx(4.0, rel=0.03)
    assert abs(residual.mean()) < 4 * 4.0 / math.sqrt(len(counts))


def test_discrete_gaussian_refuses_fractions_and_is_exact_without_noise():
    with pytest.raises(ValueError, match="whole-number counts"):
        discrete_gaussian(np.array([0.5]), 1.0)
    counts = np.array([[3.0, 0.0], [7.0, 1.0]])
    assert np.array_equal(discrete_gaussian(counts, 0.0), counts)


def test_the_discrete_gaussians_stated_privacy_is_the_closed_form():
    for sigma in (0.5, 2.0, 30.0):
        assert discrete_gaussian_rho(sigma) == pytest.approx(1 / (2 * sigma ** 2), rel=1e-12)


def test_no_seeded_generator_decides_any_draw():
    """Seeding numpy's and torch's global generators (as a library, or a coordinator that
    knows the plan's seed, might) leaves every draw unpredictable."""
    draws = []
    for _ in range(2):
        np.random.seed(1)
        torch.manual_seed(1)
        draws.append((secure_uniform(8), secure_normal(8, 1.0), poisson_mask(64, 0.5),
                      discrete_gaussian(np.zeros(8), 5.0)))
    for first, second in zip(*draws):
        assert not np.array_equal(first, second)


def test_secure_gaussian_noise_has_the_requested_spread():
    noise = secure_normal((400, 500), 3.0)
    assert noise.shape == (400, 500)
    assert noise.std() == pytest.approx(3.0, rel=0.01)
    # Five standard errors of each mean: the draws come from the OS CSPRNG, unseeded by
    # design, so a 3-standard-error bound (0.02 here) failed about one run in 370.
    assert abs(noise.mean()) < 5 * 3.0 / math.sqrt(noise.size)
    mask = poisson_mask(100_000, 0.2)
    assert abs(np.mean(mask) - 0.2) < 5 * math.sqrt(0.2 * 0.8 / mask.size)
