"""Stable hashes of values: the same integer on every run, platform and process (unlike ``hash()``).

The one place that turns seeds, names and indices into derived seeds (``aprkit.corruptions`` per-image
seeds, ``aprkit.train`` per-step seeds). Nothing here is public API.
"""

from __future__ import annotations

import hashlib

__all__ = ["stable_hash64"]


def stable_hash64(*parts: object, sep: str = "|") -> int:
    """The unsigned 64-bit integer (little-endian) of the 8-byte blake2b digest of ``sep.join(map(str, parts))``.

    Callers keep 63 bits for seeds: ``aprkit.corruptions`` the high ones (``>> 1``), ``aprkit.train`` the
    low ones (``& (2**63 - 1)``); both fixed so that earlier seeds stay valid.
    """
    if not isinstance(sep, str):
        raise TypeError(f"sep must be a str, got {type(sep).__name__}")
    digest = hashlib.blake2b(sep.join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")
