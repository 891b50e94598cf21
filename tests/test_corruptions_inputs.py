"""No silent wrong answers from corruption inputs: 0..255 floats, and on-disk -C sets that do not match
the clean set (float labels, other length, other image size)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aprkit.augment import APRSingle, APRSingleBatch
from aprkit.corruptions import RandomCorruption, corrupt
from conftest import natural_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("scale", [255.0, 1.9])
def test_float_images_above_one_are_refused(scale: float) -> None:
    """The corruptions refuse any float value outside [0, 1]; APR-S, which clamps its views, takes another
    augmentation's overshoot (up to 2) and refuses 0..255 floats."""
    x = torch.rand(2, 3, 16, 16) * scale
    advice = "divide 0..255 values by 255" if scale > 2 else r"overshoot\? clamp it first"
    with pytest.raises(ValueError, match=rf"expected float images in \[0, 1\].*{advice}"):
        corrupt(x, "contrast", 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        RandomCorruption("contrast", 3)(x)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt(-x, "fog", 1)
    if scale < 2:
        assert APRSingleBatch(p=1.0, seed=0)(x).shape == x.shape
        return
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        APRSingle(p=1.0, seed=0)(x[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        APRSingleBatch(p=1.0, seed=0)(x)


def test_unit_range_floats_and_nan_still_handled() -> None:
    x = torch.rand(2, 3, 16, 16)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0
    assert corrupt(x, "contrast", 3).shape == x.shape
    assert APRSingle(p=1.0, seed=0)(x[0]).shape == x[0].shape
    x[0, 0, 0, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        corrupt(x, "contrast", 3)


class Mean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10]


def _clean(n: int = 12, size: int = 32):
    from aprkit.eval.engine.datasets import TensorImageDataset

    return TensorImageDataset(natural_images(n, size, seed=1), torch.arange(n) % 10)


def _write_c(root, n: int, size: int = 32, labels: np.ndarray | None = None):
    root.mkdir(parents=True, exist_ok=True)
    imgs = natural_images(n, size, seed=1).permute(0, 2, 3, 1).numpy()
    np.save(root / "fog.npy", np.concatenate([imgs] * 5))
    np.save(root / "labels.npy", np.tile(np.arange(n) % 10, 5) if labels is None else labels)
    return root


def _eval(root, clean, limit=None):
    from aprkit.eval import evaluate

    return evaluate(Mean(), suite="corruption", data=clean, corrupted=f"cifar10-c:{root}", corruptions=["fog"],
                    severities=[1], limit=limit, device="cpu", progress=False, report=False, model_id="m",
                    options={"check_classes": False})


def test_on_disk_c_set_must_match_the_clean_set(tmp_path) -> None:
    clean = _clean(12)
    assert _eval(_write_c(tmp_path / "ok", 12), clean)["corruption"]["cells"]["fog"]["1"]["n"] == 12
    with pytest.raises(ValueError, match="has 5 images .* clean set has 12"):
        _eval(_write_c(tmp_path / "short", 5), clean)
    with pytest.raises(ValueError, match=r"has 5 images but the clean set has 8 \(of the first 8 asked for: limit 8\)"):
        _eval(tmp_path / "short", clean, limit=8)
    assert _eval(tmp_path / "short", clean, limit=4)["corruption"]["cells"]["fog"]["1"]["n"] == 4
    with pytest.raises(ValueError, match=r"shape \(3, 64, 64\) but the clean set has \(3, 32, 32\)"):
        _eval(_write_c(tmp_path / "big", 12, size=64), clean)


def test_a_c_set_that_cannot_pair_fails_before_the_clean_pass(tmp_path, monkeypatch) -> None:
    import aprkit.eval.suites.corruption as suite
    import aprkit.eval.suites.corruption_cells as cells

    calls = []
    monkeypatch.setattr(cells, "start_predict", lambda *a, **k: calls.append(k.get("desc")))
    with pytest.raises(ValueError, match="has 5 images .* clean set has 12"):
        _eval(_write_c(tmp_path / "short", 5), _clean(12))
    assert calls == []  # the clean images were evaluated first (minutes on ImageNet) before the refusal
    monkeypatch.undo()
    root, clean = _write_c(tmp_path / "ok", 12), _clean(12)
    cache = tmp_path / "cache"
    from aprkit.eval import evaluate

    evaluate_once = lambda: evaluate(Mean(), suite="corruption", data=clean, corrupted=f"cifar10-c:{root}",  # noqa: E731
                                     corruptions=["fog"], severities=[1], device="cpu", progress=False, report=False,
                                     model_id="m", options={"check_classes": False}, cache_dir=cache)
    first = evaluate_once()
    opened = []
    for module in (suite, cells):
        monkeypatch.setattr(module, "_open_corrupted", lambda *a: opened.append(a))
    assert evaluate_once()["corruption"] == first["corruption"] and opened == []  # a cached run reads no -C data


def test_on_disk_c_labels_must_be_integers(tmp_path) -> None:
    from aprkit.data.corrupted import cifar_c

    root = _write_c(tmp_path / "c", 4, labels=np.tile(np.arange(4) % 10, 5).astype(np.float64) + 0.7)
    with pytest.raises(ValueError, match="integer class labels, got dtype float64"):
        cifar_c(root, "fog", 1)


@pytest.mark.filterwarnings("ignore::aprkit.corruptions.PresetSizeWarning")  # 3-4 px images, imagenet preset
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_pixelate_refuses_images_it_would_shrink_to_nothing(dtype: torch.dtype) -> None:
    """ImageNet severity 5 shrinks to a quarter first: 3 px images would become 0 px (a clear error, not a
    ZeroDivisionError from the resampling weights); 4 px images work."""
    x = torch.zeros(2, 3, 3, 3, dtype=dtype)
    with pytest.raises(ValueError, match="pixelate at severity 5 .* at least 4 px per side"):
        corrupt(x, "pixelate", 5, "imagenet")
    assert corrupt(torch.zeros(2, 3, 4, 4, dtype=dtype), "pixelate", 5, "imagenet").shape == (2, 3, 4, 4)


@pytest.mark.parametrize(("size", "preset"), [(32, "cifar"), (24, "cifar"), (64, "tinyimagenet"), (224, "imagenet")])
def test_default_preset_follows_the_image_size(size: int, preset: str) -> None:
    """Without ``preset=``, the parameters are those made for the image size (the cifar ones leave a 224-px image
    almost unchanged); images of up to 32 px keep the cifar ones."""
    from aprkit.corruptions import corrupt_image

    x = natural_images(2, size)
    want = corrupt(x, "pixelate", 5, preset)
    assert torch.equal(corrupt(x, "pixelate", 5), want)
    assert torch.equal(RandomCorruption("pixelate", 5)(x), want)
    img = x[0].permute(1, 2, 0).numpy()
    assert np.array_equal(corrupt_image(img, "pixelate", 5), want[0].permute(1, 2, 0).numpy())


def test_explicit_preset_far_from_the_image_size_warns() -> None:
    import warnings

    from aprkit.corruptions import PresetSizeWarning

    with pytest.warns(PresetSizeWarning, match=r"preset 'cifar' .* 32-px images, but these images are 224x224 px.*"
                                               r"the preset for this size is 'imagenet'"):
        corrupt(natural_images(1, 224), "pixelate", 5, "cifar")
    with pytest.warns(PresetSizeWarning, match="the preset for this size is 'cifar'"):
        RandomCorruption("contrast", 1, preset="imagenet")(natural_images(1, 32))
    with warnings.catch_warnings():  # near the preset's size, or no better preset: no warning
        warnings.simplefilter("error", PresetSizeWarning)
        corrupt(natural_images(1, 40), "pixelate", 5, "cifar")
        corrupt(natural_images(1, 16), "pixelate", 5, "cifar")
        corrupt(natural_images(1, 120), "pixelate", 5, "imagenet")


def test_random_corruption_validates_the_whole_input() -> None:
    """Range, dtype and channels are checked for every call, not only when an image is drawn for corruption
    (``p=0``: none is)."""
    with pytest.raises(ValueError, match=r"expected float images in \[0, 1\]"):
        RandomCorruption("contrast", 3, p=0.0)(natural_images(2, 16).float())
    gray = natural_images(2, 16, channels=1)
    with pytest.raises(ValueError, match=r"snow needs RGB images .*shape \(2, 1, 16, 16\)"):
        RandomCorruption(["contrast", "snow"], 3, p=0.0)(gray)
    with pytest.raises(ValueError, match="frost needs RGB images"):
        RandomCorruption("frost", p=0.0)(gray[0, 0].numpy())
    with pytest.raises(TypeError, match="uint8 array"):
        RandomCorruption("contrast", p=0.0)(np.zeros((8, 8, 3), np.float32))
    assert torch.equal(RandomCorruption("contrast", p=0.0)(gray), gray)  # gray images suit the other corruptions


def test_shot_noise_takes_floats_within_the_range_slack() -> None:
    """Floats up to 1 + 1e-3 pass the range check: with per-image seeds shot noise raised a Poisson-rate error
    about 500.25; now the rates are clamped to [0, c] on every path (the same output as the clamped input)."""
    from aprkit.corruptions import item_seeds

    x = natural_images(2, 16).float() / 255
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 1.0005, -0.0005
    clamped = x.clamp(0, 1)
    seeds = item_seeds(0, "shot_noise", 1, "cifar", range(2))
    assert torch.equal(corrupt(x, "shot_noise", 1, seeds=seeds), corrupt(clamped, "shot_noise", 1, seeds=seeds))
    for s in (1, 5):
        a = corrupt(x, "shot_noise", s, generator=torch.Generator().manual_seed(s))
        assert torch.equal(a, corrupt(clamped, "shot_noise", s, generator=torch.Generator().manual_seed(s)))


def test_16bit_images_are_read_as_rounded_8bit(tmp_path) -> None:
    """16-bit images are mapped to 8 bits, (v + 128) // 257, by the image folders' decoder, in ``corrupt_image`` and in
    the -C writers' loader; PIL's conversion clipped them at 255 (a 0..65535 ramp came out almost white)."""
    from PIL import Image

    from aprkit.corruptions import corrupt_image
    from aprkit.corruptions.dataset import load_image_folder

    v = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    rgb = np.repeat(((v.astype(np.int64) + 128) // 257).astype(np.uint8)[..., None], 3, axis=2)
    want = np.asarray(corrupt_image(Image.fromarray(rgb), "contrast", 1, seed=0))
    for im in (Image.fromarray(v), Image.fromarray(v.astype(np.int32))):  # modes I;16 and I
        out = corrupt_image(im, "contrast", 1, seed=0)
        assert out.mode == "RGB" and np.array_equal(np.asarray(out), want)
    (tmp_path / "c").mkdir()
    Image.fromarray(v).save(tmp_path / "c" / "a.png")  # torchvision's decoder
    Image.fromarray(v).save(tmp_path / "c" / "b.tif")  # PIL's
    images, _ = load_image_folder(tmp_path)
    assert np.array_equal(images, np.stack([rgb, rgb]))


def test_8bit_values_in_mode_i_stay_8bit() -> None:
    """An 8-bit image converted to PIL mode ``I`` (values 0..255) keeps its levels; it was read as 16-bit (all black)."""
    from PIL import Image

    from aprkit.data.folder import pil_to_array

    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(pil_to_array(Image.fromarray(g).convert("I"), 1), g)
    assert np.array_equal(pil_to_array(Image.fromarray(g).convert("I"), 3), np.repeat(g[..., None], 3, axis=2))
    wide = g.astype(np.int32) * 257  # beyond 255: 16-bit levels, as before
    assert np.array_equal(pil_to_array(Image.fromarray(wide), 1), g)


class _Constant(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.tf = RandomCorruption(["gaussian_noise", "shot_noise", "impulse_noise"],
                                   generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tf(torch.full((3, 8, 8), 0.5))


def test_random_corruption_draws_other_streams_in_each_dataloader_worker() -> None:
    """With a seeded generator every worker's copy drew the same stream: 4 distinct images out of 8."""
    def run() -> torch.Tensor:
        torch.manual_seed(1)
        return torch.cat(list(torch.utils.data.DataLoader(_Constant(), batch_size=1, num_workers=2)))

    first = run()
    assert len({tuple(t.flatten().tolist()) for t in first}) == 8 and torch.equal(first, run())


@pytest.mark.parametrize("name", ["shot_noise", "glass_blur", "gaussian_blur", "motion_blur"])
def test_inputs_that_require_grad_are_corrupted_without_it(name: str) -> None:
    """These crashed (NumPy reads, out= products); corruptions are not differentiable, the result never requires
    grad."""
    x = torch.rand(2, 3, 72, 72, requires_grad=True)
    y = corrupt(x, name, 3, "tinyimagenet", torch.Generator().manual_seed(0))
    assert not y.requires_grad
    assert torch.equal(y, corrupt(x.detach(), name, 3, "tinyimagenet", torch.Generator().manual_seed(0)))
    assert RandomCorruption(name, severities=np.int64(3))(x).shape == x.shape


def test_writers_take_a_single_name_and_severity(tmp_path) -> None:
    from aprkit.corruptions.dataset import write_cifar_c

    x = natural_images(2, 32).permute(0, 2, 3, 1).numpy()
    assert [p.name for p in write_cifar_c(x, tmp_path, "fog", severities=3, progress=False)] == ["fog.npy"]
    assert np.load(tmp_path / "fog.npy").shape == x.shape


def test_shot_noise_of_float_8_bit_images_equals_their_uint8_originals() -> None:
    """Float images of 8-bit levels (ToTensor) drew other Poisson noise than the same uint8 images; the other
    corruptions already agreed."""
    from aprkit.corruptions import item_seeds

    u8 = (natural_images(3, 40) // 1).to(torch.uint8)
    seeds = item_seeds(0, "shot_noise", 3, "cifar", torch.arange(3))
    ref = corrupt(u8, "shot_noise", 3, "cifar", seeds=seeds)
    for dtype in (torch.float32, torch.float64):
        out = corrupt(u8.to(dtype) / 255, "shot_noise", 3, "cifar", seeds=seeds)
        assert torch.equal((out * 255 + 5e-5).floor().to(torch.uint8), ref)  # (uint8 results are truncated)
    other = corrupt(u8.float() / 255 * 0.999, "shot_noise", 3, "cifar", seeds=seeds)  # not levels: still runs
    assert other.shape == ref.shape


def test_shot_noise_decides_the_8_bit_path_per_image() -> None:
    """The k / 255 test ran over a whole chunk: one non-level image moved the noise of its 105 neighbours."""
    from aprkit.corruptions import item_seeds

    u8 = natural_images(4, 32).to(torch.uint8)
    x = u8.float() / 255
    x[2] = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    seeds = item_seeds(0, "shot_noise", 3, "cifar", torch.arange(4))
    full = corrupt(x, "shot_noise", 3, "cifar", seeds=seeds)
    assert torch.equal(full, torch.cat([corrupt(x[i:i + 1], "shot_noise", 3, "cifar", seeds=seeds[i:i + 1])
                                        for i in range(4)]))
    ref = corrupt(u8, "shot_noise", 3, "cifar", seeds=seeds)
    assert torch.equal((full[[0, 1, 3]] * 255 + 5e-5).floor().to(torch.uint8), ref[[0, 1, 3]])


def test_float_pixelate_does_not_depend_on_the_thread_count():
    """The float path's row resize was a BLAS product with fractional weights: 4 threads moved values by an ulp."""
    from aprkit.corruptions import corrupt

    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = corrupt(x, "pixelate", 4)
        torch.set_num_threads(4)
        assert torch.equal(corrupt(x, "pixelate", 4), one)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(corrupt(x[1:], "pixelate", 4), one[1:])


def test_item_seeds_checks_its_key_parts_and_takes_empty_lists():
    from aprkit.corruptions import item_seeds

    assert item_seeds(0, "fog", 3, "cifar", []).dtype == torch.int64 and len(item_seeds(0, "fog", 3, "cifar", range(0))) == 0
    for args, exc, message in (((0, "fgo", 3, "cifar"), ValueError, "did you mean 'fog'"),
                               ((0.7, "fog", 3, "cifar"), TypeError, "seed must be an integer"),
                               ((0, "fog", 9, "cifar"), ValueError, "severity"),
                               ((0, "fog", 3, None), ValueError, "preset"),
                               ((-1, "fog", 3, "cifar"), ValueError, r"seed must be an integer in 0\.\.2\*\*63 - 1"),
                               ((2**63, "fog", 3, "cifar"), ValueError, "seed must be an integer in")):
        with pytest.raises(exc, match=message):
            item_seeds(*args, [1])


def test_random_corruption_passes_empty_batches_and_cuts_the_graph():
    from aprkit.corruptions import RandomCorruption

    empty = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    assert RandomCorruption()(empty) is empty
    out = corrupt(empty, "fog", 3, seeds=[])  # as RandomCorruption: a loop's empty last batch comes back empty
    assert out.shape == empty.shape and out.dtype == torch.uint8 and out is not empty
    with pytest.raises(ValueError, match="seeds must hold one seed per image: expected 0"):
        corrupt(empty, "fog", 3, seeds=[1])
    for kwargs, what in (({"names": ["all", "fog"]}, "names"), ({"severities": [1, 1, 5]}, "severities")):
        with pytest.raises(ValueError, match=f"{what} .* repeat a value \\(each is drawn uniformly"):
            RandomCorruption(**kwargs)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    assert not RandomCorruption(p=1.0, generator=torch.Generator().manual_seed(0))(x).requires_grad


def test_random_corruption_passes_the_gradient_of_untouched_images():
    from aprkit.corruptions import RandomCorruption

    aug = RandomCorruption(p=0.5, generator=torch.Generator().manual_seed(1))
    x = torch.rand(8, 3, 32, 32, requires_grad=True)
    params = aug.generate_parameters(8)
    assert 0 < int(params["apply"].sum()) < 8
    aug.apply(x, params).sum().backward()
    per_image = x.grad.mean((1, 2, 3))
    assert torch.equal(per_image == 1, ~params["apply"]) and torch.all(per_image[params["apply"]] == 0)


def test_corrupt_image_refusals_name_the_callers_image_and_seed():
    """A colour corruption of a gray image names the PIL mode or the array's shape the caller gave (not the (C, H, W)
    tensor made of it); a seed that is no integer is refused, not truncated (7.9 ran as 7)."""
    from PIL import Image

    from aprkit.corruptions import corrupt_image

    with pytest.raises(ValueError, match=r"snow needs RGB images .*got a PIL image of mode L$"):
        corrupt_image(Image.new("L", (40, 32)), "Snow", 3, seed=0)
    with pytest.raises(ValueError, match=r"got an array of shape \(32, 40, 1\)$"):
        corrupt_image(np.zeros((32, 40, 1), np.uint8), "snow", 3, seed=0)
    img = np.zeros((8, 8, 3), np.uint8)
    for bad, err in ((7.9, TypeError), ("7", TypeError), (True, TypeError), (2**64, ValueError), (-1, ValueError)):
        with pytest.raises(err, match="seed must be an integer in 0..2"):
            corrupt_image(img, "gaussian_noise", 3, seed=bad)
    assert np.array_equal(corrupt_image(img, "gaussian_noise", 3, seed=np.int64(7)),
                          corrupt_image(img, "gaussian_noise", 3, seed=7))


def test_an_empty_leading_dimension_is_an_empty_batch():
    """(..., C, H, W) with no image in any leading dimension comes back empty, not only when the first is 0."""
    for shape in ((0, 2, 3, 16, 16), (2, 0, 3, 16, 16)):
        out = corrupt(torch.zeros(shape, dtype=torch.uint8), "fog", 3)
        assert out.shape == shape and out.dtype == torch.uint8


def test_a_uint64_seed_beyond_int64_is_refused_as_a_python_int_is():
    x = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    for seeds in ([2**63 + 5], np.array([2**63 + 5], dtype=np.uint64)):
        with pytest.raises(ValueError, match="int64 range"):
            corrupt(x, "gaussian_noise", 3, seeds=seeds)
    ok = corrupt(x, "gaussian_noise", 3, seeds=np.array([5], dtype=np.uint64))
    assert torch.equal(ok, corrupt(x, "gaussian_noise", 3, seeds=[5]))


def test_the_advice_for_float_images_of_another_scale_is_to_divide() -> None:
    """Values up to 15 were told "a little outside: clamp it first" (reviewer): clamping gives a white image."""
    with pytest.raises(ValueError, match="divide 0..255 values by 255"):
        corrupt(torch.rand(1, 3, 32, 32) * 15, "fog", 3)


def test_severities_read_as_the_other_entry_points_read_them() -> None:
    """A 0-dim integer tensor is a severity (APRSingle's severity took one, corrupt refused it), one float is refused
    by name (RandomCorruption(severities=2.5) failed with "'float' object is not iterable"), and a channels-last batch
    is named as such (it was "must have 1 or 3 channels") (reviewer)."""
    x = natural_images(2, 32)
    assert torch.equal(corrupt(x, "contrast", torch.tensor(3)), corrupt(x, "contrast", 3))
    assert RandomCorruption("contrast", severities=torch.tensor(2)).severities == (2,)
    assert RandomCorruption("contrast", severities=np.array([1, 4])).severities == (1, 4)
    for bad in (2.5, "3", torch.tensor(2.0)):
        with pytest.raises(TypeError, match="severity must be an integer 1-5, got"):
            RandomCorruption("contrast", severities=bad)
    for call in (lambda: corrupt(x.permute(0, 2, 3, 1), "contrast", 3),
                 lambda: RandomCorruption("contrast")(x.permute(0, 2, 3, 1))):
        with pytest.raises(ValueError, match=r"looks like channels-last .* x.permute\(0, 3, 1, 2\) for a batch"):
            call()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_8bit_images_get_their_uint8_twins_shot_noise(dtype: torch.dtype) -> None:
    """A float16 k / 255 lies up to 0.06 of a level off k, so half-precision images of 8-bit levels took the general
    Poisson sampler (other counts than their uint8 twins: up to 10 levels apart at some pixels; reviewer); they are
    read to their precision now: the same draws, the output a level off at most (its own rounding)."""
    from aprkit.corruptions import item_seeds

    x = natural_images(4, 32)
    seeds = item_seeds(0, "shot_noise", 3, "cifar", range(4))
    ref = corrupt(x, "shot_noise", 3, "cifar", seeds=seeds).float()
    out = corrupt((x.float() / 255).to(dtype), "shot_noise", 3, "cifar", seeds=seeds)
    assert out.dtype == dtype and float(((out.float() * 255).round() - ref).abs().max()) <= 1


def test_an_enclosing_autocast_changes_no_corruption() -> None:
    """Under ``torch.autocast`` the separable blurs' matrix products ran in bfloat16 into float32 buffers (gaussian
    blur, glass blur, elastic transform and spatter failed) and elastic transform's dense operator moved pixels by
    about 3 levels at 224 px (tester): autocast is off inside ``corrupt``."""
    from aprkit.corruptions import list_corruptions

    x = natural_images(2, 32).float() / 255
    for name in list_corruptions():
        want = corrupt(x, name, 3, seeds=[1, 2])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = corrupt(x, name, 3, seeds=[1, 2])
        assert torch.equal(got, want), name


@pytest.mark.parametrize("name", ["glass_blur", "motion_blur", "pixelate"])
def test_float_images_of_8bit_levels_get_their_uint8_results(name: str) -> None:
    """Glass blur's inner truncation took float16 images of 8-bit levels a level down (half of all values at
    severity 1), motion blur some; float32 images of 8-bit levels got pixelate's exact box means instead of Pillow's
    bytes (a third of the values a level off at severity 5). Each now gives its uint8 twin's result (corruptions
    reviewer); float images that are no 8-bit levels keep the exact means."""
    u8 = natural_images(4, 32, seed=3)
    seeds = torch.arange(4)
    for severity in (1, 5):
        want = corrupt(u8, name, severity, "cifar", seeds=seeds)
        single = corrupt(u8.float() / 255, name, severity, "cifar", seeds=seeds)
        for dtype in (torch.float32, torch.float64):  # truncated as the uint8 results are: the same bytes
            got = corrupt(u8.to(dtype) / 255, name, severity, "cifar", seeds=seeds)
            assert torch.equal(torch.floor(got * 255 + 5e-5), want.to(dtype)), (dtype, severity)
        half = corrupt(u8.half() / 255, name, severity, "cifar", seeds=seeds).float()  # its own rounding only
        assert float((half - single).abs().max()) < 0.3 / 255, severity
    if name == "pixelate":  # a batch of an 8-bit image and another: each as it is
        other = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        mixed = corrupt(torch.cat([u8[:1] / 255, other]), name, 5, "cifar")
        assert torch.equal(torch.floor(mixed[:1] * 255 + 5e-5), corrupt(u8[:1], name, 5, "cifar").float())
        assert torch.equal(mixed[1:], corrupt(other, name, 5, "cifar"))
