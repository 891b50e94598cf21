"""aprkit.models loaders: Normalize wrapper, timm/torchvision/robustbench specs, shipped checkpoints."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from aprkit.models import Normalize, load_model, save_checkpoint

PUBLISHED = {20: 91.73, 32: 92.63, 44: 93.10, 56: 93.39}  # pytorch_resnet_cifar10 README, test accuracy %


def cifar10_test(cifar10_dir: Path, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` CIFAR-10 test images in official order: float ``(n, 3, 32, 32)`` in [0, 1], labels."""
    with open(cifar10_dir / "test_order.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    x = np.stack([np.asarray(Image.open(cifar10_dir / r["path"]).convert("RGB")) for r in rows])
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255, torch.tensor([int(r["label"]) for r in rows])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return (pred == y).double().mean().item() * 100


def test_normalize_wrapper_torchvision():
    import torchvision

    inner = torchvision.models.resnet18(num_classes=5).eval()
    model = Normalize(inner, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)).eval()
    assert model.inner is inner and model.num_classes == 5 and model.input_size == (3, 224, 224)
    assert dict(model.named_modules())["model.layer2"] is inner.layer2
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = inner((x - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1))
        torch.testing.assert_close(model(x), ref)
        feats = model.forward_features(x)
        assert feats.shape == (2, 512)
        torch.testing.assert_close(model.forward_head(feats), ref)
    assert not [k for k in model.state_dict() if k in ("mean", "std")]  # buffers are not persistent
    with pytest.raises(TypeError, match="wraps an nn.Module"):
        Normalize("resnet18")
    with pytest.raises(TypeError, match="float images"):
        model(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_timm_spec_wraps_with_pretrained_cfg_and_roundtrips(tmp_path):
    model = load_model("timm:resnet18", num_classes=10, random_init=True)
    assert isinstance(model, Normalize) and model.num_classes == 10
    torch.testing.assert_close(model.mean.flatten(), torch.tensor(model.inner.pretrained_cfg["mean"]).float())
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        ref = model(x)
        feats = model.forward_features(x)
        assert feats.shape == (2, model.inner.num_features)
        torch.testing.assert_close(model.forward_head(feats), ref)
    # aprkit checkpoint of a foreign model, and the raw timm state_dict as a local "pretrained" file
    path = save_checkpoint(tmp_path / "t.pt", model)
    torch.save(model.inner.state_dict(), tmp_path / "raw.pth")
    for loaded in (load_model(path), load_model("timm:resnet18", checkpoint=tmp_path / "raw.pth")):
        assert loaded.num_classes == 10
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), ref)


def test_a_timm_model_built_for_another_size_reports_it():
    """A ViT built with img_size=32 takes 32-px inputs; its published cfg says 224, which input_size reported."""
    vit = load_model("timm:vit_tiny_patch16_224", random_init=True, img_size=32, patch_size=4, num_classes=10,
                     depth=1)
    assert vit.input_size == (3, 32, 32) and load_model("timm:resnet18", random_init=True).input_size == (3, 224, 224)


def test_torchvision_spec_and_checkpoint(tmp_path):
    model = load_model("torchvision:resnet18", num_classes=4, random_init=True)
    assert isinstance(model, Normalize) and model.num_classes == 4
    torch.testing.assert_close(model.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    path = save_checkpoint(tmp_path / "tv.pt", model)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(x), model(x))


def test_robustbench_spec_needs_local_weights_and_clear_import_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "robustbench", None)  # simulate "not installed"
    monkeypatch.setitem(sys.modules, "robustbench.utils", None)
    with pytest.raises(ImportError, match=r"cifar10/corruptions/Hendrycks2020AugMix_WRN\.pt: not there yet.*aprkit\[robustbench\]"):
        load_model("robustbench:cifar10/corruptions/Hendrycks2020AugMix_WRN", model_dir=tmp_path)
    weights = tmp_path / "cifar10" / "Linf" / "Standard.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    with pytest.raises(ImportError, match=r"aprkit\[robustbench\]"):
        load_model("robustbench:Standard", checkpoint=tmp_path)
    import aprkit  # importing aprkit never needs robustbench

    assert aprkit.models.list_models()


