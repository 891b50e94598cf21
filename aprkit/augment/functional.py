"""Functional core of the APR augmentations: deterministic given their parameters, batched, differentiable.

* :func:`apr_pair` -- APR-P: image ``i`` keeps its phase and takes the amplitude of image ``perm[i]``
  of the same batch. One real FFT of the batch serves both roles (the partner spectrum is a
  permutation of it) and the amplitude swap multiplies by ``|Z[perm]| / |Z|`` (no trigonometry).
* :func:`recombine_views` -- APR-S recombination of two views of the same images: the phase of one
  view with the amplitude of the other, chosen per image.
* :func:`sample_pair_params` -- the random draws of APR-P (permutation and selection mask).

Sampling lives here only for APR-P; the classes in :mod:`aprkit.augment.pair` and
:mod:`aprkit.augment.single` wrap these functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._checks import (
    check_dims,
    check_finite_spectrum,
    check_image_tensor,
    check_nonnegative_int,
    check_not_0_255,
    check_probability,
    describe_value,
    eager_cpu,
)
from .._tensors import compute_dtype, generator_device, keep_layout, needs_grad, restore_dtype, to_device
from ..fourier import (
    Dims,
    irfftn,
    rfftn,
    spectral_magnitude,
    spectral_power,
    transfer_amplitude,
    with_amplitude,
)
from ..fourier.spectra import _ROUNDING_EPS

__all__ = [
    "CompiledCore",
    "apr_pair",
    "apr_pair_core",
    "apr_pair_with_dc",
    "needs_finite_check",
    "swap_with_partner",
    "recombine_views",
    "recombine_views_numpy",
    "sample_pair_params",
    "pair_draws",
    "pair_mask",
    "value_range",
    "finish",
    "keep_layout",
]


def value_range(dtype: torch.dtype) -> float:
    """Upper end of the pixel range convention: 255 for uint8, 1.0 for floating images."""
    return 255.0 if dtype == torch.uint8 else 1.0


def finish(out: torch.Tensor, dtype: torch.dtype, clamp: bool, like: torch.Tensor | None = None) -> torch.Tensor:
    """Cast a float result to ``dtype``; uint8 is always rounded and clamped, floats clamped to [0, 1] if asked.
    ``like``: the input, whose memory format the result keeps (:func:`keep_layout`)."""
    if clamp and dtype != torch.uint8:
        out = out.clamp(0.0, 1.0)
    out = restore_dtype(out, dtype)
    return out if like is None else keep_layout(out, like)


def swap_with_partner(
    z: torch.Tensor, perm: torch.Tensor, *, rows: torch.Tensor | None = None, inplace: bool = False,
    dims: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Half spectrum ``z`` ``(N, ...)`` with each row's phase and the amplitude of row ``perm[i]``.

    ``rows`` (optional, like ``perm``): keep only rows ``z[rows[i]]`` (phase) with amplitude ``|z[perm[i]]|``.
    Computes ``z * |z[perm]| / |z|``; a bin where ``|z| == 0`` (to the rounding of the transform over ``dims``,
    :func:`~aprkit.fourier.spectra.no_phase_power`) has no phase and stays 0 (``zero_bins="zero"`` of
    :mod:`aprkit.fourier.mixing`): a grey image's channel frequencies 1 and 2 (``dims="chw"``) and a dead
    feature channel stay empty, where the reference formula ``|Z_p| * exp(i * angle(Z))`` (``angle(0) == 0``)
    would sum the partner's amplitude there into a spike at pixel (0, 0).
    Without autograd it runs on squared magnitudes, ``z * sqrt(|z[perm]|^2 / |z|^2)`` (no trigonometry,
    no complex ``abs``), and with ``inplace=True`` it overwrites ``z`` (a spectrum the caller owns).
    Eager CPU calls look for zero bins with one ``amin`` and mask them (``torch.where``) only where there are some;
    elsewhere they are always masked (:func:`~aprkit.fourier.mixing.transfer_amplitude`).
    """
    if needs_grad(z):
        mag = spectral_magnitude(z)
        own = (z, mag) if rows is None else (z.index_select(0, rows), mag.index_select(0, rows))
        return with_amplitude(own[0], mag.index_select(0, perm), own[1], zero_bins="zero", dims=dims)
    m2 = spectral_power(z)
    m2_own = m2
    if rows is not None:  # a fresh gathered copy: free to overwrite
        z, m2_own, inplace = z.index_select(0, rows), m2.index_select(0, rows), True
    m2_partner = m2.index_select(0, perm)  # a fresh copy: transfer_amplitude may overwrite it
    return transfer_amplitude(z, m2_own, m2_partner, inplace=inplace, zero_bins="zero", dims=dims)


