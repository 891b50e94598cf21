"""Checkpoints: ``load_model`` (one entry point for every model spec) and ``read_checkpoint``; writing is
:mod:`aprkit.models.saving` (``save_checkpoint``, re-exported here).

An aprkit checkpoint is a ``torch.save``d dict::

    {"format": "aprkit", "arch": str, "num_classes": int, "kwargs": dict, "mean": [..], "std": [..],
     "state_dict": {...}, "aprkit_version": str, "extra": Any}

``arch`` is a registered aprkit name or a foreign spec (``timm:<name>``, ``torchvision:<name>``).
``load_model`` also reads the legacy ``pytorch_resnet_cifar10`` files (``{"state_dict", "best_prec1"}``
with ``module.``-prefixed keys; arch inferred from ``resnet20/32/44/56/110`` in the file name), bare
state_dicts, and dicts with the weights under ``state_dict``/``model``/``model_state_dict``.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import check_positive_int
from .._io import check_zip_intact
from .foreign import FOLDED_BN_EPS, FOREIGN_PREFIXES, Preprocess, create_foreign
from .normalize import Normalize, unwrap_model
from .registry import checkpoint_kwargs, create_model, is_model, list_models, tag_model
from .saving import save_checkpoint
from .state_dict import (
    CheckpointMismatch,
    classes_disagree,
    extract_state_dict,
    load_state_dict_into,
    num_classes_of,
    pickled_module,
)

__all__ = ["save_checkpoint", "load_model", "read_checkpoint", "extract_state_dict", "load_state_dict_into"]

#: the ``format`` of ``aprkit train``'s resumable state (``last.pt``): its weights load as a model too
TRAIN_STATE_FORMAT = "aprkit-train/1"
_LEGACY_ARCH = re.compile(r"resnet(20|32|44|56|110)(?!\d)", re.IGNORECASE)


def read_checkpoint(path: str | os.PathLike, *, weights_only: bool = True) -> Any:
    """``torch.load`` on the CPU (``~`` expanded); a missing, truncated, corrupted or non-checkpoint file is a clear
    error."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        hint = " (no checkpoint is written null or ~ in a config or --set)" if str(path) in ("None", "none") else ""
        raise FileNotFoundError(f"checkpoint file {what}: {path}{hint}")
    check_zip_intact(path, "its weights would load wrong; copy or download the file again")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # zip/pickle/EOF errors of junk files, pickled classes beyond weights
        glob = re.search(r"GLOBAL ([\w.]+)", str(e))  # both of torch's wordings
        if weights_only and glob:
            raise ValueError(
                f"checkpoint {path} holds pickled Python objects ({glob.group(1)}), not only weights; save the "
                "weights instead (aprkit.models.save_checkpoint or torch.save(model.state_dict(), path)), or, for "
                "a file you trust (unpickling can run code), load it with load_model(..., weights_only=False)"
            ) from None
        size = path.stat().st_size
        raise ValueError(
            f"{path} is not a valid checkpoint ({'empty file' if size == 0 else f'{size} bytes'} that torch.load "
            "cannot read: truncated, corrupted or not a PyTorch file); expected a file written by torch.save or "
            "aprkit.models.save_checkpoint"
        ) from None


def _build_arch(arch: str, num_classes: int | None, kwargs: dict, checkpoint_num_classes: int | None) -> nn.Module:
    n = num_classes if num_classes is not None else checkpoint_num_classes
    if arch.startswith(FOREIGN_PREFIXES):
        return create_foreign(arch, num_classes=n, **kwargs)
    return create_model(arch, num_classes=n, **kwargs)


def _no_weights(spec: str) -> ValueError:
    return ValueError(
        f"model {spec!r} has no trained weights: pass checkpoint=PATH (aprkit eval --checkpoint FILE) to load them, "
        "or random_init=True (--random-init) to use an untrained, randomly initialised model on purpose"
    )


