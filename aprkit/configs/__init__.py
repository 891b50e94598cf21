"""The recipes and evaluation settings shipped with aprkit: ``train/*.yaml`` (``aprkit train``) and ``eval/*.yaml``
(``aprkit eval``), inside the package so that a pip install has them too (``configs/`` of a source checkout links
here).

A config is named three ways: a path to any YAML file; the bare name of a shipped one (``cifar10_wrn40_2_apr_sp``,
no folder, no ``.yaml``); or the README's ``configs/<kind>/<file>.yaml``, which outside a checkout (no such file
under the current folder) reads the shipped copy and warns that it did.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

__all__ = ["ROOT", "KINDS", "names", "describe", "shipped", "find"]

#: the folder holding the shipped ``train/`` and ``eval/`` configs
ROOT = Path(__file__).resolve().parent
#: what each kind of config configures
KINDS = {"train": "aprkit train", "eval": "aprkit eval"}


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"config kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    return kind


def names(kind: str) -> list[str]:
    """The shipped configs of ``kind`` (``"train"`` or ``"eval"``) by name, sorted (``_base/`` parts excluded)."""
    return sorted(p.stem for p in (ROOT / _check_kind(kind)).glob("*.yaml"))


def describe(kind: str, name: str) -> str:
    """The first sentence of a shipped config's leading comment (its description), empty when it has none: the
    first comment line, continued while the sentence goes on (a line ending in a comma, the next in lower case or
    opening a parenthesis)."""
    lines = []
    with open(ROOT / _check_kind(kind) / f"{name}.yaml", encoding="utf-8") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
    text = lines[0] if lines else ""
    for line in lines[1:]:
        if not (re.search(r"[,;:]$", text) or line[:1].islower() or line.startswith("(")):  # "(Gaussian, ...)"
            break
        text = f"{text} {line}"
    end = re.search(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)\.\s", text)  # not "et al. " nor "e.g. "
    return text[:end.start() + 1] if end else text


def shipped(name: str | os.PathLike[str], kind: str) -> Path | None:
    """The shipped config a name stands for, or None: a bare name (no folder, no suffix) of a ``kind`` config, or a
    ``configs/<kind>/...`` path (the README's, of a source checkout) read below the shipped ``<kind>/`` folder."""
    kind = _check_kind(kind)
    path = Path(name)
    if len(path.parts) == 1 and not path.suffix:
        found = ROOT / kind / f"{path.name}.yaml"
        return found if found.is_file() else None
    parts = path.parts
    if "configs" not in parts:
        return None
    below = parts[len(parts) - parts[::-1].index("configs"):]
    if below[:1] != (kind,) or ".." in below:  # another kind's file is no config of this kind
        return None
    found = ROOT.joinpath(*below)
    return found if found.is_file() else None


def find(name: str | os.PathLike[str], kind: str) -> Path:
    """The file a ``--config`` value of ``kind`` names: an existing path as given; a bare name (no folder, no
    suffix) of a shipped config; ``configs/<kind>/...`` of a missing file the shipped copy at that place (with a
    warning). Anything else comes back as given, for the reader's own "not found" error."""
    path = Path(name)
    if path.is_file():
        return path
    found = shipped(name, kind)
    bare = len(path.parts) == 1 and not path.suffix
    if found is not None:
        if not bare:
            warnings.warn(f"{os.fspath(name)} is not here; reading the copy shipped with aprkit: {found}",
                          UserWarning, stacklevel=2)
        return found
    if len(path.parts) == 1 and path.suffix in (".yaml", ".yml") and shipped(path.stem, kind) is not None:
        raise FileNotFoundError(f"config {os.fspath(name)!r}: no such file here; the shipped {kind} config of that "
                                f"name is given without its suffix: --config {path.stem}")
    other = next((k for k in KINDS if k != kind and bare and shipped(path.name, k) is not None), None)
    if other is not None:
        raise FileNotFoundError(f"config {os.fspath(name)!r} is a shipped {other} config, which {KINDS[kind]} does "
                                f"not read: {KINDS[other]} --config {path.name}")
    if bare:
        from .._text import nearest_names

        close = nearest_names(path.name, names(kind))
        raise FileNotFoundError(
            f"config {os.fspath(name)!r}: no such file and no shipped {kind} config of that name{close}; "
            + ("" if close else f"shipped: {', '.join(names(kind))}; ")
            + f"{KINDS[kind]} --list-configs describes them")
    return path
