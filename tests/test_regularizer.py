import gc

import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import Data

from gsr_pyg import graphs
from gsr_pyg.capture import ActivationCapture
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.schedules import StaircaseWeight


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
    model(torch.randn(2, 10))
    message = r"'fc1' has 49 nodes but the layer outputs 16 features \(shape \(2, 16\)\)"
    with pytest.raises(ValueError, match=message):
        reg.penalty()
    with pytest.raises(ValueError, match=message):
        reg.samples("fc1")


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


# ----------------------------------------------------------------------------- capture, accessors
def test_capture_and_public_accessors():
    torch.manual_seed(6)
    model = SmallConv()
    reg = GraphSpectralRegularizer(model, {model.conv: graphs.ring(6)}, normalization="sym")
    assert isinstance(reg.capture, ActivationCapture) and reg.capture.layers == ["conv"]
    assert reg.layer_name(model.conv) == "conv" and reg.layers == ["conv"]
    assert reg.normalization("conv") == "sym"
    assert reg.operator("conv").normalization == "sym"
    x = torch.randn(2, 1, 5, 5)
    model(x)
    expected = model.conv(x).permute(0, 2, 3, 1).reshape(-1, 6)
    assert torch.equal(reg.samples("conv"), expected)
    assert reg.samples(model.conv).requires_grad
    assert reg.activations("conv").shape == (2, 6, 5, 5)
    reg.step()
    with pytest.raises(RuntimeError, match=r"no activations captured for layer 'conv' since the "
                                           r"last step\(\): .* before calling samples\(\)"):
        reg.samples("conv")
    with pytest.raises(ValueError, match=r"layer 'head' is not regularized; regularized layers: "
                                         r"\['conv'\]"):
        reg.normalization("head")


# ----------------------------------------------------------------------------- batch-mean term
def constant_fc1(model: MLP, values) -> torch.Tensor:
    """Make fc1 output ``values`` for every sample; return an input batch."""
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.copy_(torch.tensor(values, dtype=torch.float32))
    return torch.randn(5, 10)


@pytest.mark.parametrize("weight, expected", [(0.0, 7.5), (0.5, 13.5), (1.0, 19.5)])
def test_batch_mean_term_has_its_own_weight(weight, expected):
    # a = (1, 2, 3, 4) for every sample on the ring of 4: a^T L a = 1 + 1 + 1 + 9 = 12,
    # sum_j mean_b(a_bj)^2 = 1 + 4 + 9 + 16 = 30; the penalty is weight * 12 + 0.25 * 30
    model = MLP(width=4)
    reg = GraphSpectralRegularizer(model, {"fc1": graphs.ring(4)}, weight=weight,
                                   batch_mean_weight=0.25)
    model(constant_fc1(model, [1.0, 2.0, 3.0, 4.0]))
    assert reg.penalty().item() == expected
    assert reg.penalties(weighted=False)["fc1"].item() == 19.5
    assert reg.penalty().requires_grad


# ----------------------------------------------------------------------------- state
def test_state_dict_round_trip_of_a_graph_without_edge_weight(tmp_path):
    torch.manual_seed(7)
    bare = graphs.ring(16)
    bare = Data(edge_index=bare.edge_index, num_nodes=16)  # unit weights, no edge_weight
    model = MLP()
    reg = GraphSpectralRegularizer(model, {"fc1": 16}, weight=StaircaseWeight(1.0, 0.5, 1))
    reg.set_graph("fc1", bare)
    reg.step()
    path = tmp_path / "reg.pt"
    torch.save(reg.state_dict(), path)
    other = GraphSpectralRegularizer(MLP(), {"fc1": 16}, weight=StaircaseWeight(1.0, 0.5, 1))
    other.load_state_dict(torch.load(path, weights_only=True))
    assert other.step_count == 1 and other.weight("fc1") == 0.5
    assert other.graph("fc1").edge_weight is None
    assert torch.equal(other.graph("fc1").edge_index, bare.edge_index)
    other.model.load_state_dict(model.state_dict())
    x = torch.randn(3, 10)
    model(x)
    other.model(x)
    assert other.penalty().item() == pytest.approx(reg.penalty().item(), rel=1e-6)
    assert reg.penalty().item() == pytest.approx(0.5 * hand_penalty(model.fc1(x), bare),
                                                 rel=1e-5)


def test_trainer_checkpoints_and_resumes_a_graph_without_edge_weight(tmp_path):
    from gsr_pyg.training import GSRTrainer

    def trainer():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 6))
        ring = Data(edge_index=graphs.ring(8).edge_index, num_nodes=8)
        reg = GraphSpectralRegularizer(model, {"1": ring}, weight=1e-2)
        return GSRTrainer(model, reg, torch.optim.SGD(model.parameters(), lr=1e-2),
                          nn.functional.mse_loss, run_dir=tmp_path / "run", max_steps=4,
                          checkpoint_every=2, smoothness_permutations=0, verbose=False)

    batches = [(x, x) for x in torch.randn(4, 5, 6)]
    trainer().fit(batches)
    resumed = trainer()
    # the run is complete: fit only reads the checkpoint back (a NaN batch would be refused)
    resumed.fit([(x * float("nan"), x) for x, _ in batches])
    assert resumed.reg.step_count == 4
    assert resumed.reg.graph("1").edge_weight is None


