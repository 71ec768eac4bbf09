"""Built-in simulator of a multi-hospital rare-disease registry.

The ``fedsynth-coordinator demo`` command and the test-suite need a realistic
federated data set without downloading anything or touching real patients.
This module generates one entirely in code, deterministically from a seed.

The simulation deliberately reproduces the difficulties that federated,
differentially private synthesis has to cope with:

* **non-IID sites** -- hospitals differ in size (40 to 400 patients), in age
  distribution (a paediatric centre next to adult referral centres), in case
  mix and in treatment policy;
* **a rare category** -- the ``atypical`` subtype makes up about 2% of the
  registry (unevenly spread over sites) and always occurs at least once;
* **survival with censoring** -- Weibull event times with a proportional
  hazard depending on subtype, age, ECOG and treatment, censored
  administratively at 2026-01-01 and by random loss to follow-up;
* **missingness** -- genotype, BMI and the serum marker are partly missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import yaml

SUBTYPES = ("classic", "attenuated", "juvenile", "atypical")
GENOTYPES = ("missense", "nonsense", "frameshift", "splice")
SEXES = ("female", "male")
DATE_MIN, DATE_MAX = np.datetime64("2000-01-01"), np.datetime64("2025-12-31")
CENSOR_DATE = np.datetime64("2026-01-01")
DAYS_PER_MONTH = 365.25 / 12
MIN_SIZE, MAX_SIZE = 40, 400
MIN_SITES, MAX_SITES = 5, 12
DESCRIPTION = "Simulated multi-site registry of a rare disease (built in, no real patients)."
RARE_SHARE = 0.02  # overall share of the rare ``atypical`` subtype

# Archetypal hospitals: (age mean, age sd, mix of classic/attenuated/juvenile).
ARCHETYPES = (
    (9.0, 5.0, (0.27, 0.08, 0.65)),   # paediatric centre
    (48.0, 14.0, (0.62, 0.31, 0.07)),  # adult referral centre
    (36.0, 13.0, (0.28, 0.66, 0.06)),  # metabolic clinic
    (57.0, 12.0, (0.47, 0.45, 0.08)),  # centre with older patients
)
# Genotype probabilities given subtype (mild association).
GENOTYPE_GIVEN_SUBTYPE = {
    "classic": (0.25, 0.30, 0.30, 0.15),
    "attenuated": (0.50, 0.15, 0.15, 0.20),
    "juvenile": (0.30, 0.20, 0.20, 0.30),
    "atypical": (0.25, 0.25, 0.25, 0.25),
}
SUBTYPE_LOG_HAZARD = {"classic": 0.7, "attenuated": -0.7, "juvenile": 0.1, "atypical": 0.3}
SUBTYPE_ECOG_BUMP = {"classic": 0.5, "attenuated": 0.0, "juvenile": 0.2, "atypical": 0.4}
SUBTYPE_TREAT_LOGIT = {"classic": 0.8, "attenuated": -0.6, "juvenile": 0.3, "atypical": 0.0}
SUBTYPE_MARKER_SHIFT = {"classic": 0.6, "attenuated": 0.0, "juvenile": 0.2, "atypical": 0.3}


@dataclass(frozen=True)
class DemoRegistry:
    """Data dictionary (YAML text) plus one DataFrame per simulated hospital."""

    schema_yaml: str
    sites: dict[str, pd.DataFrame]


@dataclass(frozen=True)
class _SiteProfile:
    number: int
    age_mean: float
    age_sd: float
    subtype_probs: np.ndarray  # classic / attenuated / juvenile
    rare_weight: float  # relative propensity to see the atypical subtype
    treat_logit: float
    female_share: float
    first_year: int


def _schema() -> dict:
    """The data dictionary as plain data, columns in DataFrame order."""
    def cat(name: str, cats: tuple[str, ...], nullable: bool = False) -> dict:
        return {"name": name, "type": "categorical", "categories": list(cats), "nullable": nullable}

    def num(name: str, kind: str, lo: int, hi: int, nullable: bool = False) -> dict:
        return {"name": name, "type": kind, "min": lo, "max": hi, "nullable": nullable}

    return {
        "name": "fedsynth-demo-registry",
        "description": DESCRIPTION,
        "columns": [
            {"name": "patient_id", "type": "identifier"},
            num("age_at_diagnosis", "integer", 0, 90),
            cat("sex", SEXES),
            cat("subtype", SUBTYPES),
            cat("genotype", GENOTYPES, nullable=True),
            {"name": "diagnosis_date", "type": "date", "min": str(DATE_MIN), "max": str(DATE_MAX),
             "nullable": False},
            num("bmi", "numeric", 10, 60, nullable=True),
            num("serum_marker", "numeric", 0, 500, nullable=True),
            {"name": "treated", "type": "boolean", "nullable": False},
            num("ecog", "integer", 0, 4),
            num("survival_months", "numeric", 0, 312),
            {"name": "death", "type": "boolean", "nullable": False},
        ],
        "evaluation": {"target": "treated",
                       "survival": {"time": "survival_months", "event": "death"}},
    }


def _site_sizes(n_sites: int) -> list[int]:
    """Sizes spread geometrically from 40 to 400 patients."""
    return [int(round(s)) for s in np.geomspace(MIN_SIZE, MAX_SIZE, n_sites)]


def _site_profiles(rng: np.random.Generator, n_sites: int) -> list[_SiteProfile]:
    """Cycle through the archetypes (all appear as n_sites >= 5) with jitter."""
    offset = int(rng.integers(len(ARCHETYPES)))
    profiles = []
    for i in range(n_sites):
        age_mean, age_sd, mix = ARCHETYPES[(i + offset) % len(ARCHETYPES)]
        profiles.append(_SiteProfile(
            number=i + 1,
            age_mean=age_mean * rng.normal(1.0, 0.08),
            age_sd=age_sd,
            subtype_probs=rng.dirichlet(60.0 * np.asarray(mix)),
            rare_weight=rng.uniform(0.5, 1.5),
            treat_logit=rng.normal(0.0, 0.8),
            female_share=rng.uniform(0.42, 0.58),
            first_year=int(rng.integers(2000, 2013)),
        ))
    return profiles


def _assign_rare(rng: np.random.Generator, subtypes: list[np.ndarray],
                 weights: list[float]) -> None:
    """Mark ~2% of all records ``atypical`` (at least one), spread over sites by weight."""
    sizes = np.array([s.size for s in subtypes])
    total = max(1, int(round(RARE_SHARE * sizes.sum())))
    share = sizes * np.asarray(weights)
    for site, count in zip(subtypes, rng.multinomial(total, share / share.sum())):
        rows = rng.choice(site.size, size=min(count, site.size), replace=False)
        site[rows] = "atypical"


def _draw_ages(rng: np.random.Generator, p: _SiteProfile, subtype: np.ndarray) -> np.ndarray:
    """Site-specific normal ages; juvenile cases are young; truncated to [0, 90]."""
    ages = rng.normal(p.age_mean, p.age_sd, subtype.size)
    juvenile = subtype == "juvenile"
    ages[juvenile] = rng.normal(min(p.age_mean, 11.0), 4.0, juvenile.sum())
    return np.clip(np.round(ages), 0, 90).astype(np.int64)


def _draw_dates(rng: np.random.Generator, p: _SiteProfile, n: int) -> np.ndarray:
    """Diagnosis dates uniform between the site's joining year and 2025-12-31."""
    start = max(np.datetime64(f"{p.first_year}-01-01"), DATE_MIN)
    span = int((DATE_MAX - start).astype(int))
    return start + rng.integers(0, span + 1, n).astype("timedelta64[D]")


