"""Resuming a training run from its ``last.pt``: the checks that it is the same run, the restored state, and the
warnings when the config or the process count changed since.

``resume_run`` loads the checkpoint into the freshly built model, optimiser, scheduler, scaler and generator (in
place) and returns where the run stands (:class:`RunPosition`); ``RunPosition()`` is a new run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import dataset_len
from ..distributed import DistInfo
from ..models.normalize import unwrap_model
from .config import Config, config_from_dict
from .optim import apply_optim_config
from .state import load_train_checkpoint, restore_rng
from .trajectory import CUDA_ONLY, RESUME_FREE, changed_keys, recipe_version, trajectory_view

__all__ = ["RunPosition", "resume_run", "data_ids"]


@dataclass
class RunPosition:
    """Where a run stands: the epoch and the batch inside it to go on from, the global step, the logged rows."""

    epoch: int = 0
    start_batch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    carried_s: float = 0.0  # training time of the epoch before a mid-epoch resume: the epoch's row counts all of it
    epoch_lr: float | None = None  # the rate of that epoch's first step (its row's lr), saved by newer checkpoints
    config_changes: list[dict[str, Any]] = field(default_factory=list)  # changed at a resume: step, config before
    saved_config: dict[str, Any] = field(default_factory=dict)  # the resumed checkpoint's config
    resumed: bool = False


def data_ids(train: Any, test: Any = None) -> dict[str, str]:
    """What the run trains and tests on, saved in ``last.pt`` and compared on resume: of each whole set (a
    ``data.limit`` subset's parent: the limit is a config setting), its size and its images' class folders, file
    names and labels when it lists them (``samples``, as the image folders and PNG trees do), else its labels. Reads
    no image and stats no file (1.3 million samples in about a second): an image added, removed or renamed shows, one
    overwritten in place does not; staged copies of the data elsewhere read the same."""
    return {split: _identity(ds) for split, ds in (("train", train), ("test", test)) if ds is not None}


def _identity(ds: Any) -> str:
    from ..data.loading import attribute_labels
    from ..data.subsets import SubsetDataset

    base = ds.dataset if isinstance(ds, SubsetDataset) else ds
    n = dataset_len(base)
    h = hashlib.sha1(f"{type(base).__name__}:{n}".encode())
    samples = getattr(base, "samples", None)
    if isinstance(samples, (list, tuple)) and samples and isinstance(samples[0], (list, tuple)):
        tail = os.sep.join  # a path's class folder and file name, without building Path objects
        h.update("\n".join(f"{tail(os.fspath(p).rsplit(os.sep, 2)[-2:])}\t{y}" for p, y, *_ in samples).encode())
    else:
        try:
            labels = attribute_labels(base)
        except (TypeError, ValueError):
            labels = None
        if labels is not None:
            h.update(labels.cpu().contiguous().numpy().tobytes())
    return f"{n}-{h.hexdigest()[:16]}"


def _check_same_data(state: dict[str, Any], ckpt_path: Path, classes: list[str] | None,
                     ids: dict[str, str]) -> list[str]:
    """Refuse training data whose classes differ from the checkpoint's (label i would change meaning partway through
    the run); return the splits whose files changed since (``data_ids``; the caller warns and records them)."""
    saved = state.get("classes")
    if saved is not None and classes is not None and list(saved) != list(classes):
        diff = [f"{i}: {a!r} -> {b!r}" for i, (a, b) in enumerate(zip(saved, classes, strict=False)) if a != b]
        diff += [f"{len(saved)} classes -> {len(classes)}"] if len(saved) != len(classes) else []
        raise ValueError(f"cannot resume: the training data's classes differ from {ckpt_path}'s ({'; '.join(diff[:4])}"
                         f"{' ...' if len(diff) > 4 else ''}): label i would change meaning partway through the run; "
                         "restore the class folders, or start a new run (another --out)")
    before = state.get("data_ids") or {}  # older checkpoints: not recorded; ranks other than 0: not read
    if not ids:
        return []
    return [split for split in ("train", "test") if before.get(split) not in (None, ids.get(split))]


def _check_same_model(state: dict[str, Any], cfg: Config, ckpt_path: Path, model: nn.Module) -> None:
    """Load the checkpoint's weights into ``model``, refusing another model name, class count or architecture."""
    saved = {k: (state.get("config") or {}).get("model", {}).get(k) for k in ("name", "num_classes")}
    if str(saved["name"]).lower() != cfg.model.name.lower() or saved["num_classes"] != cfg.model.num_classes:
        raise ValueError(f"cannot resume: {ckpt_path} is a run of model.name={saved['name']!r} with "
                         f"{saved['num_classes']} classes, not {cfg.model.name!r} with {cfg.model.num_classes}; "
                         "resume with the same model settings or choose another --out")
    saved_kwargs = (state.get("config") or {}).get("model", {}).get("kwargs", {}) or {}
    if json.dumps(saved_kwargs, sort_keys=True, default=str) != json.dumps(cfg.model.kwargs, sort_keys=True,
                                                                          default=str):  # another architecture
        raise ValueError(f"cannot resume: {ckpt_path} was built with model.kwargs={saved_kwargs}, this config has "
                         f"{cfg.model.kwargs}; resume with the same model settings or choose another --out")
    try:
        unwrap_model(model).load_state_dict(state["model"])
    except RuntimeError as err:  # the same settings built another model: a builder default changed since
        from ..models.registry import checkpoint_kwargs

        then = checkpoint_kwargs(cfg.model.name, dict(cfg.model.kwargs), state["model"])
        pin = " ".join(f"model.kwargs.{k}={v}" for k, v in then.items() if cfg.model.kwargs.get(k) != v)
        first = str(err).splitlines()[0]
        raise ValueError(f"cannot resume: {ckpt_path}'s weights do not fit the model these settings build now "
                         f"(a default of {cfg.model.name!r} changed since it was trained?)"
                         + (f"; resume with --set {pin}" if pin else "") + f". {first}") from None


