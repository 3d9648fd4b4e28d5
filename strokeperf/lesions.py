"""Ischemic core, Tmax lesions, relative maps and their volumes (SPEC.md, "Clinical definitions").

All functions take 3D numpy arrays in one image grid and return arrays or numbers; volumes are in mL
(``voxel_volume_ml = prod(voxel size in mm) / 1000``).

Definitions (defaults, each configurable):

- Tissue: brain voxels that are neither CSF nor large vessel.
- Reference tissue for relative maps: tissue with Tmax < 4 s (SPEC.md).
- Hypoperfusion: Tmax > 6 s (Albers et al. 2018, DEFUSE 3; Campbell et al. 2012), also reported at
  4, 8 and 10 s.
- CTP core: rCBF < 0.30 inside the Tmax > 6 s region (Campbell et al. 2011, Stroke 42:3435; the
  RAPID definition used by DEFUSE 3 and EXTEND), on the rCBF map smoothed within tissue (see
  :data:`CORE_RCBF_FWHM_MM`).
- MRI core: ADC < 620 x 1e-6 mm^2/s (Purushotham et al. 2015, Int J Stroke 10:348).
- Clusters smaller than a minimum volume are removed (noise speckles), 3D 26-connectivity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage

from strokeperf import concentration

#: Tmax thresholds reported, seconds (SPEC.md).
TMAX_THRESHOLDS_S = (4.0, 6.0, 8.0, 10.0)
#: Tmax above which tissue is hypoperfused, seconds (DEFUSE 3).
HYPOPERFUSION_TMAX_S = 6.0
#: Tmax below which tissue counts as normally perfused reference, seconds (SPEC.md).
REFERENCE_TMAX_S = 4.0
#: rCBF below which hypoperfused CTP tissue is core (Campbell et al. 2011).
CORE_RCBF_THRESHOLD = 0.30
#: Full width at half maximum (mm) of the Gaussian with which rCBF is smoothed, within tissue, before
#: the core threshold. Two biases pull against each other. Per-voxel rCBF is noisy, and near the
#: threshold the penumbra outnumbers the core, so unsmoothed the noise turns penumbra into core
#: (whole-brain phantoms, 2026-12-04: +13 to +35 %, 23 % of penumbra voxels with a true rCBF of
#: 0.30-0.45 read below 0.30; now +10 % on average, up to +21 %; Campbell et al. 2011 on low SNR).
#: Smoothing biases the other way at the core's edge, where the map, already blurred by the
#: concentration's 5 mm smoothing, blends core and penumbra: a second average lifts that rim above
#: the threshold (phantom seed 11, outermost 1.5 mm of the true core, true rCBF 0.15: median 0.28 as
#: mapped, 0.31 after 5 mm, 0.30 after 4 mm), and small or irregular cores shrink most. With the
#: fit of 2026-12-05 the second bias won at 5 mm: on 41 whole-brain phantom sessions the core read
#: 3-9 % small on average and a 7 mL core 38 % small. 4 mm brings the mean errors to -5..+2 %
#: (docs/accuracy.md, "The core's rCBF smoothing").
CORE_RCBF_FWHM_MM = 4.0
#: ADC below which tissue is core, 1e-6 mm^2/s (Purushotham et al. 2015).
CORE_ADC_THRESHOLD = 620.0
#: Smallest lesion cluster kept, mL. Below about 1 mL a cluster is a speckle of the noise, not a
#: vascular territory; the core is an infarct of at least several lacunes in size.
MIN_CLUSTER_ML = 1.0
#: CBV above which a voxel is dominated by a large vessel, mL/100 g. Normal grey matter holds
#: 4-5 mL/100 g (Leenders et al. 1990, Brain 113:27); twice that needs a vessel in the voxel.
VESSEL_CBV_ML_100G = 10.0

_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def voxel_volume_ml(voxel_size_mm) -> float:
    """Volume of one voxel in mL from its edge lengths in mm."""
    return float(np.prod(np.asarray(voxel_size_mm, dtype=float)[:3])) / 1000.0


def volume_ml(mask: np.ndarray, voxel_size_mm) -> float:
    """Volume of a boolean mask in mL."""
    return float(np.count_nonzero(mask)) * voxel_volume_ml(voxel_size_mm)


def remove_small_clusters(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop connected components (26-connectivity) with fewer than ``min_voxels`` voxels."""
    mask = np.asarray(mask, dtype=bool)
    if min_voxels <= 1 or not mask.any():
        return mask.copy()
    labels, n = ndimage.label(mask, structure=_CONNECTIVITY_26)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def min_cluster_voxels(min_cluster_ml: float, voxel_size_mm) -> int:
    """Number of voxels that makes up ``min_cluster_ml`` (at least 1)."""
    return max(1, int(np.ceil(min_cluster_ml / voxel_volume_ml(voxel_size_mm))))


