"""Atomic writes (aprkit._io): complete files or none, no temporary leftovers."""

from __future__ import annotations

import pytest
import torch

from aprkit._io import atomic_torch_save, atomic_write, atomic_write_text


def test_atomic_write_text_and_torch_save_roundtrip(tmp_path):
    p = atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert p.read_text(encoding="utf-8") == "héllo\n"
    q = atomic_torch_save({"w": torch.arange(3)}, tmp_path / "b.pt")
    assert torch.equal(torch.load(q)["w"], torch.arange(3))
    assert sorted(f.name for f in tmp_path.rglob("*.tmp")) == []


def test_failed_write_keeps_old_file_and_leaves_no_tmp(tmp_path):
    target = atomic_write_text(tmp_path / "c.txt", "old")

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert list(tmp_path.glob("*.tmp")) == []


def test_durable_writes_fsync_and_cache_writes_do_not(tmp_path, monkeypatch):
    import os

    from aprkit.eval.engine.cache import ResultCache, atomic_write_json

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    atomic_write_text(tmp_path / "report.md", "x")  # deliverables: durable by default
    atomic_write_json(tmp_path / "results.json", {"a": 1})
    assert len(synced) == 2
    atomic_write_text(tmp_path / "scratch.txt", "y", durable=False)
    cache = ResultCache(tmp_path / "cache")
    cache.put("k", {"accuracy": 0.5})  # a cache file lost in a crash is a miss: atomic rename, no fsync
    assert len(synced) == 2
    assert (tmp_path / "scratch.txt").read_text() == "y" and cache.get("k") == {"accuracy": 0.5}
    assert list(tmp_path.rglob("*.tmp")) == []
