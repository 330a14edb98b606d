"""The benchmark suite (`make bench`): figures measured side by side in one run, written to BENCHMARKS.md."""
