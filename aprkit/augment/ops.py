"""AugMix-style operations, batched in torch: one op per image, all images in one pass, no host sync.

The ops and their severity scaling follow AugMix's ``augmentations.py`` (as used by the reference
APR code): a level is drawn uniformly in ``[0.1, severity)``, then

* ``posterize``: keep ``4 - int(level * 4 / 10)`` bits;  ``solarize``: invert pixels ``>= 256 - int(level * 256 / 10)``;
* ``rotate``: ``+-int(level * 30 / 10)`` degrees about the centre;  ``shear_x/y``: ``+-level * 0.3 / 10``
  (about the top-left corner, as PIL's affine transform);  ``translate_x/y``: ``+-int(level * size / 3 / 10)``
  pixels, where ``size`` is the image's own width/height (the reference uses a global ``IMAGE_SIZE``);
* ``autocontrast``, ``equalize``: per channel, no level;  ``color``, ``contrast``, ``brightness``,
  ``sharpness`` (not in the default list: they overlap the test corruptions): factor ``level * 1.8 / 10 + 0.1``.

Geometric ops sample bilinearly with black fill (:mod:`.warp`). Work is done on a float 0..255 scale in the input's
dtype (float32 for float16/bfloat16 input, cast back after: a half-precision sampling grid moves pixels and blackens
borders, and the CPU's half-precision ``grid_sample`` gives wrong values), also under ``torch.autocast``
(:func:`.warp.autocast_off`).

Two strategies give the same numbers (each image's result depends only on that image and its row of
the parameter table from :func:`op_table`; uint8 views bit for bit, float32 views of a few colour ops on 1-channel
images to the last bits, up to 3e-7):

* ``"grouped"`` (eager CPU default): images are grouped by op on the host and each op runs on its own
  group only -- least arithmetic, measured 2x faster on the CPU.
* ``"dense"`` (default on accelerators and under ``torch.compile``): one warp of the whole batch and each
  colour op over the whole batch, selected per image with ``torch.where`` -- a fixed, small number of
  kernels, no data-dependent shapes, no host sync, nothing moved between host and device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .._tensor_cache import tensor_cache
from .._tensors import to_device
from .._text import nearest_names
from .draws import _ROWS_PER_CALL, op_params, sample_op_params, uniform_rows, uniform_rows_shape  # noqa: F401
from .warp import _HALF, _warp, autocast_off

__all__ = ["DEFAULT_OPS", "ALL_OPS", "GEOMETRIC_OPS", "TABLE_COLS", "resolve_ops", "uniform_rows", "uniform_rows_shape",
           "op_params",
           "sample_op_params", "op_table",
           "apply_table", "apply_ops", "use_dense", "grey_levels", "is_geometric"]

DEFAULT_OPS: tuple[str, ...] = (
    "autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x", "translate_y",
)
ALL_OPS: tuple[str, ...] = DEFAULT_OPS + ("color", "contrast", "brightness", "sharpness")
GEOMETRIC_OPS: tuple[str, ...] = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_GEOMETRIC = GEOMETRIC_OPS
_BLEND = ("color", "contrast", "brightness", "sharpness")
# columns of the per-image parameter table (see op_table)
_THETA, _ARG, _OP, _GEO = slice(0, 6), 6, 7, 8
TABLE_COLS = 9
STRATEGIES = ("auto", "grouped", "dense")
_INT_TOL = 1e-4  # grey levels: a float image's k / 255 * 255 may come out a hair below the integer k


def resolve_ops(ops: Sequence[str] | None) -> tuple[str, ...]:
    """Validate a sequence of op names (``None`` -> :data:`DEFAULT_OPS`)."""
    if ops is None:
        return DEFAULT_OPS
    if isinstance(ops, str) or not isinstance(ops, Sequence) or len(ops) == 0:
        raise ValueError(f"ops must be a non-empty sequence of names from {ALL_OPS}, got {ops!r}")
    for name in ops:
        if name not in ALL_OPS:
            raise ValueError(f"unknown op {name!r}{nearest_names(str(name), ALL_OPS)}; expected names from {ALL_OPS}")
    return tuple(ops)


def _rows(op: torch.Tensor, names: tuple[str, ...], wanted: Sequence[str]) -> torch.Tensor | None:
    """Bool mask of the images whose op is one of ``wanted`` (``None`` when ``names`` has none of them)."""
    mask = None
    for k, name in enumerate(names):
        if name in wanted:
            mask = op == k if mask is None else mask | (op == k)
    return mask


# The level-derived values, one column each: (maxval, integer?, then value -> value * alpha + beta, power of 2?,
# signed?) for rotate, shear_x, shear_y, translate_x, translate_y, posterize, solarize, blend ops, no argument.
_KINDS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "posterize", "solarize", "blend", "none")


def _build_constants(names: tuple[str, ...], h: int, w: int, device: torch.device) -> dict[str, torch.Tensor]:
    f64: dict[str, Any] = dict(dtype=torch.float64, device=device)
    # per op name: which of the values it uses (geometric ops and ops without a level also take the colour
    # argument 1, so that no colour candidate computed densely for them divides by 0), then the geometric flag
    arg_kind = {"posterize": "posterize", "solarize": "solarize"} | {n: "blend" for n in _BLEND}
    coef = [[float(c == n or c == arg_kind.get(n, "none")) for c in _KINDS] + [float(n in _GEOMETRIC)] for n in names]
    # normalised inverse map from the features (cos, sin, shear_x, shear_y, translate_x, translate_y): rotation about
    # the centre, shears about the top-left corner, translations in pixels (derivation in op_table's docstring)
    r, ir = h / w, w / h
    theta = [[1, 0, 0, 0, 1, 0], [0, -r, 0, ir, 0, 0], [0, r, r, 0, 0, 0], [0, 0, 0, ir, 0, ir],
             [0, 0, 2 / w, 0, 0, 0], [0, 0, 0, 0, 0, 2 / h]]
    return {
        "maxval": torch.tensor([30, 0.3, 0.3, w / 3, h / 3, 4, 256, 1.8, 0], **f64),
        "is_int": torch.tensor([1, 0, 0, 1, 1, 1, 1, 0, 0], dtype=torch.bool, device=device),
        "alpha": torch.tensor([1, 1, 1, 1, 1, 1, -1, 1, 1], **f64),
        "beta": torch.tensor([0, 0, 0, 0, 0, 4, 256, 0.1, 1], **f64),  # posterize: 2 ** (4 + int(level * 4 / 10))
        "is_pow": torch.tensor([0, 0, 0, 0, 0, 1, 0, 0, 0], dtype=torch.bool, device=device),
        "neg": torch.tensor([-1, -1, -1, -1, -1, 1, 1, 1, 1], **f64),
        "coef": torch.tensor(coef, **f64),
        "theta": torch.tensor(theta, **f64),
    }


_cached_constants = tensor_cache(64)(_build_constants)


def _constants(names: tuple[str, ...], h: int, w: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The small constant tables, built once per key (on a device: copied there once, not per batch); built afresh
    inside ``torch.compile``'s trace, where they become graph constants."""
    if torch.compiler.is_compiling():
        return _build_constants(names, h, w, device)
    return _cached_constants(names, h, w, device)


