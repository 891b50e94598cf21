"""Architecture of the ``aprkit`` package: no import cycles, the data-flow layers of ``aprkit.eval``, registries
that fail loudly, lazy exports that resolve.

Import graph rule (what :func:`import_graph` counts as an edge ``A -> B``): every ``import``/``from ... import``
statement anywhere in module A (module level, inside functions and classes, under ``TYPE_CHECKING``) that names
an ``aprkit`` module, with relative imports resolved:

- ``import a.b`` and ``from a.b import name`` are an edge to ``a.b`` (for a package: its ``__init__.py``);
  ``from a.b import sub`` where ``sub`` is a submodule is an edge to ``a.b.sub`` (so ``from . import x`` is an
  edge to the submodule ``x``, or to the package ``__init__`` when ``x`` is a name defined there);
- the parent packages Python initialises on the way (``a`` for ``a.b``) are not edges: otherwise every module
  would depend on its own package's ``__init__``;
- lazy exports (the ``aprkit._lazy`` tables, registries importing their plugin modules through
  ``importlib``) are not import statements and not edges;
- imports inside ``if __name__ == "__main__":`` are not edges: that block runs only when the module is executed
  as a script, as the separate module object ``__main__``, so it cannot close an import cycle.

A cycle between modules (any strongly connected component of two or more modules) fails with its path.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

import aprkit
from aprkit import _lazy

ROOT = Path(aprkit.__file__).parent


# ----------------------------------------------------------------------------------------------- import graph
def _module_names(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every ``.py`` file under the package folder ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _is_main_guard(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif not _is_main_guard(node):
            stack.extend(ast.iter_child_nodes(node))
    return found


def _targets(name: str, is_pkg: bool, node: ast.Import | ast.ImportFrom, modules: dict, top: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == top]
    if node.level:
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != top:
        return []
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same top-level package it imports (rule in the module docstring)."""
    modules = _module_names(root)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        edges = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            for target in _targets(name, is_pkg, node, modules, root.name):
                while target not in modules and "." in target:  # ``import a.b.attr`` style: the nearest module
                    target = target.rsplit(".", 1)[0]
                if target != name and target in modules:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycle paths (first node repeated at the end) in the strongly connected components of 2+ modules: the
    shortest cycle through each module of a component, each cycle once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles: list[list[str]] = []
    for comp in components:
        for start in sorted(comp):
            cycle = _cycle_in(graph, comp, start)
            if not any(set(zip(cycle, cycle[1:])) == set(zip(c, c[1:])) for c in cycles):
                cycles.append(cycle)
    return cycles


def _cycle_in(graph: dict[str, set[str]], comp: set[str], start: str) -> list[str]:
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth-first back to ``start`` inside the component: the shortest cycle through it
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(comp)}")


def test_aprkit_has_no_import_cycles() -> None:
    graph = import_graph(ROOT)
    assert len(graph) > 50 and graph["aprkit.models.checkpoint"]  # the whole package was read
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in aprkit (break each by moving the shared piece into a lower module):\n" + \
        "\n".join(" -> ".join(c) for c in cycles)


#: the data flow through ``aprkit.eval``, lowest layer first: a module imports ``aprkit.eval`` modules of its own
#: layer or lower ones only. The runner, the ``aprkit eval`` settings and ``Results`` sit above the suites they run
#: and summarise; the rest of ``engine/`` and ``report/`` sits below them.
EVAL_LAYERS = (
    ("metrics",),
    ("engine.batches", "engine.datasets", "engine.data_checks", "engine.inference", "engine.logit_checks",
     "engine.fingerprint",
     "engine.cache", "engine.models", "engine.outdir",
     "report.blocks", "report.plotting", "report.render", "report.header"),
    ("analyses",),
    ("suites",),
    ("engine.runner", "engine.run_record", "engine.suite_data", "engine.config", "report.results"),
)


def _eval_layer(module: str) -> int | None:
    rest = module.removeprefix("aprkit.eval.")
    for level, prefixes in enumerate(EVAL_LAYERS):
        if any(rest == p or rest.startswith(p + ".") for p in prefixes):
            return level
    return None


def test_eval_layers_follow_the_data_flow() -> None:
    graph = import_graph(ROOT)
    packages = {"aprkit.eval", "aprkit.eval.engine", "aprkit.eval.analyses", "aprkit.eval.report"}
    unplaced = [m for m in graph if m.startswith("aprkit.eval.") and m not in packages and _eval_layer(m) is None]
    assert not unplaced, f"aprkit.eval modules without a layer in EVAL_LAYERS: {unplaced}"
    upward = [f"{m} -> {t}" for m in graph for t in graph[m]
              if (lm := _eval_layer(m)) is not None and (lt := _eval_layer(t)) is not None and lt > lm]
    assert not upward, "aprkit.eval modules importing a higher layer (see EVAL_LAYERS):\n" + "\n".join(upward)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "pkg"


