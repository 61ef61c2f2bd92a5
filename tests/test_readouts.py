from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torch_geometric.data import Data

from gsr_pyg import metrics
from gsr_pyg.metrics import adjusted_rand_index
from gsr_pyg.readouts import (
    BASELINE_METHODS,
    class_mean_maps,
    extract_modules,
    feature_graph,
    feature_module_baselines,
    graph_feature_modules,
    group_means,
    module_activity,
    module_loadings,
    neuron_planted_modules,
    pseudotime_bins,
    segmentation_map,
    subtract_global_mean,
)


def _numpy_class_means(activations: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    out = np.full((count, activations.shape[1]), np.nan)
    for c in range(count):
        if np.any(labels == c):
            out[c] = activations[labels == c].mean(axis=0)
    return out


def _numpy_segmentation(maps: np.ndarray) -> np.ndarray:
    norms = np.abs(maps).sum(axis=1, keepdims=True)
    normalized = maps / np.where(norms > 0, norms, 1.0)
    return normalized.argmax(axis=0)


# ----------------------------------------------------------------------------- class maps
def test_class_mean_maps_by_hand():
    activations = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [7.0, -1.0]])
    labels = torch.tensor([0, 0, 2, 2])
    maps = class_mean_maps(activations, labels)
    assert maps.shape == (3, 2)
    assert torch.equal(maps[0], torch.tensor([2.0, 1.0]))
    assert torch.isnan(maps[1]).all()  # class 1 has no samples
    assert torch.equal(maps[2], torch.tensor([6.0, 2.0]))


def test_class_mean_maps_matches_numpy_and_keeps_dtype():
    generator = torch.Generator().manual_seed(0)
    activations = torch.randn(200, 64, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 9, (200,), generator=generator)  # class 9 stays empty
    maps = class_mean_maps(activations, labels, num_classes=10)
    assert maps.dtype == torch.float64
    expected = _numpy_class_means(activations.numpy(), labels.numpy(), 10)
    np.testing.assert_allclose(maps.numpy(), expected, rtol=1e-12, equal_nan=True)
    assert torch.isnan(maps[9]).all() and not torch.isnan(maps[:9]).any()


def test_integer_activations_become_float():
    maps = class_mean_maps(torch.tensor([[1, 2], [2, 4]]), torch.tensor([0, 0]))
    assert maps.dtype == torch.get_default_dtype()
    assert torch.allclose(maps, torch.tensor([[1.5, 3.0]]))


def test_group_means_is_class_mean_maps():
    generator = torch.Generator().manual_seed(1)
    activations = torch.randn(50, 7, generator=generator)
    groups = torch.randint(0, 3, (50,), generator=generator)
    got = group_means(activations, groups, num_groups=4)
    torch.testing.assert_close(got, class_mean_maps(activations, groups, num_classes=4),
                               equal_nan=True)
    assert torch.isnan(got[3]).all()
    expected = _numpy_class_means(activations.double().numpy(), groups.numpy(), 4)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_group_means_of_columns_matches_numpy():
    generator = torch.Generator().manual_seed(5)
    values = torch.randn(20, 9, generator=generator, dtype=torch.float64)
    groups = torch.tensor([2, 0, 2, 2, 0, 1, 1, 2, 0])
    got = group_means(values, groups, dim=1)
    assert got.shape == (20, 3) and got.dtype == torch.float64
    a, g = values.numpy(), groups.numpy()
    expected = np.stack([a[:, g == k].mean(axis=1) for k in range(3)], axis=1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    # the same as grouping the rows of the transpose
    torch.testing.assert_close(got, group_means(values.t(), groups).t())


def test_group_means_validates():
    with pytest.raises(ValueError, match="dim must be one of"):
        group_means(torch.zeros(3, 2), torch.tensor([0, 1, 1]), dim=2)
    with pytest.raises(ValueError, match=r"groups must have one entry per column of values "
                                         r"\(2\)"):
        group_means(torch.zeros(3, 2), torch.tensor([0, 1, 1]), dim=1)
    with pytest.raises(ValueError, match="groups must be < num_groups=2"):
        group_means(torch.zeros(3, 2), torch.tensor([0, 1, 2]), num_groups=2)


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "match"),
    [
        (torch.tensor([0.0, 1.0, 1.0]), {}, ValueError, "labels must be an integer"),
        (torch.tensor([0, 1]), {}, ValueError, r"one entry per sample \(3\)"),
        (torch.tensor([0, -1, 1]), {}, ValueError, "labels must be >= 0"),
        (torch.tensor([0, 1, 3]), {"num_classes": 3}, ValueError, "labels must be < num_classes"),
        (torch.tensor([0, 1, 1]), {"num_classes": 0}, ValueError, "num_classes must be >= 1"),
        ([0, 1, 1], {}, TypeError, "labels must be a torch.Tensor"),
    ],
)
def test_class_mean_maps_rejects_bad_labels(labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        class_mean_maps(torch.zeros(3, 4), labels, **kwargs)


def test_class_mean_maps_rejects_1d_activations():
    with pytest.raises(ValueError, match="activations must be 2-D"):
        class_mean_maps(torch.zeros(4), torch.tensor([0, 0, 0, 0]))


# ----------------------------------------------------------------------------- global mean
def test_subtract_global_mean_uses_sample_mean_when_activations_given():
    # Unbalanced classes: 3 samples of class 0, 1 of class 1.
    activations = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [4.0, 8.0]])
    labels = torch.tensor([0, 0, 0, 1])
    maps = class_mean_maps(activations, labels)
    by_samples = subtract_global_mean(maps, activations)
    by_classes = subtract_global_mean(maps)
    # Sample mean is [1, 2]; mean of the class maps is [2, 4].
    assert torch.equal(by_samples, torch.tensor([[-1.0, -2.0], [3.0, 6.0]]))
    assert torch.equal(by_classes, torch.tensor([[-2.0, -4.0], [2.0, 4.0]]))


