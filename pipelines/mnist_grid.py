"""MNIST with an 8x8 grid penalty on the classifier's 64-unit layer: accuracy, maps, segmentation.

For every penalty weight the reference classifier (``gsr_pyg.models.MNISTClassifier``) is
trained with the 4-neighbour 8x8 grid on its layer ``grid`` by
:class:`gsr_pyg.pipeline.GSRTrainer`; then, on the test set, the pipeline computes the
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

import argparse
import math
import sys
import time
from pathlib import Path

import networkx as nx
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from gsr_pyg import graphs, plotting, readouts
from gsr_pyg.metrics import morans_i, smoothness_ratio
from gsr_pyg.models import MNISTClassifier
from gsr_pyg.pipeline import GSRTrainer
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.report import write_html_report

from ._common import (
    add_common_arguments,
    fit_timed,
    format_strength,
    load_mnist_subsets,
    make_out_dir,
    non_negative_float,
    parse_arguments,
    pipeline_processes,
    positive_int,
    process_count,
    resolve_settings,
    run_cli,
    save_state_dict,
    torch_threads,
    write_file,
    write_results,
)

__all__ = ["FULL_SETTINGS", "QUICK_SETTINGS", "RESULT_COLUMNS", "build_parser", "main"]

GRID_SHAPE = (8, 8)
NUM_CLASSES = 10
#: The paper's settings (DESIGN.md section 1).
FULL_SETTINGS = {"weights": [0.0, 1e-1, 1e-2, 1e-3, 1e-4], "epochs": 40, "batch_size": 500,
                 "lr": 1e-4}
#: The demo: no penalty against the recommended weight, one epoch with a faster optimiser.
QUICK_SETTINGS = {"weights": [0.0, 1e-2], "epochs": 1, "batch_size": 128, "lr": 1e-3}
RESULT_COLUMNS = ["weight", "test_accuracy", "test_loss", "morans_i", "smoothness_ratio",
                  "train_time_s", "steps"]
EVAL_BATCH = 1000
SMOOTHNESS_PERMUTATIONS = 100


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.mnist_grid",
        description="Train the MNIST classifier with an 8x8 grid penalty on its 64-unit layer "
                    "for several penalty weights; write results, figures and report.html.",
    )
    parser.add_argument("--weights", type=non_negative_float, nargs="+", default=None,
                        help="penalty weights (default 0 0.1 0.01 0.001 0.0001; "
                             "--quick: 0 0.01)")
    parser.add_argument("--conv-head", action="store_true",
                        help="classify with the convolution on top of the 8x8 grid")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="epochs per weight (default 40; --quick: 1)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="batch size (default 500; --quick: 128)")
    parser.add_argument("--lr", type=non_negative_float, default=None,
                        help="Adam learning rate (default 1e-4; --quick: 1e-3)")
    add_common_arguments(parser, out_default="runs/mnist_grid")
    return parser


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: MNISTClassifier, reg: GraphSpectralRegularizer, images: torch.Tensor,
             labels: torch.Tensor, device: torch.device) -> dict:
    """Test accuracy and loss, predictions and the grid activations of every test image."""
    model.eval()
    logits, grid_activations = [], []
    for start in range(0, images.shape[0], EVAL_BATCH):
        logits.append(model(images[start:start + EVAL_BATCH].to(device)))
        # the regularizer's hook captured the grid layer's output of this forward pass
        grid_activations.append(reg.activations(model.gsr_layer))
    logits = torch.cat(logits)
    labels = labels.to(device)
    predictions = logits.argmax(dim=1)
    return {
        "accuracy": float((predictions == labels).float().mean()),
        "loss": float(F.cross_entropy(logits, labels)),
        "predictions": predictions,
        "labels": labels,
        "grid": torch.cat(grid_activations),
    }


def grid_readouts(grid_activations: torch.Tensor, labels: torch.Tensor, grid: object,
                  seed: int) -> dict:
    """Class maps, centred maps, segmentation and the smoothness of the centred maps."""
    maps = readouts.class_mean_maps(grid_activations, labels, num_classes=NUM_CLASSES)
    centered = readouts.subtract_global_mean(maps, grid_activations)
    present = ~torch.isnan(maps).any(dim=1)  # a tiny test subset may lack a class
    moran = morans_i(centered[present], grid)
    return {
        "maps": maps,
        "centered": centered,
        "segmentation": readouts.segmentation_map(maps),
        "morans_i": float(torch.nanmean(moran)),
        "smoothness_ratio": smoothness_ratio(centered[present], grid,
                                             num_permutations=SMOOTHNESS_PERMUTATIONS,
                                             seed=seed),
    }


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
    class_maps = out / f"class_maps_w{tag}.png"
    plotting.plot_grid_maps(found["maps"], GRID_SHAPE, titles=digits,
                            colorbar_label="mean activation",
                            suptitle=f"Class-mean activations of the 8x8 layer, weight {tag}",
                            path=class_maps)
    centered = out / f"class_maps_centered_w{tag}.png"
    plotting.plot_grid_maps(found["centered"], GRID_SHAPE, titles=digits, diverging=True,
                            colorbar_label="class mean - global mean",
                            suptitle=f"Class maps minus the global mean map, weight {tag}",
                            path=centered)
    segmentation = out / f"segmentation_w{tag}.png"
    plotting.plot_segmentation(found["segmentation"], GRID_SHAPE, num_classes=NUM_CLASSES,
                               title=f"Segmentation map, weight {tag}", path=segmentation)
    examples = out / f"examples_w{tag}.png"
    index = pick_examples(evaluation["labels"], evaluation["predictions"])
    plotting.plot_examples(images[index.cpu()], evaluation["grid"][index],
                           evaluation["labels"][index], evaluation["predictions"][index],
                           grid_shape=GRID_SHAPE, path=examples)
    return [class_maps, centered, segmentation, examples]


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


def write_grid_graphml(path: Path) -> Path:
    """The 8x8 grid as GraphML; positions become float node attributes ``x`` and ``y``."""
    graph = graphs.to_networkx(graphs.grid(*GRID_SHAPE))
    for _, attributes in graph.nodes(data=True):
        x, y = attributes.pop("pos")
        attributes["x"], attributes["y"] = float(x), float(y)
    graph.graph["name"] = "8x8 grid, 4 neighbours, row-major"
    return write_file(path, lambda tmp: nx.write_graphml(graph, tmp))


# --------------------------------------------------------------------------- one weight
def train_weight(weight: float, settings: dict, args: argparse.Namespace, data: tuple,
                 device: torch.device, out: Path) -> tuple[dict, MNISTClassifier,
                                                           GraphSpectralRegularizer, list]:
    train_x, train_y = data[0], data[1]
    tag = format_strength(weight)
    torch.manual_seed(args.seed)  # every weight starts from the same initial model
    model = MNISTClassifier(grid_shape=GRID_SHAPE, conv_head=args.conv_head)
    reg = GraphSpectralRegularizer(model, {model.gsr_layer: graphs.grid(*GRID_SHAPE)},
                                   weight=weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=settings["batch_size"],
                        shuffle=True)
    # under torchrun each process takes batch_size samples per step
    steps_per_epoch = math.ceil(train_x.shape[0] / (settings["batch_size"] * process_count()))
    run_dir = out / "runs" / f"w{tag}"
    max_steps = settings["epochs"] * steps_per_epoch
    trainer = GSRTrainer(
        model, reg, optimizer, F.cross_entropy, max_steps=max_steps, run_dir=run_dir,
        checkpoint_every=min(steps_per_epoch, 500), log_every=max(1, min(50, max_steps // 20)),
        seed=args.seed, device=device, verbose=not args.quiet,
        config={"pipeline": "mnist_grid", "weight": weight, "epochs": settings["epochs"],
                "batch_size": settings["batch_size"], "lr": settings["lr"],
                "conv_head": args.conv_head, "train_images": int(train_x.shape[0])},
    )
    train_time = fit_timed(trainer, loader, run_dir)
    if trainer.is_main:
        save_state_dict(model, out / f"model_w{tag}.pt")
    row = {"weight": weight, "train_time_s": train_time, "steps": trainer.step}
    return row, model, reg, trainer.history.metrics


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> Path:
    """Run the pipeline; returns the path of ``report.html``."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_arguments(build_parser(), argv)
    with torch_threads(args.threads), pipeline_processes(args.device) as (is_main, device):
        return _run(args, argv, device, is_main)


