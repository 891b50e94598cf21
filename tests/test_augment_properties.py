"""Property-based tests (hypothesis) of the Fourier core and the APR augmentations on random shapes."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aprkit import fourier
from aprkit.augment import APRSingleBatch, apr_pair

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def batches(draw, dtype=torch.float64):
    b = draw(st.integers(1, 4))
    c = draw(st.integers(1, 4))
    h = draw(st.integers(2, 9))
    w = draw(st.integers(2, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g, dtype=torch.float64)
    perm = torch.randperm(b, generator=g)
    return x.to(dtype), perm


@SETTINGS
@given(batches(), st.sampled_from(["chw", "hw"]))
def test_round_trip_property(data, dims):
    x, _ = data
    assert torch.allclose(fourier.recombine(*fourier.amplitude_phase(x, dims), dims), x, atol=1e-10)


@SETTINGS
@given(batches(), st.sampled_from(["chw", "hw"]))
def test_pair_amplitude_property(data, dims):
    x, perm = data
    out = apr_pair(x, perm, dims=dims)
    assert out.shape == x.shape and out.dtype == x.dtype
    axes = (1, 2, 3) if dims == "chw" else (2, 3)
    np.testing.assert_allclose(np.abs(np.fft.fftn(out.numpy(), axes=axes)),
                               np.abs(np.fft.fftn(x.numpy(), axes=axes))[perm.numpy()], atol=1e-8)
    # the identity permutation is the identity map
    assert torch.allclose(apr_pair(x, torch.arange(x.shape[0]), dims=dims), x, atol=1e-10)


@SETTINGS
@given(batches(torch.float32), st.integers(0, 1000), st.floats(0.0, 1.0))
def test_single_batch_property(data, seed, p):
    x, _ = data
    x_u8 = (x * 255).round().to(torch.uint8)
    for inp in (x, x_u8):
        out = APRSingleBatch(p=p, seed=seed)(inp)
        assert out.shape == inp.shape and out.dtype == inp.dtype
        if inp.dtype != torch.uint8:
            assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
