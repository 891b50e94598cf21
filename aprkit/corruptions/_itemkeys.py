"""Per-image counter-based random streams (``ItemKeys``, ``item_seeds``) and the hash behind them (not public API).

With ``ItemKeys`` the ``k``-th draw call gives element ``j`` (row-major within the image) of image ``i`` a value that
is a pure function of ``(key_i, k, j)``: a SplitMix64 hash computed on the keys' device, vectorised over the batch (no
Python loop per image, no host generator), so an image's values do not depend on its batch (size, neighbours, slicing,
workers, processes), on the thread count or on the device.

The hash: call ``k`` (and sub-stream ``lane``, for draws that need more numbers per element) gives image ``i``
the stream ``s = mix64(key_i + c(k, lane))``; its ``p``-th 64-bit word is ``mix64(s + (p + 1) * golden)`` (a
SplitMix64 sequence started at ``s``), and element ``j`` takes the 32-bit half ``j % 2`` of word ``j // 2``
(low half first; ``draw``, which ``_random``'s draws turn into uniforms, normals and integers). ``mix64`` is
SplitMix64's finaliser: exact integer math, in torch ops (int64 products wrap as needed, arithmetic right shifts are
masked to logical ones) or, on eager CPU calls, NumPy uint64 ops on the same memory, hashed in cache-sized blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .._checks import check_seed, eager_cpu
from .._hash import stable_hash64
from .._tensor_cache import tensor_cache
from .._tensors import to_device

__all__ = ["item_seeds", "ItemKeys", "mix64_", "words", "draw", "Fill"]

_M64 = (1 << 64) - 1
_GOLDEN, _C1, _C2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # SplitMix64


def _signed(v: int) -> int:
    """The int64 with the bits of the unsigned 64-bit ``v``."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _mix64_int(z: int) -> int:
    """SplitMix64's finaliser of an unsigned 64-bit Python int."""
    z = ((z ^ (z >> 30)) * _C1) & _M64
    z = ((z ^ (z >> 27)) * _C2) & _M64
    return z ^ (z >> 31)


def item_seeds(seed: int, name: str, severity: int, preset: str, indices: Any) -> torch.Tensor:
    """Per-image keys ``(N,)`` int64 (non-negative, 63 bits) of the images at dataset ``indices`` for one corruption.

    Key ``i`` is a function of ``(seed, name, severity, preset, indices[i])`` only (a SplitMix64 mix of
    the index into ``aprkit._hash.stable_hash64`` of the rest), so image ``i`` gets the same corruption whatever batch,
    worker or process it is computed in. The seed, severity and preset are checked here, the name by the public
    :func:`aprkit.corruptions.item_seeds` (a misspelt one would give keys that no writer or evaluation uses).
    """
    from .severity import check_preset, check_severity

    seed = check_seed(seed)  # evaluate's range: a -C set must be one evaluate can regenerate
    severity, preset = check_severity(severity), check_preset(preset)
    idx = _as_tensor(indices)
    if idx.ndim != 1 or idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        raise TypeError(f"indices must be a 1-D sequence of integer dataset indices, "
                        f"got {idx.dtype} shape {tuple(idx.shape)}")
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError(f"indices must be non-negative dataset indices, got minimum {int(idx.min())}")
    base = stable_hash64("aprkit.corruptions", int(seed), name, int(severity), preset) >> 1  # 63 bits
    z = idx.to(device="cpu", dtype=torch.int64, copy=True).add_(1).mul_(_signed(_GOLDEN)).add_(base)  # wraps
    return mix64_(z).bitwise_right_shift_(1).bitwise_and_((1 << 63) - 1)  # the high 63 bits, non-negative


def _as_tensor(values: Any) -> torch.Tensor:
    """``torch.as_tensor(values)``, an empty list, tuple or range as int64 (it would read as float)."""
    if isinstance(values, (list, tuple, range)) and not len(values):
        return torch.empty(0, dtype=torch.int64)
    return torch.as_tensor(values)


