from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gsr_pyg.models import MLP, CharTransformer, DenseAutoencoder, GaussianNoise, MNISTClassifier


def record_output(model: nn.Module, name: str) -> tuple[list[torch.Tensor], object]:
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(name).register_forward_hook(
        lambda module, args, output: seen.append(output.detach().clone()))
    return seen, handle


def images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- classifier


def test_classifier_shapes_and_flat_input():
    torch.manual_seed(0)
    model = MNISTClassifier().eval()
    x = images(3)
    logits = model(x)
    assert logits.shape == (3, 10)
    torch.testing.assert_close(model(x.reshape(3, 784)), logits)
    assert model.gsr_layer == "grid" and model.num_grid_units == 64
    assert model.grid[0].in_features == 3136 and model.grid[0].out_features == 64
    assert model.classifier.in_features == 64
    n_params = sum(p.numel() for p in model.parameters())
    # conv1 832 + conv2 51,264 + grid 200,768 + classifier 650
    assert n_params == 832 + 51264 + 200768 + 650


def test_grid_hook_sees_post_activation_before_dropout():
    torch.manual_seed(1)
    model = MNISTClassifier(dropout=0.4).train()
    x = images(4, seed=1)
    seen, handle = record_output(model, model.gsr_layer)
    model(x)
    handle.remove()
    assert len(seen) == 1 and seen[0].shape == (4, 64)
    # The hook sees the leaky ReLU of the dense layer, recomputed by hand ...
    flat = model.features(x)
    expected = F.leaky_relu(flat @ model.grid[0].weight.T + model.grid[0].bias, 0.2)
    torch.testing.assert_close(seen[0], expected)
    torch.testing.assert_close(seen[0], model.embed(x).detach())
    # ... with no dropout zeros (train mode), and negative values scaled by 0.2.
    assert bool((seen[0] != 0).all()) and bool((seen[0] < 0).any())


def test_classifier_dropout_after_grid():
    torch.manual_seed(2)
    model = MNISTClassifier(dropout=0.4)
    x = images(6, seed=2)
    model.eval()
    torch.testing.assert_close(model(x), model.classifier(model.embed(x)))
    model.train()
    torch.manual_seed(3)
    train_logits = model(x)
    assert not torch.allclose(train_logits, model.eval()(x))
    # In train mode dropout acts on the grid output and feeds the classifier.
    model.train()
    captured = {}
    handle = model.dropout.register_forward_hook(
        lambda module, args, output: captured.update(input=args[0], output=output))
    logits = model(x)
    handle.remove()
    grid, dropped = captured["input"], captured["output"]
    torch.testing.assert_close(grid, model.embed(x))
    kept = dropped != 0
    assert 0 < int(kept.sum()) < kept.numel()
    torch.testing.assert_close(dropped[kept], grid[kept] / 0.6)
    torch.testing.assert_close(logits, model.classifier(dropped))


def test_conv_head_shapes():
    torch.manual_seed(0)
    model = MNISTClassifier(conv_head=True).eval()
    x = images(5)
    assert model(x).shape == (5, 10)
    assert model.classifier.in_features == 64  # 2 x 2 x 16
    head_out = model.head(model.embed(x))
    assert head_out.shape == (5, 64)
    convs = [m for m in model.head.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 16, (3, 3)), (16, 16, (3, 3)), (16, 16, (3, 3))]
    # The head reads unit r * 8 + c as pixel (r, c) of a one-channel 8x8 image.
    seen, handle = record_output(model, "head.0")
    hot = torch.zeros(1, 64)
    hot[0, 2 * 8 + 5] = 1.0
    model.head(hot)
    handle.remove()
    assert seen[0].shape == (1, 1, 8, 8) and seen[0][0, 0, 2, 5] == 1 and seen[0].sum() == 1
    # A non-square grid: 12 x 8 -> pooled 3 x 2 x 16.
    wide = MNISTClassifier(grid_shape=(12, 8), conv_head=True)
    assert wide.classifier.in_features == 96 and wide(x).shape == (5, 10)
    assert wide.embed(x).shape == (5, 96)


@pytest.mark.parametrize("shape", [(2, 28, 28), (2, 1, 28, 27), (2, 3, 28, 28), (2, 783),
                                   (784,)])
