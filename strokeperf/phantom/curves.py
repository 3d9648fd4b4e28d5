"""Tracer-kinetic curves of the phantom: AIF, VOF, tissue concentration, true Tmax.

Tissue concentration follows indicator-dilution theory (Meier & Zierler 1954; Østergaard et al. 1996,
Magn Reson Med 36:715) with a dispersed arterial input (Calamante et al. 2000, Magn Reson Med 44:466)::

    C(t) = flow_rate_per_s(CBF) * (AIF conv h_beta conv R_MTT)(t - delay)

``R`` is the gamma transit-time residue (Mouridsen et al. 2006, NeuroImage 33:570) and ``h_beta`` the
exponential dispersion kernel, both from :mod:`strokeperf.kinetics`. Convolutions are computed with
FFTs on a fine grid (0.1 s) using cell integrals of the kernels (centred cells, the first one half a
cell), so the discrete areas are exact: area(C) = CBV / CBV_SCALE * area(AIF) for every voxel.

MTT and beta are quantised to 0.01 s as part of the model (the truth maps hold the quantised
values), so voxels share kernels: the work scales with the number of distinct (MTT, beta) pairs,
not with the number of voxels.

True Tmax is the time of the maximum of the effective residue ``(h_beta conv R)(t - delay)``, what
deconvolution with the measured AIF estimates (Calamante et al. 2010, Stroke 41:1169), found on a
0.05-s grid with parabolic refinement.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import stats

from strokeperf import kinetics

#: Time step (s) of the fine grid of the concentration convolutions.
FINE_DT_S = 0.1
#: Time step (s) of the fine grid on which the true Tmax is found.
TMAX_DT_S = 0.05
#: Quantum (s) of MTT and of the dispersion time constant beta.
PARAMETER_QUANTUM_S = 0.01
#: Residue lookup table over u = t / MTT: step and extent (R(60) < 1e-25 for shape >= 1).
RESIDUE_TABLE_STEP = 1e-3
RESIDUE_TABLE_MAX = 60.0
#: Simpson sub-intervals per grid cell used to integrate the dispersion kernel (even).
KERNEL_SUBSTEPS = 20
#: Relative tolerance that separates a flat top of the effective residue (box residue with little
#: dispersion) from round-off: Tmax is the first time within it of the maximum.
TMAX_PLATEAU_TOLERANCE = 1e-9
#: Voxel-parameter pairs processed per FFT batch (bounded memory).
CHUNK = 2048

# --- Arterial and venous input (gamma variates; Thompson et al. 1964, Madsen 1992) ---------------
#: First-pass gamma-variate shape and scale (s): time to peak alpha*beta ~ 4.5 s, FWHM ~ 6 s.
AIF_ALPHA = 3.0
AIF_BETA_S = 1.5
#: Recirculation: a smaller, broader gamma variate starting this long after the arrival (s), with
#: this fraction of the first-pass peak.
RECIRC_DELAY_S = (8.0, 11.0)
RECIRC_FRACTION = (0.10, 0.20)
RECIRC_ALPHA = 3.0
RECIRC_BETA_S = 2.5
#: Venous transit-time distribution (gamma) from artery to sinus: shape, and mean range (s).
VENOUS_SHAPE = 4.0
VENOUS_TRANSIT_RANGE_S = (5.0, 8.0)
#: Bolus arrival range (s after the first frame) and CT arterial peak range (delta-HU).
BOLUS_ARRIVAL_RANGE_S = (5.0, 12.0)
AIF_PEAK_RANGE_HU = (300.0, 500.0)


@dataclass(frozen=True)
class ArterialInput:
    """AIF = gamma-variate first pass (peak ``peak``) + smaller, broader recirculation.

    Units of ``peak`` are those of the concentration (delta-HU on CT, delta-R2* 1/s on MRI).
    """

    arrival_s: float
    peak: float
    alpha: float
    beta_s: float
    recirc_delay_s: float
    recirc_fraction: float

    def __call__(self, t):
        t = np.asarray(t, dtype=float)
        first = kinetics.gamma_variate(t, self.arrival_s, self.alpha, self.beta_s, self.peak)
        recirc = kinetics.gamma_variate(t, self.arrival_s + self.recirc_delay_s, RECIRC_ALPHA, RECIRC_BETA_S,
                                        self.peak * self.recirc_fraction)
        return first + recirc

    def scaled(self, factor: float) -> "ArterialInput":
        return ArterialInput(**{**self.__dict__, "peak": self.peak * factor})

    def to_dict(self) -> dict:
        return {k: float(v) for k, v in self.__dict__.items()}

    @classmethod
    def random(cls, rng: np.random.Generator, arrival_s=None, peak=None) -> "ArterialInput":
        draws = dict(arrival_s=rng.uniform(*BOLUS_ARRIVAL_RANGE_S), peak=rng.uniform(*AIF_PEAK_RANGE_HU),
                     alpha=AIF_ALPHA * rng.uniform(0.9, 1.1), beta_s=AIF_BETA_S * rng.uniform(0.85, 1.15),
                     recirc_delay_s=rng.uniform(*RECIRC_DELAY_S), recirc_fraction=rng.uniform(*RECIRC_FRACTION))
        if arrival_s is not None:
            draws["arrival_s"] = float(arrival_s)
        if peak is not None:
            draws["peak"] = float(peak)
        return cls(**draws)


def fine_time(t_end_s: float, dt: float = FINE_DT_S) -> np.ndarray:
    """Fine time grid 0, dt, ... covering ``t_end_s`` (s) plus one step."""
    return np.arange(int(np.ceil(t_end_s / dt)) + 2) * dt


def venous_output(aif_fine: np.ndarray, dt: float, mean_transit_s: float, shape: float = VENOUS_SHAPE):
    """VOF = AIF convolved with a gamma transit-time density of mean ``mean_transit_s`` (s).

    The density has unit area, so the VOF has the area of the AIF (conservation of the tracer mass
    through the brain; the sinus drains the capillary bed fed by the arteries).
    """
    n = len(aif_fine)
    edges = np.concatenate([[0.0], (np.arange(n) + 0.5) * dt])
    cells = np.diff(stats.gamma.cdf(edges, shape, scale=mean_transit_s / shape))
    cells /= cells.sum()
    return np.convolve(aif_fine, cells)[:n]


def quantize(values_s) -> np.ndarray:
    """Round times (s) to the model's parameter quantum."""
    return np.round(np.asarray(values_s, dtype=float) / PARAMETER_QUANTUM_S) * PARAMETER_QUANTUM_S