def _run(args: argparse.Namespace, argv: list[str], device: torch.device,
         is_main: bool) -> Path | None:
    """Train every weight; under torchrun the processes other than rank 0 train with the
    main one and return None without evaluating or writing."""
    settings = resolve_settings(args, FULL_SETTINGS, QUICK_SETTINGS)
    settings["weights"] = list(dict.fromkeys(settings["weights"]))  # drop repeats, keep order
    out = make_out_dir(args.out)
    started = time.perf_counter()

    data = load_mnist_subsets(args.data, args.train_subset, args.test_subset)
    test_x, test_y = data[2], data[3]
    if is_main:
        print(f"MNIST: {data[0].shape[0]} training and {test_x.shape[0]} test images; "
              f"device {device}; weights {[format_strength(w) for w in settings['weights']]}, "
              f"{settings['epochs']} epoch(s), batch {settings['batch_size']}, Adam lr "
              f"{settings['lr']:g}, conv head {args.conv_head}", flush=True)
    grid = graphs.grid(*GRID_SHAPE)

    rows, figures, histories = [], {}, {}
    for weight in settings["weights"]:
        tag = format_strength(weight)
        row, model, reg, history = train_weight(weight, settings, args, data, device, out)
        if not is_main:
            reg.detach()
            continue
        evaluation = evaluate(model, reg, test_x, test_y, device)
        found = grid_readouts(evaluation["grid"], evaluation["labels"], grid.to(device),
                              seed=args.seed)
        row.update(test_accuracy=evaluation["accuracy"], test_loss=evaluation["loss"],
                   morans_i=found["morans_i"], smoothness_ratio=found["smoothness_ratio"])
        rows.append({key: row[key] for key in RESULT_COLUMNS})
        figures[tag] = write_weight_figures(out, tag, test_x, evaluation, found)
        histories[tag] = history
        reg.detach()
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
    write_grid_graphml(out / "grid.graphml")
    report = write_html_report(out / "report.html", "MNIST: 8x8 grid penalty",
                               _report_sections(rows, figures, comparison, curves, settings,
                                                args, argv, device, data))
    print(f"done in {time.perf_counter() - started:.1f} s")
    print(f"report: {report.resolve()}")
    return report


