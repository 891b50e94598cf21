"""Shared helpers of the augmentation examples (data, a small CNN, accuracy); not part of aprkit, not runnable."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn


def parse_args(description: str, argv: list[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None, **defaults) -> argparse.Namespace:
    """The examples' common options, and ``extra``'s (a function adding an example's own arguments)."""
    ap = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(ap)
    ap.add_argument("--data", default=None, help="ImageFolder root (e.g. ../shared/data/cifar10); default: generated shapes")
    ap.add_argument("--epochs", type=int, default=defaults.get("epochs", 2))
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-size", type=int, default=None,
                    help=f"training images: the generated set's size (default {defaults.get('train_size', 5000)}), or "
                         "an evenly spaced subset of --data (default: all of it)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="a few batches only (seconds)")
    args = ap.parse_args(argv)
    args.generated_size = args.train_size or defaults.get("train_size", 5000)
    if args.smoke:
        args.epochs, args.train_size, args.generated_size, args.batch_size = 1, 64, 64, 32
    torch.manual_seed(args.seed)
    return args


def datasets(args: argparse.Namespace, train_transform=None):
    """``(train, test)`` datasets yielding ``(image, label)``: an ImageFolder (PIL images, ``train``/``test``
    sub-folders) when ``--data`` is given, else aprkit's generated shape x texture images (uint8 tensors)."""
    if args.data:
        from pathlib import Path

        from torchvision.datasets import ImageFolder
        from torchvision.transforms import v2

        test_tf = v2.Compose([v2.PILToTensor()])
        root = Path(args.data)
        train = ImageFolder(str(root / "train"), transform=train_transform)
        test = ImageFolder(str(root / "test"), transform=test_tf)
        if args.train_size:  # evenly spaced: the class-sorted folders keep every class
            n = min(args.train_size, len(train))
            train = torch.utils.data.Subset(train, [i * len(train) // n for i in range(n)])
        if args.smoke:
            test = torch.utils.data.Subset(test, range(0, len(test), max(1, len(test) // 256)))
        return train, test
    from aprkit.data.synthetic import SyntheticShapes

    class Mapped(torch.utils.data.Dataset):
        def __init__(self, base, transform):
            self.base, self.transform = base, transform

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            x, y = self.base[i]
            return (self.transform(x) if self.transform is not None else x), y

    n_test = 128 if args.smoke else 1000
    return (Mapped(SyntheticShapes(args.generated_size, split="train", seed=args.seed), train_transform),
            SyntheticShapes(n_test, split="test", seed=args.seed))


def small_cnn(num_classes: int = 10) -> nn.Module:
    """A small CNN taking float images in [0, 1]."""
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    return nn.Sequential(block(3, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2), block(64, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))


@torch.no_grad()
def accuracy(model: nn.Module, dataset, device: str, batch_size: int = 256) -> float:
    """Top-1 accuracy on uint8 ``(C, H, W)`` images."""
    model.eval()
    correct = total = 0
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        pred = model(x.to(device).float().div(255)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    model.train()
    return correct / max(total, 1)
