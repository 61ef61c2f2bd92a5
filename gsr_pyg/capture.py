"""Activation capture: forward hooks on named layers, and the one rule for which axis of a
layer's output holds the neurons.

A layer's output ``[B, N]`` has its ``N`` neurons on axis 1; a conv map ``[B, C, H, W]`` has
its ``C`` channels on axis 1 and every spatial position is one more sample. Every consumer
(the penalty, graph learning, metrics) sees the same ``[samples, neurons]`` matrix.

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

from collections.abc import Iterable

import torch
from torch import nn

from ._validation import closest_names, describe

__all__ = ["ActivationCapture", "samples_by_neurons"]


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

    Each layer must output a tensor ``[B, N]`` or ``[B, C, ...]`` (neurons on axis 1); the
    check runs at every forward pass. The stored output keeps its autograd graph (so a
    penalty computed from it trains the model) until the next forward pass of the layer,
    :meth:`clear` or :meth:`detach`. The hooks are registered by the constructor and stay
    until :meth:`detach` (or the end of a ``with`` block).

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        >>> with ActivationCapture(model, ["0"]) as cap:
        ...     _ = model(torch.ones(2, 3))
        ...     cap.samples("0").shape
        torch.Size([2, 4])
    """

    def __init__(self, model: nn.Module, layers: Iterable[str | nn.Module]):
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

    def output(self, layer: str | nn.Module) -> torch.Tensor | None:
        """The latest output of ``layer`` (with its autograd graph), or None."""
        return self._outputs[self.layer_name(layer)]

    def samples(self, layer: str | nn.Module) -> torch.Tensor:
        """The latest output of ``layer`` as ``[samples, neurons]``
        (:func:`samples_by_neurons`), with its autograd graph."""
        name = self.layer_name(layer)
        output = self._outputs[name]
        if output is None:
            raise RuntimeError(
                f"no activations captured for layer {name!r}: run a forward pass of the model "
                "first" + ("" if self.attached else " (the capture is detached: call attach())")
            )
        return samples_by_neurons(output)

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