def test_legacy_resnet20_checkpoint(models_dir, cifar10_dir):
    path = next(models_dir.glob("resnet20-*.th"))
    model = load_model(path)
    assert model.aprkit_arch == "resnet20" and model.num_classes == 10 and not model.training
    raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    own = model.state_dict()
    assert all(torch.equal(own[k.removeprefix("module.")], v) for k, v in raw.items())
    same = load_model("resnet20", checkpoint=path)
    x, y = cifar10_test(cifar10_dir, 500)
    with torch.no_grad():
        torch.testing.assert_close(same(x[:8]), model(x[:8]))
    assert accuracy(model, x, y) >= 85.0


@pytest.mark.slow
@pytest.mark.parametrize("depth", sorted(PUBLISHED))
def test_cifar_resnets_reproduce_published_accuracy(models_dir, cifar10_dir, depth):
    model = load_model(next(models_dir.glob(f"resnet{depth}-*.th")))
    x, y = cifar10_test(cifar10_dir)
    assert len(y) == 10_000
    assert round(accuracy(model, x, y), 2) == PUBLISHED[depth]


def test_mobilenet_v2_dequantized_loads(models_dir, cue_conflict_dir):
    path = models_dir / "imagenet-mobilenet_v2-qnnpack-dequantized.pth"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    model = load_model("torchvision:mobilenet_v2", checkpoint=path)
    assert isinstance(model, Normalize) and model.num_classes == 1000 and model.input_size == (3, 224, 224)
    img = next(iter(sorted(cue_conflict_dir.glob("*/*.png"))))
    x = torch.from_numpy(np.array(Image.open(img).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    assert logits.softmax(1).max() > 0.01  # not a uniform (unloaded) output


def test_folded_bn_state_dict_without_bn_keys():
    from aprkit.models.foreign import fold_bn_compat

    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU()).eval()
    conv = nn.Conv2d(3, 4, 3)  # a "folded" model: conv with bias, no BN
    sd = fold_bn_compat(net, {"0.weight": conv.weight.detach(), "0.bias": conv.bias.detach()})
    net.load_state_dict(sd)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x), torch.relu(conv(x)))


def test_folded_bn_needs_unambiguous_evidence():
    """BNs are made up only when none has an entry and every conv before one carries the bias the model's lacks."""
    from aprkit.models.foreign import fold_bn_compat

    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, bias=False),
                        nn.BatchNorm2d(4))
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    bn.running_var.fill_(2.0)  # trained statistics, not an identity
    partial = {"0.weight": conv.weight, "0.bias": conv.bias, "2.weight": conv.weight[:, :1].repeat(1, 4, 1, 1)}
    partial |= {f"3.{k}": v for k, v in bn.state_dict().items()}  # BN 3 present, BN 1 absent
    assert fold_bn_compat(net, partial).keys() == partial.keys()
    no_bias = {"0.weight": conv.weight, "2.weight": partial["2.weight"], "2.bias": conv.bias}  # conv 0 without bias
    assert fold_bn_compat(net, no_bias).keys() == no_bias.keys()
    assert net[1].eps == net[3].eps == 1e-5  # no layer was taken for a folded identity


def test_checkpoint_missing_some_bn_entries_names_them(tmp_path):
    """A torchvision checkpoint with layer3's BN entries deleted is not 'folded': it raises naming the missing keys
    (it used to load with identity BNs in their place, the logits off by 20)."""
    import torchvision

    sd = torchvision.models.resnet18(num_classes=10).state_dict()
    path = tmp_path / "r18.pth"
    torch.save({k: v for k, v in sd.items() if not (k.startswith("layer3.") and ".bn" in k)}, path)
    with pytest.raises(ValueError, match=r"checkpoint does not match ResNet: .*missing.*layer3\.0\.bn1\.weight"):
        load_model("torchvision:resnet18", checkpoint=path)


def test_random_weights_are_refused_unless_asked(tmp_path):
    """Issue 12 item 5: a bare aprkit architecture is untrained; never use it silently (timm/torchvision specs
    load their published weights instead: tests/test_pretrained.py)."""
    from aprkit.models import create_model

    with pytest.raises(ValueError, match=r"no trained weights.*checkpoint=.*random_init=True"):
        load_model("resnet20")
    assert load_model("resnet20", random_init=True).num_classes == 10
    with pytest.raises(ValueError, match="unknown timm model"):  # a bad name is reported before missing weights
        load_model("timm:resnet_nope")
    path = save_checkpoint(tmp_path / "r.pt", create_model("resnet20", num_classes=100))
    with pytest.raises(ValueError, match="random_init=True .* checkpoint= was given too"):
        load_model("resnet20", checkpoint=path, random_init=True)


