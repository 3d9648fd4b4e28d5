"""Atomic writes: the target is complete or absent, and temporaries stay out of OUTPUT_DIR."""

import json
import os
import re

import pytest

from strokeperf import io


def test_temporary_goes_to_the_staging_dir_and_result_is_complete(tmp_path, monkeypatch):
    staging, out = tmp_path / "work" / "staging", tmp_path / "out"
    monkeypatch.setenv(io.STAGING_ENV, str(staging))
    seen = []
    with io.atomic_path(out / "a.json") as tmp:
        seen.append(tmp.parent)
        tmp.write_text("{}")
        assert not (out / "a.json").exists()        # nothing at the target until the rename
    assert seen == [staging]
    assert json.loads((out / "a.json").read_text()) == {}
    assert list(out.iterdir()) == [out / "a.json"]


def test_a_failing_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.delenv(io.STAGING_ENV, raising=False)
    with pytest.raises(RuntimeError):
        with io.atomic_path(tmp_path / "b.tsv") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_remove_partials_cleans_hidden_temporaries(tmp_path):
    (tmp_path / "sub-01").mkdir()
    (tmp_path / "sub-01" / ".x.tsv.abc.partial.tsv").write_text("half")
    (tmp_path / "sub-01" / "x.tsv").write_text("whole")
    assert io.remove_partials(tmp_path) == 1
    assert [p.name for p in (tmp_path / "sub-01").iterdir()] == ["x.tsv"]


def test_stale_pydra_locks_of_dead_processes_are_removed(tmp_path):
    import socket
    import subprocess
    import sys

    from strokeperf.cli.cache import remove_stale_locks

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    (tmp_path / "workflow-dead.lock").write_text(f"{dead}\n{host}\ntoken\n")
    (tmp_path / "workflow-alive.lock").write_text(f"{os.getpid()}\n{host}\ntoken\n")
    (tmp_path / "workflow-other-node.lock").write_text(f"{dead}\nnode-17\ntoken\n")
    assert remove_stale_locks(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workflow-alive.lock",
                                                         "workflow-other-node.lock"]


def test_file_hash_cache_lives_in_the_work_dir_and_its_dead_locks_are_cleared(tmp_path,
                                                                            monkeypatch):
    """A run killed while pydra hashed a file leaves a pid-less lock; the next run must not wait
    on it forever (it did, with the user-wide cache)."""
    from pydra.utils.hash import PersistentCache

    from strokeperf.cli.cache import use_work_dir_hash_cache

    monkeypatch.delenv("PYDRA_HASH_CACHE", raising=False)
    cache = tmp_path / "work" / "pydra_hashes"
    cache.mkdir(parents=True)
    (cache / "0123abcd.lock").write_bytes(b"")
    (cache / "0123abcd").write_bytes(b"hash")  # a finished entry is kept
    assert use_work_dir_hash_cache(tmp_path / "work") == cache
    assert sorted(p.name for p in cache.iterdir()) == ["0123abcd"]
    assert PersistentCache().location == cache
    assert os.environ["PYDRA_HASH_CACHE"] == str(cache)


def test_pipeline_cache_is_keyed_on_the_code(tmp_path, monkeypatch):
    """pydra does not see the library code a step calls: after an upgrade or an edit, a rerun with
    the same work directory must recompute, not reuse the old code's results (it did: the
    deconvolution step was reused across a change of parametric.py)."""
    import shutil

    from strokeperf import __version__
    from strokeperf.cli import cache

    package = tmp_path / "strokeperf"
    shutil.copytree(cache.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = cache.code_fingerprint(package)
    assert cache.code_fingerprint(package) == before            # same code, same cache: resumable
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "x.pyc").write_bytes(b"compiled")  # not source
    assert cache.code_fingerprint(package) == before
    source = package / "deconvolution" / "parametric.py"
    source.write_text(source.read_text() + "\n# edited\n")
    assert cache.code_fingerprint(package) != before
    source.unlink()
    assert cache.code_fingerprint(package) != before

    # A dependency upgrade counts as a change of the code (ANTsPy or numpy can change results).
    versions = cache.dependency_versions()
    import numpy
    assert versions["numpy"] == numpy.__version__ and "antspyx" in versions and "pytest" not in versions
    upgraded = dict(versions, antspyx=versions["antspyx"] + ".post1")
    assert cache.code_fingerprint(package, versions) != cache.code_fingerprint(package, upgraded)
    assert cache.code_fingerprint(package, versions) == cache.code_fingerprint(package)

    root = cache.pipeline_cache_root(tmp_path / "work")
    assert root.parent == tmp_path / "work" / "pydra"
    assert root.name == f"{__version__}-{cache.code_fingerprint()[:12]}"
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "f" * 64)
    assert cache.pipeline_cache_root(tmp_path / "work").name == f"{__version__}-{'f' * 12}"


def test_caches_of_other_code_are_listed_for_the_user_to_delete(tmp_path):
    from strokeperf.cli import cache

    ours = cache.pipeline_cache_root(tmp_path / "work")
    assert cache.other_code_caches(ours) == []                       # no work directory yet
    (ours / "slurm_scripts").mkdir(parents=True)                   # pydra's own, inside ours
    (ours / ("python-" + "a" * 32)).mkdir()
    older = ours.parent / "0.0.9-0123456789ab"
    older.mkdir()
    (ours.parent / "notes").mkdir()                                # not a cache of strokeperf
    (ours.parent / "0.0.8-0123456789ab").write_text("a file, not a cache")
    (ours.parent / "0.0.7-0123456789abc").mkdir()                  # 13 hex digits
    assert cache.other_code_caches(ours) == [older]


def test_a_kept_session_s_step_files_come_from_this_code_s_cache(tmp_path, capsys):
    """Benchmarks read a kept session's intermediate images (they broke when the cache moved
    under the code's digest). Another code's file is read only when asked for, and then named."""
    from strokeperf.cli import cache

    work = tmp_path / "work"
    ours = cache.pipeline_cache_root(work)
    with pytest.raises(FileNotFoundError, match=rf"no delta_hu\.nii under {re.escape(str(ours))} "):
        cache.finished_step_file(work, "delta_hu.nii")
    for n, code in enumerate(("0.0.1-000000000000", "0.0.2-000000000000")):
        step = work / "pydra" / code / "python-abc"
        step.mkdir(parents=True)
        (step / "delta_hu.nii").write_bytes(code.encode())
        os.utime(step / "delta_hu.nii", (n, n))                    # 0.0.2's is the newer
    with pytest.raises(FileNotFoundError, match="2 in caches of other strokeperf code"):
        cache.finished_step_file(work, "delta_hu.nii")
    newest = cache.finished_step_file(work, "delta_hu.nii", any_code=True)
    assert newest.read_bytes() == b"0.0.2-000000000000"
    assert str(newest) in capsys.readouterr().err

    (ours / "python-def").mkdir(parents=True)
    (ours / "python-def" / "delta_hu.nii").write_bytes(b"this code")
    for any_code in (False, True):
        assert cache.finished_step_file(work, "delta_hu.nii", any_code).read_bytes() == b"this code"
    (ours / "python-0ff").mkdir()
    (ours / "python-0ff" / "delta_hu.nii").write_bytes(b"second session")
    with pytest.raises(FileNotFoundError, match="several sessions"):
        cache.finished_step_file(work, "delta_hu.nii", any_code=True)
