"""Tables and plots of a transplant layer sweep (:func:`aprkit.eval.analyses.transplant.layer_sweep` rows): one
sweep as a table (:class:`aprkit.eval.report.blocks.Table`, or Markdown text for the command line) or a figure
against depth, and several models side by side."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..report.blocks import Table
from ..report.blocks import code as code_span

__all__ = ["sweep_table", "sweep_markdown", "summary_table", "plot_sweep", "code_label", "flag_names", "last_row"]


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def code_label(row: Mapping[str, Any]) -> str:
    """A row's code as the tables print it: the sign of a complex map is its phase ``z/|z|``."""
    return f"{row['code']} (complex phase)" if row.get("complex") and row["code"] == "sign" else row["code"]


def flag_names(row: Mapping[str, Any]) -> list[str]:
    """The short names of a row's flags (``inert``, ``dc-readout``, ``trivial``, ``partial``, ...): what a rate
    read alone would hide (at an inert or DC-readout site following B is by construction)."""
    return [str(f).split(":", 1)[0] for f in row.get("flags") or []]


def last_row(rows: Sequence[Mapping[str, Any]], site: str, code: str) -> tuple[Mapping[str, Any], list[str]]:
    """The deepest of ``rows`` at ``site`` with ``code`` and its :func:`flag_names`, led by ``at <block>`` where
    that is not the sweep's last block (a 1x1 last stage has no phase code): the "last block" it stands for."""
    last = max((r for r in rows if r["site"] == site and r["code"] == code), key=lambda r: r["depth"])
    flags = flag_names(last)
    if last["depth"] < max(r["depth"] for r in rows):
        flags.insert(0, f"at {last.get('block', last['layer'])}")
    return last, flags


def sweep_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """A sweep, one line per (layer, site, code); rates in %."""
    acc = any("deletion_accuracy" in r for r in rows)
    head = ["depth", "layer @ site", "code", "follow donor", "follow magnitude", "neither",
            "deletion " + ("acc" if acc else "agree"), "DC-only " + ("acc" if acc else "agree"),
            "identity", "whole swap", "mag. variation", "flags"]
    body: list[list[Any]] = []
    for r in rows:
        idx = f"[{r['call_index']}]" if r["layer"].endswith(":relu") or r.get("call_index") else ""
        flags = "; ".join(f.split(":")[0] for f in r.get("flags", [])) or ""
        body.append([
            str(r["depth"]), [code_span(f"{r['layer']}{idx}"), f" @ {r['site']}"], code_label(r),
            _pct(r["follow_donor"]), _pct(r["follow_magnitude"]), _pct(r["neither"]),
            _pct(r.get("deletion_accuracy", r["deletion_agreement"])),
            _pct(r.get("dc_only_accuracy", r["dc_only_agreement"])), _pct(r["identity_agreement"]),
            _pct(r.get("whole_swap_follow")), f"{r['magnitude_variation']:.3f}", flags,
        ])
    return Table(head, body)


def sweep_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """:func:`sweep_table` as Markdown text (the command line's output and ``sweep.md``)."""
    from ..report.render import markdown_block

    return markdown_block(sweep_table(rows))


def summary_table(results: Mapping[str, Mapping[str, Any]]) -> Table:
    """Models side by side: follow-donor / follow-magnitude at the last block and the mean over blocks (flags:
    :func:`last_row`)."""
    body = []
    for model_id, res in results.items():
        rows = res.get("rows", [])
        for site in dict.fromkeys(r["site"] for r in rows):
            for code_name in dict.fromkeys(r["code"] for r in rows):
                sel = [r for r in rows if r["site"] == site and r["code"] == code_name]
                if not sel:
                    continue
                last, flags = last_row(rows, site, code_name)
                md = sum(r["follow_donor"] for r in sel) / len(sel)
                mm = sum(r["follow_magnitude"] for r in sel) / len(sel)
                body.append([model_id, site, code_label(last),
                             f"{_pct(last['follow_donor'])} / {_pct(last['follow_magnitude'])}"
                             + (f" ({', '.join(flags)})" if flags else ""),
                             f"{_pct(md)} / {_pct(mm)}", _pct(res.get("clean_accuracy"))])
    return Table(["model", "site", "code", "last block: donor / magnitude", "mean over blocks: donor / magnitude",
                  "clean acc"], body)


def plot_sweep(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Plot follow-donor / follow-magnitude and magnitude-deletion accuracy against depth, one panel per site."""
    from matplotlib.ticker import MaxNLocator

    from ..report.plotting import new_figure, plot_text, save_figure

    sites = list(dict.fromkeys(r["site"] for r in rows))
    codes = list(dict.fromkeys(r["code"] for r in rows))
    fig = new_figure(5.5 * max(1, len(sites)) + 2.2, 3.8)  # + the legend to the right of the last panel
    colors = {"phase": "tab:blue", "sign": "tab:red"}
    for k, site in enumerate(sites):
        ax = fig.add_subplot(1, len(sites), k + 1)
        for code in codes:
            sel = sorted((r for r in rows if r["site"] == site and r["code"] == code), key=lambda r: r["depth"])
            if not sel:
                continue
            d = [r["depth"] for r in sel]
            c = colors.get(code)
            ax.plot(d, [100 * r["follow_donor"] for r in sel], "-o", color=c, ms=3,
                    label=f"{code}: follows {code} donor")
            ax.plot(d, [100 * r["follow_magnitude"] for r in sel], "--s", color=c, ms=3,
                    label=f"{code}: follows magnitude")
            ax.plot(d, [100 * r.get("deletion_accuracy", r["deletion_agreement"]) for r in sel], ":", color=c,
                    label=f"{code}: {'accuracy' if 'deletion_accuracy' in sel[0] else 'agreement'}, magnitude deleted")
        ax.set_xlabel("block depth")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-2, 102)
        ax.set_title(f"{plot_text(title)} site={site}".strip())
        ax.grid(alpha=0.3)
        if k == 0:
            ax.set_ylabel("rate (%)")  # the section's tables give these rates in % too
        if k == len(sites) - 1:  # one legend, outside the panels: inside it covered points at 0 or 100 %
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return save_figure(fig, path, dpi=110)
