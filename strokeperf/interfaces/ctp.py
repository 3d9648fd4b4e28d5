"""pydra tasks of the CT perfusion path: file paths in, stage functions, file paths out.

Each task is a module-level function wrapped with ``python.define`` (module-level functions pickle by
reference, which keeps pydra's input hashes stable under the ``cf`` and ``slurm`` workers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
from fileformats.generic import File
from nibabel.affines import voxel_sizes
from pydra.compose import python
from scipy import ndimage

from strokeperf import aif as aif_stage
from strokeperf import brainmask, concentration, deconvolution, lesions, profiles, qc
from strokeperf.errors import DataError, InputError
from strokeperf.inputs import Session, load_perfusion
from strokeperf.interfaces.base import load_array, load_mask, records_failure, save_array

#: Margin around the brain searched for the venous sinus and large arteries, mm: the superior
#: sagittal sinus lies between the brain surface and the inner table of the skull.
VESSEL_SEARCH_MARGIN_MM = 6.0


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
    vs = voxel_sizes(affine)
    times = np.asarray(frame_times, dtype=float)
    try:
        # The temporal median is unenhanced nearly everywhere: arteries enhance in a few frames only.
        brain = brainmask.ct_brain_mask(np.median(hu, axis=3), vs)
        # The median over the brain, not the mean: after motion correction the edge voxels of moved
        # frames carry interpolated skull (+1000 HU), which shifts a mean curve frame by frame.
        bolus = concentration.require_bolus(np.median(hu[brain], axis=0), times)
    except DataError as exc:
        raise InputError(_source(session), str(exc)) from exc
    baseline = hu[..., : bolus.baseline_end].mean(axis=3)
    csf = brainmask.ct_csf_mask(baseline, brain, vs)
    bone = baseline > brainmask.BONE_HU
    margin = brainmask.ball(VESSEL_SEARCH_MARGIN_MM, vs)
    search = ndimage.binary_dilation(brain, structure=margin) & ~bone
    return (
        save_array("brain_mask.nii", brain, affine, np.uint8),
        save_array("csf_mask.nii", csf, affine, np.uint8),
        save_array("vessel_search_mask.nii", search, affine, np.uint8),
        {"baseline_end": int(bolus.baseline_end), "arrival_s": float(bolus.arrival_s),
         "peak_s": float(bolus.peak_s)},
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
        try:
            aif = aif_stage.select_aif(conc, times, search)
        except DataError as exc:
            raise InputError(_source(session), str(exc)) from exc
    vof = aif_stage.select_vof(conc, times, search, aif)
    return write_input_functions(aif, vof, times, conc.shape[:3], affine, source)


def user_aif_mask_path(aif_mask_dir: str | None, session: dict) -> Path | None:
    """``DIR/sub-P[/ses-S]/perf/<prefix>_desc-<mod>AIF_mask.nii.gz`` if it exists (the AIF mask
    strokeperf writes, so a previous run's output directory can be given as it is), else None."""
    if not aif_mask_dir:
        return None
    from strokeperf.interfaces.derivatives import prefix_of, session_dir

    path = (session_dir(aif_mask_dir, session)
            / f"{prefix_of(session)}_desc-{session['modality']}AIF_mask.nii.gz")
    return path if path.is_file() else None


def user_aif(session: dict, conc: np.ndarray, times: np.ndarray, affine: np.ndarray,
             search: np.ndarray):
    """``(aif, source)``: the AIF of the session's user mask ``session["aif_mask_file"]`` (set by
    the command line from ``--aif-mask-dir``, :func:`user_aif_mask_path`;
    :func:`aif.aif_from_mask`) and
    ``{"type": "mask", "file": path}``, or ``(None, {"type": "automatic"})`` without a mask.

    Raises InputError naming the mask file when it does not fit the series, has voxels outside
    the vessel search region ``search`` (brain + ``VESSEL_SEARCH_MARGIN_MM``, where concentration
    curves are kept) or shows no bolus.
    """
    path = session.get("aif_mask_file")
    if not path:
        return None, {"type": "automatic"}
    mask = aif_stage.read_aif_mask(path, conc.shape[:3], affine)
    outside = int(np.count_nonzero(mask & ~search))
    if outside:
        raise InputError(path, f"{outside} of the {int(mask.sum())} AIF mask voxels lie outside "
                               f"the brain plus {VESSEL_SEARCH_MARGIN_MM:g} mm, where no "
                               f"concentration curve is computed")
    try:
        aif = aif_stage.aif_from_mask(conc, times, mask)
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
        scaled, factor = aif_stage.scale_aif_by_vof(aif, vof)
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
    found = hypoperfusion(session, perfusion_maps, brain_mask, csf_mask, tmax_thresholds,
                          min_cluster_ml, vessel_cbv)
    core = lesions.ctp_core(found.rcbf, found.hypoperfused, found.voxel_size, core_rcbf,
                            min_cluster_ml, tissue=found.tissue, fwhm_mm=core_rcbf_fwhm_mm)
    results = session_results(found, lesions.volume_ml(core, found.voxel_size),
                              f"rCBF<{core_rcbf:.2f}", age, nihss)
    results.update(curves_and_qc(found, concentration_file, input_functions_file, frame_times,
                                 motion))
    files = found.save() + [save_array("core_mask.nii", core, found.affine, np.uint8)]
    return files, results


class Hypoperfusion(NamedTuple):
    """Tissue, reference and Tmax lesions of one session on the perfusion grid."""

    affine: np.ndarray
    voxel_size: np.ndarray
    brain: np.ndarray
    tissue: np.ndarray
    reference: np.ndarray
    rcbf: np.ndarray
    rcbv: np.ndarray
    tmax_masks: dict
    hypoperfused: np.ndarray

    def save(self) -> list[Path]:
        """rCBF, rCBV, tissue and Tmax masks as work files (the datasink names them)."""
        files = [save_array("rcbf.nii", self.rcbf, self.affine),
                 save_array("rcbv.nii", self.rcbv, self.affine),
                 save_array("tissue_mask.nii", self.tissue, self.affine, np.uint8)]
        return files + [save_array(f"tmax{thr:g}_mask.nii", m, self.affine, np.uint8)
                        for thr, m in self.tmax_masks.items()]


def hypoperfusion(session: dict, perfusion_maps: list, brain_mask, csf_mask, tmax_thresholds,
                  min_cluster_ml: float, vessel_cbv: float) -> Hypoperfusion:
    """Tissue (brain minus CSF and vessels), reference tissue (Tmax < 4 s), rCBF and rCBV against
    it, and the Tmax > threshold lesions (small clusters removed)."""
    maps = {Path(p).name.split(".")[0]: p for p in perfusion_maps}
    cbf, affine = load_array(maps["cbf"])
    cbv, _ = load_array(maps["cbv"])
    tmax, _ = load_array(maps["tmax"])
    brain, csf = load_mask(brain_mask), load_mask(csf_mask)
    vs = voxel_sizes(affine)
    tissue = lesions.tissue_mask(brain, csf, cbv, vessel_cbv=vessel_cbv)
    reference = lesions.reference_mask(tissue, tmax)
    try:
        rcbf = lesions.relative_map(cbf, reference)
        rcbv = lesions.relative_map(cbv, reference)
    except ValueError as exc:
        raise InputError(_source(session), f"cannot normalise perfusion maps: {exc}") from exc
    tmax_masks = lesions.tmax_lesions(tmax, tissue, vs, tmax_thresholds, min_cluster_ml)
    return Hypoperfusion(affine, vs, brain, tissue, reference, rcbf, rcbv, tmax_masks,
                         tmax_masks[lesions.HYPOPERFUSION_TMAX_S])


def session_results(found: Hypoperfusion, core_ml: float | None, core_definition: str | None,
                    age: float | None, nihss: float | None) -> dict:
    """Volumes, mismatch metrics, CBV index, profiles and side. Without a core (``core_ml`` None)
    the core-dependent columns (mismatch, profiles) are n/a; HIR and the CBV index remain."""
    vs = found.voxel_size
    results = {"core_ml": core_ml, "core_definition": core_definition,
               **{f"tmax{thr:g}_ml": lesions.volume_ml(m, vs)
                  for thr, m in found.tmax_masks.items()}}
    metrics = profiles.mismatch_metrics(0.0 if core_ml is None else core_ml,
                                        results["tmax6_ml"], results["tmax10_ml"])
    if core_ml is None:
        metrics.update(mismatch_ml=None, mismatch_ratio=None)
    results.update(metrics)
    results["cbv_index"] = lesions.cbv_index(found.rcbv, found.hypoperfused)
    results.update(profiles.evaluate_profiles(core_ml, results["tmax6_ml"],
                                              results["tmax10_ml"], age=age, nihss=nihss))
    results["affected_side"] = lesions.affected_side(found.hypoperfused, found.brain, found.affine)
    return results


def curves_and_qc(found: Hypoperfusion, concentration_file, input_functions_file,
                  frame_times: list, motion: dict | None = None) -> dict:
    """Mean curves of normal and hypoperfused tissue (for the report) and the QC flags."""
    conc, _ = load_array(concentration_file)
    curves = {
        "tissue_normal": conc[found.reference].mean(axis=0).tolist(),
        "tissue_hypoperfused": conc[found.hypoperfused].mean(axis=0).tolist()
        if found.hypoperfused.any() else None,
    }
    fd = (motion or {}).get("framewise_displacement")
    flags = qc.compute_qc_flags(
        frame_times=np.asarray(frame_times, dtype=float),
        tissue_curve=np.asarray(curves["tissue_normal"]),
        input_functions=json.loads(Path(input_functions_file).read_text()),
        brain_mask=found.brain, hypoperfused_mask=found.hypoperfused, affine=found.affine,
        hypoperfused_curve=(None if curves["tissue_hypoperfused"] is None
                            else np.asarray(curves["tissue_hypoperfused"])),
        noise_sd=qc.voxel_noise_sd(conc, found.tissue),
        framewise_displacement=None if fd is None else np.asarray(fd, dtype=float))
    return {"curves": curves, "qc_flags": flags}


LoadCTP = python.define(load_ctp, outputs=["ctp_file", "frame_times"])
CTMasks = python.define(ct_masks, outputs=["brain_mask", "csf_mask", "vessel_search_mask", "bolus"])
CTConcentration = python.define(ct_concentration, outputs=["concentration", "tissue_concentration"])
InputFunctions = python.define(input_functions, outputs=["input_functions", "aif_mask", "vof_mask"])
Deconvolve = python.define(deconvolve, outputs=["perfusion_maps"])
CTPLesions = python.define(ctp_lesions, outputs=["lesion_maps", "results"])
