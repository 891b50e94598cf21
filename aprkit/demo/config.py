"""Demo settings (default and ``--quick`` presets) and the data the demo trains and evaluates on.

The default preset is sized for a 2-core CPU: the whole run (two trainings and the full evaluation of
both models) should finish in under ten minutes on an otherwise idle machine. ``quick`` keeps every
section of the report but shrinks everything so the run takes seconds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..eval.engine.datasets import TensorImageDataset

__all__ = ["DemoSettings", "demo_settings", "lr_milestones", "DemoData", "TensorSet", "load_demo_data"]


@dataclass
class DemoSettings:
    """Sizes and training hyper-parameters of one demo run."""

    n_train: int = 8000  # training images (synthetic: generated; real data: a seeded random subset, 0 = all)
    n_test: int = 500  # test images for clean accuracy, corruptions, calibration, OOD, phase bias, transplant
    epochs: int = 6
    batch_size: int = 128
    lr: float = 0.05
    # lr x0.2 after these fractions of the epochs. One late step, not the usual (0.5, 0.75): with APR-SP's p = 1 it is
    # what lets the phase effect show at this budget (benchmarks/repro/demo_ablation.py; docs/reproductions.md, study 5)
    lr_steps: tuple[float, ...] = (0.8,)
    weight_decay: float = 5e-4
    # APR-SP: probability that the second half of a step is amplitude-swapped (APR-P). The paper uses 0.6; at the demo's
    # budget that leaves the phase-follow rate where standard training has it (the same ablation), so the demo uses 1
    pair_p: float = 1.0
    # APR-SP: "joint" (one forward of clean + APR-P, the reference) or "separate" (two forwards)
    sp_forward: str = "joint"
    corruptions: tuple[str, ...] | None = None  # None: all 15 benchmark corruptions
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    ood_scores: tuple[str, ...] | None = None  # None: every score of the OOD suite
    fit_limit: int = 1000  # training images used to fit Mahalanobis / KNN
    n_cue_conflict: int = 1000
    n_phase_pairs: int = 500
    n_transplant_pairs: int = 300
    n_transplant_control: int = 256
    transplant_every: int = 1  # sweep every k-th block (the last block is always included)
    image_size: int = 32  # folder data is resized / centre-cropped to this
    eval_batch_size: int = 250

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lr_milestones(epochs: int, lr_steps: Sequence[float]) -> list[int]:
    """The epochs after which the learning rate drops: ``ceil(f * epochs)`` of each fraction ``f``, inside the run
    (a run of a few epochs may have none)."""
    return sorted({m for m in (math.ceil(float(f) * epochs) for f in lr_steps) if 0 < m < epochs})


def demo_settings(quick: bool = False, epochs: int | None = None, **overrides: Any) -> DemoSettings:
    """The default (or ``quick``) preset, with ``epochs`` and any other field overridden."""
    s = DemoSettings()
    if quick:
        s = dataclasses.replace(
            s, n_train=256, n_test=64, epochs=1, corruptions=None, severities=(1, 5), fit_limit=128, n_cue_conflict=64,
            n_phase_pairs=40, n_transplant_pairs=24, n_transplant_control=16, transplant_every=3, eval_batch_size=64,
        )
    if epochs is not None:
        overrides["epochs"] = epochs
    unknown = set(overrides) - {f.name for f in dataclasses.fields(DemoSettings)}
    if unknown:
        valid = [f.name for f in dataclasses.fields(DemoSettings)]
        raise ValueError(f"unknown demo settings {sorted(unknown)}; valid: {valid}")
    s = dataclasses.replace(s, **overrides)
    for name in ("n_test", "epochs", "batch_size", "n_cue_conflict", "n_phase_pairs", "n_transplant_pairs"):
        if int(getattr(s, name)) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(s, name)}")
    if not all(0 < f < 1 for f in s.lr_steps):
        raise ValueError(f"lr_steps are fractions of the epochs in (0, 1), got {s.lr_steps}")
    if not 0 <= s.pair_p <= 1:
        raise ValueError(f"pair_p must lie in [0, 1], got {s.pair_p}")
    if s.sp_forward not in ("joint", "separate"):
        raise ValueError(f"sp_forward must be 'joint' or 'separate', got {s.sp_forward!r}")
    if s.n_train < 0:
        raise ValueError(f"n_train must be >= 0 (0 = all training images), got {s.n_train}")
    return s


class TensorSet(TensorImageDataset):
    """In-memory uint8 images ``(N, C, H, W)`` + labels, with ``tensors`` (fast training path) and ``cache_id``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, cache_id: str, classes: Sequence[str] | None = None):
        super().__init__(images, labels)
        self.cache_id = cache_id
        self.classes = list(classes) if classes is not None else None

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels


