"""From a raw perfusion series to contrast-agent concentration: bolus timing, conversion, denoising.

Array in, array out; 4D series are ``(X, Y, Z, T)`` with the time axis last, frame times in seconds
from the scan start (irregular sampling allowed), masks are boolean ``(X, Y, Z)``.

- CT: iodine concentration is proportional to the enhancement in Hounsfield units over the
  pre-contrast baseline (Axel 1980, Radiology 137:679; Konstas et al. 2009, AJNR 30:662), so the
  concentration is delta-HU.
- DSC-MRI: the change in transverse relaxation rate is proportional to the gadolinium concentration,
  ``delta_R2* = -ln(S / S0) / TE`` in 1/s (Rosen et al. 1990, Magn Reson Med 14:249; Østergaard et
  al. 1996, Magn Reson Med 36:715).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import integrate, ndimage

from strokeperf.errors import DataError
from strokeperf.timecurves import (FWHM_PER_SIGMA, MAD_TO_SD, check_frame_times, noise_sd,
                                   series_and_mask, smooth3)

#: Fewest frames a perfusion series can have and still show baseline, upslope, peak and downslope.
MIN_FRAMES = 5
#: Fewest pre-contrast frames needed to estimate the baseline (CT delta-HU / DSC S0). Two is the
#: least that averages noise at all; consensus protocols ask for several seconds of baseline
#: (Wintermark et al. 2008, AJNR 29:e23).
MIN_BASELINE_FRAMES = 2
#: The bolus peak must exceed the baseline by this many noise standard deviations to count as an
#: enhancement (Rose criterion of detectability, Rose 1948, J Opt Soc Am 38:196).
ENHANCEMENT_SNR = 5.0
#: Fraction of the baseline-to-peak enhancement that marks the bolus arrival (first-pass rise).
ARRIVAL_FRACTION = 0.10
#: A peak is "captured" when the curve falls after it by at least this fraction of the enhancement
#: before the scan ends; a curve still at its maximum in the last frames gives no peak height,
#: no first-pass area and no Tmax.
PEAK_DROP_FRACTION = 0.10
#: Noise multiples added to the thresholds above so that noise alone cannot cross them.
NOISE_MARGIN_SD = 3.0
#: Default spatial smoothing of CT perfusion before deconvolution, FWHM in mm. Measured
#: (benchmarks/speed.py): on 1.5 x 1.5 x 5 mm voxels it lowers 10 HU white noise to 1.8 HU, the
#: "few HU" at which oSVD Tmax stays within about 1 s of truth for dispersed boluses; about the
#: 4-6 mm used by CTP software. Not yet tuned against lesion-edge blurring on the phantom.
DENOISE_FWHM_MM = 5.0
#: Leakage correction: voxels whose first-pass K2 lies more than this many robust SDs (1.4826 MAD,
#: Rousseeuw & Croux 1993) from the median K2 are taken as enhancing (leaky) and left out of the
#: reference curve of non-enhancing tissue in the second pass (Boxerman et al. 2006 average the
#: non-enhancing voxels defined on post-contrast T1 images, which a perfusion series alone lacks).
LEAKAGE_OUTLIER_SD = 3.0
#: Voxels per chunk in the leakage fit ((chunk, T) float64 work arrays of a few MB).
LEAKAGE_CHUNK = 65536
#: Smallest S / S0 accepted in the DSC conversion: a 1000-fold signal drop is far beyond any
#: real bolus (delta-R2* <= 6.9 / TE), so smaller ratios are noise floor or zero-filled voxels.
MIN_SIGNAL_RATIO = 1e-3


@dataclass(frozen=True)
class BolusTiming:
    """Timing of the contrast bolus in an enhancing curve.

    Attributes
    ----------
    baseline_end : int
        Index one past the last pre-contrast frame (frames ``[0, baseline_end)`` are baseline).
    arrival_s : float
        Time (s, scan clock) at which the curve first rises ``ARRIVAL_FRACTION`` of the way from
        baseline to peak; NaN when no enhancement was found.
    peak_s : float
        Time (s, scan clock) of the curve's maximum; NaN when no enhancement was found.
    captured : bool
        True when there is a baseline, a clear enhancement and a peak followed by a downslope.
    reason : str
        Why the bolus is not captured (empty when ``captured``).
    """

    baseline_end: int
    arrival_s: float
    peak_s: float
    captured: bool
    reason: str = ""

    def to_record(self) -> dict:
        """The JSON-able record that the workflow passes between tasks (a found bolus)."""
        return {"baseline_end": int(self.baseline_end), "arrival_s": float(self.arrival_s),
                "peak_s": float(self.peak_s)}


def detect_bolus(curve, frame_times) -> BolusTiming:
    """Find the pre-contrast baseline, the bolus arrival and the peak of an enhancing curve.

    Works on a whole-brain mean curve (raw HU or concentration) or on an AIF; for DSC pass an
    enhancing curve (delta-R2* or the negated signal). The curve is smoothed over three frames; the
    noise SD is estimated robustly from the frame differences (:func:`noise_sd`). The baseline level
    is the minimum before the peak; the enhancement is peak minus baseline; the arrival is where the
    curve crosses ``ARRIVAL_FRACTION`` of the enhancement (at least ``NOISE_MARGIN_SD`` noise SDs).
    The bolus is not captured when (checked in this order) the enhancement is below
    ``ENHANCEMENT_SNR`` noise SDs, fewer than ``MIN_BASELINE_FRAMES`` frames precede the rise, or the
    curve does not fall by ``PEAK_DROP_FRACTION`` of the enhancement after its peak.

    Parameters
    ----------
    curve : array_like, shape (T,)
    frame_times : array_like, shape (T,)
        Frame times in seconds, strictly increasing (irregular sampling allowed).

    Returns
    -------
    BolusTiming

    Examples
    --------
    >>> import numpy as np
    >>> from strokeperf.kinetics import gamma_variate
    >>> t = np.arange(40.0)
    >>> timing = detect_bolus(30 + gamma_variate(t, 8.0, 3.0, 1.5, peak=20.0), t)
    >>> timing.captured, timing.baseline_end >= 6
    (True, True)
    """
    y = np.asarray(curve, dtype=float)
    if y.ndim != 1:
        raise DataError(f"bolus detection needs one curve, got shape {y.shape}")
    t = check_frame_times(frame_times, y.size)
    if y.size < MIN_FRAMES:
        return BolusTiming(0, np.nan, np.nan, False, f"only {y.size} frames (need {MIN_FRAMES})")
    if not np.all(np.isfinite(y)):
        return BolusTiming(0, np.nan, np.nan, False, "the curve contains NaN or infinite values")

    sd = float(noise_sd(y))
    # A noise-free curve has sd 0; keep a floor at the float resolution of its values.
    sd = max(sd, 1e-9 * (float(np.max(np.abs(y))) + 1.0))
    sd_smooth = sd / np.sqrt(3.0)
    ys = smooth3(y)
    i_peak = int(np.argmax(ys))
    base = float(np.min(ys[: i_peak + 1]))
    rise = float(ys[i_peak]) - base
    if rise < ENHANCEMENT_SNR * sd:
        return BolusTiming(
            0, np.nan, np.nan, False,
            f"no contrast enhancement (rise {rise:.3g} is below {ENHANCEMENT_SNR:g} x noise SD "
            f"{sd:.3g})",
        )

    level = base + max(ARRIVAL_FRACTION * rise, NOISE_MARGIN_SD * sd_smooth)
    below = np.flatnonzero(ys[:i_peak] <= level)
    if below.size == 0:
        i_before, arrival = -1, float(t[0])
    else:
        i_before = int(below[-1])
        y0, y1 = ys[i_before], ys[i_before + 1]
        frac = (level - y0) / (y1 - y0) if y1 > y0 else 0.0
        arrival = float(t[i_before] + frac * (t[i_before + 1] - t[i_before]))
    # The 3-frame average lets the rise leak one frame early; the frame at the crossing is not
    # trusted as baseline.
    baseline_end = max(i_before, 0)
    peak_s = float(t[i_peak])
    if baseline_end < MIN_BASELINE_FRAMES:
        return BolusTiming(
            baseline_end, arrival, peak_s, False,
            f"contrast already arriving in the first frames (rise at {arrival:.1f} s; at least "
            f"{MIN_BASELINE_FRAMES} pre-contrast frames are needed)",
        )
    drop = float(ys[i_peak] - np.min(ys[i_peak:]))
    if drop < max(PEAK_DROP_FRACTION * rise, NOISE_MARGIN_SD * sd_smooth):
        return BolusTiming(
            baseline_end, arrival, peak_s, False,
            f"the curve is still rising or at its peak at the last frame (t = {t[-1]:.1f} s); "
            "the scan ended too early",
        )
    return BolusTiming(baseline_end, arrival, peak_s, True, "")


def require_bolus(curve, frame_times) -> BolusTiming:
    """:func:`detect_bolus`, raising :class:`DataError` ("bolus not captured: ...") when it fails."""
    timing = detect_bolus(curve, frame_times)
    if not timing.captured:
        raise DataError(f"bolus not captured: {timing.reason}")
    return timing


def _check_baseline(baseline_end: int, n_frames: int) -> int:
    baseline_end = int(baseline_end)
    if not 1 <= baseline_end < n_frames:
        raise DataError(
            f"baseline must cover 1 to {n_frames - 1} frames, got baseline_end={baseline_end}"
        )
    return baseline_end


def ct_concentration(hu, frame_times, baseline_end: int, mask=None) -> np.ndarray:
    """Delta-HU: each frame minus the voxel's mean over the pre-contrast frames.

    Iodine concentration is proportional to the enhancement in HU (Axel 1980; Konstas et al. 2009).

    Parameters
    ----------
    hu : ndarray, shape (..., T)
        CT perfusion series in HU (any numeric dtype).
    frame_times : array_like, shape (T,)
        Frame times in seconds (checked against ``T``).
    baseline_end : int
        Frames ``[0, baseline_end)`` are pre-contrast (from :func:`detect_bolus`).
    mask : ndarray of bool, shape (...), optional
        Voxels outside are set to 0.

    Returns
    -------
    ndarray of float32, shape of ``hu``
    """
    hu = np.asarray(hu)
    check_frame_times(frame_times, hu.shape[-1])
    baseline_end = _check_baseline(baseline_end, hu.shape[-1])
    baseline = hu[..., :baseline_end].mean(axis=-1, dtype=np.float64).astype(np.float32)
    delta = hu.astype(np.float32, copy=True)
    delta -= baseline[..., None]
    if mask is not None:
        delta[~np.asarray(mask, dtype=bool)] = 0.0
    return delta


def delta_r2s_from_ratio(signal_ratio, echo_time_s: float) -> np.ndarray:
    """``delta_R2* = -ln(S / S0) / TE`` in 1/s from the signal ratio ``S / S0`` and the echo time
    (s) of a gradient echo (Rosen et al. 1990). Ratios are floored at ``MIN_SIGNAL_RATIO``, so zero
    or negative signal gives a large finite value."""
    return -np.log(np.clip(signal_ratio, MIN_SIGNAL_RATIO, None)) / echo_time_s


def dsc_concentration(signal, echo_time_s: float, baseline_end: int) -> np.ndarray:
    """Delta-R2* in 1/s from a DSC-MRI (gradient-echo) magnitude series.

    ``delta_R2*(t) = -ln(S(t) / S0) / TE`` with ``S0`` the mean of the pre-contrast frames
    (Rosen et al. 1990; Østergaard et al. 1996). Ratios are floored at ``MIN_SIGNAL_RATIO`` so zero
    or negative signal gives a large finite value; voxels with ``S0 <= 0`` (background) are 0.

    Parameters
    ----------
    signal : ndarray, shape (..., T)
    echo_time_s : float
        Echo time TE in seconds (BIDS ``EchoTime``).
    baseline_end : int
        Frames ``[0, baseline_end)`` are pre-contrast.

    Returns
    -------
    ndarray of float32, shape of ``signal``
    """
    s = np.asarray(signal)
    te = float(echo_time_s)
    if not np.isfinite(te) or te <= 0:
        raise DataError(f"echo time must be a positive number of seconds, got {echo_time_s!r}")
    baseline_end = _check_baseline(baseline_end, s.shape[-1])
    s0 = s[..., :baseline_end].mean(axis=-1, dtype=np.float64)
    valid = s0 > 0
    ratio = s.astype(np.float64) / np.where(valid, s0, 1.0)[..., None]
    dr2 = delta_r2s_from_ratio(ratio, te)
    dr2[~valid] = 0.0
    return dr2.astype(np.float32)


def _leakage_design(reference_curve: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(T, 2) design ``[C_ref(t), -integral_0^t C_ref]`` of the Boxerman-Weisskoff model."""
    integral = integrate.cumulative_trapezoid(reference_curve, t, initial=0.0)
    return np.column_stack([reference_curve, -integral])


