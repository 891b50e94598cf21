"""Feature-level APR: recombine hidden features' Fourier phase with a batch partner's amplitude.

The functional :func:`feature_apr` is stateless and batched; :class:`FeatureAPR` is the thin module
(identity in eval mode) that :func:`aprkit.hidden.attach` hooks into a network.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from .. import fourier
from .._checks import CheckedProbability, check_dims, check_probability, eager_cpu
from .._generators import make_generator
from .._tensors import compute_dtype, generator_device, to_device
from ..augment.functional import swap_with_partner
from .layout import from_grid, to_grid

__all__ = ["feature_apr", "feature_apr_core", "FeatureAPR"]

Lam = float | tuple[float, float] | None


def _check_lam(lam: Lam, mode: str) -> float | tuple[float, float]:
    if mode not in ("swap", "mix"):
        raise ValueError(f"mode must be 'swap' (partner's amplitude) or 'mix' (amplitude interpolation), got {mode!r}")
    if lam is None:
        return 1.0 if mode == "swap" else (0.0, 1.0)
    if mode == "swap" and lam != 1.0:
        raise ValueError(f"lam={lam!r} needs mode='mix' (amplitude interpolation); mode='swap' takes the partner's "
                         "whole amplitude (lam 1)")
    if isinstance(lam, (tuple, list)):
        if len(lam) != 2:
            raise ValueError(f"lam must be a float or a (low, high) range, got {lam!r}")
        lo, hi = check_probability(lam[0], "lam[0]"), check_probability(lam[1], "lam[1]")
        if lo > hi:
            raise ValueError(f"lam range must have low <= high, got {lam!r}")
        return (lo, hi)
    return check_probability(lam, "lam")


def feature_apr(
    x: torch.Tensor,
    *,
    p: float = 1.0,
    mode: Literal["swap", "mix"] = "swap",
    lam: Lam = None,
    dims: fourier.Dims = "hw",
    num_prefix_tokens: int | None = None,
    grid: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Recombine each sample's feature phase with the amplitude of a random batch partner.

    ``x`` is ``(B, C, H, W)`` or tokens ``(B, N, D)`` (prefix tokens pass through untouched). With
    probability ``p`` per sample, ``mode="swap"`` takes the partner's amplitude and ``mode="mix"`` the
    amplitude ``(1 - lam) |X| + lam |Y|`` with ``lam`` a float or drawn uniformly per sample from a
    ``(low, high)`` range (default ``(0, 1)``). Returns the shape and dtype of ``x``; differentiable; an empty batch
    comes back as it is.
    Arguments and the layout are checked; values are not (like any layer: NaN/inf propagate, no host sync).
    """
    p = check_probability(p, "p")
    lam_v = _check_lam(lam, mode)
    fft_dims = check_dims(dims)
    g, prefix, layout = to_grid(x, num_prefix_tokens=num_prefix_tokens, grid=grid, name="features")
    b = g.shape[0]
    if b == 0:  # an empty batch passes, as through any layer
        return x
    gdev = generator_device(generator)
    perm = to_device(torch.randperm(b, generator=generator, device=gdev), g.device)  # no host sync
    apply = to_device(torch.rand(b, generator=generator, device=gdev) < p, g.device)
    lam_t: float | torch.Tensor | None = None
    if mode == "mix":
        if isinstance(lam_v, tuple):
            u = to_device(torch.rand(b, generator=generator, device=gdev), g.device)
            lam_t = lam_v[0] + (lam_v[1] - lam_v[0]) * u
        else:
            lam_t = lam_v
    return from_grid(feature_apr_core(g, perm, apply, lam_t, fft_dims), prefix, layout)


