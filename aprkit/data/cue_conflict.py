"""Reader for the Geirhos et al. (ICLR 2019) cue-conflict stimuli.

The published layout is ``<root>/<shape>/<shape>N-<texture>M.png``: the folder names the shape class,
the file name repeats it and names the texture class (``knife/knife1-airplane1.png`` is a knife shape
with airplane texture). There are 16 categories; the full set has 1,280 images (80 per shape folder,
80 of them with shape == texture). The dataset yields ``(image uint8 (3, H, W), shape label)`` like
every aprkit dataset and exposes the texture labels as an attribute.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .._hash import path_state
from .._text import nearest_names

__all__ = [
    "CUE_CONFLICT_CATEGORIES",
    "FULL_CONFLICTING",
    "FULL_SET_SIZE",
    "CueConflictStimulus",
    "parse_stimulus_name",
    "scan_cue_conflict",
    "CueConflict",
    "write_synthetic_cue_conflict",
]

#: the published set's images (16 shape folders of 80; 80 of them with shape == texture)
FULL_SET_SIZE = 1280
#: of them, the stimuli whose shape and texture differ: the ones a shape bias counts
FULL_CONFLICTING = 1200

#: the 16 entry-level categories of the benchmark, sorted (index i is label i)
CUE_CONFLICT_CATEGORIES: tuple[str, ...] = (
    "airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat",
    "chair", "clock", "dog", "elephant", "keyboard", "knife", "oven", "truck",
)

_NAME_RE = re.compile(r"^([a-z]+)(\d+)-([a-z]+)(\d+)\.png$")
_MAX_LISTED = 20


@dataclass(frozen=True)
class CueConflictStimulus:
    """One stimulus: its path, shape and texture category names and their label indices."""

    path: Path
    shape: str
    texture: str
    shape_label: int
    texture_label: int

    @property
    def conflicting(self) -> bool:
        """False for the stimuli whose shape and texture class agree (excluded from shape bias)."""
        return self.shape != self.texture


def parse_stimulus_name(name: str) -> tuple[str, str]:
    """Split a stimulus file name ``<shape>N-<texture>M.png`` into ``(shape, texture)`` category names.

    Only the base name is used (a directory part is ignored). Raises ``ValueError`` for a name that does
    not follow the pattern; the category names are not checked here (see ``scan_cue_conflict``).
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a str or path, got {type(name).__name__}")
    base = os.path.basename(os.fspath(name))
    m = _NAME_RE.match(base)
    if m is None:
        raise ValueError(
            f"malformed cue-conflict file name {base!r}: expected '<shape>N-<texture>M.png', "
            f"e.g. 'knife1-airplane1.png'"
        )
    return m.group(1), m.group(3)


def _listing(problems: list[str]) -> str:
    shown = "\n  ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return f"\n  {shown}{more}"


