"""Foreign models (timm, torchvision, robustbench) brought to the aprkit convention.

Nothing is ever downloaded: timm and torchvision models are built with random weights and get
their weights only from a local file (``load_model("timm:resnet50", checkpoint=path)``);
robustbench models only from a local model directory. timm and torchvision models are wrapped in
``Normalize`` with their preprocessing (timm: the model's ``pretrained_cfg`` mean/std; torchvision:
ImageNet mean/std). robustbench models already take [0, 1] inputs, so their wrapper is identity.

State_dicts whose batch-norm was folded into the convolutions (e.g. the dequantized qnnpack
MobileNetV2, whose BN entries are weight 1, mean 0, var ``1 - eps``: exact as they are) load exactly:
BN entries with weight 1, mean 0 and var exactly 1 get ``eps = 0``; missing BN entries become
identity BNs carrying the convolution's bias.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, NO_MEAN, NO_STD
from .normalize import Normalize
from .state_dict import load_state_dict_into, num_classes_of

__all__ = ["create_foreign", "check_foreign_spec", "fold_bn_compat", "import_robustbench"]

#: model libraries a foreign spec ``LIB:NAME`` may name
FOREIGN_LIBRARIES = ("timm", "torchvision", "robustbench")


def _valid_names(lib: str) -> list[str]:
    if lib == "timm":
        import timm

        return timm.list_models()
    import torchvision

    return torchvision.models.list_models()


def check_foreign_spec(spec: str) -> tuple[str, str]:
    """Split ``LIB:NAME`` and check both (did-you-mean for unknown timm/torchvision names)."""
    from .._checks import nearest_names

    lib, _, name = spec.partition(":")
    if lib not in FOREIGN_LIBRARIES:
        raise ValueError(f"unknown model library {lib!r} in {spec!r}; expected {', '.join(FOREIGN_LIBRARIES)}")
    if not name:
        raise ValueError(f"model spec {spec!r} names no model; expected e.g. 'timm:resnet50'")
    if lib != "robustbench":
        valid = _valid_names(lib)
        if name not in valid:
            raise ValueError(f"unknown {lib} model {name!r}{nearest_names(name, valid)}")
    return lib, name


def create_foreign(
    spec: str,
    num_classes: int | None = None,
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    checkpoint: str | Path | None = None,
    drop_head: bool = False,
    **kwargs: Any,
) -> Normalize:
    """Build ``timm:<name>``, ``torchvision:<name>`` or ``robustbench:<name>`` wrapped in ``Normalize``.

    ``state_dict`` whose classifier has another number of classes than ``num_classes`` raises unless
    ``drop_head`` (the head is then re-initialised).
    """
    lib, name = check_foreign_spec(spec)
    if lib == "timm":
        model = _timm(name, num_classes, state_dict, kwargs, drop_head)
    elif lib == "torchvision":
        model = _torchvision(name, num_classes, state_dict, kwargs, drop_head)
    else:
        return _robustbench(name, checkpoint, kwargs)
    model.aprkit_arch = spec
    model.aprkit_kwargs = dict(kwargs)
    return model


def _classes_in(sd: Mapping[str, torch.Tensor] | None, model: nn.Module) -> int | None:
    return None if sd is None else num_classes_of(sd, model)


def _timm(name: str, num_classes: int | None, sd: Mapping[str, torch.Tensor] | None, kwargs: dict,
          drop_head: bool) -> Normalize:
    import timm

    build = lambda n: timm.create_model(name, pretrained=False, **({"num_classes": n} if n else {}), **kwargs)  # noqa: E731
    net = build(num_classes)
    if sd is not None and num_classes is None:
        n = _classes_in(sd, net)
        if n is not None and n != net.num_classes:
            net = build(n)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    wrapped = Normalize(net, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD),
                        input_size=tuple(cfg.get("input_size", (3, 224, 224))))
    if sd is not None:
        load_state_dict_into(wrapped, sd, drop_head=drop_head)
    return wrapped


def _torchvision(name: str, num_classes: int | None, sd: Mapping[str, torch.Tensor] | None, kwargs: dict,
                 drop_head: bool) -> Normalize:
    import torchvision

    build = lambda n: torchvision.models.get_model(name, weights=None, **({"num_classes": n} if n else {}), **kwargs)  # noqa: E731
    net = build(num_classes)
    if sd is not None and num_classes is None:
        n = _classes_in(sd, net)
        if n is not None and n != getattr(_last_linear(net), "out_features", n):
            net = build(n)
    size = 299 if name.startswith("inception") else 224
    wrapped = Normalize(net, IMAGENET_MEAN, IMAGENET_STD, input_size=(3, size, size))
    if sd is not None:
        if not any(k.startswith("model.") for k in sd):
            sd = fold_bn_compat(net, sd)
        load_state_dict_into(wrapped, sd, drop_head=drop_head)
    return wrapped


def _last_linear(net: nn.Module) -> nn.Module | None:
    last = None
    for m in net.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


def fold_bn_compat(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adapt a state_dict whose BN was folded into convolutions to ``model`` (which has BN layers).

    Returns a new state_dict; sets ``eps = 0`` on BN layers that are (or become) exact identities.
    """
    sd = dict(state_dict)
    last_conv: str | None = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            last_conv = name
            continue
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        p = f"{name}."
        if f"{p}weight" not in sd and last_conv is not None:
            c = m.num_features
            bias = sd.pop(f"{last_conv}.bias", torch.zeros(c))
            sd.update({f"{p}weight": torch.ones(c), f"{p}bias": bias, f"{p}running_mean": torch.zeros(c),
                       f"{p}running_var": torch.ones(c), f"{p}num_batches_tracked": torch.tensor(0)})
            m.eps = 0.0
        elif (f"{p}running_var" in sd and bool((sd[f"{p}weight"] == 1).all())
              and bool((sd[f"{p}running_mean"] == 0).all()) and bool((sd[f"{p}running_var"] == 1).all())):
            m.eps = 0.0  # folded: the BN is a pure bias; eps would rescale by 1/sqrt(1 + eps)
    return sd