def _fit_leakage(flat, index, pinv):
    """(K1, K2) for the rows ``index`` of ``flat`` (n, T), chunked; returns (n, 2) float64."""
    out = np.empty((index.size, 2))
    for start in range(0, index.size, LEAKAGE_CHUNK):
        rows = flat[index[start:start + LEAKAGE_CHUNK]].astype(np.float64)
        out[start:start + LEAKAGE_CHUNK] = rows @ pinv.T
    return out


def correct_leakage(delta_r2s, frame_times, mask, reference_mask=None):
    """Contrast-leakage correction of DSC delta-R2* curves (Boxerman, Schmainda & Weisskoff 2006,
    AJNR 27:859).

    Where the blood-brain barrier leaks, extravasated gadolinium shortens T1 (signal rises, delta-R2*
    is underestimated) or adds T2* effects (overestimated). Each voxel's curve is modelled as

        delta_R2*(t) = K1 * C_ref(t) - K2 * integral_0^t C_ref(t') dt'

    with ``C_ref`` the mean curve of non-enhancing tissue; K1 and K2 are fitted by linear least
    squares (one pseudo-inverse for all voxels, applied in chunks) and the corrected curve is
    ``delta_R2*(t) + K2 * integral_0^t C_ref``. ``C_ref`` is first the mean over ``reference_mask``;
    voxels whose K2 is an outlier (more than ``LEAKAGE_OUTLIER_SD`` robust SDs from the median)
    are then removed from it and the reference re-fitted, twice, before the final fit.

    Parameters
    ----------
    delta_r2s : ndarray (X, Y, Z, T)
        delta-R2* in 1/s (:func:`dsc_concentration`).
    frame_times : array_like (T,)
        Seconds (irregular sampling allowed: trapezoid integral on the frame times).
    mask : ndarray of bool (X, Y, Z)
        Voxels corrected (typically the brain); outside, curves are returned unchanged, K2 = 0.
    reference_mask : ndarray of bool (X, Y, Z), optional
        Candidate non-enhancing tissue for ``C_ref`` (default ``mask``; CSF and vessels are best
        excluded).

    Returns
    -------
    corrected : ndarray of float32 (X, Y, Z, T), 1/s
    k2 : ndarray of float32 (X, Y, Z), 1/s (positive: T1-dominant leakage; negative: T2*-dominant)
    """
    conc, region = series_and_mask(delta_r2s, mask, "leakage correction needs")
    t = check_frame_times(frame_times, conc.shape[-1])
    ref = region if reference_mask is None else np.asarray(reference_mask, dtype=bool) & region
    flat = conc.reshape(-1, conc.shape[-1])
    index = np.flatnonzero(region)
    ref_index = np.flatnonzero(ref)
    if ref_index.size == 0:
        raise DataError("leakage correction: the reference (non-enhancing tissue) mask is empty")
    keep = np.ones(ref_index.size, dtype=bool)
    for _ in range(2):
        reference_curve = flat[ref_index[keep]].mean(axis=0, dtype=np.float64)
        design = _leakage_design(reference_curve, t)
        if np.linalg.matrix_rank(design) < 2:
            raise DataError("leakage correction: the reference curve does not enhance")
        pinv = np.linalg.pinv(design)
        k_ref = _fit_leakage(flat, ref_index, pinv)[:, 1]
        centre = np.median(k_ref)
        spread = MAD_TO_SD * np.median(np.abs(k_ref - centre))
        keep = np.abs(k_ref - centre) <= LEAKAGE_OUTLIER_SD * spread if spread > 0 else keep
        if not keep.any():
            keep = np.ones(ref_index.size, dtype=bool)
    reference_curve = flat[ref_index[keep]].mean(axis=0, dtype=np.float64)
    design = _leakage_design(reference_curve, t)
    k2_values = _fit_leakage(flat, index, np.linalg.pinv(design))[:, 1]
    corrected = conc.astype(np.float32, copy=True)
    cflat = corrected.reshape(-1, conc.shape[-1])
    integral = -design[:, 1]
    for start in range(0, index.size, LEAKAGE_CHUNK):
        rows = index[start:start + LEAKAGE_CHUNK]
        cflat[rows] += (k2_values[start:start + LEAKAGE_CHUNK, None] * integral).astype(np.float32)
    k2 = np.zeros(region.shape, dtype=np.float32)
    k2[region] = k2_values
    return corrected, k2


