"""Single-cell data as AnnData: loading, a model-ready matrix, cell labels, and the results
of a learned neuron graph written back (:func:`annotate_anndata`, :func:`write_h5ad`).

``anndata`` (and, for the bundled datasets and highly variable genes, ``scanpy``) are
optional: install them with ``pip install gsr-pyg[sc]``. They are imported when a function
needs them.

Bundled datasets (shipped inside scanpy, loaded offline):

* ``"pbmc68k_reduced"``: 700 cells x 765 genes of human PBMCs. ``X`` is already
  log-normalised and z-scored per gene (values about -2..28); ``adata.raw`` holds the
  log-normalised matrix (sparse, same 765 genes; use ``layer="raw"``). ``obs`` columns:
  ``"bulk_labels"`` (10 cell types, among them CD4+ and CD8+ T-cell subsets, CD14+
  monocytes, CD19+ B, CD56+ NK, dendritic and CD34+ cells), ``"louvain"`` (11 clusters),
  ``"phase"`` (G1, G2M, S) and the numeric ``"n_genes"``, ``"percent_mito"``,
  ``"n_counts"``, ``"S_score"``, ``"G2M_score"``. ``var["highly_variable"]`` marks 309
  genes.
* ``"krumsiek11"``: 640 cells x 11 genes (Gata2, Gata1, Fog1, EKLF, Fli1, SCL, Cebpa,
  Pu.1, cJun, EgrNab, Gfi1), simulated myeloid differentiation from a known boolean
  regulatory network, expression in [0, 1]. ``obs`` column ``"cell_type"``: progenitor,
  Mo, Ery, Mk, Neu. The file repeats cell ids; they are made unique (``"0"``,
  ``"0-1"``, ...). :func:`add_krumsiek11_columns` reads the time step and the branch from
  them.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from gsr_pyg._validation import check_choice, check_int, check_positive, closest_names, describe

__all__ = [
    "BUILTIN_DATASETS",
    "load_anndata",
    "prepare_matrix",
    "obs_labels",
    "obs_values",
    "add_krumsiek11_columns",
    "cell_embedding",
    "annotate_anndata",
    "write_h5ad",
]

#: Names :func:`load_anndata` accepts instead of a path.
BUILTIN_DATASETS: tuple[str, ...] = ("pbmc68k_reduced", "krumsiek11")

_INSTALL_HINT = "install it with `pip install gsr-pyg[sc]`"

# scanpy's "seurat" dispersion takes expm1 of the data: use it only on data that look
# log-normalised (non-negative, no larger than this).
_LOG_SCALE_MAX = 50.0


def _import_anndata():
    try:
        import anndata
    except ImportError as error:
        raise ImportError(f"this function needs anndata: {_INSTALL_HINT}") from error
    return anndata


def _import_scanpy():
    try:
        import scanpy
    except ImportError as error:
        raise ImportError(f"the bundled datasets need scanpy: {_INSTALL_HINT}") from error
    return scanpy


def _missing_name_message(what: str, name: str, available: Sequence[str]) -> str:
    """``"<what> 'x' not found; closest: [...]; available: [...]"`` (closest first)."""
    available = [str(a) for a in available]
    close = closest_names(str(name), available)
    ordered = close + [a for a in available if a not in close]
    shown = ordered if len(ordered) <= 30 else ordered[:30] + [f"... {len(ordered) - 30} more"]
    hint = f"; closest: {close}" if close else ""
    return f"{what} {name!r} not found{hint}; available: {shown}"


def _check_adata(adata):
    anndata = _import_anndata()
    if not isinstance(adata, anndata.AnnData):
        raise TypeError(f"adata must be an anndata.AnnData, got {describe(adata)}")
    return adata


def _check_not_empty(adata, source) -> None:
    if adata.n_obs == 0:
        raise ValueError(f"{source} has no cells (0 rows)")
    if adata.n_vars == 0:
        raise ValueError(f"{source} has no genes (0 columns)")


def _check_not_empty_table(table, path: Path) -> None:
    if table.shape[0] == 0:
        raise ValueError(f"{str(path)!r} has no cells (a header but no rows)")
    if table.shape[1] == 0:
        raise ValueError(f"{str(path)!r} has no genes (only the cell id column)")


def _read_csv(path: Path):
    anndata = _import_anndata()
    import pandas as pd

    try:
        table = pd.read_csv(path, index_col=0)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{str(path)!r} has no cells and no genes (the file is empty)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as error:
        # ragged rows, binary content, a damaged gzip stream
        raise ValueError(
            f"{str(path)!r} is not a readable CSV table of cells x genes: "
            f"{type(error).__name__}: {_first_line(error)}"
        ) from None
    _check_not_empty_table(table, path)
    for column in table.columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            values = table[column]
            numeric = pd.to_numeric(values, errors="coerce")
            bad = values[numeric.isna() & values.notna()]
            example = f": cell {bad.index[0]!r} has {bad.iloc[0]!r}" if len(bad) else ""
            raise ValueError(
                f"{str(path)!r} must hold numbers (cells x genes), but gene column "
                f"{column!r} is not numeric{example}"
            )
    matrix = table.to_numpy(dtype=np.float32)
    obs = pd.DataFrame(index=pd.Index(table.index.astype(str), name=None))
    var = pd.DataFrame(index=pd.Index(table.columns.astype(str), name=None))
    return anndata.AnnData(X=matrix, obs=obs, var=var)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _read_h5ad(path: Path):
    anndata = _import_anndata()
    try:
        return anndata.read_h5ad(path)
    except (OSError, KeyError, ValueError, TypeError) as error:
        # h5py raises OSError for a file that is not HDF5 or is cut short; anndata raises
        # KeyError/ValueError/TypeError for HDF5 files of another layout
        raise ValueError(
            f"{str(path)!r} is not a readable .h5ad file (truncated, corrupted or not written "
            f"by anndata): {type(error).__name__}: {_first_line(error)}"
        ) from None


def _load_builtin(name: str):
    scanpy = _import_scanpy()
    with warnings.catch_warnings():
        # krumsiek11 repeats cell ids; they are made unique below.
        warnings.filterwarnings("ignore", message="Observation names are not unique")
        adata = getattr(scanpy.datasets, name)()
    if not adata.obs_names.is_unique:
        adata.obs_names_make_unique()
    return adata


def load_anndata(source: str | os.PathLike):
    """Load single-cell data as an :class:`anndata.AnnData`.

    Args:
        source: a path to an ``.h5ad`` file, a ``.csv`` / ``.csv.gz`` file (cells x genes:
            the first column holds cell ids, the header gene names, every other entry a
            number; empty entries become NaN), or the name of a dataset bundled with scanpy
            (:data:`BUILTIN_DATASETS`: ``"pbmc68k_reduced"``, ``"krumsiek11"``; see the
            module docstring for their columns). A path that exists wins over a name.

    Raises:
        FileNotFoundError: the path does not exist (the message names it).
        ValueError: unknown file extension, a file that cannot be parsed (truncated or
            corrupted ``.h5ad``, ragged or binary CSV), no cells, no genes, a non-numeric
            CSV entry.
        ImportError: anndata (files) or scanpy (bundled datasets) is not installed.

    Example:
        >>> adata = load_anndata("krumsiek11")
        >>> adata.shape
        (640, 11)
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "source must be a path or the name of a bundled dataset "
            f"{BUILTIN_DATASETS}, got {describe(source)}"
        )
    path = Path(source)
    if isinstance(source, str) and source in BUILTIN_DATASETS and not path.exists():
        return _load_builtin(source)
    if not path.exists():
        hint = ""
        if isinstance(source, str) and not path.suffix:
            close = closest_names(source, BUILTIN_DATASETS)
            hint = f"; bundled datasets: {list(BUILTIN_DATASETS)}"
            hint += f" (did you mean {close[0]!r}?)" if close else ""
        raise FileNotFoundError(f"no such file: {str(path)!r}{hint}")
    if not path.is_file():
        raise ValueError(f"source must be a file, but {str(path)!r} is a directory")
    suffixes = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() == ".h5ad":
        adata = _read_h5ad(path)
    elif path.suffix.lower() == ".csv" or suffixes == ".csv.gz":
        adata = _read_csv(path)
    else:
        raise ValueError(
            f"source {str(path)!r} has an unknown extension {path.suffix!r}; expected "
            "'.h5ad', '.csv' or '.csv.gz'"
        )
    _check_not_empty(adata, repr(str(path)))
    return adata


