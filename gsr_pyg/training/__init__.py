"""Training with graph spectral regularization: the loop, its schedule, its run directory.

* :class:`GSRTrainer` (:mod:`.trainer`): the loop; warm-up, graph refresh
  (:mod:`gsr_pyg.refresh`), penalty, step, checkpoint; resumes a killed run exactly.
* :class:`~gsr_pyg.training.core.GSRCore` (:mod:`.core`): what the loop does at each step
  (refresh on schedule, snapshots, metric rows, the schedule's state), shared with the
  Lightning and Hugging Face callbacks of :mod:`gsr_pyg.integrations`.
* :class:`LearningSchedule` and :class:`Phase` (:mod:`.schedule`): when graphs are learned.
* :class:`History` and :func:`load_snapshot` (:mod:`.rundir`): what a run produced.
* :func:`setup_distributed` and the helpers of :mod:`.distributed`: the same code in one
  process or under ``torchrun``.
"""

from .distributed import (
    agree,
    barrier,
    gather_rows,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
    mean_over_processes,
    setup_distributed,
)
from .rundir import History, load_snapshot
from .schedule import LearningSchedule, Phase
from .trainer import GSRTrainer

__all__ = [
    "GSRTrainer", "LearningSchedule", "Phase", "History", "load_snapshot",
    "setup_distributed", "is_distributed", "get_rank", "get_world_size", "is_main_process",
    "gather_rows", "agree", "mean_over_processes", "barrier",
]