def op_table(names: tuple[str, ...], params: dict[str, torch.Tensor], h: int, w: int) -> torch.Tensor:
    """Per-image parameters of one op each, ``(B, TABLE_COLS)`` float64 on the parameters' device.

    Columns: the inverse affine map ``(2, 3)`` in ``affine_grid``'s normalised coordinates (identity for
    colour ops), the colour op's argument (posterize step ``2**bits_dropped``, solarize threshold or blend
    factor; 1 otherwise), the op index and a geometric flag. About 15 elementwise ops over the batch, the
    same for any number of op names (no loops, no host sync).

    The map: with pixel centres at ``i + 0.5`` and ``x_n = 2 x / w - 1``, rotating by ``a`` about the
    centre, shearing about the top-left corner and translating by ``(tx, ty)`` pixels (one of them per image)
    gives ``[[cos a, r (sh_x - sin a), r sh_x + 2 tx / w], [(sin a + sh_y) / r, cos a, sh_y / r + 2 ty / h]]``
    with ``r = h / w``.
    """
    op, level, negate = params["op"], params["level"], params["negate"]
    if op.numel() and op.device.type == "cpu" and not torch.compiler.is_compiling():
        lo, hi = int(op.min()), int(op.max())
        if lo < 0 or hi >= len(names):
            raise ValueError(f"params['op'] must index the {len(names)} ops, got values in [{lo}, {hi}]")
    k = _constants(names, h, w, op.device)
    q = level.to(device=op.device, dtype=torch.float64).unsqueeze(1) * k["maxval"] / 10  # int(level * maxval / 10) ...
    v = torch.addcmul(k["beta"], torch.where(k["is_int"], q.floor(), q), k["alpha"])
    v = torch.where(k["is_pow"], torch.pow(2.0, v), v)
    v = v * torch.where(negate.to(op.device).unsqueeze(1), k["neg"], 1.0)
    coef = k["coef"][op]  # (B, 10): which value each image uses, then the geometric flag
    v = v * coef[:, :-1]
    rad = torch.deg2rad(v[:, 0:1])
    theta = torch.cat([torch.cos(rad), torch.sin(rad), v[:, 1:5]], 1) @ k["theta"]
    arg = v[:, 5:].sum(1, keepdim=True)
    return torch.cat([theta, arg, op.to(torch.float64).unsqueeze(1), coef[:, -1:]], 1)


