"""The suite contract: typed ``Options`` per suite (one flat key convention), parsed once by ``evaluate``, and a
``Result`` TypedDict naming the top-level keys of what ``run`` returns."""

from __future__ import annotations

import typing

import pytest

from aprkit.eval import evaluate
from aprkit.eval.suites import SuiteOptions, load_suites
from aprkit.eval.suites.base import flat_options
from aprkit.eval.suites.calibration import CalibrationResult
from aprkit.eval.suites.corruption import CorruptionOptions, CorruptionResult
from aprkit.eval.suites.ood import OODResult
from test_eval_runner import TensorImageDataset, Tiny, small_data

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_suite_declares_documented_options_and_a_key_means_one_thing():
    seen: dict[str, tuple] = {}
    for name, cls in load_suites().items():
        assert issubclass(cls.Options, SuiteOptions), name
        for key, f in cls.Options.model_fields.items():
            assert f.description, f"option {key!r} of suite {name!r} has no docstring"
            meaning = (f.annotation, f.get_default(call_default_factory=True), f.description)
            assert seen.setdefault(key, meaning) == meaning, f"option {key!r} means two things"


def test_nested_forms_map_to_flat_keys_with_a_warning():
    load_suites()
    with pytest.warns(DeprecationWarning, match=r"options\['transplant'\].*transplant_n_pairs"):
        assert flat_options({"transplant": {"n_pairs": 3}, "knn_k": 2}) == {"transplant_n_pairs": 3, "knn_k": 2}
    with pytest.raises(ValueError, match="'transplant.n_pairs' and 'transplant_n_pairs' are both set"):
        flat_options({"transplant": {"n_pairs": 3}, "transplant_n_pairs": 4})
    with pytest.raises(TypeError, match=r"options\['phase-bias'\] must be a mapping"):
        flat_options({"phase-bias": 3})


def test_options_are_parsed_once_per_suite_and_results_have_their_typed_keys(monkeypatch):
    calls: list[str] = []
    parse = SuiteOptions.parse.__func__  # type: ignore[attr-defined]

    def counting(cls, options, suite):
        calls.append(suite)
        return parse(cls, options, suite)

    monkeypatch.setattr(SuiteOptions, "parse", classmethod(counting))
    res = evaluate(Tiny(), suite=["corruption", "calibration", "ood"], data=small_data(16), device="cpu", progress=False,
                   corruptions=["fog", "contrast"], severities=[1, 2], options={"ood_limit": 8, "ood_scores": ["msp"]},
                   report=False)
    assert sorted(calls) == ["calibration", "corruption", "ood"]  # not once per cell or per model call
    out = res.models["Tiny"]
    for suite, typed in (("corruption", CorruptionResult), ("calibration", CalibrationResult), ("ood", OODResult)):
        keys = set(typing.get_type_hints(typed))
        assert set(out[suite]) <= keys and typed.__required_keys__ <= set(out[suite]), suite


def test_none_is_the_default_and_values_are_typed():
    opts = CorruptionOptions.parse({"severities": None, "corruptions": "fog,snow", "n_bins": 10.0, "knn_k": 1}, "corruption")
    assert opts.grid() == (["snow", "fog"], [1, 2, 3, 4, 5]) and opts.n_bins == 10 and isinstance(opts.n_bins, int)
    with pytest.raises(ValueError, match="option 'preset' of suite 'corruption': input should be 'cifar', 'tinyimagenet' or 'imagenet'"):
        CorruptionOptions.parse({"preset": "cifar100"}, "corruption")



def test_ood_scores_take_comma_separated_text_as_ood_does():
    """``--set ood_scores=msp,energy`` was refused ("input should be a valid list") where ``--set ood=a,b`` works."""
    from aprkit.eval.suites.ood import OODOptions

    assert OODOptions.parse({"ood_scores": "msp, energy"}, "ood").ood_scores == ["msp", "energy"]
    with pytest.raises(ValueError, match="did you mean 'energy'"):
        OODOptions.parse({"ood_scores": "msp,enrgy"}, "ood")

def test_corruption_groups_expand_as_aprkit_corrupt_takes_them():
    from aprkit.corruptions import BENCHMARK, EXTRA

    assert CorruptionOptions.parse({"corruptions": "extra"}, "corruption").grid()[0] == list(EXTRA)
    opts = CorruptionOptions.parse({"corruptions": ["fog", "all"]}, "corruption")  # a repeat counts once
    assert opts.grid()[0] == list(BENCHMARK + EXTRA)  # in the published order, whatever the order given
    with pytest.raises(ValueError, match="did you mean"):
        CorruptionOptions.parse({"corruptions": "benchmarks"}, "corruption")


def test_mce_only_for_imagenet_val_and_says_why_not(monkeypatch):
    """mCE normalises by AlexNet's ImageNet-C errors: a 10-class set of 72-px images (the "imagenet" preset) gets
    the mean error and a note, not an mCE; 1000 classes on the whole validation set get it."""
    import torch

    from aprkit.eval.suites import corruption as suite

    images = torch.nn.functional.interpolate(small_data(4).images.float(), size=(72, 72)).round().to(torch.uint8)
    data = TensorImageDataset(images, torch.arange(4) % 10)
    opts = {"num_classes": 10}
    res = evaluate(Tiny(), suite="corruption", data=data, device="cpu", progress=False, options=opts)
    r = next(iter(res.models.values()))["corruption"]
    assert r["preset"] == "imagenet" and r["complete"] and r["mce"] is None and r["relative_mce"] is None
    assert "10 classes and 4 images" in r["mce_note"] and r["origin"] == "generated"
    monkeypatch.setattr(suite, "IMAGENET_VAL_IMAGES", 4)
    res = evaluate(Tiny(k=1000), suite="corruption", data=data, device="cpu", progress=False,
                   options={"num_classes": 1000})
    r = next(iter(res.models.values()))["corruption"]
    assert r["mce"] is not None and "generated cells" in r["mce_note"]


def test_a_later_source_wins_whichever_form_it_writes_a_suite_option_in(tmp_path):
    """``knn_k: 11`` and ``options: {knn_k: 50}`` are one setting: the later file, or a later ``--set options.knn_k``,
    wins (the top-level form always won, silently) (tester); one file setting both forms is refused."""
    from aprkit.eval.engine.config import load_eval_config

    flat, nested, both = tmp_path / "flat.yaml", tmp_path / "nested.yaml", tmp_path / "both.yaml"
    flat.write_text("suite: ood\nknn_k: 11\n")
    nested.write_text("options: {knn_k: 50}\n")
    both.write_text("knn_k: 1\noptions: {knn_k: 2}\n")
    knn = lambda paths, over=(): load_eval_config([str(p) for p in paths], list(over))["options"]["knn_k"]  # noqa: E731
    assert knn([flat, nested]) == 50 and knn([nested, flat]) == 11
    assert knn([flat], ["options.knn_k=7"]) == 7 and knn([flat, nested], ["knn_k=4"]) == 4
    assert knn([flat], ["options={knn_k: 3}"]) == 3
    with pytest.raises(ValueError, match="sets 'knn_k' both at the top level and under options"):
        load_eval_config([str(flat), str(both)])


def test_a_run_setting_under_options_is_refused(tmp_path):
    """``options: {seed: 5}`` is no suite option: refused, not lifted into the run's seed (reviewer)."""
    from aprkit.eval.engine.config import load_eval_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("suite: ood\noptions: {seed: 5}\n")
    with pytest.raises(ValueError, match="options.seed is a setting of the run, not a suite option"):
        load_eval_config(str(cfg))
