"""The objectives of ``GraphSpectralRegularizer(objective=...)`` against the direct calls of
:mod:`gsr_pyg.objectives` on the same data (float64), with schedules, masks, state_dict
round trips (the pair generator included), graph changes, refusals and config."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from gsr_pyg import graphs
from gsr_pyg.objectives import spatial_correlation_loss, unit_distances, weight_smoothness
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.schedules import LinearWarmupWeight


def mlp(width: int = 12) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, width), nn.Tanh(), nn.Linear(width, 3)).double()


def hidden(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model[0](x)


def no_pos(data):
    """The same graph without its positions (distances become hop counts)."""
    return graphs.from_edge_index(data.edge_index, data.edge_weight, num_nodes=data.num_nodes)


def round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# --------------------------------------------------------------------------------------
# each objective equals its direct call
# --------------------------------------------------------------------------------------

def test_laplacian_is_the_default_and_unchanged():
    model, x = mlp(), torch.randn(7, 5, dtype=torch.float64)
    default = GraphSpectralRegularizer(model, {"0": graphs.grid(3, 4)}, weight=0.3)
    model(x)
    expected = default.penalty()
    default.detach()
    explicit = GraphSpectralRegularizer(model, {"0": graphs.grid(3, 4)}, weight=0.3,
                                        objective="laplacian")
    model(x)
    assert torch.equal(explicit.penalty(), expected)
    a = hidden(model, x)
    assert torch.allclose(expected, 0.3 * torch.einsum("bi,ij,bj->b", a, dense_laplacian(
        graphs.grid(3, 4)), a).mean(), rtol=1e-12)


def dense_laplacian(data) -> torch.Tensor:
    n = data.num_nodes
    adjacency = torch.zeros(n, n, dtype=torch.float64)
    weight = (data.edge_weight if data.edge_weight is not None
              else torch.ones(data.edge_index.size(1)))
    adjacency[data.edge_index[0], data.edge_index[1]] = weight.double()
    return torch.diag(adjacency.sum(1)) - adjacency


@pytest.mark.parametrize("with_pos", [True, False])
def test_spatial_correlation_equals_direct_call(with_pos):
    data = graphs.grid(3, 4) if with_pos else no_pos(graphs.grid(3, 4))
    model, x = mlp(), torch.randn(9, 5, dtype=torch.float64)
    reg = GraphSpectralRegularizer(model, {"0": data}, weight=0.5,
                                   objective="spatial_correlation")
    model(x)
    value = reg.penalty()
    a = hidden(model, x)
    # the cached distances are unit_distances(data): the same pairs, the same numbers
    assert torch.equal(value, 0.5 * spatial_correlation_loss(
        a, data, distance=unit_distances(data)))
    assert torch.allclose(value, 0.5 * spatial_correlation_loss(a, data), rtol=1e-12)
    assert value.requires_grad and 0.0 < float(value.detach()) < 0.5


def test_spatial_correlation_on_tokens_with_a_mask_and_sampled_pairs():
    torch.manual_seed(1)
    layer = nn.Linear(4, 12).double()
    model = nn.Sequential(layer)
    data = graphs.grid(3, 4)
    tokens = torch.randn(3, 6, 4, dtype=torch.float64)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 4:] = mask[2, 2:] = False
    reg = GraphSpectralRegularizer(model, {"0": data}, node_dim=-1,
                                   objective="spatial_correlation", num_pairs=20)
    model(tokens)
    value = reg.penalty(mask=mask)
    real = layer(tokens)[mask]  # [real tokens, 12]
    # the first layer's generator is seeded with 0: the same 20 pairs
    expected = spatial_correlation_loss(real, data, num_pairs=20,
                                        generator=torch.Generator().manual_seed(0),
                                        distance=unit_distances(data))
    assert torch.equal(value, expected)


@pytest.mark.parametrize("normalization", [None, "sym"])
def test_weight_smoothness_equals_direct_call_without_a_forward_pass(normalization):
    model = mlp()
    data = graphs.grid(3, 4)
    reg = GraphSpectralRegularizer(model, {"0": data}, weight=0.25,
                                   objective="weight_smoothness",
                                   normalization=normalization)
    value = reg.penalty()  # reads model[0].weight: no activations needed
    expected = 0.25 * weight_smoothness(model[0].weight, data, normalization)
    assert torch.allclose(value, expected, rtol=1e-12, atol=0.0)
    value.backward()
    assert model[0].weight.grad is not None and float(model[0].weight.grad.abs().sum()) > 0
    with torch.no_grad():  # it reads the weight as it is now
        model[0].weight.copy_(torch.ones_like(model[0].weight))
    assert torch.allclose(reg.penalty(), 0.25 * weight_smoothness(
        model[0].weight, data, normalization), rtol=1e-12, atol=0.0)
    if normalization is None:
        assert float(reg.penalty().detach()) == 0.0  # equal rows: nothing to smooth


def test_objectives_side_by_side_on_two_layers():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 6)).double()
    reg = GraphSpectralRegularizer(
        model, {"0": graphs.grid(3, 4), "2": graphs.ring(6)}, weight={"0": 1.0, "2": 2.0},
        objective={"0": "spatial_correlation", "2": "weight_smoothness"})
    x = torch.randn(8, 5, dtype=torch.float64)
    model(x)
    terms = reg.penalties()
    assert torch.allclose(terms["0"], spatial_correlation_loss(model[0](x), graphs.grid(3, 4)),
                          rtol=1e-12)
    assert torch.allclose(terms["2"], 2.0 * weight_smoothness(model[2].weight,
                                                              graphs.ring(6)), rtol=1e-12)
    assert torch.allclose(reg.penalty(), terms["0"] + terms["2"], rtol=1e-12)


# --------------------------------------------------------------------------------------
# schedules, state and graph changes
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["spatial_correlation", "weight_smoothness"])
def test_weight_schedule_scales_each_objective(objective):
    model, x = mlp(), torch.randn(6, 5, dtype=torch.float64)
    data = graphs.grid(3, 4)
    reg = GraphSpectralRegularizer(model, {"0": data}, objective=objective,
                                   weight=LinearWarmupWeight(2.0, warmup_steps=4))
    model(x)
    unweighted = reg.penalties(weighted=False)["0"]
    direct = (spatial_correlation_loss(hidden(model, x), data)
              if objective == "spatial_correlation" else weight_smoothness(model[0].weight, data))
    assert torch.allclose(unweighted, direct, rtol=1e-12)
    seen = []
    for _ in range(6):
        model(x)
        seen.append(float(reg.penalty().detach()))
        reg.step()
    expected = [min(1.0, t / 4) * 2.0 * float(direct) for t in range(6)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[0] == 0.0


def test_state_dict_round_trip_resumes_the_same_pairs():
    data = graphs.grid(4, 4)
    model, x = mlp(16), torch.randn(10, 5, dtype=torch.float64)
    reg = GraphSpectralRegularizer(model, {"0": data}, objective="spatial_correlation",
                                   num_pairs=15, weight=LinearWarmupWeight(1.0, 2))
    for _ in range(3):  # advance the step and the pair generator
        model(x)
        reg.penalty()
        reg.step()
    state = round_trip(reg.state_dict())
    assert state["step"] == 3 and "generator" in state["layers"]["0"]
    model(x)
    expected = reg.penalty()

    reg.detach()
    resumed = GraphSpectralRegularizer(model, {"0": data}, objective="spatial_correlation",
                                       num_pairs=15, weight=LinearWarmupWeight(1.0, 2))
    model(x)
    fresh = resumed.penalty()  # the first draw of a new generator: other pairs
    resumed.load_state_dict(state)
    model(x)
    assert torch.equal(resumed.penalty(), expected)
    assert not torch.equal(fresh, expected)
    assert resumed.step_count == 3


def test_set_graph_recomputes_the_distances():
    model, x = mlp(), torch.randn(9, 5, dtype=torch.float64)
    reg = GraphSpectralRegularizer(model, {"0": 12}, objective="spatial_correlation")
    model(x)
    # a width alone: no edges, no positions, no distance: the term is 0 until a graph
    empty = reg.penalty()
    assert float(empty) == 0.0 and empty.requires_grad
    for data in (graphs.ring(12), no_pos(graphs.grid(3, 4)), graphs.grid(4, 3)):
        reg.set_graph("0", data)
        model(x)
        assert torch.allclose(reg.penalty(), spatial_correlation_loss(hidden(model, x), data),
                              rtol=1e-12)


def test_weight_smoothness_follows_set_graph_and_normalization():
    model = mlp()
    reg = GraphSpectralRegularizer(model, {"0": graphs.ring(12)},
                                   objective="weight_smoothness")
    reg.set_graph("0", graphs.grid(3, 4), normalization="sym")
    expected = weight_smoothness(model[0].weight, graphs.grid(3, 4), "sym")
    assert torch.allclose(reg.penalty(), expected, rtol=1e-12)


def test_config_names_the_objective():
    model = mlp()
    reg = GraphSpectralRegularizer(
        model, {"0": graphs.grid(3, 4), "2": graphs.ring(3)},
        objective={"0": "spatial_correlation"}, num_pairs={"0": 40})
    layers = reg.config()["layers"]
    assert (layers["0"]["objective"], layers["0"]["num_pairs"]) == ("spatial_correlation", 40)
    assert (layers["2"]["objective"], layers["2"]["num_pairs"]) == ("laplacian", None)


# --------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------

REFUSED = [
    (dict(objective="topoloss"), ValueError,
     r"objective for layer '0' must be one of \('laplacian', 'spatial_correlation', "
     r"'weight_smoothness'\), got 'topoloss'"),
    (dict(objective={"fc": "weight_smoothness"}), ValueError,
     r"objective has an entry for 'fc', which is not a regularized layer"),
    (dict(objective="spatial_correlation", rayleigh=True), ValueError,
     r"layer '0' has objective='spatial_correlation', which does not use rayleigh=True"),
    (dict(objective="weight_smoothness", batch_mean_weight=0.1), ValueError,
     r"layer '0' has objective='weight_smoothness', which does not use "
     r"batch_mean_weight=0\.1"),
    (dict(objective="spatial_correlation", normalization="sym"), ValueError,
     r"which does not use normalization='sym'"),
    (dict(num_pairs=10), ValueError,
     r"layer '0' has objective='laplacian', which does not use num_pairs=10"),
    (dict(objective="spatial_correlation", num_pairs=0), ValueError,
     r"num_pairs for layer '0' must be >= 1, got 0"),
]


@pytest.mark.parametrize(("options", "error", "message"), REFUSED)
def test_refused_options(options, error, message):
    model = mlp()
    with pytest.raises(error, match=message):
        GraphSpectralRegularizer(model, {"0": graphs.grid(3, 4)}, **options)
    # a refused setting leaves no hook on the model
    assert not model[0]._forward_hooks


def test_weight_smoothness_refuses_a_module_without_unit_rows():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Embedding(10, 4))
    with pytest.raises(ValueError, match=r"objective 'weight_smoothness' for layer '1' reads "
                                         r"the layer's incoming weights.*\(ReLU\) has no "
                                         r"weight"):
        GraphSpectralRegularizer(model, {"1": graphs.ring(4)}, objective="weight_smoothness")
    with pytest.raises(ValueError, match=r"the module's weight tensor of shape \(10, 4\).* has "
                                         r"10 rows \(units\) but the graph has 4 nodes"):
        GraphSpectralRegularizer(model, {"2": graphs.ring(4)}, objective="weight_smoothness")


def test_spatial_correlation_refuses_small_graphs_and_single_samples():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 4))
    with pytest.raises(ValueError, match=r"needs a graph of at least 3 units .* got 2"):
        GraphSpectralRegularizer(model, {"0": graphs.line(2)}, objective="spatial_correlation")
    reg = GraphSpectralRegularizer(model, {"1": graphs.ring(4)}, objective="spatial_correlation")
    model(torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"needs at least 2, got 1 \(after the mask\)"):
        reg.penalty()


# --------------------------------------------------------------------------------------
# a transformer MLP trained with each objective
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["laplacian", "spatial_correlation", "weight_smoothness"])
def test_transformer_mlp_lowers_each_objective(objective):
    # the 32 hidden units of a transformer MLP on a 4x8 sheet; tokens are samples
    torch.manual_seed(0)
    block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    reg = GraphSpectralRegularizer(block, {"linear1": graphs.grid(4, 8)}, node_dim=-1,
                                   objective=objective)
    tokens = torch.randn(4, 10, 16)
    mask = torch.ones(4, 10, dtype=torch.bool)
    mask[:, 7:] = False
    optimizer = torch.optim.Adam(block.parameters(), lr=0.01)

    def measured() -> float:
        with torch.no_grad():
            block(tokens)
            value = float(reg.penalty(mask=mask))
        reg.step()
        return value

    before = measured()
    for _ in range(15):
        optimizer.zero_grad()
        block(tokens)
        reg.penalty(mask=mask).backward()
        optimizer.step()
        reg.step()
    after = measured()
    assert after < 0.8 * before
