"""aprkit.fourier against independent NumPy computations, plus dtype, gradient and bad-input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aprkit import fourier as fr

AXES = {"chw": (-3, -2, -1), "hw": (-2, -1)}


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy()


def _np_swap(xp: np.ndarray, xa: np.ndarray, axes) -> np.ndarray:
    fp, fa = np.fft.fftn(xp, axes=axes), np.fft.fftn(xa, axes=axes)
    return np.real(np.fft.ifftn(np.abs(fa) * np.exp(1j * np.angle(fp)), axes=axes))


@pytest.mark.parametrize("dims", ["chw", "hw"])
@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 3, 7, 5), (2, 2, 1, 4, 6)])
def test_round_trip(dims, shape):
    x = torch.rand(shape, dtype=torch.float64)
    assert torch.allclose(fr.recombine(*fr.amplitude_phase(x, dims), dims), x, atol=1e-12)
    x32 = x.float()
    assert torch.allclose(fr.recombine(*fr.amplitude_phase(x32, dims), dims), x32, atol=1e-5)


@pytest.mark.parametrize("dims", ["chw", "hw"])
def test_amplitude_phase_matches_numpy(dims, images_f32):
    amp, pha = fr.amplitude_phase(images_f32.double(), dims)
    f = np.fft.fftn(_np(images_f32), axes=AXES[dims])
    np.testing.assert_allclose(amp.numpy(), np.abs(f), atol=1e-9)
    big = np.abs(f) > 1e-6
    np.testing.assert_allclose(np.exp(1j * pha.numpy())[big], np.exp(1j * np.angle(f))[big], atol=1e-9)


@pytest.mark.parametrize("dims", ["chw", "hw"])
def test_swap_amplitude_matches_numpy(dims, images_f32):
    x, y = images_f32.double(), images_f32.double().flip(0)
    out = fr.swap_amplitude(x, y, dims)
    np.testing.assert_allclose(out.numpy(), _np_swap(_np(x), _np(y), AXES[dims]), atol=1e-10)


@pytest.mark.parametrize("dims", ["chw", "hw"])
def test_mix_amplitude(dims, images_f32):
    x, y = images_f32.double(), images_f32.double().roll(1, 0)
    assert torch.allclose(fr.mix_amplitude(x, y, 0.0, dims), x, atol=1e-10)
    assert torch.allclose(fr.mix_amplitude(x, y, 1.0, dims), fr.swap_amplitude(x, y, dims), atol=1e-10)
    fx, fy = np.fft.fftn(_np(x), axes=AXES[dims]), np.fft.fftn(_np(y), axes=AXES[dims])
    want = np.real(np.fft.ifftn((0.7 * np.abs(fx) + 0.3 * np.abs(fy)) * np.exp(1j * np.angle(fx)), axes=AXES[dims]))
    np.testing.assert_allclose(fr.mix_amplitude(x, y, 0.3, dims).numpy(), want, atol=1e-10)
    lam = torch.linspace(0, 1, x.shape[0], dtype=torch.float64)
    per = torch.stack([fr.mix_amplitude(x[i], y[i], float(lam[i]), dims) for i in range(x.shape[0])])
    assert torch.allclose(fr.mix_amplitude(x, y, lam, dims), per, atol=1e-10)


@pytest.mark.parametrize("dims", ["chw", "hw"])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.25])
def test_low_frequency_swap_matches_numpy(beta, dims, images_f32):
    x, y = images_f32.double(), images_f32.double().roll(1, 0)
    h, w = x.shape[-2:]
    b = int(beta * min(h, w))
    fx, fy = np.fft.fftn(_np(x), axes=AXES[dims]), np.fft.fftn(_np(y), axes=AXES[dims])
    kh = np.abs(np.fft.fftfreq(h, 1 / h))[:, None]
    kw = np.abs(np.fft.fftfreq(w, 1 / w))[None, :]
    amp = np.where((kh <= b) & (kw <= b), np.abs(fy), np.abs(fx))
    want = np.real(np.fft.ifftn(amp * np.exp(1j * np.angle(fx)), axes=AXES[dims]))
    np.testing.assert_allclose(fr.low_frequency_swap(x, y, beta, dims).numpy(), want, atol=1e-10)


def _fda_numpy(src: np.ndarray, trg: np.ndarray, beta: float) -> np.ndarray:
    """FDA's ``FDA_source_to_target_np`` (Yang & Soatto): per-channel 2-D FFTs, the centred square of the shifted
    amplitude of ``src`` (C, H, W) replaced by ``trg``'s."""
    fs, ft = np.fft.fft2(src, axes=(-2, -1)), np.fft.fft2(trg, axes=(-2, -1))
    amp_s, pha_s, amp_t = np.abs(fs), np.angle(fs), np.abs(ft)
    amp_s, amp_t = np.fft.fftshift(amp_s, axes=(-2, -1)), np.fft.fftshift(amp_t, axes=(-2, -1))
    h, w = src.shape[-2:]
    b = int(np.floor(min(h, w) * beta))
    ch, cw = h // 2, w // 2
    amp_s[:, ch - b:ch + b + 1, cw - b:cw + b + 1] = amp_t[:, ch - b:ch + b + 1, cw - b:cw + b + 1]
    amp_s = np.fft.ifftshift(amp_s, axes=(-2, -1))
    return np.real(np.fft.ifft2(amp_s * np.exp(1j * pha_s), axes=(-2, -1)))


