"""Bad input (SPEC.md): one clear message naming the file, the session marked failed, the other
sessions complete, nothing half-written, and the exit codes of the command line."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from strokeperf.cli import main


def _clone_participant(bids: Path, src: str, dst: str) -> Path:
    """Copy participant ``src``'s CTP (image and sidecar) to a new participant ``dst``."""
    (bids / f"sub-{dst}" / "ct").mkdir(parents=True)
    for f in (bids / f"sub-{src}" / "ct").iterdir():
        shutil.copy(f, bids / f"sub-{dst}" / "ct" / f.name.replace(f"sub-{src}", f"sub-{dst}"))
    return bids / f"sub-{dst}" / "ct" / f"sub-{dst}_ctp.nii.gz"


def _rewrite(path: Path, transform, dtype=None):
    img = nib.load(path)
    data = transform(np.asarray(img.dataobj, dtype=np.float32))
    nib.save(nib.Nifti1Image(data.astype(dtype or img.get_data_dtype()), img.affine), path)


def _edit_sidecar(path: Path, edit):
    sidecar = path.with_name(path.name.replace(".nii.gz", ".json"))
    meta = json.loads(sidecar.read_text())
    edit(meta)
    sidecar.write_text(json.dumps(meta))


def _no_bolus(d):
    return np.repeat(d[..., :1], d.shape[3], axis=3)


SIDECAR_CASES = {"notiming", "wrongcount", "nonmonotonic"}  # the message names the sidecar

BAD_CASES = {
    # participant: (how to break it, words the message must contain)
    "threed": (lambda p: _rewrite(p, lambda d: d[..., 0]), "3D"),
    "fewframes": (lambda p: _rewrite(p, lambda d: d[..., :5]), "frames"),
    "notiming": (lambda p: _edit_sidecar(p, lambda m: m.pop("RepetitionTime", None)
                                         or m.pop("VolumeTiming", None)), "timing"),
    "wrongcount": (lambda p: _edit_sidecar(p, lambda m: (m.pop("RepetitionTime", None),
                                                         m.update(VolumeTiming=[0.0, 1.0, 2.0]))),
                   "VolumeTiming"),
    "nonmonotonic": (lambda p: _edit_sidecar(p, lambda m: m.update(VolumeTiming=list(
        np.r_[0.0, 2.0, 1.0, np.arange(3, nib.load(p).shape[3]) * 1.5]))), "increasing"),
    "nan": (lambda p: _rewrite(p, lambda d: np.where(np.indices(d.shape)[0] == 5, np.nan, d),
                               np.float32), "NaN"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
    "air": (lambda p: _rewrite(p, lambda d: np.full_like(d, -1000.0)), "brain mask"),
    "nobolus": (lambda p: _rewrite(p, _no_bolus), "bolus"),
}


@pytest.fixture(scope="module")
def bad_cohort(tmp_path_factory, small_ctp_dataset):
    """The good phantom participant plus one broken clone per SPEC bad-input case, run once."""
    root = tmp_path_factory.mktemp("bad_cohort")
    bids = root / "bids"
    shutil.copytree(small_ctp_dataset, bids)
    broken = {}
    for label, (breaker, _) in BAD_CASES.items():
        path = _clone_participant(bids, "ok", label)
        breaker(path)
        broken[label] = path
    code = main([str(bids), str(root / "out"), "participant", "-w", str(root / "work"),
                 "--nprocs", "2"])
    table = pd.read_csv(root / "out" / "group_perfusion.tsv", sep="\t", dtype=str,
                        keep_default_na=False).set_index("participant_id")
    return code, table, root / "out", broken


def test_cohort_with_bad_sessions_exits_1_and_keeps_the_good_one(bad_cohort):
    code, table, out, _ = bad_cohort
    assert code == 1
    good = table.loc["sub-ok"]
    assert good["status"] == "ok" and good["error"] == ""
    assert float(good["tmax6_ml"]) > 0
    assert (out / "sub-ok" / "perf" / "sub-ok_desc-ctp_tmax.nii.gz").exists()
    assert (out / "sub-ok.html").exists() and (out / "group.html").exists()


@pytest.mark.parametrize("label", sorted(BAD_CASES))
def test_each_bad_input_is_a_failed_row_naming_the_file_and_problem(bad_cohort, label):
    _, table, out, broken = bad_cohort
    row = table.loc[f"sub-{label}"]
    assert row["status"] == "failed"
    named = broken[label]
    if label in SIDECAR_CASES:
        named = named.with_name(named.name.replace(".nii.gz", ".json"))
    assert named.name in row["error"], row["error"]
    assert BAD_CASES[label][1].lower() in row["error"].lower(), row["error"]
    assert "Traceback" not in row["error"] and "\n" not in row["error"]
    assert row["core_ml"] == "n/a" and row["defuse3"] == "n/a"
    # A failed session leaves its failed row and nothing else in OUTPUT_DIR.
    files = sorted(p.name for p in (out / f"sub-{label}").rglob("*") if p.is_file())
    assert files == [f"sub-{label}_desc-ctp_volumes.tsv"]


def test_nothing_half_written(bad_cohort):
    _, _, out, _ = bad_cohort
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    for p in out.rglob("*.nii.gz"):
        with gzip.open(p) as f:
            f.read()  # every image decompresses completely


def test_group_level_rebuilds_the_same_table(bad_cohort, small_ctp_dataset):
    _, table, out, _ = bad_cohort
    before = (out / "group_perfusion.tsv").read_bytes()
    (out / "group_perfusion.tsv").unlink()
    assert main([str(small_ctp_dataset), str(out), "group"]) == 1  # failed sessions remain
    assert (out / "group_perfusion.tsv").read_bytes() == before


def test_exit_0_when_every_selected_session_succeeds(ctp_dataset_copy, tmp_path, capsys):
    # A work directory reused after an upgrade: the old code's cache is named, not used, not deleted.
    old_cache = tmp_path / "work" / "pydra" / "0.0.9-0123456789ab"
    old_cache.mkdir(parents=True)
    assert main([str(ctp_dataset_copy), str(tmp_path / "out"), "participant",
                 "-w", str(tmp_path / "work"), "--participant-label", "sub-ok",
                 "--no-motion-correction"]) == 0
    assert "1 cache(s) of other strokeperf code (0.0.9-0123456789ab)" in capsys.readouterr().out
    assert old_cache.is_dir() and not any(old_cache.iterdir())


def test_exit_18_when_labels_match_nothing(ctp_dataset_copy, tmp_path, capsys):
    code = main([str(ctp_dataset_copy), str(tmp_path / "out"), "participant",
                 "--participant-label", "nobody"])
    assert code == 18
    assert "nobody" in capsys.readouterr().err


def test_exit_16_when_not_a_bids_dataset(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(tmp_path / "out"), "participant"]) == 16
    assert "sub-" in capsys.readouterr().err


def test_exit_66_for_unreadable_participants_tsv(ctp_dataset_copy, tmp_path, capsys):
    (ctp_dataset_copy / "participants.tsv").write_text("participant_id\tage\nsub-ok\t71\textra\n")
    code = main([str(ctp_dataset_copy), str(tmp_path / "out"), "participant",
                 "-w", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 66, err
    assert "participants.tsv" in err
    assert not (tmp_path / "out" / "group_perfusion.tsv").exists()


def test_exit_2_for_usage_errors(ctp_dataset_copy, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([str(ctp_dataset_copy), str(tmp_path / "out"), "everything"])
    assert exc.value.code == 2
    assert main([str(ctp_dataset_copy), str(tmp_path / "out"), "participant",
                 "--frame-interval", "-1"]) == 2
