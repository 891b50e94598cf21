"""``APRSingleV2`` checked the way torchvision checks its own ``transforms.v2`` (AugMix's battery): input types,
containers with non-image items, pickling, dtype/device, batched inputs, videos, rejected annotations, and
per-worker seeded streams in a ``DataLoader``."""

from __future__ import annotations

import pickle

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from aprkit.augment.adapters import APRSingleV2
from aprkit.augment.adapters.torchvision_v2 import ANNOTATION_TYPES

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _pil(img: torch.Tensor) -> PIL.Image.Image:
    return PIL.Image.fromarray(img.permute(1, 2, 0).numpy())


def _changed(a: torch.Tensor, b: torch.Tensor) -> bool:
    return not torch.equal(a, b)


# ------------------------------------------------------------------------------------------- input types
@pytest.mark.parametrize("kind", ["pil", "tensor", "image", "image_f32", "batched", "batched_nd", "video"])
def test_input_types_keep_type_shape_dtype(kind, images_u8):
    x = {"pil": _pil(images_u8[0]), "tensor": images_u8[0], "image": tv_tensors.Image(images_u8[0]),
         "image_f32": tv_tensors.Image(images_u8[0].float() / 255), "batched": images_u8,
         "batched_nd": images_u8.reshape(2, 4, 3, 32, 32), "video": tv_tensors.Video(images_u8[:4])}[kind]
    out = APRSingleV2(p=1.0, seed=0)(x)
    assert type(out) is type(x)
    if isinstance(x, PIL.Image.Image):
        assert out.size == x.size and out.mode == x.mode
        assert _changed(torch.as_tensor(np.array(out)), torch.as_tensor(np.array(x)))
    else:
        assert out.shape == x.shape and out.dtype == x.dtype
        assert _changed(out.as_subclass(torch.Tensor), x.as_subclass(torch.Tensor))


def test_pil_grayscale(images_u8):
    img = _pil(images_u8[0]).convert("L")
    out = APRSingleV2(p=1.0, seed=1)(img)
    assert isinstance(out, PIL.Image.Image) and out.mode == "L" and out.size == img.size


# ------------------------------------------------------------------------------------------- containers
def test_containers_pass_non_image_items_through(images_u8):
    img = tv_tensors.Image(images_u8[0])
    label, name, extra = 3, "cat_001.png", torch.tensor([1.5, 2.5])
    sample = {"image": img, "label": label, "meta": {"name": name, "weights": extra}, "pair": (img, label)}
    out = APRSingleV2(p=1.0, seed=2)(sample)
    assert out["label"] == label and out["meta"]["name"] is name
    assert out["meta"]["weights"] is extra  # a pure tensor beside an Image is not an image (v2's heuristic)
    assert isinstance(out["image"], tv_tensors.Image) and _changed(out["image"], img)
    assert torch.equal(out["pair"][0], out["image"]) and out["pair"][1] == label  # one draw per call
    img_out, y = APRSingleV2(p=1.0, seed=2)(img, label)  # several positional inputs, as v2.Compose passes them
    assert y == label and torch.equal(img_out, out["image"])


def test_inside_compose_with_labels(images_u8):
    t = v2.Compose([v2.RandomHorizontalFlip(), APRSingleV2(p=1.0, seed=0), v2.ToDtype(torch.float32, scale=True)])
    out, y = t(tv_tensors.Image(images_u8[0]), 7)
    assert out.dtype == torch.float32 and y == 7 and 0 <= out.min() and out.max() <= 1


# ---------------------------------------------------------------------------- annotations (issue 14 item 1)
@pytest.mark.parametrize("annotation", ["boxes", "mask", "keypoints"])
def test_rejects_geometric_annotations_like_augmix(annotation, images_u8):
    ann = {"boxes": tv_tensors.BoundingBoxes([[4, 4, 20, 20]], format="XYXY", canvas_size=(32, 32)),
           "mask": tv_tensors.Mask(torch.zeros(32, 32, dtype=torch.uint8)),
           "keypoints": tv_tensors.KeyPoints([[10.0, 12.0]], canvas_size=(32, 32))}[annotation]
    sample = {"image": tv_tensors.Image(images_u8[0]), "target": ann}
    with pytest.raises(TypeError, match=type(ann).__name__) as err:
        APRSingleV2(p=1.0, seed=0)(sample)
    assert "AugMix" in str(err.value)
    with pytest.raises(TypeError):  # the host's own reference behaviour for the same sample
        v2.AugMix()(sample)


