"""The registry of bad inputs: one entry per input tried on a public surface.

Each :class:`Case` names the surface, the public call, the input that is wrong, a
``trigger(tmp_dir)`` that makes the call, and what must happen: the exception type and a
regular expression its message must match (the message names the argument and what was
expected), or, for inputs the library deliberately accepts (the empty graph, self-loops
given to ``from_edge_index``...), a ``check`` of the result and a sentence saying what the
caller gets.

``tests/test_bad_inputs.py`` runs every case; ``tools/write_reliability_doc.py`` runs every
case and writes ``docs/reliability.md`` from the messages actually raised. Add a case here,
not a ``pytest.raises`` elsewhere, when a new bad input is handled.

``known_issue`` marks a case whose current behaviour is not the one registered (the fix
belongs to a module being changed elsewhere): the test is an expected failure (strict, so
it fails once the fix lands and the mark must go) and the document shows the message users
see today.
"""

from __future__ import annotations

import gzip
import os
import pickle
import random
import re
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch_geometric.data import Data

from gsr_pyg import graphs, learn, metrics, readouts, spectral
from gsr_pyg.data import (
    branching_trajectory,
    load_anndata,
    load_mnist,
    obs_labels,
    obs_values,
    planted_modules,
    prepare_matrix,
)
from gsr_pyg.data.mnist import read_idx
from gsr_pyg.data.text import (
    CharVocabulary,
    encode_chunks,
    split_by_module,
    stdlib_docstrings,
    text_chunks,
)
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.training import GSRTrainer, LearningSchedule, load_snapshot
from gsr_pyg.training.rundir import CHECKPOINT_FORMAT

#: Surfaces in document order, with the title of their section.
SURFACES: dict[str, str] = {
    "graphs": "Graphs (`gsr_pyg.graphs`)",
    "spectral": "Spectral (`gsr_pyg.spectral`)",
    "regularizer": "Regularizer (`GraphSpectralRegularizer`)",
    "learn": "Learned graphs (`gsr_pyg.learn`)",
    "pipeline": "Trainer (`gsr_pyg.training`)",
    "data": "Data loaders (`gsr_pyg.data`)",
    "layout": "Layouts (`gsr_pyg.layout`)",
    "modules": "Feature modules and clustering (`gsr_pyg.readouts`, `gsr_pyg.metrics`)",
    "scripts": "Pipeline scripts: arguments and configs",
}


@dataclass(frozen=True)
class Case:
    """One input tried on a public surface and what must happen."""

    surface: str
    call: str
    input: str
    trigger: Callable[[Path], object]
    error: type[BaseException] | None = None
    match: str = ""
    check: Callable[[object], None] | None = None
    outcome: str = ""
    skip: Callable[[], str | None] | None = None
    known_issue: str | None = None

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", f"{self.surface} {self.call} {self.input}".lower())
        return slug.strip("-")[:90]


@dataclass
class Outcome:
    """What a case did: the value returned or the exception raised."""

    value: object = None
    error: BaseException | None = None


def run(case: Case, tmp: Path) -> Outcome:
    """Run ``case.trigger`` in ``tmp`` (an empty directory) and record what happened."""
    try:
        return Outcome(value=case.trigger(tmp))
    except Exception as error:  # the point is to see what users see
        return Outcome(error=error)


def verdict(case: Case, outcome: Outcome) -> str | None:
    """``None`` when the outcome is the registered one, else what differs."""
    if case.error is None:
        if outcome.error is not None:
            return f"expected the input to be accepted, got {outcome.error!r}"
        try:
            case.check(outcome.value)
        except AssertionError as failure:
            return f"accepted, but the result is wrong: {failure}"
        return None
    if outcome.error is None:
        return f"expected {case.error.__name__}, but the call returned {outcome.value!r:.200}"
    if not isinstance(outcome.error, case.error):
        return (f"expected {case.error.__name__}, got {type(outcome.error).__name__}: "
                f"{outcome.error}")
    if not re.search(case.match, str(outcome.error)):
        return f"message {str(outcome.error)!r} does not match {case.match!r}"
    return None


CASES: list[Case] = []


def _add(surface: str, call: str, input: str, trigger: Callable[[Path], object],
         error: type[BaseException] | None = None, match: str = "", **options) -> None:
    if error is not None and not match:
        raise ValueError(f"case {input!r} needs a message pattern")
    CASES.append(Case(surface, call, input, trigger, error, match, **options))


def _accepted(surface: str, call: str, input: str, trigger: Callable[[Path], object],
              check: Callable[[object], None], outcome: str) -> None:
    CASES.append(Case(surface, call, input, trigger, check=check, outcome=outcome))


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
PAIR = [[0, 1], [1, 0]]


def _data(edge_index, edge_weight=None, num_nodes=2, pos=None) -> Data:
    """A Data exactly as given (no validation, no conversion)."""
    data = Data(edge_index=torch.tensor(edge_index, dtype=torch.long).view(2, -1),
                num_nodes=num_nodes)
    if edge_weight is not None:
        data.edge_weight = torch.tensor(edge_weight)
    if pos is not None:
        data.pos = pos
    return data


def _empty_graph(num_nodes: int) -> Data:
    return Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=num_nodes)


def _mlp() -> nn.Module:
    return nn.Sequential(OrderedDict(fc1=nn.Linear(3, 4), act=nn.ReLU(), out=nn.Linear(4, 2)))


def _regularize(graph, **options) -> tuple[nn.Module, GraphSpectralRegularizer]:
    model = _mlp()
    return model, GraphSpectralRegularizer(model, {"fc1": graph}, **options)


def _penalty_with_bias(value: float, spread: float = 0.0) -> torch.Tensor:
    """Penalty of fc1 (ring of 4) when every fc1 output is ``value`` (+ spread per neuron)."""
    model, reg = _regularize(graphs.ring(4))
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.copy_(value + spread * torch.arange(4.0))
    model(torch.randn(2, 3))
    return reg.penalty()


def _expect(condition: bool) -> None:
    assert condition


def _directed_graphml(tmp: Path) -> Path:
    nx.write_graphml(nx.DiGraph([(0, 1)]), tmp / "directed.graphml")
    return tmp / "directed.graphml"


def _nx_with_pos(pos) -> nx.Graph:
    G = nx.Graph([(0, 1)])
    nx.set_node_attributes(G, {0: pos, 1: pos}, "pos")
    return G


def _forward_and_penalty(graph) -> torch.Tensor:
    model, reg = _regularize(graph)
    model(torch.randn(5, 3))
    return reg.penalty()


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def _drop(directory: Path, name: str) -> Path:
    (directory / name).unlink()
    return directory


class _LSTMLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


class _Flatten1D(nn.Module):
    """A layer that outputs one number per sample: [B]."""

    def forward(self, x):
        return x.sum(dim=1)


class _VectorModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.total = _Flatten1D()

    def forward(self, x):
        return self.total(self.fc(x))


def _forward_through(model: nn.Module, key: str, graph, x: torch.Tensor):
    reg = GraphSpectralRegularizer(model, {key: graph})
    model(x)
    return reg.penalty()


def _forward_and_penalty_of(graph, x: torch.Tensor, **options) -> torch.Tensor:
    model, reg = _regularize(graph, **options)
    model(x)
    return reg.penalty()


def _tokens_penalty(x: torch.Tensor, mask=None, **options) -> torch.Tensor:
    """Penalty of fc1 (ring of 4) for inputs ``x`` [B, T, 3] (fc1 outputs [B, T, 4])."""
    model, reg = _regularize(graphs.ring(4), **options)
    model(x)
    return reg.penalty(mask=mask)


