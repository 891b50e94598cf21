"""One output folder, several runs: results.json adds up, says when it is incomplete, and report errors fail the run
(issue 12, item 12)."""

from __future__ import annotations

import json

import pytest

from aprkit.eval import evaluate
from aprkit.eval.report import ReportError
from test_eval_runner import Tiny, broken_tiny, small_data

pytestmark = pytest.mark.usefixtures("one_thread")

KW = dict(corruptions=["contrast"], severities=[2], device="cpu", batch_size=8, progress=False)
CLEAN_ONLY = {"calibration_corrupted": False}


def _saved(out) -> dict:
    return json.loads((out / "results.json").read_text())


def test_runs_with_different_suites_add_up_in_results_and_report(tmp_path):
    ds = small_data(16)
    first = evaluate(Tiny(), suite="corruption", data=ds, model_id="net", out_dir=tmp_path, **KW)
    second = evaluate(Tiny(), suite="calibration", data=ds, model_id="net", out_dir=tmp_path, options=CLEAN_ONLY, **KW)
    assert list(second.models["net"]) == ["calibration"]  # the returned Results: this call's suites
    saved = _saved(tmp_path)
    assert list(saved["models"]["net"]) == ["corruption", "calibration"]
    assert saved["models"]["net"]["corruption"] == first["corruption"]
    assert saved["meta"]["complete"] is True and saved["meta"]["pending"] == {}
    assert saved["meta"]["suites"] == ["corruption", "calibration"]
    md = (tmp_path / "report.md").read_text()
    assert "## Corruption robustness" in md and "## Calibration" in md
    evaluate(Tiny(seed=1), suite="calibration", data=ds, model_id="other", out_dir=tmp_path, options=CLEAN_ONLY, **KW)
    saved = _saved(tmp_path)
    assert list(saved["models"]) == ["net", "other"] and list(saved["models"]["other"]) == ["calibration"]
    assert "other" in (tmp_path / "report.md").read_text()



def test_a_suite_evaluated_again_with_other_settings_is_warned_of(tmp_path):
    """A second run of the same model and suite with other corruptions (or limit) replaced the first one's numbers in
    results.json without a word (a -C grid built in pieces ended with the last piece)."""
    ds = small_data(16)
    opts = {"corruptions": ["fog"], "severities": [1]}
    evaluate(Tiny(), suite="corruption", data=ds, model_id="net", out_dir=tmp_path, options=opts, **KW)
    evaluate(Tiny(), suite="corruption", data=ds, model_id="net", out_dir=tmp_path, options=opts, **KW)  # a rerun: quiet
    with pytest.warns(RuntimeWarning, match=r"corruption of 'net' was recorded with other settings \(options "
                                            r"corruptions=\['fog'\].*this run's \(options corruptions=\['contrast'\]"):
        evaluate(Tiny(), suite="corruption", data=ds, model_id="net", out_dir=tmp_path,
                 options={**opts, "corruptions": ["contrast"]}, **KW)
    with pytest.warns(RuntimeWarning, match=r"other settings \(seed 0\); this run's \(seed 1\)"):  # names what differs
        evaluate(Tiny(), suite="corruption", data=ds, model_id="net", out_dir=tmp_path, seed=1,
                 options={**opts, "corruptions": ["contrast"]}, **KW)

def test_another_suites_option_is_no_other_setting(tmp_path):
    """Every suite's entry recorded the whole run's options, so a rerun that changed only the phase-bias suite's
    n_pairs warned that the corruption results had been recorded with other settings (model-zoo tester); an entry
    holds the options its suite reads, and results.json's run summary their union."""
    import warnings

    ds = small_data(16)
    opts = {"corruptions": ["fog"], "severities": [1], "n_pairs": 8}
    suites = ["corruption", "phase-bias"]
    evaluate(Tiny(), suite=suites, data=ds, model_id="net", out_dir=tmp_path, options=opts, **KW)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        evaluate(Tiny(), suite=suites, data=ds, model_id="net", out_dir=tmp_path, options={**opts, "n_pairs": 12}, **KW)
    other = [str(w.message) for w in seen if "recorded with other settings" in str(w.message)]
    assert len(other) == 1 and other[0].split(":")[1].startswith(" phase-bias of 'net'"), other
    data = json.loads((tmp_path / "results.json").read_text())
    prov = data["meta"]["provenance"]["net"]
    assert prov["corruption"]["options"] == {"corruptions": ["fog"], "severities": [1]}
    assert prov["phase-bias"]["options"] == {"n_pairs": 12}
    assert data["meta"]["options"] == {"corruptions": ["fog"], "severities": [1], "n_pairs": 12}


