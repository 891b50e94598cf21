"""benchmarks/repro/shared_pack.py: the WebP shards rebuild the studies' files with the same pixels and bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.repro import shared_pack


def _fake_shared(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, cls, n in (("train", "airplane", 3), ("train", "cat", 2), ("test", "cat", 2)):
        d = root / "data" / "cifar10" / split / cls
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (root / "data" / "cifar10" / "test_order.csv").write_text("path\ncat/0.png\ncat/1.png\n")
    d = root / "data" / "cue-conflict" / "bear"
    d.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / "bear1-cat2.png")


def test_pack_unpack_round_trip(tmp_path: Path) -> None:
    src, dest = tmp_path / "shared", tmp_path / "dest"
    _fake_shared(src)
    shards = shared_pack.pack(src, tmp_path / "packed", parts=2, workers=1)
    assert len(shards) == 2
    assert sum(shared_pack.unpack(s, dest, workers=1) for s in shards) == 9
    for rel in shared_pack.study_files(src):
        if rel.suffix == ".png":
            assert np.array_equal(np.asarray(Image.open(src / rel)), np.asarray(Image.open(dest / rel))), rel
        else:
            assert (src / rel).read_bytes() == (dest / rel).read_bytes()


def test_cifar10_only_leaves_out_the_cue_conflict_stimuli(tmp_path: Path) -> None:
    _fake_shared(tmp_path)
    files = shared_pack.study_files(tmp_path, cue_conflict=False)
    assert len(files) == 8 and not any("cue-conflict" in str(f) for f in files)


def test_more_parts_than_files_gives_no_empty_shard(tmp_path: Path) -> None:
    """--parts 12 over 9 files wrote empty shards that unpack could not read; --parts 0 is refused."""
    import pytest

    src, dest = tmp_path / "shared", tmp_path / "dest"
    _fake_shared(src)
    shards = shared_pack.pack(src, tmp_path / "packed", parts=12, workers=1)
    assert len(shards) == 9
    assert sum(shared_pack.unpack(s, dest, workers=1) for s in shards) == 9
    with pytest.raises(SystemExit):
        shared_pack.main(["pack", "--shared", str(src), "--out", str(tmp_path / "p0"), "--parts", "0"])
