"""MNIST with an 8x8 grid penalty on the classifier's 64-unit layer: accuracy, maps, segmentation.

For every penalty weight the reference classifier (``gsr_pyg.models.MNISTClassifier``) is
trained with the 4-neighbour 8x8 grid on its layer ``grid`` by
:class:`gsr_pyg.training.GSRTrainer` on MNIST's training images, never on its 10,000
validation images (the last of the 60,000: the pickle's validation part,
:func:`gsr_pyg.data.mnist.load_mnist_split`). Then the pipeline computes the per-class mean
8x8 maps, the maps minus the global mean map, the segmentation map, how smooth the centred
maps are on the grid (mean Moran's I over the classes, smoothness ratio) and where the grid
layer's energy sits on the grid's spectrum.

**Choice on validation, report on test.** For each response the recommended weight
(``chosen``) is the one with the highest validation Moran's I among the positive weights
whose validation accuracy is at most :data:`MAX_ACCURACY_DROP` points below weight 0's;
nothing is chosen without a weight-0 run. The validation images decide; the test images are
used only for the final numbers (the ``test_*``, ``morans_i`` and ``smoothness_ratio``
columns, the figures and the spectrum), never for a choice.

    python -m pipelines.mnist_grid --quick --out runs/demo     # the 2-weight demo
    python -m pipelines.mnist_grid                             # the paper's settings
    python -m pipelines.mnist_grid --weights 0 0.01 --spectral-response laplacian heat \
        high_pass --epochs 3 --batch-size 128 --lr 1e-3 --threads 1 --out runs/spectral

**Spectral responses.** The penalty is ``weight * mean_b a_b^T h(L) a_b``
(:mod:`gsr_pyg.spectral`): ``h(lambda) = lambda`` (``laplacian``, the default, the paper's
``a^T L a``), ``heat`` ``1 - exp(-t lambda)`` (``--heat-t``), ``high_pass`` a smooth step
around ``--high-pass-cutoff``, ``power`` ``lambda^p`` (``--power-p``). Each response and
positive weight is one run; weight 0 has no penalty and is trained once. Strength is matched
to the laplacian's: a response ``h`` trains with ``penalty_weight = weight * P_L / P_h``,
where ``P_L`` and ``P_h`` are the mean penalties ``a^T L a`` and ``a^T h(L) a`` of the grid
activations of the initial model (the one every run starts from, the seed's) on the first
:data:`MATCH_IMAGES` training images, rounded to 4 significant digits. So at the start of
training every response charges the same penalty at the same ``weight``; they differ in
which frequencies pay it.

Written to ``--out``::

    results.csv / results.json         one row per run: weight, spectral_response,
                                       penalty_weight, validation_accuracy,
                                       validation_morans_i, chosen, then on the test
                                       images test_accuracy, test_loss, morans_i,
                                       smoothness_ratio; train_time_s, steps
    class_maps_w<weight>.png           2x5 class-mean maps, one shared colour range
    class_maps_centered_w<weight>.png  the same minus the global mean map
    segmentation_w<weight>.png         the class that claims each grid cell
    examples_w<weight>.png             test digits with their 8x8 maps, (label, prediction)
    weight_comparison.png              accuracy and Moran's I against the weight (weight 0 and
                                       the first response)
    response_comparison.png            accuracy against Moran's I per response (with several)
    graph_spectrum.png / .json         energy of the grid layer's test activations per grid
                                       frequency, one line per run (the .json: per eigenvalue,
                                       raw and centred)
    training_loss.png                  training cross-entropy against the step
    grid.graphml                       the 8x8 grid (node attributes x, y)
    model_w<weight>.pt                 the trained model's state_dict
    runs/w<weight>/                    the trainer's run directory (config, metrics, checkpoint)
    report.html                        every figure and the table, in one offline file

A response other than ``laplacian`` adds ``_<response>_<parameter><value>`` to the run's
tag: ``class_maps_w0.01_heat_t1.png``, ``runs/w0.01_heat_t1/``. Running the same command
again resumes: finished runs are not trained again.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from gsr_pyg import graphs, plotting, readouts
from gsr_pyg.files import write_json
from gsr_pyg.metrics import SpectralEnergy, graph_fourier_energy
from gsr_pyg.models import MNISTClassifier
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.report import write_html_report
from gsr_pyg.spectral import SpectralFilter, filtered_quadratic_form, quadratic_form
from gsr_pyg.training import GSRTrainer

from ._cli import (
    non_negative_float,
    number_type,
    option,
    positive_int,
    report_command,
    run_cli,
    run_command,
)
from ._mnist import (
    MnistRunSettings,
    classifier_outputs,
    describe_split,
    load_mnist_subsets,
    out_option,
)
from ._runtime import (
    choose_on_validation,
    fit_timed,
    format_strength,
    pipeline_run,
    save_state_dict,
    training_steps,
    write_results,
)

GRID_SHAPE = (8, 8)
NUM_CLASSES = 10
RESULT_COLUMNS = ["weight", "spectral_response", "penalty_weight", "validation_accuracy",
                  "validation_morans_i", "chosen", "test_accuracy", "test_loss", "morans_i",
                  "smoothness_ratio", "train_time_s", "steps"]
#: A weight may be chosen when its validation accuracy is at most this many points (of
#: 100) below weight 0's.
MAX_ACCURACY_DROP = 0.5
EVAL_BATCH = 1000
SMOOTHNESS_PERMUTATIONS = 100
#: Training images whose grid activations (initial model) match the responses' strength.
MATCH_IMAGES = 2000
#: The response of the weight-0 run (no penalty) in the results.
NO_PENALTY = "none"
#: Each preset response's parameter that has an option: response -> (parameter, field).
RESPONSE_OPTIONS = {"heat": ("t", "heat_t"), "high_pass": ("cutoff", "high_pass_cutoff"),
                    "power": ("p", "power_p")}

_positive_float = number_type(float, "a finite number > 0",
                              lambda value: math.isfinite(value) and value > 0)


@dataclass(frozen=True)
class MnistGridSettings(MnistRunSettings):
    """The paper's settings by default (DESIGN.md section 1); :meth:`quick` is the demo."""

    prog: ClassVar[str] = "python -m pipelines.mnist_grid"
    description: ClassVar[str] = (
        "Train the MNIST classifier with an 8x8 grid penalty on its 64-unit layer for several "
        "penalty weights; write results, figures and report.html.")

    weights: list[float] = option([0.0, 1e-1, 1e-2, 1e-3, 1e-4],
                                  "penalty weights (default 0 0.1 0.01 0.001 0.0001; "
                                  "--quick: 0 0.01)", type=non_negative_float, nargs="+")
    conv_head: bool = option(False, "classify with the convolution on top of the 8x8 grid")
    epochs: int = option(40, "epochs per weight (default 40; --quick: 1)", type=positive_int)
    batch_size: int = option(500, "batch size (default 500; --quick: 128)", type=positive_int)
    lr: float = option(1e-4, "Adam learning rate (default 1e-4; --quick: 1e-3)",
                       type=non_negative_float)
    out: str = out_option("runs/mnist_grid")
    spectral_response: list[str] = option(
        ["laplacian"], "responses h of the penalty weight * mean a^T h(L) a: laplacian (h = "
        "lambda), heat, high_pass, power; one run per response and positive weight, each at "
        "the laplacian's strength on the initial model (default laplacian)", nargs="+",
        choices=("laplacian", *RESPONSE_OPTIONS), metavar="RESPONSE")
    heat_t: float = option(1.0, "t of the response heat, 1 - exp(-t lambda) (default 1)",
                           type=_positive_float)
    high_pass_cutoff: float = option(1.0, "cutoff of the response high_pass, a smooth step "
                                          "from 0 to 1 around it; the grid's frequencies lie "
                                          "in [0, 7.7] (default 1)", type=_positive_float)
    power_p: float = option(2.0, "p of the response power, lambda^p (default 2)",
                            type=_positive_float)

    @classmethod
    def quick(cls) -> MnistGridSettings:
        """The demo: no penalty against the recommended weight, one epoch, a faster Adam."""
        return cls(weights=[0.0, 1e-2], epochs=1, batch_size=128, lr=1e-3)


