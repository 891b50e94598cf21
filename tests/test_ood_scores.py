"""OOD scores (aprkit.eval.metrics.ood_scores)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from aprkit.eval import metrics as M
from aprkit.eval.metrics import ood_scores as S


def _logits(n: int = 64, k: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 2, torch.randint(0, k, (n,), generator=g)


# ---------------------------------------------------------------- scores


def test_logit_scores_hand_computed() -> None:
    z = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(S.max_logit(z), torch.tensor([3.0, 0.0]))
    e = torch.exp(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(S.msp(z), torch.tensor([float(e[2] / e.sum()), 1 / 3], dtype=torch.float64))
    assert torch.allclose(S.energy(z), torch.tensor([math.log(float(e.sum())), math.log(3.0)], dtype=torch.float64))
    assert torch.allclose(S.energy(z, temperature=2.0), 2 * torch.logsumexp(z.double() / 2, 1))
    assert torch.allclose(S.msp(z, temperature=1000.0)[1], torch.tensor(1 / 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        S.msp(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        S.energy(torch.ones(3))
    with pytest.raises(ValueError, match="temperature"):
        S.energy(z, temperature=0)


def test_msp_keeps_the_ranking_of_confident_logits() -> None:
    """In float32 the softmax maximum is exactly 1.0 once the top logit leads by about 17: confident images became
    ties. MSP is computed in float64 and ranks as the maximum logit does (for a lead below ~37)."""
    lead = torch.tensor([18.0, 20.0, 25.0, 30.0])
    z = torch.stack([lead, torch.zeros(4), torch.zeros(4)], dim=1)  # float32 logits
    assert bool((torch.softmax(z, 1).amax(1) == 1.0).all())  # the float32 collapse this guards against
    p = S.msp(z)
    assert p.dtype == torch.float64 and bool((p < 1.0).all()) and bool((p.diff() > 0).all())
    assert torch.allclose(p, 1 / (1 + 2 * torch.exp(-lead.double())), rtol=0, atol=1e-15)
    from aprkit.eval import metrics as M

    ood = torch.stack([torch.tensor([17.4, 17.6, 17.8, 17.9]), torch.zeros(4), torch.zeros(4)], dim=1)
    assert M.auroc(S.msp(z), S.msp(ood)) == 1.0  # separable, as by the maximum logit
    assert M.auroc(torch.softmax(z, 1).amax(1), torch.softmax(ood, 1).amax(1)) == 0.5  # float32: all ties at 1.0


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
    with torch.inference_mode():  # and its inference_mode (was autograd's "does not require grad"), same scores
        assert torch.equal(S.odin(model, x.clone(), epsilon=0.01), pert)
    with pytest.raises(ValueError, match="epsilon"):
        S.odin(model, x, epsilon=-1.0)

    class NanGrad(nn.Module):  # finite logits, NaN input gradient (sqrt at zero): no score, a sentence
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return model(x) + 0.0 * torch.sqrt(x - x).sum((1, 2, 3))[:, None]

    with pytest.raises(ValueError, match="gradient of the model's loss holds NaN"):
        S.odin(NanGrad(), x, epsilon=0.001)


def test_features_and_logits_hook() -> None:
    model = _tiny_model()
    x = torch.rand(4, 3, 8, 8)
    feats, logits = S.features_and_logits(model, x)
    assert feats.shape == (4, 16) and torch.allclose(logits, model(x))
    assert torch.allclose(model[4](feats), logits)
    with pytest.raises(ValueError, match="Linear"):
        S.features_and_logits(nn.Sequential(nn.Flatten()), x)


class _WithProjection(nn.Module):
    """A classifier that registers a Linear it does not call after its head (a contrastive projection)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 10)
        self.proj = nn.Linear(8, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class _ConvHeadWithGate(nn.Module):
    """A conv classifier holding an inner Linear (a channel gate): the last Linear called is not its head."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.conv = nn.Linear(3, 3), nn.Conv2d(3, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x * self.gate(x.mean((2, 3)))[:, :, None, None]).mean((2, 3))


def test_features_are_the_input_of_the_last_linear_called() -> None:
    """The last nn.Linear registered was taken as the classifier: an unused projection after the head crashed the
    feature scores ("was not called"), and Normalize's forward_head applied the projection; a conv head's inner
    Linear gave a gate's input as "features" without a word (refused now, naming the layer)."""
    from aprkit.eval.engine.inference import predict
    from aprkit.models import Normalize

    torch.manual_seed(0)
    model = _WithProjection().eval()
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    feats, logits = S.features_and_logits(model, x.float() / 255)
    assert feats.shape == (5, 8) and torch.allclose(model.fc(feats), logits)
    wrapped = Normalize(model, mean=[0, 0, 0], std=[1, 1, 1])
    f = wrapped.forward_features(x.float() / 255)
    assert torch.equal(f, feats) and torch.allclose(wrapped.forward_head(f), logits)
    out = predict(model, torch.utils.data.TensorDataset(x, torch.arange(5)), features=True, batch_size=2,
                  amp=False, progress=False)
    assert out.features is not None and torch.allclose(out.features, feats)
    with pytest.raises(ValueError, match="'gate', gives 3 outputs but the model 10"):
        S.features_and_logits(_ConvHeadWithGate(), x.float() / 255)
    with pytest.raises(ValueError, match="'gate', gives 3 outputs"):
        predict(_ConvHeadWithGate(), torch.utils.data.TensorDataset(x, torch.arange(5)), features=True,
                progress=False)

    class Split(_ConvHeadWithGate):  # ... which gives its own feature split: used (diff reviewer)
        def forward_features(self, t: torch.Tensor) -> torch.Tensor:
            return t * self.gate(t.mean((2, 3)))[:, :, None, None]

        def forward_head(self, f: torch.Tensor) -> torch.Tensor:
            return self.conv(f).mean((2, 3))

    out = predict(Split(), torch.utils.data.TensorDataset(x, torch.arange(5)), features=True, batch_size=2,
                  progress=False, amp=False)
    assert out.features is not None and out.features.shape == (5, 3)
    # a model that keeps some of its logits (an ImageNet-R class mask) reads its head's input still
    masked = nn.Sequential(model, _Keep(5))
    feats, logits = S.features_and_logits(masked, x.float() / 255)
    assert feats.shape == (5, 8) and logits.shape == (5, 5)


class _Keep(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, :self.k]


def test_a_head_named_by_get_classifier_is_looked_into() -> None:
    """timm models whose get_classifier() returns a module holding the Linear (a ClassifierHead) were refused, and a
    headless timm model inside Normalize gave an MLP's activations as features (diff reviewer)."""
    import timm

    from aprkit.eval.engine.inference import predict
    from aprkit.models import Normalize

    class Headed(_WithProjection):
        def get_classifier(self) -> nn.Module:
            return self.wrapped

        def __init__(self) -> None:
            super().__init__()
            self.wrapped = nn.Sequential(nn.Identity(), self.fc)

    x = torch.rand(3, 3, 8, 8)
    feats, logits = S.features_and_logits(Headed().eval(), x)
    assert feats.shape == (3, 8) and logits.shape == (3, 10)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, depth=2).eval()
    with pytest.raises(ValueError, match="cannot find a classifier.*pass layer="):
        S.features_and_logits(Normalize(vit), torch.rand(2, 3, 32, 32))
    u8 = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = predict(Normalize(vit), torch.utils.data.TensorDataset(u8, torch.arange(2)), features=True,
                  progress=False, amp=False)
    assert out.features is not None and out.features.shape == (2, 192)  # the pre-logits, not an MLP's 768


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
    # an all-zero feature (a blank image behind dead ReLUs) lies at distance 1 from every unit-norm bank entry
    # (normalize leaves it at zero; the unit-norm formula said sqrt(2))
    zero = S.KNNScorer(k=10).fit(torch.from_numpy(bank).float()).score(torch.zeros(2, 8))
    assert torch.equal(zero, torch.full((2,), -1.0))


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


