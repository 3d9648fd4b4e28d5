"""Find the perfusion series of a BIDS dataset and read them with validated timing and units.

This module is the input edge of strokeperf (SPEC.md, "Inputs" and "Bad input"). It knows three
layouts, all with an optional ``ses-<label>`` level:

- BIDS CT perfusion: ``sub-P/ses-S/ct/sub-P_ses-S[_<entities>]_ctp.nii[.gz]`` (modality ``ctp``);
- BIDS DSC-MRI: ``sub-P/ses-S/perf/sub-P_ses-S[_<entities>]_dsc.nii[.gz]`` (modality ``dsc``);
- ISLES 2024: ``sub-X/ses-01/sub-X_ses-01_ctp.nii.gz`` with no datatype folder, also below a
  ``raw_data/`` folder of the given directory (modality ``ctp``, layout ``isles24``).

Diffusion data of the same subject and session sit in ``dwi/``: a scanner ADC map ``*_ADC.nii[.gz]``
and DWI ``*_dwi.nii[.gz]`` with ``.bval``/``.bvec`` files of the same stem.

Sidecars follow the BIDS inheritance principle: every ``.json`` from the dataset root down to the
image's folder whose entities are a subset of the image's entities and whose suffix is the image's
suffix applies, and a nearer (or, at the same level, more specific) sidecar overrides a farther one.

Every problem with one file is raised as one line naming the file (:class:`InputError`), so the
pipeline can mark that session ``failed`` and go on with the others; problems with the dataset as a
whole raise :class:`NotBIDSError` or :class:`NoMatchError`.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import re
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.filebasedimages import ImageFileError

from strokeperf.errors import InputError, MissingInputError, NoMatchError, NotBIDSError

logger = logging.getLogger(__name__)

#: Fewest frames a perfusion series may have. Deconvolution needs a pre-contrast baseline (at least
#: 3-5 frames to estimate the signal before arrival) and the first pass of the bolus (about 10-15 s,
#: i.e. 5 or more frames at the usual 1-3 s sampling); with fewer than 10 frames one of the two is
#: necessarily missing. Clinical CTP and DSC protocols acquire 20-80 frames.
MIN_FRAMES = 10

#: Largest plausible DSC echo time in seconds. Gradient-echo DSC uses TE of about 20-50 ms and
#: spin-echo DSC 60-110 ms; a value above 0.2 is almost always milliseconds written by mistake.
MAX_ECHO_TIME_S = 0.2

#: b-values (s/mm^2) below this count as non-diffusion-weighted (b = 0) volumes. Scanners write
#: small nominal values such as 5 or 10 for the b = 0 image; 50 is the usual cut between b0 and DWI.
B0_THRESHOLD_S_PER_MM2 = 50.0

#: Relative tolerance when comparing an explicit frame interval with a sidecar's timing. Sidecars
#: round times to the millisecond, so agreement to 0.1 % (1.000 s vs 1.001 s) is the same timing.
TIMING_RTOL = 1e-3

#: ADC maps given without ``Units`` are taken as mm^2/s when the median of their positive values is
#: below this (brain ADC is about 0.0007-0.003 mm^2/s, i.e. 700-3000 x 1e-6 mm^2/s) ...
ADC_MM2_S_MEDIAN_LIMIT = 0.1
#: ... and as 1e-3 mm^2/s when that median is below this (brain tissue 0.7-3 x 1e-3 mm^2/s; a map in
#: 1e-6 mm^2/s has a median of hundreds).
ADC_1E3_MM2_S_MEDIAN_LIMIT = 50.0

#: Clinically possible ranges of the numeric participants.tsv columns (NIHSS is scored 0-42).
PARTICIPANT_RANGES = {"age": (0.0, 130.0), "nihss": (0.0, 42.0)}

MODALITIES = ("ctp", "dsc")
_DATATYPE = {"ctp": "ct", "dsc": "perf"}
_NIFTI_EXTENSIONS = (".nii.gz", ".nii")
_ENTITY = re.compile(r"^([a-zA-Z0-9]+)-([a-zA-Z0-9]+)$")

# Exceptions nibabel and the gzip/zlib layers raise for unreadable, truncated or corrupt files.
_READ_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError, ImageFileError, ValueError)


# --------------------------------------------------------------------------------------------------
# Sessions


@dataclass(frozen=True)
class Session:
    """One perfusion series of one participant and session, with the diffusion data beside it.

    ``dataset_root`` is the folder sidecar inheritance starts from (the BIDS root, or its
    ``raw_data/`` for ISLES 2024); ``None`` uses the same-name sidecar only.
    """

    subject: str
    session: str | None
    modality: str
    perfusion_file: Path
    sidecar_file: Path | None
    adc_file: Path | None = None
    dwi_file: Path | None = None
    bval_file: Path | None = None
    bvec_file: Path | None = None
    layout: str = "bids"
    dataset_root: Path | None = None

    @property
    def participant_id(self) -> str:
        """``sub-<label>``, as in participants.tsv and the group table."""
        return f"sub-{self.subject}"

    @property
    def session_id(self) -> str:
        """``ses-<label>``, or ``n/a`` for a dataset without sessions."""
        return f"ses-{self.session}" if self.session is not None else "n/a"

    @property
    def prefix(self) -> str:
        """The BIDS filename prefix for outputs: the input's name minus suffix and extension.

        ``sub-01/ses-acute/ct/sub-01_ses-acute_acq-hd_ctp.nii.gz`` gives
        ``sub-01_ses-acute_acq-hd``.
        """
        return _stem(self.perfusion_file).rsplit("_", 1)[0]

    def to_dict(self) -> dict:
        """JSON-able form: paths as strings, ``None`` kept."""
        return {f.name: _path_str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> Session:
        """Inverse of :meth:`to_dict`."""
        paths = {"perfusion_file", "sidecar_file", "adc_file", "dwi_file", "bval_file", "bvec_file",
                 "dataset_root"}
        kwargs = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            value = d[f.name]
            kwargs[f.name] = Path(value) if (f.name in paths and value is not None) else value
        return cls(**kwargs)


def _path_str(value):
    return str(value) if isinstance(value, Path) else value


def _stem(path: Path) -> str:
    name = Path(path).name
    for ext in (*_NIFTI_EXTENSIONS, ".json", ".bval", ".bvec", ".tsv"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _strip_prefix(label: str, prefix: str) -> str:
    label = str(label).strip()
    return label[len(prefix):] if label.startswith(prefix) else label


def _entities(stem: str) -> tuple[dict[str, str], str] | None:
    """Split a BIDS stem into its ``key-value`` entities and suffix; ``None`` if malformed."""
    parts = stem.split("_")
    suffix = parts[-1]
    ents = {}
    for part in parts[:-1]:
        m = _ENTITY.match(part)
        if m is None:
            return None
        ents[m.group(1)] = m.group(2)
    return ents, suffix


def _nifti_files(folder: Path, suffix: str) -> list[Path]:
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        if p.name.startswith(".") or not p.is_file():
            continue
        if any(p.name.endswith(f"_{suffix}{ext}") for ext in _NIFTI_EXTENSIONS):
            found.append(p)
    return sorted(found)


def _same_stem(image: Path, ext: str) -> Path:
    return image.with_name(_stem(image) + ext)


def _dataset_roots(bids_dir: Path) -> list[Path]:
    """Folders holding ``sub-*`` folders: the given one and an ISLES 2024 ``raw_data/`` in it."""
    roots = []
    for root in (bids_dir, bids_dir / "raw_data"):
        if root.is_dir() and any(p.is_dir() and p.name.startswith("sub-") for p in root.iterdir()):
            roots.append(root)
    return roots


def _session_dirs(root: Path):
    """Yield (subject label, session label or None, folder) for every subject/session folder."""
    for sub_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("sub-")):
        subject = sub_dir.name[4:]
        ses_dirs = sorted(p for p in sub_dir.iterdir() if p.is_dir() and p.name.startswith("ses-"))
        yield subject, None, sub_dir
        for ses_dir in ses_dirs:
            yield subject, ses_dir.name[4:], ses_dir


def _belongs(path: Path, subject: str, session: str | None) -> bool:
    """True when the file's name carries the subject/session of its folders (BIDS requires it)."""
    parsed = _entities(_stem(path))
    if parsed is None:
        logger.warning("%s: not a BIDS file name (entities must be key-value pairs); skipped", path)
        return False
    ents, _ = parsed
    if ents.get("sub") != subject or ents.get("ses") != session:
        logger.warning("%s: file name does not match its folder sub-%s%s; skipped", path, subject,
                       f"/ses-{session}" if session else "")
        return False
    return True


