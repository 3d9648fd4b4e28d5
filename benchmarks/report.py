"""Time and peak memory of report generation on realistic-size sessions.

Run: ``python benchmarks/report.py [--shape 120 144 30] [--repeat 3] [--sessions 4]``.

Writes synthetic derivatives (``tests/browser/synthetic.py``; maps 120 x 144 x 30 at 1.5 x 1.5 x 5 mm,
45 frames, a motion trace) for one participant session with CTP and DSC, then measures

- ``write_participant_report`` for one modality (the page holds only that modality), and for the
  second modality of the same session (the page is rebuilt with both sections);
- ``write_group_report`` on a cohort table of ``--sessions`` copies;

each as the best of ``--repeat`` wall times (untraced), the peak of Python-allocated memory of one
more run under tracemalloc (numpy reports to it) and the process's maximum resident set size. Target: < 5 s per session on 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))

import synthetic  # noqa: E402

from strokeperf import tables  # noqa: E402
from strokeperf.reports import write_group_report, write_participant_report  # noqa: E402

TARGET_S = 5.0


def measure(label: str, func, repeat: int) -> float:
    """Best wall time of ``repeat`` untraced runs, then one run under tracemalloc for the peak."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    func()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    verdict = "ok" if best < TARGET_S else f"OVER the {TARGET_S:g} s target"
    print(f"{label:<46} {best:6.2f} s   peak traced {peak / 2**20:6.1f} MiB   max RSS {rss:6.0f} MiB"
          f"   {verdict}")
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(120, 144, 30))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20, help="group-report cohort size")
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        fd = [float("nan")] + [0.2] * 44
        ctp = synthetic.write_session(out, "01", "acute", "ctp", shape=shape,
                                      voxel_size=(1.5, 1.5, 5.0), motion_fd=fd)
        print(f"maps {shape[0]} x {shape[1]} x {shape[2]}, 45 frames")
        t_one = measure("participant report, CTP only",
                        lambda: write_participant_report(out, *ctp), args.repeat)
        dsc = synthetic.write_session(out, "01", "acute", "dsc", shape=shape,
                                      voxel_size=(1.5, 1.5, 5.0))
        t_two = measure("participant report, CTP + DSC (page rebuilt)",
                        lambda: write_participant_report(out, *dsc), args.repeat)
        size = (out / "sub-01_ses-acute.html").stat().st_size / 2**20
        print(f"page size with two modalities: {size:.1f} MiB")
        row = tables.read_rows(out)
        table = pd.concat([row.assign(participant_id=f"sub-{i:03d}") for i in range(args.sessions)],
                          ignore_index=True)
        measure(f"group report, {len(table)} rows", lambda: write_group_report(out, table),
                args.repeat)
    return 0 if max(t_one, t_two / 2) < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
