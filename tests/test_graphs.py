from __future__ import annotations

import doctest
import math
import re

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.utils import grid as pyg_grid
from torch_geometric.utils import remove_self_loops

import gsr_pyg.graphs as graphs
from gsr_pyg.graphs import (
    balanced_tree,
    check_graph,
    copies,
    disjoint_union,
    from_edge_index,
    from_networkx,
    grid,
    line,
    num_undirected_edges,
    ring,
    star,
    to_networkx,
    torus,
)
from gsr_pyg.learn import from_positions

# ---------------------------------------------------------------------------------- helpers


def edge_set(data: Data) -> set[tuple[int, int]]:
    """Undirected edges as (low, high) pairs."""
    row, col = data.edge_index.tolist()
    return {(min(i, j), max(i, j)) for i, j in zip(row, col, strict=True)}


def is_coalesced(edge_index: torch.Tensor, num_nodes: int | None = None) -> bool:
    """Sorted row-major with no duplicates."""
    n = int(edge_index.max()) + 1 if num_nodes is None else num_nodes
    key = edge_index[0] * n + edge_index[1]
    return bool((key[1:] > key[:-1]).all())


def nx_edge_set(G: nx.Graph, label=lambda node: node) -> set[tuple[int, int]]:
    pairs = ((label(u), label(v)) for u, v in G.edges())
    return {(min(i, j), max(i, j)) for i, j in pairs}


def row_major(width: int):
    return lambda node: node[0] * width + node[1]


def laplacian_numpy(data: Data) -> np.ndarray:
    n = data.num_nodes
    row, col = data.edge_index.numpy()
    adjacency = np.zeros((n, n))
    adjacency[row, col] = data.edge_weight.double().numpy()
    return np.diag(adjacency.sum(1)) - adjacency


def assert_same_data(a: Data, b: Data) -> None:
    assert a.num_nodes == b.num_nodes
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.equal(a.edge_weight, b.edge_weight)
    assert a.edge_weight.dtype == b.edge_weight.dtype
    assert (a.pos is None) == (b.pos is None)
    if a.pos is not None:
        assert torch.equal(a.pos, b.pos)


def valid_graph(with_pos: bool = False) -> Data:
    """A weighted triangle 0-1-2 plus an isolated node 3."""
    pos = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 1.0], [2.0, 2.0]]) if with_pos else None
    return from_edge_index(
        torch.tensor([[0, 1, 2], [1, 2, 0]]), torch.tensor([1.0, 2.0, 3.0]), num_nodes=4, pos=pos
    )


CONSTRUCTORS = {
    "grid": lambda: grid(8, 8),
    "grid-3x5": lambda: grid(3, 5),
    "grid-8nb": lambda: grid(4, 6, neighbours=8),
    "grid-1x1": lambda: grid(1, 1),
    "torus": lambda: torus(4, 8),
    "torus-2x5": lambda: torus(2, 5),
    "ring": lambda: ring(7),
    "line": lambda: line(5),
    "line-1": lambda: line(1),
    "star": lambda: star(6),
    "balanced_tree": lambda: balanced_tree(3, 2),
    "copies": lambda: copies(ring(5), 3),
    "disjoint_union": lambda: disjoint_union([star(4), line(3), grid(2, 2)]),
    "from_edge_index": lambda: valid_graph(with_pos=True),
}


# ------------------------------------------------------------------------------ constructors


def test_grid_8x8_matches_reference_counts_spectrum_and_edges():
    g = grid(8, 8)
    assert g.num_nodes == 64
    assert g.edge_index.shape == (2, 224)
    assert num_undirected_edges(g) == 112

    eigenvalues = np.linalg.eigvalsh(laplacian_numpy(g))
    assert eigenvalues[-1] == pytest.approx(7.6955, abs=1e-4)
    reference = nx.grid_2d_graph(8, 8)
    reference_eigenvalues = np.linalg.eigvalsh(nx.laplacian_matrix(reference).toarray())
    np.testing.assert_allclose(eigenvalues, reference_eigenvalues, atol=1e-10)

    assert edge_set(g) == nx_edge_set(reference, row_major(8))


