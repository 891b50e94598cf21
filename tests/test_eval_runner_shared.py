"""Real data (../shared): the published CIFAR-10 ResNets reproduce their published test accuracy."""

from __future__ import annotations

import pytest

PUBLISHED = {"resnet20": 0.9173, "resnet32": 0.9263, "resnet44": 0.9310, "resnet56": 0.9339}


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_published_clean_accuracy(arch, cifar10_dir, models_dir, tmp_path):
    from aprkit.eval import evaluate

    (ckpt,) = models_dir.glob(f"{arch}-*.th")
    res = evaluate(str(ckpt), suite="corruption", data=f"cifar10:{cifar10_dir}", corruptions="none", device="cpu",
                   batch_size=500, progress=False, out_dir=tmp_path)
    clean = res["corruption"]["clean"]
    assert clean["n"] == 10000
    assert clean["accuracy"] == pytest.approx(PUBLISHED[arch], abs=1e-9)


@pytest.mark.slow
def test_resnet20_generated_c_subset_and_ood(cifar10_dir, models_dir):
    from aprkit.eval import evaluate

    (ckpt,) = models_dir.glob("resnet20-*.th")
    res = evaluate(str(ckpt), suite=["corruption", "ood"], data=f"cifar10:{cifar10_dir}", corruptions=["gaussian_noise", "fog"],
                   severities=[1, 5], limit=200, device="cpu", progress=False,
                   options={"ood_limit": 200, "fit_limit": 1000, "ood_scores": ["msp", "energy", "mahalanobis"]})
    c = res["corruption"]
    assert c["clean"]["accuracy"] > 0.85
    assert c["cells"]["gaussian_noise"]["5"]["error"] > c["cells"]["gaussian_noise"]["1"]["error"] > c["clean"]["error"]
    assert res["ood"]["mean"]["mahalanobis"]["auroc"] > 0.9
