"""The models of an evaluation: a module or a spec loaded, placed on the device (in one pass, only when needed),
given rank 0's weights under ``torchrun``, the label a model without a ``model_id`` is shown with, and their memory
layout: channels_last unless a model's forward pass failed in it (:func:`wants_channels_last`,
:func:`retry_contiguous`)."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..._tensors import same_device
from ...distributed import group_info

__all__ = ["check_model_kwargs", "load_eval_model", "place_model", "display_name", "has_conv", "sync_weights",
           "dtype_mismatch", "wants_channels_last", "retry_contiguous"]


#: ``load_model``'s own parameters: no builder argument of that name reaches the builder
_LOAD_PARAMS = ("spec", "num_classes", "checkpoint", "device", "weights_only", "random_init", "drop_head")


def check_model_kwargs(model_kwargs: Any, models: Any, where: str = "model_kwargs") -> dict[str, Any]:
    """``model_kwargs`` (builder arguments of the models given as specs) as a dict, checked: a mapping with string
    keys, none of them one of ``load_model``'s own parameters, and refused when any model of ``models`` (a model or a
    mapping of them) is a built ``nn.Module``, which takes none."""
    if model_kwargs is None:
        return {}
    if not isinstance(model_kwargs, Mapping) or not all(isinstance(k, str) for k in model_kwargs):
        raise ValueError(f"{where} must be a mapping of builder arguments such as {{img_size: 32, patch_size: 4}}, "
                         f"got {model_kwargs!r}")
    own = [k for k in model_kwargs if k in _LOAD_PARAMS]
    if own:
        raise ValueError(f"{where} sets {', '.join(own)}: a setting of the evaluation, not a builder argument; give it "
                         "as its own setting (e.g. num_classes: 100, checkpoint: FILE)")
    built = [m for m in (models.values() if isinstance(models, Mapping) else [models]) if isinstance(m, nn.Module)]
    if model_kwargs and built:
        raise ValueError(f"{where} ({', '.join(model_kwargs)}) are builder arguments of a model given as a spec, but "
                         f"{type(built[0]).__name__} is an nn.Module, built already; build it with those arguments "
                         "instead")
    return dict(model_kwargs)


def load_eval_model(model: Any, num_classes: int | None, checkpoint: str | None, device: torch.device,
                    random_init: bool = False, drop_head: bool = False, seed: int = 0,
                    model_kwargs: Mapping[str, Any] | None = None) -> tuple[nn.Module, str]:
    """An ``nn.Module`` from a module or a spec (via ``aprkit.models.load_model``, given ``model_kwargs``, the
    builder's arguments) plus a display name. Weights it draws (``random_init``, a new head with ``drop_head``) come
    from ``seed`` (the run's), not the global RNG, so that a rerun or a resume evaluates the same network."""
    kwargs = dict(model_kwargs or {})
    if random_init or drop_head:
        with torch.random.fork_rng(devices=[]):  # the CPU generator only (weights are drawn there), restored after
            torch.default_generator.manual_seed(seed)
            return _load_eval_model(model, num_classes, checkpoint, device, random_init, drop_head, kwargs)
    return _load_eval_model(model, num_classes, checkpoint, device, random_init, drop_head, kwargs)


def _load_eval_model(model: Any, num_classes: int | None, checkpoint: str | None, device: torch.device,
                     random_init: bool, drop_head: bool, kwargs: dict[str, Any]) -> tuple[nn.Module, str]:
    if isinstance(model, nn.Module):
        if checkpoint is not None:
            from aprkit.models import load_model

            loaded = load_model(model, num_classes=num_classes, checkpoint=checkpoint, device=device,
                                drop_head=drop_head)
            return loaded, display_name(model)
        return place_model(model, device), display_name(model)
    if isinstance(model, (str, Path)):
        from aprkit.models import load_model

        net = load_model(str(model), num_classes=num_classes, checkpoint=checkpoint, device=device,
                         random_init=random_init, drop_head=drop_head, **kwargs)
        # what was evaluated, for the provenance: the spec, its builder arguments and the weights file read with it
        source = str(model) + (f" ({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})" if kwargs else "") + (
            f", checkpoint {checkpoint}" if checkpoint is not None else "") + (
            ", random weights" if random_init and checkpoint is None else "")
        # private: public plain attributes are hashed into the model's fingerprint, and a path must not move it
        setattr(net, "_aprkit_source", source)  # noqa: B010
        return net, display_name(model)
    raise TypeError("model must be an nn.Module, a model spec string (e.g. 'resnet20', 'timm:resnet50', a .th file) "
                    f"or a mapping name -> model; got {type(model).__name__}")


#: checkpoint file stems that name no model (``aprkit train`` writes ``model.pt`` and ``last.pt`` in every run folder)
_GENERIC_STEMS = frozenset({"model", "last", "best", "final", "checkpoint", "ckpt", "weights", "model_best",
                            "state_dict", "pytorch_model"})


def display_name(model: Any) -> str:
    """The label of a model without a ``model_id``: a checkpoint's file stem (``FOLDER/STEM`` for a stem such as
    ``model`` or ``last``, so that two training runs evaluated into one folder keep apart), a spec's name or the
    class name; a module that ``load_model`` built from a spec is labelled by that spec."""
    model = getattr(model, "_aprkit_spec", None) or model if isinstance(model, nn.Module) else model
    if isinstance(model, (str, Path)):
        spec = str(model)
        if not spec.endswith((".th", ".pth", ".pt", ".ckpt")):
            return spec.split(":")[-1]
        path = Path(spec)
        folder = path.absolute().parent.name
        return f"{folder}/{path.stem}" if path.stem.lower() in _GENERIC_STEMS and folder else path.stem
    return type(model).__name__


def dtype_mismatch(model: nn.Module, err: BaseException) -> ValueError | None:
    """The clear error for PyTorch's input/weight dtype mismatch ``err`` of a model whose parameters are not all
    float32 (``model.half()``, ``.double()``), or ``None`` for any other error: the evaluation feeds float32 images;
    mixed precision is its ``amp`` option. A model that casts its input itself (a bfloat16 net behind a ``.to()``)
    or holds a float64 scalar runs as it is."""
    text = str(err)
    if not any(s in text for s in ("should be the same", "expected scalar type", "same dtype", "dtype mismatch")):
        return None
    kinds = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()
                    if p.is_floating_point() and p.dtype != torch.float32})
    if not kinds:
        return None
    return ValueError(f"the model's parameters are {' and '.join(kinds)} and it fails on float32 input "
                      f"({text.splitlines()[0]}); aprkit evaluates float32 models (it feeds float32 images in [0, 1]): "
                      "pass the float32 model (model.float()) and amp=True (aprkit eval --amp) for mixed precision "
                      "(float16 on CUDA, bfloat16 on the CPU)")


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def place_model(model: nn.Module, device: torch.device, channels_last: bool = False) -> nn.Module:
    """``model`` on ``device`` (with ``channels_last``: its 4-d weights in that layout), in one ``Module.to``
    pass and only when some parameter or buffer is not there yet (an evaluated model usually already is;
    a conversion gives the weights new storage, so the fingerprint would be hashed again)."""
    tensors = [*model.parameters(), *model.buffers()]
    moved = any(not same_device(d, device) for d in {t.device for t in tensors})
    cl = torch.channels_last
    # a model holding 5-d weights (Conv3d) is left as it is: torch converts a module to channels_last only when its
    # tensors all have at most 4 dimensions ("required rank 4 tensor to use channels_last format")
    if (channels_last and not any(t.ndim == 5 for t in tensors)
            and any(t.ndim == 4 and not t.is_contiguous(memory_format=cl) for t in tensors)):
        # one conversion pass; torch's stub overloads of Module.to lack (device, memory_format) together
        return model.to(device, memory_format=cl)  # type: ignore[call-overload]
    return model.to(device) if moved else model


