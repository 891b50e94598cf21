"""albumentations' own transform checks applied to the APR adapters (issue 14 items 1, 5 and 7).

Masks / boxes / keypoints move with the image, ``ReplayCompose`` replays, ``to_dict``/``from_dict``
round-trips, ``p`` gates the transform, and uint8 and float32 images agree.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
A = pytest.importorskip("albumentations")

from aprkit import fourier  # noqa: E402
from aprkit.augment import APRSingle  # noqa: E402
from aprkit.augment.adapters import AlbuAPRPair, AlbuAPRSingle  # noqa: E402
from aprkit.augment.ops import GEOMETRIC_OPS  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def _scene(size: int = 64):
    """A bright square (columns 40..49, rows 20..29) with its mask, box (pascal_voc) and centre keypoint."""
    img = np.full((size, size, 3), 25, np.uint8)
    img[20:30, 40:50] = 230
    mask = np.zeros((size, size), np.uint8)
    mask[20:30, 40:50] = 1
    return img, mask, [[40.0, 20.0, 50.0, 30.0]], [[44.5, 24.5, 30.0]]


def _pipe(t, cls=A.Compose, **kw):
    return cls([t], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["cls"]),
                keypoint_params=A.KeypointParams(format="xya", remove_invisible=False), **kw)


def _cx(a: np.ndarray) -> float:
    return float(np.argwhere(a)[:, 1].mean())


def test_translate_moves_mask_box_and_keypoint():
    """Item 1: ``ops=["translate_x"]`` moves the square 44.5 -> 39.5; mask, box and keypoint follow."""
    img, mask, box, kp = _scene()
    # seed 3 draws a 5-pixel shift to the left (seed 1 did so before APR-S drew per item)
    out = _pipe(AlbuAPRSingle(0.0, ops=["translate_x"]), seed=3)(image=img, mask=mask, bboxes=box, cls=[1], keypoints=kp)
    assert _cx(out["image"][..., 0] > 128) == 39.5 and _cx(out["mask"]) == 39.5
    np.testing.assert_allclose(out["bboxes"], [[35.0, 20.0, 45.0, 30.0]], atol=1e-4)
    np.testing.assert_allclose(out["keypoints"][0][:2], [39.5, 24.5], atol=1e-4)
    assert out["mask"].dtype == np.uint8 and set(np.unique(out["mask"])) <= {0, 1}


@pytest.mark.parametrize("seed", range(6))
def test_geometry_follows_the_phase_view(seed):
    img, mask, box, kp = _scene()
    t = AlbuAPRSingle(1.0, ops=list(GEOMETRIC_OPS), severity=8)
    out = _pipe(t, seed=seed)(image=img, mask=mask, bboxes=box, cls=[1], keypoints=kp)
    bright, m = out["image"][..., 0] > 128, out["mask"]
    assert abs(_cx(bright) - _cx(m)) < 1.0  # the recombined square sits where the mask went
    rows = np.argwhere(m)
    x0, y0, x1, y1 = out["bboxes"][0]
    assert x0 <= rows[:, 1].min() + 0.5 and rows[:, 1].max() + 0.5 <= x1 + 1e-3  # enclosing box
    assert y0 <= rows[:, 0].min() + 0.5 and rows[:, 0].max() + 0.5 <= y1 + 1e-3
    kx, ky = out["keypoints"][0][:2]
    assert abs(kx - _cx(m)) < 1.0 and abs(ky - rows[:, 0].mean()) < 1.0


def test_keypoint_angle_turns_with_the_image():
    img, mask, _, _ = _scene()
    a = np.deg2rad(30.0)
    pts = [[20.0, 30.0, 30.0], [20.0 + 10 * np.cos(a), 30.0 + 10 * np.sin(a), 0.0]]  # a point and one along its angle
    t = A.Compose([AlbuAPRSingle(0.0, ops=["rotate", "shear_y"], severity=9)], seed=3,
                  keypoint_params=A.KeypointParams(format="xya", remove_invisible=False))
    out = np.asarray(t(image=img, keypoints=pts)["keypoints"], dtype=np.float64)
    d = out[1, :2] - out[0, :2]
    assert abs(np.rad2deg(np.arctan2(d[1], d[0])) % 360 - out[0, 2] % 360) < 0.5


def test_replay_compose_and_masks():
    img, mask, box, kp = _scene()
    masks = [mask, 1 - mask]
    pipe = _pipe(AlbuAPRSingle(1.0, ops=["rotate", "equalize"], severity=9), cls=A.ReplayCompose)
    out = pipe(image=img, masks=masks, bboxes=box, cls=[1], keypoints=kp)
    again = A.ReplayCompose.replay(out["replay"], image=img, masks=masks, bboxes=box, cls=[1], keypoints=kp)
    for key in ("image", "bboxes", "keypoints"):
        np.testing.assert_array_equal(np.asarray(again[key]), np.asarray(out[key]))
    for m0, m1 in zip(out["masks"], again["masks"]):
        np.testing.assert_array_equal(m0, m1)


def test_serialisation_round_trip():
    pipe = A.Compose([AlbuAPRSingle(0.3, severity=4, ops=["rotate", "posterize"], p=0.7), AlbuAPRPair(p=0.4)], seed=5)
    back = A.from_dict(A.to_dict(pipe))
    single, pair = back.transforms
    assert isinstance(single, AlbuAPRSingle) and isinstance(pair, AlbuAPRPair)
    assert (single.recombine_p, single.severity, list(single.ops), single.p) == (0.3, 4, ["rotate", "posterize"], 0.7)
    img = _scene()[0]
    a = A.Compose([AlbuAPRSingle(0.3, severity=4, ops=["rotate", "posterize"])], seed=2)(image=img)["image"]
    b = A.from_dict(A.to_dict(A.Compose([AlbuAPRSingle(0.3, severity=4, ops=["rotate", "posterize"])])))
    b.set_random_seed(2)
    np.testing.assert_array_equal(b(image=img)["image"], a)


def test_numpy_and_tensor_settings_save_as_plain_values(tmp_path):
    """A NumPy or 0-dim tensor severity (accepted by the check) was kept as given: A.save then failed in YAML and
    JSON, where albumentations' own transforms save such settings as plain numbers (adapter tester)."""
    import torch

    for sev in (np.float64(2.5), np.int64(3), torch.tensor(2.5)):
        for fmt in ("yaml", "json"):
            pipe = A.Compose([AlbuAPRSingle(severity=sev, ops=("rotate", "solarize"))])
            A.save(pipe, tmp_path / f"p.{fmt}", data_format=fmt)
            back = A.load(tmp_path / f"p.{fmt}", data_format=fmt).transforms[0]
            assert back.severity == float(sev) and back.ops == ["rotate", "solarize"]


