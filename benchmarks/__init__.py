"""The performance benchmark of issue #9: `python -m benchmarks` (or `make bench`). See benchmarks/README.md."""