def _matrix_and_genes(adata, layer: str | None):
    """The chosen matrix as a dense float64 numpy array, with its gene names."""
    if layer is None:
        matrix, genes = adata.X, adata.var_names
        where = "adata.X"
    elif layer in adata.layers:
        matrix, genes = adata.layers[layer], adata.var_names
        where = f"adata.layers[{layer!r}]"
    elif layer == "raw" and adata.raw is not None:
        matrix, genes = adata.raw.X, adata.raw.var_names
        where = "adata.raw.X"
    else:
        available = list(adata.layers.keys()) + (["raw"] if adata.raw is not None else [])
        raise ValueError(_missing_name_message("layer", layer, available))
    if matrix is None:
        raise ValueError(f"{where} is empty (None); pass a layer that holds the expression")
    if hasattr(matrix, "toarray"):  # scipy sparse
        matrix = matrix.toarray()
    matrix = np.asarray(matrix)
    if matrix.dtype.kind not in "biuf":
        raise TypeError(f"{where} must hold numbers, got dtype {matrix.dtype}")
    return matrix.astype(np.float64, copy=False), [str(g) for g in genes], where


def _select_genes(matrix, names: list[str], genes) -> tuple[np.ndarray, list[str]]:
    if isinstance(genes, str) or not isinstance(genes, Sequence):
        raise TypeError(f"genes must be a sequence of gene names, got {describe(genes)}")
    if len(genes) == 0:
        raise ValueError("genes must name at least one gene, got an empty sequence")
    index = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)  # first occurrence when names repeat
    missing = [g for g in genes if g not in index]
    if missing:
        hints = {g: closest_names(str(g), names, n=1) for g in missing[:5]}
        hint = "; ".join(f"{g!r} -> {h[0]!r}?" for g, h in hints.items() if h)
        raise ValueError(
            f"genes: {len(missing)} of {len(genes)} not found in the data: {missing[:20]}"
            + (f" (closest: {hint})" if hint else "")
        )
    duplicated = sorted({g for g in genes if list(genes).count(g) > 1})
    if duplicated:
        raise ValueError(f"genes must not repeat a name, got {duplicated} more than once")
    columns = [index[g] for g in genes]
    return matrix[:, columns], [str(g) for g in genes]


