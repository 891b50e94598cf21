"""Downloading published files: resumable HTTP, checksums, one data root (safe extraction: :mod:`.archives`).

- ``data_root(root)``: where downloaded data lives: ``root`` if given, else ``$APRKIT_DATA``, else
  ``~/.cache/aprkit``. Never the working directory implicitly.
- ``download_file(url, dest, md5=...)``: streams into ``dest + ".part"`` (an interrupted download resumes with
  an HTTP ``Range`` request, guarded by the first answer's ETag or Last-Modified (``If-Range``): a file changed since
  comes back whole; a part the server cannot continue is fetched again from byte 0), shows a tqdm bar, checks the size
  the server announced and the MD5 (a mismatch removes the file and raises) and renames the finished file atomically.
  Concurrent calls for one ``dest`` take turns on ``dest + ".lock"``.
- ``file_lock(path)``: that exclusive lock (threads and processes), also held by ``ensure_source``.
- ``extract_archive(path, dest)``: from :mod:`aprkit.data.archives` (refuses members that would land outside
  ``dest``).
- ``zenodo_md5(record, key)``: the checksum a Zenodo record publishes for one of its files.

Network failures raise :class:`DownloadError` (an ``OSError``) naming the URL tried, the path it was written
to, the MD5 it must have and how to supply the file by hand.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any, TypeGuard

import filelock

from .archives import UnreadableArchive as UnreadableArchive
from .archives import extract_archive, remove_tree

__all__ = ["DATA_ENV", "ChecksumMismatch", "DownloadError", "data_root", "download_file", "extract_archive",
           "file_lock", "file_md5", "remove_tree", "zenodo_md5"]

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


class ChecksumMismatch(ValueError):
    """A downloaded file is not the published one (its MD5 differs); the corrupt download was removed."""


def _md5_note(md5: str | None) -> str:
    return f" (MD5 {md5.lower()})" if md5 else ""


def _offline_error(url: str, dest: Path, reason: object, md5: str | None) -> DownloadError:
    return DownloadError(
        f"could not download {url} ({reason}); it was to be written to {dest}. If this machine is offline, "
        f"download the file elsewhere and place it at {dest}{_md5_note(md5)} (or, for data read from the data root "
        f"rather than a folder you named, point ${DATA_ENV} / --data-root at a folder that already holds the extracted "
        "data)"
    )


def _open(url: str, start: int, timeout: float, validator: str | None = None):
    """Ask for ``url`` from byte ``start`` on; ``validator`` (``"ETag: v"`` or ``"Last-Modified: v"``): only if the
    file is still that one (``If-Range``: a changed file comes back whole, as 200)."""
    headers = {"User-Agent": "aprkit", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
        if validator:
            headers["If-Range"] = validator.partition(": ")[2]
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(START, TOTAL)`` of a ``Content-Range: bytes START-END/TOTAL`` (or ``bytes */TOTAL``) header; None where a
    part is absent or not a number (``*``). The unit is case-insensitive (RFC 9110)."""
    unit, _, spec = (value or "").partition(" ")
    if unit.lower() != "bytes":
        return None, None
    span, _, total = spec.strip().partition("/")
    first = span.split("-", 1)[0]
    return (int(first) if first.isdigit() else None), (int(total) if total.isdigit() else None)


