r"""Penalty weight schedules, shaped like ``torch.optim.lr_scheduler``.

A schedule is a function of the training step: ``schedule(t)`` is the weight
:math:`\lambda_t` at step ``t``. It holds no step counter of its own: the regularizer counts
the steps (:meth:`gsr_pyg.regularizer.GraphSpectralRegularizer.step`) and asks the schedule for
the weight, so one schedule object can serve several layers. Like an LR scheduler, a schedule
saves its numbers with :meth:`~WeightSchedule.state_dict` and restores them with
:meth:`~WeightSchedule.load_state_dict`.

Example:
    >>> schedule = StaircaseWeight(1e-2, decay=0.5, every=100)
    >>> [schedule(t) for t in (0, 99, 100, 250)]
    [0.01, 0.01, 0.005, 0.0025]
    >>> schedule.state_dict()
    {'weight': 0.01, 'decay': 0.5, 'every': 100}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ._validation import check_int, check_positive, describe

__all__ = [
    "WeightSchedule",
    "ConstantWeight",
    "StaircaseWeight",
    "LinearWarmupWeight",
    "LambdaWeight",
    "as_schedule",
]


class WeightSchedule:
    """Penalty weight as a function of the training step.

    Subclasses implement :meth:`__call__` (the weight at step ``t``). :meth:`state_dict`
    holds the schedule's numeric settings (plain numbers, so ``torch.load(...,
    weights_only=True)`` reads a checkpoint holding it).
    """

    def __call__(self, step: int) -> float:  # pragma: no cover - interface
        """The weight at training step ``step``."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """The schedule's numeric settings, as ``{name: number}``."""
        return {k: v for k, v in vars(self).items() if isinstance(v, (int, float))}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore settings saved by :meth:`state_dict`; keys this schedule does not have are
        refused (the state of another kind of schedule)."""
        unknown = sorted(set(state) - set(self.state_dict()))
        if unknown:
            raise ValueError(
                f"state of {type(self).__name__} has unknown keys {unknown}; it holds "
                f"{sorted(self.state_dict())}"
            )
        vars(self).update(state)


class ConstantWeight(WeightSchedule):
    r""":math:`\lambda_t = \lambda`.

    Example:
        >>> ConstantWeight(0.1)(12345)
        0.1
    """

    def __init__(self, weight: float):
        self.weight = check_positive(weight, "weight", allow_zero=True)

    def __call__(self, step: int) -> float:
        return self.weight

    def __repr__(self) -> str:
        return f"ConstantWeight({self.weight:g})"


class StaircaseWeight(WeightSchedule):
    r"""The reference schedule: :math:`\lambda_t = \lambda \cdot decay^{\lfloor t / every
    \rfloor}` (only the penalty weight decays, never the learning rate).

    Example:
        >>> StaircaseWeight(1.0, decay=0.5, every=10)(25)
        0.25
    """

    def __init__(self, weight: float, decay: float, every: int = 100):
        self.weight = check_positive(weight, "weight", allow_zero=True)
        self.decay = check_positive(decay, "decay")
        self.every = check_int(every, "every", minimum=1)

    def __call__(self, step: int) -> float:
        return self.weight * self.decay ** (step // self.every)

    def __repr__(self) -> str:
        return f"StaircaseWeight({self.weight:g}, decay={self.decay:g}, every={self.every})"


class LinearWarmupWeight(WeightSchedule):
    r"""Ramps linearly from 0 at step 0 to ``weight`` at ``warmup_steps``, then constant:
    :math:`\lambda_t = \lambda \min(1, t / T)`.

    Example:
        >>> [LinearWarmupWeight(2.0, warmup_steps=4)(t) for t in (0, 1, 4, 9)]
        [0.0, 0.5, 2.0, 2.0]
    """

    def __init__(self, weight: float, warmup_steps: int):
        self.weight = check_positive(weight, "weight", allow_zero=True)
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", minimum=1)

    def __call__(self, step: int) -> float:
        return self.weight * min(1.0, step / self.warmup_steps)

    def __repr__(self) -> str:
        return f"LinearWarmupWeight({self.weight:g}, warmup_steps={self.warmup_steps})"


class LambdaWeight(WeightSchedule):
    r""":math:`\lambda_t = fn(t)` for any callable ``fn`` (like ``LambdaLR``); it has no
    numbers to save.

    Example:
        >>> LambdaWeight(lambda t: t / 10)(3)
        0.3
    """

    def __init__(self, fn: Callable[[int], float]):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {describe(fn)}")
        self.fn = fn

    def __call__(self, step: int) -> float:
        return float(self.fn(step))

    def state_dict(self) -> dict:
        return {}

    def __repr__(self) -> str:
        # the function's name, not its repr: an address would differ from run to run
        return f"LambdaWeight({getattr(self.fn, '__qualname__', type(self.fn).__name__)})"


def as_schedule(weight: float | WeightSchedule | Callable[[int], float],
                name: str = "weight") -> WeightSchedule:
    """A number (:class:`ConstantWeight`), a :class:`WeightSchedule` (returned as is) or a
    callable of the step (:class:`LambdaWeight`) as a schedule; anything else is refused.

    Example:
        >>> as_schedule(0.5)
        ConstantWeight(0.5)
    """
    if isinstance(weight, WeightSchedule):
        return weight
    if isinstance(weight, (int, float)) and not isinstance(weight, bool):
        check_positive(weight, name, allow_zero=True)
        return ConstantWeight(weight)
    if callable(weight) and not isinstance(weight, type):
        return LambdaWeight(weight)
    raise TypeError(
        f"{name} must be a non-negative number, a WeightSchedule or a callable of the step, "
        f"got {describe(weight)}"
    )
