"""The public API leaves its caller's state as it found it: the global random streams (fit, evaluate, load_model),
a model in train mode handed to predict, the layout of its gradients, a model holding 3-d convolutions."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import natural_images
from torch import nn
from train_common import Images
from train_common import train_config as config

from aprkit.eval import evaluate, predict
from aprkit.eval.engine.datasets import TensorImageDataset
from aprkit.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _streams() -> tuple[float, float, float]:
    return float(torch.rand(())), float(np.random.rand()), random.random()


def _after(seed: int, action) -> tuple[float, float, float]:
    torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)
    action()
    return _streams()


def test_fit_gives_the_callers_random_streams_back():
    """fit seeds torch, NumPy and Python itself; those states outlived it, so a search drawing its trials' settings
    from the global streams drew the same values after the first fit."""
    run = lambda: fit(config(optim={"batch_size": 8, "epochs": 1}, train={"eval_every": 0}),  # noqa: E731
                      datasets=(Images(8), None))
    assert _after(1, run) == _after(1, lambda: None)
    assert _after(2, run) != _after(1, run)


def _data(n: int = 12) -> TensorImageDataset:
    return TensorImageDataset(natural_images(n, 16, seed=4), torch.arange(n) % 10)


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 10, 3), nn.BatchNorm2d(10), nn.Linear(10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_evaluate_and_loading_a_checkpoint_draw_nothing_from_the_callers_stream(tmp_path):
    """Each evaluation's DataLoader drew its workers' base seed from the global stream (a training loop evaluating
    between epochs trained otherwise); a loaded checkpoint's moot random initialisation did too."""
    from aprkit.models import load_model
    from aprkit.models.saving import save_checkpoint

    net = BNNet().eval()
    run = lambda: evaluate(net, suite="corruption", data=_data(), corruptions=["contrast"], severities=[1],  # noqa: E731
                           device="cpu", progress=False, report=False, model_id="m",
                           options={"check_classes": False})
    assert _after(0, run) == _after(0, lambda: None)
    save_checkpoint(tmp_path / "r20.pt", load_model("resnet20", random_init=True))
    assert _after(0, lambda: load_model(tmp_path / "r20.pt")) == _after(0, lambda: None)
    assert _after(0, lambda: load_model("resnet20", random_init=True)) != _after(0, lambda: None)  # drawn, as built


def test_predict_runs_a_model_in_train_mode_as_in_eval_mode_and_leaves_its_statistics():
    """predict ran a train-mode model as it was: batch-statistics logits (another accuracy) and batch-norm running
    statistics moved by the evaluation images."""
    net = BNNet()
    net.bn.running_mean.uniform_(-1, 1)
    reference = predict(net.eval(), _data()).logits
    net.train()
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    assert torch.equal(predict(net, _data()).logits, reference)
    assert net.training and all(torch.equal(v, stats[k]) for k, v in net.state_dict().items())


def test_evaluate_gives_gradients_their_layout_back_and_runs_a_model_with_3d_convolutions():
    """channels_last converted the 4-d weights' gradients too and only the weights came back contiguous; a model
    with a Conv3d beside its Conv2d failed with torch's 'required rank 4 tensor to use channels_last format'."""
    net = BNNet()
    net(torch.rand(2, 3, 16, 16)).sum().backward()
    run = dict(suite="corruption", data=_data(), corruptions=["contrast"], severities=[1], device="cpu",
               progress=False, report=False, model_id="m", options={"check_classes": False}, channels_last=True)
    evaluate(net, **run)
    assert net.conv.weight.is_contiguous() and net.conv.weight.grad.is_contiguous()

    class Mixed(BNNet):
        def __init__(self) -> None:
            super().__init__()
            self.c3 = nn.Conv3d(10, 10, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.bn(self.conv(x))
            return self.fc(self.c3(z[:, :, None]).mean((2, 3, 4)))

    assert evaluate(Mixed(), **run)["corruption"]["clean"]["n"] == 12


def test_a_new_head_of_drop_head_draws_from_the_callers_stream(tmp_path):
    """The backbone's moot init draws from a copy of the stream, but drop_head's new head keeps its random init: two
    loads must get two heads, as two modules built by hand do (review)."""
    from aprkit.models import load_model
    from aprkit.models.saving import save_checkpoint

    save_checkpoint(tmp_path / "r20.pt", load_model("resnet20", random_init=True))
    torch.manual_seed(0)
    a, b = (load_model(tmp_path / "r20.pt", num_classes=5, drop_head=True) for _ in range(2))
    from aprkit.models.normalize import find_classifier

    assert not torch.equal(find_classifier(a).weight, find_classifier(b).weight)