def is_geometric(names: tuple[str, ...], op: torch.Tensor) -> torch.Tensor:
    """Bool mask ``(B,)``: whether op ``names[op[i]]`` moves pixels (rotate, shear, translate)."""
    mask = _rows(op, names, _GEOMETRIC)
    return torch.zeros_like(op, dtype=torch.bool) if mask is None else mask


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """PIL's autocontrast per channel: ``x * scale + offset`` with ``scale = 255 / (hi - lo)``, ``offset = -lo * scale``
    (PIL's own form of the stretch, so values that PIL truncates just below an integer land there too)."""
    flat = x.flatten(-2)
    if torch.is_grad_enabled() and x.requires_grad:  # torch 2.11 has no aminmax backward (amin/amax: same gradient)
        lo, hi = flat.amin(dim=-1), flat.amax(dim=-1)
    else:
        lo, hi = flat.aminmax(dim=-1)
    span = (hi - lo)[..., None, None]
    ok = span > 0
    scale = torch.where(ok, 255.0 / span, 1.0)
    return x * scale + torch.where(ok, -lo[..., None, None] * scale, 0.0)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL's equalize per channel (histogram of the grey levels, see :func:`grey_levels`), in exact integer
    arithmetic."""
    b, c, h, w = x.shape
    v = grey_levels(x.detach()).long().reshape(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device, dtype=torch.long).scatter_add_(1, v, v.new_ones(()).expand_as(v))
    last = hist.gather(1, v.amax(dim=1, keepdim=True))  # count of the highest value present
    step = torch.div(h * w - last, 255, rounding_mode="floor")
    cum = torch.cumsum(hist, 1) - hist  # exclusive
    half = torch.div(step, 2, rounding_mode="floor")
    lut = torch.div(half + cum, step.clamp(min=1), rounding_mode="floor").clamp(max=255)
    out = lut.gather(1, v).to(x.dtype).reshape(b, c, h, w)
    return torch.where((step > 0).reshape(b, c, 1, 1), out, x)


def grey_levels(x: torch.Tensor) -> torch.Tensor:
    """The uint8 grey level PIL would hold for ``x`` (0..255 scale): truncated, as PIL's resampling and
    autocontrast store their results, so a float image thresholds exactly as its uint8 twin."""
    return torch.floor(x + _INT_TOL).clamp(0, 255)


def _posterize(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return torch.floor(grey_levels(x) / q) * q


def _solarize(x: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
    return torch.where(grey_levels(x) >= thr, 255.0 - x, x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    return x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (degenerate + factor * (x - degenerate)).clamp(0, 255)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageFilter.SMOOTH``: the 3x3 filter inside, the border pixels kept (all of them below 3 x 3)."""
    if x.shape[-2] < 3 or x.shape[-1] < 3:
        return x
    k = torch.full((3, 3), 1 / 13, dtype=x.dtype, device=x.device)
    k[1, 1] = 5 / 13
    inner = F.conv2d(x, k.expand(x.shape[1], 1, 3, 3), groups=x.shape[1])
    return F.pad(inner, (1, 1, 1, 1)) + x * F.pad(torch.zeros_like(inner), (1, 1, 1, 1), value=1.0)


