r"""Predefined neuron graphs as PyG :class:`~torch_geometric.data.Data`, networkx and GraphML
in/out, and :func:`check_graph`, the one check of a graph that every module uses.

Every graph here follows one data model: ``num_nodes`` is set; ``edge_index`` is a ``[2, E]``
long tensor holding **both directions** of every undirected edge, with no self-loops, coalesced
(sorted row-major, no duplicates); ``edge_weight`` is a ``[E]`` float tensor, positive and
symmetric (``float32`` ones for unweighted graphs); ``pos`` is an optional ``[N, 2]`` layout used
for plotting. Lattices are numbered row-major: the neuron in row ``r`` and column ``c`` of a
``height x width`` grid is node ``r * width + c``, which is how a flat layer output of
``height * width`` features is reshaped to an image.

Example::

    >>> g = grid(8, 8)
    >>> g.num_nodes, num_undirected_edges(g)
    (64, 112)
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import networkx as nx
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import coalesce, to_undirected

from gsr_pyg._validation import (
    check_choice,
    check_finite,
    check_int,
    check_tensor,
    describe,
)
from gsr_pyg.files import atomic_write

__all__ = [
    "balanced_tree",
    "check_graph",
    "copies",
    "disjoint_union",
    "edge_weights",
    "from_edge_index",
    "from_networkx",
    "grid",
    "line",
    "num_undirected_edges",
    "read_graphml",
    "ring",
    "star",
    "to_networkx",
    "torus",
    "write_graphml",
]

# Two weights given for one undirected pair count as the same weight within this relative
# tolerance (they are then merged); float rounding in a symmetrised matrix stays below it.
_SYMMETRY_RTOL = 1e-5


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


def _pairs_to_data(src: Tensor, dst: Tensor, num_nodes: int, pos: Tensor | None) -> Data:
    """Unweighted Data from one direction of each undirected edge (no duplicates, no loops)."""
    edge_index = torch.stack([src, dst]).long()
    edge_weight = torch.ones(edge_index.size(1), dtype=torch.float32, device=edge_index.device)
    edge_index, edge_weight = to_undirected(edge_index, edge_weight, num_nodes, reduce="max")
    data = Data(edge_index=edge_index, edge_weight=edge_weight, num_nodes=num_nodes)
    if pos is not None:
        data.pos = pos.to(torch.float32)
    return data


def _lattice_pos(height: int, width: int) -> Tensor:
    """Row-major (column, height - 1 - row) coordinates, so a plot looks like the image."""
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    return torch.stack([cols, height - 1 - rows], dim=1).to(torch.float32)


def _circle_pos(n: int) -> Tensor:
    angle = 2 * math.pi * torch.arange(n, dtype=torch.float64) / max(n, 1)
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1).to(torch.float32)


def num_undirected_edges(data: Data) -> int:
    r"""Number of undirected edges of a graph in the data model: ``E / 2``.

    Example::

        >>> num_undirected_edges(ring(5))
        5
    """
    check_graph(data)
    return data.edge_index.size(1) // 2


# --------------------------------------------------------------------------------------------
# predefined graphs
# --------------------------------------------------------------------------------------------


def grid(height: int, width: int, neighbours: int = 4) -> Data:
    r"""A ``height x width`` lattice of neurons, numbered row-major (node ``r * width + c``).

    With ``neighbours=4`` (the default) node :math:`(r, c)` is joined to
    :math:`(r \pm 1, c)` and :math:`(r, c \pm 1)`: the 4-neighbour grid, with
    :math:`h(w-1) + w(h-1)` undirected edges. ``neighbours=8`` adds both diagonals,
    :math:`2(h-1)(w-1)` more edges. There are no self-loops (unlike
    :func:`torch_geometric.utils.grid`, which is an 8-neighbour grid with self-loops).
    ``pos`` is ``(column, height - 1 - row)``, so node 0 is drawn at the top left.

    Args:
        height (int): number of rows, ``>= 1``.
        width (int): number of columns, ``>= 1``.
        neighbours (int, optional): ``4`` or ``8``. (default: ``4``)

    Example::

        >>> g = grid(8, 8)
        >>> g.edge_index.shape
        torch.Size([2, 224])
    """
    check_int(height, "height", minimum=1)
    check_int(width, "width", minimum=1)
    check_choice(neighbours, "neighbours", (4, 8))
    node = torch.arange(height * width).view(height, width)
    src = [node[:, :-1], node[:-1, :]]  # right, down
    dst = [node[:, 1:], node[1:, :]]
    if neighbours == 8:
        src += [node[:-1, :-1], node[:-1, 1:]]  # down-right, down-left
        dst += [node[1:, 1:], node[1:, :-1]]
    src_flat = torch.cat([s.reshape(-1) for s in src])
    dst_flat = torch.cat([d.reshape(-1) for d in dst])
    return _pairs_to_data(src_flat, dst_flat, height * width, _lattice_pos(height, width))


def torus(height: int, width: int) -> Data:
    r"""A 4-neighbour grid that wraps around, numbered row-major like :func:`grid`.

    Each dimension of size at least 3 wraps (row ``height - 1`` joins row 0, column
    ``width - 1`` joins column 0), exactly as ``networkx.grid_2d_graph(height, width,
    periodic=True)``; a dimension of size 1 or 2 does not wrap, since that would add a
    self-loop or a second copy of an existing edge. ``torus(4, 8)`` is 4-regular with 64
    undirected edges. ``pos`` is the flat grid layout of :func:`grid`.

    Args:
        height (int): number of rows, ``>= 1``.
        width (int): number of columns, ``>= 1``.

    Example::

        >>> g = torus(4, 8)
        >>> num_undirected_edges(g)
        64
    """
    check_int(height, "height", minimum=1)
    check_int(width, "width", minimum=1)
    node = torch.arange(height * width).view(height, width)
    src = [node[:, :-1], node[:-1, :]]
    dst = [node[:, 1:], node[1:, :]]
    if width >= 3:
        src.append(node[:, -1])
        dst.append(node[:, 0])
    if height >= 3:
        src.append(node[-1, :])
        dst.append(node[0, :])
    src_flat = torch.cat([s.reshape(-1) for s in src])
    dst_flat = torch.cat([d.reshape(-1) for d in dst])
    return _pairs_to_data(src_flat, dst_flat, height * width, _lattice_pos(height, width))


def ring(n: int) -> Data:
    r"""A cycle of ``n >= 3`` neurons: node ``i`` is joined to ``(i + 1) mod n``.

    Same edges as ``networkx.cycle_graph(n)``. ``pos`` puts node ``i`` on the unit circle at
    angle :math:`2\pi i / n`.

    Example::

        >>> num_undirected_edges(ring(6))
        6
    """
    check_int(n, "n", minimum=3)
    src = torch.arange(n)
    return _pairs_to_data(src, (src + 1) % n, n, _circle_pos(n))


def line(n: int) -> Data:
    r"""A path of ``n >= 1`` neurons: node ``i`` is joined to ``i + 1``.

    Same edges as ``networkx.path_graph(n)``. ``pos`` is ``(i, 0)``, so :func:`copies` of a
    line are laid out exactly like a :func:`grid`.

    Example::

        >>> num_undirected_edges(line(5))
        4
    """
    check_int(n, "n", minimum=1)
    src = torch.arange(n - 1)
    pos = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.long)], dim=1)
    return _pairs_to_data(src, src + 1, n, pos)


def star(n: int) -> Data:
    r"""A star of ``n >= 1`` neurons: node 0 is the hub, nodes ``1 .. n - 1`` are leaves.

    Same edges as ``networkx.star_graph(n - 1)`` (which counts leaves, not nodes). ``pos``
    puts the hub at the origin and the leaves on the unit circle.

    Example::

        >>> g = star(5)
        >>> num_undirected_edges(g), g.num_nodes
        (4, 5)
    """
    check_int(n, "n", minimum=1)
    leaves = torch.arange(1, n)
    pos = torch.cat([torch.zeros(1, 2), _circle_pos(n - 1)], dim=0)
    return _pairs_to_data(torch.zeros_like(leaves), leaves, n, pos)


def balanced_tree(branching: int, depth: int) -> Data:
    r"""A rooted tree where every inner node has ``branching`` children, ``depth`` levels deep.

    Nodes are numbered breadth-first as in ``networkx.balanced_tree(branching, depth)``: the
    root is 0 and the parent of node :math:`k > 0` is :math:`\lfloor (k - 1) / b \rfloor`, so
    there are :math:`\sum_{l=0}^{d} b^l` nodes. ``pos`` is a layered drawing: level ``l`` at
    height ``depth - l``, each node centred above its children, leaves one unit apart.

    Args:
        branching (int): children per inner node, ``>= 1``.
        depth (int): number of levels below the root, ``>= 0``.

    Example::

        >>> g = balanced_tree(2, 3)
        >>> g.num_nodes, num_undirected_edges(g)
        (15, 14)
    """
    check_int(branching, "branching", minimum=1)
    check_int(depth, "depth", minimum=0)
    level_sizes = [branching**level for level in range(depth + 1)]
    num_nodes = sum(level_sizes)
    child = torch.arange(1, num_nodes)
    parent = torch.div(child - 1, branching, rounding_mode="floor")

    # Node j of level l spans leaves [j * b^(d-l), (j + 1) * b^(d-l)); draw it at their centre.
    xs, ys = [], []
    for level, size in enumerate(level_sizes):  # one step per level, not per node
        span = branching ** (depth - level)
        xs.append(torch.arange(size, dtype=torch.float64) * span + (span - 1) / 2)
        ys.append(torch.full((size,), float(depth - level), dtype=torch.float64))
    x = torch.cat(xs) - (level_sizes[-1] - 1) / 2
    pos = torch.stack([x, torch.cat(ys)], dim=1)
    return _pairs_to_data(parent, child, num_nodes, pos)


# --------------------------------------------------------------------------------------------
# combining graphs
# --------------------------------------------------------------------------------------------


def copies(graph: Data, k: int) -> Data:
    r"""``k`` disjoint copies of ``graph``, numbered copy-major: node ``i`` of copy ``c`` is
    ``c * n + i``.

    This is a layer of ``k * n`` neurons read as ``k`` rows of an ``n``-neuron shape (for
    example ``copies(ring(8), 4)`` for four rings of eight). Edge weights are copied. When
    ``graph`` has ``pos``, copy ``c`` is shifted down by ``c`` times (its height + 1), copy 0
    on top; ``copies(line(w), h)`` therefore has the same ``pos`` as ``grid(h, w)``.

    Example::

        >>> g = copies(line(2), 3)
        >>> g.num_nodes, num_undirected_edges(g)
        (6, 3)
    """
    check_graph(graph)
    check_int(k, "k", minimum=1)
    n = graph.num_nodes
    edge_index = graph.edge_index
    num_edges = edge_index.size(1)
    offset = (torch.arange(k, device=edge_index.device) * n).repeat_interleave(num_edges)
    data = Data(
        edge_index=edge_index.repeat(1, k) + offset,  # blocks stay sorted: still coalesced
        edge_weight=edge_weights(graph).repeat(k),
        num_nodes=n * k,
    )
    if graph.pos is not None:
        pos = graph.pos
        step = (pos[:, 1].max() - pos[:, 1].min() + 1) if n > 0 else pos.new_ones(())
        shift = (k - 1 - torch.arange(k, device=pos.device, dtype=pos.dtype)) * step
        data.pos = pos.repeat(k, 1) + torch.stack(
            [torch.zeros_like(shift), shift], dim=1
        ).repeat_interleave(n, dim=0)
    return data


def disjoint_union(graphs: Sequence[Data]) -> Data:
    r"""The disjoint union of ``graphs``, numbered in order: graph ``g``'s node ``i`` becomes
    ``i + sum(n_0 .. n_{g-1})``.

    ``pos`` is kept when every graph has one: the graphs are placed left to right, each one
    unit to the right of the previous graph's rightmost node, so they do not overlap. When
    any graph lacks ``pos``, the union has none. A graph without ``edge_weight`` counts as
    unit weights.

    Example::

        >>> g = disjoint_union([ring(4), line(3)])
        >>> g.num_nodes, num_undirected_edges(g)
        (7, 6)
    """
    if isinstance(graphs, Data) or not isinstance(graphs, Iterable):
        raise TypeError(f"graphs must be a sequence of Data, got {describe(graphs)}")
    graphs = list(graphs)
    if not graphs:
        raise ValueError("graphs must contain at least one Data, got an empty sequence")
    for index, graph in enumerate(graphs):
        check_graph(graph, name=f"graphs[{index}]")
    sizes = [g.num_nodes for g in graphs]
    starts = [sum(sizes[:i]) for i in range(len(graphs))]
    edge_index = torch.cat([g.edge_index + s for g, s in zip(graphs, starts, strict=True)], dim=1)
    edge_weight = torch.cat([edge_weights(g) for g in graphs])
    data = Data(edge_index=edge_index, edge_weight=edge_weight, num_nodes=sum(sizes))
    if all(g.pos is not None for g in graphs):
        placed, right = [], None
        for g in graphs:  # one step per graph, not per node
            pos = g.pos
            if pos.size(0) == 0:
                placed.append(pos)
                continue
            shift = 0.0 if right is None else right + 1.0 - pos[:, 0].min()
            pos = pos + torch.stack([torch.as_tensor(shift, dtype=pos.dtype, device=pos.device),
                                     pos.new_zeros(())])
            right = pos[:, 0].max()
            placed.append(pos)
        data.pos = torch.cat(placed, dim=0)
    return data


def edge_weights(graph: Data, dtype: torch.dtype | None = None) -> Tensor:
    r"""The ``[E]`` edge weights of a graph: ``graph.edge_weight``, or ones (``float32``)
    when it has none (an unweighted graph), cast to ``dtype`` when given. Not validated:
    call :func:`check_graph` first.

    Example::

        >>> edge_weights(Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=2))
        tensor([1., 1.])
    """
    weight = graph.edge_weight
    if weight is None:
        edge_index = graph.edge_index
        weight = torch.ones(edge_index.size(1), dtype=torch.float32, device=edge_index.device)
    return weight if dtype is None else weight.to(dtype)


# --------------------------------------------------------------------------------------------
# from edge lists and networkx
# --------------------------------------------------------------------------------------------


def from_edge_index(
    edge_index: Tensor,
    edge_weight: Tensor | None = None,
    num_nodes: int | None = None,
    pos: Tensor | None = None,
) -> Data:
    r"""A graph in the data model from any edge list.

    Self-loops are dropped; each pair given in one direction only gains its reverse; repeated
    entries of a pair are merged. Weights default to 1 (``float32``); integer weights become
    ``float32``, floating weights keep their dtype. A pair given more than once (in either
    direction) must carry one weight: entries that differ by more than a relative
    :math:`10^{-5}` raise a ``ValueError`` instead of being summed or averaged silently
    (symmetrise the matrix yourself, e.g. :math:`(A + A^\top) / 2`); entries within that
    tolerance are merged into the midpoint of their range. Everything runs on the device of
    ``edge_index``.

    Args:
        edge_index (Tensor): ``[2, E]`` integer tensor of node indices in ``[0, num_nodes)``.
        edge_weight (Tensor, optional): ``[E]`` finite weights ``> 0``. (default: ones)
        num_nodes (int, optional): number of nodes; default ``pos.size(0)`` when ``pos`` is
            given, else ``edge_index.max() + 1``.
        pos (Tensor, optional): ``[num_nodes, 2]`` floating layout.

    Example::

        >>> g = from_edge_index(torch.tensor([[0, 1, 1, 2], [1, 2, 1, 0]]))
        >>> g.edge_index.tolist()
        [[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]]
    """
    check_tensor(edge_index, "edge_index", ndim=2)
    if edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {describe(edge_index)}")
    if edge_index.is_floating_point() or edge_index.is_complex() or edge_index.dtype == torch.bool:
        raise ValueError(f"edge_index must have an integer dtype, got {describe(edge_index)}")
    edge_index = edge_index.long()
    device = edge_index.device
    num_edges = edge_index.size(1)

    edge_weight = _edge_weight_arg(edge_weight, edge_index)
    if pos is not None:
        check_tensor(pos, "pos", ndim=2, floating=True)
        if pos.size(1) != 2:
            raise ValueError(f"pos must have shape [num_nodes, 2], got {describe(pos)}")
        _check_same_device(pos, "pos", device)
        check_finite(pos, "pos")

    if num_nodes is None:
        if pos is not None:
            num_nodes = pos.size(0)
        else:
            num_nodes = int(edge_index.max()) + 1 if num_edges else 0
    check_int(num_nodes, "num_nodes", minimum=0)
    if pos is not None and pos.size(0) != num_nodes:
        raise ValueError(f"pos must have {num_nodes} rows (one per node), got {describe(pos)}")
    if num_edges:
        low, high = int(edge_index.min()), int(edge_index.max())
        if low < 0 or high >= num_nodes:
            bad = low if low < 0 else high
            raise ValueError(
                f"edge_index contains node {bad}, but node indices must lie in "
                f"[0, {num_nodes}) for num_nodes={num_nodes}"
            )

    keep = edge_index[0] != edge_index[1]
    edge_index, edge_weight = edge_index[:, keep], edge_weight[keep]

    # One entry per undirected pair (low, high); the pair's entries must agree on the weight.
    canonical = torch.stack([edge_index.min(dim=0).values, edge_index.max(dim=0).values])
    pairs, low_weight = coalesce(canonical, edge_weight, num_nodes, reduce="min")
    _, high_weight = coalesce(canonical, edge_weight, num_nodes, reduce="max")
    conflict = ~torch.isclose(low_weight, high_weight, rtol=_SYMMETRY_RTOL, atol=0.0)
    if bool(conflict.any()):
        bad = int(torch.nonzero(conflict)[0])
        i, j = int(pairs[0, bad]), int(pairs[1, bad])
        raise ValueError(
            f"edge_weight gives the pair ({i}, {j}) two different weights, "
            f"{float(low_weight[bad])} and {float(high_weight[bad])} (as ({i}, {j}) and "
            f"({j}, {i}), or as repeated entries); an undirected graph has one weight per "
            f"pair: symmetrise the weights first, e.g. (A + A^T) / 2"
        )
    # The midpoint keeps equal entries exact, which a mean over several entries may not.
    merged_weight = (low_weight + high_weight) / 2
    edge_index, edge_weight = to_undirected(pairs, merged_weight, num_nodes, reduce="max")
    data = Data(edge_index=edge_index, edge_weight=edge_weight, num_nodes=num_nodes)
    if pos is not None:
        data.pos = pos
    return data


def _edge_weight_arg(edge_weight: Tensor | None, edge_index: Tensor) -> Tensor:
    """``from_edge_index``'s weights: checked, floating (ones when not given)."""
    num_edges = edge_index.size(1)
    if edge_weight is None:
        return torch.ones(num_edges, dtype=torch.float32, device=edge_index.device)
    check_tensor(edge_weight, "edge_weight", ndim=1)
    if edge_weight.is_complex() or edge_weight.dtype == torch.bool:
        raise ValueError(
            f"edge_weight must be a real floating or integer tensor, got {describe(edge_weight)}"
        )
    if not edge_weight.is_floating_point():
        edge_weight = edge_weight.to(torch.float32)
    if edge_weight.numel() != num_edges:
        raise ValueError(
            f"edge_weight must have one entry per column of edge_index ({num_edges}), "
            f"got {edge_weight.numel()}"
        )
    _check_same_device(edge_weight, "edge_weight", edge_index.device)
    _check_positive_weights(edge_weight, edge_index)
    return edge_weight


