"""AugMix's views as its reference code mixes them (google-research/augmix ``cifar.py`` ``aug``): the training
recipe's ``augmix_jsd`` used torchvision's ``v2.AugMix``, whose levels reach 2/9 of an op's range at severity 3 where
AugMix's code reaches 3/10, and which truncates each view to uint8 (training-recipe reviewer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aprkit.augment.augmix as A
from conftest import natural_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return natural_images(1, 32, seed=3)[0]


def test_a_view_is_a_float_mixture_in_the_unit_range_seeded_by_its_generator(image):
    view = A.augmix(image, generator=torch.Generator().manual_seed(0))
    assert view.dtype == torch.float32 and view.shape == image.shape and 0 <= view.min() and view.max() <= 1
    assert torch.equal(view, A.augmix(image, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(view, A.augmix(image, generator=torch.Generator().manual_seed(1)))
    assert (view * 255 - (view * 255).round()).abs().max() > 0.01  # mixed in float, not cut back to uint8 levels
    gray = A.augmix(image[:1], generator=torch.Generator().manual_seed(0))
    assert gray.shape == (1, 32, 32)


def test_the_view_lies_between_the_image_and_its_chains(image):
    """With one op whose result does not depend on its draws, every chain is that op's image: the view is
    (1 - m) * image + m * op(image) for some m in [0, 1]."""
    import numpy as np
    from PIL import Image

    from aprkit.augment.ops_pil import apply_pil_op

    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    op = torch.from_numpy(np.array(apply_pil_op(pil, "autocontrast", 1.0, False))).permute(2, 0, 1)
    x, target = image.double() / 255, op.double() / 255
    view = A.augmix(image, ops=["autocontrast"], depth=1, generator=torch.Generator().manual_seed(2)).double()
    m = ((view - x) * (target - x)).sum() / (target - x).square().sum()
    assert 0 <= m <= 1 and torch.allclose(view, x + m * (target - x), atol=1e-6)


def test_levels_are_drawn_from_the_references_range(image, monkeypatch):
    seen = []
    real = A.apply_pil_op

    def spy(img, name, level, negate):
        seen.append((level, negate))
        return real(img, name, level, negate)

    monkeypatch.setattr(A, "apply_pil_op", spy)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        A.augmix(image, severity=3, generator=g)
    levels = torch.tensor([lv for lv, _ in seen])
    assert levels.min() >= 0.1 and levels.max() <= 3 and levels.max() > 2.8  # U(0.1, 3), not a 3-step grid
    assert len(levels.unique()) > 100 and {n for _, n in seen} == {True, False}
    depths = len(seen) / (40 * 3)
    assert 1.7 < depths < 2.3  # 1 to 3 ops per chain, 2 on average


def test_bad_settings_name_what_is_expected(image):
    with pytest.raises(ValueError, match="severity must be a number in"):
        A.augmix(image, severity=0)
    with pytest.raises(ValueError, match="width must be a positive int"):
        A.augmix(image, width=0)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        A.augmix(image, alpha=0)
    with pytest.raises(ValueError, match="uint8 tensor"):
        A.augmix(image.float())
    with pytest.raises(ValueError, match="mode 'RGB' or 'L'"):
        from PIL import Image

        A.augmix(Image.new("RGBA", (8, 8)))
    g = torch.Generator().manual_seed(0)  # NumPy numbers as Python's: depth refused np.int64 (fuzz tester)
    want = A.augmix(image, severity=2.5, width=2, depth=2, alpha=1.0, generator=g)
    got = A.augmix(image, severity=np.float32(2.5), width=np.int64(2), depth=np.int64(2), alpha=np.float32(1.0),
                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, want)


def test_the_training_triplet_holds_the_clean_image_and_two_views(image):
    from aprkit.train.data import _AugMixTriplet

    torch.manual_seed(0)
    out = _AugMixTriplet(3, 3)(image)
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out[0], image.float() / 255) and not torch.equal(out[1], out[2])


def test_the_training_triplet_takes_float_images_as_training_does(image):
    """A float [0, 1] dataset trained with augmix_jsd failed at its first batch (augmix takes uint8) and its clean
    view would have been divided by 255 twice (diff reviewer)."""
    from aprkit.train.data import _AugMixTriplet

    torch.manual_seed(0)
    want = _AugMixTriplet(3, 3)(image)
    torch.manual_seed(0)
    got = _AugMixTriplet(3, 3)(image.float() / 255)
    assert torch.allclose(got[0], image.float() / 255) and torch.equal(got[1:], want[1:])
