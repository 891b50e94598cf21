"""Downloads against an HTTP server on 127.0.0.1 (Range support) serving small archives in the official layouts."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_common import LocalServer, server_fixture  # noqa: F401 (server_fixture: the fixture ``server``)

from aprkit.data import get_dataset
from aprkit.data.archives import extract_archive
from aprkit.data.corrupted import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS
from aprkit.data.cue_conflict import CUE_CONFLICT_CATEGORIES
from aprkit.data.download import DownloadError, data_root, download_file
from aprkit.data.registry import resolve_spec
from aprkit.data.sources import MARKER, SOURCES, RemoteFile, ensure_source


def _tar(members: dict[str, bytes], links: dict[str, str] | None = None, end: bool = True) -> bytes:
    """A tar of ``members`` (name -> bytes) and symbolic ``links`` (name -> target); ``end=False`` cuts it after
    its last member, without the end-of-archive blocks (a copy cut short there)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, to in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, to
            tf.addfile(info)
        size = tf.offset  # where the end-of-archive blocks begin
    return buf.getvalue() if end else buf.getvalue()[:size]


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _cifar_c_tar(top: str = "CIFAR-10-C") -> bytes:
    rng = np.random.default_rng(0)
    members = {f"{top}/{c}.npy": _npy(rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)) for c in ALL_CORRUPTIONS}
    members[f"{top}/labels.npy"] = _npy(np.tile(np.arange(2, dtype=np.int64), 5))
    return _tar(members)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _local(source: str, server: LocalServer, data: bytes) -> object:
    """``SOURCES[source]`` with its one file served by ``server`` under the official URL path and checksum."""
    src = SOURCES[source]
    (f,) = src.files
    path = "/" + f.url.split("/", 3)[3]
    server.files[path] = data
    return dataclasses.replace(src, files=(RemoteFile(server.url + path, f.name, _md5(data)),))


def test_data_root_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("APRKIT_DATA", raising=False)
    assert data_root() == Path.home() / ".cache" / "aprkit"
    monkeypatch.setenv("APRKIT_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert data_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("APRKIT_DATA", f" {tmp_path}\t\n")  # a script's stray spaces: not a folder "dir "
    assert data_root() == tmp_path
    monkeypatch.setenv("APRKIT_DATA", "  ")
    assert data_root() == Path.home() / ".cache" / "aprkit"


def test_cifar10_c_download_extract_marker_and_no_second_download(server, tmp_path):
    src = _local("cifar10-c", server, _cifar_c_tar())
    path = ensure_source(src, root=tmp_path, download=True, progress=False)
    assert path == tmp_path / "CIFAR-10-C" and (path / MARKER).is_file() and (path / "fog.npy").is_file()
    assert not (tmp_path / ".aprkit-downloads-CIFAR-10-C").exists()  # archive removed after extraction
    n = len(server.requests)
    assert ensure_source(src, root=tmp_path, download=True, progress=False) == path
    assert len(server.requests) == n  # complete: nothing fetched again
    ds = get_dataset("cifar10-c", corruption="fog", severity=2, data_root=tmp_path)
    assert len(ds) == 2 and ds[0][0].shape == (3, 4, 4)
    (path / "fog.npy").unlink()  # the marker was trusted: download=True fetched nothing and the file stayed missing
    assert ensure_source(src, root=tmp_path, progress=False) == path  # without download the marker is trusted
    assert ensure_source(src, root=tmp_path, download=True, progress=False) == path
    assert len(server.requests) > n and (path / "fog.npy").is_file() and (path / MARKER).is_file()


def test_checksum_mismatch_removes_file(server, tmp_path):
    """The real source (published MD5) served a different archive: clear error, nothing left behind."""
    server.files["/records/2535967/files/CIFAR-10-C.tar"] = _cifar_c_tar()
    with pytest.raises(ValueError, match="checksum mismatch.*56bf5dcef84df0e2308c6dcbcbbd8499.*removed"):
        ensure_source("cifar10-c", root=tmp_path, download=True, progress=False, mirror=server.url)
    staging = tmp_path / ".aprkit-downloads-CIFAR-10-C"
    assert {p.name for p in staging.glob("CIFAR-10-C.tar*")} == {"CIFAR-10-C.tar.lock"}  # the empty lock file stays
    assert not (tmp_path / "CIFAR-10-C" / MARKER).exists()


def test_interrupted_download_resumes(server, tmp_path):
    data = _cifar_c_tar("CIFAR-100-C")
    src = _local("cifar100-c", server, data)
    path = "/" + src.files[0].url.split("/", 3)[3]
    server.truncate.add(path)
    with pytest.raises(DownloadError, match="resume"):
        ensure_source(src, root=tmp_path, download=True, progress=False)
    part = tmp_path / ".aprkit-downloads-CIFAR-100-C" / "CIFAR-100-C.tar.part"
    half = part.stat().st_size
    assert 0 < half < len(data)
    got = ensure_source(src, root=tmp_path, download=True, progress=False)
    assert (got / MARKER).is_file() and (got / "labels.npy").is_file()
    assert server.requests[-1] == (path, f"bytes={half}-")  # the second request asked for the rest only


def test_download_file_resume_range(server, tmp_path):
    data = bytes(range(256)) * 64
    server.files["/f.bin"] = data
    server.truncate.add("/f.bin")
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=str(dest.name)):
        download_file(server.url + "/f.bin", dest, _md5(data), progress=False)
    half = (tmp_path / "f.bin.part").stat().st_size
    assert half == len(data) // 2
    download_file(server.url + "/f.bin", dest, _md5(data), progress=False)
    assert dest.read_bytes() == data and server.requests[-1] == ("/f.bin", f"bytes={half}-")