def _check_same_device(value: Tensor, name: str, device: torch.device) -> None:
    if value.device != device:
        raise ValueError(
            f"{name} must be on the device of edge_index ({device}), got {value.device}"
        )


# Edge weights and positions are float32 unless a graph says otherwise; to_networkx names any
# other dtype in these graph attributes, so that from_networkx gives back the same tensors.
_DTYPE_ATTRIBUTES = {"edge_weight": "edge_weight_dtype", "pos": "pos_dtype"}
_FLOAT_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
# Node attributes that hold a layout in networkx (a tuple, the convention of its drawing
# functions) and in GraphML (two numbers: the writer cannot store a tuple).
_POSITION_KEYS = ("x", "y")


def _dtype_from_graph(G: nx.Graph, key: str) -> torch.dtype:
    name = G.graph.get(key, "float32")
    if name not in _FLOAT_DTYPES:
        raise ValueError(
            f"graph attribute {key!r} must be one of {tuple(_FLOAT_DTYPES)}, got {name!r}"
        )
    return _FLOAT_DTYPES[name]


def _node_order(G: nx.Graph, nodelist: Sequence[Hashable] | None) -> list:
    """The nodes of G in the order of the result: ``nodelist``, checked, or G's own order."""
    if nodelist is None:
        return list(G.nodes)
    nodes = list(nodelist)
    index = {node: i for i, node in enumerate(nodes)}
    if len(index) != len(nodes):
        seen: set = set()
        duplicate = next(n for n in nodes if n in seen or seen.add(n))
        raise ValueError(f"nodelist must list each node once, got {duplicate!r} twice")
    extra = [n for n in nodes if n not in G]
    if extra:
        raise ValueError(f"nodelist contains {extra[0]!r}, which is not a node of G")
    if len(nodes) != G.number_of_nodes():
        missing = next(n for n in G if n not in index)
        raise ValueError(f"nodelist must list every node of G, but {missing!r} is missing")
    return nodes


