"""HTML reports: one self-contained page per session and one for the cohort.

Participant report ``OUTPUT_DIR/sub-P[_ses-S].html``: rebuilt from every perfusion modality found on
disk for the session (``..._desc-<ctp|dsc>_volumes.tsv``), one section per modality with

- a summary panel: axial slices with the ischemic core and Tmax > 6 s over a grey image, the volumes,
  mismatch metrics and each profile's verdict with its rule;
- a Tmax threshold montage (> 4, 6, 8, 10 s) and a montage of every map with a colour bar in units;
- the arterial and venous curves with their voxels, tissue curves, the frame times;
- the motion trace and a diffusion overlay when they exist; the QC flags explained; a methods
  paragraph and the parameters.

Cohort report ``OUTPUT_DIR/group.html``: the sortable group table, volume distributions, profile and
QC-flag counts, failed sessions with their errors and links to every participant report.

Every number shown is the group-table string itself (never re-formatted), marked up as
``data-modality="ctp" data-column="core_ml"``. Images are PNG from matplotlib (Agg), embedded as
base64 so that a page is one file. Slices are shown in radiological convention (the patient's right
on the viewer's left) after reorienting to RAS.
"""

from __future__ import annotations

import base64
import html
import importlib
import json
import re
from io import BytesIO
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.affines import voxel_sizes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from strokeperf import CODE_URL, __version__, io
from strokeperf.profiles import PROFILE_NAMES, profile_rules
from strokeperf.qc import MOTION_VOXEL_FRACTION, QC_FLAG_RULES, WORKFLOW_QC_RULES

NA = "n/a"
MODALITY_NAMES = {"ctp": "CT perfusion", "dsc": "DSC-MRI perfusion"}
#: Maps shown in the montage: stem -> (title, default units, display window or None, colour map).
#: Fixed windows make sessions comparable: normal grey matter holds CBF about 50-60 mL/100 g/min and
#: CBV 4-5 mL/100 g (Leenders et al. 1990, Brain 113:27), normal MTT is 3-5 s, the Tmax window holds
#: every reported threshold (4-10 s), and the relative windows hold the core limit (0.30) and the
#: reference (1.0). TTP depends on the scan clock, so it is windowed on its brain percentiles.
MAP_DISPLAY = {
    "cbf": ("CBF", "mL/100g/min", (0.0, 80.0), "magma"),
    "cbv": ("CBV", "mL/100g", (0.0, 8.0), "magma"),
    "mtt": ("MTT", "s", (0.0, 16.0), "viridis"),
    "tmax": ("Tmax", "s", (0.0, 12.0), "viridis"),
    "ttp": ("TTP", "s", None, "viridis"),
    "rcbf": ("relative CBF", "ratio to Tmax < 4 s tissue", (0.0, 1.5), "magma"),
    "rcbv": ("relative CBV", "ratio to Tmax < 4 s tissue", (0.0, 1.5), "magma"),
}
MASK_LABELS = {"brain_mask": "Brain", "csf_mask": "CSF", "tissue_mask": "Tissue", "core_mask": "Core",
               "tmax4_mask": "Tmax4", "tmax6_mask": "Tmax6", "tmax8_mask": "Tmax8",
               "tmax10_mask": "Tmax10", "aif_mask": "AIF", "vof_mask": "VOF"}
#: Diffusion images rendered when the pipeline writes them in the perfusion grid.
DIFFUSION_STEMS = {"adc": ("ADC", "1e-6 mm^2/s", (0.0, 1600.0)), "dwi": ("DWI", "a.u.", None)}
TMAX_THRESHOLDS = (4, 6, 8, 10)
#: Percentiles of brain values used for windows without a fixed range (and grey backgrounds).
AUTO_WINDOW_PERCENTILES = (2.0, 98.0)
#: Most axial slices shown per montage (evenly spread over the brain, the largest lesion slice kept).
MONTAGE_SLICES = 8
#: Slices whose brain section is smaller than this fraction of the largest are not shown (the
#: vertex and foramen magnum caps carry no territory worth a thumbnail).
MIN_SLICE_BRAIN_FRACTION = 0.25
#: Grey levels (0 black, 1 white) the background window is mapped to: a mid-grey range keeps the
#: colour overlays visible on both dark and bright tissue.
BACKGROUND_GREY_RANGE = (0.15, 0.85)
#: Voxels of margin around the brain in the montages.
CROP_MARGIN_VOXELS = 3
#: Okabe & Ito colour-blind-safe palette (https://jfly.uni-koeln.de/color/).
CORE_COLOR, HYPO_COLOR = "#D55E00", "#56B4E9"
AIF_COLOR, VOF_COLOR, SCALED_COLOR = "#D55E00", "#0072B2", "#E69F00"
NORMAL_COLOR, HYPOPERFUSED_COLOR = "#009E73", "#CC79A7"
TMAX_COLORS = {4: "#F0E442", 6: "#56B4E9", 8: "#E69F00", 10: "#D55E00"}
OVERLAY_ALPHA = 0.65
#: Figure resolution (dots per inch) and montage width (inches): ~1000 px, readable on a laptop.
DPI = 100
MONTAGE_WIDTH_IN = 10.0
SUMMARY_COLUMNS = [
    ("core_ml", "Ischemic core", "mL"), ("tmax6_ml", "Tmax > 6 s", "mL"),
    ("mismatch_ml", "Mismatch volume", "mL"), ("mismatch_ratio", "Mismatch ratio", ""),
    ("tmax4_ml", "Tmax > 4 s", "mL"), ("tmax8_ml", "Tmax > 8 s", "mL"),
    ("tmax10_ml", "Tmax > 10 s", "mL"), ("hir", "Hypoperfusion intensity ratio", ""),
    ("cbv_index", "CBV index", ""), ("affected_side", "Affected side", ""),
    ("core_definition", "Core definition", ""),
]
PROFILE_TITLES = {"defuse3": "DEFUSE 3", "extend": "EXTEND", "defuse2_target": "DEFUSE 2 target mismatch",
                  "malignant": "Malignant profile", "dawn": "DAWN"}
