"""Where the published datasets come from, and ``ensure_source``: find them on disk or download them.

=======================  ====================================================================================
``cifar10``              ``cifar-10-python.tar.gz`` from the authors' page (Krizhevsky 2009): the pickled batches
                         ``cifar-10-batches-py``, the layout torchvision reads
``cifar100``             ``cifar-100-python.tar.gz``, same page: ``cifar-100-python``
``cifar10-c``            Zenodo record 2535967 ``CIFAR-10-C.tar`` (Hendrycks & Dietterich 2019)
``cifar100-c``           Zenodo record 3555552 ``CIFAR-100-C.tar``
``tinyimagenet-c``       Zenodo record 2536630 ``Tiny-ImageNet-C.tar``
``imagenet-c``           Zenodo record 2235448 ``noise.tar``, ``blur.tar``, ``weather.tar``, ``digital.tar``
                         (the 15 benchmark corruptions; the 15 GB ``extra.tar`` is not fetched)
``cue-conflict``         the 1,280 Geirhos et al. stimuli from the ``rgeirhos/texture-vs-shape`` GitHub archive
                         (``stimuli/style-transfer-preprocessed-512``), at a pinned commit
``cue-conflict-decisions``  the raw decision CSVs: 10 human subjects (``bethgelab/model-vs-human``
                         ``raw-data/cue-conflict``) and the published ResNet-50 (``texture-vs-shape``), pinned commits
=======================  ====================================================================================

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .._io import atomic_write_text
from .._text import nearest_names
from .archives import UnreadableArchive, extract_archive, merge_tree, remove_tree
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
_TVS_COMMIT = "ccd0c01d42c0a8a834e90ec141e7f24fa915dc23"  # rgeirhos/texture-vs-shape, 2 May 2023
_MVH_COMMIT = "79ed7cd1d9ac3a114e71b6638f0a98bdd627316c"  # bethgelab/model-vs-human, 17 Apr 2025


@dataclass(frozen=True)
class RemoteFile:
    """One published file: URL, file name, MD5 (``None``: ask the Zenodo record ``zenodo`` for it)."""

    url: str
    name: str
    md5: str | None = None
    zenodo: str | None = None


@dataclass(frozen=True)
class Source:
    """A dataset: its files, the folder it lands in, the folder inside the extracted archives that holds
    the published layout (``inner``; ``None``: the files are not archives) and a layout ``check`` that
    returns ``None`` when complete or a sentence saying what is missing."""

    name: str
    folder: str
    files: tuple[RemoteFile, ...]
    inner: str | None
    check: Callable[[Path], str | None]


def _missing(paths: list[Path]) -> str | None:
    gone = [p.name for p in paths if not p.exists()]
    return None if not gone else f"missing {', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''} ({len(gone)} files)"


def _check_cifar_c(p: Path) -> str | None:
    from .corrupted import ALL_CORRUPTIONS

    return _missing([p / "labels.npy"] + [p / f"{c}.npy" for c in ALL_CORRUPTIONS])


#: the pickled layouts of the CIFAR archives: name -> (folder, files per split, label key, meta file, class names key)
CIFAR_BINARY: dict[str, tuple[str, dict[str, list[str]], bytes, str, bytes]] = {
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                b"labels", "batches.meta", b"label_names"),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]},
                 b"fine_labels", "meta", b"fine_label_names"),
}


def _cifar(name: str, archive: str, md5: str) -> Source:
    """The source of a CIFAR archive from the authors' page: its pickled layout's folder (``CIFAR_BINARY``) is both
    the archive's top folder and where it lands; complete when every batch and the meta file are there."""
    folder, files, _, meta, _ = CIFAR_BINARY[name]
    return Source(name, folder, (RemoteFile(f"{_KRIZ}/{archive}", archive, md5),), folder,
                  check_files((*files["train"], *files["test"], meta)))


def _check_folder_c(p: Path) -> str | None:
    from .corrupted import BENCHMARK_CORRUPTIONS, available_corruptions

    gone = sorted(set(BENCHMARK_CORRUPTIONS) - set(available_corruptions(p)))
    return None if not gone else f"missing the corruption folders {', '.join(gone)}"


def _check_cue_conflict(p: Path) -> str | None:
    from .cue_conflict import scan_cue_conflict

    try:
        n = len(scan_cue_conflict(p))
    except (FileNotFoundError, ValueError) as e:
        return str(e)
    return None if n == 1280 else f"{n} stimuli instead of the published 1,280"


def check_files(names: tuple[str, ...]) -> Callable[[Path], str | None]:
    """A layout check (``Source.check``): ``None`` when a folder holds every file of ``names``, else which miss."""
    return lambda p: _missing([p / n for n in names])


def _zenodo(record: str, name: str, md5: str | None) -> RemoteFile:
    return RemoteFile(f"https://zenodo.org/records/{record}/files/{name}", name, md5, record)


