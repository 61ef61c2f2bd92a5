"""Synthetic data with known truth: planted feature modules and a branching trajectory.

Both generators are seeded: pass an ``int``, a :class:`torch.Generator` (CPU) or a
:class:`numpy.random.Generator` as ``seed``. All random numbers come from one CPU
:class:`torch.Generator`, so the same integer seed gives the same tensors on every
machine. (A numpy generator is used only to draw that torch seed, and is advanced by one
draw.) The tensors are returned on the CPU; move them with ``.to(device)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gsr_pyg._validation import check_int, check_positive, describe

__all__ = [
    "PlantedModules",
    "Trajectory",
    "planted_modules",
    "branching_trajectory",
    "TRAJECTORY_GROUPS",
]


def _torch_generator(seed) -> torch.Generator:
    """A CPU ``torch.Generator`` from an int, a torch generator or a numpy generator."""
    if isinstance(seed, torch.Generator):
        if seed.device.type != "cpu":
            raise ValueError(f"seed must be a CPU torch.Generator, got one on {seed.device}")
        return seed
    if isinstance(seed, np.random.Generator):
        return torch.Generator().manual_seed(int(seed.integers(0, 2**63 - 1)))
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        return torch.Generator().manual_seed(int(seed))
    raise TypeError(
        "seed must be an int, a torch.Generator or a numpy.random.Generator, "
        f"got {describe(seed)}"
    )


def _rank_within_blocks(keys: torch.Tensor, block: torch.Tensor,
                        block_start: torch.Tensor) -> torch.Tensor:
    """Rank of each column's key among the columns of its block, row by row.

    ``keys`` [R, C] in [0, 1), ``block`` [C] the block of each column (blocks contiguous,
    ascending), ``block_start`` [B] the first column of each block. Adding the block id to
    the key makes one row-wise sort order columns by block, then by key.
    """
    order = (keys.double() + block.double()).argsort(dim=1)
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(keys.size(1)).expand_as(order).contiguous())
    return position - block_start[block]


@dataclass(frozen=True)
class PlantedModules:
    """Samples with planted feature modules (see :func:`planted_modules`).

    Attributes:
        data: ``[S, F]`` float32 samples.
        active: ``[S]`` long, the module switched on in each sample (with several on at once,
            the lowest-numbered of them).
        active_mask: ``[S, M]`` bool, every module switched on in each sample.
        feature_module: ``[F]`` long, the module of each feature (modules are contiguous
            unless the features were shuffled).
        perturbed_mask: ``[S, F]`` bool, the features that got the extra ``perturb`` shift.
        feature_order: ``[F]`` long, the feature of the unshuffled data in each column
            (``0..F-1`` unless the features were shuffled): the same feature across seeds.
    """

    data: torch.Tensor
    active: torch.Tensor
    active_mask: torch.Tensor
    feature_module: torch.Tensor
    perturbed_mask: torch.Tensor
    feature_order: torch.Tensor

    @property
    def num_modules(self) -> int:
        return self.active_mask.size(1)


def planted_modules(
    num_samples: int = 60000,
    module_sizes: Sequence[int] = (5, 5, 5),
    within_corr: float = 0.6,
    active_shift: float = 10.0,
    noise: float = 1.0,
    active_per_sample: int = 1,
    perturb: float = 0.0,
    shuffle_features: bool = False,
    seed=0,
) -> PlantedModules:
    r"""Samples whose features form modules that switch on together.

    Features are split into modules of the given sizes (feature ``f`` belongs to module
    ``m(f)``, modules contiguous). For sample ``s``

    .. math::
        x_{sf} = \sigma\left(\sqrt{r}\, z_{s,m(f)} + \sqrt{1-r}\, e_{sf}\right)
                 + \Delta\, [m(f) \in A_s] + \delta\, P_{sf},

    with ``z``, ``e`` independent standard normals, :math:`\sigma` = ``noise``,
    :math:`r` = ``within_corr`` (one value, or one per module: :math:`r_{m(f)}`),
    :math:`\Delta` = ``active_shift`` and :math:`\delta` = ``perturb``. :math:`A_s` is a set of
    ``active_per_sample`` modules drawn uniformly without replacement. ``P`` is the
    sub-module perturbation: for every sample and every active module of size ``n``,
    ``n // 2`` of its features, drawn uniformly and independently per sample and module, get
    ``perturb`` added (none when ``perturb`` is 0).

    The noise part has variance :math:`\sigma^2`, correlation ``r`` between features of
    one module and 0 between modules. Given which modules are active (and which features
    are perturbed) the shifts are constants, so these are also the correlations within
    each group of samples with the same active module. Marginal correlations over all
    samples are dominated by the shifts (strongly positive within, negative across
    modules).

    With ``shuffle_features`` the columns are put in a random order at the end (drawn after
    everything else, so the same seed gives the same values in another order), and
    ``feature_module`` follows them: no method can read the modules from the column order.

    The defaults are the reference "hub" data: 3 modules of 5 features, correlation 0.6,
    one module per sample shifted by +10.

    Args:
        num_samples: number of samples ``S`` (default 60000).
        module_sizes: features per module (default ``(5, 5, 5)``).
        within_corr: correlation ``r`` in [0, 1] within a module, or a sequence of one per
            module (default 0.6).
        active_shift: added to every feature of an active module (default 10.0).
        noise: standard deviation :math:`\sigma` of the noise part, > 0 (default 1.0).
        active_per_sample: modules switched on in each sample, 1..M (default 1).
        perturb: extra shift of a random half of each active module (default 0.0).
        shuffle_features: put the features in a random order (default False).
        seed: int, CPU ``torch.Generator`` or ``numpy.random.Generator`` (default 0).

    Example:
        >>> planted = planted_modules(num_samples=100, seed=1)
        >>> planted.data.shape, planted.feature_module.tolist()[:6]
        (torch.Size([100, 15]), [0, 0, 0, 0, 0, 1])
    """
    num_samples = check_int(num_samples, "num_samples", minimum=1)
    if isinstance(module_sizes, (str, bytes)) or not isinstance(module_sizes, Sequence):
        raise TypeError(
            f"module_sizes must be a sequence of ints, got {describe(module_sizes)}"
        )
    if len(module_sizes) == 0:
        raise ValueError("module_sizes must name at least one module, got an empty sequence")
    for index, size in enumerate(module_sizes):
        check_int(size, f"module_sizes[{index}]", minimum=1)
    if isinstance(within_corr, Sequence) and not isinstance(within_corr, (str, bytes)):
        if len(within_corr) != len(module_sizes):
            raise ValueError(f"within_corr must be one number or one per module "
                             f"({len(module_sizes)}), got {len(within_corr)} values")
        correlations = list(within_corr)
        names = [f"within_corr[{i}]" for i in range(len(correlations))]
    else:
        correlations, names = [within_corr], ["within_corr"]
    for value, name in zip(correlations, names):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {describe(value)}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if not isinstance(shuffle_features, bool):
        raise TypeError(f"shuffle_features must be a bool, got {describe(shuffle_features)}")
    for value, name in ((active_shift, "active_shift"), (perturb, "perturb")):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {describe(value)}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    noise = check_positive(noise, "noise")
    num_modules = len(module_sizes)
    active_per_sample = check_int(
        active_per_sample, "active_per_sample", minimum=1, maximum=num_modules
    )
    generator = _torch_generator(seed)

    sizes = torch.tensor(list(module_sizes), dtype=torch.long)
    feature_module = torch.repeat_interleave(torch.arange(num_modules), sizes)
    module_start = torch.cumsum(sizes, 0) - sizes
    num_features = int(sizes.sum())

    # Draw order fixed: shared factors, private noise, active modules, perturbed features.
    shared = torch.randn(num_samples, num_modules, generator=generator, dtype=torch.float64)
    private = torch.randn(num_samples, num_features, generator=generator, dtype=torch.float64)
    r = torch.tensor(correlations, dtype=torch.float64).expand(num_modules)[feature_module]
    data = noise * (r.sqrt() * shared[:, feature_module] + (1.0 - r).sqrt() * private)

    # A uniform random k-subset of the modules: the k smallest of M uniform keys.
    module_keys = torch.rand(num_samples, num_modules, generator=generator)
    module_rank = module_keys.argsort(dim=1).argsort(dim=1)
    active_mask = module_rank < active_per_sample
    active = active_mask.to(torch.uint8).argmax(dim=1)  # lowest-numbered active module

    feature_active = active_mask[:, feature_module]
    data = data + active_shift * feature_active.to(data.dtype)

    feature_keys = torch.rand(num_samples, num_features, generator=generator)
    if perturb != 0.0:
        rank = _rank_within_blocks(feature_keys, feature_module, module_start)
        perturbed_mask = feature_active & (rank < (sizes // 2)[feature_module])
        data = data + perturb * perturbed_mask.to(data.dtype)
    else:
        perturbed_mask = torch.zeros(num_samples, num_features, dtype=torch.bool)
    order = torch.arange(num_features)
    if shuffle_features:
        order = torch.randperm(num_features, generator=generator)
        data, feature_module = data[:, order], feature_module[order]
        perturbed_mask = perturbed_mask[:, order]

    return PlantedModules(
        data=data.to(torch.float32),
        active=active,
        active_mask=active_mask,
        feature_module=feature_module,
        perturbed_mask=perturbed_mask,
        feature_order=order,
    )


#: Marker groups of :func:`branching_trajectory`, in order.
TRAJECTORY_GROUPS: tuple[str, ...] = (
    "trunk_early",
    "trunk_late",
    "branch_a",
    "branch_b",
    "shared_late",
)


@dataclass(frozen=True)
class Trajectory:
    """Cells on a branching trajectory (see :func:`branching_trajectory`).

    Attributes:
        data: ``[cells, markers]`` float32 expression.
        branch: ``[cells]`` long, 0 trunk, 1 branch A, 2 branch B.
        pseudotime: ``[cells]`` float32 in [0, 1]; the trunk is [0, 0.5), branches [0.5, 1].
        marker_group: ``[markers]`` long, index into ``group_names``.
        group_names: the marker groups, :data:`TRAJECTORY_GROUPS`.
        marker_names: one name per marker, ``"<group>_<i>"``.
        profiles: ``[cells, markers]`` float32, the noiseless expression.
    """

    data: torch.Tensor
    branch: torch.Tensor
    pseudotime: torch.Tensor
    marker_group: torch.Tensor
    group_names: list[str]
    marker_names: list[str]
    profiles: torch.Tensor


def _rise(t: torch.Tensor, midpoint: torch.Tensor | float, width: float) -> torch.Tensor:
    return torch.sigmoid((t - midpoint) / width)


def _rise_from(t: torch.Tensor, start: float, midpoint: torch.Tensor, width: float
               ) -> torch.Tensor:
    """A sigmoid rise rescaled to be exactly 0 at ``start`` (and clipped below it)."""
    at_start = _rise(torch.tensor(start, dtype=t.dtype), midpoint, width)
    return ((_rise(t, midpoint, width) - at_start) / (1.0 - at_start)).clamp_min(0.0)


def branching_trajectory(
    num_cells: int = 3000,
    num_markers_per_group: int = 4,
    noise: float = 0.3,
    seed=0,
) -> Trajectory:
    r"""Cells along a trunk that splits into two branches, with marker groups switching.

    Each cell gets a pseudotime ``t`` uniform on [0, 1]. Cells with ``t < 0.5`` are on the
    trunk (branch 0); the others are on branch A (1) or B (2) with probability 1/2 each.
    Five marker groups (:data:`TRAJECTORY_GROUPS`) have smooth sigmoid profiles of width
    ``w = 0.05`` with ``s(t, c) = 1 / (1 + exp(-(t - c) / w))``:

    * ``trunk_early``: ``1 - s(t, 0.25)``, high at the root, fading along the trunk;
    * ``trunk_late``: ``s(t, 0.2) (1 - s(t, 0.7))``, on in the late trunk, off late on
      both branches;
    * ``branch_a`` / ``branch_b``: 0 on the trunk and the other branch, rising on their own
      branch from 0 at ``t = 0.5`` (``s(t, 0.65)`` shifted and rescaled to start at 0);
    * ``shared_late``: ``s(t, 0.75)``, rising late on both branches.

    Each marker has its own amplitude (uniform in [0.75, 1.25]) and midpoint jitter
    (normal, sd 0.02), and the data add Gaussian noise of sd ``noise`` to the profiles.
    Markers are numbered group by group.

    Args:
        num_cells: number of cells (default 3000).
        num_markers_per_group: markers in each of the 5 groups (default 4).
        noise: standard deviation of the additive Gaussian noise, >= 0 (default 0.3).
        seed: int, CPU ``torch.Generator`` or ``numpy.random.Generator`` (default 0).

    Example:
        >>> cells = branching_trajectory(num_cells=500, seed=3)
        >>> cells.data.shape, cells.group_names[2]
        (torch.Size([500, 20]), 'branch_a')
    """
    num_cells = check_int(num_cells, "num_cells", minimum=1)
    per_group = check_int(num_markers_per_group, "num_markers_per_group", minimum=1)
    noise = check_positive(noise, "noise", allow_zero=True)
    generator = _torch_generator(seed)
    width, branch_point = 0.05, 0.5
    num_groups = len(TRAJECTORY_GROUPS)
    num_markers = num_groups * per_group
    dtype = torch.float64

    pseudotime = torch.rand(num_cells, generator=generator, dtype=dtype)
    on_b = torch.rand(num_cells, generator=generator, dtype=dtype) < 0.5
    branch = torch.where(pseudotime < branch_point, 0, torch.where(on_b, 2, 1))
    amplitude = 0.75 + 0.5 * torch.rand(num_markers, generator=generator, dtype=dtype)
    jitter = 0.02 * torch.randn(num_markers, generator=generator, dtype=dtype)
    marker_group = torch.repeat_interleave(torch.arange(num_groups), per_group)

    t = pseudotime[:, None]
    on_a_col = (branch == 1)[:, None].to(dtype)
    on_b_col = (branch == 2)[:, None].to(dtype)

    def marker_block(group: int) -> torch.Tensor:
        shift = jitter[marker_group == group]
        if group == 0:
            return 1.0 - _rise(t, 0.25 + shift, width)
        if group == 1:
            return _rise(t, 0.2 + shift, width) * (1.0 - _rise(t, 0.7 + shift, width))
        if group == 2:
            return on_a_col * _rise_from(t, branch_point, 0.65 + shift, width)
        if group == 3:
            return on_b_col * _rise_from(t, branch_point, 0.65 + shift, width)
        return _rise(t, 0.75 + shift, width)

    profiles = torch.cat([marker_block(g) for g in range(num_groups)], dim=1) * amplitude
    data = profiles + noise * torch.randn(num_cells, num_markers, generator=generator,
                                          dtype=dtype)
    marker_names = [f"{TRAJECTORY_GROUPS[g]}_{i}" for g in range(num_groups)
                    for i in range(per_group)]
    return Trajectory(
        data=data.to(torch.float32),
        branch=branch.to(torch.long),
        pseudotime=pseudotime.to(torch.float32),
        marker_group=marker_group,
        group_names=list(TRAJECTORY_GROUPS),
        marker_names=marker_names,
        profiles=profiles.to(torch.float32),
    )