def feature_apr_core(
    g: torch.Tensor, perm: torch.Tensor, apply: torch.Tensor, lam: float | torch.Tensor | None,
    fft_dims: tuple[int, ...],
) -> torch.Tensor:
    """The unchecked core of :func:`feature_apr` on a grid ``g`` ``(B, C, H, W)``: no validation, no host sync.

    ``perm`` ``(B,)`` partner indices and ``apply`` ``(B,)`` bool on ``g``'s device; ``lam`` ``None`` swaps
    amplitudes, a float or ``(B,)`` tensor in [0, 1] mixes them. One real FFT serves both roles (the
    partners' spectra are a permutation of it). Like any layer, NaN/inf in ``g`` propagate (no check).
    """
    z = fourier.rfftn(g.to(compute_dtype(g)), fft_dims)
    if lam is None:
        spec = swap_with_partner(z, perm, inplace=True, dims=fft_dims)
    else:
        lam_b = lam.view(-1, *([1] * (z.ndim - 1))) if isinstance(lam, torch.Tensor) else lam
        spec = fourier.mix_spectra(z, z, lam_b, perm=perm, inplace=True, dims=fft_dims)
    out = fourier.irfftn(spec, [g.shape[d] for d in fft_dims], fft_dims).to(g.dtype)
    if g.ndim == 4 and not g.is_contiguous() and g.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)  # the layers after it keep their layout (and speed)
    if eager_cpu(apply) and bool(apply.all()):  # every sample recombined: skip the selection pass
        return out
    return torch.where(apply.view(-1, *([1] * (g.ndim - 1))), out, g)


#: :func:`feature_apr` run eagerly inside a compiled model (a graph break, in training only): Inductor cannot yet
#: differentiate the complex magnitude of the strided spectra it makes ("must be 1 to view ComplexFloat as Float",
#: torch 2.14). Made by the first FeatureAPR, not at import (``torch.compiler.disable`` loads Dynamo, ~1 s)
_EAGER_FEATURE_APR: Any = None


def _make_eager() -> None:
    global _EAGER_FEATURE_APR
    if _EAGER_FEATURE_APR is None:
        _EAGER_FEATURE_APR = torch.compiler.disable(feature_apr)


class FeatureAPR(CheckedProbability, nn.Module):
    """Feature-level APR as a module: :func:`feature_apr` in training mode, the identity in eval mode.

    Args:
        p: probability per sample of recombining. dims: ``"hw"`` (per-channel 2-D FFT over the grid,
        default) or ``"chw"``. mode: ``"swap"`` or ``"mix"``. lam: mix weight or ``(low, high)``.
        num_prefix_tokens / grid: token layout (``None`` infers it). generator / seed: the source of the draws (a
        generator, or a new CPU one seeded with ``seed``; ``None``: torch's global RNG), as ``APRPair`` takes them.
    """

    def __init__(
        self,
        p: float = 0.5,
        dims: fourier.Dims = "hw",
        mode: Literal["swap", "mix"] = "swap",
        lam: Lam = None,
        *,
        num_prefix_tokens: int | None = None,
        grid: tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.p = p  # checked whenever it is set (CheckedProbability)
        check_dims(dims)
        self.dims = dims
        self.lam = _check_lam(lam, mode)
        self.mode = mode
        self.num_prefix_tokens = num_prefix_tokens
        self.grid = grid
        self.generator = make_generator(generator, seed)
        _make_eager()

    def __setstate__(self, state: dict[str, Any]) -> None:  # unpickled (torch.load) in a process that made none yet
        super().__setstate__(state)
        _make_eager()

    def forward(self, x: torch.Tensor, *, layout: tuple[tuple[int, int] | None, int | None] | None = None
                ) -> torch.Tensor:
        """``layout``: ``(grid, num_prefix_tokens)`` of this call's tokens, in place of the module's own (``attach``'s
        hook passes its thread's patch grid here: setting the shared module's attributes let a concurrent forward
        read another thread's grid)."""
        if not self.training or self.p == 0.0:
            return x
        grid, k = (self.grid, self.num_prefix_tokens) if layout is None else layout
        return _EAGER_FEATURE_APR(
            x, p=self.p, mode=self.mode, lam=self.lam, dims=self.dims,
            num_prefix_tokens=k, grid=grid, generator=self.generator,
        )

    def extra_repr(self) -> str:
        return (f"p={self.p}, dims={self.dims!r}, mode={self.mode!r}, lam={self.lam}, "
                f"num_prefix_tokens={self.num_prefix_tokens}, grid={self.grid}")