def _check_finite_matrix(matrix: np.ndarray, genes: list[str], where: str) -> None:
    finite = np.isfinite(matrix)
    if not finite.all():
        bad = ~finite
        first = int(np.flatnonzero(bad.any(axis=0))[0])
        raise ValueError(
            f"{where} must be finite, got {int(np.isnan(matrix).sum())} NaN and "
            f"{int(np.isinf(matrix).sum())} Inf values; first in gene {genes[first]!r} "
            f"({int(bad[:, first].sum())} cells)"
        )


def _top_variable(matrix: np.ndarray, n_top: int) -> tuple[np.ndarray, str]:
    """Indices (ascending) of the ``n_top`` most variable genes, and the method used."""
    scores = None
    method = "variance"
    if matrix.min() >= 0 and matrix.max() <= _LOG_SCALE_MAX:
        try:
            import anndata
            import scanpy
        except ImportError:
            pass
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = scanpy.pp.highly_variable_genes(
                    anndata.AnnData(matrix.astype(np.float32)), flavor="seurat",
                    n_top_genes=n_top, inplace=False,
                )
            scores = np.nan_to_num(table["dispersions_norm"].to_numpy(np.float64),
                                   nan=-np.inf)
            method = "seurat"
    if scores is None:
        scores = matrix.var(axis=0)
    order = np.argsort(-scores, kind="stable")  # ties: the earlier gene first
    return np.sort(order[:n_top]), method


