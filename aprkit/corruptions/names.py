"""The corruption names, one list for the package: the 15 benchmark corruptions of CIFAR-10-C / ImageNet-C
(Hendrycks & Dietterich, ICLR 2019) in the published order, the 4 extra ones shipped with the -C sets, and the
reading of a name in any spelling (``"Gaussian Noise"``, ``"gaussian-noise"`` -> ``"gaussian_noise"``).

The corruption API, the -C writers and readers and the metrics all take the names from here.
"""

from __future__ import annotations

from .._text import nearest_names

__all__ = ["BENCHMARK", "EXTRA", "ALL", "FAMILIES", "DETERMINISTIC", "MOVES_PIXELS", "moves_pixels", "canonical_name",
           "check_name"]

#: the 15 corruptions of the CIFAR-10-C / ImageNet-C benchmark, in the published order
BENCHMARK: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
#: the 4 extra (validation) corruptions
EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
#: all 19, benchmark first
ALL: tuple[str, ...] = BENCHMARK + EXTRA
#: the benchmark's families (ImageNet-C's grouping) and the extra corruptions
FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": BENCHMARK[0:3],
    "blur": BENCHMARK[3:7],
    "weather": BENCHMARK[7:11],
    "digital": BENCHMARK[11:15],
    "extra": EXTRA,
}
#: the corruptions that move pixels (shuffle, smear along a direction or from the centre, displace): masks, boxes and
#: keypoints would no longer line up with the image; the others change colours and values in place
MOVES_PIXELS: tuple[str, ...] = ("glass_blur", "motion_blur", "zoom_blur", "elastic_transform")
#: the corruptions that draw no random numbers (here and in the original scripts): an image gives the same result
#: whatever the seed or generator; the others draw per image (``item_seeds``). In :data:`ALL`'s order.
DETERMINISTIC: tuple[str, ...] = ("defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate",
                                  "jpeg_compression", "gaussian_blur", "saturate")


def moves_pixels(names: tuple[str, ...] | list[str]) -> str | None:
    """Which of ``names`` move pixels (:data:`MOVES_PIXELS`), as a phrase for the refusal of annotations
    (``"elastic_transform moves the image's pixels"``), or ``None`` when none does."""
    moving = [n for n in names if n in MOVES_PIXELS]
    if not moving:
        return None
    return f"{', '.join(moving)} {'moves' if len(moving) == 1 else 'move'} the image's pixels"


def canonical_name(name: object) -> str:
    """``name`` as aprkit spells it (case, spaces and ``-`` do not matter); ``ValueError`` with a did-you-mean and
    every valid name for an unknown one, ``TypeError`` for a non-string."""
    if not isinstance(name, str):
        raise TypeError(f"corruption name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key not in ALL:
        raise ValueError(f"unknown corruption {name!r}{nearest_names(key, ALL)}; valid names: {', '.join(ALL)}")
    return key


#: a corruption name in any spelling, checked: ``"Gaussian Noise"`` -> ``"gaussian_noise"``; the error lists every
#: valid name (the public name of :func:`canonical_name`, ``aprkit.corruptions.check_name``)
check_name = canonical_name
