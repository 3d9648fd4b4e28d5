"""The pipeline on a real one-node SLURM cluster (tests/cluster/slurm-up.sh) through pydra's slurm
worker: the group table equals the cf worker's, and a corrupt session fails alone."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from conftest import make_phantom
from strokeperf.cli import main


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    bids = tmp_path_factory.mktemp("slurm_cohort") / "bids"
    for label, seed in (("s1", 71), ("s2", 72)):
        make_phantom(bids, label, seed=seed)
    # A third participant whose series is a truncated gzip.
    (bids / "sub-bad" / "ct").mkdir(parents=True)
    src = bids / "sub-s1" / "ct" / "sub-s1_ctp.nii.gz"
    data = src.read_bytes()
    (bids / "sub-bad" / "ct" / "sub-bad_ctp.nii.gz").write_bytes(data[: len(data) // 2])
    shutil.copy(src.with_name("sub-s1_ctp.json"), bids / "sub-bad" / "ct" / "sub-bad_ctp.json")
    return bids


def test_slurm_run_equals_cf_run_and_isolates_the_failure(slurm_cluster, cohort, tmp_path):
    # Motion correction has its own tests; here it would only add ANTs time to every session.
    code_cf = main([str(cohort), str(tmp_path / "cf"), "participant", "-w", str(tmp_path / "w_cf"),
                    "--nprocs", "2", "--no-motion-correction"])
    sbatch = f"-p {slurm_cluster.partition} --mem=3G -t 30"
    code_slurm = main([str(cohort), str(tmp_path / "slurm"), "participant", "--worker", "slurm",
                       "--slurm-args", sbatch, "-w", str(tmp_path / "w_slurm"),
                       "--no-motion-correction"])
    assert code_cf == code_slurm == 1
    cf = (tmp_path / "cf" / "group_perfusion.tsv").read_bytes()
    assert (tmp_path / "slurm" / "group_perfusion.tsv").read_bytes() == cf
    table = pd.read_csv(tmp_path / "slurm" / "group_perfusion.tsv", sep="\t",
                        keep_default_na=False).set_index("participant_id")
    assert list(table["status"]) == ["failed", "ok", "ok"]
    assert "sub-bad_ctp.nii.gz" in table.loc["sub-bad", "error"]
    assert "truncated" in table.loc["sub-bad", "error"]
    # Every task ran as a SLURM job that the accounting database knows.
    scripts = list((tmp_path / "w_slurm" / "pydra").rglob("slurm-*.out"))
    assert scripts, "no SLURM job output found: the slurm worker was not used"


def test_reserved_sbatch_options_are_a_usage_error(cohort, tmp_path, capsys):
    code = main([str(cohort), str(tmp_path / "o"), "participant", "--worker", "slurm",
                 "--slurm-args", "-p debug -e /tmp/x.err"])
    assert code == 2
    assert "-e" in capsys.readouterr().err
