import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from gsr_pyg import graphs
from gsr_pyg.capture import ActivationCapture, samples_by_neurons
from gsr_pyg.regularizer import GraphSpectralRegularizer


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(5, 4), act=nn.Tanh(), out=nn.Linear(4, 2)))


class Wrapper(nn.Module):
    """Names its inner model "module", as DistributedDataParallel does."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.module = inner

    def forward(self, x):
        return self.module(x)


def ring_penalty(a: torch.Tensor) -> float:
    """mean_b a_b^T L a_b for the ring of 4, by the edge sum."""
    a = a.detach().double()
    diffs = [(a[:, i] - a[:, (i + 1) % 4]) ** 2 for i in range(4)]
    return float(sum(diffs).mean())


def test_samples_by_neurons_puts_neurons_last():
    fmap = torch.arange(2 * 3 * 2 * 2.0).reshape(2, 3, 2, 2)
    s = samples_by_neurons(fmap)
    assert s.shape == (8, 3)
    assert torch.equal(s[:, 1], fmap[:, 1].reshape(-1))
    assert torch.equal(samples_by_neurons(fmap, node_dim=2), fmap.movedim(2, -1).reshape(-1, 2))


def test_capture_holds_the_latest_output_with_its_autograd_graph():
    model = mlp()
    x = torch.randn(3, 5)
    with ActivationCapture(model, ["fc1", model.out]) as cap:
        assert cap.layers == ["fc1", "out"]
        assert cap.output("fc1") is None
        model(x)
        assert torch.equal(cap.samples("fc1"), model.fc1(x))
        assert torch.equal(cap.output(model.out), model(x))
        cap.samples("fc1").sum().backward()
        assert model.fc1.bias.grad is not None
        assert torch.allclose(model.fc1.bias.grad, torch.full((4,), 3.0))
        cap.clear()
        assert cap.output("fc1") is None
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_detach_and_attach():
    model = mlp()
    cap = ActivationCapture(model, ["fc1"])
    model(torch.randn(2, 5))
    cap.detach()
    assert not cap.attached and cap.output("fc1") is None
    model(torch.randn(2, 5))
    with pytest.raises(RuntimeError, match=r"no activations captured for layer 'fc1'.*detached"):
        cap.samples("fc1")
    cap.attach().attach()  # attaching twice registers one hook
    assert len(model.fc1._forward_hooks) == 1
    model(torch.randn(2, 5))
    assert cap.samples("fc1").shape == (2, 4)


def test_layer_names_resolve_modules_and_the_ddp_prefix():
    inner = mlp()
    model = Wrapper(inner)
    cap = ActivationCapture(model, ["fc1", inner.out])
    assert cap.layers == ["module.fc1", "module.out"]
    assert cap.layer_name("fc1") == "module.fc1"
    assert cap.layer_name("module.fc1") == "module.fc1"
    assert cap.layer_name(inner.fc1) == "module.fc1"
    model(torch.randn(2, 5))
    assert cap.samples("out").shape == (2, 2)
    with pytest.raises(ValueError, match=r"layer 'act' is not captured; captured layers: "
                                         r"\['module\.fc1', 'module\.out'\]"):
        cap.layer_name("act")
    with pytest.raises(ValueError, match=r"layer module Tanh is not captured"):
        cap.layer_name(inner.act)
    with pytest.raises(TypeError, match=r"layer keys must be names or modules, got 0"):
        cap.layer_name(0)


@pytest.mark.parametrize("layers, error, message", [
    (["fc_1"], ValueError, r"model has no layer named 'fc_1'; closest names: 'fc1'"),
    (["decoder"], ValueError, r"model has no layer named 'decoder'; layers: 'fc1', 'act', "
                              r"'out'"),
    ([nn.Linear(2, 2)], ValueError, r"module Linear is not a submodule of the model"),
    ([3], TypeError, r"layer keys must be names or modules, got 3"),
    ("fc1", TypeError, r"layers must be a list of layer names or modules, got 'fc1'"),
    ([], ValueError, r"layers must name at least one layer, got none"),
    (["fc1", "fc1"], ValueError, r"layer 'fc1' is given twice"),
])
def test_bad_layers_refused(layers, error, message):
    model = mlp()
    with pytest.raises(error, match=message):
        ActivationCapture(model, layers)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_outputs_that_are_not_activations_refused():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    model = nn.Sequential(Pair())
    ActivationCapture(model, ["0"])
    with pytest.raises(ValueError, match=r"layer '0' must output a tensor \[B, N\] or "
                                         r"\[B, C, \.\.\.\] to be captured, got a tuple"):
        model(torch.randn(2, 3))
    flat = nn.Sequential(nn.Flatten(0))
    ActivationCapture(flat, ["0"])
    with pytest.raises(ValueError, match=r"layer '0' must output \[B, N\] or \[B, C, \.\.\.\], "
                                         r"got tensor of shape \(6,\)"):
        flat(torch.randn(2, 3))


# ------------------------------------------------------------------ copies of the model
def test_a_deepcopy_does_not_overwrite_the_originals_activations():
    model = mlp()
    cap = ActivationCapture(model, ["fc1"])
    ema = copy.deepcopy(model)
    x, other = torch.randn(3, 5), torch.randn(3, 5)
    model(x)
    with torch.no_grad():
        ema(other)
    assert torch.equal(cap.output("fc1"), model.fc1(x))
    assert cap.output("fc1").requires_grad
    # the copy's hook is inert: a capture built on the copy reads the copy
    assert len(ema.fc1._forward_hooks) == 1
    ema_cap = ActivationCapture(ema, ["fc1"])
    ema(other)
    assert torch.equal(ema_cap.output("fc1"), ema.fc1(other))
    assert torch.equal(cap.output("fc1"), model.fc1(x))


def test_an_ema_copy_does_not_feed_the_penalty():
    model = mlp()
    reg = GraphSpectralRegularizer(model, {"fc1": graphs.ring(4)}, weight=1.0)
    x = torch.randn(6, 5)
    model(x)  # the training forward pass
    ema = copy.deepcopy(model)  # taken after a forward pass: captured tensors exist
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(3.0)
        ema(torch.randn(6, 5))
    penalty = reg.penalty()
    assert penalty.requires_grad
    assert penalty.item() == pytest.approx(ring_penalty(model.fc1(x)), rel=1e-6)


def test_a_shallow_copy_sharing_the_hooks_does_not_capture():
    # nn.DataParallel replicas and copy.copy share the module's hook dictionary
    model = mlp()
    cap = ActivationCapture(model, ["fc1"])
    twin = copy.copy(model.fc1)
    assert twin._forward_hooks is model.fc1._forward_hooks
    twin(torch.randn(2, 5))
    assert cap.output("fc1") is None
    model(torch.randn(2, 5))
    assert cap.output("fc1").shape == (2, 4)


def test_a_model_with_a_regularizer_attached_can_be_saved_whole(tmp_path):
    model = mlp()
    reg = GraphSpectralRegularizer(model, {"fc1": graphs.ring(4)})
    x = torch.randn(4, 5)
    model(x)  # activations with an autograd graph are held while saving
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    assert torch.equal(loaded(x), model(x))
    model(x)
    expected = ring_penalty(model.fc1(x))
    with torch.no_grad():
        loaded(torch.randn(4, 5) * 10)
    assert reg.penalty().item() == pytest.approx(expected, rel=1e-6)
    # the loaded model captures nothing until a capture is built on it
    cap = ActivationCapture(loaded, ["fc1"])
    loaded(x)
    assert np.allclose(cap.samples("fc1").detach().numpy(), model.fc1(x).detach().numpy())


def test_a_capture_itself_is_not_copied():
    model = mlp()
    cap = ActivationCapture(model, ["fc1"])
    reg = GraphSpectralRegularizer(model, {"out": graphs.line(2)})
    for holder in (cap, reg):
        with pytest.raises(TypeError, match=r"an ActivationCapture cannot be copied or pickled"):
            copy.deepcopy(holder)
    assert len(model.fc1._forward_hooks) == 1 and len(model.out._forward_hooks) == 1
