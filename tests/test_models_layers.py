"""Building blocks of GFNet and the phase-collapse scattering network, against direct computations."""

from __future__ import annotations

import math

import pytest
import torch

from aprkit.models import create_model
from aprkit.models.gfnet import GlobalFilter, global_filter
from aprkit.models.morlet import morlet_filter_bank
from aprkit.models.scattering import complex_modulus, complex_soft_threshold, wavelet_transform


def test_global_filter_is_a_circular_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 6, 3, generator=g, dtype=torch.float64)
    kernel = torch.randn(6, 6, 3, generator=g, dtype=torch.float64)
    weight = torch.fft.rfft2(kernel, dim=(0, 1), norm="ortho") * 6  # ortho FFTs: scale by sqrt(h*w)
    y = global_filter(x, weight)
    ref = torch.zeros_like(x)
    for dy in range(6):
        for dx in range(6):
            ref += kernel[dy, dx] * torch.roll(x, shifts=(dy, dx), dims=(1, 2))
    torch.testing.assert_close(y, ref)
    ones = torch.ones(6, 4, 3, dtype=torch.complex128)
    torch.testing.assert_close(global_filter(x, ones), x)  # all-pass filter
    with pytest.raises(ValueError, match="does not fit"):
        global_filter(x, torch.ones(6, 6, 3, dtype=torch.complex128))


def test_global_filter_module_shift_equivariant_and_amp_safe():
    layer = GlobalFilter(dim=4, h=8, w=8)
    x = torch.randn(2, 8, 8, 4)
    y = layer(x.reshape(2, 64, 4)).reshape(2, 8, 8, 4)
    y_shift = layer(torch.roll(x, (3, 5), (1, 2)).reshape(2, 64, 4)).reshape(2, 8, 8, 4)
    torch.testing.assert_close(y_shift, torch.roll(y, (3, 5), (1, 2)), atol=1e-5, rtol=1e-5)
    assert layer(x.reshape(2, 64, 4).bfloat16()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="tokens"):
        layer(torch.randn(1, 63, 4))


def test_gfnet_sizes():
    m = create_model("gfnet_xs", num_classes=1000)
    assert m.input_size == (3, 224, 224) and m.grid == (14, 14)
    assert m.blocks[0].filter.complex_weight.shape == (14, 8, 384, 2)
    assert round(sum(p.numel() for p in m.parameters()) / 1e6) == 16  # GFNet-XS, 16M in the paper
    assert create_model("gfnet_cifar").grid == (8, 8)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        create_model("gfnet_cifar", patch_size=5)
    with pytest.raises(ValueError, match="built for 32x32"):
        create_model("gfnet_cifar")(torch.rand(1, 3, 64, 64))


def test_morlet_filters():
    for half in (-1, 0, 1):
        phi, psi = morlet_filter_bank(16, 16, 4, half)
        assert phi.shape == (16, 16) and psi.shape == (4, 16, 16) and phi.dtype == torch.float32
        assert abs(phi[0, 0].item() - 1) < 0.01  # low-pass: unit DC gain
        assert psi[:, 0, 0].abs().max() < 1e-6  # wavelets: zero mean
        assert (psi.amax(dim=(1, 2)) > 0.8).all()  # band-pass with a peak near 1
    _, psi = morlet_filter_bank(32, 32, 4, 0)
    # orientations t_l = (1 - l) pi / 4: rotating the periodic grid by -90 degrees about the origin,
    # (i, j) -> (j, -i), maps the wavelet of angle pi/4 (l=0) to the one of angle -pi/4 (l=2)
    torch.testing.assert_close(torch.rot90(psi[0], -1, (0, 1)).roll(1, 1), psi[2], atol=1e-5, rtol=1e-4)
    peak = divmod(int(psi[1].argmax()), 32)
    assert peak == (12, 0)  # angle 0: centre frequency 3pi/4 = 12/32 of a turn along the first axis
    with pytest.raises(ValueError, match="half"):
        morlet_filter_bank(16, 16, 4, 2)


def test_wavelet_transform_matches_direct_circular_convolution():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 8, 8, generator=g)
    phi, psi = morlet_filter_bank(8, 8, 2, 0)
    low, high = wavelet_transform(x, phi, psi, subsample=True)
    assert low.shape == (1, 2, 4, 4) and not low.is_complex() and high.shape == (1, 4, 4, 4) and high.is_complex()
    k = torch.fft.ifft2(psi[1].to(torch.complex64))  # spatial kernel of wavelet 1
    ref = torch.zeros(8, 8, dtype=torch.complex64)
    for dy in range(8):
        for dx in range(8):
            ref += k[dy, dx] * torch.roll(x[0, 1], (dy, dx), (0, 1))
    torch.testing.assert_close(high[0, 1 * 2 + 1], ref[::2, ::2], atol=1e-5, rtol=1e-4)


