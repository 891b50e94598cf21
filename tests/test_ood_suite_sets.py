"""The OOD suite with real OOD folders: images of another size than the in-distribution ones, reports combining
models evaluated against other OOD sets, and options given without the suite that reads them."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

from aprkit.eval import evaluate, write_report


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)  # the synthetic set's classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((-2, -1)))


def _folder(root, size: int, n: int = 6):
    g = torch.Generator().manual_seed(size)
    for i in range(n):
        (root / "x").mkdir(parents=True, exist_ok=True)
        arr = torch.randint(0, 256, (size, size + 2 * (i % 2), 3), dtype=torch.uint8, generator=g).numpy()
        Image.fromarray(arr).save(root / "x" / f"{i}.png")
    return root


OPTS = {"ood_scores": ["msp", "energy"]}


def test_ood_images_of_another_size_are_resized_to_the_in_distribution_size(tmp_path) -> None:
    big = _folder(tmp_path / "big", 48)  # mixed 48x48 and 48x50: also a folder that cannot be batched as it is
    res = evaluate(Tiny(), "ood", "synthetic:12", ood=[f"folder:{big}"], options=OPTS, progress=False,
                   out_dir=tmp_path / "run")
    r = next(iter(res.models.values()))["ood"]
    assert r["sets"]["big"]["resized_from"] == "mixed sizes" and r["sets"]["big"]["n"] == 6  # not one of them
    assert "big (n=6, resized from mixed sizes)" in (tmp_path / "run" / "report.md").read_text()
    mixed = _folder(tmp_path / "mixed", 32, n=3)  # the first image has the in-distribution size, the second not
    r = next(iter(evaluate(Tiny(), "ood", "synthetic:12", ood=[f"folder:{mixed}"], options=OPTS,
                           progress=False).models.values()))["ood"]
    assert r["sets"]["mixed"]["n"] == 3
    assert r["sets"]["mixed"]["resized_from"] == "mixed sizes"  # seen in the middle image: the report says it
    same = _folder(tmp_path / "same", 32, n=1)  # synthetic images are 32 px: kept as they are
    r = next(iter(evaluate(Tiny(), "ood", "synthetic:12", ood=[f"folder:{same}"], options=OPTS,
                           progress=False).models.values()))["ood"]
    assert "resized_from" not in r["sets"]["same"]
    one_size = _folder(tmp_path / "one_size", 48, n=1)  # one other size: named
    r = next(iter(evaluate(Tiny(), "ood", "synthetic:12", ood=[f"folder:{one_size}"], options=OPTS,
                           progress=False).models.values()))["ood"]
    assert r["sets"]["one_size"]["resized_from"] == [48, 48]
    with pytest.warns(RuntimeWarning, match="48x48, the in-distribution ones 32x32, and ood_resize is off"):
        one = _folder(tmp_path / "one", 48, n=1)
        res = evaluate(Tiny(), "ood", "synthetic:12", ood=[f"folder:{one}"], options={**OPTS, "ood_resize": False},
                       progress=False, out_dir=tmp_path / "own")
    assert next(iter(res.models.values()))["ood"]["sets"]["one"]["own_size"] == [48, 48]
    assert "one (n=1, scored at its own 48x48)" in (tmp_path / "own" / "report.md").read_text()


def test_a_report_of_models_with_other_ood_sets_renders(tmp_path) -> None:
    a = evaluate(Tiny(), "ood", "synthetic:12", options=OPTS, progress=False, out_dir=tmp_path / "a")
    b = evaluate(Tiny(), "ood", "synthetic:12", ood=["noise:uniform"], options=OPTS, progress=False,
                 out_dir=tmp_path / "b")
    write_report({"noise": a, "uniform": b}, tmp_path / "both")
    md = (tmp_path / "both" / "report.md").read_text()
    assert "Rendering this section failed" not in md and "ood_scores.png" in md


@pytest.mark.parametrize("kwargs", [{"ood": ["noise:gaussian"]}, {"fit": "synthetic:10"},
                                    {"options": {"corruptions": "none"}, "corrupted": "cifar10-c:/nowhere"}])
def test_settings_no_selected_suite_reads_are_refused(kwargs) -> None:
    with pytest.raises(ValueError, match="not selected|where nothing reads it"):
        evaluate(Tiny(), "calibration" if "ood" in kwargs or "fit" in kwargs else "corruption", "synthetic:12",
                 progress=False, **kwargs)


def test_severities_of_a_config_stay_acceptable_with_corruptions_none() -> None:
    """A config that sets severities (configs/eval/cifar10_resnet20.yaml) runs with --corruptions none."""
    r = evaluate(Tiny(), "corruption", "synthetic:12", options={"corruptions": "none", "severities": [1, 2, 3, 4, 5]},
                 progress=False)
    assert next(iter(r.models.values()))["corruption"]["cells"] == {}


def test_the_class_sorted_limit_warning_comes_once_per_run(tmp_path) -> None:
    """An image folder read class by class with a limit: one warning for the run, not one per suite and cell."""
    import warnings

    from aprkit.data import get_dataset

    for c in range(3):
        _folder(tmp_path / "fd" / f"c{c}", 32, n=4)
    ds = get_dataset(f"folder:{tmp_path / 'fd'}", resize=32, crop=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate(Tiny(), ["ood", "calibration"], ds, limit=4, progress=False, num_classes=10,
                 options={**OPTS, "corruptions": ["contrast"], "severities": [1], "ood": ["noise:gaussian"],
                          "check_classes": False})  # 3 classes under 10 outputs: labels taken as output indices
    assert sum("takes the first 4 images" in str(w.message) for w in caught) == 1, [str(w.message) for w in caught]


def test_a_limited_ood_folder_read_class_by_class_warns(tmp_path) -> None:
    """ood_limit took the first N images of a class-sorted OOD folder (its first classes) without a word, where the
    in-distribution data warns."""
    for c in range(3):
        _folder(tmp_path / "ood" / f"c{c}", 32, n=4)
    with pytest.warns(RuntimeWarning, match=r"OOD set folder:.*takes the first 4 images .* cover 1 of its 3 classes"):
        res = evaluate(Tiny(), "ood", "synthetic:12", ood=[f"folder:{tmp_path / 'ood'}"],
                       options={**OPTS, "ood_limit": 4}, progress=False, out_dir=tmp_path / "out")
    # kept with the numbers, not only on stderr: the suite's result, results.json and the report's header
    (caveat,) = res["ood"]["caveats"]
    assert caveat.startswith("OOD set folder:") and "cover 1 of its 3 classes" in caveat
    meta = json.loads((tmp_path / "out" / "results.json").read_text())["meta"]
    assert meta["caveats"] == [caveat]
    assert f"**Caveats:** {caveat}" in res.paths["markdown"].read_text()
    whole = evaluate(Tiny(), "ood", "synthetic:12", ood=[f"folder:{tmp_path / 'ood'}"], options=OPTS, progress=False)
    assert "caveats" not in whole["ood"]



def test_a_limited_cue_conflict_ood_set_warns(tmp_path) -> None:
    """A cue-conflict OOD set keeps its labels as shape_labels, which the first-classes warning did not read: cut by
    ood_limit (or --limit) it was scored on its first shapes alone without a word."""
    from aprkit.data.cue_conflict import write_synthetic_cue_conflict

    write_synthetic_cue_conflict(tmp_path / "cc", per_shape=1, size=32)
    with pytest.warns(RuntimeWarning, match=r"OOD set cue-conflict:.*takes the first 4 images .* cover 4 of its 16"):
        evaluate(Tiny(), "ood", "synthetic:12", ood=[f"cue-conflict:{tmp_path / 'cc'}"],
                 options={**OPTS, "ood_limit": 4}, progress=False)

def test_in_accuracy_only_for_labels_in_the_models_classes(tmp_path) -> None:
    """A 2-class folder scored by a 10-class model: the OOD scores hold, its 'accuracy' (labels 0/1 against the
    model's 10 classes) meant nothing and is left out; otherwise it is an exact fraction, not a float32 one."""
    from aprkit.data import get_dataset

    for c in range(2):
        _folder(tmp_path / "two" / f"c{c}", 32, n=3)
    two = get_dataset(f"folder:{tmp_path / 'two'}", resize=32, crop=32)
    r = next(iter(evaluate(Tiny(), "ood", two, ood=["noise:gaussian"], options=OPTS,
                           progress=False).models.values()))["ood"]
    assert "in_accuracy" not in r and next(iter(r["sets"].values()))["msp"]["auroc"] is not None
    r = next(iter(evaluate(Tiny(), "ood", "synthetic:12", ood=["noise:gaussian"], options=OPTS,
                           progress=False).models.values()))["ood"]
    assert r["in_accuracy"] * 12 == round(r["in_accuracy"] * 12)


class _Images(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], 0


@pytest.mark.parametrize(("images", "message"), [
    (torch.zeros(0, 3, 8, 8, dtype=torch.uint8), "holds no images"),
    (torch.zeros(4, 8, 8, dtype=torch.uint8), r"expected images as \(C, H, W\) tensors .* got shape \(8, 8\)"),
])
def test_an_empty_or_two_dimensional_ood_dataset_is_named(images, message) -> None:
    """A Dataset OOD set without images, or of (H, W) images, is refused naming the set and what was expected (it was
    a bare IndexError / unpacking error)."""
    with pytest.raises(ValueError, match=message):
        evaluate(Tiny(), "ood", "synthetic:12", ood={"mine": _Images(images)}, options=OPTS, progress=False)


def test_a_score_named_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="ood_scores names msp more than once"):
        evaluate(Tiny(), "ood", "synthetic:12", options={"ood_scores": ["msp", "msp", "energy"]}, progress=False)


