"""Every evaluation suite of the registry on the device (AMP, channels_last) against the CPU: skipped without CUDA,
``APRKIT_TEST_DEVICE=cpu`` runs it with the CPU standing in (see ``test_cuda.py``). Only the corruption suite had a
device test until a first GPU run found the transplant suite failing on CUDA."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from aprkit.eval.suites import load_suites
from conftest import natural_images
from cuda_common import DEVICE, DEVICE_MARKS, TinyNet, cpu_gen

pytestmark = DEVICE_MARKS

#: images (pairs, stimuli) each suite reads: the compared fractions count them (a ratio such as the phase bias: about
#: half of them)
SUITE_N = 48
#: a few images' worth (as test_evaluate_on_device_amp_channels_last allows AMP): near-ties may flip on the device
SUITE_TOL = 6 / SUITE_N


def _predictions(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The CPU model's classes of uint8 ``images``."""
    with torch.no_grad():
        return model(images.float() / 255).argmax(1)


def _suite_images() -> torch.Tensor:
    return natural_images(SUITE_N, 32, seed=12)


def _labelled(_: Path, model: nn.Module) -> Any:
    """The suite images labelled with the CPU model's predictions (clean accuracy 1 on the CPU)."""
    from aprkit.eval.engine.datasets import TensorImageDataset

    images = _suite_images()
    return TensorImageDataset(images, _predictions(model, images))


