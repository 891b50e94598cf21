"""Which code does a trained network read inside? A phase / sign transplant layer sweep.

    python examples/transplant_sweep.py --smoke                       # seconds, tiny random net
    python examples/transplant_sweep.py --model ../shared/models/resnet20-12fca82f.th \
        --data ../shared/data/cifar10/test --per-class 100 --n-pairs 1000 --out runs/transplant

For each block, pairs (A, B) with different predictions get A's carrier (Fourier phase or sign) and
B's magnitude at the block's output and at its last ReLU's input; the table reports how often the
prediction follows A or B, beside the magnitude-deletion, DC-only and identity controls.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from aprkit.eval.analyses.transplant import layer_sweep


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + x)


class _TinyNet(nn.Module):
    def __init__(self, c: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(_Block(c), _Block(c), _Block(c))
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(F.relu(self.stem(x))).mean(dim=(-2, -1)))


@torch.no_grad()
def _smoke_model_and_data(seed: int) -> tuple[nn.Module, torch.Tensor]:
    """A random tiny CNN whose head is re-centred on the images so it predicts several classes."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _TinyNet().eval()
    x = torch.rand(64, 3, 16, 16, generator=g)
    feats = model.blocks(F.relu(model.stem(x))).mean(dim=(-2, -1))
    model.fc.weight.copy_(torch.randn(model.fc.weight.shape, generator=g) / feats.std(0).clamp_min(1e-6))
    model.fc.bias.copy_(-(feats @ model.fc.weight.T).mean(0))
    return model, x


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny random network on random images (seconds)")
    ap.add_argument("--model", help="aprkit.models.load_model spec (name, checkpoint path, torchvision:<name>)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data", help="folder of <class>/*.png")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--n-pairs", type=int, default=500)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for sweep.png (nothing is written without it)")
    args = ap.parse_args(argv)

    if args.smoke:
        model, data = _smoke_model_and_data(args.seed)
        n_pairs, n_control = 32, 32
    else:
        if not (args.model and args.data):
            ap.error("give --smoke, or --model and --data")
        from aprkit.eval.analyses.transplant import read_folder
        from aprkit.models import load_model

        model = load_model(args.model, checkpoint=args.checkpoint)
        images, labels, classes = read_folder(args.data, args.per_class)
        with torch.no_grad():
            n_out = model(images[:1].float() / 255).shape[1]
        data = (images, labels) if n_out == len(classes) else images
        n_pairs, n_control = args.n_pairs, 256
    plot = Path(args.out) / "sweep.png" if args.out else None
    res = layer_sweep(model, data, "all", codes=("phase", "sign"), sites=("output", "input"), every=args.every,
                      n_pairs=n_pairs, n_control=n_control, generator=torch.Generator().manual_seed(args.seed),
                      skip_front=True, plot=plot)
    print(res["table"])
    if res["figure"]:
        print(f"plot: {res['figure']}")
    return res


if __name__ == "__main__":
    main()
