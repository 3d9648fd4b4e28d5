"""Participant and cohort reports: content checks on the HTML and rendering in headless Chromium.

The outputs are synthetic derivatives written in the datasink's layout (``tests/browser/synthetic.py``),
so these tests do not depend on the pipeline. The browser tests run ``tests/browser/install-chromium.sh``
when ``/usr/bin/chromium`` is missing; they skip when it cannot be installed, and fail under ``CI=true``.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import html
import os
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "browser"))

import cdp  # noqa: E402
import synthetic  # noqa: E402

from strokeperf import CODE_URL, __version__, io, tables  # noqa: E402
from strokeperf.profiles import PROFILE_NAMES, profile_rules  # noqa: E402
from strokeperf.qc import QC_FLAG_RULES  # noqa: E402
from strokeperf.reports import methods, write_group_report, write_participant_report  # noqa: E402
from strokeperf.reports.participant import SUMMARY_COLUMNS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SHOWN_COLUMNS = [c for c, _, _ in SUMMARY_COLUMNS] + list(PROFILE_NAMES) + ["qc_flags", "status"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Collector(HTMLParser):
    """Collects data-column texts (by modality), image sources and links of a page."""

    def __init__(self):
        super().__init__()
        self.values: dict[tuple[str, str], list[str]] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self.scripts_with_src = 0
        self._open: list[tuple[str, tuple[str, str] | None]] = []
        self._text: dict[int, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
            return
        if tag == "a":
            self.links.append(a.get("href", ""))
        if tag == "script" and "src" in a:
            self.scripts_with_src += 1
        if tag == "link" and a.get("rel") == "stylesheet":
            self.scripts_with_src += 1
        key = (a.get("data-modality"), a["data-column"]) if "data-column" in a else None
        self._open.append((tag, key))
        if key:
            self._text[len(self._open)] = []

    def handle_endtag(self, tag):
        if not self._open:
            return
        depth = len(self._open)
        _, key = self._open.pop()
        if key:
            self.values.setdefault(key, []).append("".join(self._text.pop(depth)))

    def handle_data(self, data):
        for depth in self._text:
            self._text[depth].append(data)


def _parse(path: Path) -> _Collector:
    c = _Collector()
    c.feed(path.read_text())
    return c


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict:
    """A small cohort: sub-01 ses-acute with CTP (motion, flags) and DSC (with ADC); sub-02 without
    sessions and without lesion; sub-03 failed. Reports written as the pipeline would."""
    out = tmp_path_factory.mktemp("reports") / "derivatives"
    fd = [float("nan"), 0.1, 0.2, 1.9] + [0.15] * 41
    s1, r1, p1, i1 = synthetic.write_session(out, "01", "acute", "ctp", qc_flags=("motion", "no_vof"),
                                             motion_fd=fd)
    write_participant_report(out, s1, r1, p1, i1)
    s2, r2, p2, i2 = synthetic.write_session(out, "01", "acute", "dsc", lesion_radius_mm=45.0)
    adc = i2["cbf"].with_name("sub-01_ses-acute_desc-dsc_adc.nii.gz")
    import nibabel as nib
    cbf = nib.load(i2["cbf"])
    io.write_nifti(adc, 15.0 * cbf.get_fdata(), cbf.affine)
    write_participant_report(out, s2, r2, p2, i2)
    s3, r3, p3, i3 = synthetic.write_session(out, "02", None, "ctp", lesion_radius_mm=0.0,
                                             with_tissue_curves=False)
    write_participant_report(out, s3, r3, p3, i3)
    s4, r4, p4, i4 = synthetic.write_session(out, "03", None, "ctp",
                                             failed_error="bolus not captured: the scan ended too early")
    write_participant_report(out, s4, r4, p4, i4)
    participants = pd.DataFrame({"participant_id": ["sub-01", "sub-02", "sub-03"],
                                 "age": ["70", "n/a", "85"], "nihss": ["14", "5", "n/a"]})
    table = tables.build_group_table(out, participants)
    group = write_group_report(out, table)
    return {"dir": out, "table": table, "group": group,
            "participants": {"sub-01_ses-acute": out / "sub-01_ses-acute.html",
                             "sub-02": out / "sub-02.html", "sub-03": out / "sub-03.html"},
            "rows": {("sub-01_ses-acute", "ctp"): r1, ("sub-01_ses-acute", "dsc"): r2,
                     ("sub-02", "ctp"): r3, ("sub-03", "ctp"): r4}}


# --- HTML content -------------------------------------------------------------------------------

def test_numbers_shown_equal_group_table_strings(outputs):
    for (name, mod), row in outputs["rows"].items():
        page = _parse(outputs["participants"][name])
        columns = ["status", "error"] if row["status"] == "failed" else SHOWN_COLUMNS
        for column in columns:
            assert page.values.get((mod, column)) == [row[column]], (name, mod, column)


def test_every_modality_on_disk_has_a_section(outputs):
    text = outputs["participants"]["sub-01_ses-acute"].read_text()
    assert 'id="ctp"' in text and 'id="dsc"' in text
    # the DSC call rebuilt the page: the CTP numbers come from its volumes TSV on disk
    on_disk = tables.read_rows(outputs["dir"])
    ctp = on_disk[(on_disk.participant_id == "sub-01") & (on_disk.modality == "ctp")].iloc[0]
    page = _parse(outputs["participants"]["sub-01_ses-acute"])
    assert page.values[("ctp", "core_ml")] == [ctp["core_ml"]]


def test_images_are_embedded_pngs(outputs):
    page = _parse(outputs["participants"]["sub-01_ses-acute"])
    # per modality: summary, Tmax montage, 7 maps, input functions, tissue curves; CTP motion; DSC ADC
    assert len(page.images) == 2 * 11 + 2
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_SIGNATURE
    assert page.scripts_with_src == 0


def test_optional_sections_only_when_inputs_exist(outputs):
    text = outputs["participants"]["sub-01_ses-acute"].read_text()
    assert text.count("Head motion</h3>") == 1 and "ctp motion trace" in text
    assert "dsc ADC overlay" in text and "ctp ADC overlay" not in text
    lesion_free = outputs["participants"]["sub-02"].read_text()
    assert "Head motion" not in lesion_free and 'alt="ctp tissue curves"' not in lesion_free


def test_qc_flags_are_explained(outputs):
    text = outputs["participants"]["sub-01_ses-acute"].read_text()
    for flag in ("motion", "no_vof"):
        assert f'<span class="flag">{flag}</span>: {QC_FLAG_RULES[flag]}' in text
    assert "No quality-control flag was raised." in outputs["participants"]["sub-02"].read_text()


def test_profile_rules_shown_with_verdicts(outputs):
    text = outputs["participants"]["sub-01_ses-acute"].read_text()
    for rule in profile_rules().values():
        assert f"<td>{html.escape(rule)}</td>" in text


@pytest.mark.parametrize("mod", ["ctp", "dsc"])
def test_methods_paragraph_is_generated_from_the_session_parameters(outputs, mod):
    """The report's methods text is the version sentence and :mod:`strokeperf.reports.methods`'
    paragraph for the parameters in the session's record, its references listed below it."""
    text = outputs["participants"]["sub-01_ses-acute"].read_text()
    shown = html.unescape(re.search(rf'id="methods-{mod}">(.*?)</p>', text, re.S).group(1))
    parameters = methods.parameters_from_record(synthetic.PARAMETERS)
    name = {"ctp": "CT perfusion", "dsc": "DSC-MRI perfusion"}[mod]
    assert shown == (f"{name} was processed with strokeperf {__version__} ({CODE_URL}). "
                     + methods.methods_text(mod, parameters))
    assert "oSVD" in shown  # synthetic.PARAMETERS ran block-circulant SVD
    section = text[text.index(f'id="methods-{mod}"'):]
    references = re.search(r"<ol>(.*?)</ol>", section, re.S).group(1)
    assert references == "".join(f"<li>{html.escape(r)}</li>"
                                 for r in methods.references(mod, parameters))