# --------------------------------------------------------------------------- the runs
@dataclass(frozen=True)
class GridRun:
    """One training run: a weight and the response of its penalty."""

    weight: float
    response: str  # a preset name; NO_PENALTY for weight 0
    spectral_filter: SpectralFilter | None  # None: the laplacian (or no penalty)
    tag: str  # in file and run directory names: "0.01", "0.01_heat_t1"
    label: str  # in titles and legends: "weight 0.01, heat (t=1)"


def response_filter(response: str, settings: MnistGridSettings) -> SpectralFilter | None:
    """The filter of a preset response with its parameter from ``settings`` (None for
    ``laplacian``: the penalty is computed as it always was)."""
    if response == "laplacian":
        return None
    parameter, field = RESPONSE_OPTIONS[response]
    return SpectralFilter(response, **{parameter: getattr(settings, field)})


def response_name(response: str, settings: MnistGridSettings) -> str:
    """``heat (t=1)``; the name alone for responses without a parameter."""
    if response not in RESPONSE_OPTIONS:
        return response
    parameter, field = RESPONSE_OPTIONS[response]
    return f"{response} ({parameter}={format_strength(getattr(settings, field))})"


def plan_runs(settings: MnistGridSettings) -> list[GridRun]:
    """Every run, weight by weight in the given order (repeats dropped): weight 0 once,
    without penalty; every positive weight once per response."""
    runs = []
    responses = list(dict.fromkeys(settings.spectral_response))
    for weight in dict.fromkeys(settings.weights):
        tag = format_strength(weight)
        if weight == 0:
            runs.append(GridRun(weight, NO_PENALTY, None, tag, f"weight {tag}"))
            continue
        for response in responses:
            if response == "laplacian":
                runs.append(GridRun(weight, response, None, tag, f"weight {tag}"))
                continue
            parameter, field = RESPONSE_OPTIONS[response]
            value = format_strength(getattr(settings, field))
            runs.append(GridRun(weight, response, response_filter(response, settings),
                                f"{tag}_{response}_{parameter}{value}",
                                f"weight {tag}, {response_name(response, settings)}"))
    return runs


