"""What every ``aprkit`` subcommand shares: the output-folder check and the one-line error report."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

__all__ = ["check_out_dir", "error_line", "USER_ERRORS", "positive_int", "nonnegative_int", "seed_int",
           "add_config_args", "print_configs"]


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1 (else argparse's error naming the option)."""
    return _int_at_least(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def seed_int(text: str) -> int:
    """An argparse ``type``: a seed, an integer in 0..2**63-1 (train.seed's and evaluate's range)."""
    from .._checks import check_seed  # here: --help imports no torch

    value = _int_at_least(text, 0, "a seed in 0..2**63-1")
    try:
        return check_seed(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..2**63-1, got {text!r}") from None

#: errors caused by the input (exit code 2); anything else is a bug in aprkit (exit code 1)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, ImportError)

_NO_CUDA = ("Torch not compiled with CUDA enabled", "Found no NVIDIA driver", "no CUDA GPUs are available",
            "CUDA driver initialization failed")


def check_out_dir(path: str | os.PathLike | None, flag: str = "--out") -> Path | None:
    """Fail before any work starts when ``path`` cannot become a writable output folder.

    ``path`` may exist (a folder) or not (its nearest existing parent must be a writable folder).
    """
    if path is None:
        return None
    p = Path(path).expanduser()
    if str(path).strip() == "":
        raise ValueError(f"{flag} is empty; expected a folder path")
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {p} is a file; expected a folder (an existing one or one to create)")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {p} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        from aprkit.data.download import is_read_only

        if is_read_only(parent):
            raise PermissionError(f"{flag} {p}: {parent} lies on a read-only file system; choose a folder on a "
                                  "writable disk")
        raise PermissionError(f"{flag} {p}: no permission to write in {parent}; choose a writable folder")
    return p


def add_config_args(p: argparse.ArgumentParser, kind: str, what: str) -> None:
    """``--config`` (files or shipped names, merged left to right) and ``--list-configs`` of ``aprkit <kind>``."""
    p.add_argument("--config", nargs="+", default=[], action="extend", metavar="FILE|NAME",
                   help=f"{what}: YAML file(s) or the name of a shipped one (--list-configs), merged left to right "
                        "(each file may name a 'base:')")
    p.add_argument("--list-configs", action="store_true",
                   help=f"list the {kind} configs shipped with aprkit (give one as --config NAME) and exit")


def print_configs(kind: str) -> int:
    """Print the shipped configs of ``kind`` (name and description: :func:`aprkit.configs.describe`), one per line."""
    from aprkit import configs

    names = configs.names(kind)
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {configs.describe(kind, name)}".rstrip())
    print(f"({len(names)} {kind} configs in {configs.ROOT / kind}; use one as --config NAME)")
    return 0


def error_line(err: BaseException) -> tuple[str, int]:
    """One line describing ``err`` for ``aprkit <cmd>: error: ...`` (no traceback) and the exit code:
    2 for bad input (``USER_ERRORS``, a missing GPU), 1 for anything unexpected."""
    text = str(err)
    if isinstance(err, KeyError) and err.args:
        text = f"missing key {err.args[0]!r}"
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{err.strerror or text}: {err.filename}"
    if any(s in text for s in _NO_CUDA):
        return ("CUDA was requested but is not available on this machine (torch.cuda.is_available() is False); "
                "use --device cpu (aprkit train: --set train.device=cpu)"), 2
    size = re.search(r"Input (height|width) \((\d+)\) doesn't match model \((\d+)\)", text)  # timm's patch embedding
    if size:
        what, data_px, model_px = size.groups()
        return (f"the model takes images {model_px} px in {what} and these are {data_px} px: build it for the data's "
                f"size (a timm model: aprkit train --set model.kwargs.img_size={data_px}, aprkit eval --set "
                f"model_kwargs.img_size={data_px}, with a patch_size that divides it) or resize the images"), 2
    target = re.search(r"Target (-?\d+) is out of bounds", text)
    if target:
        return (f"label {target.group(1)} is not a class of the model (labels must lie in 0..num_classes-1); set the "
                "model's number of classes to that of the data (train: model.num_classes, eval: --num-classes)"), 2
    if "stack expects each tensor to be equal size" in text:
        sizes = re.findall(r"\[[\d, ]+\]", text)
        return (f"images of one batch differ in size ({' vs '.join(sizes[:2])}); resize the image files to one size "
                "(train: or set data.random_resized_crop / data.test_resize)"), 2
    if type(err).__name__ == "OutOfMemoryError":
        return ("out of memory on the device: lower the batch size (aprkit eval / corrupt: --batch-size; aprkit "
                "train: --set optim.batch_size=N) or use the CPU"), 2
    text = re.sub(r"\s+", " ", text).strip()
    notes = [str(n) for n in getattr(err, "__notes__", ()) or ()]  # e.g. which of several models it was
    if notes:
        text = f"{'; '.join(notes)}: {text}"
    if isinstance(err, FileNotFoundError) and "../shared/" in text and not os.environ.get("APRKIT_SHARED"):
        text += ("; the shipped configs read the shared models and data from $APRKIT_SHARED, which is not set "
                 "here, so from ../shared beside the current folder: set APRKIT_SHARED to the folder that holds "
                 "models/ and data/ (models/resnet20-12fca82f.th: the pytorch_resnet_cifar10 release of "
                 "github.com/akamaster; data/cifar10: any CIFAR-10 folder, cifar10:DIR --download fetches one), or "
                 "give your own with --model / --checkpoint and --data")
    from ..distributed import peer_failure

    if peer_failure(err):  # a collective failed because another process stopped: its error is the cause
        return ("another torchrun process probably stopped (its own output, e.g. torchrun's --log-dir, names why), "
                f"so this one's collective call failed: {type(err).__name__}: {text[:200]}"), 1
    if not isinstance(err, USER_ERRORS):
        return f"unexpected {type(err).__name__}: {text or 'no message'} (run with --debug for the traceback)", 1
    return text or type(err).__name__, 2