def _positions_from_networkx(G: nx.Graph, nodes: list) -> Tensor | None:
    """``[N, 2]`` positions from the node attribute ``pos`` (2 numbers) or from the node
    attributes ``x`` and ``y``, when every node has them; else ``None``."""
    attributes = G.nodes
    if nodes and all("pos" in attributes[n] for n in nodes):
        where = "node attribute 'pos' must hold 2 numbers per node"
        rows = [attributes[n]["pos"] for n in nodes]
    elif nodes and all(all(k in attributes[n] for k in _POSITION_KEYS) for n in nodes):
        where = "node attributes 'x' and 'y' must be numbers"
        rows = [[attributes[n][k] for k in _POSITION_KEYS] for n in nodes]
    else:
        return None
    try:
        pos = torch.tensor([list(row) for row in rows], dtype=_dtype_from_graph(G, "pos_dtype"))
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{where} ({error})") from None
    if pos.dim() != 2 or pos.size(1) != 2:
        raise ValueError(f"{where}, got {describe(pos)}")
    return pos


def from_networkx(
    G: nx.Graph,
    nodelist: Sequence[Hashable] | None = None,
    weight: str | None = "weight",
) -> Data:
    r"""A graph in the data model from an undirected ``networkx.Graph``.

    Node ``i`` of the result is ``nodelist[i]`` (default ``list(G.nodes)``). Weights come from
    the edge attribute ``weight`` (1 when an edge lacks it, all ones when ``weight=None``) and
    are stored as ``float32``, or in the dtype the graph attribute ``"edge_weight_dtype"``
    names (:func:`to_networkx` sets it for weights that are not ``float32``). ``pos`` is
    taken, when every node has it, from the node attribute ``"pos"`` (2 numbers: networkx's
    layouts) or else from the node attributes ``"x"`` and ``"y"`` (what :func:`to_networkx`
    and GraphML files store), as ``float32`` or the dtype named by ``"pos_dtype"``. The graph
    attribute ``"name"`` is kept as ``data.name``. Directed graphs, multigraphs and
    self-loops raise ``ValueError``: their conversion to one undirected weight per pair is a
    choice the caller should make.

    Example::

        >>> g = from_networkx(nx.cycle_graph(5))
        >>> num_undirected_edges(g)
        5
    """
    if not isinstance(G, nx.Graph):
        raise TypeError(f"G must be a networkx.Graph, got {describe(G)}")
    if G.is_directed():
        raise ValueError(
            f"G must be undirected, got a {type(G).__name__}; convert it with G.to_undirected() "
            "after deciding how the two directions' weights combine"
        )
    if G.is_multigraph():
        raise ValueError(
            f"G must be a simple graph, got a {type(G).__name__}; merge parallel edges into one "
            "weighted edge first"
        )
    loop = next(iter(nx.selfloop_edges(G)), None)
    if loop is not None:
        raise ValueError(f"G must have no self-loops, got one at node {loop[0]!r}")
    nodes = _node_order(G, nodelist)
    index = {node: i for i, node in enumerate(nodes)}

    edges = list(G.edges(data=weight, default=1.0)) if weight is not None else [
        (u, v, 1.0) for u, v in G.edges()
    ]
    for u, v, w in edges:  # a graph conversion, not a training step
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ValueError(
                f"edge ({u!r}, {v!r}) has {weight}={w!r}; edge weights must be finite numbers > 0"
            )
    src = torch.tensor([index[u] for u, _, _ in edges], dtype=torch.long)
    dst = torch.tensor([index[v] for _, v, _ in edges], dtype=torch.long)
    edge_weight = torch.tensor([float(w) for _, _, w in edges],
                               dtype=_dtype_from_graph(G, "edge_weight_dtype"))
    data = from_edge_index(torch.stack([src, dst]).view(2, -1), edge_weight,
                           num_nodes=len(nodes), pos=_positions_from_networkx(G, nodes))
    if "name" in G.graph:
        data.name = G.graph["name"]
    return data


