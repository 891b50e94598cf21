"""Evaluation edge cases found by black-box testing: repeated corruption cells, nested merges, duplicate YAML keys."""

from __future__ import annotations

import warnings

import pytest
import torch

from aprkit.eval import Results
from aprkit.eval.report.header import header_items
from aprkit.eval.suites import load_suites
from aprkit.eval.suites.corruption import CorruptionOptions


def test_repeated_corruptions_and_severities_count_once():
    """fog twice or severity 1 twice weighed those cells twice in the calibration mean and the severity curve, and a
    repeated 5 made a full grid 'incomplete' (no mean corruption error)."""
    opts = CorruptionOptions(corruptions=["fog", "fog", "contrast"], severities=[1, 1, 5])
    assert opts.corruptions == ["fog", "contrast"] and opts.severities == [1, 5]
    assert CorruptionOptions(severities=[1, 2, 3, 4, 5, 5]).severities == [1, 2, 3, 4, 5]


def _run(model: str, limit: int, date: str) -> Results:
    return Results(models={model: {"x": {"v": 1.0}}},
                   meta={"models": {model: f"{model}.pt"}, "date": date,
                         "provenance": {model: {"x": {"options": {"limit": limit}}}}})


def test_merging_a_merged_run_keeps_every_runs_metadata():
    a, b, c = _run("a", 100, "2026-01-01"), _run("b", 100, "2026-01-02"), _run("c", 200, "2026-01-03")
    twice = Results.merge([Results.merge([a, b]), c])
    flat = Results.merge([a, b, c])
    assert twice.meta == flat.meta and len(twice.meta["runs"]) == 3
    items = {i.label: i.text for i in header_items(["a", "b", "c"], twice.meta)}
    assert "a (a.pt)" in items["Models"] and "first 100 images" in items["Images"] and "2026-01-01" in items["Date"]


def test_a_renamed_merge_keeps_the_models_spec():
    merged = Results.merge({"A": _run("a", 100, "2026-01-01")})
    items = {i.label: i.text for i in header_items(["A"], merged.meta)}
    assert items["Models"] == "A (a.pt)"


@pytest.mark.parametrize("text, key", [("models:\n  r: resnet20\n  r: resnet32\n", "'r' twice"),
                                       ("limit: 50\nlimit: 10\n", "'limit' twice"),
                                       ("models:\n  1: resnet20\n  true: resnet44\n", "'true' twice")])
def test_duplicate_yaml_keys_are_refused(tmp_path, text, key):
    from aprkit.eval.engine.config import load_eval_config

    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ValueError, match=f"not valid YAML at line .*{key}"):
        load_eval_config(tmp_path / "c.yaml")


def test_merge_keys_may_be_overridden(tmp_path):
    from aprkit.config import _yaml_load

    assert _yaml_load("b: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n")["c"] == {"x": 3, "y": 2}


#: the suites the registry marks as means over corruption x severity cells
GRID = {name for name, cls in load_suites().items() if cls.cell_grid}


def test_the_header_says_when_models_used_other_corruption_cells():
    """Two models evaluated on other corruption grids into one folder were compared with no word of it."""
    def run(model: str, corruptions: list[str], severities: list[int]) -> Results:
        opts = {"corruptions": corruptions, "severities": severities}
        return Results(models={model: {"corruption": {}}},
                       meta={"provenance": {model: {"corruption": {"options": opts}, "calibration": {"options": opts}}}})

    same = Results.merge([run("a", ["fog"], [1]), run("b", ["fog"], [1])])
    assert "Corruption cells" not in {i.label for i in header_items(["a", "b"], same.meta, grid_suites=GRID)}
    other = Results.merge([run("a", ["fog"], [1]), run("b", ["glass_blur"], [5])])
    assert "Corruption cells" not in {i.label for i in header_items(["a", "b"], other.meta)}  # no grid suites named
    items = {i.label: i.text for i in header_items(["a", "b"], other.meta, grid_suites=GRID)}
    assert items["Corruption cells"].startswith("DIFFER: fog; severities 1 (a corruption, a calibration)")
    assert "glass_blur; severities 5 (b corruption, b calibration)" in items["Corruption cells"]


