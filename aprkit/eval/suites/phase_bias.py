"""The ``phase-bias`` suite: phase-vs-amplitude bias and a patch-shuffle texture control, any dataset.

The CIFAR-scale analogue of shape bias (not the Geirhos cue-conflict metric): pairs of test images of
different classes are recombined (phase of one, amplitude of the other, over the whole spectrum and
inside a low-frequency band only) and the suite counts whose class the model predicts; patch-shuffled
images (global shape destroyed, local texture kept) measure how much the class survives on texture.

``data`` is anything ``aprkit.eval.engine.datasets.as_dataset`` accepts (``"cifar10:ROOT"``, a dataset,
``(images, labels)``). Options: see :class:`PhaseBiasOptions`; the runner's ``limit`` restricts pairs to the
first ``limit`` images.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict, cast

import torch
from pydantic import Field
from torch.utils.data import Subset

from ..._checks import dataset_len
from ...fourier import Dims
from ..analyses.phase_bias import OneClass, measure_phase_bias, patch_grid
from ..engine.cache import cached
from ..engine.datasets import as_dataset
from ..engine.inference import to_model_input
from ..report.blocks import Figure, Paragraph, Table, num, pct, strong
from ..report.plotting import new_figure, plot_text, save_figure
from .base import EvalContext, LimitOption, Measure, ReportSection, Suite, register_suite

__all__ = ["PhaseBiasSuite", "PhaseBiasOptions", "PhaseBiasResult", "plot_phase_bias"]

#: 2: the swapped images come from aprkit.fourier.rfftn/irfftn (the CPU RGB route; equal to float rounding);
#: 3: a grey phase donor's channel frequencies 1 and 2 are exact zeros (phase 0), not rounding noise whose phase the
#: stimulus took (about 1 % of CIFAR-10's test images are grey); 4: those bins have no phase and stay 0 (they took the
#: amplitude donor's amplitude at phase 0, a spike at pixel (0, 0); ``aprkit.fourier.mixing.ZeroBins``); 5: a pair's
#: stimulus does not depend on its batch (a grey donor in the batch switched every stimulus to another rounding);
#: 6: the CPU's channel DFT runs on one thread (MKL rounded one image alone under several threads otherwise)
_VERSION = 6
_VARIANTS = (("full", "full swap"), ("low_frequency", "low-freq. swap"))


class PhaseBiasOptions(LimitOption):
    """Options of the phase-bias suite (the keyword arguments of
    :func:`~aprkit.eval.analyses.phase_bias.measure_phase_bias`)."""

    n_pairs: int = Field(default=2000, ge=1)
    """pairs of test images of different classes to recombine"""
    beta: float = Field(default=0.1, ge=0, le=1)
    """half-width of the low-frequency band as a fraction of min(H, W) (``fourier.low_frequency_swap``)"""
    patch_size: int | tuple[int, int] = 8
    """side of the patch-shuffle control's patches (or (height, width))"""
    n_shuffle: int | None = Field(default=None, ge=1)
    """images of the patch-shuffle control (default: ``n_pairs``)"""
    dims: Dims = "chw"
    """Fourier transform over channels and space (``chw``) or per channel (``hw``)"""


class PhaseBiasResult(TypedDict):
    """What the phase-bias suite returns (:func:`~aprkit.eval.analyses.phase_bias.measure_phase_bias`, fractions
    in [0, 1])."""

    phase_bias: float | None  # phase / (phase + amplitude) decisions, full swap
    phase_bias_low_frequency: float | None  # the same, amplitude swapped only inside the low-frequency band
    patch_shuffle_accuracy: float
    clean_accuracy: float  # of the donor images
    full: dict[str, Any]  # phase, amplitude, neither, phase_bias, n_pairs, both_correct
    low_frequency: dict[str, Any]  # as ``full``
    patch_shuffle: dict[str, Any]  # accuracy, clean_accuracy, n_images, patch_size
    settings: dict[str, Any]  # n_pairs, beta, dims, seed


def _check_outputs(ctx: EvalContext, dataset: Any, image: torch.Tensor) -> None:
    """The phase bias counts predictions equal to a donor's label: the model must output the data's classes (an
    ImageNet model on the cue-conflict stimuli scored argmax over 1000 classes against 16 labels: 0 %, silently)."""
    classes = getattr(dataset, "classes", None) or getattr(dataset, "categories", None)  # the cue-conflict shapes
    if not classes:
        return
    with torch.no_grad():  # ``image``: the dataset's first
        n = int(ctx.model(to_model_input(image[None], ctx.device, ctx.channels_last)).shape[-1])
    if n != len(classes):
        raise ValueError(f"the phase-bias suite compares predictions with the data's {len(classes)} classes, but the "
                         f"model outputs {n}; give it data labelled with the model's classes (for an ImageNet model "
                         "on the cue-conflict stimuli, the shape-bias suite maps its outputs to the 16 categories)")


