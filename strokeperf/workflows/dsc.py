"""DSC-MRI workflow of one session, with the ischemic core from diffusion imaging.

Methods (the report's boilerplate uses this text): The DSC-MRI series was read with its frame
timing (BIDS ``VolumeTiming`` or ``RepetitionTime``) and echo time. Every frame was aligned rigidly
to a reference frame (the frame closest to the temporal median) by Mattes mutual information in
ANTs, frames displaced through the slice plane by more than half a slice thickness were excluded,
and framewise displacement was recorded; in moved frames, samples whose resampling error predicted
for a static head exceeded one noise SD (next to bone, scalp and CSF) were replaced by linear
interpolation in time. The bolus was detected on the whole-brain delta-R2* curve; the brain was
segmented on the mean pre-contrast image (S0) and CSF identified as its bright voxels. The signal
was converted to delta-R2* = -ln(S/S0)/TE, optionally corrected for contrast leakage
(Boxerman-Schmainda-Weisskoff), and smoothed within the brain. The arterial input function was
selected automatically (early, high, narrow curves, excluding venous ones): where the arterial
signal reached the noise floor, from those voxels with delta-R2* censored at the floor level, the
censored frames then filled with the gamma-variate first pass under which the brain's tissue curves
were most likely given the tracer-kinetic model (model-based blind estimation, Fluckiger et al.
2009), else among voxels whose signal stayed above it; it was scaled to the area of the venous
output function.
The tissue curves were deconvolved (by default a Bayesian fit of a tracer-kinetic model of delay,
dispersion and transit time) to give CBF, CBV, MTT, Tmax and TTP; relative maps were normalised to
tissue with Tmax < 4 s and hypoperfusion was Tmax > 6 s, CSF and large vessels excluded and
clusters under the minimum size removed. The ischemic core was ADC below the threshold (the scanner
ADC map, else ADC computed from the DWI), measured in DWI space after removal of CSF partial volume
and small clusters; the DWI (mean b = 0 image, else the ADC map) was registered rigidly to the DSC
S0 image by mutual information to carry the core onto the perfusion grid. Mismatch was the Tmax > 6
s volume minus the core volume."""

from __future__ import annotations

from fileformats.generic import File
from pydra.compose import workflow

from strokeperf.interfaces.ctp import Deconvolve
from strokeperf.interfaces.derivatives import WriteDerivatives
from strokeperf.interfaces.dsc import (DiffusionCore, DSCConcentration, DSCLesions, LoadDiffusion,
                                       LoadDSC, MRInputFunctions, MRMasks)
from strokeperf.interfaces.normalisation import NormaliseSession
from strokeperf.interfaces.registration import CoregisterDiffusion, MotionCorrect


@workflow.define(outputs=["volumes"])
def DSCSession(session: dict, output_dir: str, run_id: str, config: dict) -> File:
    """One DSC-MRI session (with its DWI/ADC) from the raw series to derivatives in OUTPUT_DIR
    (see module docstring)."""
    load = workflow.add(LoadDSC(session=session, frame_interval=config.get("frame_interval")))
    motion = workflow.add(MotionCorrect(session=session, series_file=load.dsc_file,
                                        frame_times=load.frame_times,
                                        enabled=config.get("motion_correction", True)))
    masks = workflow.add(MRMasks(session=session, dsc_file=motion.corrected,
                                 frame_times=motion.frame_times, echo_time=load.echo_time))
    conc = workflow.add(DSCConcentration(session=session, dsc_file=motion.corrected,
                                         frame_times=motion.frame_times, echo_time=load.echo_time,
                                         bolus=masks.bolus,
                                         vessel_search_mask=masks.vessel_search_mask,
                                         brain_mask=masks.brain_mask, csf_mask=masks.csf_mask,
                                         leakage_correction=config.get("leakage_correction", False),
                                         denoise_fwhm_mm=config["denoise_fwhm_mm"]))
    inputs = workflow.add(MRInputFunctions(session=session, concentration_file=conc.concentration,
                                           dsc_file=motion.corrected,
                                           frame_times=motion.frame_times,
                                           echo_time=load.echo_time, bolus=masks.bolus,
                                           vessel_search_mask=masks.vessel_search_mask,
                                           tissue_concentration_file=conc.tissue_concentration,
                                           brain_mask=masks.brain_mask))
    maps = workflow.add(Deconvolve(session=session, concentration_file=conc.tissue_concentration,
                                   brain_mask=masks.brain_mask,
                                   input_functions_file=inputs.input_functions,
                                   frame_times=motion.frame_times, method=config["deconvolution"],
                                   options=config.get("deconvolution_options", {}),
                                   unsmoothed_concentration_file=conc.concentration))
    dwi = workflow.add(LoadDiffusion(session=session))
    coreg = workflow.add(CoregisterDiffusion(session=session, diffusion=dwi.diffusion,
                                             fixed_image=masks.s0,
                                             fixed_brain_mask=masks.brain_mask))
    core = workflow.add(DiffusionCore(session=session, diffusion_record=coreg.diffusion,
                                      perfusion_image=masks.s0, core_adc=config["core_adc"],
                                      min_cluster_ml=config["min_cluster_ml"]))
    lesion = workflow.add(DSCLesions(session=session, perfusion_maps=maps.perfusion_maps,
                                     brain_mask=masks.brain_mask, csf_mask=masks.csf_mask,
                                     concentration_file=conc.tissue_concentration,
                                     input_functions_file=inputs.input_functions,
                                     frame_times=motion.frame_times,
                                     diffusion_record=core.diffusion,
                                     tmax_thresholds=list(config["tmax_thresholds"]),
                                     min_cluster_ml=config["min_cluster_ml"],
                                     vessel_cbv=config["vessel_cbv"],
                                     age=session.get("age"), nihss=session.get("nihss"),
                                     motion=motion.motion))
    norm = workflow.add(NormaliseSession(session=session, reference_image=masks.s0,
                                         brain_mask=masks.brain_mask,
                                         lesion_maps=lesion.lesion_maps,
                                         enabled=config.get("normalise", False)))
    sink = workflow.add(WriteDerivatives(
        session=session, output_dir=output_dir, run_id=run_id, maps=maps.perfusion_maps,
        lesion_maps=lesion.lesion_maps, brain_mask=masks.brain_mask, csf_mask=masks.csf_mask,
        aif_mask=inputs.aif_mask, vof_mask=inputs.vof_mask, input_functions=inputs.input_functions,
        results=lesion.results, parameters=config, motion=motion.motion,
        normalisation=norm.normalisation,
        diffusion=core.diffusion))
    return sink.volumes
