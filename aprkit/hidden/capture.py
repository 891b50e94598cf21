"""Batched forward passes that read (capture) or replace the activation at one :class:`Site`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._batch import block_rows, pad_rows, row_blocks
from .sites import (
    FUNCTIONAL_OPS,
    Site,
    StopForward,
    activation_modules,
    hooked_forward,
    list_blocks,
    resolve_module,
    tap,
)

__all__ = ["predict_intervened", "capture", "count_calls", "front_blocks", "linear_io", "skipping", "FrontSkip"]


@dataclass
class FrontSkip:
    """What an intervention at a site may skip: ``blocks`` (module, output shape without batch, output dtype)
    and, when the site lies inside a block, that block's input ``Site`` (its true input is fed from a capture)."""

    blocks: list[tuple[nn.Module, tuple[int, ...], torch.dtype]] = field(default_factory=list)
    owner_input: Site | None = None


def front_blocks(model: nn.Module, site: Site, example: torch.Tensor) -> FrontSkip:
    """The blocks (from :func:`list_blocks`) an intervention at ``site`` need not compute.

    These are the blocks before the one holding ``site`` (and that block too when ``site`` is its
    output). When ``site`` lies inside a block, that block still runs, on its true input (captured
    beforehand: a residual branch may read it after the site). Valid for block-sequential networks
    (ResNets, MobileNetV2, ViTs), where a block's output feeds only the next block; the identity
    control checks it. Shapes and dtypes (complex for complex blocks) are measured on ``example`` ``(1, C, H, W)``.
    Where a front block takes or returns anything but a tensor (a tuple), nothing is skipped.
    """
    full, _ = resolve_module(model, site.module_path)
    blocks = list_blocks(model, example)  # in the order the data passes them
    owner = next((i for i, b in enumerate(blocks) if full == b or full.startswith(b + ".")), None)
    if owner is None:
        return FrontSkip()
    at_output = full == blocks[owner] and site.op is None and site.site == "output"
    n = owner + 1 if at_output else owner
    mods = [resolve_module(model, b)[1] for b in blocks[:n]]
    shapes: dict[int, tuple[tuple[int, ...], torch.dtype] | None] = {}

    def record(k: int) -> Callable[..., None]:
        def hook(m: nn.Module, a: Any, o: Any) -> None:  # a block taking or returning other than one tensor: None
            tensors = isinstance(o, torch.Tensor) and bool(a) and isinstance(a[0], torch.Tensor)
            shapes.setdefault(k, (tuple(o.shape[1:]), o.dtype) if tensors else None)
        return hook

    hooked_forward(model, example, [(m, record(k)) for k, m in enumerate(mods)])
    if any(shapes.get(k) is None for k in range(len(mods))):  # zeros of one shape cannot stand in: compute them all
        return FrontSkip()
    return FrontSkip([(m, *shapes[k]) for k, m in enumerate(mods)],  # type: ignore[misc]
                     None if at_output else Site(blocks[owner], "input"))


@contextmanager
def skipping(blocks: Sequence[tuple[nn.Module, tuple[int, ...], torch.dtype]]) -> Iterator[None]:
    """Within the context, each block returns zeros of its recorded shape and dtype instead of computing."""
    own = [m.__dict__.get("forward") for m, _, _ in blocks]  # a forward set on the instance (a monkeypatch) returns
    for m, shape, dtype in blocks:
        m.forward = lambda x, *a, _s=shape, _d=dtype, **k: x.new_zeros((x.shape[0], *_s), dtype=_d)
    try:
        yield
    finally:
        for (m, _, _), prev in zip(blocks, own, strict=True):
            if prev is None:
                del m.forward
            else:
                m.forward = prev


