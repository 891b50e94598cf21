"""``examples/eval_cifar10c.py --smoke``: a generated CIFAR-10 / CIFAR-10-C layout, a tiny random timm model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_eval_cifar10c_smoke(tmp_path):
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "eval_cifar10c.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "clean accuracy:" in out and "published .npy files" in out
    assert "gaussian_noise" in out and "fog" in out and "mean corruption error" in out
    assert (tmp_path / "report.md").is_file() and (tmp_path / "results.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(("cache", "figures"))) == ["index.json", "index.json.lock", "report.html", "report.md", "results.json"]


def test_make_tiny_layout_matches_published_format(tmp_path):
    import numpy as np

    sys.path.insert(0, str(REPO / "examples"))
    try:
        from eval_cifar10c import make_tiny_layout
    finally:
        sys.path.pop(0)
    clean, corrupted = make_tiny_layout(tmp_path, n=10, corruptions=("contrast",))
    root = Path(corrupted.split(":", 1)[1])
    arr, labels = np.load(root / "contrast.npy"), np.load(root / "labels.npy")
    assert arr.shape == (50, 32, 32, 3) and arr.dtype == np.uint8 and labels.shape == (50,)
    assert sorted(p.name for p in Path(clean.split(":", 1)[1]).iterdir()) == [f"class{k}" for k in range(10)]
