"""Model registry: ``@register_model``, ``create_model(name, num_classes)``, ``list_models()``.

Builders are registered by the architecture modules; the first lookup imports them all (nothing
runs at ``import aprkit``). ``create_model`` records the architecture name and keyword arguments on
the model (``aprkit_arch``, ``aprkit_kwargs``) so ``save_checkpoint`` can rebuild it exactly.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from .._checks import check_positive_int
from .._lazy import import_plugins
from .._text import nearest_names

__all__ = ["register_model", "create_model", "list_models", "is_model", "tag_model", "MODEL_MODULES"]

Builder = Callable[..., nn.Module]
F = TypeVar("F", bound=Builder)
M = TypeVar("M", bound=nn.Module)

_REGISTRY: dict[str, Builder] = {}

#: modules that register architectures (imported on the first registry lookup)
MODEL_MODULES = (
    "aprkit.models.cifar_resnet",
    "aprkit.models.wrn",
    "aprkit.models.resnet",
    "aprkit.models.allconv",
    "aprkit.models.densenet",
    "aprkit.models.resnext",
    "aprkit.models.gfnet",
    "aprkit.models.scattering",
    "aprkit.models.small_cnn",
)
_loaded = False


def _load_builtin() -> None:
    """Import every module of ``MODEL_MODULES`` once; a broken one raises ``ImportError`` naming it (see
    :func:`aprkit._lazy.import_plugins`) on every lookup until it is fixed."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: an architecture module that looks up the registry while importing must not recurse
    try:
        import_plugins(MODEL_MODULES, "model")
    except BaseException:
        _loaded = False
        raise


def register_model(name: str | None = None) -> Callable[[F], F]:
    """Decorator registering ``builder(num_classes=..., **kwargs) -> nn.Module`` under ``name``.

    ``name`` defaults to the function's name; registering a taken name raises ``ValueError``.
    """

    def deco(fn: F) -> F:
        key = (name or fn.__name__).lower()
        if key in _REGISTRY and _REGISTRY[key] is not fn:
            raise ValueError(f"model name {key!r} is already registered")
        _REGISTRY[key] = fn
        return fn

    return deco


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered model names, optionally filtered by a shell pattern (``"resnet*"``)."""
    _load_builtin()
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern.lower())] if pattern else names


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered aprkit architecture."""
    _load_builtin()
    return isinstance(name, str) and name.lower() in _REGISTRY


def create_model(name: str, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build the registered architecture ``name`` with ``num_classes`` outputs (random weights; default: the
    architecture's own, 10 for the CIFAR networks, 1000 for the ImageNet ones such as ``gfnet_ti``).

    Keyword arguments go to the builder (e.g. ``mean``/``std``, ``drop_rate``). Raises ``ValueError``
    for an unknown name, listing the valid ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    head = {} if num_classes is None else {"num_classes": check_positive_int(num_classes, "num_classes")}
    _load_builtin()
    key = name.lower()
    if key not in _REGISTRY:
        valid = sorted(_REGISTRY)
        raise ValueError(
            f"unknown model {name!r}{nearest_names(key, valid)}; valid names: {', '.join(valid)} "
            "(or 'timm:<name>', 'torchvision:<name>', 'robustbench:<name>' through aprkit.models.load_model)"
        )
    try:
        model = _REGISTRY[key](**head, **kwargs)
    except TypeError as err:
        raise _argument_error(key, head, kwargs, err) from None
    return tag_model(model, key, kwargs)


def _argument_error(key: str, head: dict[str, int], kwargs: dict[str, Any], err: TypeError) -> TypeError:
    """A builder's TypeError about a keyword the caller gave, said in the caller's terms: a name the architecture
    does not take (with a did-you-mean from its class's arguments) or one its name fixes (``depth`` of resnet20)."""
    import inspect
    import re

    text = str(err)
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", text)
    repeated = re.search(r"multiple values for (?:keyword )?argument '(\w+)'", text)
    if repeated is not None and repeated.group(1) in kwargs:
        return TypeError(f"create_model({key!r}): {repeated.group(1)!r} is fixed by the model name {key!r}; choose "
                         f"another registered name instead (aprkit.models.list_models()) ({text})")
    if unexpected is None or unexpected.group(1) not in kwargs:
        return err
    bad = unexpected.group(1)
    try:  # the arguments of the class it builds (on this error path only)
        valid = [n for n in inspect.signature(type(_REGISTRY[key](**head))).parameters
                 if n not in ("self", "num_classes", "args", "kwargs")]
    except Exception:  # noqa: BLE001 - only the suggestion is lost
        valid = []
    hint = f"{nearest_names(bad, valid)}; it takes {', '.join(valid)}" if valid else ""
    out = TypeError(f"create_model({key!r}) takes no argument {bad!r}{hint} ({text})")
    out.argument, out.hint = bad, hint  # type: ignore[attr-defined]  # for load_model's wording of the same error
    return out


def checkpoint_kwargs(arch: str, kwargs: dict[str, Any], state_dict: Any, recorded: bool = True) -> dict[str, Any]:
    """The builder keyword arguments that rebuild the model a checkpoint's ``state_dict`` came from: ``kwargs``
    as saved, completed by the builder's ``checkpoint_kwargs`` hook where an argument's default changed since (the
    phase-collapse net's ``skip``). ``recorded=False``: ``kwargs`` are the caller's, for a plain state_dict that
    records none (the hook raises where the weights fit several networks)."""
    _load_builtin()
    hook = getattr(_REGISTRY.get(str(arch).lower()), "checkpoint_kwargs", None)
    return dict(hook(dict(kwargs), state_dict, recorded)) if hook is not None and state_dict is not None \
        else dict(kwargs)


def canonical_kwargs(arch: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` of ``arch`` in one spelling per network, by the builder's ``canonical_kwargs`` hook (the
    phase-collapse net's ``skip=True`` is ``"lowpass"``), so that comparing two configs (a resume) sees only real
    changes; unchanged for a name that is not registered or has no hook."""
    _load_builtin()
    hook = getattr(_REGISTRY.get(str(arch).lower()), "canonical_kwargs", None)
    return dict(hook(dict(kwargs))) if hook is not None else dict(kwargs)


def tag_model(model: M, arch: str, kwargs: dict[str, Any]) -> M:
    """Record how ``model`` was built (``aprkit_arch``, ``aprkit_kwargs``: what checkpoints save); returns it.
    Arguments the model pins itself (``aprkit_pinned_kwargs``: a resolved default that may change) are recorded
    too, so its checkpoints rebuild it whatever the defaults are then."""
    kwargs = {**dict(kwargs), **dict(getattr(model, "aprkit_pinned_kwargs", None) or {})}
    for attr, value in (("aprkit_arch", arch), ("aprkit_kwargs", dict(kwargs))):
        setattr(model, attr, value)  # plain attributes; nn.Module.__setattr__ is typed for tensors and modules
    return model
