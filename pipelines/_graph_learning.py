"""What the learned-graph pipelines share: how a graph over the latent neurons of the
reference autoencoder is learned (the two presets and the options that override them), the
training itself, the evaluation of the trained model and the figure of the graph over
training.

The presets, in one place (``docs/single_cell.md`` and ``pipelines/learned_graph.py`` describe
them):

* ``reference``: the original method. 5,000 warm-up steps, then a kNN graph (k=5, euclidean)
  from the current batch of 32 every 100 steps, stop at the first graph that falls apart
  (>= 2 connected components), 200 more steps on the last connected graph.
* ``recommended``: this library's defaults. 2,000 warm-up steps, then a graph every 64 steps
  from the correlation of the latent neurons over the 64 x 32 = 2,048 samples seen since the
  previous graph (``CoactivationGraph.recommended()``: kNN, k=5), no early stop, 2,000
  learning steps.

Both: Adam 1e-3, batch 32, penalty weight 1e-3 with the normalized Laplacian. ``--quick``
shortens either schedule to :data:`QUICK_SCHEDULE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch_geometric.data import Data

from gsr_pyg import metrics, plotting, readouts
from gsr_pyg.learn import CoactivationGraph
from gsr_pyg.models import DenseAutoencoder
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.training import GSRTrainer, History, LearningSchedule

from ._cli import non_negative_float, option, positive_int
from ._runtime import RunSettings, fit_timed

#: The two presets. ``learner`` names a ``CoactivationGraph`` constructor.
PRESETS: dict[str, dict] = {
    "reference": {"warmup_steps": 5000, "refresh_every": 100, "max_learning_steps": 5000,
                  "after_stop_steps": 200, "stop": "disconnected", "learner": "reference",
                  "batch_size": 32, "lr": 1e-3, "weight": 1e-3},
    "recommended": {"warmup_steps": 2000, "refresh_every": 64, "max_learning_steps": 2000,
                    "after_stop_steps": 0, "stop": "never", "learner": "recommended",
                    "batch_size": 32, "lr": 1e-3, "weight": 1e-3},
}
#: ``--quick``: the schedule of either preset, shortened (explicit options still win;
#: ``after_stop_steps`` only for a preset that stops).
QUICK_SCHEDULE = {"warmup_steps": 300, "refresh_every": 50, "learning_steps": 300,
                  "after_stop_steps": 50}
#: How a learned graph is cut into neuron modules (:func:`gsr_pyg.readouts.extract_modules`).
MODULE_METHODS = ("louvain", "spectral", "components")
LAYER = "latent"
HIDDEN = (128, 128, 128)
CHECKPOINT_EVERY = 1000
LOG_EVERY = 100

# option -> (help, type) of the options that override a preset (the settings field has the
# option's name; ``learning_steps`` sets the preset's ``max_learning_steps``)
_OVERRIDES = {
    "warmup_steps": (None, int),
    "refresh_every": (None, positive_int),
    "learning_steps": ("at most this many learning steps", positive_int),
    "weight": ("penalty weight (default 1e-3)", non_negative_float),
    "lr": ("Adam learning rate (default 1e-3)", non_negative_float),
    "batch_size": ("batch size (default 32)", positive_int),
}


def override_option(name: str, group: str):
    """The settings field of option ``--<name>``, which overrides the presets' value (None:
    the preset's)."""
    help_text, kind = _OVERRIDES[name]
    return option(None, help_text, type=kind, group=group)


@dataclass(frozen=True)
class GraphLearningSettings(RunSettings):
    """What the settings of both learned-graph pipelines share besides the override options
    (each pipeline declares those with :func:`override_option`, where its --help lists
    them): ``after_stop_steps`` and the check of ``--warmup-steps``."""

    #: steps after the stop rule fired, for a preset that stops (None: the preset's; not an
    #: option: ``--quick`` shortens it)
    after_stop_steps: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")


def preset_settings(preset: str, settings) -> dict:
    """The preset's schedule and optimiser, with what ``settings`` sets over it (the quick
    schedule or explicit options); ``after_stop_steps`` only changes a preset that stops."""
    resolved = dict(PRESETS[preset])
    given = {"warmup_steps": settings.warmup_steps, "refresh_every": settings.refresh_every,
             "max_learning_steps": settings.learning_steps, "weight": settings.weight,
             "lr": settings.lr, "batch_size": settings.batch_size}
    if resolved["stop"] != "never":
        given["after_stop_steps"] = settings.after_stop_steps
    resolved.update({key: value for key, value in given.items() if value is not None})
    return resolved


def build_learning(preset: dict) -> tuple[LearningSchedule, CoactivationGraph]:
    """The schedule and graph learner of a preset's settings."""
    schedule = LearningSchedule(
        warmup_steps=preset["warmup_steps"], refresh_every=preset["refresh_every"],
        max_learning_steps=preset["max_learning_steps"],
        after_stop_steps=preset["after_stop_steps"], stop=preset["stop"],
        normalization="sym")
    learner = getattr(CoactivationGraph, preset["learner"])()
    return schedule, learner


