"""A 20,000-step learned-graph run keeps its resident memory flat.

Snapshots go to disk and metric rows are flushed at every checkpoint, so nothing that grows
with the number of steps stays in memory. The resident set size (``VmRSS`` of
``/proc/self/status``) is read at step 2,000, once every allocator pool and cache has been
touched, and at step 20,000; it may grow by less than 30 MB in between.
"""

from __future__ import annotations

import gc
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gsr_pyg.learn import CoactivationGraph
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.training import GSRTrainer, LearningSchedule

STEPS = 20_000
FIRST, LAST = 2_000, 20_000
MAX_GROWTH_MB = 30.0
STATUS = Path("/proc/self/status")


def resident_mb() -> float:
    gc.collect()
    for line in STATUS.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmRSS line in /proc/self/status")


@pytest.mark.slow
@pytest.mark.skipif(not STATUS.exists(), reason="needs /proc/self/status (Linux)")
def test_resident_memory_stays_flat_over_20000_learned_graph_steps(tmp_path):
    torch.manual_seed(0)
    width = 16
    data = torch.randn(512, 4) @ torch.randn(4, 12)
    loader = DataLoader(TensorDataset(data), batch_size=16, shuffle=True)
    model = nn.Sequential(OrderedDict(enc=nn.Linear(12, width), latent=nn.Tanh(),
                                      dec=nn.Linear(width, 12)))
    reg = GraphSpectralRegularizer(model, {"latent": width}, weight=1e-2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    warmup = 500
    schedule = LearningSchedule(warmup_steps=warmup, refresh_every=100,
                                max_learning_steps=STEPS - warmup, after_stop_steps=0,
                                stop="never")
    resident: dict[int, float] = {}
    calls = 0

    def loss_fn(output, target):
        nonlocal calls
        calls += 1
        if calls in (FIRST, LAST):
            resident[calls] = resident_mb()
        return nn.functional.mse_loss(output, target)

    learner = CoactivationGraph(k=3, features="stats", metric="correlation")
    trainer = GSRTrainer(model, reg, optimizer, loss_fn, schedule=schedule,
                         learn={"latent": learner}, run_dir=tmp_path / "run",
                         checkpoint_every=1000, log_every=50, verbose=False)
    start = time.perf_counter()
    history = trainer.fit(loader)
    seconds = time.perf_counter() - start

    growth = resident[LAST] - resident[FIRST]
    print(f"\n{STEPS} steps in {seconds:.0f} s; resident memory {resident[FIRST]:.1f} MB at "
          f"step {FIRST}, {resident[LAST]:.1f} MB at step {LAST}: growth {growth:+.1f} MB")
    assert trainer.step == STEPS
    refreshes = (STEPS - warmup) // 100
    assert len(history) == refreshes
    assert len(list((tmp_path / "run" / "snapshots").rglob("*.pt"))) == refreshes
    assert growth < MAX_GROWTH_MB
