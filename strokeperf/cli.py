"""``strokeperf BIDS_DIR OUTPUT_DIR {participant,group}``: the BIDS App command line (SPEC.md)."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shlex
import socket
import sys
import time
import uuid
from pathlib import Path

from strokeperf import __version__, inputs, io, lesion_frequency, report, tables
from strokeperf.config import ConfigError, load_parameters
from strokeperf.errors import (EXIT_OK, EXIT_SESSION_FAILED, InputError, MissingInputError,
                               StrokeperfError)
from strokeperf.interfaces.derivatives import volumes_path, write_dataset_description

log = logging.getLogger("strokeperf")

DECONVOLUTION_METHODS = ("parametric", "bcsvd", "csvd", "ssvd", "tikhonov")
#: The installed package's source, whose digest names the pipeline cache (:func:`pipeline_cache_root`).
PACKAGE_DIR = Path(__file__).resolve().parent


def _ctp_workflow():
    from strokeperf.workflows.ctp import CTPSession
    return CTPSession


def _dsc_workflow():
    from strokeperf.workflows.dsc import DSCSession
    return DSCSession


#: Workflow of one session per perfusion modality (imported when needed: pydra is slow to import).
SESSION_WORKFLOWS = {"ctp": _ctp_workflow, "dsc": _dsc_workflow}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="strokeperf",
        description="Perfusion maps, ischemic core, Tmax lesions, mismatch and trial-eligibility "
                    "profiles from CT perfusion and DSC-MRI in a BIDS dataset.",
        epilog="Exit codes: 0 all sessions succeeded; 1 a session failed (the others are written); "
               "2 usage error; 16 not a usable BIDS dataset; 18 labels matched nothing; "
               "66 a required input file is missing or unreadable.")
    p.add_argument("bids_dir", type=Path, help="raw BIDS dataset (or ISLES 2024 folder)")
    p.add_argument("output_dir", type=Path, help="where the derivatives are written")
    p.add_argument("analysis_level", choices=["participant", "group"],
                   help="participant: process sessions and rebuild the group table; "
                        "group: only rebuild the group table and report")
    p.add_argument("--version", action="version", version=f"strokeperf {__version__}")
    sel = p.add_argument_group("selection")
    sel.add_argument("--participant-label", nargs="+", metavar="LABEL",
                     help="participants to process, with or without 'sub-'")
    sel.add_argument("--session-label", nargs="+", metavar="LABEL",
                     help="sessions to process, with or without 'ses-'")
    run = p.add_argument_group("execution")
    run.add_argument("-w", "--work-dir", type=Path, default=Path("work"),
                     help="pydra cache; reruns with the same one reuse the steps the same "
                          "strokeperf code finished (default: ./work)")
    run.add_argument("--nprocs", type=int, default=None,
                     help="processes for the cf worker (default: all cores)")
    run.add_argument("--worker", choices=["cf", "slurm", "debug"], default="cf",
                     help="pydra worker (default: cf, local processes)")
    run.add_argument("--slurm-args", default="", help="extra sbatch arguments, e.g. \"-p short\"")
    run.add_argument("--config", type=Path, help="TOML file of method parameters")
    run.add_argument("-v", "--verbose", action="store_true", help="show pydra's log messages")
    meth = p.add_argument_group("methods (defaults in the README; each recorded in the sidecars)")
    meth.add_argument("--frame-interval", type=float,
                      help="seconds between frames when the sidecar has no timing (ISLES 2024)")
    meth.add_argument("--deconvolution", choices=DECONVOLUTION_METHODS)
    meth.add_argument("--denoise-fwhm", dest="denoise_fwhm_mm", type=float, metavar="MM",
                      help="in-brain spatial smoothing of the concentration (FWHM, mm; 0 = none)")
    meth.add_argument("--core-rcbf", type=float, help="CTP core: rCBF below this (default 0.30)")
    meth.add_argument("--core-rcbf-fwhm", dest="core_rcbf_fwhm_mm", type=float, metavar="MM",
                      help="CTP core: smoothing of rCBF within tissue before the threshold "
                           "(FWHM, mm; default 4, 0 = none)")
    meth.add_argument("--core-adc", type=float,
                      help="MRI core: ADC below this, 1e-6 mm^2/s (default 620)")
    meth.add_argument("--tmax-thresholds", type=float, nargs="+", metavar="S",
                      help="Tmax thresholds in s (default 4 6 8 10)")
    meth.add_argument("--min-cluster-ml", type=float, help="smallest lesion cluster kept, mL")
    meth.add_argument("--vessel-cbv", type=float,
                      help="CBV above which a voxel is a vessel, mL/100 g")
    meth.add_argument("--no-motion-correction", dest="motion_correction", action="store_false",
                      default=None, help="skip rigid motion correction of the perfusion series")
    meth.add_argument("--leakage-correction", action="store_true", default=None,
                      help="DSC: Boxerman-Schmainda-Weisskoff leakage correction")
    meth.add_argument("--aif-mask-dir", type=Path, metavar="DIR",
                      help="take a session's AIF from DIR/sub-P[/ses-S]/perf/"
                           "<prefix>_desc-<ctp|dsc>AIF_mask.nii.gz when it exists (e.g. an edited "
                           "earlier output); automatic selection otherwise")
    meth.add_argument("--normalise", action="store_true", default=None,
                      help="also warp each session's lesion masks to the ICBM152 2009a template "
                           "(MNI152NLin2009aAsym, 2 mm; about 10 s per session) and build the "
                           "cohort's lesion-frequency maps")
    return p


def _session_record(session: inputs.Session, work_dir: Path, participants) -> dict:
    record = session.to_dict()
    key = f"{session.prefix}_{session.modality}"
    # Where a failing task leaves its message, and where the datasink marks completion of a run.
    record["failure_file"] = str(work_dir / "failures" / f"{key}.json")
    record["done_file"] = str(work_dir / "completed" / f"{key}.txt")
    record["age"] = record["nihss"] = None
    if participants is not None:
        match = participants[participants["participant_id"] == session.participant_id]
        if len(match):
            for key in ("age", "nihss"):
                if key in match.columns and match[key].notna().iloc[0]:
                    record[key] = float(match[key].iloc[0])
    return record


def _read_participants(bids_dir: Path):
    """participants.tsv, if present. An unreadable one stops the run before any processing (exit
    66): every session's clinical profile depends on it, so no session could be reported fully."""
    try:
        return inputs.read_participants(bids_dir)
    except InputError as exc:
        raise MissingInputError(exc.path, exc.problem) from exc