def _activations(samples: int = 10, neurons: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(samples, neurons, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def _with_constant_neuron() -> torch.Tensor:
    acts = _activations()
    acts[:, 5] = 3.0
    return acts


def _with_value(value: float) -> torch.Tensor:
    acts = _activations()
    acts[2, 4] = value
    return acts


def _stats_with(acts: torch.Tensor) -> learn.CoactivationStats:
    stats = learn.CoactivationStats(acts.shape[1])
    stats.update(acts)
    return stats


# ---- a tiny learned-graph run -----------------------------------------------------------------

def _tiny_trainer(run_dir, k: int = 3, width: int = 8, **options):
    """Eight steps of a learned-graph run on an 8-neuron latent layer."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(enc=nn.Linear(6, width), latent=nn.Tanh(),
                                      dec=nn.Linear(width, 6)))
    reg = GraphSpectralRegularizer(model, {"latent": width}, weight=1e-2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    schedule = LearningSchedule(warmup_steps=2, refresh_every=2, max_learning_steps=6,
                                after_stop_steps=0, stop="never")
    settings = dict(schedule=schedule, learn={"latent": learn.CoactivationGraph(k=k)},
                    run_dir=run_dir, checkpoint_every=2, log_every=2,
                    smoothness_permutations=0, verbose=False)
    settings.update(options)
    trainer = GSRTrainer(model, reg, optimizer, nn.functional.mse_loss, **settings)
    data = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
    return trainer, DataLoader(TensorDataset(data), batch_size=8)


def _fit(run_dir, **options):
    trainer, loader = _tiny_trainer(run_dir, **options)
    trainer.fit(loader)
    return trainer


_TEMPLATE: dict[str, Path] = {}


def _finished_run(tmp: Path) -> Path:
    """A copy, in ``tmp``, of a finished tiny run (trained once per process)."""
    if "run" not in _TEMPLATE:
        base = Path(tempfile.mkdtemp(prefix="gsr-bad-inputs-"))
        _fit(base / "run")
        _TEMPLATE["run"] = base / "run"
    run_dir = tmp / "run"
    shutil.copytree(_TEMPLATE["run"], run_dir)
    return run_dir


def _checkpoint_state(tmp: Path) -> tuple[Path, dict]:
    run_dir = _finished_run(tmp)
    return run_dir, torch.load(run_dir / "checkpoint.pt", weights_only=True)


def _resume_with_checkpoint_bytes(make_bytes: Callable[[bytes], bytes]):
    def trigger(tmp: Path):
        run_dir = _finished_run(tmp)
        checkpoint = run_dir / "checkpoint.pt"
        checkpoint.write_bytes(make_bytes(checkpoint.read_bytes()))
        return _fit(run_dir)
    return trigger


def _resume_with_checkpoint_state(change: Callable[[dict], object]):
    def trigger(tmp: Path):
        run_dir, state = _checkpoint_state(tmp)
        torch.save(change(state), run_dir / "checkpoint.pt")
        return _fit(run_dir)
    return trigger


def _resume_with_config_text(text: str):
    def trigger(tmp: Path):
        run_dir = _finished_run(tmp)
        (run_dir / "config.json").write_text(text)
        return _fit(run_dir)
    return trigger


def _replace(state: dict, **changes) -> dict:
    return {**state, **changes}


def _checkpoint_of_a_wider_model(tmp: Path):
    other = _fit(tmp / "other", width=10)
    run_dir = _finished_run(tmp)
    shutil.copy(other.run_dir / "checkpoint.pt", run_dir / "checkpoint.pt")
    return _fit(run_dir)


def _snapshot_file(tmp: Path) -> Path:
    return sorted((_finished_run(tmp) / "snapshots" / "latent").glob("*.pt"))[0]


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _read_only_dir(tmp: Path):
    """A directory that refuses new files: mode 0555, or, for root (whom permission bits do
    not stop), the kernel's /sys, which refuses files to everyone."""
    if _running_as_root():
        return _fit(Path("/sys"))
    run_dir = tmp / "read-only"
    run_dir.mkdir()
    run_dir.chmod(0o555)
    try:
        return _fit(run_dir)
    finally:
        run_dir.chmod(0o755)


def _no_read_only_dir() -> str | None:
    if _running_as_root() and not Path("/sys").is_dir():
        return "running as root without /sys: no directory here refuses root's files"
    return None


def _trainer_parts():
    model = _mlp()
    reg = GraphSpectralRegularizer(model, {"fc1": 4})
    return model, reg, torch.optim.SGD(model.parameters(), lr=0.1)


def _trainer(**options):
    model, reg, optimizer = _trainer_parts()
    settings = dict(verbose=False)
    if not options.get("learn"):  # a learning run's length is its schedule's
        settings["max_steps"] = 2
    settings.update(options)
    return GSRTrainer(model, reg, optimizer, nn.functional.mse_loss, **settings)


# ---- files --------------------------------------------------------------------------------------

def _write(tmp: Path, name: str, content: bytes) -> Path:
    path = tmp / name
    path.write_bytes(content)
    return path


def _idx_header(type_code: int, dims: list[int]) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big", signed=True)
                                                          for d in dims)


class _RunsCode:
    """Unpickling this runs ``exec``: a payload a loader must refuse before calling it."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('the pickle payload ran')",))


def _mnist_pickle_splits(n: int = 2):
    images = np.zeros((n, 784), np.float32)
    labels = np.zeros(n, np.int64)
    return ((images, labels), (images, labels), (images, labels))


def _mnist_dir(tmp: Path, train_labels: int = 2) -> Path:
    root = tmp / "mnist"
    root.mkdir()
    files = {
        "train-images-idx3-ubyte": _idx_header(8, [2, 28, 28]) + bytes(2 * 784),
        "train-labels-idx1-ubyte": _idx_header(8, [train_labels]) + bytes(train_labels),
        "t10k-images-idx3-ubyte": _idx_header(8, [1, 28, 28]) + bytes(784),
        "t10k-labels-idx1-ubyte": _idx_header(8, [1]) + bytes(1),
    }
    for name, content in files.items():
        _write(root, name, content)
    return root


def _h5ad(tmp: Path, name: str, matrix: np.ndarray) -> Path:
    import anndata

    path = tmp / name
    anndata.AnnData(matrix.astype(np.float32)).write_h5ad(path)
    return path


def _truncated_h5ad(tmp: Path) -> Path:
    full = _h5ad(tmp, "full.h5ad", np.ones((3, 2)))
    return _write(tmp, "cut.h5ad", full.read_bytes()[: full.stat().st_size // 2])


def _adata(matrix=None, **obs):
    import anndata
    import pandas as pd

    matrix = np.arange(12, dtype=np.float32).reshape(4, 3) if matrix is None else matrix
    adata = anndata.AnnData(matrix.astype(np.float32))
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    adata.obs = pd.DataFrame(obs, index=[f"c{i}" for i in range(adata.n_obs)]) if obs else \
        adata.obs
    return adata


# --------------------------------------------------------------------------------------------
# graphs
# --------------------------------------------------------------------------------------------

S = "graphs"
C = "check_graph(data)"
_add(S, C, "edge (0, 1) listed in one direction only",
     lambda tmp: graphs.check_graph(_data([[0], [1]])),
     ValueError, r"^graph: edge \(0, 1\) has no reverse edge \(1, 0\); store both directions")
_add(S, C, "asymmetric weights: w(0, 1) = 1, w(1, 0) = 2",
     lambda tmp: graphs.check_graph(_data(PAIR, [1.0, 2.0])),
     ValueError, r"^graph: edge \(0, 1\) has weight 1\.0 but its reverse \(1, 0\) has weight "
                 r"2\.0; edge weights must be symmetric")
_add(S, C, "negative edge weight",
     lambda tmp: graphs.check_graph(_data(PAIR, [-1.0, -1.0])),
     ValueError, r"^graph: edge_weight must be > 0, got -1\.0 on edge \(0, 1\)")
_add(S, C, "zero edge weight",
     lambda tmp: graphs.check_graph(_data(PAIR, [0.0, 0.0])),
     ValueError, r"^graph: edge_weight must be > 0, got 0\.0")
_add(S, C, "NaN edge weight",
     lambda tmp: graphs.check_graph(_data(PAIR, [NAN, NAN])),
     ValueError, r"^graph: edge_weight must be finite, got 2 NaN and 0 Inf values")
_add(S, C, "Inf edge weight",
     lambda tmp: graphs.check_graph(_data(PAIR, [INF, INF])),
     ValueError, r"^graph: edge_weight must be finite, got 0 NaN and 2 Inf values")
_add(S, C, "self-loop (1, 1)",
     lambda tmp: graphs.check_graph(_data([[1], [1]])),
     ValueError, r"graph has a self-loop at node 1; a neuron graph has no self-loops")
_add(S, C, "entry (0, 1) listed twice",
     lambda tmp: graphs.check_graph(_data([[0, 0, 1], [1, 1, 0]])),
     ValueError, r"^graph: edge_index has the entry \(0, 1\) more than once; coalesce it")
_add(S, C, "node index 2 in a 2-node graph",
     lambda tmp: graphs.check_graph(_data([[0, 2], [2, 0]])),
     ValueError, r"^graph: edge_index contains node 2, but the graph has 2 nodes "
                 r"\(indices in \[0, 2\)\)")
_add(S, C, "negative node index",
     lambda tmp: graphs.check_graph(_data([[0, -1], [-1, 0]])),
     ValueError, r"^graph: edge_index contains node -1, but the graph has 2 nodes")
_add(S, C, "edge_index of dtype int32",
     lambda tmp: graphs.check_graph(Data(edge_index=torch.tensor(PAIR, dtype=torch.int32),
                                         num_nodes=2)),
     ValueError, r"^graph: edge_index must have dtype torch\.int64, got .*int32")
_add(S, C, "edge_index of shape [3, 2]",
     lambda tmp: graphs.check_graph(Data(edge_index=torch.zeros(3, 2, dtype=torch.long),
                                         num_nodes=2)),
     ValueError, r"^graph: edge_index must have shape \[2, E\], got tensor of shape "
                 r"\(3, 2\)")
_add(S, C, "no edge_index",
     lambda tmp: graphs.check_graph(Data(num_nodes=2)),
     ValueError, r"graph has no edge_index; a graph with no edges has an empty \[2, 0\] one")
_add(S, C, "integer edge_weight",
     lambda tmp: graphs.check_graph(_data(PAIR, [1, 1])),
     ValueError, r"^graph: edge_weight must be a floating-point tensor, got .*int64")
_add(S, C, "one weight for two edge entries",
     lambda tmp: graphs.check_graph(_data(PAIR, [1.0])),
     ValueError, r"^graph: edge_weight must have shape \[2\] \(one weight per column of "
                 r"edge_index\)")
_add(S, C, "pos of shape [2, 3]",
     lambda tmp: graphs.check_graph(_data(PAIR, pos=torch.zeros(2, 3))),
     ValueError, r"^graph: pos must have shape \[2, 2\], got tensor of shape \(2, 3\)")
_add(S, C, "NaN in pos",
     lambda tmp: graphs.check_graph(_data(PAIR, pos=torch.full((2, 2), NAN))),
     ValueError, r"^graph: pos must be finite, got 4 NaN and 0 Inf values")
_add(S, "check_graph(data, num_nodes=6)", "a 5-node graph where 6 nodes are expected",
     lambda tmp: graphs.check_graph(graphs.ring(5), num_nodes=6),
     ValueError, r"graph has 5 nodes but 6 were expected")
_add(S, C, "a dict instead of a Data",
     lambda tmp: graphs.check_graph({"edge_index": torch.tensor(PAIR)}),
     TypeError, r"graph must be a torch_geometric\.data\.Data, got \{'edge_index'")
_accepted(S, C, "the empty graph: 3 nodes, zero edges",
          lambda tmp: graphs.check_graph(_empty_graph(3)),
          lambda g: _expect(g.num_nodes == 3 and g.edge_index.shape == (2, 0)),
          "valid: returned unchanged (its Laplacian is 0, so its penalty is 0)")

_add(S, "grid(height, width)", "height = 0",
     lambda tmp: graphs.grid(0, 3), ValueError, r"height must be >= 1, got 0")
_add(S, "grid(height, width)", "height = 2.0 (a float)",
     lambda tmp: graphs.grid(2.0, 3), TypeError, r"height must be an int, got 2\.0")
_add(S, "grid(2, 3, neighbours)", "neighbours = 6",
     lambda tmp: graphs.grid(2, 3, neighbours=6),
     ValueError, r"neighbours must be one of \(4, 8\), got 6")
_add(S, "torus(height, width)", "width = -1",
     lambda tmp: graphs.torus(4, -1), ValueError, r"width must be >= 1, got -1")
_add(S, "ring(n)", "n = 2 (a ring needs 3 nodes)",
     lambda tmp: graphs.ring(2), ValueError, r"n must be >= 3, got 2")
_add(S, "line(n)", "n = 0",
     lambda tmp: graphs.line(0), ValueError, r"n must be >= 1, got 0")
_add(S, "star(n)", "n = True (a bool)",
     lambda tmp: graphs.star(True), TypeError, r"n must be an int, got True")
_add(S, "balanced_tree(branching, depth)", "branching = 0",
     lambda tmp: graphs.balanced_tree(0, 2), ValueError, r"branching must be >= 1, got 0")
_add(S, "balanced_tree(branching, depth)", "depth = -1",
     lambda tmp: graphs.balanced_tree(2, -1), ValueError, r"depth must be >= 0, got -1")
_add(S, "copies(graph, k)", "k = 0",
     lambda tmp: graphs.copies(graphs.ring(3), 0), ValueError, r"k must be >= 1, got 0")
_add(S, "copies(graph, k)", "graph given as the string 'ring'",
     lambda tmp: graphs.copies("ring", 2),
     TypeError, r"graph must be a torch_geometric\.data\.Data, got 'ring'")
_add(S, "disjoint_union(graphs)", "an empty list",
     lambda tmp: graphs.disjoint_union([]),
     ValueError, r"graphs must contain at least one Data, got an empty sequence")
_add(S, "disjoint_union(graphs)", "an int among the graphs",
     lambda tmp: graphs.disjoint_union([graphs.ring(3), 3]),
     TypeError, r"^graphs\[1\] must be a torch_geometric\.data\.Data, got 3")

C = "from_edge_index(edge_index, ...)"
_add(S, C, "edge_index of shape [3, 2]",
     lambda tmp: graphs.from_edge_index(torch.zeros(3, 2, dtype=torch.long)),
     ValueError, r"edge_index must have shape \[2, E\]")
_add(S, C, "floating-point edge_index",
     lambda tmp: graphs.from_edge_index(torch.zeros(2, 2)),
     ValueError, r"edge_index must have an integer dtype, got .*float32")
_add(S, C, "a nested list instead of a tensor",
     lambda tmp: graphs.from_edge_index(PAIR),
     TypeError, r"edge_index must be a torch\.Tensor, got \[\[0, 1\], \[1, 0\]\]")
_add(S, C, "negative edge weight",
     lambda tmp: graphs.from_edge_index(torch.tensor(PAIR), torch.tensor([-1.0, -1.0])),
     ValueError, r"edge_weight must be > 0, got -1\.0 on edge \(0, 1\); a weight of 0 is no "
                 r"edge: drop the entry")
_add(S, C, "NaN edge weight",
     lambda tmp: graphs.from_edge_index(torch.tensor(PAIR), torch.tensor([NAN, 1.0])),
     ValueError, r"edge_weight must be finite, got 1 NaN and 0 Inf values")
_add(S, C, "Inf edge weight",
     lambda tmp: graphs.from_edge_index(torch.tensor(PAIR), torch.tensor([INF, 1.0])),
     ValueError, r"edge_weight must be finite, got 0 NaN and 1 Inf values")
_add(S, C, "the two directions of (0, 1) carry weights 1 and 2",
     lambda tmp: graphs.from_edge_index(torch.tensor(PAIR), torch.tensor([1.0, 2.0])),
     ValueError, r"edge_weight gives the pair \(0, 1\) two different weights, 1\.0 and 2\.0.*"
                 r"symmetrise the weights first")
_add(S, C, "one weight for two edges",
     lambda tmp: graphs.from_edge_index(torch.tensor(PAIR), torch.tensor([1.0])),
     ValueError, r"edge_weight must have one entry per column of edge_index \(2\), got 1")
_add(S, "from_edge_index(edge_index, num_nodes=1)", "node 1 with num_nodes = 1",
     lambda tmp: graphs.from_edge_index(torch.tensor(PAIR), num_nodes=1),
     ValueError, r"edge_index contains node 1, but node indices must lie in \[0, 1\)")
_add(S, "from_edge_index(edge_index, num_nodes=-1)", "num_nodes = -1",
     lambda tmp: graphs.from_edge_index(torch.empty(2, 0, dtype=torch.long), num_nodes=-1),
     ValueError, r"num_nodes must be >= 0, got -1")
_add(S, "from_edge_index(edge_index, pos=pos)", "pos of shape [2, 3]",
     lambda tmp: graphs.from_edge_index(torch.tensor(PAIR), pos=torch.zeros(2, 3)),
     ValueError, r"pos must have shape \[num_nodes, 2\], got tensor of shape \(2, 3\)")
_add(S, "from_edge_index(edge_index, num_nodes=2, pos=pos)", "pos with 3 rows for 2 nodes",
     lambda tmp: graphs.from_edge_index(torch.tensor(PAIR), num_nodes=2, pos=torch.zeros(3, 2)),
     ValueError, r"pos must have 2 rows \(one per node\), got tensor of shape \(3, 2\)")
_add(S, "from_edge_index(edge_index, pos=pos)", "NaN in pos",
     lambda tmp: graphs.from_edge_index(torch.tensor(PAIR), pos=torch.full((2, 2), NAN)),
     ValueError, r"pos must be finite, got 4 NaN")
_accepted(S, C, "a self-loop (0, 0) beside the edge (0, 1)",
          lambda tmp: graphs.from_edge_index(torch.tensor([[0, 0], [0, 1]])),
          lambda g: _expect(g.edge_index.tolist() == PAIR),
          "accepted: self-loops are dropped (documented), the graph keeps (0, 1) and (1, 0)")
_accepted(S, C, "edge (0, 1) given in one direction only",
          lambda tmp: graphs.from_edge_index(torch.tensor([[0], [1]])),
          lambda g: _expect(g.edge_index.tolist() == PAIR),
          "accepted: the reverse edge (1, 0) is added with the same weight (documented)")

C = "from_networkx(G)"
_add(S, C, "a DiGraph",
     lambda tmp: graphs.from_networkx(nx.DiGraph([(0, 1)])),
     ValueError, r"G must be undirected, got a DiGraph; convert it with G\.to_undirected\(\)")
_add(S, C, "a MultiGraph",
     lambda tmp: graphs.from_networkx(nx.MultiGraph([(0, 1)])),
     ValueError, r"G must be a simple graph, got a MultiGraph")
_add(S, C, "a self-loop at node 0",
     lambda tmp: graphs.from_networkx(nx.Graph([(0, 0)])),
     ValueError, r"G must have no self-loops, got one at node 0")
_add(S, C, "edge weight -2",
     lambda tmp: graphs.from_networkx(nx.Graph([(0, 1, {"weight": -2})])),
     ValueError, r"edge \(0, 1\) has weight=-2; edge weights must be finite numbers > 0")
_add(S, C, "edge weight 'heavy' (a string)",
     lambda tmp: graphs.from_networkx(nx.Graph([(0, 1, {"weight": "heavy"})])),
     ValueError, r"edge \(0, 1\) has weight='heavy'; edge weights must be finite numbers > 0")
_add(S, C, "edge weight NaN",
     lambda tmp: graphs.from_networkx(nx.Graph([(0, 1, {"weight": NAN})])),
     ValueError, r"edge \(0, 1\) has weight=nan; edge weights must be finite numbers")
_add(S, "from_networkx(G, nodelist)", "nodelist missing a node",
     lambda tmp: graphs.from_networkx(nx.path_graph(3), nodelist=[0, 1]),
     ValueError, r"nodelist must list every node of G, but 2 is missing")
_add(S, "from_networkx(G, nodelist)", "nodelist naming a node not in G",
     lambda tmp: graphs.from_networkx(nx.path_graph(3), nodelist=[0, 1, 2, 7]),
     ValueError, r"nodelist contains 7, which is not a node of G")
_add(S, "from_networkx(G, nodelist)", "nodelist repeating a node",
     lambda tmp: graphs.from_networkx(nx.path_graph(3), nodelist=[0, 1, 1]),
     ValueError, r"nodelist must list each node once, got 1 twice")
_add(S, C, "node attribute pos with 3 numbers",
     lambda tmp: graphs.from_networkx(_nx_with_pos((0, 0, 0))),
     ValueError, r"node attribute 'pos' must hold 2 numbers per node")
_add(S, C, "a dict of lists instead of a graph",
     lambda tmp: graphs.from_networkx({0: [1]}),
     TypeError, r"G must be a networkx\.Graph, got \{0: \[1\]\}")
_accepted(S, C, "an empty networkx.Graph",
          lambda tmp: graphs.from_networkx(nx.Graph()),
          lambda g: _expect(g.num_nodes == 0 and g.edge_index.shape == (2, 0)),
          "accepted: a graph with 0 nodes (a regularizer refuses it: a layer has >= 1 neuron)")
_add(S, "to_networkx(data)", "a networkx graph instead of a Data",
     lambda tmp: graphs.to_networkx(nx.path_graph(2)),
     TypeError, r"graph must be a torch_geometric\.data\.Data, got <networkx")
C = "write_graphml(graph, path, node_attributes)"
_add(S, C, "node attribute with 2 values for 4 nodes",
     lambda tmp: graphs.write_graphml(graphs.ring(4), tmp / "g.graphml", {"module": [0, 1]}),
     ValueError, r"node_attributes\['module'\] must have one value per node \(4\), got 2")
_add(S, C, "node attribute 'x' (the positions' key)",
     lambda tmp: graphs.write_graphml(graphs.ring(4), tmp / "g.graphml", {"x": [0, 1, 2, 3]}),
     ValueError, r"node_attributes must not use the key 'x': the graph itself is written under")
_add(S, C, "a list value GraphML cannot store",
     lambda tmp: graphs.write_graphml(graphs.ring(4), tmp / "g.graphml",
                                      {"genes": [["a"], ["b"], ["c"], ["d"]]}),
     TypeError, r"node_attributes\['genes'\]\[0\] must be a str, int, float or bool")
_add(S, "read_graphml(path)", "a directed GraphML file",
     lambda tmp: graphs.read_graphml(_directed_graphml(tmp)),
     ValueError, r"G must be undirected, got a DiGraph")


# --------------------------------------------------------------------------------------------
# spectral
# --------------------------------------------------------------------------------------------

S = "spectral"
C = "laplacian(data, normalization)"
_add(S, C, "normalization = 'rw'",
     lambda tmp: spectral.laplacian(graphs.ring(4), normalization="rw"),
     ValueError, r"normalization is 'rw': the random-walk Laplacian is not symmetric "
                 r"\(L = I - D\^-1 W\) and its quadratic form is indefinite")
_add(S, C, "normalization = 'symm' (a typo)",
     lambda tmp: spectral.laplacian(graphs.ring(4), normalization="symm"),
     ValueError, r"normalization must be one of \(None, 'sym'\), got 'symm'")
C = "laplacian(data)"
_add(S, C, "a tensor instead of a Data",
     lambda tmp: spectral.laplacian(torch.zeros(3)),
     TypeError, r"data must be a torch_geometric\.data\.Data, got tensor")
_add(S, C, "num_nodes = 0",
     lambda tmp: spectral.laplacian(_empty_graph(0)),
     ValueError, r"data\.num_nodes must be >= 1, got 0")
_add(S, C, "floating-point edge_index",
     lambda tmp: spectral.laplacian(Data(edge_index=torch.tensor(PAIR).float(), num_nodes=2)),
     ValueError, r"edge_index must have dtype torch\.int64, got .*float32")
_add(S, C, "node 5 in a 2-node graph",
     lambda tmp: spectral.laplacian(_data([[0, 5], [5, 0]])),
     ValueError, r"edge_index contains node 5, but the graph has 2 nodes \(indices in \[0, 2\)\)")
_add(S, C, "edge (0, 1) listed in one direction only",
     lambda tmp: spectral.laplacian(_data([[0], [1]])),
     ValueError, r"edge \(0, 1\) has no reverse edge \(1, 0\); store both directions of every "
                 r"undirected edge")
_add(S, C, "asymmetric weights 1 and 2",
     lambda tmp: spectral.laplacian(_data(PAIR, [1.0, 2.0])),
     ValueError, r"edge \(0, 1\) has weight 1\.0 but its reverse \(1, 0\) has weight 2\.0; edge "
                 r"weights must be symmetric")
_add(S, C, "NaN edge weight",
     lambda tmp: spectral.laplacian(_data(PAIR, [NAN, 1.0])),
     ValueError, r"edge_weight must be finite, got 1 NaN and 0 Inf values")
_add(S, C, "Inf edge weight",
     lambda tmp: spectral.laplacian(_data(PAIR, [INF, INF])),
     ValueError, r"edge_weight must be finite, got 0 NaN and 2 Inf values")
_add(S, C, "negative edge weight",
     lambda tmp: spectral.laplacian(_data(PAIR, [-1.0, -1.0])),
     ValueError, r"edge_weight must be > 0, got -1\.0 on edge \(0, 1\)")
_add(S, C, "integer edge_weight",
     lambda tmp: spectral.laplacian(_data(PAIR, [1, 1])),
     ValueError, r"edge_weight must be a floating-point tensor, got .*int64")
_add(S, "laplacian(data, dense=True)", "a self-loop (0, 0) beside the edge (0, 1)",
     lambda tmp: spectral.laplacian(_data([[0, 0, 1], [0, 1, 0]]), dense=True),
     ValueError, r"data has a self-loop at node 0; a neuron graph has no self-loops")

C = "quadratic_form(x, data)"
_add(S, C, "x with 5 features for a 4-node graph",
     lambda tmp: spectral.quadratic_form(torch.randn(3, 5), graphs.ring(4)),
     ValueError, r"x has 5 features in dimension 1 but the graph has 4 nodes")
_add(S, C, "1-D x",
     lambda tmp: spectral.quadratic_form(torch.randn(4), graphs.ring(4)),
     ValueError, r"x must have at least 2 dimensions, got tensor of shape \(4,\)")
_add(S, C, "integer x",
     lambda tmp: spectral.quadratic_form(torch.ones(3, 4, dtype=torch.long), graphs.ring(4)),
     ValueError, r"x must be a floating-point tensor, got .*int64")
_add(S, C, "a nested list instead of a tensor",
     lambda tmp: spectral.quadratic_form([[1.0, 2.0, 3.0, 4.0]], graphs.ring(4)),
     TypeError, r"x must be a torch\.Tensor, got \[\[1\.0")
_add(S, "quadratic_form(x, data, method)", "method = 'fast'",
     lambda tmp: spectral.quadratic_form(torch.randn(2, 4), graphs.ring(4), method="fast"),
     ValueError, r"method must be one of \('auto', 'dense', 'edge', 'sparse'\), got 'fast'")
_accepted(S, C, "the empty graph: 4 nodes, zero edges",
          lambda tmp: spectral.quadratic_form(torch.randn(3, 4), _empty_graph(4)),
          lambda q: _expect(q.tolist() == [0.0, 0.0, 0.0]),
          "accepted: every sample's form is exactly 0")
_accepted(S, C, "NaN activations",
          lambda tmp: spectral.quadratic_form(torch.full((2, 4), NAN), graphs.ring(4)),
          lambda q: _expect(bool(torch.isnan(q).all())),
          "NaN comes back, unchecked: this is the per-step hot path; "
          "GraphSpectralRegularizer checks its penalty and raises (see Regularizer)")
C = "LaplacianOperator(data)(x)"
_add(S, C, "x with 5 features for a 4-node graph",
     lambda tmp: spectral.LaplacianOperator(graphs.ring(4))(torch.randn(2, 5)),
     ValueError, r"x has 5 features in dimension 1 but the graph has 4 nodes")
_add(S, "LaplacianOperator(data, method)", "method = 'fast'",
     lambda tmp: spectral.LaplacianOperator(graphs.ring(4), method="fast"),
     ValueError, r"method must be one of \('auto', 'dense', 'edge', 'sparse'\), got 'fast'")
_add(S, "LaplacianOperator(data)(x, method)", "method = 'blas' at call time",
     lambda tmp: spectral.LaplacianOperator(graphs.ring(4))(torch.randn(2, 4), method="blas"),
     ValueError, r"method must be one of .*got 'blas'")
_add(S, C, "x on another device than the operator ('meta')",
     lambda tmp: spectral.LaplacianOperator(graphs.ring(4))(torch.randn(2, 4, device="meta")),
     ValueError, r"x is on meta but the LaplacianOperator is on cpu; move it once with "
                 r"op\.to\('meta'\)")
_add(S, "LaplacianOperator(data, normalization)", "normalization = 'rw'",
     lambda tmp: spectral.LaplacianOperator(graphs.ring(4), normalization="rw"),
     ValueError, r"normalization is 'rw': the random-walk Laplacian is not symmetric")
_add(S, "eigenbasis(data, k)", "k = 9 for a 4-node graph",
     lambda tmp: spectral.eigenbasis(graphs.ring(4), k=9),
     ValueError, r"k must be <= 4, got 9")
_add(S, "connected_components(data)", "None",
     lambda tmp: spectral.connected_components(None),
     TypeError, r"data must be a torch_geometric\.data\.Data, got None")


# --------------------------------------------------------------------------------------------
# regularizer
# --------------------------------------------------------------------------------------------

S = "regularizer"
C = "GraphSpectralRegularizer(model, graphs)"
_add(S, "reg = GraphSpectralRegularizer(model, graphs); model(x); reg.penalty()",
     "a 5-node graph on a 4-feature layer",
     lambda tmp: _forward_through(_mlp(), "fc1", graphs.ring(5), torch.randn(2, 3)),
     ValueError, r"graph for layer 'fc1' has 5 nodes but the layer outputs 4 features "
                 r"\(shape \(2, 4\)\)")
_add(S, C, "edge (0, 1) listed in one direction only",
     lambda tmp: _regularize(_data([[0], [1]], num_nodes=4)),
     ValueError, r"graph for layer 'fc1': edge \(0, 1\) has no reverse edge \(1, 0\)")
_add(S, C, "asymmetric weights 1 and 2",
     lambda tmp: _regularize(_data(PAIR, [1.0, 2.0], num_nodes=4)),
     ValueError, r"graph for layer 'fc1': edge \(0, 1\) has weight 1\.0 but its reverse")
_add(S, C, "negative edge weight",
     lambda tmp: _regularize(_data(PAIR, [-1.0, -1.0], num_nodes=4)),
     ValueError, r"graph for layer 'fc1': edge_weight must be > 0, got -1\.0")
_add(S, C, "NaN edge weight",
     lambda tmp: _regularize(_data(PAIR, [NAN, NAN], num_nodes=4)),
     ValueError, r"graph for layer 'fc1': edge_weight must be finite, got 2 NaN")
_add(S, C, "Inf edge weight",
     lambda tmp: _regularize(_data(PAIR, [INF, INF], num_nodes=4)),
     ValueError, r"graph for layer 'fc1': edge_weight must be finite, got 0 NaN and 2 Inf")
_add(S, C, "self-loop (2, 2)",
     lambda tmp: _regularize(_data([[2], [2]], num_nodes=4)),
     ValueError, r"graph for layer 'fc1' has a self-loop at node 2")
_add(S, C, "unknown layer 'fc' (close to 'fc1')",
     lambda tmp: GraphSpectralRegularizer(_mlp(), {"fc": graphs.ring(4)}),
     ValueError, r"model has no layer named 'fc'; closest names: 'fc1'")
_add(S, C, "unknown layer 'decoder' (nothing close)",
     lambda tmp: GraphSpectralRegularizer(_mlp(), {"decoder": graphs.ring(4)}),
     ValueError, r"model has no layer named 'decoder'; layers: 'fc1', 'act', 'out'")
_add(S, C, "a module that is not part of the model",
     lambda tmp: GraphSpectralRegularizer(_mlp(), {nn.Linear(2, 2): graphs.ring(4)}),
     ValueError, r"module Linear is not a submodule of the model")
_add(S, C, "layer key 3 (an int)",
     lambda tmp: GraphSpectralRegularizer(_mlp(), {3: graphs.ring(4)}),
     TypeError, r"layer keys must be names or modules, got 3")
_add(S, C, "an empty mapping",
     lambda tmp: GraphSpectralRegularizer(_mlp(), {}),
     ValueError, r"graphs must be a non-empty mapping from layer name to Data, got \{\}")
_add(S, C, "a list of graphs instead of a mapping",
     lambda tmp: GraphSpectralRegularizer(_mlp(), [graphs.ring(4)]),
     ValueError, r"graphs must be a non-empty mapping from layer name to Data, got \[")
_add(S, C, "model given as a string",
     lambda tmp: GraphSpectralRegularizer("model", {"fc1": graphs.ring(4)}),
     TypeError, r"model must be a torch\.nn\.Module, got 'model'")
_add(S, C, "graph given as the string 'ring'",
     lambda tmp: _regularize("ring"),
     TypeError, r"graph for layer 'fc1' must be a torch_geometric Data, got 'ring'")
_add(S, C, "layer width 0 instead of a graph",
     lambda tmp: _regularize(0),
     ValueError, r"graph for layer 'fc1' must be >= 1, got 0")
_add(S, "reg = GraphSpectralRegularizer(model, {'lstm': g}); model(x)",
     "a layer whose output is a tuple (an LSTM)",
     lambda tmp: _forward_through(_LSTMLayer(), "lstm", graphs.ring(4), torch.randn(2, 5, 3)),
     ValueError, r"layer 'lstm' must output a tensor \[B, N\] or \[B, C, \.\.\.\] to be "
                 r"captured, got a tuple")
_add(S, "reg = GraphSpectralRegularizer(model, {'total': 1}); model(x)",
     "a layer whose output is 1-D [B]",
     lambda tmp: _forward_through(_VectorModel(), "total", 1, torch.randn(5, 3)),
     ValueError, r"layer 'total' must output \[B, N\] or \[B, C, \.\.\.\], got tensor of shape "
                 r"\(5,\)")
_add(S, "reg.penalty()", "NaN activations",
     lambda tmp: _penalty_with_bias(NAN),
     ValueError, r"penalty of layer 'fc1' is nan: the layer's activations hold 8 NaN/Inf "
                 r"values out of 8")
_add(S, "reg.penalty()", "Inf activations",
     lambda tmp: _penalty_with_bias(INF),
     ValueError, r"penalty of layer 'fc1' is nan: the layer's activations hold 8 NaN/Inf")
_add(S, "reg.penalty()", "finite activations of 1e30 whose form overflows",
     lambda tmp: _penalty_with_bias(0.0, spread=1e30),
     ValueError, r"penalty of layer 'fc1' is inf \(activations are finite but too large: the "
                 r"quadratic form overflowed\)")
_add(S, "reg.penalty()", "no forward pass since the last step()",
     lambda tmp: _regularize(graphs.ring(4))[1].penalty(),
     RuntimeError, r"no activations captured for layer 'fc1' since the last step\(\): run a "
                   r"forward pass")
_add(S, "GraphSpectralRegularizer(model, graphs, normalization)", "normalization = 'rw'",
     lambda tmp: _regularize(graphs.ring(4), normalization="rw"),
     ValueError, r"normalization for layer 'fc1' is 'rw': the random-walk Laplacian is not "
                 r"symmetric")
_add(S, "GraphSpectralRegularizer(model, graphs, normalization)", "normalization = 'l2'",
     lambda tmp: _regularize(graphs.ring(4), normalization="l2"),
     ValueError, r"normalization for layer 'fc1' must be one of \(None, 'sym'\), got 'l2'")
_add(S, "GraphSpectralRegularizer(model, graphs, weight)", "weight = -1",
     lambda tmp: _regularize(graphs.ring(4), weight=-1),
     ValueError, r"weight for layer 'fc1' must be finite and >= 0, got -1\.0")
_add(S, "GraphSpectralRegularizer(model, graphs, weight)", "weight = NaN",
     lambda tmp: _regularize(graphs.ring(4), weight=NAN),
     ValueError, r"weight for layer 'fc1' must be finite and >= 0, got nan")
_add(S, "GraphSpectralRegularizer(model, graphs, weight)", "weight = '1e-2' (a string)",
     lambda tmp: _regularize(graphs.ring(4), weight="1e-2"),
     TypeError, r"weight for layer 'fc1' must be a non-negative number, a WeightSchedule or a "
                r"callable of the step, got '1e-2'")
_add(S, "GraphSpectralRegularizer(model, graphs, weight)",
     "weight = {'fc_1': 1e-3} (a misspelt layer)",
     lambda tmp: _regularize(graphs.ring(4), weight={"fc_1": 1e-3}),
     ValueError, r"weight has an entry for 'fc_1', which is not a regularized layer; closest: "
                 r"'fc1'")
_add(S, "GraphSpectralRegularizer(model, graphs, weight)", "weight = {} (no entry for 'fc1')",
     lambda tmp: _regularize(graphs.ring(4), weight={}),
     ValueError, r"weight has no entry for layers \['fc1'\]: a mapping must give every "
                 r"regularized layer")
_add(S, "GraphSpectralRegularizer(model, graphs, rayleigh)", "rayleigh = 'no' (a string)",
     lambda tmp: _regularize(graphs.ring(4), rayleigh="no"),
     TypeError, r"rayleigh for layer 'fc1' must be True or False, got 'no'")
_add(S, "GraphSpectralRegularizer(model, graphs, batch_mean_weight)", "batch_mean_weight = -1",
     lambda tmp: _regularize(graphs.ring(4), batch_mean_weight=-1),
     ValueError, r"batch_mean_weight for layer 'fc1' must be finite and >= 0, got -1\.0")
_add(S, "GraphSpectralRegularizer(model, graphs, method)", "method = 'fastest'",
     lambda tmp: _regularize(graphs.ring(4), method="fastest"),
     ValueError, r"method must be one of \('auto', 'dense', 'edge', 'sparse'\), got 'fastest'")
_add(S, "reg = GraphSpectralRegularizer(model, graphs); model(x); reg.penalty()",
     "an output [2, 4, 4] with the graph's 4 nodes on axes 1 and 2, node_dim not given",
     lambda tmp: _tokens_penalty(torch.randn(2, 4, 3)),
     ValueError, r"layer 'fc1' outputs shape \(2, 4, 4\), which has the graph's 4 nodes on "
                 r"axes \[1, 2\]: pass node_dim")
_add(S, "reg = GraphSpectralRegularizer(model, graphs); model(x); reg.penalty()",
     "a [B, T, D] output [2, 5, 4] with node_dim not given",
     lambda tmp: _tokens_penalty(torch.randn(2, 5, 3)),
     ValueError, r"graph for layer 'fc1' has 4 nodes but the layer outputs 5 features \(shape "
                 r"\(2, 5, 4\)\); its axis 2 has 4 entries: if the neurons are there, pass "
                 r"node_dim=-1")
_add(S, "GraphSpectralRegularizer(model, graphs, node_dim)", "node_dim = 0 (the batch axis)",
     lambda tmp: _regularize(graphs.ring(4), node_dim=0),
     ValueError, r"node_dim for layer 'fc1' must not be 0 \(axis 0 is the batch axis\)")
_add(S, "GraphSpectralRegularizer(model, graphs, node_dim)", "node_dim = 'last' (a string)",
     lambda tmp: _regularize(graphs.ring(4), node_dim="last"),
     TypeError, r"node_dim for layer 'fc1' must be an int, got 'last'")
_add(S, "GraphSpectralRegularizer(model, graphs, node_dim); model(x)",
     "node_dim = 3 for a 3-D output [2, 5, 4]",
     lambda tmp: _tokens_penalty(torch.randn(2, 5, 3), node_dim=3),
     ValueError, r"node_dim=3 is not a neuron axis of the output of layer 'fc1' \(tensor of "
                 r"shape \(2, 5, 4\)")
_add(S, "reg.penalty(mask)", "a [2, 4] mask for an output [2, 5, 4] with node_dim=-1",
     lambda tmp: _tokens_penalty(torch.randn(2, 5, 3), torch.ones(2, 4, dtype=torch.bool),
                                 node_dim=-1),
     ValueError, r"mask for layer 'fc1' must have the shape of the sample axes \(2, 5\) \(the "
                 r"output shape \(2, 5, 4\) without node_dim=-1\), got shape \(2, 4\)")
_add(S, "reg.penalty(mask)", "a float mask",
     lambda tmp: _tokens_penalty(torch.randn(2, 5, 3), torch.ones(2, 5), node_dim=-1),
     ValueError, r"mask for layer 'fc1' must be a boolean \(or integer 0/1\) tensor, got "
                 r"tensor of shape \(2, 5\) and dtype torch\.float32")
_add(S, "reg.penalty(mask)", "a mask that keeps no position",
     lambda tmp: _tokens_penalty(torch.randn(2, 5, 3), torch.zeros(2, 5, dtype=torch.bool),
                                 node_dim=-1),
     ValueError, r"mask for layer 'fc1' keeps no position")
_add(S, "reg.penalty(mask)", "a mask given as a list",
     lambda tmp: _tokens_penalty(torch.randn(2, 5, 3), [[1] * 5] * 2, node_dim=-1),
     TypeError, r"mask for layer 'fc1' must be a boolean torch\.Tensor over the sample axes, "
                r"got \[\[1")
_add(S, "reg.set_graph(layer, graph)", "a 5-node graph for a 4-node layer",
     lambda tmp: _regularize(graphs.ring(4))[1].set_graph("fc1", graphs.ring(5)),
     ValueError, r"new graph for layer 'fc1' has 5 nodes but the layer has 4")
_add(S, "reg.set_graph(layer, graph)", "a layer that is not regularized",
     lambda tmp: _regularize(4)[1].set_graph("out", graphs.ring(4)),
     ValueError, r"layer 'out' is not regularized; regularized layers: \['fc1'\]")
_add(S, "reg.load_state_dict(state)", "the state of a regularizer of other layers",
     lambda tmp: _regularize(4)[1].load_state_dict({"step": 0, "layers": {"fc2": {}}}),
     ValueError, r"regularizer state does not match: missing layers \['fc1'\], unexpected "
                 r"layers \['fc2'\]")
_add(S, "GraphSpectralRegularizer(model, graphs, objective)", "objective = 'topoloss'",
     lambda tmp: _regularize(graphs.ring(4), objective="topoloss"),
     ValueError, r"objective for layer 'fc1' must be one of \('laplacian', "
                 r"'spatial_correlation', 'weight_smoothness'\), got 'topoloss'")
_add(S, "GraphSpectralRegularizer(model, graphs, objective)",
     "objective = {'fc_1': 'weight_smoothness'} (a misspelt layer)",
     lambda tmp: _regularize(graphs.ring(4), objective={"fc_1": "weight_smoothness"}),
     ValueError, r"objective has an entry for 'fc_1', which is not a regularized layer; "
                 r"closest: 'fc1'")
_add(S, "GraphSpectralRegularizer(model, graphs, objective, rayleigh)",
     "rayleigh=True with objective='spatial_correlation'",
     lambda tmp: _regularize(graphs.ring(4), objective="spatial_correlation", rayleigh=True),
     ValueError, r"layer 'fc1' has objective='spatial_correlation', which does not use "
                 r"rayleigh=True: rayleigh and batch_mean_weight apply to objective "
                 r"'laplacian' only")
_add(S, "GraphSpectralRegularizer(model, graphs, objective, batch_mean_weight)",
     "batch_mean_weight=0.1 with objective='weight_smoothness'",
     lambda tmp: _regularize(graphs.ring(4), objective="weight_smoothness",
                             batch_mean_weight=0.1),
     ValueError, r"layer 'fc1' has objective='weight_smoothness', which does not use "
                 r"batch_mean_weight=0\.1")
_add(S, "GraphSpectralRegularizer(model, graphs, num_pairs)",
     "num_pairs=10 with the default objective 'laplacian'",
     lambda tmp: _regularize(graphs.ring(4), num_pairs=10),
     ValueError, r"layer 'fc1' has objective='laplacian', which does not use num_pairs=10")
_add(S, "GraphSpectralRegularizer(model, graphs, objective, num_pairs)", "num_pairs = 0",
     lambda tmp: _regularize(graphs.ring(4), objective="spatial_correlation", num_pairs=0),
     ValueError, r"num_pairs for layer 'fc1' must be >= 1, got 0")
_add(S, "GraphSpectralRegularizer(model, {'act': g}, objective='weight_smoothness')",
     "a layer without weights (a ReLU)",
     lambda tmp: GraphSpectralRegularizer(_mlp(), {"act": graphs.ring(4)},
                                          objective="weight_smoothness"),
     ValueError, r"objective 'weight_smoothness' for layer 'act' reads the layer's incoming "
                 r"weights, a \.weight of at least 2 dimensions with one row per unit, but "
                 r"the module \(ReLU\) has no weight")
_add(S, "GraphSpectralRegularizer(model, graphs, objective='spatial_correlation')",
     "a graph of 2 units",
     lambda tmp: GraphSpectralRegularizer(
         nn.Sequential(OrderedDict(fc1=nn.Linear(3, 2))), {"fc1": graphs.line(2)},
         objective="spatial_correlation"),
     ValueError, r"objective 'spatial_correlation' for layer 'fc1' needs a graph of at least "
                 r"3 units \(2 pairs to correlate\), got 2")
_add(S, "reg = GraphSpectralRegularizer(model, graphs, objective='spatial_correlation'); "
        "model(x); reg.penalty()",
     "a batch of 1 sample",
     lambda tmp: _forward_and_penalty_of(graphs.ring(4), torch.randn(1, 3),
                                         objective="spatial_correlation"),
     ValueError, r"objective 'spatial_correlation' for layer 'fc1' correlates responses over "
                 r"samples and needs at least 2, got 1 \(after the mask\)")
_accepted(S, "reg.penalty()", "the empty graph (zero edges) on a 4-feature layer",
          lambda tmp: _forward_and_penalty(_empty_graph(4)),
          lambda p: _expect(float(p.detach()) == 0.0 and p.requires_grad),
          "accepted: the penalty is exactly 0 (a tensor in the autograd graph)")
_accepted(S, "reg.penalty()", "a width instead of a graph ({'fc1': 4})",
          lambda tmp: _forward_and_penalty(4),
          lambda p: _expect(float(p.detach()) == 0.0),
          "accepted: an edgeless 4-node graph, penalty 0 until set_graph installs one")


# --------------------------------------------------------------------------------------------
# learned graphs
# --------------------------------------------------------------------------------------------

S = "learn"
C = "knn_graph(activations, k)"
_add(S, C, "k = 0",
     lambda tmp: learn.knn_graph(_activations(), k=0),
     ValueError, r"k must be between 1 and num_neurons - 1 = 5 \(a neuron is not its own "
                 r"neighbour\), got k=0 for 6 neurons")
_add(S, C, "k = 6 for 6 neurons",
     lambda tmp: learn.knn_graph(_activations(), k=6),
     ValueError, r"k must be between 1 and num_neurons - 1 = 5 .*got k=6 for 6 neurons")
_add(S, C, "k = 2.0 (a float)",
     lambda tmp: learn.knn_graph(_activations(), k=2.0),
     TypeError, r"k must be an int, got 2\.0")
_add(S, C, "a single neuron (no k is possible)",
     lambda tmp: learn.knn_graph(_activations(neurons=1), k=1),
     ValueError, r"k must be between 1 and num_neurons - 1 = 0")
_add(S, "knn_graph(activations, metric='correlation')", "a constant neuron",
     lambda tmp: learn.knn_graph(_with_constant_neuron(), k=2, metric="correlation"),
     ValueError, r"metric='correlation' needs neurons that vary over the samples, but 1 of 6 "
                 r"neurons are constant \(indices \[5\]\)")
_add(S, "CoactivationGraph(standardize=True).from_activations(a)", "a constant neuron",
     lambda tmp: learn.CoactivationGraph(k=2, standardize=True).from_activations(
         _with_constant_neuron()),
     ValueError, r"standardize=True needs neurons that vary over the samples, but 1 of 6")
_accepted(S, "knn_graph(activations, metric='euclidean')", "a constant neuron",
          lambda tmp: learn.knn_graph(_with_constant_neuron(), k=2),
          lambda g: _expect(int(g.edge_index[0].bincount(minlength=6).min()) >= 2),
          "accepted: euclidean (and cosine) distances are defined for constant neurons")
_add(S, C, "one sample (activations [1, 6])",
     lambda tmp: learn.knn_graph(_activations(samples=1), k=2),
     ValueError, r"activations must be \[samples, neurons\] with at least 2 samples")
_add(S, C, "a NaN activation",
     lambda tmp: learn.knn_graph(_with_value(NAN), k=2),
     ValueError, r"activations must be finite, got 1 NaN and 0 Inf values")
_add(S, C, "an Inf activation",
     lambda tmp: learn.knn_graph(_with_value(INF), k=2),
     ValueError, r"activations must be finite, got 0 NaN and 1 Inf values")
_add(S, C, "3-D activations",
     lambda tmp: learn.knn_graph(torch.randn(2, 3, 4), k=2),
     ValueError, r"activations must be 2-D, got tensor of shape \(2, 3, 4\)")
_add(S, C, "integer activations",
     lambda tmp: learn.knn_graph(torch.ones(4, 3, dtype=torch.long), k=2),
     ValueError, r"activations must be a floating-point tensor, got .*int64")
_add(S, "knn_graph(activations, metric)", "metric = 'cosin' (a typo)",
     lambda tmp: learn.knn_graph(_activations(), k=2, metric="cosin"),
     ValueError, r"metric must be one of \('euclidean', 'cosine', 'correlation'\), got 'cosin' "
                 r"\(did you mean 'cosine'\?\)")
_add(S, "knn_graph(activations, symmetrize)", "symmetrize = 'min'",
     lambda tmp: learn.knn_graph(_activations(), k=2, symmetrize="min"),
     ValueError, r"symmetrize must be one of \('mean', 'max', 'mutual'\), got 'min'")
_add(S, "knn_graph(activations, weights)", "weights = 'binary'",
     lambda tmp: learn.knn_graph(_activations(), k=2, weights="binary"),
     ValueError, r"weights must be one of \('connectivity', 'gaussian'\), got 'binary'")
_add(S, "knn_graph(activations, sigma)", "sigma without weights='gaussian'",
     lambda tmp: learn.knn_graph(_activations(), k=2, sigma=1.0),
     ValueError, r"sigma is only used with weights='gaussian', got sigma=1\.0 with "
                 r"weights='connectivity'")
_add(S, "knn_graph(activations, weights='gaussian', sigma)", "sigma = -1",
     lambda tmp: learn.knn_graph(_activations(), k=2, weights="gaussian", sigma=-1.0),
     ValueError, r"sigma must be finite and > 0, got -1\.0")
_add(S, "knn_graph(activations, chunk_size)", "chunk_size = 0",
     lambda tmp: learn.knn_graph(_activations(), k=2, chunk_size=0),
     ValueError, r"chunk_size must be >= 1, got 0")
_add(S, "knn_graph(activations, gram=gram)", "both activations and gram",
     lambda tmp: learn.knn_graph(_activations(), k=2, gram=torch.eye(6)),
     ValueError, r"give exactly one of activations \(\[samples, neurons\]\) and gram")
_add(S, "knn_graph()", "neither activations nor gram",
     lambda tmp: learn.knn_graph(None, k=2),
     ValueError, r"give exactly one of activations .* got activations=None and gram=None")
_add(S, "knn_graph(gram=gram)", "a [3, 4] gram",
     lambda tmp: learn.knn_graph(gram=torch.ones(3, 4), k=2),
     ValueError, r"gram must be a square \[neurons, neurons\] matrix, got tensor of shape "
                 r"\(3, 4\)")
_add(S, "knn_graph(gram=gram)", "a NaN gram",
     lambda tmp: learn.knn_graph(gram=torch.full((3, 3), NAN), k=1),
     ValueError, r"gram must be finite, got 9 NaN")
_add(S, "gaussian_graph(activations, threshold)", "threshold = 1",
     lambda tmp: learn.gaussian_graph(_activations(), threshold=1.0),
     ValueError, r"threshold must be in \[0, 1\) \(weights are at most 1\), got 1\.0")
_add(S, "gaussian_graph(activations, sigma)", "sigma = 0",
     lambda tmp: learn.gaussian_graph(_activations(), sigma=0),
     ValueError, r"sigma must be finite and > 0, got 0\.0")
_add(S, "gaussian_graph(activations)", "one neuron, sigma taken from the data",
     lambda tmp: learn.gaussian_graph(torch.randn(4, 1)),
     ValueError, r"gaussian_graph\(sigma=None\) takes sigma from the distances between "
                 r"neurons, which needs at least 2 neurons, got 1; pass sigma")
_add(S, "adaptive_graph(activations, k)", "k = 6 for 6 neurons",
     lambda tmp: learn.adaptive_graph(_activations(), k=6),
     ValueError, r"k must be between 1 and num_neurons - 1 = 5")
C = "CoactivationGraph(...)"
_add(S, C, "method = 'kmeans'",
     lambda tmp: learn.CoactivationGraph(method="kmeans"),
     ValueError, r"method must be one of \('knn', 'gaussian', 'adaptive'\), got 'kmeans'")
_add(S, C, "k with method='gaussian'",
     lambda tmp: learn.CoactivationGraph(method="gaussian", k=3),
     ValueError, r"k is not used by method='gaussian' .*got k=3")
_add(S, C, "threshold with method='knn'",
     lambda tmp: learn.CoactivationGraph(threshold=0.1),
     ValueError, r"threshold is not used by method='knn', got 0\.1")
_add(S, C, "stats_momentum = 1",
     lambda tmp: learn.CoactivationGraph(stats_momentum=1.0),
     ValueError, r"stats_momentum must be in \(0, 1\), got 1\.0")
_add(S, C, "features = 'epoch'",
     lambda tmp: learn.CoactivationGraph(features="epoch"),
     ValueError, r"features must be one of \('batch', 'stats'\), got 'epoch'")
_add(S, "CoactivationGraph()(data)", "a Data with neither x nor gram",
     lambda tmp: learn.CoactivationGraph()(Data(num_nodes=3)),
     ValueError, r"data must carry x \(\[neurons, features\]\) or gram \(\[neurons, neurons\]\), "
                 r"got neither")
_add(S, "CoactivationGraph(metric='euclidean')(stats.to_data('correlation'))",
     "statistics prepared for another metric",
     lambda tmp: learn.CoactivationGraph(k=2)(_stats_with(_activations()).to_data()),
     ValueError, r"data\.gram was made for metric='correlation', standardize=False but this "
                 r"transform uses metric='euclidean'")
C = "CoactivationStats(num_neurons, ...)"
_add(S, C, "num_neurons = 0",
     lambda tmp: learn.CoactivationStats(0),
     ValueError, r"num_neurons must be >= 1, got 0")
_add(S, C, "mode = 'avg'",
     lambda tmp: learn.CoactivationStats(3, mode="avg"),
     ValueError, r"mode must be one of \('exact', 'ema'\), got 'avg'")
_add(S, C, "dtype = torch.int64",
     lambda tmp: learn.CoactivationStats(3, dtype=torch.int64),
     TypeError, r"dtype must be a floating torch\.dtype, got torch\.int64")
_add(S, "stats.update(activations)", "5 neurons for statistics of 3",
     lambda tmp: learn.CoactivationStats(3).update(torch.randn(4, 5)),
     ValueError, r"activations must be \[batch >= 1, 3\] for these statistics, got tensor of "
                 r"shape \(4, 5\)")
_add(S, "stats.to_data()", "no update yet",
     lambda tmp: learn.CoactivationStats(3).to_data(),
     ValueError, r"CoactivationStats needs a count above 0 here, got count=0 \(call update\(\) "
                 r"with activations first\)")
_add(S, "stats.to_data(metric='correlation')", "a constant neuron",
     lambda tmp: _stats_with(_with_constant_neuron()).to_data(),
     ValueError, r"metric='correlation' needs neurons that vary over the samples, but 1 of 6")
_add(S, "stats.to_data(metric='euclidean')", "NaN activations given to update()",
     lambda tmp: _stats_with(_with_value(NAN)).to_data("euclidean"),
     ValueError, r"the accumulated statistics \(non-finite activations\?\) must be finite")
_add(S, "stats.load_state_dict(state)", "a state without mean and m2",
     lambda tmp: learn.CoactivationStats(3).load_state_dict({"count": torch.tensor(1.0)}),
     ValueError, r"state is missing \['mean', 'm2'\]; expected a CoactivationStats state_dict")


# --------------------------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------------------------

S = "pipeline"
C = "LearningSchedule(...)"
_add(S, C, "warmup_steps = -1",
     lambda tmp: LearningSchedule(warmup_steps=-1),
     ValueError, r"warmup_steps must be >= 0, got -1")
_add(S, C, "warmup_steps = 1.5",
     lambda tmp: LearningSchedule(warmup_steps=1.5),
     TypeError, r"warmup_steps must be an int, got 1\.5")
_add(S, C, "refresh_every = 0",
     lambda tmp: LearningSchedule(refresh_every=0),
     ValueError, r"refresh_every must be >= 1, got 0")
_add(S, C, "max_learning_steps = 0",
     lambda tmp: LearningSchedule(max_learning_steps=0),
     ValueError, r"max_learning_steps must be >= 1, got 0")
_add(S, C, "after_stop_steps = -2",
     lambda tmp: LearningSchedule(after_stop_steps=-2),
     ValueError, r"after_stop_steps must be >= 0, got -2")
_add(S, C, "stop = 'early'",
     lambda tmp: LearningSchedule(stop="early"),
     ValueError, r"stop must be one of \('disconnected', 'converged', 'never'\), got 'early'")
_add(S, C, "normalization = 'rw'",
     lambda tmp: LearningSchedule(normalization="rw"),
     ValueError, r"normalization is 'rw': the random-walk Laplacian is not symmetric")
_add(S, C, "converged_jaccard = 0",
     lambda tmp: LearningSchedule(converged_jaccard=0),
     ValueError, r"converged_jaccard must be finite and > 0, got 0\.0")
_add(S, C, "converged_jaccard = 1.5 (a Jaccard index is at most 1)",
     lambda tmp: LearningSchedule(converged_jaccard=1.5),
     ValueError, r"converged_jaccard must be in \(0, 1\], got 1\.5")

C = "GSRTrainer(model, reg, optimizer, loss_fn, ...)"
_add(S, C, "reg given as a string",
     lambda tmp: GSRTrainer(_mlp(), "reg", None, nn.functional.mse_loss, max_steps=2),
     TypeError, r"reg must be a GraphSpectralRegularizer, got 'reg'")
_add(S, C, "reg built for another model",
     lambda tmp: GSRTrainer(_mlp(), _trainer_parts()[1], _trainer_parts()[2],
                            nn.functional.mse_loss, max_steps=2),
     ValueError, r"reg regularizes a different model than the one given to the trainer")
_add(S, C, "optimizer given as the string 'adam'",
     lambda tmp: GSRTrainer(*_trainer_parts()[:2], "adam", nn.functional.mse_loss, max_steps=2),
     TypeError, r"optimizer must be a torch\.optim\.Optimizer, got 'adam'")
_add(S, C, "loss_fn given as the string 'mse'",
     lambda tmp: GSRTrainer(*_trainer_parts(), "mse", max_steps=2),
     TypeError, r"loss_fn must be callable, got 'mse'")
_add(S, "GSRTrainer(..., learn)", "learn = {'fc1': 'knn'}",
     lambda tmp: _trainer(learn={"fc1": "knn"}),
     TypeError, r"learn\['fc1'\] must be a gsr_pyg\.learn\.CoactivationGraph, got 'knn'")
_add(S, "GSRTrainer(..., learn)", "learning a layer the regularizer does not hold",
     lambda tmp: _trainer(learn={"out": learn.CoactivationGraph()}),
     ValueError, r"layer 'out' is not regularized; regularized layers: \['fc1'\]")
_add(S, "GSRTrainer(..., mask_fn)", "mask_fn = 'attention_mask' (a string)",
     lambda tmp: _trainer(max_steps=2, mask_fn="attention_mask"),
     TypeError, r"mask_fn must be a callable batch -> mask or None, got 'attention_mask'")
_add(S, "GSRTrainer(..., schedule)", "schedule given as a dict",
     lambda tmp: _trainer(learn={"fc1": learn.CoactivationGraph()},
                          schedule={"warmup_steps": 1}),
     TypeError, r"schedule must be a LearningSchedule, got \{'warmup_steps': 1\}")
_add(S, C, "no learned layer and no max_steps",
     lambda tmp: _trainer(max_steps=None),
     ValueError, r"max_steps is required when no layer learns its graph \(learn is empty\)")
_add(S, "GSRTrainer(..., schedule)", "a schedule but no learned layer",
     lambda tmp: _trainer(schedule=LearningSchedule()),
     ValueError, r"schedule is given but no layer learns its graph \(learn is empty\)")
_add(S, "GSRTrainer(..., max_steps)", "max_steps beside learned layers (it would be ignored)",
     lambda tmp: _trainer(learn={"fc1": learn.CoactivationGraph()}, max_steps=5),
     ValueError, r"max_steps=5 is given but layers learn their graphs \(learn is not empty\): "
                 r"the schedule sets the run's length")
_add(S, "GSRTrainer(..., max_steps)", "max_steps = 0",
     lambda tmp: _trainer(max_steps=0), ValueError, r"max_steps must be >= 1, got 0")
_add(S, "GSRTrainer(..., checkpoint_every)", "checkpoint_every = 0",
     lambda tmp: _trainer(checkpoint_every=0),
     ValueError, r"checkpoint_every must be >= 1, got 0")
_add(S, "GSRTrainer(..., log_every)", "log_every = -1",
     lambda tmp: _trainer(log_every=-1), ValueError, r"log_every must be >= 1, got -1")
_add(S, "GSRTrainer(..., smoothness_permutations)", "smoothness_permutations = -1",
     lambda tmp: _trainer(smoothness_permutations=-1),
     ValueError, r"smoothness_permutations must be >= 0, got -1")
_add(S, "GSRTrainer(..., seed)", "seed = '0' (a string)",
     lambda tmp: _trainer(seed="0"), TypeError, r"seed must be an int, got '0'")
_add(S, "GSRTrainer(..., device)", "device = 'gpu'",
     lambda tmp: _trainer(device="gpu"),
     ValueError, r"device must be a torch\.device or a device string .*got 'gpu'")
_add(S, "GSRTrainer(..., config)", "config = [1, 2] (not a mapping)",
     lambda tmp: _trainer(config=[1, 2]),
     TypeError, r"config must be a mapping of JSON-serialisable settings, got \[1, 2\]")
_add(S, "GSRTrainer(..., run_dir)", "run_dir = 5 (an int)",
     lambda tmp: _trainer(run_dir=5),
     TypeError, r"run_dir must be a path \(str or os\.PathLike\) or None, got 5")
_add(S, "trainer.fit(loader)", "a loader that yields no batch",
     lambda tmp: _trainer().fit([]),
     ValueError, r"the training loader yielded no batch")
_add(S, "trainer.fit(loader)", "loader = 5 (not iterable)",
     lambda tmp: _trainer().fit(5),
     TypeError, r"loader must be an iterable of batches .*got 5")

C = "GSRTrainer(..., run_dir).fit(loader)"
_add(S, C, "run_dir below a regular file",
     lambda tmp: _fit(_write(tmp, "file", b"x") / "run"),
     ValueError, r"run_dir '.*file/run' cannot be created: \[Errno 20\] Not a directory")
_add(S, C, "run_dir is a regular file",
     lambda tmp: _fit(_write(tmp, "file", b"x")),
     ValueError, r"run_dir '.*file' cannot be created: \[Errno 17\] File exists")
_add(S, C, "run_dir is a read-only directory",
     _read_only_dir,
     ValueError, r"run_dir '(.*read-only|/sys)' is not writable \(Permission denied\)",
     skip=_no_read_only_dir)
_add(S, C, "resume: empty checkpoint.pt",
     _resume_with_checkpoint_bytes(lambda good: b""),
     ValueError, r"checkpoint file '.*checkpoint\.pt' cannot be read \(truncated, corrupted or "
                 r"not written by gsr_pyg\)")
_add(S, C, "resume: checkpoint.pt cut to half its length",
     _resume_with_checkpoint_bytes(lambda good: good[: len(good) // 2]),
     ValueError, r"checkpoint file '.*checkpoint\.pt' cannot be read \(truncated, corrupted")
_add(S, C, "resume: checkpoint.pt overwritten with zeros after 100 bytes",
     _resume_with_checkpoint_bytes(lambda good: good[:100] + bytes(len(good) - 100)),
     ValueError, r"checkpoint file '.*checkpoint\.pt' cannot be read")
_add(S, C, "resume: checkpoint.pt holding random bytes",
     _resume_with_checkpoint_bytes(lambda good: random.Random(0).randbytes(2000)),
     ValueError, r"(?s)^(?!.*weights_only. set to .False).*checkpoint file '.*checkpoint\.pt' "
                 r"cannot be read")
_add(S, C, "resume: checkpoint.pt holding a tensor",
     _resume_with_checkpoint_state(lambda state: torch.zeros(3)),
     ValueError, r"checkpoint file '.*checkpoint\.pt' was not written by this version of "
                 r"gsr_pyg")
_add(S, C, "resume: checkpoint.pt of another format version",
     _resume_with_checkpoint_state(lambda state: _replace(state, format=CHECKPOINT_FORMAT + 1)),
     ValueError, r"checkpoint file '.*checkpoint\.pt' was not written by this version")
_add(S, C, "resume: checkpoint.pt without its loop state",
     _resume_with_checkpoint_state(lambda state: {"format": CHECKPOINT_FORMAT,
                                                  "model": state["model"]}),
     ValueError, r"checkpoint file '.*checkpoint\.pt' .*(lacks|missing).*world_size")
_add(S, C, "resume: checkpoint.pt written by 2 processes",
     _resume_with_checkpoint_state(lambda state: _replace(state, world_size=2)),
     ValueError, r"checkpoint '.*checkpoint\.pt' was written by 2 process\(es\) but this run has "
                 r"1: resume with the same world size")
_add(S, C, "resume: checkpoint.pt learning no layer",
     _resume_with_checkpoint_state(lambda state: _replace(state, learning={})),
     ValueError, r"checkpoint learns layers \[\] but the trainer learns \['latent'\]")
_add(S, C, "resume: checkpoint.pt copied from a run of a wider model",
     _checkpoint_of_a_wider_model,
     ValueError, r"checkpoint file '.*checkpoint\.pt' .*model")
_add(S, C, "resume: config.json that is not JSON",
     _resume_with_config_text("{not json"),
     ValueError, r"config\.json is not valid JSON \(.*\); remove the run directory or choose "
                 r"another")
_add(S, C, "resume: empty config.json",
     _resume_with_config_text(""),
     ValueError, r"config\.json is not valid JSON")
_add(S, C, "resume: config.json holding a JSON list",
     _resume_with_config_text("[1, 2]"),
     ValueError, r"config\.json .*(object|mapping)")
_add(S, C, "resume with another learner (k = 4 instead of 3)",
     lambda tmp: _fit(_finished_run(tmp), k=4),
     ValueError, r"run_dir '.*run' holds a run with a different config \(learn: .*k=3.* -> "
                 r".*k=4.*\); use another run_dir or remove it")
_add(S, C, "resume with a wider model (10 latent neurons instead of 8)",
     lambda tmp: _fit(_finished_run(tmp), width=10),
     ValueError, r"holds a run with a different config \(.*num_parameters: 110 -> 136")
_add(S, "load_snapshot(path)", "a snapshot cut to 50 bytes",
     lambda tmp: load_snapshot(_write(tmp, "cut.pt", _snapshot_file(tmp).read_bytes()[:50])),
     ValueError, r"snapshot file '.*cut\.pt' cannot be read \(truncated, corrupted or not "
                 r"written by gsr_pyg\)")
_add(S, "load_snapshot(path)", "a path that does not exist",
     lambda tmp: load_snapshot(tmp / "missing.pt"),
     ValueError, r"snapshot file '.*missing\.pt' cannot be read .*FileNotFoundError")
_add(S, "load_snapshot(path)", "a .pt file of other tensors",
     lambda tmp: load_snapshot(_save(tmp / "other.pt", {"weight": torch.zeros(2)})),
     ValueError, r"snapshot file '.*other\.pt' .*edge_index")


# --------------------------------------------------------------------------------------------
# data loaders
# --------------------------------------------------------------------------------------------

S = "data"
C = "read_idx(path)"
_add(S, C, "an empty file",
     lambda tmp: read_idx(_write(tmp, "empty-idx1-ubyte", b"")),
     ValueError, r"IDX file '.*empty-idx1-ubyte' is truncated: it holds 0 bytes, fewer than "
                 r"the 4-byte magic number")
_add(S, "read_idx(path, expected_magic=2051)", "a labels file (magic 2049)",
     lambda tmp: read_idx(_write(tmp, "labels", _idx_header(8, [2]) + b"ab"),
                          expected_magic=2051),
     ValueError, r"IDX file '.*labels' has magic number 2049, expected 2051")
_add(S, C, "a zip file (magic 0x504b0304)",
     lambda tmp: read_idx(_write(tmp, "zip-idx", b"PK\x03\x04abcd")),
     ValueError, r"has magic number 1347093252 \(0x504b0304\), which is not an IDX header "
                 r"\(expected 0x0000TTDD")
_add(S, C, "header declaring 3 dimensions, cut after the first",
     lambda tmp: read_idx(_write(tmp, "header-idx", _idx_header(8, [5, 28, 28])[:8])),
     ValueError, r"is truncated: its header declares 3 dimensions \(16 header bytes\) but the "
                 r"file holds 8 bytes")
_add(S, C, "5 images declared, 2 stored",
     lambda tmp: read_idx(_write(tmp, "short-idx", _idx_header(8, [5, 28, 28]) + bytes(1568))),
     ValueError, r"is truncated: dimensions \[5, 28, 28\] need 3920 data bytes, found 1568")
_add(S, C, "2 trailing bytes after the data",
     lambda tmp: read_idx(_write(tmp, "long-idx", _idx_header(8, [4]) + bytes(6))),
     ValueError, r"is longer than declared: dimensions \[4\] need 4 data bytes, found 6")
_add(S, C, "a negative dimension in the header",
     lambda tmp: read_idx(_write(tmp, "negative-idx", _idx_header(8, [-1]))),
     ValueError, r"is corrupted: its header declares the negative dimensions \[-1\]")
_add(S, C, "a cut gzip stream",
     lambda tmp: read_idx(_write(tmp, "cut-idx.gz",
                                 gzip.compress(_idx_header(8, [4]) + bytes(4))[:12])),
     ValueError, r"IDX file '.*cut-idx\.gz' is not a readable gzip stream")
_add(S, C, "a path that does not exist",
     lambda tmp: read_idx(tmp / "missing-idx"),
     FileNotFoundError, r"IDX file '.*missing-idx' does not exist")
_add(S, C, "a directory",
     lambda tmp: read_idx(tmp),
     ValueError, r"IDX file '.*' is a directory; pass one IDX file")
C = "load_mnist(source)"
_add(S, C, "a pickle whose payload calls exec",
     lambda tmp: load_mnist(_write(tmp, "mnist.pkl", pickle.dumps(_RunsCode()))),
     pickle.UnpicklingError, r"MNIST pickle '.*mnist\.pkl': refused to load global "
                             r"'builtins\.exec' from the pickle; only .* are allowed")
_add(S, C, "a gzipped pickle of MNIST-shaped arrays plus a global (os.system)",
     lambda tmp: load_mnist(_write(tmp, "mnist.pkl.gz", gzip.compress(
         pickle.dumps((_mnist_pickle_splits(), os.system))))),
     pickle.UnpicklingError, r"refused to load global '(posix|nt|os)\.system'")
_add(S, C, "an empty mnist.pkl",
     lambda tmp: load_mnist(_write(tmp, "mnist.pkl", b"")),
     ValueError, r"could not read the MNIST pickle '.*mnist\.pkl' \(empty, truncated or "
                 r"corrupted\): EOFError")
_add(S, C, "a pickle cut to 40 bytes",
     lambda tmp: load_mnist(_write(tmp, "mnist.pkl", pickle.dumps(_mnist_pickle_splits())[:40])),
     ValueError, r"could not read the MNIST pickle '.*mnist\.pkl' \(empty, truncated or "
                 r"corrupted\)")
_add(S, C, "a gzipped pickle cut to 40 bytes",
     lambda tmp: load_mnist(_write(tmp, "mnist.pkl.gz", gzip.compress(
         pickle.dumps(_mnist_pickle_splits()))[:40])),
     ValueError, r"could not read the MNIST pickle '.*mnist\.pkl\.gz' \(empty, truncated or "
                 r"corrupted\)")
_add(S, C, "a text file named mnist.pkl",
     lambda tmp: load_mnist(_write(tmp, "mnist.pkl", b"not a pickle\n")),
     ValueError, r"could not read the MNIST pickle '.*mnist\.pkl' \(empty, truncated or "
                 r"corrupted\)")
_add(S, C, "a pickle of a list",
     lambda tmp: load_mnist(_write(tmp, "mnist.pkl", pickle.dumps([1, 2, 3]))),
     ValueError, r"MNIST pickle '.*mnist\.pkl' must hold \(\(train_x, train_y\), .*got a list")
_add(S, C, "a pickle of 27 x 27 images",
     lambda tmp: load_mnist(_write(tmp, "mnist.pkl", pickle.dumps(
         ((np.zeros((2, 729)), np.zeros(2)),) * 3))),
     ValueError, r"train images must have shape \[n, 784\], got \[2, 729\]")
_add(S, C, "an empty directory",
     lambda tmp: load_mnist(tmp),
     FileNotFoundError, r"no MNIST files in source '.*' \(looked in it, in MNIST/raw and in "
                        r"raw\)\. Get MNIST in one of two ways")
_add(S, C, "a directory holding 3 of the 4 IDX files",
     lambda tmp: load_mnist(_drop(_mnist_dir(tmp), "t10k-labels-idx1-ubyte")),
     FileNotFoundError, r"MNIST directory '.*mnist' lacks the IDX files "
                        r"\['t10k-labels-idx1-ubyte'\]")
_add(S, C, "2 training images but 3 training labels",
     lambda tmp: load_mnist(_mnist_dir(tmp, train_labels=3)),
     ValueError, r"image and label counts differ: '.*train-images-idx3-ubyte' holds 2 images "
                 r"but '.*train-labels-idx1-ubyte' holds 3 labels")
_add(S, C, "one IDX file instead of their directory",
     lambda tmp: load_mnist(_mnist_dir(tmp) / "train-images-idx3-ubyte"),
     ValueError, r"source '.*train-images-idx3-ubyte' is a single IDX file; pass the directory")
_add(S, C, "source = 3 (an int)",
     lambda tmp: load_mnist(3),
     TypeError, r"source must be a path \(str or os\.PathLike\) or None, got int")

C = "load_anndata(source)"
_add(S, C, "an .h5ad file with no cells (0 x 4)",
     lambda tmp: load_anndata(_h5ad(tmp, "no-cells.h5ad", np.zeros((0, 4)))),
     ValueError, r"'.*no-cells\.h5ad' has no cells \(0 rows\)")
_add(S, C, "an .h5ad file with no genes (4 x 0)",
     lambda tmp: load_anndata(_h5ad(tmp, "no-genes.h5ad", np.zeros((4, 0)))),
     ValueError, r"'.*no-genes\.h5ad' has no genes \(0 columns\)")
_add(S, C, "an empty .h5ad file",
     lambda tmp: load_anndata(_write(tmp, "empty.h5ad", b"")),
     ValueError, r"'.*empty\.h5ad' is not a readable \.h5ad file \(truncated, corrupted or not "
                 r"written by anndata\)")
_add(S, C, "an .h5ad file cut to half its length",
     lambda tmp: load_anndata(_truncated_h5ad(tmp)),
     ValueError, r"'.*cut\.h5ad' is not a readable \.h5ad file")
_add(S, C, "a text file named data.h5ad",
     lambda tmp: load_anndata(_write(tmp, "data.h5ad", b"cell,g1\nc1,1\n")),
     ValueError, r"'.*data\.h5ad' is not a readable \.h5ad file")
_add(S, C, "an empty CSV file",
     lambda tmp: load_anndata(_write(tmp, "empty.csv", b"")),
     ValueError, r"'.*empty\.csv' has no cells and no genes \(the file is empty\)")
_add(S, C, "a CSV header without rows",
     lambda tmp: load_anndata(_write(tmp, "header.csv", b"cell,g1,g2\n")),
     ValueError, r"'.*header\.csv' has no cells \(a header but no rows\)")
_add(S, C, "a CSV of cell ids only",
     lambda tmp: load_anndata(_write(tmp, "ids.csv", b"cell\nc1\nc2\n")),
     ValueError, r"'.*ids\.csv' has no genes \(only the cell id column\)")
_add(S, C, "a CSV entry 'abc'",
     lambda tmp: load_anndata(_write(tmp, "text.csv", b"cell,g1\nc1,abc\n")),
     ValueError, r"'.*text\.csv' must hold numbers \(cells x genes\), but gene column 'g1' is "
                 r"not numeric: cell 'c1' has 'abc'")
_add(S, C, "a CSV with ragged rows",
     lambda tmp: load_anndata(_write(tmp, "ragged.csv", b"cell,g1\nc1,1,2,3\nc2\n")),
     ValueError, r"'.*ragged\.csv' is not a readable CSV table of cells x genes: ParserError")
_add(S, C, "binary bytes named data.csv",
     lambda tmp: load_anndata(_write(tmp, "binary.csv", bytes(range(128, 256)))),
     ValueError, r"'.*binary\.csv' is not a readable CSV table of cells x genes: "
                 r"UnicodeDecodeError")
_add(S, C, "a cut .csv.gz",
     lambda tmp: load_anndata(_write(tmp, "cut.csv.gz", gzip.compress(b"cell,g1\nc1,1\n")[:15])),
     ValueError, r"'.*cut\.csv\.gz' is not a readable CSV table of cells x genes")
_add(S, C, "a .txt file",
     lambda tmp: load_anndata(_write(tmp, "data.txt", b"1 2 3")),
     ValueError, r"source '.*data\.txt' has an unknown extension '\.txt'; expected '\.h5ad', "
                 r"'\.csv' or '\.csv\.gz'")
_add(S, C, "a directory",
     lambda tmp: load_anndata(tmp),
     ValueError, r"source must be a file, but '.*' is a directory")
_add(S, C, "'krumsiek' (a misspelt bundled dataset)",
     lambda tmp: load_anndata("krumsiek"),
     FileNotFoundError, r"no such file: 'krumsiek'; bundled datasets: \['pbmc68k_reduced', "
                        r"'krumsiek11'\] \(did you mean 'krumsiek11'\?\)")
_add(S, C, "source = 3 (an int)",
     lambda tmp: load_anndata(3),
     TypeError, r"source must be a path or the name of a bundled dataset .*got 3")
C = "prepare_matrix(adata, ...)"
_add(S, C, "a numpy array instead of an AnnData",
     lambda tmp: prepare_matrix(np.zeros((3, 3))),
     TypeError, r"adata must be an anndata\.AnnData, got array")
_add(S, C, "an AnnData with no cells",
     lambda tmp: prepare_matrix(_adata(np.zeros((0, 3)))),
     ValueError, r"adata has no cells \(0 rows\)")
_add(S, "prepare_matrix(adata, layer)", "layer = 'count' (no such layer)",
     lambda tmp: prepare_matrix(_adata(), layer="count"),
     ValueError, r"layer 'count' not found; available: \[\]")
_add(S, "prepare_matrix(adata, genes)", "genes naming 'g7' in a 3-gene matrix",
     lambda tmp: prepare_matrix(_adata(), genes=["g0", "g7"]),
     ValueError, r"genes: 1 of 2 not found in the data: \['g7'\]")
_add(S, C, "a NaN in the matrix",
     lambda tmp: prepare_matrix(_adata(np.array([[1.0, NAN], [2.0, 3.0]]))),
     ValueError, r"adata\.X must be finite, got 1 NaN and 0 Inf values; first in gene 'g1' "
                 r"\(1 cells\)")
_add(S, "prepare_matrix(adata, scale)", "scale = 'zscore'",
     lambda tmp: prepare_matrix(_adata(), scale="zscore"),
     ValueError, r"scale must be one of \('standard', 'minmax', None\), got 'zscore'")
_add(S, "prepare_matrix(adata, highly_variable)", "highly_variable = 9 for 3 genes",
     lambda tmp: prepare_matrix(_adata(), highly_variable=9),
     ValueError, r"highly_variable must be <= 3, got 9")
_add(S, "obs_labels(adata, column)", "a column that does not exist",
     lambda tmp: obs_labels(_adata(cell_type=["a", "b", "a", "b"]), "celltype"),
     ValueError, r"column 'celltype' not found; closest: \['cell_type'\]")
_add(S, "obs_labels(adata, column)", "a float column",
     lambda tmp: obs_labels(_adata(time=[0.1, 0.2, 0.3, 0.4]), "time"),
     ValueError, r"column 'time' holds floats \(float64\); use obs_values")
_add(S, "obs_values(adata, column)", "a column with a missing value",
     lambda tmp: obs_values(_adata(time=[0.1, NAN, 0.3, 0.4]), "time"),
     ValueError, r"column 'time' has 1 missing values; pass allow_missing=True")
_add(S, "planted_modules(num_samples, ...)", "num_samples = 0",
     lambda tmp: planted_modules(0),
     ValueError, r"num_samples must be >= 1, got 0")
_add(S, "planted_modules(..., within_corr)", "within_corr = 1.5",
     lambda tmp: planted_modules(10, within_corr=1.5),
     ValueError, r"within_corr must be in \[0, 1\], got 1\.5")
_add(S, "planted_modules(..., within_corr)", "two correlations for three modules",
     lambda tmp: planted_modules(10, within_corr=[0.5, 0.4]),
     ValueError, r"within_corr must be one number or one per module \(3\), got 2 values")
_add(S, "planted_modules(..., within_corr)", "one of the correlations 1.2",
     lambda tmp: planted_modules(10, within_corr=[0.5, 0.4, 1.2]),
     ValueError, r"within_corr\[2\] must be in \[0, 1\], got 1\.2")
_add(S, "planted_modules(..., shuffle_features)", "shuffle_features = 'yes'",
     lambda tmp: planted_modules(10, shuffle_features="yes"),
     TypeError, r"shuffle_features must be a bool, got 'yes'")
_add(S, "branching_trajectory(num_cells, ...)", "num_cells = 0",
     lambda tmp: branching_trajectory(0),
     ValueError, r"num_cells must be >= 1, got 0")

_add(S, "stdlib_docstrings(modules)", "a module that does not import",
     lambda tmp: stdlib_docstrings(["bisect", "no_such_module_xyz"]),
     ValueError, r"module 'no_such_module_xyz' in modules does not import here")
_add(S, "stdlib_docstrings(modules)", "one name (a str) for the list",
     lambda tmp: stdlib_docstrings("bisect"),
     TypeError, r"modules must be a non-empty sequence of module names, got 'bisect'")
_add(S, "split_by_module(docs, num_parts)", "fewer modules than parts",
     lambda tmp: split_by_module(stdlib_docstrings(["bisect", "heapq"])),
     ValueError, r"split_by_module needs at least num_parts=10 modules to give every part "
                 r"one, got 2")
_add(S, "text_chunks(docs, length)", "length = 1",
     lambda tmp: text_chunks(stdlib_docstrings(["bisect"]), 1),
     ValueError, r"length must be >= 2, got 1")
_add(S, "encode_chunks(chunks, vocab, length)", "a chunk longer than length + 1",
     lambda tmp: encode_chunks(["abcdefgh"], CharVocabulary(), 6),
     ValueError, r"chunk 0 has 8 characters; encode_chunks takes 2 to length \+ 1 = 7 "
                 r"\(cut the text with text_chunks\(docs, 7\)\)")

# --------------------------------------------------------------------------------------------
# layouts: placing a layer's units on a graph, permuting them in a model
# --------------------------------------------------------------------------------------------


def _layout(name: str, *args, **options):
    """``gsr_pyg.layout.<name>(*args, **options)``."""
    from gsr_pyg import layout

    return getattr(layout, name)(*args, **options)


def _units(num_units: int = 9, samples: int = 6) -> torch.Tensor:
    return torch.randn(samples, num_units, generator=torch.Generator().manual_seed(0))


def _stats_of(rows: torch.Tensor) -> learn.CoactivationStats:
    stats = learn.CoactivationStats(rows.size(1))
    stats.update(rows)
    return stats


def _permute_mlp(perm, first: nn.Module | None = None, second: nn.Module | None = None):
    """``permute_hidden`` on a Linear(3, 4) -> Linear(4, 2) pair (or the modules given)."""
    first = nn.Linear(3, 4) if first is None else first
    second = nn.Linear(4, 2) if second is None else second
    return _layout("permute_hidden", first, second, perm)


S = "layout"
C = "fit_layout(activations_or_stats, graph)"
_add(S, C, "a 3 x 3 grid for 8 units",
     lambda tmp: _layout("fit_layout", _units(8), graphs.grid(3, 3)),
     ValueError, r"graph has 9 nodes but the activations have 8 units; a layout places one "
                 r"unit per node")
_add(S, C, "one sample as a 1-D tensor",
     lambda tmp: _layout("fit_layout", torch.randn(9), graphs.grid(3, 3)),
     ValueError, r"activations must have a sample axis and a unit axis \(\[samples, units\], "
                 r"\[B, T, units\], \.\.\.\), got tensor of shape \(9,\)")
_add(S, C, "a NaN activation",
     lambda tmp: _layout("fit_layout", _units().index_put_((torch.tensor(2), torch.tensor(4)),
                                                           torch.tensor(NAN)),
                         graphs.grid(3, 3)),
     ValueError, r"activations must be finite, got 1 NaN and 0 Inf values")
_add(S, C, "integer activations",
     lambda tmp: _layout("fit_layout", torch.ones(6, 9, dtype=torch.long), graphs.grid(3, 3)),
     ValueError, r"activations must be a floating-point tensor, got tensor of shape \(6, 9\) "
                 r"and dtype torch\.int64")
_add(S, C, "a list of numbers instead of a tensor",
     lambda tmp: _layout("fit_layout", [[0.0] * 9], graphs.grid(3, 3)),
     TypeError, r"activations_or_stats must be a tensor of activations or a "
                r"gsr_pyg\.learn\.CoactivationStats, got \[\[0\.0")
_add(S, "fit_layout(stats, graph, mask)", "a mask beside CoactivationStats",
     lambda tmp: _layout("fit_layout", _stats_of(_units()), graphs.grid(3, 3),
                         mask=torch.ones(6, dtype=torch.bool)),
     ValueError, r"mask applies to activations; a CoactivationStats has already kept the "
                 r"samples it was given")
_add(S, C, "CoactivationStats that saw no sample",
     lambda tmp: _layout("fit_layout", learn.CoactivationStats(9), graphs.grid(3, 3)),
     ValueError, r"activations_or_stats is a CoactivationStats that has seen no sample "
                 r"\(count=0\)")
_add(S, "fit_layout(activations, graph, node_dim)", "node_dim = 0 (the batch axis)",
     lambda tmp: _layout("fit_layout", _units(), graphs.grid(3, 3), node_dim=0),
     ValueError, r"node_dim must not be 0 \(axis 0 is the batch axis\)")
_add(S, "fit_layout(activations, graph, node_dim=-1, mask)", "a mask of the wrong shape",
     lambda tmp: _layout("fit_layout", torch.randn(2, 5, 9), graphs.grid(3, 3), node_dim=-1,
                         mask=torch.ones(2, 4, dtype=torch.bool)),
     ValueError, r"mask must have the shape of the sample axes \(2, 5\)")
_add(S, "fit_layout(activations, graph, seed)", "seed = -1",
     lambda tmp: _layout("fit_layout", _units(), graphs.grid(3, 3), seed=-1),
     ValueError, r"seed must be >= 0, got -1")
_add(S, "fit_layout(activations, graph, max_rounds)", "max_rounds = 1.5",
     lambda tmp: _layout("fit_layout", _units(), graphs.grid(3, 3), max_rounds=1.5),
     TypeError, r"max_rounds must be an int, got 1\.5")
_add(S, C, "a graph with one direction of an edge only",
     lambda tmp: _layout("fit_layout", _units(2), Data(edge_index=torch.tensor([[0], [1]]),
                                                       num_nodes=2)),
     ValueError, r"graph: edge \(0, 1\) has no reverse edge \(1, 0\)")
_accepted(S, C, "a graph without edges",
          lambda tmp: _layout("fit_layout", _units(), _empty_graph(9), return_energy=True),
          lambda result: _expect(torch.equal(result.perm, torch.arange(9))
                                 and result.energy == 0.0),
          "accepted: every placement has energy 0; the original order comes back")
C = "layout_energy(distances, graph, perm)"
_add(S, C, "distances of 8 units for a 9-node graph",
     lambda tmp: _layout("layout_energy", _layout("coactivation_distances", _units(8)),
                         graphs.grid(3, 3)),
     ValueError, r"distances must be \[9, 9\] for a graph of 9 nodes \(from "
                 r"coactivation_distances\), got tensor of shape \(8, 8\)")
C = "permute_hidden(linear_in, linear_out, perm)"
_add(S, C, "perm with a unit twice",
     lambda tmp: _permute_mlp(torch.tensor([0, 2, 2, 1])),
     ValueError, r"perm must be a permutation of range\(4\) \(every unit once\): unit 2 "
                 r"appears 2 times, unit 3 is missing")
_add(S, C, "perm of 3 units for 4",
     lambda tmp: _permute_mlp(torch.tensor([2, 0, 1])),
     ValueError, r"perm must have shape \[4\] \(one unit per node\), got tensor of shape "
                 r"\(3,\)")
_add(S, C, "perm as floats",
     lambda tmp: _permute_mlp(torch.tensor([3.0, 2.0, 1.0, 0.0])),
     ValueError, r"perm must be an integer tensor \(torch\.int64\), got tensor of shape \(4,\) "
                 r"and dtype torch\.float32")
_add(S, C, "perm naming unit 4 of 4",
     lambda tmp: _permute_mlp(torch.tensor([1, 2, 3, 4])),
     ValueError, r"perm must hold units in \[0, 4\), got 4")
_add(S, C, "perm as a list",
     lambda tmp: _permute_mlp([3, 2, 1, 0]),
     TypeError, r"perm must be a 1-D torch\.int64 tensor \(perm\[node\] = unit\), got "
                r"\[3, 2, 1, 0\]")
_add(S, C, "layers that do not chain (4 outputs, 5 inputs)",
     lambda tmp: _permute_mlp(torch.arange(4), second=nn.Linear(5, 2)),
     ValueError, r"linear_in outputs 4 units but linear_out takes 5 inputs: the layers do not "
                 r"chain")
_add(S, C, "an nn.Conv2d as linear_in",
     lambda tmp: _permute_mlp(torch.arange(4), first=nn.Conv2d(3, 4, 3)),
     TypeError, r"linear_in must be a torch\.nn\.Linear or a Hugging Face Conv1D \(GPT-2\), "
                r"got Conv2d")
_add(S, C, "the same Linear twice",
     lambda tmp: (lambda same: _permute_mlp(torch.arange(4), same, same))(nn.Linear(4, 4)),
     ValueError, r"linear_in and linear_out are the same module")
C = "apply_layout(model, pair, perm)"
_add(S, C, "a pair name that is not an MLP block ('fc')",
     lambda tmp: _layout("apply_layout", _mlp(), "fc", torch.arange(4)),
     ValueError, r"pair 'fc' is not an MLP block of the model; closest: \['fc1'\]")
_add(S, C, "a tuple of layer names for the pair",
     lambda tmp: _layout("apply_layout", _mlp(), ("fc1", "out"), torch.arange(4)),
     TypeError, r"pair must be an MLPPair from mlp_pairs\(model\) or its name, got "
                r"\('fc1', 'out'\)")
_add(S, "mlp_pairs(model)", "a state_dict instead of a model",
     lambda tmp: _layout("mlp_pairs", _mlp().state_dict()),
     TypeError, r"model must be a torch\.nn\.Module, got OrderedDict$")
_accepted(S, "mlp_pairs(model)", "a LayerNorm between the two Linear layers",
          lambda tmp: _layout("mlp_pairs", nn.Sequential(nn.Linear(3, 4), nn.ReLU(),
                                                         nn.LayerNorm(4), nn.Linear(4, 2))),
          lambda pairs: _expect(pairs == []),
          "accepted: no pair (a norm mixes the units, so permuting them would change the "
          "model)")

# --------------------------------------------------------------------------------------------
# pipeline scripts: command-line arguments and --config files
# --------------------------------------------------------------------------------------------

S = "scripts"


class UsageError(Exception):
    """What a pipeline printed when it refused its command line (argparse exits with 2)."""


def _script(name: str, *argv: str):
    """``python -m pipelines.<name> argv...`` in-process; a refusal becomes a UsageError
    carrying the last line printed on stderr (argparse's ``error: ...`` line)."""
    import contextlib
    import importlib
    import io

    module = importlib.import_module(f"pipelines.{name}")
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return module.main(list(argv))
    except SystemExit as exit_:
        lines = stderr.getvalue().strip().splitlines()
        raise UsageError(lines[-1] if lines else f"exit status {exit_.code}") from None


def _settings(name: str, class_name: str, **values):
    """A pipeline's settings built from Python (``pipelines.<name>.<class_name>(**values)``)."""
    import importlib

    return getattr(importlib.import_module(f"pipelines.{name}"), class_name)(**values)


def _config(tmp: Path, name: str, text: str) -> str:
    return str(_write(tmp, name, text.encode()))


def _cuda_present() -> str | None:
    return "CUDA is available here" if torch.cuda.is_available() else None


C = "python -m pipelines.mnist_grid"
_add(S, C, "--epochs 0",
     lambda tmp: _script("mnist_grid", "--epochs", "0"),
     UsageError, r"argument --epochs: expected an integer >= 1, got '0'")
_add(S, C, "--weights -0.1",
     lambda tmp: _script("mnist_grid", "--weights", "-0.1"),
     UsageError, r"argument --weights: expected a finite number >= 0, got '-0\.1'")
_add(S, C, "--lr nan",
     lambda tmp: _script("mnist_grid", "--lr", "nan"),
     UsageError, r"argument --lr: expected a finite number >= 0, got 'nan'")
_add(S, C, "--device gpu",
     lambda tmp: _script("mnist_grid", "--device", "gpu"),
     UsageError, r"--device must name a torch device \(cpu, cuda, cuda:1, \.\.\.\), got 'gpu'")
_add(S, C, "--device cuda on a machine without CUDA",
     lambda tmp: _script("mnist_grid", "--device", "cuda"),
     UsageError, r"--device 'cuda' was asked for but CUDA is not available here",
     skip=_cuda_present)
_add(S, C, "--out below a regular file",
     lambda tmp: _script("mnist_grid", "--out", str(_write(tmp, "file", b"x") / "out")),
     ValueError, r"--out '.*file/out' cannot be created: Not a directory")
_add(S, C, "--data pointing at an empty directory",
     lambda tmp: _script("mnist_grid", "--data", str(tmp), "--out", str(tmp / "out")),
     FileNotFoundError, r"no MNIST files in source '.*'.*Get MNIST in one of two ways")
_add(S, "MnistGridSettings(...) from Python", "epochs=0",
     lambda tmp: _settings("mnist_grid", "MnistGridSettings", epochs=0),
     ValueError, r"^epochs expects an integer >= 1, got 0$")
C = "python -m pipelines.reconstruction_cost"
_add(S, C, "--regularizers l3 (no such penalty)",
     lambda tmp: _script("reconstruction_cost", "--regularizers", "l1", "l3"),
     UsageError, r"argument --regularizers: invalid choice: 'l3'")
_add(S, C, "--strengths -1",
     lambda tmp: _script("reconstruction_cost", "--strengths", "1", "-1"),
     UsageError, r"argument --strengths: expected a finite number >= 0, got '-1'")
C = "python -m pipelines.learned_graph"
_add(S, C, "--active-per-sample 4 with 3 modules",
     lambda tmp: _script("learned_graph", "--modules", "5", "5", "5", "--active-per-sample", "4"),
     UsageError, r"--active-per-sample must be at most the number of modules \(3\), got 4")
_add(S, C, "--seed -1",
     lambda tmp: _script("learned_graph", "--seed", "-1"),
     UsageError, r"--seed must be >= 0, got \[-1\]")
_add(S, C, "--presets fast (no such preset)",
     lambda tmp: _script("learned_graph", "--presets", "fast"),
     UsageError, r"argument --presets: invalid choice: 'fast'")
_add(S, C, "--warmup-steps -1 (refused before anything is written)",
     lambda tmp: _script("learned_graph", "--warmup-steps", "-1", "--out", str(tmp / "out")),
     UsageError, r"--warmup-steps must be >= 0, got -1")
_add(S, C, "--within-corr 1.5",
     lambda tmp: _script("learned_graph", "--within-corr", "1.5"),
     UsageError, r"argument --within-corr: expected a number in \[0, 1\], got '1\.5'")
_add(S, "python -m pipelines.learned_graph --config FILE", "within_corr = 2",
     lambda tmp: _script("learned_graph", "--config",
                         _config(tmp, "c.toml", "within_corr = 2\n")),
     UsageError, r"key 'within_corr' expects a list, each a number in \[0, 1\], got 2")
_add(S, C, "--benchmark unequal --modules 3 3 (6 correlations for 2 modules)",
     lambda tmp: _script("learned_graph", "--benchmark", "unequal", "--modules", "3", "3"),
     UsageError, r"--within-corr must be one value or one per module \(2\), got 6 values "
                 r"\(of the unequal benchmark\)")
_add(S, C, "--within-corr 0.5 0.4 for 3 modules",
     lambda tmp: _script("learned_graph", "--within-corr", "0.5", "0.4"),
     UsageError, r"--within-corr must be one value or one per module \(3\), got 2 values "
                 r"\(given\)")
_add(S, C, "--benchmark 4x4 (no such benchmark)",
     lambda tmp: _script("learned_graph", "--benchmark", "4x4"),
     UsageError, r"argument --benchmark: invalid choice: '4x4'")
C = "python -m pipelines.single_cell"
_add(S, C, "--genes and --hvg together",
     lambda tmp: _script("single_cell", "--genes", "Gata1", "--hvg", "10"),
     UsageError, r"pass either --genes or --hvg, not both")
_add(S, C, "--module-method spectral without --num-modules",
     lambda tmp: _script("single_cell", "--module-method", "spectral"),
     UsageError, r"--module-method spectral needs --num-modules")
_add(S, C, "--data naming a file that does not exist",
     lambda tmp: _script("single_cell", "--data", str(tmp / "atlas.h5ad")),
     FileNotFoundError, r"no such file: '.*atlas\.h5ad'")
_add(S, C, "--num-modules 101 for 100 latent neurons (refused before training)",
     lambda tmp: _script("single_cell", "--module-method", "spectral", "--num-modules", "101",
                         "--warmup-steps", "2", "--refresh-every", "2", "--learning-steps",
                         "2", "--embedding", "pca", "--quiet", "--out", str(tmp / "out")),
     UsageError, r"--num-modules must be at most the latent width 100")
_add(S, C, "--holdout 0.7 (most cells held out of training)",
     lambda tmp: _script("single_cell", "--holdout", "0.7"),
     UsageError, r"argument --holdout: expected a number in \[0, 0\.5\], got '0\.7'")

C = "python -m pipelines.mnist_grid --config FILE"
_add(S, C, "unknown key 'epoch'",
     lambda tmp: _script("mnist_grid", "--config", _config(tmp, "c.toml", "epoch = 3\n")),
     UsageError, r"config file '.*c\.toml': unknown key 'epoch'; did you mean epochs\? known "
                 r"keys: batch_size, conv_head")
_add(S, C, "epochs = \"3\" (a string for an integer)",
     lambda tmp: _script("mnist_grid", "--config", _config(tmp, "c.toml", 'epochs = "3"\n')),
     UsageError, r"key 'epochs' expects an integer >= 1, got '3'")
_add(S, C, "epochs = 2.5",
     lambda tmp: _script("mnist_grid", "--config", _config(tmp, "c.toml", "epochs = 2.5\n")),
     UsageError, r"key 'epochs' expects an integer >= 1, got 2\.5")
_add(S, C, "weights = 0.1 (a number for a list)",
     lambda tmp: _script("mnist_grid", "--config", _config(tmp, "c.toml", "weights = 0.1\n")),
     UsageError, r"key 'weights' expects a list, each a finite number >= 0, got 0\.1")
_add(S, C, "weights = [0, -1]",
     lambda tmp: _script("mnist_grid", "--config", _config(tmp, "c.toml", "weights = [0, -1]\n")),
     UsageError, r"key 'weights'\[1\] expects a finite number >= 0, got -1")
_add(S, C, "conv_head = 1 (a number for a flag)",
     lambda tmp: _script("mnist_grid", "--config", _config(tmp, "c.toml", "conv_head = 1\n")),
     UsageError, r"key 'conv_head' is a flag: expected true or false, got 1")
_add(S, C, "a nested table [train]",
     lambda tmp: _script("mnist_grid", "--config",
                         _config(tmp, "c.toml", "[train]\nepochs = 3\n")),
     UsageError, r"unknown key 'train'")
_add(S, C, "a file that is not TOML",
     lambda tmp: _script("mnist_grid", "--config", _config(tmp, "c.toml", "epochs = \n")),
     UsageError, r"config file '.*c\.toml' is not valid TOML: Invalid value")
_add(S, C, "a JSON file holding a list",
     lambda tmp: _script("mnist_grid", "--config", _config(tmp, "c.json", "[1, 2]")),
     UsageError, r"config file '.*c\.json' must hold a table of settings, got a list")
_add(S, C, "a JSON file that is not JSON",
     lambda tmp: _script("mnist_grid", "--config", _config(tmp, "c.json", "{epochs: 3}")),
     UsageError, r"config file '.*c\.json' is not valid JSON: Expecting property name")
_add(S, C, "a .yaml file",
     lambda tmp: _script("mnist_grid", "--config", _config(tmp, "c.yaml", "epochs: 3\n")),
     UsageError, r"config file '.*c\.yaml' must end in \.toml or \.json, got '\.yaml'")
_add(S, C, "a config file that does not exist",
     lambda tmp: _script("mnist_grid", "--config", str(tmp / "missing.toml")),
     UsageError, r"config file '.*missing\.toml' does not exist or is not a file")
_add(S, C, "quick = \"yes\" (a string for a flag)",
     lambda tmp: _script("mnist_grid", "--config", _config(tmp, "c.toml", 'quick = "yes"\n')),
     UsageError, r"key 'quick' is a flag: expected true or false, got 'yes'")
C = "python -m pipelines.topographic_comparison"
_add(S, C, "--objectives laplace (not a choice)",
     lambda tmp: _script("topographic_comparison", "--objectives", "laplace"),
     UsageError, r"argument --objectives: invalid choice: 'laplace'")
_add(S, C, "--weight-strengths -1",
     lambda tmp: _script("topographic_comparison", "--weight-strengths", "-1"),
     UsageError, r"argument --weight-strengths: expected a finite number >= 0, got '-1'")
_add(S, C, "--objectives layout without none",
     lambda tmp: _script("topographic_comparison", "--objectives", "layout", "laplacian"),
     UsageError, r"objectives: layout places the units of the run without an objective, so "
                 r"it needs none too")
_add(S, "python -m pipelines.pretrained_topography", "--grid 32 (one number for two)",
     lambda tmp: _script("pretrained_topography", "--grid", "32"),
     UsageError, r"argument --grid: expected 2 arguments")
_add(S, "python -m pipelines.pretrained_topography --config FILE", "grid = [32, 48, 2]",
     lambda tmp: _script("pretrained_topography", "--config",
                         _config(tmp, "c.toml", "grid = [32, 48, 2]\n")),
     UsageError, r"key 'grid' expects a list of 2, each an integer >= 1, got \[32, 48, 2\]")
_add(S, C, "--validation-images as many as MNIST's training images",
     lambda tmp: _script("topographic_comparison", "--tasks", "mnist",
                         "--validation-images", "60000", "--out", str(tmp / "out"),
                         "--data", str(_mnist_dir(tmp))),
     ValueError, r"--validation-images 60000 leaves no MNIST training image \(there are 2\)")
_add(S, "python -m pipelines.reconstruction_cost --config FILE",
     "regularizers = [\"l1\", \"l3\"] (not a choice)",
     lambda tmp: _script("reconstruction_cost", "--config",
                         _config(tmp, "c.toml", 'regularizers = ["l1", "l3"]\n')),
     UsageError, r"key 'regularizers'\[1\] expects one of 'none', 'l1', 'l2', 'gsr', got 'l3'")
_add(S, "python -m pipelines.single_cell --config FILE", "scale = \"zscore\" (not a choice)",
     lambda tmp: _script("single_cell", "--config", _config(tmp, "c.toml", 'scale = "zscore"\n')),
     UsageError, r"key 'scale' expects one of 'standard', 'minmax', 'none', got 'zscore'")


# --------------------------------------------------------------------------------------------
# spectral family: filtered forms a^T h(L) a and the graph-Fourier read-outs
# --------------------------------------------------------------------------------------------

def _readout(name: str, *args, **options):
    """``gsr_pyg.metrics.<name>(*args, **options)``."""
    from gsr_pyg import metrics

    return getattr(metrics, name)(*args, **options)


def _filtered_penalty_after_loading(saved: dict, **options) -> None:
    """Load a regularizer state into a fresh regularizer with ``options``."""
    _, reg = _regularize(graphs.ring(4), **options)
    reg.load_state_dict(saved)


def _state_with(**options) -> dict:
    return _regularize(graphs.ring(4), **options)[1].state_dict()


S = "spectral"
X6 = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
C = "filtered_quadratic_form(x, data, response)"
_add(S, C, "a callable h(lambda) = lambda - 1, negative at 0",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6), lambda lam: lam - 1.0),
     # the eigenvalue 0 comes out of the eigensolver as 0 or a rounding error of 1e-16
     ValueError, r"response callable .*<lambda> is negative on the spectrum of L: "
                 r"h\((0|-?[0-9.]+e-1[5-7])\) = -1; "
                 r"a penalty a\^T h\(L\) a must be bounded below")