def sync_weights(model: nn.Module) -> None:
    """Under torch.distributed, give every rank rank 0's parameters and buffers (e.g. a random init)."""
    if group_info()[1] > 1:
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                torch.distributed.broadcast(t.data, src=0)


#: models whose forward pass failed under channels_last (any RuntimeError that a contiguous retry cured)
_NO_CHANNELS_LAST: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def wants_channels_last(model: nn.Module, requested: bool) -> bool:
    """``requested``, unless ``model`` already failed under channels_last in this process.

    For such a model the parameters are (again) put in the contiguous layout, in case a caller converted
    them back to channels_last since (``evaluate`` does for every run).
    """
    if not requested:
        return False
    if model in _NO_CHANNELS_LAST:
        with torch.inference_mode(False):
            model.to(memory_format=torch.contiguous_format)
        return False
    return True


def retry_contiguous(model: nn.Module, exc: RuntimeError, retry: Callable[[], Any]) -> Any:
    """After ``exc`` under channels_last: restore ``model``'s parameters to the contiguous layout and ``retry()``.

    When the retry succeeds, warns once and remembers the model (later calls run contiguous); when it fails
    too, the failure was not the layout and the original ``exc`` is raised.
    """
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        raise exc
    with torch.inference_mode(False):  # parameters made in inference mode could not take part in autograd (ODIN)
        model.to(memory_format=torch.contiguous_format)
    try:
        out = retry()
    except RuntimeError:
        raise exc from None
    warnings.warn(
        f"{type(model).__name__}'s forward pass fails under channels_last ({str(exc).splitlines()[0]}); "
        "evaluating it in the contiguous layout instead. Pass channels_last=False (--no-channels-last) to skip "
        "this retry.",
        RuntimeWarning, stacklevel=3,
    )
    _NO_CHANNELS_LAST.add(model)
    return out
