"""Participant and group tables (SPEC.md, "Group table columns").

A session's results are one row whose columns are exactly :data:`GROUP_COLUMNS`; it is written as the
session's ``..._desc-<ctp|dsc>_volumes.tsv`` and the group table is the concatenation of those files,
joined with ``participants.tsv``. Failed sessions have a row too (``status = failed`` and the error), so
``group`` can rebuild the table from OUTPUT_DIR alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from strokeperf import io
from strokeperf.profiles import PROFILE_NAMES, profile_rules

GROUP_TABLE = "group_perfusion.tsv"
NA = "n/a"

#: Column -> (description, units or levels) for the data dictionary ``group_perfusion.json``.
COLUMN_DESCRIPTIONS = {
    "participant_id": ("Participant label", None),
    "session_id": ("Session label, n/a when the dataset has no sessions", None),
    "modality": ("Perfusion modality", {"ctp": "CT perfusion", "dsc": "DSC-MRI"}),
    "status": ("Outcome of the session's processing", {"ok": "processed", "failed": "see error"}),
    "qc_flags": ("Semicolon-separated quality-control flags", None),
    "error": ("Error message of a failed session", None),
    "core_ml": ("Ischemic core volume", "mL"),
    "core_definition": ("Rule that defined the core, e.g. rCBF<0.30 (CTP) or ADC<620 (MRI)", None),
    "tmax4_ml": ("Volume of tissue with Tmax above 4 s", "mL"),
    "tmax6_ml": ("Volume of tissue with Tmax above 6 s (hypoperfusion)", "mL"),
    "tmax8_ml": ("Volume of tissue with Tmax above 8 s", "mL"),
    "tmax10_ml": ("Volume of tissue with Tmax above 10 s", "mL"),
    "mismatch_ml": ("tmax6_ml - core_ml", "mL"),
    "mismatch_ratio": ("tmax6_ml / core_ml; inf when the core is 0 and Tmax>6 is not; n/a when both "
                       "are 0", None),
    "hir": ("Hypoperfusion intensity ratio tmax10_ml / tmax6_ml; n/a when Tmax>6 is 0", None),
    "cbv_index": ("Mean rCBV inside Tmax>6 s relative to normal tissue (Tmax<4 s)", None),
    **{name: (f"Eligibility by the {name} profile: {rule}",
              {"true": "eligible", "false": "not eligible", NA: "missing data"})
       for name, rule in profile_rules().items()},
    "affected_side": ("Hemisphere holding most of the Tmax>6 s lesion", {"L": "left", "R": "right",
                                                                         NA: "no lesion"}),
}
GROUP_COLUMNS = list(COLUMN_DESCRIPTIONS)
assert all(p in GROUP_COLUMNS for p in PROFILE_NAMES)

_VOLUME_DECIMALS = 2


def _format(value):
    """Format one cell: numbers rounded, booleans true/false, missing as n/a, infinity as inf."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        f = float(value)
        if math.isnan(f):
            return NA
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f"{round(f, 3 if abs(f) < 10 else _VOLUME_DECIMALS):g}"
    return str(value)


def session_row(participant_id: str, session_id: str | None, modality: str, **values) -> dict:
    """One group-table row: every column present, cells formatted as they are written."""
    unknown = set(values) - set(GROUP_COLUMNS)
    if unknown:
        raise KeyError(f"not group-table columns: {sorted(unknown)}")
    row = dict.fromkeys(GROUP_COLUMNS, NA)
    row.update(participant_id=participant_id, session_id=session_id or NA, modality=modality,
               qc_flags="", error="")
    row.update({k: _format(v) for k, v in values.items()})
    return row


def failed_row(participant_id: str, session_id: str | None, modality: str, error: str) -> dict:
    """The row of a failed session: status failed, the error message, every result n/a."""
    return session_row(participant_id, session_id, modality, status="failed",
                       error=" ".join(str(error).split()))


def write_row(path, row: dict) -> Path:
    """Write one row as a TSV (atomically) with the group-table columns in order."""
    frame = pd.DataFrame([row], columns=GROUP_COLUMNS)
    return io.write_text(path, frame.to_csv(sep="\t", index=False, lineterminator="\n"))


def read_rows(output_dir) -> pd.DataFrame:
    """All session rows found under ``output_dir`` (``sub-*/**/*_volumes.tsv``), as strings."""
    files = sorted(Path(output_dir).glob("sub-*/**/*_volumes.tsv"))
    frames = [pd.read_csv(f, sep="\t", dtype=str, keep_default_na=False) for f in files]
    if not frames:
        return pd.DataFrame(columns=GROUP_COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    return table.reindex(columns=GROUP_COLUMNS, fill_value=NA)


def build_group_table(output_dir, participants: pd.DataFrame | None = None) -> pd.DataFrame:
    """The group table: every session row, sorted, joined with ``participants.tsv`` columns."""
    table = read_rows(output_dir).sort_values(["participant_id", "session_id", "modality"],
                                              kind="stable", ignore_index=True)
    if participants is not None and len(participants):
        extra = participants.copy()
        extra = extra[[c for c in extra.columns if c == "participant_id" or c not in GROUP_COLUMNS]]
        extra = extra.astype(str).replace({"nan": NA, "None": NA, "": NA})
        table = table.merge(extra, on="participant_id", how="left")
        table = table.fillna(NA)
    return table


def write_group_table(output_dir, participants: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write ``group_perfusion.tsv`` and its data dictionary ``group_perfusion.json``."""
    output_dir = Path(output_dir)
    table = build_group_table(output_dir, participants)
    io.write_text(output_dir / GROUP_TABLE,
                  table.to_csv(sep="\t", index=False, lineterminator="\n"))
    dictionary = {}
    for column in table.columns:
        description, levels = COLUMN_DESCRIPTIONS.get(column, ("From participants.tsv", None))
        entry = {"Description": description}
        if isinstance(levels, dict):
            entry["Levels"] = levels
        elif isinstance(levels, str):
            entry["Units"] = levels
        dictionary[column] = entry
    io.write_json(output_dir / GROUP_TABLE.replace(".tsv", ".json"), dictionary)
    return table
