"""APR with an albumentations pipeline: APR-S per image, and APR-P with partners passed per call (like FDA).

    NO_ALBUMENTATIONS_UPDATE=1 python examples/augment_albumentations.py [--data ../shared/data/cifar10] [--smoke]

Needs the optional extra: ``pip install aprkit[albumentations]``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from augment_common import accuracy, datasets, parse_args, small_cnn  # noqa: E402


class AlbumentationsDataset(torch.utils.data.Dataset):
    """Feeds HWC uint8 arrays through an albumentations pipeline; APR-P partners are random other images.

    Albumentations (2.0) seeds a pipeline once: every DataLoader worker would copy its stream, and this dataset's
    partner generator, and draw the same augmentations in every epoch. :func:`seed_worker` re-seeds both per worker
    and epoch from the loader's own seed, so runs repeat with the loader's generator.
    """

    def __init__(self, base, pipeline, seed: int = 0) -> None:
        self.base, self.pipeline = base, pipeline
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.base)

    def _hwc(self, i: int) -> np.ndarray:
        x, _ = self.base[i]
        return np.array(x) if not isinstance(x, torch.Tensor) else x.permute(1, 2, 0).numpy()

    def __getitem__(self, i: int):
        partners = [self._hwc(int(j)) for j in self.rng.integers(0, len(self.base), size=2)]
        out = self.pipeline(image=self._hwc(i), apr_metadata=partners)["image"]
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1), self.base[i][1]


def seed_worker(_: int) -> None:
    """``worker_init_fn``: this worker's seed (another per worker and epoch) for the pipeline and the partners."""
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() % 2**32
    info.dataset.pipeline.set_random_seed(seed)
    info.dataset.rng = np.random.default_rng(seed)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    from aprkit.augment.adapters import AlbuAPRPair, AlbuAPRSingle

    args = parse_args(__doc__.splitlines()[0], argv)
    pipeline = A.Compose([
        A.HorizontalFlip(p=0.5),
        AlbuAPRSingle(recombine_p=0.5),  # APR-S
        AlbuAPRPair(metadata_key="apr_metadata", p=0.3),  # APR-P against a partner from the call's metadata
    ], seed=args.seed)
    train, test = datasets(args)
    loader = torch.utils.data.DataLoader(AlbumentationsDataset(train, pipeline, args.seed), batch_size=args.batch_size,
                                         shuffle=True, num_workers=args.workers, drop_last=True,
                                         worker_init_fn=seed_worker,
                                         generator=torch.Generator().manual_seed(args.seed))
    model = small_cnn().to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x.to(args.device).float().div(255)), y.to(args.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}  test acc {accuracy(model, test, args.device):.3f}  "
              f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
