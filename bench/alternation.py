"""The alternation: a learned-graph run against the same run with graph learning off.

The reference learned-graph setting: the dense autoencoder 128x3 with a 100-unit latent
(Gaussian noise 0.5), batch 32, Adam, the reference builder (kNN k=5 on the current batch)
refreshing the latent's graph every 100 steps, normalized Laplacian. The learned run
(:class:`~gsr_pyg.training.GSRTrainer` with ``learn={"latent": ...}``, no warm-up, stop rule
off so every refresh happens) is timed against the same trainer with ``learn={}`` and
``max_steps``, whose latent carries a fixed kNN graph of the same kind from the start, so
both pay the penalty on every step and differ only by the refreshes. Both runs log every 50
steps as the trainer does by default.

The two runs go in lock step: each in its own thread, handing the turn to the other after
every step (through its data loader), each timed on its own thread's CPU clock (wall clock
around synchronised work on a GPU). Load from other jobs then hits both runs alike; whole
runs timed one after the other differ by +-20% on a shared machine. The figure is
``time(learned) / time(fixed)``: 1.05 means the alternation costs 5% of the training time.
A second figure times the refreshes inside the learned run (graph build, connectivity
check, installing the Laplacian, snapshot) as a share of that run's time.
"""

from __future__ import annotations

import threading
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench._harness import Row, check_target, median_ms, median_ratio, spread, synchronize
from gsr_pyg import GraphSpectralRegularizer
from gsr_pyg.learn import CoactivationGraph, knn_graph
from gsr_pyg.models import DenseAutoencoder
from gsr_pyg.training import GSRTrainer, LearningSchedule

NAME = "alternation"
REFRESH_EVERY = 100
INPUTS, LATENT, BATCH = 20, 100, 32


def _trainer(learned: bool, steps: int, data: torch.Tensor, device: torch.device):
    torch.manual_seed(0)
    model = DenseAutoencoder(INPUTS, hidden=(128, 128, 128), latent_dim=LATENT,
                             noise_std=0.5).to(device)
    with torch.no_grad():
        start_graph = knn_graph(model.encode(data[:BATCH].to(device)), k=5)
    reg = GraphSpectralRegularizer(model, {"latent": start_graph}, weight=1e-2,
                                   normalization="sym")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    common = dict(run_dir=None, verbose=False, device=device, seed=0)
    if learned:
        schedule = LearningSchedule(warmup_steps=0, refresh_every=REFRESH_EVERY,
                                    max_learning_steps=steps, after_stop_steps=0,
                                    stop="never", normalization="sym")
        trainer = GSRTrainer(model, reg, optimizer, nn.functional.mse_loss, schedule=schedule,
                             learn={"latent": CoactivationGraph.reference()}, **common)
    else:
        trainer = GSRTrainer(model, reg, optimizer, nn.functional.mse_loss, max_steps=steps,
                             **common)
    loader = DataLoader(TensorDataset(data), batch_size=BATCH, shuffle=True)
    return trainer, loader


class _LockStep:
    """Turns between runs: a run works only in its turn and passes it on after each step."""

    def __init__(self, names: list[str], device: torch.device):
        self.names = names
        self.turn = names[0]
        self.done: set[str] = set()
        self.cond = threading.Condition()
        self.device = device
        self.now = time.thread_time if device.type == "cpu" else time.perf_counter
        self.spent = dict.fromkeys(names, 0.0)
        self._start = dict.fromkeys(names, 0.0)

    def acquire(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == name)
        self._start[name] = self.now()

    def release(self, name: str, finished: bool = False) -> None:
        synchronize(self.device)
        self.spent[name] += self.now() - self._start[name]
        with self.cond:
            if finished:
                self.done.add(name)
            waiting = [n for n in self.names if n != name and n not in self.done]
            if waiting:
                self.turn = waiting[0]
            self.cond.notify_all()

    def loader(self, name: str, loader):
        """``loader`` whose batches are handed out in ``name``'s turns."""
        steps = self

        class TurnLoader:
            def __iter__(self):
                iterator = iter(loader)
                while True:
                    try:
                        batch = next(iterator)
                    except StopIteration:
                        return  # end of an epoch: the trainer iterates again, still in turn
                    yield batch
                    steps.release(name)  # the step is done: the other run's turn
                    steps.acquire(name)

        return TurnLoader()


class _TimedRefresh:
    """The trainer's :class:`~gsr_pyg.refresh.GraphRefresh` with its ``refresh()`` timed on
    the lock step's clock; everything else is the wrapped object's."""

    def __init__(self, inner, steps: _LockStep):
        self.inner = inner
        self.steps = steps
        self.spent = 0.0

    def refresh(self, mask=None):
        synchronize(self.steps.device)
        start = self.steps.now()
        events = self.inner.refresh(mask=mask)
        synchronize(self.steps.device)
        self.spent += self.steps.now() - start
        return events

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _lock_step_round(steps_per_run: int, data: torch.Tensor, device: torch.device,
                     first: str) -> tuple[dict[str, float], float, int]:
    names = [first, "learned" if first == "fixed" else "fixed"]
    steps = _LockStep(names, device)
    runs = {name: _trainer(name == "learned", steps_per_run, data, device) for name in names}
    learned = runs["learned"][0]
    learned.refresh = refresh = _TimedRefresh(learned.refresh, steps)  # the public attribute
    errors: list[BaseException] = []

    def work(name: str) -> None:
        trainer, loader = runs[name]
        steps.acquire(name)
        try:
            trainer.fit(steps.loader(name, loader))
        except BaseException as err:  # reported by the caller
            errors.append(err)
        finally:
            steps.release(name, finished=True)

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    graphs = runs["learned"][0].summary()["latent"]["graphs_learned"]
    return steps.spent, refresh.spent, graphs


def run(device: torch.device, quick: bool = False) -> list[Row]:
    steps = 6 * REFRESH_EVERY
    rounds = 3 if quick else 7
    data = torch.randn(4096, INPUTS, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"fixed": [], "learned": []}
    refresh_times: list[float] = []
    graphs = 0
    for r in range(rounds + 1):  # round 0 warms up
        spent, refresh, graphs = _lock_step_round(steps, data, device,
                                                  "fixed" if r % 2 == 0 else "learned")
        if r:
            for name in times:
                times[name].append(spent[name])
            refresh_times.append(refresh)
    ratio = median_ratio(times["learned"], times["fixed"])
    share = 100 * median_ratio(refresh_times, times["learned"])
    case = f"AE 100-unit latent, batch {BATCH}, refresh every {REFRESH_EVERY}"
    raw = {"steps": steps, "rounds": rounds, "graphs_learned": graphs, "times_s": times,
           "refresh_s": refresh_times}
    return [
        Row(NAME, case + ": learned / fixed", ratio, "x", "<= 1.05",
            check_target(ratio, "<= 1.05"), spread(times["learned"], times["fixed"]),
            median_ms(times["fixed"]) / steps, median_ms(times["learned"]) / steps,
            f"ms per step; {graphs} graphs in {steps} steps; runs in lock step", raw),
        Row(NAME, case + ": refresh share", share, " %", "<= 5", check_target(share, "<= 5"),
            100 * spread(refresh_times, times["learned"]),
            candidate_ms=1e3 * sum(refresh_times) / max(1, len(refresh_times) * graphs),
            note="share of the learned run's time spent in refreshes; ms per refresh",
            raw=raw),
    ]
