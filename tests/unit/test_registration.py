"""Registration: LPS/RAS conversion, rigid parameters, motion correction, coregistration, mask
resampling and template normalisation, on synthetic heads with known displacement.

The synthetic head (also used by tests/unit/test_mr.py and benchmarks/registration.py): the ICBM152
2009a GM/WM maps shipped with nilearn, wrapped in extra-axial CSF, skull and scalp, sampled on any
grid after any rigid displacement, as CT (HU) or T2*-weighted EPI (arbitrary units).
"""

from __future__ import annotations

import functools
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from strokeperf.phantom import anatomy
from strokeperf.registration import ants as reg_ants
from strokeperf.registration import coregistration, resampling, template
from strokeperf.registration import motion as reg_motion

# --- synthetic head -------------------------------------------------------------------------------

#: Shell thicknesses outside the brain, mm: extra-axial CSF, skull, scalp.
CSF_MM, SKULL_MM, SCALP_MM = 2.0, 7.0, 5.0
#: Unenhanced CT numbers, HU.
CT_HU = {"gm": 38.0, "wm": 28.0, "csf": 8.0, "bone": 1000.0, "scalp": 40.0, "air": -1000.0}
#: EPI signal (a.u.) of each tissue: CSF bright, bone and air dark.
EPI = {"gm": 100.0, "wm": 80.0, "csf": 200.0, "bone": 0.0, "scalp": 60.0, "air": 0.0}
PAD = 12


@functools.lru_cache(maxsize=1)
def template_channels():
    """Tissue fractions on the padded 2-mm MNI grid: dict of arrays and the voxel->MNI affine."""
    from nilearn import datasets

    gm = datasets.load_mni152_gm_template(resolution=2)
    wm = datasets.load_mni152_wm_template(resolution=2).get_fdata()
    brain = datasets.load_mni152_brain_mask(resolution=2).get_fdata() > 0.5
    affine = gm.affine.copy()
    gm = gm.get_fdata()
    pad = [(PAD, PAD)] * 3
    gm, wm, brain = (np.pad(np.clip(a, 0, 1), pad) for a in (gm, wm, brain.astype(float)))
    brain = brain > 0.5
    gm, wm = gm * brain, wm * brain
    total = gm + wm
    scale = np.where(total > 1, 1 / np.maximum(total, 1e-9), 1.0)
    gm, wm = gm * scale, wm * scale
    csf_in = np.where(brain, 1 - gm - wm, 0.0)
    dist = ndimage.distance_transform_edt(~brain, sampling=2.0)
    outside = ~brain
    csf_out = outside & (dist <= CSF_MM)
    bone = outside & (dist > CSF_MM) & (dist <= CSF_MM + SKULL_MM)
    scalp = outside & (dist > CSF_MM + SKULL_MM) & (dist <= CSF_MM + SKULL_MM + SCALP_MM)
    air = ~(brain | csf_out | bone | scalp)
    affine[:3, 3] -= PAD * 2.0
    ch = {"gm": gm, "wm": wm, "csf": csf_in + csf_out, "bone": bone * 1.0, "scalp": scalp * 1.0,
          "air": air * 1.0, "brain": brain * 1.0}
    return {k: v.astype(np.float32) for k, v in ch.items()}, affine


