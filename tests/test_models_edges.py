"""Model loading and saving edge cases found by black-box testing: a module loaded from an aprkit checkpoint takes
its normalisation, foreign specs check num_classes, wrapped foreign state_dicts reload, ``~`` paths, an arch that
does not fit the weights, models without an nn.Linear head, timm models with two heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aprkit.models import create_model, load_model, read_checkpoint, save_checkpoint
from aprkit.models.cifar_resnet import CifarResNet


def test_a_module_takes_the_checkpoints_normalisation(tmp_path):
    src = create_model("resnet20", mean=[0.1, 0.2, 0.3], std=[0.3, 0.3, 0.3])
    save_checkpoint(tmp_path / "m.pt", src)
    by_path = load_model(tmp_path / "m.pt")
    into = load_model(create_model("resnet20"), checkpoint=tmp_path / "m.pt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(into(x), src.eval()(x))
        torch.testing.assert_close(by_path(x), into(x))
    assert torch.allclose(into.mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))


@pytest.mark.parametrize("n", [0, -3, 10.0, True, "10"])
@pytest.mark.parametrize("spec", ["torchvision:resnet18", "resnet20"])
def test_num_classes_must_be_a_positive_int_for_every_spec(spec, n):
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        load_model(spec, random_init=True, num_classes=n)


def test_numpy_class_counts_are_accepted():
    assert create_model("resnet20", num_classes=np.int64(7)).num_classes == 7


@pytest.mark.parametrize("lib", ["torchvision:resnet18", "timm:resnet18"])
def test_the_state_dict_of_a_loaded_foreign_model_reloads(lib, tmp_path):
    pytest.importorskip(lib.split(":")[0])
    m = load_model(lib, random_init=True, num_classes=10)
    torch.save(m.state_dict(), tmp_path / "sd.pt")  # keys carry the wrapper's "model." prefix
    back = load_model(lib, checkpoint=tmp_path / "sd.pt")
    assert back.num_classes == 10
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x), m(x))


def test_tilde_paths_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    written = save_checkpoint("~/x.pt", create_model("resnet20"))
    assert written == tmp_path / "x.pt" and not (tmp_path / "~").exists()
    assert read_checkpoint("~/x.pt")["arch"] == "resnet20"
    assert load_model("resnet20", checkpoint="~/x.pt").num_classes == 10


def test_a_folder_is_not_a_checkpoint_path(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder; expected the path of the checkpoint file"):
        save_checkpoint(tmp_path, create_model("resnet20"))


@pytest.mark.parametrize("model, arch", [(lambda: create_model("resnet20"), "resnet32"),
                                         (lambda: CifarResNet(56), "resnet20")])
def test_an_arch_that_does_not_fit_the_weights_is_refused(model, arch, tmp_path):
    with pytest.raises(ValueError, match=f"do not fit arch='{arch}'"):
        save_checkpoint(tmp_path / "x.pt", model(), arch=arch)
    assert not (tmp_path / "x.pt").exists()
    save_checkpoint(tmp_path / "ok.pt", CifarResNet(20), arch="resnet20")  # built directly, named rightly
    assert load_model(tmp_path / "ok.pt").num_classes == 10


def test_the_fit_check_leaves_the_callers_random_stream_alone(tmp_path):
    m = CifarResNet(20)
    torch.manual_seed(3)
    save_checkpoint(tmp_path / "ok.pt", m, arch="resnet20")
    after = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(3))


def test_a_model_without_a_linear_head_loads_its_checkpoint(tmp_path):
    pytest.importorskip("torchvision")
    m = load_model("torchvision:squeezenet1_0", random_init=True, num_classes=10)
    torch.save(m.inner.state_dict(), tmp_path / "sq.pt")
    back = load_model("torchvision:squeezenet1_0", checkpoint=tmp_path / "sq.pt", num_classes=10)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x), m(x))


def test_a_distilled_timm_model_refuses_forward_head():
    pytest.importorskip("timm")
    m = load_model("timm:deit_tiny_distilled_patch16_224", random_init=True, num_classes=3, img_size=32)
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="2 heads on different tokens"):
        m.forward_head(m.forward_features(x))
    plain = load_model("timm:vit_tiny_patch16_224", random_init=True, num_classes=3, img_size=32)
    with torch.no_grad():
        torch.testing.assert_close(plain.forward_head(plain.forward_features(x)), plain(x))


def test_builder_arguments_are_named_in_the_callers_terms():
    """A keyword the architecture does not take gets a did-you-mean from its class's arguments; one that its name
    fixes (resnet20's depth) says so, instead of "got multiple values for argument 'depth'" (tester)."""
    with pytest.raises(TypeError, match=r"create_model\('wrn40_2'\) takes no argument 'dropout' \(did you mean "
                                        r"'drop_rate'"):
        create_model("wrn40_2", dropout=0.3)
    with pytest.raises(TypeError, match="'depth' is fixed by the model name 'resnet20'"):
        create_model("resnet20", depth=32)
    with pytest.raises(TypeError, match=r"model 'wrn40_2' takes no argument 'dropout' \(a keyword of load_model; .*"
                                        r"did you mean 'drop_rate'"):
        load_model("wrn40_2", dropout=0.3, random_init=True)
