"""Helpers shared by every stage that reads time curves: checks, resampling, smoothing, peak time,
width and noise.

Curves are numpy arrays with time on the last axis; frame times are seconds from the scan start,
strictly increasing, irregular sampling allowed.
"""

from __future__ import annotations

import numpy as np

from strokeperf.errors import DataError

#: Largest grid step used when resampling irregular frames, seconds: the frame interval of
#: standard CT perfusion protocols during the first pass (Wintermark et al. 2008).
MAX_UNIFORM_DT_S = 1.0
#: Ratio of a Gaussian's FWHM to its standard deviation, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: Scale from the median absolute deviation to a Gaussian standard deviation, 1 / Phi^-1(3/4)
#: (Rousseeuw & Croux 1993, J Am Stat Assoc 88:1273).
MAD_TO_SD = 1.4826


def check_frame_times(frame_times, n_frames: int | None = None) -> np.ndarray:
    """Return frame times (s) as float64 after checking they are finite and strictly increasing."""
    t = np.asarray(frame_times, dtype=float)
    if t.ndim != 1:
        raise DataError(f"frame times must be a 1D list, got shape {t.shape}")
    if n_frames is not None and t.size != n_frames:
        raise DataError(f"{t.size} frame times for {n_frames} frames")
    if not np.all(np.isfinite(t)):
        raise DataError("frame times contain NaN or infinite values")
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise DataError("frame times are not strictly increasing")
    return t


def series_and_mask(series, mask, purpose: str) -> tuple[np.ndarray, np.ndarray]:
    """``(series, mask)`` as arrays (mask boolean) after checking that ``series`` is 4D ``(X, Y, Z,
    T)`` and ``mask`` is 3D on its grid; otherwise DataError "``purpose`` a 4D series and a
    matching 3D mask, got ..." (``purpose`` e.g. "denoise needs")."""
    series = np.asarray(series)
    mask = np.asarray(mask, dtype=bool)
    if series.ndim != 4 or series.shape[:3] != mask.shape:
        raise DataError(f"{purpose} a 4D series and a matching 3D mask, got {series.shape} and "
                        f"{mask.shape}")
    return series, mask


def noise_sd(curves, axis: int = -1) -> np.ndarray:
    """Robust noise standard deviation of curves from their first differences.

    Median absolute deviation of the frame-to-frame differences, divided by sqrt(2) (white noise)
    and scaled to a Gaussian SD by 1.4826 (Rousseeuw & Croux 1993, J Am Stat Assoc 88:1273). The
    bolus occupies few differences, so the median ignores it.
    """
    d = np.diff(np.asarray(curves, dtype=float), axis=axis)
    mad = np.median(np.abs(d - np.median(d, axis=axis, keepdims=True)), axis=axis)
    return MAD_TO_SD * mad / np.sqrt(2.0)


def smooth3(y: np.ndarray) -> np.ndarray:
    """Three-frame moving average along the last axis, edges replicated (keeps the length)."""
    padded = np.concatenate([y[..., :1], y, y[..., -1:]], axis=-1)
    return (padded[..., :-2] + padded[..., 1:-1] + padded[..., 2:]) / 3.0


def fwhm(curve, t) -> float:
    """Full width at half maximum (s) by linear interpolation of the two half-peak crossings."""
    k = int(np.argmax(curve))
    half = 0.5 * curve[k]
    before = np.flatnonzero(curve[:k] < half)
    after = np.flatnonzero(curve[k:] < half)
    if before.size == 0 or after.size == 0:
        return np.nan
    i = int(before[-1])
    j = k + int(after[0])
    t_up = t[i] + (half - curve[i]) / (curve[i + 1] - curve[i]) * (t[i + 1] - t[i])
    t_down = t[j - 1] + (curve[j - 1] - half) / (curve[j - 1] - curve[j]) * (t[j] - t[j - 1])
    return float(t_down - t_up)


def parabolic_offset(y_prev, y_peak, y_next):
    """Sub-sample offset in [-0.5, 0.5] of the vertex of the parabola through three samples."""
    denom = y_prev - 2.0 * y_peak + y_next
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom < 0, 0.5 * (y_prev - y_next) / denom, 0.0)
    return np.clip(off, -0.5, 0.5)


def time_to_peak(curves: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Time of each curve's maximum from the first frame, s (parabola through the peak sample).

    ``curves`` is ``(N, T)``, ``t`` the ``T`` frame times (s)."""
    k = np.argmax(curves, axis=1)
    rows = np.arange(curves.shape[0])
    inner = (k > 0) & (k < t.size - 1)
    kp, kn = np.maximum(k - 1, 0), np.minimum(k + 1, t.size - 1)
    off = np.where(inner, parabolic_offset(curves[rows, kp], curves[rows, k], curves[rows, kn]), 0.0)
    step = np.where(off >= 0, t[kn] - t[k], t[k] - t[kp])
    return t[k] - t[0] + off * step


def resample_uniform(curves, frame_times, dt: float | None = None):
    """Linearly interpolate irregularly sampled curves onto a uniform time grid.

    The grid starts at the first frame and never goes beyond the last (no extrapolation).

    Parameters
    ----------
    curves : ndarray, shape (..., T)
    frame_times : array_like, shape (T,)
        Seconds, strictly increasing.
    dt : float, optional
        Grid step in seconds; default the smallest frame interval, at most ``MAX_UNIFORM_DT_S``.

    Returns
    -------
    curves_uniform : ndarray, shape (..., T_uniform), float64 (float32 input stays float32)
    times_uniform : ndarray, shape (T_uniform,), seconds on the scan clock
    """
    curves = np.asarray(curves)
    t = check_frame_times(frame_times, curves.shape[-1])
    if t.size < 2:
        raise DataError("resampling needs at least 2 frames")
    if dt is None:
        dt = min(float(np.min(np.diff(t))), MAX_UNIFORM_DT_S)
    dt = float(dt)
    if not dt > 0:
        raise DataError(f"grid step must be positive, got {dt}")
    n = int(np.floor((t[-1] - t[0]) / dt + 1e-9)) + 1
    tu = t[0] + dt * np.arange(n)
    right = np.clip(np.searchsorted(t, tu, side="right"), 1, t.size - 1)
    left = right - 1
    w = (tu - t[left]) / (t[right] - t[left])
    dtype = np.float32 if curves.dtype == np.float32 else np.float64
    w = w.astype(dtype)
    out = curves[..., left] * (1 - w) + curves[..., right] * w
    return out.astype(dtype, copy=False), tu
