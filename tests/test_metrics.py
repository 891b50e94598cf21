"""Functional metrics vs independent implementations (torchmetrics, scikit-learn) and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aprkit.eval import metrics as M


def _probs(n: int, k: int, seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * scale
    labels = torch.where(torch.rand(n, generator=g) < 0.6, logits.argmax(1), torch.randint(0, k, (n,), generator=g))
    return torch.softmax(logits, 1), labels


# ---------------------------------------------------------------- calibration


@pytest.mark.parametrize("k", [2, 10, 100])
@pytest.mark.parametrize("n_bins", [1, 10, 15, 37])
def test_ece_matches_torchmetrics_multiclass(k: int, n_bins: int) -> None:
    from torchmetrics.functional.classification import multiclass_calibration_error

    p, y = _probs(3000, k, seed=k + n_bins)
    ref = float(multiclass_calibration_error(p, y, num_classes=k, n_bins=n_bins, norm="l1"))
    assert M.expected_calibration_error(p, y, n_bins=n_bins) == pytest.approx(ref, abs=1e-5)  # torchmetrics sums in float32


@pytest.mark.parametrize("n_bins", [5, 15])
def test_ece_matches_torchmetrics_binary(n_bins: int) -> None:
    """Top-label ECE of a 2-class problem = torchmetrics' binary ECE of (confidence, correct)."""
    from torchmetrics.functional.classification import binary_calibration_error

    p, y = _probs(2000, 2, seed=3)
    conf, pred = p.max(1)
    ref = float(binary_calibration_error(conf, (pred == y).long(), n_bins=n_bins, norm="l1"))
    assert M.expected_calibration_error(p, y, n_bins=n_bins) == pytest.approx(ref, abs=1e-5)  # torchmetrics sums in float32


def test_ece_class_api_and_numpy_input() -> None:
    from torchmetrics.classification import MulticlassCalibrationError

    p, y = _probs(500, 5, seed=9)
    metric = MulticlassCalibrationError(num_classes=5, n_bins=15, norm="l1")
    metric.update(p[:200], y[:200])
    metric.update(p[200:], y[200:])
    ours = M.expected_calibration_error(p.numpy(), y.numpy().tolist())
    assert ours == pytest.approx(float(metric.compute()), abs=1e-6)


