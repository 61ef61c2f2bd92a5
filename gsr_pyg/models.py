"""Reference architectures of the graph spectral regularization experiments.

Each model names the layer the penalty acts on in its ``gsr_layer`` attribute. That layer is
a submodule whose *output* is exactly the activations the penalty sees, so a forward hook
registered with ``model.get_submodule(model.gsr_layer).register_forward_hook(...)`` receives
them:

* :class:`MNISTClassifier`: ``"grid"``, the 64 leaky-ReLU units of the dense layer, taken
  before dropout, numbered row-major on an 8x8 grid;
* :class:`DenseAutoencoder`: ``"latent"``, the linear latent code, taken before the
  training-time Gaussian noise;
* :class:`CharTransformer`: ``"blocks.<last>.activation"``, the hidden units of the last
  block's MLP, ``[B, T, d_ff]`` with the units on the last axis (``node_dim=-1``).

Weights of the MNIST models are He-normal (fan-in, gain for the leaky ReLU that follows, gain 1
for layers without an activation) and biases zero (the transformer keeps PyTorch's
initialisation), so ``torch.manual_seed(s)`` before construction
gives the same weights every time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._validation import check_positive, describe

__all__ = ["CharTransformer", "DenseAutoencoder", "GaussianNoise", "MLP", "MNISTClassifier"]


def _he_normal_(layer: nn.Linear | nn.Conv2d, negative_slope: float | None) -> None:
    """He-normal weights for a layer followed by a leaky ReLU (``None``: no activation)."""
    if negative_slope is None:
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="linear")
    else:
        nn.init.kaiming_normal_(layer.weight, a=negative_slope, mode="fan_in",
                                nonlinearity="leaky_relu")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _check_slope(negative_slope) -> float:
    return check_positive(negative_slope, "negative_slope", allow_zero=True)


def _check_dim(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {describe(value)}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_features(x, name: str, features: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {describe(x)}")
    if x.dim() != 2 or x.shape[1] != features:
        raise ValueError(f"{name} must have shape [batch, {features}], got {describe(x)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {describe(x)}")
    return x


class MLP(nn.Sequential):
    r"""A stack of linear layers with leaky ReLUs between them, each block named.

    ``sizes = [d_0, d_1, ..., d_k]`` gives ``k`` blocks; block ``i`` maps ``d_i -> d_{i+1}``
    and is ``nn.Sequential(nn.Linear, nn.LeakyReLU)`` when activated, a bare ``nn.Linear``
    otherwise. Every block but the last is activated; the last too when ``activate_last``.
    A forward hook on a block therefore sees its post-activation output.

    Args:
        sizes: layer widths, at least two.
        negative_slope: slope of the leaky ReLU for negative inputs (default ``0.2``).
        names: one name per block (default ``"layer0"``, ``"layer1"``, ...).
        activate_last: put a leaky ReLU after the last block too (default ``False``).

    Example:
        >>> mlp = MLP([4, 8, 2], names=["hidden", "out"])
        >>> mlp(torch.zeros(3, 4)).shape
        torch.Size([3, 2])
        >>> type(mlp.hidden[1]).__name__
        'LeakyReLU'
    """

    def __init__(self, sizes: Sequence[int], negative_slope: float = 0.2,
                 names: Sequence[str] | None = None, activate_last: bool = False) -> None:
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least two widths, got {describe(sizes)}")
        sizes = [_check_dim(s, f"sizes[{i}]") for i, s in enumerate(sizes)]
        negative_slope = _check_slope(negative_slope)
        n_blocks = len(sizes) - 1
        if names is None:
            names = [f"layer{i}" for i in range(n_blocks)]
        names = list(names)
        if len(names) != n_blocks:
            raise ValueError(f"names must give one name per block ({n_blocks}), "
                             f"got {len(names)}: {describe(names)}")
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"names must be distinct non-empty strings, got {describe(names)}")
        super().__init__()
        self.sizes = tuple(sizes)
        for i, name in enumerate(names):
            linear = nn.Linear(sizes[i], sizes[i + 1])
            activated = i < n_blocks - 1 or activate_last
            _he_normal_(linear, negative_slope if activated else None)
            block = nn.Sequential(linear, nn.LeakyReLU(negative_slope)) if activated else linear
            self.add_module(name, block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, "x", self.sizes[0])
        return super().forward(x)


class GaussianNoise(nn.Module):
    r"""Add :math:`\mathcal{N}(0, \sigma^2)` noise in training mode; identity in eval mode."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = check_positive(std, "noise_std", allow_zero=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + self.std * torch.randn_like(x)
        return x

    def extra_repr(self) -> str:
        return f"std={self.std}"


