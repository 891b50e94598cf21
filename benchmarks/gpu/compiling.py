"""Section 6 of the GPU check: ``torch.compile`` of the APR-P and APR-S hot paths (registered last: it runs last).

Rows of the module cores (``APRPair`` / ``APRSingleBatch(compile_core=MODE)``) and of whole calls (``apr_pair``,
the ``APRPair`` module, with ``dynamo.explain``'s graphs and breaks), each against eager and the FFT-only limit
measured in the same run. The section also uses the time the sections before it left of their caps.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import torch

from benchmarks.common import bench

from .context import STRIDED_SCALE, Context, section
from .sections import _batch, _err, _sizes, _timing

__all__ = ["CORE_MODULES", "compile_plan"]


def _scale_variant(target: str) -> contextlib.AbstractContextManager:
    """For :data:`STRIDED_SCALE`'s row, ``aprkit.fourier.mixing`` compiles its scaling as on the CPU (strided): read
    while tracing, patched for the whole row (dynamo guards on the function)."""
    if target != STRIDED_SCALE:
        return contextlib.nullcontext()
    import aprkit.fourier.mixing as mixing

    return mock.patch.object(mixing, "_fused_scale", lambda z: False)


def _compile_target(name: str, x: torch.Tensor, perm: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    from aprkit.augment import APRPair, apr_pair

    if name in ("apr_pair", STRIDED_SCALE):
        return lambda t: apr_pair(t, perm)
    return APRPair(p=1.0, generator=torch.Generator(x.device).manual_seed(0))


def _core_options(mode: str, backend: str) -> dict[str, Any]:
    """``APRPair(compile_core=...)`` options for an inductor ``mode`` (other backends take no mode)."""
    if backend != "inductor":
        return {"backend": backend}
    return {"dynamic": False} | ({} if mode == "default" else {"mode": mode})


def _cudagraph_skips() -> int:
    """How many compiled graphs inductor has run without CUDA graphs so far (its reasons go to the log)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


#: the modules whose ``compile_core`` the compile section times, and the images each takes
CORE_MODULES = {"APRPair compile_core": ("APRPair", "float"),
                "APRSingleBatch compile_core": ("APRSingleBatch", "uint8")}


def _time_core_row(ctx: Context, row: dict[str, Any], b: int, s: int, mode: str,
                   target: str = "APRPair compile_core") -> None:
    """``APRPair`` / ``APRSingleBatch`` ``(p=1, compile_core=...)`` forward (a device generator) against
    eager and the FFT-only limit: APR-P on [0, 1] floats, APR-S on uint8 images (what a dataloader hands over;
    every image recombined, two colour/geometric ops each)."""
    import torch._dynamo as dynamo

    import aprkit.augment as augment
    from benchmarks.bench_augment import TWO_INPUT, fft2_limit, fft_limit

    cls_name, kind = CORE_MODULES[target]
    cls = getattr(augment, cls_name)
    x8, xf, _ = _batch(b, s, ctx.device)
    x = x8 if kind == "uint8" else xf
    partner = xf.roll(1, 0)
    row["limit"] = "fft2_limit" if cls_name in TWO_INPUT else "fft_limit"  # APR-S: two rfftn (image, view), one irfftn

    def limit() -> torch.Tensor:
        return fft2_limit(xf, partner) if row["limit"] == "fft2_limit" else fft_limit(xf)

    dynamo.reset()
    skips = _cudagraph_skips()
    # draws on the device (as training's DeviceAugment makes them): a CPU generator hands the compiled core CPU
    # tensors, and inductor skips CUDA graphs for a graph with CPU inputs
    eager = cls(p=1.0, generator=torch.Generator(ctx.device).manual_seed(0))
    compiled = cls(p=1.0, generator=torch.Generator(ctx.device).manual_seed(0),
                   compile_core=_core_options(mode, ctx.compile_backend))
    t0 = time.perf_counter()
    y = compiled(x)
    ctx.sync()
    row.update(compile_s=time.perf_counter() - t0, graphs=1, graph_breaks=0)  # fullgraph=True: one graph or an error
    row["max_diff_vs_eager"] = float((y.float() - eager(x).float()).abs().max())  # same seed: the same draws
    del y
    for _ in range(3):  # CUDA graphs are recorded on the first calls after compiling
        compiled(x)
    ctx.sync()
    timing = _timing(ctx)
    times = bench({"fft_limit": limit, "eager": lambda: eager(x), "compiled": lambda: compiled(x)},
                  timing["repeats"], ctx.device, min_time=timing["min_time"], deadline=ctx.deadline)
    row.update(eager_img_s=b / times["eager"], compiled_img_s=b / times["compiled"],
               speedup=times["eager"] / times["compiled"],
               fft_limit_img_s=b / times["fft_limit"], vs_fft_limit=times["fft_limit"] / times["compiled"],
               eager_vs_fft_limit=times["fft_limit"] / times["eager"], cudagraph_skips=_cudagraph_skips() - skips)


