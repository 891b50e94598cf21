"""Carry the studies' data to a GPU machine that cannot see ``../shared``: lossless WebP shards.

A remote machine receives at most ~64 MiB per call, and the CIFAR-10 PNGs alone are 136 MB. Lossless WebP
(``method=2``) stores them in ~0.78 of the PNG bytes, so the studies' inputs (CIFAR-10 train and test,
``test_order.csv`` and the cue-conflict stimuli of ``apr_cifar10.NON_CIFAR_SHAPES``) fit in two shards,
sent with two consecutive calls. ``unpack`` rebuilds the same folder tree as PNGs with the same pixels
(checked on every image at ``pack`` time), so a study run with ``--shared DEST`` reads exactly what it reads here.

    python benchmarks/repro/shared_pack.py pack --shared ../shared --out .gpu_data --parts 2
    python benchmarks/repro/shared_pack.py unpack .gpu_data/part0.npz --dest /tmp/shared   # on the GPU machine
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

RAW_SUFFIXES = (".csv", ".txt", ".json")


def study_files(shared: Path) -> list[Path]:
    """Every file the studies read, relative to ``shared``, in a fixed order."""
    from benchmarks.repro.apr_cifar10 import NON_CIFAR_SHAPES

    root = shared / "data"
    files = sorted((root / "cifar10").glob("*/*/*.png")) + sorted((root / "cifar10").glob("*.csv"))
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


def pack(shared: Path, out: Path, parts: int, workers: int) -> list[Path]:
    """Write ``out/part{i}.npz`` shards of about equal size; return their paths."""
    rel = study_files(shared)
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
    items = [(r, blob[offsets[i]:offsets[i + 1]], str(dest)) for i, r in enumerate(rel)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write, items, chunksize=256))
    print(f"{shard}: {len(items)} files under {dest}", file=sys.stderr)
    return len(items)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--shared", default=None, help="folder with data/cifar10 (default: $APRKIT_SHARED or ../shared)")
    a.add_argument("--out", required=True)
    a.add_argument("--parts", type=int, default=2)
    b = sub.add_parser("unpack")
    b.add_argument("shards", nargs="+", type=Path)
    b.add_argument("--dest", required=True, type=Path)
    for q in (a, b):
        q.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        from benchmarks.repro.common import shared_root

        pack(shared_root(args.shared), Path(args.out), args.parts, args.workers)
    else:
        for shard in args.shards:
            unpack(shard, args.dest, args.workers)


if __name__ == "__main__":
    main()
