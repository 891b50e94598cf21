"""Training configuration: nested dataclasses, YAML files with ``base:`` inheritance, ``a.b=value`` overrides.

A config file is a mapping with the sections ``model``, ``data``, ``aug``, ``optim`` and ``train`` (see the
dataclasses below for every key and its default) plus two optional top-level keys: ``name`` (a label) and
``base`` (a path, or list of paths, relative to the file, whose contents are merged underneath it).
Unknown keys, wrong types and unknown model names raise a ``ValueError``/``TypeError`` that lists what is
valid.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._text import nearest, nearest_names
from ..config import (
    apply_overrides,
    coerce,
    expand_env,
    is_text_type,
    merge,
    read_bases,
    read_config_files,
    unknown_key,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "METHODS",
    "PAIR_METHODS",
    "TWO_BATCH_METHODS",
    "AMP_DTYPES",
    "ModelConfig",
    "DataConfig",
    "AugConfig",
    "OptimConfig",
    "RunConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "resolve_bases",
    "apply_overrides",
    "validate_config",
    "resolve_amp_dtype",
    "resolve_aug_compile",
    "expand_env",
]

#: training losses: plain CE; CE(clean) + CE(APR-P) (the reference's APR-P); CE(APR-P batch) alone; APR-S per image;
#: APR-S then CE(clean) + CE(APR-P); AugMix + JSD
Method = Literal["standard", "apr_p", "apr_p_only", "apr_s", "apr_sp", "augmix_jsd"]
METHODS: tuple[str, ...] = typing.get_args(Method)
#: methods that amplitude-swap the batch (APR-P), and those of them that train on the 2B batch cat([x, APR-P(x)])
PAIR_METHODS: tuple[str, ...] = ("apr_p", "apr_p_only", "apr_sp")
TWO_BATCH_METHODS: tuple[str, ...] = ("apr_p", "apr_sp")
#: autocast dtypes on CUDA: float16 needs a GradScaler (one host sync per step), bfloat16 needs none
AMP_DTYPES: tuple[str, ...] = ("auto", "float16", "bfloat16")


@dataclass
class ModelConfig:
    """``name``: a built-in ``aprkit.models`` name, ``timm:NAME`` or ``torchvision:NAME``."""

    name: str = "resnet20"
    num_classes: int = 10
    checkpoint: str | None = None  # initial weights (an aprkit checkpoint), not a resume point
    drop_head: bool = False  # a checkpoint with another number of classes: replace its classifier (fine-tuning)
    kwargs: dict[str, Any] = field(default_factory=dict)  # builder arguments (e.g. nonlinearity, img_size/patch_size)


@dataclass
class DataConfig:
    """Dataset specs for ``aprkit.data.get_dataset(spec, split)`` and the input pipeline."""

    dataset: str = "synthetic"
    test_dataset: str | None = None  # defaults to ``dataset``
    train_split: str = "train"
    test_split: str = "test"
    limit: int | None = None  # seeded random subset of the training set, and of the test set unless test_limit
    test_limit: int | None = None  # seeded random subset of the test set (default: limit; larger: all of it)
    input_path: Literal["gpu", "loader"] = "gpu"  # batched device augmentation vs per-image DataLoader
    in_memory: bool | None = None  # keep decoded uint8 images as one tensor on the device (None: auto)
    max_memory_mb: int = 4096
    image_size: int = 32
    crop_padding: int = 4
    pad_fill: int = 0
    random_resized_crop: bool = False  # ImageNet-style training crop (done per image on the CPU)
    test_resize: int | None = None  # resize the short side, then centre-crop ``image_size`` (test)
    hflip: bool = True
    num_workers: int = 2
    eval_batch_size: int = 256


@dataclass
class AugConfig:
    """The training method and its augmentation parameters."""

    method: Method = "standard"
    pair_p: float = 0.6  # APR-P: probability that a batch is amplitude-swapped
    single_p: float = 0.5  # APR-S: probability of recombining an image with an augmented copy
    # APR-S's final cast: round and clamp, or wrap as the reference's astype(np.uint8) does (truncate, modulo 256)
    single_cast: Literal["round", "wrap"] = "round"
    severity: int = 3
    dims: Literal["chw", "hw"] = "chw"
    # apr_p, apr_sp: one forward of the 2B batch (batch norm statistics over clean + APR-P images, the reference's
    # way) or two forwards of B images each (clean and APR-P halves normalised by their own batch statistics)
    sp_forward: Literal["joint", "separate"] = "joint"
    # the values APR-P recombines: [0, 1] pixels (the reference's CIFAR code: the model normalises after it) or the
    # mean/std-normalised images the model sees (the reference's ImageNet code normalises in the loader, before its
    # mix_data); the model's own mean/std are used, and the APR-P images are handed back to it in pixels
    pair_space: Literal["pixels", "normalized"] = "pixels"
    jsd_weight: float = 12.0
    augmix_severity: int = 3
    augmix_width: int = 3
    # a step's device augmentation (APR-S, crop, flip, APR-P) as one compiled graph: false, true, torch.compile
    # options ({mode: reduce-overhead}) or auto: CUDA graphs (reduce-overhead) on CUDA, eager elsewhere
    compile: bool | dict[str, Any] | str = "auto"


@dataclass
class OptimConfig:
    """SGD (Nesterov) with a multi-step schedule (lr x ``gamma`` at each epoch in ``milestones``) or, with ``schedule:
    cosine``, AugMix's cosine annealing from ``lr`` to ``min_lr`` over all steps; optional linear warm-up; the learning
    rate is updated every step. ``batch_size`` is global across DDP ranks; each epoch takes the full batches of a
    new shuffle (the last partial batch is dropped: 390 steps of 128 on CIFAR-10's 50,000 images, 80 left out, other
    ones each epoch), and the report says how many are left out."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    batch_size: int = 128
    epochs: int = 200
    milestones: list[int] = field(default_factory=lambda: [60, 120, 160, 190])
    gamma: float = 0.2
    warmup_epochs: float = 0.0  # linear warm-up from lr/steps to lr over this many epochs (per step)
    schedule: Literal["step", "cosine"] = "step"  # cosine: milestones and gamma are not used
    min_lr: float = 0.0  # the cosine schedule's last learning rate (AugMix's cifar.py: 1e-6)


