"""pydra tasks shared by the perfusion workflows: motion correction and DWI-to-perfusion
co-registration (:mod:`strokeperf.registration.motion`,
:mod:`strokeperf.registration.coregistration`). Paths in, stage functions, paths out.
"""

from __future__ import annotations

import time

import numpy as np
from fileformats.generic import File
from pydra.compose import python

from strokeperf.bids.perfusion import MIN_FRAMES
from strokeperf.errors import DataError, InputError
from strokeperf.interfaces.base import load_array, load_mask, records_failure, save_array
from strokeperf.registration import coregistration, motion, resampling

#: Columns of the rigid parameters in the motion record and the ``_motion.tsv`` derivative
#: (fMRIPrep's confound names): translations of the field-of-view centre (mm), rotations about it
#: (degrees), head displacement of each frame relative to the reference frame.
MOTION_PARAMETERS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def _per_frame(values, keep) -> list:
    """Values of the kept frames spread over every acquired frame (None for excluded ones)."""
    it = iter(np.asarray(values).tolist())
    return [next(it) if k else None for k in np.asarray(keep, dtype=bool)]


@records_failure
def motion_correct_series(session: dict, series_file: File, frame_times: list,
                          enabled: bool = True) -> tuple[File, list, dict]:
    """Rigid motion correction of a 4D perfusion series; frames flagged ``excluded`` are dropped,
    samples that resampling cannot restore are censored.

    :func:`motion.motion_correct`, then :func:`motion.censor_resampling_errors` on the
    kept frames: in a moved frame, voxels next to bone, scalp or CSF whose resampling error
    predicted for a static head exceeds one noise SD are replaced by interpolation in time between the voxel's
    clean frames. Returns the corrected series (only the kept frames), their onsets (s) and a
    JSON-able motion record (every frame: onset, framewise displacement, rigid parameters, excluded
    flag, censored voxels). Dropped frames leave irregular sampling, which the deconvolution methods
    accept (they work on the frame times). With ``enabled`` False the series passes through
    untouched and the record says so.
    """
    if not enabled:
        return series_file, list(frame_times), {"enabled": False}
    series, affine = load_array(series_file)
    started = time.perf_counter()
    try:
        mc = motion.motion_correct(series, affine)
    except DataError as exc:
        raise InputError(session["perfusion_file"], f"motion correction failed: {exc}") from exc
    del series
    keep = ~np.asarray(mc.excluded, dtype=bool)
    if keep.sum() < MIN_FRAMES:
        raise InputError(session["perfusion_file"],
                         f"{int((~keep).sum())} of {keep.size} frames moved more than half a slice "
                         f"through the plane; fewer than {MIN_FRAMES} usable frames remain")
    times = np.asarray(frame_times, dtype=float)
    corrected = mc.corrected if keep.all() else mc.corrected[..., keep]
    censoring = motion.censor_resampling_errors(corrected, mc.transforms[keep], affine,
                                                times[keep])
    seconds = time.perf_counter() - started
    path = save_array("motion_corrected.nii", corrected, affine)
    record = {
        "enabled": True,
        "frame_times_s": times.tolist(),
        "framewise_displacement": np.asarray(mc.fd, dtype=float).tolist(),
        "params": {name: np.asarray(mc.params)[:, i].tolist()
                   for i, name in enumerate(MOTION_PARAMETERS)},
        "excluded": (~keep).tolist(),
        "through_plane_mm": np.asarray(mc.through_plane_mm, dtype=float).tolist(),
        "reference_index": int(mc.reference_index),
        "censored_voxels": _per_frame(censoring.per_frame, keep),
        "noise_sd": float(censoring.noise_sd),
        "censor_threshold": float(censoring.threshold),
        "seconds": seconds,
    }
    return path, times[keep].tolist(), record


@records_failure
def coregister_diffusion(session: dict, diffusion: dict, fixed_image: File,
                         fixed_brain_mask: File) -> dict:
    """Rigid mutual-information registration of the diffusion image (mean b = 0, else the ADC map)
    to the perfusion baseline image.

    ``diffusion`` is the record of the diffusion loading task (``available`` False: returned as is).
    Adds ``transform``: 4x4 RAS mm, ``x_perfusion = T @ x_dwi`` (:func:`coregistration.coregister`).
    Without a DWI series (scanner ADC only) there is no DWI brain mask: the perfusion brain mask is
    carried back into DWI space (coverage >= 50 %, :func:`resampling.resample_mask`).
    """
    record = dict(diffusion)
    if not record.get("available"):
        return record
    image, dwi_affine = load_array(record["registration_image"])
    fixed, fixed_affine = load_array(fixed_image)
    try:
        transform, _ = coregistration.coregister(image, dwi_affine, fixed, fixed_affine)
    except DataError as exc:
        raise InputError(record["registration_source"], f"cannot be registered to the perfusion "
                                                        f"series: {exc}") from exc
    record["transform"] = np.asarray(transform, dtype=float).tolist()
    if record.get("brain_mask") is None:
        brain = resampling.resample_mask(load_mask(fixed_brain_mask), fixed_affine,
                                         np.linalg.inv(transform), image.shape, dwi_affine)
        record["brain_mask"] = str(save_array("dwi_brain_mask.nii", brain, dwi_affine, np.uint8))
    return record


CoregisterDiffusion = python.define(coregister_diffusion, outputs=["diffusion"])
MotionCorrect = python.define(motion_correct_series,
                              outputs=["corrected", "frame_times", "motion"])