def test_colour_ops_leave_annotations_in_place_like_colorjitter(images_u8):
    """APR-S with colour ops only refused a mask as if rotate/shear/translate could run (tester)."""
    mask = tv_tensors.Mask(torch.arange(32 * 32).reshape(32, 32) % 3)
    boxes = tv_tensors.BoundingBoxes([[4, 4, 20, 20]], format="XYXY", canvas_size=(32, 32))
    t = APRSingleV2(p=1.0, ops=["autocontrast", "equalize", "posterize", "solarize"], seed=0)
    img, m, b = t(tv_tensors.Image(images_u8[0]), mask, boxes)
    assert torch.equal(m, mask) and torch.equal(b, boxes) and type(b) is tv_tensors.BoundingBoxes
    assert _changed(img, images_u8[0])
    v2.ColorJitter(brightness=0.5)(tv_tensors.Image(images_u8[0]), mask)  # the host's own colour transform takes it
    with pytest.raises(TypeError, match="its rotate ops would move the image"):
        APRSingleV2(p=1.0, ops=["autocontrast", "rotate"], seed=0)(tv_tensors.Image(images_u8[0]), mask)


def test_a_sample_without_an_image_is_refused_like_augmix():
    """A NumPy (H, W, C) image passed through unaugmented and without an error (APRSingle takes such arrays)."""
    arr = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for sample in (arr, 3, (arr, 3)):
        with pytest.raises(TypeError, match="found no image in the sample .*v2.ToImage"):
            APRSingleV2(p=1.0, seed=0)(sample)
        with pytest.raises(TypeError, match="Found no image"):
            v2.AugMix()(sample)
    for label in (torch.tensor(3), torch.tensor([0.0, 1.0])):  # a tensor label is no image (its dtype was reported)
        with pytest.raises(TypeError, match=r"found no image in the sample \(got ndarray, Tensor\).*v2.ToImage"):
            APRSingleV2(p=1.0, seed=0)(arr, label)
    img = v2.ToImage()(arr)
    out, label = APRSingleV2(p=1.0, seed=0)(img, 3)
    assert isinstance(out, tv_tensors.Image) and label == 3 and not torch.equal(out, img)


def test_annotation_types_are_every_geometric_tv_tensor():
    geometric = {t for t in vars(tv_tensors).values()
                 if isinstance(t, type) and issubclass(t, tv_tensors.TVTensor) and t is not tv_tensors.TVTensor}
    assert geometric - {tv_tensors.Image, tv_tensors.Video} == set(ANNOTATION_TYPES)


# ------------------------------------------------------------------------------------- videos (item 6)
def test_video_is_transformed_with_one_draw_per_video(images_u8):
    frames = images_u8[0].expand(5, -1, -1, -1).contiguous()  # one still frame repeated
    video = tv_tensors.Video(frames)
    out = APRSingleV2(p=1.0, seed=3)(video)
    assert isinstance(out, tv_tensors.Video) and out.shape == video.shape and out.dtype == torch.uint8
    assert _changed(out, video)
    assert all(torch.equal(out[t], out[0]) for t in range(5))  # frames share the draws
    two = tv_tensors.Video(torch.stack([frames, frames]))  # (2, T, C, H, W): independent videos
    out2 = APRSingleV2(p=1.0, seed=4)(two)
    assert out2.shape == two.shape and all(torch.equal(out2[1, t], out2[1, 0]) for t in range(5))
    assert _changed(out2[0], out2[1])


def test_video_float_matches_image_batch_with_shared_draws(images_f32):
    video = tv_tensors.Video(images_f32[:3])
    t = APRSingleV2(p=1.0, seed=5)
    out = t(video)
    params = APRSingleV2(p=1.0, seed=5).aprs.batch.generate_parameters((1,))
    want = t.aprs.batch.apply(images_f32[:3], {k: v.repeat(3) for k, v in params.items()})
    torch.testing.assert_close(out.as_subclass(torch.Tensor), want)


