"""Quality-control flags of one perfusion session.

Each flag is a pure function over plain arrays (curves ``(T,)`` in concentration units with baseline
0, frame times in s, boolean masks ``(X, Y, Z)`` with the slab (slice) axis last, a 4x4 voxel-to-world
affine in mm, RAS) that returns ``True`` when the flag is raised. :func:`compute_qc_flags` evaluates
all of them for the pipeline; :data:`QC_FLAG_RULES` explains each flag in one sentence for the reports.

Rules (the constants below carry the sources):

- ``motion``: a frame moves more than half the smallest voxel edge (framewise displacement).
- ``truncated_bolus``: a tissue curve (normal or hypoperfused) has not fallen back below half of its
  enhancement by the last frame, or the venous output function is incomplete (Kasasbeh et al. 2016).
- ``poor_aif``: the AIF is late (arrives or peaks no earlier than the tissue, or never falls below half
  its peak), low (peaks less than ``LOW_AIF_PEAK_RATIO`` times the tissue), broad (no narrower than the
  tissue curve) or irregular (gamma-variate fit R^2 below :data:`strokeperf.aif.arterial.MIN_FIT_R2`).
- ``no_vof``: no venous output function was found, so the AIF is not corrected for partial volume.
- ``low_snr``: the tissue enhancement is below ``ENHANCEMENT_SNR`` voxel noise SDs (Rose criterion).
- ``limited_coverage``: the brain is cut by the first or last slice of the slab.
- ``lesion_at_slab_edge``: at least ``MIN_CLUSTER_ML`` of the Tmax > 6 s lesion lies in an end slice.
- ``bilateral_deficit``: a fifth or more of the lateralised lesion lies in the other hemisphere.
"""

from __future__ import annotations

import numpy as np
from nibabel.affines import voxel_sizes

from strokeperf.aif.arterial import COMPLETE_FRACTION, MIN_FIT_R2
from strokeperf.concentration import DENOISE_FWHM_MM, ENHANCEMENT_SNR, detect_bolus
from strokeperf.lesions import MIN_CLUSTER_ML, voxel_volume_ml
from strokeperf.timecurves import fwhm, noise_sd, smooth3

#: Largest framewise displacement tolerated, as a fraction of the smallest voxel edge. A shift of
#: half a voxel mixes each voxel's time curve half with its neighbour's (at a vessel or lesion edge
#: this distorts the curve shape and hence Tmax); framewise displacement as defined by Power et al.
#: 2012, NeuroImage 59:2142 (sum of absolute frame-to-frame translations and arc lengths).
MOTION_VOXEL_FRACTION = 0.5
#: A tissue curve has "returned toward baseline" when it falls below this fraction of its enhancement
#: before the scan ends: the same completeness rule as the input functions
#: (:data:`strokeperf.aif.arterial.COMPLETE_FRACTION`). Kasasbeh et al. 2016 (Stroke 47:2966) showed that
#: lesion volumes are stable only when the scan covers the downslope of the venous output function.
TISSUE_RETURN_FRACTION = COMPLETE_FRACTION
#: An AIF is "low" when it peaks less than this many times higher than the mean tissue curve. An
#: unmixed artery peaks about 25 times higher than grey matter holding 4 mL/100 g of blood (Leenders
#: et al. 1990, Brain 113:27); below a fifth of that the AIF is more than 80 % partial volume and its
#: amplitude rests entirely on the venous scaling.
LOW_AIF_PEAK_RATIO = 5.0
#: A slab end slice "cuts the brain" when the brain's cross-section there is at least this fraction of
#: the largest cross-section. An ellipsoidal brain falls below a quarter of its largest section only in
#: its last ~7 % of height (area ~ 1 - z^2), so a full-coverage scan never reaches it at its ends.
EDGE_BRAIN_AREA_FRACTION = 0.25
#: Lesion voxels closer to the midline than this (mm) are not assigned to a hemisphere: smoothing
#: (:data:`strokeperf.concentration.DENOISE_FWHM_MM`) spreads a lesion edge by about one FWHM.
MIDLINE_BAND_MM = DENOISE_FWHM_MM
#: A deficit is bilateral when the minority hemisphere holds at least this fraction of the lesion
#: outside the midline band (and at least ``MIN_CLUSTER_ML``). A single middle cerebral artery
#: territory is unilateral; the tolerance absorbs head tilt, which moves a lesion's parts across the
#: x = midline plane used here (10 degrees shift points 50 mm from the centre by about 9 mm).
BILATERAL_MIN_FRACTION = 0.2
#: Voxels sampled for the noise estimate of :func:`voxel_noise_sd` (a median needs no more).
NOISE_SAMPLE_VOXELS = 20000