def test_a_run_setting_a_suite_does_not_read_is_no_other_setting_of_it(tmp_path):
    """Shape bias reads neither the run's seed nor a limit: a rerun with another seed warned that its results had
    been recorded with other settings and computed them again under a new key (eval reviewer); its key and its
    index entry's comparison leave them out now (Suite.reads); the seed still tells other suites' entries apart."""
    import warnings

    from aprkit.eval.engine.cache import result_key
    from aprkit.eval.engine.outdir import SuiteIndex
    from aprkit.eval.suites import load_suites
    from aprkit.eval.suites.base import EvalContext

    registry = load_suites()
    assert registry["shape-bias"].reads == ("amp",) and "seed" in registry["cue-conflict"].reads
    ctx = EvalContext(model=Tiny(), device="cpu", seed=3, options={"limit": 7})
    key = result_key(ctx, "unit", "synthetic:4", reads=("amp",))
    assert "seed" not in key and "limit" not in key and "amp=false" in key
    assert "seed=3" in result_key(ctx, "unit", "synthetic:4") and "limit=7" in result_key(ctx, "unit", "synthetic:4")
    with pytest.raises(ValueError, match="reads names \\['sed'\\]"):
        result_key(ctx, "unit", "synthetic:4", reads=("sed",))
    index = SuiteIndex(tmp_path)
    entry = {"model": "net", "suite": "shape-bias", "value": {}, "options": {}, "seed": 0, "amp": False, "data": "d"}
    index.add(entry, (), ("amp",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index.add({**entry, "seed": 1}, (), ("amp",))
    with pytest.warns(RuntimeWarning, match=r"other settings \(seed 1\); this run's \(seed 2\)"):
        index.add({**entry, "suite": "shape-bias", "seed": 2}, (), ("seed", "amp"))


def test_interrupted_run_says_it_is_incomplete(tmp_path):
    ds = small_data(16)
    ood = {"ood_limit": 8, "ood_scores": ["msp"]}
    evaluate(Tiny(), suite="calibration", data=ds, model_id="net", out_dir=tmp_path, report=False, options=CLEAN_ONLY, **KW)
    with pytest.raises(KeyboardInterrupt):  # dies in the first suite of the second run
        evaluate(broken_tiny(fail_after=0), suite=["corruption", "ood"], data=ds, model_id="net", out_dir=tmp_path, options=ood, **KW)
    saved = _saved(tmp_path)
    assert saved["meta"]["complete"] is False and saved["meta"]["pending"] == {"net": ["corruption", "ood"]}
    assert list(saved["models"]["net"]) == ["calibration"]  # what was finished before is kept
    evaluate(Tiny(), suite=["corruption", "ood"], data=ds, model_id="net", out_dir=tmp_path, report=False, options=ood, **KW)
    saved = _saved(tmp_path)
    assert saved["meta"]["complete"] is True and list(saved["models"]["net"]) == ["calibration", "corruption", "ood"]


def _broken_chart(*args, **kwargs):
    raise OSError("No space left on device")


def test_failed_figure_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr("aprkit.eval.suites.corruption_report.bar_chart", _broken_chart)
    with pytest.raises(ReportError, match="corruption: OSError: No space left on device"):
        evaluate(Tiny(), suite="corruption", data=small_data(8), out_dir=tmp_path, **KW)
    saved = _saved(tmp_path)  # the numbers were written first
    assert saved["meta"]["complete"] is True and saved["models"]["Tiny"]["corruption"]["clean"]["n"] == 8
    assert "Rendering this section failed" in (tmp_path / "report.md").read_text()


def test_cli_exits_non_zero_when_a_figure_fails(models_dir, cifar10_dir, tmp_path, monkeypatch, capsys):
    from aprkit.cli import main

    monkeypatch.setattr("aprkit.eval.suites.corruption_report.bar_chart", _broken_chart)
    argv = ["eval", "--model", str(models_dir / "resnet20-12fca82f.th"), "--data", f"cifar10:{cifar10_dir}", "--suite", "corruption",
            "--corruptions", "fog", "--severities", "1", "--limit", "8", "--device", "cpu", "--no-progress", "--out", str(tmp_path)]
    try:
        rc = main(argv)
    except ReportError:  # a CLI without a catch-all handler: the exception exits non-zero as well
        rc = 1
    assert rc != 0
    assert _saved(tmp_path)["models"]["resnet20-12fca82f"]["corruption"]["clean"]["n"] == 8


def test_a_folder_keeps_its_model_order_and_a_retitled_report_keeps_every_model(tmp_path):
    """Evaluating the first model of a folder again keeps it first (it moved last, swapping every column), and
    write_report() of that call's Results rewrites the folder's report with all its models (it dropped the
    others from results.json and the report)."""
    import json

    import torch

    from aprkit.eval import evaluate
    from aprkit.models import create_model

    torch.manual_seed(0)
    kw = dict(suite="corruption", data="synthetic:24", device="cpu", progress=False, out_dir=tmp_path,
              corruptions=["none"])
    a, b = create_model("small_cnn", num_classes=10), create_model("small_cnn", num_classes=10)
    evaluate({"a": a}, **kw)
    evaluate({"b": b}, **kw)
    again = evaluate({"a": a}, **kw)
    assert list(json.loads((tmp_path / "results.json").read_text())["models"]) == ["a", "b"]
    again.write_report(title="retitled")
    assert list(json.loads((tmp_path / "results.json").read_text())["models"]) == ["a", "b"]
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# retitled") and "**Models:** a (SmallCNN), b (SmallCNN)" in report
    other = evaluate({"a": a}, **{**kw, "suite": "calibration"})  # a suite the folder's a did not have
    other.write_report(title="again")
    held = json.loads((tmp_path / "results.json").read_text())["models"]
    assert list(held) == ["a", "b"] and set(held["a"]) == {"corruption", "calibration"}


def test_a_stale_results_object_does_not_rewrite_its_folder(tmp_path):
    """write_report() of a Results kept from an earlier call, after the folder measured its model again (another
    limit): it rewrote results.json with the old numbers and dropped the folder's other models, without a word
    (report tester). It refuses now, saying how to rewrite the folder's report; out_dir still writes elsewhere."""
    import json

    import pytest
    import torch

    from aprkit.eval import Results, evaluate
    from aprkit.models import create_model

    torch.manual_seed(0)
    kw = dict(suite="corruption", data="synthetic:24", device="cpu", progress=False, out_dir=tmp_path,
              corruptions=["none"])
    a, b = create_model("small_cnn", num_classes=10), create_model("small_cnn", num_classes=10)
    old = evaluate({"a": a}, limit=8, **kw)
    evaluate({"b": b}, **kw)
    evaluate({"a": a}, limit=16, **kw)
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(ValueError, match=r"other numbers for 'a'.*Results.load\("):
        old.write_report()
    assert (tmp_path / "results.json").read_text() == before
    Results.load(tmp_path / "results.json").write_report(tmp_path)
    held = json.loads((tmp_path / "results.json").read_text())["models"]
    assert list(held) == ["a", "b"] and held["a"]["corruption"]["clean"]["n"] == 16
    old.write_report(tmp_path / "elsewhere")
    assert json.loads((tmp_path / "elsewhere" / "results.json").read_text())["models"]["a"]["corruption"]["clean"][
        "n"] == 8


def test_a_run_without_a_report_removes_the_folders_stale_report(tmp_path):
    """report=False into a folder with a report: the old report.md/.html stayed beside a results.json with other
    numbers (report tester). They are removed, with a warning saying how to write one."""
    import pytest
    import torch

    from aprkit.eval import evaluate
    from aprkit.models import create_model

    torch.manual_seed(0)
    kw = dict(suite="corruption", data="synthetic:24", device="cpu", progress=False, out_dir=tmp_path,
              corruptions=["none"], model_id="a")
    model = create_model("small_cnn", num_classes=10)
    evaluate(model, limit=8, **kw)
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.html").is_file()
    with pytest.warns(RuntimeWarning, match="removed report.md, report.html .* no longer match results.json"):
        evaluate(model, limit=16, report=False, **kw)
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "report.html").exists()
    assert (tmp_path / "results.json").is_file()


def test_two_training_runs_keep_apart_under_their_default_labels(tmp_path):
    """aprkit train writes model.pt in every run folder: the default label is FOLDER/model, so two runs evaluated
    into one folder do not replace each other (a stem that names a model stays the label)."""
    import torch

    from aprkit.eval.engine.models import display_name
    from aprkit.models import create_model, save_checkpoint

    for run in ("std", "apr_sp"):
        (tmp_path / run).mkdir()
        save_checkpoint(tmp_path / run / "model.pt", create_model("small_cnn"))
    assert display_name(str(tmp_path / "std" / "last.pt")) == "std/last" and display_name("resnet20-12fdca.th") == "resnet20-12fdca"
    out = tmp_path / "out"
    for run in ("std", "apr_sp"):
        torch.manual_seed(0)
        evaluate(str(tmp_path / run / "model.pt"), suite="calibration", data=small_data(8), out_dir=out,
                 options=CLEAN_ONLY, **KW)
    assert list(_saved(out)["models"]) == ["std/model", "apr_sp/model"]
    from aprkit.models import load_model  # a module loaded from a file keeps that label (not its class name),
    evaluate(load_model(tmp_path / "std" / "model.pt"), suite="calibration", data=small_data(8), out_dir=out,
             options=CLEAN_ONLY, **KW)  # so the Python API and aprkit eval name the same weights alike
    assert list(_saved(out)["models"]) == ["std/model", "apr_sp/model"]
    assert display_name(create_model("small_cnn")) == "SmallCNN"


def test_a_folder_holding_other_models_measured_otherwise_is_warned_of(tmp_path):
    """Evaluating into a folder whose other models were measured on other data, with another seed or on other
    images merged them into one report without a word; models measured alike are not warned of."""
    import warnings

    import torch

    torch.manual_seed(0)
    evaluate({"a": Tiny()}, suite="calibration", data=small_data(8), out_dir=tmp_path, options=CLEAN_ONLY, **KW)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*holds results of these weights")  # Tiny's weights are fixed
        evaluate({"b": Tiny()}, suite="calibration", data=small_data(8), out_dir=tmp_path, options=CLEAN_ONLY, **KW)
    with pytest.warns(RuntimeWarning, match=r"holds calibration results of a, b measured on other data, with another "
                                            r"seed or on another number of images"):
        evaluate({"c": Tiny()}, suite="calibration", data=small_data(8), out_dir=tmp_path, seed=3,
                 options=CLEAN_ONLY, **KW)
    out = tmp_path / "cue"  # a suite that reads every stimulus whatever the limit: another limit is no other setup
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for label, limit in (("a", 8), ("b", None)):
            evaluate({label: Tiny()}, suite="cue-conflict", data="synthetic", out_dir=out, limit=limit,
                     options={"cue_conflict_n": 20}, device="cpu", batch_size=8, progress=False)
    assert not [w for w in seen if "holds cue-conflict results" in str(w.message)]


def test_the_same_weights_under_a_second_label_are_warned_of(tmp_path):
    """A folder filled under the class name (an older aprkit's label of a loaded module) and evaluated again under
    the file's label showed the same weights twice without a word."""
    import torch

    torch.manual_seed(0)
    net = Tiny()
    evaluate({"Tiny": net}, suite="calibration", data=small_data(8), out_dir=tmp_path, options=CLEAN_ONLY, **KW)
    with pytest.warns(RuntimeWarning, match=r"holds results of these weights under the label 'Tiny' too"):
        evaluate({"run/model": net}, suite="calibration", data=small_data(8), out_dir=tmp_path, options=CLEAN_ONLY,
                 **KW)


def test_folder_with_a_results_json_no_evaluation_wrote_is_refused(tmp_path):
    mine = tmp_path / "results.json"
    mine.write_text('{"my": "numbers"}')
    with pytest.raises(FileExistsError, match="not written by an aprkit evaluation"):
        evaluate(Tiny(), suite="calibration", data=small_data(8), model_id="net", out_dir=tmp_path, options=CLEAN_ONLY, **KW)
    assert mine.read_text() == '{"my": "numbers"}' and not (tmp_path / "index.json").exists()


def test_an_output_folder_inside_the_data_folder_is_refused(tmp_path) -> None:
    """``aprkit eval --out DATA/zz_eval`` read the first run's report figures as a class of the data in the second
    (clean n 180 -> 182, accuracy moved, no warning; writer tester); refused now, as ``aprkit corrupt`` refuses it."""
    from PIL import Image

    from aprkit.eval import evaluate

    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (60 * i, 20, 30)).save(tmp_path / "data" / c / f"{i}.png")
    kw = dict(random_init=True, num_classes=2, device="cpu", progress=False)
    for out, cache in ((tmp_path / "data" / "zz_eval", None), (tmp_path / "out", tmp_path / "data" / "cache")):
        with pytest.raises(ValueError, match=r"lies inside the input folder .*data.*would read this run.s files"):
            evaluate("resnet20", "calibration", f"folder:{tmp_path / 'data'}", out_dir=out, cache_dir=cache, **kw)
        assert not out.exists() and (cache is None or not cache.exists())
    from aprkit.data import get_dataset

    with pytest.raises(ValueError, match="lies inside the input folder"):  # the folder given as its Dataset
        evaluate("resnet20", "calibration", get_dataset(f"folder:{tmp_path / 'data'}"), out_dir=tmp_path / "data" / "o",
                 **kw)
    with pytest.raises(ValueError, match="lies inside the input folder"):  # an OOD set's folder too
        evaluate("resnet20", "ood", "synthetic:8", ood=[f"folder:{tmp_path / 'data'}"], out_dir=tmp_path / "data" / "o",
                 **{**kw, "num_classes": 10})


