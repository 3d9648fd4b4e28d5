"""Synthetic derivatives of one session, written in the datasink's layout, for the report tests.

The maps are small analytic volumes (an ellipsoidal brain with ventricles, a spherical lesion whose
Tmax falls and rCBF rises from its centre); masks, volumes, mismatch metrics and profiles are computed
from them with the pipeline's own stage functions, so the row is consistent with the images.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from strokeperf import io, lesions, profiles, tables
from strokeperf.bids.derivatives import MASK_LABELS
from strokeperf.kinetics import gamma_variate

MAP_UNITS = {"cbf": "mL/100g/min", "cbv": "mL/100g", "mtt": "s", "tmax": "s", "ttp": "s",
             "rcbf": "arbitrary", "rcbv": "arbitrary"}
PARAMETERS = {"deconvolution": "bcsvd", "denoise_fwhm_mm": 5.0, "core_rcbf": 0.3,
              "tmax_thresholds": [4.0, 6.0, 8.0, 10.0], "min_cluster_ml": 1.0, "vessel_cbv": 10.0}


def _affine(shape, voxel_size):
    """Radiological storage (x flipped, as CT often is), centred on the grid."""
    aff = np.diag([-voxel_size[0], voxel_size[1], voxel_size[2], 1.0])
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return aff


def session_dict(output_dir, subject, session, modality):
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    return {"subject": subject, "session": session, "modality": modality,
            "perfusion_file": f"/data/{prefix}_{modality}.nii.gz", "prefix": prefix}


def write_session(output_dir, subject="01", session=None, modality="ctp", shape=(40, 48, 12),
                  voxel_size=(3.0, 3.0, 6.0), lesion_radius_mm=30.0, age=70.0, nihss=14.0,
                  qc_flags=(), motion_fd=None, failed_error=None, with_tissue_curves=True):
    """Write one session's derivatives; return ``(session, row, parameters, images)``.

    ``lesion_radius_mm = 0`` gives a lesion-free brain; ``failed_error`` writes only the failed row.
    """
    output_dir = Path(output_dir)
    sess = session_dict(output_dir, subject, session, modality)
    prefix = sess.pop("prefix")
    perf = output_dir / f"sub-{subject}" / (f"ses-{session}" if session else "") / "perf"
    volumes_tsv = perf / f"{prefix}_desc-{modality}_volumes.tsv"
    ses_id = f"ses-{session}" if session else None
    if failed_error:
        row = tables.failed_row(f"sub-{subject}", ses_id, modality, failed_error)
        tables.write_row(volumes_tsv, row)
        return sess, row, PARAMETERS, {}

    affine = _affine(shape, voxel_size)
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = (ijk @ affine[:3, :3].T + affine[:3, 3]).reshape(*shape, 3)
    half = (np.asarray(shape) - 1) / 2.0 * np.asarray(voxel_size)
    radii = half * np.array([0.8, 0.8, 0.8])
    brain = (((xyz / radii) ** 2).sum(-1) <= 1.0)
    csf = (((xyz / (radii * np.array([0.15, 0.35, 0.3]))) ** 2).sum(-1) <= 1.0)
    centre = np.array([-0.45 * radii[0], 0.1 * radii[1], 0.0])  # patient's left (RAS x < 0)
    r = np.linalg.norm(xyz - centre, axis=-1)
    in_lesion = brain & (r < lesion_radius_mm) if lesion_radius_mm > 0 else np.zeros(shape, bool)
    frac = np.where(in_lesion, r / max(lesion_radius_mm, 1e-9), 1.0)
    rng = np.random.default_rng(zlib.crc32(f"{subject}/{session}/{modality}".encode()))
    tmax = np.where(in_lesion, 2.0 + 13.0 * (1.0 - frac), 1.5) + rng.normal(0, 0.2, shape)
    cbf = np.where(in_lesion, 55.0 * np.clip(frac, 0.08, 1.0), 55.0) * (1 + rng.normal(0, 0.05, shape))
    cbv = np.where(in_lesion, 4.0 * np.clip(frac + 0.3, 0.2, 1.0), 4.0)
    mtt = 60.0 * cbv / cbf
    ttp = 12.0 + tmax
    maps = {k: np.where(brain, v, 0.0).astype(np.float32)
            for k, v in dict(cbf=cbf, cbv=cbv, mtt=mtt, tmax=tmax, ttp=ttp).items()}

    tissue = lesions.tissue_mask(brain, csf)
    reference = lesions.reference_mask(tissue, maps["tmax"])
    maps["rcbf"] = lesions.relative_map(maps["cbf"], reference)
    maps["rcbv"] = lesions.relative_map(maps["cbv"], reference)
    tmax_masks = lesions.tmax_lesions(maps["tmax"], tissue, voxel_size)
    hyp = tmax_masks[6.0]
    core = lesions.ctp_core(maps["rcbf"], hyp, voxel_size, tissue=tissue)
    aif = np.zeros(shape, bool)
    aif[shape[0] // 2 - 2: shape[0] // 2 + 2, int(shape[1] * 0.7), shape[2] // 2] = True
    vof = np.zeros(shape, bool)
    vof[shape[0] // 2 - 1: shape[0] // 2 + 1, int(shape[1] * 0.12), shape[2] // 2 + 1] = True
    masks = {"brain_mask": brain, "csf_mask": csf, "tissue_mask": tissue, "core_mask": core,
             **{f"tmax{t:g}_mask": m for t, m in tmax_masks.items()}, "aif_mask": aif,
             "vof_mask": vof}

    images = {}
    common = {"Sources": [f"bids:raw:{Path(sess['perfusion_file']).name}"], "Parameters": PARAMETERS}
    for stem, data in maps.items():
        path = perf / f"{prefix}_desc-{modality}_{stem}.nii.gz"
        io.write_nifti(path, data, affine, dtype=np.float32)
        io.write_json(path.with_name(path.name.replace(".nii.gz", ".json")),
                      {"Units": MAP_UNITS[stem], **common})
        images[stem] = path
    for stem, data in masks.items():
        path = perf / f"{prefix}_desc-{modality}{MASK_LABELS[stem]}_mask.nii.gz"
        io.write_nifti(path, data, affine, dtype=np.uint8)
        io.write_json(path.with_name(path.name.replace(".nii.gz", ".json")), common)
        images[stem] = path

    t = np.arange(45) * 1.5
    aif_curve = gamma_variate(t, 8.0, 3.0, 1.5, peak=400.0)
    vof_curve = gamma_variate(t, 13.0, 3.0, 2.0, peak=500.0)
    curves = {"time": t, "aif": aif_curve, "aif_scaled": 1.2 * aif_curve, "vof": vof_curve}
    if with_tissue_curves:
        curves["tissue_normal"] = gamma_variate(t, 10.0, 3.0, 2.5, peak=25.0)
        curves["tissue_hypoperfused"] = (gamma_variate(t, 16.0, 3.0, 4.0, peak=12.0)
                                         if hyp.any() else np.full(t.size, np.nan))
    ts = perf / f"{prefix}_desc-{modality}_timeseries.tsv"
    io.write_text(ts, pd.DataFrame(curves).to_csv(sep="\t", index=False, na_rep="n/a",
                                                  lineterminator="\n", float_format="%.4g"))
    io.write_json(ts.with_suffix(".json"), {
        "time": {"Units": "s"}, "aif": {"Units": "HU" if modality == "ctp" else "1/s"},
        "partial_volume_factor": 1.2, "aif_quality": 0.97, "aif_arrival_s": 9.1,
        "aif_ttp_s": 12.0, "aif_fwhm_s": 6.4, "vof_complete": True})
    if motion_fd is not None:
        mot = perf / f"{prefix}_desc-{modality}_motion.tsv"
        io.write_text(mot, pd.DataFrame({"framewise_displacement": motion_fd}).to_csv(
            sep="\t", index=False, na_rep="n/a", lineterminator="\n"))

    vols = {f"tmax{thr:g}_ml": lesions.volume_ml(m, voxel_size) for thr, m in tmax_masks.items()}
    results = {"core_ml": lesions.volume_ml(core, voxel_size), "core_definition": "rCBF<0.30", **vols}
    results.update(profiles.mismatch_metrics(results["core_ml"], results["tmax6_ml"],
                                             results["tmax10_ml"]))
    results["cbv_index"] = lesions.cbv_index(maps["rcbv"], hyp)
    results.update(profiles.evaluate_profiles(results["core_ml"], results["tmax6_ml"],
                                              results["tmax10_ml"], age=age, nihss=nihss))
    results["affected_side"] = lesions.affected_side(hyp, brain, affine)
    row = tables.session_row(f"sub-{subject}", ses_id, modality, status="ok",
                             qc_flags=";".join(qc_flags), **results)
    io.write_json(volumes_tsv.with_suffix(".json"), {"Parameters": PARAMETERS})
    tables.write_row(volumes_tsv, row)
    return sess, row, PARAMETERS, images