def _from_train_state(obj: Mapping[str, Any], path: str | os.PathLike, num_classes: int | None, kwargs: dict,
                      expected_arch: str | None = None, drop_head: bool = False) -> nn.Module:
    """The weights of ``aprkit train``'s resumable state (``last.pt``: the last finished epoch, or the step a stop
    interrupted), built as its config names the model."""
    spec = (obj.get("config") or {}).get("model") or {}
    arch = spec.get("name")
    if not isinstance(arch, str) or not isinstance(obj.get("model"), Mapping):
        raise ValueError(f"{path} is an aprkit training state without its model's name or weights; expected the "
                         "last.pt that aprkit train writes")
    if expected_arch is not None and expected_arch.lower() != arch.lower():
        raise ValueError(f"checkpoint holds a {arch!r} model, not {expected_arch!r}")
    kw = {**checkpoint_kwargs(arch, dict(spec.get("kwargs") or {}), obj["model"]), **kwargs}
    model = _build_arch(arch, num_classes, kw, spec.get("num_classes"))
    load_state_dict_into(model, obj["model"], drop_head=drop_head)
    _keep_classes(model, obj.get("classes"), drop_head)
    return tag_model(model, arch, kw)


def _from_own_format(obj: Any, path: str | os.PathLike, num_classes: int | None, kwargs: dict,
                     expected_arch: str | None = None, drop_head: bool = False) -> nn.Module | None:
    """The model of a checkpoint aprkit wrote (``save_checkpoint``'s ``"aprkit"`` format, or ``aprkit train``'s
    resumable state), or None for any other file."""
    fmt = obj.get("format") if isinstance(obj, Mapping) else None
    if fmt == "aprkit":
        return _from_aprkit(obj, num_classes, kwargs, expected_arch=expected_arch, drop_head=drop_head)
    if fmt == TRAIN_STATE_FORMAT:
        return _from_train_state(obj, path, num_classes, kwargs, expected_arch=expected_arch, drop_head=drop_head)
    return None


def _load_aprkit_arch(arch: str, num_classes: int | None, path: str | os.PathLike | None, weights_only: bool,
                      kwargs: dict, random_init: bool = False, drop_head: bool = False) -> nn.Module:
    if path is None:
        if not random_init:
            raise _no_weights(arch)
        return create_model(arch, num_classes=num_classes, **kwargs)
    obj = read_checkpoint(path, weights_only=weights_only)
    own = _from_own_format(obj, path, num_classes, kwargs, expected_arch=arch, drop_head=drop_head)
    if own is not None:
        return own
    sd = extract_state_dict(obj)
    kwargs = checkpoint_kwargs(arch, kwargs, sd, recorded=False)
    model = create_model(arch, **kwargs)
    n = num_classes if num_classes is not None else num_classes_of(sd, model)
    if n is not None and n != getattr(model, "num_classes", None):
        model = create_model(arch, num_classes=n, **kwargs)
    try:
        load_state_dict_into(model, sd, drop_head=drop_head)
    except CheckpointMismatch as err:  # a CIFAR ResNet of another depth: named (the key lists do not say it)
        depth = _cifar_resnet_depth(sd) if _LEGACY_ARCH.fullmatch(arch.lower()) else None
        if depth is None or f"resnet{depth}" == arch.lower():
            raise
        raise CheckpointMismatch(f"{path} holds the weights of a resnet{depth} (its stages have {(depth - 2) // 6} "
                                 f"blocks each), not of {arch}: pass resnet{depth} ({err})") from err
    _warn_default_half_stats(model, arch, path, kwargs)
    return model


def _warn_default_half_stats(model: nn.Module, arch: str, path: str | os.PathLike, kwargs: Mapping[str, Any]) -> None:
    """A plain state dict records no normalisation: for the architectures whose default is AugMix's ``[-1, 1]``
    (mean = std = 0.5), say so, since the APR code trained the same architectures with CIFAR-10's statistics (its
    checkpoints lose several points of accuracy with the wrong ones)."""
    import warnings

    from .base import HALF_MEAN, HALF_STD

    if "mean" in kwargs or "std" in kwargs:
        return
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor) and mean.numel() == std.numel() == 3):
        return
    if mean.flatten().tolist() == list(HALF_MEAN) and std.flatten().tolist() == list(HALF_STD):
        warnings.warn(f"{os.fspath(path)} is a plain state dict, which records no input normalisation: {arch} "
                      "assumes its default mean = std = 0.5 (AugMix's preprocessing, and aprkit's own default). "
                      "Weights trained otherwise need their mean/std (the APR code's: mean=aprkit.models.CIFAR10_MEAN, "
                      "std=aprkit.models.APR_CIFAR_STD): load_model(..., mean=..., std=...), and save_checkpoint "
                      "records them for aprkit eval --model", UserWarning, stacklevel=4)


