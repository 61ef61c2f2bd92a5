from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

anndata = pytest.importorskip("anndata")
pd = pytest.importorskip("pandas")
sparse = pytest.importorskip("scipy.sparse")

from gsr_pyg.data.single_cell import (  # noqa: E402
    load_anndata,
    obs_labels,
    obs_values,
    prepare_matrix,
)


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
