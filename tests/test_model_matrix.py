"""Every registered model through every evaluation suite and two training steps (issue 12, item 8).

The models come from ``aprkit.models.list_models()`` and the suites from the ``aprkit.eval.suites``
registry, so a new architecture or suite is covered (or flagged) without editing this file. Inputs
are tiny (32 px, a few images, one corruption x one severity); ImageNet-size builders are rebuilt
at a small input size through their keyword arguments. Evaluation runs with the runner's defaults
(channels_last on for convolutional models), the setting that crashed GFNet.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from aprkit.eval import evaluate
from aprkit.eval.engine.inference import predict
from aprkit.eval.engine.datasets import TensorImageDataset
from aprkit.eval.suites import load_suites
from aprkit.models import create_model, list_models, save_checkpoint
from conftest import natural_images

pytestmark = pytest.mark.usefixtures("one_thread")

#: aprkit's own architectures: names registered by test modules (``_tiny_test_cnn`` in train_common.py, which
#: may be collected first) start with an underscore and are left out
MODELS = [name for name in list_models() if not name.startswith("_")]

#: suites run on the clean images with the matrix options (one runner call per model)
CLEAN_SUITES = ("corruption", "calibration", "ood", "phase-bias", "transplant")
#: suites with their own stimuli: generated cue-conflict images; a cue-conflict tree for shape-bias, which needs
#: 16 (or 1000) outputs and so gets a 16-class model
STIMULI_SUITES = ("cue-conflict", "shape-bias")

#: ImageNet-size models (``input_size`` above 32 px) are rebuilt at 32 px with these builder arguments, by class:
#: a GFNet of two blocks (the variants differ only in width and depth), a phase-collapse net of four layers
#: (eleven need 128 px). Any other class is rebuilt with ``img_size=32`` alone.
SMALL: dict[str, dict[str, Any]] = {
    "GFNet": {"img_size": 32, "depth": 2},
    "PhaseCollapseNet": {"img_size": 32, "widths": (16, 32, 32, 64)},
}
#: a (4096 x 4096) covariance pseudo-inverse takes ~10 s on one thread; the score itself does not depend on the model
MAX_MAHALANOBIS_DIM = 1024


def small_model(name: str, num_classes: int = 10) -> nn.Module:
    """``create_model(name)``, rebuilt at 32 px with its class's ``SMALL`` settings when it is ImageNet-size."""
    model = create_model(name, num_classes=num_classes)
    if model.input_size[-1] <= 32:
        return model
    return create_model(name, num_classes=num_classes, **SMALL.get(type(model).__name__, {"img_size": 32}))


def _spread_head(model: nn.Module, x: torch.Tensor, seed: int = 0) -> None:
    """Random classifier weights, biased so that the mean feature of ``x`` scores 0 for every class.

    An untrained network maps all images to nearly the same features, hence one class for all; on the
    deviations from the mean the predictions differ, which the transplant suite needs (pairs of images
    with different predictions).
    """
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        feats = model.eval().forward_features(x.float() / 255)
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(seed)))
        head.bias.copy_(-head.weight @ feats.mean(0))
        assert model.forward_head(feats).argmax(1).unique().numel() > 1, "the spread head still predicts one class"


def _transplant_layers(model: nn.Module) -> list[str]:
    """Candidate transplant sites: repeated blocks or, without any, convolutions (real or complex outputs)."""
    from aprkit.hidden import list_blocks

    try:
        return list_blocks(model)
    except ValueError:  # no nn.Sequential of blocks (allconv, small_cnn): a convolution is a valid site too
        return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@pytest.fixture(scope="module")
def clean() -> tuple[torch.Tensor, torch.Tensor]:
    return natural_images(4, 32, seed=3), torch.arange(4)


@pytest.fixture(scope="module")
def cue_tree(tmp_path_factory) -> Path:
    from aprkit.data.cue_conflict import write_synthetic_cue_conflict

    root = tmp_path_factory.mktemp("cue")
    write_synthetic_cue_conflict(root, per_shape=1, size=32, seed=0)
    return root


def test_the_matrix_covers_every_registered_suite():
    assert set(load_suites()) == set(CLEAN_SUITES) | set(STIMULI_SUITES), "a new suite needs tiny settings in this matrix"


