import pytest
import torch

from aprkit.data.synthetic import SHAPES, TEXTURES, SyntheticShapes, make_cue_conflict, make_synthetic, render


def test_render_shapes_dtype_and_determinism():
    ids = torch.arange(10)
    a = render(ids, ids, generator=torch.Generator().manual_seed(3))
    b = render(ids, ids, generator=torch.Generator().manual_seed(3))
    assert a.shape == (10, 3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    c = render(ids, ids, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(a, c)


def test_classes_are_distinct_and_cues_separable():
    # every class differs in shape and texture; cue conflict changes the image
    assert len(SHAPES) == len(TEXTURES) == 10
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    same = render(torch.tensor([0]), torch.tensor([0]), generator=g1)
    other = render(torch.tensor([0]), torch.tensor([5]), generator=g2)
    assert not torch.equal(same, other)


def test_make_synthetic_and_cue_conflict():
    x, y = make_synthetic(64, seed=1)
    assert x.shape == (64, 3, 32, 32) and y.shape == (64,) and int(y.max()) < 10
    c, s, t = make_cue_conflict(64, seed=1)
    assert c.shape == (64, 3, 32, 32)
    assert bool((s != t).all())
    x2, y2 = make_synthetic(64, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_an_image_does_not_depend_on_the_set_size():
    """Image i (and its label) is the same in a set of any size (reviewer: the set was rendered in chunks of an
    undocumented ``batch`` from one generator, so make_synthetic(8, batch=4) and (8, batch=8) shared no image and
    SyntheticShapes(8)[0] was not SyntheticShapes(4)[0])."""
    big, big_y = make_synthetic(300, seed=2)
    for n in (1, 7, 256, 257):
        x, y = make_synthetic(n, seed=2)
        assert torch.equal(x, big[:n]) and torch.equal(y, big_y[:n]), n
    c, s, t = make_cue_conflict(260, seed=2)
    c2, s2, t2 = make_cue_conflict(3, seed=2)
    assert torch.equal(c2, c[:3]) and torch.equal(s2, s[:3]) and torch.equal(t2, t[:3])
    assert not torch.equal(c[:3], big[:3])  # another stream than the plain set of the same seed
    assert torch.equal(SyntheticShapes(8, seed=1)[0][0], SyntheticShapes(4, seed=1)[0][0])
    with pytest.raises(TypeError, match="batch"):
        make_synthetic(8, batch=4)  # type: ignore[call-arg]


def test_dataset_splits_are_independent():
    tr = SyntheticShapes(32, split="train", seed=0)
    te = SyntheticShapes(32, split="test", seed=0)
    assert len(tr) == 32
    img, label = tr[0]
    assert img.shape == (3, 32, 32) and isinstance(label, int)
    assert not torch.equal(tr.tensors[0], te.tensors[0])
    with pytest.raises(IndexError):
        tr[32]


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(shape_ids=torch.tensor([0, 1]), texture_ids=torch.tensor([0])), "same length"),
        (dict(shape_ids=torch.tensor([10]), texture_ids=torch.tensor([0])), r"\[0, 9\]"),
        (dict(shape_ids=torch.tensor([], dtype=torch.long), texture_ids=torch.tensor([], dtype=torch.long)), "empty"),
    ],
)
def test_render_bad_input(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        render(**kwargs)


def test_bad_split_and_sizes():
    with pytest.raises(ValueError, match="split"):
        SyntheticShapes(10, split="val")
    with pytest.raises(ValueError, match="n must be"):
        make_synthetic(0)


def test_a_synthetic_dataset_names_its_images_for_the_cache() -> None:
    """SyntheticShapes given as a Dataset (the way to other sizes) was warned of as having no cache_id (model-zoo
    tester); it names every setting its images follow from, the generator's version included."""
    import warnings

    from aprkit.data.synthetic import GENERATOR_VERSION
    from aprkit.eval.engine.datasets import dataset_id

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids = {dataset_id(SyntheticShapes(64, size=s, split=sp, seed=k)) for s in (32, 48) for sp in ("train", "test")
               for k in (0, 1)}
    assert len(ids) == 8 and all(f"@v{GENERATOR_VERSION}:" in i for i in ids)
