"""File-backed image datasets: a list of ``(path, label)`` pairs, and ImageFolder trees.

Images are decoded to uint8 ``(C, H, W)`` tensors with torchvision's decoders (PNG/JPEG, told apart by their
signature; a PNG whose bytes fail :func:`~aprkit.data.image_bytes.png_problem` goes to PIL, which names the damage),
falling back to PIL for other formats, in the pixel order stored: an EXIF orientation tag is not applied (as
torchvision's ``read_image`` by default and PIL without ``ImageOps.exif_transpose``; phone photos may lie on their
side: rotate the files first); grayscale and RGBA images are converted to RGB, 16-bit images to 8 bits, rounded
(``to_8bit``; ``pil_to_array`` does the same for PIL images, e.g. in ``corrupt_image``), except 16-bit colour TIFFs,
which PIL itself opens as 8-bit RGB, keeping the high byte (up to a level below the rounded value). Folders whose
images differ in size need ``resize``/``crop`` (shorter side resized to ``resize``, then a centre ``crop``) so that
they batch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .arrays import _as_index_array
from .image_bytes import png_problem, sniff

__all__ = ["IMG_EXTENSIONS", "image_files", "scan_image_folder", "read_image", "to_8bit", "pil_to_array",
           "resize_center_crop", "ImageListDataset", "ImageFolderDataset", "ResizedDataset", "find_classes"]

#: the version of how image folders are scanned and decoded, part of their cache identity (2: linked folders inside a
#: class are entered; gray images are PIL's convert("L") for every format; 3: a link into a folder below another class
#: is not entered; 4: files in torchvision's ImageFolder order, a folder's own files before its subfolders', folders
#: by path string: nested class folders were ordered part by part, so --limit and per-image seeds took other images;
#: 5: a linked file whose image lies in another class is left out; a file is decoded by its signature, not its name)
READER_VERSION = 5
#: how deep an image folder's cache identity looks (``aprkit._hash.path_state``): the reader takes images at any depth
#: below a class folder, so its identity must see them (a standard tree ends two levels down: the same cost)
IDENTITY_DEPTH = 8

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
_TV_EXTENSIONS = (".png", ".jpg", ".jpeg")


def to_8bit(levels: torch.Tensor) -> torch.Tensor:
    """16-bit levels (an integer tensor, values clipped to 0..65535) as uint8, rounded: ``(v + 128) // 257``, so
    ``v * 257 -> v`` as PIL's 8-bit modes store them (PIL's own conversion clips 16-bit values at 255)."""
    return levels.to(torch.int32).clamp_(0, 65535).add_(128).div_(257, rounding_mode="floor").to(torch.uint8)


class UnsupportedImage(ValueError):
    """An intact image of a kind aprkit does not read (the message says which and what to do)."""


def pil_to_array(image: Any, channels: int = 3) -> np.ndarray:
    """A PIL image as a uint8 array ``(H, W, 3)`` (``channels`` 3, RGB) or ``(H, W)`` (1, gray); 16-bit images (modes
    ``I;16*``) are mapped to 8 bits by ``to_8bit``, not clipped. Mode ``I`` (32-bit integers) holds either: an image
    whose values all lie in 0..255 (an 8-bit image converted to ``I``) keeps them, any other is read as 16-bit levels
    (older Pillow versions open 16-bit PNGs as ``I``). 32-bit float images (mode ``F``, e.g. float TIFFs) are refused:
    their value range (0-1, 0-255, physical units) is not recorded, and Pillow's conversion would clip them."""
    if image.mode == "F":
        raise UnsupportedImage("32-bit floating-point images (PIL mode 'F') are not read: their value range is "
                               "unknown; expected 8- or 16-bit images: convert it to 8 bits first")
    if image.mode == "I" or image.mode.startswith("I;16"):
        levels = np.asarray(image).astype(np.int32)
        if image.mode == "I" and levels.size and levels.min() >= 0 and levels.max() <= 255:
            gray = levels.astype(np.uint8)
        else:
            gray = to_8bit(torch.from_numpy(levels)).numpy()
        return np.repeat(gray[..., None], 3, axis=2) if channels == 3 else gray
    return np.asarray(image.convert("RGB" if channels == 3 else "L"))


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 ``(3, H, W)`` -> ``(1, H, W)`` gray exactly as PIL's ``convert("L")``: ``(R * 19595 + G * 38470 +
    B * 7471 + 0x8000) >> 16``."""
    r, g, b = rgb.to(torch.int32).unbind(0)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)[None]


def read_image(path: str | Path, channels: int = 3) -> torch.Tensor:
    """Decode one image file to a uint8 tensor ``(channels, H, W)`` (channels 3 = RGB, 1 = gray)."""
    path = Path(path)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if path.suffix.lower() in _TV_EXTENSIONS:
        data = path.read_bytes()
        kind = sniff(data)  # by content: a GIF or WebP named .png goes to PIL, whose conversion the docs promise
        if kind == "jpeg" or (kind == "png" and png_problem(data) is None):  # PIL names what is wrong with the rest
            try:  # torchvision's decoders are ~1.7x faster than PIL on small PNGs (deprecated since 0.29)
                from torchvision.io import ImageReadMode, decode_image

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
                img = to_8bit(img) if img.dtype == torch.uint16 else img  # a 16-bit PNG
                # gray as PIL's convert("L") (ITU-R 601-2 in 16-bit fixed point): torchvision's GRAY mode rounds a PNG's
                # colours otherwise (half the pixels of a colour image one level off its BMP or JPEG twin)
                return img if channels == 3 else _luma(img)
            except (ImportError, RuntimeError):
                pass  # removed decoders or unusual encodings (e.g. CMYK JPEG): let PIL decode
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = pil_to_array(im, channels)
    except FileNotFoundError:
        raise
    except UnsupportedImage as err:
        raise UnsupportedImage(f"{path}: {err}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:  # PIL: truncated, corrupted, not
        # an image, or a header naming more pixels than PIL's limit
        raise ValueError(
            f"cannot decode image {path} ({err}); expected an intact image file (truncated or corrupted?)"
        ) from None
    t = torch.from_numpy(arr.copy())
    return t.permute(2, 0, 1).contiguous() if t.ndim == 3 else t[None]


def resize_center_crop(image: torch.Tensor, resize: int | None, crop: int | None) -> torch.Tensor:
    """Resize the shorter side to ``resize`` (antialiased) and centre-crop ``crop x crop``; uint8 kept. A crop larger
    than the (resized) image is refused (torchvision's centre crop pads it with black)."""
    from torchvision.transforms.v2 import functional as F

    if resize is not None:
        image = F.resize(image, [resize], antialias=True)
    if crop is not None:
        h, w = (int(d) for d in image.shape[-2:])
        if crop > min(h, w):
            after = f" after resize={resize}" if resize is not None else ""
            raise ValueError(f"crop={crop} is larger than the image ({h}x{w}{after}); expected crop <= its shorter "
                             "side (a centre crop would pad it with black)")
        image = F.center_crop(image, [crop, crop])
    return image


class ResizedDataset(Dataset):
    """``dataset``'s images brought to ``size`` ``(H, W)``: for a square ``size``, :func:`resize_center_crop` (the
    shorter side to ``H``, then a centre crop); otherwise resized (antialiased, aspect ratio kept) until they cover
    it, then centre-cropped. Images of that size already are kept. For OOD sets scored at the in-distribution
    size."""

    #: in the cache keys of what is computed on it (the OOD suite's): raise it when the resizing changes
    version = 1

    def __init__(self, dataset: Dataset, size: tuple[int, int]) -> None:
        self.dataset, self.size = dataset, (int(size[0]), int(size[1]))
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from torchvision.transforms.v2 import functional as F

        img, label = self.dataset[index]
        (h, w), (ih, iw) = self.size, img.shape[-2:]
        if (ih, iw) != (h, w) and h == w:
            img = resize_center_crop(img, h, h)
        elif (ih, iw) != (h, w):
            scale = max(h / ih, w / iw)
            img = F.resize(img, [max(h, round(ih * scale)), max(w, round(iw * scale))], antialias=True)
            img = F.center_crop(img, [h, w])
        return img, label


def find_classes(root: Path) -> list[str]:
    """Sorted class subfolder names of ``root`` (hidden folders skipped)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _in_other_class(real: str, start: str, outside: Collection[str], below: list[str]) -> bool:
    """Whether the real path of a linked file lies in another class's folder (``outside``/``below`` of
    :func:`image_files`) rather than below ``start``."""
    return not real.startswith(start + os.sep) and (os.path.dirname(real) in outside or real.startswith(tuple(below)))


def image_files(folder: Path, extensions: Sequence[str] = IMG_EXTENSIONS, *,
                outside: Collection[str] = (), broken: list[Path] | None = None) -> list[Path]:
    """The image files (matched by ``extensions``) at any depth below ``folder``, sorted as torchvision's
    ImageFolder sorts them (by folder path string, then file name: a folder's files before its subfolders'); hidden
    files and those in hidden folders left out (macOS ``._x.png`` resource files, ``.ipynb_checkpoints`` copies).
    Linked folders are entered, as torchvision's ImageFolder does, each real folder once (the first link in name
    order; a link back up is no loop), but never the folders ``outside`` nor a folder below one that does not also
    hold ``folder`` (a dataset's root and its other classes: a link to them or into them would read their images as
    this class's too; real paths, ``folder``'s own ignored); a linked file whose image lies in such a folder is left
    out by the same rule. Links named as images whose target is gone are left out and added to ``broken``."""
    exts = tuple(e.lower() for e in extensions)
    found: list[Path] = []
    start = os.path.realpath(folder)
    seen: set[str] = set()
    below = [o + os.sep for o in outside if o != start and not start.startswith(o + os.sep)]  # other classes

    def visit(directory: str | Path) -> None:  # scandir: file types from the directory listing, no stat per file
        real = os.path.realpath(directory)
        if real in seen or (real != start and (real in outside or real.startswith(tuple(below)))):
            return
        seen.add(real)
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda e: e.name)  # links to one folder: the same one kept everywhere
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                visit(entry.path)
            elif entry.name.lower().endswith(exts) and entry.is_file():
                if entry.is_symlink() and _in_other_class(os.path.realpath(entry.path), start, outside, below):
                    continue  # a linked image of another class: read there, not as this class's too
                found.append(Path(entry.path))
            elif broken is not None and entry.name.lower().endswith(exts) and entry.is_symlink() \
                    and not os.path.exists(entry.path):
                broken.append(Path(entry.path))

    visit(folder)
    return sorted(found, key=lambda p: (str(p.parent), p.name))  # ImageFolder's sorted(os.walk(...)) order


def scan_image_folder(root: str | Path, classes: Sequence[str] | None = None,
                      extensions: Sequence[str] = IMG_EXTENSIONS, *, stacklevel: int = 2
                      ) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(path, class index)`` of every image file under ``root/<class>/`` (sorted) and the class names: the one
    reading of an ImageFolder tree (the datasets and the -C writers). Classes are the sorted non-hidden subfolders
    (or ``classes``, which fixes the label order; folders not in it are skipped with a warning); image files are
    matched by ``extensions`` in any depth below a class folder (:func:`image_files`: hidden ones left out, which
    torchvision's ImageFolder reads).

    Raises ``FileNotFoundError`` naming the layout when ``root`` is missing or holds no images, ``ValueError`` when
    it holds split folders (``train``, ``test``, ...) instead of classes."""
    root = Path(root).expanduser()
    layout = f"{root}/<class>/<image>{'|'.join(extensions[:3])}..."
    if not root.is_dir():
        what = "is a file, not a folder" if root.is_file() else "does not exist"
        raise FileNotFoundError(f"image folder {root} {what}; expected the ImageFolder layout {layout}")
    found = find_classes(root)
    # split folders instead of classes; one split alone too when it holds class folders (ODIN's OOD sets, such as
    # LSUN/test/*.jpg, hold their images in it directly: one class, as before)
    splits = classes is None and set(found) <= _SPLIT_NAMES
    if splits and (len(found) >= 2 or (found and find_classes(root / found[0]))):
        raise ValueError(f"{root} holds the split folders {found}, not class folders: point at one split "
                         f"(e.g. {root / found[-1]}), whose subfolders are the classes")
    names = list(classes) if classes is not None else found
    if len(set(names)) != len(names):
        twice = sorted({c for c in names if names.count(c) > 1})
        raise ValueError(f"classes= names {', '.join(map(repr, twice[:5]))} more than once; expected each class once "
                         "(its position is its label)")
    index = {c: i for i, c in enumerate(names)}
    left_out = [c for c in found if c not in index]
    if left_out:  # a name mismatch (wnids against class names) would otherwise evaluate a silent subset
        warnings.warn(f"{len(left_out)} class folder(s) of {root} are not in classes= and are skipped: "
                      f"{', '.join(left_out[:5])}{' ...' if len(left_out) > 5 else ''}", RuntimeWarning,
                      stacklevel=stacklevel)
    by_real: dict[str, list[str]] = {}
    for c in found:
        by_real.setdefault(os.path.realpath(root / c), []).append(c)
    same = [names_ for names_ in by_real.values() if len(names_) > 1]
    if same:  # a class folder that is a link to another: its images would be read under both labels
        raise ValueError(f"class folders {' and '.join(map(repr, same[0]))} of {root} are one folder (a link to the "
                         "other); expected each class's images once, in its own folder")
    samples, empty = [], []
    broken: list[Path] = []
    reals = {os.path.realpath(p) for p in (root, *(root / c for c in found))}  # where no class's links may lead
    for c in found:
        if c not in index:
            continue
        files = image_files(root / c, extensions, outside=reals, broken=broken)
        samples += [(p, index[c]) for p in files]
        if not files:
            empty.append(c)
    if broken:  # a copy whose links point into a folder that moved: a subset, read without a word before
        warnings.warn(f"{len(broken)} image link(s) under {root} point to no file and are left out: "
                      f"{', '.join(str(p.relative_to(root)) for p in broken[:3])}{' ...' if len(broken) > 3 else ''}",
                      RuntimeWarning, stacklevel=stacklevel)
    if not samples:
        exts = {e.lower() for e in extensions}
        direct = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts]
        ilsvrc = any(p.name.startswith("ILSVRC2012_val_") for p in direct[:1000])
        where = (f"; its {len(direct)} image(s) lie directly in it: move them into class subfolders" if direct
                 else "")
        where += ("" if not ilsvrc else " (the ILSVRC2012 validation images: one folder per wnid, by the devkit's "
                  "ground truth, as torchvision.datasets.ImageNet(ROOT, split='val') arranges them; the devkit's "
                  "ILSVRC2012_ID numbers are not the sorted-wnid class indices the models use)")
        raise FileNotFoundError(f"no images found under {root}; expected the ImageFolder layout {layout}{where}")
    if empty and classes is None:  # they still count as classes: the model's outputs and the labels follow them
        warnings.warn(f"{len(empty)} class folder(s) of {root} hold no images but count as classes: "
                      f"{', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''}", RuntimeWarning,
                      stacklevel=stacklevel)
    return samples, names


