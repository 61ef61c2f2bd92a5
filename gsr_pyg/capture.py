"""Activation capture: forward hooks on named layers, and the one rule for which axis of a
layer's output holds the neurons.

The neurons are on one axis of a layer's output, ``node_dim``; every other axis is a sample
axis. By default (``node_dim=1``) a layer's output ``[B, N]`` has its ``N`` neurons on axis 1
and a conv map ``[B, C, H, W]`` its ``C`` channels, every spatial position being one more
sample; a transformer layer ``[B, T, D]`` has its ``D`` neurons on the last axis
(``node_dim=-1``) and every token is a sample. A boolean ``mask`` over the sample axes (a
padding mask such as an ``attention_mask`` ``[B, T]``) keeps the real positions only. Every
consumer (the penalty, graph learning, metrics) sees the same ``[samples, neurons]`` matrix.

:class:`ActivationCapture` is the one place that holds captured activations: the
regularizer computes its penalty from one, and scripts read activations with one::

    with ActivationCapture(model, ["fc1"]) as cap:
        model(x)
        a = cap.samples("fc1")      # [B, 64]

The captured outputs belong to the model the capture was built on. A copy of that model
(``copy.deepcopy``, ``copy.copy``, the replicas of ``nn.DataParallel``, or ``torch.save`` of
the whole model followed by ``torch.load``) carries an inert hook: it captures nothing, so
running an EMA copy never overwrites the original's activations, and the model stays
picklable while a capture is attached. To read a copy's activations, build a capture on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ._validation import check_int, closest_names, describe

__all__ = ["ActivationCapture", "check_node_dim", "check_sample_mask", "masked_samples",
           "neuron_axis", "sample_shape", "samples_by_neurons"]


def samples_by_neurons(activations: torch.Tensor, node_dim: int = 1) -> torch.Tensor:
    """Reshape a layer's output to ``[samples, neurons]``: the neurons are on ``node_dim``,
    every other axis is a sample axis.

    Example:
        >>> samples_by_neurons(torch.zeros(4, 3, 5, 5)).shape
        torch.Size([100, 3])
        >>> samples_by_neurons(torch.zeros(4, 7)).shape
        torch.Size([4, 7])
    """
    if activations.dim() == 2 and node_dim in (1, -1):
        return activations
    width = activations.shape[node_dim]
    return activations.movedim(node_dim, -1).reshape(-1, width)


def check_node_dim(node_dim, name: str = "node_dim") -> int:
    """A neuron axis, checked: an int other than 0 (axis 0 is the batch); negative values
    count from the end (``-1``: the last axis). Returns it.

    Example:
        >>> check_node_dim(-1)
        -1
    """
    check_int(node_dim, name)
    if node_dim == 0:
        raise ValueError(f"{name} must not be 0 (axis 0 is the batch axis): give the axis "
                         "that holds the neurons, e.g. 1 for [B, N] or [B, C, H, W], -1 for "
                         "[B, T, D]")
    return node_dim


def neuron_axis(x: torch.Tensor, node_dim: int, name: str = "x") -> int:
    """The axis of ``x`` that ``node_dim`` names, checked: one of its axes ``1..x.dim()-1``
    (or ``-1..-(x.dim()-1)``); returns it counted from 0.

    Example:
        >>> neuron_axis(torch.zeros(2, 5, 8), -1)
        2
    """
    check_node_dim(node_dim)
    if not -x.dim() <= node_dim < x.dim() or node_dim % x.dim() == 0:
        raise ValueError(
            f"node_dim={node_dim} is not a neuron axis of {name} ({describe(x)}): it must be "
            f"one of the axes 1..{x.dim() - 1} (or -1..-{x.dim() - 1})"
        )
    return node_dim % x.dim()


def sample_shape(activations: torch.Tensor, node_dim: int = 1) -> torch.Size:
    """The sample axes of a layer's output: its shape without ``node_dim`` (the shape of a
    mask over its samples, and of a per-sample result).

    Example:
        >>> sample_shape(torch.zeros(2, 5, 8), node_dim=-1)
        torch.Size([2, 5])
    """
    shape = list(activations.shape)
    del shape[node_dim]
    return torch.Size(shape)


def check_sample_mask(mask, activations: torch.Tensor, node_dim: int = 1,
                      name: str = "mask") -> torch.Tensor:
    """A mask over the sample axes of ``activations``, checked: a boolean (or integer,
    nonzero meaning a real position, as a Hugging Face ``attention_mask``) tensor whose
    shape is :func:`sample_shape` of ``activations``, keeping at least one position.
    Returns it as a boolean tensor on the activations' device.

    Example:
        >>> check_sample_mask(torch.tensor([[1, 1, 0]]), torch.zeros(1, 3, 4), node_dim=-1)
        tensor([[ True,  True, False]])
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a boolean torch.Tensor over the sample axes, "
                        f"got {describe(mask)}")
    if mask.is_floating_point() or mask.is_complex():
        raise ValueError(f"{name} must be a boolean (or integer 0/1) tensor, got "
                         f"{describe(mask)}")
    expected = sample_shape(activations, node_dim)
    if mask.shape != expected:
        raise ValueError(
            f"{name} must have the shape of the sample axes {tuple(expected)} (the output "
            f"shape {tuple(activations.shape)} without node_dim={node_dim}), got shape "
            f"{tuple(mask.shape)}"
        )
    mask = mask.to(device=activations.device, dtype=torch.bool)
    if not bool(mask.any()):  # a mean over no position would be NaN
        raise ValueError(f"{name} keeps no position: at least one sample must be real")
    return mask


