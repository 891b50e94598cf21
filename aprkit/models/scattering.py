"""Learned scattering network with phase collapses (Guth, Zarka & Mallat, ICLR 2022).

Each layer applies, in order:

1. ``W``: a fixed complex wavelet filter bank per channel (one low-pass ``phi`` + ``L`` oriented
   Morlet wavelets ``psi``; half-octave factorisation, subsampling by 2 every other layer);
2. the non-linearity ``rho``: the complex **modulus** ``|z|`` (phase collapse) or the complex
   **soft-threshold** ``relu(1 - lambda / |z|) z`` (keeps the phase; one learned threshold per channel,
   initialised at 0.1, unconstrained as in the reference: a negative one enlarges the modulus), the paper's
   ablation. ``skip`` says what reaches ``Std`` and ``P``:

   - ``"linear"`` (default; the paper's "LScat + skip", its headline network: 7.7 % CIFAR-10 error with the
     modulus, 22.5 % with the soft-threshold): the linear coefficients ``Wx`` (low-pass and wavelets) beside
     ``rho(Wx)``, ``2 C (L + 1)`` channels (the reference's ``Fw rho Std Pc N``);
   - ``"lowpass"`` (the paper's "LScat" without skip connection, 11.7 % with the modulus): the low-pass
     channels linear, ``rho`` on the wavelet channels, ``C (L + 1)`` channels (``Fw Std Pc N --psi-arch mod``);
   - ``"none"`` (an aprkit ablation with no counterpart in the paper): ``rho`` on every channel.

   The booleans of checkpoints written before ``"linear"`` existed read as their old meaning: ``True`` is
   ``"lowpass"``, ``False`` is ``"none"`` (with a ``FutureWarning``);
3. ``Std``: standardisation per channel (batch statistics in training, running ones in eval;
   complex mean, no learned affine);
4. ``P``: a learned complex 1x1 projection (no bias) to the layer's width;
5. ``N``: division by the channel norm at each position.

The classifier splits complex channels into real/imag parts, applies BatchNorm and a linear layer
on the flattened map. There are no biases and no learned spatial filters before the classifier.
Everything runs in float32 (float64 in a ``.double()`` model, whose fixed filters are still the float32-rounded ones:
it matches a float64 convolution to about 3e-8) with complex arithmetic (autocast is disabled inside; ``.half()`` /
``.bfloat16()`` models are refused: torch lacks complex half arithmetic). ``Std`` and ``N`` amplify what varies
least: a training batch of identical blank images (zero variance, rounding noise normalised) has NaN or overflowing
gradients, as in the reference, which zeroes NaN ones with a hook.

Differences from the reference code: Gaussian projection weights (variance ``1 / (2 n_in)``) where it draws unitary
ones; no hook zeroing NaN/inf gradients; periodic (circular) filtering instead of reflection padding
and cropping, so on CIFAR the layers see 32, 32, 16, 16, 8, 8, 4, 4 px maps and the classifier a
2x2 map; no Parseval/quadrature regularisers; CIFAR-size images (``img_size <= 64``) normalised with the CIFAR-10
mean/std, where the reference uses ImageNet's for every dataset (no effect with ``skip="lowpass"``, whose channels
are each affine in one colour channel before ``Std``; with ``"linear"`` and ``"none"`` it changes the modulus of the
first layer's low-pass). On ImageNet an odd map subsamples as ``[::2]`` (7 -> 4 px,
the last and first samples adjacent across the periodic wrap), so the classifier reads 256 x 4 x 4 features
where the reference, padding and cropping, reads 3 x 3.

Configurations: ``phase_collapse_cifar`` (8 layers, widths 64-128-256-512x5, L=4, 32 px) and
``phase_collapse_imagenet`` (11 layers, widths 32-64-64-128-256-512x5-256, L=8, 224 px, the first
layer a full octave), as in the paper's Table 1. Normalisation default: CIFAR-10 / ImageNet mean/std.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from .morlet import morlet_filter_bank
from .registry import register_model

__all__ = [
    "PhaseCollapseNet",
    "complex_modulus",
    "complex_soft_threshold",
    "wavelet_transform",
    "phase_collapse_cifar",
    "phase_collapse_imagenet",
]

NonLinearity = Literal["modulus", "soft_threshold"]
Skip = Literal["linear", "lowpass", "none"]
SKIPS: tuple[str, ...] = ("linear", "lowpass", "none")


#: what an older config's boolean ``skip`` built, in today's names
_BOOL_SKIP = {True: "lowpass", False: "none"}


def check_skip(skip: Any) -> str:
    """``skip`` as one of :data:`SKIPS`; the booleans of older checkpoints as their meaning then (see the module
    docstring), with a ``FutureWarning``."""
    if isinstance(skip, bool):
        import warnings

        old = _BOOL_SKIP[skip]
        meant = ("the low-pass channels linear, rho on the wavelet ones (the paper without skip connection)" if skip
                 else "rho on every channel")
        warnings.warn(f"PhaseCollapseNet(skip={skip}) is read as skip={old!r}, what it meant before skip took "
                      f"{', '.join(map(repr, SKIPS))}: {meant}. The paper's skip connection is skip='linear'",
                      FutureWarning, stacklevel=3)
        return old
    if skip not in SKIPS:
        raise ValueError(f"skip must be one of {', '.join(map(repr, SKIPS))}, got {skip!r}")
    return str(skip)
_EPS = 1e-12


def complex_modulus(z: torch.Tensor) -> torch.Tensor:
    """``|z|`` with a finite gradient at 0 (real input: ``|x|``)."""
    if not z.is_complex():
        return z.abs()
    return (z.real.square() + z.imag.square()).clamp_min(_EPS).sqrt()


def complex_soft_threshold(z: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``relu(1 - threshold / |z|) * z``: shrinks the modulus by a ``threshold >= 0`` (enlarges it by ``|threshold|``
    where the learned one went negative), keeps the phase."""
    return F.relu(1 - threshold / (complex_modulus(z) + 1e-6)) * z