def _validator(headers: Message) -> str | None:
    """What identifies this version of the file: ``"ETag: v"`` (a strong ETag), else ``"Last-Modified: v"``."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):  # a weak ETag may not guard a range (RFC 9110 13.1.5)
        return f"ETag: {etag}"
    modified = headers.get("Last-Modified")
    return f"Last-Modified: {modified}" if modified else None


def _validator_file(part: Path) -> Path:
    return part.with_name(part.name + ".validator")


def _drop_part(part: Path) -> None:
    """Remove the part and the validator kept beside it."""
    part.unlink(missing_ok=True)
    _validator_file(part).unlink(missing_ok=True)


def _read_validator(part: Path) -> str | None:
    try:
        text = _validator_file(part).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):  # absent (a part of an older aprkit) or unreadable: none
        return None
    return text if text.startswith(("ETag: ", "Last-Modified: ")) else None


def _changed(validator: str | None, headers: Message, checked: bool) -> bool:
    """Whether a part of a file answered with ``headers`` belongs (or may belong) to another version than ``validator``
    names. A reply without the validator's header (against HTTP, which asks a 206 to repeat it) cannot tell: it counts
    as changed unless a checksum will check the joined file (``checked``)."""
    if validator is None:
        return False
    name, _, value = validator.partition(": ")
    now = headers.get(name)
    return now != value if now is not None else not checked


def is_read_only(folder: Path) -> bool:
    """Whether ``folder`` lies on a file system mounted read-only (``statvfs``; False where unknown, e.g. Windows)."""
    statvfs = getattr(os, "statvfs", None)  # (Unix only)
    try:
        return statvfs is not None and bool(statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def file_lock(path: str | os.PathLike) -> _Lock:
    """An exclusive lock between threads and processes on ``path + ".lock"`` (``filelock``: an empty file, left in
    place on Unix so that waiters share it; Windows removes it on release); use as ``with file_lock(path): ...``.
    Waits as long as the holder keeps it, saying so (on stderr) after ten seconds. A folder where the lock cannot be
    made raises ``PermissionError`` (or ``OSError`` EROFS on a read-only file system) naming it, as does a lock file
    another user made unwritable."""
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    where = "(datasets: --data-root or $APRKIT_DATA; a training run: --out)"
    hint = f"the folder must be writable; fix its permissions or choose another folder {where}"
    ro_hint = f"the folder is on a read-only file system; choose a folder on a writable one {where}"
    try:  # an unwritable folder fails here, named, rather than as a bare PermissionError inside filelock
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise type(e)(e.errno, f"cannot create the folder of the lock file {lock} ({e.strerror}): "
                               f"{ro_hint if e.errno == errno.EROFS else hint}") from None
    if not os.access(path.parent, os.W_OK):  # not the file itself: filelock's soft locks (no flock) wait on any file
        if is_read_only(path.parent):
            raise OSError(errno.EROFS, f"cannot create the lock file {lock} (Read-only file system): {ro_hint}")
        raise PermissionError(errno.EACCES, f"cannot create the lock file {lock} (Permission denied): {hint}")
    # readable and writable by all whatever the umask (filelock sets the mode): a data root several users share must
    # not hold one user's lock file that the next user cannot open (the file holds nothing, or a soft lock's pid)
    return _Lock(filelock.FileLock(str(lock), mode=0o666))


#: seconds a lock is waited for before saying who holds it
_LOCK_NOTICE_S = 10.0


class _Lock:
    """A ``filelock.FileLock`` whose blocking acquire says once, after :data:`_LOCK_NOTICE_S`, that it waits and for
    what (a lock held by a download on another machine, or left by a killed one on a file system without ``flock``,
    would be waited on forever without a word), and whose lock file another user made and left unreadable is named."""

    def __init__(self, lock: filelock.BaseFileLock) -> None:
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lock, name)

    def acquire(self, timeout: float | None = None, **kwargs: Any) -> Any:
        try:
            if (timeout is not None and timeout >= 0) or kwargs.get("blocking") is False:  # the caller's own wait
                return self._lock.acquire(timeout=timeout, **kwargs)
            try:
                return self._lock.acquire(timeout=_LOCK_NOTICE_S, **kwargs)
            except filelock.Timeout:
                holder = _holder(Path(self._lock.lock_file))
                print(f"aprkit: waiting for the lock {self._lock.lock_file}, held by {holder} (it downloads or writes "
                      "the same files; if no such process runs any more, delete the lock file)", file=sys.stderr,
                      flush=True)
                return self._lock.acquire(**kwargs)
        except PermissionError as e:
            path = Path(self._lock.lock_file)
            try:
                owner = f"uid {path.stat().st_uid}"
            except OSError:
                owner = "another user"
            raise PermissionError(e.errno, f"cannot open the lock file {path} (Permission denied): {owner} made it "
                                           "and it is not writable to you; if no download runs now, delete it (it "
                                           "holds nothing), or ask its owner to") from None

    def release(self, force: bool = False) -> None:
        self._lock.release(force=force)

    def __enter__(self) -> _Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(lock: Path) -> str:
    """Who holds ``lock`` as filelock's soft lock records it (pid and host), else "another process"."""
    try:
        text = lock.read_text(errors="replace").split()
    except OSError:
        text = []
    return f"process {text[0]} on host {text[1]}" if len(text) >= 2 and text[0].isdigit() else "another process"


