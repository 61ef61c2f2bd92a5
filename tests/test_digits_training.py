"""A tiny real training: the grid penalty makes class-mean maps of a hidden layer smooth.

Accuracy and maps are measured on held-out digits (a seeded quarter never trained on)."""

import pytest
import torch
from torch import nn

from gsr_pyg import graphs
from gsr_pyg.metrics import smoothness_ratio
from gsr_pyg.regularizer import GraphSpectralRegularizer

sklearn = pytest.importorskip("sklearn.datasets")


def train_digits(weight: float, epochs: int = 8, seed: int = 0):
    digits = sklearn.load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    train, test = order[: 3 * len(x) // 4], order[3 * len(x) // 4:]
    torch.manual_seed(seed)
    model = nn.Sequential()
    model.add_module("inp", nn.Linear(64, 128))
    model.add_module("act1", nn.LeakyReLU(0.2))
    model.add_module("hidden", nn.Linear(128, 64))
    model.add_module("act2", nn.LeakyReLU(0.2))
    model.add_module("out", nn.Linear(64, 10))
    grid = graphs.grid(8, 8)
    reg = GraphSpectralRegularizer(model, {"act2": grid}, weight=weight)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in train[torch.randperm(len(train), generator=gen)].split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx]) + reg.penalty()
            loss.backward()
            opt.step()
            opt.zero_grad()
            reg.step()
    model.eval()
    with torch.no_grad():
        logits = model(x[test])
        hidden = reg.activations("act2")
    accuracy = (logits.argmax(1) == y[test]).float().mean().item()
    maps = torch.stack([hidden[y[test] == c].mean(0) for c in range(10)])
    maps = maps - maps.mean(0, keepdim=True)  # class maps with the global mean subtracted
    return accuracy, smoothness_ratio(maps, grid, num_permutations=50, seed=0)


def test_grid_penalty_smooths_class_maps():
    acc0, ratio0 = train_digits(0.0)
    acc1, ratio1 = train_digits(1e-2)
    assert acc0 > 0.9 and acc1 > 0.9  # held-out accuracy
    assert 0.6 < ratio0 < 1.4  # an unordered layer: about as rough as a random assignment
    assert ratio1 < 0.5 * ratio0
