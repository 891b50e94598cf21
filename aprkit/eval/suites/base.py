"""The evaluation-suite interface: what ``evaluate(...)`` and ``aprkit eval --suite NAME`` run.

A suite measures one thing (corruption robustness, calibration, OOD, shape bias, phase bias,
transplant) on a model and returns JSON-serialisable results; it also renders its report section.
Suites register themselves with ``@register_suite("name")``; the runner looks them up in ``SUITES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

__all__ = ["EvalContext", "ReportSection", "ResultCacheLike", "Suite", "SUITES", "register_suite"]


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


@dataclass
class ReportSection:
    """One section of the report: Markdown body (tables) and PNG figures embedded in the HTML."""

    title: str
    markdown: str
    figures: list[Path] = field(default_factory=list)
    error: BaseException | None = None  # set by the report writer when rendering this section failed


class Suite:
    """Base class: subclasses are registered with ``@register_suite`` and implement ``run`` and ``report``."""

    name: ClassVar[str] = ""
    #: names this suite reads from ``ctx.options`` (``aprkit eval`` and ``evaluate`` reject any other option)
    OPTIONS: ClassVar[tuple[str, ...]] = ()

    def run(self, ctx: EvalContext, data: Any) -> dict:
        """Run the suite on ``data`` and return JSON-serialisable results."""
        raise NotImplementedError

    def report(self, results: Mapping[str, dict], fig_dir: Path) -> ReportSection:
        """Render one section comparing models side by side.

        ``results`` maps a model id (e.g. ``"standard"``, ``"apr-sp"``) to what ``run`` returned for that
        model (a single model is a mapping of one). Figures are written as PNGs under ``fig_dir``.
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