def _stream(url: str, dest: Path, part: Path, timeout: float, progress: bool, md5: str | None) -> None:
    """Fill ``part`` with every byte of ``url``, continuing from its current size where the server allows.

    The first answer's validator (a strong ETag, else Last-Modified) is kept beside the part (``.part.validator``);
    a resume sends it as ``If-Range``, so that a file changed since comes back whole (200) and replaces the part. A part
    with no validator kept is resumed only when ``md5`` will check the result; without either it is fetched again from
    byte 0 (the old bytes and the new ones could belong to two versions of the file). A server that ignores the
    ``Range`` request (200) or answers from byte 0 sends the whole file, which replaces the part; one that answers
    from another offset or with another version of the file, or says (416) that the part is not the file's length,
    gets a request for the whole file. A server that sends the file in bounded parts (206 replies that end before the
    file does) is asked for the next part while each reply is complete and adds bytes. Where the server tells the total
    size, the part must end up exactly that long.
    """
    start = part.stat().st_size if part.is_file() else 0
    validator = _read_validator(part) if start else None
    if start and validator is None and md5 is None:
        _drop_part(part)  # nothing could tell whether the file changed since the part was written: start afresh
        start = 0
    restarted = False
    while True:
        why: str | None
        try:
            resp = _open(url, start, timeout, validator)
        except urllib.error.HTTPError as e:
            if e.code != 416 or not start:
                raise
            total = _content_range(e.headers.get("Content-Range"))[1]
            e.close()
            if total == start:
                return  # the part already holds every byte of the file
            why = f"answered 416 (Content-Range {e.headers.get('Content-Range')!r}) to a resume from byte {start}"
        else:
            with resp:
                why, done = _receive(resp, url, dest, part, start, validator, progress, md5)
            if done:
                return
            if why is None:  # a complete 206 that ended before the file does: ask for the rest
                start, validator = part.stat().st_size, _read_validator(part)
                continue
        if restarted:
            _drop_part(part)
            raise DownloadError(f"{url} {why} after a restart from byte 0; the download was removed ({part}), run "
                                "again to download it afresh")
        _drop_part(part)  # a stale part, or the server answered from another offset or version: fetch the whole file
        start, validator, restarted = 0, None, True


def _receive(resp, url: str, dest: Path, part: Path, start: int, validator: str | None, progress: bool,
             md5: str | None) -> tuple[str | None, bool]:
    """Write one answer to a request from byte ``start`` into ``part``: ``(None, True)`` when the part is complete,
    ``(None, False)`` when a complete 206 reply ended before the file does, ``(why, False)`` when the answer cannot
    continue the part (``why`` says so; nothing was written, or a bounded reply from byte 0 ended no further than the
    part did: the caller drops the part either way)."""
    from tqdm.auto import tqdm

    coding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
    # a compressed answer is refused where nothing checks the bytes: with an MD5 the checksum decides (servers label
    # .tar.gz files "Content-Encoding: x-gzip" and send them as they are), as it does for a .gz/.tgz file's own gzip
    labelled = coding in ("gzip", "x-gzip") and url.split("?", 1)[0].lower().endswith((".gz", ".tgz"))
    if coding != "identity" and md5 is None and not labelled:
        raise DownloadError(f"{url} answered with Content-Encoding {coding!r} although aprkit asks for the file's own "
                            f"bytes (Accept-Encoding: identity): the server or a proxy does not honour that; nothing "
                            f"more was written to {dest}. Download the file by hand and place it at {dest}"
                            f"{_md5_note(md5)}")
    first, total = _content_range(resp.headers.get("Content-Range")) if resp.status == 206 else (0, None)
    if first is None or first not in (0, start) or (resp.status == 206 and first
                                                    and _changed(validator, resp.headers, md5 is not None)):
        if start == 0:
            raise DownloadError(f"{url} answered a request for the whole file with a part of it (Content-Range "
                                f"{resp.headers.get('Content-Range')!r}); nothing was written to {dest}")
        return (f"answered a resume from byte {start} with another part or version of the file (Content-Range "
                f"{resp.headers.get('Content-Range')!r})"), False
    length = resp.headers.get("Content-Length")
    expected = int(length) if length is not None and length.isdigit() else None
    if total is None and expected is not None:
        total = first + expected
    if not first:  # the whole file from byte 0: its validator guards later resumes
        fresh = _validator(resp.headers)
        if fresh is None:
            _validator_file(part).unlink(missing_ok=True)
        else:
            _validator_file(part).write_text(fresh + "\n", encoding="utf-8")
    received = 0
    with open(part, "ab" if first else "wb") as f, tqdm(
        total=total, initial=first, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
        disable=not progress, leave=False,
    ) as bar:
        read = getattr(resp, "read1", resp.read)  # what has arrived: a stall loses no bytes read so far
        while chunk := read(_CHUNK):
            f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    size = part.stat().st_size
    if total is None or size == total:
        return None, True
    if size > total:
        _drop_part(part)
        raise DownloadError(f"downloading {url} gave {size} bytes where the server announced {total}; the download "
                            f"was removed ({part}), run again to download it afresh")
    if resp.status == 206 and received and (expected is None or received == expected):
        if size > start:
            return None, False  # a well-formed 206 that made progress: the server sends the file in bounded parts
        # a bounded part from byte 0 again that ends where the part did: asking for the rest would loop forever
        return (f"answered a resume from byte {start} with bytes {first}-{first + received - 1} of {total}, which "
                "end no further than the part already did"), False
    raise _offline_error(url, dest, f"connection closed after {size} of {total} bytes; run again to resume from {part}",
                         md5)


