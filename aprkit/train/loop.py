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
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import plain_data
from ..distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    check_shared_folder,
    launch_rank,
    setup_distributed,
    teardown_distributed,
)
from ..models.normalize import unwrap_model
from .config import (
    PAIR_METHODS,
    SECTIONS,
    TEXT_KEYS,
    Config,
    apply_overrides,
    config_from_dict,
    load_config,
    resolve_amp_dtype,
    resolve_bases,
    validate_config,
)
from .data import EpochBatches, limit_datasets, load_datasets
from .data_checks import check_labels, check_same_classes, check_several_classes
from .evaluation import correct_count, evaluate_accuracy, probe_forward
from .metrics_log import MetricsLogger
from .model_setup import build_model, input_stats
from .optim import build_optimizer, lr_factor
from .process_state import kept_process_state, seed_everything
from .recipe import DeviceAugment, method_loss
from .resume import RunPosition, data_ids, resume_run
from .run_folder import file_state, take_run_folder
from .signals import deferred_stop, stop_agreement
from .state import (
    CHECKPOINT_FORMAT,
    atomic_save,
    capture_rng,
    check_run_folder,
    derive_seed,
    run_lock,
)
from .trajectory import recipe_version

__all__ = ["fit", "build_model", "lr_factor"]


def _as_config(config: Config | str | os.PathLike[str] | Mapping[str, Any], overrides: Sequence[str] | None) -> Config:
    overrides = () if overrides is None else overrides
    if isinstance(overrides, (str, bytes)):  # iterated, its characters would each be read as an override
        raise TypeError(f"overrides must be a list of 'section.key=value' strings, got the string {overrides!r}; "
                        f"pass [{overrides!r}]")
    if isinstance(config, Config):  # its values get the type and choice checks a file gets (a Config made in code
        # with schedule="Cosine" trained the step schedule without a word), NumPy scalars as Python ones
        data = plain_data(config.to_dict())
        checked = config_from_dict(apply_overrides(data, overrides, SECTIONS, TEXT_KEYS))
        return validate_config(checked)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config, overrides)
    if isinstance(config, Mapping):
        return validate_config(config_from_dict(apply_overrides(resolve_bases(config), overrides, SECTIONS,
                                                                TEXT_KEYS)))
    raise TypeError(f"config must be a Config, a YAML path or a mapping, got {type(config).__name__}")


