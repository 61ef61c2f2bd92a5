from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gsr_pyg import graphs
from gsr_pyg.hookable import (
    ACTIVATION_ATTRIBUTES,
    FunctionModule,
    expose_activation,
    expose_activations,
)
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.spectral import laplacian


class HandMadeMLP(nn.Module):
    """An MLP block that keeps its activation as a function, as some Hugging Face blocks do."""

    def __init__(self, width: int = 6, hidden: int = 12, act_fn=F.gelu) -> None:
        super().__init__()
        self.fc_in = nn.Linear(width, hidden)
        self.act_fn = act_fn
        self.fc_out = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc_out(self.act_fn(self.fc_in(x)))


def _outputs(model: nn.Module, x: torch.Tensor, *, train: bool, grad: bool) -> torch.Tensor:
    model.train(train)
    torch.manual_seed(1)  # the same dropout masks for both models
    with torch.set_grad_enabled(grad):
        return model(x).detach()


def _assert_same_outputs(original: nn.Module, exposed: nn.Module, x: torch.Tensor) -> None:
    for train in (True, False):
        for grad in (True, False):
            assert torch.equal(_outputs(original, x, train=train, grad=grad),
                               _outputs(exposed, x, train=train, grad=grad)), (train, grad)


@pytest.mark.parametrize("activation, twin, flag", [("relu", nn.ReLU, 1), ("gelu", nn.GELU, 2)])
@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_layer_outputs_are_bitwise_unchanged(activation, twin, flag, batch_first):
    torch.manual_seed(0)
    original = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, activation=activation,
                                          batch_first=batch_first)
    exposed = copy.deepcopy(original)
    assert expose_activations(exposed) == ["activation"]
    assert type(exposed.activation) is twin
    assert exposed.activation_relu_or_gelu == flag  # the inference fast path stays available
    _assert_same_outputs(original, exposed, torch.randn(3, 5, 16))


def test_hooked_activation_fires_in_eval_mode_and_sees_the_mlp_hidden_units():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, activation="gelu", batch_first=True).eval()
    reference = copy.deepcopy(layer)
    (name,) = expose_activations(layer)
    seen = {}
    layer.get_submodule("linear1").register_forward_hook(
        lambda m, i, o: seen.__setitem__("pre", o))
    layer.get_submodule(name).register_forward_hook(lambda m, i, o: seen.__setitem__("post", o))
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        fast = reference(x)        # no hooks: PyTorch's fused inference path
        out = layer(x)             # hooks attached: PyTorch takes the module path
    assert seen["post"].shape == (2, 7, 32)  # [B, T, d_ff]: the units on the last axis
    assert torch.equal(seen["post"], F.gelu(seen["pre"]))
    torch.testing.assert_close(out, fast, rtol=1e-5, atol=1e-5)


def test_encoder_stack_gets_one_named_module_per_layer():
    torch.manual_seed(0)
    original = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 2, 32, activation="gelu", batch_first=True), 3,
        enable_nested_tensor=False)
    exposed = copy.deepcopy(original)
    names = expose_activations(exposed)
    assert names == ["layers.0.activation", "layers.1.activation", "layers.2.activation"]
    modules = [exposed.get_submodule(n) for n in names]
    assert len({id(m) for m in modules}) == 3  # separate modules: separate hooks
    _assert_same_outputs(original, exposed, torch.randn(2, 4, 16))


def test_hand_made_mlp_with_a_function_attribute():
    torch.manual_seed(0)
    original = nn.Sequential(HandMadeMLP(), nn.ReLU(), HandMadeMLP())
    exposed = copy.deepcopy(original)
    assert expose_activations(exposed) == ["0.act_fn", "2.act_fn"]
    assert isinstance(exposed[0].act_fn, nn.GELU) and exposed[0].act_fn.approximate == "none"
    _assert_same_outputs(original, exposed, torch.randn(5, 6))
    # the module is registered: it shows in named_modules, so it can be hooked by name
    assert "0.act_fn" in dict(exposed.named_modules())


@pytest.mark.parametrize("function", [
    functools.partial(F.gelu, approximate="tanh"),
    lambda t: t * torch.sigmoid(1.702 * t),
    F.softplus,
])
def test_callables_without_a_twin_are_wrapped_unchanged(function):
    torch.manual_seed(0)
    original = HandMadeMLP(act_fn=function)
    exposed = copy.deepcopy(original)
    expose_activations(exposed)
    assert isinstance(exposed.act_fn, FunctionModule)
    assert list(exposed.act_fn.parameters()) == []
    _assert_same_outputs(original, exposed, torch.randn(4, 6))


@pytest.mark.parametrize("function", [F.relu, torch.relu, F.gelu, F.silu, F.tanh, torch.tanh,
                                      F.sigmoid, torch.sigmoid])
def test_module_twins_compute_exactly_the_function(function):
    holder = nn.Module()
    holder.activation = function
    module = expose_activation(holder)
    assert not isinstance(module, FunctionModule)
    x = torch.randn(1000, dtype=torch.float64) * 4
    assert torch.equal(module(x), function(x))


def test_exposing_twice_is_harmless_and_state_dicts_are_interchangeable():
    torch.manual_seed(0)
    original = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    exposed = copy.deepcopy(original)
    first = expose_activations(exposed)
    module = exposed.activation
    assert expose_activations(exposed) == first and exposed.activation is module
    assert expose_activation(exposed) is module
    assert list(exposed.state_dict()) == list(original.state_dict())
    fresh = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    fresh.load_state_dict(exposed.state_dict())


