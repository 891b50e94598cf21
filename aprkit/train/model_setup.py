"""The model a training run trains: built from ``cfg.model`` (random init or a checkpoint) with hidden-layer APR
attached (:func:`build_model`), and the input statistics with which it normalises its images (:func:`input_stats`,
which APR-P reads for ``aug.pair_space: normalized``)."""

from __future__ import annotations

import torch
from torch import nn

from ..models.normalize import unwrap_model
from .config import Config

__all__ = ["build_model", "input_stats"]


def build_model(cfg: Config) -> nn.Module:
    """The model of ``cfg.model`` in train mode (random init, or weights from ``model.checkpoint``), with hidden-layer
    APR attached at ``feature_apr.layers`` (drawing from the global RNG, which the loop seeds per step)."""
    from ..models import load_model

    model = load_model(cfg.model.name, num_classes=cfg.model.num_classes, checkpoint=cfg.model.checkpoint,
                       random_init=cfg.model.checkpoint is None, drop_head=cfg.model.drop_head,
                       **cfg.model.kwargs).train()
    native = getattr(model, "input_size", None)
    if isinstance(native, tuple) and len(native) == 3:  # the size it is trained at (model.pt records it)
        model.input_size = (native[0], cfg.data.image_size, cfg.data.image_size)
        model.__dict__.pop("input_size_assumed", None)  # trained at it: known
    f = cfg.feature_apr
    if f.layers:
        from ..hidden import attach

        attach(model, f.layers, p=f.p, dims=f.dims, mode=f.mode, lam=f.lam)
    return model


def input_stats(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(mean, std)`` ``(C, 1, 1)`` with which ``model`` normalises its [0, 1] input (aprkit models and the
    ``Normalize`` wrapper of timm / torchvision models hold them as buffers)."""
    inner = unwrap_model(model)
    mean, std = getattr(inner, "mean", None), getattr(inner, "std", None)
    if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)):
        raise ValueError(f"aug.pair_space: normalized recombines the images as the model normalises them, but "
                         f"{type(inner).__name__} holds no mean/std buffers; expected an aprkit model or one wrapped "
                         "in aprkit.models.Normalize (use pair_space: pixels otherwise)")
    return mean.detach(), std.detach()
