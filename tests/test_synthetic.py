from __future__ import annotations

import numpy as np
import pytest
import torch

from gsr_pyg.data.synthetic import (
    TRAJECTORY_GROUPS,
    branching_trajectory,
    planted_modules,
)


@pytest.fixture(scope="module")
def hub():
    """The reference data at its full default size."""
    return planted_modules(seed=0)


def conditional_correlation(data: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mean over groups of the within-group correlation matrix (float64)."""
    return np.mean([np.corrcoef(data[groups == g], rowvar=False) for g in np.unique(groups)],
                   axis=0)


def test_planted_modules_shapes_and_types(hub):
    assert hub.data.shape == (60000, 15) and hub.data.dtype == torch.float32
    assert hub.active.shape == (60000,) and hub.active.dtype == torch.long
    assert hub.active_mask.shape == (60000, 3) and hub.active_mask.dtype == torch.bool
    assert hub.feature_module.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert hub.num_modules == 3
    assert not hub.perturbed_mask.any()
    assert torch.equal(hub.active_mask.sum(1), torch.ones(60000, dtype=torch.long))
    assert torch.equal(hub.active_mask.long().argmax(1), hub.active)


def test_planted_modules_seeding():
    a = planted_modules(num_samples=500, seed=7)
    b = planted_modules(num_samples=500, seed=7)
    c = planted_modules(num_samples=500, seed=8)
    assert torch.equal(a.data, b.data) and torch.equal(a.active, b.active)
    assert not torch.equal(a.data, c.data)
    from_torch = planted_modules(num_samples=500, seed=torch.Generator().manual_seed(7))
    assert torch.equal(a.data, from_torch.data)
    from_numpy_1 = planted_modules(num_samples=500, seed=np.random.default_rng(3))
    from_numpy_2 = planted_modules(num_samples=500, seed=np.random.default_rng(3))
    assert torch.equal(from_numpy_1.data, from_numpy_2.data)
    assert not torch.equal(from_numpy_1.data, a.data)


def test_same_seed_gives_these_numbers_on_every_machine():
    # Pinned values: a change here means a seed no longer reproduces published data.
    planted = planted_modules(num_samples=3, seed=0)
    assert planted.active.tolist() == [2, 0, 2]
    torch.testing.assert_close(
        planted.data[0, :4], torch.tensor([0.840219, 1.279407, 1.339694, 0.801801]),
        atol=1e-5, rtol=0)
    cells = branching_trajectory(num_cells=3, seed=0)
    assert cells.branch.tolist() == [1, 1, 0]
    torch.testing.assert_close(cells.pseudotime, torch.tensor([0.970053, 0.707820, 0.459383]),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(
        cells.data[0, :4], torch.tensor([0.043401, 0.322252, -0.338639, -0.028130]),
        atol=1e-5, rtol=0)


def test_planted_modules_follow_their_formula():
    planted = planted_modules(num_samples=3, seed=0)
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    private = torch.randn(3, 15, generator=gen, dtype=torch.float64)
    module = torch.arange(15) // 5
    noise_part = 0.6 ** 0.5 * shared[:, module] + 0.4 ** 0.5 * private
    shift = 10.0 * planted.active_mask[:, module].double()
    torch.testing.assert_close(planted.data, (noise_part + shift).float())


def test_planted_modules_correlation_given_active_module(hub):
    data = hub.data.double().numpy()
    corr = conditional_correlation(data, hub.active.numpy())
    same = hub.feature_module[:, None] == hub.feature_module[None, :]
    off_diagonal = same.numpy() & ~np.eye(15, dtype=bool)
    np.testing.assert_allclose(corr[off_diagonal], 0.6, atol=0.03)
    np.testing.assert_allclose(corr[~same.numpy()], 0.0, atol=0.03)
    # Per-group unit variance of the noise part.
    for g in range(3):
        np.testing.assert_allclose(data[hub.active.numpy() == g].std(0), 1.0, atol=0.03)


def test_planted_modules_active_module_carries_the_shift(hub):
    data, active = hub.data.double(), hub.active
    module_mean = torch.stack([data[:, hub.feature_module == m].mean(1) for m in range(3)], 1)
    assert torch.equal(module_mean.argmax(1), active)
    on = module_mean.gather(1, active[:, None]).squeeze(1)
    off = (module_mean.sum(1) - on) / 2
    assert abs(float((on - off).mean()) - 10.0) < 0.05
    # Modules are switched on uniformly.
    frequency = torch.bincount(active, minlength=3).double() / len(active)
    torch.testing.assert_close(frequency, torch.full((3,), 1 / 3, dtype=torch.float64),
                               atol=0.01, rtol=0)


def test_planted_modules_several_active_and_general_sizes():
    sizes = (3, 4, 6, 2)
    planted = planted_modules(num_samples=20000, module_sizes=sizes, within_corr=0.3,
                              active_shift=4.0, noise=2.0, active_per_sample=2, seed=1)
    mask = planted.active_mask
    assert planted.data.shape == (20000, 15)
    assert torch.equal(mask.sum(1), torch.full((20000,), 2))
    # active is the lowest-numbered active module
    lowest = torch.where(mask, torch.arange(4), 99).min(1).values
    assert torch.equal(planted.active, lowest)
    # each of the 6 pairs of modules comes up about equally often
    pair_code = (mask.long() * torch.tensor([1, 2, 4, 8])).sum(1)
    counts = torch.bincount(pair_code, minlength=16)[[3, 5, 6, 9, 10, 12]].double()
    assert float((counts / 20000 - 1 / 6).abs().max()) < 0.015
    # shift on exactly the active modules' features; noise sd 2 and correlation 0.3 remain
    data = planted.data.double()
    shift = 4.0 * mask[:, planted.feature_module].double()
    residual = (data - shift).numpy()
    np.testing.assert_allclose(residual.mean(0), 0.0, atol=0.06)
    np.testing.assert_allclose(residual.std(0), 2.0, atol=0.05)
    corr = np.corrcoef(residual, rowvar=False)
    module = planted.feature_module.numpy()
    same = (module[:, None] == module[None, :]) & ~np.eye(15, dtype=bool)
    np.testing.assert_allclose(corr[same], 0.3, atol=0.03)
    np.testing.assert_allclose(corr[module[:, None] != module[None, :]], 0.0, atol=0.03)


def test_planted_modules_perturbation():
    sizes = (5, 4, 3)
    planted = planted_modules(num_samples=20000, module_sizes=sizes, perturb=3.0,
                              active_per_sample=2, seed=2)
    perturbed, module = planted.perturbed_mask, planted.feature_module
    feature_active = planted.active_mask[:, module]
    assert not (perturbed & ~feature_active).any()
    # exactly size // 2 features of every active module, none of the others
    per_module = torch.stack([perturbed[:, module == m].sum(1) for m in range(3)], 1)
    expected = planted.active_mask.long() * torch.tensor([2, 2, 1])
    assert torch.equal(per_module, expected)
    # each feature of an active module is picked with probability (size // 2) / size
    rate = (perturbed.double().sum(0) / feature_active.double().sum(0)).numpy()
    np.testing.assert_allclose(rate, [0.4] * 5 + [0.5] * 4 + [1 / 3] * 3, atol=0.02)
    # the perturbed features carry the extra shift
    residual = planted.data.double() - 10.0 * feature_active.double()
    gap = residual[perturbed].mean() - residual[feature_active & ~perturbed].mean()
    assert abs(float(gap) - 3.0) < 0.05
    # without perturbation the same seed gives the same data minus the shift
    plain = planted_modules(num_samples=20000, module_sizes=sizes, active_per_sample=2, seed=2)
    torch.testing.assert_close(plain.data + 3.0 * perturbed.float(), planted.data)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"within_corr": 1.5}, ValueError, "within_corr must be in"),
        ({"active_per_sample": 4}, ValueError, "active_per_sample must be <= 3"),
        ({"module_sizes": ()}, ValueError, "module_sizes"),
        ({"module_sizes": (5, 0)}, ValueError, r"module_sizes\[1\]"),
        ({"noise": 0.0}, ValueError, "noise"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"seed": "abc"}, TypeError, "seed must be"),
        ({"perturb": float("nan")}, ValueError, "perturb must be finite"),
    ],
)
def test_planted_modules_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        planted_modules(num_samples=kwargs.pop("num_samples", 10), **kwargs)


@pytest.fixture(scope="module")
def cells():
    return branching_trajectory(num_cells=6000, seed=0)


def test_branching_trajectory_layout(cells):
    assert cells.data.shape == (6000, 20) and cells.data.dtype == torch.float32
    assert cells.group_names == list(TRAJECTORY_GROUPS)
    assert cells.marker_group.tolist() == [g for g in range(5) for _ in range(4)]
    assert cells.marker_names[8] == "branch_a_0"
    t, branch = cells.pseudotime, cells.branch
    assert branch.dtype == torch.long and set(branch.unique().tolist()) == {0, 1, 2}
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert torch.equal(branch == 0, t < 0.5)
    share = torch.bincount(branch).double() / 6000
    torch.testing.assert_close(share, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64),
                               atol=0.03, rtol=0)
    residual = (cells.data - cells.profiles).double()
    assert abs(float(residual.std()) - 0.3) < 0.01


def test_branching_trajectory_seeding():
    a = branching_trajectory(num_cells=200, seed=5)
    b = branching_trajectory(num_cells=200, seed=5)
    c = branching_trajectory(num_cells=200, seed=6)
    assert torch.equal(a.data, b.data) and torch.equal(a.pseudotime, b.pseudotime)
    assert not torch.equal(a.data, c.data)
    quiet = branching_trajectory(num_cells=200, noise=0.0, seed=5)
    assert torch.equal(quiet.data, quiet.profiles)


def group_mean(cells, group: str, select: torch.Tensor) -> float:
    columns = cells.marker_group == cells.group_names.index(group)
    return float(cells.data[select][:, columns].double().mean())


def test_branching_trajectory_marker_profiles(cells):
    t, branch = cells.pseudotime, cells.branch
    # trunk_early fades monotonically along the trunk (mean per fifth of the trunk)
    fifths = [(t >= lo) & (t < lo + 0.1) for lo in np.arange(0.0, 0.5, 0.1)]
    early = [group_mean(cells, "trunk_early", f) for f in fifths]
    assert all(a > b for a, b in zip(early, early[1:], strict=False))
    assert early[0] > 0.8 and early[-1] < 0.1
    late_a = (branch == 1) & (t > 0.85)
    late_b = (branch == 2) & (t > 0.85)
    assert group_mean(cells, "branch_a", late_a) > 0.8
    assert group_mean(cells, "branch_a", late_b) < 0.05
    assert group_mean(cells, "branch_b", late_b) > 0.8
    assert group_mean(cells, "branch_b", late_a) < 0.05
    assert abs(group_mean(cells, "branch_a", branch == 0)) < 0.02
    # shared_late rises on both branches, trunk_late is on before the split only
    for late in (late_a, late_b):
        assert group_mean(cells, "shared_late", late) > 0.8
        assert group_mean(cells, "trunk_late", late) < 0.1
    assert group_mean(cells, "shared_late", branch == 0) < 0.05
    assert group_mean(cells, "trunk_late", (t > 0.35) & (t < 0.5)) > 0.8
    # branch markers start from 0 at the split (no jump)
    just_after = (branch == 1) & (t < 0.52)
    columns = cells.marker_group == 2
    assert float(cells.profiles[just_after][:, columns].max()) < 0.05


def test_branching_trajectory_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_markers_per_group"):
        branching_trajectory(num_markers_per_group=0)
    with pytest.raises(ValueError, match="noise"):
        branching_trajectory(noise=-1.0)


def test_planted_modules_shuffled_features_and_a_correlation_per_module():
    sizes, correlations = (4, 6, 8), (0.5, 0.4, 0.3)
    plain = planted_modules(num_samples=20000, module_sizes=sizes, within_corr=correlations,
                            active_shift=3.0, active_per_sample=2, seed=4)
    shuffled = planted_modules(num_samples=20000, module_sizes=sizes,
                               within_corr=correlations, active_shift=3.0,
                               active_per_sample=2, shuffle_features=True, seed=4)
    order = shuffled.feature_order
    assert sorted(order.tolist()) == list(range(18)) and order.tolist() != list(range(18))
    assert plain.feature_order.tolist() == list(range(18))
    # the same values, columns in another order, and the modules follow the columns
    assert torch.equal(shuffled.data, plain.data[:, order])
    assert torch.equal(shuffled.feature_module, plain.feature_module[order])
    assert torch.equal(shuffled.active_mask, plain.active_mask)
    # each module keeps its own correlation in the noise part
    residual = (plain.data.double()
                - 3.0 * plain.active_mask[:, plain.feature_module].double()).numpy()
    corr = np.corrcoef(residual, rowvar=False)
    module = plain.feature_module.numpy()
    for m, r in enumerate(correlations):
        inside = (module[:, None] == m) & (module[None, :] == m) & ~np.eye(18, dtype=bool)
        np.testing.assert_allclose(corr[inside], r, atol=0.03)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"within_corr": (0.5, 0.4)}, ValueError, r"one number or one per module \(3\)"),
        ({"within_corr": (0.5, 0.4, 1.2)}, ValueError, r"within_corr\[2\] must be in"),
        ({"within_corr": (0.5, "a", 0.3)}, TypeError, r"within_corr\[1\] must be a number"),
        ({"shuffle_features": 1}, TypeError, "shuffle_features must be a bool"),
    ],
)
def test_planted_modules_rejects_bad_module_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        planted_modules(num_samples=10, **kwargs)