def masked_samples(activations: torch.Tensor, node_dim: int = 1,
                   mask: torch.Tensor | None = None, name: str = "mask") -> torch.Tensor:
    r"""The ``[samples, neurons]`` rows of :func:`samples_by_neurons` whose ``mask`` entry
    is true (all rows without a mask), in row-major order of the sample axes.

    ``mask`` is checked by :func:`check_sample_mask` (``name`` names it in errors).

    Example (two sequences of 3 tokens, the last token of the second one padding):
        >>> x = torch.arange(24.0).reshape(2, 3, 4)           # [B, T, D]
        >>> keep = torch.tensor([[1, 1, 1], [1, 1, 0]])        # attention_mask [B, T]
        >>> masked_samples(x, node_dim=-1, mask=keep).shape
        torch.Size([5, 4])
    """
    rows = samples_by_neurons(activations, node_dim)
    if mask is None:
        return rows
    keep = check_sample_mask(mask, activations, node_dim, name)
    return rows[keep.reshape(-1)]


class _CaptureHook:
    """The forward hook of one captured layer.

    It stores the output only when called by the very module it was registered on, and a
    copy of it (deepcopy, pickle) is inert (``capture`` is None): copies of the model share
    or carry their hook dictionaries, and must not write into the original's capture.
    """

    def __init__(self, capture: ActivationCapture | None, name: str):
        self.capture = capture
        self.name = name

    def __call__(self, module: nn.Module, inputs, output) -> None:
        if self.capture is not None:
            self.capture._store(self.name, module, output)

    def __reduce__(self):
        return (_CaptureHook, (None, self.name))