def test_a_base_path_may_use_environment_variables(tmp_path, monkeypatch):
    from aprkit.config import read_config_files

    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.yaml").write_text("limit: 7\n")
    (tmp_path / "c.yaml").write_text("base: ${CFGDIR}/base.yaml\nseed: 3\n")
    monkeypatch.setenv("CFGDIR", str(tmp_path / "shared"))
    assert read_config_files(tmp_path / "c.yaml") == {"limit": 7, "seed": 3}


def test_the_same_cells_in_other_spellings_are_no_difference():
    from aprkit.corruptions import BENCHMARK
    from aprkit.eval.report.header import _grid_text

    def run(model: str, opts: dict) -> dict:
        return {"provenance": {model: {"corruption": {"options": opts}}}}

    same = [({"corruptions": "fog,contrast", "severities": [1, 5]}, {"corruptions": ["contrast", "fog", "fog"],
                                                                        "severities": "5,1"}),
            ({}, {"severities": [1, 2, 3, 4, 5]}),
            ({"corruptions": ["none"], "severities": [1]}, {"corruptions": ["clean"]}),
            # the defaults named, one by one or as their group (the header read "DIFFER"; report tester)
            ({}, {"corruptions": list(BENCHMARK)}), ({"corruptions": "benchmark"}, {"corruptions": list(BENCHMARK)})]
    for a, b in same:
        assert _grid_text([run("a", a), run("b", b)], {g: list(BENCHMARK) for g in GRID}) == "", (a, b)
    assert _grid_text([run("a", {}), run("b", {"severities": [5]})], GRID).startswith("DIFFER")


def test_the_cell_grid_suites_are_the_corruption_cell_suites():
    """``Suite.cell_grid`` marks the suites whose numbers are means over the corruption cells (the report header
    compares their cells); ``write_report`` reads them from the registry."""
    assert GRID == {"corruption", "calibration"}


def test_yaml_merges_of_merged_anchors_and_odd_keys_load(tmp_path):
    from aprkit.config import _yaml_load, read_config_files

    text = "b: &b {x: 1, y: 2}\nitems:\n  - &d\n    <<: *b\n    x: 3\nother:\n  <<: *d\n  z: 1\n"
    assert _yaml_load(text)["items"][0] == {"x": 3, "y": 2}
    assert _yaml_load("=: 1\n") == {"=": 1}
    (tmp_path / "~old.yaml").write_text("limit: 4\n")
    (tmp_path / "c.yaml").write_text("base: ~old.yaml\n")
    assert read_config_files(tmp_path / "c.yaml") == {"limit": 4}


def test_merge_takes_runs_without_metadata():
    assert Results.merge([Results(models={"k": {}}, meta=None)]).meta == {"runs": [{}]}


