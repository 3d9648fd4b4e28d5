"""pydra's slurm worker on a real one-node SLURM cluster (tests/cluster/slurm-up.sh).

Skipped only where the cluster cannot be started at all (not root, no apt); fails under CI=true.
"""
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

CLUSTER_DIR = Path(__file__).resolve().parents[1] / "cluster"
sys.path.insert(0, str(CLUSTER_DIR))

import fixtures  # noqa: E402
from fixtures import slurm_cluster  # noqa: E402,F401  (the fixture, found by name)
from toy_tasks import FAIL_MARK, ShiftSquare  # noqa: E402

from pydra.engine.submitter import Submitter  # noqa: E402


@pytest.fixture
def job_env(slurm_cluster, monkeypatch):
    """SLURM jobs inherit this environment: let them import toy_tasks."""
    for key, value in slurm_cluster.job_env(CLUSTER_DIR).items():
        monkeypatch.setenv(key, value)
    return slurm_cluster


def _python_results(cache_root: Path) -> dict[str, list]:
    """Outputs of every finished python task in a pydra cache, by task class name."""
    found: dict[str, list] = {}
    for path in cache_root.glob("python-*/_result.pklz"):
        result = cloudpickle.loads(path.read_bytes())
        found.setdefault(type(result.task).__name__ if result.task is not None else "?", []).append(result)
    return found


def test_unavailable_cluster_skips_locally_but_fails_in_ci(monkeypatch):
    monkeypatch.setattr(fixtures.os, "geteuid", lambda: 1000)
    reason = fixtures._cannot_start_reason()
    assert reason and "needs root" in reason
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        fixtures._not_available(reason)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and the SLURM test cluster is unavailable"):
        fixtures._not_available(reason)


def test_sbatch_job_is_accounted(slurm_cluster, tmp_path):
    out = tmp_path / "hostname.out"
    job = subprocess.run(["sbatch", "--parsable", "-p", slurm_cluster.partition, "-o", str(out),
                          "--wrap", "hostname"], capture_output=True, text=True, check=True)
    job_id = job.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 60
    state = ""
    while time.monotonic() < deadline:
        acct = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"],
                              capture_output=True, text=True, check=True)
        state = acct.stdout.strip()
        if state and state not in {"PENDING", "RUNNING", "COMPLETING"}:
            break
        time.sleep(0.5)
    assert state == "COMPLETED", f"job {job_id} ended as {state!r}"
    assert out.read_text().strip() == subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()


def test_split_workflow_runs_as_slurm_jobs(job_env, tmp_path):
    with Submitter(worker="slurm", cache_root=tmp_path / "cache", sbatch_args=job_env.sbatch_args()) as sub:
        result = sub(ShiftSquare().split(x=[1, 2, 3]), raise_errors=False)
    assert not result.errored
    assert result.outputs.out == [121, 144, 169]
    # every Square ran in its own SLURM job (SLURM_JOB_ID set, all different)
    job_ids = [where.split(":")[1] for where in result.outputs.where]
    assert "no-slurm" not in job_ids and len(set(job_ids)) == 3, job_ids


def test_failing_branch_does_not_stop_the_others(job_env, tmp_path):
    cache = tmp_path / "cache"
    with Submitter(worker="slurm", cache_root=cache, sbatch_args=job_env.sbatch_args()) as sub:
        result = sub(ShiftSquare().split(x=[1, -2, 3]), raise_errors=False)
    # the split as a whole is marked failed and has no outputs ...
    assert result.errored and result.outputs is None
    # ... but the two good branches ran to the end through SLURM
    done = _python_results(cache)
    squares = sorted(r.outputs.out for r in done["Square"] if not r.errored)
    assert squares == [121, 169]
    failed = [r for r in done["Shift"] if r.errored]
    assert len(failed) == 1
    # the failing task's own message is in its job's stderr file (slurm_scripts/<uid>/slurm-<jobid>.err) ...
    err_files = [p for p in (cache / "slurm_scripts").glob("*/slurm-*.err") if f"{FAIL_MARK} x=-2" in p.read_text()]
    assert len(err_files) == 1
    assert f"ValueError: {FAIL_MARK} x=-2" in err_files[0].read_text().splitlines()
    # ... and in the task's crash report, written by the job next to its result
    reports = list(cache.glob("python-*/_error.pklz"))
    assert len(reports) == 1
    lines = cloudpickle.loads(reports[0].read_bytes())["error message"]
    assert lines[-1].strip() == f"ValueError: {FAIL_MARK} x=-2"
    # the workflow-level crash report only carries the worker's generic text, not the message
    outer = cloudpickle.loads((result.cache_dir / "_error.pklz").read_bytes())["error message"]
    assert "Job failed (unknown reason - TODO)" in "".join(outer)
    assert FAIL_MARK not in "".join(outer)
