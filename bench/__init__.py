"""The scale benchmark: jobferry against a real control plane, and the baselines it must beat.

`python -m bench --n 100 1000 5000` (see README, "Performance"). Not part of the test suite:
tests/unit/test_bench.py covers only its pure parts (request counting, percentiles).
"""