def _drop_stop_evals(history: list[dict[str, Any]]) -> None:
    """Strip the test metrics of rows evaluated only because a run stopped there (``stop_eval``), in place.

    Called when a later epoch is logged: the run went on, and the uninterrupted run has no evaluation there.
    """
    for row in history:
        if row.pop("stop_eval", False):
            for key in [k for k in row if k.startswith("test_")]:
                del row[key]


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
    threads = torch.get_num_threads()  # (given back with the rest of the process's state: kept_process_state)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    info = setup_distributed(cfg.train.device)
    try:
        with kept_process_state(info.device), contextlib.ExitStack() as held:  # held: the output folder's lock
            return _fit(cfg, info, datasets, overwrite, held)
    finally:
        teardown_distributed(info)
        torch.set_num_threads(threads)


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

    seed_everything(derive_seed(seed, "init") % (1 << 62))
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
    optimizer, scheduler, schedule = build_optimizer(o, model, len(batches))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    generator = torch.Generator(device=dev)
    aug = DeviceAugment(cfg, dev, generator, channels_last=cl,
                        input_stats=input_stats(model) if cfg.aug.pair_space == "normalized"
                        and cfg.aug.method in PAIR_METHODS else None)  # without APR-P the setting does nothing

    accum = torch.zeros(3, dtype=torch.float64, device=dev)  # loss * n, correct, n of the current epoch
    ckpt_path = out / "last.pt" if out is not None else None
    names = getattr(train_ds, "classes", None)  # what label i means, saved with the weights (last.pt, model.pt)
    class_names = [str(c) for c in names] if names else None
    ids = data_ids(train_ds, test_ds) if ckpt_path is not None and main else {}  # checked on resume
    read_state = file_state(ckpt_path)  # what this run starts from: checked again once it holds the folder's lock
    pos = RunPosition()
    if out is not None:  # several processes decide to resume from what they see there: one folder for all of them
        check_shared_folder(out, "the output folder (train.out / --out)")
    if tr.resume and ckpt_path is not None and ckpt_path.is_file():
        pos = resume_run(ckpt_path, cfg, info, model=model, optimizer=optimizer, scheduler=scheduler,
                         schedule=schedule, scaler=scaler, generator=generator, accum=accum,
                         steps_per_epoch=len(batches), classes=class_names, ids=ids)
    elif tr.resume and main:  # said with or without train.progress: a resume that finds nothing is a surprise
        print(f"no checkpoint at {ckpt_path}; starting a new run", file=sys.stderr)
    epoch, start_batch, step, carried_s, carried_lr = pos.epoch, pos.start_batch, pos.step, pos.carried_s, pos.epoch_lr
    config_changes = pos.config_changes

    refused: Exception | None = None
    if main and out is not None:
        try:
            if overwrite or cfg.feature_apr.layers:  # an error of the first step (a FeatureAPR layer that is no
                probe_forward(model, batches, cl)  # feature map, or never called) keeps the old run, or no run
            take_run_folder(out, cfg, held, overwrite, pos, read_state, len(batches))
        except Exception as err:  # every rank stops, not rank 0 alone: the others would wait at its first collective
            refused = err
    if info.world > 1:
        try:
            stop = all_reduce_sum(torch.tensor([float(refused is not None)], dtype=torch.float64, device=dev), info)
        except RuntimeError:  # the other ranks leave once they know that rank 0 refused, maybe before their last
            if refused is None:  # message of the all-reduce reached it (gloo: "Connection closed by peer"): rank 0
                raise  # raises its own error, which says why
        else:
            if refused is None and float(stop[0]):
                raise RuntimeError(f"rank 0 did not start the run in {tr.out} (its error says why); rank {info.rank} "
                                   "stops too")
    if refused is not None:
        raise refused
    report = None
    if tr.report and out is not None and main:
        from .report import ReportWriter, data_text

        per_epoch = len(batches) * batches.batch_size * info.world  # (the last partial batch is dropped)
        report = ReportWriter(out, cfg.to_dict(), config_changes, data_text(cfg.data, train_ds, test_ds,
                                                                          given=datasets is not None,
                                                                          per_epoch=per_epoch))
    logger = MetricsLogger(out, enabled=main, tensorboard=tr.tensorboard, history=pos.history, report=report)
    if report is not None:
        held.callback(lambda: report.interrupted(logger.history))  # an interrupt (Ctrl-C) leaves a report saying so

    net: nn.Module = model
    if info.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if tr.compile:
        net = torch.compile(net)  # type: ignore[assignment]

    def save_state(at_epoch: int, at_batch: int, rows: list[dict[str, Any]], epoch_lr: float,
                   trained_s: float | None = None) -> None:
        """``epoch_lr``: the rate of the epoch's first step (its row's lr); ``trained_s``: the epoch's training time
        so far (default: until now; a stop passes the time before its evaluation, which is no training)."""
        sums = all_reduce_sum(accum.clone(), info)  # every rank takes part; rank 0 saves the epoch's running sums
        if not main or ckpt_path is None:
            return
        atomic_save({
            "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "model": unwrap_model(model).state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": at_epoch, "batch_in_epoch": at_batch, "global_step": step, "history": rows,
            "accum": sums.cpu(), "rng": capture_rng(generator), "recipe_version": recipe_version(cfg),
            "config_changes": config_changes, "classes": class_names, "data_ids": ids,
            "epoch_time_s": (time.perf_counter() - t0 if trained_s is None else trained_s) if at_batch else 0.0,
            "epoch_lr": epoch_lr if at_batch else None,
            "sampler": {"seed": seed, "epoch": at_epoch, "batch_in_epoch": at_batch, "world": info.world,
                        "steps_per_epoch": len(batches), "threads": torch.get_num_threads()},
        }, ckpt_path)

    from tqdm.auto import tqdm

    per_epoch = len(batches)
    first_step = step  # what this call starts from (a resumed run: the checkpoint's step)
    # Ctrl-C / SIGTERM wait for the end of a step, which is saved before they act; the ranks of a distributed run
    # agree on the step (one after the first rank was sent the signal) and stop there together
    signals = held.enter_context(deferred_stop(enabled=ckpt_path is not None))
    agreement = stop_agreement(signals, info.world if ckpt_path is not None else 1)
    stopped = tr.max_steps is not None and step >= tr.max_steps

    def stop_here(agreed: int | None = None) -> None:  # a stop asked for: the steps so far are saved, then it acts
        save_state(epoch, i, logger.history, lr0)
        if main:
            print(f"{chr(10) if bar.disable is False else ''}stopping at step {step} (epoch {epoch + 1}, batch {i} of "
                  f"{per_epoch}), saved in {ckpt_path}; --resume goes on from there", file=sys.stderr)
        agreement.deliver(agreed)  # returns where a handler returned: training goes on

    while epoch < o.epochs and not stopped:
        batches.set_epoch(epoch)
        net.train()
        t0, n0 = time.perf_counter() - carried_s, step - start_batch  # a resumed epoch: from its first step
        carried_s = 0.0
        # the rate of the epoch's first step, from the schedule (LambdaLR's own formula): a run resumed mid-epoch
        # logs what the uninterrupted run logs, not the rate at the resume step; the one it saved, where the resume
        # changed optim.lr (the epoch's first steps ran at the old rate)
        lr0 = carried_lr if carried_lr is not None else float(scheduler.base_lrs[0] * schedule(step - start_batch))
        carried_lr = None
        bar = tqdm(total=per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}/{o.epochs}", leave=False,
                   disable=not (tr.progress and main), dynamic_ncols=True)
        i = start_batch
        # a stop that ended the loader too (a SIGTERM to every process) keeps the finished steps: stop_here (one
        # process: ranks whose loaders fail at different steps could not save together)
        for xb, yb in agreement.batches(batches.iterate(start_batch), stop_here):
            generator.manual_seed(derive_seed(seed, info.rank, step) % (1 << 62))
            # the global RNG too (dropout, drop-path): its draws then depend on (seed, rank, step) only, not on what
            # else drew from it (a DataLoader's base seed, an evaluation) or on a resume; each rank draws its own
            torch.manual_seed(derive_seed(seed, "global", info.rank, step) % (1 << 62))
            x, y = aug.inputs(xb, yb)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                loss, logits, labels = method_loss(net, x, y, cfg.aug.method, sp_forward=cfg.aug.sp_forward,
                                                   jsd_weight=cfg.aug.jsd_weight)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            i += 1
            with torch.no_grad():
                accum += torch.stack([loss.detach().double() * labels.numel(),
                                      correct_count(logits, labels).double(),
                                      torch.full((), float(labels.numel()), dtype=torch.float64, device=dev)])
            bar.update(1)
            if bar.disable is False and step % 20 == 0:
                bar.set_postfix(loss=f"{float(accum[0] / accum[2]):.3f}", acc=f"{float(accum[1] / accum[2]):.3f}")
            wanted = agreement.step()  # every rank, every step
            if tr.max_steps is not None and step >= tr.max_steps:
                stopped = True
                break
            if wanted is not None and i < per_epoch:  # this step is kept
                stop_here(wanted)
            elif tr.checkpoint_every_steps and step % tr.checkpoint_every_steps == 0 and i < per_epoch:
                save_state(epoch, i, logger.history, lr0)
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
            save_state(epoch, 0, [*logger.history, row], lr0)  # last.pt first: a kill between the two stays resumable
            logger.log(row)
        else:  # stopped by max_steps in the middle of an epoch: keep the position and the running sums
            row["partial"] = True
            save_state(epoch, i, [*logger.history, row], lr0, trained_s)
            logger.log(row)
        if main and tr.progress:
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            print(" ".join(f"{k}={v}" for k, v in shown.items()), file=sys.stderr)
        wanted = agreement.now()
        if wanted is not None:  # asked during the epoch's end (its evaluation): the epoch is saved
            agreement.deliver(wanted)
    agreement.close()
    signals.deliver()  # the training is over: the signals act at once again
    barrier(info)

    ckpt = None
    plain = unwrap_model(model)
    if cfg.feature_apr.layers:  # the trained model is returned as the architecture, without the training's hooks
        from ..hidden import detach

        detach(plain)
    if main and out is not None and (step > first_step or not (out / "model.pt").is_file()):
        from ..models import save_checkpoint

        extra = {"config": cfg.to_dict(), "final": logger.history[-1] if logger.history else {}, "global_step": step,
                 "config_changes": config_changes, "recipe_version": recipe_version(cfg)}
        if class_names:  # what label i means: an evaluation checks its data against them
            extra["classes"] = class_names
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
        # resumes that went on with other training settings (warned then; the report lists them too)
        **({"config_changes": list(config_changes)} if config_changes else {}),
    }
