"""``aprkit eval``: evaluate a model (or several, side by side) with the evaluation suites.

Settings come from ``--config FILE`` or a shipped config's name (``--list-configs``; several merge left to right;
``base:`` inherits)
and are overridden by flags, then by ``--set key=value`` (YAML values; dotted keys reach into mappings).
Valid keys are the parameters of ``aprkit.eval.evaluate`` (``suites``/``out`` are accepted for ``suite``/
``out_dir``), ``models`` and the options of the selected suites; anything else is an error (the same
loader and rules as ``aprkit train``). Without ``--out`` nothing is written (results are printed); with it,
``DIR/results.json``, ``report.md``, ``report.html`` and a resumable ``cache/`` appear there. String values
may use ``${VAR}`` / ``${VAR:-default}``. A model needs weights (``--checkpoint``, a checkpoint file as
``--model``) unless ``--random-init`` asks for an untrained one; ``timm:NAME`` / ``torchvision:NAME`` load their
published pretrained weights. Data specs of the -C sets and ``cue-conflict`` may omit the folder (then
``--data-root`` / ``$APRKIT_DATA`` / ``~/.cache/aprkit``); ``--download`` fetches them when missing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .._text import add_note, comma_items
from ._common import add_config_args, seed_int

__all__ = ["add_parser", "run", "settings"]


def _int_list(text: str) -> list[int]:
    if any(not part.strip() for part in text.split(",")[:-1]):  # 1,,3: a value left out (a trailing comma is fine)
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,3,5, got {text!r} (an empty "
                                         "item between commas)")
    try:
        values = [int(s) for s in comma_items(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,3,5, got {text!r}") from None
    if not values:  # an empty list would read as "not given": every default value
        raise argparse.ArgumentTypeError("expected comma-separated integers such as 1,3,5, got an empty list")
    return list(dict.fromkeys(values))  # a repeated value adds nothing but another cache key


def _str_list(text: str) -> list[str]:
    values = comma_items(text)
    if not values:
        raise argparse.ArgumentTypeError("expected comma-separated names such as fog,contrast (or 'none'), got an "
                                         "empty list")
    return list(dict.fromkeys(values))


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``aprkit eval``."""
    p = subparsers.add_parser(
        "eval", help="evaluate models: corruptions, calibration, OOD, shape/phase bias, transplant",
        description=(__doc__ or "").replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p, "eval", "settings")
    p.add_argument("--model", action="append",
                   help="model spec: aprkit arch name, checkpoint file, timm:NAME, torchvision:NAME, robustbench:NAME "
                        "(one; several models side by side: a config's models:); builder arguments: --set "
                        "model_kwargs.img_size=32 (a config's models.NAME.kwargs)")
    p.add_argument("--checkpoint", help="weights for --model")
    p.add_argument("--random-init", dest="random_init", action="store_true", default=None,
                   help="evaluate an untrained, randomly initialised --model on purpose (refused otherwise)")
    p.add_argument("--drop-head", dest="drop_head", action="store_true", default=None,
                   help="replace a checkpoint's classifier that has another number of classes than --num-classes")
    p.add_argument("--model-id", dest="model_id",
                   help="name used in the report (default: the model's name; a checkpoint's file stem, FOLDER/STEM "
                        "for aprkit train's model.pt or last.pt: FOLDER/model, FOLDER/last)")
    p.add_argument("--num-classes", dest="num_classes", type=int,
                   help="the model's number of outputs (default: the checkpoint's, else the architecture's own)")
    p.add_argument("--data", action="append",
                   help="clean test data spec, e.g. cifar10:/data/cifar10 or folder:/data/val ('folder:/data/val?"
                   "resize=256&crop=224' brings images of other sizes to one); repeat as SUITE=SPEC for "
                   "suite-specific data, e.g. --data shape-bias=cue-conflict:/data/cue-conflict")
    p.add_argument("--suite", dest="suites", action="append",
                   help="suite to run (repeatable; default corruption): a name registered in aprkit.eval.suites")
    p.add_argument("--out", help="output folder for results.json, report.md/.html and the resumable cache "
                   "(required for writing)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", dest="batch_size", type=int,
                   help="images per forward pass; does not change the numbers (default 256)")
    p.add_argument("--workers", dest="num_workers", type=int, help="DataLoader worker processes")
    p.add_argument("--limit", type=int, help="use only the first N images of each dataset (the transplant suite: up to "
                   "N images spread evenly over it, as its report header says)")
    p.add_argument("--severities", type=_int_list, action="extend",
                   help="comma-separated severities, e.g. 1,3,5 (repeatable: the lists add up)")
    p.add_argument("--corruptions", type=_str_list, action="extend",
                   help="comma-separated corruption names and groups (benchmark, extra, all; default: the 15 benchmark "
                        "ones; 'none': clean only; repeatable: the lists add up)")
    p.add_argument("--corrupted",
                   help="a -C dataset on disk, e.g. cifar10-c:/data/CIFAR-10-C (default: generate on the fly)")
    p.add_argument("--ood", action="append", help="OOD dataset spec (repeatable; default: synthetic noise sets)")
    p.add_argument("--fit", help="training data spec for Mahalanobis/KNN (default: the train split of --data)")
    p.add_argument("--download", action="store_true", default=False,
                   help="fetch missing -C sets and cue-conflict stimuli (e.g. --corrupted cifar10-c) "
                   "from their official archives, and the frost textures generated frost needs (2 MB)")
    p.add_argument("--data-root", dest="data_root", metavar="DIR",
                   help="where downloaded data (and robustbench weights, DIR/robustbench) live (default $APRKIT_DATA, "
                        "else ~/.cache/aprkit)")
    p.add_argument("--seed", type=seed_int,
                   help="seed of generated corruptions, synthetic OOD and cue-conflict sets, the fit subset and "
                        "sampled pairs, 0..2**63-1 (default 0)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA)")
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on for convolutional models)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="hide progress bars")
    p.add_argument("--no-resume", dest="resume", action="store_false", default=None, help="recompute even if cached")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override a setting or suite option, e.g. batch_size=64 knn_k=10 n_pairs=500")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved settings (config files, flags and --set, validated; a device is checked "
                   "as a name, whether it is here when a run starts) as YAML and exit")
    p.set_defaults(func=run)
    return p