def test_the_header_says_when_models_were_measured_with_other_suite_settings():
    """OOD means over other OOD sets, or phase biases on other pairs, side by side: a header line per suite names the
    settings that differ and whose they are (the corruption cells had such a line, the other suites none); the
    defaults count as given, so spelling them out is no difference."""
    def run(model: str, suite: str, opts: dict) -> Results:
        return Results(models={model: {suite: {}}}, meta={"provenance": {model: {suite: {"options": opts}}}})

    same = Results.merge([run("a", "ood", {"ood": "noise:uniform,noise:blobs"}),
                          run("b", "ood", {"ood": ["noise:blobs", "noise:uniform"], "fit_limit": 10000})])
    assert not [i for i in header_items(["a", "b"], same.meta, setup=_setup) if i.label == "ood settings"]
    defaults = Results.merge([run("a", "ood", {}), run("b", "ood", {"ood": [f"noise:{n}" for n in (
        "blobs", "gaussian", "rademacher", "uniform")]}), run("c", "ood", {"ood": None})])
    assert not [i for i in header_items(["a", "b", "c"], defaults.meta, setup=_setup) if i.label == "ood settings"]
    named = Results.merge([run("a", "ood", {"ood": {"x": "noise:blobs", "y": "noise:uniform"}}),
                           run("b", "ood", {"ood": {"y": "noise:uniform", "x": "noise:blobs"}})])
    assert not [i for i in header_items(["a", "b"], named.meta, setup=_setup) if i.label == "ood settings"]
    other = Results.merge([run("a", "ood", {"ood": ["noise:gaussian"]}), run("b", "ood", {"ood": ["noise:blobs"]}),
                           run("c", "phase-bias", {"n_pairs": 20}), run("d", "phase-bias", {})])
    items = {i.label: i.text for i in header_items(["a", "b", "c", "d"], other.meta, setup=_setup)}
    assert items["ood settings"] == "DIFFER: ood=noise:gaussian (a) | ood=noise:blobs (b)"
    assert items["phase-bias settings"] == "DIFFER: n_pairs=20 (c) | n_pairs=2000 (d)"


def _setup(suite, options):
    from aprkit.eval.suites import load_suites

    return load_suites()[suite].setup_text(options)


def test_a_merged_reports_header_names_each_runs_images_and_data():
    """Each run's line was built on its own and a run whose suites read every image gave an empty text, so a merge of
    a shape-bias run (every stimulus) and a phase-bias run (first 400) said 'first 400 images' for both."""
    def run(model: str, suite: str, limit: int | None, data: str) -> Results:
        return Results(models={model: {suite: {}}},
                       meta={"provenance": {model: {suite: {"options": {"limit": limit}, "data": data}}}})

    merged = Results.merge([run("s", "shape-bias", None, "cue-conflict:/c"), run("p", "phase-bias", 400, "cifar10:/d")])
    items = {i.label: i.text for i in header_items(["s", "p"], merged.meta)}
    assert items["Images"] == "all images (shape-bias); first 400 images (phase-bias)"
    assert items["Data"] == "cue-conflict:/c (shape-bias); cifar10:/d (phase-bias)"
    two = Results.merge([run("a", "x", 100, "d:/1"), run("b", "x", 200, "d:/1")])
    assert {i.label: i.text for i in header_items(["a", "b"], two.meta)}["Images"] == \
        "first 100 images (x: a); first 200 images (x: b)"


def test_distinct_headline_measures_have_distinct_labels():
    """The shape-bias suite (Geirhos' stimuli) and the cue-conflict suite (synthetic) both labelled their rows
    'cue-conflict: shape match', so a summary of both showed two rows of one name with other numbers."""
    from aprkit.eval.suites import load_suites

    names_of: dict[str, set[str]] = {}
    for suite in load_suites().values():
        try:
            measures = suite().headline({})
        except KeyError:  # a suite whose headline reads nested results (corruption, calibration)
            continue
        for m in measures:
            names_of.setdefault(m.display_label, set()).add(m.name)
    assert len(names_of) >= 8 and all(len(names) == 1 for names in names_of.values()), names_of


def test_a_suite_that_fails_for_one_of_several_models_is_named_as_failed(tmp_path):
    """The error of a multi-model run did not say which model it was, and the report called the failed suite 'not yet
    run'; the other model's finished results are kept."""
    import json

    from test_eval_runner import Tiny, small_data

    from aprkit.cli._common import error_line
    from aprkit.eval import evaluate

    with pytest.raises(ValueError) as info:
        evaluate({"good": Tiny(), "bad": Tiny(k=3)}, suite="calibration", data=small_data(8), out_dir=tmp_path,
                 device="cpu", batch_size=8, progress=False)
    line, code = error_line(info.value)
    assert line.startswith("model 'bad', suite 'calibration': ") and code == 2
    meta = json.loads((tmp_path / "results.json").read_text())["meta"]
    assert list(meta["failed"]) == ["bad"] and meta["failed"]["bad"]["calibration"].startswith("ValueError: ")
    assert meta["complete"] is False and "good" in json.loads((tmp_path / "results.json").read_text())["models"]
    status = [line for line in (tmp_path / "report.md").read_text().splitlines() if "Status" in line][0]
    assert "failed: bad: calibration (ValueError: " in status and "not yet run" not in status


