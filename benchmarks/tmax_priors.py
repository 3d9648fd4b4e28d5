"""Tmax estimators of the parametric fit on the tile phantom: which summary of the posterior, and
which prior, come closest to the truth at CT-like noise.

The default method reports the posterior mean of Tmax under a prior flat in Tmax
(``strokeperf.deconvolution.parametric``). This benchmark compares, on the CT-like tiles of
``benchmarks/accuracy.py --quick`` with the same candidate dictionary:

- posterior mean and posterior median (the estimator that minimises the absolute error);
- the default Tmax-flat prior, the flat prior on the candidate grid, and an empirical-Bayes prior:
  the candidates' prior weights estimated from all curves of the phantom together by EM, the
  nonparametric maximum-likelihood estimate of a mixing distribution (Laird 1978, JASA 73:805;
  Efron 2016, Biometrika 103:1). It learns the population of (delay, dispersion, transit time,
  shape) that the image holds, which is the most any per-voxel estimator can borrow from the rest
  of the image without spatial smoothing.

    python benchmarks/tmax_priors.py                    # about 1 minute
    python benchmarks/tmax_priors.py --em-iterations 3 10 --ct-noise 1

Prints, per estimator, Tmax median error / mean absolute error (s) per true-Tmax bin, the overall
MAE, and the median error per tile dispersion (s), and the time taken.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import accuracy as tiles_phantom
from experiments.posterior import PosteriorStudy
from strokeperf.deconvolution.parametric import DEFAULT_CHUNK_SIZE as CHUNK


def posterior_tmax(model, curves, log_prior):
    """Posterior mean and median Tmax (s) of every curve under ``log_prior`` (one per candidate)."""
    order = np.argsort(model.candidate_tmax, kind="stable")
    sorted_tmax = model.candidate_tmax[order]
    mean, median = [], []
    for start in range(0, curves.shape[0], CHUNK):
        w = model.posterior_weights(curves[start:start + CHUNK], log_prior)
        mean.append(w @ model.candidate_tmax)
        below = (np.cumsum(w[:, order], axis=1) < 0.5).sum(axis=1)
        median.append(sorted_tmax[np.minimum(below, sorted_tmax.size - 1)])
    return np.concatenate(mean), np.concatenate(median)


def em_prior(model, curves, iterations, start):
    """Empirical-Bayes log prior: ``iterations`` EM steps of the candidates' weights, from ``start``."""
    log_prior = start - np.log(np.exp(start).sum())
    for _ in range(iterations):
        total = np.zeros(log_prior.size)
        for s in range(0, curves.shape[0], CHUNK):
            total += model.posterior_weights(curves[s:s + CHUNK], log_prior).sum(axis=0)
        log_prior = np.log(np.maximum(total / curves.shape[0], 1e-300))
    return log_prior


def summary(label, tmax, truth, params, repeats, duration, seconds):
    err = np.clip(tmax, 0.0, duration).reshape(-1, repeats) - truth[:, None]
    cells = []
    for lo, hi in tiles_phantom.TMAX_BINS:
        e = err[(truth >= lo) & (truth < hi)]
        cells.append(f"{lo:>2}-{hi:<2}s {np.median(e):+5.2f}/{np.mean(np.abs(e)):4.2f}")
    disp = " ".join(f"{d:g}s:{np.median(err[params[:, 4] == d]):+5.2f}"
                    for d in tiles_phantom.DISPERSIONS)
    print(f"  {label:34s} " + "  ".join(cells)
          + f" | all {np.mean(np.abs(err)):4.2f} | by dispersion {disp} | {seconds:5.1f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realisations", type=int, default=20)
    parser.add_argument("--ct-noise", type=float, default=tiles_phantom.CT_NOISE_HU)
    parser.add_argument("--em-iterations", type=int, nargs="+", default=[3, 30])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tiles_phantom.CT_NOISE_HU = args.ct_noise
    spec = tiles_phantom.ACQUISITIONS["CT"]
    params = tiles_phantom.tiles(quick=True)
    t = np.arange(spec["frames"]) * spec["dt"]
    aif = tiles_phantom.aif_curve(t, spec["aif_peak"], spec["aif_beta"])
    clean, truth = tiles_phantom.clean_curves(params, spec["frames"], spec["dt"], spec["aif_peak"],
                                              spec["aif_beta"])
    curves = tiles_phantom.noisy_curves(clean, t, "CT", args.realisations,
                                        np.random.default_rng(args.seed))
    model = PosteriorStudy(aif, t)
    print(f"CT tiles: {params.shape[0]} x {args.realisations} realisations, {args.ct_noise} HU; "
          f"{model.candidate_tmax.size} candidates; Tmax median error / MAE (s) per true-Tmax bin")
    priors = [("Tmax-flat (default)", lambda: model.log_prior),
              ("grid-flat", lambda: np.zeros_like(model.log_prior))]
    priors += [(f"empirical Bayes, {n} EM steps",
                lambda n=n: em_prior(model, curves, n, model.log_prior.astype(float)))
               for n in args.em_iterations]
    for name, make in priors:
        start = time.perf_counter()
        log_prior = make()
        mean, median = posterior_tmax(model, curves, log_prior)
        seconds = time.perf_counter() - start
        summary(f"{name}: mean", mean, truth, params, args.realisations, t[-1], seconds)
        summary(f"{name}: median", median, truth, params, args.realisations, t[-1], seconds)


if __name__ == "__main__":
    main()