#: References of the clinical definitions (as cited in :mod:`strokeperf.profiles` and
#: :mod:`strokeperf.lesions`).
CITATIONS = [
    "Albers GW et al. (DEFUSE 3). N Engl J Med 2018;378:708.",
    "Ma H et al. (EXTEND). N Engl J Med 2019;380:1795.",
    "Lansberg MG et al. (DEFUSE 2). Lancet Neurol 2012;11:860.",
    "Nogueira RG et al. (DAWN). N Engl J Med 2018;378:11.",
    "Campbell BCV et al. (CT perfusion core, rCBF < 30 %). Stroke 2011;42:3435.",
    "Purushotham A et al. (ADC core threshold). Int J Stroke 2015;10:348.",
    "Olivot JM et al. (hypoperfusion intensity ratio). Stroke 2014;45:1018.",
    "Arenillas JF et al. (CBV index). Stroke 2018;49:1398.",
]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:78em;padding:0 1em;color:#222}
h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f2f2f2}.num{text-align:right;font-variant-numeric:
tabular-nums}.failed{background:#fde2e2}.true{color:#176b2c;font-weight:600}.false{color:#8a1c1c}
.na{color:#777}code{background:#f6f6f6;padding:0 .2em}img{max-width:100%;height:auto;display:block;
margin:.5em 0}.panel{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.methods{background:#f7f7f7;border-left:4px solid #999;padding:.6em 1em;line-height:1.45}
.flag{color:#8a1c1c;font-weight:600}.legend span{display:inline-block;width:1em;height:1em;
vertical-align:middle;margin:0 .3em 0 1em}table.sortable th{cursor:pointer}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
nav a{margin-right:1em}.scroll{overflow-x:auto}
"""

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


# --- small helpers ------------------------------------------------------------------------------

def _esc(value) -> str:
    return html.escape(str(value))


def _page(title: str, body: str, script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<link rel=\"icon\" href=\"data:,\"><title>{_esc(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n<h1>{_esc(title)}</h1>\n{body}\n"
            f"<footer><p>Generated by strokeperf {_esc(__version__)} "
            f"(<a href=\"{_esc(CODE_URL)}\">{_esc(CODE_URL)}</a>).</p></footer>{js}</body></html>\n")


def _css(value: str) -> str:
    return {"true": "true", "false": "false", NA: "na"}.get(value, "")


def _value_cell(value, modality: str | None = None, column: str | None = None, tag="td") -> str:
    """A cell holding a group-table string exactly, marked with its column (and modality)."""
    text = "" if value is None else str(value)
    attrs = []
    if column is not None:
        attrs.append(f'data-column="{_esc(column)}"')
    if modality is not None:
        attrs.append(f'data-modality="{_esc(modality)}"')
    classes = " ".join(c for c in (_css(text), "num" if _is_number(text) else "") if c)
    if classes:
        attrs.append(f'class="{classes}"')
    return f"<{tag} {' '.join(attrs)}>{_esc(text)}</{tag}>"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _img(png_b64: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{png_b64}" alt="{_esc(alt)}">'


def _png(fig: Figure) -> str:
    """Render a figure (Agg, via ``savefig``) to base64 PNG text."""
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def report_name(session: dict) -> str:
    """``sub-P[_ses-S].html``."""
    name = f"sub-{session['subject']}"
    if session.get("session"):
        name += f"_ses-{session['session']}"
    return f"{name}.html"


def _row_report_name(row) -> str:
    """Report file name of a group-table row (``participant_id``/``session_id`` with prefixes)."""
    name = str(row["participant_id"])
    if str(row.get("session_id", NA)) not in (NA, "", "nan"):
        name += f"_{row['session_id']}"
    return f"{name}.html"


# --- image arrays -------------------------------------------------------------------------------

def _load(path) -> tuple[np.ndarray, np.ndarray]:
    """Image data reoriented to RAS (float32) and the RAS affine."""
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def brain_crop(mask: np.ndarray, margin: int = CROP_MARGIN_VOXELS) -> tuple[slice, slice]:
    """In-plane (x, y) bounding box of a 3D mask plus a margin; the whole plane for an empty mask."""
    if not mask.any():
        return slice(0, mask.shape[0]), slice(0, mask.shape[1])
    xs = np.flatnonzero(mask.any(axis=(1, 2)))
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    return (slice(max(xs[0] - margin, 0), min(xs[-1] + margin + 1, mask.shape[0])),
            slice(max(ys[0] - margin, 0), min(ys[-1] + margin + 1, mask.shape[1])))


def montage_slices(brain: np.ndarray, lesion: np.ndarray | None = None,
                   n: int = MONTAGE_SLICES) -> np.ndarray:
    """Up to ``n`` axial slice indices evenly spread over the brain; the largest lesion slice kept."""
    area = brain.sum(axis=(0, 1))
    zs = np.flatnonzero(area >= MIN_SLICE_BRAIN_FRACTION * area.max()) if area.max() else area[:0]
    if zs.size == 0:
        zs = np.arange(brain.shape[2])
    picks = np.unique(np.round(np.linspace(zs[0], zs[-1], min(n, zs.size))).astype(int))
    if lesion is not None and lesion.any():
        biggest = int(np.argmax(lesion.sum(axis=(0, 1))))
        if biggest not in picks:
            picks[np.argmin(np.abs(picks - biggest))] = biggest
            picks = np.unique(picks)
    return picks


def _display(plane: np.ndarray) -> np.ndarray:
    """(x, y) RAS plane -> image rows (anterior up) and columns (patient's right on the left)."""
    return plane.T[::-1, ::-1]


def mosaic(volume: np.ndarray, slices, crop, gap: int = 2, fill=np.nan) -> np.ndarray:
    """Side-by-side display of the cropped axial ``slices`` of a 3D array, ``gap`` columns apart."""
    volume = np.asarray(volume)
    sx, sy = crop
    tiles = [_display(volume[sx, sy, int(k)]) for k in slices]
    rows = tiles[0].shape[0]
    spacer = np.full((rows, gap) + volume.shape[3:], fill, dtype=np.result_type(volume.dtype, type(fill)))
    parts = []
    for i, tile in enumerate(tiles):
        if i:
            parts.append(spacer)
        parts.append(tile.astype(spacer.dtype))
    return np.concatenate(parts, axis=1)


def _window(values: np.ndarray, fixed=None) -> tuple[float, float]:
    if fixed is not None:
        return fixed
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, AUTO_WINDOW_PERCENTILES)
    return float(lo), float(hi if hi > lo else lo + 1.0)


def grey_rgb(background: np.ndarray, window=None, grey_range=(0.0, 1.0)) -> np.ndarray:
    """Grey RGB image (H, W, 3) of a 2D array, the window mapped to ``grey_range``; NaN is black."""
    lo, hi = _window(background, window)
    g = np.clip((background - lo) / (hi - lo), 0.0, 1.0)
    g = grey_range[0] + (grey_range[1] - grey_range[0]) * g
    g = np.where(np.isnan(background), 0.0, g)
    return np.repeat(g[..., None], 3, axis=-1)


def blend(rgb: np.ndarray, mask: np.ndarray, color, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """``rgb`` with ``color`` blended in at ``alpha`` where ``mask`` is true (returns a new array)."""
    out = rgb.copy()
    m = np.asarray(mask, dtype=bool)
    out[m] = (1.0 - alpha) * out[m] + alpha * np.asarray(to_rgb(color))
    return out


def _mosaic_figure(image, aspect: float, title: str, labels, tile_width: int,
                   legend=None, cmap=None, window=None, units=None, left_in=0.1) -> Figure:
    """One figure holding a mosaic image, slice labels under the tiles, optional colour bar.

    The axes are placed in inches (no automatic layout, which would double the drawing time).
    """
    h, w = image.shape[:2]
    top_in, bottom_in = 0.3, 0.3
    right_in = 0.95 if cmap is not None else 0.1
    image_w = MONTAGE_WIDTH_IN - left_in - right_in
    image_h = image_w * h * aspect / w
    height = image_h + top_in + bottom_in
    fig = Figure(figsize=(MONTAGE_WIDTH_IN, height))
    ax = fig.add_axes((left_in / MONTAGE_WIDTH_IN, bottom_in / height, image_w / MONTAGE_WIDTH_IN,
                       image_h / height))
    if cmap is None:
        ax.imshow(image, aspect=aspect, interpolation="nearest")
    else:
        shown = ax.imshow(image, aspect=aspect, interpolation="nearest", cmap=cmap,
                          vmin=window[0], vmax=window[1])
        cax = fig.add_axes(((left_in + image_w + 0.1) / MONTAGE_WIDTH_IN, bottom_in / height,
                            0.12 / MONTAGE_WIDTH_IN, image_h / height))
        fig.colorbar(shown, cax=cax).set_label(units, fontsize=8)
        cax.tick_params(labelsize=7)
    ax.set_xticks([(i + 0.5) * tile_width + i * 2 - 0.5 for i in range(len(labels))], labels,
                  fontsize=7)
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9, loc="left")
    if legend:
        handles = [ax.fill_between([], [], color=c, label=lab) for lab, c in legend]
        ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1, 1), ncols=len(handles),
                  fontsize=7, frameon=False, borderaxespad=0.1)
    return fig


# --- one modality's data ------------------------------------------------------------------------

def _perf_dir(output_dir: Path, subject: str, session: str | None) -> Path:
    out = output_dir / f"sub-{subject}"
    if session:
        out /= f"ses-{session}"
    return out / "perf"


def _read_row(path: Path) -> dict:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return frame.iloc[0].to_dict() if len(frame) else {}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class _Modality:
    """Files and arrays of one modality's derivatives (loaded lazily, RAS)."""

    def __init__(self, perf_dir: Path, prefix: str, modality: str, images: dict | None = None):
        self.dir, self.prefix, self.mod = perf_dir, prefix, modality
        self.images = {k: Path(v) for k, v in (images or {}).items()}
        self._cache: dict = {}

    def path(self, stem: str) -> Path:
        if stem in self.images:
            return self.images[stem]
        if stem in MASK_LABELS:
            return self.dir / f"{self.prefix}_desc-{self.mod}{MASK_LABELS[stem]}_mask.nii.gz"
        return self.dir / f"{self.prefix}_desc-{self.mod}_{stem}.nii.gz"

    def table(self, suffix: str) -> Path:
        return self.dir / f"{self.prefix}_desc-{self.mod}_{suffix}"

    def has(self, stem: str) -> bool:
        return self.path(stem).exists()

    def array(self, stem: str) -> np.ndarray:
        if stem not in self._cache:
            data, affine = _load(self.path(stem))
            self._cache[stem] = data > 0.5 if stem in MASK_LABELS else data
            self._cache.setdefault("_affine", affine)
        return self._cache[stem]

    @property
    def affine(self) -> np.ndarray:
        if "_affine" not in self._cache:
            for stem in ("brain_mask", "cbf", "tmax"):
                if self.has(stem):
                    self.array(stem)
                    break
        return self._cache.get("_affine", np.eye(4))

    def units(self, stem: str, default: str) -> str:
        side = self.path(stem)
        return str(_read_json(side.with_name(side.name.replace(".nii.gz", ".json"))).get("Units",
                                                                                          default))

    def existing_files(self) -> list[Path]:
        return sorted(p for p in self.dir.glob(f"{self.prefix}_desc-{self.mod}*")
                      if not p.name.startswith("."))


# --- figures ------------------------------------------------------------------------------------

def _layout(m: _Modality):
    brain = m.array("brain_mask") if m.has("brain_mask") else np.ones(m.array("cbf").shape, bool)
    lesion = m.array("tmax6_mask") if m.has("tmax6_mask") else None
    slices = montage_slices(brain, lesion)
    crop = brain_crop(brain)
    vs = voxel_sizes(m.affine)
    aspect = float(vs[1] / vs[0])
    z_mm = [float((m.affine @ np.array([0, 0, k, 1.0]))[2]) for k in slices]
    labels = [f"z = {z:.0f} mm" for z in z_mm]
    return brain, slices, crop, aspect, labels


def _background(m: _Modality, brain: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Grey background: the CBV map (grey/white contrast and vessels) inside the brain."""
    for stem in ("cbv", "cbf"):
        if m.has(stem):
            data = np.where(brain, m.array(stem), np.nan)
            return data, _window(data[brain] if brain.any() else data)
    return brain.astype(np.float32), (0.0, 1.0)


def summary_figure(m: _Modality) -> str:
    """Axial slices: core and Tmax > 6 s over the grey background; base64 PNG."""
    brain, slices, crop, aspect, labels = _layout(m)
    bg, window = _background(m, brain)
    rgb = grey_rgb(mosaic(bg, slices, crop), window, BACKGROUND_GREY_RANGE)
    if m.has("tmax6_mask"):
        rgb = blend(rgb, mosaic(m.array("tmax6_mask"), slices, crop, fill=False), HYPO_COLOR)
    if m.has("core_mask"):
        rgb = blend(rgb, mosaic(m.array("core_mask"), slices, crop, fill=False), CORE_COLOR)
    tile = crop[0].stop - crop[0].start
    fig = _mosaic_figure(rgb, aspect, "Ischemic core and Tmax > 6 s (radiological view: R on the "
                         "left)", labels, tile,
                         legend=[("core", CORE_COLOR), ("Tmax > 6 s", HYPO_COLOR)])
    return _png(fig)


def tmax_montage(m: _Modality) -> str | None:
    """One row per Tmax threshold (> 4, 6, 8, 10 s) over the grey background; base64 PNG."""
    stems = [t for t in TMAX_THRESHOLDS if m.has(f"tmax{t}_mask")]
    if not stems:
        return None
    brain, slices, crop, aspect, labels = _layout(m)
    bg, window = _background(m, brain)
    grey = grey_rgb(mosaic(bg, slices, crop), window, BACKGROUND_GREY_RANGE)
    rows = []
    for t in stems:
        rows.append(blend(grey, mosaic(m.array(f"tmax{t}_mask"), slices, crop, fill=False),
                          TMAX_COLORS[t]))
        rows.append(np.ones((2,) + grey.shape[1:]))
    image = np.concatenate(rows[:-1], axis=0)
    tile = crop[0].stop - crop[0].start
    fig = _mosaic_figure(image, aspect, "Tmax thresholds, rows from top: "
                         + ", ".join(f"> {t} s" for t in stems), labels, tile, left_in=0.8)
    ax = fig.axes[0]
    row_h = grey.shape[0] + 2
    ax.set_yticks([i * row_h + grey.shape[0] / 2 for i in range(len(stems))],
                  [f"Tmax > {t} s" for t in stems], fontsize=7)
    return _png(fig)


def map_figure(m: _Modality, stem: str) -> str:
    """Montage of one map inside the brain with a colour bar in its units; base64 PNG."""
    title, default_units, fixed, cmap = MAP_DISPLAY[stem]
    brain, slices, crop, aspect, labels = _layout(m)
    data = np.where(brain, m.array(stem), np.nan)
    window = _window(data[brain] if brain.any() else data, fixed)
    tile = crop[0].stop - crop[0].start
    units = m.units(stem, default_units)
    fig = _mosaic_figure(mosaic(data, slices, crop), aspect, f"{title} ({units})", labels, tile,
                         cmap=cmap, window=window, units=units)
    return _png(fig)


def _voxel_panel(ax, m: _Modality, mask_stem: str, color: str, title: str) -> None:
    """The axial slice holding most voxels of ``mask_stem``, the voxels circled."""
    mask = m.array(mask_stem)
    brain = m.array("brain_mask") if m.has("brain_mask") else np.ones(mask.shape, bool)
    k = int(np.argmax(mask.sum(axis=(0, 1))))
    crop = brain_crop(brain | mask)
    bg, window = _background(m, brain | mask)
    vs = voxel_sizes(m.affine)
    ax.imshow(grey_rgb(_display(bg[crop[0], crop[1], k]), window, BACKGROUND_GREY_RANGE),
              aspect=vs[1] / vs[0],
              interpolation="nearest")
    xs, ys = np.nonzero(mask[:, :, k])
    ax.scatter(crop[0].stop - 1 - xs, crop[1].stop - 1 - ys, s=30, facecolors="none",
               edgecolors=color, linewidths=1.2)
    z = float((m.affine @ np.array([0, 0, k, 1.0]))[2])
    ax.set_title(f"{title} ({int(mask.sum())} voxels; z = {z:.0f} mm)", fontsize=8)
    ax.set_axis_off()


def _frame_rug(ax, times) -> None:
    ax.plot(times, np.zeros_like(times), "|", color="#555", markersize=6, label="frames")


def input_function_figure(m: _Modality, curves: pd.DataFrame, units: str) -> str:
    """AIF, scaled AIF and VOF against time with the frame times, and where their voxels are."""
    t = curves["time"].to_numpy(float)
    fig = Figure(figsize=(MONTAGE_WIDTH_IN, 3.0))
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.16, top=0.9, wspace=0.12)
    has_voxels = [stem for stem in ("aif_mask", "vof_mask") if m.has(stem) and m.array(stem).any()]
    grid = fig.add_gridspec(1, 1 + len(has_voxels), width_ratios=[2.2] + [1] * len(has_voxels))
    ax = fig.add_subplot(grid[0, 0])
    for column, label, color, style in (("aif", "AIF", AIF_COLOR, "-"),
                                        ("aif_measured", "AIF as measured (saturated)", AIF_COLOR,
                                         ":"),
                                        ("aif_scaled", "AIF scaled to VOF", SCALED_COLOR, "--"),
                                        ("vof", "VOF", VOF_COLOR, "-")):
        if column in curves and curves[column].notna().any():
            ax.plot(t, curves[column].to_numpy(float), style, color=color, label=label, lw=1.4)
    _frame_rug(ax, t)
    ax.set_xlabel("time from first frame (s)")
    ax.set_ylabel(units)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("Input functions", fontsize=9, loc="left")
    for i, stem in enumerate(has_voxels):
        _voxel_panel(fig.add_subplot(grid[0, 1 + i]), m, stem,
                     AIF_COLOR if stem == "aif_mask" else VOF_COLOR,
                     "AIF voxels" if stem == "aif_mask" else "VOF voxels")
    return _png(fig)


def tissue_curve_figure(curves: pd.DataFrame, units: str) -> str | None:
    """Mean concentration of normal and hypoperfused tissue; None when neither is present."""
    present = [c for c in ("tissue_normal", "tissue_hypoperfused")
               if c in curves and curves[c].notna().any()]
    if not present:
        return None
    t = curves["time"].to_numpy(float)
    fig = Figure(figsize=(MONTAGE_WIDTH_IN * 0.6, 2.8))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.17, top=0.9)
    ax = fig.add_subplot()
    for column, label, color in (("tissue_normal", "normal tissue (Tmax < 4 s)", NORMAL_COLOR),
                                 ("tissue_hypoperfused", "hypoperfused tissue (Tmax > 6 s)",
                                  HYPOPERFUSED_COLOR)):
        if column in present:
            ax.plot(t, curves[column].to_numpy(float), color=color, label=label, lw=1.4)
    _frame_rug(ax, t)
    ax.set_xlabel("time from first frame (s)")
    ax.set_ylabel(units)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("Tissue curves", fontsize=9, loc="left")
    return _png(fig)


def motion_figure(fd: np.ndarray, times: np.ndarray | None, limit_mm: float) -> str:
    """Framewise displacement per frame with the QC limit."""
    x = times if times is not None and len(times) == len(fd) else np.arange(len(fd))
    fig = Figure(figsize=(MONTAGE_WIDTH_IN * 0.6, 2.4))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.2, top=0.88)
    ax = fig.add_subplot()
    ax.plot(x, fd, "o-", color="#0072B2", ms=3, lw=1.2, label="framewise displacement")
    ax.axhline(limit_mm, color="#D55E00", ls="--", lw=1, label=f"QC limit {limit_mm:.2g} mm")
    ax.set_xlabel("time from first frame (s)" if x is times else "frame")
    ax.set_ylabel("mm")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("Head motion", fontsize=9, loc="left")
    return _png(fig)


def diffusion_figure(m: _Modality, stem: str) -> str | None:
    """Diffusion image (in the perfusion grid) with core and Tmax > 6 s contours; base64 PNG."""
    title, units, fixed = DIFFUSION_STEMS[stem]
    data = m.array(stem)
    brain, slices, crop, aspect, labels = _layout(m)
    if data.shape[:3] != brain.shape:
        return None
    data = data[..., 0] if data.ndim == 4 else data
    values = np.where(brain, data, np.nan)
    rgb = grey_rgb(mosaic(values, slices, crop), _window(values[brain], fixed))
    if m.has("tmax6_mask"):
        rgb = blend(rgb, mosaic(m.array("tmax6_mask"), slices, crop, fill=False), HYPO_COLOR, 0.35)
    if m.has("core_mask"):
        rgb = blend(rgb, mosaic(m.array("core_mask"), slices, crop, fill=False), CORE_COLOR, 0.45)
    tile = crop[0].stop - crop[0].start
    fig = _mosaic_figure(rgb, aspect, f"{title} ({units}) with core and Tmax > 6 s", labels, tile,
                         legend=[("core", CORE_COLOR), ("Tmax > 6 s", HYPO_COLOR)])
    return _png(fig)


# --- HTML of one modality -----------------------------------------------------------------------

def _summary_table(row: dict, mod: str) -> str:
    rows = "".join(f"<tr><th>{_esc(label)}</th>{_value_cell(row.get(key, NA), mod, key)}"
                   f"<td>{_esc(unit)}</td></tr>" for key, label, unit in SUMMARY_COLUMNS)
    return f'<table class="volumes"><tr><th>measure</th><th>value</th><th>units</th></tr>{rows}</table>'


def _profile_table(row: dict, mod: str) -> str:
    rules = profile_rules()
    body = "".join(f"<tr><th>{_esc(PROFILE_TITLES.get(p, p))}</th>{_value_cell(row.get(p, NA), mod, p)}"
                   f"<td>{_esc(rules[p])}</td></tr>" for p in PROFILE_NAMES)
    return (f'<table class="profiles"><tr><th>profile</th><th>eligible</th><th>rule</th></tr>'
            f"{body}</table><p class=\"na\">n/a: clinical data (age, NIHSS) or a volume missing.</p>")


def _flag_rule(flag: str) -> str:
    """The one-sentence rule of a QC flag (computed or raised by a workflow); "" if unknown."""
    return QC_FLAG_RULES.get(flag) or WORKFLOW_QC_RULES.get(flag, "")


def _qc_html(row: dict, mod: str) -> str:
    flags = [f for f in str(row.get("qc_flags", "")).split(";") if f and f != NA]
    raw = f"<p>Group-table value: <code data-column=\"qc_flags\" data-modality=\"{_esc(mod)}\">" \
          f"{_esc(row.get('qc_flags', ''))}</code></p>"
    if not flags:
        return "<p>No quality-control flag was raised.</p>" + raw
    items = "".join(f'<li><span class="flag">{_esc(f)}</span>: '
                    f"{_esc(_flag_rule(f) or 'No description is available for this flag.')}"
                    f"</li>" for f in flags)
    return f"<ul class=\"qc\">{items}</ul>{raw}"


def _workflow_methods(mod: str) -> str:
    """The methods paragraph of the modality's workflow docstring (``Methods ...: text``)."""
    try:
        doc = importlib.import_module(f"strokeperf.workflows.{mod}").__doc__ or ""
    except ImportError:
        doc = ""
    match = re.search(r"Methods[^:]*:\s*(.+?)(?:\n\s*\n|$)", doc, flags=re.S)
    if not match:
        return ""
    text = " ".join(match.group(1).split())
    return re.sub(r"``([^`]+)``", r"\1", text)


#: Methods sentence of the optional spatial normalisation (``--normalise``).
NORMALISATION_METHODS = (
    "For group analysis, the perfusion baseline image (brain only) was registered to the ICBM152 "
    "2009a template (Fonov et al. 2011; 2 mm) by Mattes mutual information, affine then symmetric "
    "normalisation (SyN, Avants et al. 2008) in ANTs, and the core and Tmax masks were warped to "
    "it (linear interpolation, coverage >= 50 %); lesion-frequency maps are the voxel-wise fraction "
    "of sessions with a lesion.")


def methods_paragraph(mod: str, row: dict, parameters: dict) -> str:
    """Plain-text methods paragraph for one modality, ready to paste."""
    name = MODALITY_NAMES.get(mod, mod)
    params = ", ".join(f"{k} = {json.dumps(v)}" for k, v in sorted(parameters.items())
                       if v not in (None, {}, []))
    thresholds = parameters.get("tmax_thresholds") or list(TMAX_THRESHOLDS)
    parts = [
        f"{name} was processed with strokeperf {__version__} ({CODE_URL}).",
        _workflow_methods(mod),
        f"The ischemic core was defined as {row.get('core_definition', NA)} (Campbell et al. 2011 "
        f"for CT, Purushotham et al. 2015 for ADC) and hypoperfusion as Tmax > 6 s; volumes were "
        f"also reported for Tmax > {', '.join(f'{float(t):g}' for t in thresholds)} s.",
        "Mismatch volume was Tmax > 6 s minus core and mismatch ratio their quotient; the "
        "hypoperfusion intensity ratio was Tmax > 10 s / Tmax > 6 s (Olivot et al. 2014) and the CBV "
        "index the mean relative CBV within Tmax > 6 s (Arenillas et al. 2018).",
        NORMALISATION_METHODS if parameters.get("normalise") else "",
        "Eligibility was assessed by the DEFUSE 3 (Albers et al. 2018), EXTEND (Ma et al. 2019), "
        "DEFUSE 2 target mismatch and malignant (Lansberg et al. 2012) and DAWN (Nogueira et al. "
        "2018) imaging criteria.",
        f"Parameters: {params}." if params else "",
    ]
    return " ".join(p for p in parts if p)


def _curve_units(mod: str, side: dict) -> str:
    units = side.get("aif", {}).get("Units") if isinstance(side.get("aif"), dict) else None
    return units or ("delta HU" if mod == "ctp" else "delta R2* (1/s)")


def _input_function_html(m: _Modality) -> str:
    ts_path = m.table("timeseries.tsv")
    if not ts_path.exists():
        return "<p class=\"na\">No time-series file was written for this session.</p>"
    curves = pd.read_csv(ts_path, sep="\t", na_values=[NA])
    side = _read_json(ts_path.with_suffix(".json"))
    units = _curve_units(m.mod, side)
    out = [_img(input_function_figure(m, curves, units), f"{m.mod} input functions")]
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
    rows = "".join(f"<tr><th>{_esc(label)}</th><td>{_esc(_fmt_side(side.get(key)))}</td></tr>"
                   for key, label in metrics if key in side)
    times = ", ".join(f"{x:g}" for x in t)
    out.append(f"<table>{rows}<tr><th>Frames</th><td>{len(t)} frames, {t[0]:g}-{t[-1]:g} s, "
               f"{sampling}</td></tr></table><p>Frame times (s): <code class=\"frame-times\">"
               f"{_esc(times)}</code></p>")
    tissue = tissue_curve_figure(curves, units)
    if tissue:
        out.append("<h4>Tissue curves</h4>" + _img(tissue, f"{m.mod} tissue curves"))
    return "".join(out)


def _fmt_side(value) -> str:
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _motion_html(m: _Modality) -> str:
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
    return (f"<h3>Head motion</h3>{_img(motion_figure(fd, times, limit), f'{m.mod} motion trace')}"
            f"<p>Largest framewise displacement {peak:.2f} mm (QC limit {limit:.2g} mm, half the "
            f"smallest voxel edge).</p>")


def _diffusion_html(m: _Modality) -> str:
    out = []
    for stem, (title, _, _) in DIFFUSION_STEMS.items():
        if m.has(stem):
            png = diffusion_figure(m, stem)
            if png:
                out.append(_img(png, f"{m.mod} {title} overlay"))
    return "<h3>Diffusion and perfusion</h3>" + "".join(out) if out else ""


def modality_section(m: _Modality, row: dict, parameters: dict, output_dir: Path) -> str:
    """The HTML section of one modality (all figures embedded)."""
    mod = m.mod
    status = row.get("status", NA)
    head = (f'<section id="{_esc(mod)}" data-modality="{_esc(mod)}"><h2>'
            f"{_esc(MODALITY_NAMES.get(mod, mod))} ({_esc(mod)})</h2>"
            f"<p>Status: {_value_cell(status, mod, 'status', tag='strong')}</p>")
    if status == "failed":
        return (head + f"<p class=\"failed\">This session failed: "
                f"{_value_cell(row.get('error', ''), mod, 'error', tag='span')}</p></section>")
    parts = [head, "<h3>Summary</h3><div class=\"panel\"><div>", _summary_table(row, mod),
             "</div><div>", _profile_table(row, mod), "</div></div>"]
    if m.has("cbf") or m.has("cbv"):
        parts.insert(2, _img(summary_figure(m), f"{mod} summary: core and Tmax > 6 s"))
    parts.append("<h3>Quality control</h3>" + _qc_html(row, mod))
    if m.has("cbf") or m.has("cbv"):
        montage = tmax_montage(m)
        if montage:
            parts.append("<h3>Tmax thresholds</h3>" + _img(montage, f"{mod} Tmax threshold montage"))
        maps = [s for s in MAP_DISPLAY if m.has(s)]
        parts.append("<h3>Perfusion maps</h3>" + "".join(
            _img(map_figure(m, s), f"{mod} {MAP_DISPLAY[s][0]} map") for s in maps))
    parts.append("<h3>Arterial input and venous output functions</h3>" + _input_function_html(m))
    parts.append(_motion_html(m))
    parts.append(_diffusion_html(m))
    parts.append(f"<h3>Methods</h3><p class=\"methods\" id=\"methods-{_esc(mod)}\">"
                 f"{_esc(methods_paragraph(mod, row, parameters))}</p><p>References:</p><ol>"
                 + "".join(f"<li>{_esc(c)}</li>" for c in CITATIONS) + "</ol>")
    params = "".join(f"<tr><th>{_esc(k)}</th><td><code>{_esc(json.dumps(v))}</code></td></tr>"
                     for k, v in sorted(parameters.items()))
    parts.append(f"<h3>Parameters</h3><table class=\"parameters\">{params}</table>")
    files = "".join(f'<li><a href="{_esc(p.relative_to(output_dir).as_posix())}">{_esc(p.name)}'
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
    perf_dir = _perf_dir(output_dir, session["subject"], session.get("session"))
    found = _modalities_on_disk(perf_dir)
    current = row.get("modality") or session.get("modality")
    prefix = _prefix_from_images(images, current) or found.get(current, (None,))[0]
    if prefix is None:
        prefix = f"sub-{session['subject']}" + (f"_ses-{session['session']}"
                                                if session.get("session") else "")
    sections, nav = [], []
    for mod in sorted(set(found) | {current}):
        if mod == current:
            m = _Modality(perf_dir, prefix, mod, images)
            mod_row, mod_params = row, parameters
        else:
            m = _Modality(perf_dir, found[mod][0], mod)
            mod_row = _read_row(found[mod][1])
            mod_params = _read_json(found[mod][1].with_suffix(".json")).get("Parameters", {})
        sections.append(modality_section(m, mod_row, mod_params, output_dir))
        nav.append(f'<a href="#{_esc(mod)}">{_esc(MODALITY_NAMES.get(mod, mod))}</a>')
    title = report_name(session)[:-5]
    intro = (f"<p>Participant <strong>sub-{_esc(session['subject'])}</strong>"
             + (f", session <strong>ses-{_esc(session['session'])}</strong>"
                if session.get("session") else "")
             + f". Sections: </p><nav>{''.join(nav)}<a href=\"group.html\">cohort report</a></nav>")
    return io.write_text(output_dir / report_name(session),
                         _page(f"strokeperf report: {title}", intro + "".join(sections)))


# --- group report -------------------------------------------------------------------------------

DISTRIBUTION_COLUMNS = [("core_ml", "Ischemic core (mL)"), ("tmax6_ml", "Tmax > 6 s (mL)"),
                        ("mismatch_ml", "Mismatch volume (mL)")]
MODALITY_COLORS = {"ctp": "#0072B2", "dsc": "#D55E00"}
#: Histogram bins of the cohort distributions (Sturges' rule needs no tuning for cohorts < 1000).
MAX_HISTOGRAM_BINS = 20


def distribution_figure(table: pd.DataFrame) -> str | None:
    """Histograms with strip plots (one dot per session, by modality) of core, Tmax > 6 s and
    mismatch volumes of the successful sessions; None when there is nothing to plot."""
    ok = table[table["status"] == "ok"] if "status" in table else table
    values = {c: pd.to_numeric(ok[c], errors="coerce") for c, _ in DISTRIBUTION_COLUMNS if c in ok}
    if not values or all(v.notna().sum() == 0 for v in values.values()):
        return None
    fig = Figure(figsize=(MONTAGE_WIDTH_IN, 3.0))
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.12, top=0.9, wspace=0.25)
    axes = fig.subplots(1, len(values))
    axes = np.atleast_1d(axes)
    rng = np.random.default_rng(0)  # fixed jitter: the same table gives the same figure
    for ax, (column, label) in zip(axes, [d for d in DISTRIBUTION_COLUMNS if d[0] in values]):
        v = values[column]
        finite = v[np.isfinite(v)]
        if finite.size:
            bins = int(min(MAX_HISTOGRAM_BINS, np.ceil(np.log2(finite.size)) + 1))
            ax.hist(finite, bins=bins, color="#bbbbbb", edgecolor="white")
            top = ax.get_ylim()[1]
            for mod, color in MODALITY_COLORS.items():
                sel = finite[ok.loc[finite.index, "modality"] == mod]
                if sel.size:
                    y = -top * (0.12 + 0.1 * rng.random(sel.size))
                    ax.plot(sel, y, "o", ms=4, color=color, alpha=0.8, label=mod)
            ax.set_ylim(-top * 0.3, top)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_yticks([y for y in ax.get_yticks() if 0 <= y <= top])
        ax.set_title(label, fontsize=9)
        ax.set_ylabel("sessions")
        ax.legend(fontsize=7, frameon=False)
    return _png(fig)


#: Colour map of lesion-frequency maps (fraction of sessions, 0-1), over the template T1.
FREQUENCY_CMAP = "YlOrRd"


def frequency_figure(records: list[dict]) -> str:
    """Axial montage of one modality's lesion-frequency maps (one row per label) over the ICBM152
    template T1, with a colour bar in fraction of sessions. ``records`` as returned by
    :func:`strokeperf.lesion_frequency.write_frequency_maps`."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from strokeperf.registration import load_template

    t1, brain, _ = load_template()
    maps = [np.asarray(nib.load(str(r["path"])).dataobj, dtype=np.float32) for r in records]
    union = np.any([m > 0 for m in maps], axis=0)
    slices, crop = montage_slices(brain, union), brain_crop(brain)
    background = grey_rgb(mosaic(np.where(brain, t1, np.nan), slices, crop),
                          grey_range=BACKGROUND_GREY_RANGE)
    cmap, norm = colormaps[FREQUENCY_CMAP], Normalize(0.0, 1.0)
    rows = len(records)
    h, w = background.shape[:2]
    row_in = (MONTAGE_WIDTH_IN - 1.3) * h / w
    fig = Figure(figsize=(MONTAGE_WIDTH_IN, rows * (row_in + 0.3) + 0.3))
    height = fig.get_figheight()
    for i, (record, fmap) in enumerate(zip(records, maps)):
        tile = mosaic(fmap, slices, crop, fill=0.0)
        shown = background.copy()
        where = tile > 0
        shown[where] = 0.25 * shown[where] + 0.75 * cmap(norm(tile[where]))[:, :3]
        bottom = height - (i + 1) * (row_in + 0.3)
        ax = fig.add_axes((0.1 / MONTAGE_WIDTH_IN, bottom / height,
                           (MONTAGE_WIDTH_IN - 1.3) / MONTAGE_WIDTH_IN, row_in / height))
        ax.imshow(shown, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{record['label']}: {record['n']} session(s)   (R | L)", fontsize=8, loc="left")
    cax = fig.add_axes(((MONTAGE_WIDTH_IN - 1.0) / MONTAGE_WIDTH_IN, 0.3 / height,
                        0.12 / MONTAGE_WIDTH_IN, (height - 0.6) / height))
    fig.colorbar(ScalarMappable(norm, cmap), cax=cax).set_label("fraction of sessions", fontsize=8)
    cax.tick_params(labelsize=7)
    return _png(fig)


def _frequency_html(frequency_maps: list[dict]) -> str:
    """The cohort report's lesion-frequency section (template space), per modality."""
    parts = []
    for mod in sorted({r["modality"] for r in frequency_maps}):
        records = [r for r in frequency_maps if r["modality"] == mod]
        sides = records[0]["sides"]
        files = ", ".join(f"<code>{_esc(Path(r['path']).name)}</code>" for r in records)
        parts.append(
            f"<h3>{_esc(MODALITY_NAMES.get(mod, mod))}</h3>"
            f"<p>Affected side of the Tmax &gt; 6 s lesion in template space: "
            f"<span data-side=\"{mod}-L\">{sides['L']}</span> left, "
            f"<span data-side=\"{mod}-R\">{sides['R']}</span> right, {sides['none']} without "
            f"lesion. Maps: {files}.</p>"
            + _img(frequency_figure(records), f"{mod} lesion-frequency maps"))
    return ("<h2>Lesion frequency (ICBM152 2009a template)</h2><p>Fraction of the normalised "
            "sessions whose lesion covers each voxel (axial slices, patient's right on the left)."
            "</p>" + "".join(parts))


def _count_table(title_col: str, counts: dict, columns: list[str]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in [title_col, *columns])
    body = "".join(f"<tr><th>{_esc(k)}</th>" + "".join(f'<td class="num">{n}</td>' for n in v)
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
    links = "".join(f'<li><a href="{_esc(name)}">{_esc(name[:-5])}</a></li>' for name in reports)
    parts.append(f"<h2>Participant reports</h2><ul class=\"reports\">{links or '<li>none</li>'}</ul>")

    figure = distribution_figure(table) if len(table) else None
    if figure:
        parts.append("<h2>Volume distributions</h2>" + _img(figure, "cohort volume distributions"))

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
    qc_rows = "".join(f"<tr><th>{_esc(f)}</th><td class=\"num\" data-flag=\"{_esc(f)}\">{int(n)}</td>"
                      f"<td>{_esc(_flag_rule(f))}</td></tr>" for f, n in counts.items())
    parts.append("<h2>Quality-control flags</h2>" + (
        f"<table><tr><th>flag</th><th>sessions</th><th>meaning</th></tr>{qc_rows}</table>"
        if qc_rows else "<p>No flag was raised.</p>"))

    if frequency_maps:
        parts.append(_frequency_html(frequency_maps))

    failed = table[table["status"] == "failed"] if "status" in table else table.iloc[0:0]
    failures = "".join(
        f"<li><a href=\"{_esc(_row_report_name(r))}\">{_esc(_row_report_name(r)[:-5])}</a> "
        f"{_esc(r['modality'])}: <span class=\"error\">"
        f"{_esc(r['error'])}</span></li>" for _, r in failed.iterrows())
    parts.append(f"<h2>Failed sessions</h2><ul class=\"failures\">{failures or '<li>none</li>'}</ul>")

    head = "".join(f"<th>{_esc(c)}</th>" for c in ["report", *table.columns])
    rows = []
    for _, r in table.iterrows():
        name = _row_report_name(r)
        css = ' class="failed"' if r.get("status") == "failed" else ""
        cells = "".join(_value_cell(v, r["modality"], c) for c, v in r.items())
        rows.append(f'<tr{css} data-participant="{_esc(r["participant_id"])}" '
                    f'data-session="{_esc(r["session_id"])}"><td><a href="{_esc(name)}">'
                    f"{_esc(name[:-5])}</a></td>{cells}</tr>")
    parts.append("<h2>Group table</h2><p>Click a column header to sort.</p>"
                 f"<div class=\"scroll\"><table class=\"sortable\" id=\"group-table\"><thead><tr>"
                 f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
    return io.write_text(output_dir / "group.html",
                         _page("strokeperf cohort report", "".join(parts), _SORT_SCRIPT))
