"""Readers for the published corruption benchmarks.

- CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich): ``root/<corruption>.npy``, uint8 ``(5 * N, 32, 32, 3)``
  with severities 1..5 stacked in order (rows ``(s - 1) * N : s * N``), and ``root/labels.npy`` ``(5 * N,)``
  (or ``(N,)``). Files are memory-mapped (``np.load(mmap_mode="r")``) and only the selected severity's
  rows are ever read.
- ImageNet-C / Tiny-ImageNet-C: ``root/<corruption>/<severity>/<wnid>/<image>``; class index = sorted wnid
  order (the standard ImageNet / Tiny-ImageNet label order). A family level
  (``root/<family>/<corruption>/...``, as in some downloads) is found too.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from aprkit.corruptions.names import ALL, BENCHMARK, FAMILIES, canonical_name

from .arrays import ArrayDataset, load_npy
from .folder import ImageFolderDataset, find_classes
from .loading import attribute_labels

__all__ = ["BENCHMARK_CORRUPTIONS", "ALL_CORRUPTIONS", "cifar_c", "imagenet_c", "available_corruptions",
           "check_cells_present", "check_matches_clean"]

#: the 15 benchmark corruptions, in the published order (``aprkit.corruptions.names``)
BENCHMARK_CORRUPTIONS: tuple[str, ...] = BENCHMARK
#: benchmark + the four extra corruptions shipped with the -C datasets
ALL_CORRUPTIONS: tuple[str, ...] = ALL

_CIFAR_LAYOUT = "<root>/<corruption>.npy (uint8 (5*N, 32, 32, 3), severities 1..5 stacked) + <root>/labels.npy"
_FOLDER_LAYOUT = "<root>/<corruption>/<severity 1..5>/<class>/<image>"


@overload
def _check_severity(severity: int, allow_all: Literal[False]) -> int: ...
@overload
def _check_severity(severity: int | None, allow_all: Literal[True]) -> int | None: ...


def _check_severity(severity: int | None, allow_all: bool) -> int | None:
    if severity is None and allow_all:
        return None
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= int(severity) <= 5:
        valid = "an int in 1..5 or None (all five)" if allow_all else "an int in 1..5"
        raise ValueError(f"severity must be {valid}, got {severity!r}")
    return int(severity)


def available_corruptions(root: str | Path) -> list[str]:
    """Corruptions present under a -C root (either layout), in benchmark order."""
    root = Path(root)
    return [c for c in ALL_CORRUPTIONS if (root / f"{c}.npy").is_file() or corruption_folder(root, c) is not None]


def check_cells_present(root: str | Path, grid: Sequence[tuple[str, int]], layout: Literal["cifar", "folder"],
                        what: str = "the -C set") -> None:
    """Raise ``FileNotFoundError`` naming the missing files and the layout unless the -C root (either layout) holds
    every ``(corruption, severity)`` cell of ``grid``: a CIFAR-C ``<corruption>.npy`` with that severity stacked
    (:func:`_stacked_severities`), or a folder-layout cell folder. File and folder checks only (no image is read), so
    a run can refuse before its first cell rather than at the missing one. ``layout``: the reader's (the spec's
    kind)."""
    root = Path(root).expanduser()
    stacked = layout == "cifar"
    expected = f"the {'CIFAR-C layout ' + _CIFAR_LAYOUT if stacked else 'folder layout ' + _FOLDER_LAYOUT}"
    if not root.is_dir():
        raise FileNotFoundError(f"{what} {root} does not exist; expected {expected}")
    held = _stacked_severities(root) if stacked else []
    cells, files = [], []
    for c, s in grid:
        name = canonical_name(c)
        if stacked:
            gone = not (root / f"{name}.npy").is_file()
            if gone or int(s) not in held:
                cells.append(f"{c}-{s}")
                files.append(f"{name}.npy is missing" if gone else f"{name}.npy holds severities {held}, not {s}")
        elif cell_folder(root, name, s) is None:
            cells.append(f"{c}-{s}")
            files.append(f"{name}/{s} is missing")
    if cells:
        shown = list(dict.fromkeys(files))
        raise FileNotFoundError(
            f"{what} {root} lacks {len(cells)} of the {len(grid)} requested cells ({', '.join(cells[:8])}"
            f"{' ...' if len(cells) > 8 else ''}): {'; '.join(shown[:3])}{' ...' if len(shown) > 3 else ''}; expected "
            f"{expected}. Write them (aprkit corrupt), or ask for the corruptions and severities it holds")


def cifar_c(root: str | Path, corruption: str, severity: int | None = None, *,
            classes: Sequence[str] | None = None) -> ArrayDataset:
    """One corruption (and severity 1..5, or ``None`` for all five stacked) of CIFAR-10-C / CIFAR-100-C.

    Returns a memory-mapped :class:`ArrayDataset`. Raises ``FileNotFoundError`` naming the missing file and
    the expected layout, ``ValueError`` for inconsistent shapes.
    """
    root = Path(root).expanduser()
    corruption = canonical_name(corruption)
    severity = _check_severity(severity, allow_all=True)
    data_path, label_path = root / f"{corruption}.npy", root / "labels.npy"
    for p in (data_path, label_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing; expected the CIFAR-C layout {_CIFAR_LAYOUT}")
    arr = load_npy(data_path)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
        raise ValueError(f"{data_path} must hold uint8 images (5*N, H, W, 3), got dtype {arr.dtype} shape {arr.shape}")
    held = _stacked_severities(root)
    k = len(held)
    if arr.shape[0] % k:
        raise ValueError(f"{data_path} has {arr.shape[0]} images, not a multiple of {k} severities ({held})")
    n = arr.shape[0] // k
    labels = load_npy(label_path)
    if labels.ndim != 1 or labels.shape[0] not in (n, k * n):
        raise ValueError(
            f"{label_path} must have shape ({k * n},) or ({n},) to match {data_path} {arr.shape}, got {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{label_path} must hold integer class labels, got dtype {labels.dtype}")
    if labels.size and int(labels.min()) < 0:  # a -1 ("no label") left the pairing with the clean set unchecked
        raise ValueError(f"{label_path} holds negative labels (down to {int(labels.min())}); a -C set's labels are "
                         "class indices >= 0, the clean set's in its order")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape[0] == k * n and k > 1 and not all(np.array_equal(labels[:n], labels[i * n:(i + 1) * n])
                                                      for i in range(1, k)):
        raise ValueError(  # a set of other severities (its manifest lost) read as 1..5 would pair the wrong images
            f"{label_path} is not one label sequence repeated for the {k} severities {held} that {data_path} "
            f"({arr.shape[0]} images) is read as holding, as CIFAR-10-C's labels.npy is: the files hold other "
            "severities (an aprkit corrupt set of some severities whose manifest.json is gone?) or do not belong "
            "together")
    classes = classes if classes is not None else _recorded_classes(root)
    if severity is None:
        if held != [1, 2, 3, 4, 5]:
            raise ValueError(f"{root} holds severities {held} (its manifest.json), not 1..5 in order: open one "
                             "severity at a time")
        lab = labels if labels.shape[0] == 5 * n else np.tile(labels, 5)
        return ArrayDataset(data_path, lab, start=0, stop=5 * n, classes=classes)
    if severity not in held:
        raise ValueError(f"{root} holds severities {held} only (its manifest.json), not severity {severity}")
    lo = held.index(severity) * n
    lab = labels[lo : lo + n] if labels.shape[0] == k * n else labels
    return ArrayDataset(data_path, lab, start=lo, stop=lo + n, classes=classes)


def _stacked_severities(root: Path) -> list[int]:
    """The severities stacked in ``root``'s CIFAR-C files, in file order: those an ``aprkit corrupt`` manifest
    (``manifest.json``, ``params.severities``) records, else the published 1..5 (another tool's ``manifest.json``
    says nothing about them)."""
    from aprkit.corruptions.manifest import read_manifest

    data = read_manifest(root)
    path = root / "manifest.json"
    if data is None:
        try:  # none or another tool's: the published layout; a damaged one (of aprkit's, maybe) is no evidence
            if path.is_file():
                json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} cannot be read ({e}), so which severities {root} holds is unknown; restore it "
                             "(aprkit corrupt writes it) or remove it for the published 1..5 layout") from e
        return [1, 2, 3, 4, 5]
    try:
        held = data["params"]["severities"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} does not say which severities {root} holds ({e}); expected an aprkit corrupt "
                         "manifest with params.severities") from e
    if (not isinstance(held, list) or not held or len(set(held)) != len(held)
            or not all(isinstance(v, int) and 1 <= v <= 5 for v in held)):
        raise ValueError(f"{path} lists severities {held!r}; expected distinct integers in 1..5")
    return held


def _recorded_classes(root: Path) -> list[str] | None:
    """The class names an ``aprkit corrupt`` manifest of ``root`` records (``info.classes``), else ``None``."""
    from aprkit.corruptions.manifest import read_manifest

    names = ((read_manifest(root) or {}).get("info") or {}).get("classes")
    return [str(c) for c in names] if isinstance(names, list) and names else None


def _check_finished(root: Path, entry: str, path: Path) -> None:
    """Refuse an output that the ``aprkit corrupt`` manifest of ``root`` lists as begun but not complete: its run is
    still writing it or stopped part way, and reading it would evaluate on whichever images were written so far."""
    from aprkit.corruptions.manifest import MANIFEST, read_manifest

    data = read_manifest(root)  # none (a published download): nothing to check
    if data is not None and entry in (data.get("started") or []) and entry not in (data.get("complete") or []):
        raise ValueError(f"{path} is unfinished: {root / MANIFEST} lists {entry} as begun, not complete (its aprkit "
                         "corrupt run is still writing it or stopped part way); run the same aprkit corrupt command "
                         "again to finish it")


def cell_folder(root: str | Path, corruption: str, severity: int) -> Path | None:
    """The folder of one (corruption, severity) cell of a folder-layout -C root (a family level found too), or
    ``None`` when it is missing."""
    try:
        cdir = corruption_folder(Path(root).expanduser(), canonical_name(corruption))
    except ValueError:  # an unknown name: the reader says so
        return None
    return None if cdir is None or not (cdir / str(severity)).is_dir() else cdir / str(severity)


def corruption_folder(root: Path, corruption: str) -> Path | None:
    """The folder of ``corruption`` in a -C folder layout: ``root/<corruption>`` or ``root/<family>/<corruption>``
    (ImageNet-C's archives), ``None`` when neither is there."""
    if (root / corruption).is_dir():
        return root / corruption
    for fam in FAMILIES:
        if (root / fam / corruption).is_dir():
            return root / fam / corruption
    return None


def imagenet_c(root: str | Path, corruption: str, severity: int, *, classes: Sequence[str] | None = None,
               **kw) -> ImageFolderDataset:
    """One corruption x severity of ImageNet-C / Tiny-ImageNet-C (folder layout), decoded per image.

    ``classes`` fixes the label order (default: the wnid folders of all the corruption's severities, sorted;
    warns when this severity lacks some, or when WordNet-id folders number neither 1000 nor 200); extra keywords
    (``resize``, ``crop``, ``transform``) go to :class:`ImageFolderDataset`.
    """
    root = Path(root).expanduser()
    corruption = canonical_name(corruption)
    severity = _check_severity(severity, allow_all=False)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist; expected the -C folder layout {_FOLDER_LAYOUT}")
    cdir = corruption_folder(root, corruption)
    if cdir is None:
        raise FileNotFoundError(f"{root / corruption} is missing; expected the -C folder layout {_FOLDER_LAYOUT}")
    sdir = cdir / str(severity)
    if not sdir.is_dir():
        raise FileNotFoundError(f"{sdir} is missing; expected the -C folder layout {_FOLDER_LAYOUT}")
    _check_finished(root, f"{corruption}/{severity}", sdir)
    if classes is None:
        classes = _severity_classes(cdir, sdir)
    return ImageFolderDataset(sdir, classes=classes, **kw)


_WARNED: set[tuple[str, str]] = set()


def _severity_classes(cdir: Path, sdir: Path) -> list[str]:
    """The class folders of every severity of one corruption, sorted: a severity folder that lacks some (a partial
    copy or extraction) keeps the others at their labels instead of shifting every later one; it warns."""
    found = set(find_classes(sdir))
    union = set(found)
    for sibling in cdir.iterdir():
        if sibling != sdir and sibling.name in ("1", "2", "3", "4", "5") and sibling.is_dir():
            union.update(find_classes(sibling))
    if union != found and (str(sdir), "missing") not in _WARNED:
        _WARNED.add((str(sdir), "missing"))  # once per folder and process (a -C evaluation reads it per cell)
        missing = sorted(union - found)
        warnings.warn(f"{sdir} lacks {len(missing)} class folder(s) that the other severities of {cdir.name} hold "
                      f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}): a partial copy? The others "
                      "keep their labels (sorted over all severities)", RuntimeWarning, stacklevel=3)
    if (len(union) not in (1000, 200) and union and all(re.fullmatch(r"n\d{8}", c) for c in union)
            and (str(cdir.parent), "wnids") not in _WARNED):
        _WARNED.add((str(cdir.parent), "wnids"))  # once per -C root and process
        warnings.warn(f"{sdir} holds {len(union)} WordNet-id class folders, not ImageNet's 1000 or Tiny-ImageNet's "
                      "200: labels are positions among these folders, so a model with the full label space needs "
                      "classes= (its wnids in label order)", RuntimeWarning, stacklevel=3)
    return sorted(union)


