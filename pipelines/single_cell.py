r"""A learned neuron graph on single-cell data: gene modules, cell types, branches, pseudotime.

The reference model (``gsr_pyg.models.DenseAutoencoder``: dense 128x3, a 100-unit linear
latent, Gaussian noise 0.5 after it) is trained on the cells x genes matrix of any AnnData
(``.h5ad``) or CSV file while a graph over its latent neurons is learned from their
co-activations (:class:`gsr_pyg.pipeline.GSRTrainer`, by default this library's
``recommended`` preset; ``--preset reference`` for the original method). Then:

* the learned graph is cut into **neuron modules** (Louvain by default);
* every gene joins the module whose neurons it correlates with most: the **gene modules**
  (:func:`gsr_pyg.metrics.feature_modules`); each module also lists its top genes;
* genes are linked through the modules they load on: the **gene graph**;
* the mean latent activity per cell type / branch / pseudotime bin is painted on the graph,
  neuron x gene correlations are drawn per group, and cells are embedded (UMAP when scanpy
  is installed, else PCA) and coloured by module activity;
* everything goes back into the AnnData, saved as ``adata_gsr.h5ad``.

Data that work offline (scanpy's bundled datasets): ``krumsiek11`` (the default: 640 cells x
11 genes of simulated myeloid differentiation from a known regulatory network; four
simulations of 160 time steps from one progenitor state to Mo, Ery, Mk and Neu; fast) and
``pbmc68k_reduced`` (700 real PBMCs x 765 genes with cell-type labels incl. T-cell subsets).
For ``krumsiek11`` the pipeline adds two ``obs`` columns read from the cell ids (``"t"`` or
``"t-r"``: time step ``t`` of simulation ``r``): ``time_step`` (the pseudotime) and ``fate``
(the cell type its simulation ends in: the branch).

    python -m pipelines.single_cell                                 # krumsiek11
    python -m pipelines.single_cell --data pbmc68k_reduced --layer raw --hvg 200
    python -m pipelines.single_cell --data my.h5ad --layer counts_log --label-columns celltype \
        --pseudotime-column dpt_pseudotime --out runs/my_data

Written to ``--out`` (see ``docs/single_cell.md`` for what every output means)::

    results.json                 settings, training, graph, modules, gene modules, group tables
    gene_modules.csv             module, rank, gene, loading (mean |r|), mean r, assigned
    neuron_graph.graphml         the final neuron graph (node attributes: module, top_gene)
    gene_graph.graphml           genes linked through shared neuron modules
    neuron_graph.png             the final graph coloured by neuron module
    neuron_graph_evolution.png   the graph over training time
    activity_<column>.png        mean latent per group minus the mean over all cells, on the
                                 graph (one panel per group; also per pseudotime bin)
    correlations_all.png         neuron x gene correlations over all cells
    correlations_<column>_<group>.png   the same within each group of the first label column
    embedding_<umap|pca>.png     cells coloured by labels and by each module's activity
    adata_gsr.h5ad               the input AnnData with the results added (see below)
    run/                         the trainer's run directory (snapshots as .pt and .graphml)
    report.html                  all of it in one offline file

AnnData fields added: ``obsm["X_gsr"]`` (latent, cells x neurons), ``obsm["X_gsr_modules"]``
(mean activity of each neuron module), ``obsm["X_gsr_umap"]`` or ``obsm["X_gsr_pca"]``,
``varm["gsr_loadings"]`` (genes x modules, mean |r|; NaN for genes not used),
``varm["gsr_correlation"]`` (genes x neurons, r), ``var["gsr_module"]`` (-1: not used) and
``uns["gsr"]`` (graph edges and weights, neuron modules, gene modules, settings).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch_geometric.data import Data

from gsr_pyg import metrics, plotting, readouts
from gsr_pyg.data.single_cell import load_anndata, obs_labels, obs_values, prepare_matrix
from gsr_pyg.models import DenseAutoencoder
from gsr_pyg.pipeline import GSRTrainer
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.report import write_html_report

from ._common import (
    add_config_argument,
    fit_timed,
    make_out_dir,
    non_negative_float,
    parse_arguments,
    pipeline_processes,
    positive_int,
    run_cli,
    torch_threads,
    write_text,
)
from .learned_graph import (
    MODULE_METHODS,
    PRESETS,
    add_training_arguments,
    build_learning,
    label_module_colorbar,
    module_colormap,
    write_graphml,
)

__all__ = ["DATASET_DEFAULTS", "QUICK_SETTINGS", "build_parser", "gene_modules",
           "gene_graph", "krumsiek11_columns", "main"]

#: Read-out columns used when none are given, for the bundled datasets.
DATASET_DEFAULTS = {
    "krumsiek11": {"label_columns": ["cell_type", "fate"], "pseudotime_column": "time_step"},
    "pbmc68k_reduced": {"label_columns": ["bulk_labels"], "pseudotime_column": None},
}
#: ``--quick``: a short schedule (explicit options still win).
QUICK_SETTINGS = {"warmup_steps": 300, "refresh_every": 50, "max_learning_steps": 300,
                  "after_stop_steps": 50}
LAYER = "latent"
PSEUDOTIME_BINS = 5
MAX_HEATMAP_GENES = 60
MIN_GROUP_CELLS = 3


# --------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.single_cell",
        description="Train the reference autoencoder with a learned graph over its latent "
                    "neurons on single-cell data; write neuron modules, gene modules, a gene "
                    "graph, read-outs per cell type / branch / pseudotime and an annotated "
                    ".h5ad.",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", default="krumsiek11",
                      help="an .h5ad or .csv (cells x genes) file, or a dataset bundled with "
                           "scanpy: krumsiek11 (default) or pbmc68k_reduced")
    data.add_argument("--layer", default=None,
                      help="adata.layers[LAYER] instead of adata.X ('raw': adata.raw.X)")
    data.add_argument("--genes", nargs="+", default=None, metavar="GENE",
                      help="use only these genes, in this order")
    data.add_argument("--hvg", type=positive_int, default=None, metavar="N",
                      help="use the N most variable genes (scanpy's seurat dispersion when "
                           "the data look log-normalised, else the variance)")
    data.add_argument("--scale", choices=("standard", "minmax", "none"), default="standard",
                      help="per-gene scaling before training (default standard: z-scores)")
    data.add_argument("--label-columns", nargs="*", default=None, metavar="COLUMN",
                      help="obs columns with cell types / branches to read out; the first "
                           "also gets per-group correlation heatmaps (default for krumsiek11: "
                           "cell_type fate; pbmc68k_reduced: bulk_labels; other data: none)")
    data.add_argument("--pseudotime-column", default=None, metavar="COLUMN",
                      help="numeric obs column read out in quintile bins (default for "
                           "krumsiek11: time_step; 'none' for none)")
    train = parser.add_argument_group("model and training")
    train.add_argument("--preset", choices=tuple(PRESETS), default="recommended",
                       help="how the graph is learned (default recommended; see "
                            "pipelines.learned_graph)")
    add_training_arguments(train)
    train.add_argument("--latent-dim", type=positive_int, default=100,
                       help="latent neurons (default 100)")
    train.add_argument("--noise-std", type=non_negative_float, default=0.5,
                       help="training noise after the latent (default 0.5)")
    read = parser.add_argument_group("read-outs")
    read.add_argument("--module-method", choices=MODULE_METHODS, default="louvain",
                      help="how the neuron graph is cut into modules (default louvain)")
    read.add_argument("--num-modules", type=positive_int, default=None,
                      help="k of --module-method spectral")
    read.add_argument("--top-genes", type=positive_int, default=10,
                      help="genes listed per module (default 10)")
    read.add_argument("--min-loading", type=non_negative_float, default=0.2,
                      help="gene graph: a gene loads on a module when its mean |r| with the "
                           "module's neurons is at least this (default 0.2) ...")
    read.add_argument("--relative-loading", type=non_negative_float, default=0.9,
                      help="... and at least this fraction of its best module's (default 0.9)")
    read.add_argument("--embedding", choices=("umap", "pca"), default=None,
                      help="cell embedding (default umap when scanpy is installed, else pca)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the model, the batch order and the layouts (default 0)")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu or cuda:0 (default: cuda when available)")
    parser.add_argument("--out", default="runs/single_cell",
                        help="output directory (default runs/single_cell); an interrupted run "
                             "resumes there")
    parser.add_argument("--quick", action="store_true",
                        help="a fast look: 300 warm-up and 300 learning steps")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="CPU threads for torch while the pipeline runs (default 1: this "
                             "small model trains fastest on one thread)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_argument(parser)
    return parser


def _training_settings(args: argparse.Namespace) -> dict:
    settings = dict(PRESETS[args.preset])
    if args.quick:
        settings.update({k: v for k, v in QUICK_SETTINGS.items()
                         if k != "after_stop_steps" or settings["after_stop_steps"]})
    explicit = {"warmup_steps": args.warmup_steps, "refresh_every": args.refresh_every,
                "max_learning_steps": args.learning_steps, "weight": args.weight,
                "lr": args.lr, "batch_size": args.batch_size}
    settings.update({key: value for key, value in explicit.items() if value is not None})
    if settings["warmup_steps"] < 0:
        raise ValueError(f"--warmup-steps must be >= 0, got {settings['warmup_steps']}")
    return settings


# --------------------------------------------------------------------------- data
_CELL_ID = re.compile(r"^(\d+)(?:-(\d+))?$")


def krumsiek11_columns(adata) -> None:
    """Add ``time_step`` and ``fate`` to the ``obs`` of scanpy's ``krumsiek11``.

    Its cells are four simulations of 160 time steps; a cell id is ``"t"`` (simulation 0)
    or ``"t-r"`` (simulation ``r``). ``fate`` is the cell type of the last cell of the
    simulation (Mo, Ery, Mk or Neu), i.e. the branch a progenitor cell is on.
    """
    import pandas as pd

    matches = [_CELL_ID.match(str(name)) for name in adata.obs_names]
    if not all(matches):
        return  # not the bundled layout: add nothing
    step = np.array([int(m.group(1)) for m in matches])
    simulation = np.array([int(m.group(2) or 0) for m in matches])
    cell_type = adata.obs["cell_type"].astype(str).to_numpy()
    fate = {}
    for sim in np.unique(simulation):
        cells = np.flatnonzero(simulation == sim)
        fate[sim] = cell_type[cells[np.argmax(step[cells])]]
    if "time_step" not in adata.obs.columns:
        adata.obs["time_step"] = step.astype(np.float32)
    if "fate" not in adata.obs.columns:
        adata.obs["fate"] = pd.Categorical([fate[s] for s in simulation])


def _read_outs(adata, args: argparse.Namespace, dataset_name: str | None):
    """Validate the read-out columns before any training: ``(labels, pseudotime)``."""
    defaults = DATASET_DEFAULTS.get(dataset_name or "", {})
    columns = args.label_columns
    if columns is None:
        columns = defaults.get("label_columns", [])
    labels = {}
    for column in dict.fromkeys(columns):
        codes, names = obs_labels(adata, column)
        labels[column] = (codes, names)
    pseudotime_column = args.pseudotime_column
    if pseudotime_column is None:
        pseudotime_column = defaults.get("pseudotime_column")
    elif pseudotime_column.lower() == "none":
        pseudotime_column = None
    pseudotime = None
    if pseudotime_column is not None:
        pseudotime = (pseudotime_column, obs_values(adata, pseudotime_column))
    return labels, pseudotime


# --------------------------------------------------------------------------- gene modules
def gene_modules(correlations: torch.Tensor, neuron_labels: torch.Tensor, genes: list[str],
                 top: int) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    r"""Loadings, gene modules and the top genes of every neuron module.

    The loading of gene :math:`g` on module :math:`c` is
    :math:`\ell_{gc} = \frac{1}{|c|}\sum_{n\in c} |r_{ng}|` (``correlations`` = :math:`r`,
    neurons x genes); each gene joins its best module (as
    :func:`gsr_pyg.metrics.feature_modules`, ties to the lower module).

    Returns:
        ``(loadings [G, C], assignment [G], modules)`` with ``modules[c]`` =
        ``{"module", "neurons", "genes" (assigned, by loading), "top_genes" (the ``top``
        highest loadings, with the mean signed r)}``.
    """
    num_modules = int(neuron_labels.max()) + 1
    index = neuron_labels.to(correlations.device)
    counts = torch.bincount(index, minlength=num_modules).to(correlations.dtype)
    abs_sum = correlations.new_zeros(num_modules, correlations.size(1)).index_add_(
        0, index, correlations.abs())
    signed_sum = correlations.new_zeros(num_modules, correlations.size(1)).index_add_(
        0, index, correlations)
    loadings = (abs_sum / counts[:, None]).t()  # [G, C]
    signed = (signed_sum / counts[:, None]).t()
    assignment = loadings.argmax(dim=1)
    modules = []
    for module in range(num_modules):
        assigned = torch.nonzero(assignment == module).flatten()
        assigned = assigned[loadings[assigned, module].argsort(descending=True)]
        order = loadings[:, module].argsort(descending=True)[:top]
        modules.append({
            "module": module,
            "neurons": int(counts[module]),
            "genes": [genes[g] for g in assigned.tolist()],
            "top_genes": [{"gene": genes[g], "loading": float(loadings[g, module]),
                           "mean_r": float(signed[g, module])} for g in order.tolist()],
        })
    return loadings, assignment, modules


def gene_graph(loadings: torch.Tensor, min_loading: float, relative: float) -> Data:
    r"""Genes linked through the neuron modules they load on.

    Gene :math:`g` loads on module :math:`c` when :math:`\ell_{gc} \ge` ``min_loading`` and
    :math:`\ell_{gc} \ge` ``relative`` :math:`\cdot \max_{c'} \ell_{gc'}`. Two genes are joined
    when they load on a common module, with weight
    :math:`w_{gh} = \sum_{c \text{ shared}} \min(\ell_{gc}, \ell_{hc})`.
    """
    best = loadings.max(dim=1, keepdim=True).values
    loads = (loadings >= min_loading) & (loadings >= relative * best)
    member = torch.where(loads, loadings, torch.zeros_like(loadings)).double()  # [G, C]
    # sum over shared modules of the smaller loading, for every gene pair at once; averaged
    # with its transpose so both directions of an edge carry bitwise the same weight
    weight = torch.minimum(member[:, None, :], member[None, :, :]).sum(dim=2)
    weight = (weight + weight.t()) / 2
    weight.fill_diagonal_(0.0)
    row, col = torch.nonzero(weight > 0, as_tuple=True)
    return Data(edge_index=torch.stack([row, col]), edge_weight=weight[row, col].float(),
                num_nodes=loadings.size(0), loads=loads)


# --------------------------------------------------------------------------- figures
def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "group"


def _activity_on_graph(graph: Data, layout: torch.Tensor, maps: torch.Tensor,
                       names: Sequence[str], title: str, path: Path) -> Path:
    """One panel per group: the group's mean latent minus the all-cell mean, on the graph."""
    count = len(names)
    columns = min(count, 5)
    rows = math.ceil(count / columns)
    fig = _new_figure(2.9 * columns + 1.0, 2.9 * rows + 0.5)
    axes = fig.subplots(rows, columns, squeeze=False)
    finite = maps[torch.isfinite(maps)]
    bound = float(finite.abs().max()) if finite.numel() else 1.0
    bound = bound if bound > 0 else 1.0
    for index, ax in enumerate(axes.flat):
        if index >= count:
            ax.set_visible(False)
            continue
        plotting.plot_graph(graph, maps[index], pos=layout, ax=ax, cmap="RdBu_r",
                            colorbar=False, vmin=-bound, vmax=bound, node_size=25,
                            title=str(names[index]))
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig.colorbar(ScalarMappable(Normalize(-bound, bound), cmap="RdBu_r"),
                 ax=axes.ravel().tolist(), shrink=0.8,
                 label="mean latent activity minus all-cell mean")
    fig.suptitle(title)
    return plotting.save_figure(fig, path)


