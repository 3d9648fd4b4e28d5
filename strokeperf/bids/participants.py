"""The clinical data of a dataset: ``participants.tsv`` with validated age and NIHSS."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd

from strokeperf.errors import InputError, one_line

#: Clinically possible ranges of the numeric participants.tsv columns (NIHSS is scored 0-42).
PARTICIPANT_RANGES = {"age": (0.0, 130.0), "nihss": (0.0, 42.0)}


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
        raise InputError(path, f"cannot be read: {one_line(exc)}") from None
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
