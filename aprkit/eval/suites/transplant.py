"""The ``transplant`` suite: the internal phase/sign transplant layer sweep (tables and plots from
:mod:`aprkit.eval.analyses.transplant_tables`).

Options: see :class:`TransplantOptions` (flat keys with a ``transplant_`` prefix: ``n_pairs`` and ``dims`` are
the phase-bias suite's).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

import torch
from pydantic import Field

from ...fourier import Dims
from ...hidden.codes import Code
from ..analyses.transplant_tables import last_row, plot_sweep, summary_table, sweep_table
from ..engine.cache import cached
from ..report.blocks import Figure, Heading, Paragraph
from ..report.plotting import file_stem
from .base import EvalContext, LimitOption, Measure, ReportSection, Suite, register_suite

__all__ = ["TransplantSuite", "TransplantOptions", "TransplantResult"]

#: 2: real grids' Fourier codes come from aprkit.fourier.fftn/ifftn (the CPU RGB route for 3-channel "chw" grids)
#: 3: a sweep row's depth is its block's position among all blocks (with every > 1 it was the position among the
#: blocks swept)
#: 4: rows carry the whole-swap control (``whole_swap_follow``, the ``partial`` flag)
#: 5: ``neither`` is counted (it was 1 - donor - magnitude: -3e-8), and a grey 3-channel grid's channel frequencies
#: 1 and 2 are exact zeros (aprkit.fourier's channel DFT)
#: 6: transplant_skip_front is part of the key (a net it breaks gives other numbers) and --limit caps
#: transplant_max_images; 7: the pairs and the controls' images are drawn from their own streams (the controls no
#: longer move with n_pairs) and a larger n_pairs extends the pairs of a smaller one; 8: a donor bin that is zero to the
#: FFT's rounding has no phase (phase 0), as an exact zero (a constant channel on a 7/14/28 grid had noise phases);
#: 9: a phase transplant does not depend on its batch (a dead channel in one sample switched every sample to another
#: rounding); 10: the sign code alone takes maps below 2x2 and vectors (a sign-only sweep left its 1x1 stages out),
#: and "<block>:relu6" counts nn.ReLU6's F.hardtanh(x, 0, 6); 11: a 1x1 stage keeps its sign rows in a phase-and-sign
#: sweep, token rows carry the ``prefix`` flag, and CPU forward passes run in blocks of 16 rows (aprkit._batch);
#: 12: named layers' depth is their order in the forward pass (was their place in the list), the config names them
_VERSION = 12
_PREFIX = "transplant_"


class TransplantOptions(LimitOption):
    """Options of the transplant suite: keyword arguments of :func:`~aprkit.eval.analyses.transplant.layer_sweep`."""

    transplant_layers: str | list[str] = "all"
    """``"all"`` (every block, see :func:`aprkit.hidden.list_blocks`) or module names"""
    transplant_codes: Code | list[Code] = ["phase", "sign"]
    """the carriers to transplant: Fourier ``phase`` and/or ``sign``"""
    transplant_sites: list[Literal["output", "input"]] = ["output", "input"]
    """a block's output, and/or (with ``transplant_layers="all"``) the input of its last nonlinearity, the
    pre-activation (with named layers: the input of the named module itself). For blocks without a final activation
    (MobileNetV2's inverted residuals, ViT MLP blocks) that input lies inside the branch, not on the stream the
    next block reads, and the block output is already signed: read their ``input`` rows as a branch-internal
    pre-activation (the whole-swap control flags them ``partial``)"""
    transplant_call_index: int | None = None
    """which call of a named layer that runs several times per forward (a module reused in a block, e.g. torchvision
    ResNets' shared ``relu``; ``layer2.1:relu`` for a functional one): 0-based, negative counts from the end"""
    transplant_every: int = Field(default=1, ge=1)
    """sweep every k-th block (the last one is always included)"""
    transplant_n_pairs: int | None = Field(default=None, ge=1)
    """image pairs per site (default: layer_sweep's, 1000)"""
    transplant_n_control: int | None = Field(default=None, ge=1)
    """images of the identity, magnitude-deletion and DC-only controls, and pairs of the whole-swap control (default:
    layer_sweep's, 512)"""
    transplant_max_images: int | None = Field(default=None, ge=1)
    """images to load, spread evenly over the dataset (default: ``limit``, else 1000; at most ``limit``)"""
    transplant_dims: Dims | None = None
    """Fourier dims of the phase code (default: layer_sweep's, ``"hw"``)"""
    transplant_prefix_tokens: Literal["receiver", "sign"] | None = None
    """token outputs: the prefix (class / register) tokens in the main transplant, the magnitude image's
    (``"receiver"``, layer_sweep's default) or the donor's sign on its absolute values (``"sign"``, also applied to
    the magnitude-deletion control)"""
    transplant_skip_front: bool = False
    """do not recompute the blocks before the intervened one (faster on block-sequential nets; the identity control
    checks it). Part of the result's cache key: on a net it breaks, the numbers differ"""


class _Note(TypedDict, total=False):
    note: str  # why nothing was measured (every image has the same clean prediction)


class TransplantResult(_Note):
    """What the transplant suite returns (:func:`~aprkit.eval.analyses.transplant.layer_sweep` without its figure)."""

    rows: list[dict[str, Any]]  # one per (layer, site, code): follow_donor, follow_magnitude, neither, controls, flags
    table: str  # Markdown table of the rows
    skipped: list[dict[str, Any]]  # sites of the default sweep that cannot be transplanted: layer, site, reason
    clean_accuracy: float | None  # of the loaded images (None without labels)
    config: dict[str, Any]  # n_images, n_pairs, num_outputs


def _max_images(limit: int | None, max_images: int | None) -> int:
    """The images the suite loads: ``max_images``, at most ``limit``; 1000 when neither is given."""
    given = [n for n in (limit, max_images) if n is not None]
    return min(given) if given else 1000


@register_suite("transplant")
class TransplantSuite(Suite[TransplantOptions]):
    """Phase / sign transplant layer sweep with magnitude-deletion, DC-only and identity controls. Its forward passes
    run in float32 whatever the run's ``amp`` (which the run's meta records): the hidden features go through Fourier
    transforms, which half precision would round."""

    Options = TransplantOptions
    version = str(_VERSION)
    limit_takes_first = False  # load_data spreads the images evenly over a map-style dataset
    reads = ("limit", "seed")  # float32 whatever the amp

    def run(self, ctx: EvalContext, data: Any) -> TransplantResult:
        from ..analyses.transplant import NoDisagreeingPairs, layer_sweep, load_data
        from ..engine.data_checks import names_other_classes
        from ..engine.datasets import as_dataset

        options = self.options(ctx)
        defaults = type(options)()
        # the options given at other values than their defaults (one given at its default computes the same numbers)
        keyed = {k for k in options.model_fields_set - {"limit", "transplant_skip_front"}
                 if getattr(options, k) != getattr(defaults, k)}
        given = {k.removeprefix(_PREFIX): v for k, v in options.model_dump(include=keyed).items()}
        if options.transplant_skip_front:  # the same numbers on block-sequential nets, others on nets it breaks
            given["skip_front"] = True

        def compute() -> dict:
            o = {k.removeprefix(_PREFIX): v for k, v in options.model_dump(exclude={"limit"}).items() if v is not None}
            o.pop("max_images", None)
            # a spec such as "cifar10:ROOT" or "folder:ROOT"; a dataset that draws random numbers: read under seeds
            ds = as_dataset(data) if isinstance(data, (str, torch.utils.data.Dataset)) else data
            images, labels = load_data(ds, max_images=_max_images(options.limit, options.transplant_max_images))
            if labels is not None and getattr(ds, "classes", None) is not None:
                with torch.no_grad():
                    n_out = ctx.model(images[:1].to(ctx.device)).shape[1]
                if names_other_classes(ds, n_out):  # e.g. 16 cue-conflict shapes vs 1000 ImageNet outputs
                    labels = None
            try:
                res = layer_sweep(
                    ctx.model, (images, labels) if labels is not None else images,
                    layers=o.pop("layers"), codes=o.pop("codes"), sites=o.pop("sites"), every=o.pop("every"),
                    generator=torch.Generator().manual_seed(ctx.seed), batch_size=ctx.batch_size,
                    progress=ctx.progress, **o,
                )
            except NoDisagreeingPairs as err:  # e.g. a barely trained model: the report says why nothing was measured
                return {"rows": [], "skipped": [], "table": "", "clean_accuracy": None,
                        "config": {"n_images": int(images.shape[0]), "n_pairs": 0}, "note": f"not measured: {err}"}
            res.pop("figure", None)
            res["config"] = {k: res.pop(k) for k in ("n_images", "n_pairs", "num_outputs") if k in res}
            res["config"]["layers"] = options.transplant_layers  # the headline's "last block" or named layer
            return res

        # the data's identity and the run's limit (which caps max_images) are part of the key; the options given at
        # other values than their defaults are, as before
        return cast(TransplantResult,
                    cached(ctx, "transplant", data, compute, reads=self.reads, v=_VERSION, **given))

    @classmethod
    def images_text(cls, options: Mapping[str, Any]) -> str:
        as_int = {k: None if options.get(k) is None else int(options[k]) for k in ("limit", "transplant_max_images")}
        n = _max_images(as_int["limit"], as_int["transplant_max_images"])  # recorded as given ("40" parses)
        return f"up to {n} images spread evenly over the set"

    def headline(self, result: Mapping[str, Any]) -> list[Measure]:
        """Per site (the block output, then the input of its last nonlinearity -- of a named layer: its input --, a
        ReLU network's pre-activation, where its sign code shows while the output after ReLU and average pooling
        follows B by construction) and code, the rate at which the deepest swept layer follows the transplanted
        carrier."""
        rows = result.get("rows") or []
        if not rows:
            return []
        named = (result.get("config") or {}).get("layers", "all") != "all"
        where = "deepest named layer" if named else "last block"
        sites = [s for s in ("output", "input") if any(r["site"] == s for r in rows)] or [rows[0]["site"]]
        out = []
        for site in sites:
            for code in dict.fromkeys(r["code"] for r in rows if r["site"] == site):
                last, flags = last_row(rows, site, code)  # an inert or DC-readout site follows B by construction
                # the label is one row of a table of several models: the same for each; their own flags in the note
                name = f"transplant.{code}_follow_donor" + ("" if site == "output" else f"_{site.replace('-', '_')}")
                out.append(Measure(name, f"transplant: follows the {code} donor ({where}, {site})",
                                   last.get("follow_donor"), percent=True,
                                   note=f"{where}, {site}: {'; '.join(flags)} (the report has every layer's rates)"
                                   if flags else ""))
        return out

    def report(self, results: Mapping[str, dict], fig_dir: Path) -> ReportSection:
        blocks: list = [
            Paragraph("Pairs (A, B) with different clean predictions; B's activation gets A's carrier (Fourier phase, "
                      "or sign; on complex maps the sign is the complex phase z/|z|) and B's magnitude. Rates in %; "
                      "controls: magnitude deleted (dataset-mean magnitude), "
                      "DC-only (channel means only), identity (A = B, must be 100), whole swap (A's entire activation: "
                      "the most a code can follow A from this site; below 90 is flagged partial)."),
            summary_table(results),
        ]
        for model_id, res in results.items():
            blocks.append(Heading(model_id))
            if res.get("note"):
                blocks.append(Paragraph(res["note"]))
                continue
            blocks.append(sweep_table(res.get("rows", [])))
            skipped = res.get("skipped") or []
            if skipped:
                shown = "; ".join(f"{k['layer']} ({k['reason'].split(';')[0]})" for k in skipped[:4])
                more = f"; and {len(skipped) - 4} more (results.json lists them)" if len(skipped) > 4 else ""
                blocks.append(Paragraph(f"Left out of the sweep ({len(skipped)} sites cannot be transplanted): "
                                        f"{shown}{more}."))
            if res.get("rows"):
                png = plot_sweep(res["rows"], Path(fig_dir) / f"transplant_{file_stem(model_id)}.png", title=model_id)
                blocks.append(Figure(png, f"{model_id}: transplant rates against block depth"))
        return ReportSection("Transplant test (hidden phase / sign code)", blocks)