def to_networkx(data: Data) -> nx.Graph:
    r"""An undirected ``networkx.Graph`` with nodes ``0 .. N - 1`` in order.

    Isolated nodes are kept. Each undirected edge carries ``weight`` (a python float; 1.0
    when ``data`` has no ``edge_weight``); when ``data.pos`` exists each node carries its
    position as the floats ``x`` and ``y`` (what GraphML can store, so
    ``networkx.write_graphml`` takes the result as it is; for networkx's drawing functions
    use ``{i: (G.nodes[i]["x"], G.nodes[i]["y"]) for i in G}``). ``data.name`` becomes the
    graph attribute ``"name"``; weights or positions that are not ``float32`` name their
    dtype in the graph attributes ``"edge_weight_dtype"`` / ``"pos_dtype"``.
    ``from_networkx(to_networkx(data))`` gives back the same graph (a coalesced one, as in the
    data model, with the same tensors and dtypes; a graph without ``edge_weight`` comes back
    with ``float32`` unit weights).

    Example::

        >>> G = to_networkx(grid(2, 3))
        >>> G.number_of_nodes(), G.number_of_edges(), G.nodes[4]
        (6, 7, {'x': 1.0, 'y': 0.0})
    """
    check_graph(data)
    G = nx.Graph()
    name = getattr(data, "name", None)
    if name is not None:
        G.graph["name"] = name
    for key, attribute in _DTYPE_ATTRIBUTES.items():
        value = getattr(data, key, None)
        if value is not None and value.dtype != torch.float32:
            G.graph[attribute] = str(value.dtype).removeprefix("torch.")
    G.add_nodes_from(range(data.num_nodes))
    edge_index = data.edge_index
    upper = edge_index[0] < edge_index[1]
    rows = edge_index[0, upper].tolist()
    cols = edge_index[1, upper].tolist()
    weights = edge_weights(data)[upper].tolist()
    G.add_weighted_edges_from(zip(rows, cols, weights, strict=True), weight="weight")
    if data.pos is not None:
        for key, column in zip(_POSITION_KEYS, data.pos.t().tolist(), strict=True):
            nx.set_node_attributes(G, dict(enumerate(column)), name=key)
    return G