def test_nonlinearities():
    z = torch.complex(torch.tensor([3.0, 0.0, 0.05]), torch.tensor([4.0, 0.0, 0.0])).requires_grad_()
    torch.testing.assert_close(complex_modulus(z.detach()), torch.tensor([5.0, 1e-6, 0.05]), atol=1e-6, rtol=0)
    rot = z.detach() * torch.exp(torch.tensor(1j * 0.7))
    torch.testing.assert_close(complex_modulus(rot), complex_modulus(z.detach()))  # phase collapse
    st = complex_soft_threshold(z.detach(), torch.tensor(1.0))
    torch.testing.assert_close(st[0], torch.tensor(0.8 * (3 + 4j), dtype=torch.complex64))  # modulus 5 -> 4, same phase
    assert st[2] == 0  # below the threshold
    complex_modulus(z).sum().backward()
    assert torch.isfinite(torch.view_as_real(z.grad)).all()  # finite gradient at 0


@pytest.mark.parametrize("nonlinearity", ["modulus", "soft_threshold"])
@pytest.mark.parametrize("skip", ["linear", "lowpass", "none"])
def test_phase_collapse_net_variants(nonlinearity, skip):
    torch.manual_seed(0)
    m = create_model("phase_collapse_cifar", nonlinearity=nonlinearity, skip=skip,
                     widths=(8, 16, 16, 16), img_size=16)
    assert m.out_shape == (16, 4, 4) and m.num_features == 2 * 16 * 16
    assert not [n for n, _ in m.layers.named_parameters() if "bias" in n]  # no biases before the classifier
    has_thr = any("threshold" in n for n, _ in m.named_parameters())
    assert has_thr == (nonlinearity == "soft_threshold")
    x = torch.rand(4, 3, 16, 16)
    m(x).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    m.eval()
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the complex layers run in float32 inside
            feats = m.forward_features(x)
    assert feats.dtype == torch.float32
    torch.testing.assert_close(m.forward_head(feats), ref)


def test_phase_collapse_net_config_and_errors():
    m = create_model("phase_collapse_cifar")
    assert [l.subsample for l in m.layers] == [False, True] * 4 and m.out_shape == (512, 2, 2)
    assert all(l.L == 4 for l in m.layers)
    im = create_model("phase_collapse_imagenet", num_classes=1000)
    assert im.out_shape == (256, 4, 4) and im.layers[0].subsample and im.layers[0].L == 8
    with pytest.raises(ValueError, match="modulus"):
        create_model("phase_collapse_cifar", nonlinearity="relu")
    with pytest.raises(ValueError, match="too small"):
        create_model("phase_collapse_cifar", img_size=8)
    assert math.isclose(m.std[0].item(), 0.2470, rel_tol=1e-6)


def test_too_few_orientations_are_named_in_the_network_s_terms():
    """L=2 said "half-octave wavelets (half=1) need L >= 3", an argument the user never passed (science tester)."""
    from aprkit.models.scattering import PhaseCollapseNet

    with pytest.raises(ValueError, match=r"L must be >= 3 orientations, got 2: every other layer uses the half-octave"):
        create_model("phase_collapse_cifar", L=2)
    assert PhaseCollapseNet(widths=(4,), L=2, img_size=8).num_classes == 10  # no psi_3/2 layer: it builds
    assert PhaseCollapseNet(widths=(4, 4), L=2, img_size=8, first_full_octave=True).num_classes == 10


