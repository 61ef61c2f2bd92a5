r"""Read-outs of a structured hidden layer: what its neurons do, per class, group or module.

Activations are ``[S, N]`` (``S`` samples, ``N`` neurons; node ``i`` of the layer's graph is
column ``i``); results are tensors on the device of the input. The read-outs of a layer's
activations (:func:`class_mean_maps`, :func:`subtract_global_mean`, :func:`module_activity`,
:func:`neuron_planted_modules`) also take any layout the penalty and the metrics take:
``node_dim`` is the axis of the neurons (default 1; ``-1`` for a transformer layer
``[B, T, D]``, whose every token is a sample) and ``mask`` a boolean mask over the sample
axes (e.g. an ``attention_mask`` ``[B, T]``) whose false positions are left out. Per-sample
labels then have the shape of the sample axes (``[B, T]``; ``[S]`` for ``[S, N]``).

* :func:`group_means`: the mean of rows (or columns) per group; the class and module
  read-outs below are this one function (the loadings of features on modules are
  :func:`gsr_pyg.metrics.feature_loadings`).
* :func:`class_mean_maps`: the mean activation of every neuron over the samples of each
  class (or cell type, branch, pseudotime bin): the paper's class maps.
* :func:`subtract_global_mean`: the class maps minus the global mean map, which shows what
  makes each class different.
* :func:`class_map_order`: how smooth the centred class maps are on the layer's graph (mean
  Moran's I, smoothness ratio), the paper's measure of a structured layer.
* :func:`segmentation_map`: the paper's segmentation of the neuron grid into the classes
  that claim each neuron.
* :func:`pseudotime_bins`: quantile bins of a continuous pseudotime.
* :func:`module_activity`: the mean activation of each neuron module, per sample.

Modules of a learned neuron graph and the input features they carry (genes, in single-cell
data; see ``docs/single_cell.md``):

* :func:`graph_feature_modules`: the feature modules, clustered on the features'
  correlation profiles over the neurons (their number chosen by the silhouette), and the
  feature module each neuron module carries, with its sign;
* :func:`feature_module_baselines`: the same from the data alone (Louvain and average
  linkage on the feature-feature correlation, k-means of PCA loadings), what a learned
  graph has to beat;
* :func:`extract_modules`: neuron modules of a graph by several methods, and the neuron
  module every input feature correlates with most;
* :func:`module_loadings`: how strongly every feature loads on every neuron module, the
  feature modules and their top features;
* :func:`feature_graph`: features linked through the neuron modules they load on;
* :func:`neuron_planted_modules`: the planted module each neuron carries, when the feature
  modules are known.

Example::

    maps = class_mean_maps(activations, labels, num_classes=10)   # [10, 64]
    seg = segmentation_map(maps).view(8, 8)                       # class per grid cell
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch_geometric.data import Data

from . import metrics
from ._validation import (
    check_choice,
    check_finite,
    check_int,
    check_positive,
    check_tensor,
    describe,
)
from .capture import check_sample_mask, neuron_axis, sample_shape, samples_by_neurons

__all__ = [
    "group_means",
    "class_mean_maps",
    "subtract_global_mean",
    "ClassMapOrder",
    "class_map_order",
    "segmentation_map",
    "pseudotime_bins",
    "module_activity",
    "extract_modules",
    "ModuleLoadings",
    "module_loadings",
    "feature_graph",
    "neuron_planted_modules",
    "FeatureModules",
    "graph_feature_modules",
    "BASELINE_METHODS",
    "feature_module_baselines",
]

def _as_float(values: torch.Tensor) -> torch.Tensor:
    return values if values.is_floating_point() else values.to(torch.get_default_dtype())


def _default_layout(activations, node_dim: int, mask) -> bool:
    """Whether ``activations`` are read as before ``node_dim``/``mask`` existed: ``[S, N]``
    (or not a tensor of more than 2 axes, refused by the checks of that path)."""
    return mask is None and node_dim == 1 and not (
        isinstance(activations, torch.Tensor) and activations.dim() > 2)


def _sample_rows(activations, node_dim: int, mask, labels=None, labels_name: str = "labels"
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Size]:
    """Validate a layer's ``activations`` (neurons on ``node_dim``), ``mask`` and per-sample
    ``labels`` (the shape of the sample axes); return the ``[samples, N]`` rows of the real
    positions, their labels flattened alike (or None), and the sample shape."""
    check_tensor(activations, "activations", min_ndim=2)
    neuron_axis(activations, node_dim, "activations")
    expected = sample_shape(activations, node_dim)
    if labels is not None:
        check_tensor(labels, labels_name)
        if labels.shape != expected:
            raise ValueError(
                f"{labels_name} must have the shape of the sample axes {tuple(expected)} (the "
                f"activations shape {tuple(activations.shape)} without node_dim={node_dim}), "
                f"got shape {tuple(labels.shape)}"
            )
        labels = labels.reshape(-1)
    rows = samples_by_neurons(activations, node_dim)
    if mask is not None:
        keep = check_sample_mask(mask, activations, node_dim).reshape(-1)
        rows = rows[keep]
        if labels is not None:
            labels = labels[keep.to(labels.device)]
    return rows, labels, expected


def _check_index(index, name: str, length: int, length_name: str,
                 num: int | None, num_name: str) -> int:
    """Validate an integer group index of ``length`` entries; return the number of groups."""
    check_tensor(index, name, ndim=1)
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {describe(index)}")
    if index.numel() != length:
        raise ValueError(
            f"{name} must have one entry per {length_name} ({length}), got {describe(index)}"
        )
    if num is not None:
        check_int(num, num_name, minimum=1)
    if index.numel() == 0:
        if num is None:
            raise ValueError(f"{num_name} must be given when {name} is empty")
        return num
    low, high = int(index.min()), int(index.max())
    if low < 0:
        raise ValueError(f"{name} must be >= 0, got a minimum of {low}")
    if num is None:
        return high + 1
    if high >= num:
        raise ValueError(f"{name} must be < {num_name}={num}, got a maximum of {high}")
    return num


def _checked_group_means(values, index, num, *, names: tuple[str, str, str, str],
                         dim: int = 0) -> torch.Tensor:
    """Validate, then the means of ``values`` along ``dim`` per group of ``index``.

    ``names`` = (values, index, number of groups, what one index entry stands for), so every
    public read-out reports its own argument names.
    """
    values_name, index_name, num_name, entry_name = names
    check_tensor(values, values_name, ndim=2)
    num = _check_index(index, index_name, values.size(dim), entry_name, num, num_name)
    rows = _as_float(values if dim == 0 else values.t())
    index = index.to(device=rows.device, dtype=torch.long)
    sums = rows.new_zeros(num, rows.size(1)).index_add_(0, index, rows)
    counts = torch.bincount(index, minlength=num).to(rows.dtype)
    # 0 / 0 = NaN marks a group without members; no special case needed.
    means = sums / counts.unsqueeze(1)
    return means if dim == 0 else means.t()


def group_means(values: torch.Tensor, groups: torch.Tensor, num_groups: int | None = None,
                dim: int = 0) -> torch.Tensor:
    r"""Mean of ``values`` over the members of each group, along ``dim``.

    With ``dim=0`` (rows are samples, e.g. cells of a cell type, a branch or a pseudotime
    bin):

    .. math::
        M_{gn} = \frac{1}{|\{s : g_s = g\}|} \sum_{s : g_s = g} v_{sn}

    With ``dim=1`` the columns are grouped instead (e.g. neurons into modules, features into
    planted modules) and the result is ``[S, G]``. :func:`class_mean_maps` and
    :func:`module_activity` are this function; the loadings of features on modules
    (:func:`module_loadings`, :func:`neuron_planted_modules`) are
    :func:`gsr_pyg.metrics.feature_loadings`, which keeps only the groups in use.

    Args:
        values: ``[S, N]`` tensor (integer input is cast to the default float dtype).
        groups: integer group of every row (``dim=0``: ``[S]``) or column (``dim=1``:
            ``[N]``), in ``[0, num_groups)``.
        num_groups: number of groups (default ``groups.max() + 1``).
        dim: 0 to group rows, 1 to group columns (default 0).

    Returns:
        ``[G, N]`` (``dim=0``) or ``[S, G]`` (``dim=1``) on the device of ``values``; a group
        without members gets NaN (an honest "no data").

    Example:
        >>> v = torch.tensor([[1., 0.], [3., 2.], [5., 5.]])
        >>> group_means(v, torch.tensor([0, 0, 1]))
        tensor([[2., 1.],
                [5., 5.]])
        >>> group_means(v, torch.tensor([0, 0]), dim=1)  # the mean of the two columns
        tensor([[0.5000],
                [2.5000],
                [5.0000]])
    """
    check_choice(dim, "dim", (0, 1))
    entry = "row of values" if dim == 0 else "column of values"
    return _checked_group_means(values, groups, num_groups, dim=dim,
                                names=("values", "groups", "num_groups", entry))


def class_mean_maps(activations: torch.Tensor, labels: torch.Tensor,
                    num_classes: int | None = None, node_dim: int = 1,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Mean activation of every neuron over the samples of each class (the paper's maps).

    :func:`group_means` of the samples by class:

    .. math::
        M_{cn} = \frac{1}{|\{s : y_s = c\}|} \sum_{s : y_s = c} a_{sn}

    Args:
        activations: ``[S, N]`` layer activations (integer input is cast to float), or any
            layout with the neurons on ``node_dim`` (``[B, C, H, W]``, ``[B, T, D]``).
        labels: integer class of each sample, in ``[0, num_classes)``, with the shape of the
            sample axes (``activations.shape`` without ``node_dim``: ``[S]`` for ``[S, N]``,
            ``[B, T]`` for ``[B, T, D]`` with ``node_dim=-1``).
        num_classes: number of rows of the result (default ``labels.max() + 1``, over the
            real samples).
        node_dim: the axis of ``activations`` that holds the neurons (default 1).
        mask: optional boolean mask over the sample axes (e.g. an ``attention_mask``
            ``[B, T]``); only the true positions count (default None: all).

    Returns:
        ``[C, N]`` floating tensor on the device of ``activations``. A class without any
        sample gets a row of NaN (an honest "no data", which plots as blank).

    Example:
        >>> a = torch.tensor([[1., 0.], [3., 2.], [5., 5.]])
        >>> class_mean_maps(a, torch.tensor([0, 0, 1]))
        tensor([[2., 1.],
                [5., 5.]])
        >>> tokens = torch.tensor([[[1., 0.], [3., 2.]], [[5., 5.], [9., 9.]]])  # [B, T, D]
        >>> class_mean_maps(tokens, torch.tensor([[0, 0], [1, 1]]), node_dim=-1,
        ...                 mask=torch.tensor([[1, 1], [1, 0]]))  # the last token is padding
        tensor([[2., 1.],
                [5., 5.]])
    """
    names = ("activations", "labels", "num_classes", "sample")
    if _default_layout(activations, node_dim, mask):
        return _checked_group_means(activations, labels, num_classes, names=names)
    rows, labels, _ = _sample_rows(activations, node_dim, mask, labels)
    return _checked_group_means(rows, labels, num_classes, names=names)


