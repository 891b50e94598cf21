"""Shape bias: the 16-category index lists, 1000->16 aggregation and the functional metric."""

from __future__ import annotations

import json
import math

import pytest
import torch

import aprkit.eval as E
from aprkit.eval.analyses.shape_bias import (
    CATEGORIES,
    IMAGENET_CATEGORY_INDICES,
    REFERENCE_SHAPE_BIAS,
    cue_conflict_decisions,
    imagenet_to_16,
    shape_bias,
)


# ------------------------------------------------------------------ index lists


def test_sixteen_sorted_categories():
    assert len(CATEGORIES) == 16
    assert list(CATEGORIES) == sorted(CATEGORIES)
    assert set(IMAGENET_CATEGORY_INDICES) == set(CATEGORIES)


def test_index_lists_match_the_published_ones():
    all_idx = [i for c in CATEGORIES for i in IMAGENET_CATEGORY_INDICES[c]]
    assert len(all_idx) == 207
    assert len(set(all_idx)) == 207  # disjoint
    assert all(0 <= i < 1000 for i in all_idx)
    assert IMAGENET_CATEGORY_INDICES["knife"] == (499,)
    assert IMAGENET_CATEGORY_INDICES["oven"] == (766,)
    assert IMAGENET_CATEGORY_INDICES["airplane"] == (404,)
    assert IMAGENET_CATEGORY_INDICES["bear"] == (294, 295, 296, 297)
    assert IMAGENET_CATEGORY_INDICES["truck"] == (555, 569, 656, 675, 717, 734, 864, 867)
    sizes = {c: len(v) for c, v in IMAGENET_CATEGORY_INDICES.items()}
    assert sizes["dog"] == 109 and sizes["bird"] == 49 and sizes["bottle"] == 7
    dog = IMAGENET_CATEGORY_INDICES["dog"]
    assert dog[0] == 152 and dog[-1] == 268 and 192 not in dog and 204 not in dog and 227 not in dog
    assert REFERENCE_SHAPE_BIAS == {"humans": 0.96, "ResNet-50": 0.22}


# ------------------------------------------------------------------ aggregation


def _probs_knife_vs_many_dogs() -> torch.Tensor:
    """Knife gets 0.2 on its single index; dog gets 0.005 on each of 109 indices (sum 0.545, mean 0.005)."""
    p = torch.zeros(1, 1000, dtype=torch.float64)
    p[0, 499] = 0.2
    p[0, list(IMAGENET_CATEGORY_INDICES["dog"])] = 0.005
    rest = p[0] == 0
    p[0, rest] = (1 - p.sum()) / int(rest.sum())
    return p


def test_aggregation_is_mean_not_sum_over_indices():
    p = _probs_knife_vs_many_dogs()
    q = imagenet_to_16(p, probabilities=True)
    assert q.shape == (1, 16)
    assert q[0, CATEGORIES.index("knife")].item() == pytest.approx(0.2)
    assert q[0, CATEGORIES.index("dog")].item() == pytest.approx(0.005)
    assert CATEGORIES[int(cue_conflict_decisions(p, probabilities=True))] == "knife"  # a sum would pick dog


def test_aggregation_on_hand_built_logits_applies_softmax_first():
    p = _probs_knife_vs_many_dogs()
    logits = p.log() + 3.7  # any shift: softmax(log p + c) == p
    q = imagenet_to_16(logits)
    torch.testing.assert_close(q, imagenet_to_16(p, probabilities=True))
    # two images, batched: the second prefers the oven index strongly
    logits2 = torch.zeros(2, 1000)
    logits2[0, 404] = 5.0
    logits2[1, 766] = 5.0
    logits2[1, 404] = 4.0
    assert [CATEGORIES[i] for i in cue_conflict_decisions(logits2)] == ["airplane", "oven"]
    expected = torch.softmax(logits2, 1)[:, [499]].mean(1)
    torch.testing.assert_close(imagenet_to_16(logits2)[:, CATEGORIES.index("knife")], expected)


def test_sixteen_class_outputs_taken_as_they_are():
    logits = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(imagenet_to_16(logits), torch.softmax(logits, 1))
    assert torch.equal(cue_conflict_decisions(logits), logits.argmax(1))
    half = logits.half()
    assert cue_conflict_decisions(half).dtype == torch.long


def test_aggregation_bad_input():
    with pytest.raises(ValueError, match=r"\(B, 1000\).*\(B, 16\)"):
        imagenet_to_16(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="shape"):
        imagenet_to_16(torch.zeros(1000))
    with pytest.raises(TypeError, match="floating"):
        imagenet_to_16(torch.zeros(2, 1000, dtype=torch.long))


# ------------------------------------------------------------------ the metric


