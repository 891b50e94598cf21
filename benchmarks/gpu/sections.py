"""The sections of the GPU check, in run order (the compile section, last, is in ``compiling.py``). Each measures
with the functions of the ``bench_*`` scripts.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


#: the device-against-CPU test modules, relative to the repository (every tests/test_cuda*.py: a new one is run too)
CUDA_TESTS = tuple(sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "tests").glob("test_cuda*.py")))
PYTEST = (sys.executable, "-m", "pytest")  # how pytest is started (a test puts a stand-in here)
TESTS_MARGIN_S = 3.0  # pytest is stopped this long before the soft deadline: time to read its output and save


def _run_streamed(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | str, str]:
    """Run ``cmd``, its output (stdout and stderr) copied line by line to this process's stdout, i.e. the section's
    log (kept when the section is killed), and returned; the exit code (``"timeout"``: killed after ``timeout`` s)."""
    import threading

    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout or ():
            lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code: int | str = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = "timeout"
    reader.join(timeout=10)
    return code, "".join(list(lines))


def _last_lines(text: str, n: int = 3, limit: int = 160) -> str:
    """The last ``n`` non-empty lines of ``text`` joined by " / ", at most ``limit`` characters (from the end)."""
    last = " / ".join([ln.strip() for ln in text.splitlines() if ln.strip()][-n:])
    return last if len(last) <= limit else "..." + last[-limit:]


@section("tests", cap_s=90, quick_cap_s=60, title="1. CUDA tests (tests/test_cuda*.py)")
def run_tests(ctx: Context) -> None:
    import tempfile

    # the junit report goes to a temporary folder (few files in the output folder): inside the parent's scratch
    # folder when there is one, which the parent removes also when this section is killed
    scratch = ctx.result_path.parent if ctx.result_path is not None else None
    with tempfile.TemporaryDirectory(prefix="aprkit-cuda-tests-", dir=scratch) as tmp:
        _pytest(ctx, Path(tmp) / "test_cuda.xml")


def _pytest(ctx: Context, xml: Path) -> None:
    cmd = [*PYTEST, "-v", "-p", "no:cacheprovider", *CUDA_TESTS, f"--junitxml={xml}", "--durations=5"]
    env = dict(os.environ, APRKIT_TEST_DEVICE=str(ctx.device), PYTHONUNBUFFERED="1")
    ctx.results["command"] = " ".join(cmd[1:])
    ctx.save()  # kept if the section is killed while pytest runs
    code, output = _run_streamed(cmd, env, timeout=max(1.0, ctx.left() - TESTS_MARGIN_S))
    r = ctx.results
    r.update(exit_code=code, output_tail=output[-3000:])
    if xml.is_file():
        r.update(_junit_counts(str(xml)))
    else:  # killed before pytest wrote its report, or it failed to run: count the verbose result lines seen
        words = re.findall(r"^tests/test_cuda\w*\.py::\S+ (PASSED|FAILED|ERROR|SKIPPED)", output, flags=re.M)
        r.update(passed=words.count("PASSED"), failed=words.count("FAILED"), errors=words.count("ERROR"),
                 skipped=words.count("SKIPPED"), total=len(words), no_report=True)
        if code == "timeout":
            r["incomplete"] = True
    counts = f"{r['passed']} passed, {r['failed']} failed, {r['errors']} errors of {r['total']} run"
    if code == "timeout":
        ctx.problem(f"pytest killed at the section's time cap: {counts}")
    elif r.get("no_report"):  # it could not start or stopped early (no module named pytest, a usage error)
        ctx.problem(f"pytest exit code {code} and no test report ({counts}); its output ends: {_last_lines(output)}")
    elif code != 0:
        ctx.problem(f"pytest exit code {code}: {counts}")


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
    ctx.results["note"] = (
        "same work for both: the clean set once + every cell; baseline: the clean set and np.load of each "
        "-C array, float conversion on the host, fp32, contiguous; "
        "aprkit: uint8 from pinned memory streamed to the device and converted there, read ahead by a "
        "thread, AMP + channels_last on CUDA; forward-only: aprkit's model settings on a uint8 batch "
        "already on the device (the limit of the loop); both warmed up with one batch in their settings; "
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
@section("train", cap_s=115, quick_cap_s=40, title="5. Training: an APR-SP step against standard steps")
def run_train(ctx: Context) -> None:
    """Rows ``"B, dtype[, augmentation compiled (default)]"``: first what ``aprkit train`` does on CUDA by default
    (bfloat16 AMP, the step's whole augmentation one graph in CUDA graphs: ``aug.compile: auto``), then eager
    augmentation with float16 AMP (GradScaler: one host sync per step) and bfloat16 AMP (no scaler, so the host runs
    ahead of the device), each timed in interleaved rounds (median)."""
    from benchmarks.bench_train import step_times

    # 5 interleaved rounds of 20 steps (median): with 3 of 10 the 2B step's own spread on a shared host (2026-12-04:
    # a standard 128-step from 5.1 to 9.7 ms between machines) was larger than the 5 % goal
    model, batches, steps = ("small_cnn", [8], 3) if ctx.quick else ("resnet18", [128, 256], 20)
    ctx.results.update(model=model, image_size=32, amp=ctx.is_cuda, channels_last=ctx.is_cuda)
    rows = ctx.results.setdefault("rows", {})
    plan: list[tuple[int, str, dict[str, Any] | bool]] = []
    if ctx.is_cuda and not ctx.quick:
        plan.append((batches[0], "bfloat16", {"mode": "reduce-overhead"}))
    plan += [(b, "float16", False) for b in batches]
    if ctx.is_cuda:
        plan += [(b, "bfloat16", False) for b in batches]
    for b, dtype, compiled in plan:
        # step_times runs AMP on CUDA only: the CPU smoke's rows are float32 and say so
        label = f"{b}, {dtype if ctx.is_cuda else 'float32'}" + (", augmentation compiled (default)" if compiled
                                                                   else "")
        if ctx.left() < (30 if compiled else 5):
            ctx.skip(label)
            continue
        torch.manual_seed(0)
        ctx.log(f"{model} batch {label}")
        try:
            rows[label] = step_times(model, b, 32, ctx.device, steps, deadline=ctx.deadline, aug_compile=compiled,
                                     amp_dtype=dtype, rounds=3 if ctx.quick else 5)
        except Exception as err:  # recorded (the section is an error, the goal "not measured"); the others still run
            ctx.results.setdefault("errors", {})[label] = _err(err)
            ctx.problem(f"row {label} failed")
        ctx.save()
