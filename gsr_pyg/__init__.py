"""gsr-pyg: Graph Spectral Regularization on PyTorch Geometric."""

__version__ = "0.1.0"
