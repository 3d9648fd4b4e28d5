"""The digital reference phantom: physics against analytic results, truth consistency, BIDS layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from strokeperf import kinetics
from strokeperf.phantom import PhantomConfig, curves, generate_dataset, read_truth
from strokeperf.phantom.cli import main as phantom_main

COARSE = (4.0, 4.0, 8.0)


def load(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def truth_map(out: Path, stem: str, modality: str, name: str) -> np.ndarray:
    return load(out / "truth" / f"{stem}_mod-{modality}_{name}.nii.gz")


# --- array-level physics ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [1.0, 2.5, np.inf])
def test_tissue_curve_area_gives_cbv(seed, shape):
    """area(C) / area(AIF) x CBV_SCALE = CBV for any CBF, CBV, delay, dispersion (long window)."""
    rng = np.random.default_rng(seed)
    aif = curves.ArterialInput.random(rng)
    t = curves.fine_time(300.0)
    a = aif(t)
    cbf = rng.uniform(10, 80, 200)
    mtt = rng.uniform(2.5, 15, 200)
    cbv = cbf * curves.quantize(mtt) / 60.0
    c = curves.tissue_curves(a, cbf, cbv, rng.uniform(0, 10, 200), rng.uniform(0, 4, 200), shape, t)
    np.testing.assert_allclose(c.sum(axis=1) / a.sum() * kinetics.CBV_SCALE, cbv, rtol=2e-3)


def test_delay_shifts_the_curve():
    rng = np.random.default_rng(5)
    a_model = curves.ArterialInput.random(rng)
    t = np.arange(0.0, 60.0, 0.7)
    a = a_model(curves.fine_time(80.0))
    for delay in (0.3, 2.0, 6.55):
        c0 = curves.tissue_curves(a, [45.0], [3.5], [0.0], [1.2], 2.5, t)
        cd = curves.tissue_curves(a, [45.0], [3.5], [delay], [1.2], 2.5, t + delay)
        np.testing.assert_allclose(cd, c0, atol=1e-9 * c0.max())
        later = curves.tissue_curves(a, [45.0], [3.5], [delay], [1.2], 2.5, t)
        assert t[np.argmax(later)] > t[np.argmax(c0)]


def test_tmax_offset_matches_analytic_exponential_case():
    """Exponential residue * exponential dispersion peaks at beta*MTT*ln(MTT/beta)/(MTT-beta)."""
    rng = np.random.default_rng(3)
    mtt = curves.quantize(rng.uniform(3, 20, 50))
    beta = curves.quantize(rng.uniform(0.3, 4, 50))
    beta = np.where(np.abs(beta - mtt) < 0.05, beta + 0.2, beta)
    expected = beta * mtt * np.log(mtt / beta) / (mtt - beta)
    np.testing.assert_allclose(curves.effective_residue_peak(mtt, beta, 1.0), expected, atol=0.01)


def test_tmax_equals_delay_without_dispersion_and_grows_with_it():
    mtt = np.full(6, 5.0)
    for shape in (1.0, 2.5, np.inf):
        assert np.all(curves.effective_residue_peak(mtt, np.zeros(6), shape) == 0.0)
        offsets = curves.effective_residue_peak(mtt, np.array([0.1, 0.3, 0.6, 1.0, 2.0, 3.0]), shape)
        assert np.all(np.diff(offsets) > 0)
    # box residue: the dispersed residue rises until the transit time, then falls
    np.testing.assert_allclose(curves.effective_residue_peak([4.0, 9.0], [1.0, 2.0], np.inf), [4.0, 9.0], atol=0.08)


def test_vof_conserves_the_aif_area_and_peaks_later_and_lower():
    rng = np.random.default_rng(9)
    aif = curves.ArterialInput.random(rng)
    t = curves.fine_time(250.0)
    a = aif(t)
    for transit in (5.0, 8.0):
        v = curves.venous_output(a, curves.FINE_DT_S, transit)
        assert abs(v.sum() / a.sum() - 1) < 1e-6
        assert v.max() < a.max() and t[np.argmax(v)] > t[np.argmax(a)]


def test_config_rejects_bad_options():
    for bad in ({"lesion_side": "X"}, {"core_fraction": 0.9}, {"voxel_size_mm": (1, 0, 1)}, {"snr": 0}):
        with pytest.raises(ValueError):
            PhantomConfig(**bad)


# --- generated datasets ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctp(tmp_path_factory):
    """Noise-free CTP with a right lesion, long acquisition at 1-s frames."""
    out = tmp_path_factory.mktemp("ctp")
    config = PhantomConfig(seed=11, voxel_size_mm=COARSE, noise_hu=0.0, frame_interval_s=1.0, duration_s=120.0,
                           lesion_side="R", lesion_volume_ml=100.0, core_fraction=0.3, max_tmax_s=14.0,
                           venous_peak_boost=3.0)
    result = generate_dataset(out, config, participant="07", modalities=("ctp",))
    return out, config, result


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    """Noise-free DSC + DWI (DWI displaced by a known rigid transform)."""
    out = tmp_path_factory.mktemp("mri")
    config = PhantomConfig(seed=5, voxel_size_mm=COARSE, snr=float("inf"), duration_s=120.0, lesion_side="L",
                           lesion_volume_ml=120.0, core_fraction=0.4, dwi_rotation_deg=(4.0, -3.0, 8.0),
                           dwi_shift_mm=(3.0, -5.0, 6.0))
    result = generate_dataset(out, config, participant="02", session="acute", modalities=("dsc", "dwi"))
    return out, config, result


def test_ct_curve_areas_give_true_cbv(ctp):
    out, _, _ = ctp
    series = load(out / "sub-07" / "ct" / "sub-07_ctp.nii.gz").astype(float)
    record = json.loads((out / "truth" / "sub-07_truth.json").read_text())["modalities"]["ctp"]
    aif = np.asarray(record["aif"])
    tissue = truth_map(out, "sub-07", "ctp", "tissue").astype(bool)
    near_vessel = ndimage.binary_dilation(truth_map(out, "sub-07", "ctp", "vessel").astype(bool), iterations=2)
    cbv = truth_map(out, "sub-07", "ctp", "cbv")
    pick = tissue & ~near_vessel
    assert pick.sum() > 1000
    baseline = series[..., :3].mean(axis=-1)
    measured = (series - baseline[..., None]).sum(axis=-1) / aif.sum() * kinetics.CBV_SCALE
    # int16 rounding leaves a per-voxel error of ~0.1-0.3 mL/100g; it averages out over voxels
    assert np.median(np.abs(measured[pick] - cbv[pick])) < 0.25
    assert abs(measured[pick].mean() / cbv[pick].mean() - 1) < 0.01


def test_ctp_lesion_matches_the_request(ctp):
    out, config, result = ctp
    row = result["truth"]["ctp"]
    assert row["affected_side"] == "R"
    tmax6 = float(row["tmax6_ml"])
    core = float(row["core_ml"])
    assert 80 <= tmax6 <= 120
    assert 0.2 <= core / tmax6 <= 0.4
    tmax = truth_map(out, "sub-07", "ctp", "tmax")
    delay = truth_map(out, "sub-07", "ctp", "delay")
    tissue = truth_map(out, "sub-07", "ctp", "tissue").astype(bool)
    assert 12.5 <= tmax[tissue].max() <= 14.0 + 1e-3
    assert np.all(tmax[tissue] >= delay[tissue] - 1e-4)
    rcbf = truth_map(out, "sub-07", "ctp", "rcbf")
    normal = tissue & (tmax < 4)
    assert abs(rcbf[normal].mean() - 1) < 1e-3
    grid = nib.load(str(out / "truth" / "sub-07_mod-ctp_tmax6.nii.gz"))
    ijk = np.argwhere(truth_map(out, "sub-07", "ctp", "tmax6"))
    assert np.mean((ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3])[:, 0] > 0) > 0.95


def test_volume_table_is_consistent_with_the_truth_maps(ctp):
    out, _, _ = ctp
    table = read_truth(out)
    row = table.iloc[0]
    assert list(table.columns[:3]) == ["participant_id", "session_id", "modality"]
    assert (row.participant_id, row.session_id, row.modality, row.core_definition) == \
        ("sub-07", "n/a", "ctp", "rCBF<0.30")
    img = nib.load(str(out / "truth" / "sub-07_mod-ctp_tissue.nii.gz"))
    voxel_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000
    m = {n: truth_map(out, "sub-07", "ctp", n) for n in
         ("tissue", "tmax", "cbf", "cbv", "rcbf", "core", "tmax4", "tmax6", "tmax8", "tmax10", "vessel")}
    tissue = m["tissue"].astype(bool)
    assert not (tissue & m["vessel"].astype(bool)).any()
    for n in (4, 6, 8, 10):
        assert np.array_equal(m[f"tmax{n}"].astype(bool), tissue & (m["tmax"] > n))
        assert row[f"tmax{n}_ml"] == pytest.approx(m[f"tmax{n}"].sum() * voxel_ml, abs=1e-3)
    reference = tissue & (m["tmax"] < 4)
    np.testing.assert_allclose(m["rcbf"], m["cbf"] / m["cbf"][reference].mean(), rtol=1e-5, atol=1e-6)
    core = tissue & (m["tmax"] > 6) & (m["rcbf"] < 0.30)
    assert np.array_equal(m["core"].astype(bool), core)
    assert row.core_ml == pytest.approx(core.sum() * voxel_ml, abs=1e-3)
    assert row.mismatch_ml == pytest.approx(row.tmax6_ml - row.core_ml, abs=2e-3)
    assert row.mismatch_ratio == pytest.approx(row.tmax6_ml / row.core_ml, rel=1e-3)
    assert row.hir == pytest.approx(row.tmax10_ml / row.tmax6_ml, rel=1e-3)
    rcbv = m["cbv"] / m["cbv"][reference].mean()
    assert row.cbv_index == pytest.approx(rcbv[m["tmax6"].astype(bool)].mean(), rel=1e-3)


def test_ct_arterial_input_and_boosted_sinus(ctp):
    out, _, _ = ctp
    record = json.loads((out / "truth" / "sub-07_truth.json").read_text())["modalities"]["ctp"]
    aif, vof = np.asarray(record["aif"]), np.asarray(record["vof"])
    times = np.asarray(record["frame_times_s"])
    assert 300 <= record["aif_parameters"]["peak"] <= 500
    assert 5 <= record["aif_parameters"]["arrival_s"] <= 12
    # the VOF carries the AIF's mass (x the requested boost), later
    assert vof.sum() / aif.sum() == pytest.approx(3.0, rel=0.03)
    assert times[np.argmax(vof)] > times[np.argmax(aif)]
    # with the boost the sinus outshines every partial-volumed artery voxel
    series = load(out / "sub-07" / "ct" / "sub-07_ctp.nii.gz").astype(float)
    vessel = truth_map(out, "sub-07", "ctp", "vessel").astype(bool)
    enhancement = series[vessel] - series[vessel][:, :3].mean(axis=1, keepdims=True)
    late = times[np.argmax(enhancement, axis=1)] > times[np.argmax(vof)] - 2
    early = times[np.argmax(enhancement, axis=1)] < times[np.argmax(aif)] + 2
    assert enhancement[late].max() > enhancement[early].max()


def test_dsc_signal_and_curve_areas(mri):
    out, config, _ = mri
    stem = "sub-02_ses-acute"
    path = out / "sub-02" / "ses-acute" / "perf" / f"{stem}_dsc.nii.gz"
    sidecar = json.loads(path.with_name(f"{stem}_dsc.json").read_text())
    assert sidecar["EchoTime"] == config.echo_time_s and sidecar["RepetitionTime"] == 1.5
    record = json.loads((out / "truth" / f"{stem}_truth.json").read_text())["modalities"]["dsc"]
    series = load(path).astype(float)
    s0 = series[..., :3].mean(axis=-1)
    tissue = truth_map(out, stem, "dsc", "tissue").astype(bool)
    near_vessel = ndimage.binary_dilation(truth_map(out, stem, "dsc", "vessel").astype(bool), iterations=2)
    pick = tissue & ~near_vessel
    r2s = -np.log(np.clip(series[pick], 1, None) / s0[pick, None]) / config.echo_time_s
    cbv = truth_map(out, stem, "dsc", "cbv")[pick]
    measured = r2s.sum(axis=1) / np.sum(record["aif"]) * kinetics.CBV_SCALE
    assert np.median(np.abs(measured / cbv - 1)) < 0.01
    # normal grey matter peaks at the drawn 15-20 1/s; arteries saturate toward zero signal
    assert 15 <= record["gm_peak_delta_r2s"] <= 20
    normal = truth_map(out, stem, "dsc", "tmax")[pick] < 4
    assert 0.6 * record["gm_peak_delta_r2s"] < np.percentile(r2s[normal].max(axis=1), 99) < 1.05 * record[
        "gm_peak_delta_r2s"]
    assert np.exp(-config.echo_time_s * max(record["aif"])) < 0.01


def test_adc_recovers_from_noise_free_dwi(mri):
    out, config, _ = mri
    stem = "sub-02_ses-acute"
    folder = out / "sub-02" / "ses-acute" / "dwi"
    dwi = load(folder / f"{stem}_dwi.nii.gz").astype(float)
    bvals = np.loadtxt(folder / f"{stem}_dwi.bval")
    bvecs = np.loadtxt(folder / f"{stem}_dwi.bvec")
    assert bvecs.shape == (3, dwi.shape[-1]) and list(bvals) == [0, 1000, 1000, 1000]
    truth_adc = truth_map(out, stem, "dwi", "adc")
    valid = truth_adc > 0
    s0, sb = dwi[..., 0][valid], dwi[..., 1:][valid]
    adc = np.log(s0[:, None] / sb).mean(axis=1) / 1000 * 1e6
    # the only error left is the int16 rounding of the signals: |d ln S| <= 0.5 / S
    rounding = (0.5 / (s0 - 0.5) + 0.5 / (sb.min(axis=1) - 0.5)) / 1000 * 1e6
    assert np.all(np.abs(adc - truth_adc[valid]) <= rounding + 1e-6)
    assert np.median(np.abs(adc - truth_adc[valid])) < 2.0
    scanner = load(folder / f"{stem}_ADC.nii.gz")
    assert json.loads((folder / f"{stem}_ADC.json").read_text())["Units"] == "1e-6 mm^2/s"
    assert np.abs(scanner[valid] - adc).max() <= 0.5 + 1e-6
    core = truth_map(out, stem, "dwi", "core").astype(bool)
    assert core.any() and np.all(truth_adc[core] < 620) and truth_adc[core].min() >= 400


def test_dwi_transform_maps_dwi_truth_onto_perfusion_truth(mri):
    out, _, result = mri
    stem = "sub-02_ses-acute"
    document = json.loads((out / "truth" / f"{stem}_truth.json").read_text())
    to_perf = np.asarray(document["dwi_to_perfusion_world"])

    def centroid(modality, name):
        img = nib.load(str(out / "truth" / f"{stem}_mod-{modality}_{name}.nii.gz"))
        ijk = np.argwhere(np.asarray(img.dataobj) > 0)
        return (ijk @ img.affine[:3, :3].T + img.affine[:3, 3]).mean(axis=0)

    in_dwi = centroid("dwi", "core")
    mapped = to_perf[:3, :3] @ in_dwi + to_perf[:3, 3]
    assert np.linalg.norm(mapped - centroid("dsc", "core")) < 2.5
    assert np.linalg.norm(in_dwi - centroid("dsc", "core")) > 5  # the displacement is real
    # the MRI core volume of the table is the DWI-grid core
    row = result["truth"]["dsc"]
    img = nib.load(str(out / "truth" / f"{stem}_mod-dwi_core.nii.gz"))
    assert float(row["core_ml"]) == pytest.approx(
        np.asarray(img.dataobj).sum() * abs(np.linalg.det(img.affine[:3, :3])) / 1000, abs=1e-3)
    assert row["core_definition"] == "ADC<620" and row["affected_side"] == "L"


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    config = dict(voxel_size_mm=COARSE, duration_s=40.0)

    def digest(out):
        return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*")) if p.is_file()}

    for name, seed in (("a", 2), ("b", 2), ("c", 3)):
        generate_dataset(tmp_path / name, PhantomConfig(seed=seed, **config), modalities=("ctp", "dwi"))
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b
    assert a["sub-01/ct/sub-01_ctp.nii.gz"] != c["sub-01/ct/sub-01_ctp.nii.gz"]


def test_cli_layout_irregular_timing_and_motion(tmp_path, capsys):
    out = tmp_path / "bids"
    code = phantom_main([str(out), "--participant-label", "sub-03", "--session-label", "acute", "--seed", "4",
                         "--voxel-size", *map(str, COARSE), "--irregular", "--noise", "0", "--duration", "50",
                         "--motion-mm", "6", "--motion-deg", "3", "--motion-fraction", "0.3",
                         "--modalities", "ctp", "dwi", "--adc-units", "mm^2/s"])
    assert code == 0
    assert "sub-03" in capsys.readouterr().out
    ses = out / "sub-03" / "ses-acute"
    stem = "sub-03_ses-acute"
    for rel in ("dataset_description.json", ".bidsignore", "participants.tsv", "truth/truth_volumes.tsv",
                f"truth/{stem}_truth.json", f"truth/{stem}_mod-ctp_tmax.nii.gz", f"truth/{stem}_mod-dwi_adc.nii.gz"):
        assert (out / rel).is_file(), rel
    for rel in ("ct/{s}_ctp.nii.gz", "ct/{s}_ctp.json", "dwi/{s}_dwi.nii.gz", "dwi/{s}_dwi.bval",
                "dwi/{s}_dwi.bvec", "dwi/{s}_dwi.json", "dwi/{s}_ADC.nii.gz", "dwi/{s}_ADC.json"):
        assert (ses / rel.format(s=stem)).is_file(), rel
    assert (out / ".bidsignore").read_text().split() == ["**/ct", "**/*_dsc.*", "truth/"]
    assert json.loads((out / "dataset_description.json").read_text())["Name"] == "strokeperf digital phantom"
    adc_img = nib.load(str(ses / "dwi" / f"{stem}_ADC.nii.gz"))
    assert adc_img.get_data_dtype() == np.float32 and np.asarray(adc_img.dataobj).max() < 0.005
    assert json.loads((ses / "dwi" / f"{stem}_ADC.json").read_text())["Units"] == "mm^2/s"

    sidecar = json.loads((ses / "ct" / f"{stem}_ctp.json").read_text())
    series = load(ses / "ct" / f"{stem}_ctp.nii.gz").astype(float)
    timing = np.asarray(sidecar["VolumeTiming"])
    assert "RepetitionTime" not in sidecar and sidecar["Units"] == "HU"
    assert len(timing) == series.shape[-1] and timing[0] == 0 and np.all(np.diff(timing) > 0)
    assert set(np.round(np.diff(timing), 6)) == {1.0, 2.0, 3.0}

    record = json.loads((out / "truth" / f"{stem}_truth.json").read_text())["modalities"]["ctp"]
    moved = [m for m in record["motion"] if m["displaced"]]
    assert len(moved) == round(0.3 * (len(timing) - 1)) and not record["motion"][0]["displaced"]
    affine = nib.load(str(ses / "ct" / f"{stem}_ctp.nii.gz")).affine
    ijk = np.indices(series.shape[:3]).reshape(3, -1).astype(float)
    world = affine[:3, :3] @ ijk + affine[:3, 3:]
    reference = series[..., 0]
    for m in moved:
        # the recorded matrix maps the head at frame 0 (world mm) to where it is in this frame:
        # frame(w) = frame0(M^-1 w), read here with an independent trilinear resampler
        inverse = np.linalg.inv(np.asarray(m["matrix"]))
        source = np.linalg.inv(affine) @ inverse
        coords = source[:3, :3] @ world + source[:3, 3:]
        expected = ndimage.map_coordinates(reference, coords, order=1, mode="nearest").reshape(reference.shape)
        frame = series[..., m["frame"]]
        bone = expected > 500
        assert np.median(np.abs(frame[bone] - expected[bone])) < 2.0
        assert np.median(np.abs(reference[bone] - expected[bone])) > 20.0  # the motion is visible
    bone = reference > 500
    for m in record["motion"]:
        if not m["displaced"]:
            assert np.median(np.abs(series[..., m["frame"]][bone] - reference[bone])) < 1.0

    # a second participant is added to the tables, the first kept
    assert phantom_main([str(out), "--participant-label", "04", "--seed", "8", "--no-lesion", "--voxel-size",
                         *map(str, COARSE), "--duration", "40"]) == 0
    participants = (out / "participants.tsv").read_text().split("\n")
    assert participants[0] == "participant_id\tage\tnihss" and len([p for p in participants if p]) == 3
    table = read_truth(out)
    assert list(table.participant_id) == ["sub-03", "sub-04"]
    assert list(table.session_id) == ["ses-acute", "n/a"]


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    assert phantom_main([str(tmp_path), "--lesion-side", "X"]) == 2
    assert phantom_main([str(tmp_path), "--core-fraction", "0.95"]) == 2
    assert "core_fraction" in capsys.readouterr().err


def test_lesion_free_case_without_dispersion(tmp_path):
    config = PhantomConfig(seed=21, voxel_size_mm=COARSE, lesion=False, normal_dispersion_s=0.0, duration_s=40.0,
                           slab_mm=48.0)
    result = generate_dataset(tmp_path, config)
    # a 48-mm slab of 8-mm slices centred on the basal ganglia (MNI z = 5 mm)
    img = nib.load(str(tmp_path / "sub-01" / "ct" / "sub-01_ctp.nii.gz"))
    z = img.affine[2, 2] * np.arange(img.shape[2]) + img.affine[2, 3]
    assert img.shape[2] == 6 and z.mean() == pytest.approx(5.0)
    row = result["truth"]["ctp"]
    assert float(row["tmax6_ml"]) == 0 and float(row["core_ml"]) == 0
    assert (row["mismatch_ratio"], row["hir"], row["cbv_index"], row["affected_side"]) == ("n/a",) * 4
    tissue = truth_map(tmp_path, "sub-01", "ctp", "tissue").astype(bool)
    tmax = truth_map(tmp_path, "sub-01", "ctp", "tmax")
    delay = truth_map(tmp_path, "sub-01", "ctp", "delay")
    # no dispersion: Tmax is the delay, a smooth field within the requested 0-1.5 s
    np.testing.assert_array_equal(tmax[tissue], delay[tissue])
    assert 0 <= tmax[tissue].min() and tmax[tissue].max() <= 1.5 and np.ptp(tmax[tissue]) > 0.5
    table = read_truth(tmp_path)
    assert table.mismatch_ratio.isna().all() and table.affected_side.tolist() == ["n/a"]