# --------------------------------------------------------------------------- batched, dtypes, devices
def test_batched_equals_per_image_with_the_same_draws(images_f32):
    t = APRSingleV2(p=1.0, seed=6)
    out = t(images_f32)
    params = APRSingleV2(p=1.0, seed=6).aprs.batch.generate_parameters((8,))
    for i in range(8):
        one = t.aprs.batch.apply(images_f32[i:i + 1], {k: v[i:i + 1] for k, v in params.items()})[0]
        torch.testing.assert_close(out[i], one)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtype_and_device_preserved_input_untouched(dtype, device, images_u8):
    x = images_u8[:2].to(device)
    x = x if dtype == torch.uint8 else (x.double() / 255).to(dtype)
    before = x.clone()
    out = APRSingleV2(p=1.0, seed=7)(tv_tensors.Image(x))
    assert out.dtype == dtype and out.device == x.device and isinstance(out, tv_tensors.Image)
    assert torch.equal(x, before)
    if dtype != torch.uint8:
        assert 0 <= float(out.min()) and float(out.max()) <= 1


@pytest.mark.parametrize("kind", ["image", "batched", "tv_image"])
def test_channels_last_tensors_are_rejected(kind, images_u8):
    """An HWC tensor was read as C=H (single or batched): it is refused; other channel counts in (C, H, W) run."""
    x = {"image": images_u8[0].permute(1, 2, 0), "batched": images_u8.permute(0, 2, 3, 1),
         "tv_image": tv_tensors.Image(images_u8[0].permute(1, 2, 0))}[kind]
    with pytest.raises(ValueError, match="channels-last"):
        APRSingleV2(p=1.0, seed=0)(x)
    gray, four = images_u8[:, :1], torch.cat([images_u8, images_u8[:, :1]], dim=1)
    assert APRSingleV2(p=1.0, seed=0)(gray).shape == gray.shape
    assert APRSingleV2(p=1.0, seed=0)(tv_tensors.Image(four[0])).shape == four[0].shape


def test_too_few_dims_name_the_single_image_layout():
    with pytest.raises(ValueError, match=r">= 3 dimensions \(\.\.\., C, H, W\), got shape \(16, 16\)"):
        APRSingleV2(p=1.0, seed=0)(torch.rand(16, 16))


def test_float_0_255_is_rejected(images_u8):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        APRSingleV2(p=1.0, seed=0)(images_u8.float())


# ---------------------------------------------------------------------------------- pickling, repr, seeds
def test_pickle_round_trip_keeps_the_stream(images_u8):
    t = APRSingleV2(p=1.0, severity=4, ops=["rotate", "posterize"], seed=8)
    clone = pickle.loads(pickle.dumps(t))
    assert repr(clone) == repr(t) and "severity=4" in repr(t)
    assert torch.equal(clone(images_u8[0]), t(images_u8[0]))
    assert torch.equal(clone(images_u8), t(images_u8))


def test_same_seed_same_output(images_u8):
    assert torch.equal(APRSingleV2(p=1.0, seed=9)(images_u8), APRSingleV2(p=1.0, seed=9)(images_u8))
    assert _changed(APRSingleV2(p=1.0, seed=9)(images_u8), APRSingleV2(p=1.0, seed=10)(images_u8))


# --------------------------------------------------------------------- per-worker streams (issue 14 item 9)
class _Repeat(torch.utils.data.Dataset):
    """The same image at every index, APR-S applied: outputs differ only through the transform's draws."""

    def __init__(self, img: torch.Tensor, transform, n: int = 4) -> None:
        self.img, self.transform, self.n = img, transform, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        info = torch.utils.data.get_worker_info()
        return self.transform(self.img), -1 if info is None else info.id


def _run(dataset, loader_seed: int) -> dict[int, list[torch.Tensor]]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2, multiprocessing_context="fork",
                                         generator=torch.Generator().manual_seed(loader_seed))
    out: dict[int, list[torch.Tensor]] = {}
    for x, wid in loader:
        out.setdefault(int(wid), []).append(x[0])
    return out


