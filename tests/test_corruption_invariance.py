"""Generated corruptions are a function of (seed, corruption, severity, preset, item index) only.

``corrupt(..., seeds=item_seeds(...))`` gives every image the same result in any batch; the eval's generated
cells are identical across batch sizes and DataLoader workers; ``aprkit corrupt`` across ``--batch-size``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aprkit.cli import main
from aprkit.corruptions import corrupt, find_frost_dir, item_seeds, list_corruptions
from conftest import natural_images, spy_on_samplers

pytestmark = pytest.mark.usefixtures("one_thread")

N = 20


def _names() -> list[str]:
    try:
        find_frost_dir()
        return list(list_corruptions())
    except FileNotFoundError:
        return [n for n in list_corruptions() if n != "frost"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return natural_images(N, 32, seed=11)


def _in_batches(x: torch.Tensor, name: str, batch: int, indices: torch.Tensor) -> torch.Tensor:
    outs = []
    for a in range(0, len(x), batch):
        seeds = item_seeds(7, name, 3, "cifar", indices[a:a + batch])
        outs.append(corrupt(x[a:a + batch], name, 3, "cifar", seeds=seeds))
    return torch.cat(outs)


@pytest.mark.parametrize("name", _names())
def test_each_image_is_independent_of_its_batch(images: torch.Tensor, name: str) -> None:
    idx = torch.arange(N)
    whole = _in_batches(images, name, N, idx)
    for batch in (1, 7):
        assert torch.equal(_in_batches(images, name, batch, idx), whole), f"{name}: batch {batch} differs"
    # the same images at other positions of a larger batch (other images around them), and float input
    other = natural_images(6, 32, seed=3)
    mixed = torch.cat([other[:3], images, other[3:]])
    mixed_idx = torch.cat([torch.arange(100, 103), idx, torch.arange(103, 106)])
    assert torch.equal(_in_batches(mixed, name, 256, mixed_idx)[3:3 + N], whole)
    f = images.float() / 255
    whole_f = corrupt(f, name, 3, "cifar", seeds=item_seeds(7, name, 3, "cifar", idx))
    part_f = corrupt(f[5:12], name, 3, "cifar", seeds=item_seeds(7, name, 3, "cifar", idx[5:12]))
    assert torch.equal(part_f, whole_f[5:12])


@pytest.mark.parametrize("mapsize", [4, 32])
def test_fog_plasma_one_draw_per_image_and_batch_invariant(mapsize: int, monkeypatch) -> None:
    """The plasma maps take one draw call of the per-image keys (no torch RNG), so each is the same in any batch."""
    from aprkit.corruptions._random import ItemKeys
    from aprkit.corruptions.weather import plasma_fractal

    seeds = item_seeds(5, "fog", 3, "cifar", torch.arange(6))
    monkeypatch.setattr(torch, "rand", None)  # any call into torch's RNG fails
    keys = ItemKeys(seeds)
    whole = plasma_fractal(6, mapsize, 2.5, keys)
    assert keys.counter == 1  # one draw call for all levels of all maps
    assert whole.shape == (6, mapsize, mapsize) and whole.amin() == 0 and whole.amax() == 1
    for a, b in ((0, 1), (2, 5), (5, 6)):
        assert torch.equal(plasma_fractal(b - a, mapsize, 2.5, ItemKeys(seeds[a:b])), whole[a:b])
    assert not torch.equal(whole[0], whole[1])


def test_item_seeds_are_distinct_and_keyed_by_every_part() -> None:
    base = item_seeds(0, "fog", 3, "cifar", range(1000))
    assert base.dtype == torch.int64 and base.shape == (1000,) and int(base.min()) >= 0
    assert len(set(base.tolist())) == 1000
    assert torch.equal(item_seeds(0, "fog", 3, "cifar", [5, 6]), base[5:7])
    for other in (item_seeds(1, "fog", 3, "cifar", range(1000)), item_seeds(0, "snow", 3, "cifar", range(1000)),
                  item_seeds(0, "fog", 4, "cifar", range(1000)), item_seeds(0, "fog", 3, "imagenet", range(1000))):
        assert not set(other.tolist()) & set(base.tolist())
    # pinned values: a change here changes every generated corruption (raise aprkit.corruptions.api.BASE_VERSION)
    assert item_seeds(0, "fog", 1, "cifar", [0, 1, 2]).tolist() == [
        8877181005327387015, 8083694796127700408, 563962412858001761]


def test_neighbouring_images_get_different_noise() -> None:
    # under the old per-batch seeding two torchrun ranks gave images 2k and 2k+1 the same noise field
    flat = torch.full((2, 3, 16, 16), 128, dtype=torch.uint8)
    y = corrupt(flat, "gaussian_noise", 3, seeds=item_seeds(0, "gaussian_noise", 3, "cifar", [0, 1])).int()
    assert not torch.equal(y[0] - 128, y[1] - 128)


def test_seeds_errors(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="one seed per image"):
        corrupt(images, "fog", 1, seeds=[1, 2])
    with pytest.raises(ValueError, match="either generator"):
        corrupt(images[:1], "fog", 1, generator=torch.Generator(), seeds=[1])
    with pytest.raises(TypeError, match="integer"):
        corrupt(images[:1], "fog", 1, seeds=[0.5])
    with pytest.raises(ValueError, match="non-negative"):
        item_seeds(0, "fog", 1, "cifar", [-1])


class PixelModel(nn.Module):
    """Logits from per-image sums only: the same bits for an image in any batch (unlike conv kernels)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(10, 3, 16, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([(x * w).flatten(1).sum(1) for w in self.w], dim=1)


@pytest.fixture(scope="module")
def small_set():
    from aprkit.eval.engine.datasets import TensorImageDataset

    return TensorImageDataset(natural_images(40, 16, seed=2), torch.arange(40) % 10)


def _cells(small_set, batch_size: int, num_workers: int = 0, tmp=None) -> dict:
    from aprkit.eval import evaluate

    res = evaluate(PixelModel(), suite="corruption", data=small_set, device="cpu", batch_size=batch_size,
                   num_workers=num_workers, progress=False, report=False, model_id="pixel", out_dir=tmp,
                   corruptions=["gaussian_noise", "glass_blur", "elastic_transform", "spatter"], severities=[3],
                   options={"check_classes": False})
    return res["corruption"]["cells"]


def test_eval_cells_identical_across_batch_sizes(small_set) -> None:
    ref = _cells(small_set, 256)
    assert _cells(small_set, 1) == ref
    assert _cells(small_set, 7) == ref


def test_eval_cells_identical_across_workers(small_set) -> None:
    assert _cells(small_set, 7, num_workers=2) == _cells(small_set, 7, num_workers=0)


def test_cli_output_identical_across_batch_sizes(tmp_path) -> None:
    x = natural_images(10, 32, seed=9).permute(0, 2, 3, 1).numpy().copy()
    np.save(tmp_path / "x.npy", x)
    names = ["gaussian_noise", "glass_blur", "elastic_transform", "spatter"]
    for b in (7, 64):
        assert main(["corrupt", str(tmp_path / "x.npy"), str(tmp_path / f"o{b}"), "--corruptions", *names,
                     "--severities", "2", "5", "--batch-size", str(b), "--no-progress"]) == 0
    for name in names:
        assert np.array_equal(np.load(tmp_path / "o7" / f"{name}.npy"), np.load(tmp_path / "o64" / f"{name}.npy"))


def _dist_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from aprkit.eval.engine.datasets import TensorImageDataset

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ds = TensorImageDataset(natural_images(40, 16, seed=2), torch.arange(40) % 10)
        torch.save(_cells(ds, 7), f"{out_dir}/cells{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_eval_cells_identical_under_two_process_gloo(small_set, tmp_path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ref = _cells(small_set, 7)
    for rank in (0, 1):
        assert torch.load(tmp_path / f"cells{rank}.pt") == ref


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "elastic_transform"])
def test_per_image_draws_do_not_depend_on_the_thread_count(name: str) -> None:
    """Per-image draws are elementwise integer hashes: the same values with 1 thread and with several (the
    224-px tensors are large enough for torch to split them across threads)."""
    x = torch.randint(0, 256, (3, 3, 112, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    seeds = item_seeds(0, name, 3, "imagenet", torch.arange(3))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = corrupt(x, name, 3, "imagenet", seeds=seeds)
        torch.set_num_threads(3)
        many = corrupt(x, name, 3, "imagenet", seeds=seeds)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many)


@pytest.mark.parametrize(("size", "preset"), [((24, 32), "cifar"), ((64, 64), "tinyimagenet"), ((96, 80), "imagenet")])
def test_every_corruption_is_the_same_with_one_thread_or_several(size: tuple[int, int], preset: str) -> None:
    """Float32 values of every corruption do not depend on the thread count: zoom
    blur below 129 px summed its zooms by dense matrix products whose rounding followed the BLAS kernel (1 and 2
    threads wrote other bytes at 63-128 px)."""
    x = torch.rand(3, 3, *size, generator=torch.Generator().manual_seed(6))
    before = torch.get_num_threads()
    try:
        for name in _names() + list(list_corruptions("extra")):
            seeds = item_seeds(0, name, 3, preset, torch.arange(3))
            torch.set_num_threads(1)
            one = corrupt(x, name, 3, preset, seeds=seeds)
            torch.set_num_threads(3)
            assert torch.equal(one, corrupt(x, name, 3, preset, seeds=seeds)), name
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_seeded_corruptions_use_no_torch_or_numpy_generator(dtype: torch.dtype, monkeypatch) -> None:
    """With ``seeds`` every draw is hashed from the per-image keys on the images' device: no ``torch.Generator``,
    no torch or NumPy sampler is called (on a GPU nothing random runs on the host)."""
    x = natural_images(4, 32, seed=4)
    x = x if dtype == torch.uint8 else x.to(dtype) / 255
    calls = spy_on_samplers(monkeypatch)
    for name in _names():
        corrupt(x, name, 3, "cifar", seeds=item_seeds(0, name, 3, "cifar", torch.arange(4)))
    assert calls == []


@pytest.mark.parametrize("name, severity", [("zoom_blur", 3), ("pixelate", 5), ("elastic_transform", 3),
                                            ("gaussian_blur", 5)])
def test_float64_images_are_independent_of_their_batch(name: str, severity: int) -> None:
    """Float64 images with per-image seeds: the same bits in any batch, also where the corruption runs matrix
    products (MKL picks float64 GEMM kernels by size: at 65 px zoom blur and pixelate had moved in the last bit)."""
    x = torch.rand(9, 3, 65, 65, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    seeds = item_seeds(3, name, severity, "tinyimagenet", torch.arange(9))
    whole = corrupt(x, name, severity, "tinyimagenet", seeds=seeds)
    alone = torch.cat([corrupt(x[i:i + 1], name, severity, "tinyimagenet", seeds=seeds[i:i + 1]) for i in range(9)])
    assert torch.equal(whole, alone)


def test_float_results_do_not_depend_on_the_batch_or_the_memory_layout() -> None:
    """pixelate's float32 results moved by an ulp with the batch size (a transposed matrix operand), contrast's with
    a channels-last or transposed view (the mean's summation order)."""
    from aprkit.corruptions import corrupt as run

    x = torch.rand(5, 3, 65, 47, generator=torch.Generator().manual_seed(0))
    full = run(x, "pixelate", 5, "imagenet")
    assert torch.equal(full, torch.cat([run(x[i:i + 1], "pixelate", 5, "imagenet") for i in range(5)]))
    for name in ("pixelate", "contrast"):
        ref = run(x, name, 3, "imagenet")
        assert torch.equal(ref, run(x.contiguous(memory_format=torch.channels_last), name, 3, "imagenet"))
        assert torch.equal(ref, run(x.transpose(-1, -2).contiguous().transpose(-1, -2), name, 3, "imagenet"))


def test_shot_noise_of_8_bit_float_images_does_not_depend_on_how_they_were_divided():
    """Float images of 8-bit levels draw their uint8 originals' shot noise; k / 255 computed through the reciprocal
    (k * (1 / 255), which CUDA does for a division by a scalar) missed the exact test for half the pixels, and those
    images took other draws (the first GPU check: device and CPU differed by 0.9 levels on average)."""
    from aprkit.corruptions import corrupt, item_seeds

    x8 = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    seeds = item_seeds(3, "shot_noise", 3, "cifar", torch.arange(4))
    divided, reciprocal = x8.float() / 255, x8.float() * (1 / 255)
    assert not torch.equal(divided, reciprocal)
    assert torch.equal(corrupt(reciprocal, "shot_noise", 3, "cifar", seeds=seeds),
                       corrupt(divided, "shot_noise", 3, "cifar", seeds=seeds))


def test_defocus_kernels_are_centro_symmetric_to_the_last_bit() -> None:
    """Their mirrored taps differed by up to 5e-10, so the spectrum was complex and its in-place product rounded by
    the thread count's split (3 threads moved 1253 float values at 224 px; corruptions tester)."""
    import numpy as np

    from aprkit.corruptions.blur import disk_kernel
    from aprkit.corruptions.severity import PARAMS

    for preset in PARAMS:
        for radius, alias in PARAMS[preset]["defocus_blur"]:
            k = disk_kernel(float(radius), float(alias))
            assert np.array_equal(k, k[::-1, ::-1]), (preset, radius, alias)
