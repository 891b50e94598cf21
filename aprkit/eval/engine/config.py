"""``aprkit eval`` settings: the shared loader of :mod:`aprkit.config` with :func:`aprkit.eval.evaluate`'s schema.

Valid top-level keys are the parameters of ``evaluate`` (read from its signature, values coerced to their
annotated types), ``models`` (a mapping name -> model spec, or name ->
``{model, checkpoint, kwargs}``, kwargs the builder's arguments), the aliases
``suites`` (for ``suite``) and ``out`` (for ``out_dir``), and the flat option keys of the selected suites (the
fields of their ``Options``, see :mod:`aprkit.eval.suites.base`), which are collected under ``options`` and
parsed there. Anything else is an error with a did-you-mean, and so is an option that only a suite that is
not selected reads.
"""

from __future__ import annotations

import inspect
import os
import typing
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ...config import (
    apply_overrides,
    coerce,
    is_text_type,
    merge,
    null_word,
    parse_override,
    read_config_files,
    unknown_key,
)
from ..suites import load_suites
from ..suites.base import flat_options
from ..suites.options import check_data_mapping, check_suite_options, option_error, parse_suite_options, suite_registry
from .models import check_model_kwargs

__all__ = ["ALIASES", "eval_schema", "check_suite_options", "eval_settings", "load_eval_config"]

#: config spellings -> ``evaluate`` parameter names
ALIASES = {"suites": "suite", "out": "out_dir"}
#: keys of one ``models:`` entry given as a mapping
_MODEL_ENTRY_KEYS = ("model", "checkpoint", "kwargs")


def eval_schema() -> dict[str, Any]:
    """Key -> annotated type: every parameter of ``evaluate`` plus ``models``."""
    from .runner import evaluate

    hints = typing.get_type_hints(evaluate)
    schema = {name: hints.get(name, Any) for name in inspect.signature(evaluate).parameters}
    schema["models"] = Mapping[str, Any]
    return schema


