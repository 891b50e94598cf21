"""Pretrained timm/torchvision weights through prepared local caches in the libraries' own layouts (no network)."""

from __future__ import annotations

import json

import pytest
import torch

from aprkit.cli import main
from aprkit.data.download import DownloadError
from aprkit.models import load_model
from aprkit.models.foreign import Preprocess

TIMM_NAME = "test_resnet.r160_in1k"  # timm's tiny test model with a published pretrained tag


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An offline Hugging Face hub cache holding random weights for ``timm/TIMM_NAME``; returns its state_dict."""
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    cache = tmp_path / "hf" / "hub"
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--timm--{TIMM_NAME}"
    (repo / "snapshots" / rev).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    torch.manual_seed(0)
    sd = {k: v.contiguous() for k, v in timm.create_model(TIMM_NAME, pretrained=False).state_dict().items()}
    save_file(sd, str(repo / "snapshots" / rev / "model.safetensors"))
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return sd


def _reference(model: Preprocess, x: torch.Tensor, resize: int, crop: int, mean, std) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    z = TF.center_crop(TF.resize(x, [resize], antialias=True), [crop])
    return model.model(TF.normalize(z, list(mean), list(std)))


def test_timm_pretrained_from_offline_hub_cache(hf_cache):
    model = load_model(f"timm:{TIMM_NAME}")
    assert isinstance(model, Preprocess)
    got = model.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in hf_cache.items())  # exactly the cached weights
    # the model's own pretrained config: input 160, crop_pct 0.95 -> resize 168, mean/std 0.5, bilinear
    assert (model.resize, model.crop, model.interpolation, model.input_size) == (168, 160, "bilinear", (3, 160, 160))
    assert model.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    x = torch.rand(2, 3, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference(model, x, 168, 160, (0.5,) * 3, (0.5,) * 3), atol=1e-4, rtol=1e-4)


def test_cli_eval_timm_pretrained_offline(hf_cache, tmp_path, capsys):
    from aprkit.data.cue_conflict import write_synthetic_cue_conflict

    write_synthetic_cue_conflict(tmp_path / "stimuli", per_shape=1, size=24)
    out = tmp_path / "out"
    rc = main(["eval", "--model", f"timm:{TIMM_NAME}", "--suite", "shape-bias", "--data",
               f"shape-bias=cue-conflict:{tmp_path / 'stimuli'}", "--device", "cpu", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert "shape bias" in json.dumps(results).replace("_", " ").replace("-", " ")


def test_timm_offline_without_cache_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(DownloadError) as e:
        load_model(f"timm:{TIMM_NAME}")
    msg = str(e.value)
    assert f"timm/{TIMM_NAME}" in msg and str(tmp_path / "empty") in msg and "HF_HUB_OFFLINE=1" in msg
    assert "hub offline mode on" in msg
    assert "--checkpoint" in msg and "--random-init" in msg
    rc = main(["eval", "--model", f"timm:{TIMM_NAME}", "--data", "synthetic:4", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "could not load the pretrained weights" in err and "Traceback" not in err


def test_an_unreachable_hub_reads_the_cache_at_once(hf_cache, tmp_path, monkeypatch):
    """With the hub unreachable (HF_HUB_OFFLINE unset) timm's weights come from the cache in offline mode at once
    (the hub retried for about a minute first); a missing entry is one error naming the unreachable hub; the
    hub's offline setting is restored afterwards."""
    from huggingface_hub import constants

    from aprkit.models import foreign

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(foreign, "_reachable", lambda url, timeout=3.0: False)
    model = load_model(f"timm:{TIMM_NAME}")
    assert all(torch.equal(model.model.state_dict()[k], v) for k, v in hf_cache.items())
    assert constants.HF_HUB_OFFLINE is False
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(DownloadError, match="hub offline mode on: https://huggingface.co is unreachable"):
        load_model(f"timm:{TIMM_NAME}")
    assert constants.HF_HUB_OFFLINE is False


def test_random_init_and_local_file_still_override(hf_cache, tmp_path):
    rnd = load_model(f"timm:{TIMM_NAME}", random_init=True)
    assert not isinstance(rnd, Preprocess)  # random weights, mean/std only
    path = tmp_path / "mine.pt"
    sd = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in hf_cache.items()}
    torch.save(sd, path)
    local = load_model(f"timm:{TIMM_NAME}", checkpoint=path)
    assert all(torch.equal(local.model.state_dict()[k], v) for k, v in sd.items())


