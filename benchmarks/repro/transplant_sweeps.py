"""Study 3 of issue 16: the internal Oppenheim-Lim test across architectures.

Transplant sweeps (aprkit's ``transplant`` suite, i.e. ``aprkit.eval.layer_sweep``: phase and sign codes at each
block's output and pre-activation, with the magnitude-deletion, DC-only and identity controls) on the shipped
ResNet-20 / ResNet-56 and on aprkit-trained GFNet (``gfnet_cifar``), a small timm ViT (4 px patches at 32 px) and
the phase-collapse network (opt-in, ``--models ... phase_collapse``: its block outputs are complex and
``layer_sweep`` accepts only real feature maps today; ``--phase-collapse-checkpoint`` reuses study 2's modulus run).
Writes per model and layer which donor the prediction follows, beside the paper's finding.

    python benchmarks/repro/transplant_sweeps.py --out runs/repro/transplant --epochs 10 \
        --phase-collapse-checkpoint runs/repro/phase_collapse/runs/modulus/model.pt
    python benchmarks/repro/transplant_sweeps.py --out /tmp/smoke --smoke
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.repro.phase_collapse import SMOKE_PC_WIDTHS
from benchmarks.repro.common import SMOKE, cifar10_spec, fmt_pct, markdown_table, parse_args, parser, train_run, write_outputs

SHIPPED = {"resnet20": "resnet20-12fca82f.th", "resnet56": "resnet56-4bfd9763.th"}
TRAINED = {"gfnet_cifar": "repro_cifar10_gfnet_cifar_standard.yaml", "vit_tiny_p4": "repro_cifar10_vit_tiny_p4_standard.yaml",
           "phase_collapse": "repro_cifar10_phase_collapse_modulus.yaml"}
#: (model, site, code) -> the paper's finding (None: every site/code of that model)
FINDINGS = {
    ("gfnet_cifar", None, "phase"): "follows the phase donor",
    ("vit_tiny_p4", None, "phase"): "follows the phase donor",
    ("resnet20", "output", "sign"): "post-ReLU sign inert (follows the magnitude)",
    ("resnet56", "output", "sign"): "post-ReLU sign inert (follows the magnitude)",
    ("resnet20", "input", "sign"): "pre-ReLU sign carries the code in late blocks",
    ("resnet56", "input", "sign"): "pre-ReLU sign carries the code in late blocks",
}
#: models whose blocks have no activation module or functional ReLU (no pre-activation site)
OUTPUT_ONLY = ("gfnet_cifar", "phase_collapse")


def finding(model: str, site: str, code: str) -> str:
    return FINDINGS.get((model, site, code)) or FINDINGS.get((model, None, code)) or "no stated finding"


def summarise(res: Any) -> list[dict[str, Any]]:
    """Per model, site and code: follow-donor / follow-magnitude at the first, last and mean block, DC-only."""
    out = []
    for mid, suites in res.models.items():
        rows = (suites.get("transplant") or {}).get("rows", [])
        for site in dict.fromkeys(r["site"] for r in rows):
            for code in dict.fromkeys(r["code"] for r in rows):
                sel = sorted((r for r in rows if r["site"] == site and r["code"] == code), key=lambda r: r["depth"])
                if not sel:
                    continue
                mean = lambda k: sum(r[k] for r in sel) / len(sel)  # noqa: E731
                out.append({"model": mid, "site": site, "code": code, "first": [sel[0]["follow_donor"], sel[0]["follow_magnitude"]],
                            "last": [sel[-1]["follow_donor"], sel[-1]["follow_magnitude"]],
                            "mean": [mean("follow_donor"), mean("follow_magnitude")],
                            "per_layer": [{k: r.get(k) for k in ("block", "depth", "follow_donor", "follow_magnitude")} for r in sel],
                            "finding": finding(mid, site, code)})
    return out


def render(summary: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    body = [[s["model"], s["site"], s["code"], *(f"{fmt_pct(s[k][0])} / {fmt_pct(s[k][1])}" for k in ("first", "last", "mean")),
             s["finding"]] for s in summary]
    return "\n".join([
        f"# Study 3: internal Oppenheim-Lim test ({'SMOKE RUN, ' if meta['smoke'] else ''}trained models: {meta['epochs']} epochs)", "",
        "Follow rates in %: donor (A's phase / sign) / magnitude (B's). Per-layer tables, the DC-only, magnitude-deletion "
        "and identity controls and the per-layer plots: `eval/report.md`.", "",
        markdown_table(["model", "site", "code", "first block", "last block", "mean over blocks", "paper's finding"], body),
    ])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.split("\n")[0], default_epochs=10)
    p.add_argument("--models", nargs="+", default=[*SHIPPED, "gfnet_cifar", "vit_tiny_p4"], choices=[*SHIPPED, *TRAINED],
                   help="phase_collapse is opt-in: its blocks output complex maps, which layer_sweep rejects today")
    p.add_argument("--phase-collapse-checkpoint", default=None, help="a trained phase_collapse_cifar (study 2's modulus run)")
    p.add_argument("--n-pairs", type=int, default=1000, help="transplant pairs per site")
    p.add_argument("--batch-size", type=int, default=250, help="evaluation batch size")
    args, out, shared = parse_args(p, argv)
    from aprkit.eval import evaluate

    models: dict[str, str] = {}
    for name in args.models:
        if name in SHIPPED:
            models[name] = str(shared / "models" / SHIPPED[name])
        elif name == "phase_collapse" and args.phase_collapse_checkpoint:
            models[name] = args.phase_collapse_checkpoint
        else:
            smoke_ov: list[str] = []
            if args.smoke:  # smaller networks, so the smoke run stays under a minute on one CPU thread
                smoke_ov = [f"model.kwargs.widths=[{', '.join(map(str, SMOKE_PC_WIDTHS))}]"] if name == "phase_collapse" \
                    else ["model.kwargs.depth=2"]
            models[name] = train_run(TRAINED[name], out / "runs" / name, args, overrides=smoke_ov)["checkpoint"]
    n_pairs = 32 if args.smoke else args.n_pairs
    summary = []
    for sites in (("output", "input"), ("output",)):  # no activation module / functional ReLU: output site only
        group = {k: v for k, v in models.items() if (k in OUTPUT_ONLY) == (sites == ("output",))}
        if not group:
            continue
        options = {"transplant_n_pairs": n_pairs, "transplant_n_control": n_pairs, "transplant_sites": list(sites),
                   **({"transplant_every": 4} if args.smoke else {})}
        res = evaluate(group, suite=["transplant"], data=cifar10_spec(shared), out_dir=out / "eval", device=args.device,
                       batch_size=SMOKE["batch_size"] if args.smoke else args.batch_size,
                       limit=SMOKE["eval_limit"] if args.smoke else 2000, options=options, resume=args.resume,
                       progress=args.progress, title="Study 3: internal Oppenheim-Lim test")
        summary += summarise(res)
    meta = {"epochs": 1 if args.smoke else args.epochs, "smoke": args.smoke, "models": models, "n_pairs": n_pairs}
    write_outputs(out, "transplant_sweeps", {"meta": meta, "summary": summary}, render(summary, meta))
    return {"summary": summary, "meta": meta}


if __name__ == "__main__":
    main()