def _pick_one(candidates: list[Path], kind: str, folder: Path) -> Path | None:
    if not candidates:
        return None
    if len(candidates) > 1:
        logger.warning("%s: %d %s files; using %s", folder, len(candidates), kind,
                       candidates[0].name)
    return candidates[0]


def discover_sessions(bids_dir, participant_labels=None, session_labels=None,
                      modalities=("ctp", "dsc")) -> list[Session]:
    """Find every perfusion series in a BIDS (or ISLES 2024) dataset.

    Parameters
    ----------
    bids_dir : path
        The dataset root. If it has a ``raw_data/`` folder with ``sub-*`` folders (ISLES 2024), that
        folder is searched as well.
    participant_labels, session_labels : iterable of str, optional
        Keep only these subjects / sessions; labels are accepted with or without ``sub-``/``ses-``.
    modalities : iterable of {"ctp", "dsc"}
        Perfusion modalities to look for.

    Returns
    -------
    list of Session
        Sorted by subject, session, modality and file name.

    Raises
    ------
    NotBIDSError
        ``bids_dir`` does not exist, is not a folder or has no ``sub-<label>`` folders.
    NoMatchError
        No perfusion series at all, or a requested label matches no perfusion series (the message
        names the label and lists what exists).
    """
    bids_dir = Path(bids_dir)
    modalities = tuple(modalities)
    unknown = sorted(set(modalities) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; choose from {list(MODALITIES)}")
    expected = ("expected sub-<label>/[ses-<label>/]ct/*_ctp.nii[.gz] or "
                "sub-<label>/[ses-<label>/]perf/*_dsc.nii[.gz] (ISLES 2024: "
                "[raw_data/]sub-<label>/ses-<label>/*_ctp.nii[.gz])")
    if not bids_dir.exists():
        raise NotBIDSError(f"{bids_dir}: does not exist; {expected}")
    if not bids_dir.is_dir():
        raise NotBIDSError(f"{bids_dir}: is not a directory; {expected}")
    roots = _dataset_roots(bids_dir)
    if not roots:
        raise NotBIDSError(f"{bids_dir}: not a BIDS dataset, no sub-<label> folders; {expected}")
    if not any((r / "dataset_description.json").is_file() for r in (bids_dir, *roots)):
        logger.warning("%s: no dataset_description.json; continuing, but this is not valid BIDS",
                       bids_dir)

    sessions = []
    for root in roots:
        for subject, session, folder in _session_dirs(root):
            sessions.extend(_sessions_in(folder, subject, session, modalities, root))
    sessions.sort(key=lambda s: (s.subject, s.session or "", s.modality, s.perfusion_file.name,
                                 str(s.perfusion_file)))
    if not sessions:
        raise NoMatchError(f"{bids_dir}: no perfusion series ({', '.join(modalities)}) found; "
                           f"{expected}")
    return _select(sessions, bids_dir, participant_labels, session_labels, modalities)


def _sessions_in(folder: Path, subject: str, session: str | None, modalities, root: Path):
    dwi_dir = folder / "dwi"
    adc = _pick_one([p for p in _nifti_files(dwi_dir, "ADC") if _belongs(p, subject, session)],
                    "ADC", dwi_dir)
    dwi = _pick_one([p for p in _nifti_files(dwi_dir, "dwi") if _belongs(p, subject, session)],
                    "dwi", dwi_dir)
    bval = _same_stem(dwi, ".bval") if dwi is not None else None
    bvec = _same_stem(dwi, ".bvec") if dwi is not None else None
    diffusion = dict(adc_file=adc, dwi_file=dwi,
                     bval_file=bval if bval is not None and bval.is_file() else None,
                     bvec_file=bvec if bvec is not None and bvec.is_file() else None)
    found = []
    for modality in modalities:
        places = [(folder / _DATATYPE[modality], "bids")]
        if modality == "ctp":
            places.append((folder, "isles24"))
        for place, layout in places:
            for image in _nifti_files(place, modality):
                if not _belongs(image, subject, session):
                    continue
                sidecar = _same_stem(image, ".json")
                found.append(Session(subject=subject, session=session, modality=modality,
                                     perfusion_file=image,
                                     sidecar_file=sidecar if sidecar.is_file() else None,
                                     layout=layout, dataset_root=root, **diffusion))
    return found


def _select(sessions, bids_dir, participant_labels, session_labels, modalities):
    what = f"perfusion series ({', '.join(modalities)}) in {bids_dir}"
    if participant_labels is not None:
        wanted = [_strip_prefix(lab, "sub-") for lab in participant_labels]
        have = sorted({s.subject for s in sessions})
        missing = [lab for lab in wanted if lab not in have]
        if missing:
            raise NoMatchError(f"participant label(s) {', '.join(missing)} match no {what}; "
                               f"participants with one: {', '.join(have)}")
        sessions = [s for s in sessions if s.subject in wanted]
    if session_labels is not None:
        wanted = [_strip_prefix(lab, "ses-") for lab in session_labels]
        have = sorted({s.session for s in sessions if s.session is not None})
        missing = [lab for lab in wanted if lab not in have]
        if missing:
            listed = ", ".join(have) if have else "none (the dataset has no ses- folders)"
            raise NoMatchError(f"session label(s) {', '.join(missing)} match no {what}"
                               f"{' of the selected participants' if participant_labels else ''}; "
                               f"sessions with one: {listed}")
        sessions = [s for s in sessions if s.session in wanted]
    return sessions


# --------------------------------------------------------------------------------------------------
# Sidecars


def sidecar_files(image: Path, root: Path | None = None) -> list[Path]:
    """Sidecars that apply to ``image`` by BIDS inheritance, farthest first (nearest last).

    A ``.json`` in ``root`` or any folder between it and the image applies when its suffix equals
    the image's and its entities are a subset of the image's (e.g. ``ctp.json`` at the root, or
    ``sub-01_ctp.json`` in ``sub-01/``). At one level, fewer entities come first.
    """
    image = Path(image)
    parsed = _entities(_stem(image))
    same_name = _same_stem(image, ".json")
    if parsed is None or root is None:
        return [same_name] if same_name.is_file() else []
    ents, suffix = parsed
    root = Path(root)
    folders = [image.parent]
    while folders[-1] != root and folders[-1].parent != folders[-1]:
        folders.append(folders[-1].parent)
    if folders[-1] != root:  # image not below root: no inheritance
        folders = [image.parent]
    found = []
    for folder in reversed(folders):
        level = []
        for p in folder.glob("*.json"):
            cand = _entities(p.name[:-5])
            if cand is None or cand[1] != suffix or p.name.startswith("."):
                continue
            if all(ents.get(k) == v for k, v in cand[0].items()):
                level.append((len(cand[0]), p.name, p))
        found.extend(p for _, _, p in sorted(level))
    return found


def read_json(path: Path) -> dict:
    """Read one JSON sidecar; :class:`InputError` naming it when it is not a valid JSON object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MissingInputError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read: {_one_line(exc)}") from None
    try:
        content = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"is not valid JSON ({exc.msg} at line {exc.lineno} "
                               f"column {exc.colno})") from None
    if not isinstance(content, dict):
        raise InputError(path, f"must hold a JSON object, not a {type(content).__name__}")
    return content


def load_sidecar(session: Session, image: Path | None = None) -> tuple[dict, dict[str, Path]]:
    """Merged metadata of ``image`` (default: the perfusion series) and where each key came from.

    Returns ``(metadata, origin)``; ``origin[key]`` is the sidecar that supplied ``metadata[key]``,
    so errors can name the right file.
    """
    image = Path(image) if image is not None else session.perfusion_file
    files = sidecar_files(image, session.dataset_root)
    if image == session.perfusion_file and session.sidecar_file is not None \
            and session.sidecar_file not in files:
        files.append(session.sidecar_file)
    merged, origin = {}, {}
    for path in files:
        for key, value in read_json(path).items():
            merged[key] = value
            origin[key] = path
    return merged, origin


# --------------------------------------------------------------------------------------------------
# Timing


def _number(value) -> float | None:
    """``value`` as a float when it is a JSON number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _timing(sidecar: dict, n_frames: int, src, frame_interval=None) -> tuple[np.ndarray, str]:
    """Frame onsets (s) and which metadata gave them; see :func:`read_frame_times`."""
    if frame_interval is not None:
        fi = _number(frame_interval)
        if fi is None or not math.isfinite(fi) or fi <= 0:
            raise ValueError(f"frame_interval must be a positive number of seconds, "
                             f"got {frame_interval!r}")
        frame_interval = fi

    if "VolumeTiming" in sidecar:
        vt = sidecar["VolumeTiming"]
        if not isinstance(vt, list) or any(_number(v) is None for v in vt):
            raise InputError(src, "VolumeTiming must be a list of numbers (frame onsets in s)")
        times = np.asarray(vt, dtype=float)
        if times.size != n_frames:
            raise InputError(src, f"VolumeTiming has {times.size} entries but the image has "
                                  f"{n_frames} frames")
        bad = ~np.isfinite(times)
        if bad.any():
            raise InputError(src, f"VolumeTiming has {int(bad.sum())} non-finite entries")
        if (times < 0).any():
            first = int(np.flatnonzero(times < 0)[0])
            raise InputError(src, f"VolumeTiming has negative onsets (entry {first} is "
                                  f"{times[first]:g} s)")
        steps = np.diff(times)
        if (steps <= 0).any():
            i = int(np.flatnonzero(steps <= 0)[0])
            kind = "duplicate" if steps[i] == 0 else "decreasing"
            raise InputError(src, f"VolumeTiming is not strictly increasing ({kind} onsets "
                                  f"{times[i]:g} s and {times[i + 1]:g} s at entries {i} "
                                  f"and {i + 1})")
        if "RepetitionTime" in sidecar:
            logger.info("%s: both VolumeTiming and RepetitionTime; VolumeTiming is used", src)
        if frame_interval is not None and not np.allclose(steps, frame_interval, rtol=TIMING_RTOL):
            raise InputError(src, f"contradictory timing: --frame-interval {frame_interval:g} s "
                                  f"but VolumeTiming steps range {steps.min():g}-"
                                  f"{steps.max():g} s")
        return times, "VolumeTiming"

    if "RepetitionTime" in sidecar:
        tr = _number(sidecar["RepetitionTime"])
        if tr is None:
            raise InputError(src, f"RepetitionTime must be a number of seconds, got "
                                  f"{sidecar['RepetitionTime']!r}")
        if not math.isfinite(tr) or tr <= 0:
            raise InputError(src, f"RepetitionTime must be > 0 s, got {tr:g}")
        if frame_interval is not None and not math.isclose(tr, frame_interval,
                                                           rel_tol=TIMING_RTOL):
            raise InputError(src, f"contradictory timing: --frame-interval {frame_interval:g} s "
                                  f"but RepetitionTime is {tr:g} s")
        return np.arange(n_frames, dtype=float) * tr, "RepetitionTime"

    if frame_interval is not None:
        return np.arange(n_frames, dtype=float) * frame_interval, "--frame-interval"
    raise InputError(src, "no timing: the sidecar has neither VolumeTiming nor RepetitionTime; "
                          "add one, or pass --frame-interval SECONDS")


def read_frame_times(sidecar: dict, n_frames, source_path, frame_interval=None) -> np.ndarray:
    """Frame onsets in seconds, shape (n_frames,), from sidecar metadata.

    ``VolumeTiming`` (onsets, as given, not shifted) wins over ``RepetitionTime`` (onsets
    ``0, TR, 2 TR, ...``); ``frame_interval`` (s, ``--frame-interval``) is used only when the
    sidecar has neither, and must agree with the sidecar's timing to 0.1 % when it does.

    Raises :class:`InputError` naming ``source_path`` for missing, malformed or contradictory
    timing, and ``ValueError`` for a ``frame_interval`` that is not a positive number.

    >>> read_frame_times({"RepetitionTime": 1.5}, 4, "x.json")
    array([0. , 1.5, 3. , 4.5])
    """
    return _timing(sidecar, int(n_frames), source_path, frame_interval)[0]


# --------------------------------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class PerfusionSeries:
    """A validated perfusion series.

    data : (X, Y, Z, T) float32 -- signal (HU for CT, magnitude for DSC), all finite.
    affine : (4, 4) float64 -- voxel to scanner (RAS+ mm) transform.
    voxel_size_mm : (3,) float64.
    frame_times : (T,) float64 -- frame onsets in s, strictly increasing.
    echo_time_s : float or None -- DSC echo time in s; ``None`` for CT.
    timing_source : "VolumeTiming", "RepetitionTime" or "--frame-interval".
    metadata : the merged sidecar (empty without one).
    """

    data: np.ndarray
    affine: np.ndarray
    voxel_size_mm: np.ndarray
    frame_times: np.ndarray
    echo_time_s: float | None
    source: Path
    timing_source: str
    metadata: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[3])


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _open_image(path: Path):
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
                               f"{_one_line(exc)}") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"is a {type(img).__name__}, not a NIfTI image")
    return img


