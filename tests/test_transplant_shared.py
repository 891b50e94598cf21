"""Transplant test on the real checkpoints in ../shared (slow; skipped without ../shared)."""

from __future__ import annotations

import pytest
import torch

from aprkit.eval.analyses.transplant import read_folder as _read_folder
from aprkit.eval.analyses.transplant import transplant_test

pytestmark = [pytest.mark.slow, pytest.mark.shared]


def _resnet20(models_dir):
    from aprkit.models import load_model

    return load_model(models_dir / "resnet20-12fca82f.th")


def test_resnet20_controls_on_cifar10(models_dir, cifar10_dir) -> None:
    model = _resnet20(models_dir)
    x, y, _ = _read_folder(str(cifar10_dir / "test"), 20)
    res = transplant_test(model, (x, y), ["layer3.2"], code=("phase", "sign"), n_pairs=200, n_control=200)
    assert res["clean_accuracy"] > 0.85
    phase, sign = res["rows"]
    for r in (phase, sign):
        assert r["identity_agreement"] == 1.0
        assert r["dc_only_agreement"] == 1.0  # the average-pool readout sees only channel means
    # post-ReLU block output: the sign code is constant, the transplant is inert
    assert sign["follow_magnitude"] == 1.0 and any(f.startswith("inert") for f in sign["flags"])
    # pre-ReLU (functional relu inside the block): the sign code carries class information
    pre = transplant_test(model, (x, y), ["layer3.2:relu"], code="sign", site="input", call_index=-1, n_pairs=200)
    assert pre["rows"][0]["follow_donor"] > 0.2


def test_mobilenet_v2_identity_on_cue_conflict(models_dir, cue_conflict_dir) -> None:
    from aprkit.models import load_model

    model = load_model("torchvision:mobilenet_v2", checkpoint=models_dir / "imagenet-mobilenet_v2-qnnpack-dequantized.pth")
    x, _, _ = _read_folder(str(cue_conflict_dir), 2)
    res = transplant_test(model, x, ["features.17"], code=("phase", "sign"), n_pairs=16, n_control=16,
                          batch_size=32, skip_front=True)
    for r in res["rows"]:
        assert r["identity_agreement"] == 1.0
        assert r["negative_fraction"] > 0.1  # linear bottleneck output: signed
