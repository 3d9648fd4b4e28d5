"""pydra tasks of the DSC-MRI path and its diffusion core: file paths in, stage functions, file paths
out. Deconvolution and the shared lesion rules are those of the CT path
(:mod:`strokeperf.interfaces.perfusion`); motion correction and co-registration are in
:mod:`strokeperf.interfaces.registration`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fileformats.generic import File
from nibabel.affines import voxel_sizes
from pydra.compose import python

from strokeperf import aif as aif_stage
from strokeperf import brainmask, concentration, diffusion, lesions, profiles
from strokeperf.aif import reconstruction as aif_reconstruction
from strokeperf.aif.venous import select_vof
from strokeperf.bids.diffusion import check_diffusion_inputs, load_adc, load_dwi
from strokeperf.bids.discovery import Session
from strokeperf.bids.perfusion import load_perfusion
from strokeperf.errors import DataError, InputError
from strokeperf.interfaces.base import load_array, load_mask, records_failure, save_array
from strokeperf.interfaces.perfusion import (load_hypoperfusion, save_hypoperfusion, session_qc,
                                             user_aif, write_input_functions)
from strokeperf.registration import resampling

#: QC flag of a DSC session without DWI or ADC: no core, so no mismatch and no profile.
NO_DIFFUSION_FLAG = "no_diffusion"


def _source(session: dict) -> str:
    return session["perfusion_file"]


@records_failure
def load_dsc(session: dict, frame_interval: float | None = None) -> tuple[File, list, float]:
    """Read and validate the DSC series; write it as float32 magnitude with its frame onsets (s)
    and the echo time (s). The diffusion inputs are validated here too (not read in full), so that
    a broken ``.bval`` fails the session before its perfusion analysis rather than after it."""
    s = Session.from_dict(session)
    series = load_perfusion(s, frame_interval=frame_interval)
    check_diffusion_inputs(s)
    path = save_array("dsc_signal.nii", series.data, series.affine)
    return path, [float(t) for t in series.frame_times], float(series.echo_time_s)


@records_failure
def mr_masks(session: dict, dsc_file: File, frame_times: list,
             echo_time: float) -> tuple[File, File, File, File, dict]:
    """Bolus timing, brain and CSF masks on the baseline S0, the vessel search region, and S0
    (:func:`brainmask.mr_session_masks`)."""
    signal, affine = load_array(dsc_file)
    masks = brainmask.mr_session_masks(signal, frame_times, echo_time, voxel_sizes(affine))
    return (
        save_array("brain_mask.nii", masks.brain, affine, np.uint8),
        save_array("csf_mask.nii", masks.csf, affine, np.uint8),
        save_array("vessel_search_mask.nii", masks.vessel_search, affine, np.uint8),
        save_array("s0.nii", masks.s0, affine),
        masks.bolus.to_record(),
    )


@records_failure
def dsc_concentration(session: dict, dsc_file: File, frame_times: list, echo_time: float,
                      bolus: dict, vessel_search_mask: File, brain_mask: File, csf_mask: File,
                      leakage_correction: bool, denoise_fwhm_mm: float) -> tuple[File, File]:
    """delta-R2* (1/s): raw in the vessel search region, leakage-corrected (optional) and denoised
    in the brain."""
    signal, affine = load_array(dsc_file)
    search, brain, csf = load_mask(vessel_search_mask), load_mask(brain_mask), load_mask(csf_mask)
    dr2 = concentration.dsc_concentration(signal, echo_time, bolus["baseline_end"])
    del signal
    raw = save_array("delta_r2s.nii", np.where(search[..., None], dr2, 0), affine)
    if leakage_correction:
        dr2, _ = concentration.correct_leakage(dr2, frame_times, brain, reference_mask=brain & ~csf)
    tissue = concentration.denoise(dr2, brain, voxel_sizes(affine), fwhm_mm=denoise_fwhm_mm)
    return raw, save_array("delta_r2s_denoised.nii", tissue, affine)


@records_failure
def mr_input_functions(session: dict, concentration_file: File, dsc_file: File, frame_times: list,
                       echo_time: float, bolus: dict, vessel_search_mask: File,
                       tissue_concentration_file: File, brain_mask: File) -> tuple[File, File, File]:
    """MR AIF (the user's mask ``session["aif_mask_file"]`` when there is one, else
    :func:`strokeperf.aif.mr.select_mr_aif`: the most arterial voxels, censored at the noise floor when the
    arterial signal reaches it, the censored frames then reconstructed from the brain's tissue
    curves by :func:`strokeperf.aif.reconstruction.reconstruct_censored_aif`) and VOF; the AIF is scaled to
    the VOF's area."""
    conc, affine = load_array(concentration_file)
    search = load_mask(vessel_search_mask)
    times = np.asarray(frame_times, dtype=float)
    aif, source = user_aif(session, conc, times, affine, search)
    extra = {}
    if aif is None:
        signal, _ = load_array(dsc_file)
        aif = aif_stage.select_aif(conc, times, search, modality="mr", signal=signal,
                                   baseline_end=bolus["baseline_end"], echo_time=echo_time)
        del signal
        if aif.censored_fraction is not None and np.any(aif.censored_fraction > 0):
            aif, extra = _reconstruct_saturated_aif(session, aif, times, tissue_concentration_file,
                                                    brain_mask)
    vof = select_vof(conc, times, search, aif)
    return write_input_functions(aif, vof, times, conc.shape[:3], affine, source, extra)


