"""The perfusion series of a BIDS (or ISLES 2024) dataset, one :class:`Session` each, and the BIDS
file-name entities they are recognised by (the layouts are listed in :mod:`strokeperf.bids`)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields
from pathlib import Path

from strokeperf.errors import NoMatchError, NotBIDSError

logger = logging.getLogger(__name__)

MODALITIES = ("ctp", "dsc")
_DATATYPE = {"ctp": "ct", "dsc": "perf"}
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
_ENTITY = re.compile(r"^([a-zA-Z0-9]+)-([a-zA-Z0-9]+)$")


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
        return output_prefix(self.perfusion_file)

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


def file_stem(path: Path) -> str:
    """A BIDS file's name without its extension (``.nii[.gz]``, ``.json``, ``.bval``, ``.bvec``,
    ``.tsv``)."""
    name = Path(path).name
    for ext in (*NIFTI_EXTENSIONS, ".json", ".bval", ".bvec", ".tsv"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def output_prefix(perfusion_file) -> str:
    """The BIDS file-name prefix of a perfusion series' outputs: its name minus suffix and
    extension (``sub-01_ses-acute_acq-hd_ctp.nii.gz`` gives ``sub-01_ses-acute_acq-hd``)."""
    return file_stem(perfusion_file).rsplit("_", 1)[0]


def _strip_prefix(label: str, prefix: str) -> str:
    label = str(label).strip()
    return label[len(prefix):] if label.startswith(prefix) else label


def parse_entities(stem: str) -> tuple[dict[str, str], str] | None:
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
        if any(p.name.endswith(f"_{suffix}{ext}") for ext in NIFTI_EXTENSIONS):
            found.append(p)
    return sorted(found)


def same_stem(image: Path, ext: str) -> Path:
    """The file beside ``image`` with the same stem and extension ``ext`` (its sidecar, bval...)."""
    return image.with_name(file_stem(image) + ext)


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
    parsed = parse_entities(file_stem(path))
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
    bval = same_stem(dwi, ".bval") if dwi is not None else None
    bvec = same_stem(dwi, ".bvec") if dwi is not None else None
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
                sidecar = same_stem(image, ".json")
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
