"""The images the -C writers (:mod:`aprkit.corruptions.dataset`) corrupt: a class-folder tree, or Tiny-ImageNet's
validation images (``tinyimagenet:ROOT``), scanned and decoded as the image-folder datasets read them and brought to
one size as ImageNet-C was made (torchvision's ``Resize`` + ``CenterCrop``); and the refusals of inputs a writer
would mishandle (an output folder inside the input one, file names whose outputs clash or sort in another order).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.registry import check_outside

__all__ = ["check_outside", "load_image_folder", "scan_image_folder", "tiny_imagenet_root"]


def scan_image_folder(root: str | os.PathLike) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(path, class index)`` of every image under ``root/<class>/`` (sorted) and the class names, read as the
    image-folder datasets read them (``aprkit.data.folder.scan_image_folder``: hidden folders are no classes), so
    a -C set holds the clean set's images with its labels."""
    from ..data.folder import scan_image_folder as scan

    return scan(Path(root))


def _load(path: Path, size: int | None, zoom: bool = True, keep_exact: bool = True) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``, decoded as the image folders are (``aprkit.data.folder.read_image``: 16-bit images
    to 8 bits, rounded). With ``size``: torchvision's ``Resize(short)`` (bilinear on the PIL image) and
    ``CenterCrop(size)`` as ImageNet-C was made, ``short = round(size * 256 / 224)`` with ``zoom`` (the ImageNet-C
    protocol: Resize(256) + CenterCrop(224)) else ``size``; an image already ``size x size`` is kept as it is with
    ``keep_exact``."""
    from PIL import Image
    from torchvision.transforms import functional as tvf

    from ..data.folder import read_image

    arr = np.ascontiguousarray(read_image(path, 3).permute(1, 2, 0).numpy())
    if size is None or (keep_exact and arr.shape[:2] == (size, size)):
        return arr
    short = int(round(size * 256 / 224)) if zoom else size
    im = tvf.resize(Image.fromarray(arr), [short], interpolation=tvf.InterpolationMode.BILINEAR)
    return np.asarray(tvf.center_crop(im, [size, size]))


def tiny_imagenet_root(src: str | os.PathLike) -> Path | None:
    """The root a ``tinyimagenet:ROOT`` input names (the data spec, aliases included), or None for any other input
    (a path, also one with a colon in it)."""
    from ..data.registry import parse_spec

    text = os.fspath(src)
    try:
        kind, root = parse_spec(text)
    except ValueError:  # no dataset kind in front: a path
        return None
    return Path(root).expanduser() if kind == "tinyimagenet" else None


def _source_images(src: str | os.PathLike) -> tuple[list[tuple[Path, int]], list[str], Path]:
    """``(path, class index)`` of the images to corrupt, the class names and the folder the images come from: a
    class-folder tree, or ``tinyimagenet:ROOT`` (Tiny-ImageNet's validation images, labelled by its
    ``val_annotations.txt``, in Tiny-ImageNet-C's order: the published set's ``<wnid>/<file>`` layout)."""
    tiny = tiny_imagenet_root(src)
    if tiny is not None:
        from ..data.tinyimagenet import tiny_imagenet

        ds = tiny_imagenet(tiny, "test")
        return [(Path(p), y) for p, y in ds.samples], list(ds.classes or []), tiny
    root = Path(src)
    if (root / "val_annotations.txt").is_file() and [p.name for p in root.iterdir() if p.is_dir()] == ["images"]:
        raise ValueError(f"{root} is Tiny-ImageNet's validation folder, whose images lie in one folder labelled by "
                         f"val_annotations.txt (read as a tree they are one class, 'images'): give "
                         f"tinyimagenet:{root.parent} to write Tiny-ImageNet-C's <wnid>/<file> layout")
    items, classes = scan_image_folder(root)
    return items, classes, root


def load_image_folder(root: str | os.PathLike, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All images of a class-folder tree as uint8 ``(N, H, W, 3)`` plus int64 labels ``(N,)``; with ``size`` each
    is resized (short side to ``size``) and centre-cropped to ``size x size``, unless it is that size already."""
    items, _ = scan_image_folder(root)
    arrays = [_load(p, size, zoom=False) for p, _ in items]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("images differ in size; pass size=... (aprkit corrupt --size 32) to resize them for the "
                         "CIFAR layout")
    return np.stack(arrays), np.array([c for _, c in items], dtype=np.int64)


def _check_targets(sources: Sequence[Path], targets: Sequence[Path]) -> None:
    """Refuse inputs that would write one output file (``x.png`` and ``x.bmp`` both become ``x.JPEG``), or whose
    renamed outputs sort in another order than the inputs (``a.b.png`` before ``a.png``, but ``a.JPEG`` before
    ``a.b.JPEG``): a reader pairs image ``i`` of the -C tree with image ``i`` of the clean one."""
    clashes = [t.name for t, k in Counter(targets).items() if k > 1]
    if clashes:
        raise ValueError(f"{len(clashes)} output file(s) would be written by more than one input image (outputs are "
                         f"named <stem>.JPEG): {', '.join(clashes[:5])}{' ...' if len(clashes) > 5 else ''}; rename "
                         "the inputs that differ only in their extension")
    # in the reader's order (folder text, then name: "a-b/x" before "a/b/x"), not Path's part by part
    order = [(str(t.parent), t.name) for t in targets]
    swapped = next((i for i in range(len(order) - 1) if order[i] > order[i + 1]), None)
    if swapped is not None:
        a, b = sources[swapped], sources[swapped + 1]
        raise ValueError(f"the outputs (named <stem>.JPEG) would sort in another order than the inputs: {a.name} comes "
                         f"before {b.name}, but {targets[swapped].name} after {targets[swapped + 1].name}, so the "
                         "-C images would not pair with the clean ones image for image; rename the inputs (e.g. "
                         "without dots in the stem) or convert them to .JPEG first")
