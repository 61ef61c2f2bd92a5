"""The per-step logic of graph-learning training, shared by every training loop.

:class:`GSRTrainer` (our loop), the Lightning callback and the Hugging Face callback
(:mod:`gsr_pyg.integrations`) all train through one :class:`GSRCore`. A loop calls, for each
training batch, after the forward pass (the regularizer has captured its layers)::

    if core.start_step(mask):           # refresh on schedule, snapshots; True: the run ends
        ...                             # here, this batch is not trained
    loss = task_loss + sum(core.penalties(mask).values())
    ...                                 # backward, optimizer step
    row = core.finish_step(task_loss, mask)   # statistics, metrics row, reg.step(), advance

and stops when ``core.progress.done``. :meth:`GSRCore.state_dict` is everything of the
regularizer and the graph learning that a checkpoint must hold (the loop adds its model,
optimizer and data position).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .._validation import check_int, describe
from ..graphs import num_undirected_edges
from ..metrics import smoothness_ratio
from ..refresh import GraphRefresh, RefreshEvent
from ..regularizer import GraphSpectralRegularizer
from ..spectral import connected_components
from .batches import rng_state, set_rng_state, to_cpu
from .distributed import (
    agree,
    gather_objects,
    gather_rows,
    get_rank,
    get_world_size,
    mean_over_processes,
    reduce_stats,
)
from .rundir import History, RunDirectory
from .schedule import FixedSteps, LearningSchedule, Phase, Progress, UntilStopped

#: The format of :meth:`GSRCore.callback_state_dict`.
CALLBACK_STATE_FORMAT = 1

__all__ = ["GSRCore", "check_learn", "make_plan", "batch_mask", "metrics_row", "flat_metrics"]


def check_learn(learn) -> dict:
    """``learn`` (a mapping layer -> CoactivationGraph, or None) as a dict; its learners are
    checked by :class:`~gsr_pyg.refresh.GraphRefresh`."""
    if learn is not None and not isinstance(learn, Mapping):
        raise TypeError(f"learn must be a mapping layer -> CoactivationGraph, got "
                        f"{describe(learn)}")
    return dict(learn or {})


def make_plan(learn: dict, schedule: LearningSchedule | None, max_steps: int | None,
              open_ended: bool = False):
    """The schedule of a run, checked against what is learned: ``(schedule, plan)``.

    With learned layers the plan is ``schedule`` (default: the reference); otherwise
    :class:`FixedSteps` of ``max_steps`` or, when ``open_ended`` and no ``max_steps`` is
    given, :class:`UntilStopped` (the training loop decides the length)."""
    if learn:
        schedule = schedule if schedule is not None else LearningSchedule.reference()
        if not isinstance(schedule, LearningSchedule):
            raise TypeError(f"schedule must be a LearningSchedule, got {describe(schedule)}")
        if max_steps is not None:  # it would be ignored: the schedule sets the length
            raise ValueError(
                f"max_steps={max_steps!r} is given but layers learn their graphs (learn is "
                "not empty): the schedule sets the run's length (warmup_steps, "
                "max_learning_steps, after_stop_steps); leave max_steps out")
        return schedule, schedule
    if schedule is not None:  # it would be ignored: nothing is learned
        raise ValueError("schedule is given but no layer learns its graph (learn is "
                         "empty): give learn={layer: CoactivationGraph(...)}, or max_steps "
                         "without a schedule")
    if max_steps is None:
        if open_ended:
            return None, UntilStopped()
        raise ValueError("max_steps is required when no layer learns its graph "
                         "(learn is empty)")
    check_int(max_steps, "max_steps", minimum=1)
    return None, FixedSteps(max_steps)


def batch_mask(mask_fn, batch) -> torch.Tensor | None:
    """The padding mask ``mask_fn(batch)`` of a batch, checked (None without ``mask_fn``)."""
    if mask_fn is None:
        return None
    mask = mask_fn(batch)
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask_fn must return a boolean tensor over the sample axes or "
                        f"None, got {describe(mask)}")
    return mask


def metrics_row(reg: GraphSpectralRegularizer, progress: Progress, task_loss: torch.Tensor,
                penalties: dict, events: dict[str, RefreshEvent],
                smoothness_permutations: int, mask: torch.Tensor | None) -> dict:
    """One metrics row: the step, its phase, the task loss of the global batch and, per
    regularized layer, its weight, penalty, graph and smoothness. Collective under torchrun
    (every process calls it at the same step)."""
    row = {"step": progress.step, "phase": progress.phase.value,
           "task_loss": float(mean_over_processes(task_loss))}
    weights = reg.weights()
    for name in reg.layers:
        graph = reg.graph(name)
        entry = {"weight": weights[name], "penalty": float(penalties[name].detach()),
                 "edges": num_undirected_edges(graph)}
        if graph.edge_index.shape[1]:
            entry["components"] = connected_components(graph)[0]
            if smoothness_permutations:
                entry["smoothness_ratio"] = smoothness_ratio(
                    reg.samples(name, mask=mask).detach(), graph,
                    num_permutations=smoothness_permutations, seed=progress.step)
        else:
            entry["components"] = graph.num_nodes
        if name in events:
            entry["refresh"] = events[name].as_dict()
        row[name] = entry
    return row


def flat_metrics(row: dict, prefix: str = "gsr/") -> dict[str, float]:
    """The numbers of a metrics row with flat names, for loggers that take ``name -> number``
    (``gsr/task_loss``, ``gsr/<layer>/penalty``, ``gsr/<layer>/refresh/edges``...); the
    phase is left out (a word, not a number).

    Example:
        >>> flat_metrics({"step": 3, "phase": "learning", "task_loss": 0.5,
        ...               "fc": {"penalty": 0.25, "edges": 4, "refresh": {"stopped": False}}})
        {'gsr/task_loss': 0.5, 'gsr/fc/penalty': 0.25, 'gsr/fc/edges': 4.0, \
'gsr/fc/refresh/stopped': 0.0}
    """
    flat = {}

    def visit(value, name: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                visit(item, f"{name}/{key}")
        elif isinstance(value, (bool, int, float)):
            flat[prefix + name.lstrip("/")] = float(value)

    for key, value in row.items():
        if key not in ("step", "phase"):
            visit(value, key)
    return flat


class CallbackBase:
    """What the callbacks of other training loops (Lightning, Hugging Face) share: their
    checked settings, and the reports of the :class:`GSRCore` they start with the loop."""

    #: how the error of a report asked for before the loop ran names that loop's start
    _started = "run"

    def _set_settings(self, reg: GraphSpectralRegularizer, learn, schedule,
                      log_every: int | None, smoothness_permutations: int) -> None:
        if not isinstance(reg, GraphSpectralRegularizer):
            raise TypeError(f"reg must be a GraphSpectralRegularizer, got {describe(reg)}")
        self.reg = reg
        self.learn = check_learn(learn)
        self.schedule, self._plan = make_plan(self.learn, schedule, None, open_ended=True)
        self.log_every = None if log_every is None else check_int(log_every, "log_every",
                                                                   minimum=1)
        self.smoothness_permutations = check_int(smoothness_permutations,
                                                 "smoothness_permutations", minimum=0)
        self.core: GSRCore | None = None  # started with the loop

    @property
    def history(self) -> History:
        """Snapshots and metric rows of the run (:class:`~gsr_pyg.training.History`)."""
        if self.core is None:
            raise RuntimeError(f"the callback has not been {self._started} yet")
        return self.core.history

    @property
    def progress(self):
        return None if self.core is None else self.core.progress

    def summary(self) -> dict:
        return self.core.summary()


class GSRCore:
    """The graph learning, snapshots and metrics of one regularized run, step by step.

    Args:
        reg: the regularizer; the layers in ``learn`` get an edgeless graph (no penalty until
            their first learned graph) and the schedule's Laplacian normalization.
        learn: mapping layer name -> :class:`~gsr_pyg.learn.CoactivationGraph` (may be empty).
        plan: the run's schedule (:func:`make_plan`): a :class:`LearningSchedule` when
            layers learn, otherwise :class:`FixedSteps` or :class:`UntilStopped`.
        device: where the learning statistics live.
        run: the :class:`~gsr_pyg.training.rundir.RunDirectory` that receives snapshots (and
            metric rows, with ``rows_to_run``), or None: snapshots and rows in memory.
        log_every: steps between metric rows (a step that refreshes a graph always logs).
        smoothness_permutations: permutations of the logged smoothness ratio (0: not logged).
        rows_to_run: write metric rows to ``run`` (its ``metrics.jsonl``) rather than keep
            them in :attr:`history`.

    Attributes: ``reg``, ``refresh`` (the :class:`~gsr_pyg.refresh.GraphRefresh`; may be
    replaced by an object with the same methods that wraps it), ``plan``, ``progress``,
    ``history`` and ``run``.
    """

    def __init__(self, reg: GraphSpectralRegularizer, learn: dict, plan, *,
                 device: torch.device, run: RunDirectory | None = None,
                 log_every: int = 50, smoothness_permutations: int = 10,
                 rows_to_run: bool = True):
        self.reg = reg
        self.plan = plan
        self.run = run
        self.log_every = log_every
        self.smoothness_permutations = smoothness_permutations
        self.rows_to_run = rows_to_run and run is not None
        rules = ({} if not learn else  # nothing is learned: the defaults go unused
                 {"stop": plan.stop, "converged_jaccard": plan.converged_jaccard,
                  "normalization": plan.normalization})
        self.refresh = GraphRefresh(
            reg, learn, **rules, device=device, gather=gather_rows,
            agree=functools.partial(agree, device=device), reduce_stats=reduce_stats)
        self.refresh.reset()  # learned layers: no edges, the schedule's Laplacian
        self.history = History(run.path if run is not None else None)
        self.progress: Progress = plan.start()
        self._events: dict[str, RefreshEvent] = {}
        self._stopped = False
        self._penalties: dict[str, torch.Tensor] | None = None

    @property
    def max_total_steps(self) -> int | None:
        """Most steps the run can take (None: the training loop decides)."""
        return self.plan.max_total_steps

    # ------------------------------------------------------------------ one step
    def start_step(self, mask: torch.Tensor | None = None) -> bool:
        """After the forward pass of a step: in the learning phase, every ``refresh_every``
        steps, new graphs for the learned layers (from the real positions under ``mask``),
        and their snapshots. Returns True when every learned layer stopped here and nothing
        is trained after a stop: the run is done and this batch is not trained."""
        due = self.plan.refresh_due(self.progress)
        self._events = self.refresh.refresh(mask=mask) if due else {}
        self._penalties = None
        self.record_snapshots(self._events)
        self._stopped = bool(self._events) and self.refresh.all_stopped
        if self._stopped and self.plan.end_at_stop(self.progress):
            self.reg.step()  # nothing is trained after the stop
            return True
        return False

    def penalties(self, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The weighted penalty of every regularized layer on this step's batch (padded
        positions under ``mask`` left out); their sum is the term added to the loss."""
        self._penalties = self.reg.penalties(mask=mask)
        return self._penalties

    def finish_step(self, task_loss: torch.Tensor, mask: torch.Tensor | None = None,
                    log: bool | None = None) -> dict | None:
        """After the optimizer step: the statistics for the next graph, a metrics row (on a
        refresh, and every ``log_every`` steps, or when ``log`` says so), ``reg.step()``, and
        the schedule moved on. Returns the row (None when none was logged)."""
        if self._penalties is None:
            raise RuntimeError("finish_step() needs the penalties of the step: call "
                               "penalties() after start_step()")
        self.refresh.observe(mask=mask)  # statistics for the next graph
        if log is None:
            log = self.progress.step % self.log_every == 0
        row = None
        if self._events or log:
            row = metrics_row(self.reg, self.progress, task_loss.detach(), self._penalties,
                              self._events, self.smoothness_permutations, mask)
            if self.rows_to_run:
                self.run.add_metrics(row)  # written at the next checkpoint
            else:
                self.history.add_metrics(row)
        self.reg.step()
        self.plan.advance(self.progress, self._stopped)
        self._events, self._stopped, self._penalties = {}, False, None
        if self.progress.done:
            self.reg.check_deferred_finite()  # the last steps since the periodic check
        return row

    def record_snapshots(self, events: dict[str, RefreshEvent]) -> None:
        """Keep the graphs installed by a refresh: files in the run directory, or in memory."""
        step = self.progress.step
        for layer, event in events.items():
            if not event.installed:
                continue
            if self.run is None:
                data = event.graph.clone().cpu()
                data.step, data.name = step, layer
                self.history.add_snapshot(step, layer, data)
            else:
                path = self.run.write_snapshot(len(self.history), step, layer, event.graph)
                self.history.add_snapshot(step, layer, path)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The regularizer, the stop state of the learned layers and the schedule's
        progress: the same in every process (tensors and plain containers)."""
        return {"regularizer": self.reg.state_dict(), "learning": self.refresh.state_dict(),
                "progress": self.progress.state_dict(), "num_snapshots": len(self.history)}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict` (the history is the caller's: it knows where the
        snapshot files are)."""
        self.refresh.load_state_dict(state["learning"])
        self.reg.load_state_dict(state["regularizer"])
        self.progress = Progress.from_state_dict(state["progress"])

    def rank_states(self) -> list[dict]:
        """What differs between processes, from every process: the learning statistics of
        its batches and its random-number state (collective under torchrun: every process
        calls)."""
        return gather_objects(to_cpu({"rng": rng_state(),
                                      "stats": self.refresh.stats_state_dict()}))

    def load_rank_states(self, per_rank: Sequence[Mapping]) -> None:
        """Restore this process's part of :meth:`rank_states`."""
        mine = per_rank[get_rank()]
        self.refresh.load_stats_state_dict(mine["stats"])
        set_rng_state(mine["rng"])

    def callback_state_dict(self) -> dict:
        """What a callback keeps in its loop's checkpoints (the loop keeps the model and the
        optimizer): :meth:`state_dict`, the snapshots so far and :meth:`rank_states`
        (collective under torchrun)."""
        snapshots = [[step, layer, str(item)] for step, layer, item in self.history.records()]
        return {"format": CALLBACK_STATE_FORMAT, "core": self.state_dict(),
                "snapshots": snapshots, "world_size": get_world_size(),
                "per_rank": self.rank_states()}

    def load_callback_state_dict(self, state, source: str) -> None:
        """Restore :meth:`callback_state_dict`; ``source`` names where it came from in the
        errors."""
        if not isinstance(state, Mapping) or state.get("format") != CALLBACK_STATE_FORMAT:
            raise ValueError(f"{source} was not written by this version of gsr_pyg")
        if state["world_size"] != get_world_size():
            raise ValueError(f"{source} was written by {state['world_size']} process(es) but "
                             f"this run has {get_world_size()}: resume with the same number "
                             f"of processes")
        self.load_state_dict(state["core"])
        num = state["core"]["num_snapshots"]
        records = state["snapshots"][:num]
        if records and all(Path(path).parent.parent.parent == self.run.path
                           for _, _, path in records):
            # the same run directory: snapshots written after the checkpoint are removed
            self.history = self.run.restore_snapshots(num, self.refresh.layers)
        else:  # a new directory: the earlier snapshots stay where they are
            self.history = History(self.run.path)
            for step, layer, path in records:
                self.history.add_snapshot(step, layer, path)
        self.load_rank_states(state["per_rank"])

    # ------------------------------------------------------------------ reports
    @property
    def phase(self) -> Phase:
        return self.progress.phase

    def normalizations(self) -> dict[str, str | None]:
        """The Laplacian normalization each regularized layer trains with (learned layers:
        the schedule's)."""
        return {name: self.reg.normalization(name) for name in self.reg.layers}

    def summary(self) -> dict:
        p = self.progress
        out = {"steps": p.step, "phase": p.phase.value, "learning_steps": p.learning_steps,
               "after_stop_steps": p.after_stop_steps, "snapshots": len(self.history)}
        for name in self.refresh.layers:
            graph = self.reg.graph(name)
            out[name] = {"graphs_learned": self.refresh.num_graphs(name),
                         "stopped": self.refresh.stopped(name),
                         "edges": num_undirected_edges(graph),
                         "components": connected_components(graph)[0]}
        return out

    def summary_line(self) -> str:
        s = self.summary()
        layers = "; ".join(f"{n}: {s[n]['graphs_learned']} graphs, {s[n]['edges']} edges, "
                           f"{s[n]['components']} components" for n in self.refresh.layers)
        return (f"gsr: {s['steps']} steps ({s['learning_steps']} learning, "
                f"{s['after_stop_steps']} after stop)" + (f"; {layers}" if layers else ""))

    def describe_layers(self) -> list[str]:
        """One line per regularized layer: its graph (learned or fixed) and normalization."""
        lines = []
        for name, norm in self.normalizations().items():
            if name in self.refresh.layers:
                how = (f"graph learned by {self.refresh.learner(name)!r}, Laplacian "
                       f"normalization={norm!r} (from the schedule)")
            else:
                edges = num_undirected_edges(self.reg.graph(name))
                how = f"fixed graph with {edges} edges, Laplacian normalization={norm!r}"
            lines.append(f"{name}: {how}")
        return lines