@pytest.mark.filterwarnings("ignore:OOD set .* ood_resize is off")
@pytest.mark.parametrize("batch_size", [1, 4])
def test_with_ood_resize_off_a_set_of_mixed_sizes_is_refused_at_every_batch_size(tmp_path, batch_size) -> None:
    opts = {**OPTS, "ood_resize": False}
    shown = _folder(tmp_path / "shown", 48)  # images 0 and 5 (sampled up front) differ: refused before scoring
    with pytest.raises(ValueError, match=r"OOD set .*shown: image 5 is 48x50, image 0 48x48; with ood_resize off"):
        evaluate(Tiny(), "ood", "synthetic:12", ood=[f"folder:{shown}"], options=opts, progress=False,
                 batch_size=batch_size)
    hidden = _folder(tmp_path / "hidden", 48, n=5)  # images 0, 2, 4 sampled up front are 48x48, image 1 is not
    with pytest.raises(ValueError, match=r"OOD set .*hidden: image 1 is 48x50, image 0 48x48"):
        evaluate(Tiny(), "ood", "synthetic:12", ood=[f"folder:{hidden}"], options=opts, progress=False,
                 batch_size=batch_size)


def test_a_fit_without_spread_leaves_mahalanobis_out_with_a_note(tmp_path) -> None:
    """A fit of one image per class gives Mahalanobis a covariance of zeros: it scored every input a perfect 0 (an
    AUROC of 0.5 that measured nothing); now it is not computed, the note says why (also from the cache), and the
    other scores are."""
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    opts = {"ood": ["noise:gaussian"], "ood_limit": 4, "fit": (x, torch.arange(4)),
            "ood_scores": ["msp", "mahalanobis", "knn"], "knn_k": 2}
    for _ in range(2):  # computed, then read from the folder's cache
        r = next(iter(evaluate(Tiny(), "ood", (x, torch.arange(4)), options=opts, progress=False,
                               out_dir=tmp_path / "run").models.values()))["ood"]
        assert r["scores"] == ["msp", "knn"]
        assert "Mahalanobis not computed: the features do not vary around their class means" in r["note"]


