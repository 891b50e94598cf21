"""Writers for -C datasets in the standard layouts (resumable, atomic, seeded).

- CIFAR-10-C layout: ``<out>/<corruption>.npy`` uint8 ``(5*N, H, W, 3)``, severity-major (rows
  ``(s-1)*N .. s*N-1`` hold severity ``s``), plus ``<out>/labels.npy`` (the labels tiled 5 times).
- ImageNet-C layout: ``<out>/<corruption>/<severity>/<class>/<file>`` JPEG, quality 85.

Every (corruption, severity, batch) draws from its own generator seeded from ``seed``, so a rerun
with the same seed and batch size reproduces the files byte for byte; finished files are skipped,
and files are written to a temporary name and renamed (an interrupted run leaves no partial output).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._io import atomic_write
from .api import check_name, corrupt
from .severity import check_preset, check_severity

__all__ = ["IMAGE_EXTENSIONS", "batch_seed", "scan_image_folder", "load_image_folder", "write_cifar_c",
           "write_imagenet_c"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def batch_seed(seed: int, name: str, severity: int, batch: int) -> int:
    """The generator seed of one (corruption, severity, batch) — stable across runs and platforms."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 7 + severity * 100_003 + batch) % (2**63)


def scan_image_folder(root: str | os.PathLike) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(path, class index)`` of every image under ``root/<class>/`` (sorted) and the class names."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    items = [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).rglob("*"))
             if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not items:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in class sub-folders of {str(root)!r}")
    return items, classes


def _load(path: Path, size: int | None) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``; with ``size``: resize the short side to ``size * 256 / 224`` and centre
    crop ``size`` (the ImageNet-C protocol: Resize(256) + CenterCrop(224))."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None:
            short = int(round(size * 256 / 224))
            w, h = im.size
            scale = short / min(w, h)
            im = im.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.asarray(im)


def load_image_folder(root: str | os.PathLike, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All images of a class-folder tree as uint8 ``(N, H, W, 3)`` plus int64 labels ``(N,)``."""
    items, _ = scan_image_folder(root)
    arrays = [_load(p, size) for p, _ in items]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("images differ in size; pass size=... (e.g. 32) to resize them for the CIFAR layout")
    return np.stack(arrays), np.array([c for _, c in items], dtype=np.int64)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array))


def _check_names(names: Sequence[str], severities: Sequence[int]) -> tuple[list[str], list[int]]:
    return [check_name(n) for n in names], [check_severity(s) for s in severities]


def write_cifar_c(
    images: np.ndarray | torch.Tensor,
    out_dir: str | os.PathLike,
    names: Sequence[str],
    labels: np.ndarray | None = None,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    preset: str = "cifar",
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    progress: bool = True,
    frost_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Write ``<out>/<name>.npy`` (uint8 ``(len(severities)*N, H, W, 3)``, severity-major) for every name.

    ``images``: uint8 ``(N, H, W, 3)``. Existing complete arrays are skipped. Returns the written paths.
    """
    from tqdm.auto import tqdm

    names, severities = _check_names(names, severities)
    check_preset(preset)
    arr = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise TypeError(f"images must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = arr.shape[0]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        dtype = np.uint8 if labels.min() >= 0 and labels.max() < 256 else np.int64
        lab_path = out / "labels.npy"
        if not lab_path.exists():
            _atomic_save_npy(lab_path, np.tile(labels.astype(dtype), len(severities)))
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
    expected = (len(severities) * n,) + arr.shape[1:]
    written = []
    bar = tqdm(total=len(names) * len(severities) * n, disable=not progress, unit="img", desc="corrupt")
    for name in names:
        path = out / f"{name}.npy"
        if path.exists() and np.load(path, mmap_mode="r").shape == expected:
            bar.update(len(severities) * n)
            continue
        result = np.empty(expected, dtype=np.uint8)
        for si, s in enumerate(severities):
            bar.set_postfix_str(f"{name} s{s}")
            for bi, start in enumerate(range(0, n, batch_size)):
                g = torch.Generator().manual_seed(batch_seed(seed, name, s, bi))
                xb = x[start:start + batch_size].to(device)
                yb = corrupt(xb, name, s, preset, g, frost_dir=frost_dir)
                result[si * n + start: si * n + start + xb.shape[0]] = yb.permute(0, 2, 3, 1).cpu().numpy()
                bar.update(xb.shape[0])
        _atomic_save_npy(path, result)
        written.append(path)
    bar.close()
    return written


def write_imagenet_c(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    names: Sequence[str],
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    preset: str = "imagenet",
    seed: int = 0,
    batch_size: int = 64,
    size: int | None = 224,
    quality: int = 85,
    device: str | torch.device = "cpu",
    progress: bool = True,
    frost_dir: str | os.PathLike | None = None,
) -> int:
    """Write ``<out>/<name>/<severity>/<class>/<file>`` JPEGs (``quality``) for a class-folder tree.

    ``size``: resize + centre-crop every image to ``size`` (ImageNet-C protocol), or ``None`` to keep
    sizes (images of one batch that differ in size are corrupted one by one). Files that exist are
    skipped. Returns the number of files written.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    names, severities = _check_names(names, severities)
    check_preset(preset)
    items, classes = scan_image_folder(src_dir)
    out = Path(out_dir)
    src = Path(src_dir)

    def target(name: str, s: int, path: Path, cls: int) -> Path:
        rel = path.relative_to(src / classes[cls])
        stem = rel if rel.suffix.lower() in (".jpg", ".jpeg") else rel.with_suffix(".JPEG")
        return out / name / str(s) / classes[cls] / stem

    count = 0
    bar = tqdm(total=len(names) * len(severities) * len(items), disable=not progress, unit="img", desc="corrupt")
    for name in names:
        for s in severities:
            bar.set_postfix_str(f"{name} s{s}")
            for bi, start in enumerate(range(0, len(items), batch_size)):
                chunk = items[start:start + batch_size]
                targets = [target(name, s, p, c) for p, c in chunk]
                if all(t.exists() for t in targets):
                    bar.update(len(chunk))
                    continue
                g = torch.Generator().manual_seed(batch_seed(seed, name, s, bi))
                imgs = [_load(p, size) for p, _ in chunk]
                if len({a.shape for a in imgs}) == 1:
                    xb = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).to(device)
                    outs = list(corrupt(xb, name, s, preset, g, frost_dir=frost_dir).permute(0, 2, 3, 1).cpu().numpy())
                else:
                    outs = [corrupt(torch.from_numpy(a).permute(2, 0, 1).to(device), name, s, preset, g,
                                    frost_dir=frost_dir).permute(1, 2, 0).cpu().numpy() for a in imgs]
                for t, o in zip(targets, outs):
                    if t.exists():
                        continue
                    t.parent.mkdir(parents=True, exist_ok=True)
                    # temporary name + rename, without the fsync of _io.atomic_write (one per image
                    # would dominate writing an ImageNet-C-sized tree)
                    tmp = t.with_name(t.name + ".tmp")
                    try:
                        Image.fromarray(o).save(tmp, "JPEG", quality=quality, optimize=True)
                        os.replace(tmp, t)
                    finally:
                        tmp.unlink(missing_ok=True)
                    count += 1
                bar.update(len(chunk))
    bar.close()
    return count