def test_offline_messages(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        ensure_source("cifar10-c", root=tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "CIFAR-10-C") in msg and "zenodo.org/records/2535967/files/CIFAR-10-C.tar" in msg
    assert "--download" in msg and "APRKIT_DATA" in msg
    with pytest.raises(DownloadError) as e:  # nothing listens on port 9 of 127.0.0.1
        ensure_source("cifar10-c", root=tmp_path, download=True, progress=False, mirror="http://127.0.0.1:9")
    msg = str(e.value)
    assert "http://127.0.0.1:9/records/2535967/files/CIFAR-10-C.tar" in msg and "CIFAR-10-C.tar" in msg
    assert "offline" in msg and "place it at" in msg


def test_http_and_disk_errors_are_not_reported_as_offline(server, tmp_path, monkeypatch):
    with pytest.raises(DownloadError) as e:
        download_file(server.url + "/nowhere.bin", tmp_path / "nf.bin", progress=False)
    msg = str(e.value)
    assert "answered HTTP 404" in msg and "place it at" in msg and "offline" not in msg and "resume" not in msg
    server.files["/a.bin"] = b"x" * 5000
    import builtins
    import errno as errno_mod

    real_open = builtins.open

    def full_disk(path, mode="r", *a, **k):  # the part file's writes fail as on a full disk
        f = real_open(path, mode, *a, **k)
        if str(path).endswith(".part") and "b" in mode and ("w" in mode or "a" in mode):
            class Full:
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    f.close()

                def write(self, chunk):
                    raise OSError(errno_mod.ENOSPC, "No space left on device")
            return Full()
        return f

    monkeypatch.setattr(builtins, "open", full_disk)
    with pytest.raises(DownloadError) as e:
        download_file(server.url + "/a.bin", tmp_path / "a.bin", progress=False)
    monkeypatch.undo()
    msg = str(e.value)
    assert "No space left on device" in msg and "free space" in msg and "offline" not in msg


def test_tinyimagenet_c_archive_placed_by_hand_is_used_offline(tmp_path):
    """Offline, the record's checksum cannot be read: the error says where the archive goes, and an archive placed
    there is then extracted without it (with a warning)."""
    with pytest.raises(DownloadError, match=r"offline, download https://zenodo\.org/records/2536630/files/Tiny-ImageNet"
                                            r"-C\.tar elsewhere and place it at .*\.aprkit-downloads-Tiny-ImageNet-C"):
        ensure_source("tinyimagenet-c", root=tmp_path, download=True, progress=False, mirror="http://127.0.0.1:9")
    staged = tmp_path / ".aprkit-downloads-Tiny-ImageNet-C"
    staged.mkdir(exist_ok=True)
    members = {f"Tiny-ImageNet-C/{c}/{s}/n01443537/test_{s}.JPEG": b"" for c in BENCHMARK_CORRUPTIONS for s in range(1, 6)}
    (staged / "Tiny-ImageNet-C.tar").write_bytes(_tar(members))
    with pytest.warns(RuntimeWarning, match="without the published checksum"):
        path = ensure_source("tinyimagenet-c", root=tmp_path, download=True, progress=False, mirror="http://127.0.0.1:9")
    assert (path / "fog" / "3" / "n01443537").is_dir() and (path / MARKER).is_file()


def test_tinyimagenet_c_checksum_from_zenodo_record(server, tmp_path):
    members = {f"Tiny-ImageNet-C/{c}/{s}/n01443537/test_{s}.JPEG": b"" for c in BENCHMARK_CORRUPTIONS for s in range(1, 6)}
    data = _tar(members)
    server.files["/records/2536630/files/Tiny-ImageNet-C.tar"] = data
    server.files["/api/records/2536630"] = json.dumps(
        {"files": [{"key": "Tiny-ImageNet-C.tar", "checksum": f"md5:{_md5(data)}"}]}).encode()
    path = ensure_source("tinyimagenet-c", root=tmp_path, download=True, progress=False, mirror=server.url)
    assert (path / "fog" / "3" / "n01443537").is_dir() and (path / MARKER).is_file()


def test_tinyimagenet_c_staged_archive_needs_no_network(server, tmp_path):
    """The record's MD5 is kept beside the staged archive: an offline rerun (interrupted extraction, kept archives)
    checks the archive against it instead of asking Zenodo again."""
    members = {f"Tiny-ImageNet-C/{c}/{s}/n01443537/test_{s}.JPEG": b"" for c in BENCHMARK_CORRUPTIONS for s in range(1, 6)}
    data = _tar(members)
    server.files["/records/2536630/files/Tiny-ImageNet-C.tar"] = data
    server.files["/api/records/2536630"] = json.dumps(
        {"files": [{"key": "Tiny-ImageNet-C.tar", "checksum": f"md5:{_md5(data)}"}]}).encode()
    path = ensure_source("tinyimagenet-c", root=tmp_path, download=True, progress=False, mirror=server.url,
                         keep_archives=True)
    staged = tmp_path / ".aprkit-downloads-Tiny-ImageNet-C"
    assert (staged / "Tiny-ImageNet-C.tar.md5").read_text().split() == [_md5(data), server.url + "/api/records"]
    for p in sorted(path.rglob("*"), reverse=True):  # the extracted layout is gone, the archive stays
        p.unlink() if p.is_file() else p.rmdir()
    path.rmdir()
    server.files.clear()  # the mirror now answers nothing (404): offline as far as these files go
    again = ensure_source("tinyimagenet-c", root=tmp_path, download=True, progress=False, mirror=server.url)
    assert again == path and (path / "fog" / "3" / "n01443537").is_dir() and (path / MARKER).is_file()


def test_tinyimagenet_c_kept_checksum_is_dropped_on_a_mismatch_and_refetched_when_damaged(server, tmp_path):
    members = {f"Tiny-ImageNet-C/{c}/{s}/n01443537/test_{s}.JPEG": b"" for c in BENCHMARK_CORRUPTIONS for s in range(1, 6)}
    data = _tar(members)
    server.files["/records/2536630/files/Tiny-ImageNet-C.tar"] = data
    record = "/api/records/2536630"
    server.files[record] = json.dumps({"files": [{"key": "Tiny-ImageNet-C.tar", "checksum": "md5:" + "0" * 32}]}).encode()
    with pytest.raises(ValueError, match="checksum mismatch"):  # the record served a wrong MD5
        ensure_source("tinyimagenet-c", root=tmp_path, download=True, progress=False, mirror=server.url)
    staged = tmp_path / ".aprkit-downloads-Tiny-ImageNet-C"
    assert not (staged / "Tiny-ImageNet-C.tar.md5").exists()  # not kept: a rerun asks the record again
    server.files[record] = json.dumps(
        {"files": [{"key": "Tiny-ImageNet-C.tar", "checksum": f"md5:{_md5(data)}"}]}).encode()
    staged.mkdir(exist_ok=True)
    (staged / "Tiny-ImageNet-C.tar.md5").write_bytes(b"\xff\xfe damaged")  # unreadable: asked for again
    path = ensure_source("tinyimagenet-c", root=tmp_path, download=True, progress=False, mirror=server.url)
    assert (path / MARKER).is_file()
    assert sum(p == record for p, _ in server.requests) == 2


def test_a_folder_layout_missing_severities_is_incomplete_and_download_fills_it(server, tmp_path):
    """A Tiny-ImageNet-C copy without fog/5 (or with fewer class folders in one severity: an interrupted copy) was
    marked complete, and download=True fetched nothing (data tester): the layout check reads severities 1-5."""
    from aprkit.data.catalog import SOURCES as CATALOG

    members = {f"Tiny-ImageNet-C/{c}/{s}/{w}/test_{s}.JPEG": b"" for c in BENCHMARK_CORRUPTIONS for s in range(1, 6)
               for w in ("n01443537", "n01629819")}
    data = _tar(members)
    server.files["/records/2536630/files/Tiny-ImageNet-C.tar"] = data
    server.files["/api/records/2536630"] = json.dumps(
        {"files": [{"key": "Tiny-ImageNet-C.tar", "checksum": f"md5:{_md5(data)}"}]}).encode()
    path = ensure_source("tinyimagenet-c", root=tmp_path, download=True, progress=False, mirror=server.url)
    check = CATALOG["tinyimagenet-c"].check
    assert check(path) is None
    (path / "fog" / "3" / ".ipynb_checkpoints").mkdir()  # hidden: no class folder to the reader, nor to the check
    assert check(path) is None
    for p in sorted((path / "fog" / "5").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (path / "fog" / "5").rmdir()
    assert check(path) == "missing (or without class folders) the severity folders fog/5 (1 of 75)"
    (path / "contrast" / "2" / "n01629819" / "test_2.JPEG").unlink()
    (path / "contrast" / "2" / "n01629819").rmdir()
    assert "fog/5" in check(path)
    again = ensure_source("tinyimagenet-c", root=tmp_path, download=True, progress=False, mirror=server.url)
    assert again == path and check(path) is None and (path / "fog" / "5" / "n01443537").is_dir()
    (path / "contrast" / "2" / "n01629819" / "test_2.JPEG").unlink()
    (path / "contrast" / "2" / "n01629819").rmdir()
    assert check(path) == ("severity folders holding different numbers of class folders (1, 2): an interrupted "
                           "extraction or copy")


def test_a_cifar_c_root_with_the_15_benchmark_corruptions_is_complete(tmp_path):
    """Only the 4 extra corruptions missing: the root was "not found" (and a download re-fetched 2.9 GB; data tester);
    it is complete for the benchmark, and an extra one asked for is named as missing by the reader."""
    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    np.save(root / "labels.npy", np.zeros(10, dtype=np.int64))
    for c in BENCHMARK_CORRUPTIONS:
        np.save(root / f"{c}.npy", np.zeros((10, 4, 4, 3), dtype=np.uint8))
    assert ensure_source("cifar10-c", root=tmp_path) == root
    assert len(get_dataset("cifar10-c", corruption="fog", severity=1, data_root=tmp_path)) == 2
    with pytest.raises(FileNotFoundError, match="speckle_noise.npy is missing"):
        get_dataset("cifar10-c", corruption="speckle_noise", severity=1, data_root=tmp_path)


def test_imagenet_c_four_archives_merge(server, tmp_path):
    fam = {"noise": BENCHMARK_CORRUPTIONS[:3], "blur": BENCHMARK_CORRUPTIONS[3:7],
           "weather": BENCHMARK_CORRUPTIONS[7:11], "digital": BENCHMARK_CORRUPTIONS[11:]}
    files = []
    for f in SOURCES["imagenet-c"].files:
        data = _tar({f"{c}/{s}/n01440764/x.JPEG": b"" for c in fam[f.name[:-4]] for s in range(1, 6)})
        path = "/" + f.url.split("/", 3)[3]
        server.files[path] = data
        files.append(RemoteFile(server.url + path, f.name, _md5(data)))
    src = dataclasses.replace(SOURCES["imagenet-c"], files=tuple(files))
    path = ensure_source(src, root=tmp_path, download=True, progress=False)
    assert sorted(p.name for p in path.iterdir() if p.is_dir()) == sorted(BENCHMARK_CORRUPTIONS)


def test_cue_conflict_from_repo_archive(server, tmp_path):
    (src_file,) = SOURCES["cue-conflict"].files
    inner = SOURCES["cue-conflict"].inner
    buf = io.BytesIO()
    cats = CUE_CONFLICT_CATEGORIES
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(inner.split("/")[0] + "/README.md", "repo")
        for i, shape in enumerate(cats):
            for k in range(80):
                zf.writestr(f"{inner}/{shape}/{shape}{k + 1}-{cats[(i + k) % 16]}{k + 1}.png", b"")
    src = _local("cue-conflict", server, buf.getvalue())
    path = ensure_source(src, root=tmp_path, download=True, progress=False)
    assert path == tmp_path / "cue-conflict" and len(list(path.glob("*/*.png"))) == 1280
    assert not (tmp_path / "cue-conflict" / "README.md").exists()


def test_completing_a_folder_in_place_keeps_the_users_own_files(server, tmp_path):
    """An incomplete folder completed by a download keeps the files it held besides the archive's (a user's own
    stimulus, which the layout check then names): the archive's files are moved in folder by folder (same-named
    folders were deleted whole, silently)."""
    (src_file,) = SOURCES["cue-conflict"].files
    inner = SOURCES["cue-conflict"].inner
    cats = CUE_CONFLICT_CATEGORIES
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, shape in enumerate(cats):
            for k in range(80):
                zf.writestr(f"{inner}/{shape}/{shape}{k + 1}-{cats[(i + k) % 16]}{k + 1}.png", b"new")
    src = _local("cue-conflict", server, buf.getvalue())
    mine = tmp_path / "mine"
    (mine / "cat").mkdir(parents=True)
    (mine / "cat" / "cat99-dog99.png").write_bytes(b"own")
    (mine / "cat" / "cat1-cat1.png").write_bytes(b"old")  # a published name: the archive's file replaces it
    with pytest.raises(ValueError, match="1281 stimuli instead of the published 1,280"):  # named, not deleted
        ensure_source(src, mine, download=True, progress=False)
    assert len(list(mine.glob("*/*-*.png"))) == 1281
    assert (mine / "cat" / "cat99-dog99.png").read_bytes() == b"own"
    assert (mine / "cat" / "cat1-cat1.png").read_bytes() == b"new"


def test_download_file_refuses_a_folder_dest_and_a_non_url_before_fetching(tmp_path):
    """A folder as dest (it was fetched whole, then os.replace failed, leaving the .part) and a text that is no URL
    are named before any request."""
    with pytest.raises(IsADirectoryError, match="dest is a folder; expected the path of the file"):
        download_file("http://127.0.0.1:9/x.tar", tmp_path, progress=False)
    with pytest.raises(ValueError, match="url must be an http"):
        download_file("notaurl", tmp_path / "x", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_extract_refuses_paths_outside(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(_tar({"../evil.txt": b"x"}))
    with pytest.raises(ValueError, match="outside"):
        extract_archive(bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "evil.txt").exists()


def test_unknown_source_and_existing_layout(tmp_path):
    with pytest.raises(ValueError, match="unknown data source 'cifar10c'.*cifar10-c"):
        ensure_source("cifar10c", root=tmp_path)
    folder = tmp_path / "mine"
    folder.mkdir()
    for c in ALL_CORRUPTIONS + ("labels",):
        np.save(folder / f"{c}.npy", np.zeros(5, dtype=np.int64))
    assert resolve_spec(f"cifar10-c:{folder}", download=True) == f"cifar10-c:{folder}"  # complete: kept, no network
    assert (folder / MARKER).is_file()


def _png_cue_conflict_zip(inner: str) -> bytes:
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(png, format="PNG")
    buf = io.BytesIO()
    cats = CUE_CONFLICT_CATEGORIES
    with zipfile.ZipFile(buf, "w") as zf:
        for i, shape in enumerate(cats):
            for k in range(80):
                zf.writestr(f"{inner}/{shape}/{shape}{k + 1}-{cats[(i + k) % 16]}{k + 1}.png", png.getvalue())
    return buf.getvalue()


def test_cli_eval_download(server, tmp_path, monkeypatch, capsys):
    """`aprkit eval --download --data-root DIR`: a rootless spec is fetched once, then found; missing data without
    --download and an unreachable server give one clear line each."""
    import aprkit.data.sources as sources
    from aprkit.cli import main

    original = SOURCES["cue-conflict"]
    src = _local("cue-conflict", server, _png_cue_conflict_zip(original.inner))
    monkeypatch.setitem(sources.SOURCES, "cue-conflict", src)
    argv = ["eval", "--model", "resnet20", "--random-init", "--num-classes", "16", "--suite", "shape-bias",
            "--data", "shape-bias=cue-conflict", "--device", "cpu", "--no-progress", "--data-root", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cue-conflict not found at" in err and "--download" in err and str(tmp_path / "cue-conflict") in err
    assert main(argv + ["--download"]) == 0, capsys.readouterr().err
    assert (tmp_path / "cue-conflict" / MARKER).is_file()
    n = len(server.requests)
    assert main(argv + ["--download"]) == 0 and len(server.requests) == n  # complete: not fetched again
    monkeypatch.setitem(sources.SOURCES, "cue-conflict", original)
    monkeypatch.setenv("APRKIT_DOWNLOAD_MIRROR", "http://127.0.0.1:9")
    capsys.readouterr()
    assert main(argv[:-1] + [str(tmp_path / "other"), "--download"]) == 2
    err = capsys.readouterr().err
    assert "could not download http://127.0.0.1:9/rgeirhos/texture-vs-shape/archive/" in err and "offline" in err


def test_archive_cut_short_without_length_or_checksum_is_fetched_again(server, tmp_path):
    """A server that sends no Content-Length and closes early leaves a short archive that looks complete; without a
    published checksum only the extraction can tell: the archive is then removed, and the next run succeeds."""
    (src_file,) = SOURCES["cue-conflict"].files
    inner = SOURCES["cue-conflict"].inner
    buf = io.BytesIO()
    cats = CUE_CONFLICT_CATEGORIES
    with zipfile.ZipFile(buf, "w") as zf:
        for i, shape in enumerate(cats):
            for k in range(80):
                zf.writestr(f"{inner}/{shape}/{shape}{k + 1}-{cats[(i + k) % 16]}{k + 1}.png", b"x" * 64)
    src = _local("cue-conflict", server, buf.getvalue())
    src = dataclasses.replace(src, files=(dataclasses.replace(src.files[0], md5=None),))  # as published: no MD5
    server.no_length.add("/" + src.files[0].url.split("/", 3)[3])
    with pytest.raises(ValueError, match="could not be extracted.*removed, run again"):
        ensure_source(src, root=tmp_path, download=True, progress=False)
    path = ensure_source(src, root=tmp_path, download=True, progress=False)
    assert len(list(path.glob("*/*.png"))) == 1280


def test_resume_restarts_when_the_server_answers_from_another_offset(server, tmp_path):
    data = bytes(range(256)) * 40
    server.files["/f.bin"] = data
    server.truncate.add("/f.bin")
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="resume"):  # leaves a part and the file's ETag beside it
        download_file(server.url + "/f.bin", dest, None, progress=False)
    server.offset_zero.add("/f.bin")
    download_file(server.url + "/f.bin", dest, None, progress=False)  # no checksum to catch a misplaced append
    assert dest.read_bytes() == data and server.requests[-1] == ("/f.bin", f"bytes={len(data) // 2}-")


def test_zenodo_answer_that_is_not_json_is_a_download_error(server):
    from aprkit.data.download import zenodo_md5

    server.files["/api/records/1"] = b"<html>captive portal</html>"
    with pytest.raises(DownloadError, match="could not read the checksums of Zenodo record 1"):
        zenodo_md5("1", "x.tar", api=server.url + "/api/records")


def _cifar_tar(labels=(0, 1)) -> bytes:
    """The published cifar-10-python.tar.gz layout with two images per batch."""
    import gzip
    import pickle

    members = {f"cifar-10-batches-py/{n}": pickle.dumps({b"data": np.zeros((len(labels), 3072), np.uint8),
                                                         b"labels": list(labels)})
               for n in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]}
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]})
    return gzip.compress(_tar(members), mtime=0)


