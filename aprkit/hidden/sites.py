"""Addressing hidden activations: layer names, hook points and call indices.

A *site* is where an activation is read or replaced:

- ``layer`` is a module path from ``model.named_modules()`` (``""`` is the model itself). Models
  wrapped in ``aprkit.models.Normalize`` (inner model at ``.model``) resolve with or without the
  ``model.`` prefix.
- ``layer="<module>:<op>"`` addresses a *functional* activation (``op`` in :data:`FUNCTIONAL_OPS`,
  e.g. ``"layer3.2:relu"``; the text after the last ``:`` when it names such an op, so module names holding a ``:``,
  such as ``ModuleDict`` keys ``"s:1"`` or ``"stage:a"``, stay module names) called anywhere inside that module's
  forward, such as the ``F.relu(out + shortcut(x))`` that ends a CIFAR ResNet block: such calls cannot be hooked
  as modules, so they are intercepted with a ``TorchFunctionMode`` while the module runs.
- ``site="output"`` is the module's (or op's) result, ``site="input"`` its first positional input:
  for a ReLU that is the pre-activation (of the block's output only where the block ends in that ReLU; see
  :func:`last_activation_site`).
- ``call_index`` picks one call when a module or op runs several times per forward (torchvision's
  shared ``relu`` in a ResNet block); negative values count from the last call.
"""

from __future__ import annotations

import numbers
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .._text import nearest_names, some_names

__all__ = [
    "FUNCTIONAL_OPS",
    "Site",
    "StopForward",
    "resolve_module",
    "list_blocks",
    "last_activation_site",
    "activation_modules",
    "tap",
]

SiteKind = Literal["input", "output"]

#: functional activations addressable as ``"<module>:<op>"`` (``relu6`` also counts ``F.hardtanh`` calls clamping to
#: [0, 6]: torch's ``nn.ReLU6`` is a ``Hardtanh`` and calls ``F.hardtanh(x, 0, 6)``, never ``F.relu6``)
FUNCTIONAL_OPS: dict[str, tuple[Callable, ...]] = {
    "relu": (F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_),
    "relu6": (F.relu6, F.hardtanh),
    "gelu": (F.gelu,),
    "silu": (F.silu,),
}


def _argument(args: tuple, kwargs: dict, pos: int, name: str, default: object) -> object:
    """A call's argument ``name``: by keyword, else positional ``pos``, else its ``default``."""
    return kwargs[name] if name in kwargs else args[pos] if len(args) > pos else default


def _clamps_to_relu6(args: tuple, kwargs: dict) -> bool:
    """Whether an ``F.hardtanh`` call is a ReLU6: ``min_val == 0`` and ``max_val == 6`` (positional or keyword)."""
    return _argument(args, kwargs, 1, "min_val", -1.0) == 0 and _argument(args, kwargs, 2, "max_val", 1.0) == 6


#: calls of FUNCTIONAL_OPS that count only with these arguments (a hardtanh to [-1, 1] is no ReLU6)
_OP_ARGUMENTS: dict[Callable, Callable[[tuple, dict], bool]] = {F.hardtanh: _clamps_to_relu6}
#: the positional index of the ``inplace`` flag where it is not the second argument
_INPLACE_POSITION: dict[Callable, int] = {F.hardtanh: 3}
_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Hardswish, nn.PReLU, nn.ELU, nn.SELU,
                       nn.CELU, nn.Mish)
#: class names of other libraries' activation modules (timm's GELU, GELUTanh, QuickGELU, Swish, HardSwish, ...;
#: aprkit's AllConv SigmoidGELU)
_ACTIVATION_NAMES = frozenset({"relu", "relu6", "gelu", "gelutanh", "quickgelu", "silu", "swish", "hardswish",
                               "hardswishme", "swishme", "leakyrelu", "prelu", "elu", "selu", "celu", "mish", "mishme",
                               "sigmoidgelu"})