def test_subtract_global_mean_ignores_nan_rows():
    maps = torch.tensor([[1.0, 2.0], [float("nan"), float("nan")], [3.0, 6.0]])
    out = subtract_global_mean(maps)
    assert torch.equal(out[0], torch.tensor([-1.0, -2.0]))
    assert torch.isnan(out[1]).all()
    assert torch.equal(out[2], torch.tensor([1.0, 2.0]))


def test_subtract_global_mean_checks_widths():
    with pytest.raises(ValueError, match=r"one column per neuron of maps \(3\)"):
        subtract_global_mean(torch.zeros(2, 3), torch.zeros(5, 4))


# ----------------------------------------------------------------------------- segmentation
def test_segmentation_by_hand_where_l1_normalisation_changes_the_answer():
    # 3 classes on a 2x2 grid (nodes in row-major order).
    maps = torch.tensor([
        [6.0, 6.0, 6.0, 2.0],  # strong everywhere: /20 -> [.3, .3, .3, .1]
        [1.0, 0.0, 0.0, 1.0],  # weak, focused:     /2  -> [.5, 0, 0, .5]
        [0.0, 3.0, 1.0, 0.0],  # medium:            /4  -> [0, .75, .25, 0]
    ])
    assert maps.argmax(dim=0).tolist() == [0, 0, 0, 0]  # the raw argmax
    segmentation = segmentation_map(maps)
    assert segmentation.dtype == torch.long
    assert segmentation.tolist() == [1, 2, 0, 1]
    assert segmentation.view(2, 2).tolist() == [[1, 2], [0, 1]]


def test_segmentation_normalises_each_class_over_nodes_not_each_node_over_classes():
    maps = torch.tensor([[4.0, 4.0, 4.0, 4.0], [1.0, 0.0, 0.0, 0.0]])
    # Normalising each node over the classes (the other axis) would keep class 0 at node 0.
    per_node = maps / maps.abs().sum(dim=0, keepdim=True)
    assert per_node.argmax(dim=0).tolist() == [0, 0, 0, 0]
    assert segmentation_map(maps).tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize(
    ("maps", "expected"),
    [
        ([[2.0, 2.0], [1.0, 1.0]], [0, 0]),  # equal after normalisation: lowest index wins
        ([[1.0, 1.0], [2.0, 2.0]], [0, 0]),  # raw argmax would say class 1
        ([[0.0, 0.0], [1.0, 3.0]], [1, 1]),  # an all-zero map stays zero
        ([[0.0, 0.0], [-1.0, -3.0]], [0, 0]),  # ... and then beats negative maps
        ([[-2.0, 2.0], [1.0, 0.0]], [1, 0]),  # L1 uses absolute values
        ([[float("nan"), float("nan")], [-1.0, -1.0]], [1, 1]),  # an empty class never wins
    ],
)
def test_segmentation_edge_cases(maps, expected):
    assert segmentation_map(torch.tensor(maps)).tolist() == expected


def test_segmentation_matches_numpy_reference():
    generator = torch.Generator().manual_seed(2)
    maps = torch.randn(10, 64, generator=generator, dtype=torch.float64)
    maps[3] *= 50.0  # one loud class must not take over the grid
    got = segmentation_map(maps)
    expected = _numpy_segmentation(maps.numpy())
    np.testing.assert_array_equal(got.numpy(), expected)
    assert (got == 3).sum() < 20


def test_segmentation_rejects_all_nan_and_inf():
    with pytest.raises(ValueError, match="at least one row that is not all NaN"):
        segmentation_map(torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="must be finite"):
        segmentation_map(torch.tensor([[1.0, float("inf")], [0.0, 1.0]]))