def test_cifar_sources_pin_the_published_archives():
    import torchvision

    for name, cls in (("cifar10", torchvision.datasets.CIFAR10), ("cifar100", torchvision.datasets.CIFAR100)):
        (f,) = SOURCES[name].files
        assert (f.url, f.name, f.md5) == (cls.url, cls.filename, cls.tgz_md5)


def test_cifar_download_resumes_checks_and_honours_progress(server, tmp_path, monkeypatch, capsys):
    """CIFAR comes through the one download path: a cut connection resumes with a Range request, the published
    checksum is checked, progress=False prints no bar, and the classes come from the archive's meta file."""
    from aprkit.data.cifar import cifar_dataset
    from aprkit.data.sources import MIRROR_ENV

    data = _cifar_tar()
    monkeypatch.setenv(MIRROR_ENV, server.url)
    server.files["/~kriz/cifar-10-python.tar.gz"] = data  # the published checksum: another archive is refused
    with pytest.raises(ValueError, match="checksum mismatch.*c58f30108f718f92721af3b95e74349a.*removed"):
        cifar_dataset(tmp_path, download=True, progress=False)
    monkeypatch.setitem(SOURCES, "cifar10", _local("cifar10", server, data))
    path = "/~kriz/cifar-10-python.tar.gz"
    server.truncate.add(path)
    with pytest.raises(DownloadError, match=r"resume.*extract cifar-10-python\.tar\.gz by hand into"):
        cifar_dataset(tmp_path, download=True, progress=False)
    ds = cifar_dataset(tmp_path, "cifar10", "train", download=True, progress=False)
    assert server.requests[-1][0] == path and server.requests[-1][1] not in (None, "bytes=0-")  # resumed
    assert len(ds) == 10 and ds.classes[:2] == ["c0", "c1"] and capsys.readouterr().err == ""
    assert (tmp_path / "cifar-10-batches-py" / MARKER).is_file() and not list(tmp_path.glob(".aprkit-downloads-*/*"))
    n = len(server.requests)
    assert len(cifar_dataset(tmp_path, download=True, progress=False)) == 2 and len(server.requests) == n  # kept


