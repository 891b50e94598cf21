"""Shape-vs-texture bias on the Geirhos et al. (ICLR 2019) cue-conflict stimuli.

Each stimulus has the shape of one of 16 categories and the texture of another. An ImageNet model's
1000-class output is mapped to the 16 categories as in the reference code (texture-vs-shape /
model-vs-human ``human_categories.py``): softmax, then the mean probability over each category's
ImageNet indices (207 indices in all), argmax over the 16. Models that already output 16 classes (in
the sorted order of ``CATEGORIES``) are taken as they are.

Shape bias = shape decisions / (shape decisions + texture decisions), over the stimuli whose shape and
texture classes differ. Published reference values: humans about 0.96, ResNet-50 (ImageNet) about 0.22.

``read_decisions_csv`` / ``shape_bias_from_csv`` read the published raw decision files of texture-vs-shape
and model-vs-human as they are (``subj, session, trial, rt, object_response, category, condition,
imagename``): shape = ``category``, texture = the ``<shape>N-<texture>M.png`` end of ``imagename``, and
``object_response = na`` (no answer) is an abstention, neither shape nor texture.

Run it as the ``shape-bias`` suite: ``aprkit eval --suite shape-bias --data shape-bias=cue-conflict:DIR``.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ...data.cue_conflict import CUE_CONFLICT_CATEGORIES, CueConflict
from ...models.base import eval_mode

__all__ = [
    "CATEGORIES",
    "IMAGENET_CATEGORY_INDICES",
    "REFERENCE_SHAPE_BIAS",
    "ShapeBiasResult",
    "imagenet_to_16",
    "conflicting",
    "cue_conflict_decisions",
    "check_categories",
    "decisions_in",
    "shape_bias",
    "predict_decisions",
    "measure_shape_bias",
    "ABSTENTION",
    "read_decisions_csv",
    "shape_bias_from_csv",
    "reference_lines",
]

#: the ``object_response`` of a trial without an answer in the raw decision files
ABSTENTION = "na"

CATEGORIES: tuple[str, ...] = CUE_CONFLICT_CATEGORIES

#: ImageNet-1k indices of each of the 16 categories, as published by Geirhos et al. (207 in all)
IMAGENET_CATEGORY_INDICES: dict[str, tuple[int, ...]] = {
    "airplane": (404,),
    "bear": (294, 295, 296, 297),
    "bicycle": (444, 671),
    "bird": (8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89, 90, 91, 92,
             93, 94, 95, 96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135, 136, 137, 138, 139, 140,
             141, 142, 143, 144, 145),
    "boat": (472, 554, 625, 814, 914),
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    "car": (436, 511, 817),
    "cat": (281, 282, 283, 284, 285, 286),
    "chair": (423, 559, 765, 857),
    "clock": (409, 530, 892),
    "dog": tuple(range(152, 192)) + tuple(range(193, 204)) + tuple(range(205, 227)) + tuple(range(228, 242))
    + (243, 244, 245, 246, 247, 248, 249, 250, 252, 253, 254, 255, 256, 257, 259, 261, 262, 263, 265, 266, 267, 268),
    "elephant": (385, 386),
    "keyboard": (508, 878),
    "knife": (499,),
    "oven": (766,),
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}

#: published shape bias on the cue-conflict set (Geirhos et al. 2019), drawn as guides in reports
REFERENCE_SHAPE_BIAS: dict[str, float] = {"humans": 0.96, "ResNet-50": 0.22}


def _aggregation_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(1000, 16)`` matrix whose column ``k`` averages the probabilities of category ``k``'s indices."""
    w = torch.zeros(1000, len(CATEGORIES), dtype=dtype, device=device)
    for k, cat in enumerate(CATEGORIES):
        idx = torch.tensor(IMAGENET_CATEGORY_INDICES[cat], device=device)
        w[idx, k] = 1.0 / len(idx)
    return w


def imagenet_to_16(outputs: torch.Tensor, *, probabilities: bool = False) -> torch.Tensor:
    """Map model outputs ``(B, 1000)`` (or ``(B, 16)``) to 16-category probabilities ``(B, 16)``.

    With ``probabilities=False`` (default) the outputs are logits and go through a softmax first. For
    1000 classes each category gets the mean probability over its ImageNet indices (the rows need not
    sum to 1); 16-class outputs are returned as probabilities over ``CATEGORIES`` directly.
    """
    if not isinstance(outputs, torch.Tensor) or not outputs.is_floating_point():
        got = getattr(outputs, "dtype", type(outputs).__name__)
        raise TypeError(f"outputs must be a floating torch.Tensor (B, 1000) or (B, 16), got {got}")
    if outputs.ndim != 2 or outputs.shape[1] not in (1000, len(CATEGORIES)):
        raise ValueError(
            "outputs must have shape (B, 1000) (ImageNet) or (B, 16) (cue-conflict categories), "
            f"got {tuple(outputs.shape)}"
        )
    if not bool(torch.isfinite(outputs).all()):
        raise ValueError("outputs contain NaN or infinite values (check the model's logits)")
    x = outputs.float() if outputs.dtype in (torch.float16, torch.bfloat16) else outputs
    p = x if probabilities else torch.softmax(x, dim=1)
    if p.shape[1] == len(CATEGORIES):
        return p
    return p @ _aggregation_matrix(p.device, p.dtype)