def test_import_graph_rule(tmp_path) -> None:
    """The rule of the module docstring on a toy package: relative, function-level and ``from . import x``
    imports are edges; parent packages, ``__main__`` blocks and other packages are not."""
    pkg = _write(tmp_path, {
        "pkg/__init__.py": "from . import low\n",
        "pkg/low.py": "import os\n",
        "pkg/sub/__init__.py": "X = 1\n",
        "pkg/sub/a.py": "from . import b\nfrom .. import low\n",
        "pkg/sub/b.py": "def f():\n    from pkg.sub import X\n    import pkg.sub.a\n",
        "pkg/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n"
                        "if __name__ == '__main__':\n    from pkg import high\n",
        "pkg/high.py": "from .sub.c import g\nimport numpy\n",
    })
    graph = import_graph(pkg)
    assert graph == {
        "pkg": {"pkg.low"}, "pkg.low": set(), "pkg.high": {"pkg.sub.c"}, "pkg.sub": set(),
        "pkg.sub.a": {"pkg.sub.b", "pkg.low"}, "pkg.sub.b": {"pkg.sub", "pkg.sub.a"}, "pkg.sub.c": {"pkg.sub.a"},
    }
    assert find_cycles(graph) == [["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"]]


def test_find_cycles_reports_the_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert sorted(find_cycles(graph)) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    two = {"config": {"runner"}, "report": {"runner"}, "runner": {"config", "report"}}  # one component, two cycles
    assert find_cycles(two) == [["config", "runner", "config"], ["report", "runner", "report"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


# -------------------------------------------------------------------------------------------------- registries
@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on ``sys.path`` for throw-away plugin modules (names prefixed ``_aprkit_test_``)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("_aprkit_test_")]:
        del sys.modules[name]


_BROKEN = {
    "_aprkit_test_typo": "import torch\nx = torch.nn.Linearr(2, 2)\n",  # AttributeError inside the module
    "_aprkit_test_badimport": "import torchh\n",  # a misspelt dependency
    "_aprkit_test_syntax": "def f(:\n",
    "_aprkit_test_missing_file": None,  # a misspelt module name in the registry's list
}
_OPTIONAL = "import albumentations\n"  # imported with albumentations hidden (sys.modules entry None)


def _plugin(plugin_dir: Path, name: str, text: str | None) -> str:
    if text is not None:
        (plugin_dir / f"{name}.py").write_text(text)
    return name


def _hide_optional(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "albumentations", None)  # ``import albumentations`` -> ModuleNotFoundError


def test_optional_packages_are_the_extras() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(_lazy.OPTIONAL_PACKAGES) == set(extras) - {"dev", "all"}


@pytest.mark.parametrize("broken", sorted(_BROKEN))
def test_import_plugins_raises_naming_the_module(plugin_dir, broken) -> None:
    name = _plugin(plugin_dir, broken, _BROKEN[broken])
    with pytest.raises(ImportError, match=rf"widget module '{name}'") as info:
        _lazy.import_plugins(["json", name], "widget")
    assert info.value.__cause__ is not None


def test_import_plugins_skips_only_missing_optional_packages(plugin_dir, monkeypatch) -> None:
    _hide_optional(monkeypatch)
    name = _plugin(plugin_dir, "_aprkit_test_optional", _OPTIONAL)
    assert list(_lazy.import_plugins(["json", name], "widget")) == ["json"]
    monkeypatch.setitem(sys.modules, "kornia", None)  # a required dependency: an error, not a skip
    other = _plugin(plugin_dir, "_aprkit_test_needs_kornia", "import kornia\n")
    with pytest.raises(ImportError, match="_aprkit_test_needs_kornia.*kornia"):
        _lazy.import_plugins([other], "widget")


def test_model_registry_raises_on_a_broken_module(plugin_dir, monkeypatch) -> None:
    from aprkit.models import registry

    name = _plugin(plugin_dir, "_aprkit_test_badimport", _BROKEN["_aprkit_test_badimport"])
    monkeypatch.setattr(registry, "MODEL_MODULES", (*registry.MODEL_MODULES, name))
    monkeypatch.setattr(registry, "_loaded", False)
    for _ in range(2):  # the second lookup raises too: never a silently partial registry
        with pytest.raises(ImportError, match=rf"model module '{name}'.*torchh"):
            registry.list_models()
    _hide_optional(monkeypatch)
    optional = _plugin(plugin_dir, "_aprkit_test_optional", _OPTIONAL)
    monkeypatch.setattr(registry, "MODEL_MODULES", (*registry.MODEL_MODULES[:-1], optional))
    assert "resnet20" in registry.list_models()


def test_suite_registry_raises_on_a_broken_module(plugin_dir, monkeypatch) -> None:
    from aprkit.eval import suites

    monkeypatch.setattr(suites, "__path__", [*suites.__path__, str(plugin_dir)])
    _plugin(plugin_dir, "broken_suite", "from .base import register_suite\nregister_suite('x')(undefined)\n")
    monkeypatch.setattr(suites, "SUITE_MODULES", (*suites.SUITE_MODULES, "broken_suite"))
    with pytest.raises(ImportError, match=r"suite module 'aprkit.eval.suites.broken_suite'.*NameError"):
        suites.load_suites()
    monkeypatch.setattr(suites, "SUITE_MODULES", (*suites.SUITE_MODULES[:-1], "missing_suite"))
    with pytest.raises(ImportError, match=r"suite module 'aprkit.eval.suites.missing_suite'"):
        suites.load_suites()
    _hide_optional(monkeypatch)
    _plugin(plugin_dir, "optional_suite", _OPTIONAL)
    monkeypatch.setattr(suites, "SUITE_MODULES", (*suites.SUITE_MODULES[:-1], "optional_suite"))
    assert "corruption" in suites.load_suites()
    sys.modules.pop("aprkit.eval.suites.broken_suite", None)


def test_cli_registry_raises_on_a_broken_module(plugin_dir, monkeypatch) -> None:
    import aprkit.cli as cli

    name = _plugin(plugin_dir, "_aprkit_test_syntax", _BROKEN["_aprkit_test_syntax"])
    monkeypatch.setitem(cli.SUBCOMMANDS, "broken", name)
    with pytest.raises(ImportError, match=rf"subcommand module '{name}'.*SyntaxError"):
        cli.build_parser()
    _hide_optional(monkeypatch)
    monkeypatch.setitem(cli.SUBCOMMANDS, "broken", _plugin(plugin_dir, "_aprkit_test_optional", _OPTIONAL))
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert "broken" not in commands and "eval" in commands


# ------------------------------------------------------------------------------------------------ lazy exports
def _import_or_skip(module: str) -> ModuleType | None:
    """Import ``module``; None when it needs an optional package that is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if _lazy._missing_optional(err) is not None:
            return None
        raise


_MODULES = sorted(m for m in _module_names(ROOT) if not m.endswith("__main__"))
_PACKAGES = sorted(m for m, (_, is_pkg) in _module_names(ROOT).items() if is_pkg)


@pytest.mark.parametrize("package", _PACKAGES)
def test_every_exported_name_resolves(package) -> None:
    """Every name of a package's ``__all__`` and of its lazy table resolves; a lazy table names the module that
    defines each class and function (not one that re-exports it)."""
    mod = _import_or_skip(package)
    if mod is None:
        pytest.skip(f"{package} needs an optional package that is not installed")
    tables = _lazy.lazy_tables()
    exports, submodules = tables.get(package, ({}, ()))
    missing = []
    for name in [*getattr(mod, "__all__", ()), *exports, *submodules]:
        try:
            getattr(mod, name)
        except ModuleNotFoundError as err:
            if _lazy._missing_optional(err) is None:
                raise
        except AttributeError as err:
            missing.append(f"{name}: {err}")
    assert not missing, f"{package} exports names that do not resolve: " + "; ".join(missing)
    for name, where in exports.items():
        source = _import_or_skip(where)
        if source is None:
            continue
        obj = getattr(source, name, None)
        assert obj is not None or hasattr(source, name), f"{package}.{name} points at {where}, which has no {name}"
        defined_in = getattr(obj, "__module__", where) if isinstance(obj, type) or callable(obj) else where
        assert defined_in == where, f"{package}.{name} points at {where}; it is defined in {defined_in}"


def test_every_module_all_resolves() -> None:
    """Every ``__all__`` name of every module (not only packages) is an attribute of that module."""
    missing = []
    for module in _MODULES:
        mod = _import_or_skip(module)
        for name in getattr(mod, "__all__", ()) if mod is not None else ():
            if not hasattr(mod, name):
                missing.append(f"{module}.{name}")
    assert not missing, "names in __all__ that the module does not define: " + ", ".join(missing)


def test_lazy_tables_cover_the_lazy_packages() -> None:
    """Each package with a lazy ``__getattr__`` from ``aprkit._lazy`` registers its table."""
    for package in _PACKAGES:
        mod = _import_or_skip(package)
        if mod is not None and getattr(getattr(mod, "__getattr__", None), "__module__", None) == "aprkit._lazy":
            assert package in _lazy.lazy_tables(), package


def test_importing_aprkit_and_its_command_line_loads_no_torch():
    """``aprkit train`` answered a Ctrl-C in its first seconds (torch loading under ``import aprkit``) with a
    traceback: importing the package and the CLI module is now light, and main() catches the interrupt."""
    import subprocess

    code = "import sys, aprkit, aprkit.cli; assert 'torch' not in sys.modules, 'torch imported'; aprkit.swap_amplitude"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_the_command_lines_help_loads_no_torch():
    """``aprkit --help`` and each subcommand's help took 3.5 s (torch loaded to build the parser: the text helpers
    lived beside the tensor checks, ``aprkit.corruptions`` imported every family); they load no torch now."""
    import subprocess

    from aprkit.cli import SUBCOMMANDS

    for argv in [[], *([name] for name in SUBCOMMANDS)]:
        code = (f"import sys, contextlib, io, aprkit.cli\nwith contextlib.redirect_stdout(io.StringIO()):\n"
                f"    try: aprkit.cli.main({[*argv, '--help']!r})\n    except SystemExit: pass\n"
                "assert 'torch' not in sys.modules, 'torch imported'")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert run.returncode == 0, (argv, run.stderr[-500:])
