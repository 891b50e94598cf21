"""Forward passes of a training run outside its steps: the test evaluation after an epoch
(:func:`evaluate_accuracy`, with :func:`correct_count`, which the steps' running accuracy shares) and the probe forward
that checks the model before ``--overwrite`` deletes a previous run (:func:`probe_forward`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._batch import block_rows, in_blocks
from ..distributed import DistInfo, all_reduce_sum
from ..models.base import eval_mode
from .batch_ops import random_crop, to_float
from .data import EpochBatches

__all__ = ["correct_count", "evaluate_accuracy", "probe_forward"]


def probe_forward(model: nn.Module, batches: EpochBatches, channels_last: bool) -> None:
    """One training-mode forward of two training images through a copy of ``model`` (its batch-norm statistics and
    the RNG streams of the run untouched: every step reseeds), so that a model error surfaces before ``--overwrite``
    deletes the previous run; a ``feature_apr.layers`` module the forward never calls is one."""
    import copy
    import gc
    import warnings

    from ..hidden import LayerNotCalledWarning

    x = torch.as_tensor(batches.items[0][0])
    x = x[0] if x.ndim == 4 else x  # AugMix's (3, C, H, W) triplet: its clean view
    d = batches.cfg.data  # the crop the device path makes (the model sees image_size x image_size), own generator
    x = random_crop(torch.stack([x, x.flip(-1)]), d.image_size, d.crop_padding, d.pad_fill,
                    generator=torch.Generator().manual_seed(0))
    probe = copy.deepcopy(model).train()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("error", LayerNotCalledWarning)  # FeatureAPR would never apply: not a run
            probe(to_float(x.to(batches.device), channels_last))
    finally:  # attached hooks hold the copy in a reference cycle: free its parameters now, not at some later collection
        del probe
        gc.collect()
        if batches.device.type == "cuda":
            torch.cuda.empty_cache()


def correct_count(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Correct top-1 predictions; a row with a non-finite logit predicts nothing (argmax of NaN logits is class 0:
    a diverged run scored class 0's share of the data)."""
    return ((logits.argmax(1) == labels) & torch.isfinite(logits).all(1)).sum()


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, batches: EpochBatches, info: DistInfo, *, amp: bool = False,
                      amp_dtype: torch.dtype = torch.float16, channels_last: bool = False) -> dict[str, float]:
    """Clean loss and top-1 accuracy of ``model`` over ``batches`` (summed over DDP ranks).

    The loss is the correctly rounded sum (``math.fsum``) of the images' own losses, so it does not depend on how the
    images are batched wherever the logits do not (a float32 sum per batch moved its last digits); on the CPU they do
    not (forward passes of CPU_BLOCK rows, aprkit._batch)."""
    sums = torch.zeros(3, dtype=torch.float64, device=info.device)  # loss, correct, count
    losses = []
    block = block_rows(model, info.device)  # forward passes of CPU_BLOCK rows on the CPU (aprkit._batch)
    with eval_mode(model):
        for x, y in batches.iterate():
            with torch.autocast(info.device.type, dtype=amp_dtype, enabled=amp):
                logits = in_blocks(model, to_float(x, channels_last), block)
            losses.append(F.cross_entropy(logits.float(), y, reduction="none"))
            sums[1] += correct_count(logits, y)
            sums[2] += y.numel()
    sums[0] = math.fsum(torch.cat(losses).tolist()) if losses else 0.0
    all_reduce_sum(sums, info)
    n = max(float(sums[2]), 1.0)
    return {"test_loss": float(sums[0]) / n, "test_acc": float(sums[1]) / n, "test_n": int(sums[2])}