# ----------------------------------------------------------------------------- pseudotime
def test_pseudotime_bins_match_pandas_qcut():
    pd = pytest.importorskip("pandas")
    generator = torch.Generator().manual_seed(3)
    pseudotime = torch.rand(103, generator=generator, dtype=torch.float64) ** 3
    expected = pd.qcut(pseudotime.numpy(), 5, labels=False)
    np.testing.assert_array_equal(pseudotime_bins(pseudotime, num_bins=5).numpy(), expected)


def test_pseudotime_bins_are_balanced_and_ordered():
    generator = torch.Generator().manual_seed(3)
    pseudotime = torch.rand(103, generator=generator, dtype=torch.float64) ** 3
    bins = pseudotime_bins(pseudotime, num_bins=5)
    assert bins.dtype == torch.long
    counts = torch.bincount(bins, minlength=5)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 103
    order = torch.argsort(pseudotime)
    assert (bins[order].diff() >= 0).all()  # later pseudotime, later bin


def test_pseudotime_bins_by_hand_and_half_precision():
    # Sorted: .1 .2 .3 .5 .7 .9; edges at the 1/3 and 2/3 quantiles: 0.2667 and 0.5667.
    pseudotime = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2])
    assert pseudotime_bins(pseudotime, num_bins=3).tolist() == [2, 0, 1, 1, 2, 0]
    assert pseudotime_bins(pseudotime.half(), num_bins=3).tolist() == [2, 0, 1, 1, 2, 0]


def test_pseudotime_bins_keep_ties_together():
    pseudotime = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 2.0])
    bins = pseudotime_bins(pseudotime, num_bins=2)
    assert bins.tolist() == [0, 0, 0, 0, 1, 1]  # the median is 0: bins are closed on the right


def test_pseudotime_bins_validate():
    with pytest.raises(ValueError, match="pseudotime must be finite"):
        pseudotime_bins(torch.tensor([0.1, float("nan")]))
    with pytest.raises(ValueError, match="num_bins must be >= 1"):
        pseudotime_bins(torch.tensor([0.1, 0.2]), num_bins=0)


# ----------------------------------------------------------------------------- modules
def test_module_activity_by_hand():
    activations = torch.tensor([[1.0, 3.0, 10.0, 0.0], [0.0, 2.0, 4.0, -6.0]])
    neuron_labels = torch.tensor([0, 0, 2, 0])
    activity = module_activity(activations, neuron_labels, num_modules=4)
    assert activity.shape == (2, 4)
    assert torch.allclose(activity[:, 0], torch.tensor([4.0 / 3.0, -4.0 / 3.0]))
    assert torch.isnan(activity[:, 1]).all() and torch.isnan(activity[:, 3]).all()
    assert torch.equal(activity[:, 2], torch.tensor([10.0, 4.0]))


def test_module_activity_matches_numpy():
    generator = torch.Generator().manual_seed(4)
    activations = torch.randn(30, 100, generator=generator, dtype=torch.float64)
    neuron_labels = torch.randint(0, 6, (100,), generator=generator)
    got = module_activity(activations, neuron_labels)
    a, m = activations.numpy(), neuron_labels.numpy()
    expected = np.stack([a[:, m == k].mean(axis=1) for k in range(int(m.max()) + 1)], axis=1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_module_activity_checks_length():
    with pytest.raises(ValueError, match=r"neuron_labels must have one entry per neuron \(5\)"):
        module_activity(torch.zeros(3, 5), torch.tensor([0, 1, 1]))


# ----------------------------------------------------------------------------- graph modules
def _two_cliques() -> Data:
    """Neurons 0-2 and 3-5 form two triangles joined by the edge 2-3."""
    pairs = [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)]
    edge_index = torch.tensor(pairs + [(b, a) for a, b in pairs]).t()
    return Data(edge_index=edge_index, edge_weight=torch.ones(edge_index.size(1)),
                num_nodes=6)


def test_extract_modules_on_two_cliques():
    # neurons 0-2 copy feature 0, neurons 3-5 copy feature 1 (plus noise): features 0, 2
    # and 1, 3 form two modules.
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(500, 2, generator=generator)
    inputs = torch.cat([base, base + 0.3 * torch.randn(500, 2, generator=generator)], dim=1)
    latent = base[:, [0, 0, 0, 1, 1, 1]] + 0.1 * torch.randn(500, 6, generator=generator)
    found = extract_modules(_two_cliques(), inputs, latent, num_modules=2)
    assert list(found) == ["louvain", "spectral", "components"]
    truth = [0, 1, 0, 1]
    for method in ("louvain", "spectral"):
        assert found[method]["neurons"].tolist() == [0, 0, 0, 1, 1, 1]
        features = found[method]["features"].tolist()
        assert adjusted_rand_score(truth, features) == 1.0
        assert normalized_mutual_info_score(truth, features) == 1.0
    # one component: every feature in module 0
    assert found["components"]["features"].tolist() == [0, 0, 0, 0]
    # methods chosen and ordered by the caller; spectral's k is capped at the neurons
    only = extract_modules(_two_cliques(), inputs, latent, num_modules=9,
                           methods=("spectral",))
    assert list(only) == ["spectral"]
    assert int(only["spectral"]["neurons"].max()) + 1 == 6


