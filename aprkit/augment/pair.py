"""APR-P and APR-SP: batch-level amplitude-phase recombination applied after the DataLoader.

:class:`APRPair` follows the reference ``mix_data`` (Chen et al., ICCV 2021): with probability ``p``
the batch is recombined, each image keeping its phase and taking the amplitude of a partner
chosen by a random permutation of the batch; labels follow the phase, so they are returned
unchanged. The reference applies it to the [0, 1] batch before normalisation and returns floats
without clamping; ``APRPair`` works on whatever it is given (uint8 results are rounded and clamped,
``clamp=True`` also clamps floats to [0, 1]).

:class:`APRSP` builds the paper's APR-SP training batch: the APR-S-augmented batch and its APR-P
recombination side by side, trained with ``CE(first half) + CE(second half)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

import torch
import torch.nn.functional as F

from .._checks import (
    CheckedProbability,
    batch_size_of,
    check_dims,
    check_finite_spectrum,
    check_image_tensor,
    check_labels,
    check_not_0_255,
    check_param_keys,
    eager_cpu,
)
from .._generators import make_generator, worker_generator
from .._replay import ReplayModule
from .._tensors import to_device
from .._tv import like_input
from ..fourier import Dims
from .functional import CompiledCore, apr_pair, apr_pair_with_dc, needs_finite_check, sample_pair_params

__all__ = ["APRPair", "APRSP"]


class APRPair(CheckedProbability, CompiledCore, ReplayModule):
    """Batch APR-P: ``images, labels = apr_pair(images, labels)`` (or ``images = apr_pair(images)``).

    Args:
        p: probability that the batch (or, with ``per_sample=True``, each image) is recombined.
        dims: ``"chw"`` (3-D FFT over C, H, W, as the reference) or ``"hw"`` (per channel).
        per_sample: select images independently (``torch.where`` masking, no host sync per image).
        clamp: clamp float results to [0, 1] (uint8 results are always rounded and clamped); 0..255 float input is
            then refused (checked on eager CPU calls).
        generator / seed: source of the random draws (``None``: torch's global RNG). Under DistributedDataParallel
            ranks with the same seed (or the same global RNG state, as after ``torch.manual_seed(0)`` everywhere)
            draw the same partners and coin flips for their own local batches; pass ``seed=base + rank`` for
            independent draws (``aprkit train`` seeds every rank and step on its own).
        compile_core: ``True`` or a dict of ``torch.compile`` options (e.g. ``{"mode": "reduce-overhead"}``,
            CUDA graphs): ``forward`` runs the core compiled as one graph (``fullgraph=True``, compiled once
            per module on the first call); validation and sampling stay eager outside it. The same draws
            and the same computation as eager; Inductor's fused kernels may round differently (a few 1e-7 on the
            CPU), the ``eager``/``aot_eager`` backends give identical numbers.
            With CUDA graphs an output lives until the next call (clone it to keep it longer). ``forward`` itself
            cannot be traced whole (``torch.compile(fullgraph=True)`` of a step calling it: its sampling decides
            on the host); ``compile_core`` or :func:`apr_pair` inside the compiled step can. ``torch.func.vmap``
            is not supported (every function takes any leading batch shape instead).

    Kornia-style: :meth:`generate_parameters` returns ``{"perm", "mask"}`` and :meth:`apply` replays
    them deterministically. When the batch is not selected the input tensor itself is returned.
    Validation happens once per call: shapes and dtypes up front; on the CPU, finiteness from the spectrum's
    DC terms (O(B), only for recombined batches). On accelerators ``forward`` never syncs with the host:
    NaN/inf images are not looked for (that read would be a sync per call) and come out NaN, as do the
    images that take their amplitude.
    """

    core_fn = staticmethod(apr_pair_with_dc)

    def __init__(self, p: float = 0.6, dims: Dims = "chw", per_sample: bool = False, clamp: bool = False,
                 generator: torch.Generator | None = None, seed: int | None = None,
                 compile_core: bool | dict[str, Any] = False) -> None:
        super().__init__()
        self.p = p  # checked whenever it is set (CheckedProbability)
        check_dims(dims)
        self.dims = dims
        self.per_sample = bool(per_sample)
        self.clamp = bool(clamp)
        self.generator = make_generator(generator, seed)
        self._base_seed = None if self.generator is None else self.generator.initial_seed()  # see worker_generator
        self._init_compile_core(compile_core)

    def generate_parameters(self, batch_shape: torch.Size | tuple[int, ...], device: torch.device | str | None = None
                            ) -> dict[str, torch.Tensor]:
        """Sample ``{"perm": (B,) int64, "mask": (B,) bool}`` for a batch of shape ``(B, C, H, W)`` (or of size B)."""
        n = batch_size_of(batch_shape)
        generator = worker_generator(self.generator, self._base_seed)
        return sample_pair_params(n, self.p, self.per_sample, generator, device)

    def _check_images(self, x: torch.Tensor) -> None:
        """Shapes and dtype; with ``dims="hw"`` a channels-last ``(B, H, W, C)`` batch is refused (the 2-D transforms
        would run over the wrong axes); with ``clamp`` 0..255 floats and normalised floats are refused or warned of
        on eager CPU calls (:func:`aprkit._checks.check_value_range`; they would come out saturated or cut off).
        Without ``clamp`` a normalised batch is recombined as it is, as the reference's ImageNet code mixes (its CIFAR
        code mixes the [0, 1] images)."""
        check_image_tensor(x, "images", min_ndim=4, max_ndim=4, check_finite=False, allow_empty=True)
        if self.clamp:
            check_not_0_255(x)
        check_dims(self.dims, x)

    def replay(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Deterministic APR-P of ``x`` ``(B, C, H, W)`` with ``params`` from :meth:`generate_parameters`, called as
        ``apply(x, params)`` (Kornia-style; ``apply(fn)`` is ``nn.Module.apply``, see :mod:`aprkit._replay`)."""
        self._check_images(x)  # values: once, in apr_pair
        check_param_keys(params, ("perm", "mask"), "generate_parameters ({'perm': (B,) int64, 'mask': (B,) bool})")
        if x.shape[0] == 0:  # an empty batch comes back as it is, as from the hosts' own transforms
            return x
        mask: torch.Tensor | None = params["mask"]
        if isinstance(mask, torch.Tensor) and mask.device.type == "cpu" and mask.numel():
            # the mask is applied as given (also a mixed one under per_sample=False); on the host, the whole batch
            # selected or none are shortcuts
            if not bool(mask.any()):
                return x
            if bool(mask.all()):
                mask = None  # whole batch selected: skip the masking pass
        return like_input(apr_pair(x, params["perm"], mask, self.dims, self.clamp), x)  # an Image stays one

    @overload
    def forward(self, x: torch.Tensor) -> torch.Tensor: ...
    @overload
    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        self._check_images(x)  # finiteness: once, in the core
        if labels is not None:
            check_labels(labels, x.shape[0])
        if x.shape[0] == 0:  # an empty batch comes back as it is, as from the hosts' own transforms
            return x if labels is None else (x, labels)
        params = self.generate_parameters(x.shape, None)
        drawn = params["mask"]
        mask: torch.Tensor | None
        if not self.per_sample and drawn.device.type == "cpu":
            if not bool(drawn[0]):  # the batch as it came (a tv_tensors.Image stays one, as recombined ones do)
                return x if labels is None else (x, labels)
            mask = None
        else:
            mask = to_device(drawn, x.device)
        perm = to_device(params["perm"], x.device)  # our own draw: no range check needed
        out, dc = self._run_core()(x, perm, mask, check_dims(self.dims), self.clamp, needs_finite_check(x))
        if dc is not None:  # eager CPU only: a free read there
            check_finite_spectrum(dc, x.dtype)
        out = like_input(out, x)  # a tv_tensors.Image in, an Image out (as torchvision's transforms)
        return out if labels is None else (out, labels)

    def extra_repr(self) -> str:
        compiled = f", compile_core={self.compile_core!r}" if self.compile_core else ""
        return f"p={self.p}, dims={self.dims!r}, per_sample={self.per_sample}, clamp={self.clamp}{compiled}"


