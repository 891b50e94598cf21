"""The ``transplant`` suite: the internal phase/sign transplant layer sweep (tables and plots from
:mod:`aprkit.eval.transplant_tables`).

Options (``ctx.options["transplant"]`` or top-level ``ctx.options`` keys with a ``transplant_`` prefix):
``layers`` ("all" or names), ``codes``, ``sites``, ``every``, ``n_pairs``, ``n_control``,
``max_images``, ``dims``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..blocks import Figure, Heading, Paragraph
from ..cache import cached
from ..transplant_tables import plot_sweep, summary_table, sweep_table
from .base import EvalContext, Measure, ReportSection, Suite, register_suite

__all__ = ["TransplantSuite"]

_VERSION = 1
_OPTION_KEYS = ("layers", "codes", "sites", "every", "n_pairs", "n_control", "max_images", "dims")


def _options(ctx: EvalContext) -> dict[str, Any]:
    opts = dict(ctx.options.get("transplant", {}) or {})
    for key in _OPTION_KEYS:
        if f"transplant_{key}" in ctx.options:
            opts[key] = ctx.options[f"transplant_{key}"]
    unknown = set(opts) - set(_OPTION_KEYS)
    if unknown:
        raise ValueError(f"unknown transplant options {sorted(unknown)}; expected {list(_OPTION_KEYS)}")
    return opts


@register_suite("transplant")
class TransplantSuite(Suite):
    """Phase / sign transplant layer sweep with magnitude-deletion, DC-only and identity controls."""

    OPTIONS = ("limit", "transplant", *(f"transplant_{k}" for k in _OPTION_KEYS))

    def run(self, ctx: EvalContext, data: Any) -> dict:
        from ..inference import as_dataset
        from ..transplant import layer_sweep, load_data

        opts = _options(ctx)

        def compute() -> dict:
            o = dict(opts)
            ds = as_dataset(data) if isinstance(data, str) else data  # a spec such as "cifar10:ROOT" or "folder:ROOT"
            images, labels = load_data(ds, max_images=o.pop("max_images", ctx.options.get("limit") or 1000))
            classes = getattr(ds, "classes", None)
            if labels is not None and classes is not None:
                with torch.no_grad():
                    n_out = ctx.model(images[:1].to(ctx.device)).shape[1]
                if len(classes) != n_out:  # e.g. 16 cue-conflict shapes vs 1000 ImageNet outputs
                    labels = None
            res = layer_sweep(
                ctx.model, (images, labels) if labels is not None else images,
                layers=o.pop("layers", "all"), codes=o.pop("codes", ("phase", "sign")),
                sites=o.pop("sites", ("output", "input")), every=o.pop("every", 1),
                generator=torch.Generator().manual_seed(ctx.seed), batch_size=ctx.batch_size, progress=ctx.progress, **o,
            )
            res.pop("figure", None)
            res["config"] = {k: res.pop(k) for k in ("n_images", "n_pairs", "num_outputs") if k in res}
            return res

        # the data's identity and the run's limit (which caps max_images) are part of the key
        return cached(ctx, "transplant", data, compute, v=_VERSION, **opts)

    def headline(self, result: Mapping[str, Any]) -> list[Measure]:
        """Per code, the rate at which the deepest block's output follows the transplanted carrier."""
        rows = result.get("rows") or []
        site = "output" if any(r["site"] == "output" for r in rows) else (rows[0]["site"] if rows else None)
        out = []
        for code in dict.fromkeys(r["code"] for r in rows if r["site"] == site):
            last = max((r for r in rows if r["site"] == site and r["code"] == code), key=lambda r: r["depth"])
            label = f"transplant: follows the {code} donor (last block, {site})"
            out.append(Measure(f"transplant.{code}_follow_donor", label, last.get("follow_donor"), percent=True))
        return out

    def report(self, results: Mapping[str, dict], fig_dir: Path) -> ReportSection:
        blocks: list = [
            Paragraph("Pairs (A, B) with different clean predictions; B's activation gets A's carrier (Fourier phase, "
                      "or sign) and B's magnitude. Rates in %; controls: magnitude deleted (dataset-mean magnitude), "
                      "DC-only (channel means only), identity (A = B, must be 100)."),
            summary_table(results),
        ]
        for model_id, res in results.items():
            blocks += [Heading(model_id), sweep_table(res.get("rows", []))]
            if res.get("rows"):
                png = plot_sweep(res["rows"], Path(fig_dir) / f"transplant_{model_id}.png", title=model_id)
                blocks.append(Figure(png, f"{model_id}: transplant rates against block depth"))
        return ReportSection("Transplant test (hidden phase / sign code)", blocks)
