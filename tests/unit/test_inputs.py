"""Input discovery, timing and validation, strokeperf.bids (SPEC.md "Inputs" and "Bad input")."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from strokeperf.errors import (EXIT_MISSING_INPUT, EXIT_NO_MATCH, EXIT_NOT_BIDS, InputError,
                               MissingInputError, NoMatchError, NotBIDSError)
from strokeperf.bids.diffusion import check_diffusion_inputs, load_adc, load_dwi
from strokeperf.bids.discovery import Session, discover_sessions
from strokeperf.bids.participants import read_participants
from strokeperf.bids.perfusion import MIN_FRAMES, load_perfusion
from strokeperf.bids.sidecars import read_frame_times

N_FRAMES = 20


# ---------------------------------------------------------------------------------------------
# Builders: tiny NIfTI files and sidecars


def write_nifti(path: Path, data, zooms=(2.0, 2.0, 5.0), dtype=np.float32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data, dtype=dtype)
    affine = np.diag([*zooms, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(tuple(zooms) + (1.0,) * (data.ndim - 3))
    nib.save(img, path)
    return path


def write_json(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def series(n_frames=N_FRAMES, shape=(4, 4, 2)):
    rng = np.random.default_rng(0)
    return (40 + rng.normal(0, 1, (*shape, n_frames))).astype(np.float32)


def add_ctp(root: Path, sub="01", ses="acute", sidecar=None, entities="", ext=".nii.gz",
            data=None) -> Path:
    folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "ct"
    stem = f"sub-{sub}{f'_ses-{ses}' if ses else ''}{entities}_ctp"
    img = write_nifti(folder / f"{stem}{ext}", series() if data is None else data)
    if sidecar is not None:
        write_json(folder / f"{stem}.json", sidecar)
    return img


def add_dsc(root: Path, sub="01", ses="acute", sidecar=None) -> Path:
    folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "perf"
    stem = f"sub-{sub}{f'_ses-{ses}' if ses else ''}_dsc"
    img = write_nifti(folder / f"{stem}.nii.gz", series())
    if sidecar is not None:
        write_json(folder / f"{stem}.json", sidecar)
    return img


@pytest.fixture
def bids(tmp_path):
    root = tmp_path / "bids"
    write_json(root / "dataset_description.json", {"Name": "t", "BIDSVersion": "1.9.0"})
    return root


def one_session(root: Path, **kwargs) -> Session:
    (session,) = discover_sessions(root, **kwargs)
    return session


# ---------------------------------------------------------------------------------------------
# Discovery


def test_discovers_bids_ctp_and_dsc_with_diffusion_sorted(bids):
    add_dsc(bids, "02", "acute", {"RepetitionTime": 1.5, "EchoTime": 0.03})
    add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0})
    add_ctp(bids, "01", "followup", {"RepetitionTime": 1.0})
    dwi_dir = bids / "sub-02" / "ses-acute" / "dwi"
    write_nifti(dwi_dir / "sub-02_ses-acute_ADC.nii.gz", np.full((4, 4, 2), 800.0))
    write_nifti(dwi_dir / "sub-02_ses-acute_dwi.nii.gz", np.ones((4, 4, 2, 2)))
    (dwi_dir / "sub-02_ses-acute_dwi.bval").write_text("0 1000\n")
    (dwi_dir / "sub-02_ses-acute_dwi.bvec").write_text("0 1\n0 0\n0 0\n")

    found = discover_sessions(bids)

    assert [(s.participant_id, s.session_id, s.modality) for s in found] == [
        ("sub-01", "ses-acute", "ctp"), ("sub-01", "ses-followup", "ctp"),
        ("sub-02", "ses-acute", "dsc")]
    dsc = found[2]
    assert dsc.layout == "bids"
    assert dsc.sidecar_file == bids / "sub-02/ses-acute/perf/sub-02_ses-acute_dsc.json"
    assert dsc.adc_file == dwi_dir / "sub-02_ses-acute_ADC.nii.gz"
    assert dsc.dwi_file == dwi_dir / "sub-02_ses-acute_dwi.nii.gz"
    assert dsc.bval_file == dwi_dir / "sub-02_ses-acute_dwi.bval"
    assert dsc.bvec_file == dwi_dir / "sub-02_ses-acute_dwi.bvec"
    assert found[0].adc_file is None and found[0].dwi_file is None


def test_no_session_level_and_extra_entities_and_plain_nii(bids):
    add_ctp(bids, "07", None, {"RepetitionTime": 1.0}, entities="_acq-lowdose_run-2", ext=".nii")

    s = one_session(bids)

    assert (s.subject, s.session, s.session_id) == ("07", None, "n/a")
    assert s.prefix == "sub-07_acq-lowdose_run-2"
    assert s.perfusion_file.name == "sub-07_acq-lowdose_run-2_ctp.nii"


def test_prefix_keeps_session(bids):
    add_ctp(bids, "01", "acute")
    assert one_session(bids).prefix == "sub-01_ses-acute"


def test_isles24_layout_found_in_raw_data(tmp_path):
    root = tmp_path / "isles24"
    img = write_nifti(root / "raw_data/sub-stroke0001/ses-01/sub-stroke0001_ses-01_ctp.nii.gz",
                      series())
    write_nifti(root / "raw_data/sub-stroke0001/ses-01/sub-stroke0001_ses-01_ncct.nii.gz",
                np.zeros((4, 4, 2)))

    s = one_session(root)

    assert (s.subject, s.session, s.modality, s.layout) == ("stroke0001", "01", "ctp", "isles24")
    assert s.perfusion_file == img and s.sidecar_file is None


def test_isles24_without_timing_asks_for_frame_interval(tmp_path):
    root = tmp_path / "isles24"
    img = write_nifti(root / "sub-stroke0002/ses-01/sub-stroke0002_ses-01_ctp.nii.gz", series())
    s = one_session(root)

    with pytest.raises(InputError) as err:
        load_perfusion(s)
    assert str(img) in str(err.value) and "--frame-interval" in str(err.value)

    loaded = load_perfusion(s, frame_interval=2.0)
    assert loaded.timing_source == "--frame-interval"
    np.testing.assert_allclose(loaded.frame_times, np.arange(N_FRAMES) * 2.0)


def test_labels_with_or_without_prefix(bids):
    for sub in ("01", "02", "03"):
        add_ctp(bids, sub, "acute")
        add_ctp(bids, sub, "day1")

    chosen = discover_sessions(bids, participant_labels=["sub-02", "03"], session_labels=["day1"])
    assert [(s.subject, s.session) for s in chosen] == [("02", "day1"), ("03", "day1")]
    chosen = discover_sessions(bids, participant_labels=["01"], session_labels=["ses-acute"])
    assert [(s.subject, s.session) for s in chosen] == [("01", "acute")]


def test_modality_filter(bids):
    add_ctp(bids, "01", "acute")
    add_dsc(bids, "01", "acute")
    assert [s.modality for s in discover_sessions(bids, modalities=("dsc",))] == ["dsc"]


def test_unknown_participant_label_names_it_and_lists_existing(bids):
    add_ctp(bids, "01", "acute")
    add_ctp(bids, "02", "acute")

    with pytest.raises(NoMatchError) as err:
        discover_sessions(bids, participant_labels=["01", "sub-09"])
    msg = str(err.value)
    assert "09" in msg and "01, 02" in msg
    assert err.value.exit_code == EXIT_NO_MATCH == 18


def test_unknown_session_label_names_it_and_lists_existing(bids):
    add_ctp(bids, "01", "acute")

    with pytest.raises(NoMatchError) as err:
        discover_sessions(bids, session_labels=["ses-chronic"])
    assert "chronic" in str(err.value) and "acute" in str(err.value)


def test_session_label_on_dataset_without_sessions(bids):
    add_ctp(bids, "01", None)
    with pytest.raises(NoMatchError, match="no ses- folders"):
        discover_sessions(bids, session_labels=["acute"])


def test_missing_directory_is_not_bids(tmp_path):
    with pytest.raises(NotBIDSError) as err:
        discover_sessions(tmp_path / "nope")
    assert "does not exist" in str(err.value) and str(tmp_path / "nope") in str(err.value)
    assert err.value.exit_code == EXIT_NOT_BIDS == 16


def test_directory_without_subjects_is_not_bids(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scan.nii.gz").write_bytes(b"")
    with pytest.raises(NotBIDSError, match="no sub-<label> folders"):
        discover_sessions(tmp_path / "data")


def test_subjects_without_perfusion_is_no_match(bids):
    write_nifti(bids / "sub-01/ses-acute/anat/sub-01_ses-acute_T1w.nii.gz", np.zeros((4, 4, 2)))
    with pytest.raises(NoMatchError, match="no perfusion series"):
        discover_sessions(bids)


def test_missing_dataset_description_is_a_warning(tmp_path, caplog):
    root = tmp_path / "raw"
    add_ctp(root, "01", "acute")
    with caplog.at_level(logging.WARNING, logger="strokeperf.bids.discovery"):
        assert len(discover_sessions(root)) == 1
    assert "dataset_description.json" in caplog.text


def test_file_named_for_another_subject_is_skipped_with_warning(bids, caplog):
    add_ctp(bids, "01", "acute")
    stray = write_nifti(bids / "sub-02/ses-acute/ct/sub-03_ses-acute_ctp.nii.gz", series())
    with caplog.at_level(logging.WARNING, logger="strokeperf.bids.discovery"):
        assert [s.subject for s in discover_sessions(bids)] == ["01"]
    assert f"{stray}: file name does not match its folder sub-02/ses-acute" in caplog.text


def test_sidecar_must_be_an_object(bids):
    img = add_ctp(bids, "01", "acute", [1.0, 2.0])
    with pytest.raises(InputError) as err:
        load_perfusion(one_session(bids))
    assert str(err.value) == f"{img.with_name('sub-01_ses-acute_ctp.json')}: must hold a JSON " \
        "object, not a list"


def test_session_round_trips_through_json(bids):
    add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0})
    s = one_session(bids)
    assert Session.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_inherited_sidecar_merges_nearer_wins(bids):
    write_json(bids / "ctp.json", {"RepetitionTime": 2.0, "Manufacturer": "X"})
    img = add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0})
    add_ctp(bids, "02", "acute")

    first, second = discover_sessions(bids)
    a, b = load_perfusion(first), load_perfusion(second)

    np.testing.assert_allclose(a.frame_times[:3], [0, 1, 2])
    np.testing.assert_allclose(b.frame_times[:3], [0, 2, 4])
    assert a.metadata["Manufacturer"] == "X" and a.source == img


def test_bad_inherited_value_names_the_file_it_came_from(bids):
    top = write_json(bids / "ctp.json", {"RepetitionTime": -1})
    add_ctp(bids, "01", "acute", {"Manufacturer": "X"})
    with pytest.raises(InputError) as err:
        load_perfusion(one_session(bids))
    assert str(err.value).startswith(f"{top}: RepetitionTime must be > 0")


# ---------------------------------------------------------------------------------------------
# Timing


def test_volume_timing_wins_over_repetition_time(tmp_path):
    sidecar = {"VolumeTiming": [0.0, 1.0, 2.5, 5.0], "RepetitionTime": 1.0}
    times = read_frame_times(sidecar, 4, tmp_path / "s.json")
    np.testing.assert_array_equal(times, [0.0, 1.0, 2.5, 5.0])


def test_volume_timing_is_not_shifted(tmp_path):
    times = read_frame_times({"VolumeTiming": [3.0, 4.0, 6.0]}, 3, tmp_path / "s.json")
    np.testing.assert_array_equal(times, [3.0, 4.0, 6.0])


def test_repetition_time_gives_uniform_onsets(tmp_path):
    times = read_frame_times({"RepetitionTime": 1.6}, 3, "x.json")
    np.testing.assert_allclose(times, [0, 1.6, 3.2])


def test_load_perfusion_reports_timing_source(bids):
    add_ctp(bids, "01", "acute", {"VolumeTiming": [float(i) * 1.5 for i in range(N_FRAMES)],
                                  "RepetitionTime": 9.0})
    loaded = load_perfusion(one_session(bids))
    assert loaded.timing_source == "VolumeTiming"
    assert loaded.frame_times[1] == 1.5


@pytest.mark.parametrize("sidecar, problem", [
    ({}, "no timing"),
    ({"VolumeTiming": [0, 1, 2]}, "VolumeTiming has 3 entries but the image has 4 frames"),
    ({"VolumeTiming": [0, 2, 1, 3]}, "not strictly increasing (decreasing"),
    ({"VolumeTiming": [0, 1, 1, 3]}, "not strictly increasing (duplicate"),
    ({"VolumeTiming": [-1, 1, 2, 3]}, "negative onsets"),
    ({"VolumeTiming": [0, 1, float("nan"), 3]}, "non-finite"),
    ({"VolumeTiming": "0 1 2 3"}, "VolumeTiming must be a list of numbers"),
    ({"RepetitionTime": 0}, "RepetitionTime must be > 0"),
    ({"RepetitionTime": -2.0}, "RepetitionTime must be > 0"),
    ({"RepetitionTime": "1.0"}, "RepetitionTime must be a number"),
    ({"RepetitionTime": True}, "RepetitionTime must be a number"),
])
def test_bad_timing_names_sidecar_and_problem(tmp_path, sidecar, problem):
    source = tmp_path / "sub-01_ctp.json"
    with pytest.raises(InputError) as err:
        read_frame_times(sidecar, 4, source)
    assert str(err.value).startswith(f"{source}: ")
    assert problem in str(err.value)
    assert "\n" not in str(err.value)


def test_frame_interval_used_only_without_sidecar_timing(tmp_path):
    np.testing.assert_allclose(read_frame_times({}, 3, "x", frame_interval=2.0), [0, 2, 4])
    np.testing.assert_allclose(read_frame_times({"RepetitionTime": 2.0005}, 3, "x",
                                                frame_interval=2.0), [0, 2.0005, 4.001])


def test_contradictory_frame_interval_and_repetition_time(tmp_path):
    source = tmp_path / "sub-01_ctp.json"
    with pytest.raises(InputError) as err:
        read_frame_times({"RepetitionTime": 1.0}, 4, source, frame_interval=2.0)
    assert str(err.value).startswith(f"{source}: contradictory timing")


def test_contradictory_frame_interval_and_irregular_volume_timing(tmp_path):
    with pytest.raises(InputError, match="contradictory timing"):
        read_frame_times({"VolumeTiming": [0, 1, 3, 6]}, 4, "x.json", frame_interval=1.0)


def test_frame_interval_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        read_frame_times({}, 4, "x.json", frame_interval=0)


def test_missing_timing_without_sidecar_names_image(bids):
    img = add_ctp(bids, "01", "acute")
    with pytest.raises(InputError) as err:
        load_perfusion(one_session(bids))
    assert str(err.value).startswith(f"{img}: no timing")


def test_sidecar_not_valid_json(bids):
    img = add_ctp(bids, "01", "acute")
    sidecar = img.with_name("sub-01_ses-acute_ctp.json")
    sidecar.write_text('{"RepetitionTime": 1.0,,}')
    with pytest.raises(InputError) as err:
        load_perfusion(one_session(bids))
    assert str(err.value).startswith(f"{sidecar}: is not valid JSON")


# ---------------------------------------------------------------------------------------------
# DSC echo time


def test_dsc_echo_time_read_in_seconds(bids):
    add_dsc(bids, "01", "acute", {"RepetitionTime": 1.5, "EchoTime": 0.032})
    loaded = load_perfusion(one_session(bids))
    assert loaded.echo_time_s == pytest.approx(0.032)
    assert loaded.data.dtype == np.float32 and loaded.data.shape == (4, 4, 2, N_FRAMES)
    np.testing.assert_allclose(loaded.voxel_size_mm, [2, 2, 5])


def test_ct_has_no_echo_time(bids):
    add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0, "EchoTime": 0.0})
    assert load_perfusion(one_session(bids)).echo_time_s is None


@pytest.mark.parametrize("sidecar, problem", [
    ({"RepetitionTime": 1.5}, "DSC needs EchoTime"),
    ({"RepetitionTime": 1.5, "EchoTime": 30}, "EchoTime must be in seconds"),
    ({"RepetitionTime": 1.5, "EchoTime": 0}, "outside (0, 0.2] s"),
    ({"RepetitionTime": 1.5, "EchoTime": [0.02, 0.04]}, "single number"),
])
def test_bad_dsc_echo_time(bids, sidecar, problem):
    add_dsc(bids, "01", "acute", sidecar)
    s = one_session(bids)
    with pytest.raises(InputError) as err:
        load_perfusion(s)
    assert str(err.value).startswith(f"{s.sidecar_file}: ")
    assert problem in str(err.value)


def test_echo_time_in_ms_message_gives_the_conversion(bids):
    add_dsc(bids, "01", "acute", {"RepetitionTime": 1.5, "EchoTime": 30})
    with pytest.raises(InputError, match="30 ms is 0.03 s"):
        load_perfusion(one_session(bids))


# ---------------------------------------------------------------------------------------------
# Image errors


def test_missing_perfusion_file(bids):
    img = add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0})
    s = one_session(bids)
    img.unlink()
    with pytest.raises(MissingInputError) as err:
        load_perfusion(s)
    assert str(err.value) == f"{img}: file not found"
    assert err.value.exit_code == EXIT_MISSING_INPUT == 66


def test_3d_image(bids):
    img = add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0}, data=np.zeros((4, 4, 2)))
    with pytest.raises(InputError) as err:
        load_perfusion(one_session(bids))
    assert str(err.value).startswith(f"{img}: is 3D") and "must be 4D" in str(err.value)


def test_singleton_time_dimension(bids):
    img = add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0}, data=np.zeros((4, 4, 2, 1)))
    with pytest.raises(InputError) as err:
        load_perfusion(one_session(bids))
    assert str(err.value).startswith(f"{img}: is 4D with a single frame")


def test_too_few_frames(bids):
    n = MIN_FRAMES - 1
    img = add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0}, data=series(n_frames=n))
    with pytest.raises(InputError) as err:
        load_perfusion(one_session(bids))
    assert str(err.value).startswith(f"{img}: has {n} frames; at least {MIN_FRAMES}")


def test_min_frames_is_accepted(bids):
    add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0}, data=series(n_frames=MIN_FRAMES))
    assert load_perfusion(one_session(bids)).n_frames == MIN_FRAMES


def test_nan_and_inf_voxels_are_counted(bids):
    data = series()
    data[0, 0, 0, 3] = np.nan
    data[0, 0, 0, 4] = np.nan
    data[1, 2, 1, 0] = np.inf
    img = add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0}, data=data)
    with pytest.raises(InputError) as err:
        load_perfusion(one_session(bids))
    assert str(err.value) == f"{img}: has 3 NaN/Inf values in 2 of 32 voxels"


def test_truncated_gzip(bids):
    img = add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0})
    raw = img.read_bytes()
    img.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError) as err:
        load_perfusion(one_session(bids))
    msg = str(err.value)
    assert msg.startswith(f"{img}: ") and "truncated or corrupt" in msg and "\n" not in msg


def test_corrupt_gzip_payload(bids):
    img = add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0})
    raw = bytearray(gzip.decompress(img.read_bytes()))
    compressed = bytearray(gzip.compress(bytes(raw)))
    mid = len(compressed) // 2
    compressed[mid:mid + 40] = bytes(40)
    img.write_bytes(bytes(compressed))
    with pytest.raises(InputError) as err:
        load_perfusion(one_session(bids))
    assert str(err.value).startswith(f"{img}: ") and "corrupt" in str(err.value)


def test_truncated_uncompressed_nifti(bids):
    img = add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0}, ext=".nii")
    raw = img.read_bytes()
    img.write_bytes(raw[:-100])
    with pytest.raises(InputError) as err:
        load_perfusion(one_session(bids))
    assert str(err.value).startswith(f"{img}: image data cannot be read (truncated")


def test_not_a_nifti(bids):
    img = add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0})
    img.write_bytes(gzip.compress(b"this is not an image"))
    with pytest.raises(InputError) as err:
        load_perfusion(one_session(bids))
    assert str(err.value).startswith(f"{img}: cannot be read as NIfTI")


def test_scaled_integer_data_read_as_float32(bids):
    folder = bids / "sub-01/ses-acute/ct"
    folder.mkdir(parents=True)
    img = nib.Nifti1Image(np.full((4, 4, 2, N_FRAMES), 100, dtype=np.int16), np.eye(4))
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, folder / "sub-01_ses-acute_ctp.nii.gz")
    write_json(folder / "sub-01_ses-acute_ctp.json", {"RepetitionTime": 1.0})
    loaded = load_perfusion(one_session(bids))
    assert loaded.data.dtype == np.float32
    assert float(loaded.data[0, 0, 0, 0]) == pytest.approx(40.0)


# ---------------------------------------------------------------------------------------------
# ADC


def adc_session(bids, values, units=None) -> Session:
    add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0})
    path = write_nifti(bids / "sub-01/ses-acute/dwi/sub-01_ses-acute_ADC.nii.gz", values)
    if units is not None:
        write_json(path.with_name("sub-01_ses-acute_ADC.json"), {"Units": units})
    return one_session(bids)


BRAIN_ADC = np.array([[[0.0, 800.0], [700.0, 3000.0]]])  # 1e-6 mm^2/s, one background voxel


@pytest.mark.parametrize("scale, units", [
    (1.0, None), (1e-6, None), (1e-3, None),
    (1.0, "10^-6 mm^2/s"), (1.0, "um2/s"), (1e-6, "mm^2/s"), (1e-6, "mm2 s-1"),
    (1e-3, "10^-3 mm^2/s"), (1e-3, "1e-3 mm²/s"), (1e-3, "µm²/ms"),
])
def test_adc_converted_to_1e6_mm2_per_s(bids, scale, units):
    adc, affine = load_adc(adc_session(bids, BRAIN_ADC * scale, units))
    assert adc.dtype == np.float32 and adc.shape == BRAIN_ADC.shape and affine.shape == (4, 4)
    np.testing.assert_allclose(adc, BRAIN_ADC, rtol=1e-5)


def test_adc_units_win_over_value_range(bids):
    adc, _ = load_adc(adc_session(bids, BRAIN_ADC, "mm^2/s"))
    np.testing.assert_allclose(adc, BRAIN_ADC * 1e6, rtol=1e-5)


def test_adc_unknown_units(bids):
    s = adc_session(bids, BRAIN_ADC, "furlongs")
    with pytest.raises(InputError) as err:
        load_adc(s)
    sidecar = s.adc_file.with_name("sub-01_ses-acute_ADC.json")
    assert str(err.value).startswith(f"{sidecar}: ADC Units 'furlongs' not understood")


def test_adc_4d_rejected(bids):
    s = adc_session(bids, np.ones((2, 2, 2, 3)))
    with pytest.raises(InputError, match="an ADC map must be 3D"):
        load_adc(s)


def test_adc_absent(bids):
    add_ctp(bids, "01", "acute")
    with pytest.raises(MissingInputError, match="sub-01_ses-acute_ADC.nii.gz: no ADC map"):
        load_adc(one_session(bids))


# ---------------------------------------------------------------------------------------------
# DWI


def dwi_session(bids, n_vol=4, bval="0 1000 1000 1000", bvec=None) -> Session:
    add_ctp(bids, "01", "acute", {"RepetitionTime": 1.0})
    path = write_nifti(bids / "sub-01/ses-acute/dwi/sub-01_ses-acute_dwi.nii.gz",
                       np.ones((2, 2, 2, n_vol)))
    if bval is not None:
        path.with_name("sub-01_ses-acute_dwi.bval").write_text(bval + "\n")
    if bvec is None:
        bvec = "0 1 0 0\n0 0 1 0\n0 0 0 1"
    path.with_name("sub-01_ses-acute_dwi.bvec").write_text(bvec + "\n")
    return one_session(bids)


def test_dwi_loaded(bids):
    data, affine, bvals, bvecs = load_dwi(dwi_session(bids))
    assert data.shape == (2, 2, 2, 4) and data.dtype == np.float32 and affine.shape == (4, 4)
    np.testing.assert_array_equal(bvals, [0, 1000, 1000, 1000])
    assert bvecs.shape == (3, 4)


@pytest.mark.parametrize("read", [load_dwi, check_diffusion_inputs])
def test_dwi_bval_count_mismatch(bids, read):
    # check_diffusion_inputs, run before the perfusion analysis, gives the loader's message.
    s = dwi_session(bids, bval="0 1000 1000")
    with pytest.raises(InputError) as err:
        read(s)
    assert str(err.value) == (f"{s.bval_file}: has 3 b-values but sub-01_ses-acute_dwi.nii.gz "
                              f"has 4 volumes")


def test_dwi_bvec_count_mismatch(bids):
    s = dwi_session(bids, bvec="0 1 0\n0 0 1\n0 0 0")
    with pytest.raises(InputError) as err:
        load_dwi(s)
    assert str(err.value) == (f"{s.bvec_file}: has 3 b-vectors but sub-01_ses-acute_dwi.nii.gz "
                              f"has 4 volumes")


def test_dwi_bvec_needs_three_rows(bids):
    s = dwi_session(bids, bvec="0 1 0 0\n0 0 1 0")
    with pytest.raises(InputError) as err:
        load_dwi(s)
    assert str(err.value).startswith(f"{s.bvec_file}: has 2 rows; BIDS bvec has 3 rows")


def test_dwi_bval_not_a_number(bids):
    s = dwi_session(bids, bval="0 1000 x 1000")
    with pytest.raises(InputError) as err:
        load_dwi(s)
    assert str(err.value) == f"{s.bval_file}: line 1: 'x' is not a number"


@pytest.mark.parametrize("bval, problem", [
    ("1000 1000 1000 1000", "has no b=0 volume"),
    ("0 0 5 10", "has no diffusion-weighted volume"),
])
def test_dwi_needs_b0_and_weighted(bids, bval, problem):
    s = dwi_session(bids, bval=bval)
    with pytest.raises(InputError) as err:
        load_dwi(s)
    assert str(err.value).startswith(f"{s.bval_file}: {problem}")


def test_dwi_missing_bval(bids):
    s = dwi_session(bids, bval=None)
    assert s.bval_file is None
    with pytest.raises(MissingInputError, match=r"sub-01_ses-acute_dwi\.bval: file not found"):
        load_dwi(s)


# ---------------------------------------------------------------------------------------------
# participants.tsv


def test_participants_absent_is_none(bids):
    assert read_participants(bids) is None


def test_participants_read_and_normalised(bids):
    (bids / "participants.tsv").write_text(
        "participant_id\tage\tnihss\tsex\nsub-01\t71\t14\tF\n02\tn/a\t\tM\n03\t89+\t22\tn/a\n")
    table = read_participants(bids)
    assert table["participant_id"].tolist() == ["sub-01", "sub-02", "sub-03"]
    assert table["age"].tolist()[0] == 71.0 and np.isnan(table["age"][1])
    assert table["age"][2] == 89.0
    assert table["nihss"].tolist()[0] == 14.0 and np.isnan(table["nihss"][1])
    assert table["sex"][0] == "F" and table["sex"].isna()[2]


@pytest.mark.parametrize("content, problem", [
    ("id\tage\nsub-01\t70\n", "has no participant_id column"),
    ("participant_id,age\nsub-01,70\n", "(is it tab-separated?)"),
    ("participant_id\tage\nsub-01\t70\t3\n", "line 2 has 3 fields but the header has 2"),
    ("participant_id\tage\tnihss\nsub-01\t70\n", "line 2 has 2 fields but the header has 3"),
    ("participant_id\tage\nsub-01\tseventy\n", "line 2: age 'seventy' is not a number"),
    ("participant_id\tnihss\nsub-01\t12\nsub-02\thigh\n", "line 3: nihss 'high' is not a number"),
    ("participant_id\tnihss\nsub-01\t55\n", "line 2: nihss '55' is outside 0-42"),
    ("participant_id\tage\n01\t70\nsub-01\t71\n", "lists sub-01 more than once"),
])
def test_participants_malformed(bids, content, problem):
    path = bids / "participants.tsv"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        read_participants(bids)
    assert str(err.value).startswith(f"{path}: ")
    assert problem in str(err.value)


def test_participants_not_text(bids):
    path = bids / "participants.tsv"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(InputError) as err:
        read_participants(bids)
    assert str(err.value).startswith(f"{path}: cannot be read")
