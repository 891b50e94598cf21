"""Training under torch.distributed (2 CPU processes, gloo): what the ranks log is the saved model's."""

from __future__ import annotations

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
