"""The ``cue-conflict`` suite: shape bias on generated cue-conflict stimuli of the synthetic dataset.

:mod:`aprkit.data.synthetic` defines every class by a silhouette *and* a class-typical texture, so it
can render true cue-conflict stimuli: the shape of class ``i`` filled with the texture of class
``j != i`` (``make_cue_conflict``). The model outputs the synthetic classes directly (no 16-category
mapping as in the ImageNet ``shape-bias`` suite); shape bias = shape decisions / (shape + texture
decisions), computed by :func:`aprkit.eval.analyses.shape_bias`. It is the synthetic-data analogue of
the Geirhos et al. benchmark, not that benchmark.

``data``: ``"synthetic"`` / ``"synthetic:N"`` (stimuli generated from option ``cue_conflict_seed``,
default ``10007 + seed``; ``N`` or option ``cue_conflict_n`` stimuli, default 2000), a
:class:`CueConflictStimuli`, or an ``(images, shape_labels, texture_labels)`` triple.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict, cast

import torch
from pydantic import Field
from torch.utils.data import Dataset

from ..engine.cache import cached
from ..report.blocks import Figure, Paragraph, Table, code, num, pct, strong
from ..report.plotting import new_figure, plot_text, save_figure, series_color
from .base import EvalContext, Measure, ReportSection, Suite, SuiteOptions, register_suite

__all__ = ["CueConflictStimuli", "CueConflictSuite", "CueConflictOptions", "CueConflictResult", "synthetic_stimuli",
           "resolve_cue_conflict"]

_VERSION = 2  # 2: neither is counted (1 - shape_match - texture_match could be -6e-17)
_DEFAULT_N = 2000


class CueConflictStimuli(Dataset):
    """Stimuli ``images`` uint8 ``(N, C, H, W)`` with ``shape_labels``/``texture_labels`` ``(N,)``.

    Yields ``(image, shape label)``; ``categories`` names the label indices.
    """

    def __init__(self, images: torch.Tensor, shape_labels: torch.Tensor, texture_labels: torch.Tensor,
                 categories: Sequence[str], cache_id: str | None = None) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"images must be a uint8 tensor (N, C, H, W), got {got}")
        s, t = torch.as_tensor(shape_labels).long().flatten(), torch.as_tensor(texture_labels).long().flatten()
        if not len(s) == len(t) == len(images):
            raise ValueError(f"need one shape and one texture label per image: {len(images)} images, {len(s)} shape "
                             f"labels, {len(t)} texture labels")
        k = len(categories)
        if len(s) and (int(torch.cat([s, t]).min()) < 0 or int(torch.cat([s, t]).max()) >= k):
            raise ValueError(f"labels must lie in [0, {k - 1}] (one per category in {list(categories)})")
        # on the host, as every dataset's batches (tensors on an accelerator are copied once)
        images, s, t = images.detach().cpu(), s.cpu(), t.cpu()
        self.images, self.shape_labels, self.texture_labels = images, s, t
        self.categories = tuple(categories)
        if cache_id is None:
            h = hashlib.sha1(  # every image
                images.contiguous().numpy().tobytes() + s.numpy().tobytes() + t.numpy().tobytes())
            h.update("|".join(self.categories).encode())
            cache_id = f"cue-conflict-{len(images)}-{h.hexdigest()[:16]}"
        self.cache_id = cache_id

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.shape_labels[i])


def synthetic_stimuli(
    n: int = _DEFAULT_N, *, seed: int = 10007, size: int = 32, num_classes: int = 10
) -> CueConflictStimuli:
    """``n`` synthetic cue-conflict stimuli (``aprkit.data.synthetic.make_cue_conflict``) as a dataset."""
    from aprkit.data.synthetic import GENERATOR_VERSION, SHAPES, make_cue_conflict

    images, shapes, textures = make_cue_conflict(int(n), seed=int(seed), size=size, num_classes=num_classes)
    # the generator's version is part of the id: another version draws other stimuli
    return CueConflictStimuli(images, shapes, textures, SHAPES[:num_classes],
                              cache_id=f"synthetic-cue-conflict@v{GENERATOR_VERSION}:n={n},seed={seed},size={size},"
                                       f"k={num_classes}")


def resolve_cue_conflict(data: Any, options: Mapping[str, Any] | None = None, seed: int = 0) -> CueConflictStimuli:
    """Stimuli from ``data`` (see the module docstring)."""
    opts = dict(options or {})
    if isinstance(data, CueConflictStimuli):
        return data
    if isinstance(data, str):
        kind, _, arg = data.partition(":")
        if kind.strip().lower() not in ("synthetic", "synthetic-cue-conflict"):
            raise ValueError(f"the cue-conflict suite generates its stimuli from the synthetic dataset; data must be "
                             f"'synthetic' or 'synthetic:N', got {data!r} (for ImageNet models use the 'shape-bias' "
                             "suite, for other datasets the 'phase-bias' suite)")
        n = int(opts.get("cue_conflict_n") or (arg if arg.strip() else _DEFAULT_N))
        given_seed = opts.get("cue_conflict_seed")
        return synthetic_stimuli(n, seed=int(10007 + seed if given_seed is None else given_seed))
    if isinstance(data, (tuple, list)) and len(data) == 3:
        from aprkit.data.synthetic import SHAPES

        images, s, t = data
        k = int(max(int(torch.as_tensor(s).max()), int(torch.as_tensor(t).max()))) + 1
        return CueConflictStimuli(images, s, t, opts.get("categories") or SHAPES[: max(k, 2)])
    raise TypeError("the cue-conflict suite needs 'synthetic[:N]', a CueConflictStimuli dataset or an "
                    f"(images, shape_labels, texture_labels) triple; got {type(data).__name__}")


class CueConflictOptions(SuiteOptions):
    """Options of the cue-conflict suite."""

    cue_conflict_seed: int | None = None
    """seed of the generated stimuli (default: 10007 + the run's seed)"""
    cue_conflict_n: int | None = Field(default=None, ge=1)
    """number of generated stimuli (default: N of ``"synthetic:N"``, else 2000)"""
    categories: list[str] | None = None
    """class names of an ``(images, shape_labels, texture_labels)`` triple (default: the synthetic shapes)"""


class CueConflictResult(TypedDict):
    """What the cue-conflict suite returns (fractions in [0, 1]; None where no decision counted)."""

    shape_bias: float | None  # shape decisions / (shape + texture decisions)
    shape_match: float
    texture_match: float
    neither: float  # the share of conflicting stimuli decided as neither shape nor texture
    per_category: dict[str, float | None]  # shape class -> shape bias
    counts: dict[str, Any]  # n_stimuli and the decision counts
    categories: list[str]
    stimuli: str  # the stimuli's cache id


@register_suite("cue-conflict")
class CueConflictSuite(Suite[CueConflictOptions]):
    """Shape bias, shape/texture match and per-class shape bias on generated cue-conflict stimuli."""

    Options = CueConflictOptions
    version = str(_VERSION)
    reads = ("seed", "amp")  # every stimulus; generated ones are made from the run's seed (unless cue_conflict_seed)

    def run(self, ctx: EvalContext, data: Any) -> CueConflictResult:
        from ..analyses.shape_bias import shape_bias
        from ..engine.inference import predict
        from ..engine.logit_checks import OutputWidthError

        ds = resolve_cue_conflict(data, self.options(ctx).model_dump(exclude_none=True), ctx.seed)

        def compute() -> dict:
            try:
                out = predict(ctx.model, ds, device=ctx.device, batch_size=ctx.batch_size,
                              num_workers=ctx.num_workers, amp=ctx.amp, channels_last=ctx.channels_last,
                              progress=ctx.progress, desc="cue-conflict", num_classes=len(ds.categories))
            except OutputWidthError as err:  # a triple's classes are the labels it holds: its hint named folders
                wider = re.search(r"outputs (\d+) class", str(err))
                if not (isinstance(data, (tuple, list)) and not self.options(ctx).categories and wider
                        and int(wider.group(1)) > len(ds.categories)):
                    raise
                raise OutputWidthError(f"{str(err).split(';')[0]}: an (images, shape, texture) triple has the classes "
                                       f"its labels reach (0..{len(ds.categories) - 1}); give the suite's categories "
                                       "option the model's class names in its order (--set categories=[...])") from None
            decisions = out.logits.argmax(1)
            full = shape_bias(decisions, ds.shape_labels, ds.texture_labels, ds.categories).to_dict()
            result: dict[str, Any] = {k: full.pop(k) for k in ("shape_bias", "shape_match", "texture_match")}
            n = full["n_stimuli"]  # counted (1 - shape - texture gave -6e-17 where no decision was neither)
            result["neither"] = (n - full["n_shape_decisions"] - full["n_texture_decisions"]) / n if n else 0.0
            result["per_category"] = full.pop("per_category")
            result["counts"] = full
            result["categories"] = list(ds.categories)
            result["stimuli"] = ds.cache_id
            return result

        return cast(CueConflictResult,
                    cached(ctx, "cue-conflict", ds.cache_id, compute, reads=self.reads, v=_VERSION))

    def headline(self, result: Mapping[str, Any]) -> list[Measure]:
        return [
            Measure("cue-conflict.shape_bias", "shape bias (synthetic cue-conflict)", result.get("shape_bias"),
                    digits=3),
            Measure("cue-conflict.shape_match", "synthetic cue-conflict: shape match", result.get("shape_match"),
                    percent=True),
            Measure("cue-conflict.texture_match", "synthetic cue-conflict: texture match",
                    result.get("texture_match"), percent=True),
            Measure("cue-conflict.neither", "synthetic cue-conflict: neither shape nor texture",
                    result.get("neither"), percent=True),
        ]

    def report(self, results: Mapping[str, dict], fig_dir: Path) -> ReportSection:
        rows = [[m, strong(num(r["shape_bias"])), pct(r["shape_match"], 1), pct(r["texture_match"], 1),
                 pct(r["neither"], 1), r["counts"]["n_stimuli"]] for m, r in results.items()]
        cats = next(iter(results.values()))["categories"]
        Path(fig_dir).mkdir(parents=True, exist_ok=True)
        return ReportSection("Shape bias (synthetic cue-conflict)", [
            Table(["model", "shape bias", "shape match %", "texture match %", "neither %", "stimuli"], rows),
            Table(["shape class"] + list(results),
                  [[c] + [num(r["per_category"].get(c)) for r in results.values()] for c in cats],
                  caption="Shape bias per shape class"),
            Paragraph(["Stimuli: the silhouette of one synthetic class filled with the texture of another "
                       "(generated by ",
                       code("aprkit.data.synthetic.make_cue_conflict"), "). Shape bias = shape decisions / (shape + "
                       "texture decisions); the analogue of Geirhos et al.'s cue-conflict shape bias on this dataset, "
                       "not that benchmark."]),
            Figure(self._plot(results, cats, Path(fig_dir) / "cue_conflict.png"),
                   "Shape bias per shape class (vertical lines: each model's overall shape bias)"),
        ])

    @staticmethod
    def _plot(results: Mapping[str, dict], cats: Sequence[str], path: Path) -> Path:
        fig = new_figure(5.8, 0.32 * len(cats) + 1.6)
        ax = fig.subplots()
        ys = list(range(len(cats)))[::-1]
        for i, (m, r) in enumerate(results.items()):
            pts = [(r["per_category"].get(c), y) for c, y in zip(cats, ys, strict=True)
                   if r["per_category"].get(c) is not None]
            overall = num(r["shape_bias"], 2)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=series_color(i), marker="os^D"[i % 4],
                       edgecolor="k", lw=0.4, s=40, label=f"{plot_text(m)} ({overall})", zorder=3)
            if r["shape_bias"] is not None:
                ax.axvline(r["shape_bias"], color=series_color(i), lw=1.4, alpha=0.8)
        ax.set_yticks(ys)
        ax.set_yticklabels([plot_text(c) for c in cats], fontsize=8)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("fraction of shape decisions (of shape + texture decisions)")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        return save_figure(fig, path, dpi=110)
