from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.utils import coalesce

from gsr_pyg import graphs
from gsr_pyg.spectral import (
    LaplacianOperator,
    check_normalization,
    connected_components,
    eigenbasis,
    graph_tensors,
    laplacian,
    quadratic_form,
    work_dtype,
)

METHODS = ["dense", "edge", "sparse", "auto"]
SEEDS = list(range(24))


def random_graph(seed: int, num_extra_isolated: int | None = None) -> tuple[Data, nx.Graph]:
    """A random weighted graph (float32 weights) with some isolated nodes, as Data and nx."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 30))
    graph = nx.gnp_random_graph(n, float(rng.uniform(0.1, 0.5)), seed=seed)
    extra = int(rng.integers(1, 3)) if num_extra_isolated is None else num_extra_isolated
    graph.add_nodes_from(range(n, n + extra))
    for i, j in graph.edges:
        graph[i][j]["weight"] = float(np.float32(rng.uniform(0.1, 3.0)))
    return data_from_nx(graph), graph


def data_from_nx(graph: nx.Graph) -> Data:
    edges = [(i, j, w) for i, j, w in graph.edges(data="weight", default=1.0)]
    n = graph.number_of_nodes()
    if not edges:
        return Data(edge_index=torch.empty(2, 0, dtype=torch.long),
                    edge_weight=torch.empty(0), num_nodes=n)
    src = [i for i, j, _ in edges] + [j for i, j, _ in edges]
    dst = [j for i, j, _ in edges] + [i for i, j, _ in edges]
    weight = [w for *_, w in edges] * 2
    edge_index, edge_weight = coalesce(
        torch.tensor([src, dst]), torch.tensor(weight, dtype=torch.float32), n
    )
    return Data(edge_index=edge_index, edge_weight=edge_weight, num_nodes=n)


def nx_laplacian(graph: nx.Graph, normalization: str | None) -> np.ndarray:
    nodes = sorted(graph.nodes)
    if normalization == "sym":
        return nx.normalized_laplacian_matrix(graph, nodelist=nodes).toarray()
    return nx.laplacian_matrix(graph, nodelist=nodes).toarray().astype(np.float64)


def grid_graph_8x8() -> Data:
    """4-neighbour 8x8 grid, row-major numbering, built by hand."""
    src, dst = [], []
    for r in range(8):
        for c in range(8):
            i = 8 * r + c
            if c < 7:
                src += [i, i + 1]
                dst += [i + 1, i]
            if r < 7:
                src += [i, i + 8]
                dst += [i + 8, i]
    edge_index = coalesce(torch.tensor([src, dst]), num_nodes=64)
    return Data(edge_index=edge_index, edge_weight=torch.ones(edge_index.size(1)), num_nodes=64)


# ----------------------------------------------------------------------------------------
# the quadratic form against networkx in float64
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("normalization", [None, "sym"])
@pytest.mark.parametrize("seed", SEEDS)
def test_quadratic_form_equals_networkx(seed, normalization):
    data, graph = random_graph(seed)
    lap = torch.from_numpy(nx_laplacian(graph, normalization))
    n = data.num_nodes
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(7, n, dtype=torch.float64, generator=gen)
    conv = torch.randn(3, n, 4, 5, dtype=torch.float64, generator=gen)
    expected = torch.einsum("bi,ij,bj->b", x, lap, x)
    expected_conv = torch.einsum("bihw,ij,bjhw->bhw", conv, lap, conv)
    op = LaplacianOperator(data, normalization)
    for method in METHODS:
        got = op(x, method=method)
        assert got.shape == (7,) and got.dtype == torch.float64
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
        got_conv = op(conv, method=method)
        assert got_conv.shape == (3, 4, 5)
        torch.testing.assert_close(got_conv, expected_conv, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(
            quadratic_form(x, data, normalization, method=method), expected,
            rtol=1e-10, atol=1e-10,
        )


@pytest.mark.parametrize("method", METHODS)
def test_quadratic_form_float32_and_edge_sum(method):
    data, graph = random_graph(3)
    x = torch.randn(5, data.num_nodes)
    # The form is the sum over undirected edges of w_ij (a_i - a_j)^2.
    xn = x.double().numpy()
    expected = sum(w * (xn[:, i] - xn[:, j]) ** 2 for i, j, w in graph.edges(data="weight"))
    got = quadratic_form(x, data, method=method)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_half_precision_input_is_computed_in_float32():
    data, graph = random_graph(5)
    x = torch.randn(4, data.num_nodes).bfloat16()
    lap = torch.from_numpy(nx_laplacian(graph, None))
    expected = torch.einsum("bi,ij,bj->b", x.double(), lap, x.double())
    for method in METHODS:
        got = quadratic_form(x, data, method=method)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_autocast_keeps_the_form_in_float32():
    data, graph = random_graph(6)
    x = torch.randn(4, data.num_nodes)
    lap = torch.from_numpy(nx_laplacian(graph, None))
    expected = torch.einsum("bi,ij,bj->b", x.double(), lap, x.double())
    for method in METHODS:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = quadratic_form(x, data, method=method)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_unweighted_graph_counts_each_edge_once():
    # Path 0-1-2 without edge weights: a^T L a = (a0 - a1)^2 + (a1 - a2)^2.
    data = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
    x = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]])
    for method in METHODS:
        torch.testing.assert_close(quadratic_form(x, data, method=method),
                                   torch.tensor([5.0, 0.0]))


def test_laplacian_annihilates_constants():
    for seed in SEEDS[:8]:
        data, _ = random_graph(seed)
        ones = torch.ones(data.num_nodes, 1)
        torch.testing.assert_close(laplacian(data, dense=True) @ ones,
                                   torch.zeros(data.num_nodes, 1), atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.sparse.mm(laplacian(data), ones),
                                   torch.zeros(data.num_nodes, 1), atol=1e-5, rtol=0)
        for method in METHODS:
            value = quadratic_form(3.5 * torch.ones(2, data.num_nodes), data, method=method)
            torch.testing.assert_close(value, torch.zeros(2), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("normalization", [None, "sym"])
@pytest.mark.parametrize("seed", SEEDS[:4])
def test_gradient_of_batch_mean_is_two_l_a_over_b(seed, normalization):
    data, graph = random_graph(seed)
    lap = torch.from_numpy(nx_laplacian(graph, normalization))
    op = LaplacianOperator(data, normalization)
    batch = 6
    x0 = torch.randn(batch, data.num_nodes, dtype=torch.float64)
    conv0 = torch.randn(2, data.num_nodes, 3, 3, dtype=torch.float64)
    for method in METHODS:
        x = x0.clone().requires_grad_()
        op(x, method=method).mean().backward()
        torch.testing.assert_close(x.grad, 2.0 * x0 @ lap / batch, rtol=1e-10, atol=1e-12)
        conv = conv0.clone().requires_grad_()
        op(conv, method=method).mean().backward()
        # The mean runs over the 2 * 3 * 3 samples of the feature map.
        expected = 2.0 * torch.einsum("ij,bjhw->bihw", lap, conv0) / (2 * 3 * 3)
        torch.testing.assert_close(conv.grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("normalization", [None, "sym"])
@pytest.mark.parametrize("method", ["dense", "sparse", "edge"])
def test_gradcheck_float64(method, normalization):
    data, _ = random_graph(11)
    op = LaplacianOperator(data, normalization, method=method)
    x = torch.randn(3, data.num_nodes, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (x,))
    conv = torch.randn(2, data.num_nodes, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (conv,))


def test_custom_backward_refuses_double_backward():
    data, _ = random_graph(2)
    x = torch.randn(2, data.num_nodes, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(quadratic_form(x, data, method="dense").sum(), x,
                                  create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


# ----------------------------------------------------------------------------------------
# the operator: caching, device, method choice
# ----------------------------------------------------------------------------------------

def test_operator_caches_matrices_per_dtype():
    data, _ = random_graph(4)
    op = LaplacianOperator(data)
    op(torch.randn(2, data.num_nodes), method="sparse")
    first = op._cache[("sparse", torch.float32)]
    op(torch.randn(3, data.num_nodes), method="sparse")
    assert op._cache[("sparse", torch.float32)] is first
    op(torch.randn(3, data.num_nodes, dtype=torch.float64), method="dense")
    assert ("dense", torch.float64) in op._cache
    assert op.to("cpu") is op
    assert "num_nodes=" in repr(op) and "normalization=None" in repr(op)


def test_auto_method_choice_on_cpu():
    small = LaplacianOperator(grid_graph_8x8())
    assert small.resolve_method(64) == "dense"
    assert small.resolve_method(64, "cuda") == "dense"
    ring = Data(edge_index=coalesce(torch.stack([
        torch.arange(300).repeat(2),
        torch.cat([(torch.arange(300) + 1) % 300, (torch.arange(300) - 1) % 300]),
    ]), num_nodes=300), num_nodes=300)
    assert LaplacianOperator(ring).resolve_method(64) == "sparse"
    op = LaplacianOperator(ring, method="edge")
    assert op.method == "edge"
    x = torch.randn(4, 300, dtype=torch.float64)
    torch.testing.assert_close(op(x), op(x, method="dense"))


def test_operator_refuses_input_on_another_device():
    op = LaplacianOperator(grid_graph_8x8())
    with pytest.raises(ValueError, match=r"op\.to\('meta'\)"):
        op(torch.empty(2, 64, device="meta"))


def test_weights_that_differ_in_the_last_bits_are_refused_and_from_edge_index_merges_them():
    # one rule everywhere (check_graph): the two directions carry the same weight
    edge_index = torch.tensor([[0, 1], [1, 0]])
    weight = torch.tensor([1.0, 1.0 + 1e-7], dtype=torch.float64)
    data = Data(edge_index=edge_index, edge_weight=weight, num_nodes=2)
    x = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="edge weights must be symmetric"):
        quadratic_form(x, data)
    merged = graphs.from_edge_index(edge_index, weight)
    torch.testing.assert_close(quadratic_form(x, merged),
                               torch.tensor([1.0 + 0.5e-7], dtype=torch.float64),
                               rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------
# Laplacian matrices, components, eigenbasis
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("normalization", [None, "sym"])
@pytest.mark.parametrize("seed", SEEDS[:8])
def test_laplacian_equals_networkx(seed, normalization):
    data, graph = random_graph(seed)
    expected = nx_laplacian(graph, normalization)
    dense = laplacian(data, normalization, dense=True)
    assert dense.dtype == torch.float32 and dense.shape == expected.shape
    np.testing.assert_allclose(dense.double().numpy(), expected, atol=1e-6)
    sparse = laplacian(data, normalization)
    assert sparse.is_sparse and sparse.is_coalesced()
    np.testing.assert_allclose(sparse.to_dense().double().numpy(), expected, atol=1e-6)


def test_sym_laplacian_isolated_node_is_zero():
    # Node 2 is isolated: PyG's get_laplacian puts 1 on its diagonal, here it is 0.
    data = Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=3)
    dense = laplacian(data, "sym", dense=True)
    torch.testing.assert_close(dense, torch.tensor([[1.0, -1.0, 0.0],
                                                    [-1.0, 1.0, 0.0],
                                                    [0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("call", [
    lambda d: laplacian(d, "rw"),
    lambda d: LaplacianOperator(d, "rw"),
    lambda d: quadratic_form(torch.randn(2, 64), d, "rw"),
    lambda d: eigenbasis(d, "rw"),
])
def test_random_walk_laplacian_is_refused(call):
    with pytest.raises(ValueError, match="not symmetric.*indefinite"):
        call(grid_graph_8x8())


def test_check_normalization_is_the_one_rule_for_normalizations():
    assert check_normalization(None, "normalization") is None
    assert check_normalization("sym", "normalization") == "sym"
    with pytest.raises(ValueError, match=r"^normalization for layer 'fc1' is 'rw': the "
                                         r"random-walk Laplacian is not symmetric .* indefinite"):
        check_normalization("rw", "normalization for layer 'fc1'")
    with pytest.raises(ValueError, match=r"norm must be one of \(None, 'sym'\), got 'l2'"):
        check_normalization("l2", "norm")
    with pytest.raises(TypeError, match=r"norm must be None or 'sym', got 1"):
        check_normalization(1, "norm")


def test_graph_tensors_checks_once_and_gives_work_dtype_weights():
    data = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]),
                edge_weight=torch.tensor([0.5, 0.5, 2.0, 2.0]), num_nodes=3)
    num_nodes, edge_index, weight = graph_tensors(data)
    assert num_nodes == 3 and edge_index is data.edge_index
    assert weight.dtype == work_dtype("cpu") == torch.float64
    assert weight.tolist() == [0.5, 0.5, 2.0, 2.0]
    assert graph_tensors(Data(edge_index=data.edge_index, num_nodes=3))[2].tolist() == [1.0] * 4
    with pytest.raises(ValueError, match=r"data\.num_nodes must be >= 1, got 0"):
        graph_tensors(Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=0))
    with pytest.raises(ValueError, match=r"edge \(0, 1\) has no reverse edge"):
        graph_tensors(Data(edge_index=torch.tensor([[0], [1]]), num_nodes=2))


def test_unknown_normalization_and_method_are_refused():
    data = grid_graph_8x8()
    with pytest.raises(ValueError, match="normalization must be one of"):
        laplacian(data, "symmetric")
    with pytest.raises(ValueError, match="method must be one of"):
        quadratic_form(torch.randn(2, 64), data, method="fast")
    with pytest.raises(ValueError, match="method must be one of"):
        LaplacianOperator(data)(torch.randn(2, 64), method="fast")
    op = LaplacianOperator(data)
    with pytest.raises(ValueError, match="method must be one of"):
        op.method = "fast"
    op.method = "sparse"
    assert op.method == "sparse"


def test_activation_validation_messages():
    data = grid_graph_8x8()
    with pytest.raises(ValueError, match="x has 49 features in dimension 1 but the graph has 64"):
        quadratic_form(torch.randn(5, 49), data)
    with pytest.raises(ValueError, match="floating-point"):
        quadratic_form(torch.ones(5, 64, dtype=torch.long), data)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        LaplacianOperator(data)(torch.randn(64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        quadratic_form(np.ones((5, 64)), data)


def test_graph_validation_messages():
    directed = Data(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3)
    with pytest.raises(ValueError, match="both directions"):
        laplacian(directed)
    asymmetric = Data(edge_index=torch.tensor([[0, 1], [1, 0]]),
                      edge_weight=torch.tensor([1.0, 2.0]), num_nodes=2)
    with pytest.raises(ValueError, match="symmetric"):
        LaplacianOperator(asymmetric)
    negative = Data(edge_index=torch.tensor([[0, 1], [1, 0]]),
                    edge_weight=torch.tensor([-1.0, -1.0]), num_nodes=2)
    with pytest.raises(ValueError, match=r"edge_weight must be > 0, got -1\.0 on edge \(0, 1\)"):
        laplacian(negative)
    out_of_range = Data(edge_index=torch.tensor([[0, 5], [5, 0]]), num_nodes=3)
    with pytest.raises(ValueError, match=r"contains node 5, but the graph has 3 nodes"):
        connected_components(out_of_range)
    with pytest.raises(TypeError, match=r"data must be a torch_geometric\.data\.Data"):
        laplacian(torch.zeros(3, 3))


def test_self_loops_are_refused_everywhere_as_by_the_regularizer():
    data = Data(edge_index=torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1]]),
                edge_weight=torch.tensor([5.0, 2.0, 2.0, 7.0]), num_nodes=2)
    calls = [lambda: laplacian(data), lambda: laplacian(data, "sym", dense=True),
             lambda: LaplacianOperator(data), lambda: eigenbasis(data),
             lambda: quadratic_form(torch.ones(1, 2), data),
             lambda: connected_components(data)]
    for call in calls:
        with pytest.raises(ValueError, match="data has a self-loop at node 0"):
            call()
    # the documented way to drop them gives the Laplacian of the loop-free graph
    clean = graphs.from_edge_index(data.edge_index, data.edge_weight[[0, 1, 1, 3]])
    torch.testing.assert_close(laplacian(clean, dense=True),
                               torch.tensor([[2.0, -2.0], [-2.0, 2.0]]))


@pytest.mark.parametrize("seed", range(12))
def test_connected_components_equal_networkx(seed):
    rng = np.random.default_rng(seed)
    # Several random blocks, shuffled node ids, plus isolated nodes.
    sizes = rng.integers(1, 8, size=int(rng.integers(2, 6)))
    graph = nx.disjoint_union_all(
        [nx.gnp_random_graph(int(s), 0.6, seed=int(seed * 10 + k)) for k, s in enumerate(sizes)]
    )
    mapping = dict(zip(graph.nodes, rng.permutation(graph.number_of_nodes()).tolist()))
    graph = nx.relabel_nodes(graph, mapping)
    data = data_from_nx(graph)
    num, labels = connected_components(data)
    components = list(nx.connected_components(graph))
    assert num == len(components)
    assert labels.dtype == torch.long and labels.shape == (data.num_nodes,)
    assert int(labels[0]) == 0
    # Same partition as networkx.
    for component in components:
        assert len(set(labels[sorted(component)].tolist())) == 1
    # Numbered in order of first appearance.
    first_seen = list(dict.fromkeys(labels.tolist()))
    assert first_seen == list(range(num))


def test_eigenbasis_of_grid():
    data = grid_graph_8x8()
    eigenvalues, eigenvectors = eigenbasis(data)
    assert eigenvalues.shape == (64,) and eigenvectors.shape == (64, 64)
    assert abs(float(eigenvalues[-1]) - 7.6955) < 1e-4
    assert abs(float(eigenvalues[0])) < 1e-5
    # Eigenvalues of the path P8 are 2 - 2 cos(pi k / 8); the grid's are their pair sums.
    path = 2 - 2 * np.cos(np.pi * np.arange(8) / 8)
    np.testing.assert_allclose(eigenvalues.numpy(), np.sort(np.add.outer(path, path).ravel()),
                               atol=1e-5)
    lap = laplacian(data, dense=True)
    torch.testing.assert_close(lap @ eigenvectors, eigenvectors * eigenvalues, atol=1e-4, rtol=0)
    values_k, vectors_k = eigenbasis(data, "sym", k=3)
    assert values_k.shape == (3,) and vectors_k.shape == (64, 3)
    assert bool((values_k[1:] >= values_k[:-1]).all())
    sym_all = eigenbasis(data, "sym")[0]
    assert float(sym_all.max()) <= 2.0 + 1e-5
    with pytest.raises(ValueError, match="k must be <= 64"):
        eigenbasis(data, k=65)


# ----------------------------------------------------------------------------------------
# fast paths: blocked sparse product, auto rule, validation of unsorted input, devices
# ----------------------------------------------------------------------------------------

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def knn_like_graph(n: int, k: int, seed: int = 0) -> Data:
    """Each node joined to k random others, symmetrised, random positive weights."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.arange(n).repeat_interleave(k)
    dst = (src + torch.randint(1, n, (n * k,), generator=gen)) % n
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
    weight = torch.rand(n * k, generator=gen, dtype=torch.float64) + 0.1
    edge_index, weight = coalesce(edge_index, torch.cat([weight, weight]), n, reduce="max")
    return Data(edge_index=edge_index, edge_weight=weight.float(), num_nodes=n)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("normalization", [None, "sym"])
