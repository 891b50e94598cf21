"""GFNet: global filter networks (Rao et al., NeurIPS 2021), at CIFAR and ImageNet sizes.

The image is cut into ``p x p`` patches (a strided convolution) giving an ``h x w`` token grid with
learned position embeddings. Each block mixes tokens globally in the Fourier domain::

    x <- x + MLP(LN(GlobalFilter(LN(x))))            GlobalFilter(z) = irfft2(K * rfft2(z))

where ``K`` is a learned complex filter of shape ``(h, w // 2 + 1, D)`` (one per channel, ``ortho``
FFT normalisation, computed in float32 even under AMP). A final LayerNorm, mean over tokens and a
linear head give the logits. Parameter names follow the reference implementation (``patch_embed.proj``,
``pos_embed``, ``blocks.i.filter.complex_weight``, ``norm``, ``head``), so its ImageNet checkpoints
load with ``load_model("gfnet_xs", checkpoint=path)``.

Configurations: ImageNet 224 px with 16 px patches (14 x 14 tokens): ``gfnet_ti`` (D=256, 12 blocks),
``gfnet_xs`` (D=384, 12), ``gfnet_s`` (D=384, 19), ``gfnet_b`` (D=512, 19), as published (with the official
code's stochastic depth: 0.15 for S, 0.25 for B, none for Ti and XS).
``gfnet_cifar`` (our choice; the paper trains CIFAR only by transfer): 32 px, 4 px patches (8 x 8
tokens), D=256, 12 blocks. Normalisation default: ImageNet mean/std (the DeiT/GFNet recipe).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from .registry import register_model

__all__ = ["GFNet", "GlobalFilter", "global_filter", "gfnet_cifar", "gfnet_ti", "gfnet_xs", "gfnet_s", "gfnet_b"]


def global_filter(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Filter a token grid ``x`` ``(B, h, w, D)`` by the complex ``weight`` ``(h, w // 2 + 1, D)``.

    ``irfft2(weight * rfft2(x))`` over the grid axes with orthonormal FFTs, i.e. a circular
    convolution with a learned, image-sized, per-channel kernel. Runs in float32 (float64 stays)
    and returns ``x``'s dtype.
    """
    h, w = x.shape[1], x.shape[2]
    if weight.shape[:2] != (h, w // 2 + 1) or weight.shape[2] != x.shape[3]:
        raise ValueError(
            f"global filter of shape {tuple(weight.shape)} does not fit a token grid {tuple(x.shape[1:])}; "
            f"expected ({h}, {w // 2 + 1}, {x.shape[3]})"
        )
    dtype = x.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    z = torch.fft.rfft2(x.to(work), dim=(1, 2), norm="ortho")
    z = z * weight.to(z.dtype)
    return torch.fft.irfft2(z, s=(h, w), dim=(1, 2), norm="ortho").to(dtype)


class GlobalFilter(nn.Module):
    """Learned complex global filter on an ``h x w`` token grid with ``dim`` channels."""

    def __init__(self, dim: int, h: int, w: int) -> None:
        super().__init__()
        self.h, self.w = h, w
        self.complex_weight = nn.Parameter(torch.randn(h, w // 2 + 1, dim, 2) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, h*w, D)`` -> filtered tokens ``(B, h*w, D)``."""
        b, n, d = x.shape
        if n != self.h * self.w:
            raise ValueError(f"GlobalFilter expects {self.h}x{self.w}={self.h * self.w} tokens, got {n}")
        # contiguous(): the 4-D weight is channels_last-strided after ``model.to(memory_format=torch.channels_last)``
        # and view_as_complex needs the (re, im) pairs adjacent (a no-op otherwise)
        # float32 at least (half has no complex FFT here), float64 in a float64 model (float() dropped its bits)
        w = self.complex_weight
        weight = torch.view_as_complex(w.to(torch.promote_types(w.dtype, torch.float32)).contiguous())
        y = global_filter(x.reshape(b, self.h, self.w, d), weight)
        return y.reshape(b, n, d)


class Mlp(nn.Module):
    """Linear - GELU - dropout - Linear - dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``p`` (rescaled)."""
    if p <= 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class Block(nn.Module):
    """``x + drop_path(MLP(LN(GlobalFilter(LN(x)))))``."""

    def __init__(self, dim: int, h: int, w: int, mlp_ratio: float, drop: float, drop_path_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.filter = GlobalFilter(dim, h, w)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + drop_path(self.mlp(self.norm2(self.filter(self.norm1(x)))), self.drop_path_rate, self.training)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` patches -> tokens ``(B, (H/p)(W/p), D)``."""

    def __init__(self, img_size: int, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.img_size, self.patch = img_size, patch
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"GFNet was built for {self.img_size}x{self.img_size} images, got shape {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)


class GFNet(ImageClassifier):
    """Isotropic GFNet for square ``(B, 3, img_size, img_size)`` images in [0, 1]."""

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 12,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        rgb = in_chans == 3
        super().__init__(mean, std, default_mean=IMAGENET_MEAN if rgb else (0.5,) * in_chans,
                         default_std=IMAGENET_STD if rgb else (0.5,) * in_chans, in_channels=in_chans)
        if patch_size < 1 or img_size % patch_size != 0:
            raise ValueError(f"img_size must be a multiple of patch_size, got {img_size} and {patch_size}")
        if depth < 1 or embed_dim < 1:
            raise ValueError(f"depth and embed_dim must be positive, got {depth} and {embed_dim}")
        g = img_size // patch_size
        self.num_classes, self.input_size, self.num_features = num_classes, (in_chans, img_size, img_size), embed_dim
        self.grid = (g, g)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, g * g, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([Block(embed_dim, g, g, mlp_ratio, drop_rate, r) for r in rates])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameter names usually excluded from weight decay, for optimizers that read it (timm's
        ``create_optimizer_v2``, as the reference's AdamW recipe, which also spares 1-D parameters). ``aprkit train``'s
        SGD decays every parameter, this one included, as its CIFAR recipes do."""
        return {"pos_embed"}

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pos_drop(self.patch_embed(x) + self.pos_embed)
        for blk in self.blocks:
            z = blk(z)
        return self.norm(z).mean(dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


def _variant(name: str, doc: str, classes: int = 1000, **cfg: Any):
    def build(num_classes: int | None = None, **kwargs: Any) -> GFNet:
        return GFNet(num_classes if num_classes is not None else classes, **{**cfg, **kwargs})

    build.__name__, build.__doc__ = name, doc
    return register_model(name)(build)


gfnet_cifar = _variant("gfnet_cifar", "GFNet for 32 px CIFAR: 4 px patches (8x8 tokens), D=256, 12 blocks.",
                       classes=10, img_size=32, patch_size=4, embed_dim=256, depth=12)
gfnet_ti = _variant("gfnet_ti", "GFNet-Ti (224 px, 16 px patches, D=256, 12 blocks, ~7M params).",
                    embed_dim=256, depth=12)
gfnet_xs = _variant("gfnet_xs", "GFNet-XS (224 px, 16 px patches, D=384, 12 blocks, ~16M params).",
                    embed_dim=384, depth=12)
gfnet_s = _variant("gfnet_s", "GFNet-S (224 px, 16 px patches, D=384, 19 blocks, ~25M params, stochastic depth "
                   "0.15).", embed_dim=384, depth=19, drop_path_rate=0.15)
gfnet_b = _variant("gfnet_b", "GFNet-B (224 px, 16 px patches, D=512, 19 blocks, ~43M params, stochastic depth "
                   "0.25).", embed_dim=512, depth=19, drop_path_rate=0.25)
