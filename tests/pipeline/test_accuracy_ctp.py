"""Accuracy of the CTP path against the digital phantom's truth, with issue 3's tolerances:
Tmax > 6 s within max(10 %, 5 mL), Tmax > 10 s within max(15 %, 5 mL), rCBF core within
max(25 %, 5 mL). (Fourteen more whole-brain seeds, measured outside the tests, are in the README's
Accuracy section.)

Whole-brain phantoms with seeds, lesions and timing never used to choose any constant of the
pipeline (development used seeds 5, 101, 202, 303 and 404): irregular VolumeTiming, a faster
uniform protocol, both hemispheres, and a lesion-free brain (on a 3 x 3 x 5 mm grid: it only checks
for false alarms, and the coarse grid keeps the module's run time down). The group table written by
the command line is compared with the phantom's truth table.
"""

from __future__ import annotations

import pandas as pd
import pytest

from strokeperf.cli import main
from strokeperf.phantom import PhantomConfig, generate_dataset, read_truth
from strokeperf.phantom.truth import normal_tissue_means

CASES = {
    "a7": dict(seed=7, irregular=True, lesion_side="R"),
    "b8": dict(seed=8, frame_interval_s=1.2, duration_s=60.0, lesion_side="L"),
    "c9": dict(seed=9, lesion=False, voxel_size_mm=(3.0, 3.0, 5.0)),  # coarse: a false-alarm check
}


def within(measured: float, truth: float, rel: float, abs_ml: float) -> bool:
    return abs(measured - truth) <= max(rel * truth, abs_ml)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("accuracy")
    for label, options in CASES.items():
        generate_dataset(root / "bids", PhantomConfig(**options), participant=label,
                         modalities=("ctp",))
    code = main([str(root / "bids"), str(root / "out"), "participant", "-w", str(root / "work"),
                 "--nprocs", "2"])
    table = pd.read_csv(root / "out" / "group_perfusion.tsv", sep="\t").set_index("participant_id")
    truth = read_truth(root / "bids").set_index("participant_id")
    return code, table, truth, root


def test_all_sessions_succeed(results):
    code, table, _, _ = results
    assert code == 0
    assert (table["status"] == "ok").all()


@pytest.mark.parametrize("label", ["a7", "b8"])
def test_hypoperfusion_volumes_match_truth(results, label):
    _, table, truth, _ = results
    got, want = table.loc[f"sub-{label}"], truth.loc[f"sub-{label}"]
    for column, rel in (("tmax6_ml", 0.10), ("tmax10_ml", 0.15)):
        assert within(got[column], want[column], rel, 5.0), (column, got[column], want[column])


@pytest.mark.parametrize("label", ["a7", "b8"])
def test_core_volume_matches_truth(results, label):
    _, table, truth, _ = results
    got, want = table.loc[f"sub-{label}"], truth.loc[f"sub-{label}"]
    assert within(got["core_ml"], want["core_ml"], 0.25, 5.0), (got["core_ml"], want["core_ml"])
    assert got["affected_side"] == want["affected_side"]


def test_lesion_free_brain_has_no_hypoperfusion(results):
    _, table, _, _ = results
    row = table.loc["sub-c9"]
    assert row["tmax6_ml"] < 5.0
    assert row["core_ml"] < 5.0


@pytest.mark.parametrize("label", ["a7", "b8"])
def test_normal_tissue_cbf_and_cbv_match_truth(results, label):
    # Absolute CBF and CBV rest on the AIF's scaling to the VOF area. The VOF chosen as the
    # largest of noisy areas once read 11-14 % large, and every CBF and CBV as much too small.
    _, _, _, root = results
    means = normal_tissue_means(root / "bids", root / "out", f"sub-{label}", "ctp")
    for name, (want, got) in means.items():
        assert got == pytest.approx(want, rel=0.10), name
