"""Writing the phantom's raw BIDS dataset: deterministic NIfTI, JSON and TSV files.

Every file is written to a temporary name and renamed, so a file that exists is complete; gzip
streams carry no file name and a fixed mtime, so the same data gives byte-identical files.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from strokeperf import __version__, CODE_URL

DATASET_NAME = "strokeperf digital phantom"
BIDS_VERSION = "1.9.0"
BIDSIGNORE_LINES = ("**/ct", "**/*_dsc.*", "truth/")
#: gzip level: noisy images barely compress further at higher levels, which cost time.
GZIP_LEVEL = 4
#: NIfTI sform/qform code 1: scanner-based anatomical coordinates (here MNI mm for the perfusion).
XFORM_SCANNER = 1


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def save_nifti(path, data: np.ndarray, affine: np.ndarray, dtype, time_step_s: float | None = None) -> Path:
    """Write ``data`` as a gzipped NIfTI-1 of ``dtype`` (byte-identical for identical input).

    ``time_step_s`` sets the 4th voxel size (seconds) of a time series.
    """
    path = Path(path)
    array = np.asarray(data)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        array = np.clip(np.rint(array), info.min, info.max)
    img = nib.Nifti1Image(array.astype(dtype), affine)
    img.header.set_data_dtype(dtype)
    img.set_sform(affine, code=XFORM_SCANNER)
    img.set_qform(affine, code=XFORM_SCANNER)
    img.header.set_xyzt_units("mm", "sec")
    if time_step_s is not None and array.ndim == 4:
        img.header.set_zooms(tuple(img.header.get_zooms()[:3]) + (float(time_step_s),))
    if np.issubdtype(np.dtype(dtype), np.integer):
        img.header.set_slope_inter(1.0, 0.0)
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as gz:
        gz.write(img.to_bytes())
    _atomic_write(path, raw.getvalue())
    return path


def write_json(path, content: dict) -> Path:
    path = Path(path)
    _atomic_write(path, (json.dumps(content, indent=2) + "\n").encode())
    return path


def write_text(path, text: str) -> Path:
    path = Path(path)
    _atomic_write(path, text.encode())
    return path


def read_tsv(path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def write_tsv(path, rows: list[dict], columns: list[str]) -> Path:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, delimiter="\t", lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "n/a") for c in columns})
    return write_text(path, out.getvalue())


def upsert_tsv(path, new_rows: list[dict], columns: list[str], key: tuple[str, ...]) -> Path:
    """Add ``new_rows`` to a TSV, replacing rows with the same ``key`` values; rows sorted by key."""
    rows = {tuple(r.get(k, "n/a") for k in key): r for r in read_tsv(path)}
    for row in new_rows:
        rows[tuple(str(row[k]) for k in key)] = {c: str(row.get(c, "n/a")) for c in columns}
    return write_tsv(path, [rows[k] for k in sorted(rows)], columns)


def write_dataset_files(out_dir) -> None:
    """dataset_description.json and .bidsignore of the raw dataset (same content every time)."""
    out_dir = Path(out_dir)
    write_json(out_dir / "dataset_description.json", {
        "Name": DATASET_NAME,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "License": "CC0",
        "GeneratedBy": [{"Name": "strokeperf-phantom", "Version": __version__, "CodeURL": CODE_URL}],
    })
    write_text(out_dir / ".bidsignore", "\n".join(BIDSIGNORE_LINES) + "\n")


def write_bvals_bvecs(stem: Path, bvals, bvecs) -> None:
    """BIDS ``.bval`` (one row) and ``.bvec`` (three rows: x, y, z) files."""
    write_text(stem.with_name(stem.name + ".bval"), " ".join(f"{b:g}" for b in bvals) + "\n")
    rows = [" ".join(f"{v:g}" for v in np.asarray(bvecs)[:, axis]) for axis in range(3)]
    write_text(stem.with_name(stem.name + ".bvec"), "\n".join(rows) + "\n")
