"""torchvision's ``tv_tensors`` (``Image``, ``Video``, ...) through aprkit's tensor transforms, without importing
torchvision: a transform handed an ``Image`` hands back an ``Image``, as torchvision's own transforms do (torch ops
on a ``tv_tensors`` subclass return plain tensors, and a batch left unchanged came back as the input object, so the
type of the result depended on the draw)."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["draw_groups", "is_tv_tensor", "is_video", "like_input"]


def is_tv_tensor(x: Any) -> bool:
    """Whether ``x`` is one of torchvision's ``tv_tensors`` (checked by its module: torchvision is not imported)."""
    return isinstance(x, torch.Tensor) and type(x).__module__.startswith("torchvision.tv_tensors")


def is_video(x: Any) -> bool:
    """Whether ``x`` is a ``tv_tensors.Video`` (its frames share one draw, as in torchvision's transforms)."""
    return is_tv_tensor(x) and type(x).__name__ == "Video"


def draw_groups(x: torch.Tensor) -> tuple[int, int]:
    """``(draws, images per draw)`` of an image tensor ``(..., C, H, W)``: one draw per image (its leading dims) or,
    for a ``tv_tensors.Video`` ``(..., T, C, H, W)``, one per video, shared by its ``T`` frames."""
    lead = x.ndim - (4 if is_video(x) else 3)
    draws = math.prod(x.shape[:lead]) if lead > 0 else 1
    return draws, math.prod(x.shape[:-3]) // draws if draws else 0


def like_input(out: torch.Tensor, x: Any) -> torch.Tensor:
    """``out`` as the ``tv_tensors`` type of the input ``x`` (its metadata too), or ``out`` when ``x`` is none."""
    if not is_tv_tensor(x) or type(out) is type(x):
        return out
    from torchvision import tv_tensors

    return tv_tensors.wrap(out, like=x)