def check_matches_clean(corrupted: Any, clean: Any, limit: int | None = None, what: str = "the -C set") -> None:
    """Raise ``ValueError`` unless ``corrupted`` has as many images as ``clean`` (both cut to ``limit``) and
    the same image shape ``(C, H, W)``: an on-disk -C set must be a corrupted copy of the clean set evaluated."""
    n_c, n_clean = len(corrupted), len(clean)
    if limit is not None:
        n_c, n_clean = min(n_c, int(limit)), min(n_clean, int(limit))
    cut = f" (of the first {limit} asked for: limit {limit})" if limit is not None else ""
    if n_c != n_clean:
        raise ValueError(f"{what} has {n_c} images but the clean set has {n_clean}{cut}; "
                         "expected a corrupted copy of the clean test set, image for image")
    names_c, names_clean = getattr(corrupted, "classes", None), getattr(clean, "classes", None)
    if names_c and names_clean and list(names_c) != list(names_clean):
        gone = [c for c in names_clean if c not in set(names_c)]
        raise ValueError(f"{what} has other classes than the clean set ({len(names_c)} against {len(names_clean)}"
                         f"{'; missing ' + ', '.join(map(str, gone[:5])) if gone else ''}): its labels would not be "
                         "the clean set's (an ImageNet-C severity folder lacking a class shifts every later label)")
    if n_c:
        shape_c, shape_clean = tuple(np.shape(corrupted[0][0])), tuple(np.shape(clean[0][0]))
        if shape_c != shape_clean:
            raise ValueError(f"{what} has images of shape {shape_c} but the clean set has {shape_clean}; "
                             "expected the same image size (C, H, W): bring a clean folder to the -C set's size as "
                             "it was written, e.g. 'folder:ROOT?resize=256&crop=224' for ImageNet-C's 224 px")
        lab_c, lab_clean = attribute_labels(corrupted), attribute_labels(clean)  # no image decoded
        if lab_c is None or lab_clean is None:
            return
        lab_c, lab_clean = lab_c[:n_c].cpu(), lab_clean[:n_c].cpu()
        differ = lab_c != lab_clean
        if bool((lab_c >= 0).all()) and bool((lab_clean >= 0).all()) and bool(differ.any()):
            bad = int(differ.nonzero()[0])
            raise ValueError(f"{what} is not paired with the clean set: image {bad} has label {int(lab_c[bad])} there "
                             f"and {int(lab_clean[bad])} in the clean set ({int(differ.sum())} of the "
                             f"first {n_c} differ); expected a corrupted copy of the clean test set in the same order "
                             "(a CIFAR PNG tree needs its test_order.csv; an ImageNet-C folder the clean classes; a "
                             "set that aprkit corrupt wrote from ROOT/test follows its sorted class folders: pair it "
                             "with folder:ROOT/test, not cifar10:ROOT)")