def cue_conflict_decisions(outputs: torch.Tensor, *, probabilities: bool = False) -> torch.Tensor:
    """Decision per image, an index into ``CATEGORIES`` (int64 ``(B,)``), from outputs ``(B, 1000|16)``."""
    return imagenet_to_16(outputs, probabilities=probabilities).argmax(dim=1)


def _as_label_indices(values: object, name: str, categories: Sequence[str], abstain: bool = False) -> torch.Tensor:
    """Strings or integer indices (list, tuple, numpy array or tensor) -> int64 tensor ``(N,)``; with
    ``abstain``, ``ABSTENTION`` (``"na"``) and -1 become -1."""
    if isinstance(values, torch.Tensor):
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"{name} must hold category names or integer indices, got a tensor of dtype {values.dtype}")
        if values.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional (one entry per stimulus), "
                             f"got shape {tuple(values.shape)}")
        seq = values.tolist()
    elif isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of category names or indices, got {type(values).__name__}")
    else:
        seq = list(values.tolist() if hasattr(values, "tolist") else values)
    index = {c: i for i, c in enumerate(categories)}
    out: list[int] = []
    bad: list[str] = []
    for v in seq:
        if isinstance(v, numbers.Integral) and not isinstance(v, bool):  # NumPy integers in a list too
            v = int(v)
        if abstain and (v == ABSTENTION or (isinstance(v, int) and v == -1)):
            out.append(-1)
        elif isinstance(v, str):
            if v in index:
                out.append(index[v])
            else:
                bad.append(repr(v))
        elif isinstance(v, int) and not isinstance(v, bool):
            if 0 <= v < len(categories):
                out.append(v)
            else:
                bad.append(str(v))
        else:
            raise TypeError(f"{name} must hold category names (str) or integer indices, got {type(v).__name__} {v!r}")
    if bad:
        more = f" ... ({len(bad)} in all)" if len(bad) > 10 else ""
        raise ValueError(
            f"{name} has unknown categories {', '.join(sorted(set(bad))[:10])}{more}; expected names in "
            f"{', '.join(map(str, categories))} or indices 0..{len(categories) - 1}"
        )
    return torch.tensor(out, dtype=torch.long)


@dataclass
class ShapeBiasResult:
    """Shape bias and its parts; rates are over the conflicting stimuli (shape != texture).

    ``shape_match`` / ``texture_match`` divide by the conflicting stimuli only; model-vs-human's
    ``fraction-correct-shape`` / ``-texture`` divide by all stimuli, the 80 with shape == texture included, so theirs
    are smaller by that share (``shape_bias`` is the same in both).

    ``per_category`` maps each shape category to its own shape bias (NaN where the model made no shape
    or texture decision for it); ``per_category_counts`` holds ``(shape decisions, texture decisions, n)``.
    """

    shape_bias: float
    shape_match: float
    texture_match: float
    n_stimuli: int
    n_excluded: int
    n_shape_decisions: int
    n_texture_decisions: int
    per_category: dict[str, float] = field(default_factory=dict)
    per_category_counts: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    n_abstentions: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (NaN becomes ``None``)."""
        d = asdict(self)
        d["shape_bias"] = None if math.isnan(self.shape_bias) else self.shape_bias
        d["per_category"] = {k: (None if math.isnan(v) else v) for k, v in self.per_category.items()}
        d["per_category_counts"] = {k: list(v) for k, v in self.per_category_counts.items()}
        return d


def conflicting(decisions: torch.Tensor, cue_a: torch.Tensor, cue_b: torch.Tensor, names: tuple[str, str], unit: str,
                if_none: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the items whose two cues name different classes (shared by shape bias and phase bias).

    All three are ``(N,)`` class indices. Returns ``(keep (N,) bool, decisions, cue_a, cue_b)``, the last
    three restricted to the kept items; raises on unequal lengths and, with ``if_none``, when nothing is kept.
    """
    if not len(decisions) == len(cue_a) == len(cue_b):
        raise ValueError(
            f"decisions, {names[0]} and {names[1]} need one entry per {unit}, "
            f"got lengths {len(decisions)}, {len(cue_a)}, {len(cue_b)}"
        )
    keep = cue_a != cue_b
    if not bool(keep.any()):
        raise ValueError(if_none)
    return keep, decisions[keep], cue_a[keep], cue_b[keep]


