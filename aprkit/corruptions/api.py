"""Functional entry points: ``corrupt`` on batches, ``corrupt_image`` on single PIL/NumPy images.

``corrupt(images, name, severity, preset=None, generator=None)`` applies one of the 19
CIFAR-10-C / ImageNet-C corruptions to a batch ``(..., C, H, W)`` (uint8 in [0, 255] or float in
[0, 1], CPU or CUDA) and returns a tensor of the same shape, dtype and device. The severity
parameters are the published ones of the chosen preset (``severity.PARAMS``; by default the preset made for
the image size, ``severity.preset_for_size``; an explicit preset far from it warns); all randomness comes
from ``generator`` (same seed, same output), or with ``seeds=`` (one key per image, e.g.
``item_seeds(seed, name, severity, preset, dataset_indices)``) from counter-based per-image streams
computed on the images' device (``_itemkeys.ItemKeys``), so that image ``i``'s result does not depend on the
batch it is computed in, on the thread count or on the device.

Fidelity (``benchmarks/fidelity_corruptions.py``; results in ``benchmarks/results/corruption_fidelity/``; first
2,000 CIFAR-10 test images, severities 3 and 5, against ``make_cifar_c.py``; CODE_VERSION 5 and 6): the deterministic
corruptions are within 49.4-54.0 dB PSNR of the original code, JPEG and pixelate identical (both are Pillow's
bytes), and ResNet-20 accuracy on aprkit's output is within 1.45 points of the original's for every corruption and
severity. At 224 px against ``imagecorruptions`` (the pip package of the ImageNet-C functions;
``--vs-imagecorruptions``, 96 upsampled test images, severities 1, 3, 5) every deterministic corruption is within
one level (JPEG and pixelate identical) and the random ones change the images by the same mean amount to within 5 %,
except ``elastic_transform``: imagecorruptions 1.1 replaced it with a version of its own, and aprkit follows
``make_imagenet_c.py``, the code that made ImageNet-C. uint8 results are truncated, as the scripts store
``np.uint8(result)`` (with 5e-5 of a level for float32 error below a whole number); aprkit rounded them until
version 14 (half a level brighter on average, one level off in about half of all values): with the scripts' own
random draws fed in, contrast and the blurs now match their output but for a few values per ten thousand (float32
against their float64) and every other corruption is within one level in at most a few values per thousand
(corruption reviewers, session 55).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .._checks import check_chw_layout, check_image_tensor, check_seed
from .._tensors import autocast_off
from .._text import nearest_names
from . import blur, digital, noise, weather
from . import spatter as _spatter
from ._common import as_float, finish, level_images
from ._random import ItemKeys
from ._random import item_seeds as _item_seeds
from .names import BENCHMARK, EXTRA, canonical_name, check_name
from .severity import PRESET_INFO, params, resolve_preset

__all__ = ["CODE_VERSION", "BASE_VERSION", "corruption_version", "BENCHMARK", "EXTRA", "CORRUPTIONS",
           "list_corruptions", "check_name", "corrupt", "corrupt_image", "item_seeds"]

#: version of the corruption code, raised whenever any corruption's output for a given (seed, item) changes (how:
#: below, ``BASE_VERSION`` and ``_VERSIONS``); each corruption's own version (:func:`corruption_version`) is part of
#: every cache key of its generated cells
#: 3: faster batched path (issue 17); FFT/direct filters, motion blur and elastic grids round differently (a few
#: uint8 values in 10^5 move by one); per-image seeds draw the same numbers (one generator for a whole batch
#: draws per CPU chunk, now smaller)
#: 4: per-image seeds (``seeds=``, the eval's generated cells, the -C writers) draw from counter-based streams
#: hashed on the images' device (``_random.ItemKeys``) instead of one CPU ``torch.Generator`` per image: every
#: value drawn with seeds changes (same distributions); one generator for the batch draws as before
#: 5: pixelate on 8-bit images is Pillow's BOX resize byte for byte (its fixed-point rounding: ties of 2- and
#: 4-pixel means round up, where half-to-even rounding moved up to half the pixels by one level)
#: 6: Gaussian filters run as banded or dense matrix products (``_separable``) instead of FFTs for radii above 8:
#: values move by float rounding; on 16 random 224-px images about 45 uint8 values in 2.4 million moved by one level
#: in gaussian_blur 3-5 and elastic_transform 1-2 of the imagenet preset, and imagenet spatter 2's edge map
#: followed one such value; radii up to 8 give the same values as before (no cifar or tinyimagenet output changed
#: on a sample of 8 images per corruption and severity)
#: 7: water spatter's first box blur truncates to OpenCV's levels (float64 sums, ``spatter.box_blur_levels``): on
#: item-seeded natural images, 0 of 64 cifar images changed, 6 uint8 values of 32 tinyimagenet images (by one level),
#: and at severities 1-3 of 8 imagenet images 0.07-1.4 % of the values (up to 22 levels); mud spatter and every
#: other corruption are unchanged
#: (not a version: the per-image seeds' outputs did not change) with one generator for a whole batch, the draws follow
#: the CPU chunks, and above 64x64 spatter, fog, snow, frost and motion_blur now take twice the values per chunk (4
#: images at 224 px, ``_CPU_CHUNK_LARGE``): their generator outputs for batches the old chunks split can differ;
#: float64 images with per-image seeds run one image per chunk in the corruptions with matrix products
#: (``_CHUNK_GEMM``): their values are those that one-image batches had before, where larger batches could differ in
#: the last bit
#: 8: zoom blur's factors are NumPy's ``arange`` values to the last bit (``severity._arange``): the CIFAR preset's
#: severity 5 zooms one layer to 33 px instead of 32, as make_cifar_c.py does (mean difference to the script 0.64 ->
#: 0.49 levels); other zoom factors moved by an ulp at most. Every other corruption is unchanged (its version stays 7)
#:
#: How to version a change: one that moves every corruption's outputs raises ``BASE_VERSION``; one that moves some
#: corruptions' outputs gives those names the next version in ``_VERSIONS``. ``CODE_VERSION`` follows (the highest),
#: and :func:`corruption_version` is what cached generated cells and -C writers' outputs are keyed by, so that a
#: change to one corruption recomputes that corruption only.
#: 9: water spatter's 8-bit liquid layer wraps values of 256 and more around and its second box blur rounds to whole
#: levels, as the scripts' ``astype(np.uint8)`` and ``cv2.blur`` of 8-bit input do (mud spatter is unchanged)
#: 10: zoom blur below 129 px sums its zooms element-wise, as above (``_common.zoom_sum``), not by dense matrix
#: products, whose float rounding followed the BLAS kernel and so the thread count (at 63-128 px 1 or 2 threads
#: wrote other bytes); values move by float rounding: on 1,000 CIFAR-10 test images 22-51 uint8 values in 3.1
#: million moved by one level per severity (cifar preset), 79-258 in 12.3 million at 64 px (tinyimagenet); 224 px
#: and every other corruption are unchanged (about 10 % slower at 32 px, 40 % faster at 64 px, one thread)
#: 11: water spatter's distance transform is OpenCV's 5x5 chamfer one (``cv2.DIST_L2`` with mask 5, costs 1, 1.4,
#: 2.1969), not the exact Euclidean distance: histogram equalisation and the emboss filter had turned the few percent
#: between the two into up to 36 levels at imagenet severities 1-3 (1.3-2.8 % of the values more than one level off
#: the script's; now within one level from the same draws); mud spatter and every other corruption are unchanged
#: 12: shot noise reads float16/bfloat16 images of 8-bit levels as their levels (their uint8 twins' counts; they took
#: the general sampler); float32/float64 and uint8 images are unchanged
#: 13: defocus blur's disk kernel is centro-symmetric to the last bit (its mirrored taps differed by up to 5e-10), so
#: its spectrum is applied as a real product: float outputs no longer depend on the thread count (3 threads moved 1253
#: of 3 million float values by an ulp at 224 px); uint8 outputs were found unchanged
#: 14: uint8 results are truncated as the scripts' ``np.uint8(result)`` (``_common.finish``, 5e-5 of a level for
#: float32 error), not rounded: about half
#: of all uint8 values move down one level (JPEG, pixelate and motion blur, already 8-bit, are unchanged); ResNet-20
#: accuracy on 1,000 CIFAR-10 test images moved by up to 0.9 points per cell (contrast 4: 63.7 -> 62.8 %)
#: 15: float16/bfloat16 images of 8-bit levels are read as their levels (``_as_work``: glass blur took half of all
#: values of such images a level down at cifar severity 1, motion blur some), and float images of 8-bit levels get
#: pixelate's Pillow bytes (the exact box means moved up to a third of the values by up to a level at severity 5);
#: uint8 images and other float ones are unchanged
BASE_VERSION = 15
_VERSIONS: dict[str, int] = {"zoom_blur": 10, "spatter": 11, "shot_noise": 12, "defocus_blur": 13}
CODE_VERSION = max(BASE_VERSION, *_VERSIONS.values())


def corruption_version(name: str) -> int:
    """The version of ``name``'s outputs: the :data:`CODE_VERSION` at which they last changed (``BASE_VERSION`` for
    every corruption not in ``_VERSIONS``); ``name`` in any spelling, an unknown one refused."""
    return max(BASE_VERSION, _VERSIONS.get(canonical_name(name), BASE_VERSION))


# every function returns a new tensor (never its input, a view of it or a cached one): ``corrupt`` finishes it in place
CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "speckle_noise": noise.speckle_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "gaussian_blur": blur.gaussian_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "spatter": _spatter.spatter,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "saturate": digital.saturate,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
}
# values per chunk on the CPU (~1.3 MB of float32: 2 images at 224 px, 106 at 32 px): a chunk's working arrays
# stay in a 2 MB L2 cache (12% faster over the 17 corruptions without glass and zoom blur at 224 px than 4 MB
# chunks, and no slower at 32 px); with one generator for the batch, the draws follow the chunks
_CPU_CHUNK = 5 << 16
# glass blur's sequential wavefront loop costs per call, not per value: larger chunks amortise it; zoom blur's
# per-zoom transposes run faster on 4 MB chunks
_CPU_CHUNK_BY_NAME = {"glass_blur": 1 << 23, "zoom_blur": 1 << 20}
# images above 64x64: corruptions that work on one-channel planes (spatter, fog, snow) or whose per-chunk steps are
# Python-level (frost's crops, motion blur's taps) spend more on per-op dispatch than they gain from 2-image chunks:
# at 224 px, 4 images per chunk saved 0.8 ms per image over these five (one thread, bench_corruptions.py; 8 images
# gained 0.1 ms more but 4.8 MB temporaries, which glibc can hand back to the system between chunks). None of them
# runs a matrix product whose size follows the chunk (``_CHUNK_GEMM``). At 32 and 64 px snow and motion blur are 2x
# slower with such chunks, so small images keep the plain ones.
_CPU_CHUNK_LARGE = 5 << 17
_CPU_CHUNK_LARGE_NAMES = frozenset({"spatter", "fog", "snow", "frost", "motion_blur"})
# corruptions with matrix products whose sizes follow the chunk (Gaussian filters' dense operators and banded
# windows, float pixelate's shrinking): MKL picks float64 GEMM
# kernels by size, so float64 images with per-image seeds go one image per chunk on the CPU (their results are then
# the same in any batch); float32 products came out the same at every size and batch tried once their right
# operands are contiguous (pixelate's transposed weight view moved float32 results by an ulp with the batch)
_CHUNK_GEMM = frozenset({"gaussian_blur", "glass_blur", "elastic_transform", "pixelate"})
# corruptions with an exact uint8 -> uint8 form: uint8 batches skip the float round trip (same result: the float
# path quantises to the same bytes and returns k / 255, which ``finish`` takes back to k: k / 255 * 255 is k in float32)
_UINT8_NATIVE: dict[str, Callable[..., torch.Tensor]] = {"jpeg_compression": digital.jpeg_bytes,
                                                         "pixelate": digital.pixelate_bytes,
                                                         "impulse_noise": noise.impulse_bytes}
# corruptions that take a uint8 chunk as it is (their first step recovers the 8-bit levels anyway)
_UINT8_INPUT = frozenset({"shot_noise"})
_RGB_ONLY = frozenset({"snow", "frost", "spatter", "brightness", "saturate"})


def list_corruptions(subset: str = "all") -> tuple[str, ...]:
    """Corruption names: ``"benchmark"`` (15), ``"extra"`` (4) or ``"all"`` (19, benchmark first)."""
    if subset == "benchmark":
        return BENCHMARK
    if subset == "extra":
        return EXTRA
    if subset == "all":
        return BENCHMARK + EXTRA
    raise ValueError(f"subset must be 'benchmark', 'extra' or 'all', got {subset!r}")


#: the groups of :func:`list_corruptions`, which :func:`expand_groups` accepts among corruption names
GROUPS = ("benchmark", "extra", "all")


def expand_groups(names: str | Sequence[str]) -> list[str]:
    """Corruption names (any spelling :func:`check_name` takes) and groups (``"benchmark"``, ``"extra"``,
    ``"all"``) as checked names, each group expanded in place, in order; repeats are kept; a single string counts as
    one name or group. Every entry point that takes corruption names reads them so (:func:`check_names`)."""
    out: list[str] = []
    for token in [names] if isinstance(names, str) else names:
        if isinstance(token, str) and token.strip().lower() in GROUPS:
            out.extend(list_corruptions(token.strip().lower()))
            continue
        try:
            out.append(check_name(token))
        except ValueError:
            valid = BENCHMARK + EXTRA
            raise ValueError(f"unknown corruption {token!r}{nearest_names(str(token), valid + GROUPS)}; valid names: "
                             f"{', '.join(valid)}; groups: {', '.join(GROUPS)}") from None
    return out


def item_seeds(seed: int, name: str, severity: int, preset: str, indices: Any) -> torch.Tensor:
    """Per-image keys ``(N,)`` of the images at dataset ``indices`` for one corruption cell (see
    :func:`aprkit.corruptions._itemkeys.item_seeds`), with ``name`` checked: a misspelt one (a did-you-mean here)
    would give keys that no writer or evaluation uses."""
    return _item_seeds(seed, check_name(name), severity, preset, indices)


#: corruption names and groups as checked names (:func:`expand_groups`): ``RandomCorruption``, the -C writers and the
#: evaluation read them so
check_names = expand_groups


def check_channels(names: Sequence[str], channels: int, got: str, layout: str = "(..., 3, H, W)") -> None:
    """Images with ``channels`` channels (``got`` describes them) must have 1 or 3, and 3 (RGB, in ``layout``) for
    the colour corruptions among ``names``."""
    rgb = [n for n in names if n in _RGB_ONLY]
    if rgb and channels != 3:
        raise ValueError(f"{', '.join(rgb)} need{'s' if len(rgb) == 1 else ''} RGB images {layout}, got {got}")
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels in (..., C, H, W), got {got}")


def image_channels(image: Any) -> int:
    """The channels ``corrupt_image`` gives ``image``: 1 for a gray PIL image or ``(H, W)`` / ``(H, W, 1)`` array, else
    3. Raises ``TypeError`` for anything but a PIL image or a uint8 ``(H, W, 3)`` / ``(H, W)`` array."""
    if type(image).__module__.startswith("PIL"):
        return 1 if getattr(image, "mode", None) == "L" else 3
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a PIL.Image or a NumPy uint8 array (H, W, 3), got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise TypeError(f"image must be a uint8 array of shape (H, W, 3) or (H, W), got {image.dtype} {image.shape}")
    return 1 if image.ndim == 2 else int(image.shape[2])


def _options(name: str, preset: str, dtype: torch.dtype, frost_dir: Any) -> dict[str, Any]:
    info = PRESET_INFO[preset]
    if name == "fog":
        return {"mapsize": int(info["fog_mapsize"])}
    if name == "frost":
        return {"scale": float(info["frost_scale"]), "frost_dir": frost_dir}
    if name == "pixelate":
        return {"quantize": dtype == torch.uint8, "source_dtype": dtype}
    if name == "shot_noise":
        return {"levels": dtype == torch.uint8, "source_dtype": dtype}
    return {}


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    preset: str | None = None,
    generator: torch.Generator | None = None,
    *,
    seeds: torch.Tensor | Sequence[int] | None = None,
    frost_dir: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1-5) with ``preset``'s published parameters.

    Args:
        images: ``(..., C, H, W)`` uint8 in [0, 255] or float in [0, 1], any device. ``C`` is 3 (1 is
            accepted by the corruptions that do not use colour: noise, blur, contrast, fog, ...).
        name: one of ``list_corruptions()``.
        severity: 1-5.
        preset: ``"cifar"`` (32 px), ``"tinyimagenet"`` (64 px) or ``"imagenet"`` (224 px) parameters; ``None``:
            the one made for the image size (longer side <= 32 cifar, <= 64 tinyimagenet, else imagenet). An
            explicit preset made for images more than 1.5 times larger or smaller warns (``PresetSizeWarning``).
        generator: source of every random choice (on the CPU or the images' device); the draws of one
            image depend on the images drawn before it in the batch.
        seeds: instead of ``generator``, one integer key per image (``(N,)`` for the ``N`` images of
            ``(..., C, H, W)`` in row-major order): image ``i`` draws from its own counter-based stream
            (hashed on the images' device, vectorised over the batch), so its result is the same in any
            batch and its draws on any device (float64 images on the CPU: the corruptions with matrix products run
            one image at a time, since MKL rounds float64 products by their size). ``item_seeds`` builds them from
            (seed, name, severity, preset, index).
        frost_dir: directory with the frost textures (else ``$APRKIT_FROST_DIR`` or ``imagecorruptions``).

    Returns:
        The corrupted images: same shape, dtype and device (an empty batch comes back empty); the input is never
        modified. Corruptions are not
        differentiable (random draws, 8-bit steps): the result never requires grad, also for an input that does.
        An enclosing ``torch.autocast`` is turned off inside (the images' own precision: the same numbers).
    """
    with autocast_off(images.device if isinstance(images, torch.Tensor) else torch.device("cpu")):
        return _corrupt(images, name, severity, preset, generator, seeds, frost_dir)