def test_a_folder_holding_the_split_asked_for_is_read_without_downloading(tmp_path, monkeypatch):
    """A test-only copy of the batches (common on evaluation machines) is read as it is with download=True."""
    import pickle

    from aprkit.data.cifar import cifar_dataset
    from aprkit.data.sources import MIRROR_ENV

    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # any download attempt fails
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 2]}))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    assert len(cifar_dataset(tmp_path, download=True, progress=False)) == 3
    with pytest.raises(DownloadError):  # the train split is not there: fetched
        cifar_dataset(tmp_path, "cifar10", "train", download=True, progress=False)


def test_cifar_download_offline_is_a_download_error(tmp_path, monkeypatch):
    from aprkit.data.cifar import cifar_dataset
    from aprkit.data.sources import MIRROR_ENV

    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(DownloadError, match=r"could not download http://127\.0\.0\.1:9/~kriz/cifar-10-python\.tar\.gz "
                                            r".*offline.*asked of the mirror http://127\.0\.0\.1:9 "
                                            r"\(\$APRKIT_DOWNLOAD_MIRROR or mirror=\); unset it to fetch "
                                            r"https://www\.cs\.toronto\.edu/~kriz/cifar-10-python\.tar\.gz itself"
                                            r".*extract cifar-10-python\.tar\.gz by hand into"):
        cifar_dataset(tmp_path, download=True, progress=False)


