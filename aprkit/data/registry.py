"""``get_dataset(spec)``: one string names any dataset aprkit reads.

Specs (``KIND:ARG``):

============================  ==========================================================================
``cifar10:ROOT``              CIFAR-10 (torchvision binary layout, or PNG tree ``ROOT/{train,test}/<class>``)
``cifar100:ROOT``             CIFAR-100 (same layouts)
``folder:ROOT``               any ImageFolder tree ``ROOT/<class>/<image>`` (``split`` is ignored; pass
                              ``resize=``/``crop=`` when sizes differ, in the spec too:
                              ``folder:ROOT?resize=256&crop=224``). ``imagefolder:`` is an alias
``cifar10-c:ROOT``            CIFAR-10-C ``.npy`` layout; needs ``corruption=`` and ``severity=`` (1..5 or None)
``cifar100-c:ROOT``           CIFAR-100-C, same
``imagenet-c:ROOT``           ImageNet-C folders ``ROOT/<corruption>/<severity>/<wnid>/<image>``
``tinyimagenet:ROOT``         Tiny-ImageNet as unzipped (``tiny-imagenet-200``): ``train``, or ``test`` (default), its
                              validation images labelled by ``val/val_annotations.txt`` (``tiny-imagenet:``: alias)
``tinyimagenet-c:ROOT``       Tiny-ImageNet-C, same layout (``tiny-imagenet-c:`` is an alias)
``synthetic`` / ``synthetic:N``  procedural shape x texture set (:mod:`aprkit.data.synthetic`), N images
``cue-conflict:ROOT``         Geirhos et al. stimuli ``ROOT/<shape>/<shape>N-<texture>M.png`` (label = shape)
``noise:KIND``                synthetic OOD set, KIND in gaussian, uniform, rademacher, blobs; keywords
                              ``n`` (10000), ``size`` (32), ``channels`` (3), ``seed`` (0)
============================  ==========================================================================

Every dataset yields ``(uint8 tensor (C, H, W), int label)``; batch them with :func:`aprkit.data.iter_batches`.

The -C sets and ``cue-conflict`` may omit ``ROOT``: they are then read from ``data_root()/<folder>``
(``$APRKIT_DATA`` or ``data_root=``, default ``~/.cache/aprkit``), and ``download=True`` fetches them from
their official archives first (:mod:`aprkit.data.sources`: checksums, resume, a completion marker).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from aprkit._text import nearest_names

__all__ = ["CLASS_FOLDERS", "DATASET_KINDS", "DOWNLOADABLE", "SPEC_OPTIONS", "check_outside", "check_outside_data",
           "get_dataset", "has_splits", "parse_spec", "resolve_spec", "spec_root", "split_spec_options"]


def _with_splits(factory: Callable[..., Dataset]) -> Callable[..., Dataset]:
    """Mark a factory whose ``split`` selects different images (``has_splits``); the others ignore it."""
    factory.has_splits = True  # type: ignore[attr-defined]
    return factory


def _cifar(name: str) -> Callable[..., Dataset]:
    def make(arg: str, split: str, **kw: Any) -> Dataset:
        from .cifar import cifar_dataset

        return cifar_dataset(spec_root(arg, name), name, split, **kw)

    make.image_files = True  # type: ignore[attr-defined]  # a PNG tree (or the pickled batches): read_image's files
    return _with_splits(make)


def _cifar_c(name: str) -> Callable[..., Dataset]:
    def make(arg: str, split: str, *, corruption: str | None = None, severity: int | None = None, **kw: Any) -> Dataset:
        from .corrupted import cifar_c

        if corruption is None:
            raise ValueError(
                f"{name} needs corruption= (e.g. get_dataset('{name}:ROOT', corruption='fog', severity=3))"
            )
        return cifar_c(spec_root(arg, name), corruption, severity, **kw)

    make.stacked_severities = True  # type: ignore[attr-defined]  # severity=None: all five in one file, in order
    return make


def _folder_c(name: str) -> Callable[..., Dataset]:
    def make(arg: str, split: str, *, corruption: str | None = None, severity: int | None = None, **kw: Any) -> Dataset:
        from .corrupted import imagenet_c

        if corruption is None or severity is None:
            raise ValueError(f"{name} needs corruption= and severity= "
                             f"(e.g. get_dataset('{name}:ROOT', corruption='fog', severity=3))")
        return imagenet_c(spec_root(arg, name), corruption, severity, **kw)

    make.folder_cells = True  # type: ignore[attr-defined]  # a folder per cell: corrupted_cell_state reads it
    make.image_files = True  # type: ignore[attr-defined]
    return make


def _folder(arg: str, split: str, **kw: Any) -> Dataset:
    from .folder import ImageFolderDataset

    return ImageFolderDataset(spec_root(arg, "folder"), **kw)


@_with_splits
def _tiny_imagenet(arg: str, split: str, **kw: Any) -> Dataset:
    from .tinyimagenet import tiny_imagenet

    return tiny_imagenet(spec_root(arg, "tinyimagenet"), split, **kw)


_tiny_imagenet.image_files = True  # type: ignore[attr-defined]


@_with_splits
def _synthetic(arg: str, split: str, **kw: Any) -> Dataset:
    import importlib

    mod = importlib.import_module("aprkit.data.synthetic")
    if arg:
        try:
            n = int(arg)
        except ValueError:
            raise ValueError(f"synthetic spec takes an image count, e.g. 'synthetic:10000', got {arg!r}") from None
        if kw.get("n", n) != n:  # two counts: neither may win silently
            raise ValueError(f"'synthetic:{arg}' and n={kw['n']} name two image counts; give one")
        kw["n"] = n
    return mod.SyntheticShapes(split=split, **kw)


def _cue_conflict(arg: str, split: str, **kw: Any) -> Dataset:
    from .cue_conflict import CueConflict

    return CueConflict(spec_root(arg, "cue-conflict"), **kw)


def _noise_kind(arg: str) -> str:
    """The noise kind ``arg`` names (case does not matter, as for the kinds); ``ValueError`` listing the valid ones."""
    from .noise import NOISE_KINDS

    arg = arg.lower()
    if arg not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {arg!r}{nearest_names(arg, NOISE_KINDS)}; "
                         f"valid: {', '.join('noise:' + k for k in NOISE_KINDS)}")
    return arg


def _noise(arg: str, split: str, **kw: Any) -> Dataset:
    from .noise import NoiseDataset

    return NoiseDataset(_noise_kind(arg), **kw)


def check_spec(spec: str) -> None:
    """Refuse a spec whose kind (or noise kind) is unknown, before any work: what opening it would refuse first."""
    kind, arg = parse_spec(split_spec_options(spec)[0])
    if kind == "noise":
        _noise_kind(arg)


#: spec prefix -> factory(arg, split, **kw)
DATASET_KINDS: dict[str, Callable[..., Dataset]] = {
    "cifar10": _cifar("cifar10"),
    "cifar100": _cifar("cifar100"),
    "folder": _folder,
    "cifar10-c": _cifar_c("cifar10-c"),
    "cifar100-c": _cifar_c("cifar100-c"),
    "tinyimagenet": _tiny_imagenet,
    "imagenet-c": _folder_c("imagenet-c"),
    "tinyimagenet-c": _folder_c("tinyimagenet-c"),
    "synthetic": _synthetic,
    "cue-conflict": _cue_conflict,
    "noise": _noise,
}


_folder.image_files = True  # type: ignore[attr-defined]  # read by aprkit.data.folder (its READER_VERSION)

#: other names of kinds (the same reader, the same cache identity)
KIND_ALIASES: dict[str, str] = {"imagefolder": "folder", "tiny-imagenet": "tinyimagenet",
                                "tiny-imagenet-c": "tinyimagenet-c"}


#: spec kind -> the folders under its root (``""``: the root) whose subfolders its reader takes as classes: an output
#: folder written into one would be read as a class of the data by the next run (``aprkit eval`` refuses it there)
CLASS_FOLDERS: dict[str, tuple[str, ...]] = {
    "folder": ("",), "cue-conflict": ("",), "cifar10": ("train", "test"), "cifar100": ("train", "test"),
}


def check_outside(src: Path, out: Path, why: str = "its corruption folders would become classes of the clean set"
                  ) -> None:
    """Refuse an output folder that is the input folder or inside it (``why``: what would go wrong; by default the
    -C folders would become classes of the clean set)."""
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r or src_r in out_r.parents:
        raise ValueError(f"the output folder {str(out)!r} lies inside the input folder {str(src)!r}: {why}; choose an "
                         "output folder outside it")


def check_outside_data(folders: Sequence[Path | None], *sources: Any) -> None:
    """Refuse an output or cache folder (``folders``; ``None`` skipped) inside a folder whose subfolders a data spec
    among ``sources`` (specs, lists of them or mappings suite -> spec; an ``ImageFolderDataset`` counts as its
    ``folder:`` spec, other Datasets are skipped) reads as classes (``aprkit.data.registry.CLASS_FOLDERS``): a later
    run would read the report's figures, results and cache files as a class of the data."""
    from .folder import ImageFolderDataset

    def specs(value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, ImageFolderDataset):  # get_dataset("folder:ROOT") given as a Dataset
            return [f"folder:{value.root}"]
        if isinstance(value, Mapping):
            return [s for v in value.values() for s in specs(v)]
        if isinstance(value, (list, tuple)):
            return [s for v in value for s in specs(v)]
        return []

    for spec in (s for source in sources for s in specs(source)):
        try:
            kind, arg = parse_spec(split_spec_options(spec)[0])
        except (TypeError, ValueError):  # not a dataset spec: the reader names the problem
            continue
        if not arg or kind not in CLASS_FOLDERS:  # no folder of classes (synthetic:8, the -C arrays)
            continue
        for sub in CLASS_FOLDERS[kind]:
            root = Path(arg).expanduser() / sub
            for folder in folders:
                if folder is not None and root.is_dir():
                    check_outside(root, Path(folder), f"a later run on {spec!r} would read this run's files (report "
                                                      "figures, results, cache, checkpoints) as a class of its images")


