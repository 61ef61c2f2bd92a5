from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

anndata = pytest.importorskip("anndata")
pd = pytest.importorskip("pandas")
sparse = pytest.importorskip("scipy.sparse")

from gsr_pyg import metrics, readouts  # noqa: E402
from gsr_pyg.data.single_cell import (  # noqa: E402
    add_krumsiek11_columns,
    annotate_anndata,
    cell_embedding,
    load_anndata,
    obs_labels,
    obs_values,
    prepare_matrix,
    write_h5ad,
)
from gsr_pyg.graphs import from_edge_index, ring  # noqa: E402


def small_adata(seed: int = 0, cells: int = 40, genes: int = 6):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(cells, genes)) * np.arange(1, genes + 1)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["T", "B", "NK"], cells),
                                        categories=["T", "B", "NK", "unused"]),
            "donor": rng.choice(["d2", "d1"], cells),
            "cluster": rng.integers(3, 6, cells),
            "pseudotime": rng.uniform(size=cells),
        },
        index=[f"cell{i}" for i in range(cells)],
    )
    var = pd.DataFrame(index=[f"g{j}" for j in range(genes)])
    return anndata.AnnData(X=X.astype(np.float32), obs=obs, var=var)


# ---- loading files -------------------------------------------------------------------------


def test_csv_loads_cells_by_genes(tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text("cell,GeneA,GeneB,GeneC\nc1,1,2.5,0\nc2,3,-1,4e2\n")
    adata = load_anndata(path)
    assert adata.shape == (2, 3)
    assert list(adata.obs_names) == ["c1", "c2"]
    assert list(adata.var_names) == ["GeneA", "GeneB", "GeneC"]
    np.testing.assert_array_equal(adata.X, np.array([[1, 2.5, 0], [3, -1, 400]], np.float32))
    gz = tmp_path / "cells.csv.gz"
    pd.read_csv(path).to_csv(gz, index=False)
    np.testing.assert_array_equal(load_anndata(str(gz)).X, adata.X)


def test_h5ad_round_trips(tmp_path):
    adata = small_adata()
    adata.X = sparse.csr_matrix(np.where(adata.X > 0, adata.X, 0))
    adata.layers["counts"] = np.round(np.abs(adata.X.toarray()) * 10)
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    loaded = load_anndata(str(path))
    assert loaded.shape == (40, 6)
    np.testing.assert_array_equal(loaded.X.toarray(), adata.X.toarray())
    np.testing.assert_array_equal(loaded.layers["counts"], adata.layers["counts"])
    pd.testing.assert_frame_equal(loaded.obs, adata.obs)
    X, genes = prepare_matrix(loaded, layer="counts", scale=None)
    np.testing.assert_array_equal(X.numpy(), adata.layers["counts"].astype(np.float32))
    assert genes == [f"g{j}" for j in range(6)]


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere.h5ad"
    with pytest.raises(FileNotFoundError, match="nowhere.h5ad"):
        load_anndata(path)
    with pytest.raises(FileNotFoundError, match="did you mean 'krumsiek11'"):
        load_anndata("krumsiek1")


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("empty.csv", "", "no cells and no genes"),
        ("header.csv", "cell,g1,g2\n", "no cells"),
        ("ids.csv", "cell\nc1\nc2\n", "no genes"),
        ("words.csv", "cell,g1,g2\nc1,1,2\nc2,3,high\n", "'g2' is not numeric: cell 'c2'"),
        ("cells.txt", "cell,g1\nc1,1\n", "unknown extension '.txt'"),
    ],
)
def test_bad_files_are_rejected(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_anndata(path)


def test_empty_h5ad_is_rejected(tmp_path):
    path = tmp_path / "no_genes.h5ad"
    anndata.AnnData(X=np.zeros((3, 0), np.float32)).write_h5ad(path)
    with pytest.raises(ValueError, match="no genes"):
        load_anndata(path)


# ---- bundled datasets ----------------------------------------------------------------------


def test_bundled_krumsiek11():
    pytest.importorskip("scanpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no duplicate-name warning escapes
        adata = load_anndata("krumsiek11")
    assert adata.shape == (640, 11)
    assert adata.obs_names.is_unique
    codes, names = obs_labels(adata, "cell_type")
    assert names == ["Ery", "Mk", "Mo", "Neu", "progenitor"]
    assert torch.bincount(codes).tolist() == [80, 80, 80, 80, 320]
    X, genes = prepare_matrix(adata, genes=["Gata1", "Pu.1"], scale=None)
    assert X.shape == (640, 2) and genes == ["Gata1", "Pu.1"]
    np.testing.assert_array_equal(X[:, 1].numpy(), adata[:, "Pu.1"].X.ravel())


def test_bundled_pbmc68k_reduced():
    pytest.importorskip("scanpy")
    adata = load_anndata("pbmc68k_reduced")
    assert adata.shape == (700, 765)
    codes, names = obs_labels(adata, "bulk_labels")
    assert len(names) == 10 and "CD8+ Cytotoxic T" in names
    assert codes.shape == (700,) and int(codes.max()) < 10
    np.testing.assert_array_equal(obs_values(adata, "n_genes").numpy(),
                                  adata.obs["n_genes"].to_numpy(np.float32))
    X, genes = prepare_matrix(adata, highly_variable=True, scale=None)
    assert X.shape == (700, 309) and len(genes) == 309
    raw, raw_genes = prepare_matrix(adata, layer="raw", scale=None)
    assert raw.shape == (700, 765) and float(raw.min()) >= 0
    np.testing.assert_allclose(raw.numpy(), adata.raw.X.toarray())


def test_bundled_dataset_without_scanpy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "scanpy", None)
    with pytest.raises(ImportError, match=r"pip install gsr-pyg\[sc\]"):
        load_anndata("krumsiek11")


# ---- prepare_matrix ------------------------------------------------------------------------


def test_standard_and_minmax_scaling_match_sklearn():
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    adata = small_adata()
    reference = adata.X.astype(np.float64)
    X, genes = prepare_matrix(adata)
    assert X.dtype == torch.float32 and genes == list(adata.var_names)
    np.testing.assert_allclose(X.numpy(), preprocessing.StandardScaler().fit_transform(reference),
                               atol=1e-5)
    X, _ = prepare_matrix(adata, scale="minmax")
    np.testing.assert_allclose(X.numpy(), preprocessing.MinMaxScaler().fit_transform(reference),
                               atol=1e-6)
    X, _ = prepare_matrix(adata, max_value=1.0)
    standard = preprocessing.StandardScaler().fit_transform(reference)
    np.testing.assert_allclose(X.numpy(), np.clip(standard, -1, 1), atol=1e-5)
    assert float(X.abs().max()) == 1.0


def test_constant_gene_is_kept_at_zero_with_a_warning():
    adata = small_adata()
    adata.X[:, 2] = 3.0
    with pytest.warns(UserWarning, match=r"1 constant gene.*'g2'"):
        X, genes = prepare_matrix(adata)
    assert len(genes) == 6
    assert torch.equal(X[:, 2], torch.zeros(40))
    assert abs(float(X[:, 0].std(unbiased=False)) - 1.0) < 1e-5


def test_gene_selection_keeps_the_given_order_and_densifies_sparse():
    adata = small_adata()
    dense = adata.X.copy()
    adata.X = sparse.csr_matrix(dense)
    X, genes = prepare_matrix(adata, genes=["g4", "g0"], scale=None)
    assert genes == ["g4", "g0"]
    np.testing.assert_array_equal(X.numpy(), dense[:, [4, 0]])


def test_unknown_gene_is_named():
    with pytest.raises(ValueError, match=r"1 of 2 not found.*\['gene7'\]"):
        prepare_matrix(small_adata(), genes=["g1", "gene7"])


def test_nan_is_counted_and_located():
    adata = small_adata()
    adata.X[[3, 5], 4] = np.nan
    adata.X[7, 5] = np.inf
    with pytest.raises(ValueError, match=r"2 NaN and 1 Inf.*first in gene 'g4' \(2 cells\)"):
        prepare_matrix(adata)


def test_unknown_layer_lists_the_layers():
    adata = small_adata()
    adata.layers["counts"] = adata.X.copy()
    with pytest.raises(ValueError, match=r"layer 'count' not found; closest: \['counts'\]"):
        prepare_matrix(adata, layer="count")


def test_highly_variable_by_variance_on_signed_data():
    adata = small_adata(genes=12)
    X, genes = prepare_matrix(adata, highly_variable=4, scale=None)
    top = np.sort(np.argsort(-adata.X.astype(np.float64).var(0))[:4])
    assert genes == [f"g{j}" for j in top]
    np.testing.assert_array_equal(X.numpy(), adata.X[:, top])
    with pytest.raises(ValueError, match="highly_variable must be <= 12"):
        prepare_matrix(adata, highly_variable=13)
    with pytest.raises(ValueError, match="either genes or highly_variable"):
        prepare_matrix(adata, genes=["g1"], highly_variable=2)


def test_highly_variable_uses_scanpy_on_log_data_and_falls_back(monkeypatch):
    scanpy = pytest.importorskip("scanpy")
    rng = np.random.default_rng(4)
    counts = rng.poisson(rng.gamma(0.5, 4.0, size=30), size=(300, 30))
    adata = anndata.AnnData(np.log1p(counts).astype(np.float32))
    adata.var_names = [f"g{j}" for j in range(30)]
    _, genes = prepare_matrix(adata, highly_variable=8, scale=None)
    table = scanpy.pp.highly_variable_genes(adata.copy(), flavor="seurat", n_top_genes=8,
                                            inplace=False)
    score = np.nan_to_num(table["dispersions_norm"].to_numpy(np.float64), nan=-np.inf)
    assert genes == [f"g{j}" for j in np.sort(np.argsort(-score, kind="stable")[:8])]
    monkeypatch.setitem(sys.modules, "scanpy", None)
    _, fallback = prepare_matrix(adata, highly_variable=8, scale=None)
    by_variance = np.sort(np.argsort(-adata.X.astype(np.float64).var(0), kind="stable")[:8])
    assert fallback == [f"g{j}" for j in by_variance]
    assert fallback != genes  # the two rankings differ on these data


def test_prepare_matrix_rejects_bad_arguments():
    with pytest.raises(TypeError, match="adata must be an anndata.AnnData"):
        prepare_matrix(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="scale must be one of"):
        prepare_matrix(small_adata(), scale="zscore")


# ---- obs columns ---------------------------------------------------------------------------


def test_obs_labels_for_categorical_string_and_integer_columns():
    adata = small_adata()
    codes, names = obs_labels(adata, "cell_type")
    assert names == ["T", "B", "NK", "unused"]
    assert [names[c] for c in codes.tolist()] == list(adata.obs["cell_type"])
    assert codes.dtype == torch.long
    codes, names = obs_labels(adata, "donor")
    assert names == ["d1", "d2"]
    assert [names[c] for c in codes.tolist()] == list(adata.obs["donor"])
    codes, names = obs_labels(adata, "cluster")
    assert names == [str(v) for v in sorted(set(adata.obs["cluster"]))]
    assert [int(names[c]) for c in codes.tolist()] == list(adata.obs["cluster"])


def test_obs_values_and_missing_values():
    adata = small_adata()
    values = obs_values(adata, "pseudotime")
    assert values.dtype == torch.float32
    np.testing.assert_allclose(values.numpy(), adata.obs["pseudotime"].to_numpy(), rtol=1e-6)
    adata.obs.loc["cell3", "pseudotime"] = np.nan
    with pytest.raises(ValueError, match="1 missing values"):
        obs_values(adata, "pseudotime")
    assert int(torch.isnan(obs_values(adata, "pseudotime", allow_missing=True)).sum()) == 1
    with pytest.raises(ValueError, match="use obs_values"):
        obs_labels(adata, "pseudotime")
    with pytest.raises(ValueError, match="use obs_labels"):
        obs_values(adata, "cell_type")


def test_unknown_column_lists_the_columns_closest_first():
    adata = small_adata()
    message = r"column 'celltype' not found; closest: \['cell_type'.*available: \['cell_type'"
    with pytest.raises(ValueError, match=message):
        obs_labels(adata, "celltype")
    with pytest.raises(ValueError, match=r"available: \[.*'pseudotime'"):
        obs_values(adata, "time")


# ---- krumsiek11 columns --------------------------------------------------------------------
def test_add_krumsiek11_columns_reads_step_and_branch_from_the_cell_ids():
    ids = ["0", "1", "2", "0-1", "1-1", "2-1", "2-2", "0-2", "1-2"]
    types = ["progenitor", "progenitor", "Mo", "progenitor", "Ery", "Ery", "Mk",
             "progenitor", "progenitor"]
    adata = anndata.AnnData(np.zeros((9, 1), dtype=np.float32),
                            obs=pd.DataFrame({"cell_type": types}, index=ids))
    assert add_krumsiek11_columns(adata) == ["time_step", "fate"]
    assert adata.obs["time_step"].tolist() == [0, 1, 2, 0, 1, 2, 2, 0, 1]
    assert adata.obs["time_step"].dtype == np.float32
    # the fate is the type at the simulation's last step, wherever that row stands
    assert adata.obs["fate"].tolist() == ["Mo"] * 3 + ["Ery"] * 3 + ["Mk"] * 3
    assert isinstance(adata.obs["fate"].dtype, pd.CategoricalDtype)
    adata.obs["fate"] = "kept"
    del adata.obs["time_step"]
    assert add_krumsiek11_columns(adata) == ["time_step"]
    assert set(adata.obs["fate"]) == {"kept"}


def test_add_krumsiek11_columns_on_the_bundled_data():
    pytest.importorskip("scanpy")
    adata = load_anndata("krumsiek11")
    add_krumsiek11_columns(adata)
    assert adata.obs["fate"].value_counts().to_dict() == {"Ery": 160, "Mk": 160, "Mo": 160,
                                                          "Neu": 160}
    assert adata.obs["time_step"].min() == 0 and adata.obs["time_step"].max() == 159


def test_add_krumsiek11_columns_errors():
    adata = anndata.AnnData(np.zeros((2, 1), dtype=np.float32),
                            obs=pd.DataFrame({"cell_type": ["a", "b"]}, index=["0", "cell1"]))
    with pytest.raises(ValueError, match=r"got 1 other ids, the first 'cell1'"):
        add_krumsiek11_columns(adata)
    assert "time_step" not in adata.obs.columns
    with pytest.raises(ValueError, match="column 'cell_type' not found"):
        add_krumsiek11_columns(anndata.AnnData(np.zeros((2, 1), dtype=np.float32)))
    with pytest.raises(TypeError, match="adata must be an anndata.AnnData"):
        add_krumsiek11_columns(np.zeros((2, 1)))


# ---- embedding -----------------------------------------------------------------------------
def test_cell_embedding_pca_matches_the_principal_components():
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(60, 5, generator=generator) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2])
    coords = cell_embedding(latent, method="pca")
    assert coords.shape == (60, 2) and coords.dtype == np.float32
    centred = latent.double().numpy() - latent.double().numpy().mean(axis=0)
    reference = centred @ np.linalg.eigh(np.cov(centred.T))[1][:, ::-1][:, :2]
    for axis in range(2):
        signed = reference[:, axis] * np.sign(reference[np.abs(reference[:, axis]).argmax(),
                                                        axis])
        np.testing.assert_allclose(coords[:, axis], signed, atol=1e-4)
        assert coords[np.abs(coords[:, axis]).argmax(), axis] > 0
    np.testing.assert_array_equal(cell_embedding(-latent, method="pca"), coords)