def wavelet_transform(x: torch.Tensor, phi: torch.Tensor, psi: torch.Tensor, subsample: bool
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Circular filtering of ``x`` ``(B, C, H, W)`` (real or complex) by Fourier filters.

    ``phi`` ``(H, W)`` and ``psi`` ``(L, H, W)`` are real Fourier-domain filters. Returns the low-pass
    ``(B, C, H', W')`` (real for real input) and the wavelet coefficients ``(B, C * L, H', W')``
    complex, channel-major (``c * L + l``); ``H' = ceil(H / 2)`` when subsampling.
    """
    b, c, h, w = x.shape
    spec = torch.fft.fft2(x)
    low = torch.fft.ifft2(spec * phi)
    high = torch.fft.ifft2(spec.unsqueeze(2) * psi).reshape(b, c * psi.shape[0], h, w)
    if subsample:
        low, high = low[..., ::2, ::2], high[..., ::2, ::2]
    return (low if x.is_complex() else low.real), high


def _as_complex(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a complex tensor of its precision: complex128 for float64 (complex64 dropped a float64 model's
    bits), complex64 otherwise."""
    if x.is_complex():
        return x
    return x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)


class ComplexStandardize(nn.Module):
    """Per-channel standardisation of real or complex ``(B, C, H, W)``; no learned parameters."""

    running_mean: torch.Tensor  # buffers
    running_var: torch.Tensor

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(channels, 2))  # (real, imag)
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean(dim=(0, 2, 3))
            diff = x - mean[:, None, None]
            var = (diff.real.square() + diff.imag.square() if x.is_complex() else diff.square()).mean(dim=(0, 2, 3))
            n = x.numel() // x.shape[1]
            with torch.no_grad():
                m = torch.view_as_real(mean) if mean.is_complex() else torch.stack([mean, torch.zeros_like(mean)], -1)
                self.running_mean.lerp_(m.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), self.momentum)
        else:
            rm = self.running_mean
            mean = torch.complex(rm[:, 0], rm[:, 1]) if x.is_complex() else rm[:, 0]
            diff, var = x - mean[:, None, None], self.running_var
        return diff * torch.rsqrt(var + self.eps)[:, None, None]


