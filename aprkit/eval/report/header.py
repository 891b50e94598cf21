"""The report's header, in words: models, data, device, date, versions and whether the run is complete.

Built from ``Results.meta`` (one run, or ``{"runs": [...]}`` for merged runs): datasets are printed as their
names or specs grouped by the suites that used them, never as a Python dict or list.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

from ..._text import comma_items
from .render import HeaderItem

__all__ = ["header_items", "describe", "limit_text", "run_limits"]


def describe(value: Any) -> str:
    """A metadata value (string, number, list, mapping) as plain text."""
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {describe(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if value and all(v == "Tensor" for v in value):
            return "in-memory tensors"
        return ", ".join(describe(v) for v in value)
    return str(value)


def _records(run: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """``(model, suite, provenance record)`` of every suite a run recorded."""
    for model, suites in (run.get("provenance") or {}).items():
        for suite, record in (suites or {}).items():
            if isinstance(record, Mapping):
                yield str(model), str(suite), record


def run_limits(run: Mapping[str, Any], limitless: Collection[str] = ()) -> dict[str, Any]:
    """``{suite: limit}`` of a run from its provenance records (``None``: every image, also for the suites in
    ``limitless``, which read no limit), one entry per suite."""
    limits: dict[str, set] = {}
    for _, suite, record in _records(run):
        options = record.get("options")
        if isinstance(options, Mapping):
            limits.setdefault(suite, set()).add(None if suite in limitless else options.get("limit"))
    return {suite: next(iter(v)) if len(v) == 1 else "differs between models" for suite, v in limits.items()}


def limit_text(limit: Any, n: int | None = None) -> str:
    """``"all images"`` or ``"first N images"``: what ``limit`` reads of a dataset; with the dataset's size ``n``,
    ``"all 10000 images"`` (also for a limit beyond it) or ``"first 200 of 10000 images"``."""
    if n is not None and (limit is None or isinstance(limit, int) and limit >= n):
        return f"all {n} images"
    if n is not None and isinstance(limit, int):
        return f"first {limit} of {n} images"
    return "all images" if limit is None else f"first {limit} images" if isinstance(limit, int) else str(limit)


#: ``(suite, its recorded options) -> "first 200 images"``: how many images a suite read
ImagesText = Callable[[str, Mapping[str, Any]], str]


def _by_text(texts: Mapping[str, Mapping[str, list[str]]]) -> dict[str, list[str]]:
    """``{suite: {text: models}}`` -> ``{text: the suites it holds for}``, a suite whose models differ named with
    the models of each text (``"corruption: A, B"``)."""
    groups: dict[str, list[str]] = {}
    for suite, values in texts.items():
        for text, models in values.items():
            who = ", ".join(dict.fromkeys(models))
            groups.setdefault(text, []).append(suite if len(values) == 1 or not who else f"{suite}: {who}")
    return groups


def _limit_text(runs: Sequence[Mapping[str, Any]], limitless: Collection[str] = (),
                images: ImagesText | None = None) -> str:
    """``"first 200 images (calibration); first 50 images (corruption)"`` over the suites of every run (a merged
    report's runs each read their own); empty when every suite used every image."""
    def default(suite: str, options: Mapping[str, Any]) -> str:
        return limit_text(None if suite in limitless else options.get("limit"))

    texts: dict[str, dict[str, list[str]]] = {}  # suite -> its text -> the models it holds for
    records = [(model, suite, record) for run in runs for model, suite, record in _records(run)]
    uncounted = {suite for _, suite, record in records if not isinstance(record.get("n_images"), int)}
    for run in runs:
        for model, suite, record in _records(run):
            options = record.get("options")
            if isinstance(options, Mapping):
                text, n = (images or default)(suite, options), record.get("n_images")
                # counts only where every record of the suite has one (an older aprkit's entries have none)
                if suite not in {*limitless, *uncounted} and isinstance(n, int) and text == default(suite, options):
                    text = limit_text(options.get("limit"), n)  # the count measured (a limit may exceed the set)
                texts.setdefault(suite, {}).setdefault(text, []).append(model)
    groups = _by_text(texts)
    if not groups or list(groups) == ["all images"]:
        return ""
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{text} ({', '.join(suites)})" for text, suites in groups.items())


def _runs_data_text(runs: Sequence[Mapping[str, Any]]) -> str:
    """The data of every run, per suite where the runs recorded it (a merged report's runs each name their suites'
    data; models of one suite on other data named with it, as the Images line does), else each run's data."""
    texts: dict[str, dict[str, list[str]]] = {}  # suite -> its data text -> the models it holds for
    plain: list[str] = []
    for run in runs:
        records = [(m, s, r) for m, s, r in _records(run) if r.get("data") is not None]
        for model, suite, record in records:
            texts.setdefault(suite, {}).setdefault(describe(record["data"]), []).append(model)
        data = run.get("data")
        if not records and isinstance(data, Mapping):  # a run without provenance: its data per suite
            for suite, value in data.items():
                texts.setdefault(str(suite), {}).setdefault(describe(value), [])
        elif not records and data is not None:
            plain.append(describe(data))
    groups = _by_text(texts)
    if len(texts) == 1 and len(groups) > 1:  # one suite, models on other data: "A: spec; B: spec"
        grouped = [f"{who}: {text}" if (who := ", ".join(dict.fromkeys(models))) else text
                   for text, models in next(iter(texts.values())).items()]
    elif len(groups) == 1 and not plain:
        grouped = [next(iter(groups))]
    else:
        grouped = [f"{text} ({', '.join(labels)})" for text, labels in groups.items()]
    return "; ".join(t for t in dict.fromkeys([*grouped, *plain]) if t and t != "-")


def _list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [] if value is None else [value]


def _seed_text(run: Mapping[str, Any]) -> str:
    """The seeds of the run's suites (their provenance records), e.g. ``"0"``."""
    seeds = {str(record["seed"]) for _, _, record in _records(run) if record.get("seed") is not None}
    return ", ".join(sorted(seeds))


def _items(value: Any) -> list[str]:
    """A recorded list option as its items (``"fog,snow"``, ``["fog", "snow"]``, ``5``)."""
    if isinstance(value, str):
        return comma_items(value)
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [] if value is None else [str(value)]


def _cells_text(options: Mapping[str, Any], default: Sequence[str] = ()) -> str:
    """The corruption x severity cells that recorded suite ``options`` mean, in one canonical text: the same cells
    read the same whatever order, repeats or spelling of the defaults the options were given in (``default``: the
    suite's default corruptions)."""
    from aprkit.corruptions import expand_groups

    given = sorted(set(_items(options.get("corruptions"))))
    if given in (["none"], ["clean"]):
        return "clean images only"
    # options record what was given beyond the defaults: no corruptions are the default ones, named, so that they
    # read the same as the same cells named one by one (or as a group)
    names = given or list(default)
    try:
        corruptions = sorted(set(expand_groups(names)))
    except ValueError:  # a name this aprkit does not know (results of another version): compared as recorded
        corruptions = sorted(set(names))
    severities = sorted(set(_items(options.get("severities"))) or {"1", "2", "3", "4", "5"})
    parts = [", ".join(corruptions) or "default corruptions", f"severities {', '.join(severities)}"]
    if options.get("corrupted"):
        parts.append(f"from {describe(options['corrupted'])}")
    return "; ".join(parts)


def _grid_text(runs: Sequence[Mapping[str, Any]], grid_suites: Collection[str] | Mapping[str, Sequence[str]]) -> str:
    """Empty when every model and suite of ``grid_suites`` was evaluated on the same corruption x severity cells,
    else which ones each used: a mean over other cells is no comparison (the options record what was asked beyond
    the defaults)."""
    grids: dict[str, list[str]] = {}
    for run in runs:
        for model, suite, record in _records(run):
            options = record.get("options")
            if suite not in grid_suites or not isinstance(options, Mapping):
                continue
            default = grid_suites.get(suite, ()) if isinstance(grid_suites, Mapping) else ()
            grids.setdefault(_cells_text(options, default), []).append(f"{model} {suite}")
    if len(grids) < 2:
        return ""
    return "DIFFER: " + " | ".join(f"{grid} ({', '.join(who)})" for grid, who in grids.items())


#: a suite's :meth:`~aprkit.eval.suites.base.Suite.setup_text` of recorded options
SetupText = Callable[[str, Mapping[str, Any]], str]


def _setup_items(runs: Sequence[Mapping[str, Any]], setup: SetupText | None) -> list[HeaderItem]:
    """One line per suite whose models were measured with different settings (``setup``'s texts), naming each
    setting's models: their numbers side by side are no comparison (OOD means over other sets)."""
    if setup is None:
        return []
    by_suite: dict[str, dict[str, list[str]]] = {}
    for run in runs:
        for model, suite, record in _records(run):
            options = record.get("options")
            text = setup(suite, options) if isinstance(options, Mapping) else ""
            if text:
                by_suite.setdefault(suite, {}).setdefault(text, []).append(model)
    items = []
    for suite, texts in by_suite.items():
        if len(texts) < 2:
            continue
        common = set.intersection(*(set(t.split("; ")) for t in texts))  # shown once would say nothing
        shown = {"; ".join(p for p in t.split("; ") if p not in common): who for t, who in texts.items()}
        items.append(HeaderItem(f"{suite} settings",
                                "DIFFER: " + " | ".join(f"{t} ({', '.join(who)})" for t, who in shown.items())))
    return items


def _device_text(run: Mapping[str, Any]) -> str:
    devices = ", ".join(map(str, _list(run.get("device")))) or "-"
    extra = []
    worlds = [int(w) for w in _list(run.get("world_size")) if str(w).isdigit()]
    if worlds and max(worlds) > 1:
        extra.append(f"{'/'.join(map(str, worlds))} processes")
    if True in _list(run.get("amp")):
        extra.append("mixed precision")
    return devices + (f" ({', '.join(extra)})" if extra else "")


def _models_text(model_ids: Sequence[str], runs: Sequence[Mapping[str, Any]]) -> str:
    specs: dict[str, str] = {}
    for run in runs:
        for label, spec in (run.get("models") or {}).items():
            if isinstance(spec, str) and spec != label:
                specs.setdefault(str(label), spec)
    return ", ".join(f"{m} ({specs[m]})" if m in specs else m for m in model_ids) or "-"


def _status_text(runs: Sequence[Mapping[str, Any]]) -> str | None:
    failed = {m: dict(s) for run in runs for m, s in (run.get("failed") or {}).items() if s}
    pending = {m: [x for x in s if x not in failed.get(m, {})]
               for run in runs for m, s in (run.get("pending") or {}).items() if s}
    pending = {m: s for m, s in pending.items() if s}
    # a model that could not be loaded: the folder's other results are whole, but not what this run was asked for
    unloaded = {str(m): str(e) for run in runs for m, e in (run.get("load_failed") or {}).items()}
    lost = "failed to load: " + "; ".join(f"{m} ({e})" for m, e in unloaded.items()) if unloaded else ""
    if any(run.get("complete") is False for run in runs) or pending or failed:
        parts = ["failed: " + "; ".join(f"{m}: {s} ({e})" for m, f in failed.items() for s, e in f.items())] \
            if failed else []
        parts += [lost] if lost else []
        if pending:
            parts.append("not yet run: " + "; ".join(f"{m}: {', '.join(s)}" for m, s in pending.items()))
        return "INCOMPLETE" + (f" ({'; '.join(parts)})" if parts else "")
    if any(run.get("complete") is True for run in runs):  # the folder's results are whole, not what was asked
        return f"complete for the models loaded ({lost})" if lost else "complete (every requested suite finished)"
    return None


def _joined(runs: Sequence[Mapping[str, Any]], text: Any) -> str:
    values = [t for t in dict.fromkeys(text(run) for run in runs) if t and t != "-"]
    return "; ".join(values)


def header_items(model_ids: Sequence[str], meta: Mapping[str, Any], limitless: Collection[str] = (),
                 images: ImagesText | None = None, setup: SetupText | None = None,
                 grid_suites: Collection[str] | Mapping[str, Sequence[str]] = ()) -> list[HeaderItem]:
    """Header lines of a report on ``model_ids`` with run metadata ``meta`` (lines without a value are left out);
    ``limitless``: the suites that read no limit (their line says every image); ``images``: each suite's own
    account of the images it read (default: the first ``limit``); ``setup``: each suite's account of its settings
    (a line per suite whose models differ in them); ``grid_suites``: the suites whose corruption x severity cells
    must match, or a mapping of them to their default corruptions (``write_report`` passes those the suite registry
    marks ``cell_grid``; none by default)."""
    runs = [r for r in (meta.get("runs") if "runs" in meta else [meta]) or [] if isinstance(r, Mapping)]
    items = [HeaderItem("Models", _models_text(model_ids, runs))]
    fields = (  # Data and Images over every run's suites; the others run by run
        ("Data", lambda: _runs_data_text(runs)),
        ("Images", lambda: _limit_text(runs, limitless, images)),
        ("Device", lambda: _joined(runs, lambda r: _device_text(r) if r.get("device") else "")),
        ("Seed", lambda: _joined(runs, _seed_text)),
        ("Date", lambda: _joined(runs, lambda r: str(r.get("date") or "").replace("T", " ").replace("+00:00", " UTC"))),
        ("Versions", lambda: _joined(runs, lambda r: ", ".join(
            f"{name} {r[key]}" for name, key in (("aprkit", "aprkit"), ("torch", "torch"), ("Python", "python"))
            if r.get(key)))),
    )
    for label, text in fields:
        value = text()
        if value:
            items.append(HeaderItem(label, value))
        grid = _grid_text(runs, grid_suites) if label == "Images" else ""
        if grid:
            items.append(HeaderItem("Corruption cells", grid))
        if label == "Images":
            items += _setup_items(runs, setup)
    caveats = list(dict.fromkeys(str(c) for run in runs for c in _list(run.get("caveats"))))
    if caveats:
        items.append(HeaderItem("Caveats", " ".join(caveats)))
    status = _status_text(runs)
    if status:
        items.append(HeaderItem("Status", status))
    return items