# --------------------------------------------------------------------------- evaluation
def evaluate(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor,
             device: torch.device) -> dict:
    """Accuracy and loss, predictions and the grid activations of every image."""
    logits, grid_activations = classifier_outputs(model, images, device, EVAL_BATCH)
    labels = labels.to(device)
    predictions = logits.argmax(dim=1)
    return {"accuracy": float((predictions == labels).float().mean()),
            "loss": float(F.cross_entropy(logits, labels)), "predictions": predictions,
            "labels": labels, "grid": grid_activations}


def matched_scales(settings: MnistGridSettings, responses: Sequence[str],
                   train_x: torch.Tensor, device: torch.device) -> dict[str, float]:
    """Per response, ``P_L / P_h``: the mean penalty ``a^T L a`` over the mean
    ``a^T h(L) a`` of the initial model's grid activations on the first
    :data:`MATCH_IMAGES` training images (4 significant digits, so that a resumed run gets
    the same weight whatever the rounding of the forward pass); 1 for ``laplacian``."""
    scales = {response: 1.0 for response in responses}
    others = [response for response in responses if response != "laplacian"]
    if not others:
        return scales
    torch.manual_seed(settings.seed)  # the initial model of every run
    model = MNISTClassifier(grid_shape=GRID_SHAPE, conv_head=settings.conv_head).to(device)
    _, activations = classifier_outputs(model, train_x[:MATCH_IMAGES], device, EVAL_BATCH)
    activations = activations.double().cpu()
    grid = graphs.grid(*GRID_SHAPE)
    laplacian = float(quadratic_form(activations, grid).mean())
    for response in others:
        filtered = float(filtered_quadratic_form(
            activations, grid, response_filter(response, settings)).mean())
        if not (laplacian > 0 and filtered > 0):
            raise ValueError(f"cannot match the strength of the response {response!r}: the "
                             f"initial model's grid activations give the penalties "
                             f"a^T L a = {laplacian:.4g} and a^T h(L) a = {filtered:.4g}")
        scales[response] = float(f"{laplacian / filtered:.4g}")
    return scales


