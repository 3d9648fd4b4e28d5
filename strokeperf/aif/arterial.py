"""Automatic arterial input function (AIF) selection on concentration curves, the
:class:`InputFunction` record, its first-pass fit, and the AIF of a user's mask.

Array in, array out: ``conc`` is a 4D concentration series ``(X, Y, Z, T)`` (baseline 0, e.g. the
denoised delta-HU), frame times in seconds, masks boolean ``(X, Y, Z)``. Voxel indices returned are
``(K, 3)`` integer array indices into the first three axes.

AIF (after Rempp et al. 1994, Radiology 193:637; Mouridsen et al. 2006, Magn Reson Med 55:524;
Peruzzo et al. 2011, Comput Methods Programs Biomed 104:e148): an artery enhances much more than
tissue, arrives early, peaks before the tissue and is narrow. Candidates must

1. peak at least ``AIF_MIN_PEAK_RATIO`` times higher than the mean tissue curve;
2. reach their maximum before the mean tissue curve does (veins, including the sagittal sinus,
   peak after it; this is what keeps the sinus out even when it enhances more than arteries
   blurred by partial volume);
3. not dip below baseline by more than ``MAX_NEGATIVE_DIP`` of their peak, and be among the
   ``ROUGHNESS_QUANTILE`` smoothest curves (Mouridsen's irregularity index);
4. have an early first moment (the earlier half of the survivors, Mouridsen's choice of the
   cluster with the lowest first moment).

The fraction filters 3 and 4 never leave fewer than ``n_voxels`` candidates.

The ``n_voxels`` survivors with the highest peak per width (steep, narrow boluses) are averaged.
These rules select the CT AIF (:func:`select_ct_aif`); the DSC-MRI AIF applies them after its own
noise-floor rule (:mod:`strokeperf.aif.mr`), the VOF its venous variant
(:mod:`strokeperf.aif.venous`).

Uncensored arterial input functions (CT, unsaturated MR, a user's mask) are re-baselined on their
own pre-contrast frames (:func:`rebaseline`): the series baseline ends where the brain's bolus
arrives, and arteries fill a frame or two earlier, so their first enhanced frames would otherwise
be subtracted from the whole curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import optimize, special

from strokeperf import kinetics
from strokeperf.concentration import MIN_BASELINE_FRAMES, detect_bolus
from strokeperf.errors import DataError, InputError
from strokeperf.timecurves import check_frame_times, fwhm, series_and_mask, smooth3

#: Voxels averaged into the AIF. Mouridsen et al. 2006 average their final cluster of a few to
#: ten voxels; more voxels lower the noise, fewer keep partial volume low.
AIF_N_VOXELS = 8
#: An AIF candidate peaks at least this many times higher than the mean tissue curve. Arterial
#: blood holds 100 % blood against about 4 % in grey matter (Leenders et al. 1990, Brain 113:27),
#: so even a voxel a quarter filled by an artery passes; tissue voxels do not.
AIF_MIN_PEAK_RATIO = 3.0
#: Largest dip below baseline, as a fraction of the peak, of a usable curve (noise, motion or beam
#: hardening artefacts make larger negative excursions).
MAX_NEGATIVE_DIP = 0.25
#: Fraction of the roughest candidates removed (Mouridsen et al. 2006 remove the 25 % with the
#: highest irregularity index).
ROUGHNESS_QUANTILE = 0.75
#: After the peak, the first pass is taken to end where the curve falls below this fraction of
#: its peak; recirculation follows (Rempp et al. 1994 fit the first pass above about 30-40 %).
FIRST_PASS_CUTOFF = 0.3
#: A curve is complete when it falls below this fraction of its peak before the scan ends (the
#: downslope's half maximum is observed, so the first-pass area can be measured or extrapolated).
COMPLETE_FRACTION = 0.5
#: A first-pass gamma-variate fit with R^2 below this is not trusted for areas (the trapezoid
#: area of the measured curve is used instead).
MIN_FIT_R2 = 0.9
#: Voxels per chunk when computing candidate features.
FEATURE_CHUNK = 65536


@dataclass
class InputFunction:
    """An averaged arterial input (or venous output) function.

    Attributes
    ----------
    curve : ndarray (T,)
        Mean concentration curve of the selected voxels.
    times : ndarray (T,)
        Frame times, s.
    voxels : ndarray (K, 3) of int
        Array indices of the selected voxels.
    peak : float
        Maximum of ``curve`` (concentration units).
    arrival_s, ttp_s, fwhm_s : float
        Bolus arrival (:func:`strokeperf.concentration.detect_bolus`), time to peak and full width at
        half maximum of ``curve`` in s (scan clock; ``fwhm_s`` NaN when the downslope never falls
        below half the peak).
    quality : float
        0-1: R^2 of a gamma-variate fit to the first pass (frames up to where the curve falls
        below ``FIRST_PASS_CUTOFF`` of its peak; Madsen 1992, Phys Med Biol 37:1597). 1 is a clean
        single bolus; noise, truncation or a double peak lower it. 0 when the fit fails.
    complete : bool
        The curve falls below ``COMPLETE_FRACTION`` of its peak before the scan ends.
    first_pass_area : float
        Area (concentration x s) of the fitted first-pass gamma variate integrated to infinity
        (free of recirculation and truncation); the trapezoid area of ``curve`` when the fit has
        R^2 < ``MIN_FIT_R2``.
    censored_frames : int
        MR only: frames at which ``curve`` is censored at ``censor_level`` because the arterial
        signal reached the noise floor (0 when unsaturated).
    censor_level : float
        MR only: the delta-R2* (1/s) above which the arterial curve is not observed (NaN when no
        frame is censored).
    censored_fraction : ndarray (T,) or None
        MR only: fraction of the averaged voxels that sit at ``censor_level`` in each frame;
        ``curve`` is a lower bound wherever it is > 0 (None when nothing is censored).
    """

    curve: np.ndarray
    times: np.ndarray
    voxels: np.ndarray
    peak: float
    arrival_s: float
    ttp_s: float
    fwhm_s: float
    quality: float
    complete: bool
    first_pass_area: float = np.nan
    censored_frames: int = 0
    censor_level: float = np.nan
    censored_fraction: np.ndarray | None = None

    def with_curve(self, curve) -> "InputFunction":
        """The same voxels and censoring record with another curve (e.g. a reconstruction), its
        peak, timing, width, fit quality, completeness and first-pass area recomputed."""
        out = curve_input_function(curve, self.times, self.voxels)
        out.censored_frames, out.censor_level = self.censored_frames, self.censor_level
        out.censored_fraction = self.censored_fraction
        return out


def curve_features(curves: np.ndarray, t: np.ndarray):
    """Per-curve features of (n, T) curves: peak, ttp, first moment, width, roughness, dip, area."""
    c = curves.astype(np.float64)
    dt_frame = np.gradient(t)  # frame durations (s), irregular sampling allowed
    k = np.argmax(c, axis=1)
    peak = c[np.arange(c.shape[0]), k]
    ttp = t[k]
    pos = np.clip(c, 0, None)
    area = pos @ dt_frame
    with np.errstate(divide="ignore", invalid="ignore"):
        m1 = (pos * t) @ dt_frame / area
        # Time above half maximum: a width that needs no crossing search and ignores noise spikes.
        width = (c >= 0.5 * peak[:, None]) @ dt_frame
        d2 = np.diff(c, n=2, axis=1)
        rough = np.sum(d2 * d2, axis=1) / (peak * peak)  # Mouridsen's irregularity, scale-free
        dip = -np.min(c, axis=1) / peak
    return peak, ttp, m1, width, rough, dip, area


def keep_lowest(values, ok, fraction, minimum):
    """Restrict ``ok`` to its ``fraction`` lowest ``values``, but never below ``minimum`` voxels."""
    idx = np.flatnonzero(ok)
    n_keep = min(idx.size, max(int(np.ceil(fraction * idx.size)), minimum))
    keep = np.zeros_like(ok)
    keep[idx[np.argsort(values[idx], kind="stable")[:n_keep]]] = True
    return keep


def mean_curve(flat: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Mean (T,) float64 of the rows ``index`` of ``flat`` (N, T), summed in chunks of
    ``FEATURE_CHUNK``: the tissue reference curve of a search mask."""
    total = np.zeros(flat.shape[1])
    for start in range(0, index.size, FEATURE_CHUNK):
        total += flat[index[start:start + FEATURE_CHUNK]].sum(axis=0, dtype=np.float64)
    return total / max(index.size, 1)


