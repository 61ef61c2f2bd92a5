"""Spatial correlation loss and weight smoothness against float64 references written here
(numpy, networkx and explicit loops), gradients, sampling and refusals."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import Data

from gsr_pyg import graphs
from gsr_pyg.objectives import spatial_correlation_loss, unit_distances, weight_smoothness

SEEDS = list(range(10))


# --------------------------------------------------------------------------------------
# random graphs and references
# --------------------------------------------------------------------------------------

def random_graph(seed: int, *, with_pos: bool, weighted: bool) -> tuple[Data, nx.Graph]:
    """A random graph (possibly disconnected), as Data and as networkx."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 25))
    graph = nx.gnp_random_graph(n, float(rng.uniform(0.1, 0.4)), seed=seed)
    if graph.number_of_edges() == 0:
        graph.add_edge(0, 1)
    for i, j in graph.edges:
        graph[i][j]["weight"] = float(rng.uniform(0.1, 3.0)) if weighted else 1.0
    pairs = [(i, j) for i, j in graph.edges] + [(j, i) for i, j in graph.edges]
    edge_index = torch.tensor(pairs, dtype=torch.long).t()
    weight = torch.tensor([graph[i][j]["weight"] for i, j in pairs], dtype=torch.float64)
    pos = torch.tensor(rng.normal(size=(n, 2))) if with_pos else None
    data = graphs.from_edge_index(edge_index, weight if weighted else None, num_nodes=n,
                                  pos=pos)
    return data, graph


def reference_spatial_loss(x: np.ndarray, distance: np.ndarray) -> float:
    """(1 - corr_pairs(r_ij, 1 / (d_ij + 1))) / 2 over all pairs i < j, by loops."""
    n = x.shape[1]
    responses, closeness = [], []
    for i, j in itertools.combinations(range(n), 2):
        a, b = x[:, i], x[:, j]
        constant = np.all(a == a[0]) or np.all(b == b[0])
        responses.append(0.0 if constant else np.corrcoef(a, b)[0, 1])
        closeness.append(1.0 / (distance[i, j] + 1.0))
    return 0.5 * (1.0 - np.corrcoef(responses, closeness)[0, 1])


def hop_matrix(graph: nx.Graph) -> np.ndarray:
    n = graph.number_of_nodes()
    out = np.full((n, n), np.inf)
    for source, lengths in nx.all_pairs_shortest_path_length(graph):
        for target, length in lengths.items():
            out[source, target] = length
    return out


def euclidean_matrix(pos: np.ndarray) -> np.ndarray:
    n = pos.shape[0]
    return np.array([[np.sqrt(((pos[i] - pos[j]) ** 2).sum()) for j in range(n)]
                     for i in range(n)])


def reference_weight_smoothness(weight: np.ndarray, graph: nx.Graph, sym: bool) -> float:
    """sum over undirected edges of w_ij ||W_i / s_i - W_j / s_j||^2 (s = sqrt(degree)
    for sym, else 1), by loops."""
    degree = dict(graph.degree(weight="weight"))
    total = 0.0
    for i, j, w in graph.edges(data="weight"):
        si, sj = (np.sqrt(degree[i]), np.sqrt(degree[j])) if sym else (1.0, 1.0)
        total += w * ((weight[i] / si - weight[j] / sj) ** 2).sum()
    return total


