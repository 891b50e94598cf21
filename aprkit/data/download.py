"""Downloading published files: resumable HTTP, checksums, safe extraction, one data root.

- ``data_root(root)``: where downloaded data lives: ``root`` if given, else ``$APRKIT_DATA``, else
  ``~/.cache/aprkit``. Never the working directory implicitly.
- ``download_file(url, dest, md5=...)``: streams into ``dest + ".part"`` (an interrupted download resumes with
  an HTTP ``Range`` request; a part the server cannot continue is fetched again from byte 0), shows a tqdm bar,
  checks the size the server announced and the MD5 (a mismatch removes the file and raises) and renames the
  finished file atomically. Concurrent calls for one ``dest`` take turns on ``dest + ".lock"``.
- ``file_lock(path)``: that exclusive lock (threads and processes), also held by ``ensure_source``.
- ``extract_archive(path, dest)``: ``.tar``/``.tar.gz``/``.zip`` into ``dest``, refusing members that would
  land outside it (and, on Pythons without tar's extraction filters, links with absolute targets and devices), links
  that would point outside the folder that is moved on (``links_within``) and a tar cut short between members.
- ``zenodo_md5(record, key)``: the checksum a Zenodo record publishes for one of its files.

Network failures raise :class:`DownloadError` (an ``OSError``) naming the URL tried, the path it was written
to and how to supply the file by hand.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import TypeGuard

import filelock

__all__ = ["DATA_ENV", "DownloadError", "data_root", "download_file", "extract_archive", "file_lock", "file_md5",
           "remove_tree", "zenodo_md5"]

#: environment variable naming the data root
DATA_ENV = "APRKIT_DATA"
#: Zenodo's REST API (record metadata with published checksums)
ZENODO_API = "https://zenodo.org/api/records"
_CHUNK = 1 << 20


class DownloadError(OSError):
    """A file could not be fetched; the message says what was tried, where, and how to supply it."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root``, else ``$APRKIT_DATA`` (stripped of surrounding spaces: ``"/data "`` from a script
    made a folder ``/data `` beside ``/data``; only spaces count as unset), else ``~/.cache/aprkit`` (expanded,
    absolute)."""
    if root is None or os.fspath(root) == "":
        root = os.environ.get(DATA_ENV, "").strip() or Path.home() / ".cache" / "aprkit"
    return Path(root).expanduser().absolute()


def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


#: errors of this machine's files, not of the network (a full disk, a read-only or forbidden folder)
_LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                           errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR})


def is_local_error(e: BaseException) -> TypeGuard[OSError]:
    """Whether ``e`` is an error of this machine's files (a full disk, a read-only or forbidden folder), not of the
    network."""
    return isinstance(e, OSError) and not isinstance(e, urllib.error.URLError) and e.errno in _LOCAL_ERRNOS


def _offline_error(url: str, dest: Path, reason: object) -> DownloadError:
    return DownloadError(
        f"could not download {url} ({reason}); it was to be written to {dest}. If this machine is offline, "
        f"download the file elsewhere and place it at {dest} (or, for data read from the data root rather than a "
        f"folder you named, point ${DATA_ENV} / --data-root at a folder that already holds the extracted data)"
    )


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": "aprkit"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(START, TOTAL)`` of a ``Content-Range: bytes START-END/TOTAL`` (or ``bytes */TOTAL``) header; None where a
    part is absent or not a number (``*``)."""
    unit, _, spec = (value or "").partition(" ")
    if unit != "bytes":
        return None, None
    span, _, total = spec.partition("/")
    first = span.split("-", 1)[0]
    return (int(first) if first.isdigit() else None), (int(total) if total.isdigit() else None)


def file_lock(path: str | os.PathLike) -> filelock.FileLock:
    """An exclusive lock between threads and processes on ``path + ".lock"`` (``filelock``: an empty file, left in
    place on Unix so that waiters share it; Windows removes it on release); use as ``with file_lock(path): ...``.
    Waits as long as the holder keeps it."""
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    hint = "the folder must be writable; fix its permissions or choose another folder (datasets: --data-root or " \
           "$APRKIT_DATA; a training run: --out)"
    try:  # an unwritable folder fails here, named, rather than as a bare PermissionError inside filelock
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise type(e)(e.errno, f"cannot create the folder of the lock file {lock} ({e.strerror}): {hint}") from None
    if not os.access(path.parent, os.W_OK):  # not the file itself: filelock's soft locks (no flock) wait on any file
        raise PermissionError(13, f"cannot create the lock file {lock} (Permission denied): {hint}")
    return filelock.FileLock(str(lock))