def _on_host(t: object) -> bool:
    """Whether a full finiteness pass over ``t`` is free of host syncs (a CPU tensor, eager)."""
    return isinstance(t, torch.Tensor) and eager_cpu(t)


class APRSP:
    """The APR-SP training batch: ``x_all, y_all = aprsp(x, y)`` then ``loss = aprsp.loss(model(x_all), y_all)``.

    ``x`` is the batch as the DataLoader delivers it with :class:`~aprkit.augment.APRSingle` in its
    transform (APR-S; first, on the whole image, then the crop padded with grey 128, as the reference).
    ``x_all = cat([first, apr_pair(x)])`` with ``first = clean`` if given, else ``x``; ``y_all = cat([y, y])``.
    :meth:`loss` is the reference's ``CE(logits[:B], y) + CE(logits[B:], y)`` (a sum of two means).
    ``compile_core`` as in :class:`APRPair`. Recipe::

        loader = DataLoader(ImageFolder(root, transform=Compose([APRSingle(), RandomCrop(32, 4, fill=128),
                                                                 RandomHorizontalFlip(), PILToTensor()])), ...)
        aprsp = APRSP(p=0.6)
        for x, y in loader:
            x = x.to(device).float().div(255)       # APR-P on [0, 1] images, as in the reference
            x_all, y_all = aprsp(x, y.to(device))
            loss = aprsp.loss(model(x_all), y_all)
    """

    def __init__(self, p: float = 0.6, dims: Dims = "chw", per_sample: bool = False, clamp: bool = False,
                 generator: torch.Generator | None = None, seed: int | None = None,
                 compile_core: bool | dict[str, Any] = False) -> None:
        self.pair = APRPair(p, dims, per_sample, clamp, generator=generator, seed=seed, compile_core=compile_core)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x_all (2B, C, H, W), y_all (2B, ...))``: first half ``clean`` (or ``x``), second half
        APR-P of ``x``.

        Finiteness is checked on the CPU only (as in :class:`APRPair`: no host sync on accelerators)."""
        check_image_tensor(x, "images", min_ndim=4, max_ndim=4, check_finite=_on_host(x), allow_empty=True)
        check_labels(y, x.shape[0], "y")
        first = x
        if clean is not None:
            check_image_tensor(clean, "clean", min_ndim=4, max_ndim=4, check_finite=_on_host(clean),
                               allow_empty=True)
            if clean.shape != x.shape or clean.dtype != x.dtype or clean.device != x.device:
                raise ValueError(
                    f"clean must match images in shape, dtype and device: "
                    f"{tuple(clean.shape)} {clean.dtype} {clean.device} vs {tuple(x.shape)} {x.dtype} {x.device}")
            first = clean
        mixed = self.pair(x)
        return torch.cat([first, mixed]), torch.cat([y, y])

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor,
             criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """``criterion(first half) + criterion(second half)`` of a ``2B`` batch (default: cross-entropy). For the
        ``y_all = cat([y, y])`` of :meth:`__call__` and cross-entropy this is ``2 * cross_entropy(logits, y_all)``,
        which ``aprkit train`` computes in one pass."""
        if logits.shape[0] % 2 or logits.shape[0] != targets.shape[0]:
            raise ValueError(f"logits and targets must hold an even batch 2B of the same length, got "
                             f"{tuple(logits.shape)} and {tuple(targets.shape)}")
        crit = criterion if criterion is not None else F.cross_entropy
        b = logits.shape[0] // 2
        return crit(logits[:b], targets[:b]) + crit(logits[b:], targets[b:])

    def __repr__(self) -> str:
        return f"APRSP({self.pair.extra_repr()})"
