"""CT perfusion workflow of one session.

Methods (the report's boilerplate uses this text): The CT perfusion series was read with its frame
timing (BIDS ``VolumeTiming`` or ``RepetitionTime``). Every frame was aligned rigidly to a reference
frame (the frame closest to the temporal median) by Mattes mutual information in ANTs, frames
displaced through the slice plane by more than half a slice thickness were excluded, and framewise
displacement was recorded; in moved frames, samples whose resampling error predicted for a static
head exceeded one noise SD (next to bone, scalp and CSF) were replaced by linear interpolation in
time. A brain mask was computed from the temporal median image as the largest
soft-tissue region enclosed by the skull, and CSF was identified by its unenhanced density. The
bolus arrival was detected on the whole-brain curve and the frames before it were averaged as the
baseline; contrast concentration was the difference from baseline in HU, smoothed within the brain.
The arterial input function was selected automatically (early, high, narrow curves, excluding venous
ones) and scaled to the area of the venous output function to correct partial volume. The tissue
curves were deconvolved (by default a Bayesian fit of a tracer-kinetic model of delay, dispersion
and transit time; see the deconvolution parameter) to give CBF, CBV, MTT, Tmax and TTP.
Relative CBF and CBV were normalised to tissue with Tmax < 4 s; hypoperfusion was Tmax > 6 s, the
ischemic core rCBF < 30 % inside it (rCBF smoothed within tissue, 5 mm full width at half maximum by
default, so that its per-voxel noise does not turn penumbra into core), CSF and large vessels
excluded and clusters under the minimum size removed."""

from __future__ import annotations

from fileformats.generic import File
from pydra.compose import workflow

from strokeperf.interfaces.ctp import (CTConcentration, CTMasks, CTPLesions, Deconvolve,
                                       InputFunctions, LoadCTP)
from strokeperf.interfaces.derivatives import WriteDerivatives
from strokeperf.interfaces.normalisation import NormaliseSession
from strokeperf.interfaces.registration import MotionCorrect


@workflow.define(outputs=["volumes"])
def CTPSession(session: dict, output_dir: str, run_id: str, config: dict) -> File:
    """One CTP session from the raw series to derivatives in OUTPUT_DIR (see module docstring)."""
    load = workflow.add(LoadCTP(session=session, frame_interval=config.get("frame_interval")))
    motion = workflow.add(MotionCorrect(session=session, series_file=load.ctp_file,
                                        frame_times=load.frame_times,
                                        enabled=config.get("motion_correction", True)))
    masks = workflow.add(CTMasks(session=session, ctp_file=motion.corrected,
                                 frame_times=motion.frame_times))
    conc = workflow.add(CTConcentration(session=session, ctp_file=motion.corrected,
                                        frame_times=motion.frame_times, bolus=masks.bolus,
                                        vessel_search_mask=masks.vessel_search_mask,
                                        brain_mask=masks.brain_mask,
                                        denoise_fwhm_mm=config["denoise_fwhm_mm"]))
    inputs = workflow.add(InputFunctions(session=session, concentration_file=conc.concentration,
                                         frame_times=motion.frame_times,
                                         vessel_search_mask=masks.vessel_search_mask,
                                         brain_mask=masks.brain_mask))
    maps = workflow.add(Deconvolve(session=session, concentration_file=conc.tissue_concentration,
                                   brain_mask=masks.brain_mask,
                                   input_functions_file=inputs.input_functions,
                                   frame_times=motion.frame_times, method=config["deconvolution"],
                                   options=config.get("deconvolution_options", {}),
                                   unsmoothed_concentration_file=conc.concentration))
    lesion = workflow.add(CTPLesions(session=session, perfusion_maps=maps.perfusion_maps,
                                     brain_mask=masks.brain_mask, csf_mask=masks.csf_mask,
                                     concentration_file=conc.tissue_concentration,
                                     input_functions_file=inputs.input_functions,
                                     frame_times=motion.frame_times,
                                     core_rcbf=config["core_rcbf"],
                                     core_rcbf_fwhm_mm=config["core_rcbf_fwhm_mm"],
                                     tmax_thresholds=list(config["tmax_thresholds"]),
                                     min_cluster_ml=config["min_cluster_ml"],
                                     vessel_cbv=config["vessel_cbv"],
                                     age=session.get("age"), nihss=session.get("nihss"),
                                     motion=motion.motion))
    norm = workflow.add(NormaliseSession(session=session, reference_image=motion.corrected,
                                         brain_mask=masks.brain_mask,
                                         lesion_maps=lesion.lesion_maps,
                                         enabled=config.get("normalise", False)))
    sink = workflow.add(WriteDerivatives(
        session=session, output_dir=output_dir, run_id=run_id, maps=maps.perfusion_maps,
        lesion_maps=lesion.lesion_maps, brain_mask=masks.brain_mask, csf_mask=masks.csf_mask,
        aif_mask=inputs.aif_mask, vof_mask=inputs.vof_mask, input_functions=inputs.input_functions,
        results=lesion.results, parameters=config, motion=motion.motion,
        normalisation=norm.normalisation))
    return sink.volumes
