"""Lesion-frequency maps of a cohort in template space (group level, with ``--normalise``).

With spatial normalisation on, every session's core and Tmax masks are warped to the ICBM152 2009a
template that nilearn ships (asymmetric, release a: TemplateFlow's ``MNI152NLin2009aAsym``, 2 mm;
Fonov et al. 2011, NeuroImage 54:313). The group step averages them voxel by voxel, per modality and
lesion label: the value of a voxel is the fraction of the cohort's successful, normalised sessions
whose lesion covers it, the lesion overlap map of lesion-mapping studies (Rorden & Karnath 2004, Nat
Rev Neurosci 5:813). The hemisphere of each session's Tmax > 6 s lesion is read in template space,
where the midline is the same for every session.

Naming (:mod:`strokeperf.bids.derivatives`; the group files sit beside ``group_perfusion.tsv``)::

    sub-P[/ses-S]/perf/<prefix>_space-MNI152NLin2009aAsym_res-2_desc-<mod><Label>_mask.nii.gz
    group_space-MNI152NLin2009aAsym_res-2_label-<Label>_desc-<mod>_probseg.nii.gz (+ .json)
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from strokeperf import io, lesions
from strokeperf.bids.derivatives import (FREQUENCY_GLOB, LESION_LABELS, TEMPLATE_SPACE,
                                         frequency_name, perf_dir, template_mask_name, tmax_label,
                                         volumes_name)

#: The label whose hemisphere is reported as the session's affected side (as in the group table).
SIDE_LABEL = tmax_label(lesions.HYPOPERFUSION_TMAX_S)


def lesion_frequency(masks) -> tuple[np.ndarray, int]:
    """Voxel-wise fraction of ``masks`` (an iterable of equally shaped boolean arrays) that are set.

    The masks are summed one at a time, so memory stays at two template volumes however large the
    cohort. Returns ``(fraction float32 in [0, 1], number of masks)``; ``(None, 0)`` without masks.
    """
    total, n = None, 0
    for mask in masks:
        m = np.asarray(mask, dtype=bool)
        if total is None:
            total = np.zeros(m.shape, dtype=np.int32)
        elif m.shape != total.shape:
            raise ValueError(f"lesion masks differ in shape: {m.shape} vs {total.shape}")
        total += m
        n += 1
    if total is None:
        return None, 0
    return (total / n).astype(np.float32), n


def template_side(mask: np.ndarray, template_affine: np.ndarray) -> str | None:
    """``"L"``/``"R"``: the template hemisphere holding most of a template-space lesion (None if
    empty). The template's midline is the MNI plane x = 0 (RAS: negative x is the left)."""
    return lesions.affected_side(mask, None, template_affine, midline_x=0.0)


def session_template_masks(output_dir, table: pd.DataFrame, modality: str,
                           label: str) -> list[Path]:
    """Template-space ``label`` masks of the table's successful ``modality`` series, in table order.

    Each mask is matched to its own series through its file prefix: it counts only when that
    series' volumes row (``<prefix>_desc-<mod>_volumes.tsv``) says ``ok``, so two acquisitions of a
    session are two entries and a series that failed in this run is left out. Series that were not
    normalised have no masks.
    """
    output_dir = Path(output_dir)
    rows = table[(table["modality"] == modality) & (table["status"] == "ok")]
    dirs = dict.fromkeys(perf_dir(output_dir, r["participant_id"], str(r["session_id"]))
                         for _, r in rows.iterrows())
    found = []
    marker = template_mask_name("", modality, label)       # the name after the series' prefix
    for perf in dirs:
        for path in sorted(perf.glob(f"*{marker}")):
            volumes = perf / volumes_name(path.name[: -len(marker)], modality)
            if volumes.is_file() and _status(volumes) == "ok":
                found.append(path)
    return found


def _status(volumes_tsv: Path) -> str:
    """The ``status`` of a one-row volumes TSV ("" when unreadable)."""
    try:
        row = pd.read_csv(volumes_tsv, sep="\t", dtype=str, keep_default_na=False)
        return str(row["status"].iloc[0])
    except (OSError, KeyError, IndexError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return ""


def write_frequency_maps(output_dir, table: pd.DataFrame) -> list[dict]:
    """Write the cohort's lesion-frequency maps (one per modality and label) into ``output_dir``.

    Returns one record per map for the cohort report: ``modality``, ``label``, ``path``, ``n``
    (sessions averaged) and ``sides`` (count of sessions per template hemisphere of their Tmax > 6 s
    lesion: ``L``, ``R``, ``none``). Maps of an earlier run that no longer have sessions are
    removed, so that the files present always describe the current table.
    """
    output_dir = Path(output_dir)
    records, written = [], set()
    for modality in sorted(table["modality"].unique()) if len(table) else []:
        side_files = session_template_masks(output_dir, table, modality, SIDE_LABEL)
        sides = {"L": 0, "R": 0, "none": 0}
        for path in side_files:
            img = nib.load(str(path))
            sides[template_side(np.asarray(img.dataobj) > 0, img.affine) or "none"] += 1
        for label in LESION_LABELS:
            files = session_template_masks(output_dir, table, modality, label)
            if not files:
                continue
            affine = nib.load(str(files[0])).affine
            fraction, n = lesion_frequency(np.asarray(nib.load(str(p)).dataobj) > 0 for p in files)
            path = output_dir / frequency_name(modality, label)
            io.write_nifti(path, fraction, affine)
            io.write_json(path.with_name(path.name.replace(".nii.gz", ".json")), {
                "Description": f"Fraction of the {n} normalised {modality} session(s) whose "
                               f"{label} lesion covers each template voxel",
                "Units": "fraction of sessions",
                "Space": TEMPLATE_SPACE,
                "Sessions": [str(p.relative_to(output_dir)) for p in files],
                "AffectedSide": sides,
            })
            written.add(path.name)
            records.append({"modality": modality, "label": label, "path": path, "n": n,
                            "sides": dict(sides)})
    for stale in output_dir.glob(FREQUENCY_GLOB):
        if stale.name.replace(".json", ".nii.gz") not in written:
            stale.unlink()
    return records

