"""Stable hashes of values: the same integer on every run, platform and process (unlike ``hash()``).

The one place that turns seeds, names and indices into derived seeds (``aprkit.corruptions`` per-image
seeds, ``aprkit.train`` per-step seeds). Nothing here is public API.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["stable_hash64", "path_state"]


def stable_hash64(*parts: object, sep: str = "|") -> int:
    """The unsigned 64-bit integer (little-endian) of the 8-byte blake2b digest of ``sep.join(map(str, parts))``.

    Callers keep 63 bits for seeds: ``aprkit.corruptions`` the high ones (``>> 1``), ``aprkit.train`` the
    low ones (``& (2**63 - 1)``); both fixed so that earlier seeds stay valid.
    """
    if not isinstance(sep, str):
        raise TypeError(f"sep must be a str, got {type(sep).__name__}")
    digest = hashlib.blake2b(sep.join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def path_state(path: str | os.PathLike, depth: int = 2) -> str:
    """A short hash of what lies at ``path`` down to ``depth`` levels: every entry's relative name, size and
    modification time (nanoseconds). Result caches keyed by a data folder's path alone returned stale numbers after
    its files were rewritten (``aprkit corrupt --overwrite``), renamed or added (a ``test_order.csv``); this catches
    every change at the top ``depth`` levels (files replaced or added there, folders added, removed or renamed) and,
    through folder times, files added or removed one level further down. A file overwritten in place deeper than that
    keeps its folder's time. Not seen: another version copied in with its sizes and modification times kept (``cp
    -p``, ``rsync -a``); status-change times would see it but differ between the nodes of a ``torchrun`` run that
    each staged the same data, whose ranks must agree on every key."""
    root = Path(path)
    h = hashlib.blake2b(digest_size=8)
    todo: list[tuple[Path, int, frozenset[str]]] = [(root, 0, frozenset())]
    while todo:
        folder, level, above = todo.pop()  # above: the real folders it lies in (a link back up to one is a loop)
        real = os.path.realpath(folder)
        if real in above:
            continue
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except NotADirectoryError:  # a file: its own size and time
            st = folder.stat()
            h.update(f"{folder.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            continue
        for e in entries:
            try:
                st = e.stat()
            except FileNotFoundError:  # a dangling link (an editor's .#lock): its own entry, as readers skip it
                st = e.stat(follow_symlinks=False)
            h.update(f"{Path(e.path).relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            if e.is_dir() and level + 1 < depth:
                todo.append((Path(e.path), level + 1, above | {real}))
    return h.hexdigest()


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends on every part (stable across runs, platforms and processes): one seed per item, per
    purpose, from a run's seed."""
    return stable_hash64(*parts, sep="/") & ((1 << 63) - 1)
