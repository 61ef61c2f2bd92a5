"""The alternating trainer: warm-up, graph refresh, stop rule, snapshots, checkpoints, resume.

One readable loop (:meth:`GSRTrainer.fit`). Each training step:

1. take the next batch (the loader is iterated epoch after epoch; its position is saved);
2. forward pass; the regularizer's hooks capture the hooked layers' outputs;
3. in the learning phase, every ``refresh_every`` steps, build a graph for each learned layer
   from its neuron features (the current batch, or :class:`~gsr_pyg.learn.CoactivationStats`
   accumulated since the last refresh) and install it, unless the stop rule fires;
4. loss = task loss + penalty; backward; optimizer step; ``reg.step()``.

Phases (:class:`LearningSchedule`): ``warmup_steps`` with no graph on the learned layers (no
penalty there), then up to ``max_learning_steps`` with a refresh every ``refresh_every``
steps; when every learned layer has stopped (``stop="disconnected"``: the new graph has >= 2
connected components, which is discarded; ``"converged"``: consecutive edge sets agree),
``after_stop_steps`` more steps on the last graphs. Without learned layers the trainer runs
``max_steps`` plain regularized steps.

Run directory (every file is written to a temporary name, then renamed)::

    config.json            the resolved configuration; a different one is refused
    metrics.jsonl          one JSON object per logged step (flushed at each checkpoint)
    snapshots/<layer>/NNNN_step<S>.pt       learned graph (tensors, weights_only)
    snapshots/<layer>/NNNN_step<S>.graphml  the same graph for networkx / Cytoscape
    checkpoint.pt          model, optimizer, regularizer, learner and loop state, RNG states
    summary.json           written at the end
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from torch_geometric.data import Data

from . import graphs as graphs_mod
from ._io import atomic_write
from ._validation import check_choice, check_int, check_positive, describe
from .learn import CoactivationGraph, CoactivationStats
from .metrics import smoothness_ratio
from .regularizer import GraphSpectralRegularizer
from .spectral import connected_components

__all__ = ["LearningSchedule", "GSRTrainer", "History", "load_snapshot", "atomic_write",
           "setup_distributed"]

_STOP_RULES = ("disconnected", "converged", "never")
CHECKPOINT = "checkpoint.pt"
_CHECKPOINT_KEYS = ("model", "optimizer", "regularizer", "learning", "loop", "world_size",
                    "per_rank")


def _write_text(path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(path, write)


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return repr(value)


# --------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class LearningSchedule:
    """When graphs are learned.

    Args:
        warmup_steps: steps before the first graph (no penalty on learned layers).
        refresh_every: a new graph every this many learning steps.
        max_learning_steps: at most this many steps in the learning phase.
        after_stop_steps: steps trained on the last graph once learning has stopped.
        stop: ``"disconnected"`` (the reference: stop when a new graph has >= 2 connected
            components; it is discarded), ``"converged"`` (stop when the Jaccard index of
            consecutive edge sets reaches ``converged_jaccard``) or ``"never"``.
        normalization: Laplacian of the learned graphs (reference: ``"sym"``).
        converged_jaccard: threshold of the ``"converged"`` rule.
    """

    warmup_steps: int = 5000
    refresh_every: int = 100
    max_learning_steps: int = 5000
    after_stop_steps: int = 200
    stop: str = "disconnected"
    normalization: str | None = "sym"
    converged_jaccard: float = 0.95

    def __post_init__(self):
        check_int(self.warmup_steps, "warmup_steps", minimum=0)
        check_int(self.refresh_every, "refresh_every", minimum=1)
        check_int(self.max_learning_steps, "max_learning_steps", minimum=1)
        check_int(self.after_stop_steps, "after_stop_steps", minimum=0)
        check_choice(self.stop, "stop", _STOP_RULES)
        check_choice(self.normalization, "normalization", (None, "sym"))
        check_positive(self.converged_jaccard, "converged_jaccard")
        if self.converged_jaccard > 1:  # a Jaccard index is at most 1: the rule could not fire
            raise ValueError(f"converged_jaccard must be in (0, 1], got {self.converged_jaccard}")

    @classmethod
    def reference(cls) -> LearningSchedule:
        """The original schedule: 5,000 warm-up, refresh every 100, at most 5,000 learning
        steps, stop at the first disconnected graph, then 200 steps; normalized Laplacian."""
        return cls()

    @property
    def max_total_steps(self) -> int:
        return self.warmup_steps + self.max_learning_steps + self.after_stop_steps


# --------------------------------------------------------------------------- snapshots
def _snapshot_tensors(graph: Data, step: int, layer: str) -> dict:
    out = {
        "edge_index": graph.edge_index.detach().cpu(),
        "edge_weight": graph.edge_weight.detach().cpu(),
        "num_nodes": int(graph.num_nodes),
        "step": int(step),
        "layer": layer,
    }
    return out


def load_snapshot(path: str | os.PathLike) -> Data:
    """Read a ``.pt`` snapshot (``weights_only=True``) back into a ``Data``."""
    state = _safe_load(path, "snapshot")
    missing = [key for key in ("edge_index", "edge_weight", "num_nodes", "step", "layer")
               if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"snapshot file {str(path)!r} is not a gsr_pyg graph snapshot: it "
                         f"lacks {', '.join(missing)}")
    data = Data(edge_index=state["edge_index"], edge_weight=state["edge_weight"],
                num_nodes=state["num_nodes"])
    data.step = state["step"]
    data.name = state["layer"]
    return data


def _as_device(device) -> torch.device:
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a torch.device or a device string (cpu, cuda, cuda:1), "
                        f"got {describe(device)}")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be a torch.device or a device string (cpu, cuda, "
                         f"cuda:1), got {device!r}") from None


def _safe_load(path, what: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/foreign files
        raise ValueError(
            f"{what} file {str(path)!r} cannot be read (truncated, corrupted or not written by "
            f"gsr_pyg): {_load_error_reason(err)}"
        ) from None


def _load_error_reason(err: Exception) -> str:
    """Why torch.load failed, without torch's advice to retry with ``weights_only=False``
    (which would run whatever code the file carries)."""
    text = str(err)
    if "Weights only load failed" in text:
        found = re.search(r"(Unsupported global: [^\n]*|Trying to load unsupported GLOBAL [^\n]*"
                          r"|Unsupported operand [^\n]*)", text)
        detail = f" ({found.group(1).strip()})" if found else ""
        return (f"the file holds objects other than tensors and plain containers{detail}; "
                "gsr_pyg reads files with weights_only=True and never runs code from them")
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


class History:
    """What a run produced: learned-graph snapshots and logged metrics.

    Snapshots live on disk when the run has a directory (only their step, layer and path are
    held in memory), otherwise in memory.
    """

    def __init__(self, run_dir: str | os.PathLike | None = None):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._records: list[tuple[int, str, object]] = []  # (step, layer, path or Data)
        self._metrics: list[dict] = []

    # records are appended by the trainer
    def _add_snapshot(self, step: int, layer: str, item) -> None:
        self._records.append((step, layer, item))

    def _truncate(self, num_snapshots: int) -> None:
        del self._records[num_snapshots:]

    @property
    def layers(self) -> list[str]:
        return sorted({layer for _, layer, _ in self._records})

    def _load(self, item) -> Data:
        return load_snapshot(item) if isinstance(item, (str, Path)) else item

    def snapshot_steps(self, layer: str | None = None) -> list[int]:
        return [s for s, name, _ in self._records if layer is None or name == layer]

    def layer_snapshots(self, layer: str | None = None) -> list[tuple[int, Data]]:
        """``(step, Data)`` for each learned graph of ``layer`` (all layers when None)."""
        return [(s, self._load(item)) for s, name, item in self._records
                if layer is None or name == layer]

    @property
    def snapshots(self) -> list[tuple[int, Data]]:
        """``(step, Data)`` of every learned graph in order (``Data.name`` is the layer)."""
        return self.layer_snapshots(None)

    @property
    def metrics(self) -> list[dict]:
        if self.run_dir is not None and (self.run_dir / "metrics.jsonl").exists():
            with open(self.run_dir / "metrics.jsonl", encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
            return rows + self._metrics
        return list(self._metrics)

    def to_networkx(self, index: int = -1, layer: str | None = None):
        """The ``index``-th snapshot (of ``layer``) as a networkx graph."""
        snaps = self.layer_snapshots(layer)
        if not snaps:
            raise ValueError("the run has no learned-graph snapshots")
        step, data = snaps[index]
        graph = graphs_mod.to_networkx(data)
        graph.graph["step"] = step
        return graph

    def layout(self, layer: str | None = None, iterations: int = 30, seed: int = 0):
        """Node positions for every snapshot of ``layer``, each started from the previous
        one so neurons do not jump between frames. Returns a list of ``[N, 2]`` tensors."""
        import networkx as nx

        layer = layer if layer is not None else (self.layers[0] if self.layers else None)
        positions, previous = [], None
        for _, data in self.layer_snapshots(layer):
            graph = graphs_mod.to_networkx(data)
            pos = nx.spring_layout(graph, pos=previous, iterations=iterations if previous
                                   else 100, seed=seed)
            positions.append(torch.tensor(np.array([pos[i] for i in range(data.num_nodes)]),
                                          dtype=torch.float32))
            previous = pos
        return positions

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"History({len(self._records)} snapshots, run_dir={self.run_dir})"


# --------------------------------------------------------------------------- distributed
def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def setup_distributed(device: str | torch.device | None = None) -> tuple[int, int, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment.

    Returns ``(rank, world_size, device)``. Under ``torchrun`` (``WORLD_SIZE`` > 1) the
    process group is initialised once, with ``nccl`` when the device is CUDA and ``gloo``
    otherwise, and each process gets ``cuda:LOCAL_RANK`` on GPU machines. Without torchrun it
    returns ``(0, 1, device)``: one process, nothing to set up.
    """
    wanted = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not _distributed():
        return 0, 1, wanted
    if wanted.type == "cuda":
        wanted = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(wanted)
    if not _distributed():
        torch.distributed.init_process_group(backend="nccl" if wanted.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), wanted