def shape_bias(
    decisions: object, shape_labels: object, texture_labels: object, categories: Sequence[str] = CATEGORIES
) -> ShapeBiasResult:
    """Shape bias of ``decisions`` on cue-conflict stimuli.

    All three arguments have one entry per stimulus: category names (``"cat"``) or indices into
    ``categories``; a decision may be ``"na"`` (or -1), an abstention that counts as neither shape nor
    texture. Stimuli whose shape and texture agree are dropped; then shape match = fraction of decisions
    equal to the shape class, texture match = fraction equal to the texture class, and shape bias = shape
    decisions / (shape + texture decisions) (NaN if there are none).
    """
    cats = tuple(categories)
    d = _as_label_indices(decisions, "decisions", cats, abstain=True)
    s = _as_label_indices(shape_labels, "shape_labels", cats)
    t = _as_label_indices(texture_labels, "texture_labels", cats)
    keep, d, s, t = conflicting(d, s, t, ("shape_labels", "texture_labels"), "stimulus",
                                "no conflicting stimuli: every stimulus has shape == texture (these are excluded)")
    n = len(d)
    hit_s, hit_t = d == s, d == t
    n_s, n_t = int(hit_s.sum()), int(hit_t.sum())
    per_cat: dict[str, float] = {}
    counts: dict[str, tuple[int, int, int]] = {}
    for k, cat in enumerate(cats):
        m = s == k
        if not bool(m.any()):
            continue
        cs, ct = int(hit_s[m].sum()), int(hit_t[m].sum())
        counts[cat] = (cs, ct, int(m.sum()))
        per_cat[cat] = cs / (cs + ct) if cs + ct else float("nan")
    return ShapeBiasResult(
        shape_bias=n_s / (n_s + n_t) if n_s + n_t else float("nan"),
        shape_match=n_s / n,
        texture_match=n_t / n,
        n_stimuli=n,
        n_excluded=int((~keep).sum()),
        n_shape_decisions=n_s,
        n_texture_decisions=n_t,
        per_category=per_cat,
        per_category_counts=counts,
        n_abstentions=int((d < 0).sum()),
    )


_CSV_COLUMNS = ("subj", "session", "trial", "rt", "object_response", "category", "condition", "imagename")