def _read_data(img, path: Path) -> np.ndarray:
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
                               f"{_one_line(exc)}") from None


def _check_finite(data: np.ndarray, path: Path) -> None:
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


def _geometry(img, path: Path) -> tuple[np.ndarray, np.ndarray]:
    affine = np.asarray(img.affine, dtype=float)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    if not np.isfinite(affine).all():
        raise InputError(path, "has a non-finite affine (broken sform/qform)")
    if zooms.size < 3 or not (np.isfinite(zooms).all() and (zooms > 0).all()):
        raise InputError(path, f"has invalid voxel size {tuple(zooms.tolist())} mm")
    return affine, zooms


def _check_4d(shape: tuple, path: Path, what: str) -> None:
    if len(shape) != 4:
        raise InputError(path, f"is {len(shape)}D {shape}; {what} must be 4D (x, y, z, time)")
    if shape[3] == 1:
        raise InputError(path, f"is 4D with a single frame {shape}; {what} must be a time series")


def _echo_time(sidecar: dict, origin: dict, fallback: Path) -> float:
    where = origin.get("EchoTime", fallback)
    if "EchoTime" not in sidecar:
        raise InputError(where, "DSC needs EchoTime (s) in the sidecar; it is missing")
    te = _number(sidecar["EchoTime"])
    if te is None:
        raise InputError(where, f"EchoTime must be a single number of seconds, got "
                                f"{sidecar['EchoTime']!r}")
    if not (math.isfinite(te) and 0 < te <= MAX_ECHO_TIME_S):
        hint = f" (a value of {te:g} looks like milliseconds: {te:g} ms is {te / 1000:g} s)" \
            if te > MAX_ECHO_TIME_S else ""
        raise InputError(where, f"EchoTime {te:g} is outside (0, {MAX_ECHO_TIME_S:g}] s; EchoTime "
                                f"must be in seconds{hint}")
    return te


