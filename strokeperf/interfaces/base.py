"""Shared plumbing of the pydra tasks: failure records and array files in the job directory.

Tasks are thin: they read their inputs from files, call the stage functions and write their outputs
into the current working directory, which pydra sets to the job's own cache directory.

A session is described to every task by a JSON-able ``session`` dict (``bids.discovery.Session.to_dict()``
plus ``failure_file``). When a task fails, :func:`records_failure` writes the one-line message that the
user will see (naming the input file) to ``failure_file`` before re-raising, so that the command line
can mark that session ``failed`` while the other sessions of the cohort complete.
"""

from __future__ import annotations

import functools
import json
import os
import traceback
from pathlib import Path

import nibabel as nib
import numpy as np

from strokeperf.errors import DataError, InputError, StrokeperfError


def failure_message(exc: BaseException, task_name: str, source: str | None = None) -> str:
    """One line for the user: input problems as they are, anything else as an internal error."""
    if isinstance(exc, InputError):
        return str(exc)
    if isinstance(exc, DataError):
        return f"{source}: {exc}" if source else str(exc)
    if isinstance(exc, StrokeperfError):
        return str(exc)
    return f"internal error in {task_name}: {type(exc).__name__}: {exc}"


def records_failure(func):
    """Decorate a task function taking ``session``: record a failure message, then re-raise."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the user's table
            session = kwargs.get("session") or {}
            failure_file = session.get("failure_file")
            if failure_file:
                record = {
                    "task": func.__name__,
                    "message": " ".join(failure_message(
                        exc, func.__name__, session.get("perfusion_file")).split()),
                    "traceback": traceback.format_exc(),
                }
                Path(failure_file).parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(f"{failure_file}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(record, indent=2))
                os.replace(tmp, failure_file)
            raise

    return wrapper


def load_array(path, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file as ``(array, affine)``."""
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=dtype), img.affine


def load_mask(path) -> np.ndarray:
    """Read a NIfTI mask as a boolean array."""
    return np.asarray(nib.load(str(path)).dataobj) > 0


def save_array(name: str, data: np.ndarray, affine: np.ndarray, dtype=np.float32) -> Path:
    """Write ``data`` to ``name`` (uncompressed NIfTI) in the job directory; return its path."""
    arr = np.asarray(data)
    arr = arr.astype(np.uint8) if arr.dtype == bool else arr.astype(dtype)
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm", "sec")
    path = Path.cwd() / name
    nib.save(img, path)
    return path