def test_fda_and_fact_ops_default_to_per_channel_ffts(images_f32):
    """As FDA and FACT: each channel transformed on its own (``dims="hw"``), not one 3-D FFT over the channels."""
    x, y = images_f32[:2].double(), images_f32[2:4].double()
    for beta in (0.01, 0.1):
        want = np.stack([_fda_numpy(_np(x[i]), _np(y[i]), beta) for i in range(2)])
        np.testing.assert_allclose(fr.low_frequency_swap(x, y, beta).numpy(), want, atol=1e-10)
    fx, fy = np.fft.fft2(_np(x)), np.fft.fft2(_np(y))  # FACT's colorful_spectrum_mix with ratio=1 (whole spectrum)
    want = np.real(np.fft.ifft2((0.6 * np.abs(fx) + 0.4 * np.abs(fy)) * np.exp(1j * np.angle(fx))))
    np.testing.assert_allclose(fr.mix_amplitude(x, y, 0.4).numpy(), want, atol=1e-10)


def test_phase_only_and_amplitude_only_match_numpy(images_f32):
    x = images_f32.double()
    f = np.fft.fftn(_np(x), axes=(-3, -2, -1))
    unit = np.real(np.fft.ifftn(np.exp(1j * np.angle(f)), axes=(-3, -2, -1)))
    np.testing.assert_allclose(fr.phase_only(x, "unit").numpy(), unit, atol=1e-10)
    mean_amp = np.abs(f).mean(axis=(-3, -2, -1), keepdims=True)
    np.testing.assert_allclose(fr.phase_only(x, "mean").numpy(), unit * mean_amp, atol=1e-9)
    np.testing.assert_allclose(fr.amplitude_only(x).numpy(), np.real(np.fft.ifftn(np.abs(f), axes=(-3, -2, -1))), atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8])
def test_dtype_preserved(dtype, images_u8):
    x = images_u8 if dtype == torch.uint8 else (images_u8.double() / 255).to(dtype)
    y = x.flip(0)
    for out in (fr.swap_amplitude(x, y), fr.mix_amplitude(x, y, 0.5), fr.low_frequency_swap(x, y, 0.1),
                fr.phase_only(x), fr.amplitude_only(x)):
        assert out.dtype == dtype and out.shape == x.shape and out.device == x.device


def test_uint8_saturates_not_wraps(images_u8):
    x, y = images_u8, images_u8.flip(0)
    out = fr.swap_amplitude(x, y)
    want = _np_swap(_np(x), _np(y), AXES["chw"])
    assert (want > 255.5).any() or (want < -0.5).any(), "test images should produce out-of-range values"
    np.testing.assert_allclose(out.numpy().astype(float), np.clip(np.round(want), 0, 255), atol=1)
    assert (out[torch.from_numpy(want > 260)] == 255).all()
    assert (out[torch.from_numpy(want < -5)] == 0).all()


def test_no_in_place_mutation(images_f32):
    x, y = images_f32.clone(), images_f32.flip(0).clone()
    fr.swap_amplitude(x, y), fr.mix_amplitude(x, y), fr.low_frequency_swap(x, y), fr.phase_only(x)
    assert torch.equal(x, images_f32) and torch.equal(y, images_f32.flip(0))


def test_gradients_flow():
    x = torch.rand(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fr.swap_amplitude(a, b), (x, y), fast_mode=True)
    assert torch.autograd.gradcheck(lambda a, b: fr.mix_amplitude(a, b, 0.3, "hw"), (x, y), fast_mode=True)
    amp, pha = fr.amplitude_phase(x)
    fr.recombine(amp, pha).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("zero_bins", ["zero", "phase0"])
