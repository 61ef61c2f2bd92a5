"""Graph refresh: new learned graphs for a regularizer's layers, and the rule that stops learning.

At each refresh, for every learned layer that has not stopped, :class:`GraphRefresh`

1. takes the layer's neuron features: the current batch ``reg.samples(layer)``
   (``[samples, neurons]``; under several processes, the batches of all of them in rank
   order: the reference's features) or the :class:`~gsr_pyg.learn.CoactivationStats`
   accumulated since the last refresh (summed over processes);
2. builds a graph with the layer's :class:`~gsr_pyg.learn.CoactivationGraph`;
3. applies the stop rule (:func:`stop_rule_fires`): ``"disconnected"`` fires when the new
   graph has >= 2 connected components (the reference; that graph is discarded and the layer
   keeps its last one), ``"converged"`` when the Jaccard index of the new and the last edge
   set reaches ``converged_jaccard`` (the new graph is installed), ``"never"`` never;
4. installs the graph with ``reg.set_graph(layer, graph, normalization=...)``.

A layer whose rule fired is not refreshed again. Under several processes every process
builds the same graph and all agree on each stop.

:meth:`GraphRefresh.observe` and :meth:`GraphRefresh.refresh` take the batch's padding
``mask`` (over the sample axes, as :meth:`GraphSpectralRegularizer.penalty` does): padded
positions are in neither the batch features nor the statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Data

from ._validation import check_choice, check_positive, describe
from .learn import CoactivationGraph, CoactivationStats
from .regularizer import GraphSpectralRegularizer
from .spectral import check_normalization, connected_components

__all__ = ["GraphRefresh", "RefreshEvent", "STOP_RULES", "undirected_edge_keys",
           "jaccard_index", "stop_rule_fires", "check_converged_jaccard"]

#: The stop rules: when a layer's graph learning ends.
STOP_RULES = ("disconnected", "converged", "never")


def check_converged_jaccard(value, name: str = "converged_jaccard") -> float:
    """The ``"converged"`` rule's threshold, checked: a number in (0, 1] (a Jaccard index is
    at most 1, so a larger threshold could never fire)."""
    check_positive(value, name)
    if value > 1:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return value


def undirected_edge_keys(graph: Data, coalesced: bool = False) -> Tensor:
    """The undirected edges ``i < j`` of ``graph`` as sorted keys ``i * N + j`` (what two edge
    sets are compared by); ``coalesced=True``: the edges are sorted already (a graph from the
    library's builders), so the keys are too.

    Example:
        >>> g = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> undirected_edge_keys(g)
        tensor([1, 5])
    """
    row, col = graph.edge_index
    mask = row < col
    keys = row[mask] * graph.num_nodes + col[mask]
    return keys if coalesced else torch.sort(keys).values


def jaccard_index(a: Tensor, b: Tensor) -> float:
    """``|A & B| / |A | B|`` of two sets of distinct edge keys (1 for two empty sets).

    Example:
        >>> jaccard_index(torch.tensor([1, 2, 3]), torch.tensor([2, 3, 4]))
        0.5
    """
    if a.numel() == 0 and b.numel() == 0:
        return 1.0
    inter = int(torch.isin(a, b).sum())
    return inter / (a.numel() + b.numel() - inter)


def stop_rule_fires(rule: str, num_components: int, keys: Tensor, previous: Tensor | None,
                    converged_jaccard: float = 0.95) -> bool:
    """Whether ``rule`` ends learning at a new graph with ``num_components`` connected
    components and edge keys ``keys`` (:func:`undirected_edge_keys`); ``previous``: the keys
    of the graph installed before (None before the first).

    Example:
        >>> stop_rule_fires("disconnected", 2, torch.tensor([1]), None)
        True
        >>> stop_rule_fires("converged", 1, torch.tensor([1, 5]), torch.tensor([1, 5]))
        True
    """
    check_choice(rule, "rule", STOP_RULES)
    if rule == "disconnected":
        return num_components >= 2
    if rule == "converged":
        return previous is not None and jaccard_index(keys, previous) >= converged_jaccard
    return False


@dataclass
class RefreshEvent:
    """What one refresh did to one layer: the new graph's connected components and undirected
    edges, whether it was installed, whether the layer stopped, and the graph itself."""

    components: int
    edges: int
    installed: bool
    stopped: bool
    graph: Data

    def as_dict(self) -> dict:
        """The numbers, as written to a metrics row."""
        return {"components": self.components, "edges": self.edges,
                "installed": self.installed, "stopped": self.stopped}


@dataclass
class _LayerState:
    learner: CoactivationGraph
    stats: CoactivationStats | None
    stopped: bool = False
    num_graphs: int = 0
    last_edges: Tensor | None = None  # undirected_edge_keys of the last installed graph


def _identity(value):
    return value


class GraphRefresh:
    """Learned graphs of some of ``reg``'s layers: refresh, stop rule, accumulated statistics.

    Args:
        reg: the regularizer whose layers learn their graphs.
        learn: mapping layer (name or module) -> :class:`~gsr_pyg.learn.CoactivationGraph`
            (its ``features`` says whether it sees the current batch or statistics).
        stop: the stop rule, one of :data:`STOP_RULES` (default ``"disconnected"``).
        converged_jaccard: threshold of the ``"converged"`` rule.
        normalization: the Laplacian every learned graph is installed with (``"sym"``, the
            reference's, or ``None``); :meth:`reset` installs it too.
        device: where the statistics live (default: the device of the first batch).
        gather: ``gather(samples)`` -> the samples of every process in rank order (default:
            one process, the samples themselves); see
            :func:`gsr_pyg.training.distributed.gather_rows`.
        agree: ``agree(flag)`` -> one stop decision for all processes (default: the flag).
        reduce_stats: ``reduce_stats(stats)`` -> the statistics of every process, without
            changing ``stats`` (default: ``stats``).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh())
        >>> reg = GraphSpectralRegularizer(model, {"1": 6}, weight=0.1)
        >>> refresh = GraphRefresh(reg, {"1": CoactivationGraph(k=2)}, stop="never")
        >>> refresh.reset()                  # learned layers start with no edges
        >>> _ = model(torch.randn(16, 3))
        >>> event = refresh.refresh()["1"]
        >>> event.installed, reg.graph("1").num_edges == 2 * event.edges
        (True, True)
    """

    def __init__(
        self,
        reg: GraphSpectralRegularizer,
        learn: Mapping,
        stop: str = "disconnected",
        converged_jaccard: float = 0.95,
        normalization: str | None = "sym",
        device: torch.device | str | None = None,
        gather: Callable[[Tensor], Tensor] | None = None,
        agree: Callable[[bool], bool] | None = None,
        reduce_stats: Callable[[CoactivationStats], CoactivationStats] | None = None,
    ):
        if not isinstance(reg, GraphSpectralRegularizer):
            raise TypeError(f"reg must be a GraphSpectralRegularizer, got {describe(reg)}")
        if not isinstance(learn, Mapping):
            raise TypeError(f"learn must be a mapping layer -> CoactivationGraph, got "
                            f"{describe(learn)}")
        check_choice(stop, "stop", STOP_RULES)
        self.reg = reg
        self.stop = stop
        self.converged_jaccard = check_converged_jaccard(converged_jaccard)
        self.normalization = check_normalization(normalization, "normalization")
        self._gather = gather or _identity
        self._agree = agree or _identity
        self._reduce_stats = reduce_stats or _identity
        self._layers: dict[str, _LayerState] = {}
        for key, learner in learn.items():
            if not isinstance(learner, CoactivationGraph):
                raise TypeError(f"learn[{key!r}] must be a gsr_pyg.learn.CoactivationGraph, "
                                f"got {describe(learner)}")
            name = reg.layer_name(key)
            stats = None
            if learner.features == "stats":
                stats = CoactivationStats(reg.graph(name).num_nodes, mode=learner.stats_mode,
                                          momentum=learner.stats_momentum, device=device)
            self._layers[name] = _LayerState(learner=learner, stats=stats)

    # ------------------------------------------------------------------ state
    @property
    def layers(self) -> list[str]:
        """The learned layers' names."""
        return list(self._layers)

    def learner(self, layer: str) -> CoactivationGraph:
        return self._layers[self.reg.layer_name(layer)].learner

    def stopped(self, layer: str) -> bool:
        """Whether the stop rule fired for ``layer``."""
        return self._layers[self.reg.layer_name(layer)].stopped

    def num_graphs(self, layer: str) -> int:
        """How many graphs were installed on ``layer``."""
        return self._layers[self.reg.layer_name(layer)].num_graphs

    @property
    def all_stopped(self) -> bool:
        return all(state.stopped for state in self._layers.values())

    # ------------------------------------------------------------------ the refresh
    def reset(self) -> None:
        """Give every learned layer an edgeless graph (no penalty before its first learned
        graph) and this refresh's normalization."""
        for name in self._layers:
            self.reg.set_graph(name, self.reg.graph(name).num_nodes,
                               normalization=self.normalization)

    def observe(self, mask: Tensor | None = None) -> None:
        """Add the current batch (its real positions under ``mask``) to the statistics of the
        layers that learn from statistics (after the training step: the graph of a refresh
        never sees its own batch twice)."""
        for name, state in self._layers.items():
            if state.stats is not None and not state.stopped:
                state.stats.update(self.reg.samples(name, mask=mask).detach())

    def refresh(self, mask: Tensor | None = None) -> dict[str, RefreshEvent]:
        """Build, check and install a new graph for every learned layer that has not stopped
        (from the real positions of the batch under ``mask``); returns what happened to each
        of them."""
        events = {}
        for name, state in self._layers.items():
            if not state.stopped:
                events[name] = self._refresh_layer(name, state, mask)
        return events

    def _batch_features(self, name: str, mask: Tensor | None) -> Tensor:
        rows = self._gather(self.reg.samples(name).detach())
        if mask is None:
            return rows
        # Processes may have different numbers of real positions, and gathering needs equal
        # shapes: gather every row and every process's mask, then keep the real rows.
        keep = self.reg.sample_mask(name, mask).reshape(-1).to(torch.uint8)
        return rows[self._gather(keep).bool()]

    def _features_graph(self, name: str, state: _LayerState, mask: Tensor | None) -> Data:
        if state.stats is None:
            return state.learner.from_activations(self._batch_features(name, mask))
        graph = state.learner.from_stats(self._reduce_stats(state.stats))
        if state.stats.mode == "exact":
            state.stats.reset()  # the next graph sees the samples since this refresh
        return graph

    def _refresh_layer(self, name: str, state: _LayerState,
                       mask: Tensor | None) -> RefreshEvent:
        graph = self._features_graph(name, state, mask)
        # the library's own builders return graphs in the data model: not checked again
        built_here = type(state.learner) is CoactivationGraph
        num_components, _ = connected_components(graph, check=not built_here)
        keys = undirected_edge_keys(graph, coalesced=built_here).cpu()
        stop = self._agree(stop_rule_fires(self.stop, num_components, keys, state.last_edges,
                                           self.converged_jaccard))
        install = not (stop and self.stop == "disconnected")  # a split graph is discarded
        graph = Data(edge_index=graph.edge_index, edge_weight=graph.edge_weight,
                     num_nodes=graph.num_nodes)
        if install:
            self.reg.set_graph(name, graph, normalization=self.normalization,
                               check=not built_here)
            state.last_edges = keys
            state.num_graphs += 1
        state.stopped = stop
        return RefreshEvent(components=num_components, edges=int(keys.numel()),
                            installed=install, stopped=stop, graph=graph)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The stop state of every layer (the same in every process)."""
        return {name: {"stopped": s.stopped, "num_graphs": s.num_graphs,
                       "last_edges": s.last_edges}
                for name, s in self._layers.items()}

    def load_state_dict(self, state: Mapping) -> None:
        if set(state) != set(self._layers):
            raise ValueError(f"checkpoint learns layers {sorted(state)} but the trainer "
                             f"learns {sorted(self._layers)}")
        for name, layer_state in state.items():
            own = self._layers[name]
            own.stopped = layer_state["stopped"]
            own.num_graphs = layer_state["num_graphs"]
            own.last_edges = layer_state["last_edges"]

    def stats_state_dict(self) -> dict:
        """The statistics of this process's batches (they differ between processes)."""
        return {name: s.stats.state_dict() for name, s in self._layers.items()
                if s.stats is not None}

    def load_stats_state_dict(self, state: Mapping) -> None:
        for name, stats_state in state.items():
            self._layers[name].stats.load_state_dict(stats_state)

    def __repr__(self) -> str:
        learners = ", ".join(f"{name}: {s.learner!r}" for name, s in self._layers.items())
        return (f"GraphRefresh({learners}; stop={self.stop!r}, "
                f"normalization={self.normalization!r})")