class MNISTClassifier(nn.Module):
    r"""The reference MNIST CNN whose dense layer is the GSR layer.

    ``conv 5x5x32 (pad 2) -> lrelu -> maxpool 2 -> conv 5x5x64 (pad 2) -> lrelu -> maxpool 2
    -> flatten (3136) -> grid: dense h*w -> lrelu -> dropout -> classifier``

    The submodule ``grid`` (``nn.Sequential(nn.Linear(3136, h*w), nn.LeakyReLU)``) outputs
    the post-activation units, **before dropout**: unit ``r * w + c`` is grid cell ``(r, c)``
    (row-major), matching the grid graphs of :mod:`gsr_pyg.graphs`.

    With ``conv_head=True`` the classifier looks at the grid as an image: the ``h*w`` units
    (after the same dropout) are reshaped to ``[B, 1, h, w]`` -> conv 3x3x16 (pad 1), lrelu,
    maxpool 2 -> conv 3x3x16 (pad 1), lrelu, maxpool 2 -> conv 3x3x16 (pad 1), lrelu ->
    flatten (``(h//4) * (w//4) * 16``, 64 for 8x8) -> dense 10. This head lives in ``head``;
    for the dense path ``head`` is the identity. Either way ``classifier`` is the last
    ``nn.Linear``.

    Args:
        grid_shape: ``(h, w)`` of the GSR layer (default ``(8, 8)``, 64 units); ``h`` and
            ``w`` at least 4 with ``conv_head``.
        conv_head: classify with the convolutional head on the grid (default ``False``).
        dropout: dropout probability after the grid (default ``0.4``).
        negative_slope: slope of every leaky ReLU (default ``0.2``).

    Input: ``[B, 1, 28, 28]`` or flattened ``[B, 784]``, floating point. Output: logits
    ``[B, 10]``.

    Example:
        >>> model = MNISTClassifier()
        >>> model(torch.zeros(2, 1, 28, 28)).shape, model.embed(torch.zeros(2, 784)).shape
        (torch.Size([2, 10]), torch.Size([2, 64]))
    """

    gsr_layer = "grid"
    num_classes = 10

    def __init__(self, grid_shape: tuple[int, int] = (8, 8), conv_head: bool = False,
                 dropout: float = 0.4, negative_slope: float = 0.2) -> None:
        super().__init__()
        if (not isinstance(grid_shape, (tuple, list)) or len(grid_shape) != 2):
            raise ValueError(f"grid_shape must be a pair (height, width), "
                             f"got {describe(grid_shape)}")
        height = _check_dim(grid_shape[0], "grid_shape[0]")
        width = _check_dim(grid_shape[1], "grid_shape[1]")
        if conv_head and (height < 4 or width < 4):
            raise ValueError(f"conv_head=True pools the grid twice by 2, so grid_shape must be "
                             f"at least (4, 4), got {describe(tuple(grid_shape))}")
        dropout = check_positive(dropout, "dropout", allow_zero=True)
        if dropout >= 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        slope = _check_slope(negative_slope)

        self.grid_shape = (height, width)
        self.conv_head = bool(conv_head)
        units = height * width

        conv1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)
        conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.features = nn.Sequential(
            conv1, nn.LeakyReLU(slope), nn.MaxPool2d(2),
            conv2, nn.LeakyReLU(slope), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        grid_linear = nn.Linear(64 * 7 * 7, units)
        self.grid = nn.Sequential(grid_linear, nn.LeakyReLU(slope))
        self.dropout = nn.Dropout(dropout)
        activated = [conv1, conv2, grid_linear]

        if self.conv_head:
            head_convs = [nn.Conv2d(1 if i == 0 else 16, 16, kernel_size=3, padding=1)
                          for i in range(3)]
            self.head = nn.Sequential(
                nn.Unflatten(1, (1, height, width)),
                head_convs[0], nn.LeakyReLU(slope), nn.MaxPool2d(2),
                head_convs[1], nn.LeakyReLU(slope), nn.MaxPool2d(2),
                head_convs[2], nn.LeakyReLU(slope),
                nn.Flatten(),
            )
            activated += head_convs
            head_out = (height // 4) * (width // 4) * 16
        else:
            self.head = nn.Identity()
            head_out = units
        self.classifier = nn.Linear(head_out, self.num_classes)

        for layer in activated:
            _he_normal_(layer, slope)
        _he_normal_(self.classifier, None)

    @property
    def num_grid_units(self) -> int:
        return self.grid_shape[0] * self.grid_shape[1]

    def _check_input(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {describe(x)}")
        if x.dim() == 2 and x.shape[1] == 28 * 28:
            x = x.view(-1, 1, 28, 28)
        elif not (x.dim() == 4 and tuple(x.shape[1:]) == (1, 28, 28)):
            raise ValueError(f"x must have shape [batch, 1, 28, 28] or [batch, 784], "
                             f"got {describe(x)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor (images in [0, 1]), "
                             f"got {describe(x)}")
        return x

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The grid activations ``[B, h*w]``: what a hook on ``grid`` sees.

        Nothing before the grid depends on train/eval mode and dropout comes after it, so
        the result is the same in both modes. Gradients flow; wrap the call in
        ``torch.no_grad()`` for inference.
        """
        return self.grid(self.features(self._check_input(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.embed(x)
        return self.classifier(self.head(self.dropout(grid)))

    def extra_repr(self) -> str:
        return f"grid_shape={self.grid_shape}, conv_head={self.conv_head}"


class DenseAutoencoder(nn.Module):
    r"""A dense autoencoder whose linear latent layer is the GSR layer.

    ``x -> encoder (input_dim -> hidden[0] -> ... -> hidden[-1], each a leaky ReLU)
    -> latent (linear) -> noise -> decoder (latent_dim -> hidden[-1] -> ... -> hidden[0],
    leaky ReLUs) -> output (linear to input_dim) -> output_activation``

    The submodule ``latent`` outputs the clean code; ``noise`` adds
    :math:`\mathcal{N}(0, \text{noise\_std}^2)` to it in training mode only, so a hook on
    ``latent`` sees the code before noise and the decoder learns to denoise.

    Reference settings: the learned-graph model (single-cell data) is the default,
    ``hidden=(128, 128, 128), latent_dim=100, noise_std=0.5``; the reconstruction-cost model
    on MNIST is ``DenseAutoencoder(784, (128, 128, 128), latent_dim=32, noise_std=0)``.

    Args:
        input_dim: number of input features.
        hidden: widths of the encoder's hidden layers; the decoder mirrors them.
        latent_dim: width of the latent layer.
        noise_std: standard deviation of the training-time noise on the latent (``0``: none).
        negative_slope: slope of every leaky ReLU (default ``0.2``).
        output_activation: ``None`` (linear output, default), ``"sigmoid"``, ``"tanh"``,
            ``"relu"``, or an ``nn.Module``.

    Input: ``[B, input_dim]`` floating point. ``forward`` returns the reconstruction of the
    same shape; ``encode`` the latent ``[B, latent_dim]``.

    Example:
        >>> model = DenseAutoencoder(20, hidden=(16,), latent_dim=4)
        >>> model.encode(torch.zeros(3, 20)).shape, model(torch.zeros(3, 20)).shape
        (torch.Size([3, 4]), torch.Size([3, 20]))
    """

    gsr_layer = "latent"
    _OUTPUT_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}

    def __init__(self, input_dim: int, hidden: Sequence[int] = (128, 128, 128),
                 latent_dim: int = 100, noise_std: float = 0.5, negative_slope: float = 0.2,
                 output_activation: str | nn.Module | None = None) -> None:
        super().__init__()
        self.input_dim = _check_dim(input_dim, "input_dim")
        self.latent_dim = _check_dim(latent_dim, "latent_dim")
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise TypeError(f"hidden must be a sequence of ints, got {describe(hidden)}")
        self.hidden = tuple(_check_dim(h, f"hidden[{i}]") for i, h in enumerate(hidden))
        slope = _check_slope(negative_slope)

        encoder_sizes = [self.input_dim, *self.hidden]
        decoder_sizes = [self.latent_dim, *reversed(self.hidden)]
        # An empty ``hidden`` leaves only the latent and output layers.
        self.encoder = (MLP(encoder_sizes, slope, activate_last=True)
                        if self.hidden else nn.Identity())
        self.latent = nn.Linear(encoder_sizes[-1], self.latent_dim)
        self.noise = GaussianNoise(noise_std)
        self.decoder = (MLP(decoder_sizes, slope, activate_last=True)
                        if self.hidden else nn.Identity())
        self.output = nn.Linear(decoder_sizes[-1], self.input_dim)
        self.output_activation = self._make_output_activation(output_activation)
        _he_normal_(self.latent, None)
        _he_normal_(self.output, None)

    @classmethod
    def _make_output_activation(cls, activation) -> nn.Module:
        if activation is None:
            return nn.Identity()
        if isinstance(activation, nn.Module):
            return activation
        if isinstance(activation, str) and activation in cls._OUTPUT_ACTIVATIONS:
            return cls._OUTPUT_ACTIVATIONS[activation]()
        raise ValueError(f"output_activation must be None, an nn.Module or one of "
                         f"{tuple(cls._OUTPUT_ACTIVATIONS)}, got {describe(activation)}")

    @property
    def noise_std(self) -> float:
        return self.noise.std

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The clean latent code ``[B, latent_dim]`` (no noise in any mode)."""
        _check_features(x, "x", self.input_dim)
        return self.latent(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[B, input_dim]`` of a latent code ``[B, latent_dim]``."""
        _check_features(z, "z", self.latent_dim)
        return self.output_activation(self.output(self.decoder(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.noise(self.encode(x)))

    def extra_repr(self) -> str:
        return (f"input_dim={self.input_dim}, hidden={self.hidden}, "
                f"latent_dim={self.latent_dim}, noise_std={self.noise.std}")



class CharTransformer(nn.Module):
    r"""A small causal (next-token) transformer language model over token ids.

    ``token + position embedding (d_model) -> num_layers x TransformerEncoderLayer
    (pre-norm, GELU MLP of d_ff hidden units, causal attention) -> LayerNorm -> Linear to
    the vocabulary``.

    The blocks are PyTorch's :class:`~torch.nn.TransformerEncoderLayer`, whose MLP
    activation is a function; it is turned into an :class:`~torch.nn.GELU` module
    (:func:`gsr_pyg.hookable.expose_activations`) so that ``gsr_layer``,
    ``"blocks.<last>.activation"``, is hookable: the ``d_ff`` hidden units of the last
    block's MLP, ``[B, T, d_ff]``, units on the last axis (``node_dim=-1``). Their incoming
    weights are ``blocks.<last>.linear1`` (``weight_layer``).

    Input: token ids ``[B, T]`` (``T <= context``), ``pad_id`` on padded positions (right
    padding). Position ``t`` attends to positions ``<= t`` that are not padding. Output:
    logits ``[B, T, vocab_size]``; padded positions get logits too (leave them out of the
    loss, e.g. with targets ``-100``).

    Args:
        vocab_size: number of token ids (at least 2).
        context: longest sequence (default 128).
        d_model: width of the residual stream (default 64).
        num_heads: attention heads; must divide ``d_model`` (default 4).
        d_ff: hidden units of each MLP (default 256).
        num_layers: blocks (default 2).
        dropout: dropout in the blocks (default 0).
        pad_id: the padding token id (default 0).

    Example:
        >>> model = CharTransformer(vocab_size=10, context=8, d_model=16, num_heads=2, d_ff=32)
        >>> model(torch.tensor([[3, 4, 5, 0]])).shape, model.gsr_layer
        (torch.Size([1, 4, 10]), 'blocks.1.activation')
    """

    def __init__(self, vocab_size: int, context: int = 128, d_model: int = 64,
                 num_heads: int = 4, d_ff: int = 256, num_layers: int = 2,
                 dropout: float = 0.0, pad_id: int = 0) -> None:
        super().__init__()
        from .hookable import expose_activations  # models <- hookable: both low rooms

        vocab_size = _check_dim(vocab_size, "vocab_size")
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
        self.context = _check_dim(context, "context")
        d_model = _check_dim(d_model, "d_model")
        num_heads = _check_dim(num_heads, "num_heads")
        if d_model % num_heads:
            raise ValueError(f"num_heads must divide d_model, got d_model={d_model}, "
                             f"num_heads={num_heads}")
        d_ff, num_layers = _check_dim(d_ff, "d_ff"), _check_dim(num_layers, "num_layers")
        dropout = check_positive(dropout, "dropout", allow_zero=True)
        if dropout >= 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if isinstance(pad_id, bool) or not isinstance(pad_id, int) or not 0 <= pad_id < vocab_size:
            raise ValueError(f"pad_id must be a token id in [0, {vocab_size}), got "
                             f"{describe(pad_id)}")
        self.pad_id = pad_id
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(self.context, d_model)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, num_heads, d_ff, dropout=dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(num_layers))
        for block in self.blocks:
            expose_activations(block)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.gsr_layer = f"blocks.{num_layers - 1}.activation"
        self.weight_layer = f"blocks.{num_layers - 1}.linear1"

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if (not isinstance(tokens, torch.Tensor) or tokens.dim() != 2
                or tokens.dtype != torch.long):
            raise ValueError(f"tokens must be token ids [B, T] (int64), got {describe(tokens)}")
        length = tokens.size(1)
        if not 1 <= length <= self.context:
            raise ValueError(f"tokens has {length} positions; this model takes 1 to "
                             f"context={self.context}")
        positions = torch.arange(length, device=tokens.device)
        h = self.token_embedding(tokens) + self.position_embedding(positions)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=tokens.device,
                                                                dtype=h.dtype)
        padding = torch.zeros(tokens.shape, dtype=h.dtype, device=tokens.device)
        padding = padding.masked_fill(tokens == self.pad_id, float("-inf"))
        for block in self.blocks:
            h = block(h, src_mask=causal, src_key_padding_mask=padding, is_causal=True)
        return self.head(self.norm(h))
