"""The sections of the GPU check, in run order. Each measures with the functions of the ``bench_*`` scripts.

Sizes follow issue 17: APR at batch 256 x 3x32x32 and 64 x 3x224x224; the 19 corruptions at 224 px
(batch 64, severity 3, ImageNet preset); ``evaluate`` against the robustbench-style loop; an APR-SP
training step of a CIFAR ResNet-18 against standard steps; ``torch.compile`` of the APR-P and APR-S hot paths.
``--quick`` shrinks every size so that the whole check runs in seconds on a CPU (a smoke test).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.common import REPO_ROOT, bench, synthetic_images

from .context import Context, section
from .env import environment

__all__ = ["BENCHMARK_NOTE"]

#: how the ImageNet-C projection is computed (also printed in the summary)
BENCHMARK_NOTE = ("50,000 images x 5 severities x the per-image time at severity 3 (all severities assumed alike), "
                  "images already on the device; excludes decoding/resizing the validation JPEGs and encoding/writing "
                  "the outputs (the jpeg_compression corruption's own encode/decode is included)")


def _sizes(ctx: Context) -> list[tuple[int, int]]:
    return [(8, 32), (2, 64)] if ctx.quick else [(256, 32), (64, 224)]


def _timing(ctx: Context) -> dict[str, Any]:
    """Repeats and the minimum duration of one timed block (fast GPU calls repeat inside a block)."""
    return {"repeats": 1, "min_time": 0.0} if ctx.quick else {"repeats": 5, "min_time": 0.02 if ctx.is_cuda else 0.1}


def _batch(b: int, s: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 and [0, 1] float images ``(b, 3, s, s)`` on ``device`` and a partner permutation on it."""
    x8 = synthetic_images(b, s).to(device)
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(0)).to(device)
    return x8, x8.float() / 255, perm


@section("env", cap_s=30, quick_cap_s=30, title="Environment")
def run_env(ctx: Context) -> None:
    ctx.results.update(environment(ctx.device))


# ---------------------------------------------------------------------------------------------- 1 tests
def _junit_counts(path: str) -> dict[str, Any]:
    root = ET.parse(path).getroot()
    counts = {k: 0 for k in ("tests", "failures", "errors", "skipped")}
    for suite in root.iter("testsuite"):
        for k in counts:
            counts[k] += int(suite.get(k, 0))
    bad, skipped = [], {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                bad.append({"test": name, "kind": tag, "message": (el.get("message") or el.text or "")[:400]})
        el = case.find("skipped")
        if el is not None:
            msg = (el.get("message") or "")[:200]
            skipped[msg] = skipped.get(msg, 0) + 1
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"passed": passed, "failed": counts["failures"], "errors": counts["errors"], "skipped": counts["skipped"],
            "total": counts["tests"], "problems": bad, "skip_reasons": skipped}


CUDA_TESTS = ("tests/test_cuda.py", "tests/test_cuda_corruptions.py")  # the device-against-CPU test modules


@section("tests", cap_s=90, quick_cap_s=60, title="1. CUDA tests (tests/test_cuda*.py)")
def run_tests(ctx: Context) -> None:
    import tempfile

    xml = Path(tempfile.mkdtemp(prefix="aprkit-cuda-tests-")) / "test_cuda.xml"  # not in the output folder (few files)
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *CUDA_TESTS, f"--junitxml={xml}",
           "--durations=5"]
    env = dict(os.environ, APRKIT_TEST_DEVICE=str(ctx.device))
    ctx.results["command"] = " ".join(cmd[1:])
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=max(5.0, ctx.left()))
        ctx.results["exit_code"], output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        ctx.results["exit_code"] = "timeout"
        output = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
    ctx.results["output_tail"] = output[-3000:]
    if xml.is_file():
        ctx.results.update(_junit_counts(str(xml)))
    else:  # killed before pytest wrote its report: count the verbose result lines seen so far
        words = re.findall(r"^tests/test_cuda\w*\.py::\S+ (PASSED|FAILED|ERROR|SKIPPED)", output, flags=re.M)
        ctx.results.update(passed=words.count("PASSED"), failed=words.count("FAILED"), errors=words.count("ERROR"),
                           skipped=words.count("SKIPPED"), total=len(words), incomplete=True)
    code, r = ctx.results["exit_code"], ctx.results
    if code != 0:
        how = "killed at the section's time cap" if code == "timeout" else f"exit code {code}"
        ctx.problem(f"pytest {how}: {r.get('passed')} passed, {r.get('failed')} failed, {r.get('errors')} errors "
                    f"of {r.get('total')} run")


