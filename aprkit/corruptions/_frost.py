"""Locating and loading the frost texture images used by the ``frost`` corruption.

The creation scripts read six photographs of frost (``frost1.png`` .. ``frost6.jpg``; only the first
five are ever drawn). aprkit does not ship them; it finds them, in this order, in

1. the ``frost_dir`` argument, 2. the ``APRKIT_FROST_DIR`` environment variable,
3. the data files of an installed ``imagecorruptions`` distribution (found through
   ``importlib.metadata`` or by scanning ``sys.path``; the package is never imported — it does not
   import on current NumPy/setuptools, and ``pip install --no-deps imagecorruptions`` is enough),
4. ``data_root()/frost`` (``$APRKIT_DATA`` or ``~/.cache/aprkit``), where ``download=True`` (``--download`` of
   ``aprkit eval``, ``aprkit corrupt`` and ``aprkit demo``) fetches them: :data:`FROST_SOURCE`, the
   ``imagecorruptions`` 1.1.2 wheel from PyPI (2 MB, MD5 checked; :func:`aprkit.data.sources.ensure_source`).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import torch

from .._tensor_cache import tensor_cache
from ..data.download import DownloadError, data_root
from ..data.sources import MARKER, RemoteFile, Source, check_files, ensure_source

__all__ = ["FROST_FILES", "FROST_SOURCE", "find_frost_dir", "frost_textures", "texture_digest"]

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
_ENV = "APRKIT_FROST_DIR"
_WHEEL = ("https://files.pythonhosted.org/packages/3e/40/ff4a79ad7ab6463fe2fde7912b71084a6606e33676078a50b40a3377112b/"
          "imagecorruptions-1.1.2-py3-none-any.whl")


#: where ``download=True`` fetches the textures from: the imagecorruptions wheel (a zip; MD5 of PyPI's file), whose
#: ``imagecorruptions/frost`` folder lands in ``data_root()/frost``
FROST_SOURCE = Source("frost", "frost",
                      (RemoteFile(_WHEEL, _WHEEL.rsplit("/", 1)[1], "9311416fb21be0bf95ef30207c3905d7"),),
                      "imagecorruptions/frost", check_files(FROST_FILES[:5]))


def _complete(d: Path) -> bool:
    return all((d / f).is_file() for f in FROST_FILES[:5])


def _installed_dir() -> Path | None:
    try:
        from importlib import metadata

        dist = metadata.distribution("imagecorruptions")
        cand = Path(str(dist.locate_file("imagecorruptions/frost")))
        if _complete(cand):
            return cand
    except Exception:  # not installed or unreadable metadata: fall back to scanning sys.path
        pass
    for entry in sys.path:
        cand = Path(entry or ".") / "imagecorruptions" / "frost"
        if _complete(cand):
            return cand
    return None


def _downloaded_dir() -> Path | None:
    cand = data_root() / FROST_SOURCE.folder
    return cand if _complete(cand) else None  # the files themselves (a marker outlives files deleted by hand)


def find_frost_dir(frost_dir: str | os.PathLike | None = None, *, download: bool = False,
                   progress: bool = True) -> Path:
    """The directory holding ``frost1.png`` .. ``frost5.jpg`` (see the module doc for the search order); with
    ``download``, fetched into ``data_root()/frost`` when none is found.

    Raises ``FileNotFoundError`` naming the ways to provide the textures when none is found (and not downloaded).
    """
    if frost_dir is not None:
        d = Path(frost_dir)
        if not _complete(d):
            raise FileNotFoundError(f"frost_dir={str(d)!r} must contain {', '.join(FROST_FILES[:5])}")
        return d
    env = os.environ.get(_ENV)
    if env:
        d = Path(env)
        if not _complete(d):
            raise FileNotFoundError(f"{_ENV}={env!r} must contain {', '.join(FROST_FILES[:5])}")
        return d
    found = _installed_dir() or _downloaded_dir()
    if found is not None:
        return found
    others = ("install them with `pip install --no-deps imagecorruptions` (aprkit reads its data files without "
              f"importing it), or pass frost_dir=... / set {_ENV} to a directory that contains them")
    if download:
        target = data_root() / FROST_SOURCE.folder
        (target / MARKER).unlink(missing_ok=True)  # files deleted by hand below a marker: fetched again
        try:
            return ensure_source(FROST_SOURCE, target, download=True, progress=progress)
        except DownloadError as e:  # offline: the textures have other ways in than this download
            raise DownloadError(f"{e}. Or, instead of downloading the frost textures, {others} (aprkit corrupt: "
                                "--frost-dir)") from e
    raise FileNotFoundError(
        "the frost corruption needs the frost texture images (frost1.png .. frost5.jpg): download them (2 MB) with "
        f"--download (aprkit eval, corrupt, demo) or aprkit.corruptions.find_frost_dir(download=True), or {others}"
    )


def texture_digest(frost_dir: str | os.PathLike | None = None) -> tuple[str, Path]:
    """A blake2b digest of the bytes of the five drawable textures (``FROST_FILES`` order) that ``frost_dir`` resolves
    to (``find_frost_dir``), and that directory: the identity of the textures, wherever they lie."""
    directory = find_frost_dir(frost_dir)
    h = hashlib.blake2b(digest_size=16)
    for name in FROST_FILES[:5]:
        h.update((directory / name).read_bytes())
    return h.hexdigest(), directory


def texture_id(frost_dir: str | os.PathLike | None = None) -> str:
    """The frost textures' identity for cache keys: :func:`texture_digest`, or ``"missing"`` where none are found
    (frost then raises when it runs)."""
    try:
        return texture_digest(frost_dir)[0]
    except FileNotFoundError:
        return "missing"


def _cv2_linear_resize(img: np.ndarray, scale: float) -> np.ndarray:
    """``cv2.resize(img, (0, 0), fx=scale, fy=scale)`` (bilinear, half-pixel centres) on uint8 HWC
    (bit-identical to OpenCV 4.11 on the frost textures at scale 0.2)."""
    h, w = img.shape[:2]
    oh, ow = int(round(h * scale)), int(round(w * scale))
    out = img.astype(np.float64)
    for axis, n, on in ((0, h, oh), (1, w, ow)):
        src = (np.arange(on) + 0.5) / scale - 0.5
        i0 = np.floor(src).astype(np.int64)
        f = src - i0
        f = np.where(i0 < 0, 0.0, f)
        i0 = np.clip(i0, 0, n - 1)
        f = np.where(i0 >= n - 1, 0.0, f)
        i1 = np.clip(i0 + 1, 0, n - 1)
        a, b = np.take(out, i0, axis=axis), np.take(out, i1, axis=axis)
        shape = [1, 1, 1]
        shape[axis] = on
        out = a + (b - a) * f.reshape(shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@tensor_cache(maxsize=16)
def _load(directory: str, scale: float, state: tuple) -> tuple[torch.Tensor, ...]:
    """The textures of ``directory`` resized by ``scale``; ``state`` (the files' sizes and modification times) keys the
    cache too: textures replaced in a running process are read again (the results' keys hash the new files)."""
    from PIL import Image

    out = []
    for name in FROST_FILES[:5]:
        with Image.open(Path(directory) / name) as im:
            arr = np.asarray(im.convert("RGB"))  # alpha is dropped, as cv2.imread does
        if scale != 1.0:
            arr = _cv2_linear_resize(arr, scale)
        out.append(torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))))
    return tuple(out)


def frost_textures(scale: float, min_size: tuple[int, int], frost_dir: str | os.PathLike | None = None
                   ) -> tuple[torch.Tensor, ...]:
    """The five drawable frost textures as uint8 ``(3, h, w)`` tensors, resized by ``scale``.

    When a texture would be too small for a random ``min_size`` crop, every texture is resized by the
    smallest larger factor that fits (only relevant for images larger than the preset's size).
    """
    directory = str(find_frost_dir(frost_dir))
    state = tuple((st.st_size, st.st_mtime_ns) for st in (os.stat(Path(directory) / n) for n in FROST_FILES[:5]))
    textures = _load(directory, float(scale), state)
    need = max(max((min_size[0] + 1) / t.shape[1], (min_size[1] + 1) / t.shape[2]) for t in textures)
    if need > 1.0:
        textures = _load(directory, float(scale) * need * 1.01, state)
    return textures