def test_an_imagenet_c_cell_whose_images_change_is_recomputed(tmp_path):
    """The -C source's identity read the root's top two levels (corruption/severity folders), not the images two
    levels further down: images overwritten in a cell were served the cached accuracy of the old ones."""
    import os

    from PIL import Image
    from test_eval_runner import Tiny

    from aprkit.data.registry import corrupted_cell_state
    from aprkit.eval import evaluate
    from conftest import natural_images

    imgs = natural_images(8, 16, seed=1).permute(0, 2, 3, 1).numpy()
    for root in (tmp_path / "clean", tmp_path / "C" / "fog" / "3"):
        for i, img in enumerate(imgs):
            (root / f"n0000000{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / f"n0000000{i % 2}" / f"{i}.png")
    kw = dict(suite="corruption", data=f"folder:{tmp_path / 'clean'}", device="cpu", batch_size=4, progress=False,
              corrupted=f"imagenet-c:{tmp_path / 'C'}", corruptions=["fog"], severities=[3], report=False,
              out_dir=tmp_path / "out")
    first = evaluate(Tiny(k=2), **kw)["corruption"]["cells"]["fog"]["3"]
    state = corrupted_cell_state(f"imagenet-c:{tmp_path / 'C'}", "fog", 3)
    for path in sorted((tmp_path / "C" / "fog" / "3").rglob("*.png")):  # same names and sizes, other pixels
        Image.fromarray(imgs[0] * 0).save(path)
        os.utime(path.parent, ns=(1, 1))  # the class folders look untouched
    assert corrupted_cell_state(f"imagenet-c:{tmp_path / 'C'}", "fog", 3) != state
    again = evaluate(Tiny(k=2), **kw)["corruption"]["cells"]["fog"]["3"]
    fresh = evaluate(Tiny(k=2), **{**kw, "out_dir": tmp_path / "fresh"})["corruption"]["cells"]["fog"]["3"]
    assert again["nll"] == fresh["nll"] != first["nll"]  # recomputed from the new images, not read back
    assert corrupted_cell_state(f"cifar10-c:{tmp_path}", "fog", 3) is None


def test_the_merged_data_line_names_the_models_of_one_suite_on_other_data():
    def run(model: str, data: str) -> Results:
        return Results(models={model: {"x": {}}}, meta={"provenance": {model: {"x": {"options": {}, "data": data}}}})

    merged = Results.merge([run("a", "d:/1"), run("b", "d:/2"), run("c", "d:/1")])
    assert {i.label: i.text for i in header_items(["a", "b", "c"], merged.meta)}["Data"] == "a, c: d:/1; b: d:/2"
    def two(model: str, data: str) -> Results:
        return Results(models={model: {"x": {}, "y": {}}}, meta={"provenance": {model: {
            "x": {"options": {}, "data": data}, "y": {"options": {}, "data": "e:/0"}}}})

    both = Results.merge([two("a", "d:/1"), two("b", "d:/2")])
    assert {i.label: i.text for i in header_items(["a", "b"], both.meta)}["Data"] == \
        "d:/1 (x: a); d:/2 (x: b); e:/0 (y)"
    one = Results.merge([run("a", "d:/1"), run("c", "d:/1")])
    assert {i.label: i.text for i in header_items(["a", "c"], one.meta)}["Data"] == "d:/1"


def test_identities_see_images_in_folders_nested_in_a_class(tmp_path):
    """The reader takes images at any depth below a class folder, the identities looked two levels down: an image
    overwritten in place in class/sub/ (or in an ImageNet-C cell's class/sub/) kept the cached result."""
    import os

    from PIL import Image

    from aprkit.data.registry import corrupted_cell_state
    from aprkit.eval.engine.datasets import dataset_id

    for rel in ("f/cat/sub/a.png", "C/fog/3/cat/sub/a.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / rel)
    before = dataset_id(f"folder:{tmp_path / 'f'}"), corrupted_cell_state(f"imagenet-c:{tmp_path / 'C'}", "fog", 3)
    for rel in ("f/cat/sub/a.png", "C/fog/3/cat/sub/a.png"):
        Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / rel)
        os.utime(tmp_path / rel, ns=(2, 2))
        os.utime((tmp_path / rel).parent, ns=(1, 1))  # the folders look untouched
    after = dataset_id(f"folder:{tmp_path / 'f'}"), corrupted_cell_state(f"imagenet-c:{tmp_path / 'C'}", "fog", 3)
    assert before[0] != after[0] and before[1] != after[1]


def test_a_merge_with_a_run_without_provenance_lists_each_data_once():
    with_records = Results(models={"a": {"corruption": {}}}, meta={"provenance": {"a": {
        "corruption": {"options": {}, "data": "c10"}}}})
    plain = Results(models={"b": {"corruption": {}, "ood": {}}}, meta={"data": {"corruption": "c10", "ood": "svhn"}})
    merged = Results.merge([with_records, plain])
    assert {i.label: i.text for i in header_items(["a", "b"], merged.meta)}["Data"] == \
        "c10 (corruption); svhn (ood)"


class _WideHead(torch.nn.Module):
    """A 512 -> 10 classifier: MKL's matrix product takes another kernel for up to 15 rows than for more."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.fc = torch.nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(self.relu(self.conv(x)), 4).flatten(1))


@pytest.mark.parametrize("arch", ["resnet20", "wide_head"])
def test_numbers_do_not_depend_on_the_batch_size_where_the_cpu_kernels_do(arch) -> None:
    """PyTorch's CPU kernels take other algorithms for few rows: a lone image (a convolution), then up to 2 rows for
    resnet20's 64 -> 10 head and up to 15 for a 512 -> 10 one (MKL) moved logits by ~1e-5 and so ECE/NLL with the
    batch size (a lone image ran as a pair: that covered the first case only). Every CPU forward pass now has
    CPU_BLOCK rows."""
    from aprkit.eval.engine.inference import predict
    from aprkit.hidden import Site
    from aprkit.hidden.capture import capture, predict_intervened
    from aprkit.models import create_model

    torch.manual_seed(0)
    model = (create_model("resnet20") if arch == "resnet20" else _WideHead()).eval()
    n = 21
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    data = [(x[i], i % 10) for i in range(n)]
    ref = predict(model, data, batch_size=n, device="cpu").logits
    with torch.no_grad():
        plain = [model(x[:m].float() / 255)[:1] for m in (1, 2, 16, n)]
    assert not all(torch.equal(p, plain[-1]) for p in plain[:-1])  # the kernels do differ here
    for bs in (1, 2, 3, 7, 16, 20):
        assert torch.equal(predict(model, data, batch_size=bs, device="cpu").logits, ref), bs
    xf = x.float() / 255
    site = Site("layer2" if arch == "resnet20" else "relu")
    acts, _ = capture(model, xf, site, n, torch.device("cpu"))
    _, logits = predict_intervened(model, xf, n, torch.device("cpu"), site, replace=lambda rows: acts[rows])
    assert torch.equal(logits, ref)
    for bs in (1, 2, 7):
        assert torch.equal(capture(model, xf, site, bs, torch.device("cpu"))[0], acts), bs
        assert torch.equal(predict_intervened(model, xf, bs, torch.device("cpu"), site,
                                              replace=lambda rows: acts[rows])[1], logits), bs


def test_odin_and_the_test_loss_do_not_depend_on_the_batch_size() -> None:
    """ODIN's backward passes and training's test loss run their CPU forward passes in CPU_BLOCK rows too."""
    from aprkit.eval import evaluate
    from aprkit.eval.engine.datasets import TensorImageDataset
    from aprkit.distributed import DistInfo
    from aprkit.train.evaluation import evaluate_accuracy

    x = torch.randint(0, 256, (13, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    ds = TensorImageDataset(x, torch.arange(13) % 10)
    got = [evaluate(_WideHead().eval(), suite="ood", data=ds, device="cpu", batch_size=bs, progress=False,
                    report=False, options={"ood_scores": ["odin", "msp"], "ood_limit": 11, "ood": ["noise:gaussian"]})["ood"]["sets"]["gaussian"] for bs in (1, 3, 13)]
    assert got[0] == got[1] == got[2]

    class Batches:
        def __init__(self, bs: int) -> None:
            self.bs = bs

        def iterate(self):
            for s in range(0, 13, self.bs):
                yield x[s:s + self.bs], torch.arange(s, min(s + self.bs, 13)) % 10

    info = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    losses = [evaluate_accuracy(_WideHead(), Batches(bs), info)["test_loss"] for bs in (1, 5, 13)]  # type: ignore[arg-type]
    assert losses[0] == losses[1] == losses[2]


def test_a_lone_images_features_and_intervention_count_once() -> None:
    """A block's padding rows (a lone image ran as a pair before) must not add feature rows (the classifier hook saw
    both copies: Mahalanobis refused, KNN scored a phantom image) nor hand replace() a row twice (the transplant's
    activation_change counted it twice, so it moved with the batch size)."""
    from aprkit.eval.engine.inference import predict
    from aprkit.hidden import Site
    from aprkit.hidden.capture import capture, predict_intervened
    from aprkit.models import create_model

    model = create_model("resnet20").eval()
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    data = [(x[i], i % 10) for i in range(5)]
    ref = predict(model, data, batch_size=5, device="cpu", features=True).features
    for bs in (1, 2, 4):
        assert torch.equal(predict(model, data, batch_size=bs, device="cpu", features=True).features, ref), bs
    xf = x.float() / 255
    acts, _ = capture(model, xf, Site("layer2"), 5, torch.device("cpu"))
    for bs in (1, 4):
        seen: list[int] = []
        predict_intervened(model, xf, bs, torch.device("cpu"), Site("layer2"),
                           replace=lambda rows: (seen.extend(rows.tolist()), acts[rows])[1])
        assert sorted(seen) == [0, 1, 2, 3, 4], bs


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_model_of_another_float_dtype_is_refused_with_the_amp_option_named(dtype):
    """``model.half()`` failed in its first layer with PyTorch's input/weight dtype mismatch."""
    from aprkit.eval import evaluate, predict
    from aprkit.models import create_model

    model = create_model("small_cnn", num_classes=10).to(dtype)
    data = torch.utils.data.TensorDataset(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=f"{str(dtype)[6:]} and it fails on float32 input.*float32 models.*amp=True"):
        predict(model, data, progress=False)
    with pytest.raises(ValueError, match="float32 models"):
        evaluate(model, suite=["calibration"], data=data, progress=False)

    class CastsItself(torch.nn.Module):  # a bfloat16 net that casts its input: runs as it is (it was refused)
        def __init__(self) -> None:
            super().__init__()
            self.net = create_model("small_cnn", num_classes=10).to(torch.bfloat16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.to(torch.bfloat16)).float()

    assert predict(CastsItself(), data, progress=False).logits.shape == (4, 10)


