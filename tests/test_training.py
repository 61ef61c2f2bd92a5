"""GSRTrainer: the phases of a learned-graph run, the stop rule, the run directory, resume
after a kill, and what the trainer says about the Laplacian each layer trains with."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import gsr_pyg
from gsr_pyg import graphs, training
from gsr_pyg.learn import CoactivationGraph
from gsr_pyg.refresh import GraphRefresh
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.spectral import connected_components
from gsr_pyg.training import GSRTrainer, History, LearningSchedule, Phase, load_snapshot

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from small_run import make_trainer  # noqa: E402

WIDTH = 12


def line_batch(gen, batch):
    """All 12 neurons on one line through the origin: the kNN graph is connected."""
    z = torch.randn(batch, 1, generator=gen)
    return z * (1 + 0.1 * torch.arange(WIDTH)) + 1e-3 * torch.randn(batch, WIDTH, generator=gen)


def split_batch(gen, batch):
    """Two independent groups of 6 neurons, far apart: kNN with k=5 has 2 components."""
    z1, z2 = torch.randn(batch, 1, generator=gen), torch.randn(batch, 1, generator=gen)
    scale = 1 + 0.1 * torch.arange(6)
    return torch.cat([z1 * scale, 50 + z2 * scale], dim=1)


def staged_data(num_connected_batches, num_split_batches, batch=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    parts = [line_batch(gen, batch) for _ in range(num_connected_batches)]
    parts += [split_batch(gen, batch) for _ in range(num_split_batches)]
    return torch.cat(parts)


class Counting(nn.Module):
    """The latent layer is the input itself, so the learned graph is set by the data."""

    def __init__(self):
        super().__init__()
        self.latent = nn.Identity()
        self.dec = nn.Linear(WIDTH, WIDTH)
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        return self.dec(self.latent(x))


def run_staged(schedule, connected, split, batch=8):
    data = staged_data(connected, split, batch)
    loader = DataLoader(TensorDataset(data), batch_size=batch, shuffle=False)
    model = Counting()
    reg = GraphSpectralRegularizer(model, {"latent": WIDTH}, weight=1e-3)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    trainer = GSRTrainer(model, reg, opt, nn.functional.mse_loss, schedule=schedule,
                         learn={"latent": CoactivationGraph()}, verbose=False,
                         log_every=1000, smoothness_permutations=0)
    history = trainer.fit(loader)
    return trainer, model, history


def test_disconnected_stop_fires_at_the_right_refresh_and_keeps_previous_graph():
    schedule = LearningSchedule(warmup_steps=3, refresh_every=2, max_learning_steps=20,
                                after_stop_steps=4)
    # steps 0..6 see connected batches, step 7 on see split ones: refreshes at 3 and 5 install
    # graphs, the refresh at 7 gives 2 components and stops.
    trainer, model, history = run_staged(schedule, connected=7, split=20)
    assert trainer.progress.learning_steps == 4
    assert trainer.progress.after_stop_steps == 4
    assert model.forwards == trainer.step == 3 + 4 + 4
    assert [s for s, _ in history.snapshots] == [3, 5]
    kept = trainer.reg.graph("latent")
    assert torch.equal(kept.edge_index, history.snapshots[-1][1].edge_index)
    assert connected_components(kept)[0] == 1


def test_reference_preset_runs_the_exact_number_of_steps():
    # warm-up 5,000, refreshes every 100: learning steps 0..299 see connected batches, the
    # refresh at learning step 300 is disconnected, then 200 more steps.
    schedule = LearningSchedule.reference()
    assert (schedule.warmup_steps, schedule.refresh_every, schedule.max_learning_steps,
            schedule.after_stop_steps, schedule.normalization) == (5000, 100, 5000, 200, "sym")
    trainer, model, history = run_staged(schedule, connected=5300, split=400, batch=8)
    assert model.forwards == 5000 + 300 + 200
    assert (trainer.progress.learning_steps, trainer.progress.after_stop_steps) == (300, 200)
    assert [s for s, _ in history.snapshots] == [5000, 5100, 5200]


def test_no_stop_runs_all_learning_steps_and_no_after_stop():
    schedule = LearningSchedule(warmup_steps=2, refresh_every=3, max_learning_steps=9,
                                after_stop_steps=5, stop="never")
    trainer, model, history = run_staged(schedule, connected=20, split=0)
    assert model.forwards == 2 + 9
    assert [s for s, _ in history.snapshots] == [2, 5, 8]


def test_predefined_graph_trains_max_steps_with_the_same_trainer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 9), nn.Tanh(), nn.Linear(9, 4))
    reg = GraphSpectralRegularizer(model, {"1": graphs.grid(3, 3)}, weight=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(torch.randn(40, 4)), batch_size=8)
    trainer = GSRTrainer(model, reg, opt, nn.functional.mse_loss, max_steps=13, verbose=False,
                         log_every=1)
    history = trainer.fit(loader)
    assert trainer.step == 13 and len(history.snapshots) == 0
    rows = history.metrics
    assert [r["step"] for r in rows] == list(range(13))
    assert rows[0]["1"]["edges"] == 12 and rows[0]["1"]["weight"] == 0.1


def _final_state(run_dir):
    trainer, loader = make_trainer(run_dir)
    history = trainer.fit(loader)
    params = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    snaps = [(s, d.edge_index.clone(), d.edge_weight.clone()) for s, d in history.snapshots]
    metrics = (Path(run_dir) / "metrics.jsonl").read_text()
    return params, snaps, metrics


def _assert_same(a, b):
    params_a, snaps_a, metrics_a = a
    params_b, snaps_b, metrics_b = b
    for key in params_a:
        assert torch.equal(params_a[key], params_b[key]), key
    assert len(snaps_a) == len(snaps_b)
    for (sa, ea, wa), (sb, eb, wb) in zip(snaps_a, snaps_b):
        assert sa == sb and torch.equal(ea, eb) and torch.equal(wa, wb)
    assert metrics_a == metrics_b


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    reference = _final_state(tmp_path / "straight")
    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.Popen([sys.executable, str(HERE / "small_run.py"), str(run_dir),
                             "--sleep", "0.05"], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        # kill once a mid-run checkpoint exists (steps 7 or 14 of 55)
        while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    leftovers = [p.name for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert not (run_dir / "summary.json").exists()
    resumed = _final_state(run_dir)
    _assert_same(reference, resumed)
    assert not leftovers or all(not (run_dir / n).exists() for n in leftovers)


def test_run_directory_contents_and_resume_of_finished_run(tmp_path):
    run_dir = tmp_path / "run"
    first = _final_state(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["schedule"]["refresh_every"] == 5
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["latent"]["edges"] > 0 and "smoothness_ratio" in rows[-1]["latent"]
    refreshes = [r for r in rows if "refresh" in r["latent"]]
    assert len(refreshes) == 8  # learning steps 0, 5, ..., 35
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 10 + 40
    # running again on a finished run changes nothing
    again = _final_state(run_dir)
    _assert_same(first, again)


def test_graphml_snapshot_round_trips_to_the_same_data(tmp_path):
    trainer, loader = make_trainer(tmp_path / "run")
    history = trainer.fit(loader)
    step, data = history.snapshots[-1]
    pt_files = sorted((tmp_path / "run" / "snapshots" / "latent").glob("*.pt"))
    assert len(pt_files) == len(history.snapshots) == 8
    graphml = pt_files[-1].with_suffix(".graphml")
    back = graphs.read_graphml(graphml)
    assert torch.equal(back.edge_index, data.edge_index)
    assert torch.equal(back.edge_weight, data.edge_weight)
    assert back.name == "latent"
    G = nx.read_graphml(graphml)
    assert (G.graph["step"], G.graph["layer"]) == (step, "latent") == (data.step, data.name)
    assert torch.equal(load_snapshot(pt_files[-1]).edge_index, data.edge_index)
    assert set(history.to_networkx(-1).edges) == set(graphs.to_networkx(data).edges)
    assert history.to_networkx(-1).graph["step"] == step
    layouts = history.layout()
    assert len(layouts) == len(history.snapshots) and layouts[0].shape == (16, 2)


def test_different_config_is_refused(tmp_path):
    trainer, loader = make_trainer(tmp_path / "run")
    trainer.fit(loader)
    other, loader = make_trainer(tmp_path / "run")
    other.log_every = 4
    with pytest.raises(ValueError, match="different config.*log_every"):
        other.fit(loader)


def test_corrupted_checkpoint_gives_a_clear_error(tmp_path):
    trainer, loader = make_trainer(tmp_path / "run")
    trainer.fit(loader)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    again, loader = make_trainer(tmp_path / "run")
    with pytest.raises(ValueError, match="checkpoint file .* cannot be read"):
        again.fit(loader)


# ---------------------------------------------------------------------- the learned Laplacian
def _two_layer_trainer(run_dir=None, schedule=None):
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("enc", nn.Linear(6, 9))
    model.add_module("fixed", nn.Tanh())
    model.add_module("mid", nn.Linear(9, 8))
    model.add_module("latent", nn.Tanh())
    model.add_module("dec", nn.Linear(8, 6))
    # built with the default normalization (None) for both layers
    reg = GraphSpectralRegularizer(model, {"fixed": graphs.grid(3, 3), "latent": 8}, weight=1e-2)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    schedule = schedule or LearningSchedule(warmup_steps=2, refresh_every=2,
                                            max_learning_steps=4, after_stop_steps=0,
                                            stop="never")
    trainer = GSRTrainer(model, reg, opt, nn.functional.mse_loss, schedule=schedule,
                         learn={"latent": CoactivationGraph(k=3)}, run_dir=run_dir,
                         smoothness_permutations=0, verbose=False)
    loader = DataLoader(TensorDataset(torch.randn(24, 6)), batch_size=8)
    return trainer, loader


def test_config_and_repr_state_the_laplacian_of_every_layer(tmp_path):
    trainer, loader = _two_layer_trainer(tmp_path / "run")
    # the learned layer trains with the schedule's normalization, the fixed one with its own
    assert trainer.reg.normalization("latent") == "sym"
    assert trainer.reg.normalization("fixed") is None
    assert trainer.resolved_config()["normalization"] == {"fixed": None, "latent": "sym"}
    lines = {line.split(":")[0].strip(): line for line in repr(trainer).splitlines()}
    assert "normalization='sym'" in lines["latent"] and "learned" in lines["latent"]
    assert "normalization=None" in lines["fixed"] and "12 edges" in lines["fixed"]
    trainer.fit(loader)
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["normalization"] == {"fixed": None, "latent": "sym"}
    assert written["schedule"]["normalization"] == "sym"


def test_the_schedule_sets_the_learned_laplacian():
    plain = LearningSchedule(warmup_steps=2, refresh_every=2, max_learning_steps=4,
                             after_stop_steps=0, stop="never", normalization=None)
    trainer, loader = _two_layer_trainer(schedule=plain)
    assert trainer.resolved_config()["normalization"] == {"fixed": None, "latent": None}
    trainer.fit(loader)
    # the learned graphs were installed with D - A: the penalty is the combinatorial form
    graph = trainer.reg.graph("latent")
    a = torch.randn(5, 8)
    row, col = graph.edge_index
    by_edges = 0.5 * (graph.edge_weight * (a[:, row] - a[:, col]) ** 2).sum(1)
    assert torch.allclose(trainer.reg.operator("latent")(a), by_edges, atol=1e-5)


def test_phases_and_the_public_api():
    trainer, loader = _two_layer_trainer()
    assert trainer.phase is Phase.WARMUP
    history = trainer.fit(loader)
    assert trainer.phase is Phase.DONE and trainer.step == 2 + 4
    rows = history.metrics
    assert [r["phase"] for r in rows] == ["warmup", "learning", "learning"]
    assert set(training.__all__) == {
        "GSRTrainer", "LearningSchedule", "Phase", "History", "load_snapshot",
        "setup_distributed", "is_distributed", "get_rank", "get_world_size", "is_main_process",
        "gather_rows", "agree", "mean_over_processes", "barrier"}
    assert not hasattr(gsr_pyg, "pipeline") and "atomic_write" not in dir(training)
    assert isinstance(trainer.refresh, GraphRefresh) and isinstance(history, History)


def test_graph_refresh_without_a_trainer_keeps_the_last_connected_graph():
    model = nn.Sequential(nn.Identity())
    reg = GraphSpectralRegularizer(model, {"0": WIDTH}, weight=1.0)
    refresh = GraphRefresh(reg, {"0": CoactivationGraph()}, stop="disconnected")
    refresh.reset()
    assert reg.graph("0").num_edges == 0 and reg.normalization("0") == "sym"
    gen = torch.Generator().manual_seed(0)
    model(line_batch(gen, 8))
    first = refresh.refresh()["0"]
    assert first.installed and not first.stopped and first.components == 1
    kept = reg.graph("0").edge_index.clone()
    model(split_batch(gen, 8))
    second = refresh.refresh()["0"]
    assert (second.components, second.installed, second.stopped) == (2, False, True)
    assert torch.equal(reg.graph("0").edge_index, kept) and refresh.all_stopped
    assert refresh.refresh() == {} and refresh.num_graphs("0") == 1


def test_the_planned_length_counts_after_stop_steps_only_when_a_stop_can_happen():
    never = LearningSchedule(warmup_steps=30, refresh_every=10, max_learning_steps=50,
                             after_stop_steps=20, stop="never")
    assert never.max_total_steps == 80
    assert LearningSchedule(warmup_steps=30, refresh_every=10, max_learning_steps=50,
                            after_stop_steps=20).max_total_steps == 100


def _fixed_graph_trainer(run_dir, steps, **reg_options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 4))
    reg = GraphSpectralRegularizer(model, {"1": graphs.ring(6)}, **reg_options)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    return GSRTrainer(model, reg, opt, nn.functional.mse_loss, max_steps=steps,
                      run_dir=run_dir, verbose=False)


def _ring_loader():
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, x), batch_size=8)


def _weight_of_step(step):  # a module-level function: the same from one process to the next
    return 1e-3 * (1 + step)


def test_a_run_whose_weight_is_a_function_resumes(tmp_path):
    run_dir = tmp_path / "run"
    _fixed_graph_trainer(run_dir, 4, weight=_weight_of_step).fit(_ring_loader())
    trainer = _fixed_graph_trainer(run_dir, 4, weight=_weight_of_step)
    assert trainer.fit(_ring_loader()) is not None and trainer.step == 4
    stored = json.loads((run_dir / "config.json").read_text())["regularizer"]
    assert stored["layers"]["1"]["weight"] == "LambdaWeight(_weight_of_step)"


@pytest.mark.parametrize("changed", [dict(rayleigh=True), dict(batch_mean_weight=0.5),
                                     dict(normalization="sym"), dict(weight=0.2)])
def test_resuming_with_another_penalty_is_refused(tmp_path, changed):
    run_dir = tmp_path / "run"
    _fixed_graph_trainer(run_dir, 4, weight=0.1).fit(_ring_loader())
    options = {"weight": 0.1, **changed}
    with pytest.raises(ValueError, match="different config"):
        _fixed_graph_trainer(run_dir, 8, **options).fit(_ring_loader())


def test_the_stop_rule_and_the_schedule_refuse_what_they_cannot_do():
    from gsr_pyg.refresh import stop_rule_fires
    with pytest.raises(ValueError, match="rule must be one of"):
        stop_rule_fires("disconected", 2, torch.tensor([1]), None)
    with pytest.raises(ValueError, match="random-walk Laplacian"):
        LearningSchedule(normalization="rw")
