"""Phase-vs-amplitude bias for any labelled image dataset (CIFAR included).

This is the CIFAR-scale analogue of shape bias, **not** the Geirhos et al. cue-conflict metric (which
needs the 16-category ImageNet stimuli; see ``aprkit.eval.analyses.shape_bias``). Conflict stimuli are built
from pairs of test images of different classes: the Fourier phase of one image (its structure: edges,
shape) with the amplitude spectrum of the other (mostly colour, contrast, texture statistics). A model
"follows the phase" when it predicts the phase donor's class and "follows the amplitude" when it
predicts the amplitude donor's; phase bias = phase decisions / (phase + amplitude decisions).

Variants:

- ``"full"``: the whole amplitude spectrum comes from the amplitude donor (``fourier.swap_amplitude``);
- ``"low_frequency"``: only the amplitude inside the centred low-frequency square of half-width
  ``floor(beta * min(H, W))`` is swapped (``fourier.low_frequency_swap``), the rest stays the phase donor's;
- a texture-only control: ``patch_shuffle`` cuts each image into a grid of patches and permutes them
  (global shape destroyed, local texture kept); accuracy on it measures how far local texture alone
  carries the class.

Frequency bins where the phase donor has no amplitude (a grey image's colour bins over ``dims="chw"``) stay 0, as
in every aprkit image op (``zero_bins="zero"``; the README's paragraph "A frequency bin where an image has no
amplitude"): the reference formula
``|A| * exp(i * angle(P))`` would give them phase 0 and the amplitude donor's energy there.

``phase_bias(decisions, phase_labels, amplitude_labels)`` is the functional metric;
``measure_phase_bias(model, data, ...)`` builds the stimuli (seeded) and runs the model.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..._checks import check_image_tensor
from ..._tensors import generator_device
from ...fourier import Dims
from ...models.base import eval_mode
from .shape_bias import conflicting

__all__ = [
    "OneClass",
    "PhaseBiasResult",
    "phase_bias",
    "sample_pairs",
    "phase_amplitude_conflict",
    "patch_shuffle",
    "patch_permutations",
    "PhaseConflictDataset",
    "PatchShuffleDataset",
    "dataset_labels",
    "measure_phase_bias",
]


class OneClass(ValueError):
    """The labelled images hold one class: there is no pair of images of different classes to measure on."""


Variant = Literal["full", "low_frequency"]


@dataclass
class PhaseBiasResult:
    """Follow rates over the valid pairs (phase and amplitude donors of different classes).

    ``phase``/``amplitude``/``neither`` are fractions of pairs (they sum to 1); ``phase_bias`` is
    ``phase / (phase + amplitude)`` (NaN when the model never followed either donor).
    """

    phase: float
    amplitude: float
    neither: float
    phase_bias: float
    n_pairs: int
    n_excluded: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (NaN becomes ``None``)."""
        d = asdict(self)
        d["phase_bias"] = None if math.isnan(self.phase_bias) else self.phase_bias
        return d


def _as_index_tensor(values: object, name: str) -> torch.Tensor:
    t = values if isinstance(values, torch.Tensor) else torch.as_tensor(values)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one entry per pair), got shape {tuple(t.shape)}")
    return t.long().cpu()


def phase_bias(decisions: object, phase_labels: object, amplitude_labels: object) -> PhaseBiasResult:
    """Phase bias of ``decisions`` (predicted classes, ``(N,)``) on phase/amplitude conflict stimuli.

    ``phase_labels[i]``/``amplitude_labels[i]`` are the classes of the phase and amplitude donors of
    stimulus ``i``. Pairs whose donors share a class are dropped (counted in ``n_excluded``).
    """
    d = _as_index_tensor(decisions, "decisions")
    p = _as_index_tensor(phase_labels, "phase_labels")
    a = _as_index_tensor(amplitude_labels, "amplitude_labels")
    keep, d, p, a = conflicting(d, p, a, ("phase_labels", "amplitude_labels"), "pair",
                                "no valid pairs: every pair has phase and amplitude donors of the same class")
    n = len(d)
    n_p, n_a = int((d == p).sum()), int((d == a).sum())
    bias = n_p / (n_p + n_a) if n_p + n_a else float("nan")
    return PhaseBiasResult(n_p / n, n_a / n, (n - n_p - n_a) / n, bias, n, int((~keep).sum()))


