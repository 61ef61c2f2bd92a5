"""Properties that hold for every graph and every batch of activations (hypothesis).

* the penalty a^T L a is non-negative, for L = D - W and the normalized Laplacian, with every
  way of computing it;
* relabelling the neurons together with the graph leaves the penalty unchanged;
* ``to_networkx`` / ``from_networkx`` round trip;
* learned kNN graphs are symmetric, loop-free and meet their degree bound.
"""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gsr_pyg import graphs, learn, spectral

SETTINGS = settings(max_examples=40, deadline=None)
NORMALIZATIONS = [None, "sym"]
METHODS = ["dense", "sparse", "edge"]


@st.composite
def weighted_graphs(draw, max_nodes: int = 10, with_pos: bool = False):
    """A graph in the data model: any subset of the pairs of ``n`` nodes, weights in
    [2^-10, 2^10] (float32-exact), optionally a layout."""
    n = draw(st.integers(1, max_nodes))
    pairs = list(itertools.combinations(range(n), 2))
    chosen = [p for p, keep in zip(pairs, draw(st.lists(st.booleans(), min_size=len(pairs),
                                                        max_size=len(pairs)))) if keep]
    weights = draw(st.lists(st.floats(2.0**-10, 2.0**10, width=32), min_size=len(chosen),
                            max_size=len(chosen)))
    edge_index = torch.tensor(chosen, dtype=torch.long).view(-1, 2).t()
    pos = None
    if with_pos:
        pos = torch.tensor(draw(arrays(np.float32, (n, 2), elements=st.floats(
            -1024.0, 1024.0, width=32))))
    return graphs.from_edge_index(edge_index, torch.tensor(weights, dtype=torch.float32),
                                  num_nodes=n, pos=pos)


@st.composite
def graph_and_activations(draw):
    graph = draw(weighted_graphs())
    batch = draw(st.integers(1, 4))
    x = draw(arrays(np.float64, (batch, graph.num_nodes), elements=st.floats(-1e3, 1e3)))
    return graph, torch.from_numpy(x)


@SETTINGS
@given(graph_and_activations(), st.sampled_from(NORMALIZATIONS), st.sampled_from(METHODS))
def test_penalty_is_non_negative(sample, normalization, method):
    graph, x = sample
    form = spectral.quadratic_form(x, graph, normalization=normalization, method=method)
    assert form.shape == (x.shape[0],)
    # rounding of a sum of w_ij (a_i - a_j)^2 terms, scaled by the largest possible term
    scale = 1.0 + float(graph.edge_weight.double().sum()) * float(x.abs().max()) ** 2 * 4
    assert bool((form >= -1e-12 * scale).all()), (form, scale)


@SETTINGS
@given(graph_and_activations(), st.sampled_from(NORMALIZATIONS), st.randoms())
def test_relabelling_neurons_with_the_graph_keeps_the_penalty(sample, normalization, rng):
    graph, x = sample
    n = graph.num_nodes
    new_label = torch.tensor(rng.sample(range(n), n))  # neuron i becomes neuron new_label[i]
    relabelled = graphs.from_edge_index(new_label[graph.edge_index], graph.edge_weight,
                                        num_nodes=n)
    moved = torch.empty_like(x)
    moved[:, new_label] = x
    before = spectral.quadratic_form(x, graph, normalization=normalization)
    after = spectral.quadratic_form(moved, relabelled, normalization=normalization)
    # the form is a difference of terms up to sum(w) max|a|^2: rounding scales with that
    scale = 1.0 + float(graph.edge_weight.double().sum()) * float(x.abs().max()) ** 2
    torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-12 * scale)


@SETTINGS
@given(weighted_graphs(with_pos=True))
def test_data_to_networkx_and_back(graph):
    back = graphs.from_networkx(graphs.to_networkx(graph))
    assert back.num_nodes == graph.num_nodes
    assert torch.equal(back.edge_index, graph.edge_index)
    assert torch.equal(back.edge_weight, graph.edge_weight)
    assert torch.equal(back.pos, graph.pos)


@st.composite
def networkx_graphs(draw):
    """An undirected weighted networkx graph with string node names in any order."""
    names = draw(st.lists(st.text("abcdefgh", min_size=1, max_size=3), max_size=9,
                          unique=True))
    G = nx.Graph()
    G.add_nodes_from(names)
    for u, v in itertools.combinations(names, 2):
        if draw(st.booleans()):
            G.add_edge(u, v, weight=draw(st.floats(2.0**-10, 2.0**10, width=32)))
    return G


@SETTINGS
@given(networkx_graphs())
def test_networkx_to_data_and_back(G):
    nodes = list(G.nodes)
    data = graphs.from_networkx(G)
    graphs.check_graph(data)
    back = nx.relabel_nodes(graphs.to_networkx(data), dict(enumerate(nodes)))
    assert list(back.nodes) == nodes
    assert {frozenset(e) for e in back.edges} == {frozenset(e) for e in G.edges}
    for u, v, weight in G.edges(data="weight"):
        assert back.edges[u, v]["weight"] == weight


@st.composite
def knn_problem(draw):
    neurons = draw(st.integers(2, 12))
    samples = draw(st.integers(2, 6))
    # small integers make exact ties (duplicate and constant neurons) frequent
    values = st.one_of(st.integers(-3, 3).map(float), st.floats(-10, 10))
    acts = draw(arrays(np.float64, (samples, neurons), elements=values))
    return torch.from_numpy(acts), draw(st.integers(1, neurons - 1))


@pytest.mark.parametrize("symmetrize", ["mean", "max", "mutual"])
@settings(max_examples=30, deadline=None)
@given(problem=knn_problem(), metric=st.sampled_from(["euclidean", "cosine"]))
def test_learned_graph_is_symmetric_loop_free_and_meets_its_degree_bound(
        symmetrize, problem, metric):
    acts, k = problem
    graph = learn.knn_graph(acts, k=k, metric=metric, symmetrize=symmetrize)
    graphs.check_graph(graph, num_nodes=acts.shape[1])  # symmetric, coalesced, no self-loops
    row, col = graph.edge_index
    assert not bool((row == col).any())
    assert bool((graph.edge_weight > 0).all())
    degree = torch.bincount(row, minlength=acts.shape[1])
    if symmetrize == "mutual":
        assert int(degree.max()) <= k
    else:
        assert int(degree.min()) >= k
