"""Volumes TSV and group table: the columns, formats and join that SPEC.md fixes."""

import json

import pandas as pd

from strokeperf import tables


def test_row_has_exactly_the_spec_columns_and_formats():
    row = tables.session_row("sub-01", None, "ctp", status="ok", core_ml=12.3456, tmax6_ml=80.0,
                             mismatch_ratio=float("inf"), hir=None, defuse3=True, dawn=None)
    assert list(row) == tables.GROUP_COLUMNS
    assert row["session_id"] == "n/a"
    assert row["core_ml"] == "12.35" and row["tmax6_ml"] == "80"
    assert row["mismatch_ratio"] == "inf" and row["hir"] == "n/a"
    assert row["defuse3"] == "true" and row["dawn"] == "n/a"


def test_group_table_joins_participants_and_keeps_failed_rows(tmp_path):
    ok = tables.session_row("sub-01", "ses-a", "ctp", status="ok", core_ml=5.0)
    bad = tables.failed_row("sub-02", None, "ctp", "sub-02_ctp.nii.gz: is 3D;\n a 4D series is needed")
    tables.write_row(tmp_path / "sub-01/ses-a/perf/sub-01_ses-a_desc-ctp_volumes.tsv", ok)
    tables.write_row(tmp_path / "sub-02/perf/sub-02_desc-ctp_volumes.tsv", bad)
    participants = pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "age": [71, None],
                                 "nihss": [14, 8]})
    table = tables.write_group_table(tmp_path, participants)
    back = pd.read_csv(tmp_path / "group_perfusion.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(back.columns[: len(tables.GROUP_COLUMNS)]) == tables.GROUP_COLUMNS
    assert list(back["participant_id"]) == ["sub-01", "sub-02"]
    assert list(back["status"]) == ["ok", "failed"]
    assert back.loc[1, "error"] == "sub-02_ctp.nii.gz: is 3D; a 4D series is needed"
    assert back.loc[1, "core_ml"] == "n/a"
    assert list(back["age"]) == ["71.0", "n/a"] and list(back["nihss"]) == ["14", "8"]
    dictionary = json.loads((tmp_path / "group_perfusion.json").read_text())
    assert dictionary["core_ml"]["Units"] == "mL" and set(dictionary) == set(table.columns)
    assert not list(tmp_path.rglob(".*partial*"))
