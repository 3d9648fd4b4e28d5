"""User-supplied AIF (issue 3: "an option to supply the AIF as a mask", ``--aif-mask-dir``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from strokeperf import kinetics
from strokeperf.aif.arterial import aif_from_mask, read_aif_mask
from strokeperf.cli import main
from strokeperf.errors import DataError, InputError

T = np.arange(0.0, 50.0, 1.0)


def series():
    """Flat tissue with two kinds of enhancing voxels: an early artery and a later sinus."""
    rng = np.random.default_rng(3)
    conc = rng.normal(0.0, 1.0, (8, 8, 3, T.size))
    artery = kinetics.gamma_variate(T, 8.0, 3.0, 1.5, 200.0)
    sinus = kinetics.gamma_variate(T, 13.0, 3.0, 2.5, 150.0)
    conc[1:3, 1:3, 1] += artery
    conc[5:7, 5:7, 1] += sinus
    return conc, artery, sinus


def test_aif_from_mask_is_the_mean_of_the_mask_voxels():
    conc, artery, sinus = series()
    mask = np.zeros(conc.shape[:3], np.uint8)
    mask[5:7, 5:7, 1] = 1  # the user may pick any voxels, here the sinus
    got = aif_from_mask(conc, T, mask)
    mean = conc[5:7, 5:7, 1].reshape(-1, T.size).mean(axis=0)
    # the mean of the voxels, on its own pre-contrast baseline
    pre = T < got.arrival_s - (T[1] - T[0])
    np.testing.assert_allclose(got.curve, mean - mean[pre].mean())
    np.testing.assert_allclose(got.curve, sinus, atol=2.0)
    assert sorted(map(tuple, got.voxels)) == [(5, 5, 1), (5, 6, 1), (6, 5, 1), (6, 6, 1)]
    assert got.ttp_s == T[np.argmax(sinus)]


@pytest.mark.parametrize("mask, words", [
    (np.zeros((8, 8, 3)), "empty"),
    (np.ones((8, 8, 2)), "shape"),
])
def test_aif_from_mask_rejects_empty_or_misshapen_masks(mask, words):
    conc, _, _ = series()
    with pytest.raises(DataError, match=words):
        aif_from_mask(conc, T, mask)


def test_aif_from_mask_rejects_a_curve_without_bolus():
    conc, _, _ = series()
    mask = np.zeros(conc.shape[:3], bool)
    mask[0, 7, 0] = True  # tissue noise only
    with pytest.raises(DataError, match="no usable bolus"):
        aif_from_mask(conc, T, mask)


def test_read_aif_mask_checks_the_grid_and_names_the_file(tmp_path):
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    path = tmp_path / "sub-01_desc-ctpAIF_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 3), np.uint8), affine), path)
    assert read_aif_mask(path, (8, 8, 3), affine).all()
    with pytest.raises(InputError, match="does not match") as info:
        read_aif_mask(path, (8, 8, 4), affine)
    assert str(path) in str(info.value)
    shifted = affine.copy()
    shifted[0, 3] = 3.0
    with pytest.raises(InputError, match="does not match"):
        read_aif_mask(path, (8, 8, 3), shifted)


def _run(bids: Path, out: Path, work: Path, *extra) -> pd.DataFrame:
    # Motion correction has its own tests; here it would only add ANTs time to every run.
    main([str(bids), str(out), "participant", "-w", str(work), "--nprocs", "2",
          "--no-motion-correction", *extra])
    return pd.read_csv(out / "group_perfusion.tsv", sep="\t", dtype=str,
                       keep_default_na=False).set_index("participant_id")


def test_feeding_back_the_written_aif_mask_reproduces_the_run(ctp_dataset_copy, tmp_path):
    bids = ctp_dataset_copy
    # A second participant (same images) whose AIF mask will have the wrong grid.
    (bids / "sub-bad" / "ct").mkdir(parents=True)
    for f in (bids / "sub-ok" / "ct").iterdir():
        shutil.copy(f, bids / "sub-bad" / "ct" / f.name.replace("sub-ok", "sub-bad"))
    first = _run(bids, tmp_path / "out1", tmp_path / "work")
    assert (first["status"] == "ok").all()

    masks = tmp_path / "masks"
    for label in ("ok", "bad"):
        (masks / f"sub-{label}" / "perf").mkdir(parents=True)
    name = "sub-ok_desc-ctpAIF_mask.nii.gz"
    shutil.copy(tmp_path / "out1/sub-ok/perf" / name, masks / "sub-ok/perf" / name)
    written = nib.load(masks / "sub-ok/perf" / name)
    bad = masks / "sub-bad/perf/sub-bad_desc-ctpAIF_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(written.dataobj)[:-1], written.affine), bad)

    second = _run(bids, tmp_path / "out2", tmp_path / "work", "--aif-mask-dir", str(masks))
    ok, failed = second.loc["sub-ok"], second.loc["sub-bad"]
    assert ok["status"] == "ok"
    for column in ("core_ml", "tmax6_ml", "tmax10_ml"):
        assert float(ok[column]) == pytest.approx(float(first.loc["sub-ok", column]), abs=0.01)
    sidecar = json.loads((tmp_path / "out2/sub-ok/perf/sub-ok_desc-ctp_volumes.json").read_text())
    assert sidecar["AIFSource"] == f"mask: {masks / 'sub-ok/perf' / name}"
    assert sidecar["Parameters"]["aif_mask_dir"] == str(masks)
    first_sidecar = json.loads((tmp_path / "out1/sub-ok/perf/sub-ok_desc-ctp_volumes.json")
                               .read_text())
    assert first_sidecar["AIFSource"] == "automatic"
    assert failed["status"] == "failed"
    assert str(bad) in failed["error"] and "does not match" in failed["error"]
