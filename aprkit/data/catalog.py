"""The published datasets that :func:`aprkit.data.sources.ensure_source` finds or downloads (``SOURCES``, by the
names below): where each file comes from, its MD5, the folder it lands in and the check of its layout.

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
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CIFAR_BINARY", "RemoteFile", "Source", "SOURCES", "check_files"]

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
    """Complete with ``labels.npy`` and the 15 benchmark corruptions (the archive also holds the 4 extra ones; a
    root without them is complete for the benchmark, and the reader names an extra one that is asked for)."""
    from .corrupted import BENCHMARK_CORRUPTIONS

    return _missing([p / "labels.npy"] + [p / f"{c}.npy" for c in BENCHMARK_CORRUPTIONS])


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
    """Complete when each of the 15 benchmark corruptions has its severity folders ``1`` to ``5`` holding the same
    number (at least one) of class folders (not hidden ones, as the reader): folder checks only (a missing image inside
    a class folder goes unseen)."""
    from .corrupted import BENCHMARK_CORRUPTIONS, corruption_folder

    folders = {c: corruption_folder(p, c) for c in BENCHMARK_CORRUPTIONS}
    gone = [c for c, d in folders.items() if d is None]
    if gone:
        return f"missing the corruption folders {', '.join(gone)}"
    problems, counts = [], set()
    for c, d in folders.items():
        for s in range(1, 6):
            sdir = d / str(s)  # type: ignore[operator]
            n = sum(1 for e in os.scandir(sdir) if e.is_dir() and not e.name.startswith(".")) if sdir.is_dir() else 0
            counts.add(n)
            if n == 0:
                problems.append(f"{c}/{s}")
    if problems:
        shown = ", ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
        return f"missing (or without class folders) the severity folders {shown} ({len(problems)} of 75)"
    if len(counts) > 1:
        return (f"severity folders holding different numbers of class folders ({', '.join(map(str, sorted(counts)))}):"
                " an interrupted extraction or copy")
    return None


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