@functools.lru_cache(maxsize=8)
def _residue_table(shape: float):
    """R(u) and its integral I(u) over u = t / MTT for the gamma residue of ``shape``; I(inf) = 1."""
    u = np.arange(0.0, RESIDUE_TABLE_MAX + RESIDUE_TABLE_STEP, RESIDUE_TABLE_STEP)
    r = kinetics.residue(u, 1.0, shape)
    integral = np.concatenate([[0.0], np.cumsum(0.5 * (r[1:] + r[:-1]) * RESIDUE_TABLE_STEP)])
    return r, integral / integral[-1]


def _lookup(table: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Linear interpolation in a table sampled every RESIDUE_TABLE_STEP from 0 (clamped)."""
    pos = np.clip(u / RESIDUE_TABLE_STEP, 0.0, len(table) - 1.000001)
    i0 = pos.astype(np.int64)
    w = pos - i0
    return table[i0] * (1.0 - w) + table[i0 + 1] * w


def _cell_edges(n: int, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Centred cells: [0, dt/2], [dt/2, 3dt/2], ... (the first a half cell at t = 0)."""
    hi = (np.arange(n) + 0.5) * dt
    lo = np.concatenate([[0.0], hi[:-1]])
    return lo, hi


def residue_cells(mtt_s: np.ndarray, shape: float, n: int, dt: float) -> np.ndarray:
    """Integrals (s) of R_MTT over the centred cells, shape (len(mtt), n); rows sum to MTT."""
    _, integral = _residue_table(float(shape))
    lo, hi = _cell_edges(n, dt)
    mtt = np.asarray(mtt_s, dtype=float)[:, None]
    return mtt * (_lookup(integral, hi[None, :] / mtt) - _lookup(integral, lo[None, :] / mtt))


def residue_points(mtt_s: np.ndarray, shape: float, n: int, dt: float) -> np.ndarray:
    """R_MTT(k dt), shape (len(mtt), n)."""
    table, _ = _residue_table(float(shape))
    t = np.arange(n) * dt
    return _lookup(table, t[None, :] / np.asarray(mtt_s, dtype=float)[:, None])


def dispersion_moments(beta_s, n: int, dt: float, substeps: int = KERNEL_SUBSTEPS):
    """Integral and first moment of ``kinetics.dispersion_kernel`` over the cells [k dt, (k+1) dt].

    Returns ``m0`` (integrals, rows of unit sum) and ``m1`` (integral of ``(t - k dt) / dt * h``),
    each of shape (len(beta), n), by Simpson's rule on ``substeps`` sub-intervals per cell.
    ``beta = 0`` is no dispersion: all weight at t = 0.
    """
    beta_s = np.asarray(beta_s, dtype=float)
    m0 = np.zeros((len(beta_s), n))
    m1 = np.zeros((len(beta_s), n))
    sub = np.arange(n * substeps + 1) * (dt / substeps)
    simpson = np.ones(substeps + 1)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    simpson *= dt / substeps / 3.0
    frac = np.arange(substeps + 1) / substeps
    gather = np.arange(n)[:, None] * substeps + np.arange(substeps + 1)[None, :]
    for row, beta in enumerate(beta_s):
        if beta <= 0:
            m0[row, 0] = 1.0
            continue
        h = kinetics.dispersion_kernel(sub, beta)[gather]
        m0[row] = h @ simpson
        m1[row] = h @ (simpson * frac)
        total = m0[row].sum()
        m0[row] /= total
        m1[row] /= total
    return m0, m1


def dispersion_cells(beta_s, n: int, dt: float) -> np.ndarray:
    """Integrals of ``kinetics.dispersion_kernel`` over centred cells [(k-1/2) dt, (k+1/2) dt]
    (the first [0, dt/2]), rows of unit sum; ``beta = 0`` is the identity."""
    m0, _ = dispersion_moments(beta_s, 2 * n, dt / 2.0, KERNEL_SUBSTEPS // 2)
    cells = np.zeros((m0.shape[0], n))
    cells[:, 0] = m0[:, 0]
    cells[:, 1:] = m0[:, 1:-1:2] + m0[:, 2::2]
    return cells


def _pairs(mtt_s, beta_s):
    """Unique (MTT, beta) pairs (quantised) and the index of each voxel's pair."""
    key = np.stack([quantize(mtt_s), quantize(beta_s)], axis=1)
    pairs, inverse = np.unique(key, axis=0, return_inverse=True)
    return pairs, inverse.ravel()


def tissue_curves(aif_fine, cbf, cbv, delay_s, beta_s, shape, frame_times_s, dt=FINE_DT_S, chunk=CHUNK):
    """Noise-free tissue concentration at the frame times, shape (N, n_frames).

    Parameters
    ----------
    aif_fine : (n,) AIF on the fine grid ``k * dt`` from t = 0 (concentration units).
    cbf, cbv : (N,) CBF in mL/100g/min and CBV in mL/100g (CBV / CBF * 60 is the MTT, which is
        quantised to 0.01 s; voxels with CBF = 0 give 0).
    delay_s, beta_s : (N,) delay after the AIF and dispersion time constant (s).
    shape : gamma shape of the residue (``inf`` = box).
    frame_times_s : (T,) sample times (s, same origin as the fine grid).
    """
    aif_fine = np.asarray(aif_fine, dtype=float)
    cbf = np.asarray(cbf, dtype=float)
    n_vox = len(cbf)
    frame_times_s = np.asarray(frame_times_s, dtype=float)
    out = np.zeros((n_vox, len(frame_times_s)))
    active = np.flatnonzero(cbf > 0)
    if active.size == 0:
        return out
    mtt = quantize(np.asarray(cbv, float)[active] / cbf[active] * 60.0)
    pairs, inverse = _pairs(mtt, np.asarray(beta_s, float)[active])
    n = len(aif_fine)
    n_fft = scipy.fft.next_fast_len(2 * n)
    aif_spec = scipy.fft.rfft(aif_fine, n_fft)
    rate = kinetics.flow_rate_per_s(cbf[active])
    delay = np.asarray(delay_s, dtype=float)[active]
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(0, len(pairs) + chunk, chunk))
    betas, beta_index = np.unique(pairs[:, 1], return_inverse=True)
    beta_spec = scipy.fft.rfft(dispersion_cells(betas, n, dt), n_fft, axis=1)
    for c, start in enumerate(range(0, len(pairs), chunk)):
        stop = min(start + chunk, len(pairs))
        spec = scipy.fft.rfft(residue_cells(pairs[start:stop, 0], shape, n, dt), n_fft, axis=1, workers=2)
        spec *= beta_spec[beta_index[start:stop]] * aif_spec
        curves = scipy.fft.irfft(spec, n_fft, axis=1, workers=2)[:, :n]
        vox = order[bounds[c]:bounds[c + 1]]
        rows = inverse[vox] - start
        pos = (frame_times_s[None, :] - delay[vox, None]) / dt
        i0 = np.clip(np.floor(pos).astype(np.int64), 0, n - 2)
        w = np.clip(pos - i0, 0.0, 1.0)
        values = curves[rows[:, None], i0] * (1.0 - w) + curves[rows[:, None], i0 + 1] * w
        out[active[vox]] = np.where(pos >= 0, values, 0.0) * rate[vox, None]
    return out


def effective_residue_peak(mtt_s, beta_s, shape, dt=TMAX_DT_S, chunk=CHUNK) -> np.ndarray:
    """Time (s) of the maximum of the effective residue ``E = (h_beta conv R_MTT)(t)``, per voxel.

    True Tmax = delay + this value. ``E(t_n) = integral_0^t_n h(tau) R(t_n - tau) dtau`` is computed
    by product integration on a ``dt`` grid (0.05 s): exact integrals of the kernel times ``R``
    interpolated linearly within each cell, so only ``R`` is discretised. With no dispersion
    (beta = 0) E = R, which peaks at t = 0. The peak is refined by a parabola through the maximum
    and its neighbours; on a flat top it is the first time within TMAX_PLATEAU_TOLERANCE of it.
    """
    mtt_s = np.asarray(mtt_s, dtype=float)
    if mtt_s.size == 0:
        return np.zeros(0)
    pairs, inverse = _pairs(mtt_s, beta_s)
    peaks = np.zeros(len(pairs))
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    n_max = int(np.ceil((1.5 * pairs[:, 0].max() + 6.0 * pairs[:, 1].max() + 1.0) / dt)) + 2
    betas, beta_index = np.unique(pairs[:, 1], return_inverse=True)
    m0, m1 = dispersion_moments(betas, n_max, dt)
    # weight of R[n - k] in E[n]: the cell k seen from its start, the cell k - 1 from its end
    weights = m0 - m1
    weights[:, 1:] += m1[:, :-1]
    identity = betas <= 0
    for start in range(0, len(pairs), chunk):
        idx = order[start:start + chunk]
        mtt, beta = pairs[idx, 0], pairs[idx, 1]
        n = min(int(np.ceil((1.5 * mtt.max() + 6.0 * beta.max() + 1.0) / dt)) + 2, n_max)
        n_fft = scipy.fft.next_fast_len(2 * n)
        rows_beta, local = np.unique(beta_index[idx], return_inverse=True)
        w_spec = scipy.fft.rfft(weights[rows_beta, :n], n_fft, axis=1)
        r_spec = scipy.fft.rfft(residue_points(mtt, shape, n, dt), n_fft, axis=1, workers=2)
        effective = scipy.fft.irfft(r_spec * w_spec[local], n_fft, axis=1, workers=2)[:, :n]
        # remove the cell beyond t_n that the full convolution adds (R(0) = 1), except for identity
        overshoot = (m0 - m1)[rows_beta, :n] * ~identity[rows_beta, None]
        effective -= overshoot[local]
        top = effective.max(axis=1, keepdims=True)
        k = np.argmax(effective >= top - TMAX_PLATEAU_TOLERANCE * np.abs(top), axis=1)
        inner = (k > 0) & (k < n - 1) & (k == np.argmax(effective, axis=1))
        kk = np.clip(k, 1, n - 2)
        rows = np.arange(len(idx))
        y0, y1, y2 = effective[rows, kk - 1], effective[rows, kk], effective[rows, kk + 1]
        curvature = y0 - 2 * y1 + y2
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(curvature < 0, 0.5 * (y0 - y2) / curvature, 0.0)
        peaks[idx] = (k + np.where(inner, np.clip(shift, -0.5, 0.5), 0.0)) * dt
    return peaks[inverse]