def test_a_mix_keeps_its_own_slope_at_bins_without_phase(zero_bins):
    """A mix's own part (1 - lam) * z is linear at a bin without phase (a constant image or a dead feature channel):
    its slope is 1 - lam there, not 0 (the masked ratio dropped it); the forward values are the no-grad path's."""
    const = torch.full((1, 3, 6, 6), 0.5, dtype=torch.float64, requires_grad=True)
    other = torch.full((1, 3, 6, 6), 0.2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: fr.mix_amplitude(a, other, 0.5, zero_bins=zero_bins), (const,))
    (g,) = torch.autograd.grad(fr.mix_amplitude(const, other, 0.5, zero_bins=zero_bins)[0, 0, 1, 2], const)
    assert g[0, 0, 1, 2].item() == pytest.approx(0.5, abs=1e-9)  # locally (1 - lam) * x + a constant
    z = torch.randn(2, 3, 5, 5, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    z[0, 1] = 0
    with torch.no_grad():
        plain = fr.mix_spectra(z, z.flip(0), 0.4, zero_bins=zero_bins, dims=(-2, -1))
    tracked = fr.mix_spectra(z.clone().requires_grad_(), z.flip(0), 0.4, zero_bins=zero_bins, dims=(-2, -1))
    torch.testing.assert_close(tracked.detach(), plain, rtol=0, atol=1e-14)
    z32 = z.to(torch.complex64).requires_grad_()  # a float64 0-dim lam keeps the spectrum's precision
    assert fr.mix_spectra(z32, z32.detach().flip(0), torch.tensor(0.3, dtype=torch.float64),
                          zero_bins=zero_bins, dims=(-2, -1)).dtype == torch.complex64


@pytest.mark.parametrize("bad, exc", [
    ([[1.0]], TypeError),
    (torch.zeros(3, 8, 8, dtype=torch.int32), TypeError),
    (torch.zeros(8, 8), ValueError),
    (torch.zeros(3, 1, 8), ValueError),
    (torch.zeros(3, 8, 1), ValueError),
    (torch.full((3, 8, 8), float("nan")), ValueError),
    (torch.full((3, 8, 8), float("inf")), ValueError),
])
def test_bad_input(bad, exc):
    with pytest.raises(exc):
        fr.amplitude_phase(bad)
    with pytest.raises(exc):
        fr.swap_amplitude(bad, bad)


def test_bad_arguments(images_f32):
    with pytest.raises(ValueError, match="dims"):
        fr.amplitude_phase(images_f32, "xy")
    with pytest.raises(ValueError, match="same"):
        fr.swap_amplitude(images_f32, images_f32[..., :16])
    with pytest.raises(ValueError, match="lam"):
        fr.mix_amplitude(images_f32, images_f32, 1.5)
    with pytest.raises(ValueError, match="beta"):
        fr.low_frequency_swap(images_f32, images_f32, -0.1)
    with pytest.raises(ValueError, match="magnitude"):
        fr.phase_only(images_f32, "median")
    with pytest.raises(ValueError, match="needs a floating image"):  # it rounded to an all-zero uint8 image
        fr.phase_only((images_f32 * 255).to(torch.uint8), "unit")


def test_with_amplitude_matches_polar_and_handles_zero_bins():
    """The shared no-trigonometry helper equals ``polar(amp, angle(z))``, with phase 0 on zero bins."""
    from aprkit.fourier import spectral_magnitude, with_amplitude

    g = torch.Generator().manual_seed(0)
    z = torch.complex(torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g))
    z[0, 0, 0] = 0
    amp = torch.rand(4, 3, 5, generator=g)
    want = torch.polar(amp, z.angle())
    torch.testing.assert_close(with_amplitude(z, amp), want)
    torch.testing.assert_close(spectral_magnitude(z), z.abs())
    zr = z.clone().requires_grad_(True)
    with_amplitude(zr, amp).real.sum().backward()
    assert torch.isfinite(torch.view_as_real(zr.grad)).all()


