r"""What structuring a latent layer costs in reconstruction: none / L1 / L2 / GSR on MNIST.

A dense autoencoder ``784-128-128-128-32-128-128-128-784`` (``gsr_pyg.models.DenseAutoencoder``,
linear latent and output) is trained on MNIST with one penalty on its 32-unit latent code
:math:`z` at a time, for every strength :math:`s`:

* ``none``: no penalty (trained once; its row has strength 0);
* ``l1``: :math:`s \sum_{b,j} |z_{bj}|`;
* ``l2``: :math:`s \cdot \tfrac12 \sum_{b,j} z_{bj}^2`;
* ``gsr``: :math:`s \cdot \tfrac1B \sum_b z_b^\top L z_b` with :math:`L` the Laplacian of
  the 4x8 torus (:func:`gsr_pyg.graphs.torus`).

The L1 and L2 terms are **sums over the batch** (as in the original experiment), while the
GSR term is a batch mean, so equal strengths are not equally strong: at batch 32 an L1/L2
strength weighs 32 times more than the same GSR strength. The table reports pure
reconstruction MSE (mean over pixels and images, model in eval mode), never the loss with
the penalty in it.

    python -m pipelines.reconstruction_cost --quick                # a minute on a laptop
    python -m pipelines.reconstruction_cost                        # strengths 1e-5 .. 1e5

Written to ``--out``: ``results.csv`` / ``results.json`` (regularizer, strength, train_mse,
test_mse, latent_mean_abs, latent_smoothness_ratio, train_time_s, steps),
``test_mse_vs_strength.png``, ``train_mse_vs_strength.png``, ``report.html``, and one run
directory per run under ``runs/`` (a second call resumes and skips finished runs). The
``task_loss`` logged in a run's ``metrics.jsonl`` includes the L1/L2 penalty. On the CPU the
pipeline uses one thread unless ``--threads`` says otherwise: for this small model at batch
32 more threads cost more in synchronisation than they gain.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from gsr_pyg import graphs, plotting
from gsr_pyg.metrics import smoothness_ratio
from gsr_pyg.models import DenseAutoencoder
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
    positive_int,
    resolve_device,
    resolve_settings,
    run_cli,
    torch_threads,
    write_results,
)

__all__ = ["REGULARIZERS", "FULL_SETTINGS", "QUICK_SETTINGS", "RESULT_COLUMNS",
           "ActivityPenaltyLoss", "build_parser", "main"]

REGULARIZERS = ("none", "l1", "l2", "gsr")
LATENT_SHAPE = (4, 8)
#: The reference settings.
FULL_SETTINGS = {"regularizers": list(REGULARIZERS),
                 "strengths": [10.0 ** k for k in range(-5, 6)],
                 "epochs": 5, "batch_size": 32, "lr": 1e-3,
                 "train_subset": None, "test_subset": None}
#: A short run on a subset: the trend, not the numbers.
QUICK_SETTINGS = {"strengths": [1e-4, 1e-2, 1.0, 1e2], "epochs": 2,
                  "train_subset": 5000, "test_subset": 1000}
RESULT_COLUMNS = ["regularizer", "strength", "train_mse", "test_mse", "latent_mean_abs",
                  "latent_smoothness_ratio", "train_time_s", "steps"]
EVAL_BATCH = 2000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.reconstruction_cost",
        description="Reconstruction MSE of a dense MNIST autoencoder whose 32-unit latent is "
                    "penalised by L1, L2 or GSR on a 4x8 torus, against the penalty strength.",
    )
    parser.add_argument("--regularizers", nargs="+", choices=REGULARIZERS, default=None,
                        help="which penalties to run (default: all four)")
    parser.add_argument("--strengths", type=non_negative_float, nargs="+", default=None,
                        help="penalty strengths (default 1e-5 1e-4 ... 1e5; "
                             "--quick: 1e-4 1e-2 1 100)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="epochs per run (default 5; --quick: 2)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="batch size (default 32)")
    parser.add_argument("--lr", type=non_negative_float, default=None,
                        help="Adam learning rate (default 1e-3)")
    add_common_arguments(parser, out_default="runs/reconstruction_cost")
    return parser


class ActivityPenaltyLoss:
    r"""Reconstruction MSE plus an activity penalty on the latent code that the regularizer's
    hook captured in the same forward pass.

    ``"l1"``: :math:`s \sum_{b,j} |z_{bj}|`; ``"l2"``: :math:`s \cdot \frac12 \sum_{b,j}
    z_{bj}^2` (batch sums); ``"none"``: MSE alone.
    """

    def __init__(self, reg: GraphSpectralRegularizer, layer: str, kind: str, strength: float):
        self.reg, self.layer, self.kind, self.strength = reg, layer, kind, strength

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(output, target)
        if self.kind == "l1":
            loss = loss + self.strength * self.reg.activations(self.layer).abs().sum()
        elif self.kind == "l2":
            loss = loss + self.strength * 0.5 * self.reg.activations(self.layer).square().sum()
        return loss


@torch.no_grad()
def evaluate(model: DenseAutoencoder, images: torch.Tensor, device: torch.device) -> dict:
    """Pure reconstruction MSE (mean over pixels and images) and the latent codes."""
    model.eval()
    squared_error = torch.zeros((), dtype=torch.float64, device=device)
    codes = []
    for start in range(0, images.shape[0], EVAL_BATCH):
        x = images[start:start + EVAL_BATCH].to(device)
        z = model.encode(x)
        squared_error += (model.decode(z) - x).square().sum(dtype=torch.float64)
        codes.append(z)
    return {"mse": float(squared_error) / images.numel(), "latent": torch.cat(codes)}


def run_one(kind: str, strength: float, settings: dict, args: argparse.Namespace,
            data: tuple, device: torch.device, out: Path) -> dict:
    train_x, test_x = data
    torch.manual_seed(args.seed)  # every run starts from the same initial model
    model = DenseAutoencoder(train_x.shape[1], hidden=(128, 128, 128),
                             latent_dim=LATENT_SHAPE[0] * LATENT_SHAPE[1], noise_std=0.0)
    torus = graphs.torus(*LATENT_SHAPE)
    reg = GraphSpectralRegularizer(model, {model.gsr_layer: torus},
                                   weight=strength if kind == "gsr" else 0.0)
    loss_fn = ActivityPenaltyLoss(reg, model.gsr_layer, kind, strength)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"])
    loader = DataLoader(TensorDataset(train_x), batch_size=settings["batch_size"], shuffle=True)
    steps_per_epoch = math.ceil(train_x.shape[0] / settings["batch_size"])
    name = "none" if kind == "none" else f"{kind}_s{format_strength(strength)}"
    run_dir = out / "runs" / name
    max_steps = settings["epochs"] * steps_per_epoch
    trainer = GSRTrainer(
        model, reg, optimizer, loss_fn, max_steps=max_steps, run_dir=run_dir,
        checkpoint_every=min(steps_per_epoch, 1000), log_every=max(1, min(100, max_steps // 20)),
        smoothness_permutations=0, seed=args.seed, device=device, verbose=not args.quiet,
        config={"pipeline": "reconstruction_cost", "regularizer": kind, "strength": strength,
                "epochs": settings["epochs"], "batch_size": settings["batch_size"],
                "lr": settings["lr"], "train_images": int(train_x.shape[0])},
    )
    train_time = fit_timed(trainer, loader, run_dir)
    train_eval = evaluate(model, train_x, device)
    test_eval = evaluate(model, test_x, device)
    reg.detach()
    latent = test_eval["latent"]
    smooth = smoothness_ratio(latent, torus.to(device), num_permutations=20, seed=args.seed)
    return {"regularizer": kind, "strength": strength if kind != "none" else 0.0,
            "train_mse": train_eval["mse"], "test_mse": test_eval["mse"],
            "latent_mean_abs": float(latent.abs().mean()),
            "latent_smoothness_ratio": smooth, "train_time_s": train_time,
            "steps": trainer.step}


def main(argv: list[str] | None = None) -> Path:
    """Run the pipeline; returns the path of ``results.csv``."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_arguments(build_parser(), argv)
    threads = args.threads
    if threads is None and resolve_device(args.device).type == "cpu":
        threads = 1  # a small model at batch 32: one thread beats several (no sync overhead)
    with torch_threads(threads):
        return _run(args, argv)