#: spec kind -> the name of its source in ``aprkit.data.sources.SOURCES`` (downloadable, root optional)
DOWNLOADABLE: dict[str, str] = {
    "cifar10-c": "cifar10-c", "cifar100-c": "cifar100-c", "imagenet-c": "imagenet-c",
    "tinyimagenet-c": "tinyimagenet-c", "cue-conflict": "cue-conflict",
}


def spec_root(arg: str, kind: str) -> Path:
    if not arg:
        raise ValueError(f"{kind} needs a root folder: '{kind}:/path/to/data'")
    return Path(arg).expanduser()


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"kind:arg"`` into ``(kind, arg)``; raises ``ValueError`` listing the valid kinds."""
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"dataset spec must be a non-empty str like 'cifar10:/data/cifar10', got {spec!r}")
    kind, colon, arg = spec.partition(":")
    kind = kind.strip().lower()
    kind = KIND_ALIASES.get(kind, kind)  # another name of a kind: the kind itself (one reader, one cache identity)
    if kind not in DATASET_KINDS:
        valid = [*DATASET_KINDS, *KIND_ALIASES]
        path = not colon and ("/" in spec or "\\" in spec or Path(spec).expanduser().exists())  # a bare folder
        hint = (f"; a folder needs its kind in front: 'cifar10:{spec}' (the CIFAR-10 layout), 'folder:{spec}' (class "
                "folders), ..." if path else "")
        raise ValueError(f"unknown dataset kind {kind!r} in spec {spec!r}{nearest_names(kind, valid)}{hint}; "
                         f"valid kinds: {', '.join(valid)}")
    return kind, arg.strip()


#: keywords a spec of each kind may carry after ``?`` (integers, ``&``-separated), e.g. on the command line
SPEC_OPTIONS: dict[str, tuple[str, ...]] = {"folder": ("resize", "crop")}


def split_spec_options(spec: str) -> tuple[str, dict[str, int]]:
    """``"folder:ROOT?resize=256&crop=224"`` -> ``("folder:ROOT", {"resize": 256, "crop": 224})``; a spec without
    ``?key=value`` options is returned as it is (a ``?`` in a path without ``=`` after it is part of the path).
    Raises ``ValueError`` for an option the kind does not take (``SPEC_OPTIONS``) or a value that is not a positive
    integer."""
    base, sep, query = spec.rpartition("?") if isinstance(spec, str) else ("", "", "")
    if not sep or "=" not in query:
        return spec, {}
    kind = parse_spec(base)[0]
    allowed = SPEC_OPTIONS.get(kind, ())
    opts: dict[str, int] = {}
    for item in query.split("&"):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        if key in opts:
            raise ValueError(f"option {key!r} is given twice in dataset spec {spec!r}; give it once")
        if key not in allowed:
            takes = (f"{kind}: takes {', '.join(allowed)}" if allowed else
                     f"{kind}: takes none (folder: takes {', '.join(SPEC_OPTIONS['folder'])})")
            raise ValueError(f"unknown option {key!r} in dataset spec {spec!r}{nearest_names(key, allowed)}; {takes}")
        try:
            opts[key] = int(value.strip())
        except ValueError:
            opts[key] = 0
        if opts[key] < 1:
            raise ValueError(f"option {key!r} in dataset spec {spec!r} must be a positive number of pixels, "
                             f"got {value.strip()!r}")
    return base, opts


def has_splits(spec: str) -> bool:
    """Whether ``spec``'s kind reads different images for ``split="train"`` and ``"test"`` (``cifar10``, ``cifar100``,
    ``synthetic``); ``folder:``, the -C sets, ``cue-conflict`` and ``noise`` read the same images for every split."""
    return bool(getattr(DATASET_KINDS[parse_spec(spec)[0]], "has_splits", False))


def resolve_spec(spec: str, *, download: bool = False, data_root: str | Path | None = None,
                 progress: bool = True) -> str:
    """``spec`` with a downloadable kind's folder filled in (and fetched when ``download``); others unchanged.

    ``"cifar10-c"`` -> ``"cifar10-c:<data root>/CIFAR-10-C"``. An explicit folder is kept; with ``download``
    an incomplete one is completed there. Raises ``FileNotFoundError`` (what to fetch, where, how) when the
    data is missing and ``download`` is False.
    """
    kind, arg = parse_spec(spec)
    if kind not in DOWNLOADABLE or (arg and not download):
        return spec
    from .sources import ensure_source

    folder = ensure_source(DOWNLOADABLE[kind], arg or None, root=data_root, download=download, progress=progress)
    return f"{kind}:{folder}"


def corrupted_cell_state(spec: str, corruption: str, severity: int) -> str | None:
    """For a -C spec of the folder layout (``imagenet-c:ROOT``): the state (``path_state``) of the cell's folder
    ``ROOT/<corruption>/<severity>`` down to its images, which the spec's identity (the root's top two levels) does
    not reach, so a cached cell is recomputed when its images change; ``None`` for other kinds (a CIFAR-C root's
    files lie within the spec's identity) or a missing folder."""
    try:
        kind, arg = parse_spec(resolve_spec(spec))
    except (TypeError, ValueError, FileNotFoundError):  # the reader names the problem
        return None
    if not getattr(DATASET_KINDS[kind], "folder_cells", False) or not arg:
        return None
    from .._hash import path_state
    from .corrupted import cell_folder
    from .folder import IDENTITY_DEPTH

    folder = cell_folder(spec_root(arg, kind), corruption, severity)
    return None if folder is None else path_state(folder, depth=IDENTITY_DEPTH)


def get_dataset(spec: str, split: str = "test", *, download: bool = False, data_root: str | Path | None = None,
                progress: bool = True, **kw: Any) -> Dataset:
    """The dataset named by ``spec`` (see the module docstring); keywords go to its reader.

    ``split`` (``"train"`` or ``"test"``) selects the images of kinds with splits (``cifar10``, ``cifar100``,
    ``tinyimagenet``, ``synthetic``: :func:`has_splits`); the others (``folder:``, the -C sets, ``cue-conflict``,
    ``noise``) read the same images for either: name their training and test folders in two specs.

    ``download=True`` fetches a -C set or the cue-conflict stimuli first (into ``data_root``, see
    :func:`resolve_spec`), or CIFAR-10/100 (the published archive) into the spec's folder; ``progress`` shows a bar
    while downloading. Raises ``ValueError``
    for an unknown kind (listing the valid ones) and ``FileNotFoundError`` naming the missing file and the layout
    expected.
    """
    if "root" in kw:  # the spec names the folder; root= would reach the reader beside it (or be ignored)
        raise TypeError("get_dataset() takes the folder in the spec ('folder:PATH', 'cifar10:PATH') and the data root "
                        "of downloaded sets as data_root=; root= is not one of its keywords")
    spec, opts = split_spec_options(spec)
    twice = sorted(set(opts) & set(kw))
    if twice:
        raise ValueError(f"{', '.join(twice)} given both in the spec and as a keyword; give each once")
    kw.update(opts)
    spec = resolve_spec(spec, download=download, data_root=data_root, progress=progress)
    kind, arg = parse_spec(spec)
    if not getattr(DATASET_KINDS[kind], "has_splits", False) and split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r} ({kind}: reads the same images for either; "
                         "has_splits() tells which kinds have splits)")
    if download and kind in ("cifar10", "cifar100"):  # the published archive into the spec's folder
        kw.update(download=True, progress=progress)
    return DATASET_KINDS[kind](arg, split, **kw)