def _distributed_loader(loader, seed: int):
    """The same loader with a DistributedSampler (each process gets its share of every
    epoch; the global batch is ``world_size * batch_size``)."""
    if not isinstance(loader, DataLoader) or isinstance(loader.sampler, DistributedSampler):
        return loader
    if loader.batch_size is None:
        raise ValueError("under torchrun the training loader must be a DataLoader with a "
                         "batch_size (it is re-created with a DistributedSampler)")
    sampler = DistributedSampler(loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler),
                                 seed=seed, drop_last=loader.drop_last)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last)


# --------------------------------------------------------------------------- the trainer
@dataclass
class _LayerLearning:
    """Learning state of one learned layer."""

    learner: CoactivationGraph
    stats: CoactivationStats | None
    stopped: bool = False
    num_graphs: int = 0
    last_edges: torch.Tensor | None = None  # sorted undirected edge keys of the last graph


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _python_state_to_list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state_to_list(state):
    return [state[0], list(state[1]), state[2]]


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _undirected_keys(graph: Data) -> torch.Tensor:
    row, col = graph.edge_index
    mask = row < col
    return torch.sort(row[mask] * graph.num_nodes + col[mask]).values


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0 and b.numel() == 0:
        return 1.0
    inter = int(torch.isin(a, b).sum())
    return inter / (a.numel() + b.numel() - inter)


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    return batch


