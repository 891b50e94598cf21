"""Shared pytest fixtures and helpers: paths to ../shared (skipped when absent), generated images, a spy on the
random samplers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_root() -> Path | None:
    env = os.environ.get("APRKIT_SHARED")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared"]:
        if cand.is_dir():
            return cand
    return None


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("APRKIT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: opt in with --runslow or APRKIT_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    small tensors and tiny models run fastest single-threaded on the shared 2-core CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_root() -> Path:
    root = _shared_root()
    if root is None:
        pytest.skip("../shared is not present")
    return root


@pytest.fixture(scope="session")
def cifar10_dir(shared_root: Path) -> Path:
    path = shared_root / "data" / "cifar10"
    if not (path / "test").is_dir():
        pytest.skip(f"{path}/test is not present")
    return path


@pytest.fixture(scope="session")
def models_dir(shared_root: Path) -> Path:
    path = shared_root / "models"
    if not path.is_dir():
        pytest.skip(f"{path} is not present")
    return path


@pytest.fixture(scope="session")
def cue_conflict_dir(shared_root: Path) -> Path:
    path = shared_root / "data" / "cue-conflict"
    if not path.is_dir():
        pytest.skip(f"{path} is not present")
    return path


def natural_images(n: int, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Natural-looking uint8 images ``(n, C, size, size)``: 1/f noise plus smooth shapes and edges."""
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size).abs()[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    f = (fy**2 + fx**2).sqrt().clamp_min(1.0 / size)
    spec = torch.randn(n, channels, size, size // 2 + 1, 2, generator=g)
    z = torch.complex(spec[..., 0], spec[..., 1]) / f
    img = torch.fft.irfftn(z, s=(size, size), dim=(-2, -1))
    img = (img - img.amin(dim=(-2, -1), keepdim=True)) / (img.amax(dim=(-2, -1), keepdim=True) - img.amin(dim=(-2, -1), keepdim=True) + 1e-8)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(n):
        cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([size, size, size / 3])).tolist()
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < (r + 2) ** 2
        img[i, :, disc] = img[i, :, disc] * 0.3 + torch.rand(channels, 1, generator=g) * 0.7
    return (img * 255).round().clamp(0, 255).to(torch.uint8)


@pytest.fixture
def images_u8() -> torch.Tensor:
    return natural_images(8)


@pytest.fixture
def images_f32() -> torch.Tensor:
    return natural_images(8, seed=1).float() / 255


#: the torch functions :func:`spy_on_samplers` records (NumPy's ``default_rng`` too)
SAMPLERS = ("rand", "randn", "randint", "randperm", "poisson", "normal", "Generator")


def spy_on_samplers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on (until the test ends), record the name of every call of torch's samplers and ``Generator``
    (:data:`SAMPLERS`) and of ``numpy.random.default_rng``; they still run. Returns the list the names go to
    (empty while nothing random is drawn from a host generator or sampler)."""
    calls: list[str] = []

    def spy(name: str, fn):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)
        return wrapped

    for name in SAMPLERS:
        monkeypatch.setattr(torch, name, spy(name, getattr(torch, name)))
    monkeypatch.setattr(np.random, "default_rng", spy("default_rng", np.random.default_rng))
    return calls
