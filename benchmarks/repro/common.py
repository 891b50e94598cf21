"""Shared plumbing of the reproduction studies (issue 16): arguments, training runs through ``aprkit.train.fit``,
evaluation through ``aprkit.eval.evaluate``, and the JSON + Markdown result files.

Every study script takes ``--out DIR``, ``--resume``, ``--device``, ``--epochs``, ``--smoke``, ``--shared`` and
``--train-only`` (train and return :func:`train_summary`, as ``gpu_studies.py`` does run by run);
training resumes through ``fit(..., resume=True)`` (``last.pt``) and evaluation through the eval cache
(``DIR/eval/cache``). ``--smoke`` shrinks everything (a few hundred images, one epoch, one corruption at one
severity) so a test can run the whole script in well under a minute on one CPU thread.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from aprkit import configs  # noqa: E402 - after the repository is on the import path

__all__ = [
    "REPO_ROOT", "CONFIGS", "SMOKE", "STUDY_FILE", "PLACEMENT_KEYS", "parser", "parse_args", "shared_root", "cifar10_spec",
    "scaled_milestones", "train_run", "check_same_recipe", "run_recipe", "train_summary", "feature_apr_builder",
    "device_meta", "write_outputs", "fmt_pct", "fmt_num", "markdown_table", "run_main",
]

CONFIGS = configs.ROOT / "train"  # the shipped recipes (configs/train of a checkout links there)
#: sizes of a ``--smoke`` run: training / test images, eval images, the one corruption cell
SMOKE: dict[str, Any] = {"train_limit": 256, "test_limit": 128, "eval_limit": 128, "corruptions": ["gaussian_noise"],
                         "severities": [3], "batch_size": 64}


def parser(description: str, default_epochs: int, shared_data: bool = True) -> argparse.ArgumentParser:
    """The arguments every study script shares (``shared_data=False``: a study on generated data and its own
    recipes, without ``--shared`` and ``--set``)."""
    from aprkit.cli._common import positive_int

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (runs/, eval/, results.json, results.md)")
    p.add_argument("--resume", action="store_true", help="continue training runs (last.pt) and reuse the eval cache")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--epochs", type=positive_int, default=default_epochs,
                   help="training epochs per run (same for every run; --smoke: 1)")
    p.add_argument("--smoke", action="store_true", help="tiny run (256 train images, 1 epoch, 1 corruption x 1 severity)")
    if shared_data:
        p.add_argument("--shared", default=None,
                       help="folder with data/cifar10 and models/ (default: $APRKIT_SHARED or ../shared)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--progress", action="store_true", help="progress bars")
    p.add_argument("--train-only", action="store_true",
                   help="train (or resume) the runs and stop: no evaluation, no results files (the GPU driver's jobs)")
    if shared_data:
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="a training config override for every run (repeatable), e.g. train.amp_dtype=bfloat16")
    return p


def read_state(path: Path) -> Any:
    """A study's JSON or YAML state file (by suffix), read; a damaged one (a run killed while writing it, an edit) is
    named in a ``ValueError``, which :func:`run_main` prints as one line (it was a parser's traceback)."""
    import yaml

    try:
        text = path.read_text()
        return yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ValueError(f"{path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0]}): a damaged state "
                         "file; delete it (or its run's folder) and run again") from None


#: set by run_main's SIGINT handler: a Ctrl-C whose KeyboardInterrupt Python dropped (raised in a finaliser)
_INTERRUPTED: list[bool] = []


def run_main(main: Callable[[], Any]) -> None:
    """A study script's entry point: a refusal (``ValueError``, a missing file) is one line and exit code 2, Ctrl-C
    exit code 130 (finished runs are kept: ``--resume`` goes on), as the ``aprkit`` command does; ``APRKIT_DEBUG=1``
    shows the traceback."""
    import signal

    name = Path(sys.argv[0]).name
    _INTERRUPTED.clear()

    def on_sigint(signum: int, frame: Any) -> None:  # remembered: a KeyboardInterrupt raised inside a weakref or
        _INTERRUPTED.append(True)  # finaliser callback is printed and dropped by Python (train_run checks)
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:  # (a background job's ignored SIGINT stays ignored)
        signal.signal(signal.SIGINT, on_sigint)
    try:
        main()
        if _INTERRUPTED:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted; finished runs are kept and a rerun with --resume goes on", file=sys.stderr)
        raise SystemExit(130) from None
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("APRKIT_DEBUG"):
            raise
        print(f"{name}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous)


def parse_args(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[argparse.Namespace, Path, Path]:
    """Parse a study's arguments, apply ``--threads`` and return ``(args, out folder, shared folder)``."""
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return args, Path(args.out), shared_root(args.shared)


def shared_root(arg: str | None = None) -> Path:
    """``--shared``, else ``$APRKIT_SHARED``, else ``../shared`` beside the repository; must hold data/cifar10."""
    root = Path(arg or os.environ.get("APRKIT_SHARED") or REPO_ROOT.parent / "shared").expanduser()
    if not (root / "data" / "cifar10").is_dir():
        raise FileNotFoundError(f"{root}/data/cifar10 not found: pass --shared DIR (or set APRKIT_SHARED) to the folder "
                                "holding data/cifar10 and models/")
    return root


def cifar10_spec(shared: Path) -> str:
    return f"cifar10:{shared / 'data' / 'cifar10'}"


#: the shared CIFAR recipe's lr steps (epochs 60/120/160/190 of 200) as fractions of the run
SHARED_MILESTONES = (0.3, 0.6, 0.8, 0.95)


def scaled_milestones(epochs: int, fractions: Sequence[float] = SHARED_MILESTONES) -> list[int]:
    """A recipe's lr steps (``fractions`` of the run: the shared 200-epoch recipe's 60/120/160/190 by default)
    scaled to ``epochs`` (each >= 1, < epochs, increasing)."""
    out: list[int] = []
    for f in fractions:
        m = max(1, round(f * epochs))
        if m < epochs and (not out or m > out[-1]):
            out.append(m)
    return out


def train_run(config: str | Path, out: Path, args: argparse.Namespace, overrides: Sequence[str] = (),
              build: Callable[[Any], Any] | None = None, study: Mapping[str, Any] | None = None,
              milestones: Sequence[float] = SHARED_MILESTONES) -> dict[str, Any]:
    """Train ``config`` (a file in ``configs/train``) on the shared CIFAR-10 into ``out``; return fit's summary
    without the model, plus ``train_s`` (the sum of the epochs' times). ``build(cfg) -> nn.Module`` replaces
    ``aprkit.train.build_model`` during this call (FeatureAPR hooks); everything else is the recipe plus the
    study's schedule (lr steps at the ``milestones`` fractions of ``--epochs``). ``study`` holds the settings that the build hook adds (FeatureAPR sites and probability):
    they are kept in ``study.json`` beside the run. With ``--resume``, a finished run brought back without
    ``last.pt`` (``model.pt`` and ``metrics.json`` of all epochs, as ``gpu_studies.py`` returns them) is reused as
    it is; a run folder whose recipe (config or ``study``) differs from the asked one is refused either way."""
    from aprkit.train import fit

    if _INTERRUPTED:  # a Ctrl-C that Python dropped during the last run: no further one starts
        raise KeyboardInterrupt

    shared = shared_root(args.shared)
    epochs = 1 if args.smoke else args.epochs
    ov = [f"data.dataset={cifar10_spec(shared)}", f"optim.epochs={epochs}",
          f"optim.milestones=[{', '.join(map(str, scaled_milestones(epochs, milestones)))}]",
          f"train.device={args.device}",
          f"train.progress={str(bool(args.progress)).lower()}", "train.tensorboard=false"]
    if args.threads:
        ov.append(f"train.threads={args.threads}")
    if args.smoke:
        ov += [f"data.limit={SMOKE['train_limit']}", f"data.test_limit={SMOKE['test_limit']}",
               f"optim.batch_size={SMOKE['batch_size']}", "data.num_workers=0"]
    ov += [*overrides, *getattr(args, "overrides", [])]  # the caller's --set last: it wins over the study's
    path = config if Path(config).is_absolute() else CONFIGS / config
    if args.resume:
        finished = not (out / "last.pt").is_file() and (out / "model.pt").is_file()
        summary = _finished_run(out, epochs) if finished else None  # first: its "pass --epochs N" is the clearer error
        check_same_recipe(out, path, ov, study or {})
        if summary is not None:
            return summary
    trained = any((out / name).exists() for name in ("last.pt", "model.pt", "metrics.json"))
    if study and not trained:  # a new run, also over a first attempt that failed before training (its config only);
        # an existing one is checked above or refused by fit
        out.mkdir(parents=True, exist_ok=True)
        (out / STUDY_FILE).write_text(json.dumps(dict(study), indent=1, sort_keys=True) + "\n")
    ctx = _patched_build(build) if build is not None else contextlib.nullcontext()
    from aprkit.train.state import RunBusyError, RunExistsError

    with ctx:
        try:
            res = fit(str(path), ov, out=out, resume=args.resume)
        except RunBusyError:  # another process is writing there: its own message says so
            raise
        except RunExistsError:  # its advice names aprkit train's --overwrite, which these scripts do not have
            raise SystemExit(f"{out} already holds a training run: pass --resume to continue it (a finished one is "
                             "reused), or another --out (delete the folder to start over)") from None
    res = {k: v for k, v in res.items() if k != "model"}
    # training time as the sum of the epochs' times: the same when a finished run is resumed (wall_s is this call's)
    res["train_s"] = round(sum(float(r.get("time_s", 0.0)) for r in res["history"]), 1)
    print(f"trained {out.name}: {res['final']} in {res['train_s']:.1f} s ({res['wall_s']:.1f} s this call)",
          file=sys.stderr)
    return res


#: the build hook's settings of a run (beside its config.yaml)
STUDY_FILE = "study.json"
#: config keys that say where and how fast a run trained, not what: a finished run trained elsewhere (a GPU
#: machine, other threads, another copy of CIFAR-10) is the same recipe
PLACEMENT_KEYS = frozenset({"train.device", "train.threads", "train.amp_dtype", "data.dataset", "data.eval_batch_size",
                            "train.compile", "aug.compile", "train.channels_last", "train.deterministic"})


def check_same_recipe(out: Path, config: Path, overrides: Sequence[str], study: Mapping[str, Any]) -> None:
    """Refuse to resume or reuse the run in ``out`` if it was trained with another recipe than ``config`` +
    ``overrides`` + ``study``: any trajectory key of ``config.yaml`` (see ``aprkit.train.trajectory.changed_keys``,
    where the run was trained aside), the dataset kind, the epochs it holds beyond the asked ones, or the build
    hook's settings (``study.json``)."""
    from aprkit.train.config import load_config
    from aprkit.train.trajectory import RESUME_FREE, changed_keys, recipe_version, trajectory_view

    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    saved = trajectory_view(read_state(saved_path) or {})  # keys added since: today's defaults
    want = trajectory_view(load_config(str(config), list(overrides)).to_dict())
    diffs = [f"{k}: {_dotted(saved, k)!r} there, {_dotted(want, k)!r} asked"
             for k in changed_keys(saved, want, RESUME_FREE | PLACEMENT_KEYS)]
    kinds = [str(_dotted(c, "data.dataset")).partition(":")[0] for c in (saved, want)]
    if kinds[0] != kinds[1]:
        diffs.append(f"data.dataset kind: {kinds[0]!r} there, {kinds[1]!r} asked")
    try:
        trained = len(read_state(out / "metrics.json"))
    except (OSError, ValueError):
        trained = 0
    if trained > want["optim"]["epochs"]:
        diffs.append(f"epochs: {trained} trained there, {want['optim']['epochs']} asked")
    saved_study = read_state(out / STUDY_FILE) if (out / STUDY_FILE).is_file() else {}
    if saved_study != json.loads(json.dumps(dict(study))):
        diffs.append(f"{STUDY_FILE}: {saved_study} there, {dict(study)} asked")
    if diffs:
        raise ValueError(f"cannot resume {out}: it holds a run of another recipe ({'; '.join(diffs)}); ask for the same "
                         "settings, or choose another --out (or remove the folder) to train anew")
    _warn_if_older_recipe(out, recipe_version(load_config(str(config), list(overrides))))


def _warn_if_older_recipe(out: Path, current: int) -> None:
    """Warn when the finished run in ``out`` (``model.pt``, no ``last.pt``: an unfinished one is resumed by ``fit``,
    which warns itself) was trained before a change to what its method trains (``RECIPE_VERSION``): it is reused as
    it is, and its numbers are the older recipe's. A ``model.pt`` without the field predates version 5."""
    import warnings

    from aprkit.models.checkpoint import read_checkpoint

    if (out / "last.pt").is_file() or not (out / "model.pt").is_file():
        return
    extra = (read_checkpoint(out / "model.pt") or {}).get("extra") or {}
    trained = extra.get("recipe_version")
    if (trained if trained is not None else min(current, 4)) < current:
        when = f"with recipe version {trained}" if trained is not None else "before recipe version 5"
        warnings.warn(f"{out} was trained {when}, the methods now train version {current} "
                      "(aprkit.train.trajectory.RECIPE_VERSION says what changed): it is reused as it is, so its "
                      "numbers are the older recipe's; train it anew in another --out for today's", RuntimeWarning,
                      stacklevel=3)


def _dotted(data: Mapping[str, Any], key: str) -> Any:
    from aprkit.eval.engine.cache import nested_get

    return nested_get(data, *key.split("."))


def run_recipe(run_dir: Path) -> dict[str, Any]:
    """What the run in ``run_dir`` was trained with, read from its own files (not from this call's arguments): the
    training method, the crop padding fill, the epochs it holds and the build hook's settings."""
    cfg = read_state(run_dir / "config.yaml") or {}
    history = read_state(run_dir / "metrics.json")
    study = read_state(run_dir / STUDY_FILE) if (run_dir / STUDY_FILE).is_file() else {}
    return {"method": _dotted(cfg, "aug.method"), "pad_fill": _dotted(cfg, "data.pad_fill"), "epochs": len(history),
            **study}


def train_summary(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What ``--train-only`` returns: per run its checkpoint, training time (sum over epochs), this call's wall
    time, the epochs trained and the last metrics row."""
    return {"runs": {name: {"checkpoint": r["checkpoint"], "train_s": r["train_s"], "wall_s": r["wall_s"],
                            "epochs": len(r["history"]), "final": r["final"]} for name, r in runs.items()}}


def _finished_run(out: Path, epochs: int) -> dict[str, Any]:
    """The summary of a finished run from its ``model.pt`` and ``metrics.json`` (no ``last.pt`` to resume from)."""
    try:
        history = read_state(out / "metrics.json")
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"{out} has model.pt but neither last.pt nor a readable metrics.json: cannot tell "
                                f"whether it finished ({err})") from None
    if len(history) != epochs:
        how = f"pass --epochs {len(history)}" + (" without --smoke (1 epoch)" if epochs == 1 else "")
        raise ValueError(f"{out} holds a run of {len(history)} epoch(s) without last.pt to continue it; asked for "
                         f"{epochs}: {how}, or remove the folder to train anew")
    print(f"reusing the finished run in {out} (model.pt, {epochs} epochs; no last.pt)", file=sys.stderr)
    return {"history": history, "final": history[-1] if history else {}, "checkpoint": str(out / "model.pt"),
            "out": str(out), "global_step": history[-1].get("step") if history else 0, "wall_s": 0.0,
            "train_s": round(sum(float(r.get("time_s", 0.0)) for r in history), 1)}


@contextlib.contextmanager
def _patched_build(build: Callable[[Any], Any]) -> Iterator[None]:
    """Swap ``aprkit.train.loop.build_model`` for ``build`` inside the block (fit has no model hook)."""
    from aprkit.train import loop

    original = loop.build_model
    loop.build_model = build  # type: ignore[assignment]
    try:
        yield
    finally:
        loop.build_model = original  # type: ignore[assignment]


def feature_apr_builder(layers: Sequence[str], p: float, seed: int) -> Callable[[Any], Any]:
    """A ``build(cfg)`` that attaches :class:`aprkit.hidden.FeatureAPR` at ``layers`` (active in train mode only;
    the saved checkpoint is the plain architecture). Its draws use their own generator seeded with ``seed``
    (a resumed run continues with a fresh stream, so it is not bit-identical to an uninterrupted one). Study 4's
    committed run was trained so and keeps this recipe; ``aprkit train`` now has ``feature_apr.layers`` (global RNG,
    seeded per step: resumes bit for bit)."""
    import torch

    from aprkit.distributed import resolve_device
    from aprkit.hidden import attach
    from aprkit.train import loop

    original = loop.build_model

    def build(cfg: Any) -> Any:
        model = original(cfg)
        last = Path(cfg.train.out or ".") / "last.pt"
        # an unfinished run (last.pt, no model.pt) continued: said, not silent (reproduction tester)
        if cfg.train.resume and cfg.train.out and last.is_file() and not last.with_name("model.pt").is_file():
            print(f"warning: resuming {last} with FeatureAPR attached by the study's build hook: its draws restart "
                  f"from seed {seed}, so the numbers will differ from an uninterrupted run's (aprkit train's "
                  "feature_apr.layers resumes bit for bit)", file=sys.stderr)
        # the training device itself (e.g. cuda:1, or this rank's GPU under torchrun), as fit resolves it
        dev = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
        gen = torch.Generator(device=dev).manual_seed(seed)
        model.to(dev)
        model.feature_apr_handle = attach(model, list(layers), p=p, generator=gen)
        return model

    return build


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def fmt_num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


#: every study's training curves, beside its results
CURVES = "figures/training_curves.png"


def training_curves(runs: Mapping[str, Mapping[str, Any]], out: Path) -> str | None:
    """Train and test accuracy per epoch of ``runs`` (``train_run``'s summaries) in ``out/figures/training_curves.png``;
    returns the Markdown line that shows it (relative to ``out``), or ``None`` when no run has a history."""
    from aprkit.demo.report import training_figure

    path = training_figure({k: {"history": r.get("history") or []} for k, r in runs.items()}, out / CURVES)
    return None if path is None else f"![Train and test accuracy per epoch]({CURVES})"


def device_meta(device: str | None, eval_amp: bool = True) -> dict[str, Any]:
    """Where and in what precision a study computed its numbers, for its ``results.json``: the device its runs
    resolve, training's autocast dtype there (``train.amp_dtype: auto``) and evaluation's (``evaluate``'s default;
    ``eval_amp=False`` for suites that run in float32, the transplant test); ``None``: float32 (the CPU)."""
    from aprkit.distributed import resolve_device
    from aprkit.eval.engine.inference import amp_dtype
    from aprkit.train.config import resolve_amp_dtype

    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    name = lambda dtype: str(dtype).removeprefix("torch.")  # noqa: E731
    return {"device": dev.type, "train_autocast": name(resolve_amp_dtype("auto", dev)) if cuda else None,
            "eval_autocast": name(amp_dtype(dev)) if cuda and eval_amp else None}


def write_outputs(out: Path, name: str, results: Mapping[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``out/results.json`` and ``out/results.md`` atomically; return both paths."""
    from aprkit._io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "results.json", out / "results.md"
    atomic_write_text(js, json.dumps({"study": name, **results}, indent=2, default=str) + "\n")
    atomic_write_text(md, markdown.rstrip() + "\n")
    print(f"wrote {js} and {md}", file=sys.stderr)
    return js, md
