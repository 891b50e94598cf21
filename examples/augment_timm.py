"""APR-P as timm's ``mixup_fn`` with a timm model and ``SoftTargetCrossEntropy``, as in timm's train loop.

The batch is normalised on the device first, as timm's prefetcher does; ``APRMixup.from_data_config`` takes the
same mean/std, so APR-P still recombines the [0, 1] images (un-normalise, recombine, clamp, re-normalise).

    python examples/augment_timm.py [--model resnet10t] [--data ../shared/data/cifar10] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import timm
import torch
from timm.data import resolve_data_config
from timm.loss import SoftTargetCrossEntropy
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from augment_common import accuracy, datasets, parse_args  # noqa: E402

from aprkit.augment.adapters import APRMixup, APRSingleV2  # noqa: E402
from aprkit.models import Normalize  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    def model_option(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--model", default="resnet10t", help="a timm model name (default resnet10t)")

    args = parse_args(__doc__.splitlines()[0], argv, extra=model_option)
    model_name = args.model
    from torchvision.transforms import v2

    train_tf = v2.Compose([v2.RandomHorizontalFlip(), APRSingleV2(p=0.5)] + ([v2.PILToTensor()] if args.data else []))
    train, test = datasets(args, train_tf)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         drop_last=True)
    backbone = timm.create_model(model_name, pretrained=False, num_classes=10)
    cfg = resolve_data_config({}, model=backbone)  # the mean/std timm's loader normalises with
    model = nn.Sequential(nn.Upsample(scale_factor=2), backbone).to(args.device, memory_format=torch.channels_last)
    mean = torch.tensor(cfg["mean"], device=args.device).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"], device=args.device).view(1, -1, 1, 1)
    # wherever timm expects a Mixup: soft targets (num_classes, label_smoothing=0.1), APR-P in pixel space
    mixup_fn = APRMixup.from_data_config(cfg, p=0.6, num_classes=10)
    criterion = SoftTargetCrossEntropy()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        for x, y in loader:
            x = x.to(args.device).float().div(255).sub(mean).div(std)  # what timm's prefetcher hands over
            x, y = mixup_fn(x.contiguous(memory_format=torch.channels_last), y.to(args.device))
            loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net = Normalize(model, cfg["mean"], cfg["std"], num_classes=10, input_size=(3, 32, 32)).to(args.device)
        acc = accuracy(net, test, args.device)  # [0, 1] test images, normalised inside
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}  test acc {acc:.3f}  "
              f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
