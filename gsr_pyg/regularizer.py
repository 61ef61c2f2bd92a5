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

The neurons are on axis ``node_dim`` of the layer's output (default 1; ``-1`` for a
transformer layer ``[B, T, D]``, whose every token is then a sample). A padding ``mask``
over the sample axes (``penalty(mask=...)``) restricts both means to the real positions
:math:`b \in \mathcal{M}`: :math:`\frac{1}{|\mathcal{M}|}\sum_{b \in \mathcal{M}}`.

With ``spectral_response`` (per layer) the Laplacian term becomes the filtered form
:math:`a_b^\top h(L) a_b = \sum_k h(\lambda_k)|\hat a_{bk}|^2` of
:mod:`gsr_pyg.spectral` (``"heat"``, ``"high_pass"``, ``"power"`` or any :math:`h \ge 0`);
``rayleigh`` then divides by :math:`a_b^\top a_b` as before.

That is the default ``objective="laplacian"``. Per layer, ``objective="spatial_correlation"``
or ``"weight_smoothness"`` replaces the penalty by the objective of
:mod:`gsr_pyg.objectives` (times the same :math:`\lambda_t`), on the same graphs, masks,
schedules and state.

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

from ._validation import (
    check_bool,
    check_choice,
    check_int,
    check_positive,
    closest_names,
    describe,
)
from .capture import (
    ActivationCapture,
    check_node_dim,
    check_sample_mask,
    masked_samples,
    sample_shape,
    samples_by_neurons,
)
from .graphs import check_graph, from_edge_index
from .objectives import (
    OBJECTIVES,
    SpatialCorrelationTerm,
    check_unit_weights,
    laplacian_weight_energy,
)
from .schedules import WeightSchedule, as_schedule
from .spectral import (
    FilteredOperator,
    LaplacianOperator,
    SpectralFilter,
    as_spectral_filter,
    check_normalization,
)

__all__ = ["GraphSpectralRegularizer"]

LayerKey = str | nn.Module
WeightLike = float | WeightSchedule | Callable[[int], float]

_REQUIRED = object()  # a per-layer option whose mapping must name every layer
_LAPLACIAN = SpectralFilter()  # the default response, h(lambda) = lambda


@dataclass
class _Layer:
    """The settings and the installed graph of one regularized layer."""

    graph: Data
    operator: LaplacianOperator | FilteredOperator
    schedule: WeightSchedule
    normalization: str | None
    rayleigh: bool
    batch_mean_weight: float
    node_dim: int
    node_dim_given: bool  # when not, an output that is ambiguous about its neurons is refused
    objective: str = "laplacian"
    spatial: SpatialCorrelationTerm | None = None  # objective "spatial_correlation"
    module: nn.Module | None = None  # objective "weight_smoothness": reads module.weight
    response: SpectralFilter = _LAPLACIAN  # objective "laplacian": a^T h(L) a


def _make_operator(graph: Data, normalization: str | None, method: str,
                   response: SpectralFilter) -> LaplacianOperator | FilteredOperator:
    """The prepared form of a layer (a checked graph): today's Laplacian, or the filtered
    one."""
    if response.is_laplacian:
        return LaplacianOperator(graph, normalization=normalization, method=method,
                                 check=False)
    return FilteredOperator(graph, response, normalization=normalization)


def _check_beta(value, name: str) -> float:
    return check_positive(value, name, allow_zero=True)


def _check_node_dim_option(value, name: str) -> int | None:
    return None if value is None else check_node_dim(value, name)


def _check_objective(value, name: str) -> str:
    check_choice(value, name, OBJECTIVES)
    return value


def _check_num_pairs(value, name: str) -> int | None:
    return None if value is None else check_int(value, name, minimum=1)


