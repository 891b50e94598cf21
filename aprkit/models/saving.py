"""Writing checkpoints: ``save_checkpoint`` (atomic), storing the weights with how to rebuild the model as plain data
that :func:`aprkit.models.load_model` reads without unpickling code (the format: :mod:`aprkit.models.checkpoint`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import check_positive_int
from .._io import atomic_torch_save, plain_data
from .foreign import FOREIGN_PREFIXES, Preprocess
from .normalize import unwrap_model
from .registry import create_model, is_model, list_models
from .state_dict import classes_disagree

__all__ = ["save_checkpoint"]


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    arch: str | None = None,
    num_classes: int | None = None,
    extra: Any = None,
) -> Path:
    """Write ``model``'s weights and how to rebuild it to ``path`` atomically (``*.tmp`` then rename).

    ``arch`` defaults to the name ``create_model``/``load_model`` recorded on the model, ``num_classes`` to the
    model's ``num_classes`` attribute. DDP/DataParallel/``torch.compile`` wrappers are stripped. The model's
    ``create_model`` keyword arguments and ``extra`` are stored as plain data, which :func:`load_model` reads
    without unpickling code: NumPy numbers and arrays become Python numbers and lists; anything else that is not a
    number, string, ``None``, tensor or a list/tuple/dict of them is refused (``TypeError``) before writing.
    Returns the path written.
    """
    from .. import __version__

    if not isinstance(model, nn.Module):
        swapped = (" (the arguments are (path, model), the reverse of torch.save's)" if isinstance(path, nn.Module)
                   else "")
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}{swapped}")
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected the path of the checkpoint file to write")
    model = unwrap_model(model)
    recorded = getattr(model, "aprkit_arch", None)
    arch = arch if arch is not None else recorded
    if not isinstance(arch, str) or not (is_model(arch) or arch.startswith(FOREIGN_PREFIXES)):
        raise ValueError(
            f"arch must be a registered aprkit model or 'timm:<name>'/'torchvision:<name>', got {arch!r}; "
            f"registered: {', '.join(list_models())}"
        )
    num_classes = check_positive_int(num_classes if num_classes is not None else getattr(model, "num_classes", None),
                                     "num_classes")
    own = classes_disagree(model, num_classes)
    if own is not None:  # the file would not load back
        raise ValueError(f"num_classes={num_classes} but the model's classifier has {own} classes")
    kwargs = dict(getattr(model, "aprkit_kwargs", {}) or {})
    if is_model(arch) and (not isinstance(recorded, str) or recorded.lower() != arch.lower()):
        _check_arch_fits(model, arch, num_classes, kwargs)
    payload: dict[str, Any] = {
        "format": "aprkit",
        "arch": arch,
        "num_classes": num_classes,
        "kwargs": plain_data(kwargs, "the model's create_model keyword arguments"),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "aprkit_version": __version__,
        "extra": plain_data(extra, "extra"),
    }
    for name in ("mean", "std"):
        buf = getattr(model, name, None)
        if isinstance(buf, torch.Tensor):
            payload[name] = buf.detach().cpu().flatten().tolist()
    if isinstance(model, Preprocess):  # the authors' evaluation resize and crop of a pretrained foreign model
        payload["preprocess"] = {"resize": model.resize, "crop": model.crop, "interpolation": model.interpolation,
                                 "crop_mode": model.crop_mode}
    size = getattr(model, "input_size", None)
    if isinstance(size, (tuple, list)) and all(isinstance(v, int) for v in size) \
            and not getattr(model, "input_size_assumed", False):  # trained at (aprkit train sets it), not a guess
        payload["input_size"] = [int(v) for v in size]
    # batch-norm eps is no state_dict entry; folded checkpoints set it to FOLDED_BN_EPS (``fold_bn_compat``)
    payload["bn_eps"] = {n: float(m.eps) for n, m in model.named_modules()
                         if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    return atomic_torch_save(payload, path)


def _check_arch_fits(model: nn.Module, arch: str, num_classes: int, kwargs: dict) -> None:
    """Refuse to write a checkpoint named ``arch`` whose weights ``arch`` cannot load (the file would not load back):
    the state_dict keys and shapes of ``create_model(arch, ...)`` against the model's."""
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is not advanced by the initialisation
            ref = create_model(arch, num_classes=num_classes, **kwargs).state_dict()
    except (TypeError, ValueError):  # the model's keyword arguments do not fit arch: the key check below cannot run
        raise ValueError(f"the model cannot be rebuilt as arch={arch!r} with its keyword arguments {kwargs}, so the "
                         "checkpoint would not load back; pass the architecture the model was built as") from None
    own = model.state_dict()
    missing = [k for k in ref if k not in own]
    unexpected = [k for k in own if k not in ref]
    shapes = [k for k in ref if k in own and tuple(ref[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        groups = (("missing", missing), ("unexpected", unexpected), ("other shapes", shapes))
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for label, keys in groups if keys]
        raise ValueError(f"the model's weights do not fit arch={arch!r} ({'; '.join(parts)}), so the checkpoint would "
                         f"not load back; pass the architecture the model was built as")

