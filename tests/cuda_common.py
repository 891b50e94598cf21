"""Shared pieces of the device-against-CPU tests (``tests/test_cuda*.py``): the device under test, the comparison
of device results with the CPU's, the test images and a tiny classifier.

``APRKIT_TEST_DEVICE`` names the device (default ``cuda``; ``cpu`` lets the CPU stand in for it, how these modules
are tested on machines without a GPU). A module using it sets ``pytestmark = DEVICE_MARKS`` (skipped without
CUDA, one torch thread) and imports the fixtures it uses (``x8_fixture``, ``xf_fixture``).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import natural_images

DEVICE = torch.device(os.environ.get("APRKIT_TEST_DEVICE", "cuda"))
DEVICE_MARKS = [
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="CUDA is not available"),
    pytest.mark.usefixtures("one_thread"),
]


def cpu_gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def on_device(t: torch.Tensor) -> None:
    assert t.device.type == DEVICE.type, f"result on {t.device}, expected {DEVICE}"


def assert_images_close(dev: torch.Tensor, cpu: torch.Tensor, atol: float = 1e-4, frac: float | None = None) -> None:
    """Same shape and dtype; pixels within ``atol`` (floats) or one level (uint8), except a ``frac`` share
    of them (default: 1e-3 for uint8, none for floats), and a small mean difference."""
    on_device(dev)
    assert dev.shape == cpu.shape and dev.dtype == cpu.dtype, (dev.shape, dev.dtype, cpu.shape, cpu.dtype)
    d = (dev.cpu().double() - cpu.double()).abs()
    u8 = cpu.dtype == torch.uint8
    tol = 1.0 if u8 else atol
    allowed = (1e-3 if u8 else 0.0) if frac is None else frac
    off = (d > tol).double().mean()
    assert off <= allowed, (f"{off:.2e} of the values differ by more than {tol:g} (max {d.max():.2e}); "
                            f"allowed {allowed:g}")
    bound = (0.5 + 255 * allowed) if u8 else (atol + allowed)  # no systematic offset
    assert d.mean() <= bound, f"mean |diff| {d.mean():.2e} > {bound:.2e}"


@pytest.fixture(scope="module", name="x8")
def x8_fixture() -> torch.Tensor:
    """Fixture ``x8``: six natural-looking 32-px uint8 images (import ``x8_fixture`` into a test module)."""
    return natural_images(6, 32, seed=5)


@pytest.fixture(scope="module", name="xf")
def xf_fixture(x8: torch.Tensor) -> torch.Tensor:
    """Fixture ``xf``: ``x8`` as float32 in [0, 1]."""
    return x8.float() / 255


class TinyNet(nn.Module):
    """conv -> ReLU -> conv -> global pool -> BatchNorm -> linear on [0, 1] images (channels_last-capable).

    :meth:`calibrate` sets the BatchNorm statistics from a batch, so that the predictions vary from image
    to image (random pooled features alone give every image the same class)."""

    def __init__(self) -> None:
        super().__init__()
        g = cpu_gen(11)
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.norm, self.fc = nn.BatchNorm1d(16, momentum=None), nn.Linear(16, 10)
        with torch.no_grad():
            for p in (*self.c1.parameters(), *self.c2.parameters(), *self.fc.parameters()):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(F.relu(self.c2(F.relu(self.c1(x)))).mean((2, 3))))

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> TinyNet:
        self.train()(x)
        return self.eval()