def _saved_config(state: dict[str, Any], cfg: Config) -> Config:
    """The checkpoint's config as a :class:`Config`; ``cfg`` where it no longer parses (a key since renamed)."""
    try:
        return config_from_dict(state.get("config") or {})
    except (TypeError, ValueError):
        return cfg


def _warn_changes(state: dict[str, Any], cfg: Config, ckpt_path: Path, pos: RunPosition, changed: list[str],
                  finished: bool, at_max: bool) -> None:
    """The resume's status line and its warnings (rank 0): another recipe version, a changed config."""
    if at_max and pos.epoch < cfg.optim.epochs:  # printed either way: with the run's own config.yaml, the resume
        # ended at once (exit 0) with "finished after epoch 0"
        print(f"note: the run in {ckpt_path.parent} stopped at train.max_steps={cfg.train.max_steps} (step {pos.step}, "
              + (f"in epoch {pos.epoch + 1} of {cfg.optim.epochs}, after its batch {pos.start_batch}" if pos.start_batch
                 else f"after epoch {pos.epoch} of {cfg.optim.epochs}") + "): nothing more to train with that limit; "
              "give --set train.max_steps=null (or a larger one) with --resume to go on", file=sys.stderr)
        return
    if cfg.train.progress:  # a status line; the warnings below are printed either way
        where = (f"finished after epoch {pos.epoch}" if finished else
                 f"in epoch {pos.epoch + 1} " + (f"after its batch {pos.start_batch}" if pos.start_batch else
                                                 "at its start"))
        print(f"resumed from {ckpt_path} {where} (step {pos.step})", file=sys.stderr)
    # against the version this aprkit gives the *saved* settings: a changed aug.method is a config change (below),
    # not a new recipe
    saved_recipe, recipe = state.get("recipe_version", 2), recipe_version(_saved_config(state, cfg))  # no field: <= 2
    if saved_recipe != recipe:
        print(f"warning: {ckpt_path} was trained by recipe version {saved_recipe}, this aprkit trains "
              f"version {recipe} (aprkit.train.trajectory.RECIPE_VERSION says what changed); the resumed "
              "run will not match an uninterrupted one", file=sys.stderr)
    if changed and finished:
        print(f"note: the config differs from the checkpoint's in {', '.join(changed)}, but the run is "
              f"finished (epoch {pos.epoch} of {cfg.optim.epochs}{', at train.max_steps' if at_max else ''}): "
              "nothing is trained and the changes take no effect", file=sys.stderr)
    elif changed:
        print(f"warning: the config differs from the checkpoint's in {', '.join(changed)}; the resumed run "
              "goes on with the new values (recorded in last.pt's and model.pt's config_changes; config.yaml "
              "keeps the config the run started with) and will not match an uninterrupted one", file=sys.stderr)


