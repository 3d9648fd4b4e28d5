"""Accuracy of the deconvolution methods on a tile phantom with analytic ground truth.

A digital phantom in the style of Kudo et al. 2013 (Radiology 267:201): tiles of tissue curves on a
grid of CBF x MTT x delay, each with several residue shapes and dispersions, many noise realisations
per tile, deconvolved with the phantom's (noise-free) AIF by every method of
``strokeperf.deconvolution.METHODS`` through ``perfusion_maps`` (the pipeline's own path, clamps
included). Run::

    python benchmarks/accuracy.py            # full: 1701 tiles x 200 realisations, CT and MR noise
    python benchmarks/accuracy.py --quick    # 20 realisations, fewer tiles
    python benchmarks/accuracy.py --quick --methods parametric --oracle

``--oracle`` adds two reference rows: the parametric fit given the tile phantom's own discrete
parameter set (its delays, dispersions, residue shapes and transit times) as its candidate grid, i.e.
a prior that knows the phantom; and the same with the default continuous delay grid (-2 s upwards in
0.5 s steps) instead of the phantom's 2 s delay lattice, which no real method can know. The second
row's Tmax error is a practical floor for any per-voxel estimator at that noise: with exponential
dispersion and a smooth AIF an earlier arrival plus more dispersion fits nearly the same curve as a
later, undispersed one, yet moves Tmax, and only a prior can arbitrate (docs/accuracy.md).

Phantom (truth from ``strokeperf.kinetics``, convolved on a 0.02 s grid, sampled at the frames):

- CBF 10-70 mL/100 g/min x MTT 2-16 s, only pairs with CBV = CBF MTT / 60 in 1-5 mL/100 g;
  delays 0-12 s in 2 s steps; residues gamma shape 1 (exponential), 3 and 20 (near box);
  dispersion none or exponential kernel 1 or 2 s (Calamante et al. 2000).
- AIF ``gamma_variate`` (arrival 6 s, alpha 3, beta 2.5 s on CT for a full width at half maximum of
  about 10 s as with a 40-50 mL injection, 1.5 s on MR for the tighter DSC bolus) plus a
  recirculation (12 s later, 10 % of the peak, twice the width).
- CT-like: 60 frames at 1.0 s, AIF peak 400 HU, tissue delta-HU with white noise of SD 2.0 HU per
  frame on the HU curve, then the baseline (mean of the frames before the AIF arrival) subtracted as
  the pipeline does. 2 HU is the pipeline's own figure: 10 HU of white noise in 1.5 x 1.5 x 5 mm CTP
  voxels falls to 1.8 HU after its default 5 mm FWHM in-brain smoothing
  (``concentration.DENOISE_FWHM_MM``, measured in benchmarks/speed.py).
- MR-like: 50 frames at 1.5 s, AIF peak delta-R2* 120 1/s, TE 30 ms, signal
  ``S = exp(-TE delta-R2*)`` with complex Gaussian noise of SD 1/80 of the baseline signal
  (magnitude taken), converted back by ``-ln(S / S0) / TE`` with S0 the mean pre-arrival signal: the
  noise in delta-R2* grows with the signal drop, as in DSC.
- True Tmax per tile: the time of the maximum of ``(dispersion conv R)(t - delay)`` on the fine
  grid, the effective residue that deconvolution with the measured AIF estimates (Calamante et
  al. 2010, Stroke 41:1169).

Printed per method and noise: CBF, CBV and MTT bias (mean over realisations / truth - 1) and CV
(SD / mean) per tile, condensed to the median and 10th-90th percentiles over tiles; Tmax median
error and mean absolute error per true-Tmax bin; the change of CBF between delays 0 and 6 s (tiles
otherwise equal); the fraction of realisations with Tmax > 6 s where the truth is below (and
above) 6 s; runtime.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from strokeperf import kinetics
from strokeperf.deconvolution import METHODS, perfusion_maps

FINE_DT = 0.02                      # s, truth grid (50 x finer than the CT frames)
AIF_ARRIVAL_S = 6.0
CBF_GRID = (10, 20, 30, 40, 50, 60, 70)          # mL/100 g/min
MTT_GRID = (2, 4, 6, 8, 10, 12, 14, 16)           # s
CBV_RANGE = (1.0, 5.0)                            # mL/100 g kept
DELAYS = (0, 2, 4, 6, 8, 10, 12)                  # s
SHAPES = (1.0, 3.0, 20.0)                         # gamma shape of the residue
DISPERSIONS = (0.0, 1.0, 2.0)                     # s, exponential kernel
TMAX_BINS = ((0, 2), (2, 6), (6, 10), (10, 14))   # s, true Tmax
HYPOPERFUSION_TMAX_S = 6.0

ACQUISITIONS = {
    # frames, interval (s), AIF peak (concentration units)
    "CT": dict(frames=60, dt=1.0, aif_peak=400.0, aif_beta=2.5, units="HU"),
    "MR": dict(frames=50, dt=1.5, aif_peak=120.0, aif_beta=1.5, units="1/s"),
}
CT_NOISE_HU = 2.0
MR_TE_S = 0.030
MR_BASELINE_SNR = 80.0


def aif_curve(t, peak, beta):
    """Gamma-variate first pass (alpha 3, ``beta`` s) plus a recirculation 12 s later with 10 % of
    the peak and twice the width (concentration units of ``peak``)."""
    t = np.asarray(t, dtype=float)
    return (kinetics.gamma_variate(t, AIF_ARRIVAL_S, 3.0, beta, peak)
            + kinetics.gamma_variate(t, AIF_ARRIVAL_S + 12.0, 3.0, 2.0 * beta, 0.1 * peak))


def tiles(quick: bool):
    """Tile parameters: array (n, 6) of CBF, MTT, delay, shape, dispersion, CBV."""
    cbfs = CBF_GRID[::2] if quick else CBF_GRID
    delays = (0, 2, 6, 10, 12) if quick else DELAYS
    rows = []
    for cbf, mtt, delay, shape, disp in itertools.product(cbfs, MTT_GRID, delays, SHAPES,
                                                          DISPERSIONS):
        cbv = cbf * mtt / 60.0
        if CBV_RANGE[0] <= cbv <= CBV_RANGE[1]:
            rows.append((cbf, mtt, delay, shape, disp, cbv))
    return np.array(rows, dtype=float)


def clean_curves(params, frames, dt, aif_peak, aif_beta):
    """Noise-free tissue curves (n, frames) at the frame times and the true Tmax (n,) in s."""
    duration = (frames - 1) * dt
    tf = np.arange(0.0, duration + FINE_DT / 2, FINE_DT)
    nfft = 2 * tf.size
    cbf, mtt, delay, shape, disp = (params[:, i:i + 1] for i in range(5))
    h = kinetics.residue(tf[None, :] - delay, mtt, shape)             # (n, fine)
    dispersed = disp[:, 0] > 0
    if np.any(dispersed):
        kern = np.zeros((params.shape[0], tf.size))
        kern[dispersed] = np.exp(-tf[None, :] / disp[dispersed]) / disp[dispersed] * FINE_DT
        conv = np.fft.irfft(np.fft.rfft(h, nfft) * np.fft.rfft(kern, nfft), nfft)[:, : tf.size]
        h = np.where(dispersed[:, None], conv, h)
    tmax_true = tf[np.argmax(h, axis=1)]
    a = aif_curve(tf, aif_peak, aif_beta)
    c = np.fft.irfft(np.fft.rfft(h, nfft) * np.fft.rfft(a, nfft)[None, :], nfft)[:, : tf.size]
    c *= kinetics.flow_rate_per_s(cbf) * FINE_DT
    step = int(round(dt / FINE_DT))
    return c[:, ::step][:, :frames], tmax_true


def noisy_curves(clean, t, acquisition, repeats, rng):
    """Noise realisations (n * repeats, frames) float32 of the clean curves, baseline removed."""
    baseline = t < AIF_ARRIVAL_S
    curves = np.repeat(clean, repeats, axis=0)
    if acquisition == "CT":
        curves += rng.normal(0.0, CT_NOISE_HU, curves.shape)
        curves -= curves[:, baseline].mean(axis=1, keepdims=True)
    else:
        signal = np.exp(-MR_TE_S * curves)
        sd = 1.0 / MR_BASELINE_SNR
        signal = np.hypot(signal + rng.normal(0.0, sd, signal.shape),
                          rng.normal(0.0, sd, signal.shape))
        s0 = signal[:, baseline].mean(axis=1, keepdims=True)
        curves = -np.log(np.clip(signal / s0, 1e-3, None)) / MR_TE_S
    return curves.astype(np.float32)


def estimate(method, options, curves, aif, t):
    """CBF, CBV, MTT, Tmax (flat arrays) from perfusion_maps on an (N, 1, 1, T) series."""
    conc = curves.reshape(curves.shape[0], 1, 1, curves.shape[1])
    mask = np.ones(conc.shape[:3], dtype=bool)
    maps = perfusion_maps(conc, mask, aif, t, method=method, **options)
    return {k: maps[k].reshape(-1).astype(float) for k in ("cbf", "cbv", "mtt", "tmax")}


def _spread(x):
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
    return f"{100 * p50:+6.1f} [{100 * p10:+6.1f},{100 * p90:+6.1f}]"


def report(name, params, est, tmax_true, repeats, seconds):
    n = params.shape[0]
    truth = {"cbf": params[:, 0], "cbv": params[:, 5], "mtt": params[:, 1]}
    parts = []
    for key in ("cbf", "cbv", "mtt"):
        x = est[key].reshape(n, repeats)
        mean = x.mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cv = np.where(mean > 0, x.std(axis=1) / mean, np.nan)
        parts.append(f"{key.upper()} bias {_spread(mean / truth[key] - 1)} "
                     f"CV {100 * np.nanmedian(cv):4.0f}%")
    print(f"  {name:18s} {seconds:6.2f} s | " + " | ".join(parts))
    tm = est["tmax"].reshape(n, repeats)
    err = tm - tmax_true[:, None]
    cells = []
    for lo, hi in TMAX_BINS:
        sel = (tmax_true >= lo) & (tmax_true < hi)
        e = err[sel]
        cells.append(f"{lo:>2}-{hi:<2}s {np.median(e):+5.2f}/{np.mean(np.abs(e)):4.2f}")
    # CBF change from delay 0 to 6 s, tiles otherwise equal.
    cbf_mean = est["cbf"].reshape(n, repeats).mean(axis=1)
    key = {tuple(p[[0, 1, 3, 4]]): i for i, p in enumerate(params) if p[2] == 0}
    ratios = [cbf_mean[i] / cbf_mean[key[tuple(p[[0, 1, 3, 4]])]] - 1
              for i, p in enumerate(params) if p[2] == 6 and tuple(p[[0, 1, 3, 4]]) in key]
    above = tm > HYPOPERFUSION_TMAX_S
    true_above = tmax_true > HYPOPERFUSION_TMAX_S
    fp = above[~true_above].mean()
    sens = above[true_above].mean()
    print(f"  {'':18s} Tmax median err/MAE: " + "  ".join(cells)
          + f" | CBF 6 s vs 0 s delay {_spread(np.array(ratios))}"
          + f" | Tmax>6: {100 * sens:4.1f}% of true>6, {100 * fp:4.1f}% of true<=6")


def oracle_options(params, delays: bool = True):
    """Candidate grids of the parametric fit equal to the tile phantom's parameter values (its
    delays too, or the default continuous delay grid when ``delays`` is False), each dispersion
    with the same prior mass, as in the phantom."""
    dispersions = tuple(np.unique(params[:, 4]))
    options = dict(mtts=np.unique(params[:, 1]), shapes=tuple(np.unique(params[:, 3])),
                   dispersions=dispersions, dispersion_mass=np.ones(len(dispersions)))
    if delays:
        options["delays"] = np.unique(params[:, 2])
    return options


def method_list(names):
    configs = []
    for name in names:
        configs.append((name, name, {}))
        if name == "tikhonov":
            configs.append(("tikhonov (GCV)", "tikhonov", {"criterion": "gcv"}))
    return configs


def main(argv=None):
    global CT_NOISE_HU  # --ct-noise overrides it for noisy_curves
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 realisations, fewer tiles")
    parser.add_argument("--realisations", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--acquisitions", nargs="+", default=list(ACQUISITIONS),
                        choices=list(ACQUISITIONS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--oracle", action="store_true",
                        help="also the parametric fit with the phantom's own parameter grid, "
                             "with and without its delay lattice")
    parser.add_argument("--ct-noise", type=float, default=CT_NOISE_HU,
                        help=f"CT-like noise SD per frame, HU (default {CT_NOISE_HU})")
    args = parser.parse_args(argv)
    CT_NOISE_HU = args.ct_noise
    repeats = args.realisations or (20 if args.quick else 200)
    params = tiles(args.quick)
    rng = np.random.default_rng(args.seed)
    total = time.perf_counter()
    for acq in args.acquisitions:
        spec = ACQUISITIONS[acq]
        t = np.arange(spec["frames"]) * spec["dt"]
        aif = aif_curve(t, spec["aif_peak"], spec["aif_beta"])
        clean, tmax_true = clean_curves(params, spec["frames"], spec["dt"], spec["aif_peak"],
                                        spec["aif_beta"])
        curves = noisy_curves(clean, t, acq, repeats, rng)
        peaks = clean.max(axis=1)
        noise = (f"{CT_NOISE_HU} HU white noise" if acq == "CT" else
                 f"TE {1000 * MR_TE_S:.0f} ms, baseline SNR {MR_BASELINE_SNR:.0f}")
        print(f"\n{acq}: {params.shape[0]} tiles x {repeats} realisations, {spec['frames']} frames "
              f"at {spec['dt']} s, AIF peak {spec['aif_peak']:.0f} {spec['units']}, tissue peaks "
              f"{peaks.min():.1f}-{peaks.max():.1f} {spec['units']} "
              f"(median {np.median(peaks):.1f}), "
              f"{noise}; true Tmax {tmax_true.min():.1f}-{tmax_true.max():.1f} s")
        print("  bias and CV in %, median [10th, 90th percentile] over tiles; Tmax error in s")
        configs = method_list(args.methods)
        if args.oracle:
            configs.append(("parametric oracle", "parametric", oracle_options(params)))
            configs.append(("oracle, any delay", "parametric", oracle_options(params, False)))
        for label, method, options in configs:
            start = time.perf_counter()
            est = estimate(method, options, curves, aif, t)
            report(label, params, est, tmax_true, repeats, time.perf_counter() - start)
    print(f"\ntotal {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
