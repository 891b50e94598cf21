"""Study 1 (+ study 4) of issue 16: APR on CIFAR-10, and feature-level APR on top of it.

CIFAR ResNet-20 trained with standard, APR-P and APR-SP under one schedule (``--epochs``, the lr steps of the
200-epoch recipe scaled to it), plus APR-SP with :class:`aprkit.hidden.FeatureAPR` after ``layer2`` (study 4),
then evaluated side by side with aprkit's suites: corruption (generated CIFAR-10-C, 15 x 5, the 10,000 test
images), calibration (clean and corrupted ECE / RMS), ood (the synthetic noise sets plus a natural-image set:
the cue-conflict stimuli whose shape class is not a CIFAR-10 class, downscaled to 32 px) and phase-bias (with
the patch-shuffle control). Writes ``OUT/results.json``, ``OUT/results.md`` (the paper's direction beside each
number) and the eval report with its plots (``OUT/eval/report.md``).

    python benchmarks/repro/apr_cifar10.py --out runs/repro/apr_cifar10 --epochs 2 --threads 2   # CPU budget
    python benchmarks/repro/apr_cifar10.py --out runs/repro/apr_cifar10_gpu --epochs 30 --device cuda
    python benchmarks/repro/apr_cifar10.py --out runs/repro/apr_cifar10 --epochs 2 --threads 2 --resume   # after a stop
    python benchmarks/repro/apr_cifar10.py --out /tmp/smoke --smoke                            # < 60 s, 1 thread
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.repro.common import (
    SMOKE,
    cifar10_spec,
    device_meta,
    feature_apr_builder,
    fmt_num,
    fmt_pct,
    markdown_table,
    parse_args,
    parser,
    run_main,
    run_recipe,
    train_run,
    train_summary,
    training_curves,
    write_outputs,
)

#: run name -> training config (configs/train)
RUNS = {"standard": "repro_cifar10_resnet20_standard.yaml", "apr_p": "repro_cifar10_resnet20_apr_p.yaml",
        "apr_sp": "repro_cifar10_resnet20_apr_sp.yaml", "apr_p_only": "repro_cifar10_resnet20_apr_p_only.yaml"}
#: runs trained only when asked for (``--runs``): APR-P without the clean term, as the committed "apr_p" runs were
OPTIONAL_RUNS = ("apr_p_only",)
FEATURE_RUN = "apr_sp_feature_apr"  # study 4: APR-SP + FeatureAPR after layer2
#: cue-conflict shape classes that are not CIFAR-10 classes (the natural-image OOD set)
NON_CIFAR_SHAPES = ("bear", "bicycle", "bottle", "chair", "clock", "elephant", "keyboard", "knife", "oven")
SUITES = ["corruption", "calibration", "ood", "phase-bias"]

#: (label, key in the row, formatter, the APR paper's direction relative to standard training)
METRICS = [
    ("clean error %", "clean_error", fmt_pct, "≈ or lower (APR keeps clean accuracy)"),
    ("CIFAR-10-C mean error %", "mean_error", fmt_pct, "lower (main claim)"),
    ("clean ECE %", "ece", fmt_pct, "not a paper claim (reported for completeness)"),
    ("clean RMS calib. error %", "rms", fmt_pct, "not a paper claim"),
    ("corrupted ECE %", "corrupted_ece", fmt_pct, "lower"),
    ("corrupted RMS calib. error %", "corrupted_rms", fmt_pct, "lower (paper's calibration claim)"),
    ("OOD AUROC (MSP), synthetic noise %", "auroc_synthetic", fmt_pct, "higher"),
    ("OOD AUROC (MSP), natural (cue-conflict non-CIFAR) %", "auroc_natural", fmt_pct, "higher"),
    ("natural AUROC's standard error (DeLong) %", "auroc_natural_se", fmt_pct, "differences within ~2 SE are noise"),
    ("phase bias (full swap)", "phase_bias", fmt_num, "higher (APR: rely on phase)"),
    ("phase bias (low-freq. swap)", "phase_bias_low", fmt_num, "higher"),
    ("patch-shuffle accuracy %", "patch_shuffle_acc", fmt_pct, "lower (less texture reliance; our control)"),
]


def natural_ood(shared: Path, limit: int | None = None) -> Any:
    """The cue-conflict stimuli of non-CIFAR-10 shape classes, area-downscaled to 32 px, as an in-memory dataset."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from aprkit.data.arrays import ArrayDataset

    root = shared / "data" / "cue-conflict"
    files = sorted(f for c in NON_CIFAR_SHAPES for f in (root / c).glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no cue-conflict stimuli under {root}/<{'|'.join(NON_CIFAR_SHAPES)}>/*.png")
    files = files[:limit] if limit else files
    imgs = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files])
    small = F.interpolate(imgs.float(), size=(32, 32), mode="area").round().clamp(0, 255).to(torch.uint8)
    ds = ArrayDataset(small, np.zeros(len(files), dtype=np.int64), layout="nchw")
    ds.cache_id = "cue-conflict-non-cifar-32px-" + hashlib.sha1(small.numpy().tobytes()).hexdigest()[:16]
    return ds


def eval_options(args: Any, shared: Path) -> dict[str, Any]:
    """The selected suites' options: the full study, or the smoke sizes (evaluate refuses options no selected suite
    reads, and without the OOD suite the cue-conflict stimuli are not needed: a GPU machine's data has none)."""
    n = SMOKE["eval_limit"] if args.smoke else None
    opts: dict[str, Any] = {}
    if "ood" in args.suites:
        ood = {f"noise_{k}": f"noise:{k}" for k in ("gaussian", "uniform", "rademacher", "blobs")}
        ood["natural_cue_conflict"] = natural_ood(shared, n)
        opts.update(ood=ood, ood_scores=["msp", "energy"], **({"ood_limit": n} if args.smoke else {}))
    if "phase-bias" in args.suites and args.smoke:
        opts["n_pairs"] = 64
    return opts


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def summarise(res: Any) -> dict[str, dict[str, float | None]]:
    """One row of headline numbers per model from the eval :class:`Results`."""
    rows: dict[str, dict[str, float | None]] = {}
    for mid, suites in res.models.items():
        cor, cal, ood, pb = (suites.get(k) or {} for k in SUITES)
        acc = (cor.get("clean") or {}).get("accuracy")
        msp = {name: sets.get("msp") or {} for name, sets in (ood.get("sets") or {}).items()} \
            if isinstance(ood.get("sets"), dict) else {}
        per_set = {name: m.get("auroc") for name, m in msp.items()}
        noise = [v for k, v in per_set.items() if k.startswith("noise_") and v is not None]
        rows[mid] = {
            "clean_error": None if acc is None else 1 - acc, "mean_error": cor.get("mean_error"),
            "ece": (cal.get("clean") or {}).get("ece"), "rms": (cal.get("clean") or {}).get("rms"),
            "corrupted_ece": (cal.get("corrupted") or {}).get("ece"), "corrupted_rms": (cal.get("corrupted") or {}).get("rms"),
            "auroc_synthetic": sum(noise) / len(noise) if noise else None, "auroc_natural": per_set.get("natural_cue_conflict"),
            "auroc_natural_se": _finite((msp.get("natural_cue_conflict") or {}).get("auroc_se")),
            "phase_bias": (pb.get("full") or {}).get("phase_bias"),
            "phase_bias_low": (pb.get("low_frequency") or {}).get("phase_bias"),
            "patch_shuffle_acc": (pb.get("patch_shuffle") or {}).get("accuracy"),
        }
    return rows


def render(rows: dict[str, dict[str, float | None]], meta: dict[str, Any]) -> str:
    names = list(rows)
    body = [[label, *(f(rows[m].get(key)) for m in names), direction] for label, key, f, direction in METRICS]
    return "\n".join([
        f"# Study 1 / 4: APR on CIFAR-10 (ResNet-20, {meta['epochs']} epochs{', SMOKE RUN' if meta['smoke'] else ''})", "",
        "Direction: the APR paper's claim for APR-P / APR-SP relative to standard training; study 4 asks whether "
        f"FeatureAPR after {meta['feature_layers']} adds to APR-SP.", "",
        markdown_table(["metric", *names, "paper's direction"], body), "",
        *([f"Suites evaluated: {', '.join(meta['suites'])} (the other rows: not evaluated in this run).", ""]
          if set(meta.get("suites", SUITES)) != set(SUITES) else []),
        *([f"Runs as trained (from each run's config.yaml): {'; '.join(_recipe_text(k, r) for k, r in recipes.items())}.",
           ""] if (recipes := meta.get("recipes")) else []),
        f"Training time (s, sum over the epochs): {', '.join(f'{k} {v:.0f}' for k, v in meta['train_s'].items())}. "
        f"Full report with severity curves, reliability diagrams and OOD plots: `eval/report.md`.",
        *(["", meta["curves"]] if meta.get("curves") else []),
    ])


def _recipe_text(name: str, recipe: dict[str, Any]) -> str:
    extra = f", FeatureAPR {recipe['feature_apr']}" if recipe.get("feature_apr") else ""
    return f"{name} = aug.method {recipe['method']}, pad_fill {recipe['pad_fill']}, {recipe['epochs']} epochs{extra}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.split("\n")[0], default_epochs=12)
    p.add_argument("--runs", nargs="+", default=[*(r for r in RUNS if r not in OPTIONAL_RUNS), FEATURE_RUN],
                   choices=[*RUNS, FEATURE_RUN])
    p.add_argument("--feature-layers", nargs="+", default=["layer2"], help="FeatureAPR sites (study 4)")
    p.add_argument("--feature-p", type=float, default=0.5, help="FeatureAPR probability per sample")
    p.add_argument("--batch-size", type=int, default=500, help="evaluation batch size")
    p.add_argument("--suites", nargs="+", default=SUITES, choices=SUITES,
                   help="suites to evaluate (default: all); a subset leaves the others' rows empty (-), e.g. "
                        "--suites ood to evaluate the OOD sets again after a change of their definitions")
    args, out, shared = parse_args(p, argv)
    from aprkit.eval import evaluate

    # what the evaluation and the feature run need is checked before hours of training, not after
    if FEATURE_RUN in args.runs:  # its layers and probability, as attach checks them
        from aprkit.hidden import attach
        from aprkit.models import create_model

        attach(create_model("resnet20"), list(args.feature_layers), p=args.feature_p).remove()
    options = None if args.train_only else eval_options(args, shared)
    runs = {}
    for name in args.runs:
        build, study = None, None
        if name == FEATURE_RUN:
            build = feature_apr_builder(args.feature_layers, args.feature_p, seed=0)
            study = {"feature_apr": {"layers": list(args.feature_layers), "p": args.feature_p, "seed": 0}}
        runs[name] = train_run(RUNS.get(name, RUNS["apr_sp"]), out / "runs" / name, args, build=build, study=study)
    if args.train_only:
        return train_summary(runs)
    curves = training_curves(runs, out)
    trained, wall = {k: r["checkpoint"] for k, r in runs.items()}, {k: r["train_s"] for k, r in runs.items()}
    smoke = args.smoke
    res = evaluate(
        trained, suite=list(args.suites), data=cifar10_spec(shared), out_dir=out / "eval", device=args.device,
        batch_size=SMOKE["batch_size"] if smoke else args.batch_size, limit=SMOKE["eval_limit"] if smoke else None,
        corruptions=SMOKE["corruptions"] if smoke else None, severities=SMOKE["severities"] if smoke else None,
        options=options, resume=args.resume, progress=args.progress,
        title="Study 1/4: APR on CIFAR-10 (ResNet-20)",
    )
    rows = summarise(res)
    meta = {"epochs": 1 if smoke else args.epochs, "smoke": smoke, "suites": list(args.suites),
            "feature_layers": args.feature_layers,
            "feature_p": args.feature_p, "train_s": wall, "checkpoints": trained,
            "natural_ood": f"cue-conflict stimuli of {', '.join(NON_CIFAR_SHAPES)}, area-downscaled to 32 px",
            "curves": curves, "recipes": {k: run_recipe(Path(r["checkpoint"]).parent) for k, r in runs.items()},
            **device_meta(args.device)}
    write_outputs(out, "apr_cifar10", {"meta": meta, "rows": rows,
                                       "directions": {k: d for _, k, _, d in METRICS}}, render(rows, meta))
    return {"rows": rows, "meta": meta}


if __name__ == "__main__":
    run_main(main)