def _check_objective_options(name: str, objective: str, rayleigh: bool, beta: float,
                             normalization: str | None, num_pairs: int | None,
                             response: SpectralFilter = _LAPLACIAN) -> None:
    """Refuse the options that the layer's objective does not use."""
    unused = []
    if objective != "laplacian":
        unused += [f"rayleigh={rayleigh}"] if rayleigh else []
        unused += [f"batch_mean_weight={beta}"] if beta else []
        unused += [f"spectral_response={response!r}"] if response != _LAPLACIAN else []
    if objective == "spatial_correlation" and normalization is not None:
        unused.append(f"normalization={normalization!r}")
    if objective != "spatial_correlation" and num_pairs is not None:
        unused.append(f"num_pairs={num_pairs}")
    if unused:
        raise ValueError(
            f"layer {name!r} has objective={objective!r}, which does not use "
            f"{', '.join(unused)}: rayleigh and batch_mean_weight apply to objective "
            f"'laplacian' only, normalization to 'laplacian' and 'weight_smoothness', "
            f"num_pairs to 'spatial_correlation', spectral_response to 'laplacian'"
        )


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


def _build_layers(capture: ActivationCapture, model: nn.Module, graphs: list, method: str,
                  weight, normalization, rayleigh, beta, node_dim, objective,
                  num_pairs, spectral_response=_LAPLACIAN) -> dict[str, _Layer]:
    """Every layer's settings, checked, with its graph, Laplacian and objective state."""
    names = capture.layers
    installed = {name: _check_layer_graph(name, g) for name, g in zip(names, graphs)}
    cap = capture
    norms = _per_layer(cap, normalization, "normalization", check_normalization, None)
    betas = _per_layer(cap, beta, "batch_mean_weight", _check_beta, 0.0)
    schedules = _per_layer(cap, weight, "weight", as_schedule, _REQUIRED)
    rayleighs = _per_layer(cap, rayleigh, "rayleigh", check_bool, False)
    node_dims = _per_layer(cap, node_dim, "node_dim", _check_node_dim_option, None)
    objectives = _per_layer(cap, objective, "objective", _check_objective, "laplacian")
    pairs = _per_layer(cap, num_pairs, "num_pairs", _check_num_pairs, None)
    responses = _per_layer(cap, spectral_response, "spectral_response", as_spectral_filter,
                           _LAPLACIAN)
    modules = dict(model.named_modules())
    layers = {}
    for index, name in enumerate(names):
        graph, kind = installed[name], objectives[name]
        _check_objective_options(name, kind, rayleighs[name], float(betas[name]),
                                 norms[name], pairs[name], responses[name])
        if kind == "weight_smoothness":
            check_unit_weights(modules[name], graph.num_nodes, name)
        layers[name] = _Layer(
            graph=graph,
            operator=_make_operator(graph, norms[name], method, responses[name]),
            schedule=schedules[name],
            normalization=norms[name],
            rayleigh=rayleighs[name],
            batch_mean_weight=float(betas[name]),
            node_dim=1 if node_dims[name] is None else node_dims[name],
            node_dim_given=node_dims[name] is not None,
            objective=kind,
            # the pair generator of a layer is seeded with the layer's position
            spatial=(SpatialCorrelationTerm(graph, pairs[name], seed=index, name=name)
                     if kind == "spatial_correlation" else None),
            module=modules[name] if kind == "weight_smoothness" else None,
            response=responses[name],
        )
    return layers


