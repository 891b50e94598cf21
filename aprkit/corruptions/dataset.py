"""Writers for -C datasets in the standard layouts (resumable, atomic, seeded).

- CIFAR-10-C layout: ``<out>/<corruption>.npy`` uint8 ``(5*N, H, W, 3)``, severity-major (rows
  ``(s-1)*N .. s*N-1`` hold severity ``s``), plus ``<out>/labels.npy`` (the labels tiled 5 times).
- ImageNet-C layout: ``<out>/<corruption>/<severity>/<class>/<file>`` JPEG, quality 85.

Image ``i`` of every (corruption, severity) draws from its own counter-based stream, keyed by
``item_seeds(seed, name, severity, preset, i)`` (``i``: the row of the array, or the position in the
sorted file list), so the files are the same byte for byte for every batch size and device count (tested on the CPU;
on CUDA ``tests/test_cuda_corruptions.py`` checks it, run by ``make gpu-check``, not yet on a GPU).
``<out>/manifest.json`` records the generation parameters, an input fingerprint, the device type, the library
versions and the frost textures' digest (see ``manifest``):
a rerun with other parameters or other input is refused unless ``overwrite=True``; outputs the
manifest lists as complete are skipped. Files are written to a temporary name and renamed (an
interrupted run leaves no partial output). The input images are read, sized and checked in ``inputs``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .._checks import check_once
from .._io import atomic_write
from ._frost import texture_digest
from ._random import item_seeds
from .api import BASE_VERSION, check_names, corrupt, corruption_version
from .inputs import (
    _check_targets,
    _load,
    _source_images,
    check_outside,
    load_image_folder,
    scan_image_folder,
    tiny_imagenet_root,
)
from .manifest import Manifest, check_batch_size, environment, fingerprint_array, fingerprint_files
from .severity import check_preset, check_severities, preset_for_size

__all__ = ["IMAGENET_C_QUALITY", "check_outside", "scan_image_folder", "load_image_folder", "tiny_imagenet_root",
           "write_cifar_c", "write_imagenet_c"]

#: how images are brought to ``size`` (recorded in the manifest: a folder made with the earlier rounding is refused)
_RESIZE = "torchvision Resize(round(size * 256 / 224)) + CenterCrop(size); size x size kept"
#: the same for a folder that mixes ``size x size`` images with others: every image resized and cropped, as the
#: reader ``folder:DIR?resize=256&crop=224`` does (kept ones were corrupted from another crop than it reads)
_RESIZE_EVERY = "torchvision Resize(round(size * 256 / 224)) + CenterCrop(size); every image"


#: the JPEG quality ImageNet-C and Tiny-ImageNet-C were stored with (``Image.save(..., quality=85)``)
IMAGENET_C_QUALITY = 85


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    try:
        atomic_write(path, lambda fh: np.save(fh, array))
    except OSError as e:  # NumPy's short write names neither the file nor the cause
        if e.errno is not None:
            raise
        raise OSError(f"could not write {path} ({array.nbytes:,} bytes): {e}; is the disk full?") from e


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    """The shape of the array in ``path``; ``None`` when it is missing or not a whole .npy file (it is rewritten)."""
    try:
        return tuple(np.load(path, mmap_mode="r").shape)
    except (OSError, ValueError, EOFError):  # missing, truncated, not an array
        return None


def _check_names(names: Sequence[str] | str, severities: Sequence[int] | int,
                 ascending: bool = False) -> tuple[list[str], list[int]]:
    """The corruption names and severities (a single name or severity is accepted as one), checked; with
    ``ascending`` the severities sorted (a CIFAR-10-C array stacks them so, and readers slice it by
    ``(severity - 1) * N``; the ImageNet layout keeps the order given, which its manifests record)."""
    names, severities = check_names(names), check_severities(severities)
    if ascending:
        severities = sorted(severities)
    if not names or not severities:
        raise ValueError(f"expected at least one corruption name and one severity, got names={names} "
                         f"severities={severities}")
    for what, values in (("corruption names", names), ("severities", severities)):
        check_once(values, what, "a repeat would double rows, which no reader accepts")
    return names, severities


def _params(layout: str, seed: int, preset: str, fingerprint: dict, device: str | torch.device, **extra) -> dict:
    """The generation parameters of a -C folder (its manifest's ``params``): what every output depends on."""
    return {"layout": layout, "seed": int(seed), "preset": preset, "code_version": BASE_VERSION, "input": fingerprint,
            **environment(device, decodes_files=layout == "imagenet"), **extra}


def _with_versions(depends: dict, entries: Mapping[str, str]) -> dict:
    """``depends`` plus, for each output of a corruption whose outputs changed since the base version
    (``corruption_version(name)`` above ``BASE_VERSION``), that version: resuming a set written before refuses those
    outputs only (the parameters keep the base version, so the other corruptions' outputs are reused)."""
    out = {k: dict(v) for k, v in depends.items()}
    for entry, name in entries.items():
        version = corruption_version(name)
        if version != BASE_VERSION:
            out.setdefault(entry, {})["code_version"] = version
    return out


def _frost(entries: Sequence[str], frost_dir: str | os.PathLike | None) -> tuple[dict, dict]:
    """The manifest's ``depends`` of the frost outputs ``entries`` (the digest of the textures read) and its ``info``
    (their directory); empty without frost outputs. Raises ``FileNotFoundError`` before any output when frost is
    asked for and the textures are missing."""
    if not entries:
        return {}, {}
    digest, directory = texture_digest(frost_dir)
    return {e: {"frost_textures": digest} for e in entries}, {"frost_dir": str(directory.resolve())}


def write_cifar_c(
    images: np.ndarray | torch.Tensor,
    out_dir: str | os.PathLike,
    names: Sequence[str] | str,
    labels: np.ndarray | None = None,
    severities: Sequence[int] | int = (1, 2, 3, 4, 5),
    preset: str | None = None,
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    progress: bool = True,
    frost_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    classes: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``<out>/<name>.npy`` (uint8 ``(len(severities)*N, H, W, 3)``, severity-major) for every name.

    ``images``: uint8 ``(N, H, W, 3)`` (``N >= 1``). ``preset``: default the one made for ``H x W``
    (``preset_for_size``; an explicit preset far from it warns). Arrays the folder's manifest lists as complete are
    skipped; a folder generated with other parameters or input raises ``ValueError`` unless
    ``overwrite``. ``classes``: the label names, recorded in the manifest. Returns the written paths.
    """
    from tqdm.auto import tqdm

    names, severities = _check_names(names, severities, ascending=True)
    arr = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise TypeError(f"images must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
    if list(severities) != [1, 2, 3, 4, 5]:
        import warnings

        warnings.warn(f"a CIFAR-layout set of severities {list(severities)} only: its .npy files stack those, so "
                      "readers that slice severity s as rows (s - 1) * N (Hendrycks's, robustbench's) read other "
                      "severities or nothing; aprkit's reader takes them from manifest.json (keep it with the "
                      "files)", UserWarning, stacklevel=2)
    preset = preset_for_size(arr.shape[1], arr.shape[2]) if preset is None else check_preset(preset)
    n = arr.shape[0]
    if n == 0:
        raise ValueError(f"images is empty (shape {arr.shape}); expected at least one image (N, H, W, 3)")
    batch_size = check_batch_size(batch_size)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        if labels.dtype.kind not in "iu":
            raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
        if n and int(labels.min()) < 0:  # the reader refuses them (a -C set's labels are class indices)
            raise ValueError(f"labels must be class indices >= 0, got {int(labels.min())}")
    out = Path(out_dir)
    outputs = [f"{name}.npy" for name in names] + (["labels.npy"] if labels is not None else [])
    # the severities are stacked in each array (and read back by their order): a generation parameter here
    params = _params("cifar", seed, preset, fingerprint_array(arr, labels), device, severities=severities)
    depends, info = _frost(["frost.npy"] if "frost" in names else [], frost_dir)
    if classes is not None:
        info["classes"] = [str(c) for c in classes]
    depends = _with_versions(depends, {f"{name}.npy": name for name in names})
    with Manifest(out, params, outputs, overwrite, depends=depends, info=info, cheap=["labels.npy"]) as manifest:
        tiled = (len(severities) * n,)
        if labels is not None and not (manifest.is_complete("labels.npy") and _npy_shape(out / "labels.npy") == tiled):
            dtype = np.uint8 if labels.min() >= 0 and labels.max() < 256 else np.int64
            _atomic_save_npy(out / "labels.npy", np.tile(labels.astype(dtype), len(severities)))
            manifest.complete("labels.npy")
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
        expected = (len(severities) * n,) + arr.shape[1:]
        written = []
        bar = tqdm(total=len(names) * len(severities) * n, disable=not progress, unit="img", desc="corrupt")
        for name in names:
            path = out / f"{name}.npy"
            if manifest.is_complete(path.name) and _npy_shape(path) == expected:
                bar.update(len(severities) * n)
                continue
            result = np.empty(expected, dtype=np.uint8)
            for si, s in enumerate(severities):
                bar.set_postfix_str(f"{name} s{s}")
                for start in range(0, n, batch_size):
                    xb = x[start:start + batch_size].to(device)
                    seeds = item_seeds(seed, name, s, preset, range(start, start + xb.shape[0]))
                    yb = corrupt(xb, name, s, preset, seeds=seeds, frost_dir=frost_dir)
                    result[si * n + start: si * n + start + xb.shape[0]] = yb.permute(0, 2, 3, 1).cpu().numpy()
                    bar.update(xb.shape[0])
            _atomic_save_npy(path, result)
            manifest.complete(path.name)
            written.append(path)
        bar.close()
        return written


def write_imagenet_c(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    names: Sequence[str] | str,
    severities: Sequence[int] | int = (1, 2, 3, 4, 5),
    preset: str | None = None,
    seed: int = 0,
    batch_size: int = 64,
    size: int | None = 224,
    quality: int = IMAGENET_C_QUALITY,
    device: str | torch.device = "cpu",
    progress: bool = True,
    frost_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> int:
    """Write ``<out>/<name>/<severity>/<class>/<file>`` JPEGs (``quality``) for a class-folder tree.

    ``size``: resize the short side to ``size * 256 / 224`` and centre-crop ``size`` (the ImageNet-C protocol,
    torchvision's Resize(256) + CenterCrop(224) for 224; a folder of ``size x size`` images only, already
    preprocessed, is kept as it is; in a folder that mixes them with other sizes every image is resized and cropped,
    by PIL as ``make_imagenet_c.py`` does: the reader ``folder:DIR?resize=256&crop=224`` takes the same geometry but
    resizes tensors, one level apart at a few pixels), or ``None`` to keep
    sizes (images of one batch that differ in size are corrupted one by one). ``preset``: default the one made for
    ``size`` (``preset_for_size``: ``"imagenet"`` for 224), or with ``size=None`` for the first image's size; an
    explicit preset far from the images' size warns. Image ``i`` is the
    ``i``-th file of the sorted class-folder scan. Files of a (corruption, severity) begun under the
    folder's manifest are skipped when they exist; a folder generated with other parameters or input
    raises ``ValueError`` unless ``overwrite``. Returns the number of files written.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    names, severities = _check_names(names, severities)
    batch_size = check_batch_size(batch_size)
    items, classes, src_dir = _source_images(src_dir)
    if preset is None:
        if size is None:
            with Image.open(items[0][0]) as first:  # reads the header only
                preset = preset_for_size(first.height, first.width)
        else:
            preset = preset_for_size(size, size)
    else:
        check_preset(preset)
    out = Path(out_dir)
    src = Path(src_dir)
    check_outside(src, out)
    # each severity is its own folder, seeded per (corruption, severity, image): severities are added like corruptions
    keep_exact = True
    if size is not None:  # the headers only: a folder of size x size images is kept, a mixed one resized throughout
        exact, largest = set(), 0
        for p, _ in items:
            try:
                with Image.open(p) as im:
                    exact.add(im.size == (size, size))
                    largest = max(largest, min(im.size))
            except (OSError, SyntaxError, ValueError) as err:  # as the decoder says it (aprkit.data.folder)
                raise ValueError(f"cannot decode image {p} ({err}); expected an intact image file (truncated or "
                                 "corrupted?)") from None
        keep_exact = exact != {True, False}
        if 2 * largest <= size:
            import warnings

            warnings.warn(f"every image in {src} is at most {largest} px on its short side: each is enlarged "
                          f"{size / largest:.1f}x or more to {size} px and corrupted with the {preset!r} preset; for "
                          f"small images pass their own size (aprkit corrupt --size {largest}; Tiny-ImageNet-C "
                          "is 64 px)", UserWarning, stacklevel=2)
    params = _params("imagenet", seed, preset, fingerprint_files([p for p, _ in items], src), device,
                     size=size, quality=int(quality),
                     **({} if size is None else {"resize": _RESIZE if keep_exact else _RESIZE_EVERY}))
    depends, info = _frost([f"frost/{s}" for s in severities] if "frost" in names else [], frost_dir)
    depends = _with_versions(depends, {f"{name}/{s}": name for name in names for s in severities})

    def target(name: str, s: int, path: Path, cls: int) -> Path:
        folder = src / classes[cls]  # (Tiny-ImageNet's validation images lie outside their class: the file name)
        rel = path.relative_to(folder) if path.is_relative_to(folder) else Path(path.name)
        stem = rel if rel.suffix.lower() in (".jpg", ".jpeg") else rel.with_suffix(".JPEG")
        return out / name / str(s) / classes[cls] / stem

    # before the manifest: a refused input must not cost an --overwrite run the outputs it would replace
    _check_targets([p for p, _ in items], [target(names[0], severities[0], p, c) for p, c in items])
    with Manifest(out, params, [f"{name}/{s}" for name in names for s in severities], overwrite,
                  depends=depends, info=info, retired=["severities"]) as manifest:
        count = 0
        bar = tqdm(total=len(names) * len(severities) * len(items), disable=not progress, unit="img", desc="corrupt")
        for name in names:
            for s in severities:
                bar.set_postfix_str(f"{name} s{s}")
                entry = f"{name}/{s}"
                resume = manifest.was_started(entry)  # files begun under other parameters are recomputed
                manifest.start(entry)
                for c in classes:  # every class folder, also one without images: the labels are the folder order
                    (out / name / str(s) / c).mkdir(parents=True, exist_ok=True)
                for start in range(0, len(items), batch_size):
                    chunk = items[start:start + batch_size]
                    targets = [target(name, s, p, c) for p, c in chunk]
                    if resume and all(t.exists() for t in targets):
                        bar.update(len(chunk))
                        continue
                    seeds = item_seeds(seed, name, s, preset, range(start, start + len(chunk)))
                    imgs = [_load(p, size, keep_exact=keep_exact) for p, _ in chunk]
                    if len({a.shape for a in imgs}) == 1:
                        xb = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).to(device)
                        outs = list(corrupt(xb, name, s, preset, seeds=seeds, frost_dir=frost_dir)
                                    .permute(0, 2, 3, 1).cpu().numpy())
                    else:
                        outs = [corrupt(torch.from_numpy(a).permute(2, 0, 1).to(device), name, s, preset,
                                        seeds=seeds[j:j + 1], frost_dir=frost_dir).permute(1, 2, 0).cpu().numpy()
                                for j, a in enumerate(imgs)]
                    for t, o in zip(targets, outs, strict=True):
                        if resume and t.exists():
                            continue
                        t.parent.mkdir(parents=True, exist_ok=True)
                        # temporary name + rename, without the fsync of _io.atomic_write (one per image
                        # would dominate writing an ImageNet-C-sized tree)
                        tmp = t.with_name(t.name + ".tmp")
                        try:
                            Image.fromarray(o).save(tmp, "JPEG", quality=quality, optimize=True)
                            os.replace(tmp, t)
                        except OSError as e:  # a full disk: PIL's error names neither the file nor the folder
                            if e.filename is not None or e.errno not in (errno.ENOSPC, errno.EDQUOT):
                                raise
                            raise OSError(e.errno, f"could not write {t}: {e.strerror or e}; is the disk full?") from e
                        finally:
                            tmp.unlink(missing_ok=True)
                        count += 1
                    bar.update(len(chunk))
                manifest.complete(entry)
        bar.close()
        return count
