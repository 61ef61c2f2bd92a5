r"""Other topographic objectives on the neuron graphs of :mod:`gsr_pyg.graphs`.

Graph spectral regularization penalises the Laplacian quadratic form of a layer's
activations (:mod:`gsr_pyg.spectral`). Two other families of topographic objectives use
the same idea, units placed on a sheet, and are computed here on the same graph data model
(a :class:`~torch_geometric.data.Data` with ``edge_index`` in both directions,
``edge_weight`` and an optional ``pos`` ``[N, 2]``), so that they can be compared on the
same model, graph and metrics:

* :func:`spatial_correlation_loss`: near units should respond alike. The correlation,
  across pairs of units, between the correlation of their responses and their closeness
  on the sheet (TDANN: Margalit et al., "A unifying framework for functional organization
  in early and higher ventral visual cortex", Neuron 2024; TopoLM: Rathi et al., "TopoLM:
  brain-like spatio-functional organization in a topographic language model", ICLR 2025).
* :func:`weight_smoothness`: near units should have alike incoming weights. The Laplacian
  quadratic form of the weight vectors, :math:`\operatorname{tr}(\mathbf{W}^\top
  \mathbf{L} \mathbf{W})`, the graph counterpart of TopoLoss (Deb et al., "TopoNets:
  High performing vision and language models with brain-like topography", ICLR 2025).

Both are pure differentiable functions of tensors; they return a 0-dim tensor.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor
from torch_geometric.data import Data

from gsr_pyg._validation import check_choice, check_int, check_tensor, describe
from gsr_pyg.graphs import check_graph
from gsr_pyg.spectral import LaplacianOperator, check_normalization

__all__ = [
    "DISTANCES",
    "OBJECTIVES",
    "SpatialCorrelationTerm",
    "check_unit_weights",
    "laplacian_weight_energy",
    "spatial_correlation_loss",
    "unit_distances",
    "weight_smoothness",
]

DISTANCES = ("auto", "euclidean", "hops")
#: the objectives :class:`~gsr_pyg.regularizer.GraphSpectralRegularizer` takes per layer
OBJECTIVES = ("laplacian", "spatial_correlation", "weight_smoothness")


# --------------------------------------------------------------------------------------
# distances between units
# --------------------------------------------------------------------------------------

def _resolve_distance(distance: str, data: Data) -> str:
    """``"auto"`` -> ``"euclidean"`` with positions, else ``"hops"``; refuse what cannot
    give a distance (no positions for ``"euclidean"``, no edges for ``"hops"``)."""
    check_choice(distance, "distance", DISTANCES)
    if distance == "auto":
        distance = "euclidean" if data.pos is not None else "hops"
    if distance == "euclidean" and data.pos is None:
        raise ValueError("distance is 'euclidean' but the graph has no pos; give the graph "
                         "positions [N, 2] or use distance='hops'")
    if distance == "hops" and data.edge_index.size(1) == 0:
        raise ValueError(
            f"the graph has no positions and no edges ({data.num_nodes} nodes, 0 edges): "
            "every pair of units is infinitely far apart, so closeness carries no "
            "information; give the graph edges or positions [N, 2]"
        )
    return distance


def _hop_distances(data: Data, sources: Tensor) -> Tensor:
    """Hop counts ``[len(sources), N]`` from ``sources`` by breadth-first search, all
    sources at once (one sparse product per hop); unreachable nodes get ``inf``."""
    num_nodes, edge_index = data.num_nodes, data.edge_index
    device = edge_index.device
    sources = sources.to(device)
    adjacency = torch.sparse_coo_tensor(
        edge_index, torch.ones(edge_index.size(1), device=device), (num_nodes, num_nodes),
        check_invariants=False,
    ).coalesce()
    columns = torch.arange(sources.numel(), device=device)
    distances = torch.full((num_nodes, sources.numel()), float("inf"), device=device,
                           dtype=torch.float64)
    distances[sources, columns] = 0.0
    frontier = torch.zeros(num_nodes, sources.numel(), device=device)
    frontier[sources, columns] = 1.0
    visited = frontier > 0
    hops = 0
    while True:
        hops += 1
        reached = (torch.sparse.mm(adjacency, frontier) > 0) & ~visited
        # one host sync per hop: the search ends at the graph's eccentricity
        if not bool(reached.any()):
            break
        distances[reached] = float(hops)
        visited |= reached
        frontier = reached.to(frontier.dtype)
    return distances.t()


def unit_distances(data: Data, distance: str = "auto") -> Tensor:
    r"""Distances ``[N, N]`` (``float64``) between the units of a neuron graph.

    * ``"euclidean"``: :math:`d_{ij} = \lVert p_i - p_j \rVert_2` from ``data.pos``;
    * ``"hops"``: the shortest-path length in edges (hop count), ``inf`` between
      components. Edge weights are not used as lengths: in this data model they are
      similarities (kernel values, connectivity), larger for *closer* units;
    * ``"auto"``: ``"euclidean"`` when the graph has ``pos``, else ``"hops"``.

    :func:`spatial_correlation_loss` computes the distances of the pairs it needs on each
    call; for a fixed graph compute this matrix once and pass it as ``distance=``, which
    also takes any other symmetric distance (e.g. weighted shortest paths).

    Args:
        data (Data): the neuron graph.
        distance (str): ``"auto"``, ``"euclidean"`` or ``"hops"``. (default: ``"auto"``)

    Example:
        >>> from gsr_pyg.graphs import line
        >>> unit_distances(line(3), "hops")
        tensor([[0., 1., 2.],
                [1., 0., 1.],
                [2., 1., 0.]], dtype=torch.float64)
    """
    check_graph(data, name="data")
    distance = _resolve_distance(distance, data)
    if distance == "euclidean":
        pos = data.pos.to(torch.float64)
        # the matmul shortcut of cdist leaves rounding noise (nonzero diagonal)
        return torch.cdist(pos, pos, compute_mode="donot_use_mm_for_euclid_dist")
    return _hop_distances(data, torch.arange(data.num_nodes, device=data.edge_index.device))


def _pair_distances(data: Data, distance: str | Tensor, row: Tensor, col: Tensor) -> Tensor:
    """``d[row[k], col[k]]`` for a checked graph and a resolved distance."""
    if isinstance(distance, Tensor):
        return distance[row, col]
    if distance == "euclidean":
        pos = data.pos.to(torch.float64)
        row, col = row.to(pos.device), col.to(pos.device)
        return (pos[row] - pos[col]).norm(dim=1)
    # breadth-first search only from the units the pairs start at
    row, col = row.to(data.edge_index.device), col.to(data.edge_index.device)
    sources, inverse = torch.unique(row, return_inverse=True)
    return _hop_distances(data, sources)[inverse, col]


def _check_distance_matrix(distance: Tensor, num_nodes: int) -> Tensor:
    check_tensor(distance, "distance", ndim=2, floating=True)
    if tuple(distance.shape) != (num_nodes, num_nodes):
        raise ValueError(f"distance must have shape [{num_nodes}, {num_nodes}] (one row and "
                         f"column per unit of the graph), got {describe(distance)}")
    bad = torch.isnan(distance) | (distance < 0)
    if bool(bad.any()):
        raise ValueError(f"distance must be >= 0 (inf for unreachable pairs), got "
                         f"{int(bad.sum())} negative or NaN entries")
    # relative tolerance: shortest paths summed in two orders differ in the last digits
    if not bool(torch.isclose(distance, distance.t(), rtol=1e-5, atol=0.0).all()):
        raise ValueError("distance must be symmetric (d[i, j] == d[j, i] up to a relative "
                         "1e-5): pairs are unordered; got a matrix that differs from its "
                         "transpose")
    return distance


# --------------------------------------------------------------------------------------
# spatial correlation
# --------------------------------------------------------------------------------------

def _standardize(x: Tensor) -> Tensor:
    """Columns of ``x`` ``[S, N]`` as z-scores (population std). An exactly constant
    column (a dead ReLU unit over the batch) has no correlation with anything: it becomes
    zeros, and its gradient stays finite (no division by a zero std)."""
    centered = x - x.mean(dim=0, keepdim=True)
    variance = centered.square().mean(dim=0)
    constant = (x == x[:1]).all(dim=0)
    safe = torch.where(constant, torch.ones_like(variance), variance)
    return torch.where(constant, torch.zeros_like(centered), centered / safe.sqrt())


def _pair_correlations(z: Tensor, row: Tensor, col: Tensor) -> Tensor:
    """Pearson correlation of the responses of units ``row[k]`` and ``col[k]``."""
    samples, num_units = z.shape
    if samples * row.numel() > num_units * num_units:
        # many samples and pairs: one [N, N] matrix product is cheaper than [S, P]
        return (z.t() @ z / samples)[row, col]
    return (z[:, row] * z[:, col]).mean(dim=0)


def _no_autocast(device: torch.device):
    """Under autocast the [N, N] product would run in half precision."""
    if device.type in ("cpu", "cuda", "mps", "xpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of two vectors; 0 when either is exactly constant (the
    correlation is undefined there), without a host sync and with a finite gradient."""
    a_centered, b_centered = a - a.mean(), b - b.mean()
    degenerate = (a == a[:1]).all() | (b == b[:1]).all()
    denominator = (a_centered.square().sum() * b_centered.square().sum()).sqrt()
    safe = torch.where(degenerate, torch.ones_like(denominator), denominator)
    value = (a_centered * b_centered).sum() / safe
    return torch.where(degenerate, torch.zeros_like(value), value)