# --------------------------------------------------------------------------------------------
# GraphML files
# --------------------------------------------------------------------------------------------

_GRAPHML_VALUE_TYPES = (str, int, float, bool)


def _graphml_value(value, name: str):
    """A python str/int/float/bool for GraphML (tensor and numpy scalars unwrapped)."""
    if hasattr(value, "item") and not isinstance(value, _GRAPHML_VALUE_TYPES):
        value = value.item()
    if not isinstance(value, _GRAPHML_VALUE_TYPES):
        raise TypeError(
            f"{name} must be a str, int, float or bool (what GraphML stores), "
            f"got {describe(value)}"
        )
    return value


def _extra_attributes(attributes, name: str, reserved: Iterable[str]) -> Mapping:
    if attributes is None:
        return {}
    if not isinstance(attributes, Mapping):
        raise TypeError(f"{name} must be a mapping from attribute name to values, "
                        f"got {describe(attributes)}")
    reserved = tuple(reserved)
    for key in attributes:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be strings, got {describe(key)}")
        if key in reserved:
            raise ValueError(f"{name} must not use the key {key!r}: the graph itself is "
                             f"written under {reserved}")
    return attributes


def write_graphml(
    graph: Data,
    path: str | os.PathLike,
    node_attributes: Mapping[str, Sequence] | None = None,
    *,
    graph_attributes: Mapping[str, object] | None = None,
) -> Path:
    r"""Write a neuron graph (predefined, learned or a training snapshot) as GraphML.

    The file holds what :func:`to_networkx` keeps: the nodes ``0 .. N - 1``, each undirected
    edge once with its ``weight``, positions as node attributes ``x`` and ``y``, the name and
    the dtypes; :func:`read_graphml` gives back the same :class:`Data`. It opens in networkx
    (``networkx.read_graphml``), Cytoscape and Gephi. The file is written atomically (see
    :func:`gsr_pyg.files.atomic_write`): a reader never sees half of it.

    Args:
        graph (Data): the graph, in the data model (see :func:`check_graph`).
        path: the file to write; its folder is created.
        node_attributes (Mapping[str, Sequence], optional): more node attributes, one value
            per node each (str, int, float or bool; tensors and numpy arrays are accepted),
            e.g. ``{"module": labels}``. The keys ``x`` and ``y`` are taken by the positions.
        graph_attributes (Mapping[str, object], optional): graph-level values (str, int,
            float or bool), e.g. ``{"step": 400, "layer": "fc1"}``.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example::

        >>> import tempfile
        >>> path = write_graphml(grid(2, 3), tempfile.mkdtemp() + "/grid.graphml")
        >>> read_graphml(path).edge_index.shape
        torch.Size([2, 14])
    """
    G = to_networkx(graph)
    nodes = _extra_attributes(node_attributes, "node_attributes", _POSITION_KEYS)
    for key, values in nodes.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise TypeError(f"node_attributes[{key!r}] must be a sequence with one value per "
                            f"node, got {describe(values)}")
        values = values.tolist() if hasattr(values, "tolist") else list(values)
        if len(values) != G.number_of_nodes():
            raise ValueError(f"node_attributes[{key!r}] must have one value per node "
                             f"({G.number_of_nodes()}), got {len(values)}")
        checked = {i: _graphml_value(v, f"node_attributes[{key!r}][{i}]")
                   for i, v in enumerate(values)}
        nx.set_node_attributes(G, checked, name=key)
    reserved = ("name", *_DTYPE_ATTRIBUTES.values())
    for key, value in _extra_attributes(graph_attributes, "graph_attributes", reserved).items():
        G.graph[key] = _graphml_value(value, f"graph_attributes[{key!r}]")
    path = Path(path)
    atomic_write(path, lambda tmp: nx.write_graphml(G, tmp))
    return path


