"""Benchmarks of the MPS pipeline: mapping time, analog-evaluation throughput, training-step
cost, end-to-end stage costs, and the paper's claims measured side by side.

Run ``python -m benchmarks.run [--quick] [--out benchmarks/out]`` (``make bench`` /
``make bench-quick``); see :mod:`benchmarks.run`.  One module per figure group:
:mod:`benchmarks.mapping` (1), :mod:`benchmarks.claims` (2), :mod:`benchmarks.throughput` (3),
:mod:`benchmarks.training` (4), :mod:`benchmarks.e2e` (5).
"""