def test_a_link_to_a_missing_folder_is_refused_before_anything_is_fetched(tmp_path, monkeypatch):
    """A data folder linked to a disk not mounted: the download fetched everything, then failed on the link with a
    bare FileExistsError and left the extracted tree hidden in the staging folder."""
    from aprkit.data.cifar import cifar_dataset
    from aprkit.data.sources import MIRROR_ENV

    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # nothing may be asked for
    (tmp_path / "cifar-10-batches-py").symlink_to(tmp_path / "unmounted" / "cifar")
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py is a link to .*unmounted/cifar, which does not "
                                                r"exist \(a disk not mounted\?\)"):
        cifar_dataset(tmp_path, download=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]


def test_a_lock_waited_on_is_named_and_a_lock_file_works_for_other_users(tmp_path, monkeypatch, capsys):
    """A lock held elsewhere (another machine's download on a file system without flock, a killed one's soft lock)
    was waited on forever without a word; the lock file is made readable and writable by all (a shared data root's
    next user got a bare PermissionError on it); one that is not is named with what to do."""
    import os
    import stat
    import threading

    import filelock

    from aprkit.data import download

    monkeypatch.setattr(download, "_LOCK_NOTICE_S", 0.2)
    held, done = threading.Event(), threading.Event()

    def hold() -> None:  # another thread holds it for a second (filelock refuses a wait in the holder's thread)
        with download.file_lock(tmp_path / "x"):
            held.set()
            done.wait(1.0)

    holding = threading.Thread(target=hold)
    holding.start()
    held.wait()
    assert stat.S_IMODE(os.stat(tmp_path / "x.lock").st_mode) == 0o666
    with pytest.raises(filelock.Timeout):  # a timeout given is the caller's: no notice
        download.file_lock(tmp_path / "x").acquire(timeout=0)
    assert capsys.readouterr().err == ""
    with download.file_lock(tmp_path / "x"):  # waits for the holder, saying so once
        pass
    holding.join()
    assert capsys.readouterr().err.count("aprkit: waiting for the lock") == 1
    with download.file_lock(tmp_path / "x"):  # a free lock: no word
        pass
    assert capsys.readouterr().err == ""

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    other = download.file_lock(tmp_path / "y")
    monkeypatch.setattr(other._lock, "_acquire", refuse)
    (tmp_path / "y.lock").touch()
    with pytest.raises(PermissionError, match=rf"cannot open the lock file .*y\.lock \(Permission denied\): uid "
                                              rf"{os.getuid()} made it .*delete it \(it holds nothing\)"):
        with other:
            pass


