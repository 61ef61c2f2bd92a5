"""GSR inside the training loops people already use (optional extras, imported on demand).

* :mod:`gsr_pyg.integrations.lightning`: :class:`~gsr_pyg.integrations.lightning.GSRCallback`,
  a PyTorch Lightning ``Callback`` (extra ``lightning``).
* :mod:`gsr_pyg.integrations.huggingface`: a Hugging Face ``TrainerCallback`` and the
  ``compute_loss`` mixin that adds the penalty (extra ``lm``).

Both train through :class:`gsr_pyg.training.core.GSRCore`, the per-step logic of
:class:`~gsr_pyg.training.GSRTrainer`: the same schedule, graph refresh, stop rule,
snapshots and metric rows. Importing this package imports neither Lightning nor
transformers.
"""