def test_extract_modules_validates():
    graph, x = _two_cliques(), torch.randn(10, 2)
    with pytest.raises(ValueError, match="methods entry must be one of"):
        extract_modules(graph, x, torch.randn(10, 6), num_modules=2, methods=("kmeans",))
    with pytest.raises(TypeError, match="methods must be a sequence of method names"):
        extract_modules(graph, x, torch.randn(10, 6), num_modules=2, methods="louvain")
    with pytest.raises(ValueError, match="num_modules must be >= 1"):
        extract_modules(graph, x, torch.randn(10, 6), num_modules=0)


def test_neuron_planted_modules_matches_numpy():
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(200, 6, generator=generator, dtype=torch.float64)
    latent = torch.cat([inputs[:, :2] @ torch.randn(2, 3, generator=generator,
                                                    dtype=torch.float64),
                        inputs[:, 3:] @ torch.randn(3, 2, generator=generator,
                                                    dtype=torch.float64)], dim=1)
    feature_module = torch.tensor([0, 0, 0, 1, 1, 1])
    got = neuron_planted_modules(inputs, latent, feature_module)
    corr = np.abs(np.corrcoef(latent.numpy().T, inputs.numpy().T)[:5, 5:])
    expected = np.stack([corr[:, :3].mean(1), corr[:, 3:].mean(1)], axis=1).argmax(1)
    assert got.tolist() == expected.tolist() == [0, 0, 0, 1, 1]


