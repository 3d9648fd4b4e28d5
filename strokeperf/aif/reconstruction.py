"""Reconstruction of a saturated DSC arterial input function from the tissue curves.

At the bolus peak the gradient-echo signal of arterial blood falls as exp(-TE delta-R2*) to the
noise floor, so the arterial curve is censored there in every voxel that holds blood (pure or
partial volume: the blood's share of the signal vanishes either way; Calamante 2013, Prog Nucl Magn
Reson Spectrosc 74:1). :func:`strokeperf.aif.mr.select_mr_aif` keeps the arterial curve up to the
censoring level; the missing peak leaves a flat-topped AIF that is too broad and too late, and Tmax
read with it is too short, most of all in dispersed hypoperfused tissue (measured on phantoms:
``benchmarks/dsc_accuracy.py``, docs/accuracy.md).

The censored frames are estimated from the tissue, in the spirit of model-based blind estimation of
an input function (Fluckiger et al. 2009, Magn Reson Med 62:1477): every tissue curve is the AIF
convolved with its own residue, ``C = F (AIF conv h)``, and the tissue curves are never saturated (a
few per cent of blood). Only the censored frames are unknown: in each, the averaged voxels that sit
at the censoring level are raised to ``g``, a gamma-variate first pass (Madsen 1992, Phys Med Biol
37:1597) with free arrival, shape, width and height, while every uncensored sample keeps its
measured value (the rising edge and the recirculation are observed). The four parameters maximise
the profile likelihood of a sample of brain tissue curves under the tracer-kinetic model of
:mod:`strokeperf.deconvolution.parametric`: for each curve its best-fitting candidate residue (flow
and baseline profiled out) leaves a residual energy ``r``; with an unknown noise variance per curve
the log likelihood is ``-T/2 log r`` up to constants, so the criterion is ``sum log(r / energy)``
(lower is better). A first pass too low or too broad leaves the tissue's sharp first passes unexplained, one
too high or too narrow their tails; nothing about the shape is assumed beyond the gamma variate's
family. The observed frames constrain it: ``g`` must follow the rising edge before the first
censored frame and may not exceed the measured curve (first pass plus recirculation) in the
uncensored frames after it, within :data:`EDGE_TOLERANCE` of the censoring level.

Measured on eight DSC phantom sessions (3 x 3 x 5 mm, AIF censored in 5-10 frames; the sessions this
method was developed on): Tmax > 6 s volume error -8 to +8 % (mean +2 %) against -11 to -58 % (mean
-20 %) with the censored AIF; Tmax > 10 s -45 to +18 % (mean -5 %) against -19 to -100 % (mean -76
%). ``benchmarks/dsc_accuracy.py``; docs/accuracy.md has these and unseen sessions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

from strokeperf import kinetics
from strokeperf.timecurves import check_frame_times
from strokeperf.errors import DataError
from strokeperf.deconvolution.parametric import DELAY_RANGE_S, ParametricDeconvolution

#: Tissue curves sampled for the likelihood (a fixed random subset of the enhancing brain voxels):
#: enough that the criterion's noise is far below the differences between candidate AIFs.
TISSUE_SAMPLE = 2000
#: Seed of that sample, so that a session gives the same AIF run to run.
SAMPLE_SEED = 20091477
#: Candidate grid of the tissue model used by the criterion: coarser than the deconvolution's own
#: (one candidate per second of delay over the same range, 8 transit times, 4 dispersions), 6 times
#: fewer candidates and the same identification of the AIF on the phantom.
CRITERION_DELAY_STEP_S = 1.0
CRITERION_MTTS = 8
CRITERION_DISPERSIONS_S = (0.0, 1.5, 3.5, 7.0)
#: Before the first censored frame the first pass must match the measured curve, and in the
#: uncensored frames after it not exceed it (the recirculation only adds), within this fraction of
#: the censoring level: below the level the mean of the most blood-filled voxels measures the
#: arterial curve.
EDGE_TOLERANCE = 0.05
#: Starting shapes (gamma alpha) and heights (multiples of the censoring level) of the search; the
#: best of the local optima is kept.
START_ALPHAS = (2.0, 4.0)
START_HEIGHTS = (3.0, 5.0)
#: Likelihood evaluations per start (Nelder-Mead on log parameters).
MAX_EVALUATIONS = 150
#: Search bounds: gamma alpha, width beta (s), height (multiples of the censoring level).
ALPHA_RANGE = (0.5, 20.0)
BETA_RANGE_S = (0.2, 8.0)
HEIGHT_RANGE = (1.0, 30.0)


@dataclass
class AIFReconstruction:
    """Result of :func:`reconstruct_censored_aif`.

    Attributes
    ----------
    curve : ndarray (T,)
        The AIF: measured frames as they were, censored frames raised by the censored fraction of
        the first pass's excess over the censoring level.
    first_pass : dict
        Gamma-variate parameters of the fill: ``arrival_s``, ``alpha``, ``beta_s``, ``peak``
        (concentration units).
    log_likelihood_gain : float
        Criterion of the measured (censored) AIF minus that of the reconstruction, summed over the
        sampled tissue curves (> 0: the tissue is explained better).
    tissue_curves : int
        Number of tissue curves in the criterion.
    evaluations : int
        Likelihood evaluations of the search.
    """

    curve: np.ndarray
    first_pass: dict
    log_likelihood_gain: float
    tissue_curves: int
    evaluations: int


class TissueCriterion:
    """``sum log(residual / energy)`` of tissue curves under the tracer-kinetic model with a given
    AIF (module docstring); lower is better.

    Parameters
    ----------
    tissue_curves : array_like (N, T)
        Concentration curves (delta-R2*), baseline 0.
    frame_times : array_like (T,)
        Seconds.
    """

    def __init__(self, tissue_curves, frame_times):
        curves = np.asarray(tissue_curves, dtype=np.float32)
        self.frame_times = check_frame_times(frame_times, curves.shape[1])
        centred = curves - curves.mean(axis=1, keepdims=True)
        energy = np.einsum("nt,nt->n", centred, centred, dtype=np.float64)
        keep = energy > 0
        if not keep.any():
            raise DataError("no enhancing tissue curve to reconstruct the AIF from")
        self.centred = np.ascontiguousarray(centred[keep])
        self.energy = energy[keep]
        duration = float(self.frame_times[-1] - self.frame_times[0])
        last = min(DELAY_RANGE_S[1], duration - 2.0 * CRITERION_DELAY_STEP_S)
        self.grid = dict(delays=np.arange(DELAY_RANGE_S[0], last + 1e-9, CRITERION_DELAY_STEP_S),
                         mtts=np.geomspace(1.0, 24.0, CRITERION_MTTS),
                         dispersions=CRITERION_DISPERSIONS_S)
        self.evaluations = 0

    def __call__(self, aif) -> float:
        self.evaluations += 1
        try:
            model = ParametricDeconvolution(aif, self.frame_times, **self.grid)
        except DataError:
            return np.inf
        best = model.explained_energy(self.centred)
        residual = np.maximum(self.energy - best, 1e-12 * self.energy)
        return float(np.sum(np.log(residual / self.energy)))


def sample_tissue(tissue_conc, mask, n: int = TISSUE_SAMPLE, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Up to ``n`` curves (n, T) of ``mask`` voxels of a 4D series, a fixed random subset."""
    index = np.flatnonzero(np.asarray(mask, dtype=bool))
    if index.size == 0:
        raise DataError("no tissue voxel to reconstruct the AIF from (empty brain mask)")
    if index.size > n:
        index = np.sort(np.random.default_rng(seed).choice(index, n, replace=False))
    conc = np.asarray(tissue_conc)
    return conc.reshape(-1, conc.shape[-1])[index].astype(np.float32)


