"""The shape-bias suite and measure_shape_bias on generated trees; the ImageNet MobileNetV2 (slow)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from aprkit.data.cue_conflict import CUE_CONFLICT_CATEGORIES, CueConflict, write_synthetic_cue_conflict
from aprkit.eval.engine.cache import MemoryCache
from aprkit.eval.analyses.shape_bias import measure_shape_bias, shape_bias
from aprkit.eval.suites import EvalContext, load_suites
from aprkit.eval.report import markdown_block


class Constant(nn.Module):
    """Always answers one category, with 16 or 1000 outputs."""

    def __init__(self, category: str, outputs: int = 16) -> None:
        super().__init__()
        from aprkit.eval.analyses.shape_bias import IMAGENET_CATEGORY_INDICES

        logits = torch.zeros(outputs)
        idx = CUE_CONFLICT_CATEGORIES.index(category) if outputs == 16 else IMAGENET_CATEGORY_INDICES[category][0]
        logits[idx] = 10.0
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cue")
    write_synthetic_cue_conflict(root, per_shape=3, size=16, seed=0)
    return root


@pytest.mark.parametrize("outputs", [16, 1000])
def test_measure_shape_bias_with_a_constant_model(tree, outputs):
    ds = CueConflict(tree)
    r = measure_shape_bias(Constant("cat", outputs), ds, batch_size=7)
    expected = shape_bias(["cat"] * len(ds), ds.shape_labels, ds.texture_labels)
    assert r.to_dict() == expected.to_dict()  # (NaN per-category entries compare as None)
    keep = ds.shape_labels != ds.texture_labels
    cat = CUE_CONFLICT_CATEGORIES.index("cat")
    assert r.n_shape_decisions == int((ds.shape_labels[keep] == cat).sum())
    assert r.n_texture_decisions == int((ds.texture_labels[keep] == cat).sum())
    assert r.per_category["cat"] == 1.0 and r.n_stimuli == 32


def test_shape_bias_suite_run_report_side_by_side(tree, tmp_path):
    suite = load_suites()["shape-bias"]()
    cache = MemoryCache()
    results = {}
    for name, model in (("always-cat", Constant("cat")), ("always-dog-1k", Constant("dog", 1000))):
        ctx = EvalContext(model=model, batch_size=16, progress=False, cache=cache, model_id=name)
        results[name] = suite.run(ctx, f"cue-conflict:{tree}")
        assert suite.run(ctx, str(tree)) == json.loads(json.dumps(results[name]))  # cached, same dataset id
    r = results["always-cat"]
    assert set(r) >= {"shape_bias", "shape_match", "texture_match", "per_category", "counts", "decisions"}
    assert r["counts"]["n_stimuli"] == 32 and r["counts"]["n_excluded"] == 16
    assert set(r["decisions"].values()) == {"cat"} and len(r["decisions"]) == 48
    section = suite.report(results, tmp_path / "figs")
    md = "\n".join(markdown_block(b) for b in section.blocks)
    assert "| always-cat |" in md and "| humans (published) | 0.96 |" in md
    assert "ResNet-50 (published) | 0.22" in md
    assert "| shape category | always-cat | always-dog-1k |" in md and "\n| cat | 1.000 |" in md  # per category
    assert section.figures == [tmp_path / "figs" / "shape_bias.png"] and section.figures[0].stat().st_size > 1000


def test_suite_data_errors(tree):
    suite = load_suites()["shape-bias"]()
    ctx = EvalContext(model=Constant("cat"), progress=False)
    with pytest.raises(TypeError, match="cue-conflict stimuli"):
        suite.run(ctx, 3)
    with pytest.raises(FileNotFoundError):
        suite.run(ctx, str(tree / "missing"))
    ctx.options["stimuli"] = str(tree)
    assert suite.run(ctx, None)["counts"]["n_stimuli"] == 32


def test_model_with_wrong_outputs_is_rejected(tree):
    # named on the first batch, in terms of the outputs a shape-bias model needs (not the stimuli's label range)
    # ... and what to use for a CIFAR model (suites tester)
    with pytest.raises(ValueError, match=r"outputs 10 classes .*needs 1000 or 16 outputs.*phase-bias suite"):
        measure_shape_bias(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)), tree, batch_size=4)


@pytest.mark.parametrize("outputs", [16, 1000])
def test_a_dataset_with_its_own_category_order_or_subset(tmp_path, tree, outputs):
    """Decisions name one of the 16 sorted categories; a dataset listing them in another order (or a subset) reads
    them by name, so the numbers equal the default order's (they were read by index: a constant 'cat' model
    scored 1.0 on reversed categories)."""
    model = Constant("cat", outputs)
    default = measure_shape_bias(model, CueConflict(tree)).to_dict()
    assert measure_shape_bias(model, CueConflict(tree, categories=CUE_CONFLICT_CATEGORIES[::-1])).to_dict() == default
    subset = ("dog", "cat", "clock")
    root = tmp_path / "subset"
    write_synthetic_cue_conflict(root, categories=subset, per_shape=4, size=16, seed=1)
    ds = CueConflict(root, categories=subset)
    r = measure_shape_bias(model, ds)
    assert r.to_dict() == shape_bias(["cat"] * len(ds), ds.shape_labels, ds.texture_labels, subset).to_dict()
    suite = load_suites()["shape-bias"]()
    ctx = EvalContext(model=model, batch_size=5, cache=MemoryCache(), progress=False)
    out = suite.run(ctx, ds)
    assert out["shape_bias"] == r.shape_bias and set(out["decisions"].values()) == {"cat"}
    with pytest.raises(ValueError, match=r"\['zebra'\] are not among the 16"):
        measure_shape_bias(model, CueConflict(_zebra_tree(tmp_path), categories=("cat", "zebra")))


def _zebra_tree(tmp_path):
    root = tmp_path / "zebra"
    write_synthetic_cue_conflict(root, categories=("cat", "zebra"), per_shape=2, size=16, seed=2)
    return root


def test_example_smoke_mode(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "shape_bias_imagenet.py"
    spec = importlib.util.spec_from_file_location("shape_bias_imagenet_example", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "shape bias" in out and "64 conflicting" in out
    assert (tmp_path / "shape_bias.png").is_file() and (tmp_path / "shape_bias.json").is_file()


@pytest.mark.slow
def test_mobilenet_v2_on_the_shared_stimuli(models_dir, cue_conflict_dir):
    from aprkit.models import load_model

    model = load_model("torchvision:mobilenet_v2", num_classes=1000,
                       checkpoint=models_dir / "imagenet-mobilenet_v2-qnnpack-dequantized.pth")
    r = measure_shape_bias(model, cue_conflict_dir, batch_size=32)
    assert r.n_stimuli == 154 and r.n_excluded == 6
    assert 0.05 < r.shape_bias < 0.5  # ImageNet CNNs are texture-biased (published ResNet-50: 0.22)
    assert r.texture_match > r.shape_match


def test_evaluate_runner_integration(tree, tmp_path):
    from aprkit.eval import evaluate

    res = evaluate({"cat": Constant("cat"), "dog": Constant("dog", 1000)}, "shape-bias", f"cue-conflict:{tree}",
                   device="cpu", batch_size=16, progress=False, out_dir=tmp_path)
    assert set(res.models) == {"cat", "dog"}
    assert res.models["cat"]["shape-bias"]["counts"]["n_stimuli"] == 32
    assert "shape-bias.shape_bias" in res.summary()["cat"]
    md = (tmp_path / "report.md").read_text()
    assert "Shape bias (cue-conflict)" in md and "humans (published)" in md
    # a subset of the published stimuli (tester: the shared 160 of 1,280 were drawn beside the published values
    # without a word): a caveat in the result, the report's header and results.json
    caveat = "the shape bias is measured on 32 of the 1,200 cue-conflict stimuli whose shape and texture differ: a subset"
    assert res.models["cat"]["shape-bias"]["caveats"][0].startswith(caveat)
    assert caveat in md and caveat in (tmp_path / "results.json").read_text()


def test_the_full_stimulus_set_has_no_subset_caveat(tree, monkeypatch):
    import aprkit.eval.suites.shape_bias as suite
    from aprkit.eval import evaluate

    monkeypatch.setattr(suite, "FULL_CONFLICTING", 32)  # the synthetic tree as the whole set
    res = evaluate(Constant("cat"), "shape-bias", f"cue-conflict:{tree}", progress=False)
    assert "caveats" not in res.models["Constant"]["shape-bias"]
    # its conflicting stimuli only (CueConflict(conflicting_only=True)): the whole set still, no caveat (it said "a
    # subset" from the image count; suites tester)
    from aprkit.data.cue_conflict import CueConflict

    res = evaluate(Constant("cat"), "shape-bias", CueConflict(tree, conflicting_only=True), progress=False)
    assert "caveats" not in res.models["Constant"]["shape-bias"]


def test_limit_says_it_does_not_apply_to_the_shape_bias_suite(tree):
    """--limit ('the first N images of each dataset') was silently ignored by shape-bias, which scores every
    stimulus."""
    from aprkit.eval import evaluate

    with pytest.warns(RuntimeWarning, match="limit=4 does not apply to shape-bias: it scores every image of its data"):
        res = evaluate(Constant("cat"), suite="shape-bias", data=f"cue-conflict:{tree}", limit=4, progress=False)
    assert res.models["Constant"]["shape-bias"]["counts"]["n_stimuli"] == 32  # every conflicting stimulus


def test_specs_of_other_data_and_phase_bias_on_the_stimuli_are_clear_errors(tree, tmp_path):
    """A cifar10: spec given to shape-bias names what it needs; the phase-bias suite refuses a model whose outputs
    are not the data's classes (an ImageNet model on the 16 categories scored 0 % silently)."""
    from aprkit.eval import evaluate

    with pytest.raises(ValueError, match="needs the cue-conflict stimuli .*got the cifar10 spec"):
        evaluate(Constant("cat", 1000), "shape-bias", f"cifar10:{tmp_path}", progress=False)
    with pytest.raises(ValueError, match="compares predictions with the data's 16 classes, but the model outputs 1000"):
        evaluate(Constant("cat", 1000), "phase-bias", f"cue-conflict:{tree}", progress=False)
    with pytest.raises(ValueError, match="data is required.*shape-bias=cue-conflict:DIR"):
        evaluate(Constant("cat", 1000), "shape-bias", None, options={"stimuli": str(tree)}, progress=False)
    with pytest.raises(ValueError, match="must be positive and divide the image size"):  # before any pass
        evaluate(Constant("cat", 16), "phase-bias", f"cue-conflict:{tree}", options={"patch_size": 5}, progress=False)