def test_a_shipped_config_without_its_shared_folder_names_aprkit_shared(tmp_path, monkeypatch, capsys):
    """Run outside the checkout, a shipped config's '../shared/models/...' was missing with no word of
    $APRKIT_SHARED, which the README says the configs read (a newcomer tester's finding)."""
    from aprkit.cli import main

    monkeypatch.delenv("APRKIT_SHARED", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--config", "cifar10_resnet20", "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "../shared/models/resnet20" in err and "set APRKIT_SHARED to the folder that holds models/ and data/" in err


def test_a_model_returning_probabilities_is_warned_of():
    """A model ending in a softmax gave the right accuracy and an ECE of 75 % (1.5 % from its logits) without a word
    (tester); its log-probabilities are logits and pass."""
    from test_eval_runner import Tiny, small_data

    from aprkit.eval import evaluate

    class Probs(Tiny):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x).softmax(1)

    class LogProbs(Tiny):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x).log_softmax(1)

    kw = dict(suite="calibration", data=small_data(20), device="cpu", progress=False, report=False,
              options={"calibration_corrupted": False})
    with pytest.warns(RuntimeWarning, match="the model 'Probs' returns probabilities .* but logits are expected"):
        evaluate(Probs(), **kw)
    # each model is named: Python shows one text once per place, so a text without the name warned of the first only
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        evaluate({"first": Probs(), "second": Probs(seed=1), "fine": Tiny()}, **kw)
    named = sorted(str(w.message).split("'")[1] for w in seen if "returns probabilities" in str(w.message))
    assert named == ["first", "second"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(LogProbs(), **kw)
        evaluate(Tiny(), **kw)


def test_the_same_cells_in_another_order_are_the_same_settings(tmp_path):
    """Corruptions and severities in another order gave the same cells but two "recorded with other settings"
    warnings and pooled numbers other in the last bit (tester): the order given no longer matters."""
    from test_eval_runner import Tiny, small_data

    from aprkit.eval import evaluate

    kw = dict(suite=["corruption", "calibration"], data=small_data(16), device="cpu", progress=False, report=False,
              out_dir=tmp_path, model_id="m")
    a = evaluate(Tiny(), corruptions="gaussian_noise,contrast,fog", severities=[1, 5], **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = evaluate(Tiny(), corruptions=["fog", "contrast", "gaussian_noise"], severities="5,1", **kw)
    assert a.models == b.models and list(b.models["m"]["corruption"]["cells"]) == ["gaussian_noise", "fog", "contrast"]
    evaluate(Tiny(), corruptions="fog", severities=1, **kw)
    with warnings.catch_warnings():  # one name as a string or a list, one severity as a number or a list (reviewer)
        warnings.simplefilter("error")
        evaluate(Tiny(), corruptions=["fog"], severities=[1], **kw)


def test_one_output_is_one_class():
    from test_eval_runner import Tiny, small_data

    from aprkit.eval import evaluate

    with pytest.raises(ValueError, match="the model outputs 1 class but the data has 10"):
        evaluate(Tiny(k=1), data=small_data(8), num_classes=10, corruptions="none", device="cpu", progress=False,
                 report=False)


def test_a_distilled_timm_model_gives_the_mean_of_its_heads_inputs_as_features() -> None:
    """The features (Mahalanobis, KNN) were the input of the last nn.Linear: a distilled DeiT's distillation head, so
    the OOD suite read the distillation token only (model-zoo tester); they are its pre-logits now, the mean of its
    heads' inputs, as timm's forward_head(pre_logits=True) gives them."""
    from timm.models.deit import VisionTransformerDistilled

    from aprkit.eval.engine.inference import predict
    from aprkit.models.normalize import Normalize

    torch.manual_seed(0)
    vit = VisionTransformerDistilled(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, num_classes=10)
    model = Normalize(vit).eval()
    x = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = predict(model, torch.utils.data.TensorDataset(x, torch.zeros(5, dtype=torch.long)), features=True,
                  progress=False, labelled=False)
    with torch.no_grad():
        want, logits = model.forward_features(x.float() / 255), model(x.float() / 255)
    torch.testing.assert_close(out.features, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=1e-5)
    from aprkit.eval.engine.inference import _several_heads  # LeViT's heads are NormLinear modules (reviewer)

    levit = __import__("timm").create_model("levit_128s", num_classes=10)
    assert [type(h).__name__ for h in _several_heads(levit)] == ["NormLinear", "NormLinear"]
