"""The participant report ``OUTPUT_DIR/sub-P[_ses-S].html``: one self-contained page per session.

Rebuilt from every perfusion modality found on disk for the session
(``..._desc-<ctp|dsc>_volumes.tsv``), one section per modality with

- a summary panel: axial slices with the ischemic core and Tmax > 6 s over a grey image, the volumes,
  mismatch metrics and each profile's verdict with its rule;
- a Tmax threshold montage (> 4, 6, 8, 10 s) and a montage of every map with a colour bar in units;
- the arterial and venous curves with their voxels, tissue curves, the frame times;
- the motion trace and a diffusion overlay when they exist; the QC flags explained; the methods
  paragraph generated from the parameters the session ran with (:mod:`strokeperf.reports.methods`),
  its references, and the parameters.

Images are PNG from matplotlib (Agg), embedded as base64 so that a page is one file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from nibabel.affines import voxel_sizes

from strokeperf import CODE_URL, __version__, io
from strokeperf.bids.derivatives import session_dir
from strokeperf.profiles import PROFILE_NAMES, profile_rules
from strokeperf.qc import MOTION_VOXEL_FRACTION
from strokeperf.reports import methods
from strokeperf.reports.figures import (DIFFUSION_STEMS, MAP_DISPLAY, diffusion_figure,
                                        input_function_figure, map_figure, motion_figure,
                                        summary_figure, tissue_curve_figure, tmax_montage)
from strokeperf.reports.outputs import ModalityOutputs, read_json
from strokeperf.reports.page import (MODALITY_NAMES, NA, PROFILE_TITLES, escape, flag_rule,
                                     html_page, img_tag, value_cell)

SUMMARY_COLUMNS = [
    ("core_ml", "Ischemic core", "mL"), ("tmax6_ml", "Tmax > 6 s", "mL"),
    ("mismatch_ml", "Mismatch volume", "mL"), ("mismatch_ratio", "Mismatch ratio", ""),
    ("tmax4_ml", "Tmax > 4 s", "mL"), ("tmax8_ml", "Tmax > 8 s", "mL"),
    ("tmax10_ml", "Tmax > 10 s", "mL"), ("hir", "Hypoperfusion intensity ratio", ""),
    ("cbv_index", "CBV index", ""), ("affected_side", "Affected side", ""),
    ("core_definition", "Core definition", ""),
]


def report_name(session: dict) -> str:
    """``sub-P[_ses-S].html``."""
    name = f"sub-{session['subject']}"
    if session.get("session"):
        name += f"_ses-{session['session']}"
    return f"{name}.html"


def _read_row(path: Path) -> dict:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return frame.iloc[0].to_dict() if len(frame) else {}


# --- HTML of one modality -----------------------------------------------------------------------

def _summary_table(row: dict, mod: str) -> str:
    rows = "".join(f"<tr><th>{escape(label)}</th>{value_cell(row.get(key, NA), mod, key)}"
                   f"<td>{escape(unit)}</td></tr>" for key, label, unit in SUMMARY_COLUMNS)
    return f'<table class="volumes"><tr><th>measure</th><th>value</th><th>units</th></tr>{rows}</table>'


def _profile_table(row: dict, mod: str) -> str:
    rules = profile_rules()
    body = "".join(f"<tr><th>{escape(PROFILE_TITLES.get(p, p))}</th>"
                   f"{value_cell(row.get(p, NA), mod, p)}"
                   f"<td>{escape(rules[p])}</td></tr>" for p in PROFILE_NAMES)
    return (f'<table class="profiles"><tr><th>profile</th><th>eligible</th><th>rule</th></tr>'
            f"{body}</table><p class=\"na\">n/a: clinical data (age, NIHSS) or a volume missing.</p>")


def _qc_html(row: dict, mod: str) -> str:
    flags = [f for f in str(row.get("qc_flags", "")).split(";") if f and f != NA]
    raw = f"<p>Group-table value: <code data-column=\"qc_flags\" data-modality=\"{escape(mod)}\">" \
          f"{escape(row.get('qc_flags', ''))}</code></p>"
    if not flags:
        return "<p>No quality-control flag was raised.</p>" + raw
    items = "".join(f'<li><span class="flag">{escape(f)}</span>: '
                    f"{escape(flag_rule(f) or 'No description is available for this flag.')}"
                    f"</li>" for f in flags)
    return f"<ul class=\"qc\">{items}</ul>{raw}"


def _methods_html(mod: str, parameters: dict) -> str:
    """The methods paragraph generated from the session's parameters, and its references."""
    run = methods.parameters_from_record(parameters)
    text = (f"{MODALITY_NAMES.get(mod, mod)} was processed with strokeperf {__version__} "
            f"({CODE_URL}). {methods.methods_text(mod, run)}")
    return (f"<h3>Methods</h3><p class=\"methods\" id=\"methods-{escape(mod)}\">{escape(text)}</p>"
            "<p>References:</p><ol>"
            + "".join(f"<li>{escape(c)}</li>" for c in methods.references(mod, run)) + "</ol>")


