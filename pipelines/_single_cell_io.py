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


def heldout_cells(cells: int, fraction: float, seed: int) -> torch.Tensor:
    """``[cells]`` bool: a seeded random ``int(fraction * cells)`` of the cells, held out of
    training (none when that is 0, and never so many that fewer than 2 cells train)."""
    count = min(int(fraction * cells), max(cells - 2, 0))
    mask = torch.zeros(cells, dtype=torch.bool)
    mask[torch.randperm(cells, generator=torch.Generator().manual_seed(seed))[:count]] = True
    return mask


def gene_modules(features: readouts.FeatureModules, genes: Sequence[str],
                 top: int) -> list[dict]:
    """The gene modules of :func:`gsr_pyg.readouts.graph_feature_modules` in the words of
    genes (the ``gene_modules`` of ``results.json``): every module's genes by affinity, its
    ``top`` genes by affinity (whether assigned or not) and the neuron modules that carry
    it, with their signs."""
    out = []
    for module in range(features.num_modules):
        affinity = features.affinity[:, module]
        order = affinity.argsort(descending=True).tolist()
        members = [g for g in order if int(features.assignment[g]) == module]
        carriers = torch.nonzero(features.carried == module).flatten().tolist()
        out.append({
            "module": module,
            "genes": [genes[g] for g in members],
            "top_genes": [{"gene": genes[g], "affinity": float(affinity[g]),
                           "assigned": int(features.assignment[g]) == module}
                          for g in order[:top]],
            "carried_by": [{"neuron_module": int(features.neuron_modules[c]),
                            "sign": int(features.sign[c]),
                            "strength": float(features.strength[c])} for c in carriers]})
    return out


def write_gene_modules_csv(modules: list[dict], path: Path) -> Path:
    """``module,rank,gene,affinity,assigned``: for every gene module its top genes by
    affinity, then any of its genes beyond them, so every gene has one row with
    ``assigned`` 1 (in its own module)."""
    lines = ["module,rank,gene,affinity,assigned"]
    for module in modules:
        rows = [(e["gene"], e["affinity"], int(e["assigned"])) for e in module["top_genes"]]
        listed = {gene for gene, _, _ in rows}
        rows += [(gene, None, 1) for gene in module["genes"] if gene not in listed]
        for rank, (gene, affinity, assigned) in enumerate(rows, start=1):
            quoted = gene.replace('"', '""')
            value = "" if affinity is None else f"{affinity:.6f}"
            lines.append(f'{module["module"]},{rank},"{quoted}",{value},{assigned}')
    return write_text(path, "\n".join(lines) + "\n")