def tissue_mask(brain_mask, csf_mask=None, cbv=None, vessel_cbv=VESSEL_CBV_ML_100G) -> np.ndarray:
    """Brain voxels that are neither CSF nor large vessel.

    Vessels are found from the CBV map (mL/100 g) when given: voxels above ``vessel_cbv`` and their
    immediate in-plane neighbours, whose curves are contaminated by the vessel's partial volume.
    """
    tissue = np.asarray(brain_mask, dtype=bool).copy()
    if csf_mask is not None:
        tissue &= ~np.asarray(csf_mask, dtype=bool)
    if cbv is not None:
        vessel = np.asarray(cbv) > vessel_cbv
        vessel = ndimage.binary_dilation(vessel, structure=np.ones((3, 3, 1), dtype=bool))
        tissue &= ~vessel
    return tissue


def reference_mask(tissue: np.ndarray, tmax: np.ndarray, tmax_limit_s=REFERENCE_TMAX_S):
    """Normally perfused reference tissue: tissue with Tmax below ``tmax_limit_s`` seconds."""
    return np.asarray(tissue, dtype=bool) & (np.asarray(tmax) < tmax_limit_s)


def relative_map(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``values`` divided by their mean over the reference mask (dimensionless, float32).

    The mean, not the median, is used so that the ratio is that of mean flows: the truth of the phantom
    and clinical software (RAPID) normalise to mean normal-tissue values.
    """
    ref = np.asarray(reference, dtype=bool)
    if not ref.any():
        raise ValueError("reference tissue is empty: no tissue with Tmax below the reference limit")
    norm = float(np.mean(np.asarray(values)[ref], dtype=np.float64))
    if not np.isfinite(norm) or norm <= 0:
        raise ValueError(f"reference tissue mean is {norm}; cannot form relative map")
    return (np.asarray(values, dtype=np.float64) / norm).astype(np.float32)


def tmax_lesions(tmax, tissue, voxel_size_mm, thresholds_s=TMAX_THRESHOLDS_S,
                 min_cluster_ml=MIN_CLUSTER_ML) -> dict[float, np.ndarray]:
    """Masks of tissue with Tmax above each threshold (s), small clusters removed."""
    tissue = np.asarray(tissue, dtype=bool)
    min_vox = min_cluster_voxels(min_cluster_ml, voxel_size_mm)
    return {
        float(thr): remove_small_clusters(tissue & (np.asarray(tmax) > thr), min_vox)
        for thr in thresholds_s
    }


def smooth_within(values, mask, fwhm_mm: float, voxel_size_mm) -> np.ndarray:
    """Gaussian smoothing (FWHM in mm) of a 3D map over ``mask`` voxels only, by the normalised
    convolution of :func:`concentration.denoise`: voxels outside the mask (CSF, air) neither enter
    the average nor dilute it. Voxels outside the mask keep their value; float32."""
    out = np.array(values, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if fwhm_mm <= 0 or not mask.any():
        return out
    smoothed = concentration.denoise(out[..., None], mask, voxel_size_mm, fwhm_mm)[..., 0]
    out[mask] = smoothed[mask]
    return out


def ctp_core(rcbf, hypoperfused, voxel_size_mm, rcbf_threshold=CORE_RCBF_THRESHOLD,
             min_cluster_ml=MIN_CLUSTER_ML, tissue=None,
             fwhm_mm: float = CORE_RCBF_FWHM_MM) -> np.ndarray:
    """CTP ischemic core: rCBF below ``rcbf_threshold`` inside the hypoperfused (Tmax > 6 s) mask.

    rCBF is first smoothed within ``tissue`` with a Gaussian of ``fwhm_mm``
    (:data:`CORE_RCBF_FWHM_MM`; 0 thresholds the map as it is).
    """
    rcbf = np.asarray(rcbf)
    if fwhm_mm > 0:
        if tissue is None:
            raise ValueError("smoothing rCBF for the core needs the tissue mask")
        rcbf = smooth_within(rcbf, tissue, fwhm_mm, voxel_size_mm)
    core = np.asarray(hypoperfused, dtype=bool) & (rcbf < rcbf_threshold)
    return remove_small_clusters(core, min_cluster_voxels(min_cluster_ml, voxel_size_mm))


def adc_core(adc, tissue, voxel_size_mm, adc_threshold=CORE_ADC_THRESHOLD,
             min_cluster_ml=MIN_CLUSTER_ML) -> np.ndarray:
    """MRI ischemic core: ADC (1e-6 mm^2/s) below ``adc_threshold`` in tissue."""
    core = np.asarray(tissue, dtype=bool) & (np.asarray(adc) < adc_threshold)
    return remove_small_clusters(core, min_cluster_voxels(min_cluster_ml, voxel_size_mm))


def cbv_index(rcbv: np.ndarray, hypoperfused: np.ndarray) -> float | None:
    """Mean rCBV inside the Tmax > 6 s region (Arenillas et al. 2018, Stroke 49:1398); None if empty."""
    hyp = np.asarray(hypoperfused, dtype=bool)
    if not hyp.any():
        return None
    return float(np.mean(np.asarray(rcbv)[hyp], dtype=np.float64))


def affected_side(lesion: np.ndarray, brain_mask: np.ndarray | None, affine: np.ndarray,
                  midline_x: float | None = None) -> str | None:
    """``"L"`` or ``"R"``: the hemisphere holding most of the lesion, None for an empty lesion.

    The midline is ``midline_x`` (world mm; e.g. 0 in MNI space), else the x (RAS) coordinate of the
    brain mask's centroid; each lesion voxel votes by the sign of its world x coordinate relative to
    it (RAS: negative x is the patient's left; voxels on the midline do not vote).
    """
    lesion = np.asarray(lesion, dtype=bool)
    if not lesion.any():
        return None
    affine = np.asarray(affine, dtype=float)

    def world_x(mask):
        ijk = np.argwhere(mask)
        return ijk @ affine[0, :3] + affine[0, 3]

    midline = (float(midline_x) if midline_x is not None
               else float(np.mean(world_x(np.asarray(brain_mask, dtype=bool)))))
    x = world_x(lesion)
    return "R" if np.count_nonzero(x > midline) > np.count_nonzero(x < midline) else "L"


@dataclass(frozen=True)
class Hypoperfusion:
    """Tissue, reference tissue, relative maps and Tmax lesions of one session (perfusion grid).

    ``tmax_masks`` maps each Tmax threshold (s) to its mask; ``hypoperfused`` is the Tmax > 6 s one.
    """

    affine: np.ndarray
    brain: np.ndarray
    tissue: np.ndarray
    reference: np.ndarray
    rcbf: np.ndarray
    rcbv: np.ndarray
    tmax_masks: dict
    hypoperfused: np.ndarray

    @property
    def voxel_size(self) -> np.ndarray:
        """Voxel edge lengths, mm, from ``affine``."""
        return voxel_sizes(self.affine)


def hypoperfusion(cbf, cbv, tmax, brain_mask, csf_mask, affine, thresholds_s=TMAX_THRESHOLDS_S,
                  min_cluster_ml: float = MIN_CLUSTER_ML,
                  vessel_cbv: float = VESSEL_CBV_ML_100G) -> Hypoperfusion:
    """Tissue (brain minus CSF and vessels), reference tissue (Tmax < 4 s), rCBF and rCBV against
    it, and the Tmax > threshold lesions with small clusters removed.

    Maps in their units (CBF mL/100 g/min, CBV mL/100 g, Tmax s) on the grid of ``affine``. Raises
    ValueError when the reference tissue is empty or its mean is not positive
    (:func:`relative_map`).
    """
    vs = voxel_sizes(affine)
    tissue = tissue_mask(brain_mask, csf_mask, cbv, vessel_cbv=vessel_cbv)
    reference = reference_mask(tissue, tmax)
    rcbf = relative_map(cbf, reference)
    rcbv = relative_map(cbv, reference)
    tmax_masks = tmax_lesions(tmax, tissue, vs, thresholds_s, min_cluster_ml)
    return Hypoperfusion(affine, np.asarray(brain_mask, dtype=bool), tissue, reference, rcbf, rcbv,
                         tmax_masks, tmax_masks[HYPOPERFUSION_TMAX_S])
