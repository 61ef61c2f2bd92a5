"""The alternating trainer: warm-up, graph refresh, stop rule, snapshots, checkpoints, resume.

One readable loop (:meth:`GSRTrainer.fit`). Each training step:

1. take the next batch (the loader is iterated epoch after epoch; its position is saved);
2. forward pass; the regularizer captures the hooked layers' outputs;
3. in the learning phase, every ``refresh_every`` steps, build a graph for each learned layer
   from its neuron features and install it, unless the stop rule fires
   (:class:`gsr_pyg.refresh.GraphRefresh`);
4. loss = task loss + penalty; backward; optimizer step; ``reg.step()``;
5. every ``checkpoint_every`` steps, a checkpoint (:class:`~gsr_pyg.training.rundir.RunDirectory`).

The phases (warm-up, learning, after the stop) are the :class:`LearningSchedule`'s; without
learned layers the trainer runs ``max_steps`` plain regularized steps. Steps 3 and 4's graph
work (refresh, snapshots, penalties, metric rows, ``reg.step()``, the schedule) is
:class:`~gsr_pyg.training.core.GSRCore`'s, the same core the Lightning and Hugging Face
callbacks (:mod:`gsr_pyg.integrations`) train through; the trainer adds the batches, the
optimizer, DDP and the run directory's checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .._validation import check_int, describe
from ..learn import CoactivationGraph
from ..regularizer import GraphSpectralRegularizer
from .batches import BatchStream, seed_everything, to_device
from .core import GSRCore, batch_mask, check_learn, make_plan
from .distributed import (
    barrier,
    distributed_loader,
    get_rank,
    get_world_size,
)
from .rundir import CHECKPOINT, CHECKPOINT_FORMAT, History, RunDirectory
from .schedule import LearningSchedule, Phase, Progress

__all__ = ["GSRTrainer"]


def _as_device(device) -> torch.device:
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a torch.device or a device string (cpu, cuda, cuda:1), "
                        f"got {describe(device)}")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be a torch.device or a device string (cpu, cuda, "
                         f"cuda:1), got {device!r}") from None


def _check_parts(model, reg, optimizer, loss_fn, learn) -> dict:
    """The trainer's collaborators, checked; returns ``learn`` as a dict (its learners are
    checked by :class:`~gsr_pyg.refresh.GraphRefresh`)."""
    if not isinstance(reg, GraphSpectralRegularizer):
        raise TypeError(f"reg must be a GraphSpectralRegularizer, got {describe(reg)}")
    if reg.model is not model:
        raise ValueError("reg regularizes a different model than the one given to the trainer")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {describe(optimizer)}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {describe(loss_fn)}")
    return check_learn(learn)


def _postfix(row: dict, layers: list[str]) -> str:
    """The progress bar's summary of a metrics row."""
    parts = [f"loss {row['task_loss']:.4g}"]
    for name in layers:
        entry = row[name]
        parts.append(f"{name}: pen {entry['penalty']:.3g} E {entry['edges']} "
                     f"C {entry['components']}")
    return ", ".join(parts)