@pytest.mark.parametrize("nonlinearity", ["modulus", "soft_threshold"])
def test_float64_models_keep_float64_and_half_phase_collapse_is_refused(nonlinearity):
    """A .double() phase-collapse layer and GFNet filter compute in float64 (complex64 / float() casts dropped
    the bits: float64 gradcheck failed); a half or bfloat16 phase-collapse net is refused with a message naming
    autocast (it crashed inside complex half arithmetic)."""
    from aprkit.models.scattering import PhaseCollapseLayer

    torch.manual_seed(0)
    layer = PhaseCollapseLayer(2, 3, 8, 4, 1, True, nonlinearity, "none").double()
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: torch.view_as_real(layer(t)), (x,), eps=1e-6, atol=1e-5)
    gf = GlobalFilter(2, 4, 4).double()
    tokens = torch.rand(1, 16, 2, dtype=torch.float64)
    base = gf(tokens)
    with torch.no_grad():
        gf.complex_weight.add_(1e-10)
    assert not torch.equal(gf(tokens), base)  # a 1e-10 change of the filter reaches a float64 output
    net = create_model("phase_collapse_cifar", widths=(8, 8, 16, 16), nonlinearity=nonlinearity).eval()
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(TypeError, match="torch.autocast"):
            net.to(dtype)(torch.rand(2, 3, 32, 32, dtype=dtype))
    net.float()
    out = net.double()(torch.rand(2, 3, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64


@pytest.mark.parametrize("nonlinearity", ["modulus", "soft_threshold"])
def test_skip_modes_are_the_papers_configurations(nonlinearity):
    """skip='linear' (the paper's LScat + skip, the reference's 'Fw rho Std Pc N'): P reads Wx beside rho(Wx),
    2 C (L + 1) channels, rho (and its thresholds) on every channel; 'lowpass' (LScat, 'Fw Std Pc N --psi-arch
    mod'): the low-pass linear, rho on the wavelets, C (L + 1) channels; 'none': rho on everything. Booleans of
    older checkpoints keep their meaning (True: lowpass, False: none) with a FutureWarning."""
    from aprkit.models.scattering import PhaseCollapseLayer

    torch.manual_seed(0)
    c, L = 2, 4
    x = torch.rand(3, c, 8, 8)
    for skip, n_in, n_thr in (("linear", 2 * c * (L + 1), c * (L + 1)), ("lowpass", c * (L + 1), c * L),
                              ("none", c * (L + 1), c * (L + 1))):
        layer = PhaseCollapseLayer(c, 5, 8, L, 1, True, nonlinearity, skip).eval()
        assert layer.proj.shape == (5, n_in, 2) and layer.std.running_var.shape == (n_in,)
        if nonlinearity == "soft_threshold":
            assert layer.threshold.shape[0] == n_thr
        low, high = wavelet_transform(x, layer.phi, layer.psi, True)
        thr = layer.threshold if nonlinearity == "soft_threshold" else None

        def rho(z, off, thr=thr):
            if thr is None:
                return complex_modulus(z)
            return complex_soft_threshold(z.to(torch.complex64), thr[off: off + z.shape[1]])

        parts = {"linear": lambda: [low, high, rho(low, 0), rho(high, c)], "lowpass": lambda: [low, rho(high, 0)],
                 "none": lambda: [rho(low, 0), rho(high, c)]}[skip]()
        z = layer.std(torch.cat([p.to(torch.complex64) for p in parts], 1))
        z = torch.einsum("oc,bchw->bohw", torch.view_as_complex(layer.proj), z)
        want = z / complex_modulus(z).square().sum(1, keepdim=True).clamp_min(1e-12).sqrt()
        torch.testing.assert_close(layer(x), want)
    assert create_model("phase_collapse_cifar", widths=(8, 8)).skip == "linear"  # the paper's headline network
    for old, new in ((True, "lowpass"), (False, "none")):
        with pytest.warns(FutureWarning, match=f"read as skip='{new}'"):
            assert create_model("phase_collapse_cifar", widths=(8, 8), skip=old).skip == new
    with pytest.raises(ValueError, match="skip must be one of"):
        create_model("phase_collapse_cifar", widths=(8, 8), skip="yes")


def test_checkpoints_of_the_old_default_and_of_booleans_load_and_new_ones_record_skip(tmp_path):
    """A checkpoint saved without skip was built with the default of its time ('lowpass'): it loads as such (it
    failed with a shape mismatch once 'linear' became the default); new checkpoints record the resolved skip, so a
    re-saved boolean checkpoint carries 'lowpass' and warns no more."""
    import warnings

    from aprkit.models import load_model, save_checkpoint

    torch.manual_seed(0)
    old = create_model("phase_collapse_cifar", widths=(8, 8), skip="lowpass")
    assert old.aprkit_kwargs["skip"] == "lowpass"
    save_checkpoint(tmp_path / "new.pt", old)
    payload = torch.load(tmp_path / "new.pt", weights_only=False)
    assert payload["kwargs"]["skip"] == "lowpass"
    del payload["kwargs"]["skip"]  # as saved before skip took names: the default then
    torch.save(payload, tmp_path / "old.pt")
    x = torch.rand(2, 3, 32, 32)
    for path in ("new.pt", "old.pt"):
        loaded = load_model(tmp_path / path)
        assert loaded.skip == "lowpass"
        torch.testing.assert_close(loaded(x), old.eval()(x))
    payload["kwargs"]["skip"] = True
    torch.save(payload, tmp_path / "bool.pt")
    with pytest.warns(FutureWarning):
        legacy = load_model(tmp_path / "bool.pt")
    save_checkpoint(tmp_path / "resaved.pt", legacy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_model(tmp_path / "resaved.pt").skip == "lowpass"


def test_a_plain_state_dict_that_fits_two_phase_collapse_networks_asks_for_skip(tmp_path):
    """skip='none' with the modulus has the weights of skip='lowpass': a plain state_dict (no saved arguments) of it
    loaded as 'lowpass', another network, without a word (logits off by 0.34). It is refused unless skip is given."""
    from aprkit.models import load_model

    torch.manual_seed(0)
    none = create_model("phase_collapse_cifar", widths=(8, 8), skip="none").eval()
    torch.save(none.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"fit skip='lowpass' and skip='none' alike.*model_kwargs\.skip=lowpass"):
        load_model("phase_collapse_cifar", checkpoint=tmp_path / "plain.pt", widths=(8, 8))
    loaded = load_model("phase_collapse_cifar", checkpoint=tmp_path / "plain.pt", widths=(8, 8), skip="none")
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), none(x))