def test_cell_embedding_umap_is_repeatable():
    pytest.importorskip("scanpy")
    generator = torch.Generator().manual_seed(0)
    latent = torch.cat([torch.randn(30, 4, generator=generator),
                        torch.randn(30, 4, generator=generator) + 8.0])
    first = cell_embedding(latent, method="umap", seed=3)
    assert first.shape == (60, 2) and first.dtype == np.float32
    np.testing.assert_array_equal(first, cell_embedding(latent.numpy(), method="umap", seed=3))
    # the two blobs stay apart: every cell is nearer its own blob's centre
    centres = first[:30].mean(axis=0), first[30:].mean(axis=0)
    own = np.linalg.norm(first[:30] - centres[0], axis=1)
    assert (own < np.linalg.norm(first[:30] - centres[1], axis=1)).all()


def test_cell_embedding_errors():
    with pytest.raises(ValueError, match=r"method must be one of \('umap', 'pca'\), got 'tsne'"):
        cell_embedding(torch.zeros(5, 3), method="tsne")
    with pytest.raises(ValueError, match="latent must have at least 2 cells"):
        cell_embedding(torch.zeros(1, 3), method="pca")
    with pytest.raises(ValueError, match="at least 2 columns for method='pca', got 1"):
        cell_embedding(torch.zeros(5, 1), method="pca")
    with pytest.raises(ValueError, match="latent must be finite, got 1 NaN"):
        cell_embedding(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]), method="pca")
    with pytest.raises(ValueError, match=r"latent must be 2-D, got shape \(5,\)"):
        cell_embedding(torch.zeros(5), method="pca")
    with pytest.raises(TypeError, match="latent must be a torch.Tensor or numpy array"):
        cell_embedding([[0.0, 1.0]], method="pca")


