"""APR-SP on the device with kornia: the loader ships uint8 batches, all augmentation runs batched on the GPU/CPU.

    python examples/augment_kornia.py --device cuda [--data ../shared/data/cifar10] [--smoke]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import kornia.augmentation as K
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from augment_common import accuracy, datasets, parse_args, small_cnn  # noqa: E402

from aprkit.augment import APRSP  # noqa: E402
from aprkit.augment.adapters import RandomAPRSingle  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    from torchvision.transforms import v2

    train, test = datasets(args, v2.PILToTensor() if args.data else None)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         drop_last=True, pin_memory=args.device.startswith("cuda"))
    gpu_aug = K.AugmentationSequential(  # APR-S first, then the crop padded with grey 128 (as the reference)
        RandomAPRSingle(p_apr=0.5), K.RandomCrop((32, 32), padding=4, fill=128 / 255), K.RandomHorizontalFlip(),
        data_keys=["input"],
    ).to(args.device)
    aprsp = APRSP(p=0.6)
    model = small_cnn().to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        for x, y in loader:
            x = x.to(args.device, non_blocking=True).float().div(255)
            y = y.to(args.device, non_blocking=True)
            x_all, y_all = aprsp(gpu_aug(x), y)  # APR-S batch and its APR-P recombination
            loss = aprsp.loss(model(x_all), y_all)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}  test acc {accuracy(model, test, args.device):.3f}  "
              f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
