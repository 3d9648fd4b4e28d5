"""Where strokeperf writes a session's outputs and what it calls them: the one copy of the BIDS
derivative paths, file names and mask labels (every file is listed in
:mod:`strokeperf.interfaces.derivatives`, the datasink that writes them)::

    OUTPUT_DIR/sub-P[/ses-S]/perf/<prefix>_desc-<mod>_<map>.nii.gz
    OUTPUT_DIR/sub-P[/ses-S]/perf/<prefix>_desc-<mod><Label>_mask.nii.gz
    OUTPUT_DIR/sub-P[/ses-S]/perf/<prefix>_desc-<mod>_volumes.tsv (and other tables)
    OUTPUT_DIR/sub-P[/ses-S]/perf/<prefix>_<space>_desc-<mod><Label>_mask.nii.gz
    OUTPUT_DIR/group_<space>_label-<Label>_desc-<mod>_probseg.nii.gz

``<prefix>`` is the perfusion input's name without suffix and extension (``sub-01_ses-acute``),
``<mod>`` is ``ctp`` or ``dsc``, ``<space>`` is ``space-MNI152NLin2009aAsym_res-2``. A session is
the JSON-able record of :meth:`strokeperf.bids.discovery.Session.to_dict`.
"""

from __future__ import annotations

from pathlib import Path

from strokeperf.bids.discovery import output_prefix
from strokeperf.lesions import TMAX_THRESHOLDS_S

#: TemplateFlow identifier of nilearn's ICBM152 2009a template (asymmetric, release a; Fonov et al.
#: 2011, NeuroImage 54:313), and the resolution of the template-space outputs (mm).
TEMPLATE_SPACE = "MNI152NLin2009aAsym"
TEMPLATE_RESOLUTION_MM = 2
_TEMPLATE_ENTITIES = f"space-{TEMPLATE_SPACE}_res-{TEMPLATE_RESOLUTION_MM}"


def tmax_label(threshold_s: float) -> str:
    """Mask label of the tissue with Tmax above ``threshold_s`` seconds.

    >>> tmax_label(6.0)
    'Tmax6'
    """
    return f"Tmax{threshold_s:g}"


#: Lesion labels: the ischemic core and the tissue above each default Tmax threshold
#: (:data:`strokeperf.lesions.TMAX_THRESHOLDS_S`); these are warped to the template with
#: ``--normalise`` and mapped at group level.
LESION_LABELS = ("Core", *(tmax_label(t) for t in TMAX_THRESHOLDS_S))
#: Label of every mask a session writes, by the stem of its work file (``tmax6_mask.nii`` ->
#: ``Tmax6``): brain, CSF, tissue, the lesions, and the voxels of the arterial input and venous
#: output functions.
MASK_LABELS = {f"{label.lower()}_mask": label
               for label in ("Brain", "CSF", "Tissue", *LESION_LABELS, "AIF", "VOF")}


def session_ids(session: dict) -> tuple[str, str | None]:
    """``("sub-<label>", "ses-<label>")`` of a session record (None for a dataset without
    sessions)."""
    return (f"sub-{session['subject']}",
            f"ses-{session['session']}" if session.get("session") else None)


def perf_dir(output_dir: str | Path, participant_id: str, session_id: str | None = None) -> Path:
    """``OUTPUT_DIR/sub-P[/ses-S]/perf`` of ``participant_id`` (``sub-<label>``) and ``session_id``
    (``ses-<label>``; None or ``n/a`` for a dataset without sessions, as in the group table)."""
    out = Path(output_dir) / participant_id
    if session_id and session_id != "n/a":
        out /= session_id
    return out / "perf"


def session_dir(output_dir: str | Path, session: dict) -> Path:
    """``OUTPUT_DIR/sub-P[/ses-S]/perf``: the folder of a session's derivatives."""
    return perf_dir(output_dir, *session_ids(session))


def prefix_of(session: dict) -> str:
    """The file-name prefix of a session's derivatives (see :func:`~.discovery.output_prefix`)."""
    return output_prefix(session["perfusion_file"])


def derivative_name(prefix: str, modality: str, suffix: str) -> str:
    """File name of a session's map or table: ``suffix`` with its extension, e.g.
    ``derivative_name("sub-01", "ctp", "timeseries.tsv")`` is ``sub-01_desc-ctp_timeseries.tsv``."""
    return f"{prefix}_desc-{modality}_{suffix}"


def map_name(prefix: str, modality: str, suffix: str) -> str:
    """File name of a session's map, e.g. ``sub-01_desc-ctp_tmax.nii.gz`` (``suffix`` ``tmax``)."""
    return derivative_name(prefix, modality, f"{suffix}.nii.gz")


def mask_name(prefix: str, modality: str, label: str) -> str:
    """File name of a session's mask, e.g. ``sub-01_desc-ctpTmax6_mask.nii.gz``."""
    return f"{prefix}_desc-{modality}{label}_mask.nii.gz"


def volumes_name(prefix: str, modality: str) -> str:
    """File name of a session's one-row volumes TSV (its group-table row)."""
    return derivative_name(prefix, modality, "volumes.tsv")


def volumes_path(output_dir: str | Path, session: dict) -> Path:
    """Where a session's one-row volumes TSV lives."""
    return session_dir(output_dir, session) / volumes_name(prefix_of(session), session["modality"])


def aif_mask_path(output_dir: str | Path, session: dict) -> Path:
    """``OUTPUT_DIR/sub-P[/ses-S]/perf/<prefix>_desc-<mod>AIF_mask.nii.gz``: the session's AIF
    mask, where the datasink writes it and ``--aif-mask-dir`` looks for it."""
    return session_dir(output_dir, session) / mask_name(prefix_of(session), session["modality"],
                                                        MASK_LABELS["aif_mask"])


def template_mask_name(prefix: str, modality: str, label: str) -> str:
    """File name of a session's lesion mask in template space."""
    return f"{prefix}_{_TEMPLATE_ENTITIES}_desc-{modality}{label}_mask.nii.gz"


def frequency_name(modality: str, label: str) -> str:
    """File name of the cohort's lesion-frequency map of one modality and label."""
    return f"group_{_TEMPLATE_ENTITIES}_label-{label}_desc-{modality}_probseg.nii.gz"


#: Glob pattern of every lesion-frequency map and sidecar in OUTPUT_DIR.
FREQUENCY_GLOB = f"group_{_TEMPLATE_ENTITIES}_label-*_probseg.*"
