"""aprkit.corruptions: every corruption x severity x preset, determinism, errors, helpers, transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aprkit.corruptions import (
    BENCHMARK,
    DETERMINISTIC,
    EXTRA,
    PARAMS,
    RandomCorruption,
    corrupt,
    corrupt_image,
    find_frost_dir,
    list_corruptions,
)
from conftest import natural_images

ALL = list_corruptions()


def _have_frost() -> bool:
    try:
        find_frost_dir()
        return True
    except FileNotFoundError:
        return False


HAVE_FROST = _have_frost()
FROST_SKIP = "frost textures not found: `pip install --no-deps imagecorruptions` or set APRKIT_FROST_DIR"


def _skip_frost(name: str) -> None:
    if name == "frost" and not HAVE_FROST:
        pytest.skip(FROST_SKIP)

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_names() -> None:
    assert len(BENCHMARK) == 15 and len(EXTRA) == 4 and len(set(ALL)) == 19
    assert list_corruptions("benchmark") == BENCHMARK and list_corruptions("extra") == EXTRA
    for preset in PARAMS.values():
        assert set(preset) == set(ALL) and all(len(v) == 5 for v in preset.values())


@pytest.mark.parametrize("name", ALL)
def test_cifar_all_severities_uint8_and_float(name: str) -> None:
    _skip_frost(name)
    xu = natural_images(2, 32)
    xf = natural_images(2, 32, seed=1).float() / 255
    for s in range(1, 6):
        for x in (xu, xf):
            before = x.clone()
            y = corrupt(x, name, s, "cifar", _gen(s))
            assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
            assert torch.equal(x, before), "input was modified"
            if y.is_floating_point():
                assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    # float64 and float16 keep their dtype too
    for dt in (torch.float64, torch.float16):
        assert corrupt(xf.to(dt), name, 3, "cifar", _gen()).dtype == dt


@pytest.mark.parametrize("name", ALL)
def test_tinyimagenet_all_severities(name: str) -> None:
    _skip_frost(name)
    xu = natural_images(1, 64, seed=2)
    for s in range(1, 6):
        for x in (xu, xu.float() / 255):
            y = corrupt(x, name, s, "tinyimagenet", _gen(s))
            assert y.shape == x.shape and y.dtype == x.dtype


@pytest.mark.parametrize("name", ALL)
def test_imagenet_all_severities(name: str) -> None:
    _skip_frost(name)
    xu = natural_images(1, 224, seed=3)
    for s in range(1, 6):
        x = xu if s % 2 else xu.float() / 255  # uint8 and float alternate (both covered per corruption)
        y = corrupt(x, name, s, "imagenet", _gen(s))
        assert y.shape == x.shape and y.dtype == x.dtype


def test_leading_dims_and_single_image() -> None:
    x = natural_images(4, 32).view(2, 2, 3, 32, 32)
    assert corrupt(x, "gaussian_noise", 2).shape == x.shape
    assert corrupt(x[0, 0], "contrast", 2).shape == (3, 32, 32)


def test_non_square_images() -> None:
    x = natural_images(2, 48)[..., :40]
    for name in ALL:
        if name == "frost" and not HAVE_FROST:
            continue
        assert corrupt(x, name, 3, "cifar", _gen()).shape == x.shape


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_output(name: str) -> None:
    """The same seed gives the same images; another seed other images exactly for the corruptions that draw random
    numbers (``DETERMINISTIC`` names the others, which the fidelity benchmark compares pixel by pixel)."""
    _skip_frost(name)
    x = natural_images(3, 32)
    a = corrupt(x, name, 3, "cifar", _gen(7))
    b = corrupt(x, name, 3, "cifar", _gen(7))
    c = corrupt(x, name, 3, "cifar", _gen(8))
    assert torch.equal(a, b)
    assert torch.equal(a, c) == (name in DETERMINISTIC)


def test_grayscale_channel_support() -> None:
    x = natural_images(2, 32)[:, :1]
    assert corrupt(x, "gaussian_blur", 3).shape == x.shape
    with pytest.raises(ValueError, match="needs RGB"):
        corrupt(x, "saturate", 3)


# ----------------------------------------------------------------------------- errors
def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="did you mean 'gaussian_noise'.*valid names: gaussian_noise"):
        corrupt(natural_images(1), "gausian_noise", 1)
    with pytest.raises(TypeError, match="name must be a str"):
        corrupt(natural_images(1), 3, 1)
    with pytest.raises(ValueError, match="did you mean 'jpeg_compression'"):  # a leading part is suggested too
        corrupt(natural_images(1), "jpeg", 1)


def test_one_list_of_names_read_in_any_spelling() -> None:
    """Every module takes the names from aprkit.corruptions.names, and every reader accepts the same spellings
    (the writers refused 'Gaussian Noise' where the -C readers and the metrics took it)."""
    from aprkit.corruptions import CORRUPTIONS, check_name
    from aprkit.data.corrupted import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS
    from aprkit.eval.metrics import CORRUPTION_FAMILIES, EXTRA_CORRUPTIONS, canonical_corruption
    from aprkit.eval.metrics import CORRUPTIONS as METRIC_NAMES

    assert set(CORRUPTIONS) == set(ALL) and ALL_CORRUPTIONS == ALL and BENCHMARK_CORRUPTIONS == METRIC_NAMES == BENCHMARK
    assert EXTRA_CORRUPTIONS == EXTRA and sum(CORRUPTION_FAMILIES.values(), ()) == BENCHMARK
    for spelling in ("Gaussian Noise", "gaussian-noise", " GAUSSIAN_NOISE "):
        assert check_name(spelling) == canonical_corruption(spelling) == "gaussian_noise"
    x = natural_images(2)
    seeds = torch.tensor([3, 4])
    assert torch.equal(corrupt(x, "Gaussian Noise", 2, seeds=seeds), corrupt(x, "gaussian_noise", 2, seeds=seeds))
    with pytest.raises(ValueError, match=r"int64 range"):
        corrupt(x[:1], "fog", 1, seeds=[2**64 - 1])


@pytest.mark.parametrize("severity", [0, 6, -1])
def test_bad_severity_value(severity: int) -> None:
    with pytest.raises(ValueError, match="severity must be an integer 1-5"):
        corrupt(natural_images(1), "contrast", severity)


@pytest.mark.parametrize("severity", [2.5, "3", None, True])
def test_bad_severity_type(severity: object) -> None:
    with pytest.raises(TypeError, match="severity must be an integer 1-5"):
        corrupt(natural_images(1), "contrast", severity)


def test_bad_images_and_preset() -> None:
    x = natural_images(1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        corrupt(x.numpy(), "contrast", 1)
    with pytest.raises(TypeError, match="dtype uint8 or a floating dtype"):
        corrupt(x.to(torch.int32), "contrast", 1)
    with pytest.raises(ValueError, match="dimensions"):
        corrupt(x[0, 0], "contrast", 1)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        corrupt(torch.zeros(1, 4, 8, 8), "contrast", 1)
    with pytest.raises(ValueError, match="preset must be one of 'cifar', 'tinyimagenet', 'imagenet'"):
        corrupt(x, "contrast", 1, preset="svhn")
    with pytest.raises(TypeError, match="generator"):
        corrupt(x, "contrast", 1, generator=0)


def test_frost_error_names_both_options(monkeypatch, tmp_path) -> None:
    from aprkit.corruptions import _frost

    monkeypatch.delenv("APRKIT_FROST_DIR", raising=False)
    monkeypatch.setattr(_frost, "_installed_dir", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps imagecorruptions.*APRKIT_FROST_DIR"):
        corrupt(natural_images(1), "frost", 1)
    with pytest.raises(FileNotFoundError, match="must contain frost1.png"):
        corrupt(natural_images(1), "frost", 1, frost_dir=tmp_path)
    monkeypatch.setenv("APRKIT_FROST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="APRKIT_FROST_DIR"):
        corrupt(natural_images(1), "frost", 1)


@pytest.mark.skipif(not HAVE_FROST, reason=FROST_SKIP)
def test_frost_dir_from_env(monkeypatch) -> None:
    d = find_frost_dir()
    monkeypatch.setenv("APRKIT_FROST_DIR", str(d))
    assert find_frost_dir() == d
    assert corrupt(natural_images(1), "frost", 5, "cifar", _gen()).shape == (1, 3, 32, 32)


# ----------------------------------------------------------------------------- per-image helper
def test_corrupt_image_pil_and_numpy() -> None:
    from PIL import Image

    x = natural_images(1, 32)[0]
    arr = x.permute(1, 2, 0).numpy().copy()
    out = corrupt_image(arr, "shot_noise", 3, seed=5)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == arr.shape
    ref = corrupt(x, "shot_noise", 3, generator=_gen(5)).permute(1, 2, 0).numpy()
    assert np.array_equal(out, ref)
    pil = corrupt_image(Image.fromarray(arr), "shot_noise", 3, seed=5)
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and np.array_equal(np.asarray(pil), ref)
    gray = corrupt_image(arr[..., 0], "gaussian_blur", 2)
    assert gray.shape == (32, 32)
    with pytest.raises(TypeError, match="uint8 array"):
        corrupt_image(arr.astype(np.float32), "contrast", 1)
    with pytest.raises(ValueError, match="either generator or seed"):
        corrupt_image(arr, "contrast", 1, generator=_gen(), seed=1)


def test_random_corruption_takes_rgb_and_gray_pil_images_only() -> None:
    """With p < 1 an RGBA (P, LA, CMYK, ...) image came back RGB when drawn and in its own mode when not: a batch of
    them then failed to stack at random (adapter tester). Such modes are refused, as APRSingle refuses them."""
    from PIL import Image

    arr = natural_images(1, 32)[0].permute(1, 2, 0).numpy().copy()
    t = RandomCorruption("contrast", 2, p=0.5, seed=0)
    for mode in ("RGBA", "P", "LA", "1", "CMYK"):
        with pytest.raises(ValueError, match=f"RandomCorruption takes PIL images of mode 'RGB' or 'L', got '{mode}'"):
            t(Image.fromarray(arr).convert(mode))
    assert {t(Image.fromarray(arr)).mode for _ in range(8)} == {"RGB"}
    assert {t(Image.fromarray(arr).convert("L")).mode for _ in range(8)} == {"L"}


# ----------------------------------------------------------------------------- transform
def test_random_corruption_keeps_module_apply() -> None:
    """Its replay ``apply(images, params)`` must not break ``nn.Module.apply(fn)`` over a tree holding it."""
    t = RandomCorruption("contrast", 2, generator=_gen(1))
    seen = []
    net = torch.nn.Sequential(t, torch.nn.Identity())
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen == ["RandomCorruption", "Identity", "Sequential"]
    x = natural_images(2, 32)
    params = t.generate_parameters(2)
    assert torch.equal(t.apply(x, params), t.apply(x, params))
    with pytest.raises(TypeError, match="params"):
        t.apply(x)


def test_random_corruption_batch_single_and_compose() -> None:
    from PIL import Image
    from torchvision.transforms import v2

    names = ("gaussian_noise", "contrast", "pixelate", "fog")
    x = natural_images(6, 32)
    t1 = RandomCorruption(names, severities=(1, 5), p=0.7, generator=_gen(3))
    t2 = RandomCorruption(names, severities=(1, 5), p=0.7, generator=_gen(3))
    a, b = t1(x), t2(x)
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype
    assert RandomCorruption(names, p=0.0)(x).equal(x)
    assert RandomCorruption("contrast", 2)(x[0]).shape == x[0].shape
    pipe = v2.Compose([RandomCorruption(names, 3, generator=_gen()), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    y = pipe(Image.fromarray(x[0].permute(1, 2, 0).numpy()))
    assert y.shape == (3, 32, 32) and y.dtype == torch.float32
    assert "contrast" in repr(RandomCorruption("contrast"))
    from torchvision import tv_tensors

    from aprkit.corruptions import EXTRA, expand_groups

    assert type(RandomCorruption("contrast", 2)(tv_tensors.Image(x[0]))) is tv_tensors.Image  # as v2's transforms
    # groups and a single string on every entry point (RandomCorruption read "all" as an unknown name)
    assert RandomCorruption("extra").names == EXTRA and expand_groups("fog") == ["fog"]
    assert expand_groups("all") == expand_groups(["benchmark", "extra"])
    with pytest.raises(ValueError, match="valid names"):
        RandomCorruption(["nope"])
    with pytest.raises(ValueError, match="severity"):
        RandomCorruption("contrast", severities=(0,))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        RandomCorruption("contrast", p=2)


def test_random_corruption_per_image_choice() -> None:
    t = RandomCorruption(("contrast", "brightness"), (1, 5), generator=_gen(0))
    prm = t.generate_parameters(64)
    assert prm["apply"].all() and set(prm["severity"].tolist()) == {1, 5}
    assert set(prm["name_index"].tolist()) == {0, 1}


def test_random_corruption_draws_do_not_depend_on_the_batch_size() -> None:
    """Image i's corruption, severity, apply flag and key come from its own row of uniforms (reviewer: the flags, then
    the names, then the severities were drawn batch-wide in turn, so image 0 of a batch of 2 drew other choices than
    in a batch of 4 from the same seed)."""
    x = natural_images(6, 32)
    make = lambda: RandomCorruption(("gaussian_noise", "contrast", "fog"), (1, 3, 5), p=0.5, generator=_gen(0))  # noqa: E731
    big = make().generate_parameters(6)
    for n in (1, 2, 5):
        small = make().generate_parameters(n)
        assert all(torch.equal(small[k], big[k][:n]) for k in big), n
        assert torch.equal(make()(x[:n]), make()(x)[:n])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ALL)
def test_cuda_keeps_device(name: str) -> None:
    _skip_frost(name)
    x = natural_images(2, 32).cuda()
    for dt in (torch.uint8, torch.float32):
        xi = x if dt == torch.uint8 else x.float() / 255
        y = corrupt(xi, name, 3, "cifar", torch.Generator(device="cuda").manual_seed(0))
        assert y.device == xi.device and y.dtype == dt and y.shape == xi.shape
        y2 = corrupt(xi, name, 3, "cifar", _gen(0))  # CPU generator with CUDA images
        assert y2.device == xi.device


def test_random_corruption_replay_is_deterministic_and_batch_free() -> None:
    """The params hold a key per image, so a replay gives the same images in any batch and from a PIL image; the
    noise was drawn afresh from the generator at each replay."""
    from PIL import Image

    t = RandomCorruption(("gaussian_noise", "shot_noise", "fog"), (2, 4), generator=_gen(7))
    x = natural_images(5, 32)
    params = t.generate_parameters(5)
    full = t.apply(x, params)
    assert torch.equal(full, t.apply(x, params))
    for i in range(5):
        one = {k: v[i:i + 1] for k, v in params.items()}
        assert torch.equal(t.apply(x[i:i + 1], one)[0], full[i])
    with pytest.raises(ValueError, match=r"params lack \['seed'\]"):
        t.apply(x, {k: v for k, v in params.items() if k != "seed"})
    img = Image.fromarray(x[0].permute(1, 2, 0).numpy())
    t1, t2 = RandomCorruption("gaussian_noise", 3, generator=_gen(1)), RandomCorruption("gaussian_noise", 3, generator=_gen(1))
    assert np.array_equal(np.asarray(t1(img)), t2(x[0]).permute(1, 2, 0).numpy())