def denoise(conc, mask, voxel_size_mm, fwhm_mm: float = DENOISE_FWHM_MM) -> np.ndarray:
    """Smooth every frame with a Gaussian restricted to the mask (normalised convolution).

    ``out = G * (conc . mask) / G * mask`` inside the mask, 0 outside (Knutsson & Westin 1993,
    CVPR 515: normalised convolution): skull, CSF and air outside the mask do not bleed into brain
    voxels, and voxels at the brain edge are not darkened. Frame by frame, so memory stays at a few
    3D arrays beyond the output.

    Parameters
    ----------
    conc : ndarray, shape (X, Y, Z, T)
        Concentration (delta-HU or delta-R2*).
    mask : ndarray of bool, shape (X, Y, Z)
    voxel_size_mm : sequence of 3 floats
        Voxel edge lengths in mm.
    fwhm_mm : float
        Full width at half maximum of the Gaussian in mm (isotropic); 0 returns a masked copy.

    Returns
    -------
    ndarray of float32, shape (X, Y, Z, T)
    """
    conc, mask = series_and_mask(conc, mask, "denoise needs")
    voxel = np.asarray(voxel_size_mm, dtype=float)[:3]
    out = np.zeros(conc.shape, dtype=np.float32)
    if fwhm_mm <= 0:
        out[mask] = conc[mask]
        return out
    sigma_vox = fwhm_mm / FWHM_PER_SIGMA / voxel
    weight = mask.astype(np.float32)
    norm = ndimage.gaussian_filter(weight, sigma_vox, mode="constant")
    inside = mask & (norm > 0)
    inv_norm = np.zeros_like(norm)
    inv_norm[inside] = 1.0 / norm[inside]
    frame = np.empty(mask.shape, dtype=np.float32)
    for k in range(conc.shape[-1]):
        np.multiply(conc[..., k], weight, out=frame, casting="unsafe")
        smoothed = ndimage.gaussian_filter(frame, sigma_vox, mode="constant")
        out[..., k] = smoothed * inv_norm
    return out
