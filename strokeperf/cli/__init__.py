"""``strokeperf BIDS_DIR OUTPUT_DIR {participant,group}``: the BIDS App command line (SPEC.md).

- :mod:`~strokeperf.cli.parser`: the arguments, and the run's parameters from them;
- :mod:`~strokeperf.cli.run`: the participant and group runs and their summary (:func:`main`);
- :mod:`~strokeperf.cli.cache`: the pydra cache in the work directory (one per strokeperf code,
  stale locks cleared, a kept session's step files for benchmarks).
"""

from strokeperf.cli.run import main

__all__ = ["main"]