def _color_op(name: str, x: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
    """Colour op ``name`` on ``x`` ``(N, C, H, W)`` with per-image argument ``arg`` ``(N, 1, 1, 1)`` (see op_table)."""
    if name == "autocontrast":
        return _autocontrast(x)
    if name == "equalize":
        return _equalize(x)
    if name == "posterize":
        return _posterize(x, arg)
    if name == "solarize":
        return _solarize(x, arg)
    if name == "color":
        return _blend(_gray(x).expand_as(x), x, arg)
    if name == "contrast":
        return _blend(_gray(x).mean(dim=(-3, -2, -1), keepdim=True).expand_as(x), x, arg)
    if name == "brightness":
        return _blend(torch.zeros_like(x), x, arg)
    if name == "sharpness":
        return _blend(_smooth(x), x, arg)
    raise ValueError(f"unknown op {name!r}")


def use_dense(x: torch.Tensor, strategy: str = "auto") -> bool:
    """Whether ``strategy`` (``"auto"``, ``"grouped"`` or ``"dense"``) runs the dense path for ``x``.

    ``"auto"``: grouped on eager CPU calls, dense on accelerators and under ``torch.compile``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "auto":
        return x.device.type != "cpu" or torch.compiler.is_compiling()
    return strategy == "dense"


def _apply_dense(x: torch.Tensor, names: tuple[str, ...], table: torch.Tensor) -> torch.Tensor:
    op = table[:, _OP].view(-1, 1, 1, 1)
    arg = table[:, _ARG].view(-1, 1, 1, 1)
    out = None
    colour = [n for n in dict.fromkeys(names) if n not in _GEOMETRIC]
    for name in colour:
        cand = _color_op(name, x, arg)
        rows = _rows(op, names, (name,))  # not None: name is one of names
        out = cand if out is None or rows is None else torch.where(rows, cand, out)
    if len(colour) < len(set(names)):
        warped = _warp(x, table[:, _THETA])
        out = warped if out is None else torch.where(table[:, _GEO].view(-1, 1, 1, 1) > 0.5, warped, out)
    assert out is not None
    return out


def _apply_grouped(x: torch.Tensor, names: tuple[str, ...], table: torch.Tensor) -> torch.Tensor:
    op_host = table[:, _OP].detach().to("cpu", torch.long)
    out = torch.empty_like(x)
    groups = [(name, _rows(op_host, names, (name,))) for name in dict.fromkeys(names) if name not in _GEOMETRIC]
    groups.append(("geometric", _rows(op_host, names, _GEOMETRIC)))
    for name, mask in groups:
        rows = None if mask is None else mask.nonzero().flatten()
        if rows is None or not rows.numel():
            continue
        i = rows.to(x.device)
        sub = table.index_select(0, i)
        if name == "geometric":
            res = _warp(x.index_select(0, i), sub[:, _THETA])
        else:
            res = _color_op(name, x.index_select(0, i), sub[:, _ARG].view(-1, 1, 1, 1))
        out.index_copy_(0, i, res)
    return out


def apply_table(x: torch.Tensor, names: tuple[str, ...], table: torch.Tensor, strategy: str = "auto") -> torch.Tensor:
    """Apply op ``names[table[i, op]]`` to image ``i`` of ``x`` ``(B, C, H, W)`` (float, 0..255 scale).

    ``table`` ``(B, TABLE_COLS)`` from :func:`op_table`, best already on ``x``'s device in ``x``'s dtype.
    Returns a new float tensor; every image gets exactly one op. ``strategy`` as in :func:`use_dense`.
    Runs in ``x``'s dtype under ``torch.autocast`` too (:func:`.warp.autocast_off`).
    """
    if x.dtype in _HALF:
        return apply_table(x.float(), names, table, strategy).to(x.dtype)
    table = table.to(device=x.device, dtype=x.dtype)
    with autocast_off(x.device):
        if use_dense(x, strategy):
            return _apply_dense(x, names, table)
        return _apply_grouped(x, names, table)


def apply_ops(x: torch.Tensor, names: tuple[str, ...], params: dict[str, torch.Tensor], strategy: str = "auto"
              ) -> torch.Tensor:
    """Apply op ``names[params['op'][i]]`` to image ``i`` of ``x`` ``(B, C, H, W)`` (float, 0..255 scale).

    ``params`` as drawn by :func:`sample_op_params` (host or device tensors ``(B,)``). Builds the
    per-image table where the parameters live (host parameters: one copy to the device), then
    :func:`apply_table`. Returns a new float tensor of the same shape.
    """
    table = op_table(names, params, x.shape[-2], x.shape[-1])
    return apply_table(x, names, to_device(table, x.device, torch.float32 if x.dtype in _HALF else x.dtype), strategy)