@pytest.mark.parametrize("height,width", [(3, 5), (5, 3), (1, 4), (2, 2)])
def test_grid_is_row_major_networkx_grid_with_image_layout(height, width):
    g = grid(height, width)
    assert edge_set(g) == nx_edge_set(nx.grid_2d_graph(height, width), row_major(width))
    node = torch.arange(height * width)
    expected_pos = torch.stack([node % width, height - 1 - node // width], dim=1).float()
    assert torch.equal(g.pos, expected_pos)


def test_grid_8_neighbours_has_diagonals_and_no_self_loops():
    g = grid(8, 8, neighbours=8)
    assert num_undirected_edges(g) == 210
    # PyG's grid is the same 8-neighbour lattice but with self-loops.
    pyg_edge_index, _ = pyg_grid(8, 8)
    reference, _ = remove_self_loops(pyg_edge_index)
    assert edge_set(g) == edge_set(Data(edge_index=reference))
    assert edge_set(grid(8, 8)) < edge_set(g)


def test_torus_4x8_is_4_regular_periodic_grid():
    g = torus(4, 8)
    degree = torch.bincount(g.edge_index[0], minlength=g.num_nodes)
    assert torch.all(degree == 4)
    assert num_undirected_edges(g) == 64
    reference = nx.grid_2d_graph(4, 8, periodic=True)
    assert edge_set(g) == nx_edge_set(reference, row_major(8))


@pytest.mark.parametrize("height,width", [(2, 5), (5, 2), (3, 3), (1, 6), (2, 2)])
def test_torus_wraps_only_dimensions_of_size_at_least_3(height, width):
    reference = nx.grid_2d_graph(height, width, periodic=True)
    assert edge_set(torus(height, width)) == nx_edge_set(reference, row_major(width))


@pytest.mark.parametrize(
    "ours,reference",
    [
        (lambda: ring(3), lambda: nx.cycle_graph(3)),
        (lambda: ring(10), lambda: nx.cycle_graph(10)),
        (lambda: line(1), lambda: nx.path_graph(1)),
        (lambda: line(9), lambda: nx.path_graph(9)),
        (lambda: star(1), lambda: nx.star_graph(0)),
        (lambda: star(8), lambda: nx.star_graph(7)),
        (lambda: balanced_tree(2, 3), lambda: nx.balanced_tree(2, 3)),
        (lambda: balanced_tree(3, 2), lambda: nx.balanced_tree(3, 2)),
        (lambda: balanced_tree(1, 4), lambda: nx.balanced_tree(1, 4)),
        (lambda: balanced_tree(4, 0), lambda: nx.balanced_tree(4, 0)),
    ],
)
def test_generators_equal_networkx(ours, reference):
    g, G = ours(), reference()
    assert g.num_nodes == G.number_of_nodes()
    assert edge_set(g) == nx_edge_set(G)


def test_layouts_of_ring_star_line_and_tree():
    r = ring(6)
    np.testing.assert_allclose(r.pos.norm(dim=1).numpy(), 1.0, atol=1e-6)
    assert torch.allclose(r.pos[0], torch.tensor([1.0, 0.0]))
    s = star(5)
    assert torch.equal(s.pos[0], torch.zeros(2))
    np.testing.assert_allclose(s.pos[1:].norm(dim=1).numpy(), 1.0, atol=1e-6)
    assert torch.equal(line(4).pos, torch.tensor([[0.0, 0], [1, 0], [2, 0], [3, 0]]))

    t = balanced_tree(3, 2)  # every parent sits one level above its children, centred
    child = torch.arange(1, t.num_nodes)
    parent = (child - 1) // 3
    assert torch.equal(t.pos[parent, 1], t.pos[child, 1] + 1)
    mean_child_x = torch.zeros(t.num_nodes).index_add_(0, parent, t.pos[child, 0]) / 3
    assert torch.allclose(mean_child_x[:4], t.pos[:4, 0])
    assert t.pos[0, 0] == 0.0 and t.pos[:, 0].unique().numel() == 9


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_constructors_follow_the_data_model(name):
    g = check_graph(CONSTRUCTORS[name]())
    assert g.edge_index.dtype == torch.long
    assert g.edge_weight.dtype == torch.float32
    assert is_coalesced(g.edge_index, num_nodes=g.num_nodes)
    assert g.pos.shape == (g.num_nodes, 2) and g.pos.dtype == torch.float32


@pytest.mark.parametrize("call", [
    lambda: grid(0, 3), lambda: grid(3, 3, neighbours=6), lambda: torus(4, -1),
    lambda: ring(2), lambda: line(0), lambda: star(0), lambda: balanced_tree(0, 2),
    lambda: balanced_tree(2, -1), lambda: copies(line(3), 0),
])
def test_constructors_reject_bad_sizes(call):
    with pytest.raises(ValueError, match="must be"):
        call()


def test_constructors_reject_non_int_sizes():
    with pytest.raises(TypeError, match="height must be an int"):
        grid(8.0, 8)


# ------------------------------------------------------------------------------- combining


def test_copies_of_a_line_are_separate_components_laid_out_like_a_grid():
    g = copies(line(2), 3)
    assert g.num_nodes == 6
    assert nx.number_connected_components(to_networkx(g)) == 3
    assert edge_set(g) == {(0, 1), (2, 3), (4, 5)}
    assert torch.equal(copies(line(8), 4).pos, grid(4, 8).pos)


def test_copies_are_copy_major_and_keep_weights():
    base = valid_graph()
    g = copies(base, 3)
    reference = nx.disjoint_union_all([to_networkx(base)] * 3)
    assert edge_set(g) == nx_edge_set(reference)
    assert torch.equal(g.edge_weight, base.edge_weight.repeat(3))
    assert torch.equal(g.edge_index[:, : base.edge_index.size(1)], base.edge_index)
    assert torch.equal(g.edge_index[:, -base.edge_index.size(1):], base.edge_index + 8)
    assert g.pos is None and is_coalesced(g.edge_index)


def test_copies_of_a_ring_stack_rows_without_overlap():
    g = copies(ring(6), 3)  # ring pos spans y in [-1, 1]: each copy 3 units lower
    offsets = g.pos.view(3, 6, 2) - ring(6).pos
    assert torch.allclose(offsets[..., 0], torch.zeros(3, 6))
    heights = offsets[:, :, 1]
    assert torch.allclose(heights, heights[:, :1].expand(3, 6))
    step = float(ring(6).pos[:, 1].max() - ring(6).pos[:, 1].min()) + 1
    assert heights[:, 0].tolist() == pytest.approx([2 * step, step, 0.0])


def test_disjoint_union_numbers_in_order_and_separates_layouts():
    parts = [star(4), ring(5), grid(2, 3)]
    g = disjoint_union(parts)
    assert g.num_nodes == 15
    reference = nx.disjoint_union_all([to_networkx(p) for p in parts])
    assert edge_set(g) == nx_edge_set(reference)
    starts = [0, 4, 9, 15]
    spans = [(float(g.pos[a:b, 0].min()), float(g.pos[a:b, 0].max()))
             for a, b in zip(starts, starts[1:], strict=False)]
    for (_, right), (left, _) in zip(spans, spans[1:], strict=False):
        assert left == pytest.approx(right + 1)
    for part, a, b in zip(parts, starts, starts[1:], strict=False):  # shapes are kept
        shifted = g.pos[a:b] - part.pos
        assert torch.allclose(shifted, shifted[:1].expand_as(shifted))


def test_disjoint_union_keeps_weights_and_drops_pos_when_one_lacks_it():
    g = disjoint_union([valid_graph(), line(2)])
    assert g.pos is None
    assert g.edge_weight.tolist() == valid_graph().edge_weight.tolist() + [1.0, 1.0]
    assert edge_set(g) == {(0, 1), (1, 2), (0, 2), (4, 5)}


def test_disjoint_union_rejects_empty_and_invalid_members():
    with pytest.raises(ValueError, match="at least one"):
        disjoint_union([])
    bad = Data(edge_index=torch.tensor([[0], [1]]), num_nodes=2)
    with pytest.raises(ValueError, match=r"^graphs\[1\]: edge \(0, 1\) has no reverse"):
        disjoint_union([line(2), bad])
    loop = Data(edge_index=torch.tensor([[1], [1]]), num_nodes=2)
    with pytest.raises(ValueError, match=r"^graphs\[1\] has a self-loop at node 1"):
        disjoint_union([line(2), loop])
    with pytest.raises(TypeError, match="sequence of Data"):
        disjoint_union(line(2))


# ------------------------------------------------------------------------------- networkx


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_networkx_round_trip_for_every_constructor(name):
    g = CONSTRUCTORS[name]()
    G = to_networkx(g)
    assert list(G.nodes) == list(range(g.num_nodes))
    assert G.number_of_edges() == num_undirected_edges(g)
    assert_same_data(from_networkx(G), g)


def test_networkx_round_trip_of_a_random_weighted_graph():
    rng = np.random.default_rng(0)
    G = nx.gnp_random_graph(40, 0.15, seed=1)
    for u, v in G.edges():
        G.edges[u, v]["weight"] = float(np.float32(rng.uniform(0.1, 5.0)))
    for node in G.nodes:
        G.nodes[node]["pos"] = tuple(float(x) for x in np.float32(rng.normal(size=2)))
    g = from_networkx(G)
    check_graph(g, num_nodes=40)

    dense = np.zeros((40, 40))
    row, col = g.edge_index.numpy()
    dense[row, col] = g.edge_weight.numpy()
    np.testing.assert_array_equal(dense, nx.to_numpy_array(G, nodelist=range(40)))

    back = to_networkx(g)
    assert set(back.edges) == set(G.edges)
    for u, v, weight in G.edges(data="weight"):
        assert back.edges[u, v]["weight"] == weight
    for node, (x, y) in G.nodes(data="pos"):  # a tuple comes back as the floats x and y
        assert (back.nodes[node]["x"], back.nodes[node]["y"]) == (x, y)
    assert_same_data(from_networkx(back), g)


def test_to_networkx_keeps_isolated_nodes_and_python_types():
    G = to_networkx(valid_graph())
    assert list(G.nodes) == [0, 1, 2, 3]
    assert list(nx.isolates(G)) == [3]
    assert G.edges[2, 0]["weight"] == 3.0 and type(G.edges[2, 0]["weight"]) is float
    G = to_networkx(line(3))
    assert G.nodes[2] == {"x": 2.0, "y": 0.0} and type(G.nodes[2]["x"]) is float


def test_from_networkx_follows_nodelist_and_keeps_name():
    G = nx.Graph(name="fc1")
    G.add_edge("a", "b", weight=2.0)
    G.add_edge("b", "c")  # no weight attribute: 1
    g = from_networkx(G, nodelist=["c", "a", "b"])
    assert g.num_nodes == 3 and g.name == "fc1"
    assert g.edge_index.tolist() == [[0, 1, 2, 2], [2, 2, 0, 1]]
    assert g.edge_weight.tolist() == [1.0, 2.0, 1.0, 2.0]
    assert g.pos is None
    assert from_networkx(G, weight=None).edge_weight.tolist() == [1.0] * 4
    assert to_networkx(g).graph["name"] == "fc1"


def test_from_networkx_takes_pos_only_when_every_node_has_it():
    G = nx.path_graph(3)
    G.nodes[0]["pos"] = (0.0, 1.0)
    assert from_networkx(G).pos is None
    G.nodes[1]["pos"] = (1.0, 1.0)
    G.nodes[2]["pos"] = (2.0, 1.5)
    assert from_networkx(G).pos.tolist() == [[0.0, 1.0], [1.0, 1.0], [2.0, 1.5]]
    G.nodes[2]["pos"] = (2.0, 1.5, 0.0)
    with pytest.raises(ValueError, match="2 numbers per node"):
        from_networkx(G)


def test_from_networkx_rejects_what_it_cannot_convert_faithfully():
    with pytest.raises(ValueError, match="must be undirected, got a DiGraph"):
        from_networkx(nx.DiGraph([(0, 1)]))
    with pytest.raises(ValueError, match="simple graph, got a MultiGraph"):
        from_networkx(nx.MultiGraph([(0, 1), (0, 1)]))
    with pytest.raises(ValueError, match="self-loops, got one at node 2"):
        from_networkx(nx.Graph([(0, 1), (2, 2)]))
    with pytest.raises(ValueError, match=r"edge \(0, 1\) has weight=-1.0"):
        from_networkx(nx.Graph([(0, 1, {"weight": -1.0})]))
    with pytest.raises(ValueError, match="'d', which is not a node"):
        from_networkx(nx.path_graph(3), nodelist=[0, 1, "d"])
    with pytest.raises(ValueError, match="2 is missing"):
        from_networkx(nx.path_graph(3), nodelist=[0, 1])
    with pytest.raises(ValueError, match="1 twice"):
        from_networkx(nx.path_graph(3), nodelist=[0, 1, 1])
    with pytest.raises(TypeError, match="networkx.Graph"):
        from_networkx([(0, 1)])


def test_networkx_writes_graphml_of_to_networkx_output(tmp_path):
    # pos used to be a tuple, which networkx's GraphML writer refuses
    path = tmp_path / "grid.graphml"
    nx.write_graphml(to_networkx(grid(8, 8)), path)
    G = nx.read_graphml(path)
    assert (G.number_of_nodes(), G.number_of_edges()) == (64, 112)
    assert (G.nodes["9"]["x"], G.nodes["9"]["y"]) == (1.0, 6.0)  # row 1, column 1
    back = from_networkx(G, nodelist=[str(i) for i in range(64)])
    assert_same_data(back, grid(8, 8))


def test_float64_weights_and_positions_survive_networkx():
    g = from_edge_index(torch.tensor([[0, 1, 2], [1, 2, 0]]),
                        torch.tensor([0.1, 1 / 3, 2.0 + 1e-12], dtype=torch.float64),
                        pos=torch.tensor([[0.1, 0.2], [1 / 3, 0.0], [1.0, 1e-300]],
                                         dtype=torch.float64))
    G = to_networkx(g)
    assert G.graph == {"edge_weight_dtype": "float64", "pos_dtype": "float64"}
    back = from_networkx(G)
    assert back.edge_weight.dtype == torch.float64 and back.pos.dtype == torch.float64
    assert_same_data(back, g)
    assert "edge_weight_dtype" not in to_networkx(grid(2, 2)).graph  # float32: nothing added


def test_from_networkx_refuses_an_unknown_dtype_name_and_bad_xy():
    G = nx.path_graph(2)
    G.graph["edge_weight_dtype"] = "int8"
    with pytest.raises(ValueError, match=r"graph attribute 'edge_weight_dtype' must be one of"):
        from_networkx(G)
    G = nx.path_graph(2)
    nx.set_node_attributes(G, {0: 0.0, 1: 1.0}, "x")
    nx.set_node_attributes(G, {0: "top", 1: "bottom"}, "y")
    with pytest.raises(ValueError, match="node attributes 'x' and 'y' must be numbers"):
        from_networkx(G)


def _learned_like_graph() -> Data:
    """An irregular weighted graph with float64 weights, isolated nodes and a name."""
    rng = np.random.default_rng(5)
    pairs = {tuple(sorted(p)) for p in rng.integers(0, 30, (80, 2)).tolist() if p[0] != p[1]}
    edge_index = torch.tensor(sorted(pairs)).t()
    weight = torch.from_numpy(rng.uniform(0.01, 3.0, edge_index.size(1)))
    g = from_edge_index(edge_index, weight, num_nodes=32)
    g.name = "latent"
    return g


@pytest.mark.parametrize("make", [lambda: grid(8, 8), lambda: copies(ring(5), 3),
                                  lambda: line(1), _learned_like_graph,
                                  lambda: from_edge_index(torch.empty(2, 0, dtype=torch.long),
                                                          num_nodes=4)])
def test_graphml_file_reads_back_the_same_data(tmp_path, make):
    g = make()
    path = graphs.write_graphml(g, tmp_path / "sub" / "g.graphml")
    assert path == tmp_path / "sub" / "g.graphml"
    assert [p.name for p in path.parent.iterdir()] == ["g.graphml"]  # no temporary file left
    back = graphs.read_graphml(path)
    assert_same_data(back, g)
    assert getattr(back, "name", None) == getattr(g, "name", None)
    G = nx.read_graphml(path)  # an ordinary GraphML file
    assert G.number_of_edges() == num_undirected_edges(g)


def test_write_graphml_adds_node_and_graph_attributes(tmp_path):
    g = ring(4)
    path = graphs.write_graphml(g, tmp_path / "r.graphml",
                               {"module": torch.tensor([0, 0, 1, 1]),
                                "gene": ["a", "b", "c", "d"],
                                "score": np.array([0.5, 1.5, 2.5, 3.5])},
                               graph_attributes={"step": 40, "layer": "fc1"})
    G = nx.read_graphml(path)
    assert [G.nodes[str(i)]["module"] for i in range(4)] == [0, 0, 1, 1]
    assert [G.nodes[str(i)]["gene"] for i in range(4)] == ["a", "b", "c", "d"]
    assert G.nodes["3"]["score"] == 3.5
    assert (G.graph["step"], G.graph["layer"]) == (40, "fc1")
    assert_same_data(graphs.read_graphml(path), g)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(node_attributes={"module": [0, 1]}), ValueError,
     r"node_attributes\['module'\] must have one value per node \(4\), got 2"),
    (dict(node_attributes={"x": [0, 1, 2, 3]}), ValueError, r"must not use the key 'x'"),
    (dict(node_attributes={"module": [0, 1, None, 3]}), TypeError,
     r"node_attributes\['module'\]\[2\] must be a str, int, float or bool"),
    (dict(node_attributes={"module": 3}), TypeError, r"must be a sequence with one value"),
    (dict(node_attributes=[0, 1, 2, 3]), TypeError, r"node_attributes must be a mapping"),
    (dict(graph_attributes={"name": "x"}), ValueError, r"must not use the key 'name'"),
    (dict(graph_attributes={"shape": (2, 2)}), TypeError, r"graph_attributes\['shape'\]"),
])
def test_write_graphml_refuses_what_graphml_cannot_hold(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        graphs.write_graphml(ring(4), tmp_path / "r.graphml", **kwargs)
    assert not list(tmp_path.iterdir())


def test_read_graphml_numbers_foreign_node_ids_in_file_order(tmp_path):
    G = nx.Graph()
    G.add_edge("b", "a", weight=2.0)
    G.add_node("c")
    nx.write_graphml(G, tmp_path / "f.graphml")
    g = graphs.read_graphml(tmp_path / "f.graphml")
    assert g.num_nodes == 3 and g.edge_index.tolist() == [[0, 1], [1, 0]]
    assert g.edge_weight.tolist() == [2.0, 2.0] and g.pos is None


# ------------------------------------------------------------------------------ check_graph


def test_check_graph_accepts_valid_graphs_and_returns_them():
    g = valid_graph()
    assert check_graph(g) is g
    assert check_graph(g, num_nodes=4) is g
    empty = Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=5)
    assert check_graph(empty) is empty
    unweighted = Data(edge_index=grid(3, 3).edge_index, num_nodes=9)
    assert check_graph(unweighted) is unweighted


