"""APR-S: recombine the phase of one augmented view of an image with the amplitude of another.

Semantics of the reference ``APRecombination`` (Chen et al., ICCV 2021): apply one random AugMix op
to the image (view A); with probability ``p`` apply a second random op to A (view B) and return,
chosen 50/50, either phase(A) + amplitude(B) or phase(B) + amplitude(A); otherwise return A. The
FFT is 3-D over (C, H, W) (``dims="chw"``; the reference transforms the HWC array over all axes,
which is the same spectrum), or per channel (``dims="hw"``).

The final cast (``cast=``): the reference casts the complex result to uint8, truncating and wrapping out-of-range
values around (260.4 -> 4, -3.2 -> 253: on CIFAR-10 three in four recombined images hold such pixels, 3 % of an
image's pixels on average, an impulse-like speckle); ``cast="round"`` (the default) rounds and clamps to the input's
range ([0, 255] for uint8, [0, 1] for floats), ``cast="wrap"`` is the reference's cast (float images: the same
multiple of 256 levels taken off as the truncated value's, so a float value stays within a level of its uint8 twin
when their recombined values agree; where the float and uint8 views differ by a few levels a recombined value near
0 or 255 may wrap on one side only: on random-noise images a quarter of the pixels then differ by more than a level,
against 9 % with ``"round"``).

* :func:`sample_single_params` / :func:`apr_single` -- the batched functional core.
* :class:`APRSingleBatch` -- a whole ``(B, C, H, W)`` batch on its device (no per-image CPU work).
* :class:`~aprkit.augment.single_image.APRSingle` -- a per-image dataloader transform for PIL images, HWC numpy arrays
  and CHW tensors.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch

from .._checks import (
    CheckedProbability,
    batch_size_of,
    check_chw_layout,
    check_dims,
    check_image_tensor,
    check_nonnegative_int,
    check_param_keys,
    check_positive_int,
    check_probability,
    describe_value,
    eager_cpu,
)
from .._generators import make_generator, worker_generator, worker_seed
from .._replay import ReplayModule
from .._tensors import compute_dtype, to_device
from .._tv import like_input
from ..fourier import Dims
from .functional import CompiledCore, finish, recombine_views, value_range
from .ops import (
    DEFAULT_OPS,
    TABLE_COLS,
    apply_table,
    grey_levels,
    op_params,
    op_table,
    resolve_ops,
    uniform_rows,
    use_dense,
)
from .warp import pixel_matrix

__all__ = ["sample_single_params", "single_params", "SINGLE_DRAWS", "apr_single", "apr_single_core", "param_table",
           "APRSingleBatch", "make_generator", "worker_generator", "worker_seed", "Cast", "CASTS",
           "check_cast", "wrap_levels"]

#: APR-S's final cast: ``"round"`` (round and clamp) or ``"wrap"`` (the reference's uint8 cast: truncate, wrap)
Cast = Literal["round", "wrap"]
CASTS: tuple[str, ...] = get_args(Cast)


def check_cast(cast: str) -> str:
    """Validate APR-S's ``cast`` (``"round"`` or ``"wrap"``)."""
    if cast not in CASTS:
        raise ValueError(f"cast must be one of {', '.join(map(repr, CASTS))}, got {cast!r}")
    return cast


def wrap_levels(rec: torch.Tensor, quantize: bool) -> torch.Tensor:
    """The reference's ``astype(np.uint8)`` of values on the 0-255 scale: truncated toward zero and wrapped modulo
    256 (``quantize``: uint8 images); float images keep their fractions and lose the multiple of 256 that their
    truncated value loses (-0.4 stays -0.4, clamped later; -3.2 -> 252.8)."""
    t = rec.trunc()
    return (t if quantize else rec) - 256 * torch.floor(t / 256)


def _check_severity(severity: float) -> float:
    """``severity`` as a float in (0.1, 10]: any real number (NumPy's too, as ``p`` and the hosts' own severities
    take) or a 0-dim tensor/array; not a bool or a string."""
    value = severity.item() if getattr(severity, "ndim", None) == 0 and hasattr(severity, "item") else severity
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.1 < float(value) <= 10:
        raise ValueError(f"severity must be a number in (0.1, 10], got {severity!r}")
    return float(value)


#: uniforms per image behind APR-S's parameters (:func:`single_params`)
SINGLE_DRAWS = 8