@pytest.mark.parametrize("transposes", ["copies", "identity"])
def test_sparse_product_in_sample_blocks_matches_dense(monkeypatch, device, normalization,
                                                       transposes):
    # 70 samples in blocks of 32 (copies: a tiny block budget) or of 16 (the identity, on the
    # CPU, as for a wide layer): the last block is short either way.
    import gsr_pyg.spectral as spectral

    monkeypatch.setattr(spectral, "_SPARSE_BLOCK_BYTES", 1)
    if transposes == "identity":
        monkeypatch.setattr(spectral, "_IDENTITY_MIN_NODES", 0)
    data = knn_like_graph(50, 4)
    graph = nx.Graph()
    graph.add_nodes_from(range(50))
    for (i, j), w in zip(data.edge_index.t().tolist(), data.edge_weight.double().tolist()):
        graph.add_edge(i, j, weight=w)
    lap = torch.from_numpy(nx_laplacian(graph, normalization))
    x0 = torch.randn(70, 50, dtype=torch.float64)
    expected_value = torch.einsum("bi,ij,bj->b", x0, lap, x0)
    expected_grad = 2.0 * (x0 @ lap) * torch.arange(1.0, 71.0, dtype=torch.float64)[:, None]
    op = LaplacianOperator(data.to(device), normalization)
    for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-4)]:
        x = x0.to(device=device, dtype=dtype).clone().requires_grad_()
        value = op(x, method="sparse")
        # a different weight per sample checks that each block gets its own scale
        (value * torch.arange(1.0, 71.0, device=device, dtype=dtype)).sum().backward()
        torch.testing.assert_close(value.double().cpu(), expected_value, rtol=tol, atol=tol)
        torch.testing.assert_close(x.grad.double().cpu(), expected_grad, rtol=tol, atol=tol)
        assert x.grad.is_contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_blocks_transposed_by_identity_products_are_exact(dtype):
    # The CPU's blocks are transposed by products with the identity (and a diagonal in the
    # backward pass): bit for bit what copies give, zeros, tiny and large numbers included.
    import gsr_pyg.spectral as spectral

    data = knn_like_graph(60, 4, seed=3)
    matrix = LaplacianOperator(data)._matrix("sparse", dtype)
    rows = torch.randn(16, 60, dtype=dtype)
    rows[0, :5] = torch.tensor([0.0, -0.0, 1e-40, -1e18, 1e18], dtype=dtype)
    results = {}
    for by_products in (True, False):
        product = torch.empty(60, 16, dtype=dtype)
        values = torch.empty(16, dtype=dtype)
        identity = torch.eye(16, dtype=dtype) if by_products else None
        spectral._block_form(rows, matrix, product, values, identity)
        results[by_products] = product, values
    assert torch.equal(results[True][0], results[False][0])
    torch.testing.assert_close(results[True][1], results[False][1])
    scale = torch.randn(16, dtype=dtype)
    by_diagonal = torch.mm(torch.diag(scale), results[True][0].t())
    assert torch.equal(by_diagonal, results[True][0].t() * scale[:, None])


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_non_finite_activation_stays_in_its_own_sample(monkeypatch, bad):
    # 0 * inf is NaN: through the identity an Inf would reach every sample of its block, so
    # such a batch is recomputed with copies; the other samples keep their exact values.
    import gsr_pyg.spectral as spectral

    monkeypatch.setattr(spectral, "_IDENTITY_MIN_NODES", 0)  # the wide layers' path
    data = knn_like_graph(50, 4)
    op = LaplacianOperator(data)
    x0 = torch.randn(20, 50)
    expected = op(x0, method="dense")
    x = x0.clone()
    x[3, 7] = bad
    x.requires_grad_()
    value = op(x, method="sparse")
    value.sum().backward()
    finite = torch.arange(20) != 3
    assert not torch.isfinite(value[3])
    torch.testing.assert_close(value[finite], expected[finite], rtol=1e-5, atol=1e-4)
    assert torch.isfinite(x.grad[finite]).all()
    torch.testing.assert_close(x.grad[finite], 2 * (x0 @ laplacian(data, dense=True))[finite],
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_every_method_agrees_on_every_layout(device):
    data = knn_like_graph(40, 3, seed=1)
    data.edge_weight = data.edge_weight.double()
    op = LaplacianOperator(data.to(device))
    dense_lap = laplacian(data, dense=True).double()
    for shape in [(9, 40), (3, 40, 2, 5)]:
        x0 = torch.randn(*shape, dtype=torch.float64)
        columns = x0.transpose(0, 1).reshape(40, -1)
        expected = (columns * (dense_lap @ columns)).sum(0).reshape((shape[0],) + shape[2:])
        for method in METHODS:
            got = op(x0.to(device), method=method)
            assert got.shape == expected.shape
            torch.testing.assert_close(got.cpu(), expected, rtol=1e-10, atol=1e-10)


def test_auto_rule_switches_at_sixteen_entries_per_dense_row():
    grid16 = LaplacianOperator(Data(edge_index=grid_graph_8x8().edge_index, num_nodes=64))
    assert grid16.num_entries == 64 + 224
    assert grid16.resolve_method(500) == "dense"       # 64^2 = 4096 <= 16 * 288
    sparse_ring = LaplacianOperator(knn_like_graph(300, 1))
    assert sparse_ring.resolve_method(64) == "sparse"
    dense_enough = LaplacianOperator(knn_like_graph(128, 8))
    assert 128 * 128 <= 16 * dense_enough.num_entries
    assert dense_enough.resolve_method(256) == "dense"
    wide = LaplacianOperator(knn_like_graph(512, 8))
    assert wide.resolve_method(256) == "sparse"
    assert wide.resolve_method(256, "cuda") == "dense"
    assert LaplacianOperator(knn_like_graph(2048, 2)).resolve_method(8, "cuda") == "sparse"


def test_unsorted_edges_are_read_and_repeated_entries_refused():
    edge_index = torch.tensor([[1, 2, 0, 1], [0, 1, 1, 2]])  # valid, out of order
    data = Data(edge_index=edge_index, edge_weight=torch.tensor([3.0, 4.0, 3.0, 4.0]),
                num_nodes=3)
    torch.testing.assert_close(laplacian(data, dense=True), torch.tensor([[3.0, -3.0, 0.0],
                                                                         [-3.0, 7.0, -4.0],
                                                                         [0.0, -4.0, 4.0]]))
    x = torch.tensor([[1.0, 0.0, 2.0]])
    for method in METHODS:
        torch.testing.assert_close(quadratic_form(x, data, method=method),
                                   torch.tensor([3.0 * 1 + 4.0 * 4]))
    repeated = Data(edge_index=torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]]), num_nodes=2)
    with pytest.raises(ValueError, match=r"entry \(0, 1\) more than once; coalesce it"):
        laplacian(repeated)


