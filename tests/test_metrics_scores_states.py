"""OOD scores (aprkit.eval.scores) and stateful metrics (aprkit.eval.states)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from aprkit.eval import metrics as M
from aprkit.eval import scores as S
from aprkit.eval.states import AccuracyState, CalibrationState, OODState


def _logits(n: int = 64, k: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 2, torch.randint(0, k, (n,), generator=g)


# ---------------------------------------------------------------- scores


def test_logit_scores_hand_computed() -> None:
    z = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(S.max_logit(z), torch.tensor([3.0, 0.0]))
    e = torch.exp(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(S.msp(z), torch.tensor([float(e[2] / e.sum()), 1 / 3]))
    assert torch.allclose(S.energy(z), torch.tensor([math.log(float(e.sum())), math.log(3.0)]))
    assert torch.allclose(S.energy(z, temperature=2.0), 2 * torch.logsumexp(z / 2, 1))
    assert torch.allclose(S.msp(z, temperature=1000.0)[1], torch.tensor(1 / 3))
    with pytest.raises(ValueError, match="NaN"):
        S.msp(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        S.energy(torch.ones(3))
    with pytest.raises(ValueError, match="temperature"):
        S.energy(z, temperature=0)


def _tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5)).eval()


def test_odin_perturbation_raises_tempered_msp() -> None:
    model = _tiny_model()
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x0 = x.clone()
    with torch.no_grad():
        base = S.msp(model(x), temperature=1000.0)
    assert torch.allclose(S.odin(model, x, temperature=1000.0, epsilon=0.0), base)
    pert = S.odin(model, x, temperature=1000.0, epsilon=0.01)
    assert pert.shape == (16,) and (pert >= base - 1e-7).all() and (pert > base).any()
    assert torch.equal(x, x0) and all(p.grad is None for p in model.parameters())  # no side effects
    with torch.no_grad():  # works inside an inference loop's no_grad
        assert S.odin(model, x, epsilon=0.001).shape == (16,)
    with pytest.raises(ValueError, match="epsilon"):
        S.odin(model, x, epsilon=-1.0)


def test_features_and_logits_hook() -> None:
    model = _tiny_model()
    x = torch.rand(4, 3, 8, 8)
    feats, logits = S.features_and_logits(model, x)
    assert feats.shape == (4, 16) and torch.allclose(logits, model(x))
    assert torch.allclose(model[4](feats), logits)
    with pytest.raises(ValueError, match="Linear"):
        S.features_and_logits(nn.Sequential(nn.Flatten()), x)


def test_mahalanobis_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (3, 6))
    y = rng.integers(0, 3, 300)
    f = means[y] + rng.normal(0, 1, (300, 6)) @ rng.normal(0, 1, (6, 6))
    test = rng.normal(0, 3, (40, 6))
    mu = np.stack([f[y == c].mean(0) for c in range(3)])
    centred = f - mu[y]
    prec = np.linalg.pinv(centred.T @ centred / len(f))
    want = -np.min([np.einsum("nd,de,ne->n", test - m, prec, test - m) for m in mu], axis=0)
    scorer = S.MahalanobisScorer(chunk_size=7).fit(torch.from_numpy(f).float(), torch.from_numpy(y))
    got = scorer.score(torch.from_numpy(test).float())
    assert np.allclose(got.numpy(), want, rtol=1e-4, atol=1e-3)
    again = S.MahalanobisScorer().load_state_dict(scorer.state_dict()).score(torch.from_numpy(test).float())
    assert torch.equal(again, got)
    with pytest.raises(RuntimeError, match="before fit"):
        S.MahalanobisScorer().score(torch.ones(2, 6))
    with pytest.raises(ValueError, match="D = 6"):
        scorer.score(torch.ones(2, 5))
    with pytest.raises(ValueError, match="one per feature row"):
        S.MahalanobisScorer().fit(torch.ones(4, 2), torch.zeros(3, dtype=torch.long))


def test_knn_matches_brute_force() -> None:
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(1)
    bank, test = rng.normal(size=(200, 8)), rng.normal(size=(30, 8))
    nb = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    nt = test / np.linalg.norm(test, axis=1, keepdims=True)
    dist, _ = NearestNeighbors(n_neighbors=10).fit(nb).kneighbors(nt)
    got = S.KNNScorer(k=10, chunk_size=8).fit(torch.from_numpy(bank).float()).score(torch.from_numpy(test).float())
    assert np.allclose(got.numpy(), -dist[:, -1], atol=1e-5)
    with pytest.raises(ValueError, match="at least k = 50"):
        S.KNNScorer().fit(torch.randn(10, 3))


def test_scores_separate_in_from_out() -> None:
    """End to end: features of two Gaussian blobs, ID blob near training data gets higher scores."""
    g = torch.Generator().manual_seed(0)
    e1, e2 = torch.eye(4)[0] * 3, torch.eye(4)[1] * 3
    train = torch.randn(500, 4, generator=g) * 0.5 + e1
    labels = (train[:, 2] > 0).long()
    s_in_f = torch.randn(200, 4, generator=g) * 0.5 + e1
    s_out_f = torch.randn(200, 4, generator=g) * 0.5 + e2  # another direction: KNN normalises features
    maha = S.MahalanobisScorer().fit(train, labels)
    knn = S.KNNScorer(k=5).fit(train)
    assert M.auroc(maha.score(s_in_f), maha.score(s_out_f)) > 0.95
    assert M.auroc(knn.score(s_in_f), knn.score(s_out_f)) > 0.95


# ---------------------------------------------------------------- states


def test_calibration_state_matches_functional_and_merges() -> None:
    logits, y = _logits(1000, 10)
    p = torch.softmax(logits.double(), 1)
    a, b, whole = CalibrationState(), CalibrationState(), CalibrationState()
    for i in range(0, 1000, 128):
        (a if i < 500 else b).update(logits[i : i + 128], y[i : i + 128])
        whole.update(logits[i : i + 128], y[i : i + 128])
    a.merge_state(b)
    for st in (a, whole):
        r = st.compute()
        assert r["n"] == 1000 and r["accuracy"] == pytest.approx(M.accuracy(p, y))
        assert r["ece"] == pytest.approx(M.expected_calibration_error(p, y), abs=1e-12)
        assert r["rms"] == pytest.approx(M.rms_calibration_error(p, y), abs=1e-12)
        assert r["nll"] == pytest.approx(M.nll(p, y), abs=1e-10)
        assert r["brier"] == pytest.approx(M.brier(p, y), abs=1e-10)
        ref = M.reliability_diagram_data(p, y)
        assert r["reliability"]["count"] == ref["count"]
        assert np.allclose(r["reliability"]["confidence"], ref["confidence"], atol=1e-12)
        assert np.allclose(r["reliability"]["accuracy"], ref["accuracy"], atol=1e-12)
    c = CalibrationState()
    c.load_state_dict(a.state_dict())
    assert c.compute() == a.compute()
    probs_state = CalibrationState(inputs="probs", keep_confidences=False)
    probs_state.update(p.float(), y)
    assert "rms" not in probs_state.compute()
    assert probs_state.state_dict()["bins"].shape == (3, 15)  # fixed size


def test_state_errors() -> None:
    with pytest.raises(ValueError, match="before any update"):
        CalibrationState().compute()
    with pytest.raises(ValueError, match="NaN"):
        CalibrationState().update(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="3 predictions"):
        CalibrationState().update(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="different configuration"):
        a = CalibrationState(n_bins=10)
        a.merge_state(CalibrationState(n_bins=15))
    with pytest.raises(TypeError, match="cannot merge"):
        AccuracyState().merge_state(CalibrationState())
    with pytest.raises(ValueError, match="both ID and OOD"):
        OODState().compute()


def test_accuracy_and_ood_states() -> None:
    logits, y = _logits(300, 10, seed=2)
    acc, other = AccuracyState(top_k=(1, 5)), AccuracyState(top_k=(1, 5))
    acc.update(logits[:100], y[:100])
    other.update(logits[100:], y[100:])
    acc.merge_state(other.state_dict())
    r = acc.compute()
    assert r["accuracy"] == pytest.approx(M.accuracy(logits, y))
    assert r["top5_accuracy"] == pytest.approx(M.accuracy(logits, y, top_k=5))
    s_in, s_out = torch.randn(50) + 1, torch.randn(40)
    o = OODState()
    o.update(torch.cat([s_in[:20], s_out[:10]]), torch.cat([torch.ones(20), torch.zeros(10)]).bool())
    o.update(s_in[20:], True)
    o2 = OODState()
    o2.update(s_out[10:], False)
    o.merge_state(o2)
    r = o.compute()
    assert r["n_in"] == 50 and r["n_out"] == 40
    assert r["auroc"] == pytest.approx(M.auroc(s_in, s_out)) and r["fpr@95"] == pytest.approx(M.fpr_at_tpr(s_in, s_out))


def _sync_worker(rank: int, world: int, store_path: str, out_path: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world)
    logits, y = _logits(400, 10, seed=7)
    shard = slice(rank * 200, (rank + 1) * 200)
    cal, acc = CalibrationState(), AccuracyState()
    cal.update(logits[shard], y[shard])
    acc.update(logits[shard], y[shard])
    cal.sync()
    acc.sync()
    if rank == 0:
        torch.save({"cal": cal.compute(), "acc": acc.compute()}, out_path)
    dist.destroy_process_group()


@pytest.mark.slow
def test_states_sync_across_processes(tmp_path) -> None:
    import torch.multiprocessing as mp

    out = tmp_path / "out.pt"
    mp.spawn(_sync_worker, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=False)
    logits, y = _logits(400, 10, seed=7)
    p = torch.softmax(logits.double(), 1)
    assert got["acc"]["n"] == 400 and got["acc"]["accuracy"] == pytest.approx(M.accuracy(logits, y))
    assert got["cal"]["ece"] == pytest.approx(M.expected_calibration_error(p, y), abs=1e-12)
    assert got["cal"]["rms"] == pytest.approx(M.rms_calibration_error(p, y), abs=1e-12)