#: squeeze-excite gates: their activations act on pooled (B, C, 1, 1) vectors, not on the block's feature map. A whole
#: module name (``se``, ``se2``, ``se_module``, ``squeeze_excite``, ``excitation``) or a gate class (``SEModule``,
#: ``SEBlock``, ``EffectiveSEModule``, ``SqueezeExcite``, torchvision's ``SqueezeExcitation``, ``EcaModule``); never a
#: name that merely holds the letters (a DenseNet's ``_DenseBlock`` / ``denseblock1``, the ``SqueezeNet`` itself)
_GATE_NAME = re.compile(r"^(se\d*|se_\w+|se(module|block|layer)\w*|\w*squeeze_?excit\w*|excit\w*)$", re.IGNORECASE)
_GATE_CLASS = re.compile(r"^(SE|SEModule|SEBlock|SELayer|SEWithNorm|\w*SqueezeExcit\w*|EffectiveSE\w*|C?[Ee]ca\w*)$")


def _is_activation(m: nn.Module) -> bool:
    return isinstance(m, _ACTIVATION_MODULES) or type(m).__name__.lower() in _ACTIVATION_NAMES


def _in_gate(mod: nn.Module, name: str) -> bool:
    """Whether module ``name`` of ``mod`` lies inside a squeeze-excite (or other gating) submodule."""
    parts = name.split(".")[:-1]
    for i in range(len(parts)):
        sub = mod.get_submodule(".".join(parts[:i + 1]))
        if _GATE_NAME.match(parts[i]) or _GATE_CLASS.match(type(sub).__name__):
            return True
    return False


class StopForward(Exception):
    """Raised by a tap callback to end a forward pass early (e.g. once the activation is captured)."""


@dataclass(frozen=True)
class Site:
    """A hook point: ``layer`` (module path, optionally ``":op"``), ``site`` and ``call_index``."""

    layer: str
    site: SiteKind = "output"
    call_index: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str):
            raise TypeError(f"layer must be a module name (str), got {type(self.layer).__name__}")
        if self.site not in ("input", "output"):
            raise ValueError(f"site must be 'input' or 'output', got {self.site!r}")
        if self.call_index is not None and (isinstance(self.call_index, bool)
                                            or not isinstance(self.call_index, numbers.Integral)):
            raise TypeError(f"call_index must be an int or None, got {type(self.call_index).__name__}")
        if self.call_index is not None:  # (a NumPy integer as an int: the site's label and cache key)
            object.__setattr__(self, "call_index", int(self.call_index))

    def _split(self) -> tuple[str, str | None]:
        """``(module path, op)``: the op is the text after the last ``:`` when it is one of :data:`FUNCTIONAL_OPS`;
        otherwise the whole ``layer`` is a module path (``ModuleDict`` keys may hold ``:``, e.g. ``"stages.s:1.0"``,
        ``"stage:a"``; a misspelt op then fails as an unknown module, with the ops named)."""
        path, sep, op = self.layer.rpartition(":")
        return (path, op) if sep and op in FUNCTIONAL_OPS else (self.layer, None)

    @property
    def module_path(self) -> str:
        return self._split()[0]

    @property
    def op(self) -> str | None:
        return self._split()[1]

    def label(self) -> str:
        idx = "" if self.call_index is None else f"[{self.call_index}]"
        return f"{self.layer}{idx}@{self.site}"


