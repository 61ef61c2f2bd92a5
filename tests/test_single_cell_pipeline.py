"""The single-cell pipeline: outputs, the annotated .h5ad read back, gene modules, errors."""

from __future__ import annotations

import csv
import json
import sys

import networkx as nx
import numpy as np
import pytest

from gsr_pyg.data.synthetic import planted_modules
from gsr_pyg.metrics import adjusted_rand_index
from pipelines import single_cell
from pipelines._cli import run_cli

anndata = pytest.importorskip("anndata")
pd = pytest.importorskip("pandas")

SHORT = ["--warmup-steps", "200", "--refresh-every", "50", "--learning-steps", "200",
         "--embedding", "pca", "--quiet"]
GENE_NAMES = [f"gene{i}" for i in range(12)]


def _planted_adata(cells: int = 1200) -> anndata.AnnData:
    """Cells whose 12 genes form three well separated planted modules of four genes."""
    planted = planted_modules(num_samples=cells, module_sizes=(4, 4, 4), within_corr=0.9,
                              seed=0)
    obs = pd.DataFrame(
        {"state": pd.Categorical([f"state{m}" for m in planted.active.tolist()]),
         "time": np.linspace(0.0, 1.0, cells).astype(np.float32)},
        index=[f"cell{i}" for i in range(cells)])
    adata = anndata.AnnData(X=planted.data.numpy(), obs=obs,
                            var=pd.DataFrame(index=GENE_NAMES))
    adata.uns["truth"] = planted.feature_module.numpy()
    return adata


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single_cell")
    adata = _planted_adata()
    path = folder / "planted.h5ad"
    adata.write_h5ad(path)
    out = folder / "out"
    report = single_cell.main(["--data", str(path), "--label-columns", "state",
                               "--pseudotime-column", "time", "--out", str(out), *SHORT])
    return out, report, adata


def test_writes_every_output(planted_run):
    out, report, _ = planted_run
    assert report == out / "report.html"
    for name in ("results.json", "gene_modules.csv", "neuron_graph.graphml",
                 "gene_graph.graphml", "neuron_graph.png", "neuron_graph_evolution.png",
                 "activity_state.png", "activity_time_bins.png", "correlations_all.png",
                 "correlations_state_state0.png", "embedding_pca.png", "adata_gsr.h5ad"):
        assert (out / name).stat().st_size > 0, name
    assert sorted((out / "run" / "snapshots" / "latent").glob("*.graphml"))
    html = report.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == len(
        json.loads((out / "results.json").read_text())["files"]["figures"])


def test_results_json(planted_run):
    out, _, _ = planted_run
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["data"] == {"cells": 1200, "genes": 12}
    training = results["training"]
    assert training["steps"] == 400
    assert training["graphs_learned"] == 4
    # 10 % of the cells held out of training; the MSE that measures the model is theirs
    assert training["heldout_cells"] == 120
    assert 0 < training["mse_train"] < 1 and 0 < training["mse_heldout"] < 1
    assert json.loads((out / "run" / "config.json").read_text())["user.holdout"] == 0.1
    graph = results["graph"]
    assert graph["neurons"] == 100
    # three gene modules (the planted ones), whatever the number of neuron modules
    modules = results["gene_modules"]
    assert len(modules) == results["gene_module_choice"]["modules"] == 3
    assert graph["modules"] > 3
    assigned = [g for m in modules for g in m["genes"]]
    assert sorted(assigned) == sorted(GENE_NAMES)  # every gene in exactly one module
    for module in modules:
        affinities = [entry["affinity"] for entry in module["top_genes"]]
        assert affinities == sorted(affinities, reverse=True)
        assert [e["gene"] for e in module["top_genes"] if e["assigned"]] == module["genes"]
    # every neuron module is listed once, and those that carry a gene module say so with
    # a sign; the carriers of each gene module are listed with it
    carried = results["neuron_modules"]
    assert [row["neuron_module"] for row in carried] == list(range(graph["modules"]))
    assert sum(row["neurons"] for row in carried) == 100
    assert all(len(row["top_genes"]) == 5 and set(row["top_genes"]) <= set(GENE_NAMES)
               for row in carried)
    for module in modules:
        rows = {c["neuron_module"]: c for c in module["carried_by"]}
        assert rows, "every planted module is carried by some neuron module"
        for number, entry in rows.items():
            assert carried[number]["feature_module"] == module["module"]
            assert carried[number]["sign"] == ("+" if entry["sign"] > 0 else "-")
    # the baselines agree with the gene modules on these well separated modules
    assert set(results["baselines"]) == {"louvain_corr", "average_corr", "kmeans_pca"}
    for baseline in results["baselines"].values():
        assert baseline["modules"] == 3 and baseline["ari_with_gene_modules"] == 1.0
    table = results["group_module_activity"]["state"]
    assert [row["state"] for row in table] == ["state0", "state1", "state2"]
    assert sum(row["cells"] for row in table) == 1200
    assert len(results["group_module_activity"]["time bins"]) == 5


