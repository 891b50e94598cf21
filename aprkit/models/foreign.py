"""Foreign models (timm, torchvision, robustbench) brought to the aprkit convention.

``pretrained=True`` loads the published weights through each library's own cache: timm ``create_model(NAME,
pretrained=True)`` via the Hugging Face hub cache (honours ``HF_HUB_OFFLINE``, ``HF_HOME``/``HF_HUB_CACHE``; ``NAME``
may carry a pretrained tag, ``resnet50.a1_in1k``), torchvision ``get_model(NAME, weights=...)`` (``"DEFAULT"`` or a
weights-enum member name) via the torch hub cache (``$TORCH_HOME/hub/checkpoints``), robustbench's ``load_model`` into
``model_dir`` (default ``data_root()/robustbench``; :mod:`aprkit.models.robustbench`). Such a model is wrapped in
:class:`Preprocess` with the authors' evaluation preprocessing (timm ``resolve_data_config(use_test_size=True)`` as
timm's ``validate.py``: the test input size where the weights publish one, resize to ``input_size / crop_pct``, centre
crop or squash, mean/std; torchvision: the weights' ``transforms()``). Weights from a local file (``checkpoint=``) or
random weights get ``Normalize`` with the mean/std only (the images are used at their own size). robustbench models
already take [0, 1] inputs, so their wrapper is identity.

State_dicts whose batch-norm was folded into the convolutions (e.g. the dequantized qnnpack
MobileNetV2, whose BN entries are weight 1, mean 0, var ``1 - eps``: exact as they are) load exactly:
BN entries with weight 1, mean 0 and var exactly 1 get ``eps = FOLDED_BN_EPS`` (the smallest positive float32:
var + eps is exactly 1; torch 2.11 refuses eps 0); a state_dict with no BN entries at all whose convolutions carry
the biases the model's do not have gets identity BNs holding those biases. Any other missing BN entry is an error
naming it (:func:`fold_bn_compat`).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import check_zip_intact
from .base import IMAGENET_MEAN, IMAGENET_STD
from .normalize import Normalize, Preprocess, find_classifier, replace_head
from .registry import tag_model
from .robustbench import create_robustbench, import_robustbench
from .state_dict import load_state_dict_into, num_classes_of
from .weights_error import stall_timeout, weights_error

__all__ = ["Preprocess", "create_foreign", "check_foreign_spec", "fold_bn_compat", "import_robustbench"]

#: model libraries a foreign spec ``LIB:NAME`` may name
FOREIGN_LIBRARIES = ("timm", "torchvision", "robustbench")
#: the spec prefixes of foreign models: ``timm:``, ``torchvision:``, ``robustbench:``
FOREIGN_PREFIXES = tuple(f"{lib}:" for lib in FOREIGN_LIBRARIES)


def _valid_names(lib: str) -> list[str]:
    if lib == "timm":
        import timm

        return timm.list_models()
    import torchvision

    return torchvision.models.list_models()


def check_foreign_spec(spec: str) -> tuple[str, str]:
    """Split ``LIB:NAME`` and check both (did-you-mean for unknown timm/torchvision names)."""
    from .._text import nearest_names

    lib, _, name = spec.partition(":")
    if lib not in FOREIGN_LIBRARIES:
        raise ValueError(f"unknown model library {lib!r} in {spec!r}; expected {', '.join(FOREIGN_LIBRARIES)}")
    if not name:
        raise ValueError(f"model spec {spec!r} names no model; expected e.g. 'timm:resnet50'")
    if lib != "robustbench":
        valid = _valid_names(lib)
        arch, dot, tag = name.partition(".") if lib == "timm" else (name, "", "")
        if arch not in valid:
            raise ValueError(f"unknown {lib} model {name!r}{nearest_names(name, valid)}")
        if dot:
            import timm

            try:  # timm's own test: the tags it builds (.untrained ones too), with or without published weights
                timm.models.get_pretrained_cfg(name)
            except RuntimeError:
                tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{arch}.*")]
                raise ValueError(f"timm model {arch!r} has no tag {tag!r}{nearest_names(tag, tags)}; its tags with "
                                 f"weights: {', '.join(tags) or 'none'} (or timm:{arch} for its default weights)"
                                 ) from None
    return lib, name


def create_foreign(
    spec: str,
    num_classes: int | None = None,
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    drop_head: bool = False,
    pretrained: bool = False,
    **kwargs: Any,
) -> Normalize:
    """Build ``timm:<name>``, ``torchvision:<name>`` or ``robustbench:<name>`` wrapped in ``Normalize``.

    ``pretrained=True`` loads the published weights (see the module docstring; ``state_dict`` must then be
    None). A ``state_dict`` or pretrained head with another number of classes than ``num_classes`` raises
    unless ``drop_head`` (the head is then re-initialised). Weights that cannot be fetched raise
    ``DownloadError`` naming the source, the cache folder looked in and how to supply the file.
    """
    lib, name = check_foreign_spec(spec)
    if pretrained and state_dict is not None:
        raise ValueError("pretrained=True loads the published weights; do not pass state_dict= as well")
    if lib == "timm":
        model = _timm_pretrained(name, num_classes, kwargs, drop_head) if pretrained else \
            _timm(name, num_classes, state_dict, kwargs, drop_head)
    elif lib == "torchvision":
        model = _torchvision_pretrained(name, num_classes, kwargs, drop_head) if pretrained else \
            _torchvision(name, num_classes, state_dict, kwargs, drop_head)
    else:
        return create_robustbench(name, checkpoint, kwargs, num_classes=num_classes, drop_head=drop_head,
                                  state_dict=state_dict)
    return tag_model(model, spec, kwargs)


def _classes_in(sd: Mapping[str, torch.Tensor] | None, model: nn.Module) -> int | None:
    return None if sd is None else num_classes_of(sd, model)


def _timm(name: str, num_classes: int | None, sd: Mapping[str, torch.Tensor] | None, kwargs: dict,
          drop_head: bool) -> Normalize:
    import timm

    def build(n: int | None) -> Any:
        head: dict[str, Any] = {"num_classes": n} if n else {}
        return timm.create_model(name, pretrained=False, **head, **kwargs)

    net = build(num_classes)
    if sd is not None and num_classes is None:
        n = _classes_in(sd, net)
        if n is not None and n != net.num_classes:
            net = build(n)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    size = tuple(cfg.get("input_size", (3, 224, 224)))
    if kwargs.get("img_size") is not None:  # built for another size (a ViT at 32 px): the published cfg says 224
        hw = kwargs["img_size"]
        size = (int(kwargs.get("in_chans", size[0])), *((hw, hw) if isinstance(hw, int) else tuple(hw)))
    wrapped = Normalize(net, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD), input_size=size)
    if sd is not None:
        load_state_dict_into(wrapped, sd, drop_head=drop_head)
    return wrapped


def _torchvision(name: str, num_classes: int | None, sd: Mapping[str, torch.Tensor] | None, kwargs: dict,
                 drop_head: bool) -> Normalize:
    import torchvision

    def build(n: int | None) -> Any:
        head: dict[str, Any] = {"num_classes": n} if n else {}
        return torchvision.models.get_model(name, weights=None, **head, **kwargs)

    net = build(num_classes)
    if sd is not None and num_classes is None:
        n = _classes_in(sd, net)
        if n is not None and n != _head_classes(net, n):
            net = build(n)
    size = 299 if name.startswith("inception") else 224  # the ImageNet weights' size, not this model's (its own file)
    wrapped = Normalize(net, IMAGENET_MEAN, IMAGENET_STD, input_size=(3, size, size), input_size_assumed=True)
    if sd is not None:
        if not any(k.startswith("model.") for k in sd):
            sd = fold_bn_compat(net, sd)
        load_state_dict_into(wrapped, sd, drop_head=drop_head)
    return wrapped


def _check_head(what: str, have: int, num_classes: int | None, drop_head: bool) -> bool:
    """True when the head must be replaced by one with ``num_classes`` outputs."""
    if num_classes is None or num_classes == have:
        return False
    if not drop_head:
        raise ValueError(f"the pretrained {what} has {have} classes but num_classes={num_classes}; pass drop_head=True "
                         "(--drop-head) for a new, random head or leave num_classes unset")
    return True


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (no request is sent). Behind a
    proxy (``HTTPS_PROXY`` and the like, which the hub's client honours) a direct connection says nothing: True."""
    import socket
    import urllib.request
    from urllib.parse import urlsplit

    if urllib.request.getproxies():
        return True

    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
    except (OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def _hub_offline(constants: Any, on: bool) -> Iterator[None]:
    """The Hugging Face hub in offline mode (cache only) while ``on``: with the hub unreachable, its downloads
    retried for about a minute (24 lines of "Retrying in 8s") before the error; offline, a cached file loads at
    once and a missing one fails at once."""
    if not on:
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _timm_pretrained(name: str, num_classes: int | None, kwargs: dict, drop_head: bool) -> Preprocess:
    import timm
    from huggingface_hub import constants
    from timm.data import resolve_data_config

    unreachable = not getattr(constants, "HF_HUB_OFFLINE", False) and not _reachable(constants.ENDPOINT)
    try:
        # from the cache at once, not after a minute of retries; weights timm fetches by URL go through torch.hub
        with _hub_offline(constants, unreachable), stall_timeout(not unreachable):
            net: Any = timm.create_model(name, pretrained=True, **kwargs)  # timm attributes (num_classes, ...)
    except (ValueError, TypeError):
        raise
    except RuntimeError as e:
        if not _state_dict_mismatch(e) or not kwargs:  # (without options: a file of another model)
            raise _timm_weights_error(name, e, unreachable) from e
        raise _options_do_not_fit(f"timm:{name}", kwargs, "its pretrained weights", e) from None
    except Exception as e:  # hub errors, missing cache entries offline, connection failures, damaged cache files
        raise _timm_weights_error(name, e, unreachable) from e
    if _check_head(f"timm:{name}", net.num_classes, num_classes, drop_head):
        replace_head(net, int(num_classes))  # type: ignore[arg-type]
    # the test-time input size and crop where the weights publish one, as timm's validate.py (whose numbers timm
    # publishes) evaluates: e.g. resnet50.a1_in1k at 288 px, crop_pct 1.0, not its 224-px training size
    cfg = resolve_data_config({}, model=net, use_test_size=True)
    crop = int(cfg["input_size"][-1])
    resize = int(math.floor(crop / float(cfg.get("crop_pct") or 1.0)))
    interp = cfg.get("interpolation", "bilinear")
    crop_mode = cfg.get("crop_mode") or "center"
    if crop_mode not in ("center", "squash"):
        raise ValueError(f"timm:{name} is evaluated with crop_mode={crop_mode!r}, which aprkit does not reproduce "
                         "(it takes 'center' and 'squash'); its numbers would not follow the authors' protocol")
    return Preprocess(net, cfg["mean"], cfg["std"], resize=resize, crop=crop, crop_mode=crop_mode,
                      interpolation=interp if interp in ("nearest", "bilinear", "bicubic") else "bilinear")


def _state_dict_mismatch(e: BaseException) -> bool:
    """Whether ``e`` is ``load_state_dict``'s refusal (the weights' shapes or keys are another architecture's)."""
    return "Error(s) in loading state_dict" in str(e)


def _options_do_not_fit(spec: str, kwargs: dict, weights: str, e: BaseException) -> ValueError:
    """The error for builder options under which the published weights (``weights``) do not load."""
    return ValueError(f"{spec} built with {kwargs} does not fit {weights} ({str(e).splitlines()[0]}); the published "
                      "weights need the default architecture: drop those options, or pass random_init=True "
                      "(--random-init) for an untrained model")


def _timm_weights_error(name: str, e: BaseException, unreachable: bool) -> OSError:
    """The error for timm weights that could not be loaded: the hub repo, the cache looked in and its offline mode, a
    cached file that cannot be read named as such (:func:`weights_error`)."""
    import timm
    from huggingface_hub import constants

    cfg = timm.models.get_pretrained_cfg(name) if hasattr(timm.models, "get_pretrained_cfg") else None
    repo = getattr(cfg, "hf_hub_id", None) or name
    cached = _hub_cached(str(repo), getattr(cfg, "hf_hub_filename", None))
    offline = "on" if getattr(constants, "HF_HUB_OFFLINE", False) else "off"  # the hub's reading ("0": off)
    offline = f"on: {constants.ENDPOINT} is unreachable" if unreachable else offline
    variable = os.environ.get("HF_HUB_OFFLINE", "unset")
    return weights_error(f"timm:{name}", f"the Hugging Face hub repo {repo}",
                         f"the Hugging Face cache {constants.HF_HUB_CACHE} (models--{str(repo).replace('/', '--')}; "
                         f"hub offline mode {offline}, HF_HUB_OFFLINE={variable})", e, "HF_HOME", cached=cached)


def _hub_cached(repo: str, filename: str | None) -> Path | None:
    """The weights file of hub repo ``repo`` already in the Hugging Face cache (timm's ``model.safetensors`` or
    ``pytorch_model.bin``, or the pretrained config's file), else None: a load that fails with it there failed on
    that file (damaged or cut short), not for want of a network."""
    from huggingface_hub import try_to_load_from_cache

    for fn in dict.fromkeys(n for n in (filename, "model.safetensors", "pytorch_model.bin") if n):
        found = try_to_load_from_cache(repo, fn)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _torchvision_pretrained(name: str, num_classes: int | None, kwargs: dict, drop_head: bool) -> Preprocess:
    import torch.hub
    import torchvision

    choice = kwargs.pop("weights", "DEFAULT")
    try:
        enum = torchvision.models.get_model_weights(name)
        weights = enum[choice] if isinstance(choice, str) else choice
    except (KeyError, ValueError) as e:
        raise ValueError(f"torchvision:{name} has no pretrained weights {choice!r}: {e}; pass checkpoint=FILE or "
                         "random_init=True") from None
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    cached = target if target.is_file() else None
    if cached is not None:  # torch.hub checks a file's hash when it downloads it, never again when reading the cache
        check_zip_intact(cached, f"torchvision:{name} would load other weights than the published ones; delete it and "
                                 f"run again to download it afresh from {weights.url}, or pass checkpoint=FILE")
    try:
        with stall_timeout(cached is None):
            net = torchvision.models.get_model(name, weights=weights, **kwargs)
    except (ValueError, TypeError):
        raise
    except RuntimeError as e:
        if not _state_dict_mismatch(e):
            raise weights_error(f"torchvision:{name} ({weights})", weights.url, f"the torch hub cache: {target} "
                                 "(TORCH_HOME)", e, "TORCH_HOME", cached=cached) from e
        if not kwargs:  # the default architecture: the cached file holds another model's weights
            raise ValueError(f"torchvision:{name}: the cached file {target} does not hold the weights of {weights} "
                             f"({str(e).splitlines()[0]}): another file under its name. Delete it and run again to "
                             f"download it afresh from {weights.url}, or pass checkpoint=FILE") from None
        raise _options_do_not_fit(f"torchvision:{name}", kwargs, f"its pretrained weights {weights}", e) from None
    except Exception as e:  # URLError offline, truncated files, hash mismatches
        raise weights_error(f"torchvision:{name} ({weights})", weights.url, f"the torch hub cache: {target} "
                             "(TORCH_HOME)", e, "TORCH_HOME", cached=cached) from e
    n = len(weights.meta.get("categories") or []) or None
    if n is not None and _check_head(f"torchvision:{name}", n, num_classes, drop_head):
        replace_head(net, int(num_classes))  # type: ignore[arg-type]
    t = weights.transforms()
    interp = getattr(t.interpolation, "value", str(t.interpolation))
    return Preprocess(net, list(t.mean), list(t.std), resize=int(t.resize_size[0]), crop=int(t.crop_size[0]),
                      interpolation=interp if interp in ("nearest", "bilinear", "bicubic") else "bilinear",
                      num_classes=num_classes or n)





def _head_classes(net: nn.Module, default: int) -> int:
    """Output count of ``net``'s classifier, ``default`` when it has no ``nn.Linear`` (e.g. SqueezeNet)."""
    try:
        return find_classifier(net).out_features
    except ValueError:
        return default


#: eps of a folded (identity) BN: the smallest positive float32, so var 1 + eps is exactly 1 (torch 2.11's
#: F.batch_norm refuses eps <= 0 in eval mode too; 2.14 only in training)
FOLDED_BN_EPS = float(torch.finfo(torch.float32).tiny)


def _untrained(bias: torch.Tensor | None) -> bool:
    """Whether an identity BN entry (weight 1, mean 0, var 1) is a freshly built layer's, not a folded one's: a zero
    (or no) bias, which a folded BN holding its convolution's bias practically never has."""
    return bias is None or not bool(bias.any())


def fold_bn_compat(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adapt a state_dict whose batch-norm was folded into the convolutions to ``model`` (which has BN layers).

    Returns a new state_dict. BN entries that are exact identities (weight 1, mean 0, var 1) holding a bias get
    ``eps = FOLDED_BN_EPS`` on their layer (a larger eps would rescale by ``1/sqrt(1 + eps)``); with a zero bias they
    are a freshly built layer's and keep their eps (a tiny one divided a constant batch by ~0 when trained). BN
    entries are made up only when the folding is unambiguous: no BN layer of ``model`` has any entry in
    ``state_dict`` and the convolution before each one carries a bias of the BN's width that ``model``'s convolution
    does not have; each BN then becomes an identity (``eps = FOLDED_BN_EPS``) holding that bias. Otherwise (some BN
    entries present, a bias missing: an incomplete checkpoint or another architecture) the missing entries stay
    missing, so that the strict loader names them.
    """
    sd = dict(state_dict)
    bns: list[tuple[str, nn.modules.batchnorm._BatchNorm, str | None]] = []  # (name, layer, bias-free conv before)
    last_conv: str | None = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            last_conv = name if m.bias is None else None  # a conv with its own bias cannot have received a BN's
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            bns.append((name, m, last_conv))
    prefixes = tuple(f"{name}." for name, _, _ in bns)
    convs = [conv for _, _, conv in bns]
    biases = [sd.get(f"{conv}.bias") for conv in convs]
    folded = (bool(bns) and not any(k.startswith(prefixes) for k in sd) and len(set(convs)) == len(convs)
              and all(m.affine and m.track_running_stats and b is not None and tuple(b.shape) == (m.num_features,)
                      for (_, m, _), b in zip(bns, biases, strict=True)))
    for name, m, conv in bns:
        w, mean, var = (sd.get(f"{name}.{k}") for k in ("weight", "running_mean", "running_var"))
        if folded:
            c = m.num_features
            sd.update({f"{name}.weight": torch.ones(c), f"{name}.bias": sd.pop(f"{conv}.bias"),
                       f"{name}.running_mean": torch.zeros(c), f"{name}.running_var": torch.ones(c),
                       f"{name}.num_batches_tracked": torch.tensor(0)})
            m.eps = FOLDED_BN_EPS
        elif (w is not None and mean is not None and var is not None and bool((w == 1).all())
              and bool((mean == 0).all()) and bool((var == 1).all()) and not _untrained(sd.get(f"{name}.bias"))):
            m.eps = FOLDED_BN_EPS  # folded: the BN is a pure bias
    return sd