def reconstruct_censored_aif(curve, censored_fraction, level, frame_times,
                             tissue_curves) -> AIFReconstruction:
    """Fill the censored frames of an AIF from the tissue curves (module docstring).

    Parameters
    ----------
    curve : array_like (T,)
        Measured AIF (delta-R2*, 1/s): the mean of arterial voxels each censored at ``level``.
    censored_fraction : array_like (T,)
        Fraction of those voxels at ``level`` in each frame. A frame's true mean exceeds the
        measured one by that fraction times the excess of the arterial curve over ``level``, so the
        fill is ``curve + fraction * max(g - level, 0)`` for the first pass ``g``. The first frame
        with a censored voxel must be preceded by at least one without.
    level : float
        Censoring level (1/s).
    frame_times : array_like (T,)
        Seconds (irregular sampling allowed).
    tissue_curves : array_like (N, T)
        Tissue concentration curves (e.g. :func:`sample_tissue` of the denoised brain series).

    Returns
    -------
    AIFReconstruction
        With ``curve`` equal to the input when no frame is censored or no fill explains the tissue
        better than the measured curve.
    """
    y = np.asarray(curve, dtype=float)
    t = check_frame_times(frame_times, y.size)
    fraction = np.clip(np.asarray(censored_fraction, dtype=float), 0.0, 1.0)
    if fraction.shape != y.shape:
        raise ValueError(f"censored_fraction has shape {fraction.shape}, the AIF {y.shape}")
    censored = fraction > 0
    level = float(level)
    criterion = TissueCriterion(tissue_curves, t)
    measured = criterion(y)
    if not censored.any():
        return AIFReconstruction(y.copy(), {}, 0.0, criterion.centred.shape[0],
                                 criterion.evaluations)
    first = int(np.flatnonzero(censored)[0])
    if first == 0:
        raise DataError("the AIF is censored from its first frame: no rising edge to anchor it")
    if not (np.isfinite(level) and level > 0):
        raise DataError(f"the AIF censoring level must be positive, got {level}")
    before = np.arange(y.size) < first
    after = (np.arange(y.size) > first) & ~censored

    def fill(params):
        arrival, log_alpha, log_beta, log_height = params
        g = kinetics.gamma_variate(t, arrival, np.exp(log_alpha), np.exp(log_beta),
                                   np.exp(log_height) * level)
        return g, y + fraction * np.maximum(g - level, 0.0)

    lower = np.array([t[0], np.log(ALPHA_RANGE[0]), np.log(BETA_RANGE_S[0]),
                      np.log(HEIGHT_RANGE[0])])
    upper = np.array([t[first], np.log(ALPHA_RANGE[1]), np.log(BETA_RANGE_S[1]),
                      np.log(HEIGHT_RANGE[1])])

    def objective(params):
        if np.any(params < lower) or np.any(params > upper):
            return np.inf
        g, candidate = fill(params)
        # Quadratic penalties, in units of the criterion's scale: the first pass must follow the
        # observed rising edge, and may not exceed the measured total (first pass plus
        # recirculation) in the uncensored frames after it.
        tol = EDGE_TOLERANCE * level
        miss = np.maximum(np.abs(g[before] - y[before]) - tol, 0.0) / level
        over = np.maximum(g[after] - y[after] - tol, 0.0) / level
        return criterion(candidate) + 1e4 * float(np.sum(miss ** 2) + np.sum(over ** 2))

    # Start the first pass one frame interval before the first censored frame.
    arrival0 = float(max(t[first] - 1.5 * (t[first] - t[first - 1]), t[0]))
    rise = float(t[min(first + int(censored.sum()) // 2, y.size - 1)] - arrival0)
    best = None
    for alpha0 in START_ALPHAS:
        for height0 in START_HEIGHTS:
            beta0 = np.clip(max(rise, 1.0) / alpha0, *BETA_RANGE_S)
            start = np.array([arrival0, np.log(alpha0), np.log(beta0), np.log(height0)])
            result = optimize.minimize(objective, start, method="Nelder-Mead",
                                       options=dict(maxfev=MAX_EVALUATIONS, xatol=0.01, fatol=0.5))
            if best is None or result.fun < best.fun:
                best = result
    if best is None or not np.isfinite(best.fun) or not best.fun < measured:
        return AIFReconstruction(y.copy(), {}, 0.0, criterion.centred.shape[0],
                                 criterion.evaluations)
    _, filled = fill(best.x)
    arrival, log_alpha, log_beta, log_height = best.x
    params = {"arrival_s": float(arrival), "alpha": float(np.exp(log_alpha)),
              "beta_s": float(np.exp(log_beta)), "peak": float(np.exp(log_height) * level)}
    return AIFReconstruction(filled, params, float(measured - criterion(filled)),
                             criterion.centred.shape[0], criterion.evaluations)