def test_p_gates_the_transform():
    img, mask, box, kp = _scene()
    out = _pipe(AlbuAPRSingle(1.0, ops=["translate_x"], p=0.0), seed=0)(image=img, mask=mask, bboxes=box, cls=[1],
                                                                      keypoints=kp)
    np.testing.assert_array_equal(out["image"], img)
    np.testing.assert_array_equal(out["mask"], mask)
    applied = sum(not np.array_equal(A.Compose([AlbuAPRSingle(1.0, p=0.5)], seed=s)(image=img)["image"], img)
                  for s in range(20))
    assert 4 <= applied <= 16


def test_uint8_and_float32_agree(images_u8):
    """Item 7: the uint8 (PIL) and float32 (torch) paths give the same image up to a measured bound (in grey
    levels, mean per image): <= 1 for one geometric op (measured 0.5, PIL's truncation; was up to 4: the torch warp
    blended the border half pixel with black), <= 3.5 for two recombined geometric views (the amplitude swap
    amplifies their sub-level differences where an amplitude is small: 3.0 at worst over 320 images, mean 0.6) and
    <= 6 with the default ops (was up to 23 on CIFAR-10)."""
    for ops, p, bound in ((GEOMETRIC_OPS, 0.0, 1.0), (GEOMETRIC_OPS, 1.0, 3.5), (None, 1.0, 6.0)):
        diffs = []
        for seed in range(5):
            t = APRSingle(p=p, ops=ops, seed=seed)
            for x in images_u8:
                prm = t.generate_parameters()
                hwc = x.permute(1, 2, 0).numpy()
                u = t.apply(hwc, prm).astype(np.float64)
                f = t.apply(hwc.astype(np.float32) / 255, prm).astype(np.float64) * 255
                diffs.append(np.abs(u - f).mean())
        assert max(diffs) <= bound and np.mean(diffs) <= 1.0, (ops, max(diffs), np.mean(diffs))
    img = images_u8[0].permute(1, 2, 0).numpy()
    for seed in range(10):  # albumentations' own uint8 / float32 agreement check
        u = A.Compose([AlbuAPRSingle(1.0)], seed=seed)(image=img)["image"]
        f = A.Compose([AlbuAPRSingle(1.0)], seed=seed)(image=img.astype(np.float32) / 255)["image"]
        assert f.dtype == np.float32 and np.abs(u / 255 - f).mean() <= 6 / 255


