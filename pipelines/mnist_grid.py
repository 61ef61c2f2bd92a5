"""MNIST with an 8x8 grid penalty on the classifier's 64-unit layer: accuracy, maps, segmentation.

For every penalty weight the reference classifier (``gsr_pyg.models.MNISTClassifier``) is
trained with the 4-neighbour 8x8 grid on its layer ``grid`` by
:class:`gsr_pyg.training.GSRTrainer`; then, on the test set, the pipeline computes the
per-class mean 8x8 maps, the maps minus the global mean map, the segmentation map, and how
smooth the centred maps are on the grid (mean Moran's I over the classes, smoothness ratio).

    python -m pipelines.mnist_grid --quick --out runs/demo     # the 2-weight demo
    python -m pipelines.mnist_grid                             # the paper's settings

Written to ``--out``::

    results.csv / results.json         one row per weight
    class_maps_w<weight>.png           2x5 class-mean maps, one shared colour range
    class_maps_centered_w<weight>.png  the same minus the global mean map
    segmentation_w<weight>.png         the class that claims each grid cell
    examples_w<weight>.png             test digits with their 8x8 maps, (label, prediction)
    weight_comparison.png              accuracy and Moran's I against the weight
    training_loss.png                  training cross-entropy against the step
    grid.graphml                       the 8x8 grid (node attributes x, y)
    model_w<weight>.pt                 the trained model's state_dict
    runs/w<weight>/                    the trainer's run directory (config, metrics, checkpoint)
    report.html                        every figure and the table, in one offline file

Running the same command again resumes: finished weights are not trained again.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from gsr_pyg import graphs, plotting, readouts
from gsr_pyg.capture import ActivationCapture
from gsr_pyg.metrics import morans_i, smoothness_ratio
from gsr_pyg.models import MNISTClassifier
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.report import write_html_report
from gsr_pyg.training import GSRTrainer

from ._cli import non_negative_float, option, positive_int, report_command, run_cli, run_command
from ._mnist import MnistRunSettings, load_mnist_subsets, out_option
from ._runtime import (
    fit_timed,
    format_strength,
    pipeline_run,
    save_state_dict,
    training_steps,
    write_results,
)

GRID_SHAPE = (8, 8)
NUM_CLASSES = 10
RESULT_COLUMNS = ["weight", "test_accuracy", "test_loss", "morans_i", "smoothness_ratio",
                  "train_time_s", "steps"]
EVAL_BATCH = 1000
SMOOTHNESS_PERMUTATIONS = 100


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

    @classmethod
    def quick(cls) -> MnistGridSettings:
        """The demo: no penalty against the recommended weight, one epoch, a faster Adam."""
        return cls(weights=[0.0, 1e-2], epochs=1, batch_size=128, lr=1e-3)


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor,
             device: torch.device) -> dict:
    """Test accuracy and loss, predictions and the grid activations of every test image."""
    model.eval()
    logits, grid_activations = [], []
    with ActivationCapture(model, [model.gsr_layer]) as capture:
        for start in range(0, images.shape[0], EVAL_BATCH):
            logits.append(model(images[start:start + EVAL_BATCH].to(device)))
            grid_activations.append(capture.output(model.gsr_layer))
    logits = torch.cat(logits)
    labels = labels.to(device)
    predictions = logits.argmax(dim=1)
    return {"accuracy": float((predictions == labels).float().mean()),
            "loss": float(F.cross_entropy(logits, labels)), "predictions": predictions,
            "labels": labels, "grid": torch.cat(grid_activations)}


def grid_readouts(grid_activations: torch.Tensor, labels: torch.Tensor, grid: object,
                  seed: int) -> dict:
    """Class maps, centred maps, segmentation and the smoothness of the centred maps."""
    maps = readouts.class_mean_maps(grid_activations, labels, num_classes=NUM_CLASSES)
    centered = readouts.subtract_global_mean(maps, grid_activations)
    present = ~torch.isnan(maps).any(dim=1)  # a tiny test subset may lack a class
    moran = morans_i(centered[present], grid)
    smoothness = smoothness_ratio(centered[present], grid,
                                  num_permutations=SMOOTHNESS_PERMUTATIONS, seed=seed)
    return {"maps": maps, "centered": centered, "segmentation": readouts.segmentation_map(maps),
            "morans_i": float(torch.nanmean(moran)), "smoothness_ratio": smoothness}


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
def write_weight_figures(out: Path, tag: str, images: torch.Tensor, evaluation: dict,
                         found: dict) -> list[Path]:
    digits = [f"digit {c}" for c in range(NUM_CLASSES)]
    paths = [out / f"{stem}_w{tag}.png"
             for stem in ("class_maps", "class_maps_centered", "segmentation", "examples")]
    plotting.plot_grid_maps(found["maps"], GRID_SHAPE, titles=digits,
                            colorbar_label="mean activation",
                            suptitle=f"Class-mean activations of the 8x8 layer, weight {tag}",
                            path=paths[0])
    plotting.plot_grid_maps(found["centered"], GRID_SHAPE, titles=digits, diverging=True,
                            colorbar_label="class mean - global mean",
                            suptitle=f"Class maps minus the global mean map, weight {tag}",
                            path=paths[1])
    plotting.plot_segmentation(found["segmentation"], GRID_SHAPE, num_classes=NUM_CLASSES,
                               title=f"Segmentation map, weight {tag}", path=paths[2])
    index = pick_examples(evaluation["labels"], evaluation["predictions"])
    plotting.plot_examples(images[index.cpu()], evaluation["grid"][index],
                           evaluation["labels"][index], evaluation["predictions"][index],
                           grid_shape=GRID_SHAPE, path=paths[3])
    return paths


def write_training_curves(out: Path, histories: dict[str, list[dict]]) -> Path | None:
    """Training cross-entropy of every weight against the step (when logged at equal steps)."""
    steps = [[row["step"] for row in rows] for rows in histories.values()]
    if not steps or len(steps[0]) < 3 or any(s != steps[0] for s in steps):
        return None
    losses = {f"weight {tag}": [row["task_loss"] for row in rows]
              for tag, rows in histories.items()}
    path = out / "training_loss.png"
    plotting.plot_curves(steps[0], losses, xlabel="training step",
                         ylabel="training cross-entropy (no penalty)", logx=False, logy=True,
                         title="Training loss", path=path)
    return path


# --------------------------------------------------------------------------- one weight
def train_weight(weight: float, settings: MnistGridSettings, train_x: torch.Tensor,
                 train_y: torch.Tensor, device: torch.device, out: Path
                 ) -> tuple[dict, MNISTClassifier, list[dict]]:
    """Train the classifier with the grid penalty at ``weight`` (resuming a finished or
    interrupted run in ``out/runs/w<weight>``); the row, the model and its logged metrics."""
    tag = format_strength(weight)
    torch.manual_seed(settings.seed)  # every weight starts from the same initial model
    model = MNISTClassifier(grid_shape=GRID_SHAPE, conv_head=settings.conv_head)
    reg = GraphSpectralRegularizer(model, {model.gsr_layer: graphs.grid(*GRID_SHAPE)},
                                   weight=weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=settings.batch_size,
                        shuffle=True)
    steps_per_epoch, max_steps = training_steps(train_x.shape[0], settings.batch_size,
                                                settings.epochs)
    run_dir = out / "runs" / f"w{tag}"
    trainer = GSRTrainer(
        model, reg, optimizer, F.cross_entropy, max_steps=max_steps, run_dir=run_dir,
        checkpoint_every=min(steps_per_epoch, 500), log_every=max(1, min(50, max_steps // 20)),
        seed=settings.seed, device=device, verbose=not settings.quiet,
        config={"pipeline": "mnist_grid", "weight": weight, "epochs": settings.epochs,
                "batch_size": settings.batch_size, "lr": settings.lr,
                "conv_head": settings.conv_head, "train_images": int(train_x.shape[0])},
    )
    train_time = fit_timed(trainer, loader, run_dir)
    reg.detach()
    if trainer.is_main:
        save_state_dict(model, out / f"model_w{tag}.pt")
    row = {"weight": weight, "train_time_s": train_time, "steps": trainer.step}
    return row, model, trainer.history.metrics


# --------------------------------------------------------------------------- the run
def run(settings: MnistGridSettings, command: str | None = None) -> Path | None:
    """Train every weight, then evaluate and write results, figures and ``report.html`` to
    ``settings.out``; returns the report's path. ``command`` is the command line shown in the
    report (default: one that gives ``settings``). Under torchrun every process trains and
    the processes other than rank 0 return None without evaluating or writing."""
    command = report_command(settings, command)
    weights = list(dict.fromkeys(settings.weights))  # drop repeats, keep order
    with pipeline_run(settings.threads, settings.device, settings.out) as (is_main, device, out):
        started = time.perf_counter()
        train_x, train_y, test_x, test_y = load_mnist_subsets(settings)
        if is_main:
            print(f"MNIST: {train_x.shape[0]} training and {test_x.shape[0]} test images; "
                  f"device {device}; weights {[format_strength(w) for w in weights]}, "
                  f"{settings.epochs} epoch(s), batch {settings.batch_size}, Adam lr "
                  f"{settings.lr:g}, conv head {settings.conv_head}", flush=True)
        grid = graphs.grid(*GRID_SHAPE)
        rows, figures, histories = [], {}, {}
        for weight in weights:
            tag = format_strength(weight)
            row, model, history = train_weight(weight, settings, train_x, train_y, device, out)
            if not is_main:
                continue
            evaluation = evaluate(model, test_x, test_y, device)
            found = grid_readouts(evaluation["grid"], evaluation["labels"], grid.to(device),
                                  seed=settings.seed)
            row.update(test_accuracy=evaluation["accuracy"], test_loss=evaluation["loss"],
                       morans_i=found["morans_i"], smoothness_ratio=found["smoothness_ratio"])
            rows.append({key: row[key] for key in RESULT_COLUMNS})
            figures[tag] = write_weight_figures(out, tag, test_x, evaluation, found)
            histories[tag] = history
            print(f"weight {tag}: test accuracy {100 * row['test_accuracy']:.2f}%, Moran's I "
                  f"{row['morans_i']:.3f}, smoothness ratio {row['smoothness_ratio']:.3f}, "
                  f"{row['steps']} steps in {row['train_time_s']:.1f} s", flush=True)
    if not is_main:
        return None
    write_results(rows, out)
    comparison = out / "weight_comparison.png"
    plotting.plot_weight_comparison(
        [r["weight"] for r in rows], [r["test_accuracy"] for r in rows],
        [r["morans_i"] for r in rows], morans_label="Moran's I (centred class maps)",
        title="Accuracy and map smoothness against the penalty weight", path=comparison)
    curves = write_training_curves(out, histories)
    grid.name = "8x8 grid, 4 neighbours, row-major"
    graphs.write_graphml(grid, out / "grid.graphml")  # positions as node attributes x, y
    report = write_html_report(out / "report.html", "MNIST: 8x8 grid penalty", _report_sections(
        rows, figures, [comparison] + ([curves] if curves is not None else []), settings,
        command, f"{train_x.shape[0]} training and {test_x.shape[0]} test images; ", device))
    print(f"done in {time.perf_counter() - started:.1f} s")
    print(f"report: {report.resolve()}")
    return report


def _report_sections(rows: list[dict], figures: dict[str, list[Path]],
                     summary_figures: list[Path], settings: MnistGridSettings, command: str,
                     images: str, device: torch.device) -> list[tuple]:
    weight_text = ("Class-mean maps, the same maps minus the global mean, the segmentation map "
                   "(each cell takes the class whose L1-normalised map is largest there) and "
                   "test digits with their 8x8 maps, titled (label, prediction); red titles "
                   "are errors.")
    return [
        ("Settings", [
            f"{images}{settings.epochs} epoch(s) per weight, batch {settings.batch_size}, "
            f"Adam lr {settings.lr:g}, seed {settings.seed}, device {device}, "
            f"convolution on the grid: {'yes' if settings.conv_head else 'no'}.",
            "The penalty is weight * mean over the batch of a^T L a, with L the combinatorial "
            "Laplacian of the 4-neighbour 8x8 grid and a the 64 activations of the grid layer "
            "(before dropout).",
            f"Command: {command}",
        ]),
        ("Results", [
            "Test accuracy and loss; Moran's I (mean over the classes) and the smoothness "
            "ratio (Dirichlet energy relative to shuffled neurons; 1 = no structure, smaller "
            "= smoother) of the class-mean maps with the global mean map subtracted.",
            rows, *summary_figures,
        ]),
    ] + [(f"Weight {tag}", [weight_text, *paths]) for tag, paths in figures.items()]


def main(argv: Sequence[str] | None = None) -> Path | None:
    """``python -m pipelines.mnist_grid [options]``; returns the path of ``report.html``."""
    return run_command(MnistGridSettings, run, argv)


if __name__ == "__main__":
    run_cli(main)
