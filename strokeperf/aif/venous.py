"""Venous output function (VOF) selection and the partial-volume scaling of the AIF by the VOF.

VOF: the candidates peaking after the tissue with the largest area (the superior sagittal sinus is
wide enough to be free of partial volume); ``n_voxels`` of them are averaged. Ranking noisy curves
by area and averaging the winners overstates the area (the winner's curse): the winners are the
voxels whose baseline noise happened to be low, which lifts their whole curve (+11 to +14 % on the
10-HU phantom). The VOF is therefore cross-fitted over the two halves of the frames, even and odd,
whose noise is independent: the voxels chosen on the even frames' area give the VOF's odd frames
and vice versa, each half with its own pre-contrast baseline (sample splitting, Cox 1975,
Biometrika 62:441; cross-fitting, Chernozhukov et al. 2018, Econometrics J 21:C1).

The AIF is then scaled to the VOF's area (:func:`scale_aif_by_vof`), which corrects the arterial
partial volume (Knutsson et al. 2010, Magn Reson Imaging 28:1).

Conventions as :mod:`strokeperf.aif.arterial`.
"""

from __future__ import annotations

import numpy as np

from strokeperf.aif.arterial import (MAX_NEGATIVE_DIP, ROUGHNESS_QUANTILE, InputFunction,
                                     candidate_curves, candidate_features, curve_input_function,
                                     keep_lowest, mean_curve)
from strokeperf.concentration import MIN_BASELINE_FRAMES, detect_bolus
from strokeperf.timecurves import smooth3

#: Voxels averaged into the VOF (a sinus cross-section holds tens of voxels at 2 mm).
VOF_N_VOXELS = 8
#: A VOF candidate peaks at least this many times higher than the mean tissue curve (the sinus is a
#: pure blood voxel; as ``AIF_MIN_PEAK_RATIO`` for the arteries).
VOF_MIN_PEAK_RATIO = 3.0


def select_vof(conc, frame_times, candidate_mask, aif: InputFunction,
               n_voxels: int = VOF_N_VOXELS, exclude_mask=None) -> InputFunction | None:
    """Select and average venous voxels (typically the superior sagittal sinus).

    Candidates peak after both the AIF and the mean tissue curve, enhance at least
    ``VOF_MIN_PEAK_RATIO`` times more than the tissue, are not too rough or negative; the
    ``n_voxels`` with the largest area are averaged, cross-fitted over even and odd frames
    (:func:`crossfit_venous_curve`), so ``voxels`` holds the up to ``2 n_voxels`` chosen by either
    half. Returns None when no voxel qualifies.
    """
    flat, index, t = candidate_curves(conc, frame_times, candidate_mask, exclude_mask)
    if index.size == 0:
        return None
    tissue = mean_curve(flat, index)
    tissue_peak = float(np.max(tissue))
    tissue_ttp = float(t[np.argmax(smooth3(tissue))])
    peak, ttp, m1, width, rough, dip, area = candidate_features(flat, index, t)
    ok = (peak >= VOF_MIN_PEAK_RATIO * tissue_peak) & (ttp > max(tissue_ttp, aif.ttp_s))
    ok &= (dip <= MAX_NEGATIVE_DIP) & np.isfinite(area)
    if not ok.any():
        return None
    ok = keep_lowest(rough, ok, ROUGHNESS_QUANTILE, n_voxels)
    candidates = index[np.flatnonzero(ok)]
    # The VOF rises after the AIF: the AIF's own pre-contrast frames are pre-contrast here too.
    baseline_end = max(detect_bolus(np.asarray(aif.curve, dtype=float), t).baseline_end,
                       MIN_BASELINE_FRAMES)
    curve, chosen = crossfit_venous_curve(flat[candidates], t, baseline_end, n_voxels)
    voxels = np.column_stack(
        np.unravel_index(np.sort(candidates[chosen]), np.asarray(conc).shape[:3])).astype(int)
    return curve_input_function(curve, t, voxels)


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
