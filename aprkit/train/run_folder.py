"""The output folder of a training run before its first write (rank 0): its lock, the re-check that no other run
changed it meanwhile, clearing it for ``overwrite`` and writing ``config.yaml``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._io import atomic_write_text, remove_temporaries
from .config import Config
from .resume import RunPosition
from .state import REPORT_FILES, RUN_FILES, RunBusyError, check_run_folder, clear_run_folder, run_lock

__all__ = ["run_length", "file_state", "take_run_folder"]


def run_length(config: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(optim.epochs, train.max_steps)`` of a config mapping: how far a run goes."""
    return (config.get("optim") or {}).get("epochs"), (config.get("train") or {}).get("max_steps")


def file_state(path: Path | None) -> tuple[int, int, int] | None:
    """``(size, mtime_ns, inode)`` of ``path`` (``None`` when absent): whether a file changed between two looks."""
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return None if st is None else (st.st_size, st.st_mtime_ns, st.st_ino)


def take_run_folder(out: Path, cfg: Config, held: contextlib.ExitStack, overwrite: bool, pos: RunPosition,
                    read_state: tuple[int, int, int] | None, steps_per_epoch: int) -> None:
    """Rank 0 before its first write: lock the output folder (held until ``fit`` returns), check again that no other
    run changed it meanwhile (``read_state``: ``last.pt`` as this run read it), clear it for ``overwrite``, remove a
    killed run's temporaries and write ``config.yaml``."""
    import yaml

    tr, o = cfg.train, cfg.optim
    ckpt_path = out / "last.pt"
    out.mkdir(parents=True, exist_ok=True)
    held.enter_context(run_lock(out))  # no other run writes here until this one returns
    if file_state(ckpt_path) != read_state:  # another run wrote last.pt while this one loaded data and model
        raise RunBusyError(f"another aprkit train wrote {ckpt_path} while this run was getting ready; this run "
                           "wrote nothing: run the command again once that run is done")
    check_run_folder(out, resume=tr.resume, overwrite=overwrite)  # a run that finished meanwhile is not replaced
    if overwrite and clear_run_folder(out):  # only now: a config or data error above keeps the old run
        print(f"overwrite: deleted the previous run in {out}", file=sys.stderr)
    remove_temporaries(out, RUN_FILES + REPORT_FILES)  # a killed run's half-written files (rank 0 writes)
    # a resumed run keeps the config that trained it, unless the resume only moved how far it goes (optim.epochs,
    # train.max_steps) and nothing ever changed its trajectory: then the current config reruns it from scratch to
    # the same weights, where the first one stopped short
    end = o.epochs * steps_per_epoch if tr.max_steps is None else min(o.epochs * steps_per_epoch, tr.max_steps)
    extended = (pos.resumed and not pos.config_changes and end > pos.step  # this call trains on
                and run_length(pos.saved_config) != run_length(cfg.to_dict()))
    if not (pos.resumed and (out / "config.yaml").is_file()) or extended:
        rerun = cfg.to_dict()  # a config that reruns the run from scratch: not a resume of it
        rerun["train"]["resume"] = False
        atomic_write_text(out / "config.yaml", yaml.safe_dump(rerun, sort_keys=False))
