"""The datasink: copy a session's results into OUTPUT_DIR as BIDS derivatives, atomically.

Naming (BIDS derivatives; the ``desc`` entity carries the modality and, for masks, what is masked)::

    sub-P[/ses-S]/perf/<prefix>_desc-<mod>_<map>.nii.gz           cbf cbv mtt tmax ttp rcbf rcbv
    sub-P[/ses-S]/perf/<prefix>_desc-<mod><Label>_mask.nii.gz     Brain CSF Tissue Core Tmax4..Tmax10
                                                                    AIF VOF
    sub-P[/ses-S]/perf/<prefix>_desc-<mod>_timeseries.tsv         frame times, AIF, scaled AIF, VOF
    sub-P[/ses-S]/perf/<prefix>_desc-<mod>_volumes.tsv (+ .json)  the session's group-table row
    sub-P[/ses-S]/perf/<prefix>_desc-<mod>_motion.tsv (+ .json)   per-frame FD and rigid parameters
                                                                    (unless motion correction is off)

DSC sessions with diffusion data also get (``space-dwi``: the DWI/ADC grid; without it: the DSC grid)::

    <prefix>_space-dwi_desc-dsc_adc.nii.gz, <prefix>_desc-dsc_adc.nii.gz        ADC, 1e-6 mm^2/s
    <prefix>_space-dwi_desc-dsc{Core,Brain}_mask.nii.gz                        core in DWI space
    <prefix>_from-dwi_to-dsc_mode-image_xfm.txt (+ .json)   4x4 RAS mm, x_dsc = M @ x_dwi

With ``--normalise`` (``<space>``: ``MNI152NLin2009aAsym``, nilearn's ICBM152 2009a)::

    <prefix>_space-<space>_res-2_desc-<mod>{Core,Tmax4..Tmax10}_mask.nii.gz    lesions in template space
    <prefix>_from-<mod>_to-<space>_mode-image_desc-affine_xfm.mat (+ .json)   ANTs affine
    <prefix>_from-<mod>_to-<space>_mode-image_desc-warp_xfm.nii.gz            SyN warp
    <prefix>_from-<space>_to-<mod>_mode-image_desc-warp_xfm.nii.gz            inverse SyN warp

``<prefix>`` is the input's name without suffix (``sub-01_ses-acute``), ``<mod>`` is ``ctp`` or
``dsc``. Every image has a JSON sidecar with ``Units``, ``Sources`` (BIDS URIs) and the parameters.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from fileformats.generic import File
from pydra.compose import python

from strokeperf import __version__, io, qc, tables
from strokeperf.bids.derivatives import (MASK_LABELS, TEMPLATE_SPACE, map_name, mask_name,
                                         prefix_of, session_dir, session_ids, template_mask_name,
                                         volumes_path)
from strokeperf.interfaces.base import records_failure
from strokeperf.interfaces.registration import MOTION_PARAMETERS
from strokeperf.profiles import profile_rules
from strokeperf.reports import write_participant_report
from strokeperf.reports.methods import (diffusion_registration_methods, motion_correction_methods,
                                        normalisation_methods)


#: Work-file stem -> (derivative suffix or mask label, Units, description).
MAPS = {
    "cbf": ("cbf", "mL/100g/min", "Cerebral blood flow"),
    "cbv": ("cbv", "mL/100g", "Cerebral blood volume"),
    "mtt": ("mtt", "s", "Mean transit time (CBV/CBF)"),
    "tmax": ("tmax", "s", "Time to maximum of the residue function"),
    "ttp": ("ttp", "s", "Time to peak of the tissue concentration curve from the first frame"),
    "rcbf": ("rcbf", "arbitrary", "CBF relative to the mean of tissue with Tmax < 4 s"),
    "rcbv": ("rcbv", "arbitrary", "CBV relative to the mean of tissue with Tmax < 4 s"),
}
#: Work-file stem of each mask -> description (its label: ``bids.derivatives.MASK_LABELS``).
MASKS = {
    "brain_mask": "Brain (parenchyma and CSF) without skull",
    "csf_mask": "Cerebrospinal fluid, excluded from lesions",
    "tissue_mask": "Brain tissue: brain without CSF and large vessels",
    "core_mask": "Ischemic core",
    "tmax4_mask": "Tissue with Tmax > 4 s",
    "tmax6_mask": "Tissue with Tmax > 6 s (hypoperfusion)",
    "tmax8_mask": "Tissue with Tmax > 8 s",
    "tmax10_mask": "Tissue with Tmax > 10 s",
    "aif_mask": "Voxels averaged into the arterial input function",
    "vof_mask": "Voxels averaged into the venous output function",
}


def bids_uri(path: str | Path, dataset_root: str | Path | None) -> str:
    """``bids:raw:<relative path>`` for a raw input, an absolute path if outside the dataset."""
    path = Path(path)
    if dataset_root:
        try:
            return f"bids:raw:{path.relative_to(dataset_root).as_posix()}"
        except ValueError:
            pass
    return str(path)


def _write_image(src: Path, dst: Path, dtype, sidecar: dict) -> Path:
    img = nib.load(str(src))
    io.write_nifti(dst, np.asarray(img.dataobj).astype(dtype), img.affine)
    io.write_json(dst.with_name(dst.name.replace(".nii.gz", ".json")), sidecar)
    return dst


@records_failure
def write_derivatives(session: dict, output_dir: str, run_id: str, maps: list[File],
                      lesion_maps: list[File], brain_mask: File, csf_mask: File, aif_mask: File,
                      vof_mask: File, input_functions: File, results: dict,
                      parameters: dict, motion: dict | None = None,
                      diffusion: dict | None = None, normalisation: dict | None = None) -> File:
    """Write one session's derivatives, its volumes row and its report into OUTPUT_DIR.

    ``run_id`` changes on every run so that this task always executes, refreshing OUTPUT_DIR from the
    cached upstream results (e.g. after OUTPUT_DIR was cleaned or a run was killed mid-cohort); it is
    written to ``session["done_file"]`` last, telling the command line that the session completed.
    """
    mod = session["modality"]
    out_dir = session_dir(output_dir, session)
    prefix = prefix_of(session)
    sources = [bids_uri(session["perfusion_file"], session.get("dataset_root"))]
    common = {"Sources": sources, "SkullStripped": True, "Parameters": parameters,
              "GeneratedBy": [{"Name": "strokeperf", "Version": __version__}]}
    written = {}
    for path in [*maps, *lesion_maps, brain_mask, csf_mask, aif_mask, vof_mask]:
        stem = Path(path).name.split(".")[0]
        if stem in MAPS:
            suffix, units, description = MAPS[stem]
            dst = out_dir / map_name(prefix, mod, suffix)
            sidecar, dtype = {"Description": description, "Units": units, **common}, np.float32
        else:
            label, description = MASK_LABELS[stem], MASKS[stem]
            dst = out_dir / mask_name(prefix, mod, label)
            sidecar = {"Description": description, "Type": "Brain" if label == "Brain" else "ROI",
                       **common}
            dtype = np.uint8
        written[stem] = _write_image(Path(path), dst, dtype, sidecar)
    if motion and motion.get("enabled"):
        _write_motion(out_dir / f"{prefix}_desc-{mod}_motion.tsv", motion, sources)
    core_method = None
    if diffusion and diffusion.get("available"):
        sources = sources + [bids_uri(p, session.get("dataset_root"))
                             for p in diffusion["sources"]]
        # Only perfusion-grid images go to the report; the DWI-space ones are written beside them.
        written["adc"] = _write_diffusion(out_dir, prefix, mod, diffusion,
                                          {**common, "Sources": sources})
        core_method = {
            "Definition": diffusion["core_definition"],
            "ADC": diffusion["adc_method"],
            "Space": "DWI grid (core_ml); carried to the DSC grid for display",
            "Registration": "rigid, Mattes mutual information (ANTs), "
                            + ("mean b=0" if diffusion.get("b0") else "ADC map")
                            + " to the DSC pre-contrast mean (S0)",
            "Mismatch": "tmax6_ml (DSC grid) - core_ml (DWI grid)",
        }
    # Template outputs of an earlier run must not outlive a run without them (group maps glob them).
    _remove_template_outputs(out_dir, prefix, mod)
    normalised = bool(normalisation and normalisation.get("enabled")
                      and not normalisation.get("failed"))
    if normalised:
        _write_normalisation(out_dir, prefix, mod, normalisation, common)
    elif normalisation and normalisation.get("failed"):
        results = {**results, "qc_flags": [*results.get("qc_flags", []), "normalisation_failed"]}
    record = json.loads(Path(input_functions).read_text())
    tissue = results.get("curves", {})
    curves = pd.DataFrame({"time": record["frame_times_s"], "aif": record["aif"],
                           "aif_scaled": record["aif_scaled"], "vof": record["vof"] or "n/a",
                           "tissue_normal": tissue.get("tissue_normal") or "n/a",
                           "tissue_hypoperfused": tissue.get("tissue_hypoperfused") or "n/a"})
    reconstruction = record.get("aif_reconstruction")
    if record.get("aif_measured") is not None:
        curves.insert(2, "aif_measured", record["aif_measured"])
    ts = out_dir / f"{prefix}_desc-{mod}_timeseries.tsv"
    io.write_text(ts, curves.to_csv(sep="\t", index=False, lineterminator="\n", float_format="%.4g"))
    io.write_json(ts.with_suffix(".json"), {
        "time": {"Description": "Frame onset", "Units": "s"},
        "aif": {"Description": "Arterial input function, mean of the AIF voxels (DSC with a "
                               "saturated arterial signal: its censored frames reconstructed, see "
                               "aif_measured and AIFReconstruction)",
                "Units": "HU" if mod == "ctp" else "1/s"},
        "aif_scaled": {"Description": "AIF scaled to the VOF area (partial-volume correction), "
                                      "used for deconvolution"},
        **({"aif_measured": {"Description": "Mean of the AIF voxels as measured: censored at the "
                                            "noise floor, so a lower bound in the censored frames; "
                                            "'aif' has those frames reconstructed"}}
           if "aif_measured" in curves else {}),
        "vof": {"Description": "Venous output function"},
        "tissue_normal": {"Description": "Mean concentration of reference tissue (Tmax < 4 s)"},
        "tissue_hypoperfused": {"Description": "Mean concentration of tissue with Tmax > 6 s"},
        **{k: record[k] for k in ("partial_volume_factor", "aif_quality", "aif_arrival_s",
                                  "aif_ttp_s", "aif_fwhm_s", "vof_complete")},
        "AIFSource": _aif_source(record),
        **({"AIFReconstruction": reconstruction} if reconstruction else {}),
        "Sources": sources,
    })
    row = tables.session_row(*session_ids(session), mod, status="ok",
                             qc_flags=";".join(results.get("qc_flags", [])),
                             **{k: v for k, v in results.items() if k in tables.GROUP_COLUMNS
                                and k != "qc_flags"})
    volumes = volumes_path(output_dir, session)
    io.write_json(volumes.with_suffix(".json"), {
        "Description": "Volumes, mismatch metrics and trial-eligibility profiles of this session",
        "Sources": sources, "Parameters": parameters, "ProfileRules": profile_rules(),
        "AIFQuality": record["aif_quality"],
        "AIFSource": _aif_source(record),
        **({"AIFReconstruction": reconstruction} if reconstruction else {}),
        "QCFlags": {flag: qc.ALL_QC_RULES[flag] for flag in results.get("qc_flags", [])},
        **({"CoreMethod": core_method} if core_method else {}),
        **({"MotionCorrection": {"FramesExcluded": int(sum(motion["excluded"])),
                                 "Seconds": round(float(motion["seconds"]), 2)}}
           if motion and motion.get("enabled") else {}),
        **({"Normalisation": {"Space": normalisation["space"],
                              "AffectedSide": normalisation["affected_side"] or "n/a",
                              "BrainDice": normalisation["brain_dice"],
                              "Seconds": round(float(normalisation["seconds"]), 2)}}
           if normalised else {}),
        **({"Normalisation": {"Failed": normalisation["failed"]}}
           if normalisation and normalisation.get("failed") else {}),
    })
    tables.write_row(volumes, row)
    # The report reads every modality's volumes row of this session from OUTPUT_DIR.
    write_participant_report(output_dir, session, row, parameters, written)
    done = Path(session["done_file"])
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(run_id)
    return volumes


def _aif_source(record: dict) -> str:
    """How the AIF was obtained: "automatic", or "mask: <file>" (``--aif-mask-dir``)."""
    source = record.get("aif_source") or {"type": "automatic"}
    return f"mask: {source['file']}" if source.get("type") == "mask" else "automatic"


def _write_motion(path: Path, motion: dict, sources: list) -> Path:
    """The per-frame motion table (every acquired frame, excluded ones flagged) and its sidecar."""
    table = pd.DataFrame({"time": motion["frame_times_s"],
                          "framewise_displacement": motion["framewise_displacement"],
                          **{k: motion["params"][k] for k in MOTION_PARAMETERS},
                          "excluded": ["true" if e else "false" for e in motion["excluded"]]})
    if "censored_voxels" in motion:
        table["censored_voxels"] = ["n/a" if c is None else str(c)
                                    for c in motion["censored_voxels"]]
    io.write_text(path, table.to_csv(sep="\t", index=False, lineterminator="\n",
                                     float_format="%.4g"))
    translation = "Head displacement of this frame from the reference frame along {} (RAS), at " \
                  "the centre of the field of view"
    rotation = "Head rotation of this frame from the reference frame about the {} axis (RAS), " \
               "about the centre of the field of view"
    return io.write_json(path.with_suffix(".json"), {
        "time": {"Description": "Frame onset", "Units": "s"},
        "framewise_displacement": {"Description": "Sum of absolute frame-to-frame changes of the "
                                                  "translations and of the rotations as arcs on a "
                                                  "50 mm sphere (Power et al. 2012)", "Units": "mm"},
        **{f"trans_{a}": {"Description": translation.format(a), "Units": "mm"} for a in "xyz"},
        **{f"rot_{a}": {"Description": rotation.format(a), "Units": "degrees"} for a in "xyz"},
        "excluded": {"Description": "Frame left out of the analysis: its mean through-plane "
                                    "displacement exceeded half the slice thickness",
                     "Levels": {"true": "excluded", "false": "used"}},
        **({"censored_voxels": {"Description": "Voxels of this frame whose motion-corrected value "
                                               "was replaced by linear interpolation in time: the "
                                               "resampling error predicted for a static head "
                                               "exceeded one noise SD (n/a: frame excluded)"}}
           if "censored_voxels" in motion else {}),
        "ReferenceFrame": motion["reference_index"],
        "Method": motion_correction_methods(),
        "Sources": sources,
    })


def _write_diffusion(out_dir: Path, prefix: str, mod: str, diffusion: dict,
                     common: dict) -> Path:
    """ADC (DWI grid and DSC grid), core and brain masks in DWI space, and the transform; returns
    the ADC on the DSC grid (for the report's overlay)."""
    adc_side = {"Description": "Apparent diffusion coefficient (" + diffusion["adc_method"] + ")",
                "Units": "1e-6 mm^2/s", **common}
    _write_image(Path(diffusion["adc"]), out_dir / f"{prefix}_space-dwi_desc-{mod}_adc.nii.gz",
                 np.float32, adc_side)
    _write_image(Path(diffusion["core_mask_dwi"]),
                 out_dir / f"{prefix}_space-dwi_desc-{mod}Core_mask.nii.gz", np.uint8,
                 {"Description": f"Ischemic core, {diffusion['core_definition']} (1e-6 mm^2/s) in "
                                 f"DWI space; core_ml is its volume", "Type": "ROI", **common})
    _write_image(Path(diffusion["brain_mask"]),
                 out_dir / f"{prefix}_space-dwi_desc-{mod}Brain_mask.nii.gz", np.uint8,
                 {"Description": "Brain in DWI space (bounds the core)", "Type": "Brain", **common})
    xfm = out_dir / f"{prefix}_from-dwi_to-{mod}_mode-image_xfm.txt"
    io.write_text(xfm, "\n".join(" ".join(f"{v:.9g}" for v in row)
                                  for row in diffusion["transform"]) + "\n")
    io.write_json(xfm.with_suffix(".json"), {
        "Description": "Rigid DWI-to-perfusion transform: 4x4 matrix on scanner world coordinates "
                       "(RAS+, mm); a DWI point x lies at M @ x in the perfusion scan",
        "FromSpace": "dwi", "ToSpace": mod, "Convention": "RAS+ world mm, x_to = M @ x_from",
        "Method": diffusion_registration_methods(),
        **common,
    })
    return _write_image(Path(diffusion["adc_perfusion"]), out_dir / f"{prefix}_desc-{mod}_adc.nii.gz",
                        np.float32, {**adc_side, "Resampled": "onto the DSC grid with the "
                                                              "DWI-to-DSC transform (linear)"})


def _remove_template_outputs(out_dir: Path, prefix: str, mod: str) -> None:
    """Delete the session's template-space masks and template transforms of this modality."""
    space = TEMPLATE_SPACE
    for pattern in (f"{prefix}_space-{space}_*desc-{mod}*", f"{prefix}_from-{mod}_to-{space}_*",
                    f"{prefix}_from-{space}_to-{mod}_*"):
        for path in out_dir.glob(pattern):
            path.unlink()


def _write_normalisation(out_dir: Path, prefix: str, mod: str, normalisation: dict,
                         common: dict) -> None:
    """Template-space lesion masks and the ANTs transforms between the session and the template."""
    space = normalisation["space"]
    for label, path in normalisation["masks"].items():
        _write_image(Path(path), out_dir / template_mask_name(prefix, mod, label),
                     np.uint8, {"Description": f"{MASKS[label.lower() + '_mask']}, warped to "
                                               f"the {space} template (coverage >= 50 %)",
                                "Type": "ROI", "Space": space, **common})
    to = f"{prefix}_from-{mod}_to-{space}_mode-image"
    back = f"{prefix}_from-{space}_to-{mod}_mode-image"
    affine_dst = out_dir / f"{to}_desc-affine_xfm.mat"
    io.copy_file(normalisation["affine_file"], affine_dst)
    io.copy_file(normalisation["warp_file"], out_dir / f"{to}_desc-warp_xfm.nii.gz")
    io.copy_file(normalisation["inverse_warp_file"], out_dir / f"{back}_desc-warp_xfm.nii.gz")
    io.write_json(affine_dst.with_suffix(".json"), {
        "Description": f"ANTs transforms between this session's perfusion grid and the {space} "
                      "template (nilearn's ICBM152 2009a, 2 mm): an affine (.mat) and a SyN "
                      "displacement field each way",
        "FromSpace": mod, "ToSpace": space,
        "Forward": f"antsApplyTransforms -r template -t {to}_desc-warp_xfm.nii.gz "
                   f"-t {to}_desc-affine_xfm.mat (subject image to template)",
        "Inverse": f"antsApplyTransforms -r subject -t [{to}_desc-affine_xfm.mat,1] "
                   f"-t {back}_desc-warp_xfm.nii.gz (template image to subject)",
        "Method": normalisation_methods(),
        "BrainDice": normalisation["brain_dice"],
        **common,
    })


WriteDerivatives = python.define(write_derivatives, outputs=["volumes"])


def write_dataset_description(output_dir: str | Path) -> Path:
    """The derivative dataset's ``dataset_description.json`` (BIDS)."""
    from strokeperf import CODE_URL

    return io.write_json(Path(output_dir) / "dataset_description.json", {
        "Name": "strokeperf perfusion derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "strokeperf", "Version": __version__, "CodeURL": CODE_URL}],
    })

