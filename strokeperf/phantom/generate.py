"""Generate one participant / session of the phantom as raw BIDS plus its ground truth."""

from __future__ import annotations

import json
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import acquisition, anatomy, bids, curves, lesion, truth
from .config import DEFAULT_DURATION_S, DEFAULT_FRAME_INTERVAL_S, MODALITIES, PhantomConfig

#: Age range (years) drawn for participants.tsv.
AGE_RANGE = (45, 90)
#: DWI b-vectors: b = 0 then three orthogonal directions.
DWI_BVECS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
#: Magnetic field strength (T) written in the MR sidecars.
FIELD_STRENGTH_T = 3.0
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
#: How to read the truth JSON (written into it).
CONVENTIONS = {
    "world": "RAS mm; the perfusion world is MNI152 2009a space, +x = right hemisphere",
    "dwi_to_perfusion_world": "4x4 homogeneous: x_perfusion = M @ x_dwi (both scanner-world mm)",
    "motion.matrix": "4x4 homogeneous: a head point at frame 0 (world mm) lies at M @ x in this frame; "
                     "frame(x) = frame0(inv(M) @ x); frame 0 is never displaced",
    "frame_times_s": "frame onsets in s from the first frame; AIF and VOF are sampled there",
    "aif, vof": "true arterial and venous concentration (delta-HU on CT, delta-R2* in 1/s on DSC)",
    "truth maps": "on each modality's grid; tmax, delay, mtt in s; cbf mL/100g/min; cbv mL/100g; "
                  "adc 1e-6 mm^2/s; masks uint8",
}