def _as_work(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the working precision (:func:`~._common.as_float`); float16/bfloat16 images of 8-bit levels (a
    half-precision pipeline's ``k / 255``, up to 0.06 of a level off in float16) as the exact ``k / 255``, image by
    image (:func:`~._common.level_images`), so that they get their uint8 twins' results (glass blur's inner
    truncation took such values a level down: half of all values at cifar severity 1)."""
    work = as_float(x)
    if x.dtype in (torch.float16, torch.bfloat16):
        levels, per_image = level_images(work, x.dtype)
        rows = per_image.nonzero().flatten()
        work[rows] = levels[rows] / 255
    return work


def _corrupt(images: Any, name: str, severity: int, preset: str | None, generator: torch.Generator | None,
             seeds: torch.Tensor | Sequence[int] | None, frost_dir: str | os.PathLike | None) -> torch.Tensor:
    """:func:`corrupt`'s body, outside any ``torch.autocast``."""
    name = check_name(name)
    check_chw_layout(check_image_tensor(images, "images", min_ndim=3, unit_range=True, allow_empty=True), "images")
    images = images.detach()  # several corruptions write with out= or read NumPy arrays, which autograd refuses
    preset = resolve_preset(preset, images.shape[-2], images.shape[-1])
    c = params(name, severity, preset)
    check_channels((name,), images.shape[-3], f"shape {tuple(images.shape)}")
    if name == "pixelate" and min(int(images.shape[-2] * c), int(images.shape[-1] * c)) < 1:
        raise ValueError(f"pixelate at severity {severity} ({preset} preset) shrinks images to {c} of their size "
                         f"first: images of shape {tuple(images.shape)} would shrink to 0 px; they need at least "
                         f"{math.ceil(1 / c)} px per side")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:]).contiguous()  # results independent of the memory layout (means)
    source: torch.Generator | ItemKeys | None = generator
    if seeds is not None:
        if generator is not None:
            raise ValueError("pass either generator (one for the batch) or seeds (one per image), not both")
        source = ItemKeys(seeds, flat.device)
        if len(source) != flat.shape[0]:
            raise ValueError(f"seeds must hold one seed per image: expected {flat.shape[0]} for images of shape "
                             f"{tuple(images.shape)}, got {len(source)}")
    fn, opts = CORRUPTIONS[name], _options(name, preset, images.dtype, frost_dir)
    if flat.shape[0] == 0:  # an empty batch (a loop's last), checked as any other, comes back empty
        return images.clone()
    # CPU: work on cache-sized chunks (~4 MB of float32); accelerators take the whole batch
    if name in _CPU_CHUNK_LARGE_NAMES and images.shape[-2] * images.shape[-1] > 64 * 64:
        chunk = _CPU_CHUNK_LARGE
    else:
        chunk = _CPU_CHUNK_BY_NAME.get(name, _CPU_CHUNK)
    step = max(1, chunk // flat[0].numel()) if flat.device.type == "cpu" else flat.shape[0]
    if flat.device.type == "cpu" and flat.dtype == torch.float64 and name in _CHUNK_GEMM and seeds is not None:
        step = 1
    n = flat.shape[0]

    def part(i: int) -> torch.Generator | ItemKeys | None:
        return source[i:i + step] if isinstance(source, ItemKeys) else source

    if name in _UINT8_NATIVE and images.dtype == torch.uint8:
        out = torch.empty_like(flat, memory_format=torch.contiguous_format)
        for i in range(0, n, step):
            out[i:i + step] = _UINT8_NATIVE[name](flat[i:i + step], c, part(i))
        return out.reshape(images.shape)

    raw = name in _UINT8_INPUT and images.dtype == torch.uint8

    def run(i: int) -> torch.Tensor:
        return fn(flat[i:i + step] if raw else _as_work(flat[i:i + step]), c, part(i), **opts)

    if step >= n:
        y = finish(run(0), images.dtype, consume=True)  # every corruption returns a new tensor
    else:  # each chunk is finished straight into its slice of the output
        y = torch.empty_like(flat, memory_format=torch.contiguous_format)
        for i in range(0, n, step):
            finish(run(i), images.dtype, out=y[i:i + step], consume=True)
    return y.reshape(*lead, *images.shape[-3:])


def corrupt_image(
    image: Any,
    name: str,
    severity: int,
    preset: str | None = None,
    generator: torch.Generator | None = None,
    *,
    seed: int | None = None,
    frost_dir: str | os.PathLike | None = None,
) -> Any:
    """Corrupt one PIL image or NumPy uint8 array ``(H, W, 3)`` / ``(H, W)``; returns the same type.

    Drop-in for dataloaders that work on PIL images (before ``ToTensor``). PIL images of modes other than RGB and L
    come back as RGB; 16-bit ones are read as 8 bits, rounded (``aprkit.data.folder.pil_to_array``, the decoder of
    the image folders). ``seed`` is a shortcut for ``generator=torch.Generator().manual_seed(seed)``.
    """
    if seed is not None:
        if generator is not None:
            raise ValueError("pass either generator or seed, not both")
        generator = torch.Generator().manual_seed(check_seed(seed))  # 7.9 or "7" refused, not truncated
    name = check_name(name)
    channels = image_channels(image)  # the caller's image, not the (C, H, W) tensor made of it, in a refusal
    check_channels((name,), channels, f"a PIL image of mode {image.mode}" if hasattr(image, "mode") else
                   f"an array of shape {image.shape}", layout="((H, W, 3) arrays, RGB PIL images)")
    return on_image(image, lambda t: corrupt(t, name, severity, preset, generator, frost_dir=frost_dir))


def on_image(image: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` on the uint8 ``(C, H, W)`` tensor of a PIL image or NumPy array ``(H, W, 3)`` / ``(H, W)``, returned as
    the input's type (PIL modes other than RGB and L come back as RGB)."""
    from PIL import Image

    pil_mode = None
    if isinstance(image, Image.Image):
        from ..data.folder import pil_to_array

        pil_mode = "L" if image.mode == "L" else "RGB"
        image = pil_to_array(image, 1 if pil_mode == "L" else 3)
    image_channels(image)
    gray = image.ndim == 2
    t = torch.from_numpy(np.array(image[..., None] if gray else image)).permute(2, 0, 1)  # a writable copy
    out = fn(t).permute(1, 2, 0).numpy()
    out = out[..., 0] if gray else out
    if pil_mode is not None:
        return Image.fromarray(out, pil_mode)
    return out
