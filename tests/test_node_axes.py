"""Neurons on any axis (``node_dim``) and padding masks, through capture, penalty, learned
graphs, trainer and metrics: every result equals the same computation on the flattened real
positions ``[S_real, N]``."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch_geometric.utils import to_dense_adj

from gsr_pyg import graphs, metrics
from gsr_pyg.capture import ActivationCapture, masked_samples
from gsr_pyg.learn import CoactivationGraph, CoactivationStats
from gsr_pyg.refresh import GraphRefresh
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.training import GSRTrainer, LearningSchedule


def dense_laplacian(g, normalization=None, dtype=torch.float64):
    adj = to_dense_adj(g.edge_index, edge_attr=g.edge_weight, max_num_nodes=g.num_nodes)[0]
    adj = adj.to(dtype)
    degree = adj.sum(dim=1)
    lap = torch.diag(degree) - adj
    if normalization == "sym":
        scale = degree.pow(-0.5).masked_fill(degree == 0, 0.0)
        lap = scale[:, None] * lap * scale[None, :]
    return lap


def form(rows, g, normalization=None):
    """Per-row a^T L a, by hand, in float64."""
    rows = rows.double()
    return ((rows @ dense_laplacian(g, normalization)) * rows).sum(dim=1)


def token_model(width=6, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 3))


def padding_mask(lengths, length):
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]


# ---------------------------------------------------------------------- capture


def test_capture_reads_the_last_axis_and_keeps_real_rows_only():
    model = token_model()
    x = torch.randn(2, 5, 3)
    mask = padding_mask([5, 3], 5)
    with ActivationCapture(model, ["1"], node_dim={"1": -1}) as cap:
        model(x)
        out = cap.output("1")
        assert cap.node_dim("1") == -1
        assert torch.equal(cap.samples("1"), out.reshape(10, 6))
        assert torch.equal(cap.samples("1", mask=mask), out[mask])
        # an attention_mask of integers means the same as the boolean mask
        assert torch.equal(cap.samples("1", mask=mask.long()), out[mask])


def test_masked_samples_of_a_channels_first_map_follow_the_sample_axes():
    x = torch.randn(2, 3, 4, 5)  # [B, C, H, W]: the channels are the neurons
    mask = torch.rand(2, 4, 5) > 0.5
    mask[0, 0, 0] = True
    expected = x.permute(0, 2, 3, 1)[mask]
    assert torch.equal(masked_samples(x, 1, mask), expected)


# ---------------------------------------------------------------------- penalty


@pytest.mark.parametrize("normalization", [None, "sym"])
@pytest.mark.parametrize("rayleigh", [False, True])
def test_tokens_penalty_equals_the_flattened_form_with_and_without_mask(normalization,
                                                                        rayleigh):
    model = token_model().double()
    g = graphs.ring(6)
    reg = GraphSpectralRegularizer(model, {"1": g}, weight=0.3, node_dim=-1,
                                   normalization=normalization, rayleigh=rayleigh,
                                   batch_mean_weight=0.2)
    x = torch.randn(3, 7, 3, dtype=torch.float64)
    mask = padding_mask([7, 2, 5], 7)
    model(x)
    tokens = reg.activations("1").detach()

    def by_hand(rows):
        energy = form(rows, g, normalization)
        if rayleigh:
            energy = energy / (rows.pow(2).sum(dim=1) + 1e-12)
        return 0.3 * energy.mean() + 0.2 * rows.mean(dim=0).pow(2).sum()

    torch.testing.assert_close(reg.penalty().detach(), by_hand(tokens.reshape(-1, 6)))
    torch.testing.assert_close(reg.penalty(mask=mask).detach(), by_hand(tokens[mask]))
    assert reg.samples("1", mask=mask).shape == (14, 6)
    # padded positions get no gradient
    reg.activations("1").retain_grad()
    reg.penalty(mask=mask).backward()
    grad = reg.activations("1").grad
    assert bool((grad[~mask] == 0).all()) and bool((grad[mask] != 0).any())
    assert reg.config()["layers"]["1"]["node_dim"] == -1


def test_mask_of_a_dense_layer_is_over_the_batch():
    model = token_model().double()
    reg = GraphSpectralRegularizer(model, {"1": graphs.ring(6)}, weight=1.0)
    model(torch.randn(4, 3, dtype=torch.float64))
    a = reg.activations("1").detach()
    keep = torch.tensor([True, False, True, True])
    torch.testing.assert_close(reg.penalty(mask=keep).detach(),
                               form(a[keep], graphs.ring(6)).mean())


def test_mask_of_a_conv_map_is_over_batch_and_positions():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))
    reg = GraphSpectralRegularizer(model, {"0": graphs.ring(4)}, weight=1.0)
    model(torch.randn(2, 1, 3, 5))
    a = reg.activations("0").detach()
    keep = torch.rand(2, 3, 5) > 0.3
    keep[0, 0, 0] = True
    expected = form(a.permute(0, 2, 3, 1)[keep], graphs.ring(4)).mean()
    torch.testing.assert_close(reg.penalty(mask=keep).detach().double(), expected)


def test_same_size_on_two_axes_is_refused_unless_node_dim_is_given():
    model = token_model(width=6)
    x = torch.randn(2, 6, 3)  # fc output [2, 6, 6]: T == D == N
    reg = GraphSpectralRegularizer(model, {"1": graphs.ring(6)})
    model(x)
    with pytest.raises(ValueError, match=r"outputs shape \(2, 6, 6\), which has the graph's 6 "
                                         r"nodes on axes \[1, 2\]: pass node_dim"):
        reg.penalty()
    reg.detach()
    for node_dim, rows in ((-1, lambda a: a.reshape(-1, 6)),
                           (1, lambda a: a.transpose(1, 2).reshape(-1, 6))):
        reg = GraphSpectralRegularizer(model, {"1": graphs.ring(6)}, node_dim=node_dim)
        model(x)
        a = reg.activations("1").detach()
        torch.testing.assert_close(reg.penalty().detach().double(),
                                   form(rows(a), graphs.ring(6)).mean())
        reg.detach()


def test_transformer_mlp_layer_with_node_dim():
    torch.manual_seed(0)
    m = nn.TransformerEncoderLayer(64, 4, 256, batch_first=True)
    grid = graphs.grid(16, 16)
    reg = GraphSpectralRegularizer(m, {"linear1": grid}, weight=1.0, node_dim=-1)
    x = torch.randn(3, 10, 64)
    mask = padding_mask([10, 4, 7], 10)
    m(x, src_key_padding_mask=~mask)
    hidden = reg.activations("linear1").detach()
    assert hidden.shape == (3, 10, 256)
    torch.testing.assert_close(reg.penalty().detach().double(),
                               form(hidden.reshape(-1, 256), grid).mean(), rtol=1e-5, atol=0)
    torch.testing.assert_close(reg.penalty(mask=mask).detach().double(),
                               form(hidden[mask], grid).mean(), rtol=1e-5, atol=0)
    reg.detach()


def test_transformer_mlp_layer_without_node_dim_never_regularizes_tokens():
    torch.manual_seed(0)
    m = nn.TransformerEncoderLayer(64, 4, 256, batch_first=True)
    reg = GraphSpectralRegularizer(m, {"linear1": graphs.grid(16, 16)})
    m(torch.randn(32, 10, 64))
    with pytest.raises(ValueError, match=r"has 256 nodes but the layer outputs 10 features "
                                         r".*pass node_dim=-1"):
        reg.penalty()
    m(torch.randn(2, 256, 64))  # 256 tokens of 256 hidden units: which axis is ambiguous
    with pytest.raises(ValueError, match=r"outputs shape \(2, 256, 256\).*pass node_dim"):
        reg.penalty()
    reg.detach()


def test_default_node_dim_keeps_axis_one_where_only_it_matches():
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1))  # [B, C, L]: C on axis 1
    reg = GraphSpectralRegularizer(model, {"0": graphs.ring(4)}, weight=1.0)
    model(torch.randn(3, 2, 7))
    a = reg.activations("0").detach()
    torch.testing.assert_close(reg.penalty().detach().double(),
                               form(a.transpose(1, 2).reshape(-1, 4), graphs.ring(4)).mean())
    assert reg.config()["layers"]["0"]["node_dim"] == 1


def test_wrong_mask_shapes_are_refused_naming_the_layer():
    model = token_model()
    reg = GraphSpectralRegularizer(model, {"1": graphs.ring(6)}, node_dim=-1)
    model(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"mask for layer '1' must have the shape of the "
                                         r"sample axes \(2, 5\).*got shape \(2,\)"):
        reg.penalty(mask=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask for layer '1' must have the shape"):
        reg.samples("1", mask=torch.ones(5, 2, dtype=torch.bool))


# ---------------------------------------------------------------------- learned graphs


def test_learned_graph_over_tokens_equals_the_graph_of_the_real_tokens():
    model = token_model(width=8)
    reg = GraphSpectralRegularizer(model, {"1": 8}, weight=0.1, node_dim=-1)
    learner = CoactivationGraph(k=3)
    refresh = GraphRefresh(reg, {"1": learner}, stop="never")
    refresh.reset()
    x = torch.randn(4, 9, 3)
    mask = padding_mask([9, 3, 6, 1], 9)
    model(x)
    real = reg.activations("1").detach()[mask]
    event = refresh.refresh(mask=mask)["1"]
    expected = learner.from_activations(real)
    assert event.installed
    assert torch.equal(reg.graph("1").edge_index, expected.edge_index)
    torch.testing.assert_close(reg.graph("1").edge_weight, expected.edge_weight)
    # unmasked, the padded tokens change the graph
    padded = learner.from_activations(reg.activations("1").detach().reshape(-1, 8))
    assert not torch.equal(padded.edge_index, expected.edge_index)


def test_statistics_see_the_real_tokens_only():
    model = token_model(width=8)
    reg = GraphSpectralRegularizer(model, {"1": 8}, weight=0.1, node_dim=-1)
    refresh = GraphRefresh(reg, {"1": CoactivationGraph(k=3, features="stats")}, stop="never")
    expected = CoactivationStats(8)
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(3, 6, 3, generator=gen)
        mask = padding_mask([6, seed + 1, 2], 6)
        model(x)
        refresh.observe(mask=mask)
        expected.update(reg.activations("1").detach()[mask])
        reg.step()
    stats = refresh.stats_state_dict()["1"]
    for key, value in expected.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(stats[key], value)
        else:
            assert stats[key] == value


class _Padded(Dataset):
    """Sequences [T, 3] of random lengths, with their padding mask."""

    def __init__(self, n=8, length=6):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, length, 3, generator=gen)
        lengths = torch.randint(1, length + 1, (n,), generator=gen)
        self.mask = torch.arange(length)[None, :] < lengths[:, None]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.x[i], self.mask[i]


def test_trainer_mask_fn_drives_penalty_refresh_and_smoothness():
    model = token_model(width=8)
    start = copy.deepcopy(model)
    reg = GraphSpectralRegularizer(model, {"1": 8}, weight=0.5, node_dim=-1)
    learner = CoactivationGraph(k=3)
    schedule = LearningSchedule(warmup_steps=0, refresh_every=1, max_learning_steps=1,
                                after_stop_steps=0, stop="never")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = GSRTrainer(model, reg, opt, nn.functional.mse_loss, schedule=schedule,
                         learn={"1": learner}, log_every=1, smoothness_permutations=5,
                         verbose=False, mask_fn=lambda batch: batch[2])
    data = _Padded()
    history = trainer.fit(DataLoader(data, batch_size=4, shuffle=False))
    x, mask = data.x[:4], data.mask[:4]
    real = start[:2](x).detach()[mask]  # the first batch's real tokens, before any update
    graph = learner.from_activations(real)
    step, snapshot = history.snapshots[0]
    assert step == 0 and torch.equal(snapshot.edge_index, graph.edge_index)
    row = history.metrics[0]["1"]
    assert row["penalty"] == pytest.approx(0.5 * float(form(real, graph, "sym").mean()),
                                           rel=1e-5)
    assert row["smoothness_ratio"] == pytest.approx(
        metrics.smoothness_ratio(real, graph, num_permutations=5, seed=0), rel=1e-6)


# ---------------------------------------------------------------------- metrics


def test_metrics_with_node_dim_and_mask_equal_the_flattened_computation():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 6, generator=gen, dtype=torch.float64)  # [B, T, D]
    mask = padding_mask([5, 2, 4], 5)
    g = graphs.ring(6)
    flat, real = x.reshape(-1, 6), x[mask]
    for fn in (metrics.morans_i, metrics.gearys_c, metrics.dirichlet_energy):
        torch.testing.assert_close(fn(x, g, node_dim=-1), fn(flat, g).reshape(3, 5))
        torch.testing.assert_close(fn(x, g, node_dim=-1, mask=mask), fn(real, g))
    channels_first = x.transpose(1, 2)  # [B, D, T]: the default node_dim=1
    torch.testing.assert_close(metrics.morans_i(channels_first, g, mask=mask),
                               metrics.morans_i(real, g))
    assert metrics.smoothness_ratio(x, g, node_dim=-1, mask=mask) == pytest.approx(
        metrics.smoothness_ratio(real, g), rel=1e-12)
    assert metrics.smoothness_ratio(x, g, node_dim=-1) == pytest.approx(
        metrics.smoothness_ratio(flat, g), rel=1e-12)
    inputs = torch.randn(15, 2, generator=gen, dtype=torch.float64)  # one row per token
    torch.testing.assert_close(
        metrics.feature_correlations(inputs, x, node_dim=-1, mask=mask),
        metrics.feature_correlations(inputs[mask.reshape(-1)], real))


def test_metrics_refuse_a_wrong_mask_or_axis():
    x = torch.randn(2, 5, 6)
    with pytest.raises(ValueError, match=r"mask must have the shape of the sample axes "
                                         r"\(2, 5\)"):
        metrics.morans_i(x, graphs.ring(6), node_dim=-1, mask=torch.ones(2, 6, dtype=bool))
    with pytest.raises(ValueError, match=r"x has 5 features in dimension 1 but the graph has "
                                         r"6 nodes"):
        metrics.smoothness_ratio(x, graphs.ring(6))
    with pytest.raises(ValueError, match=r"node_dim=3 is not a neuron axis"):
        metrics.gearys_c(x, graphs.ring(6), node_dim=3)
