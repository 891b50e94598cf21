"""The 19 corruptions and their random draws on CUDA against the CPU. Skipped without CUDA; ``APRKIT_TEST_DEVICE=cpu``
lets the CPU stand in for the device (the shared pieces of the device tests: ``cuda_common.py``).

With a CPU generator the device sees the CPU's random streams and must agree to float tolerance; with a generator
on the device, determinism is checked instead. Per-image seeds (``corrupt(seeds=...)``, the eval's generated cells)
are hashed on the device and must give the CPU's draws: integers and uniforms exactly, the rest to float rounding;
nothing is then drawn from a host generator.
"""

from __future__ import annotations

import pytest
import torch

from aprkit.corruptions import corrupt, find_frost_dir, item_seeds, list_corruptions
from conftest import natural_images, spy_on_samplers
from cuda_common import DEVICE, DEVICE_MARKS, TinyNet, assert_images_close, cpu_gen, on_device
from cuda_common import x8_fixture  # noqa: F401 (the fixture x8)

pytestmark = DEVICE_MARKS


@pytest.fixture(scope="module")
def frost_ok() -> bool:
    try:
        find_frost_dir()
        return True
    except FileNotFoundError:
        return False


def _frost_guard(name: str, frost_ok: bool) -> None:
    if name == "frost" and not frost_ok:
        pytest.skip("frost textures not found (set APRKIT_FROST_DIR; gpu_check.py provides stand-ins)")


