"""HTML reports: one self-contained page per session and one for the cohort, and the methods text.

- :mod:`~strokeperf.reports.participant`: ``OUTPUT_DIR/sub-P[_ses-S].html``
  (:func:`write_participant_report`, called by the datasink);
- :mod:`~strokeperf.reports.group`: ``OUTPUT_DIR/group.html`` (:func:`write_group_report`, called by
  the command line after every run);
- :mod:`~strokeperf.reports.methods`: the methods paragraph of each workflow generated from the run's
  parameters (report, README excerpt, sidecar ``Method`` strings);
- :mod:`~strokeperf.reports.figures` the matplotlib figures, :mod:`~strokeperf.reports.outputs` the
  derivative files a report reads, :mod:`~strokeperf.reports.page` the shared HTML.
"""

from strokeperf.reports.group import write_group_report
from strokeperf.reports.participant import report_name, write_participant_report

__all__ = ["report_name", "write_group_report", "write_participant_report"]
