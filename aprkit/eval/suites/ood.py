"""Out-of-distribution detection: scores x OOD sets x (AUROC, AUPR-In, AUPR-Out, FPR@95).

Scores (from ``aprkit.eval.metrics.ood_scores``; higher = more in-distribution): MSP, MaxLogit, Energy, ODIN
(temperature scaling plus input perturbation; one extra forward/backward pass per image; always in float32, also
under ``amp``: its step is the sign of an input gradient of softmax outputs divided by T = 1000), Mahalanobis
(penultimate features, class means with a shared covariance) and KNN (distance to the k-th nearest
normalised training feature). Mahalanobis and KNN are fitted on option ``fit`` (a dataset spec or
Dataset; default: the ``train`` split of the in-distribution spec, for kinds that have one: ``cifar10``,
``cifar100``, ``synthetic``; a ``folder:`` spec reads the same images for every split, so the default would fit
on the test images themselves), on a seeded random subset of ``fit_limit`` images (default 10,000); they are
skipped, with a note, when no default training data can be found (a ``fit`` that cannot be opened is an error).
The fit data's identity is part of every score's cache key.

Metrics follow the common convention: in-distribution is the positive class; AUPR-In uses ID as
positive, AUPR-Out uses OOD as positive with negated scores; FPR@95 is the fraction of OOD samples
accepted at the threshold that accepts 95 % of ID samples. Each set's AUROC comes with DeLong's standard error
(``auroc_se``; not averaged over sets, which share the in-distribution scores).

OOD sets: option ``ood``, a list of specs (``"noise:gaussian"``, ``"folder:/path/to/svhn"``) or a
mapping name -> spec/Dataset; default: the built-in synthetic sets (Gaussian, uniform, Rademacher
noise, blobs) at the in-distribution image size. Per-sample scores are cached per (model, dataset).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import torch
from pydantic import Field, field_validator, model_validator
from torch.utils.data import Subset

from ..._batch import block_rows, in_blocks, read_size
from ..._checks import dataset_len
from ..._text import comma_items
from ...data.folder import ResizedDataset
from ...data.noise import NOISE_KINDS, NOISE_VERSION
from ...data.registry import check_spec
from ..engine.cache import cached
from ..engine.data_checks import names_other_classes
from ..engine.datasets import as_dataset, dataset_id
from ..engine.inference import (
    Outputs,
    gather_outputs,
    iter_batches,
    predict,
    to_model_input,
)
from ..engine.models import wants_channels_last
from ..metrics.ood_scores import FEATURE_SCORERS, LOGIT_SCORES
from .base import EvalContext, LimitOption, Measure, ReportSection, Suite, register_suite
from .ood_sets import open_ood

__all__ = ["OODSuite", "OODOptions", "OODResult", "SCORES", "SYNTHETIC_SETS", "compute_scores"]

_FEATURE_SCORES = tuple(FEATURE_SCORERS)
#: every score the suite computes: from the logits, ODIN (input perturbation), from the features
SCORES = (*LOGIT_SCORES, "odin", *_FEATURE_SCORES)
SYNTHETIC_SETS = NOISE_KINDS
#: the OOD sets when none are given (option ``ood`` unset)
_DEFAULT_SETS = tuple(f"noise:{n}" for n in SYNTHETIC_SETS)
_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr@95")


class OODOptions(LimitOption):
    """Options of the OOD suite."""

    ood: Any = None
    """OOD sets: dataset specs (a list or comma-separated text) or a mapping name -> spec/Dataset; else noise sets"""
    ood_limit: int | None = Field(default=None, ge=1)
    """images per OOD set: the first N of a dataset (default: ``limit``, else all of it); the size of a generated
    ``noise:`` set (default: ``limit``, else as many as the in-distribution set has)"""
    ood_scores: list[str] = list(SCORES)
    """the scores to compute (a list or comma-separated text), of msp, max_logit, energy, odin, mahalanobis, knn
    (default: all)"""
    fit: Any = None
    """training data of Mahalanobis/KNN: a spec or Dataset (default: the ``train`` split of a data spec)"""
    fit_limit: int = Field(default=10000, ge=1)
    """fit on a seeded random subset of this many training images"""
    knn_k: int = Field(default=50, ge=1)
    """KNN score: distance to the k-th nearest normalised training feature"""
    odin_temperature: float = Field(default=1000.0, gt=0)
    """ODIN temperature"""
    odin_epsilon: float = Field(default=0.0014, ge=0)
    """ODIN input-perturbation step"""
    ood_resize: bool = True
    """OOD images of another size than the in-distribution ones are resized to it (until they cover it, then a centre
    crop), as Outlier Exposure and energy-OOD bring Textures and Places to 32 px; false: scored at their own size, where
    the AUROC also measures the change of resolution (a set must then hold images of one size), as ODIN and energy-OOD
    score the 36-px TinyImageNet, LSUN and iSUN crops"""

    @field_validator("ood_scores", mode="before")
    @classmethod
    def _score_list(cls, v: Any) -> Any:
        """Comma-separated text (``--set ood_scores=msp,energy``) as a list, as the ``ood`` option takes it."""
        return comma_items(v) if isinstance(v, str) else v

    @field_validator("ood_scores")
    @classmethod
    def _known_scores(cls, v: list[str]) -> list[str]:
        from ..._text import nearest_names

        for s in v:
            if s not in SCORES:
                raise ValueError(f"unknown OOD score {s!r}{nearest_names(s, list(SCORES))}; known: {', '.join(SCORES)}")
        twice = sorted({s for s in v if v.count(s) > 1})
        if twice:
            raise ValueError(f"ood_scores names {', '.join(twice)} more than once; list each score once")
        return v or list(SCORES)

    @model_validator(mode="after")
    def _k_fits(self) -> OODOptions:
        """KNN's k within the fit set's cap, checked before any suite runs (it failed after the others had)."""
        if "knn" in self.ood_scores and self.knn_k > self.fit_limit:
            raise ValueError(f"knn_k={self.knn_k} needs at least that many fit images, but fit_limit={self.fit_limit}; "
                             "lower knn_k (--set knn_k=...) or raise fit_limit, or leave knn out of ood_scores")
        return self


class OODResult(TypedDict, total=False):
    """What the OOD suite returns (metrics as fractions in [0, 1])."""

    n_in: int  # in-distribution images
    scores: list[str]  # the scores computed
    sets: dict[str, dict[str, Any]]  # OOD set -> n and score -> auroc, auroc_se, aupr_in, aupr_out, fpr@95
    histograms: dict[str, dict[str, dict]]  # OOD set -> score -> range, in, out (histogram counts)
    note: str | None  # why a score was skipped
    in_accuracy: float  # accuracy on the in-distribution set (when it has labels in the model's classes: not for a
    # dataset naming another number of classes than the model outputs)
    mean: dict[str, dict[str, float]]  # score -> the metrics' means over the OOD sets
    caveats: list[str]  # an ood_limit that took only the first classes of a class-sorted OOD set (only then)


def _ood_sets(opts: OODOptions) -> dict[str, Any]:
    sets = opts.ood or list(_DEFAULT_SETS)
    if isinstance(sets, str):
        sets = comma_items(sets)
    if isinstance(sets, Mapping):
        return dict(sets)
    for s in sets:
        if not isinstance(s, str):
            raise TypeError("option 'ood' entries must be dataset specs; pass a mapping name -> Dataset for objects, "
                            f"got {type(s).__name__}")
    for s in sets:  # a misspelt kind is refused before the fit pass (it was only after it, minutes later)
        check_spec(s)
    repeated = sorted({s for s in sets if sets.count(s) > 1})
    if repeated:
        raise ValueError(f"option 'ood' lists {', '.join(repeated)} more than once")
    out = {_set_name(s, sets): s for s in sets}
    if len(out) < len(sets):
        raise ValueError(f"OOD sets {sets} give repeated names; pass a mapping name -> spec instead")
    return out


def _set_name(spec: str, specs: list[str]) -> str:
    """A set's name: the noise kind, else its folder's name, with as many parent folders as make it unique among
    ``specs`` (``svhn/test`` and ``lsun/test`` rather than two ``test``)."""
    if spec.startswith("noise:"):
        return spec.split(":", 1)[1]

    def tail(s: str, k: int) -> str:
        parts = [p for p in Path(s.split(":", 1)[-1]).parts if p not in ("/", "")]
        return "/".join(parts[-k:]) if parts else s

    others = [s for s in specs if s != spec and not s.startswith("noise:")]
    for k in range(1, len(Path(spec.split(":", 1)[-1]).parts) + 1):
        name = tail(spec, k)
        if all(tail(o, k) != name for o in others):
            return name
    return spec


def _fit_source(data: Any, opts: OODOptions) -> tuple[Any, str | None]:
    """The training data of Mahalanobis/KNN (option ``fit``, else the ``train`` split of a data spec that has one),
    or None and why not."""
    from aprkit.data import has_splits

    if opts.fit is not None:
        return opts.fit, None
    if not isinstance(data, str):
        return None, ("no training data for Mahalanobis/KNN (set the option fit: aprkit eval --fit SPEC, --set "
                      "fit=SPEC)")
    if not has_splits(data):
        return None, (f"Mahalanobis/KNN skipped: {data.split(':', 1)[0]}: data has no separate training split (it "
                      "reads the same images for every split, so they would be fitted on the test images); set the "
                      "option fit to a training set, e.g. folder:/path/to/train (aprkit eval --fit SPEC, --set "
                      "fit=SPEC)")
    return data, None


class _FitUnavailable(Exception):
    """The Mahalanobis/KNN fit data could not be opened (the message says why)."""


def _open_fit(fit: Any, named: bool) -> Any:
    """The training split of ``fit`` as a dataset. When it cannot be opened: a fit the user ``named`` (option
    ``fit``) is a ``ValueError``; the default (the data's train split) raises :class:`_FitUnavailable` (skipped, with
    a note)."""
    try:
        return as_dataset(fit, "train")
    except (FileNotFoundError, ValueError) as err:
        if named:
            raise ValueError(f"option fit={fit!r} (the Mahalanobis/KNN training data) cannot be opened: "
                             f"{err}") from None
        raise _FitUnavailable(f"Mahalanobis/KNN skipped: no training split found ({err})") from None


def _fit_scorers(ctx: EvalContext, ds: Any, opts: OODOptions) -> tuple[dict[str, Any], list[str]]:
    """Mahalanobis/KNN fitted on the training features of the dataset ``ds``, and why one could not be (features
    without spread around their class means give Mahalanobis no covariance: it is left out, with that note)."""
    from ..metrics import ood_scores as S

    fit_limit = opts.fit_limit
    if dataset_len(ds) > fit_limit:  # a seeded random subset: training folders are often sorted by class
        g = torch.Generator().manual_seed(ctx.seed)
        ds = Subset(ds, sorted(torch.randperm(dataset_len(ds), generator=g)[:fit_limit].tolist()))
    out = predict(ctx.model, ds, device=ctx.device, batch_size=ctx.batch_size, num_workers=ctx.num_workers, amp=ctx.amp,
                  channels_last=ctx.channels_last, features=True, progress=ctx.progress, desc="ood fit",
                  labelled="mahalanobis" in opts.ood_scores)  # KNN reads no labels: a fit set of other classes does
    features = out.features
    if features is None:  # predict(features=True) always returns them
        raise RuntimeError("predict returned no features for the Mahalanobis/KNN fit")
    scorers: dict[str, Any] = {}
    notes: list[str] = []
    if "mahalanobis" in opts.ood_scores:
        unlabelled = int((out.labels < 0).sum())
        if unlabelled:  # class means need classes: the other scores are still computed (it stopped the whole suite)
            notes.append(f"Mahalanobis not computed: {unlabelled} of {len(out.labels)} images of the fit set have no "
                         "label (it fits class means); give labelled fit data")
        else:
            try:
                scorers["mahalanobis"] = S.MahalanobisScorer().fit(features, out.labels)
            except S.DegenerateFit as err:
                notes.append(f"Mahalanobis not computed: {err}")
    if "knn" in opts.ood_scores:
        scorers["knn"] = S.KNNScorer(k=opts.knn_k).fit(features)
    return scorers, notes


def _odin_scores(ctx: EvalContext, dataset: Any, limit: int | None, opts: OODOptions) -> torch.Tensor:
    """ODIN scores ``(N,)`` in dataset order; under ``torchrun`` each rank scores its share and the shares are
    gathered (as ``predict`` does), so the scores do not depend on the world size."""
    from ..metrics import ood_scores as S

    T, eps = opts.odin_temperature, opts.odin_epsilon
    parts, labels, indices = [], [], []
    block = block_rows(ctx.model, ctx.device)  # forward passes of CPU_BLOCK rows on the CPU (aprkit._batch)
    batches = iter_batches(dataset, read_size(ctx.batch_size, block), num_workers=ctx.num_workers, limit=limit,
                           device=ctx.device)
    for images, y, idx in batches:
        x = to_model_input(images, ctx.device, wants_channels_last(ctx.model, ctx.channels_last))
        s = in_blocks(lambda xb: S.odin(ctx.model, xb, temperature=T, epsilon=eps), x, block)
        parts.append(s.detach().double().cpu())  # float32 tied scores at high T
        labels.append(y)
        indices.append(idx)
    n = dataset_len(dataset) if limit is None else min(dataset_len(dataset), int(limit))
    scores = Outputs(torch.cat(parts)[:, None], torch.cat(labels))
    return gather_outputs(scores, torch.cat(indices), n).logits[:, 0]


def compute_scores(ctx: EvalContext, dataset: Any, wanted: list[str], scorers: dict[str, Any], limit: int | None,
                   desc: str, opts: OODOptions | None = None, labelled: bool = True) -> dict[str, list[float]]:
    """Per-sample OOD scores ``{score name: [N floats]}`` of ``dataset`` (higher = more in-distribution); ODIN
    uses the temperature and step of ``opts`` (default: :class:`OODOptions`' defaults). ``labelled=False`` for an
    OOD set: its labels (e.g. a folder's own classes, more than the model has) are neither checked nor used."""
    need_feats = any(s in scorers for s in wanted)
    out = predict(ctx.model, dataset, device=ctx.device, batch_size=ctx.batch_size, num_workers=ctx.num_workers,
                  amp=ctx.amp, channels_last=ctx.channels_last, features=need_feats, limit=limit,
                  progress=ctx.progress, desc=desc, labelled=labelled)
    result: dict[str, list[float]] = {}
    for name in wanted:
        if name in LOGIT_SCORES:
            result[name] = LOGIT_SCORES[name](out.logits).tolist()
        elif name == "odin":
            result[name] = _odin_scores(ctx, dataset, limit, opts or OODOptions()).tolist()
        elif name in scorers:
            result[name] = scorers[name].score(out.features).tolist()
    in_classes = not names_other_classes(dataset, out.logits.shape[1])
    if out.labels.numel() and bool((out.labels >= 0).all()) and in_classes:  # labels in the model's classes
        result["_accuracy"] = [int((out.logits.argmax(1) == out.labels).sum()) / out.labels.numel()]
    return result


def _histograms(s_in: list[float], s_out: list[float], bins: int = 30) -> dict:
    lo, hi = min(min(s_in), min(s_out)), max(max(s_in), max(s_out))
    hi = hi if hi > lo else lo + 1.0
    h = lambda v: torch.histc(torch.tensor(v, dtype=torch.float64), bins=bins, min=lo, max=hi).tolist()  # noqa: E731
    return {"range": [lo, hi], "in": h(s_in), "out": h(s_out)}


#: the versions of the scores of in-distribution (labelled) and OOD sets (v5: energy in float64, float32 tied scores at
#: high T; v6, the in-distribution data only: no accuracy for data naming other classes, exact fractions; 7 / 6: ODIN
#: steps a pixel of zero gradient too, as the original code; 8 / 7: ODIN scores kept in float64, as MSP's; 9 / 8: a
#: distilled model's Mahalanobis/KNN features are the mean of its heads' inputs, not the distillation head's; 10 / 9: an
#: all-zero feature's KNN distance is 1, not sqrt(2); 11 / 10: Mahalanobis on features less the fitted ones' mean)
SCORES_VERSION = (11, 10)


@register_suite("ood")
class OODSuite(Suite[OODOptions]):
    """OOD detection with six scores against user and synthetic OOD sets."""

    Options = OODOptions
    version = "/".join(map(str, SCORES_VERSION)) + f"/noise{NOISE_VERSION}"  # the default sets are the noise sets
    setup_keys = ("ood", "ood_limit", "ood_resize", "fit", "fit_limit", "knn_k", "odin_temperature", "odin_epsilon")

    @classmethod
    def setup_text(cls, options: Mapping[str, Any]) -> str:
        """As :meth:`Suite.setup_text`, with no ``ood`` read as the default synthetic sets it means and a mapping
        of named sets in name order."""
        sets = options.get("ood") or list(_DEFAULT_SETS)
        if isinstance(sets, Mapping):
            sets = [f"{k}={v}" for k, v in sorted((str(k), str(v)) for k, v in sets.items())]
        return super().setup_text({**options, "ood": sets})

    def run(self, ctx: EvalContext, data: Any) -> OODResult:
        from .. import metrics as M

        opts = self.options(ctx)
        wanted = list(opts.ood_scores)
        limit = opts.limit
        ood_limit = opts.ood_limit or limit
        in_ds = as_dataset(data)
        n_in = dataset_len(in_ds) if limit is None else min(dataset_len(in_ds), int(limit))
        sets = _ood_sets(opts)
        # the options of scores asked for only: another knn_k leaves the energy scores' entry as it was
        odin_opts = ({"odin_temperature": opts.odin_temperature, "odin_epsilon": opts.odin_epsilon}
                     if "odin" in wanted else {})
        fit, fit_note = _fit_source(data, opts) if any(s in wanted for s in _FEATURE_SCORES) else (None, None)
        state: dict[str, Any] = {"note": fit_note, "fit": fit}

        def fit_opts() -> dict[str, Any]:
            # the effective fit data (also when it defaults to the data spec's train split) keys every score
            f = state["fit"]
            return {"fit": dataset_id(f, "train") if f is not None else None,
                    **({"fit_limit": opts.fit_limit} if f is not None else {}),
                    **({"knn_k": opts.knn_k} if "knn" in wanted else {})}

        def scores_for(name: str, ds: Any, ds_id: str, lim: int | None, labelled: bool,
                       made: dict | None = None) -> dict[str, list[float]]:
            def compute() -> dict:
                if "scorers" not in state and state["fit"] is not None:
                    # opened only when a score is computed, not on a cache hit
                    state["scorers"], state["fit_notes"] = _fit_scorers(
                        ctx, _open_fit(state["fit"], opts.fit is not None), opts)
                got = compute_scores(ctx, ds, wanted, state.get("scorers", {}), lim, f"ood {name}", opts,
                                     labelled=labelled)
                if state.get("fit_notes"):  # cached with the scores: a cache hit says why one is missing too
                    got["_notes"] = list(state["fit_notes"])
                return got

            def lookup() -> dict[str, list[float]]:  # SCORES_VERSION says what changed
                return cached(ctx, "ood-scores", ds_id, compute, scores=wanted, set_limit=lim, labelled=labelled,
                              v=SCORES_VERSION[0] if labelled else SCORES_VERSION[1], made=made, **odin_opts,
                              **fit_opts())

            try:
                return lookup()
            except _FitUnavailable as why:  # scores without the fit are keyed without it (and computed anew once
                state["fit"], state["note"] = None, str(why)  # the data is there)
                return lookup()

        s_in = scores_for("in", in_ds, dataset_id(data), limit, True)
        present = [s for s in wanted if s in s_in]
        fit_note = "; ".join(map(str, s_in["_notes"])) if "_notes" in s_in else None
        result: OODResult = {"n_in": n_in, "scores": present, "sets": {}, "histograms": {},
                             "note": state.get("note") or fit_note}
        if "_accuracy" in s_in:
            result["in_accuracy"] = s_in["_accuracy"][0]
        missing = [s for s in wanted if s not in present]
        if missing and result["note"] is None:
            result["note"] = f"scores not computed: {', '.join(missing)} (no training data to fit them)"
        if missing:  # said where it happens too: a run without --out has no report, and the scores were just gone
            warnings.warn(f"OOD scores {', '.join(missing)} left out: {result['note']}", RuntimeWarning, stacklevel=2)
        if not present:  # only Mahalanobis/KNN asked for, and nothing to fit them on: nothing would be measured
            raise ValueError(f"no OOD score could be computed: {result['note']}")
        for name, spec in sets.items():
            n = ood_limit or n_in
            ds, size_note, caveat = open_ood(spec, in_ds, n=int(n), seed=ctx.seed, resize=opts.ood_resize,
                                             limit=ood_limit)
            if caveat:  # kept with the numbers (results.json, the report's header), not only warned
                result.setdefault("caveats", []).append(caveat)
            made = None  # generated or resized to the in-distribution shape: that keys them (the seed is in every key)
            if isinstance(spec, str) and spec.startswith("noise:"):
                made = {"shape": list(ds[0][0].shape[-3:]), "n": int(n)}
            elif opts.ood_resize:
                made = {"resized": list(ds[0][0].shape[-2:]), "v": ResizedDataset.version}
            s_out = scores_for(name, ds, dataset_id(spec), ood_limit, False, made)
            result["sets"][name] = ({"n": len(s_out[present[0]])}
                                    | size_note
                                    | {s: M.ood_metrics(s_in[s], s_out[s]) for s in present})
            result["histograms"][name] = {s: _histograms(s_in[s], s_out[s]) for s in present}
        result["mean"] = {
            s: {m: sum(r[s][m] for r in result["sets"].values()) / max(1, len(result["sets"])) for m in _METRICS}
            for s in present
        }
        return result

    def headline(self, result: Mapping[str, Any]) -> list[Measure]:
        return [Measure(f"ood_auroc_{score}", f"OOD AUROC ({score}, mean over OOD sets)", (m or {}).get("auroc"),
                        percent=True, higher_is_better=True, digits=1)  # as the section shows it (its SE: tenths)
                for score, m in (result.get("mean") or {}).items()]

    def report(self, results: Mapping[str, dict], fig_dir: Path) -> ReportSection:
        from .ood_report import ood_section

        return ood_section(results, fig_dir, _METRICS)
