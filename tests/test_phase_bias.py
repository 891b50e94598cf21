"""Phase-vs-amplitude bias: the functional metric, pair sampling, stimuli, patch shuffle, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import aprkit.eval as E
from aprkit.eval.analyses.phase_bias import (
    PatchShuffleDataset,
    PhaseConflictDataset,
    patch_permutations,
    patch_shuffle,
    phase_amplitude_conflict,
    phase_bias,
    sample_pairs,
)
from aprkit.fourier import amplitude_phase, low_frequency_swap, swap_amplitude

# ------------------------------------------------------------------ the metric


def test_phase_bias_on_a_hand_built_table():
    #            phase, amplitude, decision
    table = [(0, 1, 0), (0, 1, 1), (2, 3, 2), (2, 3, 5), (4, 1, 4), (3, 3, 3), (5, 5, 0)]
    p, a, d = (list(c) for c in zip(*table))
    r = phase_bias(d, p, a)
    assert (r.n_pairs, r.n_excluded) == (5, 2)
    assert r.phase == pytest.approx(3 / 5) and r.amplitude == pytest.approx(1 / 5) and r.neither == pytest.approx(1 / 5)
    assert r.phase_bias == pytest.approx(3 / 4)
    assert r.to_dict()["phase_bias"] == pytest.approx(0.75)


def test_phase_bias_nan_and_errors():
    r = phase_bias([9, 9], [0, 1], [1, 0])
    assert math.isnan(r.phase_bias) and r.neither == 1.0 and r.to_dict()["phase_bias"] is None
    with pytest.raises(ValueError, match="no valid pairs"):
        phase_bias([0], [1], [1])
    with pytest.raises(ValueError, match="lengths 2, 1, 1"):
        phase_bias([0, 1], [0], [1])
    with pytest.raises(TypeError, match="integer class indices"):
        phase_bias(torch.tensor([0.0]), [0], [1])
    with pytest.raises(ValueError, match="one-dimensional"):
        phase_bias(torch.zeros(2, 2, dtype=torch.long), [0, 1], [1, 0])


def test_exported_through_the_package():
    import aprkit.eval.analyses.phase_bias as module

    assert E.phase_bias is module.phase_bias
    assert E.phase_bias([0], [0], [1]).phase_bias == 1.0


# ------------------------------------------------------------------ pairs


def test_sample_pairs_always_different_classes_and_seeded():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    i, j = sample_pairs(labels, 5000, generator=torch.Generator().manual_seed(3))
    assert i.shape == j.shape == (5000,) and i.dtype == torch.long
    assert bool((labels[i] != labels[j]).all())
    i2, j2 = sample_pairs(labels, 5000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(i, i2) and torch.equal(j, j2)
    # j is uniform over the other classes' images: for i in class 3 every one of the 6 others is equally likely
    sel = labels[i] == 3
    counts = torch.bincount(j[sel], minlength=10)[:6].float()
    assert counts.min() > 0.75 * counts.mean()
    assert torch.bincount(i, minlength=10).min() > 0


def test_sample_pairs_bad_input():
    with pytest.raises(ValueError, match="two different classes"):
        sample_pairs(torch.zeros(5, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="positive integer"):
        sample_pairs(torch.tensor([0, 1]), 0)
    with pytest.raises(TypeError, match="integer"):
        sample_pairs(torch.tensor([0.0, 1.0]), 2)


# ------------------------------------------------------------------ stimuli


def test_conflict_stimuli_take_phase_and_amplitude_from_the_donors(images_f32):
    x, y = images_f32[:4].double(), images_f32[4:].double()
    out = phase_amplitude_conflict(x, y)
    torch.testing.assert_close(out, swap_amplitude(x, y))
    a_out, p_out = amplitude_phase(out)
    a_y, _ = amplitude_phase(y)
    _, p_x = amplitude_phase(x)
    torch.testing.assert_close(a_out, a_y)
    keep = a_out > 1e-6
    torch.testing.assert_close(torch.polar(torch.ones_like(p_out), p_out)[keep], torch.polar(torch.ones_like(p_x), p_x)[keep])
    low = phase_amplitude_conflict(x, y, "low_frequency", beta=0.1)
    torch.testing.assert_close(low, low_frequency_swap(x, y, 0.1, "chw"))  # the suite's dims
    assert not torch.allclose(low, out)
    hw = phase_amplitude_conflict(x, y, dims="hw")
    torch.testing.assert_close(hw, swap_amplitude(x, y, "hw"))
    with pytest.raises(ValueError, match="variant"):
        phase_amplitude_conflict(x, y, "high")


def test_conflict_dataset_matches_the_functional(images_u8):
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    base = [(img, int(lbl)) for img, lbl in zip(images_u8, labels)]
    pi, ai = sample_pairs(labels, 6, generator=torch.Generator().manual_seed(0))
    ds = PhaseConflictDataset(base, pi, ai, labels, "low_frequency", beta=0.2)
    batch = ds.__getitems__(list(range(6)))
    ref = low_frequency_swap(images_u8[pi], images_u8[ai], 0.2, "chw")
    assert torch.equal(torch.stack([b[0] for b in batch]), ref)
    assert ds[2][0].dtype == torch.uint8 and torch.equal(ds[2][0], ref[2]) and ds[2][1] == int(labels[pi[2]])
    assert torch.equal(ds.amplitude_labels, labels[ai])
    with pytest.raises(ValueError, match="variant"):
        PhaseConflictDataset(base, pi, ai, labels, "bad")


# ------------------------------------------------------------------ patch shuffle


def _patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """(C, H, W) -> (n_patches, C*p*p) row-major over the grid."""
    c = x.shape[0]
    return x.unfold(1, p, p).unfold(2, p, p).permute(1, 2, 0, 3, 4).reshape(-1, c * p * p)


def _sorted_rows(t: torch.Tensor) -> list[tuple]:
    return sorted(map(tuple, t.tolist()))


def test_patch_shuffle_is_a_permutation_of_patches(images_u8):
    out = patch_shuffle(images_u8, 8, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images_u8.shape
    moved = 0
    for x, y in zip(images_u8, out):
        px, py = _patches(x, 8), _patches(y, 8)
        assert _sorted_rows(px) == _sorted_rows(py)  # same multiset of patches
        moved += int(not torch.equal(px, py))
    assert moved >= 6  # 16! orders: essentially every image changes
    assert sorted(images_u8.flatten().tolist()) == sorted(out.flatten().tolist())


def test_patch_shuffle_explicit_permutation_semantics(images_f32):
    x = images_f32[:2]
    perm = torch.tensor([[3, 2, 1, 0], [0, 1, 2, 3]])
    out = patch_shuffle(x, 16, permutation=perm)
    for b in range(2):
        torch.testing.assert_close(_patches(out[b], 16), _patches(x[b], 16)[perm[b]])
    torch.testing.assert_close(out[1], x[1])  # identity permutation
    torch.testing.assert_close(patch_shuffle(x, 32, generator=torch.Generator()), x)  # one patch: nothing moves
    single = patch_shuffle(x[0], (16, 8), permutation=torch.arange(8).flip(0))
    assert single.shape == x[0].shape


def test_patch_shuffle_seeded_batched_and_not_in_place(images_f32):
    before = images_f32.clone()
    a = patch_shuffle(images_f32, 4, generator=torch.Generator().manual_seed(7))
    b = patch_shuffle(images_f32, 4, generator=torch.Generator().manual_seed(7))
    c = patch_shuffle(images_f32, 4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(images_f32, before)
    perms = patch_permutations(8, images_f32.shape, 4, generator=torch.Generator().manual_seed(7))
    assert perms.shape == (8, 64) and len({tuple(p) for p in perms.tolist()}) == 8  # one permutation per image
    per_image = torch.stack([patch_shuffle(images_f32[i], 4, permutation=perms[i]) for i in range(8)])
    assert torch.equal(per_image, a)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 2, 4, 8]), st.integers(2, 4), st.integers(2, 4), st.integers(0, 2**16))
def test_patch_shuffle_property_pixel_multiset_per_grid(p, gh, gw, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (2, 3, p * gh, p * gw), generator=g, dtype=torch.uint8)
    y = patch_shuffle(x, p, generator=g)
    for a, b in zip(x, y):
        assert _sorted_rows(_patches(a, p)) == _sorted_rows(_patches(b, p))


def test_patch_shuffle_bad_input(images_f32):
    with pytest.raises(ValueError, match="divide the image size"):
        patch_shuffle(images_f32, 5)
    with pytest.raises(ValueError, match="divide"):
        patch_shuffle(images_f32, 0)
    with pytest.raises(TypeError, match="patch_size"):
        patch_shuffle(images_f32, 2.0)
    with pytest.raises(ValueError, match="one permutation of range"):
        patch_shuffle(images_f32[:2], 16, permutation=torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]]))
    with pytest.raises(ValueError, match="dimensions"):
        patch_shuffle(images_f32[None], 8)
    with pytest.raises(TypeError, match="torch.Tensor"):
        patch_shuffle(images_f32.numpy(), 8)


def test_patch_shuffle_dataset(images_u8):
    base = [(img, i % 3) for i, img in enumerate(images_u8)]
    ds = PatchShuffleDataset(base, torch.tensor([5, 1, 2]), 8, seed=4)
    items = ds.__getitems__([0, 1, 2])
    assert [lbl for _, lbl in items] == [2, 1, 2]
    ref = patch_shuffle(images_u8[[5, 1, 2]], 8, permutation=ds.permutations)
    assert torch.equal(torch.stack([img for img, _ in items]), ref)
    assert torch.equal(ds[1][0], ref[1])


def test_one_class_data_is_a_note_not_the_end_of_the_run(tmp_path):
    """Phase bias on images of one class has no pair to measure: the suite records why and the run's next suites
    still run (the error stopped the run and the report called the failed suite 'not yet run')."""
    from PIL import Image

    from aprkit.eval import evaluate
    from aprkit.models import create_model

    gen = torch.Generator().manual_seed(0)
    (tmp_path / "data" / "cat").mkdir(parents=True)
    for i in range(6):
        arr = (torch.rand(16, 16, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(tmp_path / "data" / "cat" / f"{i}.png")
    torch.manual_seed(0)
    res = evaluate({"m": create_model("small_cnn", num_classes=1)}, suite=["phase-bias", "calibration"],
                   data=f"folder:{tmp_path / 'data'}", device="cpu", progress=False, out_dir=tmp_path / "out",
                   corruptions=["none"])
    assert "not measured" in res.models["m"]["phase-bias"]["note"] and res.models["m"]["calibration"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "m: not measured: labels must contain at least two different classes" in report
    assert "complete (every requested suite finished)" in report