_add(S, "filtered_quadratic_form(x, data, response, method='chebyshev')",
     "h(lambda) = cos(lambda), negative inside [0, lambda_max]",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6), torch.cos,
                                                  method="chebyshev"),
     ValueError, r"response callable torch\.cos is negative on \[0, lambda_max=4\]")
_add(S, C, "response = 'heet' (a typo)",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6), "heet", t=1.0),
     ValueError, r"response must be a preset name \('laplacian', 'power', 'heat', 'high_pass'\) "
                 r"or a callable on eigenvalues, got 'heet'; closest: 'heat'")
_add(S, C, "response = 3 (a number)",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6), 3),
     TypeError, r"response must be a preset name .* or a callable on eigenvalues, got 3")
_add(S, "filtered_quadratic_form(x, data, 'heat', **params)", "p=2 (a parameter of 'power')",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6), "heat", p=2.0),
     ValueError, r"response 'heat' takes parameters \('t',\), got unknown parameter 'p'")
_add(S, "filtered_quadratic_form(x, data, 'heat', **params)", "t missing",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6), "heat"),
     ValueError, r"response 'heat' needs the parameter t \(a number > 0\), e\.g\. "
                 r"\('heat', \{'t': 1\.0\}\)")
_add(S, "filtered_quadratic_form(x, data, 'power', p)", "p = -1",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6), "power", p=-1.0),
     ValueError, r"parameter p of response 'power' must be finite and > 0, got -1\.0")
