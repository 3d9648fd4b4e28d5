"""Code of approaches that were measured and not adopted, kept so that their benchmarks can be
re-run (results in docs/accuracy.md). Nothing in the ``strokeperf`` package imports from here."""
