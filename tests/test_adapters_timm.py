"""``APRMixup`` checked against timm's ``Mixup`` contract: soft targets as ``mixup_target`` (lam=1), drop-in with
``SoftTargetCrossEntropy``, odd batch sizes, and APR-P in pixel space behind timm's loader + prefetcher
(normalised batches, channels_last, half precision, device)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

pytest.importorskip("timm.data", reason="timm is an optional integration (the GPU image has none)")
from timm.data import Mixup, create_loader, resolve_data_config  # noqa: E402
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # noqa: E402
from timm.data.mixup import mixup_target  # noqa: E402
from timm.loss import SoftTargetCrossEntropy  # noqa: E402

from aprkit.augment import APRPair  # noqa: E402
from aprkit.augment.adapters import APRMixup  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - MEAN.to(x.device)) / STD.to(x.device)


def _pixels(x: torch.Tensor) -> torch.Tensor:
    return x * STD.to(x.device) + MEAN.to(x.device)


# ----------------------------------------------------------------------------- Mixup's target contract (item 3)
@pytest.mark.parametrize("num_classes, smoothing", [(1000, 0.1), (10, 0.0), (7, 0.3)])
def test_soft_targets_equal_timm_mixup_target(num_classes, smoothing, images_f32):
    target = torch.arange(8) % num_classes
    kwargs = {} if (num_classes, smoothing) == (1000, 0.1) else {"num_classes": num_classes, "label_smoothing": smoothing}
    _, soft = APRMixup(p=1.0, seed=0, **kwargs)(images_f32, target)  # the defaults are timm's
    assert soft.dtype == torch.float32 and soft.shape == (8, num_classes)
    assert torch.equal(soft, mixup_target(target, num_classes, lam=1.0, smoothing=smoothing))
    timm_fn = Mixup(mixup_alpha=1.0, prob=0.0, num_classes=num_classes, label_smoothing=smoothing)  # lam = 1
    assert torch.equal(soft, timm_fn(images_f32.clone(), target)[1])


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_drop_in_with_soft_target_cross_entropy_odd_batches(batch, images_f32):
    x, target = images_f32[:batch], torch.arange(batch) % 10
    out, soft = APRMixup(p=1.0, num_classes=10, seed=1)(x, target)
    assert out.shape == x.shape and soft.shape == (batch, 10)
    logits = torch.randn(batch, 10, requires_grad=True)
    loss = SoftTargetCrossEntropy()(logits, soft)
    want = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1)  # same loss, same smoothing
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_mismatched_pairings_fail_clearly(images_f32):
    x = images_f32[:4]
    with pytest.raises(ValueError, match="num_classes=10"):
        APRMixup(num_classes=10)(x, torch.tensor([0, 3, 10, 2]))  # a label the targets cannot hold
    with pytest.raises(TypeError, match="integer class indices"):
        APRMixup(num_classes=10)(x, torch.rand(4, 10))  # already soft
    with pytest.raises(ValueError, match="one entry per image"):
        APRMixup(num_classes=10)(x, torch.arange(3))
    with pytest.raises(ValueError, match="label_smoothing needs num_classes"):
        APRMixup(num_classes=None, label_smoothing=0.1)
    with pytest.raises(ValueError, match="num_classes"):
        APRMixup(num_classes=0)
    _, soft = APRMixup(num_classes=1000)(x, torch.arange(4))
    with pytest.raises(RuntimeError, match="size of tensor"):  # the host's loss rejects a class-count mismatch
        SoftTargetCrossEntropy()(torch.randn(4, 10), soft)
    hard_x, hard = APRMixup(p=1.0, num_classes=None, seed=0)(x, torch.arange(4))  # opt-in integer labels
    assert hard.dtype == torch.int64 and hard_x.shape == x.shape


def test_mixup_enabled_false_returns_input_and_soft_targets(images_f32):
    fn = APRMixup(p=1.0, num_classes=10, seed=2)
    fn.mixup_enabled = False
    out, soft = fn(images_f32, torch.arange(8))
    assert out is images_f32 and soft.shape == (8, 10)


# ------------------------------------------------------------------------------- pixel space (item 2)
def test_recombines_in_pixel_space_dark_and_bright():
    dark, bright = torch.full((3, 16, 16), 0.1), torch.full((3, 16, 16), 0.9)
    dark[:, 4:8, 4:8], bright[:, 8:12, 8:12] = 0.3, 0.6
    pixels = torch.stack([dark, bright])
    seed = next(s for s in range(100) if APRPair(p=1.0, seed=s).generate_parameters((2,))["perm"].tolist() == [1, 0])
    fn = APRMixup(p=1.0, num_classes=2, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, seed=seed)
    out, _ = fn(_normalise(pixels), torch.tensor([0, 1]))
    want = APRPair(p=1.0, clamp=True, seed=seed)(pixels)  # the reference order: APR-P on [0, 1] images
    torch.testing.assert_close(_pixels(out), want, atol=1e-5, rtol=0)
    means = _pixels(out).mean((1, 2, 3))
    assert means[0] > 0.8 and means[1] < 0.25  # each image takes its partner's amplitude (brightness)


def test_normalised_batch_without_mean_std_is_rejected(images_f32):
    with pytest.raises(ValueError, match="mean= and std="):
        APRMixup(num_classes=10)(_normalise(images_f32), torch.arange(8))


def test_from_data_config_and_bad_stats():
    cfg = resolve_data_config({"input_size": (3, 32, 32)})
    fn = APRMixup.from_data_config(cfg, num_classes=10)
    assert fn.mean == tuple(cfg["mean"]) and fn.std == tuple(cfg["std"]) and fn.pair.clamp
    with pytest.raises(ValueError, match=r"\[0, 1\] units"):
        APRMixup(mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4))  # 0..255 units
    with pytest.raises(ValueError, match="both mean and std"):
        APRMixup(mean=IMAGENET_DEFAULT_MEAN)
    with pytest.raises(ValueError, match="lacks"):
        APRMixup.from_data_config({"input_size": (3, 32, 32)})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_channels_last_dtype_device_preserved(dtype, device, images_f32):
    x = _normalise(images_f32).to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    fn = APRMixup(p=1.0, num_classes=10, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, seed=4)
    out, soft = fn(x, torch.arange(8, device=device))
    assert out.dtype == dtype and out.device == x.device and soft.device == x.device
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, before)  # input untouched
    want = APRPair(p=1.0, clamp=True, seed=4)(_pixels(before.float().cpu()))
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(_pixels(out.float().cpu()), want, atol=tol, rtol=0)


# ------------------------------------------------------------------------------- timm's loader + prefetcher
class _Tiny(torch.utils.data.Dataset):
    """Five random 32x32 RGB PIL images; timm's ``create_loader`` sets ``transform``."""

    def __init__(self, n: int = 5) -> None:
        rng = np.random.default_rng(0)
        self.images = [PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
        self.transform = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        return (self.transform(img) if self.transform is not None else img), i % 3


def test_timm_loader_with_prefetcher():
    ds = _Tiny()
    cfg = resolve_data_config({"input_size": (3, 32, 32), "crop_pct": 1.0})
    loader = create_loader(ds, input_size=cfg["input_size"], batch_size=3, is_training=False, use_prefetcher=True,
                           mean=cfg["mean"], std=cfg["std"], crop_pct=1.0, num_workers=0, device=torch.device("cpu"))
    assert type(loader).__name__ == "PrefetchLoader"  # normalises on the device, as in timm's train.py
    mixup_fn = APRMixup.from_data_config(cfg, p=1.0, num_classes=3, seed=5)
    reference = APRPair(p=1.0, clamp=True, seed=5)
    sizes, start = [], 0
    for x, target in loader:  # batches of 3 and 2: odd and even
        out, soft = mixup_fn(x, target)
        n = x.shape[0]
        raw = torch.stack([torch.from_numpy(np.array(ds.images[i])).permute(2, 0, 1) for i in range(start, start + n)])
        want = reference(raw.float() / 255)  # APR-P on the [0, 1] images the loader read
        torch.testing.assert_close(_pixels(out), want, atol=1e-5, rtol=0)
        assert torch.equal(soft, mixup_target(target, 3, lam=1.0, smoothing=0.1))
        sizes.append(n)
        start += n
    assert sizes == [3, 2]


def test_infinite_pixels_are_named_as_such_and_numpy_counts_are_taken(images_f32):
    """An inf pixel is 'NaN or infinite' (it read as a normalised batch); NumPy integers are class counts."""
    x = images_f32[:4].clone()
    x[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        APRMixup(num_classes=10)(x, torch.arange(4))
    assert APRMixup(num_classes=np.int64(10)).num_classes == 10


def test_read_only_numpy_images_take_no_torch_warning():
    """A read-only array (a view of another array or of a PIL image) is copied before torch reads it."""
    import warnings

    from aprkit.augment import APRSingle

    for arr in (np.random.default_rng(0).random((8, 8, 3), dtype=np.float32),
                np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)):
        arr.setflags(write=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = APRSingle(p=1.0, seed=0)(arr)
        assert out.shape == arr.shape and out.dtype == arr.dtype


def test_numpy_label_smoothing_and_exact_unselected_images_in_pixel_space(images_f32):
    """label_smoothing=np.float32(0.1) was refused where every p takes numpy floats; per_sample in pixel space gave the
    images left as they were back re-normalised (1e-7 off), where APRPair hands them back exactly."""
    fn = APRMixup(p=0.5, per_sample=True, num_classes=10, label_smoothing=np.float32(0.1), mean=IMAGENET_DEFAULT_MEAN,
                  std=IMAGENET_DEFAULT_STD, seed=3)
    x = _normalise(images_f32)
    out, soft = fn(x, torch.arange(8))
    same = (out == x).flatten(1).all(1)
    assert 0 < int(same.sum()) < 8  # some recombined, the others exactly as given
    assert torch.allclose(soft.sum(1), torch.ones(8))
