"""The participant and group runs of the command line, and :func:`main` (the ``strokeperf``
console script; ``python -m strokeperf.cli`` runs it too)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import sys
import time
import uuid
from pathlib import Path

from strokeperf import __version__, io, lesion_frequency, tables
from strokeperf.bids.derivatives import aif_mask_path, session_ids, volumes_path
from strokeperf.bids.discovery import Session, discover_sessions
from strokeperf.bids.participants import read_participants
from strokeperf.cli.cache import (other_code_caches, pipeline_cache_root, remove_stale_locks,
                                  use_work_dir_hash_cache)
from strokeperf.cli.parser import build_parser, parameters_from_args
from strokeperf.config import ConfigError
from strokeperf.errors import (EXIT_OK, EXIT_SESSION_FAILED, InputError, MissingInputError,
                               StrokeperfError)
from strokeperf.interfaces.derivatives import write_dataset_description
from strokeperf.reports import write_group_report

def _ctp_workflow():
    from strokeperf.workflows.ctp import CTPSession
    return CTPSession


def _dsc_workflow():
    from strokeperf.workflows.dsc import DSCSession
    return DSCSession


#: Workflow of one session per perfusion modality (imported when needed: pydra is slow to import).
SESSION_WORKFLOWS = {"ctp": _ctp_workflow, "dsc": _dsc_workflow}


def _session_record(session: Session, work_dir: Path, participants) -> dict:
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
        return read_participants(bids_dir)
    except InputError as exc:
        raise MissingInputError(exc.path, exc.problem) from exc


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
    """Name the session's user AIF mask (``--aif-mask-dir``: the mask where strokeperf writes it,
    so a previous run's output directory can be given as it is) and its content digest in the
    session record, so that editing the mask re-runs the session instead of reusing the cache."""
    if not aif_mask_dir:
        return
    path = aif_mask_path(aif_mask_dir, record)
    if path.is_file():
        record["aif_mask_file"] = str(path)
        record["aif_mask_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()


def run_participant(args) -> int:
    _check_slurm_args(args.slurm_args)
    bids_dir, output_dir = args.bids_dir.resolve(), args.output_dir.resolve()
    work_dir = args.work_dir.resolve()
    parameters = parameters_from_args(args)
    sessions = discover_sessions(bids_dir, args.participant_label, args.session_label)
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
        tables.write_row(volumes_path(output_dir, r),
                         tables.failed_row(*session_ids(r), r["modality"], message))
    table = _write_group_outputs(output_dir, participants)
    selected = set()
    for r in records:
        participant_id, session_id = session_ids(r)
        selected.add((participant_id, session_id or tables.NA, r["modality"]))
    mine = table[[k in selected for k in zip(table.participant_id, table.session_id,
                                               table.modality)]]
    failed = int((mine["status"] == "failed").sum())
    _print_summary(mine, output_dir, time.time() - started)
    return EXIT_SESSION_FAILED if failed else EXIT_OK


def _write_group_outputs(output_dir: Path, participants):
    table = tables.write_group_table(output_dir, participants)
    frequency_maps = lesion_frequency.write_frequency_maps(output_dir, table)
    write_group_report(output_dir, table, frequency_maps)
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
