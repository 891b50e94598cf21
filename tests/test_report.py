"""Reports: results.json + report.md + self-contained report.html, several models side by side."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from aprkit.eval import evaluate
from aprkit.eval.inference import TensorImageDataset
from aprkit.eval.report import ReportError, markdown_to_html, write_report
from aprkit.eval.runner import Results
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


def test_markdown_to_html_subset():
    html = markdown_to_html("# T\n\ntext with **bold** and `code`\n\n| a | b |\n|---|---|\n| 1 | <2> |\n\n- x\n- y\n")
    assert "<h1>T</h1>" in html and "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "<th>a</th>" in html and "<td>&lt;2&gt;</td>" in html and "<ul><li>x</li><li>y</li></ul>" in html