def test_mix_amplitude_rejects_nan_and_misshaped_lam_tensor():
    """A NaN weight must not pass silently; a per-image weight of the wrong length names the expected shape."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 8, 8, generator=g), torch.rand(4, 3, 8, 8, generator=g)
    with pytest.raises(ValueError, match="lam"):
        fr.mix_amplitude(x, y, torch.tensor([0.1, float("nan"), 0.2, 0.3]))
    with pytest.raises(ValueError, match="lam"):
        fr.mix_amplitude(x, y, torch.tensor([0.1, 0.2, 0.3]))
    for shape in ((4, 1), (1, 4), (2, 4)):  # broadcast with the batch but to a larger shape: every image x every lam
        with pytest.raises(ValueError, match="lam"):
            fr.mix_amplitude(x, y, torch.full(shape, 0.5))
    with pytest.raises(ValueError, match="uint8"):  # two scales (0-255 and 0-1) cannot be mixed
        fr.mix_amplitude((x * 255).to(torch.uint8), y, 0.5)
    with pytest.raises(ValueError, match="uint8"):
        fr.low_frequency_swap(x, (y * 255).to(torch.uint8), 0.1)
    out = fr.mix_amplitude(x, y, torch.tensor([0.0, 1.0, 0.5, 0.5], dtype=torch.float64))
    assert out.dtype == x.dtype
    torch.testing.assert_close(out[0], x[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("fn", [fr.swap_amplitude, fr.mix_amplitude, fr.low_frequency_swap])
def test_pair_ops_reject_non_broadcastable_batches(fn):
    x, y = torch.rand(4, 3, 8, 8), torch.rand(3, 3, 8, 8)
    with pytest.raises(ValueError, match="broadcastable leading batch"):
        fn(x, y)


def test_per_channel_ops_refuse_a_channels_last_batch():
    """Under ``dims="hw"`` a (B, H, W, C) batch was transformed over (W, C) and came back wrong without a word (as
    ``APRPair`` refuses it); the 3-D FFT of ``"chw"`` gives the same images in either layout."""
    x, y = torch.rand(4, 16, 16, 3), torch.rand(4, 16, 16, 3)
    for call in (lambda: fr.low_frequency_swap(x, y), lambda: fr.mix_amplitude(x, y, 0.5),
                 lambda: fr.swap_amplitude(x, y, dims="hw"), lambda: fr.phase_only(x, dims="hw"),
                 lambda: fr.amplitude_only(x, dims="hw"), lambda: fr.amplitude_phase(x, dims="hw")):
        with pytest.raises(ValueError, match=r"x|phase_source of shape \(4, 16, 16, 3\) looks like channels-last"):
            call()
    swapped = fr.swap_amplitude(x, y, dims="chw")  # the same images, in the layout they came in
    torch.testing.assert_close(swapped.permute(0, 3, 1, 2), fr.swap_amplitude(
        x.permute(0, 3, 1, 2), y.permute(0, 3, 1, 2), dims="chw"), atol=1e-5, rtol=0)


@pytest.mark.parametrize("zero_bins", ["zero", "phase0"])
@pytest.mark.parametrize("dims", ["chw", "hw"])
def test_mix_fast_path_equals_the_general_path(dims, zero_bins, monkeypatch):
    """Issue 17: the squared-magnitude path (no autograd: unmasked on eager CPU calls without zero bins, masked
    elsewhere) and the magnitude path (autograd) give the same spectra, zero bins (a constant image) and broadcast
    shapes included."""
    g = torch.Generator().manual_seed(3)
    x, y = (torch.rand(4, 3, 8, 6, generator=g, dtype=torch.float64) for _ in range(2))
    x[2] = 0.5
    lam = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    cases = [(x, y, 0.3), (x, y, lam.view(4, 1, 1, 1)), (x[0], y, 0.6), (x, y[0], lam.view(4, 1, 1, 1)), (y, x, 1.0)]
    zs = [(torch.fft.rfftn(a, dim=AXES[dims]), torch.fft.rfftn(b, dim=AXES[dims]), w) for a, b, w in cases]
    fast = [fr.mix_spectra(za, zb, w, zero_bins=zero_bins, dims=AXES[dims]) for za, zb, w in zs]
    for (za, zb, w), want in zip(zs, fast, strict=True):  # autograd: magnitudes and with_amplitude
        got = fr.mix_spectra(za.clone().requires_grad_(), zb, w, zero_bins=zero_bins, dims=AXES[dims])
        torch.testing.assert_close(got.detach(), want, atol=1e-12, rtol=1e-12)
    monkeypatch.setattr(fr.mixing, "eager_cpu", lambda t: False)  # the module of transfer_amplitude: masked
    for (za, zb, w), want in zip(zs, fast, strict=True):
        torch.testing.assert_close(fr.mix_spectra(za, zb, w, zero_bins=zero_bins, dims=AXES[dims]), want,
                                   atol=1e-12, rtol=1e-12)


def test_an_images_amplitude_swap_does_not_depend_on_the_rest_of_its_batch():
    """A batch holding an image with bins without phase (a grey one: R = G = B) took the magnitude formula for every
    image, the others the squared-magnitude one: the same pair moved by one grey level with another batch (the
    phase-bias stimuli of one pair depended on the batch size)."""
    g = torch.Generator().manual_seed(0)
    xp, xa = (torch.randint(0, 256, (400, 3, 32, 32), generator=g, dtype=torch.uint8) for _ in range(2))
    grey = xp[:1].clone()
    grey[:, 1:] = grey[:, :1]
    for fn in (fr.swap_amplitude, lambda a, b: fr.mix_amplitude(a, b, 0.6)):
        alone = fn(xp, xa)
        with_grey = fn(torch.cat([grey, xp]), torch.cat([xa[:1], xa]))
        assert torch.equal(with_grey[1:], alone)
        assert torch.equal(with_grey[:1], fn(grey, xa[:1]))


@pytest.mark.parametrize("dims", ["chw", "hw"])
def test_low_frequency_swap_leaves_the_rest_of_the_spectrum(dims):
    """Only the bins of the low-frequency square change (they take y's amplitude); every other bin stays x's."""
    g = torch.Generator().manual_seed(4)
    x, y = (torch.rand(3, 3, 12, 10, generator=g, dtype=torch.float64) for _ in range(2))
    out = fr.low_frequency_swap(x, y, 0.25, dims)
    zo, zx, zy = (torch.fft.rfftn(t, dim=AXES[dims]) for t in (out, x, y))
    mask = fr.low_frequency_mask(x.shape, 0.25, dims).expand_as(zx)
    torch.testing.assert_close(zo[~mask], zx[~mask], atol=1e-10, rtol=0)
    torch.testing.assert_close(zo[mask].abs(), zy[mask].abs(), atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.sgn(zo[mask]), torch.sgn(zx[mask]), atol=1e-9, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 3, 8, 9), (2, 2, 3, 7, 6), (5, 1, 8, 8), (5, 4, 6, 8)])
def test_real_ffts_match_torch(shape, dtype):
    """``fourier.rfftn`` / ``irfftn`` (RGB over (C, H, W): a 2-D FFT and a 3x3 DFT over the channels on the CPU)
    give torch's numbers, also for a spectrum that is not Hermitian, and the same shapes and dtypes."""
    x = torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for dims in ((-3, -2, -1), (-2, -1)):
        z, want = fr.rfftn(x, dims), torch.fft.rfftn(x, dim=dims)
        assert z.shape == want.shape and z.dtype == want.dtype
        torch.testing.assert_close(z, want, atol=tol * float(want.abs().max()), rtol=0)
        sizes = [x.shape[d] for d in dims]
        noise = torch.randn(want.shape, dtype=want.dtype, generator=torch.Generator().manual_seed(2))
        for spec in (want, noise):
            out = fr.irfftn(spec, sizes, dims)
            torch.testing.assert_close(out, torch.fft.irfftn(spec, s=sizes, dim=dims), atol=tol, rtol=0)
        full = fr.fftn(x, dims)
        torch.testing.assert_close(full, torch.fft.fftn(x, dim=dims), atol=tol * float(want.abs().max()), rtol=0)
        torch.testing.assert_close(fr.ifftn(full, dims), torch.fft.ifftn(full, dim=dims), atol=tol, rtol=0)
        for other in ([s + 2 for s in sizes], [*sizes[:-1], sizes[-1] + 3]):  # torch crops / zero-pads: alike
            torch.testing.assert_close(fr.irfftn(want, other, dims), torch.fft.irfftn(want, s=other, dim=dims),
                                       atol=tol, rtol=0)


def test_real_ffts_chunks_and_batch_size_do_not_change_results(monkeypatch):
    """Large CPU batches are transformed in chunks: RGB images bit for bit as one at a time (so results do not depend
    on the batch size), other layouts to float rounding; with autograd no chunks, and gradients are torch's."""
    monkeypatch.setattr(fr.fft, "_CHUNKED_ABOVE", 1 << 10)
    monkeypatch.setattr(fr.fft, "_CHUNK_BYTES", 1 << 10)
    x = torch.rand(7, 3, 10, 9, generator=torch.Generator().manual_seed(5))
    z = fr.rfftn(x, (1, 2, 3))
    assert torch.equal(z, torch.cat([fr.rfftn(x[i:i + 1], (1, 2, 3)) for i in range(7)]))
    out = fr.irfftn(z, [3, 10, 9], (1, 2, 3))
    assert torch.equal(out, torch.cat([fr.irfftn(z[i:i + 1], [3, 10, 9], (1, 2, 3)) for i in range(7)]))
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)
    z2 = torch.fft.rfftn(x, dim=(-2, -1))
    torch.testing.assert_close(fr.irfftn(z2, [10, 9], (-2, -1)), x, atol=1e-6, rtol=0)
    zg = torch.fft.rfftn(x.clone().requires_grad_(True), dim=(-2, -1))
    assert fr.irfftn(zg, [10, 9], (-2, -1)).requires_grad
    xd = torch.rand(2, 3, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fr.irfftn(fr.rfftn(t, (-3, -2, -1)) * 1j, [3, 5, 4], (-3, -2, -1)), (xd,))
    assert torch.autograd.gradcheck(lambda t: fr.ifftn(fr.fftn(t, (-3, -2, -1)) * 1j, (-3, -2, -1)).real, (xd,))


