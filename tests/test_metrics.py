from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torch_geometric.data import Data
from torch_geometric.utils import coalesce

from gsr_pyg.metrics import (
    adjusted_rand_index,
    average_linkage,
    cluster_by_silhouette,
    dirichlet_energy,
    edge_jaccard,
    feature_correlations,
    feature_loadings,
    feature_modules,
    gearys_c,
    modularity,
    morans_i,
    neuron_modules,
    normalized_mutual_info,
    num_components,
    silhouette_score,
    smoothness_ratio,
)
from gsr_pyg.spectral import quadratic_form


def data_from_nx(graph: nx.Graph) -> Data:
    n = graph.number_of_nodes()
    edges = list(graph.edges(data="weight", default=1.0))
    src = [i for i, _, _ in edges] + [j for _, j, _ in edges]
    dst = [j for _, j, _ in edges] + [i for i, _, _ in edges]
    weight = [w for *_, w in edges] * 2
    edge_index, edge_weight = coalesce(
        torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
        torch.tensor(weight, dtype=torch.float32), n,
    )
    return Data(edge_index=edge_index, edge_weight=edge_weight, num_nodes=n)


def random_graph(seed: int) -> tuple[Data, nx.Graph]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    graph = nx.gnp_random_graph(n, float(rng.uniform(0.1, 0.4)), seed=seed)
    for i, j in graph.edges:
        graph[i][j]["weight"] = float(np.float32(rng.uniform(0.1, 3.0)))
    return data_from_nx(graph), graph


def ring(n: int) -> Data:
    return data_from_nx(nx.cycle_graph(n))


def grid_8x8() -> Data:
    # 4-neighbour grid with row-major numbering.
    graph = nx.convert_node_labels_to_integers(nx.grid_2d_graph(8, 8), ordering="sorted")
    return data_from_nx(graph)


def two_cliques(size: int = 6) -> Data:
    graph = nx.disjoint_union(nx.complete_graph(size), nx.complete_graph(size))
    graph.add_edge(size - 1, size)
    return data_from_nx(graph)


def numpy_weights(graph: nx.Graph) -> np.ndarray:
    return nx.to_numpy_array(graph, nodelist=sorted(graph.nodes), weight="weight")


def numpy_morans_i(a: np.ndarray, w: np.ndarray) -> float:
    z = a - a.mean()
    return len(a) / w.sum() * (z @ w @ z) / (z @ z)


def numpy_gearys_c(a: np.ndarray, w: np.ndarray) -> float:
    z = a - a.mean()
    diff = (a[:, None] - a[None, :]) ** 2
    return (len(a) - 1) / (2 * w.sum()) * (w * diff).sum() / (z @ z)


# ----------------------------------------------------------------------------------------
# Moran's I, Geary's C, Dirichlet energy, smoothness ratio
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(10))
def test_morans_i_and_gearys_c_equal_numpy(seed):
    data, graph = random_graph(seed)
    w = numpy_weights(graph)
    x = torch.randn(4, data.num_nodes, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    expected_i = [numpy_morans_i(row, w) for row in x.numpy()]
    expected_c = [numpy_gearys_c(row, w) for row in x.numpy()]
    np.testing.assert_allclose(morans_i(x, data).numpy(), expected_i, rtol=1e-10)
    np.testing.assert_allclose(gearys_c(x, data).numpy(), expected_c, rtol=1e-10)
    single_i, single_c = morans_i(x[0], data), gearys_c(x[0], data)
    assert single_i.dim() == 0 and single_c.dim() == 0
    assert math.isclose(float(single_i), expected_i[0], rel_tol=1e-10)
    assert math.isclose(float(single_c), expected_c[0], rel_tol=1e-10)
    # float32 input gives float32 output within rounding.
    got32 = morans_i(x.float(), data)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), expected_i, rtol=1e-4, atol=1e-5)