def _sample_pairs(num_units: int, num_pairs: int | None, generator: torch.Generator | None,
                  device: torch.device) -> tuple[Tensor, Tensor]:
    """All pairs ``i < j``, or ``num_pairs`` pairs drawn uniformly with replacement from
    the unordered pairs of distinct units."""
    total = num_units * (num_units - 1) // 2
    if num_pairs is None or num_pairs >= total:
        row, col = torch.triu_indices(num_units, num_units, offset=1, device=device)
        return row, col
    # drawn where the generator lives (a CPU generator cannot draw CUDA tensors)
    where = generator.device if generator is not None else device
    row = torch.randint(num_units, (num_pairs,), generator=generator, device=where)
    col = torch.randint(num_units - 1, (num_pairs,), generator=generator, device=where)
    col = col + (col >= row).long()  # skip i == j: uniform over the other N - 1 units
    return row.to(device), col.to(device)


def _check_spatial_arguments(x, data, num_pairs, generator, distance) -> str | Tensor:
    check_tensor(x, "x", ndim=2, floating=True)
    check_graph(data, name="data")
    num_units = data.num_nodes
    if x.size(1) != num_units:
        raise ValueError(f"x must be [S, N] with one column per unit of the graph "
                         f"(N = {num_units}), got {describe(x)}")
    if x.size(0) < 2:
        raise ValueError(f"x must have at least 2 samples (rows) to correlate responses, "
                         f"got {describe(x)}")
    if num_units < 3:
        raise ValueError(f"the graph must have at least 3 units (2 pairs to correlate), "
                         f"got {num_units}")
    if num_pairs is not None:
        check_int(num_pairs, "num_pairs", minimum=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got "
                        f"{describe(generator)}")
    if isinstance(distance, Tensor):
        return _check_distance_matrix(distance, num_units).to(x.device)
    if not isinstance(distance, str):
        raise TypeError(f"distance must be one of {DISTANCES} or a [N, N] tensor, got "
                        f"{describe(distance)}")
    return _resolve_distance(distance, data)


