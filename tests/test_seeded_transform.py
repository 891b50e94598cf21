"""``aprkit.data.SeededTransform``: a user's random transforms in a DataLoader draw per item, so the augmented images
do not depend on the worker count or the batch size (invariance tester: ``APRSingleV2(seed=0)`` changed 31 of 32
images between 0 and 1 workers; the per-worker streams are documented, the per-item path was training's only)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from aprkit.data import ArrayDataset, SeededTransform
from conftest import natural_images

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(ds, workers: int, batch: int) -> torch.Tensor:
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False)
    return torch.cat([x for x, _ in loader])


@pytest.mark.parametrize("transform", ["apr_s", "corruption"])
def test_augmented_images_do_not_depend_on_workers_or_batch_size(transform):
    from aprkit.augment.adapters import APRSingleV2
    from aprkit.corruptions import RandomCorruption

    t = APRSingleV2(p=1.0) if transform == "apr_s" else RandomCorruption(["gaussian_noise", "contrast"], p=0.5)
    base = ArrayDataset(natural_images(12, 16, seed=4), torch.arange(12) % 3, layout="nchw")
    ds = SeededTransform(base, t, seed=7)
    want = _images(ds, 0, 12)
    assert not torch.equal(want, natural_images(12, 16, seed=4))
    for workers, batch in ((0, 5), (2, 4), (2, 1)):
        assert torch.equal(_images(ds, workers, batch), want), (workers, batch)
    ds.set_epoch(1)  # another epoch, other draws
    assert not torch.equal(_images(ds, 0, 12), want)


def test_a_bad_seed_is_refused():
    with pytest.raises((TypeError, ValueError), match="seed"):
        SeededTransform(ArrayDataset(natural_images(2, 8), torch.zeros(2, dtype=torch.long), layout="nchw"), None, seed=-1)


def test_a_transform_with_its_own_generator_is_warned_of():
    """APRSingleV2(seed=0) inside SeededTransform drew from its own per-worker stream, not the item's seed: other
    images with 0 and 2 workers, without a word (adapter tester). Transforms drawing from the global RNGs pass."""
    import warnings

    from torchvision.transforms import v2

    from aprkit.augment.adapters import APRSingleV2
    from aprkit.corruptions import RandomCorruption

    ds = [(torch.zeros(3, 8, 8, dtype=torch.uint8), 0)]
    for seeded in (APRSingleV2(seed=0), v2.Compose([v2.RandomHorizontalFlip(), RandomCorruption(seed=1)])):
        with pytest.warns(RuntimeWarning, match=r"holds its own torch.Generator \(.*generator: seed= or generator="):
            SeededTransform(ds, seeded, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for plain in (APRSingleV2(), v2.Compose([v2.ColorJitter(0.2), RandomCorruption()]), None):
            SeededTransform(ds, plain, seed=0)


def test_per_item_seeding_leaves_the_cuda_generators_alone(monkeypatch):
    """torch.manual_seed seeds every CUDA generator too, and fork_rng(devices=[]) restores none: each evaluation
    of a user's dataset left the CUDA generator at one constant state (GPU reviewer)."""
    from aprkit.data.seeded import draws_random_numbers, seeded_global_rngs

    seeded: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: seeded.append(s))
    with seeded_global_rngs(3):
        first = torch.rand(2)
    with seeded_global_rngs(3):
        assert torch.equal(torch.rand(2), first)
    draws_random_numbers(torch.utils.data.TensorDataset(natural_images(4, seed=0), torch.zeros(4, dtype=torch.long)))
    assert seeded == []


def test_albumentations_pipelines_draw_per_item():
    """albumentations draws from each transform's own generators, which no global seed reaches: an AlbuAPRSingle
    pipeline in SeededTransform gave other images on each read and with each worker count, without a word (adapter
    reviewer). Its generators are seeded with the item's seed, also inside a function object of the user's."""
    import numpy as np

    A = pytest.importorskip("albumentations")
    from aprkit.augment.adapters import AlbuAPRSingle

    class Albu:  # the usual wrapper: image= in, ["image"] out
        def __init__(self, compose):
            self.compose = compose

        def __call__(self, x):
            return self.compose(image=x)["image"]

    rng = np.random.default_rng(0)
    ds = [(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), 0) for _ in range(4)]
    for tf in (Albu(A.Compose([AlbuAPRSingle(recombine_p=1.0), A.HorizontalFlip()])), Albu(AlbuAPRSingle())):
        st = SeededTransform(ds, tf, seed=0)
        first = [st[i][0] for i in range(4)]
        assert all(np.array_equal(st[i][0], first[i]) for i in (2, 0, 3, 1))  # any order, any worker
        assert any(not np.array_equal(f, x) for f, (x, _) in zip(first, ds))
        other = SeededTransform(ds, tf, seed=1)
        assert any(not np.array_equal(other[i][0], first[i]) for i in range(4))
    # one pair of generators for the pipeline: set_random_seed gave each transform the same seed, so that two flips
    # came out alike on every item (diff reviewer: 200 both, 200 neither of 400)
    marker = np.zeros((4, 4, 3), np.uint8)
    marker[0, 1] = 255
    flips = SeededTransform([(marker, 0)] * 64, Albu(A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])),
                            seed=0)
    seen = set()
    for i in range(64):
        rows, cols = np.nonzero(flips[i][0][..., 0])
        seen.add((int(cols[0]) != 1, int(rows[0]) != 0))
    assert len(seen) == 4
    import torchvision.transforms.functional as TF

    class Holds:  # a transform keeping a module: not walked (torch.ops namespaces crashed the look for generators)
        def __init__(self):
            self.F, self.torch = TF, torch

        def __call__(self, x):
            return x

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.default_generator is no generator of the transform's
        SeededTransform(ds, Holds(), seed=0)