def _check_neuron_axis(name: str, layer: _Layer, output: torch.Tensor) -> None:
    """Refuse an output whose neuron axis does not hold the graph's nodes, and, when
    ``node_dim`` was not given, one that holds them on more than one axis: reading the
    wrong axis would regularize samples (tokens) instead of neurons without an error."""
    width = layer.graph.num_nodes
    shape = tuple(output.shape)
    axis = layer.node_dim % output.dim()
    matches = [d for d in range(1, output.dim()) if shape[d] == width]
    if not layer.node_dim_given and len(matches) > 1:
        raise ValueError(
            f"layer {name!r} outputs shape {shape}, which has the graph's {width} nodes "
            f"on axes {matches}: pass node_dim to say which axis holds the neurons "
            f"(node_dim=-1 for [B, T, D], node_dim=1 for [B, N, ...])"
        )
    if shape[axis] == width:
        return
    where = "" if axis == 1 else f" on axis {layer.node_dim}"
    hint = ""
    if not layer.node_dim_given and matches:
        suggestion = -1 if matches[0] == output.dim() - 1 else matches[0]
        hint = (f"; its axis {matches[0]} has {width} entries: if the neurons are "
                f"there, pass node_dim={suggestion}")
    raise ValueError(
        f"graph for layer {name!r} has {width} nodes but the layer outputs "
        f"{shape[axis]} features{where} (shape {shape}){hint}"
    )


def _energy(layer: _Layer, a: torch.Tensor) -> torch.Tensor:
    """Per-sample :math:`a^\\top L a` (:math:`a^\\top h(L) a` with a spectral response) of an
    output, in the shape of its sample axes."""
    if layer.operator.device != a.device:
        layer.operator = layer.operator.to(a.device)
    if layer.node_dim % a.dim() == 1:
        return layer.operator(a)  # [B] or [B, *]: the operator reads axis 1 itself
    rows = samples_by_neurons(a, layer.node_dim)
    return layer.operator(rows).reshape(sample_shape(a, layer.node_dim))


