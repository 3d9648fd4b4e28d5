"""pydra task and helpers that the CT perfusion and DSC-MRI paths share: the input-function
record, deconvolution, and the lesions, results and QC of the perfusion maps. File paths in, stage
functions, file paths out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fileformats.generic import File
from nibabel.affines import voxel_sizes
from pydra.compose import python

from strokeperf import brainmask, deconvolution, lesions, qc
from strokeperf.aif.arterial import aif_from_mask, read_aif_mask
from strokeperf.aif.venous import scale_aif_by_vof
from strokeperf.errors import DataError, InputError
from strokeperf.interfaces.base import load_array, load_mask, records_failure, save_array


def user_aif(session: dict, conc: np.ndarray, times: np.ndarray, affine: np.ndarray,
             search: np.ndarray):
    """``(aif, source)``: the AIF of the session's user mask ``session["aif_mask_file"]`` (set by
    the command line from ``--aif-mask-dir``, :func:`strokeperf.bids.derivatives.aif_mask_path`;
    :func:`strokeperf.aif.arterial.aif_from_mask`) and
    ``{"type": "mask", "file": path}``, or ``(None, {"type": "automatic"})`` without a mask.

    Raises InputError naming the mask file when it does not fit the series, has voxels outside
    the vessel search region ``search`` (brain + ``brainmask.VESSEL_SEARCH_MARGIN_MM``, where concentration
    curves are kept) or shows no bolus.
    """
    path = session.get("aif_mask_file")
    if not path:
        return None, {"type": "automatic"}
    mask = read_aif_mask(path, conc.shape[:3], affine)
    outside = int(np.count_nonzero(mask & ~search))
    if outside:
        raise InputError(path, f"{outside} of the {int(mask.sum())} AIF mask voxels lie outside "
                               f"the brain plus {brainmask.VESSEL_SEARCH_MARGIN_MM:g} mm, where no "
                               f"concentration curve is computed")
    try:
        aif = aif_from_mask(conc, times, mask)
    except DataError as exc:
        raise InputError(path, str(exc)) from exc
    return aif, {"type": "mask", "file": str(path)}


def write_input_functions(aif, vof, times: np.ndarray, shape, affine,
                          source: dict | None = None,
                          extra: dict | None = None) -> tuple[Path, Path, Path]:
    """Scale the AIF by the VOF; write the input-function record (JSON) and the voxel masks.

    ``source``: how the AIF was obtained, ``{"type": "automatic"}`` (default) or ``{"type":
    "mask", "file": path}`` (the user's mask). ``extra``: further record entries (the DSC path's
    measured curve and reconstruction of a saturated AIF)."""
    scaled, factor = aif.curve, 1.0
    if vof is not None:
        scaled, factor = scale_aif_by_vof(aif, vof)
    record = {
        "frame_times_s": times.tolist(),
        "aif": np.asarray(aif.curve).tolist(),
        "aif_scaled": np.asarray(scaled).tolist(),
        "vof": None if vof is None else np.asarray(vof.curve).tolist(),
        "partial_volume_factor": float(factor),
        "aif_quality": float(aif.quality),
        "aif_peak": float(aif.peak), "aif_arrival_s": float(aif.arrival_s),
        "aif_ttp_s": float(aif.ttp_s), "aif_fwhm_s": float(aif.fwhm_s),
        "aif_voxels": np.asarray(aif.voxels).tolist(),
        "vof_voxels": None if vof is None else np.asarray(vof.voxels).tolist(),
        "vof_complete": None if vof is None else bool(vof.complete),
        "aif_source": dict(source or {"type": "automatic"}),
        "aif_censored_frames": int(getattr(aif, "censored_frames", 0)),
        **(extra or {}),
    }
    aif_path = Path.cwd() / "input_functions.json"
    aif_path.write_text(json.dumps(record, indent=1))
    aif_mask = np.zeros(shape, dtype=np.uint8)
    aif_mask[tuple(np.asarray(aif.voxels).T)] = 1
    vof_mask = np.zeros(shape, dtype=np.uint8)
    if vof is not None:
        vof_mask[tuple(np.asarray(vof.voxels).T)] = 1
    return (aif_path, save_array("aif_mask.nii", aif_mask, affine, np.uint8),
            save_array("vof_mask.nii", vof_mask, affine, np.uint8))


@records_failure
def deconvolve(session: dict, concentration_file: File, brain_mask: File, input_functions_file: File,
               frame_times: list, method: str, options: dict,
               unsmoothed_concentration_file: File) -> list[File]:
    """Perfusion maps (CBF, CBV, MTT, Tmax, TTP) by deconvolution with the scaled AIF; the
    unsmoothed concentration is read for methods whose second pass uses it (the parametric fit's
    neighbourhood prior on Tmax)."""
    conc, affine = load_array(concentration_file)
    brain = load_mask(brain_mask)
    record = json.loads(Path(input_functions_file).read_text())
    uses_unsmoothed = deconvolution.METHODS[method].second_pass_reads_unsmoothed
    unsmoothed = load_array(unsmoothed_concentration_file)[0] if uses_unsmoothed else None
    maps = deconvolution.perfusion_maps(conc, brain, np.asarray(record["aif_scaled"]),
                                        np.asarray(frame_times, dtype=float), method=method,
                                        voxel_size_mm=voxel_sizes(affine),
                                        unsmoothed=unsmoothed, **options)
    return [save_array(f"{name}.nii", maps[name], affine) for name in deconvolution.MAP_NAMES]


def load_hypoperfusion(session: dict, perfusion_maps: list, brain_mask, csf_mask, tmax_thresholds,
                       min_cluster_ml: float, vessel_cbv: float) -> lesions.Hypoperfusion:
    """:func:`lesions.hypoperfusion` of the session's CBF, CBV and Tmax maps and masks."""
    maps = {Path(p).name.split(".")[0]: p for p in perfusion_maps}
    cbf, affine = load_array(maps["cbf"])
    try:
        return lesions.hypoperfusion(cbf, load_array(maps["cbv"])[0], load_array(maps["tmax"])[0],
                                     load_mask(brain_mask), load_mask(csf_mask), affine,
                                     tmax_thresholds, min_cluster_ml, vessel_cbv)
    except ValueError as exc:
        raise InputError(session["perfusion_file"], f"cannot normalise perfusion maps: {exc}") from exc


def save_hypoperfusion(found: lesions.Hypoperfusion) -> list[Path]:
    """rCBF, rCBV, tissue and Tmax masks as work files (the datasink names them)."""
    files = [save_array("rcbf.nii", found.rcbf, found.affine),
             save_array("rcbv.nii", found.rcbv, found.affine),
             save_array("tissue_mask.nii", found.tissue, found.affine, np.uint8)]
    return files + [save_array(f"tmax{thr:g}_mask.nii", m, found.affine, np.uint8)
                    for thr, m in found.tmax_masks.items()]


def session_qc(found: lesions.Hypoperfusion, concentration_file, input_functions_file,
               frame_times: list, motion: dict | None = None) -> dict:
    """:func:`qc.session_qc` of the session's concentration and input functions."""
    return qc.session_qc(load_array(concentration_file)[0], found,
                         json.loads(Path(input_functions_file).read_text()), frame_times,
                         (motion or {}).get("framewise_displacement"))


Deconvolve = python.define(deconvolve, outputs=["perfusion_maps"])
