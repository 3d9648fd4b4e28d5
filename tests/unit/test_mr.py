"""DSC-MRI rules: EPI brain and CSF masks, leakage correction, MR AIF selection; on synthetic data
with known truth (the synthetic head of tests/unit/test_registration.py)."""

from __future__ import annotations

import numpy as np
import pytest
from nibabel.affines import voxel_sizes
from scipy import integrate

from strokeperf import aif as aif_stage
from strokeperf import brainmask, concentration, kinetics
from strokeperf.aif.mr import classify_mr_voxels
from strokeperf.errors import DataError
from test_registration import EPI, grid, sample, template_channels


def dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def epi_head(shape=(110, 128, 28), vs=(1.8, 1.8, 5.0), csf=200.0, snr=30.0, seed=0):
    """EPI magnitude image with Rician noise; truth intracranial, CSF and scalp masks."""
    ch, _ = template_channels()
    affine = grid(shape, vs)
    values = {**EPI, "csf": csf}
    img = sample(sum(values[k] * ch[k] for k in values).astype(np.float32), shape, affine)
    rng = np.random.default_rng(seed)
    sigma = EPI["gm"] / snr
    img = np.hypot(img + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
    intracranial = sample((ch["brain"] + ch["csf"] * (1 - ch["brain"])).astype(np.float32),
                          shape, affine) > 0.5
    csf_mask = sample(ch["csf"], shape, affine) > 0.5
    scalp = sample(ch["scalp"], shape, affine) > 0.5
    return img.astype(np.float32), intracranial, csf_mask, scalp, vs


@pytest.mark.parametrize("csf, snr", [(200.0, 30.0), (300.0, 15.0), (110.0, 40.0)])
def test_mr_brain_mask_on_synthetic_head(csf, snr):
    img, truth, _, scalp, vs = epi_head(csf=csf, snr=snr)
    mask = brainmask.mr_brain_mask(img, vs)
    assert dice(mask, truth) > 0.95
    assert np.count_nonzero(mask & scalp) < 0.002 * np.count_nonzero(mask)


def test_mr_brain_mask_raises_on_noise_only():
    rng = np.random.default_rng(0)
    noise = np.hypot(rng.normal(0, 1, (64, 64, 20)), rng.normal(0, 1, (64, 64, 20)))
    with pytest.raises(DataError, match="empty brain mask"):
        brainmask.mr_brain_mask(noise, (2.0, 2.0, 5.0))


@pytest.mark.parametrize("voxel_size", [(3.0, 3.0, 5.0), (1.8, 1.8, 5.0)])
@pytest.mark.parametrize("bias", [0.0, 0.4])
def test_mr_brain_mask_leaves_soft_tissue_under_the_skull_base_out(voxel_size, bias):
    """The phantom head's scalp and muscle layer below the middle and posterior fossae lies under
    7 mm of skull, which 3-mm pixels partial-volume into dim voxels; through them that soft tissue
    joined the brain mask (86-208 mL of scalp here before the mask's seeds excluded bone-dominated
    voxels). ``bias`` adds a left-right receive-coil gradient of +-40 %."""
    from strokeperf.phantom import acquisition, anatomy

    grid = anatomy.axial_grid(voxel_size)
    anat = anatomy.sample_anatomy(grid)
    s0 = acquisition.dsc_baseline(anat)
    x = np.linspace(-1.0, 1.0, grid.shape[0])[:, None, None]
    s0 = s0 * (1.0 + bias * x)
    rng = np.random.default_rng(7)
    sd = acquisition.GM_REFERENCE_S0 / 50.0 / 2.0  # the S0 of 4 baseline frames at SNR 50
    s0 = np.hypot(s0 + rng.normal(0, sd, s0.shape), rng.normal(0, sd, s0.shape))
    mask = brainmask.mr_brain_mask(s0, voxel_size)
    voxel_ml = float(np.prod(voxel_size)) / 1000.0
    scalp_ml = np.count_nonzero(mask & (anat["scalp"] > 0.5)) * voxel_ml
    tissue = (anat["gm"] + anat["wm"]) > 0.5
    missed_ml = np.count_nonzero(tissue & ~mask) * voxel_ml
    assert scalp_ml < 2.0
    assert missed_ml < 3.0
    assert dice(mask, (anat["gm"] + anat["wm"] + anat["csf"]) > 0.5) > 0.95


@pytest.mark.parametrize("voxel_size", [(3.0, 3.0, 5.0), (1.8, 1.8, 5.0)])
def test_mr_vessel_search_region_reaches_the_carotids_under_the_skull_base(voxel_size):
    """The brain mask leaves the soft tissue under the skull base out, but the internal carotid
    arteries run there and give the purest arterial voxels, so the AIF search must reach them (the
    brain mask grown by 6 mm reaches 16 of 24 at 3 mm, 54 of 76 at 1.8 mm)."""
    from strokeperf.phantom import acquisition, anatomy

    grid = anatomy.axial_grid(voxel_size)
    anat = anatomy.sample_anatomy(grid)
    points, radii, names = anatomy.artery_centrelines()
    carotid = names == 0
    blood = np.clip(anatomy.tube_fraction(grid, points[carotid], radii[carotid]), 0, 1)
    s0 = acquisition.dsc_baseline(anat) * (1 - blood) + acquisition.DSC_S0["blood"] * blood
    rng = np.random.default_rng(7)
    sd = acquisition.GM_REFERENCE_S0 / 100.0
    s0 = np.hypot(s0 + rng.normal(0, sd, s0.shape), rng.normal(0, sd, s0.shape))
    brain = brainmask.mr_brain_mask(s0, voxel_size)
    search = brainmask.mr_vessel_search_region(s0, brain, voxel_size, margin_mm=6.0)
    arterial = blood > 0.5
    assert arterial.sum() >= 20
    assert np.all(search[arterial])


def test_mr_csf_mask_finds_bright_csf_and_nothing_without_contrast():
    img, truth_brain, truth_csf, _, vs = epi_head(csf=220.0, snr=30.0)
    brain = brainmask.mr_brain_mask(img, vs)
    csf = brainmask.mr_csf_mask(img, brain, vs)
    assert dice(csf, truth_csf & brain) > 0.6
    flat, _, _, _, vs = epi_head(csf=100.0, snr=30.0)  # CSF as grey matter: no CSF contrast
    assert np.count_nonzero(brainmask.mr_csf_mask(flat, brain, vs)) < 0.02 * brain.sum()


# --- leakage correction ---------------------------------------------------------------------------

T = np.arange(0.0, 75.0, 1.5)


def test_leakage_correction_recovers_k2_and_removes_its_bias():
    """Curves K1 C_ref - K2 int C_ref with known K2 (positive: T1 leakage; negative: T2*): the fit
    returns K2 and the corrected curve has the unbiased area K1 * area(C_ref)."""
    rng = np.random.default_rng(0)
    ref = (kinetics.gamma_variate(T, 10.0, 3.0, 1.6, 15.0)
           + kinetics.gamma_variate(T, 24.0, 3.0, 3.0, 2.5))
    shape = (30, 30, 4)
    mask = np.ones(shape, bool)
    k1 = rng.uniform(0.6, 1.4, shape)
    k2 = np.zeros(shape)
    leaky = np.zeros(shape, bool)
    leaky[5:15, 5:15, 1:3] = True  # 400 leaky voxels among 3600
    k2[leaky] = rng.uniform(-0.01, 0.03, leaky.sum())
    integral = integrate.cumulative_trapezoid(ref, T, initial=0.0)
    curves = k1[..., None] * ref - k2[..., None] * integral
    curves += rng.normal(0, 0.3, curves.shape)
    corrected, k2_fit = concentration.correct_leakage(curves, T, mask)
    err = k2_fit - k2
    assert np.abs(err[leaky]).max() < 0.003
    assert np.abs(np.mean(err[leaky])) < 5e-4
    area_true = k1 * np.trapezoid(ref, T)
    bias_before = np.trapezoid(curves[leaky], T) - area_true[leaky]
    bias_after = np.trapezoid(corrected[leaky], T) - area_true[leaky]
    assert np.mean(np.abs(bias_before)) > 10 * np.mean(np.abs(bias_after))
    assert np.mean(np.abs(bias_after / area_true[leaky])) < 0.03
    np.testing.assert_allclose(corrected[~leaky], curves[~leaky], atol=0.02 * ref.max())


def test_leakage_correction_rejects_a_flat_reference():
    with pytest.raises(DataError):
        concentration.correct_leakage(np.zeros((4, 4, 2, T.size)), T, np.ones((4, 4, 2), bool))


# --- MR AIF ---------------------------------------------------------------------------------------

TE = 0.03


def dsc_volume(seed, saturated_arteries=True):
    """DSC signal with tissue, good arteries (full S0, unsaturated), saturated arteries (the same
    bolus at twice the concentration: signal in the noise floor at the peak) and low-S0 junk
    (partial volume with bone: S0 x 0.25, noisy and floored)."""
    rng = np.random.default_rng(seed)
    shape = (24, 24, 6)
    brain = np.zeros(shape, bool)
    brain[2:22, 2:22, :] = True
    aif_true = (kinetics.gamma_variate(T, 9.0, 3.0, 1.5, 55.0)
                + kinetics.gamma_variate(T, 22.0, 3.0, 3.0, 6.0))
    fine = np.arange(0, T[-1] + 0.1, 0.1)
    h = kinetics.flow_rate_per_s(55.0) * kinetics.residue(fine - 1.0, 4.0, 2.0)
    tissue = np.interp(T, fine, np.convolve(np.interp(fine, T, aif_true), h)[: fine.size] * 0.1)
    r2s = np.zeros(shape + (T.size,))
    r2s[brain] = tissue
    s0 = np.where(brain, 100.0, 0.0)
    cells = rng.permutation(np.flatnonzero(brain))
    good, saturated, junk = cells[:10], cells[10:22], cells[22:34]
    flat_r2 = r2s.reshape(-1, T.size)
    flat_s0 = s0.ravel()
    flat_r2[good] = aif_true
    flat_r2[saturated] = 2.6 * aif_true if saturated_arteries else tissue
    flat_r2[junk] = 1.3 * aif_true
    flat_s0[junk] = 25.0
    sigma = 100.0 / 40.0
    signal = s0[..., None] * np.exp(-TE * r2s)
    signal = np.hypot(signal + rng.normal(0, sigma, signal.shape),
                      rng.normal(0, sigma, signal.shape))
    masks = []
    for idx in (good, saturated, junk):
        m = np.zeros(shape, bool)
        m.ravel()[idx] = True
        masks.append(m)
    return signal.astype(np.float32), brain, aif_true, masks


def _select_mr_aif(signal, brain, baseline_end: int = 5):
    """delta-R2* of the series, the MR AIF chosen on it, and the mask of the chosen voxels."""
    conc = concentration.dsc_concentration(signal, TE, baseline_end)
    chosen = aif_stage.select_aif(conc, T, brain, n_voxels=6, modality="mr", signal=signal,
                                  baseline_end=baseline_end, echo_time=TE)
    picked = np.zeros(brain.shape, bool)
    picked[tuple(chosen.voxels.T)] = True
    return conc, chosen, picked


@pytest.mark.parametrize("seed", range(3))
def test_mr_aif_picks_unsaturated_arteries(seed):
    signal, brain, aif_true, (good, _, junk) = dsc_volume(seed, saturated_arteries=False)
    conc, chosen, picked = _select_mr_aif(signal, brain)
    assert np.all(good[picked])
    assert chosen.censored_frames == 0
    assert chosen.peak == pytest.approx(aif_true.max(), rel=0.15)
    # the trap: without the MR rules, the noisy low-S0 junk voxels are chosen
    ct_rules = aif_stage.select_aif(conc, T, brain, n_voxels=6)
    ct_picked = np.zeros(brain.shape, bool)
    ct_picked[tuple(ct_rules.voxels.T)] = True
    assert np.any(junk[ct_picked])


@pytest.mark.parametrize("seed", range(3))
def test_mr_aif_of_a_saturated_bolus_is_censored_not_partial_volume(seed):
    """When arterial voxels reach the noise floor, the arteries' blood signal vanishes at the
    peak: the AIF is the censored curve of those voxels, which follows the true curve below the
    censoring level (the unsaturated voxels are taken as partial volume)."""
    signal, brain, aif_true, (good, saturated, junk) = dsc_volume(seed)
    conc, chosen, picked = _select_mr_aif(signal, brain)
    assert np.all(saturated[picked])
    assert chosen.censored_frames >= 2
    truth = 2.6 * aif_true
    below = (truth > 5.0) & (truth < 0.7 * chosen.censor_level)
    np.testing.assert_allclose(chosen.curve[below], truth[below], rtol=0.2, atol=3.0)
    assert chosen.curve.max() <= chosen.censor_level + 1e-9


def test_mr_unsaturated_flags_floor_and_low_baseline():
    signal, brain, _, (good, saturated, junk) = dsc_volume(0)
    ok = classify_mr_voxels(signal, 5, brain).unsaturated
    assert np.all(ok[good]) and not np.any(ok[saturated]) and not np.any(ok[junk])
    assert ok[brain & ~(good | saturated | junk)].mean() > 0.99


def test_mr_aif_needs_the_signal():
    signal, brain, _, _ = dsc_volume(0)
    conc = concentration.dsc_concentration(signal, TE, 5)
    with pytest.raises(ValueError):
        aif_stage.select_aif(conc, T, brain, modality="mr")


# --- digital phantom ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mr_phantom(tmp_path_factory):
    """DSC + DWI phantom (2 x 2 x 5 mm, 24 frames) with head motion and a displaced DWI."""
    import json

    import nibabel as nib

    from strokeperf.phantom import PhantomConfig, generate_dataset

    out = tmp_path_factory.mktemp("mr_phantom") / "bids"
    config = PhantomConfig(seed=5, voxel_size_mm=(2.0, 2.0, 5.0), duration_s=36.0, snr=40.0,
                           motion_mm=2.0, motion_deg=2.0, motion_fraction=0.3,
                           dwi_rotation_deg=(6.0, -4.0, 8.0), dwi_shift_mm=(5.0, -7.0, 4.0))
    generate_dataset(out, config, participant="01", modalities=("dsc", "dwi"))

    def load(rel):
        img = nib.load(out / rel)
        return np.asarray(img.get_fdata(), dtype=np.float32), img.affine

    dsc, dsc_affine = load("sub-01/perf/sub-01_dsc.nii.gz")
    dwi, dwi_affine = load("sub-01/dwi/sub-01_dwi.nii.gz")
    bvals = np.loadtxt(out / "sub-01/dwi/sub-01_dwi.bval")
    truth = json.loads((out / "truth/sub-01_truth.json").read_text())
    tissue, _ = load("truth/sub-01_mod-dsc_tissue.nii.gz")
    csf, _ = load("truth/sub-01_mod-dsc_csf.nii.gz")
    dwi_core, _ = load("truth/sub-01_mod-dwi_core.nii.gz")
    return dict(dsc=dsc, dsc_affine=dsc_affine, dwi=dwi, dwi_affine=dwi_affine, bvals=bvals,
                truth=truth, brain=(tissue > 0) | (csf > 0), dwi_core=dwi_core > 0)


@pytest.mark.slow  # generates phantom datasets
def test_phantom_mr_brain_mask_and_motion(mr_phantom):
    from strokeperf.registration import motion as reg_motion
    from strokeperf.registration import resampling

    p = mr_phantom
    vs = voxel_sizes(p["dsc_affine"])
    mc = reg_motion.motion_correct(p["dsc"], p["dsc_affine"], reference=0)
    truth = np.array([m["matrix"] for m in p["truth"]["modalities"]["dsc"]["motion"]])
    points = resampling.world_points(p["brain"], p["dsc_affine"])
    errors = [reg_motion.mean_displacement(np.linalg.inv(a) @ b, points)
              for a, b in zip(mc.transforms, truth)]
    assert max(errors) < 0.3
    s0 = mc.corrected[..., :4].mean(axis=3)
    mask = brainmask.mr_brain_mask(s0, vs)
    assert dice(mask, p["brain"]) > 0.9


@pytest.mark.slow  # generates phantom datasets
def test_phantom_dwi_coregistration_adc_and_core(mr_phantom):
    from strokeperf import diffusion, lesions
    from strokeperf.registration import coregistration, resampling
    from strokeperf.registration import motion as reg_motion

    p = mr_phantom
    dwi_vs = voxel_sizes(p["dwi_affine"])
    b0 = diffusion.mean_b0(p["dwi"], p["bvals"])
    s0 = p["dsc"][..., 0]
    transform, _ = coregistration.coregister(b0, p["dwi_affine"], s0, p["dsc_affine"])
    truth = np.asarray(p["truth"]["dwi_to_perfusion_world"])
    brain_dwi = diffusion.dwi_brain_mask(p["dwi"], p["bvals"], dwi_vs)
    points = resampling.world_points(brain_dwi, p["dwi_affine"])
    assert reg_motion.mean_displacement(np.linalg.inv(truth) @ transform, points) < 1.5
    adc = diffusion.adc_from_dwi(p["dwi"], p["bvals"], mask=brain_dwi)
    core = diffusion.adc_core(adc, brain_dwi, dwi_vs, b0=b0)
    true_ml = float(p["truth"]["modalities"]["dwi"]["core_ml"])
    assert lesions.volume_ml(core, dwi_vs) == pytest.approx(true_ml, rel=0.15, abs=2.0)
    assert dice(core, p["dwi_core"]) > 0.75
