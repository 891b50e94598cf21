"""``evaluate(model, suite=..., data=...) -> Results``: run evaluation suites with caching and resume.

Every finished unit (a corruption cell, a set of OOD scores, a phase-bias or transplant result) is
stored in a :class:`~aprkit.eval.engine.cache.ResultCache` under ``out_dir/cache`` (or ``cache_dir``), keyed by
:func:`~aprkit.eval.engine.cache.result_key` (weights fingerprint, data, run settings, the unit's options and
code versions), so a killed run picks up where it stopped (``resume=True``) and no finished number is
lost. Without ``out_dir``/``cache_dir`` nothing is written (an in-memory cache is used).

There is one caching layer: the suites cache their own units (through :func:`~aprkit.eval.engine.cache.cached`;
cells are shared between the corruption and calibration suites and between runs with different grids).
The runner does not also cache whole suites: such an entry would have to know every version and
option of the units inside it, and re-assembling a suite from cached units costs milliseconds. Finished
suites go into the output folder's index (:class:`~aprkit.eval.engine.outdir.SuiteIndex`), from which
``results.json`` is rebuilt before work starts (``meta.complete: false`` with the ``pending`` suites),
after every suite and at the end, so evaluations with different suites into one folder add up and an
interrupted run says so.

Under ``torchrun`` every rank runs the same code; batches are sharded by ``aprkit.eval.engine.inference``,
results are gathered, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ..._checks import check_seed
from ..._text import add_note
from ...data.registry import check_outside_data
from ...distributed import (
    check_shared_folder,
    group_info,
    is_main_process,
    parse_device,
    peer_failure,
    resolve_device,
)
from ..report.results import Results
from ..suites import EvalContext, load_suites
from ..suites.options import (
    as_parsed,
    check_data_mapping,
    check_suite_options,
    option_error,
    parse_suite_options,
    suite_registry,
)
from .cache import MemoryCache, ResultCache, Unidentifiable, result_key, to_jsonable
from .data_checks import check_yields_tensors
from .datasets import as_dataset, memo_dataset_ids
from .fingerprint import model_fingerprint
from .logit_checks import naming_model
from .models import (
    check_model_kwargs,
    display_name,
    has_conv,
    load_eval_model,
    place_model,
    sync_weights,
    wants_channels_last,
)
from .outdir import RunCache, SuiteIndex, check_out_folder
from .run_record import EvalRun, describe, now
from .suite_data import data_for, warn_if_limit_ignored, warn_if_limit_takes_few_classes

__all__ = ["evaluate", "Results", "SUITE_VERSION"]

#: version of the suite results recorded in an output folder's index (part of their key)
SUITE_VERSION = 1


def _suite_names(suite: str | Sequence[str]) -> list[str]:
    names = [suite] if isinstance(suite, str) else list(suite)
    suite_registry(names)  # did-you-mean for an unknown name, an error for none
    return names


@memo_dataset_ids()  # each dataset identified once per call, afresh in the next (changed in place meanwhile)
def evaluate(
    model: nn.Module | str | Mapping[str, nn.Module | str],
    suite: str | Sequence[str] = ("corruption",),
    data: Any = None,
    *,
    model_id: str | None = None,
    num_classes: int | None = None,
    checkpoint: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
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
    download: bool = False,
) -> Results:
    """Evaluate ``model`` (or a mapping name -> model, side by side) on ``suite`` and return :class:`Results`.

    ``data``: the clean in-distribution test set (spec such as ``"cifar10:ROOT"``/``"folder:ROOT"``, a Dataset
    yielding ``(uint8 (C, H, W), int)``, or a mapping suite name -> data with an optional ``"default"`` entry, e.g.
    ``{"default": "cifar10:ROOT", "shape-bias": "cue-conflict:DIR"}``). ``corrupted``: a -C dataset spec (e.g.
    ``"cifar10-c:ROOT"``); without it corruptions are generated on the fly. ``ood``: OOD set specs (default: synthetic
    noise). ``fit``: training data for Mahalanobis/KNN. ``limit``: first N images. ``options``: the suites' flat
    option keys (each suite's ``Options``, see :mod:`aprkit.eval.suites.base`), e.g.
    ``{"knn_k": 10, "n_pairs": 500}``; they win over the parameters above. ``random_init``/``drop_head``: see
    :func:`aprkit.models.load_model` (untrained weights and re-initialised heads are refused unless asked for).
    ``model_kwargs``: builder arguments of a model given as a spec, e.g. ``{"img_size": 32, "patch_size": 4}`` for a
    ``timm:`` ViT whose plain state_dict was trained at 32 px (every model of a mapping gets them, so all must be
    specs). With
    ``out_dir``, writes ``cache/``, ``index.json`` (and its lock file, so that runs into one folder add up),
    ``results.json``, ``report.md`` and ``report.html`` there;
    ``results.json`` and the report hold every suite finished in that folder (this run's and earlier runs'), the
    returned :class:`Results` this call's models only. A report section that fails to render raises after the files
    are written. ``amp`` defaults to on for CUDA, off on CPU; ``channels_last`` defaults to on for convolutional
    models on every device (it converts the model's weights for the run; they come back in their layout and each
    module in its train/eval mode; on CPU the oneDNN convolutions run 1.2-1.4x
    faster in that layout, see ``benchmarks/bench_eval.py``). ``download``: fetch what the suites need besides the
    data and lack, before any work: the frost textures of generated frost (2 MB, see
    :func:`aprkit.corruptions.find_frost_dir`); data specs are fetched by ``aprkit.data.resolve_spec(spec,
    download=True)`` (``aprkit eval --download`` does both).
    """
    if data is None:
        hint = (" (the shape-bias stimuli go there too: data={'shape-bias': 'cue-conflict:DIR'}, --data "
                "shape-bias=cue-conflict:DIR; the option stimuli is for Suite.run by hand)"
                if isinstance(options, Mapping) and "stimuli" in options else "")
        raise ValueError("data is required: a dataset spec such as 'cifar10:/path/to/cifar10' or 'folder:/path', "
                         f"or a Dataset{hint}")
    model_kwargs = check_run_settings(batch_size, num_workers, seed, model_kwargs, model, num_classes=num_classes)
    names = _suite_names(suite)
    check_data_mapping(data, names)
    check_yields_tensors(data)
    opts = check_suite_options(names, options)  # flat keys, each read by a selected suite
    params = dict(limit=limit, corruptions=corruptions, severities=severities, corrupted=corrupted, ood=ood, fit=fit,
                  num_classes=num_classes)
    registry = load_suites()
    for k, v in params.items():
        if v is None:
            continue
        if k in ("corrupted", "ood", "fit") and not any(k in registry[n].option_names() for n in names):
            raise option_error(k, names, registry)  # data given to no selected suite: accepted and never read
        opts.setdefault(k, v)
    parsed = parse_suite_options(names, opts)  # a bad value fails here, before any work
    opts = as_parsed(opts, parsed)  # recorded and keyed in one form: "5,1" and [1, 5] are the same severities
    caveats = warn_if_limit_takes_few_classes(data, limit, names)  # each suite's results carry its own
    warn_if_limit_ignored(names, limit)
    dev = resolve_device(device)
    amp = dev.type == "cuda" if amp is None else bool(amp)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        check_out_folder(out)
    check_outside_data([out, None if cache_dir is None else Path(cache_dir)], data,
                       *(opts.get(k) for k in ("corrupted", "ood", "fit")))
    backend = (ResultCache(cache_dir) if cache_dir is not None
               else ResultCache(out / "cache") if out is not None else MemoryCache())
    world = group_info()[1]
    for folder, what in ((out, "the output folder (--out)"), (cache_dir, "the cache folder")):
        if folder is not None:  # several processes (torchrun) must share what they resume and reuse
            check_shared_folder(folder, what)
    # torch's CPU threads too: a matrix product over more than ~1,000 inputs (an ImageNet classifier) sums in another
    # order with another thread count, which moves the last bits of the numbers (recorded, not keyed: see README)
    cache = RunCache(backend, resume, {"world_size": world, "batch_size": batch_size, "device": dev.type,
                                       "threads": torch.get_num_threads()})
    models = dict(model) if isinstance(model, Mapping) else {model_id: model}
    run = EvalRun(out, SuiteIndex(out if is_main_process() else None), SuiteIndex(None), time.time(),
               dict(data=data, opts=opts, dev=dev, amp=amp, batch_size=batch_size, world=world, report=report,
                    title=title, caveats=caveats))
    labels = [given or display_name(m) for given, m in models.items()]
    run.pending = [(label, sname) for label in labels for sname in names]
    run.write()  # results.json says what is still to do before any work starts
    results = Results(out_dir=out)
    try:
        load = dict(num_classes=num_classes, checkpoint=checkpoint, device=dev, random_init=random_init,
                    drop_head=drop_head, download=download, model_kwargs=model_kwargs)
        ctx_kw = dict(device=dev, batch_size=batch_size, num_workers=num_workers, amp=amp, seed=seed,
                      progress=progress, cache=cache, out_dir=out, options=opts, parsed_options=parsed)
        _evaluate_models(run, models, labels, names, results, data, channels_last, load, ctx_kw)
    except BaseException:  # an error or an interrupt: the report says what finished and what did not
        run.pending = [p for p in run.pending if p[0] != run.unloadable]  # a model that failed to load started nothing
        with contextlib.suppress(Exception):
            run.write()
            run.refresh_report()
        raise
    results.meta = run.meta(run.this_run)
    results.meta["cache_units"] = {"reused": cache.reused, "computed": cache.computed}  # this call's, not the folder's
    if out is not None and is_main_process():
        if report:
            results.paths = run.final_report(title)  # raises when a section fails, after writing
        else:
            run.write()
    return results


def check_run_settings(batch_size: Any, num_workers: Any, seed: Any, model_kwargs: Any, model: Any,
                       device: Any = None, num_classes: Any = None) -> dict[str, Any] | None:
    """``ValueError`` for a bad run setting (``evaluate`` checks them before any work, ``aprkit eval
    --print-config`` when it prints them); returns the checked ``model_kwargs``. ``device`` is checked as a name
    only (a GPU that is not here is found when the run starts)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0 (0: read in this process), got {num_workers!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    parse_device(device)
    try:
        check_seed(seed)
    except TypeError as err:  # evaluate's contract: a ValueError for every bad setting
        raise ValueError(str(err)) from None
    return check_model_kwargs(model_kwargs, model)


def _evaluate_models(run: EvalRun, models: Mapping[Any, Any], labels: list[str], names: list[str], results: Results,
                     data: Any, channels_last: bool | None, load: dict[str, Any], ctx_kw: dict[str, Any]) -> None:
    """Each model (``load``: :func:`load_eval_model`'s settings) through each suite (``ctx_kw``: the
    ``EvalContext`` settings), recording every finished suite in the run's index as it ends."""
    # the caller's modules come back in the train/eval modes they had (each submodule's: a frozen batch norm stays
    # frozen; a model evaluated between epochs trains on in train mode); the suites run them in eval mode
    modes = {mod: mod.training for m in models.values() if isinstance(m, nn.Module) for mod in m.modules()}
    # ... on the devices and with their 4-d weights (and gradients) in the memory layout they had: the run moves them
    # to its device and converts them to channels_last (a CPU model evaluated on a GPU machine stayed on the GPU)
    placed = [(cast(dict[str, Any], store), name, t.device, t.ndim == 4 and t.is_contiguous())
              for mod in modes for store in (mod._parameters, mod._buffers) for name, t in store.items()
              if t is not None]
    try:
        _run_models(run, models, labels, names, results, data, channels_last, load, ctx_kw)
    finally:
        for mod, training in modes.items():
            mod.training = training
        with torch.no_grad():
            for store, name, device, plain in placed:
                if store[name] is not None:
                    _put_back(store, name, device, plain)


def _put_back(store: dict[str, Any], name: str, device: torch.device, plain: bool) -> None:
    """Tensor ``store[name]`` (a parameter, with its gradient, or a buffer) back on ``device`` and, when it was
    ``plain``, contiguous; a Parameter stays the same object (an optimizer holding it goes on)."""

    def back(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device) if t.device != device else t
        return t.contiguous() if plain and not t.is_contiguous() else t

    t = store[name]
    if not isinstance(t, nn.Parameter):
        store[name] = back(t)
        return
    grad = t.grad
    grad_back = back(grad) if grad is not None else None
    if grad_back is not grad:
        t.grad = None  # (a gradient on another device than the data it is assigned to is refused)
    moved = back(t.data)
    if moved is not t.data:
        t.data = moved
    if grad_back is not grad:
        t.grad = grad_back


def _run_models(run: EvalRun, models: Mapping[Any, Any], labels: list[str], names: list[str], results: Results,
                data: Any, channels_last: bool | None, load: dict[str, Any], ctx_kw: dict[str, Any]) -> None:
    """:func:`_evaluate_models`' work, the models left in eval mode."""
    registry = load_suites()

    def counted(sname: str) -> bool:  # a suite that reads the first N images of its data: the header counts them
        return "limit" in registry[sname].option_names() and registry[sname].limit_takes_first
    dev = load["device"]
    for pos, (given_id, m) in enumerate(models.items()):
        try:
            net, display = load_eval_model(m, load["num_classes"], load["checkpoint"], dev, load["random_init"],
                                           load["drop_head"], seed=int(ctx_kw["seed"]),
                                           model_kwargs=load["model_kwargs"])
        except BaseException as err:
            run.unloadable = labels[pos]
            if isinstance(err, Exception):  # not an interrupt
                run.load_error = f"{type(err).__name__}: {err}"
            raise
        if pos == 0:  # the suites' checks before any of them runs (after the model and data checks: their errors first)
            for sname in names:
                ctx_kw["parsed_options"][sname].preflight(data_for(data, sname), load["download"])
        net.eval()
        sync_weights(net)
        use_cl = wants_channels_last(net, has_conv(net) if channels_last is None else bool(channels_last))
        net = place_model(net, dev, use_cl)
        run.settings["channels_last"] = use_cl
        ctx_kw["cache"].produced_with(channels_last=use_cl)  # it moves the last bits: recorded as the batch size is
        # hashed afresh: writes through .data (sync_weights, EMA helpers swapping weights in) keep version counters
        fingerprint = model_fingerprint(net, reuse=False)
        name = given_id or display
        if name in results.models:
            name = f"{display}-{fingerprint}"
        run.pending = [(name if lab == labels[pos] else lab, sn) for lab, sn in run.pending]
        labels[pos] = name
        dropped = run.index.claim(name, fingerprint)
        twins = sorted({str(e["model"]) for e in run.index.entries
                        if e.get("fingerprint") == fingerprint and e["model"] != name})
        if twins:  # e.g. a folder an older aprkit filled under the class name
            warnings.warn(f"{run.out} holds results of these weights under the label{'s' if len(twins) > 1 else ''} "
                          f"{', '.join(map(repr, twins))} too, which the report shows beside {name!r}; pass that "
                          "label as model_id (aprkit eval: --model-id) to reuse it", RuntimeWarning, stacklevel=2)
        run.index.want([(name, sname) for sname in names])  # loaded: its suites are pending in the folder until done
        run.write()  # saves the index too: another model's results under this label leave results.json now
        if dropped:  # ... and the report, also when this run is killed before it writes its own
            run.refresh_report()
        ctx = EvalContext(model=net, channels_last=use_cl, model_id=name, model_key=fingerprint, **ctx_kw)
        results.models[name] = {}
        for sname in names:
            sdata = data_for(data, sname)
            try:
                with naming_model(name):
                    value, produced_by = _run_suite(registry[sname](), ctx, sdata, ctx_kw["cache"])
            except Exception as err:  # the report and results.json say which one failed, the error which model
                said = f"{type(err).__name__}: {err}"
                run.failed[(name, sname)] = (f"another torchrun process probably failed (its output names why): "
                                             f"{said[:300]}" if peer_failure(err) else said)
                if len(models) > 1:  # the CLI prints the notes
                    add_note(err, f"model {name!r}, suite {sname!r}")
                raise
            results.models[name][sname] = value
            own = registry[sname].option_names()
            run.finish({"model": name, "suite": sname, "value": value, "key": _suite_key(ctx, sname, sdata),
                        "suite_version": registry[sname].version, "fingerprint": fingerprint,
                        "spec": getattr(net, "_aprkit_source", None) or getattr(net, "_aprkit_spec", None)
                        or (m if isinstance(m, str) else type(m).__name__),
                        "data": describe(sdata), "n_images": _data_size(sdata) if counted(sname) else None,
                        "options": describe({k: v for k, v in ctx_kw["options"].items() if k in own}),
                        "seed": ctx_kw["seed"], "amp": ctx_kw["amp"],
                        "produced_by": produced_by, "date": now(),
                        **_caveats(run.settings["caveats"].get(sname), value)},
                       own, registry[sname].reads)  # the entry holds the options its suite reads: another
            # suite's (an OOD knn_k) is no other setting of this one, nor a seed that shape bias does not read


def _caveats(run_caveat: str | None, value: Any) -> dict[str, list[str]]:
    """The entry's ``caveats``: the run's for this suite (a ``limit`` that took few classes) and the suite's own (its
    result's ``caveats``, e.g. generated corruptions made before the model's resize)."""
    own = value.get("caveats", []) if isinstance(value, Mapping) else []
    found = list(dict.fromkeys([*([run_caveat] if run_caveat else []), *own]))
    return {"caveats": found} if found else {}


def _run_suite(suite: Any, ctx: EvalContext, data: Any, cache: RunCache) -> tuple[dict, dict]:
    """A suite's result (its units from the cache or computed) and the merged provenance of its units."""
    cache.collect()
    value = to_jsonable(suite.run(ctx, data))
    return value, cache.collect() or cache.produced_by  # a suite without cached units: this run made it


def _data_size(data: Any) -> int | None:
    """The number of test images ``data`` holds (the report header's count), None where it has no length."""
    from ..._checks import dataset_len

    try:  # a spec's dataset is read at most once per evaluate call (memo_dataset_ids); a fully cached run reads it here
        return dataset_len(as_dataset(data, "test"))
    except Exception:  # noqa: BLE001 - a suite's own kind of data (OOD sets, stimuli): no count, as before
        return None


def _suite_key(ctx: EvalContext, suite: str, data: Any) -> str | None:
    """The identity of a suite's result (recorded in the suite index), or None when an option has none."""
    try:
        return result_key(ctx, f"suite:{suite}", data, v=SUITE_VERSION, options=ctx.options)
    except Unidentifiable:
        return None
