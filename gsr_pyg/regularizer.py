r"""The graph spectral penalty, bound to named layers of any PyTorch model.

For a layer whose neurons are the nodes of a graph with Laplacian :math:`L`, and its
activations :math:`a_b` (one vector per sample), the penalty is

.. math::
    R = \lambda_t \cdot \frac{1}{B} \sum_b a_b^\top L a_b
      \;(+\; \beta \sum_j (\tfrac{1}{B}\sum_b a_{bj})^2)

(batch mean, node sum, combinatorial :math:`L = D - A` unless ``normalization="sym"``). For a
conv feature map ``[B, C, H, W]`` the channels are the nodes and every spatial position is a
sample. With ``rayleigh=True`` each sample's term is divided by :math:`a_b^\top a_b`.

Example::

    reg = GraphSpectralRegularizer(model, {"fc1": graphs.grid(8, 8)}, weight=1e-2)
    loss = criterion(model(x), y) + reg.penalty()
    loss.backward(); opt.step(); opt.zero_grad(); reg.step()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch_geometric.data import Data

from ._validation import (
    check_choice,
    check_int,
    check_positive,
    closest_names,
    describe,
)
from .graphs import check_graph, from_edge_index
from .spectral import LaplacianOperator

__all__ = [
    "WeightSchedule",
    "ConstantWeight",
    "StaircaseWeight",
    "LinearWarmupWeight",
    "LambdaWeight",
    "GraphSpectralRegularizer",
]

_NORMALIZATIONS = (None, "sym")


# --------------------------------------------------------------------------- schedules
class WeightSchedule:
    """Penalty weight as a function of the training step, shaped like an LR scheduler.

    Subclasses implement :meth:`__call__`; the regularizer owns the step counter and
    advances it with :meth:`GraphSpectralRegularizer.step`.
    """

    def __call__(self, step: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if isinstance(v, (int, float))}

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class ConstantWeight(WeightSchedule):
    """:math:`\\lambda_t = \\lambda`."""

    def __init__(self, weight: float):
        self.weight = check_positive(weight, "weight", allow_zero=True)

    def __call__(self, step: int) -> float:
        return self.weight

    def __repr__(self) -> str:
        return f"ConstantWeight({self.weight:g})"


class StaircaseWeight(WeightSchedule):
    """The reference schedule: :math:`\\lambda_t = \\lambda \\cdot decay^{\\lfloor t / every
    \\rfloor}` (only the penalty weight decays, never the learning rate)."""

    def __init__(self, weight: float, decay: float, every: int = 100):
        self.weight = check_positive(weight, "weight", allow_zero=True)
        self.decay = check_positive(decay, "decay")
        self.every = check_int(every, "every", minimum=1)

    def __call__(self, step: int) -> float:
        return self.weight * self.decay ** (step // self.every)

    def __repr__(self) -> str:
        return f"StaircaseWeight({self.weight:g}, decay={self.decay:g}, every={self.every})"


class LinearWarmupWeight(WeightSchedule):
    """Ramps linearly from 0 at step 0 to ``weight`` at ``warmup_steps``, then constant."""

    def __init__(self, weight: float, warmup_steps: int):
        self.weight = check_positive(weight, "weight", allow_zero=True)
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", minimum=1)

    def __call__(self, step: int) -> float:
        return self.weight * min(1.0, step / self.warmup_steps)

    def __repr__(self) -> str:
        return f"LinearWarmupWeight({self.weight:g}, warmup_steps={self.warmup_steps})"


class LambdaWeight(WeightSchedule):
    """Any callable of the step (it has no state to save)."""

    def __init__(self, fn: Callable[[int], float]):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {describe(fn)}")
        self.fn = fn

    def __call__(self, step: int) -> float:
        return float(self.fn(step))

    def state_dict(self) -> dict:
        return {}

    def __repr__(self) -> str:
        return f"LambdaWeight({self.fn!r})"


def as_schedule(weight, name: str = "weight") -> WeightSchedule:
    """A number, a schedule or a callable of the step -> a :class:`WeightSchedule`."""
    if isinstance(weight, WeightSchedule):
        return weight
    if isinstance(weight, (int, float)) and not isinstance(weight, bool):
        check_positive(weight, name, allow_zero=True)
        return ConstantWeight(weight)
    if callable(weight):
        return LambdaWeight(weight)
    raise TypeError(
        f"{name} must be a non-negative number, a WeightSchedule or a callable of the step, "
        f"got {describe(weight)}"
    )


# --------------------------------------------------------------------------- layers
@dataclass
class _Layer:
    """Everything the regularizer holds for one hooked layer."""

    name: str
    module: nn.Module
    graph: Data
    operator: LaplacianOperator
    schedule: WeightSchedule
    normalization: str | None
    rayleigh: bool
    batch_mean_weight: float
    activations: torch.Tensor | None = None
    handle: object = field(default=None, repr=False)


def _per_layer(value, layer: str, default):
    """Options may be given once for all layers or as a mapping layer -> value."""
    if isinstance(value, Mapping):
        return value.get(layer, default)
    return value


class GraphSpectralRegularizer:
    """Graph spectral regularization of named layers of ``model``.

    Args:
        model: any ``torch.nn.Module``.
        graphs: mapping from a layer (its name in ``model.named_modules()``, or the module
            itself) to the ``Data`` graph over that layer's output features, or to the
            layer's width alone (an edgeless graph: no penalty until one is installed with
            :meth:`set_graph`, as for layers whose graph is learned).
        weight: penalty weight: a number, a :class:`WeightSchedule`, a callable of the step,
            or a mapping layer -> one of these (default 1.0).
        normalization: ``None`` (combinatorial ``D - A``, the reference) or ``"sym"``;
            once for all layers or per layer. ``"rw"`` is refused (indefinite form).
        rayleigh: divide each sample's term by ``a^T a`` (scale-free form).
        batch_mean_weight: ``beta`` of the reference's per-neuron batch-mean term
            ``beta * sum_j (mean_b a_bj)^2`` (the Laplacian is blind to constants).
        method: how the quadratic form is computed (``"auto"``, ``"dense"``, ``"edge"``,
            ``"sparse"``): see :class:`gsr_pyg.spectral.LaplacianOperator`.
        check_finite: raise when a penalty comes out NaN or Inf, naming the layer (costs one
            device sync per step on CUDA).

    The hooks keep only the latest output of each layer; :meth:`step` drops it, so no
    autograd graph survives a training step, and :meth:`penalty` without a fresh forward
    pass raises.
    """

    def __init__(
        self,
        model: nn.Module,
        graphs: Mapping,
        weight=1.0,
        normalization: str | None | Mapping = None,
        rayleigh: bool | Mapping = False,
        batch_mean_weight: float | Mapping = 0.0,
        method: str = "auto",
        check_finite: bool = True,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}")
        if not isinstance(graphs, Mapping) or not graphs:
            raise ValueError(
                "graphs must be a non-empty mapping from layer name to Data, "
                f"got {describe(graphs)}"
            )
        self.model = model
        self.method = method
        self.check_finite = check_finite
        self._step = 0
        self._layers: dict[str, _Layer] = {}
        self._attached = False
        for key, graph in graphs.items():
            name, module = self._resolve(key)
            if name in self._layers:
                raise ValueError(f"layer {name!r} is given twice in graphs")
            norm = _per_layer(normalization, name, None)
            self._check_normalization(norm, name)
            beta = _per_layer(batch_mean_weight, name, 0.0)
            check_positive(beta, f"batch_mean_weight for layer {name!r}", allow_zero=True)
            graph = self._check_layer_graph(name, graph)
            self._layers[name] = _Layer(
                name=name,
                module=module,
                graph=graph,
                operator=LaplacianOperator(graph, normalization=norm, method=method),
                schedule=as_schedule(_per_layer(weight, name, 1.0), f"weight for layer {name!r}"),
                normalization=norm,
                rayleigh=bool(_per_layer(rayleigh, name, False)),
                batch_mean_weight=float(beta),
            )
        self.attach()

    # ------------------------------------------------------------------ set-up helpers
    def _resolve(self, key) -> tuple[str, nn.Module]:
        named = dict(self.model.named_modules())
        if isinstance(key, nn.Module):
            for name, module in named.items():
                if module is key:
                    return name, module
            raise ValueError(f"module {type(key).__name__} is not a submodule of the model")
        if not isinstance(key, str):
            raise TypeError(f"layer keys must be names or modules, got {describe(key)}")
        if key in named:
            return key, named[key]
        # A model wrapped in DistributedDataParallel/DataParallel prefixes names with "module.".
        if f"module.{key}" in named:
            return f"module.{key}", named[f"module.{key}"]
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

    @staticmethod
    def _check_normalization(norm, name: str) -> None:
        if norm == "rw":
            raise ValueError(
                f"normalization for layer {name!r} is 'rw': the random-walk Laplacian is not "
                "symmetric and its quadratic form is indefinite, so it cannot be a penalty; "
                "use None or 'sym'"
            )
        check_choice(norm, f"normalization for layer {name!r}", _NORMALIZATIONS)

    @staticmethod
    def _check_layer_graph(name: str, graph) -> Data:
        if isinstance(graph, int) and not isinstance(graph, bool):
            # a width alone: an edgeless graph (no penalty until a graph is installed)
            check_int(graph, f"graph for layer {name!r}", minimum=1)
            return from_edge_index(torch.empty(2, 0, dtype=torch.long), num_nodes=graph)
        if not isinstance(graph, Data):
            raise TypeError(f"graph for layer {name!r} must be a torch_geometric Data, "
                            f"got {describe(graph)}")
        try:
            return check_graph(graph)
        except ValueError as err:
            raise ValueError(f"graph for layer {name!r}: {err}") from None

    def _hook(self, layer: _Layer):
        def capture(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                # a tuple of tensors (e.g. an LSTM's) would print every value: name the type
                raise ValueError(
                    f"layer {layer.name!r} must output a tensor [B, N] or [B, C, ...] to be "
                    f"regularized, got a {type(output).__name__}; hook the submodule whose "
                    "output is the activations"
                )
            if output.dim() < 2:
                raise ValueError(
                    f"layer {layer.name!r} must output [B, N] or [B, C, ...], "
                    f"got {describe(output)}"
                )
            if output.shape[1] != layer.graph.num_nodes:
                raise ValueError(
                    f"graph for layer {layer.name!r} has {layer.graph.num_nodes} nodes but the "
                    f"layer outputs {output.shape[1]} features (shape {tuple(output.shape)})"
                )
            layer.activations = output

        return capture

    # ------------------------------------------------------------------ hooks
    def attach(self) -> GraphSpectralRegularizer:
        """Register the forward hooks (done by the constructor)."""
        if not self._attached:
            for layer in self._layers.values():
                layer.handle = layer.module.register_forward_hook(self._hook(layer))
            self._attached = True
        return self

    def detach(self) -> None:
        """Remove every hook and drop captured activations."""
        for layer in self._layers.values():
            if layer.handle is not None:
                layer.handle.remove()
                layer.handle = None
            layer.activations = None
        self._attached = False

    def __enter__(self) -> GraphSpectralRegularizer:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    # ------------------------------------------------------------------ accessors
    @property
    def layers(self) -> list[str]:
        return list(self._layers)

    @property
    def step_count(self) -> int:
        return self._step

    def graph(self, layer: str) -> Data:
        return self._layers[self._name(layer)].graph

    def weight(self, layer: str) -> float:
        """The current weight of ``layer`` (after the schedule)."""
        return self._layers[self._name(layer)].schedule(self._step)

    def weights(self) -> dict[str, float]:
        return {name: layer.schedule(self._step) for name, layer in self._layers.items()}

    def activations(self, layer: str) -> torch.Tensor | None:
        """The latest captured output of ``layer`` (with its autograd graph), or None."""
        return self._layers[self._name(layer)].activations

    def _name(self, layer) -> str:
        if isinstance(layer, nn.Module):
            return self._resolve(layer)[0]
        if layer in self._layers:
            return layer
        if f"module.{layer}" in self._layers:
            return f"module.{layer}"
        raise ValueError(
            f"layer {layer!r} is not regularized; regularized layers: {list(self._layers)}"
        )

    def set_graph(self, layer, graph: Data, normalization: str | None | object = ...) -> None:
        """Install a new graph on ``layer`` while training (moved to the layer's device);
        ``normalization`` changes the layer's Laplacian too when given."""
        name = self._name(layer)
        current = self._layers[name]
        if normalization is not ...:
            self._check_normalization(normalization, name)
            current.normalization = normalization
        graph = self._check_layer_graph(name, graph)
        if graph.num_nodes != current.graph.num_nodes:
            raise ValueError(
                f"new graph for layer {name!r} has {graph.num_nodes} nodes but the layer has "
                f"{current.graph.num_nodes}"
            )
        device = current.operator.device
        current.graph = graph
        current.operator = LaplacianOperator(
            graph.to(device), normalization=current.normalization, method=self.method
        )

    # ------------------------------------------------------------------ penalty
    def _layer_penalty(self, layer: _Layer, weighted: bool) -> torch.Tensor:
        a = layer.activations
        if a is None:
            raise RuntimeError(
                f"no activations captured for layer {layer.name!r} since the last step(): run a "
                "forward pass of the model before calling penalty()"
            )
        weight = layer.schedule(self._step) if weighted else 1.0
        if weight == 0.0:
            return a.new_zeros(())
        if layer.operator.device != a.device:
            layer.operator = layer.operator.to(a.device)
        energy = layer.operator(a)  # [B] or [B, *]
        if layer.rayleigh:
            norm_sq = a.pow(2).sum(dim=1)
            energy = energy / (norm_sq + 1e-12)
        value = energy.mean()
        if layer.batch_mean_weight:
            channel_mean = a.transpose(0, 1).reshape(a.shape[1], -1).mean(dim=1)
            value = value + layer.batch_mean_weight * channel_mean.pow(2).sum()
        if self.check_finite and not bool(torch.isfinite(value)):
            bad = int((~torch.isfinite(a)).sum())
            shown = float(value.detach())
            raise ValueError(
                f"penalty of layer {layer.name!r} is {shown}: the layer's activations hold "
                f"{bad} NaN/Inf values out of {a.numel()}"
                if bad else
                f"penalty of layer {layer.name!r} is {shown} (activations are finite but too "
                "large: the quadratic form overflowed)"
            )
        return weight * value

    def penalties(self, weighted: bool = True) -> dict[str, torch.Tensor]:
        """Per-layer penalty; ``weighted=False`` gives the unweighted term (for logging)."""
        return {name: self._layer_penalty(layer, weighted) for name, layer in self._layers.items()}

    def penalty(self) -> torch.Tensor:
        """The weighted sum of the per-layer penalties (a scalar to add to the loss)."""
        terms = list(self.penalties().values())
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def step(self) -> None:
        """Advance the weight schedules and drop the captured activations."""
        self._step += 1
        for layer in self._layers.values():
            layer.activations = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Step, schedule states and the installed graphs (tensors and numbers only, so
        ``torch.load(..., weights_only=True)`` reads it)."""
        layers = {}
        for name, layer in self._layers.items():
            g = layer.graph
            layers[name] = {
                "schedule": layer.schedule.state_dict(),
                "normalization": layer.normalization,
                "edge_index": g.edge_index.detach().cpu(),
                "edge_weight": g.edge_weight.detach().cpu(),
                "num_nodes": int(g.num_nodes),
            }
            if getattr(g, "pos", None) is not None:
                layers[name]["pos"] = g.pos.detach().cpu()
        return {"step": self._step, "layers": layers}

    def load_state_dict(self, state: Mapping) -> None:
        missing = set(self._layers) - set(state.get("layers", {}))
        extra = set(state.get("layers", {})) - set(self._layers)
        if missing or extra:
            raise ValueError(
                f"regularizer state does not match: missing layers {sorted(missing)}, "
                f"unexpected layers {sorted(extra)}"
            )
        self._step = int(state["step"])
        for name, layer_state in state["layers"].items():
            layer = self._layers[name]
            layer.schedule.load_state_dict(layer_state["schedule"])
            graph = Data(
                edge_index=layer_state["edge_index"],
                edge_weight=layer_state["edge_weight"],
                num_nodes=layer_state["num_nodes"],
            )
            if "pos" in layer_state:
                graph.pos = layer_state["pos"]
            self.set_graph(name, graph, normalization=layer_state.get("normalization"))

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}: {layer.graph.num_nodes} nodes, {layer.schedule!r}"
            + (f", {layer.normalization}" if layer.normalization else "")
            for name, layer in self._layers.items()
        )
        return f"GraphSpectralRegularizer({parts}, step={self._step})"