def read_graphml(path: str | os.PathLike) -> Data:
    r"""Read a GraphML file into a graph in the data model.

    A file from :func:`write_graphml` gives back the graph that was written: the same
    ``edge_index`` (coalesced), ``edge_weight`` values and dtype, ``pos``, ``num_nodes`` and
    ``name``. Node ids ``"0" .. "N-1"`` become nodes ``0 .. N - 1``; any other ids are
    numbered in the order of the file. Extra node and graph attributes are not read (use
    ``networkx.read_graphml`` for them). Any undirected GraphML file is read the way
    :func:`from_networkx` reads its graph.

    Example::

        >>> import tempfile
        >>> g = grid(3, 3)
        >>> back = read_graphml(write_graphml(g, tempfile.mkdtemp() + "/g.graphml"))
        >>> torch.equal(back.edge_index, g.edge_index), torch.equal(back.pos, g.pos)
        (True, True)
    """
    G = nx.read_graphml(Path(path))
    numbered = [str(i) for i in range(G.number_of_nodes())]
    nodelist = numbered if set(G.nodes) == set(numbered) else None
    return from_networkx(G, nodelist=nodelist)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def check_graph(data: Data, num_nodes: int | None = None, *, name: str = "graph") -> Data:
    r"""Return ``data`` when it follows the data model, else raise naming the problem.

    The one check of a neuron graph: the spectral functions, metrics, plots and the
    regularizer all call it. Checks: ``data`` is a :class:`~torch_geometric.data.Data` with
    an ``edge_index`` (else ``TypeError``/``ValueError``); ``edge_index`` is ``[2, E]`` and
    ``int64``; indices lie in ``[0, N)``; no self-loops; no duplicate entries; every edge
    ``(i, j)`` has its reverse ``(j, i)`` with exactly the same weight; ``edge_weight``
    (optional, unit weights when absent) is a floating ``[E]`` tensor, finite and ``> 0``;
    ``pos`` (optional) is a finite floating ``[N, 2]`` tensor; and ``data.num_nodes ==
    num_nodes`` when ``num_nodes`` is given. A graph with no edges is valid. Edges need not
    be sorted. The checks are vectorised and run on the device of ``edge_index``.
    :func:`from_edge_index` turns any edge list into a valid graph.

    Every message starts with ``name``: ``"{name} has ..."`` for the graph as a whole,
    ``"{name}: edge_weight must be ..."`` for one of its attributes (e.g. ``"graph for layer
    'fc1': edge (0, 1) has no reverse edge (1, 0); ..."``).

    Args:
        data (Data): the graph.
        num_nodes (int, optional): the number of nodes it must have.
        name (str): what error messages call the graph. (default: ``"graph"``)

    Example::

        >>> check_graph(grid(7, 7), num_nodes=64)
        Traceback (most recent call last):
            ...
        ValueError: graph has 49 nodes but 64 were expected
    """
    if not isinstance(data, Data):
        raise TypeError(f"{name} must be a torch_geometric.data.Data, got {describe(data)}")
    edge_index = data.edge_index
    if edge_index is None:
        raise ValueError(f"{name} has no edge_index; a graph with no edges has an empty [2, 0] "
                         "one")
    check_tensor(edge_index, f"{name}: edge_index")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"{name}: edge_index must have shape [2, E], got "
                         f"{describe(edge_index)}")
    if edge_index.dtype != torch.long:
        raise ValueError(f"{name}: edge_index must have dtype torch.int64, got "
                         f"{describe(edge_index)}")

    n = data.num_nodes
    if n is None:
        raise ValueError(f"{name} has no num_nodes; set data.num_nodes")
    if num_nodes is not None:
        check_int(num_nodes, "num_nodes", minimum=0)
        if n != num_nodes:
            raise ValueError(f"{name} has {n} nodes but {num_nodes} were expected")

    num_edges = edge_index.size(1)
    row, col = edge_index[0], edge_index[1]
    if num_edges:
        low, high = int(edge_index.min()), int(edge_index.max())
        if low < 0 or high >= n:
            bad = low if low < 0 else high
            raise ValueError(f"{name}: edge_index contains node {bad}, but the graph has {n} "
                             f"nodes (indices in [0, {n}))")
        loops = row == col
        if bool(loops.any()):
            node = int(row[loops][0])
            raise ValueError(
                f"{name} has a self-loop at node {node}; a neuron graph has no self-loops "
                "(torch_geometric.utils.remove_self_loops, or build it with from_edge_index)"
            )

    edge_weight = data.edge_weight
    if edge_weight is not None:
        check_tensor(edge_weight, f"{name}: edge_weight")
        if not edge_weight.is_floating_point():
            raise ValueError(f"{name}: edge_weight must be a floating-point tensor, got "
                             f"{describe(edge_weight)}")
        if edge_weight.dim() != 1 or edge_weight.size(0) != num_edges:
            raise ValueError(
                f"{name}: edge_weight must have shape [{num_edges}] (one weight per column "
                f"of edge_index), got {describe(edge_weight)}"
            )
        _check_positive_weights(edge_weight, edge_index, f"{name}: edge_weight")

    if data.pos is not None:
        pos = check_tensor(data.pos, f"{name}: pos", floating=True)
        if pos.dim() != 2 or pos.size(0) != n or pos.size(1) != 2:
            raise ValueError(f"{name}: pos must have shape [{n}, 2], got {describe(pos)}")
        check_finite(pos, f"{name}: pos")

    if num_edges:
        _check_symmetric(row, col, edge_weight, n, name)
    return data