def prepare_matrix(
    adata,
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    highly_variable: int | bool | None = None,
    scale: str | None = "standard",
    max_value: float | None = None,
) -> tuple[torch.Tensor, list[str]]:
    r"""A dense ``[cells, genes]`` float32 tensor from an AnnData, ready for a model.

    Steps, in order:

    1. the matrix: ``adata.X`` (``layer=None``), ``adata.layers[layer]``, or
       ``adata.raw.X`` with the raw gene names for ``layer="raw"`` when no layer has that
       name; sparse matrices are densified;
    2. genes: ``genes`` keeps the named genes in the given order; ``highly_variable=n``
       keeps the ``n`` most variable genes in their original order, ranked by scanpy's
       ``highly_variable_genes(flavor="seurat")`` normalised dispersion when scanpy is
       installed and the matrix looks log-normalised (non-negative, at most 50), else by
       variance (ties: earlier gene first); ``highly_variable=True`` keeps the genes
       marked in ``adata.var["highly_variable"]``. ``genes`` and ``highly_variable``
       exclude each other;
    3. every entry must be finite (checked on the selected genes; for ``highly_variable=n``
       on the whole matrix, which the ranking reads);
    4. per-gene scaling: ``"standard"`` :math:`(x - \mu) / \sigma` (population standard
       deviation, as ``sklearn.preprocessing.StandardScaler``), ``"minmax"``
       :math:`(x - \min) / (\max - \min)` to [0, 1], ``None`` unchanged. A constant gene
       is kept and becomes all 0 under either scaling (a ``UserWarning`` names it), so the
       columns always match the gene names returned;
    5. ``max_value``: clip to ``[-max_value, max_value]`` after scaling.

    Scaling is computed in float64 on the CPU, then cast to float32.

    Returns:
        ``(X, gene_names)``: ``X`` float32 ``[cells, genes]`` and the gene of each column.

    Example:
        >>> adata = load_anndata("krumsiek11")
        >>> X, genes = prepare_matrix(adata, genes=["Gata1", "Pu.1"])
        >>> X.shape, genes
        (torch.Size([640, 2]), ['Gata1', 'Pu.1'])
    """
    adata = _check_adata(adata)
    check_choice(scale, "scale", ("standard", "minmax", None))
    if max_value is not None:
        max_value = check_positive(max_value, "max_value")
    if genes is not None and highly_variable is not None:
        raise ValueError("pass either genes or highly_variable, not both")
    _check_not_empty(adata, "adata")
    matrix, names, where = _matrix_and_genes(adata, layer)

    if genes is not None:
        matrix, names = _select_genes(matrix, names, genes)
        _check_finite_matrix(matrix, names, where)
    elif highly_variable is True:
        if "highly_variable" not in adata.var.columns:
            raise ValueError(
                "highly_variable=True needs a boolean adata.var['highly_variable'] column; "
                f"adata.var has {list(adata.var.columns)}; pass a number of genes instead"
            )
        if where == "adata.raw.X":
            raise ValueError("highly_variable=True reads adata.var, which does not describe "
                             "adata.raw; pass a number of genes instead")
        keep = np.flatnonzero(adata.var["highly_variable"].to_numpy(dtype=bool))
        if keep.size == 0:
            raise ValueError("adata.var['highly_variable'] marks no gene")
        matrix, names = matrix[:, keep], [names[i] for i in keep]
        _check_finite_matrix(matrix, names, where)
    elif highly_variable is not None and highly_variable is not False:
        n_top = check_int(highly_variable, "highly_variable", minimum=1, maximum=len(names))
        _check_finite_matrix(matrix, names, where)
        keep, _ = _top_variable(matrix, n_top)
        matrix, names = matrix[:, keep], [names[i] for i in keep]
    else:
        _check_finite_matrix(matrix, names, where)

    if scale is not None:
        if scale == "standard":
            center, spread = matrix.mean(axis=0), matrix.std(axis=0)
        else:
            center = matrix.min(axis=0)
            spread = matrix.max(axis=0) - center
        constant = spread == 0
        if constant.any():
            constant_names = [names[i] for i in np.flatnonzero(constant)]
            warnings.warn(
                f"{len(constant_names)} constant gene(s) set to 0 by {scale!r} scaling: "
                f"{constant_names[:10]}",
                UserWarning,
                stacklevel=2,
            )
        matrix = (matrix - center) / np.where(constant, 1.0, spread)
    if max_value is not None:
        matrix = np.clip(matrix, -max_value, max_value)
    return torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)), names


def _obs_column(adata, column: str):
    adata = _check_adata(adata)
    if not isinstance(column, str):
        raise TypeError(f"column must be a str, got {describe(column)}")
    if column not in adata.obs.columns:
        raise ValueError(_missing_name_message("column", column, adata.obs.columns))
    return adata.obs[column]


def obs_labels(adata, column: str) -> tuple[torch.Tensor, list[str]]:
    """Integer codes of a categorical, string or integer ``adata.obs`` column.

    A pandas categorical keeps its declared categories and order (unused ones included,
    so colours stored beside them in ``adata.uns`` still match); strings, booleans and
    integers get their sorted distinct values. Category names are returned as ``str``.

    Returns:
        ``(codes, categories)``: ``codes`` long ``[cells]`` with
        ``categories[codes[i]]`` the label of cell ``i``.

    Raises:
        ValueError: the column is missing (the message lists the columns, closest
            first), holds floats (use :func:`obs_values`) or has missing values.

    Example:
        >>> codes, names = obs_labels(load_anndata("krumsiek11"), "cell_type")
        >>> names
        ['Ery', 'Mk', 'Mo', 'Neu', 'progenitor']
    """
    import pandas as pd

    values = _obs_column(adata, column)
    if pd.api.types.is_float_dtype(values.dtype):
        raise ValueError(
            f"column {column!r} holds floats ({values.dtype}); use obs_values for numeric "
            "columns such as pseudotime"
        )
    missing = int(values.isna().sum())
    if missing:
        raise ValueError(f"column {column!r} has {missing} missing values; labels need all cells")
    if isinstance(values.dtype, pd.CategoricalDtype):
        categorical = values.cat
    else:
        categorical = values.astype("category").cat
    codes = torch.from_numpy(np.asarray(categorical.codes, dtype=np.int64))
    return codes, [str(c) for c in categorical.categories]


