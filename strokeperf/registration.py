"""Rigid motion correction, coregistration and template normalisation with ANTs.

Array in, array out: images are numpy arrays ``(X, Y, Z)`` (series ``(X, Y, Z, T)``) with a 4x4
voxel-to-world affine in nibabel's RAS+ convention (+x towards the patient's Right, +y Anterior,
+z Superior, millimetres). ANTs/ITK works
in LPS+ physical space (+x towards the patient's Left, +y Posterior), so every conversion goes
through :data:`RAS_TO_LPS` = diag(-1, -1, 1, 1); :func:`to_ants` / :func:`from_ants` and
:func:`transform_to_ras` / :func:`transform_from_ras` are the only places where that happens.

World transforms are 4x4 matrices acting on RAS mm points. Their direction is stated everywhere:

- :func:`motion_correct` returns, per frame, the head displacement ``reference -> frame`` (a
  point of the head at ``x`` in the reference frame is at ``T @ x`` in that frame), the ITK
  "fixed to moving" convention in which a frame is resampled onto the reference grid;
- :func:`coregister` returns ``moving -> fixed`` (a DWI point ``x`` lies at ``T @ x`` in the
  perfusion scan), the direction in which masks are carried by :func:`resample_mask`.

Methods: rigid registration by maximisation of Mattes mutual information (Mattes et al. 2003,
IEEE Trans Med Imaging 22:120) in a multi-resolution scheme (ANTs: Avants et al. 2011, NeuroImage
54:2033); template normalisation by affine then symmetric diffeomorphic (SyN) registration (Avants
et al. 2008, Med Image Anal 12:26) to the ICBM 2009a nonlinear symmetric template (Fonov et al.
2011, NeuroImage 54:313) shipped with nilearn. Framewise displacement after Power et al. 2012,
NeuroImage 59:2142.
"""

from __future__ import annotations

import os

# ITK reads its default thread count when the ANTs library loads. One thread unless the user (or a
# scheduler, through the environment) chose otherwise: multithreaded ITK sums the metric in a varying
# order, so two runs of the same data differ (up to 0.007 mm / 0.05 mL measured), which breaks
# byte-identical reruns and equal cf/SLURM results; sessions run in parallel processes instead.
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import contextlib  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from strokeperf.errors import DataError  # noqa: E402
from strokeperf.timecurves import MAD_TO_SD  # noqa: E402

#: RAS+ (nibabel) to LPS+ (ITK/ANTs) world coordinates; its own inverse.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Radius in mm of the sphere on which rotations are converted to displacements for framewise
#: displacement: the approximate distance from the centre of the head to the cortex (Power et al.
#: 2012, NeuroImage 59:2142).
FD_RADIUS_MM = 50.0
#: Frames whose mean through-plane displacement (along the slice axis, the third voxel axis) from
#: the reference exceeds this fraction of the slice thickness are flagged for exclusion. In-plane
#: motion is undone by in-plane interpolation, but beyond half a (thick) slice every corrected voxel
#: interpolates between slices holding different tissue, which rigid resampling cannot restore.
EXCLUDE_THROUGH_PLANE_SLICE_FRACTION = 0.5
#: A motion-corrected sample is censored (replaced by interpolation in time) where the resampling
#: error predicted for a static head exceeds this many noise SDs: below one SD the error is no larger
#: than the noise every method already tolerates; above it, it is systematic (the same sign over a
#: whole edge) and spatial denoising cannot average it out. CTP Tmax > 6 s volumes moved by less
#: than 1 % between 0.5, 1 and 2 SD on the phantom (tests/pipeline/test_motion_pipeline.py, seed 71).
CENSOR_NOISE_SD = 1.0
#: Voxels per chunk of the censoring median and interpolation: a dozen (chunk, T) work arrays, about
#: 50 MB for 45 frames.
CENSOR_CHUNK_VOXELS = 16384
#: Frames whose estimated head displacement stays below this everywhere in the head (mm) are left
#: as acquired: such an estimate is within the registration's own error (brain displacement error
#: up to 0.06 mm in benchmarks/registration.py; still phantom frames scatter by about 0.02 mm), and
#: resampling a frame by a hundredth of a voxel changes nothing but the bone and air edges, by tens
#: of HU.
NEGLIGIBLE_MOTION_MM = 0.1
#: Histogram bins of the Mattes mutual information (the ANTs default; Mattes et al. 2003 use 50).
MI_BINS = 32
#: Metric sample points (regular grid with random jitter over the metric mask, at full resolution)
#: of each frame's rigid registration in motion correction. Measured on a synthetic 120 x 144 x 30
#: CT series (benchmarks/registration.py): about 8000 points (2-3 % of the head) recover 2 mm / 2
#: degree motion within 0.15 mm mean brain displacement, as 25 % sampling does, 15 times faster.
MOTION_METRIC_POINTS = 8000
#: Metric sample points of inter-scan coregistration (different contrasts: more samples).
COREGISTER_METRIC_POINTS = 40000
#: Schedule of motion correction (shrink factors, Gaussian sigmas in mm, iterations per level):
#: motion between frames is small, so two levels from half resolution suffice (the shrink and
#: smoothing of the ANTs "BOLDRigid" schedule with 40x10 instead of 100x20 iterations, which rigid
#: motion of a head converges within). Measured on the synthetic whole-brain series of
#: benchmarks/registration.py (2 mm / 2 degrees): mean brain displacement error 0.013 mm (max 0.06)
#: at 0.52 s per frame, the same as with 100x20 iterations at 0.66 s. Half resolution alone (one
#: level) is faster still but leaves DSC frames 0.34 mm off (tests/unit/test_mr.py).
MOTION_SCHEDULE = ((2, 1), (1.0, 0.0), (40, 10))
#: Schedule of inter-scan coregistration: four levels from 1/8 resolution capture rotations up to
#: 10-15 degrees and shifts of centimetres (ANTs' default rigid schedule with fewer iterations).
COREGISTER_SCHEDULE = ((8, 4, 2, 1), (4.0, 2.0, 1.0, 0.0), (500, 250, 100, 20))
#: Schedule of the affine stage of template normalisation.
NORMALISE_AFFINE_SCHEDULE = ((4, 2, 1), (2.0, 1.0, 0.0), (500, 250, 50))
#: SyN iterations per level (shrink 4, 2, 1; the last level skipped): the ANTs "SyN" default
#: (40, 20, 0), adequate at the 2-mm template resolution.
SYN_ITERATIONS = (40, 20, 0)
#: SyN regularisation: Gaussian variance (in template voxels) of the update field (ANTs default 3)
#: and of the total deformation field (ANTs default 0, none). CT and T2*-weighted images have little
#: grey/white contrast, so fine deformations follow noise and the brain-mask outline; smoothing the
#: total field keeps the warp elastic. Measured on three phantom sessions whose true mapping to the
#: template is known (mean error over the brain): 2.5 -> 1.8 mm (CT), 1.7 -> 1.2 mm (DSC) with 2.
SYN_UPDATE_FIELD_VARIANCE = 3.0
SYN_TOTAL_FIELD_VARIANCE = 2.0
#: Random seed of the metric sampling, so that results are reproducible run to run.
ANTS_RANDOM_SEED = 20120101
#: Resolution of the ICBM152 2009a template used for normalisation, mm (nilearn ships 1 and 2 mm).
TEMPLATE_RESOLUTION_MM = 2
#: Fraction of a target voxel covered by a resampled mask for the voxel to belong to the mask.
MASK_COVERAGE_THRESHOLD = 0.5
#: Sub-samples per target voxel edge used to measure mask coverage are ceil(target / source voxel
#: size), at most this many (bounded work for very coarse targets).
MAX_SUBSAMPLES = 5


