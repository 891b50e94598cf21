"""Import on first use: lazy package exports (names resolve to their defining module on first access, nothing heavy
at import) and the plugin imports of the registries (models, suites, subcommands), which fail loudly."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Iterable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["lazy_getattr", "lazy_tables", "import_plugins", "OPTIONAL_PACKAGES"]

#: packages of aprkit's optional extras (``pip install aprkit[albumentations]``, ``aprkit[robustbench]``): the only
#: missing imports a registry tolerates. timm and kornia are required dependencies, so their absence is an error.
OPTIONAL_PACKAGES = ("albumentations", "robustbench")

#: package -> (public name -> defining module, submodule names), filled by every ``lazy_getattr`` call
_TABLES: dict[str, tuple[Mapping[str, str], tuple[str, ...]]] = {}


def lazy_getattr(package: str, exports: Mapping[str, str], submodules: Collection[str] = ()) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``: ``exports`` maps a public name to the module that
    defines it; ``submodules`` are imported as ``package.<name>``."""
    _TABLES[package] = (exports, tuple(submodules))

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def lazy_tables() -> dict[str, tuple[Mapping[str, str], tuple[str, ...]]]:
    """The lazy export tables of the packages imported so far: package -> (name -> module, submodules)."""
    return dict(_TABLES)


def _missing_optional(err: ModuleNotFoundError) -> str | None:
    top = (err.name or "").partition(".")[0]
    return top if top in OPTIONAL_PACKAGES else None


def import_plugins(modules: Iterable[str], kind: str) -> dict[str, ModuleType]:
    """Import each of ``modules`` (a registry's plugin modules, e.g. ``kind="model"``); return the imported ones.

    A module whose import fails because a package of :data:`OPTIONAL_PACKAGES` is not installed is left out (its
    entries are unavailable); any other failure (a missing or misspelt module, a syntax or name error inside
    it) raises ``ImportError`` naming the module, chained to the original error.
    """
    loaded: dict[str, ModuleType] = {}
    for mod in modules:
        try:
            loaded[mod] = importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if _missing_optional(err) is not None:
                continue
            raise ImportError(f"{kind} module {mod!r} cannot be imported: {err}") from err
        except Exception as err:
            raise ImportError(f"{kind} module {mod!r} failed to import ({type(err).__name__}: {err})") from err
    return loaded