def obs_values(adata, column: str, allow_missing: bool = False) -> torch.Tensor:
    """A numeric ``adata.obs`` column (pseudotime, counts, scores) as float32 ``[cells]``.

    Booleans become 0/1. Missing values raise unless ``allow_missing=True``, which keeps
    them as NaN.

    Raises:
        ValueError: the column is missing (the message lists the columns, closest first),
            is not numeric (use :func:`obs_labels`), or has missing values.

    Example:
        >>> obs_values(load_anndata("pbmc68k_reduced"), "n_genes").shape
        torch.Size([700])
    """
    import pandas as pd

    values = _obs_column(adata, column)
    if isinstance(values.dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype)
    ):
        raise ValueError(
            f"column {column!r} is not numeric ({values.dtype}); use obs_labels for labels"
        )
    array = values.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = int(np.isnan(array).sum())
    if missing and not allow_missing:
        raise ValueError(
            f"column {column!r} has {missing} missing values; pass allow_missing=True to "
            "keep them as NaN"
        )
    return torch.from_numpy(array.astype(np.float32))


# --------------------------------------------------------------------------- krumsiek11
_KRUMSIEK11_CELL_ID = re.compile(r"^(\d+)(?:-(\d+))?$")


def add_krumsiek11_columns(adata) -> list[str]:
    """Add ``time_step`` and ``fate`` to the ``obs`` of the bundled ``krumsiek11``.

    The dataset holds four simulations of 160 time steps each, all starting in the same
    progenitor state. After :func:`load_anndata` a cell id is ``"t"`` (step ``t`` of
    simulation 0) or ``"t-r"`` (step ``t`` of simulation ``r``). The columns added:

    * ``time_step``: the step ``t`` as float32, a pseudotime;
    * ``fate``: categorical, the ``cell_type`` of the last step of the cell's simulation
      (Mo, Ery, Mk or Neu), i.e. the branch a progenitor cell is on.

    A column that already exists is left as it is.

    Args:
        adata: ``load_anndata("krumsiek11")``, or any AnnData with cell ids in this layout
            and a ``cell_type`` column.

    Returns:
        The names of the columns added, in the order above.

    Raises:
        ValueError: a cell id that does not follow the layout (the first one is named), or
            no ``cell_type`` column.

    Example:
        >>> adata = load_anndata("krumsiek11")
        >>> add_krumsiek11_columns(adata)
        ['time_step', 'fate']
        >>> float(adata.obs["time_step"].max()), sorted(adata.obs["fate"].unique())
        (159.0, ['Ery', 'Mk', 'Mo', 'Neu'])
    """
    import pandas as pd

    adata = _check_adata(adata)
    if "cell_type" not in adata.obs.columns:
        raise ValueError(_missing_name_message("column", "cell_type", adata.obs.columns))
    matches = [_KRUMSIEK11_CELL_ID.match(str(name)) for name in adata.obs_names]
    bad = [str(name) for name, match in zip(adata.obs_names, matches, strict=True)
           if match is None]
    if bad:
        raise ValueError(f"adata must have krumsiek11 cell ids 't' or 't-r' (step t of "
                         f"simulation r), got {len(bad)} other ids, the first {bad[0]!r}")
    step = np.array([int(m.group(1)) for m in matches])
    simulation = np.array([int(m.group(2) or 0) for m in matches])
    cell_type = adata.obs["cell_type"].astype(str).to_numpy()
    fate = {}
    for sim in np.unique(simulation):
        cells = np.flatnonzero(simulation == sim)
        fate[sim] = cell_type[cells[np.argmax(step[cells])]]
    added = []
    if "time_step" not in adata.obs.columns:
        adata.obs["time_step"] = step.astype(np.float32)
        added.append("time_step")
    if "fate" not in adata.obs.columns:
        adata.obs["fate"] = pd.Categorical([fate[s] for s in simulation])
        added.append("fate")
    return added


# --------------------------------------------------------------------------- results back
def _as_numpy(value, name: str, *, ndim: int, rows: int | None = None,
              rows_of: str = "") -> np.ndarray:
    """A tensor or array as numpy (on the CPU), with its rank and row count checked."""
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().numpy()
    elif isinstance(value, np.ndarray):
        array = value
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {describe(value)}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(array.shape)}")
    if rows is not None and array.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows ({rows_of}), got shape "
                         f"{tuple(array.shape)}")
    return array


