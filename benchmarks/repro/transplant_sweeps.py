"""Study 3 of issue 16: the internal Oppenheim-Lim test across architectures.

Transplant sweeps (aprkit's ``transplant`` suite, i.e. ``aprkit.eval.layer_sweep``: phase and sign codes at each
block's output and pre-activation, with the magnitude-deletion, DC-only and identity controls) on the shipped
ResNet-20 / ResNet-56 and on aprkit-trained GFNet (``gfnet_cifar``), a small timm ViT (4 px patches at 32 px) and
the phase-collapse network (opt-in, ``--models ... phase_collapse``, as it needs training or
``--phase-collapse-checkpoint``, e.g. study 2's modulus run). Its block outputs are complex: the sign code there is
the complex phase ``z/|z|`` and the phase code the Fourier phase of the complex map; output site only.
Writes per model and layer which donor the prediction follows, beside the paper's finding, and the controls.

    python benchmarks/repro/transplant_sweeps.py --out runs/repro/transplant --epochs 10 \
        --models resnet20 resnet56 gfnet_cifar vit_tiny_p4 phase_collapse \
        --phase-collapse-checkpoint runs/repro/phase_collapse/runs/modulus_skip/model.pt
    python benchmarks/repro/transplant_sweeps.py --out /tmp/smoke --smoke
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.repro.common import (
    SMOKE,
    cifar10_spec,
    device_meta,
    fmt_pct,
    markdown_table,
    parse_args,
    parser,
    run_main,
    train_run,
    train_summary,
    training_curves,
    write_outputs,
)
from benchmarks.repro.phase_collapse import REDUCED_PC_WIDTHS, SMOKE_PC_WIDTHS, widths_override

SHIPPED = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
TRAINED = {"gfnet_cifar": "repro_cifar10_gfnet_cifar_standard.yaml",
           "vit_tiny_p4": "repro_cifar10_vit_tiny_p4_standard.yaml",
           "phase_collapse": "repro_cifar10_phase_collapse_modulus_skip.yaml"}  # the paper's headline network
DEFAULT_MODELS = [*SHIPPED, "gfnet_cifar", "vit_tiny_p4"]
#: ``--reduced``: smaller trained networks for a CPU budget (one thread: GFNet ~200 images/s instead of ~35,
#: ViT ~100 instead of ~54, the phase-collapse net ~125 instead of ~7); the results say so
REDUCED = {"gfnet_cifar": ["model.kwargs.depth=6", "model.kwargs.embed_dim=128"],
           "vit_tiny_p4": ["model.kwargs.depth=6"],
           "phase_collapse": [widths_override(REDUCED_PC_WIDTHS)]}
SMOKE_OVERRIDES = {"gfnet_cifar": ["model.kwargs.depth=2"], "vit_tiny_p4": ["model.kwargs.depth=2"],
                   "phase_collapse": [widths_override(SMOKE_PC_WIDTHS)]}
#: (model, site, code) -> the paper's finding (None: every site/code of that model)
FINDINGS = {
    # the paper: "the prediction follows the phase or sign donor" (GFNet, ViT-B/16)
    ("gfnet_cifar", None, "phase"): "follows the phase / sign donor",
    ("gfnet_cifar", None, "sign"): "follows the phase / sign donor",
    # at the block outputs (the residual stream): its MLPs' pre-activations cannot move the stream on their own
    ("vit_tiny_p4", "output", "phase"): "follows the phase / sign donor",
    ("vit_tiny_p4", "output", "sign"): "follows the phase / sign donor",
    ("resnet20", "output", "sign"): "post-ReLU sign inert (follows the magnitude)",
    ("resnet56", "output", "sign"): "post-ReLU sign inert (follows the magnitude)",
    ("resnet20", "input", "sign"): "pre-ReLU sign carries the code in late blocks",
    ("resnet56", "input", "sign"): "pre-ReLU sign carries the code in late blocks",
}
#: (model, site) -> the paper's finding on the DC-only control at the last block
DC_FINDINGS = {("resnet20", "output"): "DC-only readout (keeps the prediction)",
               ("resnet56", "output"): "DC-only readout (keeps the prediction)"}
#: models swept at their block outputs only: the phase-collapse net has no pre-activation site; GFNet (F.gelu) has one,
#: which this study does not sweep
OUTPUT_ONLY = ("gfnet_cifar", "phase_collapse")
#: models whose block outputs are tokens with a class token: swept again with the class token taking the donor's
#: sign (``transplant_prefix_tokens="sign"``), as the model id ``<name>-cls-sign``; by default it is the magnitude
#: image's, so a ViT reading its class token follows the magnitude trivially at the last block
CLASS_TOKEN = ("vit_tiny_p4",)
CLS_SIGN = "-cls-sign"
#: the controls of each row (agreement with the clean prediction; ``*_accuracy`` with labels)
CONTROLS = {"deletion": "deletion_agreement", "dc_only": "dc_only_agreement", "identity": "identity_agreement"}


def finding(model: str, site: str, code: str) -> str:
    model = model.removesuffix(CLS_SIGN)
    return FINDINGS.get((model, site, code)) or FINDINGS.get((model, None, code)) or "no stated finding"


def summarise(res: Any) -> list[dict[str, Any]]:
    """Per model, site and code: follow-donor / follow-magnitude and the controls (magnitude deletion, DC-only,
    identity: agreement with the clean prediction, and accuracy where the suite had labels) at the first, last and
    mean block, as the transplant suite's rows give them."""
    out = []
    for mid, suites in res.models.items():
        result = suites.get("transplant") or {}
        rows = result.get("rows", [])
        for site in dict.fromkeys(r["site"] for r in rows):
            for code in dict.fromkeys(r["code"] for r in rows):
                sel = sorted((r for r in rows if r["site"] == site and r["code"] == code), key=lambda r: r["depth"])
                if not sel:
                    continue

                def mean(k: str, sel: list[dict] = sel) -> float | None:
                    vals = [r[k] for r in sel if r.get(k) is not None]
                    return sum(vals) / len(vals) if vals else None

                keys = [*CONTROLS.values(), *(k for k in ("deletion_accuracy", "dc_only_accuracy") if k in sel[-1])]
                out.append({"model": mid, "site": site, "code": code, "complex": bool(sel[-1].get("complex")),
                            "first": [sel[0]["follow_donor"], sel[0]["follow_magnitude"]],
                            "last": [sel[-1]["follow_donor"], sel[-1]["follow_magnitude"]],
                            "mean": [mean("follow_donor"), mean("follow_magnitude")],
                            "controls": {k: {"last": sel[-1].get(k), "mean": mean(k)} for k in keys},
                            "clean_accuracy": result.get("clean_accuracy"),
                            "per_layer": [{k: r.get(k) for k in ("block", "depth", "follow_donor", "follow_magnitude",
                                                                 *keys)} for r in sel],
                            "finding": finding(mid, site, code), "dc_finding": DC_FINDINGS.get((mid, site), "-")})
    return out