@dataclass
class DemoData:
    """What the demo runs on: train/test sets, the class count and whether cue-conflict stimuli exist."""

    spec: str
    train: TensorSet
    test: TensorSet
    num_classes: int
    synthetic: bool
    description: str


def _materialise(ds: Dataset, n: int, seed: int, tag: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``n`` seeded-random images of ``ds`` (all when ``n`` is 0 or too large) into one tensor."""
    from ..data import dataset_tensors, subset

    total = len(ds)  # type: ignore[arg-type]
    if n and n < total:
        ds = subset(ds, n, seed=seed)
    return dataset_tensors(ds, progress=progress, desc=f"loading {tag}")


def _num_classes(*datasets: Any, labels: torch.Tensor) -> tuple[int, list[str] | None]:
    for ds in datasets:
        classes = getattr(ds, "classes", None)
        if classes:
            return len(classes), list(classes)
    return int(labels.max()) + 1, None


def has_split_folders(root: Path) -> bool:
    """Whether a ``folder:ROOT`` demo data holds ``train/`` and ``test/`` (read as the two splits, each a folder of
    classes), not classes itself (split 80/20 by the demo)."""
    return (root / "train").is_dir() and (root / "test").is_dir()


def check_out_outside_data(out: Path, data: str) -> None:
    """Refuse an ``out`` whose runs (``out/train/<run>``), figures or cache would be read as classes of the demo's
    data by a later run: inside its class folders (``folder:`` with or without splits, ``cifar10:`` roots), checked
    for ``out`` and the folders the demo writes in it. A run of the demo beside the splits (``folder:D`` and
    ``--out D/run``) is not refused: the demo reads ``D/train`` and ``D/test`` only."""
    from ..data.registry import check_outside_data, parse_spec, split_spec_options

    specs = [data]
    try:
        kind, arg = parse_spec(split_spec_options(data)[0])
    except (TypeError, ValueError):  # the reader names it
        return
    if kind == "folder" and arg and has_split_folders(Path(arg).expanduser()):  # the folders the demo reads
        specs = [f"folder:{Path(arg).expanduser() / split}" for split in ("train", "test")]
    check_outside_data([out, out / "train", out / "test"], *specs)


def load_demo_data(spec: str, settings: DemoSettings, seed: int = 0, progress: bool = True) -> DemoData:
    """Train/test sets for ``spec``: ``synthetic`` (or ``synthetic:N`` training images), ``cifar10:PATH``,
    ``cifar100:PATH`` or ``folder:PATH`` (``PATH/train`` and ``PATH/test`` when present, else a seeded 80/20
    split of one ImageFolder tree, resized to ``settings.image_size``)."""
    from ..data import get_dataset, parse_spec

    if not isinstance(spec, str) or not spec.strip():
        raise TypeError(f"data must be a spec string: 'synthetic', 'cifar10:PATH', 'cifar100:PATH' or 'folder:PATH'; "
                        f"got {spec!r}")
    kinds = "'synthetic', 'synthetic:N', 'cifar10:PATH', 'cifar100:PATH' or 'folder:PATH'"
    try:
        kind, arg = parse_spec(spec)
    except ValueError:  # the registry lists every dataset kind; the demo trains on these
        raise ValueError(f"unknown --data {spec!r}; the demo trains on {kinds}") from None
    from ..data.registry import split_spec_options

    if split_spec_options(spec)[1]:
        raise ValueError(f"--data {spec!r}: the demo brings images to its own size (image_size={settings.image_size}); "
                         "drop the ?resize=/crop= options")
    if kind == "synthetic":
        from ..data.synthetic import GENERATOR_VERSION, SHAPES, SyntheticShapes, class_names

        if arg and not (arg.isdigit() and int(arg) > 0):
            raise ValueError(f"synthetic:N takes a positive number of training images, got {spec!r}")
        if not arg and settings.n_train == 0:
            raise ValueError("n_train (--train-size) 0 means all images of a real dataset; the synthetic one is "
                             "generated: give a number of training images")
        n_train = int(arg) if arg else settings.n_train
        tr = SyntheticShapes(n_train, split="train", seed=seed)
        te = SyntheticShapes(settings.n_test, split="test", seed=seed)
        (xtr, ytr), (xte, yte) = tr.tensors, te.tensors
        shapes = class_names(len(SHAPES))
        tag = f"synthetic-v{GENERATOR_VERSION}"  # the generator's version: its images of another version are others
        return DemoData(spec, TensorSet(xtr, ytr, f"{tag}#train-n{n_train}-seed{seed}", shapes),
                        TensorSet(xte, yte, f"{tag}#test-n{settings.n_test}-seed{seed}", shapes), len(SHAPES), True,
                        f"the built-in synthetic shape x texture dataset ({n_train} training / {settings.n_test} "
                        "test images, 32x32)")
    split_note = ""  # how the train and test images were drawn, for the report
    if kind in ("cifar10", "cifar100"):
        train_ds, test_ds = get_dataset(spec, "train"), get_dataset(spec, "test")
    elif kind == "folder":
        from ..data.registry import spec_root

        root = spec_root(arg, kind)
        size = settings.image_size
        if has_split_folders(root):
            train_ds = get_dataset(f"folder:{root / 'train'}", resize=size, crop=size)
            test_ds = get_dataset(f"folder:{root / 'test'}", resize=size, crop=size,
                                  classes=getattr(train_ds, "classes", None))
        else:
            from ..data import subset

            full = get_dataset(f"folder:{root}", resize=size, crop=size)
            perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed + 4242)).tolist()
            cut = max(1, len(perm) // 5)
            test_ds, train_ds = subset(full, sorted(perm[:cut])), subset(full, sorted(perm[cut:]))
            train_ds.classes = test_ds.classes = getattr(full, "classes", None)
            split_note = f"a seeded 80/20 split of the {len(full)} images of one folder tree (no train/test folders)"
    else:
        raise ValueError(f"the demo trains on 'synthetic', 'cifar10:PATH', 'cifar100:PATH' or 'folder:PATH'; "
                         f"got {spec!r}")
    xtr, ytr = _materialise(train_ds, settings.n_train, seed, "train", progress)
    xte, yte = _materialise(test_ds, settings.n_test, seed + 1, "test", progress)
    k, names = _num_classes(train_ds, test_ds, labels=torch.cat([ytr, yte]))
    from ..eval.engine.cache import identity

    # each split's images and labels by content, not only the spec: a rerun on rewritten files is not served the
    # models trained or the results computed on the old ones
    tag = f"{spec}#{{}}-n{{}}-seed{seed}-{{}}"
    drawn = [f"{len(y)} of the {len(ds)} {what} images, a seeded random subset"
             for y, ds, what in ((ytr, train_ds, "training"), (yte, test_ds, "test")) if len(y) < len(ds)]
    notes = "; ".join(n for n in (split_note, *drawn) if n)
    desc = (f"{spec} ({len(ytr)} training / {len(yte)} test images, {xtr.shape[-2]}x{xtr.shape[-1]}, {k} classes"
            f"{'; ' + notes if notes else ''})")
    train_id = tag.format("train", len(ytr), "-".join(identity([xtr, ytr])))
    test_id = tag.format("test", len(yte), "-".join(identity([xte, yte])))
    return DemoData(spec, TensorSet(xtr, ytr, train_id, names), TensorSet(xte, yte, test_id, names), k, False, desc)
