"""What a training run changes in its process, and gives back when it ends.

:func:`fit` sets cuDNN's autotuning and deterministic algorithms (``train.deterministic``, with
``CUBLAS_WORKSPACE_CONFIG``) and seeds torch's, Python's and NumPy's global random generators itself
(:func:`seed_everything` at the start, torch's again at every step). :func:`kept_process_state` holds the caller's
settings and random streams and restores them afterwards, also after an error or an interrupt: an evaluation that
follows in the same process is not affected, and a search that draws its trials' settings from the global streams does
not draw the same values after every run. On CUDA the stream of the device the run trains on (or the current one) is
kept; the other devices of a multi-GPU machine keep the seed the run gave them, since forking them would open a
context on every GPU from every rank.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["kept_process_state", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed torch's (every device's), Python's and NumPy's global random generators with ``seed``."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (1 << 32))


@contextlib.contextmanager
def kept_process_state(device: torch.device) -> Iterator[None]:
    """Run the block, then give the process back its cuDNN and determinism flags, ``CUBLAS_WORKSPACE_CONFIG`` and
    random streams (torch's CPU stream and ``device``'s CUDA stream, Python's, NumPy's); :func:`fit` gives back the
    thread count it set before the process group."""
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = device.type == "cuda" or (torch.cuda.is_available() and torch.cuda.is_initialized())
    devices = [device.index if device.index is not None and device.type == "cuda"
               else torch.cuda.current_device()] if cuda else []

    def flags_back() -> None:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[:2]
        if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) \
                != flags[2:]:  # only when changed: the call imports torch._inductor, maybe on top of a half-done import
            torch.use_deterministic_algorithms(flags[2], warn_only=flags[3])

    def streams_back() -> None:
        random.setstate(py_state)
        np.random.set_state(np_state)

    def env_back() -> None:
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas

    try:
        with torch.random.fork_rng(devices=devices):
            yield
    except BaseException:  # an error or an interrupt (SIGTERM while torchvision loads) is what the caller sees, not a
        for step in (flags_back, streams_back, env_back):  # failure of a restore on top of it; each step on its own
            with contextlib.suppress(Exception):
                step()
        raise
    for step in (flags_back, streams_back, env_back):
        step()
