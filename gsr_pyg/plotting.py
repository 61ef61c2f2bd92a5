"""Figures of structured layers: activation maps, segmentations, graphs and their evolution.

Every function takes plain tensors (or arrays) and graphs as PyG ``Data`` / ``edge_index``,
returns a :class:`matplotlib.figure.Figure` and, when ``path`` is given, also saves it with
:func:`save_figure`. Figures are built with ``Figure`` + the Agg canvas, so no pyplot state
and no display are needed; matplotlib is imported only when a figure is drawn, which keeps
``import gsr_pyg`` fast.

Example::

    maps = readouts.class_mean_maps(activations, labels, num_classes=10)
    fig = plot_grid_maps(maps, grid_shape=(8, 8), path="run/class_maps.png")
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import coalesce

from ._validation import check_int, check_positive, describe
from .files import atomic_write
from .graphs import check_graph, edge_weights, from_edge_index
from .spectral import connected_components

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "save_figure",
    "spring_layout",
    "plot_grid_maps",
    "plot_segmentation",
    "plot_examples",
    "plot_weight_comparison",
    "plot_graph",
    "plot_graph_evolution",
    "plot_heatmap",
    "plot_curves",
    "plot_tradeoff",
    "plot_embedding",
    "plot_group_activity_on_graph",
    "plot_feature_correlations",
    "plot_embedding_panels",
    "module_colormap",
    "label_module_colorbar",
    "plot_graph_spectrum",
]

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- helpers
def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, path: PathLike | None, dpi: int) -> Figure:
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


def _set_texts(ax: Axes, title: str | None, xlabel: str | None = None,
               ylabel: str | None = None) -> None:
    """Title and axis labels, each only when given."""
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)


def _to_numpy(value, name: str, *, ndim: int | tuple[int, ...] | None = None,
              dtype=np.float64) -> np.ndarray:
    """A tensor, array or sequence as a numpy array (plots are not a hot path)."""
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().numpy()
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name} must be a tensor or array, got {describe(value)}") from error
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if array.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {tuple(array.shape)}")
    try:
        return array.astype(dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must hold numbers, got {describe(value)}") from error


def _grid_shape(num_nodes: int, grid_shape: Sequence[int] | None, name: str) -> tuple[int, int]:
    if grid_shape is None:
        side = math.isqrt(num_nodes)
        if side * side != num_nodes:
            raise ValueError(
                f"grid_shape must be given for {name} with {num_nodes} nodes (not a square)"
            )
        return side, side
    if len(grid_shape) != 2:
        raise ValueError(f"grid_shape must be (height, width), got {describe(grid_shape)}")
    height = check_int(int(grid_shape[0]), "grid_shape[0]", minimum=1)
    width = check_int(int(grid_shape[1]), "grid_shape[1]", minimum=1)
    if height * width != num_nodes:
        raise ValueError(
            f"grid_shape {(height, width)} holds {height * width} nodes but {name} has "
            f"{num_nodes}"
        )
    return height, width


def _categorical_colors(count: int) -> list:
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, count)]


def _text_color(rgba) -> str:
    """Black or white, whichever reads better on ``rgba``."""
    red, green, blue = rgba[:3]
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"


def _nan_range(*arrays: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([np.ravel(a) for a in arrays])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    if low == high:  # a constant map still needs a non-empty range
        low, high = low - 0.5, high + 0.5
    return low, high


def _format_number(value: float) -> str:
    if value == 0:
        return "0"
    exponent = math.log10(abs(value))
    if abs(exponent - round(exponent)) < 1e-9 and abs(exponent) >= 3:
        return f"{'-' if value < 0 else ''}1e{int(round(exponent))}"
    return f"{value:g}"


def _set_weight_axis(ax: Axes, x: np.ndarray, log: bool) -> None:
    """Log x axis; symlog (linear around 0) when 0 is among the values, so it is shown."""
    positive = x[x > 0]
    if log and positive.size:
        if np.any(x == 0):
            ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=0.5)
        else:
            ax.set_xscale("log")
        ticks = np.unique(x)
        if ticks.size <= 12:
            ax.set_xticks(ticks, [_format_number(t) for t in ticks])
            ax.minorticks_off()


def save_figure(fig: Figure, path: PathLike, dpi: int = 150) -> Path:
    """Save ``fig`` to ``path`` atomically: a temporary file beside it, then ``os.replace``.

    The format follows the suffix (``.png`` when there is none); missing parent folders are
    created. A reader never sees a half-written file, and a failed save leaves no debris.

    Args:
        fig: the figure to save.
        path: destination file.
        dpi: resolution for raster formats (default 150).

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Example::

        >>> save_figure(plot_curves([1, 10], {"L1": [0.2, 0.3]}), "out/curves.png")
        PosixPath('out/curves.png')
    """
    check_int(dpi, "dpi", minimum=1)
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"path must end with one of {sorted('.' + f for f in supported)}, got {str(path)!r}"
        )
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    return path


# --------------------------------------------------------------------------- grids
def plot_grid_maps(maps, grid_shape: Sequence[int] | None = None,
                   titles: Sequence[str] | None = None, ncols: int = 5,
                   shared_range: bool = True, cmap: str | None = None,
                   diverging: bool = False, colorbar_label: str | None = None,
                   suptitle: str | None = None, path: PathLike | None = None,
                   dpi: int = 150) -> Figure:
    """One panel per map on the neuron grid: the paper's 2x5 panel of per-class 8x8 maps.

    Node ``i`` is drawn at row ``i // W``, column ``i % W`` (row-major, as the grids are
    numbered). NaN entries (e.g. a class without samples) are left blank.

    Args:
        maps: ``[C, H*W]`` or ``[C, H, W]`` maps (tensor or array).
        grid_shape: ``(H, W)``; default: the shape of 3-D ``maps``, or a square grid.
        titles: one title per map (default ``"0"``, ``"1"``, ...).
        ncols: panels per row (default 5).
        shared_range: one colour range and one colour bar for all panels (default), so
            panels compare; otherwise each panel has its own range and colour bar.
        cmap: colour map (default ``"viridis"``, or ``"RdBu_r"`` when ``diverging``).
        diverging: use a range symmetric around 0, for maps with the global mean subtracted.
        colorbar_label: label of the colour bar(s).
        suptitle: title over the whole figure.
        path: save the figure there (see :func:`save_figure`).
        dpi: resolution when saving.

    Example::

        >>> fig = plot_grid_maps(torch.rand(10, 64), grid_shape=(8, 8))
    """
    array = _to_numpy(maps, "maps", ndim=(2, 3))
    if array.ndim == 3:
        if grid_shape is not None and tuple(grid_shape) != array.shape[1:]:
            raise ValueError(
                f"grid_shape {tuple(grid_shape)} does not match maps of shape {array.shape}"
            )
        height, width = array.shape[1:]
    else:
        height, width = _grid_shape(array.shape[1], grid_shape, "maps")
    count = array.shape[0]
    if count == 0:
        raise ValueError("maps must hold at least one map, got 0")
    array = array.reshape(count, height, width)
    check_int(ncols, "ncols", minimum=1)
    if titles is None:
        titles = [str(i) for i in range(count)]
    elif len(titles) != count:
        raise ValueError(f"titles must have one entry per map ({count}), got {len(titles)}")
    cmap = cmap or ("RdBu_r" if diverging else "viridis")

    columns = min(ncols, count)
    rows = math.ceil(count / columns)
    panel = 1.9 if shared_range else 2.2
    fig = _new_figure(panel * columns + 1.0, panel * rows + (0.5 if suptitle else 0.2))
    axes = fig.subplots(rows, columns, squeeze=False)

    def value_range(*chosen: np.ndarray) -> tuple[float, float]:
        low, high = _nan_range(*chosen)
        if diverging:
            bound = max(abs(low), abs(high))
            return -bound, bound
        return low, high

    shared = value_range(array)
    image = None
    for index, ax in enumerate(axes.flat):
        if index >= count:
            ax.set_visible(False)
            continue
        low, high = shared if shared_range else value_range(array[index])
        image = ax.imshow(array[index], cmap=cmap, vmin=low, vmax=high,
                          interpolation="nearest")
        ax.set_title(titles[index], fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if not shared_range:
            fig.colorbar(image, ax=ax, shrink=0.8, label=colorbar_label)
    if shared_range:
        fig.colorbar(image, ax=axes[:, :].ravel().tolist(), shrink=0.85, label=colorbar_label)
    if suptitle:
        fig.suptitle(suptitle)
    return _finish(fig, path, dpi)


def plot_segmentation(segmentation, grid_shape: Sequence[int] | None = None,
                      class_names: Sequence[str] | None = None, num_classes: int | None = None,
                      title: str | None = "segmentation map", path: PathLike | None = None,
                      dpi: int = 150) -> Figure:
    """The segmentation map: each grid cell in the colour of its class, with its class index.

    Args:
        segmentation: ``[H*W]`` or ``[H, W]`` integer class per neuron (e.g. from
            :func:`gsr_pyg.readouts.segmentation_map`).
        grid_shape: ``(H, W)``; default: the shape of 2-D input, or a square grid.
        class_names: legend names (default the class indices).
        num_classes: number of classes in the legend (default ``len(class_names)`` or
            ``max + 1``).
        title: axes title.
        path, dpi: save the figure (see :func:`save_figure`).

    Example::

        >>> fig = plot_segmentation(torch.arange(64) % 10, grid_shape=(8, 8))
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    array = _to_numpy(segmentation, "segmentation", ndim=(1, 2))
    if array.size == 0:
        raise ValueError("segmentation must not be empty")
    if np.any(array != np.round(array)) or array.min() < 0:
        raise ValueError("segmentation must hold non-negative integer classes")
    if array.ndim == 2:
        height, width = _grid_shape(array.size, grid_shape or array.shape, "segmentation")
    else:
        height, width = _grid_shape(array.size, grid_shape, "segmentation")
    grid = array.astype(np.int64).reshape(height, width)
    if num_classes is None:
        num_classes = len(class_names) if class_names is not None else int(grid.max()) + 1
    check_int(num_classes, "num_classes", minimum=1)
    if grid.max() >= num_classes:
        raise ValueError(
            f"segmentation holds class {int(grid.max())} but num_classes is {num_classes}"
        )
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"class_names must have {num_classes} entries, got {len(class_names)}"
        )
    names = [str(c) for c in range(num_classes)] if class_names is None else list(class_names)
    colors = _categorical_colors(num_classes)

    cell = min(0.6, 6.0 / max(height, width))
    fig = _new_figure(cell * width + 2.2, cell * height + 0.6)
    ax = fig.subplots()
    ax.imshow(grid, cmap=ListedColormap(colors), vmin=-0.5, vmax=num_classes - 0.5,
              interpolation="nearest")
    fontsize = max(5.0, min(11.0, 60.0 / max(height, width)))
    for row in range(height):
        for column in range(width):
            label = grid[row, column]
            ax.text(column, row, str(label), ha="center", va="center", fontsize=fontsize,
                    color=_text_color(colors[label]))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    handles = [Patch(facecolor=colors[c], edgecolor="none", label=names[c])
               for c in range(num_classes)]
    fig.legend(handles=handles, loc="outside right center", title="class", frameon=False)
    return _finish(fig, path, dpi)


