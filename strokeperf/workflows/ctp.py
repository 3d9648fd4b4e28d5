"""CT perfusion workflow of one session: load, motion correction, brain and CSF masks with the bolus
timing, concentration, arterial and venous input functions, deconvolution, lesions and profiles,
optional normalisation to the template, and the datasink.

The methods paragraph of this workflow, stating the values a run used, is generated from its
parameters by :func:`strokeperf.reports.methods.ctp_methods` (the report, the README excerpt and the
sidecars use it); keep that function in step when a step here changes."""

from __future__ import annotations

from fileformats.generic import File
from pydra.compose import workflow

from strokeperf.interfaces.ctp import (CTConcentration, CTMasks, CTPLesions, InputFunctions,
                                       LoadCTP)
from strokeperf.interfaces.registration import MotionCorrect
from strokeperf.workflows.common import add_deconvolution, add_outputs


@workflow.define(outputs=["volumes"])
def CTPSession(session: dict, output_dir: str, run_id: str, config: dict) -> File:
    """One CTP session from the raw series to derivatives in OUTPUT_DIR (see module docstring)."""
    load = workflow.add(LoadCTP(session=session, frame_interval=config["frame_interval"]))
    motion = workflow.add(MotionCorrect(session=session, series_file=load.ctp_file,
                                        frame_times=load.frame_times,
                                        enabled=config["motion_correction"]))
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
    maps = add_deconvolution(session, config, conc, masks, inputs, motion)
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
    sink = add_outputs(session, output_dir, run_id, config, reference_image=motion.corrected,
                       masks=masks, inputs=inputs, maps=maps, lesion=lesion, motion=motion)
    return sink.volumes