def _curve_units(mod: str, side: dict) -> str:
    units = side.get("aif", {}).get("Units") if isinstance(side.get("aif"), dict) else None
    return units or ("delta HU" if mod == "ctp" else "delta R2* (1/s)")


def _input_function_html(m: ModalityOutputs) -> str:
    ts_path = m.table("timeseries.tsv")
    if not ts_path.exists():
        return "<p class=\"na\">No time-series file was written for this session.</p>"
    curves = pd.read_csv(ts_path, sep="\t", na_values=[NA])
    side = read_json(ts_path.with_suffix(".json"))
    units = _curve_units(m.mod, side)
    out = [img_tag(input_function_figure(m, curves, units), f"{m.mod} input functions")]
    t = curves["time"].to_numpy(float)
    dt = np.diff(t)
    if dt.size and np.ptp(dt) < 1e-3:
        sampling = f"uniform, every {dt[0]:g} s"
    elif dt.size:
        sampling = f"irregular, intervals {dt.min():g}-{dt.max():g} s"
    else:
        sampling = "one frame"
    metrics = [("aif_arrival_s", "AIF arrival (s)"), ("aif_ttp_s", "AIF time to peak (s)"),
               ("aif_fwhm_s", "AIF full width at half maximum (s)"),
               ("aif_quality", "AIF gamma-variate fit R^2"),
               ("partial_volume_factor", "Partial-volume factor (VOF area / AIF area)"),
               ("vof_complete", "VOF complete")]
    rows = "".join(f"<tr><th>{escape(label)}</th><td>{escape(_fmt_side(side.get(key)))}</td></tr>"
                   for key, label in metrics if key in side)
    times = ", ".join(f"{x:g}" for x in t)
    out.append(f"<table>{rows}<tr><th>Frames</th><td>{len(t)} frames, {t[0]:g}-{t[-1]:g} s, "
               f"{sampling}</td></tr></table><p>Frame times (s): <code class=\"frame-times\">"
               f"{escape(times)}</code></p>")
    tissue = tissue_curve_figure(curves, units)
    if tissue:
        out.append("<h4>Tissue curves</h4>" + img_tag(tissue, f"{m.mod} tissue curves"))
    return "".join(out)


def _fmt_side(value) -> str:
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _motion_html(m: ModalityOutputs) -> str:
    path = m.table("motion.tsv")
    if not path.exists():
        return ""
    motion = pd.read_csv(path, sep="\t", na_values=[NA])
    if "framewise_displacement" not in motion:
        return ""
    fd = motion["framewise_displacement"].to_numpy(float)
    times = None
    ts = m.table("timeseries.tsv")
    if ts.exists():
        times = pd.read_csv(ts, sep="\t", na_values=[NA])["time"].to_numpy(float)
    vs = voxel_sizes(m.affine)
    limit = MOTION_VOXEL_FRACTION * float(vs.min())
    peak = np.nanmax(fd) if np.isfinite(fd).any() else float("nan")
    return (f"<h3>Head motion</h3>{img_tag(motion_figure(fd, times, limit), f'{m.mod} motion trace')}"
            f"<p>Largest framewise displacement {peak:.2f} mm (QC limit {limit:.2g} mm, half the "
            f"smallest voxel edge).</p>")


def _diffusion_html(m: ModalityOutputs) -> str:
    out = []
    for stem, (title, _, _) in DIFFUSION_STEMS.items():
        if m.has(stem):
            png = diffusion_figure(m, stem)
            if png:
                out.append(img_tag(png, f"{m.mod} {title} overlay"))
    return "<h3>Diffusion and perfusion</h3>" + "".join(out) if out else ""


