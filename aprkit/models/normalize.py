"""``Normalize``: give a foreign model (timm, torchvision, robustbench, your own) the aprkit convention.

The wrapper takes float images in [0, 1], normalises them with per-channel ``mean``/``std``
(non-persistent buffers) and calls the wrapped model, kept as the submodule ``model`` so layer
names such as ``model.layer2`` resolve for hooks (``inner`` returns it too). It also provides
``forward_features``/``forward_head``/``num_classes``/``input_size``:

- timm models: ``forward_head(forward_features(x), pre_logits=True)`` and ``get_classifier()``;
- aprkit models normalise inside already and are refused (``TypeError``): use them as they are;
- anything else: the input of the last ``nn.Linear`` the forward pass calls (captured by forward hooks,
  :func:`recording_classifier`) and that layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier, as_stats, normalize_images

__all__ = ["ClassifierInputs", "NotALinearClassifier", "Normalize", "Preprocess", "find_classifier",
           "recording_classifier", "replace_head", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel/DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _wrapped(model: nn.Module) -> tuple[nn.Module, ...]:
    """The model a wrapper holds as ``.model`` (a ``Normalize``, robustbench's ``Sequential(normalize, model)``), when
    the wrapper has no ``nn.Linear`` of its own outside it (a user's wrapper with a timm backbone under its own head
    keeps that head)."""
    inner = getattr(model, "model", None)
    if not isinstance(inner, nn.Module):
        return ()
    own = any(isinstance(m, nn.Linear) for name, m in model.named_modules() if name != "model"
              and not name.startswith("model."))
    return (inner,) if isinstance(model, Normalize) or not own else ()


def _head_candidates(model: nn.Module) -> list[nn.Linear]:
    """The ``nn.Linear`` layers that may be ``model``'s classifier: where the model (timm; or the model a ``Normalize``
    wraps) names one head with ``get_classifier()``, the Linears in it (``[]`` for ``nn.Identity`` without a
    classifier or a convolution: the last Linear called would be an MLP's); else every ``nn.Linear`` it holds, in
    registration order."""
    for m in (model, *_wrapped(model)):
        get = getattr(m, "get_classifier", None)
        if callable(get):
            head = get()
            if isinstance(head, nn.Linear):
                return [head]
            if isinstance(head, nn.Module):  # (timm's ClassifierHead holds its Linear as .fc)
                return [h for h in head.modules() if isinstance(h, nn.Linear)]
            break  # several heads (a distilled model): any Linear, as below
    return list(dict.fromkeys(m for m in model.modules() if isinstance(m, nn.Linear)))


def find_classifier(model: nn.Module) -> nn.Linear:
    """The classifier of ordinary CNNs and ViTs, read without a forward pass: timm's ``get_classifier()`` or the last
    ``nn.Linear`` registered in ``model``. A model that registers a Linear it does not call after its head (a
    contrastive projection) is read right only with a forward pass: :func:`recording_classifier`."""
    found = _head_candidates(model)
    if not found:
        raise ValueError(f"cannot find a classifier (nn.Linear) in {type(model).__name__}; wrap it with your own head")
    return found[-1]


class NotALinearClassifier(ValueError):
    """The forward pass called no ``nn.Linear`` classifier (none at all, or its last one gives fewer outputs than the
    model: a gate inside a convolutional head)."""


class ClassifierInputs(list):
    """The penultimate features of each forward pass :func:`recording_classifier` saw (a list of tensors) and
    ``head``, the ``nn.Linear`` the last of them called."""

    head: nn.Linear | None = None


@contextlib.contextmanager
def recording_classifier(model: nn.Module, detach: bool = True) -> Iterator[ClassifierInputs]:
    """While open, each forward pass of ``model`` appends to the yielded list the input of the last ``nn.Linear`` it
    called (timm: its ``get_classifier()``), detached unless ``detach=False``, and sets the list's ``head`` to that
    layer, which must give at least the model's output width (a model may keep some of its logits, as an ImageNet-R
    evaluation's class mask): a forward pass that calls none, or whose last one gives fewer, raises
    :class:`NotALinearClassifier` (its classifier is not an ``nn.Linear``). The hooks go when it closes."""
    linears = _head_candidates(model)
    if not linears:
        raise ValueError(f"cannot find a classifier (nn.Linear) in {type(model).__name__}; wrap it with your own head")
    records = ClassifierInputs()
    last: list[tuple[nn.Module, torch.Tensor, int]] = []

    def linear_called(m: nn.Module, args: Any, out: Any) -> None:
        last[:] = [(m, args[0].detach() if detach else args[0], out.shape[-1])]

    def model_called(_m: nn.Module, _args: Any, out: Any) -> None:
        if not last:
            raise NotALinearClassifier(
                f"the forward pass of {type(model).__name__} called none of its nn.Linear layers: its classifier is "
                "not an nn.Linear, so its penultimate features cannot be read from one (a model with "
                "forward_features/forward_head gives them)")
        head, x, width = last.pop()
        if isinstance(out, torch.Tensor) and width < out.shape[-1]:
            name = next((n for n, m in model.named_modules() if m is head), type(head).__name__)
            raise NotALinearClassifier(
                f"the last nn.Linear the forward pass of {type(model).__name__} calls, {name!r}, gives {width} "
                f"outputs but the model {out.shape[-1]}: its classifier is not that nn.Linear, so its penultimate "
                "features cannot be read from one (a model with forward_features/forward_head gives them)")
        records.head = cast(nn.Linear, head)
        records.append(x)

    handles = [m.register_forward_hook(linear_called) for m in linears]
    handles.append(model.register_forward_pre_hook(lambda _m, _a: last.clear()))
    handles.append(model.register_forward_hook(model_called))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


class Normalize(nn.Module):
    """Wrap ``model`` so it takes float images ``(B, C, H, W)`` in [0, 1] and normalises inside.

    ``mean``/``std`` default to ImageNet's. ``num_classes`` and ``input_size`` are read from the
    model when it has them (timm, aprkit) and can be given explicitly; an input size neither gives is taken as
    ``(C, 224, 224)`` and marked ``input_size_assumed`` (so is one given with ``input_size_assumed=True``, an
    architecture's default): evaluation then does not warn that the data's images have another size (a CIFAR net
    wrapped in Normalize was said to be made for 224 px).
    """

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        *,
        num_classes: int | None = None,
        input_size: tuple[int, int, int] | None = None,
        input_size_assumed: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"Normalize wraps an nn.Module, got {type(model).__name__}")
        if isinstance(model, ImageClassifier):  # its forward normalises again, its feature split does not
            raise TypeError(f"{type(model).__name__} is an aprkit model: it takes [0, 1] images and normalises inside "
                            "with its own mean/std buffers; use it as it is (set model.mean / model.std to change "
                            "them) rather than wrapping it in Normalize")
        m, s = as_stats(mean, IMAGENET_MEAN, "mean"), as_stats(std, IMAGENET_STD, "std")
        if m.numel() != s.numel():
            raise ValueError(f"mean and std must have the same number of channels, got {m.numel()} and {s.numel()}")
        self.model = model
        self.register_buffer("mean", m, persistent=False)
        self.register_buffer("std", s, persistent=False)
        self.num_classes = int(num_classes if num_classes is not None else _guess_num_classes(model))
        known = tuple(input_size) if input_size is not None else _known_input_size(model)
        self.input_size = known if known is not None else (m.numel(), 224, 224)
        if known is None or input_size_assumed:  # a guess (an architecture's default): no size to warn of data against
            self.input_size_assumed = True

    @property
    def inner(self) -> nn.Module:
        """The wrapped model."""
        return self.model

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` for float images ``(B, C, H, W)`` in [0, 1] (:func:`.base.normalize_images`)."""
        return normalize_images(x, self.mean, self.std, f"Normalize({type(self.model).__name__})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, C, H, W)`` in [0, 1]."""
        return self.model(self.normalize(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate pooled features ``(B, D)`` of images ``(B, C, H, W)`` in [0, 1]."""
        inner: Any = self.model  # duck-typed: timm, aprkit or any classifier
        z = self.normalize(x)
        if _is_timm(inner):
            return inner.forward_head(inner.forward_features(z), pre_logits=True)
        if hasattr(inner, "forward_head") and hasattr(inner, "_features"):  # an aprkit ImageClassifier
            return inner._features(z)
        with recording_classifier(inner, detach=False) as seen:
            inner(z)
        self.__dict__["_called_head"] = seen.head  # (not a submodule): forward_head's layer, this forward's
        return seen[-1].flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` from features ``(B, D)``: for a model that is neither timm's nor aprkit's, the
        ``nn.Linear`` the last ``forward_features`` call ran, else the last one registered (:func:`find_classifier`)."""
        inner: Any = self.model  # duck-typed: timm, aprkit or any classifier
        if hasattr(inner, "forward_head") and hasattr(inner, "_features"):
            return inner.forward_head(features)
        if _is_timm(inner) and callable(getattr(inner, "get_classifier", None)):
            head = inner.get_classifier()
            if isinstance(head, nn.Module):  # timm's own head on its pre-logits (nn.Identity without a classifier)
                return head(features)
            raise ValueError(f"{type(inner).__name__} has {len(head) if isinstance(head, tuple) else 'several'} heads "
                             "on different tokens (a distilled model averages them): its logits are not a function "
                             "of one feature vector, so forward_head cannot give them; use the model's forward")
        # the Linear the last forward_features call ran, while the model still holds it (a model whose unused
        # projection is registered after its head: only a forward pass tells them apart), else find_classifier's
        head = self.__dict__.get("_called_head")
        if head is None or not any(m is head for m in inner.modules()):
            head = find_classifier(inner)
        return head(features)

    def extra_repr(self) -> str:
        mean = [round(v, 4) for v in self.mean.flatten().tolist()]
        std = [round(v, 4) for v in self.std.flatten().tolist()]
        return f"mean={mean}, std={std}"


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.") and hasattr(model, "forward_head")


def _guess_num_classes(model: nn.Module) -> int:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    try:
        return find_classifier(model).out_features
    except ValueError:
        return 0


def _known_input_size(model: nn.Module) -> tuple[int, ...] | None:
    """The input size ``model`` states (``input_size``, or timm's ``pretrained_cfg``), else None."""
    size = getattr(model, "input_size", None)
    if isinstance(size, (tuple, list)) and len(size) == 3:
        return tuple(int(v) for v in size)
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and "input_size" in cfg:
        return tuple(int(v) for v in cfg["input_size"])
    return None


class Preprocess(Normalize):
    """``Normalize`` plus the model's evaluation resize and centre crop, applied on float [0, 1] images.

    Images ``(B, C, H, W)`` have their shorter side resized to ``resize`` (the longer one to ``int(resize * long /
    short)``, as torchvision's ``Resize``; ``interpolation``, antialiased) or, with ``crop_mode="squash"`` (timm's),
    both sides to ``resize`` (``resize=None``: not resized); then they are centre-cropped to ``crop`` x ``crop``, as the
    authors' evaluation transforms do; mean/std come after (both steps are linear, so their order does not change the
    result). Square images of exactly ``crop`` x ``crop`` are taken as already resized and cropped and pass unchanged:
    the benchmark sets stored at the model's input size (ImageNet-C, the cue-conflict stimuli at 224 px) are evaluated
    as they are, not zoomed in a second time. The resize is done in float: torchvision's PIL path rounds the resized
    image to 8 bits, so on upscaled images logits differ from it by up to ~0.7 (its float-tensor path: ~1e-5).
    """

    def __init__(self, model: nn.Module, mean: Any, std: Any, *, resize: int | None, crop: int,
                 interpolation: str = "bilinear", crop_mode: str = "center", num_classes: int | None = None) -> None:
        super().__init__(model, mean, std, num_classes=num_classes, input_size=(len(mean), int(crop), int(crop)))
        if interpolation not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(f"interpolation must be nearest, bilinear or bicubic, got {interpolation!r}")
        if crop_mode not in ("center", "squash"):
            raise ValueError(f"crop_mode must be 'center' or 'squash', got {crop_mode!r}")
        self.resize = None if resize is None else int(resize)
        self.crop, self.interpolation, self.crop_mode = int(crop), interpolation, crop_mode

    def resized_size(self, h: int, w: int) -> tuple[int, int] | None:
        """The size images of ``h x w`` are resized to before the centre crop, ``None`` when they are not resized
        (already ``crop x crop``, at the resize size, or a crop-only preprocessing)."""
        if (h, w) == (self.crop, self.crop) or self.resize is None:  # (resize None: robustbench's Crop288)
            return None
        if self.crop_mode == "squash":
            return (self.resize, self.resize) if (h, w) != (self.resize, self.resize) else None
        if min(h, w) == self.resize:
            return None
        long = int(self.resize * max(h, w) / min(h, w))
        return (self.resize, long) if h <= w else (long, self.resize)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Resize, centre-crop and normalise float images ``(B, C, H, W)`` in [0, 1] -> ``(B, C, crop, crop)``."""
        import torch.nn.functional as F

        z = super().normalize(x)
        h, w = z.shape[-2:]
        if (h, w) == (self.crop, self.crop):
            return z
        size = self.resized_size(int(h), int(w))
        if size is not None:
            smooth = self.interpolation != "nearest"
            z = F.interpolate(z, size=size, mode=self.interpolation, antialias=smooth,
                              **({"align_corners": False} if smooth else {}))
        h, w = z.shape[-2:]
        if h < self.crop or w < self.crop:
            if self.resize is None:
                raise ValueError(f"images of {h}x{w} are smaller than the crop {self.crop}: this model's preprocessing "
                                 f"crops {self.crop} px without resizing (as robustbench's Crop288); give it images of "
                                 f"at least {self.crop} px (e.g. folder:DIR without resize=/crop=)")
            raise ValueError(f"images of {h}x{w} after resizing are smaller than the crop {self.crop}")
        top, left = int(round((h - self.crop) / 2.0)), int(round((w - self.crop) / 2.0))
        return z[..., top:top + self.crop, left:left + self.crop]

    def extra_repr(self) -> str:
        return (f"resize={self.resize}, crop={self.crop}, interpolation={self.interpolation!r}, "
                f"crop_mode={self.crop_mode!r}, " + super().extra_repr())


def replace_head(net: nn.Module, num_classes: int) -> None:
    """Give ``net`` a new, randomly initialised classifier head of ``num_classes`` outputs (in place), on the old
    head's device and in its dtype. A timm model resets its own (``reset_classifier``: a distilled model's two heads
    together; replacing one of them left the model adding 1,000 logits to ``num_classes``)."""
    owner: Any = next((m for m in (net, *_wrapped(net)) if callable(getattr(m, "reset_classifier", None))
                       and callable(getattr(m, "get_classifier", None))), None)  # timm's, or one a Normalize wraps
    if owner is not None:  # (its head may be a convolution: DLA, DPN)
        old = owner.get_classifier()
        like = next((p for h in (old if isinstance(old, tuple) else (old,)) if isinstance(h, nn.Module)
                     for p in h.parameters()), None)
        owner.reset_classifier(num_classes)
        new = owner.get_classifier()
        for h in new if isinstance(new, tuple) else (new,):
            if isinstance(h, nn.Module) and like is not None:
                h.to(device=like.device, dtype=like.dtype)
        return
    head = find_classifier(net)
    name = next(n for n, m in net.named_modules() if m is head)
    parent_name, _, attr = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, attr, nn.Linear(head.in_features, num_classes, bias=head.bias is not None,
                                    device=head.weight.device, dtype=head.weight.dtype))
