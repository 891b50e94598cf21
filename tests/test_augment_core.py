"""The unchecked cores behind the APR wrappers: same results as the reference formulas, validation once per
call (no full-size ``isfinite`` pass), zero-bin handling on both code paths, and ``torch.compile(fullgraph=True)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aprkit.augment.functional as F
from aprkit import fourier
from aprkit.augment import APRSP, APRPair, APRSingleBatch, apr_pair, apr_single, sample_single_params
from aprkit.augment.functional import apr_pair_core, recombine_views, swap_with_partner
from aprkit.augment.single import apr_single_core
from aprkit.hidden import FeatureAPR, feature_apr
from aprkit.hidden.feature_apr import feature_apr_core


def _reference_pair(x: torch.Tensor, perm: torch.Tensor, dims=(1, 2, 3)) -> torch.Tensor:
    """``|F(x[perm])| * exp(i * angle(F(x)))`` with complex FFTs (the reference ``mix_data``), in float64, except
    that a bin where ``F(x)`` is 0 (no phase; the reference gives it phase 0) stays 0."""
    f = torch.fft.fftn(x.double(), dim=dims)
    amp = torch.where(f.abs() > 1e-9, f.abs()[perm], 0.0)
    return torch.fft.ifftn(torch.polar(amp, f.angle()), dim=dims).real


@pytest.fixture
def batch() -> torch.Tensor:
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x[2] = 0.25  # a constant image: every non-DC bin is zero (no phase: stays 0)
    return x


@pytest.mark.parametrize("dims", ["chw", "hw"])
def test_pair_paths_match_the_reference_incl_zero_bins(batch, dims, monkeypatch):
    perm = torch.tensor([2, 0, 1, 5, 3, 4])
    want = _reference_pair(batch, perm, F.check_dims(dims))
    fast = apr_pair(batch, perm, dims=dims)
    monkeypatch.setattr(F, "eager_cpu", lambda t: False)  # the device / compiled path: torch.where, no host read
    where = apr_pair(batch, perm, dims=dims)
    torch.testing.assert_close(fast.double(), want, atol=2e-6, rtol=0)
    torch.testing.assert_close(where.double(), want, atol=2e-6, rtol=0)


def test_swap_with_partner_rows_and_inplace(batch):
    z = torch.fft.rfftn(batch, dim=(1, 2, 3))
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    mag = z.abs()
    want = fourier.with_amplitude(z, mag[perm], mag, zero_bins="zero")
    torch.testing.assert_close(swap_with_partner(z, perm), want)
    rows = torch.tensor([5, 0, 0])
    torch.testing.assert_close(swap_with_partner(z, perm[:3], rows=rows),
                               fourier.with_amplitude(z[rows], mag[perm[:3]], mag[rows], zero_bins="zero"))
    z2 = z.clone()
    torch.testing.assert_close(swap_with_partner(z2, perm, inplace=True), want)  # zero bins: a new tensor
    z3 = torch.fft.rfftn(torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(9)), dim=(1, 2, 3))  # no zero bins
    m3 = z3.abs()
    want3 = fourier.with_amplitude(z3, m3[perm], m3)
    assert swap_with_partner(z3, perm, inplace=True) is z3
    torch.testing.assert_close(z3, want3)


def test_wrappers_equal_their_cores_and_do_not_mutate(batch):
    x = batch.clone()
    ap = APRPair(p=1.0, seed=3)
    perm = APRPair(p=1.0, seed=3).generate_parameters(x.shape)["perm"]
    torch.testing.assert_close(ap(x), apr_pair_core(x, perm), rtol=0, atol=0)
    sb = APRSingleBatch(p=1.0, seed=4)
    params = APRSingleBatch(p=1.0, seed=4).generate_parameters(x.shape)
    torch.testing.assert_close(sb(x), apr_single(x, params, sb.ops), rtol=0, atol=0)
    torch.testing.assert_close(apr_single_core(x, params, sb.ops), apr_single(x, params, sb.ops), rtol=0, atol=0)
    for fn in (fourier.swap_amplitude, fourier.mix_amplitude, fourier.low_frequency_swap):
        fn(x, x.roll(1, 0))
    assert torch.equal(x, batch)


def test_recombine_views_matches_with_amplitude(batch):
    a, b = batch, batch.flip(-1) * 0.5
    sel = torch.tensor([True, False, True, True, False, False])
    za, zb = torch.fft.rfftn(a, dim=(1, 2, 3)), torch.fft.rfftn(b, dim=(1, 2, 3))
    spec = torch.where(sel.view(-1, 1, 1, 1), fourier.with_amplitude(za, zb.abs()), fourier.with_amplitude(zb, za.abs()))
    want = torch.fft.irfftn(spec, s=(3, 8, 8), dim=(1, 2, 3))
    torch.testing.assert_close(recombine_views(a, b, sel), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(recombine_views(a, b, False), want.where(~sel.view(-1, 1, 1, 1), recombine_views(a, b, False)))


def test_recombine_views_checks_shapes_and_dtypes(batch):
    """``recombine_views`` checked neither: a (2, ...) ``a`` with a (3, ...) ``b`` silently dropped an image, a uint8
    ``b`` was promoted (0..255 mixed into [0, 1]) and flags of the wrong length were left to torch's broadcasting
    error. Now each raises, naming what was expected; valid views give the numbers they gave."""
    a, b = batch[:2], batch.flip(-1)[:2] * 0.5
    with pytest.raises(ValueError, match=r"b must match a in shape.*\(2, 3, 8, 8\).*\(3, 3, 8, 8\)"):
        recombine_views(a, batch[:3])
    with pytest.raises(TypeError, match="b must have a's dtype torch.float32"):
        recombine_views(a, (b * 255).to(torch.uint8))
    with pytest.raises(TypeError, match="b must have a's dtype"):
        recombine_views(a, b.double())
    with pytest.raises(TypeError, match="floating views"):
        recombine_views((a * 255).to(torch.uint8), (b * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"phase_from_a must have shape \(2,\)"):
        recombine_views(a, b, torch.tensor([True, False, True]))
    with pytest.raises(TypeError, match="phase_from_a must be a bool"):
        recombine_views(a, b, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="4 dimensions"):
        recombine_views(a[0], b[0])
    za, zb = torch.fft.rfftn(a, dim=(1, 2, 3)), torch.fft.rfftn(b, dim=(1, 2, 3))
    want = torch.fft.irfftn(fourier.with_amplitude(za, zb.abs()), s=(3, 8, 8), dim=(1, 2, 3))
    torch.testing.assert_close(recombine_views(a, b, torch.tensor([True, True])), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(recombine_views(a, b), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("lam", [None, 0.3, "tensor"])
def test_feature_core_matches_fourier_ops(lam):
    g = torch.randn(5, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    perm, apply = torch.tensor([4, 0, 1, 2, 3]), torch.tensor([True, True, False, True, True])
    lam_v = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0]) if lam == "tensor" else lam
    out = feature_apr_core(g, perm, apply, lam_v, (-2, -1))
    want = (fourier.swap_amplitude(g, g[perm], "hw") if lam is None
            else fourier.mix_amplitude(g, g[perm], lam_v, "hw"))
    torch.testing.assert_close(out, torch.where(apply.view(-1, 1, 1, 1), want, g), atol=1e-5, rtol=1e-5)


def _count_full_passes(monkeypatch, numel: int) -> list[str]:
    """Record every ``isfinite``/``aminmax`` call over a tensor of ``numel`` elements (a full validation pass)."""
    calls: list[str] = []
    for name in ("isfinite", "aminmax"):
        orig = getattr(torch, name)

        def spy(t, *a, _orig=orig, _name=name, **k):
            if t.numel() == numel:
                calls.append(_name)
            return _orig(t, *a, **k)

        monkeypatch.setattr(torch, name, spy)
    return calls


def test_validation_runs_once_per_call(batch, monkeypatch):
    calls = _count_full_passes(monkeypatch, batch.numel())
    APRPair(p=1.0, seed=0)(batch, torch.zeros(6, dtype=torch.long))
    apr_pair(batch, torch.arange(6))
    fourier.mix_amplitude(batch, batch.roll(1, 0), 0.5)
    fourier.low_frequency_swap(batch, batch.roll(1, 0), 0.1)
    FeatureAPR(p=1.0).train()(batch)
    assert calls == []  # finiteness comes from the spectra's DC terms: O(B)
    APRSingleBatch(p=1.0, seed=0)(batch)
    assert calls == ["aminmax"]  # the one unit-range pass, which also checks finiteness


def test_nan_rejected_once_at_every_boundary(batch):
    bad = batch.clone()
    bad[4, 1, 3, 5] = float("nan")
    perm = torch.arange(6).roll(1)
    for call in (lambda: APRPair(p=1.0, seed=0)(bad), lambda: APRPair(p=1.0).apply(bad, {"perm": perm, "mask": torch.ones(6, dtype=torch.bool)}),
                 lambda: apr_pair(bad, perm), lambda: APRSingleBatch(p=1.0)(bad)):
        with pytest.raises(ValueError, match="images contains NaN"):
            call()
    for fn in (fourier.mix_amplitude, fourier.low_frequency_swap, fourier.swap_amplitude):
        with pytest.raises(ValueError, match="NaN"):
            fn(batch, bad)
        with pytest.raises(ValueError, match="NaN"):
            fn(bad, batch)
    out = apr_pair_core(bad, perm)  # the unchecked core: NaN propagates, nothing raised
    assert not torch.isfinite(out).all()


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_hot_paths_compile_without_graph_breaks(backend, fused, monkeypatch):
    """Issue 14 item 8: the functional APR hot paths trace into one graph (value checks stay outside). ``fused``:
    the amplitude scaling as compiled for accelerators (one broadcast multiply), here on the CPU, against eager's."""
    import aprkit.fourier.mixing as mixing

    if fused:
        monkeypatch.setattr(mixing, "_fused_scale", lambda z: torch.compiler.is_compiling())
    torch._dynamo.reset()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    perm, mask = torch.tensor([1, 2, 3, 0]), torch.tensor([True, False, True, True])
    cases = [
        (apr_pair_core, (x, perm, None, (-3, -2, -1))),
        (apr_pair_core, (x, perm, mask, (-2, -1), True)),
        (apr_pair, (x, perm)),
        (apr_pair, ((x * 255).to(torch.uint8), perm, mask)),
        (feature_apr_core, (x, perm, mask, 0.3, (-2, -1))),
        (feature_apr_core, (x, perm, mask, None, (-2, -1))),
    ]
    for fn, args in cases:
        compiled = torch.compile(fn, fullgraph=True, backend=backend)
        torch.testing.assert_close(compiled(*args), fn(*args), atol=1e-5, rtol=1e-5)
    xg = x.clone().requires_grad_(True)
    torch.compile(apr_pair_core, fullgraph=True, backend=backend)(xg, perm).square().sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    torch._dynamo.reset()