def plot_examples(images, embeddings, labels, predictions,
                  grid_shape: Sequence[int] | None = None, cmap: str = "viridis",
                  path: PathLike | None = None, dpi: int = 150) -> Figure:
    """A row of inputs with their grid embeddings underneath, titled ``(label, prediction)``.

    Misclassified examples have red titles. The embeddings share one colour range and bar.

    Args:
        images: ``[K, 1, H, W]``, ``[K, H, W]`` or ``[K, H*W]`` (square) input images.
        embeddings: ``[K, N]`` activations of the grid layer for the same inputs.
        labels: ``[K]`` true classes.
        predictions: ``[K]`` predicted classes.
        grid_shape: grid of the embedding (default square).
        cmap: colour map of the embeddings.
        path, dpi: save the figure (see :func:`save_figure`).

    Example::

        >>> fig = plot_examples(torch.rand(5, 1, 28, 28), torch.rand(5, 64),
        ...                     [1, 2, 3, 4, 5], [1, 2, 3, 4, 0])
    """
    pictures = _to_numpy(images, "images", ndim=(2, 3, 4))
    if pictures.ndim == 4:
        if pictures.shape[1] != 1:
            raise ValueError(f"images must have one channel, got shape {pictures.shape}")
        pictures = pictures[:, 0]
    elif pictures.ndim == 2:
        side = _grid_shape(pictures.shape[1], None, "images")
        pictures = pictures.reshape(-1, *side)
    count = pictures.shape[0]
    codes = _to_numpy(embeddings, "embeddings", ndim=2)
    truth = _to_numpy(labels, "labels", ndim=1, dtype=np.int64)
    guess = _to_numpy(predictions, "predictions", ndim=1, dtype=np.int64)
    for name, array in (("embeddings", codes), ("labels", truth), ("predictions", guess)):
        if array.shape[0] != count:
            raise ValueError(f"{name} must have one entry per image ({count}), got "
                             f"{array.shape[0]}")
    if count == 0:
        raise ValueError("images must hold at least one example")
    height, width = _grid_shape(codes.shape[1], grid_shape, "embeddings")
    codes = codes.reshape(count, height, width)
    low, high = _nan_range(codes)

    fig = _new_figure(1.5 * count + 1.0, 3.4)
    axes = fig.subplots(2, count, squeeze=False)
    image = None
    for k in range(count):
        top, bottom = axes[0, k], axes[1, k]
        top.imshow(pictures[k], cmap="gray_r", interpolation="nearest")
        wrong = truth[k] != guess[k]
        top.set_title(f"({truth[k]}, {guess[k]})", color="red" if wrong else "black",
                      fontsize=10, fontweight="bold" if wrong else "normal")
        image = bottom.imshow(codes[k], cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("embedding")
    fig.colorbar(image, ax=axes[1, :].tolist(), shrink=0.9, label="activation")
    return _finish(fig, path, dpi)


# --------------------------------------------------------------------------- curves
def plot_weight_comparison(weights, accuracy, morans_i, *, xlabel: str = "penalty weight",
                           accuracy_label: str = "test accuracy",
                           morans_label: str = "Moran's I", title: str | None = None,
                           path: PathLike | None = None, dpi: int = 150) -> Figure:
    """Accuracy and Moran's I against the penalty weight, on one panel with two y axes.

    The x axis is logarithmic; when the weight 0 (no penalty) is present it is symlog,
    linear below the smallest positive weight, so 0 is shown.

    Args:
        weights: ``[K]`` non-negative penalty weights (any order).
        accuracy: ``[K]`` accuracy per weight (left axis).
        morans_i: ``[K]`` Moran's I of the layer per weight (right axis).
        xlabel, accuracy_label, morans_label, title: texts.
        path, dpi: save the figure (see :func:`save_figure`).

    Example::

        >>> fig = plot_weight_comparison([0, 1e-4, 1e-2], [0.99, 0.99, 0.97], [0.0, 0.3, 0.8])
    """
    x = _to_numpy(weights, "weights", ndim=1)
    first = _to_numpy(accuracy, "accuracy", ndim=1)
    second = _to_numpy(morans_i, "morans_i", ndim=1)
    for name, array in (("accuracy", first), ("morans_i", second)):
        if array.shape != x.shape:
            raise ValueError(f"{name} must have one entry per weight ({x.size}), got "
                             f"{array.size}")
    if x.size == 0 or np.any(~np.isfinite(x)) or np.any(x < 0):
        raise ValueError(f"weights must be finite, >= 0 and non-empty, got {x.tolist()}")
    order = np.argsort(x, kind="stable")
    x, first, second = x[order], first[order], second[order]

    fig = _new_figure(5.5, 3.6)
    ax = fig.subplots()
    left_color, right_color = "tab:blue", "tab:orange"
    left = ax.plot(x, first, "o-", color=left_color, label=accuracy_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(accuracy_label, color=left_color)
    ax.tick_params(axis="y", colors=left_color)
    twin = ax.twinx()
    right = twin.plot(x, second, "s--", color=right_color, label=morans_label)
    twin.set_ylabel(morans_label, color=right_color)
    twin.tick_params(axis="y", colors=right_color)
    _set_weight_axis(ax, x, log=True)
    ax.grid(alpha=0.3)
    ax.legend(handles=left + right, loc="best", frameon=False)
    if title:
        ax.set_title(title)
    return _finish(fig, path, dpi)


def plot_curves(x, ys: Mapping[str, Sequence[float]], xlabel: str = "penalty weight",
                ylabel: str = "MSE", logx: bool = True, logy: bool = False,
                title: str | None = None, path: PathLike | None = None,
                dpi: int = 150) -> Figure:
    """One line per named series against a shared x, e.g. MSE against strength per regularizer.

    Args:
        x: ``[K]`` x values (with ``logx``, 0 is shown on a symlog axis).
        ys: ``{name: [K] values}``; NaN values leave gaps.
        xlabel, ylabel, title: texts.
        logx, logy: logarithmic axes.
        path, dpi: save the figure (see :func:`save_figure`).

    Example::

        >>> fig = plot_curves([1e-3, 1, 1e3], {"GSR": [0.02, 0.02, 0.03], "L1": [0.02, 0.05, 0.1]})
    """
    xs = _to_numpy(x, "x", ndim=1)
    if not isinstance(ys, Mapping) or not ys:
        raise TypeError(f"ys must be a non-empty dict of name -> values, got {describe(ys)}")
    fig = _new_figure(5.5, 3.6)
    ax = fig.subplots()
    markers = "osD^v<>ph*"
    for index, (name, values) in enumerate(ys.items()):
        series = _to_numpy(values, f"ys[{name!r}]", ndim=1)
        if series.shape != xs.shape:
            raise ValueError(f"ys[{name!r}] must have one value per x ({xs.size}), got "
                             f"{series.size}")
        order = np.argsort(xs, kind="stable")
        ax.plot(xs[order], series[order], marker=markers[index % len(markers)], label=str(name))
    if logx:
        if np.any(xs < 0):
            raise ValueError("x must be >= 0 with logx=True")
        _set_weight_axis(ax, xs, log=True)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    return _finish(fig, path, dpi)


# --------------------------------------------------------------------------- graphs
def plot_tradeoff(panels: Sequence[Mapping], *, ncols: int = 2, suptitle: str | None = None,
                  path: PathLike | None = None, dpi: int = 150) -> Figure:
    """Task cost against structure, one line per method, each point labelled (e.g. by its
    strength), on one or more panels.

    Args:
        panels: one mapping per panel with ``"series"``: ``{method: [(x, y, label), ...]}``
            (points joined in the given order; NaN coordinates are left out), and optionally
            ``"baseline"``: ``(x, y, label)`` drawn as a black star, ``"title"``,
            ``"xlabel"``, ``"ylabel"``.
        ncols: panels per row.
        suptitle: title over all panels.
        path, dpi: save the figure (see :func:`save_figure`).

    Example::

        >>> fig = plot_tradeoff([{"series": {"GSR": [(0.3, 1.2, "0.01"), (0.7, 1.4, "0.1")]},
        ...                       "baseline": (0.0, 1.1, "none")}])
    """
    if isinstance(panels, Mapping) or not isinstance(panels, Sequence) or not panels:
        raise TypeError(f"panels must be a non-empty list of panel mappings, got "
                        f"{describe(panels)}")
    ncols = min(check_int(ncols, "ncols", minimum=1), len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _new_figure(5.0 * ncols, 3.8 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    markers = "osD^v<>ph"
    for index, panel in enumerate(panels):
        if not isinstance(panel, Mapping) or not isinstance(panel.get("series"), Mapping):
            raise TypeError(f"panels[{index}] must be a mapping with a 'series' mapping, got "
                            f"{describe(panel)}")
        ax = axes[index]
        for number, (method, points) in enumerate(panel["series"].items()):
            xy = _to_numpy([p[:2] for p in points], f"panels[{index}]['series'][{method!r}]",
                           ndim=2) if points else np.zeros((0, 2))
            keep = np.isfinite(xy).all(axis=1)
            line = ax.plot(xy[keep, 0], xy[keep, 1], marker=markers[number % len(markers)],
                           label=str(method))[0]
            for (x, y), point in zip(xy[keep], [p for p, k in zip(points, keep) if k]):
                if len(point) > 2:
                    ax.annotate(str(point[2]), (x, y), textcoords="offset points",
                                xytext=(4, 4), fontsize=7, color=line.get_color())
        baseline = panel.get("baseline")
        if baseline is not None:
            ax.plot([baseline[0]], [baseline[1]], "k*", markersize=11,
                    label=str(baseline[2]) if len(baseline) > 2 else "baseline")
        ax.grid(alpha=0.3)
        ax.margins(0.12)  # room for the point labels at the edges
        ax.legend(loc="best", frameon=False, fontsize=8)
        _set_texts(ax, panel.get("title"), panel.get("xlabel"), panel.get("ylabel"))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle)
    return _finish(fig, path, dpi)


def _as_graph(graph, edge_weight, num_nodes: int | None) -> Data:
    """The graph to draw, checked as every graph is (:func:`gsr_pyg.graphs.check_graph`).

    A ``Data`` is taken as it is (``edge_weight``, when given, replaces its weights); an
    ``edge_index`` ``[2, E]`` (tensor or array) becomes a graph with
    :func:`gsr_pyg.graphs.from_edge_index` (one direction per edge is enough, self-loops
    are dropped)."""
    if isinstance(graph, torch.Tensor | np.ndarray):
        edges = _to_numpy(graph, "edge_index", ndim=2, dtype=np.int64)
        weights = None if edge_weight is None else torch.from_numpy(
            _to_numpy(edge_weight, "edge_weight", ndim=1))
        return from_edge_index(torch.from_numpy(edges), weights, num_nodes)
    if not isinstance(graph, Data):
        raise TypeError(
            f"graph must be a torch_geometric Data or an edge_index tensor, got {describe(graph)}"
        )
    if edge_weight is not None:
        weights = torch.from_numpy(_to_numpy(edge_weight, "edge_weight", ndim=1))
        graph = Data(edge_index=graph.edge_index, edge_weight=weights.to(graph.edge_index.device),
                     num_nodes=graph.num_nodes, pos=graph.pos)
    return check_graph(graph, num_nodes)


def _undirected_edges(graph: Data) -> tuple[np.ndarray, np.ndarray | None]:
    """Each undirected edge once as ``(low, high)``, row-major, with its weight (``None`` for
    an unweighted graph)."""
    edge_index = graph.edge_index.cpu()
    upper = (edge_index[0] < edge_index[1]).numpy()
    pairs = edge_index.numpy()[:, upper]
    order = np.lexsort((pairs[1], pairs[0]))
    if graph.edge_weight is None:
        return pairs[:, order], None
    weights = graph.edge_weight.detach().cpu().double().numpy()[upper]
    return pairs[:, order], weights[order]


def spring_layout(graph, num_nodes: int | None = None, edge_weight=None,
                  seed: int = 0, iterations: int = 200) -> torch.Tensor:
    """A force-directed 2-D layout of a graph (networkx ``spring_layout``, weighted, seeded).

    Args:
        graph: a ``Data`` or an ``edge_index`` ``[2, E]``.
        num_nodes: number of nodes (default from ``Data`` or ``edge_index.max() + 1``).
        edge_weight: ``[E]`` weights (default ``data.edge_weight`` if present).
        seed: random seed of the layout (default 0, so layouts repeat).
        iterations: force-directed steps (default 200; networkx's 50 leaves grids of 64
            nodes folded).

    Returns:
        ``[N, 2]`` float32 positions, on the device of the edge index when it is a tensor.

    Example::

        >>> spring_layout(torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])).shape
        torch.Size([3, 2])
    """
    import networkx as nx

    check_int(iterations, "iterations", minimum=1)
    data = _as_graph(graph, edge_weight, num_nodes)
    count = data.num_nodes
    pairs, pair_weights = _undirected_edges(data)
    nx_graph = nx.Graph()
    nx_graph.add_nodes_from(range(count))
    if pair_weights is None:
        pair_weights = np.ones(pairs.shape[1])
    nx_graph.add_weighted_edges_from(
        zip(pairs[0].tolist(), pairs[1].tolist(), pair_weights.tolist(), strict=True)
    )
    layout = nx.spring_layout(nx_graph, seed=seed, weight="weight", iterations=iterations)
    positions = np.array([layout[i] for i in range(count)], dtype=np.float32).reshape(count, 2)
    device = graph.device if isinstance(graph, torch.Tensor) else data.edge_index.device
    return torch.from_numpy(positions).to(device)


def _draw_graph(ax: Axes, pairs: np.ndarray, pair_weights: np.ndarray | None,
                positions: np.ndarray, colors, *, cmap, vmin, vmax, node_size: float,
                edge_alpha: float, edge_width: float):
    from matplotlib.collections import LineCollection

    if pairs.shape[1]:
        if pair_weights is not None and np.max(pair_weights) > 0:
            widths = edge_width * (0.25 + 0.75 * pair_weights / np.max(pair_weights))
        else:
            widths = np.full(pairs.shape[1], edge_width)
        segments = np.stack([positions[pairs[0]], positions[pairs[1]]], axis=1)
        ax.add_collection(LineCollection(segments, linewidths=widths, colors="0.35",
                                         alpha=edge_alpha, zorder=1))
    scatter = ax.scatter(positions[:, 0], positions[:, 1], c=colors, cmap=cmap, vmin=vmin,
                         vmax=vmax, s=node_size, edgecolors="black", linewidths=0.3, zorder=2,
                         plotnonfinite=True)
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.06)
    ax.set_axis_off()
    return scatter


def _positions(pos, num_nodes: int, name: str) -> np.ndarray:
    array = _to_numpy(pos, name, ndim=2)
    if array.shape != (num_nodes, 2):
        raise ValueError(f"{name} must have shape [{num_nodes}, 2], got {tuple(array.shape)}")
    return array


def _node_signal(signal, num_nodes: int, name: str) -> np.ndarray:
    if signal is None:
        return np.arange(num_nodes, dtype=np.float64)
    array = _to_numpy(signal, name, ndim=1)
    if array.size != num_nodes:
        raise ValueError(f"{name} must have one value per node ({num_nodes}), got {array.size}")
    return array


def plot_graph(data_or_edge_index, signal=None, pos=None, *, edge_weight=None,
               num_nodes: int | None = None, ax: Axes | None = None, cmap: str = "viridis",
               colorbar: bool = True, title: str | None = None, node_size: float = 60.0,
               edge_alpha: float = 0.5, edge_width: float = 1.5, vmin: float | None = None,
               vmax: float | None = None, categorical: bool = False,
               class_names: Sequence[str] | None = None, colorbar_label: str | None = None,
               path: PathLike | None = None, dpi: int = 150) -> Figure:
    """Draw a graph with its nodes coloured by a signal.

    Edges are a ``LineCollection`` (each undirected edge once, width scaled by its weight),
    nodes a ``scatter`` coloured by ``signal`` (default: the node index). Positions come from
    ``pos``, else ``data.pos``, else a spring layout with seed 0 (:func:`spring_layout`).

    Args:
        data_or_edge_index: a ``Data`` or an ``edge_index`` ``[2, E]``.
        signal: ``[N]`` value per node; NaN nodes are grey.
        pos: ``[N, 2]`` positions.
        edge_weight: ``[E]`` weights (default ``data.edge_weight``).
        num_nodes: number of nodes (default from ``Data`` or ``edge_index``).
        ax: draw into these axes (the figure is ``ax.figure``); default a new figure.
        cmap: colour map of the signal.
        colorbar: add a colour bar (or, with ``categorical``, a legend).
        title: axes title.
        node_size, edge_alpha, edge_width: look of nodes and edges.
        vmin, vmax: colour range (default the signal's range).
        categorical: the signal holds classes (e.g. neuron modules): categorical colours
            and a legend instead of a colour bar.
        class_names: legend names for ``categorical``.
        colorbar_label: label of the colour bar.
        path, dpi: save the figure (see :func:`save_figure`).

    Example::

        >>> from torch_geometric.data import Data
        >>> ring = Data(edge_index=torch.tensor([[0, 1, 1, 2, 2, 0], [1, 0, 2, 1, 0, 2]]),
        ...             num_nodes=3)
        >>> fig = plot_graph(ring, signal=torch.tensor([0.0, 0.5, 1.0]))
    """
    check_positive(node_size, "node_size")
    check_positive(edge_alpha, "edge_alpha", allow_zero=True)
    check_positive(edge_width, "edge_width")
    graph = _as_graph(data_or_edge_index, edge_weight, num_nodes)
    count = graph.num_nodes
    if pos is None:
        pos = graph.pos if graph.pos is not None else spring_layout(graph)
    positions = _positions(pos, count, "pos")
    values = _node_signal(signal, count, "signal")
    pairs, pair_weights = _undirected_edges(graph)

    if ax is None:
        fig = _new_figure(5.0 if colorbar else 4.3, 4.3)
        ax = fig.subplots()
    else:
        fig = ax.figure
    if categorical:
        from matplotlib.colors import ListedColormap
        from matplotlib.patches import Patch

        finite = values[np.isfinite(values)]
        classes = int(finite.max()) + 1 if finite.size else 1
        palette = _categorical_colors(classes)
        color_map, low, high = ListedColormap(palette), -0.5, classes - 0.5
    else:
        color_map = _bad_as_grey(cmap)
        low, high = _nan_range(values)
        low = low if vmin is None else vmin
        high = high if vmax is None else vmax
    scatter = _draw_graph(ax, pairs, pair_weights, positions, values, cmap=color_map, vmin=low,
                          vmax=high, node_size=node_size, edge_alpha=edge_alpha,
                          edge_width=edge_width)
    if colorbar and categorical:
        names = list(class_names) if class_names is not None else [str(c) for c in
                                                                     range(classes)]
        handles = [Patch(facecolor=palette[c], label=names[c] if c < len(names) else str(c))
                   for c in range(classes)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
                  fontsize=8)
    elif colorbar:
        fig.colorbar(scatter, ax=ax, shrink=0.8, label=colorbar_label)
    if title:
        ax.set_title(title)
    return _finish(fig, path, dpi)


def _bad_as_grey(cmap):
    from matplotlib import colormaps

    color_map = colormaps[cmap] if isinstance(cmap, str) else cmap
    return color_map.with_extremes(bad="lightgrey")


def _evenly_spaced(count: int, max_count: int) -> list[int]:
    """``max_count`` indices in ``range(count)`` spread evenly, always with first and last."""
    if count <= max_count:
        return list(range(count))
    if max_count == 1:
        return [count - 1]
    return [int(round(i)) for i in np.linspace(0, count - 1, max_count)]


def plot_graph_evolution(snapshots: Sequence[tuple[int, Data]], layouts=None, signal=None,
                         max_panels: int = 8, ncols: int = 4, cmap: str = "viridis",
                         node_size: float = 30.0, edge_alpha: float = 0.5,
                         edge_width: float = 1.2, colorbar_label: str | None = None,
                         path: PathLike | None = None, dpi: int = 150) -> Figure:
    """A learned graph over training time: one panel per snapshot, one shared colour range.

    Each panel is titled ``"step N, E edges, C components"`` (E counts undirected edges).
    With more snapshots than ``max_panels``, evenly spaced ones are shown, always including
    the first and the last.

    Args:
        snapshots: ``[(step, Data), ...]`` in training order, all with the same nodes.
        layouts: positions: a list with one ``[N, 2]`` (or ``None``) per snapshot, or one
            ``[N, 2]`` for all. Where missing: ``data.pos``, else one spring layout of the
            union of the shown graphs, shared by all panels, so nodes stay in place.
        signal: node colours: ``[N]`` for all panels, or a list with one ``[N]`` per snapshot
            (default the node index).
        max_panels: most panels drawn (default 8).
        ncols: panels per row (default 4).
        cmap, node_size, edge_alpha, edge_width: look (see :func:`plot_graph`).
        colorbar_label: label of the shared colour bar.
        path, dpi: save the figure (see :func:`save_figure`).

    Example::

        >>> from gsr_pyg.graphs import line, ring
        >>> fig = plot_graph_evolution([(0, ring(6)), (100, line(6))])
        >>> [ax.get_title() for ax in fig.axes[:2]]
        ['step 0, 6 edges, 1 component', 'step 100, 5 edges, 1 component']
    """
    if not isinstance(snapshots, Sequence) or len(snapshots) == 0:
        raise ValueError(f"snapshots must be a non-empty list of (step, Data), got "
                         f"{describe(snapshots)}")
    check_int(max_panels, "max_panels", minimum=1)
    check_int(ncols, "ncols", minimum=1)
    total = len(snapshots)
    for index, item in enumerate(snapshots):
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise TypeError(f"snapshots[{index}] must be a (step, Data) pair, got "
                            f"{describe(item)}")

    def per_snapshot(value, name):
        if isinstance(value, list | tuple):
            if len(value) != total:
                raise ValueError(f"{name} must have one entry per snapshot ({total}), got "
                                 f"{len(value)}")
            return list(value)
        return [value] * total

    layout_list = per_snapshot(layouts, "layouts")
    signal_list = per_snapshot(signal, "signal")
    chosen = _evenly_spaced(total, max_panels)

    shown = {index: _as_graph(snapshots[index][1], None, None) for index in chosen}
    counts = {shown[index].num_nodes for index in chosen}
    if len(counts) != 1:
        raise ValueError(f"snapshots must all have the same number of nodes, got "
                         f"{sorted(counts)}")
    count = counts.pop()
    shared_layout = None
    if any(layout_list[i] is None and shown[i].pos is None for i in chosen):
        # One layout of the union of the shown graphs keeps every node in place across
        # panels, and a graph that fell apart late still gets a readable layout.
        union, union_weights = coalesce(
            torch.cat([shown[i].edge_index.cpu() for i in chosen], dim=1),
            torch.cat([edge_weights(shown[i], torch.float64).cpu() for i in chosen]),
            count, reduce="max")
        shared_layout = spring_layout(union, num_nodes=count, edge_weight=union_weights)

    panels = []
    for index in chosen:
        step, graph = snapshots[index][0], shown[index]
        pos = layout_list[index] if layout_list[index] is not None else graph.pos
        if pos is None:
            pos = shared_layout
        positions = _positions(pos, count, f"layouts[{index}]")
        values = _node_signal(signal_list[index], count, f"signal[{index}]")
        pairs, pair_weights = _undirected_edges(graph)
        components = connected_components(graph)[0] if count else 0
        panels.append((step, pairs, pair_weights, positions, values, components))

    low, high = _nan_range(*[panel[4] for panel in panels])
    columns = min(ncols, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = _new_figure(3.0 * columns + 0.8, 3.0 * rows + 0.2)
    axes = fig.subplots(rows, columns, squeeze=False)
    color_map = _bad_as_grey(cmap)
    scatter = None
    for ax_index, ax in enumerate(axes.flat):
        if ax_index >= len(panels):
            ax.set_visible(False)
            continue
        step, pairs, pair_weights, positions, values, components = panels[ax_index]
        scatter = _draw_graph(ax, pairs, pair_weights, positions, values, cmap=color_map,
                              vmin=low, vmax=high, node_size=node_size,
                              edge_alpha=edge_alpha, edge_width=edge_width)
        ax.set_title(f"step {step}, {pairs.shape[1]} edges, {components} "
                     f"component{'s' if components != 1 else ''}", fontsize=9)
    fig.colorbar(scatter, ax=axes.ravel().tolist(), shrink=0.8, label=colorbar_label)
    return _finish(fig, path, dpi)


# --------------------------------------------------------------------------- matrices
def _order_and_groups(size: int, order, groups, name: str):
    order_array = None if order is None else _to_numpy(order, f"{name}_order", ndim=1,
                                                       dtype=np.int64)
    group_array = None
    if groups is not None:
        group_array = np.asarray(groups.detach().cpu().numpy() if isinstance(groups, torch.Tensor)
                                 else groups)
        if group_array.ndim != 1 or group_array.size != size:
            raise ValueError(f"{name}_groups must have one entry per {name} ({size}), got "
                             f"shape {tuple(group_array.shape)}")
        if order_array is None:
            order_array = np.argsort(group_array, kind="stable")
    if order_array is None:
        order_array = np.arange(size)
    if sorted(order_array.tolist()) != list(range(size)):
        raise ValueError(f"{name}_order must be a permutation of range({size})")
    return order_array, None if group_array is None else group_array[order_array]


def _boundaries(groups: np.ndarray) -> np.ndarray:
    return np.flatnonzero(groups[1:] != groups[:-1]) + 1


def _group_ticks(groups: np.ndarray) -> tuple[list[float], list[str]]:
    starts = np.concatenate([[0], _boundaries(groups)])
    ends = np.concatenate([starts[1:], [groups.size]])
    return [(s + e - 1) / 2 for s, e in zip(starts, ends, strict=True)], \
        [str(groups[s]) for s in starts]


def plot_heatmap(matrix, row_labels: Sequence[str] | None = None,
                 col_labels: Sequence[str] | None = None, row_order=None, col_order=None,
                 row_groups=None, col_groups=None, cmap: str = "RdBu_r",
                 center: float | None = 0.0, title: str | None = None,
                 colorbar_label: str | None = None, xlabel: str | None = None,
                 ylabel: str | None = None, path: PathLike | None = None,
                 dpi: int = 150) -> Figure:
    """A heatmap, e.g. neuron x marker correlations ordered by neuron module.

    Rows and columns are shown in ``row_order`` / ``col_order``. With ``row_groups`` /
    ``col_groups`` (a group per row / column, e.g. module labels) and no explicit order,
    rows are sorted by group (stable), lines are drawn between groups, and when no labels
    are given the group names mark the axis.

    Args:
        matrix: ``[R, C]`` values.
        row_labels, col_labels: tick labels in the original order.
        row_order, col_order: permutations giving the displayed order.
        row_groups, col_groups: group of each row / column (original order).
        cmap: colour map (default diverging ``"RdBu_r"``).
        center: value at the middle of the colour map (range symmetric around it); ``None``
            uses the data range.
        title, colorbar_label, xlabel, ylabel: texts.
        path, dpi: save the figure (see :func:`save_figure`).

    Example::

        >>> fig = plot_heatmap(torch.randn(6, 4), row_groups=[1, 0, 1, 0, 2, 2])
    """
    values = _to_numpy(matrix, "matrix", ndim=2)
    rows, columns = values.shape
    if rows == 0 or columns == 0:
        raise ValueError(f"matrix must not be empty, got shape {values.shape}")
    for name, labels, size in (("row_labels", row_labels, rows),
                               ("col_labels", col_labels, columns)):
        if labels is not None and len(labels) != size:
            raise ValueError(f"{name} must have {size} entries, got {len(labels)}")
    row_index, row_group_sorted = _order_and_groups(rows, row_order, row_groups, "row")
    col_index, col_group_sorted = _order_and_groups(columns, col_order, col_groups, "col")
    shown = values[np.ix_(row_index, col_index)]

    if center is None:
        low, high = _nan_range(shown)
    else:
        low, high = _nan_range(shown - center)
        bound = max(abs(low), abs(high))
        low, high = center - bound, center + bound

    width = float(np.clip(2.5 + 0.28 * columns, 4.0, 14.0))
    height = float(np.clip(1.5 + 0.16 * rows, 3.0, 14.0))
    fig = _new_figure(width, height)
    ax = fig.subplots()
    image = ax.imshow(shown, cmap=cmap, vmin=low, vmax=high, aspect="auto",
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label=colorbar_label)

    def label_axis(labels, index, groups, size, set_ticks, axis_name):
        fontsize = float(np.clip(500.0 / size, 4.0, 9.0))
        if labels is not None:
            set_ticks(range(size), [str(labels[i]) for i in index], fontsize=fontsize)
        elif groups is not None:
            positions, names = _group_ticks(groups)
            set_ticks(positions, names, fontsize=9)
        elif size <= 40:
            set_ticks(range(size), [str(i) for i in index], fontsize=fontsize)
        if labels is not None and axis_name == "x":
            ax.tick_params(axis="x", labelrotation=90)

    label_axis(row_labels, row_index, row_group_sorted, rows, ax.set_yticks, "y")
    label_axis(col_labels, col_index, col_group_sorted, columns, ax.set_xticks, "x")
    if row_group_sorted is not None:
        for boundary in _boundaries(row_group_sorted):
            ax.axhline(boundary - 0.5, color="black", linewidth=1.0)
    if col_group_sorted is not None:
        for boundary in _boundaries(col_group_sorted):
            ax.axvline(boundary - 0.5, color="black", linewidth=1.0)
    _set_texts(ax, title, xlabel, ylabel)
    return _finish(fig, path, dpi)


def plot_embedding(points, colour=None, title: str | None = None, categorical: bool = False,
                   class_names: Sequence[str] | None = None, cmap: str | None = None,
                   point_size: float | None = None, colorbar_label: str | None = None,
                   xlabel: str | None = None, ylabel: str | None = None,
                   ax: Axes | None = None, path: PathLike | None = None,
                   dpi: int = 150) -> Figure:
    """Samples in a 2-D embedding (e.g. cells in PCA/UMAP/PHATE), coloured by a value or class.

    Points are drawn in a fixed random order (seed 0) so no class hides behind another.

    Args:
        points: ``[S, 2]`` coordinates.
        colour: ``[S]`` value per sample (e.g. a neuron's or module's activity), or the
            class per sample with ``categorical=True``; default one colour.
        title, xlabel, ylabel: texts.
        categorical: categorical colours and a legend instead of a colour map and bar.
        class_names: legend names for ``categorical`` (default the class indices).
        cmap: colour map for continuous colours (default ``"viridis"``).
        point_size: marker area (default shrinks with the number of points).
        colorbar_label: label of the colour bar.
        ax: draw into these axes; default a new figure.
        path, dpi: save the figure (see :func:`save_figure`).

    Example::

        >>> fig = plot_embedding(torch.randn(100, 2), torch.rand(100), title="module 3")
    """
    from matplotlib.lines import Line2D

    coordinates = _to_numpy(points, "points", ndim=2)
    count = coordinates.shape[0]
    if coordinates.shape[1] != 2:
        raise ValueError(f"points must have shape [S, 2], got {tuple(coordinates.shape)}")
    if point_size is None:
        point_size = float(np.clip(4000.0 / max(count, 1), 1.0, 30.0))
    order = np.random.default_rng(0).permutation(count)
    if ax is None:
        fig = _new_figure(5.2, 4.2)
        ax = fig.subplots()
    else:
        fig = ax.figure
    if colour is None:
        ax.scatter(coordinates[order, 0], coordinates[order, 1], s=point_size, color="tab:blue",
                   linewidths=0)
    elif categorical:
        classes = _to_numpy(colour, "colour", ndim=1, dtype=np.int64)
        if classes.size != count:
            raise ValueError(f"colour must have one entry per point ({count}), got "
                             f"{classes.size}")
        if classes.size and classes.min() < 0:
            raise ValueError("colour must hold classes >= 0 with categorical=True")
        present = np.unique(classes)
        number = int(classes.max()) + 1 if classes.size else 1
        palette = np.array(_categorical_colors(number))
        ax.scatter(coordinates[order, 0], coordinates[order, 1], s=point_size,
                   color=palette[classes[order]], linewidths=0)
        names = list(class_names) if class_names is not None else []
        handles = [Line2D([], [], marker="o", linestyle="", color=palette[c],
                          label=names[c] if c < len(names) else str(c)) for c in present]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                  frameon=False, fontsize=8, markerscale=1.2)
    else:
        values = _to_numpy(colour, "colour", ndim=1)
        if values.size != count:
            raise ValueError(f"colour must have one entry per point ({count}), got "
                             f"{values.size}")
        mappable = ax.scatter(coordinates[order, 0], coordinates[order, 1], s=point_size,
                              c=values[order], cmap=_bad_as_grey(cmap or "viridis"),
                              linewidths=0, plotnonfinite=True)
        fig.colorbar(mappable, ax=ax, shrink=0.8, label=colorbar_label)
    ax.set_xticks([])
    ax.set_yticks([])
    _set_texts(ax, title, xlabel, ylabel)
    return _finish(fig, path, dpi)


# --------------------------------------------------------------------------- module colours
def module_colormap(num_modules: int):
    """The categorical palette of this module as a colour map of ``num_modules`` colours.

    Colour ``m`` is the colour that :func:`plot_graph` and :func:`plot_embedding` give class
    ``m`` with ``categorical=True`` (tab10 up to 10 modules, tab20 up to 20, then evenly
    spaced turbo), so a figure drawn with a colour map (:func:`plot_graph_evolution`) can
    use the same colours as a categorical legend. Label its colour bar with
    :func:`label_module_colorbar`.

    Args:
        num_modules: the number of modules (colours), at least 1.

    Returns:
        A :class:`matplotlib.colors.ListedColormap`; value ``m`` (of ``0 .. num_modules-1``,
        with ``vmin=0`` and ``vmax=num_modules-1``) falls in band ``m``.

    Example:
        >>> cmap = module_colormap(3)
        >>> cmap.N, [round(float(c), 3) for c in cmap(0)]
        (3, [0.122, 0.467, 0.706, 1.0])
    """
    from matplotlib.colors import ListedColormap

    check_int(num_modules, "num_modules", minimum=1)
    return ListedColormap(_categorical_colors(num_modules))


def label_module_colorbar(fig: Figure, num_modules: int, prefix: str = "module") -> None:
    """Name the bands of the figure's colour bar (its last axes) ``"<prefix> m"`` instead of
    a numeric scale; ValueError when the last axes is no colour bar (a figure drawn with
    ``colorbar=False``).

    For a colour bar of :func:`module_colormap` over values ``0 .. num_modules-1``: band
    ``m`` spans :math:`[m, m+1] \\cdot (M-1)/M` (``M = num_modules``), and its name is put
    at the band's centre :math:`(m + \\tfrac12)(M-1)/M`.

    Args:
        fig: a figure whose last axes is the colour bar (as drawn by :func:`plot_graph` or
            :func:`plot_graph_evolution` with a colour bar).
        num_modules: the number of modules (bands), at least 1.
        prefix: the word before each module number (default ``"module"``).

    Example:
        >>> from gsr_pyg import graphs
        >>> fig = plot_graph(graphs.grid(2, 2), torch.tensor([0., 1., 2., 2.]),
        ...                  cmap=module_colormap(3))
        >>> label_module_colorbar(fig, 3)
        >>> [label.get_text() for label in fig.axes[-1].get_yticklabels()]
        ['module 0', 'module 1', 'module 2']
    """
    check_int(num_modules, "num_modules", minimum=1)
    if not fig.axes:
        raise ValueError("fig must have a colour bar as its last axes, got a figure without axes")
    colorbar_axes = fig.axes[-1]
    if colorbar_axes.get_label() != "<colorbar>":  # the label fig.colorbar gives its axes
        raise ValueError(f"fig must have a colour bar as its last axes, but its last axes is a "
                         f"plot (title {colorbar_axes.get_title()!r}); draw the figure with "
                         f"colorbar=True")
    span = max(num_modules - 1, 1)
    centres = [(index + 0.5) * span / num_modules for index in range(num_modules)]
    colorbar_axes.set_yticks(centres, [f"{prefix} {index}" for index in range(num_modules)])
    colorbar_axes.minorticks_off()


# --------------------------------------------------------------------------- read-out panels
def plot_group_activity_on_graph(graph, maps, names: Sequence[str] | None = None, pos=None, *,
                                 ncols: int = 5, cmap: str = "RdBu_r", node_size: float = 25.0,
                                 colorbar_label: str | None = None, title: str | None = None,
                                 path: PathLike | None = None, dpi: int = 150) -> Figure:
    """One panel per group: the group's map of the neurons painted on the graph.

    Meant for each group's mean activity minus the mean over all samples (e.g. per cell type:
    ``readouts.subtract_global_mean(readouts.group_means(latent, codes), latent)``): every
    panel shares one colour range symmetric around 0, ``[-b, b]`` with ``b`` the largest
    finite ``|value|`` of all maps (1 when there is none), so red is higher and blue lower in
    that group in every panel; one colour bar serves all panels. NaN nodes are grey.

    Args:
        graph: a ``Data`` or an ``edge_index`` ``[2, E]`` over the ``N`` neurons.
        maps: ``[G, N]`` one value per neuron for each of ``G`` groups.
        names: ``G`` panel titles (default ``"group 0"``, ``"group 1"``, ...).
        pos: ``[N, 2]`` positions shared by all panels (default ``data.pos``, else one
            :func:`spring_layout`).
        ncols: panels per row (default 5).
        cmap: diverging colour map (default ``"RdBu_r"``).
        node_size: marker area of the nodes (default 25).
        colorbar_label, title: label of the colour bar and title of the figure.
        path, dpi: save the figure (see :func:`save_figure`).

    Example:
        >>> from gsr_pyg.graphs import ring
        >>> fig = plot_group_activity_on_graph(ring(6), torch.randn(3, 6), ["a", "b", "c"])
        >>> [ax.get_title() for ax in fig.axes[:3]], fig.axes[-1].get_label()
        (['a', 'b', 'c'], '<colorbar>')
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    check_int(ncols, "ncols", minimum=1)
    check_positive(node_size, "node_size")
    data = _as_graph(graph, None, None)
    values = _to_numpy(maps, "maps", ndim=2)
    count, nodes = values.shape
    if count == 0:
        raise ValueError("maps must hold at least one group (row), got shape "
                         f"{tuple(values.shape)}")
    if nodes != data.num_nodes:
        raise ValueError(f"maps must have one column per node of the graph ({data.num_nodes}), "
                         f"got shape {tuple(values.shape)}")
    if names is None:
        names = [f"group {g}" for g in range(count)]
    elif isinstance(names, str) or len(names) != count:
        raise ValueError(f"names must have one title per group (row of maps, {count}), got "
                         f"{describe(names)}")
    if pos is None:
        pos = data.pos if data.pos is not None else spring_layout(data)
    positions = _positions(pos, nodes, "pos")
    columns = min(count, ncols)
    rows = math.ceil(count / columns)
    fig = _new_figure(2.9 * columns + 1.0, 2.9 * rows + 0.5)
    axes = fig.subplots(rows, columns, squeeze=False)
    finite = values[np.isfinite(values)]
    bound = float(np.abs(finite).max()) if finite.size else 1.0
    bound = bound if bound > 0 else 1.0
    for index, ax in enumerate(axes.flat):
        if index >= count:
            ax.set_visible(False)
            continue
        plot_graph(data, values[index], pos=positions, ax=ax, cmap=cmap, colorbar=False,
                   vmin=-bound, vmax=bound, node_size=node_size, title=str(names[index]))
    fig.colorbar(ScalarMappable(Normalize(-bound, bound), cmap=cmap),
                 ax=axes.ravel().tolist(), shrink=0.8, label=colorbar_label)
    if title:
        fig.suptitle(title)
    return _finish(fig, path, dpi)


def plot_feature_correlations(inputs: torch.Tensor, activations: torch.Tensor,
                              feature_names: Sequence[str] | None = None, *, cells=None,
                              neuron_groups=None, feature_groups=None,
                              title: str | None = None, xlabel: str | None = "features",
                              ylabel: str | None = "neurons",
                              colorbar_label: str | None = "Pearson r",
                              path: PathLike | None = None, dpi: int = 150) -> Figure:
    """Neuron x feature Pearson correlations over a set of samples, as a heatmap.

    E.g. latent neurons x genes over all cells or over the cells of one type: the
    correlations are :func:`gsr_pyg.metrics.feature_correlations` of ``inputs[cells]`` and
    ``activations[cells]``, drawn by :func:`plot_heatmap` with 0 in the middle of the
    diverging colour map, neurons (rows) sorted by ``neuron_groups`` and features (columns)
    by ``feature_groups``, with lines between groups.

    Args:
        inputs: ``[S, F]`` features of the samples (e.g. the genes to show).
        activations: ``[S, N]`` neuron activations of the same samples.
        feature_names: ``F`` column labels (default: the group names, or indices).
        cells: the samples to correlate over: a boolean mask ``[S]`` or indices (default all);
            at least 2.
        neuron_groups: ``[N]`` group of every neuron (e.g. its module).
        feature_groups: ``[F]`` group of every feature (e.g. its gene module).
        title, xlabel, ylabel, colorbar_label: texts (defaults ``"features"``,
            ``"neurons"``, ``"Pearson r"``).
        path, dpi: save the figure (see :func:`save_figure`).

    Example:
        >>> x = torch.randn(50, 3)
        >>> fig = plot_feature_correlations(x, torch.cat([x, -x], dim=1), ["a", "b", "c"])
        >>> image = fig.axes[0].get_images()[0].get_array()
        >>> image.shape, round(float(image[0, 0]), 3), round(float(image[3, 0]), 3)
        ((6, 3), 1.0, -1.0)
    """
    from .metrics import feature_correlations

    for name, value in (("inputs", inputs), ("activations", activations)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {describe(value)}")
        if value.dim() != 2:
            raise ValueError(f"{name} must be 2-D [samples, columns], got {describe(value)}")
    if inputs.size(0) != activations.size(0):
        raise ValueError(f"inputs and activations must have the same samples (rows), got "
                         f"{inputs.size(0)} and {activations.size(0)}")
    if cells is not None:
        if not isinstance(cells, torch.Tensor):
            cells = torch.as_tensor(np.asarray(cells))
        if cells.dtype == torch.bool and cells.shape != (inputs.size(0),):
            raise ValueError(f"cells as a mask must have one entry per sample "
                             f"({inputs.size(0)}), got {describe(cells)}")
        if cells.dtype != torch.bool and (cells.dim() != 1 or cells.is_floating_point()):
            raise ValueError(f"cells must be a boolean mask or 1-D integer indices, got "
                             f"{describe(cells)}")
        count = int(cells.sum()) if cells.dtype == torch.bool else cells.numel()
        if count < 2:
            raise ValueError(f"cells must select at least 2 samples to correlate over, got "
                             f"{count}")
        inputs, activations = inputs[cells], activations[cells]
    correlations = feature_correlations(inputs, activations)
    return plot_heatmap(correlations, col_labels=feature_names, row_groups=neuron_groups,
                        col_groups=feature_groups, title=title, ylabel=ylabel, xlabel=xlabel,
                        colorbar_label=colorbar_label, path=path, dpi=dpi)


def plot_embedding_panels(points, labels: Mapping[str, tuple] | None = None, values=None,
                          value_names: Sequence[str] | None = None, *, ncols: int = 4,
                          axis_name: str = "dim", colorbar_label: str | None = "module activity",
                          title: str | None = None, path: PathLike | None = None,
                          dpi: int = 150) -> Figure:
    """Samples in one 2-D embedding, one panel per labelling and per value column.

    E.g. cells in UMAP coloured by cell type, by branch and by each module's activity: first
    one categorical panel (legend) per entry of ``labels``, then one continuous panel (colour
    bar) per column of ``values``, drawn with :func:`plot_embedding`. Each panel is a
    sub-figure, so a legend or colour bar widens only its own panel.

    Args:
        points: ``[S, 2]`` coordinates (e.g. :func:`gsr_pyg.data.cell_embedding`).
        labels: ``{title: (codes, names)}``: ``codes`` ``[S]`` integer class per sample and
            ``names`` the class names (as :func:`gsr_pyg.data.obs_labels` returns them);
            ``names`` may be ``None`` (the class indices).
        values: ``[S, K]`` a value per sample for each of ``K`` panels (e.g. module
            activity, :func:`gsr_pyg.readouts.module_activity`).
        value_names: ``K`` titles of the value panels (default ``"module 0"``, ...).
        ncols: panels per row (default 4).
        axis_name: the axes are labelled ``"<axis_name> 1"`` and ``"<axis_name> 2"``
            (default ``"dim"``; e.g. ``"UMAP"`` or ``"PC"``).
        colorbar_label: label of the value panels' colour bars (default
            ``"module activity"``).
        title: title of the figure.
        path, dpi: save the figure (see :func:`save_figure`).

    Example:
        >>> fig = plot_embedding_panels(torch.randn(30, 2),
        ...                             {"type": (torch.arange(30) % 3, ["a", "b", "c"])},
        ...                             torch.rand(30, 2), axis_name="PC")
        >>> [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"]
        ['type', 'module 0', 'module 1']
    """
    check_int(ncols, "ncols", minimum=1)
    coordinates = _to_numpy(points, "points", ndim=2)
    count = coordinates.shape[0]
    if coordinates.shape[1] != 2:
        raise ValueError(f"points must have shape [S, 2], got {tuple(coordinates.shape)}")
    panels = []
    if labels is not None:
        if not isinstance(labels, Mapping):
            raise TypeError(f"labels must be a mapping {{title: (codes, names)}}, got "
                            f"{describe(labels)}")
        for column, entry in labels.items():
            if not (isinstance(entry, tuple | list) and len(entry) == 2):
                raise TypeError(f"labels[{column!r}] must be a (codes, names) pair, got "
                                f"{describe(entry)}")
            codes, names = entry
            size = _to_numpy(codes, f"labels[{column!r}] codes", ndim=1, dtype=np.int64).size
            if size != count:
                raise ValueError(f"labels[{column!r}] codes must have one entry per point "
                                 f"({count}), got {size}")
            panels.append(("label", str(column), codes, names))
    if values is not None:
        value_array = _to_numpy(values, "values", ndim=2)
        if value_array.shape[0] != count:
            raise ValueError(f"values must have one row per point ({count}), got shape "
                             f"{tuple(value_array.shape)}")
        width = value_array.shape[1]
        if value_names is None:
            value_names = [f"module {m}" for m in range(width)]
        elif isinstance(value_names, str) or len(value_names) != width:
            raise ValueError(f"value_names must have one title per column of values ({width}), "
                             f"got {describe(value_names)}")
        panels += [("value", str(value_names[m]), value_array[:, m], None)
                   for m in range(width)]
    if not panels:
        raise ValueError("labels and values hold no panel to draw: give at least one label "
                         "column or one column of values")
    columns = min(len(panels), ncols)
    rows = math.ceil(len(panels) / columns)
    fig = _new_figure(4.4 * columns, 3.6 * rows)
    cells = np.atleast_2d(fig.subfigures(rows, columns, squeeze=False))
    for index, cell in enumerate(cells.flat):
        if index >= len(panels):
            continue
        kind, panel_title, colour, names = panels[index]
        plot_embedding(coordinates, colour, title=panel_title, categorical=kind == "label",
                       class_names=names, ax=cell.subplots(),
                       colorbar_label=colorbar_label if kind == "value" else None,
                       xlabel=f"{axis_name} 1", ylabel=f"{axis_name} 2")
    if title:
        fig.suptitle(title)
    return _finish(fig, path, dpi)


# --------------------------------------------------------------------------- spectra
#: Eigenvalues closer than this times the largest one are one frequency in
#: :func:`plot_graph_spectrum` (``eigh`` separates a repeated eigenvalue by rounding only).
_SAME_FREQUENCY = 1e-8


def _spectrum_arrays(spectrum, name: str
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """``(frequencies, energy, edges, total energy)`` of a
    :class:`~gsr_pyg.metrics.SpectralEnergy` or a pair ``(frequencies, energy)``, checked;
    without band edges, one mean energy per distinct frequency."""
    if hasattr(spectrum, "frequencies") and hasattr(spectrum, "energy"):
        parts = (spectrum.frequencies, spectrum.energy, getattr(spectrum, "edges", None))
    elif isinstance(spectrum, tuple | list) and len(spectrum) == 2:
        parts = (*spectrum, None)
    else:
        raise TypeError(f"{name} must be a SpectralEnergy (gsr_pyg.metrics."
                        f"graph_fourier_energy) or a pair (frequencies, energy), got "
                        f"{describe(spectrum)}")
    frequencies = _to_numpy(parts[0], f"{name} frequencies", ndim=1)
    energy = _to_numpy(parts[1], f"{name} energy", ndim=1)
    if frequencies.size == 0 or frequencies.shape != energy.shape:
        raise ValueError(f"{name} must have one energy per frequency (at least one), got "
                         f"{frequencies.size} frequencies and {energy.size} energies")
    if not (np.isfinite(frequencies).all() and np.isfinite(energy).all()):
        raise ValueError(f"{name} must hold finite frequencies and energies")
    if frequencies.min() < 0:
        raise ValueError(f"{name} frequencies must be >= 0 (Laplacian eigenvalues), got "
                         f"{frequencies.min():.6g}")
    if energy.min() < -1e-9 * max(float(np.abs(energy).max()), 1e-300):
        raise ValueError(f"{name} energies must be >= 0, got {energy.min():.6g}")
    energy = np.clip(energy, 0.0, None)  # a Chebyshev estimate may round just below 0
    if parts[2] is not None:
        edges = _to_numpy(parts[2], f"{name} edges", ndim=1)
        if edges.size != energy.size + 1 or np.any(np.diff(edges) < 0):
            raise ValueError(f"{name} edges must be {energy.size + 1} non-decreasing band "
                             f"edges, got {edges.size}")
        return frequencies, energy, edges, float(energy.sum())
    order = np.argsort(frequencies, kind="stable")
    frequencies, energy = frequencies[order], energy[order]
    tolerance = _SAME_FREQUENCY * max(float(frequencies[-1]), 1.0)
    group = np.concatenate([[0], np.cumsum(np.diff(frequencies) > tolerance)])
    counts = np.bincount(group)
    return (np.bincount(group, weights=frequencies) / counts,
            np.bincount(group, weights=energy) / counts, None, float(energy.sum()))


def plot_graph_spectrum(spectra, *, titles: Sequence[str] | None = None,
                        normalize: bool = True, logy: bool = True,
                        markers: Mapping[str, float] | None = None,
                        xlabel: str = "graph frequency (Laplacian eigenvalue)",
                        ylabel: str | None = None, suptitle: str | None = None,
                        path: PathLike | None = None, dpi: int = 150) -> Figure:
    r"""Where activations' energy sits on a graph's spectrum: energy against frequency, one
    line per spectrum, one panel per group of spectra.

    A spectrum is :math:`E_k = \frac1B\sum_b |\mathbf{u}_k^\top\mathbf{a}_b|^2` against the
    Laplacian eigenvalues :math:`\lambda_k` (:func:`gsr_pyg.metrics.graph_fourier_energy`);
    graph spectral regularization moves energy to the low frequencies. Per eigenvalue (no
    band edges) the curve is the energy per eigenvector, drawn as points joined by lines:
    the energies of equal frequencies (a repeated eigenvalue, equal within ``1e-8`` of the
    largest) are averaged, which does not depend on the eigenbasis ``eigh`` happened to
    pick (their sum does not) and keeps activations without any order on the graph (equal
    energy in every eigenvector) a flat line. Per band (a ``SpectralEnergy`` with ``edges``)
    it is the energy in each band, a step over the bands. The same label has the same colour
    in every panel.

    Args:
        spectra: ``{label: spectrum}`` for one panel, or a sequence of such mappings (one
            panel each); a spectrum is a :class:`~gsr_pyg.metrics.SpectralEnergy` or a
            pair ``(frequencies, energy)`` of 1-D arrays (frequencies >= 0, energies >= 0).
        titles: one title per panel.
        normalize: divide each spectrum by its total energy, so lines of different scale
            compare (fractions of the total); a spectrum without energy is then refused.
            (default: ``True``)
        logy: logarithmic energy axis (zero energies are not drawn). (default: ``True``)
        markers: ``{label: frequency}``: dashed vertical lines (e.g. a high-pass cutoff).
        xlabel, ylabel, suptitle: texts (``ylabel`` defaults to "energy per eigenvector",
            "energy per band" or "energy", with "(fraction of the total)" when normalized).
        path, dpi: save the figure (see :func:`save_figure`).

    Example:
        >>> from gsr_pyg.metrics import graph_fourier_energy
        >>> path = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> spectrum = graph_fourier_energy(torch.tensor([[0., 1., 3.]]), path)
        >>> fig = plot_graph_spectrum({"a": spectrum})
        >>> line = fig.axes[0].lines[0]
        >>> line.get_xdata().round(3).tolist(), line.get_ydata().round(3).tolist()
        ([0.0, 1.0, 3.0], [0.533, 0.45, 0.017])
    """
    panels = [spectra] if isinstance(spectra, Mapping) else spectra
    if isinstance(panels, str) or not isinstance(panels, Sequence) or not panels:
        raise TypeError(f"spectra must be a mapping {{label: spectrum}} or a non-empty list "
                        f"of them, got {describe(spectra)}")
    if titles is not None and (isinstance(titles, str) or len(titles) != len(panels)):
        raise ValueError(f"titles must have one title per panel ({len(panels)}), got "
                         f"{describe(titles)}")
    if markers is not None and not isinstance(markers, Mapping):
        raise TypeError(f"markers must be a mapping {{label: frequency}}, got "
                        f"{describe(markers)}")
    lines = []
    for index, panel in enumerate(panels):
        where = "spectra" if isinstance(spectra, Mapping) else f"spectra[{index}]"
        if not isinstance(panel, Mapping) or not panel:
            raise TypeError(f"{where} must be a non-empty mapping {{label: spectrum}}, got "
                            f"{describe(panel)}")
        lines.append([(str(label), *_spectrum_arrays(spectrum, f"{where}[{label!r}]"))
                      for label, spectrum in panel.items()])
    if normalize:
        for panel in lines:
            for label, _, _, _, total in panel:
                if total <= 0:
                    raise ValueError(f"spectrum {label!r} has no energy to normalize")
    for label, frequency in (markers or {}).items():
        check_positive(frequency, f"markers[{label!r}]", allow_zero=True)
    labels = list(dict.fromkeys(label for panel in lines for label, *_ in panel))
    colors = dict(zip(labels, _categorical_colors(len(labels))))
    fig = _new_figure(2.6 + 5.0 * len(lines), 3.9)
    handles: dict[str, object] = {}  # one legend for all panels, beside them
    for index, (ax, panel) in enumerate(zip(np.atleast_1d(fig.subplots(1, len(lines))),
                                            lines)):
        for label, frequencies, energy, edges, total in panel:
            values = energy / total if normalize else energy
            if logy:
                values = np.where(values > 0, values, np.nan)
            if edges is None:
                ax.plot(frequencies, values, "o-", markersize=3, linewidth=1.2,
                        color=colors[label], label=label)
            else:
                ax.stairs(values, edges, baseline=None, linewidth=1.4, color=colors[label],
                          label=label)
        for number, (label, frequency) in enumerate((markers or {}).items()):
            ax.axvline(float(frequency), color="0.35", linestyle=(0, (4, 2 + number)),
                       linewidth=0.9, label=label)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
        kinds = {"band" if edges is not None else "eigenvector" for *_, edges, _ in panel}
        default = f"energy per {kinds.pop()}" if len(kinds) == 1 else "energy"
        _set_texts(ax, titles[index] if titles is not None else None, xlabel,
                   ylabel or (f"{default} (fraction of the total)" if normalize else default))
    fig.legend(list(handles.values()), list(handles), loc="outside right center", frameon=False,
               fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return _finish(fig, path, dpi)