_HUMANS = tuple(f"cue-conflict_subject-{i:02d}_session_1.csv" for i in range(1, 11))
#: MD5s computed from the files at the pinned commits (identical to texture-vs-shape's style-transfer CSVs)
_HUMAN_MD5 = ("85a0dd1b5814a03d92b1119d80e4bc58", "bd78657d3026c7b08d86f74bf18dcbfc",
              "c6f00b8c321f809e3fe2eac2fb1e42c1", "2c69d7df2c3cc024174980d8c5dd854f",
              "62d80fbde743d136a1da93561cb0190c", "90fb714cc6455565cad3f1807b047d3b",
              "2ada5ef0b86a20e0a50411bad90f568e", "992de37cc0392378efb7fad1a5eb434a",
              "d574f5912b4425019709cd16417f690a", "6d0734b9abc5ede1bb090d66e6c1853d")
_KRIZ = "https://www.cs.toronto.edu/~kriz"
_RESNET50 = "style-transfer-512-nomask-experiment_resnet50_session-1.csv"
_MVH_RAW = f"https://raw.githubusercontent.com/bethgelab/model-vs-human/{_MVH_COMMIT}/raw-data"
_TVS_RAW = f"https://raw.githubusercontent.com/rgeirhos/texture-vs-shape/{_TVS_COMMIT}/raw-data"

#: name -> Source. CIFAR's MD5s are the ones its page publishes (and torchvision pins); the -C sets' are the ones
#: the Zenodo records publish (CIFAR-10-C, CIFAR-100-C, ImageNet-C as also pinned by other loaders); Tiny-ImageNet-C's
#: is read from its Zenodo record at download time (not pinned: we could not confirm it). GitHub archives are not
#: byte-stable, so the stimuli are checked by content.
SOURCES: dict[str, Source] = {
    "cifar10": _cifar("cifar10", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": _cifar("cifar100", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
    "cifar10-c": Source("cifar10-c", "CIFAR-10-C",
                        (_zenodo("2535967", "CIFAR-10-C.tar", "56bf5dcef84df0e2308c6dcbcbbd8499"),),
                        "CIFAR-10-C", _check_cifar_c),
    "cifar100-c": Source("cifar100-c", "CIFAR-100-C",
                         (_zenodo("3555552", "CIFAR-100-C.tar", "11f0ed0f1191edbf9fa23466ae6021d3"),),
                         "CIFAR-100-C", _check_cifar_c),
    "tinyimagenet-c": Source("tinyimagenet-c", "Tiny-ImageNet-C", (_zenodo("2536630", "Tiny-ImageNet-C.tar", None),),
                             "Tiny-ImageNet-C", _check_folder_c),
    "imagenet-c": Source("imagenet-c", "ImageNet-C", (
        _zenodo("2235448", "noise.tar", "e80562d7f6c3f8834afb1ecf27252745"),
        _zenodo("2235448", "blur.tar", "2d8e81fdd8e07fef67b9334fa635e45c"),
        _zenodo("2235448", "weather.tar", "33ffea4db4d93fe4a428c40a6ce0c25d"),
        _zenodo("2235448", "digital.tar", "89157860d7b10d5797849337ca2e5c03"),
    ), "", _check_folder_c),
    "cue-conflict": Source("cue-conflict", "cue-conflict", (RemoteFile(
        f"https://github.com/rgeirhos/texture-vs-shape/archive/{_TVS_COMMIT}.zip",
        f"texture-vs-shape-{_TVS_COMMIT[:7]}.zip"),),
        f"texture-vs-shape-{_TVS_COMMIT}/stimuli/style-transfer-preprocessed-512", _check_cue_conflict),
    "cue-conflict-decisions": Source("cue-conflict-decisions", "cue-conflict-decisions", tuple(
        RemoteFile(f"{_MVH_RAW}/cue-conflict/{n}", n, m)
        for n, m in zip(_HUMANS, _HUMAN_MD5, strict=True)) + (RemoteFile(
            f"{_TVS_RAW}/style-transfer-512-nomask-experiment-trained-CNNs/{_RESNET50}", _RESNET50,
            "66c4ae7cb3fbf9669614a1593e6d2fd6"),),
        None, check_files(_HUMANS + (_RESNET50,))),
}


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
        (target / MARKER).unlink()  # files removed since the marker was written: fetched again below
    if target.exists() and not target.is_dir():  # a download would fail only after fetching everything
        raise NotADirectoryError(f"{target} is a file, not a folder: {source.name} goes into a folder of that name; "
                                 "move the file away or choose another data root (--data-root)")
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
            if not rest:
                raise
            places = "; ".join(f"{_mirrored(g.url, mirror)} at {d} ({_md5_hint(g)})" for g, d in rest)
            raise DownloadError(f"{e}. {source.name} needs {len(rest)} more file(s), each placed the same way: "
                                f"{places}") from e
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
        raise
    merge_tree(inner, target)
    remove_tree(extracted)
    if not keep_archives:
        remove_tree(staging)