def test_a_knn_fit_takes_labels_the_model_does_not_have() -> None:
    """KNN reads no labels: a fit set of other classes (16 cue-conflict shapes for a 10-class model) was refused for
    its labels (tester); Mahalanobis, which fits class means, still refuses them."""
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    many = torch.arange(8) + 40  # beyond any output of the model
    opts = {"ood": ["noise:gaussian"], "ood_limit": 4, "fit": (x, many), "knn_k": 2}
    r = next(iter(evaluate(Tiny(), "ood", (x, torch.arange(8) % 2), options={**opts, "ood_scores": ["msp", "knn"]},
                           progress=False).models.values()))["ood"]
    assert r["scores"] == ["msp", "knn"]
    with pytest.raises(ValueError, match="range over"):
        evaluate(Tiny(), "ood", (x, torch.arange(8) % 2), options={**opts, "ood_scores": ["mahalanobis"]},
                 progress=False)


def test_an_unlabelled_fit_leaves_mahalanobis_out_with_a_note() -> None:
    """Tester: a fit set without labels (noise:) stopped the whole suite with "labels must be class indices >= 0";
    Mahalanobis (class means) is left out with a note now, KNN and the logit scores are computed."""
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    opts = {"ood": ["noise:gaussian"], "ood_limit": 4, "fit": "noise:uniform", "fit_limit": 8, "knn_k": 2,
            "ood_scores": ["msp", "mahalanobis", "knn"]}
    r = next(iter(evaluate(Tiny(), "ood", (x, torch.arange(8) % 2), options=opts, progress=False).models.values()))
    assert r["ood"]["scores"] == ["msp", "knn"] and "Mahalanobis not computed: 8 of 8" in r["ood"]["note"]


def test_a_misspelt_ood_set_is_refused_before_the_fit_pass(monkeypatch) -> None:
    """A tester's ``--ood noise:gausian`` was named only after the Mahalanobis/KNN fit over 10,000 training images."""
    from aprkit.eval.suites import ood

    def no_fit(*_a, **_k):
        raise AssertionError("the fit data was read before the OOD sets were checked")

    monkeypatch.setattr(ood, "_fit_source", no_fit)
    for spec, said in (("noise:gausian", r"unknown noise kind 'gausian' \(did you mean 'gaussian'\?\)"),
                       ("foldr:/tmp/x", r"unknown dataset kind 'foldr'.*did you mean 'folder'")):
        with pytest.raises(ValueError, match=said):
            evaluate(Tiny(), "ood", "synthetic:12", ood=[spec], options={"fit": "synthetic:12"}, progress=False)


def test_a_knn_k_above_the_fit_cap_is_refused_before_any_suite_runs() -> None:
    """knn_k (50) above fit_limit failed inside the KNN fit, after the other suites had run, naming neither option
    (model-zoo tester); the OOD options refuse it when they are parsed."""
    from aprkit.eval.suites.ood import OODOptions

    with pytest.raises(ValueError, match=r"knn_k=50 needs at least that many fit images, but fit_limit=8; lower knn_k"):
        OODOptions.parse({"fit_limit": 8}, "ood")
    assert OODOptions.parse({"fit_limit": 8, "ood_scores": "msp,energy"}, "ood").fit_limit == 8
    assert OODOptions.parse({"fit_limit": 8, "knn_k": 5}, "ood").knn_k == 5