#: parsed arguments that are not settings (every other flag's destination is an ``evaluate`` key or alias)
_NOT_SETTINGS = ("config", "data", "overrides", "func", "command", "debug", "download", "data_root", "print_config",
                 "list_configs")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The validated ``evaluate`` keyword arguments (plus ``models``) of config files, flags and ``--set``."""
    from aprkit.eval.engine.config import load_eval_config

    flags = {k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS}
    if args.model is not None:
        if len(args.model) > 1:
            raise ValueError(f"--model given {len(args.model)} times ({', '.join(args.model)}); one --model per run: "
                             "to compare models side by side list them under models: in a config (e.g. the "
                             "shipped cifar10_resnets) or run aprkit eval once per model into the same --out")
        flags["model"] = args.model[0]
    if args.data is not None:
        flags["data"] = _data_arg(args.data)
    cfg = load_eval_config(args.config, args.overrides, flags)
    data = cfg.get("data")
    if isinstance(data, dict) and list(data) == ["default"]:
        cfg["data"] = data["default"]
    return cfg


def _data_arg(items: list[str]) -> dict[str, str]:
    """``--data SPEC`` (default data) and ``--data SUITE=SPEC`` (suite-specific) -> ``{"default"|suite: spec}``.

    A ``NAME=`` prefix without ``:`` or ``/`` must name a registered suite (``folder:/x=y`` is one spec).
    """
    from aprkit._text import nearest_names
    from aprkit.eval.suites import load_suites

    mapping: dict[str, str] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if sep and not any(c in name for c in ":/\\"):
            suites = load_suites()
            if name not in suites:
                raise ValueError(f"--data {item}: {name!r} is not a suite{nearest_names(name, list(suites))}; "
                                 f"expected SPEC or SUITE=SPEC with SUITE one of {', '.join(sorted(suites))}")
            if not spec:
                raise ValueError(f"--data {item}: no data spec after '='; expected {name}=SPEC")
            key = name
        else:
            key, spec = "default", item
        if key in mapping:
            what = "the default data" if key == "default" else repr(key)
            raise ValueError(f"--data given twice for {what}: {mapping[key]!r} and {spec!r}; pass each once")
        mapping[key] = spec
    return mapping


def run(args: argparse.Namespace) -> int:
    """Run ``aprkit eval`` with parsed ``args``; prints a summary and where the report is. ``--data-root`` is this
    run's ``$APRKIT_DATA`` (also where the frost textures are looked for), restored afterwards."""
    from aprkit.data.download import DATA_ENV

    root = getattr(args, "data_root", None)
    before = os.environ.get(DATA_ENV)
    if root:
        os.environ[DATA_ENV] = str(Path(root).expanduser())
    try:
        return _run(args, root)
    finally:
        if before is None:
            os.environ.pop(DATA_ENV, None)
        else:
            os.environ[DATA_ENV] = before