def test_easy_gene_modules_match_the_planted_ones(planted_run):
    out, _, adata = planted_run
    back = anndata.read_h5ad(out / "adata_gsr.h5ad")
    found = back.var["gsr_gene_module"].to_numpy()
    assert adjusted_rand_index(found.tolist(), adata.uns["truth"].tolist()) == 1.0
    # gene_modules.csv: one row with assigned 1 for every gene, in its own module
    with open(out / "gene_modules.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["module", "rank", "gene", "affinity", "assigned"]
    own = {row["gene"]: int(row["module"]) for row in rows if row["assigned"] == "1"}
    assert len([row for row in rows if row["assigned"] == "1"]) == 12
    assert [own[g] for g in GENE_NAMES] == found.tolist()


def test_annotated_h5ad_read_back(planted_run):
    out, _, adata = planted_run
    back = anndata.read_h5ad(out / "adata_gsr.h5ad")
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    modules = results["graph"]["modules"]
    assert back.shape == adata.shape
    latent = back.obsm["X_gsr"]
    assert latent.shape == (1200, 100)
    assert back.obsm["X_gsr_pca"].shape == (1200, 2)
    labels = np.asarray(back.uns["gsr"]["neuron_modules"])
    assert labels.shape == (100,) and labels.max() + 1 == modules
    # module activity = mean latent of the module's neurons
    expected = np.stack([latent[:, labels == m].mean(axis=1) for m in range(modules)], axis=1)
    np.testing.assert_allclose(back.obsm["X_gsr_modules"], expected, rtol=1e-5, atol=1e-5)
    # loadings = mean |r| between each gene and the module's neurons (numpy reference)
    x = (adata.X - adata.X.mean(0)) / adata.X.std(0)
    corr = np.corrcoef(latent.T.astype(np.float64), x.T.astype(np.float64))[:100, 100:]
    np.testing.assert_allclose(back.varm["gsr_correlation"], corr.T, atol=1e-4)
    loadings = np.stack([np.abs(corr[labels == m]).mean(0) for m in range(modules)], axis=1)
    np.testing.assert_allclose(back.varm["gsr_loadings"], loadings, atol=1e-4)
    np.testing.assert_array_equal(back.var["gsr_module"].to_numpy(), loadings.argmax(1))
    edge_index = np.asarray(back.uns["gsr"]["edge_index"])
    assert edge_index.shape[0] == 2
    assert edge_index.shape[1] == np.asarray(back.uns["gsr"]["edge_weight"]).shape[0]
    assert edge_index.shape[1] == 2 * results["graph"]["edges"]
    assert list(back.uns["gsr"]["genes"]) == GENE_NAMES
    assert back.uns["truth"].tolist() == adata.uns["truth"].tolist()  # input fields kept


def test_graphs_open_in_networkx(planted_run):
    out, _, _ = planted_run
    back = anndata.read_h5ad(out / "adata_gsr.h5ad")
    neurons = nx.read_graphml(out / "neuron_graph.graphml")
    assert neurons.number_of_nodes() == 100
    labels = np.asarray(back.uns["gsr"]["neuron_modules"])
    assert [neurons.nodes[n]["module"] for n in neurons.nodes] == labels.tolist()
    # each neuron names the gene module its module carries, as results.json and the h5ad do
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    carried = np.asarray(back.uns["gsr"]["carried_module"])
    assert carried.tolist() == [-1 if row["feature_module"] is None else row["feature_module"]
                                for row in results["neuron_modules"]]
    assert [neurons.nodes[n]["gene_module"] for n in neurons.nodes] == carried[labels].tolist()
    assert set(np.asarray(back.uns["gsr"]["carried_sign"]).tolist()) <= {-1, 0, 1}
    genes = nx.read_graphml(out / "gene_graph.graphml")
    assert genes.number_of_nodes() == 12
    assert {genes.nodes[n]["label"] for n in genes.nodes} == set(GENE_NAMES)
    # genes are only linked when they share a module they load on
    for a, b in genes.edges:
        shared = set(genes.nodes[a]["loads_on"].split(",")) & set(
            genes.nodes[b]["loads_on"].split(","))
        assert shared - {""}


def test_krumsiek11_defaults(tmp_path):
    out = tmp_path / "k11"
    single_cell.main(["--out", str(out), "--warmup-steps", "40", "--refresh-every", "20",
                      "--learning-steps", "40", "--embedding", "pca", "--quiet"])
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["data"] == {"cells": 640, "genes": 11}
    assert results["settings"]["label_columns"] == ["cell_type", "fate"]
    assert results["settings"]["pseudotime_column"] == "time_step"
    fates = {row["fate"]: row["cells"] for row in results["group_module_activity"]["fate"]}
    assert fates == {"Ery": 160, "Mk": 160, "Mo": 160, "Neu": 160}
    back = anndata.read_h5ad(out / "adata_gsr.h5ad")
    assert back.obs["time_step"].max() == 159
    # every simulation ends in its fate
    last = back.obs.groupby("fate", observed=True)["time_step"].idxmax()
    assert all(back.obs.loc[cell, "cell_type"] == fate for fate, cell in last.items())


def test_few_cells_record_the_batch_and_the_modules_used(tmp_path):
    # 20 cells, 2 held out: the batch of 32 is cut to the 18 training cells and
    # results.json says so; --num-modules is recorded with the spectral cut it sets
    path = tmp_path / "few.h5ad"
    _planted_adata(20).write_h5ad(path)
    out = tmp_path / "out"
    single_cell.main(["--data", str(path), "--out", str(out), "--module-method", "spectral",
                      "--num-modules", "2", "--warmup-steps", "4", "--refresh-every", "2",
                      "--learning-steps", "4", "--embedding", "pca", "--quiet"])
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["settings"]["training"]["batch_size"] == 18
    assert results["training"]["heldout_cells"] == 2
    assert results["training"]["steps"] == 8  # one batch of 18 cells per epoch, no remainder
    assert json.loads((out / "run" / "config.json").read_text())["user.batch_size"] == 18
    assert (results["settings"]["module_method"], results["settings"]["num_modules"]) == (
        "spectral", 2)
    assert results["graph"]["modules"] == 2


# --------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.h5ad"):
        single_cell.main(["--data", str(tmp_path / "nothere.h5ad"), "--out",
                          str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shape, message", [((0, 5), "no cells"), ((5, 0), "no genes")])
def test_empty_file(tmp_path, shape, message):
    path = tmp_path / "empty.h5ad"
    anndata.AnnData(X=np.zeros(shape, dtype=np.float32)).write_h5ad(path)
    with pytest.raises(ValueError, match=message):
        single_cell.main(["--data", str(path), "--out", str(tmp_path / "out")])


def test_missing_columns(tmp_path):
    path = tmp_path / "planted.h5ad"
    _planted_adata(60).write_h5ad(path)
    with pytest.raises(ValueError, match="column 'stat' not found; closest: \\['state'"):
        single_cell.main(["--data", str(path), "--label-columns", "stat", "--out",
                          str(tmp_path / "out")])
    with pytest.raises(ValueError, match="column 'pseudotime' not found"):
        single_cell.main(["--data", str(path), "--pseudotime-column", "pseudotime",
                          "--out", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="genes: 1 of 2 not found"):
        single_cell.main(["--data", str(path), "--genes", "gene1", "gene99", "--out",
                          str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_nan_in_matrix(tmp_path):
    adata = _planted_adata(60)
    adata.X[7, 3] = np.nan
    path = tmp_path / "nan.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(ValueError, match="must be finite, got 1 NaN .* gene 'gene3'"):
        single_cell.main(["--data", str(path), "--out", str(tmp_path / "out")])


def test_command_line_prints_the_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["single_cell", "--data", str(tmp_path / "x.h5ad")])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(single_cell.main)
    assert exit_info.value.code == 2
    assert "single_cell: error: no such file" in capsys.readouterr().err
