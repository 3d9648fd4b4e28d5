"""DSC-MRI accuracy on phantom sessions, and how much of the error the arterial input function causes.

For each seed a DSC + DWI phantom session goes through the command line (one run per session,
2 processes, no motion correction: the phantom does not move). Printed per session:

- the group-table volumes (core, Tmax > 4/6/8/10 s) against the phantom's truth;
- the mean CBF and CBV over normal tissue (true tissue with true Tmax < 4 s, inside the pipeline's
  tissue mask) against the truth: the absolute scale the AIF's VOF normalisation sets;
- an AIF check: the pipeline's own denoised delta-R2* in the true tissue voxels is deconvolved
  (default method) once with the pipeline's AIF and once with the phantom's true arterial curve, and
  the voxel-wise volumes with Tmax above 4, 6 and 10 s are compared with the truth (no cluster
  clean-up, so these differ slightly from the table). The gap between the two rows is the error
  the AIF causes; the rest comes from noise, smoothing and the deconvolution itself.

    python benchmarks/dsc_accuracy.py 61 62 63 64 65 66 67 68 --voxel-size 3 3 5
    python benchmarks/dsc_accuracy.py 61 62                       # 1.8 x 1.8 x 5 mm (default)

The AIF check reads the denoised series and the AIF from the pydra work directory (task outputs
``delta_r2s_denoised.nii`` and ``input_functions.json``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

VOLUMES = ["core_ml", "tmax4_ml", "tmax6_ml", "tmax8_ml", "tmax10_ml"]
AIF_THRESHOLDS_S = (4.0, 6.0, 10.0)


def aif_check(bids: Path, work: Path, label: str) -> dict:
    """Voxel-wise Tmax volumes (mL) with the pipeline's and the true AIF, and the truth."""
    from strokeperf.cli.cache import finished_step_file
    from strokeperf.deconvolution.parametric import ParametricDeconvolution

    truth_dir = bids / "truth"
    meta = json.loads((truth_dir / f"sub-{label}_truth.json").read_text())["modalities"]["dsc"]
    times = np.asarray(meta["frame_times_s"], dtype=float)
    conc_img = nib.load(finished_step_file(work, "delta_r2s_denoised.nii"))
    conc = np.asarray(conc_img.dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(finished_step_file(work, "brain_mask.nii")).dataobj) > 0
    tissue = np.asarray(nib.load(truth_dir / f"sub-{label}_mod-dsc_tissue.nii.gz").dataobj) > 0
    tmax_true = np.asarray(nib.load(truth_dir / f"sub-{label}_mod-dsc_tmax.nii.gz").dataobj)
    voxel_ml = float(np.prod(conc_img.header.get_zooms()[:3])) / 1000.0
    select = brain & tissue
    curves, truth = conc[select], tmax_true[select]
    pipeline = json.loads(finished_step_file(work, "input_functions.json").read_text())
    out = {"truth": [voxel_ml * np.count_nonzero(truth > x) for x in AIF_THRESHOLDS_S]}
    for name, aif in (("pipeline AIF", pipeline["aif"]), ("true AIF", meta["aif"])):
        tmax = ParametricDeconvolution(np.asarray(aif, dtype=float), times).fit(curves).tmax
        out[name] = [voxel_ml * np.count_nonzero(tmax > x) for x in AIF_THRESHOLDS_S]
    out["censored_frames"] = pipeline.get("aif_censored_frames", 0)
    return out


def normal_tissue(bids: Path, out: Path, label: str) -> str:
    """Mean CBF (mL/100 g/min) and CBV (mL/100 g) over normal tissue, truth against measured."""
    from strokeperf.phantom.truth import normal_tissue_means

    return "  ".join(f"{name.upper()} {t:.2f} -> {m:.2f} ({100 * (m / t - 1):+.0f}%)"
                     for name, (t, m) in normal_tissue_means(bids, out, f"sub-{label}",
                                                             "dsc").items())

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("seeds", type=int, nargs="+")
    p.add_argument("--voxel-size", type=float, nargs=3, default=None,
                   help="mm; default: the phantom's DSC grid (1.8 x 1.8 x 5)")
    p.add_argument("--keep", type=Path, help="keep datasets and outputs in this folder")
    args = p.parse_args(argv)

    from strokeperf.phantom import PhantomConfig, generate_dataset, read_truth

    root = args.keep or Path(tempfile.mkdtemp(prefix="strokeperf_dsc_"))
    bids = root / "bids"
    for seed in args.seeds:
        config = PhantomConfig(seed=seed, voxel_size_mm=tuple(args.voxel_size) if args.voxel_size
                               else None)
        generate_dataset(bids, config, participant=f"s{seed}", modalities=("dsc", "dwi"))
    out = root / "out"
    start = time.perf_counter()
    for seed in args.seeds:  # one work directory per session, for the AIF check below
        proc = subprocess.run([sys.executable, "-m", "strokeperf.cli", str(bids), str(out),
                               "participant", "--participant-label", f"s{seed}",
                               "-w", str(root / f"work-s{seed}"), "--nprocs", "2",
                               "--no-motion-correction"], capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            print(proc.stdout, proc.stderr, sep="\n")
            return proc.returncode
    wall = time.perf_counter() - start
    print(f"{len(args.seeds)} sessions in {wall:.0f} s (cf worker, 2 processes)\n")
    table = pd.read_csv(out / "group_perfusion.tsv", sep="\t").set_index("participant_id")
    truth = read_truth(bids).set_index("participant_id")
    rel = {c: [] for c in VOLUMES}
    print("volumes, truth / measured mL (relative error)")
    for seed in args.seeds:
        label = f"sub-s{seed}"
        got, want = table.loc[label], truth.loc[label]
        cells = []
        for col in VOLUMES:
            t, m = float(want[col]), float(got[col])
            rel[col].append((m - t) / t if t > 0 else np.nan)
            cells.append(f"{col[:-3]} {t:5.1f}/{m:5.1f} ({100 * rel[col][-1]:+4.0f}%)")
        print(f"  seed {seed}: " + "  ".join(cells))
    print("  mean relative error: " + "  ".join(f"{c[:-3]} {100 * np.nanmean(v):+.0f}%"
                                                for c, v in rel.items()))

    print("\nnormal tissue (true Tmax < 4 s): mean CBF / CBV, truth -> measured (relative error)")
    for seed in args.seeds:
        print(f"  seed {seed}: " + normal_tissue(bids, out, f"s{seed}"))

    print("\nAIF check: voxel-wise volume with Tmax above 4 / 6 / 10 s in true tissue (mL)")
    for seed in args.seeds:
        check = aif_check(bids, root / f"work-s{seed}", f"s{seed}")
        line = f"  seed {seed} (AIF censored in {check['censored_frames']} frames): truth " + \
            "/".join(f"{v:.1f}" for v in check["truth"])
        for name in ("pipeline AIF", "true AIF"):
            errs = [100 * (m / t - 1) if t > 0 else np.nan for m, t in zip(check[name],
                                                                          check["truth"])]
            line += f" | {name} " + "/".join(f"{e:+.0f}%" for e in errs)
        print(line)
    print(f"\noutputs: {root}" if args.keep else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
