"""The augmentation examples run end to end in their seconds-long ``--smoke`` mode."""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ["augment_torchvision", "augment_kornia", "augment_timm", "augment_albumentations", "train_aprp_loop"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_smoke(name, monkeypatch, capsys):
    if name == "augment_albumentations":
        monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
        pytest.importorskip("albumentations")
    if name == "augment_kornia":  # a required dependency, absent from the lent GPU image
        pytest.importorskip("kornia")
    pytest.importorskip("aprkit.data.synthetic")
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--smoke", "--device", "cpu"])
    monkeypatch.syspath_prepend(str(EXAMPLES))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: extra intra-op threads only add contention
    try:
        runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "acc" in out, out
    assert "nan" not in out.lower(), out
    assert os.path.isdir(EXAMPLES)


def test_train_size_takes_a_subset_of_a_data_folder(tmp_path, monkeypatch):
    """``--train-size`` subsets ``--data`` (it was read only with ``--smoke``: a CIFAR run trained on all 50,000)."""
    from PIL import Image

    for split, n in (("train", 40), ("test", 4)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n // 2):
                Image.new("RGB", (8, 8)).save(tmp_path / split / c / f"{i}.png")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from augment_common import datasets, parse_args

    train, _ = datasets(parse_args("x", ["--data", str(tmp_path), "--train-size", "10"]))
    assert len(train) == 10
    train, _ = datasets(parse_args("x", ["--data", str(tmp_path), "--train-size", "30"]))
    assert len(train) == 30  # not a divisor of 40 (every k-th image gave 40)
    train, _ = datasets(parse_args("x", ["--data", str(tmp_path)]))
    assert len(train) == 40  # all of it by default


def test_the_albumentations_example_draws_anew_in_each_worker_and_epoch(monkeypatch):
    """With --workers, every worker copied the pipeline's stream and the partner generator: each image got the same
    flip, APR-S draw and partner in every epoch (adapter tester). Its worker_init_fn re-seeds both."""
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    A = pytest.importorskip("albumentations")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from augment_albumentations import AlbumentationsDataset, seed_worker

    from aprkit.augment.adapters import AlbuAPRPair, AlbuAPRSingle

    base = [(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(i)), 0)
            for i in range(8)]

    def epochs(seed: int) -> list[torch.Tensor]:
        pipe = A.Compose([A.HorizontalFlip(p=0.5), AlbuAPRSingle(recombine_p=0.5),
                          AlbuAPRPair(metadata_key="apr_metadata", p=0.3)], seed=0)
        loader = torch.utils.data.DataLoader(AlbumentationsDataset(base, pipe, 0), batch_size=4, num_workers=2,
                                             worker_init_fn=seed_worker,
                                             generator=torch.Generator().manual_seed(seed))
        return [torch.cat([x for x, _ in loader]) for _ in range(2)]

    first, second = epochs(0)
    assert not torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(epochs(0), (first, second)))  # the loader's seed repeats them