def cell_embedding(latent, method: str = "umap", seed: int = 0) -> np.ndarray:
    """2-D coordinates of the cells from their latent codes (or any representation).

    * ``"umap"``: scanpy's ``pp.neighbors`` on the latent (default 15 neighbours, Euclidean)
      and ``tl.umap``, both seeded with ``seed``; needs scanpy.
    * ``"pca"``: the first two principal components of the centred latent (SVD in float64),
      each axis signed so that its largest absolute coordinate is positive, so the picture
      does not flip between runs; needs no extra package and ignores ``seed``.

    Args:
        latent: ``[cells, d]`` tensor or array (cast to float32); ``d >= 2`` for PCA.
        method: ``"umap"`` (default) or ``"pca"``.
        seed: random seed of UMAP (default 0).

    Returns:
        ``[cells, 2]`` float32 numpy array.

    Example:
        >>> coords = cell_embedding(torch.tensor([[0., 0., 1.], [2., 0., 1.], [4., 1., 1.]]),
        ...                         method="pca")
        >>> coords.shape, bool(coords[2, 0] > 0)
        ((3, 2), True)
    """
    check_choice(method, "method", ("umap", "pca"))
    check_int(seed, "seed")
    array = _as_numpy(latent, "latent", ndim=2).astype(np.float32, copy=False)
    if array.shape[0] < 2:
        raise ValueError(f"latent must have at least 2 cells (rows), got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError(f"latent must be finite, got {int((~np.isfinite(array)).sum())} "
                         "NaN or Inf values")
    if method == "umap":
        anndata = _import_anndata()
        scanpy = _import_scanpy()
        holder = anndata.AnnData(np.zeros((array.shape[0], 1), dtype=np.float32))
        holder.obsm["X_gsr"] = array
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scanpy.pp.neighbors(holder, use_rep="X_gsr", random_state=seed)
            scanpy.tl.umap(holder, random_state=seed)
        return holder.obsm["X_umap"].astype(np.float32)
    if array.shape[1] < 2:
        raise ValueError(f"latent must have at least 2 columns for method='pca', got "
                         f"{array.shape[1]}")
    centred = array - array.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    coords = centred @ vt[:2].T
    coords *= np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
    return coords.astype(np.float32)


def _gene_arrays(genes, loadings, correlations, neurons: int):
    """The per-gene inputs of :func:`annotate_anndata`, checked: ``(loadings [G, C],
    assignment [G], correlations [neurons, G])``, each None when not given."""
    if genes is not None:
        if isinstance(genes, str) or not isinstance(genes, Sequence):
            raise TypeError(f"genes must be a sequence of gene names, got {describe(genes)}")
    elif loadings is not None or correlations is not None:
        raise ValueError("genes must be given with loadings or correlations: the gene of "
                         "every column they describe")
    if loadings is not None and not all(hasattr(loadings, a) for a in
                                        ("loadings", "assignment", "modules")):
        raise TypeError("loadings must be the ModuleLoadings of gsr_pyg.readouts."
                        f"module_loadings, got {describe(loadings)}")
    gene_count = None if genes is None else f"one per gene of genes, {len(genes)}"
    loading_array = assignment = correlation_array = None
    if loadings is not None:
        loading_array = _as_numpy(loadings.loadings, "loadings.loadings", ndim=2,
                                  rows=len(genes), rows_of=gene_count)
        assignment = _as_numpy(loadings.assignment, "loadings.assignment", ndim=1,
                               rows=len(genes), rows_of=gene_count)
    if correlations is not None:
        correlation_array = _as_numpy(correlations, "correlations", ndim=2, rows=neurons,
                                      rows_of="one per latent neuron")
        if correlation_array.shape[1] != len(genes):
            raise ValueError(f"correlations must have one column per gene of genes "
                             f"({len(genes)}), got shape {tuple(correlation_array.shape)}")
    return loading_array, assignment, correlation_array


def _annotate_genes(adata, genes, loading_array, assignment, correlation_array) -> None:
    """Per-gene results into ``adata.varm``/``adata.var``, matched by gene name (genes of
    ``adata`` not in ``genes`` get NaN and module -1)."""
    var_index = {name: i for i, name in enumerate(adata.var_names.astype(str))}
    rows = np.array([var_index.get(str(g), -1) for g in genes], dtype=np.int64)
    used = rows >= 0
    if loading_array is not None:
        full_loadings = np.full((adata.n_vars, loading_array.shape[1]), np.nan,
                                dtype=np.float32)
        full_loadings[rows[used]] = loading_array[used]
        adata.varm["gsr_loadings"] = full_loadings
    if correlation_array is not None:
        full_corr = np.full((adata.n_vars, correlation_array.shape[0]), np.nan,
                            dtype=np.float32)
        full_corr[rows[used]] = correlation_array.T[used]
        adata.varm["gsr_correlation"] = full_corr
    if assignment is not None:
        module_of = np.full(adata.n_vars, -1, dtype=np.int64)
        module_of[rows[used]] = assignment[used]
        adata.var["gsr_module"] = module_of


