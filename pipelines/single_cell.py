r"""A learned neuron graph on single-cell data: gene modules, cell types, branches, pseudotime.

The reference model (``gsr_pyg.models.DenseAutoencoder``: dense 128x3, a 100-unit linear
latent, Gaussian noise 0.5 after it) is trained on the cells x genes matrix of any AnnData
(``.h5ad``) or CSV file while a graph over its latent neurons is learned from their
co-activations (:class:`gsr_pyg.training.GSRTrainer`, by default this library's
``recommended`` preset; ``--preset reference`` for the original method). Then
(:mod:`gsr_pyg.readouts`):

* the learned graph is cut into **neuron modules** (Louvain by default);
* the genes are clustered on their correlation profiles over the latent neurons: the **gene
  modules**, their number chosen by the silhouette; each neuron module carries one gene
  module with a sign (:func:`~gsr_pyg.readouts.graph_feature_modules`); each gene module
  lists its genes by affinity;
* the same data clustered without any network, the **baselines** (Louvain and average
  linkage on the gene-gene correlation, k-means of PCA loadings:
  :func:`~gsr_pyg.readouts.feature_module_baselines`), and their agreement with the gene
  modules (ARI, NMI);
* genes are linked through the neuron modules they load on: the **gene graph**
  (:func:`~gsr_pyg.readouts.feature_graph`);
* the reconstruction MSE is measured on held-out cells (``--holdout``, default 10 %) that
  the model never trained on;
* the mean latent activity per cell type / branch / pseudotime bin is painted on the graph,
  neuron x gene correlations are drawn per group, and cells are embedded (UMAP when scanpy
  is installed, else PCA) and coloured by module activity;
* everything goes back into the AnnData, saved as ``adata_gsr.h5ad``.

Data that work offline (scanpy's bundled datasets): ``krumsiek11`` (the default: 640 cells x
11 genes of simulated myeloid differentiation from a known regulatory network; four
simulations of 160 time steps from one progenitor state to Mo, Ery, Mk and Neu; fast) and
``pbmc68k_reduced`` (700 real PBMCs x 765 genes with cell-type labels incl. T-cell subsets).
For ``krumsiek11`` the pipeline adds two ``obs`` columns read from the cell ids: ``time_step``
(the pseudotime) and ``fate`` (the cell type its simulation ends in: the branch).

    python -m pipelines.single_cell                                 # krumsiek11
    python -m pipelines.single_cell --data pbmc68k_reduced --layer raw --hvg 200
    python -m pipelines.single_cell --data my.h5ad --layer counts_log --label-columns celltype \
        --pseudotime-column dpt_pseudotime --out runs/my_data
    torchrun --nproc_per_node=2 -m pipelines.single_cell --quick    # every process trains

Written to ``--out`` (``docs/single_cell.md`` says what every output and every field added
to the AnnData means): ``results.json``, ``gene_modules.csv``, ``neuron_graph.graphml``,
``gene_graph.graphml``, ``neuron_graph.png``, ``neuron_graph_evolution.png``,
``activity_<column>.png``, ``correlations_all.png``, ``correlations_<column>_<group>.png``,
``embedding_<umap|pca>.png``, ``adata_gsr.h5ad``, ``run/`` (the trainer's run directory) and
``report.html``. Under torchrun every process trains and rank 0 reads out and writes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from gsr_pyg import plotting, readouts
from gsr_pyg.data import annotate_anndata, cell_embedding, write_h5ad
from gsr_pyg.files import write_json
from gsr_pyg.report import write_html_report

from . import _single_cell_io as sc_io
from ._cli import (
    non_negative_float,
    number_type,
    option,
    positive_int,
    report_command,
    run_cli,
    run_command,
)
from ._graph_learning import (
    MODULE_METHODS,
    PRESETS,
    QUICK_SCHEDULE,
    GraphLearningSettings,
    carried_table,
    encode,
    graph_evolution_figure,
    module_analysis,
    override_option,
    preset_settings,
    train_autoencoder,
)
from ._runtime import device_option, make_out_dir, pipeline_processes, torch_threads

TRAIN, READ = "model and training", "read-outs"
_fraction = number_type(float, "a number in [0, 0.5]", lambda value: 0 <= value <= 0.5)


@dataclass(frozen=True)
class SingleCellSettings(GraphLearningSettings):
    """krumsiek11 with the recommended preset by default; :meth:`quick` is a fast look."""

    prog: ClassVar[str] = "python -m pipelines.single_cell"
    description: ClassVar[str] = (
        "Train the reference autoencoder with a learned graph over its latent neurons on "
        "single-cell data; write neuron modules, gene modules, a gene graph, read-outs per "
        "cell type / branch / pseudotime and an annotated .h5ad.")
    quick_help: ClassVar[str] = "a fast look: 300 warm-up and 300 learning steps"

    data: str = option("krumsiek11", "an .h5ad or .csv (cells x genes) file, or a dataset "
                                     "bundled with scanpy: krumsiek11 (default) or "
                                     "pbmc68k_reduced", group="data")
    layer: str | None = option(None, "adata.layers[LAYER] instead of adata.X ('raw': "
                                     "adata.raw.X)", group="data")
    genes: list[str] | None = option(None, "use only these genes, in this order", nargs="+",
                                     metavar="GENE", group="data")
    hvg: int | None = option(None, "use the N most variable genes (scanpy's seurat dispersion "
                                   "when the data look log-normalised, else the variance)",
                             type=positive_int, metavar="N", group="data")
    scale: str = option("standard", "per-gene scaling before training (default standard: "
                                    "z-scores)", choices=("standard", "minmax", "none"),
                        group="data")
    label_columns: list[str] | None = option(
        None, "obs columns with cell types / branches to read out; the first also gets "
              "per-group correlation heatmaps (default for krumsiek11: cell_type fate; "
              "pbmc68k_reduced: bulk_labels; other data: none)", nargs="*", metavar="COLUMN",
        group="data")
    pseudotime_column: str | None = option(None, "numeric obs column read out in quintile bins "
                                                 "(default for krumsiek11: time_step; 'none' "
                                                 "for none)", metavar="COLUMN", group="data")
    preset: str = option("recommended", "how the graph is learned (default recommended; see "
                                        "pipelines.learned_graph)", choices=tuple(PRESETS),
                         group=TRAIN)
    warmup_steps: int | None = override_option("warmup_steps", TRAIN)
    refresh_every: int | None = override_option("refresh_every", TRAIN)
    learning_steps: int | None = override_option("learning_steps", TRAIN)
    weight: float | None = override_option("weight", TRAIN)
    lr: float | None = override_option("lr", TRAIN)
    batch_size: int | None = override_option("batch_size", TRAIN)
    holdout: float = option(0.1, "fraction of the cells held out of training, for the "
                                 "reconstruction MSE (default 0.1; 0: none)",
                            type=_fraction, group=TRAIN)
    latent_dim: int = option(100, "latent neurons (default 100)", type=positive_int,
                             group=TRAIN)
    noise_std: float = option(0.5, "training noise after the latent (default 0.5)",
                              type=non_negative_float, group=TRAIN)
    module_method: str = option("louvain", "how the neuron graph is cut into modules (default "
                                           "louvain)", choices=MODULE_METHODS, group=READ)
    num_modules: int | None = option(None, "k of --module-method spectral", type=positive_int,
                                     group=READ)
    top_genes: int = option(10, "genes listed per module (default 10)", type=positive_int,
                            group=READ)
    min_loading: float = option(0.2, "gene graph: a gene loads on a module when its mean |r| "
                                     "with the module's neurons is at least this (default 0.2) "
                                     "...", type=non_negative_float, group=READ)
    relative_loading: float = option(0.9, "... and at least this fraction of its best "
                                          "module's (default 0.9)", type=non_negative_float,
                                     group=READ)
    embedding: str | None = option(None, "cell embedding (default umap when scanpy is "
                                         "installed, else pca)", choices=("umap", "pca"),
                                   group=READ)
    seed: int = option(0, "seed of the model, the batch order and the layouts (default 0)",
                       type=int)
    device: str | None = device_option()
    out: str = option("runs/single_cell", "output directory (default runs/single_cell); an "
                                          "interrupted run resumes there")
    threads: int = option(1, "CPU threads for torch while the pipeline runs (default 1: this "
                             "small model trains fastest on one thread)", type=positive_int)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.genes is not None and self.hvg is not None:
            raise ValueError("pass either --genes or --hvg, not both")
        if self.module_method == "spectral":
            if self.num_modules is None:
                raise ValueError("--module-method spectral needs --num-modules")
            if self.num_modules > self.latent_dim:
                raise ValueError(f"--num-modules must be at most the latent width "
                                 f"{self.latent_dim}")
        elif self.num_modules is not None:
            raise ValueError(f"--num-modules is the k of --module-method spectral; "
                             f"--module-method {self.module_method} takes no --num-modules")

    @classmethod
    def quick(cls) -> SingleCellSettings:
        """A fast look: the short schedule of the preset."""
        return cls(**QUICK_SCHEDULE)


# --------------------------------------------------------------------------- the run
def run(settings: SingleCellSettings, command: str | None = None) -> Path | None:
    """Train, read out and write every output and ``report.html`` to ``settings.out``;
    returns the report's path. Raises FileNotFoundError / ValueError naming the problem
    (missing file, no cells or genes, unknown gene / layer / column, NaN in the matrix)
    before training. Under torchrun every process trains and the processes other than rank
    0 return None without reading out or writing."""
    command = report_command(settings, command)
    with torch_threads(settings.threads), \
            pipeline_processes(settings.device) as (is_main, device):
        started = time.perf_counter()
        data = sc_io.load_data(settings)
        x, genes = data["x"], data["genes"]
        chosen = preset_settings(settings.preset, settings)
        out = make_out_dir(settings.out)
        if is_main:
            print(f"{settings.data}: {x.shape[0]} cells x {x.shape[1]} genes; preset "
                  f"{settings.preset}; device {device}", flush=True)
        config = {"pipeline": "single_cell", "data": str(settings.data),
                  "layer": settings.layer, "genes": genes, "scale": settings.scale,
                  "cells": int(x.shape[0]), "batch_size": chosen["batch_size"], "lr": chosen["lr"],
                  "latent_dim": settings.latent_dim, "noise_std": settings.noise_std}
        heldout = sc_io.heldout_cells(x.shape[0], settings.holdout, settings.seed)
        train_x = x[~heldout]
        chosen["batch_size"] = min(chosen["batch_size"], train_x.shape[0])
        config["batch_size"], config["holdout"] = chosen["batch_size"], settings.holdout
        trained = train_autoencoder(
            train_x, chosen, latent_dim=settings.latent_dim, noise_std=settings.noise_std,
            seed=settings.seed, device=device, run_dir=out / "run", config=config,
            quiet=settings.quiet, drop_last=True)
        if not is_main:
            return None
        # the read-outs describe every cell; the MSE that measures the model, only the
        # cells it never trained on
        latent, _ = encode(trained.model, x, device)
        mse = {"train": encode(trained.model, train_x, device)[1],
               "heldout": encode(trained.model, x[heldout], device)[1]
               if bool(heldout.any()) else None, "heldout_cells": int(heldout.sum())}
        found = _modules(settings, trained.graph, x, latent, genes)
        figures, group_tables, kind, coords = _figures(settings, data, trained, latent, found,
                                                       out)
        run_settings = {
            "data": str(settings.data), "layer": settings.layer, "genes": len(genes),
            "hvg": settings.hvg, "scale": settings.scale, "preset": settings.preset,
            "training": chosen, "latent_dim": settings.latent_dim,
            "noise_std": settings.noise_std, "module_method": settings.module_method,
            "num_modules": settings.num_modules, "seed": settings.seed, "embedding": kind,
            "device": str(device), "label_columns": list(data["labels"]),
            "pseudotime_column": data["pseudotime"][0] if data["pseudotime"] else None,
            "command": command}
        annotate_anndata(data["adata"], latent, trained.graph, found["neurons"], genes=genes,
                         module_activity=found["activity"], loadings=found["loadings"],
                         correlations=found["correlations"], embedding=coords,
                         embedding_name=kind, settings=run_settings,
                         feature_modules=found["features"])
        h5ad = write_h5ad(data["adata"], out / "adata_gsr.h5ad")
        results = sc_io.results_json(run_settings, x, trained, mse, found, group_tables, h5ad,
                                     figures)
        write_json(out / "results.json", results)
        report = write_html_report(
            out / "report.html", f"Learned neuron graph on {Path(str(settings.data)).name}",
            sc_io.report_sections(settings, results, group_tables, figures))
        print(f"{results['graph']['modules']} neuron modules carrying "
              f"{len(results['gene_modules'])} gene modules; MSE on "
              + (f"{mse['heldout_cells']} held-out cells {mse['heldout']:.4f}"
                 if mse["heldout"] is not None else f"the training cells {mse['train']:.4f}")
              + f"; done in {time.perf_counter() - started:.1f} s")
        print(f"annotated data: {h5ad.resolve()}")
        print(f"report: {report.resolve()}")
        return report


def _modules(settings: SingleCellSettings, graph, x: torch.Tensor, latent: torch.Tensor,
             genes: list[str]) -> dict:
    """Neuron modules, their activity, the gene modules and what each neuron module carries,
    the loadings on the neuron modules, the gene graph and the baselines."""
    found = module_analysis(graph, x, latent, seed=settings.seed,
                            module_method=settings.module_method,
                            num_modules=settings.num_modules, min_loading=settings.min_loading,
                            relative_loading=settings.relative_loading)
    neurons = found["neurons"]
    found["loadings"] = readouts.module_loadings(found["correlations"], neurons, genes,
                                                 settings.top_genes)
    found.update({"num_modules": int(neurons.max()) + 1,
                  "activity": readouts.module_activity(latent, neurons, int(neurons.max()) + 1),
                  "modules": sc_io.gene_modules(found["features"], genes, settings.top_genes),
                  "carried": [{**row, "top_genes": [e["feature"] for e in
                                                    module["top_features"][:5]]}
                              for row, module in zip(
                                  carried_table(found["features"], torch.bincount(neurons)),
                                  found["loadings"].modules)],
                  "gene_graph": found.pop("feature_graph")})
    return found


def _figures(settings: SingleCellSettings, data: dict, trained, latent: torch.Tensor,
             found: dict, out: Path) -> tuple[list[Path], dict, str, object]:
    """The graphs as GraphML, the gene-module CSV and every figure; also the embedding."""
    graph, neurons, num_modules = trained.graph, found["neurons"], found["num_modules"]
    layout = plotting.spring_layout(graph, seed=settings.seed)
    sc_io.write_graph_files(settings, graph, data["genes"], found, out)
    figures = [out / "neuron_graph.png"]
    plotting.plot_graph(graph, neurons, pos=layout, categorical=True,
                        class_names=[f"module {m}" for m in range(num_modules)],
                        title=f"learned neuron graph ({settings.module_method} modules)",
                        path=figures[0])
    evolution = graph_evolution_figure(trained.history, layout, neurons, num_modules,
                                       "final neuron module", "module",
                                       out / "neuron_graph_evolution.png")
    figures += [evolution] if evolution is not None else []
    groups = dict(data["labels"])
    if data["pseudotime"] is not None:
        column, values = data["pseudotime"]
        groups[f"{column} bins"] = sc_io.pseudotime_groups(column, values)
    activity_figures, group_tables = sc_io.group_activity(graph, layout, latent,
                                                          found["activity"], groups, out)
    figures += activity_figures
    figures += sc_io.correlation_heatmaps(data["x"], latent, neurons, found["modules"],
                                          found["features"].assignment, data["genes"],
                                          data["labels"], out)
    kind = settings.embedding or ("umap" if sc_io.has_scanpy() else "pca")
    coords = cell_embedding(latent, kind, settings.seed)
    figures.append(sc_io.embedding_figure(coords, kind, data["labels"], found["activity"],
                                          out / f"embedding_{kind}.png"))
    return figures, group_tables, kind, coords


def main(argv: Sequence[str] | None = None) -> Path | None:
    """``python -m pipelines.single_cell [options]``; returns the path of ``report.html``."""
    return run_command(SingleCellSettings, run, argv)


if __name__ == "__main__":
    run_cli(main)
