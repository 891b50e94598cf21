"""``fit(config) -> dict``: the training loop (SGD Nesterov, multi-step LR, AMP, DDP, resumable checkpoints).

Files under ``train.out`` (rank 0 only; nothing is written when ``out`` is ``None``):
``config.yaml`` (the resolved config), ``last.pt`` (resumable state, rewritten atomically every epoch and
every ``checkpoint_every_steps``), ``metrics.csv``/``metrics.json`` (one row per epoch) and ``model.pt``
(final weights via ``aprkit.models.save_checkpoint``, readable by ``aprkit eval --checkpoint``), ``train_report.md``
/ ``.html`` with ``figures/`` (the training curves; ``train.report``), and the empty lock
file ``.aprkit-train.lock``, held while the run writes (a second run into the folder meanwhile is refused).

The test set is evaluated every ``train.eval_every`` epochs and at the end of the run. An end-of-run evaluation
in an epoch that ``eval_every`` skips is marked ``stop_eval`` in its row; when the run is resumed and trains on,
that row loses its test metrics again, so the history equals the uninterrupted run's. A run stopped inside an
epoch (``train.max_steps``) logs a ``partial`` row, which a resume that trains on replaces.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._io import atomic_write_text, remove_temporaries
from ..distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    launch_rank,
    setup_distributed,
    teardown_distributed,
)
from ..models.base import eval_mode
from ..models.normalize import unwrap_model
from .batch_ops import to_float
from .config import (
    Config,
    changed_keys,
    config_from_dict,
    load_config,
    recipe_version,
    resolve_amp_dtype,
    validate_config,
)
from .data import (
    EpochBatches,
    check_labels,
    check_same_classes,
    check_several_classes,
    limit_datasets,
    load_datasets,
)
from .metrics_log import MetricsLogger
from .recipe import DeviceAugment, method_loss
from .state import (
    CHECKPOINT_FORMAT,
    REPORT_FILES,
    RUN_FILES,
    RunBusyError,
    atomic_save,
    capture_rng,
    check_run_folder,
    clear_run_folder,
    derive_seed,
    load_train_checkpoint,
    restore_rng,
    run_lock,
)

__all__ = ["fit", "build_model", "evaluate_accuracy", "lr_factor"]


def _run_length(config: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(optim.epochs, train.max_steps)`` of a config mapping: how far a run goes."""
    return (config.get("optim") or {}).get("epochs"), (config.get("train") or {}).get("max_steps")


def _as_config(config: Config | str | os.PathLike[str] | Mapping[str, Any], overrides: Sequence[str]) -> Config:
    if isinstance(overrides, (str, bytes)):  # iterated, its characters would each be read as an override
        raise TypeError(f"overrides must be a list of 'section.key=value' strings, got the string {overrides!r}; "
                        f"pass [{overrides!r}]")
    if isinstance(config, Config):
        if overrides:
            from .config import SECTIONS, apply_overrides

            return validate_config(config_from_dict(apply_overrides(config.to_dict(), overrides, SECTIONS)))
        return validate_config(config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, overrides)
    if isinstance(config, Mapping):
        from .config import SECTIONS, apply_overrides, resolve_bases

        return validate_config(config_from_dict(apply_overrides(resolve_bases(config), overrides, SECTIONS)))
    raise TypeError(f"config must be a Config, a YAML path or a mapping, got {type(config).__name__}")