def test_head_of_another_size_is_refused_unless_drop_head(tmp_path):
    """Issue 12 item 5: a 100-class checkpoint with num_classes=10 used to re-initialise the head silently."""
    from aprkit.models import create_model

    model = create_model("resnet20", num_classes=100)
    path = save_checkpoint(tmp_path / "c100.pt", model)
    torch.save(model.state_dict(), tmp_path / "resnet20_bare.pth")
    for spec, ckpt in ((path, None), ("resnet20", path), ("resnet20", tmp_path / "resnet20_bare.pth")):
        with pytest.raises(ValueError, match=r"classifier linear.weight has 100 classes but the model was built with 10.*drop_head"):
            load_model(spec, num_classes=10, checkpoint=ckpt)
        ten = load_model(spec, num_classes=10, checkpoint=ckpt, drop_head=True)
        assert ten.num_classes == 10
        torch.testing.assert_close(ten.conv1.weight, model.conv1.weight)
    assert load_model(path).num_classes == 100  # num_classes unset keeps the trained head
    tv = load_model("torchvision:resnet18", num_classes=100, random_init=True)
    torch.save(tv.inner.state_dict(), tmp_path / "tv.pth")
    with pytest.raises(ValueError, match="100 classes but the model was built with 10"):
        load_model("torchvision:resnet18", num_classes=10, checkpoint=tmp_path / "tv.pth")
    assert load_model("torchvision:resnet18", num_classes=10, checkpoint=tmp_path / "tv.pth", drop_head=True).num_classes == 10


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all\n", bytes(range(256)) * 4, "truncated"])
def test_junk_checkpoints_are_not_valid_checkpoints(tmp_path, content):
    """Issue 12 item 13: junk files say "not a valid checkpoint", never "pass weights_only=False"."""
    from aprkit.models import create_model

    path = tmp_path / "bad.pt"
    if content == "truncated":
        save_checkpoint(path, create_model("resnet20"))
        path.write_bytes(path.read_bytes()[:5000])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad.pt is not a valid checkpoint") as err:
        load_model("resnet20", checkpoint=path)
    assert "weights_only" not in str(err.value)
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled class, not junk: name it, suggest re-saving
    with pytest.raises(ValueError, match=r"pickled Python objects \(torch.nn.modules.linear.Linear\).*state_dict"):
        load_model("resnet20", checkpoint=tmp_path / "module.pt")


def test_explicit_mean_std_override_the_checkpoints(tmp_path):
    """mean=/std= passed to load_model win over the normalisation stored in an aprkit checkpoint (they were
    silently replaced by the stored values)."""
    model = load_model("resnet20", num_classes=10, random_init=True)
    path = save_checkpoint(tmp_path / "r.pt", model)
    stored = load_model(path)
    torch.testing.assert_close(stored.mean.flatten(), model.mean.flatten())
    mine = load_model(path, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert mine.mean.flatten().tolist() == [0.5] * 3 and mine.std.flatten().tolist() == [0.25] * 3



def test_a_legacy_resnet_file_is_read_by_its_blocks_not_only_its_name(models_dir, tmp_path):
    """The depth came from the file name alone: a resnet56 file named resnet20-... failed with "unexpected (180)" keys.
    The blocks per stage name the depth (a wrong name warns); a file without such a name still needs the architecture
    (its normalisation is the legacy files' only by their name)."""
    import shutil

    src56 = next(models_dir.glob("resnet56-*.th"))
    shutil.copy(src56, tmp_path / "resnet20-mislabeled.th")
    with pytest.warns(UserWarning, match="named resnet20 but holds the weights of a resnet56"):
        m = load_model(tmp_path / "resnet20-mislabeled.th")
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in load_model(src56).parameters())
    shutil.copy(next(models_dir.glob("resnet20-*.th")), tmp_path / "resnet56_to_resnet20.th")
    with pytest.warns(UserWarning, match="named resnet56 but holds the weights of a resnet20"):
        assert sum(p.numel() for p in load_model(tmp_path / "resnet56_to_resnet20.th").parameters()) == 269722

