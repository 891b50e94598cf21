"""``aprkit eval``: evaluate a model (or several, side by side) with the evaluation suites.

Settings come from ``--config configs/eval/X.yaml`` and are overridden by flags and ``--set key=value``
(YAML values; dotted keys reach nested options, unknown keys become suite options). Without ``--out``
nothing is written (results are printed); with it, ``DIR/results.json``, ``report.md``, ``report.html``
and a resumable ``cache/`` appear there. String values may use ``${VAR}`` / ``${VAR:-default}``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run", "load_config", "apply_overrides", "SUITE_CHOICES"]

SUITE_CHOICES = ("corruption", "calibration", "ood", "shape-bias", "phase-bias", "transplant")
_TOP_KEYS = {
    "model", "models", "checkpoint", "model_id", "num_classes", "data", "suites", "out", "device", "batch_size",
    "num_workers", "limit", "severities", "corruptions", "corrupted", "ood", "fit", "seed", "amp", "channels_last",
    "progress", "resume", "title", "options", "cache_dir",
}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        return _ENV.sub(lambda m: os.environ.get(m.group(1), m.group(2) if m.group(2) is not None else m.group(0)), value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


def load_config(path: str | Path) -> dict:
    """Read an eval YAML config (a mapping of the keys in ``_TOP_KEYS``); ``${VAR:-default}`` is expanded."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist (see configs/eval/*.yaml for examples)")
    with open(p, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{p} must hold a YAML mapping of settings (model, data, suites, ...), got {type(cfg).__name__}")
    if "suite" in cfg:
        cfg["suites"] = cfg.pop("suite")
    unknown = set(cfg) - _TOP_KEYS
    if unknown:
        opts = cfg.setdefault("options", {})
        for k in unknown:
            opts[k] = cfg.pop(k)
    return _expand(cfg)


def apply_overrides(cfg: dict, assignments: list[str]) -> dict:
    """Apply ``key=value`` assignments (value parsed as YAML; ``a.b=v`` sets nested keys)."""
    import yaml

    for item in assignments:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = _expand(yaml.safe_load(raw)) if raw.strip() else None
        parts = key.strip().split(".")
        target = cfg if parts[0] in _TOP_KEYS else cfg.setdefault("options", {})
        for p in parts[:-1]:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise ValueError(f"--set {key}: {p!r} is not a mapping")
        target[parts[-1]] = value
    return cfg


def _int_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,3,5, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``aprkit eval``."""
    p = subparsers.add_parser(
        "eval", help="evaluate models: corruptions, calibration, OOD, shape/phase bias, transplant",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML settings file (configs/eval/*.yaml)")
    p.add_argument("--model", help="model spec: aprkit arch name, checkpoint file, timm:NAME, torchvision:NAME, robustbench:NAME")
    p.add_argument("--checkpoint", help="weights for --model")
    p.add_argument("--model-id", dest="model_id", help="name used in the report and cache (default: name + state_dict hash)")
    p.add_argument("--num-classes", dest="num_classes", type=int)
    p.add_argument("--data", action="append", help="clean test data spec, e.g. cifar10:/data/cifar10 or folder:/data/val; "
                   "repeat as SUITE=SPEC for suite-specific data, e.g. --data shape-bias=cue-conflict:/data/cue-conflict")
    p.add_argument("--suite", dest="suites", action="append", help=f"suite to run (repeatable): {', '.join(SUITE_CHOICES)}")
    p.add_argument("--out", help="output folder for results.json, report.md/.html and the resumable cache (required for writing)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--workers", dest="num_workers", type=int, help="DataLoader worker processes")
    p.add_argument("--limit", type=int, help="use only the first N images of each dataset")
    p.add_argument("--severities", type=_int_list, help="comma-separated severities, e.g. 1,3,5")
    p.add_argument("--corruptions", type=_str_list, help="comma-separated corruption names (default: the 15 benchmark ones; 'none': clean only)")
    p.add_argument("--corrupted", help="a -C dataset on disk, e.g. cifar10-c:/data/CIFAR-10-C (default: generate on the fly)")
    p.add_argument("--ood", action="append", help="OOD dataset spec (repeatable; default: synthetic noise sets)")
    p.add_argument("--fit", help="training data spec for Mahalanobis/KNN (default: the train split of --data)")
    p.add_argument("--seed", type=int)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision (default: on for CUDA)")
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on for convolutional models)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--no-resume", dest="resume", action="store_false", default=None, help="recompute even if cached")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key or suite option")
    p.set_defaults(func=run)
    return p


def _settings(args: argparse.Namespace) -> dict:
    cfg = load_config(args.config) if args.config else {}
    for key in ("model", "checkpoint", "model_id", "num_classes", "suites", "out", "device", "batch_size", "num_workers",
                "limit", "severities", "corruptions", "corrupted", "ood", "fit", "seed", "amp", "channels_last", "progress", "resume"):
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    if args.model is not None:
        cfg.pop("models", None)  # --model replaces the config's model(s)
    if args.data is not None:
        cfg["data"] = _data_arg(args.data, cfg.get("data"))
    return apply_overrides(cfg, args.overrides)


def _data_arg(items: list[str], base: Any) -> Any:
    """``--data SPEC`` (default data) and ``--data SUITE=SPEC`` (suite-specific) -> spec or mapping."""
    mapping: dict[str, Any] = dict(base) if isinstance(base, dict) else ({"default": base} if base else {})
    for item in items:
        name, sep, spec = item.partition("=")
        if sep and name in SUITE_CHOICES:
            mapping[name] = spec
        else:
            mapping["default"] = item
    return mapping["default"] if list(mapping) == ["default"] else mapping


def run(args: argparse.Namespace) -> int:
    """Run ``aprkit eval`` with parsed ``args``; prints a summary and where the report is."""
    from aprkit.eval import evaluate

    cfg = _settings(args)
    if not cfg.get("model") and not cfg.get("models"):
        raise ValueError("no model given: pass --model SPEC (and --checkpoint) or a config with 'model:'")
    if not cfg.get("data"):
        raise ValueError("no data given: pass --data SPEC (e.g. cifar10:/path/to/cifar10) or a config with 'data:'")
    suites = cfg.get("suites") or ["corruption"]
    suites = [suites] if isinstance(suites, str) else list(suites)
    cfg["device"], started_group = _init_distributed(cfg.get("device", "auto"))
    main_rank = not started_group or int(os.environ.get("RANK", "0")) == 0
    model: Any = cfg.get("model")
    if cfg.get("models"):
        from aprkit.eval.runner import load_eval_model
        from aprkit.eval.inference import resolve_device

        dev = resolve_device(cfg.get("device", "auto"))
        model = {}
        for name, spec in dict(cfg["models"]).items():
            spec = spec if isinstance(spec, dict) else {"model": spec}
            model[name] = load_eval_model(spec["model"], cfg.get("num_classes"), spec.get("checkpoint"), dev)[0]
    out = cfg.get("out")
    try:
        res = _evaluate(evaluate, model, suites, cfg, out)
    finally:
        if started_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    if not main_rank:
        return 0
    _print_summary(res)
    if out:
        print(f"report: {Path(out) / 'report.html'} (also report.md, results.json)")
    else:
        print("no --out given: nothing was written (pass --out DIR to keep results, the cache and the report)", file=sys.stderr)
    return 0


def _init_distributed(device: Any) -> tuple[Any, bool]:
    """Under ``torchrun`` (WORLD_SIZE > 1): start the process group (NCCL on GPUs, else gloo) and pin
    each rank to its GPU. Returns the device to use and whether a group was started here."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not torch.distributed.is_available() or torch.distributed.is_initialized():
        return device, False
    use_cuda = torch.cuda.is_available() and (device in (None, "auto") or str(device).startswith("cuda"))
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return device, True


def _evaluate(evaluate: Any, model: Any, suites: list[str], cfg: dict, out: Any) -> Any:
    return evaluate(
        model, suite=suites, data=cfg["data"], model_id=cfg.get("model_id"), num_classes=cfg.get("num_classes"),
        checkpoint=None if cfg.get("models") else cfg.get("checkpoint"), out_dir=out, cache_dir=cfg.get("cache_dir"),
        device=cfg.get("device", "auto"), batch_size=int(cfg.get("batch_size", 256)), num_workers=int(cfg.get("num_workers", 0)),
        amp=cfg.get("amp"), channels_last=cfg.get("channels_last"), limit=cfg.get("limit"), corruptions=cfg.get("corruptions"),
        severities=cfg.get("severities"), corrupted=cfg.get("corrupted"), ood=cfg.get("ood"), fit=cfg.get("fit"),
        options=cfg.get("options"), seed=int(cfg.get("seed", 0)), progress=cfg.get("progress", True) is not False,
        resume=cfg.get("resume", True) is not False, title=cfg.get("title"),
    )


def _print_summary(res: Any) -> None:
    summary = res.summary()
    keys: list[str] = []
    for row in summary.values():
        keys += [k for k in row if k not in keys and row[k] is not None]
    width = max([len(k) for k in keys] + [6])
    print(f"{'metric':<{width}}  " + "  ".join(f"{m:>14}" for m in summary))
    for k in keys:
        vals = []
        for m in summary:
            v = summary[m].get(k)
            vals.append(f"{'-':>14}" if v is None else f"{100 * v:>13.2f}%" if _is_fraction(k) else f"{v:>14.4f}")
        print(f"{k:<{width}}  " + "  ".join(vals))


def _is_fraction(key: str) -> bool:
    return not any(t in key for t in ("nll", "brier", "seconds"))
