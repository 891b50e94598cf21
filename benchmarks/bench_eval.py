"""Throughput of a full CIFAR-10-C-style evaluation: aprkit's streaming runner vs a robustbench-style loop.

Both evaluate the same model, in the same run, on the same generated dataset in the published
CIFAR-10-C layout (``<corruption>.npy`` uint8 ``(5N, 32, 32, 3)`` + ``labels.npy``, written to a
temporary folder and deleted afterwards):

- baseline (how robustbench's CIFAR-10-C loader and ``clean_accuracy`` work): ``np.load`` the whole
  ``.npy`` per corruption, convert each severity to a float tensor on the CPU, then feed batches;
- aprkit: ``evaluate(model, suite="corruption", corrupted="cifar10-c:TMP")`` — memory-mapped uint8
  batches streamed to the device, converted there (AMP on CUDA; channels_last for convolutional
  models on every device, which oneDNN on the CPU runs faster too), plus the clean set and every
  calibration metric per cell.

The baseline's ``torch.tensor(np.transpose(nhwc))`` keeps NHWC strides, i.e. it feeds channels_last
inputs by accident; a harness that feeds contiguous NCHW batches spends 15-25 % more time in the
forward pass of ResNet-20 on this CPU (what left aprkit at 0.77x before it switched to channels_last).

The two methods take turns per corruption (``--interleave corruption``, the default; aprkit then
re-evaluates the clean set once per corruption, and those images count in its total), so a shared
machine whose speed drifts over seconds favours neither; ``--interleave run`` alternates whole runs.

Prints images/s of both (fastest of ``--repeats`` full evaluations), the ratio and the ratio of every
repeat, the forward time per image of each, the share of wall time spent inside the model's forward
pass, and checks that both give the same accuracy per cell. Goals: >= 1.0x and >= 90 % in forward
on CPU; >= 1.5x on a GPU.

    python benchmarks/bench_eval.py                  # CPU, 200 images per severity
    python benchmarks/bench_eval.py --device cuda --n-per-severity 2000
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class TimedForward(nn.Module):
    """Wraps a model, counts the images it sees and (``timed=True``) accumulates the wall time of its forward
    pass, synchronising CUDA around it (which also stops host work from overlapping the device's)."""

    def __init__(self, model: nn.Module, timed: bool = True) -> None:
        super().__init__()
        self.model = model
        self.timed = timed
        self.seconds = 0.0
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        if not self.timed:
            return self.model(x)
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        sync()
        t = time.perf_counter()
        y = self.model(x)
        sync()
        self.seconds += time.perf_counter() - t
        return y


def make_cifar_c(root: Path, n: int, corruptions: list[str], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write a CIFAR-10-C-layout dataset with ``n`` images per severity; returns the clean images and labels."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    for c in corruptions:
        stack = [np.clip(base.astype(np.int16) + rng.integers(-8 * s, 8 * s + 1, size=base.shape), 0, 255).astype(np.uint8) for s in range(1, 6)]
        np.save(root / f"{c}.npy", np.concatenate(stack))
    np.save(root / "labels.npy", np.tile(labels, 5))
    return base, labels


def baseline(model: nn.Module, root: Path, corruptions: list[str], batch_size: int, device: torch.device) -> dict:
    """robustbench-style: whole .npy per corruption, float conversion on the CPU, then batches."""
    accs = {}
    with torch.no_grad():
        for c in corruptions:
            x_all = np.load(root / f"{c}.npy")
            y_all = np.load(root / "labels.npy")
            n = x_all.shape[0] // 5
            for s in range(1, 6):
                x = torch.tensor(np.transpose(x_all[(s - 1) * n : s * n], (0, 3, 1, 2))).float() / 255.0
                y = torch.tensor(y_all[(s - 1) * n : s * n])
                correct = 0
                for i in range(0, n, batch_size):
                    out = model(x[i : i + batch_size].to(device))
                    correct += int((out.argmax(1).cpu() == y[i : i + batch_size]).sum())
                accs[(c, s)] = correct / n
    return accs


def compare(
    net: nn.Module,
    device: torch.device,
    *,
    n_per_severity: int = 200,
    batch_size: int = 250,
    repeats: int = 3,
    interleave: str = "corruption",
    corruptions: list[str] | None = None,
    deadline: float | None = None,
    time_forward: bool = True,
) -> dict:
    """Time the robustbench-style loop and ``evaluate`` on the same generated -C set; returns every figure.

    ``net`` is evaluated as given by the baseline (a deep copy) and by aprkit (which may convert it to
    channels_last and run it under AMP on CUDA). ``deadline`` (``time.perf_counter()`` value): no new
    repeat starts after it (at least one is always run). ``time_forward=False`` skips the synchronised
    forward timing (on a GPU it would serialise aprkit's overlapped streaming); forward shares are then None.
    """
    from aprkit.eval import evaluate
    from aprkit.eval.inference import TensorImageDataset
    from aprkit.eval.metrics import CORRUPTIONS

    if interleave not in ("corruption", "run"):
        raise ValueError(f"interleave must be 'corruption' or 'run', got {interleave!r}")
    corruptions = list(corruptions or CORRUPTIONS)
    net = net.to(device).eval()
    base_model = TimedForward(copy.deepcopy(net), time_forward)  # same weights; evaluate() may make its copy channels_last
    model = TimedForward(net, time_forward)
    with tempfile.TemporaryDirectory(prefix="aprkit-bench-c-") as tmp:
        root = Path(tmp)
        clean, labels = make_cifar_c(root, n_per_severity, corruptions)
        with torch.no_grad():  # warm-up (allocator, kernels)
            base_model(torch.rand(batch_size, 3, 32, 32, device=device))
        data = TensorImageDataset(torch.from_numpy(clean).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels))

        def run_baseline(unit: list[str]) -> dict:
            return baseline(base_model, root, unit, batch_size, device)

        def run_ours(unit: list[str]) -> dict:  # no cache folder: every cell is computed
            return evaluate(model, suite="corruption", data=data, corrupted=f"cifar10-c:{root}", corruptions=unit,
                            device=device, batch_size=batch_size, progress=False, report=False, model_id="bench")

        # interleave per corruption (default): both methods take turns every few seconds, so a machine
        # whose speed drifts (shared CPUs) favours neither; aprkit then also re-evaluates the clean set
        # once per corruption (counted in its images). "run": each method does all cells in one go.
        units = [[c] for c in corruptions] if interleave == "corruption" else [corruptions]
        timings: dict[str, list[tuple[float, int, float]]] = {"baseline": [], "ours": []}
        ref: dict = {}
        cells: dict = {}
        for r in range(repeats):
            if r and deadline is not None and time.perf_counter() > deadline:
                break
            totals = {"baseline": [0.0, 0, 0.0], "ours": [0.0, 0, 0.0]}
            for j, unit in enumerate(units):
                order = [("baseline", run_baseline), ("ours", run_ours)]
                for name, fn in order if (r + j) % 2 == 0 else order[::-1]:  # alternate who goes first
                    timed = base_model if name == "baseline" else model
                    timed.seconds, timed.images = 0.0, 0
                    t0 = time.perf_counter()
                    out = fn(unit)
                    tot = totals[name]
                    tot[0] += time.perf_counter() - t0
                    tot[1] += timed.images
                    tot[2] += timed.seconds
                    if name == "baseline":
                        ref.update(out)
                    else:
                        cells.update(out["corruption"]["cells"])
            for name, tot in totals.items():
                timings[name].append(tuple(tot))
    best = {k: min(v, key=lambda t: t[0] / t[1]) for k, v in timings.items()}  # fastest repeat of each
    pair_ratios = [(b[0] / b[1]) / (o[0] / o[1]) for b, o in zip(timings["baseline"], timings["ours"])]
    (t_base, n_base, fwd_base), (t_ours, n_ours, fwd_ours) = best["baseline"], best["ours"]
    diff = max(abs(cells[c][str(s)]["accuracy"] - a) for (c, s), a in ref.items())

    def fwd(key: str, t_wall: float, t_fwd: float) -> dict:
        if not time_forward:
            return {"forward_share": None, "forward_ms_per_img": None}
        return {"forward_share": t_fwd / t_wall, "forward_ms_per_img": min(t[2] / t[1] for t in timings[key]) * 1e3}

    return {
        "device": str(device), "batch_size": batch_size, "n_per_severity": n_per_severity,
        "corruptions": len(corruptions), "repeats": len(pair_ratios), "interleave": interleave,
        "baseline": {"images": n_base, "seconds": t_base, "img_s": n_base / t_base, **fwd("baseline", t_base, fwd_base)},
        "aprkit": {"images": n_ours, "seconds": t_ours, "img_s": n_ours / t_ours, **fwd("ours", t_ours, fwd_ours)},
        "ratio": (n_ours / t_ours) / (n_base / t_base),
        "ratio_per_repeat": pair_ratios,
        "max_accuracy_diff": diff,
    }


def main(argv: list[str] | None = None) -> int:
    from aprkit.eval.inference import resolve_device
    from aprkit.models import create_model, load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-per-severity", type=int, default=200, help="images per corruption x severity (published: 10000)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--checkpoint", default=None, help="weights (default: random init; speed does not depend on them)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=3, help="full evaluations by each method; the fastest counts")
    p.add_argument("--interleave", choices=["corruption", "run"], default="corruption",
                   help="take turns per corruption (default, robust to a drifting machine) or per whole run")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.checkpoint:
        net = load_model(args.model, num_classes=10, checkpoint=args.checkpoint, device=device,
                         random_init=args.checkpoint is None)  # timing only: random weights are fine
    else:  # random weights on purpose: speed does not depend on them
        net = create_model(args.model, num_classes=10)
    r = compare(net, device, n_per_severity=args.n_per_severity, batch_size=args.batch_size, repeats=args.repeats,
                interleave=args.interleave)
    base, ours = r["baseline"], r["aprkit"]
    print(f"device {device}, torch threads {torch.get_num_threads()}, model {args.model}, batch {args.batch_size}, "
          f"{args.n_per_severity} images x {r['corruptions']} corruptions x 5 severities, best of {args.repeats} runs, "
          f"interleaved per {args.interleave}")
    print(f"baseline (robustbench-style): {base['images']} images in {base['seconds']:.2f} s = {base['img_s']:,.0f} img/s; "
          f"forward {100 * base['forward_share']:.1f} % of wall time")
    print(f"aprkit evaluate:              {ours['images']} images in {ours['seconds']:.2f} s = {ours['img_s']:,.0f} img/s; "
          f"forward {100 * ours['forward_share']:.1f} % of wall time")
    print(f"forward pass alone, fastest run: baseline {base['forward_ms_per_img']:.3f} ms/img, "
          f"aprkit {ours['forward_ms_per_img']:.3f} ms/img")
    print(f"ratio aprkit / baseline: {r['ratio']:.2f}x (images/s, best run of each); "
          f"max per-cell accuracy difference {r['max_accuracy_diff']:.2e}")
    print(f"per-repeat ratios: {' '.join(f'{x:.2f}' for x in r['ratio_per_repeat'])} "
          f"(median {float(np.median(r['ratio_per_repeat'])):.2f}x)")
    goal = 1.5 if device.type == "cuda" else 1.0
    ok = r["ratio"] >= goal and (device.type == "cuda" or ours["forward_share"] >= 0.9)
    print(f"goal: >= {goal}x" + ("" if device.type == "cuda" else " and >= 90 % in forward") + f" -> {'met' if ok else 'NOT met'}")
    return 0 if r["max_accuracy_diff"] < 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