def _reconstruct_saturated_aif(session: dict, aif, times: np.ndarray, tissue_concentration_file,
                               brain_mask) -> tuple:
    """The censored AIF with its censored frames filled from the tissue, and the record entries
    that describe it (``aif_measured``, ``aif_censored_fraction``, ``aif_reconstruction``)."""
    tissue, _ = load_array(tissue_concentration_file)
    curves = aif_reconstruction.sample_tissue(tissue, load_mask(brain_mask))
    del tissue
    result = aif_reconstruction.reconstruct_censored_aif(aif.curve, aif.censored_fraction,
                                                         aif.censor_level, times, curves)
    extra = {"aif_measured": np.asarray(aif.curve).tolist(),
             "aif_censored_fraction": np.round(aif.censored_fraction, 4).tolist(),
             "aif_reconstruction": {
                 "method": "censored frames filled with a gamma-variate first pass fitted to the "
                           "tissue curves' likelihood",
                 "censored_frames": int(aif.censored_frames),
                 "censor_level": float(aif.censor_level),
                 "first_pass": result.first_pass,
                 "log_likelihood_gain": result.log_likelihood_gain,
                 "tissue_curves": result.tissue_curves,
                 "applied": bool(result.first_pass)}}
    return (aif.with_curve(result.curve) if result.first_pass else aif), extra


@records_failure
def load_diffusion(session: dict) -> dict:
    """The diffusion inputs on one grid: ADC (1e-6 mm^2/s), mean b = 0 and DWI brain mask.

    ADC: the scanner map when present, else computed from the DWI (:func:`diffusion.adc_from_dwi`).
    A DWI series present beside a scanner ADC is still read (and must be valid): its b = 0 image
    drives the registration and the CSF clean-up of the core, its brain mask bounds the core. When
    the ADC map has its own grid, b = 0 and mask are resampled onto it (same scanner space). The
    record's ``available`` is False when the session has neither DWI nor ADC.
    """
    s = Session.from_dict(session)
    if s.dwi_file is None and s.adc_file is None:
        return {"available": False}
    sources = [str(p) for p in (s.dwi_file, s.bval_file, s.bvec_file, s.adc_file) if p is not None]
    b0 = brain = None
    if s.dwi_file is not None:
        dwi, affine, bvals, _ = load_dwi(s)
        try:
            b0 = diffusion.mean_b0(dwi, bvals)
            brain = diffusion.dwi_brain_mask(dwi, bvals, voxel_sizes(affine))
        except DataError as exc:
            raise InputError(s.dwi_file, str(exc)) from exc
    if s.adc_file is not None:
        adc, adc_affine = load_adc(s)
        adc_method = "scanner ADC map"
        if b0 is not None and (adc.shape != b0.shape or not np.allclose(adc_affine, affine,
                                                                         atol=1e-3)):
            b0 = resampling.resample_image(b0, affine, np.eye(4), adc.shape, adc_affine)
            brain = resampling.resample_mask(brain, affine, np.eye(4), adc.shape, adc_affine)
        affine = adc_affine
    else:
        adc = diffusion.adc_from_dwi(dwi, bvals, mask=brain)
        adc_method = "computed from the DWI (mono-exponential, trace)"
    record = {
        "available": True, "sources": sources, "adc_method": adc_method,
        "adc": str(save_array("adc.nii", adc, affine)),
        "b0": None if b0 is None else str(save_array("b0.nii", b0, affine)),
        "brain_mask": None if brain is None else str(save_array("dwi_brain_mask.nii", brain,
                                                                affine, np.uint8)),
    }
    # Registration image: the b = 0 (T2*-like, the contrast of DSC S0); else the ADC map.
    record["registration_image"] = record["b0"] or record["adc"]
    record["registration_source"] = str(s.dwi_file if b0 is not None else s.adc_file)
    return record


