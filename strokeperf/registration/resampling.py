"""Images and masks between grids: resampling under a world transform, the partial-volume coverage of
a mask carried into another grid, and the head region and world points that registration metrics and
displacement measures use.

Array in, array out: images are numpy arrays ``(X, Y, Z)`` with a 4x4 voxel-to-world affine in
nibabel's RAS+ convention (mm). World transforms are 4x4 matrices acting on RAS mm points; each
function states its direction.
"""

from __future__ import annotations

import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage

from strokeperf.brainmask import otsu_threshold

#: Fraction of a target voxel covered by a resampled mask for the voxel to belong to the mask.
MASK_COVERAGE_THRESHOLD = 0.5
#: Sub-samples per target voxel edge used to measure mask coverage are ceil(target / source voxel
#: size), at most this many (bounded work for very coarse targets).
MAX_SUBSAMPLES = 5


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


def resample_fraction(mask, mask_affine, transform, target_shape, target_affine) -> np.ndarray:
    """Fraction (0-1, float32) of each target voxel covered by ``mask`` after ``transform``.

    ``transform`` is the RAS ``mask space -> target space`` matrix (as returned by
    :func:`strokeperf.registration.coregistration.coregister`). Each target voxel is sub-sampled on
    an ``n x n x n`` grid (``n`` per axis = ceil(target / source voxel edge), at most
    :data:`MAX_SUBSAMPLES`) and the mask is read at the sub-sample points by nearest neighbour; the fraction is the mean, so volumes are preserved
    across grids of different voxel size (a box-filter partial-volume estimate).
    """
    src = np.asarray(mask, dtype=bool)
    a_src = np.asarray(mask_affine, dtype=float)
    a_tgt = np.asarray(target_affine, dtype=float)
    vs_src = voxel_sizes(a_src)
    vs_tgt = voxel_sizes(a_tgt)
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


def head_mask(image) -> np.ndarray:
    """Voxels of the head (not background air/noise), for weighting registration metrics.

    Two-class Otsu threshold (Otsu 1979, IEEE Trans Syst Man Cybern 9:62) of the image intensities,
    holes filled, dilated by one voxel so that the head's outline (the strongest registration
    feature) lies inside the mask.
    """
    img = np.asarray(image, dtype=np.float32)
    fg = img > otsu_threshold(img[np.isfinite(img)])
    fg = ndimage.binary_fill_holes(fg)
    return ndimage.binary_dilation(fg, iterations=1)


def centroid(mask, affine) -> np.ndarray:
    """RAS mm coordinates (3,) of the centre of a mask's voxels."""
    ijk = np.argwhere(np.asarray(mask, dtype=bool)).mean(axis=0)
    a = np.asarray(affine, dtype=float)
    return a[:3, :3] @ ijk + a[:3, 3]


def world_points(mask, affine, max_points: int = 20000) -> np.ndarray:
    """RAS mm coordinates ``(N, 3)`` of a mask's voxels, evenly thinned to at most ``max_points``."""
    ijk = np.argwhere(np.asarray(mask, dtype=bool))
    if ijk.shape[0] > max_points:
        ijk = ijk[:: int(np.ceil(ijk.shape[0] / max_points))]
    a = np.asarray(affine, dtype=float)
    return ijk @ a[:3, :3].T + a[:3, 3]
