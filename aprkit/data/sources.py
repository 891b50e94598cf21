"""``ensure_source``: find a published dataset on disk or download it (``ensure_source("cifar10-c", download=True)``;
the datasets, their files and checksums are listed in :mod:`aprkit.data.catalog`).

Every dataset lands in ``data_root()/<folder>`` (``$APRKIT_DATA`` or ``~/.cache/aprkit``; see
:func:`aprkit.data.download.data_root`) unless a folder is given. A layout that passed its check carries a
marker file ``.aprkit-complete`` and is never downloaded again. ``$APRKIT_DOWNLOAD_MIRROR`` (or
``mirror=``) replaces the scheme and host of every URL, e.g. for a local mirror.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import re
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path
from urllib.parse import urlsplit

from .._io import atomic_write_text
from .._text import nearest_names
from .archives import UnreadableArchive, extract_archive, merge_tree, remove_tree
from .catalog import CIFAR_BINARY, SOURCES, RemoteFile, Source, check_files
from .download import (
    DATA_ENV,
    ZENODO_API,
    ChecksumMismatch,
    DownloadError,
    data_root,
    download_file,
    file_lock,
    zenodo_md5,
)

__all__ = ["CIFAR_BINARY", "MARKER", "MIRROR_ENV", "RemoteFile", "Source", "SOURCES", "check_files", "ensure_source"]

MARKER = ".aprkit-complete"
MIRROR_ENV = "APRKIT_DOWNLOAD_MIRROR"


def _mirrored(url: str, mirror: str | None) -> str:
    if not mirror:
        return url
    parts = urlsplit(url)
    return mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def _write_marker(target: Path, src: Source) -> None:
    try:
        (target / MARKER).write_text(json.dumps({"source": src.name, "files": {f.name: f.url for f in src.files}}))
    except OSError:  # a read-only copy is still usable; it is checked again next time
        pass


def _extract_or_discard(archive: Path, md5: str | None, placed: bool, dest: Path, inner: str, progress: bool) -> None:
    """Extract ``archive``; one that cannot be read is removed when no checksum vouched for it (a download cut short
    by a server that sent no length looks complete), so that the next run fetches it again, unless it was there
    before this call (``placed``, perhaps by hand: kept, and named by :func:`_discard_unverified`)."""
    try:
        # a verified archive is the published file: its end needs no check (nor, compressed, a second pass)
        extract_archive(archive, dest, progress=progress, links_within=inner, check_end=md5 is None)
    except (UnreadableArchive, EOFError, zipfile.BadZipFile, tarfile.ReadError, tarfile.CompressionError,
            zlib.error, gzip.BadGzipFile, lzma.LZMAError) as err:
        # only an unreadable archive is discarded: a full disk, a permission error or a refused member path is
        # reported as it is, and the archive stays
        if md5 is not None:
            raise
        if placed:
            raise ValueError(f"the archive {archive} could not be extracted ({err})") from err
        archive.unlink(missing_ok=True)
        msg = (f"the downloaded archive {archive} could not be extracted ({err}); it has no published checksum, so it "
               "was probably cut short: it was removed, run again to download it afresh")
        raise ValueError(msg) from err


def _discard_unverified(archives: list[tuple[Path, str | None, bool]], source: Source, err: ValueError) -> None:
    """After ``err`` refused the archives (a wrong layout, a refused member): remove the ones this call downloaded
    with no checksum to vouch for them (kept, they would be taken as finished on every later run, and no fixed server
    could replace them), and name the unchecked ones that were there before (``placed``: perhaps by hand, kept).
    Raises ``ValueError`` saying so; returns when there is none (``err`` is then raised as it is)."""
    fetched = [a for a, md5, placed in archives if md5 is None and not placed and a.is_file()]
    kept = [a for a, md5, placed in archives if md5 is None and placed and a.is_file()]
    if not fetched and not kept:
        return
    for a in fetched:
        a.unlink(missing_ok=True)
    urls = ", ".join(f.url for f in source.files if f.md5 is None)
    parts = [f"the downloaded archive(s) {', '.join(map(str, fetched))} had no published checksum and were removed, "
             "so the next run downloads them afresh"] if fetched else []
    parts += [f"the archive(s) {', '.join(map(str, kept))}, already there (not downloaded by this run, no checksum), "
              f"are not the published file(s): replace or delete them ({urls})"] if kept else []
    raise ValueError(f"{err}. {'; '.join(parts)}") from err


def ensure_source(
    source: str | Source,
    target: str | os.PathLike | None = None,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    progress: bool = True,
    mirror: str | None = None,
    keep_archives: bool = False,
) -> Path:
    """The folder holding ``source``'s published layout, downloaded first when ``download`` and incomplete.

    ``target`` defaults to ``data_root(root) / source.folder``. A folder with the marker, or one that passes
    the layout check, is returned as it is (with ``download``, a marked folder is checked again: files removed since
    are fetched). Without ``download`` an incomplete folder raises
    ``FileNotFoundError`` naming the path, the URLs and how to supply the data. Downloads of one ``target``
    (threads or processes) take turns on the lock of its staging folder (``.aprkit-downloads-<name>.lock`` beside
    it, or beside where it points when it is a link): they share the staging folder; a later one finds the marker
    the first one wrote.
    """
    given = mirror is not None
    if isinstance(source, str):
        if source not in SOURCES:
            raise ValueError(f"unknown data source {source!r}{nearest_names(source, list(SOURCES))}; "
                             f"valid: {', '.join(SOURCES)}")
        source = SOURCES[source]
    target = Path(target).expanduser().absolute() if target is not None else data_root(root) / source.folder
    if (target / MARKER).is_file():
        if not download or source.check(target) is None:  # trusted, but download=True asks for the whole layout
            return target
        # files removed since the marker was written: fetched again below (another process, a torchrun rank, may have
        # removed the marker first)
        (target / MARKER).unlink(missing_ok=True)
    if target.exists() and not target.is_dir():  # a download would fail only after fetching everything
        raise NotADirectoryError(f"{target} is a file, not a folder: {source.name} goes into a folder of that name; "
                                 "move the file away or choose another data root (--data-root)")
    if target.is_symlink() and not target.exists():  # a download would fetch everything, then fail to merge it
        raise FileNotFoundError(f"{target} is a link to {os.readlink(target)}, which does not exist (a disk not "
                                f"mounted?): mount it, or remove the link to put {source.name} at {target} itself")
    problem = source.check(target) if target.is_dir() else f"{target} does not exist"
    if problem is None:
        _write_marker(target, source)
        return target
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    if not download:
        urls = ", ".join(_mirrored(f.url, mirror) for f in source.files[:4]) + (" ..." if len(source.files) > 4 else "")
        raise FileNotFoundError(
            f"{source.name} not found at {target} ({problem}). Pass download=True (aprkit eval --download) to fetch "
            f"it from {urls}, or place the extracted published layout there ({_inner_hint(source)}the data root is "
            f"${DATA_ENV} or --data-root, default ~/.cache/aprkit)"
        )
    mirror = _check_mirror(mirror, given)
    _refuse_generated(target, source)
    with file_lock(_staging(target)):
        if (target / MARKER).is_file():  # another call finished it while this one waited
            return target
        _fetch(source, target, mirror, progress, keep_archives)
        problem = source.check(target)
        if problem is not None:
            raise ValueError(f"downloaded {source.name} into {target} but the layout is incomplete: {problem}")
        _write_marker(target, source)
    return target


def _refuse_generated(target: Path, source: Source) -> None:
    """Refuse to complete a folder that ``aprkit corrupt`` wrote (its ``manifest.json``): the published arrays would
    replace its files while the manifest, which the readers trust for the severities stacked and the class names,
    stayed and described them wrongly."""
    from aprkit.corruptions.manifest import MANIFEST, read_manifest

    if read_manifest(target) is not None:
        raise ValueError(f"{target} holds a set generated by aprkit corrupt ({target / MANIFEST}), not the published "
                         f"{source.name}: a download would mix the two; download into another data root (--data-root) "
                         "or move that folder away")


def _check_mirror(mirror: str | None, given: bool) -> str | None:
    """The mirror a download uses (the argument when ``given``, else ``$APRKIT_DOWNLOAD_MIRROR``), checked to be a
    URL (a bare ``host:port/path`` failed later, in download_file, without naming the setting at fault)."""
    if mirror and urlsplit(mirror).scheme not in ("http", "https", "ftp", "file"):
        where = "mirror" if given else f"${MIRROR_ENV}"
        raise ValueError(f"{where} must be a URL such as http://host:port/path or file:///path, got {mirror!r}")
    return mirror


def _inner_hint(source: Source) -> str:
    """``"the contents of the archive's folder X; "`` for a source whose layout sits deeper in its archive."""
    if not source.inner or "/" not in source.inner:
        return ""
    return f"the contents of the archive's folder {source.inner}; "


def _staging(target: Path) -> Path:
    """The folder beside ``target`` that holds its archives while they are downloaded and extracted: beside where a
    link named ``target`` points (on the file system the data goes to) when that folder's parent is writable, else
    beside the link."""
    real = target.resolve()
    where = real if real != target and os.access(real.parent, os.W_OK) else target
    return where.parent / f".aprkit-downloads-{where.name}"


def _record_md5(f: RemoteFile, staging: Path, mirror: str | None) -> str:
    """The MD5 that ``f``'s Zenodo record publishes, kept beside its staged archive (``<name>.md5``, with the API it
    came from): a rerun with the archive already staged (an interrupted extraction, ``keep_archives``) checks it
    without the network. An unreadable or foreign kept value is asked for again; ``_fetch`` drops it on a mismatch."""
    assert f.zenodo is not None
    api = _mirrored(ZENODO_API, mirror)
    kept = _kept_md5(staging, f)
    try:
        value, _, source = kept.read_text(encoding="utf-8").strip().partition(" ")
        if re.fullmatch(r"[0-9a-f]{32}", value) and source == api:
            return value
    except (OSError, UnicodeDecodeError):  # absent or damaged: ask the record
        pass
    md5 = zenodo_md5(f.zenodo, f.name, api=api).lower()
    staging.mkdir(parents=True, exist_ok=True)
    atomic_write_text(kept, f"{md5} {api}\n")
    return md5


def _kept_md5(staging: Path, f: RemoteFile) -> Path:
    return staging / f"{f.name}.md5"


def _md5_hint(f: RemoteFile) -> str:
    return f"MD5 {f.md5}" if f.md5 else f"MD5 of Zenodo record {f.zenodo}" if f.zenodo else "no published MD5"


def _fetch_one(f: RemoteFile, dest: Path, target: Path, staging: Path, mirror: str | None, progress: bool
               ) -> tuple[Path, str | None, bool]:
    """Download ``f`` to ``dest``: ``(dest, MD5 or None, placed)`` (``placed``: there before, unchecked: by hand?)."""
    md5 = f.md5
    if md5 is None and f.zenodo is not None:
        try:
            md5 = _record_md5(f, staging, mirror)
        except DownloadError as e:  # offline: an archive placed by hand is used unchecked, else say where it goes
            if not dest.is_file():
                raise DownloadError(f"{e}. If this machine is offline, download {f.url} elsewhere and place it at "
                                    f"{dest} (it is then used without the published checksum), or extract it "
                                    f"into {target}") from e
            warnings.warn(f"{e}; using the archive already at {dest} without the published checksum",
                          RuntimeWarning, stacklevel=3)
    placed = dest.is_file() and md5 is None  # there before this call, unchecked: perhaps placed by hand
    try:
        return download_file(_mirrored(f.url, mirror), dest, md5, progress=progress), md5, placed
    except ChecksumMismatch:  # a kept record MD5 may be the wrong one, ask the record again
        _kept_md5(staging, f).unlink(missing_ok=True)
        raise


def _fetch(source: Source, target: Path, mirror: str | None, progress: bool, keep_archives: bool) -> None:
    """Download ``source``'s files and, for archives, extract them and merge their published layout into ``target``
    (the caller holds the lock on the staging folder). A failed download names the files still to fetch (offline, each
    can be placed by hand), and a checksum mismatch names the mirror the file came from."""
    staging = _staging(target)
    archives: list[tuple[Path, str | None, bool]] = []
    dests = [(staging if source.inner is not None else target) / f.name for f in source.files]  # archives: staged
    for i, f in enumerate(source.files):
        try:
            archives.append(_fetch_one(f, dests[i], target, staging, mirror, progress))
        except DownloadError as e:  # offline: every file still missing is named, each can be placed by hand
            rest = [(g, d) for g, d in zip(source.files[i + 1:], dests[i + 1:], strict=True) if not d.is_file()]
            # a mirror set long ago (in a shell profile) is named: the machine may be online and the file published
            via = (f" The file was asked of the mirror {mirror} (${MIRROR_ENV} or mirror=); unset it to fetch "
                   f"{f.url} itself." if mirror else "")
            if not rest and not via:
                raise
            places = "; ".join(f"{_mirrored(g.url, mirror)} at {d} ({_md5_hint(g)})" for g, d in rest)
            more = f" {source.name} needs {len(rest)} more file(s), each placed the same way: {places}" if rest else ""
            raise DownloadError(f"{e}.{via}{more}") from e
        except ChecksumMismatch as e:
            if not mirror:
                raise
            raise ChecksumMismatch(f"{e}. The file came from the mirror {mirror} (${MIRROR_ENV} or mirror=), not from "
                                   f"{f.url}: if this repeats, the mirror serves another file than the published one"
                                   ) from e
    if source.inner is None:
        return
    extracted = staging / "extracted"
    remove_tree(extracted)
    try:
        for a, md5, placed in archives:
            _extract_or_discard(a, md5, placed, extracted, source.inner, progress)
        inner = extracted / source.inner
        if not inner.is_dir():
            raise ValueError(f"the {source.name} archives hold no folder {source.inner!r}; expected the published "
                             "layout")
    except ValueError as err:
        _discard_unverified(archives, source, err)
        remove_tree(extracted)  # a half-extracted tree (GBs of ImageNet-C) is not left hidden in the staging folder
        raise
    try:
        merge_tree(inner, target)
    finally:  # (a failed merge too: the extracted tree is not left hidden in the staging folder)
        remove_tree(extracted)
    if not keep_archives:
        remove_tree(staging)