def test_get_dataset_and_eval_download_reach_the_cifar_reader(tmp_path, monkeypatch, capsys):
    """The missing-CIFAR error says download=True / --download fetch it; get_dataset kept download from the reader
    and aprkit eval --download from CIFAR specs, so neither fetched anything."""
    from aprkit.cli import main
    from aprkit.data.sources import MIRROR_ENV

    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")
    with pytest.raises(DownloadError, match="could not download http://127.0.0.1:9/~kriz"):
        get_dataset(f"cifar10:{tmp_path}", download=True, progress=False)
    with pytest.raises(FileNotFoundError, match=r"get_dataset\(\.\.\., download=True\) or `aprkit eval \.\.\. --download`"):
        get_dataset(f"cifar10:{tmp_path}")
    assert main(["eval", "--model", "resnet20", "--random-init", "--data", f"cifar10:{tmp_path}", "--download",
                 "--device", "cpu", "--no-progress"]) == 2
    assert "could not download http://127.0.0.1:9/~kriz" in capsys.readouterr().err


def test_parallel_cifar_downloads_fetch_once_and_never_read_a_half_extracted_folder(server, tmp_path, monkeypatch):
    """Parallel readers with download=True (torchrun ranks, jobs sharing a folder) take turns: one downloads, the
    others wait and read the whole folder (a reader without download=True may see a folder being filled: its missing
    batch is named); a truncated batch file is named with what to do."""
    import threading
    import time

    from aprkit.data.cifar import cifar_dataset

    monkeypatch.setitem(SOURCES, "cifar10", _local("cifar10", server, _cifar_tar()))
    server.delay = 0.05  # a slow server: the others arrive while the first one downloads
    results, errors = [], []

    def read() -> None:
        try:
            results.append(len(cifar_dataset(tmp_path, download=True, progress=False)))
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert errors == [] and results == [2, 2, 2] and len(server.requests) == 1
    named = tmp_path / "named" / "cifar-10-batches-py"
    assert len(cifar_dataset(named, download=True, progress=False)) == 2  # root names the folder
    assert len(server.requests) == 2 and not (named / "cifar-10-batches-py").exists()
    assert not (tmp_path / "named" / ".aprkit-downloads-cifar-10-batches-py").exists()
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:20])
    with pytest.raises(ValueError, match=r"test_batch is not a readable CIFAR batch .*delete .*cifar-10-batches-py"):
        cifar_dataset(tmp_path)