def test_check_graph_rejects_non_data():
    with pytest.raises(TypeError, match="must be a torch_geometric.data.Data, got tensor"):
        check_graph(torch.zeros(2, 3))


def test_check_graph_rejects_missing_edge_index():
    with pytest.raises(ValueError, match="no edge_index"):
        check_graph(Data(num_nodes=3))


@pytest.mark.parametrize("edge_index", [torch.zeros(3, 4, dtype=torch.long),
                                        torch.zeros(4, dtype=torch.long)])
def test_check_graph_rejects_edge_index_of_wrong_shape(edge_index):
    with pytest.raises(ValueError, match=r"edge_index must have shape \[2, E\]"):
        check_graph(Data(edge_index=edge_index, num_nodes=3))


def test_check_graph_rejects_edge_index_not_int64():
    g = grid(2, 2)
    with pytest.raises(ValueError, match="dtype torch.int64, got .*torch.int32"):
        check_graph(Data(edge_index=g.edge_index.int(), num_nodes=4))


@pytest.mark.parametrize("bad,node", [(5, 5), (-1, -1)])
def test_check_graph_rejects_indices_out_of_range(bad, node):
    edge_index = torch.tensor([[0, 1, 1, bad], [1, 0, bad, 1]])
    with pytest.raises(ValueError, match=rf"contains node {node}, but the graph has 5 nodes"):
        check_graph(Data(edge_index=edge_index, num_nodes=5))