@pytest.mark.parametrize("name", MODELS)
def test_model_through_every_suite(name, clean, cue_tree):
    from aprkit.eval.suites.ood import SCORES

    x, y = clean
    model = small_model(name)
    _spread_head(model, x)
    layer = _transplant_layers(model)[-1]  # real or complex maps (phase-collapse nets): the transplant test takes both
    scores = [s for s in SCORES if s != "mahalanobis" or model.num_features <= MAX_MAHALANOBIS_DIM]
    # the fit: two images per class (one each leaves Mahalanobis no covariance: not computed, with a note)
    transplant = {"transplant_n_pairs": 2, "transplant_n_control": 2, "transplant_max_images": 4, "transplant_codes": ["phase"],
                  "transplant_sites": ["output"]}
    options: dict[str, Any] = {"ood": ["noise:gaussian"], "ood_limit": 2, "fit": (x, y % 2), "knn_k": 2, "ood_scores": scores,
                               "n_pairs": 2, "patch_size": 8, "cue_conflict_n": 4}
    suites = [s for s in CLEAN_SUITES if s != "transplant"] + ["cue-conflict"]
    suites.append("transplant")
    options |= {**transplant, "transplant_layers": [layer]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no channels_last fallback needed by aprkit's own models
        warnings.filterwarnings("ignore", "limit=4 does not apply to cue-conflict", RuntimeWarning)  # as it says
        res = evaluate(model, suite=suites, data={"default": (x, y), "cue-conflict": "synthetic"},
                       corruptions=["fog"], severities=[1], limit=4, options=options, device="cpu", batch_size=4,
                       progress=False, report=False)
    out = next(iter(res.models.values()))
    assert set(out) == set(suites)
    assert out["corruption"]["clean"]["n"] == 4 and out["corruption"]["cells"]["fog"]["1"]["n"] == 4
    assert out["calibration"]["corrupted"]["cells"] == 1
    assert set(out["ood"]["scores"]) == set(scores)
    assert out["phase-bias"]["full"]["n_pairs"] == 2
    assert out["cue-conflict"]["counts"]["n_stimuli"] <= 4
    assert out["transplant"]["rows"]
    res16 = evaluate(small_model(name, 16), suite="shape-bias", data=f"cue-conflict:{cue_tree}", device="cpu",
                     batch_size=8, progress=False, report=False)
    assert next(iter(res16.models.values()))["shape-bias"]["counts"]["n_stimuli"] > 0


@pytest.mark.parametrize("name", MODELS)
def test_model_trains_two_steps(name, tmp_path, clean):
    """``aprkit.train.fit`` (APR-SP, the paper's recipe) for two steps, then the checkpoint reloads."""
    from aprkit.models import load_model
    from aprkit.train import fit

    x, y = clean
    model = small_model(name)
    cfg: dict[str, Any] = {
        "model": {"name": name, "num_classes": 10},
        "data": {"image_size": 32, "num_workers": 0, "eval_batch_size": 4},
        "aug": {"method": "apr_sp"},
        "optim": {"batch_size": 2, "epochs": 1},
        "train": {"max_steps": 2, "progress": False, "tensorboard": False},
    }
    if getattr(model, "aprkit_kwargs", None):  # small settings travel through an initial checkpoint
        cfg["model"]["checkpoint"] = str(save_checkpoint(tmp_path / "init.pt", model))
    result = fit(cfg, out=tmp_path / "run", datasets=(TensorImageDataset(x, y), TensorImageDataset(x[:2], y[:2])))
    assert result["global_step"] == 2 and result["final"]["test_n"] == 2
    assert torch.isfinite(torch.tensor(result["final"]["train_loss"]))
    # weights, not eval-mode outputs: after two steps the BatchNorm running statistics are still mostly their
    # initial values, and a 110-layer ResNet can overflow in eval mode (the reason for its lr warm-up)
    trained, reloaded = result["model"].state_dict(), load_model(result["checkpoint"]).state_dict()
    assert trained.keys() == reloaded.keys() and all(torch.equal(trained[k], reloaded[k]) for k in trained)


# ------------------------------------------------------------------------------- the channels_last fallback


class _NeedsContiguousWeight(nn.Module):
    """Fails under channels_last parameters with a non-``.view`` error, like GFNet's ``view_as_complex`` did."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.filter = nn.Parameter(torch.randn(4, 3, 2, 2))  # (..., 2): complex as (re, im)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.view_as_complex(self.filter)  # "Tensor must have a last dimension with stride 1" if channels_last
        return self.conv(x).mean(dim=(2, 3)) + w.abs().sum()


class _AlwaysFails(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom: not a layout problem")


def test_any_channels_last_failure_falls_back_once_with_contiguous_parameters(clean):
    x, y = clean
    torch.manual_seed(0)
    model = _NeedsContiguousWeight()
    expected = predict(model, TensorImageDataset(x, y % 4), batch_size=4).logits
    with pytest.warns(RuntimeWarning, match="channels_last") as caught:
        res = evaluate(model, suite=["corruption", "calibration"], data=(x, y % 4), corruptions=["fog"], severities=[1],
                       device="cpu", batch_size=4, progress=False, report=False)
        again = predict(model.to(memory_format=torch.channels_last), TensorImageDataset(x, y % 4), batch_size=4,
                        channels_last=True)
    assert len([w for w in caught if "channels_last" in str(w.message)]) == 1
    assert all(p.is_contiguous() for p in model.parameters())
    assert torch.equal(again.logits, expected)
    assert next(iter(res.models.values()))["corruption"]["cells"]["fog"]["1"]["n"] == 4


def test_a_failure_that_is_not_the_layout_raises_the_original_error(clean):
    x, y = clean
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeError, match="boom: not a layout problem"):
            predict(_AlwaysFails().to(memory_format=torch.channels_last), TensorImageDataset(x, y), channels_last=True)


def test_gfnet_runs_with_channels_last_parameters():
    model = create_model("gfnet_cifar", depth=2, embed_dim=16).eval()
    x = natural_images(2, 32).float() / 255
    with torch.no_grad():
        expected = model(x)
        got = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-5)
