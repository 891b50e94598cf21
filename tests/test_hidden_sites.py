"""Transplant sites of the hidden-layer helpers: ReLU6 op sites, op sites a module never calls, the sign code at maps
below 2x2 and at vectors, and shapes in errors found on the one-image check (aprkit.hidden, the transplant test)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import natural_images
from torch import nn

from aprkit.eval.analyses.transplant import layer_sweep, transplant_test
from aprkit.hidden import Site, tap, to_grid
from aprkit.hidden import sites as S
from aprkit.hidden.capture import capture, count_calls
from aprkit.hidden.layout import from_grid


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion, depthwise 3x3 (each with an in-place ``nn.ReLU6``), linear 1x1
    projection, plus the input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.ReLU6(inplace=True),
                                  nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c), nn.ReLU6(inplace=True),
                                  nn.Conv2d(2 * c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class PooledNet(nn.Module):
    """Two inverted residuals, a stage pooled to 1x1 (``blocks.2``), then ``fc`` on the flattened (B, 8) vector."""

    def __init__(self, c: int = 8, classes: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(InvertedResidual(c), InvertedResidual(c),
                                    nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1)))
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).flatten(1))


@pytest.fixture(scope="module")
def pooled() -> tuple[PooledNet, torch.Tensor]:
    torch.manual_seed(0)
    x = natural_images(32, size=12, seed=5).float() / 255
    model = PooledNet().eval()
    with torch.no_grad():  # centre and spread the head's logits: the random net predicts several classes
        feats = model.blocks(model.stem(x)).flatten(1)
        model.fc.weight.copy_(torch.randn(model.fc.weight.shape, generator=torch.Generator().manual_seed(0))
                              / feats.std(0).clamp_min(1e-6))
        model.fc.bias.copy_(-(feats @ model.fc.weight.T).mean(0))
        assert model(x).argmax(1).unique().numel() >= 3
    return model, x


def test_relu6_op_site_fires_on_nn_relu6_through_hardtanh(pooled) -> None:
    """``nn.ReLU6`` calls ``F.hardtanh(x, 0, 6)``: ``"<block>:relu6"`` counts those calls (found no call before) and
    reads and replaces the same activation as the module site; a hardtanh to other bounds is no ReLU6."""
    model, x = pooled
    site = Site("blocks.0:relu6", "input", -1)
    assert count_calls(model, site, x[:1]) == 2
    cpu = torch.device("cpu")
    by_op, idx = capture(model, x, site, 8, cpu)
    by_module, _ = capture(model, x, Site("blocks.0.conv.3", "input"), 8, cpu)
    assert idx == 1 and torch.equal(by_op, by_module)
    repl = -by_module.flip(0)  # the in-place ReLU6 must see the replacement
    outs = []
    for s, call in ((site, 1), (Site("blocks.0.conv.3", "input"), 0)):
        with torch.no_grad(), tap(model, s, lambda a, i, call=call: repl.clone() if i == call else None):
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], model(x))

    class Clamps(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            t = F.hardtanh(t, 0.0, 6.0) + F.hardtanh(t, min_val=0, max_val=6) + F.relu6(t)
            return t + nn.Hardtanh()(t) + F.hardtanh(t, -6.0, 6.0) + F.hardtanh(t, 0.0)  # not ReLU6s

    assert count_calls(nn.Sequential(Clamps()), Site("0:relu6"), torch.randn(2, 3)) == 3
    assert S._clamps_to_relu6((torch.zeros(1), 0, 6), {}) and S._clamps_to_relu6((torch.zeros(1),), {
        "min_val": 0.0, "max_val": 6.0})
    assert not S._clamps_to_relu6((torch.zeros(1),), {}) and not S._clamps_to_relu6((torch.zeros(1), 0), {})
    assert S._in_place(F.hardtanh, (torch.zeros(1), 0.0, 6.0, True), {})
    assert not S._in_place(F.hardtanh, (torch.zeros(1), 0.0, 6.0), {})


def test_relu6_op_site_on_torchvision_mobilenet_v2() -> None:
    """The probe's case: torchvision's MobileNetV2 block ``features.3`` holds two ReLU6s; its op site found none."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    assert count_calls(model, Site("features.3:relu6", "input"), x[:1]) == 2
    cpu = torch.device("cpu")
    torch.testing.assert_close(capture(model, x, Site("features.3:relu6", "input", -1), 2, cpu)[0],
                               capture(model, x, Site("features.3.conv.1.2", "input"), 2, cpu)[0], rtol=0, atol=0)