def test_shape_bias_on_a_hand_built_decision_table():
    # (shape, texture, decision)
    table = [
        ("cat", "dog", "cat"),        # shape
        ("cat", "dog", "dog"),        # texture
        ("cat", "knife", "cat"),      # shape
        ("cat", "knife", "bear"),     # neither
        ("dog", "cat", "cat"),        # texture
        ("dog", "oven", "oven"),      # texture
        ("dog", "oven", "dog"),       # shape
        ("knife", "knife", "knife"),  # excluded: shape == texture
        ("oven", "oven", "clock"),    # excluded
    ]
    shapes, textures, decisions = zip(*table)
    r = shape_bias(list(decisions), list(shapes), list(textures))
    assert (r.n_stimuli, r.n_excluded) == (7, 2)
    assert (r.n_shape_decisions, r.n_texture_decisions) == (3, 3)
    assert r.shape_bias == pytest.approx(0.5)
    assert r.shape_match == pytest.approx(3 / 7)
    assert r.texture_match == pytest.approx(3 / 7)
    assert r.per_category == pytest.approx({"cat": 2 / 3, "dog": 1 / 3})
    assert r.per_category_counts == {"cat": (2, 1, 4), "dog": (1, 2, 3)}
    # indices (lists, tensors) give the same answer as names
    idx = lambda names: [CATEGORIES.index(n) for n in names]  # noqa: E731
    r2 = shape_bias(torch.tensor(idx(decisions)), torch.tensor(idx(shapes)), idx(textures))
    assert r2 == r
    assert json.loads(json.dumps(r.to_dict()))["shape_bias"] == 0.5


def test_same_class_stimuli_never_count():
    # only same-class stimuli answered "correctly" plus one conflicting texture decision
    r = shape_bias(["cat", "dog", "dog"], ["cat", "dog", "bear"], ["cat", "dog", "dog"])
    assert (r.n_stimuli, r.n_excluded, r.shape_bias) == (1, 2, 0.0)
    with pytest.raises(ValueError, match="no conflicting stimuli"):
        shape_bias(["cat"], ["cat"], ["cat"])


def test_no_shape_or_texture_decision_gives_nan():
    r = shape_bias(["bear", "bear"], ["cat", "dog"], ["dog", "cat"])
    assert math.isnan(r.shape_bias) and r.shape_match == 0 and r.texture_match == 0
    assert r.to_dict()["shape_bias"] is None and r.to_dict()["per_category"] == {"cat": None, "dog": None}


def test_custom_categories_for_other_label_sets():
    r = shape_bias([0, 1, 2], [0, 1, 2], [1, 2, 0], categories=range(3))
    assert r.shape_bias == 1.0 and set(r.per_category) == {0, 1, 2}


def test_shape_bias_bad_input():
    with pytest.raises(ValueError, match=r"unknown categories 'kat'.*airplane"):
        shape_bias(["kat"], ["cat"], ["dog"])
    with pytest.raises(ValueError, match="unknown categories 16"):
        shape_bias([16], [0], [1])
    with pytest.raises(ValueError, match="lengths 2, 1, 1"):
        shape_bias(["cat", "dog"], ["cat"], ["dog"])
    with pytest.raises(TypeError, match="integer indices"):
        shape_bias(torch.tensor([0.5]), [0], [1])
    with pytest.raises(TypeError, match="sequence"):
        shape_bias("cat", "cat", "dog")
    with pytest.raises(TypeError, match="names .str. or integer"):
        shape_bias([1.5], [0], [1])


def test_exported_through_the_package():
    import aprkit.eval.analyses.shape_bias as module

    assert E.shape_bias is module.shape_bias  # the function, never shadowed by a module of the same name
    assert E.shape_bias(["cat"], ["cat"], ["dog"]).shape_bias == 1.0
    assert E.measure_shape_bias is module.measure_shape_bias


def test_bad_shapes_and_custom_category_errors():
    with pytest.raises(ValueError, match="one-dimensional"):
        shape_bias(torch.zeros(2, 2, dtype=torch.long), [0, 1], [1, 0])
    with pytest.raises(ValueError, match="indices 0..2"):
        shape_bias([5], [0], [1], categories=range(3))


def test_numpy_integers_in_a_list_count_as_indices():
    import numpy as np

    want = shape_bias(np.array([1, 2]), [1, 2], [2, 1]).shape_bias
    assert shape_bias(list(np.array([1, 2])), [1, 2], [np.int64(2), np.int32(1)]).shape_bias == want == 1.0
    with pytest.raises(TypeError, match="integer indices"):
        shape_bias([np.bool_(True), np.bool_(False)], [1, 2], [2, 1])


def test_non_finite_outputs_are_refused_not_decided():
    for bad in (float("nan"), float("inf")):
        logits = torch.zeros(2, 1000)
        logits[1, 3] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            cue_conflict_decisions(logits)