# ---- results back into the AnnData ---------------------------------------------------------
def _learned_readouts(adata, genes):
    generator = torch.Generator().manual_seed(1)
    x = torch.from_numpy(adata[:, genes].X.copy())
    latent = torch.randn(adata.n_obs, 4, generator=generator)
    latent[:, 0] += x[:, 0]
    graph = from_edge_index(torch.tensor([[0, 2], [1, 3]]), torch.tensor([0.5, 2.0]), 4)
    neurons = torch.tensor([0, 0, 1, 1])
    correlations = metrics.feature_correlations(x, latent)
    loadings = readouts.module_loadings(correlations, neurons, genes, top=3)
    return latent, graph, neurons, correlations, loadings


def test_annotate_anndata_writes_the_inputs_by_gene_name():
    adata = small_adata()
    genes = ["g4", "g1", "g2", "not_in_adata"]
    adata.var_names = [f"g{j}" for j in range(adata.n_vars)]
    known = genes[:3]
    latent, graph, neurons, correlations, loadings = _learned_readouts(adata, known)
    correlations = torch.cat([correlations, torch.full((4, 1), 0.5)], dim=1)
    loadings = loadings._replace(loadings=torch.cat([loadings.loadings,
                                                     torch.full((1, 2), 0.7)]),
                                 assignment=torch.cat([loadings.assignment, torch.tensor([1])]))
    activity = readouts.module_activity(latent, neurons, 2)
    coords = np.arange(adata.n_obs * 2, dtype=np.float32).reshape(-1, 2)
    annotate_anndata(adata, latent, graph, neurons, genes=genes, module_activity=activity,
                     loadings=loadings, correlations=correlations, embedding=coords,
                     embedding_name="pca", settings={"seed": 3, "path": Path("a/b")})
    np.testing.assert_array_equal(adata.obsm["X_gsr"], latent.numpy())
    np.testing.assert_array_equal(adata.obsm["X_gsr_modules"], activity.numpy())
    np.testing.assert_array_equal(adata.obsm["X_gsr_pca"], coords)
    # rows follow adata.var_names: g1 <- genes[1], g2 <- genes[2], g4 <- genes[0]
    rows = {"g1": 1, "g2": 2, "g4": 0}
    for name, source in rows.items():
        row = list(adata.var_names).index(name)
        np.testing.assert_array_equal(adata.varm["gsr_loadings"][row],
                                      loadings.loadings[source].numpy())
        np.testing.assert_array_equal(adata.varm["gsr_correlation"][row],
                                      correlations[:, source].numpy())
        assert adata.var["gsr_module"].iloc[row] == int(loadings.assignment[source])
    unused = [list(adata.var_names).index(g) for g in ("g0", "g3", "g5")]
    assert np.isnan(adata.varm["gsr_loadings"][unused]).all()
    assert np.isnan(adata.varm["gsr_correlation"][unused]).all()
    assert adata.varm["gsr_correlation"].shape == (adata.n_vars, 4)
    assert (adata.var["gsr_module"].iloc[unused] == -1).all()
    gsr = adata.uns["gsr"]
    np.testing.assert_array_equal(gsr["edge_index"], graph.edge_index.numpy())
    np.testing.assert_array_equal(gsr["edge_weight"], graph.edge_weight.numpy())
    assert gsr["num_neurons"] == 4 and gsr["neuron_modules"].tolist() == [0, 0, 1, 1]
    assert gsr["genes"].tolist() == genes
    assert {k: v.tolist() for k, v in gsr["gene_modules"].items()} == {
        str(m["module"]): m["features"] for m in loadings.modules if m["features"]}
    assert json.loads(gsr["settings"]) == {"seed": 3, "path": "a/b"}