def sample_single_params(
    n: int, p: float = 0.5, severity: float = 3, num_ops: int = 9, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Draw APR-S parameters for ``n`` images, each ``(n,)``: first op, recombination flag, second op, phase source.

    Per item: image ``i`` takes every parameter from row ``i`` of one ``(n, 8)`` block of uniforms
    (:func:`~aprkit.augment.ops.uniform_rows`), so its draws do not depend on the batch size."""
    n, num_ops = check_nonnegative_int(n, "n"), check_positive_int(num_ops, "num_ops")
    p, severity = check_probability(p), _check_severity(severity)
    return single_params(uniform_rows(n, SINGLE_DRAWS, generator), p, severity, num_ops)


def single_params(u: torch.Tensor, p: float, severity: float, num_ops: int) -> dict[str, torch.Tensor]:
    """APR-S's parameters from uniforms ``u`` ``(n, SINGLE_DRAWS)`` (unchecked; :func:`sample_single_params` draws
    them): elementwise, no host sync, so a compiled graph may take the draws and do this part itself."""
    first, second = op_params(u[:, 0:3], num_ops, severity), op_params(u[:, 4:7], num_ops, severity)
    recombine, phase_from_first = u[:, 3] < p, u[:, 7] < 0.5
    out = {f"{k}1": v for k, v in first.items()} | {f"{k}2": v for k, v in second.items()}
    return out | {"recombine": recombine, "phase_from_first": phase_from_first}


_PARAM_KEYS = ("op1", "level1", "negate1", "recombine", "op2", "level2", "negate2", "phase_from_first")
_INTEGER = ("an integer", lambda dt: not dt.is_floating_point and not dt.is_complex and dt != torch.bool)
_BOOL = ("a bool", lambda dt: dt == torch.bool)
_FLOAT = ("a floating", lambda dt: dt.is_floating_point)
_PARAM_KINDS = {"op1": _INTEGER, "op2": _INTEGER, "level1": _FLOAT, "level2": _FLOAT, "negate1": _BOOL,
                "negate2": _BOOL, "recombine": _BOOL, "phase_from_first": _BOOL}
_RECOMBINE, _PHASE = 2 * TABLE_COLS, 2 * TABLE_COLS + 1  # columns of the packed table after the two op tables


def param_table(names: tuple[str, ...], params: dict[str, torch.Tensor], h: int, w: int, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """All per-image APR-S parameters packed in one ``(B, 2 * TABLE_COLS + 2)`` tensor of ``dtype`` on ``device``.

    Built where ``params`` live (host draws: on the host, geometry in float64) and moved in ONE copy
    (pinned, asynchronous) -- the only host->device transfer of an APR-S batch."""
    b = params["op1"].shape[0]
    both = {k: torch.cat([params[f"{k}1"], params[f"{k}2"]]) for k in ("op", "level", "negate")}
    flags = torch.stack([params["recombine"], params["phase_from_first"]], 1).to(device=both["op"].device,
                                                                                  dtype=torch.float64)
    ops = op_table(names, both, h, w)
    table = torch.cat([ops[:b], ops[b:], flags], 1)
    table = table.to(dtype)
    if table.device != device:
        if table.device.type == "cpu" and device.type == "cuda" and not torch.compiler.is_compiling():
            table = table.pin_memory()
        table = to_device(table, device)
    return table


def single_transform_matrix(params: dict[str, torch.Tensor], names: tuple[str, ...], h: int, w: int) -> torch.Tensor:
    """The geometry each APR-S image follows: forward pixel maps ``(B, 3, 3)`` float64 (see ``warp.pixel_matrix``).

    The output takes its phase -- where edges and objects are -- from one view, so it follows that
    view's geometry: the first op's when the image is not recombined or keeps view A's phase, else the
    second op's composed with the first (view B = op2(op1(x))). The other view only lends its
    amplitude spectrum, which carries no positions. Colour ops give the identity."""
    both = {k: torch.cat([params[f"{k}1"], params[f"{k}2"]]) for k in ("op", "level", "negate")}
    m = pixel_matrix(op_table(names, both, h, w)[:, :6], h, w)
    first, second = m.chunk(2)
    follow_b = (params["recombine"] & ~params["phase_from_first"]).to(m.device).view(-1, 1, 1)
    return torch.where(follow_b, second @ first, first)


def _views(x255: torch.Tensor, names: tuple[str, ...], table: torch.Tensor, quantize: bool, dense: bool):
    strategy = "dense" if dense else "grouped"
    a = apply_table(x255, names, table[:, :TABLE_COLS], strategy)
    a = grey_levels(a) if quantize else _zero_empty(a.clamp(0, 255))  # uint8 views hold PIL's truncated levels
    b = apply_table(a, names, table[:, TABLE_COLS:2 * TABLE_COLS], strategy)
    b = grey_levels(b) if quantize else _zero_empty(b.clamp(0, 255))
    return a, b


#: a float view (0..255 scale) whose every value lies within this of 0 is black: a rotated white image keeps pixels at
#: 254.99998 (grid_sample's float rounding), which solarize turned into zeros but a 1.5e-5 residue, whose phase then
#: took the other view's whole amplitude (a texture where the uint8 path gives black; fuzz tester). A view with any
#: content holds far more power than such a residue, which then counts as without phase (no_phase_power)
_EMPTY_TOL = 1e-3


def _zero_empty(v: torch.Tensor) -> torch.Tensor:
    """``v`` ``(N, C, H, W)`` (0..255, a new tensor) with the images that are black to :data:`_EMPTY_TOL` set to exact
    zeros, in place: one reduction pass (and the fill only where an eager CPU call finds such an image)."""
    empty = (v.flatten(1).amax(1) <= _EMPTY_TOL).view(-1, 1, 1, 1)
    return v.masked_fill_(empty, 0.0) if not eager_cpu(v) or bool(empty.any()) else v


def _snap(v: torch.Tensor, tol: float) -> torch.Tensor:
    """``v`` (0..255 scale) with values within ``tol`` of a whole level set to it."""
    near = v.round()
    return torch.where((v - near).abs() <= tol, near, v)


def apr_single(
    x: torch.Tensor, params: dict[str, torch.Tensor], ops: Sequence[str] | None = None, dims: Dims = "chw",
    cast: Cast = "round",
) -> torch.Tensor:
    """APR-S on a batch ``x`` ``(B, C, H, W)`` (uint8 or float in [0, 1]) with parameters from
    :func:`sample_single_params`.

    Returns a new tensor of ``x``'s dtype, device and memory format, clamped to its range (uint8 rounded; with
    ``cast="wrap"`` recombined values are first wrapped as the reference's uint8 cast does, see the module).
    Views of uint8 images are rounded to integers between ops, as the reference's uint8 arrays are.
    Validates once (one ``aminmax`` pass for float input), then runs :func:`apr_single_core`.
    """
    check_chw_layout(check_image_tensor(x, "images", min_ndim=4, max_ndim=4, unit_range=True, overshoot=True,
                                        allow_empty=True))
    names = resolve_ops(ops)
    b = x.shape[0]
    check_param_keys(params, _PARAM_KEYS, "sample_single_params / generate_parameters")
    for key, val in params.items():
        if key not in _PARAM_KINDS:
            continue
        kind, test = _PARAM_KINDS[key]
        if not isinstance(val, torch.Tensor) or not test(val.dtype):
            raise TypeError(f"params[{key!r}] must be {kind} tensor of shape ({b},) (as sample_single_params draws "
                            f"it), got {describe_value(val)}")
        if val.shape != (b,):
            raise ValueError(f"params[{key!r}] must have shape ({b},) for a batch of {b}, got {tuple(val.shape)}")
        if key in ("op1", "op2") and eager_cpu(val) and b and not 0 <= int(val.min()) <= int(val.max()) < len(names):
            raise ValueError(f"params[{key!r}] must hold op indices in [0, {len(names)}) (the {len(names)} ops given; "
                             f"sample_single_params(num_ops={len(names)})), got {int(val.min())}..{int(val.max())}")
        if key in ("level1", "level2") and eager_cpu(val) and b and not bool(((val >= 0.1) & (val <= 10)).all()):
            raise ValueError(f"params[{key!r}] must hold op levels in [0.1, 10] (as sample_single_params draws them "
                             f"for a severity up to 10), got {float(val[~((val >= 0.1) & (val <= 10))][0])}")
    check_cast(cast)
    if b == 0:  # an empty batch comes back as it is, as from the hosts' own transforms
        return x
    return apr_single_core(x, params, names, dims, cast=cast)


def apr_single_core(x: torch.Tensor, params: dict[str, torch.Tensor], names: tuple[str, ...], dims: Dims = "chw",
                    strategy: str = "auto", cast: Cast = "round") -> torch.Tensor:
    """The unchecked core of :func:`apr_single` (``names`` as returned by ``resolve_ops``).

    ``strategy`` as in :func:`aprkit.augment.ops.use_dense`: ``"auto"`` groups images by op on eager CPU
    calls and runs the fixed-shape dense path elsewhere (no host sync; one host->device copy of the
    packed parameters when they were drawn on the host, none when drawn on ``x``'s device). The dense
    path compiles with ``torch.compile(fullgraph=True)``; both give the same numbers (to the last bits for float32
    views, see :mod:`aprkit.augment.ops`).
    """
    h, w = x.shape[-2:]
    cdt = compute_dtype(x)
    table = param_table(names, params, h, w, cdt, x.device)
    quantize = x.dtype == torch.uint8
    scale = 255.0 / value_range(x.dtype)
    x255 = x.to(cdt) if quantize else x.to(cdt) * scale
    if x.dtype in (torch.float16, torch.bfloat16):  # a half-precision k / 255 lies up to a quarter of its step off
        # the level k (float16: 0.06 of a level): snapped, so that posterize, solarize and equalize threshold it as
        # its uint8 twin (a float16 200 / 255 was 199.97: not solarized at 200)
        x255 = _snap(x255, 64 * torch.finfo(x.dtype).eps)
    a, b_view = _views(x255, names, table, quantize, use_dense(x, strategy))
    rec = recombine_views(a, b_view, table[:, _PHASE] > 0.5, dims)
    if cast == "wrap":
        rec = wrap_levels(rec, quantize)
    out = torch.where(table[:, _RECOMBINE].view(-1, 1, 1, 1) > 0.5, rec, a)
    return finish(out if quantize else out / scale, x.dtype, clamp=True, like=x)


class APRSingleBatch(CheckedProbability, CompiledCore, ReplayModule):
    """APR-S on a whole batch ``(B, C, H, W)`` on its device: ``images = aprs_batch(images)``.

    Each image gets its own ops and draws, per item: image ``i`` draws the same whatever the batch size
    (:func:`sample_single_params`). Kornia-style: :meth:`generate_parameters` samples,
    :meth:`apply` replays them deterministically; ``forward`` does both. ``compile_core=True`` (or a dict
    of ``torch.compile`` options, e.g. ``{"mode": "reduce-overhead"}``) makes ``forward`` run
    :func:`apr_single_core` compiled as one graph (the sampling stays eager); on a device, draw from a
    generator there so the whole core is device work. ``cast``: ``"round"`` (round and clamp, the default) or
    ``"wrap"`` (the reference's uint8 cast; see the module).
    """

    core_fn = staticmethod(apr_single_core)
    cast: Cast = "round"  # the default of instances pickled before cast existed
    ops: tuple[str, ...]

    def __init__(self, p: float = 0.5, severity: float = 3, ops: Sequence[str] | None = None, dims: Dims = "chw",
                 generator: torch.Generator | None = None, seed: int | None = None,
                 compile_core: bool | dict[str, Any] = False, cast: Cast = "round") -> None:
        super().__init__()
        self.p = p  # checked whenever it is set (CheckedProbability)
        self.severity = _check_severity(severity)
        self.ops = ops  # type: ignore[assignment]  # checked whenever set (__setattr__), as cast
        check_dims(dims)
        self.dims = dims
        self.cast = cast
        self.generator = make_generator(generator, seed)
        self._base_seed = None if self.generator is None else self.generator.initial_seed()  # see worker_generator
        self._init_compile_core(compile_core)

    def __setattr__(self, name: str, value: Any) -> None:
        # checked whenever set, as p: a list of ops set later failed as an unhashable key, a cast typo ran as "round"
        if name == "ops":
            value = resolve_ops(value)
        elif name == "cast":
            value = check_cast(value)
        super().__setattr__(name, value)

    def generate_parameters(self, batch_shape: torch.Size | Sequence[int], device: torch.device | str | None = None
                            ) -> dict[str, torch.Tensor]:
        """Sample parameters for a batch of shape ``(B, C, H, W)`` (or of size B); tensors ``(B,)`` on ``device``."""
        n = batch_size_of(batch_shape)
        generator = worker_generator(self.generator, self._base_seed)
        params = sample_single_params(n, self.p, self.severity, len(self.ops), generator)
        return {k: to_device(v, device) for k, v in params.items()} if device is not None else params

    def replay(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Deterministic APR-S of ``x`` ``(B, C, H, W)`` with ``params`` (called as ``apply(x, params)``, Kornia-style;
        ``apply(fn)`` is ``nn.Module.apply``, see :mod:`aprkit._replay`)."""
        return apr_single(x, params, self.ops, self.dims, self.cast)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one pass; another augmentation's overshoot passes: the views are clamped
        check_chw_layout(check_image_tensor(x, "images", min_ndim=4, max_ndim=4, unit_range=True, overshoot=True,
                                            allow_empty=True))
        if x.shape[0] == 0:  # an empty batch comes back as it is, as from the hosts' own transforms
            return x
        params = self.generate_parameters(x.shape)  # on the generator's device; the core moves one packed table
        return like_input(self._run_core()(x, params, self.ops, self.dims, cast=self.cast), x)  # an Image stays one

    def extra_repr(self) -> str:
        ops = None if self.ops == DEFAULT_OPS else list(self.ops)  # as the constructor takes them
        cast = "" if self.cast == "round" else f", cast={self.cast!r}"
        return f"p={self.p}, severity={self.severity}, ops={ops!r}, dims={self.dims!r}{cast}"
