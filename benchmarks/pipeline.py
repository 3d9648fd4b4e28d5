"""End-to-end benchmark: one whole-brain CTP phantom session through the command line.

Prints the phantom generation time, the pipeline's wall time, peak memory (resident set of this
process and of the worker processes) and voxels per second, the errors of each group-table volume
against the phantom's truth, and the mean CBF and CBV of normal tissue (true tissue with true
Tmax < 4 s, the truth's reference region, inside the pipeline's tissue mask) against the truth's.

    python benchmarks/pipeline.py                      # whole brain, about 120 x 144 x 30 x 45
    python benchmarks/pipeline.py --seed 7 --irregular --voxel-size 2 2 5
    python benchmarks/pipeline.py --seed 51 --phantom noise_hu=20 residue_shape=1
    python benchmarks/pipeline.py --seed 36 -- --denoise-fwhm 3 --no-motion-correction

``--phantom`` sets any field of ``strokeperf.phantom.PhantomConfig`` (robustness sweeps over noise,
residue shape, dispersion, timing); values are read as Python literals. Arguments after ``--`` go
to the ``strokeperf`` command line unchanged.

The pipeline runs in a subprocess so that its peak memory is measured alone.
"""

from __future__ import annotations

import argparse
import ast
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import pandas as pd

VOLUMES = ["core_ml", "tmax4_ml", "tmax6_ml", "tmax8_ml", "tmax10_ml", "mismatch_ml"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--voxel-size", type=float, nargs=3, default=None,
                   help="mm; default: the phantom's whole-brain CTP grid (1.5 x 1.5 x 5)")
    p.add_argument("--irregular", action="store_true", help="irregular VolumeTiming")
    p.add_argument("--no-lesion", action="store_true")
    p.add_argument("--worker", default="cf", choices=["cf", "debug"])
    p.add_argument("--nprocs", type=int, default=2)
    p.add_argument("--keep", type=Path, help="keep the dataset and outputs in this folder")
    p.add_argument("--normalise", action="store_true",
                   help="also normalise to the template (prints the normalisation time)")
    p.add_argument("--phantom", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="further PhantomConfig fields, e.g. noise_hu=20 lesion_dispersion_s=5")
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, pipeline_args = p.parse_args(argv[:cut]), argv[cut + 1:]
    extra = {}
    for item in args.phantom:
        field, sep, value = item.partition("=")
        if not sep:
            p.error(f"--phantom expects FIELD=VALUE, got {item!r}")
        try:
            extra[field] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            extra[field] = value                                    # a plain string

    from strokeperf.phantom import PhantomConfig, generate_dataset, read_truth

    root = args.keep or Path(tempfile.mkdtemp(prefix="strokeperf_bench_"))
    bids = root / "bids"
    t0 = time.perf_counter()
    config = PhantomConfig(seed=args.seed, voxel_size_mm=tuple(args.voxel_size) if args.voxel_size
                           else None, irregular=args.irregular, lesion=not args.no_lesion, **extra)
    generate_dataset(bids, config, participant="bench", modalities=("ctp",))
    t_phantom = time.perf_counter() - t0
    ctp = next(bids.glob("sub-bench/ct/*_ctp.nii.gz"))
    shape = nib.load(ctp).shape

    out, work = root / "out", root / "work"
    cmd = [sys.executable, "-m", "strokeperf.cli", str(bids), str(out), "participant",
           "-w", str(work), "--worker", args.worker, "--nprocs", str(args.nprocs)]
    if args.normalise:
        cmd.append("--normalise")
    cmd += pipeline_args
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, sep="\n")
        return proc.returncode
    peak_children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    voxels = shape[0] * shape[1] * shape[2]
    print(f"series {shape[0]} x {shape[1]} x {shape[2]} voxels x {shape[3]} frames "
          f"({ctp.stat().st_size / 1e6:.1f} MB on disk); phantom generated in {t_phantom:.1f} s")
    print(f"pipeline wall time {wall:.1f} s ({args.worker} worker, {args.nprocs} processes); "
          f"{voxels / wall:,.0f} voxels/s end to end")
    print(f"peak resident memory of the largest pipeline process: {peak_children_mb:,.0f} MB")

    if args.normalise:
        sidecar = json.loads(next(out.glob("sub-bench/perf/*_volumes.json")).read_text())
        norm = sidecar["Normalisation"]
        print(f"normalisation to {norm['Space']}: {norm['Seconds']:.1f} s, brain Dice "
              f"{norm['BrainDice']:.3f}")
    table = pd.read_csv(out / "group_perfusion.tsv", sep="\t", dtype=str, keep_default_na=False)
    truth = read_truth(bids)
    truth = truth[truth["modality"] == "ctp"].iloc[0]
    row = table.iloc[0]
    print(f"\n{'volume':<12}{'truth mL':>10}{'measured':>10}{'error':>9}{'rel.':>8}")
    for col in VOLUMES:
        t, m = float(truth[col]), float(row[col])
        rel = f"{100 * (m - t) / t:+.0f}%" if t > 0 else "   -"
        print(f"{col:<12}{t:>10.1f}{m:>10.1f}{m - t:>+9.1f}{rel:>8}")
    print_normal_tissue(bids, out)
    print(f"\noutputs: {out}" if args.keep else "")
    return 0


def print_normal_tissue(bids: Path, out: Path) -> None:
    """Mean CBF (mL/100 g/min) and CBV (mL/100 g) of normal tissue, truth against measured."""
    from strokeperf.phantom.truth import normal_tissue_means

    print(f"\n{'normal tissue':<14}{'truth':>8}{'measured':>10}{'rel.':>8}")
    for name, (t, m) in normal_tissue_means(bids, out, "sub-bench", "ctp").items():
        print(f"{'mean ' + name.upper():<14}{t:>8.2f}{m:>10.2f}{100 * (m / t - 1):>+7.1f}%")

if __name__ == "__main__":
    sys.exit(main())
