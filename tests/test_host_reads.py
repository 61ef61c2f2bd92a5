"""A training step reads nothing back from the device.

On an accelerator every value the host reads (``bool(t)``, ``t.item()``, ``t.cpu()``...)
makes it wait for the device. The CPU has no such wait, so these tests run the library's
accelerator behaviour on the CPU (the finiteness check deferred, as it is there) and record
every read that the library's own code makes during training steps.
"""

from __future__ import annotations

import collections
import traceback
from pathlib import Path

import pytest
import torch
from torch import nn

import gsr_pyg
from gsr_pyg import regularizer as regularizer_module
from gsr_pyg.graphs import grid
from gsr_pyg.learn import CoactivationGraph
from gsr_pyg.regularizer import FINITE_CHECK_EVERY, GraphSpectralRegularizer
from gsr_pyg.training import GSRTrainer, LearningSchedule
from gsr_pyg.training import core as core_module

PACKAGE = str(Path(gsr_pyg.__file__).parent)
TORCH = str(Path(torch.__file__).parent)
# functions only the CPU runs (the blocked sparse product's check of its own values)
CPU_ONLY = {"_cpu_blocks"}
READS = ("__bool__", "item", "tolist", "cpu", "numpy", "__float__", "__int__", "__index__")


@pytest.fixture
def deferred(monkeypatch):
    """The accelerator rule on the CPU: penalties checked every FINITE_CHECK_EVERY steps."""
    monkeypatch.setattr(regularizer_module, "_defers_finite_check", lambda device: True)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 64), nn.Tanh(), nn.Linear(64, 100), nn.Tanh(),
                         nn.Linear(100, 12))


def test_training_steps_read_nothing_back(deferred, monkeypatch):
    records = collections.Counter()
    recording = [False]

    def watch(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if recording[0]:
                frames = traceback.extract_stack()[:-1]
                ours = [f for f in frames if f.filename.startswith(PACKAGE)]
                # the library's reads, not the optimizer's; and not in code that only ever
                # runs on the CPU (there the values are in the host's memory already)
                if (ours and not frames[-1].filename.startswith(TORCH)
                        and ours[-1].name not in CPU_ONLY):
                    records[f"{name} at {ours[-1].filename}:{ours[-1].lineno}"] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)

    for name in READS:
        watch(name)
    # record the steps that neither refresh a graph nor write a metrics row
    start, finish = core_module.GSRCore.start_step, core_module.GSRCore.finish_step
    steps = []

    def start_step(self, mask=None):
        # (nor end the run: its last step checks the penalties since the periodic check)
        quiet = (not self.plan.refresh_due(self.progress)
                 and self.progress.step % self.log_every
                 and self.progress.step < self.max_total_steps - 1)
        recording[0] = bool(quiet)
        steps.append(bool(quiet))
        return start(self, mask)

    def finish_step(self, *args, **kwargs):
        row = finish(self, *args, **kwargs)
        recording[0] = False
        return row

    monkeypatch.setattr(core_module.GSRCore, "start_step", start_step)
    monkeypatch.setattr(core_module.GSRCore, "finish_step", finish_step)

    model = _model()
    reg = GraphSpectralRegularizer(model, {"1": grid(8, 8), "3": 100}, weight=1e-2,
                                   normalization="sym")
    schedule = LearningSchedule(warmup_steps=3, refresh_every=4, max_learning_steps=16,
                                after_stop_steps=0, stop="never")
    trainer = GSRTrainer(model, reg, torch.optim.SGD(model.parameters(), lr=1e-2),
                         nn.functional.mse_loss, schedule=schedule,
                         learn={"3": CoactivationGraph.reference()}, log_every=10,
                         verbose=False)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 12, generator=generator),) * 2 for _ in range(40)]
    trainer.fit(batches)
    assert sum(steps) >= 10  # the quiet steps were trained, with both penalties
    assert reg.graph("3").num_edges > 0
    assert not records, dict(records)


def test_a_deferred_check_still_refuses_a_nan_penalty(deferred):
    model = _model()
    reg = GraphSpectralRegularizer(model, {"1": grid(8, 8)}, weight=1e-2)
    x = torch.randn(4, 12)
    for _ in range(3):  # finite steps: nothing to report
        model(x)
        reg.penalty()
        reg.step()
    reg.check_deferred_finite()
    with torch.no_grad():
        model[0].bias[5] = float("nan")
    model(x)
    assert torch.isnan(reg.penalty())  # no read, no error yet
    with pytest.raises(ValueError, match=r"penalty of layer\(s\) \['1'\] was NaN or Inf at a "
                                         r"step between 3 and 49"):
        reg.step()  # step 4 is not a check step: the error comes at step 50 ...
        for _ in range(FINITE_CHECK_EVERY):
            model(x)
            reg.penalty()
            reg.step()
    # ... or at once when asked (a trainer asks when its run ends)
    model(x)
    reg.penalty()
    with pytest.raises(ValueError, match=r"\['1'\]"):
        reg.check_deferred_finite()


def test_the_cpu_checks_at_once():
    model = _model()
    reg = GraphSpectralRegularizer(model, {"1": grid(8, 8)}, weight=1e-2)
    with torch.no_grad():
        model[0].bias[5] = float("nan")
    model(torch.randn(4, 12))
    with pytest.raises(ValueError, match="penalty of layer '1' is nan: the layer's "
                                         "activations hold"):
        reg.penalty()
