"""``KorniaRandomCorruption``: the common corruptions inside kornia's containers (adapter tester: a plain
``RandomCorruption`` in ``AugmentationSequential`` left masks behind under elastic and drew anew on a ``params=``
replay)."""

from __future__ import annotations

import pytest
import torch

K = pytest.importorskip("kornia.augmentation")

from aprkit.augment.adapters import KorniaRandomCorruption  # noqa: E402
from aprkit.corruptions import RandomCorruption  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
COLOUR = ["contrast", "gaussian_noise"]


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _changed(out: torch.Tensor, x: torch.Tensor) -> list[bool]:
    return [bool((o != i).any()) for o, i in zip(out, x)]


def test_its_draws_are_random_corruptions(batch):
    got = KorniaRandomCorruption(COLOUR, seed=3)(batch)
    assert torch.equal(got, RandomCorruption(COLOUR, seed=3)(batch))
    assert got.dtype == batch.dtype and all(_changed(got, batch))


def test_p_gates_images_and_a_replay_repeats_them_in_a_container(batch):
    mask = (torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    seq = K.AugmentationSequential(KorniaRandomCorruption(COLOUR, seed=3, p=0.5), data_keys=["input", "mask"])
    out, m = seq(batch, mask)
    gate = seq[0]._params["batch_prob"] > 0.5
    assert _changed(out, batch) == gate.tolist() and 0 < int(gate.sum()) < 8
    assert torch.equal(m, mask)  # colour and noise corruptions leave masks in place
    again, _ = seq(batch, mask, params=seq._params)
    assert torch.equal(again, out)
    assert torch.equal(K.AugmentationSequential(KorniaRandomCorruption(COLOUR, seed=3, p=0.5),
                                                data_keys=["input", "mask"])(batch, mask)[0], out)  # seeded


def test_p0_is_the_identity_and_same_on_batch_shares_one_draw(batch):
    assert torch.equal(KorniaRandomCorruption(COLOUR, p=0.0)(batch), batch)
    one = batch[:1].expand(4, -1, -1, -1).contiguous()
    out = KorniaRandomCorruption(["gaussian_noise"], seed=1, same_on_batch=True)(one)
    assert all(torch.equal(out[0], o) for o in out[1:])
    empty = torch.rand(0, 3, 16, 16)  # kornia's own augmentations give an empty batch back (aminmax crashed on it)
    for kw in ({}, {"p": 0.5}, {"same_on_batch": True}):
        assert KorniaRandomCorruption(COLOUR, seed=0, **kw)(empty).shape == (0, 3, 16, 16)


def test_corruptions_that_move_pixels_refuse_annotations(batch):
    mask = torch.zeros(8, 1, 32, 32)
    seq = K.AugmentationSequential(KorniaRandomCorruption(["contrast", "elastic_transform"], seed=0),
                                   data_keys=["input", "mask"])
    with pytest.raises(TypeError, match="got masks, but elastic_transform moves the image's pixels"):
        seq(batch, mask)
    assert KorniaRandomCorruption(["elastic_transform"], seed=0)(batch).shape == batch.shape  # images alone: fine


def test_repr_and_bad_settings():
    text = repr(KorniaRandomCorruption("fog", 2, p=0.3))
    assert text.startswith("KorniaRandomCorruption(names=['fog'], severities=[2], preset=None, p=0.3")
    with pytest.raises(ValueError, match="p must be"):
        KorniaRandomCorruption(p=1.5)
    with pytest.raises(ValueError, match="unknown corruption 'fgo'"):
        KorniaRandomCorruption("fgo")


def test_an_earlier_steps_overshoot_is_clamped_and_other_ranges_refused(batch):
    """In a container after kornia's RandomGaussianNoise or an unclamped RandomAPRPair, the batch overshoots [0, 1]
    a little and was refused ("clamp it first", which a container leaves no room for; adapter tester): clamped now,
    as the other aprkit kornia augmentations take it; 0..255 floats and normalised batches are still refused. A batch
    of 4 channels is named with its own shape (it was the shape of one (corruption, severity) group)."""
    from aprkit.augment.adapters import RandomAPRPair

    noisy = K.AugmentationSequential(K.RandomGaussianNoise(std=0.1, p=1.0), KorniaRandomCorruption(["contrast"]))
    assert noisy(batch).shape == batch.shape
    after_apr = K.AugmentationSequential(RandomAPRPair(p_apr=1.0), KorniaRandomCorruption(["contrast"], seed=0))
    assert after_apr(batch).shape == batch.shape
    over = batch * 1.2 - 0.1
    torch.testing.assert_close(KorniaRandomCorruption(["contrast"], seed=0)(over),
                               KorniaRandomCorruption(["contrast"], seed=0)(over.clamp(0, 1)))
    with pytest.raises(ValueError, match="0..255 floats"):
        KorniaRandomCorruption(["contrast"])(batch * 255)
    with pytest.raises(ValueError, match=r"normalised with a mean and std"):
        KorniaRandomCorruption(["contrast"])((batch - 0.45) / 0.25)
    with pytest.raises(ValueError, match=r"got shape \(2, 4, 16, 16\)"):
        KorniaRandomCorruption(["contrast"])(torch.rand(2, 4, 16, 16))
    compiled = torch.compile(KorniaRandomCorruption(["contrast"], seed=0), backend="eager")  # clamped there too
    torch.testing.assert_close(compiled(over), KorniaRandomCorruption(["contrast"], seed=0)(over))