def test_modules_compile_whole_with_their_draws():
    """``torch.compile(module)`` of the augmentation modules, draws and checks included (graph breaks allowed): the
    same output as eager from the same seed. The GPU check found ``torch.compile(APRPair(...))`` failing under torch
    2.11 (Dynamo recursed into the checked ``p``, then a data descriptor; it is a plain attribute now)."""
    from aprkit.corruptions import RandomCorruption

    torch._dynamo.reset()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for make in (lambda: APRPair(p=1.0, seed=3), lambda: APRSingleBatch(p=1.0, seed=3),
                 lambda: RandomCorruption("gaussian_noise", p=1.0, generator=torch.Generator().manual_seed(3)), lambda: FeatureAPR(p=1.0, generator=torch.Generator().manual_seed(3))):
        torch.testing.assert_close(torch.compile(make(), backend="eager")(x), make()(x))
    torch._dynamo.reset()


def test_feature_apr_is_seeded_and_keeps_dtype():
    x = torch.randn(4, 8, 6, 6, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    a = feature_apr(x, p=1.0, mode="mix", generator=torch.Generator().manual_seed(5))
    b = feature_apr(x, p=1.0, mode="mix", generator=torch.Generator().manual_seed(5))
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)


def test_sample_params_feed_apr_single_core():
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    params = sample_single_params(3, 1.0, generator=torch.Generator().manual_seed(1))
    out = apr_single_core(x, params, APRSingleBatch().ops)
    assert out.dtype == torch.uint8 and out.shape == x.shape


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_aprpair_compile_core_equals_eager(backend):
    """Issue 17: ``compile_core`` compiles the core once per module (lazily); sampling and checks stay eager."""
    torch._dynamo.reset()
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for kw in ({}, {"per_sample": True, "p": 0.5}, {"dims": "hw", "clamp": True}):
        eager, compiled = APRPair(seed=4, **({"p": 1.0} | kw)), APRPair(seed=4, compile_core={"backend": backend}, **({"p": 1.0} | kw))
        for inp in (x, (x * 255).to(torch.uint8)):
            torch.testing.assert_close(compiled(inp), eager(inp), atol=0, rtol=0)
        core = compiled._core
        compiled(x)
        assert core is not None and compiled._core is core  # compiled once, reused
    bad = x.clone()
    bad[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="images contains NaN"):  # the CPU check runs outside the graph
        APRPair(p=1.0, seed=0, compile_core={"backend": backend})(bad)
    aprsp = APRSP(p=1.0, seed=4, compile_core={"backend": backend})
    x_all, _ = aprsp(x, torch.arange(5))
    torch.testing.assert_close(x_all[5:], APRPair(p=1.0, seed=4)(x), atol=0, rtol=0)
    assert "compile_core" in repr(aprsp) and APRPair(compile_core=True).compile_core is True
    with pytest.raises(TypeError, match="compile_core must be"):
        APRPair(compile_core="reduce-overhead")
    torch._dynamo.reset()