@pytest.fixture
def no_tf32():
    """Full-precision float32 convolutions on CUDA (cuDNN's TF32 default would move 8-bit truncations)."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("name", list_corruptions())
@pytest.mark.usefixtures("no_tf32")
def test_corruption_matches_cpu(name: str, x8: torch.Tensor, frost_ok: bool) -> None:
    _frost_guard(name, frost_ok)
    x = x8[:4]
    cpu = corrupt(x, name, 3, "cifar", cpu_gen(7))
    dev = corrupt(x.to(DEVICE), name, 3, "cifar", cpu_gen(7))  # CPU generator: the same random draws
    assert_images_close(dev, cpu, frac=2e-2)
    xf = x.float() / 255
    cpu_f = corrupt(xf, name, 3, "cifar", cpu_gen(7))
    dev_f = corrupt(xf.to(DEVICE), name, 3, "cifar", cpu_gen(7))
    on_device(dev_f)
    assert dev_f.dtype == torch.float32 and 0 <= float(dev_f.min()) and float(dev_f.max()) <= 1
    if name == "shot_noise":  # float input: NumPy's Poisson sampler on the CPU, torch.poisson on the device
        d_cpu, d_dev = (cpu_f - xf).abs().mean(), (dev_f.cpu() - xf).abs().mean()
        assert abs(d_dev - d_cpu) <= 0.2 * d_cpu, (float(d_dev), float(d_cpu))
    else:
        assert (dev_f.cpu() - cpu_f).abs().mean() < 2e-3


@pytest.mark.parametrize("name", list_corruptions())
def test_corruption_device_generator_224(name: str, frost_ok: bool) -> None:
    _frost_guard(name, frost_ok)
    x = natural_images(2, 224, seed=9).to(DEVICE)
    a = corrupt(x, name, 3, "imagenet", torch.Generator(DEVICE).manual_seed(1))
    b = corrupt(x, name, 3, "imagenet", torch.Generator(DEVICE).manual_seed(1))
    on_device(a)
    assert a.shape == x.shape and a.dtype == torch.uint8
    d = (a.int() - b.int()).abs()  # same seed, same output (atomic float adds may flip a rare rounding)
    assert d.max() <= 1 and (d > 0).double().mean() < 1e-3
    if name not in ("jpeg_compression",):  # every other corruption visibly changes a 224 px image at severity 3
        assert not torch.equal(a, x)


def test_item_draws_identical_on_device() -> None:
    """The counter-based per-image draws on the device equal the CPU's: integer hash and uniforms exactly,
    normals (``erfinv``) to a few ulps, Poisson counts except where ``lgamma``/``exp`` rounding of the CDF
    tables flips one."""
    from aprkit.corruptions._random import ItemKeys, normal, poisson, randint, uniform

    seeds = item_seeds(0, "gaussian_noise", 3, "cifar", torch.arange(64))

    def draws(dev: torch.device) -> list[torch.Tensor]:
        k = ItemKeys(seeds, dev)
        assert k.keys.device.type == dev.type
        return [uniform((64, 3, 32, 32), 0.0, 1.0, k, dev), uniform((64, 1023), -1.0, 1.0, k, dev, torch.float64),
                randint(-2, 2, (2, 2, 64, 900), k, dev, torch.int8, batch_dim=2), randint(0, 10**6, (64, 5), k, dev),
                normal((64, 3, 32, 32), 0.0, 0.08, k, dev), normal((64, 77), 1.0, 2.0, k, dev, torch.float64),
                poisson(torch.linspace(0, 60, 3072, device=dev).repeat(64, 1), k)]

    cpu, dev = draws(torch.device("cpu")), draws(DEVICE)
    for i, (c, d) in enumerate(zip(cpu, dev, strict=True)):
        on_device(d)
        assert d.shape == c.shape and d.dtype == c.dtype, i
        if i < 4:
            assert torch.equal(d.cpu(), c), i
        elif i < 6:
            torch.testing.assert_close(d.cpu(), c, rtol=8 * torch.finfo(c.dtype).eps, atol=1e-7)
        else:
            assert (d.cpu() != c).double().mean() <= 1e-4


@pytest.mark.parametrize("name", list_corruptions())
@pytest.mark.usefixtures("no_tf32")
def test_seeded_corruption_matches_cpu(name: str, x8: torch.Tensor, frost_ok: bool) -> None:
    """``seeds=``: the device hashes the same per-image draws as the CPU, so results agree as with a CPU generator
    (shot noise on float input included: both sides draw its Poisson counts from the same hashed uniforms)."""
    _frost_guard(name, frost_ok)
    x, seeds = x8[:4], item_seeds(3, name, 3, "cifar", torch.arange(4))
    assert_images_close(corrupt(x.to(DEVICE), name, 3, "cifar", seeds=seeds),
                        corrupt(x, name, 3, "cifar", seeds=seeds), frac=2e-2)
    xf = x.float() / 255
    dev_f = corrupt(xf.to(DEVICE), name, 3, "cifar", seeds=seeds)
    on_device(dev_f)
    assert (dev_f.cpu() - corrupt(xf, name, 3, "cifar", seeds=seeds)).abs().mean() < 2e-3


def test_seeded_corruptions_and_evaluate_use_no_host_generator(monkeypatch, x8: torch.Tensor, frost_ok: bool) -> None:
    """On the device, seeded corruptions (and ``evaluate``'s generated cells) draw nothing from a
    ``torch.Generator``, torch's samplers or NumPy: no per-image host generator, no host loop per image."""
    from aprkit.eval import evaluate
    from aprkit.eval.engine.datasets import TensorImageDataset

    net = TinyNet().calibrate(x8.float() / 255).to(DEVICE)  # before the spy: its weights come from a CPU generator
    data = TensorImageDataset(x8, torch.arange(len(x8)) % 10)
    calls = spy_on_samplers(monkeypatch)
    x = x8.to(DEVICE)
    for name in list_corruptions():
        if name != "frost" or frost_ok:
            on_device(corrupt(x, name, 3, "cifar", seeds=item_seeds(0, name, 3, "cifar", torch.arange(len(x)))))
    assert calls == []
    evaluate(net, suite="corruption", data=data, device=DEVICE, corruptions=["gaussian_noise", "glass_blur", "fog"],
             severities=[3], batch_size=4, progress=False, report=False, model_id="tiny",
             options={"check_classes": False})
    assert calls == []


@pytest.mark.parametrize("name", list_corruptions())
def test_seeded_corruptions_on_the_device_do_not_depend_on_the_batch(name: str, frost_ok: bool) -> None:
    """The -C writers promise the same bytes for every batch size; on the device a corruption runs the whole batch
    at once, whose matrix products and FFTs a library may plan otherwise by size (corruptions reviewer: untested on
    a GPU). Image i alone and inside its batch, with its per-image seed, at 224 px (the dense separable filters of
    elastic_transform at imagenet severities 1-2 included)."""
    _frost_guard(name, frost_ok)
    x = natural_images(3, 224, seed=5).to(DEVICE)
    for severity in (1, 3):
        seeds = item_seeds(2, name, severity, "imagenet", torch.arange(3))
        whole = corrupt(x, name, severity, "imagenet", seeds=seeds)
        alone = torch.cat([corrupt(x[i:i + 1], name, severity, "imagenet", seeds=seeds[i:i + 1]) for i in range(3)])
        assert torch.equal(whole, alone), (severity, int((whole != alone).sum()))
