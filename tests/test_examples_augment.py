"""The augmentation examples run end to end in their seconds-long ``--smoke`` mode."""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ["augment_torchvision", "augment_kornia", "augment_timm", "augment_albumentations", "train_aprp_loop"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_smoke(name, monkeypatch, capsys):
    if name == "augment_albumentations":
        monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
        pytest.importorskip("albumentations")
    pytest.importorskip("aprkit.data.synthetic")
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--smoke", "--device", "cpu"])
    monkeypatch.syspath_prepend(str(EXAMPLES))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: extra intra-op threads only add contention
    try:
        runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "acc" in out, out
    assert "nan" not in out.lower(), out
    assert os.path.isdir(EXAMPLES)