def test_check_graph_names_the_self_loop():
    edge_index = torch.tensor([[0, 1, 2], [1, 0, 2]])
    with pytest.raises(ValueError, match="self-loop at node 2"):
        check_graph(Data(edge_index=edge_index, num_nodes=3))


def test_check_graph_names_a_missing_reverse_edge():
    edge_index = torch.tensor([[0, 1, 1], [1, 0, 2]])
    with pytest.raises(ValueError, match=r"edge \(1, 2\) has no reverse edge \(2, 1\)"):
        check_graph(Data(edge_index=edge_index, num_nodes=3))


def test_check_graph_names_a_reverse_edge_with_another_weight():
    g = valid_graph()
    weight = g.edge_weight.clone()
    weight[(g.edge_index[0] == 2) & (g.edge_index[1] == 1)] = 7.0
    with pytest.raises(ValueError, match=r"edge \(1, 2\) has weight 2.0 but its reverse \(2, 1\) "
                                         r"has weight 7.0"):
        check_graph(Data(edge_index=g.edge_index, edge_weight=weight, num_nodes=4))


def test_check_graph_rejects_duplicate_entries():
    edge_index = torch.tensor([[0, 0, 1], [1, 1, 0]])
    with pytest.raises(ValueError, match=r"entry \(0, 1\) more than once"):
        check_graph(Data(edge_index=edge_index, num_nodes=2))