def _run(args: argparse.Namespace, root: str | None) -> int:
    from aprkit.distributed import setup_distributed, teardown_distributed
    from aprkit.eval import evaluate

    from ._common import check_out_dir, print_configs

    if getattr(args, "list_configs", False):
        return print_configs("eval")
    cfg = settings(args)
    if getattr(args, "download", False):  # a setting too: --print-config shows it (a saved config kept it)
        cfg["download"] = True
    if getattr(args, "print_config", False):
        import yaml

        from aprkit.distributed import launch_rank

        if launch_rank() == 0:  # once under torchrun
            print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return 0
    # also the frost textures generated frost needs; a config's or --set's download counts as the flag
    cfg["download"] = bool(getattr(args, "download", False) or cfg.get("download"))
    _resolve_sources(cfg, cfg["download"], root)
    models = cfg.pop("models", None)
    if root:  # robustbench weights live under the data root too (<root>/robustbench), unless a folder is given
        for entry in [cfg, *(models or {}).values()]:
            if _is_robustbench(entry.get("model")) and not entry.get("checkpoint"):
                entry["checkpoint"] = str(Path(root).expanduser() / "robustbench")
    if not cfg.get("model") and not models:
        raise ValueError("no model given: pass --model SPEC (and --checkpoint) or a config with 'model:'")
    if not cfg.get("data"):
        raise ValueError("no data given: pass --data SPEC (e.g. cifar10:/path/to/cifar10; the shape-bias stimuli: "
                         "--data shape-bias=cue-conflict:DIR) or a config with 'data:'")
    if models and cfg.get("checkpoint"):
        raise ValueError("checkpoint applies to one --model; with 'models:' give each entry its own "
                         "{model: SPEC, checkpoint: FILE}")
    if models and cfg.get("model_kwargs"):
        raise ValueError("model_kwargs applies to one --model; with 'models:' give each entry its own "
                         "{model: SPEC, kwargs: {...}}")
    if models and cfg.get("model_id"):
        raise ValueError("--model-id names one --model; with 'models:' each entry's key is its label")
    check_out_dir(cfg.get("out_dir"), "--out")
    # resolves (and checks) the device before any work; under torchrun: the process group, each rank on its GPU
    info = setup_distributed(cfg.get("device", "auto"))
    if info.world > 1:
        cfg["device"] = str(info.device)
    try:
        if models:
            dev = info.device
            cfg["model"] = {name: _load_entry(name, entry, cfg, dev) for name, entry in models.items()}
        res = evaluate(**cfg)
    finally:
        teardown_distributed(info)
    if not info.is_main:
        return 0
    _print_summary(res)
    units = res.meta.get("cache_units") or {}
    if units.get("reused"):
        where = cfg.get("cache_dir") or Path(cfg["out_dir"]) / "cache"
        # the units this run read and wrote, not a total of the work: which units a rerun reads depends on what the
        # earlier runs finished (it read "34 of 93", then "152 of 152": as a ratio it looked like a moving target)
        print(f"cache: {units['reused']} result units reused from {where}, {units['computed']} computed "
              "(--no-resume recomputes them)")
    if cfg.get("out_dir") and cfg.get("report", True):
        print(f"report: {Path(cfg['out_dir']) / 'report.html'} (also report.md, results.json)")
    elif cfg.get("out_dir"):
        print(f"results: {Path(cfg['out_dir']) / 'results.json'} (report=false: no report written)")
    else:
        print("no --out given: nothing was written (pass --out DIR to keep results, the cache and the report)",
              file=sys.stderr)
    return 0


