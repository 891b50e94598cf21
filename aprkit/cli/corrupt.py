"""``aprkit corrupt``: write a -C dataset (CIFAR-10-C or ImageNet-C layout) for your own images.

Examples::

    aprkit corrupt images.npy out/ --labels labels.npy            # CIFAR-10-C layout, preset of the image size
    aprkit corrupt val/ out/                                       # ImageNet-C layout, 224 px, "imagenet"
    aprkit corrupt train_subset/ out/ --layout cifar --size 32     # class folders -> <name>.npy arrays

Image i of every corruption x severity depends on (--seed, corruption, severity, --preset, i) only: the
output is the same byte for byte for every --batch-size. OUT/manifest.json records the generation
parameters, an input fingerprint, the device type, the torch/Pillow versions and the frost textures'
digest; a rerun with the same ones skips finished files, a rerun with others is refused (pick another
output folder or pass --overwrite). More corruptions, and in the ImageNet-C layout more severities, are added to a
folder by a rerun that names them; a severity a stopped run left part way is finished by the same command (and
refused by the readers until then).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from .._text import comma_items
from ..corruptions.severity import PRESETS
from ._common import check_out_dir, positive_int, seed_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "corrupt",
        help="write a CIFAR-10-C / ImageNet-C style corrupted copy of an image folder or array",
        description=__doc__.split("\n\n")[0].replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    p.add_argument("input", help="a .npy uint8 array (N, H, W, 3), a folder of class sub-folders with images, or "
                                 "tinyimagenet:ROOT (the validation images of tiny-imagenet-200, written at 64 px)")
    p.add_argument("out", help="output directory")
    p.add_argument("--layout", choices=("cifar", "imagenet"), default=None,
                   help="cifar: <name>.npy severity-major + labels.npy (a folder is read class by class, in sorted "
                        "order: not a test_order.csv's, so rows do not pair with CIFAR-10-C's by index); imagenet: "
                        "<name>/<sev>/<class>/<file> JPEG q85 (default: cifar for .npy input, imagenet for folders)")
    p.add_argument("--labels", default=None,
                   help="labels .npy for array input (written as labels.npy, tiled once per severity written; "
                        "without it the set cannot be evaluated)")
    p.add_argument("--corruptions", nargs="+", default=None, action="extend", metavar="NAME",
                   help="names and groups, spaces or commas between them (default: the 15 benchmark corruptions; "
                        "groups 'benchmark' = 15, 'extra' = 4, 'all' = 19)")
    p.add_argument("--severities", nargs="+", default=None, action="extend", metavar="S",
                   help="severities to write, 1-5, spaces or commas between them (default: 1 2 3 4 5)")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="severity parameters (default: the preset made for the image size: longest side <= 32 px "
                        "cifar, <= 64 px tinyimagenet, else imagenet)")
    p.add_argument("--size", type=positive_int, default=None,
                   help="bring images to SIZE x SIZE: the imagenet layout resizes the short side to SIZE*256/224 and "
                        "centre-crops SIZE (ImageNet-C's Resize(256) + CenterCrop(224)), the cifar layout resizes the "
                        "short side to SIZE and centre-crops; images already SIZE x SIZE are kept (default: 64 for "
                        "tinyimagenet:ROOT, 224 for other imagenet-layout input, keep for cifar); folder input only:"
                        " an array is written at its own size)")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="image i of every corruption x severity draws from (seed, corruption, severity, preset, i); "
                        "0..2**63-1, as aprkit eval's --seed (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per batch (default 500 cifar, 64 imagenet); does not change the output")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--frost-dir", default=None, help="directory with frost1.png .. frost5.jpg")
    p.add_argument("--download", action="store_true",
                   help="fetch the frost textures (2 MB, into $APRKIT_DATA/frost) when frost is written and none are "
                        "found")
    p.add_argument("--quality", type=int, default=None, help="JPEG quality of the imagenet layout, 1-100 (default 85, "
                   "as ImageNet-C); Pillow's 4:2:0 chroma subsampling applies at every quality, so even 100 is lossy "
                   "(a few levels per pixel): for a lossless set use the cifar layout (.npy)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the outputs of a folder generated with other parameters or input (all of them); "
                        "with the same ones, make this run's outputs again and keep the folder's others")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)
    return p


def _tokens(values: list[str]) -> list[str]:
    """The items of a space- and comma-separated option (``1 3``, ``1,3``), as ``aprkit eval`` takes lists."""
    return [t for v in values for t in comma_items(v)]


def _names(spec: list[str] | None) -> list[str]:
    """The corruption names, groups expanded in place (a name given twice is refused by the writer)."""
    from ..corruptions import expand_groups, list_corruptions

    return expand_groups(_tokens(spec)) if spec else list(list_corruptions("benchmark"))


def _severities(spec: list[str] | None) -> list[int]:
    if spec is None:
        return [1, 2, 3, 4, 5]
    from ..corruptions.severity import check_severities

    try:
        values = [int(t) for t in _tokens(spec)]
    except ValueError:
        raise ValueError(f"--severities {' '.join(spec)}: expected whole numbers 1-5 (e.g. --severities 1 3 5 or "
                         "1,3,5)") from None
    try:  # before a folder is decoded (the writers check again)
        return check_severities(values)
    except ValueError as err:
        raise ValueError(f"--severities {' '.join(spec)}: {err}") from None


def _input_path(text: str) -> Path:
    """The path an input names: itself, or ``folder:DIR``'s folder; another data spec (``cifar10:ROOT``) is refused
    with what to give instead (it was called a path that "does not exist")."""
    from ..data.registry import parse_spec, spec_root, split_spec_options

    if Path(text).exists():  # a file or folder whose name holds a colon
        return Path(text)
    try:
        spec, options = split_spec_options(text)
        kind, root = parse_spec(spec)
    except ValueError:  # no dataset kind in front: a path
        return Path(text)
    if options:
        raise ValueError(f"input {text!r}: aprkit corrupt takes no reader options ({', '.join(options)}); resize "
                         "with --size (see aprkit corrupt --help)")
    if kind == "folder":
        return spec_root(root, kind)  # (an empty root is refused, not read as the current folder)
    example = f", e.g. {str(Path(root) / 'test')!r} with --layout cifar (its images in file-name order)" if root else ""
    raise ValueError(f"aprkit corrupt reads a .npy array (N, H, W, 3), an image folder (class sub-folders), "
                     f"folder:DIR or tinyimagenet:ROOT, not the data spec {text!r}; give the folder of the split to "
                     f"corrupt{example}, or a .npy array in the order you want")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..corruptions.dataset import (
        IMAGENET_C_QUALITY,
        load_image_folder,
        scan_image_folder,
        tiny_imagenet_root,
        write_cifar_c,
        write_imagenet_c,
    )
    from ..data.arrays import load_npy

    tiny_root = tiny_imagenet_root(args.input)  # Tiny-ImageNet's validation images (labelled by a listing)
    tiny = tiny_root is not None
    src = tiny_root if tiny_root is not None else _input_path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"input {str(src)!r} does not exist (expected a .npy array, an image folder, "
                                "folder:DIR or tinyimagenet:ROOT)")
    is_array = src.is_file()
    if is_array and src.suffix.lower() != ".npy":
        raise ValueError(f"array input must be a .npy file, got {str(src)!r}")
    check_out_dir(args.out, "OUT")
    if not is_array:
        from ..corruptions.dataset import check_outside

        check_outside(src, Path(args.out))
    if args.labels and not Path(args.labels).is_file():
        raise FileNotFoundError(f"--labels {args.labels!r}: no such file; expected a .npy array of one integer label "
                                "per input image")
    from ..distributed import resolve_device

    resolved = resolve_device(args.device)  # a misspelt device is a usage error, not an internal one
    if args.device == "auto":
        args.device = str(resolved)
    layout = args.layout or ("cifar" if is_array else "imagenet")
    names = _names(args.corruptions)
    args.severities = _severities(args.severities)
    progress = not args.no_progress
    if args.labels and not is_array:
        raise ValueError("--labels is only for array input; folder labels come from the class sub-folders")
    if args.size is not None and is_array:
        raise ValueError("--size resizes images read from a folder; array input is written at its own size "
                         f"({str(src)!r}: resize the array first)")
    if args.quality is not None and layout != "imagenet":
        raise ValueError("--quality sets the JPEG quality of the imagenet layout; the cifar layout stores lossless "
                         "arrays")
    if args.quality is not None and not 1 <= args.quality <= 100:
        raise ValueError(f"--quality {args.quality}: expected a JPEG quality in 1..100 for the imagenet layout (the "
                         "cifar layout stores lossless arrays)")
    if tiny and layout != "imagenet":
        raise ValueError("tinyimagenet:ROOT is written in Tiny-ImageNet-C's layout (<name>/<sev>/<wnid>/<file> JPEG), "
                         "the imagenet layout; drop --layout cifar")
    if layout == "imagenet" and is_array:
        raise ValueError("the imagenet layout needs an image folder (class sub-folders); use --layout cifar for arrays")
    if "frost" in names:  # after the other checks, before any output: found (or fetched with --download)
        from ..corruptions import find_frost_dir

        find_frost_dir(args.frost_dir, download=args.download, progress=progress)
    if layout == "imagenet":
        n = write_imagenet_c(args.input if tiny else src, args.out, names, args.severities, args.preset, args.seed,
                             args.batch_size or 64, args.size if args.size is not None else 64 if tiny else 224,
                             args.quality if args.quality is not None else IMAGENET_C_QUALITY,
                             args.device, progress, args.frost_dir, overwrite=args.overwrite)
        print(f"wrote {n} images to {args.out}{_preset_note(args.out)}")
        return 0
    if is_array:
        images = np.array(load_npy(src))  # a writable copy (the map is read-only)
        labels = np.array(load_npy(args.labels)) if args.labels else None
        if images.ndim == 4 and images.shape[1] == 3 and images.shape[-1] != 3:
            images = images.transpose(0, 2, 3, 1)
        if images.ndim >= 1 and images.shape[0] == 0:
            raise ValueError(f"{str(src)!r} holds no images (shape {images.shape}); "
                             "expected a uint8 array (N, H, W, 3), N >= 1")
        if labels is None:
            warnings.warn("no --labels: the arrays are written without labels.npy, which get_dataset and aprkit eval "
                          "need to read the set; pass --labels LABELS.npy to write it", UserWarning, stacklevel=2)
        classes = None
    else:
        images, labels = load_image_folder(src, args.size)
        classes = scan_image_folder(src)[1]
    written = write_cifar_c(images, args.out, names, labels, args.severities, args.preset, args.seed,
                            args.batch_size or 500, args.device, progress, args.frost_dir, overwrite=args.overwrite,
                            classes=classes)
    print(f"wrote {len(written)} array{'' if len(written) == 1 else 's'} to {args.out} "
          f"({len(names) - len(written)} already complete){_preset_note(args.out)}")
    return 0


def _preset_note(out: str) -> str:
    """Which severity table the set was written with (its manifest's): chosen by image size unless --preset."""
    import json

    try:
        params = json.loads((Path(out) / "manifest.json").read_text())["params"]
        return f"; severity parameters: the {params['preset']} preset, seed {params['seed']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