def _stream(url: str, dest: Path, part: Path, timeout: float, progress: bool) -> None:
    """Fill ``part`` with every byte of ``url``, continuing from its current size where the server allows.

    A server that ignores the ``Range`` request (200) or answers from byte 0 sends the whole file, which replaces the
    part; one that answers from another offset, or says (416) that the part is not the file's length, gets a second
    request for the whole file. Where the server tells the total size, the part must end up exactly that long.
    """
    from tqdm.auto import tqdm

    start = part.stat().st_size if part.is_file() else 0
    for _ in range(2):  # the second pass (start 0, no Range) cannot come back here
        try:
            resp = _open(url, start, timeout)
        except urllib.error.HTTPError as e:
            if e.code != 416 or not start:
                raise
            total = _content_range(e.headers.get("Content-Range"))[1]
            e.close()
            if total == start:
                return  # the part already holds every byte of the file
            part.unlink()  # longer than the file, or the server did not say: a stale part
            start = 0
            continue
        with resp:
            first, total = _content_range(resp.headers.get("Content-Range")) if resp.status == 206 else (0, None)
            if first is None or first not in (0, start):
                if start == 0:
                    raise DownloadError(f"{url} answered a request for the whole file with a part of it "
                                        f"(Content-Range {resp.headers.get('Content-Range')!r}); nothing was written "
                                        f"to {dest}")
                part.unlink()  # the server answered a resume from another offset: fetch the whole file instead
                start = 0
                continue
            length = resp.headers.get("Content-Length")
            if total is None and length is not None and length.isdigit():
                total = first + int(length)
            with open(part, "ab" if first else "wb") as f, tqdm(
                total=total, initial=first, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                disable=not progress, leave=False,
            ) as bar:
                read = getattr(resp, "read1", resp.read)  # what has arrived: a stall loses no bytes read so far
                while chunk := read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
        size = part.stat().st_size
        if total is not None and size < total:
            raise _offline_error(url, dest, f"connection closed after {size} of {total} bytes; run again to resume "
                                            f"from {part}")
        if total is not None and size > total:
            part.unlink()
            raise DownloadError(f"downloading {url} gave {size} bytes where the server announced {total}; the "
                                f"download was removed ({part}), run again to download it afresh")
        return
    raise AssertionError("unreachable: the second request asks for the whole file")


