"""The manifest of a generated -C folder: ``<out>/manifest.json``, written before any output.

It records everything the outputs depend on (layout, seed, preset, the corruptions' base version, an input
fingerprint; in the CIFAR layout the severities stacked in each array, for JPEG trees size and quality (each severity
is its own folder there: severities are added like corruptions); and the ``environment``: the device type, on CUDA
its TF32 and float32 matmul settings, and the torch, Pillow and libjpeg versions, plus torchvision's when image files
are decoded) and which outputs are complete. Outputs that depend on more record it per output (``depends``: the
frost outputs the digest of the frost textures, the outputs of a corruption changed since the base version that
corruption's version; where the textures were read from, the class names of folder input and the aprkit version are
kept under ``info``, for information only). A rerun into the same folder resumes only when all of these match;
otherwise it is refused (pick another folder or pass ``overwrite=True`` / ``--overwrite``); a manifest of an older
aprkit, which did not record some of them, is refused the same way. A manifest whose run stopped before its first
corruption output (a bad option, a crash; outputs begun without a file written count as none) is replaced without
asking: there is nothing to keep. A run holds a lock on the folder while it writes, so a second run into the folder
is refused until the first ends. Outputs are skipped only when the manifest lists them complete; the readers
(``aprkit.data.imagenet_c``) refuse an output listed as begun but not complete.
Nothing here is public API.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write_text, remove_temporaries

__all__ = ["MANIFEST", "Manifest", "check_batch_size", "environment", "fingerprint_array", "fingerprint_files",
           "read_manifest"]

MANIFEST = "manifest.json"
_TOOL = "aprkit corrupt"


def fingerprint_array(images: np.ndarray, labels: np.ndarray | None = None) -> dict[str, Any]:
    """Shape, dtype and a blake2b digest of the image bytes (and of the labels, when given)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(images).data)
    out: dict[str, Any] = {"shape": list(images.shape), "dtype": str(images.dtype), "digest": h.hexdigest()}
    if labels is not None:
        lab = np.ascontiguousarray(np.asarray(labels, dtype=np.int64))
        out["labels_digest"] = hashlib.blake2b(lab.data, digest_size=16).hexdigest()
    return out


def fingerprint_files(paths: Sequence[Path], root: Path) -> dict[str, Any]:
    """Number of files and a digest of their paths (relative to ``root``), sizes and modification times (an edited
    image keeps its size in an uncompressed format; the time tells, without reading every file)."""
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return {"files": len(paths), "digest": h.hexdigest()}


def environment(device: str | torch.device, decodes_files: bool = False) -> dict[str, Any]:
    """The ``device`` (its type; on CUDA also TF32 for matmuls and the float32 matmul precision, which move values by
    a level) and the library versions the outputs depend on: torch (FFTs, ``erfinv``, ...), Pillow and its libjpeg
    (JPEG and pixelate bytes, the JPEG files, resizing), and with ``decodes_files`` torchvision (its decoders read
    the input images)."""
    import PIL
    from PIL import features

    dev = torch.device(device)
    where: dict[str, Any] = {"type": dev.type}
    if dev.type == "cuda":
        where.update(allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
                     matmul_precision=torch.get_float32_matmul_precision())
    versions = {"torch": torch.__version__, "pillow": PIL.__version__,
                "libjpeg": features.version("libjpeg_turbo") or features.version("jpg")}
    if decodes_files:
        import torchvision

        versions["torchvision"] = torchvision.__version__
    return {"device": where, "versions": versions}