@pytest.mark.parametrize("length", [3, 40, 5000])
def test_connected_components_of_long_chains_equal_networkx(length):
    # a chain needs about log2(length) propagation rounds: the long one goes to scipy
    rng = np.random.default_rng(length)
    graph = nx.disjoint_union_all([nx.path_graph(length), nx.cycle_graph(7),
                                   nx.path_graph(length // 2 + 1)])
    mapping = dict(zip(graph.nodes, rng.permutation(graph.number_of_nodes()).tolist()))
    graph = nx.relabel_nodes(graph, mapping)
    data = data_from_nx(graph)
    for check in (True, False):
        num, labels = connected_components(data, check=check)
        assert num == 3
        for component in nx.connected_components(graph):
            assert len(set(labels[sorted(component)].tolist())) == 1
        assert list(dict.fromkeys(labels.tolist())) == [0, 1, 2]


def test_connected_components_reads_structure_only():
    # weights are not looked at; the graph is checked like everywhere else
    tiny = Data(edge_index=torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]),
                edge_weight=torch.tensor([1e-30, 1e-30, 5.0, 5.0]), num_nodes=5)
    num, labels = connected_components(tiny)
    assert num == 3 and labels.tolist() == [0, 0, 1, 1, 2]
    one_way = Data(edge_index=torch.tensor([[0, 3], [1, 2]]), num_nodes=5)
    with pytest.raises(ValueError, match=r"edge \(0, 1\) has no reverse edge"):
        connected_components(one_way)
    with pytest.raises(ValueError, match=r"edge_index must have dtype torch\.int64"):
        connected_components(Data(edge_index=torch.tensor([[0.0, 1.0], [1.0, 0.0]]),
                                  num_nodes=2))