# ---------------------------------------------------------------------------------------------- 2 augment
def _modes(ctx: Context) -> dict[str, tuple[Callable[[], Any], bool]]:
    """Precision modes: a context factory and whether the input batch is float16."""
    kind = ctx.device.type
    return {
        "fp32": (contextlib.nullcontext, False),
        "amp_fp16": (lambda: torch.autocast(kind, dtype=torch.float16), False),
        "amp_bf16": (lambda: torch.autocast(kind, dtype=torch.bfloat16), False),
        "fp16_input": (contextlib.nullcontext, True),
    }


def _err(err: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line (lines joined by " / "), at most ``limit`` characters of message."""
    return f"{type(err).__name__}: {' / '.join(str(err).strip().splitlines())[:limit]}"


def _in(make_ctx: Callable[[], Any], fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` called inside a fresh context from ``make_ctx`` (e.g. autocast) every time."""
    def call() -> object:
        with make_ctx():
            return fn()
    return call


def _probe_half_fft(x: torch.Tensor) -> dict[str, str]:
    """What cuFFT/torch do with half precision at this size, and the FFT output dtype under autocast."""
    probes = {
        "rfftn_on_float16": lambda: torch.fft.rfftn(x.half(), dim=(1, 2, 3)),
        "rfftn_under_autocast_fp16": _in(lambda: torch.autocast(x.device.type, dtype=torch.float16),
                                         lambda: torch.fft.rfftn(x, dim=(1, 2, 3))),
        "rfftn_under_autocast_bf16": _in(lambda: torch.autocast(x.device.type, dtype=torch.bfloat16),
                                         lambda: torch.fft.rfftn(x, dim=(1, 2, 3))),
    }
    out = {}
    for name, fn in probes.items():
        try:
            out[name] = str(fn().dtype)
        except Exception as err:
            out[name] = _err(err)
    return out


@section("augment", cap_s=40, quick_cap_s=40, title="2. Augmentations (img/s; ratio to the FFT-only limit)")
def run_augment(ctx: Context) -> None:
    from aprkit.augment import apr_pair
    from benchmarks.bench_augment import other_candidates, pair_candidates, throughput

    rows = ctx.results.setdefault("rows", [])
    ctx.results["note"] = ("ratio = time of rfftn+irfftn of the same batch / time of the op (the goal for apr_pair: "
                           ">= 0.8 on a GPU); copy = x.clone() of the batch, measured in the same run")
    timing = _timing(ctx)
    batches = {}
    for b, s in _sizes(ctx):
        x8, x, perm = batches[b, s] = _batch(b, s, ctx.device)
        ctx.results.setdefault("half_precision_fft", {})[f"{b}x3x{s}x{s}"] = _probe_half_fft(x)
    refs = {k: apr_pair(x, perm) for k, (_, x, perm) in batches.items()}
    for mode, (make_ctx, half) in _modes(ctx).items():  # fp32 at both sizes first: the goals need those
        for (b, s), (x8, x, perm) in batches.items():
            ref = refs[b, s]
            if ctx.expired():
                ctx.skip(f"{mode} {b}x3x{s}x{s}")
                continue
            ctx.log(f"{mode} {b}x3x{s}x{s}")
            xin = x.half() if half else x
            fns = pair_candidates(xin, perm) | other_candidates(xin, x8)
            row: dict[str, Any] = {"batch": b, "size": s, "mode": mode, "input_dtype": str(xin.dtype)}
            rows.append(row)
            try:
                with make_ctx():
                    out = apr_pair(xin, perm)
                row.update(output_dtype=str(out.dtype), max_diff_vs_fp32=float((out.float() - ref).abs().max()))
            except Exception as err:
                row["apr_pair_error"] = _err(err)
            ok = {k: _in(make_ctx, f) for k, f in fns.items()}
            for k, f in list(ok.items()):  # a candidate that fails is recorded and left out, the others are timed
                try:
                    f()
                except Exception as err:
                    row.setdefault("errors", {})[k] = _err(err)
                    del ok[k]
            times = bench(ok, timing["repeats"], ctx.device, min_time=timing["min_time"], deadline=ctx.deadline)
            row["candidates"] = throughput(times, b)
            ctx.save()


# ---------------------------------------------------------------------------------------------- 3 corruptions
@section("corruptions", cap_s=55, quick_cap_s=40, title="3. Corruptions at 224 px (img/s, severity 3)")
def run_corruptions(ctx: Context) -> None:
    from aprkit.corruptions import BENCHMARK, list_corruptions
    from benchmarks.bench_corruptions import time_corruptions

    b, s, preset = (2, 32, "cifar") if ctx.quick else (64, 224, "imagenet")
    x = synthetic_images(b, s, noise=0.15).to(ctx.device)
    ctx.results.update(batch=b, size=s, preset=preset, severity=3, note=BENCHMARK_NOTE,
                       frost_textures=os.environ.get("APRKIT_GPU_CHECK_FROST", "found"))
    repeats = 1 if ctx.quick else 2
    per_gen: dict[str, dict[str, float]] = ctx.results.setdefault("img_s", {})
    for gen in ("items", "device"):  # per-image seeds (the -C writers and the eval) first, then one device generator
        ips = per_gen.setdefault(f"{gen}_generator", {})
        for name in list_corruptions():
            if ctx.expired():
                ctx.skip(f"{name} ({gen} generator)")
                continue
            ctx.log(f"{name} ({gen} generator)")
            try:
                t = time_corruptions(x, [name], 3, preset, generator_device=gen, repeats=repeats, min_time=0.0,
                                     deadline=ctx.deadline)
                if name not in t:  # the deadline passed inside the call: skipped for time, not an error
                    ctx.skip(f"{name} ({gen} generator)")
                    continue
                ips[name] = b / t[name]
            except Exception as err:  # recorded (the section is an error); the other corruptions are still timed
                ctx.results.setdefault("errors", {})[f"{name} ({gen} generator)"] = _err(err)
                ctx.problem(f"{name} ({gen} generator) failed")
            ctx.save()
        if all(n in ips for n in list_corruptions()):
            sec = {n: 1.0 / v for n, v in ips.items()}
            ctx.results.setdefault("imagenet_c_hours", {})[f"{gen}_generator"] = {
                "benchmark_15": 50_000 * 5 * sum(sec[n] for n in BENCHMARK) / 3600,
                "all_19": 50_000 * 5 * sum(sec.values()) / 3600,
            }
            ctx.save()
    t = bench({"to_host": lambda: x.cpu()}, repeats, ctx.device)
    ctx.results["device_to_host_img_s"] = b / t["to_host"]


# ---------------------------------------------------------------------------------------------- 4 eval
@section("eval", cap_s=60, quick_cap_s=40, title="4. Evaluation: aprkit.eval.evaluate vs a robustbench-style loop")
def run_eval(ctx: Context) -> None:
    from aprkit.corruptions import BENCHMARK
    from aprkit.models import create_model
    from benchmarks.bench_eval import compare

    if ctx.quick:
        plans = [("small_cnn", dict(n_per_severity=4, batch_size=10, repeats=1, corruptions=["fog", "contrast"]))]
    else:  # WRN-28-10 is robustbench's standard CIFAR-10 architecture; ResNet-18 if time is left. Large cells
        # (CIFAR-10-C has 10,000 images per severity) so per-cell fixed costs weigh as in a real evaluation;
        # the second repeat only starts when it fits before the soft deadline (compare's deadline)
        plans = [("wrn28_10", dict(n_per_severity=2000, batch_size=250, repeats=2)),
                 ("resnet18", dict(n_per_severity=4000, batch_size=250, repeats=2))]
    rows = ctx.results.setdefault("rows", {})
    ctx.results["note"] = ("same work for both: the clean set once + every cell; baseline: the clean set and np.load of each "
                           "-C array, float conversion on the host, fp32, contiguous; "
                           "aprkit: uint8 from pinned memory streamed to the device and converted there, read ahead by a "
                           "thread, AMP + channels_last on CUDA; forward-only: aprkit's model settings on a uint8 batch "
                           "already on the device (the limit of the loop); "
                           "random weights, 32 px, images/s of the faster of the repeats, each method doing all cells in one go; "
                           "forward share not measured on CUDA (its synchronisation would serialise the streaming); "
                           "max acc diff: per cell, aprkit (AMP on CUDA) vs the fp32 baseline (random weights: near-ties flip)")
    per_image = None  # seconds per image and method of the model before, and its parameter count (a repeat of the
    before = 1  # next one must fit; its cost is scaled by the parameters, at least a quarter: reading data is shared)
    for i, (name, kw) in enumerate(plans):
        torch.manual_seed(0)
        net = create_model(name, num_classes=10)
        params = sum(p.numel() for p in net.parameters())
        images = kw["n_per_severity"] * (1 + 5 * len(kw.get("corruptions") or BENCHMARK))
        need = 15.0 if per_image is None else max(15.0, 1.5 * 2 * images * per_image * max(0.25, params / before))
        if i and ctx.left() < need:
            ctx.skip(f"{name} (about {need:.0f} s needed, {ctx.left():.0f} s left)")
            continue
        ctx.log(f"{name}: {kw}")
        t0 = time.perf_counter()
        try:
            rows[name] = row = compare(net, ctx.device, interleave="run", deadline=ctx.deadline,
                                       time_forward=not ctx.is_cuda, **kw)
        except Exception as err:  # recorded (the section is an error); the next model is still tried
            ctx.results.setdefault("errors", {})[name] = _err(err)
            ctx.problem(f"{name} failed")
            continue
        runs = 2 * max(1, int(row.get("repeats") or 1))  # the methods' repeats done, each over every image
        per_image, before = (time.perf_counter() - t0) / (runs * images), params
        ctx.save()


# ---------------------------------------------------------------------------------------------- 5 train
@section("train", cap_s=100, quick_cap_s=40, title="5. Training: an APR-SP step against standard steps")
def run_train(ctx: Context) -> None:
    """Rows ``"B, dtype[, APR compiled]"``: float16 AMP (GradScaler: one host sync per step, the default) and
    bfloat16 AMP (no scaler, so the host runs ahead of the device), then bfloat16 with both APR cores in CUDA
    graphs (``aug.compile={mode: reduce-overhead}``), each timed in interleaved rounds (median)."""
    from benchmarks.bench_train import step_times

    model, batches, steps = ("small_cnn", [8], 3) if ctx.quick else ("resnet18", [128, 256], 10)
    ctx.results.update(model=model, image_size=32, amp=ctx.is_cuda, channels_last=ctx.is_cuda)
    rows = ctx.results.setdefault("rows", {})
    plan: list[tuple[int, str, dict[str, Any] | bool]] = [(b, "float16", False) for b in batches]
    if ctx.is_cuda:
        plan += [(b, "bfloat16", False) for b in batches]
        if not ctx.quick:
            plan.append((batches[0], "bfloat16", {"mode": "reduce-overhead"}))
    for b, dtype, compiled in plan:
        # step_times runs AMP on CUDA only: the CPU smoke's rows are float32 and say so
        label = f"{b}, {dtype if ctx.is_cuda else 'float32'}" + (", APR compiled" if compiled else "")
        if ctx.left() < (30 if compiled else 5):
            ctx.skip(label)
            continue
        torch.manual_seed(0)
        ctx.log(f"{model} batch {label}")
        try:
            rows[label] = step_times(model, b, 32, ctx.device, steps, deadline=ctx.deadline, aug_compile=compiled,
                                     amp_dtype=dtype)
        except Exception as err:  # recorded (the section is an error, the goal "not measured"); the other rows still run
            ctx.results.setdefault("errors", {})[label] = _err(err)
            ctx.problem(f"row {label} failed")
        ctx.save()


# ---------------------------------------------------------------------------------------------- 6 compile
def _compile_target(name: str, x: torch.Tensor, perm: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    from aprkit.augment import APRPair, apr_pair

    if name == "apr_pair":
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
CORE_MODULES = {"APRPair compile_core": ("APRPair", "float"), "APRSingleBatch compile_core": ("APRSingleBatch", "uint8")}


def _time_core_row(ctx: Context, row: dict[str, Any], b: int, s: int, mode: str,
                   target: str = "APRPair compile_core") -> None:
    """``APRPair`` / ``APRSingleBatch`` ``(p=1, compile_core=...)`` forward (CPU generator, as by default) against
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
    row.update(eager_img_s=b / times["eager"], compiled_img_s=b / times["compiled"], speedup=times["eager"] / times["compiled"],
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
    if target == "apr_pair":
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
    row.update(eager_img_s=b / times["eager"], compiled_img_s=b / times["compiled"], speedup=times["eager"] / times["compiled"],
               fft_limit_img_s=b / times["fft_limit"], vs_fft_limit=times["fft_limit"] / times["compiled"])
    if "fft_limit_same_mode" in times:
        row["vs_fft_limit_same_mode"] = times["fft_limit_same_mode"] / times["compiled"]


@section("compile", cap_s=90, quick_cap_s=40, title="6. torch.compile of the APR-P and APR-S hot paths")
def run_compile(ctx: Context) -> None:
    backend = ctx.compile_backend
    ctx.results.update(backend=backend, note=(
        "APRPair / APRSingleBatch(compile_core=MODE): the module's core compiled as one graph (sampling with a CPU "
        "generator and validation eager; APR-S on uint8 images), dynamic=False; apr_pair / APRPair module: the whole call compiled; compile_s = the first "
        "call; ratio = FFT-only limit time / compiled time, measured in the same run"))
    rows = ctx.results.setdefault("rows", [])
    sizes = _sizes(ctx)[:1] if ctx.quick else _sizes(ctx)
    modes = ["default", "reduce-overhead"] if ctx.is_cuda and backend == "inductor" else ["default"]
    plan = [("APRPair compile_core", mode, b, s) for b, s in sizes for mode in modes]
    if ctx.is_cuda and backend == "inductor":  # the core and the FFT-only limit, each in one CUDA graph: the only
        plan += [("apr_pair", "reduce-overhead", b, s) for b, s in sizes]  # rows with a same-mode limit, so early
    # APR-S at 32 px: ~280 small ops per batch, launch-bound on a GPU (issue 17), where one graph should help most;
    # its cold compile takes ~30 s, so it comes after the APR-P rows
    plan += [("APRSingleBatch compile_core", mode, *sizes[0]) for mode in modes]
    plan += [(target, "default", b, s) for b, s in sizes for target in ("apr_pair", "APRPair")]
    if ctx.is_cuda and backend == "inductor" and not ctx.quick:  # autotuning takes long: last, large size only
        plan += [("APRPair compile_core", "max-autotune-no-cudagraphs", *sizes[-1])]
    for target, mode, b, s in plan:
        label = f"{target} ({mode}) {b}x3x{s}x{s}"
        need = 5 if ctx.quick else (40 if mode.startswith("max-autotune") or target.startswith("APRSingle") else 15)
        if ctx.left() < need:
            ctx.skip(label)
            continue
        ctx.log(label)
        row: dict[str, Any] = {"target": target, "mode": mode, "batch": b, "size": s}
        rows.append(row)
        try:
            if target in CORE_MODULES:
                _time_core_row(ctx, row, b, s, mode, target)
            else:
                _time_explained_row(ctx, row, target, b, s, mode)
        except Exception as err:
            row["compile_error"] = _err(err, 600)
            ctx.problem(f"{label}: {row['compile_error'][:200]}")
        ctx.save()