def remove_stale_locks(cache_root: Path) -> int:
    """Delete pydra lock files left by a killed run; returns how many were removed.

    A lock file holds the pid and host name of the process that took it. pydra itself clears stale
    locks of tasks inside a workflow but not those of the workflows themselves, so a run killed with
    SIGKILL would make the next run wait forever. Only locks of processes that no longer exist on
    this host are removed: a live run (or one on another node of a cluster) keeps its locks.
    """
    removed = 0
    host = socket.gethostname()
    for lock in Path(cache_root).glob("*.lock"):
        try:
            pid_text, lock_host = lock.read_text().splitlines()[:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if lock_host != host:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            lock.unlink(missing_ok=True)
            removed += 1
        except PermissionError:
            pass  # a live process of another user
    return removed


def use_work_dir_hash_cache(work_dir: Path) -> Path:
    """Keep pydra's persistent file-hash cache inside the work directory and clear its locks.

    pydra guards each cached file hash with a lock file that holds no pid; a run killed while it
    held one (SIGKILL, a SLURM time limit) leaves it behind and the next run waits on it forever.
    By default that cache is user-wide (``~/.cache/pydra``), where no run can tell a dead lock from
    a live one. Inside the work directory it is this run's alone (one run per work directory, as
    documented), so every lock found at start-up is stale. The environment variable is inherited by
    the cf and SLURM workers.
    """
    cache = work_dir / "pydra_hashes"
    cache.mkdir(parents=True, exist_ok=True)
    for lock in cache.glob("*.lock"):
        lock.unlink(missing_ok=True)
    os.environ["PYDRA_HASH_CACHE"] = str(cache)
    return cache


def dependency_versions() -> dict[str, str]:
    """Installed versions of strokeperf's runtime requirements (read from its package metadata, so
    the list follows pyproject.toml; optional extras such as ``test`` are left out)."""
    from importlib import metadata

    try:
        requirements = metadata.requires("strokeperf") or []
    except metadata.PackageNotFoundError:       # running from a source tree that is not installed
        return {}
    versions = {}
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def code_fingerprint(package_dir: Path = PACKAGE_DIR, dependencies: dict | None = None) -> str:
    """SHA-256 of every Python source file of the package (relative path and bytes, in path order)
    and of the installed versions of its requirements (default :func:`dependency_versions`).

    Editing, adding or removing a source file, or upgrading numpy, ANTsPy, pydra or another
    requirement, changes the digest; reading the ~40 files and the metadata takes about 10 ms."""
    digest = hashlib.sha256()
    package_dir = Path(package_dir)
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    versions = dependency_versions() if dependencies is None else dependencies
    for name, version in sorted(versions.items()):
        digest.update(f"{name}=={version}\0".encode())
    return digest.hexdigest()


def pipeline_cache_root(work_dir: Path) -> Path:
    """pydra's cache for the strokeperf code that is running: ``WORK_DIR/pydra/<version>-<digest>``.

    pydra keys a step's cache on its inputs and the task's definition, not on the library code the
    step calls, so after an upgrade (or a local edit) a rerun with the same work directory would
    silently reuse results computed by the old code. Keying the directory on the digest of the
    source and of the requirements' versions (:func:`code_fingerprint`) keeps resumption for the
    same code and recomputes after any change; fMRIPrep similarly names its working directory by
    version, which would miss edits within one.
    """
    return Path(work_dir) / "pydra" / f"{__version__}-{code_fingerprint()[:12]}"


#: Name of a pipeline cache directory: ``<version>-<first 12 hex digits of the code digest>``.
CACHE_NAME = re.compile(r"[0-9][^/]*-[0-9a-f]{12}")


def other_code_caches(cache_root: Path) -> list[Path]:
    """Pipeline caches beside ``cache_root`` (this code's, :func:`pipeline_cache_root`) that other
    strokeperf code wrote: never read by this run, left for the user to delete."""
    parent = Path(cache_root).parent
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir()
                  if p.is_dir() and p != Path(cache_root) and CACHE_NAME.fullmatch(p.name))


