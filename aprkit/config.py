"""One config loader for ``aprkit train`` and ``aprkit eval``.

Both read YAML mappings with the same semantics:

* ``base:`` (a path, or list of paths, relative to the file) is merged underneath the file; several files
  merge left to right;
* strings may use ``$VAR``, ``${VAR}`` and ``${VAR:-default}`` (expanded when the file is read; an unset
  variable without a default stays as written);
* ``key=value`` / ``section.key=value`` overrides (``--set``) are parsed as YAML (``5``, ``true``, ``[1, 2]``,
  ``null``; anything else stays a string) and win over the files;
* every key is checked against a schema: unknown keys raise ``ValueError`` with a did-you-mean and the valid
  keys, values are coerced to the annotated type or raise ``TypeError`` naming the key and the expected type.

The schemas live with their users (``aprkit.train.config``, ``aprkit.eval.engine.config``).
"""

from __future__ import annotations

import collections.abc
import copy
import math
import os
import re
import types
import typing
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from ._text import comma_items, nearest_names

__all__ = [
    "expand_env",
    "null_word",
    "merge",
    "read_bases",
    "read_config_files",
    "parse_override",
    "apply_overrides",
    "coerce",
    "describe_type",
    "unknown_key",
]

_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


#: what a text setting given on the command line or by ${X:-null} reads as "none" (YAML's null words)
_NULL_WORDS = ("null", "Null", "NULL", "~")


def null_word(value: Any) -> bool:
    """Whether ``value`` is text that YAML reads as none (``null``, ``~``, ...): what a flag or ``--set`` value so
    written means."""
    return isinstance(value, str) and value.strip() in _NULL_WORDS


def expand_env(value: Any) -> Any:
    """Expand ``$VAR``, ``${VAR}``, ``${VAR:-default}`` in a string, or in every string of a list/mapping.

    An unset (or empty) variable takes the default; without one it stays as written, with a warning naming it for
    ``${VAR}`` (a path that holds it would fail later with no word of the variable). A string that expands to a
    null word (``${X:-null}``) is ``None``.
    """
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            found = os.environ.get(m.group(1) or m.group(3))
            if found:
                return found
            if m.group(2) is not None:
                return m.group(2)
            if m.group(1):
                warnings.warn(f"${{{m.group(1)}}} in {value!r} is not set or empty (and has no default, "
                              f"${{{m.group(1)}:-DEFAULT}}): it stays as written", RuntimeWarning, stacklevel=2)
            return m.group(0)

        out = _ENV.sub(sub, value)
        # ${X:-null} (or X set to a null word) is YAML's none, as the word written unquoted in the file reads
        return None if out != value and null_word(out) else out
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if isinstance(value, Mapping):
        return {k: expand_env(v) for k, v in value.items()}
    return value


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in ``over`` replaces ``base``; an empty section
    (``None`` over a mapping: ``data:`` with every line commented out) keeps the base's mapping."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if value is None and isinstance(out.get(key), Mapping):
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_LOADER: Any = None


def _unique_keys(loader: Any, node: Any, deep: bool = False) -> Any:
    """A mapping whose keys are all different: PyYAML kept the last of two equal keys (a second ``r:`` under
    ``models:`` replaced the first, ``1:`` and ``true:`` are one Python key), silently. Keys merged in with ``<<``
    may be overridden, as YAML allows."""
    import yaml

    first: dict[Any, Any] = {}
    start, end = node.start_mark.index, node.end_mark.index
    for key_node, _ in node.value:
        # merge keys, and keys merged in already (an anchor that PyYAML expanded before reading it): not this text's
        # (a plain "=" is PyYAML's value key, retagged as a string only by construct_mapping)
        if key_node.tag in ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value") \
                or not start <= key_node.start_mark.index < end:
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            earlier = first.setdefault(key, key_node)
        except TypeError:  # an unhashable key: construct_mapping names it
            continue
        if earlier is not key_node:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"found the key {key_node.value!r} twice (first at line {earlier.start_mark.line + 1}"
                + ("" if earlier.value == key_node.value else f" as {earlier.value!r}, the same key") + ")",
                key_node.start_mark)
    return loader.construct_mapping(node, deep=deep)


def _yaml_load(stream: Any) -> Any:
    """``yaml.safe_load`` that also reads ``5e-4`` and ``1E3`` as numbers: YAML 1.1 (PyYAML) wants a dot and a signed
    exponent and kept them as strings, so ``weight_decay: 5e-4`` was refused; YAML 1.2 and JSON read them as floats."""
    global _LOADER
    import yaml

    if _LOADER is None:
        class Loader(yaml.SafeLoader):
            pass

        Loader.add_implicit_resolver(  # (the dotted forms keep PyYAML's own resolver)
            "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
            list("-+0123456789"))
        Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_keys)
        _LOADER = Loader
    return yaml.load(stream, Loader=_LOADER)  # noqa: S506 - a SafeLoader subclass


