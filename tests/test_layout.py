"""Exact neuron layouts: the objective, the search, and permuting the units of real blocks."""

from __future__ import annotations

import contextlib
import itertools
import math
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from gsr_pyg import graphs
from gsr_pyg.capture import ActivationCapture
from gsr_pyg.layout import (
    LayoutResult,
    MLPPair,
    apply_layout,
    check_permutation,
    coactivation_distances,
    fit_layout,
    layout_energy,
    mlp_pairs,
    permute_hidden,
    random_layout_energy,
)
from gsr_pyg.learn import CoactivationStats
from gsr_pyg.metrics import dirichlet_energy, smoothness_ratio

sys.path.insert(0, str(Path(__file__).parent))
from bad_input_cases import CASES, run, verdict  # noqa: E402
from test_hookable import tiny_hf  # noqa: E402


def planted_sheet(height: int, width: int, samples: int = 300, seed: int = 0,
                  noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``[samples, units]`` of units that sit on a hidden ``height x width``
    sheet, each sample a smooth random field over the sheet (8 low-frequency waves) plus
    noise, in the sheet's row-major order; and a random shuffle of the units."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    where = torch.stack([cols.reshape(-1) / width, rows.reshape(-1) / width], dim=1).double()
    frequency = 4.0 * torch.randn(samples, 8, 2, generator=g, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(samples, 8, generator=g, dtype=torch.float64)
    amplitude = torch.randn(samples, 8, generator=g, dtype=torch.float64)
    waves = torch.cos(torch.einsum("sfd,nd->sfn", frequency, where) + phase[:, :, None])
    x = (amplitude[:, :, None] * waves).sum(dim=1)
    x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x, torch.randperm(height * width, generator=g)


def sampled_random_energy(distances: torch.Tensor, graph, num: int = 500) -> torch.Tensor:
    """The energies of ``num`` uniformly random placements (seeded)."""
    perms = torch.rand(num, distances.size(0), generator=torch.Generator().manual_seed(123))
    perms = perms.argsort(dim=1)
    upper = graph.edge_index[0] < graph.edge_index[1]
    source, target = graph.edge_index[:, upper]
    weight = graphs.edge_weights(graph, distances.dtype)[upper]
    return distances[perms[:, source], perms[:, target]] @ weight


# --------------------------------------------------------------------------------------------
# the objective
# --------------------------------------------------------------------------------------------


def test_energy_is_the_mean_dirichlet_energy_of_the_placed_activations():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 12, generator=g, dtype=torch.float64) + 2.0  # [B, T, units]
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 6 + [0]])
    weighted = graphs.from_edge_index(
        torch.tensor([[0, 1, 2, 3, 5, 6, 7, 9, 10, 0], [1, 2, 3, 4, 6, 7, 8, 10, 11, 11]]),
        torch.tensor([1.0, 2.0, 0.5, 1.5, 3.0, 1.0, 0.25, 2.0, 1.0, 4.0]), num_nodes=12)
    distances = coactivation_distances(x, node_dim=-1, mask=mask)
    for graph in (graphs.grid(3, 4), weighted):
        for _ in range(3):
            perm = torch.randperm(12, generator=g)
            expected = dirichlet_energy(x[..., perm], graph, node_dim=-1, mask=mask).mean()
            assert layout_energy(distances, graph, perm) == pytest.approx(float(expected),
                                                                          rel=1e-12)
    # the definition, entry by entry, over the real tokens only
    real = x[mask.bool()]
    assert torch.allclose(distances, (real[:, :, None] - real[:, None, :]).square().mean(0),
                          rtol=1e-12, atol=1e-12)


def test_random_energy_is_the_exact_mean_over_all_placements():
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    graph = graphs.from_edge_index(torch.tensor([[0, 1, 2, 0], [1, 2, 3, 4]]),
                                   torch.tensor([1.0, 2.0, 3.0, 0.5]), num_nodes=5)
    distances = coactivation_distances(x)
    every = [layout_energy(distances, graph, torch.tensor(p))
             for p in itertools.permutations(range(5))]
    assert random_layout_energy(distances, graph) == pytest.approx(sum(every) / len(every),
                                                                   rel=1e-12)


def test_statistics_give_the_distances_of_the_concatenated_batches():
    x, shuffle = planted_sheet(5, 5, samples=64, seed=2)
    rows = x[:, shuffle] * 3 + 100  # far from 0: the centred moments keep the precision
    stats = CoactivationStats(25)
    for batch in rows.split(16):
        stats.update(batch)
    direct = coactivation_distances(rows)
    torch.testing.assert_close(coactivation_distances(stats), direct, rtol=1e-9, atol=1e-9)
    graph = graphs.grid(5, 5)
    from_stats = fit_layout(stats, graph, return_energy=True)
    from_rows = fit_layout(rows, graph, return_energy=True)
    assert torch.equal(from_stats.perm, from_rows.perm)
    assert from_stats.energy == pytest.approx(from_rows.energy, rel=1e-9)


