"""Sharded evaluation under torch.distributed (2 CPU processes, gloo): same numbers as one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from conftest import natural_images


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from aprkit.eval import evaluate
    from aprkit.eval.engine.inference import predict
    from aprkit.eval.engine.datasets import TensorImageDataset
    from test_eval_runner import Tiny

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ds = TensorImageDataset(natural_images(21, seed=4), torch.arange(21) % 10)
        out = predict(Tiny(), ds, batch_size=4, features=True)
        res = evaluate(Tiny(), suite="calibration", data=ds, out_dir=Path(out_dir) / "run", device="cpu", batch_size=4, progress=False,
                       model_id="tiny", report=False, options={"calibration_corrupted": False})
        ood = evaluate(Tiny(), suite="ood", data=ds, device="cpu", batch_size=4, progress=False, report=False,
                       options={"ood_scores": ["odin"], "ood_limit": 8, "ood": ["noise:gaussian"]})["ood"]
        torch.save({"logits": out.logits, "labels": out.labels, "features": out.features, "ece": res["calibration"]["clean"]["ece"],
                    "odin": ood["sets"]["gaussian"]},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_sharding_matches_single_process(tmp_path):
    from aprkit.eval import evaluate
    from aprkit.eval.engine.inference import predict
    from aprkit.eval.engine.datasets import TensorImageDataset
    from test_eval_runner import Tiny

    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ds = TensorImageDataset(natural_images(21, seed=4), torch.arange(21) % 10)
    ref = predict(Tiny(), ds, batch_size=4, features=True)
    ece = evaluate(Tiny(), suite="calibration", data=ds, device="cpu", progress=False, options={"calibration_corrupted": False})
    odin = evaluate(Tiny(), suite="ood", data=ds, device="cpu", batch_size=4, progress=False, report=False,
                    options={"ood_scores": ["odin"], "ood_limit": 8, "ood": ["noise:gaussian"]})["ood"]["sets"]["gaussian"]
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        # bit for bit: each rank's forward passes have CPU_BLOCK rows as one process's do (aprkit._batch)
        assert torch.equal(got["logits"], ref.logits) and torch.equal(got["features"], ref.features)
        assert got["labels"].tolist() == ref.labels.tolist()  # dataset order restored, padding dropped
        assert got["ece"] == ece["calibration"]["clean"]["ece"]
        # ODIN runs its own backward passes per batch: each rank's share is gathered, so the counts and the
        # metrics are those of one process (they were computed on half the images before)
        assert got["odin"]["n"] == odin["n"] == 8
        assert got["odin"]["odin"] == odin["odin"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())  # written once, by rank 0
    assert saved["meta"]["world_size"] == [2]  # the world sizes that produced the cells shown


def _shared_worker(rank: int, world: int, init_file: str, root: str) -> None:
    import torch.distributed as dist

    from aprkit.distributed import check_shared_folder

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        check_shared_folder(Path(root) / "shared", "the output folder")  # one folder for both: fine
        try:  # each rank its own folder, as two machines without a shared file system see one path
            check_shared_folder(Path(root) / f"node{rank}", "the output folder (--out)")
            outcome = "accepted"
        except ValueError as err:
            outcome = str(err)
        (Path(root) / f"outcome{rank}.txt").write_text(outcome)
    finally:
        dist.destroy_process_group()


def test_a_folder_that_is_not_shared_between_processes_is_refused(tmp_path):
    """On two machines without a shared --out each rank resumed and reused cache entries from its own disk: eval
    gathered one rank's share of a cell with another's share of another cell (wrong numbers), a resumed train hung
    (distributed reviewer). Every rank refuses such a folder, with the ranks that do not see rank 0's file."""
    mp.spawn(_shared_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        text = (tmp_path / f"outcome{rank}.txt").read_text()
        assert "is not the same folder for every torchrun process: rank(s) 1 do not see" in text, text
    assert not list((tmp_path / "shared").iterdir()) and not list((tmp_path / "node0").iterdir())  # tokens gone


def test_a_collective_failed_by_another_process_is_named_so(monkeypatch):
    """Rank 0 recorded and printed gloo's 'Connection closed by peer' as its error when rank 1 had failed on a broken
    image; the CLI now says another process stopped and where its error is."""
    from aprkit import distributed
    from aprkit.cli._common import error_line

    err = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.peer_failure(err)  # one process: an error like any other
    monkeypatch.setenv("WORLD_SIZE", "2")  # the CLI reads the error after the group is gone: torchrun's variable
    assert distributed.peer_failure(err)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(distributed, "group_info", lambda: (0, 2))
    assert distributed.peer_failure(err)
    text, code = error_line(err)
    assert code == 1 and text.startswith("another torchrun process probably stopped (its own output")
    assert "Connection closed by peer" in text  # its own error kept
