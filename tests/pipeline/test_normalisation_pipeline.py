"""Spatial normalisation (``--normalise``) end to end against the digital phantom (issues 4 and 5).

The phantom's perfusion scanner world is MNI space (its anatomy is nilearn's ICBM152 2009a), so the
true session-to-template mapping is known: the identity on world coordinates. The saved transforms
are checked against it, the template-space lesions against the truth lesions, the template
hemisphere against the truth side, and the cohort's lesion-frequency maps and report against the
session masks. Seeds 41-43 were never used to choose a constant (the SyN regularisation was chosen
on a separate scratch cohort).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from strokeperf.bids.derivatives import TEMPLATE_SPACE, frequency_name, template_mask_name
from strokeperf.cli import main
from strokeperf.phantom import PhantomConfig, generate_dataset, read_truth
from strokeperf.registration import resampling, template

sys.path.insert(0, str(Path(__file__).parents[1] / "browser"))

import cdp  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
VOXEL_MM = (3.0, 3.0, 5.0)
#: participant -> (modality, phantom options)
CASES = {
    "left": ("ctp", dict(seed=41, lesion_side="L")),
    "right": ("ctp", dict(seed=42, lesion_side="R")),
    "mri": ("dsc", dict(seed=43, lesion_side="L")),
}
XFM = "from-{mod}_to-" + TEMPLATE_SPACE + "_mode-image_desc-{kind}_xfm"


@pytest.fixture(scope="module")
def normalised(tmp_path_factory):
    root = tmp_path_factory.mktemp("normalise")
    bids, out = root / "bids", root / "out"
    for label, (mod, options) in CASES.items():
        generate_dataset(bids, PhantomConfig(voxel_size_mm=VOXEL_MM, **options), participant=label,
                         modalities=(mod, "dwi") if mod == "dsc" else (mod,))
    # Motion correction has its own tests; on these still scans it would only add ANTs time.
    assert main([str(bids), str(out), "participant", "-w", str(root / "work"), "--nprocs", "2",
                 "--normalise", "--no-motion-correction"]) == 0
    table = pd.read_csv(out / "group_perfusion.tsv", sep="\t", dtype=str, keep_default_na=False)
    return bids, out, table


def _perf(out: Path, label: str) -> Path:
    return out / f"sub-{label}" / "perf"


def _template_mask(out: Path, label: str, mod: str, lesion: str) -> np.ndarray:
    path = _perf(out, label) / template_mask_name(f"sub-{label}", mod, lesion)
    return np.asarray(nib.load(str(path)).dataobj) > 0


def _truth(bids: Path, label: str, mod: str, name: str) -> nib.Nifti1Image:
    return nib.load(str(bids / "truth" / f"sub-{label}_mod-{mod}_{name}.nii.gz"))


def test_session_outputs_in_template_space(normalised):
    _, out, _ = normalised
    t1, _, t_affine = template.load_template()
    for label, (mod, _) in CASES.items():
        perf = _perf(out, label)
        for lesion in ("Core", "Tmax4", "Tmax6", "Tmax8", "Tmax10"):
            path = perf / template_mask_name(f"sub-{label}", mod, lesion)
            img = nib.load(str(path))
            assert img.shape == t1.shape and np.allclose(img.affine, t_affine)
            side = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
            assert side["Space"] == TEMPLATE_SPACE and side["Type"] == "ROI"
        for kind, ext in (("affine", ".mat"), ("warp", ".nii.gz")):
            assert (perf / f"sub-{label}_{XFM.format(mod=mod, kind=kind)}{ext}").stat().st_size > 0
        inverse = perf / f"sub-{label}_from-{TEMPLATE_SPACE}_to-{mod}_mode-image_desc-warp_xfm.nii.gz"
        assert inverse.stat().st_size > 0
        volumes = json.loads((perf / f"sub-{label}_desc-{mod}_volumes.json").read_text())
        assert volumes["Normalisation"]["Space"] == TEMPLATE_SPACE
        assert volumes["Normalisation"]["BrainDice"] > 0.9


@pytest.mark.parametrize("label", list(CASES))
def test_saved_transforms_map_the_session_onto_the_template(normalised, label):
    """Mean registration error over the template brain, from the written transforms, below 2.5 mm
    (under one 3-mm perfusion voxel); the truth Tmax > 6 s lesion lands where it belongs."""
    bids, out, _ = normalised
    mod = CASES[label][0]
    perf = _perf(out, label)
    t1, brain, t_affine = template.load_template()
    forward = template.TemplateTransforms(
        affine_file=str(perf / f"sub-{label}_{XFM.format(mod=mod, kind='affine')}.mat"),
        warp_file=str(perf / f"sub-{label}_{XFM.format(mod=mod, kind='warp')}.nii.gz"),
        inverse_warp_file="", directory=str(perf), template_shape=t1.shape, template_affine=t_affine)
    truth = _truth(bids, label, mod, "tmax6")
    shape, affine = truth.shape, truth.affine
    ijk = np.indices(shape).reshape(3, -1).T
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    # Each world coordinate of the session, warped: at a template voxel it must equal that voxel's
    # own MNI coordinate (the phantom's world is MNI).
    mapped = np.stack([template.warp_to_template(world[:, a].reshape(shape), affine, forward)[brain]
                       for a in range(3)], axis=1)
    target = np.argwhere(brain) @ t_affine[:3, :3].T + t_affine[:3, 3]
    inside = (target[:, 2] > world[:, 2].min() + 5) & (target[:, 2] < world[:, 2].max() - 5)
    error = np.linalg.norm(mapped - target, axis=1)[inside]
    assert error.mean() < 2.5, error.mean()
    lesion = np.asarray(truth.dataobj) > 0
    expected = resampling.resample_mask(lesion, affine, np.eye(4), t1.shape, t_affine)
    assert template.dice(template.warp_mask_to_template(lesion, affine, forward), expected) > 0.85
    # The pipeline's own template-space lesion (estimation plus registration error).
    assert template.dice(_template_mask(out, label, mod, "Tmax6"), expected) > 0.75


def test_affected_side_in_template_space_is_the_truth(normalised):
    bids, out, _ = normalised
    truth = read_truth(bids).set_index("participant_id")
    for label, (mod, _) in CASES.items():
        volumes = json.loads((_perf(out, label) / f"sub-{label}_desc-{mod}_volumes.json").read_text())
        assert volumes["Normalisation"]["AffectedSide"] == truth.loc[f"sub-{label}", "affected_side"]


def test_lesion_frequency_maps_average_the_sessions(normalised):
    _, out, _ = normalised
    path = out / frequency_name("ctp", "Tmax6")
    freq = np.asarray(nib.load(str(path)).dataobj)
    expected = (_template_mask(out, "left", "ctp", "Tmax6").astype(float)
                + _template_mask(out, "right", "ctp", "Tmax6")) / 2
    np.testing.assert_allclose(freq, expected, atol=1e-6)
    # Lesions in opposite hemispheres: half the cohort on each side, none in both.
    assert freq.max() == pytest.approx(0.5)
    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["AffectedSide"] == {"L": 1, "R": 1, "none": 0}
    assert len(sidecar["Sessions"]) == 2
    dsc = np.asarray(nib.load(str(out / frequency_name("dsc", "Core"))).dataobj)
    np.testing.assert_array_equal(dsc > 0, _template_mask(out, "mri", "dsc", "Core"))


def test_group_level_rebuilds_the_maps(normalised, tmp_path):
    bids, out, _ = normalised
    path = out / frequency_name("ctp", "Core")
    before = np.asarray(nib.load(str(path)).dataobj)
    path.unlink()
    assert main([str(bids), str(out), "group"]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(str(path)).dataobj), before)


def test_cohort_report_shows_the_frequency_maps(normalised):
    ok, message = cdp.ensure_chromium()
    if not ok:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Chromium is required under CI=true: {message}")
        pytest.skip(f"Chromium not available: {message}")
    _, out, _ = normalised
    browser = cdp.Browser(cdp.CHROMIUM)
    try:
        browser.open(out / "group.html")
        images = browser.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        alts = {alt for alt, _ in images}
        assert {"ctp lesion-frequency maps", "dsc lesion-frequency maps"} <= alts
        assert all(decoded for _, decoded in images)
        sides = browser.evaluate("Object.fromEntries(Array.from(document.querySelectorAll("
                                 "'[data-side]')).map(e => [e.dataset.side, e.textContent]))")
        assert sides == {"ctp-L": "1", "ctp-R": "1", "dsc-L": "1", "dsc-R": "0"}
        ARTIFACTS.mkdir(exist_ok=True)
        browser.screenshot(ARTIFACTS / "pipeline-group-normalised.png")
        assert browser.console_errors() == []
    finally:
        browser.close()


def test_a_run_without_normalise_leaves_no_template_outputs(normalised, tmp_path):
    """Re-running into the same OUTPUT_DIR without --normalise removes the template outputs and
    the group maps, so nothing stale describes the new run (cached steps make this fast)."""
    bids, out, _ = normalised
    assert main([str(bids), str(out), "participant", "-w", str(out.parent / "work"), "--nprocs",
                 "2", "--no-motion-correction"]) == 0
    assert not list(out.rglob(f"*{TEMPLATE_SPACE}*"))
    assert "Lesion frequency" not in (out / "group.html").read_text()
