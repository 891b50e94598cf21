"""Shared pieces of the training tests (``test_train*.py``): a tiny registered CNN, generated datasets, a config."""

from __future__ import annotations

import importlib
from typing import Any

import torch
from conftest import natural_images
from torch import nn

from aprkit.models import register_model


def _has_augment() -> bool:
    try:
        mod = importlib.import_module("aprkit.augment")
    except ImportError:
        return False
    return all(hasattr(mod, n) for n in ("APRPair", "APRSingle", "APRSingleBatch"))


HAS_AUGMENT = _has_augment()


@register_model("_tiny_test_cnn")
def _tiny_test_cnn(num_classes: int = 10, width: int = 16) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveMaxPool2d(4),
                         nn.Flatten(), nn.Linear(width * 4 * 4, num_classes))


class Images(torch.utils.data.Dataset):
    """Generated uint8 images with labels; ``tensors`` enables the in-memory device path."""

    def __init__(self, n: int, size: int = 16, seed: int = 0, with_tensors: bool = True):
        self.x, self.y = natural_images(n, size=size, seed=seed), torch.arange(n) % 4
        if with_tensors:
            self.tensors = (self.x, self.y)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def train_config(**sections: dict[str, Any]) -> dict:
    """A 3-epoch run of ``_tiny_test_cnn`` on 16 px images (4 classes); ``sections`` update the defaults."""
    cfg = {
        "model": {"name": "_tiny_test_cnn", "num_classes": 4},
        "data": {"image_size": 16, "crop_padding": 2, "num_workers": 0, "eval_batch_size": 64},
        "optim": {"batch_size": 8, "epochs": 3, "lr": 0.05, "milestones": [2]},
        "train": {"progress": False, "tensorboard": False, "report": False},  # the report: its own test
    }
    for key, values in sections.items():
        cfg[key] = {**cfg.get(key, {}), **values}
    return cfg


def strip_times(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows without their wall-clock fields (the rest must match between equivalent runs)."""
    return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in rows]


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
