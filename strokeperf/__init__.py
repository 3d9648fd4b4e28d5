"""strokeperf: a BIDS App for acute ischemic stroke perfusion imaging."""

__version__ = "0.1.0"
CODE_URL = "https://github.com/strokeperf/strokeperf"
