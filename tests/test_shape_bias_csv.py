"""Shape bias from raw decision CSVs in the texture-vs-shape / model-vs-human format (written by the test)."""

from __future__ import annotations

import math

import pytest
import torch

from aprkit.eval.analyses.shape_bias import read_decisions_csv, shape_bias, shape_bias_from_csv

HEADER = "subj,session,trial,rt,object_response,category,condition,imagename\n"


def _write(path, subj: str, rows: list[tuple[str, str, str]]) -> None:
    """rows: (object_response, shape, texture)."""
    lines = [f"{subj},1,{i + 1},0.9,{resp},{shape},0,{i + 1:04d}_s5n_s01_0_{shape}_00_{shape}{i + 1}-{tex}2.png\n"
             for i, (resp, shape, tex) in enumerate(rows)]
    path.write_text(HEADER + "".join(lines))


def test_abstentions_count_as_neither(tmp_path):
    rows = [("cat", "cat", "dog")] * 6 + [("dog", "cat", "dog")] * 2 + [("na", "cat", "dog")] * 2 \
        + [("bird", "bird", "bird")]  # shape == texture: excluded
    _write(tmp_path / "subject-01.csv", "subject-01", rows)
    res = shape_bias_from_csv(tmp_path / "subject-01.csv")["subject-01"]
    assert res.shape_bias == pytest.approx(6 / 8) and res.n_abstentions == 2
    assert res.n_stimuli == 10 and res.n_excluded == 1
    assert res.shape_match == pytest.approx(0.6) and res.texture_match == pytest.approx(0.2)


def test_per_subject_from_folder_and_model_file(tmp_path):
    _write(tmp_path / "a.csv", "subject-01", [("cat", "cat", "dog")] * 3 + [("dog", "cat", "dog")])
    _write(tmp_path / "b.csv", "subject-02", [("na", "car", "oven")] * 2 + [("oven", "car", "oven")])
    _write(tmp_path / "m.csv", "resnet50", [("dog", "cat", "dog")] * 3 + [("cat", "cat", "dog")])
    res = shape_bias_from_csv(tmp_path)
    assert sorted(res) == ["resnet50", "subject-01", "subject-02"]
    assert res["subject-01"].shape_bias == pytest.approx(0.75) and res["resnet50"].shape_bias == pytest.approx(0.25)
    assert res["subject-02"].shape_bias == 0.0 and res["subject-02"].n_abstentions == 2


def test_all_abstentions_give_nan_and_names_still_checked(tmp_path):
    res = shape_bias(["na", "na"], ["cat", "car"], ["dog", "oven"])
    assert math.isnan(res.shape_bias) and res.n_abstentions == 2
    with pytest.raises(ValueError, match="unknown categories 'nope'"):
        shape_bias(["nope"], ["cat"], ["dog"])
    with pytest.raises(ValueError, match="unknown categories 'na'"):  # only decisions may abstain
        shape_bias(["cat"], ["na"], ["dog"])


def test_bad_files_are_clear(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("subj,category\nx,cat\n")
    with pytest.raises(ValueError, match="lacks the columns object_response, imagename"):
        read_decisions_csv(p)
    p.write_text(HEADER + "s,1,1,0.5,cat,cat,0,picture.png\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2: imagename 'picture\.png'"):
        read_decisions_csv(p)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no decision CSVs"):
        shape_bias_from_csv(tmp_path / "empty")


def test_reference_lines_feed_the_plot(tmp_path):
    from aprkit.eval.analyses.shape_bias import reference_lines
    from aprkit.eval.suites.shape_bias import _references, plot_shape_bias

    _write(tmp_path / "a.csv", "subject-01", [("cat", "cat", "dog")] * 3 + [("dog", "cat", "dog")])
    _write(tmp_path / "b.csv", "subject-02", [("cat", "cat", "dog")])
    _write(tmp_path / "m.csv", "resnet50", [("dog", "cat", "dog")] * 3 + [("cat", "cat", "dog")])
    lines = reference_lines(tmp_path)
    # the humans' trials pooled (model-vs-human): 4 shape of 5 decisions, not the mean 0.875 of 0.75 and 1
    assert lines == {"humans (2 subjects)": pytest.approx(0.8), "resnet50": pytest.approx(0.25)}
    results = {"m": {"shape_bias": 0.5, "per_category": {"cat": 0.5}, "references": lines}}
    assert _references(results) == lines
    assert plot_shape_bias(results, tmp_path / "p.png").is_file()


def test_every_reference_gets_a_line_in_the_plot(tmp_path, monkeypatch):
    """Five line styles were zipped with the references: a sixth and seventh reference model vanished from the plot
    and its legend while the table listed them."""
    import matplotlib.axes

    from aprkit.eval.suites.shape_bias import plot_shape_bias

    drawn = []
    real = matplotlib.axes.Axes.axvline
    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", lambda self, x, **kw: drawn.append(kw) or real(self, x, **kw))
    lines = {f"model{k}": 0.1 * k for k in range(7)}
    plot_shape_bias({"m": {"shape_bias": 0.5, "per_category": {}, "references": lines}}, tmp_path / "p.png")
    labels = [kw.get("label", "") for kw in drawn]
    assert all(any(lab.startswith(f"model{k},") for lab in labels) for k in range(7))
    assert len({(kw["ls"] if isinstance(kw["ls"], str) else repr(kw["ls"]), kw["color"]) for kw in drawn[:7]}) == 7


def test_bad_decision_files_are_named_with_their_line_and_before_inference(tmp_path):
    """A misspelt category said 'decisions has unknown categories' with no file, line or subject; a references path
    that does not exist gave a bare '[Errno 2]' after the whole inference."""
    from aprkit.eval.engine.cache import MemoryCache
    from aprkit.eval.suites import EvalContext, load_suites

    _write(tmp_path / "m.csv", "resnet50", [("cat", "cat", "dog"), ("arplane", "cat", "dog")])
    with pytest.raises(ValueError, match=r"m\.csv:3: subject 'resnet50': object_response 'arplane' is not one"):
        shape_bias_from_csv(tmp_path / "m.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv does not exist; expected raw decision CSVs"):
        shape_bias_from_csv(tmp_path / "nope.csv")

    class Untouchable(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("inference ran before the option was checked")

    ctx = EvalContext(model=Untouchable(), progress=False, cache=MemoryCache(),
                      options={"references": str(tmp_path / "nope")})
    from aprkit.data.cue_conflict import write_synthetic_cue_conflict

    write_synthetic_cue_conflict(tmp_path / "cue", per_shape=1, size=8, seed=0)
    with pytest.raises(ValueError, match=r"shape-bias option references=.*nope.*download with aprkit.data.sources"
                                         r"\.ensure_source\('cue-conflict-decisions', download=True\)"):
        load_suites()["shape-bias"]().run(ctx, f"cue-conflict:{tmp_path / 'cue'}")