def finished_step_file(work_dir: Path, name: str, any_code: bool = False) -> Path:
    """The one file ``name`` that a finished step wrote under WORK_DIR's cache of this code.

    For benchmarks and debugging that read a kept session's intermediate images (e.g.
    ``delta_hu.nii``). With ``any_code``, a session run by other strokeperf code is read too when
    this code's cache has none (its newest such file, named on stderr): inputs to the step being
    timed or tried stay valid across an edit of it. Raises :class:`FileNotFoundError` naming the
    cache searched when there is no such file, or when this code's cache holds several sessions.
    """
    cache = pipeline_cache_root(work_dir)
    found = sorted(cache.glob(f"python-*/{name}"))
    if len(found) > 1:
        raise FileNotFoundError(f"{len(found)} files {name} under {cache}: the work directory "
                                "holds several sessions; keep one session per work directory")
    if found:
        return found[0]
    others = [f for c in other_code_caches(cache) for f in c.glob(f"python-*/{name}")]
    if any_code and others:
        newest = max(others, key=lambda f: f.stat().st_mtime)
        print(f"reading {newest}, written by other strokeperf code", file=sys.stderr)
        return newest
    hint = (f"; {len(others)} in caches of other strokeperf code" if others else "")
    raise FileNotFoundError(f"no {name} under {cache}{hint} (was the session run with this "
                            "strokeperf code?)")


def _submitter(args, cache_root: Path):
    from pydra.engine.submitter import Submitter

    kwargs = {}
    if args.worker == "cf" and args.nprocs:
        kwargs["n_procs"] = args.nprocs
    if args.worker == "slurm" and args.slurm_args:
        kwargs["sbatch_args"] = args.slurm_args
    return Submitter(worker=args.worker, cache_root=cache_root, clean_stale_locks=True, **kwargs)


#: sbatch options the pydra slurm worker sets itself (it reads each job's own output and error
#: files; pydra 1.0a12 crashes when they are overridden).
_RESERVED_SBATCH = ("-o", "-e", "--output", "--error", "-J", "--job-name")


def _check_slurm_args(slurm_args: str) -> None:
    for token in shlex.split(slurm_args or ""):
        name = token.split("=", 1)[0]
        if name in _RESERVED_SBATCH:
            raise ConfigError(f"--slurm-args must not set {name}: strokeperf's SLURM worker names "
                              "each job's output and error files itself")


