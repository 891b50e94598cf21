"""Resuming a download and what a server's answers may do to it: a file republished between an interrupted run and
the rerun (If-Range), a part with nothing to vouch for it, a server that sends the file in bounded parts, a
Content-Range unit in capitals, a compressed answer. Served from 127.0.0.1 only."""

from __future__ import annotations

import hashlib

import pytest
from http_common import LocalServer, server_fixture  # noqa: F401 (server_fixture: the fixture ``server``)

from aprkit.data.download import DownloadError, download_file


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _interrupted(server: LocalServer, tmp_path, data: bytes, md5: str | None = None) -> int:
    """A first run of ``/f.bin`` cut off halfway (a part is left); returns the part's size."""
    server.files["/f.bin"] = data
    server.truncate.add("/f.bin")
    with pytest.raises(DownloadError, match="run again to resume"):
        download_file(server.url + "/f.bin", tmp_path / "f.bin", md5, progress=False)
    return (tmp_path / "f.bin.part").stat().st_size


def test_a_file_republished_between_runs_is_fetched_whole_not_spliced(server, tmp_path):
    """The probe's p7: the rerun joined the old file's first half to the new file's second half and, with no
    checksum, kept it for good. The first answer's ETag is kept beside the part and sent as If-Range: the changed file
    comes back whole (200) and replaces the part."""
    old, new = b"A" * 50_000, b"B" * 50_000
    half = _interrupted(server, tmp_path, old)
    server.files["/f.bin"] = new
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", None, progress=False)
    assert dest.read_bytes() == new and server.requests[-1] == ("/f.bin", f"bytes={half}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "f.bin.lock"]  # part and validator gone


def test_a_part_of_another_version_from_a_server_ignoring_if_range_is_not_appended(server, tmp_path):
    """A server that answers the range anyway (206) but with the new file's ETag: the part is dropped and the whole
    file fetched, rather than the new tail appended to the old head."""
    old, new = b"A" * 50_000, b"B" * 50_000
    half = _interrupted(server, tmp_path, old)
    server.files["/f.bin"] = new
    server.ignore_if_range.add("/f.bin")
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", None, progress=False)
    assert dest.read_bytes() == new and server.requests[1:] == [("/f.bin", f"bytes={half}-"), ("/f.bin", None)]


def test_an_unchanged_file_is_resumed_under_its_validator(server, tmp_path):
    data = bytes(range(256)) * 200
    half = _interrupted(server, tmp_path, data)
    assert (tmp_path / "f.bin.part.validator").read_text().strip() == f'ETag: "{_md5(data)}"'
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", None, progress=False)
    assert dest.read_bytes() == data and server.requests == [("/f.bin", None), ("/f.bin", f"bytes={half}-")]


@pytest.mark.parametrize("md5", [False, True], ids=["no-md5", "md5"])
def test_a_part_without_validator_is_resumed_only_when_a_checksum_checks_it(server, tmp_path, md5):
    """A server that sends neither ETag nor Last-Modified: nothing tells whether the file changed since the part was
    written, so without an MD5 the rerun starts again from byte 0; with one, it resumes (the MD5 catches a splice)."""
    data = bytes(range(256)) * 200
    server.no_etag.add("/f.bin")
    half = _interrupted(server, tmp_path, data, _md5(data) if md5 else None)
    assert not (tmp_path / "f.bin.part.validator").exists()
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", _md5(data) if md5 else None, progress=False)
    assert dest.read_bytes() == data and server.requests[-1] == ("/f.bin", f"bytes={half}-" if md5 else None)


@pytest.mark.parametrize("md5", [False, True], ids=["no-md5", "md5"])
def test_a_server_sending_bounded_parts_finishes_in_one_run(server, tmp_path, md5):
    """Every answer is a 206 of at most 1000 bytes (``bytes 0-999/3500``): one rerun per part was needed; now each
    complete part that adds bytes is followed by a request for the rest."""
    data = bytes(range(250)) * 14
    server.files["/f.bin"] = data
    server.cap["/f.bin"] = 1000
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", _md5(data) if md5 else None, progress=False)
    assert dest.read_bytes() == data
    assert server.requests == [("/f.bin", None)] + [("/f.bin", f"bytes={n}-") for n in (1000, 2000, 3000)]


def test_a_bounded_part_cut_short_of_its_own_length_still_asks_for_a_rerun(server, tmp_path):
    data = bytes(range(250)) * 14
    server.files["/f.bin"] = data
    server.cap["/f.bin"] = 1000
    server.truncate.add("/f.bin")  # the first answer ends after 500 of its 1000 bytes
    with pytest.raises(DownloadError, match="connection closed after 500 of 3500 bytes; run again to resume"):
        download_file(server.url + "/f.bin", tmp_path / "f.bin", None, progress=False)
    assert download_file(server.url + "/f.bin", tmp_path / "f.bin", None, progress=False).read_bytes() == data


def test_a_content_range_unit_in_capitals_continues_the_part(server, tmp_path):
    """RFC 9110: range units are case-insensitive. ``Bytes 25600-...`` made aprkit drop the part and start again."""
    data = bytes(range(256)) * 200
    half = _interrupted(server, tmp_path, data, _md5(data))
    server.unit = "Bytes"
    download_file(server.url + "/f.bin", tmp_path / "f.bin", _md5(data), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.requests == [("/f.bin", None), ("/f.bin", f"bytes={half}-")]  # no third request from byte 0


def test_a_compressed_answer_is_refused_where_nothing_checks_its_bytes(server, tmp_path):
    """aprkit asks for ``Accept-Encoding: identity``; a server or proxy that compresses anyway sent bytes that were
    kept as the file silently when no MD5 checks them. With an MD5 the checksum decides, and a .tar.gz labelled
    ``x-gzip`` (a common server setting that sends the file as it is) is taken (the review: refusing those broke
    downloads that had worked)."""
    data = b"x" * 5000
    server.files["/f.bin"] = data
    server.encoding["/f.bin"] = "gzip"
    with pytest.raises(DownloadError, match=r"Content-Encoding 'gzip' although aprkit asks for the file's own bytes "
                                            r"\(Accept-Encoding: identity\).*place it at .*f\.bin"):
        download_file(server.url + "/f.bin", tmp_path / "f.bin", None, progress=False)
    assert not (tmp_path / "f.bin").exists()
    assert download_file(server.url + "/f.bin", tmp_path / "f.bin", _md5(data), progress=False).read_bytes() == data
    server.files["/a.tar.gz"] = data
    server.encoding["/a.tar.gz"] = "x-gzip"
    assert download_file(server.url + "/a.tar.gz", tmp_path / "a.tar.gz", None, progress=False).read_bytes() == data
    server.encoding["/f.bin"] = "Identity"
    assert download_file(server.url + "/f.bin", tmp_path / "g.bin", None, progress=False).read_bytes() == data


def test_a_server_answering_every_resume_with_the_same_bounded_part_gives_up(server, tmp_path):
    """Every answer a 206 of bytes 0-99 whatever was asked: each reply was counted as a bounded part that made
    progress and the download asked for the rest for ever (thousands of requests). A reply that ends no further than
    the part did restarts the download once from byte 0, then raises."""
    import threading

    server.files["/f.bin"] = bytes(range(250)) * 4
    server.cap["/f.bin"] = 100
    server.offset_zero.add("/f.bin")
    got: list[BaseException] = []

    def run() -> None:
        try:
            download_file(server.url + "/f.bin", tmp_path / "f.bin", None, progress=False)
        except BaseException as e:  # reported below
            got.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), f"still downloading after {len(server.requests)} requests"
    assert len(got) == 1 and isinstance(got[0], DownloadError)
    assert "bytes 0-99 of 1000, which end no further than the part already did after a restart" in str(got[0])
    assert len(server.requests) == 4 and not (tmp_path / "f.bin.part").exists()


def test_a_resumed_part_that_fails_the_checksum_is_fetched_whole_once_more(server, tmp_path):
    """A part with nothing to vouch for it (the server sends no ETag) is resumed under an MD5; when the file changed
    since, the joined bytes fail it. That raised a checksum mismatch (blaming the server) although the server had the
    right file: the whole file is now fetched once more from byte 0 before the checksum decides."""
    old, new = b"A" * 50_000, b"B" * 50_000
    server.no_etag.add("/f.bin")
    half = _interrupted(server, tmp_path, old)
    server.files["/f.bin"] = new
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", _md5(new), progress=False)
    assert dest.read_bytes() == new
    assert server.requests[1:] == [("/f.bin", f"bytes={half}-"), ("/f.bin", None)]


def test_a_206_without_the_kept_validator_is_not_appended_without_a_checksum(server, tmp_path):
    """The part's ETag was kept, but the resume's 206 carries none (a server ignoring If-Range and, against HTTP,
    dropping the validator): nothing says the tail belongs to the same version, so without an MD5 the whole file is
    fetched instead of joining the new tail to the old head."""
    old, new = b"A" * 50_000, b"B" * 50_000
    half = _interrupted(server, tmp_path, old)
    server.files["/f.bin"] = new
    server.no_etag.add("/f.bin")
    server.ignore_if_range.add("/f.bin")
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", None, progress=False)
    assert dest.read_bytes() == new and server.requests[1:] == [("/f.bin", f"bytes={half}-"), ("/f.bin", None)]
