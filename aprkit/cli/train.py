"""``aprkit train``: train a classifier from a YAML recipe (a file, or a shipped one by name: ``--list-configs``) with
``--set`` overrides.

Examples::

    aprkit train --config cifar10_wrn40_2_apr_sp --out runs/wrn_aprsp             # a shipped recipe by its name
    aprkit train --config configs/train/cifar10_wrn40_2_apr_sp.yaml --out runs/wrn_aprsp
    aprkit train --config configs/train/cifar10_wrn40_2_apr_sp.yaml --out runs/smoke --overwrite \\
        --set train.max_steps=5 data.limit=256 optim.batch_size=16   # 10-40 s smoke run (a rerun replaces the last)
    aprkit train --config configs/train/cifar10_wrn40_2_apr_sp.yaml --out runs/wrn_aprsp --resume
    torchrun --nproc_per_node=8 -m aprkit train --config configs/train/imagenet_resnet50.yaml --out runs/r50
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..train.config import METHODS
    from ..train.run_files import REPORT_FILES, RUN_FILES
    from ._common import add_config_args

    methods = ", ".join(METHODS)
    p = subparsers.add_parser(
        "train",
        help=f"train a classifier from a YAML config (aug.method: {methods})",
        description=f"Train a classifier from YAML config(s); later files and --set overrides win. Training methods "
                    f"(aug.method): {methods}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1] if __doc__ else None,
    )
    add_config_args(p, "train", "the recipe")
    p.add_argument("--set", nargs="+", default=[], action="extend", metavar="KEY=VALUE", dest="overrides",
                   help="override config values, e.g. optim.lr=0.05 train.max_steps=5 data.limit=256")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (checkpoints, metrics, model.pt); default: train.out of the config")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt when it exists")
    p.add_argument("--overwrite", action="store_true",
                   help=f"DIR already holds a run: delete its run files ({', '.join(RUN_FILES + REPORT_FILES)}) and "
                        "start over (without --resume or --overwrite such a DIR is refused)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import yaml

    from .._io import to_jsonable
    from ..train.config import load_config
    from ..train.loop import fit
    from ._common import check_out_dir, print_configs

    if args.list_configs:
        return print_configs("train")
    if not args.config and not args.overrides and not args.print_config:  # hours of work nobody asked for
        raise ValueError("no --config: give a recipe (e.g. --config cifar10_wrn40_2_apr_sp; --list-configs lists "
                         "them; to resume a run, its own: --config DIR/config.yaml --resume) or the settings with "
                         "--set; the built-in defaults alone (--print-config shows them) train resnet20 on synthetic "
                         "images for 200 epochs")
    cfg = load_config(args.config or None, args.overrides)
    if args.out is not None:
        set_out = load_config(None, [o for o in args.overrides if o.split("=", 1)[0].strip() == "train.out"],
                              validate=False).train.out
        same = set_out is not None and Path(set_out).expanduser().resolve() == Path(args.out).expanduser().resolve()
        if set_out is not None and not same:  # which wins differs between tools: neither does here
            raise ValueError(f"--out {args.out} and --set train.out={set_out} name different folders; give one")
        cfg.train.out = args.out
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if not cfg.train.out:
        raise ValueError("no output directory: give --out DIR (or set train.out in the config)")
    check_out_dir(cfg.train.out, "--out")  # before any data is read
    from aprkit.data.registry import check_outside_data

    check_outside_data([Path(cfg.train.out)], cfg.data.dataset, cfg.data.test_dataset)
    if args.resume and args.out is None:
        _check_own_config(args.config, cfg.train.out)
    result = fit(cfg, resume=args.resume or None, overwrite=args.overwrite)
    if result["out"] is not None and result["rank"] == 0:  # one summary: under torchrun the main process prints
        summary = {k: result[k] for k in ("out", "checkpoint", "global_step")}
        summary["final"] = result["final"]
        summary["wall_s"] = round(result["wall_s"], 2)
        if result.get("config_changes"):  # a model of two recipes says so where its numbers are printed
            summary["config_changes"] = result["config_changes"]
        print(json.dumps(to_jsonable(summary), indent=1), file=sys.stdout)  # strict JSON: NaN as null
        loss = (result["final"] or {}).get("train_loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            print(f"aprkit train: error: the run diverged (final training loss {loss}); its model.pt holds those "
                  "weights; lower optim.lr and train again", file=sys.stderr)
            return 1
    return 0


def _check_own_config(configs: list[str], out: str) -> None:
    """Refuse to resume elsewhere when a config file given is a run's own saved config (beside its ``last.pt``) but
    ``train.out`` resolves to another folder (a relative ``train.out`` is read against the current folder)."""
    target = Path(out).resolve()
    for name in configs:
        folder = Path(name).resolve().parent
        if Path(name).name == "config.yaml" and (folder / "last.pt").is_file() and folder != target:
            raise ValueError(f"--config {name} is the saved config of the run in {folder} (it holds last.pt), but "
                             f"train.out {out!r} resolves to {target} from the current folder; give --out {folder} to "
                             "resume that run")