def grid_readouts(grid_activations: torch.Tensor, labels: torch.Tensor, grid: object,
                  seed: int) -> dict:
    """Class maps, centred maps, segmentation and the smoothness of the centred maps; the
    grid spectrum of the activations, raw and centred (each unit's mean removed)."""
    order = readouts.class_map_order(grid_activations, labels, grid, num_classes=NUM_CLASSES,
                                     num_permutations=SMOOTHNESS_PERMUTATIONS, seed=seed)
    spectra = {"raw": graph_fourier_energy(grid_activations, grid),
               "centred": graph_fourier_energy(grid_activations - grid_activations.mean(0),
                                               grid)}
    return {"maps": order.maps, "centered": order.centred,
            "segmentation": readouts.segmentation_map(order.maps), "morans_i": order.morans_i,
            "smoothness_ratio": order.smoothness_ratio, "spectra": spectra}


def mark_chosen(rows: list[dict]) -> dict[str, dict | None]:
    """For each response, the row with the highest validation Moran's I among its positive
    weights whose validation accuracy is at most :data:`MAX_ACCURACY_DROP` points below
    weight 0's (marked ``chosen``; None when no weight is within it). Only validation
    numbers are read. Nothing is chosen without a weight-0 row."""
    return choose_on_validation(
        rows, "spectral_response", NO_PENALTY,
        lambda row, base: row["validation_accuracy"]
        >= base["validation_accuracy"] - MAX_ACCURACY_DROP / 100)


def pick_examples(labels: torch.Tensor, predictions: torch.Tensor, num_correct: int = 6,
                  num_wrong: int = 4) -> torch.Tensor:
    """Indices of test examples to show: one correctly classified example of each class
    0, 1, 2, ... (``num_correct`` in all), then up to ``num_wrong`` misclassified ones."""
    wrong = (labels != predictions).nonzero().flatten()[:num_wrong]
    correct_mask = labels == predictions
    chosen = []
    for digit in range(NUM_CLASSES):
        if len(chosen) + wrong.numel() >= num_correct + num_wrong:
            break
        hits = (correct_mask & (labels == digit)).nonzero().flatten()
        if hits.numel():
            chosen.append(hits[0])
    correct = torch.stack(chosen) if chosen else wrong.new_empty(0)
    return torch.cat([correct, wrong])


# --------------------------------------------------------------------------- figures
def write_weight_figures(out: Path, run: GridRun, images: torch.Tensor, evaluation: dict,
                         found: dict) -> list[Path]:
    digits = [f"digit {c}" for c in range(NUM_CLASSES)]
    paths = [out / f"{stem}_w{run.tag}.png"
             for stem in ("class_maps", "class_maps_centered", "segmentation", "examples")]
    plotting.plot_grid_maps(found["maps"], GRID_SHAPE, titles=digits,
                            colorbar_label="mean activation",
                            suptitle=f"Class-mean activations of the 8x8 layer, {run.label}",
                            path=paths[0])
    plotting.plot_grid_maps(found["centered"], GRID_SHAPE, titles=digits, diverging=True,
                            colorbar_label="class mean - global mean",
                            suptitle=f"Class maps minus the global mean map, {run.label}",
                            path=paths[1])
    plotting.plot_segmentation(found["segmentation"], GRID_SHAPE, num_classes=NUM_CLASSES,
                               title=f"Segmentation map, {run.label}", path=paths[2])
    index = pick_examples(evaluation["labels"], evaluation["predictions"])
    plotting.plot_examples(images[index.cpu()], evaluation["grid"][index],
                           evaluation["labels"][index], evaluation["predictions"][index],
                           grid_shape=GRID_SHAPE, path=paths[3])
    return paths


