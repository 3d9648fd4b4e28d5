"""Opening and validating NIfTI images: a missing or unreadable file, a corrupt payload, non-finite
values or a broken geometry become one :class:`~strokeperf.errors.InputError` naming the file."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from strokeperf.errors import InputError, MissingInputError, one_line

# Exceptions nibabel and the gzip/zlib layers raise for unreadable, truncated or corrupt files.
_READ_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError, ImageFileError, ValueError)


def open_image(path: Path):
    """Open a NIfTI header (data not read yet).

    Missing or unreadable for permissions -> MissingInputError; not a readable NIfTI -> InputError.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "is not a file")
    try:
        img = nib.load(path)
    except PermissionError:
        raise MissingInputError(path, "cannot be read: permission denied") from None
    except _READ_ERRORS as exc:
        raise InputError(path, f"cannot be read as NIfTI (truncated or corrupt?): "
                               f"{one_line(exc)}") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"is a {type(img).__name__}, not a NIfTI image")
    return img


def read_image_data(img, path: Path) -> np.ndarray:
    """Read the whole data array once, as float32.

    A gzipped file is read through one stream that is then drained to its end, so that gzip checks
    the CRC and length of the whole member: reading only the voxel bytes would silently accept a
    corrupt payload whose damage still decompresses.
    """
    try:
        if not str(path).endswith(".gz"):
            return np.asarray(img.dataobj, dtype=np.float32)
        with gzip.open(path, "rb") as stream:
            data = np.asarray(type(img).from_stream(stream).dataobj, dtype=np.float32)
            while stream.read(1 << 20):
                pass
        return data
    except _READ_ERRORS as exc:
        raise InputError(path, f"image data cannot be read (truncated or corrupt file?): "
                               f"{one_line(exc)}") from None


def check_finite(data: np.ndarray, path: Path) -> None:
    """InputError when any value is NaN/Inf; checks frame by frame to keep memory low."""
    if data.ndim == 3:
        data = data[..., None]
    bad_voxels = np.zeros(data.shape[:3], dtype=bool)
    n_bad = 0
    for t in range(data.shape[3]):
        bad = ~np.isfinite(data[..., t])
        n_bad += int(bad.sum())
        bad_voxels |= bad
    if n_bad:
        raise InputError(path, f"has {n_bad} NaN/Inf values in {int(bad_voxels.sum())} of "
                               f"{bad_voxels.size} voxels")


def image_geometry(img, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The image's affine (4, 4) and its header's voxel size (3,) in mm; InputError when the
    affine is not finite or a voxel size is not a positive number."""
    affine = np.asarray(img.affine, dtype=float)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    if not np.isfinite(affine).all():
        raise InputError(path, "has a non-finite affine (broken sform/qform)")
    if zooms.size < 3 or not (np.isfinite(zooms).all() and (zooms > 0).all()):
        raise InputError(path, f"has invalid voxel size {tuple(zooms.tolist())} mm")
    return affine, zooms
