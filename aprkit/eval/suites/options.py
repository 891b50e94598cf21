"""Which suite reads which option: the suite registry looked up by name, unknown options reported with the
suite that would read them (or a did-you-mean), and each suite's ``Options`` parsed from the flat options of a
run (the convention is in :mod:`.base`); used by ``evaluate`` and by the eval config loader."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ..._text import nearest_names
from . import load_suites
from .base import SuiteOptions, flat_options

__all__ = ["suite_registry", "option_error", "suites_without", "check_suite_options", "parse_suite_options",
           "check_data_mapping"]


def suite_registry(names: Sequence[str]) -> dict[str, Any]:
    """The loaded suite registry; ``ValueError`` (did-you-mean) for an unknown name in ``names`` or for none."""
    registry = load_suites()
    for n in names:
        if n not in registry:
            raise ValueError(f"unknown suite {n!r}{nearest_names(str(n), list(registry))}; "
                             f"available: {', '.join(sorted(registry))}")
    if not names:
        raise ValueError("no suite given; choose from: " + ", ".join(sorted(registry)))
    return registry


def option_error(
    key: str, suites: Sequence[str], registry: Mapping[str, Any], valid_keys: Sequence[str] = ()
) -> ValueError:
    """The error for ``key``: the suite that reads it when that one is not selected, else a did-you-mean
    over every suite option (and ``valid_keys``, the other config keys, when given)."""
    owners = [name for name, cls in sorted(registry.items()) if key in cls.option_names()]
    if owners:
        who = (f"suite {owners[0]!r}, which is not selected" if len(owners) == 1 else
               f"suites {' and '.join(map(repr, owners))}, none of which is selected")
        return ValueError(f"option {key!r} is read by {who} (suites: {', '.join(suites)}); add --suite {owners[0]} "
                          "or remove the option")
    selected = sorted({o for s in suites for o in registry[s].option_names()})
    every = sorted({o for cls in registry.values() for o in cls.option_names()} | set(valid_keys))
    what = "config key" if valid_keys else "suite option"
    keys = f"evaluate's settings ({', '.join(valid_keys)}) and " if valid_keys else ""
    return ValueError(
        f"unknown {what} {key!r}{nearest_names(key, every)}; valid: {keys}the options of the selected suites "
        f"({', '.join(suites)}): {', '.join(selected) or 'none'}"
    )


def suites_without(option: str) -> frozenset[str]:
    """The registered suites that read no ``option`` (``"limit"``: the cue-conflict suites, which score every
    stimulus)."""
    return frozenset(name for name, cls in load_suites().items() if option not in cls.option_names())


def check_suite_options(suites: str | Sequence[str], options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` as flat keys (:func:`~.base.flat_options`); ``ValueError`` for a key that none of ``suites``
    reads (naming the suite that would)."""
    names = [suites] if isinstance(suites, str) else list(suites)
    registry = suite_registry(names)
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a mapping of suite option names to values, got {type(options).__name__}")
    flat = flat_options(options)
    selected = {o for s in names for o in registry[s].option_names()}
    for key in flat:
        if key not in selected:
            raise option_error(str(key), names, registry)
    return flat


def parse_suite_options(suites: Sequence[str], options: Mapping[str, Any]) -> dict[str, SuiteOptions]:
    """Suite name -> its ``Options`` parsed from the flat ``options`` (a bad value raises naming key and suite)."""
    registry = suite_registry(suites)
    return {s: registry[s].Options.parse(options, s) for s in suites}


def as_parsed(options: Mapping[str, Any], parsed: Mapping[str, SuiteOptions]) -> dict[str, Any]:
    """The flat ``options`` with each list a suite's ``Options`` put in one form (``"fog,contrast"`` and
    ``["contrast", "fog"]`` both as the corruptions the suite evaluates, in its order) as that suite reads it: what the
    run records and keys, so that the same settings given in another order or spelling are the same settings.
    Values no suite turns into a non-empty list of names or numbers are kept as given."""
    out = dict(options)
    for key in options:
        for opts in parsed.values():
            value = getattr(opts, key, None) if key in type(opts).model_fields else None
            if isinstance(value, list) and value and all(isinstance(v, (str, int)) for v in value):
                out[key] = list(value)
                break
    return out


def check_data_mapping(data: Any, suites: Sequence[str], add_hint: str = "add {suite!r} or 'default'",
                       key_label: str = "data mapping key {key!r}") -> None:
    """A per-suite data mapping (``{suite name: data, "default": data}``) must give every suite in ``suites`` its data
    and name only suites (a misspelt key would silently hand that suite the default data). ``add_hint`` says how to
    add the missing entry (formatted with ``suite``), ``key_label`` names a key (formatted with ``key``)."""
    if not isinstance(data, Mapping):
        return
    registry = load_suites()
    for key in data:
        if key != "default" and key not in registry:
            raise ValueError(key_label.format(key=key) + f": not a suite{nearest_names(str(key), list(registry))}; the "
                             f"data mapping takes 'default' and suite names ({', '.join(sorted(registry))})")
    missing = [s for s in suites if s not in data and "default" not in data]
    if missing:
        raise ValueError(f"no data for suite {missing[0]!r}: the data mapping has {', '.join(map(repr, data))}; "
                         + add_hint.format(suite=missing[0]))
    unread = [k for k in data if k != "default" and k not in suites]
    if unread:  # (a config's mapping for more suites than a run selects: a word, as for their options)
        warnings.warn(f"the data of {', '.join(map(repr, unread))} is not read: that suite is not selected (suites: "
                      f"{', '.join(suites)}); select it (--suite) to evaluate it", RuntimeWarning, stacklevel=3)
