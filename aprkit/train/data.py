"""Training input pipelines: datasets from the config, per-epoch batch order, and the two input paths.

- ``gpu`` path: uint8 images go to the device as whole batches (the decoded dataset is kept there as one
  tensor when it fits, ``data.in_memory``); APR-S, random crop, flip and APR-P run batched on the device.
  Only work that needs per-image CPU code (ImageNet random-resized crops, AugMix) stays in the workers.
- ``loader`` path: the classic per-image torchvision pipeline in DataLoader workers (APR-S with
  ``aprkit.augment.APRSingle``, ``RandomCrop``, ``RandomHorizontalFlip``), uint8 batches, float on device.

Batch order comes from ``DistributedSampler(seed=train.seed)`` (also with one process). On the ``loader`` path every
per-image random choice (the dataset's own ``__getitem__`` included) comes from a seed derived from
``(seed, epoch, index)``; on the ``gpu`` path the batched
augmentations draw from a generator the loop reseeds per ``(seed, rank, step)``. Either way an epoch is a pure
function of the config (and, on the ``gpu`` path, of the batch size and world size, which fix the steps): resuming
mid-epoch skips the batches already done and draws the same data.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .._checks import dataset_len
from ..data.loading import SubsetDataset, batch_source, dataset_tensors, worker_stop_signals
from ..data.seeded import SeededTransform, draws_random_numbers
from .config import Config, expand_env
from .data_checks import (
    check_crop_size,
    check_label_range,
    check_labels,
    check_same_classes,
    check_several_classes,
    check_test_size,
    class_mismatch,
)
from .state import derive_seed
from .trajectory import apr_s_where, per_image_transform

__all__ = ["load_datasets", "SubsetDataset", "SeededTransform", "EpochBatches", "cpu_train_transform",
           "cpu_test_transform"]


def _subset(ds: Dataset, limit: int | None, seed: int, tag: str) -> Dataset:
    n = dataset_len(ds)
    if limit is None or limit >= n:
        return ds
    g = torch.Generator().manual_seed(derive_seed(seed, tag) % (1 << 62))
    sub = SubsetDataset(ds, torch.randperm(n, generator=g)[:limit].sort().values)
    sub.drawn_by_limit = True  # the report says so (a subset given as datasets= is the caller's)
    return sub


def limit_datasets(cfg: Config, train: Dataset, test: Dataset | None) -> tuple[Dataset, Dataset | None]:
    """``data.limit`` / ``data.test_limit`` applied to given datasets (``fit(..., datasets=...)``), as
    :func:`load_datasets` applies them to the ones it opens."""
    return (_subset(train, cfg.data.limit, cfg.train.seed, "train-subset"),
            None if test is None else _subset(test, _test_limit(cfg), cfg.train.seed, "test-subset"))


def _test_limit(cfg: Config) -> int | None:
    return cfg.data.test_limit if cfg.data.test_limit is not None else cfg.data.limit


def load_datasets(cfg: Config) -> tuple[Dataset, Dataset | None]:
    """Training and test datasets of ``cfg.data`` (seeded random subsets when ``limit``/``test_limit`` are set).

    ``data.limit`` caps both splits (a smoke run evaluates as few images as it trains on); ``data.test_limit``,
    when set, caps the test split instead (larger than the test set: all of it).
    """
    from ..data import get_dataset, has_splits, parse_spec

    spec = expand_env(cfg.data.dataset)
    train_ds = _open_split(spec, cfg.data.train_split, "data.train_split")
    check_several_classes(train_ds, cfg.model.num_classes)  # the whole data: a small data.limit may draw one class
    train = _subset(train_ds, cfg.data.limit, cfg.train.seed, "train-subset")
    check_labels(train, cfg.model.num_classes, f"the training data {spec}")
    test = None
    if cfg.train.eval_every > 0:
        tspec = expand_env(cfg.data.test_dataset or cfg.data.dataset)
        if not cfg.data.test_dataset and not has_splits(spec):  # its split is ignored: the test set is the train set
            raise ValueError(f"data.dataset={spec!r} has no train/test splits (a {parse_spec(spec)[0]}: dataset "
                             "ignores the split, so the test set would be the training images): set "
                             "data.test_dataset (e.g. folder:/path/test), or train.eval_every=0")
        test_ds = _open_split(tspec, cfg.data.test_split, "data.test_split")
        if class_mismatch(train_ds, test_ds):  # a test folder with fewer classes: labelled by the training classes
            folder = parse_spec(tspec)[0] == "folder"
            check_same_classes(train_ds, test_ds, f"the test data {tspec}", relabel=folder)
            test_ds = get_dataset(tspec, cfg.data.test_split, classes=list(train_ds.classes))
        test = _subset(test_ds, _test_limit(cfg), cfg.train.seed, "test-subset")
        check_labels(test, cfg.model.num_classes, f"the test data {tspec}")
    return train, test


def _open_split(spec: str, split: str, key: str) -> Any:
    """``get_dataset(spec, split)``; a split the dataset does not have is named by its config ``key``."""
    from ..data import get_dataset

    try:
        return get_dataset(spec, split)
    except ValueError as err:
        if str(err).startswith("split "):
            raise ValueError(f"{key}={split!r}: {err}") from None
        raise


# ------------------------------------------------------------------------------------- per-image CPU transforms


class _AugMixTriplet:
    """``x -> stack([x, augmix(x), augmix(x)])`` ``(3, C, H, W)`` float32 in [0, 1] for the JSD loss (``x`` uint8, or
    float in [0, 1]; 1 or 3 channels): AugMix's own views (:func:`aprkit.augment.augmix.augmix`, mixed in float as its
    code mixes them), drawn from the item's seeded global RNG."""

    def __init__(self, severity: int, width: int):
        from ..augment.augmix import check_augmix_settings

        self.severity, self.width = check_augmix_settings(severity, width, -1, 1.0)[:2]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from ..augment.augmix import augmix

        if x.is_floating_point():  # float [0, 1] data: the PIL ops take its uint8 levels, the clean view stays as it is
            clean, levels = x.float(), x.mul(255).round().clamp(0, 255).to(torch.uint8)
        else:
            clean, levels = x.float().div(255.0), x
        views = [augmix(levels, self.severity, self.width) for _ in range(2)]
        return torch.stack([clean, *views])


