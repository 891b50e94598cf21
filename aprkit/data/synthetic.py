"""Procedural shape x texture images: a dataset where BOTH cues predict the class.

Class ``k`` is a silhouette (``SHAPES[k]``: disc, square, triangle, ...) filled with a class-typical
texture (``TEXTURES[k]``: random-phase noise in a class-specific band of spatial frequency and
orientation), drawn in two random colours at a random position, scale and rotation on a random
background. Because shape and texture are both predictive, rendering the shape of class ``i`` with the
texture of class ``j`` gives a true cue-conflict stimulus (``make_cue_conflict``). The texture's
identity lives only in the Fourier amplitude (its phase is random), the silhouette in the phase, which
makes this the CIFAR-sized testbed for APR.

Everything is generated on the fly from a seed, batched in torch (no files).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from .._hash import derive_seed

__all__ = [
    "GENERATOR_VERSION",
    "SHAPES",
    "TEXTURES",
    "render",
    "make_synthetic",
    "make_cue_conflict",
    "SyntheticShapes",
]

#: the version of the images this module draws for a (split, seed): part of every cache id of them, so a change to
#: the generator is never served another version's cached results (2: the random-phase textures of f3ed6de; 3: rendered
#: in chunks of CHUNK images from seeds of their own, so that image i does not depend on the set's size)
GENERATOR_VERSION = 3
SHAPES = ("disc", "square", "triangle", "star", "cross", "ring", "diamond", "crescent", "hbar", "heart")
TEXTURES = (
    "vertical_stripes",
    "horizontal_stripes",
    "diagonal_stripes",
    "antidiagonal_stripes",
    "coarse_vertical",
    "coarse_horizontal",
    "fine_grain",
    "blobs",
    "fine_diagonal",
    "fine_antidiagonal",
)
_NUM = len(SHAPES)

# Texture k is random-phase noise whose power spectrum is a class-typical band: (centre frequency in
# cycles/pixel, orientation of the frequency vector in degrees, or None for isotropic). Texture identity
# therefore lives in the Fourier amplitude only (its phase is random in every image), while the
# silhouette lives in the phase: the cue split APR is about. Colours are random per image (no class cue).
_BANDS = (
    (0.25, 0.0),
    (0.25, 90.0),
    (0.25, 45.0),
    (0.25, 135.0),
    (0.11, 0.0),
    (0.11, 90.0),
    (0.40, None),
    (0.09, None),
    (0.40, 45.0),
    (0.40, 135.0),
)


def _shape_mask(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Soft masks ``(B, H, W)`` in [0, 1] of silhouette ``kind[b]`` in object coordinates ``u, v``."""
    r = torch.sqrt(u * u + v * v)
    th = torch.atan2(v, u)
    sdf = torch.stack(
        [
            r - 0.8,  # disc
            torch.maximum(u.abs(), v.abs()) - 0.68,  # square
            torch.maximum(v * 1.0 - 0.55, (u.abs() * 1.732 - v) / 2 - 0.45),  # triangle (apex up)
            r - 0.48 - 0.32 * torch.cos(5 * th),  # star
            torch.minimum(  # cross
                torch.maximum(u.abs() - 0.26, v.abs() - 0.85), torch.maximum(v.abs() - 0.26, u.abs() - 0.85)
            ),
            (r - 0.62).abs() - 0.2,  # ring
            u.abs() + v.abs() - 0.9,  # diamond
            torch.maximum(r - 0.82, 0.62 - torch.sqrt((u - 0.42) ** 2 + v * v)),  # crescent
            torch.maximum(u.abs() - 0.88, v.abs() - 0.24),  # horizontal bar
            _heart(u, v),  # heart
        ],
        dim=1,
    )
    d = sdf.gather(1, kind.view(-1, 1, 1, 1).expand(-1, 1, *u.shape[1:])).squeeze(1)
    return torch.sigmoid(-d * 18.0)


