"""Atomic file writes shared by every aprkit module that persists results (checkpoints, logs, caches), and the
integrity check of the torch files it reads back (:func:`check_zip_intact`).

A writer fills a temporary file in the destination folder and ``os.replace``-s it over the target, so
readers (and a resumed run after a crash) never see a half-written file. The temporary file is removed
if writing fails. Nothing here is public API.

``durable=True`` (the default, for deliverables: ``results.json``, reports, checkpoints, logs) also
``fsync``-s the file before the rename, so the new content survives a power loss or kernel crash, not
just a killed process. ``durable=False`` skips it (an fsync costs milliseconds on a disk): for files that
are only a cache, where a file lost or damaged by a crash is just recomputed (``aprkit.eval.engine.cache``).
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_torch_save", "remove_temporaries",
           "to_jsonable"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any], *, durable: bool = True) -> Path:
    """Call ``write(fh)`` on a binary temporary file next to ``path``, then rename it to ``path``.

    ``durable``: fsync the file before the rename (see the module docstring). Creates the parent folder
    when missing. Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600: the mode open() would give (0666 less the umask); a
                with contextlib.suppress(OSError):  # file system without modes (vfat) keeps its own
                    os.fchmod(fh.fileno(), 0o666 & ~_umask())
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        # torch.save's RuntimeError over a failed write (not an interrupt, nor a writer's own error)
        cause = _os_cause(err) if isinstance(err, (OSError, RuntimeError)) else None
        if cause is not None and (cause is not err or not err.filename):  # the file it was writing, named
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from err
        raise
    return path


def _os_cause(err: BaseException) -> OSError | None:
    """The ``OSError`` behind ``err`` (itself, or the one a writer such as ``torch.save`` turned into a
    ``RuntimeError``: a full disk read "unexpected pos 552576 vs 552464"), or ``None``."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def remove_temporaries(folder: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left beside the files ``names`` of ``folder`` (paths
    relative to it) when its process was killed mid-write (``<name>.<8 random characters>.tmp``); returns them. Only
    for a caller that knows no other process writes these files now (it holds the folder's lock, or is the run's
    only writer)."""
    removed = []
    for name in names:
        path = Path(folder) / name
        if not path.parent.is_dir():
            continue
        for tmp in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
            if tmp.is_file() and len(tmp.name) == len(path.name) + len(".xxxxxxxx.tmp"):  # mkstemp's 8 characters
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def _umask() -> int:
    """The process's umask (Linux reads it without changing it; elsewhere it is set and put back at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (``durable``: fsync first, see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data), durable=durable)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, encoding: str = "utf-8", *, durable: bool = True
) -> Path:
    """Write ``text`` to ``path`` atomically (``encoding`` defaults to UTF-8; ``durable``: see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(text.encode(encoding)), durable=durable)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str], *, durable: bool = True) -> Path:
    """``torch.save(obj)`` to ``path`` atomically.

    torch is imported only when called; ``durable``: see :func:`atomic_write`.
    """
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh), durable=durable)


def check_zip_intact(path: str | os.PathLike[str], consequence: str) -> None:
    """Refuse a zip file (the format of ``torch.save``) whose record fails its CRC-32: ``ValueError`` naming the file,
    the record, ``consequence`` (what loading it would do, and what to do instead). ``torch.load`` does not check the
    CRCs, so a byte changed on disk or in transfer would load as different weights; reading them back costs about a
    millisecond per megabyte. A file saved without CRCs (all 0) or no zip at all (a legacy pickle) is not checked."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            if all(info.CRC == 0 for info in zf.infolist() if info.file_size):  # saved without CRCs
                return  # (torch.serialization.set_crc32_options(False) writes 0 for every record)
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):  # no zip, or one torch.load reports itself
        return
    if bad is not None:
        raise ValueError(f"{path} is damaged: its record {bad!r} fails its CRC-32 check (a byte changed on disk or in "
                         f"transfer), so {consequence}")


def to_jsonable(value: Any) -> Any:
    """Convert tensors, numpy values, paths and tuples to plain JSON types; non-finite floats become None."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:  # the common cases first
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if kind is list:
        return [to_jsonable(v) for v in value]
    import torch

    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a value of type {type(value).__name__} in the result cache (expected JSON data)")


def plain_data(value: Any, where: str | None = None) -> Any:
    """``value`` as plain Python data: NumPy numbers and arrays as Python numbers and lists, enum members as their
    values, subclasses of the plain types (named tuples, ``OrderedDict``) as the plain types, in nested dicts, lists
    and tuples; tensors, dtypes, sizes and devices kept. Anything else: ``TypeError`` naming ``where`` (what a
    ``weights_only`` checkpoint load accepts), or kept as it is with ``where=None`` (a later check names it)."""
    import enum

    import numpy as np
    import torch

    if value is None or isinstance(value, (torch.Tensor, torch.dtype, torch.Size, torch.device)):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, enum.Enum):  # an enum member is stored as its value (str(Act.RELU) would be 'Act.RELU')
        return plain_data(value.value, where)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):  # the base types' own conversions: a subclass may override __str__ / __int__
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, complex):
        return complex(value.real, value.imag)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, Mapping):
        return {plain_data(k, where and f"a key of {where}"): plain_data(v, where and f"{where}[{k!r}]")
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain_data(v, where and f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if where is None:
        return value
    raise TypeError(f"{where} is a {type(value).__name__}, which an aprkit checkpoint cannot hold (it is loaded "
                    "without unpickling code); store numbers, strings, None, tensors, or lists/tuples/dicts of them")