def _canonical(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = ALIASES.get(key, key)
        if name in out:
            raise ValueError(f"{where} sets both {name!r} and its alias {key!r}; keep one")
        out[name] = value
    return out


def _flat(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One source's settings (a file, the flags) in one form: aliases resolved and an ``options:`` mapping's suite
    options lifted to the top level, as the shipped configs write them, so that a later source's ``options.knn_k``
    overrides an earlier one's ``knn_k`` (and the reverse) instead of the top-level form always winning."""
    out = _canonical(data, where)
    options = out.pop("options", None)
    if options is None:
        return out
    if not isinstance(options, Mapping):
        raise TypeError(f"{where}: 'options' must be a mapping of suite options, got {type(options).__name__}")
    run_settings = set(eval_schema()) - {o for cls in load_suites().values() for o in cls.option_names()}
    for key, value in options.items():
        if key in run_settings:  # a run setting (seed, models, ...) is no suite option
            raise ValueError(f"{where}: options.{key} is a setting of the run, not a suite option; give it at the "
                             f"top level ({key}: ...)")
        if key in out:
            raise ValueError(f"{where} sets {key!r} both at the top level and under options; keep one")
        out[str(key)] = value
    return out


def _check_models(models: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, entry in models.items():
        entry = dict(entry) if isinstance(entry, Mapping) else {"model": entry}
        for key in entry:
            if key not in _MODEL_ENTRY_KEYS:
                raise unknown_key(f"models.{name}.{key}", _MODEL_ENTRY_KEYS, f"models.{name}")
        if not isinstance(entry.get("model"), str):
            raise TypeError(f"config key 'models.{name}' must be a model spec string or "
                            f"{{model: SPEC, checkpoint: FILE, kwargs: {{...}}}}, got {entry!r}")
        if "kwargs" in entry:
            entry["kwargs"] = check_model_kwargs(entry["kwargs"], entry["model"], f"models.{name}.kwargs")
        out[str(name)] = entry
    return out


def _replace_model(data: dict[str, Any], model: Any, given: Mapping[str, Any], source: str) -> None:
    """``source`` (``--model``, ``--set model=...``) names the one model to evaluate: the config's ``models`` go (it
    named X and evaluated the config's four), and so do its model's checkpoint, label and kwargs where the model
    changes (they labelled another model's results), each with a warning; ``given``: the settings the same source
    gives, which stay."""
    replaced = data.pop("models", None)
    if replaced:
        names = ", ".join(map(str, replaced)) if isinstance(replaced, Mapping) else str(replaced)
        warnings.warn(f"{source} replaces the config's models: ({names}); only {model!r} is evaluated",
                      UserWarning, stacklevel=3)
    if data.get("model") not in (None, model):
        dropped = [k for k in ("checkpoint", "model_id", "model_kwargs") if k in data and k not in given]
        for k in dropped:
            data.pop(k)
        if dropped:
            warnings.warn(f"{source} replaces the config's model {data['model']!r} and its "
                          f"{' and '.join(dropped)}; give --checkpoint / --model-id for {model!r} if needed",
                          UserWarning, stacklevel=3)


def _merge_data_flag(data: dict[str, Any], flag: Mapping[str, Any]) -> None:
    """``--data`` (``{"default": SPEC, SUITE: SPEC}``) over a config's ``data``: a config's one spec is its default
    data (a ``--data SUITE=SPEC`` flag dropped it), and the suites the config gives their own data keep it, said in a
    warning where the flag gives new default data (they read the config's data without a word)."""
    held = data.get("data")
    if isinstance(held, str):
        data["data"] = {"default": held}
    elif isinstance(held, Mapping) and "default" in flag:
        kept = {k: v for k, v in held.items() if k != "default" and k not in flag}
        if kept:
            warnings.warn(f"--data {flag['default']} is the default data; the config's own data stays for "
                          + ", ".join(f"{k} ({v})" for k, v in kept.items())
                          + " (give --data SUITE=SPEC to replace it)", UserWarning, stacklevel=3)


def eval_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate merged settings and return ``evaluate`` keyword arguments (plus ``models`` when given)."""
    schema = eval_schema()
    data = flat_options(_canonical(data, "the eval config"))  # top-level 'phase-bias: {...}' (deprecated) too
    suites, registry = _selected_suites(data)
    selected = {o for s in suites for o in registry[s].option_names()}
    valid = sorted(schema) + sorted(ALIASES)
    out: dict[str, Any] = {}
    options = dict(coerce(data.get("options") or {}, schema["options"], "options"))
    for key, value in data.items():
        if key == "options":
            continue
        if key in schema:
            out[key] = coerce(value, schema[key], key)
        elif key in selected:
            options[key] = value
        else:
            raise option_error(str(key), suites, registry, valid)
    options = check_suite_options(suites, options)
    parse_suite_options(suites, {k: v for k, v in out.items() if k in selected} | options)  # bad values fail here
    check_data_mapping(out.get("data"), suites, "add --data SPEC (default data) or --data {suite}=SPEC",
                       "config key 'data.{key}'")  # (warns of the data of a suite not selected, dropped here)
    if isinstance(out.get("data"), Mapping):
        out["data"] = {k: v for k, v in out["data"].items() if k == "default" or k in suites}
    from .runner import check_run_settings

    defaults = _evaluate_defaults()
    setting = {k: out.get(k, defaults.get(k)) for k in ("batch_size", "num_workers", "seed", "device", "num_classes")}
    check_run_settings(setting["batch_size"], setting["num_workers"], setting["seed"], out.get("model_kwargs"),
                       out.get("model"), setting["device"], setting["num_classes"])
    out["suite"] = suites
    out["options"] = options
    if out.get("models"):
        if out.get("model") is not None:  # e.g. two config files, one with each: models replaced model silently
            raise ValueError(f"the eval config sets both 'model' ({out['model']!r}) and 'models' "
                             f"({', '.join(map(str, out['models']))}); keep one (--model or --set model=SPEC "
                             "replaces a config's models)")
        out["models"] = _check_models(out["models"])
    return out


def _evaluate_defaults() -> dict[str, Any]:
    """``evaluate``'s default value of each parameter."""
    from .runner import evaluate

    return {k: p.default for k, p in inspect.signature(evaluate).parameters.items()}


def _selected_suites(data: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The suites settings ``data`` select (``evaluate``'s default when none), checked, and the suite registry."""
    suites = data.get("suite", _evaluate_defaults()["suite"])
    suites = [suites] if isinstance(suites, str) else list(coerce(suites, eval_schema()["suite"], "suite"))
    return suites, suite_registry(suites)


def load_eval_config(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    overrides: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """YAML file(s) (``base:``, ``${VAR:-default}``), then ``flags`` (set values win; ``model`` replaces the
    files' ``models``), then ``key=value`` overrides; validated by :func:`eval_settings`."""
    data = _canonical(read_config_files(paths, normalize=_flat, kind="eval"), "the eval config")
    from_files = set(data)
    # a flag given as null (--checkpoint null) is none, as with --set: it replaces the files' value
    flags = {k: None if null_word(v) else v for k, v in _flat(dict(flags or {}), "the flags").items() if v is not None}
    if "model" in flags:
        _replace_model(data, flags["model"], flags, "--model")
    if isinstance(flags.get("data"), Mapping):
        _merge_data_flag(data, flags["data"])
    data = merge(data, flags)
    renamed = []
    last_model = None
    for item in overrides:
        key, sep, rest = str(item).partition("=")
        head, dot, tail = key.partition(".")
        if head.strip() == "options" and tail:  # options.knn_k=7 sets knn_k, the form every source is read in
            head, dot, tail = tail.partition(".")
        head = ALIASES.get(head.strip(), head.strip())
        renamed.append(f"{head}{dot}{tail}{sep}{rest}" if sep else item)
        if sep and head == "model" and not dot:
            last_model = item
        elif sep and head == "data" and dot and isinstance(data.get("data"), str):
            data["data"] = {"default": data["data"]}  # data.SUITE=SPEC beside the config's data, which stays default
    if last_model is not None:  # as --model: the config's models (and its model's label) give way; the flags' stay
        _replace_model(data, parse_override(last_model, text=True)[1], flags, f"--set {last_model}")
    text_keys = [k for k, tp in eval_schema().items() if is_text_type(tp)]  # model_id=0012 stays "0012"
    for item in renamed:  # in order: options={...} then knn_k=3 sets 3 (the mapping was applied last, wherever given)
        data = apply_overrides(data, [item], text_keys=text_keys)
        given = data.pop("options", None)  # only an override sets it now (options={...})
        if isinstance(given, Mapping):
            data.update(given)
        elif given is not None:
            return eval_settings({**data, "options": given})  # which names the wrong type
    typed = set(flags) | {item.split("=", 1)[0].split(".", 1)[0] for item in renamed}
    return eval_settings(_without_unread_options(data, from_files - typed))


def _without_unread_options(data: dict[str, Any], from_files: set[str]) -> dict[str, Any]:
    """``data`` less the suite options that only a config file gives and only suites this run does not select read
    (a shipped OOD config run with --suite calibration was refused for its fit_limit, which no flag could undo), with
    a warning naming them; an option given by a flag or --set for a suite not selected stays an error."""
    try:
        suites, registry = _selected_suites(data)
    except (TypeError, ValueError):
        return data  # eval_settings names the problem
    selected = {o for s in suites for o in registry[s].option_names()}
    every = {o for cls in registry.values() for o in cls.option_names()} - set(eval_schema())
    unread = sorted(k for k in data if k in from_files and k in every and k not in selected)
    if unread:
        warnings.warn(f"the config's option{'s' if len(unread) > 1 else ''} {', '.join(unread)} "
                      f"{'are' if len(unread) > 1 else 'is'} left out: only suites this run does not select read "
                      f"{'them' if len(unread) > 1 else 'it'} (suites: {', '.join(suites)})", UserWarning, stacklevel=3)
    return {k: v for k, v in data.items() if k not in unread}
