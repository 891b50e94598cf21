"""APR-P (and APR-SP) in a plain PyTorch training loop, compared with standard training on the same data.

    python examples/train_aprp_loop.py [--epochs 4] [--data ../shared/data/cifar10] [--smoke]

Both runs see the same crops and flips; the APR-SP run adds APR-S (per batch on the device) and trains on
``CE(APR-S batch) + CE(APR-P batch)``. Prints clean accuracy and accuracy on phase-preserving,
amplitude-swapped test images (test image i with the amplitude of test image i+1), where an
amplitude-reliant model fails.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from augment_common import accuracy, datasets, parse_args, small_cnn  # noqa: E402

from aprkit.augment import APRSP, APRSingleBatch, apr_pair  # noqa: E402


def flip_crop(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and 4-pixel translation of a float batch (cheap, batched)."""
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    dy, dx = torch.randint(-4, 5, (2,), generator=g).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def train(method: str, args, train_set) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)  # crops and flips: the same in both runs
    apr_g = torch.Generator().manual_seed(args.seed + 1)  # APR's own draws (they would shift the crops' stream)
    model = small_cnn().to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(args.seed))
    aprs = APRSingleBatch(p=0.5, generator=apr_g)
    aprsp = APRSP(p=0.6, generator=apr_g)
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        for x, y in loader:
            x = flip_crop(x.to(args.device).float().div(255), g)
            y = y.to(args.device)
            if method == "apr-sp":
                x_all, y_all = aprsp(aprs(x), y)
                loss = aprsp.loss(model(x_all), y_all)
            else:
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    print(f"  {method:9s} trained in {time.perf_counter() - t0:.1f} s (last loss {loss.item():.3f})")
    return model


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv, epochs=4, train_size=4000)
    from torchvision.transforms import v2

    train_set, test_set = datasets(args, v2.PILToTensor() if args.data else None)
    xs, ys = map(torch.stack, zip(*[(x, torch.tensor(y)) for x, y in test_set]))
    swapped = apr_pair(xs, torch.arange(len(xs)).roll(-1))  # uint8 in, uint8 out (rounded, clamped)
    swapped_set = torch.utils.data.TensorDataset(swapped, ys)
    print(f"{len(train_set)} training images, {args.epochs} epochs, device {args.device}")
    for method in ("standard", "apr-sp"):
        model = train(method, args, train_set)
        print(f"  {method:9s} clean acc {accuracy(model, test_set, args.device):.3f}   "
              f"amplitude-swapped acc {accuracy(model, swapped_set, args.device):.3f}")


if __name__ == "__main__":
    main()
