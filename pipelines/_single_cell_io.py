"""What ``pipelines.single_cell`` reads and writes: the data and its read-out columns (with
the cell-id columns of krumsiek11), the graphs as GraphML, the gene-module CSV, the figures
(drawn by :mod:`gsr_pyg.plotting`), ``results.json`` and the report (``docs/single_cell.md``
says what each output holds). The annotated AnnData is written by
:func:`gsr_pyg.data.annotate_anndata` and :func:`gsr_pyg.data.write_h5ad`."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from gsr_pyg import graphs, metrics, plotting, readouts
from gsr_pyg.data.single_cell import (
    add_krumsiek11_columns,
    load_anndata,
    obs_labels,
    obs_values,
    prepare_matrix,
)
from gsr_pyg.files import write_text

PSEUDOTIME_BINS = 5
MAX_HEATMAP_GENES = 60
MIN_GROUP_CELLS = 3
#: Read-out columns used when none are given, for the bundled datasets.
DATASET_DEFAULTS = {
    "krumsiek11": {"label_columns": ["cell_type", "fate"], "pseudotime_column": "time_step"},
    "pbmc68k_reduced": {"label_columns": ["bulk_labels"], "pseudotime_column": None},
}


def load_data(settings) -> dict:
    """The data and the read-out columns, every name checked before any training."""
    adata = load_anndata(settings.data)
    bundled = settings.data in DATASET_DEFAULTS and not Path(settings.data).exists()
    defaults = DATASET_DEFAULTS[settings.data] if bundled else {}
    if bundled and settings.data == "krumsiek11":
        add_krumsiek11_columns(adata)
    columns = settings.label_columns
    columns = defaults.get("label_columns", []) if columns is None else columns
    labels = {column: obs_labels(adata, column) for column in dict.fromkeys(columns)}
    pseudotime_column = settings.pseudotime_column
    if pseudotime_column is None:
        pseudotime_column = defaults.get("pseudotime_column")
    elif pseudotime_column.lower() == "none":
        pseudotime_column = None
    pseudotime = None
    if pseudotime_column is not None:
        pseudotime = (pseudotime_column, obs_values(adata, pseudotime_column))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # constant genes: kept as zeros
        x, genes = prepare_matrix(adata, layer=settings.layer, genes=settings.genes,
                                  highly_variable=settings.hvg,
                                  scale=None if settings.scale == "none" else settings.scale)
    if x.shape[0] < 2:
        raise ValueError(f"the data need at least 2 cells, got {x.shape[0]}")
    return {"adata": adata, "x": x, "genes": genes, "labels": labels, "pseudotime": pseudotime}


def safe_name(text: str) -> str:
    """``text`` as a piece of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "group"


def gene_modules(modules: list[dict]) -> list[dict]:
    """The modules of :func:`gsr_pyg.readouts.module_loadings` in the words of genes (the
    keys of ``results.json``)."""
    return [{"module": m["module"], "neurons": m["neurons"], "genes": m["features"],
             "top_genes": [{"gene": e["feature"], "loading": e["loading"],
                            "mean_r": e["mean_r"]} for e in m["top_features"]]}
            for m in modules]


def write_gene_modules_csv(modules: list[dict], path: Path) -> Path:
    """``module,rank,gene,loading,mean_r,assigned`` for the top genes of every module."""
    lines = ["module,rank,gene,loading,mean_r,assigned"]
    for module in modules:
        assigned = set(module["genes"])
        for rank, entry in enumerate(module["top_genes"], start=1):
            gene = entry["gene"].replace('"', '""')
            lines.append(f'{module["module"]},{rank},"{gene}",{entry["loading"]:.6f},'
                         f'{entry["mean_r"]:.6f},{int(entry["gene"] in assigned)}')
    return write_text(path, "\n".join(lines) + "\n")