class PhaseCollapseLayer(nn.Module):
    """One layer ``N P Std rho W`` (see the module docstring)."""

    phi: torch.Tensor  # buffers
    psi: torch.Tensor

    def __init__(self, in_channels: int, out_channels: int, size: int, L: int, half: int, subsample: bool,
                 nonlinearity: NonLinearity, skip: Skip | bool) -> None:
        super().__init__()
        skip = check_skip(skip)  # type: ignore[assignment]
        self.subsample, self.skip, self.nonlinearity, self.L = subsample, skip, nonlinearity, L
        phi, psi = morlet_filter_bank(size, size, L, half)
        self.register_buffer("phi", phi, persistent=False)
        self.register_buffer("psi", psi, persistent=False)
        n_in = in_channels * (L + 1) * (2 if skip == "linear" else 1)
        if nonlinearity == "soft_threshold":  # one threshold per channel rho sees
            n_thr = in_channels * L + (0 if skip == "lowpass" else in_channels)
            self.threshold = nn.Parameter(torch.full((n_thr, 1, 1), 0.1))
        self.std = ComplexStandardize(n_in)
        scale = 1.0 / math.sqrt(2 * n_in)
        self.proj = nn.Parameter(torch.randn(out_channels, n_in, 2) * scale)  # complex (out, in) as (re, im)

    def rho(self, z: torch.Tensor, offset: int) -> torch.Tensor:
        if self.nonlinearity == "modulus":
            return complex_modulus(z)
        thr = self.threshold[offset: offset + z.shape[1]]
        return complex_soft_threshold(_as_complex(z), thr)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = wavelet_transform(x, self.phi, self.psi, self.subsample)
        if self.skip == "lowpass":
            parts = [low, self.rho(high, 0)]
        elif self.skip == "none":
            parts = [self.rho(low, 0), self.rho(high, low.shape[1])]
        else:  # "linear": Wx beside rho(Wx)
            parts = [low, high, self.rho(low, 0), self.rho(high, low.shape[1])]
        if any(p.is_complex() for p in parts):
            parts = [_as_complex(p) for p in parts]
        z = self.std(torch.cat(parts, dim=1))
        weight = torch.view_as_complex(self.proj)
        z = torch.einsum("oc,bchw->bohw", weight, z.to(weight.dtype))
        return z / complex_modulus(z).square().sum(dim=1, keepdim=True).clamp_min(_EPS).sqrt()