def test_irfftn_takes_a_real_spectrum_as_torch_does():
    """A real spectrum (an amplitude-only reconstruction, ``irfftn(rfftn(x).abs())``) failed with a KeyError on the
    CPU's RGB route; torch takes it as complex (tester)."""
    z = fr.rfftn(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)), (-3, -2, -1)).abs()
    torch.testing.assert_close(fr.irfftn(z, [3, 8, 8], (-3, -2, -1)),
                               torch.fft.irfftn(z, s=[3, 8, 8], dim=(-3, -2, -1)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [15, 32, 299])
def test_real_ffts_do_not_depend_on_the_thread_count(size):
    """1 or 2 threads, the same bits: at 299 px the batch is chunked (over 8 MiB), and each chunk holds an image per
    thread. MKL's c2r differs in the last bit between thread counts on some CPUs and sizes (odd widths up to 15 px
    here, 32 px on an AVX-512 EPYC): images up to 32 px wide are inverted on one thread; above, the inverse is the
    same bits only where torch's own row-wise c2r is, and otherwise must agree to float rounding."""
    x = torch.rand(8, 3, size, size, generator=torch.Generator().manual_seed(7))
    before = torch.get_num_threads()
    try:
        out, rows = {}, {}
        for n in (1, 2):
            torch.set_num_threads(n)
            z = fr.rfftn(x, (-3, -2, -1))
            out[n] = (z, fr.irfftn(z, [3, size, size], (-3, -2, -1)))
            rows[n] = torch.fft.irfft(torch.fft.rfft(x, dim=-1), size, dim=-1)  # torch's own c2r
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out[1][0], out[2][0])
    if size <= 32 or torch.equal(rows[1], rows[2]):
        assert torch.equal(out[1][1], out[2][1])
    else:
        torch.testing.assert_close(out[1][1], out[2][1], rtol=0, atol=2e-6)