def test_failed_session_shows_its_error(outputs):
    page = _parse(outputs["participants"]["sub-03"])
    assert page.values[("ctp", "error")] == ["bolus not captured: the scan ended too early"]
    assert page.images == []


def test_group_report_content(outputs):
    page = _parse(outputs["group"])
    text = outputs["group"].read_text()
    for name in outputs["participants"]:
        assert f"{name}.html" in page.links
        assert (outputs["dir"] / f"{name}.html").exists()
    assert "sub-03" in text and "bolus not captured: the scan ended too early" in text
    assert '<span data-summary="failed">1</span>' in text
    assert '<td class="num" data-flag="motion">1</td>' in text
    table = outputs["table"]
    for _, row in table.iterrows():
        for column in ("core_ml", "tmax6_ml", "mismatch_ml", "age"):
            assert [row[column]] == [v for (m, c), vs in page.values.items() if c == column
                                     and m == row["modality"] for v in vs
                                     if v == row[column]][:1], column
    assert len(page.images) == 1 and page.scripts_with_src == 0


def test_group_report_of_empty_table(tmp_path):
    path = write_group_report(tmp_path, pd.DataFrame(columns=tables.GROUP_COLUMNS))
    assert "0 session(s)" in path.read_text()


# --- browser ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium() -> Path:
    """``/usr/bin/chromium``, installed by the set-up script when missing."""
    ok, message = cdp.ensure_chromium()
    if not ok:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Chromium is required under CI=true: {message}")
        pytest.skip(f"Chromium not available: {message}")
    return cdp.CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium):
    b = cdp.Browser(chromium)
    yield b
    b.close()


