"""Brain masks without external skull-stripping tools.

CT: the brain is the soft tissue enclosed by the skull. Bone is bright (> 150 HU), brain and CSF lie
between about -20 and 100 HU. Soft tissue outside the skull (scalp, muscle) has the same density, so it
is separated from the brain by topology: after a small erosion, which cuts the thin soft-tissue
bridges through the skull-base foramina, the largest connected soft-tissue region inside the head is
the brain, which is then grown back within the soft-tissue mask (morphological reconstruction; the
same principle as the threshold-and-connectivity CT skull stripping of Muschelli et al. 2015,
NeuroImage 114:379). Thresholds are physical HU values, independent of the scanner.

MR (T2*-weighted EPI: the DSC baseline S0, the DWI b = 0 image): intensities have no physical scale,
so the head is separated from the background by a two-class Otsu threshold (Otsu 1979, IEEE Trans
Syst Man Cybern 9:62) of the log intensities (the log makes the split between noise and tissue,
which differ by the SNR, dominate the split between tissue and bright CSF, which differ by a factor
of 1-3). The dark skull separates brain from scalp; a morphological opening restricted to the
largest component (erosion, largest component, dilation by the same ball within the head) cuts the
remaining thin bridges (orbits, skull-base foramina) without letting the scalp grow back, as in the
threshold-morphology skull stripping of Brummer et al. 1993 (IEEE Trans Med Imaging 12:153).
The opening's seeds are taken only from voxels brighter than :data:`MR_SKULL_CUT_FRACTION` of the
head median: at 3-mm pixels the skull base (the bone between the temporal lobes and the soft tissue
below the middle fossa) is partial-volumed into voxels that are darker than any tissue but still
above the noise threshold, and through them that soft tissue would join the brain (on the phantom,
25-70 mL of it at 3 x 3 x 5 mm and 20-44 mL at 1.8 x 1.8 x 5 mm, before this rule). Closing and hole filling restore dark vessels and signal voids inside the brain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from strokeperf import concentration
from strokeperf.concentration import BolusTiming
from strokeperf.errors import DataError
from strokeperf.timecurves import FWHM_PER_SIGMA

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
#: Erosion radius (mm) of the MR opening: about the thickness of the scalp layer and of the bright
#: partial-volume rim that can bridge the dark skull on EPI (3-6 mm of scalp; 1.8-2.5-mm pixels).
MR_BRIDGE_CUT_MM = 4.0
#: Fraction of the head's median intensity below which a voxel may not seed the MR brain mask (it
#: may still join it as the opening's rim): bone has no signal on EPI (cortical bone T2* < 1 ms),
#: so a voxel of head-median tissue this dark is more than 60 % bone. The darkest brain tissue,
#: white matter at about 0.8 of grey matter on T2*-weighted EPI, stays above it even under a
#: receive-coil bias of +-40 %. Scalp and muscle keep their own signal, so only a skull-dominated
#: layer can separate them from the brain; this cut lets it do so.
MR_SKULL_CUT_FRACTION = 0.4
#: In-plane Gaussian smoothing (FWHM, mm) of the EPI image before thresholding, so that Rician noise
#: in dark brain regions does not punch holes in the head mask: about one EPI pixel.
MR_SMOOTHING_FWHM_MM = 2.0
#: The median of the head (above the Otsu threshold) must be this many times the median of the
#: background for the image to show a head at all: the Rose criterion of detectability (an object
#: is seen at an SNR of about 5; Rose 1948, J Opt Soc Am 38:196), with the background magnitude
#: standing for the noise level. Pure Rician noise splits at a ratio of about 2-3.
MR_MIN_HEAD_CONTRAST = 5.0
#: MR: smallest baseline (S0) signal of a usable voxel, as a fraction of the median S0 of the brain
#: (of the search region, for the AIF candidates). Partial volume with bone or air and
#: susceptibility dropout lower S0; such voxels are noisy and reach the noise floor first
#: (Calamante 2013).
MR_MIN_S0_FRACTION = 0.5
#: Margin around the brain searched for the venous sinus and large arteries, mm: the superior
#: sagittal sinus lies between the brain surface and the inner table of the skull.
VESSEL_SEARCH_MARGIN_MM = 6.0
#: Bins of the Otsu histogram.
OTSU_BINS = 256
#: On T2*-weighted EPI CSF is brighter than brain tissue, by about 1.5-3 times at TE 25-40 ms and
#: long TR; grey / white matter differ by less than 1.3 times. A voxel is called CSF only when it is
#: at least this much brighter than the median brain voxel (which is tissue: CSF fills about 10-20 %
#: of the intracranial volume in adults), so that grey matter is never taken for CSF when the
#: sequence shows little CSF contrast.
MR_CSF_MIN_RATIO = 1.3


def ball(radius_mm: float, voxel_size_mm) -> np.ndarray:
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
    soft &= ~ndimage.binary_dilation(bone, structure=ball(1.0 * max(voxel_size_mm[:2]), voxel_size_mm))
    seeds = ndimage.binary_erosion(soft, structure=ball(BRIDGE_CUT_MM, voxel_size_mm))
    core = largest_component(seeds)
    if core is None:
        raise DataError("empty brain mask: no soft tissue (-20 to 100 HU) found inside the skull")
    # Grow the largest component back inside the soft tissue (geodesic reconstruction), then close
    # holes left by enhancing vessels and calcifications.
    brain = ndimage.binary_propagation(core, mask=soft)
    brain = ndimage.binary_closing(brain, structure=ball(2.0 * max(voxel_size_mm[:2]), voxel_size_mm))
    brain = _fill_holes_per_slice(brain) & ~bone
    _check_brain_volume(brain, voxel_size_mm, "the largest intracranial soft-tissue region",
                        "a head CT in HU")
    return brain


def largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest 6-connected component of a 3D boolean mask, or None when the mask is empty."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _check_brain_volume(brain: np.ndarray, voxel_size_mm, region: str, expected: str) -> None:
    """Raise DataError when ``brain`` is smaller than :data:`MIN_BRAIN_ML` (not a head image)."""
    volume_ml = brain.sum() * float(np.prod(voxel_size_mm[:3])) / 1000.0
    if volume_ml < MIN_BRAIN_ML:
        raise DataError(f"empty brain mask: {region} is {volume_ml:.0f} mL "
                        f"(< {MIN_BRAIN_ML:.0f} mL); is this {expected}?")


def otsu_threshold(values, bins: int = OTSU_BINS) -> float:
    """Two-class Otsu threshold (Otsu 1979, IEEE Trans Syst Man Cybern 9:62) of 1D values.

    Maximises the between-class variance over a ``bins``-bin histogram; vectorised over all
    candidate thresholds. Returns the upper edge of the last bin of the lower class.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise DataError("empty image: no finite values to threshold")
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(counts)[:-1].astype(float)
    w1 = v.size - w0
    s0 = np.cumsum(counts * centres)[:-1]
    mu0 = s0 / np.maximum(w0, 1)
    mu1 = (np.sum(counts * centres) - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[1:-1][int(np.argmax(between))])