@pytest.mark.parametrize("n", [1, 3])
def test_one_image_alone_under_several_threads_is_the_image_in_its_batch(n):
    """The channel DFT's 3x3 complex matrix product over one image (or fewer images than threads) was split across
    threads, whose block edges round otherwise, so one image at 224 px alone under 2 threads moved by 3.6e-7 from the
    same image in a batch (fuzz tester: APRSingleBatch, swap_amplitude, a one-image chunk's tail). It runs on one
    thread now: the same bits in any batch and under any thread count (threads beyond the cores: the same)."""
    x = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(8))
    y = x.roll(1, 0)
    spectra = torch.fft.rfft2(x)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        want = [fr.fft._channel_dft(spectra.clone(), inv) for inv in (False, True)]
        swapped = fr.swap_amplitude(x, y)
        torch.set_num_threads(4)
        got = [fr.fft._channel_dft(spectra[:n].clone(), inv) for inv in (False, True)]
        swapped_n = fr.swap_amplitude(x[:n], y[:n])
        same_2d = torch.equal(torch.fft.rfft2(x[:n]), spectra[:n])  # torch's own 2-D transforms, as a guard
        same_c2r = torch.equal(torch.fft.irfft2(spectra[:n], s=(224, 224)),
                               torch.fft.irfft2(spectra, s=(224, 224))[:n])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(got, want):
        assert torch.equal(a, b[:n])
    if same_2d and same_c2r:
        assert torch.equal(swapped_n, swapped[:n])


def test_apr_ops_take_the_cpu_rgb_route(monkeypatch):
    """APR-P and the image ops on RGB batches run 2-D FFTs over (H, W) on the CPU (the channel DFT is a matrix
    product), never torch's 3-D transform over (C, H, W); grey images keep torch's transform."""
    calls = []
    real = torch.fft.rfftn

    def spy(x, *args, dim=None, **kw):
        calls.append(tuple(dim))
        return real(x, *args, dim=dim, **kw)

    monkeypatch.setattr(torch.fft, "rfftn", spy)
    from aprkit.augment.functional import apr_pair

    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    apr_pair(x, torch.tensor([1, 2, 3, 0]))
    fr.swap_amplitude(x, x.flip(0))
    assert calls and set(calls) == {(-2, -1)}
    calls.clear()
    fr.swap_amplitude(x[:, :1], x[:, 1:2])
    assert set(calls) == {(-3, -2, -1)}