def test_device_path_never_reads_values_and_propagates_nan(batch, monkeypatch):
    """Issue 17: off the eager CPU path (accelerators, compile) APR-P does no host read; NaN/inf images come out
    NaN, as do the images taking their amplitude, and the others are exact."""
    perm = torch.tensor([4, 0, 1, 2, 5, 3])  # image i takes the amplitude of image perm[i]
    bad = batch.clone()
    bad[4, 1, 3, 5] = float("nan")  # image 0 takes its amplitude
    bad[3, 0, 0, 0] = float("inf")  # image 5 takes its amplitude
    good = apr_pair(batch, perm)
    monkeypatch.setattr(F, "eager_cpu", lambda t: False)
    read = []
    monkeypatch.setattr(F, "check_finite_spectrum", lambda *a, **k: read.append(a))
    for out in (apr_pair(bad, perm), apr_pair_core(bad, perm, check_finite=True), APRPair(p=1.0, seed=0).apply(bad, {
            "perm": perm, "mask": torch.ones(6, dtype=torch.bool)})):
        assert read == []
        assert torch.isnan(out).flatten(1).all(1).tolist() == [True, False, False, True, True, True]
        torch.testing.assert_close(out[[1, 2]], good[[1, 2]], atol=1e-6, rtol=0)
    APRPair(p=1.0, seed=0)(bad)
    assert read == []
    masked = apr_pair(bad, perm, torch.tensor([True, True, True, False, False, True]))
    assert torch.equal(masked[3:5].isnan(), bad[3:5].isnan())  # unselected: returned as they are