def candidate_features(flat: np.ndarray, index: np.ndarray, t: np.ndarray):
    """:func:`curve_features` of the rows ``index`` of ``flat`` (N, T), in chunks of
    ``FEATURE_CHUNK``."""
    parts = [curve_features(flat[index[s:s + FEATURE_CHUNK]], t)
             for s in range(0, index.size, FEATURE_CHUNK)]
    return [np.concatenate(p) for p in zip(*parts)]


def _gamma_area(peak, alpha, beta):
    """Area of ``kinetics.gamma_variate`` with the given peak: peak beta e^a a^-a Gamma(a+1)."""
    return float(peak * beta * np.exp(alpha - alpha * np.log(alpha) + special.gammaln(alpha + 1)))


def fit_first_pass(curve, times):
    """Fit ``kinetics.gamma_variate`` to the first pass of a bolus curve (Madsen 1992).

    The first pass runs from the start to where the curve, after its peak, falls below
    ``FIRST_PASS_CUTOFF`` of the peak. Returns ``(params, r2)`` with ``params = (arrival, alpha,
    beta, peak)`` (s, -, s, concentration) or ``(None, 0.0)`` when the fit fails.
    """
    y = np.asarray(curve, dtype=float)
    t = np.asarray(times, dtype=float)
    k = int(np.argmax(y))
    peak = y[k]
    if peak <= 0 or k == 0:
        return None, 0.0
    after = np.flatnonzero(y[k:] < FIRST_PASS_CUTOFF * peak)
    end = k + (int(after[0]) + 1 if after.size else y.size - k)
    tt, yy = t[:end], y[:end]
    timing = detect_bolus(y, t)
    arrival0 = timing.arrival_s if np.isfinite(timing.arrival_s) else t[max(k - 3, 0)]
    arrival0 = min(arrival0 - 0.5 * (t[k] - arrival0), t[k] - 0.5)
    rise = max(t[k] - arrival0, 0.5)
    alpha0 = 3.0
    p0 = (arrival0, alpha0, rise / alpha0, peak)
    lower = (t[0] - rise - 10.0, 0.1, 0.05, 0.2 * peak)
    upper = (t[k], 50.0, 60.0, 3.0 * peak)
    try:
        params, _ = optimize.curve_fit(kinetics.gamma_variate, tt, yy, p0=p0,
                                       bounds=(lower, upper), maxfev=2000)
    except (RuntimeError, ValueError):
        return None, 0.0
    resid = yy - kinetics.gamma_variate(tt, *params)
    ss_tot = np.sum((yy - yy.mean()) ** 2)
    r2 = 1.0 - np.sum(resid ** 2) / ss_tot if ss_tot > 0 else 0.0
    return tuple(float(p) for p in params), float(np.clip(r2, 0.0, 1.0))


