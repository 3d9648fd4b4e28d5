"""Mismatch metrics and trial-eligibility profiles (SPEC.md, "Clinical definitions").

Every function takes volumes in mL and returns plain Python values; ``None`` stands for ``n/a``
(missing clinical data or an undefined ratio) and is written as ``n/a`` in the tables.

Profile rules, with strict ``<`` for core limits and ``>=`` for ratio and mismatch limits:

- DEFUSE 3 (Albers et al. 2018, N Engl J Med 378:708): core < 70 mL, mismatch ratio >= 1.8, mismatch
  volume >= 15 mL.
- EXTEND (Ma et al. 2019, N Engl J Med 380:1795): core < 70 mL, mismatch ratio > 1.2, mismatch > 10 mL.
- DEFUSE 2 target mismatch (Lansberg et al. 2012, Lancet Neurol 11:860): core < 70 mL, Tmax > 10 s
  < 100 mL, mismatch ratio >= 1.8, mismatch >= 15 mL.
- Malignant profile (Lansberg 2012): core >= 70 mL or Tmax > 10 s >= 100 mL.
- DAWN clinical-core mismatch (Nogueira et al. 2018, N Engl J Med 378:11): age >= 80, NIHSS >= 10,
  core < 21 mL; or age < 80, NIHSS >= 10, core < 31 mL; or age < 80, NIHSS >= 20, core < 51 mL.
"""

from __future__ import annotations

import math

from strokeperf import lesions

# Named limits of the profiles (SPEC.md; sources in the module docstring).
CORE_LIMIT_ML = 70.0
DEFUSE3_RATIO, DEFUSE3_MISMATCH_ML = 1.8, 15.0
EXTEND_RATIO, EXTEND_MISMATCH_ML = 1.2, 10.0
DEFUSE2_TMAX10_LIMIT_ML = 100.0
MALIGNANT_TMAX10_ML = 100.0
DAWN_GROUPS = (  # (minimum age, maximum age exclusive, minimum NIHSS, core limit mL)
    (80.0, math.inf, 10.0, 21.0),
    (-math.inf, 80.0, 10.0, 31.0),
    (-math.inf, 80.0, 20.0, 51.0),
)

PROFILE_NAMES = ("defuse3", "extend", "defuse2_target", "malignant", "dawn")


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def mismatch_metrics(core_ml: float, tmax6_ml: float, tmax10_ml: float) -> dict:
    """Mismatch volume (mL), mismatch ratio and hypoperfusion intensity ratio.

    ``mismatch_ratio = tmax6 / core`` is ``inf`` when the core is 0 and Tmax > 6 s is not, and ``None``
    (n/a) when both are 0. ``hir = tmax10 / tmax6`` (Olivot et al. 2014, Stroke 45:1018) is ``None``
    when Tmax > 6 s is 0.

    >>> mismatch_metrics(10.0, 45.0, 9.0)
    {'mismatch_ml': 35.0, 'mismatch_ratio': 4.5, 'hir': 0.2}
    """
    mismatch_ml = tmax6_ml - core_ml
    if core_ml > 0:
        ratio = tmax6_ml / core_ml
    elif tmax6_ml > 0:
        ratio = math.inf
    else:
        ratio = None
    hir = tmax10_ml / tmax6_ml if tmax6_ml > 0 else None
    return {"mismatch_ml": mismatch_ml, "mismatch_ratio": ratio, "hir": hir}


def _target_mismatch(core_ml, ratio, mismatch_ml, ratio_min, mismatch_min, strict) -> bool:
    if ratio is None:  # no core and no hypoperfusion: there is no mismatch to treat
        return False
    if strict:
        return core_ml < CORE_LIMIT_ML and ratio > ratio_min and mismatch_ml > mismatch_min
    return core_ml < CORE_LIMIT_ML and ratio >= ratio_min and mismatch_ml >= mismatch_min