def spatial_correlation_loss(x: Tensor, data: Data, *, num_pairs: int | None = None,
                             generator: torch.Generator | None = None,
                             distance: str | Tensor = "auto") -> Tensor:
    r"""Spatial correlation loss: near units should respond alike.

    For pairs of units :math:`(i, j)`, :math:`r_{ij}` is the Pearson correlation of their
    responses over the samples (the rows of ``x``) and :math:`c_{ij} = 1 / (d_{ij} + 1)`
    their closeness on the sheet. The loss is

    .. math::
        \mathcal{L}_{\mathrm{SC}} = \tfrac{1}{2}\big(1 - \operatorname{corr}_{(i,j)}
        (r_{ij}, c_{ij})\big) \in [0, 1],

    with :math:`\operatorname{corr}` the Pearson correlation across the pairs: minimising
    it makes the response similarity of two units follow their closeness. This is the
    form of TDANN (Margalit et al., Neuron 2024; ``spacetorch/losses/losses_torch.py``:
    ``(1 - corr) / 2``, inverse distance ``1 / (d + 1)``, Euclidean distance, pairs
    ``i < j``) and TopoLM (Rathi et al., ICLR 2025; the same loss per block, times 1/2).

    * **Distance** :math:`d_{ij}`: Euclidean from ``data.pos`` (``"euclidean"``), or the
      hop count of the graph's shortest paths (``"hops"``, :math:`c_{ij} = 0` between
      components); ``"auto"`` takes positions when the graph has them. A precomputed
      ``[N, N]`` tensor (symmetric, ``>= 0``, ``inf`` for unreachable pairs; e.g.
      :func:`unit_distances`, computed once) is also taken. Hop counts cost a
      breadth-first search from every unit on each call (seconds for a thousand units
      on a CPU): for a fixed graph in a training loop, pass the precomputed matrix.
    * **Pairs**: all pairs :math:`i < j` (exact) when ``num_pairs`` is ``None`` or at least
      :math:`N(N-1)/2`; otherwise ``num_pairs`` pairs drawn uniformly with replacement
      from ``generator`` (a fresh sample each call when ``None``, a reproducible one for a
      seeded generator). The originals sample differently: TDANN and TopoLM draw local
      neighbourhoods of units (radius-limited patches) and take all pairs inside them;
      uniform pairs estimate the all-pairs value instead, which weighs far pairs as the
      sheet does.
    * **Constant units** (zero variance over the samples, e.g. a dead ReLU unit) have
      :math:`r_{ij} = 0` with every unit; when all :math:`r_{ij}` or all :math:`c_{ij}` are
      equal the correlation across pairs is undefined and taken as 0 (loss 1/2).

    Args:
        x (Tensor): responses ``[S, N]``: ``S >= 2`` samples (rows), one column per unit.
        data (Data): the neuron graph (:func:`gsr_pyg.graphs.check_graph`), at least 3
            units; with positions or at least one edge unless ``distance`` is a tensor.
        num_pairs (int, optional): pairs to sample per call, ``>= 1``. (default: ``None``,
            all pairs)
        generator (torch.Generator, optional): source of the sampled pairs.
        distance (str or Tensor): ``"auto"``, ``"euclidean"``, ``"hops"`` or a ``[N, N]``
            tensor of distances ``>= 0``. (default: ``"auto"``)

    Returns:
        Tensor: a 0-dim tensor in the dtype of ``x`` (``float32`` for half-precision
        ``x``, which is computed in ``float32``, also under autocast), differentiable in
        ``x``.

    Example:
        >>> from gsr_pyg.graphs import line
        >>> x = torch.tensor([[0., 1., 5.], [1., 2., 0.], [2., 3., 4.]])
        >>> # units 0 and 1 respond alike: r = (1, a, a) against c = (1/2, 1/3, 1/2)
        >>> spatial_correlation_loss(x, line(3))
        tensor(0.2500)
    """
    distance = _check_spatial_arguments(x, data, num_pairs, generator, distance)
    return _spatial_loss(x, data, distance, num_pairs, generator)


