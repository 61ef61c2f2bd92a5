"""The Lightning callback: the same training as GSRTrainer, snapshots in the log directory,
metrics through Lightning's logger, and resume from a Lightning checkpoint."""

from __future__ import annotations

import csv
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gsr_pyg import GraphSpectralRegularizer, graphs
from gsr_pyg.learn import CoactivationGraph
from gsr_pyg.spectral import connected_components
from gsr_pyg.training import GSRTrainer, LearningSchedule, load_snapshot

pl = pytest.importorskip("pytorch_lightning")
from gsr_pyg.integrations.lightning import GSRCallback  # noqa: E402

LAYER = "net.1"
# 4 batches an epoch: warm-up 4 steps, refreshes at steps 4, 8 and 12, 16 steps in all
SCHEDULE = dict(warmup_steps=4, refresh_every=4, max_learning_steps=12, stop="never")


def data() -> torch.Tensor:
    """64 samples of 12 features in 3 correlated groups (a graph worth learning)."""
    g = torch.Generator().manual_seed(0)
    groups = torch.randn(64, 3, generator=g).repeat_interleave(4, dim=1)
    return groups + 0.3 * torch.randn(64, 12, generator=g)


def loader() -> DataLoader:
    return DataLoader(TensorDataset(data()), batch_size=16, shuffle=False)


class AutoEncoder(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 12))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):  # no GSR in it: the callback adds the penalty
        (x,) = batch
        return nn.functional.mse_loss(self(x), x)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def callback_for(module: AutoEncoder, **options) -> GSRCallback:
    reg = GraphSpectralRegularizer(module, {LAYER: 16}, weight=0.05)
    return GSRCallback(reg, learn={LAYER: CoactivationGraph(k=3)},
                       schedule=LearningSchedule(**SCHEDULE), log_every=4, **options)


def fit(module, callback, root, *, max_epochs=100, ckpt_path=None, checkpoints=None):
    logger = pl.loggers.CSVLogger(root, name="logs")
    extra = ([pl.callbacks.ModelCheckpoint(dirpath=checkpoints, every_n_epochs=1,
                                           save_top_k=-1)] if checkpoints else [])
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=logger,
                         callbacks=[callback, *extra], enable_checkpointing=bool(checkpoints),
                         enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and log steps
        trainer.fit(module, loader(), ckpt_path=ckpt_path)
    return trainer


def gsr_trainer_params() -> tuple[dict, list]:
    """The same run with GSRTrainer: what the callback must reproduce exactly."""
    module = AutoEncoder()
    reg = GraphSpectralRegularizer(module, {LAYER: 16}, weight=0.05)
    trainer = GSRTrainer(module, reg, torch.optim.Adam(module.parameters(), lr=1e-2),
                         nn.functional.mse_loss, schedule=LearningSchedule(**SCHEDULE),
                         learn={LAYER: CoactivationGraph(k=3)}, log_every=4, verbose=False)
    history = trainer.fit(loader())
    return {k: v.clone() for k, v in module.state_dict().items()}, history.snapshots


@pytest.fixture(scope="module")
def reference():
    return gsr_trainer_params()