@records_failure
def diffusion_core(session: dict, diffusion_record: dict, perfusion_image: File, core_adc: float,
                   min_cluster_ml: float) -> dict:
    """ADC core in DWI space (:func:`diffusion.adc_core`), its volume there, and the core and ADC
    carried onto the perfusion grid with the co-registration transform."""
    record = dict(diffusion_record)
    if not record.get("available"):
        return record
    adc, affine = load_array(record["adc"])
    brain = load_mask(record["brain_mask"])
    b0 = None if record.get("b0") is None else load_array(record["b0"])[0]
    vs = voxel_sizes(affine)
    try:
        core = diffusion.adc_core(adc, brain, vs, threshold=core_adc, b0=b0,
                                  min_cluster_ml=min_cluster_ml)
    except DataError as exc:
        raise InputError(record["registration_source"], str(exc)) from exc
    target, target_affine = load_array(perfusion_image)
    transform = np.asarray(record["transform"], dtype=float)
    core_perf = resampling.resample_mask(core, affine, transform, target.shape, target_affine)
    # resample_image takes the "target -> image" direction: perfusion -> DWI.
    adc_perf = resampling.resample_image(adc, affine, np.linalg.inv(transform), target.shape,
                                         target_affine, order=1, mode="constant")
    record.update({
        "core_ml": lesions.volume_ml(core, vs),
        "core_definition": f"ADC<{core_adc:g}",
        "core_mask_dwi": str(save_array("core_mask_dwi.nii", core, affine, np.uint8)),
        "core_mask": str(save_array("core_mask.nii", core_perf, target_affine, np.uint8)),
        "adc_perfusion": str(save_array("adc_perfusion.nii", adc_perf, target_affine)),
    })
    return record


@records_failure
def dsc_lesions(session: dict, perfusion_maps: list[File], brain_mask: File, csf_mask: File,
                concentration_file: File, input_functions_file: File, frame_times: list,
                diffusion_record: dict, tmax_thresholds: list, min_cluster_ml: float,
                vessel_cbv: float, age: float | None = None, nihss: float | None = None,
                motion: dict | None = None) -> tuple[list[File], dict]:
    """Tmax lesions as for CT, the diffusion core and its volume in DWI space, mismatch
    (``tmax6_ml`` on the perfusion grid minus ``core_ml`` on the DWI grid), profiles and QC flags.

    Without DWI or ADC the core and everything that depends on it are n/a and the QC flag
    ``no_diffusion`` is raised; the Tmax volumes, HIR and CBV index are still reported.
    """
    found = load_hypoperfusion(session, perfusion_maps, brain_mask, csf_mask, tmax_thresholds,
                               min_cluster_ml, vessel_cbv)
    has_core = bool(diffusion_record.get("available"))
    results = profiles.session_results(found,
                                       diffusion_record.get("core_ml") if has_core else None,
                                       diffusion_record.get("core_definition") if has_core else None,
                                       age, nihss)
    results.update(session_qc(found, concentration_file, input_functions_file, frame_times,
                              motion))
    if not has_core:
        results["qc_flags"] = [*results["qc_flags"], NO_DIFFUSION_FLAG]
    files = save_hypoperfusion(found) + ([Path(diffusion_record["core_mask"])] if has_core else [])
    return files, results


LoadDSC = python.define(load_dsc, outputs=["dsc_file", "frame_times", "echo_time"])
MRMasks = python.define(mr_masks, outputs=["brain_mask", "csf_mask", "vessel_search_mask", "s0",
                                           "bolus"])
DSCConcentration = python.define(dsc_concentration,
                                 outputs=["concentration", "tissue_concentration"])
MRInputFunctions = python.define(mr_input_functions,
                                 outputs=["input_functions", "aif_mask", "vof_mask"])
LoadDiffusion = python.define(load_diffusion, outputs=["diffusion"])
DiffusionCore = python.define(diffusion_core, outputs=["diffusion"])
DSCLesions = python.define(dsc_lesions, outputs=["lesion_maps", "results"])