def download_file(
    url: str, dest: str | os.PathLike, md5: str | None = None, *, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify ``md5`` and return ``dest``.

    An existing ``dest`` with the right checksum is kept (nothing is fetched). A checksum mismatch removes
    the bad file and raises ``ValueError`` naming both checksums; network errors, and a file whose size is not
    the one the server announced, raise ``DownloadError``. Calls for the same ``dest`` (threads or processes) take
    turns on the lock ``dest.lock``; a later one finds the finished file and returns it.
    """
    from urllib.parse import urlsplit

    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https", "file", "ftp"):
        raise ValueError(f"url must be an http(s), ftp or file URL such as https://host/file.tar, got {url!r}")
    dest = Path(dest).expanduser()
    if dest.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"dest is a folder; expected the path of the file to write "
                                f"(e.g. {dest / (url.rsplit('/', 1)[-1] or 'file')})", str(dest))
    if _finished(dest, md5):
        return dest
    with file_lock(dest):
        if _finished(dest, md5):  # another call finished it while this one waited
            return dest
        part = dest.with_name(dest.name + ".part")
        # a file at dest that failed the checksum (placed by hand?): the errors below say so, a download replaces it
        wrong = f"; the file already at {dest} does not match the published MD5 {md5}" if dest.is_file() else ""
        try:
            _stream(url, dest, part, timeout, progress)
        except DownloadError:
            raise
        except urllib.error.HTTPError as e:  # the server answered: no network problem, and no part to resume
            later = e.code >= 500 or e.code in (408, 429)  # the server failed, timed out or asks to slow down
            hint = "Run again later, or" if later else "If the file has moved,"
            raise DownloadError(f"{url} answered HTTP {e.code} {e.reason}; nothing more was written to {dest}. {hint} "
                                f"download it by hand and place it at {dest}{wrong}") from e
        except (OSError, http.client.HTTPException) as e:
            if is_local_error(e):  # this machine's disk
                raise DownloadError(f"could not write {part} while downloading {url} ({e.strerror}); free space or "
                                    f"fix the folder's permissions, then run again to resume") from e
            reason = getattr(e, "reason", e) if isinstance(e, OSError) else repr(e)
            resume = f"; run again to resume from {part}" if part.is_file() and part.stat().st_size else ""
            raise _offline_error(url, dest, f"{reason}{resume}{wrong}") from e
        if md5 is not None:
            got = file_md5(part)
            if got != md5.lower():
                part.unlink()
                raise ValueError(
                    f"checksum mismatch for {url}: MD5 {got}, expected the published {md5.lower()}; the corrupt "
                    f"download was removed ({part}). Run again to download it afresh"
                )
        os.replace(part, dest)
    return dest


def _finished(dest: Path, md5: str | None) -> bool:
    return dest.is_file() and (md5 is None or file_md5(dest) == md5.lower())


def _check_member(dest: Path, name: str, archive: Path, link: str | None = None) -> None:
    """Refuse member ``name`` (or, given ``link``, the target ``name`` of the link member ``link``) outside ``dest``."""
    target = (dest / name).resolve()
    if target != dest.resolve() and dest.resolve() not in target.parents:
        what = f"a member {name!r}" if link is None else f"a link {link!r} to {name!r}"
        raise ValueError(f"archive {archive} has {what} outside the extraction folder; refusing to extract")


class UnreadableArchive(ValueError):
    """A file that is no readable archive (a download cut short, another file), as opposed to a refused member."""


def extract_archive(path: str | os.PathLike, dest: str | os.PathLike, *, progress: bool = True,
                    links_within: str | None = None, check_end: bool = True) -> Path:
    """Extract a ``.tar``(``.gz``/``.bz2``/``.xz``) or ``.zip`` archive into ``dest``; returns ``dest``.

    ``links_within``: a folder of the archive that is moved elsewhere after extraction: a symbolic link in it must
    point inside it without climbing above it (``up -> ..`` stays inside ``dest`` but, moved, would point above the new
    folder). With ``check_end``, a tar that ends without its end-of-archive block (a copy cut short between two
    members, which tarfile reads as complete) raises :class:`UnreadableArchive`.
    """
    from tqdm.auto import tqdm

    path, dest = Path(path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            for m in tqdm(members, desc=f"extract {path.name}", disable=not progress, leave=False):
                _check_member(dest, m.filename, path)
                zf.extract(m, dest)
        return dest
    if not tarfile.is_tarfile(path):
        raise UnreadableArchive(f"{path} is neither a tar nor a zip archive; expected the published archive")
    with tarfile.open(path) as tf:
        for m in tqdm(tf, desc=f"extract {path.name}", disable=not progress, leave=False):
            _check_member(dest, m.name, path)
            if m.issym():  # a symbolic link's target is relative to the link's folder
                to = os.path.join(os.path.dirname(m.name), m.linkname)
                _check_member(dest, to, path, m.name)
                if links_within is not None:
                    _check_link_stays(links_within, m, path)
            elif m.islnk():  # a hard link's target is relative to the archive's root
                _check_member(dest, m.linkname, path, m.name)
            _check_plain_member(m, path)  # devices, FIFOs, absolute links: named with the archive
            if hasattr(tarfile, "data_filter"):  # (Python < 3.10.12 / 3.11.4 lack it: the checks above stand in)
                tf.extract(m, dest, filter="data")
            else:
                tf.extract(m, dest)
        if check_end:
            _check_tar_end(tf, path)
    return dest


def _check_link_stays(folder: str, m: tarfile.TarInfo, archive: Path) -> None:
    """Refuse a symbolic link in ``folder`` whose target climbs above ``folder`` at any step (``../folder/x`` comes
    back by the folder's name, which it will not have once moved); a link outside ``folder`` is not moved with it."""
    rel = Path(os.path.relpath(os.path.dirname(os.path.normpath(m.name)) or ".", os.path.normpath(folder)))
    if rel.parts[:1] == ("..",):
        return
    depth = len(rel.parts)  # the link's folder, below ``folder`` (Path(".").parts is empty)
    for part in m.linkname.split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            raise ValueError(f"archive {archive} has a link {m.name!r} to {m.linkname!r} outside the extraction "
                             f"folder {folder!r}; refusing to extract")


def _check_tar_end(tf: tarfile.TarFile, archive: Path) -> None:
    """Refuse a tar whose members end without the zero block that closes every tar (tarfile takes the end of the file
    after any member as the end of the archive, so a copy cut short there would pass as complete)."""
    assert tf.fileobj is not None
    tf.fileobj.seek(tf.offset)
    if tf.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
        raise UnreadableArchive(f"{archive} ends after its member at byte {tf.offset} without tar's end-of-archive "
                                "block: the file was cut short; expected the complete published archive")


def _check_plain_member(m: tarfile.TarInfo, archive: Path) -> None:
    """Refuse the tar members that tar's ``data`` filter refuses and the checks above do not catch."""
    if (m.issym() or m.islnk()) and os.path.isabs(m.linkname):
        raise ValueError(f"archive {archive} has a link {m.name!r} to the absolute path {m.linkname!r}; expected "
                         "links inside the archive, refusing to extract")
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        raise ValueError(f"archive {archive} has a member {m.name!r} that is a device or FIFO; expected files, folders "
                         "and links, refusing to extract")


def zenodo_md5(record: str, key: str, *, api: str = ZENODO_API, timeout: float = 60.0) -> str:
    """The MD5 that Zenodo record ``record`` publishes for its file ``key`` (from ``{api}/{record}``)."""
    url = f"{api.rstrip('/')}/{record}"
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "aprkit"})
        with urllib.request.urlopen(request, timeout=timeout) as r:
            meta = json.loads(r.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:  # ValueError: not JSON
        raise DownloadError(f"could not read the checksums of Zenodo record {record} from {url} "
                            f"({getattr(e, 'reason', e)})") from e
    for entry in meta.get("files", []):
        if entry.get("key") == key:
            algo, _, value = str(entry.get("checksum", "")).partition(":")
            if algo == "md5" and value:
                return value
    raise ValueError(f"Zenodo record {record} ({url}) lists no MD5 for a file named {key!r}")


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a folder left half-extracted (no error if it is absent)."""
    shutil.rmtree(path, ignore_errors=True)
