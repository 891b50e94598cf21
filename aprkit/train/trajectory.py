"""What a training run trains, for comparing two configs: the recipe version of its methods, where APR-S runs, the
keys that do not change a run's trajectory, and a saved config seen with today's defaults.

Used by resuming (``train.resume``), the trained-run keys of the demo and the studies' recipe checks.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, Literal

from .config import PAIR_METHODS, Config, config_from_dict

__all__ = ["RECIPE_VERSION", "recipe_version", "apr_s_where", "per_image_transform", "RESUME_FREE", "CUDA_ONLY",
           "changed_keys", "with_defaults", "trajectory_view"]

#: the version of what the methods train (2: ``apr_p`` is the reference's CE(x) + CE(APR-P(x)), 50509bc; 3: APR-S
#: draws each image's ops from its own row, whatever the batch size; 4: with ``data.random_resized_crop`` the loader
#: path crops before APR-S, as the reference's ImageNet code and the device path do; 5: an amplitude swap leaves a
#: bin without phase at 0 -- a grey image's channel frequencies 1 and 2, a dead feature channel -- where it gave
#: the bin the partner's amplitude at phase 0, a spike at pixel (0, 0); see ``aprkit.fourier.mixing.ZeroBins``; 6: the
#: per-image draws in the DataLoader are seeded from ``(seed, "item", epoch, i)``: from ``(seed, epoch, i)`` they
#: repeated the device draws of step ``i`` on rank ``epoch``, seeded from ``(seed, rank, step)``; 7: the device
#: path draws each image's crop offsets and flip from its own row of uniforms, where all top offsets came before all
#: left ones; 8: AugMix's views are its reference code's, mixed in float, where torchvision's v2.AugMix drew coarser
#: levels and truncated each view to uint8; 9: the device path's geometric APR-S ops (rotate, shear, translate) test
#: their sample points in float64, as PIL: in float32 a point just off an edge took the edge pixel and one just inside
#: the far edge black). A run's own version is :func:`recipe_version` of its config: part of the
#: keys of trained runs that are reused by their config (the demo's run folders) and checked on resume
RECIPE_VERSION = 9


def recipe_version(cfg: Config) -> int:
    """The latest :data:`RECIPE_VERSION` that changed what ``cfg`` trains: 9 for APR-S on the device, 8 for AugMix,
    6 where the DataLoader
    transforms each image (:func:`per_image_transform`), else 7 where the device path crops from padded images or
    flips, else 5 for every method that swaps amplitudes (APR-P, APR-S, FeatureAPR), else 3, so that runs the changes
    do not touch keep their keys and resume without a warning. (A dataset that draws random numbers itself changed at
    6 too, whatever its config: its draws are seeded anew, and the automatic ``data.in_memory`` streams it instead of
    repeating its first epoch's draws.)"""
    if apr_s_where(cfg) == "device":
        return 9
    if cfg.aug.method == "augmix_jsd":
        return 8
    if per_image_transform(cfg):
        return 6
    if cfg.data.hflip or cfg.data.crop_padding > 0:  # the device path's crop and flip draws
        return 7
    swaps = cfg.aug.method in PAIR_METHODS or apr_s_where(cfg) is not None or bool(cfg.feature_apr.layers)
    return 5 if swaps else 3


def per_image_transform(cfg: Config) -> bool:
    """Whether the training images are transformed one by one in the DataLoader workers: the loader input path,
    AugMix (no batched device version) or a random-resized crop; else everything runs batched on the device."""
    return cfg.data.input_path != "gpu" or cfg.aug.method == "augmix_jsd" or cfg.data.random_resized_crop


def apr_s_where(cfg: Config) -> Literal["loader", "device"] | None:
    """Where ``cfg`` runs APR-S: per image in the DataLoader workers (``"loader"``), batched on the device
    (``"device"``), or nowhere (``None``: a method without APR-S)."""
    if cfg.aug.method not in ("apr_s", "apr_sp"):
        return None
    return "device" if cfg.data.input_path == "gpu" else "loader"

#: config keys that do not change a run's trajectory: a resume may differ in them (optim.epochs only under the step
#: schedule: a cosine one spans the run's epochs, see aprkit.train.resume)
RESUME_FREE = frozenset({"train.out", "train.resume", "train.max_steps", "train.progress", "train.tensorboard",
                         "train.report",
                         "optim.epochs", "train.eval_every", "train.checkpoint_every_steps", "data.test_limit",
                         "data.num_workers", "data.eval_batch_size", "name"})

#: settings read on CUDA only (autocast, its dtype, the memory layout, cuDNN's deterministic kernels): on another device
#: a resume that changes them changes nothing
CUDA_ONLY = frozenset({"train.amp", "train.amp_dtype", "train.channels_last", "train.deterministic"})


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], ignore: typing.AbstractSet[str] = RESUME_FREE,
                 prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config mappings (``Config.to_dict()`` / ``config.yaml``),
    leaving out ``ignore`` (by default the keys that do not change the trajectory)."""
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b, full = old.get(k), new.get(k), f"{prefix}{k}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += changed_keys(a, b, ignore, f"{full}.")
        elif a != b and full not in ignore:
            keys.append(full)
    return keys


def with_defaults(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config mapping (a checkpoint's, a ``config.yaml``) with today's defaults for the keys added since it
    was written (their defaults are the old behaviour), for comparing it with a current config; as written when it
    holds a key since removed or renamed."""
    try:
        return config_from_dict(saved).to_dict()
    except (TypeError, ValueError):
        return dict(saved)


def trajectory_view(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config mapping as far as it decides what a run trains, for comparing two: :func:`with_defaults`, the model's
    keyword arguments in one spelling per network, and the ``feature_apr`` section as one set of layers (their order
    changes nothing; without layers its settings are unused)."""
    out = with_defaults(config)
    model = out.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str) and isinstance(model.get("kwargs"), dict):
        from ..models.registry import canonical_kwargs

        # one spelling per network (phase_collapse's skip: True is "lowpass"); other names unchanged
        out["model"] = {**model, "kwargs": canonical_kwargs(model["name"], model["kwargs"])}
    f = out.get("feature_apr")
    if isinstance(f, dict):
        out["feature_apr"] = {**f, "layers": sorted(f.get("layers") or [])} if f.get("layers") else {"layers": []}
    return out