def load_perfusion(session: Session, frame_interval=None) -> PerfusionSeries:
    """Read and validate the perfusion series of ``session``.

    The image must be a 4D NIfTI with at least :data:`MIN_FRAMES` frames and only finite values;
    timing comes from the sidecar (:func:`read_frame_times`) or ``frame_interval`` (s). DSC also
    needs ``EchoTime`` in seconds. The data are read once, straight into float32.

    Raises
    ------
    MissingInputError
        The image (or a sidecar) does not exist or cannot be opened.
    InputError
        Any other problem, naming the image or sidecar at fault.
    """
    path = session.perfusion_file
    img = _open_image(path)
    shape = tuple(int(n) for n in img.shape)
    _check_4d(shape, path, "a perfusion series")
    if shape[3] < MIN_FRAMES:
        raise InputError(path, f"has {shape[3]} frames; at least {MIN_FRAMES} are needed to hold a "
                               f"pre-contrast baseline and the bolus")
    sidecar, origin = load_sidecar(session)
    timing_file = origin.get("VolumeTiming") or origin.get("RepetitionTime") \
        or session.sidecar_file or path
    frame_times, timing_source = _timing(sidecar, shape[3], timing_file, frame_interval)
    echo_time = None
    if session.modality == "dsc":
        echo_time = _echo_time(sidecar, origin, session.sidecar_file or path)
    affine, zooms = _geometry(img, path)
    _warn_header_step(img, frame_times, path)
    data = _read_data(img, path)
    _check_finite(data, path)
    return PerfusionSeries(data=data, affine=affine, voxel_size_mm=zooms, frame_times=frame_times,
                           echo_time_s=echo_time, source=path, timing_source=timing_source,
                           metadata=sidecar)