class ImageListDataset(Dataset):
    """Images listed as ``(path, label)`` pairs, decoded on access; yields ``(uint8 (C, H, W), int)``.

    ``transform`` (optional) maps the uint8 ``(C, H, W)`` tensor to another uint8 tensor and runs after
    ``resize``/``crop``. With ``cache=True`` (only without ``transform``; all images must share one size)
    each image is decoded once into a uint8 array filled on demand, and the dataset gains the fast
    ``get_batch`` path: repeated passes over a small set (e.g. CIFAR-10 for 75 generated corruption
    cells) decode nothing. The cache lives in the process that reads (workers keep their own copy).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | Path, int]],
        *,
        classes: Sequence[str] | None = None,
        channels: int = 3,
        resize: int | None = None,
        crop: int | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache: bool = False,
    ):
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.classes = list(classes) if classes is not None else None
        self.channels, self.resize, self.crop, self.transform = channels, resize, crop, transform
        if resize is not None and crop is not None and crop > resize:  # known before any image is read
            raise ValueError(f"crop={crop} is larger than resize={resize} (the shorter side after resizing); expected "
                             "crop <= resize")
        if cache and transform is not None:
            raise ValueError("cache=True would freeze the (possibly random) transform; use one or the other")
        self._cache: torch.Tensor | None = None
        self._filled: torch.Tensor | None = None
        self._sized_by = 0  # the image whose size the cache took (named when another differs)
        if cache:
            self.get_batch = self._cached_batch

    def _cached_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``uint8 (B, C, H, W)`` and labels ``int64 (B,)``, decoding only images not seen before."""
        sel = _as_index_array(indices, len(self))  # positions checked (a bool mask is refused), negatives wrapped
        idx = torch.from_numpy(np.arange(sel.start, sel.stop) if isinstance(sel, slice) else sel)
        if self._cache is None:
            self._sized_by = int(idx[0]) if idx.numel() else 0
            first = self._load(self._sized_by)
            self._cache = torch.empty((len(self), *first.shape), dtype=torch.uint8)
            self._filled = torch.zeros(len(self), dtype=torch.bool)
        assert self._filled is not None
        for i in idx[~self._filled[idx]].tolist():
            img = self._load(i)
            if img.shape != self._cache.shape[1:]:
                raise ValueError(
                    f"{self.samples[i][0]} has shape {tuple(img.shape)}, but {self.samples[self._sized_by][0]}, read "
                    f"first, has {tuple(self._cache.shape[1:])}; "
                    "images of one size are needed to hold them in memory: read the tree as "
                    "folder:ROOT?resize=N&crop=N (or pass resize=/crop= to the dataset); a CIFAR tree holds 32x32 "
                    "images only"
                )
            self._cache[i] = img
            self._filled[i] = True
        labels = torch.tensor([self.samples[i][1] for i in idx.tolist()], dtype=torch.int64)
        return self._cache[idx], labels

    def _load(self, index: int) -> torch.Tensor:
        img = read_image(self.samples[index][0], self.channels)
        if self.resize is not None or self.crop is not None:
            try:
                img = resize_center_crop(img, self.resize, self.crop)
            except ValueError as err:  # which image: a small one may come hours into a run
                raise ValueError(f"{self.samples[index][0]}: {err}") from None
        return img

    @property
    def targets(self) -> list[int]:
        return [y for _, y in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        if self._filled is not None and bool(self._filled[index]):
            return self._cache[index].clone(), label  # type: ignore[index]
        img = self._load(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {len(self.classes or [])} classes)"


_SPLIT_NAMES = frozenset({"train", "test", "val", "valid", "validation"})


class ImageFolderDataset(ImageListDataset):
    """``root/<class>/**/<image>`` (torchvision ImageFolder layout): class index = sorted folder order.

    ``classes`` fixes the class list (and label order) instead of reading it from the folder names, e.g.
    to evaluate a subset folder with the full label space. Raises ``FileNotFoundError`` naming the layout
    when ``root`` is missing or holds no images. Unlike torchvision's ImageFolder it reads ``.gif`` files too (their
    first frame) and leaves hidden files out, so a tree holding either gives another length.
    """

    def __init__(self, root: str | Path, *, classes: Sequence[str] | None = None,
                 extensions: Sequence[str] = IMG_EXTENSIONS, **kw):
        root = Path(root).expanduser()
        samples, names = scan_image_folder(root, classes, extensions, stacklevel=3)
        super().__init__(samples, classes=names, **kw)
        self.root = root
