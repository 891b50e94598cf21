"""APR-P (APRPair), APR-S (APRSingle, APRSingleBatch) and APR-SP against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aprkit import fourier
from aprkit.augment import APRSP, APRPair, APRSingle, APRSingleBatch, apr_pair, sample_single_params
from aprkit.augment.ops_pil import apply_pil_op

AXES = {"chw": (1, 2, 3), "hw": (2, 3)}


def _reference_mix_data(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The reference APR-P algorithm re-expressed (complex fftn, abs/angle/exp, complex ifftn)."""
    f1 = torch.fft.fftn(x, dim=(1, 2, 3))
    f2 = torch.fft.fftn(x[index], dim=(1, 2, 3))
    return torch.fft.ifftn(f2.abs() * torch.exp(1j * f1.angle()), dim=(1, 2, 3)).real


# ------------------------------------------------------------------------------------------ APR-P


@pytest.mark.parametrize("dims", ["chw", "hw"])
def test_pair_has_partner_amplitude_and_own_phase(dims, images_f32):
    x = images_f32.double()
    ap = APRPair(p=1.0, dims=dims, seed=0)
    params = ap.generate_parameters(x.shape)
    out = ap.apply(x, params)
    perm = params["perm"].numpy()
    f_out = np.fft.fftn(out.numpy(), axes=AXES[dims])
    f_x = np.fft.fftn(x.numpy(), axes=AXES[dims])
    np.testing.assert_allclose(np.abs(f_out), np.abs(f_x)[perm], atol=1e-9)
    big = (np.abs(f_x) > 1e-6) & (np.abs(f_x)[perm] > 1e-6)
    np.testing.assert_allclose(np.exp(1j * np.angle(f_out))[big], np.exp(1j * np.angle(f_x))[big], atol=1e-8)


def test_pair_matches_reference_algorithm(images_f32):
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    out = apr_pair(images_f32, perm)
    assert torch.allclose(out, _reference_mix_data(images_f32, perm), atol=1e-5)


def test_pair_labels_follow_phase(images_f32):
    labels = torch.arange(8)
    out, lab = APRPair(p=1.0, seed=1)(images_f32, labels)
    assert lab is labels
    # each output is closer (in phase) to its own image than to any other: phase-only correlation
    po_out = fourier.phase_only(out.double(), "unit")
    po_x = fourier.phase_only(images_f32.double(), "unit")
    sim = torch.einsum("ichw,jchw->ij", po_out, po_x)
    assert torch.equal(sim.argmax(1), labels)


def test_pair_per_sample_mask_and_skip(images_u8):
    ap = APRPair(p=0.5, per_sample=True, seed=4)
    params = ap.generate_parameters(images_u8.shape)
    params["perm"] = torch.arange(8).roll(1)  # no fixed points: every selected image changes
    out = ap.apply(images_u8, params)
    mask = params["mask"]
    assert 0 < int(mask.sum()) < 8
    assert torch.equal(out[~mask], images_u8[~mask])
    assert all(not torch.equal(out[i], images_u8[i]) for i in torch.nonzero(mask).flatten().tolist())
    never = APRPair(p=0.0, seed=0)
    assert never(images_u8) is images_u8


def test_pair_uint8_saturates(images_u8):
    perm = torch.arange(8).roll(3)
    out = apr_pair(images_u8, perm)
    want = _reference_mix_data(images_u8.double(), perm)
    assert (want > 260).any() and (want < -5).any()
    assert torch.allclose(out.double(), want.round().clamp(0, 255), atol=1)
    assert (out[want > 260] == 255).all() and (out[want < -5] == 0).all()


def test_pair_clamp_range(images_f32):
    perm = torch.arange(8).roll(2)
    raw = apr_pair(images_f32, perm)
    assert raw.min() < 0 or raw.max() > 1
    clamped = apr_pair(images_f32, perm, clamp=True)
    assert clamped.min() >= 0 and clamped.max() <= 1
    assert torch.allclose(clamped, raw.clamp(0, 1))


def test_pair_batched_equals_per_image(images_f32):
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    out = apr_pair(images_f32, perm, dims="hw")
    per = torch.stack([fourier.swap_amplitude(images_f32[i], images_f32[perm[i]], "hw") for i in range(8)])
    assert torch.allclose(out, per, atol=1e-5)