@pytest.mark.parametrize("value,match", [
    (0.0, r"must be > 0, got 0.0 on edge"),
    (-2.0, r"must be > 0, got -2.0 on edge"),
    (float("nan"), "must be finite, got 1 NaN and 0 Inf"),
    (float("inf"), "must be finite, got 0 NaN and 1 Inf"),
])
def test_check_graph_rejects_bad_weight_values(value, match):
    g = grid(2, 2)
    weight = g.edge_weight.clone()
    weight[3] = value
    with pytest.raises(ValueError, match=match):
        check_graph(Data(edge_index=g.edge_index, edge_weight=weight, num_nodes=4))


def test_check_graph_rejects_integer_weights():
    g = grid(2, 2)
    weight = torch.ones(g.edge_index.size(1), dtype=torch.long)
    with pytest.raises(ValueError, match="edge_weight must be a floating-point tensor"):
        check_graph(Data(edge_index=g.edge_index, edge_weight=weight, num_nodes=4))


def test_check_graph_rejects_weights_of_wrong_length():
    g = grid(2, 2)
    with pytest.raises(ValueError, match=r"edge_weight must have shape \[8\].*\(7,\)"):
        check_graph(Data(edge_index=g.edge_index, edge_weight=torch.ones(7), num_nodes=4))


def test_check_graph_reports_node_count_mismatch():
    with pytest.raises(ValueError, match="^graph has 49 nodes but 64 were expected$"):
        check_graph(grid(7, 7), num_nodes=64)


def test_check_graph_rejects_pos_of_wrong_shape():
    g = grid(2, 2)
    g.pos = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"pos must have shape \[4, 2\]"):
        check_graph(g)