def _with_missing(rng: np.random.Generator, values: np.ndarray, rate: float) -> np.ndarray:
    """Blank out a ``rate`` share of values completely at random (None / NaN)."""
    out = values.astype(object if values.dtype.kind in "OU" else float)
    out[rng.random(values.size) < rate] = None if out.dtype == object else np.nan
    return out


def _draw_survival(rng: np.random.Generator, log_hazard: np.ndarray,
                   dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weibull PH event times, censored at 2026-01-01 and by loss to follow-up."""
    shape, scale = 1.3, 150.0
    event = scale * (-np.log(rng.random(dates.size)) / np.exp(log_hazard)) ** (1.0 / shape)
    admin = (CENSOR_DATE - dates).astype(int) / DAYS_PER_MONTH
    censor = np.minimum(admin, rng.exponential(240.0, dates.size))
    observed = np.clip(np.round(np.minimum(event, censor), 1), 0.1, 312.0)
    return observed, event <= censor


def _simulate_site(rng: np.random.Generator, p: _SiteProfile, subtype: np.ndarray) -> pd.DataFrame:
    """All columns of one hospital, given its profile and its drawn subtypes."""
    n = subtype.size
    age = _draw_ages(rng, p, subtype)
    dates = _draw_dates(rng, p, n)
    bmi_mean = 15.5 + 0.45 * np.minimum(age, 25) + 0.04 * np.maximum(age - 25, 0)
    bmi = np.clip(np.round(rng.normal(bmi_mean, 1.5 + 0.1 * np.minimum(age, 25)), 1), 10, 60)
    shift = np.array([SUBTYPE_MARKER_SHIFT[s] for s in subtype])
    marker = np.clip(np.round(rng.lognormal(3.8 + shift, 0.7), 1), 0, 500)
    ecog_rate = 0.3 + 0.015 * age + np.array([SUBTYPE_ECOG_BUMP[s] for s in subtype])
    ecog = np.minimum(rng.poisson(ecog_rate), 4).astype(np.int64)
    treat_logit = p.treat_logit + np.array([SUBTYPE_TREAT_LOGIT[s] for s in subtype])
    treated = rng.random(n) < 1.0 / (1.0 + np.exp(-treat_logit))
    genotype = np.array([rng.choice(GENOTYPES, p=GENOTYPE_GIVEN_SUBTYPE[s]) for s in subtype])
    log_hazard = (np.array([SUBTYPE_LOG_HAZARD[s] for s in subtype]) + 0.02 * (age - 40)
                  + 0.35 * ecog + np.log(0.6) * treated)
    survival, death = _draw_survival(rng, log_hazard, dates)
    return pd.DataFrame({
        "patient_id": [f"H{p.number:02d}-{k:05d}" for k in range(1, n + 1)],
        "age_at_diagnosis": age,
        "sex": np.where(rng.random(n) < p.female_share, "female", "male"),
        "subtype": subtype,
        "genotype": _with_missing(rng, genotype, 0.10),
        "diagnosis_date": [str(d) for d in dates],
        "bmi": _with_missing(rng, bmi, 0.08),
        "serum_marker": _with_missing(rng, marker, 0.05),
        "treated": treated.astype(bool),
        "ecog": ecog,
        "survival_months": survival,
        "death": death.astype(bool),
    })


def simulate_registry(seed: int = 7, n_sites: int = 6) -> DemoRegistry:
    """Simulate ``n_sites`` (5..12) hospitals deterministically from ``seed``."""
    if not MIN_SITES <= n_sites <= MAX_SITES:
        raise ValueError(f"n_sites must be between {MIN_SITES} and {MAX_SITES}, got {n_sites}")
    rng = np.random.default_rng(seed)
    profiles = _site_profiles(rng, n_sites)
    subtypes = [rng.choice(np.array(SUBTYPES[:3], dtype=object), size=size, p=p.subtype_probs)
                for p, size in zip(profiles, _site_sizes(n_sites))]
    _assign_rare(rng, subtypes, [p.rare_weight for p in profiles])
    sites = {f"hospital-{p.number:02d}": _simulate_site(rng, p, s)
             for p, s in zip(profiles, subtypes)}
    schema = yaml.safe_dump(_schema(), sort_keys=False, allow_unicode=True)
    return DemoRegistry(schema_yaml=schema, sites=sites)