def test_classifier_bad_input_shapes(shape):
    model = MNISTClassifier()
    with pytest.raises(ValueError, match=r"x must have shape \[batch, 1, 28, 28\] or "
                                         r"\[batch, 784\]"):
        model(torch.zeros(shape))


def test_classifier_bad_input_types_and_arguments():
    model = MNISTClassifier()
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        model.embed([[0.0] * 784])
    with pytest.raises(ValueError, match=r"at least \(4, 4\)"):
        MNISTClassifier(grid_shape=(3, 8), conv_head=True)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        MNISTClassifier(dropout=1.0)
    with pytest.raises(ValueError, match="grid_shape must be a pair"):
        MNISTClassifier(grid_shape=64)


def test_seeded_construction_is_deterministic_and_he_normal():
    def build(seed):
        torch.manual_seed(seed)
        return MNISTClassifier(conv_head=True).state_dict()

    first, second, other = build(7), build(7), build(8)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["grid.0.weight"], other["grid.0.weight"])
    # He-normal, fan-in, leaky-ReLU gain: std = sqrt(2 / (1 + a^2) / fan_in).
    weight = first["grid.0.weight"]
    expected_std = math.sqrt(2.0 / (1.0 + 0.2**2) / 3136)
    assert abs(float(weight.std()) / expected_std - 1) < 0.02
    assert abs(float(first["classifier.weight"].std()) * math.sqrt(64) - 1) < 0.15
    assert float(first["grid.0.bias"].abs().max()) == 0.0


# ----------------------------------------------------------------------------- autoencoder


def test_reconstruction_cost_model_architecture():
    model = DenseAutoencoder(784, hidden=(128, 128, 128), latent_dim=32, noise_std=0)
    linears = [(m.in_features, m.out_features) for m in model.modules()
               if isinstance(m, nn.Linear)]
    assert linears == [(784, 128), (128, 128), (128, 128), (128, 32),
                       (32, 128), (128, 128), (128, 128), (128, 784)]
    x = torch.rand(4, 784)
    assert model(x).shape == (4, 784) and model.encode(x).shape == (4, 32)
    # Linear latent: it takes negative values, which a leaky ReLU output would shrink.
    assert model.gsr_layer == "latent" and isinstance(model.latent, nn.Linear)


def test_latent_hook_sees_clean_code_before_noise():
    torch.manual_seed(4)
    model = DenseAutoencoder(20, latent_dim=100, noise_std=0.5).train()
    x = torch.randn(8, 20)
    seen, handle = record_output(model, "latent")
    torch.manual_seed(5)
    reconstruction = model(x)
    handle.remove()
    torch.testing.assert_close(seen[0], model.encode(x).detach())
    # The decoder got the code plus noise drawn after the hook: same draw, same output.
    torch.manual_seed(5)
    noisy = seen[0] + 0.5 * torch.randn(8, 100)
    torch.testing.assert_close(reconstruction, model.decode(noisy))


def test_noise_only_in_train_mode():
    torch.manual_seed(6)
    model = DenseAutoencoder(10, hidden=(16,), latent_dim=4, noise_std=0.5)
    x = torch.randn(5, 10)
    model.eval()
    clean = model(x)
    torch.testing.assert_close(model(x), clean)
    torch.testing.assert_close(clean, model.decode(model.encode(x)))
    model.train()
    assert not torch.allclose(model(x), clean)
    quiet = DenseAutoencoder(10, hidden=(16,), latent_dim=4, noise_std=0.0).train()
    torch.testing.assert_close(quiet(x), quiet.eval()(x))
    # The noise has the stated standard deviation.
    noise = GaussianNoise(0.5).train()(torch.zeros(20000, 10))
    assert abs(float(noise.std()) - 0.5) < 0.01 and abs(float(noise.mean())) < 0.01
    assert torch.equal(GaussianNoise(0.5).eval()(noise), noise)


