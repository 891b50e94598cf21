"""The optimiser of a training run: SGD (Nesterov) with a multi-step or cosine learning-rate schedule and a linear
warm-up.

``build_optimizer`` makes the optimiser, its ``LambdaLR`` scheduler and the per-step factor they follow;
``apply_optim_config`` puts a config's settings onto a restored optimiser (a resumed run goes on with the
config's values, not the ones saved in its checkpoint).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["lr_factor", "build_optimizer", "apply_optim_config"]


def lr_factor(milestones: Sequence[int], gamma: float, warmup_epochs: float,
              steps_per_epoch: int, *, cosine_steps: int | None = None, floor: float = 0.0) -> Callable[[int], float]:
    """Per-step learning-rate factor times a linear warm-up ramp: ``gamma ** (#milestones <= epoch)``, or with
    ``cosine_steps`` AugMix's cosine annealing per step,
    ``floor + (1 - floor) * (1 + cos(pi * step / cosine_steps)) / 2`` (``floor``: the final rate over the initial)."""
    marks, warm = sorted(milestones), max(0.0, warmup_epochs) * steps_per_epoch

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
        if cosine_steps:
            t = min(step, cosine_steps) / cosine_steps
            return ramp * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))
        return ramp * gamma ** bisect.bisect_right(marks, step // steps_per_epoch)

    return factor


def build_optimizer(o: Any, model: nn.Module, steps_per_epoch: int) -> tuple[
        torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR, Callable[[int], float]]:
    """``(optimizer, scheduler, schedule)`` for the ``optim`` section ``o`` of a config; the scheduler steps once per
    training step and ``schedule(step)`` is its factor."""
    optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum,
                                nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay)
    cosine = o.epochs * steps_per_epoch if o.schedule == "cosine" else None
    schedule = lr_factor(o.milestones, o.gamma, o.warmup_epochs, steps_per_epoch, cosine_steps=cosine,
                         floor=o.min_lr / o.lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), schedule


def apply_optim_config(o: Any, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                       schedule: Callable[[int], float]) -> None:
    """Give a restored ``optimizer``/``scheduler`` the settings of the ``optim`` section ``o``, in place.

    The saved state carries the learning rate, decay and momentum the run was started with, while the schedule
    (milestones, gamma, cosine, warm-up) comes from the config (half a change): the config's values apply from here
    on. Unchanged settings give the same values (base rate times the schedule's factor, as the scheduler computes
    it)."""
    for g in optimizer.param_groups:
        g.update(momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay,
                 initial_lr=o.lr, lr=o.lr * schedule(scheduler.last_epoch))
    scheduler.base_lrs = [o.lr] * len(optimizer.param_groups)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # what get_last_lr() reports