def test_pair_determinism_and_no_mutation(images_f32):
    x = images_f32.clone()
    a = APRPair(p=1.0, per_sample=True, seed=7)(x)
    b = APRPair(p=1.0, per_sample=True, generator=torch.Generator().manual_seed(7))(x)
    c = APRPair(p=1.0, per_sample=True, seed=8)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, images_f32)


def test_pair_gradients():
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    perm = torch.tensor([2, 0, 1])
    assert torch.autograd.gradcheck(lambda t: apr_pair(t, perm), (x,), fast_mode=True)
    x32 = torch.rand(4, 3, 8, 8, requires_grad=True)
    x32_const = x32.detach().clone()
    x32_const[0] = 0.5  # constant image: zero-magnitude bins must not produce NaN gradients
    x32_const.requires_grad_(True)
    for t in (x32, x32_const):
        APRPair(p=1.0, seed=0)(t).square().sum().backward()
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8])
def test_dtype_and_device_preserved(dtype, images_u8):
    x = images_u8 if dtype == torch.uint8 else (images_u8.double() / 255).to(dtype)
    for out in (APRPair(p=1.0, seed=0)(x), APRSingleBatch(p=1.0, seed=0)(x), APRSingle(p=1.0, seed=0)(x[0])):
        assert out.dtype == dtype and out.device == x.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda(images_u8):
    x = images_u8.cuda()
    assert APRPair(p=1.0, per_sample=True, seed=0)(x).is_cuda
    assert APRSingleBatch(p=1.0, seed=0)(x.float() / 255).is_cuda
    params = APRPair(p=1.0, seed=0).generate_parameters(x.shape)
    assert torch.equal(apr_pair(x, params["perm"]).cpu(), apr_pair(images_u8, params["perm"]))


@pytest.mark.parametrize("make", [lambda: APRPair(p=1.0, seed=0), lambda: APRSingleBatch(p=1.0, seed=0)],
                         ids=["APRPair", "APRSingleBatch"])
def test_module_apply_fn_still_works_beside_the_replay_apply(make, images_f32):
    """``apply(x, params)`` (Kornia-style replay) shadowed ``nn.Module.apply(fn)``: ``model.apply(init_fn)`` over a
    tree holding the module raised ``TypeError: ... missing ... 'params'``; now ``fn`` visits it and its children
    and ``apply(fn)`` returns the module, while replay with ``params`` is unchanged."""
    aug = make()
    params = aug.generate_parameters(images_f32.shape)
    before = aug.apply(images_f32, params)
    conv = torch.nn.Conv2d(3, 4, 3)
    net = torch.nn.Sequential(aug, conv)
    seen: list[torch.nn.Module] = []
    assert net.apply(seen.append) is net
    assert any(m is aug for m in seen) and any(m is conv for m in seen) and seen[-1] is net
    assert aug.apply(lambda m: None) is aug
    torch.nn.init.zeros_(conv.weight)
    net.apply(lambda m: torch.nn.init.ones_(m.weight) if isinstance(m, torch.nn.Conv2d) else None)
    assert bool((conv.weight == 1).all())
    assert torch.equal(aug.apply(images_f32, params), before)
    with pytest.raises(TypeError, match="params"):
        aug.apply(images_f32)


# ------------------------------------------------------------------------------------------ APR-S


def _reference_aprs(a: np.ndarray, b: np.ndarray, phase_from_a: bool) -> np.ndarray:
    """The reference APR-S recombination on HWC uint8 views, rounded and clamped instead of wrapped."""
    f1, f2 = np.fft.fftn(a.astype(np.float64)), np.fft.fftn(b.astype(np.float64))
    spec = np.abs(f2) * np.exp(1j * np.angle(f1)) if phase_from_a else np.abs(f1) * np.exp(1j * np.angle(f2))
    return np.clip(np.round(np.real(np.fft.ifftn(spec))), 0, 255).astype(np.uint8)


