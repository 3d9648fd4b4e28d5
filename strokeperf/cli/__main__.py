"""``python -m strokeperf.cli``: the same as the ``strokeperf`` command."""

import sys

from strokeperf.cli.run import main

sys.exit(main())