@dataclass
class RunConfig:
    """Everything about how the run executes (section ``train``)."""

    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch.set_num_threads for CPU work (None: leave as is)
    amp: bool = True  # autocast on CUDA (+ GradScaler for float16); ignored on CPU
    # float16 (GradScaler: one host sync per step), bfloat16 (no scaler, no sync) or auto (bfloat16 where supported)
    amp_dtype: str = "auto"
    channels_last: bool = True  # on CUDA
    deterministic: bool = False  # CUDA: deterministic kernels (bit-for-bit resume on GPU), no cudnn.benchmark
    compile: bool = False
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    eval_every: int = 1
    checkpoint_every_steps: int | None = None  # extra mid-epoch checkpoints
    progress: bool = True
    tensorboard: bool = True  # event files in <out>/tb where the tensorboard package is installed (none without it)
    report: bool = True  # <out>/train_report.md, .html, figures/ (training curves): rewritten as it trains (<= 30 s)
    out: str | None = None
    resume: bool = False


@dataclass
class FeatureAPRConfig:
    """Hidden-layer APR (``aprkit.hidden.attach``) at the outputs of ``layers`` (names from ``named_modules()``) while
    training; none by default. Its draws come from the global RNG, which the loop seeds per step, so a resumed run
    matches an uninterrupted one."""

    layers: list[str] = field(default_factory=list)
    p: float = 0.5  # probability that each sample's features are recombined at a layer
    dims: Literal["hw", "chw"] = "hw"
    mode: Literal["swap", "mix"] = "swap"
    lam: float | None = None  # mode "mix": the partner's amplitude share (None: drawn uniformly per image)