def test_single_pil_matches_reference(images_u8):
    aprs = APRSingle(p=1.0)
    hits = 0
    for i in range(8):
        img = Image.fromarray(images_u8[i].permute(1, 2, 0).numpy())
        params = sample_single_params(1, 1.0, generator=torch.Generator().manual_seed(i))
        out = np.asarray(aprs.apply(img, params)).astype(int)
        p = {k: v[0].item() for k, v in params.items()}
        names = aprs.batch.ops
        a = apply_pil_op(img, names[p["op1"]], p["level1"], p["negate1"])
        b = apply_pil_op(a, names[p["op2"]], p["level2"], p["negate2"])
        want = _reference_aprs(np.asarray(a), np.asarray(b), p["phase_from_first"]).astype(int)
        assert np.abs(out - want).max() <= 1
        hits += int(p["phase_from_first"])
    assert 0 < hits < 8  # both recombination directions exercised


def test_single_wrap_cast_is_the_references_uint8_cast(images_u8):
    """``cast="wrap"``: the reference's ``np.fft.ifftn(...).astype(np.uint8)`` (fftshifted spectra, real part,
    truncated, wrapped modulo 256); the batched uint8 and float paths agree with it (float within a level)."""
    hits = wrapped = 0
    aprs = APRSingle(p=1.0, cast="wrap")
    names = aprs.batch.ops
    for i in range(8):
        img = Image.fromarray(images_u8[i].permute(1, 2, 0).numpy())
        params = sample_single_params(1, 1.0, generator=torch.Generator().manual_seed(i))
        p = {k: v[0].item() for k, v in params.items()}
        a = np.asarray(apply_pil_op(img, names[p["op1"]], p["level1"], p["negate1"])).astype(np.uint8)
        b = np.asarray(apply_pil_op(Image.fromarray(a), names[p["op2"]], p["level2"], p["negate2"])).astype(np.uint8)
        f1, f2 = np.fft.fftshift(np.fft.fftn(a)), np.fft.fftshift(np.fft.fftn(b))
        phase, amp = (f1, f2) if p["phase_from_first"] else (f2, f1)
        spec = np.abs(amp) * np.exp(1j * np.angle(phase))
        raw = np.fft.ifftn(np.fft.ifftshift(spec)).real
        want = np.remainder(np.trunc(raw).astype(np.int64), 256)  # x86 NumPy's astype(np.uint8) of these values
        near = np.abs(raw - np.round(raw)) < 1e-6  # a value at an integer may truncate either way by FFT rounding
        out = np.asarray(aprs.apply(img, params)).astype(np.int64)
        assert np.array_equal(out[~near], want[~near])
        for x, (mean, top) in ((images_u8[i:i + 1], (0.05, 1.0)), (images_u8[i:i + 1].float() / 255, (1.5, 4.0))):
            got = aprs.batch.apply(x, params)[0].permute(1, 2, 0).numpy().astype(np.float64)
            d = np.abs(got * (255 if x.is_floating_point() else 1) - want)  # the batched torch ops (floats keep
            d = np.minimum(d, 256 - d)  # their fractions), on the circle of levels: -1 or 256 may wrap on one only
            assert d.mean() <= mean and d.max() <= top
        hits += int(p["phase_from_first"])
        wrapped += int(((raw < -1) | (raw >= 256)).any())
    assert 0 < hits < 8 and wrapped > 0  # both directions and some wrapped pixels exercised
    with pytest.raises(ValueError, match="cast must be one of"):
        APRSingle(cast="clip")


def test_single_without_recombination_is_one_op(images_u8):
    img = Image.fromarray(images_u8[0].permute(1, 2, 0).numpy())
    aprs = APRSingle(p=0.0)
    params = aprs.generate_parameters()
    p = {k: v[0].item() for k, v in params.items()}
    want = apply_pil_op(img, aprs.batch.ops[p["op1"]], p["level1"], p["negate1"])
    assert np.array_equal(np.asarray(aprs.apply(img, params)), np.asarray(want))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_single_batch_equals_per_image(dtype, images_u8):
    x = images_u8 if dtype == torch.uint8 else images_u8.float() / 255
    sb = APRSingleBatch(p=0.5, dims="chw", seed=0)
    params = sb.generate_parameters(x.shape)
    out = sb.apply(x, params)
    per = APRSingle(p=0.5)
    same = torch.equal if dtype == torch.uint8 else (lambda a, b: torch.allclose(a, b, atol=1e-5))
    for i in (0, 3, 5, 7):
        one = {k: v[i : i + 1] for k, v in params.items()}
        assert same(sb.apply(x[i : i + 1], one)[0], out[i])
        if dtype != torch.uint8:  # float tensors take the batched path per image too
            assert same(per.apply(x[i], one), out[i])


