"""The diffusion inputs of a session: the scanner ADC map in 1e-6 mm^2/s (:func:`load_adc`) and the
DWI series with its validated b-values and b-vectors (:func:`load_dwi`)."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np

from strokeperf.bids.discovery import Session, same_stem
from strokeperf.bids.images import check_finite, image_geometry, open_image, read_image_data
from strokeperf.bids.sidecars import load_sidecar
from strokeperf.diffusion import B0_THRESHOLD_S_PER_MM2
from strokeperf.errors import InputError, MissingInputError, one_line

logger = logging.getLogger(__name__)

#: ADC maps given without ``Units`` are taken as mm^2/s when the median of their positive values is
#: below this (brain ADC is about 0.0007-0.003 mm^2/s, i.e. 700-3000 x 1e-6 mm^2/s) ...
ADC_MM2_S_MEDIAN_LIMIT = 0.1
#: ... and as 1e-3 mm^2/s when that median is below this (brain tissue 0.7-3 x 1e-3 mm^2/s; a map in
#: 1e-6 mm^2/s has a median of hundreds).
ADC_1E3_MM2_S_MEDIAN_LIMIT = 50.0

_ADC_UNIT = re.compile(r"^(?:x?(?:1e|10)(?P<exp>[-+]?\d+))?(?P<unit>mm2/s|um2/s|um2/ms|m2/s)$")
#: Factor from each base unit to 1e-6 mm^2/s.
_ADC_BASE = {"mm2/s": 1e6, "um2/s": 1.0, "um2/ms": 1e3, "m2/s": 1e12}


def adc_unit_factor(units: str) -> float | None:
    """Factor converting ADC values in ``units`` to 1e-6 mm^2/s; ``None`` if not understood.

    Accepted (case, spaces, ``^``, ``*`` and unicode superscripts/micro signs ignored): ``mm^2/s``,
    ``mm2 s-1``, ``um^2/s``, ``um^2/ms``, ``m^2/s``, each optionally preceded by a power of ten
    written ``1e-3``, ``10^-3`` or ``x10^-3`` (e.g. ``10^-6 mm^2/s``, ``1e-3 mm2/s``).

    >>> adc_unit_factor("mm^2/s"), adc_unit_factor("10^-3 mm^2/s"), adc_unit_factor("1e-6 mm2/s")
    (1000000.0, 1000.0, 1.0)
    """
    s = str(units).lower()
    for a, b in (("µ", "u"), ("μ", "u"), ("²", "2"), ("⁻", "-"), ("×", "x"), ("·", ""),
                 ("¹", "1"), ("³", "3"), ("⁶", "6"), ("⁹", "9")):
        s = s.replace(a, b)
    s = re.sub(r"[\s^*]", "", s)
    s = re.sub(r"2(m?)s-1$", r"2/\1s", s)
    m = _ADC_UNIT.match(s)
    if m is None:
        return None
    exp = int(m.group("exp")) if m.group("exp") else 0
    return _ADC_BASE[m.group("unit")] * 10.0 ** exp


def _expected_dwi_path(session: Session, suffix: str) -> Path:
    folder = session.perfusion_file.parent
    if session.layout == "bids":
        folder = folder.parent
    labels = [session.participant_id] + ([session.session_id] if session.session else [])
    return folder / "dwi" / f"{'_'.join(labels)}_{suffix}.nii.gz"


def load_adc(session: Session) -> tuple[np.ndarray, np.ndarray]:
    """Scanner ADC map of ``session`` in 1e-6 mm^2/s.

    Units come from the sidecar's ``Units`` (see :func:`adc_unit_factor`); without one, the values
    decide: median of positive values < 0.1 means mm^2/s, < 50 means 1e-3 mm^2/s, else 1e-6 mm^2/s.

    Returns
    -------
    adc : (X, Y, Z) float32, 1e-6 mm^2/s
    affine : (4, 4) float64
    """
    path = session.adc_file
    if path is None:
        raise MissingInputError(_expected_dwi_path(session, "ADC"), "no ADC map for this session")
    img = open_image(path)
    shape = tuple(int(n) for n in img.shape)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise InputError(path, f"is {len(shape)}D {shape}; an ADC map must be 3D")
    meta, origin = load_sidecar(session, path)
    affine, _ = image_geometry(img, path)
    adc = read_image_data(img, path).reshape(shape[:3])
    check_finite(adc, path)
    units = meta.get("Units")
    if units is not None:
        factor = adc_unit_factor(units) if isinstance(units, str) else None
        if factor is None:
            raise InputError(origin["Units"], f"ADC Units {units!r} not understood; use mm^2/s, "
                                              f"10^-3 mm^2/s or 10^-6 mm^2/s (um^2/s)")
        how = f"Units {units!r}"
    else:
        positive = adc[adc > 0]
        median = float(np.median(positive)) if positive.size else 0.0
        if median < ADC_MM2_S_MEDIAN_LIMIT and positive.size:
            factor, how = 1e6, f"values (median {median:.3g}) look like mm^2/s"
        elif median < ADC_1E3_MM2_S_MEDIAN_LIMIT and positive.size:
            factor, how = 1e3, f"values (median {median:.3g}) look like 1e-3 mm^2/s"
        else:
            factor, how = 1.0, "assumed 1e-6 mm^2/s"
        if factor != 1.0:
            logger.warning("%s: no Units in the sidecar; %s, converted to 1e-6 mm^2/s", path, how)
    if factor != 1.0:
        adc = adc * np.float32(factor)
    logger.debug("%s: ADC %s, factor %g to 1e-6 mm^2/s", path, how, factor)
    return adc.astype(np.float32, copy=False), affine


def _read_numbers(path: Path, what: str) -> list[list[float]]:
    """Rows of whitespace-separated numbers; InputError naming ``path`` when unparseable."""
    if not path.is_file():
        raise MissingInputError(path, f"file not found ({what} needed beside the DWI)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read: {one_line(exc)}") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.replace(",", " ").split()
        if not tokens:
            continue
        try:
            row = [float(t) for t in tokens]
        except ValueError:
            bad = next(t for t in tokens if not _is_float(t))
            raise InputError(path, f"line {lineno}: {bad!r} is not a number") from None
        if not all(math.isfinite(v) for v in row):
            raise InputError(path, f"line {lineno}: non-finite value")
        rows.append(row)
    if not rows:
        raise InputError(path, "is empty")
    return rows


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_dwi_gradients(session: Session):
    """Open the DWI header of ``session`` and validate its b-values and b-vectors against it.

    Reads no image data, so it is cheap enough to run before a session's perfusion analysis: a
    broken ``.bval`` then fails the session in seconds instead of after the whole DSC fit.

    Returns
    -------
    img : the opened NIfTI image (data not yet read)
    bvals : (N,) float64, s/mm^2
    bvecs : (3, N) float64, one column per volume (BIDS convention)

    Raises :class:`InputError` naming the ``.bval``/``.bvec`` file when it cannot be parsed, its
    count differs from the number of volumes, bvec does not have 3 rows, or there is no b = 0
    (b < 50 s/mm^2) or no diffusion-weighted volume.
    """
    path = session.dwi_file
    if path is None:
        raise MissingInputError(_expected_dwi_path(session, "dwi"), "no DWI for this session")
    bval_path = session.bval_file or same_stem(path, ".bval")
    bvec_path = session.bvec_file or same_stem(path, ".bvec")
    img = open_image(path)
    shape = tuple(int(n) for n in img.shape)
    if len(shape) != 4:
        raise InputError(path, f"is {len(shape)}D {shape}; a DWI series must be 4D "
                               f"(x, y, z, volume)")
    n_vol = shape[3]

    bval_rows = _read_numbers(bval_path, "b-values")
    if len(bval_rows) > 1 and not all(len(r) == 1 for r in bval_rows):
        raise InputError(bval_path, f"has {len(bval_rows)} rows; BIDS bval is one row of b-values")
    bvals = np.asarray([v for r in bval_rows for v in r], dtype=float)
    if bvals.size != n_vol:
        raise InputError(bval_path, f"has {bvals.size} b-values but {path.name} has "
                                    f"{n_vol} volumes")
    if (bvals < 0).any():
        raise InputError(bval_path, "has negative b-values")

    bvec_rows = _read_numbers(bvec_path, "b-vectors")
    if len({len(r) for r in bvec_rows}) != 1:
        raise InputError(bvec_path, "has rows of different lengths")
    if len(bvec_rows) != 3:
        raise InputError(bvec_path, f"has {len(bvec_rows)} rows; BIDS bvec has 3 rows (x, y, z) "
                                    f"with one column per volume")
    bvecs = np.asarray(bvec_rows, dtype=float)
    if bvecs.shape[1] != n_vol:
        raise InputError(bvec_path, f"has {bvecs.shape[1]} b-vectors but {path.name} has "
                                    f"{n_vol} volumes")

    if not (bvals < B0_THRESHOLD_S_PER_MM2).any():
        raise InputError(bval_path, f"has no b=0 volume (b < {B0_THRESHOLD_S_PER_MM2:g} s/mm^2); "
                                    f"one is needed to compute ADC")
    if not (bvals >= B0_THRESHOLD_S_PER_MM2).any():
        raise InputError(bval_path, f"has no diffusion-weighted volume (b >= "
                                    f"{B0_THRESHOLD_S_PER_MM2:g} s/mm^2); one is needed to compute "
                                    f"ADC")
    return img, bvals, bvecs


def check_diffusion_inputs(session: Session) -> None:
    """Validate the session's diffusion inputs, if any, without reading the DWI data: the DWI
    header with its b-values and b-vectors (:func:`read_dwi_gradients`) and the ADC map
    (:func:`load_adc`, one 3D volume). Raises their :class:`InputError` naming the file."""
    if session.dwi_file is not None:
        read_dwi_gradients(session)
    if session.adc_file is not None:
        load_adc(session)


def load_dwi(session: Session) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """DWI series of ``session`` with validated b-values and b-vectors
    (:func:`read_dwi_gradients`, whose errors it raises).

    Returns
    -------
    data : (X, Y, Z, N) float32
    affine : (4, 4) float64
    bvals : (N,) float64, s/mm^2
    bvecs : (3, N) float64, one column per volume (BIDS convention)
    """
    img, bvals, bvecs = read_dwi_gradients(session)
    path = session.dwi_file
    affine, _ = image_geometry(img, path)
    data = read_image_data(img, path)
    check_finite(data, path)
    return data, affine, bvals, bvecs