def build_model(cfg: Config) -> nn.Module:
    """The model of ``cfg.model`` in train mode (random init, or weights from ``model.checkpoint``)."""
    from ..models import load_model

    return load_model(cfg.model.name, num_classes=cfg.model.num_classes, checkpoint=cfg.model.checkpoint,
                      random_init=cfg.model.checkpoint is None, drop_head=cfg.model.drop_head,
                      **cfg.model.kwargs).train()


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, batches: EpochBatches, info: DistInfo, *, amp: bool = False,
                      amp_dtype: torch.dtype = torch.float16, channels_last: bool = False) -> dict[str, float]:
    """Clean loss and top-1 accuracy of ``model`` over ``batches`` (summed over DDP ranks).

    The loss is the correctly rounded sum (``math.fsum``) of the images' own losses, so it does not depend on how the
    images are batched wherever the logits do not (a float32 sum per batch moved its last digits)."""
    sums = torch.zeros(3, dtype=torch.float64, device=info.device)  # loss, correct, count
    losses = []
    with eval_mode(model):
        for x, y in batches.iterate():
            with torch.autocast(info.device.type, dtype=amp_dtype, enabled=amp):
                logits = model(to_float(x, channels_last))
            losses.append(F.cross_entropy(logits.float(), y, reduction="none"))
            sums[1] += (logits.argmax(1) == y).sum()
            sums[2] += y.numel()
    sums[0] = math.fsum(torch.cat(losses).tolist()) if losses else 0.0
    all_reduce_sum(sums, info)
    n = max(float(sums[2]), 1.0)
    return {"test_loss": float(sums[0]) / n, "test_acc": float(sums[1]) / n, "test_n": int(sums[2])}


def lr_factor(milestones: Sequence[int], gamma: float, warmup_epochs: float, steps_per_epoch: int):
    """Per-step learning-rate factor: ``gamma ** (#milestones <= epoch)`` times a linear warm-up ramp."""
    import bisect

    marks, warm = sorted(milestones), max(0.0, warmup_epochs) * steps_per_epoch

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
        return ramp * gamma ** bisect.bisect_right(marks, step // steps_per_epoch)

    return factor


def _drop_stop_evals(history: list[dict[str, Any]]) -> None:
    """Strip the test metrics of rows evaluated only because a run stopped there (``stop_eval``), in place.

    Called when a later epoch is logged: the run went on, and the uninterrupted run has no evaluation there.
    """
    for row in history:
        if row.pop("stop_eval", False):
            for key in [k for k in row if k.startswith("test_")]:
                del row[key]


def _file_state(path: Path | None) -> tuple[int, int, int] | None:
    """``(size, mtime_ns, inode)`` of ``path`` (``None`` when absent): whether a file changed between two looks."""
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return None if st is None else (st.st_size, st.st_mtime_ns, st.st_ino)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (1 << 32))


