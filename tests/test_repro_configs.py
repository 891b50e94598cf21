"""The reproduction scripts' network variants (``benchmarks/repro``), without training: fast."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("model", ["gfnet_cifar", "vit_tiny_p4", "phase_collapse"])
def test_reduced_overrides_build_smaller_networks(model: str) -> None:
    """``--reduced`` (the CPU-budget variants of studies 2 / 3): each override set is a valid training config and
    builds a network with fewer parameters than the full one."""
    sys.path.insert(0, str(REPO))
    from aprkit.train.config import load_config
    from aprkit.train.loop import build_model
    from benchmarks.repro.common import CONFIGS
    from benchmarks.repro.transplant_sweeps import REDUCED, TRAINED

    def n_params(ov: list[str]) -> int:
        return sum(p.numel() for p in build_model(load_config(CONFIGS / TRAINED[model], ov)).parameters())

    assert n_params(REDUCED[model]) < 0.6 * n_params([])