def resume_run(ckpt_path: Path, cfg: Config, info: DistInfo, *, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LambdaLR, schedule: Callable[[int], float],
               scaler: torch.amp.GradScaler, generator: torch.Generator, accum: torch.Tensor,
               steps_per_epoch: int, classes: list[str] | None = None, ids: dict[str, str] | None = None
               ) -> RunPosition:
    """Restore the run saved in ``ckpt_path`` into the given objects (in place) and return its position.

    ``accum`` (loss * n, correct, n of the epoch so far) is restored on rank 0 only: the saved sums are over every
    rank's share of the epoch, counted once. Refuses a checkpoint of another model, other classes (``classes``), another
    number of steps per epoch (the schedule and the position inside the epoch are counted in steps) or one past
    ``optim.epochs``; data whose files changed since (``ids``, :func:`data_ids`) is a change of the config's kind."""
    o = cfg.optim
    state = load_train_checkpoint(ckpt_path)
    _check_same_model(state, cfg, ckpt_path, model)
    files = _check_same_data(state, ckpt_path, classes, ids or {})
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    apply_optim_config(o, optimizer, scheduler, schedule)
    if state["scaler"]:  # runs without a float16 GradScaler (CPU, bfloat16) saved an empty state
        scaler.load_state_dict(state["scaler"])
    pos = RunPosition(epoch=state["epoch"], start_batch=state["batch_in_epoch"], step=state["global_step"],
                      resumed=True, saved_config=state["config"])
    pos.carried_s = float(state.get("epoch_time_s") or 0.0) if pos.start_batch else 0.0
    saved_lr = state.get("epoch_lr")
    pos.epoch_lr = float(saved_lr) if pos.start_batch and isinstance(saved_lr, (int, float)) else None
    saved_steps = (state.get("sampler") or {}).get("steps_per_epoch")  # older checkpoints: not checked
    if saved_steps is not None and saved_steps != steps_per_epoch:
        raise ValueError(f"cannot resume: {ckpt_path} ran {saved_steps} steps per epoch, this config "
                         f"{steps_per_epoch} (optim.batch_size or the training data changed): the learning-rate "
                         "schedule and the position inside the epoch are counted in steps. Resume with the same "
                         "batch size and data, or start a new run (another --out)")
    if pos.epoch > o.epochs or (pos.epoch == o.epochs and pos.start_batch > 0):
        raise ValueError(f"cannot resume with optim.epochs={o.epochs}: {ckpt_path} is already at epoch {pos.epoch}, "
                         f"batch {pos.start_batch} (its weights are past that budget); give optim.epochs >= "
                         f"{pos.epoch + (pos.start_batch > 0)} or start a new run (another --out)")
    # a partial row (a max_steps stop inside an epoch) is replaced when training goes on; a run resumed at its
    # max_steps trains nothing more and keeps it
    at_max = cfg.train.max_steps is not None and pos.step >= cfg.train.max_steps
    finished = at_max or (pos.epoch >= o.epochs and pos.start_batch == 0)  # nothing left to train
    pos.history = [r for r in state["history"] if at_max or not r.get("partial")]
    if info.rank == 0:
        accum.copy_(state["accum"].to(accum.device))
    restore_rng(state["rng"], generator)
    saved_world = (state.get("sampler") or {}).get("world", info.world)
    if info.is_main and saved_world != info.world:
        print(f"warning: {ckpt_path} was trained on {saved_world} process(es), this run has {info.world}: the "
              "augmentation draws are seeded per rank, so the resumed run will not match an uninterrupted one",
              file=sys.stderr)
    saved_threads = (state.get("sampler") or {}).get("threads")  # older checkpoints: not recorded
    if info.is_main and info.device.type == "cpu" and saved_threads not in (None, torch.get_num_threads()):
        print(f"warning: {ckpt_path} was trained with {saved_threads} CPU thread(s), this run has "
              f"{torch.get_num_threads()}: CPU results repeat bit for bit only with the same thread count, so the "
              f"resumed run will not match an uninterrupted one (set train.threads={saved_threads} to fix it; aprkit "
              f"demo: run it with OMP_NUM_THREADS={saved_threads})", file=sys.stderr)
    # settings that take effect on CUDA only change nothing of a run on another device
    ignored = RESUME_FREE if info.device.type == "cuda" else RESUME_FREE | CUDA_ONLY
    if "cosine" in (cfg.optim.schedule, ((state["config"].get("optim") or {}).get("schedule"))):
        ignored = ignored - {"optim.epochs"}  # the cosine's length is the run's: more epochs change every step's lr
    changed = changed_keys(trajectory_view(state["config"]), trajectory_view(cfg.to_dict()), ignored)
    changed += [f"the {split} data's files" for split in files]  # the same spec, other images (added, removed)
    if cfg.data.test_limit != (state["config"].get("data") or {}).get("test_limit", cfg.data.test_limit):
        changed.append("data.test_limit")  # the weights' path is the same, the history's test rows are of other images
    if info.is_main:
        _warn_changes(state, cfg, ckpt_path, pos, changed, finished, at_max)
    pos.config_changes = list(state.get("config_changes") or [])
    if changed and not finished:
        pos.config_changes.append({"global_step": pos.step, "keys": changed, "before": state["config"]})
    return pos