def _two_class(conf: list[float], correct: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.tensor(conf, dtype=torch.float64)
    probs = torch.stack([c, 1 - c], 1)
    labels = torch.tensor([0 if ok else 1 for ok in correct])
    return probs, labels


def test_rms_hand_computed_remainder_joins_last_bin() -> None:
    # sorted confidences 0.6..1.0, bins of 2: [0.6, 0.7] and [0.8, 0.9, 1.0] (remainder joins the last bin)
    probs, labels = _two_class([0.9, 0.6, 1.0, 0.7, 0.8], [1, 1, 0, 0, 1])
    b1 = (2 / 5) * (0.65 - 0.5) ** 2
    b2 = (3 / 5) * (0.9 - 2 / 3) ** 2
    assert M.rms_calibration_error(probs, labels, bin_size=2) == pytest.approx(math.sqrt(b1 + b2), abs=1e-12)
    # Hendrycks' reference loop would drop the last bin: we must not equal that
    assert M.rms_calibration_error(probs, labels, bin_size=2) != pytest.approx(math.sqrt(b1), abs=1e-6)


def test_rms_fewer_samples_than_bin_size_is_one_bin() -> None:
    probs, labels = _two_class([0.9, 0.8, 0.7], [1, 0, 1])
    assert M.rms_calibration_error(probs, labels, bin_size=100) == pytest.approx(abs(0.8 - 2 / 3), abs=1e-12)


def test_rms_exact_multiple_and_bin_size_one() -> None:
    probs, labels = _two_class([0.6, 0.7, 0.8, 0.9], [1, 0, 0, 1])
    want = math.sqrt(((0.65 - 0.5) ** 2 + (0.85 - 0.5) ** 2) / 2)
    assert M.rms_calibration_error(probs, labels, bin_size=2) == pytest.approx(want, abs=1e-12)
    per_sample = math.sqrt(sum((c - ok) ** 2 for c, ok in zip([0.6, 0.7, 0.8, 0.9], [1, 0, 0, 1])) / 4)
    assert M.rms_calibration_error(probs, labels, bin_size=1) == pytest.approx(per_sample, abs=1e-12)


def test_rms_does_not_depend_on_the_order_of_ties() -> None:
    """A bin edge inside a group of equal confidences: each tied sample counts with the group's mean correctness,
    so any order of the samples gives the same error (a stable sort kept the input order inside the tie)."""
    conf = torch.tensor([0.6, 0.7, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    correct = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    # bins of 2 after sorting: [0.6, 0.7], [1.0, 1.0], [1.0, 1.0]; the four ties are half correct
    want = math.sqrt((2 * (0.65 - 0.5) ** 2 + 4 * (1.0 - 0.5) ** 2) / 6)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        p = torch.randperm(6, generator=g)
        assert M.rms_from_confidences(conf[p], correct[p], bin_size=2) == pytest.approx(want, abs=1e-12)


def test_bin_sums_are_the_samples_sums_in_order_and_rms_matches_the_formula() -> None:
    """The bins' three sums are each bin's samples added in their order (bit for bit what a loop gives); the RMS
    error over many bins of a large set equals the formula computed on the host to rounding."""
    g = torch.Generator().manual_seed(5)
    conf = torch.rand(1234, generator=g, dtype=torch.float64)
    correct = (torch.rand(1234, generator=g) < conf).double()
    stats = M.bin_statistics(conf, correct, n_bins=15)
    idx = [min(int(c * 15), 14) for c in conf.tolist()]  # no confidence lies on an edge here
    for b in range(15):
        members = [i for i in range(1234) if idx[i] == b]
        count, s_conf, s_corr = 0.0, 0.0, 0.0
        for i in members:
            count, s_conf, s_corr = count + 1.0, s_conf + float(conf[i]), s_corr + float(correct[i])
        assert stats[:, b].tolist() == [count, s_conf, s_corr]
    r = M.reliability_from_bins(stats)
    assert r["count"] == [int(c) for c in stats[0].tolist()]
    assert r["confidence"] == (stats[1] / stats[0].clamp_min(1)).tolist()
    assert r["ece"] == pytest.approx(float((stats[2] - stats[1]).abs().sum() / 1234), rel=1e-14)
    order = sorted(range(1234), key=lambda i: float(conf[i]))
    gaps = [float(conf[i]) - float(correct[i]) for i in order]
    bins = [gaps[k * 100:(k + 1) * 100] for k in range(11)] + [gaps[1100:]]  # 12 bins, the last of 134
    want = math.sqrt(sum(sum(b) ** 2 / len(b) for b in bins) / 1234)
    assert M.rms_from_confidences(conf, correct) == pytest.approx(want, rel=1e-13)


def test_bin_statistics_readers_refuse_other_shapes() -> None:
    for bad in (torch.zeros(2, 15), torch.zeros(3, 0), torch.zeros(3, 4, 1), [[1.0], [0.5], [1.0]]):
        for fn in (M.ece_from_bins, M.reliability_from_bins):
            with pytest.raises(ValueError, match=r"stats must be bin_statistics' tensor \(3, n_bins\)"):
                fn(bad)
    with pytest.raises(ValueError, match="no samples were binned"):
        M.ece_from_bins(torch.zeros(3, 15))


def test_nll_brier_hand_computed() -> None:
    p = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    y = torch.tensor([0, 1])
    assert M.nll(p, y) == pytest.approx(-(math.log(0.7) + math.log(0.25)) / 2)
    b = ((0.3**2 + 0.2**2 + 0.1**2) + (0.25**2 + 0.75**2 + 0.5**2)) / 2
    assert M.brier(p, y) == pytest.approx(b)
    # against torch's cross-entropy on logits
    logits = torch.randn(50, 7, generator=torch.Generator().manual_seed(1))
    yy = torch.randint(0, 7, (50,), generator=torch.Generator().manual_seed(2))
    ce = torch.nn.functional.cross_entropy(logits.double(), yy)
    assert M.nll(torch.softmax(logits.double(), 1), yy) == pytest.approx(float(ce), abs=1e-10)


def test_reliability_diagram_data_consistent_with_ece() -> None:
    p, y = _probs(1000, 10, seed=4)
    r = M.reliability_diagram_data(p, y, n_bins=10)
    assert len(r["bin_edges"]) == 11 and len(r["accuracy"]) == len(r["confidence"]) == len(r["count"]) == 10
    assert sum(r["count"]) == 1000
    ece = sum(c / 1000 * abs(a - f) for c, a, f in zip(r["count"], r["accuracy"], r["confidence"]))
    assert ece == pytest.approx(M.expected_calibration_error(p, y, n_bins=10)) == pytest.approx(r["ece"])
    import json

    json.dumps(r)  # serialisable


def test_perfect_calibration_and_accuracy() -> None:
    p = torch.eye(4)[[0, 1, 2, 3, 0]].double()
    y = torch.tensor([0, 1, 2, 3, 0])
    assert M.expected_calibration_error(p, y) == 0.0
    assert M.rms_calibration_error(p, y) == 0.0
    assert M.brier(p, y) == 0.0
    assert M.accuracy(p, y) == 1.0 and M.error_rate(p, y) == 0.0
    assert M.accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2])) == pytest.approx(2 / 3)
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    assert M.accuracy(logits, torch.tensor([2, 0]), top_k=2) == 1.0