def _conflicts(model: nn.Module, images: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape and texture labels of ``images`` as cue-conflict stimuli of ``k`` classes: the CPU model's prediction is
    the shape of every even stimulus and the texture of every odd one, the other cue another class (on the CPU every
    decision is a shape or a texture decision: the shape bias counts all of them)."""
    pred = _predictions(model, images)
    other = (pred + 1 + torch.arange(len(pred)) % (k - 1)) % k
    even = torch.arange(len(pred)) % 2 == 0
    return torch.where(even, pred, other), torch.where(even, other, pred)


def _cue_conflict_stimuli(_: Path, model: nn.Module) -> Any:
    """The suite images as stimuli of the cue-conflict suite (its 10 synthetic classes), labelled by
    :func:`_conflicts`."""
    from aprkit.data.synthetic import SHAPES
    from aprkit.eval.suites.cue_conflict import CueConflictStimuli

    images = _suite_images()
    return CueConflictStimuli(images, *_conflicts(model, images, len(SHAPES)), SHAPES)


def _cue_conflict_folder(tmp_path: Path, model: nn.Module) -> Any:
    """The suite images as a cue-conflict folder ``<shape>/<shape>N-<texture>M.png`` of the 16 categories (PNG:
    lossless), labelled by :func:`_conflicts`."""
    from PIL import Image

    from aprkit.eval.analyses.shape_bias import CATEGORIES

    images, root = _suite_images(), tmp_path / "cue-conflict"
    for i, (image, s, t) in enumerate(zip(images, *_conflicts(model, images, len(CATEGORIES)), strict=True)):
        shape, texture = CATEGORIES[int(s)], CATEGORIES[int(t)]
        (root / shape).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / shape / f"{shape}{i}-{texture}{i}.png")
    return f"cue-conflict:{root}"


@dataclass(frozen=True)
class SuiteFeed:
    """How the device test feeds one suite: ``data(tmp_path, cpu_model)`` builds its data, ``options`` keep it small,
    ``compare`` names the result's numbers (at any depth) compared with the CPU's besides the headline measures, and
    ``classes`` is the model's number of outputs."""

    data: Callable[[Path, nn.Module], Any]
    options: dict[str, Any]
    compare: tuple[str, ...]
    classes: int = 10


_CELLS = {"corruptions": ["fog", "gaussian_noise"], "severities": [1, 3]}
#: every registered suite needs an entry (the test of a suite without one fails and says so)
SUITE_FEEDS: dict[str, SuiteFeed] = {
    "corruption": SuiteFeed(_labelled, _CELLS, ("accuracy", "error", "nll", "ece", "mean_error")),
    "calibration": SuiteFeed(_labelled, _CELLS, ("accuracy", "ece", "rms", "nll", "brier", "pooled_ece")),
    "ood": SuiteFeed(_labelled, {"ood": ["noise:gaussian", "noise:blobs"], "ood_limit": SUITE_N, "knn_k": 4,
                                 "fit": (natural_images(32, 32, seed=40), torch.arange(32) % 4)},
                     ("auroc", "aupr_in", "aupr_out", "fpr@95", "in_accuracy")),
    "phase-bias": SuiteFeed(_labelled, {"n_pairs": SUITE_N, "patch_size": 8},
                            ("phase", "amplitude", "neither", "phase_bias", "accuracy", "clean_accuracy")),
    "transplant": SuiteFeed(_labelled, {"transplant_layers": ["c1", "c2"], "transplant_n_pairs": SUITE_N,
                                        "transplant_n_control": SUITE_N, "transplant_max_images": SUITE_N},
                            ("follow_donor", "follow_magnitude", "neither", "identity_agreement",
                             "deletion_agreement", "dc_only_agreement", "whole_swap_follow", "clean_accuracy")),
    "cue-conflict": SuiteFeed(_cue_conflict_stimuli, {}, ("shape_bias", "shape_match", "texture_match", "neither")),
    "shape-bias": SuiteFeed(_cue_conflict_folder, {}, ("shape_bias", "shape_match", "texture_match"), classes=16),
}


def _tiny_net(classes: int) -> TinyNet:
    """TinyNet with ``classes`` outputs (a seeded head), calibrated on the suite images."""
    net = TinyNet()
    if classes != net.fc.out_features:
        net.fc, g = nn.Linear(net.fc.in_features, classes), cpu_gen(12)
        with torch.no_grad():
            for p in net.fc.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net.calibrate(_suite_images().float() / 255)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _compare_results(dev: Any, cpu: Any, keys: tuple[str, ...], seen: set[str], where: str = "result") -> None:
    """``dev`` has ``cpu``'s dict keys and list lengths at every depth and finite numbers only (as ``cpu``); the
    numbers under ``keys`` are within ``SUITE_TOL`` of the CPU's (None where it is None); ``seen`` collects them."""
    if isinstance(cpu, dict):
        assert isinstance(dev, dict) and dev.keys() == cpu.keys(), (where, sorted(cpu), dev)
        for k, c in cpu.items():
            d = dev[k]
            if k in keys and (c is None or _number(c)):
                seen.add(k)
                assert (d is None) if c is None else _number(d) and abs(d - c) <= SUITE_TOL, (f"{where}.{k}", d, c)
            _compare_results(d, c, keys, seen, f"{where}.{k}")
    elif isinstance(cpu, list):
        assert isinstance(dev, list) and len(dev) == len(cpu), (where, dev, cpu)
        for i, (d, c) in enumerate(zip(dev, cpu, strict=True)):
            _compare_results(d, c, keys, seen, f"{where}[{i}]")
    else:
        for v in (dev, cpu):
            assert not isinstance(v, (dict, list)), (where, dev, cpu)
            assert not isinstance(v, float) or math.isfinite(v), (where, dev, cpu)


@pytest.mark.parametrize("suite", sorted(load_suites()))
def test_every_suite_on_device_matches_cpu(suite: str, tmp_path: Path) -> None:
    """Every suite of the registry through ``evaluate`` on the device (AMP, channels_last, as a GPU user runs it)
    against the CPU (fp32, contiguous): the same result keys, finite numbers, and the headline measures and the
    feed's ``compare`` numbers within a few images' worth (near-ties may flip). Only the corruption suite had a device
    test, and a first GPU run found the transplant suite failing on CUDA (a CPU tensor in a device computation); the
    registry is parametrized over, so that a new suite runs here (or fails for want of a ``SUITE_FEEDS`` entry)."""
    from aprkit.eval import evaluate

    stale = set(SUITE_FEEDS) - set(load_suites())
    assert not stale, f"SUITE_FEEDS names no registered suite: {sorted(stale)}"
    feed = SUITE_FEEDS.get(suite)
    assert feed is not None, (f"suite {suite!r} has no entry in SUITE_FEEDS (tests/test_cuda_suites.py): add one (its data "
                              "and options for a few images) so that it is tested on the device")
    model = _tiny_net(feed.classes)
    data = feed.data(tmp_path, model)
    runs = []
    for dev, fast in ((DEVICE, True), (torch.device("cpu"), False)):  # as a GPU user runs it; the fp32 reference
        res = evaluate(copy.deepcopy(model), suite=suite, data=data, options=feed.options, device=dev, amp=fast,
                       channels_last=fast, batch_size=16, progress=False, report=False, model_id="tiny")
        assert (res.meta["device"], res.meta["amp"], res.meta["channels_last"]) == ([dev.type], [fast], [fast])
        runs.append(res)
    got, ref = runs
    seen: set[str] = set()
    _compare_results(got.models["tiny"][suite], ref.models["tiny"][suite], feed.compare, seen)
    missing = set(feed.compare) - seen
    assert not missing, f"SUITE_FEEDS[{suite!r}].compare names numbers its result lacks: {sorted(missing)}"
    headline, want = got.summary()["tiny"], ref.summary()["tiny"]
    assert headline.keys() == want.keys() and want, (headline, want)
    for name, c in want.items():
        d = headline[name]
        assert (d is None) if c is None else d is not None and abs(d - c) <= SUITE_TOL, (name, d, c)
