"""Speed and memory of the perfusion core.

Run: ``python benchmarks/speed.py [--voxels 1000000] [--skip-denoise] [--methods bcsvd ...]``.

- Deconvolution: voxels per second for N voxels x 45 frames (CT-like curves with 2 HU noise,
  float32), wall time and the peak of Python-allocated memory (tracemalloc, numpy buffers
  included), per method of ``strokeperf.deconvolution.METHODS`` (and the GCV variant of Tikhonov),
  BLAS limited to one thread as in ``perfusion_maps``, with 1 and 2 worker threads over chunks;
  then the default method through ``perfusion_maps`` itself. ``parametric`` runs
  on at most ``--parametric-voxels`` voxels. Wall time and memory come from separate runs:
  tracemalloc hooks every allocation, Python objects included, and timed under it the chunked SVD
  loops ran at little more than half speed (oSVD 0.58 M voxels/s traced, 1.0 M untraced).
  ``--repeat R`` reports the fastest of R timed runs (the cores of a shared machine are noisy).
- ``denoise`` on a 120 x 144 x 30 x 45 series.
- ``--session DIR``: a whole-brain session kept by ``benchmarks/pipeline.py --keep DIR``, its
  deconvolution with the default method as the pipeline runs it (``perfusion_maps`` on the
  smoothed series, with the neighbourhood prior on Tmax of ``deconvolution.neighbourhood``) and
  without that prior, and how many voxels the prior revised::

      python benchmarks/pipeline.py --seed 104 --phantom aif_peak_hu=150.0 --keep /tmp/s104
      python benchmarks/speed.py --session /tmp/s104 --repeat 2

Accuracy against analytic truth is benchmarks/accuracy.py.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from strokeperf.testing import aif_curve, tissue_curves
from strokeperf.concentration import denoise
from strokeperf.deconvolution import METHODS, perfusion_maps

def tissue_curve(frame_times, cbf, mtt, delay, shape=1.0, dispersion=0.0):
    """One noise-free tissue curve and its true Tmax, s (:func:`strokeperf.testing.tissue_curves`:
    the residue delayed by ``delay`` and dispersed by an exponential kernel; Tmax is its argmax)."""
    curves, tmax = tissue_curves(frame_times, cbf, mtt, delay, shape, dispersion)
    return curves[0], float(tmax[0])


def measure(fn, repeat: int = 1):
    """Peak of Python-allocated memory (MiB) of a call of ``fn`` under tracemalloc, then the result
    and fastest wall time (s) of ``repeat`` untraced calls. The traced call also warms the memory
    allocator up (its result is dropped before the timed calls reuse its memory): a first fit of
    1M voxels spent a quarter of its time faulting in the pages of its fresh 40 MB of outputs."""
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    wall, result = np.inf, None
    for _ in range(repeat):
        result = None                  # free the previous outputs for this call to reuse
        start = time.perf_counter()
        result = fn()
        wall = min(wall, time.perf_counter() - start)
    return result, wall, peak / 2**20


def bench_deconvolution(n_voxels: int, methods, parametric_voxels: int, repeat: int = 1):
    t = np.arange(45.0)
    rng = np.random.default_rng(0)
    clean, _ = tissue_curve(t, 50.0, 4.0, 2.0, 3.0, 1.0)
    block = (clean[None] + rng.normal(0, 2.0, (100_000, t.size))).astype(np.float32)
    curves = np.tile(block, (int(np.ceil(n_voxels / block.shape[0])), 1))[:n_voxels]
    best = f", fastest of {repeat} runs" if repeat > 1 else ""
    print(f"deconvolution: {n_voxels} voxels x {t.size} frames (float32 input "
          f"{curves.nbytes / 2**20:.0f} MiB), BLAS 1 thread{best}")
    variants = [(m, m, {}) for m in methods]
    if "tikhonov" in methods:
        variants.insert(methods.index("tikhonov") + 1, ("tikhonov (GCV)", "tikhonov",
                                                         {"criterion": "gcv"}))
    with threadpool_limits(limits=1, user_api="blas"):
        for label, name, options in variants:
            model = METHODS[name](aif_curve(t), t, **options)
            data = curves[:parametric_voxels] if name == "parametric" else curves
            model.fit(data[:4096])  # warm-up
            for workers in (1, 2):
                kwargs = {} if name == "parametric" else {"workers": workers}
                if name == "parametric" and workers > 1:
                    continue
                _, wall, peak_mib = measure(lambda: model.fit(data, **kwargs), repeat)
                print(f"  {label:16s} workers {workers}: {data.shape[0] / wall:12,.0f} voxels/s  "
                      f"wall {wall:6.2f} s  peak traced memory {peak_mib:7.1f} MiB")
    conc = curves.reshape(-1, 1, 1, t.size)
    mask = np.ones(conc.shape[:3], dtype=bool)
    _, wall, peak_mib = measure(lambda: perfusion_maps(conc, mask, aif_curve(t), t), repeat)
    print(f"  perfusion_maps (bcsvd): {n_voxels / wall:12,.0f} voxels/s  wall {wall:6.2f} s  "
          f"peak traced memory {peak_mib:7.1f} MiB (incl. the 5 output maps "
          f"{5 * 4 * n_voxels / 2**20:.0f} MiB)")


def bench_denoise():
    rng = np.random.default_rng(1)
    shape = (120, 144, 30)
    conc = rng.normal(0.0, 10.0, shape + (45,)).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[10:110, 10:134, 2:28] = True
    out, wall, peak_mib = measure(lambda: denoise(conc, mask, (1.5, 1.5, 5.0)))
    print(f"denoise 120x144x30x45, FWHM 5 mm on 1.5x1.5x5 mm: wall {wall:.2f} s, peak traced "
          f"memory {peak_mib:.0f} MiB (output {out.nbytes / 2**20:.0f} MiB); noise 10 HU -> "
          f"{out[mask].std():.2f} HU")


def bench_session(root: Path, repeat: int = 1):
    import json

    import nibabel as nib

    from strokeperf.cli.cache import finished_step_file
    from strokeperf.concentration import DENOISE_FWHM_MM
    from strokeperf.deconvolution.neighbourhood import UNINFORMATIVE_TMAX_SD_S
    from strokeperf.deconvolution.parametric import ParametricDeconvolution

    def one(name):                  # inputs to the timed step, also if other code wrote them
        return finished_step_file(root / "work", name, any_code=True)

    image = nib.load(one("delta_hu.nii"))
    voxel = np.asarray(image.header.get_zooms()[:3], dtype=float)
    raw = np.asarray(image.dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(one("brain_mask.nii")).dataobj) > 0
    record = json.loads(one("input_functions.json").read_text())
    aif, t = np.asarray(record["aif_scaled"]), np.asarray(record["frame_times_s"])
    series = denoise(raw, brain, voxel, DENOISE_FWHM_MM)
    n = int(brain.sum())
    print(f"session {root}: {n:,} brain voxels x {t.size} frames, voxel {voxel.tolist()} mm")
    for label, size in (("without neighbourhood prior", None), ("with neighbourhood prior", voxel)):
        _, wall, peak_mib = measure(lambda: perfusion_maps(series, brain, aif, t, "parametric",
                                                           voxel_size_mm=size, unsmoothed=raw),
                                    repeat)
        print(f"  parametric {label:28s}: wall {wall:6.2f} s  {n / wall:9,.0f} voxels/s  "
              f"peak traced memory {peak_mib:7.1f} MiB")
    with threadpool_limits(limits=1, user_api="blas"):
        second_pass = ParametricDeconvolution(aif, t).second_pass(raw, brain, voxel)
        fit = second_pass.fit(series[brain])
        revised = second_pass.revise()[0].size
    print(f"  uninformative (posterior SD of Tmax > {UNINFORMATIVE_TMAX_SD_S:g} s): "
          f"{fit.tmax_bins[0].size / n:.1%} of voxels; Tmax revised by the prior: {revised / n:.1%}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=1_000_000)
    parser.add_argument("--parametric-voxels", type=int, default=100_000)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--skip-denoise", action="store_true")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs per deconvolution measurement; the fastest is reported")
    parser.add_argument("--session", type=Path, metavar="DIR",
                        help="time only a kept whole-brain session's deconvolution (see above)")
    args = parser.parse_args()
    if args.session:
        bench_session(args.session, max(args.repeat, 1))
        return
    bench_deconvolution(args.voxels, args.methods, args.parametric_voxels, max(args.repeat, 1))
    if not args.skip_denoise:
        bench_denoise()


if __name__ == "__main__":
    main()