#: a function that brings one file's settings to their canonical form before they are merged with another's
Normalize = Callable[[dict[str, Any], str], dict[str, Any]]


def _read_yaml(path: Path, seen: tuple[Path, ...] = (), normalize: Normalize | None = None,
               kind: str | None = None) -> dict[str, Any]:
    import yaml

    path = path.resolve()
    if path in seen:
        raise ValueError(f"config inheritance cycle: {' -> '.join(map(str, seen + (path,)))}")
    if path.is_dir():
        raise IsADirectoryError(f"config {path} is a folder; expected a YAML file")
    if not path.is_file():
        where = f" (named as base: in {seen[-1]})" if seen else ""
        shipped = "configs" in path.parts and not seen  # a configs/<kind>/... name no shipped config has
        hint = ("; the shipped configs are listed by aprkit train --list-configs and aprkit eval --list-configs "
                "(give one by its name)" if shipped else "")
        raise FileNotFoundError(f"config file not found: {path}{where}; expected a YAML file{hint}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = _yaml_load(fh)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"config file {path} is not valid YAML{at}: {problem}") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {path} is not a text (UTF-8) YAML file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TypeError(
            f"config file {path} must hold a mapping of settings (key: value lines), got {type(data).__name__}"
        )
    bases = _read_bases(data.pop("base", None), path.parent, f"config file {path}", seen + (path,), normalize, kind)
    return merge(bases, normalize(data, f"config file {path}") if normalize is not None else data)


def _read_bases(bases: Any, parent: Path, where: str, seen: tuple[Path, ...] = (),
                normalize: Normalize | None = None, kind: str | None = None) -> dict[str, Any]:
    """The files a ``base:`` value names (a path or a list of them, relative to ``parent``; with ``kind``, a name
    no file there has may be a shipped config's: :func:`aprkit.configs.shipped`), merged left to right; an empty value
    names none."""
    if not bases:
        return {}
    if not isinstance(bases, (str, os.PathLike, list, tuple)):
        raise TypeError(f"{where}: 'base' must be a path or a list of paths, got {bases!r}")
    merged: dict[str, Any] = {}
    for b in [bases] if isinstance(bases, (str, os.PathLike)) else bases:  # ${VAR} and ~/ too, as in every string
        name = str(expand_env(os.fspath(b) if isinstance(b, os.PathLike) else str(b)))
        name = os.path.expanduser(name) if name == "~" or name.startswith("~/") else name  # not "~old.yaml"
        target = parent / name
        if kind is not None and not target.is_file():
            from .configs import shipped

            target = shipped(name, kind) or target
        merged = merge(merged, _read_yaml(target, seen, normalize, kind))
    return merged


def read_bases(bases: Any, relative_to: str | os.PathLike[str] = ".", where: str = "config mapping") -> dict[str, Any]:
    """What a ``base:`` value of a config mapping built in code names (paths relative to ``relative_to``, the
    working folder by default), read as a file's ``base:`` is: merged left to right, environment variables
    expanded. ``where`` names the mapping in errors."""
    return expand_env(_read_bases(bases, Path(relative_to), where))


def read_config_files(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
                      normalize: Normalize | None = None, kind: str | None = None) -> dict[str, Any]:
    """Read YAML file(s) (``base:`` resolved, merged left to right, environment variables expanded). ``normalize``
    (the mapping, where it was read) brings each file's own settings to one form before any merge, so that a setting
    two files spell differently is decided by their order. With ``kind`` (``"train"``, ``"eval"``) a file may also
    be a shipped config's name (:func:`aprkit.configs.find`)."""
    from .configs import find

    items = [] if paths is None else [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    data: dict[str, Any] = {}
    for p in items:
        data = merge(data, _read_yaml(find(p, kind) if kind is not None else Path(p), normalize=normalize, kind=kind))
    return expand_env(data)


def is_text_type(tp: Any) -> bool:
    """Whether annotation ``tp`` takes text and no number, bool, list or mapping (``str``, ``str | None``,
    ``str | Path``): a setting whose value on the command line is the text as typed."""
    args = [a for a in (typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,))
            if a is not type(None)]
    # plain classes only: a list or mapping type (``str | Sequence[str]``) reads YAML lists as typed
    return str in args and all(isinstance(a, type) and a not in (bool, int, float) for a in args)


def parse_override(item: str, text: bool = False) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> ``(["a", "b"], parsed value)``; the value is YAML (``abc`` stays a string). ``text``: a
    text setting, whose value is the text as typed (YAML read ``0012`` as 10, ``2024_01_05`` as 20240105, ``yes`` as
    True and ``run #2`` as ``run``), unless quoted or a null word."""
    import yaml

    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"override {item!r} must look like key=value (or section.key=value)")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ValueError(f"override {item!r} has an empty key part; expected key=value or section.key=value")
    if text and not raw.strip().startswith(("'", '"')):
        return parts, expand_env(None if null_word(raw) else raw.strip())
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, expand_env(value)