def _pair(a: float | None, b: float | None) -> str:
    return f"{fmt_pct(a)} / {fmt_pct(b)}"


def render(summary: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """``results.md``: one table of follow rates, one of the controls."""
    from aprkit.eval.analyses.transplant_tables import code_label  # "sign (complex phase)" for complex maps

    follow = [[s["model"], s["site"], code_label(s), *(_pair(*s[k]) for k in ("first", "last", "mean")), s["finding"]]
              for s in summary]
    controls = [[s["model"], s["site"], code_label(s),
                 *(_pair(s["controls"][k]["last"], s["controls"][k]["mean"]) for k in CONTROLS.values()),
                 fmt_pct(s["clean_accuracy"]), s["dc_finding"]] for s in summary]
    smoke = "SMOKE RUN, " if meta["smoke"] else ""
    models = meta.get("models", {})
    own = [m for m in models if m not in SHIPPED]
    # older results name no trained runs: a model trained here sits in runs/<its name>/ (a given checkpoint elsewhere)
    trained = meta.get("trained", [m for m in own if Path(str(models[m])).parent.name == m])
    given = [m for m in own if m not in trained]  # --phase-collapse-checkpoint
    what = ", ".join([*([f"trained here: {', '.join(trained)}, {meta['epochs']} epochs"] if trained else []),
                      *([f"given checkpoints: {', '.join(given)}"] if given else []),
                      *(["shipped checkpoints"] if any(m in SHIPPED for m in models) else [])])
    return "\n".join([
        f"# Study 3: internal Oppenheim-Lim test ({smoke}{what})", "",
        *([f"Reduced networks for a CPU budget: {'; '.join(f'{k}: {chr(32).join(v)}' for k, v in red.items())}.", ""]
          if (red := meta.get("reduced")) else []),
        "## Which donor the prediction follows", "",
        "Follow rates in %: donor (A's phase / sign) / magnitude (B's). On complex maps (phase_collapse) the sign is "
        "the complex phase z/|z| and the phase the Fourier phase of the complex map. ViT: the patch tokens form the "
        "grid; its class token is B's (so at the last block, whose class token the head reads, the prediction "
        f"follows B by construction), or, in the `{CLS_SIGN}` rows, A's sign on B's absolute values. Per-layer "
        "tables and plots: `eval/report.md`.", "",
        markdown_table(["model", "site", "code", "first block", "last block", "mean over blocks", "paper's finding"],
                       follow), "",
        "## Controls", "",
        "Agreement with the clean prediction in %, last block / mean over blocks: magnitude deleted (each image's "
        "magnitude replaced by the dataset mean), DC-only (channel means only; the same for both codes), identity "
        "(A = B, must be 100). Accuracies under the controls: `results.json` and `eval/report.md`.", "",
        markdown_table(["model", "site", "code", "magnitude deleted", "DC-only", "identity", "clean acc",
                        "paper's finding (DC-only)"], controls),
        *(["", "## Training of the networks trained here", "", meta["curves"]] if meta.get("curves") else []),
    ])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.split("\n")[0], default_epochs=10)
    p.add_argument("--models", nargs="+", default=None, choices=[*SHIPPED, *TRAINED],
                   help=f"default: {' '.join(DEFAULT_MODELS)}, and phase_collapse with --smoke; phase_collapse is "
                        "opt-in otherwise (it is trained here unless --phase-collapse-checkpoint is given)")
    p.add_argument("--phase-collapse-checkpoint", default=None,
                   help="a trained phase_collapse_cifar (study 2's modulus_skip run, or any)")
    p.add_argument("--n-pairs", type=int, default=1000, help="transplant pairs per site")
    p.add_argument("--reduced", action="store_true",
                   help="smaller trained networks for a CPU budget (" + "; ".join(
                       f"{k}: {' '.join(v)}" for k, v in REDUCED.items()) + "); stated in the results")
    p.add_argument("--batch-size", type=int, default=250, help="evaluation batch size")
    args, out, shared = parse_args(p, argv)
    from aprkit.eval import evaluate

    models: dict[str, str] = {}
    runs: dict[str, Any] = {}
    names = args.models or [*DEFAULT_MODELS, *(["phase_collapse"] if args.smoke else [])]
    given = [shared / "models" / SHIPPED[n] for n in names if n in SHIPPED]  # checked before any training
    if "phase_collapse" in names and args.phase_collapse_checkpoint:
        given.append(Path(args.phase_collapse_checkpoint).expanduser())
    missing = [str(f) for f in given if not f.is_file()]
    if missing and not args.train_only:
        raise SystemExit(f"transplant_sweeps: checkpoint(s) not found: {', '.join(missing)} (--shared holds the "
                         "shipped ResNets under models/; --phase-collapse-checkpoint names study 2's run)")
    for name in names:
        if name in SHIPPED:
            models[name] = str(shared / "models" / SHIPPED[name])
        elif name == "phase_collapse" and args.phase_collapse_checkpoint:
            models[name] = args.phase_collapse_checkpoint
        else:
            # --smoke: smaller networks, so the smoke run stays under a minute on one CPU thread
            ov = SMOKE_OVERRIDES[name] if args.smoke else REDUCED[name] if args.reduced else []
            runs[name] = train_run(TRAINED[name], out / "runs" / name, args, overrides=ov)
            models[name] = runs[name]["checkpoint"]
    if args.train_only:
        return train_summary(runs)
    curves = training_curves(runs, out) if runs else None
    n_pairs = 32 if args.smoke else args.n_pairs
    summary = []
    groups = [  # (models, sites, extra options); no activation module / functional ReLU: output site only
        ({k: v for k, v in models.items() if k not in OUTPUT_ONLY}, ("output", "input"), {}),
        ({k: v for k, v in models.items() if k in OUTPUT_ONLY}, ("output",), {}),
        ({k + CLS_SIGN: v for k, v in models.items() if k in CLASS_TOKEN}, ("output", "input"),
         {"transplant_prefix_tokens": "sign"}),
    ]
    for group, sites, extra in groups:
        if not group:
            continue
        options = {"transplant_n_pairs": n_pairs, "transplant_n_control": n_pairs, "transplant_sites": list(sites),
                   **({"transplant_every": 4} if args.smoke else {}), **extra}
        with warnings.catch_warnings():  # the -cls-sign labels are the same weights measured with other options on
            # purpose: evaluate's advice to reuse the other label's results does not apply to them
            warnings.filterwarnings("ignore", ".* holds results of these weights under the label", RuntimeWarning)
            res = evaluate(group, suite=["transplant"], data=cifar10_spec(shared), out_dir=out / "eval",
                           device=args.device, batch_size=SMOKE["batch_size"] if args.smoke else args.batch_size,
                           limit=SMOKE["eval_limit"] if args.smoke else 2000, options=options, resume=args.resume,
                           progress=args.progress, title="Study 3: internal Oppenheim-Lim test")
        summary += summarise(res)
    meta = {"epochs": 1 if args.smoke else args.epochs, "trained": sorted(runs), "smoke": args.smoke, "models": models,
            "n_pairs": n_pairs,
            "reduced": {k: v for k, v in REDUCED.items() if k in runs} if args.reduced and not args.smoke else {},
            "curves": curves, **device_meta(args.device, eval_amp=False)}  # the transplant suite runs in float32
    write_outputs(out, "transplant_sweeps", {"meta": meta, "summary": summary}, render(summary, meta))
    return {"summary": summary, "meta": meta}


if __name__ == "__main__":
    run_main(main)