def _ants():
    import ants

    return ants


# --- coordinate conversion ------------------------------------------------------------------------


def to_ants(array, affine):
    """numpy array + RAS affine -> ``ants.ANTsImage`` (float32) at the same physical position.

    The LPS voxel-to-world matrix is ``RAS_TO_LPS @ affine``; its column norms are the spacing,
    the normalised columns the direction cosines and its last column the origin. Shears are not
    representable in ITK and raise :class:`DataError`.
    """
    ants = _ants()
    data = np.asarray(array, dtype=np.float32)
    if data.ndim != 3:
        raise DataError(f"to_ants needs a 3D image, got shape {data.shape}")
    lps = RAS_TO_LPS @ np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise DataError("the affine has a zero voxel size")
    direction = lps[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise DataError("the affine has shears; ITK images need orthogonal axes")
    return ants.from_numpy(np.ascontiguousarray(data), origin=tuple(lps[:3, 3]),
                           spacing=tuple(spacing), direction=direction)


def from_ants(image):
    """``ants.ANTsImage`` -> (numpy array, 4x4 RAS affine); inverse of :func:`to_ants`."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.direction, dtype=float) @ np.diag(image.spacing)
    lps[:3, 3] = image.origin
    return image.numpy(), RAS_TO_LPS @ lps


def transform_to_ras(transform) -> np.ndarray:
    """An ANTs linear transform (object or ``.mat`` path) -> 4x4 matrix on RAS points.

    ITK maps ``p -> A (p - c) + c + t`` in LPS, with ``A`` the 3x3 matrix, ``t`` the translation and
    ``c`` the centre (fixed parameters); in RAS this is ``RAS_TO_LPS @ M_lps @ RAS_TO_LPS``.
    """
    ants = _ants()
    if isinstance(transform, (str, os.PathLike)):
        transform = ants.read_transform(str(transform))
    params = np.asarray(transform.parameters, dtype=float)
    centre = np.asarray(transform.fixed_parameters, dtype=float)[:3]
    a = params[:9].reshape(3, 3)
    t = params[9:12]
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = t + centre - a @ centre
    return RAS_TO_LPS @ m @ RAS_TO_LPS


def transform_from_ras(matrix):
    """4x4 matrix on RAS points -> ``ants.ANTsTransform`` (AffineTransform, LPS, centre 0)."""
    ants = _ants()
    m = RAS_TO_LPS @ np.asarray(matrix, dtype=float) @ RAS_TO_LPS
    return ants.create_ants_transform(transform_type="AffineTransform", precision="double",
                                      dimension=3, matrix=m[:3, :3], translation=m[:3, 3],
                                      center=(0.0, 0.0, 0.0))


# --- rigid parameters -----------------------------------------------------------------------------


def rigid_matrix(params, centre_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 RAS matrix from ``(tx, ty, tz, rx, ry, rz)`` (mm, degrees).

    Rotation ``R = Rz @ Ry @ Rx`` (about the world x, then y, then z axes) about ``centre_mm``, then
    the translation: ``x -> R (x - c) + c + t``.
    """
    p = np.asarray(params, dtype=float)
    rx, ry, rz = np.deg2rad(p[3:6])
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    r = rot_z @ rot_y @ rot_x
    c = np.asarray(centre_mm, dtype=float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c + p[:3] - r @ c
    return m


def rigid_params(matrix, centre_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """``(tx, ty, tz, rx, ry, rz)`` in mm and degrees of a rigid 4x4 RAS matrix (inverse of
    :func:`rigid_matrix`): ``t`` is the displacement of ``centre_mm``."""
    m = np.asarray(matrix, dtype=float)
    r = m[:3, :3]
    ry = -np.arcsin(np.clip(r[2, 0], -1.0, 1.0))
    rx = np.arctan2(r[2, 1], r[2, 2])
    rz = np.arctan2(r[1, 0], r[0, 0])
    c = np.asarray(centre_mm, dtype=float)
    t = m[:3, :3] @ c + m[:3, 3] - c
    return np.concatenate([t, np.rad2deg([rx, ry, rz])])


def framewise_displacement(params, radius_mm: float = FD_RADIUS_MM) -> np.ndarray:
    """Framewise displacement (mm) of ``(T, 6)`` rigid parameters (mm, degrees).

    ``FD_k = sum |delta t| + radius * sum |delta r (rad)|`` between frames ``k-1`` and ``k``;
    ``FD_0 = 0`` (Power et al. 2012, NeuroImage 59:2142).
    """
    p = np.asarray(params, dtype=float)
    d = np.abs(np.diff(p, axis=0))
    fd = d[:, :3].sum(axis=1) + radius_mm * np.deg2rad(d[:, 3:]).sum(axis=1)
    return np.concatenate([[0.0], fd])


def mean_displacement(transform, points_mm) -> float:
    """Mean distance (mm) that ``transform`` (4x4 RAS) moves the ``(N, 3)`` points."""
    m = np.asarray(transform, dtype=float)
    p = np.asarray(points_mm, dtype=float)
    moved = p @ m[:3, :3].T + m[:3, 3]
    return float(np.mean(np.linalg.norm(moved - p, axis=1)))


def world_points(mask, affine, max_points: int = 20000) -> np.ndarray:
    """RAS mm coordinates ``(N, 3)`` of a mask's voxels, evenly thinned to at most ``max_points``."""
    ijk = np.argwhere(np.asarray(mask, dtype=bool))
    if ijk.shape[0] > max_points:
        ijk = ijk[:: int(np.ceil(ijk.shape[0] / max_points))]
    a = np.asarray(affine, dtype=float)
    return ijk @ a[:3, :3].T + a[:3, 3]


# --- ANTs registration core -----------------------------------------------------------------------


@contextlib.contextmanager
def _seeded():
    """Fix ANTs' metric sampling seed for the duration of a call, restoring the previous seed."""
    ants = _ants()
    old = ants.config._random_seed
    ants.config._random_seed = ANTS_RANDOM_SEED
    try:
        yield
    finally:
        ants.config._random_seed = old


def _sampling_rate(n_points: int, region) -> float:
    """Fraction of the metric region to sample for about ``n_points`` points (at most all)."""
    return float(min(1.0, n_points / max(int(np.count_nonzero(region)), 1)))


def _rigid(fixed, moving, schedule, *, fixed_mask=None, initial=None,
           sampling_rate: float = 1.0, kind: str = "Rigid") -> np.ndarray:
    """Register ``moving`` to ``fixed`` (ANTsImages); 4x4 RAS ``fixed -> moving`` matrix.

    ``initial`` is a 4x4 RAS ``fixed -> moving`` starting point (identity when None). The
    transform files ANTs writes go to a temporary directory removed on return.
    """
    ants = _ants()
    shrink, sigmas, iterations = schedule
    with tempfile.TemporaryDirectory(prefix="strokeperf_reg_") as tmp:
        init_path = str(Path(tmp) / "init.mat")
        ants.write_transform(transform_from_ras(np.eye(4) if initial is None else initial),
                             init_path)
        with _seeded():
            result = ants.registration(
                fixed, moving, type_of_transform=kind, initial_transform=[init_path],
                mask=fixed_mask, aff_metric="mattes", aff_sampling=MI_BINS,
                aff_random_sampling_rate=sampling_rate, aff_iterations=tuple(iterations),
                aff_shrink_factors=tuple(shrink), aff_smoothing_sigmas=tuple(sigmas),
                smoothing_in_mm=True, outprefix=str(Path(tmp) / "reg_"))
        # ANTs composes the initial transform into the output (it writes the total transform).
        return transform_to_ras(result["fwdtransforms"][-1])


def _frame_centre(shape, affine) -> np.ndarray:
    a = np.asarray(affine, dtype=float)
    return a[:3, :3] @ ((np.asarray(shape[:3], dtype=float) - 1) / 2) + a[:3, 3]


def resample_image(image, image_affine, transform, target_shape, target_affine, order: int = 1,
                   mode: str = "nearest", cval: float = 0.0) -> np.ndarray:
    """Resample ``image`` onto a target grid given the 4x4 RAS ``target -> image`` world transform.

    Each target voxel ``v`` is read at ``inv(image_affine) @ transform @ target_affine @ v`` by
    spline interpolation of ``order`` (scipy.ndimage.affine_transform, one vectorised pass).
    Returns float32.
    """
    vox = (np.linalg.inv(np.asarray(image_affine, dtype=float)) @ np.asarray(transform, dtype=float)
           @ np.asarray(target_affine, dtype=float))
    return ndimage.affine_transform(np.asarray(image, dtype=np.float32), vox[:3, :3], vox[:3, 3],
                                    output_shape=tuple(target_shape[:3]), order=order, mode=mode,
                                    cval=cval).astype(np.float32, copy=False)


# --- motion correction ----------------------------------------------------------------------------


class MotionCorrection(NamedTuple):
    """Result of :func:`motion_correct`.

    Attributes
    ----------
    corrected : (X, Y, Z, T) float32
        Every frame resampled onto the reference frame's position (linear interpolation).
    params : (T, 6) float
        Head displacement of each frame relative to the reference, ``(tx, ty, tz)`` mm of the field
        of view centre and ``(rx, ry, rz)`` degrees about it (:func:`rigid_params`).
    fd : (T,) float
        Framewise displacement, mm (Power et al. 2012).
    transforms : (T, 4, 4) float
        RAS ``reference -> frame`` matrices (identity for the reference frame and for frames
        displaced less than :data:`NEGLIGIBLE_MOTION_MM`, which are not resampled).
    displacement_mm : (T,) float
        Mean displacement of the head (mask voxels) from the reference position, mm.
    through_plane_mm : (T,) float
        Mean absolute displacement of the head along the slice axis (third voxel axis), mm.
    excluded : (T,) bool
        Frames whose through-plane displacement exceeds the limit (see :func:`motion_correct`).
    reference_index : int
        The frame all others were registered to.
    """

    corrected: np.ndarray
    params: np.ndarray
    fd: np.ndarray
    transforms: np.ndarray
    displacement_mm: np.ndarray
    through_plane_mm: np.ndarray
    excluded: np.ndarray
    reference_index: int


def reference_frame(series, mask=None) -> int:
    """Index of the frame most similar to the temporal median (mean absolute difference in ``mask``).

    The temporal median of a perfusion series is close to the unenhanced, unmoved head: contrast
    passes through a voxel in a few frames and motion usually affects a minority of frames; the
    closest real frame is a sharp, pre- or post-bolus image of the head in its typical position.
    """
    data = np.asarray(series)
    region = np.ones(data.shape[:3], bool) if mask is None else np.asarray(mask, dtype=bool)
    values = data[region].astype(np.float32)  # (N, T)
    median = np.median(values, axis=1, keepdims=True)
    return int(np.argmin(np.mean(np.abs(values - median), axis=0)))


def head_mask(image) -> np.ndarray:
    """Voxels of the head (not background air/noise), for weighting registration metrics.

    Two-class Otsu threshold (Otsu 1979, IEEE Trans Syst Man Cybern 9:62) of the image intensities,
    holes filled, dilated by one voxel so that the head's outline (the strongest registration
    feature) lies inside the mask.
    """
    from strokeperf.brainmask import otsu_threshold

    img = np.asarray(image, dtype=np.float32)
    fg = img > otsu_threshold(img[np.isfinite(img)])
    fg = ndimage.binary_fill_holes(fg)
    return ndimage.binary_dilation(fg, iterations=1)


def motion_correct(series, affine, reference="auto", mask=None,
                   exclude_through_plane_mm: float | None = None) -> MotionCorrection:
    """Rigid motion correction of a 4D perfusion series (CT in HU or DSC magnitude).

    Every frame is registered rigidly to a reference frame by maximising Mattes mutual information
    (Mattes et al. 2003) with ANTs (Avants et al. 2011), one level at half resolution
    (:data:`MOTION_SCHEDULE`), identity start. Mutual information does not assume equal
    intensities, so contrast arrival (vessels +400 HU on CT, a signal drop on DSC) does not pull the frames; the
    head outline and, on CT, the skull dominate the metric. The frames are then resampled onto the
    reference with one vectorised linear interpolation each; a frame whose estimated displacement
    stays below :data:`NEGLIGIBLE_MOTION_MM` everywhere in the head is kept as acquired (identity).
    Samples that resampling cannot restore are censored afterwards by
    :func:`censor_resampling_errors`.

    Parameters
    ----------
    series : (X, Y, Z, T) array
    affine : (4, 4) RAS voxel-to-world affine (mm)
    reference : "auto", int or (X, Y, Z) array
        "auto": the frame closest to the temporal median (:func:`reference_frame`); an int: that
        frame; an array: a reference image on the same grid (e.g. the median of baseline frames).
    mask : (X, Y, Z) bool, optional
        Where the metric is evaluated and displacement measured; default :func:`head_mask` of the
        reference.
    exclude_through_plane_mm : float, optional
        Frames whose mean head displacement along the slice axis exceeds this (mm) are flagged in
        ``excluded``; default :data:`EXCLUDE_THROUGH_PLANE_SLICE_FRACTION` x the slice thickness.

    Returns
    -------
    MotionCorrection

    Examples
    --------
    >>> mc = motion_correct(series, affine)                     # doctest: +SKIP
    >>> keep = ~mc.excluded; times = frame_times[keep]          # doctest: +SKIP
    """
    data = np.asarray(series)
    if data.ndim != 4:
        raise DataError(f"motion correction needs a 4D series, got shape {data.shape}")
    affine = np.asarray(affine, dtype=float)
    n = data.shape[3]
    ref_index = -1
    if isinstance(reference, str):
        if reference != "auto":
            raise ValueError(f"reference must be 'auto', a frame index or an image, not {reference!r}")
        ref_index = reference_frame(data, mask)
        ref_image = data[..., ref_index]
    elif np.ndim(reference) == 0:
        ref_index = int(reference)
        if not 0 <= ref_index < n:
            raise ValueError(f"reference frame {ref_index} outside 0..{n - 1}")
        ref_image = data[..., ref_index]
    else:
        ref_image = np.asarray(reference)
        if ref_image.shape != data.shape[:3]:
            raise DataError(f"reference image {ref_image.shape} does not match the series "
                            f"{data.shape[:3]}")
    region = head_mask(ref_image) if mask is None else np.asarray(mask, dtype=bool)
    fixed = to_ants(ref_image, affine)
    fixed_mask = to_ants(region.astype(np.float32), affine)
    rate = _sampling_rate(MOTION_METRIC_POINTS, region)
    slice_axis = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    limit = (EXCLUDE_THROUGH_PLANE_SLICE_FRACTION * float(np.linalg.norm(affine[:3, 2]))
             if exclude_through_plane_mm is None else float(exclude_through_plane_mm))
    points = world_points(region, affine)
    centre = _frame_centre(data.shape, affine)

    corrected = np.empty(data.shape, dtype=np.float32)
    transforms = np.tile(np.eye(4), (n, 1, 1))
    for k in range(n):
        if k == ref_index:
            corrected[..., k] = data[..., k]
            continue
        moving = to_ants(data[..., k], affine)
        # Identity start for every frame: an error in one frame cannot propagate to the next.
        m = _rigid(fixed, moving, MOTION_SCHEDULE, fixed_mask=fixed_mask, sampling_rate=rate)
        del moving
        moved = points @ m[:3, :3].T + m[:3, 3] - points
        # No head voxel (an all-air image): nothing to measure; later stages report the problem.
        if points.size == 0 or np.max(np.linalg.norm(moved, axis=1)) < NEGLIGIBLE_MOTION_MM:
            corrected[..., k] = data[..., k]
            continue
        transforms[k] = m
        corrected[..., k] = resample_image(data[..., k], affine, m, data.shape, affine)
    params = np.stack([rigid_params(m, centre) for m in transforms])
    displacement = np.array([mean_displacement(m, points) for m in transforms])
    through = np.array([np.mean(np.abs((points @ m[:3, :3].T + m[:3, 3] - points) @ slice_axis))
                        for m in transforms])
    return MotionCorrection(
        corrected=corrected, params=params, fd=framewise_displacement(params),
        transforms=transforms, displacement_mm=displacement, through_plane_mm=through,
        excluded=through > limit, reference_index=ref_index,
    )


# --- censoring of resampling errors ---------------------------------------------------------------


def robust_noise_sd(series, mask=None, max_voxels: int = 100000) -> float:
    """Image noise SD of a 4D series from consecutive-frame differences in ``mask``.

    ``1.4826 x median |x_k - x_(k-1)| / sqrt(2)``: the median absolute deviation of the frame
    differences (Rousseeuw & Croux 1993, J Am Stat Assoc 88:1273) is insensitive to the minority of
    samples that change for other reasons (contrast arrival, motion at edges). Evenly spaced voxels
    of the mask, at most ``max_voxels``, bound the memory.
    """
    data = np.asarray(series)
    region = np.ones(data.shape[:3], bool) if mask is None else np.asarray(mask, dtype=bool)
    if data.shape[3] < 2 or not region.any():
        return 0.0
    where = np.flatnonzero(region)
    where = where[:: int(np.ceil(where.size / max_voxels))]
    flat = data.reshape(-1, data.shape[3])
    values = flat[where].astype(np.float32)
    diffs = np.abs(np.diff(values, axis=1))
    return float(MAD_TO_SD * np.median(diffs) / np.sqrt(2.0))


def resampling_error(static_image, affine, transform) -> np.ndarray:
    """Predicted error (image units) that motion correction leaves in a static head, one frame.

    The acquisition of a head displaced by ``transform`` (4x4 RAS ``reference -> frame``) is
    simulated by resampling ``static_image`` (a motion-free, low-noise image of the head on the
    reference grid) to the displaced position, and motion correction by resampling it back, both by
    linear interpolation as in :func:`motion_correct`. Where the result differs from the static
    image, partial volumes of neighbouring tissues were exchanged: next to bone on CT (1000-2000
    HU against 20-40 HU of contrast enhancement) and at CSF, scalp and air boundaries on MR. This is
    the error that no rigid resampling removes (Friston et al. 1996, Magn Reson Med 35:346:
    interpolation and spin history leave motion-related signal after realignment). The simulation uses linear
    interpolation for the acquisition, a proxy for the scanner's partial-volume sampling: the error
    is used to locate contaminated voxels, not to subtract from the data.
    """
    static = np.asarray(static_image, dtype=np.float32)
    m = np.asarray(transform, dtype=float)
    acquired = resample_image(static, affine, np.linalg.inv(m), static.shape, affine)
    return resample_image(acquired, affine, m, static.shape, affine) - static


def interpolate_censored(values, censored, times) -> np.ndarray:
    """Replace censored samples of ``(N, T)`` curves by linear interpolation in time.

    Each censored sample takes the value on the line between the voxel's nearest uncensored samples
    before and after it (the nearest one at either end of the scan): censoring and interpolation of
    motion-contaminated samples (Power et al. 2014, NeuroImage 84:320). Curves with no uncensored
    sample are returned unchanged. Vectorised over voxels.
    """
    y = np.array(values, dtype=np.float32, copy=True)
    bad = np.asarray(censored, dtype=bool)
    t = np.asarray(times, dtype=float)
    n, nt = y.shape
    if not bad.any():
        return y
    idx = np.broadcast_to(np.arange(nt, dtype=np.int32), (n, nt))
    # Index of the last good sample at or before k (-1: none) and of the first at or after k (nt).
    prev = np.maximum.accumulate(np.where(bad, -1, idx), axis=1)
    nxt = np.minimum.accumulate(np.where(bad, nt, idx)[:, ::-1], axis=1)[:, ::-1]
    has_prev, has_next = prev >= 0, nxt < nt
    p, q = np.clip(prev, 0, nt - 1), np.clip(nxt, 0, nt - 1)
    rows = np.arange(n)[:, None]
    yp, yq = y[rows, p], y[rows, q]
    tp, tq = t[p], t[q]
    span = np.where(tq > tp, tq - tp, 1.0)
    w = np.clip((t[None, :] - tp) / span, 0.0, 1.0).astype(np.float32)
    filled = np.where(has_prev & has_next, yp + w * (yq - yp), np.where(has_prev, yp, yq))
    fix = bad & (has_prev | has_next)
    y[fix] = filled[fix]
    return y


class Censoring(NamedTuple):
    """Result of :func:`censor_resampling_errors`.

    Attributes
    ----------
    counts : (X, Y, Z) int16
        Censored (replaced) frames of each voxel.
    per_frame : (T,) int
        Censored voxels of each frame.
    noise_sd : float
        Image noise SD of the series (:func:`robust_noise_sd`), image units.
    threshold : float
        Predicted error above which a sample was censored, image units.
    """

    counts: np.ndarray
    per_frame: np.ndarray
    noise_sd: float
    threshold: float


def censor_resampling_errors(corrected, transforms, affine, frame_times,
                             noise_sd_limit: float = CENSOR_NOISE_SD,
                             chunk_voxels: int = CENSOR_CHUNK_VOXELS) -> Censoring:
    """Censor, voxel by voxel, the motion-corrected samples that rigid resampling cannot restore.

    For every frame the error left in a static head (:func:`resampling_error` of the temporal median
    of ``corrected``, an unenhanced, low-noise image of the head) is predicted from the frame's
    transform; samples whose predicted error exceeds ``noise_sd_limit`` times the noise SD
    (:func:`robust_noise_sd` in the head) are replaced by linear interpolation in time between the
    voxel's nearest clean samples (:func:`interpolate_censored`; Power et al. 2014, NeuroImage
    84:320). Deep brain voxels of a moved frame keep their values; only the shell next to the skull,
    scalp and CSF, where a millimetre of motion exchanges partial volumes of tissues hundreds to a
    thousand times brighter than the contrast enhancement, is interpolated from unmoved frames.

    ``corrected`` ``(X, Y, Z, T)`` float32 is modified in place; ``transforms`` ``(T, 4, 4)`` are
    the RAS ``reference -> frame`` matrices of :func:`motion_correct`; ``frame_times`` in s. Memory:
    the median and the per-voxel interpolation run on chunks of ``chunk_voxels`` voxels; the
    censoring mask is ``(X, Y, Z, T)`` bool.
    """
    data = corrected
    shape, n = data.shape[:3], data.shape[3]
    flat = data.reshape(-1, n)
    if not np.shares_memory(flat, data):
        raise ValueError("censor_resampling_errors needs a contiguous series to modify in place")
    static = np.empty(flat.shape[0], dtype=np.float32)
    for start in range(0, flat.shape[0], chunk_voxels):
        static[start:start + chunk_voxels] = np.median(flat[start:start + chunk_voxels], axis=1)
    static = static.reshape(shape)
    sd = robust_noise_sd(data, head_mask(static))
    threshold = noise_sd_limit * sd
    censored = np.zeros(data.shape, dtype=bool)
    for k in range(n):
        # Noise-free (or constant) data give sd 0: no noise level to compare the error with, and
        # every interpolated voxel would be censored; such data are left as resampled.
        if sd <= 0 or np.allclose(transforms[k], np.eye(4)):
            continue
        censored[..., k] = np.abs(resampling_error(static, affine, transforms[k])) > threshold
    flags = censored.reshape(-1, n)
    rows = np.flatnonzero(flags.any(axis=1))
    for start in range(0, rows.size, chunk_voxels):
        idx = rows[start:start + chunk_voxels]
        flat[idx] = interpolate_censored(flat[idx], flags[idx], frame_times)
    return Censoring(counts=censored.sum(axis=3).astype(np.int16),
                     per_frame=flags.sum(axis=0), noise_sd=sd, threshold=threshold)


# --- coregistration -------------------------------------------------------------------------------


def _centroid(mask, affine) -> np.ndarray:
    ijk = np.argwhere(np.asarray(mask, dtype=bool)).mean(axis=0)
    a = np.asarray(affine, dtype=float)
    return a[:3, :3] @ ijk + a[:3, 3]


def coregister(moving_image, moving_affine, fixed_image, fixed_affine, moving_mask=None,
               fixed_mask=None):
    """Rigid inter-scan registration by mutual information (e.g. DWI b0 or ADC -> perfusion).

    Mattes mutual information (Mattes et al. 2003) handles the different contrasts of DWI, ADC, CT
    and DSC. The registration starts from the translation that aligns the centroids of the two
    heads (or of the given brain masks), which removes differences of field of view and table
    position, then runs four resolution levels (:data:`COREGISTER_SCHEDULE`). The metric is
    evaluated in the fixed image's head (``fixed_mask`` dilated by 5 mm when given).

    Parameters
    ----------
    moving_image, fixed_image : (X, Y, Z) arrays
    moving_affine, fixed_affine : (4, 4) RAS affines
    moving_mask, fixed_mask : (X, Y, Z) bool, optional
        Brain masks; when given they define the starting centroids and the metric region.

    Returns
    -------
    transform : (4, 4) float
        RAS ``moving -> fixed`` world transform: moving point ``x`` lies at ``transform @ x``.
    resampled : (X', Y', Z') float32
        The moving image on the fixed grid (linear interpolation).
    """
    moving_image = np.asarray(moving_image, dtype=np.float32)
    fixed_image = np.asarray(fixed_image, dtype=np.float32)
    m_region = head_mask(moving_image) if moving_mask is None else np.asarray(moving_mask, bool)
    f_region = head_mask(fixed_image) if fixed_mask is None else np.asarray(fixed_mask, bool)
    if not m_region.any() or not f_region.any():
        raise DataError("coregistration: an image has no foreground")
    shift = _centroid(m_region, moving_affine) - _centroid(f_region, fixed_affine)
    initial = np.eye(4)
    initial[:3, 3] = shift  # fixed -> moving
    metric_region = f_region
    if fixed_mask is not None:
        from strokeperf.brainmask import ball

        vs = np.linalg.norm(np.asarray(fixed_affine, float)[:3, :3], axis=0)
        metric_region = ndimage.binary_dilation(f_region, structure=ball(5.0, vs))
    fixed_to_moving = _rigid(to_ants(fixed_image, fixed_affine),
                             to_ants(moving_image, moving_affine), COREGISTER_SCHEDULE,
                             fixed_mask=to_ants(metric_region.astype(np.float32), fixed_affine),
                             initial=initial,
                             sampling_rate=_sampling_rate(COREGISTER_METRIC_POINTS, metric_region))
    resampled = resample_image(moving_image, moving_affine, fixed_to_moving, fixed_image.shape,
                               fixed_affine, order=1, mode="constant", cval=0.0)
    return np.linalg.inv(fixed_to_moving), resampled


def resample_fraction(mask, mask_affine, transform, target_shape, target_affine) -> np.ndarray:
    """Fraction (0-1, float32) of each target voxel covered by ``mask`` after ``transform``.

    ``transform`` is the RAS ``mask space -> target space`` matrix (as returned by
    :func:`coregister`). Each target voxel is sub-sampled on an ``n x n x n`` grid (``n`` per axis =
    ceil(target / source voxel edge), at most :data:`MAX_SUBSAMPLES`) and the mask is read at the
    sub-sample points by nearest neighbour; the fraction is the mean, so volumes are preserved
    across grids of different voxel size (a box-filter partial-volume estimate).
    """
    src = np.asarray(mask, dtype=bool)
    a_src = np.asarray(mask_affine, dtype=float)
    a_tgt = np.asarray(target_affine, dtype=float)
    vs_src = np.linalg.norm(a_src[:3, :3], axis=0)
    vs_tgt = np.linalg.norm(a_tgt[:3, :3], axis=0)
    n_sub = np.clip(np.ceil(vs_tgt / vs_src.min() - 1e-6), 1, MAX_SUBSAMPLES).astype(int)
    vox = np.linalg.inv(a_src) @ np.linalg.inv(np.asarray(transform, dtype=float)) @ a_tgt
    shape = tuple(int(s) for s in target_shape[:3])
    total = np.zeros(shape, dtype=np.float32)
    offsets = [(np.arange(k) + 0.5) / k - 0.5 for k in n_sub]
    src_f = src.astype(np.float32)
    for dx in offsets[0]:
        for dy in offsets[1]:
            for dz in offsets[2]:
                off = vox[:3, :3] @ np.array([dx, dy, dz]) + vox[:3, 3]
                total += ndimage.affine_transform(src_f, vox[:3, :3], off, output_shape=shape,
                                                  order=0, mode="constant", cval=0.0)
    return total / float(np.prod(n_sub))


def resample_mask(mask, mask_affine, transform, target_shape, target_affine,
                  threshold: float = MASK_COVERAGE_THRESHOLD) -> np.ndarray:
    """Carry a mask (e.g. the DWI core) into another grid: coverage fraction >= ``threshold``.

    See :func:`resample_fraction`; ``transform`` is RAS ``mask space -> target space``.
    """
    return resample_fraction(mask, mask_affine, transform, target_shape, target_affine) >= threshold


# --- template normalisation -----------------------------------------------------------------------


@dataclass
class TemplateTransforms:
    """Transforms between a subject image and the ICBM152 2009a template (ANTs files).

    ``forward`` (subject -> template, for :func:`ants.apply_transforms` with the template as fixed
    image) is ``[warp_file, affine_file]``; ``inverse`` is ``[affine_file, inverse_warp_file]`` with
    ``inverse_invert = [True, False]``. The files live in ``directory`` (a temporary directory
    unless one was given): a pipeline task copies them into its outputs.
    """

    affine_file: str
    warp_file: str
    inverse_warp_file: str
    directory: str
    template_shape: tuple
    template_affine: np.ndarray

    @property
    def forward(self) -> list[str]:
        return [self.warp_file, self.affine_file]

    @property
    def inverse(self) -> list[str]:
        return [self.affine_file, self.inverse_warp_file]

    inverse_invert = (True, False)


def load_template(resolution_mm: int = TEMPLATE_RESOLUTION_MM):
    """ICBM152 2009a T1 template and brain mask shipped with nilearn: (t1, mask, affine)."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=resolution_mm)
    brain = datasets.load_mni152_brain_mask(resolution=resolution_mm)
    return (np.asarray(t1.get_fdata(), dtype=np.float32), np.asarray(brain.get_fdata()) > 0.5,
            np.asarray(t1.affine, dtype=float))


def normalise_to_template(image, affine, brain_mask=None, out_dir=None):
    """Affine + SyN registration of a subject image to the ICBM152 2009a template (2 mm).

    The image (CT baseline, DSC S0, DWI b0; masked to ``brain_mask`` when given, which removes skull
    and scalp that the skull-stripped template lacks) is registered to nilearn's T1 template by
    Mattes mutual information, first affinely (:data:`NORMALISE_AFFINE_SCHEDULE`, starting from the
    centroid alignment of the brains) then with symmetric normalisation (SyN; Avants et al. 2008,
    Med Image Anal 12:26; :data:`SYN_ITERATIONS`). Mutual information copes with the different
    contrast of CT and T2*-weighted images against T1.

    Parameters
    ----------
    image : (X, Y, Z) array
    affine : (4, 4) RAS affine
    brain_mask : (X, Y, Z) bool, optional
    out_dir : path, optional
        Where ANTs writes the transform files; a new temporary directory when None.

    Returns
    -------
    transforms : TemplateTransforms
    warped : (99, 117, 95) float32
        The image in template space.
    """
    ants = _ants()
    t1, t_mask, t_affine = load_template()
    data = np.asarray(image, dtype=np.float32)
    if brain_mask is not None:
        region = np.asarray(brain_mask, dtype=bool)
        data = np.where(region, data, 0.0).astype(np.float32)
    else:
        region = head_mask(data)
    if not region.any():
        raise DataError("normalisation: the image has no foreground")
    directory = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="strokeperf_norm_"))
    directory.mkdir(parents=True, exist_ok=True)
    fixed = to_ants(t1, t_affine)
    moving = to_ants(data, affine)
    initial = np.eye(4)
    initial[:3, 3] = _centroid(region, affine) - _centroid(t_mask, t_affine)
    shrink, sigmas, iterations = NORMALISE_AFFINE_SCHEDULE
    init_path = str(directory / "initial.mat")
    ants.write_transform(transform_from_ras(initial), init_path)
    fixed_mask = to_ants(ndimage.binary_dilation(t_mask, iterations=2).astype(np.float32), t_affine)
    with _seeded():
        result = ants.registration(
            fixed, moving, type_of_transform="SyN", initial_transform=[init_path],
            mask=fixed_mask, aff_metric="mattes", aff_sampling=MI_BINS,
            aff_random_sampling_rate=_sampling_rate(COREGISTER_METRIC_POINTS, t_mask),
            aff_iterations=iterations,
            aff_shrink_factors=shrink, aff_smoothing_sigmas=sigmas, smoothing_in_mm=True,
            syn_metric="mattes", syn_sampling=MI_BINS, reg_iterations=SYN_ITERATIONS,
            flow_sigma=SYN_UPDATE_FIELD_VARIANCE, total_sigma=SYN_TOTAL_FIELD_VARIANCE,
            outprefix=str(directory / "to_template_"))
    fwd, inv = result["fwdtransforms"], result["invtransforms"]
    warp = next(p for p in fwd if p.endswith("Warp.nii.gz"))
    aff = next(p for p in fwd if p.endswith(".mat"))
    inv_warp = next(p for p in inv if p.endswith("InverseWarp.nii.gz"))
    transforms = TemplateTransforms(affine_file=aff, warp_file=warp, inverse_warp_file=inv_warp,
                                    directory=str(directory), template_shape=t1.shape,
                                    template_affine=t_affine)
    warped, _ = from_ants(result["warpedmovout"])
    return transforms, warped.astype(np.float32)


def warp_to_template(image, affine, transforms: TemplateTransforms,
                     interpolation: str = "linear") -> np.ndarray:
    """Bring a subject-space image into template space with :func:`normalise_to_template`'s
    transforms (ANTs interpolators: "linear", "nearestNeighbor", "bSpline", ...)."""
    ants = _ants()
    fixed = to_ants(np.zeros(transforms.template_shape, np.float32), transforms.template_affine)
    out = ants.apply_transforms(fixed, to_ants(image, affine), transforms.forward,
                                interpolator=interpolation)
    return from_ants(out)[0].astype(np.float32)


def warp_from_template(image, transforms: TemplateTransforms, target_shape, target_affine,
                       interpolation: str = "linear") -> np.ndarray:
    """Bring a template-space image (e.g. an atlas) into the subject grid (inverse transforms)."""
    ants = _ants()
    fixed = to_ants(np.zeros(tuple(target_shape[:3]), np.float32), target_affine)
    out = ants.apply_transforms(fixed, to_ants(image, transforms.template_affine),
                                transforms.inverse, interpolator=interpolation,
                                whichtoinvert=list(transforms.inverse_invert))
    return from_ants(out)[0].astype(np.float32)


def warp_mask_to_template(mask, affine, transforms: TemplateTransforms,
                          threshold: float = MASK_COVERAGE_THRESHOLD) -> np.ndarray:
    """A subject-space mask (e.g. core or Tmax > 6 s) in template space: linear interpolation of the
    0/1 mask gives a coverage fraction, kept where it reaches ``threshold``."""
    fraction = warp_to_template(np.asarray(mask, dtype=np.float32), affine, transforms, "linear")
    return fraction >= threshold
