"""Trial-eligibility profiles and mismatch metrics against SPEC.md's rules, at their boundaries."""

import math

import pytest

from strokeperf.profiles import evaluate_profiles, mismatch_metrics


def test_mismatch_metrics_follow_spec_formulas():
    m = mismatch_metrics(core_ml=20.0, tmax6_ml=90.0, tmax10_ml=30.0)
    assert m["mismatch_ml"] == pytest.approx(70.0)
    assert m["mismatch_ratio"] == pytest.approx(4.5)
    assert m["hir"] == pytest.approx(1 / 3)


def test_ratio_is_inf_without_core_and_na_without_any_lesion():
    assert mismatch_metrics(0.0, 12.0, 0.0)["mismatch_ratio"] == math.inf
    none = mismatch_metrics(0.0, 0.0, 0.0)
    assert none["mismatch_ratio"] is None and none["hir"] is None


@pytest.mark.parametrize(
    "core, tmax6, tmax10, expected",
    [
        (10.0, 28.0, 5.0, True),     # ratio 2.8, mismatch 18
        (20.0, 36.0, 5.0, True),     # ratio exactly 1.8 is eligible (>=)
        (20.0, 35.9, 5.0, False),    # ratio just under 1.8
        (20.0, 35.0, 5.0, False),    # mismatch 15 but ratio 1.75
        (15.0, 30.0, 5.0, True),     # mismatch exactly 15 mL (>=), ratio 2.0
    ],
)
def test_defuse3_boundaries(core, tmax6, tmax10, expected):
    assert evaluate_profiles(core, tmax6, tmax10)["defuse3"] is expected


def test_core_limit_is_strict():
    assert evaluate_profiles(69.9, 200.0, 50.0)["defuse3"] is True
    assert evaluate_profiles(70.0, 200.0, 50.0)["defuse3"] is False
    assert evaluate_profiles(70.0, 200.0, 50.0)["malignant"] is True


def test_extend_uses_strict_ratio_and_mismatch():
    assert evaluate_profiles(50.0, 60.0, 10.0)["extend"] is False   # ratio 1.2 exactly: not > 1.2
    assert evaluate_profiles(40.0, 50.0, 10.0)["extend"] is False   # mismatch exactly 10
    assert evaluate_profiles(40.0, 50.1, 10.0)["extend"] is True


def test_defuse2_target_excludes_large_tmax10():
    assert evaluate_profiles(10.0, 150.0, 99.0)["defuse2_target"] is True
    assert evaluate_profiles(10.0, 150.0, 100.0)["defuse2_target"] is False
    assert evaluate_profiles(10.0, 150.0, 100.0)["malignant"] is True


@pytest.mark.parametrize(
    "age, nihss, core, expected",
    [
        (85, 10, 20.9, True), (85, 10, 21.0, False), (85, 9, 5.0, False),
        (60, 10, 30.9, True), (60, 12, 31.0, False),
        (60, 20, 50.9, True), (60, 19, 40.0, False), (80, 25, 40.0, False),
    ],
)
def test_dawn_groups(age, nihss, core, expected):
    assert evaluate_profiles(core, 120.0, 10.0, age=age, nihss=nihss)["dawn"] is expected


def test_missing_clinical_data_gives_na_only_for_dawn():
    v = evaluate_profiles(5.0, 60.0, 10.0, age=None, nihss=12)
    assert v["dawn"] is None and v["defuse3"] is True


def test_no_lesion_is_not_target_mismatch():
    v = evaluate_profiles(0.0, 0.0, 0.0, age=70, nihss=12)
    assert v["defuse3"] is False and v["extend"] is False and v["malignant"] is False
    assert v["dawn"] is True


def test_session_results_report_volumes_mismatch_and_profiles_of_the_maps():
    import numpy as np

    from strokeperf import lesions
    from strokeperf.profiles import session_results

    shape = (40, 40, 10)
    affine = np.diag([2.5, 2.5, 4.0, 1.0])  # 25 uL voxels: 40 voxels per mL
    tmax = np.full(shape, 1.0)
    tmax[2:18, 5:30, :] = 8.0   # 4000 voxels, 100 mL, Tmax > 6 s, left of the midline at x = 0
    tmax[2:10, 5:30, :] = 12.0  # 2000 voxels, 50 mL, Tmax > 10 s
    affine[0, 3] = -50.0
    cbf = np.where(tmax > 6, 10.0, 50.0)
    found = lesions.hypoperfusion(cbf, np.full(shape, 4.0), tmax, np.ones(shape, bool), None,
                                  affine, (4.0, 6.0, 8.0, 10.0))
    row = session_results(found, 20.0, "rCBF<0.30", age=70.0, nihss=12.0)
    assert row["tmax6_ml"] == pytest.approx(100.0) and row["tmax10_ml"] == pytest.approx(50.0)
    assert row["mismatch_ml"] == pytest.approx(80.0) and row["mismatch_ratio"] == pytest.approx(5.0)
    assert row["hir"] == pytest.approx(0.5) and row["cbv_index"] == pytest.approx(1.0)
    assert row["defuse3"] is True and row["dawn"] is True and row["malignant"] is False
    assert row["affected_side"] == "L" and row["core_definition"] == "rCBF<0.30"
    no_core = session_results(found, None, None)
    assert no_core["mismatch_ml"] is None and no_core["mismatch_ratio"] is None
    assert no_core["defuse3"] is None and no_core["hir"] == pytest.approx(0.5)
