"""pydra tasks of the CT perfusion path: file paths in, stage functions, file paths out. The steps
both modalities share (input-function records, deconvolution, lesions and QC) are in
:mod:`strokeperf.interfaces.perfusion`.

Each task is a module-level function wrapped with ``python.define`` (module-level functions pickle by
reference, which keeps pydra's input hashes stable under the ``cf`` and ``slurm`` workers).
"""

from __future__ import annotations

import numpy as np
from fileformats.generic import File
from nibabel.affines import voxel_sizes
from pydra.compose import python

from strokeperf import aif as aif_stage
from strokeperf import brainmask, concentration, lesions, profiles
from strokeperf.aif.venous import select_vof
from strokeperf.bids.discovery import Session
from strokeperf.bids.perfusion import load_perfusion
from strokeperf.interfaces.base import load_array, load_mask, records_failure, save_array
from strokeperf.interfaces.perfusion import (load_hypoperfusion, save_hypoperfusion, session_qc,
                                             user_aif, write_input_functions)


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


LoadCTP = python.define(load_ctp, outputs=["ctp_file", "frame_times"])
CTMasks = python.define(ct_masks, outputs=["brain_mask", "csf_mask", "vessel_search_mask", "bolus"])
CTConcentration = python.define(ct_concentration, outputs=["concentration", "tissue_concentration"])
InputFunctions = python.define(input_functions, outputs=["input_functions", "aif_mask", "vof_mask"])
CTPLesions = python.define(ctp_lesions, outputs=["lesion_maps", "results"])