def _from_aprkit(obj: Mapping[str, Any], num_classes: int | None, kwargs: dict, expected_arch: str | None = None,
                 drop_head: bool = False) -> nn.Module:
    arch = obj["arch"]
    if expected_arch is not None and expected_arch.lower() != str(arch).lower():
        raise ValueError(f"checkpoint holds a {arch!r} model, not {expected_arch!r}")
    kw = {**checkpoint_kwargs(arch, dict(obj.get("kwargs") or {}), obj.get("state_dict")), **kwargs}
    # a robustbench model: its architecture alone (the file's weights load below), not the zoo's download
    zoo = {"state_dict": extract_state_dict(obj)} if str(arch).startswith("robustbench:") else {}
    model = _build_arch(arch, num_classes, {**kw, **zoo}, obj.get("num_classes"))
    pre = obj.get("preprocess")
    if isinstance(pre, Mapping) and isinstance(model, Normalize) and not isinstance(model, Preprocess):
        model = Preprocess(model.inner, model.mean.tolist(), model.std.tolist(), num_classes=model.num_classes,
                           **dict(pre))
    load_state_dict_into(model, extract_state_dict(obj), drop_head=drop_head)
    _apply_stored(model, obj, kwargs)
    extra = obj.get("extra")
    _keep_classes(model, extra.get("classes") if isinstance(extra, Mapping) else None, drop_head)
    return tag_model(model, arch, kw)


def _keep_classes(model: nn.Module, names: Any, drop_head: bool) -> None:
    """Record the training data's class names that ``aprkit train`` saved with the weights (``model.pt``'s extra,
    ``last.pt``'s ``classes``) on ``model`` as ``aprkit_classes``: an evaluation checks its data against them."""
    if isinstance(names, list) and names and not drop_head:
        setattr(model, "aprkit_classes", [str(c) for c in names])  # noqa: B010 (nn.Module.__setattr__ is typed for tensors)


def _apply_stored(model: nn.Module, obj: Mapping[str, Any], kwargs: Mapping[str, Any]) -> None:
    """What an aprkit checkpoint holds beside the state_dict and its weights depend on: the batch-norm eps and the
    normalisation (``mean``/``std``, unless the caller passed its own in ``kwargs``)."""
    modules = dict(model.named_modules())
    for name, eps in dict(obj.get("bn_eps") or {}).items():
        layer = modules.get(name)
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eps = float(eps) if float(eps) > 0 else FOLDED_BN_EPS  # older checkpoints of folded BNs stored 0
    size = obj.get("input_size")
    if isinstance(size, list) and isinstance(getattr(model, "input_size", None), tuple):  # the size it was trained at
        setattr(model, "input_size", tuple(int(v) for v in size))  # noqa: B010 (nn.Module.__setattr__ is typed for tensors)
        model.__dict__.pop("input_size_assumed", None)  # recorded by the run that made it: known now
    for name in ("mean", "std"):
        buf = getattr(model, name, None)
        if name in obj and name not in kwargs and isinstance(buf, torch.Tensor) and buf.numel() == len(obj[name]):
            with torch.no_grad():
                buf.copy_(torch.as_tensor(obj[name], dtype=buf.dtype).view_as(buf))


