"""DSC-MRI arterial input function: the noise-floor rule of the magnitude signal and the AIF chosen
(and censored) under it.

The gradient-echo signal of arterial blood falls as exp(-TE delta-R2*), so at the bolus peak it can
reach the noise floor, where the Rician magnitude no longer follows the signal (Gudbjartsson & Patz
1995, Magn Reson Med 34:910) and delta-R2* is unmeasurable; the arterial blood delta-R2* is moreover
larger and non-linear (Kjolby et al. 2006, Magn Reson Med 56:187; Calamante 2013, Prog Nucl Magn
Reson Spectrosc 74:1). Voxels with a low baseline signal (partial volume with bone or air,
susceptibility dropout; below :data:`strokeperf.brainmask.MR_MIN_S0_FRACTION` of the median S0
of the search region, :func:`strokeperf.brainmask.min_usable_s0`, the rule of the brain mask) are
never candidates. :func:`classify_mr_voxels` sorts the others into those whose signal stays above
the noise floor (``MR_NOISE_FLOOR_SNR`` noise SDs) and those that reach it.

- Unsaturated bolus: when no arterial voxel reaches the noise floor, the arterial rules
  (:func:`strokeperf.aif.arterial.select_arterial`) run on the voxels whose signal stays above it.
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
  (:func:`strokeperf.aif.reconstruction.reconstruct_censored_aif`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strokeperf.aif.arterial import (AIF_MIN_PEAK_RATIO, AIF_N_VOXELS, FEATURE_CHUNK,
                                     MAX_NEGATIVE_DIP, InputFunction, candidates_and_tissue,
                                     curve_features, mean_input_function, rebaseline,
                                     select_arterial)
from strokeperf.brainmask import min_usable_s0
from strokeperf.concentration import detect_bolus
from strokeperf.errors import DataError

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


@dataclass
class MRVoxelClasses:
    """Result of :func:`classify_mr_voxels`.

    Attributes
    ----------
    unsaturated : ndarray of bool (X, Y, Z)
        Usable baseline signal (:func:`strokeperf.brainmask.min_usable_s0`) whose lowest signal
        stays at or above the noise floor: delta-R2* is measured through the whole bolus.
    saturated : ndarray of bool (X, Y, Z)
        Usable baseline signal that falls below the noise floor during the bolus.
    s0 : ndarray of float64 (X, Y, Z)
        Mean signal of the baseline frames, NaN outside the candidate mask.
    noise_floor : float
        ``MR_NOISE_FLOOR_SNR`` noise SDs, signal units (NaN for an empty mask).
    """

    unsaturated: np.ndarray
    saturated: np.ndarray
    s0: np.ndarray
    noise_floor: float

    def censor_level(self, echo_time: float) -> np.ndarray:
        """delta-R2* (1/s) at which each voxel's signal reaches the noise floor,
        ``ln(S0 / floor) / TE`` with the echo time in s; NaN outside the candidate mask."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(self.s0 / self.noise_floor) / echo_time


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


def classify_mr_voxels(signal, baseline_end: int, candidate_mask) -> MRVoxelClasses:
    """The noise-floor rule of a DSC series (module docstring): which voxels of ``candidate_mask``
    have a usable baseline signal, and of those which stay above the noise floor through the bolus.

    A voxel's baseline is usable when its mean baseline S0 is at least
    :func:`strokeperf.brainmask.min_usable_s0` of the S0 in the mask; it is unsaturated when its
    minimum signal is at least ``MR_NOISE_FLOOR_SNR`` noise SDs, saturated otherwise.

    Parameters
    ----------
    signal : ndarray (X, Y, Z, T)
        DSC magnitude series.
    baseline_end : int
        Frames ``[0, baseline_end)`` are pre-contrast.
    candidate_mask : ndarray of bool (X, Y, Z)
        Voxels classified (both classes are False outside it).
    """
    index, s0, s_min, noise = _mr_signal_stats(signal, baseline_end, candidate_mask)
    shape = np.shape(candidate_mask)
    unsaturated = np.zeros(shape, dtype=bool)
    saturated = np.zeros(shape, dtype=bool)
    s0_image = np.full(shape, np.nan)
    floor = MR_NOISE_FLOOR_SNR * noise
    if index.size:
        ok_s0 = s0 >= min_usable_s0(s0)
        unsaturated.ravel()[index] = ok_s0 & (s_min >= floor)
        saturated.ravel()[index] = ok_s0 & (s_min < floor)
        s0_image.ravel()[index] = s0
    return MRVoxelClasses(unsaturated=unsaturated, saturated=saturated, s0=s0_image,
                          noise_floor=floor)


def select_mr_aif(conc, frame_times, candidate_mask, signal, baseline_end: int,
                  echo_time: float, n_voxels: int = AIF_N_VOXELS,
                  exclude_mask=None) -> InputFunction:
    """DSC-MRI AIF (module docstring): the arterial rules on the voxels whose blood signal reaches
    the noise floor, their delta-R2* censored there, when any arterial voxel does; else on the
    voxels whose signal stays above the floor (:func:`classify_mr_voxels`).

    Parameters as :func:`strokeperf.aif.select_aif`; ``conc`` is delta-R2* (1/s), ``signal`` the
    magnitude series it was computed from, ``baseline_end`` the number of pre-contrast frames,
    ``echo_time`` in s.

    Raises
    ------
    DataError
        When no usable voxel passes the arterial criteria.
    """
    if not (np.isfinite(echo_time) and echo_time > 0):
        raise DataError(f"MR AIF rules need a positive echo time, got {echo_time}")
    classes = classify_mr_voxels(signal, baseline_end, candidate_mask)
    usable, floored = classes.unsaturated, classes.saturated
    level = classes.censor_level(echo_time)
    censored = unsaturated = None
    if floored.any():
        try:
            censored = _select_censored(conc, frame_times, candidate_mask, n_voxels, exclude_mask,
                                        floored, level)
        except DataError:
            pass  # the floored voxels are not arterial (sinus, noise): no saturated artery
    if usable.any():
        try:
            unsaturated = select_arterial(conc, frame_times, candidate_mask, n_voxels,
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
    flat, index, t, tissue_peak, tissue_ttp = candidates_and_tissue(conc, frame_times,
                                                                    candidate_mask, exclude_mask)
    rows = index[floored.ravel()[index]]
    levels = level.ravel()[rows]
    curves = np.minimum(flat[rows].astype(np.float64), levels[:, None])
    peak, ttp, m1, width, _, dip, _ = curve_features(curves, t)
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
    out = mean_input_function(chosen, np.arange(best.size), (best.size,), t)
    out.voxels = np.column_stack(np.unravel_index(rows[best], conc.shape[:3])).astype(int)
    # The mean is only a lower bound wherever any of its voxels is censored; a frame counts as
    # censored when most of them sit at the common level.
    out.censored_fraction = np.mean(chosen >= common, axis=0)
    out.censored_frames = int(np.sum(out.censored_fraction > 0.5))
    out.censor_level = common
    return out

