"""What one training step does for each method: device-side augmentation and the loss.

=============  ==========================================================  =======================================
method         inputs the model sees                                       loss
=============  ==========================================================  =======================================
standard       crop + flip                                                 CE(clean)
apr_p          crop + flip; that batch and its APR-P (``APRSP``)           CE(x) + CE(APR-P(x)), one forward on 2B
               (the reference's APR-P: ``mix_data`` in its training loop)  (``aug.sp_forward: separate``: two on B)
apr_p_only     crop + flip, then APR-P on the batch (``APRPair``)          CE(APR-P batch)
apr_s          APR-S per image, crop + flip                                CE(APR-S)
apr_sp         APR-S per image, crop + flip; that batch and its APR-P      CE(x) + CE(APR-P(x)), one forward on 2B
                                                                           (``aug.sp_forward: separate``: two on B)
augmix_jsd     crop + flip, two AugMix views per image (CPU workers)       CE(clean) + w * JSD(clean, aug1, aug2)
=============  ==========================================================  =======================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .batch_ops import random_crop, random_hflip, to_float
from .config import PAIR_METHODS, TWO_BATCH_METHODS, Config, resolve_aug_compile
from .trajectory import apr_s_where

__all__ = ["DeviceAugment", "method_loss", "jsd_loss"]


def _with_generator(cls: Callable[..., Any], generator: torch.Generator, **kwargs: Any) -> Any:
    """Instantiate an augmentation class, handing it ``generator`` when its constructor takes one."""
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # pragma: no cover
        params = {}
    if "generator" in params:
        kwargs["generator"] = generator
    return cls(**kwargs)


class DeviceAugment:
    """Batched on-device augmentation for a config: uint8 ``(B, C, H, W)`` -> float ``[0, 1]`` model inputs.

    All randomness comes from ``generator`` (on ``device``); the loop reseeds it every step from
    ``(seed, rank, step)``. APR-S runs :class:`~aprkit.augment.APRSingleBatch` (the sync-free dense core,
    parameters drawn and tabulated on the device); ``pair(x, y)`` runs :class:`~aprkit.augment.APRPair`
    (``apr_p_only``) or :class:`~aprkit.augment.APRSP` (the ``2B`` batch of ``apr_p`` and ``apr_sp``).
    ``cfg.aug.compile`` (``False``, ``True`` or ``torch.compile`` options such as ``{"mode": "reduce-overhead"}``)
    is their ``compile_core``: each APR core then runs as one compiled graph, with the same draws as eager (values
    equal up to the rounding of Inductor's fused kernels). ``input_stats`` (the model's mean and std, ``(C, 1, 1)``)
    with ``aug.pair_space: normalized``: APR-P recombines ``(x - mean) / std`` and hands its images back in pixels.
    """

    def __init__(self, cfg: Config, device: torch.device, generator: torch.Generator, *, channels_last: bool = False,
                 input_stats: tuple[torch.Tensor, torch.Tensor] | None = None):
        from ..augment import APRSP, APRPair, APRSingleBatch

        self.cfg, self.device, self.generator, self.channels_last = cfg, device, generator, channels_last
        if (cfg.aug.pair_space == "normalized" and cfg.aug.method in PAIR_METHODS) != (input_stats is not None):
            raise ValueError("aug.pair_space: normalized with an APR-P method takes the model's mean and std "
                             "(input_stats=), and only it")
        self.stats = None if input_stats is None else tuple(t.to(device, torch.float32) for t in input_stats)
        method, gpu = cfg.aug.method, cfg.data.input_path == "gpu"
        compile_core = resolve_aug_compile(cfg.aug.compile, device)
        self.geometry = gpu and method != "augmix_jsd"  # crop/flip here (else done per image on the CPU)
        self.single: APRSingleBatch | None = None
        if apr_s_where(cfg) == "device":
            self.single = _with_generator(APRSingleBatch, generator, p=cfg.aug.single_p, severity=cfg.aug.severity,
                                          dims=cfg.aug.dims, compile_core=compile_core, cast=cfg.aug.single_cast)
        self.pair_op: APRPair | None = None
        self.aprsp: APRSP | None = None
        if method == "apr_p_only":
            self.pair_op = _with_generator(APRPair, generator, p=cfg.aug.pair_p, dims=cfg.aug.dims,
                                           compile_core=compile_core)
        elif method in TWO_BATCH_METHODS:
            self.aprsp = _with_generator(APRSP, generator, p=cfg.aug.pair_p, dims=cfg.aug.dims,
                                         compile_core=compile_core)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a uint8 batch; AugMix triplets ``(B, 3, C, H, W)`` are flattened to ``(3B, C, H, W)``
        (views first)."""
        if x.ndim == 5:
            x = x.transpose(0, 1).reshape(-1, *x.shape[2:])
        d = self.cfg.data
        if self.single is not None:
            x = self.single(x)
        if self.geometry:
            if not d.random_resized_crop:
                x = random_crop(x, d.image_size, d.crop_padding, d.pad_fill, generator=self.generator)
            if d.hflip:
                x = random_hflip(x, generator=self.generator)
        return to_float(x, self.channels_last)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def pair(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """APR-P of the batch (``apr_p_only``), or the ``2B`` batch ``cat([x, APR-P(x)])`` (``apr_p``, ``apr_sp``).

        The class wrappers validate shapes once and never sync with the host on a device; with CUDA graphs
        (``aug.compile: {mode: reduce-overhead}``) an ``apr_p_only`` output lives until the next step's call."""
        if self.stats is not None:  # given with an APR-P method only: aprsp or pair_op is set
            mean, std = (t.to(x.dtype) for t in self.stats)
            z = (x - mean) / std  # the reference's ImageNet mix_data recombines normalised images
            if self.aprsp is not None:
                x_all, y_all = self.aprsp(z, y, clean=x)  # the clean half as it came (no round trip)
                x_all[x.shape[0]:] = x_all[x.shape[0]:] * std + mean
                return self._layout(x_all), y_all
            assert self.pair_op is not None
            return self._layout(self.pair_op(z) * std + mean), y
        if self.aprsp is not None:
            x_all, y_all = self.aprsp(x, y)
            return self._layout(x_all), y_all
        if self.pair_op is not None:
            return self._layout(self.pair_op(x)), y
        return x, y


def jsd_loss(logits_clean: torch.Tensor, logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon consistency of three predictions ``(B, K)`` as in AugMix (mixture clamped to [1e-7, 1])."""
    p = [F.softmax(t.float(), dim=1) for t in (logits_clean, logits_a, logits_b)]
    log_m = torch.clamp((p[0] + p[1] + p[2]) / 3.0, 1e-7, 1.0).log()
    return sum(F.kl_div(log_m, q, reduction="batchmean") for q in p) / 3.0  # type: ignore[return-value]


def method_loss(
    model: nn.Module, aug: DeviceAugment, x: torch.Tensor, y: torch.Tensor, method: str, jsd_weight: float = 12.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss of one step; ``x`` are model inputs from :class:`DeviceAugment`, ``y`` labels ``(B,)``.

    Returns ``(loss, logits, labels)`` where ``logits``/``labels`` are what training accuracy is measured on.
    """
    if method in ("standard", "apr_s"):
        logits = model(x)
        return F.cross_entropy(logits, y), logits, y
    if method == "apr_p_only":
        xp, yp = aug.pair(x, y)
        logits = model(xp)
        return F.cross_entropy(logits, yp), logits, yp
    if method in TWO_BATCH_METHODS:
        from ..augment import APRSP

        x_all, y_all = aug.pair(x, y)
        b = x.shape[0]
        if aug.cfg.aug.sp_forward == "separate":  # each half through batch norm with its own batch statistics
            logits = torch.cat([model(x_all[:b]), model(x_all[b:])])
        else:
            logits = model(x_all)
        return APRSP.loss(logits, y_all), logits[:b], y
    if method == "augmix_jsd":
        logits = model(x)
        lc, la, lb = logits.chunk(3)
        loss = F.cross_entropy(lc, y) + jsd_weight * jsd_loss(lc, la, lb)
        return loss, lc, y
    raise ValueError(f"unknown aug.method {method!r}")