# ----------------------------------------------------------------------------- per-layer options
def test_per_layer_options_accept_module_keys():
    model = MLP()
    reg = GraphSpectralRegularizer(
        model, {"fc1": graphs.ring(16), "fc2": graphs.ring(12)},
        weight={model.fc1: 1e-3, "fc2": 2.0}, normalization={model.fc2: "sym"},
        rayleigh={model.fc1: True}, batch_mean_weight={model.fc2: 0.5})
    assert reg.weights() == {"fc1": 1e-3, "fc2": 2.0}
    assert reg.normalization("fc1") is None and reg.normalization("fc2") == "sym"
    x = torch.randn(5, 10)
    model(x)
    h1 = model.fc1(x).detach().double()
    h2 = model.fc2(model.act(model.fc1(x))).detach().double()
    L1 = torch.tensor(dense_laplacian(graphs.ring(16)))
    rayleigh = (torch.einsum("bi,ij,bj->b", h1, L1, h1) / (h1 * h1).sum(1)).mean()
    beta = 0.5 * (h2.mean(0) ** 2).sum()
    per_layer = reg.penalties()
    assert per_layer["fc1"].item() == pytest.approx(1e-3 * float(rayleigh), rel=1e-5)
    assert per_layer["fc2"].item() == pytest.approx(
        2.0 * hand_penalty(h2, graphs.ring(12), "sym") + float(beta), rel=1e-5)


def test_per_layer_options_follow_the_ddp_prefix():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = MLP()

    wrapped = Wrapper()
    reg = GraphSpectralRegularizer(wrapped, {"fc1": graphs.ring(16)}, weight={"fc1": 0.1})
    assert reg.layers == ["module.fc1"] and reg.weight("fc1") == 0.1


@pytest.mark.parametrize("options, error, message", [
    ({"weight": {"fc_1": 1e-3}}, ValueError,
     r"weight has an entry for 'fc_1', which is not a regularized layer; closest: 'fc1'"),
    ({"weight": {"out": 1e-3, "fc1": 1.0}}, ValueError,
     r"weight has an entry for 'out', which is not a regularized layer; regularized layers: "
     r"\['fc1'\]"),
    ({"weight": {}}, ValueError,
     r"weight has no entry for layers \['fc1'\]: a mapping must give every regularized layer"),
    ({"weight": {"fc1": "1e-3"}}, TypeError,
     r"weight for layer 'fc1' must be a non-negative number, a WeightSchedule or a callable"),
    ({"weight": True}, TypeError, r"weight for layer 'fc1' must be a non-negative number"),
    ({"rayleigh": "no"}, TypeError, r"rayleigh for layer 'fc1' must be True or False, got 'no'"),
    ({"rayleigh": {"fc1": 1}}, TypeError, r"rayleigh for layer 'fc1' must be True or False"),
    ({"normalization": {"fc2 ": "sym"}}, ValueError,
     r"normalization has an entry for 'fc2 ', which is not a regularized layer; closest"),
    ({"normalization": {"fc1": 1}}, TypeError, r"normalization for layer 'fc1' must be None "
                                               r"or 'sym', got 1"),
    ({"batch_mean_weight": {"fc1": "0.1"}}, TypeError,
     r"batch_mean_weight for layer 'fc1' must be a number, got '0\.1'"),
    ({"batch_mean_weight": {3: 0.1}}, TypeError,
     r"batch_mean_weight keys must be layer names or modules, got 3"),
    ({"check_finite": "yes"}, TypeError, r"check_finite must be True or False, got 'yes'"),
])
def test_bad_per_layer_options_refused(options, error, message):
    model = MLP()
    with pytest.raises(error, match=message):
        GraphSpectralRegularizer(model, {"fc1": graphs.ring(16)}, **options)
    # a refused setting leaves no hook behind
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_a_layer_given_twice_in_an_option_is_refused():
    model = MLP()
    with pytest.raises(ValueError, match=r"weight gives layer 'fc1' twice"):
        GraphSpectralRegularizer(model, {"fc1": graphs.ring(16)},
                                 weight={"fc1": 1.0, model.fc1: 2.0})
    with pytest.raises(ValueError, match=r"layer 'fc1' is given twice"):
        GraphSpectralRegularizer(model, {"fc1": graphs.ring(16), model.fc1: graphs.ring(16)})


def test_a_missing_layer_in_a_weight_mapping_is_an_error_not_the_default():
    model = MLP()
    with pytest.raises(ValueError, match=r"weight has no entry for layers \['fc2'\]"):
        GraphSpectralRegularizer(model, {"fc1": graphs.ring(16), "fc2": graphs.ring(12)},
                                 weight={"fc1": 1e-3})
    # the other options' defaults turn them off, so a mapping may leave layers out
    reg = GraphSpectralRegularizer(model, {"fc1": graphs.ring(16), "fc2": graphs.ring(12)},
                                   rayleigh={"fc2": True})
    assert reg.weights() == {"fc1": 1.0, "fc2": 1.0}
