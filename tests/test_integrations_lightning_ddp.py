"""The Lightning callback under DDP (2 CPU processes, gloo, launched by torchrun): the same
parameters and learned graphs as one process on the same global batches, and a resume from a
checkpoint the two processes wrote."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from launch import run, torchrun  # noqa: E402

pytest.importorskip("pytorch_lightning")
SCRIPT = HERE / "lightning_ddp_run.py"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available(),
                                 reason="torch.distributed is not available")]


def result(out: Path) -> dict:
    return torch.load(out / "result.pt", weights_only=True)


def test_two_processes_equal_one_and_resume_exactly(tmp_path):
    run(torchrun(str(SCRIPT), str(tmp_path / "two"), "--devices", "2", "--batch-size", "8"))
    run([sys.executable, str(SCRIPT), str(tmp_path / "one"), "--batch-size", "16"])
    two, one = result(tmp_path / "two"), result(tmp_path / "one")
    assert two["steps"] == one["steps"] == 16
    for name, value in two["params"].items():
        torch.testing.assert_close(value, one["params"][name], rtol=1e-5, atol=1e-6)
    assert [s for s, _ in two["snapshots"]] == [s for s, _ in one["snapshots"]] == [4, 8, 12]
    for (_, a), (_, b) in zip(two["snapshots"], one["snapshots"]):
        assert torch.equal(a, b)

    # both processes' statistics and random states are in the checkpoint: resume exactly
    (ckpt,) = (tmp_path / "two" / "checkpoints").glob("epoch=1-*.ckpt")
    run(torchrun(str(SCRIPT), str(tmp_path / "resumed"), "--devices", "2", "--batch-size",
                 "8", "--resume", str(ckpt)))
    resumed = result(tmp_path / "resumed")
    assert resumed["steps"] == 16
    for name, value in two["params"].items():
        assert torch.equal(value, resumed["params"][name]), name
    for (_, a), (_, b) in zip(two["snapshots"], resumed["snapshots"]):
        assert torch.equal(a, b)
