"""``evaluate(model, suite=..., data=...) -> Results``: run evaluation suites with caching and resume.

Every finished unit (a corruption cell, a set of OOD scores, a whole suite) is stored in a
:class:`~aprkit.eval.cache.ResultCache` under ``out_dir/cache`` (or ``cache_dir``), keyed by model id,
dataset and options, so a killed run picks up where it stopped (``resume=True``) and no finished
number is lost. Without ``out_dir``/``cache_dir`` nothing is written (an in-memory cache is used).

Under ``torchrun`` every rank runs the same code; batches are sharded by ``aprkit.eval.inference``,
results are gathered, and only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .config import check_suite_options
from .cache import MemoryCache, ResultCache, atomic_write_json, make_key, model_fingerprint, nested_get, to_jsonable
from .inference import _dist_info, dataset_id, is_main_process, resolve_device
from .suites import EvalContext, load_suites

__all__ = ["evaluate", "Results", "load_eval_model", "SUITE_VERSION"]

#: bump when a suite's cached whole-suite result format changes
SUITE_VERSION = 1


@dataclass
class Results:
    """Results of one or more models: ``models[model_id][suite_name] -> dict`` plus run metadata."""

    models: dict[str, dict[str, dict]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def model_ids(self) -> list[str]:
        return list(self.models)

    def __getitem__(self, suite: str) -> dict:
        """``results["corruption"]`` for a single-model run (use ``results.models[id][suite]`` otherwise)."""
        if len(self.models) != 1:
            raise KeyError(f"this Results holds {len(self.models)} models ({', '.join(self.models)}); use results.models[model_id][{suite!r}]")
        suites = next(iter(self.models.values()))
        if suite not in suites:
            raise KeyError(f"no results for suite {suite!r}; available: {', '.join(suites) or 'none'}")
        return suites[suite]

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Headline numbers per model (clean accuracy, mean corruption error, ECE, mean OOD AUROC, ...)."""
        out: dict[str, dict[str, float | None]] = {}
        for mid, suites in self.models.items():
            row: dict[str, float | None] = {}
            cor, cal, ood = (suites.get(k) or {} for k in ("corruption", "calibration", "ood"))
            if cor:
                row.update(clean_accuracy=nested_get(cor, "clean", "accuracy"), mean_error=cor.get("mean_error"),
                           mean_corruption_error=cor.get("mean_corruption_error"), mce=cor.get("mce"))
            if cal:
                if row.get("clean_accuracy") is None:
                    row["clean_accuracy"] = nested_get(cal, "clean", "accuracy")
                row.update({k: nested_get(cal, "clean", k) for k in ("ece", "rms", "nll", "brier")})
                row["corrupted_ece"] = nested_get(cal, "corrupted", "ece")
            for score, metrics in (ood.get("mean") or {}).items():
                row[f"ood_auroc_{score}"] = nested_get(metrics, "auroc")
            for name, r in suites.items():
                if name not in ("corruption", "calibration", "ood") and isinstance(r, Mapping):
                    for k, v in r.items():
                        if isinstance(v, (int, float)) and not isinstance(v, bool):
                            row[f"{name}.{k}"] = float(v)
            out[mid] = row
        return out

    def to_dict(self) -> dict:
        return to_jsonable({"meta": self.meta, "models": self.models})

    def save(self, path: str | Path) -> Path:
        """Write ``{"meta", "models"}`` as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> "Results":
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if not isinstance(d, dict) or "models" not in d:
            raise ValueError(f"{path} is not an aprkit results.json (expected keys 'meta' and 'models')")
        return cls(models=d["models"], meta=d.get("meta", {}))

    @classmethod
    def merge(cls, results: Sequence["Results"] | Mapping[str, "Results"]) -> "Results":
        """Combine several runs into one (for side-by-side reports); a mapping renames single-model runs."""
        merged = cls(meta={"runs": []})
        items = results.items() if isinstance(results, Mapping) else [(None, r) for r in results]
        for name, r in items:
            if not isinstance(r, Results):
                raise TypeError(f"expected Results objects to merge, got {type(r).__name__}")
            if name is not None and len(r.models) != 1:
                raise ValueError(f"cannot rename a run holding {len(r.models)} models to {name!r}; pass a list instead")
            for mid, suites in r.models.items():
                key = name or mid
                if key in merged.models:
                    raise ValueError(f"model id {key!r} appears twice; give the runs distinct names")
                merged.models[key] = suites
            merged.meta["runs"].append(r.meta)
        return merged

    def write_report(self, out_dir: str | Path | None = None, title: str | None = None) -> dict[str, Path]:
        """Write results.json, report.md and report.html (see :func:`aprkit.eval.report.write_report`)."""
        from .report import write_report

        target = out_dir if out_dir is not None else self.out_dir
        if target is None:
            raise ValueError("no output folder: pass out_dir (reports are never written to the current directory implicitly)")
        self.paths = write_report(self, target, title=title)
        return self.paths


class _RunCache:
    """Cache view for one run: ``resume=False`` ignores old entries; under torchrun only rank 0 writes and
    every rank sees the same hits (entries present at start plus this run's own results)."""

    def __init__(self, backend: Any, resume: bool) -> None:
        self.backend = backend
        self.resume = resume
        self.mem: dict[str, dict] = {}
        rank, world = _dist_info()
        self.distributed = world > 1
        self.snapshot: set[str] | None = None
        if self.distributed:
            torch.distributed.barrier()
            self.snapshot = set(backend.keys()) if resume else set()

    def get(self, key: str) -> dict | None:
        if key in self.mem:
            return json.loads(json.dumps(self.mem[key]))
        if not self.resume or (self.snapshot is not None and key not in self.snapshot):
            return None
        return self.backend.get(key)

    def put(self, key: str, value: dict) -> None:
        self.mem[key] = to_jsonable(value)
        if is_main_process():
            self.backend.put(key, self.mem[key])


def load_eval_model(model: Any, num_classes: int | None, checkpoint: str | None, device: torch.device,
                    random_init: bool = False, drop_head: bool = False) -> tuple[nn.Module, str]:
    """An ``nn.Module`` from a module or a spec (via ``aprkit.models.load_model``) plus a display name."""
    if isinstance(model, nn.Module):
        if checkpoint is not None:
            from aprkit.models import load_model

            return load_model(model, num_classes=num_classes, checkpoint=checkpoint, device=device, drop_head=drop_head), type(model).__name__
        return model.to(device), type(model).__name__
    if isinstance(model, (str, Path)):
        from aprkit.models import load_model

        spec = str(model)
        name = Path(spec).stem if spec.endswith((".th", ".pth", ".pt", ".ckpt")) else spec.split(":")[-1]
        return load_model(spec, num_classes=num_classes, checkpoint=checkpoint, device=device, random_init=random_init,
                          drop_head=drop_head), name
    raise TypeError(f"model must be an nn.Module, a model spec string (e.g. 'resnet20', 'timm:resnet50', a .th file) or a mapping name -> model; got {type(model).__name__}")


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _sync_weights(model: nn.Module) -> None:
    """Under torch.distributed, give every rank rank 0's parameters and buffers (e.g. a random init)."""
    if _dist_info()[1] > 1:
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                torch.distributed.broadcast(t.data, src=0)


def _data_for(data: Any, suite: str) -> Any:
    """Per-suite data: a mapping ``{suite name: data, "default": data}`` or one dataset for every suite."""
    if not isinstance(data, Mapping):
        return data
    if suite in data:
        return data[suite]
    if "default" in data:
        return data["default"]
    raise ValueError(f"no data for suite {suite!r}: the data mapping has keys {sorted(data)}; add {suite!r} or 'default'")


def _suite_names(suite: str | Sequence[str]) -> list[str]:
    names = [suite] if isinstance(suite, str) else list(suite)
    registry = load_suites()
    from aprkit._checks import nearest_names

    for n in names:
        if n not in registry:
            raise ValueError(f"unknown suite {n!r}{nearest_names(n, list(registry))}; available: {', '.join(sorted(registry))}")
    if not names:
        raise ValueError("no suite given; choose from: " + ", ".join(sorted(registry)))
    return names


def evaluate(
    model: nn.Module | str | Mapping[str, nn.Module | str],
    suite: str | Sequence[str] = ("corruption",),
    data: Any = None,
    *,
    model_id: str | None = None,
    num_classes: int | None = None,
    checkpoint: str | None = None,
    random_init: bool = False,
    drop_head: bool = False,
    out_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 256,
    num_workers: int = 0,
    amp: bool | None = None,
    channels_last: bool | None = None,
    limit: int | None = None,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] | None = None,
    corrupted: Any = None,
    ood: Any = None,
    fit: Any = None,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
    resume: bool = True,
    report: bool = True,
    title: str | None = None,
) -> Results:
    """Evaluate ``model`` (or a mapping name -> model, side by side) on ``suite`` and return :class:`Results`.

    ``data``: the clean in-distribution test set (spec such as ``"cifar10:ROOT"``/``"folder:ROOT"``, a
    Dataset yielding ``(uint8 (C, H, W), int)``, or a mapping suite name -> data with an optional
    ``"default"`` entry, e.g. ``{"default": "cifar10:ROOT", "shape-bias": "cue-conflict:DIR"}``). ``corrupted``: a -C
    dataset spec (e.g. ``"cifar10-c:ROOT"``); without it corruptions are generated on the fly. ``ood``:
    OOD set specs (default: synthetic noise). ``fit``: training data for Mahalanobis/KNN. ``limit``:
    first N images. ``random_init``/``drop_head``: see :func:`aprkit.models.load_model` (untrained weights
    and re-initialised heads are refused unless asked for). With ``out_dir``, writes ``cache/``, ``results.json``, ``report.md`` and
    ``report.html`` there. ``amp`` defaults to on for CUDA, off on CPU; ``channels_last`` defaults to on
    for convolutional models on every device (it converts the model's parameters in place; on CPU
    the oneDNN convolutions run 1.2-1.4x faster in that layout, see ``benchmarks/bench_eval.py``).
    """
    if data is None:
        raise ValueError("data is required: a dataset spec such as 'cifar10:/path/to/cifar10' or 'folder:/path', or a Dataset")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    names = _suite_names(suite)
    check_suite_options(names, options)
    dev = resolve_device(device)
    amp = dev.type == "cuda" if amp is None else bool(amp)
    out = Path(out_dir) if out_dir is not None else None
    backend = ResultCache(cache_dir) if cache_dir is not None else ResultCache(out / "cache") if out is not None else MemoryCache()
    cache = _RunCache(backend, resume)
    opts = dict(options or {})
    for k, v in dict(limit=limit, corruptions=corruptions, severities=severities, corrupted=corrupted, ood=ood, fit=fit, num_classes=num_classes).items():
        if v is not None:
            opts.setdefault(k, v)
    models = dict(model) if isinstance(model, Mapping) else {model_id: model}
    results = Results(out_dir=out)
    started = time.time()
    for given_id, m in models.items():
        net, display = load_eval_model(m, num_classes, checkpoint, dev, random_init, drop_head)
        net.eval()
        _sync_weights(net)
        use_cl = _has_conv(net) if channels_last is None else bool(channels_last)
        if use_cl:
            net = net.to(memory_format=torch.channels_last)
        cache_id = given_id or f"{display}-{model_fingerprint(net)}"
        name = given_id or display
        if name in results.models:
            name = cache_id
        ctx = EvalContext(model=net, device=dev, batch_size=batch_size, num_workers=num_workers, amp=amp,
                          channels_last=use_cl, seed=seed, progress=progress, cache=cache, model_id=cache_id,
                          out_dir=out, options=opts)
        registry = load_suites()
        results.models[name] = {}
        for sname in names:
            sdata = _data_for(data, sname)
            key = make_key(cache_id, json.dumps(_describe(sdata, ids=True), sort_keys=True), None, None, suite=sname, v=SUITE_VERSION, seed=seed,
                           **{k: _describe(v, ids=True) for k, v in sorted(opts.items())})
            value = cache.get(key)
            if value is None:
                value = registry[sname]().run(ctx, sdata)
                cache.put(key, value)
            results.models[name][sname] = to_jsonable(value)
            results.meta = _meta(results, models, names, data, opts, dev, amp, use_cl, batch_size, started)
            if out is not None and is_main_process():
                results.save(out / "results.json")  # partial results are visible while the run goes on
    if out is not None and report and is_main_process():
        results.write_report(out, title=title)
    return results


def _describe(value: Any, ids: bool = False) -> Any:
    """JSON-able description of data/options for metadata and cache keys (datasets by content id)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _describe(v, ids) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe(v, ids) for v in value]
    if ids and hasattr(value, "__getitem__") and hasattr(value, "__len__"):
        try:
            return dataset_id(value)
        except Exception:  # not a dataset after all
            pass
    return type(value).__name__


def _meta(results: Results, models: Mapping, names: list[str], data: Any, opts: dict, dev: torch.device, amp: bool,
          channels_last: bool, batch_size: int, started: float) -> dict:
    import aprkit

    return {
        "aprkit": aprkit.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 2),
        "models": {k: (v if isinstance(v, str) else type(v).__name__) for k, v in zip(results.models, models.values())},
        "suites": names,
        "data": _describe(data),
        "options": _describe(opts),
        "device": str(dev),
        "amp": amp,
        "channels_last": channels_last,
        "batch_size": batch_size,
        "world_size": _dist_info()[1],
    }
