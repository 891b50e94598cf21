"""The evaluation-suite interface: what ``evaluate(...)`` and ``aprkit eval --suite NAME`` run.

A suite measures one thing (corruption robustness, calibration, OOD, shape bias, phase bias,
transplant) on a model and returns JSON-serialisable results (a dict whose top-level keys its ``Result``
TypedDict documents); it also declares its headline measures (``headline``: what the report's summary table and
``Results.summary()`` show) and renders its report section from structured blocks (``report``; see
:mod:`aprkit.eval.report.blocks`). Suites register themselves with ``@register_suite("name")``; the runner looks them up
in ``SUITES``.

Options follow one convention: a single flat namespace of keys, given as ``evaluate(options={...})``, as
top-level keys of an eval config or as ``aprkit eval --set key=value``, e.g. ``{"knn_k": 10, "n_pairs": 500,
"transplant_layers": ["layer3"]}``. A key means one thing whichever suites read it (``limit`` is read by
every suite that subsamples; the corruption and calibration suites share the corruption-cell options); a name
that would be ambiguous carries its suite's prefix (``ood_limit``, ``calibration_corrupted``, ``cue_conflict_n``,
``transplant_n_pairs`` beside phase-bias's ``n_pairs``). Each suite declares its keys as the fields of its
``Options`` (a pydantic model of :class:`SuiteOptions`: types, defaults, ranges, docs); ``evaluate`` rejects any
other key (naming the suite that reads it, or a did-you-mean) and parses each suite's ``Options`` once, before
any work, and keeps them on the context; a suite reads them with ``self.options(ctx)``. The older nested forms
``{"phase-bias": {...}}`` and ``{"transplant": {...}}`` still work: :func:`flat_options` maps them to the flat
keys with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from torch import nn
from typing_extensions import Self

from ..._text import nearest_names
from ..engine.cache import READ_SETTINGS
from ..report.blocks import ReportSection

__all__ = ["EvalContext", "Measure", "ReportSection", "ResultCacheLike", "Suite", "SuiteOptions", "LimitOption",
           "SUITES", "register_suite", "flat_options", "generic_headline"]


class ResultCacheLike(Protocol):
    """Key-value store of finished results so an interrupted run resumes without recomputing."""

    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, value: dict) -> None: ...


class SuiteOptions(BaseModel):
    """Base of a suite's ``Options``: its flat option keys as typed, validated fields with defaults.

    :meth:`parse` picks the model's own keys out of the flat options of a run (the other keys belong to other
    suites) and turns a validation error into one ``ValueError`` / ``TypeError`` naming the key and the suite.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True)

    @classmethod
    def parse(cls, options: Mapping[str, Any], suite: str) -> Self:
        """The model of ``options``' keys that are fields of ``cls`` (flat keys; see the module docstring); a
        ``None`` value stands for the field's default."""
        fields = cls.model_fields
        given = {k: v for k, v in options.items() if k in fields and not (v is None and fields[k].default is not None)}
        try:
            return cls.model_validate(given)
        except ValidationError as err:
            first = err.errors()[0]
            original = (first.get("ctx") or {}).get("error")
            if isinstance(original, (ValueError, TypeError)):  # a validator's own message, e.g. a did-you-mean
                raise original from None
            key = ".".join(map(str, first["loc"]))
            kind = TypeError if first["type"].endswith(("_type", "_parsing")) else ValueError
            msg = first["msg"][:1].lower() + first["msg"][1:]
            raise kind(f"option {key!r} of suite {suite!r}: {msg}, got {first['input']!r}") from None

    def preflight(self, data: Any, download: bool = False) -> None:
        """Checks run once before any suite of a run does (``evaluate`` calls them once the first model has loaded):
        resources these options need on ``data`` (the suite's) that a later step would miss only after hours of
        others (default: none). ``download``: fetch what can be fetched."""


class LimitOption(SuiteOptions):
    """The run setting ``limit`` (``evaluate(limit=N)``) for the suites that subsample their data."""

    limit: int | None = None
    """use only the first N images of each dataset (a run setting: part of every cache key)"""

    @field_validator("limit")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"limit must be a positive number of images, got {v}")
        return v