def _real_rows(layer: _Layer, a: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """The ``[samples, neurons]`` rows of an output, the masked-out positions left out."""
    rows = samples_by_neurons(a, layer.node_dim)
    return rows if keep is None else rows[keep.reshape(-1)]


def _laplacian_term(layer: _Layer, a: torch.Tensor, keep: torch.Tensor | None,
                    weight: float) -> torch.Tensor | None:
    """``weight * mean a^T L a (/ a^T a with rayleigh) + beta * sum_j mean_b(a_bj)^2`` over
    the real positions; None when both weights are 0 (nothing to compute)."""
    beta = layer.batch_mean_weight
    if weight == 0.0 and not beta:
        return None
    value = a.new_zeros(())
    if weight != 0.0:
        energy = _energy(layer, a)
        if layer.rayleigh:
            energy = energy / (a.pow(2).sum(dim=layer.node_dim) + 1e-12)
        value = weight * (energy.mean() if keep is None else energy[keep].mean())
    if beta:
        value = value + beta * _real_rows(layer, a, keep).mean(dim=0).pow(2).sum()
    return value


def _spatial_term(layer: _Layer, a: torch.Tensor, keep: torch.Tensor | None,
                  weight: float) -> torch.Tensor | None:
    """``weight *`` the spatial correlation loss of the real positions."""
    if weight == 0.0:
        return None
    return weight * layer.spatial(_real_rows(layer, a, keep))


def _weight_term(layer: _Layer, weight: float) -> torch.Tensor | None:
    """``weight * tr(W^T L W)`` of the hooked module's current ``.weight``."""
    if weight == 0.0:
        return None
    w = layer.module.weight
    if layer.operator.device != w.device:
        layer.operator = layer.operator.to(w.device)
    return weight * laplacian_weight_energy(layer.operator, w)


#: On an accelerator, penalties are checked for NaN/Inf every this many steps (by
#: :meth:`GraphSpectralRegularizer.step`): reading a flag back every step would make the host
#: wait for the device at every step.
FINITE_CHECK_EVERY = 50


def _defers_finite_check(device: torch.device) -> bool:
    """Whether a penalty on ``device`` is checked later rather than when it is computed (on
    the CPU the check reads memory the host already has)."""
    return device.type != "cpu"


def _check_finite(name: str, layer: _Layer, value: torch.Tensor, source: torch.Tensor,
                  what: str) -> None:
    """Refuse a NaN/Inf penalty, naming the layer and whether its ``what``
    (``"activations"`` or ``"weight"``) or the computation is at fault."""
    if bool(torch.isfinite(value)):
        return
    bad = int((~torch.isfinite(source)).sum())
    shown = float(value.detach())
    holds, are = ("hold", "are") if what == "activations" else ("holds", "is")
    form = "correlation" if layer.spatial is not None else "quadratic form"
    raise ValueError(
        f"penalty of layer {name!r} is {shown}: the layer's {what} {holds} "
        f"{bad} NaN/Inf values out of {source.numel()}"
        if bad else
        f"penalty of layer {name!r} is {shown} ({what} {are} finite but too "
        f"large: the {form} overflowed)"
    )


class GraphSpectralRegularizer:
    """Graph spectral regularization of named layers of ``model``.

    Args:
        model: any ``torch.nn.Module``.
        graphs: mapping from a layer (its name in ``model.named_modules()``, or the module
            itself) to the ``Data`` graph over that layer's output features, or to the
            layer's width alone (an edgeless graph: no penalty until one is installed with
            :meth:`set_graph`, as for layers whose graph is learned).
        weight: weight :math:`\\lambda_t` of the layer's objective term: a number, a
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
        check_finite: raise when a penalty comes out NaN or Inf, naming the layer. On the
            CPU at once; on an accelerator the step's flags stay on the device and
            :meth:`step` reads them every :data:`FINITE_CHECK_EVERY` steps, so that no step
            waits for the device (the error then names the steps since the last check).
        node_dim: the axis of the layer's output that holds the neurons (the graph's nodes);
            every other axis is a sample axis. An int for every layer or a mapping layer ->
            int (layers left out are not given one). Not given (``None``, the default): axis
            1, as for ``[B, N]`` and ``[B, C, H, W]``, and an output whose shape is
            ambiguous, with the graph's size on axis 1 and on another axis (``[B, T, D]``
            with ``T == D``), is refused. ``-1`` for a transformer layer ``[B, T, D]``.
        objective: what the layer's term measures, once for all layers or per layer
            (layers left out of a mapping get ``"laplacian"``), each times ``weight``:

            * ``"laplacian"`` (default): the penalty above;
            * ``"spatial_correlation"``: :func:`gsr_pyg.objectives.spatial_correlation_loss`
              of the layer's ``[samples, neurons]`` matrix (the real positions of a
              ``mask``), with the distances between the units computed once per installed
              graph (:func:`~gsr_pyg.objectives.unit_distances`, ``"auto"``: Euclidean
              from ``pos`` when the graph was given with positions, hop counts otherwise;
              again by :meth:`set_graph`);
            * ``"weight_smoothness"``: :func:`gsr_pyg.objectives.weight_smoothness` of the
              hooked module's ``.weight`` (one row per node: an ``nn.Linear`` or a conv,
              checked here), read at each :meth:`penalty`; it needs no forward pass.

            ``rayleigh`` and ``batch_mean_weight`` apply to ``"laplacian"`` only,
            ``normalization`` not to ``"spatial_correlation"``: a layer that sets an option
            its objective does not use is refused.
        num_pairs: for ``"spatial_correlation"`` layers, the pairs of units drawn per
            penalty (``None``, the default: all pairs), once or per layer. The draws come
            from a generator per layer, seeded with the layer's position in ``graphs``
            (0, 1, ...), whose state :meth:`state_dict` saves, so a resumed run draws the
            pairs it would have drawn.
        spectral_response: the response :math:`h` of a ``"laplacian"`` layer's term
            :math:`a^\\top h(L) a` (:mod:`gsr_pyg.spectral`), once or per layer (layers
            left out of a mapping get the default): a preset name (``"laplacian"``, the
            default: today's :math:`a^\\top L a`, computed as before), a pair
            ``(name, {parameter: value})`` such as ``("heat", {"t": 2.0})`` (a dict alone
            would read as a per-layer mapping), a callable on eigenvalues, or a
            :class:`~gsr_pyg.spectral.SpectralFilter` (which also sets the method, exact
            or Chebyshev, and the order; ``method`` above applies to ``"laplacian"``
            only). Any other objective refuses a non-default response. With ``rayleigh``
            the term is :math:`a^\\top h(L) a / a^\\top a`. :meth:`config` and
            :meth:`state_dict` record it, and :meth:`load_state_dict` refuses a state saved
            with another response.

    Per-layer mappings may be keyed by names or modules, like ``graphs``; a key that is not
    a regularized layer is refused. ``normalization``, ``rayleigh`` and
    ``batch_mean_weight`` mappings may leave layers out (they get the default, which turns
    the option off).

    The capture keeps only the latest output of each layer; :meth:`step` drops it, so no
    autograd graph survives a training step, and :meth:`penalty` without a fresh forward
    pass raises. Copies of the model (an EMA copy, a pickled model) do not feed the penalty:
    see :mod:`gsr_pyg.capture`.

    A ``mask`` given to :meth:`penalty`, :meth:`penalties` or :meth:`samples` is a boolean
    (or 0/1 integer) tensor over the sample axes of every regularized layer's output (the
    output's shape without ``node_dim``: ``[B]`` for ``[B, N]``, ``[B, T]`` for
    ``[B, T, D]``, such as a Hugging Face ``attention_mask``); padded positions count in no
    mean. A mask whose shape is not a layer's sample shape is refused, naming the layer.

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
        node_dim: int | None | Mapping[LayerKey, int | None] = None,
        objective: str | Mapping[LayerKey, str] = "laplacian",
        num_pairs: int | None | Mapping[LayerKey, int | None] = None,
        spectral_response: Any = "laplacian",
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
        # deferred checks (accelerators): layer -> "every penalty since the last check was
        # finite", a flag on the device; and the first step they cover
        self._finite: dict[str, torch.Tensor] = {}
        self._finite_since = 0
        self.capture = ActivationCapture(model, list(graphs))
        try:  # a refused setting must not leave hooks on the model
            self._layers = _build_layers(
                self.capture, model, list(graphs.values()), method, weight, normalization,
                rayleigh, batch_mean_weight, node_dim, objective, num_pairs,
                spectral_response)
            for name, layer in self._layers.items():
                self.capture.set_node_dim(name, layer.node_dim)
        except BaseException:
            self.capture.detach()
            raise

    # ------------------------------------------------------------------ set-up
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

    def operator(self, layer: LayerKey) -> LaplacianOperator | FilteredOperator:
        """The prepared Laplacian of ``layer`` (it moves to the activations' device): a
        :class:`~gsr_pyg.spectral.FilteredOperator` for a layer with a spectral response."""
        return self._layers[self.layer_name(layer)].operator

    def spectral_response(self, layer: LayerKey) -> SpectralFilter:
        """The response :math:`h` of ``layer``'s term :math:`a^\\top h(L) a`."""
        return self._layers[self.layer_name(layer)].response

    def weight(self, layer: LayerKey) -> float:
        """The current weight of ``layer`` (after the schedule)."""
        return self._layers[self.layer_name(layer)].schedule(self._step)

    def weights(self) -> dict[str, float]:
        return {name: layer.schedule(self._step) for name, layer in self._layers.items()}

    def node_dim(self, layer: LayerKey) -> int:
        """The axis of ``layer``'s output that holds its neurons."""
        return self._layers[self.layer_name(layer)].node_dim

    def activations(self, layer: LayerKey) -> torch.Tensor | None:
        """The latest captured output of ``layer`` (with its autograd graph), or None."""
        return self.capture.output(self.layer_name(layer))

    def samples(self, layer: LayerKey, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The latest output of ``layer`` as ``[samples, neurons]`` (autograd kept), checked
        against the layer's graph; with ``mask``, the rows of the real positions only."""
        name = self.layer_name(layer)
        return masked_samples(self._captured(name, "samples()"), self._layers[name].node_dim,
                              mask, name=f"mask for layer {name!r}")

    def sample_mask(self, layer: LayerKey, mask: torch.Tensor | None) -> torch.Tensor | None:
        """``mask`` checked against ``layer``'s latest output: a boolean tensor of the
        layer's sample shape on its device (None for None)."""
        if mask is None:
            return None
        name = self.layer_name(layer)
        a = self._captured(name, "sample_mask()")
        return check_sample_mask(mask, a, self._layers[name].node_dim,
                                 name=f"mask for layer {name!r}")

    def _captured(self, name: str, caller: str) -> torch.Tensor:
        output = self.capture.output(name)
        if output is None:
            raise RuntimeError(
                f"no activations captured for layer {name!r} since the last step(): run a "
                f"forward pass of the model before calling {caller}"
            )
        _check_neuron_axis(name, self._layers[name], output)
        return output

    def set_graph(self, layer: LayerKey, graph: Data | int,
                  normalization: str | None | object = ..., *, check: bool = True) -> None:
        """Install a new graph on ``layer`` while training (or the layer's width alone: no
        edges). Its Laplacian is prepared on the device the layer's activations are on; the
        graph itself (:meth:`graph`) stays where it was given. ``normalization`` changes the
        layer's Laplacian too when given. ``check=False`` skips validating a graph that this
        library built (a refresh's learned graph)."""
        name = self.layer_name(layer)
        current = self._layers[name]
        if normalization is not ...:
            normalization = check_normalization(normalization, f"normalization for layer "
                                                                f"{name!r}")
        if check or not isinstance(graph, Data):
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
        current.operator = _make_operator(graph.to(device), current.normalization, self.method,
                                          current.response)
        if current.spatial is not None:
            current.spatial.set_graph(graph)

    # ------------------------------------------------------------------ penalty
    def _layer_penalty(self, name: str, weighted: bool,
                       mask: torch.Tensor | None) -> torch.Tensor:
        layer = self._layers[name]
        weight = layer.schedule(self._step) if weighted else 1.0
        if layer.objective == "weight_smoothness":  # no activations needed
            source, what = layer.module.weight, "weight"
            value = _weight_term(layer, weight)
        else:
            source, what = self._captured(name, "penalty()"), "activations"
            keep = self.sample_mask(name, mask)
            term = _spatial_term if layer.objective == "spatial_correlation" else _laplacian_term
            value = term(layer, source, keep, weight)
        if value is None:
            return source.new_zeros(())  # nothing to compute, nothing to check
        if self.check_finite:
            if _defers_finite_check(value.device):
                finite = torch.isfinite(value.detach())
                seen = self._finite.get(name)
                self._finite[name] = finite if seen is None else seen & finite
            else:
                _check_finite(name, layer, value, source, what)
        return value

    def penalties(self, weighted: bool = True,
                  mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-layer penalty ``weight * E + beta * M``; ``weighted=False`` evaluates it at
        weight 1 (``E + beta * M``, for logging). ``mask``: a padding mask over the sample
        axes of every layer (see the class docstring); the means run over its true
        positions."""
        return {name: self._layer_penalty(name, weighted, mask) for name in self._layers}

    def penalty(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The sum of the per-layer penalties (a scalar to add to the loss); ``mask`` as in
        :meth:`penalties`."""
        terms = list(self.penalties(mask=mask).values())
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def step(self) -> None:
        """Advance the weight schedules and drop the captured activations; on an accelerator,
        every :data:`FINITE_CHECK_EVERY` steps, check the penalties since the last check
        (``check_finite``)."""
        self._step += 1
        self.capture.clear()
        if self._finite and self._step % FINITE_CHECK_EVERY == 0:
            self.check_deferred_finite()

    def check_deferred_finite(self) -> None:
        """Raise if a penalty computed on an accelerator since the last check was NaN or Inf
        (one read of a flag per layer); :meth:`step` calls it every
        :data:`FINITE_CHECK_EVERY` steps, call it yourself at the end of a run."""
        flags, self._finite = self._finite, {}
        since, self._finite_since = self._finite_since, self._step
        bad = [name for name, finite in flags.items() if not bool(finite)]
        if bad:
            raise ValueError(
                f"penalty of layer(s) {bad} was NaN or Inf at a step between {since} and "
                f"{self._step - 1} (on {next(iter(flags.values())).device} the penalties are "
                f"checked every {FINITE_CHECK_EVERY} steps, so that no step waits for the "
                "device): look for NaN/Inf activations or weights, or a weight that is too "
                "large")

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
                "spectral_response": layer.response.config(),
                "edge_index": g.edge_index.detach().cpu(),
                "num_nodes": int(g.num_nodes),
            }
            for key in ("edge_weight", "pos"):
                value = getattr(g, key, None)
                if value is not None:
                    entry[key] = value.detach().cpu()
            if layer.spatial is not None:
                entry.update(layer.spatial.state_dict())  # the pair generator
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
        for name, layer_state in state["layers"].items():
            # a state from before the option held the default penalty
            saved = layer_state.get("spectral_response", "laplacian")
            if saved != self._layers[name].response.config():
                raise ValueError(
                    f"regularizer state of layer {name!r} was saved with spectral_response "
                    f"{saved!r}, but this regularizer has "
                    f"{self._layers[name].response.config()!r}")
        self._step = int(state["step"])
        for name, layer_state in state["layers"].items():
            self._layers[name].schedule.load_state_dict(layer_state["schedule"])
            graph = Data(edge_index=layer_state["edge_index"], num_nodes=layer_state["num_nodes"])
            for key in ("edge_weight", "pos"):
                if key in layer_state:
                    graph[key] = layer_state[key]
            self.set_graph(name, graph, normalization=layer_state.get("normalization"))
            if self._layers[name].spatial is not None:
                self._layers[name].spatial.load_state_dict(layer_state)

    def config(self) -> dict:
        """The settings that define the penalty, as plain data (what a run directory records
        and compares on resume); the installed graphs and the step are state, not settings.

        Example:
            >>> from gsr_pyg.graphs import ring
            >>> reg = GraphSpectralRegularizer(nn.Sequential(nn.Linear(3, 4)), {"0": ring(4)},
            ...                                weight=0.5)
            >>> layer = reg.config()["layers"]["0"]
            >>> layer["nodes"], layer["weight"], layer["normalization"], layer["node_dim"]
            (4, 'ConstantWeight(0.5)', None, 1)
            >>> layer["objective"], layer["num_pairs"], layer["spectral_response"]
            ('laplacian', None, 'laplacian')
        """
        return {
            "method": self.method,
            "layers": {name: {"nodes": int(layer.graph.num_nodes),
                              "weight": repr(layer.schedule),
                              "normalization": layer.normalization,
                              "rayleigh": layer.rayleigh,
                              "batch_mean_weight": layer.batch_mean_weight,
                              "node_dim": layer.node_dim,
                              "objective": layer.objective,
                              "num_pairs": (None if layer.spatial is None
                                            else layer.spatial.num_pairs),
                              "spectral_response": layer.response.config()}
                       for name, layer in self._layers.items()},
        }

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}: {layer.graph.num_nodes} nodes, {layer.schedule!r}"
            + (f", {layer.normalization}" if layer.normalization else "")
            + (f", {layer.response!r}" if layer.response != _LAPLACIAN else "")
            for name, layer in self._layers.items()
        )
        return f"GraphSpectralRegularizer({parts}, step={self._step})"