def test_an_unwritable_folder_is_named_when_its_lock_cannot_be_made(tmp_path, monkeypatch):
    from aprkit.data.download import file_lock

    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    lock = file_lock(tmp_path / "x")
    assert not (tmp_path / "x.lock").exists()  # made by filelock on acquire only: its soft locks wait on any file
    with lock:
        pass
    import os

    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(PermissionError, match=r"cannot create the lock file .*y\.lock \(Permission denied\): the "
                                              r"folder must be writable.*--data-root or \$APRKIT_DATA"):
        file_lock(tmp_path / "y")
    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(PermissionError, match=r"cannot create the folder of the lock file .*x\.lock"):
        file_lock(tmp_path / "sub" / "x")


def test_unverified_archive_of_another_layout_is_removed_so_the_next_run_fetches_it_again(server, tmp_path):
    """An archive without a published checksum that holds another layout (another commit's zip) was kept in the staging
    folder and taken as finished on every later run: a fixed server never helped. It is removed, and the error says so."""
    inner = SOURCES["cue-conflict"].inner
    cats = CUE_CONFLICT_CATEGORIES

    def repo_zip(top: str) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for i, shape in enumerate(cats):
                for k in range(80):
                    zf.writestr(f"{top}/{shape}/{shape}{k + 1}-{cats[(i + k) % 16]}{k + 1}.png", b"x")
        return buf.getvalue()

    src = _local("cue-conflict", server, repo_zip("texture-vs-shape-master/stimuli/style-transfer-preprocessed-512"))
    src = dataclasses.replace(src, files=(dataclasses.replace(src.files[0], md5=None),))  # as published: no MD5
    with pytest.raises(ValueError, match=r"hold no folder.*no published checksum and were removed.*afresh"):
        ensure_source(src, root=tmp_path, download=True, progress=False)
    assert not list((tmp_path / ".aprkit-downloads-cue-conflict").glob("*.zip"))
    server.files["/" + src.files[0].url.split("/", 3)[3]] = repo_zip(inner)  # the server now has the right file
    path = ensure_source(src, root=tmp_path, download=True, progress=False)
    assert len(list(path.glob("*/*.png"))) == 1280


