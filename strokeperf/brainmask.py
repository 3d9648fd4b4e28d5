"""Brain masks without external skull-stripping tools.

CT: the brain is the soft tissue enclosed by the skull. Bone is bright (> 150 HU), brain and CSF lie
between about -20 and 100 HU. Soft tissue outside the skull (scalp, muscle) has the same density, so it
is separated from the brain by topology: after a small erosion, which cuts the thin soft-tissue
bridges through the skull-base foramina, the largest connected soft-tissue region inside the head is
the brain, which is then grown back within the soft-tissue mask (morphological reconstruction; the
same principle as the threshold-and-connectivity CT skull stripping of Muschelli et al. 2015,
NeuroImage 114:379). Thresholds are physical HU values, independent of the scanner.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from strokeperf.errors import DataError

#: HU above which a voxel is bone (cortical bone > 700 HU, trabecular > 150 HU; Muschelli 2015).
BONE_HU = 150.0
#: Soft-tissue window of brain and CSF on an unenhanced CT, HU.
SOFT_TISSUE_HU = (-20.0, 100.0)
#: HU below which a brain voxel is mostly CSF: midway between CSF (~5-10 HU) and white matter
#: (~25-30 HU), so a voxel is called CSF when CSF fills more than about half of it.
CSF_HU = 18.0
#: Erosion radius in mm that cuts soft-tissue bridges through skull foramina before the brain is
#: picked as the largest component.
BRIDGE_CUT_MM = 3.0
#: Smallest plausible brain volume, mL: a smaller mask means the input is not a head CT.
MIN_BRAIN_ML = 50.0


def _ball(radius_mm: float, voxel_size_mm) -> np.ndarray:
    """Ellipsoidal structuring element of ``radius_mm`` in a grid of anisotropic voxels."""
    vs = np.asarray(voxel_size_mm, dtype=float)[:3]
    half = np.maximum(np.floor(radius_mm / vs), 0).astype(int)
    grids = np.meshgrid(*[np.arange(-h, h + 1) * v for h, v in zip(half, vs)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-9


def ct_brain_mask(reference_hu: np.ndarray, voxel_size_mm) -> np.ndarray:
    """Brain mask (brain parenchyma and CSF, no skull or scalp) of an unenhanced CT image.

    Parameters
    ----------
    reference_hu : (X, Y, Z) array
        A CT image in HU without contrast, e.g. the temporal median of a CTP series (arteries are
        enhanced in only a few frames, so the median stays near baseline).
    voxel_size_mm : sequence of 3 floats

    Returns
    -------
    (X, Y, Z) bool array

    Raises
    ------
    DataError
        If no brain-sized soft-tissue region enclosed by bone is found.
    """
    hu = np.asarray(reference_hu, dtype=np.float32)
    bone = hu > BONE_HU
    soft = (hu > SOFT_TISSUE_HU[0]) & (hu < SOFT_TISSUE_HU[1]) & ~bone
    # Keep soft tissue away from the bone surface: voxels touching bone are partial-volumed skull.
    soft &= ~ndimage.binary_dilation(bone, structure=_ball(1.0 * max(voxel_size_mm[:2]), voxel_size_mm))
    seeds = ndimage.binary_erosion(soft, structure=_ball(BRIDGE_CUT_MM, voxel_size_mm))
    labels, n = ndimage.label(seeds)
    if n == 0:
        raise DataError("empty brain mask: no soft tissue (-20 to 100 HU) found inside the skull")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    core = labels == int(np.argmax(sizes))
    # Grow the largest component back inside the soft tissue (geodesic reconstruction), then close
    # holes left by enhancing vessels and calcifications.
    brain = ndimage.binary_propagation(core, mask=soft)
    brain = ndimage.binary_closing(brain, structure=_ball(2.0 * max(voxel_size_mm[:2]), voxel_size_mm))
    brain = _fill_holes_per_slice(brain) & ~bone
    volume_ml = brain.sum() * float(np.prod(voxel_size_mm[:3])) / 1000.0
    if volume_ml < MIN_BRAIN_ML:
        raise DataError(
            f"empty brain mask: the largest intracranial soft-tissue region is {volume_ml:.0f} mL "
            f"(< {MIN_BRAIN_ML:.0f} mL); is this a head CT in HU?")
    return brain


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill holes slice by slice (axial), where thick slices make 3D filling too permissive."""
    out = np.empty_like(mask)
    for z in range(mask.shape[2]):
        out[..., z] = ndimage.binary_fill_holes(mask[..., z])
    return out


def ct_csf_mask(baseline_hu: np.ndarray, brain_mask: np.ndarray, voxel_size_mm,
                smoothing_mm: float = 2.0) -> np.ndarray:
    """CSF inside the brain mask: unenhanced HU below :data:`CSF_HU` after light in-plane smoothing.

    ``baseline_hu`` is the mean of the pre-contrast frames; smoothing by a Gaussian of FWHM
    ``smoothing_mm`` (within the brain) keeps image noise from scattering CSF voxels through tissue.
    """
    brain = np.asarray(brain_mask, dtype=bool)
    sigma = [smoothing_mm / 2.3548 / v for v in voxel_size_mm[:2]] + [0.0]
    weights = ndimage.gaussian_filter(brain.astype(np.float32), sigma)
    smooth = ndimage.gaussian_filter(np.where(brain, baseline_hu, 0).astype(np.float32), sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = np.where(weights > 1e-3, smooth / weights, 0)
    return brain & (smooth < CSF_HU)