def _samples_by_neurons(activations: torch.Tensor) -> torch.Tensor:
    """[B, N] stays; a conv map [B, C, ...] becomes [B * positions, C] (channels are nodes)."""
    if activations.dim() == 2:
        return activations
    return activations.movedim(1, -1).reshape(-1, activations.shape[1])


class GSRTrainer:
    """Train ``model`` with ``reg`` and, for the layers in ``learn``, learned graphs.

    Args:
        model: the model; ``reg`` must regularize it.
        reg: a :class:`GraphSpectralRegularizer`; layers in ``learn`` start with no edges
            (no penalty until their first learned graph), whatever graph ``reg`` held.
        optimizer: any ``torch.optim`` optimizer over the model's parameters.
        loss_fn: ``loss_fn(output, target)``; a batch ``(x, y, ...)`` gives
            ``loss_fn(model(x), y)``, a batch that is a single tensor ``x`` (or ``(x,)``)
            gives ``loss_fn(model(x), x)`` (autoencoders).
        schedule: a :class:`LearningSchedule` (default: the reference) when ``learn`` is given.
        learn: mapping layer name -> :class:`~gsr_pyg.learn.CoactivationGraph` (its
            ``features`` says whether it sees the current batch or accumulated statistics).
        run_dir: where config, metrics, snapshots and checkpoints go (None: memory only, no
            resume). An existing run directory with the same config is resumed.
        max_steps: number of steps when nothing is learned.
        checkpoint_every: steps between checkpoints (also when the run ends or learning stops).
        log_every: steps between metric rows.
        smoothness_permutations: permutations of the logged smoothness ratio (0: not logged).
        seed: seeds torch, numpy and random at the start of a fresh run.
        device: where to train (default: the model's device).
        verbose: show a progress bar and print a one-line summary.
        config: extra JSON-serialisable settings stored in ``config.json`` and compared on
            resume (data, model sizes...).
    """

    def __init__(
        self,
        model: nn.Module,
        reg: GraphSpectralRegularizer,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable,
        schedule: LearningSchedule | None = None,
        learn: Mapping[str, CoactivationGraph] | None = None,
        run_dir: str | os.PathLike | None = None,
        max_steps: int | None = None,
        checkpoint_every: int = 500,
        log_every: int = 50,
        smoothness_permutations: int = 10,
        seed: int = 0,
        device: torch.device | str | None = None,
        verbose: bool = True,
        config: Mapping | None = None,
    ):
        if not isinstance(reg, GraphSpectralRegularizer):
            raise TypeError(f"reg must be a GraphSpectralRegularizer, got {describe(reg)}")
        if reg.model is not model:
            raise ValueError("reg regularizes a different model than the one given to the trainer")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {describe(optimizer)}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {describe(loss_fn)}")
        learn = dict(learn or {})
        for name, learner in learn.items():
            if not isinstance(learner, CoactivationGraph):
                raise TypeError(f"learn[{name!r}] must be a gsr_pyg.learn.CoactivationGraph, "
                                f"got {describe(learner)}")
        if learn:
            schedule = schedule if schedule is not None else LearningSchedule.reference()
            if not isinstance(schedule, LearningSchedule):
                raise TypeError(f"schedule must be a LearningSchedule, got {describe(schedule)}")
        elif max_steps is None:
            raise ValueError("max_steps is required when no layer learns its graph "
                             "(learn is empty)")
        if max_steps is not None:
            check_int(max_steps, "max_steps", minimum=1)
        self.model = model
        self.reg = reg
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.schedule = schedule
        self.max_steps = max_steps
        self.checkpoint_every = check_int(checkpoint_every, "checkpoint_every", minimum=1)
        self.log_every = check_int(log_every, "log_every", minimum=1)
        self.smoothness_permutations = check_int(smoothness_permutations,
                                                 "smoothness_permutations", minimum=0)
        self.seed = check_int(seed, "seed")
        self.verbose = verbose
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping of JSON-serialisable settings, got "
                            f"{describe(config)}")
        self.extra_config = dict(config or {})
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        self.device = _as_device(device)
        if run_dir is not None and not isinstance(run_dir, (str, os.PathLike)):
            raise TypeError(f"run_dir must be a path (str or os.PathLike) or None, got "
                            f"{describe(run_dir)}")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if _distributed():
            self.rank = torch.distributed.get_rank()
            self.world_size = torch.distributed.get_world_size()
        else:
            self.rank, self.world_size = 0, 1
        self.is_main = self.rank == 0  # only the main process writes the run directory
        self._learning: dict[str, _LayerLearning] = {}
        for key, learner in learn.items():
            name = reg._name(key)
            width = reg.graph(name).num_nodes
            stats = None
            if learner.features == "stats":
                stats = CoactivationStats(width, mode=learner.stats_mode,
                                          momentum=learner.stats_momentum, device=self.device)
            self._learning[name] = _LayerLearning(learner=learner, stats=stats)
        self.history = History(self.run_dir)
        # loop state (saved in checkpoints)
        self.step = 0
        self.phase = "warmup" if self._learning else "train"
        self.learning_steps = 0
        self.after_stop_done = 0
        self._epoch = 0
        self._batch_in_epoch = 0
        self._epoch_rng: dict | None = None
        self._pending_metrics: list[dict] = []

    # ------------------------------------------------------------------ config
    def resolved_config(self) -> dict:
        """Everything that defines the run; stored in config.json and compared on resume."""
        opt = self.optimizer
        return {
            "model": type(self.model).__name__,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "optimizer": type(opt).__name__,
            "optimizer_defaults": {k: v for k, v in opt.defaults.items()
                                   if isinstance(v, (int, float, str, bool, tuple, list))},
            "regularizer": repr(self.reg).rsplit(", step=", 1)[0],
            "schedule": asdict(self.schedule) if self.schedule is not None else None,
            "learn": {name: repr(state.learner) for name, state in self._learning.items()},
            "max_steps": self.max_steps,
            "checkpoint_every": self.checkpoint_every,
            "log_every": self.log_every,
            "smoothness_permutations": self.smoothness_permutations,
            "seed": self.seed,
            **{f"user.{k}": v for k, v in self.extra_config.items()},
        }

    def _prepare_run_dir(self) -> bool:
        """Create or check the run directory; True when a checkpoint should be resumed.
        Every process checks; the main one writes, the others wait for it."""
        if self.run_dir is None:
            return False
        resume = self._check_run_dir()
        if self.world_size > 1:
            torch.distributed.barrier()
        return resume

    def _check_run_dir(self) -> bool:
        config = json.loads(json.dumps(self.resolved_config(), default=_json_default))
        path = self.run_dir / "config.json"
        try:
            if self.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"run_dir {str(self.run_dir)!r} cannot be created: {err}") from None
        if self.is_main and not os.access(self.run_dir, os.W_OK):
            raise ValueError(f"run_dir {str(self.run_dir)!r} is not writable")
        if path.exists():
            with open(path, encoding="utf-8") as fh:
                try:
                    old = json.load(fh)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} is not valid JSON ({err}); remove the run "
                                     "directory or choose another") from None
            if not isinstance(old, dict):
                raise ValueError(f"{path} must hold a JSON object (the run's settings), got a "
                                 f"{type(old).__name__}; remove the run directory or choose "
                                 "another")
            if old != config:
                diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                detail = "; ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff[:5])
                raise ValueError(
                    f"run_dir {str(self.run_dir)!r} holds a run with a different config "
                    f"({detail}); use another run_dir or remove it to start again"
                )
            return (self.run_dir / CHECKPOINT).exists()
        if self.is_main:
            _write_text(path, json.dumps(config, indent=2, sort_keys=True, default=_json_default))
        return False

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self) -> dict:
        return {
            "format": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "regularizer": self.reg.state_dict(),
            "learning": {
                name: {
                    "stopped": st.stopped,
                    "num_graphs": st.num_graphs,
                    "last_edges": st.last_edges,
                }
                for name, st in self._learning.items()
            },
            "loop": {
                "step": self.step,
                "phase": self.phase,
                "learning_steps": self.learning_steps,
                "after_stop_done": self.after_stop_done,
                "epoch": self._epoch,
                "batch_in_epoch": self._batch_in_epoch,
                "epoch_rng": self._epoch_rng,
                "num_snapshots": len(self.history),
            },
            "world_size": self.world_size,
            "per_rank": self._gather_rank_states(),
        }

    def _rank_state(self) -> dict:
        """What differs between processes: RNG streams and the statistics of their batches."""
        return {"rng": _rng_state(),
                "stats": {name: st.stats.state_dict() for name, st in self._learning.items()
                          if st.stats is not None}}

    def _gather_rank_states(self) -> list[dict]:
        if self.world_size == 1:
            return [self._rank_state()]
        states = [None] * self.world_size
        torch.distributed.all_gather_object(states, _to_cpu(self._rank_state()))
        return states

    def _save_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        state = self._checkpoint_state()  # collective under torchrun: every process calls it
        if not self.is_main:
            return
        self._flush_metrics()
        atomic_write(self.run_dir / CHECKPOINT, lambda tmp: torch.save(state, tmp))

    def _load_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT
        state = _safe_load(path, "checkpoint")
        if not isinstance(state, dict) or state.get("format") != 1:
            raise ValueError(f"checkpoint file {str(path)!r} was not written by this version of "
                             "gsr_pyg")
        missing = [key for key in _CHECKPOINT_KEYS if key not in state]
        if missing:
            raise ValueError(f"checkpoint file {str(path)!r} is incomplete: it lacks "
                             f"{', '.join(missing)}; remove it to start the run again")
        if state["world_size"] != self.world_size:
            raise ValueError(
                f"checkpoint {str(path)!r} was written by {state['world_size']} process(es) but "
                f"this run has {self.world_size}: resume with the same world size (torchrun "
                f"--nproc_per_node / --nnodes), or start a new run directory")
        if set(state["learning"]) != set(self._learning):
            raise ValueError(f"checkpoint learns layers {sorted(state['learning'])} but the "
                             f"trainer learns {sorted(self._learning)}")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:  # another architecture or width
            raise ValueError(f"checkpoint file {str(path)!r} holds another model than the one "
                             f"given to the trainer: {' '.join(str(err).split())[:300]}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.reg.load_state_dict(state["regularizer"])
        for name, st in state["learning"].items():
            own = self._learning[name]
            own.stopped = st["stopped"]
            own.num_graphs = st["num_graphs"]
            own.last_edges = st["last_edges"]
        loop = state["loop"]
        self.step = loop["step"]
        self.phase = loop["phase"]
        self.learning_steps = loop["learning_steps"]
        self.after_stop_done = loop["after_stop_done"]
        self._epoch = loop["epoch"]
        self._batch_in_epoch = loop["batch_in_epoch"]
        self._epoch_rng = loop["epoch_rng"]
        self._restore_history(loop["num_snapshots"])
        self._truncate_metrics()
        mine = state["per_rank"][self.rank]
        for name, stats_state in mine["stats"].items():
            self._learning[name].stats.load_state_dict(stats_state)
        _set_rng_state(mine["rng"])

    def _restore_history(self, num_snapshots: int) -> None:
        """Re-read snapshot records up to the checkpoint; later ones (written after the
        checkpoint by a run that was killed) are removed: the resumed run writes them again."""
        snap_dir = self.run_dir / "snapshots"
        records = []
        if snap_dir.exists():
            for layer_dir in sorted(p for p in snap_dir.iterdir() if p.is_dir()):
                for file in sorted(layer_dir.glob("*.pt")):
                    index, step = file.stem.split("_step")
                    records.append((int(index), int(step), layer_dir.name, file))
        records.sort()
        for _, _, _, file in records[num_snapshots:] if self.is_main else ():
            file.unlink()
            file.with_suffix(".graphml").unlink(missing_ok=True)
        self.history = History(self.run_dir)
        for _, step, layer, file in records[:num_snapshots]:
            self.history._add_snapshot(step, self._layer_from_dir(layer), file)

    def _layer_from_dir(self, dirname: str) -> str:
        for name in self._learning:
            if _safe_dirname(name) == dirname:
                return name
        return dirname

    def _truncate_metrics(self) -> None:
        """Drop metric rows logged after the checkpoint (they are logged again)."""
        path = self.run_dir / "metrics.jsonl"
        if not self.is_main or not path.exists():
            return
        with open(path, encoding="utf-8") as fh:
            rows = [line for line in fh if line.strip() and json.loads(line)["step"] <= self.step]
        _write_text(path, "".join(rows))

    def _flush_metrics(self) -> None:
        """Append the pending rows to metrics.jsonl atomically (copy + append + rename)."""
        if self.run_dir is None or not self.is_main or not self._pending_metrics:
            return
        path = self.run_dir / "metrics.jsonl"
        lines = "".join(json.dumps(row, default=_json_default) + "\n"
                        for row in self._pending_metrics)

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as out:
                if path.exists():
                    with open(path, encoding="utf-8") as old:
                        for line in old:
                            out.write(line)
                out.write(lines)

        atomic_write(path, write)
        self._pending_metrics = []

    # ------------------------------------------------------------------ data
    def _batches(self, loader: Iterable):
        """Yield batches forever, epoch after epoch, resuming mid-epoch when needed.

        The global RNG state at the start of each epoch is saved, so the shuffled order of an
        interrupted epoch is drawn again identically on resume."""
        resume_skip = self._batch_in_epoch
        while True:
            current = _rng_state()
            if resume_skip and self._epoch_rng is not None:
                _set_rng_state(self._epoch_rng)
            else:
                self._epoch_rng = current
            if isinstance(getattr(loader, "sampler", None), DistributedSampler):
                loader.sampler.set_epoch(self._epoch)
            iterator = iter(loader)
            if resume_skip:
                for _ in range(resume_skip):
                    next(iterator)
                _set_rng_state(current)
            count = resume_skip
            resume_skip = 0
            got_any = False
            for batch in iterator:
                got_any = True
                count += 1
                self._batch_in_epoch = count
                yield batch
            if not got_any and count == 0:
                raise ValueError("the training loader yielded no batch")
            self._epoch += 1
            self._batch_in_epoch = 0

    # ------------------------------------------------------------------ learning
    def _refresh_due(self) -> bool:
        return (self.phase == "learning"
                and self.learning_steps % self.schedule.refresh_every == 0)

    def _refresh_graphs(self) -> dict:
        """Build a new graph for every learned layer that has not stopped; apply the stop rule."""
        events = {}
        for name, st in self._learning.items():
            if st.stopped:
                continue
            if st.stats is not None:
                stats = st.stats
                if self.world_size > 1:  # every process builds from the statistics of all
                    stats = copy.deepcopy(st.stats).all_reduce()
                graph = st.learner.from_stats(stats)
                if st.stats.mode == "exact":
                    st.stats.reset()
            else:
                graph = st.learner.from_activations(
                    self._gather(_samples_by_neurons(self.reg.activations(name).detach())))
            num_comp, _ = connected_components(graph)
            keys = _undirected_keys(graph)
            stop = False
            if self.schedule.stop == "disconnected" and num_comp >= 2:
                stop = True  # the disconnected graph is discarded
            elif (self.schedule.stop == "converged" and st.last_edges is not None
                  and _jaccard(keys.cpu(), st.last_edges) >= self.schedule.converged_jaccard):
                stop = True
            stop = self._agree(stop)
            install = not (stop and self.schedule.stop == "disconnected")
            if install:
                graph = Data(edge_index=graph.edge_index, edge_weight=graph.edge_weight,
                             num_nodes=graph.num_nodes)
                self.reg.set_graph(name, graph, normalization=self.schedule.normalization)
                st.last_edges = keys.cpu()
                st.num_graphs += 1
                self._record_snapshot(name, graph)
            st.stopped = stop
            events[name] = {"components": num_comp, "edges": int(keys.numel()),
                            "installed": install, "stopped": stop}
        return events

    def _gather(self, samples: torch.Tensor) -> torch.Tensor:
        """The current batch of every process, in rank order (reference features)."""
        if self.world_size == 1:
            return samples
        parts = [torch.empty_like(samples) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, samples.contiguous())
        return torch.cat(parts)

    def _agree(self, flag: bool) -> bool:
        """One decision for all processes (any process stopping stops all)."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def _record_snapshot(self, layer: str, graph: Data) -> None:
        index = len(self.history)
        if self.run_dir is None:
            data = graph.clone().cpu()
            data.step, data.name = self.step, layer
            self.history._add_snapshot(self.step, layer, data)
            return
        folder = self.run_dir / "snapshots" / _safe_dirname(layer)
        stem = f"{index:04d}_step{self.step}"
        tensors = _snapshot_tensors(graph, self.step, layer)
        if not self.is_main:  # the main process writes the file; the others know its path
            self.history._add_snapshot(self.step, layer, folder / f"{stem}.pt")
            return
        atomic_write(folder / f"{stem}.graphml", lambda tmp: _write_graphml(graph, tmp,
                                                                            self.step, layer))
        atomic_write(folder / f"{stem}.pt", lambda tmp: torch.save(tensors, tmp))
        self.history._add_snapshot(self.step, layer, folder / f"{stem}.pt")

    def _advance_phase(self) -> None:
        """Move between warm-up, learning, after-stop and done after a step."""
        s = self.schedule
        if self.phase == "train":
            if self.step >= self.max_steps:
                self.phase = "done"
        elif self.phase == "warmup":
            if self.step >= s.warmup_steps:
                self.phase = "learning"
        elif self.phase == "learning":
            self.learning_steps += 1
            if self.learning_steps >= s.max_learning_steps:
                self.phase = "done"
        elif self.phase == "after_stop":
            self.after_stop_done += 1
            if self.after_stop_done >= s.after_stop_steps:
                self.phase = "done"

    def _all_stopped(self) -> bool:
        return all(st.stopped for st in self._learning.values())

    def _after_refresh(self, events: dict) -> None:
        """The step at which the last layer stopped is the first after-stop step."""
        if events and self._all_stopped():
            self.phase = "after_stop"

    # ------------------------------------------------------------------ one step
    def _forward_loss(self, batch):
        if isinstance(batch, (list, tuple)):
            x = batch[0]
            target = batch[1] if len(batch) > 1 else x
        else:
            x = target = batch
        output = self._train_model(x)
        return self.loss_fn(output, target)

    def _log_row(self, task_loss, penalties: dict, events: dict) -> dict:
        if self.world_size > 1:  # the loss of the global batch
            task_loss = task_loss.clone()
            torch.distributed.all_reduce(task_loss)
            task_loss = task_loss / self.world_size
        row = {"step": self.step, "phase": self.phase, "task_loss": float(task_loss)}
        weights = self.reg.weights()
        for name in self.reg.layers:
            graph = self.reg.graph(name)
            entry = {"weight": weights[name], "penalty": float(penalties[name].detach()),
                     "edges": int(graph.edge_index.shape[1] // 2)}
            acts = self.reg.activations(name)
            if graph.edge_index.shape[1]:
                entry["components"] = connected_components(graph)[0]
                if self.smoothness_permutations and acts is not None:
                    entry["smoothness_ratio"] = smoothness_ratio(
                        _samples_by_neurons(acts.detach()), graph,
                        num_permutations=self.smoothness_permutations, seed=self.step)
            else:
                entry["components"] = graph.num_nodes
            if name in events:
                entry["refresh"] = events[name]
            row[name] = entry
        return row

    # ------------------------------------------------------------------ fit
    def fit(self, loader: Iterable) -> History:
        """Train until the schedule ends; resume from ``run_dir`` when it holds a checkpoint."""
        if not isinstance(loader, Iterable):
            raise TypeError(f"loader must be an iterable of batches (a DataLoader, a list of "
                            f"(inputs, targets) pairs...), got {describe(loader)}")
        resume = self._prepare_run_dir()
        self.model.to(self.device)
        if resume:
            self._load_checkpoint()
        else:
            torch.manual_seed(self.seed)
            np.random.seed(self.seed % 2**32)
            random.seed(self.seed)
            for name in self._learning:
                # learned layers start with no edges: no penalty before the first graph
                self.reg.set_graph(name, self.reg.graph(name).num_nodes,
                                   normalization=self.schedule.normalization)
            self._advance_phase_at_start()
        self._train_model = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            # hooks sit on the inner modules, so they fire inside the wrapped forward
            self._train_model = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
            loader = _distributed_loader(loader, self.seed)
        total = self._planned_steps()
        bar = None
        if self.verbose and self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, desc="gsr", dynamic_ncols=True)
        self.model.train()
        batches = self._batches(loader)
        last_row = None
        while self.phase != "done":
            batch = _to_device(next(batches), self.device)
            loss = self._forward_loss(batch)
            events = self._refresh_graphs() if self._refresh_due() else {}
            if events and self._all_stopped() and not self.schedule.after_stop_steps:
                self.phase = "done"  # the stop fired and nothing is trained after it
                self.reg.step()
                self._save_checkpoint()
                break
            penalties = self.reg.penalties()
            total_penalty = sum(penalties.values())
            (loss + total_penalty).backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            for name, st in self._learning.items():
                if st.stats is not None and not st.stopped:
                    st.stats.update(_samples_by_neurons(self.reg.activations(name).detach()))
            if events or self.step % self.log_every == 0:
                last_row = self._log_row(loss.detach(), penalties, events)
                if self.run_dir is None:
                    self.history._metrics.append(last_row)
                else:
                    self._pending_metrics.append(last_row)
            self.reg.step()
            self.step += 1
            if events:
                self._after_refresh(events)
            if self.phase != "done":
                self._advance_phase()
            if bar is not None:
                bar.update(1)
                if last_row is not None:
                    bar.set_postfix_str(self._postfix(last_row), refresh=False)
            if self.step % self.checkpoint_every == 0 or self.phase == "done":
                self._save_checkpoint()
        if bar is not None:
            bar.close()
        self._write_summary()
        if self.verbose and self.is_main:
            print(self.summary_line())
        return self.history

    def _advance_phase_at_start(self) -> None:
        if self.phase == "warmup" and self.schedule.warmup_steps == 0:
            self.phase = "learning"

    def _planned_steps(self) -> int:
        return self.max_steps if not self._learning else self.schedule.max_total_steps

    def _postfix(self, row: dict) -> str:
        parts = [f"loss {row['task_loss']:.4g}"]
        for name in self.reg.layers:
            entry = row[name]
            parts.append(f"{name}: pen {entry['penalty']:.3g} E {entry['edges']} "
                         f"C {entry['components']}")
        return ", ".join(parts)

    def summary(self) -> dict:
        out = {"steps": self.step, "phase": self.phase,
               "learning_steps": self.learning_steps, "after_stop_steps": self.after_stop_done,
               "snapshots": len(self.history)}
        for name, st in self._learning.items():
            graph = self.reg.graph(name)
            out[name] = {"graphs_learned": st.num_graphs, "stopped": st.stopped,
                         "edges": int(graph.edge_index.shape[1] // 2),
                         "components": connected_components(graph)[0]}
        return out

    def summary_line(self) -> str:
        s = self.summary()
        layers = "; ".join(f"{n}: {s[n]['graphs_learned']} graphs, {s[n]['edges']} edges, "
                           f"{s[n]['components']} components" for n in self._learning)
        return (f"gsr: {s['steps']} steps ({s['learning_steps']} learning, "
                f"{s['after_stop_steps']} after stop)" + (f"; {layers}" if layers else ""))

    def _write_summary(self) -> None:
        if self.run_dir is not None and self.is_main:
            _write_text(self.run_dir / "summary.json",
                        json.dumps(self.summary(), indent=2, default=_json_default))


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _safe_dirname(layer: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in layer) or "layer"


def _write_graphml(graph: Data, path: str, step: int, layer: str) -> None:
    import networkx as nx

    g = graphs_mod.to_networkx(graph)
    g.graph["step"] = int(step)
    g.graph["layer"] = layer
    for _, attrs in g.nodes(data=True):
        attrs.pop("pos", None)  # GraphML cannot store tuples
    nx.write_graphml(g, path)