def test_annotate_anndata_writes_the_gene_modules_by_gene_name():
    adata = small_adata(cells=5)
    adata.var_names = [f"g{j}" for j in range(adata.n_vars)]
    genes = ["g3", "g0", "g1", "elsewhere"]
    # neuron module 0 carries gene module 1 (+), module 1 carries gene module 0 (-)
    r = torch.tensor([[0.1, 0.0, 0.9, 0.8], [0.0, 0.1, 0.8, 0.9],
                      [-0.9, -0.8, 0.0, 0.1], [-0.8, -0.9, 0.1, 0.0]])
    neurons = torch.tensor([0, 0, 1, 1])
    found = readouts.graph_feature_modules(r, neurons)
    assert found.assignment.tolist() == [0, 0, 1, 1]
    annotate_anndata(adata, torch.randn(5, 4), ring(4), neurons, genes=genes,
                     feature_modules=found)
    by_name = dict(zip(adata.var_names, adata.var["gsr_gene_module"].tolist()))
    assert by_name == {"g0": 0, "g1": 1, "g2": -1, "g3": 0, "g4": -1, "g5": -1}
    gsr = adata.uns["gsr"]
    assert {k: sorted(v.tolist()) for k, v in gsr["feature_modules"].items()} == {
        "0": ["g0", "g3"], "1": ["elsewhere", "g1"]}
    assert gsr["carried_module"].tolist() == [1, 0]
    assert gsr["carried_sign"].tolist() == [1, -1]
    with pytest.raises(TypeError, match="feature_modules must be the FeatureModules"):
        annotate_anndata(adata, torch.randn(5, 4), ring(4), neurons, genes=genes,
                         feature_modules=found.assignment)
    with pytest.raises(ValueError, match="genes must be given with feature_modules"):
        annotate_anndata(adata, torch.randn(5, 4), ring(4), neurons, feature_modules=found)
    with pytest.raises(ValueError, match=r"feature_modules.assignment must have 3 rows"):
        annotate_anndata(adata, torch.randn(5, 4), ring(4), neurons, genes=genes[:3],
                         feature_modules=found)