def _report_sections(rows, figures, comparison, curves, settings, args, argv, device, data):
    command = " ".join(["python -m pipelines.mnist_grid", *argv])
    sections = [
        ("Settings", [
            f"{data[0].shape[0]} training and {data[2].shape[0]} test images; "
            f"{settings['epochs']} epoch(s) per weight, batch {settings['batch_size']}, "
            f"Adam lr {settings['lr']:g}, seed {args.seed}, device {device}, "
            f"convolution on the grid: {'yes' if args.conv_head else 'no'}.",
            "The penalty is weight * mean over the batch of a^T L a, with L the combinatorial "
            "Laplacian of the 4-neighbour 8x8 grid and a the 64 activations of the grid layer "
            "(before dropout).",
            f"Command: {command}",
        ]),
        ("Results", [
            "Test accuracy and loss; Moran's I (mean over the classes) and the smoothness "
            "ratio (Dirichlet energy relative to shuffled neurons; 1 = no structure, smaller "
            "= smoother) of the class-mean maps with the global mean map subtracted.",
            rows, comparison,
        ] + ([curves] if curves is not None else [])),
    ]
    for tag, paths in figures.items():
        sections.append((f"Weight {tag}", [
            "Class-mean maps, the same maps minus the global mean, the segmentation map "
            "(each cell takes the class whose L1-normalised map is largest there) and test "
            "digits with their 8x8 maps, titled (label, prediction); red titles are errors.",
            *paths,
        ]))
    return sections


if __name__ == "__main__":
    run_cli(main)
