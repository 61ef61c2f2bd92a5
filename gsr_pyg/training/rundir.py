"""The run directory: what a run writes, and :class:`History`, what it produced.

Every file is written to a temporary name, then renamed (:func:`gsr_pyg.files.atomic_write`),
so a run killed at any moment leaves only whole files::

    config.json            the resolved configuration; a different one is refused
    metrics.jsonl          one JSON object per logged step (flushed at each checkpoint)
    snapshots/<layer>/NNNN_step<S>.pt       learned graph (tensors, weights_only)
    snapshots/<layer>/NNNN_step<S>.graphml  the same graph for networkx / Cytoscape
    checkpoint.pt          model, optimizer, regularizer, learner and loop state, RNG states
    summary.json           written at the end

Under several processes only the main one writes; the others know the paths.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from .. import graphs as graphs_mod
from ..files import atomic_write, json_default, write_json, write_text

__all__ = ["RunDirectory", "History", "load_snapshot", "safe_load"]

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 2  # 2: the regularizer's settings as data, progress keys renamed
_CHECKPOINT_KEYS = ("model", "optimizer", "regularizer", "learning", "loop", "world_size",
                    "per_rank")
_SNAPSHOT_KEYS = ("edge_index", "edge_weight", "num_nodes", "step", "layer")


def safe_load(path, what: str) -> dict:
    """A file of tensors and plain containers read with ``weights_only=True`` (never running
    code from it); a file that cannot be read is a ValueError naming it and ``what`` it is."""
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


def load_snapshot(path: str | os.PathLike) -> Data:
    """Read a ``.pt`` snapshot (``weights_only=True``) back into a ``Data`` whose ``step`` and
    ``name`` (the layer) say when and where it was learned."""
    state = safe_load(path, "snapshot")
    missing = [key for key in _SNAPSHOT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"snapshot file {str(path)!r} is not a gsr_pyg graph snapshot: it "
                         f"lacks {', '.join(missing)}")
    data = Data(edge_index=state["edge_index"], edge_weight=state["edge_weight"],
                num_nodes=state["num_nodes"])
    data.step = state["step"]
    data.name = state["layer"]
    return data


def snapshot_dirname(layer: str) -> str:
    """The folder name of a layer's snapshots (the layer name, file-system safe).

    Example:
        >>> snapshot_dirname("encoder.layers.0")
        'encoder.layers.0'
        >>> snapshot_dirname("a/b c")
        'a_b_c'
    """
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in layer) or "layer"


class History:
    """What a run produced: learned-graph snapshots and logged metrics.

    Snapshots live on disk when the run has a directory (only their step, layer and path are
    held in memory), otherwise in memory. Metric rows of a run with a directory are read from
    its ``metrics.jsonl``.

    Example:
        >>> history = History()
        >>> history.add_snapshot(5, "fc1", Data(edge_index=torch.tensor([[0, 1], [1, 0]]),
        ...                                     edge_weight=torch.ones(2), num_nodes=3))
        >>> history.add_metrics({"step": 5, "task_loss": 0.25})
        >>> len(history), history.layers, history.snapshot_steps("fc1"), history.metrics
        (1, ['fc1'], [5], [{'step': 5, 'task_loss': 0.25}])
    """

    def __init__(self, run_dir: str | os.PathLike | None = None):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._records: list[tuple[int, str, Data | Path]] = []  # (step, layer, Data or path)
        self._metrics: list[dict] = []

    def add_snapshot(self, step: int, layer: str, snapshot: Data | str | os.PathLike) -> None:
        """Record the graph of ``layer`` learned at ``step``: a ``Data`` or the path of its
        ``.pt`` snapshot file (read when asked for)."""
        if not isinstance(snapshot, Data):
            snapshot = Path(snapshot)
        self._records.append((int(step), layer, snapshot))

    def add_metrics(self, row: dict) -> None:
        """Record one metrics row held in memory (a run with a directory writes its rows to
        ``metrics.jsonl`` instead)."""
        self._metrics.append(row)

    def records(self) -> list[tuple[int, str, Data | Path]]:
        """``(step, layer, snapshot)`` of every learned graph in order, the snapshot a
        ``Data`` held in memory or the path of its file (nothing is read)."""
        return list(self._records)

    @property
    def layers(self) -> list[str]:
        return sorted({layer for _, layer, _ in self._records})

    @staticmethod
    def _load(item: Data | Path) -> Data:
        return item if isinstance(item, Data) else load_snapshot(item)

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
        """Every logged row: those of ``metrics.jsonl``, then those held in memory."""
        if self.run_dir is not None and (self.run_dir / "metrics.jsonl").exists():
            with open(self.run_dir / "metrics.jsonl", encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
            return rows + self._metrics
        return list(self._metrics)

    def to_networkx(self, index: int = -1, layer: str | None = None):
        """The ``index``-th snapshot (of ``layer``) as a networkx graph
        (:func:`gsr_pyg.graphs.to_networkx`), with its ``step`` as a graph attribute."""
        records = [(s, item) for s, name, item in self._records if layer is None or name == layer]
        if not records:
            raise ValueError("the run has no learned-graph snapshots")
        step, item = records[index]  # only this snapshot is read from disk
        graph = graphs_mod.to_networkx(self._load(item))
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


class RunDirectory:
    """The files of one run (see the module's docstring). ``is_main``: whether this process
    writes them (the main process under torchrun; every other process only reads)."""

    def __init__(self, path: str | os.PathLike, is_main: bool = True):
        self.path = Path(path)
        self.is_main = is_main
        self._pending_metrics: list[dict] = []

    # ------------------------------------------------------------------ config
    def prepare(self, config: dict) -> bool:
        """Create the directory and write ``config.json``, or check that the run it holds has
        the same ``config``; True when it holds a checkpoint to resume."""
        config = json.loads(json.dumps(config, default=json_default))
        path = self.path / "config.json"
        try:
            if self.is_main:
                self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"run_dir {str(self.path)!r} cannot be created: {err}") from None
        if self.is_main:
            self._check_writable()
        if not path.exists():
            if self.is_main:
                write_json(path, config, sort_keys=True)
            return False
        with open(path, encoding="utf-8") as fh:
            try:
                old = json.load(fh)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON ({err}); remove the run "
                                 "directory or choose another") from None
        if not isinstance(old, dict):
            raise ValueError(f"{path} must hold a JSON object (the run's settings), got a "
                             f"{type(old).__name__}; remove the run directory or choose another")
        if old != config:
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            detail = "; ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff[:5])
            raise ValueError(
                f"run_dir {str(self.path)!r} holds a run with a different config "
                f"({detail}); use another run_dir or remove it to start again"
            )
        return (self.path / CHECKPOINT).exists()

    def _check_writable(self) -> None:
        """Create and remove a file: permission bits alone do not tell (root ignores them,
        and some file systems refuse files whatever the bits say)."""
        try:
            with tempfile.TemporaryFile(dir=self.path, prefix=".gsr-write-test."):
                pass
        except OSError as err:
            raise ValueError(f"run_dir {str(self.path)!r} is not writable "
                             f"({err.strerror or type(err).__name__})") from None

    # ------------------------------------------------------------------ checkpoints
    def write_checkpoint(self, state: dict) -> None:
        """Flush the pending metric rows, then write ``checkpoint.pt`` (main process only):
        the rows on disk never run ahead of the checkpoint they are resumed from."""
        if not self.is_main:
            return
        self.flush_metrics()
        atomic_write(self.path / CHECKPOINT, lambda tmp: torch.save(state, tmp))

    def read_checkpoint(self, world_size: int) -> dict:
        """``checkpoint.pt``, checked: its format, its keys and the world size that wrote it."""
        path = self.path / CHECKPOINT
        state = safe_load(path, "checkpoint")
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint file {str(path)!r} was not written by this version of "
                             "gsr_pyg")
        missing = [key for key in _CHECKPOINT_KEYS if key not in state]
        if missing:
            raise ValueError(f"checkpoint file {str(path)!r} is incomplete: it lacks "
                             f"{', '.join(missing)}; remove it to start the run again")
        if state["world_size"] != world_size:
            raise ValueError(
                f"checkpoint {str(path)!r} was written by {state['world_size']} process(es) but "
                f"this run has {world_size}: resume with the same world size (torchrun "
                f"--nproc_per_node / --nnodes), or start a new run directory")
        return state

    # ------------------------------------------------------------------ metrics
    def add_metrics(self, row: dict) -> None:
        """Hold a metrics row until the next checkpoint writes it."""
        if self.is_main:
            self._pending_metrics.append(row)

    def flush_metrics(self) -> None:
        """Append the pending rows to ``metrics.jsonl`` atomically (copy + append + rename)."""
        if not self.is_main or not self._pending_metrics:
            return
        path = self.path / "metrics.jsonl"
        lines = "".join(json.dumps(row, default=json_default) + "\n"
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

    def truncate_metrics(self, step: int) -> None:
        """Drop the rows logged after ``step`` (a resumed run logs them again)."""
        path = self.path / "metrics.jsonl"
        if not self.is_main or not path.exists():
            return
        with open(path, encoding="utf-8") as fh:
            rows = [line for line in fh if line.strip() and json.loads(line)["step"] <= step]
        write_text(path, "".join(rows))

    # ------------------------------------------------------------------ snapshots
    def write_snapshot(self, index: int, step: int, layer: str, graph: Data) -> Path:
        """Write the ``index``-th snapshot of the run (``.pt`` and GraphML); returns the path
        of the ``.pt`` file (also in processes that do not write)."""
        folder = self.path / "snapshots" / snapshot_dirname(layer)
        stem = f"{index:04d}_step{step}"
        if self.is_main:
            tensors = {"edge_index": graph.edge_index.detach().cpu(),
                       "edge_weight": graph.edge_weight.detach().cpu(),
                       "num_nodes": int(graph.num_nodes), "step": int(step), "layer": layer}
            exported = Data(edge_index=tensors["edge_index"], edge_weight=tensors["edge_weight"],
                            num_nodes=tensors["num_nodes"], name=layer)
            graphs_mod.write_graphml(exported, folder / f"{stem}.graphml",
                                     graph_attributes={"step": int(step), "layer": layer})
            atomic_write(folder / f"{stem}.pt", lambda tmp: torch.save(tensors, tmp))
        return folder / f"{stem}.pt"

    def restore_snapshots(self, num_snapshots: int, layers: list[str]) -> History:
        """A :class:`History` of the first ``num_snapshots`` snapshot files (those a
        checkpoint knows); later ones, written after it by a run that was killed, are
        removed: the resumed run writes them again. ``layers``: the learned layers' names,
        to read back from their folder names."""
        by_dirname = {snapshot_dirname(name): name for name in layers}
        snap_dir = self.path / "snapshots"
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
        history = History(self.path)
        for _, step, dirname, file in records[:num_snapshots]:
            history.add_snapshot(step, by_dirname.get(dirname, dirname), file)
        return history

    def write_summary(self, summary: dict) -> None:
        if self.is_main:
            write_json(self.path / "summary.json", summary)
