"""gencore benchmark suites (pytest-benchmark) and the report script (`python -m benchmarks.report`)."""
