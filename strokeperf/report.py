"""HTML reports: one self-contained page per session and one for the cohort.

The participant report shows the session's volumes, mismatch metrics and each profile's verdict with
the rule that decided it, the parameters used, and links to the derivative images. The cohort report
shows the group table with failed sessions and their errors, and links to every participant report.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from strokeperf import __version__, io
from strokeperf.profiles import PROFILE_NAMES, profile_rules

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f2f2f2}.failed{background:#fde2e2}.true{color:#176b2c;font-weight:600}
.false{color:#8a1c1c}.na{color:#777}code{background:#f6f6f6;padding:0 .2em}
"""

_VOLUME_LABELS = [
    ("core_ml", "Ischemic core (mL)"), ("tmax6_ml", "Tmax > 6 s (mL)"),
    ("mismatch_ml", "Mismatch volume (mL)"), ("mismatch_ratio", "Mismatch ratio"),
    ("tmax4_ml", "Tmax > 4 s (mL)"), ("tmax8_ml", "Tmax > 8 s (mL)"), ("tmax10_ml", "Tmax > 10 s (mL)"),
    ("hir", "Hypoperfusion intensity ratio"), ("cbv_index", "CBV index"),
    ("affected_side", "Affected side"), ("core_definition", "Core definition"),
]


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1>\n{body}\n<footer><p>strokeperf {__version__}</p>"
            f"</footer></body></html>\n")


def _cell(value) -> str:
    text = html.escape(str(value))
    css = {"true": "true", "false": "false", "n/a": "na"}.get(str(value))
    return f'<td class="{css}">{text}</td>' if css else f"<td>{text}</td>"


def report_name(session: dict) -> str:
    """``sub-P[_ses-S].html``."""
    name = f"sub-{session['subject']}"
    if session.get("session"):
        name += f"_ses-{session['session']}"
    return f"{name}.html"


def write_participant_report(output_dir, session: dict, row: dict, parameters: dict,
                             images: dict) -> Path:
    """Write (or rewrite) the section of this session's modality in ``sub-P[_ses-S].html``."""
    output_dir = Path(output_dir)
    mod = row["modality"]
    volumes = "".join(f"<tr><th>{label}</th>{_cell(row[key])}</tr>" for key, label in _VOLUME_LABELS)
    rules = profile_rules()
    verdicts = "".join(f"<tr><th>{name}</th>{_cell(row[name])}<td>{html.escape(rules[name])}</td></tr>"
                       for name in PROFILE_NAMES)
    params = "".join(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(str(v))}</code></td>"
                     f"</tr>" for k, v in sorted(parameters.items()))
    files = "".join(f'<li><a href="{html.escape(p.relative_to(output_dir).as_posix())}">'
                    f"{html.escape(p.name)}</a></li>" for p in map(Path, images.values()))
    body = (f"<h2>{mod.upper()}: summary</h2><table>{volumes}</table>"
            f"<h2>{mod.upper()}: trial-eligibility profiles</h2>"
            f"<table><tr><th>profile</th><th>verdict</th><th>rule</th></tr>{verdicts}</table>"
            f"<h2>{mod.upper()}: QC flags</h2><p>{html.escape(row['qc_flags'] or 'none')}</p>"
            f"<h2>{mod.upper()}: parameters</h2><table>{params}</table>"
            f"<h2>{mod.upper()}: derivatives</h2><ul>{files}</ul>")
    path = output_dir / report_name(session)
    title = report_name(session)[:-5]
    return io.write_text(path, _page(f"strokeperf report: {title}", body))


def write_group_report(output_dir, table: pd.DataFrame) -> Path:
    """Write ``group.html``: the group table, failed sessions and links to participant reports."""
    output_dir = Path(output_dir)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["report", *table.columns])
    rows = []
    for _, r in table.iterrows():
        name = r["participant_id"] + ("" if r["session_id"] == "n/a" else f"_{r['session_id']}")
        link = f'<a href="{html.escape(name)}.html">{html.escape(name)}</a>'
        css = ' class="failed"' if r["status"] == "failed" else ""
        rows.append(f"<tr{css}><td>{link}</td>" + "".join(_cell(v) for v in r.values) + "</tr>")
    failed = table[table["status"] == "failed"]
    failures = "".join(f"<li>{html.escape(r.participant_id)} {html.escape(r.session_id)} "
                       f"{html.escape(r.modality)}: {html.escape(r.error)}</li>"
                       for r in failed.itertuples())
    counts = {name: int((table[name] == "true").sum()) for name in PROFILE_NAMES}
    summary = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in counts.items())
    body = (f"<p>{len(table)} session(s), {len(failed)} failed.</p>"
            f"<h2>Eligible sessions per profile</h2><table>{summary}</table>"
            f"<h2>Failed sessions</h2><ul>{failures or '<li>none</li>'}</ul>"
            f"<h2>Group table</h2><table><tr>{head}</tr>{''.join(rows)}</table>")
    return io.write_text(output_dir / "group.html", _page("strokeperf cohort report", body))
