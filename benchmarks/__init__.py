"""Benchmark scripts (``python benchmarks/bench_*.py``) and their shared measuring helpers.

A package so that ``benchmarks/gpu_check.py`` can import and reuse the measuring functions of the
individual scripts (``from benchmarks.bench_augment import ...``) with the repository root on ``sys.path``.
"""
