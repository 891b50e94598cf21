"""measure_phase_bias and the phase-bias suite on tiny hand-built models, plus the ResNet checkpoints (slow)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from aprkit.eval.engine.cache import MemoryCache
from aprkit.eval.analyses.phase_bias import measure_phase_bias
from aprkit.eval.suites import EvalContext, load_suites
from aprkit.eval.report import markdown_block

N_CLASSES = 4


def _shift_data(copies: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k = one random pattern circularly shifted by k columns: every image has the same amplitude
    spectrum, so swapping amplitudes leaves the phase donor unchanged."""
    g = torch.Generator().manual_seed(0)
    pattern = torch.randint(0, 256, (3, 8, 8), generator=g, dtype=torch.uint8)
    imgs = torch.stack([torch.roll(pattern, k, dims=-1) for k in range(N_CLASSES) for _ in range(copies)])
    labels = torch.arange(N_CLASSES).repeat_interleave(copies)
    return imgs, labels


class MatchedFilter(nn.Module):
    """Predicts the shift by correlating with the centred templates: a pure phase (position) reader."""

    def __init__(self, templates: torch.Tensor) -> None:
        super().__init__()
        t = templates.float() / 255
        self.register_buffer("w", (t - t.mean(dim=(1, 2, 3), keepdim=True)).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T


def _brightness_data(copies: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k = random texture around mean level 50 + 45k: the class lives in the DC amplitude."""
    g = torch.Generator().manual_seed(1)
    noise = torch.randint(-20, 21, (N_CLASSES * copies, 3, 8, 8), generator=g)
    labels = torch.arange(N_CLASSES).repeat_interleave(copies)
    return (50 + 45 * labels[:, None, None, None] + noise).to(torch.uint8), labels


class Brightness(nn.Module):
    """Predicts the class from mean brightness only: a pure amplitude (DC) reader."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = (50 + 45 * torch.arange(N_CLASSES, device=x.device)) / 255
        return -(x.mean(dim=(1, 2, 3))[:, None] - levels) ** 2 * 1e3


def test_phase_reader_follows_the_phase():
    imgs, labels = _shift_data()
    model = MatchedFilter(imgs[:: 3])
    r = measure_phase_bias(model, (imgs, labels), n_pairs=40, patch_size=4, batch_size=16, seed=0)
    assert r["clean_accuracy"] == 1.0 and r["phase_bias"] == 1.0 and r["phase_bias_low_frequency"] == 1.0
    assert r["settings"] == {"n_pairs": 40, "n_distinct_pairs": 34, "beta": 0.1, "dims": "chw", "seed": 0}
    for v in ("full", "low_frequency"):
        assert r[v]["phase"] == 1.0 and r[v]["phase_bias"] == 1.0 and r[v]["n_pairs"] == 40
        assert r[v]["both_correct"]["phase_bias"] == 1.0 and r[v]["both_correct"]["n_pairs"] == 40
    assert r["patch_shuffle"]["clean_accuracy"] == 1.0 and r["patch_shuffle"]["n_images"] == 12
    json.dumps(r)


def test_amplitude_reader_follows_the_amplitude():
    imgs, labels = _brightness_data()
    r = measure_phase_bias(Brightness(), (imgs, labels), n_pairs=40, beta=0.1, patch_size=4, batch_size=16, seed=0)
    assert r["clean_accuracy"] == 1.0
    assert r["full"]["amplitude"] == 1.0 and r["full"]["phase_bias"] == 0.0
    assert r["low_frequency"]["phase_bias"] == 0.0  # beta*8 < 1: only the DC amplitude is swapped
    assert r["patch_shuffle"]["accuracy"] == r["patch_shuffle_accuracy"] == 1.0  # brightness survives any shuffle
    few = measure_phase_bias(Brightness(), (imgs, labels), n_pairs=2, n_shuffle=16, patch_size=4)
    assert few["patch_shuffle"]["n_images"] == 16 and few["patch_shuffle"]["clean_accuracy"] == 1.0  # non-donors predicted too


def test_measure_phase_bias_is_seeded_and_restores_training_mode():
    imgs, labels = _brightness_data()
    model = Brightness().train()
    a = measure_phase_bias(model, (imgs, labels), n_pairs=10, patch_size=4, seed=5)
    b = measure_phase_bias(model, (imgs, labels), n_pairs=10, patch_size=4, seed=5)
    assert a == b and model.training


def test_measure_phase_bias_bad_input():
    imgs, labels = _brightness_data()
    with pytest.raises(ValueError, match="divide the image size"):
        measure_phase_bias(Brightness(), (imgs, labels), n_pairs=4, patch_size=3)
    with pytest.raises(ValueError, match="two different classes"):
        measure_phase_bias(Brightness(), (imgs, torch.zeros_like(labels)), n_pairs=4, patch_size=4)


def test_phase_bias_suite_run_report_and_cache(tmp_path):
    suites = load_suites()
    suite = suites["phase-bias"]()
    imgs, labels = _shift_data()
    cache = MemoryCache()
    results = {}
    for name, model in (("matched", MatchedFilter(imgs[::3])), ("random", nn.Sequential(nn.Flatten(), nn.Linear(192, 4)))):
        ctx = EvalContext(model=model.eval(), batch_size=8, progress=False, cache=cache, model_id=name,
                          options={"n_pairs": 20, "patch_size": 4})
        results[name] = suite.run(ctx, (imgs, labels))
        assert suite.run(ctx, (imgs, labels)) == json.loads(json.dumps(results[name]))  # second run: cache hit
    assert len(cache) == 2 and results["matched"]["full"]["phase_bias"] == 1.0
    section = suite.report(results, tmp_path)
    md = "\n".join(markdown_block(b) for b in section.blocks)
    assert "CIFAR-scale analogue of shape bias, not the Geirhos" in md
    assert "| matched |" in md and "| random |" in md
    assert section.figures and all(p.is_file() and p.stat().st_size > 0 for p in section.figures)
    # the deprecated nested form still works, with a warning; an unknown key in it gets a did-you-mean
    nested = EvalContext(model=model.eval(), batch_size=8, progress=False, cache=cache, model_id="random",
                         options={"phase-bias": {"n_pairs": 20, "patch_size": 4}})
    with pytest.warns(DeprecationWarning, match=r"options\['phase-bias'\] = \{\.\.\.\} is deprecated.*n_pairs, patch_size"):
        assert suite.run(nested, (imgs, labels)) == json.loads(json.dumps(results["random"]))  # the same cache entry
    with pytest.raises(ValueError, match=r"unknown phase-bias option 'phase-bias\.pairs' \(did you mean 'n_pairs'"):
        suite.run(EvalContext(model=Brightness(), options={"phase-bias": {"pairs": 3}}), (imgs, labels))
    with pytest.raises(ValueError, match=r"option 'n_pairs' of suite 'phase-bias': input should be greater than or equal to 1"):
        suite.run(EvalContext(model=Brightness(), options={"n_pairs": 0}), (imgs, labels))


@pytest.mark.slow
@pytest.mark.parametrize("depth", [20, 56])
def test_cifar_resnet_phase_bias(models_dir, cifar10_dir, depth):
    from aprkit.models import load_model

    ckpt = next(models_dir.glob(f"resnet{depth}-*.th"))
    model = load_model(str(ckpt))
    r = measure_phase_bias(model, f"cifar10:{cifar10_dir}", n_pairs=200, batch_size=200, seed=0)
    assert r["clean_accuracy"] > 0.85
    for v in ("full", "low_frequency"):
        assert abs(r[v]["phase"] + r[v]["amplitude"] + r[v]["neither"] - 1) < 1e-9
    assert 0.1 < r["patch_shuffle"]["accuracy"] < r["patch_shuffle"]["clean_accuracy"]


def test_evaluate_runner_integration_with_limit(tmp_path):
    from aprkit.eval import evaluate

    imgs, labels = _brightness_data()
    res = evaluate(Brightness(), "phase-bias", (imgs, labels), model_id="bright", device="cpu", batch_size=8,
                   progress=False, limit=8, options={"n_pairs": 12, "patch_size": 4}, out_dir=tmp_path)
    r = res.models["bright"]["phase-bias"]
    assert r["full"]["n_pairs"] == 12 and r["patch_shuffle"]["n_images"] == 8  # limit: first 8 images only
    assert res.summary()["bright"]["phase-bias.phase_bias"] == 0.0
    assert "CIFAR-scale analogue" in (tmp_path / "report.md").read_text()


def test_repeated_pairs_are_counted_and_named(tmp_path):
    """Pairs are drawn independently: on a tiny set most repeat, and the report said '40 pairs' as if independent."""
    from aprkit.eval.suites import load_suites

    imgs, labels = _shift_data()
    r = measure_phase_bias(MatchedFilter(imgs[:: 3]), (imgs[:4], labels[:4]), n_pairs=40, patch_size=4, seed=0)
    distinct = r["settings"]["n_distinct_pairs"]
    assert distinct < 40
    section = load_suites()["phase-bias"]().report({"m": r}, tmp_path)
    assert any(f"40 pairs ({distinct} distinct" in str(b) for b in section.blocks)


def test_unlabelled_images_are_refused():
    """Tester: images without labels (-1, e.g. some of a set unlabelled) were scored: -1 counted as a class of its
    own, its donors never correct ("neither" up, clean accuracy down) without a word; the calibration suite refuses
    such data, and so does this now."""
    from aprkit.eval import evaluate

    imgs, labels = _shift_data()
    model = MatchedFilter(imgs[:: 3])
    part = torch.where(torch.arange(len(labels)) % 2 == 0, labels, torch.full_like(labels, -1))
    with pytest.raises(ValueError, match="label for every image.*6 of 12"):
        measure_phase_bias(model, (imgs, part), n_pairs=8, patch_size=4)
    with pytest.raises(ValueError, match="label for every image"):
        evaluate(model, suite="phase-bias", data=imgs, options={"n_pairs": 8, "patch_size": 4}, progress=False,
                 report=False)