def test_a_results_object_whose_results_the_folder_dropped_does_not_rewrite_it(tmp_path):
    """The label re-measured with other weights on another suite: the folder dropped the old entry, and the old
    Results' write_report() put it back, dropping every other model (report reviewer); an explicit out_dir naming
    the folder skipped the check. Both refuse now; the folder's own file still rewrites its report."""
    import json

    import pytest
    import torch

    from aprkit.eval import Results, evaluate
    from aprkit.models import create_model

    torch.manual_seed(0)
    kw = dict(data="synthetic:24", device="cpu", progress=False, out_dir=tmp_path, corruptions=["none"])
    a, b, c = (create_model("small_cnn", num_classes=10) for _ in range(3))
    old = evaluate({"m": a}, suite="corruption", **kw)
    evaluate({"other": b}, suite="corruption", **kw)
    with pytest.warns(RuntimeWarning):
        evaluate({"m": c}, suite="calibration", **kw)  # 'm' names other weights now: its old entry is dropped
    before = (tmp_path / "results.json").read_text()
    for folder in (None, tmp_path):
        with pytest.raises(ValueError, match=r"does not hold these results of 'm'.*Results.load\("):
            old.write_report(folder)
    assert (tmp_path / "results.json").read_text() == before
    Results.load(tmp_path / "results.json").write_report(tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["models"].keys() == {"other", "m"}