class ItemKeys:
    """Per-image counter-based random streams: 63-bit ``keys`` ``(N,)`` (e.g. ``item_seeds``) on a device.

    Every draw call takes the next value of ``counter``; slicing (``keys[a:b]``, or a bool mask) keeps the images'
    keys and the current counter, so a slice draws what the same images draw in the whole batch.
    """

    def __init__(self, keys: Any, device: torch.device | str | None = None, *, counter: int = 0) -> None:
        try:
            k = _as_tensor(keys)
        except (OverflowError, RuntimeError, ValueError, TypeError) as e:
            if "overflow" in str(e).lower():  # a Python int beyond 64 bits
                raise ValueError("seeds must be integers in the int64 range (-2**63 .. 2**63 - 1)") from None
            raise TypeError(f"seeds must be a 1-D integer sequence (one seed per image), got {type(keys).__name__} "
                            f"that torch cannot read as integers ({e})") from None
        if k.ndim != 1 or k.dtype.is_floating_point or k.dtype.is_complex or k.dtype == torch.bool:
            raise TypeError(f"seeds must be a 1-D integer sequence (one seed per image), "
                            f"got {k.dtype} shape {tuple(k.shape)}")
        if k.dtype == torch.uint64 and bool((k.view(torch.int64) < 0).any()):  # would wrap to a negative seed
            raise ValueError("seeds must be integers in the int64 range (-2**63 .. 2**63 - 1); got a uint64 seed "
                             ">= 2**63")
        self.keys = to_device(k, device if device is not None else k.device, torch.int64)  # asynchronous
        self.counter = int(counter)

    def __len__(self) -> int:
        return self.keys.shape[0]

    def __getitem__(self, index: slice | torch.Tensor) -> ItemKeys:
        return ItemKeys(self.keys[index], counter=self.counter)

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def next_call(self) -> int:
        """The index of a new draw call (the counter advances)."""
        self.counter += 1
        return self.counter - 1

    def streams(self, call: int, lane: int = 0) -> torch.Tensor:
        """Stream keys ``(N,)`` of draw ``call``, sub-stream ``lane`` (a further independent stream per image)."""
        if not (0 <= call < 1 << 32 and 0 <= lane < 1 << 32):
            raise ValueError(f"call and lane must be in [0, 2^32), got {call} and {lane}")
        c = _mix64_int((((call << 32) | lane) * _GOLDEN + _GOLDEN) & _M64)
        return mix64_(self.keys + _signed(c))


#: SplitMix64's finaliser: ``z ^= z >> shift``, then ``z *= mult`` (none in the last round)
_ROUNDS = ((30, _C1), (27, _C2), (31, 0))
_ROUNDS_NP = tuple((np.uint64(shift), np.uint64(mult) if mult else None) for shift, mult in _ROUNDS)


def _u64(t: torch.Tensor) -> np.ndarray:
    """The uint64 NumPy view of the int64 CPU tensor ``t`` (same memory)."""
    return t.numpy().view(np.uint64)