def _check_positive_weights(edge_weight: Tensor, edge_index: Tensor,
                            argument: str = "edge_weight") -> None:
    """Finite and > 0; messages call the weights ``argument``."""
    check_finite(edge_weight, argument)
    if edge_weight.numel() and not bool((edge_weight > 0).all()):
        bad = int(torch.nonzero(edge_weight <= 0)[0])
        raise ValueError(
            f"{argument} must be > 0, got {float(edge_weight[bad])} on edge "
            f"({int(edge_index[0, bad])}, {int(edge_index[1, bad])}); a weight of 0 is no "
            "edge: drop the entry"
        )


def _check_symmetric(row: Tensor, col: Tensor, edge_weight: Tensor | None, n: int,
                     name: str) -> None:
    """No duplicate entries, and every (i, j) has (j, i) with the same weight."""
    key = row * n + col
    sorted_key, order = torch.sort(key)
    duplicate = sorted_key[1:] == sorted_key[:-1]
    if bool(duplicate.any()):
        k = int(sorted_key[:-1][duplicate][0])
        raise ValueError(
            f"{name}: edge_index has the entry ({k // n}, {k % n}) more than once; coalesce it "
            "(torch_geometric.utils.coalesce) or build the graph with from_edge_index"
        )
    reverse_key = col * n + row
    where = torch.searchsorted(sorted_key, reverse_key).clamp_(max=key.numel() - 1)
    found = sorted_key[where] == reverse_key
    if not bool(found.all()):
        bad = int(torch.nonzero(~found)[0])
        i, j = int(row[bad]), int(col[bad])
        raise ValueError(
            f"{name}: edge ({i}, {j}) has no reverse edge ({j}, {i}); store both directions of "
            "every undirected edge (from_edge_index or torch_geometric.utils.to_undirected)"
        )
    if edge_weight is not None:
        reverse_weight = edge_weight[order[where]]
        differs = edge_weight != reverse_weight
        if bool(differs.any()):
            bad = int(torch.nonzero(differs)[0])
            i, j = int(row[bad]), int(col[bad])
            raise ValueError(
                f"{name}: edge ({i}, {j}) has weight {float(edge_weight[bad])} but its reverse "
                f"({j}, {i}) has weight {float(reverse_weight[bad])}; edge weights must be "
                "symmetric (from_edge_index merges weights that agree up to rounding)"
            )