def test_neuron_planted_modules_validates():
    with pytest.raises(ValueError, match=r"feature_module must have one entry per feature "
                                         r"\(6\)"):
        neuron_planted_modules(torch.randn(20, 6), torch.randn(20, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="feature_module must be an integer tensor"):
        neuron_planted_modules(torch.randn(20, 2), torch.randn(20, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="feature_module must be a torch.Tensor"):
        neuron_planted_modules(torch.randn(20, 2), torch.randn(20, 3), [0, 1])


def test_neuron_planted_modules_with_an_unused_module_number():
    # Feature modules [0, 0, 2]: module 1 has no feature and must not win (its mean is 0/0).
    x = torch.tensor([[1., 0., 1.], [2., 1., 0.], [3., 0., 2.], [4., 2., 1.]])
    assert neuron_planted_modules(x, x[:, [1, 0]], torch.tensor([0, 0, 2])).tolist() == [0, 0]
    assert neuron_planted_modules(x, x[:, [2]], torch.tensor([0, 0, 2])).tolist() == [2]
    # Renaming the modules renames the answer and changes nothing else.
    generator = torch.Generator().manual_seed(8)
    inputs = torch.randn(100, 6, generator=generator, dtype=torch.float64)
    latent = inputs @ torch.randn(6, 4, generator=generator, dtype=torch.float64)
    dense = neuron_planted_modules(inputs, latent, torch.tensor([0, 0, 1, 1, 2, 2]))
    sparse = neuron_planted_modules(inputs, latent, torch.tensor([0, 0, 3, 3, 9, 9]))
    assert sparse.tolist() == torch.tensor([0, 3, 9])[dense].tolist()


def test_module_loadings_match_numpy():
    generator = torch.Generator().manual_seed(6)
    correlations = torch.rand(30, 8, generator=generator, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 4, (30,), generator=generator)
    labels[:4] = torch.arange(4)
    names = [f"g{i}" for i in range(8)]
    loadings, assignment, modules = module_loadings(correlations, labels, names, top=3)
    r, m = correlations.numpy(), labels.numpy()
    expected = np.stack([np.abs(r[m == k]).mean(axis=0) for k in range(4)], axis=1)
    np.testing.assert_allclose(loadings.numpy(), expected, rtol=1e-12)
    assert assignment.tolist() == expected.argmax(axis=1).tolist()
    signed = np.stack([r[m == k].mean(axis=0) for k in range(4)], axis=1)
    for k, module in enumerate(modules):
        assert module["module"] == k and module["neurons"] == int((m == k).sum())
        order = np.argsort(-expected[:, k], kind="stable")
        assert [e["feature"] for e in module["top_features"]] == [names[f] for f in order[:3]]
        for entry in module["top_features"]:
            f = names.index(entry["feature"])
            assert entry["loading"] == pytest.approx(expected[f, k])
            assert entry["mean_r"] == pytest.approx(signed[f, k])
        mine = [names[f] for f in order if expected[f].argmax() == k]
        assert module["features"] == mine
    # every feature in exactly one feature module
    assert sorted(f for module in modules for f in module["features"]) == names


def test_module_loadings_default_names_and_validation():
    result = module_loadings(torch.tensor([[0.5, -0.2]]), torch.tensor([0]))
    assert result.modules[0]["features"] == ["0", "1"]
    with pytest.raises(ValueError, match=r"feature_names must have one name per feature "
                                         r"\(column\) of correlations \(2\), got 3"):
        module_loadings(torch.zeros(1, 2), torch.tensor([0]), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"neuron_labels must have 3 entries \(one per row of "
                                         r"correlations\), got 2"):
        module_loadings(torch.zeros(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="top must be >= 1"):
        module_loadings(torch.zeros(1, 2), torch.tensor([0]), top=0)


def test_module_loadings_with_an_unused_label_number():
    # Labels [0, 0, 2]: module 1 has no neuron; it gets no column (not a NaN one that the
    # argmax would pick for every feature).
    r = torch.tensor([[0.9, -0.1, 0.2], [0.7, 0.3, -0.2], [0.0, 0.8, 0.6]])
    result = module_loadings(r, torch.tensor([0, 0, 2]), ["a", "b", "c"], top=2)
    assert not bool(torch.isnan(result.loadings).any())
    torch.testing.assert_close(result.loadings, torch.tensor([[0.8, 0.0], [0.2, 0.8],
                                                              [0.2, 0.6]]))
    assert result.assignment.tolist() == [0, 2, 2]
    assert [(m["module"], m["neurons"], m["features"]) for m in result.modules] == [
        (0, 2, ["a"]), (2, 1, ["b", "c"])]
    assert result.modules[1]["top_features"][0] == pytest.approx(
        {"feature": "b", "loading": 0.8, "mean_r": 0.8})
    # the same numbers as with the labels 0, 1
    dense = module_loadings(r, torch.tensor([0, 0, 1]), ["a", "b", "c"], top=2)
    assert torch.equal(dense.loadings, result.loadings)
    assert [m["top_features"] for m in dense.modules] == \
        [m["top_features"] for m in result.modules]


def test_module_loadings_assign_as_feature_modules():
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(80, 7, generator=generator, dtype=torch.float64)
    latent = inputs @ torch.randn(7, 9, generator=generator, dtype=torch.float64)
    for labels in (torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2]),
                   torch.tensor([4, 4, 1, 1, 7, 7, 4, 1, 7])):
        correlations = metrics.feature_correlations(inputs, latent)
        result = module_loadings(correlations, labels)
        assert torch.equal(result.assignment, metrics.feature_modules(inputs, latent, labels))
        assert torch.equal(result.loadings, metrics.feature_loadings(correlations, labels))


def test_feature_graph_weights_by_hand():
    loadings = torch.tensor([[0.9, 0.1], [0.6, 0.58], [0.05, 0.7], [0.1, 0.15]])
    graph = feature_graph(loadings, min_loading=0.2, relative_loading=0.9)
    # feature 0 loads on module 0; feature 1 on both; feature 2 on module 1; feature 3 on none
    assert graph.loads.tolist() == [[True, False], [True, True], [False, True],
                                    [False, False]]
    assert graph.num_nodes == 4
    weights = {(a, b): w for (a, b), w in zip(graph.edge_index.t().tolist(),
                                             graph.edge_weight.tolist())}
    assert weights == pytest.approx({(0, 1): 0.6, (1, 0): 0.6, (1, 2): 0.58, (2, 1): 0.58})
    # a lower relative threshold lets feature 0 load on module 1 too: 0 and 2 share it
    looser = feature_graph(loadings, min_loading=0.05, relative_loading=0.1)
    pairs = set(map(tuple, looser.edge_index.t().tolist()))
    assert (0, 2) in pairs and (2, 0) in pairs


def test_feature_graph_equals_the_dense_formula():
    # w_fg = sum_c min(member_fc, member_gc), once as the [F, F, C] broadcast it replaces
    generator = torch.Generator().manual_seed(11)
    loadings = torch.rand(40, 12, generator=generator)
    for min_loading, relative_loading in ((0.2, 0.9), (0.0, 0.0), (0.3, 0.5)):
        graph = feature_graph(loadings, min_loading, relative_loading)
        best = loadings.max(dim=1, keepdim=True).values
        loads = (loadings >= min_loading) & (loadings >= relative_loading * best)
        member = torch.where(loads, loadings, torch.zeros_like(loadings)).double()
        dense = torch.minimum(member[:, None, :], member[None, :, :]).sum(dim=2)
        dense.fill_diagonal_(0.0)
        row, col = torch.nonzero(dense > 0, as_tuple=True)
        assert torch.equal(graph.loads, loads)
        assert torch.equal(graph.edge_index, torch.stack([row, col]))
        assert torch.equal(graph.edge_weight, dense[row, col].float())
        assert graph.edge_weight.dtype == torch.float32


def test_feature_graph_validates():
    with pytest.raises(ValueError, match="min_loading must be finite and >= 0"):
        feature_graph(torch.rand(3, 2), min_loading=-0.1)
    with pytest.raises(ValueError, match="loadings must be finite"):
        feature_graph(torch.tensor([[float("nan"), 0.1]]))


# ----------------------------------------------------------------------------- layouts and masks
def _tokens(seed: int = 0):
    """Activations [B, T, D], per-token labels [B, T] and an attention mask [B, T]."""
    generator = torch.Generator().manual_seed(seed)
    activations = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (3, 5), generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    return activations, labels, mask


def test_class_mean_maps_of_tokens_equal_the_maps_of_the_real_tokens():
    activations, labels, mask = _tokens()
    keep = mask.bool()
    got = class_mean_maps(activations, labels, num_classes=4, node_dim=-1, mask=mask)
    expected = _numpy_class_means(activations[keep].numpy(), labels[keep].numpy(), 4)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert torch.isnan(got[3]).all()
    # Without a mask every token is a sample.
    unmasked = class_mean_maps(activations, labels, node_dim=-1)
    assert torch.equal(unmasked, class_mean_maps(activations.reshape(15, 4), labels.reshape(15)))


def test_class_mean_maps_of_a_conv_map_read_every_position_as_a_sample():
    generator = torch.Generator().manual_seed(1)
    activations = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 2, (2, 4, 4), generator=generator)
    rows = activations.movedim(1, -1).reshape(-1, 3)
    np.testing.assert_allclose(class_mean_maps(activations, labels).numpy(),
                               _numpy_class_means(rows.numpy(), labels.reshape(-1).numpy(), 2),
                               rtol=1e-12)