def _mix64_np(z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``mix64_`` of uint64 ``z`` in NumPy, in place, with scratch ``t`` (``z``'s shape): its shifts are logical and its
    products wrap (array products do not warn)."""
    for shift, mult in _ROUNDS_NP:
        np.bitwise_xor(z, np.right_shift(z, shift, out=t), out=z)
        if mult is not None:
            np.multiply(z, mult, out=z)
    return z


def mix64_(z: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """SplitMix64's finaliser of int64 ``z``, in place (and returned): logical shifts, wrapping products.
    ``scratch``: an int64 buffer of ``z``'s shape to overwrite (default: a new one).

    Eager CPU calls run the rounds in NumPy on uint64 views of the same memory (``_mix64_np``: no masks, faster 64-bit
    products and a fifth of torch's cost per call: 1.7x faster on cache-sized blocks); elsewhere they are torch ops,
    whose right shifts are arithmetic and so are masked to logical ones. Both are exact: the same bits."""
    t = torch.empty_like(z) if scratch is None else scratch
    if eager_cpu(z):
        _mix64_np(_u64(z), _u64(t))
        return z
    for shift, mult in _ROUNDS:
        torch.bitwise_right_shift(z, shift, out=t).bitwise_and_((1 << (64 - shift)) - 1)
        z.bitwise_xor_(t)
        if mult:
            z.mul_(_signed(mult))
    return z


@tensor_cache(maxsize=32)
def _steps(count: int, device: torch.device) -> torch.Tensor:
    """``(p + 1) * golden`` (int64, wrapped) for ``p < count``: the SplitMix64 increments of words ``0..count-1``."""
    return torch.arange(1, count + 1, dtype=torch.int64, device=device).mul_(_signed(_GOLDEN))


def words(streams: torch.Tensor, count: int) -> torch.Tensor:
    """Words ``0..count-1`` of each stream ``(N,)``: ``(N, count)`` int64."""
    return mix64_(streams[:, None] + _steps(count, streams.device))


#: eager CPU draws are hashed and filled in blocks of at most about this many words: the two 512 KiB word buffers and
#: the block's output stay in a 2 MiB L2 cache (measured at 224 px: 2^15 to 2^17 alike, 2^14 and below pay per call)
_BLOCK_WORDS = 1 << 16


def _blocks(n: int, count: int) -> list[tuple[int, int, int, int]]:
    """Blocks ``(r0, r1, c0, c1)`` of the words ``(n, count)``: groups of whole rows or, for rows over
    ``_BLOCK_WORDS``, about equal column ranges of one row."""
    if count <= _BLOCK_WORDS:
        rows = _BLOCK_WORDS // max(count, 1)
        return [(r, min(r + rows, n), 0, count) for r in range(0, n, rows)]
    step = -(-count // -(-count // _BLOCK_WORDS))
    return [(r, r + 1, c, min(c + step, count)) for r in range(n) for c in range(0, count, step)]


Fill = Callable[[torch.Tensor, torch.Tensor], object]


def draw(keys: ItemKeys, numel: int, dtype: torch.dtype, fill: Fill) -> torch.Tensor:
    """``(N, numel)`` values in ``dtype`` of a new draw call: element ``j`` of image ``i`` is made from the 32-bit half
    ``j % 2`` (low first) of word ``j // 2`` of stream ``i`` (the int32 view of little-endian words, as CPUs and GPUs
    store them). ``fill(w, o)`` writes into ``o`` (a contiguous block of the output) the values of the half-words ``w``
    (int32, ``o``'s shape, free to overwrite), elementwise, so the values do not depend on the blocks.

    Accelerators (and compiled code) hash the whole batch at once with torch ops (``words``). Eager CPU calls hash in
    NumPy and fill block by block (``_blocks``), so that the words and the fill's passes stay in cache: normal draws
    at 224 px 1.4x faster than one whole-batch torch hash for 2 images (the CPU chunk of ``corrupt``), 2.4x for 16."""
    streams = keys.streams(keys.next_call())
    n, count, device = streams.shape[0], (numel + 1) // 2, streams.device
    out = torch.empty(n, numel, dtype=dtype, device=device)
    if not eager_cpu(streams):
        fill(words(streams, count).view(torch.int32)[:, :numel], out)
        return out
    blocks = _blocks(n, count)
    size = max(((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in blocks), default=0)
    z_buf = torch.empty(size, dtype=torch.int64)
    z, t, keys_np, steps = _u64(z_buf), np.empty(size, np.uint64), _u64(streams), _u64(_steps(count, device))
    halves = z_buf.view(torch.int32)
    for r0, r1, c0, c1 in blocks:
        rows, cols = r1 - r0, c1 - c0
        np.add(keys_np[r0:r1, None], steps[c0:c1], out=z[:rows * cols].reshape(rows, cols))  # wraps
        _mix64_np(z[:rows * cols], t[:rows * cols])
        e0, e1 = 2 * c0, min(2 * c1, numel)
        fill(halves[:2 * rows * cols].view(rows, 2 * cols)[:, :e1 - e0], out[r0:r1, e0:e1])
    return out
