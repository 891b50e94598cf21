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

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_dims, check_finite_spectrum, eager_cpu
from .._tensors import same_device
from ..augment.draws import uniform_rows, uniform_rows_shape
from ..augment.functional import CompiledCore, apr_pair_with_dc, needs_finite_check, pair_draws, pair_mask
from ..augment.ops import resolve_ops
from ..augment.single import SINGLE_DRAWS, Cast, apr_single_core, single_params
from ..fourier import Dims
from .batch_ops import crop_at, crop_offsets, crop_range, flip_draws, flip_where, to_float
from .config import PAIR_METHODS, TWO_BATCH_METHODS, Config, resolve_aug_compile
from .trajectory import apr_s_where

__all__ = ["DeviceAugment", "method_loss", "jsd_loss"]

Draws = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StepPlan:
    """What a training step's device augmentation does, fixed for a run (hashable: ``torch.compile`` specialises on
    it). ``single``: APR-S's ``(p, severity, ops, dims, cast)`` or ``None``; ``crop``: ``(size, padding, fill)`` or
    ``None``; ``flip``: horizontal flips (p 0.5); ``pair``: ``"two"`` (the ``2B`` batch ``[x, APR-P(x)]``), ``"only"``
    (``APR-P(x)``) or ``None``, with ``pair_p`` and ``fft_dims``; ``channels_last``: the model inputs' layout."""

    single: tuple[float, float, tuple[str, ...], Dims, Cast] | None
    crop: tuple[int, int, int] | None
    flip: bool
    pair: str | None
    pair_p: float
    fft_dims: tuple[int, ...]
    channels_last: bool


def augment_images(x: torch.Tensor, draws: Draws, plan: StepPlan) -> torch.Tensor:
    """The per-image part of a step: APR-S, crop, flip, then uint8 -> float ``[0, 1]`` (unchecked, sync-free on a
    device; AugMix triplets ``(B, 3, C, H, W)`` are flattened to ``(3B, C, H, W)``, views first)."""
    if x.ndim == 5:
        x = x.transpose(0, 1).reshape(-1, *x.shape[2:])
    if plan.single is not None:
        p, severity, ops, dims, cast = plan.single
        u = draws["single"][:x.shape[0]]  # a drawing buffer may hold whole chunks of rows (uniform_rows_shape)
        x = apr_single_core(x, single_params(u, p, severity, len(ops)), ops, dims, cast=cast)
    if plan.crop is not None:
        x = crop_at(x, *plan.crop, draws["oy"], draws["ox"])
    if plan.flip:
        x = flip_where(x, draws["flip"], 0.5)
    return to_float(x, plan.channels_last)