_add(S, "filtered_quadratic_form(x, data, 'high_pass', cutoff)", "cutoff = '1' (a string)",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6), "high_pass", cutoff="1"),
     TypeError, r"parameter cutoff of response 'high_pass' must be a number, got '1'")
_add(S, C, "a callable with parameters beside it",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6), lambda lam: lam, t=1.0),
     ValueError, r"response is a callable, which takes no parameters \(bind them in the "
                 r"callable\), got \['t'\]")
_add(S, C, "a callable that returns one number",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6), lambda lam: lam.sum()),
     ValueError, r"must return a tensor of the shape of its input \(6,\), got tensor of "
                 r"shape \(\)")
_add(S, C, "a callable that returns NaN",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6),
                                                  lambda lam: lam * float("nan")),
     ValueError, r"is not finite on the spectrum of L: h\([^)]*\) = nan")
_add(S, C, "x with 5 features for a 6-node graph",
     lambda tmp: spectral.filtered_quadratic_form(torch.randn(2, 5), graphs.ring(6), "heat",
                                                  t=1.0),
     ValueError, r"x has 5 features in dimension 1 but the graph has 6 nodes")
_add(S, "filtered_quadratic_form(x, data, response, method)", "method = 'lanczos'",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6), "heat", t=1.0,
                                                  method="lanczos"),
     ValueError, r"method must be one of \('auto', 'exact', 'chebyshev'\), got 'lanczos'")