def annotate_anndata(adata, latent, graph, neuron_modules, *, genes: Sequence[str] | None = None,
                     module_activity=None, loadings=None, correlations=None, embedding=None,
                     embedding_name: str = "embedding", settings: Mapping | None = None,
                     feature_modules=None) -> None:
    """Write a learned neuron graph and what was read out of it into ``adata``, in place.

    Fields written (``N`` latent neurons, ``M`` modules, ``G`` genes of the model's matrix;
    ``docs/single_cell.md`` describes them):

    * ``obsm["X_gsr"]``: the latent code, float32 ``[cells, N]``;
    * ``obsm["X_gsr_modules"]``: ``module_activity``, float32 ``[cells, M]``;
    * ``obsm["X_gsr_<embedding_name>"]``: ``embedding``, float32 ``[cells, k]``;
    * ``varm["gsr_loadings"]`` (float32 ``[n_vars, M]``) and ``var["gsr_module"]`` (int64,
      the gene module) from ``loadings``; ``varm["gsr_correlation"]`` (float32
      ``[n_vars, N]``) from ``correlations``. Rows follow ``adata.var_names``: a gene of
      ``adata`` not among ``genes`` gets NaN (module -1), a name of ``genes`` not in
      ``adata`` is skipped;
    * ``uns["gsr"]``: ``edge_index`` (int64 ``[2, E]``, both directions of every edge),
      ``edge_weight`` (float32 ``[E]``, ones for an unweighted graph), ``num_neurons``,
      ``neuron_modules`` (int64 ``[N]``), ``genes`` (str, the genes used, in column order),
      ``gene_modules`` (module -> its genes by loading, for modules with genes) and
      ``settings`` (JSON text);
    * from ``feature_modules``: ``var["gsr_gene_module"]`` (int64, the gene module of
      :func:`gsr_pyg.readouts.graph_feature_modules`, -1 for a gene not used) and in
      ``uns["gsr"]``: ``feature_modules`` (gene module -> its genes, by affinity),
      ``carried_module`` and ``carried_sign`` (int64 ``[M]``: the gene module each neuron
      module carries, -1 for none, and the sign, +1 / -1 / 0).

    Optional arguments left at ``None`` write nothing.

    Args:
        adata: the AnnData of the cells the latent codes belong to.
        latent: ``[cells, N]`` latent codes (tensor or array).
        graph: the learned graph over the ``N`` latent neurons (``Data``).
        neuron_modules: ``[N]`` integer module of every neuron
            (:func:`gsr_pyg.metrics.neuron_modules`).
        genes: the gene of every column of the model's matrix (:func:`prepare_matrix`);
            needed with ``loadings`` or ``correlations``.
        module_activity: ``[cells, M]`` (:func:`gsr_pyg.readouts.module_activity`).
        loadings: the :class:`~gsr_pyg.readouts.ModuleLoadings` of
            :func:`gsr_pyg.readouts.module_loadings` over ``genes``.
        correlations: ``[N, G]`` neuron x gene correlations
            (:func:`gsr_pyg.metrics.feature_correlations`).
        embedding: ``[cells, k]`` coordinates, e.g. :func:`cell_embedding`.
        embedding_name: the key's suffix (default ``"embedding"``; e.g. ``"umap"``).
        settings: a JSON-able mapping stored as text (values JSON cannot hold become str).
        feature_modules: the :class:`~gsr_pyg.readouts.FeatureModules` of
            :func:`gsr_pyg.readouts.graph_feature_modules` over ``genes``.

    Example:
        >>> import anndata
        >>> from gsr_pyg.graphs import ring
        >>> adata = anndata.AnnData(np.zeros((5, 2), dtype=np.float32))
        >>> annotate_anndata(adata, torch.ones(5, 4), ring(4), torch.tensor([0, 0, 1, 1]))
        >>> adata.obsm["X_gsr"].shape, adata.uns["gsr"]["edge_index"].shape
        ((5, 4), (2, 8))
    """
    import json

    from gsr_pyg.graphs import check_graph

    adata = _check_adata(adata)
    cells = f"one per cell of adata, {adata.n_obs}"
    latent_array = _as_numpy(latent, "latent", ndim=2, rows=adata.n_obs, rows_of=cells)
    neurons = latent_array.shape[1]
    graph = check_graph(graph)
    if graph.num_nodes != neurons:
        raise ValueError(f"graph must have one node per latent neuron ({neurons}, the columns "
                         f"of latent), got {graph.num_nodes} nodes")
    module_array = _as_numpy(neuron_modules, "neuron_modules", ndim=1, rows=neurons,
                             rows_of="one per latent neuron")
    if module_array.dtype.kind not in "iu":
        raise TypeError(f"neuron_modules must hold integers, got dtype {module_array.dtype}")
    loading_array, assignment, correlation_array = _gene_arrays(genes, loadings,
                                                               correlations, neurons)
    if module_activity is not None:
        activity = _as_numpy(module_activity, "module_activity", ndim=2, rows=adata.n_obs,
                             rows_of=cells)
    if embedding is not None:
        if not isinstance(embedding_name, str) or not embedding_name:
            raise TypeError(f"embedding_name must be a non-empty str, got "
                            f"{describe(embedding_name)}")
        coords = _as_numpy(embedding, "embedding", ndim=2, rows=adata.n_obs, rows_of=cells)
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a mapping, got {describe(settings)}")
    if feature_modules is not None:
        if not all(hasattr(feature_modules, a) for a in ("assignment", "carried", "sign",
                                                         "affinity")):
            raise TypeError("feature_modules must be the FeatureModules of gsr_pyg.readouts."
                            f"graph_feature_modules, got {describe(feature_modules)}")
        if genes is None:
            raise ValueError("genes must be given with feature_modules: the gene of every "
                             "entry of its assignment")
        gene_module = _as_numpy(feature_modules.assignment, "feature_modules.assignment",
                                ndim=1, rows=len(genes),
                                rows_of=f"one per gene of genes, {len(genes)}")

    adata.obsm["X_gsr"] = latent_array.astype(np.float32)
    if module_activity is not None:
        adata.obsm["X_gsr_modules"] = activity.astype(np.float32)
    if embedding is not None:
        adata.obsm[f"X_gsr_{embedding_name}"] = coords.astype(np.float32, copy=False)
    if genes is not None:
        _annotate_genes(adata, genes, loading_array, assignment, correlation_array)
    edge_weight = graph.edge_weight
    if edge_weight is None:
        edge_weight = torch.ones(graph.edge_index.size(1))
    summary = {
        "edge_index": graph.edge_index.cpu().numpy().astype(np.int64),
        "edge_weight": edge_weight.detach().cpu().numpy().astype(np.float32),
        "num_neurons": int(graph.num_nodes),
        "neuron_modules": module_array.astype(np.int64),
    }
    if genes is not None:
        summary["genes"] = np.array(genes, dtype=str)
    if loadings is not None:
        summary["gene_modules"] = {str(m["module"]): np.array(m["features"], dtype=str)
                                   for m in loadings.modules if m["features"]}
    if feature_modules is not None:
        var_index = {name: i for i, name in enumerate(adata.var_names.astype(str))}
        module_of = np.full(adata.n_vars, -1, dtype=np.int64)
        for gene, module in zip(genes, gene_module.tolist()):
            if str(gene) in var_index:
                module_of[var_index[str(gene)]] = module
        adata.var["gsr_gene_module"] = module_of
        affinity = feature_modules.affinity.detach().cpu().numpy()
        summary["feature_modules"] = {
            str(k): np.array([genes[g] for g in sorted(np.flatnonzero(gene_module == k),
                                                       key=lambda g: -affinity[g, k])],
                             dtype=str)
            for k in range(int(gene_module.max()) + 1)}
        summary["carried_module"] = feature_modules.carried.cpu().numpy().astype(np.int64)
        summary["carried_sign"] = feature_modules.sign.cpu().numpy().astype(np.int64)
    if settings is not None:
        summary["settings"] = json.dumps(settings, default=str)
    adata.uns["gsr"] = summary