def test_names_select_the_attributes():
    mlp = HandMadeMLP()
    mlp.gate = F.silu
    assert expose_activations(mlp, names="gate") == ["gate"]
    assert isinstance(mlp.gate, nn.SiLU) and not isinstance(mlp.act_fn, nn.Module)
    assert "act_fn" in ACTIVATION_ATTRIBUTES


def test_refuses_a_model_without_an_activation_attribute():
    with pytest.raises(ValueError, match=r"found no activation in Sequential: no submodule "
                                         r"holds an attribute named any of .*'linear1'"):
        expose_activations(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))


def test_refuses_an_activation_that_is_not_callable():
    model = nn.Sequential(HandMadeMLP())
    model[0].act_fn = "gelu"
    with pytest.raises(TypeError, match=r"0.act_fn must be a callable activation .* got 'gelu'"):
        expose_activations(model)
    model[0].act_fn = None
    with pytest.raises(TypeError, match="got None"):
        expose_activation(model[0], "act_fn")


def test_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"HandMadeMLP holds no attribute 'act_f' "
                                         r"\(did you mean 'act_fn'\?\)"):
        expose_activation(HandMadeMLP(), "act_f")
    with pytest.raises(ValueError, match="holds no attribute 'forward'"):
        expose_activation(HandMadeMLP(), "forward")  # a method is not a stored activation
    with pytest.raises(TypeError, match="module must be a torch.nn.Module, got"):
        expose_activation(F.relu)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        expose_activations("model")
    with pytest.raises(ValueError, match="names must be a non-empty sequence"):
        expose_activations(HandMadeMLP(), names=())
    with pytest.raises(TypeError, match="function must be callable"):
        FunctionModule(3)


def test_eval_without_hooks_keeps_the_fused_inference_path(monkeypatch):
    calls = []
    fused = torch._transformer_encoder_layer_fwd

    def spy(*args):
        calls.append(args[7])  # use_gelu
        return fused(*args)

    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", spy)
    layer = nn.TransformerEncoderLayer(16, 4, 32, activation="gelu", batch_first=True).eval()
    expose_activations(layer)
    with torch.no_grad():
        layer(torch.randn(2, 3, 16))
    assert calls == [True]  # fused, and still told the activation is GELU
    handle = layer.activation.register_forward_hook(lambda m, i, o: None)
    with torch.no_grad():
        layer(torch.randn(2, 3, 16))
    assert calls == [True]  # a hook sends PyTorch down the module path
    handle.remove()


def tiny_hf(kind: str, dtype: torch.dtype = torch.float32):
    """A tiny randomly initialised Hugging Face BERT or GPT-2 (no files), in eval mode, in
    ``dtype``."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "bert":
        config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=36,
                                         max_position_embeddings=32)
        return transformers.BertModel(config).eval().to(dtype)
    config = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_inner=36,
                                     n_positions=32, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2Model(config).eval().to(dtype)


@pytest.mark.parametrize("kind, layer, pre", [
    ("bert", "encoder.layer.1.intermediate.intermediate_act_fn",
     "encoder.layer.1.intermediate.dense"),
    ("gpt2", "h.1.mlp.act", "h.1.mlp.c_fc"),
])
def test_hugging_face_blocks_expose_their_mlp_units_unchanged(kind, layer, pre):
    model = tiny_hf(kind)
    ids = torch.randint(1, 50, (3, 7))
    attention_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 6 + [0]])
    before = model(input_ids=ids, attention_mask=attention_mask).last_hidden_state
    found = expose_activations(model)
    # one entry per block's activation, never the function inside an activation module
    assert layer in found and not any(f.startswith(f"{layer}.") for f in found)
    after = model(input_ids=ids, attention_mask=attention_mask).last_hidden_state
    assert torch.equal(before, after)
    seen = {}
    model.get_submodule(layer).register_forward_hook(
        lambda module, args, out: seen.update(units=out))
    model.get_submodule(pre).register_forward_hook(
        lambda module, args, out: seen.update(pre=out))
    model(input_ids=ids, attention_mask=attention_mask)
    assert seen["units"].shape == (3, 7, 36)  # [B, T, d_ff]: the units on the last axis
    torch.testing.assert_close(seen["units"], model.get_submodule(layer)(seen["pre"]))
    # a penalty over the real tokens of the block's MLP units: the hand computation
    grid = graphs.grid(6, 6)
    reg = GraphSpectralRegularizer(model, {layer: grid}, node_dim=-1, weight=1.0)
    model(input_ids=ids, attention_mask=attention_mask)
    real = seen["units"][attention_mask.bool()]
    L = laplacian(grid, dense=True)
    expected = torch.einsum("sn,nm,sm->s", real, L, real).mean()
    torch.testing.assert_close(reg.penalty(mask=attention_mask), expected)


def test_weight_smoothness_refuses_gpt2_conv1d_whose_rows_are_not_the_units():
    model = tiny_hf("gpt2")
    with pytest.raises(ValueError, match="Hugging Face Conv1D, whose weight is "
                                         r"\[in_features, out_features\]"):
        GraphSpectralRegularizer(model, {"h.0.mlp.c_fc": graphs.grid(4, 4)},
                                 objective="weight_smoothness", weight=1.0)
