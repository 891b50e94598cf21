"""The ``shape-bias`` suite: Geirhos et al. cue-conflict shape bias of ImageNet models.

``data`` is a cue-conflict folder (``<shape>/<shape>N-<texture>M.png``; a ``"cue-conflict:"`` prefix is
accepted), a ``CueConflict`` dataset, or (run by hand) None with the option ``stimuli`` set. The model must output
1000 ImageNet classes or the 16 categories. The report has a table and the per-category plot in the
style of the paper (fraction of shape decisions per shape category, one marker per model, the
published human and ResNet-50 averages as guides).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict, cast

from ...data.cue_conflict import FULL_CONFLICTING, CueConflict
from ..analyses.shape_bias import (
    CATEGORIES,
    REFERENCE_SHAPE_BIAS,
    check_categories,
    decisions_in,
    predict_decisions,
    reference_lines,
    shape_bias,
)
from ..engine.cache import cached
from ..report.blocks import Figure, Paragraph, Table, num, pct
from ..report.plotting import new_figure, plot_text, save_figure, series_color
from .base import EvalContext, Measure, ReportSection, Suite, SuiteOptions, register_suite

__all__ = ["ShapeBiasSuite", "ShapeBiasOptions", "ShapeBiasResult", "resolve_stimuli", "plot_shape_bias"]

_VERSION = 3  # 2: decisions re-indexed into a dataset's own category list; 3: stimuli recorded as the resolved path
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")


def resolve_stimuli(data: Any, options: Mapping[str, Any] | None = None) -> Any:
    """A ``CueConflict`` dataset from ``data`` (folder, ``"cue-conflict:PATH"``, dataset) or option ``stimuli``."""
    if data is None and options:
        data = options.get("stimuli")
    if isinstance(data, CueConflict):
        return data
    if isinstance(data, (str, os.PathLike)):
        text = os.fspath(data)
        kind, sep, rest = text.partition(":")
        if sep and kind.strip().lower() in ("cue-conflict", "cue_conflict", "folder"):
            text = rest
        elif sep and kind.isidentifier() and not Path(text).exists():  # cifar10:ROOT, synthetic:N, ...
            raise ValueError(f"the shape-bias suite needs the cue-conflict stimuli (cue-conflict:DIR, a folder "
                             f"<shape>/<shape>N-<texture>M.png), got the {kind} spec {text!r}; give the suite its own "
                             "data: --data shape-bias=cue-conflict:DIR (data={'shape-bias': ...})")
        return CueConflict(text)
    raise TypeError(
        "the shape-bias suite needs cue-conflict stimuli: a folder <shape>/<shape>N-<texture>M.png (optionally "
        f"'cue-conflict:PATH'), a CueConflict dataset or the option stimuli; got {type(data).__name__}"
    )


class ShapeBiasOptions(SuiteOptions):
    """Options of the shape-bias suite."""

    stimuli: Any = None
    """the cue-conflict stimuli when the suite is run by hand with ``data=None`` (``ShapeBiasSuite().run(ctx,
    None)``); ``evaluate`` and ``aprkit eval`` take them as the suite's data (``--data shape-bias=cue-conflict:DIR``)"""
    references: str | Path | list[str | Path] | None = None
    """raw decision CSVs (a folder or files) whose shape biases are drawn as the plot's guide lines"""


class ShapeBiasResult(TypedDict, total=False):
    """What the shape-bias suite returns (fractions in [0, 1]; None where no decision counted)."""

    shape_bias: float | None  # shape decisions / (shape + texture decisions)
    shape_match: float  # fraction of stimuli classified as their shape
    texture_match: float  # fraction classified as their texture
    per_category: dict[str, float | None]  # shape category -> shape bias
    counts: dict[str, Any]  # n_stimuli and the decision counts
    stimuli: str  # the stimuli folder
    decisions: dict[str, str]  # stimulus file -> decided category
    references: dict[str, float]  # guide lines from option ``references`` (only when given)
    caveats: list[str]  # a subset of the published stimuli (only then)


