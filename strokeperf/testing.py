"""Synthetic curves with known truth, for the tests and the benchmarks.

The tracer-kinetic model is that of the analysis and the phantom (:mod:`strokeperf.kinetics`): a
tissue curve is ``C(t) = F (AIF * h)(t)``, with ``h`` the residue ``R`` of a gamma transit-time
distribution (Mouridsen et al. 2006) delayed by the arrival delay and optionally convolved with an
exponential dispersion kernel (Calamante et al. 2000). The true Tmax is the time of the maximum of
``h`` (Calamante et al. 2010). Curves are computed on a fine grid and sampled at the frame times.
"""

from __future__ import annotations

import numpy as np

from strokeperf import kinetics

#: Step (s) of the fine grid on which the convolutions are computed; 0.02 s keeps the discretisation
#: error of a 1.5-s-wide arterial bolus far below the noise of any acquisition.
FINE_DT_S = 0.02


def aif_curve(t, arrival_s: float = 4.0, peak: float = 300.0, beta_s: float = 1.5,
              recirculation_delay_s: float = 10.0, recirculation_fraction: float = 0.1,
              recirculation_beta_s: float = 3.0) -> np.ndarray:
    """Arterial input function: a gamma-variate first pass (alpha 3) plus a recirculation of
    ``recirculation_fraction`` of its peak ``recirculation_delay_s`` later (concentration units of
    ``peak``; the defaults are a CT-like AIF in delta-HU)."""
    t = np.asarray(t, dtype=float)
    return (kinetics.gamma_variate(t, arrival_s, 3.0, beta_s, peak)
            + kinetics.gamma_variate(t, arrival_s + recirculation_delay_s, 3.0,
                                     recirculation_beta_s, recirculation_fraction * peak))


def tissue_curves(frame_times, cbf, mtt, delay, shape=1.0, dispersion=0.0, aif=aif_curve,
                  fine_dt_s: float = FINE_DT_S) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free tissue curves and their true Tmax.

    Parameters
    ----------
    frame_times : array_like (T,)
        Sampling times, s.
    cbf, mtt, delay, shape, dispersion : float or array_like (N,)
        CBF (mL/100 g/min), mean transit time (s), arrival delay (s), gamma shape of the residue
        (``kinetics.BOX_SHAPE`` for a box) and the dispersion kernel's time constant (s; 0 = none),
        broadcast against each other.
    aif : callable
        ``aif(t)`` on the fine grid (default :func:`aif_curve`).

    Returns
    -------
    curves : ndarray (N, T)
        Concentration in the AIF's units.
    tmax_s : ndarray (N,)
        Time of the maximum of the delayed, dispersed residue, s.
    """
    t = np.asarray(frame_times, dtype=float)
    cbf, mtt, delay, shape, dispersion = (np.atleast_1d(np.asarray(v, dtype=float))[:, None]
                                          for v in np.broadcast_arrays(cbf, mtt, delay, shape,
                                                                       dispersion))
    fine = np.arange(0.0, t[-1] + 2 * fine_dt_s, fine_dt_s)
    nfft = 2 * fine.size
    h = kinetics.residue(fine[None, :] - delay, mtt, shape)
    dispersed = dispersion[:, 0] > 0
    if dispersed.any():
        kernel = np.zeros_like(h)
        kernel[dispersed] = (np.exp(-fine[None, :] / dispersion[dispersed])
                             / dispersion[dispersed] * fine_dt_s)
        convolved = np.fft.irfft(np.fft.rfft(h, nfft) * np.fft.rfft(kernel, nfft),
                                 nfft)[:, : fine.size]
        h = np.where(dispersed[:, None], convolved, h)
    tmax_s = fine[np.argmax(h, axis=1)]
    c = np.fft.irfft(np.fft.rfft(h, nfft) * np.fft.rfft(aif(fine), nfft)[None, :],
                     nfft)[:, : fine.size]
    c *= kinetics.flow_rate_per_s(cbf) * fine_dt_s
    # Linear interpolation of every curve at the frame times (the fine grid covers them).
    right = np.clip(np.searchsorted(fine, t, side="right"), 1, fine.size - 1)
    left = right - 1
    w = (t - fine[left]) / (fine[right] - fine[left])
    return c[:, left] * (1 - w) + c[:, right] * w, tmax_s