def test_apr_pair_through_the_chunked_ffts(monkeypatch):
    monkeypatch.setattr(fr.fft, "_CHUNKED_ABOVE", 1 << 10)
    monkeypatch.setattr(fr.fft, "_CHUNK_BYTES", 1 << 10)
    x = torch.rand(7, 3, 10, 9, generator=torch.Generator().manual_seed(5))
    perm = torch.tensor([6, 0, 1, 2, 3, 4, 5])
    from aprkit.augment.functional import apr_pair

    torch.testing.assert_close(apr_pair(x, perm), torch.fft.irfftn(
        fr.mix_spectra(torch.fft.rfftn(x, dim=(1, 2, 3)), torch.fft.rfftn(x[perm], dim=(1, 2, 3))), s=(3, 10, 9),
        dim=(1, 2, 3)), atol=1e-5, rtol=0)


def test_a_grey_phase_donor_gives_the_same_stimulus_in_float32_and_float64() -> None:
    """The channel DFT of a grey image left rounding noise at channel frequencies 1 and 2, whose phase the swap took:
    float32 and float64 stimuli differed by 371 levels on the 0-255 scale."""
    from aprkit.fourier import swap_amplitude
    from aprkit.fourier.fft import fftn, rfftn

    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (2, 1, 32, 32), generator=g, dtype=torch.uint8).expand(2, 3, 32, 32).contiguous()
    colour = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    for dtype in (torch.float32, torch.float64):
        assert not rfftn(grey.to(dtype), (-3, -2, -1))[:, 1:].any() and not fftn(grey.to(dtype), (-3, -2, -1))[:, 1:].any()
    a = swap_amplitude(grey.float(), colour.float()).double()
    assert (a - swap_amplitude(grey.double(), colour.double())).abs().max() < 1e-2


def test_zero_bins_is_checked_by_the_spectrum_helpers():
    """A misspelt ``zero_bins`` is refused, not read as the other rule."""
    from aprkit.fourier import mix_spectra, with_amplitude

    z = torch.fft.rfftn(torch.zeros(1, 3, 4, 4), dim=(1, 2, 3))
    for call in (lambda: with_amplitude(z, torch.ones(z.shape), zero_bins="phase_0"),
                 lambda: mix_spectra(z, z, zero_bins="zeros")):
        with pytest.raises(ValueError, match="zero_bins must be"):
            call()


def test_image_ops_keep_a_channels_last_batch_channels_last():
    """The image ops returned contiguous NCHW for a channels_last batch (APR-P kept the layout), costing the next
    channels_last convolution a copy; the values are the same either way (tester)."""
    from aprkit.fourier import amplitude_only, low_frequency_swap, mix_amplitude, phase_only, swap_amplitude

    x, y = (torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(s)) for s in (0, 1))
    xl, yl = (t.contiguous(memory_format=torch.channels_last) for t in (x, y))
    for op in (lambda a, b: swap_amplitude(a, b), lambda a, b: mix_amplitude(a, b, 0.3),
               lambda a, b: low_frequency_swap(a, b, 0.2), lambda a, b: phase_only(a),
               lambda a, b: amplitude_only(a)):
        out = op(xl, yl)
        assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
        torch.testing.assert_close(out, op(x, y))
        assert op(x, y).is_contiguous()


def test_every_image_op_compiles_into_one_graph():
    """phase_only, amplitude_only, spectrum / amplitude_phase and mix_amplitude with a per-image lam checked the
    values (finiteness, lam's range) while being traced: torch.compile(fullgraph=True) failed on data-dependent
    control flow. Value checks are eager-only now; the compiled ops equal the eager ones."""
    torch._dynamo.reset()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = x.flip(0)
    cases = [(fr.phase_only, (x,)), (fr.amplitude_only, (x,)), (fr.spectrum, (x,)), (fr.amplitude_phase, (x,)),
             (fr.swap_amplitude, (x, y)), (fr.mix_amplitude, (x, y, torch.tensor([0.2, 0.7]))),
             (fr.low_frequency_swap, (x, y, 0.2)), (fr.recombine, fr.amplitude_phase(x))]
    for fn, args in cases:
        torch.testing.assert_close(torch.compile(fn, fullgraph=True, backend="eager")(*args), fn(*args))
    torch._dynamo.reset()


