"""The two codes of a hidden activation, as stateless batched ops on grids ``(B, C, h, w)``.

- ``code="phase"``: the Fourier phase (carrier) and amplitude (magnitude) of a per-channel 2-D FFT
  over the spatial grid (``dims="hw"``, default) or a 3-D FFT over ``(C, h, w)`` (``dims="chw"``).
- ``code="sign"``: the elementwise sign (carrier) and absolute value (magnitude). The sign of ``0``
  is ``+1``, so a non-negative (post-ReLU) activation has a constant sign and transplanting it is a
  no-op: ``transplant(a, b, "sign") == b`` whenever ``a >= 0`` and ``b >= 0``.

All Fourier work goes through :mod:`aprkit.fourier`.
"""

from __future__ import annotations

from typing import Literal

import torch

from .. import fourier

__all__ = ["Code", "check_code", "signum", "transplant", "magnitude", "with_magnitude", "dc_only"]

Code = Literal["phase", "sign"]


def check_code(code: str) -> str:
    """Validate ``code`` (``"phase"`` or ``"sign"``)."""
    if code not in ("phase", "sign"):
        raise ValueError(f"code must be 'phase' (Fourier phase vs amplitude) or 'sign' (sign vs |x|), got {code!r}")
    return code


def signum(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0``, ``-1`` elsewhere (same shape and dtype)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def transplant(donor: torch.Tensor, receiver: torch.Tensor, code: Code, dims: fourier.Dims = "hw") -> torch.Tensor:
    """The donor's carrier (phase or sign) with the receiver's magnitude; both ``(B, C, h, w)``."""
    check_code(code)
    if code == "phase":
        return fourier.swap_amplitude(donor, receiver, dims=dims)
    return signum(donor) * receiver.abs()


def magnitude(x: torch.Tensor, code: Code, dims: fourier.Dims = "hw") -> torch.Tensor:
    """The magnitude of ``x`` ``(B, C, h, w)`` under ``code``: full FFT amplitude or ``|x|``, same shape."""
    check_code(code)
    if code == "phase":
        return fourier.amplitude_phase(x, dims=dims)[0]
    return x.abs()


def with_magnitude(x: torch.Tensor, mag: torch.Tensor, code: Code, dims: fourier.Dims = "hw") -> torch.Tensor:
    """``x``'s carrier with the magnitude ``mag`` (broadcastable to ``x``, e.g. a dataset mean ``(C, h, w)``)."""
    check_code(code)
    if code == "phase":
        return fourier.phase_only(x, magnitude=mag, dims=dims)
    return signum(x) * mag.to(x.dtype)


def dc_only(x: torch.Tensor) -> torch.Tensor:
    """Keep only the DC component of each channel: its spatial mean, broadcast over ``(h, w)``."""
    return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).contiguous()