def _is_robustbench(spec: Any) -> bool:
    return isinstance(spec, str) and spec.strip().lower().startswith("robustbench:")


def _load_entry(name: str, entry: dict[str, Any], cfg: dict[str, Any], dev: Any) -> Any:
    """One ``models:`` entry's model; an error names the entry (two resnet20 entries could not be told apart) and
    says where its checkpoint goes (the message's --checkpoint is refused with models:)."""
    from aprkit.eval.engine.models import load_eval_model

    try:
        return load_eval_model(entry["model"], cfg.get("num_classes"), entry.get("checkpoint"), dev,
                               bool(cfg.get("random_init")), bool(cfg.get("drop_head")), seed=int(cfg.get("seed") or 0),
                               model_kwargs=entry.get("kwargs"))[0]
    except (ValueError, OSError, TypeError) as err:
        where = f"models.{name} (its weights: models: {{{name}: {{model: SPEC, checkpoint: FILE}}}})"
        add_note(err, where)  # printed by error_line
        raise


def _resolve_sources(cfg: dict[str, Any], download: bool, data_root: str | None) -> None:
    """Fill in (and with ``download`` fetch) the folders of downloadable data specs in ``cfg``, in place."""
    from aprkit.data.registry import DOWNLOADABLE, parse_spec, resolve_spec

    def one(spec: Any) -> Any:
        try:  # the kind as the readers see it (an alias: its kind, tiny-imagenet-c: downloads as tinyimagenet-c:)
            kind = parse_spec(spec)[0] if isinstance(spec, str) else None
        except (TypeError, ValueError):  # not a dataset spec (or empty): left to the reader, which names the problem
            kind = None
        progress = cfg.get("progress", True) is not False
        if download and kind in ("cifar10", "cifar100"):  # the published archive into the spec's folder, once
            from aprkit.data import get_dataset

            get_dataset(spec, "test", download=True, progress=progress)
            return spec
        if kind not in DOWNLOADABLE:
            return spec
        return resolve_spec(spec, download=download, data_root=data_root, progress=progress)

    data = cfg.get("data")
    for spec in (data.values() if isinstance(data, dict) else data if isinstance(data, list) else [data]):
        if download and isinstance(spec, str) and spec.strip().lower().startswith(("folder:", "imagefolder:")):
            from aprkit.data.registry import spec_root, split_spec_options

            root = spec_root(split_spec_options(spec)[0].partition(":")[2].strip(), "folder")
            if not root.is_dir():  # before any download (ImageNet-C is 50 GB), not after it
                raise FileNotFoundError(f"--data {spec}: no folder {root}; expected the clean images the downloaded "
                                        "sets pair with")
    for key in ("data", "corrupted", "ood", "fit"):
        value = cfg.get(key)
        if isinstance(value, dict):
            cfg[key] = {k: one(v) for k, v in value.items()}
        elif isinstance(value, list):
            cfg[key] = [one(v) for v in value]
        elif value is not None:
            cfg[key] = one(value)


def _print_summary(res: Any) -> None:
    """The suites' headline measures, one line each, models side by side (percentages marked with %)."""
    heads = res.headlines()
    measures: dict[str, Any] = {}
    for ms in heads.values():
        for m in ms:
            measures.setdefault(m.name, m)  # one no model could compute prints "-"
    width = max([len(k) for k in measures] + [6])
    print(f"{'metric':<{width}}  " + "  ".join(f"{m:>14}" for m in heads))
    notes: list[str] = []  # what a value alone would hide (a site that follows B by construction): under the table
    for name, first in measures.items():
        vals = []
        for model, ms in heads.items():
            m = next((x for x in ms if x.name == name), None)
            text = "-" if m is None or m.value is None else m.formatted() + ("%" if first.percent else "")
            if m is not None and m.note:
                notes.append(f"{name}{f' ({model})' if len(heads) > 1 else ''}: {m.note}")
                text += "*"
            vals.append(f"{text:>14}")
        print(f"{name:<{width}}  " + "  ".join(vals))
    for note in notes:
        print(f"* {note}")