def test_clamp_leaves_unselected_images_exactly_as_given():
    """``clamp=True`` clamps the recombined images; masked-out ones are returned as they are, also when their
    values lie outside [0, 1] (they were clamped too)."""
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    mask = torch.tensor([True, False, True, False])
    out = apr_pair(x, torch.tensor([1, 0, 3, 2]), mask, clamp=True)
    assert torch.equal(out[~mask], x[~mask])
    assert float(out[mask].min()) >= 0.0 and float(out[mask].max()) <= 1.0


def test_apply_follows_a_mixed_mask_also_without_per_sample():
    """``apply`` is deterministic in the given params: a mask selecting some images recombines those, whatever
    ``per_sample`` was (it used to read only ``mask[0]``)."""
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    perm, mask = torch.tensor([1, 0, 3, 2]), torch.tensor([False, True, True, False])
    got = APRPair(p=1.0).apply(x, {"perm": perm, "mask": mask})
    torch.testing.assert_close(got, apr_pair(x, perm, mask))
    assert torch.equal(got[~mask], x[~mask]) and not torch.equal(got[mask], x[mask])
    assert APRPair(p=1.0).apply(x, {"perm": perm, "mask": torch.zeros(4, dtype=torch.bool)}) is x


def _per_item_checks() -> None:
    small, big = (sample_single_params(n, 0.5, generator=torch.Generator().manual_seed(0)) for n in (4, 8))
    assert list(small) == list(big) and all(torch.equal(small[k], big[k][:4]) for k in small)