@pytest.mark.parametrize(
    "fn", [M.expected_calibration_error, M.rms_calibration_error, M.nll, M.brier, M.reliability_diagram_data]
)
def test_calibration_bad_input(fn) -> None:
    p, y = _probs(10, 3)
    with pytest.raises(ValueError, match="10 predictions"):
        fn(p, y[:9])
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.where(torch.arange(3) == 1, float("nan"), p), y)
    with pytest.raises(ValueError, match="sum to 1"):
        fn(p * 0.5, y)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        fn(p[0], y[:1])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        fn(p, torch.full((10,), 3))
    with pytest.raises(TypeError, match="integer"):
        fn(p, y.float())
    with pytest.raises(TypeError):
        fn("probs", y)


@pytest.mark.parametrize("fn", [M.bin_statistics, M.rms_from_confidences])
def test_confidence_level_helpers_reject_bad_confidences(fn) -> None:
    """The exported per-confidence helpers are an API boundary too: a NaN confidence put itself into the last
    bin and returned nan (review, session 42)."""
    conf, correct = torch.tensor([0.5, 0.9]), torch.tensor([True, False])
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.tensor([0.5, float("nan")]), correct)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn(torch.tensor([0.5, 1.5]), correct)
    with pytest.raises(ValueError, match="same length"):
        fn(conf, correct[:1])
    with pytest.raises(ValueError, match="0/1"):
        fn(conf, torch.tensor([0.0, 2.0]))
    with pytest.raises(TypeError, match="floating"):
        fn(torch.tensor([0, 1]), correct)
    assert isinstance(fn(conf.numpy(), correct.numpy()), (float, torch.Tensor))  # arrays, as every metric takes


def test_bin_counts_accept_numpy_integers() -> None:
    p, y = _probs(300, 4)
    assert M.expected_calibration_error(p, y, np.int64(15)) == M.expected_calibration_error(p, y, 15)
    assert M.rms_calibration_error(p, y, np.int32(50)) == M.rms_calibration_error(p, y, 50)
    for bad in (True, 15.0, "15"):
        with pytest.raises(TypeError, match="positive int"):
            M.expected_calibration_error(p, y, bad)
    with pytest.raises(ValueError, match=">= 1"):
        M.rms_calibration_error(p, y, np.int64(0))