def test_a_module_with_checkpoint_gets_its_weights(tmp_path):
    """load_model / evaluate's loader given a module and checkpoint= load the weights into it (they were dropped)."""
    from aprkit.eval.engine.models import load_eval_model
    from aprkit.models import create_model

    trained = create_model("resnet20", num_classes=10)
    path = save_checkpoint(tmp_path / "r20.pt", trained)
    fresh = create_model("resnet20", num_classes=10)
    assert not torch.equal(fresh.conv1.weight, trained.conv1.weight)
    got = load_model(fresh, checkpoint=path)
    assert got is fresh and torch.equal(fresh.conv1.weight, trained.conv1.weight)
    other = create_model("resnet20", num_classes=10)
    net, _ = load_eval_model(other, None, str(path), torch.device("cpu"))
    assert torch.equal(net.conv1.weight, trained.conv1.weight)
    with pytest.raises(ValueError, match="100"):
        load_model(create_model("resnet20", num_classes=10), num_classes=100)
    with pytest.raises(FileNotFoundError):
        load_model(fresh, checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="random_init"):
        load_model(fresh, random_init=True)
    with pytest.raises(ValueError, match="checkpoint file"):
        load_model(str(path), random_init=True)
    with pytest.raises(ValueError, match="100 but the model's classifier has 10"):
        save_checkpoint(tmp_path / "bad.pt", trained, num_classes=100)


def test_a_pretrained_foreign_model_reloads_with_its_preprocessing_and_bn_eps(tmp_path, monkeypatch):
    """save_checkpoint keeps a Preprocess wrapper's resize/crop and batch-norm eps (folded checkpoints set 0):
    the reloaded model gives the same logits."""
    torchvision = pytest.importorskip("torchvision")
    real = torchvision.models.get_model
    monkeypatch.setattr(torchvision.models, "get_model", lambda name, weights=None, **kw: real(name, weights=None, **kw))
    torch.manual_seed(0)
    m = load_model("torchvision:resnet18")  # the pretrained path (download stubbed): resize 256, crop 224
    monkeypatch.setattr(torchvision.models, "get_model", real)
    m.model.bn1.eps = 1e-30  # a folded BN (torch 2.11 refuses 0)
    path = save_checkpoint(tmp_path / "m.pt", m)
    r = load_model(path)
    assert (type(r).__name__, r.resize, r.crop) == ("Preprocess", m.resize, m.crop) and r.model.bn1.eps == 1e-30
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(m(x), r(x))


def test_normalize_refuses_an_aprkit_model_and_wide_inputs_get_statistics():
    from aprkit.models import create_model

    with pytest.raises(TypeError, match="normalises inside"):
        Normalize(create_model("resnet20", num_classes=10))
    for name, kw in (("small_cnn", {"in_channels": 4}), ("phase_collapse_cifar", {"in_chans": 4, "widths": (8, 8)})):
        net = create_model(name, num_classes=10, **kw).eval()
        assert net(torch.rand(2, 4, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="4 input channels"):
        create_model("small_cnn", num_classes=10, in_channels=4, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_one_mean_value_broadcasts_for_models_with_in_channels():
    from aprkit.models import create_model

    for name in ("small_cnn", "phase_collapse_cifar"):
        net = create_model(name, num_classes=10, mean=0.5, std=0.25).eval()
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_save_checkpoint_stores_numpy_settings_as_plain_data_and_refuses_objects(tmp_path) -> None:
    """NumPy values in the create_model kwargs or in extra made files that load_model (weights_only) refused, with
    advice to use save_checkpoint; other objects are refused before writing."""
    from aprkit.models import create_model

    model = create_model("resnet20", mean=np.array([0.5, 0.5, 0.5]), std=[np.float32(0.25)] * 3).eval()
    path = save_checkpoint(tmp_path / "a.pt", model, extra={"acc": np.float64(0.9), "hist": np.arange(3)})
    loaded = load_model(path).eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), model(x)) and torch.allclose(loaded.std.flatten(), torch.full((3,), 0.25))
    assert torch.load(path, weights_only=True)["extra"] == {"acc": 0.9, "hist": [0, 1, 2]}

    class Opaque:
        pass

    with pytest.raises(TypeError, match=r"extra\['log'\]\[0\] is a Opaque, which an aprkit checkpoint cannot hold"):
        save_checkpoint(tmp_path / "b.pt", model, extra={"log": [Opaque()]})
    assert not (tmp_path / "b.pt").exists()