def write_training_curves(out: Path, histories: dict[str, list[dict]]) -> Path | None:
    """Training cross-entropy of every run against the step (when logged at equal steps)."""
    steps = [[row["step"] for row in rows] for rows in histories.values()]
    if not steps or len(steps[0]) < 3 or any(s != steps[0] for s in steps):
        return None
    losses = {label: [row["task_loss"] for row in rows] for label, rows in histories.items()}
    path = out / "training_loss.png"
    plotting.plot_curves(steps[0], losses, xlabel="training step",
                         ylabel="training cross-entropy (no penalty)", logx=False, logy=True,
                         title="Training loss", path=path)
    return path


def write_spectrum(out: Path, runs: Sequence[GridRun], spectra: dict[str, dict],
                   settings: MnistGridSettings) -> Path:
    """``graph_spectrum.png`` (the test activations as they are, one line per run) and
    ``graph_spectrum.json`` (the energy per eigenvalue of every run, raw and centred)."""
    def legend(run: GridRun) -> str:
        return "weight 0 (no penalty)" if run.response == NO_PENALTY else (
            f"{response_name(run.response, settings)}, weight {format_strength(run.weight)}")

    lines = {legend(run): spectra[run.tag]["raw"] for run in runs if run.tag in spectra}
    cutoff = ({f"high_pass cutoff {format_strength(settings.high_pass_cutoff)}":
               settings.high_pass_cutoff}
              if any(run.response == "high_pass" for run in runs) else None)
    path = out / "graph_spectrum.png"
    plotting.plot_graph_spectrum(
        lines, markers=cutoff, xlabel="frequency of the 8x8 grid (eigenvalue of D - A)",
        suptitle="Energy of the 8x8 layer's test activations per grid frequency", path=path)
    first: SpectralEnergy = next(iter(spectra.values()))["raw"]
    write_json(out / "graph_spectrum.json", {
        "graph": "8x8 grid, 4 neighbours, combinatorial Laplacian D - A",
        "eigenvalues": first.frequencies.tolist(),
        "runs": [{"tag": run.tag, "weight": run.weight, "spectral_response": run.response,
                  **{kind: spectra[run.tag][kind].energy.tolist()
                     for kind in ("raw", "centred")}}
                 for run in runs if run.tag in spectra]})
    return path


def write_summary_figures(out: Path, rows: list[dict], runs: Sequence[GridRun],
                          names: dict[str, str]) -> list[Path]:
    """Accuracy and Moran's I against the weight (weight 0 and the first response) and,
    with several responses, accuracy against Moran's I per response."""
    responses = list(dict.fromkeys(run.response for run in runs if run.response != NO_PENALTY))
    first = responses[0] if responses else "laplacian"
    chosen = [row for row in rows if row["spectral_response"] in (NO_PENALTY, first)]
    comparison = out / "weight_comparison.png"
    title = "Accuracy and map smoothness against the penalty weight"
    plotting.plot_weight_comparison(
        [r["weight"] for r in chosen], [r["test_accuracy"] for r in chosen],
        [r["morans_i"] for r in chosen], morans_label="Moran's I (centred class maps)",
        title=title if first == "laplacian" else f"{title} ({names[first]})", path=comparison)
    if len(responses) < 2:
        return [comparison]
    baseline = next((row for row in rows if row["spectral_response"] == NO_PENALTY), None)
    path = out / "response_comparison.png"
    plotting.plot_tradeoff([{
        "series": {names[response]: [(row["morans_i"], 100 * row["test_accuracy"],
                                      format_strength(row["weight"]))
                                     for row in rows if row["spectral_response"] == response]
                   for response in responses},
        "baseline": None if baseline is None else (
            baseline["morans_i"], 100 * baseline["test_accuracy"], "weight 0"),
        "title": "Responses at matched strength (labels: weight)",
        "xlabel": "Moran's I (centred class maps)", "ylabel": "test accuracy (%)"}],
        ncols=1, path=path)
    return [comparison, path]


