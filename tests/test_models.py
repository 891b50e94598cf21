"""aprkit.models: registry, every architecture (build, forward/backward, checkpoint round-trip)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from aprkit.models import create_model, list_models, load_model, register_model, save_checkpoint

EXPECTED = {
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "wrn40_2", "resnet18", "allconv",
    "densenet_bc_100", "densenet40_12", "resnext29", "gfnet_cifar", "gfnet_ti", "gfnet_xs", "phase_collapse_cifar",
    "phase_collapse_imagenet",
}
#: models whose CPU forward/backward at native resolution takes seconds: checked in the slow suite
#: (their code paths run in the fast suite through smaller registered siblings)
HEAVY = {"gfnet_s", "gfnet_b", "wrn28_10", "resnet34", "phase_collapse_imagenet"}
NAMES = [
    pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
    for n in sorted(set(list_models()) | EXPECTED) if not n.startswith("_")
]


def test_registry_lists_every_architecture():
    assert EXPECTED | HEAVY <= set(list_models())
    assert list_models("resnet2*") == ["resnet20"]
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", sorted(HEAVY))
def test_heavy_models_build(name):
    model = create_model(name, num_classes=7)
    assert model.num_classes == 7 and model.forward_head(torch.zeros(1, model.num_features)).shape == (1, 7)


@pytest.mark.parametrize("name", NAMES)
def test_build_forward_backward_roundtrip(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    assert model.num_classes == 7 and len(model.input_size) == 3
    batch = 1 if model.input_size[-1] > 64 else 2
    x = torch.rand(batch, *model.input_size)
    model.train()
    out = model(x)
    assert out.shape == (batch, 7) and out.dtype == torch.float32
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "missing or non-finite gradient"

    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        ref = model(x)
    assert feats.shape == (batch, model.num_features)
    torch.testing.assert_close(model.forward_head(feats), ref)

    path = save_checkpoint(tmp_path / "m.pt", model)
    assert not list(tmp_path.glob("*.tmp"))
    loaded = load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref)


def test_checkpoint_contents_and_kwargs(tmp_path):
    model = create_model("wrn40_2", num_classes=3, drop_rate=0.3, mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 2.0))
    path = save_checkpoint(tmp_path / "sub" / "w.pt", model, extra={"epoch": 5})
    ck = torch.load(path, weights_only=True)
    assert ck["arch"] == "wrn40_2" and ck["num_classes"] == 3 and ck["extra"] == {"epoch": 5}
    assert ck["kwargs"]["drop_rate"] == 0.3 and "aprkit_version" in ck
    loaded = load_model(str(path))
    assert loaded.block1.layer[0].drop_rate == 0.3
    torch.testing.assert_close(loaded.std.flatten(), torch.tensor([1.0, 1.0, 2.0]))
    # an explicit, different num_classes re-initialises the head only when asked (drop_head=True)
    with pytest.raises(ValueError, match="has 3 classes but the model was built with 10.*drop_head=True"):
        load_model(path, num_classes=10)
    ten = load_model(path, num_classes=10, drop_head=True)
    assert ten.fc.out_features == 10
    torch.testing.assert_close(ten.conv1.weight, model.conv1.weight)


def test_arch_name_plus_checkpoint_and_bare_state_dict(tmp_path):
    model = create_model("resnet20", num_classes=100).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "x.pt")
    loaded = load_model("resnet20", checkpoint=tmp_path / "x.pt")
    assert loaded.num_classes == 100
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(ValueError, match="pass the architecture"):
        torch.save(model.state_dict(), tmp_path / "weights.pt")
        load_model(tmp_path / "weights.pt")  # no arch in the file nor in its name
    with pytest.raises(ValueError, match="does not match"):
        load_model("resnet32", checkpoint=tmp_path / "x.pt")


def test_the_default_head_is_the_architectures_own(tmp_path):
    """ImageNet architectures get 1000 classes, CIFAR ones 10, unless num_classes says otherwise; a state_dict of
    another head size still loads by its own size."""
    assert create_model("gfnet_ti").num_classes == 1000 and create_model("phase_collapse_imagenet").num_classes == 1000
    assert create_model("resnet20").num_classes == 10 and create_model("gfnet_ti", num_classes=7).num_classes == 7
    assert create_model("gfnet_cifar").num_classes == 10 and create_model("phase_collapse_cifar").num_classes == 10
    for name in list_models():  # the rest: a name built for 32 px images has CIFAR's 10 classes (tests' own: "_x")
        if not name.startswith("_") and name not in ("gfnet_b", "gfnet_s", "gfnet_xs", "gfnet_ti",
                                                     "phase_collapse_imagenet", "wrn28_10"):
            assert create_model(name).num_classes == 10, name
    assert load_model("gfnet_ti", random_init=True).num_classes == 1000
    torch.save(create_model("resnet20", num_classes=100).state_dict(), tmp_path / "r100.pt")
    loaded = load_model("resnet20", checkpoint=tmp_path / "r100.pt")
    assert getattr(loaded, "model", loaded).num_classes == 100


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match=r"did you mean .*'resnet20'.*valid names: .*wrn40_2"):
        create_model("resnet21")
    with pytest.raises(ValueError, match="valid names"):
        create_model("no_such_net")
    with pytest.raises(ValueError, match="unknown model spec"):
        load_model("no_such_net")
    with pytest.raises(FileNotFoundError, match="model checkpoint '/nowhere/net.th' does not exist"):
        load_model("/nowhere/net.th")  # a path, not a misspelt name
    with pytest.raises(FileNotFoundError, match="NET.PT' does not exist"):
        load_model("NET.PT")
    with pytest.raises(ValueError, match="unknown timm model"):
        load_model("timm:resnet_does_not_exist")
    with pytest.raises(ValueError, match="unknown torchvision model"):
        load_model("torchvision:resnet_does_not_exist")
    with pytest.raises(ValueError, match="unknown model library"):
        load_model("keras:resnet50")
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet20", num_classes=0)
    with pytest.raises(TypeError, match="spec must be"):
        load_model(3)


def test_bad_inputs_raise():
    model = create_model("resnet20").eval()
    with pytest.raises(TypeError, match=r"float images in \[0, 1\]"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="input channels"):
        model(torch.rand(1, 1, 32, 32))
    x = torch.rand(2, 3, 32, 32)
    for bad, said in ((x * 255, "0..255 floats"), ((x - 0.5) / 0.2, "normalised with a mean and std already")):
        with pytest.warns(RuntimeWarning, match=said):  # wrong predictions without an error, before the warning
            model(bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        over = x.clone()
        over[:, :, :2] = torch.linspace(-1.05, 2.1, 64).reshape(1, 1, 2, 32)  # APR-P's overshoot (a tester saw the
        model(over)  # first rule, outside [-1, 2], warn in the demo's APR-SP training on CIFAR-10): quiet
    for other in (torch.float64, torch.float16):  # another float dtype: named (it failed in the first convolution)
        with pytest.raises(TypeError, match=r"ResNet is float32 and got float\d+ images \(dtype mismatch\)"):
            model(x.to(other))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: as before
        assert model(x).shape == (2, 10)
    with pytest.raises(ValueError, match="6n\\+2"):
        create_model("resnet20").__class__(depth=21)
    with pytest.raises(ValueError, match="mean and std"):
        create_model("resnet20", mean=(0.5, 0.5), std=(0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="strictly positive"):
        create_model("resnet20", std=(0.2, 0.0, 0.2))


def test_missing_checkpoint_and_bad_arch_for_save(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model("resnet20", checkpoint=tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="registered"):
        save_checkpoint(tmp_path / "m.pt", nn.Linear(2, 2))


def test_user_registered_model_roundtrip(tmp_path):
    @register_model("_test_models_tiny")
    def _tiny(num_classes: int = 10, width: int = 4) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    model = create_model("_test_models_tiny", num_classes=5, width=6).eval()
    path = save_checkpoint(tmp_path / "t.pt", model, num_classes=5)
    loaded = load_model(path)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))
    with pytest.raises(ValueError, match="already registered"):
        register_model("_test_models_tiny")(lambda num_classes=10: nn.Identity())


def test_cifar_resnet_option_a_shortcut():
    model = create_model("resnet20")
    block = model.layer2[0]
    x = torch.randn(2, 16, 8, 8)
    sc = block.shortcut(x)
    assert sc.shape == (2, 32, 4, 4)
    torch.testing.assert_close(sc[:, 8:24], x[:, :, ::2, ::2])
    assert sc[:, :8].abs().sum() == 0 and sc[:, 24:].abs().sum() == 0
    assert not [n for n, _ in block.named_parameters() if "shortcut" in n]
    # parameter counts of He et al. (2016), Table 6: 0.27M / 0.46M / 0.66M / 0.85M / 1.7M
    counts = {d: sum(p.numel() for p in create_model(f"resnet{d}").parameters()) / 1e6 for d in (20, 32, 44, 56, 110)}
    assert [round(counts[d], 2) for d in (20, 32, 44, 56)] == [0.27, 0.46, 0.66, 0.85] and round(counts[110], 1) == 1.7


def test_published_parameter_counts():
    m = lambda name, **kw: sum(p.numel() for p in create_model(name, **kw).parameters()) / 1e6  # noqa: E731
    assert round(m("wrn40_2"), 1) == 2.2  # AugMix table: WRN-40-2, 2.2M
    assert round(m("densenet_bc_100"), 1) == 0.8  # Huang et al.: DenseNet-BC (L=100, k=12), 0.8M
    assert round(m("densenet40_12"), 3) == 1.059  # the APR code's DenseNet-40-12: 1,059,298 parameters
    assert round(m("allconv"), 1) == 1.4  # AugMix: AllConvNet, 1.4M
    assert round(m("resnext29_4x32d"), 1) == 6.8  # AugMix: ResNeXt-29, 6.8M
    assert round(m("resnet18"), 1) == 11.2


def test_normalisation_stats_of_the_wrong_channel_count_are_refused_at_build_time() -> None:
    """The RGB models took a 2-value mean and failed at every forward blaming the input; one value is every
    channel's, as for the models with an input-channel setting."""
    with pytest.raises(ValueError, match="mean/std have 2 channels but the model takes 3 input channels"):
        create_model("wrn40_2", mean=(0.5, 0.5), std=(0.5, 0.5))
    model = create_model("resnet20", mean=(0.5,), std=(0.5,))
    assert model.mean.flatten().tolist() == [0.5] * 3 and model(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    assert create_model("gfnet_cifar", in_chans=1).mean.numel() == 1


def test_gfnet_s_and_b_have_the_official_stochastic_depth():
    assert [create_model(n).blocks[-1].drop_path_rate for n in ("gfnet_ti", "gfnet_s")] == [0.0, pytest.approx(0.15)]


def test_replace_head_resets_every_timm_head_and_keeps_the_dtype() -> None:
    """replace_head replaced only the last Linear: a distilled DeiT kept its 1,000-way distillation head (its
    forward then added 1,000 logits to 10 and crashed), and a float64 model got a float32 head (hidden reviewer)."""
    import timm
    import torchvision

    from aprkit.models.normalize import replace_head

    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, depth=1)
    replace_head(deit, 10)
    assert deit.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    from aprkit.models import Normalize  # inside a Normalize too; and a timm head that is a convolution (DLA)

    wrapped = Normalize(timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, depth=1))
    replace_head(wrapped, 7)
    assert wrapped.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    dla = timm.create_model("dla34", pretrained=False)
    replace_head(dla, 7)
    assert dla.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 7)

    class Own(torch.nn.Module):  # a timm backbone without a head under the user's own one: that head is replaced
        def __init__(self) -> None:
            super().__init__()
            self.model, self.fc = timm.create_model("resnet18", num_classes=0), torch.nn.Linear(512, 10)

        def forward(self, x):
            return self.fc(self.model(x))

    own = Own()
    replace_head(own, 7)
    assert own.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 7)
    # robustbench's normalize_model: Sequential(normalize=..., model=net), no Linear of its own: the net's heads
    rb = torch.nn.Sequential()
    rb.add_module("normalize", torch.nn.Identity())
    rb.add_module("model", timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, depth=1))
    replace_head(rb, 7)
    assert rb.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    net = torchvision.models.resnet18().double().eval()
    replace_head(net, 5)
    assert net.fc.weight.dtype == torch.float64
    assert net(torch.rand(1, 3, 32, 32, dtype=torch.float64)).shape == (1, 5)