#: Flag -> one-sentence explanation (shown in the reports next to each raised flag).
QC_FLAG_RULES = {
    "motion": "The head moved between frames by more than half a voxel (framewise displacement), "
              "which mixes neighbouring tissue and vessel curves and distorts the maps.",
    "truncated_bolus": "The scan ended before the tissue (or venous) curve fell back below half of "
                       "its enhancement, so CBV, MTT and delayed Tmax may be underestimated.",
    "poor_aif": "The arterial input function is late, low, broad or irregular relative to the "
                "tissue, so absolute values and Tmax are less reliable.",
    "no_vof": "No complete venous output function was found, so the arterial input function was "
              "not corrected for partial volume and absolute CBF and CBV may be overestimated.",
    "low_snr": f"The tissue enhancement is less than {ENHANCEMENT_SNR:g} times the voxel noise, so "
               "the maps and lesion volumes are noisy.",
    "limited_coverage": "The perfusion slab cuts through the brain at its top or bottom, so lesions "
                        "beyond the slab are not measured.",
    "lesion_at_slab_edge": "The Tmax > 6 s lesion reaches the first or last slice of the slab and "
                           "probably extends beyond it, so its volume is underestimated.",
    "bilateral_deficit": "Hypoperfusion is present in both hemispheres, so the normal reference "
                         "tissue and the mismatch of a single territory are in doubt.",
}
QC_FLAGS = tuple(QC_FLAG_RULES)


def _rise(curve) -> tuple[float, int]:
    """Enhancement (peak minus pre-peak minimum) of the 3-frame-smoothed curve and its peak index."""
    y = smooth3(np.asarray(curve, dtype=float))
    k = int(np.argmax(y))
    return float(y[k] - np.min(y[: k + 1])), k


def _usable(curve) -> bool:
    if curve is None:
        return False
    c = np.asarray(curve, dtype=float)
    return c.ndim == 1 and c.size >= 3 and bool(np.all(np.isfinite(c)))


# --- motion -------------------------------------------------------------------------------------

def motion(framewise_displacement, voxel_size, fraction=MOTION_VOXEL_FRACTION) -> bool:
    """Any frame's framewise displacement (mm) exceeds ``fraction`` x the smallest voxel edge (mm).

    NaN entries (the first frame has no predecessor) are ignored; ``None`` gives False.

    >>> motion([0.0, 0.2, 1.1], (1.5, 1.5, 5.0))
    True
    """
    if framewise_displacement is None:
        return False
    fd = np.asarray(framewise_displacement, dtype=float)
    fd = fd[np.isfinite(fd)]
    return bool(fd.size and np.max(fd) > fraction * float(np.min(voxel_size)))


# --- truncated bolus ----------------------------------------------------------------------------

def curve_returns(curve, fraction=TISSUE_RETURN_FRACTION) -> bool:
    """True when the smoothed curve falls, after its peak, below ``fraction`` of its enhancement.

    A curve without enhancement (flat) counts as returned: there is nothing to truncate.
    """
    y = smooth3(np.asarray(curve, dtype=float))
    k = int(np.argmax(y))
    base = float(np.min(y[: k + 1]))
    rise = float(y[k]) - base
    if rise <= 0:
        return True
    return bool(np.any(y[k:] - base < fraction * rise))