def test_subtract_global_mean_of_tokens_uses_the_real_tokens():
    activations, labels, mask = _tokens(2)
    maps = class_mean_maps(activations, labels, node_dim=-1, mask=mask)
    got = subtract_global_mean(maps, activations, node_dim=-1, mask=mask)
    real = activations[mask.bool()]
    assert torch.allclose(got, maps - real.mean(dim=0), rtol=0, atol=1e-12, equal_nan=True)
    with pytest.raises(ValueError, match="mask needs activations"):
        subtract_global_mean(maps, mask=mask)


def test_module_activity_of_tokens():
    activations, _, mask = _tokens(3)
    neuron_labels = torch.tensor([0, 1, 1, 0])
    expected = torch.stack([activations[..., [0, 3]].mean(-1),
                            activations[..., [1, 2]].mean(-1)], dim=-1)  # [B, T, 2]
    unmasked = module_activity(activations, neuron_labels, node_dim=-1)
    assert unmasked.shape == (3, 5, 2)
    assert torch.allclose(unmasked, expected, rtol=0, atol=1e-12)
    masked = module_activity(activations, neuron_labels, node_dim=-1, mask=mask)
    assert masked.shape == (int(mask.sum()), 2)  # the real tokens, in row-major order
    assert torch.allclose(masked, expected[mask.bool()], rtol=0, atol=1e-12)