def test_mixed_sizes_name_the_files_and_a_cue_conflict_fix(tmp_path):
    from PIL import Image

    root = tmp_path / "mixed"
    paths = write_synthetic_cue_conflict(root, per_shape=2, size=16)
    Image.new("RGB", (20, 20)).save(paths[0])
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 16))
    with pytest.raises(ValueError, match=r"airplane1-truck1\.png is 20x20.*CueConflict\(ROOT, transform="):
        measure_shape_bias(model, root)


def test_the_recorded_stimuli_do_not_depend_on_the_path_that_hit_the_cache(tree, tmp_path):
    """The cache is keyed by the resolved folder, but the result stored the path as given: a run through a link
    recorded the link's path in results.json, a fresh folder the real one."""
    (tmp_path / "link").symlink_to(tree)
    suite, cache = load_suites()["shape-bias"](), MemoryCache()
    got = [suite.run(EvalContext(model=Constant("cat"), progress=False, cache=cache), f"cue-conflict:{p}")["stimuli"]
           for p in (tmp_path / "link", tree)]
    assert got == [str(tree.resolve())] * 2 and len(cache) == 1


def test_stimuli_not_at_224_px_for_an_imagenet_model_without_preprocessing_warn(tmp_path):
    """A --checkpoint ImageNet model took stimuli of another size as they are, without a word, where model-vs-human
    resizes them to 256 and crops 224 (bias reviewer)."""
    from torch import nn

    from aprkit.data.cue_conflict import write_synthetic_cue_conflict
    from aprkit.eval import evaluate

    write_synthetic_cue_conflict(tmp_path / "cue", per_shape=1, size=16, seed=0)
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 1000))
    with pytest.warns(RuntimeWarning, match=r"stimuli are 16x16 px, not 224: the model sees them as they are"):
        evaluate(net, "shape-bias", f"cue-conflict:{tmp_path / 'cue'}", device="cpu", progress=False)


def test_a_cue_conflict_triple_of_fewer_classes_than_the_model_names_the_categories_option():
    from aprkit.eval import evaluate
    from aprkit.eval.engine.logit_checks import OutputWidthError

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
    s, t = torch.arange(16) % 5, (torch.arange(16) + 1) % 5
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    with pytest.raises(OutputWidthError, match=r"triple has the classes its labels reach \(0..4\); give the suite's "
                                               r"categories option"):
        evaluate(net, "cue-conflict", {"cue-conflict": (x, s, t)}, device="cpu", progress=False)
    narrow = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3))  # fewer outputs: the general hint
    with pytest.raises(OutputWidthError, match="check_classes=false"):
        evaluate(narrow, "cue-conflict", {"cue-conflict": (x, s, t)}, device="cpu", progress=False)
