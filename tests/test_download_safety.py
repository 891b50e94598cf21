"""Downloads that must not finish with a wrong file: stale or foreign ``.part`` files, servers answering a resume
from another offset, concurrent downloads of one file, and tar members that escape the extraction folder on
Pythons without tar's extraction filters. Served from 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from collections.abc import Callable

import pytest
from http_common import LocalServer, server_fixture  # noqa: F401 (server_fixture: the fixture ``server``)

from aprkit.data.archives import extract_archive
from aprkit.data.download import download_file
from aprkit.data.sources import MARKER, SOURCES, RemoteFile, ensure_source


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _in_two_threads(call: Callable[[], object]) -> dict[str, object]:
    """``call()`` in two threads "A" and "B" at once: what each returned, or the exception it raised."""
    results: dict[str, object] = {}

    def job(key: str) -> None:
        try:
            results[key] = call()
        except Exception as e:  # reported to the caller
            results[key] = e

    threads = [threading.Thread(target=job, args=(k,)) for k in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.parametrize("md5", [True, False], ids=["md5", "no-md5"])
def test_416_with_a_stale_longer_part_downloads_afresh(server, tmp_path, md5):
    """The server says (416) the part is past the end: a part of another length is stale, not the finished file.
    Without a checksum, a part with no validator kept beside it is not resumed at all: fetched afresh at once."""
    data = b"A" * 1000
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(b"B" * 3000)
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", _md5(data) if md5 else None, progress=False)
    assert dest.read_bytes() == data and not (tmp_path / "f.bin.part").exists()
    assert server.requests == ([("/f.bin", "bytes=3000-")] if md5 else []) + [("/f.bin", None)]


def test_416_with_a_complete_part_keeps_it(server, tmp_path):
    data = bytes(range(256)) * 4
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data)
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", _md5(data), progress=False)
    assert dest.read_bytes() == data and server.requests == [("/f.bin", f"bytes={len(data)}-")]


def test_resume_answered_from_another_offset_restarts_from_zero(server, tmp_path):
    """A 206 from byte 999 to a request for byte 1000 on: nothing of it is appended, the whole file is fetched."""
    data = bytes(range(256)) * 40
    server.files["/f.bin"] = data
    server.offset_off.add("/f.bin")
    (tmp_path / "f.bin.part").write_bytes(data[:1000])
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", _md5(data), progress=False)
    assert dest.read_bytes() == data
    assert server.requests == [("/f.bin", "bytes=1000-"), ("/f.bin", None)]


@pytest.mark.parametrize("md5", [True, False], ids=["md5", "no-md5"])
def test_concurrent_downloads_of_one_file_take_turns(server, tmp_path, md5):
    """Two threads download one slowly served file: the second waits for the first and returns its finished file."""
    data = os.urandom(1 << 20)
    server.files["/f.bin"] = data
    server.delay = 0.02  # 16 chunks of 64 KiB: about 0.3 s
    results = _in_two_threads(lambda: download_file(server.url + "/f.bin", tmp_path / "f.bin",
                                                    _md5(data) if md5 else None, progress=False))
    assert results == {"A": tmp_path / "f.bin", "B": tmp_path / "f.bin"}
    assert (tmp_path / "f.bin").read_bytes() == data and not (tmp_path / "f.bin.part").exists()
    assert server.requests == [("/f.bin", None)]  # one download, the other call found it finished


def test_concurrent_ensure_source_calls_share_one_download(server, tmp_path):
    """Two threads fetch one archive source into one folder: one downloads, extracts and merges, the other waits."""
    from test_download import _cifar_c_tar

    data = _cifar_c_tar()
    server.files["/c10c.tar"] = data
    server.delay = 0.01
    src = SOURCES["cifar10-c"]
    src = type(src)(src.name, src.folder, (RemoteFile(server.url + "/c10c.tar", "CIFAR-10-C.tar", _md5(data)),),
                    src.inner, src.check)
    results = _in_two_threads(lambda: ensure_source(src, root=tmp_path, download=True, progress=False))
    assert results == {"A": tmp_path / "CIFAR-10-C", "B": tmp_path / "CIFAR-10-C"}
    assert (tmp_path / "CIFAR-10-C" / MARKER).is_file() and (tmp_path / "CIFAR-10-C" / "labels.npy").is_file()
    assert len(server.requests) == 1


def _archive(path, *members: tarfile.TarInfo, data: dict[str, bytes] | None = None) -> None:
    with tarfile.open(path, "w") as tf:
        for m in members:
            body = (data or {}).get(m.name) if m.isfile() else None
            if body is not None:
                m.size = len(body)
            tf.addfile(m, io.BytesIO(body) if body is not None else None)


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, linkname
    return m


@pytest.mark.parametrize("filters", [True, False], ids=["data-filter", "no-filter"])
def test_hard_link_out_of_the_folder_is_refused(tmp_path, monkeypatch, filters):
    """Tar hard links name their target from the archive root: ``a/b/h -> ../victim.txt`` points outside, and a later
    member ``a/b/h`` would write through it (Python < 3.10.12 / 3.11.4 have no ``tarfile.data_filter``)."""
    if not filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("original\n")
    evil = tmp_path / "evil.tar"
    _archive(evil, _member("a/b/h", tarfile.LNKTYPE, "../victim.txt"), _member("a/b/h"), data={"a/b/h": b"PWNED\n"})
    with pytest.raises(ValueError, match="a link 'a/b/h' to '../victim.txt' outside the extraction folder"):
        extract_archive(evil, tmp_path / "out", progress=False)
    assert victim.read_text() == "original\n"


def test_without_filters_links_inside_extract_and_devices_are_refused(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    good = tmp_path / "good.tar"
    _archive(good, _member("a/x.txt"), _member("a/b/h", tarfile.LNKTYPE, "a/x.txt"),
             _member("a/b/s", tarfile.SYMTYPE, "../x.txt"), data={"a/x.txt": b"x"})
    out = extract_archive(good, tmp_path / "out", progress=False)
    assert (out / "a/b/h").read_bytes() == b"x" and (out / "a/b/s").read_bytes() == b"x"
    fifo = tmp_path / "fifo.tar"
    _archive(fifo, _member("p", tarfile.FIFOTYPE))
    with pytest.raises(ValueError, match="'p' that is a device or FIFO"):
        extract_archive(fifo, tmp_path / "out2", progress=False)
    absolute = tmp_path / "abs.tar"
    _archive(absolute, _member("s", tarfile.SYMTYPE, str(tmp_path / "out3" / "t")))
    with pytest.raises(ValueError, match="link 's' to the absolute path"):
        extract_archive(absolute, tmp_path / "out3", progress=False)


def _chain_tar(tmp_path, late_links: bool) -> tuple[object, object]:
    """The probe's archive (CVE-2025-4517 class): 16 links to long folder names make a path past PATH_MAX, where
    ``realpath`` gives up and takes ``..`` by text, so ``escape -> <chain>/lll/..`` looks inside the extraction folder
    while the file system leads to its parent. ``late_links``: ``escape`` comes first and the chain after it (no member
    goes through a link that exists yet), then a file ``escape`` is written through the link. Returns (archive,
    dest)."""
    outer = tmp_path / "outer"
    dest = outer / "dest"
    outer.mkdir()
    (outer / "flag").write_text("original")
    steps = "abcdefghijklmnop"
    comp = "d" * ((os.pathconf(str(tmp_path), "PC_PATH_MAX") - len(str(dest)) - 1) // (len(steps) + 1))
    chain, path = [], ""
    for s in steps:
        chain.append(_member(os.path.join(path, comp), tarfile.DIRTYPE))
        chain.append(_member(os.path.join(path, s), tarfile.SYMTYPE, comp))
        path = os.path.join(path, comp)
    linkpath = os.path.join(*steps, "l" * 254)
    chain.append(_member(linkpath, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps))))
    if late_links:
        members = [_member("escape", tarfile.SYMTYPE, os.path.join(linkpath, "..", "flag")), *chain, _member("escape")]
    else:
        members = [*chain, _member("escape", tarfile.SYMTYPE, os.path.join(linkpath, "..")),
                   _member("flaglink", tarfile.LNKTYPE, "escape/flag"), _member("flaglink"), _member("escape/newfile")]
    evil = tmp_path / "evil.tar"
    _archive(evil, *members, data={"flaglink": b"overwritten", "escape/newfile": b"new", "escape": b"overwritten"})
    return evil, dest


@pytest.mark.parametrize("late_links", [False, True], ids=["probe", "links-after-use"])
@pytest.mark.parametrize("filters", [True, False], ids=["data-filter", "no-filter"])
def test_a_link_chain_past_path_max_cannot_write_outside(tmp_path, monkeypatch, filters, late_links):
    """The probe's proof of concept: it overwrote ``outer/flag`` and wrote ``outer/newfile`` beside the extraction
    folder (Python 3.11.7, whose ``data`` filter trusts ``realpath`` too). A member reached through one of the
    archive's own links, and a link made where an earlier member's path went, are refused before anything is written."""
    if not filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    evil, dest = _chain_tar(tmp_path, late_links)
    match = "where an earlier member's path passed" if late_links else "reached through its own symbolic link"
    with pytest.raises(ValueError, match=match):
        extract_archive(evil, dest, progress=False)
    outer = dest.parent
    assert (outer / "flag").read_text() == "original" and sorted(p.name for p in outer.iterdir()) == ["dest", "flag"]


def test_names_are_checked_by_text_and_a_write_through_an_own_link_is_refused(tmp_path):
    """``a/../../x`` leaves the folder by text even where the file system would not say so; ``sub/ln -> ..`` then
    ``sub/ln/ok`` stays inside but writes through the archive's own link: refused as well (no published archive
    does that). A link to a link, and links read but not written through, still extract."""
    up = tmp_path / "up.tar"
    _archive(up, _member("a/x"), _member("a/../../x"), data={"a/x": b"x", "a/../../x": b"y"})
    with pytest.raises(ValueError, match=r"a member 'a/\.\./\.\./x' outside the extraction folder"):
        extract_archive(up, tmp_path / "o1", progress=False)
    assert not (tmp_path / "x").exists()
    through = tmp_path / "through.tar"
    _archive(through, _member("sub/ln", tarfile.SYMTYPE, ".."), _member("sub/ln/ok"), data={"sub/ln/ok": b"ok"})
    with pytest.raises(ValueError, match=r"'sub/ln/ok' reached through its own symbolic link 'sub/ln'"):
        extract_archive(through, tmp_path / "o2", progress=False)
    good = tmp_path / "good.tar"
    _archive(good, _member("d/f"), _member("d/l1", tarfile.SYMTYPE, "f"), _member("d/l2", tarfile.SYMTYPE, "l1"),
             _member("e/h", tarfile.LNKTYPE, "d/f"), data={"d/f": b"f"})
    out = extract_archive(good, tmp_path / "o3", progress=False)
    assert (out / "d/l2").read_bytes() == b"f" and (out / "e/h").read_bytes() == b"f"


def test_a_checksum_mismatch_names_the_mirror_and_says_a_rerun_may_not_help(server, tmp_path, monkeypatch):
    """"Run again" alone sent users round a loop when the server (a mirror) holds another file: the message now says
    that a repeat means the server serves another file, and names the mirror the bytes came from."""
    server.files["/f.bin"] = b"not the published file"
    with pytest.raises(ValueError, match=r"checksum mismatch.*Run again to download it afresh; if this repeats, the "
                                         r"server serves another file than the published one.*place it at .*g\.bin"):
        download_file(server.url + "/f.bin", tmp_path / "g.bin", "0" * 32, progress=False)
    server.files["/records/2535967/files/CIFAR-10-C.tar"] = b"not the published archive"
    monkeypatch.setenv("APRKIT_DOWNLOAD_MIRROR", server.url)
    with pytest.raises(ValueError, match=rf"checksum mismatch.*came from the mirror {server.url} "
                                         r"\(\$APRKIT_DOWNLOAD_MIRROR or mirror=\), not from https://zenodo\.org/"
                                         ".*: if this repeats, the mirror serves another file"):
        ensure_source("cifar10-c", root=tmp_path, download=True, progress=False)


def test_a_hard_link_to_the_archives_own_symbolic_link_is_refused(tmp_path):
    """tarfile makes a hard link to a link whose target is missing as a copy of that link at the hard link's path: a
    deep ``d0/.../d11/l -> ../ x12 /etc/passwd`` (inside the folder where it lies) copied to the top as ``labels.npy``
    pointed out of the folder, and read /etc/passwd."""
    deep = "/".join(f"d{i}" for i in range(12))
    evil = tmp_path / "evil.tar"
    _archive(evil, _member(deep + "/l", tarfile.SYMTYPE, "../" * 12 + "etc/passwd"),
             _member("labels.npy", tarfile.LNKTYPE, deep + "/l"))
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(ValueError, match=f"a hard link 'labels.npy' to its own symbolic link '{deep}/l'"):
        extract_archive(evil, dest, progress=False)
    assert not (dest / "labels.npy").is_symlink()


def test_a_tar_ending_in_a_zip_member_is_extracted_as_the_tar(tmp_path):
    """``zipfile.is_zipfile`` finds a zip's end record in a file's last 64 KiB, so a tar whose last member is a small
    zip was extracted as that zip (the tar's other files silently dropped)."""
    import zipfile

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("inner_only.txt", b"z")
    tar = tmp_path / "x.tar"
    _archive(tar, _member("C/labels.npy"), _member("C/extra/bundle.zip"),
             data={"C/labels.npy": b"labels", "C/extra/bundle.zip": inner.getvalue()})
    assert zipfile.is_zipfile(tar)  # the trap
    out = extract_archive(tar, tmp_path / "out", progress=False)
    assert (out / "C/labels.npy").read_bytes() == b"labels" and (out / "C/extra/bundle.zip").is_file()
    assert not (out / "inner_only.txt").exists()
    zipped = tmp_path / "y.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("D/f.txt", b"f")
    assert (extract_archive(zipped, tmp_path / "out2", progress=False) / "D/f.txt").read_bytes() == b"f"


def test_two_ranks_completing_a_marked_folder_that_lost_a_file_both_succeed(server, tmp_path, monkeypatch):
    """Both saw the marker and the failing layout check before either took the lock; the second removal of the marker
    raised FileNotFoundError in one rank."""
    import time

    from test_download import _cifar_c_tar

    data = _cifar_c_tar()
    server.files["/c10c.tar"] = data
    src = SOURCES["cifar10-c"]
    check = src.check
    slow = lambda p: (time.sleep(0.3), check(p))[1]  # noqa: E731 (a real check scans the folder a while)
    src = type(src)(src.name, src.folder, (RemoteFile(server.url + "/c10c.tar", "CIFAR-10-C.tar", _md5(data)),),
                    src.inner, slow)
    folder = ensure_source(src, root=tmp_path, download=True, progress=False)
    (folder / "labels.npy").unlink()
    results = _in_two_threads(lambda: ensure_source(src, root=tmp_path, download=True, progress=False))
    assert results == {"A": folder, "B": folder}
    assert (folder / MARKER).is_file() and (folder / "labels.npy").is_file()
