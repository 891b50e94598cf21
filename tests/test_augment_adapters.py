"""Each APR adapter inside a real pipeline of its library: torchvision v2, kornia, albumentations, timm."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from aprkit.augment import APRSP, APRPair, APRSingleBatch
from aprkit.augment.adapters import APRMixup, APRSingleV2


def _kornia():
    """kornia and the kornia adapters; a skip where kornia is missing (the lent GPU image has none)."""
    K = pytest.importorskip("kornia.augmentation")
    from aprkit.augment.adapters import RandomAPRPair, RandomAPRSingle

    return K, RandomAPRPair, RandomAPRSingle


def test_torchvision_v2_compose(images_u8):
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    t = v2.Compose([v2.RandomHorizontalFlip(), APRSingleV2(p=1.0, seed=0), v2.ToDtype(torch.float32, scale=True)])
    out = t(images_u8[0])
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    pil = Image.fromarray(images_u8[0].permute(1, 2, 0).numpy())
    out_img, label = v2.Compose([APRSingleV2(p=1.0, seed=0), v2.PILToTensor()])(pil, 3)
    assert out_img.shape == (3, 32, 32) and out_img.dtype == torch.uint8 and label == 3
    tv = t(tv_tensors.Image(images_u8[1]))
    assert isinstance(tv, tv_tensors.Image)
    assert t(images_u8).shape == images_u8.shape  # leading dims are independent images
    a = APRSingleV2(p=1.0, seed=9)(images_u8[2])
    b = APRSingleV2(p=1.0, seed=9)(images_u8[2])
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="classification"):
        APRSingleV2()(tv_tensors.Image(images_u8[0]), tv_tensors.Mask(torch.zeros(32, 32)))


def test_torchvision_dataloader(images_u8):
    from torchvision.transforms import v2

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return Image.fromarray(images_u8[i].permute(1, 2, 0).numpy()), i

    ds = DS()
    ds_t = [(v2.Compose([APRSingleV2(), v2.PILToTensor()])(im), y) for im, y in ds]
    x, y = torch.utils.data.default_collate(ds_t)
    assert x.shape == (8, 3, 32, 32) and y.tolist() == list(range(8))


def test_kornia_sequential(images_f32):
    K, RandomAPRPair, RandomAPRSingle = _kornia()

    pipe = K.AugmentationSequential(K.RandomHorizontalFlip(p=0.5), RandomAPRSingle(p_apr=1.0, seed=0),
                                    RandomAPRPair(p_apr=1.0, seed=0), data_keys=["input"])
    out = pipe(images_f32)
    assert out.shape == images_f32.shape and torch.isfinite(out).all()
    seq = nn.Sequential(RandomAPRSingle(p_apr=0.5, seed=1), RandomAPRPair(p_apr=1.0, clamp=True, seed=1))
    out2 = seq(images_f32)
    assert out2.shape == images_f32.shape and out2.min() >= 0 and out2.max() <= 1
    # same draws as the core classes, and parameters replay deterministically
    m = RandomAPRPair(p_apr=1.0, seed=2)
    assert torch.equal(m(images_f32), APRPair(p=1.0, seed=2)(images_f32))
    assert torch.equal(m(images_f32, params=m._params), m.core.apply(images_f32, {k: m._params[k] for k in ("perm", "mask")}))
    s = RandomAPRSingle(p_apr=0.5, seed=4)
    assert torch.equal(s(images_f32), APRSingleBatch(p=0.5, seed=4)(images_f32))


def test_timm_mixup_fn(images_f32):
    from timm.loss import SoftTargetCrossEntropy

    target = torch.arange(7) % 5
    x = images_f32[:7]  # odd batch size is fine
    fn = APRMixup(p=1.0, num_classes=5, label_smoothing=0.1, seed=0)
    out, soft = fn(x, target)
    assert out.shape == x.shape and soft.shape == (7, 5)
    assert torch.allclose(soft.sum(1), torch.ones(7)) and torch.equal(soft.argmax(1), target)
    logits = torch.randn(7, 5, requires_grad=True)
    SoftTargetCrossEntropy()(logits, soft).backward()
    hard_x, hard_y = APRMixup(p=1.0, num_classes=None, seed=0)(x, target)
    assert hard_y is target and torch.equal(hard_x, out)
    fn.mixup_enabled = False
    assert fn(x, target)[0] is x
    with pytest.raises(ValueError, match="one entry per image"):
        fn(x, target[:3])


def _albu():
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return pytest.importorskip("albumentations")


def test_albumentations_single(images_u8):
    A = _albu()
    from aprkit.augment.adapters import AlbuAPRSingle

    img = images_u8[0].permute(1, 2, 0).numpy()
    pipe = A.Compose([A.HorizontalFlip(p=0.5), AlbuAPRSingle(recombine_p=1.0)], seed=3)
    out = pipe(image=img)["image"]
    assert out.shape == img.shape and out.dtype == np.uint8
    again = A.Compose([A.HorizontalFlip(p=0.5), AlbuAPRSingle(recombine_p=1.0)], seed=3)(image=img)["image"]
    assert np.array_equal(out, again)
    outf = A.Compose([AlbuAPRSingle(recombine_p=1.0)], seed=0)(image=img.astype(np.float32) / 255)["image"]
    assert outf.dtype == np.float32 and 0 <= outf.min() and outf.max() <= 1


def test_albumentations_pair(images_u8):
    A = _albu()
    from aprkit import fourier
    from aprkit.augment.adapters import AlbuAPRPair

    img = images_u8[0].permute(1, 2, 0).numpy()
    partner = images_u8[1].permute(1, 2, 0).numpy()
    pipe = A.Compose([AlbuAPRPair(p=1.0)], seed=0)
    out = pipe(image=img, apr_metadata=[partner])["image"]
    want = fourier.swap_amplitude(images_u8[0], images_u8[1]).permute(1, 2, 0).numpy()
    assert np.array_equal(out, want)
    big = np.ascontiguousarray(np.repeat(np.repeat(partner, 2, 0), 2, 1))
    assert pipe(image=img, apr_metadata=[big])["image"].shape == img.shape  # resized partner
    with pytest.raises(ValueError, match="apr_metadata"):
        pipe(image=img)


def test_an_empty_batch_comes_back_as_the_hosts_hand_it_back():
    """kornia's and torchvision's transforms and timm's Mixup return an empty batch; so do aprkit's (its image shape
    is still checked)."""
    K, RandomAPRPair, RandomAPRSingle = _kornia()
    import torchvision.transforms.v2 as v2

    x, y = torch.rand(0, 3, 16, 16), torch.zeros(0, dtype=torch.long)
    for aug in (APRPair(p=1.0, seed=0), APRSingleBatch(p=1.0, seed=0), RandomAPRSingle(p=1.0, seed=0),
                RandomAPRPair(p_apr=1.0, seed=0), K.AugmentationSequential(RandomAPRPair(seed=0), RandomAPRSingle(seed=0)),
                v2.Compose([APRSingleV2(p=1.0)])):
        assert aug(x).shape == (0, 3, 16, 16)
    assert K.ColorJitter(0.1, p=1.0)(x).shape == x.shape  # the host, for comparison
    out, soft = APRMixup(num_classes=10)(x, y)
    assert out.shape == x.shape and soft.shape == (0, 10)
    assert APRPair(p=1.0, seed=0)(x, y)[1].shape == (0,)
    x_all, y_all = APRSP(p=1.0, seed=0)(x, y, clean=x)  # it refused an empty batch
    assert x_all.shape == (0, 3, 16, 16) and y_all.shape == (0,)
    with pytest.raises(ValueError, match="H >= 2 and W >= 2"):
        APRPair(p=1.0)(torch.rand(0, 3, 1, 16))


def test_every_apr_s_adapter_takes_the_references_cast():
    """``cast="wrap"`` (the reference's uint8 cast) reaches APR-S through each host's adapter (and albumentations'
    serialisation keeps it)."""
    from aprkit.augment.adapters import APRSingleV2, RandomAPRSingle

    assert APRSingleV2(cast="wrap").aprs.batch.cast == "wrap"
    assert RandomAPRSingle(cast="wrap").core.cast == "wrap"
    pytest.importorskip("albumentations")
    from aprkit.augment.adapters import AlbuAPRSingle

    t = AlbuAPRSingle(cast="wrap")
    assert t._core().batch.cast == "wrap" and t.get_transform_init_args()["cast"] == "wrap"
    with pytest.raises(ValueError, match="cast must be one of"):
        AlbuAPRSingle(cast="clip")


def test_without_albumentations_its_adapters_name_the_extra():
    """A plain ``pip install aprkit`` (no extra): importing the albumentations adapters said only "No module named
    'albumentations'"; the message names the extra now (robustbench's did already)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['albumentations'] = None\n"
            "try:\n    from aprkit.augment.adapters import AlbuAPRSingle\n"
            "except ModuleNotFoundError as e:\n    print(e.name, '|', e)\n"
            "import aprkit.augment; print('augment imports')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "albumentations | aprkit's albumentations adapters need" in out and "aprkit[albumentations]" in out
    assert "augment imports" in out
