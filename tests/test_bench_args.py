"""The benchmark scripts refuse out-of-range arguments with argparse's message naming the option (a
``--repeats 0`` printed ``nanx`` gains and exit 0; ``--batch-size 0`` was a bare ZeroDivisionError)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("script", "args", "message"), [
    ("bench_corruptions.py", ["--repeats", "0"], "argument --repeats: expected a positive integer"),
    ("bench_corruptions.py", ["--draw-overhead", "fog"], "give --baseline-rev too"),
    ("bench_eval.py", ["--n-per-severity", "0"], "argument --n-per-severity: expected a positive integer"),
    ("bench_eval.py", ["--batch-size", "-3"], "argument --batch-size: expected a positive integer"),
    ("bench_train.py", ["--steps", "0"], "argument --steps: expected a positive integer"),
    ("bench_train.py", ["--workers", "-1"], "argument --workers: expected an integer >= 0"),
    # (benchmarks reviewer: tracebacks, or a nan cap that timed every section out at 0 s)
    ("bench_augment.py", ["--threads", "0"], "argument --threads: expected a positive integer"),
    ("bench_augment.py", ["--repeats", "0"], "argument --repeats: expected a positive integer"),
    ("bench_augment.py", ["--min-time", "nan"], "--min-time must be a number >= 0"),
    ("bench_augment.py", ["--device", "cudaa"], "--device:"),
    ("bench_corruptions.py", ["--device", "cudaa"], "--device:"),
    ("fidelity_corruptions.py", ["--side-python", "x", "--work", "w", "--n", "0"],
     "argument --n: expected a positive integer"),
    ("gpu_check.py", ["--cap-scale", "nan"], "--cap-scale must be a positive number"),
])
def test_out_of_range_arguments_are_named(script: str, args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-1000:]