def _spatial_loss(x: Tensor, data: Data, distance: str | Tensor, num_pairs: int | None,
                  generator: torch.Generator | None) -> Tensor:
    """:func:`spatial_correlation_loss` on checked arguments and a resolved distance."""
    row, col = _sample_pairs(data.num_nodes, num_pairs, generator, x.device)
    if x.dtype not in (torch.float32, torch.float64):
        # correlations of half-precision responses lose most of their digits
        x = x.float()
    pair_distance = _pair_distances(data, distance, row, col).to(x.device, x.dtype)
    closeness = 1.0 / (pair_distance + 1.0)
    with _no_autocast(x.device):
        response = _pair_correlations(_standardize(x), row, col)
        return 0.5 * (1.0 - _pearson(response, closeness))


# --------------------------------------------------------------------------------------
# weight smoothness
# --------------------------------------------------------------------------------------

def weight_smoothness(weight: Tensor, data: Data, normalization: str | None = None) -> Tensor:
    r"""Weight smoothness: near units should have alike incoming weights.

    With :math:`\mathbf{W}` the layer's incoming weights, one row per unit of the graph
    (``nn.Linear.weight`` ``[N, in_features]``; a conv weight ``[C_out, C_in, kh, kw]`` is
    flattened to ``[C_out, C_in kh kw]``),

    .. math::
        \mathcal{L}_{\mathrm{WS}} = \operatorname{tr}(\mathbf{W}^\top \mathbf{L}
        \mathbf{W}) = \sum_{\{i, j\} \in E} w_{ij} \lVert \mathbf{W}_i - \mathbf{W}_j
        \rVert_2^2

    (with ``normalization="sym"``, :math:`\mathbf{W}_i / \sqrt{d_i}` in place of
    :math:`\mathbf{W}_i`), the Laplacian quadratic form of :mod:`gsr_pyg.spectral` summed
    over the input features.

    Source: TopoLoss (Deb et al., "TopoNets", ICLR 2025; ``murtylab/topoloss``) lays the
    weight vectors of a layer's units on a 2-D sheet, blurs the sheet (down- then
    up-sampling, a low-pass filter) and penalises ``1 - cosine similarity`` between the
    sheet and its blurred copy. A graph has no image grid to resample; the Laplacian form
    is the natural counterpart of that low-pass penalty (it is the energy of the
    high-frequency part of :math:`\mathbf{W}` in the graph's Fourier basis), so this is
    TopoLoss's idea, not its exact value. Unlike the cosine, it depends on the scale of
    the weights.

    Args:
        weight (Tensor): ``[N, ...]`` floating point, one row per unit.
        data (Data): the neuron graph with ``N`` nodes.
        normalization (str, optional): ``None`` (:math:`\mathbf{L} = \mathbf{D} -
            \mathbf{W}`) or ``"sym"``. (default: ``None``)

    Returns:
        Tensor: a 0-dim tensor, differentiable in ``weight``.

    Example:
        >>> from gsr_pyg.graphs import line
        >>> weight_smoothness(torch.tensor([[1., 0.], [1., 2.], [0., 2.]]), line(3))
        tensor(5.)
    """
    check_tensor(weight, "weight", min_ndim=2, floating=True)
    check_normalization(normalization)
    # a new operator per call: it validates the graph; a training loop that evaluates
    # this every step keeps one LaplacianOperator and calls laplacian_weight_energy
    operator = LaplacianOperator(data, normalization)
    if weight.size(0) != operator.num_nodes:
        raise ValueError(f"weight must have one row per unit of the graph "
                         f"({operator.num_nodes} rows), got {describe(weight)}")
    return laplacian_weight_energy(operator.to(weight.device), weight)