def test_dirichlet_energy_is_the_quadratic_form():
    data, graph = random_graph(7)
    lap = nx.laplacian_matrix(graph, nodelist=sorted(graph.nodes)).toarray()
    x = torch.randn(3, data.num_nodes, dtype=torch.float64)
    expected = np.einsum("bi,ij,bj->b", x.numpy(), lap, x.numpy())
    np.testing.assert_allclose(dirichlet_energy(x, data).numpy(), expected, rtol=1e-10)
    single = dirichlet_energy(x[1], data)
    assert single.dim() == 0 and math.isclose(float(single), expected[1], rel_tol=1e-10)
    torch.testing.assert_close(dirichlet_energy(x, data, "sym"), quadratic_form(x, data, "sym"))
    with pytest.raises(ValueError, match="x has 3 features in dimension 0 but the graph has"):
        dirichlet_energy(torch.ones(3), data)


@pytest.mark.parametrize("data", [ring(64), grid_8x8()], ids=["ring", "grid"])
def test_smooth_signal_versus_noise(data):
    n = data.num_nodes
    if n == 64 and data.edge_index.size(1) == 128:
        angle = 2 * math.pi * torch.arange(n) / n
        smooth = torch.stack([torch.sin(angle + phase) for phase in (0.0, 1.0, 2.0)])
    else:
        r, c = torch.arange(n) // 8, torch.arange(n) % 8
        smooth = torch.stack([r + c, r - c, 0.5 * r]).float()
    noise = torch.randn(20, n, generator=torch.Generator().manual_seed(1))
    assert float(morans_i(smooth, data).min()) > 0.85
    assert float(gearys_c(smooth, data).max()) < 0.15
    assert smoothness_ratio(smooth, data) < 0.1
    # No structure: Moran's I around -1/(n-1), Geary's C and the ratio around 1.
    assert abs(float(morans_i(noise, data).mean()) + 1 / (n - 1)) < 0.06
    assert abs(float(gearys_c(noise, data).mean()) - 1.0) < 0.1
    assert 0.85 < smoothness_ratio(noise, data) < 1.15


def test_conv_maps_are_read_like_the_penalty_reads_them():
    # [B, C, H, W]: the C channels are the nodes, every (b, h, w) is a sample
    data, _ = random_graph(3)
    n = data.num_nodes
    maps = torch.randn(3, n, 4, 5, dtype=torch.float64)
    flat = maps.permute(0, 2, 3, 1).reshape(-1, n)  # [B * H * W, C], b then h then w
    for metric in (morans_i, gearys_c, dirichlet_energy):
        got = metric(maps, data)
        assert got.shape == (3, 4, 5)
        torch.testing.assert_close(got, metric(flat, data).reshape(3, 4, 5), rtol=1e-12,
                                   atol=1e-12)
    torch.testing.assert_close(morans_i(maps, data)[1, 2, 3], morans_i(maps[1, :, 2, 3], data))
    assert smoothness_ratio(maps, data, num_permutations=20) == pytest.approx(
        smoothness_ratio(flat, data, num_permutations=20), rel=1e-12)
    inputs = torch.randn(3 * 4 * 5, 6, dtype=torch.float64)
    torch.testing.assert_close(feature_correlations(inputs, maps),
                               feature_correlations(inputs, flat))
    with pytest.raises(ValueError, match=rf"x has {n + 1} features in dimension 1 but the "
                                         rf"graph has {n} nodes"):
        morans_i(torch.randn(2, n + 1, 3), data)


@pytest.mark.parametrize("normalization", [None, "sym"])
def test_smoothness_ratio_equals_explicit_permutations(normalization):
    data, graph = random_graph(4)
    nodes = sorted(graph.nodes)
    lap = (nx.normalized_laplacian_matrix(graph, nodelist=nodes).toarray() if normalization
           else nx.laplacian_matrix(graph, nodelist=nodes).toarray())
    x = torch.randn(5, data.num_nodes, dtype=torch.float64) + 3.0
    num_permutations, seed = 17, 3
    # The documented permutations: a seeded CPU generator, argsort of uniform draws.
    perms = torch.rand(num_permutations, data.num_nodes,
                       generator=torch.Generator().manual_seed(seed)).argsort(dim=1)
    xn = x.numpy()

    def total_energy(values):
        return np.einsum("bi,ij,bj->", values, lap, values)

    expected = total_energy(xn) / np.mean([total_energy(xn[:, p]) for p in perms.numpy()])
    got = smoothness_ratio(x, data, num_permutations=num_permutations, seed=seed,
                           normalization=normalization)
    assert math.isclose(got, expected, rel_tol=1e-9)
    assert smoothness_ratio(x[0], data, 5, seed=1) == smoothness_ratio(x[0], data, 5, seed=1)
    assert math.isnan(smoothness_ratio(torch.ones(2, data.num_nodes), data))