# --------------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------------


def test_planted_sheet_is_recovered():
    x, shuffle = planted_sheet(16, 16)
    graph = graphs.grid(16, 16)
    result = fit_layout(x[:, shuffle], graph, return_energy=True)
    assert isinstance(result, LayoutResult)
    truth = layout_energy(coactivation_distances(x), graph)  # the sheet the units came from
    assert result.ratio_original > 0.95  # shuffled: no structure left in the given order
    assert result.ratio < 0.1
    assert result.energy <= 1.1 * truth  # within 10% of the hidden sheet
    assert result.energy <= result.energy_assigned <= result.energy_original
    assert result.energy < sampled_random_energy(coactivation_distances(x), graph).min()
    placed = x[:, shuffle][:, result.perm]
    assert smoothness_ratio(placed, graph) < 0.1
    assert layout_energy(coactivation_distances(placed), graph) == pytest.approx(result.energy)


def test_graph_without_positions_is_embedded_by_its_own_laplacian():
    x, shuffle = planted_sheet(12, 12, seed=3)
    graph = graphs.grid(12, 12)
    del graph.pos
    result = fit_layout(x[:, shuffle], graph, return_energy=True)
    truth = layout_energy(coactivation_distances(x), graph)
    # a grid's eigenmaps are warped and, for a square, rotated at random: less exact than pos
    assert result.ratio < 0.2 and result.energy <= 1.5 * truth
    assert result.energy < 0.2 * result.energy_original


def test_random_data_still_gets_a_lower_energy():
    x = torch.randn(300, 256, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    graph = graphs.grid(16, 16)
    result = fit_layout(x, graph, return_energy=True)
    random_energies = sampled_random_energy(coactivation_distances(x), graph)
    assert result.energy < result.energy_original
    assert result.energy < random_energies.min()
    assert 0.8 < result.ratio < 0.97  # only noise to exploit: a little lower, not much
    assert abs(random_energies.mean() / result.energy_random - 1) < 0.01


def test_perfect_recovery_of_tiny_sheets():
    graph = graphs.grid(3, 3)
    upper = graph.edge_index[0] < graph.edge_index[1]
    source, target = graph.edge_index[:, upper]
    every = torch.tensor(list(itertools.permutations(range(9))))
    row, col = torch.arange(9) // 3, torch.arange(9) % 3
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        slopes = torch.randn(50, 2, generator=g, dtype=torch.float64)
        x = slopes[:, :1] * row + slopes[:, 1:] * col \
            + 0.1 * torch.randn(50, 9, generator=g, dtype=torch.float64)
        shuffle = torch.randperm(9, generator=g)
        distances = coactivation_distances(x[:, shuffle])
        optimum = distances[every[:, source], every[:, target]].sum(dim=1).min()
        result = fit_layout(x[:, shuffle], graph, return_energy=True)
        assert result.energy == pytest.approx(float(optimum), rel=1e-12)
        sheet = shuffle[result.perm].reshape(3, 3)  # where each original unit landed
        symmetries = [torch.arange(9).reshape(3, 3).rot90(k) for k in range(4)]
        symmetries += [s.T for s in symmetries]
        assert any(torch.equal(sheet, s) for s in symmetries)


def test_seeded_and_deterministic():
    x, shuffle = planted_sheet(8, 8, seed=5, noise=2.0)
    graph = graphs.grid(8, 8)
    first = fit_layout(x[:, shuffle], graph, seed=7)
    assert torch.equal(first, fit_layout(x[:, shuffle], graph, seed=7))
    assert first.dtype == torch.int64 and torch.equal(first.sort().values, torch.arange(64))


def test_masks_and_token_axes_equal_the_flattened_real_tokens():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 9, 16, generator=g)  # [B, T, units]
    mask = torch.rand(4, 9, generator=g) > 0.3
    graph = graphs.grid(4, 4)
    flat = fit_layout(x[mask], graph, return_energy=True)
    masked = fit_layout(x, graph, node_dim=-1, mask=mask, return_energy=True)
    assert torch.equal(masked.perm, flat.perm) and masked.energy == flat.energy
    conv = torch.randn(3, 16, 2, 5, generator=g)  # [B, C, H, W]: channels are the units
    assert torch.equal(fit_layout(conv, graph),
                       fit_layout(conv.movedim(1, -1).reshape(-1, 16), graph))