def test_accuracy_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        M.accuracy(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="2 predictions"):
        M.accuracy(torch.randn(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="top_k"):
        M.accuracy(torch.randn(2, 3), torch.tensor([0, 1]), top_k=4)
    assert M.accuracy(torch.eye(3), torch.tensor([2, 1, 0]), top_k=np.int64(3)) == 1.0  # a NumPy integer is one
    with pytest.raises(ValueError, match="top_k must be a positive int, got 0"):
        M.accuracy(torch.randn(2, 3), torch.tensor([0, 1]), top_k=0)


def test_accuracy_ties_follow_argmax() -> None:
    """Tied top scores count the lowest tied class, as argmax, torchmetrics and the suites' per-cell accuracy do."""
    from torchmetrics.functional.classification import multiclass_accuracy

    out = torch.tensor([[1.0, 1.0, 1.0, 0.0, 2.0, 2.0]] * 2 + [[3.0, 0.0, 3.0, 3.0, 1.0, 1.0]])
    assert M.accuracy(out, torch.tensor([4, 5, 0])) == pytest.approx(2 / 3)
    assert M.topk_correct(out, torch.tensor([5, 2, 3]), (1, 2, 3)).tolist() == [0, 1, 2]  # class 2 ranks 5th in row 2
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 3, (300, 8), generator=g).float()  # many ties
    y = torch.randint(0, 8, (300,), generator=g)
    ref = float(multiclass_accuracy(q, y, num_classes=8, average="micro"))
    assert M.accuracy(q, y) == pytest.approx(ref) == pytest.approx(float((q.argmax(1) == y).float().mean()))


def test_inputs_not_mutated_and_dtype_agnostic() -> None:
    p, y = _probs(200, 5)
    p0, y0 = p.clone(), y.clone()
    a = M.expected_calibration_error(p, y)
    b = M.expected_calibration_error(p.double(), y.int())
    assert a == pytest.approx(b, abs=1e-6)
    M.brier(p, y)
    assert torch.equal(p, p0) and torch.equal(y, y0)


# ---------------------------------------------------------------- OOD


