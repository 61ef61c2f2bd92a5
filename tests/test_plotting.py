from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import networkx as nx
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from scipy.sparse.csgraph import connected_components
from torch_geometric.data import Data

from gsr_pyg import plotting
from gsr_pyg.report import write_html_report

DPI = 40  # small images keep the tests fast; the content is the same


def grid_graph(height: int, width: int, weighted: bool = False) -> Data:
    """A 4-neighbour grid, row-major, both directions, with grid positions."""
    graph = nx.grid_2d_graph(height, width)
    index = {node: row * width + column for (row, column) in graph.nodes for node in
             [(row, column)]}
    pairs = torch.tensor([[index[a], index[b]] for a, b in graph.edges]).t()
    edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)
    data = Data(edge_index=edge_index, num_nodes=height * width)
    if weighted:
        weights = torch.linspace(0.1, 1.0, pairs.size(1))
        data.edge_weight = torch.cat([weights, weights])
    data.pos = torch.tensor([[i % width, -(i // width)] for i in range(height * width)],
                            dtype=torch.float32)
    return data


def assert_png(path: Path, min_std: float = 0.02) -> np.ndarray:
    assert path.is_file()
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 20 and pixels.shape[1] > 20
    assert float(pixels[..., :3].std()) > min_std  # not blank
    return pixels


def visible_axes(fig: Figure):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


# ----------------------------------------------------------------------------- saving
def test_save_figure_is_atomic_and_replaces(tmp_path):
    fig = plotting.plot_curves([1, 10, 100], {"a": [1.0, 2.0, 3.0]})
    target = tmp_path / "nested" / "curves.png"
    target.parent.mkdir()
    target.write_bytes(b"old")
    written = plotting.save_figure(fig, target, dpi=DPI)
    assert written == target
    assert_png(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["curves.png"]  # no temp debris
    plotting.save_figure(fig, tmp_path / "new" / "deeper" / "c.svg")
    assert (tmp_path / "new" / "deeper" / "c.svg").read_text().lstrip().startswith("<?xml")


def test_save_figure_rejects_unknown_format_and_cleans_up(tmp_path):
    fig = plotting.plot_curves([1, 10], {"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match="path must end with one of"):
        plotting.save_figure(fig, tmp_path / "x.docx")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    fig.savefig = broken
    with pytest.raises(RuntimeError, match="disk full"):
        plotting.save_figure(fig, tmp_path / "y.png")
    assert list(tmp_path.iterdir()) == []


def test_import_does_not_load_matplotlib():
    code = ("import sys, gsr_pyg.plotting, gsr_pyg.report, gsr_pyg.readouts; "
            "print('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


# ----------------------------------------------------------------------------- grid maps
def test_plot_grid_maps_shared_range_and_row_major_cells(tmp_path):
    maps = torch.randn(10, 64, generator=torch.Generator().manual_seed(0))
    maps[4] = float("nan")  # an empty class shows blank
    fig = plotting.plot_grid_maps(maps, grid_shape=(8, 8), path=tmp_path / "maps.png", dpi=DPI)
    assert isinstance(fig, Figure)
    assert_png(tmp_path / "maps.png")
    panels = visible_axes(fig)
    assert len(panels) == 10
    assert [ax.get_title() for ax in panels] == [str(i) for i in range(10)]
    finite = maps[torch.isfinite(maps)]
    for ax, expected in zip(panels, maps, strict=True):
        image = ax.images[0]
        assert image.get_clim() == pytest.approx((float(finite.min()), float(finite.max())))
        shown = np.ma.filled(image.get_array(), np.nan)
        np.testing.assert_allclose(shown[2, 5], expected[2 * 8 + 5].item())  # row-major
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1


def test_plot_grid_maps_diverging_is_symmetric_and_3d_input_works():
    maps = torch.tensor([[[-1.0, 0.5], [0.2, 0.0]], [[3.0, 0.0], [0.0, 0.1]]])
    fig = plotting.plot_grid_maps(maps, diverging=True, titles=["a", "b"])
    for ax in visible_axes(fig):
        assert ax.images[0].get_clim() == pytest.approx((-3.0, 3.0))
        assert ax.images[0].get_cmap().name == "RdBu_r"


def test_plot_grid_maps_separate_ranges():
    maps = torch.tensor([[0.0, 1.0, 2.0, 3.0], [10.0, 20.0, 30.0, 40.0], [5.0, 5, 5, 6]])
    fig = plotting.plot_grid_maps(maps, shared_range=False, ncols=2)
    panels = visible_axes(fig)
    assert [ax.images[0].get_clim() for ax in panels] == [(0.0, 3.0), (10.0, 40.0), (5.0, 6.0)]
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 3


def test_plot_grid_maps_validates():
    with pytest.raises(ValueError, match=r"grid_shape \(8, 8\) holds 64 nodes but maps has 60"):
        plotting.plot_grid_maps(torch.zeros(2, 60), grid_shape=(8, 8))
    with pytest.raises(ValueError, match="grid_shape must be given"):
        plotting.plot_grid_maps(torch.zeros(2, 60))
    with pytest.raises(ValueError, match="titles must have one entry per map"):
        plotting.plot_grid_maps(torch.zeros(2, 4), titles=["x"])


# ----------------------------------------------------------------------------- segmentation
def test_plot_segmentation_writes_class_in_each_cell(tmp_path):
    segmentation = torch.arange(64) % 10
    fig = plotting.plot_segmentation(segmentation, (8, 8), path=tmp_path / "seg.png", dpi=DPI)
    assert_png(tmp_path / "seg.png")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == [str(int(c)) for c in segmentation]  # row-major, one per cell
    assert np.array_equal(ax.images[0].get_array(), segmentation.view(8, 8).numpy())
    legend_labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_labels == [str(c) for c in range(10)]


def test_plot_segmentation_names_and_validation():
    fig = plotting.plot_segmentation(torch.tensor([[0, 1], [1, 2]]), class_names=["a", "b", "c"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="class_names must have 4 entries"):
        plotting.plot_segmentation(torch.tensor([0, 1, 1, 3]), class_names=["a", "b"],
                                   num_classes=4)
    with pytest.raises(ValueError, match="non-negative integer"):
        plotting.plot_segmentation(torch.tensor([0.5, 1, 1, 0]))


# ----------------------------------------------------------------------------- examples
def test_plot_examples_titles_and_red_mistakes(tmp_path):
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    embeddings = torch.randn(4, 64)
    fig = plotting.plot_examples(images, embeddings, torch.tensor([3, 1, 4, 1]),
                                 torch.tensor([3, 7, 4, 1]), grid_shape=(8, 8),
                                 path=tmp_path / "examples.png", dpi=DPI)
    assert_png(tmp_path / "examples.png")
    top = [ax for ax in visible_axes(fig) if ax.get_title()]
    assert [ax.get_title() for ax in top] == ["(3, 3)", "(1, 7)", "(4, 4)", "(1, 1)"]
    colors = [ax.title.get_color() for ax in top]
    assert colors == ["black", "red", "black", "black"]
    bottom = [ax for ax in visible_axes(fig) if not ax.get_title()]
    assert len(bottom) == 4
    assert {ax.images[0].get_clim() for ax in bottom} == {
        (float(embeddings.min()), float(embeddings.max()))}


def test_plot_examples_accepts_flat_images_and_checks_lengths():
    fig = plotting.plot_examples(np.random.rand(2, 784), np.random.rand(2, 16), [0, 1], [0, 1])
    assert fig.axes[0].images[0].get_array().shape == (28, 28)
    assert fig.axes[2].images[0].get_array().shape == (4, 4)
    with pytest.raises(ValueError, match=r"predictions must have one entry per image \(2\)"):
        plotting.plot_examples(np.random.rand(2, 784), np.random.rand(2, 16), [0, 1], [0])


# ----------------------------------------------------------------------------- curves
def test_plot_weight_comparison_shows_zero_on_symlog(tmp_path):
    fig = plotting.plot_weight_comparison(
        [1e-2, 0, 1e-4, 1e-1, 1e-3], [0.985, 0.991, 0.99, 0.97, 0.99],
        [0.8, 0.01, 0.2, 0.9, 0.5], path=tmp_path / "w.png", dpi=DPI)
    assert_png(tmp_path / "w.png")
    left, right = fig.axes[0], fig.axes[1]
    assert left.get_xscale() == "symlog"
    assert [t.get_text() for t in left.get_xticklabels()] == ["0", "1e-4", "1e-3", "0.01",
                                                              "0.1"]
    np.testing.assert_allclose(left.lines[0].get_xdata(), [0, 1e-4, 1e-3, 1e-2, 1e-1])
    np.testing.assert_allclose(left.lines[0].get_ydata(), [0.991, 0.99, 0.99, 0.985, 0.97])
    np.testing.assert_allclose(right.lines[0].get_ydata(), [0.01, 0.2, 0.5, 0.8, 0.9])
    assert right.get_ylabel() == "Moran's I"
    no_zero = plotting.plot_weight_comparison([1e-3, 1e-1], [0.9, 0.8], [0.1, 0.2])
    assert no_zero.axes[0].get_xscale() == "log"
    with pytest.raises(ValueError, match="weights must be finite, >= 0"):
        plotting.plot_weight_comparison([-1.0, 1.0], [0.9, 0.8], [0.1, 0.2])


def test_plot_curves_one_line_per_series(tmp_path):
    x = [1e-5, 1e-3, 1e-1, 10, 1e3, 1e5]
    ys = {"GSR": [0.02, 0.02, 0.021, 0.025, 0.03, 0.03], "L1": [0.02, 0.03, 0.05, 0.1, 0.2, 0.2]}
    fig = plotting.plot_curves(x, ys, logy=True, path=tmp_path / "c.png", dpi=DPI)
    assert_png(tmp_path / "c.png")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["GSR", "L1"]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "1e5" in [t.get_text() for t in ax.get_xticklabels()]
    with pytest.raises(ValueError, match=r"ys\['L1'\] must have one value per x"):
        plotting.plot_curves([1, 2], {"L1": [1.0]})


def test_plot_tradeoff_lines_points_labels_and_baseline(tmp_path):
    panels = [{"series": {"GSR": [(0.2, 1.1, "0.01"), (float("nan"), 1.3, "0.1"),
                                  (0.8, 1.5, "1")],
                          "WS": [(0.1, 1.0, "1e-3")]},
               "baseline": (0.0, 1.0, "none"), "title": "MNIST", "xlabel": "Moran's I",
               "ylabel": "error"},
              {"series": {"GSR": []}}, {"series": {"GSR": [(1, 2)]}}]
    fig = plotting.plot_tradeoff(panels, ncols=2, suptitle="T", path=tmp_path / "t.png",
                                 dpi=DPI)
    assert_png(tmp_path / "t.png")
    first = fig.axes[0]
    gsr, ws, star = first.lines
    # the point with a NaN coordinate is left out, the others joined in order
    assert gsr.get_xdata().tolist() == [0.2, 0.8] and gsr.get_ydata().tolist() == [1.1, 1.5]
    assert (star.get_xdata().tolist(), star.get_label()) == ([0.0], "none")
    assert [t.get_text() for t in first.texts] == ["0.01", "1", "1e-3"]
    assert first.get_title() == "MNIST" and first.get_xlabel() == "Moran's I"
    assert [ax.get_visible() for ax in fig.axes] == [True, True, True, False]
    with pytest.raises(TypeError, match=r"panels\[0\] must be a mapping with a 'series'"):
        plotting.plot_tradeoff([{"lines": {}}])
    with pytest.raises(TypeError, match="panels must be a non-empty list"):
        plotting.plot_tradeoff({"series": {}})


# ----------------------------------------------------------------------------- graphs
def test_plot_graph_with_pos_draws_every_edge_once(tmp_path):
    data = grid_graph(3, 4, weighted=True)
    signal = torch.arange(12, dtype=torch.float32) ** 2
    fig = plotting.plot_graph(data, signal=signal, title="grid", path=tmp_path / "g.png",
                              dpi=DPI)
    assert_png(tmp_path / "g.png")
    ax = fig.axes[0]
    lines, nodes = ax.collections
    assert len(lines.get_segments()) == data.edge_index.size(1) // 2 == 17
    np.testing.assert_allclose(nodes.get_offsets(), data.pos.numpy())
    np.testing.assert_allclose(nodes.get_array(), signal.numpy())
    widths = np.asarray(lines.get_linewidths())
    assert widths.max() / widths.min() == pytest.approx((0.25 + 0.75) / (0.25 + 0.75 * 0.1))
    assert ax.get_title() == "grid"
    assert any(a.get_label() == "<colorbar>" for a in fig.axes)


def test_plot_graph_without_pos_uses_seeded_spring_layout(tmp_path):
    data = grid_graph(3, 3)
    del data.pos
    fig = plotting.plot_graph(data.edge_index, num_nodes=9, path=tmp_path / "s.png", dpi=DPI)
    assert_png(tmp_path / "s.png")
    graph = nx.Graph()
    graph.add_nodes_from(range(9))
    graph.add_weighted_edges_from((int(a), int(b), 1.0) for a, b in data.edge_index.t()
                                  if a < b)
    reference = nx.spring_layout(graph, seed=0, weight="weight", iterations=200)
    offsets = fig.axes[0].collections[1].get_offsets()
    np.testing.assert_allclose(offsets, np.array([reference[i] for i in range(9)]), atol=1e-6)
    np.testing.assert_array_equal(fig.axes[0].collections[1].get_array(), np.arange(9))
    again = plotting.spring_layout(data)
    np.testing.assert_allclose(again.numpy(), offsets, atol=1e-6)  # same seed, same layout


def test_plot_graph_categorical_and_into_given_axes():
    host = plotting.plot_curves([1, 2], {"a": [1.0, 2.0]})
    ax = host.axes[0]
    data = grid_graph(2, 3)
    fig = plotting.plot_graph(data, signal=torch.tensor([0, 0, 1, 1, 2, 2]), ax=ax,
                              categorical=True, class_names=["x", "y", "z"])
    assert fig is host
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["x", "y", "z"]
    with pytest.raises(ValueError, match=r"signal must have one value per node \(6\)"):
        plotting.plot_graph(data, signal=torch.zeros(5))
    with pytest.raises(TypeError, match="graph must be a torch_geometric Data"):
        plotting.plot_graph("grid")


def test_graphs_to_draw_are_checked_by_the_one_validator():
    # a Data must follow the data model, as everywhere else
    one_way = Data(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3)
    with pytest.raises(ValueError, match=r"edge \(0, 1\) has no reverse edge \(1, 0\)"):
        plotting.plot_graph(one_way)
    loop = Data(edge_index=torch.tensor([[0, 0, 1], [0, 1, 0]]), num_nodes=2)
    with pytest.raises(ValueError, match="graph has a self-loop at node 0"):
        plotting.spring_layout(loop)
    with pytest.raises(ValueError, match="graph has 9 nodes but 10 were expected"):
        plotting.plot_graph(grid_graph(3, 3), num_nodes=10)
    with pytest.raises(ValueError, match=r"edge_weight must be > 0, got 0\.0 on edge"):
        plotting.plot_graph(grid_graph(2, 2), edge_weight=torch.zeros(8))
    # an edge list is made into a graph (one direction per edge is enough, loops dropped)
    fig = plotting.plot_graph(torch.tensor([[0, 1, 2], [1, 2, 2]]),
                              pos=torch.zeros(3, 2), edge_weight=torch.tensor([1.0, 2.0, 5.0]))
    lines = fig.axes[0].collections[0]
    assert len(lines.get_segments()) == 2
    with pytest.raises(ValueError, match=r"edge_weight gives the pair \(0, 1\) two different"):
        plotting.spring_layout(torch.tensor([[0, 1], [1, 0]]),
                               edge_weight=torch.tensor([1.0, 2.0]))


def test_plot_graph_evolution_picks_first_last_and_counts(tmp_path):
    base = grid_graph(4, 4)
    pairs = base.edge_index[:, base.edge_index[0] < base.edge_index[1]]
    snapshots = []
    for step in range(12):
        kept = pairs[:, : max(1, pairs.size(1) - 2 * step)]  # fewer edges over time
        snapshots.append((step * 100, Data(edge_index=torch.cat([kept, kept.flip(0)], dim=1),
                                           num_nodes=16)))
    fig = plotting.plot_graph_evolution(snapshots, signal=torch.linspace(-1, 1, 16),
                                        path=tmp_path / "evo.png", dpi=DPI)
    assert_png(tmp_path / "evo.png")
    panels = visible_axes(fig)
    assert len(panels) == 8
    steps = [int(re.match(r"step (\d+),", ax.get_title()).group(1)) for ax in panels]
    assert steps[0] == 0 and steps[-1] == 1100
    assert steps == [0, 200, 300, 500, 600, 800, 900, 1100]
    for ax, step in zip(panels, steps, strict=True):
        edges = snapshots[step // 100][1].edge_index
        undirected = edges.size(1) // 2
        graph = nx.Graph(edges.t().tolist())
        graph.add_nodes_from(range(16))
        adjacency = nx.to_scipy_sparse_array(graph, nodelist=range(16))
        components = connected_components(adjacency, directed=False)[0]
        suffix = "component" if components == 1 else "components"
        assert ax.get_title() == f"step {step}, {undirected} edges, {components} {suffix}"
        assert ax.collections[1].get_clim() == pytest.approx((-1.0, 1.0))  # shared range
    # Without positions every panel shares one layout: nodes stay in place.
    first, last = panels[0].collections[1].get_offsets(), panels[-1].collections[1].get_offsets()
    np.testing.assert_allclose(first, last)


def test_plot_graph_evolution_uses_given_layouts_and_validates():
    data = grid_graph(2, 2)
    layout = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    fig = plotting.plot_graph_evolution([(5, data), (9, data)], layouts=[layout, layout * 2])
    panels = visible_axes(fig)
    np.testing.assert_allclose(panels[1].collections[1].get_offsets(), layout.numpy() * 2)
    assert panels[0].get_title() == "step 5, 4 edges, 1 component"
    with pytest.raises(ValueError, match=r"layouts must have one entry per snapshot \(2\)"):
        plotting.plot_graph_evolution([(5, data), (9, data)], layouts=[layout])
    with pytest.raises(ValueError, match="same number of nodes"):
        plotting.plot_graph_evolution([(5, data), (9, grid_graph(2, 3))])


# ----------------------------------------------------------------------------- heatmap
def test_module_colours_match_the_categorical_legend():
    # the colour map of the graph evolution gives module m the colour that the final graph's
    # legend gives class m, and its colour bar names the modules
    from matplotlib import colormaps

    for count, base in ((3, "tab10"), (12, "tab20")):
        cmap = plotting.module_colormap(count)
        assert cmap.N == count
        assert [cmap(m) for m in range(count)] == [colormaps[base](m) for m in range(count)]
    assert plotting.module_colormap(30).N == 30
    fig = plotting.plot_graph(grid_graph(2, 2), torch.tensor([0.0, 1.0, 2.0, 3.0]),
                              cmap=plotting.module_colormap(4))
    plotting.label_module_colorbar(fig, 4, "planted")
    colorbar = fig.axes[-1]
    assert [t.get_text() for t in colorbar.get_yticklabels()] == [
        "planted 0", "planted 1", "planted 2", "planted 3"]
    assert colorbar.get_yticks().tolist() == pytest.approx([0.375, 1.125, 1.875, 2.625])
    with pytest.raises(ValueError, match="num_modules must be >= 1"):
        plotting.module_colormap(0)


def test_module_colorbar_labels_refuse_a_figure_without_colour_bar():
    # without a colour bar the last axes is the graph itself: its y axis stays as it was
    fig = plotting.plot_graph(grid_graph(2, 2), torch.tensor([0.0, 1.0, 2.0, 3.0]),
                              cmap=plotting.module_colormap(4), colorbar=False, title="g")
    ticks = fig.axes[-1].get_yticks().tolist()
    with pytest.raises(ValueError, match=r"last axes is a plot \(title 'g'\); draw the "
                                         r"figure with colorbar=True"):
        plotting.label_module_colorbar(fig, 4)
    assert fig.axes[-1].get_yticks().tolist() == ticks
    assert not any(t.get_text().startswith("module") for t in fig.axes[-1].get_yticklabels())
    with pytest.raises(ValueError, match="got a figure without axes"):
        plotting.label_module_colorbar(Figure(), 4)


def test_plot_heatmap_orders_by_group_and_draws_boundaries(tmp_path):
    matrix = torch.arange(15, dtype=torch.float32).view(5, 3) - 4
    groups = [2, 0, 2, 1, 0]
    fig = plotting.plot_heatmap(matrix, col_labels=["CD4", "CD8", "CD3"], row_groups=groups,
                                title="corr", path=tmp_path / "h.png", dpi=DPI)
    assert_png(tmp_path / "h.png")
    ax = fig.axes[0]
    order = [1, 4, 3, 0, 2]  # stable sort by group
    np.testing.assert_array_equal(ax.images[0].get_array(), matrix.numpy()[order])
    assert ax.images[0].get_clim() == pytest.approx((-10.0, 10.0))  # symmetric around 0
    boundaries = sorted(line.get_ydata()[0] for line in ax.lines)
    assert boundaries == [1.5, 2.5]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CD4", "CD8", "CD3"]


def test_plot_heatmap_explicit_order_and_no_center():
    matrix = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    fig = plotting.plot_heatmap(matrix, row_order=[2, 0, 1], col_order=[1, 0], center=None)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), matrix[[2, 0, 1]][:, [1, 0]])
    assert fig.axes[0].images[0].get_clim() == (1.0, 6.0)
    with pytest.raises(ValueError, match=r"row_order must be a permutation of range\(3\)"):
        plotting.plot_heatmap(matrix, row_order=[0, 0, 1])


# ----------------------------------------------------------------------------- embedding
def test_plot_embedding_continuous_and_categorical(tmp_path):
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(300, 2, generator=generator)
    activity = points[:, 0].clone()
    fig = plotting.plot_embedding(points, activity, title="module 1",
                                  path=tmp_path / "e.png", dpi=DPI)
    assert_png(tmp_path / "e.png")
    scatter = fig.axes[0].collections[0]
    # Drawn in a shuffled order, but each point keeps its own colour value.
    np.testing.assert_allclose(scatter.get_offsets()[:, 0], scatter.get_array())
    assert sorted(scatter.get_array().tolist()) == sorted(activity.tolist())

    classes = (points[:, 1] > 0).long() * 2  # classes 0 and 2, none of class 1
    fig = plotting.plot_embedding(points, classes, categorical=True,
                                  class_names=["DN", "DP", "SP"])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["DN", "SP"]
    with pytest.raises(ValueError, match=r"colour must have one entry per point \(300\)"):
        plotting.plot_embedding(points, activity[:10])


# ----------------------------------------------------------------------------- read-out panels
def test_plot_group_activity_on_graph_shares_a_symmetric_range(tmp_path):
    graph = grid_graph(3, 3)
    maps = torch.arange(27, dtype=torch.float32).view(3, 9) - 10.0  # largest |value| 16
    maps[1, 4] = float("nan")
    fig = plotting.plot_group_activity_on_graph(
        graph, maps, ["Ery", "Mk", "Neu"], ncols=2, colorbar_label="minus mean",
        title="per type", path=tmp_path / "groups.png", dpi=DPI)
    assert_png(tmp_path / "groups.png")
    panels = visible_axes(fig)
    assert [ax.get_title() for ax in panels] == ["Ery", "Mk", "Neu"]
    assert sum(not ax.get_visible() for ax in fig.axes) == 1  # 2 x 2 grid, one left empty
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 1 and colorbars[0].get_ylabel() == "minus mean"
    assert colorbars[0].get_ylim() == pytest.approx((-16.0, 16.0))
    assert fig.get_suptitle() == "per type"
    for index, ax in enumerate(panels):
        nodes = ax.collections[-1]  # the scatter is drawn after the edges
        assert nodes.get_offsets().shape == (9, 2)
        assert nodes.get_clim() == pytest.approx((-16.0, 16.0))
        np.testing.assert_array_equal(np.ma.filled(nodes.get_array(), np.nan),
                                      maps[index].numpy())
        np.testing.assert_array_equal(nodes.get_offsets(), graph.pos.numpy())
        assert len(ax.collections[0].get_segments()) == 12  # undirected edges of a 3x3 grid


def test_plot_group_activity_on_graph_defaults_and_errors():
    graph = grid_graph(2, 2)
    fig = plotting.plot_group_activity_on_graph(graph, torch.zeros(2, 4))
    assert [ax.get_title() for ax in visible_axes(fig)] == ["group 0", "group 1"]
    assert fig.axes[-1].get_ylim() == pytest.approx((-1.0, 1.0))  # all zero: range 1
    with pytest.raises(ValueError, match=r"maps must have one column per node of the graph "
                                         r"\(4\), got shape \(2, 5\)"):
        plotting.plot_group_activity_on_graph(graph, torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"names must have one title per group .*2\), got"):
        plotting.plot_group_activity_on_graph(graph, torch.zeros(2, 4), ["only one"])
    with pytest.raises(ValueError, match="maps must be 2-D"):
        plotting.plot_group_activity_on_graph(graph, torch.zeros(4))
    with pytest.raises(ValueError, match=r"pos must have shape \[4, 2\]"):
        plotting.plot_group_activity_on_graph(graph, torch.zeros(1, 4), pos=torch.zeros(3, 2))


def test_plot_feature_correlations_over_the_selected_cells(tmp_path):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(40, 3, generator=generator)
    activations = torch.randn(40, 4, generator=generator)
    cells = torch.arange(40) % 2 == 0
    fig = plotting.plot_feature_correlations(
        inputs, activations, ["g0", "g1", "g2"], cells=cells, neuron_groups=[1, 0, 1, 0],
        feature_groups=[1, 1, 0], title="type A", path=tmp_path / "corr.png", dpi=DPI)
    assert_png(tmp_path / "corr.png")
    ax = fig.axes[0]
    full = np.corrcoef(inputs[cells].double().numpy().T, activations[cells].double().numpy().T)
    reference = full[3:, :3]  # neurons x features over the even cells only
    shown = ax.images[0].get_array()
    np.testing.assert_allclose(shown, reference[[1, 3, 0, 2]][:, [2, 0, 1]], atol=1e-5)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["g2", "g0", "g1"]
    assert ax.get_title() == "type A" and ax.get_xlabel() == "features"
    assert fig.axes[-1].get_ylabel() == "Pearson r"
    every_cell = plotting.plot_feature_correlations(inputs, activations)
    np.testing.assert_allclose(every_cell.axes[0].images[0].get_array(),
                               np.corrcoef(inputs.T.double(), activations.T.double())[3:, :3],
                               atol=1e-5)
    by_index = plotting.plot_feature_correlations(inputs, activations,
                                                  cells=torch.nonzero(cells).flatten())
    np.testing.assert_allclose(by_index.axes[0].images[0].get_array(), reference, atol=1e-5)


def test_plot_feature_correlations_errors():
    inputs, activations = torch.randn(10, 3), torch.randn(10, 4)
    with pytest.raises(ValueError, match="cells must select at least 2 samples .*got 1"):
        plotting.plot_feature_correlations(inputs, activations, cells=torch.arange(10) == 3)
    with pytest.raises(ValueError, match=r"cells as a mask must have one entry per sample "
                                         r"\(10\)"):
        plotting.plot_feature_correlations(inputs, activations, cells=torch.ones(9, dtype=bool))
    with pytest.raises(ValueError, match=r"same samples \(rows\), got 10 and 9"):
        plotting.plot_feature_correlations(inputs, activations[:9])
    with pytest.raises(TypeError, match="inputs must be a torch.Tensor"):
        plotting.plot_feature_correlations(inputs.numpy(), activations)
    with pytest.raises(ValueError, match="col_labels must have 3 entries, got 2"):
        plotting.plot_feature_correlations(inputs, activations, ["a", "b"])


def test_plot_embedding_panels_one_panel_per_label_and_value(tmp_path):
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(50, 2, generator=generator)
    types = (torch.arange(50) % 3, ["Ery", "Mk", "Neu"])
    fates = (torch.arange(50) % 2, None)
    values = torch.rand(50, 3, generator=generator)
    fig = plotting.plot_embedding_panels(points, {"cell_type": types, "fate": fates}, values,
                                         ncols=2, axis_name="UMAP", title="cells",
                                         path=tmp_path / "emb.png", dpi=DPI)
    assert_png(tmp_path / "emb.png")
    assert len(fig.subfigs) == 6  # 3 x 2 sub-figures, one left empty
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == ["cell_type", "fate", "module 0", "module 1",
                                                 "module 2"]
    assert {(ax.get_xlabel(), ax.get_ylabel()) for ax in panels} == {("UMAP 1", "UMAP 2")}
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 3
    assert {ax.get_ylabel() for ax in colorbars} == {"module activity"}
    legend = [t.get_text() for t in panels[0].get_legend().get_texts()]
    assert legend == ["Ery", "Mk", "Neu"]
    assert [t.get_text() for t in panels[1].get_legend().get_texts()] == ["0", "1"]
    for ax in panels:
        assert ax.collections[0].get_offsets().shape == (50, 2)
    for m, ax in enumerate(panels[2:]):
        assert sorted(ax.collections[0].get_array().tolist()) == pytest.approx(
            sorted(values[:, m].tolist()))
    assert fig.get_suptitle() == "cells"


def test_plot_embedding_panels_value_names_and_errors():
    points = np.zeros((6, 2))
    fig = plotting.plot_embedding_panels(points, values=np.ones((6, 2)), value_names=["a", "b"])
    assert [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"] == ["a", "b"]
    with pytest.raises(ValueError, match="no panel to draw"):
        plotting.plot_embedding_panels(points)
    with pytest.raises(ValueError, match=r"labels\['t'\] codes must have one entry per point "
                                         r"\(6\), got 5"):
        plotting.plot_embedding_panels(points, {"t": (torch.zeros(5, dtype=torch.long), None)})
    with pytest.raises(TypeError, match=r"labels\['t'\] must be a \(codes, names\) pair"):
        plotting.plot_embedding_panels(points, {"t": torch.zeros(6, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"values must have one row per point \(6\)"):
        plotting.plot_embedding_panels(points, values=np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"value_names must have one title per column of "
                                         r"values \(2\)"):
        plotting.plot_embedding_panels(points, values=np.ones((6, 2)), value_names=["a"])


# ----------------------------------------------------------------------------- report
def test_html_report_is_self_contained(tmp_path):
    image = tmp_path / "maps.png"
    plotting.plot_grid_maps(torch.rand(2, 4), path=image, dpi=DPI)
    rows = [{"weight": 0.0, "accuracy": 0.99123456, "note": "<b>"}, {"weight": 1e-2, "mse": 7}]
    figure = plotting.plot_curves([1, 2], {"a": [1.0, 2.0]})
    path = write_html_report(tmp_path / "out" / "report.html", "Run <3> & co", [
        ("Results", ["Accuracy & Moran's I per weight.", rows]),
        ("Figures", [image, figure]),
    ])
    text = path.read_text(encoding="utf-8")
    assert "<title>Run &lt;3&gt; &amp; co</title>" in text
    assert "Accuracy &amp; Moran&#x27;s I per weight." in text
    assert "<th>weight</th><th>accuracy</th><th>note</th><th>mse</th>" in text
    assert "<td>0.9912</td>" in text and "<td>0.01</td>" in text and "<td>7</td>" in text
    assert "&lt;b&gt;" in text and "<b>" not in text
    assert text.count("data:image/png;base64,") == 2
    without_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert "http" not in without_images.lower() and "href" not in without_images
    encoded = re.search(r'src="data:image/png;base64,([^"]+)"', text).group(1)
    assert base64.b64decode(encoded) == image.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]


def test_html_report_validates_items(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_html_report(tmp_path / "r.html", "t", [("s", [tmp_path / "missing.png"])])
    with pytest.raises(ValueError, match="must be an image file"):
        write_html_report(tmp_path / "r.html", "t", [("s", [tmp_path / "notes.txt"])])
    with pytest.raises(TypeError, match=r"sections\[0\] item 1 must be a str"):
        write_html_report(tmp_path / "r.html", "t", [("s", ["ok", 3.5])])
    with pytest.raises(TypeError, match=r"sections\[0\] items must be a list"):
        write_html_report(tmp_path / "r.html", "t", [("s", "just text")])
    assert not (tmp_path / "r.html").exists()
