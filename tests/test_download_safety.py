"""Downloads that must not finish with a wrong file: stale or foreign ``.part`` files and servers answering a resume
from another offset. Served from 127.0.0.1 only."""

from __future__ import annotations

import hashlib

import pytest
from http_common import LocalServer, server_fixture  # noqa: F401 (server_fixture: the fixture ``server``)

from aprkit.data.download import download_file


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("md5", [True, False], ids=["md5", "no-md5"])
def test_416_with_a_stale_longer_part_downloads_afresh(server, tmp_path, md5):
    """The server says (416) the part is past the end: a part of another length is stale, not the finished file."""
    data = b"A" * 1000
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(b"B" * 3000)
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", _md5(data) if md5 else None, progress=False)
    assert dest.read_bytes() == data and not (tmp_path / "f.bin.part").exists()
    assert server.requests == [("/f.bin", "bytes=3000-"), ("/f.bin", None)]


def test_416_with_a_complete_part_keeps_it(server, tmp_path):
    data = bytes(range(256)) * 4
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data)
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", None, progress=False)
    assert dest.read_bytes() == data and server.requests == [("/f.bin", f"bytes={len(data)}-")]


def test_resume_answered_from_another_offset_restarts_from_zero(server, tmp_path):
    """A 206 from byte 999 to a request for byte 1000 on: nothing of it is appended, the whole file is fetched."""
    data = bytes(range(256)) * 40
    server.files["/f.bin"] = data
    server.offset_off.add("/f.bin")
    (tmp_path / "f.bin.part").write_bytes(data[:1000])
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", None, progress=False)
    assert dest.read_bytes() == data
    assert server.requests == [("/f.bin", "bytes=1000-"), ("/f.bin", None)]
