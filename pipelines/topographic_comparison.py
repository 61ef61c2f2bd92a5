r"""Topographic objectives head to head: task cost against structure on the same units and sheet.

Three objectives put the units of a layer on a sheet (a graph), each in its own way:

* ``laplacian`` (GSR): :math:`s \cdot \mathrm{mean}_b\, a_b^\top L a_b` on the activations,
  and its scale-free form ``laplacian_rayleigh``: :math:`s \cdot \mathrm{mean}_b\,
  a_b^\top L a_b / a_b^\top a_b` (``rayleigh=True``), which shrinking the activations
  cannot lower;
* ``spatial_correlation`` (TDANN, TopoLM): :math:`s \cdot \tfrac12 (1 - \mathrm{corr}(r_{ij},
  1/(d_{ij} + 1)))`, response correlation against closeness over pairs of units;
* ``weight_smoothness`` (after TopoLoss): :math:`s \cdot \mathrm{tr}(W^\top L W)` on the
  units' incoming weights.

Each objective is trained at three strengths :math:`s`, beside a run without any
(``none``), from the same initial model, batch order and seed; and ``layout`` is the ``none``
run with its units placed on the sheet by a permutation (:mod:`gsr_pyg.layout`), which
computes the same function with no training: how much order a free permutation finds. Two
tasks:

* ``mnist``: the reference MNIST classifier (:class:`gsr_pyg.models.MNISTClassifier`), its
  64-unit dense layer on the 8x8 grid; the last ``--validation-images`` of MNIST's training
  images are held out for validation; task cost: error rate (%);
* ``text``: a character-level causal transformer (:class:`gsr_pyg.models.CharTransformer`,
  2 blocks) trained from scratch on the docstrings of the Python standard library
  (:mod:`gsr_pyg.data.text`, whole modules held out for validation and test); the 256 MLP
  units of its last block on a 16x16 grid, every real token a sample (``node_dim=-1``,
  padding masked); task cost: bits per character.

Structure is measured on held-out data, on the units' activations (also for
``weight_smoothness``, which only touches weights): the group-mean maps (per digit class;
per character class of the input token: space, newline, vowel, consonant, upper case, digit,
punctuation and other) minus the global mean map, their mean Moran's I on the sheet
(higher: smoother) and smoothness ratio (Dirichlet energy against shuffled units, 1 = no
order, lower: smoother), and the smoothness ratio of the units' activations over all
held-out samples (``unit_smoothness_ratio``).

Choice on validation, report on test: for each objective the run with the highest
validation Moran's I among those whose validation cost is at most the ``none`` run's plus
``--max-accuracy-drop`` (MNIST, in points) or ``--max-bpc-increase`` (text) is marked
``chosen``; test numbers are reported for every run.

    python -m pipelines.topographic_comparison --quick     # a few minutes on 2 cores
    python -m pipelines.topographic_comparison             # the documented run

Written to ``--out``: ``results.csv`` / ``results.json`` (one row per task, objective and
strength; ``results.json`` also holds the settings, the corpus fingerprint and the chosen
runs), ``tradeoff.png`` (task cost against Moran's I and smoothness ratio, one line per
objective), ``maps_<task>.png`` (the centred group maps of ``none`` and each objective's
chosen run), ``report.html``, and one run directory per run under ``runs/<task>/`` (a
second call resumes and skips finished runs).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch_geometric.data import Data

from gsr_pyg import graphs, layout, plotting, readouts
from gsr_pyg.capture import ActivationCapture
from gsr_pyg.data.text import (
    CharVocabulary,
    corpus_fingerprint,
    encode_chunks,
    split_by_module,
    stdlib_docstrings,
    text_chunks,
)
from gsr_pyg.metrics import smoothness_ratio
from gsr_pyg.models import CharTransformer, MNISTClassifier
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.report import write_html_report
from gsr_pyg.training import GSRTrainer

from ._cli import non_negative_float, option, positive_int, report_command, run_cli, run_command
from ._mnist import MnistRunSettings, classifier_outputs, load_mnist_subsets, out_option
from ._runtime import (
    choose_on_validation,
    fit_timed,
    format_strength,
    pipeline_run,
    training_steps,
    write_results,
)

TASKS = ("mnist", "text")
OBJECTIVES = ("none", "layout", "laplacian", "laplacian_rayleigh", "spatial_correlation",
              "weight_smoothness")
#: strengths per task and objective when not given: weak, middle, strong (chosen so that the
#: strongest costs the task something visible; see docs/results.md)
DEFAULT_STRENGTHS = {
    "mnist": {"laplacian": [1e-3, 1e-2, 1e-1], "laplacian_rayleigh": [1e-2, 1e-1, 1.0],
              "spatial_correlation": [1.0, 10.0, 100.0],
              "weight_smoothness": [1e-3, 1e-2, 1e-1]},
    "text": {"laplacian": [1e-4, 1e-3, 1e-2], "laplacian_rayleigh": [1e-2, 1e-1, 1.0],
             "spatial_correlation": [0.1, 1.0, 10.0],
             "weight_smoothness": [1e-3, 1e-2, 1e-1]},
}
OBJ, MNIST, TEXT = "tasks and objectives", "MNIST classifier", "character transformer"
CHAR_GROUPS = ("space", "newline", "vowel", "consonant", "upper case", "digit",
               "punctuation and other")
RESULT_COLUMNS = ["task", "objective", "strength", "validation_cost", "test_cost",
                  "test_loss", "validation_morans_i", "test_morans_i", "test_smoothness_ratio",
                  "test_unit_smoothness_ratio", "chosen", "train_time_s", "steps"]
EVAL_BATCH = {"mnist": 1000, "text": 128}
LAYOUT_SAMPLES = {"mnist": 10000, "text": 500}  # training images / sequences
MAX_UNIT_SAMPLES = 5000
SMOOTHNESS_PERMUTATIONS = 100


@dataclass(frozen=True)
class TopographicComparisonSettings(MnistRunSettings):
    """The documented run by default; :meth:`quick` is a short run on subsets."""

    prog: ClassVar[str] = "python -m pipelines.topographic_comparison"
    description: ClassVar[str] = (
        "Train an MNIST classifier and a character-level transformer with no topographic "
        "objective, the Laplacian penalty (GSR, plain and scale-free), the spatial correlation "
        "loss and weight smoothness at three strengths each; compare held-out task cost "
        "against structure.")

    tasks: list[str] = option(list(TASKS), "which tasks to run (default both)", nargs="+",
                              choices=TASKS, group=OBJ)
    objectives: list[str] = option(list(OBJECTIVES), "which objectives to run (default all; "
                                   "layout needs none)", nargs="+", choices=OBJECTIVES,
                                   group=OBJ)
    laplacian_strengths: list[float] | None = option(
        None, "strengths of the Laplacian penalty (default: mnist 1e-3 1e-2 1e-1, text "
        "1e-4 1e-3 1e-2)",
        type=non_negative_float, nargs="+", metavar="S", group=OBJ)
    rayleigh_strengths: list[float] | None = option(
        None, "strengths of the scale-free Laplacian penalty (default 0.01 0.1 1)",
        type=non_negative_float, nargs="+", metavar="S", group=OBJ)
    spatial_strengths: list[float] | None = option(
        None, "strengths of the spatial correlation loss (default: mnist 1 10 100, "
        "text 0.1 1 10)",
        type=non_negative_float, nargs="+", metavar="S", group=OBJ)
    weight_strengths: list[float] | None = option(
        None, "strengths of weight smoothness (default 1e-3 1e-2 1e-1)",
        type=non_negative_float, nargs="+", metavar="S", group=OBJ)
    validation_images: int = option(10000, "MNIST training images held out for validation, "
                                    "from the end (default 10000; --quick: 2000)",
                                    type=positive_int, group=MNIST)
    mnist_epochs: int = option(2, "MNIST epochs per run (default 2; --quick: 1)",
                               type=positive_int, group=MNIST)
    mnist_batch_size: int = option(128, "MNIST batch size (default 128)", type=positive_int,
                                   group=MNIST)
    mnist_lr: float = option(1e-3, "MNIST Adam learning rate (default 1e-3)",
                             type=non_negative_float, group=MNIST)
    text_steps: int = option(1500, "transformer training steps per run (default 1500; "
                             "--quick: 200)", type=positive_int, group=TEXT)
    text_batch_size: int = option(32, "transformer batch size in sequences (default 32)",
                                  type=positive_int, group=TEXT)
    text_lr: float = option(1e-3, "transformer Adam learning rate (default 1e-3)",
                            type=non_negative_float, group=TEXT)
    context: int = option(64, "characters per training sequence (default 64)",
                          type=positive_int, group=TEXT)
    eval_sequences: int | None = option(None, "evaluate the transformer on the first N held-out "
                                        "sequences of each part only (default all; --quick: "
                                        "300)", type=positive_int, metavar="N", group=TEXT)
    spatial_pairs: int = option(4096, "pairs of units per step of the spatial correlation "
                                "loss on the transformer's 256 units (default 4096; the 64 "
                                "MNIST units use all 2016 pairs)", type=positive_int, group=TEXT)
    max_accuracy_drop: float = option(0.5, "MNIST: a run may be chosen when its validation "
                                      "accuracy is at most this many points below none's "
                                      "(default 0.5)", type=non_negative_float, group=MNIST)
    max_bpc_increase: float = option(0.05, "text: a run may be chosen when its validation "
                                     "bits per character exceed none's by at most this "
                                     "(default 0.05)", type=non_negative_float, group=TEXT)
    out: str = out_option("runs/topographic_comparison")

    def __post_init__(self) -> None:
        super().__post_init__()
        if "layout" in self.objectives and "none" not in self.objectives:
            raise ValueError("objectives: layout places the units of the run without an "
                             "objective, so it needs none too")

    @classmethod
    def quick(cls) -> TopographicComparisonSettings:
        """A short run on subsets: the trend, not the numbers."""
        return cls(train_subset=8000, validation_images=2000, test_subset=2000, mnist_epochs=1,
                   text_steps=200, eval_sequences=300)

    def strengths(self, task: str, objective: str) -> list[float]:
        """The strengths of ``objective`` on ``task`` (``[0.0]`` for ``none`` and ``layout``)."""
        if objective in ("none", "layout"):
            return [0.0]
        given = {"laplacian": self.laplacian_strengths,
                 "laplacian_rayleigh": self.rayleigh_strengths,
                 "spatial_correlation": self.spatial_strengths,
                 "weight_smoothness": self.weight_strengths}[objective]
        return sorted(set(given if given is not None else DEFAULT_STRENGTHS[task][objective]))


# --------------------------------------------------------------------------- the two tasks
@dataclass
class Evaluation:
    """A trained model on one held-out part: task cost (lower is better), task loss, the
    units' activations ``[S, N]`` of every real sample and each sample's group."""

    cost: float
    loss: float
    samples: torch.Tensor
    groups: torch.Tensor


@dataclass
class Task:
    """What differs between the tasks; the runs, the metrics and the outputs do not."""

    name: str
    sheet: Data                       # the units' graph, with positions
    grid_shape: tuple[int, int]
    activation_layer: str             # whose activations the activation objectives read
    weight_layer: str                 # whose incoming weights weight smoothness reads
    reading_layer: str                # the layer that reads the units (for a layout)
    node_dim: int
    num_pairs: int | None             # pairs per step of the spatial correlation loss
    make_model: Callable[[], nn.Module]
    loader: DataLoader
    loss_fn: Callable
    mask_fn: Callable | None
    max_steps: int
    lr: float
    held_out: dict[str, tuple[torch.Tensor, torch.Tensor]]   # part -> (inputs, targets)
    layout_data: tuple[torch.Tensor, torch.Tensor]   # training samples a layout is fitted on
    evaluate: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.device], Evaluation]
    group_names: list[str]
    cost_label: str
    max_cost_increase: float          # the choice's tolerance on validation, in cost units
    description: str
    facts: dict                       # the data's sizes (and the corpus) for results.json


def mnist_task(settings: TopographicComparisonSettings) -> Task:
    """The reference classifier's 64-unit layer on the 8x8 grid; validation images are the
    last ``validation_images`` training images."""
    split = load_mnist_subsets(settings, settings.validation_images)
    train_x, train_y = split.train_images, split.train_labels
    held_out = {"validation": (split.validation_images, split.validation_labels),
                "test": (split.test_images, split.test_labels)}
    _, max_steps = training_steps(train_x.shape[0], settings.mnist_batch_size,
                                  settings.mnist_epochs)
    return Task(
        name="mnist", sheet=graphs.grid(8, 8), grid_shape=(8, 8),
        activation_layer=MNISTClassifier.gsr_layer,
        weight_layer=f"{MNISTClassifier.gsr_layer}.0",
        reading_layer="classifier", node_dim=1,
        num_pairs=None, make_model=MNISTClassifier,
        loader=DataLoader(TensorDataset(train_x, train_y),
                          batch_size=settings.mnist_batch_size, shuffle=True),
        loss_fn=F.cross_entropy, mask_fn=None, max_steps=max_steps, lr=settings.mnist_lr,
        held_out=held_out, layout_data=(train_x[:LAYOUT_SAMPLES["mnist"]],
                                        train_y[:LAYOUT_SAMPLES["mnist"]]),
        evaluate=evaluate_classifier,
        group_names=[f"digit {c}" for c in range(10)], cost_label="test error (%)",
        max_cost_increase=settings.max_accuracy_drop,
        description=(f"MNIST: {train_x.shape[0]} training, {held_out['validation'][0].shape[0]} "
                     f"validation, {held_out['test'][0].shape[0]} test images; "
                     f"{settings.mnist_epochs} epoch(s), batch {settings.mnist_batch_size}, "
                     f"Adam lr {settings.mnist_lr:g}; the 64 units of the dense layer on the "
                     f"8x8 grid."),
        facts={part: int(x.shape[0]) for part, x in
               (("train", train_x), *((p, v[0]) for p, v in held_out.items()))})


def next_character_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) over the real positions (targets ``-100`` are padding)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def real_tokens(batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """The padding mask ``[B, T]`` of a batch ``(inputs, targets)``: True on real tokens."""
    return batch[0] != CharVocabulary.pad_id


def text_task(settings: TopographicComparisonSettings) -> Task:
    """The character transformer's last MLP (256 units) on a 16x16 grid; and the corpus."""
    docs = stdlib_docstrings()
    parts = dict(zip(("train", "validation", "test"), split_by_module(docs)))
    vocab = CharVocabulary()
    encoded = {name: encode_chunks(text_chunks(part, settings.context + 1), vocab,
                                   settings.context) for name, part in parts.items()}
    held_out = {name: tuple(t[:settings.eval_sequences] for t in encoded[name])
                for name in ("validation", "test")}
    facts = {"corpus_fingerprint": corpus_fingerprint(docs), "docstrings": len(docs),
              **{f"{name}_modules": sorted({d.module for d in part})
                 for name, part in parts.items() if name != "train"},
              **{f"{name}_characters": int((encoded[name][1] != -100).sum())
                 for name in parts}}

    def make_model() -> CharTransformer:
        return CharTransformer(len(vocab), context=settings.context)

    model = make_model()
    train_x, train_y = encoded["train"]
    return Task(
        name="text", sheet=graphs.grid(16, 16), grid_shape=(16, 16),
        activation_layer=model.gsr_layer, weight_layer=model.weight_layer,
        reading_layer=model.weight_layer.replace("linear1", "linear2"), node_dim=-1,
        num_pairs=settings.spatial_pairs, make_model=make_model,
        loader=DataLoader(TensorDataset(train_x, train_y), batch_size=settings.text_batch_size,
                          shuffle=True),
        loss_fn=next_character_loss, mask_fn=real_tokens, max_steps=settings.text_steps,
        lr=settings.text_lr, held_out=held_out,
        layout_data=(train_x[:LAYOUT_SAMPLES["text"]], train_y[:LAYOUT_SAMPLES["text"]]),
        evaluate=evaluate_language_model,
        group_names=list(CHAR_GROUPS), cost_label="test bits per character",
        max_cost_increase=settings.max_bpc_increase,
        description=(f"Text: docstrings of {len(docs)} standard-library objects (corpus "
                     f"{facts['corpus_fingerprint']}), {facts['train_characters']} training, "
                     f"{facts['validation_characters']} validation and "
                     f"{facts['test_characters']} test characters (whole modules held "
                     f"out), sequences of {settings.context}; {settings.text_steps} steps, "
                     f"batch {settings.text_batch_size}, Adam lr {settings.text_lr:g}; the "
                     f"256 MLP units of the last block on a 16x16 grid."),
        facts=facts)


