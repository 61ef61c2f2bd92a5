"""gsr-pyg: Graph Spectral Regularization on PyTorch Geometric.

The neurons of a layer are the nodes of a PyG ``Data`` graph; the penalty
``weight * mean_b a_b^T L a_b`` makes neighbouring neurons fire together. Graphs are enforced
(:mod:`gsr_pyg.graphs`) or learned from co-activations (:mod:`gsr_pyg.learn`) and alternated
with training by :class:`gsr_pyg.training.GSRTrainer`.

``plotting`` and ``report`` import matplotlib only when used.
"""

import importlib

from . import (
    capture,
    data,
    files,
    graphs,
    hookable,
    layout,
    learn,
    metrics,
    models,
    objectives,
    readouts,
    refresh,
    regularizer,
    schedules,
    spectral,
    training,
)
from .regularizer import GraphSpectralRegularizer

__version__ = "0.1.0"

__all__ = [
    "GraphSpectralRegularizer", "capture", "data", "files", "graphs", "hookable", "layout",
    "learn", "metrics", "models", "objectives", "plotting", "readouts", "refresh", "regularizer",
    "report", "schedules", "spectral", "training", "__version__",
]


def __getattr__(name):
    if name in ("plotting", "report"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'gsr_pyg' has no attribute {name!r}")
