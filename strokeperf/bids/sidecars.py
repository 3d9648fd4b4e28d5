"""JSON sidecars, merged by the BIDS inheritance principle, and the frame timing they give.

Every ``.json`` from the dataset root down to the image's folder whose entities are a subset of the
image's entities and whose suffix is the image's suffix applies, and a nearer (or, at the same
level, more specific) sidecar overrides a farther one.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from strokeperf.bids.discovery import Session, file_stem, parse_entities, same_stem
from strokeperf.errors import InputError, MissingInputError, one_line

logger = logging.getLogger(__name__)

#: Relative tolerance when comparing an explicit frame interval with a sidecar's timing. Sidecars
#: round times to the millisecond, so agreement to 0.1 % (1.000 s vs 1.001 s) is the same timing.
TIMING_RTOL = 1e-3


def sidecar_files(image: Path, root: Path | None = None) -> list[Path]:
    """Sidecars that apply to ``image`` by BIDS inheritance, farthest first (nearest last).

    A ``.json`` in ``root`` or any folder between it and the image applies when its suffix equals
    the image's and its entities are a subset of the image's (e.g. ``ctp.json`` at the root, or
    ``sub-01_ctp.json`` in ``sub-01/``). At one level, fewer entities come first.
    """
    image = Path(image)
    parsed = parse_entities(file_stem(image))
    same_name = same_stem(image, ".json")
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
            cand = parse_entities(p.name[:-5])
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
        raise InputError(path, f"cannot be read: {one_line(exc)}") from None
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


def json_number(value) -> float | None:
    """``value`` as a float when it is a JSON number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


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
    n_frames, src = int(n_frames), source_path
    if frame_interval is not None:
        fi = json_number(frame_interval)
        if fi is None or not math.isfinite(fi) or fi <= 0:
            raise ValueError(f"frame_interval must be a positive number of seconds, "
                             f"got {frame_interval!r}")
        frame_interval = fi

    if "VolumeTiming" in sidecar:
        vt = sidecar["VolumeTiming"]
        if not isinstance(vt, list) or any(json_number(v) is None for v in vt):
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
        return times

    if "RepetitionTime" in sidecar:
        tr = json_number(sidecar["RepetitionTime"])
        if tr is None:
            raise InputError(src, f"RepetitionTime must be a number of seconds, got "
                                  f"{sidecar['RepetitionTime']!r}")
        if not math.isfinite(tr) or tr <= 0:
            raise InputError(src, f"RepetitionTime must be > 0 s, got {tr:g}")
        if frame_interval is not None and not math.isclose(tr, frame_interval,
                                                           rel_tol=TIMING_RTOL):
            raise InputError(src, f"contradictory timing: --frame-interval {frame_interval:g} s "
                                  f"but RepetitionTime is {tr:g} s")
        return np.arange(n_frames, dtype=float) * tr

    if frame_interval is not None:
        return np.arange(n_frames, dtype=float) * frame_interval
    raise InputError(src, "no timing: the sidecar has neither VolumeTiming nor RepetitionTime; "
                          "add one, or pass --frame-interval SECONDS")


def timing_source(sidecar: dict) -> str:
    """The metadata :func:`read_frame_times` takes the frame onsets from: ``"VolumeTiming"``,
    else ``"RepetitionTime"``, else ``"--frame-interval"``."""
    return next((key for key in ("VolumeTiming", "RepetitionTime") if key in sidecar),
                "--frame-interval")
