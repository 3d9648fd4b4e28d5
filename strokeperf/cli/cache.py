"""The pydra cache of a run in the work directory: one cache per strokeperf code, stale locks
cleared.

pydra keys a step's cache on its inputs and the task's definition, not on the library code the step
calls; :func:`pipeline_cache_root` therefore names the cache by the digest of strokeperf's source
and of its requirements' versions (:func:`code_fingerprint`). Killed runs leave lock files that
would make the next run wait forever (:func:`remove_stale_locks`, :func:`use_work_dir_hash_cache`).
Benchmarks read a kept session's intermediate files with :func:`finished_step_file`.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
from pathlib import Path

from strokeperf import __version__

#: The installed package's source (``strokeperf/``, the parent of this ``cli/`` package), whose
#: digest names the pipeline cache (:func:`pipeline_cache_root`).
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def remove_stale_locks(cache_root: Path) -> int:
    """Delete pydra lock files left by a killed run; returns how many were removed.

    A lock file holds the pid and host name of the process that took it. pydra itself clears stale
    locks of tasks inside a workflow but not those of the workflows themselves, so a run killed with
    SIGKILL would make the next run wait forever. Only locks of processes that no longer exist on
    this host are removed: a live run (or one on another node of a cluster) keeps its locks.
    """
    removed = 0
    host = socket.gethostname()
    for lock in Path(cache_root).glob("*.lock"):
        try:
            pid_text, lock_host = lock.read_text().splitlines()[:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if lock_host != host:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            lock.unlink(missing_ok=True)
            removed += 1
        except PermissionError:
            pass  # a live process of another user
    return removed


def use_work_dir_hash_cache(work_dir: Path) -> Path:
    """Keep pydra's persistent file-hash cache inside the work directory and clear its locks.

    pydra guards each cached file hash with a lock file that holds no pid; a run killed while it
    held one (SIGKILL, a SLURM time limit) leaves it behind and the next run waits on it forever.
    By default that cache is user-wide (``~/.cache/pydra``), where no run can tell a dead lock from
    a live one. Inside the work directory it is this run's alone (one run per work directory, as
    documented), so every lock found at start-up is stale. The environment variable is inherited by
    the cf and SLURM workers.
    """
    cache = work_dir / "pydra_hashes"
    cache.mkdir(parents=True, exist_ok=True)
    for lock in cache.glob("*.lock"):
        lock.unlink(missing_ok=True)
    os.environ["PYDRA_HASH_CACHE"] = str(cache)
    return cache


def dependency_versions() -> dict[str, str]:
    """Installed versions of strokeperf's runtime requirements (read from its package metadata, so
    the list follows pyproject.toml; optional extras such as ``test`` are left out)."""
    from importlib import metadata

    try:
        requirements = metadata.requires("strokeperf") or []
    except metadata.PackageNotFoundError:       # running from a source tree that is not installed
        return {}
    versions = {}
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def code_fingerprint(package_dir: Path = PACKAGE_DIR, dependencies: dict | None = None) -> str:
    """SHA-256 of every Python source file of the package (relative path and bytes, in path order)
    and of the installed versions of its requirements (default :func:`dependency_versions`).

    Editing, adding or removing a source file, or upgrading numpy, ANTsPy, pydra or another
    requirement, changes the digest; reading the ~40 files and the metadata takes about 10 ms."""
    digest = hashlib.sha256()
    package_dir = Path(package_dir)
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    versions = dependency_versions() if dependencies is None else dependencies
    for name, version in sorted(versions.items()):
        digest.update(f"{name}=={version}\0".encode())
    return digest.hexdigest()


def pipeline_cache_root(work_dir: Path) -> Path:
    """pydra's cache for the strokeperf code that is running: ``WORK_DIR/pydra/<version>-<digest>``.

    pydra keys a step's cache on its inputs and the task's definition, not on the library code the
    step calls, so after an upgrade (or a local edit) a rerun with the same work directory would
    silently reuse results computed by the old code. Keying the directory on the digest of the
    source and of the requirements' versions (:func:`code_fingerprint`) keeps resumption for the
    same code and recomputes after any change; fMRIPrep similarly names its working directory by
    version, which would miss edits within one.
    """
    return Path(work_dir) / "pydra" / f"{__version__}-{code_fingerprint()[:12]}"


#: Name of a pipeline cache directory: ``<version>-<first 12 hex digits of the code digest>``.
CACHE_NAME = re.compile(r"[0-9][^/]*-[0-9a-f]{12}")


def other_code_caches(cache_root: Path) -> list[Path]:
    """Pipeline caches beside ``cache_root`` (this code's, :func:`pipeline_cache_root`) that other
    strokeperf code wrote: never read by this run, left for the user to delete."""
    parent = Path(cache_root).parent
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir()
                  if p.is_dir() and p != Path(cache_root) and CACHE_NAME.fullmatch(p.name))


def finished_step_file(work_dir: Path, name: str, any_code: bool = False) -> Path:
    """The one file ``name`` that a finished step wrote under WORK_DIR's cache of this code.

    For benchmarks and debugging that read a kept session's intermediate images (e.g.
    ``delta_hu.nii``). With ``any_code``, a session run by other strokeperf code is read too when
    this code's cache has none (its newest such file, named on stderr): inputs to the step being
    timed or tried stay valid across an edit of it. Raises :class:`FileNotFoundError` naming the
    cache searched when there is no such file, or when this code's cache holds several sessions.
    """
    cache = pipeline_cache_root(work_dir)
    found = sorted(cache.glob(f"python-*/{name}"))
    if len(found) > 1:
        raise FileNotFoundError(f"{len(found)} files {name} under {cache}: the work directory "
                                "holds several sessions; keep one session per work directory")
    if found:
        return found[0]
    others = [f for c in other_code_caches(cache) for f in c.glob(f"python-*/{name}")]
    if any_code and others:
        newest = max(others, key=lambda f: f.stat().st_mtime)
        print(f"reading {newest}, written by other strokeperf code", file=sys.stderr)
        return newest
    hint = (f"; {len(others)} in caches of other strokeperf code" if others else "")
    raise FileNotFoundError(f"no {name} under {cache}{hint} (was the session run with this "
                            "strokeperf code?)")
