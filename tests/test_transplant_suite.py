"""The transplant suite and sweep against what testers found: a skip-front result served to a run without it, the
header's account of the images, rows that follow B by construction, functional GELU blocks, empty and repeated
layer lists."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import natural_images
from test_transplant import SmallCNN, calibrate_head, setup  # noqa: F401 (setup: a fixture)
from torch import nn

from aprkit.eval import evaluate
from aprkit.eval.analyses.transplant import layer_sweep
from aprkit.hidden import attach


class SkipHead(nn.Module):
    """The head also reads block 0's output: skipping the blocks before block 2 breaks the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()) for _ in range(3)])
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z0 = self.blocks[0](self.stem(x))
        return self.head((self.blocks[2](self.blocks[1](z0)) + 3 * z0).mean((-2, -1)))


def _row(out) -> dict:
    models = json.loads((out / "results.json").read_text())["models"]
    return next(iter(models.values()))["transplant"]["rows"][0]


def test_skip_front_is_part_of_the_key_and_the_header_says_how_images_were_picked(tmp_path) -> None:
    torch.manual_seed(0)
    model = SkipHead().eval()
    x = natural_images(60, size=16, seed=1).float() / 255
    calibrate_head(model, model.head, x)
    opts = {"transplant_layers": ["blocks.2"], "transplant_codes": ["phase"], "transplant_sites": ["output"],
            "transplant_n_pairs": 20, "transplant_n_control": 20, "transplant_max_images": 500}
    out = tmp_path / "run"
    evaluate(model, "transplant", "synthetic:60", limit=40, out_dir=out, progress=False,
             options={**opts, "transplant_skip_front": True})
    broken = _row(out)
    evaluate(model, "transplant", "synthetic:60", limit=40, out_dir=out, progress=False, options=opts)
    assert broken["identity_agreement"] < 1.0 and _row(out)["identity_agreement"] == 1.0  # recomputed, not reused
    res = json.loads((out / "results.json").read_text())
    assert next(iter(res["models"].values()))["transplant"]["config"]["n_images"] == 40  # the limit caps max_images
    report = (out / "report.md").read_text()
    assert "up to 40 images spread evenly over the set" in report and "first 40 images" not in report
    from aprkit.eval.suites import load_suites

    assert load_suites()["transplant"].images_text({"limit": 50, "transplant_max_images": "40"}) == (
        "up to 40 images spread evenly over the set")  # options recorded as given


def test_a_phase_transplant_into_a_mean_readout_is_flagged(setup) -> None:  # noqa: F811
    """SmallCNN's last block ends in a ReLU and global average pooling follows: the phase transplant keeps B's
    channel means, so following B there is by construction."""
    model, x = setup
    rows = layer_sweep(model, x, "all", codes=("phase",), sites=("output",), n_pairs=16, n_control=16)["rows"]
    last = max(rows, key=lambda r: r["depth"])
    assert last["dc_only_agreement"] == 1.0 and last["follow_magnitude"] == 1.0
    assert any(f.startswith("dc-readout") for f in last["flags"])
    assert not any(f.startswith("dc-readout") for r in rows if r is not last for f in r["flags"])


class GeluBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.conv(x))


class GeluNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(GeluBlock(), GeluBlock())
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((-2, -1)))


def test_blocks_calling_a_functional_gelu_have_a_pre_activation_site() -> None:
    torch.manual_seed(0)
    model = GeluNet().eval()
    x = natural_images(32, size=16, seed=2).float() / 255
    calibrate_head(model, model.fc, x)
    rows = layer_sweep(model, x, "all", codes=("sign",), sites=("input",), n_pairs=8, n_control=8)["rows"]
    assert [r["layer"] for r in rows] == ["blocks.0:gelu", "blocks.1:gelu"]
    with pytest.raises(ValueError, match="never called"):  # a site named by the user is kept as named
        layer_sweep(model, x, ["blocks.0:relu"], codes=("sign",), sites=("input",), n_pairs=8, n_control=8)


def test_empty_and_repeated_layer_lists_are_refused(setup) -> None:  # noqa: F811
    model, x = setup
    with pytest.raises(ValueError, match="layers is empty"):
        layer_sweep(model, x, [], n_pairs=4)
    with pytest.raises(ValueError, match="more than once"):
        attach(model, ["blocks.0", "model.blocks.0"] if hasattr(model, "model") else ["blocks.0", "blocks.0"])


def test_an_option_given_at_its_default_reuses_the_cached_sweep(tmp_path) -> None:
    """``transplant_every=1`` (its default) computed the sweep again under a new key (invariance tester)."""
    torch.manual_seed(0)
    model = SkipHead().eval()
    opts = {"transplant_layers": ["blocks.2"], "transplant_codes": ["phase"], "transplant_sites": ["output"],
            "transplant_n_pairs": 8, "transplant_n_control": 8}
    out = tmp_path / "run"
    evaluate(model, "transplant", "synthetic:40", out_dir=out, progress=False, report=False, options=opts)
    again = evaluate(model, "transplant", "synthetic:40", out_dir=out, progress=False, report=False,
                     options={**opts, "transplant_every": 1})
    assert again.meta["cache_units"] == {"reused": 1, "computed": 0}
    other = evaluate(model, "transplant", "synthetic:40", out_dir=out, progress=False, report=False,
                     options={**opts, "transplant_n_pairs": 9})
    assert other.meta["cache_units"]["computed"] == 1