def scan_cue_conflict(
    root: str | os.PathLike, categories: Sequence[str] = CUE_CONFLICT_CATEGORIES
) -> list[CueConflictStimulus]:
    """List and validate every stimulus under ``root``, sorted by (shape folder, file name).

    Hidden files (starting with ``.``) are ignored. Every problem is collected first and reported in one
    ``ValueError`` listing them: unknown shape folders, malformed file names, unknown texture names, a
    file whose shape part disagrees with its folder, stray files at the top level, and an empty tree.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"cue-conflict folder {str(root)!r} does not exist or is not a directory")
    cats = tuple(categories)
    index = {c: i for i, c in enumerate(cats)}
    problems: list[str] = []
    stimuli: list[CueConflictStimulus] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            problems.append(f"{entry.name}: a file at the top level (expected one folder per shape category)")
            continue
        if entry.name not in index:
            problems.append(f"{entry.name}/: unknown shape category{nearest_names(entry.name, cats)}")
            continue
        for f in sorted(entry.iterdir()):
            if f.name.startswith("."):
                continue
            rel = f"{entry.name}/{f.name}"
            try:
                shape, texture = parse_stimulus_name(f.name)
            except ValueError:
                problems.append(f"{rel}: malformed name (expected '<shape>N-<texture>M.png')")
                continue
            if shape != entry.name:
                problems.append(f"{rel}: shape {shape!r} in the name disagrees with the folder {entry.name!r}")
                continue
            if texture not in index:
                problems.append(f"{rel}: unknown texture category {texture!r}{nearest_names(texture, cats)}")
                continue
            stimuli.append(CueConflictStimulus(f, shape, texture, index[shape], index[texture]))
    if problems:
        raise ValueError(
            f"cue-conflict folder {str(root)!r} has {len(problems)} problem(s); expected "
            f"<shape>/<shape>N-<texture>M.png with categories {', '.join(cats)}:{_listing(problems)}"
        )
    if not stimuli:
        raise ValueError(
            f"cue-conflict folder {str(root)!r} holds no stimuli (expected <shape>/<shape>N-<texture>M.png)"
        )
    return stimuli


class CueConflict(Dataset):
    """Map-style dataset over a cue-conflict folder; item ``i`` is ``(uint8 (3, H, W), shape label)``.

    Attributes: ``stimuli`` (list of ``CueConflictStimulus``), ``categories``, ``shape_labels`` (also ``targets``)
    and ``texture_labels`` (int64 tensors ``(N,)``), ``names`` (file names). ``conflicting_only=True`` drops the
    stimuli whose shape and texture agree at load time (shape bias drops them anyway).
    """

    #: how to bring stimuli of several sizes to one (the hint of a mixed-size error)
    size_fix = ("CueConflict(ROOT, transform=torchvision.transforms.v2.Compose([v2.Resize(256), v2.CenterCrop(224)])), "
                "as model-vs-human brings other sizes to 224")

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        conflicting_only: bool = False,
        categories: Sequence[str] = CUE_CONFLICT_CATEGORIES,
    ) -> None:
        self.root = Path(root).expanduser()
        self.categories = tuple(categories)
        stimuli = scan_cue_conflict(self.root, self.categories)
        self.stimuli = [s for s in stimuli if s.conflicting] if conflicting_only else stimuli
        self.transform = transform
        self.shape_labels = torch.tensor([s.shape_label for s in self.stimuli], dtype=torch.long)
        self.texture_labels = torch.tensor([s.texture_label for s in self.stimuli], dtype=torch.long)
        self.names = [s.path.name for s in self.stimuli]
        #: the labels' classes (the shape categories): the suites that score a model's own classes check its outputs
        #: against them (a 1000-class model scored 0 % on the stimuli's 16 labels without a word)
        self.classes = list(self.categories)
        #: stable identifier for result caches (root, filter, count, categories and transform), or None when the
        #: transform cannot be named (no ``cache_id`` string of its own): caches then hash sampled items instead
        which = "conflicting" if conflicting_only else "all"
        cats = "" if self.categories == CUE_CONFLICT_CATEGORIES else ":" + ",".join(self.categories)
        tid = getattr(transform, "cache_id", None)
        named = transform is None or (isinstance(tid, str) and tid)
        self.cache_id: str | None = (f"cue-conflict:{self.root.resolve()}@{path_state(self.root)}:{which}:"
                                     f"{len(self.stimuli)}{cats}"
                                     f"{f':transform={tid}' if transform is not None else ''}") if named else None

    @property
    def targets(self) -> torch.Tensor:
        """The items' labels, the shape labels (as an ``ImageFolder``'s ``targets``: read without decoding an image,
        e.g. by the warning that a ``limit`` keeps only the first classes)."""
        return self.shape_labels

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(path, shape label)`` per stimulus, as an ``ImageFolder``'s (error messages name files by it)."""
        return [(str(s.path), s.shape_label) for s in self.stimuli]

    def __len__(self) -> int:
        return len(self.stimuli)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.stimuli[i]
        from .folder import read_image

        img = read_image(s.path)
        if self.transform is not None:
            img = self.transform(img)
        return img, s.shape_label

    def __repr__(self) -> str:
        n_conf = sum(s.conflicting for s in self.stimuli)
        return f"CueConflict(root={str(self.root)!r}, n={len(self)}, conflicting={n_conf})"


def write_synthetic_cue_conflict(
    root: str | os.PathLike,
    per_shape: int = 2,
    size: int = 32,
    *,
    categories: Sequence[str] = CUE_CONFLICT_CATEGORIES,
    seed: int = 0,
) -> list[Path]:
    """Write a small random tree in the published layout (for tests and smoke runs); returns the paths.

    Each of the ``len(categories)`` shape folders receives ``per_shape`` RGB PNGs of ``size`` x ``size``
    random pixels named ``<shape>{k+1}-<texture>{k+1}.png`` with textures drawn by ``seed``
    (one per folder has texture == shape when ``per_shape >= 2``, as in the real set).
    """
    from PIL import Image

    if per_shape < 1 or size < 2:
        raise ValueError(f"per_shape must be >= 1 and size >= 2, got per_shape={per_shape}, size={size}")
    g = torch.Generator().manual_seed(seed)
    cats = list(categories)
    root = Path(root).expanduser()
    paths: list[Path] = []
    for si, shape in enumerate(cats):
        (root / shape).mkdir(parents=True, exist_ok=True)
        for k in range(per_shape):
            if k == per_shape - 1 and per_shape >= 2:
                ti = si
            else:
                ti = int(torch.randint(len(cats) - 1, (1,), generator=g))
                ti += ti >= si
            pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8)
            path = root / shape / f"{shape}{k + 1}-{cats[ti]}{k + 1}.png"
            Image.fromarray(pixels.numpy()).save(path)
            paths.append(path)
    return paths
