"""Automatic arterial input function (AIF) and venous output function (VOF) selection.

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

MR (DSC delta-R2*, :func:`select_mr_aif`): the gradient-echo signal of arterial blood falls as
exp(-TE delta-R2*), so at the bolus peak it can reach the noise floor, where the Rician magnitude
no longer follows the signal (Gudbjartsson & Patz 1995, Magn Reson Med 34:910) and delta-R2*
is unmeasurable; the arterial blood delta-R2* is moreover larger and non-linear (Kjolby et al.
2006, Magn Reson Med 56:187; Calamante 2013, Prog Nucl Magn Reson Spectrosc 74:1). Voxels with a
low baseline signal (partial volume with bone or air, susceptibility dropout; below
``MR_MIN_S0_FRACTION`` of the median S0 of the search region) are never candidates.

- Unsaturated bolus: when no arterial voxel reaches the noise floor (``MR_NOISE_FLOOR_SNR`` noise
  SDs), the arterial rules above run on the voxels whose signal stays above it.
- Saturated bolus: every artery carries the same blood, so when the most arterial voxels reach the
  noise floor, the voxels that stay above it hold only a fraction of blood. Their signal is the sum
  of the blood and tissue signals, ``(1 - w) S_tissue + w exp(-TE C_a)``: once the blood signal
  has vanished their delta-R2* is a plateau that follows the tissue curve, and it falls only when
  ``exp(-TE C_a)`` returns near 1, so the "AIF" is broad and late (van Osch et al. 2001, Magn
  Reson Med 45:477 on the partial-volume distortion of DSC input functions). The voxels that
  reach the floor are the ones mostly filled with blood: they follow ``C_a`` up to the level
  ``ln(S0 / floor) / TE``, and only the frames above it are lost. They are the candidates, their
  curves censored at that level (the smallest level among the averaged voxels, so that the noise
  of the floor never enters the average); the arterial rules then choose among them. The number
  of censored frames and, per frame, the fraction of averaged voxels at the level are recorded:
  the curve is a lower bound there, its flat top too broad and too late, which shortens Tmax. The
  DSC workflow fills those frames from the tissue curves
  (:func:`strokeperf.aif_reconstruction.reconstruct_censored_aif`).

VOF: the candidates peaking after the tissue with the largest area (the superior sagittal sinus is
wide enough to be free of partial volume); ``n_voxels`` of them are averaged. Ranking noisy curves
by area and averaging the winners overstates the area (the winner's curse): the winners are the
voxels whose baseline noise happened to be low, which lifts their whole curve (+11 to +14 % on the
10-HU phantom). The VOF is therefore cross-fitted over the two halves of the frames, even and odd,
whose noise is independent: the voxels chosen on the even frames' area give the VOF's odd frames
and vice versa, each half with its own pre-contrast baseline (sample splitting, Cox 1975,
Biometrika 62:441; cross-fitting, Chernozhukov et al. 2018, Econometrics J 21:C1).

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
from strokeperf.timecurves import check_frame_times, fwhm, smooth3

#: Voxels averaged into the AIF. Mouridsen et al. 2006 average their final cluster of a few to
#: ten voxels; more voxels lower the noise, fewer keep partial volume low.
AIF_N_VOXELS = 8
#: Voxels averaged into the VOF (a sinus cross-section holds tens of voxels at 2 mm).
VOF_N_VOXELS = 8
#: An AIF candidate peaks at least this many times higher than the mean tissue curve. Arterial
#: blood holds 100 % blood against about 4 % in grey matter (Leenders et al. 1990, Brain 113:27),
#: so even a voxel a quarter filled by an artery passes; tissue voxels do not.
AIF_MIN_PEAK_RATIO = 3.0
#: Likewise for the VOF candidates (the sinus is a pure blood voxel).
VOF_MIN_PEAK_RATIO = 3.0
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
#: MR AIF: smallest baseline (S0) signal of a candidate, as a fraction of the median S0 of the search
#: region. Partial volume with bone or air and susceptibility dropout lower S0; such voxels are
#: noisy and reach the noise floor first (Calamante 2013).
MR_MIN_S0_FRACTION = 0.5
#: MR AIF: a candidate's lowest signal must stay above this many noise SDs. Below about 3, the
#: Rician magnitude is biased by the noise and no longer tracks the true signal (Gudbjartsson &
#: Patz 1995, Magn Reson Med 34:910), so delta-R2* saturates.
MR_NOISE_FLOOR_SNR = 3.0
#: MR AIF of a saturated bolus: candidates start to enhance within this time (s) of the earliest
#: one. Arteries feeding normal tissue fill within about a second of each other; the sinus, the
#: other vessel whose signal reaches the noise floor, fills only after the capillary bed, several
#: seconds later (its censored onset is still 3 s late on the phantom, where the arteriovenous
#: transit is the shortest of the range drawn). One 1.5-s frame, the usual DSC repetition time.
MR_ARTERIAL_ONSET_WINDOW_S = 1.5
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
        out = _curve_input_function(curve, self.times, self.voxels)
        out.censored_frames, out.censor_level = self.censored_frames, self.censor_level
        out.censored_fraction = self.censored_fraction
        return out


def _features(curves: np.ndarray, t: np.ndarray):
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


def _keep_lowest(values, ok, fraction, minimum):
    """Restrict ``ok`` to its ``fraction`` lowest ``values``, but never below ``minimum`` voxels."""
    idx = np.flatnonzero(ok)
    n_keep = min(idx.size, max(int(np.ceil(fraction * idx.size)), minimum))
    keep = np.zeros_like(ok)
    keep[idx[np.argsort(values[idx], kind="stable")[:n_keep]]] = True
    return keep


def _brain_curve(flat: np.ndarray, index: np.ndarray) -> np.ndarray:
    total = np.zeros(flat.shape[1])
    for start in range(0, index.size, FEATURE_CHUNK):
        total += flat[index[start:start + FEATURE_CHUNK]].sum(axis=0, dtype=np.float64)
    return total / max(index.size, 1)


def _all_features(flat: np.ndarray, index: np.ndarray, t: np.ndarray):
    parts = [_features(flat[index[s:s + FEATURE_CHUNK]], t)
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


def _curve_input_function(curve, t, voxels) -> InputFunction:
    """The InputFunction of one already averaged ``curve`` of ``voxels`` (K, 3)."""
    out = _input_function(np.asarray(curve, dtype=float)[None, :], np.array([0]), (1,), t)
    out.voxels = voxels
    return out


def _input_function(flat, index, shape, t) -> InputFunction:
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


def _candidates(conc, frame_times, candidate_mask, exclude_mask):
    conc = np.asarray(conc)
    mask = np.asarray(candidate_mask, dtype=bool)
    if conc.ndim != 4 or conc.shape[:3] != mask.shape:
        raise DataError(f"input-function selection needs a 4D series and a matching 3D mask, got "
                        f"{conc.shape} and {mask.shape}")
    t = check_frame_times(frame_times, conc.shape[-1])
    if exclude_mask is not None:
        mask = mask & ~np.asarray(exclude_mask, dtype=bool)
    flat = conc.reshape(-1, conc.shape[-1])
    index = np.flatnonzero(mask)
    return flat, index, t


def select_aif(conc, frame_times, candidate_mask, n_voxels: int = AIF_N_VOXELS,
               exclude_mask=None, *, modality: str = "ct", signal=None,
               baseline_end: int | None = None, echo_time: float | None = None) -> InputFunction:
    """Select and average arterial voxels (see the module docstring for the criteria).

    ``modality="mr"`` applies the DSC rules first (:func:`select_mr_aif`; needs ``signal``,
    ``baseline_end`` and ``echo_time``); ``"ct"`` (default) uses the rules alone.

    Parameters
    ----------
    conc : ndarray (X, Y, Z, T)
        Concentration, baseline 0 (denoised delta-HU or delta-R2*).
    frame_times : array_like (T,)
        Seconds.
    candidate_mask : ndarray of bool (X, Y, Z)
        Where to search (typically the brain); its mean curve is the tissue reference.
    n_voxels : int
        Voxels averaged.
    exclude_mask : ndarray of bool (X, Y, Z), optional
        Voxels never chosen (e.g. the hypoperfused hemisphere, bone edges).
    modality : "ct" or "mr"
    signal : ndarray (X, Y, Z, T), optional
        DSC magnitude series (``modality="mr"`` only).
    baseline_end : int, optional
        Frames ``[0, baseline_end)`` are pre-contrast (``modality="mr"`` only).
    echo_time : float, optional
        Echo time, s (``modality="mr"`` only).

    Raises
    ------
    DataError
        When no voxel passes the arterial criteria.
    """
    if modality == "mr":
        if signal is None or baseline_end is None or echo_time is None:
            raise ValueError("select_aif(modality='mr') needs the DSC signal, baseline_end and "
                             "echo_time")
        return select_mr_aif(conc, frame_times, candidate_mask, signal, baseline_end, echo_time,
                             n_voxels=n_voxels, exclude_mask=exclude_mask)
    if modality != "ct":
        raise ValueError(f"modality must be 'ct' or 'mr', not {modality!r}")
    return rebaseline(_select_arterial(conc, frame_times, candidate_mask, n_voxels, exclude_mask))


def _candidates_and_tissue(conc, frame_times, candidate_mask, exclude_mask):
    """Candidate curves (``flat``, ``index``, ``t``) and the peak and time to peak of the mean
    tissue curve they are compared with; raises DataError for an empty or unenhanced search mask."""
    flat, index, t = _candidates(conc, frame_times, candidate_mask, exclude_mask)
    if index.size == 0:
        raise DataError("no usable arterial input function: the search mask is empty")
    tissue = _brain_curve(flat, index)
    tissue_peak = float(np.max(tissue))
    if not tissue_peak > 0:
        raise DataError("no usable arterial input function: the brain does not enhance")
    return flat, index, t, tissue_peak, float(t[np.argmax(smooth3(tissue))])


def _select_arterial(conc, frame_times, candidate_mask, n_voxels, exclude_mask,
                     allowed=None) -> InputFunction:
    """The arterial rules of the module docstring; ``allowed`` (X, Y, Z) bool, if given, further
    restricts the candidates (but not the tissue reference, the mean of the search mask)."""
    flat, index, t, tissue_peak, tissue_ttp = _candidates_and_tissue(conc, frame_times,
                                                                     candidate_mask, exclude_mask)
    peak, ttp, m1, width, rough, dip, _ = _all_features(flat, index, t)
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
    ok = _keep_lowest(rough, ok, ROUGHNESS_QUANTILE, n_voxels)
    ok = _keep_lowest(m1, ok, 0.5, n_voxels)
    survivors = np.flatnonzero(ok)
    score = peak[survivors] / width[survivors]
    best = survivors[np.argsort(-score, kind="stable")[:n_voxels]]
    return _input_function(flat, index[np.sort(best)], np.asarray(conc).shape[:3], t)


def _mr_signal_stats(signal, baseline_end: int, candidate_mask):
    """Per-voxel baseline S0, lowest signal, and the noise SD of a DSC series in ``candidate_mask``.

    Noise SD: median over the mask of each voxel's temporal SD over the baseline frames (thermal
    noise is nearly uniform in space; physiological fluctuation only makes the rules stricter).
    Returns ``(index, s0, s_min, noise_sd)`` with ``index`` the flat indices of the mask.
    """
    s = np.asarray(signal)
    mask = np.asarray(candidate_mask, dtype=bool)
    if s.ndim != 4 or s.shape[:3] != mask.shape:
        raise DataError(f"MR AIF rules need a 4D signal and a matching mask, got {s.shape} and "
                        f"{mask.shape}")
    baseline_end = int(baseline_end)
    if not 2 <= baseline_end < s.shape[3]:
        raise DataError(f"MR AIF rules need 2 to {s.shape[3] - 1} baseline frames, got "
                        f"{baseline_end}")
    index = np.flatnonzero(mask)
    flat = s.reshape(-1, s.shape[3])
    s0 = np.empty(index.size)
    sd = np.empty(index.size)
    s_min = np.empty(index.size)
    for start in range(0, index.size, FEATURE_CHUNK):
        rows = flat[index[start:start + FEATURE_CHUNK]].astype(np.float64)
        part = slice(start, start + rows.shape[0])
        s0[part] = rows[:, :baseline_end].mean(axis=1)
        sd[part] = rows[:, :baseline_end].std(axis=1, ddof=1)
        s_min[part] = rows.min(axis=1)
    noise = float(np.median(sd)) if index.size else np.nan
    return index, s0, s_min, noise


def mr_unsaturated(signal, baseline_end: int, candidate_mask) -> np.ndarray:
    """Voxels of a DSC series whose signal stays usable through the bolus (module docstring).

    A voxel passes when its mean baseline S0 is at least ``MR_MIN_S0_FRACTION`` of the median S0
    in the mask and its minimum signal is at least ``MR_NOISE_FLOOR_SNR`` noise SDs.

    Returns (X, Y, Z) bool, False outside ``candidate_mask``.
    """
    index, s0, s_min, noise = _mr_signal_stats(signal, baseline_end, candidate_mask)
    out = np.zeros(np.shape(candidate_mask), dtype=bool)
    if index.size:
        usable = s0 >= MR_MIN_S0_FRACTION * float(np.median(s0))
        out.ravel()[index] = usable & (s_min >= MR_NOISE_FLOOR_SNR * noise)
    return out


def select_mr_aif(conc, frame_times, candidate_mask, signal, baseline_end: int,
                  echo_time: float, n_voxels: int = AIF_N_VOXELS,
                  exclude_mask=None) -> InputFunction:
    """DSC-MRI AIF (module docstring): the arterial rules on the voxels whose blood signal reaches
    the noise floor, their delta-R2* censored there, when any arterial voxel does; else on the
    voxels whose signal stays above the floor (:func:`mr_unsaturated`).

    Parameters as :func:`select_aif`; ``conc`` is delta-R2* (1/s), ``signal`` the magnitude series
    it was computed from, ``baseline_end`` the number of pre-contrast frames, ``echo_time`` in s.

    Raises
    ------
    DataError
        When no usable voxel passes the arterial criteria.
    """
    if not (np.isfinite(echo_time) and echo_time > 0):
        raise DataError(f"MR AIF rules need a positive echo time, got {echo_time}")
    index, s0, s_min, noise = _mr_signal_stats(signal, baseline_end, candidate_mask)
    shape = np.shape(candidate_mask)
    usable = np.zeros(shape, dtype=bool)
    floored = np.zeros(shape, dtype=bool)
    level = np.full(shape, np.nan)
    if index.size:
        ok_s0 = s0 >= MR_MIN_S0_FRACTION * float(np.median(s0))
        floor = MR_NOISE_FLOOR_SNR * noise
        usable.ravel()[index] = ok_s0 & (s_min >= floor)
        floored.ravel()[index] = ok_s0 & (s_min < floor)
        with np.errstate(divide="ignore", invalid="ignore"):
            level.ravel()[index] = np.log(s0 / floor) / echo_time
    censored = unsaturated = None
    if floored.any():
        try:
            censored = _select_censored(conc, frame_times, candidate_mask, n_voxels, exclude_mask,
                                        floored, level)
        except DataError:
            pass  # the floored voxels are not arterial (sinus, noise): no saturated artery
    if usable.any():
        try:
            unsaturated = _select_arterial(conc, frame_times, candidate_mask, n_voxels,
                                           exclude_mask, usable)
        except DataError:
            if censored is None:
                raise
    if censored is None and unsaturated is None:
        raise DataError("no usable arterial input function: every candidate voxel has a low "
                        "baseline signal or reaches the noise floor during the bolus")
    # The saturated voxels are arteries unless unsaturated arterial candidates fill clearly earlier
    # (then the floored voxels are the sinus: a weak bolus saturates only the large veins).
    if censored is None:
        return rebaseline(unsaturated)
    if unsaturated is None or not np.isfinite(unsaturated.arrival_s):
        return censored
    early = unsaturated.arrival_s + MR_ARTERIAL_ONSET_WINDOW_S
    return censored if not censored.arrival_s > early else rebaseline(unsaturated)


def _select_censored(conc, frame_times, candidate_mask, n_voxels, exclude_mask, floored,
                     level) -> InputFunction:
    """Arterial rules on the ``floored`` voxels with their curves censored at ``level`` (1/s)."""
    conc = np.asarray(conc)
    flat, index, t, tissue_peak, tissue_ttp = _candidates_and_tissue(conc, frame_times,
                                                                     candidate_mask, exclude_mask)
    rows = index[floored.ravel()[index]]
    levels = level.ravel()[rows]
    curves = np.minimum(flat[rows].astype(np.float64), levels[:, None])
    peak, ttp, m1, width, _, dip, _ = _features(curves, t)
    ok = (peak >= AIF_MIN_PEAK_RATIO * tissue_peak) & (ttp < tissue_ttp) & (dip <= MAX_NEGATIVE_DIP)
    ok &= np.isfinite(m1) & (width > 0) & np.isfinite(levels)
    if not ok.any():
        raise DataError("no saturated arterial voxel")
    # No roughness filter: censoring removed the noisy floor frames, and the sharp edges of a
    # censored artery would rank it rougher than the more dispersed sinus.
    # Censored curves all peak at about their level, so peak time and width no longer tell arteries
    # from the (also saturated) sinus; the bolus onset does: veins fill after the capillary bed.
    onset = np.full(rows.size, np.inf)
    for i in np.flatnonzero(ok):  # only the few floored candidates that passed the rules above
        timing = detect_bolus(curves[i], t)
        # An uncaptured curve's "arrival" is a placeholder (e.g. the first frame): never the anchor.
        onset[i] = timing.arrival_s if timing.captured else np.inf
    ok &= np.isfinite(onset)
    if not ok.any():
        raise DataError("no saturated arterial voxel")
    ok &= onset <= onset[ok].min() + MR_ARTERIAL_ONSET_WINDOW_S
    survivors = np.flatnonzero(ok)
    # The highest censoring levels are the voxels with most blood signal: they follow C_a furthest.
    best = np.sort(survivors[np.argsort(-levels[survivors], kind="stable")[:n_voxels]])
    common = float(levels[best].min())
    chosen = np.minimum(flat[rows[best]].astype(np.float64), common)
    out = _input_function(chosen, np.arange(best.size), (best.size,), t)
    out.voxels = np.column_stack(np.unravel_index(rows[best], conc.shape[:3])).astype(int)
    # The mean is only a lower bound wherever any of its voxels is censored; a frame counts as
    # censored when most of them sit at the common level.
    out.censored_fraction = np.mean(chosen >= common, axis=0)
    out.censored_frames = int(np.sum(out.censored_fraction > 0.5))
    out.censor_level = common
    return out


def select_vof(conc, frame_times, candidate_mask, aif: InputFunction,
               n_voxels: int = VOF_N_VOXELS, exclude_mask=None) -> InputFunction | None:
    """Select and average venous voxels (typically the superior sagittal sinus).

    Candidates peak after both the AIF and the mean tissue curve, enhance at least
    ``VOF_MIN_PEAK_RATIO`` times more than the tissue, are not too rough or negative; the
    ``n_voxels`` with the largest area are averaged, cross-fitted over even and odd frames
    (:func:`crossfit_venous_curve`), so ``voxels`` holds the up to ``2 n_voxels`` chosen by either
    half. Returns None when no voxel qualifies.
    """
    flat, index, t = _candidates(conc, frame_times, candidate_mask, exclude_mask)
    if index.size == 0:
        return None
    tissue = _brain_curve(flat, index)
    tissue_peak = float(np.max(tissue))
    tissue_ttp = float(t[np.argmax(smooth3(tissue))])
    peak, ttp, m1, width, rough, dip, area = _all_features(flat, index, t)
    ok = (peak >= VOF_MIN_PEAK_RATIO * tissue_peak) & (ttp > max(tissue_ttp, aif.ttp_s))
    ok &= (dip <= MAX_NEGATIVE_DIP) & np.isfinite(area)
    if not ok.any():
        return None
    ok = _keep_lowest(rough, ok, ROUGHNESS_QUANTILE, n_voxels)
    candidates = index[np.flatnonzero(ok)]
    # The VOF rises after the AIF: the AIF's own pre-contrast frames are pre-contrast here too.
    baseline_end = max(detect_bolus(np.asarray(aif.curve, dtype=float), t).baseline_end,
                       MIN_BASELINE_FRAMES)
    curve, chosen = crossfit_venous_curve(flat[candidates], t, baseline_end, n_voxels)
    voxels = np.column_stack(
        np.unravel_index(np.sort(candidates[chosen]), np.asarray(conc).shape[:3])).astype(int)
    return _curve_input_function(curve, t, voxels)


def crossfit_venous_curve(curves, frame_times, baseline_end: int, n_voxels: int):
    """The mean curve of the ``n_voxels`` curves with the largest area, free of the winner's curse.

    Each half of the frames (even, odd) ranks the curves by its own trapezoid area, after
    subtracting its own mean over the pre-contrast frames ``[0, baseline_end)``; the winners of one
    half give the mean curve at the frames of the other half, baselined on that half's
    pre-contrast frames. Noise that lifted a curve into the winners lies in frames whose values are
    then not used, so each frame of the result is an unbiased average of voxels chosen on
    independent data (sample splitting: Cox 1975, Biometrika 62:441).

    Parameters
    ----------
    curves : ndarray (N, T)
        Candidate concentration curves.
    frame_times : ndarray (T,)
        Seconds.
    baseline_end : int
        Frames ``[0, baseline_end)`` are pre-contrast for every candidate; at least 2, so that each
        half has one.
    n_voxels : int
        Curves chosen per half.

    Returns
    -------
    curve : ndarray (T,)
    chosen : ndarray of int
        Rows of ``curves`` chosen by either half (up to ``2 n_voxels``).
    """
    c = np.asarray(curves, dtype=np.float64)
    t = np.asarray(frame_times, dtype=float)
    if baseline_end < 2:
        raise ValueError(f"cross-fitting needs 2 pre-contrast frames, got {baseline_end}")
    frames = np.arange(t.size)
    halves = [frames[0::2], frames[1::2]]

    def baselined(rows, half):
        block = rows[:, half]
        return block - block[:, half < baseline_end].mean(axis=1, keepdims=True)

    curve = np.empty(t.size)
    chosen = []
    for rank_half, measure_half in (halves, halves[::-1]):
        area = np.trapezoid(baselined(c, rank_half), t[rank_half], axis=1)
        best = np.argsort(-area, kind="stable")[:n_voxels]
        curve[measure_half] = baselined(c[best], measure_half).mean(axis=0)
        chosen.append(best)
    return curve, np.unique(np.concatenate(chosen))


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


def scale_aif_by_vof(aif: InputFunction, vof: InputFunction | None):
    """Correct the AIF amplitude for partial volume by matching its area to the VOF's.

    By mass conservation the areas of arterial input and venous output are equal; the sinus is wide
    enough to be free of partial volume, the arteries are not, so the AIF is scaled by
    ``area(VOF) / area(AIF)`` (Knutsson et al. 2010, Magn Reson Imaging 28:1; the same venous
    normalisation is standard in CT perfusion, Konstas et al. 2009, AJNR 30:662).

    Both areas are taken over the whole scan (trapezoid rule), recirculation included: the venous
    curve is dispersed enough that its first pass and recirculation merge, so separating first passes
    by gamma-variate fits would drop the arterial recirculation but keep the venous one, and bias the
    factor upwards (+28 % measured on the phantom). The rule: scale only when the VOF is complete
    (back below half its peak before the scan ends) and its area exceeds the AIF's; a smaller VOF
    area means the VOF itself is partial-volumed or truncated, and the factor is 1.

    Returns
    -------
    scaled_curve : ndarray (T,)
    factor : float
    """
    curve = np.asarray(aif.curve, dtype=float)
    if vof is None or not vof.complete:
        return curve.copy(), 1.0
    t = np.asarray(aif.times, dtype=float)
    a_aif = float(np.trapezoid(curve, t))
    a_vof = float(np.trapezoid(np.asarray(vof.curve, dtype=float), np.asarray(vof.times, dtype=float)))
    if not (np.isfinite(a_aif) and np.isfinite(a_vof) and a_aif > 0 and a_vof > a_aif):
        return curve.copy(), 1.0
    factor = a_vof / a_aif
    return curve * factor, factor


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
    aif = _input_function(flat, index, conc.shape[:3], t)
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