def test_apr_s_draws_are_per_item(monkeypatch):
    """Image i's ops, levels and flags do not depend on the batch size: same seed, batches of 4 and 8, items 0..3."""
    _per_item_checks()
    x8 = torch.randint(0, 256, (8, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    for x in (x8, x8.float() / 255):
        for p in (0.5, 1.0):
            want = APRSingleBatch(p=p, seed=7)(x)[:4]
            torch.testing.assert_close(APRSingleBatch(p=p, seed=7)(x[:4]), want, atol=0, rtol=0)
    import aprkit.augment.ops as ops  # off the CPU draws come in calls of a fixed number of rows: the same holds
    monkeypatch.setitem(ops._ROWS_PER_CALL, "cpu", 3)
    _per_item_checks()
    assert sample_single_params(7, generator=torch.Generator().manual_seed(0))["op1"].shape == (7,)


@pytest.mark.parametrize("rows", [None, 3])
def test_uniform_rows_into_a_buffer_draws_the_same(monkeypatch, rows):
    """``out=``: the draws of a compiled training step go into buffers kept from step to step (a CUDA graph reads
    them in place); the numbers are those of a fresh draw, also when devices draw in whole chunks of rows."""
    from aprkit.augment.draws import _ROWS_PER_CALL, uniform_rows, uniform_rows_shape

    monkeypatch.setitem(_ROWS_PER_CALL, "cpu", rows)
    for n in (1, 7, 9):
        buf = torch.full(uniform_rows_shape(n, 8, "cpu"), -1.0, dtype=torch.float64)
        assert buf.shape[0] == (n if rows is None else -(-n // rows) * rows)
        got = uniform_rows(n, 8, torch.Generator().manual_seed(n), out=buf)
        want = uniform_rows(n, 8, torch.Generator().manual_seed(n))
        assert got.data_ptr() == buf.data_ptr() and torch.equal(got, want)
    with pytest.raises(ValueError, match="out must be float64"):
        uniform_rows(4, 8, torch.Generator(), out=torch.empty(2, 8, dtype=torch.float64))
    from aprkit._tensors import same_device  # a generator made with device="cuda" says cuda, its tensors cuda:0

    assert same_device("cpu", torch.device("cpu")) and same_device("cuda", "cuda") and not same_device("cpu", "cuda")
    assert not same_device("cuda:0", "cuda:1")


def test_apr_s_draw_distribution():
    """One block of uniforms per batch, the same distribution as before: uniform ops, levels in [0.1, severity),
    fair signs and phase source, recombination with probability p."""
    n, num_ops = 40000, 9
    d = sample_single_params(n, 0.3, severity=3, num_ops=num_ops, generator=torch.Generator().manual_seed(0))
    for i in "12":
        freq = torch.bincount(d[f"op{i}"], minlength=num_ops).double() / n
        assert d[f"op{i}"].dtype == torch.int64 and freq.numel() == num_ops and (freq - 1 / num_ops).abs().max() < 0.01
        lvl = d[f"level{i}"]
        assert lvl.dtype == torch.float64 and 0.1 <= float(lvl.min()) and float(lvl.max()) < 3
        assert abs(float(lvl.mean()) - 1.55) < 0.02 and abs(d[f"negate{i}"].double().mean() - 0.5) < 0.01
    assert abs(d["recombine"].double().mean() - 0.3) < 0.01 and abs(d["phase_from_first"].double().mean() - 0.5) < 0.01
    assert all(d[k].dtype == torch.bool for k in ("negate1", "negate2", "recombine", "phase_from_first"))
    assert bool(sample_single_params(50, 1.0)["recombine"].all())
    assert not sample_single_params(50, 0.0)["recombine"].any()


def test_apr_outputs_keep_channels_last():
    """A channels_last batch comes back channels_last (it came back contiguous NCHW), with the same values."""
    x8 = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    perm, mask = torch.tensor([1, 2, 3, 0]), torch.tensor([True, False, True, True])
    params = sample_single_params(4, 0.5, generator=torch.Generator().manual_seed(1))
    calls = {"apr_pair": lambda t: apr_pair(t, perm), "apr_pair_mask": lambda t: apr_pair(t, perm, mask),
             "apr_single": lambda t: apr_single(t, params), "APRPair": lambda t: APRPair(p=1.0, seed=0)(t),
             "APRSingleBatch": lambda t: APRSingleBatch(p=1.0, seed=2)(t)}
    for x in (x8, x8.float() / 255):
        cl = x.contiguous(memory_format=torch.channels_last)
        for name, fn in calls.items():
            out, ref = fn(cl), fn(x)
            assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous(), name
            assert ref.is_contiguous(), name
            torch.testing.assert_close(out, ref, atol=0, rtol=0)


def test_clamp_refuses_0_255_float_input_and_hw_dims_refuse_channels_last():
    """``clamp=True`` promises [0, 1] floats: 0..255 floats would come out saturated, so they are refused (eager
    CPU); with ``dims="hw"`` a (B, H, W, C) batch would be transformed over the wrong axes, so it is refused too."""
    from aprkit.augment import APRPair, APRSingleBatch, apr_pair

    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"0\.\.255 floats"):
        APRPair(p=1.0, clamp=True, seed=0)(x * 255)
    with pytest.raises(ValueError, match=r"0\.\.255 floats"):
        apr_pair(x * 255, torch.tensor([1, 2, 3, 0]), clamp=True)
    assert APRPair(p=1.0, seed=0)(x * 255).amax() > 1  # without clamp any float range is fine (normalised batches)
    bhwc = x.permute(0, 2, 3, 1).contiguous()
    for call in (lambda: APRPair(p=1.0, dims="hw", seed=0)(bhwc), lambda: APRSingleBatch(seed=0)(bhwc),
                 lambda: apr_pair(bhwc, torch.tensor([1, 2, 3, 0]), dims="hw")):
        with pytest.raises(ValueError, match="channels-last"):
            call()
    APRPair(p=1.0, dims="chw", seed=0)(bhwc)  # the 3-D transform is the same in either layout


def test_numpy_images_may_have_any_channel_count():
    """Like albumentations' own transforms, APR-S takes (H, W, C) arrays with C other than 1 or 3 (torch's path)."""
    from aprkit.augment import APRSingle

    img = np.random.default_rng(0).integers(0, 256, (16, 16, 4)).astype(np.uint8)
    aug = APRSingle(seed=0)
    out = aug.apply(img, params := aug.generate_parameters())
    assert out.shape == img.shape and out.dtype == np.uint8
    ref = aug.apply(torch.from_numpy(img).permute(2, 0, 1).contiguous(), params)
    assert np.array_equal(out, ref.permute(1, 2, 0).numpy())
    f = aug.apply(img.astype(np.float32) / 255, params)
    assert f.shape == img.shape and f.dtype == np.float32


def test_replayed_parameters_name_what_is_missing() -> None:
    x = torch.rand(4, 3, 8, 8)
    with pytest.raises(ValueError, match=r"params lack \['mask'\]; expected the dict from generate_parameters"):
        APRPair(p=1.0).apply(x, {"perm": torch.arange(4)})
    with pytest.raises(ValueError, match="must describe a batch"):
        APRSingleBatch().generate_parameters(())


def test_apr_s_takes_another_augmentations_overshoot_as_the_hosts_do():
    """Bicubic resampling or APR-P leave float images a little outside [0, 1]; kornia's and torchvision's own
    transforms take them, and APR-S clamps its views: it takes them too (its output stays in [0, 1]). 0..255 floats
    and images normalised beyond [-1, 2] (here with std 0.2) are still refused, each with its own advice."""
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.3  # [-0.3, 1.3]
    aprs = APRSingleBatch(p=1.0, seed=1)
    y = aprs(x)
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    z = apr_single(x, APRSingleBatch(p=1.0, seed=2).generate_parameters(x.shape))  # the functional API too
    assert float(z.min()) >= 0 and float(z.max()) <= 1
    with pytest.raises(ValueError, match="divide 0..255 values by 255"):
        aprs(x.clamp(0, 1) * 255)
    with pytest.raises(ValueError, match="normalised with a mean and std"):
        aprs((x.clamp(0, 1) - 0.5) / 0.2)


def test_images_normalised_to_minus_one_one_are_warned_of_where_views_are_clamped():
    """Images normalised with mean = std = 0.5 lie in [-1, 1], inside the overshoot window, and would lose their
    negative half to the clamp (tester: 53 % of the pixels came out 0, silently): every entry point warns, naming the
    caller's line; APR-P's own output handed on to APR-S does not look normalised (a few values below 0)."""
    import warnings

    from conftest import natural_images

    from aprkit.augment import APRSingle

    x = natural_images(16, seed=3).float() / 255
    xn = (x - 0.5) / 0.5
    calls = {
        "APRSingleBatch": lambda: APRSingleBatch(seed=0)(xn),
        "APRSingle": lambda: APRSingle(seed=0)(xn[0]),
        "APRPair(clamp=True)": lambda: APRPair(p=1.0, clamp=True, seed=0)(xn),
    }
    for name, call in calls.items():
        with pytest.warns(RuntimeWarning, match=r"of its values below 0 .*normalise after this step") as got:
            call()
        assert got[0].filename == __file__, name  # the warning points at the line that called the transform
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        APRSingleBatch(p=1.0, seed=0)(APRPair(p=1.0, seed=0)(x))  # overshoot, not normalised
        APRSingleBatch(p=1.0, seed=0)(x)


def _grey_and_colour() -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 3, 8, 8, generator=g)
    x[0] = x[0, :1].expand(3, 8, 8)  # a grey image stored as RGB: its channel frequencies 1 and 2 are exact zeros
    x[2] = 0.5  # a constant image: every non-DC bin is zero
    return x


def test_a_bin_without_phase_stays_zero_on_every_path(monkeypatch):
    """APR-P of a grey image (``dims="chw"``) with a colour partner stays grey, with no spike at pixel (0, 0) (the
    reference's phase 0 would put the partner's whole colour amplitude there); a constant image stays constant. The
    CPU fast path, the device / compiled path, autograd and the NumPy APR-S path agree, and the reference formula is
    kept on every bin that has a phase."""
    x = _grey_and_colour()
    perm = torch.tensor([1, 0, 3, 2])
    want = _reference_pair(x, perm)
    fast = apr_pair(x, perm)
    grad = apr_pair(x.clone().requires_grad_(True), perm).detach()
    monkeypatch.setattr(F, "eager_cpu", lambda t: False)
    where = apr_pair(x, perm)
    for out in (fast, grad, where):
        torch.testing.assert_close(out.double(), want, atol=2e-6, rtol=0)
    torch.testing.assert_close(fast[0, 0], fast[0, 1], atol=1e-6, rtol=0)  # still grey
    torch.testing.assert_close(fast[0, 0], fast[0, 2], atol=1e-6, rtol=0)
    assert float(fast[0].amax()) < 1.5 and float(fast[0].amin()) > -0.5  # no spike
    torch.testing.assert_close(fast[2], torch.full_like(fast[2], float(x[3].mean())), atol=1e-6, rtol=0)
    phase0 = fourier.swap_amplitude(x, x[perm], zero_bins="phase0")  # the reference formula, spike included
    f = torch.fft.fftn(x.double(), dim=(1, 2, 3))
    ref = torch.fft.ifftn(torch.polar(f.abs()[perm], f.angle()), dim=(1, 2, 3)).real
    torch.testing.assert_close(phase0.double(), ref, atol=2e-6, rtol=0)
    assert float(phase0[0, :, 0, 0].amax()) > 1.5  # the spike the default avoids
    torch.testing.assert_close(fourier.swap_amplitude(x, x[perm]), fast, atol=2e-6, rtol=0)
    views = np.stack([x.numpy(), x[perm].numpy()])
    for i in range(4):  # APR-S's NumPy path (one image at a time), the phase of the first view
        got = F.recombine_views_numpy(views[:, i], True)
        np.testing.assert_allclose(got, fast[i].numpy(), atol=2e-6)
    with pytest.raises(ValueError, match="zero_bins must be"):
        fourier.swap_amplitude(x, x, zero_bins="angle")


def test_feature_apr_keeps_a_dead_channel_dead():
    """A channel that is all zero in one sample (a dead post-ReLU feature map) has no phase: FeatureAPR leaves it zero,
    in swap and in mix mode, where the partner's channel is alive (phase 0 would give it the partner's amplitude, a
    spike at (0, 0)); ``zero_bins="phase0"`` shows the spike the default avoids."""
    x = torch.rand(4, 6, 5, 5, generator=torch.Generator().manual_seed(2))
    x[0, 3] = 0.0  # dead in sample 0 only; its partner (sample 1) has it alive
    perm, apply = torch.tensor([1, 0, 3, 2]), torch.ones(4, dtype=torch.bool)
    for lam in (None, 0.5, torch.tensor([0.3, 0.5, 0.7, 0.9])):
        out = feature_apr_core(x, perm, apply, lam, (-2, -1))
        assert torch.equal(out[0, 3], torch.zeros_like(out[0, 3]))
        if lam is not None:  # mixed, the partner keeps part of its own amplitude there (swapped: sample 0's, none)
            assert float(out[1, 3].abs().amax()) > 0.1
    spike = fourier.swap_amplitude(x, x[perm], dims="hw", zero_bins="phase0")
    assert float(spike[0, 3, 0, 0]) > 1.0


@pytest.mark.parametrize("size", [7, 14, 28])
def test_a_bin_zero_to_the_ffts_rounding_has_no_phase(size):
    """On grids that are not powers of two the float32 FFT of a constant channel leaves its non-DC bins at rounding
    level (about 1e-8 of the norm), not 0: those bins have no phase either. The amplitude swaps, FeatureAPR and the
    transplant codes treat them as exact zeros (a constant channel stays constant; the phase code gives them phase
    0 exactly as in float64), where a fixed 1e-12 threshold gave them the rounding's noise phase (tester)."""
    from aprkit.hidden.codes import transplant

    g = torch.Generator().manual_seed(size)
    x = torch.rand(4, 3, size, size, generator=g)
    x[0, 1] = 0.3  # constant in one sample
    z = torch.fft.rfftn(x[0, 1], dim=(-2, -1))
    if size == 7:  # rounding, not zeros (the case this is about; other sizes depend on the FFT's plan)
        assert float(z.abs().flatten()[1:].amax()) > 1e-12
    perm = torch.tensor([1, 2, 3, 0])
    for lam in (None, 0.5):
        out = feature_apr_core(x, perm, torch.ones(4, dtype=torch.bool), lam, (-2, -1))
        assert float(out[0, 1].std()) < 1e-6  # stays constant
    swapped = fourier.swap_amplitude(x, x[perm], dims="hw")
    assert float(swapped[0, 1].std()) < 1e-6
    got = transplant(x, x[perm], "phase")
    fa, fb = (torch.fft.fftn(t.double(), dim=(-2, -1)) for t in (x, x[perm]))
    phase = torch.where(fa.abs() > 1e-9, fa.angle(), torch.zeros_like(fa.real))  # float64: exact phase 0
    want = torch.fft.ifftn(torch.polar(fb.abs(), phase), dim=(-2, -1)).real
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=0)


@pytest.mark.parametrize("dims", ["chw", "hw"])
def test_natural_images_keep_their_small_bins(dims):
    """The no-phase limit (1 eps of the transform's norm) zeroes rounding, not the real small bins of natural 224 px
    images: APR-P stays at the reference formula (at 8 eps it moved 10 % of such images' uint8 pixels) (reviewer)."""
    from conftest import natural_images

    x = natural_images(4, size=224).float() / 255
    perm = torch.tensor([1, 2, 3, 0])
    want = _reference_pair(x, perm, F.check_dims(dims))
    got = apr_pair(x, perm, dims=dims).double()
    assert float((got - want).abs().amax()) < (1e-3 if dims == "chw" else 1e-5)
    np_out = F.recombine_views_numpy(np.stack([x[0].permute(1, 2, 0).numpy(), x[1].permute(1, 2, 0).numpy()]),
                                     True, dims)
    np_want = _reference_pair(torch.stack([x[0], x[1]]), torch.tensor([1, 0]), F.check_dims(dims))[0]
    assert float(np.abs(np_out - np_want.permute(1, 2, 0).numpy()).max()) < (1e-3 if dims == "chw" else 1e-5)


def test_apr_s_parameters_are_checked_where_they_are_drawn_and_taken() -> None:
    """sample_single_params checks severity and num_ops as APRSingleBatch does (severity 0 gave levels in (0, 0.1],
    num_ops 0 was taken), and apr_single names a parameter of the wrong kind or an op index past the ops given (a
    float op1 failed with a bare IndexError) (reviewer)."""
    for kw, match in ((dict(severity=0), r"severity must be a number in \(0.1, 10\], got 0"),
                      (dict(severity=100), "severity must be a number"),
                      (dict(num_ops=0), "num_ops must be a positive int"), (dict(num_ops=2.0), "num_ops")):
        with pytest.raises(ValueError, match=match):
            sample_single_params(8, **kw)
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    prm = sample_single_params(8, generator=torch.Generator().manual_seed(1))
    for key, bad, kind in (("op1", prm["op1"].float(), "an integer"), ("level2", prm["level2"].long(), "a floating"),
                           ("recombine", prm["recombine"].long(), "a bool")):
        with pytest.raises(TypeError, match=rf"params\['{key}'\] must be {kind} tensor of shape \(8,\)"):
            apr_single(x, {**prm, key: bad})
    with pytest.raises(ValueError, match=r"params\['op1'\] must hold op indices in \[0, 2\) \(the 2 ops given"):
        apr_single(x, sample_single_params(8, num_ops=9, generator=torch.Generator().manual_seed(2)),
                   ops=["rotate", "posterize"])
    three = sample_single_params(8, num_ops=2, generator=torch.Generator().manual_seed(2))
    assert apr_single(x, three, ops=["rotate", "posterize"]).shape == x.shape
