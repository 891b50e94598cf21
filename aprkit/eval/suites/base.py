"""The evaluation-suite interface: what ``evaluate(...)`` and ``aprkit eval --suite NAME`` run.

A suite measures one thing (corruption robustness, calibration, OOD, shape bias, phase bias,
transplant) on a model and returns JSON-serialisable results; it also declares its headline measures
(``headline``: what the report's summary table and ``Results.summary()`` show) and renders its report
section from structured blocks (``report``; see :mod:`aprkit.eval.blocks`).
Suites register themselves with ``@register_suite("name")``; the runner looks them up in ``SUITES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from ..blocks import ReportSection

__all__ = ["EvalContext", "Measure", "ReportSection", "ResultCacheLike", "Suite", "SUITES", "register_suite",
           "generic_headline"]


class ResultCacheLike(Protocol):
    """Key-value store of finished results so an interrupted run resumes without recomputing."""

    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, value: dict) -> None: ...


@dataclass
class EvalContext:
    """Everything a suite needs besides its data.

    ``model`` takes float images in [0, 1] of shape ``(B, C, H, W)`` on ``device`` (normalisation is
    inside the model) and returns logits ``(B, num_classes)``; it is in eval mode.
    """

    model: nn.Module
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 256
    num_workers: int = 0
    amp: bool = False
    channels_last: bool = False
    seed: int = 0
    progress: bool = True
    cache: ResultCacheLike | None = None
    model_id: str = "model"  # display label only; cache keys use ``model_key``
    out_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    model_key: str | None = None  # weights fingerprint for cache keys (computed on first use when None)


@dataclass(frozen=True)
class Measure:
    """One headline number of a suite for one model: the rows of the report's summary table.

    ``name`` is the key in ``Results.summary()``; ``percent``: ``value`` is a fraction shown x100 with ``%``;
    ``unit``: a unit shown otherwise (e.g. ``"s"``); ``higher_is_better``: None when neither direction is
    better (a descriptive rate); ``digits``: decimals shown.
    """

    name: str
    label: str
    value: float | None
    percent: bool = False
    higher_is_better: bool | None = None
    unit: str = ""
    digits: int = 2

    def formatted(self) -> str:
        """The value as printed in the summary (``"-"`` when missing)."""
        if self.value is None:
            return "-"
        return f"{100 * self.value:.{self.digits}f}" if self.percent else f"{self.value:.{self.digits}f}"

    @property
    def display_label(self) -> str:
        """The label with its unit: ``"ECE %"``."""
        unit = "%" if self.percent else self.unit
        return f"{self.label} {unit}" if unit else self.label


def generic_headline(name: str, result: Mapping[str, Any]) -> list[Measure]:
    """The headline of a suite that declares none (or is not installed): its top-level numbers, named
    ``"<suite>.<key>"``, direction unknown."""
    if not isinstance(result, Mapping):
        return []
    return [Measure(f"{name}.{k}", f"{name}: {k}", float(v), digits=4) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]


class Suite:
    """Base class: subclasses are registered with ``@register_suite`` and implement ``run``, ``headline`` and
    ``report``."""

    name: ClassVar[str] = ""
    #: names this suite reads from ``ctx.options`` (``aprkit eval`` and ``evaluate`` reject any other option)
    OPTIONS: ClassVar[tuple[str, ...]] = ()

    def run(self, ctx: EvalContext, data: Any) -> dict:
        """Run the suite on ``data`` and return JSON-serialisable results."""
        raise NotImplementedError

    def headline(self, result: Mapping[str, Any]) -> list[Measure]:
        """The few numbers that summarise ``result`` (what ``run`` returned for one model), in display order.

        The report's summary table and ``Results.summary()`` are built from these alone. The default lists the
        result's top-level numbers (:func:`generic_headline`); suites override it."""
        return generic_headline(self.name, result)

    def report(self, results: Mapping[str, dict], fig_dir: Path) -> ReportSection:
        """Render one section comparing models side by side.

        ``results`` maps a model id (e.g. ``"standard"``, ``"apr-sp"``) to what ``run`` returned for that
        model (a single model is a mapping of one). Figures are written as PNGs under ``fig_dir``; the section
        holds :mod:`aprkit.eval.blocks` (tables, paragraphs, figures), never Markdown text.
        """
        raise NotImplementedError


SUITES: dict[str, type[Suite]] = {}


def register_suite(name: str) -> Callable[[type[Suite]], type[Suite]]:
    """Class decorator that registers a suite under ``name``."""

    def deco(cls: type[Suite]) -> type[Suite]:
        cls.name = name
        SUITES[name] = cls
        return cls

    return deco