_add(S, "filtered_quadratic_form(x, data, response, order)", "order = 0",
     lambda tmp: spectral.filtered_quadratic_form(X6, graphs.ring(6), "heat", t=1.0, order=0),
     ValueError, r"order must be >= 1, got 0")
_add(S, "FilteredOperator(data, SpectralFilter(...), order)",
     "order given beside a SpectralFilter",
     lambda tmp: spectral.FilteredOperator(graphs.ring(6), spectral.SpectralFilter("heat", t=1.0),
                                           order=30),
     ValueError, r"response is a SpectralFilter, which carries its own method, order and "
                 r"parameters; got order=30 beside it")
_add(S, "FilteredOperator(data, response)(x)", "x on another device than the operator ('meta')",
     lambda tmp: spectral.FilteredOperator(graphs.ring(6), "heat", t=1.0)(
         torch.randn(2, 6, device="meta")),
     ValueError, r"x is on meta but the FilteredOperator is on cpu; move it once with "
                 r"op\.to\('meta'\)")
_add(S, "as_spectral_filter(value)", "the pair ('heat', 1.0)",
     lambda tmp: spectral.as_spectral_filter(("heat", 1.0)),
     TypeError, r"response as a pair must be \(preset name, \{parameter: value\}\), got "
                r"\('heat', 1\.0\)")
