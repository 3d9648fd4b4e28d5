"""Lesion-frequency maps and template hemispheres (strokeperf.lesion_frequency), without pydra."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from strokeperf.bids.derivatives import frequency_name, template_mask_name
from strokeperf.config import ConfigError, load_parameters
from strokeperf.lesion_frequency import lesion_frequency, template_side, write_frequency_maps

#: A 2-mm grid centred on MNI x = 0 (as the template's): voxel i has x = 2 i - 10.
AFFINE = np.array([[2.0, 0, 0, -10], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])


def test_frequency_is_the_fraction_of_sessions():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    a[0, 0, 0] = b[0, 0, 0] = True
    a[1, 1, 1] = True
    c = np.zeros_like(a)
    fraction, n = lesion_frequency(iter([a, b, c]))
    assert n == 3 and fraction.dtype == np.float32
    assert fraction[0, 0, 0] == pytest.approx(2 / 3)
    assert fraction[1, 1, 1] == pytest.approx(1 / 3)
    assert fraction.sum() == pytest.approx(1.0)


def test_frequency_of_no_sessions_and_of_mismatched_grids():
    assert lesion_frequency([]) == (None, 0)
    with pytest.raises(ValueError, match="differ in shape"):
        lesion_frequency([np.zeros((2, 2, 2)), np.zeros((3, 2, 2))])


def test_template_side_reads_the_mni_midline():
    lesion = np.zeros((11, 3, 3), bool)
    lesion[1:4] = True                     # x = -8 .. -4 mm: left
    assert template_side(lesion, AFFINE) == "L"
    lesion[:] = False
    lesion[7:10] = True                    # x = 4 .. 8 mm: right
    assert template_side(lesion, AFFINE) == "R"
    assert template_side(np.zeros_like(lesion), AFFINE) is None


def _session(out, participant, mod, masks: dict, prefix=None, status="ok"):
    """Template masks of one series plus its volumes row (``status``), as the datasink leaves them."""
    perf = out / participant / "perf"
    perf.mkdir(parents=True, exist_ok=True)
    prefix = prefix or participant
    for label, mask in masks.items():
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), AFFINE),
                 perf / template_mask_name(prefix, mod, label))
    (perf / f"{prefix}_desc-{mod}_volumes.tsv").write_text(f"status\n{status}\n")


def test_write_frequency_maps_uses_ok_normalised_sessions_only(tmp_path):
    left = np.zeros((11, 3, 3), bool)
    left[2, 1, 1] = True
    right = np.zeros_like(left)
    right[8, 1, 1] = True
    _session(tmp_path, "sub-01", "ctp", {"Tmax6": left, "Core": left})
    _session(tmp_path, "sub-02", "ctp", {"Tmax6": right, "Core": np.zeros_like(left)})
    _session(tmp_path, "sub-03", "ctp", {"Tmax6": left})       # failed below: left out
    table = pd.DataFrame({"participant_id": ["sub-01", "sub-02", "sub-03", "sub-04"],
                          "session_id": ["n/a"] * 4, "modality": ["ctp"] * 4,
                          "status": ["ok", "ok", "failed", "ok"]})   # sub-04 not normalised
    records = write_frequency_maps(tmp_path, table)
    assert {r["label"] for r in records} == {"Tmax6", "Core"}
    tmax6 = nib.load(str(tmp_path / frequency_name("ctp", "Tmax6")))
    data = np.asarray(tmax6.dataobj)
    assert data[2, 1, 1] == pytest.approx(0.5) and data[8, 1, 1] == pytest.approx(0.5)
    assert data.sum() == pytest.approx(1.0)
    sidecar = json.loads((tmp_path / frequency_name("ctp", "Tmax6").replace(".nii.gz", ".json"))
                         .read_text())
    assert sidecar["AffectedSide"] == {"L": 1, "R": 1, "none": 0}
    assert sidecar["Sessions"] == [f"sub-0{i}/perf/{template_mask_name(f'sub-0{i}', 'ctp', 'Tmax6')}"
                                   for i in (1, 2)]


def test_each_acquisition_counts_once_and_a_failed_one_not_at_all(tmp_path):
    lesion = np.zeros((11, 3, 3), bool)
    lesion[2, 1, 1] = True
    _session(tmp_path, "sub-01", "ctp", {"Tmax6": lesion}, prefix="sub-01_acq-a")
    _session(tmp_path, "sub-01", "ctp", {"Tmax6": lesion}, prefix="sub-01_acq-b")
    _session(tmp_path, "sub-01", "ctp", {"Tmax6": lesion}, prefix="sub-01_acq-c", status="failed")
    table = pd.DataFrame({"participant_id": ["sub-01"] * 3, "session_id": ["n/a"] * 3,
                          "modality": ["ctp"] * 3, "status": ["ok", "ok", "failed"]})
    [record] = write_frequency_maps(tmp_path, table)
    assert record["n"] == 2 and record["sides"] == {"L": 2, "R": 0, "none": 0}


def test_maps_without_sessions_any_more_are_removed(tmp_path):
    mask = np.ones((11, 3, 3), bool)
    _session(tmp_path, "sub-01", "ctp", {"Tmax6": mask})
    table = pd.DataFrame({"participant_id": ["sub-01"], "session_id": ["n/a"],
                          "modality": ["ctp"], "status": ["ok"]})
    write_frequency_maps(tmp_path, table)
    assert (tmp_path / frequency_name("ctp", "Tmax6")).exists()
    table["status"] = "failed"
    assert write_frequency_maps(tmp_path, table) == []
    assert not list(tmp_path.glob("group_*probseg*"))


def test_normalise_option_is_a_boolean():
    assert load_parameters().normalise is False
    assert load_parameters(normalise=True).normalise is True
    with pytest.raises(ConfigError, match="normalise must be true or false"):
        load_parameters(normalise="yes")
