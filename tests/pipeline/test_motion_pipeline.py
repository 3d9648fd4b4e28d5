"""Motion correction in the CTP and DSC workflows against the digital phantom (issue 4).

The same phantom patient (seed 71 for CTP, 72 for DSC) is scanned still and with 2 mm / 2 degree
head motion in a third of the frames. With motion correction (rigid registration, then censoring of
the samples next to bone, scalp and CSF that resampling cannot restore) the Tmax > 6 s volume stays
within 10 % of the still scan's; without it, it moves further. The motion table records framewise
displacement, the rigid parameters, excluded frames and the censored voxels of every frame.
"""

from __future__ import annotations

import pandas as pd
import pytest

from strokeperf.phantom import PhantomConfig, generate_dataset
from test_mri_pipeline import run_participant_level

VOXEL_MM = (3.0, 3.0, 5.0)
SEEDS = {"ctp": 71, "dsc": 72}
MOTION = dict(motion_mm=2.0, motion_deg=2.0, motion_fraction=1 / 3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion")
    for modality, seed in SEEDS.items():
        for label, motion in (("still", {}), ("moved", MOTION)):
            bids = root / ("bids" if label == "still" else "bids_moved")
            generate_dataset(bids, PhantomConfig(seed=seed, voxel_size_mm=VOXEL_MM, **motion),
                             participant=f"{modality}{label}", modalities=(modality,))
    # The still scan needs no correction (the whole-brain accuracy tests run the corrected path on
    # still scans); its result is the motion-free reference.
    corrected = pd.concat([run_participant_level(root / "bids", root / "out", root / "work",
                                                 motion_correction=False),
                           run_participant_level(root / "bids_moved", root / "out_moved",
                                                 root / "work")])
    uncorrected = run_participant_level(root / "bids_moved", root / "out_uncorrected",
                                        root / "work", motion_correction=False)
    return root, corrected, uncorrected


@pytest.mark.parametrize("modality", ["ctp", "dsc"])
def test_corrected_tmax6_close_to_motion_free(runs, modality):
    _, corrected, uncorrected = runs
    still = float(corrected.loc[(f"sub-{modality}still", modality), "tmax6_ml"])
    moved = float(corrected.loc[(f"sub-{modality}moved", modality), "tmax6_ml"])
    assert still > 10.0
    assert abs(moved - still) < 0.10 * still, (still, moved)
    # Without correction the same scan moves the volume further, or cannot be analysed at all.
    raw = uncorrected.loc[(f"sub-{modality}moved", modality)]
    if raw["status"] != "failed":
        assert abs(float(raw["tmax6_ml"]) - still) > abs(moved - still), (still, moved,
                                                                          raw["tmax6_ml"])


@pytest.mark.parametrize("modality", ["ctp", "dsc"])
def test_motion_table_and_flag(runs, modality):
    root, corrected, uncorrected = runs
    label = f"sub-{modality}moved"
    table = pd.read_csv(root / "out_moved" / label / "perf" / f"{label}_desc-{modality}_motion.tsv",
                        sep="\t")
    assert list(table.columns[:8]) == ["time", "framewise_displacement", "trans_x", "trans_y",
                                       "trans_z", "rot_x", "rot_y", "rot_z"]
    # 2 mm / 2 degrees in a third of the frames: several jumps of more than a millimetre.
    assert (table["framewise_displacement"] > 1.0).sum() >= 5
    # Moved frames have censored edge voxels; frames in the reference position have none.
    used = table[table["excluded"].astype(str).str.lower() == "false"]
    at_reference = used[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].abs().max(
        axis=1) == 0
    censored = used["censored_voxels"].astype(int)
    assert at_reference.sum() >= 10 and (censored[at_reference] == 0).all()
    assert (censored[~at_reference] > 0).all()
    assert "motion" in str(corrected.loc[(label, modality), "qc_flags"]).split(";")
    assert not (root / "out_uncorrected" / label / "perf" /
                f"{label}_desc-{modality}_motion.tsv").exists()