def _load_file(path: Path, num_classes: int | None, weights_only: bool, kwargs: dict, drop_head: bool) -> nn.Module:
    obj = read_checkpoint(path, weights_only=weights_only)
    if isinstance(obj, nn.Module):
        return pickled_module(obj, path, num_classes, kwargs, drop_head)
    own = _from_own_format(obj, path, num_classes, kwargs, drop_head=drop_head)
    if own is not None:
        return own
    match = _LEGACY_ARCH.search(path.name)
    depth = _cifar_resnet_depth(obj) if match is not None else None  # a name says "legacy CIFAR ResNet", not its depth
    if depth is not None and match is not None and int(match.group(1)) != depth:
        warnings.warn(f"{path.name} is named {match.group(0)} but holds the weights of a resnet{depth} (its stages "
                      f"have {(depth - 2) // 6} blocks each): loaded as resnet{depth}", UserWarning, stacklevel=4)
        return _load_aprkit_arch(f"resnet{depth}", num_classes, path, weights_only, kwargs, drop_head=drop_head)
    if match is None:
        raise ValueError(
            f"cannot tell the architecture of {path}: it is not an aprkit checkpoint and its name contains none of "
            f"resnet20/32/44/56/110; pass the architecture, e.g. load_model('ARCH', checkpoint={str(path)!r}) (aprkit "
            f"eval --model ARCH --checkpoint {path}; ARCH: resnet20, torchvision:mobilenet_v2, timm:NAME, ...)"
        )
    try:
        return _load_aprkit_arch(f"resnet{match.group(1)}", num_classes, path, weights_only, kwargs,
                                 drop_head=drop_head)
    except CheckpointMismatch as err:  # the architecture was a guess from the file name: say so
        raise CheckpointMismatch(
            f"the architecture resnet{match.group(1)} (a CIFAR ResNet) was taken from the file name and its weights "
            f"do not fit it ({err}); pass the architecture, e.g. load_model('ARCH', checkpoint={str(path)!r}) (aprkit "
            f"eval --model ARCH --checkpoint {path})") from err


def _cifar_resnet_depth(obj: Any) -> int | None:
    """The depth of the CIFAR ResNet (6 n + 2, option-A shortcuts) whose legacy weights ``obj`` holds, from its
    blocks per stage (``layer1.<i>.``, ``layer3.<i>.``), or ``None`` when they are not such a network's."""
    try:
        sd = extract_state_dict(obj)
    except (TypeError, ValueError, KeyError):
        return None
    blocks: dict[str, set[int]] = {}
    for key in sd:
        m = re.match(r"^(?:module\.)?(layer[123])\.(\d+)\.conv1\.weight$", str(key))
        if m:
            blocks.setdefault(m.group(1), set()).add(int(m.group(2)))
    counts = {len(v) for v in blocks.values()}
    if len(blocks) != 3 or len(counts) != 1 or any(k.startswith(("layer4", "module.layer4")) for k in map(str, sd)):
        return None
    depth = 6 * counts.pop() + 2
    return depth if depth in (20, 32, 44, 56, 110) else None


def _load_into_module(model: nn.Module, num_classes: int | None, checkpoint: str | os.PathLike | None,
                      weights_only: bool, random_init: bool, drop_head: bool) -> nn.Module:
    """A module given as the spec: used with the weights it holds, or with ``checkpoint``'s loaded into it (strictly;
    ``drop_head`` skips a classifier of another size; an aprkit checkpoint's normalisation and batch-norm eps too).
    ``num_classes`` must agree with its classifier."""
    if random_init:
        raise ValueError("random_init=True applies to model names; a module is used with the weights it holds (or "
                         "with checkpoint='s)")
    target = unwrap_model(model)
    if checkpoint is not None:
        obj = read_checkpoint(checkpoint, weights_only=weights_only)
        load_state_dict_into(target, extract_state_dict(obj), drop_head=drop_head)
        given = getattr(target, "aprkit_kwargs", None) or {}  # mean= given at build: kept
        if isinstance(obj, Mapping) and obj.get("format") == "aprkit":  # as loading by name: its normalisation too
            _apply_stored(target, obj, given)
        elif isinstance(obj, Mapping) and obj.get("format") == TRAIN_STATE_FORMAT:  # last.pt: its config's model
            built = ((obj.get("config") or {}).get("model") or {}).get("kwargs") or {}  # kwargs name its normalisation
            _apply_stored(target, {k: built[k] for k in ("mean", "std") if k in built}, given)
    own = classes_disagree(target, num_classes)
    if own is not None:
        raise ValueError(f"the model's classifier has {own} classes but num_classes={num_classes} was given; a module "
                         "is used as it is: build it with that many classes or leave num_classes unset")
    return model


