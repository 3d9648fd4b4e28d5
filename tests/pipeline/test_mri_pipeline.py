"""DSC-MRI sessions end to end against the digital phantom's truth (issue 4).

Phantom seeds 61-64 were never used to choose a constant of the DSC workflow (its development looked
at seed 61 only to find bugs, with the acceptance limits fixed beforehand by the issue); the later
reconstruction of the saturated AIF was developed on seeds 61-68 at this grid, so its figures on
unseen seeds (71-76) are in docs/accuracy.md. Coarse grids (3 x 3 x 5 mm) keep the module near two
minutes on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from strokeperf.phantom import PhantomConfig, generate_dataset, read_truth
from strokeperf.registration import motion as reg_motion
from strokeperf.registration import resampling

VOXEL_MM = (3.0, 3.0, 5.0)
CASES = {
    # lesion, DWI rotated by up to 10 degrees and shifted by up to 10 mm against the DSC scan
    "m61": dict(seed=61, lesion_side="L", dwi_rotation_deg=(10.0, -6.0, 7.0),
                dwi_shift_mm=(-10.0, 8.0, 6.0)),
    "m62": dict(seed=62, lesion=False, dwi_rotation_deg=(-4.0, 3.0, -9.0),
                dwi_shift_mm=(6.0, -10.0, -4.0)),
    "m63": dict(seed=63, lesion_side="R"),                      # its bval is broken below
}


def run_participant_level(bids: Path, out: Path, work: Path, **overrides) -> pd.DataFrame:
    """``strokeperf BIDS OUT participant`` (2 processes) with method options; the group table
    indexed by (participant_id, modality)."""
    from strokeperf.cli import main

    args = [str(bids), str(out), "participant", "-w", str(work), "--nprocs", "2"]
    if overrides.pop("motion_correction", None) is False:
        args.append("--no-motion-correction")
    assert not overrides, f"unsupported options: {overrides}"
    main(args)
    return pd.read_csv(Path(out) / "group_perfusion.tsv", sep="\t", dtype=str,
                       keep_default_na=False).set_index(["participant_id", "modality"])


def within(measured: float, truth: float, rel: float, abs_ml: float) -> bool:
    return abs(float(measured) - float(truth)) <= max(rel * float(truth), abs_ml)


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    root = tmp_path_factory.mktemp("mri")
    bids = root / "bids"
    for label, options in CASES.items():
        generate_dataset(bids, PhantomConfig(voxel_size_mm=VOXEL_MM, **options), participant=label,
                         modalities=("dsc", "dwi"))
    # A DSC session without diffusion imaging.
    generate_dataset(bids, PhantomConfig(seed=64, voxel_size_mm=VOXEL_MM), participant="m64",
                     modalities=("dsc",))
    bval = bids / "sub-m63" / "dwi" / "sub-m63_dwi.bval"
    bval.write_text(" ".join(bval.read_text().split()[:-1]) + "\n")
    table = run_participant_level(bids, root / "out", root / "work")
    return root, table, read_truth(bids).set_index("participant_id")


def test_sessions_complete_and_bad_bval_fails_alone(mri):
    root, table, _ = mri
    assert table.loc[("sub-m61", "dsc"), "status"] == "ok"
    assert table.loc[("sub-m62", "dsc"), "status"] == "ok"
    assert table.loc[("sub-m64", "dsc"), "status"] == "ok"
    failed = table.loc[("sub-m63", "dsc")]
    assert failed["status"] == "failed"
    assert "sub-m63_dwi.bval" in failed["error"]
    assert "has 3 b-values but sub-m63_dwi.nii.gz has 4 volumes" in failed["error"]
    # It fails in the first task, before any perfusion work is spent on it (on a cluster too).
    record = json.loads((root / "work" / "failures" / "sub-m63_dsc.json").read_text())
    assert record["task"] == "load_dsc"


def test_adc_core_matches_truth(mri):
    _, table, truth = mri
    got, want = table.loc[("sub-m61", "dsc")], truth.loc["sub-m61"]
    assert got["core_definition"] == "ADC<620"
    assert within(got["core_ml"], want["core_ml"], 0.15, 3.0), (got["core_ml"], want["core_ml"])
    assert float(got["mismatch_ml"]) == pytest.approx(float(got["tmax6_ml"]) - float(got["core_ml"]),
                                                      abs=0.02)


def test_tmax6_volume_matches_truth(mri):
    _, table, truth = mri
    got, want = table.loc[("sub-m61", "dsc")], truth.loc["sub-m61"]
    assert within(got["tmax6_ml"], want["tmax6_ml"], 0.20, 5.0), (got["tmax6_ml"],
                                                                  want["tmax6_ml"])


def test_saturated_aif_is_reconstructed_and_tmax10_follows_the_truth(mri):
    """The phantom's arterial signal reaches the noise floor at the bolus peak. With the censored
    AIF Tmax > 10 s read 86 % low on this session; with its peak reconstructed from the tissue
    curves it stays within 30 % (the phantom's own true AIF gives -31 % on this coarse grid)."""
    root, table, truth = mri
    got, want = table.loc[("sub-m61", "dsc")], truth.loc["sub-m61"]
    assert within(got["tmax10_ml"], want["tmax10_ml"], 0.30, 5.0), (got["tmax10_ml"],
                                                                    want["tmax10_ml"])
    sidecar = json.loads((root / "out/sub-m61/perf/sub-m61_desc-dsc_volumes.json").read_text())
    reconstruction = sidecar["AIFReconstruction"]
    assert reconstruction["applied"] and reconstruction["censored_frames"] >= 3
    assert reconstruction["first_pass"]["peak"] > 2 * reconstruction["censor_level"]
    series = pd.read_csv(root / "out/sub-m61/perf/sub-m61_desc-dsc_timeseries.tsv", sep="\t")
    assert (series["aif"] >= series["aif_measured"] - 1e-3).all()
    assert series["aif"].max() > 2 * series["aif_measured"].max()


def test_lesion_free_session_has_no_core_or_hypoperfusion(mri):
    _, table, _ = mri
    got = table.loc[("sub-m62", "dsc")]
    assert float(got["core_ml"]) < 5.0
    assert float(got["tmax6_ml"]) < 5.0


def test_session_without_diffusion_has_na_core_and_flag(mri):
    root, table, _ = mri
    got = table.loc[("sub-m64", "dsc")]
    for column in ("core_ml", "core_definition", "mismatch_ml", "mismatch_ratio", "defuse3"):
        assert got[column] == "n/a" or pd.isna(got[column]), column
    assert float(got["tmax6_ml"]) > 5.0
    assert "no_diffusion" in str(got["qc_flags"]).split(";")
    sidecar = json.loads((root / "out/sub-m64/perf/sub-m64_desc-dsc_volumes.json").read_text())
    assert "no_diffusion" in sidecar["QCFlags"]


@pytest.mark.parametrize("label", ["m61", "m62"])
def test_dwi_to_perfusion_registration_error_below_1_5_mm(mri, label):
    root, _, _ = mri
    perf = root / "out" / f"sub-{label}" / "perf"
    written = np.loadtxt(perf / f"sub-{label}_from-dwi_to-dsc_mode-image_xfm.txt")
    truth = json.loads((root / "bids/truth" / f"sub-{label}_truth.json").read_text())
    brain = nib.load(perf / f"sub-{label}_space-dwi_desc-dscBrain_mask.nii.gz")
    points = resampling.world_points(np.asarray(brain.dataobj) > 0, brain.affine)
    error = reg_motion.mean_displacement(np.linalg.inv(truth["dwi_to_perfusion_world"]) @ written,
                                         points)
    assert error < 1.5, error


def test_diffusion_derivatives_and_sources(mri):
    root, _, _ = mri
    perf = root / "out/sub-m61/perf"
    for name in ("desc-dscCore_mask", "space-dwi_desc-dscCore_mask", "space-dwi_desc-dsc_adc",
                 "desc-dsc_adc"):
        assert (perf / f"sub-m61_{name}.nii.gz").exists(), name
    core_dwi = nib.load(perf / "sub-m61_space-dwi_desc-dscCore_mask.nii.gz")
    assert core_dwi.shape == nib.load(root / "bids/sub-m61/dwi/sub-m61_dwi.nii.gz").shape[:3]
    sidecar = json.loads((perf / "sub-m61_desc-dsc_volumes.json").read_text())
    assert "bids:raw:sub-m61/dwi/sub-m61_dwi.bval" in sidecar["Sources"]
    assert sidecar["CoreMethod"]["Definition"] == "ADC<620"
    assert sidecar["Parameters"]["motion_correction"] is True