# --------------------------------------------------------------------------------------
# spatial correlation: values
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_spatial_loss_with_positions_matches_reference(seed):
    data, _ = random_graph(seed, with_pos=True, weighted=seed % 2 == 1)
    x = torch.randn(int(7 + seed), data.num_nodes, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    expected = reference_spatial_loss(x.numpy(), euclidean_matrix(data.pos.numpy()))
    assert spatial_correlation_loss(x, data).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_spatial_loss_without_positions_uses_hop_distance(seed):
    # weighted and unweighted: edge weights are similarities, never lengths
    data, graph = random_graph(seed, with_pos=False, weighted=seed % 2 == 0)
    x = torch.randn(12, data.num_nodes, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(100 + seed))
    expected = reference_spatial_loss(x.numpy(), hop_matrix(graph))
    assert spatial_correlation_loss(x, data).item() == pytest.approx(expected, abs=1e-12)
    assert spatial_correlation_loss(x, data, distance="hops").item() == pytest.approx(
        expected, abs=1e-12)


def test_hops_forced_on_a_graph_with_positions():
    data = graphs.grid(3, 4)
    graph = nx.grid_2d_graph(3, 4)
    graph = nx.convert_node_labels_to_integers(graph, ordering="sorted")  # row-major
    x = torch.randn(9, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = reference_spatial_loss(x.numpy(), hop_matrix(graph))
    got = spatial_correlation_loss(x, data, distance="hops")
    assert got.item() == pytest.approx(expected, abs=1e-12)
    # on a 4-neighbour grid the hop count is the Manhattan distance, not the Euclidean one
    assert spatial_correlation_loss(x, data).item() != pytest.approx(expected, abs=1e-6)


def test_unit_distances_and_precomputed_matrix():
    data, graph = random_graph(4, with_pos=False, weighted=True)
    hops = unit_distances(data)
    np.testing.assert_array_equal(hops.numpy(), hop_matrix(graph))
    data_pos = graphs.grid(3, 3)
    np.testing.assert_allclose(unit_distances(data_pos).numpy(),
                               euclidean_matrix(data_pos.pos.double().numpy()), atol=1e-12)
    x = torch.randn(10, data.num_nodes, dtype=torch.float64)
    assert torch.equal(spatial_correlation_loss(x, data, distance=hops),
                       spatial_correlation_loss(x, data))
    # any symmetric distance is taken, e.g. weighted shortest paths with length 1 / w
    for i, j in graph.edges:
        graph[i][j]["length"] = 1.0 / graph[i][j]["weight"]
    lengths = np.full((data.num_nodes,) * 2, np.inf)
    for s, row in nx.all_pairs_dijkstra_path_length(graph, weight="length"):
        for t, value in row.items():
            lengths[s, t] = value
    got = spatial_correlation_loss(x, data, distance=torch.tensor(lengths))
    assert got.item() == pytest.approx(reference_spatial_loss(x.numpy(), lengths), abs=1e-12)


def test_spatial_loss_float32_close_to_float64():
    data = graphs.grid(4, 4)
    x = torch.randn(32, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = spatial_correlation_loss(x, data)
    single = spatial_correlation_loss(x.float(), data)
    assert single.dtype == torch.float32
    assert single.item() == pytest.approx(exact.item(), abs=1e-5)


def test_spatial_loss_orders_layouts_and_ignores_unit_scale():
    data = graphs.line(6)
    t = torch.linspace(0, 1, 20, dtype=torch.float64).unsqueeze(1)
    # phase grows along the line: near units respond alike
    smooth = torch.cat([torch.sin(3 * t + 0.4 * k) for k in range(6)], dim=1)
    rough = smooth[:, [0, 3, 1, 4, 2, 5]]
    smooth_loss = spatial_correlation_loss(smooth, data)
    assert smooth_loss.item() == pytest.approx(
        reference_spatial_loss(smooth.numpy(), euclidean_matrix(data.pos.double().numpy())),
        abs=1e-12)
    assert smooth_loss < 0.15 < 0.35 < spatial_correlation_loss(rough, data)
    # a correlation: unchanged by a positive scale and a shift per unit, not by a sign flip
    scale = torch.linspace(0.5, 3.0, 6, dtype=torch.float64)
    shift = torch.arange(6, dtype=torch.float64)
    assert spatial_correlation_loss(smooth * scale + shift, data).item() == pytest.approx(
        smooth_loss.item(), abs=1e-12)
    flipped = smooth.clone()
    flipped[:, 2] *= -1
    assert spatial_correlation_loss(flipped, data) > smooth_loss + 0.1


def test_constant_units_have_zero_correlation():
    data = graphs.grid(3, 3)
    x = torch.randn(15, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[:, 4] = 2.5  # a dead unit
    x[:, 7] = 0.0
    expected = reference_spatial_loss(x.numpy(), euclidean_matrix(data.pos.double().numpy()))
    x.requires_grad_(True)
    loss = spatial_correlation_loss(x, data)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # every unit constant: no correlation to align, loss 1/2 and a finite gradient
    flat = torch.ones(5, 9, dtype=torch.float64, requires_grad=True)
    loss = spatial_correlation_loss(flat, data)
    assert loss.item() == 0.5
    loss.backward()
    assert torch.isfinite(flat.grad).all()


def test_equal_closeness_gives_half():
    # complete graph without positions: every pair is 1 hop apart
    complete = graphs.from_edge_index(torch.combinations(torch.arange(5)).t(), num_nodes=5)
    x = torch.randn(8, 5, dtype=torch.float64)
    assert spatial_correlation_loss(x, complete).item() == 0.5


# --------------------------------------------------------------------------------------
# spatial correlation: sampled pairs
# --------------------------------------------------------------------------------------

def test_sampled_pairs_are_reproducible_with_a_seeded_generator():
    data = graphs.grid(6, 6)
    x = torch.randn(20, 36, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def sampled(seed):
        return spatial_correlation_loss(x, data, num_pairs=50,
                                        generator=torch.Generator().manual_seed(seed))

    assert torch.equal(sampled(7), sampled(7))
    assert sampled(7).item() != sampled(8).item()
    # no generator: a fresh sample each call
    torch.manual_seed(0)
    first = spatial_correlation_loss(x, data, num_pairs=50)
    second = spatial_correlation_loss(x, data, num_pairs=50)
    assert first.item() != second.item()


def test_enough_pairs_means_all_pairs_exactly():
    data = graphs.grid(4, 5)
    x = torch.randn(11, 20, dtype=torch.float64)
    exact = spatial_correlation_loss(x, data)
    total = 20 * 19 // 2
    for num_pairs in (total, total + 1, 10**6):
        got = spatial_correlation_loss(x, data, num_pairs=num_pairs,
                                       generator=torch.Generator().manual_seed(0))
        assert torch.equal(got, exact)


def test_sampled_estimate_approaches_all_pairs_value():
    data = graphs.grid(8, 8)
    x = torch.randn(40, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    # make near units correlated so the value is far from 1/2
    x = x + 0.8 * torch.roll(x, 1, dims=1) + 0.5 * torch.roll(x, 8, dims=1)
    exact = spatial_correlation_loss(x, data).item()
    generator = torch.Generator().manual_seed(0)
    estimates = [spatial_correlation_loss(x, data, num_pairs=1500, generator=generator).item()
                 for _ in range(20)]
    assert abs(exact - 0.5) > 0.05
    assert np.mean(estimates) == pytest.approx(exact, abs=0.01)
    assert len(set(estimates)) == 20


def test_sampled_pairs_hop_distance_matches_reference_on_the_same_pairs():
    # the sampled value is the all-pairs formula restricted to the drawn pairs: rebuild
    # them from the same seed (uniform i, then j among the other units)
    data, graph = random_graph(13, with_pos=False, weighted=False)
    n = data.num_nodes
    assert n * (n - 1) // 2 > 30  # really sampled
    x = torch.randn(14, n, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    got = spatial_correlation_loss(x, data, num_pairs=30,
                                   generator=torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    row = torch.randint(n, (30,), generator=generator)
    col = torch.randint(n - 1, (30,), generator=generator)
    col = col + (col >= row).long()
    hops, xs = hop_matrix(graph), x.numpy()
    responses = [np.corrcoef(xs[:, i], xs[:, j])[0, 1] for i, j in zip(row.tolist(),
                                                                        col.tolist())]
    closeness = [1.0 / (hops[i, j] + 1.0) for i, j in zip(row.tolist(), col.tolist())]
    expected = 0.5 * (1.0 - np.corrcoef(responses, closeness)[0, 1])
    assert got.item() == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------------------
# weight smoothness: values
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("normalization", [None, "sym"])
def test_weight_smoothness_matches_reference(seed, normalization):
    data, graph = random_graph(seed, with_pos=seed % 2 == 0, weighted=seed % 3 != 0)
    weight = torch.randn(data.num_nodes, 1 + seed, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(seed))
    expected = reference_weight_smoothness(weight.numpy(), graph, normalization == "sym")
    got = weight_smoothness(weight, data, normalization)
    assert got.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_weight_smoothness_is_trace_of_dense_form_and_flattens_conv_weights():
    data = graphs.grid(2, 4)
    adjacency = np.zeros((8, 8))
    for (i, j), w in zip(data.edge_index.t().tolist(), data.edge_weight.tolist()):
        adjacency[i, j] = w
    laplacian = np.diag(adjacency.sum(1)) - adjacency
    conv = nn.Conv2d(3, 8, 3).double()
    flat = conv.weight.detach().reshape(8, -1).numpy()
    expected = np.trace(flat.T @ laplacian @ flat)
    assert weight_smoothness(conv.weight, data).item() == pytest.approx(expected, rel=1e-12)


def test_weight_smoothness_zero_for_equal_rows_and_empty_graph():
    data = graphs.ring(6)
    equal = torch.ones(6, 4).mul(torch.arange(4.0))
    assert weight_smoothness(equal, data).item() == 0.0
    empty = Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=6)
    assert weight_smoothness(torch.randn(6, 3), empty).item() == 0.0


# --------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_pos", [True, False])
def test_spatial_loss_gradcheck(with_pos):
    # all pairs: the pair correlations come from one [N, N] product
    data, _ = random_graph(14, with_pos=with_pos, weighted=True)
    x = torch.randn(6, data.num_nodes, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: spatial_correlation_loss(v, data), (x,))


def test_spatial_loss_gradcheck_sampled_pairs():
    # few pairs (S * P < N * N): the pair correlations are gathered column by column
    data = graphs.grid(4, 4)
    x = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)

    def sampled(v):  # the same pairs at every evaluation
        return spatial_correlation_loss(v, data, num_pairs=20,
                                        generator=torch.Generator().manual_seed(1))

    assert torch.autograd.gradcheck(sampled, (x,))


@pytest.mark.parametrize("normalization", [None, "sym"])
def test_weight_smoothness_gradcheck(normalization):
    data, _ = random_graph(6, with_pos=False, weighted=True)
    weight = torch.randn(data.num_nodes, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: weight_smoothness(w, data, normalization),
                                    (weight,))


# --------------------------------------------------------------------------------------
# optimisation lowers each objective
# --------------------------------------------------------------------------------------

def test_few_steps_lower_spatial_loss_of_a_small_model():
    torch.manual_seed(0)
    data = graphs.grid(4, 4)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
    inputs = torch.randn(64, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    before = spatial_correlation_loss(model(inputs), data).item()
    for _ in range(30):
        optimizer.zero_grad()
        loss = spatial_correlation_loss(model(inputs), data)
        loss.backward()
        optimizer.step()
    after = spatial_correlation_loss(model(inputs), data).item()
    assert after < before - 0.15


def test_few_steps_lower_weight_smoothness():
    torch.manual_seed(0)
    data = graphs.grid(4, 4)
    layer = nn.Linear(8, 16)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05)
    before = weight_smoothness(layer.weight, data).item()
    for _ in range(10):
        optimizer.zero_grad()
        weight_smoothness(layer.weight, data).backward()
        optimizer.step()
    assert weight_smoothness(layer.weight, data).item() < 0.2 * before


def test_transformer_mlp_units_lower_each_objective():
    # the 32 hidden units of a transformer MLP on a 4x8 sheet; tokens are samples
    torch.manual_seed(0)
    block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    data = graphs.grid(4, 8)
    captured = {}
    block.linear1.register_forward_hook(lambda m, i, out: captured.__setitem__("h", out))
    tokens = torch.randn(4, 10, 16)
    optimizer = torch.optim.Adam(block.parameters(), lr=0.01)

    def objectives():
        block(tokens)
        hidden = captured["h"].reshape(-1, 32)  # [B * T, D]: neurons on the last axis
        return (spatial_correlation_loss(hidden, data, num_pairs=300,
                                         generator=torch.Generator().manual_seed(0)),
                weight_smoothness(block.linear1.weight, data))

    spatial_before, smooth_before = (v.item() for v in objectives())
    for _ in range(15):
        optimizer.zero_grad()
        spatial, smooth = objectives()
        (spatial + 0.1 * smooth).backward()
        optimizer.step()
    spatial_after, smooth_after = (v.item() for v in objectives())
    assert spatial_after < spatial_before - 0.1
    assert smooth_after < smooth_before


# --------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------

GRID = graphs.grid(3, 3)
NO_POS_NO_EDGES = Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=9)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(x=torch.randn(9)), ValueError, "x must be 2-D"),
    (dict(x=torch.randn(2, 3, 9)), ValueError, "x must be 2-D"),
    (dict(x=torch.randn(5, 8)), ValueError, r"one column per unit of the graph \(N = 9\)"),
    (dict(x=torch.randn(1, 9)), ValueError, "at least 2 samples"),
    (dict(x=torch.ones(4, 9, dtype=torch.long)), ValueError, "floating-point"),
    (dict(x=[[1.0] * 9] * 3), TypeError, "x must be a torch.Tensor"),
    (dict(data=NO_POS_NO_EDGES), ValueError, "no positions and no edges"),
    (dict(data=NO_POS_NO_EDGES, distance="euclidean"), ValueError, "has no pos"),
    (dict(data="grid"), TypeError, "data must be a torch_geometric.data.Data"),
    (dict(num_pairs=0), ValueError, "num_pairs must be >= 1, got 0"),
    (dict(num_pairs=2.5), TypeError, "num_pairs must be an int"),
    (dict(num_pairs=True), TypeError, "num_pairs must be an int"),
    (dict(generator=0), TypeError, "generator must be a torch.Generator"),
    (dict(distance="manhattan"), ValueError, "distance must be one of"),
    (dict(distance=3), TypeError, "distance must be one of"),
    (dict(distance=torch.zeros(8, 8)), ValueError, r"distance must have shape \[9, 9\]"),
    (dict(distance=-torch.ones(9, 9)), ValueError, "distance must be >= 0"),
    (dict(distance=torch.full((9, 9), float("nan"))), ValueError, "81 negative or NaN"),
    (dict(distance=torch.triu(torch.ones(9, 9))), ValueError, "distance must be symmetric"),
])
def test_spatial_loss_refusals(kwargs, error, message):
    arguments = dict(x=torch.randn(4, 9), data=GRID) | kwargs
    x, data = arguments.pop("x"), arguments.pop("data")
    with pytest.raises(error, match=message):
        spatial_correlation_loss(x, data, **arguments)


def test_spatial_loss_refuses_fewer_than_three_units():
    with pytest.raises(ValueError, match="at least 3 units"):
        spatial_correlation_loss(torch.randn(4, 2), graphs.line(2))


def test_spatial_loss_refuses_an_invalid_graph():
    one_way = Data(edge_index=torch.tensor([[0], [1]]), num_nodes=3)
    with pytest.raises(ValueError, match="no reverse edge"):
        spatial_correlation_loss(torch.randn(4, 3), one_way)


@pytest.mark.parametrize("weight, normalization, error, message", [
    (torch.randn(8, 4), None, ValueError, r"one row per unit of the graph \(9 rows\)"),
    (torch.randn(9), None, ValueError, "at least 2 dimensions"),
    (torch.ones(9, 2, dtype=torch.long), None, ValueError, "floating-point"),
    (torch.randn(9, 2), "rw", ValueError, "random-walk Laplacian"),
    (torch.randn(9, 2), "combinatorial", ValueError, "normalization must be one of"),
])
def test_weight_smoothness_refusals(weight, normalization, error, message):
    with pytest.raises(error, match=message):
        weight_smoothness(weight, GRID, normalization)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("with_pos", [True, False])
def test_cuda_matches_cpu(with_pos):
    data, _ = random_graph(13, with_pos=with_pos, weighted=True)
    x = torch.randn(16, data.num_nodes, dtype=torch.float64)
    weight = torch.randn(data.num_nodes, 5, dtype=torch.float64)
    for num_pairs in (None, 40):  # a CPU generator draws the pairs for CUDA responses
        cpu = spatial_correlation_loss(x, data, num_pairs=num_pairs,
                                       generator=torch.Generator().manual_seed(0))
        gpu = spatial_correlation_loss(x.cuda(), data.to("cuda"), num_pairs=num_pairs,
                                       generator=torch.Generator().manual_seed(0))
        assert gpu.device.type == "cuda"
        assert gpu.item() == pytest.approx(cpu.item(), abs=1e-10)
    gpu = weight_smoothness(weight.cuda(), data.to("cuda"))
    assert gpu.item() == pytest.approx(weight_smoothness(weight, data).item(), rel=1e-10)


def test_half_precision_and_autocast_computed_in_float32():
    data = graphs.grid(4, 4)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    reference = spatial_correlation_loss(x.double(), data).item()
    half = spatial_correlation_loss(x.bfloat16(), data)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(
        spatial_correlation_loss(x.bfloat16().float(), data).item(), abs=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = spatial_correlation_loss(x, data)
    assert inside.dtype == torch.float32
    assert inside.item() == pytest.approx(reference, abs=1e-5)
