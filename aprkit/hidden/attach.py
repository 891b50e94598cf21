"""Insert :class:`FeatureAPR` at named layers through forward hooks (no model surgery)."""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal, cast

import torch
from torch import nn

from .. import fourier
from .._generators import make_generator
from .feature_apr import FeatureAPR, Lam
from .layout import check_channels_first, enclosing_names, layout_module, site_prefix_tokens, stated_grid
from .sites import Site, resolve_module

__all__ = ["attach", "AttachHandle", "detach", "token_layout", "PatchGrid", "compiled_modules", "LayerNotCalledWarning"]


class LayerNotCalledWarning(RuntimeWarning):
    """An attached layer that the model's first training-mode forward did not call: its FeatureAPR never applies
    (``aprkit train`` makes it an error before the run starts)."""


def _token_model(model: nn.Module) -> tuple[int, nn.Module | None] | None:
    """``(num_prefix_tokens, patch embedding)`` of the timm token model in ``model`` (itself or a wrapper's ``.model``):
    a ViT stating ``num_prefix_tokens``, a model without prefix tokens whose patch embedding ``stem`` (MLP-Mixer,
    ResMLP, gMLP) states its grid (``grid_size``: 0 prefix tokens), or a channels-last model (``output_fmt`` NHWC, a
    Swin: 0 prefix tokens, no grid); else ``None``."""
    for m in (model, getattr(model, "model", None)):
        if m is None:
            continue
        if getattr(m, "num_prefix_tokens", None) is not None:
            return int(cast(int, m.num_prefix_tokens)), getattr(m, "patch_embed", None)
        if _declares_nhwc(m):  # a Swin: token sites (its MLPs) hold patches only
            return 0, None  # (its grid changes per stage: each site's is its block's, layout.stated_grid)
        pe = getattr(m, "stem", None)  # MLP-Mixer's, ResMLP's, gMLP's: every block keeps the stem's tokens (a Swin's
        # patch_embed states only its first stage's grid: its later stages merge patches, so it is not read here)
        if isinstance(pe, nn.Module) and getattr(pe, "grid_size", None) is not None and hasattr(pe, "patch_size"):
            return 0, pe
    return None


def token_layout(model: nn.Module) -> tuple[int | None, tuple[int, int] | None]:
    """``(num_prefix_tokens, grid)`` read from a timm token model (a ViT, or an MLP-Mixer whose patch embedding states
    its grid; itself or a wrapper's ``.model``); ``None`` if unknown. The grid is the configured one
    (``grid_size``, given when not square); a model that takes other image sizes (timm's ``dynamic_img_size``) has
    the grid of its input: :class:`PatchGrid` reads that in a forward."""
    found = _token_model(model)
    if found is None:
        return None, None
    k, pe = found
    grid = getattr(pe, "grid_size", None)
    if grid is not None:
        gh, gw = (int(v) for v in grid)
        if gh != gw:
            return k, (gh, gw)
    return k, None


