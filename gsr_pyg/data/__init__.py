"""Data with known truth (synthetic), MNIST offline, single-cell AnnData loading, and an
English text corpus from the standard library's docstrings."""

from .mnist import (
    MNIST_ENV_VAR,
    MnistSplit,
    load_digits_8x8,
    load_mnist,
    load_mnist_split,
    split_validation,
)
from .single_cell import (
    BUILTIN_DATASETS,
    add_krumsiek11_columns,
    annotate_anndata,
    cell_embedding,
    load_anndata,
    obs_labels,
    obs_values,
    prepare_matrix,
    write_h5ad,
)
from .synthetic import (
    TRAJECTORY_GROUPS,
    PlantedModules,
    Trajectory,
    branching_trajectory,
    planted_modules,
)
from .text import CharVocabulary, split_by_module, stdlib_docstrings, text_chunks

__all__ = [
    "MNIST_ENV_VAR", "load_digits_8x8", "load_mnist", "load_mnist_split", "MnistSplit",
    "split_validation", "BUILTIN_DATASETS", "load_anndata",
    "obs_labels", "obs_values", "prepare_matrix", "add_krumsiek11_columns", "annotate_anndata",
    "cell_embedding", "write_h5ad", "TRAJECTORY_GROUPS", "PlantedModules",
    "Trajectory", "branching_trajectory", "planted_modules", "CharVocabulary",
    "split_by_module", "stdlib_docstrings", "text_chunks",
]