_add(S, "SpectralFilter.from_config(config)", "the config of a callable",
     lambda tmp: spectral.SpectralFilter.from_config(
         spectral.SpectralFilter(torch.sqrt).config()),
     ValueError, r"a filter config must be 'laplacian' or a mapping with a preset 'response'")
_add(S, "chebyshev_fit(response, lambda_max)", "lambda_max = 0",
     lambda tmp: spectral.chebyshev_fit("laplacian", 0.0),
     ValueError, r"lambda_max must be finite and > 0, got 0\.0")
_add(S, "chebyshev_moments(x, data, lambda_max)", "lambda_max below the spectral bound",
     lambda tmp: spectral.chebyshev_moments(X6, graphs.ring(6), lambda_max=3.0),
     ValueError, r"lambda_max must be at least the bound 4 of the graph's largest eigenvalue "
                 r"\(lambda_max_bound\), got 3\.0")
_accepted(S, C, "a graph without edges (spectrum {0}), h(lambda) = lambda + 1",
          lambda tmp: spectral.filtered_quadratic_form(X6, _empty_graph(6),
                                                       lambda lam: lam + 1.0,
                                                       method="chebyshev"),
          lambda q: _expect(torch.allclose(q, X6.square().sum(dim=1))),
          "accepted: h(0) |a|^2 for every sample, by either method")