def _bad_graphs() -> dict[str, tuple[Data, str]]:
    """One graph per check of check_graph, and the rest of its message after the name."""
    pair = torch.tensor([[0, 1], [1, 0]])

    def graph(edge_index=pair, edge_weight=None, pos=None, num_nodes=2):
        data = Data(edge_index=edge_index, num_nodes=num_nodes)
        if edge_weight is not None:
            data.edge_weight = torch.tensor(edge_weight)
        if pos is not None:
            data.pos = pos
        return data

    return {
        "no edge_index": (Data(num_nodes=2), " has no edge_index"),
        "edge_index not a tensor": (graph([[0, 1], [1, 0]]), ": edge_index must be a "
                                    "torch.Tensor"),
        "edge_index shape": (graph(torch.zeros(3, 2, dtype=torch.long)),
                             r": edge_index must have shape \[2, E\], got tensor of shape "
                             r"\(3, 2\)"),
        "edge_index dtype": (graph(pair.int()), r": edge_index must have dtype torch\.int64"),
        "node count": (graph(num_nodes=3), " has 3 nodes but 2 were expected"),
        "index out of range": (graph(torch.tensor([[0, 2], [2, 0]])),
                               r": edge_index contains node 2, but the graph has 2 nodes"),
        "self-loop": (graph(torch.tensor([[1], [1]])), " has a self-loop at node 1"),
        "edge_weight not a tensor": (Data(edge_index=pair, edge_weight=[1.0, 1.0],
                                          num_nodes=2), ": edge_weight must be a torch.Tensor"),
        "integer edge_weight": (graph(edge_weight=[1, 1]),
                                ": edge_weight must be a floating-point tensor"),
        "edge_weight shape": (graph(edge_weight=[1.0]), r": edge_weight must have shape \[2\]"),
        "NaN edge_weight": (graph(edge_weight=[float("nan")] * 2),
                            ": edge_weight must be finite, got 2 NaN"),
        "zero edge_weight": (graph(edge_weight=[0.0, 0.0]),
                             r": edge_weight must be > 0, got 0\.0 on edge \(0, 1\)"),
        "pos not floating": (graph(pos=torch.zeros(2, 2, dtype=torch.long)),
                             ": pos must be a floating-point tensor"),
        "pos shape": (graph(pos=torch.zeros(2, 3)), r": pos must have shape \[2, 2\]"),
        "NaN pos": (graph(pos=torch.full((2, 2), float("nan"))), ": pos must be finite"),
        "duplicate entry": (graph(torch.tensor([[0, 0, 1], [1, 1, 0]])),
                            r": edge_index has the entry \(0, 1\) more than once"),
        "missing reverse": (graph(torch.tensor([[0], [1]])),
                            r": edge \(0, 1\) has no reverse edge \(1, 0\)"),
        "asymmetric weight": (graph(edge_weight=[1.0, 2.0]),
                              r": edge \(0, 1\) has weight 1\.0 but its reverse \(1, 0\) has "
                              r"weight 2\.0"),
    }


@pytest.mark.parametrize("case", list(_bad_graphs()))
@pytest.mark.parametrize("name", ["graph", "graph for layer 'fc1'", "data"])
def test_check_graph_starts_every_message_with_the_name(case, name):
    data, rest = _bad_graphs()[case]
    num_nodes = 2 if case == "node count" else None
    error = TypeError if case.endswith("not a tensor") else ValueError
    with pytest.raises(error, match="^" + re.escape(name) + rest):
        check_graph(data, num_nodes, name=name)


def test_check_graph_default_name_keeps_the_graph_level_messages():
    # The messages about the graph as a whole read as before; attribute messages gain the
    # "graph: " prefix.
    with pytest.raises(ValueError, match=r"^graph has a self-loop at node 1; a neuron graph"):
        check_graph(Data(edge_index=torch.tensor([[1], [1]]), num_nodes=2))
    with pytest.raises(ValueError, match=r"^graph: edge_weight must be > 0, got -1\.0 on edge "
                                         r"\(0, 1\); a weight of 0 is no edge"):
        check_graph(Data(edge_index=torch.tensor([[0, 1], [1, 0]]),
                         edge_weight=torch.tensor([-1.0, -1.0]), num_nodes=2))
    # from_edge_index shares the weight check; its own argument keeps its plain name.
    with pytest.raises(ValueError, match=r"^edge_weight must be > 0, got -1\.0"):
        from_edge_index(torch.tensor([[0], [1]]), torch.tensor([-1.0]), num_nodes=2)


# -------------------------------------------------------------------------- from_edge_index


def test_from_edge_index_symmetrises_coalesces_and_drops_self_loops():
    edge_index = torch.tensor([[0, 1, 1, 2, 3, 0, 3], [1, 2, 1, 0, 3, 1, 2]])
    weight = torch.tensor([2.0, 3.0, 9.0, 4.0, 9.0, 2.0, 5.0])
    g = from_edge_index(edge_index, weight, num_nodes=5)
    check_graph(g, num_nodes=5)
    assert is_coalesced(g.edge_index, num_nodes=5)
    assert g.edge_index.tolist() == [[0, 0, 1, 1, 2, 2, 2, 3], [1, 2, 0, 2, 0, 1, 3, 2]]
    assert g.edge_weight.tolist() == [2.0, 4.0, 2.0, 3.0, 4.0, 3.0, 5.0, 5.0]