def read_manifest(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``aprkit corrupt`` manifest of the folder ``out``, or ``None`` (none, unreadable, or another tool's)."""
    path = Path(out) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == _TOOL else None


def _remove_outputs(out: Path, entries: Iterable[object]) -> None:
    """Delete the outputs a replaced manifest recorded (files such as ``fog.npy`` or folders such as ``fog/3``), only
    inside ``out``, and the folders that held nothing else (an empty ``fog/`` read as a corruption that is there)."""
    root = out.resolve()
    for entry in dict.fromkeys(e for e in entries if isinstance(e, str) and e):
        path = (out / entry).resolve()
        if root not in path.parents:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        for parent in path.parents:
            if parent == root or root not in parent.parents:
                break
            try:
                parent.rmdir()  # only an empty one
            except OSError:
                break


def _nothing_written(out: Path, manifest: Mapping[str, Any], cheap: Iterable[str]) -> bool:
    """Whether the run of ``manifest`` stopped before it wrote any corruption output: it lists only ``cheap`` outputs
    (bookkeeping such as the label file, rewritten in no time) and outputs it began without writing a file in them
    (an ImageNet-C severity folder marked started, then a crash or a bad input before its first image)."""
    cheap = set(cheap)
    complete = set(manifest.get("complete", []))
    for entry in [*manifest.get("started", []), *complete]:
        if not isinstance(entry, str) or entry in cheap:
            continue
        path = out / entry
        if entry in complete or path.is_file() or (path.is_dir() and any(p.is_file() for p in path.rglob("*"))):
            return False
    return True


def _hold(folder: Path) -> int | None:
    """The folder's run lock (an exclusive ``flock`` on the folder itself: nothing is left in it), held while a run
    writes: a second run into the folder is refused at once (it would rewrite the manifest under the first one, or
    take over a folder whose first output is still being computed); a run that died left it free. ``None`` where
    ``fcntl`` is missing (Windows: no lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"another run is writing into {str(folder)!r}; wait for it to finish or pick another output "
                         "folder") from None
    except OSError:  # a file system without locks (some network mounts): write unlocked, as before
        os.close(fd)
        return None
    return fd


def _aprkit_version() -> str:
    from .. import __version__

    return __version__


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {'not recorded (an older aprkit)' if k not in old else repr(old[k])} there, {new.get(k)!r} now"
            for k in keys if old.get(k) != new.get(k)]


class Manifest:
    """Open (or start) the manifest of ``out`` for a run with generation ``params``.

    ``outputs``: the output paths (relative to ``out``) this run may write; ``depends``: for some of them, what else
    they depend on (``{"frost.npy": {"frost_textures": digest}}``), recorded when they are started and compared on
    resume; ``info``: recorded, never compared. Raises ``ValueError`` when the folder's manifest was written with
    other parameters (or lists an output this run writes with other ``depends``), or when outputs exist without a
    manifest, unless ``overwrite`` (then the manifest starts afresh and every output is recomputed; with the same
    parameters only this run's outputs are, the others stay). A manifest with other parameters whose run wrote no
    corruption output (it lists only ``cheap`` outputs, bookkeeping such as the label file rewritten in no time, and
    outputs begun without a file written) is replaced without asking: its run stopped before its first corruption.
    ``retired``: parameters an older aprkit recorded that no longer change the outputs, left out of an older
    manifest's parameters before they are compared. The folder's lock is held from here until :meth:`release` (or
    the end of a ``with`` block): another run into the folder raises ``ValueError`` meanwhile.
    """

    def __init__(self, out: Path, params: dict[str, Any], outputs: Iterable[str], overwrite: bool = False, *,
                 depends: Mapping[str, dict[str, Any]] | None = None, info: Mapping[str, Any] | None = None,
                 cheap: Iterable[str] = (), retired: Iterable[str] = ()) -> None:
        self.path = Path(out) / MANIFEST
        self._lock = _hold(Path(out))
        try:
            self._open(Path(out), params, outputs, overwrite, depends, info, cheap, retired)
        except BaseException:
            self.release()
            raise

    def _open(self, out: Path, params: dict[str, Any], outputs: Iterable[str], overwrite: bool,
              depends: Mapping[str, dict[str, Any]] | None, info: Mapping[str, Any] | None,
              cheap: Iterable[str], retired: Iterable[str]) -> None:
        params = json.loads(json.dumps(params))  # the JSON form: tuples -> lists, as read back
        self.depends: dict[str, dict[str, Any]] = json.loads(json.dumps(dict(depends or {})))
        outputs = list(outputs)
        if self._lock is not None:  # held: no other run owns them (unlocked file systems: left alone)
            remove_temporaries(out, [*outputs, MANIFEST])
        old = self._read(overwrite)
        if old is not None and isinstance(old.get("params"), dict):  # no longer generation parameters: not compared
            old["params"] = {k: v for k, v in old["params"].items() if k not in set(retired) or k in params}
        replaced = False
        if old is not None and old.get("params") != params and not overwrite and _nothing_written(out, old, cheap):
            _remove_outputs(Path(out), [*old.get("started", []), *old.get("complete", [])])  # nothing to keep
            old, replaced = None, True
        hint = f"pick another output folder or pass --overwrite (overwrite=True) to replace {str(out)!r}"
        if old is not None and old.get("params") != params and not overwrite:
            diff = "; ".join(_differences(old.get("params") or {}, params))
            raise ValueError(f"{self.path} was written with other generation parameters ({diff}); {hint}")
        if old is not None and not overwrite:
            begun = {*old.get("started", []), *old.get("complete", [])}
            for entry in outputs:
                recorded = (old.get("depends") or {}).get(entry, {})
                if entry in begun and recorded != self.depends.get(entry, {}):
                    diff = "; ".join(_differences(recorded, self.depends.get(entry, {})))
                    raise ValueError(f"{self.path} lists {entry} as made from other inputs than this run's ({diff}); "
                                     f"{hint}")
        if old is None and not overwrite:
            present = [o for o in outputs if (Path(out) / o).exists()]
            if present:
                more = " ..." if len(present) > 3 else ""
                why = (f"that its {MANIFEST} (of a run that wrote nothing, replaced) did not list" if replaced else
                       f"without a {MANIFEST} (written by an older aprkit or another tool)")
                raise ValueError(f"{str(out)!r} already holds {', '.join(present[:3])}{more} {why}; {hint}")
        keep = old is not None and old.get("params") == params
        if overwrite and keep and old is not None:  # the same parameters and input: this run's outputs are made
            # again, the folder's others stay (--overwrite to redo fog deleted every other corruption without a word)
            _remove_outputs(Path(out), outputs)
            for key in ("started", "complete"):
                old[key] = [e for e in old.get(key, []) if e not in outputs]
            for entry in outputs:
                (old.get("depends") or {}).pop(entry, None)
        elif overwrite:  # the outputs of the replaced run go too (not only the ones rewritten now); without a usable
            # manifest, at least this run's (an ImageNet-C folder keeping an image whose input is gone breaks pairing)
            _remove_outputs(Path(out), [*outputs, *([] if old is None else [*old.get("started", []),
                                                                            *old.get("complete", [])])])
        fresh: dict[str, Any] = {"tool": _TOOL, "params": params, "complete": [], "started": []}
        self.data: dict[str, Any] = old if keep and old is not None else fresh
        self.data.setdefault("complete", [])
        self.data.setdefault("started", [])
        self.data.setdefault("depends", {})
        self.data.setdefault("info", {}).update(json.loads(json.dumps(dict(info or {}))), aprkit=_aprkit_version())
        self._write()

    def release(self) -> None:
        """Let another run write into the folder (the writers release when they return or fail)."""
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor ends its flock
            self._lock = None

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _read(self, overwrite: bool) -> dict[str, Any] | None:
        """The folder's manifest; ``None`` when there is none, or with ``overwrite`` when it cannot be read or another
        tool wrote it (then it is replaced, and this run's outputs are recomputed)."""
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:
            if overwrite:
                return None
            raise ValueError(f"{self.path} is not a readable manifest ({err}); pick another output folder or pass "
                             "--overwrite (overwrite=True) to replace it") from None
        if not isinstance(data, dict) or data.get("tool") != _TOOL:
            if overwrite:
                return None
            raise ValueError(f"{self.path} is not a manifest of {_TOOL}; pick another output folder or pass "
                             "--overwrite (overwrite=True) to replace it")
        return data

    def _write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")

    def is_complete(self, entry: str) -> bool:
        """``entry`` was finished under these parameters."""
        return entry in self.data["complete"]

    def was_started(self, entry: str) -> bool:
        """``entry`` was begun under these parameters (its existing files are valid)."""
        return entry in self.data["started"] or self.is_complete(entry)

    def _record(self, entry: str) -> None:
        if self.depends.get(entry):
            self.data["depends"][entry] = self.depends[entry]

    def start(self, entry: str) -> None:
        if entry not in self.data["started"]:
            self.data["started"].append(entry)
            self._record(entry)
            self._write()

    def complete(self, entry: str) -> None:
        if entry not in self.data["complete"]:
            self.data["complete"].append(entry)
            self._record(entry)
            self._write()


def check_batch_size(batch_size: object) -> int:
    """A positive integer batch size (``ValueError`` otherwise)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer number of images, got {batch_size!r}")
    return int(batch_size)
