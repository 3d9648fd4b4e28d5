"""pydra task of the optional spatial normalisation: a session's lesion masks to template space
(:func:`strokeperf.registration.template.normalise_to_template`). Paths in, stage functions, paths
out.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from fileformats.generic import File
from pydra.compose import python

from strokeperf.bids.derivatives import LESION_LABELS, MASK_LABELS, TEMPLATE_SPACE
from strokeperf.interfaces.base import load_array, load_mask, records_failure, save_array
from strokeperf.lesion_frequency import SIDE_LABEL, template_side
from strokeperf.registration import template

#: Work-file stem of each lesion mask (``core_mask.nii``, ``tmax6_mask.nii``) -> its label.
LABEL_OF_STEM = {stem: label for stem, label in MASK_LABELS.items() if label in LESION_LABELS}


@records_failure
def normalise_session(session: dict, reference_image: File, brain_mask: File,
                      lesion_maps: list[File], enabled: bool = False) -> dict:
    """Register the session's reference image to the template and warp its lesion masks there.

    ``reference_image`` is the DSC pre-contrast mean (S0) or the motion-corrected CTP series, whose
    temporal median (the image the CT brain mask was drawn on) is used. ``enabled`` False returns
    ``{"enabled": False}`` without work: normalisation is an option. A registration that fails
    returns ``{"enabled": True, "failed": message}``: the session's perfusion results stand, the
    datasink writes no template outputs and raises the ``normalisation_failed`` QC flag.

    Returns a JSON-able record: the ANTs transform files (``affine_file``, ``warp_file``,
    ``inverse_warp_file``), template-space masks per label (``masks``), the template hemisphere of
    the Tmax > 6 s lesion (``affected_side``), the Dice overlap of the warped brain mask with the
    template's (``brain_dice``, a registration quality figure) and ``seconds``.
    """
    if not enabled:
        return {"enabled": False}
    image, affine = load_array(reference_image)
    if image.ndim == 4:
        image = np.median(image, axis=3)
    brain = load_mask(brain_mask)
    started = time.perf_counter()
    try:
        transforms, _ = template.normalise_to_template(image, affine, brain,
                                                       out_dir=Path.cwd() / "template")
    except Exception as exc:  # noqa: BLE001 - an optional group-analysis step must not fail the session
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        return {"enabled": True, "failed": f"normalisation to the template failed: {message}"}
    t_affine = transforms.template_affine
    masks = {}
    for path in lesion_maps:
        label = LABEL_OF_STEM.get(Path(path).name.split(".")[0])
        if label is not None:
            warped = template.warp_mask_to_template(load_mask(path), affine, transforms)
            masks[label] = str(save_array(f"template_{label}_mask.nii", warped, t_affine, np.uint8))
    _, template_brain, _ = template.load_template()
    warped_brain = template.warp_mask_to_template(brain, affine, transforms)
    side = template_side(load_mask(masks[SIDE_LABEL]), t_affine) if SIDE_LABEL in masks else None
    return {
        "enabled": True,
        "space": TEMPLATE_SPACE,
        "affine_file": transforms.affine_file,
        "warp_file": transforms.warp_file,
        "inverse_warp_file": transforms.inverse_warp_file,
        "masks": masks,
        "affected_side": side,
        "brain_dice": round(template.dice(warped_brain, template_brain), 4),
        "seconds": time.perf_counter() - started,
    }


NormaliseSession = python.define(normalise_session, outputs=["normalisation"])