def test_offline_error_names_a_placed_file_that_fails_the_checksum(tmp_path):
    dest = tmp_path / "CIFAR-10-C.tar"
    dest.write_bytes(b"not the archive")
    with pytest.raises(DownloadError, match=r"the file already at .*CIFAR-10-C\.tar does not match the published MD5"):
        download_file("http://127.0.0.1:9/CIFAR-10-C.tar", dest, md5="0" * 32, progress=False, timeout=2)


def test_not_found_hint_names_the_folder_inside_the_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"the contents of the archive's folder texture-vs-shape-ccd0c01"):
        ensure_source("cue-conflict", root=tmp_path)


def test_get_dataset_names_data_root_when_given_root(tmp_path):
    from aprkit.data import get_dataset

    with pytest.raises(TypeError, match="data_root="):
        get_dataset("cue-conflict", root=tmp_path, download=True)


def test_an_unchecked_archive_placed_before_the_run_is_named_not_deleted(server, tmp_path):
    """Offline, a hand-placed archive without a checksum is used as it is; refused, it was deleted (gigabytes, and no
    download could replace it offline). It is kept and named."""
    src = _local("cue-conflict", server, b"")
    src = dataclasses.replace(src, files=(dataclasses.replace(src.files[0], md5=None),))
    staged = tmp_path / ".aprkit-downloads-cue-conflict" / src.files[0].name
    staged.parent.mkdir(parents=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("other-layout/x.png", b"x")
    staged.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=r"already there \(not downloaded by this run, no checksum\).*replace or delete"):
        ensure_source(src, root=tmp_path, download=True, progress=False)
    assert staged.is_file()


def test_a_stalled_download_keeps_the_bytes_that_arrived(server, tmp_path):
    """Bytes arrive in pieces; 1 MiB reads lost every byte of the piece being read when the server stalled past the
    timeout. Now each piece is written as it arrives, so the rerun resumes from all of them (tester)."""
    data = bytes(range(256)) * 768  # 192 KiB: three of the server's 64 KiB pieces
    server.files["/s.bin"] = data
    server.delay = 1.5
    dest = tmp_path / "s.bin"
    with pytest.raises(DownloadError):
        download_file(server.url + "/s.bin", dest, _md5(data), progress=False, timeout=0.5)
    assert (tmp_path / "s.bin.part").stat().st_size == 1 << 16
    server.delay = 0.0
    download_file(server.url + "/s.bin", dest, _md5(data), progress=False)
    assert dest.read_bytes() == data and server.requests[-1] == ("/s.bin", f"bytes={1 << 16}-")
