"""Errors a user can act on, and the exit codes of the command line (SPEC.md)."""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_SESSION_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_BIDS = 16
EXIT_NO_MATCH = 18
EXIT_MISSING_INPUT = 66


class StrokeperfError(Exception):
    """Base class: a problem reported to the user as one line, never a traceback."""

    exit_code = EXIT_SESSION_FAILED


class InputError(StrokeperfError):
    """An input file is unusable.  The message names the file and the problem.

    >>> str(InputError("sub-01_ctp.nii.gz", "is 3D; a 4D series is needed"))
    'sub-01_ctp.nii.gz: is 3D; a 4D series is needed'
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Errors cross process boundaries (pydra's cf and slurm workers pickle them).
        return (type(self), (self.path, self.problem))


class DataError(StrokeperfError):
    """The data of an input cannot be analysed (e.g. the bolus was not captured).

    Raised by the array-level algorithms, which do not know file names; the interface that called
    them re-raises it as :class:`InputError` naming the file.
    """


class MissingInputError(InputError):
    """A required input file does not exist or cannot be read (exit code 66)."""

    exit_code = EXIT_MISSING_INPUT


class NotBIDSError(StrokeperfError):
    """The input directory is not a usable BIDS dataset (exit code 16)."""

    exit_code = EXIT_NOT_BIDS


class NoMatchError(StrokeperfError):
    """Labels or filters matched no session (exit code 18)."""

    exit_code = EXIT_NO_MATCH


def one_line(exc: BaseException) -> str:
    r"""An exception's message on one line of at most 200 characters, for an error that quotes it.

    >>> one_line(OSError("disk  full,\n  try later"))
    'disk full, try later'
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
