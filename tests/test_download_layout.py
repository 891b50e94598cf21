"""Where downloaded data lands and what an archive may leave there: a data folder that is a link to another disk,
a user's linked sub-folder, links in an archive that would point outside the folder once moved, a tar cut short
between members, an archive placed by hand that cannot be read, a mirror that is not a URL; what a failed download
says: every file still to place by hand with its MD5, a read-only disk as such. Served from 127.0.0.1."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from http_common import LocalServer, server_fixture  # noqa: F401 (server_fixture: the fixture ``server``)
from test_download import _tar

import aprkit.data.sources as sources
from aprkit.data.archives import UnreadableArchive, extract_archive
from aprkit.data.download import DownloadError, download_file, file_lock
from aprkit.data.sources import MARKER, RemoteFile, Source, ensure_source


def _source(server: LocalServer, data: bytes, md5: bool = True) -> Source:
    server.files["/d.tar"] = data
    check = sources.check_files(("b.txt", "sub/a.txt"))
    return Source("d", "D", (RemoteFile(server.url + "/d.tar", "d.tar", hashlib.md5(data).hexdigest() if md5 else None),),
                  "D", check)


DATA = {"D/b.txt": b"b", "D/sub/a.txt": b"a"}


def test_a_data_folder_linked_to_another_disk_is_filled_there(server, tmp_path, monkeypatch):
    """The archives are staged beside the folder the link points to (on its disk), and a move that crosses file
    systems copies (a raw EXDEV from os.replace before, the data left on the small disk)."""
    disk = tmp_path / "disk2" / "D"
    disk.mkdir(parents=True)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "D").symlink_to(disk)
    rename = os.rename

    def cross_device(a, b, *k, **kw):  # every rename of the merge crosses file systems
        if "extracted" in str(a):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return rename(a, b, *k, **kw)

    staged = []

    def extract(archive, dest, **kw):
        staged.append(dest)
        return extract_archive(archive, dest, **kw)

    monkeypatch.setattr(os, "rename", cross_device)
    monkeypatch.setattr(os, "replace", cross_device)
    monkeypatch.setattr(sources, "extract_archive", extract)
    out = ensure_source(_source(server, _tar(DATA)), root=tmp_path / "root", download=True, progress=False)
    assert staged == [disk.parent / ".aprkit-downloads-D" / "extracted"]
    assert (disk / "sub" / "a.txt").read_bytes() == b"a" and (out / MARKER).is_file()
    assert not (tmp_path / "root" / ".aprkit-downloads-D").exists() and not (disk.parent / ".aprkit-downloads-D").exists()


def test_a_linked_sub_folder_is_merged_into(server, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "own.txt").write_text("kept")
    (tmp_path / "D").mkdir()
    (tmp_path / "D" / "sub").symlink_to(mine)
    ensure_source(_source(server, _tar(DATA)), root=tmp_path, download=True, progress=False)
    assert (tmp_path / "D" / "sub").is_symlink() and (mine / "a.txt").read_bytes() == b"a"
    assert (mine / "own.txt").read_text() == "kept"


def test_a_link_that_would_point_above_the_moved_folder_is_refused(server, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    evil = _tar(DATA, links={"D/up": ".."})
    with pytest.raises(ValueError, match="a link 'D/up' to '..' outside the extraction folder"):
        ensure_source(_source(server, evil), root=tmp_path, download=True, progress=False)
    assert not (tmp_path / "D" / "up").exists()
    archive = tmp_path / "evil.tar"
    archive.write_bytes(evil)
    assert (extract_archive(archive, tmp_path / "x", progress=False) / "D" / "up").is_symlink()  # inside the folder
    ok = tmp_path / "ok.tar"
    ok.write_bytes(_tar(DATA, links={"D/sub/b": "../b.txt", "D/c": "sub/a.txt"}))
    assert (extract_archive(ok, tmp_path / "y", progress=False, links_within="D") / "D/sub/b").read_bytes() == b"b"
    back = tmp_path / "back.tar"  # out and back in by the folder's name, which it loses once moved
    back.write_bytes(_tar(DATA, links={"D/sub/b": "../../D/b.txt"}))
    with pytest.raises(ValueError, match="a link 'D/sub/b' to '../../D/b.txt' outside the extraction folder 'D'"):
        extract_archive(back, tmp_path / "z", progress=False, links_within="D")


def test_a_tar_cut_short_between_members_is_unreadable(tmp_path):
    """tarfile takes the end of the file after a member as the end of the archive: a copy cut short there passed
    as complete and was marked so with files missing."""
    cut = tmp_path / "cut.tar"
    cut.write_bytes(_tar(DATA, end=False))
    with pytest.raises(UnreadableArchive, match="without tar's end-of-archive block"):
        extract_archive(cut, tmp_path / "out", progress=False)
    assert (extract_archive(cut, tmp_path / "unchecked", progress=False, check_end=False) / "D" / "b.txt").is_file()
    whole = tmp_path / "whole.tar.gz"
    with tarfile.open(whole, "w:gz") as tf:
        tf.add(cut, arcname="cut.tar")
    assert (extract_archive(whole, tmp_path / "gz", progress=False) / "cut.tar").is_file()


def test_an_unchecked_archive_placed_by_hand_is_kept_and_named(server, tmp_path):
    """No published checksum and already in the staging folder (placed by hand, offline): an archive that cannot be
    read is named, not deleted as a download cut short is."""
    src = _source(server, _tar(DATA), md5=False)
    staging = tmp_path / ".aprkit-downloads-D"
    staging.mkdir()
    (staging / "d.tar").write_bytes(_tar(DATA, end=False))
    with pytest.raises(ValueError, match=r"already there \(not downloaded by this run, no checksum\)"):
        ensure_source(src, root=tmp_path, download=True, progress=False)
    assert (staging / "d.tar").is_file() and server.requests == []
    shutil.rmtree(staging)
    server.files["/d.tar"] = _tar(DATA, end=False)  # downloaded by this run: removed, fetched afresh next time
    with pytest.raises(ValueError, match="was removed"):
        ensure_source(src, root=tmp_path, download=True, progress=False)
    assert not (staging / "d.tar").exists()
    assert not (staging / "extracted").exists()  # its half-extracted files are not left hidden there either


def test_a_merge_to_another_disk_never_leaves_a_cut_file_under_a_published_name(tmp_path, monkeypatch):
    """Across file systems shutil.move copied into the published name: a merge stopped mid-copy left b.bin cut short,
    which the layout check (names only) passed and marked complete (writer tester). Each file is now copied under a
    hidden temporary name and renamed when whole."""
    from aprkit.data.archives import merge_tree

    inner = tmp_path / "x" / "D"
    (inner / "sub").mkdir(parents=True)
    (inner / "b.bin").write_bytes(b"b" * 1000)
    (inner / "sub" / "a.bin").write_bytes(b"a" * 10)
    real_replace = os.replace

    def other_disk(src, dst):
        if str(tmp_path / "x") in str(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst)

    def cut_copy(src, dst, **kw):
        Path(dst).write_bytes(Path(src).read_bytes()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", other_disk)
    monkeypatch.setattr(shutil, "copy2", cut_copy)
    target = tmp_path / "target"
    with pytest.raises(KeyboardInterrupt):
        merge_tree(inner, target)
    published = [p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()]
    assert all(name.split("/")[-1].startswith(".") for name in published)  # only a hidden part file, nothing cut
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", other_disk)
    merge_tree(inner, target)
    assert (target / "b.bin").read_bytes() == b"b" * 1000 and (target / "sub" / "a.bin").read_bytes() == b"a" * 10
    assert not (inner / "b.bin").exists()


def test_a_mirror_that_is_not_a_url_names_its_setting(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.MIRROR_ENV, "127.0.0.1:8000/data")
    with pytest.raises(FileNotFoundError, match="Pass download=True"):  # offline lookups are not its business
        ensure_source("cifar10-c", root=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"\$APRKIT_DOWNLOAD_MIRROR must be a URL .* got '127.0.0.1:8000/data'"):
        ensure_source("cifar10-c", root=tmp_path, download=True, progress=False)
    with pytest.raises(ValueError, match="^mirror must be a URL"):
        ensure_source("cifar10-c", root=tmp_path, download=True, progress=False, mirror="host/x")


def test_staging_stays_beside_a_link_whose_target_parent_is_not_writable(tmp_path, monkeypatch):
    disk = tmp_path / "ro" / "D"
    disk.mkdir(parents=True)
    (tmp_path / "D").symlink_to(disk)
    writable = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(disk.parent) else writable(p, mode))
    assert sources._staging(tmp_path / "D") == tmp_path / ".aprkit-downloads-D"
    monkeypatch.setattr(os, "access", writable)
    assert sources._staging(tmp_path / "D") == disk.parent / ".aprkit-downloads-D"


def test_a_folder_written_by_aprkit_corrupt_is_not_completed_by_a_download(server, tmp_path):
    """Completing a folder that ``aprkit corrupt`` wrote replaced its arrays with the published 5-severity ones but
    kept its manifest, which the reader trusts: cifar_c then sliced the published arrays by the manifest's severities
    (silently wrong rows). Now the download is refused before anything is fetched, and the generated set's class
    names (recorded in its manifest) come back from cifar_c (tester)."""
    import numpy as np

    from aprkit.corruptions.dataset import write_cifar_c
    from aprkit.data.corrupted import cifar_c

    folder = tmp_path / "D"
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    write_cifar_c(x, folder, ["shot_noise"], np.arange(4) % 2, severities=[2, 4], progress=False,
                  classes=["cat", "dog"])
    before = (folder / "shot_noise.npy").read_bytes()
    with pytest.raises(ValueError, match="generated by aprkit corrupt .* a download would mix the two"):
        ensure_source(_source(server, _tar(DATA)), root=tmp_path, download=True, progress=False)
    assert (folder / "shot_noise.npy").read_bytes() == before and not (folder / "b.txt").exists()
    ds = cifar_c(folder, "shot_noise", 4)
    assert len(ds) == 4 and ds.classes == ["cat", "dog"]
    assert cifar_c(folder, "shot_noise", 4, classes=["a", "b"]).classes == ["a", "b"]  # the caller's names win


def test_a_file_where_the_data_folder_goes_is_named_before_any_download(server, tmp_path):
    """A file at the data folder's path read "does not exist", and with download=True the download ran first and
    then failed with a bare FileExistsError (tester)."""
    (tmp_path / "D").write_text("not a folder")
    for download in (False, True):
        with pytest.raises(NotADirectoryError, match=r"D is a file, not a folder: d goes into a folder"):
            ensure_source(_source(server, _tar(DATA)), root=tmp_path, download=download, progress=False)
    assert not (tmp_path / ".aprkit-downloads-D").exists()


def test_an_offline_download_names_every_file_still_missing_with_its_checksum(server, tmp_path):
    """Offline, only the first of ImageNet-C's 4 archives (of the 11 decision CSVs) was named, without its MD5: one
    failed run per file placed by hand. Now the message gives each missing file's URL, path and MD5."""
    off = "http://127.0.0.1:9"  # nothing listens there
    with pytest.raises(DownloadError) as e:
        ensure_source("imagenet-c", root=tmp_path, download=True, progress=False, mirror=off)
    msg, staging = str(e.value), tmp_path / ".aprkit-downloads-ImageNet-C"
    assert f"place it at {staging / 'noise.tar'} (MD5 e80562d7f6c3f8834afb1ecf27252745)" in msg
    assert "imagenet-c needs 3 more file(s), each placed the same way" in msg
    for f in sources.SOURCES["imagenet-c"].files[1:]:
        assert f"{off}/records/2235448/files/{f.name} at {staging / f.name} (MD5 {f.md5})" in msg
    with pytest.raises(DownloadError, match=r"cue-conflict-decisions needs 10 more file\(s\)"):
        ensure_source("cue-conflict-decisions", root=tmp_path, download=True, progress=False, mirror=off)
    with pytest.raises(DownloadError, match=r"answered HTTP 404.*place it at .*nf\.bin \(MD5 a{32}\)"):
        download_file(server.url + "/nowhere.bin", tmp_path / "nf.bin", "a" * 32, progress=False)


def test_a_read_only_file_system_is_named_as_such(tmp_path, monkeypatch):
    """A read-only mount was reported as "Permission denied ... fix its permissions"."""
    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly())
    with pytest.raises(OSError, match=r"lock file .*x\.lock \(Read-only file system\): the folder is on a read-only "
                                      r"file system; choose a folder on a writable one") as e:
        file_lock(tmp_path / "x")
    assert e.value.errno == errno.EROFS and not isinstance(e.value, PermissionError)

    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(OSError, match=r"folder of the lock file .*\(Read-only file system\): the folder is on a "
                                      "read-only file system"):
        file_lock(tmp_path / "sub" / "x")
