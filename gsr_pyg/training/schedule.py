"""When graphs are learned: the phases of a run and the schedule that moves between them.

A run with learned layers goes through::

    WARMUP --warmup_steps--> LEARNING --stop rule fires--> AFTER_STOP --after_stop_steps--> DONE
                                 \\-------------max_learning_steps------------------------> DONE

``WARMUP`` trains with no graph on the learned layers (so no penalty there); ``LEARNING``
refreshes their graphs every ``refresh_every`` steps; once every learned layer has stopped,
``AFTER_STOP`` trains ``after_stop_steps`` more steps on the last graphs. A run whose graphs
are all fixed is ``TRAIN`` for ``max_steps`` steps (:class:`FixedSteps`), then ``DONE``, or
``TRAIN`` until the training loop ends it (:class:`UntilStopped`: a Lightning or Hugging Face
run whose length their trainer sets).

The schedule decides the phase; the trainer only asks it (:meth:`LearningSchedule.refresh_due`,
:meth:`LearningSchedule.advance`) and keeps the counters in a :class:`Progress`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .._validation import check_choice, check_int
from ..refresh import STOP_RULES, check_converged_jaccard
from ..spectral import check_normalization

__all__ = ["Phase", "Progress", "LearningSchedule", "FixedSteps", "UntilStopped"]


class Phase(str, Enum):
    """The phase of a run. A ``str``, so it is written to JSON as its value (``"warmup"``)."""

    TRAIN = "train"
    WARMUP = "warmup"
    LEARNING = "learning"
    AFTER_STOP = "after_stop"
    DONE = "done"

    def __str__(self) -> str:
        return self.value


@dataclass
class Progress:
    """Where a run stands: the steps trained, the phase, the steps in each counted phase.

    Example:
        >>> progress = LearningSchedule(warmup_steps=2).start()
        >>> progress.phase, progress.step
        (<Phase.WARMUP: 'warmup'>, 0)
    """

    phase: Phase
    step: int = 0
    learning_steps: int = 0
    after_stop_steps: int = 0

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    def state_dict(self) -> dict:
        """Plain numbers and strings (readable with ``weights_only=True``)."""
        return {"step": self.step, "phase": self.phase.value,
                "learning_steps": self.learning_steps, "after_stop_steps": self.after_stop_steps}

    @classmethod
    def from_state_dict(cls, state: dict) -> Progress:
        return cls(phase=Phase(state["phase"]), step=state["step"],
                   learning_steps=state["learning_steps"],
                   after_stop_steps=state["after_stop_steps"])


@dataclass(frozen=True)
class LearningSchedule:
    """When graphs are learned, and with which Laplacian they are installed.

    Args:
        warmup_steps: steps before the first graph (no penalty on learned layers).
        refresh_every: a new graph every this many learning steps.
        max_learning_steps: at most this many steps in the learning phase.
        after_stop_steps: steps trained on the last graph once learning has stopped.
        stop: ``"disconnected"`` (the reference: stop when a new graph has >= 2 connected
            components; it is discarded), ``"converged"`` (stop when the Jaccard index of
            consecutive edge sets reaches ``converged_jaccard``) or ``"never"``.
        normalization: the Laplacian every learned layer trains with: ``"sym"``
            (``I - D^-1/2 A D^-1/2``, the reference's, the default) or ``None``
            (``D - A``). It replaces the normalization the regularizer was built with for
            those layers; the trainer states it per layer in its ``repr`` and in
            ``config.json``.
        converged_jaccard: threshold of the ``"converged"`` rule.

    Example:
        >>> schedule = LearningSchedule(warmup_steps=1, refresh_every=2, max_learning_steps=3,
        ...                             after_stop_steps=0)
        >>> progress = schedule.start()
        >>> phases = []
        >>> while not progress.done:
        ...     phases.append((progress.phase.value, schedule.refresh_due(progress)))
        ...     schedule.advance(progress)
        >>> phases
        [('warmup', False), ('learning', True), ('learning', False), ('learning', True)]
    """

    warmup_steps: int = 5000
    refresh_every: int = 100
    max_learning_steps: int = 5000
    after_stop_steps: int = 200
    stop: str = "disconnected"
    normalization: str | None = "sym"
    converged_jaccard: float = 0.95

    def __post_init__(self):
        check_int(self.warmup_steps, "warmup_steps", minimum=0)
        check_int(self.refresh_every, "refresh_every", minimum=1)
        check_int(self.max_learning_steps, "max_learning_steps", minimum=1)
        check_int(self.after_stop_steps, "after_stop_steps", minimum=0)
        check_choice(self.stop, "stop", STOP_RULES)
        check_normalization(self.normalization, "normalization")
        check_converged_jaccard(self.converged_jaccard)

    @classmethod
    def reference(cls) -> LearningSchedule:
        """The original schedule: 5,000 warm-up, refresh every 100, at most 5,000 learning
        steps, stop at the first disconnected graph, then 200 steps; normalized Laplacian."""
        return cls()

    @property
    def max_total_steps(self) -> int:
        """Most steps a run can take (the progress bar's length): a run that never stops
        has no after-stop steps."""
        after_stop = 0 if self.stop == "never" else self.after_stop_steps
        return self.warmup_steps + self.max_learning_steps + after_stop

    def start(self) -> Progress:
        """The progress of a fresh run (learning from the first step when there is no
        warm-up)."""
        return Progress(phase=Phase.WARMUP if self.warmup_steps else Phase.LEARNING)

    def refresh_due(self, progress: Progress) -> bool:
        """Whether the step about to be trained refreshes the learned graphs."""
        return (progress.phase is Phase.LEARNING
                and progress.learning_steps % self.refresh_every == 0)

    def end_at_stop(self, progress: Progress) -> bool:
        """Every learned layer stopped at the refresh of the step about to be trained: when
        nothing is trained after a stop (``after_stop_steps == 0``), set the run ``DONE``
        without training that step and return True; otherwise False (the step is the first
        after-stop step)."""
        if self.after_stop_steps:
            return False
        progress.phase = Phase.DONE
        return True

    def advance(self, progress: Progress, stopped: bool = False) -> None:
        """Count the step just trained and move to the next phase. ``stopped``: every learned
        layer stopped at this step's refresh, which is then the first after-stop step."""
        if progress.done:
            return
        progress.step += 1
        if stopped:
            progress.phase = Phase.AFTER_STOP
        if progress.phase is Phase.WARMUP:
            if progress.step >= self.warmup_steps:
                progress.phase = Phase.LEARNING
        elif progress.phase is Phase.LEARNING:
            progress.learning_steps += 1
            if progress.learning_steps >= self.max_learning_steps:
                progress.phase = Phase.DONE
        elif progress.phase is Phase.AFTER_STOP:
            progress.after_stop_steps += 1
            if progress.after_stop_steps >= self.after_stop_steps:
                progress.phase = Phase.DONE


@dataclass(frozen=True)
class FixedSteps:
    """The schedule of a run whose graphs are all fixed: ``max_steps`` steps, no refresh.

    Example:
        >>> schedule = FixedSteps(2)
        >>> progress = schedule.start()
        >>> schedule.advance(progress); schedule.advance(progress)
        >>> progress.phase, progress.step
        (<Phase.DONE: 'done'>, 2)
    """

    max_steps: int

    def __post_init__(self):
        check_int(self.max_steps, "max_steps", minimum=1)

    @property
    def max_total_steps(self) -> int:
        return self.max_steps

    def start(self) -> Progress:
        return Progress(phase=Phase.TRAIN)

    def refresh_due(self, progress: Progress) -> bool:
        return False

    def advance(self, progress: Progress, stopped: bool = False) -> None:
        if progress.done:
            return
        progress.step += 1
        if progress.step >= self.max_steps:
            progress.phase = Phase.DONE


@dataclass(frozen=True)
class UntilStopped:
    """The schedule of a run whose graphs are all fixed and whose length the training loop
    sets (a Lightning or Hugging Face trainer's ``max_steps`` or epochs): ``TRAIN``, no
    refresh, never ``DONE`` on its own.

    Example:
        >>> schedule = UntilStopped()
        >>> progress = schedule.start()
        >>> schedule.advance(progress); schedule.advance(progress)
        >>> progress.phase, progress.step
        (<Phase.TRAIN: 'train'>, 2)
    """

    @property
    def max_total_steps(self) -> None:
        return None

    def start(self) -> Progress:
        return Progress(phase=Phase.TRAIN)

    def refresh_due(self, progress: Progress) -> bool:
        return False

    def advance(self, progress: Progress, stopped: bool = False) -> None:
        progress.step += 1
