"""Training under torch.distributed (2 CPU processes, gloo): what the ranks log is the saved model's; torchrun
end to end (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.usefixtures("one_thread")


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from train_common import Images, train_config

    from aprkit.train import fit

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg = train_config(optim={"epochs": 1}, train={"device": "cpu"})
        res = fit(cfg, out=Path(out_dir) / "run", datasets=(Images(32), Images(32, seed=5)))
        torch.save({"final": res["final"], "buffers": dict(res["model"].named_buffers())},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_evaluate_the_saved_model_with_rank_0s_batchnorm_statistics(tmp_path):
    """Each rank's last step updated its BatchNorm running statistics with its own batch; the summed evaluation
    mixed the ranks' statistics and was not the saved model's. Rank 0's are broadcast before evaluating."""
    from train_common import Images, train_config

    from aprkit.distributed import DistInfo
    from aprkit.models import load_model
    from aprkit.train.config import config_from_dict, validate_config
    from aprkit.train.data import EpochBatches
    from aprkit.train.loop import evaluate_accuracy

    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["buffers"].keys() == ranks[1]["buffers"].keys() and ranks[0]["buffers"]
    for name, buf in ranks[0]["buffers"].items():
        assert torch.equal(buf, ranks[1]["buffers"][name]), name
    saved = load_model(tmp_path / "run" / "model.pt")
    for name, buf in ranks[0]["buffers"].items():
        assert torch.equal(buf, saved.state_dict()[name]), name
    cfg = validate_config(config_from_dict(train_config()))
    batches = EpochBatches(Images(32, seed=5), cfg, 64, torch.device("cpu"), train=False)
    ref = evaluate_accuracy(saved, batches, DistInfo(0, 1, 0, torch.device("cpu")))
    final = ranks[0]["final"]
    assert final["test_n"] == ref["test_n"] == 32 and final["test_acc"] == ref["test_acc"]
    assert final["test_loss"] == pytest.approx(ref["test_loss"], rel=1e-6)


@pytest.mark.slow
def test_torchrun_ddp_two_cpu_processes(tmp_path):
    """Two gloo ranks through torchrun: sharded data, summed metrics, rank-0 files only."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m", "aprkit",
           "train", "--out", str(tmp_path), "--set", "model.name=resnet20", "data.dataset=synthetic:64",
           "data.test_limit=30", "optim.batch_size=16", "optim.epochs=2", "data.num_workers=0", "train.threads=1",
           "train.progress=false", "train.device=cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["step"] == 8  # 64 images / 16 per step, 2 epochs
    assert rows[-1]["test_n"] == 30
    assert (tmp_path / "model.pt").is_file()
    # stopped inside epoch 1 and resumed: the epoch's running sums were every rank's (rank 0 saves them summed), so
    # the logged metrics equal the uninterrupted run's (they counted rank 0's share twice and lost rank 1's before)
    part = tmp_path / "part"
    for extra in (["train.max_steps=3"], ["--resume"]):
        args = [a for a in cmd if a != str(tmp_path)]
        args.insert(args.index("--out") + 1, str(part))
        args = args[:args.index("--set")] + [e for e in extra if e.startswith("--")] + args[args.index("--set"):]
        args += [e for e in extra if not e.startswith("--")]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((part / "metrics.json").read_text())
    keys = ("epoch", "step", "lr", "train_loss", "train_acc", "test_acc")
    assert [{k: r[k] for k in keys} for r in again] == [{k: r[k] for k in keys} for r in rows]


def _busy_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import datetime

    import torch.distributed as dist
    from train_common import Images, train_config

    import aprkit.train.loop as loop
    from aprkit.train import fit

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))  # a rank left waiting fails the test, not hangs it
    run = Path(out_dir) / "run"
    real = loop.build_model

    def build_while_another_run_finishes(cfg):  # rank 0 only: the folder gets a finished run while it gets ready
        dist.barrier()  # once every rank has passed fit's first look at the folder (a slow rank 1 saw the run there)
        if rank == 0:
            run.mkdir(parents=True, exist_ok=True)
            (run / "model.pt").write_bytes(b"another run's weights")
        return real(cfg)

    loop.build_model = build_while_another_run_finishes
    try:
        fit(train_config(optim={"epochs": 1}, train={"device": "cpu"}), out=run, datasets=(Images(32), None))
        outcome = "trained"
    except Exception as err:  # noqa: BLE001 - recorded for the test
        outcome = f"{type(err).__name__}: {err}"
    finally:
        dist.destroy_process_group()
    (Path(out_dir) / f"rank{rank}.txt").write_text(outcome)


def test_every_rank_stops_when_rank_0_refuses_the_folder_after_locking_it(tmp_path):
    """Only rank 0 re-checks the folder once it holds its lock; when it refused, the other ranks went on to the first
    collective and waited there for a rank that had left (until the process group's timeout)."""
    mp.spawn(_busy_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    outcomes = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert outcomes[0].startswith("RunExistsError: ") and "already holds a training run" in outcomes[0]
    assert outcomes[1].startswith("RuntimeError: rank 0 did not start the run in ") and "rank 1 stops too" in outcomes[1]
    assert (tmp_path / "run" / "model.pt").read_bytes() == b"another run's weights"
