"""GSR in a Hugging Face ``Trainer`` run (extra ``lm``).

Two pieces, because a ``TrainerCallback`` cannot change the loss:

* :class:`GSRCallback`, a ``TrainerCallback``: the regularizer, the learned graphs on a
  :class:`~gsr_pyg.training.LearningSchedule`, snapshots in ``args.output_dir``, metric rows,
  the state saved in each ``checkpoint-N`` folder (``gsr_state.pt``) and read back on resume;
* :class:`GSRLossMixin`, mixed into the ``Trainer`` class: its ``compute_loss`` adds the
  penalty of the batch (padded tokens left out by the batch's ``attention_mask``) to the
  model's loss while training, and its ``log`` adds the latest metric row to the Trainer's
  logs. :class:`RegularizedTrainer` is ``Trainer`` with the mixin.

Each step goes through :class:`gsr_pyg.training.core.GSRCore`, the per-step logic of
:class:`~gsr_pyg.training.GSRTrainer`.

Example::

    expose_activations(model)     # BERT's MLP activation becomes a hookable module
    reg = GraphSpectralRegularizer(model, {"bert.encoder.layer.1.intermediate."
                                           "intermediate_act_fn": graphs.grid(6, 6)},
                                   node_dim=-1, weight=0.1)
    trainer = RegularizedTrainer(model=model, args=args, train_dataset=dataset,
                                 callbacks=[GSRCallback(reg)])
    trainer.train()
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

try:
    import transformers
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
except ModuleNotFoundError as err:  # the optional extra
    raise ModuleNotFoundError(
        "gsr_pyg.integrations.huggingface needs transformers (and accelerate): pip install "
        "'gsr-pyg[lm]'") from err

from .._validation import describe
from ..files import atomic_write
from ..learn import CoactivationGraph
from ..regularizer import GraphSpectralRegularizer
from ..training.core import CallbackBase, GSRCore, flat_metrics
from ..training.rundir import RunDirectory, safe_load
from ..training.schedule import LearningSchedule

__all__ = ["GSRCallback", "GSRLossMixin", "RegularizedTrainer", "STATE_FILE"]

#: The callback's state in each checkpoint folder.
STATE_FILE = "gsr_state.pt"


class GSRCallback(CallbackBase, transformers.TrainerCallback):
    """Graph spectral regularization, learned graphs, snapshots and metrics in a ``Trainer``
    run; the ``Trainer`` must have :class:`GSRLossMixin` (e.g. :class:`RegularizedTrainer`).

    Args:
        reg: a :class:`~gsr_pyg.GraphSpectralRegularizer` built on the model the ``Trainer``
            trains (or one of its submodules).
        learn: mapping layer name -> :class:`~gsr_pyg.learn.CoactivationGraph`: the layers
            whose graphs are learned (they start edgeless).
        schedule: a :class:`~gsr_pyg.training.LearningSchedule` (default: the reference) when
            ``learn`` is given; training stops when it is done (or earlier, at the
            ``Trainer``'s own ``max_steps`` / epochs). A step is one optimizer step
            (``gradient_accumulation_steps`` must be 1). A ``Trainer`` cannot leave a batch
            untrained, so a schedule that can stop (``stop`` other than ``"never"``) needs
            ``after_stop_steps >= 1``.
        mask_key: the input that holds the padding mask (default ``"attention_mask"``: 1 on
            real tokens, 0 on padding), or None: every position is real.
        log_every: steps between metric rows (default: the steps at which the ``Trainer``
            logs, ``logging_steps``); a step that refreshes a graph always makes a row.
        smoothness_permutations: permutations of the logged smoothness ratio (0: not logged).

    Metrics: each row (:func:`gsr_pyg.training.core.metrics_row`) is in :attr:`history`, and
    the latest one joins the ``Trainer``'s next logs as ``gsr/task_loss``,
    ``gsr/<layer>/penalty``, ``.../weight``, ``.../edges``, ``.../components``,
    ``.../smoothness_ratio`` (so ``state.log_history`` and every ``report_to`` integration
    get them). Snapshots: ``<output_dir>/snapshots/<layer>/NNNN_step<S>.pt`` and ``.graphml``.
    """

    _started = "trained"

    def __init__(
        self,
        reg: GraphSpectralRegularizer,
        learn: Mapping[str, CoactivationGraph] | None = None,
        schedule: LearningSchedule | None = None,
        mask_key: str | None = "attention_mask",
        log_every: int | None = None,
        smoothness_permutations: int = 10,
    ):
        self._set_settings(reg, learn, schedule, log_every, smoothness_permutations)
        if (self.schedule is not None and self.schedule.stop != "never"
                and self.schedule.after_stop_steps == 0):
            raise ValueError(
                f"schedule has stop={self.schedule.stop!r} and after_stop_steps=0: the run "
                "would end at a step that must not be trained, which a Hugging Face Trainer "
                "cannot skip; give after_stop_steps >= 1 (the reference: 200) or "
                "stop='never'")
        if mask_key is not None and not isinstance(mask_key, str):
            raise TypeError(f"mask_key must be the name of an input (a str) or None, got "
                            f"{describe(mask_key)}")
        self.mask_key = mask_key
        self.resume_from: str | None = None  # set by GSRLossMixin.train
        self._pending = None  # (task loss, mask) between compute_loss and on_step_end
        self._latest_row: dict | None = None  # not yet in the Trainer's logs

    # ------------------------------------------------------------------ the run
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if args.gradient_accumulation_steps != 1:
            raise ValueError(f"GSRCallback counts one schedule step per optimizer step: "
                             f"gradient_accumulation_steps must be 1, got "
                             f"{args.gradient_accumulation_steps}")
        if args.n_gpu > 1:
            raise ValueError("GSRCallback needs one model per process (the regularizer's "
                             "hooks do not follow DataParallel's copies): launch with "
                             "torchrun for several GPUs")
        if model is not None and not any(m is self.reg.model for m in model.modules()):
            raise ValueError("reg regularizes a model that is not the Trainer's model nor "
                             "one of its submodules: build the regularizer on the model "
                             "given to the Trainer")
        if self.core is None:
            run = RunDirectory(Path(args.output_dir), is_main=state.is_world_process_zero)
            self.core = GSRCore(self.reg, self.learn, self._plan, device=args.device, run=run,
                                log_every=self.log_every or 1,
                                smoothness_permutations=self.smoothness_permutations,
                                rows_to_run=False)
        if self.resume_from is not None:
            self._load(Path(self.resume_from) / STATE_FILE)
            self.resume_from = None
        if self.core.progress.done:
            control.should_training_stop = True
        return control

    def add_penalty(self, loss: torch.Tensor, inputs: Mapping) -> torch.Tensor:
        """The loss of a training batch plus its penalty (after the forward pass: a graph
        refresh first when one is due). Called by :meth:`GSRLossMixin.compute_loss`."""
        if self.core is None:
            raise RuntimeError("GSRCallback was not started: give it to the Trainer "
                               "(callbacks=[...]) before train()")
        mask = inputs.get(self.mask_key) if self.mask_key is not None else None
        # a schedule that can stop has after-stop steps (checked above): never True here
        self.core.start_step(mask)
        total = loss + sum(self.core.penalties(mask).values())
        self._pending = (loss.detach(), mask)
        return total

    def on_step_end(self, args, state, control, **kwargs):
        if self._pending is None:  # the step's loss never went through add_penalty
            raise RuntimeError("GSRCallback: a training step ended without the penalty: the "
                               "Trainer must be a GSRLossMixin (RegularizedTrainer, or "
                               "class MyTrainer(GSRLossMixin, Trainer)), whose compute_loss "
                               "adds it")
        task_loss, mask = self._pending
        self._pending = None
        # rows at the Trainer's logging steps unless log_every says otherwise
        log = None if self.log_every is not None else bool(control.should_log)
        row = self.core.finish_step(task_loss, mask, log=log)
        if row is not None:
            self._latest_row = row
        if self.core.progress.done:
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.reg.check_deferred_finite()  # the last steps since the periodic check
        return control

    def pop_logs(self) -> dict[str, float]:
        """The latest metric row not yet logged, as flat ``gsr/...`` numbers."""
        row, self._latest_row = self._latest_row, None
        return flat_metrics(row) if row is not None else {}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """:meth:`GSRCore.callback_state_dict <gsr_pyg.training.core.GSRCore.callback_state_dict>`
        (collective under torchrun)."""
        return self.core.callback_state_dict()

    def on_save(self, args, state, control, **kwargs):
        state_dict = self.state_dict()  # every process: the per-rank parts are gathered
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            atomic_write(folder / STATE_FILE, lambda tmp: torch.save(state_dict, tmp))
        return control

    def _load(self, path: Path) -> None:
        if not path.exists():
            raise ValueError(f"checkpoint {str(path.parent)!r} has no {STATE_FILE}: it was not "
                             "written by a Trainer with GSRCallback")
        self.core.load_callback_state_dict(safe_load(path, "GSR state"), repr(str(path)))


class GSRLossMixin:
    """Mix into a ``transformers.Trainer`` subclass (before ``Trainer``) to add the penalty of
    its :class:`GSRCallback` to the training loss and its metrics to the logs::

        class MyTrainer(GSRLossMixin, transformers.Trainer):
            ...

    Evaluation losses (the model in eval mode) are the model's own, without the penalty.
    """

    def gsr_callback(self) -> GSRCallback:
        """The :class:`GSRCallback` among the Trainer's callbacks."""
        found = [cb for cb in self.callback_handler.callbacks if isinstance(cb, GSRCallback)]
        if len(found) != 1:
            raise ValueError(f"a Trainer with GSRLossMixin needs exactly one GSRCallback in "
                             f"callbacks=[...], found {len(found)}")
        return found[0]

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """``Trainer.train``; a resumed run reads the callback's state from the checkpoint."""
        path = resume_from_checkpoint
        if path is True:
            path = get_last_checkpoint(self.args.output_dir)
            if path is None:
                raise ValueError(f"resume_from_checkpoint=True but {self.args.output_dir!r} "
                                 "holds no checkpoint-N folder")
        if path not in (None, False):
            self.gsr_callback().resume_from = os.fspath(path)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        if not model.training:  # an evaluation loss: the model's own
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        **kwargs)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        total = self.gsr_callback().add_penalty(loss, inputs)
        return (total, outputs) if return_outputs else total

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:  # a training log: the latest metric row joins it
            logs = {**logs, **self.gsr_callback().pop_logs()}
        super().log(logs, *args, **kwargs)


class RegularizedTrainer(GSRLossMixin, transformers.Trainer):
    """``transformers.Trainer`` with :class:`GSRLossMixin`: give it a :class:`GSRCallback`
    in ``callbacks``."""