def test_lightning_run_learns_graphs_writes_snapshots_and_logs(tmp_path, reference):
    module = AutoEncoder()
    callback = callback_for(module)
    trainer = fit(module, callback, tmp_path)
    # the schedule sets the length: 16 steps, then the callback stops Lightning
    assert trainer.global_step == callback.progress.step == 16
    assert "training_step" not in module.__dict__  # the wrapper is gone after the fit

    # the same alternation as GSRTrainer: the same graphs and the same parameters
    params, snapshots = reference
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, params[name], rtol=1e-5, atol=1e-6)
    history = callback.history
    assert history.snapshot_steps(LAYER) == [4, 8, 12] == [s for s, _ in snapshots]
    for (_, got), (_, want) in zip(history.snapshots, snapshots):
        assert torch.equal(got.edge_index, want.edge_index)

    # snapshots in the run's log directory, .pt and GraphML
    folder = tmp_path / "logs" / "version_0" / "snapshots" / LAYER
    assert sorted(p.name for p in folder.glob("*.pt")) == [
        "0000_step4.pt", "0001_step8.pt", "0002_step12.pt"]
    assert len(list(folder.glob("*.graphml"))) == 3
    last = load_snapshot(folder / "0002_step12.pt")
    assert last.step == 12 and torch.equal(last.edge_index, module_graph(callback).edge_index)

    # metrics through Lightning's logger: every row of the history, at its step
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as fh:
        logged = {int(row["step"]): row for row in csv.DictReader(fh)
                  if row.get(f"gsr/{LAYER}/penalty")}
    rows = {row["step"]: row for row in history.metrics}
    assert sorted(logged) == sorted(rows) == [0, 4, 8, 12]
    for step, row in rows.items():
        entry = row[LAYER]
        assert float(logged[step][f"gsr/{LAYER}/penalty"]) == pytest.approx(entry["penalty"])
        assert float(logged[step][f"gsr/{LAYER}/weight"]) == pytest.approx(0.05)
        assert float(logged[step][f"gsr/{LAYER}/edges"]) == entry["edges"]
        assert float(logged[step]["gsr/task_loss"]) == pytest.approx(row["task_loss"])
    assert rows[0][LAYER]["penalty"] == 0.0  # the warm-up: no graph, no penalty
    for step, (_, graph) in zip((4, 8, 12), history.snapshots):
        assert rows[step][LAYER]["edges"] == graph.num_edges // 2
        assert rows[step][LAYER]["components"] == connected_components(graph)[0]
        assert 0 < float(logged[step][f"gsr/{LAYER}/smoothness_ratio"])
        assert rows[step][LAYER]["penalty"] > 0


def module_graph(callback: GSRCallback):
    return callback.reg.graph(LAYER)


def test_resume_from_a_lightning_checkpoint_equals_the_uninterrupted_run(tmp_path, reference):
    first = AutoEncoder()
    callback = callback_for(first)
    fit(first, callback, tmp_path / "a", max_epochs=2, checkpoints=tmp_path / "ckpt")
    assert callback.progress.step == 8 and callback.history.snapshot_steps() == [4]
    (ckpt,) = (tmp_path / "ckpt").glob("epoch=1-*.ckpt")

    resumed = AutoEncoder()  # fresh weights and a fresh regularizer: all from the checkpoint
    torch.nn.init.zeros_(resumed.net[0].weight)
    again = callback_for(resumed)
    trainer = fit(resumed, again, tmp_path / "b", ckpt_path=ckpt)
    assert trainer.global_step == again.progress.step == 16
    params, snapshots = reference
    for name, value in resumed.state_dict().items():
        torch.testing.assert_close(value, params[name], rtol=1e-5, atol=1e-6)
    # the snapshots before the checkpoint (in the first log directory) and after it
    assert again.history.snapshot_steps() == [4, 8, 12]
    for (_, got), (_, want) in zip(again.history.snapshots, snapshots):
        assert torch.equal(got.edge_index, want.edge_index)
    assert (tmp_path / "b" / "logs" / "version_0" / "snapshots" / LAYER
            / "0001_step8.pt").exists()


def test_a_fixed_graph_regularizes_for_as_long_as_lightning_trains(tmp_path):
    module = AutoEncoder()
    grid = graphs.ring(16)
    reg = GraphSpectralRegularizer(module, {LAYER: grid}, weight=0.05)
    callback = GSRCallback(reg, log_every=2, smoothness_permutations=0)
    trainer = fit(module, callback, tmp_path, max_epochs=2)
    assert trainer.global_step == callback.progress.step == 8
    assert [row["step"] for row in callback.history.metrics] == [0, 2, 4, 6]
    assert all(row[LAYER]["edges"] == 16 for row in callback.history.metrics)
    assert len(callback.history) == 0


def test_refuses_what_it_cannot_do(tmp_path):
    module = AutoEncoder()
    other = AutoEncoder()
    reg = GraphSpectralRegularizer(other, {LAYER: 16}, weight=0.05)
    with pytest.raises(ValueError, match="not the LightningModule being fitted"):
        fit(module, GSRCallback(reg), tmp_path)
    with pytest.raises(TypeError, match="reg must be a GraphSpectralRegularizer"):
        GSRCallback(module)
    reg = GraphSpectralRegularizer(module, {LAYER: 16}, weight=0.05)
    with pytest.raises(ValueError, match="max_steps is required|schedule is given"):
        GSRCallback(reg, schedule=LearningSchedule())
    callback = GSRCallback(reg)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False,
                         accumulate_grad_batches=2, callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="accumulate_grad_batches must be 1, got 2"):
        trainer.fit(module, loader())
