"""The weights fingerprint of a model for result-cache keys (:func:`model_fingerprint`).

The digest covers the module tree as ``repr`` prints it, every module's plain public attributes (NumPy values too),
function attributes, forward hooks, the code of the user's own and aprkit's module classes (every method, and the
helpers of their packages that it names; by code, so the same in every process) and every parameter and buffer by
value; it is remembered per model object until a weight changes. Not seen: state kept in other objects (a config
object, a list of tensors, a dict with other than string keys, submodules in a plain list) and code of other packages
than the model's own, aprkit and the versioned model libraries (a helper from NumPy or einops): evaluate into another
folder, or with ``resume=False``, after changing such state.
"""

from __future__ import annotations

import functools
import hashlib
import re
import types
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["model_fingerprint", "package_version", "MODEL_PACKAGES"]

#: per model object: (signature of its weights' state, full fingerprint) of the last :func:`model_fingerprint`
_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def model_fingerprint(model: nn.Module, length: int = 16, *, reuse: bool = True) -> str:
    """Hex digest of everything in ``model`` that its outputs depend on: the module tree as ``repr`` prints it
    (submodule types and settings such as a preprocessing wrapper's resize, crop and interpolation; memory addresses
    are masked), every module's public attributes that are plain values (numbers, strings, and lists, tuples and
    dicts of them, e.g. a temperature or a mean), NumPy scalars and arrays (by value), functions (``self.act =
    torch.tanh``; Python functions by name and code) or tensors (by value, like the weights), the code of the user's
    own and aprkit's module classes (:func:`_class_code`: every method and the helpers of the same package it calls;
    not torch's; for classes of torchvision, timm, kornia and robustbench the installed package's version, which
    ``results.json`` records too), its forward (pre-)hooks (an observer hook
    counts too: the fingerprint cannot tell it from a test-time flip), and every parameter and buffer, non-persistent
    ones too (e.g. a normalisation's mean and std): names, dtypes, shapes and values. Keep counters that change in
    ``forward`` in ``_private`` attributes, else no result is reused.

    Hashing every weight takes a while for a large model (0.16 s for WRN-28-10 on a CPU), so the digest is remembered
    per model object with a signature of its state: the tree's text and each tensor's storage address, version counter,
    shape, strides, dtype and device. Every in-place change through autograd-visible tensors (an optimizer step,
    ``load_state_dict``, ``copy_`` under ``no_grad``) bumps the version counter and a replaced tensor has a new address,
    so the value is hashed again. PyTorch does not version writes through ``param.data`` (``p.data.copy_(...)``, as EMA
    helpers swap weights in): after such a write pass ``reuse=False``; ``evaluate`` and ``layer_sweep`` hash afresh once
    per call.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from aprkit.models.normalize import unwrap_model

    model = unwrap_model(model)  # DDP / DataParallel / torch.compile wrappers: the same weights, the same digest (DDP
    # keeps attributes that change after a forward pass and differ per rank)
    state, tree = _model_state(model), _structure(model)
    sig = _state_signature(model, state, tree)
    if reuse and sig is not None:
        known = _FINGERPRINTS.get(model)
        if known is not None and known[0] == sig:
            return known[1][:length]
    digest = _hash_state(model, state, tree)
    if sig is not None:
        _FINGERPRINTS[model] = (sig, digest)
    return digest[:length]


_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


_PLAIN = (bool, int, float, str, type(None))


def _plain(value: Any, depth: int = 0) -> bool:
    """Numbers, strings and None, and non-empty lists, tuples and string-keyed dicts of them (nested a few levels; an
    empty container is often a cache that ``forward`` fills, e.g. LeViT's attention-bias cache)."""
    if isinstance(value, _PLAIN):
        return True
    if depth > 4:
        return False
    if isinstance(value, (tuple, list)):
        return (bool(value) or isinstance(value, tuple)) and all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return bool(value) and all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _immutable(value: Any) -> bool:
    """Numbers, strings, None and tuples of them: values a function may hold that ``forward`` cannot change."""
    return isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(_immutable(v) for v in value))


def _const_text(c: Any) -> str:
    """A code constant as text that is the same in every process: nested code by content (not by file and line),
    frozensets sorted (their order follows ``PYTHONHASHSEED``)."""
    if isinstance(c, types.CodeType):
        return _code_digest(c)
    if isinstance(c, frozenset):
        return "frozenset(" + repr(sorted(map(_const_text, c))) + ")"
    if isinstance(c, tuple):
        return "(" + ",".join(map(_const_text, c)) + ")"
    return _ADDRESS.sub("0x?", repr(c))


