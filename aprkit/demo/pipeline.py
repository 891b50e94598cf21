"""``run_demo``: train the same small CNN with standard training and with APR-SP, evaluate both, report.

Stages (each timed, wall and CPU seconds): data -> train ``standard`` -> train ``apr_sp`` -> evaluate
both models with the full suite (clean accuracy and the 15 corruptions x 5 severities, calibration, OOD
against the synthetic noise sets, shape bias on generated cue-conflict stimuli, phase bias, and the
transplant layer sweep over ``block1..block4``) -> one side-by-side report (HTML, Markdown, JSON).

Everything lands under ``out_dir``: ``train/<method>-<hash>/`` (resumable training runs), ``cache/<hash>/``
(resumable evaluation), ``report.html``, ``report.md``, ``results.json``, ``figures/``. A killed run
resumes where it stopped when started again with the same arguments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import (
    DemoData,
    DemoSettings,
    TensorSet,
    check_out_outside_data,
    demo_settings,
    load_demo_data,
    lr_milestones,
)

__all__ = ["run_demo", "train_config", "train_model", "eval_options", "SharedCorruptions", "transplant_layers",
           "Stopwatch"]

#: the demo's two models: report name -> ``aprkit.train`` method (not the list of methods: that is
#: ``aprkit.train.config.METHODS``)
DEMO_MODELS = {"standard": "standard", "apr-sp": "apr_sp"}


class Stopwatch:
    """Times named stages (wall and process CPU seconds) and prints a header for each to stderr."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress
        self.stages: dict[str, dict[str, float]] = {}
        self._t0 = time.perf_counter()

    @staticmethod
    def cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.progress:
            print(f"[demo] {name} ...", file=sys.stderr, flush=True)
        w, c = time.perf_counter(), self.cpu()
        value = fn()
        self.stages[name] = {"wall_s": round(time.perf_counter() - w, 2), "cpu_s": round(self.cpu() - c, 2)}
        if self.progress:
            s = self.stages[name]
            print(f"[demo] {name}: {s['wall_s']:.1f} s (CPU {s['cpu_s']:.1f} s)", file=sys.stderr, flush=True)
        return value

    @property
    def total(self) -> dict[str, float]:
        cpu = sum(s["cpu_s"] for s in self.stages.values())
        return {"wall_s": round(time.perf_counter() - self._t0, 2), "cpu_s": round(cpu, 2)}