def load_model(
    spec: nn.Module | str | os.PathLike,
    num_classes: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    weights_only: bool = True,
    random_init: bool = False,
    drop_head: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Any model spec -> an ``nn.Module`` in eval mode on ``device`` taking float images in [0, 1].

    ``spec`` is an ``nn.Module`` (used with its weights, or with ``checkpoint``'s loaded strictly), an aprkit
    architecture name (``"resnet20"``; weights from ``checkpoint``, random only with ``random_init=True``), a path
    to an aprkit or legacy ``pytorch_resnet_cifar10`` checkpoint, ``"timm:<name>"`` / ``"torchvision:<name>"`` (the
    published pretrained weights through the library's cache, with the authors' preprocessing; a local
    ``checkpoint`` overrides) or
    ``"robustbench:[<dataset>/<threat>/]<name>"`` (robustbench's model zoo into ``model_dir=``, default
    ``data_root()/robustbench``; ``checkpoint=`` a weights file, loaded wherever it lies, or a ``model_dir``
    folder; needs the optional robustbench package).
    Extra keyword arguments go to the model builder.

    Untrained weights are never used silently: an aprkit architecture name without ``checkpoint`` raises
    unless ``random_init=True`` (which also gives timm and torchvision specs random weights; robustbench specs
    refuse it), and a checkpoint whose
    classifier has another number of classes than ``num_classes`` raises unless ``drop_head=True`` (a new,
    random head).
    """
    if random_init and checkpoint is not None:
        raise ValueError("random_init=True asks for untrained weights but checkpoint= was given too; pass one of them")
    if num_classes is not None:  # every spec kind: the foreign builders took 0 for "the default head"
        num_classes = check_positive_int(num_classes, "num_classes")
    if checkpoint is not None:
        checkpoint = Path(checkpoint).expanduser()
    # weights that will be loaded make the random initialisation moot: it draws from a copy of the caller's stream,
    # which is not advanced (a random_init model, or a new head of drop_head, draws from the stream itself, as a
    # module built by hand does: two loads get two heads)
    loaded = not random_init and not drop_head and not isinstance(spec, nn.Module)
    try:
        with torch.random.fork_rng(devices=[]) if loaded else contextlib.nullcontext():
            model = _build(spec, num_classes, checkpoint, weights_only, random_init, drop_head, kwargs)
    except CheckpointMismatch as err:  # the file and the model it was loaded into, in every spec's message
        source = checkpoint if checkpoint is not None else spec if isinstance(spec, (str, os.PathLike)) else None
        if source is None:
            raise
        what = (f"{os.fspath(spec)!r} from {os.fspath(source)!r}" if checkpoint is not None
                and isinstance(spec, (str, os.PathLike)) else repr(os.fspath(source)))
        raise CheckpointMismatch(f"{what}: {err}") from None
    except TypeError as err:  # a misspelt builder argument: name it as the caller gave it
        found = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        bad = getattr(err, "argument", None) or (found.group(1) if found else None)  # create_model's, or another's
        if bad is None or bad not in kwargs:
            raise
        name = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else type(spec).__name__
        hint = getattr(err, "hint", None)
        raise TypeError(f"model {name!r} takes no argument {bad!r} (a keyword of load_model; in a training config "
                        f"model.kwargs.{bad})" + (hint if hint is not None else f": {err}")) from None
    if isinstance(spec, (str, os.PathLike)):
        # evaluate labels a model read from a file by that file and one built from a spec by its name (timm:vit_...:
        # vit_..., not the wrapper's class Normalize), as aprkit eval --model does
        setattr(model, "_aprkit_spec", os.fspath(spec))  # noqa: B010  (private: not hashed into the fingerprint)
    return model.to(device).eval()


#: builder arguments of timm / torchvision that choose the weights: load_model's own choice (see _build; torchvision's
#: weights= is taken where the published weights load)
_WEIGHT_CHOICES = frozenset({"pretrained", "weights", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                             "state_dict"})


def _build(spec: nn.Module | str | os.PathLike, num_classes: int | None, checkpoint: Path | None, weights_only: bool,
           random_init: bool, drop_head: bool, kwargs: dict) -> nn.Module:
    """:func:`load_model`'s dispatch on the kind of ``spec`` (arguments checked there)."""
    if isinstance(spec, nn.Module):
        model = _load_into_module(spec, num_classes, checkpoint, weights_only, random_init, drop_head)
    elif isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if not text.strip():
            raise ValueError("model spec is empty; expected an aprkit architecture, a checkpoint file or "
                             "'timm:<name>' / 'torchvision:<name>' / 'robustbench:<name>'")
        if text.startswith(FOREIGN_PREFIXES):
            # torchvision's weights= picks which published weights load (the default path only)
            published = checkpoint is None and not random_init and text.startswith("torchvision:")
            chosen = sorted(k for k in kwargs if k in _WEIGHT_CHOICES and not (k == "weights" and published))
            if chosen:  # random_init=True with pretrained=True loaded the published weights, recorded as random
                raise ValueError(
                    f"builder argument{'s' if len(chosen) > 1 else ''} {', '.join(chosen)} of {text}: which weights "
                    "load is load_model's choice, not the builder's: the published ones by default, random ones with "
                    "random_init=True (--random-init), a file's with checkpoint=FILE (--checkpoint); drop "
                    f"{'them' if len(chosen) > 1 else 'it'} (torchvision's weights=NAME picks among the published "
                    "ones)")
            if checkpoint is not None and not text.startswith("robustbench:"):
                obj = read_checkpoint(checkpoint, weights_only=weights_only)
                own = _from_own_format(obj, checkpoint, num_classes, kwargs, expected_arch=text, drop_head=drop_head)
                model = own if own is not None else create_foreign(
                    text, num_classes=num_classes, state_dict=extract_state_dict(obj), drop_head=drop_head, **kwargs)
            elif random_init and text.startswith("robustbench:"):
                raise ValueError(f"{text} loads robustbench's published weights (or checkpoint='s); random_init=True "
                                 "has no robustbench model to build: build the architecture by name (an aprkit model, "
                                 "timm:NAME or torchvision:NAME) with random_init=True instead")
            elif random_init or text.startswith("robustbench:"):
                model = create_foreign(text, num_classes=num_classes, checkpoint=checkpoint, drop_head=drop_head,
                                       **kwargs)
            else:  # the library's published weights, through its own cache
                model = create_foreign(text, num_classes=num_classes, pretrained=True, drop_head=drop_head, **kwargs)
        elif re.match(r"^[A-Za-z][\w.-]+:", text) and not Path(text).exists():
            lib = text.split(":", 1)[0]
            raise ValueError(
                f"unknown model library {lib!r} in {text!r}; expected one of {', '.join(FOREIGN_PREFIXES)}"
            )
        elif is_model(text):
            model = _load_aprkit_arch(text, num_classes, checkpoint, weights_only, kwargs, random_init, drop_head)
        elif Path(text).expanduser().is_file():
            if checkpoint is not None:
                raise ValueError("give either a checkpoint path as spec or checkpoint=, not both")
            if random_init:
                raise ValueError(f"random_init=True asks for untrained weights but {text!r} is a checkpoint file; pass "
                                 "the architecture name with random_init=True instead")
            model = _load_file(Path(text).expanduser(), num_classes, weights_only, kwargs, drop_head)
        else:
            from .._text import nearest_names

            path = Path(text).expanduser()
            if path.is_dir():
                found = [n for n in ("model.pt", "last.pt") if (path / n).is_file()]  # an aprkit train run's
                hint = f", e.g. {str(path / found[0])!r}" if found else ""
                raise IsADirectoryError(f"model spec {text!r} is a folder; expected a checkpoint file in it{hint}")
            if path.suffix.lower() in (".th", ".pt", ".pth", ".ckpt", ".bin", ".safetensors") or "/" in text \
                    or os.sep in text:
                raise FileNotFoundError(f"model checkpoint {text!r} does not exist (it reads as a file path: "
                                        f"{str(path.absolute())!r})")
            valid = list_models()
            raise ValueError(
                f"unknown model spec {text!r}{nearest_names(text.lower(), valid)}: expected an aprkit architecture "
                f"({', '.join(valid)}), an existing checkpoint file, or 'timm:<name>' / 'torchvision:<name>' / "
                "'robustbench:<name>'"
            )
    else:
        raise TypeError(f"spec must be an nn.Module, a model name or a checkpoint path, got {type(spec).__name__}")
    return model