def test_from_edge_index_matches_a_dense_reference_on_random_input():
    rng = np.random.default_rng(3)
    n = 30
    symmetric = rng.uniform(0.5, 2.0, size=(n, n))
    symmetric = (symmetric + symmetric.T) / 2
    row, col = rng.integers(0, n, size=(2, 200))
    g = from_edge_index(torch.from_numpy(np.stack([row, col])),
                        torch.from_numpy(symmetric[row, col]), num_nodes=n)
    expected = np.zeros((n, n))
    expected[row, col] = symmetric[row, col]
    expected[col, row] = symmetric[row, col]
    np.fill_diagonal(expected, 0.0)
    dense = np.zeros((n, n))
    dense[tuple(g.edge_index.numpy())] = g.edge_weight.numpy()
    np.testing.assert_array_equal(dense, expected)
    assert g.edge_weight.dtype == torch.float64  # floating weights keep their dtype


def test_from_edge_index_refuses_to_guess_between_two_weights():
    edge_index = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match=r"pair \(0, 1\) two different weights, 1.0 and 2.0"):
        from_edge_index(edge_index, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"pair \(0, 1\) two different weights"):
        from_edge_index(torch.tensor([[0, 0], [1, 1]]), torch.tensor([1.0, 2.0]))
    g = from_edge_index(edge_index, torch.tensor([1.0, 1.0 + 1e-7], dtype=torch.float64))
    assert g.edge_weight[0] == g.edge_weight[1]  # float rounding: merged, still symmetric
    check_graph(g)


def test_from_edge_index_defaults():
    g = from_edge_index(torch.tensor([[0, 2], [2, 0]], dtype=torch.int32))
    assert g.num_nodes == 3 and g.edge_index.dtype == torch.long
    assert g.edge_weight.dtype == torch.float32 and g.edge_weight.tolist() == [1.0, 1.0]
    g = from_edge_index(torch.tensor([[0], [1]]), torch.tensor([3]), pos=torch.zeros(4, 2))
    assert g.num_nodes == 4 and g.edge_weight.tolist() == [3.0, 3.0]
    g = from_edge_index(torch.empty(2, 0, dtype=torch.long), num_nodes=3)
    assert g.num_nodes == 3 and g.edge_index.shape == (2, 0)
    check_graph(g)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(edge_index=torch.zeros(3, 2, dtype=torch.long)), ValueError, r"shape \[2, E\]"),
    (dict(edge_index=torch.zeros(2, 2)), ValueError, "integer dtype"),
    (dict(edge_index=[[0, 1], [1, 0]]), TypeError, "edge_index must be a torch.Tensor"),
    (dict(edge_index=torch.tensor([[0, 4], [4, 0]]), num_nodes=4), ValueError,
     r"contains node 4, but node indices must lie in \[0, 4\)"),
    (dict(edge_index=torch.tensor([[0, -1], [1, 0]])), ValueError, "contains node -1"),
    (dict(edge_index=torch.tensor([[0, 1], [1, 0]]), edge_weight=torch.ones(3)), ValueError,
     r"one entry per column of edge_index \(2\), got 3"),
    (dict(edge_index=torch.tensor([[0, 1], [1, 0]]), edge_weight=torch.tensor([1.0, -1.0])),
     ValueError, r"must be > 0, got -1.0 on edge \(1, 0\); a weight of 0 is no edge"),
    (dict(edge_index=torch.tensor([[0, 1], [1, 0]]), edge_weight=torch.tensor([1.0, np.nan])),
     ValueError, "edge_weight must be finite"),
    (dict(edge_index=torch.tensor([[0, 1], [1, 0]]), pos=torch.zeros(3, 3)), ValueError,
     r"pos must have shape \[num_nodes, 2\]"),
    (dict(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=3, pos=torch.zeros(2, 2)),
     ValueError, "pos must have 3 rows"),
])
def test_from_edge_index_validates_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        from_edge_index(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graphs_stay_on_the_device_of_their_inputs():
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]], device="cuda")
    g = from_edge_index(edge_index, torch.tensor([1.0, 2.0, 3.0], device="cuda"))
    assert g.edge_index.is_cuda and g.edge_weight.is_cuda
    assert check_graph(g) is g
    h = copies(g, 2)
    assert h.edge_index.is_cuda and num_undirected_edges(h) == 6
    assert disjoint_union([g, g]).edge_weight.is_cuda


# ------------------------------------------------------------------------------------- docs