def evaluate_classifier(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor,
                        device: torch.device) -> Evaluation:
    """Error rate (%), cross-entropy and the grid units of every image, grouped by class."""
    logits, units = classifier_outputs(model, images, device, EVAL_BATCH["mnist"])
    labels = labels.to(device)
    error = 100.0 * float((logits.argmax(dim=1) != labels).double().mean())
    return Evaluation(error, float(F.cross_entropy(logits, labels)), units, labels)


def character_groups(inputs: torch.Tensor) -> torch.Tensor:
    """The group (index into :data:`CHAR_GROUPS`) of every input character id."""
    vocab = CharVocabulary()
    table = torch.full((len(vocab),), len(CHAR_GROUPS) - 1, dtype=torch.long)
    for index, char in enumerate(vocab.chars, start=2):
        if char == " ":
            table[index] = 0
        elif char == "\n":
            table[index] = 1
        elif char in "aeiou":
            table[index] = 2
        elif char.islower():
            table[index] = 3
        elif char.isupper():
            table[index] = 4
        elif char.isdigit():
            table[index] = 5
    return table.to(inputs.device)[inputs]


@torch.no_grad()
def evaluate_language_model(model: CharTransformer, inputs: torch.Tensor,
                            targets: torch.Tensor, device: torch.device) -> Evaluation:
    """Bits per character, cross-entropy (nats) and the MLP units of every real token,
    grouped by the class of the input character."""
    model.eval()
    total, count, units, groups = 0.0, 0, [], []
    with ActivationCapture(model, [model.gsr_layer], node_dim=-1) as capture:
        for start in range(0, inputs.shape[0], EVAL_BATCH["text"]):
            x = inputs[start:start + EVAL_BATCH["text"]].to(device)
            y = targets[start:start + EVAL_BATCH["text"]].to(device)
            logits = model(x)
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                           ignore_index=-100, reduction="sum"))
            count += int((y != -100).sum())
            mask = x != model.pad_id
            units.append(capture.samples(model.gsr_layer, mask))
            groups.append(character_groups(x[mask]))
    loss = total / count
    return Evaluation(loss / math.log(2), loss, torch.cat(units), torch.cat(groups))