def truncated_bolus(frame_times, tissue_curve, hypoperfused_curve=None, vof_complete=None) -> bool:
    """The scan is too short for the bolus passage.

    Raised when the normal tissue curve or the hypoperfused tissue curve (when it shows an
    enhancement, see :func:`strokeperf.concentration.detect_bolus`) has not fallen below
    ``TISSUE_RETURN_FRACTION`` of its enhancement by the last frame, or when the venous output
    function exists but is incomplete (``vof_complete is False``; Kasasbeh et al. 2016).
    """
    t = np.asarray(frame_times, dtype=float)
    if vof_complete is False:
        return True
    if _usable(tissue_curve) and not curve_returns(tissue_curve):
        return True
    if _usable(hypoperfused_curve):
        timing = detect_bolus(hypoperfused_curve, t)
        enhances = np.isfinite(timing.peak_s)
        if enhances and not curve_returns(hypoperfused_curve):
            return True
    return False


# --- AIF ----------------------------------------------------------------------------------------

def aif_problems(frame_times, aif_curve, tissue_curve, aif_quality=None,
                 low_ratio=LOW_AIF_PEAK_RATIO) -> list[str]:
    """What is wrong with an AIF relative to the tissue curve: a subset of late, low, broad, irregular.

    - late: the AIF arrives (:func:`~strokeperf.concentration.detect_bolus`) or peaks no earlier than
      the tissue (a tissue curve is the AIF convolved with a delayed residue, so it cannot lead), or
      the AIF never falls below half its peak before the scan ends;
    - low: AIF enhancement < ``low_ratio`` x tissue enhancement;
    - broad: AIF FWHM >= tissue FWHM (convolution with a residue function only broadens);
    - irregular: ``aif_quality`` (gamma-variate R^2) < :data:`strokeperf.aif.arterial.MIN_FIT_R2`.
    """
    t = np.asarray(frame_times, dtype=float)
    a = np.asarray(aif_curve, dtype=float)
    c = np.asarray(tissue_curve, dtype=float)
    problems = []
    a_timing, c_timing = detect_bolus(a, t), detect_bolus(c, t)
    a_ttp = float(t[int(np.argmax(smooth3(a)))])
    c_ttp = float(t[int(np.argmax(smooth3(c)))])
    late = a_ttp >= c_ttp or not curve_returns(a)
    if np.isfinite(a_timing.arrival_s) and np.isfinite(c_timing.arrival_s):
        late |= a_timing.arrival_s >= c_timing.arrival_s
    if late:
        problems.append("late")
    a_rise, _ = _rise(a)
    c_rise, _ = _rise(c)
    if a_rise < low_ratio * c_rise:
        problems.append("low")
    a_width, c_width = fwhm(smooth3(a), t), fwhm(smooth3(c), t)
    if np.isfinite(a_width) and np.isfinite(c_width) and a_width >= c_width:
        problems.append("broad")
    if aif_quality is not None and np.isfinite(aif_quality) and aif_quality < MIN_FIT_R2:
        problems.append("irregular")
    return problems


def poor_aif(frame_times, aif_curve, tissue_curve, aif_quality=None) -> bool:
    """True when :func:`aif_problems` finds anything."""
    return bool(aif_problems(frame_times, aif_curve, tissue_curve, aif_quality))


def no_vof(vof_curve, vof_complete=None) -> bool:
    """No venous output function: ``vof_curve`` is None, empty or not finite.

    An incomplete VOF (``vof_complete is False``) is not used for scaling either
    (:func:`strokeperf.aif.venous.scale_aif_by_vof`), so it also counts as missing.
    """
    return not _usable(vof_curve) or vof_complete is False


# --- noise --------------------------------------------------------------------------------------

def voxel_noise_sd(conc, mask, max_voxels: int = NOISE_SAMPLE_VOXELS) -> float:
    """Median temporal noise SD of single voxels in ``mask`` of a 4D concentration ``(X, Y, Z, T)``.

    Per voxel the robust frame-difference estimate :func:`strokeperf.timecurves.noise_sd`; at most
    ``max_voxels`` voxels, evenly spaced through the mask, are used. NaN for an empty mask.
    """
    index = np.flatnonzero(np.asarray(mask, dtype=bool))
    if index.size == 0:
        return float("nan")
    if index.size > max_voxels:
        index = index[np.linspace(0, index.size - 1, max_voxels).astype(int)]
    conc = np.asarray(conc)
    curves = conc.reshape(-1, conc.shape[-1])[index]
    return float(np.median(noise_sd(curves, axis=-1)))