def test_autoencoder_options_and_errors():
    model = DenseAutoencoder(6, hidden=(5, 3), latent_dim=2, output_activation="sigmoid")
    out = model(torch.randn(4, 6) * 10)
    assert bool(((out > 0) & (out < 1)).all())
    assert [m.out_features for m in model.decoder.modules() if isinstance(m, nn.Linear)] == [3, 5]
    shallow = DenseAutoencoder(6, hidden=(), latent_dim=2)
    assert shallow(torch.zeros(1, 6)).shape == (1, 6)
    with pytest.raises(ValueError, match=r"x must have shape \[batch, 6\]"):
        model(torch.zeros(4, 7))
    with pytest.raises(ValueError, match=r"x must have shape \[batch, 6\]"):
        model.encode(torch.zeros(4, 1, 6))
    with pytest.raises(ValueError, match=r"z must have shape \[batch, 2\]"):
        model.decode(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="output_activation must be"):
        DenseAutoencoder(6, output_activation="softmax")
    with pytest.raises(ValueError, match="noise_std must be finite and >= 0"):
        DenseAutoencoder(6, noise_std=-1.0)
    with pytest.raises(TypeError, match="input_dim must be an int"):
        DenseAutoencoder(6.0)


# ----------------------------------------------------------------------------- MLP


def test_mlp_named_blocks():
    torch.manual_seed(9)
    mlp = MLP([4, 8, 3], names=["hidden", "out"])
    x = torch.randn(5, 4)
    seen, handle = record_output(mlp, "hidden")
    out = mlp(x)
    handle.remove()
    linear = mlp.hidden[0]
    torch.testing.assert_close(seen[0], F.leaky_relu(linear(x), 0.2))
    torch.testing.assert_close(out, mlp.out(seen[0]))
    assert isinstance(mlp.out, nn.Linear) and out.shape == (5, 3)
    assert [name for name, _ in mlp.named_children()] == ["hidden", "out"]
    assert isinstance(MLP([4, 2], activate_last=True).layer0[1], nn.LeakyReLU)
    with pytest.raises(ValueError, match=r"one name per block \(2\), got 1"):
        MLP([4, 8, 3], names=["only"])
    with pytest.raises(ValueError, match="at least two widths"):
        MLP([4])
    with pytest.raises(ValueError, match=r"x must have shape \[batch, 4\]"):
        mlp(torch.zeros(5, 3))


def _char_model(**kwargs) -> CharTransformer:
    torch.manual_seed(0)
    return CharTransformer(vocab_size=12, context=10, d_model=16, num_heads=2, d_ff=24,
                           **kwargs).eval()


def test_char_transformer_is_causal_and_ignores_right_padding():
    model = _char_model()
    tokens = torch.tensor([[3, 4, 5, 6, 7, 8]])
    logits = model(tokens)
    changed = tokens.clone()
    changed[0, 4] = 9
    # a later token never changes the logits of earlier positions
    assert torch.equal(model(changed)[:, :4], logits[:, :4])
    assert not torch.allclose(model(changed)[:, 4:], logits[:, 4:])
    # right padding: the real positions of a padded sequence equal the unpadded sequence's
    padded = torch.tensor([[3, 4, 5, 0, 0, 0]])
    torch.testing.assert_close(model(padded)[:, :3], model(tokens[:, :3]))


def test_char_transformer_mlp_units_are_hookable_on_the_last_axis():
    model = _char_model(num_layers=3)
    assert model.gsr_layer == "blocks.2.activation"
    assert model.weight_layer == "blocks.2.linear1"
    seen = {}
    model.get_submodule(model.gsr_layer).register_forward_hook(
        lambda module, args, out: seen.update(units=out, pre=args[0]))
    model(torch.tensor([[3, 4, 5], [6, 7, 0]]))
    assert seen["units"].shape == (2, 3, 24)
    # the hooked module is the MLP's GELU: its output is gelu of linear1's output
    torch.testing.assert_close(seen["units"], F.gelu(seen["pre"]))
    assert model.get_submodule(model.weight_layer).weight.shape == (24, 16)


def test_char_transformer_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="num_heads must divide d_model"):
        CharTransformer(12, d_model=10, num_heads=4)
    with pytest.raises(ValueError, match=r"pad_id must be a token id in \[0, 12\)"):
        CharTransformer(12, pad_id=12)
    model = _char_model()
    with pytest.raises(ValueError, match=r"tokens must be token ids \[B, T\] \(int64\)"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="tokens has 11 positions; this model takes 1 to "
                                         "context=10"):
        model(torch.ones(1, 11, dtype=torch.long))
