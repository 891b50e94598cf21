"""robustbench models (the optional robustbench package): importing it with the shims it needs as published, where
its weights come from (a file, a ``model_dir``, the data root), and the model wrapped the aprkit way."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from .base import NO_MEAN, NO_STD
from .normalize import Normalize, Preprocess, replace_head
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


#: the start of :func:`_reads_other_files`'s reason for models robustbench builds through timm
_THROUGH_TIMM = "robustbench loads this model through timm's registry"


def _timm_name(dataset: str, folder: str, model_name: str) -> str:
    """The timm registry name robustbench looks a zoo model up by (its timm-backed models live there)."""
    return f"{model_name.lower().replace('-', '_')}_{dataset}_{folder.lower()}"


def _zoo_table(rb_utils: Any, dataset: str, folder: str) -> Any:
    """robustbench's zoo of ``dataset`` / threat ``folder`` (model name -> entry), or ``None`` when it cannot be read
    (another robustbench layout, an unknown dataset or threat: robustbench's own error then stands)."""
    try:
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

        return rb_utils.all_models[BenchmarkDataset(dataset)][ThreatModel(folder)]
    except Exception:  # noqa: BLE001
        return None


def _reads_other_files(rb_utils: Any, dataset: str, folder: str, model_name: str) -> str | None:
    """Why robustbench's ``load_model`` would not read ``<model_dir>/<dataset>/<folder>/<name>.pt`` for this model
    (so a weights file linked there would be ignored, and the published weights loaded instead), or ``None``."""
    try:
        import timm

        if timm.is_model(_timm_name(dataset, folder, model_name)):
            return f"{_THROUGH_TIMM}, not from its model_dir"
    except ImportError:
        pass
    if dataset == "imagenet" and "Standard" in model_name:
        return "robustbench builds ImageNet 'Standard' models from torchvision's published weights, reading no file"
    entry = (_zoo_table(rb_utils, dataset, folder) or {}).get(model_name)
    if entry is None:  # an unknown name: robustbench reports it
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


#: the number of classes of robustbench's datasets
_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


def _zoo_architecture(rb_utils: Any, spec: str, dataset: str, threat: str, model_name: str) -> Any:
    """The zoo entry's network without its published weights, as robustbench's ``load_model`` builds it before
    loading them: through timm (``pretrained=False``) for the timm-backed names, else the entry's constructor (a few
    constructors fetch backbone weights themselves: offline, their error names the download)."""
    folder = threat.replace("_3d", "")
    timm_name = _timm_name(dataset, folder, model_name)
    try:
        import timm

        if timm.is_model(timm_name):
            return timm.create_model(timm_name, num_classes=_CLASSES.get(dataset), pretrained=False).eval()
        zoo = _zoo_table(rb_utils, dataset, folder)
        if zoo is None:
            raise ValueError(f"{spec}: robustbench's model zoo has no table for {dataset}/{folder} to build it from")
        return zoo[model_name]["model"]().eval()
    except (ValueError, TypeError, KeyError):
        raise
    except Exception as e:  # a constructor that downloads (torchvision or timm weights) offline
        raise weights_error(spec, "robustbench's model zoo", "the libraries' caches its constructor reads", e,
                            "TORCH_HOME / HF_HOME", random_init=False) from e


def _zoo_name_error(rb_utils: Any, dataset: str, threat: str, model_name: str) -> str | None:
    """Why ``model_name`` is not in robustbench's zoo for ``dataset``/``threat`` (with the nearest names), or ``None``
    when it is, or when the zoo cannot be read (robustbench then reports it)."""
    from .._text import nearest_names

    zoo = _zoo_table(rb_utils, dataset, threat.replace("_3d", ""))
    if zoo is None:
        return None
    names = [str(k) for k in zoo]
    if model_name in names:
        return None
    return (f"robustbench has no model {model_name!r} for {dataset}/{threat}{nearest_names(model_name, names)}; "
            f"its {len(names)} names there are listed by robustbench.model_zoo (e.g. {', '.join(names[:3])})")


def _head_check(net: Any, spec: str, have: int | None, num_classes: int | None, drop_head: bool) -> int | None:
    """The number of outputs after honouring ``num_classes``: a new random head with ``drop_head``, else refused."""
    if num_classes is None or have is None or num_classes == have:
        return have
    if not drop_head:
        raise ValueError(f"{spec} has {have} classes but num_classes={num_classes}; pass drop_head=True "
                         "(--drop-head) for a new, random head or leave num_classes unset")
    replace_head(net, int(num_classes))
    return int(num_classes)


def _preprocess(net: Any, spec: str, dataset: str, threat: str, model_name: str, n: int | None) -> Normalize:
    """``net`` wrapped with the evaluation preprocessing robustbench's ``benchmark`` gives it
    (``robustbench.data.get_preprocessing``: ImageNet models' resize and crop, e.g. ``Res256Crop224``,
    ``BicubicRes256Crop224``, ``Res224``, ``Crop288`` or the timm-backed models' own), as a :class:`Preprocess`;
    CIFAR models take the 32-px images as they are."""
    if dataset != "imagenet":
        return Normalize(net, NO_MEAN, NO_STD, num_classes=n, input_size=(3, 32, 32))
    from robustbench.data import get_preprocessing
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from torchvision import transforms as T

    pipeline = get_preprocessing(BenchmarkDataset(dataset), ThreatModel(threat), model_name, None)
    steps = [t for t in getattr(pipeline, "transforms", [pipeline]) if not isinstance(t, T.ToTensor)]
    resize, crop, squash, interp = None, None, False, "bilinear"
    for t in steps:
        if isinstance(t, T.Resize) and resize is None and crop is None:
            size = [t.size] if isinstance(t.size, int) else list(t.size)
            squash = len(size) == 2
            if squash and size[0] != size[1]:
                size = []
            resize, interp = (int(size[0]) if size else None), getattr(t.interpolation, "value", "bilinear")
            if resize is None:
                break
        elif isinstance(t, T.CenterCrop) and crop is None and len(set(t.size)) == 1:
            crop = int(t.size[0])
        else:
            resize = crop = None
            break
    if (resize is None and crop is None) or interp not in ("nearest", "bilinear", "bicubic"):
        raise ValueError(f"{spec} is evaluated by robustbench with the preprocessing {pipeline}, which aprkit does "
                         "not reproduce (it takes a resize of the shorter side or of both, then a centre crop)")
    crop = crop if crop is not None else resize
    return Preprocess(net, NO_MEAN, NO_STD, resize=resize, crop=int(crop),  # type: ignore[arg-type]
                      crop_mode="squash" if squash else "center", interpolation=interp, num_classes=n)


def create_robustbench(name: str, checkpoint: str | os.PathLike[str] | None, kwargs: dict, *,
                       num_classes: int | None = None, drop_head: bool = False,
                       state_dict: Any = None) -> Normalize:
    """``robustbench:[<dataset>/<threat>/]<name>`` through robustbench's ``load_model``, wrapped the way robustbench
    evaluates it (:func:`_preprocess`; robustbench models normalise inside): its weights from ``checkpoint=`` (a file
    or a model_dir folder), ``state_dict=`` (the model as aprkit saved it), ``model_dir=`` or
    ``data_root()/robustbench``. ``num_classes`` other than the zoo's is refused unless ``drop_head``."""
    parts = name.split("/")
    if len(parts) == 3:
        dataset, threat, model_name = parts
        named = [k for k in ("dataset", "threat_model") if k in kwargs]
        if named:
            raise ValueError(f"robustbench:{name} names its dataset and threat model already; drop "
                             f"{' and '.join(f'{k}=' for k in named)}")
    elif len(parts) == 1:
        dataset, threat, model_name = kwargs.pop("dataset", "cifar10"), kwargs.pop("threat_model", "Linf"), name
    else:
        raise ValueError(
            f"robustbench spec must be 'robustbench:<name>' or 'robustbench:<dataset>/<threat>/<name>', got {name!r}"
        )
    spec = f"robustbench:{dataset}/{threat}/{model_name}"
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
            raise ImportError(f"{spec} loads through robustbench's model zoo "
                              f"(weights {expected}: {state}), which is not importable. {e}") from e
        unknown = _zoo_name_error(rb_utils, dataset, threat, model_name)
        if unknown:
            raise ValueError(unknown)
        reads = _reads_other_files(rb_utils, dataset, threat.replace("_3d", ""), model_name)
        if state_dict is not None and checkpoint is None:  # aprkit's own file of this model: its architecture only,
            net = _zoo_architecture(rb_utils, spec, dataset, threat, model_name)  # the caller loads the file's weights
            n = _head_check(net, spec, _CLASSES.get(dataset), num_classes, True)  # its head, of the file's size
            return tag_model(_preprocess(net, spec, dataset, threat, model_name, n), spec, {})
        timm_file = None
        if checkpoint is not None and _names_a_file(Path(checkpoint).expanduser()):
            if (reads or "").startswith(_THROUGH_TIMM):
                timm_file = Path(checkpoint).expanduser()  # robustbench hands it to timm (custom_checkpoint)
                if not timm_file.is_file():
                    raise FileNotFoundError(f"checkpoint {timm_file} does not exist; expected the weights of {spec}")
        model_dir = _robustbench_dir(rb_utils, None if timm_file else checkpoint, kwargs.pop("model_dir", None),
                                     dataset, threat, model_name, stack)
        expected = model_dir / dataset / threat.replace("_3d", "") / f"{model_name}.pt"
        where = (f"{expected} (layout <model_dir>/<dataset>/<threat>/<name>.pt)" if not (reads or "").startswith(
            _THROUGH_TIMM) else "timm's cache of its published weights ($TORCH_HOME/hub/"
            "checkpoints or the Hugging Face cache; robustbench loads this model through timm: --checkpoint FILE "
            "gives the weights file)")
        # robustbench reads <model_dir>/<dataset>/<threat>/<name>.pt and, when missing, writes it there in place with
        # no checksum: processes (torchrun ranks) fetching it at once take turns, a later one finds the whole file
        from ..data.download import file_lock

        fetches = not (reads or "").startswith(_THROUGH_TIMM) and not expected.is_file()
        try:
            extra = {"custom_checkpoint": str(timm_file)} if timm_file else {}
            with file_lock(expected) if fetches else contextlib.nullcontext():
                net = rb_utils.load_model(model_name=model_name, model_dir=str(model_dir), dataset=dataset,
                                          threat_model=threat, **extra, **kwargs)
        except (ValueError, TypeError, KeyError):
            raise
        except Exception as e:
            cached = expected if not fetches and not (reads or "").startswith(_THROUGH_TIMM) else None
            raise weights_error(spec, "robustbench's model zoo", where, e,
                                "--data-root (or $APRKIT_DATA)", random_init=False, cached=cached) from e
    n = _head_check(net, spec, _CLASSES.get(dataset), num_classes, drop_head)
    return tag_model(_preprocess(net, spec, dataset, threat, model_name, n), spec, {})