def curve_input_function(curve, t, voxels) -> InputFunction:
    """The InputFunction of one already averaged ``curve`` of ``voxels`` (K, 3)."""
    out = mean_input_function(np.asarray(curve, dtype=float)[None, :], np.array([0]), (1,), t)
    out.voxels = voxels
    return out


def mean_input_function(flat, index, shape, t) -> InputFunction:
    """The InputFunction of the mean of the rows ``index`` of ``flat`` (N, T), a series of
    ``shape`` (X, Y, Z) flattened in C order, on frame times ``t`` (s)."""
    curve = flat[index].astype(np.float64).mean(axis=0)
    voxels = np.column_stack(np.unravel_index(index, shape)).astype(int)
    k = int(np.argmax(curve))
    peak = float(curve[k])
    smooth = smooth3(curve)
    complete = bool(np.any(smooth[k:] < COMPLETE_FRACTION * peak))
    params, r2 = fit_first_pass(curve, t)
    if params is not None and r2 >= MIN_FIT_R2:
        area = _gamma_area(params[3], params[1], params[2])
    else:
        area = float(np.trapezoid(np.clip(curve, 0, None), t))
    timing = detect_bolus(curve, t)
    return InputFunction(
        curve=curve, times=t.copy(), voxels=voxels, peak=peak, arrival_s=float(timing.arrival_s),
        ttp_s=float(t[k]), fwhm_s=fwhm(curve, t), quality=r2, complete=complete,
        first_pass_area=area,
    )