@dataclass
class Config:
    name: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    feature_apr: FeatureAPRConfig = field(default_factory=FeatureAPRConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------- building


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise TypeError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in hints:
            raise _unknown(full, key, valid, prefix.rstrip(".") or "the top level")
        tp = hints[key]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{full}.")
        else:
            kwargs[key] = coerce(value, tp, full)
    return cls(**kwargs)


#: the groups of settings of a :class:`Config` (``optim``, ``data``, ...): ``--set optim=null`` is refused
SECTIONS: tuple[str, ...] = tuple(name for name, tp in typing.get_type_hints(Config).items()
                                  if dataclasses.is_dataclass(tp))


def _settings(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every setting of ``cls`` by its dotted key (``optim.epochs``, ...) -> its annotation."""
    out: dict[str, Any] = {}
    for name, tp in typing.get_type_hints(cls).items():
        is_section = isinstance(tp, type) and dataclasses.is_dataclass(tp)
        out.update(_settings(tp, f"{prefix}{name}.") if is_section else {f"{prefix}{name}": tp})
    return out


#: the settings whose ``--set`` value is the text as typed (``train.out=2024_01_05`` stays that, not 20240105)
TEXT_KEYS: tuple[str, ...] = tuple(k for k, tp in _settings(Config).items() if is_text_type(tp))


def _unknown(full: str, key: str, valid: Sequence[str], where: str) -> ValueError:
    """The error for an unknown key: where the same key (or a close one) is a key of another section (train.epochs:
    optim.epochs), that first; else the section's own nearest keys (it suggested 'report' for train.epochs)."""
    leaves = {k: k.rsplit(".", 1)[-1] for k in _settings(Config) if k != full}
    elsewhere = [k for k, leaf in leaves.items() if leaf == key]
    if not elsewhere and not nearest(key, valid):  # a close key of another section (lr: optim.lr)
        close = nearest(key, list(leaves.values()), n=1)
        elsewhere = [k for k, leaf in leaves.items() if leaf in close]
    if elsewhere:
        return ValueError(f"unknown config key {full!r} (did you mean {' or '.join(map(repr, elsewhere))}?); valid "
                          f"keys in {where}: {', '.join(valid)}")
    return unknown_key(full, valid, where)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build a :class:`Config` from a nested mapping (``base`` must already be resolved: :func:`resolve_bases`)."""
    if "base" in data:
        raise ValueError(f"config mapping holds base: {data['base']!r}, which is resolved when files are read; "
                         "merge it first (aprkit.train.config.resolve_bases) or pass the YAML path")
    return _build(Config, dict(data), "")


def resolve_bases(data: Mapping[str, Any]) -> dict[str, Any]:
    """A config mapping with its ``base:`` (a YAML path or a list of them, relative to the current directory)
    merged underneath, as ``base:`` works in a file."""
    out = dict(data)
    return merge(read_bases(out.pop("base", None)), out)


def load_config(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    overrides: Sequence[str] = (),
    *,
    validate: bool = True,
) -> Config:
    """Read YAML config file(s) (resolving ``base:``; several files merge left to right), apply ``overrides``.
    A file may also be a shipped recipe's name (``"cifar10_wrn40_2_apr_sp"``; :mod:`aprkit.configs`).

    ``path=None`` starts from the defaults. The loader (``aprkit.config``) is the one ``aprkit eval`` uses.
    Raises ``ValueError`` for unknown keys or names (listing the valid ones) and ``TypeError`` for values
    of the wrong type.
    """
    paths = [] if path is None else [path] if isinstance(path, (str, os.PathLike)) else list(path)
    data = read_config_files(paths, kind="train")
    if paths and not data.get("name"):
        data["name"] = "+".join(Path(p).stem for p in paths)
    cfg = config_from_dict(apply_overrides(data, overrides, SECTIONS, TEXT_KEYS))
    if validate:
        validate_config(cfg)
    return cfg


# ------------------------------------------------------------------------------------------------- validation


def _check_model_name(name: str) -> None:
    if ":" in name:
        from ..models.foreign import check_foreign_spec

        source = name.partition(":")[0]
        if source not in ("timm", "torchvision"):
            raise ValueError(f"model.name {name!r}: the prefix must be 'timm:' or 'torchvision:', got {source!r}:")
        check_foreign_spec(name)
        return
    from ..models import is_model, list_models

    if not is_model(name):  # case-insensitive, as create_model and load_model
        valid = list(list_models())
        raise ValueError(
            f"unknown model.name {name!r}{nearest_names(name, valid)}; valid models: {', '.join(valid)} "
            "(or timm:NAME / torchvision:NAME)"
        )


def _check_compile_options(options: Mapping[str, Any], key: str) -> None:
    """Raise naming ``key`` if ``options`` holds a keyword that ``torch.compile`` does not take."""
    import inspect

    import torch

    valid = [name for name in inspect.signature(torch.compile).parameters if name != "model"]
    for name in options:
        if name not in valid:
            raise ValueError(f"{key}: unknown torch.compile option {name!r}{nearest_names(str(name), valid)}; "
                             f"valid options: {', '.join(valid)}")


def resolve_amp_dtype(name: str, device: torch.device) -> torch.dtype:
    """``train.amp_dtype`` on ``device``: ``auto`` is bfloat16 on a CUDA device that supports it, else float16."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


def resolve_aug_compile(value: bool | dict[str, Any] | str, device: torch.device) -> bool | dict[str, Any]:
    """``aug.compile`` on ``device``: ``auto`` is CUDA graphs (``{"mode": "reduce-overhead"}``) on CUDA, else off."""
    if isinstance(value, str):  # "auto", the only string validate_config lets through
        return {"mode": "reduce-overhead"} if device.type == "cuda" else False
    return value


#: the config warnings given in this process (each once)
_WARNED: set[str] = set()


def validate_config(cfg: Config) -> Config:
    """Check value ranges and names that the type coercion cannot; return ``cfg`` unchanged."""
    if not isinstance(cfg, Config):
        raise TypeError(f"config must be an aprkit.train.Config, got {type(cfg).__name__}")
    _check_model_name(cfg.model.name)
    o = cfg.optim
    checks = [
        (cfg.model.num_classes >= 2, "model.num_classes must be >= 2"),
        (cfg.optim.batch_size >= 1, "optim.batch_size must be >= 1"),
        (cfg.optim.epochs >= 1, "optim.epochs must be >= 1"),
        (math.isfinite(o.lr) and o.lr > 0, f"optim.lr must be a finite number > 0, got {o.lr}"),
        (0 <= cfg.optim.momentum < 1, "optim.momentum must be in [0, 1)"),
        (math.isfinite(o.weight_decay) and o.weight_decay >= 0,
         f"optim.weight_decay must be a finite number >= 0, got {o.weight_decay}"),
        (math.isfinite(o.gamma) and o.gamma > 0, f"optim.gamma must be a finite number > 0, got {o.gamma}"),
        (math.isfinite(o.min_lr) and 0 <= o.min_lr <= o.lr, f"optim.min_lr must be in [0, optim.lr], got {o.min_lr}"),
        (o.schedule == "cosine" or o.min_lr == 0, f"optim.min_lr={o.min_lr} is the cosine schedule's last rate; "
         "with optim.schedule step it is not used: set optim.schedule=cosine or drop it"),
        (math.isfinite(o.warmup_epochs) and o.warmup_epochs >= 0,
         f"optim.warmup_epochs must be a finite number >= 0, got {o.warmup_epochs}"),
        (list(cfg.optim.milestones) == sorted(cfg.optim.milestones), "optim.milestones must be increasing"),
        (all(m >= 1 for m in o.milestones), f"optim.milestones must be epochs >= 1, got {o.milestones}"),
        (0 <= cfg.aug.pair_p <= 1, f"aug.pair_p must be a probability in [0, 1], got {cfg.aug.pair_p}"),
        (0 <= cfg.aug.single_p <= 1, f"aug.single_p must be a probability in [0, 1], got {cfg.aug.single_p}"),
        (1 <= cfg.aug.severity <= 10 and 1 <= cfg.aug.augmix_severity <= 10, "aug severities must be in 1..10"),
        (cfg.aug.augmix_width >= 1, "aug.augmix_width must be >= 1"),
        (math.isfinite(cfg.aug.jsd_weight) and cfg.aug.jsd_weight >= 0,
         f"aug.jsd_weight must be a finite number >= 0, got {cfg.aug.jsd_weight}"),
        (0 <= cfg.feature_apr.p <= 1, f"feature_apr.p must be a probability in [0, 1], got {cfg.feature_apr.p}"),
        (cfg.feature_apr.lam is None or 0 <= cfg.feature_apr.lam <= 1,
         f"feature_apr.lam must be null or in [0, 1], got {cfg.feature_apr.lam}"),
        (len(set(cfg.feature_apr.layers)) == len(cfg.feature_apr.layers),
         f"feature_apr.layers names a layer twice: {cfg.feature_apr.layers}"),
        (cfg.data.eval_batch_size >= 1, "data.eval_batch_size must be >= 1"),
        (cfg.data.limit is None or cfg.data.limit >= 1, "data.limit must be null or >= 1"),
        (cfg.data.test_limit is None or cfg.data.test_limit >= 1, "data.test_limit must be null or >= 1"),
        (cfg.data.image_size >= 2, f"data.image_size must be >= 2 pixels, got {cfg.data.image_size}"),
        (cfg.data.crop_padding >= 0, f"data.crop_padding must be >= 0 pixels, got {cfg.data.crop_padding}"),
        (0 <= cfg.data.pad_fill <= 255, "data.pad_fill must be in 0..255"),
        (cfg.data.num_workers >= 0, "data.num_workers must be >= 0"),
        (cfg.data.test_resize is None or cfg.data.test_resize >= cfg.data.image_size,
         f"data.test_resize must be null or a size >= data.image_size ({cfg.data.image_size}): it resizes the test "
         f"images' shorter side before their centre crop of image_size (a smaller one pads the crop with black), got "
         f"{cfg.data.test_resize}"),
        (cfg.data.max_memory_mb >= 0, f"data.max_memory_mb must be >= 0, got {cfg.data.max_memory_mb}"),
        (0 <= cfg.train.seed < 2**63, f"train.seed must be in 0..2**63 - 1, got {cfg.train.seed}"),
        (cfg.train.checkpoint_every_steps is None or cfg.train.checkpoint_every_steps >= 0,
         f"train.checkpoint_every_steps must be null, 0 (none) or >= 1, got {cfg.train.checkpoint_every_steps}"),
        (cfg.train.max_steps is None or cfg.train.max_steps >= 1, "train.max_steps must be null or >= 1"),
        (cfg.train.threads is None or cfg.train.threads >= 1, "train.threads must be null or >= 1"),
        (cfg.train.amp_dtype in AMP_DTYPES, f"train.amp_dtype must be one of {', '.join(AMP_DTYPES)}, "
                                            f"got {cfg.train.amp_dtype!r}"),
        (cfg.train.eval_every >= 0, "train.eval_every must be >= 0 (0: no evaluation during training)"),
        (cfg.train.device in ("auto", "cpu", "cuda", "mps") or cfg.train.device.startswith("cuda:"),
         f"train.device must be auto, cpu, cuda, cuda:N or mps, got {cfg.train.device!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    if isinstance(cfg.aug.compile, dict):
        _check_compile_options(cfg.aug.compile, "aug.compile")
    elif isinstance(cfg.aug.compile, str) and cfg.aug.compile != "auto":
        raise ValueError(f"aug.compile must be true, false, auto or a mapping of torch.compile options, "
                         f"got {cfg.aug.compile!r}")
    late = [m for m in o.milestones if m >= o.epochs] if o.schedule == "step" else []
    message = (f"optim.milestones {late} lie at or past the run's end (optim.epochs={o.epochs}): the learning rate is "
               "not lowered there; set optim.milestones to epochs inside the run (e.g. scaled to its length)")
    if late and message not in _WARNED:  # a recipe shortened with optim.epochs alone trained at its first rate
        # throughout, without a word; said once per process (aprkit train validates, then fit again)
        import warnings

        _WARNED.add(message)
        warnings.warn(message, UserWarning, stacklevel=3)
    from ..data.registry import parse_spec, split_spec_options

    for key, spec in (("data.dataset", cfg.data.dataset), ("data.test_dataset", cfg.data.test_dataset)):
        if spec is not None:
            try:
                parse_spec(split_spec_options(expand_env(spec))[0])  # options checked too (?resize=, ?crop=)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{key}: {err}") from None
    test_key = "data.test_dataset" if cfg.data.test_dataset else "data.dataset"
    test_spec = cfg.data.test_dataset or cfg.data.dataset
    if cfg.data.test_resize is not None and test_spec is not None:
        sized = split_spec_options(expand_env(test_spec))[1]
        if sized:  # Resize(test_resize) would zoom the spec's crops a second time
            given = "&".join(f"{k}={v}" for k, v in sized.items())
            raise ValueError(f"{test_key} {test_spec!r} already resizes and crops the test images (?{given}) and "
                             f"data.test_resize={cfg.data.test_resize} would resize them again before the centre "
                             f"crop of {cfg.data.image_size}: set data.test_resize=null, or drop ?{given} from "
                             "the spec")
    return cfg
