"""Rigid motion correction of a perfusion series: per-frame registration, rigid parameters,
framewise displacement, and the censoring of the samples that resampling cannot restore.

Images are numpy arrays ``(X, Y, Z, T)`` with a 4x4 RAS voxel-to-world affine (mm). Per frame,
:func:`motion_correct` returns the head displacement ``reference -> frame`` (a point of the head at
``x`` in the reference frame is at ``T @ x`` in that frame), the ITK "fixed to moving" convention in
which a frame is resampled onto the reference grid.

Methods: rigid registration by maximisation of Mattes mutual information (Mattes et al. 2003, IEEE
Trans Med Imaging 22:120) in a multi-resolution scheme (ANTs: Avants et al. 2011, NeuroImage
54:2033; :mod:`strokeperf.registration.ants`); framewise displacement after Power et al. 2012,
NeuroImage 59:2142; censoring and interpolation of motion-contaminated samples after Power et al.
2014, NeuroImage 84:320.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from strokeperf.errors import DataError
from strokeperf.registration.ants import metric_sampling_rate, register_rigid, to_ants
from strokeperf.registration.resampling import head_mask, resample_image, world_points
from strokeperf.timecurves import MAD_TO_SD

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
#: Metric sample points (regular grid with random jitter over the metric mask, at full resolution)
#: of each frame's rigid registration in motion correction. Measured on a synthetic 120 x 144 x 30
#: CT series (benchmarks/registration.py): about 8000 points (2-3 % of the head) recover 2 mm / 2
#: degree motion within 0.15 mm mean brain displacement, as 25 % sampling does, 15 times faster.
MOTION_METRIC_POINTS = 8000
#: Schedule of motion correction (shrink factors, Gaussian sigmas in mm, iterations per level):
#: motion between frames is small, so two levels from half resolution suffice (the shrink and
#: smoothing of the ANTs "BOLDRigid" schedule with 40x10 instead of 100x20 iterations, which rigid
#: motion of a head converges within). Measured on the synthetic whole-brain series of
#: benchmarks/registration.py (2 mm / 2 degrees): mean brain displacement error 0.013 mm (max 0.06)
#: at 0.52 s per frame, the same as with 100x20 iterations at 0.66 s. Half resolution alone (one
#: level) is faster still but leaves DSC frames 0.34 mm off (tests/unit/test_mr.py).
MOTION_SCHEDULE = ((2, 1), (1.0, 0.0), (40, 10))


def rigid_params(matrix, centre_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """``(tx, ty, tz, rx, ry, rz)`` in mm and degrees of a rigid 4x4 RAS matrix
    ``x -> R (x - c) + c + t`` with ``R = Rz @ Ry @ Rx`` (rotations about the world x, then y, then
    z axes) about ``c = centre_mm``: ``t`` is the displacement of ``centre_mm``."""
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


def _frame_centre(shape, affine) -> np.ndarray:
    a = np.asarray(affine, dtype=float)
    return a[:3, :3] @ ((np.asarray(shape[:3], dtype=float) - 1) / 2) + a[:3, 3]


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
        Where the metric is evaluated and displacement measured; default
        :func:`strokeperf.registration.resampling.head_mask` of the reference.
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
    rate = metric_sampling_rate(MOTION_METRIC_POINTS, region)
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
        m = register_rigid(fixed, moving, MOTION_SCHEDULE, fixed_mask=fixed_mask,
                           sampling_rate=rate)
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