def pair_batch(x: torch.Tensor, y: torch.Tensor, draws: Draws, plan: StepPlan,
               stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch part of a step: ``(APR-P(x), y)`` (``pair="only"``), ``(cat([x, APR-P(x)]), cat([y, y]))``
    (``"two"``) or ``(x, y)``. ``stats`` (mean, std): APR-P recombines ``(x - mean) / std`` and hands its images back
    in pixels. Unchecked; on eager CPU calls an unselected batch skips the transforms (a free host read), elsewhere
    the selection is a ``torch.where``."""
    if plan.pair is None:
        return x, y
    z = x if stats is None else (x - stats[0].to(x.dtype)) / stats[1].to(x.dtype)
    u = draws["u"]
    if eager_cpu(z) and not bool(u[0] < plan.pair_p):  # one draw decides for the whole batch (the reference's mix_data)
        mixed = z
    else:
        mask = None if eager_cpu(z) else pair_mask(u, plan.pair_p, z.shape[0]).contiguous()
        out, dc = apr_pair_with_dc(z, draws["perm"], mask, plan.fft_dims, False, with_dc=needs_finite_check(z))
        if dc is not None:
            check_finite_spectrum(dc, z.dtype)
        mixed = out
    if stats is not None:
        mixed = mixed * stats[1].to(x.dtype) + stats[0].to(x.dtype)
    if plan.pair == "two":
        x, y = torch.cat([x, mixed]), torch.cat([y, y])
    else:
        x = mixed
    return (x.contiguous(memory_format=torch.channels_last) if plan.channels_last else x), y


def step_inputs(x: torch.Tensor, y: torch.Tensor, draws: Draws, plan: StepPlan,
                stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole step's augmentation, :func:`augment_images` then :func:`pair_batch`: one graph under ``torch.compile``
    (``fullgraph=True``; the draws come in as tensors)."""
    return pair_batch(augment_images(x, draws, plan), y, draws, plan, stats)


class DeviceAugment(CompiledCore):
    """Batched on-device augmentation for a config: uint8 ``(B, C, H, W)`` -> the model's float ``[0, 1]`` inputs.

    All randomness comes from ``generator`` (on ``device``); the loop reseeds it every step from
    ``(seed, rank, step)``. :meth:`inputs` draws every random number of the step first (a few RNG kernels, in the
    order and with the calls of :class:`~aprkit.augment.APRSingleBatch`, :func:`random_crop`, :func:`random_hflip`
    and :class:`~aprkit.augment.APRPair` / :class:`~aprkit.augment.APRSP` in sequence, so the numbers are theirs) and
    then runs :func:`step_inputs` on them. ``cfg.aug.compile`` (``False``, ``True`` or ``torch.compile`` options such
    as ``{"mode": "reduce-overhead"}``) compiles that as ONE graph: with CUDA graphs a step's augmentation is a few
    RNG launches and one graph replay on the host (values equal to eager up to the rounding of Inductor's fused
    kernels; the outputs live until the next step's call). ``input_stats`` (the model's mean and std, ``(C, 1, 1)``)
    with ``aug.pair_space: normalized``: APR-P recombines ``(x - mean) / std`` and hands its images back in pixels.
    ``aug(x)`` and ``aug.pair(x, y)`` are the two halves on their own (eager).
    """

    core_fn = staticmethod(step_inputs)

    def __init__(self, cfg: Config, device: torch.device, generator: torch.Generator, *, channels_last: bool = False,
                 input_stats: tuple[torch.Tensor, torch.Tensor] | None = None):
        a, d = cfg.aug, cfg.data
        self.cfg, self.device, self.generator, self.channels_last = cfg, device, generator, channels_last
        if (a.pair_space == "normalized" and a.method in PAIR_METHODS) != (input_stats is not None):
            raise ValueError("aug.pair_space: normalized with an APR-P method takes the model's mean and std "
                             "(input_stats=), and only it")
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None
        if input_stats is not None:
            self.stats = (input_stats[0].to(device, torch.float32), input_stats[1].to(device, torch.float32))
        geometry = d.input_path == "gpu" and a.method != "augmix_jsd"  # crop/flip here (else per image on the CPU)
        self.plan = StepPlan(
            single=(a.single_p, float(a.severity), resolve_ops(None), a.dims, a.single_cast)
            if apr_s_where(cfg) == "device" else None,
            crop=(d.image_size, d.crop_padding, d.pad_fill) if geometry and not d.random_resized_crop else None,
            flip=geometry and d.hflip,
            pair="only" if a.method == "apr_p_only" else "two" if a.method in TWO_BATCH_METHODS else None,
            pair_p=a.pair_p, fft_dims=check_dims(a.dims), channels_last=channels_last)
        # compiled only with APR in the step: crop, flip and the float conversion alone stay eager (a standard run's
        # inputs as before, no compile time, no CUDA-graph pool)
        apr = self.plan.single is not None or self.plan.pair is not None
        self._init_compile_core(resolve_aug_compile(a.compile, device) if apr else False)
        self._draw_buffers: dict[tuple[int, ...], dict[str, Any]] = {}

    def draw_images(self, shape: torch.Size, buffers: dict[str, Any] | None = None) -> Draws:
        """The draws of :func:`augment_images` for a batch of ``shape``: APR-S's uniforms, crop offsets, flips
        (into ``buffers`` from :meth:`draw_buffers` when given)."""
        n, g, b = inputs_per_batch(shape), self.generator, buffers or {}
        draws: Draws = {}
        if self.plan.single is not None:
            u = uniform_rows(n, SINGLE_DRAWS, g, out=b.get("single"))
            draws["single"] = b.get("single", u)  # the whole buffer: a view of it would be a new tensor every step
        if self.plan.crop is not None:
            size, padding, _ = self.plan.crop
            draws["oy"], draws["ox"] = crop_offsets(n, *crop_range(shape, size, padding), g, self.device, b.get("crop"))
        if self.plan.flip:
            draws["flip"] = flip_draws(n, g, self.device, b.get("flip"))
        return draws

    def draw_pair(self, n: int, buffers: dict[str, Any] | None = None) -> Draws:
        """The draws of :func:`pair_batch` for ``n`` images: APR-P's one selection uniform ``u`` and its partners."""
        if self.plan.pair is None:
            return {}
        u, perm = pair_draws(n, False, self.generator, (buffers or {}).get("pair"))
        return {"u": u.to(self.device), "perm": perm.to(self.device)}

    def draw_buffers(self, shape: torch.Size) -> dict[str, Any] | None:
        """Buffers that a compiled step's draws go into, one set per batch shape, kept from step to step (``None``
        when eager): the graph then reads the draws where they lie (marked as static addresses for CUDA graphs,
        which would otherwise copy every input of every replay into a buffer of their own)."""
        if not self.compile_core or not same_device(self.generator.device, self.device):
            return None
        key = tuple(shape)
        if key not in self._draw_buffers:
            n, dev, f32, i64 = inputs_per_batch(shape), self.device, torch.float32, torch.int64
            made: dict[str, Any] = {}
            if self.plan.single is not None:
                made["single"] = torch.empty(uniform_rows_shape(n, SINGLE_DRAWS, dev), dtype=torch.float64, device=dev)
            if self.plan.crop is not None:
                made["crop"] = (torch.empty(n, dtype=i64, device=dev), torch.empty(n, dtype=i64, device=dev))
            if self.plan.flip:
                made["flip"] = torch.empty(n, dtype=f32, device=dev)
            if self.plan.pair is not None:
                made["pair"] = (torch.empty(1, dtype=f32, device=dev), torch.empty(n, dtype=i64, device=dev))
            for t in made.values():
                for one in t if isinstance(t, tuple) else (t,):
                    torch._dynamo.mark_static_address(one)
            self._draw_buffers[key] = made
        return self._draw_buffers[key]

    def inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's inputs and labels for one step from a uint8 batch ``x`` and its labels ``y`` (see the class)."""
        buffers = self.draw_buffers(x.shape)
        draws = self.draw_images(x.shape, buffers)
        draws |= self.draw_pair(inputs_per_batch(x.shape), buffers)
        return self._run_core()(x, y, draws, self.plan, self.stats)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The per-image half of :meth:`inputs` (eager): APR-S, crop, flip, float."""
        return augment_images(x, self.draw_images(x.shape), self.plan)

    def pair(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch half of :meth:`inputs` (eager): APR-P of ``x`` (``apr_p_only``) or ``cat([x, APR-P(x)])``."""
        return pair_batch(x, y, self.draw_pair(x.shape[0]), self.plan, self.stats)


def inputs_per_batch(shape: torch.Size | tuple[int, ...]) -> int:
    """The number of model inputs a batch of ``shape`` makes (AugMix's float32 triplets ``(B, 3, C, H, W)``: ``3B``)."""
    return shape[0] * (shape[1] if len(shape) == 5 else 1)


def jsd_loss(logits_clean: torch.Tensor, logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon consistency of three predictions ``(B, K)`` as in AugMix (mixture clamped to [1e-7, 1])."""
    p = [F.softmax(t.float(), dim=1) for t in (logits_clean, logits_a, logits_b)]
    log_m = torch.clamp((p[0] + p[1] + p[2]) / 3.0, 1e-7, 1.0).log()
    return sum(F.kl_div(log_m, q, reduction="batchmean") for q in p) / 3.0  # type: ignore[return-value]


def method_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, *, sp_forward: str = "joint",
    jsd_weight: float = 12.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss of one step on the model inputs ``x`` and labels ``y`` of :meth:`DeviceAugment.inputs`.

    Returns ``(loss, logits, labels)`` where ``logits``/``labels`` are what training accuracy is measured on (the
    clean half of a ``2B`` batch, the clean views of AugMix). ``sp_forward`` is ``aug.sp_forward`` (a ``2B`` batch
    through the model once, ``"joint"``, or each half on its own, ``"separate"``)."""
    if method in ("standard", "apr_s", "apr_p_only"):
        logits = model(x)
        return F.cross_entropy(logits, y), logits, y
    if method in TWO_BATCH_METHODS:
        b = x.shape[0] // 2
        if sp_forward == "separate":  # each half through batch norm with its own batch statistics
            logits = torch.cat([model(x[:b]), model(x[b:])])
        else:
            logits = model(x)
        # APRSP.loss, CE(first half) + CE(second half), in one pass: y is cat([y, y]) (halves of equal size, no
        # ignored labels), so the sum of the two means is twice the mean over 2B (the same value up to the order of
        # the float sum; a host-bound GPU step saved the two halves' slicing, losses and backward: ~10 launches)
        return 2 * F.cross_entropy(logits, y), logits[:b], y[:b]
    if method == "augmix_jsd":
        logits = model(x)
        lc, la, lb = logits.chunk(3)
        loss = F.cross_entropy(lc, y) + jsd_weight * jsd_loss(lc, la, lb)
        return loss, lc, y
    raise ValueError(f"unknown aug.method {method!r}")
