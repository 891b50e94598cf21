"""robustbench models (the optional robustbench package): importing it with the shims it needs as published, where
its weights come from (a file, a ``model_dir``, the data root), and the model wrapped the aprkit way."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from .base import NO_MEAN, NO_STD
from .normalize import Normalize
from .registry import tag_model
from .weights_error import weights_error

__all__ = ["import_robustbench", "create_robustbench"]


def import_robustbench():
    """Import ``robustbench.utils`` with the shims it needs as published (see ENVIRONMENT.md).

    robustbench 1.1.1 imports ``autoattack`` while its dependency installs ``pyautoattack``, and needs
    ``pkg_resources`` (``setuptools<81``). ``pyautoattack`` stands in for ``autoattack`` only when no importable
    ``autoattack`` is installed, and not beyond a failed import. Raises ``ImportError`` with instructions when
    unavailable.
    """
    aliased = False
    if "autoattack" not in sys.modules:
        try:
            import autoattack  # noqa: F401 - a genuine autoattack is used as it is
        except Exception:  # noqa: BLE001 - absent, or broken on import: pyautoattack stands in
            try:
                import pyautoattack

                sys.modules["autoattack"] = pyautoattack
                aliased = True
            except ImportError:
                pass
    try:
        import robustbench.utils as rb_utils
    except Exception as e:  # ImportError, or pkg_resources / autoattack failures inside robustbench
        if aliased:
            sys.modules.pop("autoattack", None)
        raise ImportError(
            "robustbench models need the optional robustbench package: pip install 'aprkit[robustbench]' "
            "(robustbench plus setuptools<81 for pkg_resources; aprkit aliases pyautoattack as autoattack). "
            f"Import failed with: {type(e).__name__}: {e}"
        ) from e
    return rb_utils


def _default_robustbench_dir() -> Path:
    from ..data.download import data_root

    return data_root() / "robustbench"


def _reads_other_files(rb_utils: Any, dataset: str, folder: str, model_name: str) -> str | None:
    """Why robustbench's ``load_model`` would not read ``<model_dir>/<dataset>/<folder>/<name>.pt`` for this model
    (so a weights file linked there would be ignored, and the published weights loaded instead), or ``None``."""
    lower = model_name.lower().replace("-", "_")
    try:
        import timm

        if timm.is_model(f"{lower}_{dataset}_{folder.lower()}"):
            return "robustbench loads this model through timm's registry, not from its model_dir"
    except ImportError:
        pass
    if dataset == "imagenet" and "Standard" in model_name:
        return "robustbench builds ImageNet 'Standard' models from torchvision's published weights, reading no file"
    try:
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

        entry = rb_utils.all_models[BenchmarkDataset(dataset)][ThreatModel(folder)][model_name]
    except Exception:  # noqa: BLE001 - an unknown name or another robustbench layout: robustbench reports it
        return None
    if isinstance(entry.get("gdrive_id"), list):
        return "it is an ensemble, which robustbench reads as one file per member (<name>.pt_m0.pt, ...)"
    return None


def _names_a_file(path: Path) -> bool:
    """Whether ``checkpoint=`` names a weights file (one that exists, or a missing path with a weights suffix) rather
    than a ``model_dir`` folder."""
    if path.exists():
        return path.is_file()
    return path.suffix.lower() in (".pt", ".pth", ".th", ".ckpt", ".bin", ".tar", ".safetensors", ".pkl")


def _robustbench_dir(rb_utils: Any, checkpoint: str | os.PathLike[str] | None, model_dir: Any, dataset: str,
                     threat: str, model_name: str, stack: contextlib.ExitStack) -> Path:
    """robustbench's ``model_dir`` (it reads ``<model_dir>/<dataset>/<threat>/<name>.pt``) for ``checkpoint=``: a
    folder is that ``model_dir``; a weights file in that layout, its root; any other file is linked into a temporary
    layout (closed with ``stack``), so that robustbench loads that file and not the published weights. A path that
    does not exist is a ``model_dir`` to fill when it has no file extension, else a missing file."""
    if checkpoint is not None and model_dir is not None:
        raise ValueError("give robustbench's weights either as checkpoint= (a weights file or a model_dir folder) or "
                         "as model_dir=, not both")
    if checkpoint is None:
        return Path(model_dir).expanduser() if model_dir is not None else _default_robustbench_dir()
    path = Path(checkpoint).expanduser()
    if not _names_a_file(path):  # a model_dir, perhaps not made yet
        return path
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; expected robustbench weights (a file) or a "
                                "model_dir folder holding <dataset>/<threat>/<name>.pt")
    folder = threat.replace("_3d", "")  # robustbench keeps the 3D corruption models under 'corruptions'
    why = _reads_other_files(rb_utils, dataset, folder, model_name)  # also for a file in the layout: not read
    if why:
        raise ValueError(f"robustbench:{dataset}/{threat}/{model_name} cannot load the weights file {path}: {why}, "
                         "so it would report the published weights as that file's")
    if path.parts[-3:] == (dataset, folder, f"{model_name}.pt"):
        return path.parents[2]
    import tempfile

    root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aprkit-robustbench-")))
    link = root / dataset / folder / f"{model_name}.pt"
    link.parent.mkdir(parents=True)
    try:
        link.symlink_to(path.absolute())
    except OSError:  # no symbolic links here (some file systems): a copy
        import shutil

        shutil.copyfile(path, link)
    return root


def create_robustbench(name: str, checkpoint: str | os.PathLike[str] | None, kwargs: dict) -> Normalize:
    """``robustbench:[<dataset>/<threat>/]<name>`` through robustbench's ``load_model``, wrapped in ``Normalize``
    (robustbench models normalise inside): its weights from ``checkpoint=`` (a file or a model_dir folder),
    ``model_dir=`` or ``data_root()/robustbench``."""
    parts = name.split("/")
    if len(parts) == 3:
        dataset, threat, model_name = parts
    elif len(parts) == 1:
        dataset, threat, model_name = kwargs.pop("dataset", "cifar10"), kwargs.pop("threat_model", "Linf"), name
    else:
        raise ValueError(
            f"robustbench spec must be 'robustbench:<name>' or 'robustbench:<dataset>/<threat>/<name>', got {name!r}"
        )
    with contextlib.ExitStack() as stack:
        try:
            rb_utils = import_robustbench()
        except ImportError as e:
            given = kwargs.get("model_dir") or checkpoint
            root = Path(given).expanduser() if given is not None else None
            expected = (root if root is not None and _names_a_file(root) else
                        (root if root is not None else _default_robustbench_dir())
                        / dataset / threat.replace("_3d", "") / f"{model_name}.pt")
            state = "present" if expected.is_file() else "not there yet"
            raise ImportError(f"robustbench:{dataset}/{threat}/{model_name} loads through robustbench's model zoo "
                              f"(weights {expected}: {state}), which is not importable. {e}") from e
        model_dir = _robustbench_dir(rb_utils, checkpoint, kwargs.pop("model_dir", None), dataset, threat, model_name,
                                     stack)
        expected = model_dir / dataset / threat.replace("_3d", "") / f"{model_name}.pt"
        try:  # robustbench reads <model_dir>/<dataset>/<threat>/<name>.pt and downloads it when missing
            net = rb_utils.load_model(model_name=model_name, model_dir=str(model_dir), dataset=dataset,
                                      threat_model=threat, **kwargs)
        except (ValueError, TypeError, KeyError):
            raise
        except Exception as e:
            raise weights_error(f"robustbench:{dataset}/{threat}/{model_name}", "robustbench's model zoo",
                                 f"{expected} (layout <model_dir>/<dataset>/<threat>/<name>.pt)", e,
                                 "--data-root (or $APRKIT_DATA)", random_init=False) from e
    n = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}.get(dataset)
    size = 224 if dataset == "imagenet" else 32
    wrapped = Normalize(net, NO_MEAN, NO_STD, num_classes=n, input_size=(3, size, size))
    return tag_model(wrapped, f"robustbench:{dataset}/{threat}/{model_name}", {})
