"""The cohort report ``OUTPUT_DIR/group.html``: the sortable group table, volume distributions,
profile and QC-flag counts, lesion-frequency maps, failed sessions with their errors and links to
every participant report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from strokeperf import io
from strokeperf.profiles import PROFILE_NAMES
from strokeperf.reports.figures import distribution_figure, frequency_figure
from strokeperf.reports.page import (MODALITY_NAMES, NA, PROFILE_TITLES, escape, flag_rule,
                                     html_page, img_tag, value_cell)

_SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  function key(row, col) {
    var s = row.cells[col].textContent.trim();
    var v = s === "inf" ? Infinity : s === "-inf" ? -Infinity : s === "" ? NaN : Number(s);
    return isNaN(v) ? {num: false, s: s} : {num: true, v: v};
  }
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a, col), y = key(b, col), c;
        if (x.num && y.num) { c = x.v < y.v ? -1 : x.v > y.v ? 1 : 0; }
        else if (x.num) { c = -1; } else if (y.num) { c = 1; } else { c = x.s.localeCompare(y.s); }
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _row_report_name(row) -> str:
    """Report file name of a group-table row (``participant_id``/``session_id`` with prefixes)."""
    name = str(row["participant_id"])
    if str(row.get("session_id", NA)) not in (NA, "", "nan"):
        name += f"_{row['session_id']}"
    return f"{name}.html"


def _frequency_html(frequency_maps: list[dict]) -> str:
    """The cohort report's lesion-frequency section (template space), per modality."""
    parts = []
    for mod in sorted({r["modality"] for r in frequency_maps}):
        records = [r for r in frequency_maps if r["modality"] == mod]
        sides = records[0]["sides"]
        files = ", ".join(f"<code>{escape(Path(r['path']).name)}</code>" for r in records)
        parts.append(
            f"<h3>{escape(MODALITY_NAMES.get(mod, mod))}</h3>"
            f"<p>Affected side of the Tmax &gt; 6 s lesion in template space: "
            f"<span data-side=\"{mod}-L\">{sides['L']}</span> left, "
            f"<span data-side=\"{mod}-R\">{sides['R']}</span> right, {sides['none']} without "
            f"lesion. Maps: {files}.</p>"
            + img_tag(frequency_figure(records), f"{mod} lesion-frequency maps"))
    return ("<h2>Lesion frequency (ICBM152 2009a template)</h2><p>Fraction of the normalised "
            "sessions whose lesion covers each voxel (axial slices, patient's right on the left)."
            "</p>" + "".join(parts))


def _count_table(title_col: str, counts: dict, columns: list[str]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in [title_col, *columns])
    body = "".join(f"<tr><th>{escape(k)}</th>" + "".join(f'<td class="num">{n}</td>' for n in v)
                   + "</tr>" for k, v in counts.items())
    return f"<table><tr>{head}</tr>{body}</table>"


def write_group_report(output_dir, table: pd.DataFrame, frequency_maps: list[dict] | None = None
                       ) -> Path:
    """Write ``group.html``: sortable group table, distributions, counts, failures and links, and
    the lesion-frequency maps when sessions were normalised (``frequency_maps``: records of
    :func:`strokeperf.lesion_frequency.write_frequency_maps`)."""
    output_dir = Path(output_dir)
    table = table.astype(str).replace({"nan": NA, "None": NA})
    n_failed = int((table["status"] == "failed").sum()) if "status" in table else 0
    parts = [f"<p>{len(table)} session(s) of {table['participant_id'].nunique() if len(table) else 0}"
             f" participant(s); <span data-summary=\"failed\">{n_failed}</span> failed.</p>"]

    reports = sorted({_row_report_name(r) for _, r in table.iterrows()})
    links = "".join(f'<li><a href="{escape(name)}">{escape(name[:-5])}</a></li>' for name in reports)
    parts.append(f"<h2>Participant reports</h2><ul class=\"reports\">{links or '<li>none</li>'}</ul>")

    figure = distribution_figure(table) if len(table) else None
    if figure:
        parts.append("<h2>Volume distributions</h2>" + img_tag(figure, "cohort volume distributions"))

    mods = sorted(table["modality"].unique()) if len(table) else []
    profile_counts = {PROFILE_TITLES[p]: [int(((table["modality"] == mod) & (table[p] == v)).sum())
                                          for mod in mods for v in ("true", "false", NA)]
                      for p in PROFILE_NAMES if p in table}
    columns = [f"{mod} {v}" for mod in mods for v in ("eligible", "not eligible", "n/a")]
    parts.append("<h2>Profiles</h2>" + _count_table("profile", profile_counts, columns))

    flags = table["qc_flags"].str.split(";").explode() if "qc_flags" in table and len(table) else \
        pd.Series(dtype=str)
    flags = flags[flags.notna() & (flags != "") & (flags != NA)]
    counts = flags.value_counts()
    qc_rows = "".join(f"<tr><th>{escape(f)}</th>"
                      f"<td class=\"num\" data-flag=\"{escape(f)}\">{int(n)}</td>"
                      f"<td>{escape(flag_rule(f))}</td></tr>" for f, n in counts.items())
    parts.append("<h2>Quality-control flags</h2>" + (
        f"<table><tr><th>flag</th><th>sessions</th><th>meaning</th></tr>{qc_rows}</table>"
        if qc_rows else "<p>No flag was raised.</p>"))

    if frequency_maps:
        parts.append(_frequency_html(frequency_maps))

    failed = table[table["status"] == "failed"] if "status" in table else table.iloc[0:0]
    failures = "".join(
        f"<li><a href=\"{escape(_row_report_name(r))}\">{escape(_row_report_name(r)[:-5])}</a> "
        f"{escape(r['modality'])}: <span class=\"error\">"
        f"{escape(r['error'])}</span></li>" for _, r in failed.iterrows())
    parts.append(f"<h2>Failed sessions</h2><ul class=\"failures\">{failures or '<li>none</li>'}</ul>")

    head = "".join(f"<th>{escape(c)}</th>" for c in ["report", *table.columns])
    rows = []
    for _, r in table.iterrows():
        name = _row_report_name(r)
        css = ' class="failed"' if r.get("status") == "failed" else ""
        cells = "".join(value_cell(v, r["modality"], c) for c, v in r.items())
        rows.append(f'<tr{css} data-participant="{escape(r["participant_id"])}" '
                    f'data-session="{escape(r["session_id"])}"><td><a href="{escape(name)}">'
                    f"{escape(name[:-5])}</a></td>{cells}</tr>")
    parts.append("<h2>Group table</h2><p>Click a column header to sort.</p>"
                 f"<div class=\"scroll\"><table class=\"sortable\" id=\"group-table\"><thead><tr>"
                 f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
    return io.write_text(output_dir / "group.html",
                         html_page("strokeperf cohort report", "".join(parts), _SORT_SCRIPT))