def grid(shape, voxel_size, centre_mm=(0.0, -18.0, 10.0)):
    """RAS affine of an axial grid of ``shape`` and ``voxel_size`` centred on ``centre_mm``."""
    a = np.diag(list(voxel_size) + [1.0])
    a[:3, 3] = np.asarray(centre_mm) - a[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return a


def sample(channel_image, shape, affine, motion=np.eye(4), z_subsamples=3):
    """Sample a template-space image on a grid after the head moved by ``motion`` (RAS, head point
    p -> motion @ p), averaging ``z_subsamples`` points through each slice (partial volume)."""
    _, t_aff = template_channels()
    inv = np.linalg.inv(t_aff) @ np.linalg.inv(motion) @ affine
    out = np.zeros(shape, np.float32)
    for dz in (np.arange(z_subsamples) + 0.5) / z_subsamples - 0.5:
        off = inv[:3, :3] @ np.array([0.0, 0.0, dz]) + inv[:3, 3]
        out += ndimage.affine_transform(channel_image, inv[:3, :3], off, output_shape=shape,
                                        order=1, mode="nearest")
    return out / z_subsamples


def head_image(shape, affine, values, motion=np.eye(4)):
    """Head image (values per tissue, e.g. CT_HU or EPI) on a grid after ``motion``."""
    ch, _ = template_channels()
    img = sum(values[k] * ch[k] for k in ("gm", "wm", "csf", "bone", "scalp", "air"))
    return sample(img.astype(np.float32), shape, affine, motion)


def brain_mask(shape, affine, motion=np.eye(4)):
    ch, _ = template_channels()
    return sample(ch["brain"], shape, affine, motion) > 0.5


def vessel_map():
    """Template-space fraction of a few enhancing 'arteries' (tubes through the brain)."""
    ch, t_aff = template_channels()
    shape = ch["gm"].shape
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = ijk * 2.0 + t_aff[:3, 3]
    v = np.zeros(len(xyz), np.float32)
    for x0, y0 in ((-30, 10), (30, 10), (0, 25), (-40, -30), (40, -30)):
        r = np.hypot(xyz[:, 0] - x0, xyz[:, 1] - y0)
        v = np.maximum(v, np.clip(2.5 - r, 0, 1) * (np.abs(xyz[:, 2] - 5) < 40))
    return v.reshape(shape) * ch["brain"]


def ct_series(shape, voxel_size, motions, peak_hu=400.0, tissue_hu=6.0, noise_hu=8.0, seed=0):
    """CT perfusion series: head + contrast passing through vessels and tissue, one rigid motion
    (4x4, RAS) per frame. Returns (series, affine)."""
    from strokeperf.kinetics import gamma_variate

    ch, _ = template_channels()
    affine = grid(shape, voxel_size)
    n = len(motions)
    t = np.arange(n) * 1.5
    artery = gamma_variate(t, 8.0, 3.0, 1.5, peak_hu)
    tissue = gamma_variate(t, 10.0, 3.0, 2.5, tissue_hu)
    base = sum(CT_HU[k] * ch[k] for k in ("gm", "wm", "csf", "bone", "scalp", "air"))
    vessels = vessel_map()
    rng = np.random.default_rng(seed)
    out = np.empty(tuple(shape) + (n,), np.float32)
    for k, m in enumerate(motions):
        img = base + artery[k] * vessels + tissue[k] * (ch["gm"] + 0.5 * ch["wm"])
        out[..., k] = sample(img.astype(np.float32), shape, affine, m)
        out[..., k] += rng.normal(0, noise_hu, shape)
    return out, affine


def epi_series(shape, voxel_size, motions, peak_r2s=(60.0, 18.0), echo_time_s=0.03, snr=40.0,
               seed=0):
    """DSC magnitude series: EPI head with a signal drop in vessels and tissue during the bolus,
    Rician noise at ``snr`` for grey matter. Returns (series, affine)."""
    from strokeperf.kinetics import gamma_variate

    ch, _ = template_channels()
    affine = grid(shape, voxel_size)
    n = len(motions)
    t = np.arange(n) * 1.5
    artery = gamma_variate(t, 8.0, 3.0, 1.5, peak_r2s[0])
    tissue = gamma_variate(t, 10.0, 3.0, 2.5, peak_r2s[1])
    s0 = sum(EPI[k] * ch[k] for k in ("gm", "wm", "csf", "bone", "scalp", "air"))
    vessels = vessel_map()
    rng = np.random.default_rng(seed)
    sigma = EPI["gm"] / snr
    out = np.empty(tuple(shape) + (n,), np.float32)
    for k, m in enumerate(motions):
        r2s = artery[k] * vessels + tissue[k] * (ch["gm"] + 0.5 * ch["wm"])
        img = sample((s0 * np.exp(-echo_time_s * r2s)).astype(np.float32), shape, affine, m)
        out[..., k] = np.hypot(img + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
    return out, affine


def rigid_matrix(params, centre_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 RAS matrix of rigid parameters ``(tx, ty, tz, rx, ry, rz)`` (mm, degrees) about
    ``centre_mm``: the phantom's rigid transform, whose parameters
    :func:`strokeperf.registration.motion.rigid_params` recovers."""
    p = np.asarray(params, dtype=float)
    return anatomy.rigid_matrix(p[3:6], p[:3], centre_mm)


def warp_from_template(image, transforms: template.TemplateTransforms, target_shape,
                       target_affine, interpolation: str = "linear") -> np.ndarray:
    """A template-space image (e.g. the template's brain mask) on a subject grid, with the inverse
    of :func:`strokeperf.registration.template.normalise_to_template`'s transforms."""
    ants = reg_ants.import_ants()
    fixed = reg_ants.to_ants(np.zeros(tuple(target_shape[:3]), np.float32), target_affine)
    out = ants.apply_transforms(fixed, reg_ants.to_ants(image, transforms.template_affine),
                                transforms.inverse, interpolator=interpolation,
                                whichtoinvert=list(transforms.inverse_invert))
    return reg_ants.from_ants(out)[0].astype(np.float32)


def random_motions(n, rng, mm=2.0, deg=2.0, fraction=0.5, centre=(0.0, -18.0, 10.0)):
    """(params (n, 6), matrices (n, 4, 4)): a ``fraction`` of the frames (never frame 0) displaced
    by up to ``mm`` / ``deg`` per axis, at least half of it on every axis."""
    params = np.zeros((n, 6))
    moved = rng.random(n) < fraction
    moved[0] = False
    sign = rng.choice([-1.0, 1.0], size=(n, 6))
    params[moved, :3] = (sign * rng.uniform(0.5 * mm, mm, (n, 6)))[moved, :3]
    params[moved, 3:] = (sign * rng.uniform(0.5 * deg, deg, (n, 6)))[moved, 3:]
    return params, np.stack([rigid_matrix(p, centre) for p in params])


# --- conversion -----------------------------------------------------------------------------------


def test_import_loads_no_ants_and_import_ants_fixes_the_threads():
    """Importing the package changes nothing; ITK's thread count is set when ANTs is loaded."""
    import os
    import subprocess
    import sys

    code = ("import os, sys; import strokeperf.registration.motion, strokeperf.registration.template; "
            "print('ants' in sys.modules, os.environ.get('{0}')); "
            "from strokeperf.registration.ants import import_ants; import_ants(); "
            "print('ants' in sys.modules, os.environ.get('{0}'))").format(reg_ants.ITK_THREADS_ENV)
    env = {k: v for k, v in os.environ.items() if k != reg_ants.ITK_THREADS_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "None", "True", reg_ants.ITK_THREADS]


def oblique_affine(voxel_size=(1.8, 1.2, 4.0)):
    rot = rigid_matrix([0, 0, 0, 12.0, -7.0, 25.0])[:3, :3]
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(voxel_size) @ np.diag([-1.0, 1.0, 1.0])  # radiological x flip
    a[:3, 3] = (-90.0, 110.0, -40.0)
    return a


def test_to_ants_matches_ants_own_nifti_reader(tmp_path):
    ants = reg_ants.import_ants()

    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 9, 5)).astype(np.float32)
    affine = oblique_affine()
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    from_file = ants.image_read(str(path))
    ours = reg_ants.to_ants(data, affine)
    np.testing.assert_allclose(ours.origin, from_file.origin, atol=1e-4)
    np.testing.assert_allclose(ours.spacing, from_file.spacing, atol=1e-5)
    np.testing.assert_allclose(ours.direction, from_file.direction, atol=1e-5)
    np.testing.assert_array_equal(ours.numpy(), from_file.numpy())
    # voxel (2, 3, 1) sits at the LPS point that the RAS affine predicts
    ras = affine @ [2, 3, 1, 1]
    lps = ants.transform_index_to_physical_point(ours, (2, 3, 1))
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-4)


def test_ras_lps_round_trips():
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    affine = oblique_affine()
    back, back_affine = reg_ants.from_ants(reg_ants.to_ants(data, affine))
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(back_affine, affine, atol=1e-5)
    m = rigid_matrix([3.0, -4.0, 5.0, 4.0, -6.0, 9.0], centre_mm=(10.0, 20.0, -5.0))
    np.testing.assert_allclose(reg_ants.transform_to_ras(reg_ants.transform_from_ras(m)), m, atol=1e-9)


def test_transform_convention_matches_ants_resampling(tmp_path):
    """resample_image with a RAS fixed->moving matrix equals ants.apply_transforms with the same
    transform written for ANTs: the LPS conversion of transforms is right."""
    ants = reg_ants.import_ants()

    shape, vs = (40, 48, 14), (4.0, 4.0, 8.0)
    affine = grid(shape, vs)
    img = head_image(shape, affine, EPI)
    m = rigid_matrix([6.0, -4.0, 3.0, 5.0, -4.0, 8.0], centre_mm=(0.0, -18.0, 10.0))
    path = str(tmp_path / "t.mat")
    ants.write_transform(reg_ants.transform_from_ras(m), path)
    fixed = reg_ants.to_ants(img, affine)
    theirs = ants.apply_transforms(fixed, fixed, [path], interpolator="linear").numpy()
    ours = resampling.resample_image(img, affine, m, shape, affine, order=1, mode="constant")
    # compare where the source point lies inside the grid (the two differ only in edge handling)
    vox = np.linalg.inv(affine) @ m @ affine
    ijk = np.indices(shape).reshape(3, -1).T
    src = ijk @ vox[:3, :3].T + vox[:3, 3]
    inner = np.all((src >= 1) & (src <= np.array(shape) - 2), axis=1).reshape(shape)
    assert inner.sum() > 0.5 * inner.size
    assert np.max(np.abs(ours - theirs)[inner]) < 1e-2 * img.max()
    assert np.mean(np.abs(ours - img)[inner]) > 5.0  # the transform is not a no-op


def test_rigid_params_round_trip_and_framewise_displacement():
    p = np.array([1.0, -2.0, 0.5, 3.0, -1.5, 2.0])
    c = (5.0, -10.0, 20.0)
    np.testing.assert_allclose(reg_motion.rigid_params(rigid_matrix(p, c), c), p, atol=1e-10)
    params = np.array([[0, 0, 0, 0, 0, 0], [1, 0, -1, 0, 0, 0], [1, 0, -1, 0, 0, 1.0]])
    np.testing.assert_allclose(reg_motion.framewise_displacement(params),
                               [0.0, 2.0, 50.0 * np.deg2rad(1.0)])


# --- motion correction ----------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_motion_correction_recovers_rigid_motion_under_contrast(modality):
    rng = np.random.default_rng(3 if modality == "ct" else 4)
    n = 12
    params, motions = random_motions(n, rng, mm=3.0 if modality == "ct" else 2.0,
                                     deg=2.0, fraction=0.5)
    shape, vs = (96, 112, 26), (2.0, 2.0, 5.0)
    make = ct_series if modality == "ct" else epi_series
    series, affine = make(shape, vs, motions, seed=int(rng.integers(1000)))
    t0 = time.perf_counter()
    mc = reg_motion.motion_correct(series, affine, reference=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 25.0
    err = mc.params - params
    assert np.abs(err[:, :3]).max() < 0.3  # mm
    assert np.abs(err[:, 3:]).max() < 0.3  # degrees
    brain = brain_mask(shape, affine)
    points = resampling.world_points(brain, affine)
    true_disp = np.array([reg_motion.mean_displacement(m, points) for m in motions])
    np.testing.assert_allclose(mc.displacement_mm, true_disp, atol=0.3, rtol=0.15)
    np.testing.assert_allclose(mc.fd, reg_motion.framewise_displacement(params), atol=1.0)
    # frames clearly beyond / within half a slice (2.5 mm) through-plane are flagged / kept
    true_z = np.array([np.mean(np.abs((points @ m[:3, :3].T + m[:3, 3] - points)[:, 2]))
                       for m in motions])
    np.testing.assert_allclose(mc.through_plane_mm, true_z, atol=0.3)
    assert np.all(mc.excluded[true_z > 2.8]) and not np.any(mc.excluded[true_z < 2.2])
    assert modality == "mr" or np.any(true_z > 2.8)  # the CT case has a frame to flag
    # the corrected moved frames look like the unmoved head: residual smaller than before
    still = make(shape, vs, np.tile(np.eye(4), (n, 1, 1)), seed=0)[0]
    moved = np.flatnonzero(true_disp > 1.0)
    before = np.abs(series[..., moved] - still[..., moved])[brain].mean()
    after = np.abs(mc.corrected[..., moved] - still[..., moved])[brain].mean()
    assert after < 0.6 * before


def test_motion_correction_auto_reference_is_an_unmoved_frame():
    rng = np.random.default_rng(8)
    params, motions = random_motions(9, rng, mm=3.0, deg=3.0, fraction=0.3)
    shape, vs = (64, 76, 18), (3.0, 3.0, 7.0)
    series, affine = ct_series(shape, vs, motions, seed=1)
    ref = reg_motion.reference_frame(series)
    assert np.all(params[ref] == 0)


# --- coregistration -------------------------------------------------------------------------------


COREG_CASES = [  # (rotation degrees, shift mm, fixed modality)
    ((10.0, -6.0, 8.0), (10.0, -8.0, 6.0), "ct"),
    ((-7.0, 9.0, -10.0), (-9.0, 10.0, -10.0), "dsc"),
    ((0.0, 0.0, 10.0), (0.0, 10.0, 0.0), "ct"),
]


@pytest.mark.parametrize("rotation, shift, fixed_modality", COREG_CASES)
def test_coregistration_error_below_1_5_mm(rotation, shift, fixed_modality):
    """DWI b0 (EPI, 1.8 x 1.8 x 5 mm) displaced by up to 10 degrees / 10 mm -> CT or DSC grid."""
    head_motion = rigid_matrix(list(shift) + list(rotation))  # about the world origin
    dwi_shape, dwi_vs = (110, 128, 28), (1.8, 1.8, 5.0)
    dwi_affine = grid(dwi_shape, dwi_vs, centre_mm=(3.0, -14.0, 14.0))
    b0 = head_image(dwi_shape, dwi_affine, {**EPI, "csf": 260.0}, head_motion)
    if fixed_modality == "ct":
        f_shape, f_vs = (120, 144, 30), (1.5, 1.5, 5.0)
        f_affine = grid(f_shape, f_vs)
        fixed = head_image(f_shape, f_affine, CT_HU)
    else:
        f_shape, f_vs = (110, 128, 26), (1.8, 1.8, 5.0)
        f_affine = grid(f_shape, f_vs)
        fixed = head_image(f_shape, f_affine, EPI)
    transform, resampled = coregistration.coregister(b0, dwi_affine, fixed, f_affine)
    # truth: a head point at p (perfusion) is at head_motion @ p in the DWI
    truth = np.linalg.inv(head_motion)
    points = resampling.world_points(brain_mask(dwi_shape, dwi_affine, head_motion), dwi_affine)
    assert reg_motion.mean_displacement(np.linalg.inv(truth) @ transform, points) < 1.5
    assert resampled.shape == f_shape


def test_resample_mask_preserves_a_sphere():
    """A sphere drawn in DWI space and carried into a thick-slice grid by a known transform matches
    the sphere drawn directly there (volume within 5 %, Dice > 0.9)."""
    src_shape, src_vs = (100, 100, 60), (1.0, 1.0, 2.0)
    src_aff = grid(src_shape, src_vs, centre_mm=(0, 0, 0))
    tgt_shape, tgt_vs = (60, 60, 24), (1.7, 1.7, 5.0)
    tgt_aff = grid(tgt_shape, tgt_vs, centre_mm=(5, -5, 3))
    transform = rigid_matrix([4.0, -3.0, 6.0, 8.0, -5.0, 10.0])  # DWI -> target world
    centre_src, radius = np.array([10.0, -8.0, 5.0]), 20.0

    def sphere(shape, aff, centre):
        xyz = np.indices(shape).reshape(3, -1).T @ aff[:3, :3].T + aff[:3, 3]
        return (np.linalg.norm(xyz - centre, axis=1) <= radius).reshape(shape)

    mask = sphere(src_shape, src_aff, centre_src)
    expected = sphere(tgt_shape, tgt_aff, (transform @ np.append(centre_src, 1))[:3])
    out = resampling.resample_mask(mask, src_aff, transform, tgt_shape, tgt_aff)
    true_ml = 4 / 3 * np.pi * radius**3 / 1000
    assert abs(out.sum() * np.prod(tgt_vs) / 1000 - true_ml) < 0.05 * true_ml
    dice = 2 * (out & expected).sum() / (out.sum() + expected.sum())
    assert dice > 0.9


# --- template normalisation -----------------------------------------------------------------------


def test_dice_of_masks():
    a = np.zeros((4, 4, 2), bool)
    b = np.zeros_like(a)
    assert template.dice(a, b) == 1.0  # both empty
    a[:2] = True
    assert template.dice(a, b) == 0.0
    b[1:3] = True
    assert template.dice(a, b) == 0.5  # 8 shared voxels of 16 + 16
    assert template.dice(a, a) == 1.0


def test_normalisation_to_template_brings_the_brain_onto_the_template():
    """A CT head scaled, rotated and shifted away from MNI space comes back: the warped brain mask
    overlaps the template brain mask with Dice > 0.95 (it is < 0.85 without registration)."""
    shape, vs = (96, 112, 28), (2.0, 2.0, 5.0)
    affine = grid(shape, vs)
    motion = rigid_matrix([8.0, -10.0, 6.0, 10.0, -6.0, 12.0]) @ np.diag([1.1, 0.92, 1.06, 1])
    img = head_image(shape, affine, CT_HU, motion)
    brain = brain_mask(shape, affine, motion)
    transforms, warped = template.normalise_to_template(img, affine, brain)
    _, t_brain, t_affine = template.load_template()
    assert warped.shape == t_brain.shape
    for path in transforms.forward + transforms.inverse:
        assert path and __import__("os").path.getsize(path) > 0
    covered = template.warp_mask_to_template(np.ones(shape, bool), affine, transforms)
    target = t_brain & covered
    warped_brain = template.warp_mask_to_template(brain, affine, transforms)
    dice = 2 * (warped_brain & target).sum() / (warped_brain.sum() + target.sum())
    assert dice > 0.95
    identity = resampling.resample_fraction(brain, affine, np.eye(4), t_brain.shape, t_affine) >= 0.5
    dice0 = 2 * (identity & target).sum() / (identity.sum() + target.sum())
    assert dice0 < 0.85
    # and back: the template brain in subject space matches the subject brain
    back = warp_from_template(t_brain.astype(np.float32), transforms, shape, affine) >= 0.5
    dice_back = 2 * (back & brain).sum() / (back.sum() + brain.sum())
    assert dice_back > 0.95


# --- censoring of resampling errors ---------------------------------------------------------------


def test_interpolate_censored_draws_lines_between_clean_samples():
    t = np.array([0.0, 1.0, 2.0, 4.0, 5.0])
    y = np.array([[0.0, 99.0, 99.0, 8.0, 10.0],    # gap inside: line from t=0 to t=4
                  [99.0, 3.0, 5.0, 99.0, 99.0],    # gaps at the ends: nearest clean sample
                  [1.0, 2.0, 3.0, 4.0, 5.0],       # nothing censored
                  [99.0, 99.0, 99.0, 99.0, 99.0]])  # nothing clean: unchanged
    bad = np.array([[0, 1, 1, 0, 0], [1, 0, 0, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
    out = reg_motion.interpolate_censored(y, bad, t)
    np.testing.assert_allclose(out, [[0, 2, 4, 8, 10], [3, 3, 5, 5, 5], [1, 2, 3, 4, 5],
                                     [99] * 5])


def test_censoring_removes_skull_leak_of_moved_ct_frames_and_spares_still_series():
    """Motion-corrected CT frames carry skull (1000 HU) into brain-edge voxels; censoring replaces
    those samples by interpolation between unmoved frames and leaves deep and motion-free voxels
    alone. The series is sampled from the template after each displacement (not resampled from a
    moved image), so the check does not depend on the interpolation that censoring predicts with."""
    rng = np.random.default_rng(11)
    n = 14
    _, motions = random_motions(n, rng, mm=2.0, deg=2.0, fraction=1 / 3)
    shape, vs = (64, 76, 22), (3.0, 3.0, 5.0)
    series, affine = ct_series(shape, vs, motions, seed=5)
    still, _ = ct_series(shape, vs, np.tile(np.eye(4), (n, 1, 1)), seed=5)
    times = np.arange(n) * 1.5
    brain = brain_mask(shape, affine)
    edge = brain & ~ndimage.binary_erosion(brain, iterations=2)
    moved = np.flatnonzero([not np.allclose(m, np.eye(4)) for m in motions])

    mc = reg_motion.motion_correct(series, affine, reference=0)
    corrected = mc.corrected.copy()
    censoring = reg_motion.censor_resampling_errors(corrected, mc.transforms, affine, times)
    before = np.abs(mc.corrected[..., moved] - still[..., moved])[edge]
    after = np.abs(corrected[..., moved] - still[..., moved])[edge]
    # Edge samples: the error beyond three noise SDs (24 HU) mostly goes.
    assert np.mean(after > 24.0) < 0.4 * np.mean(before > 24.0), (np.mean(before > 24.0),
                                                                   np.mean(after > 24.0))
    assert np.sqrt(np.mean(after ** 2)) < 0.6 * np.sqrt(np.mean(before ** 2))
    # Unmoved frames and most of the deep brain are untouched.
    unmoved = np.setdiff1d(np.arange(n), moved)
    assert censoring.per_frame[unmoved].sum() == 0
    deep = ndimage.binary_erosion(brain, iterations=4)
    assert np.mean(censoring.counts[deep] > 0) < 0.1
    np.testing.assert_allclose(censoring.noise_sd, 8.0, rtol=0.35)

    # A motion-free series is left exactly as motion correction returned it.
    mc_still = reg_motion.motion_correct(still, affine, reference=0)
    kept = mc_still.corrected.copy()
    still_censoring = reg_motion.censor_resampling_errors(kept, mc_still.transforms, affine, times)
    assert still_censoring.counts.sum() == 0
    np.testing.assert_array_equal(kept, mc_still.corrected)