def _warn_unresized(model: Any, ds: Any) -> None:
    """Warn when the stimuli are not 224 x 224 and an ImageNet model (1,000 outputs) has no resize of its own (a
    ``--checkpoint`` model): they are fed as they are, where model-vs-human resizes such images to 256 and crops 224
    (another decision on some). A model of the 16 categories (trained on such stimuli) takes them as they are."""
    import warnings

    from ...models.normalize import Preprocess, find_classifier, unwrap_model

    inner = unwrap_model(model)
    if not len(ds) or isinstance(inner, Preprocess):
        return
    try:
        if find_classifier(inner).out_features != 1000:
            return
    except ValueError:  # no Linear head: its width is not known here
        return
    size = tuple(int(v) for v in ds[0][0].shape[-2:])
    if size != (224, 224):
        warnings.warn(f"the cue-conflict stimuli are {size[0]}x{size[1]} px, not 224: the model sees them as they "
                      f"are; bring them to 224 ({CueConflict.size_fix}) or give the model its preprocessing (its "
                      "weights' name without --checkpoint)", RuntimeWarning, stacklevel=4)


@register_suite("shape-bias")
class ShapeBiasSuite(Suite[ShapeBiasOptions]):
    """Shape bias, shape/texture match and per-category shape bias on the cue-conflict stimuli."""

    Options = ShapeBiasOptions
    version = str(_VERSION)
    reads = ("amp",)  # every stimulus, no draws

    def run(self, ctx: EvalContext, data: Any) -> ShapeBiasResult:
        opts = self.options(ctx)
        ds = resolve_stimuli(data, {"stimuli": opts.stimuli})

        check_categories(ds.categories)  # before inference
        _warn_unresized(ctx.model, ds)
        references = None
        if opts.references:  # raw decision CSVs (a folder or files): the plot's guide lines, read before inference
            try:
                references = reference_lines(opts.references)
            except (OSError, ValueError) as err:
                hint = ("; the raw human/model decision CSVs download with aprkit.data.sources.ensure_source("
                        "'cue-conflict-decisions', download=True) into the data root's cue-conflict-decisions folder "
                        "($APRKIT_DATA, default ~/.cache/aprkit)"
                        if isinstance(err, FileNotFoundError) else "")
                raise ValueError(f"shape-bias option references={opts.references!r}: {err}{hint}") from None

        def compute() -> dict:
            decisions = predict_decisions(
                ctx.model, ds, device=ctx.device, batch_size=ctx.batch_size, num_workers=ctx.num_workers,
                amp=ctx.amp, channels_last=ctx.channels_last, progress=ctx.progress,
            )
            full = shape_bias(decisions_in(decisions, ds.categories), ds.shape_labels, ds.texture_labels,
                              ds.categories).to_dict()
            # headline fractions at the top level; counts and details below (runner summaries list top-level numbers)
            result: dict[str, Any] = {k: full.pop(k) for k in ("shape_bias", "shape_match", "texture_match")}
            result["per_category"] = full.pop("per_category")
            result["counts"] = full
            result["stimuli"] = str(Path(ds.root).resolve())  # as the cache key: the same for every path to it
            result["decisions"] = {name: CATEGORIES[int(d)] for name, d in zip(ds.names, decisions, strict=True)}
            return result

        result = cast(ShapeBiasResult, cached(ctx, "shape-bias", ds, compute, reads=self.reads, v=_VERSION))
        if references is not None:
            result = {**result, "references": references}
        n = int(result["counts"]["n_stimuli"])  # the conflicting ones counted (conflicting_only=True: all of them)
        if n < FULL_CONFLICTING:  # a partial download or a hand-made subset: said where the number is shown
            result = {**result, "caveats": [f"the shape bias is measured on {n:,} of the {FULL_CONFLICTING:,} "
                                            "cue-conflict stimuli whose shape and texture differ: a subset, which "
                                            "the published values (on all of them) need not match"]}
        return result

    def headline(self, result: Mapping[str, Any]) -> list[Measure]:
        return [
            Measure("shape-bias.shape_bias", "shape bias (cue-conflict)", result.get("shape_bias"), digits=3),
            Measure("shape-bias.shape_match", "cue-conflict stimuli: shape match", result.get("shape_match"),
                    percent=True),
            Measure("shape-bias.texture_match", "cue-conflict stimuli: texture match", result.get("texture_match"),
                    percent=True),
        ]

    def report(self, results: Mapping[str, dict], fig_dir: Path) -> ReportSection:
        rows: list[list] = [[m, num(r["shape_bias"]), pct(r["shape_match"], 1), pct(r["texture_match"], 1),
                             r["counts"]["n_stimuli"]] for m, r in results.items()]
        published = not any(r.get("references") for r in results.values())
        source = "published" if published else "from the reference decisions"
        rows += [[f"{name} ({source})", f"{v:.2f}", "-", "-", "-"] for name, v in _references(results).items()]
        text = ("Shape bias = shape decisions / (shape + texture decisions) over the cue-conflict stimuli whose shape "
                "and texture classes differ (Geirhos et al., ICLR 2019); 1000-class outputs are mapped to the 16 "
                "categories by the mean softmax probability over each category's ImageNet indices; shape and "
                "texture match are fractions of those conflicting stimuli."
                + (" Published references: humans ~0.96, ResNet-50 ~0.22." if published else ""))
        cats = list(dict.fromkeys(c for r in results.values() for c in (r.get("per_category") or {})))
        per_category = Table(["shape category"] + list(results), [
            [c] + [num((r.get("per_category") or {}).get(c)) for r in results.values()] for c in cats],
            caption="Shape bias per shape category")
        fig_dir = Path(fig_dir)
        fig_dir.mkdir(parents=True, exist_ok=True)
        return ReportSection("Shape bias (cue-conflict)", [
            Table(["model", "shape bias", "shape match %", "texture match %", "stimuli"], rows), Paragraph(text),
            per_category,
            Figure(plot_shape_bias(results, fig_dir / "shape_bias.png"),
                   "Fraction of shape decisions per shape category (dashed: "
                   f"{'published references' if published else 'references from the decision files'})"),
        ])