def _heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance of a heart (two lobes above a downward triangle; v grows downwards)."""
    left = torch.sqrt((u + 0.36) ** 2 + (v + 0.25) ** 2) - 0.42
    right = torch.sqrt((u - 0.36) ** 2 + (v + 0.25) ** 2) - 0.42
    tip = torch.maximum(u.abs() - (0.8 - v) * 0.72, -0.3 - v)
    return torch.minimum(torch.minimum(left, right), tip)


def _band_filters(size: int) -> torch.Tensor:
    """Amplitude filters ``(10, size, size//2+1)`` of the texture classes on the rfft2 grid."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    radius = torch.sqrt(fy**2 + fx**2)
    angle = torch.atan2(fy, fx)
    filters = []
    for centre, orient in _BANDS:
        band = torch.exp(-0.5 * ((radius - centre) / 0.035) ** 2)
        if orient is not None:  # cos^16 of the angle to the class orientation: symmetric under f -> -f
            band = band * torch.cos(angle - math.radians(orient)) ** 16
        filters.append(band)
    return torch.stack(filters)


def _texture(kind: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Texture intensity ``(B, size, size)`` in [0, 1]: random-phase noise in class ``kind[b]``'s band."""
    b = kind.shape[0]
    spec = torch.randn(b, size, size // 2 + 1, 2, generator=g)
    z = torch.complex(spec[..., 0], spec[..., 1]) * _band_filters(size)[kind]
    t = torch.fft.irfft2(z, s=(size, size))
    t = (t - t.mean(dim=(-2, -1), keepdim=True)) / t.std(dim=(-2, -1), keepdim=True).clamp_min(1e-8)
    return 0.5 + 0.5 * torch.tanh(1.5 * t)


def render(
    shape_ids: torch.Tensor,
    texture_ids: torch.Tensor,
    *,
    size: int = 32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Render images ``(B, 3, size, size)`` uint8: silhouette ``shape_ids[b]`` filled with ``texture_ids[b]``.

    Random position, scale, rotation, texture phase/colour jitter and background come from ``generator``.
    """
    shape_ids = torch.as_tensor(shape_ids, dtype=torch.long).flatten()
    texture_ids = torch.as_tensor(texture_ids, dtype=torch.long).flatten()
    if shape_ids.shape != texture_ids.shape:
        raise ValueError(f"shape_ids and texture_ids must have the same length, "
                         f"got {shape_ids.numel()} and {texture_ids.numel()}")
    if shape_ids.numel() == 0:
        raise ValueError("shape_ids is empty; expected at least one image")
    for name, ids in (("shape_ids", shape_ids), ("texture_ids", texture_ids)):
        if bool((ids < 0).any()) or bool((ids >= _NUM).any()):
            raise ValueError(f"{name} must lie in [0, {_NUM - 1}], got values {sorted(set(ids.tolist()))}")
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    b = shape_ids.numel()
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # [-1, 1]
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    xx, yy = xx.expand(b, size, size), yy.expand(b, size, size)
    # object pose: scale (radius as a fraction of the image), rotation, centre
    scale = 0.55 + 0.3 * torch.rand(b, 1, 1, generator=g)
    rot = torch.rand(b, 1, 1, generator=g) * 2 * math.pi
    centre = (torch.rand(b, 2, 1, 1, generator=g) - 0.5) * 2 * (0.95 - scale.unsqueeze(1))
    dx, dy = (xx - centre[:, 0]) / scale, (yy - centre[:, 1]) / scale
    u = dx * torch.cos(rot) + dy * torch.sin(rot)
    v = -dx * torch.sin(rot) + dy * torch.cos(rot)
    mask = _shape_mask(shape_ids, u, v).unsqueeze(1)  # (B,1,H,W)
    tex = _texture(texture_ids, size, g).unsqueeze(1)  # (B,1,H,W)
    cols = torch.rand(b, 2, 3, generator=g)  # two random colours per image: colour carries no class
    fg = cols[:, 0, :, None, None] * tex + cols[:, 1, :, None, None] * (1 - tex)
    bg_col = 0.25 + 0.5 * torch.rand(b, 3, 1, 1, generator=g)
    bg_grad = 0.15 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * (xx + yy).unsqueeze(1)
    bg = (bg_col + bg_grad + 0.04 * torch.randn(b, 3, size, size, generator=g)).clamp(0, 1)
    img = fg * mask + bg * (1 - mask)
    return (img * 255).round().clamp(0, 255).to(torch.uint8)


#: images per rendering chunk: chunk ``c`` of a set draws from a generator of its own, seeded by ``(seed, c)``, so
#: image ``i`` is the same in a set of any size (a set of 8 and one of 8,000 share their first 8 images); the last
#: chunk is rendered whole (0.03 s for 256 images at 32 px, 5 s at 224 px: a set of one 224-px image costs that)
CHUNK = 256


def _chunks(n: int, seed: int, stream: str) -> list[torch.Generator]:
    """The generators of the ``ceil(n / CHUNK)`` chunks of a set of ``n`` images of ``seed`` (``stream``: which kind
    of set, so a cue-conflict set and a plain one of the same seed draw apart)."""
    count = -(-n // CHUNK)
    return [torch.Generator().manual_seed(derive_seed("synthetic", stream, int(seed), c)) for c in range(count)]


def _check_classes(num_classes: int) -> None:
    if not 2 <= num_classes <= _NUM:
        raise ValueError(f"num_classes must lie in [2, {_NUM}], got {num_classes}")


def make_synthetic(
    n: int, *, seed: int = 0, size: int = 32, num_classes: int = _NUM
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images where shape and texture agree: ``(images uint8 (n,3,size,size), labels (n,))``. Image ``i`` and
    its label are the same for every ``n`` (rendered in chunks of :data:`CHUNK` images, each from its own seed)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _check_classes(num_classes)
    images, labels = [], []
    for g in _chunks(n, seed, "shape-texture"):
        y = torch.randint(0, num_classes, (CHUNK,), generator=g)
        images.append(render(y, y, size=size, generator=g))
        labels.append(y)
    return torch.cat(images)[:n], torch.cat(labels)[:n]


def make_cue_conflict(
    n: int, *, seed: int = 0, size: int = 32, num_classes: int = _NUM
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` cue-conflict stimuli: the shape of class ``i`` with the texture of class ``j != i``.

    Returns ``(images uint8 (n,3,size,size), shape_labels (n,), texture_labels (n,))``; stimulus ``i`` is the same for
    every ``n`` (as in :func:`make_synthetic`).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _check_classes(num_classes)
    images, shapes, textures = [], [], []
    for g in _chunks(n, seed, "cue-conflict"):
        s = torch.randint(0, num_classes, (CHUNK,), generator=g)
        t = (s + torch.randint(1, num_classes, (CHUNK,), generator=g)) % num_classes
        images.append(render(s, t, size=size, generator=g))
        shapes.append(s)
        textures.append(t)
    return torch.cat(images)[:n], torch.cat(shapes)[:n], torch.cat(textures)[:n]


class SyntheticShapes(Dataset):
    """A map-style dataset of ``n`` shape x texture images, yielding ``(uint8 (3,size,size), label)``.

    ``split`` selects an independent stream (``"train"``/``"test"``) of the same seed; item ``i`` is the same for
    every ``n``. Images are rendered in chunks on first access and kept in memory (32x32x3 bytes each).
    """

    classes: tuple[str, ...] = SHAPES

    def __init__(self, n: int = 10000, *, split: str = "train", seed: int = 0, size: int = 32, num_classes: int = _NUM):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if isinstance(n, bool) or not hasattr(n, "__index__") or operator.index(n) < 1:  # ints, NumPy ints
            raise ValueError(f"the number of synthetic images must be a positive int (synthetic:N), got {n!r}")
        _check_classes(num_classes)
        self.n, self.split, self.seed, self.size, self.num_classes = operator.index(n), split, seed, size, num_classes
        self.classes = SHAPES[:num_classes]  # the model is checked against this many outputs
        self._data: tuple[torch.Tensor, torch.Tensor] | None = None
        #: names the images for the evaluation's cache (they follow from these settings and the generator's version)
        self.cache_id = (f"synthetic@v{GENERATOR_VERSION}:n={self.n},split={split},seed={seed},size={size},"
                         f"classes={num_classes}")

    def _materialise(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._data is None:
            stream = (self.seed * 2 + (0 if self.split == "train" else 1) + 7919) % (1 << 64)  # torch's seed range
            self._data = make_synthetic(self.n, seed=stream, size=self.size, num_classes=self.num_classes)
        return self._data

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images ``(n,3,size,size)`` uint8 and labels ``(n,)`` (for batch pipelines)."""
        return self._materialise()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, int]:
        if not -self.n <= idx < self.n:
            raise IndexError(f"index {idx} out of range for {self.n} images")
        x, y = self._materialise()
        return x[idx].clone(), int(y[idx])  # a copy: a caller's in-place transform must not change the set


def class_names(num_classes: int = _NUM) -> Sequence[str]:
    """Human-readable class names ``"<shape>/<texture>"``."""
    return [f"{SHAPES[k]}/{TEXTURES[k]}" for k in range(num_classes)]