def test_torchvision_pretrained_from_torch_hub_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.get_model_weights("squeezenet1_1").DEFAULT
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    ckpt.parent.mkdir(parents=True)
    torch.manual_seed(1)
    sd = torchvision.models.squeezenet1_1().state_dict()
    torch.save(sd, ckpt)
    model = load_model("torchvision:squeezenet1_1")
    assert isinstance(model, Preprocess) and all(torch.equal(model.model.state_dict()[k], v) for k, v in sd.items())
    assert (model.resize, model.crop, model.num_classes) == (256, 224, 1000)
    x = torch.rand(1, 3, 64, 48)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference(model, x, 256, 224, mean, std), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="1000 classes but num_classes=10.*drop_head"):
        load_model("torchvision:squeezenet1_1", num_classes=10)
    # a byte changed in the cached file loaded as other weights without a word (torch.hub checks the hash on
    # download only; writer tester): its records' CRC-32 are checked as read_checkpoint checks them
    import zipfile

    with zipfile.ZipFile(ckpt) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    raw = bytearray(ckpt.read_bytes())
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2
    raw[at] ^= 0xFF
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"squeezenet1_1-.*is damaged.*fails its CRC-32 check.*download it afresh"):
        load_model("torchvision:squeezenet1_1")


def test_torchvision_offline_names_url_and_cache(tmp_path, monkeypatch):
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DownloadError) as e:
        load_model("torchvision:squeezenet1_1")
    msg = str(e.value)
    assert "download.pytorch.org/models/squeezenet1_1-" in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg


def test_an_unwritable_weights_cache_is_named_as_this_machines_problem(tmp_path, monkeypatch):
    """A cache folder that cannot be written (or a full disk) is not an offline problem: the error says the folder
    must be writable and which variable moves it."""
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def unwritable(url, dst, *args, **kwargs):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", unwritable)
    with pytest.raises(DownloadError) as e:
        load_model("torchvision:squeezenet1_1")
    msg = str(e.value)
    assert "could not store the pretrained weights" in msg and "must be writable" in msg and "TORCH_HOME" in msg
    assert "Offline" not in msg and "--checkpoint" in msg


def test_preprocess_matches_torchvision_resize_and_keeps_crop_sized_inputs():
    """The long side follows torchvision's ``int(resize * long / short)`` (a 71x71 image came out 224x223), square
    crop-sized inputs (ImageNet-C, cue-conflict at 224 px) are not zoomed again, and timm's squash mode resizes both
    sides."""
    from torchvision.transforms.v2 import functional as TF

    net = torch.nn.Identity()
    model = Preprocess(net, (0.0,) * 3, (1.0,) * 3, resize=224, crop=224)
    assert model.normalize(torch.rand(1, 3, 71, 71)).shape == (1, 3, 224, 224)
    for h, w in ((299, 299), (300, 451), (451, 300), (97, 130)):
        x = torch.rand(1, 3, h, w)
        want = TF.center_crop(TF.resize(x, [256], antialias=True), [224])
        got = Preprocess(net, (0.0,) * 3, (1.0,) * 3, resize=256, crop=224).normalize(x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    x = torch.rand(2, 3, 224, 224)
    assert torch.equal(Preprocess(net, (0.0,) * 3, (1.0,) * 3, resize=256, crop=224).normalize(x), x)
    squash = Preprocess(net, (0.0,) * 3, (1.0,) * 3, resize=240, crop=224, crop_mode="squash")
    x = torch.rand(1, 3, 200, 300)
    want = TF.center_crop(TF.resize(x, [240, 240], antialias=True), [224])
    torch.testing.assert_close(squash.normalize(x), want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="crop_mode"):
        Preprocess(net, (0.0,) * 3, (1.0,) * 3, resize=240, crop=224, crop_mode="border")


def test_timm_uses_the_published_test_size(hf_cache, monkeypatch):
    """timm publishes accuracies from validate.py, which evaluates at ``test_input_size`` / ``test_crop_pct`` where a
    weight set has them (resnet50.a1_in1k: 288 px, crop 1.0)."""
    import timm

    real = timm.create_model

    def with_test_size(*args, **kwargs):
        net = real(*args, **kwargs)
        net.pretrained_cfg = {**net.pretrained_cfg, "test_input_size": (3, 192, 192), "test_crop_pct": 1.0}
        return net

    monkeypatch.setattr(timm, "create_model", with_test_size)
    model = load_model(f"timm:{TIMM_NAME}")
    assert (model.resize, model.crop) == (192, 192)


def test_the_reachability_probe_defers_to_a_proxy(monkeypatch):
    """Behind a proxy a direct connection says nothing about the hub: the probe does not force offline mode."""
    from aprkit.models.foreign import _reachable

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert _reachable("http://127.0.0.1:9", timeout=1.0) is False  # nothing listens on the discard port here
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert _reachable("http://127.0.0.1:9", timeout=1.0) is True