def write_graph_files(settings, graph: Data, genes: Sequence[str], found: dict,
                      out: Path) -> None:
    """``neuron_graph.graphml``, ``gene_graph.graphml`` and ``gene_modules.csv``."""
    neurons, loadings, links = found["neurons"], found["loadings"], found["gene_graph"]
    features = found["features"]
    row = torch.searchsorted(features.neuron_modules, neurons)  # neuron -> its module's row
    carried, sign = features.carried[row], features.sign[row]
    top_gene = [found["modules"][int(c)]["genes"][0] if c >= 0 else "" for c in carried]
    graphs.write_graphml(graph, out / "neuron_graph.graphml",
                         {"module": neurons, "gene_module": carried, "gene_module_sign": sign,
                          "top_gene_of_gene_module": top_gene},
                         graph_attributes={"data": str(settings.data),
                                           "module_method": settings.module_method})
    loads_on = [",".join(str(c) for c in torch.nonzero(row).flatten().tolist())
                for row in links.loads]
    graphs.write_graphml(links, out / "gene_graph.graphml",
                         {"label": genes, "module": features.assignment,
                          "neuron_module": loadings.assignment,
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
                         modules: list[dict], gene_module: torch.Tensor, genes: Sequence[str],
                         labels: dict, out: Path) -> list[Path]:
    """Neuron x gene correlations over all cells and within each group of the first label
    column, for the genes that matter most (the top genes of every gene module, at most
    60), genes grouped by gene module."""
    heat_genes = []
    for module in modules:
        for entry in module["top_genes"]:
            if entry["assigned"] and entry["gene"] not in heat_genes:
                heat_genes.append(entry["gene"])
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
            feature_groups=gene_module[heat_columns],
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
def results_json(run_settings: dict, x: torch.Tensor, trained, mse: dict, found: dict,
                 group_tables: dict, h5ad: Path, figures: list[Path]) -> dict:
    """The content of ``results.json``."""
    graph, features = trained.graph, found["features"]
    baselines = {method: {"modules": clustering.num_clusters,
                          "ari_with_gene_modules": metrics.adjusted_rand_index(
                              clustering.labels, features.assignment),
                          "nmi_with_gene_modules": metrics.normalized_mutual_info(
                              clustering.labels, features.assignment)}
                 for method, clustering in found["baselines"].items()}
    return {
        "settings": run_settings,
        "data": {"cells": int(x.shape[0]), "genes": run_settings["genes"]},
        "training": {"steps": trained.steps, "train_time_s": trained.train_time,
                     "heldout_cells": mse["heldout_cells"], "mse_heldout": mse["heldout"],
                     "mse_train": mse["train"],
                     "graphs_learned": trained.summary["graphs_learned"],
                     "stopped": trained.summary["stopped"]},
        "graph": {"neurons": int(graph.num_nodes),
                  "edges": int(graph.edge_index.shape[1] // 2),
                  "components": metrics.num_components(graph), "modules": found["num_modules"],
                  "modularity": metrics.modularity(graph, found["neurons"])},
        "gene_modules": found["modules"],
        "gene_module_choice": {"modules": features.num_modules,
                               "silhouettes": {str(k): v for k, v in
                                               features.silhouettes.items()}},
        "neuron_modules": found["carried"],
        "argmax_modules": {"ari_with_gene_modules": metrics.adjusted_rand_index(
            found["argmax"], features.assignment),
            "modules": int(found["argmax"].unique().numel())},
        "baselines": baselines,
        "group_module_activity": group_tables,
        "gene_graph": {"genes": run_settings["genes"],
                       "edges": int(found["gene_graph"].edge_index.shape[1] // 2)},
        "files": {"h5ad": h5ad.name, "figures": [p.name for p in figures]},
    }


def report_sections(settings, results: dict, group_tables: dict,
                    figures: list[Path]) -> list[tuple]:
    """The sections of ``report.html``: settings, gene modules, what each neuron module
    carries, the baselines, activity per group, figures."""
    training, graph = results["training"], results["graph"]
    module_table = [{"gene module": m["module"], "genes": len(m["genes"]),
                     "carried by (neuron module, sign)": ", ".join(
                         f"{c['neuron_module']}{'+' if c['sign'] > 0 else '-'}"
                         for c in m["carried_by"]) or "none",
                     "genes by affinity": ", ".join(
                         f"{g}" for g in m["genes"][:10])} for m in results["gene_modules"]]
    if training["mse_heldout"] is not None:
        mse_text = (f"reconstruction MSE on {training['heldout_cells']} held-out cells "
                    f"{training['mse_heldout']:.4f} (training cells {training['mse_train']:.4f})")
    else:
        mse_text = (f"no cells held out: reconstruction MSE on the training cells "
                    f"{training['mse_train']:.4f}")
    baseline_table = [{"method": "learned graph (gene modules)",
                       "modules": len(results["gene_modules"]), "ARI with gene modules": 1.0,
                       "NMI with gene modules": 1.0},
                      {"method": "argmax over neuron modules",
                       "modules": results["argmax_modules"]["modules"],
                       "ARI with gene modules":
                           results["argmax_modules"]["ari_with_gene_modules"],
                       "NMI with gene modules": ""}]
    baseline_table += [{"method": method, "modules": b["modules"],
                        "ARI with gene modules": b["ari_with_gene_modules"],
                        "NMI with gene modules": b["nmi_with_gene_modules"]}
                       for method, b in results["baselines"].items()]
    sections = [
        ("Settings", [
            f"{settings.data}: {results['data']['cells']} cells x {results['data']['genes']} "
            f"genes (scaling {settings.scale}). Dense autoencoder 128x3, {settings.latent_dim} "
            f"latent neurons, noise {settings.noise_std:g}; preset {settings.preset}; "
            f"{training['steps']} steps in {training['train_time_s']:.0f} s; {mse_text}. "
            "The read-outs below use every cell.",
            f"Final graph: {graph['edges']} edges, {graph['components']} components, "
            f"{graph['modules']} {settings.module_method} modules, modularity "
            f"{graph['modularity']:.3f}.",
            "Command: " + results["settings"]["command"],
        ]),
        ("Gene modules", [
            "Genes clustered on their correlation profiles over the latent neurons (average "
            "linkage of 1 - cosine; the number of modules with the highest mean silhouette: "
            + ", ".join(f"k={k}: {v:.2f}" for k, v in
                        list(results["gene_module_choice"]["silhouettes"].items())[:12])
            + "). Each neuron module carries the gene module its neurons correlate with "
            "most, with the sign of that correlation (+: rises with the genes).",
            module_table]),
        ("What each neuron module carries", [
            "The gene module each neuron module carries (none when its neurons' mean |r| "
            "with every gene module is below 0.2), the sign, and the module's five "
            "highest-loading genes (mean |r| with its neurons).",
            [{**row, "top_genes": ", ".join(row.get("top_genes", []))}
             for row in results["neuron_modules"]]]),
        ("Baselines from the expression matrix alone", [
            "Louvain on the gene-gene |correlation| graph (louvain_corr), average linkage of "
            "1 - |correlation| with the silhouette rule (average_corr), k-means of PCA "
            "loadings (kmeans_pca), and the old reading where every gene joins its single "
            "highest-loading neuron module (argmax); agreement with the learned graph's gene "
            "modules. No true gene modules are known here: agreement is not accuracy.",
            baseline_table]),
    ]
    for column, table in group_tables.items():
        sections.append((f"Module activity per {column} (minus the all-cell mean)", [table]))
    sections.append(("Figures", list(figures)))
    return sections
