"""aprkit._batch: the fixed-row blocks every CPU forward pass runs in."""

from __future__ import annotations

import torch
from torch import nn

from aprkit._batch import CPU_BLOCK, batch_dependent, block_rows, in_blocks, pad_rows, row_blocks


def test_pad_rows_repeats_the_last_row() -> None:
    t = torch.arange(6.0).view(3, 2)
    assert torch.equal(pad_rows(t, 5), torch.tensor([[0.0, 1], [2, 3], [4, 5], [4, 5], [4, 5]]))
    assert pad_rows(t, 3) is t and pad_rows(t, 2) is t


def test_in_blocks_calls_fn_on_exactly_block_rows_and_keeps_the_real_ones() -> None:
    seen: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return x * 2

    x = torch.arange(11.0)[:, None]
    assert torch.equal(in_blocks(fn, x, 4), x * 2)
    assert seen == [4, 4, 4]
    seen.clear()
    assert torch.equal(in_blocks(fn, x, None), x * 2) and seen == [11]
    assert in_blocks(fn, x[:0], 4).shape == (0, 1)


def test_in_blocks_leaves_an_output_of_another_shape_to_the_callers_checks() -> None:
    """A model returning a tuple (or one row) is called on the batch as it is, so the caller's message names the
    batch's own row count, not a padded block's."""
    calls: list[int] = []

    def fn(x: torch.Tensor) -> tuple[torch.Tensor]:
        calls.append(x.shape[0])
        return (x,)

    out = in_blocks(fn, torch.zeros(3, 2), 8)
    assert isinstance(out, tuple) and out[0].shape == (3, 2) and calls == [8, 3]
    assert in_blocks(lambda x: x.sum(), torch.zeros(3, 2), 8).ndim == 0


def test_row_blocks_pad_the_last_block_and_count_the_real_rows() -> None:
    got = [(r.tolist(), k) for r, k in row_blocks(5, 100, 2)]
    assert got == [([0, 1], 2), ([2, 3], 2), ([4, 4], 1)]
    assert [(r.tolist(), k) for r, k in row_blocks(5, 3, None)] == [([0, 1, 2], 3), ([3, 4], 2)]


def test_a_model_normalising_by_its_batch_sees_its_batches_as_they_are() -> None:
    """Test-time batch norm (no running statistics) in blocks would normalise over CPU_BLOCK rows and the padding's
    copies: it runs on the batch; so does every model off the CPU."""
    from aprkit.eval.engine.inference import predict

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(),
                      nn.Linear(4 * 6 * 6, 10)).eval()
    assert batch_dependent(m) and block_rows(m, "cpu") is None
    assert block_rows(nn.Linear(2, 2), "cpu") == CPU_BLOCK and block_rows(nn.Linear(2, 2), "meta") is None
    x = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = predict(m, [(x[i], 0) for i in range(12)], batch_size=12, device="cpu").logits
    with torch.no_grad():
        assert torch.equal(out, m(x.float() / 255))