def _open_checked(browser, path: Path, shot: str):
    browser.open(path)
    images = browser.evaluate(
        "Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0}))")
    assert images and all(i["ok"] for i in images), [i["alt"] for i in images if not i["ok"]]
    browser.screenshot(ARTIFACTS / shot)
    assert browser.console_errors() == []
    return images


@pytest.mark.parametrize("name", ["sub-01_ses-acute", "sub-02", "group"])
def test_report_renders_in_chromium(browser, outputs, name):
    path = outputs["group"] if name == "group" else outputs["participants"][name]
    _open_checked(browser, path, f"report-{name}.png")


def test_failed_report_renders_in_chromium(browser, outputs):
    browser.open(outputs["participants"]["sub-03"])
    assert browser.evaluate("document.images.length") == 0
    browser.screenshot(ARTIFACTS / "report-sub-03.png")
    assert browser.console_errors() == []


def test_numbers_in_browser_equal_group_table(browser, outputs):
    table = outputs["table"]
    for name, path in outputs["participants"].items():
        browser.open(path)
        shown = browser.evaluate(
            "Array.from(document.querySelectorAll('section [data-column]'))"
            ".map(e => [e.dataset.modality, e.dataset.column, e.textContent])")
        assert shown
        pid, _, ses = name.partition("_")
        for mod, column, value in shown:
            rows = table[(table.participant_id == pid) & (table.session_id == (ses or "n/a"))
                         & (table.modality == mod)]
            assert len(rows) == 1 and rows.iloc[0][column] == value, (name, mod, column)


def test_group_table_sorts_when_header_clicked(browser, outputs):
    browser.open(outputs["group"])
    column = list(outputs["table"].columns).index("core_ml") + 2  # 1-based, after "report"
    read = (f"Array.from(document.querySelectorAll('#group-table tbody tr td:nth-child({column})'))"
            ".map(td => td.textContent)")
    click = f"document.querySelector('#group-table thead th:nth-child({column})').click()"
    browser.evaluate(click)
    ascending = browser.evaluate(read)
    numbers = [float(v) for v in ascending if v != "n/a"]
    assert numbers == sorted(numbers) and ascending[-1] == "n/a"
    browser.evaluate(click)
    descending = browser.evaluate(read)
    assert descending == ascending[::-1]
    assert browser.console_errors() == []