def test_eval_data_root_also_places_the_robustbench_weights(tmp_path, monkeypatch, capsys):
    """--data-root is the data root of the CLI; robustbench weights (documented under it) ignored it."""
    from aprkit.cli import main

    monkeypatch.setitem(sys.modules, "robustbench", None)
    monkeypatch.setitem(sys.modules, "robustbench.utils", None)
    rc = main(["eval", "--model", "robustbench:Standard", "--data", "synthetic:8", "--data-root", str(tmp_path),
               "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and str(tmp_path / "robustbench" / "cifar10" / "Linf" / "Standard.pt") in err, err


def test_save_checkpoint_stores_enum_members_as_their_values():
    import enum

    from aprkit._io import plain_data as _plain

    class Act(str, enum.Enum):
        RELU = "relu"

    class Level(enum.IntEnum):
        HIGH = 3

    assert _plain({"act": Act.RELU, "level": Level.HIGH}, "kwargs") == {"act": "relu", "level": 3}


def test_a_whole_pickled_module_is_used_as_it_is_and_options_are_refused(tmp_path):
    """torch.save(model) files: builder options were ignored silently and a bare foreign module got [0, 1] images
    with no word (tester)."""
    from aprkit.models import create_model, load_model

    path = tmp_path / "whole_resnet20.pt"
    torch.save(create_model("resnet20").eval(), path)
    assert load_model(path, weights_only=False).num_classes == 10
    with pytest.raises(ValueError, match="10 classes, not num_classes=100"):
        load_model(path, num_classes=100, weights_only=False)
    with pytest.raises(ValueError, match="mean cannot rebuild it"):
        load_model(path, weights_only=False, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="drop_head cannot rebuild it"):
        load_model(path, weights_only=False, drop_head=True)
    bare = tmp_path / "bare.pt"
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), bare)
    with pytest.warns(UserWarning, match="without aprkit's normalisation"):
        load_model(bare, weights_only=False)


def test_a_classifier_of_another_input_width_is_a_shape_mismatch_not_a_class_count(tmp_path):
    from aprkit.models import create_model, load_model

    sd = create_model("resnet20").state_dict()
    key = next(k for k in sd if k.endswith("linear.weight"))
    sd[key] = torch.zeros(10, 32)
    torch.save(sd, tmp_path / "resnet20_narrow.pth")
    for drop in (False, True):  # --drop-head replaces a head of another class count only
        with pytest.raises(ValueError, match=r"shape mismatch \(1\): .*linear.weight: checkpoint \(10, 32\)"):
            load_model("resnet20", checkpoint=tmp_path / "resnet20_narrow.pth", drop_head=drop)
    # every mismatch names the file and the architecture it was loaded into (a config of several models)
    with pytest.raises(ValueError, match=r"^'resnet20' from '.*resnet20_narrow\.pth': checkpoint does not match"):
        load_model("resnet20", checkpoint=tmp_path / "resnet20_narrow.pth")
    with pytest.raises(ValueError, match=r"^'.*resnet20_narrow\.pth': the architecture resnet20 \(a CIFAR ResNet\) "
                                         r"was taken from the file name .*\(checkpoint does not match"):
        load_model(tmp_path / "resnet20_narrow.pth")


def test_a_pickle_that_runs_code_is_named_as_such(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pt")
    from aprkit.models import load_model

    with pytest.raises(ValueError, match=r"holds pickled Python objects \((posix|nt)\.system\)"):
        load_model("resnet20", checkpoint=tmp_path / "evil.pt")


def test_a_checkpoint_without_weights_is_named_in_the_error(tmp_path):
    path = tmp_path / "junk.pt"
    torch.save({"a": 1}, path)
    with pytest.raises(ValueError, match=r"'resnet20' from '.*junk\.pt': checkpoint holds no state_dict"):
        load_model("resnet20", checkpoint=path)


@pytest.mark.parametrize("content", [b"garbage" * 10, "truncated zip"])
def test_a_damaged_file_in_the_torch_hub_cache_is_named_with_the_fix(tmp_path, monkeypatch, content):
    """A cut-short or damaged weights file in the cache was reported as an offline problem ("fill that cache")."""
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.MobileNet_V2_Weights.DEFAULT.url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    if content == "truncated zip":
        buf = tmp_path / "whole.pt"
        torch.save({"w": torch.zeros(1000)}, buf)
        content = buf.read_bytes()[:2000]
    cached.write_bytes(content)
    with pytest.raises(OSError, match=r"the cached file .*mobilenet_v2-.*\.pth cannot be read.*Delete it and run again"):
        load_model("torchvision:mobilenet_v2")


def test_a_checkpoint_with_a_changed_byte_is_refused_not_loaded_as_other_weights(tmp_path):
    """torch.load does not check the zip's CRCs: one flipped bit in the tensor data loaded silently as other weights."""
    model = load_model("resnet20", random_init=True)
    path = save_checkpoint(tmp_path / "m.pt", model)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad\.pt is damaged: its record .* fails its CRC-32 check"):
        load_model(bad)
    load_model(path)  # the intact file loads


def test_a_checkpoint_saved_without_crcs_loads(tmp_path):
    """torch.serialization.set_crc32_options(False) writes 0 for every record's CRC: such files are not damaged."""
    from torch.serialization import get_crc32_options, set_crc32_options

    before = get_crc32_options()
    set_crc32_options(False)
    try:
        path = save_checkpoint(tmp_path / "m.pt", load_model("resnet20", random_init=True))
    finally:
        set_crc32_options(before)
    load_model(path)


def test_options_that_do_not_fit_the_pretrained_weights_are_not_called_a_damaged_file(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.MobileNet_V2_Weights.DEFAULT.url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), cached)  # a good file, of the default architecture
    with pytest.raises(ValueError, match=r"built with \{'width_mult': 0.5\} does not fit its pretrained weights"):
        load_model("torchvision:mobilenet_v2", width_mult=0.5)
    assert cached.is_file()


