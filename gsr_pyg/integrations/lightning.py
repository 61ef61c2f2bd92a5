"""GSR in a PyTorch Lightning run: :class:`GSRCallback` (extra ``lightning``).

The callback gives a ``LightningModule`` the graph spectral penalty of a regularizer built on
it, learns graphs on a :class:`~gsr_pyg.training.LearningSchedule`, writes snapshots into the
run's log directory, logs the metrics through Lightning's loggers and keeps its state in
Lightning's checkpoints. ``training_step`` stays as it is: while fitting, the callback wraps
the module's ``training_step`` (the instance's, restored at the end) so that the loss it
returns gains the penalty. Each step goes through :class:`gsr_pyg.training.core.GSRCore`, the
per-step logic of :class:`~gsr_pyg.training.GSRTrainer`.

Example::

    reg = GraphSpectralRegularizer(module, {"net.1": 20}, weight=1e-2)
    callback = GSRCallback(reg, learn={"net.1": CoactivationGraph.recommended()},
                           schedule=LearningSchedule(warmup_steps=100, refresh_every=20,
                                                     max_learning_steps=200, stop="never"))
    pl.Trainer(max_steps=300, callbacks=[callback]).fit(module, loader)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

try:
    import pytorch_lightning as pl
except ModuleNotFoundError as err:  # the optional extra
    raise ModuleNotFoundError(
        "gsr_pyg.integrations.lightning needs PyTorch Lightning: pip install "
        "'gsr-pyg[lightning]' (or pip install pytorch-lightning)") from err

from .._validation import describe
from ..learn import CoactivationGraph
from ..regularizer import GraphSpectralRegularizer
from ..training.core import CallbackBase, GSRCore, batch_mask, flat_metrics
from ..training.rundir import RunDirectory
from ..training.schedule import LearningSchedule

__all__ = ["GSRCallback"]


def _loss_of(output):
    """The loss tensor a ``training_step`` returned (a tensor or a mapping with ``"loss"``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("loss"), torch.Tensor):
        return output["loss"]
    raise TypeError(f"training_step must return the loss (a tensor, or a dict with 'loss') "
                    f"for GSRCallback to add the penalty to it, got {describe(output)}")