@torch.no_grad()
def predict_intervened(
    model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, site: Site | None = None,
    call: int = 0, replace: Callable[[torch.Tensor], torch.Tensor] | None = None,
    skip: Sequence[tuple[nn.Module, tuple[int, ...], torch.dtype]] = (),
    feed: tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions ``(N,)`` and logits ``(N, K)`` on the CPU for ``images`` ``(N, C, H, W)``.

    With ``site``, call number ``call`` of that site is replaced by ``replace(rows)`` for each batch of
    row indices ``rows`` (the intervened forward pass); blocks in ``skip`` (see :func:`front_blocks`)
    are not computed, and ``feed = (module, fn)`` replaces that module's input by ``fn(rows)``.
    """
    preds, logits = [], []
    # forward passes of exactly CPU_BLOCK rows on the CPU (aprkit._batch), the last padded with its last image
    for rows, n_real in row_blocks(images.shape[0], batch_size, block_rows(model, device)):
        x = images[rows].to(device)
        own = rows[:n_real]  # replace / feed see each image once (they may record per row)

        def padded(t: torch.Tensor, n_rows: int = rows.numel()) -> torch.Tensor:
            return pad_rows(t, n_rows)

        if site is None:
            out = model(x)
        else:
            if replace is None:
                raise ValueError("predict with a site needs replace (the function giving the replacement activations)")
            hook = None if feed is None else feed[0].register_forward_pre_hook(
                lambda m, args, own=own, padded=padded: (padded(feed[1](own)).to(args[0].dtype), *args[1:]))

            def swap(a: Any, i: int, own: torch.Tensor = own, padded: Any = padded) -> torch.Tensor | None:
                return padded(replace(own)).to(a.dtype) if i == call else None

            try:
                with skipping(skip), tap(model, site, swap):
                    out = model(x)
            finally:
                if hook is not None:
                    hook.remove()
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            got = f"a {type(out).__name__}" if not isinstance(out, torch.Tensor) else f"shape {tuple(out.shape)}"
            fix = ("wrap a model returning a tuple or dict in a module whose forward returns its logits"
                   if not isinstance(out, torch.Tensor) else "a classifier's logits, one row per image")
            raise ValueError(f"the model returned {got}; the transplant test needs logits (B, K): {fix}")
        logits.append(out[:n_real].float().cpu())
        preds.append(logits[-1].argmax(1))
    return torch.cat(preds), torch.cat(logits)


@torch.no_grad()
def count_calls(model: nn.Module, site: Site, example: torch.Tensor) -> int:
    """How many times ``site`` is called in one forward pass on ``example`` (0: never)."""
    with tap(model, site, lambda a, i: None) as state:
        model(example)
        return state.calls


@torch.no_grad()
def linear_io(model: nn.Module, site: Site, example: torch.Tensor, module: nn.Module) -> bool:
    """Whether ``site``'s activation in a forward pass on ``example`` is a 4-D tensor that an ``nn.Linear`` of
    ``module`` takes or gives (the very object): a Linear acts on the last axis, so that map is channels-last
    (B, H, W, C) whatever its sizes (a ConvNeXt MLP's at 384 px passed every size rule)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return False
    seen: list[Any] = []
    fed: list[torch.Tensor] = []  # references, not ids: a freed tensor's id may be reused

    def on_linear(m: nn.Module, args: Any, out: Any) -> None:
        fed.extend(t for t in (*args, out) if isinstance(t, torch.Tensor) and t.ndim == 4)

    with tap(model, site, lambda a, i: seen.append(a)):
        hooked_forward(model, example, [(m, on_linear) for m in linears])
    return any(a is t for a in seen for t in fed)


def _never_called(model: nn.Module, site: Site, example: torch.Tensor) -> str:
    """Why ``site`` has no call in a forward pass on ``example``: its module never runs, or (a functional op's site)
    the module runs but never calls the op; then the message names the activation modules it holds and the
    functional activations it does call."""
    path = site.module_path
    if site.op is None or count_calls(model, Site(path), example) == 0:
        return f"layer {site.layer!r} was never called in a forward pass; pick a layer the model uses"
    held = activation_modules(model, path)
    has = (f"the activation modules it holds are {', '.join(held)} (address one by its name; site='input' is its "
           "pre-activation)" if held else "it holds no activation module")
    ops = [op for op in FUNCTIONAL_OPS if op != site.op and count_calls(model, Site(f"{path}:{op}"), example)]
    calls = f"; it calls {', '.join(ops)} (e.g. layer '{path}:{ops[0]}')" if ops else ""
    return (f"layer {site.layer!r}: module {path!r} ran, but the functional {site.op} was never called in its forward "
            f"pass; {has}{calls}")


@torch.no_grad()
def capture(model: nn.Module, images: torch.Tensor, site: Site, batch_size: int, device: torch.device
            ) -> tuple[torch.Tensor, int]:
    """Activations ``(N, ...)`` at ``site`` (on the model's device) and the resolved call index.

    A probe forward counts the calls of the site; ``site.call_index`` (negative counts from the end)
    must pick one when there are several. Each batch's forward stops right after the capture.
    """
    n_calls = count_calls(model, site, images[:1].to(device))
    if n_calls == 0:
        raise ValueError(_never_called(model, site, images[:1].to(device)))
    if site.call_index is None and n_calls > 1:
        raise ValueError(f"layer {site.layer!r} is called {n_calls} times per forward; "
                         f"pass call_index (0..{n_calls - 1} or negative; aprkit eval: --set transplant_call_index=1)")
    idx = 0 if site.call_index is None else site.call_index
    if not -n_calls <= idx < n_calls:
        raise ValueError(f"call_index {idx} out of range for layer {site.layer!r}, which is called {n_calls} times")
    idx %= n_calls
    chunks: list[torch.Tensor] = []
    keep = [0]  # rows of the forward pass to keep: the real ones of a padded block

    def grab(a: Any, i: int) -> None:
        if i == idx:
            if not isinstance(a, torch.Tensor):
                raise ValueError(f"layer {site.layer!r} {site.site} is a {type(a).__name__}, "
                                 f"not a feature map (B, C, H, W) or tokens (B, N, D)")
            chunks.append(a[:keep[0]].detach().clone())
            raise StopForward

    for rows, n_real in row_blocks(images.shape[0], batch_size, block_rows(model, device)):
        keep[0] = n_real
        with tap(model, site, grab):
            try:
                model(images[rows].to(device))
            except StopForward:
                pass
    return torch.cat(chunks), idx