def _check_perm(perm: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    if not isinstance(perm, torch.Tensor) or perm.dtype not in (torch.int64, torch.int32):
        got = getattr(perm, "dtype", type(perm).__name__)
        raise TypeError(f"perm must be an integer torch.Tensor of shape ({batch},), got {got}")
    if perm.shape != (batch,):
        raise ValueError(f"perm must have shape ({batch},) (one partner index per image), got {tuple(perm.shape)}")
    if eager_cpu(perm) and perm.numel() and (int(perm.min()) < 0 or int(perm.max()) >= batch):
        raise ValueError(
            f"perm must hold partner indices in [0, {batch}), got values from {int(perm.min())} to {int(perm.max())}"
        )
    return to_device(perm, device, torch.int64)


def _check_mask(mask: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = getattr(mask, "dtype", type(mask).__name__)
        raise TypeError(f"mask must be a bool torch.Tensor of shape ({batch},), got {got}")
    if mask.shape != (batch,):
        raise ValueError(f"mask must have shape ({batch},) (one flag per image), got {tuple(mask.shape)}")
    return to_device(mask, device)


def apr_pair_core(
    x: torch.Tensor,
    perm: torch.Tensor,
    mask: torch.Tensor | None = None,
    fft_dims: tuple[int, ...] = (-3, -2, -1),
    clamp: bool = False,
    check_finite: bool = False,
) -> torch.Tensor:
    """The unchecked hot path of :func:`apr_pair`: no validation and no host sync on accelerators.

    ``perm`` ``(B,)`` int64 and ``mask`` ``(B,)`` bool (or ``None``) must already be on ``x``'s device;
    ``fft_dims`` as returned by ``check_dims``. ``check_finite=True`` raises ``ValueError`` for NaN/inf
    images from their DC terms (O(B)) on eager CPU calls only: on accelerators that read would be a host
    sync (and under ``torch.compile`` a graph break), so there nothing is checked and a non-finite image
    comes out NaN, as does every image that takes its amplitude (unselected images are returned as
    they are). Compiles with ``torch.compile(fullgraph=True)``.
    """
    out, dc = apr_pair_with_dc(x, perm, mask, fft_dims, clamp, with_dc=check_finite and needs_finite_check(x))
    if dc is not None:
        check_finite_spectrum(dc, x.dtype)
    return out


def needs_finite_check(x: torch.Tensor) -> bool:
    """Whether APR-P checks ``x`` for NaN/inf: float images on eager CPU calls (free there, a host sync elsewhere)."""
    return x.dtype != torch.uint8 and eager_cpu(x)


def apr_pair_with_dc(
    x: torch.Tensor,
    perm: torch.Tensor,
    mask: torch.Tensor | None,
    fft_dims: tuple[int, ...],
    clamp: bool,
    with_dc: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`apr_pair_core` without the check: ``(out, dc)``, ``dc`` the images' DC terms (their pixel sums,
    real ``(B, [C,] 1, 1)``) if ``with_dc``, else ``None``.

    The one graph that ``APRPair(compile_core=...)`` compiles: the finiteness check on ``dc`` (a host read)
    then runs eagerly outside it.
    """
    xf = x.to(compute_dtype(x))
    z = rfftn(xf, fft_dims)
    dc = z[..., :1, :1].real.clone() if with_dc else None  # before the in-place swap below
    spec = swap_with_partner(z, perm, inplace=True, dims=fft_dims)
    out = irfftn(spec, [x.shape[d] for d in fft_dims], fft_dims)
    if mask is None:
        return finish(out, x.dtype, clamp, like=x), dc
    if clamp and x.dtype != torch.uint8:
        out = out.clamp(0.0, 1.0)  # the recombined images only: unselected ones come back exactly as given
    return finish(torch.where(mask.view(-1, 1, 1, 1), out, xf), x.dtype, False, like=x), dc


def apr_pair(
    x: torch.Tensor,
    perm: torch.Tensor,
    mask: torch.Tensor | None = None,
    dims: Dims = "chw",
    clamp: bool = False,
) -> torch.Tensor:
    """APR-P on a batch ``x`` ``(B, C, H, W)``: image ``i`` keeps its phase, takes the amplitude of ``x[perm[i]]``.

    ``mask`` ``(B,)`` bool selects the images to recombine (the others are returned exactly);
    ``None`` recombines all. Returns ``x``'s dtype and device; uint8 is rounded and clamped, floats
    are clamped to [0, 1] only when ``clamp=True``, in ``x``'s memory format (channels_last stays).
    Differentiable in ``x``; ``x`` is not modified.
    Validates once (shapes and dtypes; on eager CPU calls also the ``perm`` values and finiteness, from the
    spectrum's DC terms), then runs :func:`apr_pair_core`. On accelerators and under ``torch.compile`` the
    value checks are skipped (no host sync, no graph breaks): NaN/inf images come out NaN.
    """
    check_image_tensor(x, "images", min_ndim=4, max_ndim=4, check_finite=False, allow_empty=True)
    if clamp:
        check_not_0_255(x)
    fft_dims = check_dims(dims, x)  # a channels-last batch would be transformed over the wrong axes under "hw"
    b = x.shape[0]
    perm = _check_perm(perm, b, x.device)
    mask = _check_mask(mask, b, x.device)
    if b == 0:  # an empty batch comes back as it is, as from apr_single and the APR modules
        return x
    return apr_pair_core(x, perm, mask, fft_dims, clamp, check_finite=True)


def _check_views(a: torch.Tensor, b: torch.Tensor, phase_from_a: object) -> None:
    """Shape/dtype/device checks of :func:`recombine_views` (free: no pass over the values)."""
    check_image_tensor(a, "a", min_ndim=4, max_ndim=4, check_finite=False)
    if a.dtype == torch.uint8:
        raise TypeError("a and b must be floating views (N, C, H, W) of one floating dtype, got uint8 (call .float())")
    if not isinstance(b, torch.Tensor) or b.dtype != a.dtype:
        raise TypeError(f"b must have a's dtype {a.dtype} (a floating view of the same images), "
                        f"got {describe_value(b)}")
    if b.shape != a.shape or b.device != a.device:
        raise ValueError(f"b must match a in shape and device, one view each of the same images: a is "
                         f"{tuple(a.shape)} on {a.device}, b is {tuple(b.shape)} on {b.device}")
    if isinstance(phase_from_a, bool):
        return
    if not isinstance(phase_from_a, torch.Tensor) or phase_from_a.dtype != torch.bool:
        raise TypeError(f"phase_from_a must be a bool or a bool tensor of shape ({a.shape[0]},), got "
                        f"{describe_value(phase_from_a)}")
    if phase_from_a.shape != (a.shape[0],):
        raise ValueError(f"phase_from_a must have shape ({a.shape[0]},) (one flag per image), "
                         f"got {tuple(phase_from_a.shape)}")


def recombine_views(
    a: torch.Tensor, b: torch.Tensor, phase_from_a: torch.Tensor | bool = True, dims: Dims = "chw"
) -> torch.Tensor:
    """APR-S recombination of two float views ``a``, ``b`` ``(N, C, H, W)`` of the same images.

    Where ``phase_from_a[i]`` the result has the phase of ``a[i]`` and the amplitude of ``b[i]``,
    otherwise the phase of ``b[i]`` and the amplitude of ``a[i]``. One real FFT of both views
    stacked; returns ``(N, C, H, W)`` in the views' dtype (no clamping; half precision is computed in float32).

    ``a`` and ``b`` must have the same shape, the same floating dtype and device; ``phase_from_a`` is a bool or a
    bool tensor ``(N,)``. Only shapes, dtypes and devices are checked (no pass over the values).
    """
    fft_dims = check_dims(dims)
    _check_views(a, b, phase_from_a)
    n = a.shape[0]
    z = rfftn(torch.cat([a, b]).to(compute_dtype(a)), fft_dims)
    own = torch.arange(n, device=z.device)
    if isinstance(phase_from_a, bool):
        phase_rows, amp_rows = (own, own + n) if phase_from_a else (own + n, own)
    else:
        sel = phase_from_a.to(z.device)
        phase_rows, amp_rows = torch.where(sel, own, own + n), torch.where(sel, own + n, own)
    spec = swap_with_partner(z, amp_rows, rows=phase_rows, dims=fft_dims)
    return irfftn(spec, [a.shape[d] for d in fft_dims], fft_dims).to(a.dtype)


def recombine_views_numpy(views: np.ndarray, phase_from_first: bool, dims: Dims = "chw") -> np.ndarray:
    """Per-image APR-S recombination on NumPy views ``(2, H, W, C)`` (float32), returning float32 ``(H, W, C)``.

    The same computation as :func:`recombine_views` for one image, in ``scipy.fft`` (much lower
    per-call overhead than torch for single small images). ``dims="chw"`` transforms over
    (H, W, C), the reference's own axes; ``"hw"`` over (H, W).
    """
    import scipy.fft as sfft

    axes = (1, 2, 3) if check_dims(dims) == (-3, -2, -1) else (1, 2)
    z = sfft.rfftn(views, axes=axes)
    mag = np.abs(z)
    i, j = (0, 1) if phase_from_first else (1, 0)
    zp, mp, amp = z[i], mag[i], mag[j]
    norm = np.sqrt(np.square(mp).sum(axis=tuple(a - 1 for a in axes), keepdims=True))
    ok = mp > np.maximum(_ROUNDING_EPS * np.finfo(mp.dtype).eps * norm, 1e-12)  # as fourier.spectra.no_phase_magnitude
    if ok.all():
        spec = zp * (amp / mp)
    else:  # a bin without phase stays 0, as in swap_with_partner
        spec = zp * np.where(ok, amp / np.where(ok, mp, 1), 0).astype(mp.dtype)
    return sfft.irfftn(spec, s=[views.shape[a] for a in axes], axes=[a - 1 for a in axes])


def sample_pair_params(
    batch_size: int,
    p: float = 0.6,
    per_sample: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Draw APR-P parameters: ``perm`` ``(B,)`` int64 partner indices and ``mask`` ``(B,)`` bool.

    With ``per_sample=False`` one draw decides for the whole batch (``mask`` all True or all False,
    as in the reference ``mix_data``); otherwise each image is selected with probability ``p``.
    Draws happen on the generator's device (CPU by default) and are then moved to ``device``.
    """
    batch_size = check_nonnegative_int(batch_size, "batch_size")  # a NumPy integer too, as sample_single_params
    p = check_probability(p)
    u, perm = pair_draws(batch_size, per_sample, generator)
    mask = pair_mask(u, p, batch_size)
    dev = torch.device(device) if device is not None else perm.device
    return {"perm": to_device(perm, dev), "mask": to_device(mask, dev).contiguous()}


def pair_draws(batch_size: int, per_sample: bool = False, generator: torch.Generator | None = None,
               out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The random draws of :func:`sample_pair_params` (unchecked), on the generator's device: the selection uniforms
    ``u`` (``(B,)`` with ``per_sample``, else ``(1,)``) and the partners ``perm`` ``(B,)``; ``out``: float32 and int64
    buffers of those shapes there to draw into (the same numbers)."""
    gdev = generator_device(generator)
    u_out, perm_out = (None, None) if out is None else out
    u = torch.rand(batch_size if per_sample else 1, generator=generator, device=gdev, out=u_out)
    return u, torch.randperm(batch_size, generator=generator, device=gdev, out=perm_out)


def pair_mask(u: torch.Tensor, p: float, batch_size: int) -> torch.Tensor:
    """The selection ``(B,)`` bool of APR-P from its uniforms ``u`` (:func:`pair_draws`): ``u < p``, one draw for all
    when ``u`` holds one (an expanded view)."""
    return (u < p).expand(batch_size)


class CompiledCore:
    """Mixin of the APR modules with ``compile_core``: ``core_fn`` (the unchecked core), compiled on first use with
    ``torch.compile(core_fn, fullgraph=True, **options)`` when ``compile_core`` is ``True`` or a dict of options."""

    core_fn: Any

    def _init_compile_core(self, compile_core: bool | dict[str, Any]) -> None:
        if not isinstance(compile_core, (bool, dict)):
            raise TypeError(
                f"compile_core must be a bool or a dict of torch.compile options, got {type(compile_core).__name__}"
            )
        self.compile_core = compile_core
        self._core: Any = None

    def _run_core(self) -> Any:
        """``core_fn``, or its compiled graph (built once, lazily) if ``compile_core``."""
        if not self.compile_core:
            return self.core_fn
        if self._core is None:
            import types

            options = {"fullgraph": True} | ({} if self.compile_core is True else self.compile_core)
            # a copy of the function with a code object of its own: torch.compile caches graphs per code object, so
            # modules compiling the one module-level core shared one cache and its recompile limit (8 settings of
            # dtype, dims, clamp, ... per process, then a hard error under fullgraph)
            fn = self.core_fn
            own = types.FunctionType(fn.__code__.replace(co_name=fn.__code__.co_name), fn.__globals__, fn.__name__,
                                     fn.__defaults__, fn.__closure__)
            own.__kwdefaults__, own.__qualname__ = fn.__kwdefaults__, fn.__qualname__
            self._core = torch.compile(own, **options)
        return self._core

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (DataLoader workers, ``torch.save``) without the compiled graph, which is rebuilt on first use."""
        state = dict(self.__dict__)
        state["_core"] = None
        return state
