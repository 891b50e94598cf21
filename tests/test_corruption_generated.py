"""Generated corruption cells as the published -C sets were made: the JPEG storage of ImageNet-C / Tiny-ImageNet-C,
and the caveat when a model's own resize would rescale a corruption made at the stored size."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from aprkit.corruptions import corrupt, item_seeds
from aprkit.corruptions.digital import jpeg_bytes
from aprkit.eval import evaluate
from aprkit.eval.engine.datasets import TensorImageDataset
from aprkit.eval.suites.corruption_generated import generated_transform, stored_quality
from aprkit.models.normalize import Preprocess
from conftest import natural_images


class Pixels(nn.Module):
    """Logits that are pixels: any change of the input image shows in them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10] * 10


def _data(n: int, size: int) -> TensorImageDataset:
    return TensorImageDataset(natural_images(n, size, seed=3), torch.arange(n) % 10)


def test_a_generated_cell_is_stored_as_the_published_set_was():
    """ImageNet-C and Tiny-ImageNet-C were saved as JPEG quality 85 (the noise cells lose up to 27 levels of their
    noise at 64 px); CIFAR-10-C losslessly. A generated cell is the corruption followed by that storage, which is what
    aprkit corrupt writes."""
    assert (stored_quality("auto", "imagenet"), stored_quality("auto", "tinyimagenet")) == (85, 85)
    assert stored_quality("auto", "cifar") is None and stored_quality(0, "imagenet") is None
    x, idx = natural_images(3, 64, seed=2), torch.arange(3)
    made = corrupt(x, "gaussian_noise", 3, preset="tinyimagenet",
                   seeds=item_seeds(0, "gaussian_noise", 3, "tinyimagenet", idx))
    cell = generated_transform("gaussian_noise", 3, "tinyimagenet", 0, stored_quality("auto", "tinyimagenet"))
    assert torch.equal(cell(x, idx), jpeg_bytes(made, 85))
    assert not torch.equal(cell(x, idx), made)
    assert torch.equal(generated_transform("gaussian_noise", 3, "tinyimagenet", 0, None)(x, idx), made)


def test_the_storage_is_part_of_the_cells_key_and_can_be_turned_off(tmp_path):
    data = _data(6, 64)
    run = dict(suite="corruption", data=data, corruptions=["gaussian_noise"], severities=[3], device="cpu",
               progress=False, report=False, model_id="m", cache_dir=tmp_path / "cache")
    stored = evaluate(Pixels(), options={"check_classes": False}, **run)["corruption"]
    raw = evaluate(Pixels(), options={"check_classes": False, "jpeg_quality": 0}, **run)["corruption"]
    assert stored["preset"] == raw["preset"] == "tinyimagenet"
    assert stored["cells"]["gaussian_noise"]["3"]["nll"] != raw["cells"]["gaussian_noise"]["3"]["nll"]
    with pytest.raises(ValueError, match="jpeg_quality must be auto, null, 0"):
        evaluate(Pixels(), options={"check_classes": False, "jpeg_quality": 101}, **run)


def test_a_model_that_resizes_itself_gets_a_caveat_when_the_corruption_was_made_at_another_size(tmp_path):
    """A torchvision/timm model (Preprocess) on 48-px images: each corruption was made at 48 px and then resized to the
    model's 32 px, where the published sets corrupt the resized crops; the run said nothing (the probe measured 6x
    less noise energy at ImageNet sizes). Now a warning, and the caveat is kept with the numbers."""
    model = Preprocess(Pixels(), (0.5,) * 3, (0.25,) * 3, resize=36, crop=32, num_classes=10)
    run = dict(corruptions=["gaussian_noise"], severities=[1], device="cpu", progress=False, model_id="m",
               options={"check_classes": False})
    with pytest.warns(RuntimeWarning, match=r"made on the images at their stored size \(48x48"):
        evaluate(model, suite=["corruption", "calibration"], data=_data(4, 48), out_dir=tmp_path / "a", **run)
    meta = json.loads((tmp_path / "a" / "results.json").read_text())["meta"]
    assert any("stored size (48x48" in c for c in meta["caveats"])
    assert "stored size (48x48" in (tmp_path / "a" / "report.md").read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # images at the model's input size: as the benchmark does
        res = evaluate(model, suite="corruption", data=_data(4, 32), report=False, **run)
    assert "caveats" not in res["corruption"]


def test_a_crop_alone_rescales_nothing_and_the_advice_is_the_models_size():
    """A crop-only preprocessing (robustbench's Crop288) got the caveat meant for a rescale, a 288-px model was told
    to crop 224, and a Preprocess inside a container was missed (review)."""
    from aprkit.eval.suites.corruption_generated import geometry_caveat

    crop_only = Preprocess(Pixels(), (0.5,) * 3, (0.25,) * 3, resize=None, crop=32, num_classes=10)
    assert geometry_caveat(crop_only, _data(2, 48)) is None
    big = nn.Sequential(Preprocess(Pixels(), (0.5,) * 3, (0.25,) * 3, resize=320, crop=288, num_classes=10))
    assert "?resize=329&crop=288" in geometry_caveat(big, _data(2, 48))
    at_resize = Preprocess(Pixels(), (0.5,) * 3, (0.25,) * 3, resize=36, crop=32, num_classes=10)
    assert geometry_caveat(at_resize, _data(2, 36)) is None  # the short side is the resize size: a crop alone
