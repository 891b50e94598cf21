"""Training input pipelines: a dataset's own randomness is seeded per (seed, epoch, index); labels are checked
against model.num_classes before training."""

from __future__ import annotations

import pytest
import torch
from train_common import Images, same_weights, train_config

from aprkit.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")


class _Noisy(torch.utils.data.Dataset):
    """A user dataset with its own random transform in ``__getitem__`` (torch's global RNG)."""

    def __init__(self, base: torch.utils.data.Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return (x.int() + torch.randint(-20, 21, x.shape)).clamp(0, 255).to(torch.uint8), y


@pytest.mark.parametrize("path,in_memory", [("gpu", False), ("gpu", None), ("loader", None)])
def test_a_datasets_own_random_draws_do_not_depend_on_the_worker_count(path, in_memory):
    """``self.base[i]`` ran outside the seeded block (and unseeded without a transform): its draws came from each
    worker's RNG, so the trained weights depended on data.num_workers."""
    ds = _Noisy(Images(32, with_tensors=False))
    runs = [fit(train_config(data={"num_workers": nw, "input_path": path, "in_memory": in_memory},
                             optim={"epochs": 1}, train={"eval_every": 0}), datasets=(ds, None))
            for nw in (0, 2)]
    assert same_weights(runs[0]["model"], runs[1]["model"])


def test_seeded_items_read_the_dataset_under_the_items_seed():
    from aprkit.data import get_dataset
    from aprkit.train.data import SeededTransform

    noisy = SeededTransform(_Noisy(Images(4)), None, seed=3)
    noisy.set_epoch(1)
    a = [noisy[i][0] for i in range(4)]
    torch.rand(5)  # the global RNG moved on: the items do not
    assert all(torch.equal(x, noisy[i][0]) for i, x in enumerate(a))
    noisy.set_epoch(2)
    assert not torch.equal(a[0], noisy[0][0])
    builtin = get_dataset("synthetic:8", "train")  # the built-in datasets draw nothing: items unchanged
    items = SeededTransform(builtin, None, seed=0)
    assert all(torch.equal(items[i][0], builtin[i][0]) and items[i][1] == builtin[i][1] for i in range(8))