def write_graph_files(settings, graph: Data, genes: Sequence[str], found: dict,
                      out: Path) -> None:
    """``neuron_graph.graphml``, ``gene_graph.graphml`` and ``gene_modules.csv``."""
    neurons, loadings, links = found["neurons"], found["loadings"], found["gene_graph"]
    top_gene = [found["modules"][int(m)]["top_genes"][0]["gene"] for m in neurons]
    graphs.write_graphml(graph, out / "neuron_graph.graphml",
                         {"module": neurons, "top_gene_of_module": top_gene},
                         graph_attributes={"data": str(settings.data),
                                           "module_method": settings.module_method})
    loads_on = [",".join(str(c) for c in torch.nonzero(row).flatten().tolist())
                for row in links.loads]
    graphs.write_graphml(links, out / "gene_graph.graphml",
                         {"label": genes, "module": loadings.assignment,
                          "loading": loadings.loadings.max(dim=1).values, "loads_on": loads_on},
                         graph_attributes={"data": str(settings.data),
                                           "min_loading": settings.min_loading,
                                           "relative_loading": settings.relative_loading})
    write_gene_modules_csv(found["modules"], out / "gene_modules.csv")


# --------------------------------------------------------------------------- per group
def pseudotime_groups(column: str, values: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Quantile bins of a pseudotime column and their names (``"<column> lo-hi"``)."""
    bins = readouts.pseudotime_bins(values, PSEUDOTIME_BINS)
    edges = torch.quantile(values.double(), torch.linspace(0, 1, PSEUDOTIME_BINS + 1,
                                                           dtype=torch.float64))
    return bins, [f"{column} {edges[i]:.3g}-{edges[i + 1]:.3g}" for i in range(PSEUDOTIME_BINS)]


def group_activity(graph: Data, layout: torch.Tensor, latent: torch.Tensor,
                   activity: torch.Tensor, groups: dict, out: Path
                   ) -> tuple[list[Path], dict[str, list[dict]]]:
    """For every grouping ``{column: (codes, names)}``: the figure of each group's mean
    latent minus the all-cell mean on the graph, and the table of the same for the modules."""
    figures, tables = [], {}
    for column, (codes, group_names) in groups.items():
        present = sorted(set(codes.tolist()))
        maps = readouts.group_means(latent, codes, len(group_names))
        centred = readouts.subtract_global_mean(maps, latent)
        figures.append(out / f"activity_{safe_name(column)}.png")
        plotting.plot_group_activity_on_graph(
            graph, centred[present], [group_names[g] for g in present], pos=layout,
            colorbar_label="mean latent activity minus all-cell mean",
            title=f"mean latent activity per {column}", path=figures[-1])
        module_means = readouts.group_means(activity, codes, len(group_names))
        module_means = readouts.subtract_global_mean(module_means, activity)
        tables[column] = [
            {column: group_names[g], "cells": int((codes == g).sum()),
             **{f"module {m}": float(module_means[g, m]) for m in range(activity.size(1))}}
            for g in present]
    return figures, tables


def correlation_heatmaps(x: torch.Tensor, latent: torch.Tensor, neuron_labels: torch.Tensor,
                         loadings: readouts.ModuleLoadings, genes: Sequence[str],
                         labels: dict, out: Path) -> list[Path]:
    """Neuron x gene correlations over all cells and within each group of the first label
    column, for the genes that matter most (the top genes of every module, at most 60)."""
    heat_genes = []
    for module in loadings.modules:
        for entry in module["top_features"]:
            if entry["feature"] not in heat_genes:
                heat_genes.append(entry["feature"])
    heat_genes = heat_genes[:MAX_HEATMAP_GENES]
    gene_index = {g: i for i, g in enumerate(genes)}
    heat_columns = torch.tensor([gene_index[g] for g in heat_genes])
    heat_sets = [("all", "all cells", torch.ones(x.shape[0], dtype=torch.bool))]
    if labels:
        first, (codes, group_names) = next(iter(labels.items()))
        heat_sets += [(f"{safe_name(first)}_{safe_name(group_names[g])}",
                       f"{first} = {group_names[g]}", codes == g)
                      for g in sorted(set(codes.tolist()))]
    paths = []
    for stem, title, mask in heat_sets:
        if int(mask.sum()) < MIN_GROUP_CELLS:
            continue
        path = out / f"correlations_{stem}.png"
        plotting.plot_feature_correlations(
            x[:, heat_columns], latent, heat_genes, cells=mask, neuron_groups=neuron_labels,
            feature_groups=loadings.assignment[heat_columns],
            title=f"neuron x gene correlation: {title}", ylabel="neurons, by module",
            xlabel="genes, by gene module", path=path)
        paths.append(path)
    return paths


def has_scanpy() -> bool:
    try:
        import scanpy  # noqa: F401
    except ImportError:
        return False
    return True


def embedding_figure(coords: np.ndarray, kind: str, labels: dict, activity: torch.Tensor,
                     path: Path) -> Path:
    """Cells in 2-D, one panel per label column and per module's activity."""
    axis = "UMAP" if kind == "umap" else "PC"
    plotting.plot_embedding_panels(coords, labels, activity, axis_name=axis,
                                   title=f"cells ({axis} of the latent code)", path=path)
    return path


# --------------------------------------------------------------------------- results
def results_json(run_settings: dict, x: torch.Tensor, trained, mse: float, found: dict,
                 group_tables: dict, h5ad: Path, figures: list[Path]) -> dict:
    """The content of ``results.json``."""
    graph = trained.graph
    return {
        "settings": run_settings,
        "data": {"cells": int(x.shape[0]), "genes": run_settings["genes"]},
        "training": {"steps": trained.steps, "train_time_s": trained.train_time, "mse": mse,
                     "graphs_learned": trained.summary["graphs_learned"],
                     "stopped": trained.summary["stopped"]},
        "graph": {"neurons": int(graph.num_nodes),
                  "edges": int(graph.edge_index.shape[1] // 2),
                  "components": metrics.num_components(graph), "modules": found["num_modules"],
                  "modularity": metrics.modularity(graph, found["neurons"])},
        "gene_modules": found["modules"],
        "group_module_activity": group_tables,
        "gene_graph": {"genes": run_settings["genes"],
                       "edges": int(found["gene_graph"].edge_index.shape[1] // 2)},
        "files": {"h5ad": h5ad.name, "figures": [p.name for p in figures]},
    }


def report_sections(settings, results: dict, group_tables: dict,
                    figures: list[Path]) -> list[tuple]:
    """The sections of ``report.html``: settings, gene modules, activity per group, figures."""
    training, graph = results["training"], results["graph"]
    module_table = [{"module": m["module"], "neurons": m["neurons"],
                     "genes assigned": len(m["genes"]),
                     "top genes (loading, sign of r)": ", ".join(
                         f"{e['gene']} ({e['loading']:.2f}{'+' if e['mean_r'] >= 0 else '-'})"
                         for e in m["top_genes"][:8])} for m in results["gene_modules"]]
    sections = [
        ("Settings", [
            f"{settings.data}: {results['data']['cells']} cells x {results['data']['genes']} "
            f"genes (scaling {settings.scale}). Dense autoencoder 128x3, {settings.latent_dim} "
            f"latent neurons, noise {settings.noise_std:g}; preset {settings.preset}; "
            f"{training['steps']} steps in {training['train_time_s']:.0f} s; reconstruction "
            f"MSE {training['mse']:.4f}.",
            f"Final graph: {graph['edges']} edges, {graph['components']} components, "
            f"{graph['modules']} {settings.module_method} modules, modularity "
            f"{graph['modularity']:.3f}.",
            "Command: " + results["settings"]["command"],
        ]),
        ("Gene modules", [
            "Loading = mean |r| between the gene and the module's neurons over all cells; "
            "+/- is the sign of the mean r. Every gene joins its highest-loading module.",
            module_table]),
    ]
    for column, table in group_tables.items():
        sections.append((f"Module activity per {column} (minus the all-cell mean)", [table]))
    sections.append(("Figures", list(figures)))
    return sections
