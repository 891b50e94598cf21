"""Reports: results.json + report.md + self-contained report.html, several models side by side; both documents
rendered from the same structured blocks (no Markdown syntax in the HTML, no Python reprs in the header) with one
summary built from the suites' headline measures."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from aprkit.eval import evaluate
from aprkit.eval.report.blocks import Figure, Heading, Paragraph, ReportSection, Span, Table, code, strong
from aprkit.eval.engine.datasets import TensorImageDataset
from aprkit.eval.report import ReportDocument, ReportError, header_items, render_html, render_markdown, write_report
from aprkit.eval.engine.runner import Results
from conftest import natural_images

pytestmark = pytest.mark.usefixtures("one_thread")


class Net(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    ds = TensorImageDataset(natural_images(16, seed=5), torch.arange(16) % 10)
    kw = dict(data=ds, device="cpu", batch_size=8, progress=False, corruptions=["contrast", "brightness"], severities=[1, 3],
              options={"ood_limit": 8, "ood": ["noise:uniform", "noise:blobs"], "ood_scores": ["msp", "energy"]})
    a = evaluate(Net(0), suite=["corruption", "calibration", "ood"], model_id="standard", **kw)
    b = evaluate(Net(1), suite=["corruption", "calibration", "ood"], model_id="apr-sp", **kw)
    return a, b


def test_side_by_side_report_files(two_runs, tmp_path):
    a, b = two_runs
    paths = write_report({"standard": a, "apr-sp": b}, tmp_path / "rep")
    assert set(paths) == {"json", "markdown", "html"} and all(p.is_file() for p in paths.values())
    html = paths["html"].read_text()
    md = paths["markdown"].read_text()
    for name in ("standard", "apr-sp"):
        assert name in html and name in md
    for title in ("Corruption robustness", "Calibration", "OOD detection", "Summary"):
        assert title in html and title in md
    assert html.count("data:image/png;base64,") == 6  # bars, severity curves, reliability, ECE curve, AUROC, histograms
    assert "<table>" in html and "src='figures" not in html  # figures embedded, not linked
    figs = sorted(p.name for p in (tmp_path / "rep" / "figures").rglob("*.png"))
    assert figs == sorted(["corruption_errors.png", "severity_curves.png", "reliability.png", "ece_vs_severity.png", "ood_auroc.png", "ood_scores.png"])
    assert "](figures/corruption/corruption_errors.png)" in md
    saved = json.loads(paths["json"].read_text())
    assert list(saved["models"]) == ["standard", "apr-sp"]
    assert Results.load(paths["json"]).models == Results.merge([a, b]).models


def test_results_merge_and_errors(two_runs, tmp_path):
    a, b = two_runs
    with pytest.raises(ValueError, match="twice"):
        Results.merge([a, a])
    with pytest.raises(TypeError, match="Results"):
        write_report({"x": 1}, tmp_path)
    with pytest.raises(ValueError, match="out_dir"):
        write_report(a, None)
    with pytest.raises(ValueError, match="never written"):
        a.write_report()  # no out_dir was given to evaluate
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="results.json"):
        Results.load(tmp_path / "bad.json")


def test_broken_section_keeps_numbers_and_raises(tmp_path):
    broken = Results(models={"other": {"calibration": {"clean": {}}, "custom-suite": {"x": 1.5}}}, meta={})
    with pytest.raises(ReportError, match=r"calibration: KeyError.*results\.json"):  # the run fails, nothing is swallowed
        write_report(broken, tmp_path)
    paths = {"markdown": tmp_path / "report.md", "json": tmp_path / "results.json"}  # ... after writing the files
    md = paths["markdown"].read_text()
    assert "Rendering this section failed" in md and "custom-suite" in md
    assert json.loads(paths["json"].read_text())["models"]["other"]["calibration"] == {"clean": {}}
    assert broken.summary()["other"]["custom-suite.x"] == 1.5


def _visible(html: str) -> str:
    """The HTML without its style sheet and embedded images: what a reader sees as text or markup."""
    html = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", html)


def _assert_clean_html(html: str) -> None:
    text = _visible(html)
    assert "**" not in text and "|---" not in text and "](" not in text, "raw Markdown in the HTML"
    assert not re.search(r"(?<![\w*])\*[A-Za-z][^*<>\n]*\*(?![\w*])", text), "raw *emphasis* in the HTML"
    assert "{'" not in text and "['" not in text and "&#39;:" not in text, "a Python repr in the HTML"
    assert text.count("<h2>Summary</h2>") == 1


def test_report_html_is_rendered_with_one_summary(two_runs, tmp_path):
    a, b = two_runs
    paths = write_report({"standard": a, "apr-sp": b}, tmp_path / "rep")
    html, md = paths["html"].read_text(), paths["markdown"].read_text()
    _assert_clean_html(html)
    assert md.count("## Summary") == 1 and "<table" not in md and "|---|" in md
    assert "<dt>Models</dt><dd>standard (Net), apr-sp (Net)</dd>" in html and "<dt>Status</dt>" in html
    assert "- **Models:** standard (Net), apr-sp (Net)" in md
    for label in ("clean accuracy %", "ECE (clean) %", "OOD AUROC (msp, mean over OOD sets) %"):  # headlines
        assert f"<tr><td>{label}</td>" in html and f"| {label} |" in md


def test_header_describes_data_in_words():
    meta = {"data": {"corruption": "TensorSet", "ood": "TensorSet", "transplant": ["Tensor", "Tensor"],
                     "cue-conflict": "synthetic:2000"}, "device": ["cuda"], "world_size": [2], "amp": [True],
            "date": "2026-01-02T03:04:05+00:00", "aprkit": "0.1.0", "torch": "2.9", "python": "3.12",
            "complete": False, "pending": {"b": ["ood"]}, "models": {"a": "resnet20", "b": "resnet20"}}
    items = {i.label: i.text for i in header_items(["a", "b"], meta)}
    assert items == {"Models": "a (resnet20), b (resnet20)",
                     "Data": "TensorSet (corruption, ood); in-memory tensors (transplant); synthetic:2000 (cue-conflict)",
                     "Device": "cuda (2 processes, mixed precision)", "Date": "2026-01-02 03:04:05 UTC",
                     "Versions": "aprkit 0.1.0, torch 2.9, Python 3.12", "Status": "INCOMPLETE (not yet run: b: ood)"}
    merged = {i.label: i.text for i in header_items(["x", "y"], {"runs": [{"data": "cifar10:/d"}, {"data": "cifar10:/d"}]})}
    assert merged == {"Models": "x, y", "Data": "cifar10:/d"}
    prov = {"data": "mixed (see provenance)", "provenance": {"x": {"ood": {"data": "cifar10:/d"}, "shape-bias": {"data": "cue:/s"}}}}
    assert header_items(["x"], prov)[1].text == "cifar10:/d (ood); cue:/s (shape-bias)"  # per suite, from the provenance
    seeded = {"provenance": {"x": {"ood": {"seed": 0}, "calibration": {"seed": 3}}}}
    assert {i.label: i.text for i in header_items(["x"], seeded)}["Seed"] == "0, 3"  # the seeds the numbers used


def test_markdown_and_html_from_the_same_blocks(tmp_path):
    from aprkit.eval.report.plotting import new_figure, save_figure

    fig = new_figure(2, 1)
    fig.subplots().plot([0, 1], [1, 0])
    png = save_figure(fig, tmp_path / "figs" / "line.png")
    section = ReportSection("A <section>", [
        Heading("sub_heading"),
        Paragraph(["a*b* and ", strong("bold"), ", ", Span("lean", "em"), ", ", code("x_y"), " <b>not html</b> ~0.9"]),
        Table(["model", "a | b"], [["m_1", strong("0.5")]], caption="per *model*", notes="n = 3"),
        Figure(png, "a line"),
    ])
    doc = ReportDocument("T", [], [section])
    md, html = render_markdown(doc, tmp_path), render_html(doc)
    assert "## A \\<section\\>" in md and "### sub_heading" in md  # an intraword _ is literal
    assert "a\\*b\\* and **bold**, *lean*, `x_y` \\<b\\>not html\\</b\\> \\~0.9" in md
    assert "| model | a \\| b |" in md and "| m_1 | **0.5** |" in md and "**per \\*model\\***" in md
    assert "![a line](figs/line.png)" in md
    assert "<h2>A &lt;section&gt;</h2>" in html and "<h3>sub_heading</h3>" in html
    assert "a*b* and <strong>bold</strong>, <em>lean</em>, <code>x_y</code> &lt;b&gt;not html&lt;/b&gt; ~0.9" in html
    assert "<th class=\"num\">a | b</th>" in html and "<td class=\"num\"><strong>0.5</strong></td>" in html and "<p class=\"caption\">per *model*</p>" in html
    assert html.count("data:image/png;base64,") == 1 and "<figcaption>a line</figcaption>" in html
    with pytest.raises(ValueError, match="row 0 has 1 cells, expected 2"):
        Table(["a", "b"], [["x"]])
    with pytest.raises(TypeError, match="Heading, Paragraph, Table or Figure"):
        ReportSection("x", ["# raw markdown"])


def test_summary_comes_from_suite_headlines(two_runs, tmp_path, monkeypatch):
    from aprkit.eval.suites import SUITES, Measure, ReportSection as Section, Suite

    class Custom(Suite):
        name = "custom"

        def headline(self, result):
            return [Measure("custom.score", "custom score", result["score"], percent=True, higher_is_better=True)]

        def report(self, results, fig_dir):
            return Section("Custom", [Paragraph("custom section")])

    monkeypatch.setitem(SUITES, "custom", Custom)
    a, _ = two_runs
    res = Results(models={"m": {**a.models["standard"], "custom": {"score": 0.25, "other": 3.0}}}, meta={})
    s = res.summary()["m"]
    assert s["custom.score"] == 0.25 and "custom.other" not in s  # the declared headline, not every number
    assert s["clean_accuracy"] == a.models["standard"]["corruption"]["clean"]["accuracy"]
    assert list(s)[:4] == ["clean_accuracy", "mean_corruption_error", "mean_error", "mce"]
    html = write_report(res, tmp_path)["html"].read_text()
    assert "<td>custom score %</td><td>higher</td><td class=\"num\">25.00</td>" in html and "<h2>Custom</h2>" in html


def demo_meta(results: Results) -> dict:
    """A ``meta["demo"]`` as ``run_demo`` writes it, from the suites' results of a standard and an APR-SP model."""
    from aprkit.demo.summary import headline_numbers, overall_sentence, verdicts

    heads = {m: headline_numbers(results.models[m]) for m in results.models}
    rows = verdicts(heads["standard"], heads["apr-sp"])
    hist = [{"epoch": e, "train_acc": 0.2 + 0.1 * e, "test_acc": 0.15 + 0.08 * e} for e in range(1, 5)]
    training = {m: {"method": meth, "epochs": 4, "final_train_acc": 0.6, "final_test_acc": 0.47, "train_seconds": 12.5,
                    "history": hist} for m, meth in (("standard", "standard"), ("apr-sp", "apr_sp"))}
    return {"data": "synthetic", "data_description": "the built-in synthetic shape x texture dataset (64 training / 16 test "
            "images, 32x32)", "synthetic": False, "quick": True, "device": "cpu", "seed": 0,
            "settings": {"epochs": 4, "batch_size": 32, "lr": 0.1, "severities": [1, 3]}, "training": training,
            "headline": heads, "verdicts": rows, "overall": overall_sentence(rows),
            "timings": {"train standard": {"wall_s": 12.5, "cpu_s": 20.1}, "total": {"wall_s": 40.0, "cpu_s": 70.2}},
            "load_average_start": [1.5, 1.2, 1.0], "cpu_count": 2, "torch_threads": 1}