class GSRTrainer:
    """Train ``model`` with ``reg`` and, for the layers in ``learn``, learned graphs.

    Args:
        model: the model; ``reg`` must regularize it.
        reg: a :class:`~gsr_pyg.GraphSpectralRegularizer`. The constructor gives each layer in
            ``learn`` an edgeless graph (no penalty until its first learned graph), whatever
            graph ``reg`` held, and the Laplacian normalization of ``schedule``.
        optimizer: any ``torch.optim`` optimizer over the model's parameters.
        loss_fn: ``loss_fn(output, target)``; a batch ``(x, y, ...)`` gives
            ``loss_fn(model(x), y)``, a batch that is a single tensor ``x`` (or ``(x,)``)
            gives ``loss_fn(model(x), x)`` (autoencoders).
        schedule: a :class:`LearningSchedule` (default: the reference) when ``learn`` is given.
            Its ``normalization`` (default ``"sym"``, the reference's) is the Laplacian every
            learned layer trains with; ``repr(trainer)`` and ``config.json`` state it per layer.
        learn: mapping layer name -> :class:`~gsr_pyg.learn.CoactivationGraph` (its
            ``features`` says whether it sees the current batch or accumulated statistics).
        run_dir: where config, metrics, snapshots and checkpoints go (None: memory only, no
            resume). An existing run directory with the same config is resumed.
        max_steps: number of steps when nothing is learned.
        checkpoint_every: steps between checkpoints (also when the run ends or learning stops).
        log_every: steps between metric rows.
        smoothness_permutations: permutations of the logged smoothness ratio (0: not logged).
        seed: seeds torch, numpy and random at the start of a fresh run.
        device: where to train (default: the model's device).
        verbose: show a progress bar and print a one-line summary.
        config: extra JSON-serialisable settings stored in ``config.json`` and compared on
            resume (data, model sizes...).
        mask_fn: ``mask_fn(batch)`` -> the batch's padding mask over the sample axes of the
            regularized layers (e.g. ``lambda batch: batch[2]`` for a Hugging Face
            ``attention_mask`` ``[B, T]`` carried as the third item), or None for a batch
            without padding. Padded positions count neither in the penalty, nor in the
            features and statistics of learned graphs, nor in the logged smoothness.
            Default None: every position is real.

    Attributes: ``progress`` (a :class:`~gsr_pyg.training.schedule.Progress`: step, phase,
    learning and after-stop steps), ``history`` (a :class:`History`), ``refresh`` (the
    :class:`~gsr_pyg.refresh.GraphRefresh` of the learned layers), ``rank``, ``world_size``
    and ``is_main`` (whether this process writes the run directory). ``refresh`` may be
    replaced by an object with the same methods that wraps it (to time the refreshes, say).
    ``progress``, ``history`` and ``refresh`` are those of ``core``, the
    :class:`~gsr_pyg.training.core.GSRCore` that does each step's graph work.
    """

    def __init__(
        self,
        model: nn.Module,
        reg: GraphSpectralRegularizer,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable,
        schedule: LearningSchedule | None = None,
        learn: Mapping[str, CoactivationGraph] | None = None,
        run_dir: str | os.PathLike | None = None,
        max_steps: int | None = None,
        checkpoint_every: int = 500,
        log_every: int = 50,
        smoothness_permutations: int = 10,
        seed: int = 0,
        device: torch.device | str | None = None,
        verbose: bool = True,
        config: Mapping | None = None,
        mask_fn: Callable | None = None,
    ):
        learn = _check_parts(model, reg, optimizer, loss_fn, learn)
        schedule, plan = make_plan(learn, schedule, max_steps)
        self.model, self.reg, self.optimizer, self.loss_fn = model, reg, optimizer, loss_fn
        self.schedule = schedule
        self.max_steps = max_steps
        self.checkpoint_every = check_int(checkpoint_every, "checkpoint_every", minimum=1)
        self.log_every = check_int(log_every, "log_every", minimum=1)
        self.smoothness_permutations = check_int(smoothness_permutations,
                                                 "smoothness_permutations", minimum=0)
        self.seed = check_int(seed, "seed")
        self.verbose = verbose
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping of JSON-serialisable settings, got "
                            f"{describe(config)}")
        self.extra_config = dict(config or {})
        if mask_fn is not None and not callable(mask_fn):
            raise TypeError(f"mask_fn must be a callable batch -> mask or None, got "
                            f"{describe(mask_fn)}")
        self.mask_fn = mask_fn
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        self.device = _as_device(device)
        if run_dir is not None and not isinstance(run_dir, (str, os.PathLike)):
            raise TypeError(f"run_dir must be a path (str or os.PathLike) or None, got "
                            f"{describe(run_dir)}")
        self.rank, self.world_size = get_rank(), get_world_size()
        self.is_main = self.rank == 0  # only the main process writes the run directory
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run = RunDirectory(self.run_dir, self.is_main) if run_dir is not None else None
        # the refresh, snapshots, metrics rows and schedule: the one core every loop shares
        self.core = GSRCore(reg, learn, plan, device=self.device, run=self.run,
                            log_every=self.log_every,
                            smoothness_permutations=self.smoothness_permutations)
        self._stream = BatchStream()

    # the core's state, under the names the trainer has always had
    @property
    def refresh(self):
        return self.core.refresh

    @refresh.setter
    def refresh(self, value) -> None:
        self.core.refresh = value

    @property
    def progress(self) -> Progress:
        return self.core.progress

    @progress.setter
    def progress(self, value: Progress) -> None:
        self.core.progress = value

    @property
    def history(self) -> History:
        return self.core.history

    @history.setter
    def history(self, value: History) -> None:
        self.core.history = value

    @property
    def _plan(self):
        return self.core.plan

    @property
    def step(self) -> int:
        """Steps trained so far."""
        return self.progress.step

    @property
    def phase(self) -> Phase:
        return self.progress.phase

    # ------------------------------------------------------------------ the loop
    def fit(self, loader: Iterable) -> History:
        """Train until the schedule ends; resume from ``run_dir`` when it holds a checkpoint."""
        if not isinstance(loader, Iterable):
            raise TypeError(f"loader must be an iterable of batches (a DataLoader, a list of "
                            f"(inputs, targets) pairs...), got {describe(loader)}")
        self._start()  # seeded fresh run, or the state of run_dir's checkpoint
        model, loader = self._per_process(loader)
        bar = self._progress_bar()
        self.model.train()
        batches = self._stream.batches(loader)
        core = self.core
        while not core.progress.done:
            batch = to_device(next(batches), self.device)
            loss = self._task_loss(model, batch)  # the regularizer captures its layers here
            mask = self._mask(batch)  # padding: real positions only, everywhere below
            # learning phase: new graphs every refresh_every steps (none during the warm-up,
            # when the learned layers have no edges and so no penalty)
            if core.start_step(mask):  # every learned layer stopped, nothing trained after
                self._save_checkpoint()
                break
            penalties = core.penalties(mask)  # per layer, weighted by its schedule
            (loss + sum(penalties.values())).backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            row = core.finish_step(loss.detach(), mask)  # statistics, row, reg.step(), advance
            if bar is not None:
                if row is not None:
                    bar.set_postfix_str(_postfix(row, self.reg.layers), refresh=False)
                bar.update(1)
            if core.progress.step % self.checkpoint_every == 0 or core.progress.done:
                self._save_checkpoint()  # metrics rows are written with it
        if bar is not None:
            bar.close()
        if self.run is not None:
            self.run.write_summary(self.summary())
        if self.verbose and self.is_main:
            print(self.summary_line())
        return self.history

    def _start(self) -> None:
        resume = False
        if self.run is not None:  # every process checks; the main one writes
            resume = self.run.prepare(self.resolved_config())
            barrier()
        self.model.to(self.device)
        if resume:
            self._load_checkpoint()
        elif self.progress.step == 0:  # a second fit() goes on where the first stopped
            seed_everything(self.seed)

    def _per_process(self, loader):
        """The model and loader each process trains with (DDP and a distributed sampler under
        torchrun; the hooks sit on the inner modules, so they fire inside the wrapper)."""
        if self.world_size == 1:
            return self.model, loader
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        return model, distributed_loader(loader, self.seed)

    def _mask(self, batch) -> torch.Tensor | None:
        """The batch's padding mask from ``mask_fn`` (None without one)."""
        return batch_mask(self.mask_fn, batch)

    def _task_loss(self, model: nn.Module, batch) -> torch.Tensor:
        if isinstance(batch, (list, tuple)):
            x = batch[0]
            target = batch[1] if len(batch) > 1 else x
        else:
            x = target = batch
        return self.loss_fn(model(x), target)

    # ------------------------------------------------------------------ records
    def _progress_bar(self):
        if not (self.verbose and self.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self._plan.max_total_steps, initial=self.progress.step, desc="gsr",
                    dynamic_ncols=True)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self) -> dict:
        """Everything a resumed run needs; collective under torchrun (every process calls)."""
        core = self.core.state_dict()
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "regularizer": core["regularizer"],
            "learning": core["learning"],
            "loop": {**core["progress"], **self._stream.state_dict(),
                     "num_snapshots": core["num_snapshots"]},
            "world_size": self.world_size,
            "per_rank": self.core.rank_states(),
        }

    def _save_checkpoint(self) -> None:
        if self.run is not None:
            self.run.write_checkpoint(self._checkpoint_state())

    def _load_checkpoint(self) -> None:
        state = self.run.read_checkpoint(self.world_size)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:  # another architecture or width
            raise ValueError(f"checkpoint file {str(self.run.path / CHECKPOINT)!r} holds "
                             f"another model than the one given to the trainer: "
                             f"{' '.join(str(err).split())[:300]}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        loop = state["loop"]
        self.core.load_state_dict({"learning": state["learning"],
                                   "regularizer": state["regularizer"], "progress": loop})
        self._stream.load_state_dict(loop)
        self.history = self.run.restore_snapshots(loop["num_snapshots"], self.refresh.layers)
        self.run.truncate_metrics(self.progress.step)
        self.core.load_rank_states(state["per_rank"])

    # ------------------------------------------------------------------ reports
    def normalizations(self) -> dict[str, str | None]:
        """The Laplacian normalization each regularized layer trains with (learned layers:
        the schedule's)."""
        return self.core.normalizations()

    def resolved_config(self) -> dict:
        """Everything that defines the run; stored in config.json and compared on resume."""
        opt = self.optimizer
        return {
            "model": type(self.model).__name__,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "optimizer": type(opt).__name__,
            "optimizer_defaults": {k: v for k, v in opt.defaults.items()
                                   if isinstance(v, (int, float, str, bool, tuple, list))},
            "regularizer": self.reg.config(),
            "normalization": self.normalizations(),
            "schedule": asdict(self.schedule) if self.schedule is not None else None,
            "learn": {name: repr(self.refresh.learner(name)) for name in self.refresh.layers},
            "max_steps": self.max_steps,
            "checkpoint_every": self.checkpoint_every,
            "log_every": self.log_every,
            "smoothness_permutations": self.smoothness_permutations,
            "seed": self.seed,
            **{f"user.{k}": v for k, v in self.extra_config.items()},
        }

    def summary(self) -> dict:
        return self.core.summary()

    def summary_line(self) -> str:
        return self.core.summary_line()

    def __repr__(self) -> str:
        lines = [f"GSRTrainer(model={type(self.model).__name__}, "
                 f"optimizer={type(self.optimizer).__name__}, device={self.device}, "
                 f"run_dir={str(self.run_dir) if self.run_dir else None},",
                 f"  schedule={self._plan!r},"]
        lines += [f"  {line}," for line in self.core.describe_layers()]
        return "\n".join(lines) + "\n)"
