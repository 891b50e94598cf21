"""Training state on disk: atomic checkpoints, RNG capture/restore and derived per-step seeds.

A resumable checkpoint (``last.pt``) holds the model, optimizer, scheduler and GradScaler states, the
position in the run (epoch, batch within the epoch, global step), the metric history, and the random state
of torch (CPU and every CUDA device), NumPy, Python and the training generator. Data order and per-step
augmentation randomness are derived from ``(seed, epoch, step)`` (:func:`derive_seed`), so a resumed run
draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._hash import derive_seed
from .._io import atomic_torch_save, check_zip_intact
from ..models.checkpoint import TRAIN_STATE_FORMAT
from .run_files import REPORT_FILES, RUN_FILES

__all__ = [
    "CHECKPOINT_FORMAT",
    "RUN_FILES",
    "REPORT_FILES",
    "RunExistsError",
    "RunBusyError",
    "run_lock",
    "check_run_folder",
    "clear_run_folder",
    "derive_seed",
    "capture_rng",
    "restore_rng",
    "atomic_save",
    "load_train_checkpoint",
]

CHECKPOINT_FORMAT = TRAIN_STATE_FORMAT  # ``last.pt``; aprkit.models reads its weights too



class RunExistsError(FileExistsError, ValueError):
    """``train.out`` already holds a run and neither ``resume`` nor ``overwrite`` was given."""


class RunBusyError(RunExistsError):
    """Another process is training into ``train.out`` right now (it holds the folder's lock)."""


@contextlib.contextmanager
def run_lock(out: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the output folder's lock (``OUT/.aprkit-train.lock``, made in ``out``, which must exist) while a run writes
    there: a second ``aprkit train`` into the same folder (the same command twice, a resume while the first still
    runs) is refused with :class:`RunBusyError` instead of both writing its files. The main process takes it, right
    before its first write; the empty lock file stays (deleting it would let a waiter and a newcomer both lock)."""
    import filelock

    from ..data.download import file_lock

    lock = file_lock(Path(out) / ".aprkit-train")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise RunBusyError(f"another aprkit train is writing to {out} now (it holds {lock.lock_file}); wait for it to "
                           "finish (then --resume continues it), or choose another --out") from None
    try:
        yield
    finally:
        lock.release()


def check_run_folder(out: str | os.PathLike[str] | None, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over an existing one in ``out`` (unless ``resume`` or ``overwrite``); a folder
    holding only a run's ``config.yaml`` (and event files), one that failed before its first checkpoint, holds
    nothing trained and is no run.

    Raises :class:`RunExistsError` (a ``FileExistsError`` and a ``ValueError``) naming the files found,
    and ``ValueError`` when both ``resume`` and ``overwrite`` are set.
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite contradict each other: --resume (or train.resume: true in the "
                         "config) continues the run in the output folder, --overwrite deletes it and starts over; "
                         "give one of them")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise NotADirectoryError(f"--out {out} is a file; expected the folder of the run (it is made when missing)")
    if out is None:
        return
    found = [name for name in RUN_FILES if (Path(out) / name).exists()]
    if "model.pt" in found and not {"last.pt", "metrics.json", "metrics.csv"} & set(found):
        # a run writes its metrics from the first epoch on and model.pt at its end: this one is someone else's file,
        # which --overwrite would delete and --resume could not continue
        raise RunExistsError(f"{out} holds a model.pt without a run's last.pt or metrics beside it: a file aprkit "
                             "train did not write (it would replace it); choose another --out, or move it away")
    if overwrite:
        return
    if resume:  # resuming needs last.pt; without it a "resume" would silently retrain over the finished run's files
        kept = [name for name in found if name in ("model.pt", "metrics.json", "metrics.csv")]
        if kept and "last.pt" not in found:
            raise RunExistsError(
                f"cannot resume {out}: it holds a run ({', '.join(kept)}) but no last.pt to continue from; pass "
                "--overwrite to train it again from the start, or choose another --out")
        return
    if any(name not in ("config.yaml", "tb") for name in found):  # a run that failed before its first checkpoint
        # (an error in its first step) left only its config: nothing was trained, a new run replaces it
        raise RunExistsError(
            f"{out} already holds a training run ({', '.join(found)}); pass --resume to continue it, --overwrite to "
            "delete it and start over (library: fit(..., resume=True) / fit(..., overwrite=True)), or choose "
            "another --out"
        )


def clear_run_folder(out: str | os.PathLike[str]) -> list[str]:
    """Delete the run files of ``out`` (:data:`RUN_FILES`, and :data:`REPORT_FILES` when it held a run; nothing else in
    the folder); returns their names."""
    import shutil

    removed = []
    held_run = any((Path(out) / name).exists() for name in RUN_FILES)
    for name in RUN_FILES + (REPORT_FILES if held_run else ()):
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Random states of torch (CPU + all CUDA devices), NumPy, Python and ``generator``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # the key array as a tensor: a checkpoint of tensors and plain values loads with torch.load(weights_only=True)
        # (``aprkit eval --checkpoint last.pt``), which refuses NumPy arrays
        "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: Mapping[str, Any], generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng` (CUDA states are restored only when the device count matches)."""
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys.numpy() if isinstance(keys, torch.Tensor) else keys, dtype=np.uint32),
                         *rest))  # a tensor since the checkpoints load weights-only; an array in older ones
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    saved = state.get("generator")
    if generator is not None and saved is not None:
        if saved.numel() == generator.get_state().numel():
            generator.set_state(saved)
        else:  # a CUDA run resumed on the CPU (or back): the loop reseeds this generator every step anyway
            warnings.warn(f"the checkpoint's augmentation generator state belongs to another device type than "
                          f"{generator.device.type!r}; not restored (the training loop reseeds it from the seed and "
                          "step at every step, so the augmentations are unaffected)", RuntimeWarning, stacklevel=2)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file, flush to disk, then ``os.replace`` (never a half-written file)."""
    return atomic_torch_save(obj, path)


def load_train_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a resumable training checkpoint written by ``fit`` (a trusted, locally written file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint to resume from at {path}")
    check_zip_intact(path, "the run would resume from other weights; resume from an intact copy, or start over with "
                           "--overwrite (aprkit train; fit(overwrite=True))")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # zip / pickle / EOF errors of a truncated or corrupted file
        raise ValueError(f"{path} is not a valid training checkpoint (torch.load cannot read it: truncated or "
                         "corrupted); start over with --overwrite (aprkit train; fit(overwrite=True)), or resume "
                         "from a complete copy") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an aprkit training checkpoint (format {CHECKPOINT_FORMAT!r})")
    return state