@register_suite("phase-bias")
class PhaseBiasSuite(Suite[PhaseBiasOptions]):
    """Follow-phase / follow-amplitude / neither rates, phase bias, and patch-shuffle accuracy."""

    Options = PhaseBiasOptions
    version = str(_VERSION)
    setup_keys = ("n_pairs", "beta", "patch_size", "n_shuffle", "dims")

    def run(self, ctx: EvalContext, data: Any) -> PhaseBiasResult:
        options = self.options(ctx)
        limit = options.limit
        opts = options.model_dump(exclude={"limit"})  # the keyword arguments of measure_phase_bias

        dataset = as_dataset(data)
        image = torch.as_tensor(dataset[0][0])
        patch_grid(tuple(image.shape), options.patch_size)  # a patch size that does not divide: now, not after the
        _check_outputs(ctx, dataset, image)  # phase-bias passes

        def compute() -> dict:
            pool = dataset if limit is None else Subset(dataset, range(min(int(limit), dataset_len(dataset))))
            try:
                return measure_phase_bias(  # pairs are drawn among the first ``limit`` images
                    ctx.model, pool, seed=ctx.seed, device=ctx.device, batch_size=ctx.batch_size,
                    num_workers=ctx.num_workers, amp=ctx.amp, channels_last=ctx.channels_last, progress=ctx.progress,
                    **opts,
                )
            except OneClass as err:  # the report says why nothing was measured; the run's other suites go on
                return {"phase_bias": None, "phase_bias_low_frequency": None, "patch_shuffle_accuracy": None,
                        "note": f"not measured: {err} (the images read hold one class)"}

        return cast(PhaseBiasResult, cached(ctx, "phase-bias", data, compute, v=_VERSION, **opts))

    def headline(self, result: Mapping[str, Any]) -> list[Measure]:
        return [
            Measure("phase-bias.phase_bias", "phase bias (full swap)", result.get("phase_bias"), digits=3),
            Measure("phase-bias.phase_bias_low_frequency", "phase bias (low-frequency swap)",
                    result.get("phase_bias_low_frequency"), digits=3),
            Measure("phase-bias.patch_shuffle_accuracy", "patch-shuffle accuracy", result.get("patch_shuffle_accuracy"),
                    percent=True),
        ]

    def report(self, results: Mapping[str, dict], fig_dir: Path) -> ReportSection:
        head = ["model", "donors' clean acc %"]  # the pairs' images, not the whole --limit set
        for _, label in _VARIANTS:
            head += [f"{label}: phase", "amplitude", "neither", "phase bias"]
        head += ["patch-shuffle acc %"]
        notes = {m: r["note"] for m, r in results.items() if r.get("note")}
        results = {m: r for m, r in results.items() if m not in notes}
        if not results:
            return ReportSection("Phase bias (phase-vs-amplitude conflict)",
                                 [Paragraph(f"{m}: {note}") for m, note in notes.items()])
        rows = []
        for m, r in results.items():
            row: list = [m, pct(r["clean_accuracy"], 1)]
            for v, _ in _VARIANTS:
                x = r[v]
                row += [num(x["phase"]), num(x["amplitude"]), num(x["neither"]), strong(num(x["phase_bias"]))]
            rows.append(row + [pct(r["patch_shuffle"]["accuracy"], 1)])
        def setup(r: Mapping[str, Any]) -> tuple:
            n = r["full"]["n_pairs"]
            return (n, r["settings"].get("n_distinct_pairs", n), r["settings"]["beta"],
                    r["patch_shuffle"]["n_images"], str(r["patch_shuffle"]["patch_size"]))

        setups = {m: setup(r) for m, r in results.items()}
        extra: list[Paragraph | Table] = []
        if len(set(setups.values())) == 1:  # one description for every model
            n_pairs, distinct, beta, n_shuffle, patch = next(iter(setups.values()))
            repeats = f" ({distinct} distinct: pairs are drawn independently)" if distinct < n_pairs else ""
            on, beta_text = f"on {n_pairs} pairs{repeats} of", f", beta={beta}"
            shuffle = f"{n_shuffle} images cut into {patch}-pixel patches"
        else:  # each model's own settings (the first model's were described for all)
            on, beta_text, shuffle = "on pairs of", " (beta per model below)", "images cut into patches"
            extra = [Paragraph("The models were measured with different settings:"),
                     Table(["model", "pairs", "distinct pairs", "beta", "patch-shuffle images", "patch px"],
                           [[m, *map(str, v)] for m, v in setups.items()])]
        text = (f"Phase bias = phase decisions / (phase + amplitude decisions) {on} test "
                "images of different classes, each recombined from the Fourier phase of one image and the "
                "amplitude of the other (low-freq.: amplitude swapped only inside the centred square of half-width "
                f"beta*min(H,W){beta_text}). This is the CIFAR-scale analogue of shape bias, "
                f"not the Geirhos cue-conflict metric. Patch shuffle: {shuffle} and permuted (shape destroyed, local "
                "texture kept); high accuracy there means the class is carried by local texture.")
        fig_dir = Path(fig_dir)
        fig_dir.mkdir(parents=True, exist_ok=True)
        extra += [Paragraph(f"{m}: {note}") for m, note in notes.items()]
        return ReportSection("Phase bias (phase-vs-amplitude conflict)", [
            Table(head, rows), Paragraph(text), *extra,
            Figure(plot_phase_bias(results, fig_dir / "phase_bias.png"),
                   "Which image the prediction follows, per model and swap"),
        ])


def plot_phase_bias(results: Mapping[str, dict], path: Path) -> Path:
    """Stacked horizontal bars per model and variant: follow phase / follow amplitude / neither."""
    labels, parts = [], []
    for m, r in results.items():
        for v, vlabel in _VARIANTS:
            labels.append(f"{plot_text(m)}\n{vlabel}")
            parts.append((r[v]["phase"], r[v]["amplitude"], r[v]["neither"]))
    fig = new_figure(6.4, 0.55 * len(labels) + 1.2)
    ax = fig.subplots()
    ys = list(range(len(labels)))[::-1]
    left = [0.0] * len(labels)
    for k, (name, color) in enumerate((("follows phase", "C0"), ("follows amplitude", "C1"), ("neither", "0.75"))):
        widths = [p[k] for p in parts]
        ax.barh(ys, widths, left=left, color=color, edgecolor="k", lw=0.4, label=name)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of conflict stimuli")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    return save_figure(fig, path, dpi=110)