def _scores(seed: int, n_in: int = 400, n_out: int = 300, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s_in, s_out = rng.normal(1.0, 1.0, n_in), rng.normal(0.0, 1.2, n_out)
    if ties:
        s_in, s_out = np.round(s_in, 1), np.round(s_out, 1)
    return s_in, s_out


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_aupr_match_sklearn(seed: int, ties: bool) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    s_in, s_out = _scores(seed, ties=ties)
    y = np.r_[np.ones_like(s_in), np.zeros_like(s_out)]
    s = np.r_[s_in, s_out]
    assert M.auroc(s_in, s_out) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.aupr_in(torch.from_numpy(s_in), torch.from_numpy(s_out)) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert M.aupr_out(s_in, s_out) == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("tpr", [0.95, 0.8, 0.5, 1.0])
def test_fpr_at_tpr_matches_first_roc_point(tpr: float, ties: bool) -> None:
    from sklearn.metrics import roc_curve

    s_in, s_out = _scores(5, n_in=333, n_out=211, ties=ties)
    y = np.r_[np.ones_like(s_in), np.zeros_like(s_out)]
    fpr, tprs, _ = roc_curve(y, np.r_[s_in, s_out], drop_intermediate=False)
    want = fpr[np.searchsorted(tprs, tpr - 1e-12, side="left")]
    assert M.fpr_at_tpr(s_in, s_out, tpr=tpr) == pytest.approx(want, abs=1e-12)


def test_fpr_at_95_hand_computed_with_ties() -> None:
    s_in = torch.arange(1, 21, dtype=torch.float32)  # 20 ID scores; 95 % = 19 accepted -> threshold 2
    s_out = torch.tensor([0.0, 1.5, 2.0, 2.5, 30.0])  # 2.0 ties with the threshold and counts as accepted
    assert M.fpr_at_tpr(s_in, s_out) == pytest.approx(3 / 5)
    assert M.fpr_at_tpr(s_in, s_out, tpr=1.0) == pytest.approx(4 / 5)  # threshold 1
    assert M.fpr_at_tpr(s_in, s_out, tpr=0.05) == pytest.approx(1 / 5)  # threshold 20
    # 0.95 * 100 is 95.00000000000001 in floating point: still 95 accepted, not 96
    s_in100 = torch.arange(100, dtype=torch.float64)
    assert M.fpr_at_tpr(s_in100, torch.tensor([4.5, 5.0, 5.5])) == pytest.approx(2 / 3)


def test_ood_perfect_separation_and_metrics_dict() -> None:
    s_in, s_out = torch.tensor([3.0, 4.0, 5.0]), torch.tensor([0.0, 1.0])
    r = M.ood_metrics(s_in, s_out)
    assert r == {"auroc": 1.0, "auroc_se": 0.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr@95": 0.0}
    assert M.auroc(s_out, s_in) == 0.0


def test_ood_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        M.auroc(torch.tensor([1.0, float("nan")]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        M.auroc(torch.ones(3, 2), torch.ones(3))
    with pytest.raises(ValueError, match="empty"):
        M.fpr_at_tpr(torch.ones(3), torch.ones(0))
    with pytest.raises(ValueError, match="tpr"):
        M.fpr_at_tpr(torch.ones(3), torch.ones(3), tpr=0.0)


# ---------------------------------------------------------------- corruption

# AlexNet per-corruption errors (severity means) as published in hendrycks/robustness, typed in independently
_ALEX = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572,
    "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}


def test_alexnet_table_matches_published_means() -> None:
    assert set(M.ALEXNET_ERRORS) == set(_ALEX) == set(M.CORRUPTIONS)
    for c, v in _ALEX.items():
        assert len(M.ALEXNET_ERRORS[c]) == 5
        assert sum(M.ALEXNET_ERRORS[c]) / 5 == pytest.approx(v, abs=2e-6)
    assert M.mce(M.ALEXNET_ERRORS) == pytest.approx(1.0)


def test_mce_hand_computed() -> None:
    errors = {c: 0.5 for c in M.CORRUPTIONS}
    errors["gaussian_noise"] = [0.1, 0.2, 0.3, 0.4, 0.5]  # per-severity list: CE = 1.5 / (5 * 0.886428)
    ce = {c: 0.5 / a for c, a in _ALEX.items()}
    ce["gaussian_noise"] = 1.5 / (5 * 0.886428)
    want = sum(ce.values()) / 15
    assert M.mce(errors) == pytest.approx(want, abs=1e-5)
    per = M.ce_per_corruption(errors)
    assert per["gaussian_noise"] == pytest.approx(0.338437, abs=1e-5)
    # relative mCE with clean error 0.2: (E_c - 0.2) / (E^A_c - E^A_clean)
    rel = sum(((0.3 if c == "gaussian_noise" else 0.5) - 0.2) / (a - M.ALEXNET_CLEAN_ERROR) for c, a in _ALEX.items()) / 15
    assert M.relative_mce(errors, clean_error=0.2) == pytest.approx(rel, abs=1e-5)


def test_mce_custom_baseline_and_names() -> None:
    base = {c: 0.8 for c in M.CORRUPTIONS}
    errors = {c.replace("_", " ").title(): 0.4 for c in M.CORRUPTIONS}  # "Gaussian Noise" style keys
    assert M.mce(errors, baseline=base) == pytest.approx(0.5)
    assert M.relative_mce(errors, 0.2, baseline=base, baseline_clean_error=0.4) == pytest.approx(0.5)


def test_mean_corruption_error_and_robustness() -> None:
    errors = {c: [0.1, 0.2, 0.3, 0.4, 0.5] for c in M.CORRUPTIONS}
    errors["fog"] = 0.6
    want = (14 * 0.3 + 0.6) / 15
    assert M.mean_corruption_error(errors) == pytest.approx(want)
    errors["speckle_noise"] = 0.9  # extra corruptions are ignored by the 15-corruption mean
    assert M.mean_corruption_error(errors) == pytest.approx(want)
    assert M.mean_corruption_error({"fog": 0.2, "snow": [0.4] * 5}, corruptions=None) == pytest.approx(0.3)
    assert M.corruption_robustness({"fog": 0.45, "snow": 0.45}, clean_accuracy=0.9) == pytest.approx(0.5)
    assert M.corruption_robustness(0.6, clean_accuracy=0.8) == pytest.approx(0.75)
    s = M.corruption_summary({c: 0.5 for c in M.CORRUPTIONS}, clean_error=0.2, imagenet=True)
    assert s["mean_corruption_error"] == pytest.approx(0.5) and s["relative_robustness"] == pytest.approx(0.625)
    assert s["mce"] == pytest.approx(M.mce({c: 0.5 for c in M.CORRUPTIONS}))


def test_per_severity_errors_may_be_a_mapping_of_the_severities() -> None:
    """{severity: error} (int keys, or results.json's string keys) is the 5 per-severity errors (reviewer: a
    TypeError "must be real number, not dict" that named neither the corruption nor the forms taken)."""
    as_list = {c: [0.1, 0.2, 0.3, 0.4, 0.5] for c in M.CORRUPTIONS}
    for keys in (range(1, 6), map(str, range(1, 6))):
        ks = list(keys)
        as_map = {c: dict(zip(reversed(ks), [0.5, 0.4, 0.3, 0.2, 0.1])) for c in M.CORRUPTIONS}
        assert M.mean_corruption_error(as_map) == M.mean_corruption_error(as_list)
        assert M.mce(as_map) == M.mce(as_list)
    with pytest.raises(ValueError, match=r"errors\['fog'\] must be one error, 5 per-severity errors or a mapping of the "
                                         r"severities 1..5 to their errors, got a mapping of \[1, 2\]"):
        M.mean_corruption_error({**as_list, "fog": {1: 0.1, 2: 0.2}})
    with pytest.raises(TypeError, match=r"errors\['fog'\] must be one error.*got str"):
        M.mean_corruption_error({**as_list, "fog": "high"})
    twice = {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5, 5: 0.5, "5": 0.9}  # the last of 5 and "5" was kept without a word
    with pytest.raises(ValueError, match=r"errors\['fog'\] names a severity twice"):
        M.mean_corruption_error({**as_list, "fog": twice})


def test_corruption_bad_input() -> None:
    full = {c: 0.5 for c in M.CORRUPTIONS}
    with pytest.raises(ValueError, match="lacks 1 of the 15"):
        M.mce({c: 0.5 for c in M.CORRUPTIONS[1:]})
    with pytest.raises(ValueError, match="percent"):
        M.mce({**full, "fog": 55.0})
    with pytest.raises(ValueError, match="5 per-severity"):
        M.mce({**full, "fog": [0.1, 0.2]})
    with pytest.raises(ValueError, match="did you mean 'gaussian_noise'"):
        M.mce({**full, "gausian_noise": 0.5})
    with pytest.raises(ValueError, match="NaN"):
        M.mean_corruption_error({**full, "fog": float("nan")})
    with pytest.raises(ValueError, match="baseline"):
        M.mce(full, baseline="resnet")
    with pytest.raises(TypeError, match="mapping"):
        M.mce([0.5] * 15)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_run_on_cuda_inputs() -> None:
    p, y = _probs(500, 10)
    cpu = (M.expected_calibration_error(p, y), M.rms_calibration_error(p, y), M.nll(p, y), M.brier(p, y))
    gpu = (M.expected_calibration_error(p.cuda(), y.cuda()), M.rms_calibration_error(p.cuda(), y.cuda()),
           M.nll(p.cuda(), y.cuda()), M.brier(p.cuda(), y.cuda()))
    assert np.allclose(cpu, gpu, atol=1e-6)
    s_in, s_out = _scores(0)
    assert M.auroc(torch.from_numpy(s_in).cuda(), torch.from_numpy(s_out).cuda()) == pytest.approx(M.auroc(s_in, s_out))


def _delong_brute(s_in: np.ndarray, s_out: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) written out pair by pair: psi(x, y) = 1 if x > y, 1/2 if tied, else 0."""
    psi = (s_in[:, None] > s_out[None, :]) + 0.5 * (s_in[:, None] == s_out[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    var = v10.var(ddof=1) / len(s_in) + v01.var(ddof=1) / len(s_out)
    return float(psi.mean()), float(np.sqrt(var))


@pytest.mark.parametrize("n_in,n_out,levels", [(7, 5, 4), (40, 90, 1000), (200, 13, 6), (2, 2, 3)])
def test_auroc_se_is_delongs(n_in: int, n_out: int, levels: int) -> None:
    rng = np.random.default_rng(n_in * 1000 + n_out)
    s_in = rng.integers(0, levels, n_in).astype(np.float64) + 0.3 * (levels > 10)  # few levels: many ties
    s_out = rng.integers(0, levels, n_out).astype(np.float64) - 1
    auc, se = _delong_brute(s_in, s_out)
    assert M.auroc(s_in, s_out) == pytest.approx(auc, abs=1e-12)
    assert M.auroc_se(s_in, s_out) == pytest.approx(se, abs=1e-12)
    r = M.ood_metrics(torch.from_numpy(s_in).float(), torch.from_numpy(s_out).float())
    assert r["auroc_se"] == pytest.approx(se, abs=1e-6)


def test_auroc_se_edge_cases() -> None:
    assert M.auroc_se(torch.tensor([3.0, 4.0, 5.0]), torch.tensor([0.0, 1.0])) == 0.0  # perfect separation
    assert math.isnan(M.auroc_se(torch.tensor([3.0]), torch.tensor([0.0, 1.0])))  # one ID sample: no variance
    # it shrinks like 1/sqrt(n): 100x the samples of the same two distributions, about a tenth of the error
    g = torch.Generator().manual_seed(0)
    small = M.auroc_se(torch.randn(90, generator=g) + 1, torch.randn(90, generator=g))
    large = M.auroc_se(torch.randn(9000, generator=g) + 1, torch.randn(9000, generator=g))
    assert 0.07 < large / small < 0.14


def test_oracle_review_nll_is_the_cross_entropy_and_bfloat16_and_edge_keys():
    """NLL is not capped (a 1e-12 floor capped each sample at 27.6): the suites' cells take the exact
    cross-entropy of the logits; a bfloat16 softmax passes the probability check; energy is float64 (no float32
    ties at a high temperature); FPR keys keep the percent's digits; 1-D empty outputs and corruption names in
    any spelling are handled."""
    import torch.nn.functional as F

    from aprkit.eval import metrics as M
    from aprkit.eval.metrics import ood_scores as S
    from aprkit.eval.suites.corruption import cell_summary

    lg, y = torch.tensor([[40.0, 0.0, 0.0], [0.0, 2.0, 1.0]]), torch.tensor([1, 1])
    want = float(F.cross_entropy(lg.double(), y))
    assert cell_summary(lg, y)["nll"] == pytest.approx(want, rel=1e-12)
    assert M.nll_from_logits(lg, y) == pytest.approx(want, rel=1e-12)
    assert M.nll(torch.softmax(lg.double(), 1), y) == pytest.approx(want, rel=1e-12)
    assert M.nll(torch.tensor([[1.0, 0.0]]), torch.tensor([1])) == pytest.approx(708.396, abs=1e-3)
    labels = torch.randint(0, 10, (500,), generator=torch.Generator().manual_seed(0))
    bf = torch.softmax(torch.randn(500, 10, generator=torch.Generator().manual_seed(1)).bfloat16(), 1)
    assert 0 <= M.expected_calibration_error(bf, labels) <= 1
    z = torch.randn(2000, 10, generator=torch.Generator().manual_seed(2))
    e = S.energy(z, temperature=1000.0)
    assert e.dtype == torch.float64 and e.unique().numel() == 2000
    with pytest.raises(ValueError, match="finite number > 0"):
        S.energy(z, temperature=float("inf"))
    keys = M.ood_metrics(torch.rand(50), torch.rand(50), tpr=0.999)
    assert "fpr@99.9" in keys and "fpr@95" in M.ood_metrics(torch.rand(50), torch.rand(50))
    with pytest.raises(ValueError, match="outputs is empty"):
        M.accuracy(torch.zeros(0, dtype=torch.long), [])
    errs = {c: [0.1] * 5 for c in M.CORRUPTIONS}
    spelled = tuple(c.replace("_", " ").title() for c in M.CORRUPTIONS)
    assert M.mean_corruption_error(errs, corruptions=spelled) == pytest.approx(0.1)


def test_integer_scores_keep_their_order_beyond_float32():
    """Integer scores are compared exactly (float64): above 2**24 float32 would tie distinct integers; unsigned
    integer dtypes are accepted."""
    import numpy as np

    from aprkit.eval import metrics as M

    assert M.auroc([16777217], [16777216]) == 1.0
    s_in, s_out = np.array([16777217, 16777219]), np.array([16777216, 16777218])
    assert M.auroc(s_in, s_out) == 0.75 and M.fpr_at_tpr(s_in, s_out) == 0.5
    assert M.auroc(np.array([3, 5], dtype=np.uint64), np.array([1.0, 4.0], dtype=np.float32)) == 0.75


def test_float32_confidences_meet_the_bin_edges_in_float32() -> None:
    """A float32 confidence of 0.7 lies below float64 0.7: compared in float64 it fell into [0.6, 0.7) where
    torchmetrics (and the value given) put it in [0.7, 0.8); ECE 0.025 instead of 0.325."""
    from aprkit.eval.metrics import expected_calibration_error

    p = torch.tensor([[0.7, 0.3]] * 50 + [[0.65, 0.35]] * 50, dtype=torch.float32)
    y = torch.tensor([0] * 65 + [1] * 35)
    for n_bins in (10, 20):
        assert expected_calibration_error(p, y, n_bins=n_bins) == pytest.approx(0.325, abs=1e-6)


def test_a_confidence_on_an_edge_starts_its_bin_at_every_edge() -> None:
    """Each edge is k / n rounded in the confidences' precision: linspace's float32 3/15 and float64 3/10 lie one
    unit above, so a confidence of exactly 0.2 (15 bins) or 0.3 (10 bins) fell into the bin below."""
    from aprkit.eval.metrics import reliability_diagram_data

    for dtype, n in ((torch.float32, 15), (torch.float64, 15), (torch.float32, 10), (torch.float64, 10)):
        for k in range(1, n):  # the top probability exactly k / n, the rest spread thinly below it
            row = torch.cat([torch.tensor([k / n], dtype=dtype), torch.full((100,), (1 - k / n) / 100, dtype=dtype)])
            d = reliability_diagram_data(row.unsqueeze(0), torch.tensor([0]), n)
            assert d["count"].index(1) == k, (dtype, n, k)
    for dtype, row, n, want in ((torch.float64, [.3, .3, .2, .2], 10, 3), (torch.float64, [.6, .4], 10, 6),
                                (torch.float32, [.2] * 5, 15, 3), (torch.float32, [.4, .3, .3], 15, 6)):
        d = reliability_diagram_data(torch.tensor([row], dtype=dtype), torch.tensor([0]), n)
        assert d["count"].index(1) == want, (dtype, row, n)


def test_half_precision_confidences_on_an_edge_start_that_bin() -> None:
    """float16(k/15) lies below float32(k/15) for 11 of the 14 inner edges, so a half confidence given as k/15 fell
    into the bin below (metrics reviewer); it starts bin k now, as a float32 or float64 one does."""
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        for n in (10, 15):
            c = (torch.arange(1, n, dtype=torch.float64) / n).to(dtype)
            counts = M.bin_statistics(c, torch.ones(n - 1), n)[0]
            assert counts.tolist() == [0.0] + [1.0] * (n - 1), (dtype, n)


def test_nll_of_a_perfect_prediction_is_plus_zero() -> None:
    from aprkit.eval.metrics.calibration import nll_from_logits

    assert math.copysign(1.0, nll_from_logits(torch.tensor([[100.0, 0.0]]), torch.tensor([0]))) == 1.0
    assert math.copysign(1.0, M.nll(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))) == 1.0


def test_metrics_take_any_numeric_sequence() -> None:
    assert M.auroc(range(5), [0, 1]) == M.auroc([0, 1, 2, 3, 4], [0, 1])
    with pytest.raises(TypeError, match="numeric sequence, got str"):
        M.auroc("01234", [0, 1])
