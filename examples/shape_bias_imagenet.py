"""Shape bias of an ImageNet model on the Geirhos et al. cue-conflict stimuli.

    python examples/shape_bias_imagenet.py \\
        --checkpoint ../shared/models/imagenet-mobilenet_v2-qnnpack-dequantized.pth \\
        --stimuli ../shared/data/cue-conflict --out runs/shape-bias
    python examples/shape_bias_imagenet.py --smoke          # seconds: generated tree, tiny random model

The stimuli folder follows the published layout ``<shape>/<shape>N-<texture>M.png`` (the full 1,280 images
are in the texture-vs-shape repository, ``stimuli/style-transfer-preprocessed-512``). The model's 1000
ImageNet outputs are mapped to the 16 categories by the mean softmax probability over each category's
ImageNet indices. With ``--out`` the per-category plot and ``shape_bias.json`` are written there.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from aprkit.data.cue_conflict import CueConflict, write_synthetic_cue_conflict
from aprkit.eval.analyses.shape_bias import CATEGORIES, REFERENCE_SHAPE_BIAS, measure_shape_bias


def _default_stimuli() -> str:
    shared = os.environ.get("APRKIT_SHARED", str(Path(__file__).resolve().parents[2] / "shared"))
    return str(Path(shared) / "data" / "cue-conflict")


def tiny_random_model(seed: int = 0) -> nn.Module:
    """A random 1000-class model taking float [0, 1] images (for the smoke run only)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 1000)).eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stimuli", default=None, help="cue-conflict folder (default: $APRKIT_SHARED or ../shared data/cue-conflict)")
    p.add_argument("--model", default="torchvision:mobilenet_v2", help="model spec for aprkit.models.load_model")
    p.add_argument("--checkpoint", default=None, help="weights for --model (float state_dict)")
    p.add_argument("--out", default=None, help="folder for shape_bias.png and shape_bias.json (nothing is written without it)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--smoke", action="store_true", help="generated 16x5 tree of 32x32 images and a tiny random model")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            stimuli = Path(tmp) / "cue-conflict"
            write_synthetic_cue_conflict(stimuli, per_shape=5, size=32, seed=0)
            model, name = tiny_random_model(), "tiny-random"
        else:
            from aprkit.models import load_model

            stimuli = Path(args.stimuli or _default_stimuli())
            model = load_model(args.model, num_classes=1000, checkpoint=args.checkpoint, device=args.device)
            name = args.model if args.checkpoint is None else Path(args.checkpoint).stem
        ds = CueConflict(stimuli)
        r = measure_shape_bias(model, ds, device=args.device, batch_size=args.batch_size, progress=not args.smoke)

    print(f"{name} on {len(ds)} stimuli from {stimuli} ({r.n_stimuli} conflicting, {r.n_excluded} with shape == texture excluded)")
    print(f"shape bias {r.shape_bias:.3f}   shape match {r.shape_match:.3f}   texture match {r.texture_match:.3f}")
    print("published: " + ", ".join(f"{k} {v:.2f}" for k, v in REFERENCE_SHAPE_BIAS.items()))
    print(f"{'category':>10}  shape  texture  n  shape bias")
    for cat in CATEGORIES:
        if cat in r.per_category_counts:
            s, t, n = r.per_category_counts[cat]
            print(f"{cat:>10}  {s:5d}  {t:7d}  {n:2d}  {r.per_category[cat]:.2f}")
    if args.out:
        from aprkit.eval.suites.shape_bias import plot_shape_bias

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result = r.to_dict()
        (out / "shape_bias.json").write_text(json.dumps({name: result}, indent=1))
        print(f"wrote {plot_shape_bias({name: result}, out / 'shape_bias.png')} and {out / 'shape_bias.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
