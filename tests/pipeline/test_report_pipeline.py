"""End to end: the reports the pipeline itself writes for a phantom cohort (one good session, one
failed) open in headless Chromium with every image decoded, no console error, and the numbers the
group table holds."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "browser"))

import cdp  # noqa: E402

from strokeperf.cli import main  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def pipeline_outputs(tmp_path_factory, small_ctp_dataset):
    root = tmp_path_factory.mktemp("report_pipeline")
    bids = root / "bids"
    shutil.copytree(small_ctp_dataset, bids)
    (bids / "sub-broken" / "ct").mkdir(parents=True)
    (bids / "sub-broken" / "ct" / "sub-broken_ctp.nii.gz").write_bytes(b"not a nifti")
    shutil.copy(bids / "sub-ok" / "ct" / "sub-ok_ctp.json", bids / "sub-broken" / "ct" /
                "sub-broken_ctp.json")
    assert main([str(bids), str(root / "out"), "participant", "-w", str(root / "work")]) == 1
    table = pd.read_csv(root / "out" / "group_perfusion.tsv", sep="\t", dtype=str,
                        keep_default_na=False)
    return root / "out", table


@pytest.fixture(scope="module")
def browser():
    ok, message = cdp.ensure_chromium()
    if not ok:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Chromium is required under CI=true: {message}")
        pytest.skip(f"Chromium not available: {message}")
    b = cdp.Browser(cdp.CHROMIUM)
    yield b
    b.close()


def test_participant_report_shows_the_group_table_numbers(browser, pipeline_outputs):
    out, table = pipeline_outputs
    browser.open(out / "sub-ok.html")
    images = browser.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    assert images and all(images)
    shown = browser.evaluate("Array.from(document.querySelectorAll('[data-column]'))"
                             ".map(e => [e.dataset.column, e.textContent.trim()])")
    row = table[table.participant_id == "sub-ok"].iloc[0]
    checked = {column for column, _ in shown}
    assert {"core_ml", "tmax6_ml", "mismatch_ratio", "defuse3"} <= checked
    for column, value in shown:
        assert value == row[column], (column, value, row[column])
    ARTIFACTS.mkdir(exist_ok=True)
    browser.screenshot(ARTIFACTS / "pipeline-sub-ok.png")
    assert browser.console_errors() == []


def test_group_report_lists_the_failed_session_with_its_error(browser, pipeline_outputs):
    out, table = pipeline_outputs
    browser.open(out / "group.html")
    images = browser.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    assert all(images)
    text = browser.evaluate("document.body.innerText")
    error = table[table.participant_id == "sub-broken"].iloc[0]["error"]
    assert "sub-broken_ctp.nii.gz" in error and error in text
    browser.screenshot(ARTIFACTS / "pipeline-group.png")
    assert browser.console_errors() == []
