"""The perfusion series of a session (CT perfusion or DSC-MRI), read once with validated shape,
timing and (DSC) echo time: :func:`load_perfusion`."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from strokeperf.bids.discovery import Session
from strokeperf.bids.images import check_finite, image_geometry, open_image, read_image_data
from strokeperf.bids.sidecars import json_number, load_sidecar, read_frame_times, timing_source
from strokeperf.errors import InputError

logger = logging.getLogger(__name__)

#: Fewest frames a perfusion series may have. Deconvolution needs a pre-contrast baseline (at least
#: 3-5 frames to estimate the signal before arrival) and the first pass of the bolus (about 10-15 s,
#: i.e. 5 or more frames at the usual 1-3 s sampling); with fewer than 10 frames one of the two is
#: necessarily missing. Clinical CTP and DSC protocols acquire 20-80 frames.
MIN_FRAMES = 10

#: Largest plausible DSC echo time in seconds. Gradient-echo DSC uses TE of about 20-50 ms and
#: spin-echo DSC 60-110 ms; a value above 0.2 is almost always milliseconds written by mistake.
MAX_ECHO_TIME_S = 0.2


@dataclass(frozen=True)
class PerfusionSeries:
    """A validated perfusion series.

    data : (X, Y, Z, T) float32 -- signal (HU for CT, magnitude for DSC), all finite.
    affine : (4, 4) float64 -- voxel to scanner (RAS+ mm) transform.
    voxel_size_mm : (3,) float64.
    frame_times : (T,) float64 -- frame onsets in s, strictly increasing.
    echo_time_s : float or None -- DSC echo time in s; ``None`` for CT.
    timing_source : "VolumeTiming", "RepetitionTime" or "--frame-interval".
    metadata : the merged sidecar (empty without one).
    """

    data: np.ndarray
    affine: np.ndarray
    voxel_size_mm: np.ndarray
    frame_times: np.ndarray
    echo_time_s: float | None
    source: Path
    timing_source: str
    metadata: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[3])


def _check_4d(shape: tuple, path: Path, what: str) -> None:
    if len(shape) != 4:
        raise InputError(path, f"is {len(shape)}D {shape}; {what} must be 4D (x, y, z, time)")
    if shape[3] == 1:
        raise InputError(path, f"is 4D with a single frame {shape}; {what} must be a time series")


def _echo_time(sidecar: dict, origin: dict, fallback: Path) -> float:
    where = origin.get("EchoTime", fallback)
    if "EchoTime" not in sidecar:
        raise InputError(where, "DSC needs EchoTime (s) in the sidecar; it is missing")
    te = json_number(sidecar["EchoTime"])
    if te is None:
        raise InputError(where, f"EchoTime must be a single number of seconds, got "
                                f"{sidecar['EchoTime']!r}")
    if not (math.isfinite(te) and 0 < te <= MAX_ECHO_TIME_S):
        hint = f" (a value of {te:g} looks like milliseconds: {te:g} ms is {te / 1000:g} s)" \
            if te > MAX_ECHO_TIME_S else ""
        raise InputError(where, f"EchoTime {te:g} is outside (0, {MAX_ECHO_TIME_S:g}] s; EchoTime "
                                f"must be in seconds{hint}")
    return te


def load_perfusion(session: Session, frame_interval=None) -> PerfusionSeries:
    """Read and validate the perfusion series of ``session``.

    The image must be a 4D NIfTI with at least :data:`MIN_FRAMES` frames and only finite values;
    timing comes from the sidecar (:func:`~strokeperf.bids.sidecars.read_frame_times`) or
    ``frame_interval`` (s). DSC also needs ``EchoTime`` in seconds. The data are read once,
    straight into float32.

    Raises
    ------
    MissingInputError
        The image (or a sidecar) does not exist or cannot be opened.
    InputError
        Any other problem, naming the image or sidecar at fault.
    """
    path = session.perfusion_file
    img = open_image(path)
    shape = tuple(int(n) for n in img.shape)
    _check_4d(shape, path, "a perfusion series")
    if shape[3] < MIN_FRAMES:
        raise InputError(path, f"has {shape[3]} frames; at least {MIN_FRAMES} are needed to hold a "
                               f"pre-contrast baseline and the bolus")
    sidecar, origin = load_sidecar(session)
    timing_file = origin.get("VolumeTiming") or origin.get("RepetitionTime") \
        or session.sidecar_file or path
    frame_times = read_frame_times(sidecar, shape[3], timing_file, frame_interval)
    echo_time = None
    if session.modality == "dsc":
        echo_time = _echo_time(sidecar, origin, session.sidecar_file or path)
    affine, zooms = image_geometry(img, path)
    _warn_header_step(img, frame_times, path)
    data = read_image_data(img, path)
    check_finite(data, path)
    return PerfusionSeries(data=data, affine=affine, voxel_size_mm=zooms, frame_times=frame_times,
                           echo_time_s=echo_time, source=path,
                           timing_source=timing_source(sidecar), metadata=sidecar)


def _warn_header_step(img, frame_times: np.ndarray, path: Path) -> None:
    """Log when the NIfTI time step disagrees with the sidecar timing (the sidecar is used)."""
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or frame_times.size < 2:
        return
    step = float(zooms[3])
    unit = img.header.get_xyzt_units()[1]
    step *= {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    median = float(np.median(np.diff(frame_times)))
    if step > 0 and not math.isclose(step, median, rel_tol=0.01):
        logger.info("%s: NIfTI header time step %g s differs from the sidecar timing (median "
                    "%g s); the sidecar timing is used", path, step, median)
