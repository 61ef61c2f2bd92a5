"""Penalty overhead: a training step with GSR over the same step without it.

A step is forward, loss, backward and an Adam step. Two copies of the same model with the
same weights and optimiser settings take the same batch; one carries a
:class:`~gsr_pyg.GraphSpectralRegularizer` (method ``"auto"``) on its GSR layer.

Cases: the reference MNIST classifier with its 8x8 grid (``grid`` layer) at batch 64 and
500; an MLP 784-512-n-10 at batch 256 whose n-wide layer carries a kNN graph (k=8, built
from random activations) for n in 64 ... 16384.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bench._harness import Row, check_target, interleaved, median_ms, median_ratio, spread
from gsr_pyg import GraphSpectralRegularizer
from gsr_pyg.graphs import grid
from gsr_pyg.learn import knn_graph
from gsr_pyg.models import MLP, MNISTClassifier

NAME = "overhead"
MLP_WIDTHS = (64, 256, 1024, 4096, 16384)
TARGETS = {("grid", 64): "<= 1.03", ("grid", 500): "<= 1.03",
           ("mlp", 4096): "<= 1.10", ("mlp", 16384): "<= 1.25"}


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  reg: GraphSpectralRegularizer | None):
    """A function that runs one training step (forward, cross-entropy plus ``reg``'s
    penalty, backward, Adam) of ``model`` on the batch ``(x, y)``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        loss = loss_fn(model(x), y)
        if reg is not None:
            loss = loss + reg.penalty()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if reg is not None:
            reg.step()

    return step


def _pair(model: nn.Module, layer: str, graph, x, y):
    """(plain step, GSR step) on two copies of ``model``."""
    plain = model
    regularized = copy.deepcopy(model)
    reg = GraphSpectralRegularizer(regularized, {layer: graph}, weight=1e-2)
    return training_step(plain, x, y, None), training_step(regularized, x, y, reg), reg


def _row(case: str, times: dict, target: str, note: str, raw: dict) -> Row:
    ratio = median_ratio(times["gsr"], times["plain"])
    # interference from other jobs only ever adds time: the fastest steps are a second view
    fastest = min(times["gsr"]) / min(times["plain"])
    return Row(NAME, case, ratio, "x", target, check_target(ratio, target),
               spread(times["gsr"], times["plain"]), median_ms(times["plain"]),
               median_ms(times["gsr"]), f"{note}; fastest steps {fastest:.3f}x",
               raw | {"times_s": times, "ratio_of_fastest": fastest})


def run(device: torch.device, quick: bool = False) -> list[Row]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    for batch in (64, 500):
        torch.manual_seed(0)
        model = MNISTClassifier().to(device).train()
        x = torch.rand(batch, 1, 28, 28, generator=generator).to(device)
        y = torch.randint(0, 10, (batch,), generator=generator).to(device)
        plain, gsr, reg = _pair(model, "grid", grid(8, 8).to(device), x, y)
        rounds = (5 if quick else 15) if batch == 500 else (7 if quick else 41)
        repeat = 1 if batch == 500 else 2
        times = interleaved({"plain": plain, "gsr": gsr}, rounds, device, repeat=repeat)
        method = reg.operator("grid").resolve_method(batch, device)
        rows.append(_row(f"grid 8x8 classifier, batch {batch}", times,
                         TARGETS[("grid", batch)], f"method {method}",
                         {"model": "MNISTClassifier", "batch": batch, "nodes": 64,
                          "method": method, "rounds": rounds}))
    for width in MLP_WIDTHS:
        torch.manual_seed(0)
        model = MLP([784, 512, width, 10], names=["fc1", "hidden", "out"]).to(device).train()
        graph = knn_graph(torch.randn(64, width, generator=generator), k=8).to(device)
        x = torch.rand(256, 784, generator=generator).to(device)
        y = torch.randint(0, 10, (256,), generator=generator).to(device)
        plain, gsr, reg = _pair(model, "hidden", graph, x, y)
        rounds = (5 if quick else 15) if width <= 4096 else (3 if quick else 21)
        repeat = 4 if width <= 256 else (2 if width <= 4096 else 1)
        times = interleaved({"plain": plain, "gsr": gsr}, rounds, device, repeat=repeat)
        operator = reg.operator("hidden")
        method = operator.resolve_method(256, device)
        rows.append(_row(f"MLP 784-512-{width}-10 kNN k=8, batch 256", times,
                         TARGETS.get(("mlp", width), ""),
                         f"method {method}, {operator.num_edges} edges",
                         {"model": "MLP", "batch": 256, "nodes": width,
                          "edges": operator.num_edges, "method": method, "rounds": rounds}))
    return rows