# --------------------------------------------------------------------------- one run
def train_weight(run: GridRun, penalty_weight: float, settings: MnistGridSettings,
                 train_x: torch.Tensor, train_y: torch.Tensor, device: torch.device, out: Path
                 ) -> tuple[dict, MNISTClassifier, list[dict]]:
    """Train the classifier with the grid penalty of ``run`` at ``penalty_weight`` (resuming
    a finished or interrupted run in ``out/runs/w<tag>``); the row, the model and its logged
    metrics."""
    torch.manual_seed(settings.seed)  # every run starts from the same initial model
    model = MNISTClassifier(grid_shape=GRID_SHAPE, conv_head=settings.conv_head)
    response = {} if run.spectral_filter is None else {"spectral_response": run.spectral_filter}
    reg = GraphSpectralRegularizer(model, {model.gsr_layer: graphs.grid(*GRID_SHAPE)},
                                   weight=penalty_weight, **response)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=settings.batch_size,
                        shuffle=True)
    steps_per_epoch, max_steps = training_steps(train_x.shape[0], settings.batch_size,
                                                settings.epochs)
    run_dir = out / "runs" / f"w{run.tag}"
    config = {"pipeline": "mnist_grid", "weight": run.weight, "epochs": settings.epochs,
              "batch_size": settings.batch_size, "lr": settings.lr,
              "conv_head": settings.conv_head, "train_images": int(train_x.shape[0])}
    trainer = GSRTrainer(
        model, reg, optimizer, F.cross_entropy, max_steps=max_steps, run_dir=run_dir,
        checkpoint_every=min(steps_per_epoch, 500), log_every=max(1, min(50, max_steps // 20)),
        seed=settings.seed, device=device, verbose=not settings.quiet, config=config,
    )
    train_time = fit_timed(trainer, loader, run_dir)
    reg.detach()
    if trainer.is_main:
        save_state_dict(model, out / f"model_w{run.tag}.pt")
    row = {"weight": run.weight, "spectral_response": run.response,
           "penalty_weight": penalty_weight, "train_time_s": train_time, "steps": trainer.step}
    return row, model, trainer.history.metrics


# --------------------------------------------------------------------------- the run
def run(settings: MnistGridSettings, command: str | None = None) -> Path | None:
    """Train every run (weight and response), then evaluate and write results, figures and
    ``report.html`` to ``settings.out``; returns the report's path. ``command`` is the
    command line shown in the report (default: one that gives ``settings``). Under torchrun
    every process trains and the processes other than rank 0 return None without
    evaluating or writing."""
    command = report_command(settings, command)
    runs = plan_runs(settings)
    responses = list(dict.fromkeys(settings.spectral_response))
    names = {NO_PENALTY: NO_PENALTY, **{r: response_name(r, settings) for r in responses}}
    trained = list(dict.fromkeys(run.response for run in runs if run.response != NO_PENALTY))
    with pipeline_run(settings.threads, settings.device, settings.out) as (is_main, device, out):
        started = time.perf_counter()
        split = load_mnist_subsets(settings)
        train_x, train_y, test_x, test_y = (split.train_images, split.train_labels,
                                            split.test_images, split.test_labels)
        images = describe_split(split, settings)
        if is_main:
            print(f"MNIST: {images}; device {device}; weights "
                  f"{[format_strength(w) for w in dict.fromkeys(settings.weights)]}, "
                  f"responses {[names[r] for r in responses]}, {settings.epochs} epoch(s), "
                  f"batch {settings.batch_size}, Adam lr {settings.lr:g}, conv head "
                  f"{settings.conv_head}", flush=True)
        scales = matched_scales(settings, trained, train_x, device)
        grid = graphs.grid(*GRID_SHAPE)
        rows, figures, histories, spectra = [], {}, {}, {}
        for one in runs:
            # 12 digits: 0.01 * 4.142 is 0.04142, not 0.041420000000000004
            penalty_weight = float(f"{one.weight * scales.get(one.response, 1.0):.12g}")
            row, model, history = train_weight(one, penalty_weight, settings, train_x, train_y,
                                               device, out)
            if not is_main:
                continue
            validation = evaluate(model, split.validation_images, split.validation_labels,
                                  device)
            order = readouts.class_map_order(
                validation["grid"], validation["labels"], grid.to(device),
                num_classes=NUM_CLASSES, num_permutations=SMOOTHNESS_PERMUTATIONS,
                seed=settings.seed)
            # the test images: final numbers and figures only, never the choice
            evaluation = evaluate(model, test_x, test_y, device)
            found = grid_readouts(evaluation["grid"], evaluation["labels"], grid.to(device),
                                  seed=settings.seed)
            row.update(validation_accuracy=validation["accuracy"],
                       validation_morans_i=order.morans_i, chosen=False,
                       test_accuracy=evaluation["accuracy"], test_loss=evaluation["loss"],
                       morans_i=found["morans_i"], smoothness_ratio=found["smoothness_ratio"])
            rows.append({key: row[key] for key in RESULT_COLUMNS})
            figures[one.label] = write_weight_figures(out, one, test_x, evaluation, found)
            histories[one.label] = history
            spectra[one.tag] = found["spectra"]
            print(f"{one.label}: validation accuracy {100 * row['validation_accuracy']:.2f}%, "
                  f"Moran's I {row['validation_morans_i']:.3f}; test accuracy "
                  f"{100 * row['test_accuracy']:.2f}%, Moran's I {row['morans_i']:.3f}, "
                  f"smoothness ratio {row['smoothness_ratio']:.3f}; {row['steps']} steps in "
                  f"{row['train_time_s']:.1f} s", flush=True)
    if not is_main:
        return None
    chosen = mark_chosen(rows)
    for response, row in chosen.items():
        print(f"chosen on validation, {names[response]}: " + (
            "no weight within the tolerance" if row is None else
            f"weight {format_strength(row['weight'])} (test accuracy "
            f"{100 * row['test_accuracy']:.2f}%, Moran's I {row['morans_i']:.3f})"), flush=True)
    write_results(rows, out)
    summary = write_summary_figures(out, rows, runs, names)
    summary.append(write_spectrum(out, runs, spectra, settings))
    curves = write_training_curves(out, histories)
    grid.name = "8x8 grid, 4 neighbours, row-major"
    graphs.write_graphml(grid, out / "grid.graphml")  # positions as node attributes x, y
    report = write_html_report(out / "report.html", "MNIST: 8x8 grid penalty", _report_sections(
        rows, figures, summary + ([curves] if curves is not None else []), settings,
        command, f"{images}; ", device, {names[r]: scales[r] for r in trained}, chosen,
        names))
    print(f"done in {time.perf_counter() - started:.1f} s")
    print(f"report: {report.resolve()}")
    return report


def _penalty_text(scales: dict[str, float]) -> list[str]:
    """The paragraphs of the report that say what the penalty is."""
    text = ["The penalty is weight * mean over the batch of a^T L a, with L the combinatorial "
            "Laplacian of the 4-neighbour 8x8 grid and a the 64 activations of the grid layer "
            "(before dropout)."]
    if all(name == "laplacian" for name in scales):
        return text
    matched = ", ".join(f"{name}: x{scale:.4g}" for name, scale in scales.items())
    return text + [
        "With a spectral response h the penalty is penalty_weight * mean a^T h(L) a "
        "(heat: h = 1 - exp(-t lambda); high_pass: a smooth step from 0 to 1 around the "
        "cutoff; power: lambda^p). Strength is matched to the laplacian's on the initial "
        f"model (the one every run starts from): on its grid activations of the first "
        f"{MATCH_IMAGES} training images, penalty_weight = weight * mean a^T L a / mean "
        f"a^T h(L) a, so every response starts with the same penalty at the same weight; "
        f"the factors: {matched}."]


SPECTRUM_TEXT = (
    "graph_spectrum.png: the energy E_k of the grid layer's test activations (as they are, "
    "not centred) per frequency lambda_k of the grid (gsr_pyg.metrics.graph_fourier_energy, "
    "exact), per eigenvector (a repeated eigenvalue's energy averaged over its "
    "eigenvectors) and as a fraction of each run's total; frequency 0 is the mean over the "
    "units. Activations without order on the grid give a flat line; the penalty charges "
    "sum_k h(lambda_k) E_k. graph_spectrum.json also holds the energies with each unit's "
    "test mean removed.")


def _choice_text(chosen: dict[str, dict | None], names: dict[str, str]) -> list[str]:
    """What the report says of the choice: the rule, then each response's choice."""
    rule = ("The recommended weight is chosen on the validation images alone (the last "
            "10,000 of MNIST's 60,000 training images, never trained on): per response, the "
            "weight with the highest validation Moran's I among those whose validation "
            f"accuracy is at most {MAX_ACCURACY_DROP:g} points below weight 0's (column "
            "chosen). The test images were used for nothing but the final numbers: the test "
            "columns, the figures and the spectrum.")
    if not chosen:
        return [rule, "Nothing was chosen: weight 0, which sets the bar, was not run."]
    return [rule] + [
        f"{names[response]}: " + ("no weight within the tolerance." if row is None else
                                  f"weight {format_strength(row['weight'])}: validation "
                                  f"accuracy {100 * row['validation_accuracy']:.2f}%, Moran's "
                                  f"I {row['validation_morans_i']:.3f}; on test "
                                  f"{100 * row['test_accuracy']:.2f}% and "
                                  f"{row['morans_i']:.3f}.")
        for response, row in chosen.items()]


def _report_sections(rows: list[dict], figures: dict[str, list[Path]],
                     summary_figures: list[Path], settings: MnistGridSettings, command: str,
                     images: str, device: torch.device, scales: dict[str, float],
                     chosen: dict[str, dict | None], names: dict[str, str]) -> list[tuple]:
    weight_text = ("Class-mean maps, the same maps minus the global mean, the segmentation map "
                   "(each cell takes the class whose L1-normalised map is largest there) and "
                   "test digits with their 8x8 maps, titled (label, prediction); red titles "
                   "are errors.")
    return [
        ("Settings", [
            f"{images}{settings.epochs} epoch(s) per weight, batch {settings.batch_size}, "
            f"Adam lr {settings.lr:g}, seed {settings.seed}, device {device}, "
            f"convolution on the grid: {'yes' if settings.conv_head else 'no'}.",
            *_penalty_text(scales),
            f"Command: {command}",
        ]),
        ("Results", [
            *_choice_text(chosen, names),
            "Validation accuracy and Moran's I; test accuracy and loss, Moran's I (morans_i: "
            "mean over the classes) and the smoothness ratio (Dirichlet energy relative to "
            "shuffled neurons; 1 = no structure, smaller = smoother) of the test class-mean "
            "maps with the global mean map subtracted.",
            rows, SPECTRUM_TEXT, *summary_figures,
        ]),
    ] + [(label[0].upper() + label[1:], [weight_text, *paths])
         for label, paths in figures.items()]


def main(argv: Sequence[str] | None = None) -> Path | None:
    """``python -m pipelines.mnist_grid [options]``; returns the path of ``report.html``."""
    return run_command(MnistGridSettings, run, argv)


if __name__ == "__main__":
    run_cli(main)
