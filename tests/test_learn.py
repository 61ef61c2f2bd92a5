"""Learned neuron graphs: equality with float64 numpy/scikit-learn references, chunking,
ties, symmetrisation, co-activation statistics and errors."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist
from sklearn.metrics.pairwise import cosine_distances
from sklearn.neighbors import kneighbors_graph
from torch_geometric.data import Data

from gsr_pyg import learn
from gsr_pyg.learn import (
    CoactivationGraph,
    CoactivationStats,
    adaptive_graph,
    gaussian_graph,
    knn_graph,
)

METRICS = ["euclidean", "cosine", "correlation"]


# --------------------------------------------------------------------------------------------
# references and helpers
# --------------------------------------------------------------------------------------------

def dense(g: Data) -> np.ndarray:
    n = g.num_nodes
    out = np.zeros((n, n))
    ei = g.edge_index.numpy()
    out[ei[0], ei[1]] = g.edge_weight.double().numpy()
    return out


def ref_distances(neurons: np.ndarray, metric: str) -> np.ndarray:
    """[N, N] float64 distances between rows of ``neurons`` (scikit-learn/scipy conventions)."""
    if metric == "cosine":
        return cosine_distances(neurons)
    return cdist(neurons, neurons, metric=metric)


def ref_knn_directed(dist: np.ndarray, k: int) -> np.ndarray:
    """Directed kNN adjacency, ties to the lower index (stable sort)."""
    dist = dist.copy()
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    adj = np.zeros_like(dist)
    np.put_along_axis(adj, order, 1.0, axis=1)
    return adj


def check_data_model(g: Data) -> None:
    ei, w, n = g.edge_index, g.edge_weight, g.num_nodes
    assert ei.dtype == torch.long and ei.shape[0] == 2
    assert w.dtype == torch.float32 and bool((w > 0).all())
    assert not bool((ei[0] == ei[1]).any()), "self-loop"
    key = ei[0] * n + ei[1]
    assert bool((key[1:] > key[:-1]).all()), "not coalesced"
    a = dense(g)
    np.testing.assert_array_equal(a, a.T)


def random_acts(samples=32, neurons=50, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(samples, neurons, generator=g, dtype=dtype)


# --------------------------------------------------------------------------------------------
# equality with references
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("metric", METRICS)
def test_knn_connectivity_equals_sklearn(metric):
    acts = random_acts()
    x = acts.numpy().T
    a = kneighbors_graph(x, 5, mode="connectivity", metric=metric, include_self=False).toarray()
    g = knn_graph(acts, k=5, metric=metric)
    check_data_model(g)
    np.testing.assert_array_equal(dense(g), (a + a.T) / 2)
    np.testing.assert_array_equal(dense(knn_graph(acts, 5, metric, symmetrize="max")),
                                  np.maximum(a, a.T))
    np.testing.assert_array_equal(dense(knn_graph(acts, 5, metric, symmetrize="mutual")),
                                  a * a.T)
    assert torch.equal(g.x, acts.t())


@pytest.mark.parametrize("metric", METRICS)
def test_knn_gaussian_weights_equal_sklearn_distances(metric):
    acts = random_acts(seed=1)
    d = kneighbors_graph(acts.numpy().T, 4, mode="distance", metric=metric,
                         include_self=False).toarray()
    picked = d[d > 0]
    sigma = np.sort(picked)[(picked.size - 1) // 2]  # lower median
    w = np.where(d > 0, np.exp(-d**2 / sigma**2), 0.0)
    g = knn_graph(acts, k=4, metric=metric, weights="gaussian")
    assert g.sigma == pytest.approx(sigma, rel=1e-12)
    np.testing.assert_allclose(dense(g), (w + w.T) / 2, rtol=1e-6, atol=0)
    g = knn_graph(acts, k=4, metric=metric, weights="gaussian", sigma=0.8 * float(sigma))
    w = np.where(d > 0, np.exp(-d**2 / (0.8 * sigma) ** 2), 0.0)
    np.testing.assert_allclose(dense(g), (w + w.T) / 2, rtol=1e-6, atol=0)


@pytest.mark.parametrize("metric", METRICS)
def test_gaussian_graph_equals_numpy(metric):
    acts = random_acts(seed=2)
    sigma = {"euclidean": 7.0, "cosine": 0.6, "correlation": 0.6}[metric]
    d = ref_distances(acts.numpy().T, metric)
    w = np.exp(-d**2 / sigma**2)
    np.fill_diagonal(w, 0.0)
    w[w < 0.1] = 0.0
    g = gaussian_graph(acts, sigma=sigma, threshold=0.1, metric=metric)
    check_data_model(g)
    assert 0 < g.num_edges < 50 * 49  # the threshold really cuts
    np.testing.assert_array_equal(dense(g) > 0, w > 0)
    np.testing.assert_allclose(dense(g), w, rtol=1e-6, atol=0)


def test_gaussian_graph_reference_settings_drop_below_point_one():
    acts = random_acts(seed=3) * 0.15
    d = cdist(acts.numpy().T, acts.numpy().T)
    w = np.exp(-(d**2))
    np.fill_diagonal(w, 0.0)
    w[w < 0.1] = 0.0
    g = gaussian_graph(acts, sigma=1.0)  # the reference: sigma 1, threshold 0.1
    assert 0 < g.num_edges < 50 * 49 and g.sigma == 1.0
    np.testing.assert_allclose(dense(g), w, rtol=1e-6, atol=0)


@pytest.mark.parametrize("metric", METRICS)
def test_gaussian_graph_default_sigma_is_the_median_five_neighbour_distance(metric):
    acts = random_acts(seed=4) * 4  # neurons 16 to 36 apart: sigma = 1 joins none of them
    d = ref_distances(acts.numpy().T, metric)
    off = d + np.diag(np.full(50, np.inf))
    nearest = np.sort(off, axis=1)[:, :5].ravel()
    sigma = np.sort(nearest)[(nearest.size - 1) // 2]  # lower median
    w = np.exp(-d**2 / sigma**2)
    np.fill_diagonal(w, 0.0)
    w[w < 0.1] = 0.0
    g = gaussian_graph(acts, metric=metric)
    assert 50 * 2 < g.num_edges < 50 * 49  # neurons have neighbours, not all of them
    check_data_model(g)
    assert g.sigma == pytest.approx(sigma, rel=1e-12)
    np.testing.assert_allclose(dense(g), w, rtol=1e-6, atol=0)
    transform = CoactivationGraph(method="gaussian", metric=metric)
    assert transform.sigma is None
    assert torch.equal(transform.from_activations(acts).edge_index, g.edge_index)


def test_gaussian_graph_without_edges_warns_and_names_the_sigma_to_set():
    acts = random_acts(seed=4) * 4
    nearest = np.sort(cdist(acts.numpy().T, acts.numpy().T)[np.triu_indices(50, 1)])[0]
    needed = nearest / np.sqrt(np.log(10))
    with pytest.warns(UserWarning, match=rf"50 neurons has no edges: .* at sigma=1 \(the "
                                         rf"closest pair is {nearest:.3g} apart and needs "
                                         rf"sigma >= {needed:.3g}\); use sigma=None"):
        g = gaussian_graph(acts, sigma=1.0)
    assert g.num_edges == 0 and g.num_nodes == 50
    with pytest.warns(UserWarning, match="has no edges: every Gaussian weight"):
        knn_graph(acts, k=2, weights="gaussian", sigma=1e-3)
    with pytest.raises(ValueError, match=r"needs at least 2 neurons, got 1; pass sigma"):
        gaussian_graph(torch.randn(4, 1))


def test_weights_that_underflow_to_zero_are_no_edges():
    # two tight clusters of 3 neurons, 1000 apart: with k=3 every neuron's third neighbour
    # lies in the other cluster, at a Gaussian weight exp(-10^6) = 0
    base = torch.tensor([[0.0, 0.1, 0.2], [0.0, 0.2, 0.1]], dtype=torch.float64)
    acts = torch.cat([base, base + 1000.0], dim=1)
    g = knn_graph(acts, k=3, weights="gaussian", sigma=1.0)
    check_data_model(g)
    assert bool((g.edge_weight > torch.finfo(torch.float32).tiny).all())
    assert set(map(tuple, g.edge_index.t().tolist())) == {
        (i, j) for block in ((0, 1, 2), (3, 4, 5)) for i in block for j in block if i != j}
    assert connected_components(dense(g) > 0, directed=False)[0] == 2  # the stop rule's view
    for symmetrize in ("max", "mutual"):
        assert knn_graph(acts, k=3, weights="gaussian", sigma=1.0,
                         symmetrize=symmetrize).num_edges == 12
    # float64 weights that vanish in float32 are dropped too
    far = torch.tensor([[0.0, 0.0, 13.0]], dtype=torch.float64).repeat(2, 1)
    g = gaussian_graph(far, sigma=1.0, threshold=0.0)  # exp(-338) > 0 only in float64
    assert g.edge_index.tolist() == [[0, 1], [1, 0]]
    pairs = torch.tensor([[0.0, 1.0, 14.0, 15.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    g = adaptive_graph(pairs, k=1)  # sigma_i = 1: exp(-169) between the pairs
    assert g.edge_index.tolist() == [[0, 1, 2, 3], [1, 0, 3, 2]]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k, threshold", [(2, 0.0), (3, 0.2)])
def test_adaptive_graph_equals_numpy(metric, k, threshold):
    acts = random_acts(neurons=40, seed=4)
    d = ref_distances(acts.numpy().T, metric)
    off = d + np.diag(np.full(40, np.inf))
    sigma = np.sort(off, axis=1)[:, k - 1]
    kern = np.exp(-d**2 / sigma[:, None] ** 2)
    w = (kern + kern.T) / 2
    np.fill_diagonal(w, 0.0)
    w[w < threshold] = 0.0
    g = adaptive_graph(acts, k=k, threshold=threshold, metric=metric)
    check_data_model(g)
    np.testing.assert_allclose(g.sigma.numpy(), sigma, rtol=1e-10)
    np.testing.assert_array_equal(dense(g) > 0, w > 0)
    np.testing.assert_allclose(dense(g), w, rtol=1e-6, atol=0)
    if threshold > 0:
        assert g.num_edges < 40 * 39


@pytest.mark.parametrize("metric", METRICS)
def test_gram_input_equals_feature_input(metric):
    acts = random_acts(seed=5)
    feats = acts.t()
    if metric == "correlation":
        feats = feats - feats.mean(dim=1, keepdim=True)
    gram = feats @ feats.t()
    for build in (lambda **kw: knn_graph(k=5, metric=metric, **kw),
                  lambda **kw: adaptive_graph(k=2, threshold=0.1, metric=metric, **kw)):
        a, b = build(activations=acts), build(gram=gram)
        assert torch.equal(a.edge_index, b.edge_index)
        torch.testing.assert_close(a.edge_weight, b.edge_weight, rtol=1e-6, atol=0)
        assert "x" not in b


def test_cosine_zero_neuron_follows_sklearn():
    # an all-zero neuron has cosine distance 1 to everything (scikit-learn's convention)
    acts = random_acts(neurons=20, seed=6)
    acts[:, 7] = 0
    d = cosine_distances(acts.numpy().T)
    a = ref_knn_directed(d, 3)
    g = knn_graph(acts, k=3, metric="cosine")
    np.testing.assert_array_equal(dense(g), (a + a.T) / 2)


# --------------------------------------------------------------------------------------------
# chunking, ties, symmetrisation
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", METRICS)
def test_chunked_equals_unchunked_exactly(metric, dtype):
    acts = random_acts(neurons=53, seed=7, dtype=dtype)
    builders = [
        lambda c: knn_graph(acts, 5, metric, chunk_size=c),
        lambda c: knn_graph(acts, 5, metric, weights="gaussian", chunk_size=c),
        lambda c: gaussian_graph(acts, sigma=6.0 if metric == "euclidean" else 0.5,
                                 metric=metric, chunk_size=c),
        lambda c: adaptive_graph(acts, 2, threshold=0.05, metric=metric, chunk_size=c),
    ]
    for i, build in enumerate(builders):
        whole = build(None)
        for chunk in (7, 64, 1) if i == 0 else (7, 64):
            part = build(chunk)
            assert torch.equal(part.edge_index, whole.edge_index)
            assert torch.equal(part.edge_weight, whole.edge_weight)


def test_symmetrize_modes_hand_example():
    # neurons on a line at 0, 1, 3, 7 (same value in both samples); k = 1:
    # 0 -> 1, 1 -> 0, 2 -> 1, 3 -> 2
    acts = torch.tensor([[0.0, 1.0, 3.0, 7.0], [0.0, 1.0, 3.0, 7.0]])
    pairs = [[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]]
    mean = knn_graph(acts, k=1)
    assert mean.edge_index.tolist() == pairs
    assert mean.edge_weight.tolist() == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    top = knn_graph(acts, k=1, symmetrize="max")
    assert top.edge_index.tolist() == pairs
    assert top.edge_weight.tolist() == [1.0] * 6
    mutual = knn_graph(acts, k=1, symmetrize="mutual")
    assert mutual.edge_index.tolist() == [[0, 1], [1, 0]]
    assert mutual.edge_weight.tolist() == [1.0, 1.0]


def test_ties_go_to_lower_index_hand_example():
    # a centre and its 4 lattice neighbours: every pick below is decided by a tie
    pts = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32)
    g = knn_graph(pts.t().contiguous(), k=2)
    # directed: 0->{1,2}, 1->{0,2}, 2->{0,1}, 3->{0,2}, 4->{0,1}
    expected = {(0, 1): 1.0, (0, 2): 1.0, (1, 2): 1.0, (0, 3): 0.5, (0, 4): 0.5,
                (2, 3): 0.5, (1, 4): 0.5}
    got = {(i, j): w for (i, j), w in zip(g.edge_index.t().tolist(), g.edge_weight.tolist())
           if i < j}
    assert got == expected


@pytest.mark.parametrize("chunk", [None, 3])
def test_ties_on_integer_data_equal_stable_sort(chunk):
    # small integer coordinates: exact distances with many ties
    rng = np.random.default_rng(8)
    x = rng.integers(0, 3, size=(4, 60)).astype(np.float64)
    a = ref_knn_directed(cdist(x.T, x.T, "sqeuclidean"), 4)
    g = knn_graph(torch.tensor(x), k=4, chunk_size=chunk)
    np.testing.assert_array_equal(dense(g), (a + a.T) / 2)


@pytest.mark.parametrize("symmetrize", ["mean", "max", "mutual"])
@pytest.mark.parametrize("weights", ["connectivity", "gaussian"])
def test_knn_graph_is_symmetric_loop_free_and_degree_bounded(symmetrize, weights):
    acts = random_acts(neurons=80, seed=9)
    k = 4
    g = knn_graph(acts, k=k, weights=weights, symmetrize=symmetrize)
    check_data_model(g)
    degree = torch.bincount(g.edge_index[0], minlength=80)
    if symmetrize == "mutual":
        assert int(degree.max()) <= k
    else:
        assert int(degree.min()) >= k
        assert g.num_edges >= 80 * k  # every directed pick survives
    assert g.num_edges <= 2 * 80 * k


@pytest.mark.parametrize("metric", ["euclidean", "correlation"])
def test_two_independent_groups_give_two_components(metric):
    gen = torch.Generator().manual_seed(10)
    samples = 32
    latent = torch.randn(samples, 2, generator=gen, dtype=torch.float64)
    loading = 1 + torch.rand(40, generator=gen, dtype=torch.float64)  # in [1, 2]
    group = torch.arange(40) >= 20
    acts = torch.where(group, latent[:, 1:2], latent[:, 0:1]) * loading
    acts = acts + 0.05 * torch.randn(samples, 40, generator=gen, dtype=torch.float64)
    g = knn_graph(acts, k=5, metric=metric)
    num, labels = connected_components(dense(g) > 0, directed=False)
    assert num == 2
    np.testing.assert_array_equal(labels, group.numpy().astype(int) * (labels[20] - labels[0])
                                  + labels[0])


def test_3000_neurons_stay_chunked_and_equal_unchunked(monkeypatch):
    acts = random_acts(samples=16, neurons=3000, seed=11, dtype=torch.float32)
    whole = knn_graph(acts, k=5)
    shapes = []
    original = learn._FeatureDistances.band

    def spy(self, start, stop, spill, memory):
        upper, lower = original(self, start, stop, spill, memory)
        shapes.append((upper.shape, None if lower is None else lower.shape))
        return upper, lower

    monkeypatch.setattr(learn._FeatureDistances, "band", spy)
    part = knn_graph(acts, k=5, chunk_size=100)
    # bands of one 256-row tile (3,000 padded to 3,072): never a 3,000 x 3,000 matrix
    assert len(shapes) == 12
    assert shapes[0] == ((256, 3072), (2816, 256))
    assert all(upper[0] == 256 and lower in (None, (3072 - 256 * (i + 1), 256))
               for i, (upper, lower) in enumerate(shapes))
    assert torch.equal(part.edge_index, whole.edge_index)
    assert torch.equal(part.edge_weight, whole.edge_weight)


def test_banded_ties_across_tiles_equal_stable_sort():
    # 700 neurons (three 256-tiles) on small integers: many exact ties, decided in the merges
    # of candidates from different bands; float64 keeps every distance exact
    rng = np.random.default_rng(21)
    x = rng.integers(-1, 2, size=(3, 700)).astype(np.float64)
    x[:, :5] = x[:, 600:605]  # duplicates far apart: distance 0 across bands
    a = ref_knn_directed(cdist(x.T, x.T, "sqeuclidean"), 6)
    for chunk in (None, 1, 300):
        g = knn_graph(torch.tensor(x), k=6, symmetrize="max", chunk_size=chunk)
        np.testing.assert_array_equal(dense(g), np.maximum(a, a.T))
    # cosine distances round, so the reference is the unbanded build itself
    whole = knn_graph(torch.tensor(x), k=6, metric="cosine")
    for chunk in (1, 300):
        part = knn_graph(torch.tensor(x), k=6, metric="cosine", chunk_size=chunk)
        assert torch.equal(part.edge_index, whole.edge_index)
        assert torch.equal(part.edge_weight, whole.edge_weight)


@pytest.mark.parametrize(("neurons", "k"), [(257, 256), (600, 400), (600, 599), (513, 7)])
def test_any_k_across_bands_equals_stable_sort(neurons, k):
    # k up to N - 1 with bands of one tile: segments shorter than k, every merge exercised,
    # from features and from their Gram matrix
    rng = np.random.default_rng(neurons + k)
    x = rng.integers(-2, 3, size=(3, neurons)).astype(np.float64)
    a = ref_knn_directed(cdist(x.T, x.T, "sqeuclidean"), k)
    for chunk in (None, 1):
        for g in (knn_graph(torch.tensor(x), k=k, symmetrize="max", chunk_size=chunk),
                  knn_graph(gram=torch.tensor(x.T @ x), k=k, symmetrize="max",
                            chunk_size=chunk)):
            np.testing.assert_array_equal(dense(g), np.maximum(a, a.T))
        mutual = knn_graph(torch.tensor(x), k=k, symmetrize="mutual", chunk_size=chunk)
        np.testing.assert_array_equal(dense(mutual), a * a.T)


# --------------------------------------------------------------------------------------------
# co-activation statistics
# --------------------------------------------------------------------------------------------

def batches(sizes=(32, 7, 1, 20), neurons=6, seed=12, offset=1000.0):
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(neurons, neurons, generator=gen, dtype=torch.float64)
    return [torch.randn(b, neurons, generator=gen, dtype=torch.float64) @ mix + offset
            for b in sizes]


def test_stats_exact_equals_numpy_of_concatenated_batches():
    parts = batches()
    stats = CoactivationStats(6)
    for b in parts:
        stats.update(b.float())  # float32 in, float64 accumulation
    allx = torch.cat(parts).float().double().numpy()
    assert stats.count == 60
    np.testing.assert_allclose(stats.mean.numpy(), allx.mean(0), rtol=1e-13)
    np.testing.assert_allclose(stats.covariance.numpy(), np.cov(allx.T), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.correlation.numpy(), np.corrcoef(allx.T), atol=1e-11)


def test_stats_ema_equals_weighted_samples():
    parts, m = batches(), 0.9
    stats = CoactivationStats(6, mode="ema", momentum=m)
    for b in parts:
        stats.update(b)
    w = np.concatenate([np.full(len(b), m ** (len(parts) - 1 - t)) for t, b in enumerate(parts)])
    x = torch.cat(parts).numpy()
    mean = (w[:, None] * x).sum(0) / w.sum()
    cov = ((x - mean).T * w) @ (x - mean) / (w.sum() - 1)
    assert stats.count == pytest.approx(w.sum(), rel=1e-14)
    np.testing.assert_allclose(stats.mean.numpy(), mean, rtol=1e-13)
    np.testing.assert_allclose(stats.covariance.numpy(), cov, rtol=1e-9, atol=1e-9)
    # newer batches weigh more than in exact mode: the mean moves towards the last batch
    exact = CoactivationStats(6)
    for b in parts:
        exact.update(b)
    last = parts[-1].mean(0)
    assert bool(((stats.mean - last).abs() < (exact.mean - last).abs()).all())


def test_stats_one_batch_same_in_both_modes_and_reset():
    b = batches(sizes=(16,))[0]
    ema, exact = CoactivationStats(6, mode="ema"), CoactivationStats(6)
    ema.update(b)
    exact.update(b)
    assert ema.count == exact.count == 16
    torch.testing.assert_close(ema.covariance, exact.covariance, rtol=0, atol=0)
    exact.reset()
    assert exact.count == 0
    with pytest.raises(ValueError, match="count"):
        _ = exact.mean


def test_stats_state_dict_roundtrip_weights_only_and_merge():
    parts = batches()
    a, b, whole = CoactivationStats(6), CoactivationStats(6), CoactivationStats(6)
    for i, p in enumerate(parts):
        (a if i < 2 else b).update(p)
        whole.update(p)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    restored = CoactivationStats(6)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(restored.covariance, a.covariance, rtol=0, atol=0)
    restored.merge(b)
    assert restored.count == whole.count
    torch.testing.assert_close(restored.mean, whole.mean, rtol=1e-14, atol=0)
    torch.testing.assert_close(restored.covariance, whole.covariance, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="shape"):
        CoactivationStats(5).load_state_dict(a.state_dict())


def test_stats_all_reduce_combines_processes(monkeypatch):
    # two "processes" as threads; the collective sums what both contributed
    import torch.distributed as dist

    world, slots, barrier = 2, {}, threading.Barrier(2)

    def fake_all_reduce(tensor, group=None):
        rank = threading.current_thread().rank
        slots[rank] = tensor.clone()
        barrier.wait()
        tensor.copy_(sum(slots[r] for r in range(world)))
        barrier.wait()

    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    parts = batches()
    stats = [CoactivationStats(6), CoactivationStats(6)]
    stats[0].update(parts[0])
    stats[1].update(parts[1])
    stats[1].update(parts[2])

    def run(rank):
        threading.current_thread().rank = rank
        stats[rank].all_reduce()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    x = torch.cat(parts[:3]).numpy()
    for s in stats:
        assert s.count == len(x)
        np.testing.assert_allclose(s.mean.numpy(), x.mean(0), rtol=1e-13)
        np.testing.assert_allclose(s.covariance.numpy(), np.cov(x.T), rtol=1e-9, atol=1e-9)


def test_stats_constant_neuron_correlation_and_error():
    b = batches(sizes=(10,))[0]
    b[:, 2] = 3.7
    stats = CoactivationStats(6)
    stats.update(b)
    corr = stats.correlation
    assert corr[2, 2] == 1 and bool((corr[2, [0, 1, 3, 4, 5]] == 0).all())
    assert stats.constant_neurons().tolist() == [False, False, True, False, False, False]
    with pytest.raises(ValueError, match=r"1 of 6 neurons are constant \(indices \[2\]\)"):
        CoactivationGraph(metric="correlation").from_stats(stats)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("standardize", [False, True])
def test_stats_path_equals_batch_path(metric, standardize):
    # one batch: identical graphs; several batches: the graph of the concatenated batches
    parts = batches(sizes=(32, 20, 9), neurons=30, seed=13, offset=2.0)
    transform = CoactivationGraph(metric=metric, standardize=standardize, features="stats")
    for used in (parts[:1], parts):
        stats = CoactivationStats(30)
        for p in used:
            stats.update(p)
        a = transform.from_activations(torch.cat(used))
        b = transform.from_stats(stats)
        assert torch.equal(a.edge_index, b.edge_index)
        torch.testing.assert_close(a.edge_weight, b.edge_weight, rtol=0, atol=0)
        assert "gram" not in b and b.num_nodes == 30
    gauss = CoactivationGraph(method="gaussian", sigma=30.0, metric=metric,
                              standardize=standardize)
    stats = CoactivationStats(30)
    stats.update(parts[0])
    a, b = gauss.from_activations(parts[0]), gauss.from_stats(stats)
    assert torch.equal(a.edge_index, b.edge_index)
    torch.testing.assert_close(a.edge_weight, b.edge_weight, rtol=1e-5, atol=0)


# --------------------------------------------------------------------------------------------
# the transform
# --------------------------------------------------------------------------------------------

def test_transform_defaults_are_the_reference_and_forward_on_x():
    acts = random_acts(seed=14)
    t = CoactivationGraph.reference()
    assert (t.method, t.k, t.metric, t.weights, t.symmetrize, t.features) == \
        ("knn", 5, "euclidean", "connectivity", "mean", "batch")
    assert repr(t) == ("CoactivationGraph(method='knn', k=5, metric='euclidean', "
                       "weights='connectivity', symmetrize='mean', features='batch')")
    data = Data(x=acts.t(), num_nodes=50)
    out = t(data)
    ref = knn_graph(acts)
    assert torch.equal(out.edge_index, ref.edge_index)
    assert torch.equal(out.edge_weight, ref.edge_weight)
    assert "edge_index" not in data  # BaseTransform works on a copy
    rec = CoactivationGraph.recommended(k=8)
    assert (rec.metric, rec.features, rec.k) == ("correlation", "stats", 8)
    ada = CoactivationGraph(method="adaptive")
    assert (ada.k, ada.threshold) == (2, 0.0)
    gau = CoactivationGraph(method="gaussian")
    assert (gau.k, gau.sigma, gau.threshold) == (None, None, 0.1)  # sigma from the data
    assert "threshold=0.1" in repr(gau) and "sigma" not in repr(gau)
    reference = CoactivationGraph(method="gaussian", sigma=1.0)
    assert "sigma=1" in repr(reference)
    small = acts * 0.15
    assert torch.equal(reference.from_activations(small).edge_weight,
                       gaussian_graph(small, sigma=1.0).edge_weight)


def test_transform_rejects_gram_made_for_another_metric():
    stats = CoactivationStats(10)
    stats.update(random_acts(neurons=10))
    data = stats.to_data(metric="euclidean")
    with pytest.raises(ValueError, match="made for metric='euclidean'"):
        CoactivationGraph(metric="correlation")(data)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------

def test_errors_name_argument_expected_and_received():
    acts = random_acts(neurons=10)
    with pytest.raises(ValueError, match=r"k must be between 1 and num_neurons - 1 = 9.*k=10"):
        knn_graph(acts, k=10)
    with pytest.raises(ValueError, match="k must be between 1"):
        knn_graph(acts, k=0)
    with pytest.raises(ValueError, match="k must be between 1"):
        adaptive_graph(acts, k=10)
    with pytest.raises(ValueError, match=r"at least 2 samples.*\(1, 10\)"):
        knn_graph(acts[:1])
    bad = acts.clone()
    bad[0, 0] = float("nan")
    bad[1, 1] = float("inf")
    with pytest.raises(ValueError, match="activations must be finite, got 1 NaN and 1 Inf"):
        gaussian_graph(bad)
    const = acts.clone()
    const[:, [3, 8]] = 0.5
    with pytest.raises(ValueError, match=r"2 of 10 neurons are constant \(indices \[3, 8\]\)"):
        knn_graph(const, metric="correlation")
    knn_graph(const, metric="euclidean")  # fine without correlation
    with pytest.raises(ValueError, match="standardize=True"):
        CoactivationGraph(standardize=True).from_activations(const)
    with pytest.raises(ValueError, match="activations must be 2-D"):
        knn_graph(acts[0])
    with pytest.raises(ValueError, match="activations must be 2-D"):
        knn_graph(acts[None])
    with pytest.raises(ValueError, match="gram must be a square"):
        knn_graph(gram=acts)
    with pytest.raises(ValueError, match="exactly one of activations"):
        knn_graph(acts, gram=acts.t() @ acts)
    with pytest.raises(ValueError, match="metric must be one of .*did you mean 'cosine'"):
        knn_graph(acts, metric="cosin")
    with pytest.raises(ValueError, match="symmetrize must be one of"):
        knn_graph(acts, symmetrize="min")
    with pytest.raises(ValueError, match="sigma is only used with weights='gaussian'"):
        knn_graph(acts, sigma=1.0)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\)"):
        gaussian_graph(acts, threshold=1.5)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        knn_graph(acts, chunk_size=0)
    with pytest.raises(ValueError, match="method must be one of"):
        CoactivationGraph(method="knnn")
    with pytest.raises(ValueError, match="features must be one of"):
        CoactivationGraph(features="epoch")
    stats = CoactivationStats(10)
    with pytest.raises(ValueError, match=r"activations must be \[batch >= 1, 10\]"):
        stats.update(torch.randn(4, 9))
    with pytest.raises(ValueError, match="momentum must be in"):
        CoactivationStats(10, mode="ema", momentum=1.0)


@pytest.mark.parametrize("symmetrize", ["mean", "max", "mutual"])
@pytest.mark.parametrize("weights", ["connectivity", "gaussian"])
def test_small_graphs_symmetrised_densely_equal_the_sorted_edge_list(monkeypatch, symmetrize,
                                                                    weights):
    # Up to 256 neurons the pairs are merged in a dense matrix: the same graph, bit for bit,
    # as the sorted and coalesced edge list that wider layers use.
    import gsr_pyg.learn as learn

    acts = torch.randn(12, 90, generator=torch.Generator().manual_seed(4))
    acts[:, 1] = acts[:, 0]  # a tie

    def build():
        return (knn_graph(acts, k=4, weights=weights, symmetrize=symmetrize),
                gaussian_graph(acts, threshold=0.3))

    dense = build()
    monkeypatch.setattr(learn, "_DENSE_SYMMETRIZE_NODES", 0)
    listed = build()
    for a, b in zip(dense, listed):
        assert a.edge_index.shape[1] > 90
        assert torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.edge_weight, b.edge_weight)
        assert a.edge_weight.dtype == torch.float32