@dataclass
class EvalContext:
    """Everything a suite needs besides its data.

    ``model`` takes float images in [0, 1] of shape ``(B, C, H, W)`` on ``device`` (normalisation is
    inside the model) and returns logits ``(B, num_classes)``; it is in eval mode. ``options`` holds the
    run's flat option keys (see the module docstring); ``parsed_options`` each suite's parsed ``Options``
    (filled by ``evaluate``; :meth:`Suite.options` parses ``options`` when its suite is missing).
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
    parsed_options: dict[str, SuiteOptions] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Measure:
    """One headline number of a suite for one model: the rows of the report's summary table.

    ``name`` is the key in ``Results.summary()``; ``percent``: ``value`` is a fraction shown x100 with ``%``;
    ``unit``: a unit shown otherwise (e.g. ``"s"``); ``higher_is_better``: None when neither direction is
    better (a descriptive rate), ``direction_known`` False when the direction is not known at all (the numbers of a
    suite that declares no headline); ``digits``: decimals shown; ``note``: what the value alone would hide (e.g. a
    transplant site that follows B by construction), printed beside it where the label is not.
    """

    name: str
    label: str
    value: float | None
    percent: bool = False
    higher_is_better: bool | None = None
    unit: str = ""
    digits: int = 2
    note: str = ""
    direction_known: bool = True

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
    return [Measure(f"{name}.{k}", f"{name}: {k}", float(v), digits=4, direction_known=False)
            for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


OptionsT = TypeVar("OptionsT", bound=SuiteOptions)


class Suite(Generic[OptionsT]):
    """Base class: subclasses are registered with ``@register_suite``, declare ``Options``, implement ``run``
    (annotated with a TypedDict of its result's top-level keys), ``headline`` and ``report``."""

    name: ClassVar[str] = ""
    #: the suite's option keys, types and defaults (``aprkit eval`` and ``evaluate`` reject any other key)
    Options: type[OptionsT] = SuiteOptions  # type: ignore[assignment]  # a suite without options
    #: whether ``limit`` takes the first N images (a class-sorted dataset's first classes: the runner warns) or
    #: spreads N images over the whole dataset
    limit_takes_first: ClassVar[bool] = True
    #: whether the suite's numbers are means over corruption x severity cells (read from its ``corruptions``,
    #: ``severities`` and ``corrupted`` options): the report header says when models' cells differ
    cell_grid: ClassVar[bool] = False
    #: the version of what the suite computes (its units' versions, as in their cache keys): a folder's results of the
    #: suite recorded under another version are flagged in ``results.json`` (``meta.caveats``) until it runs again
    version: ClassVar[str] = "1"
    #: the run settings besides its options that its numbers depend on (of ``limit``, ``seed``, ``amp``): its cache
    #: keys hold only these, and a rerun that changes another is no other setting of it (shape bias reads the amp)
    reads: ClassVar[tuple[str, ...]] = READ_SETTINGS

    @classmethod
    def images_text(cls, options: Mapping[str, Any]) -> str:
        """The images the suite read under ``options`` (its provenance record), for the report header: the first
        ``limit`` (``"first 200 images"``) or ``"all images"``."""
        from ..report.header import limit_text

        return limit_text(options.get("limit") if "limit" in cls.option_names() else None)

    #: options that change what the suite's numbers mean beyond the data and the images (the OOD sets, the pairs):
    #: the report header says when models were measured with different ones
    setup_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def setup_text(cls, options: Mapping[str, Any]) -> str:
        """The :attr:`setup_keys` of recorded ``options`` (defaults filled in, lists as sorted items) in one text:
        equal for models measured alike, whatever order or spelling the options were given in."""
        from ..._text import comma_items

        parts = []
        for key in cls.setup_keys:
            field = cls.Options.model_fields.get(key)
            value = options[key] if key in options else (
                field.get_default(call_default_factory=True) if field is not None else None)
            if isinstance(value, str) and "," in value:
                value = comma_items(value)
            if isinstance(value, (list, tuple)):
                value = ", ".join(sorted(map(str, value)))
            parts.append(f"{key}={value}")
        return "; ".join(parts)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The flat option keys this suite reads (the fields of its ``Options``)."""
        return tuple(cls.Options.model_fields)

    def options(self, ctx: EvalContext) -> OptionsT:
        """This suite's options in ``ctx`` (parsed once by ``evaluate``; parsed here for a hand-made context)."""
        parsed = ctx.parsed_options.get(self.name)
        return parsed if isinstance(parsed, self.Options) else self.Options.parse(flat_options(ctx.options), self.name)

    def run(self, ctx: EvalContext, data: Any) -> Mapping[str, Any]:
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
        holds :mod:`aprkit.eval.report.blocks` (tables, paragraphs, figures), never Markdown text.
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


#: the deprecated nested option forms: ``options[KEY] = {name: value}`` stands for ``options[PREFIX + name]``
#: (KEY -> (the suite, PREFIX))
_NESTED = {
    "phase-bias": ("phase-bias", ""), "phase_bias": ("phase-bias", ""), "transplant": ("transplant", "transplant_"),
}


def flat_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` in the flat convention: the deprecated nested forms mapped to their flat keys (each with a
    ``DeprecationWarning``); an unknown nested key raises with a did-you-mean."""
    out = dict(options)
    for key, (suite, prefix) in _NESTED.items():
        if key not in out:
            continue
        nested = out.pop(key)
        if not isinstance(nested, Mapping):
            raise TypeError(f"options[{key!r}] must be a mapping of {suite} options, got {type(nested).__name__}")
        cls = SUITES.get(suite)
        valid = [n[len(prefix):] for n in (cls.option_names() if cls else ()) if n.startswith(prefix)]
        for name, value in nested.items():
            flat = prefix + str(name)
            if cls is not None and str(name) not in valid:
                raise ValueError(f"unknown {suite} option '{key}.{name}'{nearest_names(str(name), valid)}; the {suite} "
                                 f"options are the flat keys {', '.join(cls.option_names())}")
            if flat in out:
                raise ValueError(f"options '{key}.{name}' and {flat!r} are both set; keep the flat key {flat!r}")
            out[flat] = value
        warnings.warn(f"options[{key!r}] = {{...}} is deprecated: give the {suite} options as flat keys "
                      f"({', '.join(prefix + str(n) for n in nested) or 'none given'})",
                      DeprecationWarning, stacklevel=3)
    return out