def test_neuron_planted_modules_of_tokens_equal_the_real_tokens():
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(15, 3, generator=generator, dtype=torch.float64)
    activations = inputs[:, [0, 0, 2, 1]] + 0.1 * torch.randn(15, 4, generator=generator,
                                                              dtype=torch.float64)
    feature_module = torch.tensor([0, 1, 2])
    _, _, mask = _tokens()
    keep = mask.bool().reshape(-1)
    got = neuron_planted_modules(inputs, activations.reshape(3, 5, 4), feature_module,
                                 node_dim=-1, mask=mask)
    assert torch.equal(got, neuron_planted_modules(inputs[keep], activations[keep],
                                                   feature_module))
    assert got.tolist() == [0, 0, 2, 1]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a, y, m: class_mean_maps(a, y.reshape(-1), node_dim=-1),
         r"labels must have the shape of the sample axes \(3, 5\) \(the activations shape "
         r"\(3, 5, 4\) without node_dim=-1\), got shape \(15,\)"),
        (lambda a, y, m: class_mean_maps(a, y[:, :4], node_dim=-1, mask=m),
         r"labels must have the shape of the sample axes \(3, 5\).*got shape \(3, 4\)"),
        (lambda a, y, m: class_mean_maps(a, y, node_dim=-1, mask=m[:, :4]),
         r"mask must have the shape of the sample axes \(3, 5\).*got shape \(3, 4\)"),
        (lambda a, y, m: class_mean_maps(a, y, node_dim=-1, mask=torch.zeros_like(m)),
         "mask keeps no position"),
        (lambda a, y, m: class_mean_maps(a, y, node_dim=3),
         r"node_dim=3 is not a neuron axis of activations"),
        (lambda a, y, m: module_activity(a, torch.tensor([0, 1, 1, 0]), node_dim=-1,
                                         mask=m.T),
         r"mask must have the shape of the sample axes \(3, 5\).*got shape \(5, 3\)"),
        (lambda a, y, m: module_activity(a, torch.tensor([0, 1, 1]), node_dim=-1, mask=m),
         r"neuron_labels must have one entry per neuron \(4\)"),
        (lambda a, y, m: subtract_global_mean(torch.zeros(2, 4), a, node_dim=-1,
                                              mask=m.float()),
         "mask must be a boolean"),
    ],
)
def test_layouts_and_masks_are_validated(call, match):
    activations, labels, mask = _tokens()
    with pytest.raises(ValueError, match=match):
        call(activations, labels, mask)


def test_default_layout_is_unchanged():
    generator = torch.Generator().manual_seed(7)
    for dtype in (torch.float32, torch.float64):
        activations = torch.randn(40, 9, generator=generator).to(dtype)
        labels = torch.randint(0, 5, (40,), generator=generator)
        neuron_labels = torch.randint(0, 3, (9,), generator=generator)
        maps = class_mean_maps(activations, labels)
        # the same index_add_ / bincount computation as group_means, bit for bit
        assert torch.equal(maps, group_means(activations, labels))
        assert torch.equal(class_mean_maps(activations, labels, node_dim=-1), maps)
        assert torch.equal(subtract_global_mean(maps, activations),
                           maps - activations.mean(dim=0).unsqueeze(0))
        assert torch.equal(module_activity(activations, neuron_labels),
                           group_means(activations, neuron_labels, dim=1))
        # an all-true mask keeps every sample
        everything = torch.ones(40, dtype=torch.bool)
        assert torch.equal(class_mean_maps(activations, labels, mask=everything), maps)
        assert torch.equal(module_activity(activations, neuron_labels, mask=everything),
                           module_activity(activations, neuron_labels))


def test_class_map_order_is_the_order_of_the_centred_maps_of_the_classes_present():
    from gsr_pyg.graphs import grid
    from gsr_pyg.metrics import morans_i, smoothness_ratio
    from gsr_pyg.readouts import class_map_order

    torch.manual_seed(0)
    acts, labels = torch.randn(40, 16), torch.randint(0, 3, (40,))  # class 3 has no sample
    graph = grid(4, 4)
    found = class_map_order(acts, labels, graph, num_classes=4, num_permutations=10, seed=3)
    maps = class_mean_maps(acts, labels, num_classes=4)
    centred = maps - acts.mean(dim=0)
    assert torch.isnan(found.maps[3]).all() and torch.allclose(found.centred[:3], centred[:3])
    assert found.morans_i == pytest.approx(float(morans_i(centred[:3], graph).mean()))
    assert found.smoothness_ratio == smoothness_ratio(centred[:3], graph, num_permutations=10,
                                                      seed=3)


# ----------------------------------------------------------------------------- feature modules
def _split_module_latent(seed: int = 0):
    """Features of unequal modules (sizes 3, 6, 4, shuffled); neurons in five modules: two
    modules with the same signature (module 1 of the features, split between them when every
    feature joins one neuron module), one with the opposite sign, one per other module."""
    generator = torch.Generator().manual_seed(seed)
    truth = torch.tensor([0] * 3 + [1] * 6 + [2] * 4)
    order = torch.randperm(13, generator=generator)
    truth = truth[order]
    factors = torch.randn(4000, 3, generator=generator)
    inputs = factors[:, truth] + 0.7 * torch.randn(4000, 13, generator=generator)
    # neuron modules: 0 -> +module 1 (4 neurons), 1 -> +module 1 (4), 2 -> -module 1 (3),
    # 3 -> +module 0 (3), 4 -> +module 2 (3)
    carried = torch.tensor([1] * 4 + [1] * 4 + [1] * 3 + [0] * 3 + [2] * 3)
    sign = torch.tensor([1.0] * 8 + [-1.0] * 3 + [1.0] * 6)
    latent = sign * factors[:, carried] + 0.3 * torch.randn(4000, 17, generator=generator)
    neurons = torch.tensor([0] * 4 + [1] * 4 + [2] * 3 + [3] * 3 + [4] * 3)
    return inputs, latent, neurons, truth