def candidate_curves(conc, frame_times, candidate_mask, exclude_mask):
    """``(flat, index, t)``: the series as (N, T) rows, the flat indices of the candidate voxels
    (``candidate_mask`` minus ``exclude_mask``) and the checked frame times (s)."""
    conc, mask = series_and_mask(conc, candidate_mask, "input-function selection needs")
    t = check_frame_times(frame_times, conc.shape[-1])
    if exclude_mask is not None:
        mask = mask & ~np.asarray(exclude_mask, dtype=bool)
    flat = conc.reshape(-1, conc.shape[-1])
    index = np.flatnonzero(mask)
    return flat, index, t


def select_ct_aif(conc, frame_times, candidate_mask, n_voxels: int = AIF_N_VOXELS,
                  exclude_mask=None) -> InputFunction:
    """CT AIF: the arterial rules of the module docstring (:func:`select_arterial`), the average
    re-baselined on its own pre-contrast frames (:func:`rebaseline`).

    Parameters as :func:`strokeperf.aif.select_aif`.

    Raises
    ------
    DataError
        When no voxel passes the arterial criteria.
    """
    return rebaseline(select_arterial(conc, frame_times, candidate_mask, n_voxels, exclude_mask))


def candidates_and_tissue(conc, frame_times, candidate_mask, exclude_mask):
    """Candidate curves (``flat``, ``index``, ``t``) and the peak and time to peak of the mean
    tissue curve they are compared with; raises DataError for an empty or unenhanced search mask."""
    flat, index, t = candidate_curves(conc, frame_times, candidate_mask, exclude_mask)
    if index.size == 0:
        raise DataError("no usable arterial input function: the search mask is empty")
    tissue = mean_curve(flat, index)
    tissue_peak = float(np.max(tissue))
    if not tissue_peak > 0:
        raise DataError("no usable arterial input function: the brain does not enhance")
    return flat, index, t, tissue_peak, float(t[np.argmax(smooth3(tissue))])


def select_arterial(conc, frame_times, candidate_mask, n_voxels, exclude_mask,
                    allowed=None) -> InputFunction:
    """The arterial rules of the module docstring; ``allowed`` (X, Y, Z) bool, if given, further
    restricts the candidates (but not the tissue reference, the mean of the search mask)."""
    flat, index, t, tissue_peak, tissue_ttp = candidates_and_tissue(conc, frame_times,
                                                                    candidate_mask, exclude_mask)
    peak, ttp, m1, width, rough, dip, _ = candidate_features(flat, index, t)
    ok = (peak >= AIF_MIN_PEAK_RATIO * tissue_peak) & (ttp < tissue_ttp) & (dip <= MAX_NEGATIVE_DIP)
    ok &= np.isfinite(m1) & (width > 0)
    if allowed is not None:
        ok &= np.asarray(allowed, dtype=bool).ravel()[index]
    if not ok.any():
        raise DataError(
            f"no usable arterial input function: no voxel enhances {AIF_MIN_PEAK_RATIO:g}x more "
            f"than the brain mean and peaks before it (brain peak at {tissue_ttp:.1f} s)"
            + ("" if allowed is None else " with an unsaturated signal")
        )
    ok = keep_lowest(rough, ok, ROUGHNESS_QUANTILE, n_voxels)
    ok = keep_lowest(m1, ok, 0.5, n_voxels)
    survivors = np.flatnonzero(ok)
    score = peak[survivors] / width[survivors]
    best = survivors[np.argsort(-score, kind="stable")[:n_voxels]]
    return mean_input_function(flat, index[np.sort(best)], np.asarray(conc).shape[:3], t)