def test_single_uint8_tensor_equals_pil(images_u8):
    aprs = APRSingle(p=0.5)
    for i in range(4):
        params = sample_single_params(1, 0.5, generator=torch.Generator().manual_seed(i))
        pil = aprs.apply(Image.fromarray(images_u8[i].permute(1, 2, 0).numpy()), params)
        t = aprs.apply(images_u8[i], params)
        assert t.shape == (3, 32, 32) and t.dtype == torch.uint8
        assert np.array_equal(t.permute(1, 2, 0).numpy(), np.asarray(pil))
    gray = aprs.apply(images_u8[0, :1], params)
    assert gray.shape == (1, 32, 32)


def test_single_kinds_round_trip(images_u8):
    aprs = APRSingle(p=1.0, seed=0)
    hwc = images_u8[0].permute(1, 2, 0).numpy()
    out_np = aprs(hwc)
    assert isinstance(out_np, np.ndarray) and out_np.shape == hwc.shape and out_np.dtype == np.uint8
    out_f = aprs(hwc.astype(np.float32) / 255)
    assert out_f.dtype == np.float32 and 0 <= out_f.min() and out_f.max() <= 1
    gray = Image.fromarray(hwc[..., 0])
    out_g = aprs(gray)
    assert isinstance(out_g, Image.Image) and out_g.mode == "L" and out_g.size == gray.size
    assert aprs(hwc[..., 0]).shape == hwc.shape[:2]
    t = aprs(images_u8[0].float() / 255)
    assert t.shape == (3, 32, 32) and 0 <= t.min() and t.max() <= 1


def test_single_determinism_and_no_mutation(images_u8):
    x = images_u8.clone()
    a = APRSingleBatch(p=0.7, seed=3)(x)
    b = APRSingleBatch(p=0.7, seed=3)(x)
    c = APRSingleBatch(p=0.7, seed=4)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, images_u8)
    img = Image.fromarray(images_u8[0].permute(1, 2, 0).numpy())
    assert np.array_equal(np.asarray(APRSingle(seed=5)(img)), np.asarray(APRSingle(seed=5)(img)))