def test_version_floor_is_declared_and_installed():
    """Item 5: pyproject declares the albumentations floor this adapter is tested with, in the extra and in dev."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = meta["project"]["optional-dependencies"]
    floors = [re.fullmatch(r"albumentations>=([\d.]+)", d) for d in deps["albumentations"] + deps["dev"]
              if d.startswith("albumentations")]
    assert len(floors) == 2 and all(floors), floors
    floor = tuple(int(v) for v in floors[0].group(1).split("."))
    assert floor >= (2, 0, 8) and floors[0].group(1) == floors[1].group(1)
    assert tuple(int(v) for v in version("albumentations").split(".")[:3]) >= floor
    assert hasattr(AlbuAPRSingle(), "random_generator") and hasattr(AlbuAPRPair(), "py_random")


def test_empty_targets_and_float_masks():
    img = _scene()[0]
    t = A.Compose([AlbuAPRSingle(0.0, ops=["rotate"], severity=9)], seed=0,
                  bbox_params=A.BboxParams(format="pascal_voc", label_fields=["cls"]))
    out = t(image=img, bboxes=np.zeros((0, 4)), cls=[], mask=np.ones((64, 64), np.float32))
    assert len(out["bboxes"]) == 0 and out["mask"].dtype == np.float32
    assert torch.is_tensor(torch.from_numpy(out["mask"]))


@pytest.mark.parametrize("cls", ["AlbuAPRSingle", "AlbuAPRPair"])
def test_arguments_are_validated_like_albumentations_own_transforms(cls):
    """An argument the transform does not take (albumentations 1.x's ``always_apply``) is ignored with the host's
    warning, as ``A.HorizontalFlip(always_apply=True)`` is, and raises with ``strict=True``; bad values raise."""
    from aprkit.augment.adapters import albumentations_aug as M

    make = getattr(M, cls)
    with pytest.warns(UserWarning, match="always_apply"):
        A.HorizontalFlip(always_apply=True)
    with pytest.warns(UserWarning, match=f"'always_apply' are not valid for transform {cls}"):
        t = make(always_apply=True, p=0.25)
    assert t.p == 0.25
    with pytest.raises(ValueError, match="always_apply"):
        make(always_apply=True, strict=True)
    with pytest.raises(ValueError, match="dims"):
        make(dims="xyz")
    with pytest.raises(ValueError, match="p"):
        make(p=1.5)


def test_pair_partners_as_one_stacked_array(images_u8):
    """A stacked ``(N, H, W, C)`` array holds N partners (it reached cv2.resize as one 4-D image); anything else
    that is no image is refused naming the expected forms."""
    imgs = images_u8.permute(0, 2, 3, 1).numpy()
    stacked = A.Compose([AlbuAPRPair(p=1.0)], seed=3)(image=imgs[0], apr_metadata=imgs[1:4])["image"]
    listed = A.Compose([AlbuAPRPair(p=1.0)], seed=3)(image=imgs[0], apr_metadata=list(imgs[1:4]))["image"]
    assert np.array_equal(stacked, listed)
    with pytest.raises(ValueError, match=r"list of partner images \(H, W\) or \(H, W, C\).*got str"):
        A.Compose([AlbuAPRPair(p=1.0)], seed=3)(image=imgs[0], apr_metadata=["x.png"])


@pytest.mark.parametrize("bad", ["image", "partner"])
def test_pair_rejects_float_0_255_like_single(bad, images_u8):
    """A float image or partner holding 0..255 values was recombined silently (about 94 % of the output pixels
    saturated at 1.0); now it raises the same ``ValueError`` as :class:`AlbuAPRSingle`, naming the argument."""
    img = images_u8[0].permute(1, 2, 0).numpy()
    partner = images_u8[1].permute(1, 2, 0).numpy()
    ok_img, ok_partner = img.astype(np.float32) / 255, partner.astype(np.float32) / 255
    args = {"image": (img.astype(np.float32), ok_partner), "partner": (ok_img, partner.astype(np.float32))}[bad]
    name = {"image": "image", "partner": "apr_metadata"}[bad]
    with pytest.raises(ValueError, match=rf"^{name} is float with values .*expected float images in \[0, 1\]"):
        A.Compose([AlbuAPRPair(p=1.0)], seed=0)(image=args[0], apr_metadata=[args[1]])
    with pytest.raises(ValueError, match=r"expected float images in \[0, 1\]"):
        A.Compose([AlbuAPRSingle(recombine_p=1.0)], seed=0)(image=img.astype(np.float32))
    # valid mixes still run, with the numbers they had: uint8 / float [0, 1] in either role
    for image, part in ((ok_img, ok_partner), (img, ok_partner), (ok_img, partner), (img, partner)):
        out = A.Compose([AlbuAPRPair(p=1.0)], seed=0)(image=image, apr_metadata=[part])["image"]
        assert out.dtype == image.dtype and out.shape == image.shape
    out = A.Compose([AlbuAPRPair(p=1.0)], seed=0)(image=ok_img, apr_metadata=[ok_partner])["image"]
    chw = [torch.from_numpy(a).permute(2, 0, 1) for a in (ok_img, ok_partner)]
    want = fourier.swap_amplitude(*chw).clamp(0, 1).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out, want, atol=1e-6, rtol=0)


def test_albu_apr_single_reaches_other_processes_with_its_generator_shared():
    """DataLoader workers started with spawn receive the transform (its private generator travels as bytes and stays
    the one its APR-S core draws from, so albumentations' seed still controls it)."""
    import io
    import pickle
    from multiprocessing.reduction import ForkingPickler

    t = AlbuAPRSingle(p=1.0)
    buf = io.BytesIO()
    ForkingPickler(buf, pickle.HIGHEST_PROTOCOL).dump(t)
    copy = pickle.loads(buf.getvalue())
    assert copy._generator is copy._core().batch.generator
    assert torch.equal(torch.rand(3, generator=copy._generator), torch.rand(3, generator=t._generator))


def test_albu_apr_single_reads_settings_changed_after_construction():
    """Changing ``recombine_p`` / ``ops`` on an instance changes what it does (albumentations' own transforms read
    their attributes per call, and ``to_dict`` reports them): the pipeline rebuilt from its dict gives the same."""
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    t = AlbuAPRSingle(recombine_p=0.0, ops=["equalize"])
    before = A.Compose([t], seed=0)(image=img)["image"]
    t.recombine_p, t.ops = 1.0, ["solarize"]
    pipeline = A.Compose([t], seed=0)
    after = pipeline(image=img)["image"]
    assert not np.array_equal(before, after)
    fresh = A.Compose([AlbuAPRSingle(recombine_p=1.0, ops=["solarize"])], seed=0)(image=img)["image"]
    np.testing.assert_array_equal(after, fresh)
    rebuilt = A.from_dict(A.to_dict(pipeline))
    rebuilt.set_random_seed(0)
    np.testing.assert_array_equal(rebuilt(image=img)["image"], after)


def test_a_setting_changed_after_construction_and_grey_partner_stacks_read_as_meant():
    """A bad recombine_p set after construction was reported as APRSingle's ``p``; a stack of grey partners
    (N, H, W) beside a grey image was read as one N-channel image (tester)."""
    t = AlbuAPRSingle()
    t.recombine_p = 2
    with pytest.raises(ValueError, match=r"^recombine_p must be in \[0, 1\], got 2"):
        t(image=np.zeros((8, 8, 3), np.uint8))
    pair = AlbuAPRPair(p=1)
    grey = np.random.default_rng(0).integers(0, 256, (2, 8, 8), dtype=np.uint8)
    out = pair(image=grey[0], apr_metadata=grey)["image"]
    assert out.shape == (8, 8) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="8 channels, image has 3; a stack of grey partners .* pass apr_metadata as a"):
        pair(image=np.zeros((8, 8, 3), np.uint8), apr_metadata=grey)


class _Items(torch.utils.data.Dataset):
    """Four loads of one image through ``transform`` (an ``A.Compose``)."""

    def __init__(self, transform) -> None:
        self.transform = transform
        self.image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.transform(image=self.image)["image"])


