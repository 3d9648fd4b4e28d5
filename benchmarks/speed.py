"""Speed and memory of the perfusion core, and the Tmax accuracy figures quoted in the docs.

Run: ``python benchmarks/speed.py [--voxels 1000000] [--skip-denoise] [--accuracy]``.

- Deconvolution: voxels per second for N voxels x 45 frames (fitted in chunks), wall time and the
  peak of Python-allocated memory (tracemalloc), per method (oSVD, fixed-threshold cSVD).
- ``denoise`` on a 120 x 144 x 30 x 45 series.
- ``--accuracy``: Tmax / CBF error against analytic truth over delays 0-14 s, MTT 3-12 s,
  dispersion 0-2.5 s, exponential to box residues and CT-like noise after smoothing, and the
  resulting Tmax > 6 s volume ratio (estimated / true).
"""

from __future__ import annotations

import argparse
import itertools
import time
import tracemalloc

import numpy as np

from strokeperf import kinetics
from strokeperf.concentration import denoise
from strokeperf.deconvolution import BlockCirculantSVD

FINE_DT = 0.02


def aif_curve(t):
    t = np.asarray(t, dtype=float)
    return (kinetics.gamma_variate(t, 4.0, 3.0, 1.5, 300.0)
            + kinetics.gamma_variate(t, 14.0, 3.0, 3.0, 30.0))


def tissue_curve(t, cbf, mtt, delay, shape=1.0, dispersion=0.0):
    tf = np.arange(0.0, t[-1] + 2 * FINE_DT, FINE_DT)
    h = kinetics.residue(tf - delay, mtt, shape)
    if dispersion > 0:
        h = np.convolve(h, kinetics.dispersion_kernel(tf, dispersion) * FINE_DT)[: tf.size]
    c = kinetics.flow_rate_per_s(cbf) * np.convolve(aif_curve(tf), h)[: tf.size] * FINE_DT
    return np.interp(t, tf, c), float(tf[np.argmax(h)])


def measure(label, fn):
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, wall, peak / 2**20


def bench_deconvolution(n_voxels: int):
    t = np.arange(45.0)
    rng = np.random.default_rng(0)
    clean, _ = tissue_curve(t, 50.0, 4.0, 2.0, 3.0, 1.0)
    block = (clean[None] + rng.normal(0, 2.0, (100_000, t.size))).astype(np.float32)
    curves = np.tile(block, (int(np.ceil(n_voxels / block.shape[0])), 1))[:n_voxels]
    print(f"deconvolution: {n_voxels} voxels x {t.size} frames (float32 input "
          f"{curves.nbytes / 2**20:.0f} MiB)")
    for name, options in (("oSVD (OI 0.095)", {}), ("cSVD (threshold 0.1)", {"threshold": 0.1})):
        model = BlockCirculantSVD(aif_curve(t), t, **options)
        model.fit(curves[:4096])  # warm-up (BLAS threads)
        fit, wall, peak_mib = measure(name, lambda: model.fit(curves))
        print(f"  {name:22s} {n_voxels / wall:12,.0f} voxels/s  wall {wall:6.2f} s  "
              f"peak traced memory {peak_mib:7.1f} MiB (incl. the fit's residue output "
              f"{fit.residue.nbytes / 2**20:.0f} MiB)")


def bench_denoise():
    rng = np.random.default_rng(1)
    shape = (120, 144, 30)
    conc = rng.normal(0.0, 10.0, shape + (45,)).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[10:110, 10:134, 2:28] = True
    out, wall, peak_mib = measure("denoise", lambda: denoise(conc, mask, (1.5, 1.5, 5.0)))
    print(f"denoise 120x144x30x45, FWHM 5 mm on 1.5x1.5x5 mm: wall {wall:.2f} s, peak traced "
          f"memory {peak_mib:.0f} MiB (output {out.nbytes / 2**20:.0f} MiB); noise 10 HU -> "
          f"{out[mask].std():.2f} HU")


def accuracy(sigma: float = 2.0, repeats: int = 50):
    t = np.arange(45.0)
    rng = np.random.default_rng(2)
    rows, curves, truth = [], [], []
    for delay, mtt, disp, shape in itertools.product(
        [0, 2, 4, 5, 6, 7, 8, 10, 12, 14], [3, 5, 8, 12], [0.0, 1.0, 2.5], [1.0, 3.0, np.inf]
    ):
        cbf = 40.0 if mtt < 8 else 20.0
        c, tm = tissue_curve(t, cbf, mtt, delay + rng.uniform(0, 1), shape, disp)
        rows.append((cbf, disp, shape))
        curves.append(c)
        truth.append(tm)
    rows, truth = np.array(rows), np.array(truth)
    noisy = np.repeat(np.array(curves), repeats, 0)
    noisy += rng.normal(0.0, sigma, noisy.shape)
    print(f"accuracy: {len(truth)} settings x {repeats} noise realisations, sigma {sigma} HU "
          "(tissue peak 5-20 HU), 45 frames at 1 s")
    for name, options in (("oSVD OI 0.095", {}), ("cSVD 0.1", {"threshold": 0.1}),
                          ("cSVD 0.2", {"threshold": 0.2})):
        fit = BlockCirculantSVD(aif_curve(t), t, **options).fit(noisy)
        tmax = np.clip(fit.tmax, 0, None).reshape(-1, repeats)
        err = tmax - truth[:, None]
        cbf_ratio = fit.cbf.reshape(-1, repeats) / rows[:, :1]
        est6, true6 = tmax > 6, np.broadcast_to(truth[:, None] > 6, tmax.shape)
        by_disp = " ".join(f"{np.median(err[rows[:, 1] == d]):+.2f}" for d in (0.0, 1.0, 2.5))
        print(f"  {name:14s} Tmax error median {np.median(err):+.2f} s, MAE {np.mean(np.abs(err)):.2f} s"
              f" (by dispersion 0/1/2.5 s: {by_disp}); Tmax>6 volume ratio "
              f"{est6.sum() / true6.sum():.3f}; CBF/true median {np.median(cbf_ratio):.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=1_000_000)
    parser.add_argument("--skip-denoise", action="store_true")
    parser.add_argument("--accuracy", action="store_true")
    args = parser.parse_args()
    bench_deconvolution(args.voxels)
    if not args.skip_denoise:
        bench_denoise()
    if args.accuracy:
        for sigma in (0.0, 2.0, 4.0):
            accuracy(sigma)


if __name__ == "__main__":
    main()
