"""The optional robustbench integration against a stand-in robustbench package (robustbench as published needs the
network and is not installed here): where its weights come from, random_init, and the autoattack alias."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from aprkit.models import load_model

_UTILS = textwrap.dedent('''
    import os, torch, autoattack
    from torch import nn
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    CALLS = []
    def net():
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    all_models = {BenchmarkDataset("cifar10"): {ThreatModel("Linf"): {
        "Standard": {"gdrive_id": "x", "model": net}, "Ensemble": {"gdrive_id": ["a", "b"], "model": net}}},
        BenchmarkDataset("imagenet"): {ThreatModel("Linf"): {"Bicubic2024": {"gdrive_id": "y", "model": net},
                                                            "Standard_R50": {"model": net}}}}
    def load_model(model_name, model_dir="./models", dataset="cifar10", threat_model="Linf"):
        CALLS.append(dict(model_name=model_name, model_dir=model_dir, dataset=dataset, threat_model=threat_model))
        path = os.path.join(model_dir, dataset, threat_model, model_name + ".pt")
        if not os.path.isfile(path):
            raise ConnectionError("offline: cannot download " + model_name)
        m = net()
        sd = torch.load(path)
        m.load_state_dict(sd.get("state_dict", sd))  # robustbench reads a 'state_dict' entry too
        return m.eval()
''')


@pytest.fixture()
def fake_rb(tmp_path, monkeypatch):
    """A stand-in ``robustbench`` (its ``load_model`` reads ``<model_dir>/<dataset>/<threat>/<name>.pt`` and never
    downloads) and ``pyautoattack``, importable for one test."""
    site = tmp_path / "site"
    (site / "robustbench").mkdir(parents=True)
    (site / "robustbench" / "__init__.py").write_text("")
    (site / "robustbench" / "utils.py").write_text(_UTILS)
    (site / "robustbench" / "model_zoo").mkdir()
    (site / "robustbench" / "model_zoo" / "__init__.py").write_text("")
    (site / "robustbench" / "model_zoo" / "enums.py").write_text(
        "from enum import Enum\n"
        "class BenchmarkDataset(Enum):\n    cifar_10 = 'cifar10'\n    imagenet = 'imagenet'\n"
        "class ThreatModel(Enum):\n    Linf = 'Linf'\n    corruptions = 'corruptions'\n")
    (site / "robustbench" / "data.py").write_text(
        "from torchvision import transforms as T\n"
        "def get_preprocessing(dataset, threat_model, model_name, preprocessing):\n"
        "    return T.Compose([T.Resize(256, interpolation=T.InterpolationMode('bicubic')), T.CenterCrop(224),\n"
        "                      T.ToTensor()])\n")
    (site / "pyautoattack").mkdir()
    (site / "pyautoattack" / "__init__.py").write_text("NAME = 'pyautoattack'\n")
    monkeypatch.syspath_prepend(str(site))
    mods = ("robustbench", "robustbench.utils", "robustbench.data", "robustbench.model_zoo",
            "robustbench.model_zoo.enums", "autoattack", "pyautoattack")
    for mod in mods:
        monkeypatch.delitem(sys.modules, mod, raising=False)
    yield site
    for mod in mods:
        sys.modules.pop(mod, None)


def _weights(path, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(m.state_dict(), path)
    return m.eval()


def test_a_checkpoint_file_outside_robustbench_layout_is_the_one_loaded(fake_rb, tmp_path):
    """checkpoint=FILE not in <model_dir>/<dataset>/<threat>/<name>.pt was taken as a pointer to a folder: the file
    was never read (online, robustbench would have downloaded the published weights and reported them as it)."""
    mine = _weights(tmp_path / "my weights" / "fine-tuned.pt", seed=1)
    _weights(tmp_path / "cifar10" / "Linf" / "Standard.pt", seed=2)  # what the old code would have loaded
    model = load_model("robustbench:Standard", checkpoint=tmp_path / "my weights" / "fine-tuned.pt")
    x = torch.rand(2, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), mine(x))


def test_a_checkpoint_file_in_robustbench_layout_and_a_folder_give_its_model_dir(fake_rb, tmp_path):
    ref = _weights(tmp_path / "zoo" / "cifar10" / "Linf" / "Standard.pt", seed=3)
    x = torch.rand(2, 3, 4, 4)
    for given in (tmp_path / "zoo" / "cifar10" / "Linf" / "Standard.pt", tmp_path / "zoo"):
        model = load_model("robustbench:Standard", checkpoint=given)
        assert sys.modules["robustbench.utils"].CALLS[-1]["model_dir"] == str(tmp_path / "zoo")
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x))


def test_robustbench_checkpoint_errors(fake_rb, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pt does not exist; expected robustbench weights"):
        load_model("robustbench:Standard", checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="either as checkpoint=.*or as model_dir=, not both"):
        load_model("robustbench:Standard", checkpoint=tmp_path, model_dir=tmp_path)
    with pytest.raises(ValueError, match=r"random_init=True has no robustbench model to build"):
        load_model("robustbench:Standard", random_init=True)


def test_offline_error_does_not_suggest_random_init_for_robustbench(fake_rb, tmp_path):
    from aprkit.data.download import DownloadError

    with pytest.raises(DownloadError) as info:
        load_model("robustbench:Standard", model_dir=tmp_path)
    assert "Standard.pt" in str(info.value) and "random_init" not in str(info.value)


def test_a_damaged_zoo_file_is_named_as_such_not_as_offline(fake_rb, tmp_path):
    """A zoo file already in place that robustbench cannot read was reported as "Offline: fill that cache" (tester)."""
    from aprkit.data.download import DownloadError

    bad = tmp_path / "cifar10" / "Linf" / "Standard.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(DownloadError, match=r"Standard\.pt cannot be read \(damaged or cut short\). Delete it") as info:
        load_model("robustbench:Standard", model_dir=tmp_path)
    assert "Offline" not in str(info.value)


def test_pyautoattack_stands_in_only_for_a_missing_autoattack(fake_rb, tmp_path, monkeypatch):
    real = tmp_path / "real"
    (real / "autoattack").mkdir(parents=True)
    (real / "autoattack" / "__init__.py").write_text("NAME = 'real autoattack'\n")
    monkeypatch.syspath_prepend(str(real))
    _weights(tmp_path / "zoo" / "cifar10" / "Linf" / "Standard.pt", seed=0)
    load_model("robustbench:Standard", model_dir=tmp_path / "zoo")
    assert sys.modules["autoattack"].NAME == "real autoattack"


def test_the_autoattack_alias_does_not_outlive_a_failed_robustbench_import(fake_rb):
    (fake_rb / "robustbench" / "utils.py").write_text("import autoattack\nraise ImportError('no pkg_resources')\n")
    from aprkit.models.robustbench import import_robustbench

    with pytest.raises(ImportError, match="no pkg_resources"):
        import_robustbench()
    assert "autoattack" not in sys.modules


@pytest.mark.parametrize(("spec", "why"), [
    ("robustbench:Ensemble", "it is an ensemble"),
    ("robustbench:imagenet/Linf/Standard_R50", "robustbench builds ImageNet 'Standard' models from torchvision"),
])
def test_a_weights_file_robustbench_would_not_read_is_refused(fake_rb, tmp_path, spec, why):
    """For these models robustbench reads no <name>.pt: a linked file would be ignored and the published weights
    reported as it."""
    _weights(tmp_path / "mine.pt", seed=0)
    with pytest.raises(ValueError, match=f"cannot load the weights file .*mine.pt: {why}"):
        load_model(spec, checkpoint=tmp_path / "mine.pt")
    dataset, threat, name = (spec.split(":")[1].split("/") if "/" in spec else ("cifar10", "Linf", "Ensemble"))
    in_layout = tmp_path / "zoo" / dataset / threat / f"{name}.pt"  # in robustbench's layout: not read either
    _weights(in_layout, seed=0)
    with pytest.raises(ValueError, match=f"cannot load the weights file .*{name}.pt: {why}"):
        load_model(spec, checkpoint=in_layout)


def test_errors_name_the_folder_robustbench_reads_for_3d_corruptions(fake_rb, tmp_path):
    from aprkit.data.download import DownloadError

    with pytest.raises(DownloadError, match=r"cifar10/corruptions/X\.pt"):
        load_model("robustbench:cifar10/corruptions_3d/X", model_dir=tmp_path)


def test_without_robustbench_the_error_names_a_missing_weights_file_as_given(tmp_path, monkeypatch):
    """A missing ``checkpoint=`` with a weights suffix is a file, not a model_dir, in the not-installed message too
    (it read ``x.pt/cifar10/Linf/Standard.pt``)."""
    import aprkit.models.robustbench as rb

    def missing() -> None:
        raise ImportError("robustbench is not installed")

    monkeypatch.setattr(rb, "import_robustbench", missing)
    with pytest.raises(ImportError, match=r"weights \S*x\.pt: not there yet"):
        load_model("robustbench:Standard", checkpoint=tmp_path / "x.pt")
    with pytest.raises(ImportError, match=r"weights \S*zoo/cifar10/Linf/Standard\.pt: not there yet"):
        load_model("robustbench:Standard", checkpoint=tmp_path / "zoo")


def test_names_classes_and_specs_robustbench_does_not_have_are_refused(fake_rb, tmp_path):
    """An unknown name was a bare KeyError, num_classes= and drop_head= were ignored (a 10-class model for
    num_classes=100) and a full spec with dataset= a TypeError."""
    _weights(tmp_path / "cifar10" / "Linf" / "Standard.pt", seed=4)
    with pytest.raises(ValueError, match="no model 'Standrd' for cifar10/Linf.*did you mean 'Standard'"):
        load_model("robustbench:Standrd", model_dir=tmp_path)
    with pytest.raises(ValueError, match="names its dataset and threat model already; drop dataset="):
        load_model("robustbench:cifar10/Linf/Standard", model_dir=tmp_path, dataset="cifar10")
    with pytest.raises(ValueError, match="has 10 classes but num_classes=100; pass drop_head=True"):
        load_model("robustbench:Standard", model_dir=tmp_path, num_classes=100)
    head = load_model("robustbench:Standard", model_dir=tmp_path, num_classes=100, drop_head=True)
    assert head(torch.rand(2, 3, 4, 4)).shape == (2, 100)


def test_a_saved_robustbench_model_reloads_its_own_weights_offline(fake_rb, tmp_path):
    """save_checkpoint + load_model(file) rebuilt the model through the zoo: offline a DownloadError, online a
    download of the published weights only to overwrite them."""
    from aprkit.models import save_checkpoint

    model = load_model("robustbench:Standard", checkpoint=_weights(tmp_path / "w" / "mine.pt", seed=5) and
                       tmp_path / "w" / "mine.pt")
    save_checkpoint(tmp_path / "saved.pt", model)
    again = load_model(tmp_path / "saved.pt")  # the zoo's Standard.pt is nowhere: nothing to download here
    x = torch.rand(2, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), atol=0, rtol=0)
    assert "state_dict" not in again.aprkit_kwargs  # the weights once, in the model (a re-save was twice the size)
    wide = load_model("robustbench:Standard", checkpoint=tmp_path / "w" / "mine.pt", num_classes=7, drop_head=True)
    save_checkpoint(tmp_path / "wide.pt", wide)  # a new head of another size reloads with it
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "wide.pt")(x), wide(x), atol=0, rtol=0)


def test_imagenet_models_get_robustbenchs_preprocessing(fake_rb, tmp_path):
    """ImageNet models ran on the images as given (no resize or crop); robustbench's benchmark preprocesses them per
    model (here BicubicRes256Crop224)."""
    from aprkit.models.foreign import Preprocess

    _weights(tmp_path / "imagenet" / "Linf" / "Bicubic2024.pt", seed=6)
    model = load_model("robustbench:imagenet/Linf/Bicubic2024", model_dir=tmp_path)
    assert isinstance(model, Preprocess)
    assert (model.resize, model.crop, model.interpolation, model.crop_mode) == (256, 224, "bicubic", "center")
    assert model.mean.eq(0).all() and model.std.eq(1).all()  # robustbench models normalise inside


def test_processes_fetching_a_missing_zoo_file_take_turns(fake_rb, tmp_path):
    """robustbench downloads a missing ``<name>.pt`` in place with no checksum: two ranks at once each downloaded it
    (or read the other's half-written file). They now take turns on its lock; the second finds the whole file."""
    import threading
    import time

    from aprkit.models.robustbench import import_robustbench

    rb = import_robustbench()
    original, fetched = rb.load_model, []

    def downloading(model_name, model_dir="./models", dataset="cifar10", threat_model="Linf"):
        path = tmp_path / "zoo" / dataset / threat_model / f"{model_name}.pt"
        if not path.is_file():  # the download: slow, in place
            fetched.append(model_name)
            time.sleep(0.3)
            _weights(path, seed=3)
        return original(model_name, model_dir, dataset, threat_model)

    rb.load_model = downloading
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(load_model("robustbench:Standard",
                                                                      model_dir=tmp_path / "zoo")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 2 and fetched == ["Standard"]