def resolve_module(model: nn.Module, name: str, ops: bool = True) -> tuple[str, nn.Module]:
    """Return ``(full_name, module)`` for ``name``; tries the ``model.`` prefix of wrapped models.

    Raises ``ValueError`` naming close matches when no module has that name; ``ops``: the caller also takes a
    functional op's site (``'layer2.0:relu'``), which the message then suggests (``attach`` takes modules only).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"a layer is named by its module name (a str from model.named_modules(), e.g. 'layer2.1'), "
                        f"got {type(name).__name__}")
    modules = dict(model.named_modules())
    for cand in (name, f"model.{name}" if name else "model"):
        if cand in modules and not (cand == "model" and name == ""):
            return cand, modules[cand]
    if name == "":
        return "", model
    short = [n[len("model."):] for n in modules if n.startswith("model.")]
    hint = nearest_names(name, [n for n in modules if n] + short)
    parent, _, op = name.rpartition(".")
    holder = modules.get(parent, modules.get(f"model.{parent}"))
    # F.relu is no module; torch's own layers (a Conv2d) call none: only the model's own modules are suggested
    if op in FUNCTIONAL_OPS and holder is not None and not type(holder).__module__.startswith("torch.nn."):
        hint += (f" (for a functional {op} called inside {parent!r}: '{parent}:{op}')" if ops else
                 f" (a functional {op} inside {parent!r} is no module, and only a module can be named here: "
                 f"{parent!r} itself or one of its modules)")
    owner, colon, word = name.rpartition(":")
    if ops and colon and word.isidentifier() and any(c in modules for c in (owner, f"model.{owner}")):  # misspelt op
        hint += f" (a functional op after ':' is one of {', '.join(FUNCTIONAL_OPS)})"
    if not hint:  # nothing close: what the model has instead
        hint = f" (its top-level modules: {some_names(n for n, _ in model.named_children())}"
        blocks = list_blocks(model)
        hint += f"; its blocks: {some_names(blocks)})" if blocks else ")"
    raise ValueError(f"model has no layer named {name!r}{hint}; names come from model.named_modules()")


def list_blocks(model: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """Names of the repeated blocks: children of every ``nn.Sequential`` / ``nn.ModuleList`` whose children all have
    submodules (ResNet ``layerN.i``, ViT ``blocks.i``, MobileNetV2 ``features.i``); a child that is itself an
    ``nn.ModuleList`` (never called: Twins' per-stage lists) is looked into. A network of plain layers in one
    ``nn.Sequential`` (VGG, AllConv) has none: its activation modules stand for the blocks (outside squeeze-excite
    gates), each one's output a layer's. In definition order, or with ``example`` (one input) in the order a forward
    pass on it first calls them (Twins defines its stages' blocks, then their position blocks: depth ran otherwise
    than the data), blocks it never calls last."""
    found: list[str] = []

    def visit(prefix: str, mod: nn.Module) -> None:
        kids = list(mod.named_children())
        if isinstance(mod, (nn.Sequential, nn.ModuleList)) and kids and all(
            any(True for _ in k.children()) for _, k in kids
        ):
            for n, k in kids:
                if isinstance(k, nn.ModuleList):
                    visit(f"{prefix}{n}.", k)
                else:
                    found.append(f"{prefix}{n}")
            return
        for n, k in kids:
            visit(f"{prefix}{n}.", k)

    visit("", model)
    if not found:  # an activation module the model holds, or calls, more than once stands for no one layer
        held = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
        found = [n for n, m in model.named_modules()
                 if n and _is_activation(m) and not _in_gate(model, n) and held[id(m)] == 1]
    if not found:
        raise ValueError("found no repeated blocks (nn.Sequential of submodules) and no activation module held once "
                         "in the model; pass layers=[...] (aprkit eval: --set 'transplant_layers=[layer2.1]')")
    return found if example is None else in_call_order(model, found, example)


@torch.no_grad()
def hooked_forward(model: nn.Module, example: torch.Tensor, hooks: Sequence[tuple[nn.Module, Callable[..., Any]]],
                  pre: bool = False) -> None:
    """One forward pass of ``model`` on ``example`` with each ``(module, hook)`` of ``hooks`` registered (forward
    hooks, or pre-hooks with ``pre``), removed after it whatever happens."""
    handles = [m.register_forward_pre_hook(h) if pre else m.register_forward_hook(h) for m, h in hooks]
    try:
        model(example)
    finally:
        for h in handles:
            h.remove()


def in_call_order(model: nn.Module, names: list[str], example: torch.Tensor, returned: bool = False) -> list[str]:
    """``names`` (modules of ``model``) in the order a forward pass on ``example`` first calls them (``returned``: the
    order their first calls return, where a module comes after the modules inside it, as its output after theirs);
    the ones it never calls keep their order, last."""
    modules = dict(model.named_modules())
    first: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def called(m: nn.Module, *a: object) -> None:
            first.setdefault(name, len(first))
        return called

    hooked_forward(model, example, [(modules[n], hook(n)) for n in names], pre=not returned)
    return sorted(names, key=lambda n: (first.get(n, len(names)), names.index(n)))


def activation_modules(model: nn.Module, block: str) -> list[str]:
    """Full names of the activation modules ``block`` holds (torch's or another library's, e.g. timm's ``GELU``), in
    definition order; not those inside a squeeze-excite gate, which act on pooled vectors. ``block`` itself where it
    is an activation (a plain network's, see :func:`list_blocks`)."""
    full, mod = resolve_module(model, block)
    return [".".join(p for p in (full, n) if p) for n, m in mod.named_modules()
            if _is_activation(m) and not _in_gate(mod, n)]


def last_activation_site(model: nn.Module, block: str) -> Site:
    """The input site of a block's last nonlinearity: its last activation module (see :func:`activation_modules`),
    or the functional ``relu`` called inside it (``"<block>:relu"``) when it has none; the last call. (The transplant
    sweep then takes the first functional activation the block calls, e.g. GFNet's ``gelu``.)

    That is the block's pre-activation where the block ends in its nonlinearity (a ResNet block's ReLU after the
    residual sum). A block without a final activation (MobileNetV2's inverted residuals, which end in a linear
    bottleneck; a ViT block, whose last nonlinearity is its MLP's GELU) has it inside its branch: the site is a
    branch-internal pre-activation, and the block's output, a signed stream already, is the site of its code."""
    full, _ = resolve_module(model, block)
    acts = activation_modules(model, block)
    if acts:
        return Site(acts[-1], "input", -1)
    return Site(f"{full}:relu", "input", -1)


_IN_PLACE = (torch.relu_, torch.Tensor.relu_)


def _in_place(func: Callable, args: tuple, kwargs: dict) -> bool:
    """Whether a functional activation call works in place (``relu_``, or ``inplace=True`` given by keyword or as the
    second positional argument of ``F.relu``/``F.relu6``/``F.silu``, the fourth of ``F.hardtanh``)."""
    if func in _IN_PLACE:
        return True
    pos = _INPLACE_POSITION.get(func, 1)
    return bool(kwargs.get("inplace", args[pos] if len(args) > pos and isinstance(args[pos], bool) else False))


class _OpMode(TorchFunctionMode):
    """Intercepts functional activations while ``depth > 0`` (inside the addressed module)."""

    def __init__(self, funcs: tuple[Callable, ...], handler: Callable[[Callable, tuple, dict], object]) -> None:
        super().__init__()
        self.funcs = funcs
        self.handler = handler
        self.depth = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D401 - torch protocol
        kwargs = kwargs or {}
        if self.depth > 0 and func in self.funcs and _OP_ARGUMENTS.get(func, lambda a, k: True)(args, kwargs):
            return self.handler(func, args, kwargs)
        return func(*args, **kwargs)


class TapState:
    """Counts the calls of a site during the current forward (reset when the model's forward starts)."""

    def __init__(self) -> None:
        self.calls = 0


@contextmanager
def tap(model: nn.Module, site: Site, fn: Callable[[torch.Tensor, int], torch.Tensor | None]) -> Iterator[TapState]:
    """Within the context, each call of ``site`` runs ``fn(activation, call_number)``.

    A returned tensor replaces the activation (input or output); ``None`` keeps it. The model must
    be called inside the ``with`` block; hooks (and the function mode) are removed on exit.
    """
    full, module = resolve_module(model, site.module_path)
    state = TapState()
    handles = [model.register_forward_pre_hook(lambda m, a: setattr(state, "calls", 0))]
    op = site.op
    try:
        if op is None:
            if site.site == "output":
                def post(m, args, out):
                    i = state.calls
                    state.calls += 1
                    return fn(out, i)

                handles.append(module.register_forward_hook(post))
            else:
                def pre(m, args):
                    i = state.calls
                    state.calls += 1
                    if not args:
                        raise ValueError(f"layer {full!r} was called without a positional input; use site='output'")
                    new = fn(args[0], i)
                    return None if new is None else (new, *args[1:])

                handles.append(module.register_forward_pre_hook(pre))
            yield state
            return
        def handler(func, args, kwargs):
            i = state.calls
            state.calls += 1
            inplace = _in_place(func, args, kwargs)  # the caller may ignore the result: write into its tensor
            if site.site == "input":
                new = fn(args[0], i)
                if new is not None:
                    args = (args[0].copy_(new) if inplace else new, *args[1:])
                return func(*args, **kwargs)
            out = func(*args, **kwargs)
            new = fn(out, i)
            if new is None:
                return out
            return out.copy_(new) if inplace else new

        mode = _OpMode(FUNCTIONAL_OPS[op], handler)
        handles.append(model.register_forward_pre_hook(lambda m, a: setattr(mode, "depth", 0)))

        def enter(m, args):
            mode.depth += 1

        def leave(m, args, out):
            mode.depth -= 1

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
        with mode:
            yield state
    finally:
        for h in handles:
            h.remove()