def _code_digest(code: types.CodeType) -> str:
    """A hash of what ``code`` computes: its bytecode, names and constants (nested code recursed); its file name and
    line numbers are left out."""
    h = hashlib.sha1(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    h.update("|".join(map(_const_text, code.co_consts)).encode())
    return h.hexdigest()[:12]


def _value_text(v: Any) -> str:
    return _const_text(v) if _immutable(v) else type(v).__name__


def _callable_id(f: Any) -> str | None:
    """What a function attribute or hook computes, the same text in every process: its qualified name, for Python
    functions also a hash of its code and its immutable closure values and defaults (values a forward pass may change,
    such as a list an observer hook appends to, count by type only); for callable objects their class and plain
    public attributes. ``None`` for anything else."""
    if isinstance(f, functools.partial):
        inner = _callable_id(f.func)
        args = [_value_text(a) for a in f.args]
        kwargs = {k: _value_text(v) for k, v in sorted(f.keywords.items())}
        return f"partial({inner}, {args!r}, {kwargs!r})"
    if isinstance(f, types.MethodType):
        owner = f.__self__
        state = "" if isinstance(owner, nn.Module) else repr(
            {k: _value_text(v) for k, v in sorted(getattr(owner, "__dict__", {}).items()) if not k.startswith("_")})
        return f"{type(owner).__qualname__}{state}.{_callable_id(f.__func__)}"
    if isinstance(f, types.FunctionType):
        closure = [_value_text(c.cell_contents) for c in (f.__closure__ or ())]
        defaults = [_value_text(d) for d in (f.__defaults__ or ())]
        kwdefaults = {k: _value_text(v) for k, v in sorted((f.__kwdefaults__ or {}).items())}
        extra = hashlib.sha1(repr((closure, defaults, kwdefaults)).encode()).hexdigest()[:8]
        return f"{f.__module__}.{f.__qualname__}#{_code_digest(f.__code__)}{extra}"
    if isinstance(f, types.BuiltinFunctionType):  # torch.tanh, math.exp, a C method
        return f"{getattr(f, '__module__', None)}.{getattr(f, '__qualname__', repr(f))}"
    if callable(f) and not isinstance(f, (nn.Module, type)):
        attrs = {k: v for k, v in sorted(vars(f).items()) if not k.startswith("_") and _plain(v)} \
            if hasattr(f, "__dict__") else {}
        return f"{type(f).__module__}.{type(f).__qualname__}({attrs!r})"
    return None


#: the model libraries, whose classes' code is not hashed: their installed version is part of the fingerprint instead
#: (a release that changes a model's code changes the key); torch's modules are not hashed either
MODEL_PACKAGES = ("torchvision", "timm", "kornia", "robustbench")
_CODE_SKIPPED = frozenset({"torch", *MODEL_PACKAGES})


def package_version(name: str) -> str | None:
    """The installed version of package ``name`` (its ``__version__`` when imported, else its distribution's), or
    ``None`` when it is not installed."""
    import sys
    from importlib import metadata

    mod = sys.modules.get(name)
    version = getattr(mod, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _array_text(value: Any) -> str | None:
    """A NumPy scalar or array attribute (``self.t = np.float32(2.0)``, an index array) as text: dtype, shape and a
    digest of its bytes; ``None`` for anything else."""
    if not isinstance(value, (np.generic, np.ndarray)):
        return None
    arr = np.ascontiguousarray(value)
    if arr.dtype.hasobject:
        return None
    return f"ndarray({arr.dtype},{arr.shape}):{hashlib.sha1(arr.tobytes()).hexdigest()[:16]}"


def _functions_in(value: Any) -> list[types.FunctionType]:
    """The Python functions a class attribute holds: a method, a static or class method, a property's accessors."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset) if isinstance(f, types.FunctionType)]
    return [value] if isinstance(value, types.FunctionType) else []


def _code_names(code: types.CodeType) -> set[str]:
    """The global and attribute names ``code`` and the code nested in it (lambdas, comprehensions) use."""
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _code_names(c)
    return names


def _root(obj: Any) -> str:
    """The top-level package of a class, function or module (``""`` when it names none)."""
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    return str(name or "").split(".")[0]


#: at most this many functions are followed from one class (a guard against walking a whole library)
_MAX_FUNCTIONS = 2000


def _class_code(cls: type) -> str | None:
    """A hash of the code ``cls`` runs when it is the user's own or aprkit's (not a class of torch or a model library,
    whose version stands in): every method, static or class method and property of the classes in its MRO outside
    those packages, and, followed transitively, the functions and helper classes of the same packages (or aprkit's)
    that this code names as globals or as attributes of such a module (``helpers.scale(x)``). An edited
    ``forward_features`` or module-level helper is other code, as is an aprkit upgrade that changes a model."""
    roots = {_root(k) for k in cls.__mro__} - _CODE_SKIPPED - {"builtins"}
    if not roots:
        return None
    roots.add("aprkit")
    todo = [(f"{k.__qualname__}.{name}", f) for k in cls.__mro__ if _root(k) in roots
            for name, v in sorted(vars(k).items()) for f in _functions_in(v)]
    parts: set[str] = set()
    seen: set[types.FunctionType] = set()
    while todo and len(seen) < _MAX_FUNCTIONS:
        label, fn = todo.pop()
        if fn in seen:
            continue
        seen.add(fn)
        parts.add(f"{label}#{_code_digest(fn.__code__)}")
        names = sorted(_code_names(fn.__code__))
        for name in names:
            target = fn.__globals__.get(name)
            if isinstance(target, types.ModuleType):  # ``helpers.scale(x)``: the module's attributes this code names
                found = [getattr(target, n, None) for n in names] if _root(target) in roots else []
            else:
                found = [target]
            for obj in found:
                if isinstance(obj, types.FunctionType) and _root(obj) in roots:
                    todo.append((f"{obj.__module__}.{obj.__qualname__}", obj))
                elif isinstance(obj, type) and _root(obj) in roots and not issubclass(obj, nn.Module):
                    todo += [(f"{obj.__module__}.{obj.__qualname__}.{n}", f)  # a helper class, an autograd Function
                             for n, v in sorted(vars(obj).items()) for f in _functions_in(v)]
    return hashlib.sha1("\n".join(sorted(parts)).encode()).hexdigest()[:12]


def _structure(model: nn.Module) -> str:
    """The module tree as ``repr`` prints it plus every module's plain public attributes (numbers, strings, and lists,
    tuples and dicts of them: a temperature ``self.t = 1.5`` or a mean ``[0.5, 0.5, 0.5]`` that no ``extra_repr``
    shows; ``training`` aside), its function attributes (``self.act = torch.tanh``) and its forward (pre-)hooks, with
    memory addresses (``0x7f...`` of a function or object in some ``extra_repr``) masked so that the text is the same
    in every process."""
    lines = [repr(model)]
    codes: dict[type, str | None] = {}  # per class, once per call (a ResNet repeats a few classes)
    for name, mod in model.named_modules():
        for k, v in sorted(vars(mod).items()):
            if k.startswith("_") or k == "training" or isinstance(v, (torch.Tensor, nn.Module)):
                continue  # tensors: hashed with the weights (_model_state)
            text = repr(v) if _plain(v) else _array_text(v) or _callable_id(v)
            if text is not None:
                lines.append(f"{name}.{k}={text}")
        cls = type(mod)
        if cls not in codes:
            codes[cls] = _class_code(cls)
        if codes[cls] is not None:
            lines.append(f"{name}.code#{codes[cls]}")
        for kind in ("_forward_pre_hooks", "_forward_hooks"):
            for hook in getattr(mod, kind, {}).values():
                lines.append(f"{name}.{kind}={_callable_id(hook)}")
    used = {type(m).__module__.split(".")[0] for m in model.modules()}
    lines += [f"{pkg}=={package_version(pkg)}" for pkg in MODEL_PACKAGES if pkg in used]
    return _ADDRESS.sub("0x?", "\n".join(lines))


def _model_state(model: nn.Module) -> dict[str, Any]:
    """``state_dict`` (the tensors themselves, so that addresses and versions identify them) plus the
    non-persistent buffers, which ``state_dict`` leaves out but the forward pass uses."""
    state: dict[str, Any] = dict(model.state_dict(keep_vars=True))
    for name, buf in model.named_buffers():
        if name not in state:
            state[f"{name} (non-persistent)"] = buf
    for name, mod in model.named_modules():  # tensors kept as plain attributes (a gain, a mean), not registered
        for k, v in sorted(vars(mod).items()):
            if isinstance(v, torch.Tensor) and not k.startswith("_"):
                state[f"{name + '.' if name else ''}{k} (attribute)"] = v
    return state


def _state_signature(model: nn.Module, state: Mapping[str, Any], tree: str) -> tuple | None:
    """What identifies the current values of ``state`` without reading them, or None when a tensor has no
    version counter (made in ``inference_mode``: then the values are hashed every time)."""
    sig: list[Any] = [type(model).__name__, tree]
    for name, t in state.items():
        if isinstance(t, torch.Tensor):
            if t.is_inference():
                return None
            sig.append((name, t.data_ptr(), t._version, t.shape, t.stride(), t.dtype, t.device))
        else:
            sig.append((name, repr(t)))
    return tuple(sig)


def _hash_state(model: nn.Module, state: Mapping[str, Any], tree: str) -> str:
    """The full sha256 hex digest of ``model``'s class name, module tree ``tree`` (:func:`_structure`) and ``state``
    (every name, dtype, shape and value)."""
    h = hashlib.sha256(type(model).__name__.encode())
    h.update(tree.encode())
    for name, t in state.items():
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            t = t.detach().contiguous().cpu()  # a channels_last weight reordered where it lies (on a GPU: there)
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")  # its buffer, no copy
        else:
            h.update(repr(t).encode())
    return h.hexdigest()