def _add_user_aif_mask(record: dict, aif_mask_dir: str | None) -> None:
    """Name the session's user AIF mask (``--aif-mask-dir``) and its content digest in the
    session record, so that editing the mask re-runs the session instead of reusing the cache."""
    from strokeperf.interfaces.ctp import user_aif_mask_path

    path = user_aif_mask_path(aif_mask_dir, record)
    if path is not None:
        record["aif_mask_file"] = str(path)
        record["aif_mask_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()


def run_participant(args) -> int:
    _check_slurm_args(args.slurm_args)
    bids_dir, output_dir = args.bids_dir.resolve(), args.output_dir.resolve()
    work_dir = args.work_dir.resolve()
    parameters = load_parameters(
        args.config, frame_interval=args.frame_interval, deconvolution=args.deconvolution,
        denoise_fwhm_mm=args.denoise_fwhm_mm, core_rcbf=args.core_rcbf,
        core_rcbf_fwhm_mm=args.core_rcbf_fwhm_mm, core_adc=args.core_adc,
        tmax_thresholds=args.tmax_thresholds, min_cluster_ml=args.min_cluster_ml,
        vessel_cbv=args.vessel_cbv, motion_correction=args.motion_correction,
        leakage_correction=args.leakage_correction, normalise=args.normalise,
        aif_mask_dir=None if args.aif_mask_dir is None else str(args.aif_mask_dir))
    sessions = inputs.discover_sessions(bids_dir, args.participant_label, args.session_label)
    participants = _read_participants(bids_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    io.remove_partials(output_dir)
    # Temporaries of atomic writes go to the work directory (inherited by cf and SLURM workers).
    os.environ[io.STAGING_ENV] = str(work_dir / "staging")
    use_work_dir_hash_cache(work_dir)
    cache_root = pipeline_cache_root(work_dir)
    cache_root.mkdir(parents=True, exist_ok=True)
    remove_stale_locks(cache_root)
    write_dataset_description(output_dir)
    records = [_session_record(s, work_dir, participants) for s in sessions]
    for r in records:
        _add_user_aif_mask(r, parameters.aif_mask_dir)
    for r in records:
        Path(r["failure_file"]).unlink(missing_ok=True)
    started = time.time()
    run_id = uuid.uuid4().hex
    print(f"strokeperf {__version__}: {len(records)} series from {bids_dir}", flush=True)
    stale = other_code_caches(cache_root)
    if stale:
        print(f"  {work_dir / 'pydra'} also holds {len(stale)} cache(s) of other strokeperf code "
              f"({', '.join(p.name for p in stale)}); this run does not use them, and they can be "
              "deleted unless a run of that code is to resume", flush=True)
    for modality in ("ctp", "dsc"):
        chosen = [r for r in records if r["modality"] == modality]
        if chosen:
            task = SESSION_WORKFLOWS[modality]()(output_dir=str(output_dir), run_id=run_id,
                                                 config=parameters.to_dict()).split(session=chosen)
            with _submitter(args, cache_root) as submitter:
                submitter(task, raise_errors=False)
    for r in records:
        if Path(r["done_file"]).exists() and Path(r["done_file"]).read_text() == run_id:
            continue
        failure = Path(r["failure_file"])
        if failure.exists():
            message = json.loads(failure.read_text())["message"]
        else:
            message = f"{r['perfusion_file']}: processing did not complete; details in {work_dir}"
        tables.write_row(volumes_path(output_dir, r), tables.failed_row(
            f"sub-{r['subject']}", f"ses-{r['session']}" if r["session"] else None,
            r["modality"], message))
    table = _write_group_outputs(output_dir, participants)
    selected = {(f"sub-{r['subject']}", f"ses-{r['session']}" if r["session"] else "n/a",
                 r["modality"]) for r in records}
    mine = table[[k in selected for k in zip(table.participant_id, table.session_id,
                                               table.modality)]]
    failed = int((mine["status"] == "failed").sum())
    _print_summary(mine, output_dir, time.time() - started)
    return EXIT_SESSION_FAILED if failed else EXIT_OK


def _write_group_outputs(output_dir: Path, participants):
    table = tables.write_group_table(output_dir, participants)
    frequency_maps = lesion_frequency.write_frequency_maps(output_dir, table)
    report.write_group_report(output_dir, table, frequency_maps)
    return table


def _print_summary(table, output_dir: Path, seconds: float) -> None:
    for r in table.itertuples():
        where = r.participant_id + ("" if r.session_id == "n/a" else f" {r.session_id}")
        if r.status == "ok":
            print(f"  {where} {r.modality}: core {r.core_ml} mL, Tmax>6s {r.tmax6_ml} mL, "
                  f"mismatch ratio {r.mismatch_ratio}")
        else:
            print(f"  {where} {r.modality}: FAILED: {r.error}")
    print(f"Outputs in {output_dir} ({seconds:.0f} s): group table "
          f"{output_dir / tables.GROUP_TABLE}, cohort report {output_dir / 'group.html'}")


def run_group(args) -> int:
    output_dir = args.output_dir.resolve()
    if not output_dir.is_dir():
        raise MissingInputError(output_dir, "output directory not found; run the "
                                                   "participant level first")
    participants = _read_participants(args.bids_dir.resolve())
    table = _write_group_outputs(output_dir, participants)
    print(f"Group table of {len(table)} session(s): {output_dir / tables.GROUP_TABLE}")
    return EXIT_SESSION_FAILED if (table["status"] == "failed").any() else EXIT_OK


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("pydra").setLevel(logging.CRITICAL)
    try:
        if args.analysis_level == "group":
            return run_group(args)
        return run_participant(args)
    except StrokeperfError as exc:
        print(f"strokeperf: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())

