r"""Read-outs of a structured hidden layer: what its neurons do, per class, group or module.

All functions take activations ``[S, N]`` (``S`` samples, ``N`` neurons, node ``i`` of the
layer's graph is column ``i``) and return tensors on the device of their input.

* :func:`class_mean_maps` / :func:`group_mean_activity`: the mean activation of every
  neuron over the samples of each class (or cell type, branch, pseudotime bin).
* :func:`subtract_global_mean`: the class maps minus the global mean map, which shows what
  makes each class different.
* :func:`segmentation_map`: the paper's segmentation of the neuron grid into the classes
  that claim each neuron.
* :func:`pseudotime_bins`: quantile bins of a continuous pseudotime.
* :func:`module_activity`: the mean activation of each neuron module, per sample.

Example::

    maps = class_mean_maps(activations, labels, num_classes=10)   # [10, 64]
    seg = segmentation_map(maps).view(8, 8)                       # class per grid cell
"""

from __future__ import annotations

import torch

from ._validation import check_finite, check_int, check_tensor, describe

__all__ = [
    "class_mean_maps",
    "group_mean_activity",
    "subtract_global_mean",
    "segmentation_map",
    "pseudotime_bins",
    "module_activity",
]


def _as_float(values: torch.Tensor) -> torch.Tensor:
    return values if values.is_floating_point() else values.to(torch.get_default_dtype())


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


def _group_means(values: torch.Tensor, index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Mean of the rows of ``values`` [S, N] per group ``index`` [S] -> [G, N]; NaN if empty."""
    values = _as_float(values)
    index = index.to(device=values.device, dtype=torch.long)
    sums = values.new_zeros(num_groups, values.size(1)).index_add_(0, index, values)
    counts = torch.bincount(index, minlength=num_groups).to(values.dtype)
    # 0 / 0 = NaN marks a group without samples; no special case needed.
    return sums / counts.unsqueeze(1)


def class_mean_maps(activations: torch.Tensor, labels: torch.Tensor,
                    num_classes: int | None = None) -> torch.Tensor:
    r"""Mean activation of every neuron over the samples of each class.

    .. math::
        M_{cn} = \frac{1}{|\{s : y_s = c\}|} \sum_{s : y_s = c} a_{sn}

    Args:
        activations: ``[S, N]`` layer activations (integer input is cast to float).
        labels: ``[S]`` integer class of each sample, in ``[0, num_classes)``.
        num_classes: number of rows of the result (default ``labels.max() + 1``).

    Returns:
        ``[C, N]`` floating tensor on the device of ``activations``. A class without any
        sample gets a row of NaN (an honest "no data", which plots as blank).

    Example::

        >>> a = torch.tensor([[1., 0.], [3., 2.], [5., 5.]])
        >>> class_mean_maps(a, torch.tensor([0, 0, 1]))
        tensor([[2., 1.],
                [5., 5.]])
    """
    check_tensor(activations, "activations", ndim=2)
    num_classes = _check_index(labels, "labels", activations.size(0), "sample",
                               num_classes, "num_classes")
    return _group_means(activations, labels, num_classes)


def group_mean_activity(activations: torch.Tensor, groups: torch.Tensor,
                        num_groups: int | None = None) -> torch.Tensor:
    r"""Mean activation of every neuron per group of samples (cell type, branch, time bin).

    The same read-out as :func:`class_mean_maps` under a name that fits groups that are not
    classes, e.g. ``group_mean_activity(latent, pseudotime_bins(t, 5))``.

    Args:
        activations: ``[S, N]`` layer activations.
        groups: ``[S]`` integer group of each sample.
        num_groups: number of rows of the result (default ``groups.max() + 1``).

    Returns:
        ``[G, N]``; a group without samples gets a row of NaN.
    """
    check_tensor(activations, "activations", ndim=2)
    num_groups = _check_index(groups, "groups", activations.size(0), "sample",
                              num_groups, "num_groups")
    return _group_means(activations, groups, num_groups)


def subtract_global_mean(maps: torch.Tensor,
                         activations: torch.Tensor | None = None) -> torch.Tensor:
    r"""Class maps minus the global mean map: what is special about each class.

    .. math::
        M'_{cn} = M_{cn} - \mu_n

    With ``activations`` ``[S, N]`` given, :math:`\mu` is the mean over all samples (classes
    weighted by their size). Without it, :math:`\mu` is the mean of the class maps (every
    class weighted equally; rows of NaN, i.e. classes without samples, are left out).
    Equal class sizes make the two the same.

    Args:
        maps: ``[C, N]`` class maps, e.g. from :func:`class_mean_maps`.
        activations: optional ``[S, N]`` activations the maps were computed from.

    Returns:
        ``[C, N]`` tensor; NaN rows stay NaN.

    Example::

        >>> maps = torch.tensor([[1., 3.], [3., 5.]])
        >>> subtract_global_mean(maps)
        tensor([[-1., -1.],
                [ 1.,  1.]])
    """
    check_tensor(maps, "maps", ndim=2)
    maps = _as_float(maps)
    if activations is None:
        global_map = torch.nanmean(maps, dim=0)
    else:
        check_tensor(activations, "activations", ndim=2)
        if activations.size(1) != maps.size(1):
            raise ValueError(
                f"activations must have one column per neuron of maps ({maps.size(1)}), "
                f"got {describe(activations)}"
            )
        global_map = _as_float(activations).to(maps.device).mean(dim=0).to(maps.dtype)
    return maps - global_map.unsqueeze(0)


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
                    num_modules: int | None = None) -> torch.Tensor:
    r"""Mean activation of each neuron module, per sample.

    .. math::
        m_{sk} = \frac{1}{|\{n : \ell_n = k\}|} \sum_{n : \ell_n = k} a_{sn}

    Args:
        activations: ``[S, N]`` layer activations.
        neuron_labels: ``[N]`` integer module of each neuron (e.g. graph communities).
        num_modules: number of columns of the result (default ``neuron_labels.max() + 1``).

    Returns:
        ``[S, M]``; a module without neurons gets a column of NaN.

    Example::

        >>> a = torch.tensor([[1., 3., 10.], [0., 2., 4.]])
        >>> module_activity(a, torch.tensor([0, 0, 1]))
        tensor([[ 2., 10.],
                [ 1.,  4.]])
    """
    check_tensor(activations, "activations", ndim=2)
    num_modules = _check_index(neuron_labels, "neuron_labels", activations.size(1), "neuron",
                               num_modules, "num_modules")
    return _group_means(activations.t(), neuron_labels, num_modules).t()