def test_single_batch_gradients_and_all_ops(images_f32):
    x = images_f32.clone().requires_grad_(True)
    sb = APRSingleBatch(p=1.0, ops=("rotate", "shear_x", "translate_y", "brightness", "color", "contrast", "sharpness"),
                        seed=0)
    sb(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ APR-SP


def test_aprsp_batch_and_loss(images_f32):
    y = torch.arange(8)
    aprsp = APRSP(p=1.0, seed=0)
    x_all, y_all = aprsp(images_f32, y)
    assert x_all.shape == (16, 3, 32, 32) and torch.equal(y_all, torch.cat([y, y]))
    assert torch.equal(x_all[:8], images_f32)
    params = APRPair(p=1.0, seed=0).generate_parameters(images_f32.shape)
    assert torch.allclose(x_all[8:], apr_pair(images_f32, params["perm"]))
    clean = images_f32.flip(-1)
    x_all2, _ = APRSP(p=1.0, seed=0)(images_f32, y, clean=clean)
    assert torch.equal(x_all2[:8], clean) and torch.equal(x_all2[8:], x_all[8:])
    logits = torch.randn(16, 10)
    want = torch.nn.functional.cross_entropy(logits[:8], y) + torch.nn.functional.cross_entropy(logits[8:], y)
    assert torch.allclose(APRSP.loss(logits, y_all), want)


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("bad, exc", [
    (np.zeros((2, 3, 8, 8)), TypeError),
    (torch.zeros(2, 3, 8, 8, dtype=torch.int64), TypeError),
    (torch.zeros(3, 8, 8), ValueError),
    (torch.zeros(2, 3, 1, 8), ValueError),
    (torch.zeros(2, 3, 8, 1), ValueError),
    (torch.full((2, 3, 8, 8), float("nan")), ValueError),
    (torch.full((2, 3, 8, 8), float("-inf")), ValueError),
])
def test_bad_images(bad, exc):
    with pytest.raises(exc, match="images"):
        APRPair(p=1.0)(bad)
    with pytest.raises(exc, match="images"):
        APRSingleBatch(p=1.0)(bad)
    with pytest.raises(exc, match="images"):
        APRSP()(bad, torch.zeros(2, dtype=torch.long))


def test_bad_labels_and_arguments(images_f32):
    with pytest.raises(ValueError, match="one entry per image"):
        APRPair()(images_f32, torch.zeros(7, dtype=torch.long))
    with pytest.raises(TypeError, match="labels"):
        APRPair()(images_f32, [0] * 8)
    with pytest.raises(ValueError, match="p must be"):
        APRPair(p=1.5)
    with pytest.raises(ValueError, match="dims"):
        APRPair(dims="xyz")
    with pytest.raises(ValueError, match="did you mean 'rotate'"):
        APRSingle(ops=["rotat"])
    with pytest.raises(ValueError, match="severity"):
        APRSingle(severity=0)
    with pytest.raises(ValueError, match="perm"):
        apr_pair(images_f32, torch.arange(7))
    with pytest.raises(TypeError, match="perm"):
        apr_pair(images_f32, torch.arange(8).float())
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        apr_pair(images_f32, torch.arange(8) + 1)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_single_tensor_layout_is_checked(dtype, images_u8):
    """An HWC (32, 32, 3) tensor was read as C=32: it is refused. Other channel counts run as APRSingleBatch runs
    them (uint8 included, which goes through PIL's path only for 1 or 3 channels); 1 and 3 channels as before."""
    x = images_u8[0] if dtype == torch.uint8 else images_u8[0].float() / 255
    aprs = APRSingle(p=1.0, seed=0)
    with pytest.raises(ValueError, match=r"\(32, 32, 3\).*channels-last"):
        aprs(x.permute(1, 2, 0))
    with pytest.raises(ValueError, match=r"looks like channels-first"):
        aprs(x.numpy())  # a (C, H, W) array where NumPy images are (H, W, C)
    hwc4 = torch.cat([x, x[:1]]).permute(1, 2, 0).numpy()  # 4 channels: like albumentations' own transforms
    assert aprs(hwc4).shape == hwc4.shape
    params = aprs.generate_parameters()
    four = torch.cat([x, x[:1]])
    out4 = aprs.apply(four, params)
    assert out4.shape == four.shape and out4.dtype == dtype
    assert torch.equal(out4, aprs.batch.apply(four[None], params)[0])
    for img in (x, x[:1]):
        out = aprs.apply(img, params)
        assert out.shape == img.shape and out.dtype == dtype
        assert torch.equal(out, APRSingle(p=1.0, seed=0).apply(img, params))


def test_bad_single_images(images_u8):
    aprs = APRSingle()
    with pytest.raises(TypeError, match="PIL image"):
        aprs([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="mode"):
        aprs(Image.new("RGBA", (8, 8)))
    with pytest.raises(ValueError, match="at least 2x2"):
        aprs(Image.new("RGB", (1, 8)))
    with pytest.raises(ValueError, match=r"channels-first"):
        aprs(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(TypeError, match="dtype"):
        aprs(np.zeros((8, 8, 3), np.int16))
    with pytest.raises(ValueError, match="3 dimensions"):
        aprs(images_u8)
    with pytest.raises(ValueError, match="H >= 2"):
        aprs(torch.zeros(3, 1, 8))
    with pytest.raises(ValueError, match="NaN"):
        aprs(torch.full((3, 8, 8), float("nan")))


def test_an_apr_s_transform_pickled_before_cast_existed_still_runs(images_u8):
    """Instances saved by an older aprkit have no ``cast`` attribute: they read the class default, round."""
    sb = APRSingleBatch(p=1.0, seed=0)
    del sb.__dict__["cast"]
    assert sb.cast == "round" and sb(images_u8[:2]).dtype == torch.uint8 and "cast" not in repr(sb)