def sample_pairs(
    labels: torch.Tensor, n_pairs: int, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n_pairs`` index pairs ``(i, j)`` with ``labels[i] != labels[j]``, both ``(n_pairs,)``.

    ``i`` is uniform over the dataset and ``j`` uniform over the images of every other class (exact,
    vectorised, no rejection loop). Same generator seed, same pairs. (The transplant test weighs every
    differing pair the same instead: :func:`aprkit.eval.analyses.transplant.sample_disagreeing_pairs`.)
    """
    labels = _as_index_tensor(labels, "labels")
    if not isinstance(n_pairs, numbers.Integral) or isinstance(n_pairs, bool) or n_pairs < 1:
        raise ValueError(f"n_pairs must be a positive integer, got {n_pairs!r}")
    n_pairs = int(n_pairs)
    if len(labels) < 2 or bool((labels == labels[0]).all()):
        raise OneClass("labels must contain at least two different classes to form pairs of different classes")
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    classes, counts = torch.unique_consecutive(sorted_labels, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    n = len(labels)
    dev = generator_device(generator)  # a generator on an accelerator draws there; the pairs come to the host
    i = torch.randint(n, (n_pairs,), generator=generator, device=dev).cpu()
    cls_pos = torch.searchsorted(classes, labels[i])
    own_start, own_count = starts[cls_pos], counts[cls_pos]
    r = (torch.rand(n_pairs, generator=generator, dtype=torch.float64, device=dev).cpu() * (n - own_count)).long()
    r = torch.minimum(r, n - own_count - 1)
    pos = torch.where(r < own_start, r, r + own_count)
    return i, order[pos]


def phase_amplitude_conflict(
    phase_source: torch.Tensor,
    amplitude_source: torch.Tensor,
    variant: Variant = "full",
    *,
    beta: float = 0.1,
    dims: Dims = "chw",
) -> torch.Tensor:
    """Conflict stimuli ``(..., C, H, W)``: the phase of ``phase_source`` with the amplitude of ``amplitude_source``.

    ``variant="full"`` swaps the whole amplitude spectrum; ``"low_frequency"`` swaps it only inside the
    centred square of half-width ``floor(beta * min(H, W))`` (the rest of the spectrum is the phase
    donor's). Returns the inputs' dtype (uint8 rounded and clamped).
    """
    from ...fourier import low_frequency_swap, swap_amplitude

    if variant == "full":
        return swap_amplitude(phase_source, amplitude_source, dims)
    if variant == "low_frequency":
        return low_frequency_swap(phase_source, amplitude_source, beta, dims)
    raise ValueError(f"variant must be 'full' or 'low_frequency', got {variant!r}")


def patch_grid(shape: Sequence[int], patch_size: int | tuple[int, int]) -> tuple[int, int, int, int]:
    """``(ph, pw, rows, cols)`` of a ``patch_size`` grid over images of ``shape`` (``(..., H, W)``); the patch size must
    divide the image size."""
    if isinstance(patch_size, numbers.Integral) and not isinstance(patch_size, bool):
        ph = pw = int(patch_size)
    elif isinstance(patch_size, (tuple, list)) and len(patch_size) == 2 and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in patch_size):
        ph, pw = (int(v) for v in patch_size)
    else:
        raise TypeError(f"patch_size must be an int or a pair of ints (ph, pw), got {patch_size!r}")
    h, w = shape[-2], shape[-1]
    if ph < 1 or pw < 1 or h % ph or w % pw:
        raise ValueError(
            f"patch_size {(ph, pw)} must be positive and divide the image size (H, W) = {(h, w)}; "
            "choose a divisor (e.g. 8 for 32x32 CIFAR, 16 or 32 for 224x224)"
        )
    return ph, pw, h // ph, w // pw


def patch_permutations(
    n_images: int, shape: Sequence[int], patch_size: int | tuple[int, int], *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random patch orders ``(n_images, gh * gw)`` for images of ``shape`` (..., H, W); one uniform permutation
    per image."""
    _, _, gh, gw = patch_grid(shape, patch_size)
    return torch.rand(n_images, gh * gw, generator=generator, device=generator_device(generator)).argsort(dim=1)


def patch_shuffle(
    images: torch.Tensor,
    patch_size: int | tuple[int, int] = 8,
    *,
    generator: torch.Generator | None = None,
    permutation: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cut each image ``(B, C, H, W)`` (or ``(C, H, W)``) into a ``patch_size`` grid and permute the patches.

    Output patch ``k`` of image ``b`` is input patch ``permutation[b, k]`` (row-major over the grid);
    without ``permutation`` one uniform permutation per image is drawn from ``generator``. Pixels are
    only moved, so dtype, device and the multiset of patches are kept. ``H`` and ``W`` must be
    divisible by the patch size.
    """
    check_image_tensor(images, "images", max_ndim=4, check_finite=False)
    single = images.ndim == 3
    x = images.unsqueeze(0) if single else images
    b, c, h, w = x.shape
    ph, pw, gh, gw = patch_grid(x.shape, patch_size)
    if permutation is None:
        permutation = patch_permutations(b, x.shape, (ph, pw), generator=generator)
    else:
        permutation = torch.as_tensor(permutation)
        if permutation.ndim == 1:
            permutation = permutation.unsqueeze(0).expand(b, -1)
        expected = torch.arange(gh * gw, device=permutation.device).expand(permutation.shape[0], -1)
        if permutation.shape != (b, gh * gw) or not torch.equal(permutation.sort(dim=1).values, expected):
            raise ValueError(
                f"permutation must hold one permutation of range({gh * gw}) per image, shape ({b}, {gh * gw}), "
                f"got shape {tuple(permutation.shape)}"
            )
    perm = permutation.to(x.device).long()
    patches = x.reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, ph, pw)
    patches = patches[torch.arange(b, device=x.device)[:, None], perm]
    out = patches.reshape(b, gh, gw, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
    return out[0] if single else out


# ---------------------------------------------------------------------------------------------
# model-level runner: lazy stimulus datasets + measure_phase_bias


class PhaseConflictDataset(torch.utils.data.Dataset):
    """Conflict stimuli built on the fly: item ``k`` is ``(uint8 (C, H, W), phase donor's label)``.

    Stimulus ``k`` combines the phase of ``base[phase_index[k]]`` with the amplitude of
    ``base[amplitude_index[k]]`` (``phase_amplitude_conflict``); ``phase_labels``/``amplitude_labels``
    hold the donors' classes. ``__getitems__`` builds a whole batch with one batched FFT.
    """

    def __init__(self, base: torch.utils.data.Dataset, phase_index: torch.Tensor, amplitude_index: torch.Tensor,
                 labels: torch.Tensor, variant: Variant = "full", *, beta: float = 0.1, dims: Dims = "chw") -> None:
        if len(phase_index) != len(amplitude_index):
            raise ValueError(f"phase_index and amplitude_index must have the same length, "
                             f"got {len(phase_index)} and {len(amplitude_index)}")
        phase_amplitude_conflict(  # validate
            torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), variant, beta=beta, dims=dims)
        self.base, self.variant, self.beta, self.dims = base, variant, beta, dims
        self.phase_index, self.amplitude_index = phase_index.long(), amplitude_index.long()
        self.phase_labels, self.amplitude_labels = labels[self.phase_index], labels[self.amplitude_index]

    def __len__(self) -> int:
        return len(self.phase_index)

    def __getitems__(self, ks: list[int]) -> list[tuple[torch.Tensor, int]]:
        xp = torch.stack([self.base[int(self.phase_index[k])][0] for k in ks])
        xa = torch.stack([self.base[int(self.amplitude_index[k])][0] for k in ks])
        out = phase_amplitude_conflict(xp, xa, self.variant, beta=self.beta, dims=self.dims)
        return list(zip(out, self.phase_labels[ks].tolist(), strict=True))

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([k])[0]


class PatchShuffleDataset(torch.utils.data.Dataset):
    """Texture-only control: item ``k`` is ``base[indices[k]]`` with its patches permuted (fixed per ``seed``)."""

    def __init__(
        self, base: torch.utils.data.Dataset, indices: torch.Tensor, patch_size: int | tuple[int, int] = 8, *,
        seed: int = 0,
    ) -> None:
        self.base, self.indices, self.patch_size = base, indices.long(), patch_size
        shape = tuple(base[int(indices[0])][0].shape)
        self.permutations = patch_permutations(len(indices), shape, patch_size,
                                               generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, ks: list[int]) -> list[tuple[torch.Tensor, int]]:
        items = [self.base[int(self.indices[k])] for k in ks]
        x = torch.stack([img for img, _ in items])
        out = patch_shuffle(x, self.patch_size, permutation=self.permutations[ks])
        return list(zip(out, [int(lbl) for _, lbl in items], strict=True))

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([k])[0]


def dataset_labels(dataset: torch.utils.data.Dataset) -> torch.Tensor:
    """Labels ``(N,)`` of a dataset: its ``labels``/``targets`` attribute when complete (through ``Subset``,
    :func:`aprkit.data.loading.attribute_labels`), else read item by item."""
    from ..._checks import dataset_len
    from ...data.loading import attribute_labels

    labels = attribute_labels(dataset)
    if labels is not None:
        return labels
    return torch.tensor([int(dataset[i][1]) for i in range(dataset_len(dataset))], dtype=torch.long)


def measure_phase_bias(
    model: nn.Module, data: Any, *, n_pairs: int = 2000, beta: float = 0.1, patch_size: int | tuple[int, int] = 8,
    n_shuffle: int | None = None, dims: Dims = "chw", seed: int = 0, device: str | torch.device = "cpu",
    batch_size: int = 256, num_workers: int = 0, amp: bool = False, channels_last: bool = False, progress: bool = False,
) -> dict[str, Any]:
    """Phase bias (full and low-frequency swap), patch-shuffle accuracy and donor accuracy of ``model``.

    ``data`` is a dataset of ``(uint8 (C, H, W), int label)`` items, an ``(images, labels)`` pair or a
    spec string (``"cifar10:ROOT"``). ``n_pairs`` pairs of different classes are drawn with a generator
    seeded by ``seed``; ``n_shuffle`` images (default ``n_pairs``) get the patch-shuffle control.
    Returns a JSON-serialisable dict with the headline numbers at the top (``phase_bias``,
    ``phase_bias_low_frequency``, ``patch_shuffle_accuracy``, ``clean_accuracy`` of the donor images) and
    the details: ``full`` and ``low_frequency`` (``PhaseBiasResult.to_dict()`` plus ``both_correct``, the
    same over the pairs whose donors are both classified correctly), ``patch_shuffle`` (``accuracy``,
    ``clean_accuracy`` on the same images, ``patch_size``, ``n_images``) and ``settings``.
    """
    from torch.utils.data import Subset

    from ..engine.datasets import as_dataset
    from ..engine.inference import predict

    base = as_dataset(data)
    labels = dataset_labels(base)
    unlabelled = int((labels < 0).sum())
    if unlabelled:  # NO_LABEL would count as a class of its own: pairs of "other classes", donors never correct
        raise ValueError(f"phase bias needs a class label for every image (pairs of different classes, donors scored "
                         f"against their labels): {unlabelled} of {len(labels)} images have none (label -1, "
                         "unlabelled data); pass labelled data")
    g = torch.Generator().manual_seed(seed)
    pi, ai = sample_pairs(labels, n_pairs, generator=g)
    kw: dict[str, Any] = dict(device=device, batch_size=batch_size, num_workers=num_workers, amp=amp,
                              channels_last=channels_last, progress=progress)
    with eval_mode(model):
        donors = torch.unique(torch.cat([pi, ai]))
        clean = predict(model, Subset(base, donors.tolist()), desc="donors", **kw).logits.argmax(1)
        pred_of = torch.full((len(labels),), -1, dtype=torch.long)
        pred_of[donors] = clean
        both_ok = (pred_of[pi] == labels[pi]) & (pred_of[ai] == labels[ai])
        out: dict[str, Any] = {"clean_accuracy": float((clean == labels[donors]).float().mean())}
        for variant in ("full", "low_frequency"):
            ds = PhaseConflictDataset(base, pi, ai, labels, variant, beta=beta, dims=dims)
            dec = predict(model, ds, desc=f"phase-bias {variant}", **kw).logits.argmax(1)
            res = phase_bias(dec, ds.phase_labels, ds.amplitude_labels).to_dict()
            if bool(both_ok.any()):
                res["both_correct"] = phase_bias(
                    dec[both_ok], ds.phase_labels[both_ok], ds.amplitude_labels[both_ok]).to_dict()
            out[variant] = res
        m = min(n_shuffle if n_shuffle is not None else n_pairs, len(labels))
        order = torch.randperm(len(labels), generator=g)
        known = pred_of[order] >= 0
        idx = torch.cat([order[known], order[~known]])[:m]  # donors first: their clean predictions are known
        missing = idx[pred_of[idx] < 0]
        if len(missing):
            fresh = predict(model, Subset(base, missing.tolist()), desc="patch-shuffle clean", **kw)
            pred_of[missing] = fresh.logits.argmax(1)
        plain = pred_of[idx]
        shuffled = PatchShuffleDataset(base, idx, patch_size, seed=seed)
        dec = predict(model, shuffled, desc="patch-shuffle", **kw).logits.argmax(1)
        out["patch_shuffle"] = {
            "patch_size": list(patch_size) if isinstance(patch_size, (tuple, list)) else patch_size,
            "n_images": m,
            "accuracy": float((dec == labels[idx]).float().mean()),
            "clean_accuracy": float((plain == labels[idx]).float().mean()),
        }
        out["phase_bias"] = out["full"]["phase_bias"]
        out["phase_bias_low_frequency"] = out["low_frequency"]["phase_bias"]
        out["patch_shuffle_accuracy"] = out["patch_shuffle"]["accuracy"]
        # pairs are drawn independently, so a small test set repeats some: the distinct ones are the sample's size
        distinct = int(torch.unique(pi * len(labels) + ai).numel())
        out["settings"] = {"n_pairs": n_pairs, "n_distinct_pairs": distinct, "beta": beta, "dims": dims, "seed": seed}
    return out