def test_graph_feature_modules_join_modules_of_one_signature():
    inputs, latent, neurons, truth = _split_module_latent()
    correlations = metrics.feature_correlations(inputs, latent)
    found = graph_feature_modules(correlations, neurons)
    assert found.num_modules == 3
    assert adjusted_rand_index(found.assignment.tolist(), truth.tolist()) == 1.0
    assert found.silhouettes[3] == max(found.silhouettes.values())
    # neuron modules 0, 1 and 2 carry the same feature module, 2 with the opposite sign
    module_of = {int(t): int(found.assignment[torch.nonzero(truth == t)[0]]) for t in range(3)}
    assert found.neuron_modules.tolist() == [0, 1, 2, 3, 4]
    assert found.carried.tolist() == [module_of[1]] * 3 + [module_of[0], module_of[2]]
    assert found.sign.tolist() == [1, 1, -1, 1, 1]
    assert bool((found.strength > 0.5).all())
    # the signature is the mean signed r of each neuron module with each feature module
    member = torch.nn.functional.one_hot(found.assignment, 3).to(correlations.dtype)
    expected = metrics.feature_loadings(correlations, neurons, absolute=False).T @ member
    torch.testing.assert_close(found.signature, expected / member.sum(0))
    # affinity: mean cosine with the other features of each module (numpy reference)
    profiles = correlations.T.double().numpy()
    unit = profiles / np.linalg.norm(profiles, axis=1, keepdims=True)
    cosine = unit @ unit.T
    labels = found.assignment.numpy()
    for f in (0, 5, 12):
        for k in range(3):
            others = [g for g in range(13) if labels[g] == k and g != f]
            assert float(found.affinity[f, k]) == pytest.approx(cosine[f, others].mean(),
                                                                abs=1e-5)
    # one argmax per feature splits module 1 between neuron modules 0 and 1 (or 2)
    argmax = metrics.feature_modules(inputs, latent, neurons)
    assert adjusted_rand_index(argmax.tolist(), truth.tolist()) < 0.9


def test_graph_feature_modules_leave_weak_neuron_modules_without_a_module():
    inputs, latent, neurons, truth = _split_module_latent(1)
    latent = torch.cat([latent, torch.randn(4000, 3)], dim=1)  # module 5: pure noise
    neurons = torch.cat([neurons, torch.full((3,), 5)])
    found = graph_feature_modules(metrics.feature_correlations(inputs, latent), neurons)
    assert found.carried[-1] == -1 and found.sign[-1] == 0
    assert float(found.strength[-1]) < 0.2
    strict = graph_feature_modules(metrics.feature_correlations(inputs, latent), neurons,
                                   min_strength=0.99)
    assert strict.carried.tolist() == [-1] * 6


def test_graph_feature_modules_validate():
    with pytest.raises(ValueError, match="at least 2 features"):
        graph_feature_modules(torch.rand(4, 1), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="correlations"):
        graph_feature_modules(torch.tensor([[float("nan"), 0.1]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="neuron_labels"):
        graph_feature_modules(torch.rand(4, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="min_strength"):
        graph_feature_modules(torch.rand(4, 3), torch.tensor([0, 0, 1, 1]), min_strength=-1)


def test_feature_module_baselines_recover_unequal_modules():
    import networkx as nx

    inputs, _, _, truth = _split_module_latent(2)
    found = feature_module_baselines(inputs, seed=3)
    assert list(found) == list(BASELINE_METHODS)
    for method, clustering in found.items():
        assert adjusted_rand_index(clustering.labels.tolist(), truth.tolist()) == 1.0, method
        assert clustering.num_clusters == 3
    # Louvain: networkx on the |correlation| graph with the same seed
    corr = np.abs(np.corrcoef(inputs.double().numpy(), rowvar=False))
    graph = nx.Graph()
    graph.add_weighted_edges_from((i, j, corr[i, j]) for i in range(13)
                                  for j in range(i + 1, 13))
    communities = nx.community.louvain_communities(graph, weight="weight", seed=3)
    expected = np.empty(13, dtype=int)
    for module, members in enumerate(communities):
        expected[list(members)] = module
    assert adjusted_rand_index(found["louvain_corr"].labels.tolist(), expected.tolist()) == 1.0
    assert found["louvain_corr"].silhouettes == {}
    assert found["average_corr"].silhouettes[3] == max(found["average_corr"].silhouettes.values())
    with pytest.raises(ValueError, match="at least 2 samples and 3 features"):
        feature_module_baselines(torch.randn(10, 2))
    with pytest.raises(ValueError, match="inputs"):
        feature_module_baselines(torch.full((4, 3), float("inf")))