@pytest.mark.slow
def test_an_amplitude_swap_differentiates_under_a_dynamic_compile():
    """Inductor's backward of the CPU route under dynamic shapes lost a size symbol of the channel DFT's reshape
    (NameError in its generated code; review of an elementwise DFT, and of a thread switch inside the graph): the
    compiled swap's gradient is eager's. About 15 s of Inductor compile."""
    torch._dynamo.reset()
    a = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    b = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    compiled = torch.compile(fr.swap_amplitude, dynamic=True)
    got = torch.autograd.grad(compiled(a, b).sum(), a)[0]
    torch.testing.assert_close(got, torch.autograd.grad(fr.swap_amplitude(a, b).sum(), a)[0], atol=1e-6, rtol=0)
    torch._dynamo.reset()


def test_the_channel_dft_gives_the_same_numbers_with_and_without_autograd():
    z = torch.fft.rfft2(torch.rand(3, 3, 9, 10, generator=torch.Generator().manual_seed(3)))
    for inverse in (False, True):
        plain = fr.fft._channel_dft(z.clone(), inverse).reshape(z.shape)
        graph = fr.fft._channel_dft(z.clone().requires_grad_(True), inverse)
        assert graph.requires_grad and torch.equal(graph.detach().reshape(z.shape), plain)


def test_mix_spectra_moves_a_host_lam_to_the_spectrum():
    """A per-image ``lam`` made on the host meets a spectrum on another device (``meta`` stands in for an
    accelerator here: CUDA, like it, refuses a host tensor of more than one element beside its own)."""
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    z = torch.fft.rfftn(x, dim=(-3, -2, -1))
    lam = torch.linspace(0.2, 0.8, 4).view(4, 1, 1, 1)
    zm = z.to("meta")
    assert fr.mix_spectra(zm, zm.roll(1, 0), lam).device.type == "meta"
    assert fr.mix_spectra(zm, zm, lam, perm=torch.tensor([1, 2, 3, 0])).device.type == "meta"


def test_an_empty_batch_comes_back_empty_from_every_image_op() -> None:
    """swap_amplitude and the other image ops refused an empty batch ("expected at least one image") where apr_pair,
    the APR modules and corrupt hand it back (reviewer); the result has the op's shape, dtype and device."""
    from aprkit import fourier

    x, y = torch.rand(0, 3, 8, 8), torch.rand(0, 3, 8, 8)
    for out in (fourier.swap_amplitude(x, y), fourier.mix_amplitude(x, y, torch.rand(0)),
                fourier.low_frequency_swap(x, y), fourier.phase_only(x), fourier.amplitude_only(x),
                fourier.swap_amplitude(x, torch.rand(1, 3, 8, 8))):
        assert out.shape == (0, 3, 8, 8) and out.dtype == torch.float32
    assert fourier.swap_amplitude(x.byte(), y.byte()).dtype == torch.uint8
    with pytest.raises(ValueError, match="magnitude must be 'unit', 'mean' or a tensor"):
        fourier.phase_only(x, "median")
    with pytest.raises(ValueError, match="expected at least one image"):  # an analysis, not a transform of a batch
        fourier.amplitude_phase(x)


def test_phase_only_and_the_mask_check_their_arguments() -> None:
    """phase_only took a NumPy magnitude into a comparison with 'unit' (NumPy's ambiguous-truth error) and dropped
    a complex one's imaginary part; low_frequency_mask failed inside torch for a shape without H and W (fuzz tester)."""
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    amp = fr.amplitude_phase(x)[0]
    torch.testing.assert_close(fr.phase_only(x, amp.numpy()), fr.phase_only(x, amp))
    nan = amp.clone()
    nan[0, 0, 0, 0] = float("nan")  # it was called negative (core tester)
    inf = torch.full_like(amp, float("inf"))  # passed and gave all-NaN images (fuzz tester)
    for bad, what in ((amp.to(torch.complex64), "a complex tensor"), (-amp, "negative values"), (nan, "NaN values"),
                      (inf, "infinite values")):
        with pytest.raises(ValueError, match=f"magnitude must be a real amplitude spectrum.*got {what}"):
            fr.phase_only(x, bad)
    for shape in ((8,), (3, -2, 8), (3, 1, 8), (3, 8.0, 8)):
        with pytest.raises(ValueError, match=r"shape must be an image shape \(..., H, W\) of ints with H, W >= 2"):
            fr.low_frequency_mask(shape, 0.1)
    assert fr.low_frequency_mask(x.shape, 0.1).shape == (1, 8, 5)