def _time_explained_row(ctx: Context, row: dict[str, Any], target: str, b: int, s: int, mode: str = "default") -> None:
    """``torch.compile`` of a whole target (``apr_pair`` or the ``APRPair`` module): graphs, breaks, speed-up.

    With a ``mode`` other than ``default`` (e.g. ``reduce-overhead``: CUDA graphs) the FFT-only limit is compiled
    the same way as well, and ``vs_fft_limit_same_mode`` compares the two graphs (launch costs out of both)."""
    import torch._dynamo as dynamo

    from benchmarks.bench_augment import fft_limit

    backend = ctx.compile_backend
    _, x, perm = _batch(b, s, ctx.device)
    try:
        dynamo.reset()
        ex = dynamo.explain(_compile_target(target, x, perm))(x)
        row.update(graphs=ex.graph_count, graph_breaks=ex.graph_break_count,
                   break_reasons=[str(getattr(r, "reason", r))[:200] for r in ex.break_reasons][:5])
    except Exception as err:  # recorded, the compile attempt still runs
        row["explain_error"] = _err(err)
    ctx.save()
    dynamo.reset()
    eager = _compile_target(target, x, perm)
    opts = _core_options(mode, backend)
    compiled = torch.compile(_compile_target(target, x, perm), **opts)
    t0 = time.perf_counter()
    y = compiled(x).clone()
    ctx.sync()
    row["compile_s"] = time.perf_counter() - t0
    if target != "APRPair":
        row["max_diff_vs_eager"] = float((y - eager(x)).abs().max())
    fns = {"fft_limit": lambda: fft_limit(x), "eager": lambda: eager(x), "compiled": lambda: compiled(x)}
    if mode != "default":
        limit_graph = torch.compile(fft_limit, **opts)
        fns["fft_limit_same_mode"] = lambda: limit_graph(x)
    for fn in fns.values():  # CUDA graphs are recorded on the first calls after compiling
        for _ in range(3):
            fn()
    ctx.sync()
    timing = _timing(ctx)
    times = bench(fns, timing["repeats"], ctx.device, min_time=timing["min_time"], deadline=ctx.deadline)
    row.update(eager_img_s=b / times["eager"], compiled_img_s=b / times["compiled"],
               speedup=times["eager"] / times["compiled"],
               fft_limit_img_s=b / times["fft_limit"], vs_fft_limit=times["fft_limit"] / times["compiled"])
    if "fft_limit_same_mode" in times:
        row["vs_fft_limit_same_mode"] = times["fft_limit_same_mode"] / times["compiled"]


def compile_plan(ctx: Context) -> list[tuple[str, str, int, int]]:
    """The compile section's rows ``(target, mode, batch, size)`` in run order. One APR-S row comes second (in
    CUDA graphs where inductor makes them): APR-S at 32 px, ~280 small ops per batch, is launch-bound on a GPU
    (issue 17), where one graph should help most, and its cold compile (~55 s on an H200) after all APR-P rows
    left every APR-S row to the time cap."""
    graphs = ctx.is_cuda and ctx.compile_backend == "inductor"
    sizes = _sizes(ctx)[:1] if ctx.quick else _sizes(ctx)
    modes = ["default", "reduce-overhead"] if graphs else ["default"]
    aprs = [("APRSingleBatch compile_core", mode, *sizes[0]) for mode in modes[::-1]]  # reduce-overhead first
    plan = [("APRPair compile_core", mode, b, s) for b, s in sizes for mode in modes]
    plan.insert(1, aprs[0])
    if graphs:  # the core and the FFT-only limit, each in one CUDA graph: the only rows with a same-mode limit, early
        plan += [("apr_pair", "reduce-overhead", b, s) for b, s in sizes]
    plan += aprs[1:]
    plan += [(target, "default", b, s) for b, s in sizes for target in ("apr_pair", "APRPair")]
    if graphs:  # the same graphs with the strided scaling (what it gains, in the same run)
        plan += [(STRIDED_SCALE, "reduce-overhead", b, s) for b, s in sizes]
    if graphs and not ctx.quick:  # autotuning takes long: last, large size only
        plan += [("APRPair compile_core", "max-autotune-no-cudagraphs", *sizes[-1])]
    return plan


def _compile_need(ctx: Context, target: str, mode: str, first_aprs: bool) -> float:
    """Seconds a compile row needs to start before the soft deadline (the margin to the hard cap absorbs an overrun):
    the first APR-S row compiles cold (inductor on an H200: 54 s, then 7.5 s for its other mode)."""
    if ctx.quick:
        return 5
    if target.startswith("APRSingle") and first_aprs and ctx.compile_backend == "inductor":
        return 55
    return 40 if mode.startswith("max-autotune") or target.startswith("APRSingle") else 15


@section("compile", cap_s=75, quick_cap_s=40, title="6. torch.compile of the APR-P and APR-S hot paths",
         takes_unused=True)
def run_compile(ctx: Context) -> None:
    """Also uses the time the sections before it left unused (``takes_unused``): its cold compiles take longest."""
    backend = ctx.compile_backend
    ctx.results.update(backend=backend, note=(
        "APRPair / APRSingleBatch(compile_core=MODE): the module's core compiled as one graph (sampling with a device "
        "generator and validation eager; APR-S on uint8 images), dynamic=False; apr_pair / APRPair module: the whole "
        "call compiled; compile_s = the first call; ratio = FFT-only limit time / compiled time, measured in the same "
        "run"))
    rows = ctx.results.setdefault("rows", [])
    first_aprs = True
    for target, mode, b, s in compile_plan(ctx):
        label = f"{target} ({mode}) {b}x3x{s}x{s}"
        need = _compile_need(ctx, target, mode, first_aprs)
        if ctx.left() < need:
            ctx.skip(label)
            continue
        first_aprs = first_aprs and not target.startswith("APRSingle")
        ctx.log(label)
        row: dict[str, Any] = {"target": target, "mode": mode, "batch": b, "size": s}
        rows.append(row)
        try:
            if target in CORE_MODULES:
                _time_core_row(ctx, row, b, s, mode, target)
            else:
                with _scale_variant(target):
                    _time_explained_row(ctx, row, target, b, s, mode)
        except Exception as err:
            row["compile_error"] = _err(err, 600)
            ctx.problem(f"{label}: {row['compile_error'][:200]}")
        ctx.save()