def test_a_cached_file_of_another_model_and_a_damaged_hub_file_are_named(tmp_path, monkeypatch):
    """Weights already in a cache that do not load: a torchvision file of another architecture under the published
    name said "built with {} does not fit" (no options were given); a damaged timm file in the Hugging Face cache was
    reported as missing ("fill that cache"); an unknown timm tag was an unexpected RuntimeError; a SqueezeNet checkpoint
    of 10 classes gave no hint of num_classes (models tester)."""
    torchvision = pytest.importorskip("torchvision")
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.MobileNet_V2_Weights.DEFAULT.url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cached)
    with pytest.raises(ValueError, match=r"the cached file .* does not hold the weights of .*Delete it"):
        load_model("torchvision:mobilenet_v2")
    from huggingface_hub import constants

    snap = tmp_path / "models--timm--resnet18.a1_in1k"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc")
    (snap / "snapshots" / "abc").mkdir(parents=True)
    (snap / "snapshots" / "abc" / "model.safetensors").write_bytes(b"\x10" + bytes(7) + b'{"a":')
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match=r"the cached file .*model.safetensors cannot be read \(damaged"):
        load_model("timm:resnet18.a1_in1k")
    with pytest.raises(ValueError, match=r"no tag 'a1_in1kk'.*did you mean 'a1_in1k'"):
        load_model("timm:resnet18.a1_in1kk")
    # a tag timm builds without weights is no unknown one (diff reviewer: .untrained was refused)
    assert load_model("timm:convnext_atto_rms.untrained", num_classes=3, random_init=True)(
        torch.rand(1, 3, 32, 32)).shape == (1, 3)
    # an intact cached file that the given options do not fit is no damaged one (its advice deleted a good file)
    import timm
    from safetensors.torch import save_file

    good = tmp_path / "models--timm--resnet10t.c3_in1k" / "snapshots" / "abc"
    good.mkdir(parents=True)
    (good.parent.parent / "refs").mkdir()
    (good.parent.parent / "refs" / "main").write_text("abc")
    save_file(timm.create_model("resnet10t").state_dict(), str(good / "model.safetensors"))
    with pytest.raises(ValueError, match=r"built with \{'stem_width': 16\} does not fit its pretrained weights"):
        load_model("timm:resnet10t.c3_in1k", stem_width=16)
    assert (good / "model.safetensors").is_file()
    # a classifier that is a convolution: its class count cannot be read, the message names it
    torch.save(torchvision.models.squeezenet1_0(num_classes=10).state_dict(), tmp_path / "sq.pth")
    with pytest.raises(ValueError, match=r"last layer classifier.1 has 10 outputs .*num_classes=10"):
        load_model("torchvision:squeezenet1_0", checkpoint=tmp_path / "sq.pth")
    assert load_model("torchvision:squeezenet1_0", checkpoint=tmp_path / "sq.pth", num_classes=10)(
        torch.rand(1, 3, 64, 64)).shape == (1, 10)


def test_an_untrained_torchvision_state_dict_keeps_its_batch_norm_eps(tmp_path) -> None:
    """A freshly built BN (weight 1, bias 0, mean 0, var 1) is no folded one: its eps stays 1e-5 (it became 1e-38,
    which moved eval logits by 1e-4 and divided a constant training batch by ~0)."""
    import torchvision

    net = torchvision.models.resnet18(num_classes=10)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    model = load_model("torchvision:resnet18", checkpoint=tmp_path / "r18.pth")
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-5}
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    assert torch.equal(model(x), net.eval()((x - mean) / std))