@dataclass
class TrainedModel:
    """A trained autoencoder, its final neuron graph and how the training went."""

    model: DenseAutoencoder
    graph: Data
    history: History
    summary: dict  # the trainer's summary of the latent layer
    steps: int
    train_time: float


def train_autoencoder(x: torch.Tensor, preset: dict, *, latent_dim: int, noise_std: float,
                      seed: int, device: torch.device, run_dir: Path, config: dict,
                      quiet: bool, drop_last: bool = False) -> TrainedModel:
    """Train the reference autoencoder on ``x`` while its latent graph is learned with
    ``preset`` (resuming ``run_dir``). Under torchrun every process calls this."""
    torch.manual_seed(seed)
    model = DenseAutoencoder(x.shape[1], hidden=HIDDEN, latent_dim=latent_dim,
                             noise_std=noise_std)
    reg = GraphSpectralRegularizer(model, {LAYER: latent_dim}, weight=preset["weight"])
    schedule, learner = build_learning(preset)
    optimizer = torch.optim.Adam(model.parameters(), lr=preset["lr"])
    loader = DataLoader(TensorDataset(x), batch_size=preset["batch_size"],
                        shuffle=True, drop_last=drop_last)
    trainer = GSRTrainer(
        model, reg, optimizer, F.mse_loss, schedule=schedule, learn={LAYER: learner},
        run_dir=run_dir, checkpoint_every=CHECKPOINT_EVERY, log_every=LOG_EVERY,
        smoothness_permutations=0, seed=seed, device=device, verbose=not quiet, config=config)
    train_time = fit_timed(trainer, loader, run_dir)
    graph = reg.graph(LAYER).cpu()
    reg.detach()
    return TrainedModel(model, graph, trainer.history, trainer.summary()[LAYER], trainer.step,
                        train_time)


@torch.no_grad()
def encode(model: DenseAutoencoder, x: torch.Tensor,
           device: torch.device) -> tuple[torch.Tensor, float]:
    """The latent code of ``x`` (no noise; on the CPU) and the reconstruction MSE."""
    model.eval()
    x = x.to(device)
    latent = model.encode(x)
    mse = float(F.mse_loss(model.decode(latent), x))
    return latent.cpu(), mse


def graph_evolution_figure(history: History, layout: torch.Tensor, modules: torch.Tensor,
                           num_modules: int, colorbar_label: str, prefix: str,
                           path: Path) -> Path | None:
    """The learned graph over training in one layout, neurons coloured by ``modules`` (one
    categorical colour for each of ``num_modules``, named ``"<prefix> m"``); None when no
    graph was learned."""
    snapshots = history.layer_snapshots(LAYER)
    if not snapshots:
        return None
    fig = plotting.plot_graph_evolution(
        snapshots, layouts=layout, signal=modules.float(),
        cmap=plotting.module_colormap(num_modules), colorbar_label=colorbar_label)
    plotting.label_module_colorbar(fig, num_modules, prefix)
    return plotting.save_figure(fig, path)


def module_analysis(graph: Data, inputs: torch.Tensor, latent: torch.Tensor, *, seed: int,
                    module_method: str = "louvain", num_modules: int | None = None,
                    min_loading: float = 0.2, relative_loading: float = 0.9) -> dict:
    """What both pipelines read from a trained model on held-out ``inputs``: the neuron
    modules of the graph, the neuron x feature correlations, the feature modules with the
    feature module and sign each neuron module carries
    (:func:`gsr_pyg.readouts.graph_feature_modules`), the loadings on the neuron modules
    and the feature graph through them, and the baselines computed from the inputs alone
    (:func:`gsr_pyg.readouts.feature_module_baselines`)."""
    neurons = metrics.neuron_modules(graph, module_method, k=num_modules, seed=seed)
    correlations = metrics.feature_correlations(inputs, latent)  # [N, F]
    loadings = readouts.module_loadings(correlations, neurons)
    return {"neurons": neurons, "correlations": correlations, "loadings": loadings,
            "features": readouts.graph_feature_modules(correlations, neurons),
            "argmax": loadings.assignment,
            "feature_graph": readouts.feature_graph(loadings.loadings, min_loading,
                                                    relative_loading),
            "baselines": readouts.feature_module_baselines(inputs, seed=seed)}


def carried_table(features: readouts.FeatureModules,
                  neuron_counts: torch.Tensor) -> list[dict]:
    """One row per neuron module: its neurons, the feature module it carries (None for
    none), the sign and the strength."""
    rows = []
    for index, module in enumerate(features.neuron_modules.tolist()):
        carried = int(features.carried[index])
        rows.append({"neuron_module": module, "neurons": int(neuron_counts[index]),
                     "feature_module": carried if carried >= 0 else None,
                     "sign": "+" if features.sign[index] > 0 else
                     "-" if features.sign[index] < 0 else "",
                     "strength": round(float(features.strength[index]), 4)})
    return rows