def download_file(
    url: str, dest: str | os.PathLike, md5: str | None = None, *, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify ``md5`` and return ``dest``.

    An existing ``dest`` with the right checksum is kept (nothing is fetched). A download resumed from an earlier
    run's part that fails the checksum is fetched whole once more (the part may have held another version's bytes); a
    checksum mismatch then removes the bad file and raises :class:`ChecksumMismatch` (a ``ValueError``) naming both
    checksums; network errors, and a file whose size is not the one the server announced, raise ``DownloadError``.
    An interrupted download resumes only where the server's ETag / Last-Modified shows the file unchanged, or where
    ``md5`` checks the result; without either (a server that sends no validator, ``md5=None``) it starts again from
    byte 0. Calls for the same ``dest`` (threads or processes) take turns on the lock ``dest.lock``; a later one finds
    the finished file and returns it.
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
        resumed = part.is_file() and part.stat().st_size > 0  # a part an earlier run left
        _fetch(url, dest, part, timeout, progress, md5, wrong)
        if md5 is not None:
            got = file_md5(part)
            if got != md5.lower() and resumed:  # the old part may hold another version's bytes (a server that kept
                _drop_part(part)  # no validator): the whole file once more, from byte 0, decides
                _fetch(url, dest, part, timeout, progress, md5, wrong)
                got = file_md5(part)
            if got != md5.lower():
                _drop_part(part)
                raise ChecksumMismatch(
                    f"checksum mismatch for {url}: MD5 {got}, expected the published {md5.lower()}; the corrupt "
                    f"download was removed ({part}). Run again to download it afresh; if this repeats, the server "
                    f"serves another file than the published one: download that by hand and place it at {dest}"
                )
        os.replace(part, dest)
        _validator_file(part).unlink(missing_ok=True)
    return dest


def _fetch(url: str, dest: Path, part: Path, timeout: float, progress: bool, md5: str | None, wrong: str) -> None:
    """:func:`_stream`, its network and disk errors raised as :class:`DownloadError` naming the way on (``wrong``: what
    is wrong with a file already at ``dest``, or empty)."""
    try:
        _stream(url, dest, part, timeout, progress, md5)
    except DownloadError:
        raise
    except urllib.error.HTTPError as e:  # the server answered: no network problem, and no part to resume
        later = e.code >= 500 or e.code in (408, 429)  # the server failed, timed out or asks to slow down
        hint = "Run again later, or" if later else "If the file has moved,"
        raise DownloadError(f"{url} answered HTTP {e.code} {e.reason}; nothing more was written to {dest}. {hint} "
                            f"download it by hand and place it at {dest}{_md5_note(md5)}{wrong}") from e
    except (OSError, http.client.HTTPException) as e:
        if is_local_error(e):  # this machine's disk
            raise DownloadError(f"could not write {part} while downloading {url} ({e.strerror}); free space or "
                                f"fix the folder's permissions, then run again to resume") from e
        reason = getattr(e, "reason", e) if isinstance(e, OSError) else repr(e)
        resume = f"; run again to resume from {part}" if part.is_file() and part.stat().st_size else ""
        raise _offline_error(url, dest, f"{reason}{resume}{wrong}", md5) from e


def _finished(dest: Path, md5: str | None) -> bool:
    return dest.is_file() and (md5 is None or file_md5(dest) == md5.lower())


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