def _references(results: Mapping[str, dict]) -> dict[str, float]:
    """Guide lines: from the raw decision files (option ``references``) when given, else the published values."""
    for r in results.values():
        if r.get("references"):
            return dict(r["references"])
    return dict(REFERENCE_SHAPE_BIAS)


def plot_shape_bias(results: Mapping[str, dict], path: Path) -> Path:
    """Per-category plot in the style of Geirhos et al.: categories on the y axis, fraction of shape
    decisions on the x axis (texture fraction on the top axis), one marker per model and category,
    each model's overall shape bias as a solid line and the published references as dashed guides."""
    cats = list(CATEGORIES)
    fig = new_figure(8.4, 6.0)
    ax = fig.subplots()
    y = {c: len(cats) - 1 - i for i, c in enumerate(cats)}
    styles = ("--", ":", "-.", (0, (1, 3)), (0, (5, 5)))
    source = "published" if not any(r.get("references") for r in results.values()) else "reference decisions"
    for k, (name, value) in enumerate(_references(results).items()):  # every reference: styles repeat in other greys
        ax.axvline(value, color=str(0.35 + 0.15 * (k // len(styles) % 3)), ls=styles[k % len(styles)], lw=1.4,
                   label=f"{plot_text(name)}, {source} ({value:.2f})")
    for i, (model, r) in enumerate(results.items()):
        color, marker = series_color(i), _MARKERS[i % len(_MARKERS)]
        per = r.get("per_category", {})
        xs = [per[c] for c in cats if per.get(c) is not None and not math.isnan(per[c])]
        ys = [y[c] for c in cats if per.get(c) is not None and not math.isnan(per[c])]
        overall = r.get("shape_bias")
        label = f"{plot_text(model)} ({overall:.2f})" if overall is not None else plot_text(model)
        ax.scatter(xs, ys, color=color, marker=marker, s=46, alpha=0.85, edgecolor="k", lw=0.4, label=label, zorder=3)
        if overall is not None:
            ax.axvline(overall, color=color, lw=1.6, alpha=0.8)
    ax.set_yticks(range(len(cats)))
    ax.set_yticklabels(list(reversed(cats)))
    ax.set_ylim(-0.6, len(cats) - 0.4)
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of 'shape' decisions")
    ax.set_ylabel("shape category")
    def flip(v: Any) -> Any:
        return 1 - v

    top = ax.secondary_xaxis("top", functions=(flip, flip))
    top.set_xlabel("fraction of 'texture' decisions")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False, title="mean shape bias",
              title_fontsize=8)
    return save_figure(fig, path, dpi=110)
