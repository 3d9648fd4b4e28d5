"""The reports' figures: matplotlib (Agg) images rendered to base64 PNG text.

Slices are shown in radiological convention (the patient's right on the viewer's left) after
reorienting to RAS. Per modality (:class:`~strokeperf.reports.outputs.ModalityOutputs`): the summary
panel (core and Tmax > 6 s), the Tmax threshold montage, one montage per map with a colour bar in its
units, the input functions with their voxels, the tissue curves, the motion trace and the diffusion
overlay. Per cohort: the volume distributions and the lesion-frequency maps.
"""

from __future__ import annotations

import base64
from io import BytesIO

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from nibabel.affines import voxel_sizes

from strokeperf.lesions import TMAX_THRESHOLDS_S
from strokeperf.reports.outputs import ModalityOutputs

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
#: Diffusion images rendered when the pipeline writes them in the perfusion grid.
DIFFUSION_STEMS = {"adc": ("ADC", "1e-6 mm^2/s", (0.0, 1600.0)), "dwi": ("DWI", "a.u.", None)}
#: Tmax thresholds of the montage rows, s (the masks ``tmax<t>_mask`` the pipeline writes).
TMAX_THRESHOLDS = tuple(int(t) for t in TMAX_THRESHOLDS_S)
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


def png_base64(fig: Figure) -> str:
    """Render a figure (Agg, via ``savefig``) to base64 PNG text."""
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# --- image arrays -------------------------------------------------------------------------------

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


# --- one modality -------------------------------------------------------------------------------

def _layout(m: ModalityOutputs):
    brain = m.array("brain_mask") if m.has("brain_mask") else np.ones(m.array("cbf").shape, bool)
    lesion = m.array("tmax6_mask") if m.has("tmax6_mask") else None
    slices = montage_slices(brain, lesion)
    crop = brain_crop(brain)
    vs = voxel_sizes(m.affine)
    aspect = float(vs[1] / vs[0])
    z_mm = [float((m.affine @ np.array([0, 0, k, 1.0]))[2]) for k in slices]
    labels = [f"z = {z:.0f} mm" for z in z_mm]
    return brain, slices, crop, aspect, labels


def _background(m: ModalityOutputs, brain: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Grey background: the CBV map (grey/white contrast and vessels) inside the brain."""
    for stem in ("cbv", "cbf"):
        if m.has(stem):
            data = np.where(brain, m.array(stem), np.nan)
            return data, _window(data[brain] if brain.any() else data)
    return brain.astype(np.float32), (0.0, 1.0)


def summary_figure(m: ModalityOutputs) -> str:
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
    return png_base64(fig)


def tmax_montage(m: ModalityOutputs) -> str | None:
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
    return png_base64(fig)


def map_figure(m: ModalityOutputs, stem: str) -> str:
    """Montage of one map inside the brain with a colour bar in its units; base64 PNG."""
    title, default_units, fixed, cmap = MAP_DISPLAY[stem]
    brain, slices, crop, aspect, labels = _layout(m)
    data = np.where(brain, m.array(stem), np.nan)
    window = _window(data[brain] if brain.any() else data, fixed)
    tile = crop[0].stop - crop[0].start
    units = m.units(stem, default_units)
    fig = _mosaic_figure(mosaic(data, slices, crop), aspect, f"{title} ({units})", labels, tile,
                         cmap=cmap, window=window, units=units)
    return png_base64(fig)


def _voxel_panel(ax, m: ModalityOutputs, mask_stem: str, color: str, title: str) -> None:
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


def input_function_figure(m: ModalityOutputs, curves: pd.DataFrame, units: str) -> str:
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
    return png_base64(fig)


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
    return png_base64(fig)


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
    return png_base64(fig)


def diffusion_figure(m: ModalityOutputs, stem: str) -> str | None:
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
    return png_base64(fig)


# --- cohort -------------------------------------------------------------------------------------

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
    return png_base64(fig)


#: Colour map of lesion-frequency maps (fraction of sessions, 0-1), over the template T1.
FREQUENCY_CMAP = "YlOrRd"


def frequency_figure(records: list[dict]) -> str:
    """Axial montage of one modality's lesion-frequency maps (one row per label) over the ICBM152
    template T1, with a colour bar in fraction of sessions. ``records`` as returned by
    :func:`strokeperf.lesion_frequency.write_frequency_maps`."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from strokeperf.registration.template import load_template

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
    return png_base64(fig)
