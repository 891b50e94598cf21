"""Carry the studies' data to a GPU machine that cannot see ``../shared``: lossless WebP shards.

A remote machine receives at most ~64 MiB per call, and the CIFAR-10 PNGs alone are 136 MB. Lossless WebP
(``method=2``) stores them in ~0.78 of the PNG bytes (104 MiB for CIFAR-10), so the studies' inputs (CIFAR-10
train and test, ``test_order.csv`` and the cue-conflict stimuli of ``apr_cifar10.NON_CIFAR_SHAPES``) fit in shards
sent with consecutive calls beside the working tree (two in docs/reproductions.md's procedure: four no longer fit beside
the committed checkpoints and results). ``unpack`` rebuilds the same folder
tree as PNGs with the same pixels (checked on every image at ``pack`` time), so a study run with
``--shared DEST`` reads exactly what it reads here. A marker in ``DEST/.unpacked`` makes unpacking the same shard
again a no-op; ``incomplete`` says whether a folder holds all of CIFAR-10 (``gpu_studies.py`` checks it before
training).

    python benchmarks/repro/shared_pack.py pack --shared ../shared --out .gpu_data --parts 2 --cifar10-only
    python benchmarks/repro/shared_pack.py unpack .gpu_data/part0.npz --dest /tmp/shared   # on the GPU machine
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

RAW_SUFFIXES = (".csv", ".txt", ".json")


def study_files(shared: Path, cue_conflict: bool = True) -> list[Path]:
    """Every file the studies read, relative to ``shared``, in a fixed order (``cue_conflict=False``: CIFAR-10 only,
    all that training and the GPU driver's evaluations read; the stimuli serve study 1's natural-image OOD set)."""
    from benchmarks.repro.apr_cifar10 import NON_CIFAR_SHAPES

    root = shared / "data"
    files = sorted((root / "cifar10").glob("*/*/*.png")) + sorted((root / "cifar10").glob("*.csv"))
    if cue_conflict:
        files += sorted(f for c in NON_CIFAR_SHAPES for f in (root / "cue-conflict" / c).glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no CIFAR-10 PNGs under {root}/cifar10")
    return [f.relative_to(shared) for f in files]


def _encode(path: Path) -> bytes:
    """Lossless WebP bytes of an image file (raw bytes for text files); the decode is checked pixel by pixel."""
    if path.suffix in RAW_SUFFIXES:
        return path.read_bytes()
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="WEBP", lossless=True, quality=50, method=2)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as back:
        if not np.array_equal(np.asarray(back.convert("RGB")), np.asarray(rgb)):
            raise RuntimeError(f"lossless WebP changed the pixels of {path}")
    return data


def pack(shared: Path, out: Path, parts: int, workers: int, cue_conflict: bool = True) -> list[Path]:
    """Write ``out/part{i}.npz`` shards of about equal size; return their paths."""
    rel = study_files(shared, cue_conflict)
    parts = max(1, min(parts, len(rel)))  # no empty shards
    with ProcessPoolExecutor(workers) as pool:
        blobs = list(pool.map(_encode, [shared / r for r in rel], chunksize=256))
    sizes = np.array([len(b) for b in blobs], dtype=np.int64)
    bounds = np.searchsorted(np.cumsum(sizes), np.arange(1, parts) * sizes.sum() / parts).tolist()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (lo, hi) in enumerate(zip([0, *bounds], [*bounds, len(rel)])):
        offsets = np.concatenate([[0], np.cumsum(sizes[lo:hi])]).astype(np.int64)
        blob = np.frombuffer(b"".join(blobs[lo:hi]), dtype=np.uint8)
        path = out / f"part{i}.npz"
        names = np.frombuffer("\n".join(str(r) for r in rel[lo:hi]).encode(), dtype=np.uint8)
        np.savez(path, blob=blob, offsets=offsets, paths=names)
        paths.append(path)
        print(f"{path}: {hi - lo} files, {path.stat().st_size / 2**20:.1f} MiB", file=sys.stderr)
    return paths


def _write(item: tuple[str, bytes, str]) -> None:
    rel, data, dest = item
    target = Path(dest) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix in RAW_SUFFIXES:
        target.write_bytes(data)
        return
    with Image.open(io.BytesIO(data)) as im:
        im.convert("RGB").save(target, format="PNG", compress_level=1)


def unpack(shard: Path, dest: Path, workers: int) -> int:
    """Rebuild the files of one shard under ``dest``; return how many."""
    with np.load(shard) as z:
        blob, offsets, rel = z["blob"].tobytes(), z["offsets"], z["paths"].tobytes().decode().split("\n")
    rel = rel[: len(offsets) - 1]  # an empty shard holds no names ("".split gives [""])
    items = [(r, blob[offsets[i]:offsets[i + 1]], str(dest)) for i, r in enumerate(rel)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write, items, chunksize=256))
    print(f"{shard}: {len(items)} files under {dest}", file=sys.stderr)
    return len(items)


#: the CIFAR-10 images per split that training and the GPU evaluations need
CIFAR10_SIZES = {"train": 50_000, "test": 10_000}


def count_images(shared: Path) -> dict[str, int]:
    root = shared / "data" / "cifar10"
    def pngs(split: Path) -> int:
        return sum(1 for d in split.iterdir() if d.is_dir() for f in os.scandir(d) if f.name.endswith(".png"))

    return {split: pngs(root / split) if (root / split).is_dir() else 0 for split in CIFAR10_SIZES}


def incomplete(shared: Path, smoke: bool = False) -> str | None:
    """Why ``shared`` cannot feed the studies (a shard not unpacked, say), or None; ``smoke``: any images will do."""
    n = count_images(shared)
    want = {k: 1 for k in CIFAR10_SIZES} if smoke else CIFAR10_SIZES
    short = {k: f"{n[k]} of {v}" for k, v in want.items() if n[k] < v}
    if not (shared / "data" / "cifar10" / "test_order.csv").is_file():
        short["test_order.csv"] = "missing"
    if short:
        what = ", ".join(f"{k}: {v}" for k, v in short.items())
        return (f"CIFAR-10 under {shared}/data/cifar10 is incomplete ({what}): unpack both shards there first "
                "(the first call's shard survives only while the machine stays warm)")
    return None


def unpack_once(shards: Sequence[str | Path], dest: Path, workers: int) -> list[dict[str, Any]]:
    """Unpack each shard into ``dest`` unless a marker says it was (``dest/.unpacked/<name>-<bytes>``); per shard
    its status, files and wall time (an error is recorded, not raised: :func:`incomplete` tells what is missing)."""
    steps = []
    for shard in map(Path, shards):
        t0 = time.perf_counter()
        step: dict[str, Any] = {"shard": str(shard), "status": "ok"}
        try:
            marker = dest / ".unpacked" / f"{shard.name}-{shard.stat().st_size}"
            if marker.is_file():
                step.update(status="ok (unpacked before)", files=int(marker.read_text()))
            else:
                step["files"] = unpack(shard, dest, workers)
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(str(step["files"]))
        except Exception as err:  # recorded; incomplete() then says whether anything can run
            step.update(status="error", error=f"{type(err).__name__}: {err}")
        step["wall_s"] = time.perf_counter() - t0
        steps.append(step)
    return steps


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--shared", default=None, help="folder with data/cifar10 (default: $APRKIT_SHARED or ../shared)")
    a.add_argument("--out", required=True)
    a.add_argument("--parts", type=int, default=3)
    a.add_argument("--cifar10-only", action="store_true",
                   help="leave out the cue-conflict stimuli (8.5 MiB; only study 1's OOD evaluation reads them)")
    b = sub.add_parser("unpack")
    b.add_argument("shards", nargs="+", type=Path)
    b.add_argument("--dest", required=True, type=Path)
    for q in (a, b):
        q.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    if args.cmd == "pack" and args.parts < 1:
        p.error(f"--parts must be at least 1, got {args.parts}")
    if args.cmd == "pack":
        from benchmarks.repro.common import shared_root

        pack(shared_root(args.shared), Path(args.out), args.parts, args.workers, cue_conflict=not args.cifar10_only)
    else:
        failed = [s for s in unpack_once(args.shards, args.dest, args.workers) if s["status"] == "error"]
        if failed:
            raise SystemExit("; ".join(f"{s['shard']}: {s['error']}" for s in failed))


if __name__ == "__main__":
    main()