def test_degenerate_graphs_keep_the_original_order():
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(8))
    empty = graphs.from_edge_index(torch.zeros(2, 0, dtype=torch.long), num_nodes=6)
    result = fit_layout(x, empty, return_energy=True)
    assert torch.equal(result.perm, torch.arange(6)) and result.energy == 0.0
    assert math.isnan(result.ratio)
    assert torch.equal(fit_layout(x[:, :1], graphs.line(1)), torch.tensor([0]))


def test_no_refinement_keeps_the_assignment():
    x, shuffle = planted_sheet(8, 8, seed=9)
    result = fit_layout(x[:, shuffle], graphs.grid(8, 8), max_rounds=0, return_energy=True)
    assert result.rounds == 0 and result.energy == result.energy_assigned
    assert result.energy < 0.5 * result.energy_random


def _one_core():
    """Limit BLAS (numpy, scipy) to one thread when threadpoolctl is there."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


@pytest.mark.slow
def test_4096_units_on_a_64_by_64_grid_in_minutes():
    x, shuffle = planted_sheet(64, 64, samples=400)
    noise = torch.randn(400, 4096, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
    graph = graphs.grid(64, 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _one_core():
            start = time.perf_counter()
            planted = fit_layout(x[:, shuffle], graph, return_energy=True)
            planted_seconds = time.perf_counter() - start
            start = time.perf_counter()
            random = fit_layout(noise, graph, return_energy=True)
            random_seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    print(f"\n4,096 planted units on a 64 x 64 grid: {planted_seconds:.1f} s, ratio "
          f"{planted.ratio_original:.4f} -> {planted.ratio:.4f} (hidden sheet "
          f"{layout_energy(coactivation_distances(x), graph) / planted.energy_random:.4f}); "
          f"random units: {random_seconds:.1f} s, ratio {random.ratio_original:.4f} -> "
          f"{random.ratio:.4f}")
    assert planted_seconds < 300 and random_seconds < 300
    assert planted.ratio < 0.1 and planted.ratio_original > 0.95
    assert random.energy < min(random.energy_original, random.energy_random)
    assert random.ratio < 0.97


# --------------------------------------------------------------------------------------------
# permuting the units of a model
# --------------------------------------------------------------------------------------------


def test_permute_hidden_keeps_a_sequential_mlp_and_its_parameters():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 12), nn.GELU(), nn.Dropout(0.2), nn.Linear(12, 3)).double()
    mlp.eval()
    x = torch.randn(7, 5, dtype=torch.float64)
    before = mlp(x)
    hidden_before = mlp[1](mlp[0](x))
    mlp(x).sum().backward()
    grad_before = mlp[0].weight.grad.clone()
    parameters = list(mlp.parameters())
    optimizer = torch.optim.SGD(mlp.parameters(), lr=0.1)
    perm = torch.randperm(12)
    permute_hidden(mlp[0], mlp[3], perm)
    assert all(a is b for a, b in zip(mlp.parameters(), parameters))
    assert optimizer.param_groups[0]["params"][0] is mlp[0].weight
    assert isinstance(mlp[0].weight, nn.Parameter)
    torch.testing.assert_close(mlp(x), before, rtol=0, atol=1e-12)
    torch.testing.assert_close(mlp[1](mlp[0](x)), hidden_before[:, perm], rtol=0, atol=1e-15)
    torch.testing.assert_close(mlp[0].weight.grad, grad_before[perm], rtol=0, atol=0)


def test_transformer_encoder_layer_unchanged_through_mlp_pairs():
    torch.manual_seed(1)
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(16, 2, 24, batch_first=True), 2,
        enable_nested_tensor=False).eval()
    x = torch.randn(3, 5, 16)
    before = encoder(x)
    pairs = mlp_pairs(encoder)
    assert pairs == [MLPPair(f"layers.{i}", f"layers.{i}.linear1", f"layers.{i}.linear2",
                             None, 24) for i in range(2)]  # F.relu is not hookable
    for pair in pairs:
        apply_layout(encoder, pair, torch.randperm(24))
    torch.testing.assert_close(encoder(x), before, rtol=0, atol=1e-5)
    exposed = mlp_pairs(encoder, expose=True)  # now a ReLU module: a hookable activation
    assert [p.activation for p in exposed] == ["layers.0.activation", "layers.1.activation"]
    torch.testing.assert_close(encoder(x), before, rtol=0, atol=1e-5)


def test_sequential_finder_stops_at_modules_that_mix_units():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 8),
                          nn.Tanh(), nn.Linear(8, 2), nn.PReLU(2), nn.Linear(2, 2))
    assert mlp_pairs(model) == [MLPPair("3", "3", "5", "4", 8)]


def _sentence_embeddings(model, ids, attention_mask):
    hidden = model(input_ids=ids, attention_mask=attention_mask).last_hidden_state
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_bert_layout_keeps_sentence_embeddings_and_places_the_units(dtype, tolerance):
    model = tiny_hf("bert", dtype)
    ids = torch.randint(1, 50, (6, 9), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones(6, 9, dtype=torch.long)
    attention_mask[1, 5:] = attention_mask[4, 3:] = 0
    pairs = mlp_pairs(model)
    assert [(p.name, p.linear_in, p.linear_out, p.activation, p.num_units) for p in pairs] == [
        (f"encoder.layer.{i}", f"encoder.layer.{i}.intermediate.dense",
         f"encoder.layer.{i}.output.dense",
         f"encoder.layer.{i}.intermediate.intermediate_act_fn", 36) for i in range(2)]
    units = [pair.activation for pair in pairs]
    with torch.no_grad(), ActivationCapture(model, units, node_dim=-1) as capture:
        before = _sentence_embeddings(model, ids, attention_mask)
        old = [capture.output(name) for name in units]
        results = [fit_layout(capture.output(name), graphs.grid(6, 6), node_dim=-1,
                              mask=attention_mask, return_energy=True) for name in units]
        for pair, result in zip(pairs, results):
            apply_layout(model, pair.name, result.perm)
        after = _sentence_embeddings(model, ids, attention_mask)
        new = [capture.output(name) for name in units]
    assert (after - before).abs().max() <= tolerance
    for old_units, new_units, result in zip(old, new, results):
        # the unit now on node i is the old unit perm[i]
        torch.testing.assert_close(new_units, old_units[..., result.perm], rtol=0,
                                   atol=tolerance)
        placed = dirichlet_energy(new_units.double(), graphs.grid(6, 6), node_dim=-1,
                                  mask=attention_mask).mean()
        assert float(placed) == pytest.approx(result.energy, rel=1e-4)
        assert result.energy < result.energy_original


def test_gpt2_conv1d_layout_keeps_the_model():
    model = tiny_hf("gpt2")
    ids = torch.randint(1, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    pairs = mlp_pairs(model)
    assert [(p.linear_in, p.linear_out, p.activation) for p in pairs] == [
        (f"h.{i}.mlp.c_fc", f"h.{i}.mlp.c_proj", f"h.{i}.mlp.act") for i in range(2)]
    c_fc = model.get_submodule("h.1.mlp.c_fc")
    assert tuple(c_fc.weight.shape) == (16, 36)  # [in, out]: the units are columns
    with torch.no_grad(), ActivationCapture(model, ["h.1.mlp.c_fc"], node_dim=-1) as capture:
        before = model(input_ids=ids).last_hidden_state
        old = capture.output("h.1.mlp.c_fc")
        perm = torch.randperm(36, generator=torch.Generator().manual_seed(2))
        apply_layout(model, pairs[1], perm)
        after = model(input_ids=ids).last_hidden_state
        torch.testing.assert_close(capture.output("h.1.mlp.c_fc"), old[..., perm], rtol=0,
                                   atol=1e-6)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_layout_of_gpu_activations_and_modules():
    x, shuffle = planted_sheet(8, 8, seed=10)
    graph = graphs.grid(8, 8)
    on_cpu = fit_layout(x[:, shuffle], graph, return_energy=True)
    on_gpu = fit_layout(x[:, shuffle].cuda(), graph, return_energy=True)
    assert on_gpu.perm.device.type == "cuda"
    assert on_gpu.energy <= 1.05 * on_cpu.energy
    mlp = nn.Sequential(nn.Linear(5, 64), nn.ReLU(), nn.Linear(64, 3)).double().cuda()
    inputs = torch.randn(4, 5, dtype=torch.float64, device="cuda")
    before = mlp(inputs)
    permute_hidden(mlp[0], mlp[2], on_cpu.perm)  # a perm on the CPU for modules on the GPU
    torch.testing.assert_close(mlp(inputs), before, rtol=0, atol=1e-12)


def test_check_permutation_accepts_integer_tensors():
    assert check_permutation(torch.tensor([1, 0], dtype=torch.int32), 2).dtype == torch.int64
    assert check_permutation(torch.zeros(0, dtype=torch.long), 0).numel() == 0


def test_layout_refusals_are_registered():
    """The bad inputs of this module live in the registry (tests/bad_input_cases.py)."""
    cases = [case for case in CASES if case.surface == "layout"]
    assert len(cases) >= 12
    for case in cases:
        problem = verdict(case, run(case, Path(".")))
        assert problem is None, f"{case.id}: {problem}"