def test_docstring_examples_hold():
    result = doctest.testmod(graphs, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10
    assert result.failed == 0


# --------------------------------------------------------------------------- from positions


def _brute_knn_adjacency(points: np.ndarray, k: int) -> np.ndarray:
    """Directed kNN adjacency by full sorting (stable: ties go to the lower index)."""
    d = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    a = np.zeros_like(d)
    for i, order in enumerate(np.argsort(d, axis=1, kind="stable")):
        a[i, order[:k]] = 1.0
    return a


def _dense(g: Data) -> np.ndarray:
    a = np.zeros((g.num_nodes, g.num_nodes))
    a[g.edge_index[0].numpy(), g.edge_index[1].numpy()] = g.edge_weight.numpy()
    return a


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("symmetrize", ["mean", "max", "mutual"])
def test_from_positions_knn_equals_brute_force(dims, symmetrize):
    points = np.random.default_rng(dims).uniform(-3, 3, size=(60, dims)) + 1000.0
    g = from_positions(torch.tensor(points), k=6, symmetrize=symmetrize)
    assert check_graph(g) is g
    a = _brute_knn_adjacency(points, 6)
    expected = {"mean": (a + a.T) / 2, "max": np.maximum(a, a.T), "mutual": a * a.T}
    np.testing.assert_array_equal(_dense(g), expected[symmetrize])


def test_from_positions_knn_gaussian_weights_and_default_k():
    points = torch.rand(40, 2, generator=torch.Generator().manual_seed(0))
    g = from_positions(points, sigma=0.3, symmetrize="max")
    a = _brute_knn_adjacency(points.double().numpy(), 8)
    d2 = ((points[:, None] - points[None]) ** 2).sum(-1).double().numpy()
    expected = np.maximum(a, a.T) * np.exp(-d2 / 0.09)
    np.testing.assert_allclose(_dense(g), expected, rtol=1e-6, atol=1e-7)
    assert g.sigma == 0.3


@pytest.mark.parametrize("dims", [2, 3])
def test_from_positions_radius_equals_networkx_random_geometric_graph(dims):
    points = np.random.default_rng(7).uniform(size=(150, dims))
    reference = nx.random_geometric_graph(150, 0.2, dim=dims,
                                          pos={i: p for i, p in enumerate(points)})
    g = from_positions(torch.tensor(points), "radius", radius=0.2)
    assert check_graph(g) is g
    ours = {tuple(e) for e in g.edge_index.t().tolist() if e[0] < e[1]}
    assert ours == {tuple(sorted(e)) for e in reference.edges()}
    assert len(ours) > 100
    assert bool((g.edge_weight == 1).all())


def test_from_positions_radius_on_a_lattice_is_the_4_and_8_neighbour_grid():
    lattice = grid(6, 5).pos
    for radius, neighbours in [(1.0, 4), (1.5, 8)]:
        g = from_positions(lattice, "radius", radius=radius)
        ref = grid(6, 5, neighbours=neighbours)
        assert torch.equal(g.edge_index, ref.edge_index)
        assert torch.equal(g.pos, lattice)


def test_from_positions_radius_with_gaussian_weights():
    points = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 2.0]])
    g = from_positions(points, "radius", radius=1.0, sigma=1.0)
    assert g.edge_index.tolist() == [[0, 1], [1, 0]]
    assert torch.allclose(g.edge_weight, torch.full((2,), math.exp(-0.25)))


def test_from_positions_gaussian_keeps_pairs_above_the_threshold():
    points = np.random.default_rng(3).normal(size=(50, 2))
    g = from_positions(torch.tensor(points), "gaussian", sigma=0.5, threshold=0.2)
    assert check_graph(g) is g
    w = np.exp(-((points[:, None] - points[None]) ** 2).sum(-1) / 0.25)
    np.fill_diagonal(w, 0.0)
    expected = np.where(w >= 0.2, w, 0.0)
    np.testing.assert_allclose(_dense(g), expected, rtol=1e-6)
    assert 0 < g.edge_index.size(1) < 50 * 49


def test_from_positions_drops_underflowed_weights_and_keeps_coordinates():
    points = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [100.0, 0.0, 0.0]])
    g = from_positions(points, "radius", radius=1000.0, sigma=0.1)  # exp(-1e6) == 0
    assert g.edge_index.tolist() == [[0, 1], [1, 0]]
    assert torch.equal(g.coords, points) and "pos" not in g and "x" not in g
    line_points = torch.tensor([[0.0], [1.0], [3.0]])
    h = from_positions(line_points, k=1)
    assert h.pos.tolist() == [[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]
    assert check_graph(h) is h


@pytest.mark.parametrize("call, error, match", [
    (lambda: from_positions(torch.rand(5)), ValueError, r"pos must be 2-D"),
    (lambda: from_positions([[0.0, 1.0]]), TypeError, "pos must be a torch.Tensor"),
    (lambda: from_positions(torch.rand(0, 2)), ValueError, "at least 1 point"),
    (lambda: from_positions(torch.tensor([[0.0, float("nan")], [1.0, 1.0]])), ValueError,
     "pos must be finite, got 1 NaN"),
    (lambda: from_positions(torch.rand(5, 2), k=5), ValueError,
     r"k must be between 1 and num_points - 1 = 4 .* got k=5 for 5 points"),
    (lambda: from_positions(torch.rand(5, 2), k=0), ValueError, "got k=0"),
    (lambda: from_positions(torch.rand(5, 2), k=2.0), TypeError, "k must be an int"),
    (lambda: from_positions(torch.rand(5, 2), "radius"), ValueError, "needs radius"),
    (lambda: from_positions(torch.rand(5, 2), "radius", radius=0.0), ValueError,
     "radius must be finite and > 0, got 0.0"),
    (lambda: from_positions(torch.rand(5, 2), "radius", radius=-1.0), ValueError,
     "radius must be finite and > 0"),
    (lambda: from_positions(torch.rand(5, 2), "radius", radius=1.0, k=3), ValueError,
     "k is not used by method='radius'"),
    (lambda: from_positions(torch.rand(5, 2), radius=1.0), ValueError,
     "radius is not used by method='knn'"),
    (lambda: from_positions(torch.rand(5, 2), "gaussian", threshold=1.0), ValueError,
     r"threshold must be in \[0, 1\)"),
    (lambda: from_positions(torch.rand(5, 2), "gaussian", sigma=-1.0), ValueError,
     "sigma must be finite and > 0"),
    (lambda: from_positions(torch.rand(5, 2), "grid"), ValueError,
     r"method must be one of \('knn', 'radius', 'gaussian'\)"),
    (lambda: from_positions(torch.ones(5, 2, dtype=torch.bool)), ValueError,
     "real coordinates"),
])
def test_from_positions_refuses_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_from_positions_integer_coordinates_and_chunking_agree():
    points = torch.randint(0, 20, (80, 2))
    g = from_positions(points, k=5)
    h = from_positions(points.float(), k=5, chunk_size=7)
    assert torch.equal(g.edge_index, h.edge_index) and torch.equal(g.edge_weight, h.edge_weight)
    assert g.pos.dtype == torch.float32 and check_graph(g) is g