# --------------------------------------------------------------------------- one run
def make_regularizer(task: Task, model: nn.Module, objective: str,
                     strength: float) -> GraphSpectralRegularizer:
    """The run's objective on the task's sheet (``none``: the Laplacian penalty at weight 0,
    which the trainer needs and which computes nothing)."""
    if objective == "weight_smoothness":
        return GraphSpectralRegularizer(model, {task.weight_layer: task.sheet}, weight=strength,
                                        objective=objective)
    if objective == "spatial_correlation":
        options = {"objective": objective, "num_pairs": task.num_pairs}
    else:  # the Laplacian penalty: none (weight 0), plain, or divided by a^T a
        options = {"rayleigh": objective == "laplacian_rayleigh"}
    return GraphSpectralRegularizer(
        model, {task.activation_layer: task.sheet}, node_dim=task.node_dim,
        weight=0.0 if objective == "none" else strength, **options)


def train_run(task: Task, objective: str, strength: float,
              settings: TopographicComparisonSettings, device: torch.device,
              out: Path) -> tuple[nn.Module, dict]:
    """Train one objective at one strength (resuming its run directory): the model and the
    row's training fields."""
    torch.manual_seed(settings.seed)  # every run starts from the same initial model
    model = task.make_model()
    reg = make_regularizer(task, model, objective, strength)
    tag = "none" if objective == "none" else f"{objective}_s{format_strength(strength)}"
    run_dir = out / "runs" / task.name / tag
    trainer = GSRTrainer(
        model, reg, torch.optim.Adam(model.parameters(), lr=task.lr), task.loss_fn,
        max_steps=task.max_steps, run_dir=run_dir,
        checkpoint_every=min(500, task.max_steps), log_every=max(1, min(50, task.max_steps // 20)),
        smoothness_permutations=0, seed=settings.seed, device=device,
        verbose=not settings.quiet, mask_fn=task.mask_fn,
        config={"pipeline": "topographic_comparison", "task": task.name,
                "objective": objective, "strength": strength, "max_steps": task.max_steps,
                "lr": task.lr, "batch_size": task.loader.batch_size,
                "train_samples": len(task.loader.dataset),
                # a resumed run must see the same text: the corpus is the Python version's
                **({"context": settings.context, "corpus": task.facts["corpus_fingerprint"]}
                   if task.name == "text" else {}),
                **({"spatial_pairs": task.num_pairs}
                   if objective == "spatial_correlation" and task.num_pairs else {})},
    )
    train_time = fit_timed(trainer, task.loader, run_dir)
    reg.detach()
    return model, {"task": task.name, "objective": objective, "strength": strength,
                   "train_time_s": train_time, "steps": trainer.step}


def layout_run(task: Task, none_model: nn.Module, settings: TopographicComparisonSettings,
               device: torch.device) -> tuple[nn.Module, dict]:
    """The run without an objective with its units placed on the sheet by a permutation
    (:func:`gsr_pyg.layout.fit_layout` on training samples, applied by
    :func:`gsr_pyg.layout.permute_hidden`): the same function, so the same task cost; how
    much order a free permutation finds without any training."""
    started = time.perf_counter()
    model = copy.deepcopy(none_model)
    units = task.evaluate(model, *task.layout_data, device).samples
    perm = layout.fit_layout(units, task.sheet.to(units.device), seed=settings.seed)
    layout.permute_hidden(model.get_submodule(task.weight_layer),
                          model.get_submodule(task.reading_layer), perm)
    return model, {"task": task.name, "objective": "layout", "strength": 0.0,
                   "train_time_s": time.perf_counter() - started, "steps": 0}


def map_order(evaluation: Evaluation, task: Task, seed: int) -> readouts.ClassMapOrder:
    """The group-mean maps minus the global mean map and their mean Moran's I and smoothness
    ratio on the sheet."""
    return readouts.class_map_order(evaluation.samples, evaluation.groups,
                                    task.sheet.to(evaluation.samples.device),
                                    num_classes=len(task.group_names),
                                    num_permutations=SMOOTHNESS_PERMUTATIONS, seed=seed)


def evaluate_run(task: Task, model: nn.Module, row: dict, device: torch.device,
                 seed: int) -> torch.Tensor:
    """Fill the row's held-out fields: costs, the order of the group maps (validation: the
    Moran's I the choice needs), and the smoothness ratio of the units over (up to 5,000
    evenly spaced) test samples; returns the centred test maps."""
    validation = task.evaluate(model, *task.held_out["validation"], device)
    test = task.evaluate(model, *task.held_out["test"], device)
    found = map_order(test, task, seed)
    step = max(1, test.samples.shape[0] // MAX_UNIT_SAMPLES)
    unit_ratio = smoothness_ratio(test.samples[::step], task.sheet.to(test.samples.device),
                                  num_permutations=SMOOTHNESS_PERMUTATIONS, seed=seed)
    row.update(validation_cost=validation.cost, test_cost=test.cost, test_loss=test.loss,
               validation_morans_i=map_order(validation, task, seed).morans_i,
               test_morans_i=found.morans_i, test_smoothness_ratio=found.smoothness_ratio,
               test_unit_smoothness_ratio=unit_ratio, chosen=False)
    return found.centred


def mark_chosen(rows: list[dict], task: Task) -> dict[str, dict | None]:
    """For each objective, the run with the highest validation Moran's I among those whose
    validation cost is at most ``none``'s plus the task's tolerance (marked ``chosen``;
    None when no strength is within it). Nothing is chosen when ``none`` was not run."""
    return choose_on_validation(
        rows, "objective", "none",
        lambda row, base: row["validation_cost"] <= base["validation_cost"]
        + task.max_cost_increase)


# --------------------------------------------------------------------------- the run
def run(settings: TopographicComparisonSettings, command: str | None = None) -> Path | None:
    """Train every task, objective and strength, evaluate on held-out data, then write the
    results, figures and ``report.html`` to ``settings.out``; returns the report's path.
    Under torchrun every process trains and the processes other than rank 0 return None."""
    command = report_command(settings, command)
    tasks = list(dict.fromkeys(settings.tasks))
    objectives = [o for o in OBJECTIVES if o in settings.objectives]
    with pipeline_run(settings.threads, settings.device, settings.out) as (is_main, device, out):
        started = time.perf_counter()
        rows, chosen, maps, descriptions, facts = [], {}, {}, {}, {}
        for name in tasks:
            task = mnist_task(settings) if name == "mnist" else text_task(settings)
            descriptions[name], facts[name] = task.description, task.facts
            if is_main:
                print(task.description, flush=True)
            task_rows, none_model = [], None
            for objective in objectives:
                for strength in settings.strengths(name, objective):
                    if objective == "layout":
                        model, row = layout_run(task, none_model, settings, device)
                    else:
                        model, row = train_run(task, objective, strength, settings, device, out)
                    if objective == "none":
                        none_model = model
                    if not is_main:
                        continue
                    maps[(name, objective, strength)] = evaluate_run(task, model, row, device,
                                                                     settings.seed)
                    task_rows.append(row)
                    print(f"{name} {objective} {format_strength(strength)}: validation cost "
                          f"{row['validation_cost']:.4g}, test cost {row['test_cost']:.4g}, "
                          f"test Moran's I {row['test_morans_i']:.3f}, smoothness ratio "
                          f"{row['test_smoothness_ratio']:.3f}, {row['steps']} steps in "
                          f"{row['train_time_s']:.1f} s", flush=True)
            chosen[name] = mark_chosen(task_rows, task)
            rows += task_rows
            if is_main:
                write_task_maps(out, task, task_rows, maps)
    if not is_main:
        return None
    rows = [{key: row[key] for key in RESULT_COLUMNS} for row in rows]
    write_results(rows, out, {
        "rows": rows, "settings": asdict(settings), "command": command, "data": facts,
        "chosen": {task: {objective: (None if row is None else
                                      {"strength": row["strength"], "test_cost": row["test_cost"],
                                       "test_morans_i": row["test_morans_i"]})
                          for objective, row in by_objective.items()}
                   for task, by_objective in chosen.items()}})
    tradeoff = write_tradeoff_figure(out, tasks, rows)
    report = write_html_report(out / "report.html", "Topographic objectives head to head", [
        ("Settings", [*descriptions.values(),
                      "Each objective at each strength is trained from the same initial model "
                      f"and batch order (seed {settings.seed}). Costs are on held-out data; "
                      "structure is measured on the units' activations of held-out data.",
                      f"Command: {command}"]),
        ("Results", ["A run is 'chosen' when it has the highest validation Moran's I among "
                     "the runs of its objective whose validation cost is within the tolerance "
                     "of the run without an objective; test numbers are reported for all.",
                     rows, tradeoff]),
        ("Maps", [out / f"maps_{name}.png" for name in tasks]),
    ])
    print(f"done in {time.perf_counter() - started:.1f} s")
    print(f"report: {report.resolve()}")
    return report


# --------------------------------------------------------------------------- figures
def write_tradeoff_figure(out: Path, tasks: list[str], rows: list[dict]) -> Path:
    """Test cost against test Moran's I and smoothness ratio, one line per objective,
    points labelled by strength; the run without an objective is the star."""
    panels = []
    cost_labels = {"mnist": "MNIST test error (%)", "text": "test bits per character"}
    for name in tasks:
        task_rows = [r for r in rows if r["task"] == name]
        none = [r for r in task_rows if r["objective"] == "none"]
        for metric, label in (("test_morans_i", "Moran's I of the centred group maps "
                                                "(higher: smoother)"),
                              ("test_smoothness_ratio", "smoothness ratio of the centred group "
                                                        "maps (lower: smoother)")):
            series = {objective: [(r[metric], r["test_cost"], format_strength(r["strength"]))
                                  for r in task_rows if r["objective"] == objective]
                      for objective in OBJECTIVES[1:]
                      if any(r["objective"] == objective for r in task_rows)}
            panels.append({"series": series, "xlabel": label, "ylabel": cost_labels[name],
                           "title": {"mnist": "MNIST classifier, 8x8 grid",
                                     "text": "Character transformer, 16x16 grid"}[name],
                           "baseline": ((none[0][metric], none[0]["test_cost"], "none")
                                        if none else None)})
    path = out / "tradeoff.png"
    plotting.plot_tradeoff(panels, ncols=2, suptitle="Task cost against structure (held-out "
                           "data; labels: strength)", path=path)
    return path


def write_task_maps(out: Path, task: Task, rows: list[dict], maps: dict) -> Path:
    """The centred test maps of the run without an objective and of each objective's
    strongest run, one row of group maps per run, one colour range per row."""
    shown = [r for r in rows if r["objective"] == "none"]
    for objective in OBJECTIVES[1:]:
        runs = [r for r in rows if r["objective"] == objective]
        if runs:
            shown.append(max(runs, key=lambda r: r["strength"]))
    path = out / f"maps_{task.name}.png"
    stacked = torch.cat([maps[(task.name, r["objective"], r["strength"])] for r in shown])
    titles = [f"{r['objective'] if r['objective'] != 'none' else 'none'} "
              f"{format_strength(r['strength']) if r['objective'] != 'none' else ''}\n{group}"
              for r in shown for group in task.group_names]
    plotting.plot_grid_maps(stacked, task.grid_shape, titles=titles,
                            ncols=len(task.group_names), shared_range=False, diverging=True,
                            suptitle=f"{task.name}: group maps minus the global mean map "
                                     f"(test data)", path=path)
    return path


def main(argv: Sequence[str] | None = None) -> Path | None:
    """``python -m pipelines.topographic_comparison [options]``; returns ``report.html``."""
    return run_command(TopographicComparisonSettings, run, argv)


if __name__ == "__main__":
    run_cli(main)
