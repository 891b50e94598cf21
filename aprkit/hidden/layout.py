"""Hidden activations as spatial grids: feature maps ``(B, C, H, W)`` and token sequences ``(B, N, D)``.

Fourier operations on hidden features need a 2-D grid. A feature map already is one; a transformer
token sequence ``(B, N, D)`` is split into ``num_prefix_tokens`` leading tokens (class / register /
distillation tokens, passed through untouched) and ``N - num_prefix_tokens`` patch tokens, which are
reshaped to ``(B, D, h, w)``. Elementwise codes need no grid: with ``any_size=True`` a map below 2x2 and a
vector ``(B, D)`` (as a ``(B, D, 1, 1)`` grid) pass too. :func:`to_grid` and :func:`from_grid` are exact inverses.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["GridLayout", "to_grid", "from_grid", "infer_prefix_tokens", "check_channels_first", "layout_module",
           "site_prefix_tokens", "stated_grid", "enclosing_modules", "enclosing_names", "batch_shape"]


@dataclass(frozen=True)
class GridLayout:
    """How an activation maps to a grid: ``kind`` is ``"map"``, ``"tokens"`` or ``"vector"`` (a ``(B, D)`` read as
    ``(B, D, 1, 1)``); ``num_prefix_tokens`` the passed-through tokens."""

    kind: str
    grid: tuple[int, int]
    num_prefix_tokens: int = 0


def _square_grid(n: int) -> bool:
    """Whether ``n`` tokens form a square patch grid of at least 2 x 2."""
    return n >= 4 and math.isqrt(n) ** 2 == n


def infer_prefix_tokens(n_tokens: int, max_prefix: int = 8) -> int:
    """Smallest ``k <= max_prefix`` such that ``n_tokens - k`` is a perfect square (>= 4); else ``ValueError``."""
    for k in range(0, max_prefix + 1):
        if _square_grid(n_tokens - k):
            return k
    raise ValueError(
        f"cannot infer the patch grid of {n_tokens} tokens: pass num_prefix_tokens= and grid=(h, w) explicitly"
    )


def batch_shape(shape: tuple[int, ...] | torch.Size) -> str:
    """``shape`` with its batch axis written ``N``, ``"(N, 2048, 1, 1)"``: errors about a layer's activations are
    found on one probing image or a batch, neither of which is the caller's batch size (a 0-d or 1-d shape is
    written as is)."""
    dims = tuple(int(d) for d in shape)
    return f"(N, {', '.join(map(str, dims[1:]))})" if len(dims) > 1 else str(dims)


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of dtype {str(x.dtype).removeprefix('torch.')} and shape {batch_shape(x.shape)}"
    return f"a {type(x).__name__}"


def to_grid(
    x: torch.Tensor,
    *,
    num_prefix_tokens: int | None = None,
    grid: tuple[int, int] | None = None,
    name: str = "activation",
    allow_complex: bool = False,
    any_size: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, GridLayout]:
    """Split ``x`` into a grid ``(B, C, h, w)``, the prefix tokens ``(B, k, D)`` (or ``None``) and its layout.

    ``x`` is a feature map ``(B, C, H, W)`` (returned as is) or tokens ``(B, N, D)``. For tokens,
    ``num_prefix_tokens=None`` infers the prefix from ``N`` (see :func:`infer_prefix_tokens`) and
    ``grid=None`` assumes a square patch grid. ``allow_complex`` also accepts complex ``x`` (for code that
    handles complex values, e.g. the transplant test). A map needs a grid of at least 2x2 (a Fourier transform over
    it), unless ``any_size`` (for elementwise codes such as the transplant's sign code), which also takes a vector
    ``(B, D)`` as a ``(B, D, 1, 1)`` grid. Raises ``ValueError`` for anything else.
    """
    if not isinstance(x, torch.Tensor) or not (x.is_floating_point() or (allow_complex and x.is_complex())):
        kind = "floating or complex" if allow_complex else "floating"
        raise ValueError(
            f"{name} must be a {kind} feature map (B, C, H, W) or token sequence (B, N, D), got {_describe(x)}"
        )
    if x.ndim == 4:
        if not any_size and (x.shape[-2] < 2 or x.shape[-1] < 2):
            raise ValueError(
                f"{name} is a feature map of shape {batch_shape(x.shape)} with a spatial grid below 2x2; "
                "Fourier phase/amplitude need H >= 2 and W >= 2"
            )
        return x, None, GridLayout("map", (x.shape[-2], x.shape[-1]), 0)
    if x.ndim == 2 and any_size:
        return x[:, :, None, None], None, GridLayout("vector", (1, 1), 0)
    if x.ndim == 3:
        n = x.shape[1]
        if num_prefix_tokens is not None:
            if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, numbers.Integral):
                raise TypeError("num_prefix_tokens must be an int (the class/register tokens before the patch tokens), "
                                f"got {num_prefix_tokens!r}")
            k = int(num_prefix_tokens)
        elif grid is not None:  # the grid says how many tokens are patches: the rest are prefix tokens (at most 8,
            k = n - int(grid[0]) * int(grid[1])  # as infer_prefix_tokens allows; more means the grid is wrong)
            if not 0 <= k <= 8:
                raise ValueError(f"grid {tuple(grid)} leaves {k} of the {n} tokens of {name} as prefix tokens; "
                                 "pass the patch grid and num_prefix_tokens explicitly")
        else:
            k = infer_prefix_tokens(n)
            if k > 0:  # a guess a plain sequence can fool: a Swin MLP's 5x10 grid of 50 tokens read as 1 + 7x7
                import warnings

                warnings.warn(f"{name}: {n} tokens read as {k} prefix tokens and a {math.isqrt(n - k)}x"
                              f"{math.isqrt(n - k)} patch grid (a guess: the smallest prefix leaving a square grid); "
                              "pass num_prefix_tokens= and grid=(h, w) if that is not the layout", UserWarning,
                              stacklevel=2)
        if k == n > 0 and num_prefix_tokens is not None:  # as many tokens as the model's prefix count: only those
            raise ValueError(f"{name} of shape {batch_shape(x.shape)} holds {n} token{'s' if n > 1 else ''}, as many "
                             f"as the model's prefix (class/register) tokens: no patch tokens, so no grid at "
                             "this site (e.g. CaiT's class-attention blocks_token_only); pick a block of patch tokens")
        if not 0 <= k < n:
            raise ValueError(f"num_prefix_tokens must lie in [0, {n}) for {name} of shape {batch_shape(x.shape)}, "
                             f"got {k}")
        rest = n - k
        if grid is None:
            side = math.isqrt(rest)
            if side * side != rest:
                raise ValueError(
                    f"{name} has {rest} patch tokens after {k} prefix tokens, which is not a square grid; "
                    f"pass grid=(h, w)"
                )
            grid = (side, side)
        h, w = int(grid[0]), int(grid[1])
        if h * w != rest or h < 2 or w < 2:
            raise ValueError(f"grid {grid} does not fit the {rest} patch tokens of {name} {batch_shape(x.shape)} "
                             f"(need h*w == {rest}, h, w >= 2)")
        prefix = x[:, :k] if k else None
        patches = x[:, k:].transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
        return patches, prefix, GridLayout("tokens", (h, w), k)
    raise ValueError(
        f"{name} must be a feature map (B, C, H, W) or a token sequence (B, N, D), got {_describe(x)}; "
        "pick a layer inside the feature extractor (not the classifier head or a pooled vector)"
    )


def from_grid(g: torch.Tensor, prefix: torch.Tensor | None, layout: GridLayout) -> torch.Tensor:
    """Inverse of :func:`to_grid`: rebuild ``(B, C, H, W)`` or ``(B, N, D)`` from a grid and its prefix tokens."""
    if layout.kind == "map":
        return g
    if layout.kind == "vector":
        return g.flatten(1)
    tokens = g.reshape(g.shape[0], g.shape[1], -1).transpose(1, 2)
    if prefix is None:
        return tokens
    return torch.cat([prefix.to(tokens.dtype), tokens], dim=1)


def site_prefix_tokens(n_tokens: int, model_k: int | None, model_grid: tuple[int, int] | None) -> int | None:
    """The prefix-token count of one token output of ``n_tokens`` when the model states ``model_k`` (and perhaps its
    patch grid): ``model_k`` where the rest fits the grid (or a square), else 0 where all the tokens do (an output
    from before the class / register tokens are prepended, such as the patch embedding's); otherwise ``model_k``
    (:func:`to_grid` then names the mismatch). ``None`` when the model states nothing (``to_grid`` infers)."""
    if model_k is None:
        return None

    def fits(rest: int) -> bool:
        if model_grid is not None:
            return rest == int(model_grid[0]) * int(model_grid[1])
        return _square_grid(rest)

    if fits(n_tokens - model_k):
        return model_k
    return 0 if fits(n_tokens) else model_k


def stated_grid(model: nn.Module, path: str, n_tokens: int,
                seen: dict[str, tuple[int, int]] | None = None) -> tuple[int, int]:
    """The patch grid of ``n_tokens`` tokens (no prefix tokens) at ``path`` in a channels-last token model (a timm
    Swin), from the innermost module around it that gives one of that many tokens: the grid of its latest input
    (``seen``, by module name: a block's ``(B, H, W, C)`` input, recorded in the forward), its ``window_size`` (window
    attention: the tokens of one window), ``input_resolution`` (a block's configured grid) or ``grid_size``. Its
    stages have grids of their own, and a square guess read a 36 x 64 grid of 2,304 tokens (a 16:9 image) as 48 x 48.
    ``ValueError`` when none gives a grid of that many tokens."""
    seen = seen or {}
    for name in enclosing_names(path):
        m = model.get_submodule(name)
        for g in (seen.get(name), getattr(m, "window_size", None), getattr(m, "input_resolution", None),
                  getattr(m, "grid_size", None)):
            if isinstance(g, (tuple, list)) and len(g) == 2 and all(isinstance(v, int) for v in g):
                if int(g[0]) * int(g[1]) == n_tokens:
                    return int(g[0]), int(g[1])
    raise ValueError(f"layer {path!r} output holds {n_tokens} tokens of a channels-last model (a Swin), and no module "
                     "around it gives their grid (its input's, window_size, input_resolution, grid_size): pass "
                     "grid=(h, w) to attach, in a call of its own for this layer")


def enclosing_names(path: str) -> list[str]:
    """The name ``path`` and its ancestors' names up to the model's (``""``), innermost first."""
    parts = path.split(".") if path else []
    return [".".join(parts[:i]) for i in range(len(parts), -1, -1)]


def enclosing_modules(model: nn.Module, path: str) -> list[nn.Module]:
    """The module at ``path`` and its ancestors up to ``model``, innermost first."""
    return [model.get_submodule(name) for name in enclosing_names(path)]


def _channel_sizes(module: nn.Module, head: nn.Module | None = None) -> tuple[set[int], set[int]]:
    """Channel counts of ``module``'s channels-first layers (conv, batch / group norm) and feature sizes of its
    last-axis layers (Linear, LayerNorm), less the classifier ``head`` (it takes pooled features: a phase-collapse
    net, whose layers hold no such layer, had every map as wide as its class count refused)."""
    first: set[int] = set()
    last: set[int] = set()
    for m in module.modules():
        if m is head:
            continue
        if isinstance(m, nn.modules.conv._ConvNd):
            first |= {m.in_channels, m.out_channels}
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            first.add(m.num_features)
        elif isinstance(m, nn.GroupNorm):
            first.add(m.num_channels)
        elif isinstance(m, nn.Linear):
            last |= {m.in_features, m.out_features}
        elif isinstance(m, nn.LayerNorm) and m.normalized_shape:
            last.add(int(m.normalized_shape[-1]))
    return first, last


#: where to look instead of a channels-last site
_NHWC_HINT = (", e.g. the block output of a ConvNeXt block; a Swin model holds no such map (its stages and blocks "
              "are channels-last throughout): use a model with (B, C, H, W) or token activations")


def layout_module(model: nn.Module, path: str) -> nn.Module:
    """Of the module at ``path`` and its ancestors, the innermost with any convolution, norm or Linear layer: the
    one whose layers tell an activation's layout (a parameter-free activation inside a ConvNeXt MLP: that MLP)."""
    chain = enclosing_modules(model, path)
    return next((m for m in chain if any(_channel_sizes(m))), chain[-1])


def check_channels_first(model: nn.Module, path: str, shape: tuple[int, ...], where: str,
                         linear_io: bool = False) -> None:
    """Refuse a 4-D activation ``shape`` that looks channels-last, ``(B, H, W, C)`` as in ConvNeXt MLPs and Swin stages.

    ``path``: the module of ``model`` around the site; :func:`layout_module` decides. Channels-last: the innermost
    of the site's module and its ancestors that declares an ``output_fmt`` declares NHWC (timm's patch embedding
    with dynamic image sizes, a Swin model), or none of its convolution, norm or Linear sizes is ``shape[1]`` while
    one of its Linear / LayerNorm feature sizes is ``shape[3]``, or ``linear_io``: the caller saw an ``nn.Linear`` of
    :func:`layout_module` take or give this very tensor (``aprkit.hidden.capture.linear_io``; a ConvNeXt MLP at
    384 px, 96 x 96 x 384, passed the size rules). Read as ``(B, C, H, W)``, such a map would put the channels into
    the Fourier transform (and the DC-only control would keep row means). A map whose ``shape[1]`` is a Linear size
    too is channels-first: Linear layers acting on pooled channels (a squeeze-excite gate) size them so; when the
    module has no convolution or norm of channels and ``shape[1] == shape[3]`` (a ConvNeXt MLP at 384 px, 96 x 96 x 96,
    or such a gate with C == W), sizes cannot tell: it warns."""
    if len(shape) != 4:
        return
    chain = enclosing_modules(model, path)
    # the innermost module that declares a format (timm: a patch embedding, or a whole Swin model): the model's own
    # NHWC was not read, so a Swin stage whose height equals its width in channels passed as (B, C, H, W). Not past
    # a module holding a convolution: its own output is (B, C, H, W) (a Swin's patch_embed.proj, inside the
    # patch embedding that declares NHWC for its own output)
    fmt = ""
    for m in chain:
        if getattr(m, "output_fmt", None) is not None:
            fmt = str(m.output_fmt)
            break
        if any(isinstance(k, nn.modules.conv._ConvNd) for k in m.modules()):
            break
    if fmt.upper().endswith("NHWC") or linear_io:
        why = ("an nn.Linear (or a LayerNorm over the last axis) takes or gives it as a 4-D tensor" if linear_io
               else "the module declares output_fmt NHWC")
        raise ValueError(f"{where} holds channels-last activations of shape {batch_shape(shape)} (B, H, W, C): "
                         f"{why}. Hidden-layer Fourier codes read (B, C, H, W) maps; pick a site whose activation is "
                         "(B, C, H, W)" + _NHWC_HINT)
    from ..models.normalize import find_classifier

    try:
        head: nn.Module | None = find_classifier(model)
    except ValueError:
        head = None
    first, last = _channel_sizes(layout_module(model, path), head)
    if not first and shape[3] in last and shape[1] == shape[3]:  # a Linear-only module: a ConvNeXt MLP at 384 px
        # (96 x 96 x 96, channels-last) or a squeeze-excite gate with C == W (channels-first): sizes cannot tell
        warnings.warn(f"{where}: cannot tell from the layer sizes whether the activations of shape "
                      f"{batch_shape(shape)} are (B, C, H, W) or channels-last (B, H, W, C) (its Linear / LayerNorm "
                      f"layers act on {shape[3]} features, as many as the map is wide); read as (B, C, H, W). A "
                      "ConvNeXt MLP's are channels-last: pick the block output instead", RuntimeWarning, stacklevel=3)
    if shape[3] in last and shape[1] not in first and shape[1] not in last:
        raise ValueError(
            f"{where} holds channels-last activations of shape {batch_shape(shape)} (B, H, W, C): its Linear / "
            f"LayerNorm layers act on the last axis ({shape[3]} features) and no convolution has {shape[1]} channels. "
            "Hidden-layer Fourier codes read (B, C, H, W) maps and would mix the channels into the transform; pick "
            "a site whose activation is (B, C, H, W)" + _NHWC_HINT
        )