def _reseed(_: int) -> None:  # the worker_init_fn AlbuAPRSingle's docstring gives
    torch.utils.data.get_worker_info().dataset.transform.set_random_seed(torch.initial_seed() % 2**32)


@pytest.mark.parametrize("seed", [None, 7])
def test_loader_workers_share_albumentations_stream_unless_reseeded(seed):
    """What AlbuAPRSingle's docstring says of DataLoader workers (tester: it promised each worker its own stream
    without ``seed``): every worker and epoch repeats one stream, seed or not; the documented worker_init_fn gives each
    worker and epoch its own, repeatable with the loader's generator."""
    def epochs(init):
        loader = torch.utils.data.DataLoader(_Items(A.Compose([AlbuAPRSingle(recombine_p=1.0)], seed=seed)),
                                             batch_size=1, num_workers=2, worker_init_fn=init,
                                             generator=torch.Generator().manual_seed(0))
        return [[b[0] for b in loader] for _ in range(2)]

    (a, b) = epochs(None)
    assert torch.equal(a[0], a[1]) and torch.equal(a[0], b[0])  # items 0 and 1 come from workers 0 and 1
    (c, d), (e, _) = epochs(_reseed), epochs(_reseed)
    assert not torch.equal(c[0], c[1]) and not torch.equal(c[0], d[0])
    assert all(torch.equal(x, y) for x, y in zip(c, e, strict=True))


def test_a_channels_first_array_is_refused_by_both_transforms():
    """AlbuAPRSingle refused a (C, H, W) array; AlbuAPRPair recombined it as a 3-pixel-tall image of 32 channels."""
    chw = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    hwc = np.ascontiguousarray(chw.transpose(1, 2, 0))
    for t in (AlbuAPRSingle(p=1.0), AlbuAPRPair(p=1.0)):
        with pytest.raises(ValueError, match="looks like channels-first"):
            A.Compose([t], seed=0)(image=chw, apr_metadata=[chw])
    assert A.Compose([AlbuAPRPair(p=1.0)], seed=0)(image=hwc, apr_metadata=[hwc[::-1].copy()])["image"].shape == hwc.shape