def test_annotate_anndata_minimal_writes_only_the_graph_and_latent():
    adata = small_adata(cells=5)
    annotate_anndata(adata, torch.ones(5, 6), ring(6), torch.zeros(6, dtype=torch.long))
    assert list(adata.obsm) == ["X_gsr"] and len(adata.varm) == 0
    assert "gsr_module" not in adata.var.columns
    assert sorted(adata.uns["gsr"]) == ["edge_index", "edge_weight", "neuron_modules",
                                         "num_neurons"]
    assert adata.uns["gsr"]["edge_weight"].tolist() == [1.0] * 12  # unweighted: ones


def test_annotate_anndata_errors_name_the_argument():
    adata = small_adata(cells=5)
    modules = torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match=r"latent must have 5 rows \(one per cell of adata, "
                                         r"5\), got shape \(4, 6\)"):
        annotate_anndata(adata, torch.ones(4, 6), ring(6), modules)
    with pytest.raises(ValueError, match=r"graph must have one node per latent neuron \(6, "
                                         r"the columns of latent\), got 5 nodes"):
        annotate_anndata(adata, torch.ones(5, 6), ring(5), modules)
    with pytest.raises(ValueError, match="neuron_modules must have 6 rows"):
        annotate_anndata(adata, torch.ones(5, 6), ring(6), modules[:5])
    with pytest.raises(TypeError, match="neuron_modules must hold integers"):
        annotate_anndata(adata, torch.ones(5, 6), ring(6), modules.float())
    with pytest.raises(ValueError, match="genes must be given with loadings or correlations"):
        annotate_anndata(adata, torch.ones(5, 6), ring(6), modules,
                         correlations=torch.zeros(6, 2))
    with pytest.raises(ValueError, match=r"correlations must have one column per gene of "
                                         r"genes \(3\), got shape \(6, 2\)"):
        annotate_anndata(adata, torch.ones(5, 6), ring(6), modules, genes=["a", "b", "c"],
                         correlations=torch.zeros(6, 2))
    with pytest.raises(TypeError, match="loadings must be the ModuleLoadings"):
        annotate_anndata(adata, torch.ones(5, 6), ring(6), modules, genes=["a"],
                         loadings=torch.zeros(1, 1))
    with pytest.raises(TypeError, match="settings must be a mapping"):
        annotate_anndata(adata, torch.ones(5, 6), ring(6), modules, settings="seed=0")
    assert "X_gsr" not in adata.obsm  # nothing written by a refused call


def test_write_h5ad_stringifies_uns_keys_and_leaves_adata_alone(tmp_path):
    adata = small_adata(cells=8)
    adata.uns["highlights"] = {3: "start", 7: {1: "end"}}
    adata.obsm["X_gsr"] = np.arange(16, dtype=np.float32).reshape(8, 2)
    path = write_h5ad(adata, tmp_path / "out" / "a.h5ad")
    assert path == tmp_path / "out" / "a.h5ad"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.h5ad"]  # no temporary left
    back = anndata.read_h5ad(path)
    np.testing.assert_array_equal(back.X, adata.X)
    np.testing.assert_array_equal(back.obsm["X_gsr"], adata.obsm["X_gsr"])
    assert back.obs["cell_type"].tolist() == adata.obs["cell_type"].tolist()
    assert back.uns["highlights"]["3"] == "start" and back.uns["highlights"]["7"]["1"] == "end"
    assert adata.uns["highlights"] == {3: "start", 7: {1: "end"}}  # the caller's keys unchanged
    with pytest.raises(TypeError, match="path must be a str or path, got 3"):
        write_h5ad(adata, 3)
