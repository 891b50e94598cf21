"""AugMix-style operations on single PIL images (the reference implementation's own primitives).

Same ops, level scaling and parameter draws as :mod:`aprkit.augment.ops` (see there); the
parameters come from :func:`aprkit.augment.single.sample_single_params`, so a seed gives the same op
choices on the PIL and the batched torch paths. The torch ops sample as PIL does (black outside the
image, edge pixels repeated inside) and threshold PIL's truncated grey levels; a float image's APR-S
result is 0.5 grey levels mean per image from its uint8 twin's on average (a sample maximum, not a bound: 7.2 on
400 CIFAR-10 images where a solarize or posterize threshold falls between the two).
"""

from __future__ import annotations

__all__ = ["apply_pil_op"]


def _int_parameter(level: float, maxval: float) -> int:
    return int(level * maxval / 10)


def _float_parameter(level: float, maxval: float) -> float:
    return float(level) * maxval / 10.0


def apply_pil_op(img, name: str, level: float, negate: bool):
    """Apply the op ``name`` at ``level`` to a PIL image (mode ``RGB`` or ``L``); returns a new image."""
    from PIL import Image, ImageEnhance, ImageOps

    w, h = img.size
    sign = -1 if negate else 1
    bilinear = Image.Resampling.BILINEAR
    if name == "autocontrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "posterize":
        return ImageOps.posterize(img, 4 - _int_parameter(level, 4))
    if name == "solarize":
        return ImageOps.solarize(img, 256 - _int_parameter(level, 256))
    if name == "rotate":
        return img.rotate(sign * _int_parameter(level, 30), resample=bilinear)
    if name in ("shear_x", "shear_y"):
        s = sign * _float_parameter(level, 0.3)
        coeffs = (1, s, 0, 0, 1, 0) if name == "shear_x" else (1, 0, 0, s, 1, 0)
        return img.transform((w, h), Image.Transform.AFFINE, coeffs, resample=bilinear)
    if name in ("translate_x", "translate_y"):
        t = sign * _int_parameter(level, (w if name == "translate_x" else h) / 3)
        coeffs = (1, 0, t, 0, 1, 0) if name == "translate_x" else (1, 0, 0, 0, 1, t)
        return img.transform((w, h), Image.Transform.AFFINE, coeffs, resample=bilinear)
    factor = _float_parameter(level, 1.8) + 0.1
    enhancers = {
        "color": ImageEnhance.Color,
        "contrast": ImageEnhance.Contrast,
        "brightness": ImageEnhance.Brightness,
        "sharpness": ImageEnhance.Sharpness,
    }
    if name in enhancers:
        return enhancers[name](img).enhance(factor)
    raise ValueError(f"unknown op {name!r}")