class _PadCrop:
    """Pad by ``padding`` with the uint8 level ``fill`` and take a random ``size`` crop, as the device path's
    :func:`~aprkit.train.batch_ops.random_crop`: the fill is scaled to [0, 1] for float images (torchvision's fixed
    fill padded float images with 128.0). Both dtypes draw the same crop offsets."""

    def __init__(self, size: int, padding: int, fill: int):
        from torchvision.transforms import v2

        self.u8 = v2.RandomCrop(size, padding=padding, fill=fill)
        self.float = v2.RandomCrop(size, padding=padding, fill=fill / 255.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (self.float if x.is_floating_point() else self.u8)(x)


def cpu_train_transform(cfg: Config) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The per-image training transform that runs in the DataLoader workers (``None``: nothing to do)."""
    d, method, gpu = cfg.data, cfg.aug.method, cfg.data.input_path == "gpu"
    if not per_image_transform(cfg):
        return None  # everything happens on the device: no torchvision import, no worker work
    per_image = not gpu or method == "augmix_jsd"  # AugMix has no batched per-image device version
    from torchvision.transforms import v2

    steps: list[Callable] = []
    if d.random_resized_crop:  # ImageNet: the reference crops, then recombines (as the device path does)
        steps.append(v2.RandomResizedCrop(d.image_size, antialias=True))
    if apr_s_where(cfg) == "loader":  # CIFAR: the reference recombines, then pads and crops
        from ..augment import APRSingle

        steps.append(APRSingle(p=cfg.aug.single_p, severity=cfg.aug.severity, dims=cfg.aug.dims,
                               cast=cfg.aug.single_cast))
    if per_image and not d.random_resized_crop:
        steps.append(_PadCrop(d.image_size, d.crop_padding, d.pad_fill))
    if per_image and d.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if method == "augmix_jsd":
        steps.append(_AugMixTriplet(cfg.aug.augmix_severity, cfg.aug.augmix_width))
    return v2.Compose(steps)


def cpu_test_transform(cfg: Config) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Resize + centre crop for test images when ``data.test_resize`` is set, else ``None``."""
    from torchvision.transforms import v2

    if cfg.data.test_resize is None:
        return None
    return v2.Compose([v2.Resize(cfg.data.test_resize, antialias=True), v2.CenterCrop(cfg.data.image_size)])


# -------------------------------------------------------------------------------------------- batch iteration


def _materialise(ds: Dataset, device: torch.device, num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = dataset_tensors(ds, batch_size=512, num_workers=num_workers)
    return x.to(device), y.to(device)


def _fits_in_memory(ds: Dataset, cfg: Config) -> bool:
    if cfg.data.in_memory is not None:
        return cfg.data.in_memory
    if cfg.data.random_resized_crop or cfg.data.test_resize is not None or dataset_len(ds) == 0:
        return False
    x0, _ = ds[0]
    size = cfg.data.image_size
    if not isinstance(x0, torch.Tensor) or x0.dtype != torch.uint8 or tuple(x0.shape[-2:]) != (size, size):
        return False
    return dataset_len(ds) * x0.numel() <= cfg.data.max_memory_mb * 2**20


def _draws_per_epoch(items: SeededTransform) -> bool:
    """Whether the dataset under ``items`` draws random numbers itself (its own random transform): read once into
    memory, its draws of the first epoch would repeat every epoch."""
    return draws_random_numbers(items.base)


class EpochBatches:
    """Per-rank batches of one epoch as ``(images on device, int64 labels on device)``.

    ``images`` is ``(B, C, H, W)`` as the data yields them (uint8 streamed, or float), or ``(B, 3, C, H, W)`` float32
    for AugMix triplets. With ``shuffle`` the order
    comes from ``DistributedSampler`` (seeded, ``drop_last``); without, each rank takes ``indices[rank::world]``
    in order and the last batch may be short (evaluation).
    """

    def __init__(
        self,
        ds: Dataset,
        cfg: Config,
        batch_size: int,
        device: torch.device,
        *,
        train: bool,
        rank: int = 0,
        world: int = 1,
    ):
        self.cfg, self.batch_size, self.device, self.train = cfg, batch_size, device, train
        self.rank, self.world, self.epoch = rank, world, 0
        n = dataset_len(ds)
        if train:
            self.sampler: DistributedSampler | None = DistributedSampler(
                ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.train.seed, drop_last=True
            )
            if len(self.sampler) < batch_size:
                raise ValueError(
                    f"the training set has {n} images ({len(self.sampler)} per rank), fewer than one batch of "
                    f"{batch_size}; lower optim.batch_size or "
                    + ("raise data.limit" if cfg.data.limit else "use more training images")
                )
            check_crop_size(ds, n, cfg)
            transform = cpu_train_transform(cfg)
        else:
            self.sampler = None
            if cfg.data.test_resize is None:
                check_test_size(ds, n, cfg.data.image_size)
            ds = SubsetDataset(ds, range(rank, n, world)) if world > 1 else ds
            transform = cpu_test_transform(cfg)
        self.items = SeededTransform(ds, transform, cfg.train.seed)
        self.in_memory = transform is None and _fits_in_memory(ds, cfg)
        if self.in_memory and train and batch_source(ds) is None and _draws_per_epoch(self.items):
            if cfg.data.in_memory is None:  # auto: stream it, as a larger one would be (each epoch draws anew)
                self.in_memory = False
            else:
                import warnings

                warnings.warn("data.in_memory: true reads the training data once, but the dataset draws random "
                              "numbers itself (reading its items moves the global generators): every epoch repeats the "
                              "first epoch's draws; set data.in_memory: false to draw anew each epoch", UserWarning,
                              stacklevel=2)
        self.what = "the training data" if train else "the test data"
        if self.in_memory:  # read once through the seeded items, unless the dataset hands out whole batches
            self.x, self.y = _materialise(ds if batch_source(ds) is not None else self.items, device,
                                          cfg.data.num_workers)
            check_label_range(self.y, cfg.model.num_classes, self.what)

    def __len__(self) -> int:
        if self.sampler is not None:
            return len(self.sampler) // self.batch_size
        return -(-len(self.items) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.items.set_epoch(epoch)

    def _batches(self) -> list[list[int]]:
        order = list(self.sampler) if self.sampler is not None else list(range(len(self.items)))
        return [order[i : i + self.batch_size] for i in range(0, len(self) * self.batch_size, self.batch_size)]

    def iterate(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of the current epoch from batch number ``start`` on."""
        batches = self._batches()[start:]
        if self.in_memory:  # the epoch's order copied to the device once (a copy per batch waited on the host)
            order = torch.as_tensor([i for b in batches for i in b], dtype=torch.int64, device=self.device)
            ends = list(itertools.accumulate(len(b) for b in batches))
            for lo, hi in zip([0, *ends[:-1]], ends, strict=True):
                idx = order[lo:hi]
                yield self.x[idx], self.y[idx]
            return
        if not batches:
            return
        pin = self.device.type == "cuda"
        # its own generator: the loader's base seed would otherwise be drawn from torch's global RNG (a draw a resumed
        # run makes at another point); the items reseed per image anyway (SeededTransform)
        loader = DataLoader(
            self.items, batch_sampler=batches, num_workers=self.cfg.data.num_workers, pin_memory=pin,
            persistent_workers=False, generator=torch.Generator().manual_seed(self.cfg.train.seed),
            worker_init_fn=worker_stop_signals if self.cfg.data.num_workers else None,  # the main process stops
        )
        for x, y in loader:
            y = torch.as_tensor(y, dtype=torch.long)
            check_label_range(y, self.cfg.model.num_classes, self.what)  # on the CPU: no device sync
            yield x.to(self.device, non_blocking=pin), y.to(self.device, non_blocking=pin)