def fit(
    config: Config | str | os.PathLike[str] | Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    out: str | os.PathLike[str] | None = None,
    resume: bool | None = None,
    datasets: tuple[Any, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train the model described by ``config`` and return a summary.

    ``config`` is a :class:`Config`, a YAML path or a mapping (its ``base:`` paths relative to the current
    directory); ``overrides`` are ``section.key=value`` strings; ``out``/``resume`` override
    ``train.out``/``train.resume``. ``datasets=(train, test)`` replaces the datasets named in the config (each
    yielding ``(uint8 (C, H, W), int)``; ``test`` may be ``None``).
    An output folder that already holds a run is refused (``RunExistsError``) unless ``resume`` (continue
    it) or ``overwrite`` (delete its run files, then start over) is given.

    Returns ``{"history": [...rows], "final": last row, "model": trained nn.Module (unwrapped), "out": dir or
    None, "checkpoint": path of model.pt or None, "global_step": int, "wall_s": float, "config": dict, "rank": this
    process's rank (0 unless distributed)}``.
    """
    cfg = copy.deepcopy(_as_config(config, overrides))  # the caller's Config is left as it was
    if out is not None:
        cfg.train.out = os.fspath(out)
    if resume is not None:
        cfg.train.resume = bool(resume)
    if cfg.train.out:
        cfg.train.out = os.path.expanduser(cfg.train.out)  # checked and written at the same place
    if cfg.train.out and launch_rank() == 0 and Path(cfg.train.out).is_dir():
        with run_lock(cfg.train.out):  # a run writing there now is named first (not as "holds a run, --resume")
            pass
    check_run_folder(cfg.train.out, resume=cfg.train.resume, overwrite=overwrite)
    threads = torch.get_num_threads()
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    info = setup_distributed(cfg.train.device)
    # _fit sets cuDNN autotuning / deterministic algorithms for the run (train.deterministic); the process gets its
    # own settings back afterwards, so an evaluation that follows in the same process is not affected
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        with contextlib.ExitStack() as held:  # the output folder's lock, taken by _fit before its first write
            return _fit(cfg, info, datasets, overwrite, held)
    finally:
        teardown_distributed(info)
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[:2]
        torch.use_deterministic_algorithms(flags[2], warn_only=flags[3])


def _fit(cfg: Config, info: DistInfo, datasets: tuple[Any, Any] | None, overwrite: bool,
         held: contextlib.ExitStack) -> dict[str, Any]:
    t_start = time.perf_counter()
    dev, tr, seed = info.device, cfg.train, cfg.train.seed
    out = Path(tr.out) if tr.out else None
    main = info.is_main
    if cfg.optim.batch_size % info.world:
        raise ValueError(f"optim.batch_size {cfg.optim.batch_size} must be divisible by the {info.world} ranks")
    use_amp = tr.amp and dev.type == "cuda"
    amp_dtype = resolve_amp_dtype(tr.amp_dtype, dev)  # bfloat16 needs no GradScaler: the step never syncs with the host
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = not tr.deterministic
        torch.backends.cudnn.deterministic = tr.deterministic
        if tr.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
    cl = tr.channels_last and dev.type == "cuda"

    _seed_everything(derive_seed(seed, "init") % (1 << 62))
    model = build_model(cfg).to(dev)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    if datasets is not None:
        check_several_classes(datasets[0], cfg.model.num_classes)  # before data.limit draws its subset
        train_ds, test_ds = limit_datasets(cfg, *datasets)
        check_labels(train_ds, cfg.model.num_classes, "the training data (datasets=)")
        if test_ds is not None:
            check_same_classes(train_ds, test_ds, "the test data (datasets=)")
            check_labels(test_ds, cfg.model.num_classes, "the test data (datasets=)")
    else:
        train_ds, test_ds = load_datasets(cfg)
    batches = EpochBatches(train_ds, cfg, cfg.optim.batch_size // info.world, dev, train=True,
                           rank=info.rank, world=info.world)
    test_batches = None
    if test_ds is not None and tr.eval_every > 0:
        test_batches = EpochBatches(test_ds, cfg, cfg.data.eval_batch_size, dev, train=False,
                                    rank=info.rank, world=info.world)

    o = cfg.optim
    optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum,
                                nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay)
    schedule = lr_factor(o.milestones, o.gamma, o.warmup_epochs, len(batches))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    generator = torch.Generator(device=dev)
    aug = DeviceAugment(cfg, dev, generator, channels_last=cl)

    epoch, start_batch, step, history, resumed = 0, 0, 0, [], False
    carried_s = 0.0  # training time of the epoch before a mid-epoch resume: the epoch's row counts all of it
    config_changes: list[dict[str, Any]] = []  # settings changed at a resume: the step and the config before
    saved_config: dict[str, Any] = {}  # the resumed checkpoint's config
    accum = torch.zeros(3, dtype=torch.float64, device=dev)  # loss * n, correct, n of the current epoch
    ckpt_path = out / "last.pt" if out is not None else None
    read_state = _file_state(ckpt_path)  # what this run starts from: checked again once it holds the folder's lock
    if tr.resume and ckpt_path is not None and ckpt_path.is_file():
        state = load_train_checkpoint(ckpt_path)
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
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # the config's optimiser settings apply from here on: the saved state carries the learning rate, decay and
        # momentum it was started with, while milestones, gamma and warm-up come from the config (half a change).
        # Unchanged settings give the same values (base lr times the schedule's factor, as the scheduler computes it)
        for g in optimizer.param_groups:
            g.update(momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay,
                     initial_lr=o.lr, lr=o.lr * schedule(scheduler.last_epoch))
        scheduler.base_lrs = [o.lr] * len(optimizer.param_groups)
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # what get_last_lr() reports
        if state["scaler"]:  # runs without a float16 GradScaler (CPU, bfloat16) saved an empty state
            scaler.load_state_dict(state["scaler"])
        epoch, start_batch, step = state["epoch"], state["batch_in_epoch"], state["global_step"]
        carried_s = float(state.get("epoch_time_s") or 0.0) if start_batch else 0.0
        saved_steps = (state.get("sampler") or {}).get("steps_per_epoch")  # older checkpoints: not checked
        if saved_steps is not None and saved_steps != len(batches):
            raise ValueError(f"cannot resume: {ckpt_path} ran {saved_steps} steps per epoch, this config "
                             f"{len(batches)} (optim.batch_size or the training data changed): the learning-rate "
                             "schedule and the position inside the epoch are counted in steps. Resume with the same "
                             "batch size and data, or start a new run (another --out)")
        if epoch > o.epochs or (epoch == o.epochs and start_batch > 0):
            raise ValueError(f"cannot resume with optim.epochs={o.epochs}: {ckpt_path} is already at epoch {epoch}, "
                             f"batch {start_batch} (its weights are past that budget); give optim.epochs >= "
                             f"{epoch + (start_batch > 0)} or start a new run (another --out)")
        resumed = True  # a finished run resumed again keeps its config.yaml and model.pt as they are
        # a partial row (a max_steps stop inside an epoch) is replaced when training goes on; a run resumed at its
        # max_steps trains nothing more and keeps it
        at_max = tr.max_steps is not None and step >= tr.max_steps
        finished = at_max or (epoch >= o.epochs and start_batch == 0)  # nothing left to train
        history = [r for r in state["history"] if at_max or not r.get("partial")]
        if info.rank == 0:  # the saved sums are over every rank's share of the epoch so far: counted once
            accum.copy_(state["accum"].to(dev))
        restore_rng(state["rng"], generator)
        saved_world = (state.get("sampler") or {}).get("world", info.world)
        if main and saved_world != info.world:
            print(f"warning: {ckpt_path} was trained on {saved_world} process(es), this run has {info.world}: the "
                  "augmentation draws are seeded per rank, so the resumed run will not match an uninterrupted one",
                  file=sys.stderr)
        saved_config = state["config"]
        changed = changed_keys(saved_config, cfg.to_dict())
        if main:
            if tr.progress:  # a status line; the warnings below are printed either way
                print(f"resumed from {ckpt_path} at epoch {epoch}, batch {start_batch}, step {step}", file=sys.stderr)
            saved_recipe, recipe = state.get("recipe_version", 2), recipe_version(cfg)  # no field: 2 or older
            if saved_recipe != recipe:
                print(f"warning: {ckpt_path} was trained by recipe version {saved_recipe}, this aprkit trains "
                      f"version {recipe} (aprkit.train.config.RECIPE_VERSION says what changed); the resumed "
                      "run will not match an uninterrupted one", file=sys.stderr)
            if changed and finished:
                print(f"note: the config differs from the checkpoint's in {', '.join(changed)}, but the run is "
                      f"finished (epoch {epoch} of {o.epochs}{', at train.max_steps' if at_max else ''}): nothing "
                      "is trained and the changes take no effect", file=sys.stderr)
            elif changed:
                print(f"warning: the config differs from the checkpoint's in {', '.join(changed)}; the resumed run "
                      "goes on with the new values (recorded in last.pt's and model.pt's config_changes; config.yaml "
                      "keeps the config the run started with) and will not match an uninterrupted one", file=sys.stderr)
        config_changes = list(state.get("config_changes") or [])
        if changed and not finished:
            config_changes.append({"global_step": step, "keys": changed, "before": state["config"]})
    elif tr.resume and main and tr.progress:
        print(f"no checkpoint at {ckpt_path}; starting a new run", file=sys.stderr)

    if main and out is not None:
        import yaml

        out.mkdir(parents=True, exist_ok=True)
        held.enter_context(run_lock(out))  # no other run writes here until this one returns
        if _file_state(ckpt_path) != read_state:  # another run wrote last.pt while this one loaded data and model
            raise RunBusyError(f"another aprkit train wrote {ckpt_path} while this run was getting ready; this run "
                               "wrote nothing: run the command again once that run is done")
        check_run_folder(out, resume=tr.resume, overwrite=overwrite)  # a run that finished meanwhile is not replaced
        if overwrite and clear_run_folder(out):  # only now: a config or data error above keeps the old run
            print(f"overwrite: deleted the previous run in {out}", file=sys.stderr)
        remove_temporaries(out, RUN_FILES + REPORT_FILES)  # a killed run's half-written files (rank 0 writes)
        # a resumed run keeps the config that trained it, unless the resume only moved how far it goes (optim.epochs,
        # train.max_steps) and nothing ever changed its trajectory: then the current config reruns it from scratch to
        # the same weights, where the first one stopped short
        end = o.epochs * len(batches) if tr.max_steps is None else min(o.epochs * len(batches), tr.max_steps)
        extended = (resumed and not config_changes and end > step  # this call trains on
                    and _run_length(saved_config) != _run_length(cfg.to_dict()))
        if not (resumed and (out / "config.yaml").is_file()) or extended:
            rerun = cfg.to_dict()  # a config that reruns the run from scratch: not a resume of it
            rerun["train"]["resume"] = False
            atomic_write_text(out / "config.yaml", yaml.safe_dump(rerun, sort_keys=False))
    report = None
    if tr.report and out is not None and main:
        from .report import ReportWriter, data_text

        report = ReportWriter(out, cfg.to_dict(), config_changes, data_text(cfg.data, train_ds, test_ds,
                                                                          given=datasets is not None))
    logger = MetricsLogger(out, enabled=main, tensorboard=tr.tensorboard, history=history, report=report)
    if report is not None:
        held.callback(lambda: report.interrupted(logger.history))  # an interrupt (Ctrl-C) leaves a report saying so

    net: nn.Module = model
    if info.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if tr.compile:
        net = torch.compile(net)  # type: ignore[assignment]

    def save_state(at_epoch: int, at_batch: int, rows: list[dict[str, Any]], trained_s: float | None = None) -> None:
        """``trained_s``: the epoch's training time so far (default: until now; a stop passes the time before its
        evaluation, which is no training)."""
        sums = all_reduce_sum(accum.clone(), info)  # every rank takes part; rank 0 saves the epoch's running sums
        if not main or ckpt_path is None:
            return
        atomic_save({
            "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "model": unwrap_model(model).state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": at_epoch, "batch_in_epoch": at_batch, "global_step": step, "history": rows,
            "accum": sums.cpu(), "rng": capture_rng(generator), "recipe_version": recipe_version(cfg),
            "config_changes": config_changes,
            "epoch_time_s": (time.perf_counter() - t0 if trained_s is None else trained_s) if at_batch else 0.0,
            "sampler": {"seed": seed, "epoch": at_epoch, "batch_in_epoch": at_batch, "world": info.world,
                        "steps_per_epoch": len(batches)},
        }, ckpt_path)

    from tqdm.auto import tqdm

    per_epoch = len(batches)
    first_step = step  # what this call starts from (a resumed run: the checkpoint's step)
    stopped = tr.max_steps is not None and step >= tr.max_steps
    while epoch < o.epochs and not stopped:
        batches.set_epoch(epoch)
        net.train()
        t0, n0 = time.perf_counter() - carried_s, step - start_batch  # a resumed epoch: from its first step
        carried_s = 0.0
        # the rate of the epoch's first step, from the schedule (LambdaLR's own formula): a run resumed mid-epoch
        # logs what the uninterrupted run logs, not the rate at the resume step
        lr0 = scheduler.base_lrs[0] * schedule(step - start_batch)
        bar = tqdm(total=per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}/{o.epochs}", leave=False,
                   disable=not (tr.progress and main), dynamic_ncols=True)
        i = start_batch
        for xb, yb in batches.iterate(start_batch):
            generator.manual_seed(derive_seed(seed, info.rank, step) % (1 << 62))
            # the global RNG too (dropout, drop-path): its draws then depend on (seed, rank, step) only, not on what
            # else drew from it (a DataLoader's base seed, an evaluation) or on a resume; each rank draws its own
            torch.manual_seed(derive_seed(seed, "global", info.rank, step) % (1 << 62))
            x = aug(xb)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                loss, logits, labels = method_loss(net, aug, x, yb, cfg.aug.method, cfg.aug.jsd_weight)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            i += 1
            with torch.no_grad():
                accum += torch.stack([loss.detach().double() * labels.numel(),
                                      (logits.argmax(1) == labels).sum().double(),
                                      torch.tensor(float(labels.numel()), dtype=torch.float64, device=dev)])
            bar.update(1)
            if bar.disable is False and step % 20 == 0:
                bar.set_postfix(loss=f"{float(accum[0] / accum[2]):.3f}", acc=f"{float(accum[1] / accum[2]):.3f}")
            if tr.max_steps is not None and step >= tr.max_steps:
                stopped = True
                break
            if tr.checkpoint_every_steps and step % tr.checkpoint_every_steps == 0 and i < per_epoch:
                save_state(epoch, i, logger.history)
        bar.close()
        trained_s = time.perf_counter() - t0  # the epoch's training, before any evaluation
        # each rank's last steps updated its BatchNorm statistics with its own batches: every rank takes rank 0's
        # (what model.pt holds), so the evaluation below, summed over ranks, is the saved model's
        broadcast_buffers(model, info)
        done = i >= per_epoch
        sums = all_reduce_sum(accum.clone(), info)
        n = max(float(sums[2]), 1.0)
        row: dict[str, Any] = {
            "epoch": epoch + 1, "step": step, "lr": lr0,
            "train_loss": float(sums[0]) / n, "train_acc": float(sums[1]) / n,
            "time_s": round(trained_s, 3),
            "images_per_s": round((step - n0) * cfg.optim.batch_size / max(trained_s, 1e-9), 1),
        }
        final = epoch + 1 >= o.epochs or stopped
        scheduled = done and test_batches is not None and (epoch + 1) % tr.eval_every == 0
        if test_batches is not None and (scheduled or final):  # the run's last row is evaluated in any case
            row.update(evaluate_accuracy(unwrap_model(net), test_batches, info, amp=use_amp, amp_dtype=amp_dtype,
                                         channels_last=cl))
            if done and not scheduled:  # marked: a resume that trains on drops it (an epoch eval_every skips)
                row["stop_eval"] = True
        _drop_stop_evals(logger.history)  # training went on past an earlier stop: its evaluation is no epoch's
        if done:
            epoch, start_batch = epoch + 1, 0
            accum.zero_()
            save_state(epoch, 0, [*logger.history, row])  # last.pt first: a kill between the two stays resumable
            logger.log(row)
        else:  # stopped by max_steps in the middle of an epoch: keep the position and the running sums
            row["partial"] = True
            save_state(epoch, i, [*logger.history, row], trained_s)
            logger.log(row)
        if main and tr.progress:
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            print(" ".join(f"{k}={v}" for k, v in shown.items()), file=sys.stderr)
    barrier(info)

    ckpt = None
    plain = unwrap_model(model)
    if main and out is not None and (step > first_step or not (out / "model.pt").is_file()):
        from ..models import save_checkpoint

        extra = {"config": cfg.to_dict(), "final": logger.history[-1] if logger.history else {}, "global_step": step,
                 "config_changes": config_changes}
        names = getattr(train_ds, "classes", None)
        if names:  # what label i means: an evaluation checks its data against them
            extra["classes"] = [str(c) for c in names]
        ckpt = save_checkpoint(out / "model.pt", plain, arch=cfg.model.name, num_classes=cfg.model.num_classes,
                               extra=extra)
    if report is not None:
        report(logger.history, end=True)  # also a stop at train.max_steps on an epoch's end (no partial row)
    logger.close()
    return {
        "history": logger.history, "final": logger.history[-1] if logger.history else {}, "model": plain,
        "out": str(out) if out is not None else None,
        "checkpoint": str(ckpt) if ckpt is not None else (str(out / "model.pt") if main and out is not None else None),
        "global_step": step, "wall_s": time.perf_counter() - t_start, "config": cfg.to_dict(), "rank": info.rank,
    }