class PatchGrid:
    """The patch grid of the images a timm ViT's patch embedding received in its latest forward (per thread: a
    DataParallel's replicas share the hook), read by a forward pre-hook: ``with PatchGrid(model) as pg:
    model(x); pg.grid``. ``grid`` is ``None`` for a model without a patch embedding or before a forward. A thread
    that ran no forward (autograd's device thread recomputing a checkpointed block in the backward pass) reads the
    latest forward's grid of any thread."""

    def __init__(self, model: nn.Module) -> None:
        found = _token_model(model)
        self.module: nn.Module | None = found[1] if found is not None else None
        self._local = threading.local()
        self._latest: tuple[int, int] | None = None
        self._hook: Any = None

    def __getstate__(self) -> dict[str, Any]:  # a thread-local does not pickle: an attached model does
        return {k: v for k, v in self.__dict__.items() if k not in ("_local", "_hook", "_latest")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local, self._latest, self._hook = threading.local(), None, None

    @property
    def grid(self) -> tuple[int, int] | None:
        return getattr(self._local, "grid", self._latest)

    def __call__(self, mod: nn.Module, args: Any) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            size = (int(x.shape[-2]), int(x.shape[-1]))
            feat = getattr(mod, "dynamic_feat_size", None)  # timm: the grid of an image size, padding included
            patch = getattr(mod, "patch_size", None)
            if isinstance(patch, int):  # XCiT's ConvPatchEmbed states one int (a crash at its first forward)
                patch = (patch, patch)
            grid = [int(v) for v in feat(size)] if callable(feat) else (
                [size[0] // int(patch[0]), size[1] // int(patch[1])]
                if isinstance(patch, (tuple, list)) and len(patch) == 2 else None)  # else: unread, the grid inferred
            self._local.grid = self._latest = (grid[0], grid[1]) if grid is not None else None

    def __enter__(self) -> PatchGrid:
        if self.module is not None:
            self._hook = self.module.register_forward_pre_hook(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def compiled_modules(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that ``torch.compile`` wrapped (``_orig_mod``) or compiled in place
    (``module.compile()``): hooks attached below them after tracing do not run."""
    return [name or "<model>" for name, m in model.named_modules()
            if hasattr(m, "_orig_mod") or getattr(m, "_compiled_call_impl", None) is not None]


class AttachHandle:
    """Removable handle returned by :func:`attach`; also a context manager that removes on exit.

    ``modules`` maps each full layer name to its :class:`FeatureAPR` (change ``p`` etc. there).
    """

    def __init__(self, hooks: list[Any], modules: dict[str, FeatureAPR]) -> None:
        self._hooks = hooks
        self.modules = modules
        self.removed = False

    def remove(self) -> None:
        """Remove every hook (idempotent); the model behaves exactly as before :func:`attach`."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.removed = True

    def __enter__(self) -> AttachHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "removed" if self.removed else "active"
        return f"AttachHandle({list(self.modules)}, {state})"


def attach(
    model: nn.Module,
    layers: Sequence[str],
    *,
    p: float = 0.5,
    dims: fourier.Dims = "hw",
    mode: Literal["swap", "mix"] = "swap",
    lam: Lam = None,
    num_prefix_tokens: int | None = None,
    grid: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> AttachHandle:
    """Apply :class:`FeatureAPR` to the outputs of ``layers`` while those modules are in training mode.

    ``layers`` are names from ``model.named_modules()`` (``model.``-prefix optional for wrapped
    models). Token outputs ``(B, N, D)`` use the timm ViT layout (``num_prefix_tokens``, patch grid)
    when the model exposes it, else the arguments. ``generator`` / ``seed`` (a new CPU generator seeded with it):
    the source of every layer's draws (``None``: torch's global RNG). Returns an :class:`AttachHandle`;
    ``handle.remove()`` (or leaving a ``with`` block) restores the model.
    """
    layers = [layers] if isinstance(layers, str) else list(layers)  # a generator is read once
    generator = make_generator(generator, seed)  # one for all the layers: they draw in turn, as from generator=
    if not layers:
        raise ValueError("layers must name at least one module, e.g. ['layer2', 'layer3']")
    compiled = compiled_modules(model)
    if compiled:  # a compiled graph never runs hooks attached after it was traced
        raise ValueError(f"model is compiled (torch.compile) at {compiled[:3]}: hooks attached now would not run in "
                         "its compiled graph. attach to the module before compiling it, e.g. attach(model, ...) then "
                         "torch.compile(model)")
    # a (Distributed)DataParallel: its replicas call the inner module's hooks, each in a thread of its own, so the
    # call count opens on the inner module; layer names with or without the "module." of each wrapper taken off
    prefix = ""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        layers = [n[len("module."):] if isinstance(n, str) and n.startswith("module.") else
                  "" if n == "module" else n for n in layers]
        model, prefix = model.module, prefix + "module."
    auto_k, auto_grid = token_layout(model)
    model_k = auto_k if num_prefix_tokens is None else None  # the model's count, fitted per output (patch_embed: 0)
    k = num_prefix_tokens if num_prefix_tokens is not None else auto_k
    patches = PatchGrid(model) if grid is None else None  # the grid of each forward's images (dynamic_img_size)
    fixed, grid = grid is not None, grid if grid is not None else auto_grid
    resolved: list[tuple[str, nn.Module]] = []
    for name in layers:
        try:  # a module's name first: ModuleDict keys may hold ':' ("stage:a")
            resolved.append(resolve_module(model, name, ops=False))
        except ValueError:
            if isinstance(name, str) and Site(name).op is not None:
                raise ValueError(f"attach needs a module, not a functional op ({name!r}); hook the module whose "
                                 "output you want to augment") from None
            raise
    repeated = [full for full, k in Counter(full for full, _ in resolved).items() if k > 1]
    if repeated:
        raise ValueError(f"layers {list(layers)} name the module {repeated[0]!r} more than once; expected each module "
                         "once (one FeatureAPR per module, reachable through the handle)")
    held = [full for full, module in resolved if _feature_hooks(module)]
    if held:
        raise ValueError(f"module {held[0]!r} already has a FeatureAPR attached (an earlier attach, or a copy of an "
                         "attached model): it would be applied twice. Remove it first: handle.remove(), or "
                         "aprkit.hidden.detach(model) for a copy")
    # the augmentations first: a bad p, dims or lam is refused before any hook is on the model
    aprs = [FeatureAPR(p=p, dims=dims, mode=mode, lam=lam, num_prefix_tokens=k, grid=grid, generator=generator)
            for _ in resolved]
    hooks: list[Any] = []
    modules: dict[str, FeatureAPR] = {}
    state = _HookState(model, model_k, grid, [m for m in model.modules() if hasattr(m, "grad_checkpointing")],
                       None if fixed else patches)
    if not fixed and _channels_last_model(model):  # a Swin: each site's grid from its block's input (recorded)
        state.blocks = _BlockGrids(model, [full for full, _ in resolved])
        hooks += state.blocks.hooks
    state.names = [full for full, _ in resolved]
    for (full, module), apr in zip(resolved, aprs, strict=True):
        modules[prefix + full if full else prefix[:-1]] = apr  # (the name in the model given: "module." kept)
        feature_hook = _FeatureHook(apr, full, state)
        hooks += [module.register_forward_hook(feature_hook), feature_hook.watch_handle]
    # the model's forward opens and closes the count of each module's calls (a recomputation for activation
    # checkpointing, in the backward pass, falls outside it)
    hooks.append(model.register_forward_pre_hook(state.open_forward))
    hooks.append(model.register_forward_hook(state.close_forward, always_call=True))
    if patches is not None and patches.module is not None:
        hooks.append(patches.module.register_forward_pre_hook(patches))
    return AttachHandle(hooks, modules)


class _HookState:
    """What the hooks of one :func:`attach` call share: the model (for the layout check), its token layout (the
    patch grid given, else each forward's from ``patches``, else the configured one), the modules holding timm's
    activation-checkpointing switch, and whether the generator warning was given."""

    def __init__(self, model: nn.Module, model_k: int | None, grid: tuple[int, int] | None,
                 switches: list[nn.Module], patches: PatchGrid | None = None) -> None:
        self.model, self.model_k, self.grid, self.switches, self.warned = model, model_k, grid, switches, False
        self.patches = patches
        self.blocks: _BlockGrids | None = None  # a channels-last token model (a Swin): its blocks' input grids
        self.names: list[str] = []  # the attached layers: the first training forward checks that each was called
        self.checked_calls = False
        # per thread (DataParallel runs its replicas, which share these hooks, in threads): for each attached module,
        # its calls in the model's forward running in this thread (None outside one)
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:  # a thread-local does not pickle: an attached model does
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # an attached model pickled by an older aprkit lacks the later fields: its call check is not made
        self.__dict__.update({"patches": None, "names": [], "checked_calls": True, "blocks": None, **state})
        self._local = threading.local()

    def open_forward(self, mod: nn.Module, args: Any) -> None:
        self._local.calls = Counter()

    def close_forward(self, mod: nn.Module, args: Any, out: Any) -> None:
        calls, self._local.calls = getattr(self._local, "calls", None), None  # also after a forward that raised
        if calls is None or out is None or not mod.training or self.checked_calls:
            return
        self.checked_calls = True
        never = [name for name in self.names if not calls[name]]
        if never:
            warnings.warn(f"layer{'s' if len(never) > 1 else ''} {', '.join(map(repr, never))} attached but not "
                          "called in the model's forward (in training mode): FeatureAPR there never applies; attach "
                          "to modules the forward calls", LayerNotCalledWarning, stacklevel=2)

    def token_grid(self) -> tuple[int, int] | None:
        """The patch grid of this forward's tokens: the one given to attach, else the patch embedding's input's."""
        seen = self.patches.grid if self.patches is not None else None
        return seen if seen is not None else self.grid

    def count(self, full: str, active: bool) -> None:
        """Count a call of an attached module; refuse one that the model's forward calls a second time while its
        FeatureAPR is ``active`` (torchvision's ResNet blocks call one ReLU after both convolutions): each call's
        output would be recombined, the second after the residual sum."""
        calls = getattr(self._local, "calls", None)
        if calls is None:
            return
        calls[full] += 1
        if active and calls[full] > 1:
            raise ValueError(f"layer {full!r} is called more than once in one forward pass of the model (a module "
                             "reused, e.g. the ReLU of a torchvision ResNet block, called after both convolutions): "
                             "FeatureAPR would recombine every call's output. Attach it to a module called once, "
                             "e.g. the block itself ('layer1.0' rather than 'layer1.0.relu')")


class _FeatureHook:
    """The forward hook :func:`attach` registers: applies its :class:`FeatureAPR` to the module's output in
    training mode. An object, not a closure, so an attached model pickles (``torch.save``); a copy of the model
    (``copy.deepcopy``, e.g. an EMA model) carries copies of its hooks, which :func:`detach` removes."""

    _watching: Sequence[Any] = ()  # the hooks of _watch_linears, removed at the next call (a class default: models
    # pickled before it existed)

    def __init__(self, apr: FeatureAPR, full: str, state: _HookState) -> None:
        self.apr, self.full, self.state = apr, full, state
        self.checked: set[tuple[int, ...]] = set()  # activation shapes already checked for a channels-last layout

    def __getstate__(self) -> dict[str, Any]:  # (pickled with the model: hook handles do not pickle)
        return {**self.__dict__, "_watching": []}

    @property
    def watch_handle(self) -> Any:
        """A handle whose ``remove()`` removes the watch hooks still registered (the attachment's handle holds it: a
        forward pass that never reached the model's end, or that raised, left them on the model)."""
        return _Unwatch(self)

    def _watch_linears(self, result: torch.Tensor, shape: tuple[int, ...], site: nn.Module) -> None:
        """Refuse ``result`` (this call's recombined map) when an ``nn.Linear`` around the site takes it later in this
        forward pass: a Linear acts on the last axis, so the map is channels-last whatever its sizes (a parameter-free
        activation inside a ConvNeXt MLP at 384 px, whose sizes passed the size rules). Raised in that forward pass,
        before any backward; the shape counts as checked once a forward pass ends without it."""
        model, where = self.state.model, f"layer {self.full!r} output"
        near = [m for m in layout_module(model, self.full).modules() if isinstance(m, nn.Linear)]
        near_ids = {id(m) for m in near}
        # elsewhere in the model, a Linear or a torch LayerNorm over the last axis taking this very map (a torchvision
        # Swin's patch embedding ends in a permute and a LayerNorm: at 384 px its 96 x 96 x 96 output passed the size
        # rules, and the next block's norm takes it)
        far = [] if _channels_first_output(site) else [  # (a conv's output is (B, C, H, W) by construction:
            # a Linear or LayerNorm acting on its width, axial mixing, does not make it channels-last)
            m for m in model.modules() if id(m) not in near_ids and (isinstance(m, nn.Linear) or (
                type(m).forward is nn.LayerNorm.forward and tuple(getattr(m, "normalized_shape", ())) == (shape[3],)))]

        def taken(_m: nn.Module, args: Any) -> None:  # this very map, or it after a dropout / norm of the MLP
            if any(a is result or (isinstance(a, torch.Tensor) and a.ndim == 4 and a.shape == result.shape)
                   for a in args):
                self._unwatch()
                check_channels_first(model, self.full, shape, where, linear_io=True)

        def taken_far(_m: nn.Module, args: Any) -> None:  # this very map only
            if any(a is result for a in args):
                self._unwatch()
                check_channels_first(model, self.full, shape, where, linear_io=True)

        def passed(*_: Any) -> None:
            self._unwatch()
            self.checked.add(shape[1:])

        self._watching = [*(m.register_forward_pre_hook(taken) for m in near),
                          *(m.register_forward_pre_hook(taken_far) for m in far), model.register_forward_hook(passed)]

    def _unwatch(self) -> None:
        for h in self._watching:
            h.remove()
        self._watching = []

    def __call__(self, mod: nn.Module, args: Any, out: Any) -> Any:
        apr, full, st = self.apr, self.full, self.state
        active = mod.training and apr.training
        st.count(full, active)
        self._unwatch()  # (a forward pass of a submodule alone never reached the model's end)
        if not active:
            return None
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"layer {full!r} returns a {type(out).__name__}; "
                             f"FeatureAPR needs a feature map (B, C, H, W) or tokens (B, N, D)")
        fresh = out.ndim == 4 and tuple(out.shape[1:]) not in self.checked  # a (B, H, W, C) map would mix channels
        if fresh:
            # a Linear's own 4-D output is channels-last whatever its sizes (it acts on the last axis)
            check_channels_first(st.model, full, tuple(out.shape), f"layer {full!r} output",
                                 linear_io=isinstance(_producer(mod), nn.Linear))
        layout = None
        if out.ndim == 3:  # this call's layout, passed to it (the module is shared by threads); kept on it to read
            grid = st.token_grid()
            if grid is None and st.blocks is not None:  # a Swin's tokens: its window's or block's grid, not a guess
                grid = stated_grid(st.model, full, int(out.shape[1]), st.blocks.seen())
            k = apr.num_prefix_tokens if st.model_k is None else site_prefix_tokens(out.shape[1], st.model_k, grid)
            layout = (grid, k)
            apr.grid, apr.num_prefix_tokens = layout  # the latest call's, to read (the call itself takes layout)
        if apr.generator is not None and not st.warned and (any(m.grad_checkpointing for m in st.switches)
                                                             or _in_backward()):
            # (timm's switch, seen before the first backward; any other checkpointing, torchvision's
            # memory_efficient DenseNet or the user's torch.utils.checkpoint, when its recomputation runs the hook)
            st.warned = True
            warnings.warn("FeatureAPR draws from generator=, which activation checkpointing does not restore: the "
                          "recomputed forward draws other partners, so the gradients belong to another "
                          "recombination; with checkpointing use the global RNG (generator=None, seeded with "
                          "torch.manual_seed)", RuntimeWarning, stacklevel=2)
        try:
            result = apr(out, layout=layout)
        except ValueError as err:  # the layer's name beside the shape FeatureAPR refused
            raise ValueError(f"layer {full!r}: {err}") from None
        if fresh:
            self._watch_linears(result, tuple(out.shape), mod)
        return result


def _elementwise(module: nn.Module) -> bool:
    """A torch activation, dropout, pooling, padding, upsampling or identity: it keeps its input's layout."""
    return isinstance(module, nn.Identity) or (
        type(module).__module__ in ("torch.nn.modules.activation", "torch.nn.modules.dropout",
                                    "torch.nn.modules.pooling", "torch.nn.modules.padding",
                                    "torch.nn.modules.upsampling")
        and not isinstance(module, nn.MultiheadAttention))


def _producer(module: nn.Module) -> nn.Module:
    """The module whose output ``module``'s is: down ``nn.Sequential`` chains (torchvision's ``MLP`` and
    ``Conv2dNormActivation`` are ones) to their last layer that is not elementwise."""
    while isinstance(module, nn.Sequential) and len(module):
        kids = list(module)
        while len(kids) > 1 and _elementwise(kids[-1]):
            kids.pop()
        module = kids[-1]
    return module


#: timm's convolution blocks (a convolution, a norm and an activation, not a Sequential): (B, C, H, W) outputs
_CONV_BLOCKS = ("ConvNormAct", "ConvNormActAa", "ConvBnAct")


def _channels_first_output(module: nn.Module) -> bool:
    """Whether ``module``'s output is a ``(B, C, H, W)`` map by construction: made by a convolution or a batch / group
    norm (after layout-keeping layers), or a timm convolution block (``ConvNormAct``); a module of other layers holding
    a convolution may still permute its output (a hand-written channels-last stem)."""
    made = _producer(module)
    return (isinstance(made, (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm))
            or (type(made).__name__ in _CONV_BLOCKS and type(made).__module__.startswith("timm.")))


class _BlockGrids:
    """The token grid of the latest input of each block around the attached sites of a channels-last token model (a
    timm Swin block's input is ``(B, H, W, C)``), per thread, by forward pre-hooks: its ``input_resolution`` is the
    configured size, not the one a ``dynamic_img_size`` model was given (a 224 x 112 image's grid was read as its
    transpose)."""

    def __init__(self, model: nn.Module, sites: list[str]) -> None:
        blocks = {name: m for full in sites for name in enclosing_names(full)
                  if hasattr(m := model.get_submodule(name), "input_resolution")}
        self._local = threading.local()  # (by name: DataParallel's replicas are other module objects)
        self.hooks = [m.register_forward_pre_hook(_Recorder(self, name)) for name, m in blocks.items()]

    def __getstate__(self) -> dict[str, Any]:  # (pickled with an attached model: hook handles and thread-locals not)
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._local, self.hooks = threading.local(), []

    def record(self, name: str, args: Any) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            if not hasattr(self._local, "grids"):
                self._local.grids = {}
            self._local.grids[name] = (int(x.shape[1]), int(x.shape[2]))

    def seen(self) -> dict[str, tuple[int, int]]:
        return getattr(self._local, "grids", {})


class _Recorder:
    """The forward pre-hook of one block for :class:`_BlockGrids` (an object: an attached model pickles)."""

    def __init__(self, grids: _BlockGrids, name: str) -> None:
        self.grids, self.name = grids, name

    def __call__(self, module: nn.Module, args: Any) -> None:
        self.grids.record(self.name, args)


def _in_backward() -> bool:
    """Whether this call runs inside autograd's backward pass (an activation checkpoint's recomputation)."""
    task = getattr(torch._C, "_current_graph_task_id", None)
    return task is not None and task() != -1


def _declares_nhwc(module: nn.Module) -> bool:
    """Whether ``module`` declares channels-last outputs (timm's Swin: ``output_fmt``)."""
    return str(getattr(module, "output_fmt", "")).upper() == "NHWC"


def _channels_last_model(model: nn.Module) -> bool:
    """Whether ``model`` (or a wrapper's ``.model``) declares channels-last outputs."""
    return any(_declares_nhwc(m) for m in (model, getattr(model, "model", None)) if m is not None)


class _Unwatch:
    """:attr:`_FeatureHook.watch_handle`."""

    def __init__(self, hook: _FeatureHook) -> None:
        self.hook = hook

    def remove(self) -> None:
        self.hook._unwatch()


def _feature_hooks(module: nn.Module) -> list[int]:
    """The ids of ``module``'s forward hooks that :func:`attach` registered."""
    return [i for i, h in module._forward_hooks.items() if isinstance(h, _FeatureHook)]


def detach(model: nn.Module) -> dict[str, FeatureAPR]:
    """Remove every FeatureAPR hook from ``model``'s modules and return them by layer name: for a copy of an
    attached model (``copy.deepcopy``, ``torch.load`` of a pickled model), whose hooks the original's handle does
    not reach. A model without any is returned unchanged (``{}``)."""
    found: dict[str, FeatureAPR] = {}
    for name, module in model.named_modules():
        for i in _feature_hooks(module):
            hook = module._forward_hooks.pop(i)
            hook._unwatch()  # its watch hooks, where a forward pass left them
            found[name] = hook.apr
        for hooks in (module._forward_pre_hooks, module._forward_hooks):  # the call count's hooks on the model
            ours = [i for i, h in hooks.items()
                    if isinstance(getattr(h, "__self__", None), _HookState) or isinstance(h, (PatchGrid, _Recorder))]
            for i in ours:
                del hooks[i]
                module._forward_hooks_always_called.pop(i, None)
    return found