def evaluate_profiles(core_ml, tmax6_ml, tmax10_ml, age=None, nihss=None) -> dict:
    """Verdict of every SPEC profile: ``True``, ``False`` or ``None`` (n/a).

    Imaging profiles need only the volumes; DAWN also needs ``age`` (years) and ``nihss``, and is
    ``None`` when either is missing. Any missing volume makes every profile ``None``.

    >>> evaluate_profiles(10.0, 80.0, 20.0, age=70, nihss=12)["defuse3"]
    True
    """
    if any(_missing(v) for v in (core_ml, tmax6_ml, tmax10_ml)):
        return dict.fromkeys(PROFILE_NAMES)
    m = mismatch_metrics(core_ml, tmax6_ml, tmax10_ml)
    ratio, mismatch_ml = m["mismatch_ratio"], m["mismatch_ml"]
    verdicts = {
        "defuse3": _target_mismatch(core_ml, ratio, mismatch_ml, DEFUSE3_RATIO,
                                    DEFUSE3_MISMATCH_ML, strict=False),
        "extend": _target_mismatch(core_ml, ratio, mismatch_ml, EXTEND_RATIO,
                                   EXTEND_MISMATCH_ML, strict=True),
        "defuse2_target": tmax10_ml < DEFUSE2_TMAX10_LIMIT_ML
        and _target_mismatch(core_ml, ratio, mismatch_ml, DEFUSE3_RATIO, DEFUSE3_MISMATCH_ML,
                             strict=False),
        "malignant": core_ml >= CORE_LIMIT_ML or tmax10_ml >= MALIGNANT_TMAX10_ML,
    }
    if _missing(age) or _missing(nihss):
        verdicts["dawn"] = None
    else:
        verdicts["dawn"] = any(
            age_lo <= age < age_hi and nihss >= nihss_min and core_ml < core_max
            for age_lo, age_hi, nihss_min, core_max in DAWN_GROUPS
        )
    return verdicts


def profile_rules() -> dict:
    """One human-readable rule per profile, for sidecars and reports."""
    return {
        "defuse3": f"core < {CORE_LIMIT_ML:g} mL and mismatch_ratio >= {DEFUSE3_RATIO:g} and "
                   f"mismatch_ml >= {DEFUSE3_MISMATCH_ML:g} mL",
        "extend": f"core < {CORE_LIMIT_ML:g} mL and mismatch_ratio > {EXTEND_RATIO:g} and "
                  f"mismatch_ml > {EXTEND_MISMATCH_ML:g} mL",
        "defuse2_target": f"core < {CORE_LIMIT_ML:g} mL and tmax10_ml < "
                          f"{DEFUSE2_TMAX10_LIMIT_ML:g} mL and mismatch_ratio >= {DEFUSE3_RATIO:g}"
                          f" and mismatch_ml >= {DEFUSE3_MISMATCH_ML:g} mL",
        "malignant": f"core >= {CORE_LIMIT_ML:g} mL or tmax10_ml >= {MALIGNANT_TMAX10_ML:g} mL",
        "dawn": "age >= 80, NIHSS >= 10, core < 21 mL; or age < 80, NIHSS >= 10, core < 31 mL; "
                "or age < 80, NIHSS >= 20, core < 51 mL",
    }


def session_results(found: "lesions.Hypoperfusion", core_ml: float | None,
                    core_definition: str | None, age: float | None = None,
                    nihss: float | None = None) -> dict:
    """The session's row of the group table before QC: volumes (mL), mismatch metrics, CBV index,
    profiles and affected side, keyed by the SPEC.md column names.

    Without a core (``core_ml`` None: a DSC session without diffusion imaging) the core-dependent
    columns (mismatch, profiles) are None (n/a); HIR and the CBV index remain.
    """
    vs = found.voxel_size
    results = {"core_ml": core_ml, "core_definition": core_definition,
               **{f"tmax{thr:g}_ml": lesions.volume_ml(m, vs)
                  for thr, m in found.tmax_masks.items()}}
    metrics = mismatch_metrics(0.0 if core_ml is None else core_ml,
                               results["tmax6_ml"], results["tmax10_ml"])
    if core_ml is None:
        metrics.update(mismatch_ml=None, mismatch_ratio=None)
    results.update(metrics)
    results["cbv_index"] = lesions.cbv_index(found.rcbv, found.hypoperfused)
    results.update(evaluate_profiles(core_ml, results["tmax6_ml"], results["tmax10_ml"],
                                     age=age, nihss=nihss))
    results["affected_side"] = lesions.affected_side(found.hypoperfused, found.brain, found.affine)
    return results