def _run(args: argparse.Namespace, argv: list[str]) -> Path:
    settings = resolve_settings(args, FULL_SETTINGS, QUICK_SETTINGS)
    regularizers = list(dict.fromkeys(settings["regularizers"]))
    strengths = sorted(set(settings["strengths"]))
    device = resolve_device(args.device)
    out = make_out_dir(args.out)
    started = time.perf_counter()

    train_x, _, test_x, _ = load_mnist_subsets(args.data, settings["train_subset"],
                                               settings["test_subset"])
    data = (train_x.flatten(1), test_x.flatten(1))
    runs = [(kind, strength) for kind in regularizers
            for strength in ([0.0] if kind == "none" else strengths)]
    print(f"MNIST: {train_x.shape[0]} training and {test_x.shape[0]} test images; device "
          f"{device}; {len(runs)} runs of {settings['epochs']} epoch(s), batch "
          f"{settings['batch_size']}", flush=True)

    rows = []
    for kind, strength in runs:
        row = run_one(kind, strength, settings, args, data, device, out)
        rows.append({key: row[key] for key in RESULT_COLUMNS})
        print(f"{kind:>4} strength {format_strength(row['strength']):>6}: train MSE "
              f"{row['train_mse']:.5f}, test MSE {row['test_mse']:.5f}, mean |z| "
              f"{row['latent_mean_abs']:.3g}, {row['train_time_s']:.1f} s", flush=True)
    results = write_results(rows, out)

    figures = []
    for split in ("test", "train"):
        curves = {}
        for kind in regularizers:
            chosen = [r for r in rows if r["regularizer"] == kind]
            # the unpenalised run is drawn as a flat line across the strengths
            values = ([chosen[0][f"{split}_mse"]] * len(strengths) if kind == "none"
                      else [r[f"{split}_mse"] for r in chosen])
            curves[kind.upper() if kind != "none" else "none (no penalty)"] = values
        if strengths:
            path = out / f"{split}_mse_vs_strength.png"
            plotting.plot_curves(strengths, curves, xlabel="penalty strength",
                                 ylabel=f"{split} reconstruction MSE", logy=True,
                                 title=f"{split.capitalize()} MSE of the MNIST autoencoder",
                                 path=path)
            figures.append(path)
    write_html_report(out / "report.html", "MNIST autoencoder: the cost of a structured latent", [
        ("Settings", [
            f"{train_x.shape[0]} training and {test_x.shape[0]} test images; "
            f"{settings['epochs']} epoch(s), batch {settings['batch_size']}, Adam lr "
            f"{settings['lr']:g}, seed {args.seed}, device {device}.",
            "L1 and L2 penalties are sums over the batch; the GSR penalty (4x8 torus) is a "
            "batch mean. MSE is the pure reconstruction error, without any penalty.",
            " ".join(["Command: python -m pipelines.reconstruction_cost", *argv]),
        ]),
        ("Results", [rows, *figures]),
    ])
    print(f"done in {time.perf_counter() - started:.1f} s")
    print(f"results: {results.resolve()}")
    return results


if __name__ == "__main__":
    run_cli(main)
