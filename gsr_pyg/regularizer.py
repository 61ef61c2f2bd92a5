r"""The graph spectral penalty, bound to named layers of any PyTorch model.

For a layer whose neurons are the nodes of a graph with Laplacian :math:`L`, and its
activations :math:`a_b` (one vector per sample), the penalty is

.. math::
    R = \lambda_t \cdot \frac{1}{B} \sum_b a_b^\top L a_b
      \;+\; \beta \sum_j \Big(\frac{1}{B}\sum_b a_{bj}\Big)^2

(batch mean, node sum, combinatorial :math:`L = D - A` unless ``normalization="sym"``). The
schedule weight :math:`\lambda_t` multiplies the Laplacian term only: the batch-mean term has
its own weight :math:`\beta` (``batch_mean_weight``), so it acts even while
:math:`\lambda_t = 0`. For a conv feature map ``[B, C, H, W]`` the channels are the nodes and
every spatial position is a sample. With ``rayleigh=True`` each sample's term is divided by
:math:`a_b^\top a_b`.

The activations come from an :class:`~gsr_pyg.capture.ActivationCapture` (``reg.capture``)
that the regularizer builds on ``model``; the weight schedules are in
:mod:`gsr_pyg.schedules`.

Example::

    reg = GraphSpectralRegularizer(model, {"fc1": graphs.grid(8, 8)}, weight=1e-2)
    loss = criterion(model(x), y) + reg.penalty()
    loss.backward(); opt.step(); opt.zero_grad(); reg.step()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch_geometric.data import Data

from ._validation import check_bool, check_int, check_positive, closest_names, describe
from .capture import ActivationCapture, samples_by_neurons
from .graphs import check_graph, from_edge_index
from .schedules import WeightSchedule, as_schedule
from .spectral import LaplacianOperator, check_normalization

__all__ = ["GraphSpectralRegularizer"]

LayerKey = str | nn.Module
WeightLike = float | WeightSchedule | Callable[[int], float]

_REQUIRED = object()  # a per-layer option whose mapping must name every layer


@dataclass
class _Layer:
    """The settings and the installed graph of one regularized layer."""

    graph: Data
    operator: LaplacianOperator
    schedule: WeightSchedule
    normalization: str | None
    rayleigh: bool
    batch_mean_weight: float


def _check_beta(value, name: str) -> float:
    return check_positive(value, name, allow_zero=True)


def _check_layer_graph(name: str, graph) -> Data:
    """A layer's graph, or its width alone (an edgeless graph: no penalty until a graph is
    installed), checked by :func:`gsr_pyg.graphs.check_graph`."""
    if isinstance(graph, int) and not isinstance(graph, bool):
        check_int(graph, f"graph for layer {name!r}", minimum=1)
        return from_edge_index(torch.empty(2, 0, dtype=torch.long), num_nodes=graph)
    if not isinstance(graph, Data):
        raise TypeError(f"graph for layer {name!r} must be a torch_geometric Data, "
                        f"got {describe(graph)}")
    return check_graph(graph, name=f"graph for layer {name!r}")


def _per_layer(capture: ActivationCapture, value, option: str,
               check: Callable[[Any, str], Any], default) -> dict[str, Any]:
    """An option given once for all layers, or as a mapping layer -> value, as
    ``{layer name: checked value}``."""
    if not isinstance(value, Mapping):
        return {name: check(value, f"{option} for layer {name!r}") for name in capture.layers}
    given: dict[str, Any] = {}
    for key, item in value.items():
        name = _option_layer(capture, key, option)
        if name in given:
            raise ValueError(f"{option} gives layer {name!r} twice")
        given[name] = check(item, f"{option} for layer {name!r}")
    missing = [name for name in capture.layers if name not in given]
    if missing and default is _REQUIRED:
        raise ValueError(
            f"{option} has no entry for layers {missing}: a mapping must give every "
            f"regularized layer ({capture.layers}) its value"
        )
    return {name: given.get(name, default) for name in capture.layers}


def _option_layer(capture: ActivationCapture, key, option: str) -> str:
    """The layer named by a key of a per-layer option mapping, refusing strangers."""
    try:
        return capture.layer_name(key)
    except TypeError:
        raise TypeError(f"{option} keys must be layer names or modules, "
                        f"got {describe(key)}") from None
    except ValueError:
        pass
    shown = f"module {type(key).__name__}" if isinstance(key, nn.Module) else repr(key)
    close = closest_names(key, capture.layers) if isinstance(key, str) else []
    hint = (f"closest: {', '.join(repr(c) for c in close)}" if close
            else f"regularized layers: {capture.layers}")
    raise ValueError(f"{option} has an entry for {shown}, which is not a regularized "
                     f"layer; {hint}")


class GraphSpectralRegularizer:
    """Graph spectral regularization of named layers of ``model``.

    Args:
        model: any ``torch.nn.Module``.
        graphs: mapping from a layer (its name in ``model.named_modules()``, or the module
            itself) to the ``Data`` graph over that layer's output features, or to the
            layer's width alone (an edgeless graph: no penalty until one is installed with
            :meth:`set_graph`, as for layers whose graph is learned).
        weight: weight :math:`\\lambda_t` of the Laplacian term: a number, a
            :class:`~gsr_pyg.schedules.WeightSchedule`, a callable of the step, or a mapping
            layer -> one of these. A number or schedule applies to every layer (default 1.0);
            a mapping must name every layer (a forgotten or misspelt layer is an error, not
            the default).
        normalization: ``None`` (combinatorial ``D - A``, the reference) or ``"sym"``;
            once for all layers or per layer. ``"rw"`` is refused (indefinite form).
        rayleigh: divide each sample's term by ``a^T a`` (scale-free form); ``True`` or
            ``False``, once or per layer.
        batch_mean_weight: ``beta`` of the reference's per-neuron batch-mean term
            ``beta * sum_j (mean_b a_bj)^2`` (the Laplacian is blind to constants); added
            to the penalty with its own weight, not scaled by ``weight``.
        method: how the quadratic form is computed (``"auto"``, ``"dense"``, ``"edge"``,
            ``"sparse"``): see :class:`gsr_pyg.spectral.LaplacianOperator`.
        check_finite: raise when a penalty comes out NaN or Inf, naming the layer (costs one
            device sync per layer and step on CUDA).

    Per-layer mappings may be keyed by names or modules, like ``graphs``; a key that is not
    a regularized layer is refused. ``normalization``, ``rayleigh`` and
    ``batch_mean_weight`` mappings may leave layers out (they get the default, which turns
    the option off).

    The capture keeps only the latest output of each layer; :meth:`step` drops it, so no
    autograd graph survives a training step, and :meth:`penalty` without a fresh forward
    pass raises. Copies of the model (an EMA copy, a pickled model) do not feed the penalty:
    see :mod:`gsr_pyg.capture`.

    Example (a layer that outputs ``a = (1, 2, 3, 4)`` on the ring of 4:
    :math:`a^\\top L a = 1 + 1 + 1 + 9`):
        >>> from gsr_pyg.graphs import ring
        >>> model = nn.Sequential(nn.Linear(3, 4))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.zero_(), model[0].bias.copy_(torch.arange(1.0, 5.0))
        >>> reg = GraphSpectralRegularizer(model, {"0": ring(4)}, weight=0.5)
        >>> _ = model(torch.ones(2, 3))
        >>> reg.penalty()
        tensor(6., grad_fn=<MulBackward0>)
    """

    def __init__(
        self,
        model: nn.Module,
        graphs: Mapping[LayerKey, Data | int],
        weight: WeightLike | Mapping[LayerKey, WeightLike] = 1.0,
        normalization: str | None | Mapping[LayerKey, str | None] = None,
        rayleigh: bool | Mapping[LayerKey, bool] = False,
        batch_mean_weight: float | Mapping[LayerKey, float] = 0.0,
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
        self.check_finite = check_bool(check_finite, "check_finite")
        self._step = 0
        self.capture = ActivationCapture(model, list(graphs))
        try:  # a refused setting must not leave hooks on the model
            self._layers = self._build_layers(
                list(graphs.values()), weight, normalization, rayleigh, batch_mean_weight)
        except BaseException:
            self.capture.detach()
            raise

    # ------------------------------------------------------------------ set-up
    def _build_layers(self, graphs: list, weight, normalization, rayleigh,
                      beta) -> dict[str, _Layer]:
        names = self.capture.layers
        installed = {name: _check_layer_graph(name, g) for name, g in zip(names, graphs)}
        cap = self.capture
        norms = _per_layer(cap, normalization, "normalization", check_normalization, None)
        betas = _per_layer(cap, beta, "batch_mean_weight", _check_beta, 0.0)
        schedules = _per_layer(cap, weight, "weight", as_schedule, _REQUIRED)
        rayleighs = _per_layer(cap, rayleigh, "rayleigh", check_bool, False)
        return {
            name: _Layer(
                graph=installed[name],
                operator=LaplacianOperator(installed[name], normalization=norms[name],
                                           method=self.method),
                schedule=schedules[name],
                normalization=norms[name],
                rayleigh=rayleighs[name],
                batch_mean_weight=float(betas[name]),
            )
            for name in names
        }

    # ------------------------------------------------------------------ hooks
    def attach(self) -> GraphSpectralRegularizer:
        """Register the capture's forward hooks (done by the constructor)."""
        self.capture.attach()
        return self

    def detach(self) -> None:
        """Remove every hook and drop captured activations."""
        self.capture.detach()

    def __enter__(self) -> GraphSpectralRegularizer:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    # ------------------------------------------------------------------ accessors
    @property
    def layers(self) -> list[str]:
        """The regularized layers' names in the model."""
        return self.capture.layers

    @property
    def step_count(self) -> int:
        return self._step

    def layer_name(self, key: LayerKey) -> str:
        """The name of a regularized layer given by name, module, or name without the
        ``"module."`` prefix of a DDP wrapper."""
        try:
            return self.capture.layer_name(key)
        except ValueError:
            raise ValueError(
                f"layer {key!r} is not regularized; regularized layers: {self.layers}"
            ) from None

    def graph(self, layer: LayerKey) -> Data:
        return self._layers[self.layer_name(layer)].graph

    def normalization(self, layer: LayerKey) -> str | None:
        """The Laplacian normalization of ``layer`` (``None`` or ``"sym"``)."""
        return self._layers[self.layer_name(layer)].normalization

    def operator(self, layer: LayerKey) -> LaplacianOperator:
        """The prepared Laplacian of ``layer`` (it moves to the activations' device)."""
        return self._layers[self.layer_name(layer)].operator

    def weight(self, layer: LayerKey) -> float:
        """The current weight of ``layer`` (after the schedule)."""
        return self._layers[self.layer_name(layer)].schedule(self._step)

    def weights(self) -> dict[str, float]:
        return {name: layer.schedule(self._step) for name, layer in self._layers.items()}

    def activations(self, layer: LayerKey) -> torch.Tensor | None:
        """The latest captured output of ``layer`` (with its autograd graph), or None."""
        return self.capture.output(self.layer_name(layer))

    def samples(self, layer: LayerKey) -> torch.Tensor:
        """The latest output of ``layer`` as ``[samples, neurons]`` (autograd kept), checked
        against the layer's graph."""
        return samples_by_neurons(self._captured(self.layer_name(layer), "samples()"))

    def _captured(self, name: str, caller: str) -> torch.Tensor:
        output = self.capture.output(name)
        if output is None:
            raise RuntimeError(
                f"no activations captured for layer {name!r} since the last step(): run a "
                f"forward pass of the model before calling {caller}"
            )
        width = self._layers[name].graph.num_nodes
        if output.shape[1] != width:
            raise ValueError(
                f"graph for layer {name!r} has {width} nodes but the layer outputs "
                f"{output.shape[1]} features (shape {tuple(output.shape)})"
            )
        return output

    def set_graph(self, layer: LayerKey, graph: Data | int,
                  normalization: str | None | object = ...) -> None:
        """Install a new graph on ``layer`` while training (or the layer's width alone: no
        edges). Its Laplacian is prepared on the device the layer's activations are on; the
        graph itself (:meth:`graph`) stays where it was given. ``normalization`` changes the
        layer's Laplacian too when given."""
        name = self.layer_name(layer)
        current = self._layers[name]
        if normalization is not ...:
            normalization = check_normalization(normalization, f"normalization for layer "
                                                                f"{name!r}")
        graph = _check_layer_graph(name, graph)
        if graph.num_nodes != current.graph.num_nodes:
            raise ValueError(
                f"new graph for layer {name!r} has {graph.num_nodes} nodes but the layer has "
                f"{current.graph.num_nodes}"
            )
        if normalization is not ...:
            current.normalization = normalization
        device = current.operator.device
        current.graph = graph
        current.operator = LaplacianOperator(
            graph.to(device), normalization=current.normalization, method=self.method
        )

    # ------------------------------------------------------------------ penalty
    def _layer_penalty(self, name: str, weighted: bool) -> torch.Tensor:
        layer = self._layers[name]
        a = self._captured(name, "penalty()")
        weight = layer.schedule(self._step) if weighted else 1.0
        beta = layer.batch_mean_weight
        value = a.new_zeros(())
        if weight == 0.0 and not beta:
            return value  # nothing to compute, nothing to check
        if weight != 0.0:
            if layer.operator.device != a.device:
                layer.operator = layer.operator.to(a.device)
            energy = layer.operator(a)  # [B] or [B, *]
            if layer.rayleigh:
                energy = energy / (a.pow(2).sum(dim=1) + 1e-12)
            value = weight * energy.mean()
        if beta:
            value = value + beta * samples_by_neurons(a).mean(dim=0).pow(2).sum()
        if self.check_finite and not bool(torch.isfinite(value)):
            bad = int((~torch.isfinite(a)).sum())
            shown = float(value.detach())
            raise ValueError(
                f"penalty of layer {name!r} is {shown}: the layer's activations hold "
                f"{bad} NaN/Inf values out of {a.numel()}"
                if bad else
                f"penalty of layer {name!r} is {shown} (activations are finite but too "
                "large: the quadratic form overflowed)"
            )
        return value

    def penalties(self, weighted: bool = True) -> dict[str, torch.Tensor]:
        """Per-layer penalty ``weight * E + beta * M``; ``weighted=False`` evaluates it at
        weight 1 (``E + beta * M``, for logging)."""
        return {name: self._layer_penalty(name, weighted) for name in self._layers}

    def penalty(self) -> torch.Tensor:
        """The sum of the per-layer penalties (a scalar to add to the loss)."""
        terms = list(self.penalties().values())
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def step(self) -> None:
        """Advance the weight schedules and drop the captured activations."""
        self._step += 1
        self.capture.clear()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Step, schedule states and the installed graphs (tensors, numbers and strings
        only, so ``torch.load(..., weights_only=True)`` reads it). ``edge_weight`` and
        ``pos`` are stored when the graph has them."""
        layers = {}
        for name, layer in self._layers.items():
            g = layer.graph
            entry = {
                "schedule": layer.schedule.state_dict(),
                "normalization": layer.normalization,
                "edge_index": g.edge_index.detach().cpu(),
                "num_nodes": int(g.num_nodes),
            }
            for key in ("edge_weight", "pos"):
                value = getattr(g, key, None)
                if value is not None:
                    entry[key] = value.detach().cpu()
            layers[name] = entry
        return {"step": self._step, "layers": layers}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore what :meth:`state_dict` saved (same layers)."""
        missing = set(self._layers) - set(state.get("layers", {}))
        extra = set(state.get("layers", {})) - set(self._layers)
        if missing or extra:
            raise ValueError(
                f"regularizer state does not match: missing layers {sorted(missing)}, "
                f"unexpected layers {sorted(extra)}"
            )
        self._step = int(state["step"])
        for name, layer_state in state["layers"].items():
            self._layers[name].schedule.load_state_dict(layer_state["schedule"])
            graph = Data(edge_index=layer_state["edge_index"], num_nodes=layer_state["num_nodes"])
            for key in ("edge_weight", "pos"):
                if key in layer_state:
                    graph[key] = layer_state[key]
            self.set_graph(name, graph, normalization=layer_state.get("normalization"))

    def config(self) -> dict:
        """The settings that define the penalty, as plain data (what a run directory records
        and compares on resume); the installed graphs and the step are state, not settings.

        Example:
            >>> from gsr_pyg.graphs import ring
            >>> reg = GraphSpectralRegularizer(nn.Sequential(nn.Linear(3, 4)), {"0": ring(4)},
            ...                                weight=0.5)
            >>> layer = reg.config()["layers"]["0"]
            >>> layer["nodes"], layer["weight"], layer["normalization"], layer["rayleigh"]
            (4, 'ConstantWeight(0.5)', None, False)
        """
        return {
            "method": self.method,
            "layers": {name: {"nodes": int(layer.graph.num_nodes),
                              "weight": repr(layer.schedule),
                              "normalization": layer.normalization,
                              "rayleigh": layer.rayleigh,
                              "batch_mean_weight": layer.batch_mean_weight}
                       for name, layer in self._layers.items()},
        }

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}: {layer.graph.num_nodes} nodes, {layer.schedule!r}"
            + (f", {layer.normalization}" if layer.normalization else "")
            for name, layer in self._layers.items()
        )
        return f"GraphSpectralRegularizer({parts}, step={self._step})"
