"""The corruption suite's options and result: the corruptions and severities a run evaluates, where the corrupted
images come from (a -C set on disk, a callable, or generated with a preset), how many classes the model must output
(:func:`expected_classes`), the corruptions that enter the means (:func:`summary_corruptions`) and the fields of
:class:`CorruptionResult`. The calibration suite reads the same options (the cells are shared).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..._text import comma_items
from ..engine.datasets import as_dataset
from .base import LimitOption
from .corruption_generated import Caveats

__all__ = ["CorruptionOptions", "CorruptionResult", "expected_classes", "summary_corruptions"]


def _benchmark() -> list[str]:
    from ..metrics import CORRUPTIONS  # the 15 benchmark corruptions, in the published order

    return list(CORRUPTIONS)


def summary_corruptions(corruptions: Sequence[str]) -> list[str]:
    """The corruptions whose cells enter the means over corruptions: the benchmark ones among ``corruptions``, all of
    them when none is (``--corruptions extra``); the extra ones are held out next to benchmark ones."""
    bench = set(_benchmark())
    return [c for c in corruptions if c in bench] or list(corruptions)


def _default_preset(data: Any) -> str:
    from aprkit.corruptions.severity import preset_for_size

    img, _ = data[0]
    return preset_for_size(img.shape[-2], img.shape[-1])


class CorruptionOptions(LimitOption):
    """Options of the corruption suite; the calibration suite reads the same ones (the cells are shared)."""

    corruptions: list[str] = Field(default_factory=_benchmark)
    """corruption names and groups (``benchmark``, ``extra``, ``all``; default, or an empty list: the 15 benchmark
    ones); ``["none"]``: clean accuracy only. Evaluated and reported in the published order, whatever the order given"""
    severities: list[int] = [1, 2, 3, 4, 5]
    """severities in 1..5 (ascending, whatever the order given)"""
    corrupted: Any = None
    """a -C dataset on disk (``"cifar10-c:ROOT"``) or a callable (corruption, severity) -> dataset; else generated"""
    num_classes: int | None = None
    """classes the model must output (a run setting; default: the dataset's classes, see ``check_classes``)"""
    check_classes: bool = True
    """check the model's outputs (without ``num_classes``) or ``num_classes`` (refused when it differs) against the
    number of classes the dataset names; ``False`` when the data's labels already are the model's output indices"""
    preset: Literal["cifar", "tinyimagenet", "imagenet"] | None = None
    """parameters of generated corruptions (default by image side: <= 32 cifar, <= 64 tinyimagenet, else imagenet)"""
    n_bins: int = Field(default=15, ge=1)
    """equal-width bins of the ECE and the reliability diagrams"""
    jpeg_quality: Literal["auto"] | int | None = "auto"
    """generated cells pass through a JPEG round trip of this quality, as the published set was stored (``auto``:
    85 for the imagenet and tinyimagenet presets, as ImageNet-C and Tiny-ImageNet-C; none for cifar, whose -C set is
    lossless; ``None`` or 0: none)"""

    @field_validator("jpeg_quality")
    @classmethod
    def _quality(cls, v: Any) -> Any:
        if v not in ("auto", None) and not 0 <= v <= 100:
            raise ValueError(f"jpeg_quality must be auto, null, 0 (none) or a JPEG quality in 1..100, got {v}")
        return v

    @field_validator("corruptions", "severities", mode="before")
    @classmethod
    def _as_list(cls, v: Any, info: ValidationInfo) -> Any:
        """Comma-separated text (``"fog,snow"``, ``"1,3"``) or one number as a list; an empty list is the default."""
        v = comma_items(v) if isinstance(v, str) else [v] if isinstance(v, int) else v
        if isinstance(v, (list, tuple)) and any(isinstance(i, str) and "," in i for i in v):  # a config's 'fog, snow'
            v = [j for i in v for j in (comma_items(i) if isinstance(i, str) else [i])]
        return cls.model_fields[str(info.field_name)].get_default(call_default_factory=True) if v in ([], ()) else v

    @field_validator("corruptions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        words = {"none", "clean"}
        if v and set(v) <= words:  # (repeated: --corruptions none --corruptions none)
            return []  # clean accuracy only
        if set(v) & words:
            raise ValueError(f"corruptions {v}: 'none' (or 'clean') means clean accuracy only and takes no "
                             "corruption names beside it; give either, the clean cell is measured with any")
        from aprkit.corruptions import expand_groups
        from aprkit.corruptions.names import ALL

        # groups (benchmark, extra, all) as aprkit corrupt takes them; a did-you-mean for a typo; a repeat counts once;
        # in the registry's order (the published one): the same cells in any order give the same numbers to the bit
        # (means over cells add in one order) and read as the same settings
        return sorted(dict.fromkeys(expand_groups(v)), key=ALL.index)

    @field_validator("severities")
    @classmethod
    def _in_range(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 1 <= s <= 5]
        if bad:
            raise ValueError(f"severities must be integers in 1..5, got {bad}")
        return sorted(set(v))  # a repeated cell would weigh twice in the means over cells; ascending, as corruptions

    @model_validator(mode="after")
    def _read_with_corruptions(self) -> CorruptionOptions:
        """A -C set given with ``corruptions: none`` would be accepted and never read (severities may stay: configs
        set them for the runs that name corruptions)."""
        if not self.corruptions and "corruptions" in self.model_fields_set and self.corrupted is not None:
            raise ValueError("corrupted (a -C set) given with corruptions none (clean accuracy only), where nothing "
                             "reads it; drop it or name the corruptions")
        return self

    def preflight(self, data: Any, download: bool = False) -> None:
        """Generated frost needs the frost textures: found (with ``download``, fetched) before any suite runs, not
        at the frost cell after the clean pass and the other corruptions; the data is opened first (its error
        first)."""
        generated = self.corrupted is None or getattr(self.corrupted, "origin", None) == "generated"
        if generated and "frost" in self.corruptions:
            from aprkit.corruptions import find_frost_dir

            as_dataset(data)
            find_frost_dir(download=download)

    def grid(self) -> tuple[list[str], list[int]]:
        """The corruptions and severities to evaluate (both empty for clean accuracy only)."""
        return list(self.corruptions), list(self.severities) if self.corruptions else []


class CorruptionResult(Caveats):
    """What the corruption suite returns (fractions in [0, 1]; None where a number is not defined)."""

    clean: dict[str, Any]  # n, accuracy, error
    cells: dict[str, dict[str, dict[str, Any]]]  # corruption -> severity -> n, accuracy, error, nll, ece
    per_corruption: dict[str, float | None]  # mean error over severities
    per_severity: dict[str, float | None]  # mean error over corruptions
    mean_error: float | None  # over the evaluated cells (but held-out ones)
    held_out: list[str]  # extra corruptions evaluated beside benchmark ones: in cells/per_corruption, not in the means
    mean_corruption_error: float | None  # CIFAR convention: all 15 x 5 benchmark cells
    relative_robustness: float | None  # mean corrupted accuracy / clean accuracy
    complete: bool  # all 15 x 5 benchmark cells were evaluated
    origin: str  # "none", "generated", "disk" (a -C spec) or "provided" (a callable or dataset source; one with
    # ``origin = "generated"``, the demo's shared cells, is "generated")
    preset: str
    mce: float | None  # ImageNet-C mCE (AlexNet-normalised): all cells of the 1000 classes x 50,000 images
    relative_mce: float | None
    mce_note: str | None  # why mCE is None (preset "imagenet", every cell evaluated), or how it was made


def expected_classes(opts: CorruptionOptions, dataset: Any) -> int | None:
    """The number of classes the model must output: option ``num_classes``, else ``len(dataset.classes)`` when
    the dataset names its classes (disable with option ``check_classes=False``). A ``num_classes`` other than the
    number of classes the dataset names is refused: its labels ``0..k-1`` (sorted folder names) would be scored as
    the model's first ``k`` outputs."""
    found = getattr(dataset, "classes", None)
    classes: list[Any] = list(found) if isinstance(found, (list, tuple)) else []
    named = opts.check_classes and bool(classes)  # one class too: all its labels are 0
    if opts.num_classes:
        if named and len(classes) != int(opts.num_classes):
            shown = ", ".join(map(str, classes[:4])) + (", ..." if len(classes) > 4 else "")
            raise ValueError(
                f"num_classes={opts.num_classes}, but the data names {len(classes)} classes ({shown}): their labels "
                f"0..{len(classes) - 1} would be scored as the model's first {len(classes)} outputs, whatever the "
                "names mean to the model. Give the data the model's label set (one folder per model class, in the "
                "model's order; empty folders count), or, if its labels already are the model's output indices, "
                "pass check_classes=False (aprkit eval --set check_classes=false)")
        return int(opts.num_classes)
    return len(classes) if named else None
