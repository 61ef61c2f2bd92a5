import gc

import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn

from gsr_pyg import graphs
from gsr_pyg.regularizer import (
    ConstantWeight,
    GraphSpectralRegularizer,
    LambdaWeight,
    LinearWarmupWeight,
    StaircaseWeight,
)


def dense_laplacian(g, normalization=None) -> np.ndarray:
    G = graphs.to_networkx(g)
    nodes = list(range(g.num_nodes))
    if normalization == "sym":
        return nx.normalized_laplacian_matrix(G, nodelist=nodes).toarray()
    return nx.laplacian_matrix(G, nodelist=nodes).toarray().astype(float)


class MLP(nn.Module):
    def __init__(self, width=16, hidden=12):
        super().__init__()
        self.fc1 = nn.Linear(10, width)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(width, hidden)
        self.out = nn.Linear(hidden, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.fc2(self.act(self.fc1(x)))))


class SmallConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.head = nn.Linear(6 * 5 * 5, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


def hand_penalty(a: torch.Tensor, g, normalization=None) -> float:
    L = dense_laplacian(g, normalization)
    a = a.detach().double().numpy()
    return float(np.mean(np.einsum("bi,ij,bj->b", a, L, a)))


def test_hooked_penalty_equals_hand_computed_on_mlp():
    torch.manual_seed(0)
    model = MLP()
    g = graphs.ring(16)
    reg = GraphSpectralRegularizer(model, {"fc1": g}, weight=0.3)
    x = torch.randn(7, 10)
    model(x)
    expected = 0.3 * hand_penalty(model.fc1(x), g)
    assert reg.penalty().item() == pytest.approx(expected, rel=1e-5)


def test_two_layers_and_sym_normalization():
    torch.manual_seed(1)
    model = MLP()
    g1, g2 = graphs.grid(4, 4), graphs.line(12)
    reg = GraphSpectralRegularizer(
        model, {"fc1": g1, model.fc2: g2}, weight={"fc1": 0.5, "fc2": 2.0},
        normalization={"fc2": "sym"},
    )
    x = torch.randn(5, 10)
    model(x)
    h1 = model.fc1(x)
    h2 = model.fc2(model.act(h1))
    per_layer = reg.penalties()
    assert set(per_layer) == {"fc1", "fc2"}
    assert per_layer["fc1"].item() == pytest.approx(0.5 * hand_penalty(h1, g1), rel=1e-5)
    assert per_layer["fc2"].item() == pytest.approx(2.0 * hand_penalty(h2, g2, "sym"), rel=1e-5)
    assert reg.penalty().item() == pytest.approx(sum(v.item() for v in per_layer.values()),
                                                 rel=1e-6)


def test_conv_channels_are_nodes_and_positions_are_samples():
    torch.manual_seed(2)
    model = SmallConv()
    g = graphs.ring(6)
    reg = GraphSpectralRegularizer(model, {"conv": g}, weight=1.0)
    x = torch.randn(3, 1, 5, 5)
    model(x)
    fmap = model.conv(x)  # [3, 6, 5, 5]
    samples = fmap.permute(0, 2, 3, 1).reshape(-1, 6)
    assert reg.penalty().item() == pytest.approx(hand_penalty(samples, g), rel=1e-5)


def test_gradient_is_two_L_a_over_B():
    torch.manual_seed(3)
    lin = nn.Linear(4, 8)
    model = nn.Sequential(lin)
    g = graphs.ring(8)
    reg = GraphSpectralRegularizer(model, {"0": g}, weight=1.0)
    x = torch.randn(6, 4)
    out = model(x)
    out.retain_grad()
    reg.penalty().backward()
    L = torch.tensor(dense_laplacian(g), dtype=torch.float32)
    assert torch.allclose(out.grad, 2 * out.detach() @ L / 6, atol=1e-5)


def test_rayleigh_and_batch_mean_terms():
    torch.manual_seed(4)
    model = MLP(width=8)
    g = graphs.ring(8)
    reg = GraphSpectralRegularizer(model, {"fc1": g}, weight=1.0, rayleigh=True,
                                   batch_mean_weight=0.25)
    x = torch.randn(9, 10)
    model(x)
    a = model.fc1(x).detach().double()
    L = torch.tensor(dense_laplacian(g))
    rayleigh = (torch.einsum("bi,ij,bj->b", a, L, a) / (a * a).sum(1)).mean()
    beta = 0.25 * (a.mean(0) ** 2).sum()
    assert reg.penalty().item() == pytest.approx(float(rayleigh + beta), rel=1e-5)


def test_detach_removes_every_hook_and_context_manager():
    model = MLP()
    with GraphSpectralRegularizer(model, {"fc1": graphs.ring(16), "fc2": graphs.ring(12)}) as reg:
        assert len(model.fc1._forward_hooks) == 1 and len(model.fc2._forward_hooks) == 1
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    model(torch.randn(2, 10))
    with pytest.raises(RuntimeError, match="no activations captured"):
        reg.penalty()
    reg.attach()
    model(torch.randn(2, 10))
    assert reg.penalty().item() > 0


def test_schedules_values():
    assert ConstantWeight(0.1)(12345) == 0.1
    stair = StaircaseWeight(1.0, decay=0.99, every=100)
    assert stair(99) == 1.0 and stair(100) == pytest.approx(0.99)
    assert stair(24000) == pytest.approx(0.0896, abs=5e-5)  # 0.99 ** 240
    warm = LinearWarmupWeight(2.0, warmup_steps=10)
    assert [warm(s) for s in (0, 5, 10, 50)] == [0.0, 1.0, 2.0, 2.0]
    assert LambdaWeight(lambda s: s / 10)(7) == pytest.approx(0.7)


def test_step_advances_schedule_and_requires_fresh_forward():
    model = MLP()
    reg = GraphSpectralRegularizer(model, {"fc1": graphs.ring(16)},
                                   weight=StaircaseWeight(1.0, decay=0.5, every=2))
    x = torch.randn(4, 10)
    weights = []
    for _ in range(5):
        model(x)
        weights.append(reg.weight("fc1"))
        reg.penalty()
        reg.step()
    assert weights == [1.0, 1.0, 0.5, 0.5, 0.25]
    with pytest.raises(RuntimeError, match="forward pass"):
        reg.penalty()


def test_state_dict_round_trip():
    torch.manual_seed(5)
    model = MLP()
    reg = GraphSpectralRegularizer(model, {"fc1": graphs.ring(16)},
                                   weight=StaircaseWeight(1.0, decay=0.5, every=1))
    for _ in range(3):
        reg.step()
    reg.set_graph("fc1", graphs.grid(4, 4), normalization="sym")
    state = reg.state_dict()
    other = GraphSpectralRegularizer(MLP(), {"fc1": graphs.ring(16)},
                                     weight=StaircaseWeight(1.0, decay=0.5, every=1))
    other.load_state_dict(state)
    assert other.step_count == 3 and other.weight("fc1") == 0.125
    assert torch.equal(other.graph("fc1").edge_index, graphs.grid(4, 4).edge_index)
    x = torch.randn(3, 10)
    reg.model(x)
    other.model.load_state_dict(reg.model.state_dict())
    other.model(x)
    assert other.penalty().item() == pytest.approx(reg.penalty().item(), rel=1e-6)


def test_no_memory_growth_over_many_steps():
    model = MLP(width=16)
    reg = GraphSpectralRegularizer(model, {"fc1": graphs.ring(16)}, weight=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def count_tensors():
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    def train(n):
        for _ in range(n):
            loss = model(torch.randn(8, 10)).pow(2).mean() + reg.penalty()
            loss.backward()
            opt.step()
            opt.zero_grad()
            reg.step()

    train(20)
    before = count_tensors()
    train(300)
    assert count_tensors() - before <= 5
    assert all(reg.activations(n) is None for n in reg.layers)


# ----------------------------------------------------------------------------- bad input
def test_graph_size_differs_from_layer():
    model = MLP(width=16)
    reg = GraphSpectralRegularizer(model, {"fc1": graphs.grid(7, 7)})
    with pytest.raises(ValueError, match=r"'fc1' has 49 nodes but the layer outputs 16 features"):
        model(torch.randn(2, 10))
    del reg


def test_unknown_layer_lists_closest_names():
    with pytest.raises(ValueError, match=r"no layer named 'fc_1'.*'fc1'"):
        GraphSpectralRegularizer(MLP(), {"fc_1": graphs.ring(16)})


def test_nan_activations_name_the_layer():
    model = MLP()
    reg = GraphSpectralRegularizer(model, {"fc1": graphs.ring(16)})
    x = torch.randn(3, 10)
    x[0, 0] = float("nan")
    model(x)
    with pytest.raises(ValueError, match=r"layer 'fc1'.*NaN/Inf"):
        reg.penalty()


def test_inf_activations_name_the_layer():
    model = MLP()
    reg = GraphSpectralRegularizer(model, {"fc1": graphs.ring(16)})
    x = torch.full((3, 10), float("inf"))
    model(x)
    with pytest.raises(ValueError, match=r"layer 'fc1'"):
        reg.penalty()


def test_rw_normalization_refused():
    with pytest.raises(ValueError, match="random-walk Laplacian is not symmetric"):
        GraphSpectralRegularizer(MLP(), {"fc1": graphs.ring(16)}, normalization="rw")


def test_non_tensor_layer_output_refused():
    class TupleOut(nn.Module):
        def forward(self, x):
            return x, x

    model = nn.Sequential(TupleOut())
    GraphSpectralRegularizer(model, {"0": graphs.ring(4)})
    with pytest.raises(ValueError, match=r"layer '0' must output a tensor"):
        model(torch.randn(2, 4))


def test_one_d_output_refused():
    class Flat(nn.Module):
        def forward(self, x):
            return x.sum(1)

    model = nn.Sequential(Flat())
    GraphSpectralRegularizer(model, {"0": graphs.ring(4)})
    with pytest.raises(ValueError, match=r"must output \[B, N\]"):
        model(torch.randn(2, 4))


def test_negative_weight_refused():
    with pytest.raises(ValueError, match="weight for layer 'fc1' must be finite and >= 0"):
        GraphSpectralRegularizer(MLP(), {"fc1": graphs.ring(16)}, weight=-1.0)


def test_set_graph_with_wrong_size_refused():
    reg = GraphSpectralRegularizer(MLP(), {"fc1": graphs.ring(16)})
    with pytest.raises(ValueError, match="new graph for layer 'fc1' has 9 nodes"):
        reg.set_graph("fc1", graphs.grid(3, 3))


def test_invalid_graph_refused_with_layer_name():
    g = graphs.ring(16)
    g.edge_weight = g.edge_weight.clone()
    g.edge_weight[0] = -1.0
    with pytest.raises(ValueError, match="graph for layer 'fc1'"):
        GraphSpectralRegularizer(MLP(), {"fc1": g})
