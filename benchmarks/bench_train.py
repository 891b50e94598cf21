"""Training throughput: APR-SP against the same run without APR, and the device input path against the
per-image DataLoader path. All figures are measured in one process and printed as ratios.

    python benchmarks/bench_train.py                       # CPU-sized defaults (ResNet-20, synthetic data)
    python benchmarks/bench_train.py --device cuda --model resnet18 --batch-size 128 --steps 100 \
        --dataset cifar10:../shared/data/cifar10 --workers 8

Rows:
- ``images/s`` of full training epochs (``aprkit.train.fit``, second epoch, so start-up is excluded) for
  ``standard`` (crop + flip), ``apr_sp`` (APR-S + crop + flip, CE(x) + CE(APR-P(x)): two forward passes'
  worth of images per step) on the device path, and both methods on the per-image ``loader`` path.
- ``augmentation share``: the time of the device augmentation alone (APR-S batch + crop + flip + APR-P)
  as a fraction of one APR-SP training step, and the APR-SP step against a standard step on ``2B``
  images, the forward/backward it needs anyway (the goal on GPU: under 5 % overhead). ``step_times`` is
  reused by ``benchmarks/gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_throughput(args: argparse.Namespace, method: str, path: str) -> float:
    """Images/s of the second of two training epochs of ``args.steps`` steps each."""
    from aprkit.train import fit

    overrides = [
        f"model.name={args.model}", f"data.dataset={args.dataset}", f"data.limit={args.steps * args.batch_size}",
        f"optim.batch_size={args.batch_size}", "optim.epochs=2", "optim.milestones=[]", f"aug.method={method}",
        f"data.input_path={path}", f"data.num_workers={args.workers}", "train.eval_every=0", "train.progress=false",
        f"train.device={args.device}", f"data.image_size={args.image_size}", f"aug.compile={args.aug_compile}",
    ]
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    result = fit({}, overrides)
    return float(result["history"][-1]["images_per_s"])


def step_times(model_name: str, batch_size: int, image_size: int, device: torch.device | str, steps: int = 6, *,
               num_classes: int = 10, deadline: float | None = None, aug_compile: bool | dict[str, Any] = False,
               amp_dtype: str = "float16", rounds: int = 3) -> dict[str, float]:
    """Seconds per training step (AMP and channels_last on CUDA) of APR-SP against standard training.

    Measured on one uint8 batch of ``batch_size`` images already on the device: ``aug_s`` the APR-SP
    device augmentation alone (APR-S batch + crop + flip + APR-P), ``apr_sp_step_s`` a whole APR-SP step
    (forward/backward on the ``2B`` batch), ``standard_step_s`` a standard step (crop + flip) on ``B``
    images and ``standard_2b_step_s`` one on ``2B`` images (what APR-SP must cost at least).
    ``aug_share`` is ``aug_s / apr_sp_step_s``; ``overhead_vs_2b`` is
    ``apr_sp_step_s / standard_2b_step_s - 1`` (goal on a GPU: < 5 %). ``aug_compile`` is the config's
    ``aug.compile``: ``True`` or ``torch.compile`` options (e.g. ``{"mode": "reduce-overhead"}``, CUDA graphs)
    compile the step's augmentation as one graph (methods with APR only; ``standard`` stays eager, as in ``aprkit
    train``); three warm-up steps keep compilation and graph capture out of the
    timings. ``amp_dtype`` is ``train.amp_dtype``: ``float16`` steps through a GradScaler (a host sync per step),
    ``bfloat16`` needs none, so the host queues the next step while the device runs. The variants are timed in
    ``rounds`` interleaved rounds of ``steps`` steps each and every figure is the median round (a drift of the
    machine's clocks hits all variants alike).
    """
    from aprkit.distributed import resolve_device
    from aprkit.models import create_model
    from aprkit.train.config import load_config, resolve_amp_dtype
    from aprkit.train.recipe import DeviceAugment, method_loss

    device = resolve_device(str(device))
    cl = device.type == "cuda"
    dtype = resolve_amp_dtype(amp_dtype, device)
    gen = torch.Generator(device=device).manual_seed(0)

    def setup(method: str, n: int):
        cfg = load_config(None, [f"aug.method={method}", f"model.name={model_name}", f"data.image_size={image_size}",
                                 f"aug.compile={json.dumps(aug_compile)}", f"train.amp_dtype={amp_dtype}"])
        aug = DeviceAugment(cfg, device, gen, channels_last=cl)
        model = create_model(model_name, num_classes=num_classes).to(device).train()
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        scaler = torch.amp.GradScaler("cuda", enabled=cl and dtype == torch.float16)
        x8 = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, device=device)
        y = torch.randint(0, num_classes, (n,), device=device)

        def step() -> None:
            x, yy = aug.inputs(x8, y)
            with torch.autocast(device.type, dtype=dtype, enabled=cl):
                loss, _, _ = method_loss(model, x, yy, method)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        def aug_only() -> None:
            aug.inputs(x8, y)

        return step, aug_only

    def timed(fn, n: int) -> float:
        _sync(device)
        t = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(device)
        return (time.perf_counter() - t) / n

    n = max(3, steps)
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda" or benchmark  # as aprkit train sets it on CUDA
    try:
        out = _time_variants(setup, timed, batch_size, n, rounds, deadline)
    finally:
        torch.backends.cudnn.benchmark = benchmark
    out["cudnn_benchmark"] = float(device.type == "cuda" or benchmark)
    return out


def _time_variants(setup, timed, batch_size: int, n: int, rounds: int, deadline: float | None) -> dict[str, float]:
    """The median seconds of each variant of :func:`step_times` over ``rounds`` interleaved rounds."""
    aprsp_step, aug_only = setup("apr_sp", batch_size)
    variants = {"aug_s": aug_only, "apr_sp_step_s": aprsp_step, "standard_step_s": setup("standard", batch_size)[0],
                "standard_2b_step_s": setup("standard", 2 * batch_size)[0]}
    for fn in variants.values():
        for _ in range(3):  # reduce-overhead: compile, warm-up run, CUDA graph capture
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(max(1, rounds)):
        if r and deadline is not None and time.perf_counter() > deadline:
            break
        for key, fn in variants.items():
            times[key].append(timed(fn, n))
    out = {k: statistics.median(v) for k, v in times.items()}
    out["overhead_vs_2b"] = out["apr_sp_step_s"] / out["standard_2b_step_s"] - 1
    out["aug_share"] = out["aug_s"] / out["apr_sp_step_s"]
    out["apr_sp_vs_standard"] = out["apr_sp_step_s"] / out["standard_step_s"]
    out["rounds"] = float(len(times["aug_s"]))
    return out


def augmentation_share(args: argparse.Namespace) -> dict[str, float]:
    """Seconds per step of the device augmentation of APR-SP vs a whole APR-SP step (same batch)."""
    r = step_times(args.model, args.batch_size, args.image_size, args.device, max(3, args.steps // 2),
                   aug_compile=json.loads(args.aug_compile))
    return {"aug_s_per_step": r["aug_s"], "apr_sp_step_s": r["apr_sp_step_s"], "aug_share": r["aug_share"],
            "standard_2b_step_s": r.get("standard_2b_step_s", float("nan")),
            "overhead_vs_2b": r.get("overhead_vs_2b", float("nan"))}


def main() -> None:
    from aprkit.cli._common import nonnegative_int, positive_int

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--dataset", default="synthetic:4096")
    p.add_argument("--image-size", type=positive_int, default=32)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--steps", type=positive_int, default=6, help="training steps per epoch")
    p.add_argument("--workers", type=nonnegative_int, default=2)
    p.add_argument("--threads", type=nonnegative_int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--aug-compile", default="false",
                   help='aug.compile as JSON: false, true or torch.compile options, '
                        'e.g. \'{"mode": "reduce-overhead"}\'')
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args()
    try:  # before any measurement: it was read after four of them
        compile_opts = json.loads(args.aug_compile)
    except json.JSONDecodeError as err:
        p.error(f"--aug-compile must be JSON (false, true or an object such as '{{\"mode\": \"default\"}}'), got "
                f"{args.aug_compile!r}: {err}")
    if not isinstance(compile_opts, (bool, dict)):
        p.error(f"--aug-compile must be false, true or a JSON object of torch.compile options, got {args.aug_compile!r}")
    args.aug_compile = json.dumps(compile_opts)
    if args.threads:  # the step timings too (fit sets train.threads for its epochs only, and puts the count back)
        torch.set_num_threads(args.threads)

    rows = {}
    for method in ("standard", "apr_sp"):
        for path in ("gpu", "loader"):
            rows[f"{method}/{path}"] = epoch_throughput(args, method, path)
    share = augmentation_share(args)
    out = {
        "images_per_s": rows,
        "apr_sp_vs_standard_gpu_path": rows["apr_sp/gpu"] / rows["standard/gpu"],
        "gpu_path_vs_loader_path_standard": rows["standard/gpu"] / rows["standard/loader"],
        "gpu_path_vs_loader_path_apr_sp": rows["apr_sp/gpu"] / rows["apr_sp/loader"],
        **share,
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"device={args.device} model={args.model} batch={args.batch_size} dataset={args.dataset} "
          f"threads={torch.get_num_threads()}")
    for key, value in rows.items():
        print(f"  {key:18s} {value:10.1f} images/s")
    print(f"  APR-SP / standard (device path, images/s)        {out['apr_sp_vs_standard_gpu_path']:.3f}")
    print(f"  device path / per-image loader path, standard     {out['gpu_path_vs_loader_path_standard']:.3f}")
    print(f"  device path / per-image loader path, APR-SP       {out['gpu_path_vs_loader_path_apr_sp']:.3f}")
    print(f"  APR-SP augmentation share of a step               {share['aug_share']:.3%} "
          f"({share['aug_s_per_step'] * 1e3:.2f} ms of {share['apr_sp_step_s'] * 1e3:.2f} ms)")
    print(f"  APR-SP step vs a standard step on 2B images       {share['overhead_vs_2b']:+.2%} "
          f"({share['apr_sp_step_s'] * 1e3:.2f} vs {share['standard_2b_step_s'] * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
