"""pytest fixture giving tests a working one-node SLURM cluster (started by slurm-up.sh when needed).

Use from a test module or tests/conftest.py (the folder tests/cluster must be importable):

    sys.path.insert(0, str(Path(__file__).parent / "cluster"))
    from fixtures import slurm_cluster  # noqa: F401  (pytest finds the fixture by name)

A test asks for ``slurm_cluster`` and gets a :class:`SlurmCluster`. The tests are skipped (with the
reason) only when the cluster cannot be started here at all: not root, or no apt-get to install
SLURM. With ``CI=true`` in the environment they fail instead, so CI never skips them silently. A
cluster this fixture started is stopped at the end of the session unless STROKEPERF_KEEP_SLURM=1.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
UP = HERE / "slurm-up.sh"
DOWN = HERE / "slurm-down.sh"
STATE_DIR = Path("/tmp/strokeperf-slurm")  # fixed in slurm-up.sh
PARTITION = "debug"
UP_TIMEOUT_S = 1200  # package installation on a fresh machine included


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    partition: str
    log_dir: Path
    started_here: bool

    def sbatch_args(self, extra: str = "") -> str:
        """sbatch arguments for pydra's slurm worker: this partition, small memory, 10 min limit."""
        return f"-p {self.partition} --mem=512M -t 10 {extra}".strip()

    def job_env(self, *paths: Path) -> dict[str, str]:
        """Environment variables to set (e.g. with monkeypatch.setenv) so that SLURM jobs, which
        inherit the submitting environment, can import modules from ``paths``."""
        parts = [str(p) for p in paths] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(parts))}


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _pid_running(pidfile: Path) -> bool:
    try:
        stat = Path(f"/proc/{int(pidfile.read_text())}/stat").read_text()
    except (OSError, ValueError):
        return False
    return not stat.rpartition(") ")[2].startswith("Z")


def _our_cluster_is_stopped() -> bool:
    """The configuration is slurm-up.sh's and its slurmctld is not running: skip querying it
    (sinfo would retry for MessageTimeout seconds before giving up)."""
    try:
        ours = "tests/cluster/slurm-up.sh" in Path("/etc/slurm/slurm.conf").read_text()
    except OSError:
        return False
    return ours and not _pid_running(STATE_DIR / "slurmctld.pid")


def slurm_works() -> bool:
    """True when this host already answers sbatch-side queries: a node of the partition is usable
    and the accounting database answers sacct (pydra's slurm worker needs both)."""
    if not (shutil.which("sbatch") and shutil.which("sinfo") and shutil.which("sacct")):
        return False
    if _our_cluster_is_stopped():
        return False
    info = _run(["sinfo", "-h", "-p", PARTITION, "-o", "%T"], timeout=15)
    if info is None or info.returncode != 0:
        return False
    if not any(s.strip().rstrip("*") in {"idle", "mixed", "allocated", "completing"}
               for s in info.stdout.split()):
        return False
    acct = _run(["sacct", "-n", "-X", "-S", "now-1minute"], timeout=15)
    return acct is not None and acct.returncode == 0


def _cannot_start_reason() -> str | None:
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root to install and start its daemons (tests/cluster/slurm-up.sh)"
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        return "SLURM is not installed and there is no apt-get to install it (tests/cluster/slurm-up.sh)"
    return None


def _not_available(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the SLURM test cluster is unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster():
    log_dir = STATE_DIR / "log"
    if slurm_works():
        yield SlurmCluster(PARTITION, log_dir, started_here=False)
        return
    reason = _cannot_start_reason()
    if reason:
        _not_available(reason)
    up = _run(["bash", str(UP)], timeout=UP_TIMEOUT_S)
    if up is None:
        pytest.fail(f"tests/cluster/slurm-up.sh did not finish in {UP_TIMEOUT_S}s; log: {log_dir / 'slurm-up.log'}",
                    pytrace=False)
    if up.returncode != 0 or not slurm_works():
        detail = (up.stderr.strip().splitlines() or ["no output"])[0]
        pytest.fail(f"tests/cluster/slurm-up.sh could not start the SLURM cluster ({detail}); "
                    f"log: {log_dir / 'slurm-up.log'}", pytrace=False)
    yield SlurmCluster(PARTITION, log_dir, started_here=True)
    if os.environ.get("STROKEPERF_KEEP_SLURM") != "1":
        _run(["bash", str(DOWN)], timeout=120)
