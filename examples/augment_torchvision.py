"""APR-SP with a torchvision ``transforms.v2`` dataloader: APR-S per image in the workers, APR-P per batch.

    python examples/augment_torchvision.py            # a couple of epochs on generated shapes
    python examples/augment_torchvision.py --data ../shared/data/cifar10 --epochs 5
    python examples/augment_torchvision.py --smoke    # seconds
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from augment_common import accuracy, datasets, parse_args, small_cnn  # noqa: E402

from aprkit.augment import APRSP  # noqa: E402
from aprkit.augment.adapters import APRSingleV2  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    # APR-S is a dataloader transform; it returns the kind it is given (PIL, uint8 tensor, tv_tensors.Image/Video).
    # seed=: each DataLoader worker derives its own stream from it and the loader's seed (reproducible run to run)
    # APR-S first, on the whole image, then the crop padded with grey 128 (the reference's order and fill)
    train_tf = v2.Compose([APRSingleV2(p=0.5, seed=args.seed), v2.RandomCrop(32, padding=4, fill=128),
                           v2.RandomHorizontalFlip(), v2.PILToTensor() if args.data else v2.Identity()])
    train, test = datasets(args, train_tf)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         drop_last=True, generator=torch.Generator().manual_seed(args.seed))
    model = small_cnn().to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    aprsp = APRSP(p=0.6)  # APR-P half of the batch, on the device
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        for x, y in loader:
            x, y = x.to(args.device).float().div(255), y.to(args.device)
            x_all, y_all = aprsp(x, y)
            loss = aprsp.loss(model(x_all), y_all)  # CE(APR-S batch) + CE(APR-P batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}  test acc {accuracy(model, test, args.device):.3f}  "
              f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