def test_an_apr_code_wrn_checkpoint_loads_and_its_normalisation_is_asked_for(tmp_path) -> None:
    """The APR code (and later AugMix code) names the WRN shortcut ``conv_shortcut``; a plain state dict records no
    normalisation, and the APR code's differs from the architecture's AugMix default: a warning says so."""
    from aprkit.models import APR_CIFAR_STD, CIFAR10_MEAN, create_model

    ref = create_model("wrn40_2").eval()
    torch.save({k.replace("convShortcut", "conv_shortcut"): v for k, v in ref.state_dict().items()}, tmp_path / "w.pt")
    with pytest.warns(UserWarning, match="APR_CIFAR_STD"):
        model = load_model("wrn40_2", checkpoint=tmp_path / "w.pt")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), ref(x))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apr = load_model("wrn40_2", checkpoint=tmp_path / "w.pt", mean=CIFAR10_MEAN, std=APR_CIFAR_STD)
        save_checkpoint(tmp_path / "apr.pt", apr)
        assert torch.equal(load_model(tmp_path / "apr.pt").std.flatten(), torch.tensor(APR_CIFAR_STD))


def test_train_state_into_a_built_module_keeps_its_normalisation(tmp_path: Path) -> None:
    """Tester: ``load_model(create_model("resnet20"), checkpoint="last.pt")`` of a run trained with its own mean/std
    kept ImageNet's (logits off by thousands); every other route to the same weights applied the run's."""
    from aprkit.models import create_model
    from aprkit.models.checkpoint import TRAIN_STATE_FORMAT

    kw = {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}
    trained = create_model("resnet20", **kw).eval()
    path = tmp_path / "last.pt"
    torch.save({"format": TRAIN_STATE_FORMAT, "config": {"model": {"name": "resnet20", "kwargs": kw}},
                "model": trained.state_dict()}, path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    want = trained(x)
    for got in (load_model(path), load_model(create_model("resnet20"), checkpoint=path)):
        torch.testing.assert_close(got(x), want)
    own = load_model(create_model("resnet20", mean=[0.4] * 3), checkpoint=path)  # mean= given at build: kept
    assert torch.allclose(own.mean.flatten(), torch.tensor([0.4] * 3))


def test_a_checkpoint_of_another_image_size_says_how_to_build_the_model(tmp_path) -> None:
    """A plain state_dict of a timm ViT built for 32 px (patch 4) loaded into the default 224-px model listed shape
    mismatches only (model-zoo tester); the error now says to build the model at that size or save it with
    save_checkpoint, which records the builder's arguments."""
    import timm

    from aprkit.models import load_model
    from aprkit.models.state_dict import CheckpointMismatch

    torch.save(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10).state_dict(),
               tmp_path / "vit32.pth")
    with pytest.raises(CheckpointMismatch, match=r"pos_embed: checkpoint \(1, 65, 192\).*another image or patch size"
                                                 r".*img_size=\.\.\., patch_size=\.\.\..*save_checkpoint"):
        load_model("timm:vit_tiny_patch16_224", checkpoint=tmp_path / "vit32.pth")
    assert load_model("timm:vit_tiny_patch16_224", checkpoint=tmp_path / "vit32.pth", img_size=32, patch_size=4)


def test_a_guessed_input_size_is_no_reason_to_warn_of_the_datas_size():
    """Normalize(a CIFAR net) assumed 224 px and evaluation warned that the model was made for 224x224 inputs,
    advising a resize to 224 (models tester); a size the model states still warns."""
    import warnings

    import torch
    from torch import nn

    from aprkit.eval.engine.data_checks import warn_other_size
    from aprkit.models import Normalize

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    wrapped = Normalize(net)
    assert wrapped.input_size == (3, 224, 224) and wrapped.input_size_assumed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_other_size(wrapped, torch.Size([32, 32]))
    stated = Normalize(net, input_size=(3, 64, 64))
    assert not getattr(stated, "input_size_assumed", False)
    with pytest.warns(RuntimeWarning, match="made for 64x64 inputs"):
        warn_other_size(stated, torch.Size([32, 32]))


def test_builder_arguments_that_choose_weights_are_refused():
    """random_init=True with pretrained=True loaded the published weights, recorded as random weights; pretrained=True
    alone or weights= with a checkpoint failed with 'multiple values for keyword argument' (models tester)."""
    from aprkit.models import load_model

    for spec, kw in (("timm:resnet18", {"random_init": True, "pretrained": True}),
                     ("timm:resnet18", {"pretrained": True}),
                     ("torchvision:resnet18", {"random_init": True, "weights": "DEFAULT"})):
        with pytest.raises(ValueError, match="which weights load is load_model's choice"):
            load_model(spec, **kw)