def _string_keys(value):
    """A copy of nested dicts with every key a str (h5ad cannot store other keys; scanpy's
    krumsiek11 has ``uns["highlights"]`` keyed by cell index)."""
    if isinstance(value, dict):
        return {str(key): _string_keys(item) for key, item in value.items()}
    return value


def write_h5ad(adata, path: str | os.PathLike) -> Path:
    """Write ``adata`` to ``path`` as ``.h5ad``, atomically (a reader never sees half a file).

    Dictionary keys in ``adata.uns`` that are not strings (h5ad cannot store them, e.g. the
    ``uns["highlights"]`` of scanpy's ``krumsiek11``, keyed by cell index) are written as
    strings; ``adata`` itself is left unchanged. anndata's warnings while writing (e.g.
    about converting string columns to categoricals) are silenced.

    Args:
        adata: the AnnData to write.
        path: destination file; missing parent folders are created.

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Example:
        >>> import anndata, tempfile
        >>> adata = anndata.AnnData(np.ones((2, 3), dtype=np.float32), uns={"k": {1: "a"}})
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     dict(anndata.read_h5ad(write_h5ad(adata, f"{folder}/a.h5ad")).uns["k"])
        {'1': 'a'}
    """
    from gsr_pyg.files import atomic_write

    adata = _check_adata(adata)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path, got {describe(path)}")
    path = Path(path)
    if adata.is_view:
        adata = adata.copy()
    original = adata.uns

    def write(tmp: str) -> None:
        adata.uns = _string_keys(dict(original))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                adata.write_h5ad(tmp)
        finally:
            adata.uns = original

    atomic_write(path, write)
    return path