def test_an_op_site_whose_module_runs_without_the_op_says_so(pooled) -> None:
    """The module ran: the error says the op was never called in it and names its activation modules and the
    functional activations it calls (it said the layer was never called in a forward pass)."""
    model, x = pooled
    with pytest.raises(ValueError, match=r"module 'blocks\.1' ran, but the functional gelu was never called") as err:
        transplant_test(model, x, ["blocks.1:gelu"], site="input", n_pairs=4, n_control=4)
    assert "blocks.1.conv.1, blocks.1.conv.3" in str(err.value) and "'blocks.1:relu6'" in str(err.value)
    with pytest.raises(ValueError, match=r"module 'blocks\.2' ran, .*it holds no activation module"):
        capture(model, x, Site("blocks.2:relu"), 8, torch.device("cpu"))
    model.extra = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())  # never runs: the message stays
    try:
        with pytest.raises(ValueError, match=r"layer 'extra:relu' was never called in a forward pass"):
            capture(model, x, Site("extra:relu"), 8, torch.device("cpu"))
    finally:
        del model.extra


def _sign_reference(model: PooledNet, x: torch.Tensor, res: dict) -> list[int]:
    """Predictions with ``sign(A) * |B|`` put in by hand at the pooled stage's output (the head's input)."""
    with torch.no_grad():
        pooled = model.blocks(model.stem(x)).flatten(1)
        a, b = pooled[res["pairs_a"]], pooled[res["pairs_b"]]
        return model.fc(torch.where(a >= 0, 1.0, -1.0) * b.abs()).argmax(1).tolist()


def test_the_sign_code_takes_1x1_maps_and_vectors_and_the_phase_code_says_it_needs_the_grid(pooled) -> None:
    """A (B, C, 1, 1) stage output and the head's (B, D) input: the sign code alone runs there (both were refused as
    below 2x2 / no feature map), matching a hand-made transplant; the phase code is refused, naming itself and the
    shape without the one-image check's batch of 1."""
    model, x = pooled
    for layer, site, kind in (("blocks.2", "output", "map"), ("fc", "input", "vector")):
        res = transplant_test(model, x, [layer], code="sign", site=site, n_pairs=12, n_control=8,
                              keep_predictions=True)
        row = res["rows"][0]
        assert row["kind"] == kind and row["shape"] == [8, 1, 1] and row["identity_agreement"] == 1.0
        assert row["dc_only_agreement"] == 1.0  # a 1x1 grid is its own channel mean
        assert row["predictions"] == _sign_reference(model, x, res), layer
        skipped = transplant_test(model, x, [layer], code="sign", site=site, n_pairs=12, n_control=8,
                                  keep_predictions=True, skip_front=True)["rows"][0]
        assert skipped["predictions"] == row["predictions"] and skipped["identity_agreement"] == 1.0
        for code in ("phase", ("phase", "sign")):
            with pytest.raises(ValueError, match="(2x2|grid); only the phase code needs H >= 2") as err:
                transplant_test(model, x, [layer], code=code, site=site, n_pairs=4, n_control=4)
            assert "(N, 8, 1, 1)" in str(err.value) if kind == "map" else "(N, 8)" in str(err.value)
            assert "(1, 8" not in str(err.value)
    swept = layer_sweep(model, x, "all", codes=("sign",), sites=("output",), n_pairs=8, n_control=8)
    assert [r["block"] for r in swept["rows"]] == ["blocks.0", "blocks.1", "blocks.2"] and not swept["skipped"]
    both = layer_sweep(model, x, "all", codes=("phase", "sign"), sites=("output",), n_pairs=8, n_control=8)
    # the 1x1 site loses its phase code only (listed in skipped), not its sign rows: the same rows as a sign sweep
    assert [(k["block"], k["codes"]) for k in both["skipped"]] == [("blocks.2", ["phase"])]
    assert "below 2x2" in both["skipped"][0]["reason"]
    assert [r for r in both["rows"] if r["code"] == "sign"] == swept["rows"]