def _embedding(latent: np.ndarray, kind: str, seed: int):
    """2-D coordinates of the cells from their latent codes: UMAP (scanpy) or PCA."""
    if kind == "umap":
        import anndata
        import scanpy

        holder = anndata.AnnData(np.zeros((latent.shape[0], 1), dtype=np.float32))
        holder.obsm["X_gsr"] = latent
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scanpy.pp.neighbors(holder, use_rep="X_gsr", random_state=seed)
            scanpy.tl.umap(holder, random_state=seed)
        return holder.obsm["X_umap"].astype(np.float32)
    centred = latent - latent.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    coords = centred @ vt[:2].T
    # a fixed sign per axis, so the picture does not flip between runs
    coords *= np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
    return coords.astype(np.float32)


def _embedding_figure(coords: np.ndarray, kind: str, labels: dict, activity: torch.Tensor,
                      path: Path) -> Path:
    panels = [("label", column, codes, names) for column, (codes, names) in labels.items()]
    panels += [("module", f"module {m}", activity[:, m], None)
               for m in range(activity.size(1))]
    columns = min(len(panels), 4)
    rows = math.ceil(len(panels) / columns)
    fig = _new_figure(4.4 * columns, 3.6 * rows)
    # one sub-figure per panel: a legend or colour bar only widens its own panel
    cells = np.atleast_2d(fig.subfigures(rows, columns, squeeze=False))
    axis = "UMAP" if kind == "umap" else "PC"
    for index, cell in enumerate(cells.flat):
        if index >= len(panels):
            continue
        ax = cell.subplots()
        what, title, colour, names = panels[index]
        plotting.plot_embedding(coords, colour, title=title, categorical=what == "label",
                                class_names=names, ax=ax,
                                colorbar_label="module activity" if what == "module" else None,
                                xlabel=f"{axis} 1", ylabel=f"{axis} 2")
    fig.suptitle(f"cells ({axis} of the latent code)")
    return plotting.save_figure(fig, path)