def test_a_model_with_a_submodule_named_module_loads_its_own_weights(tmp_path):
    """The module./_orig_mod. prefixes of DataParallel and torch.compile were stripped before the model was known: a
    model whose submodule is called module could not load its own state_dict (models tester)."""
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.module(x)

    torch.manual_seed(0)
    src = Wrapper()
    torch.save(src.state_dict(), tmp_path / "w.pt")
    got = load_model(Wrapper(), checkpoint=tmp_path / "w.pt")
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(got(x), src.eval()(x))
    torch.save(nn.DataParallel(src).state_dict(), tmp_path / "dp.pt")  # module.module.*: one prefix is DataParallel's
    assert torch.equal(load_model(Wrapper(), checkpoint=tmp_path / "dp.pt")(x), src(x))


def test_an_architecture_taken_from_a_file_name_is_said_to_be_a_guess(tmp_path):
    """A torchvision ResNet's weights in a file named *resnet56* read 'checkpoint does not match CifarResNet' without
    saying resnet56 came from the name (models tester)."""
    import torchvision

    path = tmp_path / "imagenet_resnet56_tv.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ValueError, match=r"resnet56 \(a CIFAR ResNet\) was taken from the file name .*pass the "
                                         r"architecture"):
        load_model(path)


def test_a_stalled_hub_download_times_out_and_the_default_is_restored(monkeypatch):
    """torch.hub opens its URLs without a timeout: a connection that never answered hung load_model for ever (data
    tester). While a download may run, sockets get HUB_STALL_TIMEOUT; overlapping downloads share it, the last one
    restores the default, and a default of the caller's own is left alone (review)."""
    import socket

    from aprkit.models import weights_error as we

    before = socket.getdefaulttimeout()
    try:
        socket.setdefaulttimeout(None)
        with we.stall_timeout(True):
            assert socket.getdefaulttimeout() == we.HUB_STALL_TIMEOUT
            with we.stall_timeout(True):
                pass
            assert socket.getdefaulttimeout() == we.HUB_STALL_TIMEOUT  # the first download still runs
            socket.setdefaulttimeout(7.0)  # the caller's own, set while a download runs: a second one keeps it
            with we.stall_timeout(True):
                assert socket.getdefaulttimeout() == 7.0
            assert socket.getdefaulttimeout() == 7.0
        assert socket.getdefaulttimeout() == 7.0
        socket.setdefaulttimeout(None)
        with we.stall_timeout(False):
            assert socket.getdefaulttimeout() is None
        socket.setdefaulttimeout(5.0)
        with we.stall_timeout(True):
            assert socket.getdefaulttimeout() == 5.0
        assert socket.getdefaulttimeout() == 5.0
    finally:
        socket.setdefaulttimeout(before)


def test_a_torchvision_download_through_a_silent_connection_fails_instead_of_hanging(tmp_path, monkeypatch):
    """Through a proxy (127.0.0.1) that accepts the connection and never answers, the download gave up only when the
    user killed it (data tester): now after HUB_STALL_TIMEOUT, named as a download error."""
    import socket
    import threading

    from aprkit.data.download import DownloadError
    from aprkit.models import weights_error as we

    pytest.importorskip("torchvision")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held: list = []
    threading.Thread(target=lambda: held.extend(server.accept() for _ in range(2)), daemon=True).start()
    monkeypatch.setattr(we, "HUB_STALL_TIMEOUT", 1.0)
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import urllib.request

    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen's opener reads the proxies when it is built
    try:
        with pytest.raises(DownloadError, match="timed out"):
            load_model("torchvision:resnet18")
    finally:
        server.close()
    assert socket.getdefaulttimeout() is None


def test_a_cifar_resnet_of_another_depth_is_named(tmp_path):
    """load_model('resnet20', checkpoint=<a resnet32's weights>) listed 90 unexpected keys without the depth they
    are of (loading the file by its path alone already works it out)."""
    from aprkit.models import create_model, load_model

    torch.save(create_model("resnet32").state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=r"weights\.pt holds the weights of a resnet32 \(its stages have 5 blocks "
                                         r"each\), not of resnet20: pass resnet32"):
        load_model("resnet20", checkpoint=tmp_path / "weights.pt")
    assert load_model("resnet32", checkpoint=tmp_path / "weights.pt").aprkit_arch == "resnet32"
