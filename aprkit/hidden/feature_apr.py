"""Feature-level APR: recombine hidden features' Fourier phase with a batch partner's amplitude.

The functional :func:`feature_apr` is stateless and batched; :class:`FeatureAPR` is the thin module
(identity in eval mode) that :func:`aprkit.hidden.attach` hooks into a network.
"""

from __future__ import annotations

from typing import Literal, Union

import torch
from torch import nn

from .. import fourier
from .._checks import check_dims, check_probability
from .layout import from_grid, to_grid

__all__ = ["feature_apr", "FeatureAPR"]

Lam = Union[float, tuple[float, float], None]


def _check_lam(lam: Lam, mode: str) -> Union[float, tuple[float, float]]:
    if mode not in ("swap", "mix"):
        raise ValueError(f"mode must be 'swap' (partner's amplitude) or 'mix' (amplitude interpolation), got {mode!r}")
    if lam is None:
        return 1.0 if mode == "swap" else (0.0, 1.0)
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
    ``(low, high)`` range (default ``(0, 1)``). Returns the shape and dtype of ``x``; differentiable.
    """
    p = check_probability(p, "p")
    lam_v = _check_lam(lam, mode)
    check_dims(dims)
    g, prefix, layout = to_grid(x, num_prefix_tokens=num_prefix_tokens, grid=grid, name="features")
    b = g.shape[0]
    gdev = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(b, generator=generator, device=gdev).to(g.device)
    apply = (torch.rand(b, generator=generator, device=gdev) < p).to(g.device)
    partner = g[perm]
    if mode == "swap":
        out = fourier.swap_amplitude(g, partner, dims=dims)
    else:
        if isinstance(lam_v, tuple):
            u = torch.rand(b, generator=generator, device=gdev).to(g.device)
            lam_t: Union[float, torch.Tensor] = lam_v[0] + (lam_v[1] - lam_v[0]) * u
        else:
            lam_t = lam_v
        out = fourier.mix_amplitude(g, partner, lam=lam_t, dims=dims)
    out = torch.where(apply.view(b, 1, 1, 1), out.to(g.dtype), g)
    return from_grid(out, prefix, layout)


class FeatureAPR(nn.Module):
    """Feature-level APR as a module: :func:`feature_apr` in training mode, the identity in eval mode.

    Args:
        p: probability per sample of recombining. dims: ``"hw"`` (per-channel 2-D FFT over the grid,
        default) or ``"chw"``. mode: ``"swap"`` or ``"mix"``. lam: mix weight or ``(low, high)``.
        num_prefix_tokens / grid: token layout (``None`` infers it). generator: for reproducibility.
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
    ) -> None:
        super().__init__()
        self.p = check_probability(p, "p")
        check_dims(dims)
        self.dims = dims
        self.lam = _check_lam(lam, mode)
        self.mode = mode
        self.num_prefix_tokens = num_prefix_tokens
        self.grid = grid
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return feature_apr(
            x, p=self.p, mode=self.mode, lam=self.lam, dims=self.dims,
            num_prefix_tokens=self.num_prefix_tokens, grid=self.grid, generator=self.generator,
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, dims={self.dims!r}, mode={self.mode!r}, lam={self.lam}, num_prefix_tokens={self.num_prefix_tokens}"