# ----------------------------------------------------------------------------------------
# graph structure
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_modularity_equals_networkx(seed):
    data, graph = random_graph(seed)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=data.num_nodes)
    communities = [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    expected = nx.community.modularity(graph, communities, weight="weight")
    assert math.isclose(modularity(data, torch.from_numpy(labels)), expected, abs_tol=1e-12)
    expected_res = nx.community.modularity(graph, communities, weight="weight", resolution=0.5)
    assert math.isclose(modularity(data, labels.tolist(), resolution=0.5), expected_res,
                        abs_tol=1e-12)


def test_num_components_and_component_modules():
    graph = nx.disjoint_union(nx.path_graph(4), nx.cycle_graph(5))
    data = data_from_nx(graph)
    assert num_components(data) == 2
    labels = neuron_modules(data, "components")
    assert labels.tolist() == [0] * 4 + [1] * 5
    assert num_components(grid_8x8()) == 1


def test_spectral_modules_separate_two_cliques():
    data = two_cliques(6)
    labels = neuron_modules(data, "spectral", k=2)
    assert labels.dtype == torch.long
    assert labels.tolist() == [0] * 6 + [1] * 6
    assert neuron_modules(data, "louvain").tolist() == [0] * 6 + [1] * 6
    # Three cliques joined in a chain, node ids shuffled.
    graph = nx.disjoint_union_all([nx.complete_graph(5) for _ in range(3)])
    graph.add_edges_from([(4, 5), (9, 10)])
    order = np.random.default_rng(0).permutation(15)
    graph = nx.relabel_nodes(graph, dict(enumerate(order.tolist())))
    labels = neuron_modules(data_from_nx(graph), "spectral", k=3, seed=2)
    truth = np.empty(15, dtype=int)
    truth[order] = np.repeat([0, 1, 2], 5)
    assert adjusted_rand_index(labels, truth) == 1.0
    with pytest.raises(ValueError, match="k .* is required"):
        neuron_modules(data, "spectral")
    with pytest.raises(ValueError, match="method must be one of"):
        neuron_modules(data, "kmeans")


# ----------------------------------------------------------------------------------------
# agreement between partitions
# ----------------------------------------------------------------------------------------

HAND_MADE = [
    ([0, 0, 1, 1], [0, 0, 1, 1]),
    ([0, 0, 1, 1], [1, 1, 0, 0]),
    ([0, 0, 1, 2], [0, 0, 1, 1]),
    ([0, 0, 0, 0], [0, 1, 2, 3]),
    ([0, 0, 1, 1], [0, 1, 0, 1]),
    ([0, 0, 0, 0], [0, 0, 0, 0]),
    ([0, 1, 2, 3], [0, 1, 2, 3]),
    ([5, 5, -1, -1, 7], [2, 2, 2, 9, 9]),
    ([3], [8]),
]


@pytest.mark.parametrize("a, b", HAND_MADE)
def test_ari_and_nmi_equal_sklearn_hand_made(a, b):
    assert math.isclose(adjusted_rand_index(a, b), adjusted_rand_score(a, b), abs_tol=1e-12)
    assert math.isclose(normalized_mutual_info(torch.tensor(a), torch.tensor(b)),
                        normalized_mutual_info_score(a, b), abs_tol=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_ari_and_nmi_equal_sklearn_random(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    a = rng.integers(0, int(rng.integers(1, 8)), size=n)
    # b: a noisy copy of a, so values span from chance to agreement.
    b = np.where(rng.random(n) < rng.random(), a, rng.integers(0, 6, size=n)) * 3 + 1
    assert math.isclose(adjusted_rand_index(a, b), adjusted_rand_score(a, b), abs_tol=1e-12)
    assert math.isclose(normalized_mutual_info(a, b), normalized_mutual_info_score(a, b),
                        abs_tol=1e-12)


def test_partition_validation():
    with pytest.raises(ValueError, match="same items"):
        adjusted_rand_index([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="integer labels"):
        normalized_mutual_info(torch.tensor([0.5, 1.0]), [0, 1])
    with pytest.raises(ValueError, match="must have 12 entries"):
        modularity(two_cliques(6), [0, 1])


# ----------------------------------------------------------------------------------------
# neurons <-> input features
# ----------------------------------------------------------------------------------------

def planted_modules(seed: int = 0):
    """3 modules x 3 features; neurons 2 per module, each a noisy mix of its features."""
    gen = torch.Generator().manual_seed(seed)
    samples = 400
    inputs = torch.randn(samples, 9, generator=gen)
    mix = torch.zeros(9, 6)
    for module in range(3):
        block = torch.rand(3, 2, generator=gen) + 0.5
        mix[3 * module:3 * module + 3, 2 * module:2 * module + 2] = block
    activations = inputs @ mix + 0.3 * torch.randn(samples, 6, generator=gen)
    return inputs, activations


def test_feature_correlations_equal_numpy():
    inputs, activations = planted_modules(1)
    inputs[:, 4] = 0.1  # a constant feature
    got = feature_correlations(inputs.double(), activations.double())
    assert got.shape == (6, 9)
    with np.errstate(invalid="ignore"):  # numpy gives nan for the constant feature
        full = np.corrcoef(np.concatenate([activations.double().numpy(),
                                           inputs.double().numpy()], axis=1).T)
    expected = full[:6, 6:]
    expected[:, 4] = 0.0
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    assert bool((feature_correlations(inputs, activations)[:, 4] == 0).all())


def test_feature_modules_recover_planted_blocks():
    inputs, activations = planted_modules(0)
    modules = feature_modules(inputs, activations, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert modules.dtype == torch.long
    assert modules.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Labels are returned as given, neurons in any order.
    modules = feature_modules(inputs, activations[:, [5, 0, 3, 1, 4, 2]],
                              [9, 4, 7, 4, 9, 7])
    assert modules.tolist() == [4, 4, 4, 7, 7, 7, 9, 9, 9]
    with pytest.raises(ValueError, match="same samples"):
        feature_modules(inputs[:10], activations, [0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="must have 6 entries"):
        feature_modules(inputs, activations, [0, 1])


def test_feature_loadings_equal_numpy_over_the_labels_in_use():
    generator = torch.Generator().manual_seed(4)
    r = torch.rand(12, 5, generator=generator, dtype=torch.float64) * 2 - 1
    labels = torch.tensor([3, 0, 3, 7, 0, 0, 3, 7, 7, 0, 3, 0])  # 1, 2, 4, 5, 6 unused
    got = feature_loadings(r, labels)
    assert got.shape == (5, 3) and got.dtype == torch.float64
    m, values = labels.numpy(), r.numpy()
    expected = np.stack([np.abs(values[m == k]).mean(axis=0) for k in (0, 3, 7)], axis=1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    signed = np.stack([values[m == k].mean(axis=0) for k in (0, 3, 7)], axis=1)
    np.testing.assert_allclose(feature_loadings(r, labels.tolist(), absolute=False).numpy(),
                               signed, rtol=1e-12)
    # Labels 0..C-1: column c is module c, the plain group mean.
    dense = torch.unique(labels, return_inverse=True)[1]
    assert torch.equal(feature_loadings(r, dense), got)
    assert not bool(torch.isnan(got).any())


def test_feature_loadings_validate():
    with pytest.raises(ValueError, match=r"neuron_labels must have 3 entries \(one per row of "
                                         r"correlations\), got 2"):
        feature_loadings(torch.zeros(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="neuron_labels must be a 1-D tensor of integer labels"):
        feature_loadings(torch.zeros(2, 2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="correlations must be a floating-point tensor"):
        feature_loadings(torch.zeros(2, 2, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="correlations must have at least one row"):
        feature_loadings(torch.zeros(0, 2), torch.tensor([], dtype=torch.long))
    with pytest.raises(TypeError, match="absolute must be True or False"):
        feature_loadings(torch.zeros(2, 2), torch.tensor([0, 1]), absolute=1)


def test_feature_modules_with_an_unused_label_number():
    # Labels [0, 0, 2, 2, 5, 5]: modules 0, 2 and 5; no feature may join the empty 1, 3, 4.
    inputs, activations = planted_modules(0)
    modules = feature_modules(inputs, activations, torch.tensor([0, 0, 2, 2, 5, 5]))
    assert modules.tolist() == [0, 0, 0, 2, 2, 2, 5, 5, 5]
    # The argmax of the shared loadings, mapped back to the labels.
    loadings = feature_loadings(feature_correlations(inputs, activations),
                                torch.tensor([0, 0, 2, 2, 5, 5]))
    assert torch.equal(torch.tensor([0, 2, 5])[loadings.argmax(dim=1)], modules)


# ----------------------------------------------------------------------------- clustering
def _distances(points: torch.Tensor) -> torch.Tensor:
    distances = torch.cdist(points, points)
    distances.fill_diagonal_(0.0)
    return distances


def test_silhouette_score_matches_sklearn():
    from sklearn.metrics import silhouette_score as sklearn_silhouette

    generator = torch.Generator().manual_seed(0)
    for trial in range(5):
        points = torch.randn(40, 3, generator=generator, dtype=torch.float64)
        labels = torch.randint(0, 2 + trial, (40,), generator=generator)
        labels[:2 + trial] = torch.arange(2 + trial)  # every cluster used
        labels[-1] = 2 + trial  # one cluster of a single item: silhouette 0 there
        distances = _distances(points)
        expected = sklearn_silhouette(distances.numpy(), labels.numpy(), metric="precomputed")
        assert silhouette_score(distances, labels) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="labels must form 2 to n - 1"):
        silhouette_score(distances, torch.zeros(40, dtype=torch.long))
    with pytest.raises(ValueError, match="distances must be square"):
        silhouette_score(torch.zeros(3, 4), [0, 1, 1])


def test_average_linkage_matches_scipy():
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    points = torch.randn(30, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tree = linkage(pdist(points.numpy()), method="average")
    for k in (2, 3, 5):
        expected = fcluster(tree, t=k, criterion="maxclust")
        got = average_linkage(_distances(points), k)
        assert adjusted_rand_index(got, expected) == 1.0
        assert got[0] == 0 and int(got.max()) + 1 == k


def test_cluster_by_silhouette_finds_the_number_of_blobs():
    generator = torch.Generator().manual_seed(2)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]],
                           dtype=torch.float64)
    truth = torch.arange(4).repeat_interleave(8)
    points = centres[truth] + 0.5 * torch.randn(32, 2, generator=generator, dtype=torch.float64)
    for method in ("average", "kmeans"):
        found = cluster_by_silhouette(_distances(points), method, points=points)
        assert found.num_clusters == 4 and adjusted_rand_index(found.labels, truth) == 1.0
        assert max(found.silhouettes, key=found.silhouettes.get) == 4
        assert sorted(found.silhouettes) == list(range(2, 32))
    # one blob: no cut reaches 0.25, so one cluster
    blob = torch.randn(20, 2, generator=generator, dtype=torch.float64)
    single = cluster_by_silhouette(_distances(blob), max_clusters=5, min_silhouette=0.6)
    assert single.num_clusters == 1 and single.labels.tolist() == [0] * 20
    assert sorted(single.silhouettes) == [2, 3, 4, 5]


def test_cluster_by_silhouette_rejects_bad_arguments():
    distances = _distances(torch.randn(5, 2))
    with pytest.raises(ValueError, match="method='kmeans' needs points"):
        cluster_by_silhouette(distances, "kmeans")
    with pytest.raises(ValueError, match="points must have one row per item"):
        cluster_by_silhouette(distances, "kmeans", points=torch.randn(4, 2))
    with pytest.raises(ValueError, match="method"):
        cluster_by_silhouette(distances, "ward")
    with pytest.raises(ValueError, match="distances must be finite"):
        cluster_by_silhouette(torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="min_silhouette must be a number in"):
        cluster_by_silhouette(distances, min_silhouette=2.0)


def test_edge_jaccard_counts_undirected_edges():
    ring = Data(edge_index=torch.tensor([[0, 1, 1, 2, 2, 0], [1, 0, 2, 1, 0, 2]]), num_nodes=3)
    path = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
    empty = Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=3)
    assert edge_jaccard(ring, path) == pytest.approx(2 / 3)
    assert edge_jaccard(ring, ring) == 1.0 and edge_jaccard(empty, empty) == 1.0
    assert edge_jaccard(path, empty) == 0.0
    with pytest.raises(ValueError, match="same nodes"):
        edge_jaccard(ring, Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=4))