# --------------------------------------------------------------------------- AnnData
def _annotate(adata, latent, activity, coords, kind, graph, neuron_labels, genes,
              correlations, loadings, assignment, modules, settings) -> None:
    """Write the results into ``adata`` (obsm, varm, var, uns)."""
    adata.obsm["X_gsr"] = latent.astype(np.float32)
    adata.obsm["X_gsr_modules"] = activity.astype(np.float32)
    adata.obsm[f"X_gsr_{kind}"] = coords
    var_index = {name: i for i, name in enumerate(adata.var_names.astype(str))}
    rows = np.array([var_index.get(g, -1) for g in genes])
    used = rows >= 0
    full_loadings = np.full((adata.n_vars, loadings.shape[1]), np.nan, dtype=np.float32)
    full_loadings[rows[used]] = loadings[used]
    full_corr = np.full((adata.n_vars, correlations.shape[0]), np.nan, dtype=np.float32)
    full_corr[rows[used]] = correlations.T[used]
    module_of = np.full(adata.n_vars, -1, dtype=np.int64)
    module_of[rows[used]] = assignment[used]
    adata.varm["gsr_loadings"] = full_loadings
    adata.varm["gsr_correlation"] = full_corr
    adata.var["gsr_module"] = module_of
    adata.uns["gsr"] = {
        "edge_index": graph.edge_index.cpu().numpy().astype(np.int64),
        "edge_weight": graph.edge_weight.cpu().numpy().astype(np.float32),
        "num_neurons": int(graph.num_nodes),
        "neuron_modules": neuron_labels.astype(np.int64),
        "genes": np.array(genes, dtype=str),
        "gene_modules": {str(m["module"]): np.array(m["genes"], dtype=str)
                         for m in modules if m["genes"]},
        "settings": json.dumps(settings, default=str),
    }


