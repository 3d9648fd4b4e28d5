"""Atomic file writing: a file that exists in OUTPUT_DIR is complete.

Each writer writes to a temporary file and renames it into place (``os.replace`` is atomic on POSIX
file systems), so a run killed at any moment leaves either the old file or the new one. The temporary
lives in the staging directory named by the environment variable ``STROKEPERF_STAGING_DIR`` (the
command line points it into the work directory) when that is on the same file system as the target,
so that not even a temporary appears in OUTPUT_DIR; otherwise it is a hidden ``.*.partial`` file beside
the target, which :func:`remove_partials` cleans up on the next run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

PARTIAL_SUFFIX = ".partial"
STAGING_ENV = "STROKEPERF_STAGING_DIR"
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary keeps ``path``'s extensions (``.nii.gz`` matters to nibabel) behind a hidden prefix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX + "".join(path.suffixes),
                               dir=_temporary_dir(path.parent))
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates the file 0600; give the result the permissions of an ordinary new file.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _temporary_dir(target_dir: Path) -> Path:
    """The staging directory if it shares the target's file system (rename stays atomic), else the
    target's own directory."""
    staging = os.environ.get(STAGING_ENV)
    if staging:
        try:
            Path(staging).mkdir(parents=True, exist_ok=True)
            if os.stat(staging).st_dev == os.stat(target_dir).st_dev:
                return Path(staging)
        except OSError:
            pass
    return target_dir


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _json_safe(obj):
    """Replace non-finite floats by strings ("inf", "n/a") so the JSON stays standard."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return "n/a"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    return obj


def write_json(path, data: dict) -> Path:
    """Write ``data`` as indented JSON atomically; numpy values are converted."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(data), indent=2, default=_json_default) + "\n")
    return Path(path)


def write_text(path, text: str) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_nifti(path, data: np.ndarray, affine: np.ndarray, dtype=None, header=None) -> Path:
    """Write an array as NIfTI-1 atomically (``.nii.gz`` compressed by extension)."""
    arr = np.asarray(data)
    if dtype is not None:
        arr = arr.astype(dtype)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=float), header=header)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def copy_file(src, dst) -> Path:
    """Copy ``src`` to ``dst`` atomically."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def remove_partials(root) -> int:
    """Delete temporaries left by a killed run under ``root``; returns how many were removed."""
    root = Path(root)
    if not root.exists():
        return 0
    n = 0
    for p in root.rglob(f".*{PARTIAL_SUFFIX}*"):
        if p.is_file():
            p.unlink()
            n += 1
    return n