def _rng(seed: int, purpose: str) -> np.random.Generator:
    """Independent random stream per purpose, so options of one part do not change another."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode())]))


def _label(value: str | None, prefix: str) -> str | None:
    if value is None:
        return None
    value = str(value)
    value = value[len(prefix):] if value.startswith(prefix) else value
    if not _LABEL.match(value):
        raise ValueError(f"{prefix}label {value!r} must be alphanumeric (BIDS)")
    return value


@dataclass
class GridModel:
    """The patient's model evaluated on one grid (arrays of the grid's shape unless stated)."""

    grid: anatomy.Grid
    anat: dict
    artery: np.ndarray
    sinus: np.ndarray
    keep: np.ndarray  # fraction of the voxel not taken by vessels
    tissue: np.ndarray
    vessel: np.ndarray
    severity: np.ndarray
    active: np.ndarray | None = None  # flat indices of voxels with GM or WM (tissue kinetics)
    params: dict | None = None  # per active voxel: cbf, cbv, mtt, beta, delay, tmax


def patent_arteries(patient: lesion.Patient):
    """Artery centre-line points and radii, without the segments inside the lesion (occluded)."""
    points, radii, _ = anatomy.artery_centrelines()
    if patient.lesion is not None:
        patent = patient.lesion.severity(points) <= lesion.OCCLUSION_SEVERITY
        points, radii = points[patent], radii[patent]
    return points, radii


def model_on_grid(grid: anatomy.Grid, patient: lesion.Patient, config: PhantomConfig,
                  kinetics: bool = True) -> GridModel:
    """Anatomy, vessels, lesion severity and (optionally) per-voxel kinetics on ``grid``.

    Kinetic parameters of each voxel with GM or WM: CBF and CBV are partial-volume sums over GM and
    WM (scaled by the part of the voxel not taken by vessels); MTT = CBV / CBF x 60 s and the
    dispersion beta are quantised to 0.01 s (CBV follows the quantised MTT). Outside the lesion the
    delay is the normal delay field; inside, true Tmax (delay + peak offset of the effective
    residue) rises with severity from the voxel's normal Tmax to ``max_tmax``, and the
    delay is that target minus the voxel's own peak offset (never below 0).
    """
    anat = anatomy.sample_anatomy(grid)
    art_points, art_radii = patent_arteries(patient)
    artery = anatomy.tube_fraction(grid, art_points, art_radii)
    sinus = anatomy.tube_fraction(grid, *anatomy.sinus_centrelines())
    total = artery + sinus
    over = total > 1
    artery[over] /= total[over]
    sinus[over] /= total[over]
    keep = 1.0 - np.clip(total, 0.0, 1.0)
    tissue, vessel = truth.tissue_mask(anat["gm"], anat["wm"], artery + sinus)
    severity = patient.severity(grid.mni_points()).reshape(grid.shape)
    model = GridModel(grid, anat, artery, sinus, keep, tissue, vessel, severity)
    if not kinetics:
        return model
    gm, wm = (anat["gm"] * keep).ravel(), (anat["wm"] * keep).ravel()
    active = np.flatnonzero(gm + wm > 0)
    p = patient.tissue(grid.mni_points(active), gm[active], wm[active])
    cbf = p["cbf"]
    mtt = curves.quantize(np.where(cbf > 0, p["cbv"] / np.where(cbf > 0, cbf, 1.0) * 60.0, 0.0))
    cbv = cbf * mtt / 60.0
    beta = curves.quantize(p["beta"])
    offset = curves.effective_residue_peak(np.maximum(mtt, curves.PARAMETER_QUANTUM_S), beta, config.residue_shape)
    delay = p["normal_delay"]
    lesioned = p["severity"] > 0
    if patient.lesion is not None and lesioned.any():
        # Tmax rises linearly with severity from the voxel's normal Tmax to max_tmax; the delay is
        # what remains after the lesion's own peak offset (dispersion, longer MTT)
        sub = {k: v[lesioned] for k, v in p.items()}
        t_normal = lesion.normal_tmax(sub, config.residue_shape)
        target = lesion.target_tmax(t_normal, sub["severity"], patient.lesion.max_tmax_s,
                                    patient.lesion.tmax_exponent)
        delay = delay.copy()
        delay[lesioned] = np.maximum(target - offset[lesioned], 0.0)
    model.active = active
    model.params = {"cbf": cbf, "cbv": cbv, "mtt": mtt, "beta": beta, "delay": delay, "tmax": delay + offset}
    return model


def perfusion_grid(config: PhantomConfig, modality: str) -> anatomy.Grid:
    z_range = anatomy.slab_z_range(config.slab_mm) if config.slab_mm else None
    return anatomy.axial_grid(config.voxel_size(modality), z_range)


def dwi_to_perfusion(config: PhantomConfig) -> np.ndarray:
    """4x4 world-to-world matrix: a point at DWI world x lies at perfusion world ``M @ x``."""
    return anatomy.rigid_matrix(config.dwi_rotation_deg, config.dwi_shift_mm)


def dwi_grid(config: PhantomConfig) -> anatomy.Grid:
    return anatomy.axial_grid(config.voxel_size("dwi"), world_to_mni=dwi_to_perfusion(config))


def _full(model: GridModel, name: str) -> np.ndarray:
    out = np.zeros(int(np.prod(model.grid.shape)), dtype=np.float32)
    out[model.active] = model.params[name]
    return out.reshape(model.grid.shape)


def _timing(config: PhantomConfig, modality: str) -> np.ndarray:
    interval = config.frame_interval_s or DEFAULT_FRAME_INTERVAL_S[modality]
    duration = config.duration_s or DEFAULT_DURATION_S[modality]
    return acquisition.frame_times(interval, duration, config.irregular)


def _timing_sidecar(times: np.ndarray, irregular: bool) -> dict:
    if irregular:
        return {"VolumeTiming": [round(float(t), 6) for t in times]}
    return {"RepetitionTime": round(float(times[1] - times[0]), 6)}


def _dsc_scale(config: PhantomConfig, aif: curves.ArterialInput, target: float) -> float:
    """Factor that makes a normal pure-GM voxel (no delay, mean normal dispersion) peak at
    ``target`` delta-R2* (1/s) with this AIF."""
    t = curves.fine_time(60.0)
    beta = curves.quantize(config.dispersion_s + 0.5 * config.normal_dispersion_s)
    gm = curves.tissue_curves(aif(t), [lesion.GM_CBF_ML_100G_MIN], [lesion.GM_CBV_ML_100G], [0.0], [beta],
                              config.residue_shape, t)
    return target / float(gm.max())


def _truth_maps(model: GridModel, masks: dict, core: np.ndarray) -> dict:
    maps = {name: _full(model, name) for name in ("cbf", "cbv", "mtt", "tmax", "delay")}
    maps["rcbf"] = (maps["cbf"] / masks["ref_cbf"]).astype(np.float32)
    maps["tissue"] = model.tissue
    maps["csf"] = model.anat["csf"]
    maps["vessel"] = model.vessel
    maps["core"] = core
    for n in truth.TMAX_THRESHOLDS_S:
        maps[f"tmax{n}"] = masks[f"tmax{n}"]
    return maps


def _save_truth_maps(truth_dir: Path, stem: str, modality: str, maps: dict, affine, files: list) -> None:
    for name, data in maps.items():
        dtype = np.uint8 if data.dtype == bool else np.float32
        path = truth_dir / f"{stem}_mod-{modality}_{name}.nii.gz"
        files.append(bids.save_nifti(path, data, affine, dtype))


def _perfusion_series(modality: str, model: GridModel, config: PhantomConfig, times: np.ndarray):
    """4D series (float32, noise and motion included) and the truth record of a perfusion scan."""
    grid = model.grid
    aif = curves.ArterialInput.random(_rng(config.seed, f"{modality}-aif"), config.bolus_arrival_s,
                                      config.aif_peak_hu)
    draws = _rng(config.seed, f"{modality}-vessels")
    transit = config.venous_transit_s or draws.uniform(*curves.VENOUS_TRANSIT_RANGE_S)
    gm_peak = config.dsc_gm_peak_r2s or draws.uniform(15.0, 20.0)
    if modality == "dsc":
        aif = aif.scaled(_dsc_scale(config, aif, gm_peak))
    fine = curves.fine_time(times.max())
    aif_fine = aif(fine)
    vof_fine = curves.venous_output(aif_fine, curves.FINE_DT_S, transit) * config.venous_peak_boost
    aif_frames = aif(times)
    vof_frames = np.interp(times, fine, vof_fine)
    p = model.params
    conc = curves.tissue_curves(aif_fine, p["cbf"], p["cbv"], p["delay"], p["beta"], config.residue_shape, times)

    n_frames = len(times)
    flat_art = model.artery.ravel()
    flat_sin = model.sinus.ravel()
    art_idx, sin_idx = np.flatnonzero(flat_art), np.flatnonzero(flat_sin)
    if modality == "ctp":
        base = acquisition.ct_baseline_hu(model.anat, model.keep).astype(np.float32)
        series = np.repeat(base[..., None], n_frames, axis=3)
        flat = series.reshape(-1, n_frames)
        flat[model.active] += conc.astype(np.float32)
        flat[art_idx] += (flat_art[art_idx, None] * aif_frames).astype(np.float32)
        flat[sin_idx] += (flat_sin[sin_idx, None] * vof_frames).astype(np.float32)
        units = "delta-HU"
    else:
        te = config.echo_time_s
        s0 = (acquisition.dsc_baseline(model.anat) * model.keep).astype(np.float32)
        series = np.repeat(s0[..., None], n_frames, axis=3)
        flat = series.reshape(-1, n_frames)
        flat[model.active] *= np.exp(-te * conc).astype(np.float32)
        blood = acquisition.DSC_S0["blood"]
        flat[art_idx] += (flat_art[art_idx, None] * blood * np.exp(-te * aif_frames)).astype(np.float32)
        flat[sin_idx] += (flat_sin[sin_idx, None] * blood * np.exp(-te * vof_frames)).astype(np.float32)
        units = "delta-R2* (1/s)"

    lo, hi = anatomy.head_box_mm()
    matrices, motion = acquisition.motion(_rng(config.seed, f"{modality}-motion"), n_frames, config.motion_mm,
                                          config.motion_deg, config.motion_fraction, (lo + hi) / 2.0)
    noise_rng = _rng(config.seed, f"{modality}-noise")
    for k in range(n_frames):
        frame = acquisition.move_volume(series[..., k], grid.affine, matrices[k])
        if modality == "ctp":
            frame = frame + acquisition.gaussian_noise(noise_rng, frame.shape, config.noise_hu)
        else:
            sd = acquisition.GM_REFERENCE_S0 / config.snr
            frame = acquisition.rician(noise_rng, frame, sd)
        series[..., k] = frame
    record = {
        "frame_times_s": [round(float(t), 6) for t in times],
        "concentration_units": units,
        "aif": [round(float(v), 6) for v in aif_frames],
        "vof": [round(float(v), 6) for v in vof_frames],
        "aif_parameters": aif.to_dict(),
        "venous_transit_s": float(transit),
        "venous_shape": curves.VENOUS_SHAPE,
        "venous_peak_boost": float(config.venous_peak_boost),
        "residue_shape": "inf" if np.isinf(config.residue_shape) else float(config.residue_shape),
        "motion": motion,
        "grid": {"shape": list(grid.shape), "affine": grid.affine.round(9).tolist()},
    }
    if modality == "dsc":
        record.update({"echo_time_s": float(config.echo_time_s), "gm_peak_delta_r2s": float(gm_peak),
                       "noise_sd": float(acquisition.GM_REFERENCE_S0 / config.snr) if np.isfinite(config.snr) else 0.0})
    else:
        record["noise_sd_hu"] = float(config.noise_hu)
    return series, record


def _clinical(config: PhantomConfig, patient: lesion.Patient) -> dict:
    rng = _rng(config.seed, "clinical")
    age = rng.uniform(*AGE_RANGE)
    mild = rng.integers(0, 5)
    spread = rng.normal(0.0, 3.0)
    if config.age is not None:
        age = config.age
    if config.nihss is not None:
        nihss = int(config.nihss)
    elif patient.lesion is None:
        nihss = int(mild)
    else:
        nihss = int(np.clip(round(4 + 0.1 * patient.calibration["target_tmax6_ml"] + spread), 2, 30))
    return {"age": int(round(age)), "nihss": nihss}


def generate_dataset(out_dir, config: PhantomConfig | None = None, participant: str = "01",
                     session: str | None = None, modalities=("ctp",)) -> dict:
    """Write one participant / session of the phantom into ``out_dir`` (raw BIDS + ``truth/``).

    Creates the dataset files on first use and adds or replaces this participant's rows of
    ``participants.tsv`` and ``truth/truth_volumes.tsv``. Returns a dict with ``participant_id``,
    ``session_id``, ``files`` (paths written), ``truth`` (the truth_volumes rows by modality) and
    ``seconds`` (elapsed).
    """
    started = time.perf_counter()
    config = config or PhantomConfig()
    config.validate()
    modalities = tuple(dict.fromkeys(modalities))
    if not modalities or any(m not in MODALITIES for m in modalities):
        raise ValueError(f"modalities must be among {', '.join(MODALITIES)}; got {', '.join(modalities) or 'none'}")
    sub = _label(participant, "sub-")
    ses = _label(session, "ses-")
    participant_id = f"sub-{sub}"
    session_id = f"ses-{ses}" if ses else "n/a"
    stem = participant_id + (f"_{session_id}" if ses else "")
    out_dir = Path(out_dir)
    subject_dir = out_dir / participant_id / (session_id if ses else "")
    truth_dir = out_dir / "truth"
    bids.write_dataset_files(out_dir)

    patient = lesion.draw_patient(config, _rng(config.seed, "patient"))
    files: list[Path] = []
    rows: dict[str, dict] = {}
    records: dict[str, dict] = {}
    s_core = patient.lesion.s_core if patient.lesion is not None else 1.0

    needs_dwi = "dwi" in modalities or "dsc" in modalities
    dwi_model = model_on_grid(dwi_grid(config), patient, config, kinetics=False) if needs_dwi else None
    if dwi_model is not None:
        _, _, adc_dwi = acquisition.diffusion_model(dwi_model.anat, dwi_model.severity, s_core, config.b_value)
        dwi_core = truth.mri_core(adc_dwi, dwi_model.tissue)

    for modality in ("ctp", "dsc"):
        if modality not in modalities:
            continue
        model = model_on_grid(perfusion_grid(config, modality), patient, config)
        times = _timing(config, modality)
        series, record = _perfusion_series(modality, model, config, times)
        grid = model.grid
        masks = truth.perfusion_masks(_full(model, "cbf"), _full(model, "cbv"), _full(model, "tmax"), model.tissue)
        if modality == "ctp":
            core = truth.ctp_core(masks)
            core_ml = float(core.sum() * grid.voxel_volume_ml)
            folder, suffix = "ct", "ctp"
            sidecar = {"Modality": "CT", "Units": "HU", **_timing_sidecar(times, config.irregular)}
        else:
            _, _, adc_here = acquisition.diffusion_model(model.anat, model.severity, s_core, config.b_value)
            core = truth.mri_core(adc_here, model.tissue)
            core_ml = float(dwi_core.sum() * dwi_model.grid.voxel_volume_ml)
            folder, suffix = "perf", "dsc"
            sidecar = {"Modality": "MR", "MagneticFieldStrength": FIELD_STRENGTH_T,
                       "EchoTime": float(config.echo_time_s), "ContrastBolusIngredient": "GADOLINIUM",
                       **_timing_sidecar(times, config.irregular)}
        step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
        image = subject_dir / folder / f"{stem}_{suffix}.nii.gz"
        lo, hi = acquisition.HU_RANGE if modality == "ctp" else (0, 32767)
        files.append(bids.save_nifti(image, np.clip(series, lo, hi), grid.affine, np.int16, time_step_s=step))
        files.append(bids.write_json(image.with_name(f"{stem}_{suffix}.json"), sidecar))
        del series
        _save_truth_maps(truth_dir, stem, modality, _truth_maps(model, masks, core), grid.affine, files)
        x_mm = grid.world_points()[:, 0].reshape(grid.shape)
        rows[modality] = truth.volume_row(participant_id, session_id, modality, masks, core_ml,
                                          grid.voxel_volume_ml, x_mm)
        record["reference_cbf"] = masks["ref_cbf"]
        record["reference_cbv"] = masks["ref_cbv"]
        records[modality] = record

    if "dwi" in modalities:
        grid = dwi_model.grid
        s0, sb, _ = acquisition.diffusion_model(dwi_model.anat, dwi_model.severity, s_core, config.b_value)
        rng = _rng(config.seed, "dwi-noise")
        sd = acquisition.GM_REFERENCE_S0 / config.snr
        volumes = [s0] + [sb] * 3
        dwi = np.stack([acquisition.rician(rng, v.astype(np.float32), sd) for v in volumes], axis=-1)
        dwi = np.clip(np.rint(dwi), 0, 32767).astype(np.int16)
        bvals = np.array([0.0] + [config.b_value] * 3)
        image = subject_dir / "dwi" / f"{stem}_dwi.nii.gz"
        files.append(bids.save_nifti(image, dwi, grid.affine, np.int16))
        bids.write_bvals_bvecs(subject_dir / "dwi" / f"{stem}_dwi", bvals, DWI_BVECS)
        files += [subject_dir / "dwi" / f"{stem}_dwi.bval", subject_dir / "dwi" / f"{stem}_dwi.bvec"]
        files.append(bids.write_json(subject_dir / "dwi" / f"{stem}_dwi.json", {
            "Modality": "MR", "MagneticFieldStrength": FIELD_STRENGTH_T,
            "EchoTime": acquisition.DWI_ECHO_TIME_S, "RepetitionTime": acquisition.DWI_REPETITION_TIME_S}))
        adc = acquisition.scanner_adc(dwi.astype(float), bvals)
        adc_path = subject_dir / "dwi" / f"{stem}_ADC.nii.gz"
        if config.adc_units == "mm^2/s":
            files.append(bids.save_nifti(adc_path, adc * 1e-6, grid.affine, np.float32))
        else:
            files.append(bids.save_nifti(adc_path, np.clip(adc, 0, 32767), grid.affine, np.int16))
        files.append(bids.write_json(adc_path.with_name(f"{stem}_ADC.json"), {
            "Units": config.adc_units,
            "Description": "Trace apparent diffusion coefficient computed by the scanner from the DWI"}))
        _save_truth_maps(truth_dir, stem, "dwi", {"adc": adc_dwi.astype(np.float32), "core": dwi_core},
                         grid.affine, files)
        records["dwi"] = {"b_value": float(config.b_value), "snr": "inf" if np.isinf(config.snr) else config.snr,
                          "adc_units": config.adc_units,
                          "grid": {"shape": list(grid.shape), "affine": grid.affine.round(9).tolist()},
                          "core_ml": float(dwi_core.sum() * grid.voxel_volume_ml)}

    clinical = _clinical(config, patient)
    bids.upsert_tsv(out_dir / "participants.tsv", [{"participant_id": participant_id, **clinical}],
                    ["participant_id", "age", "nihss"], ("participant_id",))
    if rows:
        bids.upsert_tsv(truth_dir / "truth_volumes.tsv", list(rows.values()), truth.TRUTH_COLUMNS,
                        ("participant_id", "session_id", "modality"))
    transform = dwi_to_perfusion(config)
    truth_json = truth_dir / f"{stem}_truth.json"
    previous = json.loads(truth_json.read_text()) if truth_json.exists() else {}
    merged = {**previous.get("modalities", {}), **records}
    document = {
        "participant_id": participant_id,
        "session_id": session_id,
        "seed": config.seed,
        "config": config.to_dict(),
        "lesion_side": patient.lesion.side if patient.lesion is not None else "n/a",
        "lesion": None if patient.lesion is None else {**patient.lesion.to_dict(), **patient.calibration},
        "normal_cbf_reference": patient.ref_cbf,
        "clinical": clinical,
        "dwi_to_perfusion_world": transform.round(12).tolist(),
        "perfusion_to_dwi_world": np.linalg.inv(transform).round(12).tolist(),
        "modalities": dict(sorted(merged.items())),
        "conventions": CONVENTIONS,
    }
    files.append(bids.write_json(truth_json, document))
    return {"participant_id": participant_id, "session_id": session_id, "files": [Path(f) for f in files],
            "truth": rows, "seconds": time.perf_counter() - started}