def laplacian_weight_energy(operator: LaplacianOperator, weight: Tensor) -> Tensor:
    r""":math:`\operatorname{tr}(\mathbf{W}^\top \mathbf{L} \mathbf{W})` with a prepared
    Laplacian: :func:`weight_smoothness` without its checks, for a training loop that
    keeps one :class:`~gsr_pyg.spectral.LaplacianOperator` per layer. ``weight`` must have
    one row per node of ``operator`` and live on its device.

    Example:
        >>> from gsr_pyg.graphs import line
        >>> W = torch.tensor([[1., 0.], [1., 2.], [0., 2.]])
        >>> laplacian_weight_energy(LaplacianOperator(line(3)), W)
        tensor(5.)
    """
    return operator(weight.reshape(weight.size(0), -1).t()).sum()


def check_unit_weights(module: torch.nn.Module, num_nodes: int, name: str) -> None:
    """Refuse a module whose ``.weight`` is not the incoming weights of ``num_nodes``
    units: a tensor of at least 2 dimensions with one row per unit. ``name`` names the
    layer in the message."""
    weight = getattr(module, "weight", None)
    kind = type(module).__name__
    if kind == "Conv1D":  # Hugging Face's GPT-2 layer keeps its weight as [in, out]
        raise ValueError(
            f"objective 'weight_smoothness' for layer {name!r}: the module is a Hugging Face "
            f"Conv1D, whose weight is [in_features, out_features] (one column per unit, the "
            f"transpose of nn.Linear's), so its rows are not the units; put an activation "
            f"objective on the layer's output instead"
        )
    if not isinstance(weight, Tensor) or weight.dim() < 2:
        shown = "no weight" if weight is None else f"weight {describe(weight)}"
        raise ValueError(
            f"objective 'weight_smoothness' for layer {name!r} reads the layer's incoming "
            f"weights, a .weight of at least 2 dimensions with one row per unit, but the "
            f"module ({kind}) has {shown}; regularize the layer (e.g. the nn.Linear) "
            f"whose weight rows are the graph's nodes"
        )
    if weight.size(0) != num_nodes:
        raise ValueError(
            f"objective 'weight_smoothness' for layer {name!r}: the module's weight "
            f"{describe(weight)} has {weight.size(0)} rows (units) but the graph has "
            f"{num_nodes} nodes"
        )


