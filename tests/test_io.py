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