C = "metrics.graph_fourier_energy(x, data, bands)"
_add(S, C, "bands = 0",
     lambda tmp: _readout("graph_fourier_energy", X6, graphs.ring(6), bands=0),
     ValueError, r"bands must be >= 1, got 0")
_add(S, "metrics.graph_fourier_energy(x, data, method)", "method = 'fft'",
     lambda tmp: _readout("graph_fourier_energy", X6, graphs.ring(6), method="fft"),
     ValueError, r"method must be one of \('auto', 'exact', 'chebyshev'\), got 'fft'")
_add(S, "metrics.graph_fourier_energy(x, data)", "x with 5 features for a 6-node graph",
     lambda tmp: _readout("graph_fourier_energy", torch.randn(2, 5), graphs.ring(6)),
     ValueError, r"x has 5 features in dimension 1 but the graph has 6 nodes")
_add(S, "metrics.graph_wavelet_energy(x, data, scales)", "scales = [1, -2]",
     lambda tmp: _readout("graph_wavelet_energy", X6, graphs.ring(6), scales=[1.0, -2.0]),
     ValueError, r"scales must be a non-empty 1-D sequence of finite numbers > 0, got "
                 r"\[1\.0, -2\.0\]")
_accepted(S, "metrics.graph_fourier_energy(x, data)", "a graph without edges",
          lambda tmp: _readout("graph_fourier_energy", X6, _empty_graph(6)),
          lambda e: _expect(bool((e.frequencies == 0).all())
                            and abs(float(e.energy.sum()) - float(X6.square().sum(1).mean()))
                            < 1e-9),
          "accepted: every frequency is 0 and the energies still sum to the mean |a|^2")

