"""State_dicts: the tensors inside a loaded checkpoint, strict loading with a clear mismatch report, and the
number of classes a state_dict's classifier holds (shared by native and foreign model loading)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import ImageClassifier
from .normalize import Normalize, find_classifier

__all__ = [
    "CheckpointMismatch", "extract_state_dict", "load_state_dict_into", "num_classes_of", "classes_disagree",
    "pickled_module",
]

#: wrapper prefixes stripped from state_dict keys (DDP/DataParallel, torch.compile)
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointMismatch(ValueError):
    """A checkpoint's weights do not fit the model built for them (missing, unexpected or other-shape keys,
    or no weights at all)."""


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The tensor state_dict inside a loaded checkpoint, with ``module.``/``_orig_mod.`` prefixes removed."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "state_dict_ema"):
            inner = obj.get(key)
            if isinstance(inner, (Mapping, nn.Module)):
                return extract_state_dict(inner)
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        held = (f"a dict with keys {', '.join(map(repr, list(obj)[:8]))}{' ...' if len(obj) > 8 else ''}"
                if isinstance(obj, Mapping) and obj else type(obj).__name__ if obj is not None else "None")
        raise CheckpointMismatch(  # load_model names the file
            f"checkpoint holds no state_dict ({held}): expected a mapping of parameter names to tensors, or a dict "
            "with one under 'state_dict' / 'model_state_dict' / 'model' / 'state_dict_ema'"
        )
    return {_stripped(k): v for k, v in obj.items()}


def _stripped(key: str) -> str:
    """``key`` without its wrapper prefixes (:data:`_PREFIXES`, any number, in any order)."""
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key




def load_state_dict_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, drop_head: bool = False) -> None:
    """Load strictly into ``model`` (or into ``model.inner`` for a ``Normalize`` wrapper and plain keys).

    With ``drop_head`` the classifier weights are skipped when their shape differs (fine-tuning with a
    new number of classes); every other missing or unexpected key raises ``ValueError``.
    """
    target = model
    if isinstance(model, Normalize) and not any(k.startswith("model.") for k in state_dict):
        target = model.inner
    own = target.state_dict()
    # a model whose own keys carry a wrapper prefix (a submodule named module or _orig_mod): the stripped keys of its
    # own state_dict get it back (the model could not load its own file: "missing module.conv.weight")
    back = {_stripped(k): k for k in own if _stripped(k) != k}
    sd = {back[k] if k not in own and k in back else k: v for k, v in state_dict.items()}
    sd = _renamed(sd, getattr(target, "state_dict_aliases", None) or {}, own)
    skipped: list[str] = []
    head = _classifier_or_none(target)
    head_names = {f"{n}.{p}" for n, m in target.named_modules() if m is head for p in ("weight", "bias")}
    # another number of classes: the rows differ, the input width agrees (another width is another backbone)
    widths_agree = all(own[k].shape[1:] == sd[k].shape[1:] for k in head_names & set(sd) & set(own))
    head_diff = sorted((k for k in head_names & set(sd) if k in own and own[k].shape != sd[k].shape),
                       reverse=True) if widths_agree else []
    if head_diff and not drop_head and all(own[k].shape == sd[k].shape for k in set(sd) & set(own) - head_names):
        k = head_diff[0]
        raise CheckpointMismatch(
            f"the checkpoint's classifier {k} has {sd[k].shape[0]} classes but the model was built with "
            f"{own[k].shape[0]}: leave num_classes unset to keep the trained head, or pass drop_head=True "
            "(aprkit eval --drop-head, train: model.drop_head=true) to replace it with a randomly initialised one"
        )
    if drop_head:
        for k in head_diff:
            skipped.append(k)
            del sd[k]
    other_shape = [k for k in sd if k in own and own[k].shape != sd[k].shape]
    mismatched = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in other_shape]
    # pre-1.0 PyTorch files lack BN's num_batches_tracked; BatchNorm fills it in itself
    missing = [k for k in own if k not in sd and k not in skipped and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    if mismatched or missing or unexpected:
        parts = []
        for label, keys in (("shape mismatch", mismatched), ("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{label} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
        sized = [k for k in other_shape if k.split(".")[0] in ("pos_embed", "patch_embed", "stem", "class_token",
                                                                  "encoder")]
        hint = ("; its patch embedding or position embeddings are another size: the checkpoint was made for another "
                "image or patch size. Build the model at that size: load_model(spec, checkpoint=..., img_size=..., "
                "patch_size=...), evaluate(..., model_kwargs={...}), aprkit eval --set model_kwargs.img_size=... "
                "(a config's models.NAME.kwargs), aprkit train's model.kwargs; or save it with "
                "aprkit.models.save_checkpoint, which records the builder's arguments"
                ) if sized else ""
        if not (hint or missing or unexpected):
            hint = _last_layer_hint(target, sd, own, other_shape)
        raise CheckpointMismatch(f"checkpoint does not match {type(target).__name__}: " + "; ".join(parts) + hint)
    target.load_state_dict(sd, strict=False)


def _last_layer_hint(model: nn.Module, sd: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                     differ: list[str]) -> str:
    """When the only keys of another shape are the weight and bias of ``model``'s last layer with parameters, in their
    output count alone: a classifier that is no ``nn.Linear`` (SqueezeNet's convolution), whose class count
    ``num_classes_of`` cannot read, so the message names the ``num_classes`` to build the model with."""
    last = [n for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None][-1:]
    if not last or {k.rpartition(".")[0] for k in differ} != set(last) or any(
            sd[k].shape[1:] != own[k].shape[1:] for k in differ):
        return ""
    n = int(sd[differ[0]].shape[0])
    return (f"; the checkpoint's last layer {last[0]} has {n} outputs where the model's has "
            f"{int(own[differ[0]].shape[0])}: if it is the classifier, build the model with num_classes={n} "
            f"(aprkit eval --num-classes {n}, train: model.num_classes={n})")


def _renamed(sd: dict[str, torch.Tensor], aliases: Mapping[str, str], own: Mapping[str, Any]
             ) -> dict[str, torch.Tensor]:
    """``sd`` with the module names a model accepts under another spelling (``aliases``: other name -> its own, as
    a WRN's ``conv_shortcut`` -> ``convShortcut``) renamed, where the renamed key is the model's and the key is not."""
    if not aliases:
        return sd
    out = {}
    for k, v in sd.items():
        parts = [aliases.get(p, p) for p in k.split(".")]
        new = ".".join(parts)
        out[new if new != k and new in own and k not in own else k] = v
    return out


def _classifier_or_none(model: nn.Module) -> nn.Linear | None:
    """``find_classifier(model)``; ``None`` for a model without an ``nn.Linear`` head (SqueezeNet's is a conv)."""
    try:
        return find_classifier(model)
    except ValueError:
        return None


def num_classes_of(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> int | None:
    """Rows of ``model``'s classifier weight in ``state_dict``, also when its keys carry the ``model.`` prefix of a
    ``Normalize`` wrapper (the state_dict of a model ``load_model`` returned); None when the state_dict has no such
    entry or the model no ``nn.Linear`` classifier."""
    head = _classifier_or_none(model)
    for name, m in model.named_modules():
        if m is head:
            for key in (f"{name}.weight", f"model.{name}.weight"):
                if key in state_dict:
                    return int(state_dict[key].shape[0])
    return None


def classes_disagree(model: nn.Module, num_classes: int | None) -> int | None:
    """The number of classes ``model``'s classifier holds when it is not ``num_classes``; ``None`` when they agree,
    when ``num_classes`` is ``None`` or when the model has no ``nn.Linear`` classifier (the callers' one check)."""
    own = num_classes_of(model.state_dict(), model)
    return own if num_classes is not None and own is not None and own != num_classes else None


def pickled_module(model: nn.Module, path: os.PathLike | str, num_classes: int | None, kwargs: dict,
                   drop_head: bool) -> nn.Module:
    """A whole module saved with ``torch.save(model)``: used as it is. Options that would rebuild it are refused
    (they were ignored), and a module without aprkit's normalisation warns: it receives float [0, 1] images."""
    if kwargs or drop_head:
        given = sorted(kwargs) + (["drop_head"] if drop_head else [])
        raise ValueError(f"{path} holds a whole pickled {type(model).__name__}, used as it is: {', '.join(given)} "
                         "cannot rebuild it; save its state_dict and load that into the architecture instead")
    own = classes_disagree(model, num_classes)
    if own is not None:
        raise ValueError(f"{path} holds a model with {own} classes, not num_classes={num_classes}")
    if not isinstance(model, (Normalize, ImageClassifier)):  # aprkit's own architectures normalise inside
        import warnings

        warnings.warn(f"{path} holds a pickled {type(model).__name__} without aprkit's normalisation: it receives "
                      "float images in [0, 1] as they are; wrap it (aprkit.models.Normalize(model, mean, std)) if it "
                      "expects normalised input", UserWarning, stacklevel=5)
    return model