def read_decisions_csv(path: str | os.PathLike[str]) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Raw decision CSV -> ``{subject: (decisions, shape names, texture names)}`` in file order.

    Raises ``ValueError`` naming the file for missing columns or an ``imagename`` without the
    ``<shape>N-<texture>M.png`` ending.
    """
    import csv
    from pathlib import Path

    from ...data.cue_conflict import parse_stimulus_name

    path = Path(path)
    out: dict[str, tuple[list[str], list[str], list[str]]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in ("subj", "object_response", "category", "imagename") if c not in columns]
        if missing:
            raise ValueError(f"{path} lacks the columns {', '.join(missing)}; expected the raw decision format "
                             f"{', '.join(_CSV_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            try:
                _, texture = parse_stimulus_name(row["imagename"].rsplit("_", 1)[-1])
            except ValueError:
                raise ValueError(f"{path}:{line}: imagename {row['imagename']!r} does not end in "
                                 "'<shape>N-<texture>M.png'") from None
            subject, response, shape = row["subj"].strip(), row["object_response"].strip(), row["category"].strip()
            for column, value in (("object_response", response), ("category", shape), ("imagename texture", texture)):
                if value not in CUE_CONFLICT_CATEGORIES and not (column == "object_response" and value == ABSTENTION):
                    raise ValueError(f"{path}:{line}: subject {subject!r}: {column} {value!r} is not one of the 16 "
                                     f"categories ({', '.join(CUE_CONFLICT_CATEGORIES)})"
                                     + (f" or {ABSTENTION!r} (no answer)" if column == "object_response" else ""))
            d, s, t = out.setdefault(subject, ([], [], []))
            d.append(response)
            s.append(shape)
            t.append(texture)
    if not out:
        raise ValueError(f"{path} holds no decisions; expected rows of {', '.join(_CSV_COLUMNS)}")
    return out


def shape_bias_from_csv(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> dict[str, ShapeBiasResult]:
    """Per-subject shape bias from one or more raw decision CSVs (a path, a folder of ``*.csv`` or a list)."""
    from pathlib import Path

    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        files = sorted(p.glob("*.csv")) if p.is_dir() else [p]
    else:
        files = [Path(x) for x in paths]
    if not files:
        raise ValueError(f"no decision CSVs found in {paths}")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} does not exist; expected raw decision CSVs (model-vs-human's "
                                f"format: {', '.join(_CSV_COLUMNS)}), a folder of them or a list of files")
    merged: dict[str, tuple[list[str], list[str], list[str]]] = {}
    for f in files:
        for subj, (d, s, t) in read_decisions_csv(f).items():
            md, ms, mt = merged.setdefault(subj, ([], [], []))
            md += d
            ms += s
            mt += t
    return {subj: shape_bias(d, s, t) for subj, (d, s, t) in merged.items()}


def reference_lines(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> dict[str, float]:
    """Guide lines for shape-bias plots from raw decision CSVs: ``"humans (N subjects)"``, the shape bias of the
    ``subject-*`` trials pooled (their shape decisions over their shape plus texture decisions, as model-vs-human's
    shape-bias plot analyses its human decision makers together; the mean of per-subject biases differs by about
    0.1 pp on its data), then every other subject (a model) by name."""
    per = shape_bias_from_csv(paths)
    humans = [r for k, r in per.items() if k.startswith("subject-") and not math.isnan(r.shape_bias)]
    n_shape = sum(r.n_shape_decisions for r in humans)
    lines = ({f"humans ({len(humans)} subjects)": n_shape / (n_shape + sum(r.n_texture_decisions for r in humans))}
             if humans else {})
    lines.update({k: r.shape_bias for k, r in per.items()
                  if not k.startswith("subject-") and not math.isnan(r.shape_bias)})
    return lines


def predict_decisions(model: nn.Module, dataset: torch.utils.data.Dataset, **kwargs: Any) -> torch.Tensor:
    """16-category decisions ``(N,)`` of ``model`` on a dataset of ``(uint8 (C, H, W), label)`` items.

    Images reach the model as float ``[0, 1]`` ``(B, C, H, W)``; its ``(B, 1000)`` or ``(B, 16)`` logits
    are mapped by ``cue_conflict_decisions``. Keyword arguments go to ``aprkit.eval.engine.inference.predict``
    (``device``, ``batch_size``, ``num_workers``, ``amp``, ``channels_last``, ``progress``).
    """
    from ..engine.inference import predict
    from ..engine.logit_checks import OutputWidthError

    kwargs.setdefault("desc", "cue-conflict")
    # the stimuli's shape labels are not the model's classes: only the output width is checked (first batch)
    kwargs.setdefault("num_classes", (1000, len(CATEGORIES)))
    kwargs.setdefault("labelled", False)
    try:
        outputs = predict(model, dataset, **kwargs)
    except OutputWidthError as err:
        raise OutputWidthError(
            f"{err}: shape bias maps ImageNet's 1000 outputs (or 16 category ones) to the 16 categories, and no other "
            "label set has such a mapping (CIFAR-10's lacks 3 of its classes); for a CIFAR model measure phase "
            "reliance with the phase-bias suite, or the cue-conflict suite on stimuli of its own classes") from None
    return cue_conflict_decisions(outputs.logits)


def check_categories(categories: Sequence[str]) -> tuple[str, ...]:
    """``categories`` (a ``CueConflict``'s list) as a tuple; ``ValueError`` for one that is not among the 16 the
    ImageNet outputs map to (no decision can name it)."""
    cats = tuple(categories)
    unknown = [c for c in cats if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"cue-conflict categories {unknown} are not among the 16 that ImageNet outputs map to "
                         f"({', '.join(CATEGORIES)}); shape bias from a classifier needs those names")
    return cats


def decisions_in(decisions: torch.Tensor, categories: Sequence[str]) -> torch.Tensor:
    """Decisions ``(N,)`` over ``CATEGORIES`` (``predict_decisions``) as indices into ``categories``, a
    dataset's own list (another order or a subset of the 16); a decision for a category outside it becomes -1
    (neither shape nor texture). A category that is not one of the 16 is refused: no decision can name it."""
    cats = check_categories(categories)
    if cats == CATEGORIES:
        return decisions
    lookup = torch.tensor([cats.index(c) if c in cats else -1 for c in CATEGORIES], dtype=torch.long)
    d = decisions.long().cpu()
    return torch.where(d < 0, -1, lookup[d.clamp(min=0)])  # an abstention (-1) stays one


def measure_shape_bias(
    model: nn.Module, stimuli: str | os.PathLike[str] | CueConflict, **kwargs: Any
) -> ShapeBiasResult:
    """Shape bias of ``model`` on ``stimuli`` (a cue-conflict folder path or a ``CueConflict`` dataset).

    Keyword arguments go to ``predict_decisions`` (``device``, ``batch_size``, ``progress``, ...).
    """
    ds = stimuli if isinstance(stimuli, CueConflict) else CueConflict(stimuli)
    check_categories(ds.categories)  # before inference
    with eval_mode(model):
        decisions = predict_decisions(model, ds, **kwargs)
    return shape_bias(decisions_in(decisions, ds.categories), ds.shape_labels, ds.texture_labels, ds.categories)