def low_snr(tissue_curve, noise, min_snr=ENHANCEMENT_SNR) -> bool:
    """Enhancement of the mean tissue curve < ``min_snr`` x single-voxel noise SD ``noise``.

    ``noise`` is measured on the concentration that is deconvolved (after denoising), e.g. with
    :func:`voxel_noise_sd`; ``None`` or NaN gives False (cannot be judged). Rose criterion
    (Rose 1948, J Opt Soc Am 38:196), as :data:`strokeperf.concentration.ENHANCEMENT_SNR`.
    """
    if noise is None or not np.isfinite(noise) or not _usable(tissue_curve):
        return False
    rise, _ = _rise(tissue_curve)
    return bool(rise < min_snr * float(noise))


# --- coverage and lesion position ---------------------------------------------------------------

def limited_coverage(brain_mask, fraction=EDGE_BRAIN_AREA_FRACTION) -> bool:
    """The first or last slice (last array axis) holds >= ``fraction`` of the largest brain section."""
    brain = np.asarray(brain_mask, dtype=bool)
    area = brain.sum(axis=(0, 1))
    if area.size == 0 or area.max() == 0:
        return False
    return bool(max(area[0], area[-1]) >= fraction * area.max())


def lesion_at_slab_edge(lesion_mask, voxel_size, min_ml=MIN_CLUSTER_ML) -> bool:
    """At least ``min_ml`` mL of the lesion lies in the first or last slice (last array axis).

    Slabs of one slice are always at the edge: any lesion of ``min_ml`` raises the flag.
    """
    lesion = np.asarray(lesion_mask, dtype=bool)
    per_slice = lesion.sum(axis=(0, 1)) * voxel_volume_ml(voxel_size)
    return bool(per_slice.size and max(per_slice[0], per_slice[-1]) >= min_ml)


def bilateral_deficit(lesion_mask, brain_mask, affine, band_mm=MIDLINE_BAND_MM,
                      min_fraction=BILATERAL_MIN_FRACTION, min_ml=MIN_CLUSTER_ML) -> bool:
    """The smaller hemisphere's share of the lesion is >= ``min_fraction`` and >= ``min_ml`` mL.

    The midline is the world x (RAS) of the brain mask's centroid, as in
    :func:`strokeperf.lesions.affected_side`; lesion voxels within ``band_mm`` of it are ignored.
    """
    lesion = np.asarray(lesion_mask, dtype=bool)
    brain = np.asarray(brain_mask, dtype=bool)
    if not lesion.any() or not brain.any():
        return False
    affine = np.asarray(affine, dtype=float)
    row = affine[0, :3]
    midline = float(np.mean(np.argwhere(brain) @ row)) + affine[0, 3]
    dx = np.argwhere(lesion) @ row + affine[0, 3] - midline
    vox_ml = voxel_volume_ml(voxel_sizes(affine))
    right = np.count_nonzero(dx > band_mm) * vox_ml
    left = np.count_nonzero(dx < -band_mm) * vox_ml
    minority = min(left, right)
    total = left + right
    return bool(total > 0 and minority >= min_ml and minority >= min_fraction * total)


# --- aggregator ---------------------------------------------------------------------------------

