"""Demo ablation (issue 16, item 5): which part of the APR-SP recipe keeps the demo's phase-follow rate flat?

Trains the demo's small CNN on the demo's synthetic data at the demo's budget (``aprkit.demo`` settings: 8000
images, 6 epochs; recipe: ``PAPER_RECIPE``, the demo's APR-SP before this study) once per variant -- that
APR-SP, APR-P alone, APR-SP with ``p = 1``, APR-SP with the clean and APR-P halves in separate forwards (batch
norm statistics per half) instead of the joint one, APR-SP with a longer schedule, and further schedule and
learning-rate variants (``VARIANTS``), each beside a standard run of the same budget -- then measures each
with the demo's own evaluation (the corruption grid, calibration and the phase-bias suite). Training and evaluation are the demo's functions
(``aprkit.demo.pipeline.train_config`` / ``train_model`` / ``eval_options``, ``aprkit.demo.summary``), not copies.

    python benchmarks/repro/demo_ablation.py --out runs/repro/demo_ablation --threads 1 --variants apr_p
    python benchmarks/repro/demo_ablation.py --out runs/repro/demo_ablation --threads 1 --resume --variants apr_sp_p1
    python benchmarks/repro/demo_ablation.py --out /tmp/smoke --smoke

Every call trains and evaluates the variants it is given (default: ``DEFAULT_VARIANTS``), then rewrites results.json /
results.md with every variant measured so far in ``--out`` (``--resume`` keeps the earlier rows and reuses
finished training runs and cached evaluation cells; without it an existing ``--out`` is refused).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aprkit.demo.config import DemoSettings
from benchmarks.repro.common import (
    device_meta,
    fmt_num,
    fmt_pct,
    markdown_table,
    parser,
    read_state,
    run_main,
    write_outputs,
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One training recipe: the ``aprkit.train`` method and the demo settings it changes."""

    method: str
    description: str
    settings: Callable[[Any], dict[str, Any]] = lambda s: {}


