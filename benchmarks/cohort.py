"""Cohort throughput: N phantom CTP sessions with 1 and 2 worker processes (cf worker).

Prints sessions per minute for each process count, the speed-up, and the peak resident memory of the
largest worker process. Each run starts from an empty work directory so nothing is reused.

    python benchmarks/cohort.py                  # 6 sessions on the coarse test grid
    python benchmarks/cohort.py -n 4 --voxel-size 1.5 1.5 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(bids: Path, root: Path, nprocs: int) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MB) of the largest process of one pipeline run."""
    cmd = [sys.executable, "-c",
           "import resource, sys; from strokeperf.cli import main; code = main(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
           "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)",
           str(bids), str(root / f"out{nprocs}"), "participant", "-w", str(root / f"work{nprocs}"),
           "--nprocs", str(nprocs)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"pipeline failed:\n{proc.stdout}\n{proc.stderr}")
    children_kb, self_kb = map(int, proc.stdout.strip().splitlines()[-1].split())
    return wall, max(children_kb, self_kb) / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("-n", "--sessions", type=int, default=6)
    p.add_argument("--voxel-size", type=float, nargs=3, default=(3.0, 3.0, 6.0))
    p.add_argument("--seed", type=int, default=500)
    args = p.parse_args(argv)

    from strokeperf.phantom import PhantomConfig, generate_dataset

    root = Path(tempfile.mkdtemp(prefix="strokeperf_cohort_"))
    bids = root / "bids"
    t0 = time.perf_counter()
    for i in range(args.sessions):
        generate_dataset(bids, PhantomConfig(seed=args.seed + i, voxel_size_mm=tuple(args.voxel_size)),
                         participant=f"c{i:03d}", modalities=("ctp",))
    print(f"{args.sessions} phantom sessions ({' x '.join(f'{v:g}' for v in args.voxel_size)} mm "
          f"voxels) generated in {time.perf_counter() - t0:.0f} s")
    walls = {}
    for nprocs in (1, 2):
        wall, peak_mb = _run(bids, root, nprocs)
        walls[nprocs] = wall
        print(f"--nprocs {nprocs}: {wall:6.1f} s, {60 * args.sessions / wall:5.2f} sessions/min, "
              f"peak memory of the largest process {peak_mb:,.0f} MB")
    print(f"speed-up with 2 processes: {walls[1] / walls[2]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