def test_review_of_the_scores_against_their_references() -> None:
    """ODIN moves a pixel whose gradient is exactly 0 by -epsilon, as the original code's ``(grad >= 0) * 2 - 1``
    (``sign`` left it); Mahalanobis refuses fractional labels (a cast truncated -0.5 to class 0) and a covariance
    of zeros (one sample per class: every input scored a perfect 0)."""
    from aprkit.eval.metrics.ood_scores import MahalanobisScorer, msp, odin

    class Dead(torch.nn.Module):  # relu(-x) of the second channel: inactive at x > 0, its gradient exactly 0
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = x[:, 0].sum((1, 2)) + 50 * torch.relu(-x[:, 1]).sum((1, 2))
            return torch.stack([s, -s], 1)

    x = torch.rand(3, 2, 4, 4)
    x[:, 1] = 0.005  # below epsilon: a step of -epsilon turns the relu on
    eps = 0.01
    got = odin(Dead(), x, temperature=2.0, epsilon=eps)
    x_in = x.clone().requires_grad_(True)
    logits = Dead()(x_in)
    torch.nn.functional.cross_entropy(logits / 2.0, logits.argmax(1), reduction="sum").backward()
    want = msp(Dead()(x - eps * ((x_in.grad >= 0).float() * 2 - 1)), 2.0)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, msp(Dead()(x - eps * x_in.grad.sign()), 2.0))  # the step that left them
    with pytest.raises(TypeError, match="integer class indices"):
        MahalanobisScorer().fit(torch.randn(3, 4), torch.tensor([0.9, 1.7, -0.5]))
    with pytest.raises(ValueError, match="do not vary around their class means"):
        MahalanobisScorer().fit(torch.randn(3, 4), torch.tensor([0, 1, 2]))


def test_mahalanobis_keeps_its_ranking_on_features_with_a_large_offset() -> None:
    """The expanded distance f'Pf - 2f'Pm + m'Pm cancelled digits on features far from the origin (metrics reviewer:
    at an offset 1e6 times the spread the ranking changed); the fitted features' mean is taken off first now."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(400, 8, generator=g, dtype=torch.float64)
    y = torch.arange(400) % 4
    test = torch.randn(50, 8, generator=g, dtype=torch.float64) * 2
    ref = S.MahalanobisScorer().fit(f, y).score(test)
    far = S.MahalanobisScorer().fit(f + 1e6, y).score(test + 1e6)
    torch.testing.assert_close(far, ref, rtol=1e-5, atol=1e-5)
    state = S.MahalanobisScorer().fit(f + 1e6, y).state_dict()
    torch.testing.assert_close(S.MahalanobisScorer().load_state_dict(state).score(test + 1e6), ref, rtol=1e-5,
                               atol=1e-5)


def test_scorer_sizes_take_numpy_ints_and_refuse_zero() -> None:
    assert S.KNNScorer(k=np.int64(5)).k == 5
    for make in (lambda: S.KNNScorer(chunk_size=0), lambda: S.MahalanobisScorer(chunk_size=0)):
        with pytest.raises(ValueError, match="chunk_size must be a positive int"):
            make()