class PhaseCollapseNet(ImageClassifier):
    """Learned scattering network for square ``(B, C, size, size)`` images in [0, 1]."""

    def __init__(
        self,
        num_classes: int = 10,
        *,
        widths: Sequence[int] = (64, 128, 256, 512, 512, 512, 512, 512),
        L: int = 4,
        img_size: int = 32,
        nonlinearity: NonLinearity = "modulus",
        skip: Skip | bool = "linear",
        first_full_octave: bool = False,
        in_chans: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        default = (CIFAR10_MEAN, CIFAR10_STD) if img_size <= 64 else (IMAGENET_MEAN, IMAGENET_STD)
        super().__init__(mean, std, default_mean=default[0], default_std=default[1], in_channels=in_chans)
        if nonlinearity not in ("modulus", "soft_threshold"):
            raise ValueError(
                f"nonlinearity must be 'modulus' (phase collapse) or 'soft_threshold', got {nonlinearity!r}"
            )
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
        skip = check_skip(skip)  # type: ignore[assignment]
        if int(L) < 3 and len(widths) > (1 if first_full_octave else 0) + 1:
            raise ValueError(f"L must be >= 3 orientations, got {L}: every other layer uses the half-octave psi_3/2 "
                             "wavelets, which need three (L of 1 or 2 builds only a network without such a layer: one "
                             "layer, or two with first_full_octave)")
        self.nonlinearity, self.skip = nonlinearity, skip
        self.aprkit_pinned_kwargs = {"skip": skip}  # checkpoints record it: its default changed once (see tag_model)
        layers, c, size = [], in_chans, img_size
        for i, width in enumerate(widths):
            if first_full_octave and i == 0:
                half, sub = -1, True
            else:
                half = (i - int(first_full_octave)) % 2
                sub = half == 1
            if size < 4:
                raise ValueError(f"img_size {img_size} is too small for {len(widths)} layers (map shrinks below 4 px)")
            layers.append(PhaseCollapseLayer(c, int(width), size, L, half, sub, nonlinearity, skip))
            c, size = int(width), (size + 1) // 2 if sub else size
        self.layers = nn.Sequential(*layers)
        self.out_shape = (c, size, size)
        self.bn = nn.BatchNorm2d(2 * c)
        self.num_classes, self.input_size = num_classes, (in_chans, img_size, img_size)
        self.num_features = 2 * c * size * size
        self.classifier = nn.Linear(self.num_features, num_classes)

    casts_input = True  # it computes in its classifier's dtype, under autocast too

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != self.input_size[1:]:
            raise ValueError(f"PhaseCollapseNet was built for {self.input_size[1:]} images, got shape {tuple(x.shape)}")
        work = self.classifier.weight.dtype
        if work not in (torch.float32, torch.float64):  # torch has no complex half arithmetic on every device
            raise TypeError(f"PhaseCollapseNet computes in float32 (or float64); its parameters are {work}. Keep the "
                            "model in float32 and run it under torch.autocast for mixed precision (autocast is "
                            "disabled inside, the classifier runs in the autocast dtype)")
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = _as_complex(self.layers(x.to(work)))
            z = torch.view_as_real(z).permute(0, 1, 4, 2, 3).flatten(1, 2)  # (B, 2C, h, w): re, im per channel
            return self.bn(z).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


def _checkpoint_kwargs(default_L: int) -> Any:
    """The builder's checkpoint hook (:func:`aprkit.models.registry.checkpoint_kwargs`): a checkpoint saved without
    ``skip`` was built with the default of its time, ``"lowpass"`` (what ``skip=True`` built; ``"linear"`` became the
    default later), recognised by its first projection taking ``in_chans (L + 1)`` channels, not twice that. A plain
    state_dict (``recorded`` False: no saved arguments) of that width may as well be of ``skip="none"`` with the
    modulus (the same weights): refused unless ``skip`` is given (it loaded as ``"lowpass"``, another network)."""
    def hook(kwargs: dict[str, Any], state_dict: Any, recorded: bool) -> dict[str, Any]:
        if "skip" in kwargs or not isinstance(state_dict, Mapping):
            return kwargs
        proj = next((v for k, v in state_dict.items() if str(k).endswith("layers.0.proj")), None)
        n_in = int(kwargs.get("in_chans", 3)) * (int(kwargs.get("L", default_L)) + 1)
        if proj is None or getattr(proj, "ndim", 0) != 3 or proj.shape[1] != n_in:
            return kwargs
        if not recorded:
            raise ValueError("these phase-collapse weights (a plain state_dict: no saved arguments) fit "
                             "skip='lowpass' and skip='none' alike, two networks; pass the one they were trained with "
                             "(load_model(..., skip='lowpass'), or model_kwargs.skip=lowpass)")
        return {**kwargs, "skip": "lowpass"}

    return hook


def _canonical_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The builders' ``canonical_kwargs`` hook: an older config's boolean ``skip`` as the string that builds the same
    network (``True``: ``"lowpass"``, ``False``: ``"none"``)."""
    skip = kwargs.get("skip")
    return {**kwargs, "skip": _BOOL_SKIP[skip]} if isinstance(skip, bool) else kwargs


@register_model("phase_collapse_cifar")
def phase_collapse_cifar(num_classes: int = 10, **kwargs: Any) -> PhaseCollapseNet:
    """Learned scattering for CIFAR (8 layers, L=4); ``nonlinearity``/``skip`` switch the ablations."""
    return PhaseCollapseNet(num_classes, **kwargs)


phase_collapse_cifar.checkpoint_kwargs = _checkpoint_kwargs(4)  # type: ignore[attr-defined]
phase_collapse_cifar.canonical_kwargs = _canonical_kwargs  # type: ignore[attr-defined]


@register_model("phase_collapse_imagenet")
def phase_collapse_imagenet(num_classes: int = 1000, **kwargs: Any) -> PhaseCollapseNet:
    """Learned scattering for 224 px ImageNet (11 layers, L=8, first layer a full octave)."""
    cfg: dict[str, Any] = dict(widths=(32, 64, 64, 128, 256, 512, 512, 512, 512, 512, 256), L=8, img_size=224,
                               first_full_octave=True)
    return PhaseCollapseNet(num_classes, **{**cfg, **kwargs})


phase_collapse_imagenet.checkpoint_kwargs = _checkpoint_kwargs(8)  # type: ignore[attr-defined]
phase_collapse_imagenet.canonical_kwargs = _canonical_kwargs  # type: ignore[attr-defined]
