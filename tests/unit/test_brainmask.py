"""Session masks and bolus timing of the bundled phantom series against the phantom's truth
(strokeperf.brainmask.ct_session_masks and mr_session_masks)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import voxel_sizes

from strokeperf import brainmask
from strokeperf.errors import DataError

EXAMPLES = Path(__file__).resolve().parents[2] / "bids_examples"
CASES = {
    "ctp": ("ds-ctp/sub-01/ct/sub-01_ctp.nii.gz", "ds-ctp/truth/sub-01"),
    "dsc": ("ds-mri/sub-01/ses-acute/perf/sub-01_ses-acute_dsc.nii.gz",
            "ds-mri/truth/sub-01_ses-acute"),
}


def _case(modality: str):
    series, truth = CASES[modality]
    img = nib.load(EXAMPLES / series)
    data = np.asarray(img.dataobj, dtype=np.float32)
    sidecar = json.loads((EXAMPLES / series.replace(".nii.gz", ".json")).read_text())
    times = np.arange(data.shape[3]) * sidecar["RepetitionTime"]

    def mask(name):
        return nib.load(EXAMPLES / f"{truth}_mod-{modality}_{name}.nii.gz").get_fdata() > 0

    info = json.loads((EXAMPLES / f"{truth}_truth.json").read_text())["modalities"][modality]
    return data, times, voxel_sizes(img.affine), mask("tissue"), mask("csf"), sidecar, info


@pytest.mark.parametrize("modality", ["ctp", "dsc"])
def test_session_masks_cover_the_true_brain_and_time_the_bolus(modality):
    data, times, vs, tissue, csf, sidecar, info = _case(modality)
    if modality == "ctp":
        masks = brainmask.ct_session_masks(data, times, vs)
        assert masks.s0 is None
    else:
        masks = brainmask.mr_session_masks(data, times, sidecar["EchoTime"], vs)
        np.testing.assert_allclose(masks.s0, data[..., :masks.bolus.baseline_end].mean(axis=3))
    # 5 x 5 x 8 mm voxels: the outermost voxels of the cortex are partial-volumed with bone.
    assert (masks.brain & tissue).sum() / tissue.sum() > 0.85
    assert (masks.brain & ~(tissue | csf)).sum() / masks.brain.sum() < 0.05
    assert not (masks.csf & tissue).any() or (masks.csf & csf).sum() / masks.csf.sum() > 0.9
    assert (masks.vessel_search >= masks.brain).all()
    assert masks.vessel_search.sum() > 1.1 * masks.brain.sum()  # one 5-mm voxel of margin
    # The tissue bolus arrives after the arterial one (the phantom's AIF onset) and the baseline
    # frames end before it.
    aif_arrival = info["aif_parameters"]["arrival_s"] if "aif_parameters" in info else None
    assert masks.bolus.captured
    assert times[masks.bolus.baseline_end - 1] < masks.bolus.arrival_s < masks.bolus.peak_s
    if aif_arrival is not None:
        assert aif_arrival < masks.bolus.arrival_s < aif_arrival + 6.0
    assert masks.bolus.to_record() == {"baseline_end": masks.bolus.baseline_end,
                                       "arrival_s": masks.bolus.arrival_s,
                                       "peak_s": masks.bolus.peak_s}


def test_ct_session_masks_refuse_a_series_without_bolus():
    data, times, vs, *_ = _case("ctp")
    flat = np.repeat(data[..., :1], data.shape[3], axis=3)
    with pytest.raises(DataError, match="bolus not captured"):
        brainmask.ct_session_masks(flat, times, vs)
