"""Streaming inference: uint8 batches -> device -> float/255 -> model (AMP, channels_last) -> logits.

Datasets yield ``(uint8 tensor (C, H, W), int label)``; batches stay uint8 until they reach the
device, where they are converted to float in [0, 1] (models normalise inside). ``predict`` returns
logits ``(N, K)`` (float32, CPU), labels ``(N,)`` and optionally penultimate features ``(N, D)``
(the input of the model's last ``nn.Linear``, or ``forward_features`` pooled when there is none).

On CUDA the uint8 batches come from pinned host memory, read one or two batches ahead in a background
thread while the device computes (``aprkit.eval.engine.batches``); outputs stay on the device until
``FLUSH_ROWS`` rows have gathered and then go to pinned host memory in asynchronous copies, so the host never
waits for the device while it queues batches. :func:`start_predict` returns before the last of them is done, so a
caller can queue the next dataset first (the corruption suite does, cell after cell).

When ``torch.distributed`` is initialised with more than one process (``torchrun``), each rank reads
its share through a ``DistributedSampler`` and the outputs are gathered and put back into dataset
order on every rank (rank 0 writes results); nothing else changes for the caller.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.utils.data import Dataset

from ..._batch import block_rows, in_blocks, read_size
from ..._checks import dataset_len
from ...data.arrays import NO_LABEL
from ...distributed import group_info, resolve_device
from ...models.base import eval_mode
from ...models.normalize import NotALinearClassifier, recording_classifier
from .batches import iter_batches
from .data_checks import (
    check_class_names,
    class_sorted_limit,
    names_other_classes,
    sized_spec,
    warn_class_sorted_limit,
    warn_other_size,
)
from .logit_checks import batch_where, check_finite_logits, check_logits, warn_if_probabilities
from .models import dtype_mismatch, retry_contiguous, wants_channels_last

__all__ = [
    "NO_LABEL",
    "Outputs",
    "amp_dtype",
    "gather_outputs",
    "iter_batches",
    "to_model_input",
    "check_finite_logits",
    "warn_if_probabilities",
    "predict",
    "start_predict",
    "PendingOutputs",
    # the data checks, imported from here before they had a module of their own
    "check_class_names",
    "class_sorted_limit",
    "names_other_classes",
    "sized_spec",
]

#: model outputs gathered on the device before one copy to the host
FLUSH_ROWS = 8192

#: a per-batch transform applied on the device: (uint8 images (B, C, H, W), dataset indices (B,) int64) -> images
BatchTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Outputs:
    """Model outputs over a dataset: ``logits (N, K)``, ``labels (N,)``, ``features (N, D)`` or None."""

    logits: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor | None = None
    seconds: float = 0.0

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def probs(self) -> torch.Tensor:
        """Softmax probabilities ``(N, K)`` in float64 (stable metrics)."""
        return torch.softmax(self.logits.double(), dim=1)


def to_model_input(images: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """Move a batch to ``device`` (non-blocking) and convert uint8 to float in [0, 1] there."""
    x = images.to(device, non_blocking=True)
    if x.ndim == 4:  # reorder the (4x smaller) uint8 batch, a no-op when it already is; float() keeps the layout
        x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return x.div(255.0) if x.dtype == torch.uint8 else x.float()  # uint8 / 255 -> float32 in one pass


def _features_from(feats: torch.Tensor) -> torch.Tensor:
    if feats.ndim == 4:  # (B, C, H, W) feature maps -> global average pool
        return feats.mean(dim=(2, 3))
    if feats.ndim == 3:  # (B, N, D) tokens -> class token
        return feats[:, 0]
    return feats.flatten(1)


class _SplitHead(Protocol):
    """A model (timm style) whose forward pass is ``forward_head(forward_features(x))``."""

    def forward_features(self, x: torch.Tensor) -> Any: ...

    def forward_head(self, features: Any) -> Any: ...


def _has_split(model: nn.Module) -> bool:
    """Whether ``model`` has the feature split of :class:`_SplitHead` (its features without a Linear classifier)."""
    return hasattr(model, "forward_features") and hasattr(model, "forward_head")


def _several_heads(model: nn.Module) -> list[nn.Module]:
    """The heads of a model (or a wrapper's ``.model``) whose ``get_classifier()`` returns several (timm's distilled
    DeiT, LeViT, EfficientFormer: a class and a distillation head, whose logits it averages; each an ``nn.Linear`` or,
    as LeViT's ``NormLinear``, a module holding one as ``.linear``), else ``[]``: the last ``nn.Linear`` alone would
    give the distillation token's features only."""
    for m in (model, getattr(model, "model", None)):
        get = getattr(m, "get_classifier", None)
        head = get() if callable(get) else None
        if isinstance(head, tuple) and len(head) > 1 and all(
                isinstance(h, nn.Linear) or isinstance(getattr(h, "linear", None), nn.Linear) for h in head):
            return list(head)
    return []


def _forward(model: nn.Module, x: torch.Tensor, use_head: bool, hook_store: list[torch.Tensor],
             block: int | None) -> Any:
    """The model's output on ``x`` in blocks of ``block`` rows (aprkit._batch: on the CPU, the same kernels whatever
    the batch size); the features of those rows, when a hook or the split head stored them, as one entry of
    ``hook_store`` (the last the classifier saw in each block; only the last block holds padding rows)."""
    feats: list[torch.Tensor] = []

    def one(xb: torch.Tensor) -> Any:
        mark = len(hook_store)
        if use_head:  # predict checked that the model has forward_features and forward_head
            split = cast(_SplitHead, model)
            f = split.forward_features(xb)
            hook_store.append(_features_from(f))
            out = split.forward_head(f)
        else:
            out = model(xb)
        if len(hook_store) > mark:
            feats.append(hook_store[-1])
            del hook_store[mark:]
        return out

    out = in_blocks(one, x, block)
    if feats:
        hook_store.append(torch.cat([_features_from(f) for f in feats])[:x.shape[0]])
    return out


def _eval_mode(model: nn.Module) -> contextlib.AbstractContextManager:
    """:func:`aprkit.models.base.eval_mode` for a model with a submodule in train mode; a model all in eval mode (as
    ``evaluate`` runs them) is left as it is: switching and putting back its flags walks every module twice per call
    (1.2 ms for WRN-28-10, per corruption cell)."""
    return eval_mode(model) if any(m.training for m in model.modules()) else contextlib.nullcontext()


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype of the evaluation's AMP on ``device``: float16 on CUDA, bfloat16 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _to_host(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the host: from CUDA an asynchronous copy into pinned memory (no host sync; read it after the stream's
    event, :class:`PendingOutputs`), elsewhere ``t.cpu()``. For the logits only: page-locked memory stays with the
    process (torch caches it), which a few MB of logits may, features of a whole training set (an OOD fit) may not."""
    if t.device.type != "cuda":
        return t.cpu()
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return host.copy_(t, non_blocking=True)


class PendingOutputs:
    """The outputs of :func:`start_predict`, copied to the host or still on their way: :meth:`result` waits for them
    (on CUDA for the copies queued after the last batch, not for work queued since), checks their finiteness and
    returns :class:`Outputs` (the same each call)."""

    def __init__(self, parts: dict[str, list[torch.Tensor]], n_total: int, desc: str, t0: float,
                 device: torch.device) -> None:
        self._parts, self._n, self._desc, self._t0 = parts, n_total, desc, t0
        self._event = None
        if device.type == "cuda":
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(device))
        self._out: Outputs | None = None
        self._checked = False

    def result(self, check_finite: bool = True) -> Outputs:
        """The outputs in dataset order (gathered from every ``torchrun`` process), their logits checked for NaN and
        infinities (``check_finite=False``: a caller that checks the rows it reads, :func:`check_finite_logits`).
        Checked after the gather, so every process raises alike (one that raised alone left the others waiting)."""
        if self._out is None:
            if self._event is not None:
                self._event.synchronize()
            parts, self._parts = self._parts, {}  # the pinned copies go back to torch's cache once read
            logits, idx = torch.cat(parts["logits"]), torch.cat(parts["idx"])
            out = Outputs(logits, torch.cat(parts["labels"]), torch.cat(parts["feats"]) if parts["feats"] else None)
            out = gather_outputs(out, idx, self._n)
            out.seconds = time.perf_counter() - self._t0
            warn_if_probabilities(out.logits)
            self._out = out
        if check_finite and not self._checked:
            check_finite_logits(self._out.logits, torch.arange(self._out.logits.shape[0]), self._desc)
            self._checked = True
        return self._out


def start_predict(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
    amp: bool = False,
    channels_last: bool = False,
    transform: BatchTransform | None = None,
    features: bool = False,
    limit: int | None = None,
    num_classes: int | tuple[int, ...] | None = None,
    progress: bool = False,
    desc: str = "eval",
    read_ahead: int | None = None,
    labelled: bool = True,
) -> PendingOutputs:
    """Run ``model`` over ``dataset`` (:func:`predict`, without waiting for the device): every batch is read and its
    forward pass queued, the outputs' copies to the host too; :meth:`PendingOutputs.result` waits for them and returns
    logits ``(N, K)``, labels ``(N,)`` and optional features.

    On CUDA the host can so queue the next dataset's batches (the next corruption cell) while the device still
    computes these, and summarise these while it computes those: the device does not wait for the host between
    datasets. On the CPU the work is done on return. ``transform`` (e.g. an on-the-fly corruption) runs on the device
    on uint8 batches before the float conversion. ``read_ahead``: batches read in a background thread ahead of the
    forward pass (default: 2 on CUDA without loader workers, 0 on the CPU; the outputs are the same either way).
    ``num_classes`` (when known; or a tuple of accepted counts) is checked against the model's output on the first
    batch; labels outside ``[0, K)`` and a logits/labels count mismatch raise ``ValueError`` here, NaN/infinite logits
    in ``result()``. ``labelled=False`` (OOD sets, whose folders' class indices mean nothing to the model) skips the
    label check and returns every label as ``NO_LABEL`` (-1). The model runs in eval mode (batch norm's running
    statistics, no dropout); every submodule gets its own train/eval flag back afterwards.
    """
    from tqdm.auto import tqdm

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module taking float images in [0, 1], got {type(model).__name__}")
    if labelled:
        check_class_names(model, dataset)
    device = resolve_device(device)
    channels_last = wants_channels_last(model, channels_last)
    block = block_rows(model, device)  # rows per forward pass (aprkit._batch)
    use_amp = bool(amp)
    amp_type = amp_dtype(device)
    hook_store: list[torch.Tensor] = []
    hooks = contextlib.ExitStack()  # the feature hooks, removed when the pass ends or raises
    use_head = False
    heads = _several_heads(model) if features else []
    if heads:  # a distilled timm model: its features are the mean of its heads' inputs, as its pre-logits are
        seen: list[torch.Tensor] = []

        def pool(m: nn.Module, inp: Any, out: Any) -> None:  # after the model's forward: its heads' inputs, averaged
            hook_store.append(torch.stack(seen[-len(heads):]).mean(0))
            seen.clear()

        for handle in [*(h.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach())) for h in heads),
                       model.register_forward_hook(pool)]:
            hooks.callback(handle.remove)
    elif features:
        try:  # the input of the last nn.Linear each forward pass calls
            hook_store = hooks.enter_context(recording_classifier(model))
        except ValueError:
            if not _has_split(model):
                raise ValueError("features were requested but the model has no nn.Linear classifier and no "
                                 "forward_features/forward_head") from None
            use_head = True
    parts: dict[str, list[torch.Tensor]] = {"logits": [], "labels": [], "feats": [], "idx": []}
    # outputs stay on the device until FLUSH_ROWS rows have gathered, then go to the host in one asynchronous copy:
    # no host sync (without features), so the host prepares the next batch while the device still runs this one
    pending: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def flush() -> None:
        if not pending:
            return
        parts["logits"].append(_to_host(torch.cat([p[0] for p in pending])))
        if features:  # pageable (a host sync, as before): see _to_host
            parts["feats"].append(torch.cat([f for _, f in pending if f is not None]).cpu())  # all set here
        pending.clear()

    t0 = time.perf_counter()
    n_total = dataset_len(dataset) if limit is None else min(dataset_len(dataset), int(limit))
    if limit is not None:
        warn_class_sorted_limit(dataset, n_total)
    rank, world = group_info()  # under torchrun one bar, rank 0's, counting every rank's share (as training's)
    bar = tqdm(total=n_total, desc=desc, unit="img", disable=not progress or rank != 0, leave=False)
    batch_size = read_size(batch_size, block)  # whole blocks (aprkit._batch): only the last one holds padding
    batches = iter_batches(dataset, batch_size, num_workers=num_workers, limit=limit, device=device,
                           read_ahead=read_ahead)
    try:
        with torch.inference_mode(), _eval_mode(model):  # a model in train mode: batch-statistics logits, moving stats
            for b, (images, labels, idx) in enumerate(batches):
                x = images.to(device, non_blocking=True)
                if transform is not None:
                    x = transform(x, idx)
                x = to_model_input(x, device, channels_last)
                if b == 0 and labelled:
                    warn_other_size(model, x.shape[-2:])
                ctx = torch.autocast(device.type, dtype=amp_type) if use_amp else contextlib.nullcontext()
                with ctx:
                    try:
                        out = _forward(model, x, use_head, hook_store, block)
                    except NotALinearClassifier:  # its classifier is no nn.Linear: its own feature split, if it has one
                        if b or not _has_split(model):
                            raise
                        hooks.close()
                        hook_store, use_head = [], True
                        out = _forward(model, x, use_head, hook_store, block)
                    except (RuntimeError, TypeError) as exc:  # (an aprkit model names a dtype mismatch a TypeError)
                        clear = dtype_mismatch(model, exc)
                        if clear is not None:
                            raise clear from exc
                        if isinstance(exc, TypeError) or not channels_last:
                            raise
                        x = x.contiguous()
                        hook_store.clear()
                        out = retry_contiguous(  # the lambda is called within this iteration (B023)
                            model, exc, lambda: _forward(model, x, use_head, hook_store, block))  # noqa: B023
                        channels_last = False
                where = functools.partial(batch_where, desc, b, idx)  # described only in an error
                logits = check_logits(out, len(labels), num_classes, where).float()
                if not labelled:
                    labels = torch.full_like(labels, NO_LABEL)
                else:
                    lo, hi = (int(v) for v in torch.aminmax(labels))
                    if hi >= logits.shape[1] or lo < NO_LABEL:
                        raise ValueError(
                            f"labels {where()} range over [{lo}, {hi}] but the model outputs {logits.shape[1]} "
                            "classes; the model and the data disagree on the number of classes"
                        )
                feats = None
                if features:
                    feats = _features_from(hook_store.pop()).float()
                    hook_store.clear()
                pending.append((logits, feats))
                parts["labels"].append(labels)
                parts["idx"].append(idx)
                if len(pending) * batch_size >= FLUSH_ROWS:  # every batch but the last holds batch_size rows
                    flush()
                bar.update(min(len(labels) * world, n_total - bar.n))
            flush()
    finally:
        batches.close()  # stops a read-ahead thread at once, also when the forward pass raised
        bar.close()
        hooks.close()
    return PendingOutputs(parts, n_total, desc, t0, device)


def predict(model: nn.Module, dataset: Dataset, **options: Any) -> Outputs:
    """Run ``model`` over ``dataset`` and return logits ``(N, K)``, labels ``(N,)`` and optional features.

    The keyword arguments are :func:`start_predict`'s (``device``, ``batch_size``, ``amp``, ``channels_last``,
    ``transform``, ``features``, ``limit``, ...): ``predict`` is ``start_predict(model, dataset, **options).result()``.
    """
    return start_predict(model, dataset, **options).result()


def gather_outputs(out: Outputs, idx: torch.Tensor, n: int) -> Outputs:
    """Under torch.distributed: collect every rank's outputs (rows of dataset indices ``idx``) and restore the dataset
    order of the ``n`` rows (padding dropped); unchanged in a single process."""
    rank, world = group_info()
    if world == 1:
        return out
    parts: list[Any] = [None] * world
    torch.distributed.all_gather_object(parts, (idx, out.logits, out.labels, out.features))
    all_idx = torch.cat([p[0] for p in parts])
    order = torch.empty(n, dtype=torch.long)
    order[all_idx] = torch.arange(len(all_idx))  # later duplicates (padding) overwrite with equal values
    cat = lambda k: torch.cat([p[k] for p in parts])[order]  # noqa: E731
    return Outputs(cat(1), cat(2), cat(3) if out.features is not None else None)