def modality_section(m: ModalityOutputs, row: dict, parameters: dict, output_dir: Path) -> str:
    """The HTML section of one modality (all figures embedded)."""
    mod = m.mod
    status = row.get("status", NA)
    head = (f'<section id="{escape(mod)}" data-modality="{escape(mod)}"><h2>'
            f"{escape(MODALITY_NAMES.get(mod, mod))} ({escape(mod)})</h2>"
            f"<p>Status: {value_cell(status, mod, 'status', tag='strong')}</p>")
    if status == "failed":
        return (head + f"<p class=\"failed\">This session failed: "
                f"{value_cell(row.get('error', ''), mod, 'error', tag='span')}</p></section>")
    parts = [head, "<h3>Summary</h3><div class=\"panel\"><div>", _summary_table(row, mod),
             "</div><div>", _profile_table(row, mod), "</div></div>"]
    if m.has("cbf") or m.has("cbv"):
        parts.insert(2, img_tag(summary_figure(m), f"{mod} summary: core and Tmax > 6 s"))
    parts.append("<h3>Quality control</h3>" + _qc_html(row, mod))
    if m.has("cbf") or m.has("cbv"):
        montage = tmax_montage(m)
        if montage:
            parts.append("<h3>Tmax thresholds</h3>"
                         + img_tag(montage, f"{mod} Tmax threshold montage"))
        maps = [s for s in MAP_DISPLAY if m.has(s)]
        parts.append("<h3>Perfusion maps</h3>" + "".join(
            img_tag(map_figure(m, s), f"{mod} {MAP_DISPLAY[s][0]} map") for s in maps))
    parts.append("<h3>Arterial input and venous output functions</h3>" + _input_function_html(m))
    parts.append(_motion_html(m))
    parts.append(_diffusion_html(m))
    parts.append(_methods_html(mod, parameters))
    params = "".join(f"<tr><th>{escape(k)}</th><td><code>{escape(json.dumps(v))}</code></td></tr>"
                     for k, v in sorted(parameters.items()))
    parts.append(f"<h3>Parameters</h3><table class=\"parameters\">{params}</table>")
    files = "".join(f'<li><a href="{escape(p.relative_to(output_dir).as_posix())}">{escape(p.name)}'
                    f"</a></li>" for p in m.existing_files() if _inside(p, output_dir))
    parts.append(f"<h3>Derivative files</h3><ul>{files}</ul></section>")
    return "".join(parts)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _modalities_on_disk(perf_dir: Path) -> dict[str, tuple[str, Path]]:
    """modality -> (prefix, volumes TSV) for every ``*_desc-<mod>_volumes.tsv`` in ``perf_dir``."""
    found = {}
    for path in sorted(perf_dir.glob("*_desc-*_volumes.tsv")):
        match = re.fullmatch(r"(.+)_desc-([a-z]+)_volumes\.tsv", path.name)
        if match and not path.name.startswith("."):
            found[match.group(2)] = (match.group(1), path)
    return found


def _prefix_from_images(images: dict, mod: str) -> str | None:
    for path in images.values():
        match = re.fullmatch(rf"(.+)_desc-{re.escape(mod)}[A-Za-z0-9]*_[a-z0-9]+\.nii(\.gz)?",
                             Path(path).name)
        if match:
            return match.group(1)
    return None


def write_participant_report(output_dir, session: dict, row: dict, parameters: dict,
                             images: dict) -> Path:
    """(Re)write ``OUTPUT_DIR/sub-P[_ses-S].html`` from every modality of the session on disk.

    ``row`` (the group-table row of strings) and ``parameters`` describe ``session["modality"]``
    and take precedence over what is on disk for it; ``images`` maps stems (``cbf`` ...,
    ``brain_mask`` ...) to its written files. Other modalities are read from their volumes TSV,
    its JSON sidecar (``Parameters``) and the derivative naming of the datasink.
    """
    output_dir = Path(output_dir)
    perf_dir = session_dir(output_dir, session)
    found = _modalities_on_disk(perf_dir)
    current = row.get("modality") or session.get("modality")
    prefix = _prefix_from_images(images, current) or found.get(current, (None,))[0]
    if prefix is None:
        prefix = f"sub-{session['subject']}" + (f"_ses-{session['session']}"
                                                if session.get("session") else "")
    sections, nav = [], []
    for mod in sorted(set(found) | {current}):
        if mod == current:
            m = ModalityOutputs(perf_dir, prefix, mod, images)
            mod_row, mod_params = row, parameters
        else:
            m = ModalityOutputs(perf_dir, found[mod][0], mod)
            mod_row = _read_row(found[mod][1])
            mod_params = read_json(found[mod][1].with_suffix(".json")).get("Parameters", {})
        sections.append(modality_section(m, mod_row, mod_params, output_dir))
        nav.append(f'<a href="#{escape(mod)}">{escape(MODALITY_NAMES.get(mod, mod))}</a>')
    title = report_name(session)[:-5]
    intro = (f"<p>Participant <strong>sub-{escape(session['subject'])}</strong>"
             + (f", session <strong>ses-{escape(session['session'])}</strong>"
                if session.get("session") else "")
             + f". Sections: </p><nav>{''.join(nav)}<a href=\"group.html\">cohort report</a></nav>")
    return io.write_text(output_dir / report_name(session),
                         html_page(f"strokeperf report: {title}", intro + "".join(sections)))
