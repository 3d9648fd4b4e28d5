"""pydra tasks of the CT perfusion path: file paths in, stage functions, file paths out.

Each task is a module-level function wrapped with ``python.define`` (module-level functions pickle by
reference, which keeps pydra's input hashes stable under the ``cf`` and ``slurm`` workers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fileformats.generic import File
from nibabel.affines import voxel_sizes
from pydra.compose import python

from strokeperf import aif as aif_stage
from strokeperf import brainmask, concentration, deconvolution, lesions, profiles, qc
from strokeperf.aif.arterial import aif_from_mask, read_aif_mask
from strokeperf.aif.venous import scale_aif_by_vof, select_vof
from strokeperf.bids.discovery import Session
from strokeperf.bids.perfusion import load_perfusion
from strokeperf.errors import DataError, InputError
from strokeperf.interfaces.base import load_array, load_mask, records_failure, save_array

def _source(session: dict) -> str:
    return session["perfusion_file"]


@records_failure
def load_ctp(session: dict, frame_interval: float | None = None) -> tuple[File, list]:
    """Read and validate the CTP series; write it as float32 HU with its frame onsets (s)."""
    series = load_perfusion(Session.from_dict(session), frame_interval=frame_interval)
    path = save_array("ctp_hu.nii", series.data, series.affine)
    return path, [float(t) for t in series.frame_times]


@records_failure
def ct_masks(session: dict, ctp_file: File, frame_times: list) -> tuple[File, File, File, dict]:
    """Brain, CSF and vessel-search masks, and the bolus timing of the whole-brain curve."""
    hu, affine = load_array(ctp_file)
    masks = brainmask.ct_session_masks(hu, frame_times, voxel_sizes(affine))
    return (
        save_array("brain_mask.nii", masks.brain, affine, np.uint8),
        save_array("csf_mask.nii", masks.csf, affine, np.uint8),
        save_array("vessel_search_mask.nii", masks.vessel_search, affine, np.uint8),
        masks.bolus.to_record(),
    )


@records_failure
def ct_concentration(session: dict, ctp_file: File, frame_times: list, bolus: dict,
                     vessel_search_mask: File, brain_mask: File,
                     denoise_fwhm_mm: float) -> tuple[File, File]:
    """Contrast concentration (delta-HU): raw in the vessel search region, denoised in the brain."""
    hu, affine = load_array(ctp_file)
    search = load_mask(vessel_search_mask)
    brain = load_mask(brain_mask)
    delta_hu = concentration.ct_concentration(hu, frame_times, bolus["baseline_end"], mask=search)
    del hu
    raw = save_array("delta_hu.nii", np.where(search[..., None], delta_hu, 0), affine)
    tissue = concentration.denoise(delta_hu, brain, voxel_sizes(affine), fwhm_mm=denoise_fwhm_mm)
    return raw, save_array("delta_hu_denoised.nii", tissue, affine)


@records_failure
def input_functions(session: dict, concentration_file: File, frame_times: list,
                    vessel_search_mask: File, brain_mask: File) -> tuple[File, File, File]:
    """AIF (the user's mask ``session["aif_mask_file"]`` when there is one, else automatic) and
    VOF; the AIF is scaled to the VOF's area to undo partial volume."""
    conc, affine = load_array(concentration_file)
    search = load_mask(vessel_search_mask)
    times = np.asarray(frame_times, dtype=float)
    aif, source = user_aif(session, conc, times, affine, search)
    if aif is None:
        aif = aif_stage.select_aif(conc, times, search)
    vof = select_vof(conc, times, search, aif)
    return write_input_functions(aif, vof, times, conc.shape[:3], affine, source)


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
    unsmoothed concentration feeds the parametric fit's neighbourhood prior on Tmax."""
    conc, affine = load_array(concentration_file)
    brain = load_mask(brain_mask)
    record = json.loads(Path(input_functions_file).read_text())
    unsmoothed = load_array(unsmoothed_concentration_file)[0] if method == "parametric" else None
    maps = deconvolution.perfusion_maps(conc, brain, np.asarray(record["aif_scaled"]),
                                        np.asarray(frame_times, dtype=float), method=method,
                                        voxel_size_mm=voxel_sizes(affine),
                                        unsmoothed=unsmoothed, **options)
    return [save_array(f"{name}.nii", maps[name], affine) for name in ("cbf", "cbv", "mtt", "tmax",
                                                                         "ttp")]


@records_failure
def ctp_lesions(session: dict, perfusion_maps: list[File], brain_mask: File, csf_mask: File,
                concentration_file: File, input_functions_file: File, frame_times: list,
                core_rcbf: float, tmax_thresholds: list,
                min_cluster_ml: float, vessel_cbv: float, age: float | None = None,
                nihss: float | None = None, motion: dict | None = None,
                core_rcbf_fwhm_mm: float = lesions.CORE_RCBF_FWHM_MM) -> tuple[list[File], dict]:
    """Relative maps, tissue, core and Tmax masks, volumes (mL), mismatch metrics and profiles.

    Also the mean concentration curves of normal (reference) and hypoperfused tissue, for the report,
    and the session's QC flags (:mod:`strokeperf.qc`).
    """
    found = load_hypoperfusion(session, perfusion_maps, brain_mask, csf_mask, tmax_thresholds,
                               min_cluster_ml, vessel_cbv)
    core = lesions.ctp_core(found.rcbf, found.hypoperfused, found.voxel_size, core_rcbf,
                            min_cluster_ml, tissue=found.tissue, fwhm_mm=core_rcbf_fwhm_mm)
    results = profiles.session_results(found, lesions.volume_ml(core, found.voxel_size),
                                       f"rCBF<{core_rcbf:.2f}", age, nihss)
    results.update(session_qc(found, concentration_file, input_functions_file, frame_times,
                              motion))
    files = save_hypoperfusion(found) + [save_array("core_mask.nii", core, found.affine, np.uint8)]
    return files, results


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
        raise InputError(_source(session), f"cannot normalise perfusion maps: {exc}") from exc


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


LoadCTP = python.define(load_ctp, outputs=["ctp_file", "frame_times"])
CTMasks = python.define(ct_masks, outputs=["brain_mask", "csf_mask", "vessel_search_mask", "bolus"])
CTConcentration = python.define(ct_concentration, outputs=["concentration", "tissue_concentration"])
InputFunctions = python.define(input_functions, outputs=["input_functions", "aif_mask", "vof_mask"])
Deconvolve = python.define(deconvolve, outputs=["perfusion_maps"])
CTPLesions = python.define(ctp_lesions, outputs=["lesion_maps", "results"])