def rebaseline(fn: InputFunction) -> InputFunction:
    """``fn`` with the mean of its own pre-contrast frames subtracted (CT, or any uncensored curve).

    The series baseline ends where the brain's median curve rises; an artery fills one or two
    frames earlier, and those frames, counted as baseline, shift the whole arterial curve down (by
    3 HU on a 3 x 3 x 6 mm phantom, a negative tail that cut CBV by 7 %). The curve's own bolus
    timing (:func:`strokeperf.concentration.detect_bolus`) gives its pre-contrast frames; with fewer
    than ``MIN_BASELINE_FRAMES`` of them, or a censored (saturated MR) curve, ``fn`` is returned
    unchanged.
    """
    curve = np.asarray(fn.curve, dtype=float)
    end = detect_bolus(curve, fn.times).baseline_end
    if fn.censored_frames or end < MIN_BASELINE_FRAMES:
        return fn
    return fn.with_curve(curve - curve[:end].mean())


def aif_from_mask(conc, frame_times, mask) -> InputFunction:
    """The AIF as the mean concentration curve of user-chosen voxels (issue 3: an AIF given as a
    mask, e.g. a previous run's ``desc-<mod>AIF_mask`` edited by hand).

    No selection rule is applied: the user's voxels are taken as they are. The curve must still
    show a bolus (:func:`strokeperf.concentration.detect_bolus`: a peak above the baseline noise
    followed by a downslope), since deconvolution with a flat or noise-only curve is meaningless.

    Parameters
    ----------
    conc : ndarray (X, Y, Z, T)
        Concentration, baseline 0 (delta-HU or delta-R2*).
    frame_times : array_like (T,)
        Seconds.
    mask : ndarray (X, Y, Z)
        Non-zero at the AIF voxels.

    Raises
    ------
    DataError
        The mask does not match the series' grid, is empty, or its mean curve shows no bolus.
    """
    conc = np.asarray(conc)
    mask = np.asarray(mask)
    if conc.ndim != 4 or mask.shape != conc.shape[:3]:
        raise DataError(f"AIF mask has shape {mask.shape}, the perfusion series {conc.shape[:3]}")
    mask = mask != 0
    t = check_frame_times(frame_times, conc.shape[-1])
    index = np.flatnonzero(mask)
    if index.size == 0:
        raise DataError("AIF mask is empty (no non-zero voxel)")
    flat = conc.reshape(-1, conc.shape[-1])
    aif = mean_input_function(flat, index, conc.shape[:3], t)
    timing = detect_bolus(aif.curve, t)
    if not timing.captured:
        raise DataError(f"the mean curve of the {index.size} AIF mask voxels shows no usable "
                        f"bolus: {timing.reason}")
    return rebaseline(aif)


def read_aif_mask(path, shape, affine) -> np.ndarray:
    """Read a user AIF mask (NIfTI) that must lie on the perfusion grid (``shape``, ``affine``).

    Returns a boolean (X, Y, Z) array. Raises :class:`strokeperf.errors.InputError` naming ``path``
    when the file cannot be read or its grid differs (shape, or affine beyond 1e-3 mm).
    """
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise InputError(path, f"cannot read the AIF mask: {exc}") from exc
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.shape != tuple(shape) or not np.allclose(img.affine, affine, atol=1e-3):
        raise InputError(path, f"AIF mask grid {data.shape} does not match the perfusion series "
                               f"grid {tuple(shape)} (shape and affine must be identical; use the "
                               f"AIF mask written by strokeperf for this session as a template)")
    return data != 0
