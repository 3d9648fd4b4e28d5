"""Resume after a kill: a cohort run killed with SIGKILL mid-way, then started again with the same
work directory, finishes the rest without recomputing finished steps, writes byte-identical tables,
and OUTPUT_DIR never holds a half-written file."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_phantom
from strokeperf.cli.cache import pipeline_cache_root

N_SESSIONS = 3
#: A run of three small sessions takes about a minute; a hang must fail the test, not the CI.
TIMEOUT_S = 900


def _command(bids: Path, out: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "strokeperf.cli", str(bids), str(out), "participant",
            "-w", str(work), "--nprocs", "1", "--no-motion-correction"]  # motion: its own tests


def _run(command: list[str]) -> subprocess.CompletedProcess:
    """Run strokeperf; on a hang kill it with its worker processes and fail."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"strokeperf did not finish within {TIMEOUT_S} s: {command}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _assert_every_file_complete(out: Path) -> None:
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        assert ".partial" not in path.name, path
        if path.name.endswith(".nii.gz"):
            with gzip.open(path) as f:
                f.read()
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".tsv":
            pd.read_csv(path, sep="\t")
        elif path.suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>"), path


def _finished_jobs(work: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns
            for p in pipeline_cache_root(work).glob("python-*/_result.pklz")}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    bids = tmp_path_factory.mktemp("resume") / "bids"
    for i in range(N_SESSIONS):
        make_phantom(bids, f"r{i}", seed=60 + i)
    return bids


def test_kill_and_resume(cohort, tmp_path):
    reference = _run(_command(cohort, tmp_path / "ref", tmp_path / "ref_work"))
    assert reference.returncode == 0, reference.stderr

    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.Popen(_command(cohort, out, work), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    done_dir = work / "completed"
    deadline = time.monotonic() + 600
    while not (done_dir.exists() and any(done_dir.iterdir())):
        assert proc.poll() is None, "the run ended before the first session completed"
        assert time.monotonic() < deadline, "no session completed within 10 minutes"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(done_dir.iterdir()))
    assert done_before < N_SESSIONS, "every session had finished: the kill came too late to test"
    _assert_every_file_complete(out)

    # A kill that lands while pydra hashes a file leaves that hash's pid-less lock behind; plant
    # one for every hash the run computed, so the resume meets them whatever the kill's timing.
    hashes = [p for p in (work / "pydra_hashes").iterdir() if p.suffix != ".lock"]
    assert hashes, "the run kept no file hashes in its work directory"
    for entry in hashes:
        entry.with_suffix(".lock").touch()
    finished = _finished_jobs(work)
    resumed = _run(_command(cohort, out, work))
    assert resumed.returncode == 0, resumed.stderr
    # Steps that had finished before the kill were reused, not recomputed.
    after = _finished_jobs(work)
    assert all(after[p] == mtime for p, mtime in finished.items())
    # One deconvolution per session: none was recomputed under a second hash.
    assert len(list(pipeline_cache_root(work).glob("python-*/cbf.nii"))) == N_SESSIONS
    _assert_every_file_complete(out)
    assert (out / "group_perfusion.tsv").read_bytes() == (tmp_path / "ref" /
                                                          "group_perfusion.tsv").read_bytes()
    for tsv in (tmp_path / "ref").glob("sub-*/perf/*_volumes.tsv"):
        assert (out / tsv.relative_to(tmp_path / "ref")).read_bytes() == tsv.read_bytes()
