"""The datasink: copy a session's results into OUTPUT_DIR as BIDS derivatives, atomically.

Naming (BIDS derivatives; the ``desc`` entity carries the modality and, for masks, what is masked)::

    sub-P[/ses-S]/perf/<prefix>_desc-<mod>_<map>.nii.gz           cbf cbv mtt tmax ttp rcbf rcbv
    sub-P[/ses-S]/perf/<prefix>_desc-<mod><Label>_mask.nii.gz     Brain CSF Tissue Core Tmax4..Tmax10
                                                                    AIF VOF
    sub-P[/ses-S]/perf/<prefix>_desc-<mod>_timeseries.tsv         frame times, AIF, scaled AIF, VOF
    sub-P[/ses-S]/perf/<prefix>_desc-<mod>_volumes.tsv (+ .json)  the session's group-table row

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

from strokeperf import __version__, io, qc, report, tables
from strokeperf.interfaces.base import records_failure
from strokeperf.profiles import profile_rules

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
MASKS = {
    "brain_mask": ("Brain", "Brain (parenchyma and CSF) without skull"),
    "csf_mask": ("CSF", "Cerebrospinal fluid, excluded from lesions"),
    "tissue_mask": ("Tissue", "Brain tissue: brain without CSF and large vessels"),
    "core_mask": ("Core", "Ischemic core"),
    "tmax4_mask": ("Tmax4", "Tissue with Tmax > 4 s"),
    "tmax6_mask": ("Tmax6", "Tissue with Tmax > 6 s (hypoperfusion)"),
    "tmax8_mask": ("Tmax8", "Tissue with Tmax > 8 s"),
    "tmax10_mask": ("Tmax10", "Tissue with Tmax > 10 s"),
    "aif_mask": ("AIF", "Voxels averaged into the arterial input function"),
    "vof_mask": ("VOF", "Voxels averaged into the venous output function"),
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


def session_dir(output_dir: str | Path, session: dict) -> Path:
    """``OUTPUT_DIR/sub-P[/ses-S]/perf``."""
    out = Path(output_dir) / f"sub-{session['subject']}"
    if session.get("session"):
        out /= f"ses-{session['session']}"
    return out / "perf"


def prefix_of(session: dict) -> str:
    """The input file's BIDS prefix (name without suffix and extension)."""
    name = Path(session["perfusion_file"]).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name.rsplit("_", 1)[0]


def volumes_path(output_dir: str | Path, session: dict) -> Path:
    """Where a session's one-row volumes TSV lives."""
    return session_dir(output_dir, session) / f"{prefix_of(session)}_desc-{session['modality']}_volumes.tsv"


def _write_image(src: Path, dst: Path, dtype, sidecar: dict) -> Path:
    img = nib.load(str(src))
    io.write_nifti(dst, np.asarray(img.dataobj).astype(dtype), img.affine)
    io.write_json(dst.with_name(dst.name.replace(".nii.gz", ".json")), sidecar)
    return dst


@records_failure
def write_derivatives(session: dict, output_dir: str, run_id: str, maps: list[File],
                      lesion_maps: list[File], brain_mask: File, csf_mask: File, aif_mask: File,
                      vof_mask: File, input_functions: File, results: dict,
                      parameters: dict) -> File:
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
            dst = out_dir / f"{prefix}_desc-{mod}_{suffix}.nii.gz"
            sidecar, dtype = {"Description": description, "Units": units, **common}, np.float32
        else:
            label, description = MASKS[stem]
            dst = out_dir / f"{prefix}_desc-{mod}{label}_mask.nii.gz"
            sidecar = {"Description": description, "Type": "Brain" if label == "Brain" else "ROI",
                       **common}
            dtype = np.uint8
        written[stem] = _write_image(Path(path), dst, dtype, sidecar)
    record = json.loads(Path(input_functions).read_text())
    tissue = results.get("curves", {})
    curves = pd.DataFrame({"time": record["frame_times_s"], "aif": record["aif"],
                           "aif_scaled": record["aif_scaled"], "vof": record["vof"] or "n/a",
                           "tissue_normal": tissue.get("tissue_normal") or "n/a",
                           "tissue_hypoperfused": tissue.get("tissue_hypoperfused") or "n/a"})
    ts = out_dir / f"{prefix}_desc-{mod}_timeseries.tsv"
    io.write_text(ts, curves.to_csv(sep="\t", index=False, lineterminator="\n", float_format="%.4g"))
    io.write_json(ts.with_suffix(".json"), {
        "time": {"Description": "Frame onset", "Units": "s"},
        "aif": {"Description": "Arterial input function, mean of the AIF voxels",
                "Units": "HU" if mod == "ctp" else "1/s"},
        "aif_scaled": {"Description": "AIF scaled to the VOF area (partial-volume correction), "
                                      "used for deconvolution"},
        "vof": {"Description": "Venous output function"},
        "tissue_normal": {"Description": "Mean concentration of reference tissue (Tmax < 4 s)"},
        "tissue_hypoperfused": {"Description": "Mean concentration of tissue with Tmax > 6 s"},
        **{k: record[k] for k in ("partial_volume_factor", "aif_quality", "aif_arrival_s",
                                  "aif_ttp_s", "aif_fwhm_s", "vof_complete")},
        "Sources": sources,
    })
    row = tables.session_row(f"sub-{session['subject']}",
                             f"ses-{session['session']}" if session.get("session") else None,
                             mod, status="ok", qc_flags=";".join(results.get("qc_flags", [])),
                             **{k: v for k, v in results.items() if k in tables.GROUP_COLUMNS
                                and k != "qc_flags"})
    volumes = volumes_path(output_dir, session)
    io.write_json(volumes.with_suffix(".json"), {
        "Description": "Volumes, mismatch metrics and trial-eligibility profiles of this session",
        "Sources": sources, "Parameters": parameters, "ProfileRules": profile_rules(),
        "AIFQuality": record["aif_quality"],
        "QCFlags": {flag: qc.QC_FLAG_RULES[flag] for flag in results.get("qc_flags", [])},
    })
    tables.write_row(volumes, row)
    # The report reads every modality's volumes row of this session from OUTPUT_DIR.
    report.write_participant_report(output_dir, session, row, parameters, written)
    done = Path(session["done_file"])
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(run_id)
    return volumes


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

