"""The frost textures as a data source: looked up in the data root, fetched with ``download=True`` (the
``imagecorruptions`` wheel, served from 127.0.0.1 here), and checked before any work by ``evaluate``, the demo and
``aprkit corrupt`` (a plain ``pip install aprkit`` has no textures: the demo failed after training both models)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile

import numpy as np
import pytest
import torch
from http_common import LocalServer, server_fixture  # noqa: F401 (server_fixture: the fixture ``server``)
from PIL import Image
from torch import nn
from urllib.parse import urlsplit

from aprkit.corruptions import _frost, corrupt, find_frost_dir
from aprkit.data.download import DownloadError
from aprkit.data.sources import MARKER, RemoteFile
from aprkit.eval import evaluate


def _wheel() -> bytes:
    """A stand-in for the imagecorruptions wheel: a zip with ``imagecorruptions/frost/frost1.png .. frost6.jpg``."""
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("imagecorruptions/__init__.py", "")
        for name in _frost.FROST_FILES:
            img = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(
                img, format="PNG" if name.endswith("png") else "JPEG")
            zf.writestr(f"imagecorruptions/frost/{name}", img.getvalue())
    return buf.getvalue()


@pytest.fixture(name="no_textures")
def no_textures_fixture(tmp_path, monkeypatch, server):
    """No textures installed or configured, the data root in ``tmp_path``, the wheel served by ``server`` (through
    the mirror setting, at the published URL's path) with its own checksum."""
    monkeypatch.delenv("APRKIT_FROST_DIR", raising=False)
    monkeypatch.setattr(_frost, "_installed_dir", lambda: None)
    monkeypatch.setenv("APRKIT_DATA", str(tmp_path / "data"))
    data = _wheel()
    real = _frost.FROST_SOURCE.files[0]
    server.files[urlsplit(real.url).path] = data
    monkeypatch.setenv("APRKIT_DOWNLOAD_MIRROR", server.url)
    monkeypatch.setattr(_frost, "FROST_SOURCE", dataclasses.replace(
        _frost.FROST_SOURCE, files=(RemoteFile(real.url, real.name, hashlib.md5(data).hexdigest()),)))
    return tmp_path / "data" / "frost"


class NeverCalled(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model ran before the missing textures were reported")


def test_the_textures_are_fetched_into_the_data_root_and_found_there(no_textures) -> None:
    with pytest.raises(FileNotFoundError, match=r"--download \(aprkit eval, corrupt, demo\).*imagecorruptions"):
        find_frost_dir()
    assert find_frost_dir(download=True, progress=False) == no_textures
    assert (no_textures / MARKER).is_file() and (no_textures / "frost5.jpg").is_file()
    assert find_frost_dir() == no_textures  # found without download now
    assert not (no_textures.parent / ".aprkit-downloads-frost").exists()  # the wheel is not kept
    (no_textures / "frost2.png").unlink()  # deleted by hand below the marker: not found, fetched again
    with pytest.raises(FileNotFoundError, match="frost texture images"):
        find_frost_dir()
    assert find_frost_dir(download=True, progress=False) == no_textures and (no_textures / "frost2.png").is_file()
    assert corrupt(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "frost", 3, "cifar",
                   torch.Generator().manual_seed(0)).shape == (1, 3, 32, 32)


def test_evaluate_reports_missing_textures_before_any_work_and_fetches_them_with_download(no_textures, tmp_path):
    kw = dict(corruptions=["gaussian_noise", "frost"], severities=[1], limit=4, progress=False)
    with pytest.raises(FileNotFoundError, match="frost texture images"):
        evaluate(NeverCalled(), "corruption", "synthetic:8", **kw)
    with pytest.raises(FileNotFoundError, match="frost texture images"):  # calibration reads the same cells
        evaluate(NeverCalled(), "calibration", "synthetic:8", **kw)
    with pytest.raises(AssertionError, match="the model ran"):  # no textures needed: the run starts
        evaluate(NeverCalled(), "calibration", "synthetic:8", **kw, options={"calibration_corrupted": False})
    with pytest.raises(AssertionError, match="the model ran"):  # fetched, then the run starts
        evaluate(NeverCalled(), "corruption", "synthetic:8", **kw, download=True)
    assert (no_textures / "frost1.png").is_file()


def test_the_demo_and_aprkit_corrupt_stop_before_any_work_without_textures(no_textures, tmp_path, capsys) -> None:
    from aprkit.cli import main
    from aprkit.demo import run_demo

    with pytest.raises(FileNotFoundError, match="frost texture images"):
        run_demo(tmp_path / "demo", quick=True, progress=False)
    assert not (tmp_path / "demo").exists()  # nothing trained
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 3), dtype=np.uint8))
    assert main(["corrupt", str(tmp_path / "x.npy"), str(tmp_path / "c"), "--corruptions", "frost", "--severities",
                 "1", "--no-progress"]) != 0
    assert "frost texture images" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert main(["corrupt", str(tmp_path / "x.npy"), str(tmp_path / "c"), "--corruptions", "frost", "--severities",
                 "1", "--no-progress", "--download"]) == 0
    assert (tmp_path / "c" / "frost.npy").is_file() and (no_textures / MARKER).is_file()


def test_the_data_and_the_model_are_checked_before_the_textures(no_textures) -> None:
    """Without textures, a bad data spec or a model without weights still reports its own error first."""
    with pytest.raises(TypeError, match="data must be a dataset spec"):
        evaluate(NeverCalled(), "corruption", 12345, corruptions=["frost"], progress=False)
    with pytest.raises(ValueError, match="trained weights"):
        evaluate("resnet20", "corruption", "synthetic:8", corruptions=["frost"], progress=False)


def test_an_offline_download_of_the_textures_names_the_other_ways_to_supply_them(no_textures, monkeypatch) -> None:
    """Offline, the download error named only where to place the wheel; the simpler ways the non-download error
    gives (imagecorruptions installed without its dependencies, a folder of textures) were missing."""
    monkeypatch.setenv("APRKIT_DOWNLOAD_MIRROR", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(DownloadError, match=r"could not download .*imagecorruptions-1\.1\.2-py3-none-any\.whl.*"
                                            r"\(MD5 [0-9a-f]{32}\).*instead of downloading the frost textures, "
                                            r"install them with `pip install --no-deps imagecorruptions`.*"
                                            r"frost_dir=\.\.\. / set APRKIT_FROST_DIR.*--frost-dir"):
        find_frost_dir(download=True, progress=False)
