"""Inputs on the device and on the host in any mix, and the per-step paths without host syncs (skipped without CUDA;
``APRKIT_TEST_DEVICE=cpu`` runs them with the CPU standing in, see ``test_cuda.py``).

A read of the code after the first GPU runs found public calls that mixed a host tensor into a device computation
(a magnitude or a per-image ``lam`` made on the host, the user's data or labels already on the GPU, a generator on
the GPU given to a host sampler) and per-step copies to the device that wait on the host. The CPU, where every other
test runs, accepts the mixes; CUDA refuses them.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import pytest
import torch

from aprkit import fourier
from conftest import natural_images
from cuda_common import DEVICE, DEVICE_MARKS, TinyNet, assert_images_close

pytestmark = DEVICE_MARKS


@pytest.fixture(scope="module", name="xs")
def xs_fixture() -> torch.Tensor:
    return natural_images(24, 32, seed=21).float() / 255


@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    """CUDA raises at any host synchronisation inside (nothing is checked with the CPU standing in)."""
    if DEVICE.type != "cuda":
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_host_magnitude_with_device_images(xs: torch.Tensor) -> None:
    """A dataset-mean magnitude computed on the host, applied to images or features on the device."""
    from aprkit.hidden import with_magnitude

    x, mag = xs[:6], xs[0].abs() + 0.5
    assert_images_close(fourier.phase_only(x.to(DEVICE), magnitude=mag), fourier.phase_only(x, magnitude=mag))
    for code in ("sign", "phase"):
        got = with_magnitude(x.to(DEVICE), mag, code)
        assert_images_close(got, with_magnitude(x, mag, code), atol=1e-4)


def test_mix_spectra_with_host_partners_and_lam(xs: torch.Tensor) -> None:
    z = torch.fft.rfftn(xs[:6], dim=(-3, -2, -1))
    perm, lam = torch.tensor([3, 0, 5, 1, 2, 4]), torch.linspace(0.2, 0.8, 6).view(6, 1, 1, 1)
    for kw in ({"perm": perm}, {"perm": perm, "lam": lam}):
        want = fourier.mix_spectra(z.clone(), z, **kw)
        got = fourier.mix_spectra(z.to(DEVICE), z.to(DEVICE), **kw)
        assert got.device.type == DEVICE.type and torch.allclose(got.cpu(), want, atol=1e-4)


def test_data_and_labels_on_the_device(xs: torch.Tensor) -> None:
    """``evaluate`` and ``transplant_test`` given images and labels already on the GPU: the same results as from the
    host (the data are read on the host and streamed, as always)."""
    from aprkit.eval import evaluate
    from aprkit.eval.analyses.transplant import transplant_test

    net = TinyNet().calibrate(xs)
    x8 = (xs * 255).round().to(torch.uint8)
    with torch.no_grad():
        y = net(xs).argmax(1)
    kw = dict(suite="corruption", corruptions=["gaussian_noise"], severities=[2], batch_size=8, progress=False,
              report=False, model_id="tiny", device=DEVICE, amp=False)
    host = evaluate(copy.deepcopy(net), data=(x8, y), **kw)["corruption"]
    dev = evaluate(copy.deepcopy(net), data=(x8.to(DEVICE), y.to(DEVICE)), **kw)["corruption"]
    assert dev["clean"]["accuracy"] == host["clean"]["accuracy"]
    assert dev["cells"]["gaussian_noise"] == host["cells"]["gaussian_noise"]
    t_kw = dict(code=("phase", "sign"), n_pairs=16, n_control=8, generator=torch.Generator().manual_seed(2))
    model = copy.deepcopy(net).to(DEVICE)
    a = transplant_test(model, (xs, y), ["c1"], **t_kw)
    t_kw["generator"] = torch.Generator().manual_seed(2)
    b = transplant_test(model, (xs.to(DEVICE), y.to(DEVICE)), ["c1"], **t_kw)
    assert a["rows"] == b["rows"]


def test_generator_on_the_device_in_host_samplers(xs: torch.Tensor) -> None:
    """The transplant test and the phase-bias samplers take a generator on the device, as the augmentations do (the
    same seed: the same pairs)."""
    from aprkit.eval.analyses.phase_bias import patch_permutations, sample_pairs
    from aprkit.eval.analyses.transplant import transplant_test

    def gen() -> torch.Generator:
        return torch.Generator(DEVICE).manual_seed(5)

    labels = torch.arange(24) % 4
    i, j = sample_pairs(labels, 20, generator=gen())
    assert i.device.type == "cpu" and (labels[i] != labels[j]).all()
    assert torch.equal(torch.stack(sample_pairs(labels, 20, generator=gen())), torch.stack([i, j]))
    perm = patch_permutations(3, xs.shape, 8, generator=gen())
    assert perm.shape == (3, 16) and torch.equal(perm.sort(1).values.cpu(), torch.arange(16).expand(3, 16))
    net = TinyNet().calibrate(xs).to(DEVICE)
    rows = [transplant_test(net, xs, ["c1"], code="sign", n_pairs=12, n_control=8, generator=gen())["rows"]
            for _ in range(2)]
    assert rows[0] == rows[1]


def test_per_step_paths_without_host_sync() -> None:
    """FeatureAPR as training attaches it (no generator: draws on the host, copied asynchronously), APR-S's geometric
    ops on the eager device path, the seeds of generated corruptions, the in-memory training batches."""
    from aprkit.augment import APRSingleBatch
    from aprkit.corruptions._itemkeys import ItemKeys
    from aprkit.eval.engine.datasets import TensorImageDataset
    from aprkit.hidden import FeatureAPR
    from aprkit.train.config import load_config
    from aprkit.train.data import EpochBatches

    feats = torch.randn(8, 4, 6, 6, device=DEVICE)
    fa = FeatureAPR(p=1.0).train()
    x8 = natural_images(8, 16, seed=3).to(DEVICE)
    aprs = APRSingleBatch(p=1.0, ops=["rotate", "shear_x"], generator=torch.Generator(DEVICE).manual_seed(0))
    cfg = load_config(None, ["model.name=small_cnn", "data.num_workers=0", "data.image_size=16",
                             "data.in_memory=true"])
    batches = EpochBatches(TensorImageDataset(natural_images(24, 16, seed=4), torch.arange(24) % 4), cfg, 8, DEVICE,
                           train=True)
    it = batches.iterate()
    seeds = torch.arange(8)
    fa(feats), aprs(x8), next(it), ItemKeys(seeds, DEVICE)  # warm-up: plans, caches, the epoch's order
    with no_host_sync():
        fa(feats)
        aprs.core_fn(x8, aprs.generate_parameters(x8.shape), aprs.ops, aprs.dims)
        x, y = next(it)
        ItemKeys(seeds, DEVICE)
    assert x.device.type == DEVICE.type and x.shape[0] == 8 and y.shape == (8,)