S = "regularizer"
C = "GraphSpectralRegularizer(model, graphs, spectral_response)"
_add(S, C, "'heat' without its parameter t",
     lambda tmp: _regularize(graphs.ring(4), spectral_response="heat"),
     ValueError, r"spectral_response for layer 'fc1' 'heat' needs the parameter t")
_add(S, C, "a mapping with an entry for 'fc2' (not regularized)",
     lambda tmp: _regularize(graphs.ring(4), spectral_response={"fc2": "laplacian"}),
     ValueError, r"spectral_response has an entry for 'fc2', which is not a regularized layer; "
                 r"closest: 'fc1'")
_add(S, "GraphSpectralRegularizer(model, graphs, objective, spectral_response)",
     "spectral_response=('heat', {'t': 1.0}) with objective='weight_smoothness'",
     lambda tmp: _regularize(graphs.ring(4), objective="weight_smoothness",
                             spectral_response=("heat", {"t": 1.0})),
     ValueError, r"layer 'fc1' has objective='weight_smoothness', which does not use "
                 r"spectral_response=SpectralFilter\('heat', t=1\.0, method='auto', order=20\)")
_add(S, "reg.load_state_dict(state)", "a state saved with spectral_response 'laplacian'",
     lambda tmp: _filtered_penalty_after_loading(
         _state_with(), spectral_response=("heat", {"t": 1.0})),
     ValueError, r"regularizer state of layer 'fc1' was saved with spectral_response "
                 r"'laplacian', but this regularizer has \{'response': 'heat'")

S = "modules"
C = "readouts.graph_feature_modules(correlations, neuron_labels)"
_add(S, C, "one feature (nothing to cluster)",
     lambda tmp: readouts.graph_feature_modules(torch.rand(4, 1), torch.tensor([0, 0, 1, 1])),
     ValueError, r"correlations must have at least 2 features \(columns\), got 1")
_add(S, C, "a label per neuron missing",
     lambda tmp: readouts.graph_feature_modules(torch.rand(4, 3), torch.tensor([0, 1])),
     ValueError, r"neuron_labels must have 4 entries \(one per row of correlations\), got 2")
_add(S, C, "NaN in the correlations",
     lambda tmp: readouts.graph_feature_modules(torch.tensor([[NAN, 0.1]]), torch.tensor([0])),
     ValueError, r"correlations .*NaN")
_add(S, C, "min_strength = -1",
     lambda tmp: readouts.graph_feature_modules(torch.rand(4, 3), torch.tensor([0, 0, 1, 1]),
                                                min_strength=-1),
     ValueError, r"min_strength must be .*>= 0.*-1")
C = "readouts.feature_module_baselines(inputs)"
_add(S, C, "two features",
     lambda tmp: readouts.feature_module_baselines(torch.randn(10, 2)),
     ValueError, r"inputs must have at least 2 samples and 3 features, got shape \(10, 2\)")
_add(S, C, "an infinite value",
     lambda tmp: readouts.feature_module_baselines(torch.full((4, 3), float("inf"))),
     ValueError, r"inputs .*(inf|finite)")
C = "metrics.cluster_by_silhouette(distances, method, points)"
_add(S, C, "method='kmeans' without points",
     lambda tmp: metrics.cluster_by_silhouette(torch.zeros(3, 3), "kmeans"),
     ValueError, r"method='kmeans' needs points")
_add(S, C, "a NaN distance",
     lambda tmp: metrics.cluster_by_silhouette(torch.full((3, 3), NAN)),
     ValueError, r"distances must be finite, got NaN or infinite values")
_add(S, C, "min_silhouette = 2",
     lambda tmp: metrics.cluster_by_silhouette(torch.zeros(3, 3), min_silhouette=2.0),
     ValueError, r"min_silhouette must be a number in \[-1, 1\], got 2\.0")
_add(S, "metrics.silhouette_score(distances, labels)", "every item in one cluster",
     lambda tmp: metrics.silhouette_score(torch.zeros(4, 4), [0, 0, 0, 0]),
     ValueError, r"labels must form 2 to n - 1 = 3 clusters, got 1")
_add(S, "metrics.edge_jaccard(a, b)", "graphs over different numbers of nodes",
     lambda tmp: metrics.edge_jaccard(graphs.ring(4), graphs.ring(5)),
     ValueError, r"a and b must have the same nodes, got 4 and 5 nodes")