def import_robustbench():
    """Import ``robustbench.utils`` with the shims it needs as published (see ENVIRONMENT.md).

    robustbench 1.1.1 imports ``autoattack`` while its dependency installs ``pyautoattack``, and needs
    ``pkg_resources`` (``setuptools<81``). Raises ``ImportError`` with instructions when unavailable.
    """
    if "autoattack" not in sys.modules:
        try:
            import pyautoattack

            sys.modules["autoattack"] = pyautoattack
        except ImportError:
            pass
    try:
        import robustbench.utils as rb_utils
    except Exception as e:  # ImportError, or pkg_resources / autoattack failures inside robustbench
        raise ImportError(
            "robustbench models need the optional robustbench package: pip install 'aprkit[robustbench]' "
            "(robustbench plus setuptools<81 for pkg_resources; aprkit aliases pyautoattack as autoattack). "
            f"Import failed with: {type(e).__name__}: {e}"
        ) from e
    return rb_utils


def _robustbench(name: str, checkpoint: str | Path | None, kwargs: dict) -> Normalize:
    parts = name.split("/")
    if len(parts) == 3:
        dataset, threat, model_name = parts
    elif len(parts) == 1:
        dataset, threat, model_name = kwargs.pop("dataset", "cifar10"), kwargs.pop("threat_model", "Linf"), name
    else:
        raise ValueError(f"robustbench spec must be 'robustbench:<name>' or 'robustbench:<dataset>/<threat>/<name>', got {name!r}")
    model_dir = kwargs.pop("model_dir", None) or checkpoint
    if model_dir is None:
        raise ValueError("robustbench models load only from disk: pass model_dir= (or checkpoint=) a local model directory")
    model_dir = Path(model_dir)
    if model_dir.is_file():  # <model_dir>/<dataset>/<threat>/<name>.pt given directly
        model_dir = model_dir.parents[2]
    expected = model_dir / dataset / threat / f"{model_name}.pt"
    if not expected.is_file():
        raise FileNotFoundError(f"robustbench weights not found: expected {expected} (layout <model_dir>/<dataset>/<threat>/<name>.pt); aprkit never downloads them")
    rb_utils = import_robustbench()
    net = rb_utils.load_model(model_name=model_name, model_dir=str(model_dir), dataset=dataset, threat_model=threat, **kwargs)
    n = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}.get(dataset)
    size = 224 if dataset == "imagenet" else 32
    wrapped = Normalize(net, NO_MEAN, NO_STD, num_classes=n, input_size=(3, size, size))
    wrapped.aprkit_arch = f"robustbench:{dataset}/{threat}/{model_name}"
    wrapped.aprkit_kwargs = {}
    return wrapped
