"""Device choice and torchrun integration, for training and evaluation alike: ``resolve_device``, the process
group set-up from the environment, the rank/world of a running group, and small collectives.

Launch with the standard engine, e.g. ``torchrun --nproc_per_node=8 -m aprkit train --config F --out D``
(multi-node: add ``--nnodes``/``--rdzv_endpoint``). When ``WORLD_SIZE > 1`` the process group is
initialised from the ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` variables torchrun sets (NCCL on
CUDA, Gloo on CPU); each process uses ``cuda:LOCAL_RANK``. Rank 0 alone logs and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup_distributed", "parse_device", "resolve_device", "group_info", "is_main_process",
           "launch_rank", "launch_world", "all_reduce_sum", "broadcast_buffers", "barrier", "teardown_distributed",
           "check_shared_folder", "peer_failure"]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # whether ``setup_distributed`` created the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


#: where a training run sets its device (aprkit train has no --device flag; eval, demo, corrupt have)
_TRAINING_HINT = "aprkit train: train.device: cpu in the config, or --set train.device=cpu"


def parse_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` for ``"auto"``/None), checked as a name only (whether it is here:
    :func:`resolve_device`); ``ValueError`` naming what was expected."""
    if device is None or device == "auto":
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; expected auto, cpu, cuda, cuda:N or mps") from None


def resolve_device(device: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``/None -> ``cuda:LOCAL_RANK`` when CUDA is available, else CPU; a bare ``"cuda"`` gets the
    local rank's index; anything else is checked (``ValueError`` naming what was expected)."""
    dev = parse_device(device)
    if dev is None:
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu or auto "
                             f"({_TRAINING_HINT})")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    elif dev.type == "cpu":
        dev = torch.device("cpu")  # "cpu:0" is the CPU
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {str(device)!r} requested but MPS (Apple GPUs) is not available here; "
                             f"use --device cpu or auto ({_TRAINING_HINT})")
    elif dev.type == "meta" or not _available(dev.type):  # another accelerator (xpu, ...) is used when present
        raise ValueError(f"device {str(device)!r} is not available here; expected auto, cpu, cuda, cuda:N or mps "
                         "(or another accelerator this torch build supports)")
    return dev


def _available(kind: str) -> bool:
    """Whether torch reports an accelerator of type ``kind`` (``torch.xpu.is_available()`` and the like)."""
    backend = getattr(torch, kind, None)
    check = getattr(backend, "is_available", None)
    try:
        return bool(check()) if callable(check) else False
    except Exception:  # a backend that cannot even be queried is not available
        return False


def group_info() -> tuple[int, int]:
    """``(rank, world size)`` of an initialised ``torch.distributed`` group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an initialised ``torch.distributed`` group."""
    return group_info()[0] == 0


def launch_rank() -> int:
    """This process's rank before or after the group is joined: the initialised group's, else the one torchrun gave
    it (``RANK``), else 0. For work that runs once per launch before :func:`setup_distributed` (printing, probing)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def launch_world() -> int:
    """The number of processes of this launch: the initialised group's, else torchrun's ``WORLD_SIZE`` (also once
    the group is gone: an error read after its teardown), else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def setup_distributed(device_name: str = "auto") -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (or use the existing one); one process otherwise."""
    world = launch_world()
    if "LOCAL_RANK" in os.environ:
        local_rank = int(os.environ["LOCAL_RANK"])
    elif dist.is_available() and dist.is_initialized() and torch.cuda.is_available():
        # a group the caller made (mp.spawn, no LOCAL_RANK): the GPU it selected, else one per rank on this host
        current = torch.cuda.current_device()
        local_rank = current if current != 0 else dist.get_rank() % torch.cuda.device_count()
    else:
        local_rank = 0
    device = resolve_device(device_name, local_rank)
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistInfo(0, 1, 0, device)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    owns = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
        owns = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks (in place; a no-op with one process)."""
    if info.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics, ...) to every rank, in place (one process: no-op).

    DDP does the same at the start of each forward; after the last training step every rank holds statistics
    updated by its own batches. Rank 0's are the ones its checkpoint holds (timm's ``distribute_bn`` broadcasts
    them likewise, or averages them: that would change the saved model).
    """
    if info.world > 1:
        for buf in module.buffers():
            dist.broadcast(buf, src)


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def teardown_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def check_shared_folder(folder: str | os.PathLike[str], what: str) -> None:
    """Under a group of several processes, refuse ``folder`` unless every process sees it as one folder: rank 0
    writes a token file there, the others must find it (``ValueError`` on every rank otherwise, naming ``what``).
    Each rank would otherwise decide from its own disk: evaluation served other cache hits per rank and gathered
    one rank's share of a cell with another's share of another cell (wrong numbers in results.json), a resumed
    training run started at step 0 on one node and at step k on another (a hang). Nothing to do in one process, nor
    where rank 0 cannot write (a read-only cache, only read). The token file goes whatever happens."""
    import uuid
    from pathlib import Path

    rank, world = group_info()
    if world == 1:
        return
    path: Path | None = None
    token: list[str | None] = [None]
    if rank == 0:
        name = uuid.uuid4().hex
        path = Path(folder) / f".aprkit-shared-{name}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(name)
            token[0] = name
        except OSError:  # nothing this run writes there either: nothing to compare
            path = None
    try:
        dist.broadcast_object_list(token, src=0)  # (after the write: the file is there for the others to look)
        if token[0] is None:
            return
        try:
            seen = (Path(folder) / f".aprkit-shared-{token[0]}").read_text() == token[0]
        except OSError:
            seen = False
        found: list[object] = [None] * world
        dist.all_gather_object(found, seen)  # (every rank has looked once it returns)
    finally:
        if path is not None:
            path.unlink(missing_ok=True)
    blind = [r for r, ok in enumerate(found) if not ok]
    if blind:
        raise ValueError(f"{what} {folder} is not the same folder for every torchrun process: rank(s) "
                         f"{', '.join(map(str, blind))} do not see the file rank 0 wrote there. Across machines it "
                         "must lie on a file system they share (each rank would otherwise resume and reuse results "
                         "from its own disk)")


def peer_failure(err: BaseException) -> bool:
    """Whether ``err`` is probably a collective's failure because another process of the group stopped (gloo's
    "Connection closed by peer", NCCL's errors): the cause then lies in that process's output. A guess from the
    error's type and words (an NCCL error may be this process's own): callers keep the error's text too."""
    backend_error = getattr(dist, "DistBackendError", ())
    if isinstance(err, backend_error):
        return True
    text = str(err)
    # (the group may be gone when the CLI reads the error: torchrun's WORLD_SIZE then says there were several)
    several = group_info()[1] > 1 or launch_world() > 1
    return isinstance(err, RuntimeError) and several and any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "[gloo", "NCCL"))

