"""Tiny pydra tasks for the SLURM worker tests (tests/pipeline/test_slurm.py).

They live in an importable module, not in the test file: the slurm worker pickles each task and a
fresh interpreter on the compute node must import the functions by name (so this folder has to be
on PYTHONPATH for the jobs, which sbatch passes on with the submitting environment).
"""
import os
import socket

from pydra.compose import python, workflow

FAIL_MARK = "toy task refused input"


@python.define(outputs=["out"])
def Shift(x: int) -> int:
    """x + 10; a negative x fails with a message naming the value."""
    if x < 0:
        raise ValueError(f"{FAIL_MARK} x={x}")
    return x + 10


@python.define(outputs=["out", "where"])
def Square(y: int) -> tuple[int, str]:
    """y squared, and where the job ran (host and SLURM job id) to prove it went through sbatch."""
    return y * y, f"{socket.gethostname()}:{os.environ.get('SLURM_JOB_ID', 'no-slurm')}"


@workflow.define(outputs=["out", "where"])
def ShiftSquare(x: int) -> tuple[int, str]:
    """(x + 10) ** 2 in two SLURM jobs."""
    shifted = workflow.add(Shift(x=x))
    squared = workflow.add(Square(y=shifted.out))
    return squared.out, squared.where
