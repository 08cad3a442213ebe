"""Benchmarks (``i2i bench``, ``benchmarks/bench.py``): training-step throughput and memory per
setting and mode, the data loader's share of a step, and the evaluation protocol's speed.

Benchmarks measure; they assert nothing. Results go to a JSON file and a Markdown table
(``reports/benchmarks.json``, ``reports/benchmarks.md``) with the device, versions and command.
"""
