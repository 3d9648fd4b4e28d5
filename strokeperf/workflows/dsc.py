"""DSC-MRI workflow of one session, with the ischemic core from diffusion imaging: load, motion
correction, MR masks with the bolus timing, delta-R2* (optionally leakage-corrected), input functions
(a saturated AIF reconstructed), deconvolution, the diffusion core registered to the DSC grid,
lesions and profiles, optional normalisation to the template, and the datasink.

The methods paragraph of this workflow, stating the values a run used, is generated from its
parameters by :func:`strokeperf.reports.methods.dsc_methods` (the report, the README excerpt and the
sidecars use it); keep that function in step when a step here changes."""

from __future__ import annotations

from fileformats.generic import File
from pydra.compose import workflow

from strokeperf.interfaces.dsc import (DiffusionCore, DSCConcentration, DSCLesions, LoadDiffusion,
                                       LoadDSC, MRInputFunctions, MRMasks)
from strokeperf.interfaces.registration import CoregisterDiffusion, MotionCorrect
from strokeperf.workflows.common import add_deconvolution, add_outputs


@workflow.define(outputs=["volumes"])
def DSCSession(session: dict, output_dir: str, run_id: str, config: dict) -> File:
    """One DSC-MRI session (with its DWI/ADC) from the raw series to derivatives in OUTPUT_DIR
    (see module docstring)."""
    load = workflow.add(LoadDSC(session=session, frame_interval=config["frame_interval"]))
    motion = workflow.add(MotionCorrect(session=session, series_file=load.dsc_file,
                                        frame_times=load.frame_times,
                                        enabled=config["motion_correction"]))
    masks = workflow.add(MRMasks(session=session, dsc_file=motion.corrected,
                                 frame_times=motion.frame_times, echo_time=load.echo_time))
    conc = workflow.add(DSCConcentration(session=session, dsc_file=motion.corrected,
                                         frame_times=motion.frame_times, echo_time=load.echo_time,
                                         bolus=masks.bolus,
                                         vessel_search_mask=masks.vessel_search_mask,
                                         brain_mask=masks.brain_mask, csf_mask=masks.csf_mask,
                                         leakage_correction=config["leakage_correction"],
                                         denoise_fwhm_mm=config["denoise_fwhm_mm"]))
    inputs = workflow.add(MRInputFunctions(session=session, concentration_file=conc.concentration,
                                           dsc_file=motion.corrected,
                                           frame_times=motion.frame_times,
                                           echo_time=load.echo_time, bolus=masks.bolus,
                                           vessel_search_mask=masks.vessel_search_mask,
                                           tissue_concentration_file=conc.tissue_concentration,
                                           brain_mask=masks.brain_mask))
    maps = add_deconvolution(session, config, conc, masks, inputs, motion)
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
    sink = add_outputs(session, output_dir, run_id, config, reference_image=masks.s0,
                       masks=masks, inputs=inputs, maps=maps, lesion=lesion, motion=motion,
                       diffusion=core.diffusion)
    return sink.volumes
