"""QC flags: each rule raised by a synthetic case made to break it and silent on a clean one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nibabel.affines import voxel_sizes

from strokeperf import qc
from strokeperf.kinetics import gamma_variate

T = np.arange(45) * 1.5  # 66 s, the phantom's default CTP protocol
VOXEL = (1.5, 1.5, 5.0)
SHAPE = (60, 72, 20)


def _affine(voxel=VOXEL, shape=SHAPE):
    aff = np.diag([*voxel, 1.0])
    aff[:3, 3] = -np.asarray(voxel) * (np.asarray(shape) - 1) / 2.0
    return aff


def _brain(shape=SHAPE, z_radius_fraction=0.45):
    """Ellipsoid centred in the grid; ``z_radius_fraction`` of the slab depth per half-axis."""
    idx = np.indices(shape).astype(float)
    c = (np.asarray(shape) - 1) / 2.0
    r = np.array([0.42 * shape[0], 0.42 * shape[1], z_radius_fraction * shape[2]])
    return (((idx - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1.0


def _lesion(brain, x_range, z_range=None):
    lesion = np.zeros_like(brain)
    zs = slice(None) if z_range is None else slice(*z_range)
    lesion[slice(*x_range), 20:50, zs] = True
    return lesion & brain


def _tissue(arrival=10.0, beta=2.5, peak=25.0, t=T):
    return gamma_variate(t, arrival, 3.0, beta, peak=peak)


def _aif(arrival=8.0, beta=1.5, peak=400.0, t=T):
    return gamma_variate(t, arrival, 3.0, beta, peak=peak)


def _record(aif=None, vof="default", vof_complete=True, quality=0.98):
    vof_curve = gamma_variate(T, 13.0, 3.0, 2.0, peak=500.0) if isinstance(vof, str) else vof
    return {"aif": _aif() if aif is None else aif, "vof": vof_curve, "vof_complete": vof_complete,
            "aif_quality": quality}


def _flags(**overrides):
    brain = _brain()
    kwargs = dict(frame_times=T, tissue_curve=_tissue(), input_functions=_record(),
                  brain_mask=brain, hypoperfused_mask=_lesion(brain, (10, 28), (6, 14)),
                  affine=_affine(), hypoperfused_curve=_tissue(arrival=15.0, beta=4.0, peak=12.0),
                  noise_sd=1.5, framewise_displacement=np.r_[np.nan, np.full(T.size - 1, 0.1)])
    kwargs.update(overrides)
    return qc.compute_qc_flags(**kwargs)


def test_clean_case_raises_nothing():
    assert _flags() == []


def test_every_flag_is_explained_in_one_sentence():
    for flag, text in qc.QC_FLAG_RULES.items():
        assert text.endswith(".") and text.count(". ") == 0, flag
    assert set(qc.QC_FLAGS) >= {"motion", "truncated_bolus", "poor_aif", "no_vof", "low_snr",
                                "limited_coverage", "lesion_at_slab_edge", "bilateral_deficit"}


# --- motion ---

def test_motion_triggers_above_half_the_smallest_voxel_edge():
    fd = np.r_[np.nan, np.full(T.size - 1, 0.1)]
    fd[20] = 0.8  # > 0.5 x 1.5 mm
    assert qc.motion(fd, VOXEL)
    assert _flags(framewise_displacement=fd) == ["motion"]


def test_motion_silent_below_limit_and_without_trace():
    fd = np.r_[np.nan, np.full(T.size - 1, 0.7)]  # just under 0.75 mm
    assert not qc.motion(fd, VOXEL)
    assert not qc.motion(None, VOXEL)
    assert _flags(framewise_displacement=None) == []


# --- truncated bolus ---

def test_truncated_bolus_when_tissue_still_high_at_scan_end():
    short = T[T <= 24.0]  # 24-s scan: the tissue curve peaks at 17.5 s and is still high at the end
    assert qc.truncated_bolus(short, _tissue(t=short))
    assert "truncated_bolus" in _flags(frame_times=short, tissue_curve=_tissue(t=short),
                                       input_functions=_record(aif=_aif(t=short), vof=None),
                                       hypoperfused_curve=None, framewise_displacement=None)


def test_truncated_bolus_when_hypoperfused_tissue_does_not_return():
    slow = _tissue(arrival=25.0, beta=9.0, peak=10.0)  # peaks at 52 s, barely falls by 66 s
    assert qc.truncated_bolus(T, _tissue(), hypoperfused_curve=slow)
    assert _flags(hypoperfused_curve=slow) == ["truncated_bolus"]


def test_truncated_bolus_when_vof_incomplete():
    assert qc.truncated_bolus(T, _tissue(), vof_complete=False)


def test_truncated_bolus_silent_for_complete_scan():
    assert not qc.truncated_bolus(T, _tissue(), _tissue(arrival=15.0, beta=4.0, peak=12.0), True)
    # a hypoperfused curve without enhancement (dead tissue) cannot be truncated
    assert not qc.truncated_bolus(T, _tissue(), np.zeros(T.size))


# --- AIF ---

@pytest.mark.parametrize("aif, problem", [
    (_aif(arrival=11.0), "late"),            # arrives after the tissue (10 s)
    (_aif(peak=100.0), "low"),               # 4x the tissue peak of 25
    (_aif(beta=4.0), "broad"),               # FWHM wider than the tissue's (beta 2.5)
])
def test_poor_aif_triggers(aif, problem):
    assert problem in qc.aif_problems(T, aif, _tissue())
    assert _flags(input_functions=_record(aif=aif)) == ["poor_aif"]


def test_poor_aif_triggers_on_irregular_fit():
    assert qc.aif_problems(T, _aif(), _tissue(), aif_quality=0.6) == ["irregular"]


def test_poor_aif_silent_for_early_high_narrow_aif():
    assert qc.aif_problems(T, _aif(), _tissue(), aif_quality=0.98) == []


# --- VOF ---

def test_no_vof_triggers_when_missing_or_incomplete():
    assert qc.no_vof(None)
    assert qc.no_vof(np.full(T.size, np.nan))
    assert qc.no_vof(_tissue(), vof_complete=False)
    assert _flags(input_functions=_record(vof=None, vof_complete=None)) == ["no_vof"]


def test_no_vof_silent_with_complete_vof():
    assert not qc.no_vof(_tissue(), vof_complete=True)


# --- noise ---

def test_low_snr_triggers_when_enhancement_is_below_five_noise_sd():
    assert qc.low_snr(_tissue(peak=25.0), noise=6.0)
    assert _flags(noise_sd=6.0) == ["low_snr"]


def test_low_snr_silent_for_clean_data_or_unknown_noise():
    assert not qc.low_snr(_tissue(peak=25.0), noise=2.0)
    assert not qc.low_snr(_tissue(), noise=None)


def test_voxel_noise_sd_recovers_white_noise():
    rng = np.random.default_rng(3)
    mask = _brain((16, 16, 6))
    conc = _tissue()[None, None, None, :] * mask[..., None] + rng.normal(0, 4.0, (16, 16, 6, T.size))
    assert qc.voxel_noise_sd(conc, mask) == pytest.approx(4.0, rel=0.1)
    assert np.isnan(qc.voxel_noise_sd(conc, np.zeros_like(mask)))


# --- coverage ---

def test_limited_coverage_triggers_when_slab_cuts_the_brain():
    slab = _brain(z_radius_fraction=1.5)  # the brain continues beyond both slab ends
    assert qc.limited_coverage(slab)
    assert "limited_coverage" in _flags(brain_mask=slab)


def test_limited_coverage_silent_for_whole_brain():
    assert not qc.limited_coverage(_brain())
    assert not qc.limited_coverage(np.zeros(SHAPE, bool))


def test_lesion_at_slab_edge_triggers_for_lesion_in_end_slice():
    brain = _brain(z_radius_fraction=1.5)
    lesion = _lesion(brain, (10, 28))  # every slice, including the first and last
    assert qc.lesion_at_slab_edge(lesion, VOXEL)
    assert _flags(brain_mask=brain, hypoperfused_mask=lesion) == ["limited_coverage",
                                                                  "lesion_at_slab_edge"]


def test_lesion_at_slab_edge_silent_for_central_lesion_or_speck():
    brain = _brain(z_radius_fraction=1.5)
    assert not qc.lesion_at_slab_edge(_lesion(brain, (10, 28), (5, 15)), VOXEL)
    speck = np.zeros(SHAPE, bool)
    speck[15, 30, 0] = True  # 0.011 mL, under the 1-mL cluster minimum
    assert not qc.lesion_at_slab_edge(speck, VOXEL)


# --- bilateral ---

def test_bilateral_deficit_triggers_for_lesions_in_both_hemispheres():
    brain = _brain()
    both = _lesion(brain, (8, 22), (6, 14)) | _lesion(brain, (38, 52), (6, 14))
    assert qc.bilateral_deficit(both, brain, _affine())
    assert _flags(hypoperfused_mask=both) == ["bilateral_deficit"]


def test_bilateral_deficit_silent_for_unilateral_lesion_touching_midline():
    brain = _brain()
    # x 10..31 crosses the midline (29.5) by less than the 5-mm band
    lesion = _lesion(brain, (10, 32), (6, 14))
    assert not qc.bilateral_deficit(lesion, brain, _affine())
    assert not qc.bilateral_deficit(np.zeros(SHAPE, bool), brain, _affine())


# --- on the digital phantom ---------------------------------------------------------------------

def _phantom_inputs(bids: Path, participant: str) -> dict:
    """Curves and masks of a phantom session as the pipeline sees them: delta-HU denoised in the
    brain (pipeline functions), truth brain and Tmax > 6 s masks, frame times from the sidecar."""
    import json

    import nibabel as nib

    from strokeperf import concentration

    raw = next(bids.glob(f"sub-{participant}/**/*_ctp.nii.gz"))
    side = json.loads(raw.with_name(raw.name.replace(".nii.gz", ".json")).read_text())
    img = nib.load(raw)
    hu = np.asarray(img.dataobj, dtype=np.float32)
    t = np.asarray(side.get("VolumeTiming") or np.arange(hu.shape[-1]) * side["RepetitionTime"])
    truth = bids / "truth"

    def mask(name):
        return np.asarray(nib.load(truth / f"sub-{participant}_mod-ctp_{name}.nii.gz").dataobj) > 0

    tissue, hyp = mask("tissue"), mask("tmax6")
    brain = tissue | mask("csf")
    timing = concentration.detect_bolus(hu[brain].mean(axis=0), t)
    conc = concentration.ct_concentration(hu, t, max(timing.baseline_end, 1), mask=brain)
    conc = concentration.denoise(conc, brain, voxel_sizes(img.affine))
    normal = tissue & ~mask("tmax4")
    return {"t": t, "affine": img.affine, "brain": brain, "hyp": hyp,
            "normal_curve": conc[normal].mean(axis=0),
            "hyp_curve": conc[hyp].mean(axis=0) if hyp.any() else None,
            "noise": qc.voxel_noise_sd(conc, tissue)}


@pytest.fixture(scope="module")
def phantom_cases(tmp_path_factory) -> dict:
    """Coarse CTP phantoms: clean whole brain, very noisy, a 40-mm slab, a 25-s scan."""
    from conftest import make_phantom

    bids = tmp_path_factory.mktemp("qc_phantom") / "bids"
    cases = {"clean": dict(noise_hu=2.0), "noisy": dict(noise_hu=40.0),
             "slab": dict(noise_hu=2.0, slab_mm=40.0, lesion_volume_ml=120.0),
             "short": dict(noise_hu=2.0, duration_s=25.0, bolus_arrival_s=8.0)}
    for name, options in cases.items():
        make_phantom(bids, name, seed=11, lesion_side="L", **options)
    return {name: _phantom_inputs(bids, name) for name in cases}


@pytest.mark.slow  # generates phantom datasets
def test_phantom_clean_case_raises_no_acquisition_flag(phantom_cases):
    c = phantom_cases["clean"]
    assert not qc.low_snr(c["normal_curve"], c["noise"])
    assert not qc.limited_coverage(c["brain"])
    assert not qc.lesion_at_slab_edge(c["hyp"], voxel_sizes(c["affine"]))
    assert not qc.truncated_bolus(c["t"], c["normal_curve"], c["hyp_curve"])
    assert not qc.bilateral_deficit(c["hyp"], c["brain"], c["affine"])


@pytest.mark.slow  # generates phantom datasets
def test_phantom_noisy_case_is_low_snr(phantom_cases):
    c = phantom_cases["noisy"]
    assert qc.low_snr(c["normal_curve"], c["noise"])


@pytest.mark.slow  # generates phantom datasets
def test_phantom_slab_has_limited_coverage_and_lesion_at_edge(phantom_cases):
    c = phantom_cases["slab"]
    assert qc.limited_coverage(c["brain"])
    assert qc.lesion_at_slab_edge(c["hyp"], voxel_sizes(c["affine"]))


@pytest.mark.slow  # generates phantom datasets
def test_phantom_short_scan_is_truncated(phantom_cases):
    c = phantom_cases["short"]
    assert qc.truncated_bolus(c["t"], c["normal_curve"], c["hyp_curve"])


def test_session_qc_averages_the_tissue_curves_and_flags_the_session():
    from strokeperf import lesions

    brain = _brain()
    lesion = _lesion(brain, (10, 28), (6, 14))
    tmax = np.where(lesion, 9.0, 1.0)
    cbf = np.where(lesion, 15.0, 50.0)
    found = lesions.hypoperfusion(cbf, np.full(SHAPE, 4.0), tmax, brain, None, _affine())
    normal, late = _tissue(), _tissue(arrival=15.0, beta=4.0, peak=12.0)
    conc = np.where(lesion[..., None], late, normal).astype(np.float32)
    conc += np.random.default_rng(3).normal(0.0, 0.5, conc.shape).astype(np.float32)
    result = qc.session_qc(conc, found, _record(), T,
                           framewise_displacement=np.r_[np.nan, np.full(T.size - 1, 5.0)])
    np.testing.assert_allclose(result["curves"]["tissue_normal"], normal, atol=0.05)
    np.testing.assert_allclose(result["curves"]["tissue_hypoperfused"], late, atol=0.1)
    assert result["qc_flags"] == ["motion"]
    clean = qc.session_qc(np.where(brain[..., None], normal, 0.0).astype(np.float32),
                          lesions.hypoperfusion(np.full(SHAPE, 50.0), np.full(SHAPE, 4.0),
                                                np.ones(SHAPE), brain, None, _affine()),
                          _record(), T)
    assert clean["curves"]["tissue_hypoperfused"] is None and clean["qc_flags"] == []