def test_seeded_workers_draw_different_reproducible_streams(images_u8):
    ds = _Repeat(images_u8[0], APRSingleV2(p=1.0, seed=11))
    first, again, other = _run(ds, 0), _run(ds, 0), _run(ds, 1)
    assert sorted(first) == [0, 1]
    assert _changed(first[0][0], first[1][0])  # workers no longer repeat each other's draws
    assert all(torch.equal(a, b) for w in (0, 1) for a, b in zip(first[w], again[w]))  # same loader seed: same run
    assert any(_changed(a, b) for w in (0, 1) for a, b in zip(first[w], other[w]))  # new loader seed: new epoch
    main = APRSingleV2(p=1.0, seed=11)  # the main process keeps the plain seeded stream
    assert torch.equal(main(images_u8[0]), APRSingleV2(p=1.0, seed=11)(images_u8[0]))


class _OwnerReseeds(torch.utils.data.Dataset):
    """A host that re-seeds the transform's generator before every draw (as the albumentations adapter does)."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        self.transform.batch.generator.manual_seed(100 + i)
        return self.transform.generate_parameters()["op1"]


def test_worker_streams_leave_an_owner_reseeded_generator_alone():
    from aprkit.augment import APRSingle

    loader = torch.utils.data.DataLoader(_OwnerReseeds(APRSingle(seed=0)), batch_size=1, num_workers=2,
                                         multiprocessing_context="fork")
    main = _OwnerReseeds(APRSingle(seed=0))
    assert [int(x) for x in loader] == [int(main[i]) for i in range(4)]


def test_batched_tensor_draws_do_not_depend_on_the_batch_size():
    from conftest import natural_images

    x = natural_images(8, 12, seed=3)
    want = APRSingleV2(p=0.5, seed=1)(x)[:4]
    assert torch.equal(APRSingleV2(p=0.5, seed=1)(x[:4]), want)


def test_seeded_transforms_reach_spawned_workers(images_u8):
    """Generators travel to other processes as plain bytes: a seeded transform reaches DataLoader workers started with
    spawn (torch's multiprocessing pickler shared the generator's state through shared memory and the worker died,
    pytorch#146828); the copy keeps the seed and position (so per-worker re-seeding still applies), and a generator
    shared by two transforms stays shared."""
    import io
    import pickle
    from multiprocessing.reduction import ForkingPickler

    from aprkit.augment import APRPair
    from aprkit.corruptions import RandomCorruption
    from aprkit.hidden import FeatureAPR

    ds = _Repeat(images_u8[0], APRSingleV2(p=1.0, seed=11), n=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1, multiprocessing_context="spawn")
    assert len(list(loader)) == 2
    g = torch.Generator().manual_seed(3)
    holders = [APRSingleV2(generator=g).aprs.batch, APRPair(generator=g), RandomCorruption(["contrast"], generator=g),
               FeatureAPR(generator=g)]
    torch.rand(2, generator=g)
    buf = io.BytesIO()
    ForkingPickler(buf, pickle.HIGHEST_PROTOCOL).dump(holders)
    assert b"torch.storage" not in buf.getvalue() and b"rebuild_storage" not in buf.getvalue()
    copies = pickle.loads(buf.getvalue())
    assert all(c.generator is copies[0].generator for c in copies) and copies[0].generator.initial_seed() == 3
    assert torch.equal(torch.rand(4, generator=copies[0].generator), torch.rand(4, generator=g))


# ------------------------------------------------------------------- the batch transforms and RandomCorruption
def test_batch_transforms_hand_back_the_tv_tensor_type_whatever_the_draw(images_f32):
    """APRPair gave back a plain tensor for a recombined ``tv_tensors.Image`` batch and the Image itself for a batch
    left as it was: the type depended on the draw (``v2.CutMix`` always returns an Image)."""
    from aprkit.augment import APRPair, APRSingleBatch

    x = tv_tensors.Image(images_f32[:4])
    pair = APRPair(p=0.5, seed=0)
    kinds = {type(pair(x)) for _ in range(12)}
    assert kinds == {tv_tensors.Image}
    out, y = APRPair(p=1.0, seed=0)(x, torch.arange(4))
    assert type(out) is tv_tensors.Image and y.tolist() == [0, 1, 2, 3]
    assert type(APRSingleBatch(p=1.0, seed=0)(x)) is tv_tensors.Image
    assert type(APRPair(p=1.0, seed=0)(images_f32[:4])) is torch.Tensor
    # the replay (apply with drawn params) and the per-image APRSingle too: an Image whatever the draw
    kinds = set()
    for _ in range(12):
        kinds.add(type(pair.apply(x, pair.generate_parameters(x.shape))))
    assert kinds == {tv_tensors.Image}
    from aprkit.augment import APRSingle

    for img in (tv_tensors.Image(images_f32[0]), tv_tensors.Image((images_f32[0] * 255).to(torch.uint8))):
        assert {type(APRSingle(seed=k)(img)) for k in range(6)} == {tv_tensors.Image}


def test_random_corruption_takes_a_v2_sample_and_shares_a_videos_draw(images_u8):
    """RandomCorruption inside ``v2.Compose`` with a label failed ("takes 2 positional arguments"), a dict sample
    too; a Video's frames were corrupted each with its own draw (v2's transforms and APRSingleV2 share one)."""
    from aprkit.corruptions import RandomCorruption

    rc = RandomCorruption(names=["contrast", "gaussian_noise"], generator=torch.Generator().manual_seed(0))
    img, label = v2.Compose([v2.ToImage(), rc])(_pil(images_u8[0]), 3)
    assert type(img) is tv_tensors.Image and label == 3 and _changed(img, images_u8[0])
    out = v2.Compose([v2.ToImage(), rc])({"image": _pil(images_u8[1]), "label": 5})
    assert type(out["image"]) is tv_tensors.Image and out["label"] == 5
    x, y = rc(images_u8[2].float() / 255, torch.tensor(2))  # a plain tensor and its label: v2's rule, first one
    assert x.shape == (3, 32, 32) and int(y) == 2
    mask = tv_tensors.Mask(torch.arange(32 * 32).reshape(32, 32) % 3)
    img, kept = rc(tv_tensors.Image(images_u8[0]), mask)  # colour and noise corruptions leave a mask in place
    assert type(kept) is tv_tensors.Mask and torch.equal(kept, mask) and _changed(img, images_u8[0])
    with pytest.raises(TypeError, match="RandomCorruption got Mask.*"
                                        "elastic_transform moves the image's pixels"):
        RandomCorruption(names=["contrast", "elastic_transform"], seed=0)(tv_tensors.Image(images_u8[0]), mask)
    with pytest.raises(TypeError, match="RandomCorruption found no image in the sample \(got ndarray, int\)"):
        rc(images_u8[0].permute(1, 2, 0).numpy().astype(np.float32) / 255, 3)  # passed through uncorrupted before
    with pytest.raises(TypeError, match="NumPy image of shape \\(32, 32, 3\\).*pass that image alone"):
        rc(images_u8[0].permute(1, 2, 0).numpy(), 3)  # v2's rules would pass it through clean
    img, extra = rc(tv_tensors.Image(images_u8[0]), np.zeros((5, 2)))  # a non-image array passes through
    assert type(img) is tv_tensors.Image and extra.shape == (5, 2)
    params = rc.generate_parameters(images_u8.shape)
    with pytest.raises(TypeError, match=r"to replay drawn parameters call \.apply\(images, params\)"):
        rc(images_u8, params)
    frames = tv_tensors.Video((images_u8[0].float() / 255).expand(2, 4, 3, 32, 32).clone())
    for _ in range(3):
        video = rc(frames)
        assert type(video) is tv_tensors.Video and video.shape == frames.shape
        assert all(torch.equal(video[:, 0], video[:, t]) for t in range(4))


def test_settings_are_attributes_and_generate_parameters_takes_a_shape_or_a_size():
    """APRSingleV2's p / severity / ops / dims raised AttributeError (v2.AugMix exposes its settings);
    RandomCorruption.generate_parameters took only a batch size, the APR transforms only a shape."""
    from aprkit.augment import APRPair, APRSingleBatch
    from aprkit.corruptions import RandomCorruption

    t = APRSingleV2(p=0.3, severity=2, dims="hw")
    assert (t.p, t.severity, t.dims) == (0.3, 2.0, "hw") and "autocontrast" in t.ops
    t.p = 0.7
    assert t.aprs.batch.p == 0.7
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        t.p = 2
    shape = torch.Size([4, 3, 8, 8])
    for make in (lambda: RandomCorruption(generator=torch.Generator().manual_seed(0)),
                 lambda: APRPair(p=1.0, seed=0), lambda: APRSingleBatch(seed=0)):
        a, b = make().generate_parameters(shape), make().generate_parameters(4)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        with pytest.raises(ValueError, match="batch_shape must describe a batch"):
            make().generate_parameters(())