class GSRCallback(CallbackBase, pl.Callback):
    """Graph spectral regularization, learned graphs, snapshots and metrics in a Lightning run.

    Args:
        reg: a :class:`~gsr_pyg.GraphSpectralRegularizer` built on the ``LightningModule``
            being fitted or on one of its submodules (its hooks are on that module's layers).
        learn: mapping layer name -> :class:`~gsr_pyg.learn.CoactivationGraph`: the layers
            whose graphs are learned (they start edgeless, as in
            :class:`~gsr_pyg.training.GSRTrainer`).
        schedule: a :class:`~gsr_pyg.training.LearningSchedule` (default: the reference)
            when ``learn`` is given. Training stops when it is done (or earlier, when
            Lightning's own ``max_steps`` / ``max_epochs`` end the run). A step is one
            training batch (one optimizer step: gradient accumulation is refused).
        mask_fn: ``mask_fn(batch)`` -> the batch's padding mask over the sample axes of the
            regularized layers (e.g. ``lambda batch: batch["attention_mask"]``), or None.
        log_every: steps between metric rows (default: the trainer's
            ``log_every_n_steps``); a step that refreshes a graph always logs.
        smoothness_permutations: permutations of the logged smoothness ratio (0: not logged).

    The penalty: the module's ``training_step`` is wrapped while fitting, and the loss it
    returns (a tensor or ``{"loss": ...}``) gains ``sum(penalties)`` of the batch the step
    just ran forward (so the regularized layers must run in ``training_step``). Automatic
    optimization only.

    Metrics: every row (:func:`gsr_pyg.training.core.metrics_row`) goes to every logger of
    the trainer as ``gsr/task_loss``, ``gsr/<layer>/penalty``, ``.../weight``,
    ``.../edges``, ``.../components``, ``.../smoothness_ratio`` at its step, and to
    :attr:`history` (``history.metrics``).

    Snapshots: ``<trainer.log_dir>/snapshots/<layer>/NNNN_step<S>.pt`` and ``.graphml``, as
    :class:`~gsr_pyg.training.GSRTrainer` writes them; :attr:`history` lists them.

    Checkpoints: the regularizer (schedules, installed graphs), the stop state of the learned
    layers, the schedule's progress, the snapshots so far, and per process the learning
    statistics and the random-number state are the callback's state in Lightning's
    checkpoints; ``trainer.fit(..., ckpt_path=...)`` resumes them. Under DDP every process
    learns the same graph from the batches of all of them and all agree on each stop, as in
    :class:`~gsr_pyg.training.GSRTrainer`.

    Attributes (after the fit has started): ``core`` (the
    :class:`~gsr_pyg.training.core.GSRCore`), ``history``, ``progress``.
    """

    _started = "fitted"

    def __init__(
        self,
        reg: GraphSpectralRegularizer,
        learn: Mapping[str, CoactivationGraph] | None = None,
        schedule: LearningSchedule | None = None,
        mask_fn: Callable | None = None,
        log_every: int | None = None,
        smoothness_permutations: int = 10,
    ):
        self._set_settings(reg, learn, schedule, log_every, smoothness_permutations)
        if mask_fn is not None and not callable(mask_fn):
            raise TypeError(f"mask_fn must be a callable batch -> mask or None, got "
                            f"{describe(mask_fn)}")
        self.mask_fn = mask_fn
        self._pending = None  # (task loss, mask) between the step and its end
        self._wrapped = None  # (module, the instance's own training_step or None)

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not any(module is self.reg.model for module in pl_module.modules()):
            raise ValueError("reg regularizes a model that is not the LightningModule being "
                             "fitted nor one of its submodules: build the regularizer on the "
                             "module (or a submodule) that the Trainer fits")
        if not pl_module.automatic_optimization:
            raise ValueError("GSRCallback adds the penalty to the loss that training_step "
                             "returns, which needs automatic optimization "
                             "(automatic_optimization=True)")
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(f"GSRCallback counts one schedule step per optimizer step: "
                             f"accumulate_grad_batches must be 1, got "
                             f"{trainer.accumulate_grad_batches}")
        if self.core is None:  # the first fit; a second fit() goes on with the same state
            log_dir = Path(trainer.log_dir)  # every process asks (a collective under DDP)
            run = RunDirectory(log_dir, is_main=trainer.is_global_zero)
            self.core = GSRCore(
                self.reg, self.learn, self._plan, device=trainer.strategy.root_device,
                run=run, log_every=self.log_every or trainer.log_every_n_steps,
                smoothness_permutations=self.smoothness_permutations, rows_to_run=False)
        self._wrap(pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._unwrap()
            self.reg.check_deferred_finite()  # a run the Trainer ended (e.g. its max_steps)

    def _wrap(self, pl_module: pl.LightningModule) -> None:
        """Make the module's ``training_step`` return its loss plus the penalty."""
        if self._wrapped is not None:
            return
        own = pl_module.__dict__.get("training_step")  # an instance attribute, if any
        original = pl_module.training_step

        @functools.wraps(original)
        def training_step(batch, *args, **kwargs):
            return self._with_penalty(pl_module, original(batch, *args, **kwargs), batch)

        pl_module.training_step = training_step
        self._wrapped = (pl_module, own)

    def _unwrap(self) -> None:
        if self._wrapped is None:
            return
        pl_module, own = self._wrapped
        if own is None:
            del pl_module.training_step
        else:
            pl_module.training_step = own
        self._wrapped = None

    # ------------------------------------------------------------------ the step
    def _with_penalty(self, pl_module: pl.LightningModule, output, batch):
        """After the forward pass: refresh on schedule, then the loss plus the penalty."""
        if output is None:  # the module skipped this batch: nothing is trained
            self._pending = None
            return None
        loss = _loss_of(output)
        mask = batch_mask(self.mask_fn, batch)
        if self.core.start_step(mask):  # every learned layer stopped, nothing trained after
            pl_module.trainer.should_stop = True
            self._pending = None
            return None
        total = loss + sum(self.core.penalties(mask).values())
        self._pending = (loss.detach(), mask)
        return total if isinstance(output, torch.Tensor) else {**output, "loss": total}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.core.progress.done:  # a resumed run whose schedule had ended
            trainer.should_stop = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.core.progress.done:
            trainer.should_stop = True
            return -1  # Lightning: skip the rest of the epoch
        return None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._pending is None:
            return
        task_loss, mask = self._pending
        self._pending = None
        row = self.core.finish_step(task_loss, mask)  # statistics, row, reg.step(), advance
        if row is not None:
            flat = flat_metrics(row)
            for logger in trainer.loggers:
                logger.log_metrics(flat, step=row["step"])
        if self.core.progress.done:
            trainer.should_stop = True

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """:meth:`GSRCore.callback_state_dict <gsr_pyg.training.core.GSRCore.callback_state_dict>`
        (collective under DDP: Lightning asks every process)."""
        return {} if self.core is None else self.core.callback_state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            self.core.load_callback_state_dict(state_dict,
                                               "the checkpoint's GSRCallback state")

    def __repr__(self) -> str:
        layers = "; ".join(self.core.describe_layers()) if self.core is not None else ""
        return f"GSRCallback(schedule={self._plan!r}{', ' + layers if layers else ''})"