# --------------------------------------------------------------------------- main
def _check_arguments(args: argparse.Namespace) -> None:
    if args.genes is not None and args.hvg is not None:
        raise ValueError("pass either --genes or --hvg, not both")
    if args.module_method == "spectral" and args.num_modules is None:
        raise ValueError("--module-method spectral needs --num-modules")


def main(argv: list[str] | None = None) -> Path:
    """Run the pipeline; returns the path of ``report.html``.

    Raises FileNotFoundError / ValueError with a message naming the problem (missing file,
    no cells or genes, unknown gene / layer / column, NaN in the matrix) before training.
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_arguments(build_parser(), argv, check=_check_arguments)
    with torch_threads(args.threads), pipeline_processes(args.device) as (is_main, device):
        return _run(args, argv, device, is_main)


def _run(args: argparse.Namespace, argv: list[str], device: torch.device,
         is_main: bool) -> Path | None:
    """Under torchrun the processes other than rank 0 train with the main one and return
    None without reading out or writing."""
    started = time.perf_counter()

    adata = load_anndata(args.data)
    dataset_name = args.data if args.data in DATASET_DEFAULTS and not Path(
        args.data).exists() else None
    if dataset_name == "krumsiek11":
        krumsiek11_columns(adata)
    labels, pseudotime = _read_outs(adata, args, dataset_name)
    scale = None if args.scale == "none" else args.scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # constant genes: kept as zeros
        x, genes = prepare_matrix(adata, layer=args.layer, genes=args.genes,
                                  highly_variable=args.hvg, scale=scale)
    if x.shape[0] < 2:
        raise ValueError(f"the data need at least 2 cells, got {x.shape[0]}")
    settings = _training_settings(args)
    batch_size = min(settings["batch_size"], x.shape[0])
    out = make_out_dir(args.out)
    if is_main:
        print(f"{args.data}: {x.shape[0]} cells x {x.shape[1]} genes; preset {args.preset}; "
              f"device {device}", flush=True)

    # ---- training
    torch.manual_seed(args.seed)
    model = DenseAutoencoder(x.shape[1], hidden=(128, 128, 128), latent_dim=args.latent_dim,
                             noise_std=args.noise_std)
    reg = GraphSpectralRegularizer(model, {LAYER: args.latent_dim}, weight=settings["weight"])
    schedule, learner = build_learning(settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    loader = DataLoader(TensorDataset(x), batch_size=batch_size, shuffle=True, drop_last=True)
    run_dir = out / "run"
    trainer = GSRTrainer(
        model, reg, optimizer, F.mse_loss, schedule=schedule, learn={LAYER: learner},
        run_dir=run_dir, checkpoint_every=1000, log_every=100, smoothness_permutations=0,
        seed=args.seed, device=device, verbose=not args.quiet,
        config={"pipeline": "single_cell", "data": str(args.data), "layer": args.layer,
                "genes": genes, "scale": args.scale, "cells": int(x.shape[0]),
                "batch_size": batch_size, "lr": settings["lr"],
                "latent_dim": args.latent_dim, "noise_std": args.noise_std})
    train_time = fit_timed(trainer, loader, run_dir)
    graph = reg.graph(LAYER).cpu()
    reg.detach()
    if not is_main:
        return None
    model.eval()
    with torch.no_grad():
        latent = model.encode(x.to(device))
        mse = float(F.mse_loss(model.decode(latent), x.to(device)))
    latent = latent.cpu()

    # ---- modules
    k = args.num_modules if args.module_method == "spectral" else None
    if k is not None and k > graph.num_nodes:
        raise ValueError(f"--num-modules must be at most the latent width {graph.num_nodes}")
    neuron_labels = metrics.neuron_modules(graph, args.module_method, k=k, seed=args.seed)
    num_modules = int(neuron_labels.max()) + 1
    activity = readouts.module_activity(latent, neuron_labels, num_modules)
    correlations = metrics.feature_correlations(x, latent)  # [N, G]
    loadings, assignment, modules = gene_modules(correlations, neuron_labels, genes,
                                                 args.top_genes)
    links = gene_graph(loadings, args.min_loading, args.relative_loading)

    # ---- files
    layout = plotting.spring_layout(graph, seed=args.seed)
    top_gene = [modules[int(m)]["top_genes"][0]["gene"] for m in neuron_labels]
    write_graphml(graph, out / "neuron_graph.graphml",
                  {"module": neuron_labels.tolist(), "top_gene_of_module": top_gene},
                  {"data": str(args.data), "module_method": args.module_method})
    loads = links.loads
    write_graphml(links, out / "gene_graph.graphml",
                  {"label": genes, "module": assignment.tolist(),
                   "loading": loadings.max(dim=1).values.tolist(),
                   "loads_on": [",".join(str(c) for c in torch.nonzero(row).flatten().tolist())
                                for row in loads]},
                  {"data": str(args.data), "min_loading": args.min_loading,
                   "relative_loading": args.relative_loading})
    csv_lines = ["module,rank,gene,loading,mean_r,assigned"]
    for module in modules:
        assigned = set(module["genes"])
        for rank, entry in enumerate(module["top_genes"], start=1):
            gene = entry["gene"].replace('"', '""')
            csv_lines.append(f'{module["module"]},{rank},"{gene}",{entry["loading"]:.6f},'
                             f'{entry["mean_r"]:.6f},{int(entry["gene"] in assigned)}')
    write_text(out / "gene_modules.csv", "\n".join(csv_lines) + "\n")

    figures = []
    names = [f"module {m}" for m in range(num_modules)]
    path = out / "neuron_graph.png"
    plotting.plot_graph(graph, neuron_labels, pos=layout, categorical=True, class_names=names,
                        title=f"learned neuron graph ({args.module_method} modules)",
                        path=path)
    figures.append(path)
    snapshots = trainer.history.layer_snapshots(LAYER)
    if snapshots:
        path = out / "neuron_graph_evolution.png"
        fig = plotting.plot_graph_evolution(snapshots, layouts=layout,
                                            signal=neuron_labels.float(),
                                            cmap=module_colormap(num_modules),
                                            colorbar_label="final neuron module")
        label_module_colorbar(fig, num_modules, "module")
        figures.append(plotting.save_figure(fig, path))

    group_tables = {}
    readout_groups = dict(labels)
    if pseudotime is not None:
        column, values = pseudotime
        bins = readouts.pseudotime_bins(values, PSEUDOTIME_BINS)
        edges = torch.quantile(values.double(), torch.linspace(0, 1, PSEUDOTIME_BINS + 1,
                                                               dtype=torch.float64))
        bin_names = [f"{column} {edges[i]:.3g}-{edges[i + 1]:.3g}"
                     for i in range(PSEUDOTIME_BINS)]
        readout_groups[f"{column} bins"] = (bins, bin_names)
    for column, (codes, group_names) in readout_groups.items():
        present = sorted(set(codes.tolist()))
        maps = readouts.group_mean_activity(latent, codes, len(group_names))
        centred = readouts.subtract_global_mean(maps, latent)
        shown_names = [group_names[g] for g in present]
        path = out / f"activity_{_safe_name(column)}.png"
        figures.append(_activity_on_graph(graph, layout, centred[present], shown_names,
                                          f"mean latent activity per {column}", path))
        module_means = readouts.group_mean_activity(activity, codes, len(group_names))
        module_means = readouts.subtract_global_mean(module_means, activity)
        group_tables[column] = [
            {column: group_names[g], "cells": int((codes == g).sum()),
             **{f"module {m}": float(module_means[g, m]) for m in range(num_modules)}}
            for g in present]

    # heatmaps: the genes that matter most (top genes of every module, at most 60)
    heat_genes = []
    for module in modules:
        for entry in module["top_genes"]:
            if entry["gene"] not in heat_genes:
                heat_genes.append(entry["gene"])
    if len(heat_genes) > MAX_HEATMAP_GENES:
        heat_genes = heat_genes[:MAX_HEATMAP_GENES]
    gene_index = {g: i for i, g in enumerate(genes)}
    heat_columns = torch.tensor([gene_index[g] for g in heat_genes])
    heat_groups = assignment[heat_columns]
    heat_sets = [("all", "all cells", torch.ones(x.shape[0], dtype=torch.bool))]
    if labels:
        first, (codes, group_names) = next(iter(labels.items()))
        heat_sets += [(f"{_safe_name(first)}_{_safe_name(group_names[g])}",
                       f"{first} = {group_names[g]}", codes == g)
                      for g in sorted(set(codes.tolist()))]
    for stem, title, mask in heat_sets:
        if int(mask.sum()) < MIN_GROUP_CELLS:
            continue
        corr = metrics.feature_correlations(x[mask][:, heat_columns], latent[mask])
        path = out / f"correlations_{stem}.png"
        plotting.plot_heatmap(corr, col_labels=heat_genes, row_groups=neuron_labels,
                              col_groups=heat_groups,
                              title=f"neuron x gene correlation: {title}",
                              ylabel="neurons, by module", xlabel="genes, by gene module",
                              colorbar_label="Pearson r", path=path)
        figures.append(path)

    kind = args.embedding or ("umap" if _has_scanpy() else "pca")
    coords = _embedding(latent.numpy(), kind, args.seed)
    figures.append(_embedding_figure(coords, kind, labels, activity,
                                     out / f"embedding_{kind}.png"))

    run_settings = {"data": str(args.data), "layer": args.layer, "genes": len(genes),
                    "hvg": args.hvg, "scale": args.scale, "preset": args.preset,
                    "training": settings, "latent_dim": args.latent_dim,
                    "noise_std": args.noise_std, "module_method": args.module_method,
                    "num_modules": args.num_modules, "seed": args.seed,
                    "embedding": kind, "device": str(device),
                    "label_columns": list(labels), "pseudotime_column":
                        pseudotime[0] if pseudotime else None,
                    "command": " ".join(["python -m pipelines.single_cell", *argv])}
    _annotate(adata, latent.numpy(), activity.numpy(), coords, kind, graph,
              neuron_labels.numpy(), genes, correlations.numpy(), loadings.numpy(),
              assignment.numpy(), modules, run_settings)
    h5ad = out / "adata_gsr.h5ad"
    _write_h5ad(adata, h5ad)

    summary = trainer.summary()[LAYER]
    results = {
        "settings": run_settings,
        "data": {"cells": int(x.shape[0]), "genes": len(genes)},
        "training": {"steps": trainer.step, "train_time_s": train_time, "mse": mse,
                     "graphs_learned": summary["graphs_learned"],
                     "stopped": summary["stopped"]},
        "graph": {"neurons": int(graph.num_nodes),
                  "edges": int(graph.edge_index.shape[1] // 2),
                  "components": metrics.num_components(graph), "modules": num_modules,
                  "modularity": metrics.modularity(graph, neuron_labels)},
        "gene_modules": modules,
        "group_module_activity": group_tables,
        "gene_graph": {"genes": len(genes), "edges": int(links.edge_index.shape[1] // 2)},
        "files": {"h5ad": h5ad.name, "figures": [p.name for p in figures]},
    }
    write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")

    module_table = [{"module": m["module"], "neurons": m["neurons"],
                     "genes assigned": len(m["genes"]),
                     "top genes (loading, sign of r)": ", ".join(
                         f"{e['gene']} ({e['loading']:.2f}{'+' if e['mean_r'] >= 0 else '-'})"
                         for e in m["top_genes"][:8])} for m in modules]
    sections = [
        ("Settings", [
            f"{args.data}: {x.shape[0]} cells x {len(genes)} genes (scaling {args.scale}). "
            f"Dense autoencoder 128x3, {args.latent_dim} latent neurons, noise "
            f"{args.noise_std:g}; preset {args.preset}; {trainer.step} steps in "
            f"{train_time:.0f} s; reconstruction MSE {mse:.4f}.",
            f"Final graph: {results['graph']['edges']} edges, "
            f"{results['graph']['components']} components, {num_modules} "
            f"{args.module_method} modules, modularity {results['graph']['modularity']:.3f}.",
            "Command: " + run_settings["command"],
        ]),
        ("Gene modules", [
            "Loading = mean |r| between the gene and the module's neurons over all cells; "
            "+/- is the sign of the mean r. Every gene joins its highest-loading module.",
            module_table]),
    ]
    for column, table in group_tables.items():
        sections.append((f"Module activity per {column} (minus the all-cell mean)", [table]))
    sections.append(("Figures", list(figures)))
    report = write_html_report(out / "report.html",
                               f"Learned neuron graph on {Path(str(args.data)).name}",
                               sections)
    print(f"{num_modules} neuron modules; MSE {mse:.4f}; done in "
          f"{time.perf_counter() - started:.1f} s")
    print(f"annotated data: {h5ad.resolve()}")
    print(f"report: {report.resolve()}")
    return report


def _has_scanpy() -> bool:
    try:
        import scanpy  # noqa: F401
    except ImportError:
        return False
    return True


def _string_keys(value):
    """A copy of nested dicts with every key a str (h5ad cannot store other keys; scanpy's
    krumsiek11 has ``uns["highlights"]`` keyed by cell index)."""
    if isinstance(value, dict):
        return {str(key): _string_keys(item) for key, item in value.items()}
    return value


def _write_h5ad(adata, path: Path) -> None:
    from ._common import write_file

    for key in list(adata.uns.keys()):
        adata.uns[key] = _string_keys(adata.uns[key])

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata.write_h5ad(tmp)

    write_file(path, write)


if __name__ == "__main__":
    run_cli(main)