def _smooth_in_plane(image: np.ndarray, fwhm_mm: float, voxel_size_mm) -> np.ndarray:
    sigma = [fwhm_mm / FWHM_PER_SIGMA / v for v in voxel_size_mm[:2]] + [0.0]
    return ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma)


def mr_brain_mask(image, voxel_size_mm, skull_cut: bool = True) -> np.ndarray:
    """Brain mask (parenchyma and CSF, no skull or scalp) of a T2*-weighted EPI image.

    For the DSC baseline S0 (mean of the pre-contrast frames) or a DWI b = 0 image; see the module
    docstring for the method (Otsu 1979 on log intensities; Brummer et al. 1993 morphology).

    Parameters
    ----------
    image : (X, Y, Z) array
        Magnitude image, arbitrary units, background near 0.
    voxel_size_mm : sequence of 3 floats
    skull_cut : bool
        Seed only from voxels brighter than :data:`MR_SKULL_CUT_FRACTION` of the head median (the
        brain mask). False gives the region that partial-volumed skull-base bone joins to the
        brain, soft tissue under the skull base included: where the internal carotid arteries run,
        so the arterial search region starts from it.

    Returns
    -------
    (X, Y, Z) bool array

    Raises
    ------
    DataError
        ("empty brain mask: ...") when no brain-sized region is found.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 3:
        raise DataError(f"empty brain mask: a 3D image is needed, got shape {img.shape}")
    img = np.where(np.isfinite(img), img, 0.0)
    smooth = _smooth_in_plane(img, MR_SMOOTHING_FWHM_MM, voxel_size_mm)
    positive = smooth[smooth > 0]
    if positive.size < 2:
        raise DataError("empty brain mask: the image has no signal")
    log_level = otsu_threshold(np.log(positive))
    level = float(np.exp(log_level))
    fg, bg = positive[positive > level], positive[positive <= level]
    if fg.size == 0 or bg.size == 0 or np.median(fg) < MR_MIN_HEAD_CONTRAST * np.median(bg):
        raise DataError("empty brain mask: no region clearly brighter than the background (the "
                        "EPI image looks like noise)")
    # No hole filling here: the dark skull is enclosed by the scalp and must stay out.
    head = smooth > level
    seed_region = head
    if skull_cut:
        seed_region = head & (smooth > MR_SKULL_CUT_FRACTION * float(np.median(smooth[head])))
    bridge_cut = ball(MR_BRIDGE_CUT_MM, voxel_size_mm)
    seeds = ndimage.binary_erosion(seed_region, structure=bridge_cut)
    core = largest_component(seeds)
    if core is None:
        raise DataError("empty brain mask: no head-sized region above the background on the EPI "
                        "image")
    brain = ndimage.binary_dilation(core, structure=bridge_cut) & head
    brain = ndimage.binary_closing(brain, structure=ball(2.0 * max(voxel_size_mm[:2]),
                                                            voxel_size_mm))
    brain = _fill_holes_per_slice(brain)
    brain = ndimage.binary_fill_holes(brain)
    _check_brain_volume(brain, voxel_size_mm, "the largest region above the background",
                        "a head EPI magnitude image")
    return brain


def min_usable_s0(s0) -> float:
    """Smallest usable MR baseline signal: :data:`MR_MIN_S0_FRACTION` of the median of ``s0``,
    the baseline (S0) values of a region (signal units). Voxels below it give no usable delta-R2*
    (brain mask; AIF candidates, :func:`strokeperf.aif.mr.classify_mr_voxels`)."""
    return MR_MIN_S0_FRACTION * float(np.median(s0))


def mr_vessel_search_region(s0, brain_mask, voxel_size_mm, margin_mm: float,
                            min_s0: float = 0.0) -> np.ndarray:
    """Where the MR arterial and venous input functions are searched, on the baseline S0 image.

    Arteries at the brain surface and the sinuses lie just outside the brain mask, the internal
    carotids in the soft tissue under the skull base that the brain mask leaves out
    (:data:`MR_SKULL_CUT_FRACTION`). The region is the brain together with the voxels of at least
    ``min_s0`` that the partial-volumed skull base joins to it (``mr_brain_mask(...,
    skull_cut=False)``; ``min_s0`` the signal rule the brain mask had), grown by ``margin_mm``;
    voxels without signal (the dark skull, S0 <= 0) are never candidates.
    """
    s0 = np.asarray(s0)
    joined = mr_brain_mask(s0, voxel_size_mm, skull_cut=False) & (s0 >= min_s0)
    reach = np.asarray(brain_mask, dtype=bool) | joined
    search = ndimage.binary_dilation(reach, structure=ball(margin_mm, voxel_size_mm))
    return search & (s0 > 0)


def mr_csf_mask(s0, brain_mask, voxel_size_mm, smoothing_mm: float = 2.0) -> np.ndarray:
    """CSF inside the brain mask of a T2*-weighted EPI image (DSC S0 or DWI b = 0): bright voxels.

    The image is smoothed in-plane within the brain (normalised convolution, FWHM ``smoothing_mm``);
    CSF is where it exceeds both the Otsu threshold of the brain's intensities (Otsu 1979), which
    splits tissue from bright CSF, and :data:`MR_CSF_MIN_RATIO` x the brain median. Returns an empty
    mask when the sequence gives CSF no such contrast.
    """
    brain = np.asarray(brain_mask, dtype=bool)
    if not brain.any():
        return np.zeros_like(brain)
    sigma = [smoothing_mm / FWHM_PER_SIGMA / v for v in voxel_size_mm[:2]] + [0.0]
    weights = ndimage.gaussian_filter(brain.astype(np.float32), sigma)
    smooth = ndimage.gaussian_filter(np.where(brain, s0, 0).astype(np.float32), sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = np.where(weights > 1e-3, smooth / weights, 0)
    values = smooth[brain]
    level = max(otsu_threshold(values), MR_CSF_MIN_RATIO * float(np.median(values)))
    return brain & (smooth > level)


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
    sigma = [smoothing_mm / FWHM_PER_SIGMA / v for v in voxel_size_mm[:2]] + [0.0]
    weights = ndimage.gaussian_filter(brain.astype(np.float32), sigma)
    smooth = ndimage.gaussian_filter(np.where(brain, baseline_hu, 0).astype(np.float32), sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = np.where(weights > 1e-3, smooth / weights, 0)
    return brain & (smooth < CSF_HU)


@dataclass(frozen=True)
class SessionMasks:
    """The masks of one perfusion series on its grid, and the bolus timing they were found with.

    ``vessel_search`` is where the arterial and venous input functions are searched (brain plus
    :data:`VESSEL_SEARCH_MARGIN_MM`, bone excluded); ``s0`` the MR baseline image (None for CT).
    """

    brain: np.ndarray
    csf: np.ndarray
    vessel_search: np.ndarray
    bolus: BolusTiming
    s0: np.ndarray | None = None


def ct_session_masks(hu, frame_times, voxel_size_mm) -> SessionMasks:
    """Brain, CSF and vessel-search masks of a CT perfusion series ``hu`` (X, Y, Z, T), and the
    bolus timing of its whole-brain curve. Raises DataError when there is no brain or no bolus."""
    # The temporal median is unenhanced nearly everywhere: arteries enhance in a few frames only.
    brain = ct_brain_mask(np.median(hu, axis=3), voxel_size_mm)
    # The median over the brain, not the mean: after motion correction the edge voxels of moved
    # frames carry interpolated skull (+1000 HU), which shifts a mean curve frame by frame.
    bolus = concentration.require_bolus(np.median(hu[brain], axis=0),
                                        np.asarray(frame_times, dtype=float))
    baseline = hu[..., : bolus.baseline_end].mean(axis=3)
    csf = ct_csf_mask(baseline, brain, voxel_size_mm)
    bone = baseline > BONE_HU
    margin = ball(VESSEL_SEARCH_MARGIN_MM, voxel_size_mm)
    search = ndimage.binary_dilation(brain, structure=margin) & ~bone
    return SessionMasks(brain, csf, search, bolus)


def mr_session_masks(signal, frame_times, echo_time_s: float, voxel_size_mm) -> SessionMasks:
    """Bolus timing, then brain and CSF masks on the baseline S0 and the vessel search region of a
    DSC-MRI magnitude series ``signal`` (X, Y, Z, T).

    The bolus is found on the whole-brain delta-R2* curve, the brain being first outlined on the
    temporal median (unenhanced nearly everywhere); the masks are then computed on S0, the mean of
    the pre-contrast frames. Brain voxels whose S0 is below :data:`MR_MIN_S0_FRACTION` of the brain
    median are left out (no usable signal). Raises DataError when there is no head or no bolus.
    """
    outline = mr_brain_mask(np.median(signal, axis=3), voxel_size_mm)
    curve = signal[outline].mean(axis=0, dtype=np.float64)
    # Before the baseline is known, the curve's median stands for S0 (the bolus is a minority of
    # the frames).
    delta_r2s = concentration.delta_r2s_from_ratio(curve / np.median(curve), echo_time_s)
    bolus = concentration.require_bolus(delta_r2s, np.asarray(frame_times, dtype=float))
    s0 = signal[..., : bolus.baseline_end].mean(axis=3)
    brain = mr_brain_mask(s0, voxel_size_mm)
    # Voxels of the outline with a low baseline signal (partial volume with bone or air,
    # susceptibility dropout) give no usable delta-R2*: the rule of the MR AIF candidates.
    min_s0 = min_usable_s0(s0[brain])
    brain &= s0 >= min_s0
    csf = mr_csf_mask(s0, brain, voxel_size_mm)
    # Cannot fail once the brain mask has been found: its region only grows without the cut.
    search = mr_vessel_search_region(s0, brain, voxel_size_mm, VESSEL_SEARCH_MARGIN_MM,
                                     min_s0=min_s0)
    return SessionMasks(brain, csf, search, bolus, s0)