def _digest(obj: Any, n: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def train_config(method: str, settings: DemoSettings, num_classes: int, image_size: int, seed: int, device: str,
                 progress: bool) -> dict[str, Any]:
    """The ``aprkit.train`` config of one demo model (``method``: ``standard`` or ``apr_sp``).

    SGD Nesterov, ``lr`` with x0.2 steps after the fractions ``lr_steps`` of the epochs (default: one, after 80 %),
    random crop (pad 4) + flip;
    ``apr_sp`` adds APR-S in the input pipeline and trains on CE(x) + CE(APR-P(x)) (the seed paper's recipe) with
    APR-P probability ``settings.pair_p`` and ``settings.sp_forward`` (one joint forward of both halves, or two).
    """
    from ..train.config import PAIR_METHODS

    e = settings.epochs
    apr = {"pair_p": settings.pair_p, "sp_forward": settings.sp_forward} if method in PAIR_METHODS else {}
    milestones = lr_milestones(e, settings.lr_steps)
    return {
        "name": f"demo-{method}",
        "model": {"name": "small_cnn", "num_classes": num_classes},
        "data": {"image_size": image_size, "crop_padding": 4 if image_size <= 64 else image_size // 16,
                 "num_workers": 0,
                 "eval_batch_size": settings.eval_batch_size, "input_path": "gpu", "in_memory": True},
        "aug": {"method": method, **apr},  # APR settings only where they act: a standard run's hash ignores them
        "optim": {"lr": settings.lr, "batch_size": settings.batch_size, "epochs": e, "milestones": milestones,
                  "gamma": 0.2, "weight_decay": settings.weight_decay},
        "train": {"seed": seed, "device": device, "progress": progress, "tensorboard": False, "eval_every": 1},
    }


def transplant_layers(model: nn.Module) -> list[str]:
    """The last ReLU of each ``blockN`` of the small CNN (``block1.2`` ...): its output is the block's
    post-activation, its input the pre-activation (the site where sign/phase codes can matter)."""
    names = []
    for bname, block in model.named_children():
        if bname.startswith("block"):
            relus = [n for n, m in block.named_children() if isinstance(m, nn.ReLU)]
            if relus:
                names.append(f"{bname}.{relus[-1]}")
    if not names:
        raise ValueError("transplant_layers expects a model with children block1..blockN containing nn.ReLU modules")
    return names


class SharedCorruptions:
    """``(corruption, severity) -> TensorSet``: each corrupted test set is generated once (seeded) and reused
    by every model, so both models see exactly the same corrupted images."""

    origin = "generated"  # what the corruption suite reports for these cells (aprkit generated them, once)

    def __init__(self, test: TensorSet, seed: int, preset: str, progress: bool = True, chunk: int = 500) -> None:
        self.test, self.seed, self.preset, self.progress, self.chunk = test, seed, preset, progress, chunk
        self.cells: dict[tuple[str, int], TensorSet] = {}
        self.seconds = 0.0

    def __repr__(self) -> str:  # stable: part of the runner's cache keys
        from ..corruptions import CODE_VERSION
        from ..corruptions._frost import texture_id

        # one source for every cell, so the whole code's version (any corruption's change recomputes the demo's cells)
        return (f"SharedCorruptions({self.test.cache_id}, seed={self.seed}, preset={self.preset}, code={CODE_VERSION}, "
                f"frost={texture_id()})")

    @property
    def cache_id(self) -> str:
        """How the result cache identifies this -C source (``aprkit.eval.engine.cache.identity``)."""
        return repr(self)

    def __call__(self, corruption: str, severity: int) -> TensorSet:
        key = (corruption, int(severity))
        if key not in self.cells:
            from ..corruptions import corrupt, item_seeds

            t0 = time.perf_counter()
            x = self.test.images
            seeds = item_seeds(self.seed, corruption, int(severity), self.preset, range(len(x)))  # as the eval's cells
            parts = [corrupt(x[i : i + self.chunk], corruption, int(severity), preset=self.preset,
                             seeds=seeds[i : i + self.chunk])
                     for i in range(0, len(x), self.chunk)]
            cell_id = f"{self.test.cache_id}|{corruption}-{severity}|seed{self.seed}"
            self.cells[key] = TensorSet(torch.cat(parts), self.test.labels, cell_id)
            self.seconds += time.perf_counter() - t0
        return self.cells[key]


def train_model(name: str, cfg: dict[str, Any], data: DemoData, out: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Train (or resume, or reload when finished) ``cfg`` on ``data`` in ``out/train/<name>-<hash of cfg and data>``;
    return the model in eval mode and a summary (checkpoint, history, final accuracies, training seconds)."""
    from ..train import fit
    from ..train.config import config_from_dict
    from ..train.trajectory import recipe_version

    parsed = config_from_dict(cfg)
    resolved = parsed.to_dict()  # with the defaults of this version, not only the keys the demo sets
    shown = ("progress", "tensorboard", "report")  # what a run shows, not what it computes: not part of the key
    key = {**resolved, "train": {k: v for k, v in resolved["train"].items() if k not in shown},
           "recipe_version": recipe_version(parsed)}
    run_dir = out / "train" / f"{name}-{_digest([key, data.train.cache_id, data.test.cache_id])}"
    # a folder from an earlier run resumes; a new one starts quietly (a resume finding nothing says so, twice a demo)
    res = fit(cfg, out=run_dir, resume=run_dir.exists(), datasets=(data.train, data.test))
    hist = res["history"]
    info = {"method": cfg["aug"]["method"], "run_dir": str(run_dir), "checkpoint": res["checkpoint"],
            "epochs": cfg["optim"]["epochs"],
            "history": hist, "final_train_acc": hist[-1].get("train_acc") if hist else None,
            "final_test_acc": hist[-1].get("test_acc") if hist else None,
            "train_seconds": round(sum(r.get("time_s", 0.0) for r in hist), 2)}
    return res["model"].eval(), info


def eval_options(s: DemoSettings, dd: DemoData, shared: SharedCorruptions, suites: list[str],
                 layers: list[str] | None = None) -> dict[str, Any]:
    """The demo's evaluation options for ``suites`` (only the options those suites read): the corruption grid of
    ``s`` on the ``shared`` corrupted sets, OOD, phase-bias and transplant sizes; ``layers``: the transplant sites."""
    from ..corruptions.severity import preset_for_size
    from ..eval.suites.ood import SCORES
    from ..eval.suites.options import suite_registry

    test, preset = dd.test, preset_for_size(*dd.test.images.shape[-2:])
    options: dict[str, Any] = {
        "corrupted": shared, "preset": preset, "corruptions": list(s.corruptions) if s.corruptions else None,
        "severities": list(s.severities), "num_classes": dd.num_classes, "ood_scores": list(s.ood_scores or SCORES),
        "fit": dd.train, "fit_limit": s.fit_limit, "ood_limit": len(test),
        "n_pairs": s.n_phase_pairs, "n_shuffle": min(s.n_phase_pairs, len(test)),
        "transplant_layers": layers, "transplant_every": s.transplant_every, "transplant_n_pairs": s.n_transplant_pairs,
        "transplant_n_control": s.n_transplant_control, "transplant_max_images": len(test),
    }
    if "transplant" in suites and not layers:
        raise ValueError("eval_options: the transplant suite needs layers (transplant_layers(model))")
    registry = suite_registry(suites)
    read = {o for name in suites for o in registry[name].option_names()}
    return {k: v for k, v in options.items() if v is not None and k in read}


#: the fingerprint of the run whose results ``<out>/index.json`` and the reports hold
_RUN_MARKER = "demo-run.txt"
#: what a demo run writes into ``--out`` from its evaluation (rebuilt from the fingerprint's cache when it resumes)
_RUN_OUTPUTS = ("index.json", "results.json", "report.md", "report.html")


def _check_out_dir(out: Path) -> None:
    """Refuse an output folder holding results or a report that no demo wrote (no ``demo-run.txt``): the demo would
    replace them (an evaluation's, a paper's figures). Checked before training, which takes minutes."""
    if (out / _RUN_MARKER).is_file() or not out.is_dir():
        return
    found = [n for n in (*_RUN_OUTPUTS, "figures") if (out / n).exists()]
    if found:
        raise FileExistsError(f"{out} holds {', '.join(found)} that aprkit demo did not write; the demo writes its "
                              "results, report and figures there and would replace them: choose another --out (or "
                              "move them away)")


def _claim_out_dir(out: Path, fingerprint: str) -> None:
    """Make ``out`` this run's: when its results and reports are another run's (other settings, data or weights;
    or of unknown origin), they are removed before this run evaluates, so that an interrupted or failed run leaves
    no mix of two runs' numbers under one label and no old report that says "complete". This run's own results
    are kept (a resumed run); its evaluation cells live in ``cache/<fingerprint>`` either way."""
    from .._io import atomic_write_text

    marker = out / _RUN_MARKER
    previous = marker.read_text().strip() if marker.is_file() else None
    if previous != fingerprint:
        if previous is not None and any((out / n).exists() for n in _RUN_OUTPUTS):
            print(f"demo: {out} holds another demo run's results (other settings, data or weights): replacing its "
                  "results.json and report", file=sys.stderr)
        for name in _RUN_OUTPUTS:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "figures", ignore_errors=True)  # the report's plots of that run
        atomic_write_text(marker, fingerprint + "\n")


def run_demo(
    out_dir: str | os.PathLike[str],
    quick: bool = False,
    device: str = "cpu",
    data: str = "synthetic",
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    *,
    settings: DemoSettings | None = None,
    download: bool = False,
):
    """Train standard and APR-SP small CNNs on ``data``, evaluate both side by side, write the report.

    ``data``: ``"synthetic"`` (default; no download), ``"cifar10:PATH"``, ``"cifar100:PATH"`` or
    ``"folder:PATH"``. ``quick``: a seconds-long run with every report section. ``settings`` replaces the
    preset built from ``quick``/``epochs`` (see :class:`aprkit.demo.DemoSettings`). Generated frost needs the frost
    textures: checked before training (``download``: fetched, 2 MB, see :func:`aprkit.corruptions.find_frost_dir`).
    Returns the
    :class:`aprkit.eval.Results` with
    ``results.meta["demo"]`` holding the summary, verdicts, timings and training histories.
    """
    from ..corruptions import BENCHMARK, expand_groups, find_frost_dir
    from ..corruptions.severity import preset_for_size
    from ..distributed import resolve_device
    from ..eval import evaluate
    from ..eval.engine.fingerprint import model_fingerprint
    from ..eval.suites.cue_conflict import synthetic_stimuli
    from .report import write_demo_report
    from .summary import headline_numbers, overall_sentence, summary_text, verdicts

    if out_dir is None or str(out_dir) == "":
        raise ValueError("out_dir is required: the demo writes its report and checkpoints there")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        # torch's CPU generators read the low 32 bits of a seed, and the demo derives streams as 2 * seed + k: a larger
        # seed would repeat a smaller one's data
        raise ValueError(f"seed (--seed) must be an integer in 0..2**31 - 1, got {seed!r}")
    out = Path(out_dir).expanduser()
    check_out_outside_data(out, data)  # its runs (out/train/<run>) and figures: classes of the next run's data
    dev = str(resolve_device(device))
    s = settings if settings is not None else demo_settings(quick, epochs)
    clock = Stopwatch(progress)
    load_start = os.getloadavg()

    dd: DemoData = clock.run("data", lambda: load_demo_data(data, s, seed=seed, progress=progress))
    if dd.synthetic:  # synthetic:N names the training size itself: the settings record the size used
        s = dataclasses.replace(s, n_train=int(dd.train.images.shape[0]))
    if len(dd.train) < s.batch_size:
        if dd.synthetic:
            fix = "raise synthetic:N"
        elif 0 < s.n_train == len(dd.train):  # --train-size took a subset: the data may hold more
            fix = "raise --train-size if it holds more, or add images"
        else:
            fix = "it holds no more: add images"
        raise ValueError(f"the demo trains on batches of {s.batch_size} images, so it needs at least {s.batch_size} "
                         f"training images; {data} gives {len(dd.train)} ({fix})")
    for split, ds in (("training", dd.train), ("test", dd.test)):  # before hours of training, not in phase bias
        if int(torch.unique(ds.labels).numel()) < 2:
            raise ValueError(f"{data} gives {split} images of one class only; the demo compares classifiers and pairs "
                             "test images of different classes, so it needs at least two classes in each split "
                             f"(raise --{'train' if split == 'training' else 'test'}-size or add images)")
    _check_out_dir(out)
    if "frost" in expand_groups(list(s.corruptions or BENCHMARK)):  # before the training, not at the frost cell
        find_frost_dir(download=download, progress=progress)
    out.mkdir(parents=True, exist_ok=True)  # only now: a run refused above leaves no empty folder behind
    size = int(dd.test.images.shape[-1])
    models: dict[str, nn.Module] = {}
    training: dict[str, Any] = {}
    for name, method in DEMO_MODELS.items():
        cfg = train_config(method, s, dd.num_classes, size, seed, dev, progress)
        models[name], training[name] = clock.run(f"train {name}", partial(train_model, name, cfg, dd, out))

    suites = ["corruption", "calibration", "ood", *(["cue-conflict"] if dd.synthetic else []), "phase-bias",
              "transplant"]
    test = dd.test
    data_map: dict[str, Any] = {k: test for k in suites}
    data_map["transplant"] = (test.images, test.labels)  # tensors: the sweep works on one in-memory batch
    if dd.synthetic:
        data_map["cue-conflict"] = clock.run("cue-conflict stimuli",
                                             partial(synthetic_stimuli, s.n_cue_conflict, seed=10007 + seed))
    shared = SharedCorruptions(test, seed, preset_for_size(*test.images.shape[-2:]), progress)
    options = eval_options(s, dd, shared, suites, transplant_layers(models["standard"]))
    fingerprint = _digest([s.to_dict(), data, seed, {k: model_fingerprint(m) for k, m in models.items()}])
    _claim_out_dir(out, fingerprint)
    results = clock.run("evaluate", lambda: evaluate(
        models, suite=suites, data=data_map, out_dir=out, cache_dir=out / "cache" / fingerprint, device=dev,
        batch_size=s.eval_batch_size, options=options, seed=seed, progress=progress, report=False))

    heads = {m: headline_numbers(results.models[m]) for m in results.models}
    rows = verdicts(heads["standard"], heads["apr-sp"])
    results.meta["demo"] = {
        "data": data, "data_description": dd.description, "synthetic": dd.synthetic, "quick": quick, "device": dev,
        "seed": seed, "settings": s.to_dict(), "training": training, "headline": heads, "verdicts": rows,
        "overall": overall_sentence(rows), "corruption_generation_s": round(shared.seconds, 2),
        "timings": {**clock.stages, "total": clock.total}, "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }
    paths = clock.run("report", lambda: write_demo_report(results, out))
    results.meta["demo"]["timings"] = {**clock.stages, "total": clock.total}
    results.save(paths["json"])
    results.paths = paths
    if progress:
        print("\n" + summary_text(rows) + "\n" + overall_sentence(rows), flush=True)
    return results
