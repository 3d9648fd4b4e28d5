"""Steps that the CTP and DSC session workflows share: deconvolution, spatial normalisation and the
datasink. Each helper adds its tasks to the workflow under construction and returns the last one."""

from __future__ import annotations

from pydra.compose import workflow

from strokeperf.interfaces.perfusion import Deconvolve
from strokeperf.interfaces.derivatives import WriteDerivatives
from strokeperf.interfaces.normalisation import NormaliseSession


def add_deconvolution(session: dict, config: dict, conc, masks, inputs, motion):
    """Perfusion maps from the smoothed concentration with the scaled AIF (``config`` names the
    method); the unsmoothed concentration feeds the parametric fit's neighbourhood prior."""
    return workflow.add(Deconvolve(session=session, concentration_file=conc.tissue_concentration,
                                   brain_mask=masks.brain_mask,
                                   input_functions_file=inputs.input_functions,
                                   frame_times=motion.frame_times, method=config["deconvolution"],
                                   options=config["deconvolution_options"],
                                   unsmoothed_concentration_file=conc.concentration))


def add_outputs(session: dict, output_dir: str, run_id: str, config: dict, *, reference_image,
                masks, inputs, maps, lesion, motion, diffusion=None):
    """Optional normalisation to the template (``config["normalise"]``), then the datasink that
    writes the session's derivatives, report and volumes row into OUTPUT_DIR (``diffusion``: the
    DSC path's diffusion record)."""
    norm = workflow.add(NormaliseSession(session=session, reference_image=reference_image,
                                         brain_mask=masks.brain_mask,
                                         lesion_maps=lesion.lesion_maps,
                                         enabled=config["normalise"]))
    return workflow.add(WriteDerivatives(
        session=session, output_dir=output_dir, run_id=run_id, maps=maps.perfusion_maps,
        lesion_maps=lesion.lesion_maps, brain_mask=masks.brain_mask, csf_mask=masks.csf_mask,
        aif_mask=inputs.aif_mask, vof_mask=inputs.vof_mask, input_functions=inputs.input_functions,
        results=lesion.results, parameters=config, motion=motion.motion,
        normalisation=norm.normalisation, diffusion=diffusion))
