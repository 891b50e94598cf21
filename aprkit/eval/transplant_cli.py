"""Command line of the internal transplant test: ``python -m aprkit.eval.transplant --model SPEC --data DIR``.

Reads a ``<class>/*.png`` folder, runs :func:`aprkit.eval.transplant.layer_sweep` over the model's
blocks and prints the Markdown table; with ``--out`` it writes ``sweep.json``, ``sweep.md``,
``sweep.png`` and a resume cache there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_text
from .transplant import layer_sweep

__all__ = ["main", "read_folder"]


class _PrefixedCache:
    """Namespaces a ``ResultCache`` by the run's model and data, so a shared folder never mixes runs."""

    def __init__(self, cache: Any, prefix: str) -> None:
        self.cache, self.prefix = cache, prefix

    def get(self, key: str) -> dict | None:
        return self.cache.get(self.prefix + key)

    def put(self, key: str, value: dict) -> None:
        self.cache.put(self.prefix + key, value)


def read_folder(root: str | os.PathLike[str], per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 images ``(N, 3, H, W)``, labels ``(N,)`` and class names from ``root/<class>/*.png|jpg``.

    Class index = sorted folder order; at most ``per_class`` files (sorted by name) per class. All images
    must share one size. Decoding goes through :func:`aprkit.data.folder.read_image`.
    """
    from ..data.folder import find_classes, read_image

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist; expected a folder of <class>/*.png")
    classes = find_classes(root)
    if not classes:
        raise FileNotFoundError(f"{root} has no class folders <class>/*.png")
    xs, ys = [], []
    for k, c in enumerate(classes):
        files = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        for f in files[:per_class]:
            xs.append(read_image(f))
            ys.append(k)
    if not xs:
        raise FileNotFoundError(f"no .png/.jpg images in the class folders of {root}")
    sizes = {tuple(x.shape) for x in xs}
    if len(sizes) > 1:
        raise ValueError(f"images under {root} differ in size ({sorted(sizes)[:3]}...); expected one size")
    return torch.stack(xs), torch.tensor(ys), classes


def main(argv: Sequence[str] | None = None) -> int:
    """Run a layer sweep from the command line and print the Markdown table."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m aprkit.eval.transplant", description="Layer sweep of the internal Oppenheim-Lim transplant test (phase/sign codes).")
    ap.add_argument("--model", required=True, help="aprkit.models.load_model spec: name, checkpoint path, torchvision:<name>")
    ap.add_argument("--checkpoint", default=None, help="weights for --model (e.g. torchvision:mobilenet_v2)")
    ap.add_argument("--data", required=True, help="folder of <class>/*.png (CIFAR-10 test, cue-conflict)")
    ap.add_argument("--per-class", type=int, default=None, help="images per class folder (default: all)")
    ap.add_argument("--layers", default="all", help="'all' (the blocks) or comma-separated layer names")
    ap.add_argument("--codes", default="phase,sign")
    ap.add_argument("--sites", default="output,input")
    ap.add_argument("--every", type=int, default=1, help="every k-th block (the last is always kept)")
    ap.add_argument("--n-pairs", type=int, default=1000)
    ap.add_argument("--n-control", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-labels", action="store_true", help="ignore folder labels (automatic when they do not match the outputs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-front", action="store_true",
                    help="do not recompute the blocks before the intervened one (block-sequential nets; the identity control checks it)")
    ap.add_argument("--out", default=None, help="folder for sweep.json, sweep.md, sweep.png and the resume cache/")
    args = ap.parse_args(argv)

    from ..models import load_model

    model = load_model(args.model, checkpoint=args.checkpoint, device=args.device)
    images, labels, classes = read_folder(args.data, args.per_class)
    with torch.no_grad():
        n_out = model(images[:1].float().div(255).to(args.device)).shape[1]
    if args.no_labels or n_out != len(classes):
        labels = None
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    layers = "all" if args.layers == "all" else args.layers.split(",")
    cache = None
    if out is not None:
        from .cache import ResultCache

        prefix = f"transplant|{args.model}|{args.checkpoint}|{args.data}|{args.per_class}|labels={labels is not None}|seed={args.seed}|"
        cache = _PrefixedCache(ResultCache(out / "cache"), prefix)
    res = layer_sweep(model, (images, labels) if labels is not None else images, layers,
                      codes=args.codes.split(","), sites=args.sites.split(","), every=args.every,
                      n_pairs=args.n_pairs, n_control=args.n_control, batch_size=args.batch_size, skip_front=args.skip_front,
                      generator=torch.Generator().manual_seed(args.seed), progress=True,
                      plot=(out / "sweep.png") if out else None, cache=cache)
    acc = res["clean_accuracy"]
    head = (f"model={args.model} data={args.data} images={res['n_images']} pairs={args.n_pairs} "
            f"clean_acc={'n/a' if acc is None else format(100 * acc, '.2f') + '%'}")
    print(head)
    print(res["table"])
    for r in res["rows"]:
        for f in r["flags"]:
            print(f"  {r['layer']}@{r['site']} {r['code']}: {f}")
    if out is not None:
        atomic_write_text(out / "sweep.json", json.dumps({**res, "command": vars(args)}, indent=1))
        atomic_write_text(out / "sweep.md", head + "\n\n" + res["table"] + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