class ActivationCapture:
    """Forward hooks that keep the latest output of named layers of ``model``.

    Args:
        model: any ``torch.nn.Module`` (a ``DistributedDataParallel`` wrapper too).
        layers: the layers to capture: names in ``model.named_modules()`` (the ``"module."``
            prefix of a DDP/DataParallel wrapper may be left out) or the modules themselves.
        node_dim: the axis of each layer's output that holds the neurons (every other axis
            is a sample axis): an int for every layer, or a mapping layer -> int (layers left
            out get 1). Default 1: ``[B, N]`` and ``[B, C, ...]``; ``-1`` for ``[B, T, D]``.

    Each layer must output a tensor of at least 2 dimensions with ``node_dim`` among its
    axes (not axis 0); the check runs at every forward pass. The stored output keeps its
    autograd graph (so a penalty computed from it trains the model) until the next forward
    pass of the layer, :meth:`clear` or :meth:`detach`. The hooks are registered by the
    constructor and stay until :meth:`detach` (or the end of a ``with`` block).

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        >>> with ActivationCapture(model, ["0"]) as cap:
        ...     _ = model(torch.ones(2, 3))
        ...     cap.samples("0").shape
        torch.Size([2, 4])
        >>> with ActivationCapture(model, ["0"], node_dim=-1) as cap:   # [B, T, D]
        ...     _ = model(torch.ones(2, 5, 3))
        ...     cap.samples("0", mask=torch.tensor([[1, 1, 1, 0, 0], [1] * 5])).shape
        torch.Size([8, 4])
    """

    def __init__(self, model: nn.Module, layers: Iterable[str | nn.Module],
                 node_dim: int | Mapping[str | nn.Module, int] = 1):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}")
        if isinstance(layers, (str, nn.Module)) or not isinstance(layers, Iterable):
            raise TypeError(
                f"layers must be a list of layer names or modules, got {describe(layers)}"
            )
        self.model = model
        self._modules: dict[str, nn.Module] = {}
        for key in layers:
            name, module = self._resolve(key)
            if name in self._modules:
                raise ValueError(f"layer {name!r} is given twice")
            self._modules[name] = module
        if not self._modules:
            raise ValueError("layers must name at least one layer, got none")
        self._node_dims: dict[str, int] = dict.fromkeys(self._modules, 1)
        if isinstance(node_dim, Mapping):
            for key, value in node_dim.items():
                name = self.layer_name(key)
                self._node_dims[name] = check_node_dim(value, f"node_dim for layer {name!r}")
        else:
            check_node_dim(node_dim)
            self._node_dims = dict.fromkeys(self._modules, node_dim)
        self._outputs: dict[str, torch.Tensor | None] = dict.fromkeys(self._modules)
        self._handles: dict[str, torch.utils.hooks.RemovableHandle] = {}
        self.attach()

    def _resolve(self, key) -> tuple[str, nn.Module]:
        """A layer key of the constructor -> (its name in the model, the module)."""
        named = dict(self.model.named_modules())
        if isinstance(key, nn.Module):
            for name, module in named.items():
                if module is key:
                    return name, module
            raise ValueError(f"module {type(key).__name__} is not a submodule of the model")
        if not isinstance(key, str):
            raise TypeError(f"layer keys must be names or modules, got {describe(key)}")
        # A model wrapped in DistributedDataParallel/DataParallel prefixes names with "module.".
        for name in (key, f"module.{key}"):
            if name in named:
                return name, named[name]
        names = [n for n in named if n]
        close = closest_names(key, names)
        if close:
            hint = f"; closest names: {', '.join(repr(c) for c in close)}"
        elif names:
            shown = ", ".join(repr(n) for n in names[:10]) + (", ..." if len(names) > 10 else "")
            hint = f"; layers: {shown}"
        else:
            hint = "; the model has no submodules"
        raise ValueError(f"model has no layer named {key!r}{hint}")

    def _store(self, name: str, module: nn.Module, output) -> None:
        if module is not self._modules[name]:
            return  # a shallow copy (e.g. a DataParallel replica) sharing the hook dictionary
        if not isinstance(output, torch.Tensor):
            # a tuple of tensors (e.g. an LSTM's) would print every value: name the type
            raise ValueError(
                f"layer {name!r} must output a tensor [B, N] or [B, C, ...] to be captured, "
                f"got a {type(output).__name__}; capture the submodule whose output is the "
                "activations"
            )
        if output.dim() < 2:
            raise ValueError(
                f"layer {name!r} must output [B, N] or [B, C, ...], got {describe(output)}"
            )
        neuron_axis(output, self._node_dims[name], f"the output of layer {name!r}")
        self._outputs[name] = output

    # ------------------------------------------------------------------ hooks
    def attach(self) -> ActivationCapture:
        """Register the forward hooks (done by the constructor; a no-op when attached)."""
        for name, module in self._modules.items():
            if name not in self._handles:
                self._handles[name] = module.register_forward_hook(_CaptureHook(self, name))
        return self

    def detach(self) -> None:
        """Remove every hook and drop the captured outputs."""
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()
        self.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> ActivationCapture:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    # ------------------------------------------------------------------ outputs
    @property
    def layers(self) -> list[str]:
        """The captured layers' names in the model, in the order given."""
        return list(self._modules)

    def layer_name(self, key: str | nn.Module) -> str:
        """The name of a captured layer given by its name, its module, or its name without
        the ``"module."`` prefix of a DDP wrapper."""
        if isinstance(key, nn.Module):
            for name, module in self._modules.items():
                if module is key:
                    return name
        elif not isinstance(key, str):
            raise TypeError(f"layer keys must be names or modules, got {describe(key)}")
        else:
            for name in (key, f"module.{key}"):
                if name in self._modules:
                    return name
        shown = f"module {type(key).__name__}" if isinstance(key, nn.Module) else repr(key)
        raise ValueError(f"layer {shown} is not captured; captured layers: {self.layers}")

    def node_dim(self, layer: str | nn.Module) -> int:
        """The axis of ``layer``'s output that holds its neurons."""
        return self._node_dims[self.layer_name(layer)]

    def set_node_dim(self, layer: str | nn.Module, node_dim: int) -> None:
        """Read ``layer``'s neurons from axis ``node_dim`` from now on."""
        name = self.layer_name(layer)
        self._node_dims[name] = check_node_dim(node_dim, f"node_dim for layer {name!r}")

    def output(self, layer: str | nn.Module) -> torch.Tensor | None:
        """The latest output of ``layer`` (with its autograd graph), or None."""
        return self._outputs[self.layer_name(layer)]

    def samples(self, layer: str | nn.Module,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """The latest output of ``layer`` as ``[samples, neurons]`` (:func:`masked_samples`
        with the layer's ``node_dim``), with its autograd graph; with ``mask`` (over the
        sample axes, see :func:`check_sample_mask`) only the real positions' rows."""
        name = self.layer_name(layer)
        output = self._outputs[name]
        if output is None:
            raise RuntimeError(
                f"no activations captured for layer {name!r}: run a forward pass of the model "
                "first" + ("" if self.attached else " (the capture is detached: call attach())")
            )
        return masked_samples(output, self._node_dims[name], mask,
                              name=f"mask for layer {name!r}")

    def clear(self) -> None:
        """Drop every captured output (and with it the autograd graph it holds)."""
        self._outputs = dict.fromkeys(self._modules)

    def __reduce__(self):
        # a copy would hold handles that remove the original's hooks; copies of the model
        # do not copy their capture (their hooks are inert), so nothing needs this
        raise TypeError("an ActivationCapture cannot be copied or pickled: its hooks belong to "
                        "one model; build a new capture on the copied model")

    def __repr__(self) -> str:
        return f"ActivationCapture(layers={self.layers}, attached={self.attached})"