def _check_override_key(item: str, parts: list[str]) -> None:
    """``base`` names the files a config file builds on: no setting an override can give."""
    if parts == ["base"]:
        raise ValueError(f"override {item!r}: base: belongs in a config file (the files it builds on); give those "
                         "files with --config instead (several --config files merge left to right)")


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str],
                    sections: Collection[str] = (), text_keys: Collection[str] = ()) -> dict[str, Any]:
    """Apply ``key=value`` / ``section.key=value`` strings to a copy of ``data``; ``SECTION=null`` for one of
    ``sections`` (groups of settings, not values) is refused: it would reset the section's every key. The keys
    ``text_keys`` (dotted) take their values as typed (:func:`parse_override`)."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        parts, value = parse_override(item, text=str(item).split("=", 1)[0].strip() in text_keys)
        _check_override_key(item, parts)
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section (it holds {nxt!r})")
            node = nxt
        if value is None and len(parts) == 1 and parts[0] in sections:  # a whole section
            raise ValueError(f"override {item!r} would empty the section {parts[0]!r}; set its keys instead "
                             f"({parts[0]}.KEY=VALUE)")
        node[parts[-1]] = value
    return out


def unknown_key(key: str, valid: Sequence[str], where: str = "the top level", extra: str = "") -> ValueError:
    """The error for an unknown config key: did-you-mean plus the valid keys of ``where``."""
    short = key.rsplit(".", 1)[-1]
    return ValueError(
        f"unknown config key {key!r}{nearest_names(short, list(valid))}; valid keys in {where}: "
        f"{', '.join(valid)}{extra}"
    )


def describe_type(tp: Any) -> str:
    """A readable name for an annotation (``int or null``, ``'a' | 'b'``, ``list of int``)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return "anything"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    if origin in (list, tuple, collections.abc.Sequence):
        args = typing.get_args(tp)
        return f"list of {describe_type(args[0])}" if args else "list"
    if origin in (dict, collections.abc.Mapping):
        return "mapping"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _scalar(text: str) -> Any:
    """``text`` read as a YAML scalar (``"3"`` -> 3, ``"false"`` -> False), else ``text`` itself: values that
    environment variables expand into (``epochs: ${EPOCHS:-2}``) or that were quoted."""
    import yaml

    try:
        value = _yaml_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float)) else text


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or an override) to the annotation ``tp`` or raise naming ``key``.

    ``int`` accepts whole floats, ``float`` accepts ints, numbers and booleans accept text that YAML reads as one
    (what ``${VAR}`` expands to), a scalar becomes a one-element list, comma-separated text a list of numbers; classes
    (``torch.device``, ``Path``, ...) accept their instances; ``Any`` accepts everything.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        # a null word as text is none where text is no value (``epochs: 'null'``); a text setting keeps it as
        # written (a quoted 'null' in a file, a Config made in code), expand_env turns ${X:-null} into None
        if type(None) in args and (value is None or (value in _NULL_WORDS and not is_text_type(tp))):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except (TypeError, ValueError):
                continue
        hint = " (YAML writes none as null or ~)" if type(None) in args and value in ("None", "none") else ""
        raise TypeError(f"config key {key!r} must be {describe_type(tp)}, got {value!r}{hint}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ValueError(
                f"config key {key!r} must be one of {', '.join(map(repr, choices))}, got {value!r}"
                + (nearest_names(value, [str(c) for c in choices]) if isinstance(value, str) else "")
            )
        return value
    if origin in (list, tuple, collections.abc.Sequence):
        args = typing.get_args(tp)
        if isinstance(value, str) and args and args[0] in (int, float) and "," in value:
            value = comma_items(value)  # "1,3" as the flags take it (--severities 1,3)
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool) and origin is not tuple:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"config key {key!r} must be {describe_type(tp)}, got {value!r}")
        return [coerce(v, args[0], f"{key}[{i}]") if args else v for i, v in enumerate(value)]
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise TypeError(f"config key {key!r} must be a mapping (key: value), got {value!r}")
        return dict(value)
    if tp in (bool, int, float) and isinstance(value, str):  # "${EPOCHS:-2}" expands to text: read it as YAML
        value = _scalar(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"config key {key!r} must be a bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or int(value) != value:
            raise TypeError(f"config key {key!r} must be an int, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"config key {key!r} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (Mapping, list, tuple, set)) or value is None:
            raise TypeError(f"config key {key!r} must be a string, got {value!r}")
        return str(value)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise TypeError(f"config key {key!r} must be {describe_type(tp)}, got {value!r}")
    raise TypeError(f"config key {key!r}: unsupported type {tp!r}")  # pragma: no cover