VARIANTS: dict[str, Variant] = {
    "standard": Variant("standard", "standard training, lr steps at 50 % and 75 % (the demo's reference until this study)"),
    "apr_sp": Variant("apr_sp", "APR-SP, the paper's recipe (APR-S + CE(x) + CE(APR-P(x)), p=0.6, one joint forward; the demo's until this study)"),
    "apr_p": Variant("apr_p_only", "APR-P alone (p=0.6): no clean CE term, no APR-S"),
    "apr_sp_p1": Variant("apr_sp", "APR-SP with p=1 (every step's second half amplitude-swapped)", lambda s: {"pair_p": 1.0}),
    "apr_sp_separate": Variant("apr_sp", "APR-SP, clean and APR-P halves in separate forwards (own BN statistics)",
                               lambda s: {"sp_forward": "separate"}),
    "apr_sp_long": Variant("apr_sp", "APR-SP with twice the epochs", lambda s: {"epochs": 2 * s.epochs}),
    "apr_p_p1": Variant("apr_p_only", "APR-P alone with p=1", lambda s: {"pair_p": 1.0}),
    "apr_sp_p1_separate": Variant("apr_sp", "APR-SP with p=1 and separate forwards",
                                  lambda s: {"pair_p": 1.0, "sp_forward": "separate"}),
    "apr_sp_p1_long": Variant("apr_sp", "APR-SP with p=1 and twice the epochs", lambda s: {"pair_p": 1.0, "epochs": 2 * s.epochs}),
    "standard_half_data_long": Variant("standard", "standard training, half the training images, twice the epochs (same steps)",
                                       lambda s: {"n_train": s.n_train // 2, "epochs": 2 * s.epochs}),
    "apr_sp_half_data_long": Variant("apr_sp", "APR-SP (p=0.6), half the training images, twice the epochs (same steps)",
                                     lambda s: {"n_train": s.n_train // 2, "epochs": 2 * s.epochs}),
    "apr_sp_late_decay": Variant("apr_sp", "APR-SP, the demo's budget with one late lr step (x0.2 after 5 of 6 epochs)",
                                 lambda s: {"lr_steps": (0.8,)}),
    "apr_sp_lr01": Variant("apr_sp", "APR-SP, the demo's budget with lr 0.1 (instead of 0.05)", lambda s: {"lr": 0.1}),
    "apr_sp_p1_late_decay": Variant("apr_sp", "APR-SP with p=1 and one late lr step (the demo's budget; the demo's recipe now)",
                                    lambda s: {"pair_p": 1.0, "lr_steps": (0.8,)}),
    "standard_late_decay": Variant("standard", "standard training with one late lr step (x0.2 after 5 of 6 epochs)",
                                   lambda s: {"lr_steps": (0.8,)}),
    "standard_lr01": Variant("standard", "standard training with lr 0.1", lambda s: {"lr": 0.1}),
    "standard_long": Variant("standard", "standard training with twice the epochs", lambda s: {"epochs": 2 * s.epochs}),
    "apr_sp_p1_half_data_long": Variant("apr_sp", "APR-SP with p=1, half the training images, twice the epochs (same steps)",
                                        lambda s: {"pair_p": 1.0, "n_train": s.n_train // 2, "epochs": 2 * s.epochs}),
}
DEFAULT_VARIANTS = ["standard", "apr_sp", "apr_p", "apr_sp_p1", "apr_sp_separate", "apr_sp_long"]
SUITES = ["corruption", "calibration", "phase-bias"]
#: headline keys (aprkit.demo.summary.MEASURES) compared with the standard model in results.md
#: the demo settings that make a training budget (a variant is compared with the standard run of the same budget)
BUDGET = ("n_train", "epochs", "lr", "lr_steps")
COMPARED = ("phase_follow", "phase_bias", "mean_corruption_error", "corrupted_ece", "clean_accuracy")
#: --smoke: the demo's quick preset with one corruption at one severity
SMOKE = {"corruptions": ("gaussian_noise",), "severities": (3,), "n_phase_pairs": 40}


#: the recipe every variant starts from: the seed paper's APR-SP (p=0.6) with the demo's original lr steps (50 %, 75 %),
#: fixed here so that the rows keep their meaning whatever the demo's defaults become (the demo now uses
#: ``apr_sp_p1_late_decay``'s recipe)
PAPER_RECIPE: dict[str, Any] = {"pair_p": 0.6, "lr_steps": (0.5, 0.75), "sp_forward": "joint"}


def base_settings(args: Any) -> Any:
    from aprkit.demo import demo_settings

    if args.smoke:
        return demo_settings(quick=True, **SMOKE, **PAPER_RECIPE)
    return demo_settings(epochs=args.epochs, **PAPER_RECIPE)


def variants_recipe_version(base: Any, args: Any) -> int:
    """The latest recipe version of the variants' training configs (``aprkit.train.trajectory.recipe_version``: what
    changed what they train; ``RECIPE_VERSION`` also counts changes to methods no variant uses, such as AugMix's)."""
    from aprkit.demo.pipeline import train_config
    from aprkit.train.config import config_from_dict
    from aprkit.train.trajectory import recipe_version

    # the class count and image size do not enter the recipe version
    return max(recipe_version(config_from_dict(train_config(v.method, dataclasses.replace(base, **v.settings(base)),
                                                            10, 32, args.seed, args.device, False)))
               for v in VARIANTS.values())


def train_variant(name: str, base: Any, data: Any, out: Path, args: Any) -> tuple[Any, dict[str, Any], Any, Any, Any]:
    """Train (or reload) one variant with the demo's functions: ``(model, info, settings, data, stopwatch)``."""
    from aprkit.demo.pipeline import Stopwatch, train_config, train_model

    v = VARIANTS[name]
    s = dataclasses.replace(base, **v.settings(base))
    if s.n_train != base.n_train:  # another training set size; the same test set (its seed and size are unchanged)
        from aprkit.demo.config import load_demo_data

        data = dataclasses.replace(data, train=load_demo_data("synthetic", s, seed=args.seed, progress=args.progress).train)
    size = int(data.test.images.shape[-1])
    cfg = train_config(v.method, s, data.num_classes, size, args.seed, args.device, args.progress)
    clock = Stopwatch(progress=True)
    model, info = clock.run(f"train {name}", lambda: train_model(name, cfg, data, out))
    return model, info, s, data, clock


def run_variant(name: str, base: Any, data: Any, shared: Any, out: Path, args: Any) -> dict[str, Any]:
    """Train (or reload) one variant and evaluate it; return its results row."""
    from aprkit.demo.pipeline import eval_options
    from aprkit.demo.summary import headline_numbers
    from aprkit.eval import evaluate

    v = VARIANTS[name]
    model, info, s, data, clock = train_variant(name, base, data, out, args)
    res = clock.run(f"evaluate {name}", lambda: evaluate(
        {name: model}, suite=SUITES, data=data.test, cache_dir=out / "eval" / "cache", device=args.device,
        batch_size=s.eval_batch_size, options=eval_options(s, data, shared, SUITES), seed=args.seed,
        progress=args.progress, report=False))
    suites = res.models[name]
    ph = suites["phase-bias"]
    return {
        "method": v.method, "description": v.description, "settings": s.to_dict(),
        "headline": headline_numbers(suites),
        "phase": {k: ph["full"][k] for k in ("phase", "amplitude", "neither", "phase_bias", "n_pairs")},
        "phase_bias_low_frequency": ph.get("phase_bias_low_frequency"), "patch_shuffle_accuracy": ph.get("patch_shuffle_accuracy"),
        "final_train_acc": info["final_train_acc"], "final_test_acc": info["final_test_acc"],
        "train_seconds": info["train_seconds"], "timings": clock.stages,
        "run_dir": os.path.relpath(info["run_dir"], out),  # relative to --out: the results move with the folder
    }


def reference(name: str, rows: Mapping[str, Mapping[str, Any]], base: Mapping[str, Any]) -> str | None:
    """The standard-training row with ``name``'s budget (training images, epochs, lr and its steps), else ``standard``."""
    def budget(row: Mapping[str, Any]) -> list[Any]:
        return [list(v) if isinstance(v, (list, tuple)) else v for v in (row["settings"].get(k, base[k]) for k in BUDGET)]

    same = [k for k, r in rows.items() if r["method"] == "standard" and budget(r) == budget(rows[name])]
    return same[0] if same else ("standard" if "standard" in rows else None)


def comparisons(rows: Mapping[str, Mapping[str, Any]], base: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each variant against its standard reference (:func:`reference`) with the demo's verdict rule
    (``aprkit.demo.summary.verdicts``); ``"reference"`` names the row compared with."""
    from aprkit.demo.summary import verdicts

    out: dict[str, dict[str, Any]] = {}
    for name, row in rows.items():
        ref = reference(name, rows, base)
        if row["method"] == "standard" or ref is None:
            continue
        out[name] = {"reference": ref} | {r["key"]: r for r in verdicts(rows[ref]["headline"], row["headline"]) if r["key"] in COMPARED}
    return out


def _value(row: Mapping[str, Any], key: str) -> float | None:
    return (row["headline"].get(key) or {}).get("value")


def _vs(cmp: Mapping[str, Any] | None, key: str) -> str:
    if not cmp or key not in cmp or cmp[key]["diff"] is None:
        return "-"
    r, pct = cmp[key], key != "phase_bias"
    diff = f"{100 * r['diff']:+.1f} pp (±{200 * r['se']:.1f})" if pct else f"{r['diff']:+.3f} (±{2 * r['se']:.3f})"
    return f"{diff} {r['verdict']}"


def render(rows: Mapping[str, Mapping[str, Any]], cmp: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    body = []
    for name, r in rows.items():
        c = cmp.get(name)
        body.append([
            f"`{name}`", r["description"], str(r["settings"]["epochs"]), f"{r['train_seconds']:.0f}",
            fmt_pct(_value(r, "clean_accuracy")), fmt_pct(_value(r, "mean_corruption_error")), fmt_pct(_value(r, "corrupted_ece")),
            fmt_pct(r["phase"]["phase"]), fmt_pct(r["phase"]["amplitude"]), fmt_num(r["phase"]["phase_bias"]),
            f"`{c['reference']}`" if c else "-", _vs(c, "phase_follow"), _vs(c, "phase_bias"),
        ])
    head = ["variant", "recipe", "epochs", "train s", "clean acc %", "mean corr. error %", "corrupted ECE %", "phase-follow %",
            "amplitude-follow %", "phase bias", "reference", "phase-follow vs reference (±2 SE)",
            "phase bias vs reference (±2 SE)"]
    lines = [
        f"# Demo ablation: what keeps APR-SP's phase-follow rate flat{' (SMOKE RUN)' if meta['smoke'] else ''}", "",
        f"Data: {meta['data']}. Demo settings: {meta['settings_brief']}. Each row is one training run (seed "
        f"{meta['seed']}); the phase numbers are the demo's phase-bias suite (full amplitude swap, {meta['n_phase_pairs']} "
        "pairs of test images of different classes); 'vs reference' compares with the standard-training run of the same "
        "budget (training images, epochs, lr schedule; `standard` where none was run) by the demo's verdict rule (two "
        "standard errors, sampling noise of the test set only, not seed-to-seed variation). 'train s' is the wall time of the "
        f"training epochs with {meta['threads']} torch thread(s) on a machine shared with other jobs (it depends on the "
        "load; see each row's timings for process CPU seconds when it was trained in that call).", "",
        markdown_table(head, body),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.split("\n")[0], default_epochs=DemoSettings.epochs, shared_data=False)
    p.set_defaults(device="cpu")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)  # common.parse_args would insist on the shared CIFAR-10 folder, which this study never reads
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from aprkit.demo.config import load_demo_data
    from aprkit.demo.pipeline import SharedCorruptions
    out = Path(args.out)
    previous = out / "results.json"
    if (previous.is_file() or (out / "train").is_dir()) and not args.resume:
        raise SystemExit(f"{out} already holds an ablation run; pass --resume to continue it or choose another --out")
    base = base_settings(args)
    recipe = variants_recipe_version(base, args)
    rows: dict[str, Any] = {}
    if previous.is_file():
        before = read_state(previous)
        if not isinstance(before, dict) or not isinstance(before.get("rows"), dict):
            raise ValueError(f"{previous} holds no ablation rows (a damaged or foreign results.json); delete it and "
                             "run again with --resume (the trained runs are kept)")
        rows = before["rows"]
        # rows of another seed, smoke mode or base budget are not comparable with this call's (and the base fills
        # the budget keys that older rows did not record, see reference())
        now = {"smoke": args.smoke, "seed": args.seed, "settings": json.loads(json.dumps(base.to_dict())),
               "recipe_version": recipe, "device": device_meta(args.device)["device"]}
        kept = {"device": "cpu", **(before.get("meta") or {})}  # rows made before the device was recorded: the CPU's
        differ = [k for k in now if kept.get(k) != now[k]]
        if differ:
            raise SystemExit(f"--resume: {previous} holds rows made with another {', '.join(differ)} than this call's; "
                             "pass the same settings, or choose another --out")
    data = load_demo_data("synthetic", base, seed=args.seed, progress=args.progress)
    if args.train_only:  # the runs only (a later call with --resume evaluates them)
        trained = {name: train_variant(name, base, data, out, args)[1]["run_dir"] for name in args.variants}
        return {"trained": trained}
    shared = SharedCorruptions(data.test, args.seed, "cifar", progress=args.progress)
    for name in args.variants:
        rows[name] = run_variant(name, base, data, shared, out, args)
        rows = {k: rows[k] for k in VARIANTS if k in rows}
        cmp = comparisons(rows, base.to_dict())
        meta = {"smoke": args.smoke, "seed": args.seed, "recipe_version": recipe, "data": data.description,
                "threads": torch.get_num_threads(), **device_meta(args.device),
                "n_phase_pairs": base.n_phase_pairs, "settings": base.to_dict(),
                "settings_brief": f"{base.n_train} training images, {base.epochs} epochs, batch {base.batch_size}, lr {base.lr}"}
        write_outputs(out, "demo_ablation", {"meta": meta, "rows": rows, "vs_standard": cmp}, render(rows, cmp, meta))
    return {"rows": rows, "vs_standard": comparisons(rows, base.to_dict())}


if __name__ == "__main__":
    run_main(main)