def test_demo_report_extends_write_report_with_one_summary(two_runs, tmp_path):
    from aprkit.demo.report import write_demo_report

    a, b = two_runs
    res = Results.merge({"standard": a, "apr-sp": b})
    res.meta["demo"] = demo_meta(res)
    paths = write_demo_report(res, tmp_path)
    html, md = paths["html"].read_text(), paths["markdown"].read_text()
    _assert_clean_html(html)  # one Summary: the verdict table replaces the headline summary
    assert md.count("## Summary") == 1 and "## Demo setup" in md and "## Corruption robustness" in md
    assert "<th class=\"num\">APR-SP - standard (±2 SE)</th>" in html and "<strong>helped</strong> / <strong>hurt</strong>" in html
    assert "<dt>Data</dt><dd>the built-in synthetic shape x texture dataset" in html
    assert html.count("data:image/png;base64,") == 7  # the training curves and the six suite figures
    assert json.loads(paths["json"].read_text())["meta"]["demo"]["overall"] == res.meta["demo"]["overall"]


def test_templates_ship_and_no_global_matplotlib_state():
    """The templates are package data and jinja2 a dependency (a fresh install renders reports); no module
    switches matplotlib's backend or draws through pyplot (reports never touch the caller's figures)."""
    from pathlib import Path

    import aprkit

    root = Path(aprkit.__file__).parent
    assert {p.name for p in (root / "eval" / "report" / "templates").glob("*.j2")} >= {"report.md.j2", "report.html.j2"}
    pyproject = (root.parent / "pyproject.toml").read_text()
    assert '"jinja2>=' in pyproject and '"**/*.j2"' in pyproject
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if re.search(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot", p.read_text())]
    assert not offenders, offenders


def test_model_labels_reach_the_plots_literally(tmp_path):
    """A label with '$' was rendered as math (a malformed one failed every section with a plot) and a label
    starting with '_' was dropped from every legend."""
    from matplotlib.figure import Figure as MplFigure

    from aprkit.eval.report.plotting import grouped_bars, plot_text

    assert plot_text("$\\frac$ x") == "\\$\\frac\\$ x" and plot_text("_r20") == " _r20" and plot_text("ok") == "ok"
    fig = MplFigure()
    ax = fig.subplots()
    grouped_bars(ax, {"_r20": [1.0, 2.0], "cost $\\frac$ x": [2.0, 1.0]}, 2)
    legend = ax.legend()
    fig.savefig(tmp_path / "bars.png")
    assert [t.get_text() for t in legend.get_texts()] == [" _r20", "cost \\$\\frac\\$ x"]
    ds = TensorImageDataset(natural_images(8, seed=5), torch.arange(8) % 10)
    res = evaluate({"_r20": Net(0), "cost $\\frac$ x": Net(1)}, suite=["calibration"], data=ds, device="cpu",
                   batch_size=8, progress=False, corruptions=["contrast"], severities=[1], out_dir=tmp_path / "out")
    assert res.paths["html"].exists() and (tmp_path / "out" / "figures" / "calibration" / "ece_vs_severity.png").exists()


def test_a_folder_of_suites_run_on_different_limits_says_so(tmp_path):
    """Reusing --out with another --limit gave one summary whose clean accuracy came from another image count than
    the corruption section's, with results.json claiming the last run's limit for all."""
    ds = TensorImageDataset(natural_images(16, seed=5), torch.arange(16) % 10)
    kw = dict(data=ds, device="cpu", batch_size=8, progress=False, corruptions=["contrast"], severities=[1],
              out_dir=tmp_path)
    evaluate(Net(0), suite="calibration", model_id="m", limit=16, **kw)
    res = evaluate(Net(0), suite="corruption", model_id="m", limit=8, **kw)
    text = res.paths["markdown"].read_text()
    assert "**Images:** all 16 images (calibration); first 8 of 16 images (corruption)" in text  # counts measured
    assert "The suites ran on different numbers of images" in text
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["options"] == "mixed (see provenance)"
    alone = evaluate(Net(0), suite="corruption", model_id="m", limit=8, **{**kw, "out_dir": tmp_path / "one"})
    one = alone.paths["markdown"].read_text()
    assert "**Images:** first 8 of 16 images" in one and "different numbers of images" not in one
    every = evaluate(Net(0), suite="calibration", model_id="m", **{**kw, "out_dir": tmp_path / "all"})
    assert "**Images:** all 16 images" in every.paths["markdown"].read_text()  # the header said nothing of the count


def test_a_limit_that_took_a_class_sorted_sets_first_classes_is_a_caveat_in_the_report(tmp_path):
    """The warning went to stderr only: results.json and the report of "the first 8 images" of a set ordered by class
    (an image folder) did not say that they covered 1 of its 2 classes."""
    ds = TensorImageDataset(natural_images(16, seed=5), torch.arange(16) // 8)
    kw = dict(data=ds, device="cpu", batch_size=8, progress=False, corruptions=["contrast"], severities=[1])
    with pytest.warns(RuntimeWarning, match="cover 1 of its 2 classes"):
        res = evaluate(Net(0), suite="calibration", model_id="m", limit=8, out_dir=tmp_path, **kw)
    meta = json.loads((tmp_path / "results.json").read_text())["meta"]
    assert len(meta["caveats"]) == 1 and "cover 1 of its 2 classes" in meta["caveats"][0]
    assert "**Caveats:** limit=8 takes the first 8 images of a dataset ordered by class" in res.paths["markdown"].read_text()
    fair = evaluate(Net(0), suite="calibration", model_id="m", out_dir=tmp_path / "all", **kw)  # every image
    assert "caveats" not in json.loads((tmp_path / "all" / "results.json").read_text())["meta"]
    assert "Caveats" not in fair.paths["markdown"].read_text()


def test_the_images_line_leaves_out_suites_that_read_no_limit(tmp_path):
    """The cue-conflict suite scores every stimulus: the header said 'first 8 images' for it too."""
    import warnings

    ds = TensorImageDataset(natural_images(16, seed=5), torch.arange(16) % 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = evaluate(Net(0), suite=["calibration", "cue-conflict"], data={"default": ds, "cue-conflict": "synthetic"},
                       limit=8, device="cpu", batch_size=8, progress=False, corruptions=["contrast"], severities=[1],
                       options={"cue_conflict_n": 20}, out_dir=tmp_path)
    text = res.paths["markdown"].read_text()
    assert "**Images:** first 8 of 16 images (calibration); all images (cue-conflict)" in text
    assert "different numbers of images" not in text  # cue-conflict shares no measure with calibration (tester)


def test_a_measure_no_model_could_compute_shows_a_dash_in_the_summary():
    """A None headline (no disagreeing pairs for the phase bias) is a row of "-", not left out of the summary."""
    from aprkit.eval.report import markdown_block
    from aprkit.eval.report.results import summary_section
    from aprkit.eval.suites.base import Measure

    sec = summary_section({"a": [Measure("x.done", "done", 0.5), Measure("x.none", "not computed", None)],
                           "b": [Measure("x.done", "done", 0.25), Measure("x.none", "not computed", None)]})
    md = "\n".join(markdown_block(b) for b in sec.blocks)
    assert "| not computed | neither | - | - |" in md.replace("  ", " ")
    assert summary_section({"a": [Measure("x.none", "not computed", None)]}) is None  # nothing at all: no table


def test_category_names_reach_the_plots_literally(tmp_path):
    """Custom cue-conflict categories with '$' (matplotlib's mathtext) are drawn as text; the report failed."""
    from aprkit.eval.suites.cue_conflict import CueConflictSuite

    cats = ["cost $5 and $10", r"$\frac$", "ok"]
    results = {"m": {"per_category": {c: 0.5 for c in cats}, "shape_bias": 0.5}}
    png = CueConflictSuite._plot(results, cats, tmp_path / "cc.png")
    assert png.is_file()


def test_long_labels_are_shortened_and_many_models_keep_distinct_colours():
    """Figures shorten labels beyond PLOT_LABEL_CHARS in the middle (a 48-character timm name squeezed the axes;
    tables keep it whole) and give an eleventh model a colour of its own (it took the first one's)."""
    from aprkit.eval.report.plotting import PLOT_LABEL_CHARS, plot_text, series_color

    name = "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k"
    short = plot_text(name)
    assert len(short) == PLOT_LABEL_CHARS and short.startswith("timm:vit_base") and "_ft_in1k #" in short
    others = {plot_text(name.replace("augreg2", v)) for v in ("augreg2", "augreg", "orig")}
    assert len(others) == 3  # names differing in the middle stay apart
    assert plot_text("resnet20") == "resnet20"
    colours = [str(series_color(i)) for i in range(20)]
    assert len(set(colours)) == 20


def test_markdown_text_is_one_line_whatever_its_line_endings():
    """A model id with a carriage return ended the summary table's row in CommonMark (only \\n was joined)."""
    from aprkit.eval.report.render import _md_code, md_escape

    for end in ("\n", "\r", "\r\n", "\u2028", "\x0b"):
        assert md_escape(f"a{end}b") == "a b" and _md_code(f"a{end}b") == "`a b`"


def test_a_suite_without_a_headline_says_its_direction_is_unknown(tmp_path):
    """The numbers of a suite aprkit does not know (a plugin not installed here) were marked "better: neither",
    which the report uses for descriptive measures where no direction is better (report reviewer)."""
    from aprkit.eval import Results

    res = Results(models={"m": {"someplugin": {"score": 0.5}}})
    md = write_report(res, tmp_path)["markdown"].read_text()
    assert "| someplugin: score | unknown | 0.5000 |" in md.replace("  ", " ")