class SpatialCorrelationTerm:
    r"""The :func:`spatial_correlation_loss` of one layer over training.

    The distances between the units are computed once per graph with
    :func:`unit_distances` (``"auto"``: Euclidean from ``pos`` when the graph was given
    with positions, hop counts otherwise) and kept until :meth:`set_graph` installs
    another graph. A graph with neither edges nor positions gives no distance: the term
    is then exactly 0 (with a gradient of 0) until a graph is installed, as the Laplacian
    penalty of an edgeless graph is. With ``num_pairs``, the pairs are drawn from a CPU
    :class:`torch.Generator` seeded with ``seed``, whose state :meth:`state_dict` holds,
    so that a resumed run draws the same pairs.

    Args:
        data (Data): the layer's graph (checked by the caller), at least 3 nodes.
        num_pairs (int, optional): pairs per call; ``None`` for all pairs.
            (default: ``None``)
        seed (int): seed of the pair generator. (default: ``0``)
        name (str): the layer's name, for messages. (default: ``"layer"``)

    Example:
        >>> from gsr_pyg.graphs import line
        >>> term = SpatialCorrelationTerm(line(3))
        >>> term(torch.tensor([[0., 1., 5.], [1., 2., 0.], [2., 3., 4.]]))
        tensor(0.2500)
    """

    def __init__(self, data: Data, num_pairs: int | None = None, seed: int = 0,
                 name: str = "layer"):
        if data.num_nodes < 3:
            raise ValueError(f"objective 'spatial_correlation' for layer {name!r} needs a "
                             f"graph of at least 3 units (2 pairs to correlate), got "
                             f"{data.num_nodes}")
        self.name = name
        self.num_pairs = num_pairs
        self.generator = None
        if num_pairs is not None:
            self.generator = torch.Generator().manual_seed(seed)
        self.set_graph(data)

    def set_graph(self, data: Data) -> None:
        """Install ``data`` (same number of nodes) and compute its distances."""
        self.data = data
        self.distances: Tensor | None = None
        if data.pos is not None or data.edge_index.size(1) > 0:
            self.distances = unit_distances(data)

    def __call__(self, x: Tensor) -> Tensor:
        """The loss of responses ``x`` ``[S, N]`` (``S >= 2`` rows)."""
        if x.size(0) < 2:
            raise ValueError(f"objective 'spatial_correlation' for layer {self.name!r} "
                             f"correlates responses over samples and needs at least 2, got "
                             f"{x.size(0)} (after the mask)")
        if self.distances is None:
            return (x * 0.0).sum()
        if self.distances.device != x.device:
            self.distances = self.distances.to(x.device)
        return _spatial_loss(x, self.data, self.distances, self.num_pairs, self.generator)

    def state_dict(self) -> dict:
        """The pair generator's state (empty without ``num_pairs``)."""
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])