def _warn_header_step(img, frame_times: np.ndarray, path: Path) -> None:
    """Log when the NIfTI time step disagrees with the sidecar timing (the sidecar is used)."""
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or frame_times.size < 2:
        return
    step = float(zooms[3])
    unit = img.header.get_xyzt_units()[1]
    step *= {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    median = float(np.median(np.diff(frame_times)))
    if step > 0 and not math.isclose(step, median, rel_tol=0.01):
        logger.info("%s: NIfTI header time step %g s differs from the sidecar timing (median "
                    "%g s); the sidecar timing is used", path, step, median)


# --------------------------------------------------------------------------------------------------
# Diffusion


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
    img = _open_image(path)
    shape = tuple(int(n) for n in img.shape)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise InputError(path, f"is {len(shape)}D {shape}; an ADC map must be 3D")
    meta, origin = load_sidecar(session, path)
    affine, _ = _geometry(img, path)
    adc = _read_data(img, path).reshape(shape[:3])
    _check_finite(adc, path)
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
        raise InputError(path, f"cannot be read: {_one_line(exc)}") from None
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
    bval_path = session.bval_file or _same_stem(path, ".bval")
    bvec_path = session.bvec_file or _same_stem(path, ".bvec")
    img = _open_image(path)
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
    affine, _ = _geometry(img, path)
    data = _read_data(img, path)
    _check_finite(data, path)
    return data, affine, bvals, bvecs


# --------------------------------------------------------------------------------------------------
# Clinical data


def read_participants(bids_dir) -> pd.DataFrame | None:
    """``participants.tsv`` of the dataset (or of its ISLES ``raw_data/``), ``None`` when absent.

    Returns one row per participant with ``participant_id`` normalised to ``sub-<label>``; ``age``
    and ``nihss`` (when present) as float with ``n/a``/empty as NaN (an age top-coded as ``89+`` is
    read as 89); other columns as strings with ``n/a`` as NaN.

    Raises :class:`InputError` naming the file when it cannot be read, has no ``participant_id``
    column, has rows with a different number of fields than the header, repeats a participant, or
    has a non-numeric or impossible age/NIHSS (age 0-130, NIHSS 0-42).
    """
    bids_dir = Path(bids_dir)
    candidates = (bids_dir / "participants.tsv", bids_dir / "raw_data" / "participants.tsv")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read: {_one_line(exc)}") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise InputError(path, "is empty; a header with participant_id is needed")
    rows = list(csv.reader((line for _, line in lines), delimiter="\t", quoting=csv.QUOTE_NONE))
    header = [h.strip() for h in rows[0]]
    if "participant_id" not in header:
        sep_hint = " (is it tab-separated?)" if len(header) == 1 else ""
        raise InputError(path, f"has no participant_id column{sep_hint}; columns: "
                               f"{', '.join(header)}")
    for (lineno, _), row in zip(lines[1:], rows[1:]):
        if len(row) != len(header):
            raise InputError(path, f"line {lineno} has {len(row)} fields but the header has "
                                   f"{len(header)}")
    records = [[v.strip() for v in row] for row in rows[1:]]
    table = pd.DataFrame(records, columns=header, dtype=object)

    ids = []
    for (lineno, _), pid in zip(lines[1:], table["participant_id"]):
        if pid in ("", "n/a"):
            raise InputError(path, f"line {lineno}: participant_id is empty")
        ids.append(pid if pid.startswith("sub-") else f"sub-{pid}")
    table["participant_id"] = ids
    duplicated = table["participant_id"][table["participant_id"].duplicated()].tolist()
    if duplicated:
        raise InputError(path, f"lists {', '.join(sorted(set(duplicated)))} more than once")

    for col in header:
        if col in PARTICIPANT_RANGES:
            table[col] = _numeric_column(table[col], col, path, [n for n, _ in lines[1:]])
        elif col != "participant_id":
            table[col] = table[col].where(~table[col].isin(["n/a", ""]), np.nan)
    return table


def _numeric_column(values: pd.Series, col: str, path: Path, linenos: list[int]) -> pd.Series:
    lo, hi = PARTICIPANT_RANGES[col]
    out = []
    for lineno, raw in zip(linenos, values):
        if raw in ("", "n/a"):
            out.append(np.nan)
            continue
        text = raw[:-1] if (col == "age" and raw.endswith("+")) else raw
        try:
            value = float(text)
        except ValueError:
            raise InputError(path, f"line {lineno}: {col} {raw!r} is not a number (use n/a when "
                                   f"unknown)") from None
        if not (math.isfinite(value) and lo <= value <= hi):
            raise InputError(path, f"line {lineno}: {col} {raw!r} is outside {lo:g}-{hi:g}")
        out.append(value)
    return pd.Series(out, index=values.index, dtype=float)