def test_vector_grids_round_trip_and_grid_errors_write_the_batch_as_n() -> None:
    """``any_size`` reads a vector (B, D) as a (B, D, 1, 1) grid and back; without it the refusals print the batch
    axis as N (they showed the probing batch of 1 as if it were the caller's)."""
    v, m = torch.randn(5, 7), torch.randn(3, 4, 1, 1)
    with pytest.raises(ValueError, match=r"shape \(N, 4, 1, 1\) with a spatial grid below 2x2"):
        to_grid(m[:1])
    with pytest.raises(ValueError, match=r"float32 and shape \(N, 7\); pick a layer inside the feature extractor"):
        to_grid(v[:1])
    with pytest.raises(ValueError, match=r"of shape \(N, 5, 2\), got 9"):
        to_grid(torch.randn(1, 5, 2), num_prefix_tokens=9)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        to_grid(torch.randn(3))
    g, prefix, layout = to_grid(v, any_size=True)
    assert g.shape == (5, 7, 1, 1) and prefix is None and layout.kind == "vector"
    assert torch.equal(from_grid(g, prefix, layout), v)
    assert to_grid(m, any_size=True)[0] is m


def test_only_real_squeeze_excite_gates_are_left_out_of_the_sweep() -> None:
    """The gate rule matched letters inside names: DenseNet's _DenseBlock ('den-seblock') hid every dense layer's
    activation (a torchvision DenseNet-121 sweep measured 4 of its 120 ReLUs, skipped=[]), and the class name
    SqueezeNet made the whole model a gate (model-zoo tester). Whole names and gate classes only now."""
    import torchvision

    dense = torchvision.models.densenet121(num_classes=10)
    assert len(S.list_blocks(dense)) == 120
    squeeze = torchvision.models.squeezenet1_1(num_classes=10)
    assert len(S.list_blocks(squeeze)) == 26 and "features.3.squeeze_activation" in S.list_blocks(squeeze)
    mobile = torchvision.models.mobilenet_v3_small(num_classes=10)  # its SqueezeExcitation gates stay out
    gated = [n for n, m in mobile.named_modules() if S._is_activation(m) and S._in_gate(mobile, n)]
    assert len(gated) == 9 and all(".block.2." in n or ".block.1." in n for n in gated)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.se = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
            self.se_module = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
            self.sequence = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
            self.select = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

    net = Net()
    assert [n for n in ("se.1", "se_module.1", "sequence.1", "select.1") if S._in_gate(net, n)] == ["se.1", "se_module.1"]
    import timm  # whole blocks named SE...: timm's legacy SE-ResNets keep their block ReLUs (reviewer)

    legacy = timm.create_model("legacy_seresnet18", num_classes=10)
    assert S.activation_modules(legacy, "layer1") == ["layer1.0.relu", "layer1.1.relu"]


def test_a_phase_collapse_map_as_wide_as_the_class_count_is_channels_first() -> None:
    """The phase-collapse layers hold no conv, norm or Linear module, so the layout rule looked at the whole net, whose
    classifier Linear gives num_classes outputs: with 16 classes every 16 px wide map was refused as channels-last.
    The classifier takes pooled features and tells nothing of the maps' layout."""
    from aprkit.hidden.layout import check_channels_first
    from aprkit.models import create_model

    net = create_model("phase_collapse_cifar", num_classes=16, widths=(24,) * 8)
    check_channels_first(net, "layers.1", (2, 24, 16, 16), "layer 'layers.1' output")  # no refusal
    mlp = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 16)), nn.Linear(8, 10))
    with pytest.raises(ValueError, match="channels-last"):  # a Linear of the site's own block still tells
        check_channels_first(mlp, "1", (2, 32, 32, 16), "site")