def compute_qc_flags(*, frame_times, tissue_curve, input_functions: dict, brain_mask,
                     hypoperfused_mask, affine, hypoperfused_curve=None, noise_sd=None,
                     framewise_displacement=None) -> list[str]:
    """Every raised QC flag of one session, in the order of :data:`QC_FLAG_RULES`.

    Parameters
    ----------
    frame_times : array_like (T,)
        Frame onsets, s.
    tissue_curve : array_like (T,)
        Mean concentration of normally perfused tissue (tissue with Tmax < 4 s; the whole brain
        when that is empty), baseline 0.
    input_functions : dict
        The input-function record: ``aif`` (T,), ``vof`` ((T,) or None), ``vof_complete``
        (bool or None) and optionally ``aif_quality`` (gamma-fit R^2).
    brain_mask, hypoperfused_mask : ndarray of bool (X, Y, Z)
        Brain and Tmax > 6 s masks in the perfusion grid (slab axis last).
    affine : ndarray (4, 4)
        Voxel-to-world (RAS, mm) of that grid.
    hypoperfused_curve : array_like (T,), optional
        Mean concentration of the Tmax > 6 s tissue (None when there is none).
    noise_sd : float, optional
        Single-voxel noise SD of the deconvolved concentration (:func:`voxel_noise_sd`); without
        it ``low_snr`` is not evaluated.
    framewise_displacement : array_like (T,), optional
        mm per frame; without it ``motion`` is not evaluated.
    """
    vs = voxel_sizes(affine)
    vof = input_functions.get("vof")
    vof_complete = input_functions.get("vof_complete")
    raised = {
        "motion": motion(framewise_displacement, vs),
        "truncated_bolus": truncated_bolus(frame_times, tissue_curve, hypoperfused_curve,
                                           vof_complete if _usable(vof) else None),
        "poor_aif": poor_aif(frame_times, input_functions["aif"], tissue_curve,
                             input_functions.get("aif_quality")),
        "no_vof": no_vof(vof, vof_complete),
        "low_snr": low_snr(tissue_curve, noise_sd),
        "limited_coverage": limited_coverage(brain_mask),
        "lesion_at_slab_edge": lesion_at_slab_edge(hypoperfused_mask, vs),
        "bilateral_deficit": bilateral_deficit(hypoperfused_mask, brain_mask, affine),
    }
    return [flag for flag in QC_FLAGS if raised[flag]]



def session_qc(conc, found, input_functions: dict, frame_times,
               framewise_displacement=None) -> dict:
    """Mean concentration curves of normal and hypoperfused tissue (for the report) and the QC
    flags of one session (:func:`compute_qc_flags`).

    ``conc`` is the concentration ``(X, Y, Z, T)`` the maps were fitted to, ``found`` the session's
    :class:`strokeperf.lesions.Hypoperfusion`, ``input_functions`` the input-function record.
    Returns ``{"curves": {"tissue_normal": list, "tissue_hypoperfused": list or None},
    "qc_flags": [...]}``.
    """
    curves = {
        "tissue_normal": conc[found.reference].mean(axis=0).tolist(),
        "tissue_hypoperfused": conc[found.hypoperfused].mean(axis=0).tolist()
        if found.hypoperfused.any() else None,
    }
    flags = compute_qc_flags(
        frame_times=np.asarray(frame_times, dtype=float),
        tissue_curve=np.asarray(curves["tissue_normal"]),
        input_functions=input_functions,
        brain_mask=found.brain, hypoperfused_mask=found.hypoperfused, affine=found.affine,
        hypoperfused_curve=(None if curves["tissue_hypoperfused"] is None
                            else np.asarray(curves["tissue_hypoperfused"])),
        noise_sd=voxel_noise_sd(conc, found.tissue),
        framewise_displacement=(None if framewise_displacement is None
                                else np.asarray(framewise_displacement, dtype=float)))
    return {"curves": curves, "qc_flags": flags}

#: Rules of QC flags raised by the workflows beyond :data:`QC_FLAG_RULES` (not computed
#: by :func:`compute_qc_flags`).
WORKFLOW_QC_RULES = {
    "no_diffusion": "The MRI session has no DWI or ADC, so there is no ischemic core: core, "
                    "mismatch and the trial profiles are n/a.",
    "normalisation_failed": "Registration to the template failed (--normalise), so this session "
                            "has no template-space outputs and is left out of the lesion-frequency "
                            "maps; its perfusion results are unaffected.",
}
#: The one-sentence rule of every QC flag a session can carry (computed or raised by a workflow).
ALL_QC_RULES = {**QC_FLAG_RULES, **WORKFLOW_QC_RULES}
