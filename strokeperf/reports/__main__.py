"""``python -m strokeperf.reports [--modality ctp dsc]``: print the methods text of the default
parameters (the README's "Methods text (generated)")."""

import sys

from strokeperf.reports.methods import main

sys.exit(main())