def subtract_global_mean(maps: torch.Tensor, activations: torch.Tensor | None = None,
                         node_dim: int = 1, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Class maps minus the global mean map: what is special about each class.

    .. math::
        M'_{cn} = M_{cn} - \mu_n

    With ``activations`` ``[S, N]`` given, :math:`\mu` is the mean over all samples (classes
    weighted by their size). Without it, :math:`\mu` is the mean of the class maps (every
    class weighted equally; rows of NaN, i.e. classes without samples, are left out).
    Equal class sizes make the two the same.

    Args:
        maps: ``[C, N]`` class maps, e.g. from :func:`class_mean_maps`.
        activations: optional ``[S, N]`` activations the maps were computed from (or any
            layout with the neurons on ``node_dim``, as in :func:`class_mean_maps`).
        node_dim: the axis of ``activations`` that holds the neurons (default 1).
        mask: optional boolean mask over the sample axes of ``activations``; the mean is
            over the true positions only (default None: all). Needs ``activations``.

    Returns:
        ``[C, N]`` tensor; NaN rows stay NaN.

    Example::

        >>> maps = torch.tensor([[1., 3.], [3., 5.]])
        >>> subtract_global_mean(maps)
        tensor([[-1., -1.],
                [ 1.,  1.]])
        >>> tokens = torch.tensor([[[0., 2.], [4., 6.]], [[2., 4.], [8., 8.]]])  # [B, T, D]
        >>> subtract_global_mean(maps, tokens, node_dim=-1,
        ...                      mask=torch.tensor([[1, 1], [1, 0]]))  # mean [2., 4.]
        tensor([[-1., -1.],
                [ 1.,  1.]])
    """
    check_tensor(maps, "maps", ndim=2)
    maps = _as_float(maps)
    if activations is None:
        if mask is not None:
            raise ValueError("mask needs activations: it selects the samples of their mean")
        global_map = torch.nanmean(maps, dim=0)
    else:
        if not _default_layout(activations, node_dim, mask):
            activations, _, _ = _sample_rows(activations, node_dim, mask)
        check_tensor(activations, "activations", ndim=2)
        if activations.size(1) != maps.size(1):
            raise ValueError(
                f"activations must have one column per neuron of maps ({maps.size(1)}), "
                f"got {describe(activations)}"
            )
        global_map = _as_float(activations).to(maps.device).mean(dim=0).to(maps.dtype)
    return maps - global_map.unsqueeze(0)


class ClassMapOrder(NamedTuple):
    """What :func:`class_map_order` found.

    Attributes:
        maps: ``[C, N]`` class-mean maps (a row of NaN for a class without samples).
        centred: ``[C, N]`` the maps minus the global mean map.
        morans_i: mean Moran's I of the centred maps of the classes present.
        smoothness_ratio: smoothness ratio of those maps.
    """

    maps: torch.Tensor
    centred: torch.Tensor
    morans_i: float
    smoothness_ratio: float


def class_map_order(activations: torch.Tensor, labels: torch.Tensor, graph: Data,
                    num_classes: int | None = None, num_permutations: int = 100,
                    seed: int = 0) -> ClassMapOrder:
    """How ordered a layer's class maps are on its graph: :func:`class_mean_maps`,
    :func:`subtract_global_mean` (over all samples), then the mean
    :func:`gsr_pyg.metrics.morans_i` and the :func:`gsr_pyg.metrics.smoothness_ratio` of
    the centred maps of the classes that have samples.

    Args:
        activations: ``[S, N]`` activations of the layer.
        labels: ``[S]`` integer class of each sample.
        graph: the layer's graph (``N`` nodes), on the device of ``activations``.
        num_classes: rows of the maps (default ``labels.max() + 1``).
        num_permutations, seed: of the smoothness ratio.

    Example:
        >>> from gsr_pyg.graphs import line
        >>> a = torch.tensor([[3., 2., 1., 0.], [2., 2., 1., 1.], [0., 1., 2., 3.]])
        >>> found = class_map_order(a, torch.tensor([0, 0, 1]), line(4), num_permutations=10)
        >>> found.centred.shape, round(found.morans_i, 3)
        (torch.Size([2, 4]), 0.368)
    """
    maps = class_mean_maps(activations, labels, num_classes=num_classes)
    centred = subtract_global_mean(maps, activations)
    present = ~torch.isnan(maps).any(dim=1)  # a small subset may lack a class
    moran = metrics.morans_i(centred[present], graph)
    ratio = metrics.smoothness_ratio(centred[present], graph,
                                     num_permutations=num_permutations, seed=seed)
    return ClassMapOrder(maps, centred, float(torch.nanmean(moran)), ratio)


def segmentation_map(class_maps: torch.Tensor) -> torch.Tensor:
    r"""Assign every neuron to the class that claims it most, after L1-normalising each map.

    Each class map is scaled to unit L1 norm over the neurons, so a class with a weak but
    focused map can still claim its neurons against a class that is strong everywhere:

    .. math::
        \hat M_{cn} = \frac{M_{cn}}{\sum_m |M_{cm}|}, \qquad
        \mathrm{seg}_n = \arg\max_c \hat M_{cn}

    An all-zero map stays zero. Ties go to the lowest class index. A row of NaN (a class
    without samples) never wins; at least one row must be finite. On an 8x8 grid,
    ``segmentation_map(maps).view(8, 8)`` is the paper's segmentation image.

    Args:
        class_maps: ``[C, N]`` class maps (see :func:`class_mean_maps`).

    Returns:
        ``LongTensor [N]`` with the class of each neuron.

    Example::

        >>> maps = torch.tensor([[4., 4., 4., 4.], [1., 0., 0., 0.]])
        >>> segmentation_map(maps)  # raw argmax would give class 0 everywhere
        tensor([1, 0, 0, 0])
    """
    check_tensor(class_maps, "class_maps", ndim=2)
    if class_maps.size(0) == 0:
        raise ValueError(f"class_maps must have at least one class, got {describe(class_maps)}")
    class_maps = _as_float(class_maps)
    missing = torch.isnan(class_maps).all(dim=1)
    if bool(missing.all()):
        raise ValueError("class_maps must have at least one row that is not all NaN")
    check_finite(class_maps[~missing], "class_maps (rows that are not all NaN)")
    norms = class_maps.abs().sum(dim=1, keepdim=True)
    normalized = class_maps / torch.where(norms > 0, norms, torch.ones_like(norms))
    normalized = normalized.masked_fill(missing.unsqueeze(1), float("-inf"))
    # torch.argmax returns the first maximal index, which gives ties to the lowest class.
    return normalized.argmax(dim=0)


def pseudotime_bins(pseudotime: torch.Tensor, num_bins: int = 5) -> torch.Tensor:
    r"""Quantile bins of a continuous pseudotime (bin 0 = earliest).

    The bin edges are the ``k / num_bins`` quantiles (linear interpolation); bins are
    closed on the right, as in ``pandas.qcut``. With distinct values, bin sizes differ by at
    most one; equal values always share a bin, so heavy ties can unbalance the bins.

    Args:
        pseudotime: ``[S]`` finite floating pseudotime per sample.
        num_bins: number of bins (default 5, quintiles).

    Returns:
        ``LongTensor [S]`` with values in ``[0, num_bins)``.

    Example::

        >>> pseudotime_bins(torch.tensor([0.9, 0.1, 0.5, 0.3]), num_bins=2)
        tensor([1, 0, 1, 0])
    """
    check_tensor(pseudotime, "pseudotime", ndim=1)
    check_int(num_bins, "num_bins", minimum=1)
    if pseudotime.numel() == 0:
        raise ValueError("pseudotime must have at least one sample, got an empty tensor")
    pseudotime = _as_float(pseudotime)
    if pseudotime.dtype not in (torch.float32, torch.float64):
        pseudotime = pseudotime.float()  # torch.quantile needs single or double precision
    check_finite(pseudotime, "pseudotime")
    levels = torch.arange(1, num_bins, device=pseudotime.device,
                          dtype=pseudotime.dtype) / num_bins
    inner_edges = torch.quantile(pseudotime, levels)
    return torch.bucketize(pseudotime, inner_edges, right=False)


def module_activity(activations: torch.Tensor, neuron_labels: torch.Tensor,
                    num_modules: int | None = None, node_dim: int = 1,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Mean activation of each neuron module, per sample.

    .. math::
        m_{sk} = \frac{1}{|\{n : \ell_n = k\}|} \sum_{n : \ell_n = k} a_{sn}

    Args:
        activations: ``[S, N]`` layer activations, or any layout with the neurons on
            ``node_dim`` (``[B, T, D]`` with ``node_dim=-1``).
        neuron_labels: ``[N]`` integer module of each neuron (e.g. graph communities).
        num_modules: number of columns of the result (default ``neuron_labels.max() + 1``).
        node_dim: the axis of ``activations`` that holds the neurons (default 1).
        mask: optional boolean mask over the sample axes; only the true positions get a
            row (default None: all).

    Returns:
        ``[S, M]``; a module without neurons gets a column of NaN. For other layouts, as the
        metrics: the sample shape plus ``M`` (``[B, T, M]``), or ``[S_real, M]`` (the real
        positions in row-major order) with a mask.

    Example::

        >>> a = torch.tensor([[1., 3., 10.], [0., 2., 4.]])
        >>> module_activity(a, torch.tensor([0, 0, 1]))
        tensor([[ 2., 10.],
                [ 1.,  4.]])
        >>> module_activity(a.view(1, 2, 3), torch.tensor([0, 0, 1]), node_dim=-1,
        ...                 mask=torch.tensor([[1, 0]]))  # [B, T, D], the 2nd token padding
        tensor([[ 2., 10.]])
    """
    names = ("activations", "neuron_labels", "num_modules", "neuron")
    if _default_layout(activations, node_dim, mask):
        return _checked_group_means(activations, neuron_labels, num_modules, dim=1,
                                    names=names)
    rows, _, shape = _sample_rows(activations, node_dim, mask)
    activity = _checked_group_means(rows, neuron_labels, num_modules, dim=1, names=names)
    return activity if mask is not None else activity.reshape(*shape, activity.size(1))


# --------------------------------------------------------------------------- graph modules
def extract_modules(graph: Data, inputs: torch.Tensor, activations: torch.Tensor,
                    num_modules: int,
                    methods: Sequence[str] = ("louvain", "spectral", "components"),
                    seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    r"""Neuron modules of a learned graph and the feature modules they give, per method.

    For every method, the graph is cut into neuron modules
    (:func:`gsr_pyg.metrics.neuron_modules`; ``"spectral"`` with
    :math:`k = \min(\text{num\_modules}, N)`), then every input feature :math:`f` joins the
    module whose neurons it correlates with most,
    :math:`\arg\max_c \frac{1}{|c|}\sum_{n\in c}|r_{nf}|`
    (:func:`gsr_pyg.metrics.feature_modules`).

    Args:
        graph: the neuron graph (``N`` nodes).
        inputs: ``[S, F]`` input features of held-out samples.
        activations: ``[S, N]`` the layer's activations on the same samples.
        num_modules: the number of modules expected (the ``k`` of ``"spectral"``).
        methods: any of ``"louvain"``, ``"spectral"``, ``"components"``, in the order of the
            result (default all three, in that order).
        seed: seed of the spectral k-means and of Louvain (default 0).

    Returns:
        ``{method: {"neurons": [N] labels, "features": [F] labels}}``.

    Example:
        >>> # neurons 0, 1 copy feature 0; neurons 2, 3 copy feature 1
        >>> graph = Data(edge_index=torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]), num_nodes=4)
        >>> x = torch.tensor([[1., 0.], [2., 1.], [3., 0.], [4., 2.]])
        >>> found = extract_modules(graph, x, x[:, [0, 0, 1, 1]], num_modules=2)
        >>> found["louvain"]["neurons"], found["louvain"]["features"]
        (tensor([0, 0, 1, 1]), tensor([0, 1]))
    """
    check_int(num_modules, "num_modules", minimum=1)
    if isinstance(methods, str):
        raise TypeError(f"methods must be a sequence of method names, got {methods!r}")
    for method in methods:
        check_choice(method, "methods entry", metrics.NEURON_MODULE_METHODS)
    out = {}
    for method in methods:
        k = min(num_modules, graph.num_nodes) if method == "spectral" else None
        neurons = metrics.neuron_modules(graph, method, k=k, seed=seed)
        features = metrics.feature_modules(inputs, activations, neurons)
        out[method] = {"neurons": neurons, "features": features}
    return out


def neuron_planted_modules(inputs: torch.Tensor, activations: torch.Tensor,
                           feature_module: torch.Tensor, node_dim: int = 1,
                           mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""The planted module each neuron carries: the module whose features it correlates with
    most.

    .. math::
        m_n = \arg\max_p \frac{1}{|p|} \sum_{f \in p} |r_{nf}|

    with :math:`r_{nf}` the Pearson correlation of neuron :math:`n` and feature :math:`f`
    over the samples (:func:`gsr_pyg.metrics.feature_correlations`): the
    :func:`gsr_pyg.metrics.feature_loadings` of the neurons on the planted modules. Ties go
    to the lower module; only the module numbers in use compete (as in
    :func:`gsr_pyg.metrics.feature_modules`).

    Args:
        inputs: ``[S, F]`` input features.
        activations: ``[S, N]`` neuron activations on the same samples (or any layout with
            the neurons on ``node_dim``, its ``S`` positions in row-major order).
        feature_module: ``[F]`` integer planted module of every feature.
        node_dim: the axis of ``activations`` that holds the neurons (default 1).
        mask: optional boolean mask over the sample axes of ``activations``; the padded
            positions and their rows of ``inputs`` are left out (default None), as in
            :func:`gsr_pyg.metrics.feature_correlations`.

    Returns:
        ``[N]`` long tensor of module labels (values taken from ``feature_module``).

    Example:
        >>> x = torch.tensor([[1., 0., 1.], [2., 1., 0.], [3., 0., 2.], [4., 2., 1.]])
        >>> neuron_planted_modules(x, x[:, [1, 0]], torch.tensor([0, 0, 1]))
        tensor([0, 0])
    """
    correlations = metrics.feature_correlations(inputs, activations, node_dim=node_dim,
                                                mask=mask)  # [N, F]
    num_features = correlations.size(1)
    check_tensor(feature_module, "feature_module", ndim=1)
    if feature_module.is_floating_point() or feature_module.is_complex() or \
            feature_module.dtype == torch.bool:
        raise ValueError(
            f"feature_module must be an integer tensor, got {describe(feature_module)}"
        )
    if feature_module.numel() != num_features:
        raise ValueError(f"feature_module must have one entry per feature ({num_features}), "
                         f"got {describe(feature_module)}")
    if num_features == 0:
        raise ValueError("inputs must have at least one feature (column), got 0")
    modules = feature_module.to(device=correlations.device, dtype=torch.long)
    # Grouping the features: the loadings of the transposed correlations, [N, P].
    loadings = metrics.feature_loadings(correlations.T, modules)
    return torch.unique(modules)[loadings.argmax(dim=1)]


class ModuleLoadings(NamedTuple):
    """What :func:`module_loadings` returns (a tuple: ``loadings, assignment, modules =``)."""

    #: ``[F, C]`` mean absolute correlation of every feature with every neuron module.
    loadings: torch.Tensor
    #: ``[F]`` the feature module of every feature (its highest loading).
    assignment: torch.Tensor
    #: one dict per neuron module, see :func:`module_loadings`.
    modules: list[dict]


def module_loadings(correlations: torch.Tensor, neuron_labels: torch.Tensor,
                    feature_names: Sequence[str] | None = None,
                    top: int = 10) -> ModuleLoadings:
    r"""Loadings of every feature on every neuron module, the feature modules and their top
    features (in single-cell data: the gene modules and their top genes).

    The loading of feature :math:`f` on module :math:`c` is the mean absolute correlation
    with the module's neurons,

    .. math::
        \ell_{fc} = \frac{1}{|c|}\sum_{n \in c} |r_{nf}|,

    (:func:`gsr_pyg.metrics.feature_loadings`), and every feature joins its best module
    :math:`\arg\max_c \ell_{fc}` (ties to the lower module), as
    :func:`gsr_pyg.metrics.feature_modules` does.

    The modules are the label values in use, in increasing order: with labels ``0..C-1``
    (what :func:`gsr_pyg.metrics.neuron_modules` returns) column and list entry ``c`` are
    module ``c``; a label number no neuron uses (labels ``[0, 0, 2]``) gets no column, and
    ``assignment`` and ``modules[i]["module"]`` give the labels themselves.

    Args:
        correlations: ``[N, F]`` neuron x feature correlations :math:`r`
            (:func:`gsr_pyg.metrics.feature_correlations`).
        neuron_labels: ``[N]`` integer module of every neuron, usually ``0..C-1``.
        feature_names: ``F`` names (default ``"0"``, ``"1"``, ...).
        top: features listed per module in ``top_features`` (default 10).

    Returns:
        :class:`ModuleLoadings` ``(loadings [F, C], assignment [F], modules)`` with
        ``modules[i]`` = ``{"module": c, "neurons": |c|, "features": [names assigned to c,
        by loading], "top_features": [{"feature", "loading", "mean_r"} for the ``top``
        highest loadings on c]}`` for the ``i``-th module ``c`` (``mean_r``: the mean signed
        correlation, whose sign says whether the module rises or falls with the feature).

    Example:
        >>> r = torch.tensor([[0.9, -0.1, 0.2], [0.7, 0.3, -0.2], [0.0, 0.8, 0.6]])
        >>> result = module_loadings(r, torch.tensor([0, 0, 1]), ["a", "b", "c"], top=2)
        >>> result.loadings
        tensor([[0.8000, 0.0000],
                [0.2000, 0.8000],
                [0.2000, 0.6000]])
        >>> result.assignment.tolist(), result.modules[1]["features"]
        ([0, 1, 1], ['b', 'c'])
    """
    check_tensor(correlations, "correlations", ndim=2, floating=True)
    check_int(top, "top", minimum=1)
    num_features = correlations.size(1)
    if feature_names is None:
        feature_names = [str(f) for f in range(num_features)]
    elif len(feature_names) != num_features:
        raise ValueError(f"feature_names must have one name per feature (column) of "
                         f"correlations ({num_features}), got {len(feature_names)}")
    # One validation and one pass for both averages: |r| and r side by side, [2F, C].
    both = metrics.feature_loadings(torch.cat([correlations.abs(), correlations], dim=1),
                                    neuron_labels, absolute=False)
    loadings, signed = both[:num_features], both[num_features:]
    labels = torch.as_tensor(neuron_labels).long()  # valid: feature_loadings checked it
    module_labels, sizes = torch.unique(labels, return_counts=True)
    best = loadings.argmax(dim=1)
    modules = []
    for column, (label, size) in enumerate(zip(module_labels.tolist(), sizes.tolist())):
        assigned = torch.nonzero(best == column).flatten()
        assigned = assigned[loadings[assigned, column].argsort(descending=True)]
        order = loadings[:, column].argsort(descending=True)[:top]
        modules.append({
            "module": label,
            "neurons": size,
            "features": [feature_names[f] for f in assigned.tolist()],
            "top_features": [{"feature": feature_names[f],
                              "loading": float(loadings[f, column]),
                              "mean_r": float(signed[f, column])} for f in order.tolist()],
        })
    return ModuleLoadings(loadings, module_labels.to(best.device)[best], modules)


def feature_graph(loadings: torch.Tensor, min_loading: float = 0.2,
                  relative_loading: float = 0.9) -> Data:
    r"""Features linked through the neuron modules they load on (in single-cell data: the
    gene graph).

    Feature :math:`f` *loads on* module :math:`c` when :math:`\ell_{fc} \ge`
    ``min_loading`` and :math:`\ell_{fc} \ge` ``relative_loading``
    :math:`\cdot \max_{c'} \ell_{fc'}`. Two features are joined when they load on a common
    module, with weight

    .. math::
        w_{fg} = \sum_{c:\ f, g \text{ load on } c} \min(\ell_{fc}, \ell_{gc}).

    Args:
        loadings: ``[F, C]`` loadings :math:`\ell` (:func:`module_loadings`).
        min_loading: the least loading that counts (default 0.2).
        relative_loading: the least fraction of the feature's best loading that counts
            (default 0.9).

    Returns:
        ``Data`` over the ``F`` features (both directions of every edge, float32
        ``edge_weight``) with ``loads``: the ``[F, C]`` boolean "loads on" matrix.

    Example:
        >>> loadings = torch.tensor([[0.9, 0.1], [0.6, 0.58], [0.05, 0.7]])
        >>> graph = feature_graph(loadings)
        >>> graph.edge_index.tolist(), [round(w, 2) for w in graph.edge_weight.tolist()]
        ([[0, 1, 1, 2], [1, 0, 2, 1]], [0.6, 0.6, 0.58, 0.58])
    """
    check_tensor(loadings, "loadings", ndim=2, floating=True)
    check_finite(loadings, "loadings")
    min_loading = check_positive(min_loading, "min_loading", allow_zero=True)
    relative_loading = check_positive(relative_loading, "relative_loading", allow_zero=True)
    best = loadings.max(dim=1, keepdim=True).values
    loads = (loadings >= min_loading) & (loadings >= relative_loading * best)
    member = torch.where(loads, loadings, torch.zeros_like(loadings)).double()  # [F, C]
    # The sum over shared modules of the smaller loading (0 where either feature does not
    # load), one [F, F] module at a time: never an [F, F, C] tensor. min is symmetric and
    # every entry sums the modules in the same order, so both directions of an edge carry
    # bitwise the same weight.
    weight = member.new_zeros(member.size(0), member.size(0))
    for column in member.T:
        weight += torch.minimum(column[:, None], column[None, :])
    weight.fill_diagonal_(0.0)
    row, col = torch.nonzero(weight > 0, as_tuple=True)
    return Data(edge_index=torch.stack([row, col]), edge_weight=weight[row, col].float(),
                num_nodes=loadings.size(0), loads=loads)


# --------------------------------------------------------------------------- feature modules
class FeatureModules(NamedTuple):
    """What :func:`graph_feature_modules` returns."""

    #: ``[F]`` the feature module of every feature, ``0..K-1``.
    assignment: torch.Tensor
    #: ``K``, chosen from the data (the silhouette criterion).
    num_modules: int
    #: ``{k: mean silhouette}`` of every number of modules tried.
    silhouettes: dict[int, float]
    #: ``[F, K]`` mean similarity of every feature's profile with the profiles of each
    #: module's features (the feature itself left out).
    affinity: torch.Tensor
    #: ``[C]`` the neuron-module labels in use, increasing (row ``i`` of the next three).
    neuron_modules: torch.Tensor
    #: ``[C]`` the feature module each neuron module carries, -1 for none.
    carried: torch.Tensor
    #: ``[C]`` +1 when the neuron module rises with the features of the module it carries,
    #: -1 when it falls (0 for none).
    sign: torch.Tensor
    #: ``[C]`` ``|mean r|`` of the neuron module's neurons with those features.
    strength: torch.Tensor
    #: ``[C, K]`` the signed mean correlation :math:`t_{cm}` of every neuron module's neurons
    #: with every feature module's features.
    signature: torch.Tensor


def _profile_distances(correlations: torch.Tensor) -> torch.Tensor:
    """``1 - cosine`` of the features' correlation profiles over the neurons, ``[F, F]``."""
    profiles = correlations.T.double()  # [F, N]
    unit = profiles / profiles.norm(dim=1, keepdim=True).clamp_min(1e-12)
    distances = (1.0 - unit @ unit.T).clamp_min(0.0)
    distances.fill_diagonal_(0.0)
    return distances


def graph_feature_modules(correlations: torch.Tensor, neuron_labels: torch.Tensor,
                          max_modules: int | None = None, min_strength: float = 0.2,
                          min_silhouette: float = metrics.MIN_SILHOUETTE) -> FeatureModules:
    r"""Feature (gene) modules read from the neurons of a learned graph, and the feature
    module each neuron module carries, with its sign.

    Every feature :math:`f` has a profile over the ``N`` neurons, its correlations
    :math:`r_{\cdot f}` (:func:`gsr_pyg.metrics.feature_correlations`). Features whose
    profiles point the same way are carried by the same neurons, whatever the number of
    neuron modules: the features are clustered by average linkage on
    :math:`d_{fg} = 1 - \cos(r_{\cdot f}, r_{\cdot g})`, and the number of feature modules
    :math:`K` is the cut with the highest mean silhouette
    (:func:`gsr_pyg.metrics.cluster_by_silhouette`; one module when no cut reaches
    ``min_silhouette``). A feature that falls as a module rises has the opposite profile,
    so it forms a module of its own.

    Neuron module :math:`c` then carries the feature module :math:`m` with the largest
    :math:`|t_{cm}|`, :math:`t_{cm} = \frac{1}{|c||m|}\sum_{n\in c}\sum_{f\in m} r_{nf}`,
    with the sign of :math:`t_{cm}`: two neuron modules with the same signature, or with
    opposite ones, carry one feature module (with the same or opposite signs). A neuron
    module whose :math:`\max_m |t_{cm}|` is below ``min_strength`` carries none (-1).

    Args:
        correlations: ``[N, F]`` neuron x feature correlations over held-out samples.
        neuron_labels: ``[N]`` integer module of every neuron (the graph's modules).
        max_modules: the most feature modules tried (default ``F // 2``, at least 2: modules
            of two features on average; at most ``F - 1``).
        min_strength: the least ``|t|`` of a carried module (default 0.2).
        min_silhouette: see :func:`gsr_pyg.metrics.cluster_by_silhouette` (default 0.25).

    Returns:
        :class:`FeatureModules`.

    Example:
        >>> # neurons 0-1 rise with features 0-1, neuron 2 falls with them, neuron 3
        >>> # carries feature 2 and 3
        >>> r = torch.tensor([[0.9, 0.8, 0.0, 0.1], [0.8, 0.9, 0.1, 0.0],
        ...                   [-0.9, -0.8, 0.0, 0.0], [0.0, 0.1, 0.9, 0.8]])
        >>> found = graph_feature_modules(r, torch.tensor([0, 0, 1, 2]))
        >>> found.assignment.tolist(), found.carried.tolist(), found.sign.tolist()
        ([0, 0, 1, 1], [0, 0, 1], [1, -1, 1])
    """
    check_tensor(correlations, "correlations", ndim=2, floating=True)
    check_finite(correlations, "correlations")
    min_strength = check_positive(min_strength, "min_strength", allow_zero=True)
    num_features = correlations.size(1)
    if num_features < 2:
        raise ValueError(f"correlations must have at least 2 features (columns), got "
                         f"{num_features}")
    labels_in_use = torch.unique(torch.as_tensor(neuron_labels).long())
    signed = metrics.feature_loadings(correlations, neuron_labels, absolute=False)  # [F, C]
    distances = _profile_distances(correlations)
    clustering = metrics.cluster_by_silhouette(
        distances, "average", max_clusters=_max_modules(max_modules, num_features),
        min_silhouette=min_silhouette)
    assignment = clustering.labels.to(correlations.device)
    member = torch.nn.functional.one_hot(assignment, clustering.num_clusters).double()
    similarity = (1.0 - distances.to(member.device)) @ member - member  # leave f itself out
    counts = member.sum(dim=0, keepdim=True) - member
    affinity = (similarity / counts.clamp_min(1)).to(correlations.dtype)
    carries = (signed.double().T @ member) / member.sum(dim=0)  # [C, K]: t_cm
    strength, carried = carries.abs().max(dim=1)
    sign = torch.sign(carries.gather(1, carried[:, None]).squeeze(1)).long()
    weak = strength < min_strength
    carried = carried.masked_fill(weak, -1)
    sign = sign.masked_fill(weak, 0)
    return FeatureModules(assignment, clustering.num_clusters, clustering.silhouettes,
                          affinity, labels_in_use.to(correlations.device), carried, sign,
                          strength.to(correlations.dtype), carries.to(correlations.dtype))


#: The baselines of :func:`feature_module_baselines`, in order.
BASELINE_METHODS = ("louvain_corr", "average_corr", "kmeans_pca")


def feature_module_baselines(inputs: torch.Tensor, max_modules: int | None = None,
                             seed: int = 0,
                             min_silhouette: float = metrics.MIN_SILHOUETTE
                             ) -> dict[str, metrics.Clustering]:
    r"""Feature modules straight from the data, without any network: what a learned neuron
    graph has to beat.

    With :math:`C` the features' Pearson correlation matrix over the samples:

    * ``"louvain_corr"``: Louvain communities (:func:`networkx.community.louvain_communities`,
      seeded) of the complete graph over the features with weights :math:`|C_{fg}|`;
    * ``"average_corr"``: average-linkage clustering of :math:`1 - |C_{fg}|`, the number of
      modules by the silhouette (:func:`gsr_pyg.metrics.cluster_by_silhouette`), as
      :func:`graph_feature_modules` chooses its own;
    * ``"kmeans_pca"``: k-means of the features' PCA loadings (the eigenvectors of
      :math:`C` with eigenvalue > 1, Kaiser's rule, scaled by the square root of the
      eigenvalue), the number of modules by the silhouette on the loadings' euclidean
      distances.

    Args:
        inputs: ``[S, F]`` samples (``S >= 2``, ``F >= 3``).
        max_modules: the most modules tried by the silhouette (default ``F // 2``, at least
            2, as in :func:`graph_feature_modules`).
        seed: seed of Louvain and of the k-means (default 0).
        min_silhouette: see :func:`gsr_pyg.metrics.cluster_by_silhouette`.

    Returns:
        ``{method: Clustering}`` (Louvain's ``silhouettes`` is empty: it chooses its own
        number of modules).

    Example:
        >>> z = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
        >>> x = z[:, [0, 0, 0, 1, 1, 1]] + 0.3 * torch.randn(500, 6)
        >>> {m: c.labels.tolist() for m, c in feature_module_baselines(x).items()}
        ... # doctest: +NORMALIZE_WHITESPACE
        {'louvain_corr': [0, 0, 0, 1, 1, 1], 'average_corr': [0, 0, 0, 1, 1, 1],
         'kmeans_pca': [0, 0, 0, 1, 1, 1]}
    """
    check_tensor(inputs, "inputs", ndim=2, floating=True)
    check_finite(inputs, "inputs")
    check_int(seed, "seed")
    if inputs.size(0) < 2 or inputs.size(1) < 3:
        raise ValueError(f"inputs must have at least 2 samples and 3 features, got shape "
                         f"{tuple(inputs.shape)}")
    import networkx as nx

    x = inputs.detach().double().cpu()
    max_modules = _max_modules(max_modules, x.size(1))
    corr = metrics.feature_correlations(x, x)  # [F, F]
    magnitude = corr.abs().clamp_max(1.0)
    graph = nx.Graph()
    graph.add_nodes_from(range(x.size(1)))
    rows, cols = torch.triu_indices(x.size(1), x.size(1), offset=1)
    graph.add_weighted_edges_from(
        (r, c, w) for r, c, w in zip(rows.tolist(), cols.tolist(),
                                     magnitude[rows, cols].tolist()) if w > 0)
    communities = nx.community.louvain_communities(graph, weight="weight", seed=seed)
    louvain = torch.empty(x.size(1), dtype=torch.long)
    for module, members in enumerate(communities):
        louvain[list(members)] = module
    out = {"louvain_corr": metrics.Clustering(metrics._first_appearance(louvain),
                                              len(communities), {})}
    distances = 1.0 - magnitude
    distances.fill_diagonal_(0.0)
    out["average_corr"] = metrics.cluster_by_silhouette(
        distances, "average", max_clusters=max_modules, min_silhouette=min_silhouette)
    values, vectors = torch.linalg.eigh(corr)
    keep = values > 1.0
    if not bool(keep.any()):
        keep = values == values.max()
    loadings = vectors[:, keep] * values[keep].sqrt()
    out["kmeans_pca"] = metrics.cluster_by_silhouette(
        torch.cdist(loadings, loadings), "kmeans", points=loadings, max_clusters=max_modules,
        min_silhouette=min_silhouette, seed=seed)
    return out


def _max_modules(max_modules: int | None, num_features: int) -> int:
    """The most modules tried: ``max_modules`` (checked), default ``F // 2`` (at least 2)."""
    if max_modules is None:
        return max(2, num_features // 2)
    return check_int(max_modules, "max_modules", minimum=1)
