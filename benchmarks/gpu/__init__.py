"""The sections of ``benchmarks/gpu_check.py``: one prepared run of the CUDA tests and every GPU benchmark.

``context`` holds the per-section state (device, sizes, deadline, incrementally saved results) and
the section registry; ``env`` the environment record and the frost-texture fallback; ``sections``
the measurements; ``report`` the goals and the Markdown summary.
"""
