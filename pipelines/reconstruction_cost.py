r"""What structuring a latent layer costs in reconstruction: none / L1 / L2 / GSR on MNIST.

A dense autoencoder ``784-128-128-128-32-128-128-128-784`` (``gsr_pyg.models.DenseAutoencoder``,
linear latent and output) is trained on MNIST with one penalty on its 32-unit latent code
:math:`z` at a time, for every strength :math:`s`:

* ``none``: no penalty (trained once; its row has strength 0);
* ``l1``: :math:`s \cdot \tfrac1B \sum_b \sum_j |z_{bj}|`;
* ``l2``: :math:`s \cdot \tfrac1B \sum_b \tfrac12 \sum_j z_{bj}^2`;
* ``gsr``: :math:`s \cdot \tfrac1B \sum_b z_b^\top L z_b` with :math:`L` the Laplacian of
  the 4x8 torus (:func:`gsr_pyg.graphs.torus`).

Every penalty is a **batch mean** of a per-image sum over the 32 units, so a strength means
the same for each penalty and does not depend on the batch size. (The original experiment
summed L1 and L2 over the batch, which at batch 32 made them 32 times stronger than GSR at
the same nominal strength.) The table reports pure reconstruction MSE (mean over pixels and
images, model in eval mode), never the loss with the penalty in it.

Training uses MNIST's training images only (the last 10,000 of the 60,000, the validation
images, are left out; nothing is chosen here, so they are not used); the test MSE is on
the full test set unless ``--test-subset`` (or ``--quick``, which takes 5,000 training and
1,000 test images) cuts it, which the printed summary, the report and ``results.json``
say.

    python -m pipelines.reconstruction_cost --quick                # a minute on a laptop
    python -m pipelines.reconstruction_cost                        # strengths 1e-5 .. 1e5

Written to ``--out``: ``results.csv`` (regularizer, strength, train_mse, test_mse,
latent_mean_abs, latent_smoothness_ratio, train_time_s, steps), ``results.json`` (the rows,
the number of images of each part and whether it is a subset, the settings, the command),
``test_mse_vs_strength.png``, ``train_mse_vs_strength.png``, ``report.html``, and one run
directory per run under ``runs/`` (a second call resumes and skips finished runs). The
``task_loss`` logged in a run's ``metrics.jsonl`` includes the L1/L2 penalty. On the CPU the
pipeline uses one thread unless ``--threads`` says otherwise: for this small model at batch
32 more threads cost more in synchronisation than they gain.

Under ``torchrun`` every process trains on its own batches of ``--batch-size`` images (each
penalty is a mean over the process's batch, so a strength keeps its meaning per image) and
rank 0 evaluates and writes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from gsr_pyg import graphs, plotting
from gsr_pyg.capture import ActivationCapture
from gsr_pyg.metrics import smoothness_ratio
from gsr_pyg.models import DenseAutoencoder
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.report import write_html_report
from gsr_pyg.training import GSRTrainer

from ._cli import non_negative_float, option, positive_int, report_command, run_cli, run_command
from ._mnist import MnistRunSettings, describe_split, load_mnist_subsets, out_option
from ._runtime import (
    fit_timed,
    format_strength,
    pipeline_run,
    resolve_device,
    training_steps,
    write_results,
)

REGULARIZERS = ("none", "l1", "l2", "gsr")
LATENT_SHAPE = (4, 8)
RESULT_COLUMNS = ["regularizer", "strength", "train_mse", "test_mse", "latent_mean_abs",
                  "latent_smoothness_ratio", "train_time_s", "steps"]
EVAL_BATCH = 2000
#: How every penalty is normalised; in each run's config, so that a run directory trained
#: with L1/L2 summed over the batch (as before) is refused rather than resumed.
PENALTY_NORMALISATION = "batch mean"


@dataclass(frozen=True)
class ReconstructionCostSettings(MnistRunSettings):
    """The reference settings by default; :meth:`quick` is a short run on a subset."""

    prog: ClassVar[str] = "python -m pipelines.reconstruction_cost"
    description: ClassVar[str] = (
        "Reconstruction MSE of a dense MNIST autoencoder whose 32-unit latent is penalised by "
        "L1, L2 or GSR on a 4x8 torus, against the penalty strength.")

    regularizers: list[str] = option(list(REGULARIZERS), "which penalties to run (default: "
                                     "all four)", nargs="+", choices=REGULARIZERS)
    strengths: list[float] = option([10.0 ** k for k in range(-5, 6)],
                                    "penalty strengths (default 1e-5 1e-4 ... 1e5; --quick: "
                                    "1e-4 1e-2 1 100)", type=non_negative_float, nargs="+")
    epochs: int = option(5, "epochs per run (default 5; --quick: 2)", type=positive_int)
    batch_size: int = option(32, "batch size (default 32)", type=positive_int)
    lr: float = option(1e-3, "Adam learning rate (default 1e-3)", type=non_negative_float)
    out: str = out_option("runs/reconstruction_cost")

    @classmethod
    def quick(cls) -> ReconstructionCostSettings:
        """A short run on subsets (5,000 training, 1,000 test images; the outputs say so):
        the trend, not the numbers."""
        return cls(strengths=[1e-4, 1e-2, 1.0, 1e2], epochs=2, train_subset=5000,
                   test_subset=1000)


class ActivityPenaltyLoss:
    r"""Reconstruction MSE plus an activity penalty on the latent code that ``capture``
    holds from the same forward pass.

    ``"l1"``: :math:`s \cdot \frac1B \sum_b \sum_j |z_{bj}|`; ``"l2"``: :math:`s \cdot
    \frac1B \sum_b \frac12 \sum_j z_{bj}^2`: batch means, like the GSR penalty;
    ``"none"`` and ``"gsr"`` (whose penalty the regularizer adds): MSE alone.
    """

    def __init__(self, capture: ActivationCapture, layer: str, kind: str, strength: float):
        self.capture, self.layer, self.kind, self.strength = capture, layer, kind, strength

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(output, target)
        if self.kind in ("l1", "l2"):
            z = self.capture.output(self.layer)
            per_image = z.abs().sum(dim=1) if self.kind == "l1" else 0.5 * z.square().sum(dim=1)
            loss = loss + self.strength * per_image.mean()
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


def run_one(kind: str, strength: float, settings: ReconstructionCostSettings,
            data: tuple[torch.Tensor, torch.Tensor], device: torch.device, out: Path,
            is_main: bool) -> dict | None:
    """Train one penalty at one strength (resuming its run directory) and, on the main
    process, evaluate it: the results row (None on the other processes)."""
    train_x, test_x = data
    torch.manual_seed(settings.seed)  # every run starts from the same initial model
    model = DenseAutoencoder(train_x.shape[1], hidden=(128, 128, 128),
                             latent_dim=LATENT_SHAPE[0] * LATENT_SHAPE[1], noise_std=0.0)
    torus = graphs.torus(*LATENT_SHAPE)
    # the trainer takes a regularizer; for none / L1 / L2 its weight is 0
    reg = GraphSpectralRegularizer(model, {model.gsr_layer: torus},
                                   weight=strength if kind == "gsr" else 0.0)
    capture = ActivationCapture(model, [model.gsr_layer])
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    loader = DataLoader(TensorDataset(train_x), batch_size=settings.batch_size, shuffle=True)
    steps_per_epoch, max_steps = training_steps(train_x.shape[0], settings.batch_size,
                                                settings.epochs)
    run_dir = out / "runs" / ("none" if kind == "none" else f"{kind}_s{format_strength(strength)}")
    trainer = GSRTrainer(
        model, reg, optimizer, ActivityPenaltyLoss(capture, model.gsr_layer, kind, strength),
        max_steps=max_steps, run_dir=run_dir, checkpoint_every=min(steps_per_epoch, 1000),
        log_every=max(1, min(100, max_steps // 20)), smoothness_permutations=0,
        seed=settings.seed, device=device, verbose=not settings.quiet,
        config={"pipeline": "reconstruction_cost", "regularizer": kind, "strength": strength,
                "epochs": settings.epochs, "batch_size": settings.batch_size,
                "lr": settings.lr, "train_images": int(train_x.shape[0]),
                "penalty_normalisation": PENALTY_NORMALISATION},
    )
    train_time = fit_timed(trainer, loader, run_dir)
    capture.detach()
    reg.detach()
    if not is_main:
        return None
    train_eval = evaluate(model, train_x, device)
    test_eval = evaluate(model, test_x, device)
    latent = test_eval["latent"]
    smooth = smoothness_ratio(latent, torus.to(device), num_permutations=20, seed=settings.seed)
    return {"regularizer": kind, "strength": strength if kind != "none" else 0.0,
            "train_mse": train_eval["mse"], "test_mse": test_eval["mse"],
            "latent_mean_abs": float(latent.abs().mean()),
            "latent_smoothness_ratio": smooth, "train_time_s": train_time,
            "steps": trainer.step}


def run(settings: ReconstructionCostSettings, command: str | None = None) -> Path | None:
    """Train every penalty at every strength, then write ``results.csv`` / ``.json``, the
    MSE figures and ``report.html`` to ``settings.out``; returns the path of
    ``results.csv``. ``command`` is the command line shown in the report (default: one that
    gives ``settings``). Under torchrun the processes other than rank 0 return None."""
    command = report_command(settings, command)
    regularizers = list(dict.fromkeys(settings.regularizers))
    strengths = sorted(set(settings.strengths))
    threads = settings.threads
    if threads is None and resolve_device(settings.device).type == "cpu":
        threads = 1  # a small model at batch 32: one thread beats several (no sync overhead)
    with pipeline_run(threads, settings.device, settings.out) as (is_main, device, out):
        started = time.perf_counter()
        split = load_mnist_subsets(settings)
        train_x, test_x = split.train_images, split.test_images
        images = describe_split(split, settings)
        data = (train_x.flatten(1), test_x.flatten(1))
        runs = [(kind, strength) for kind in regularizers
                for strength in ([0.0] if kind == "none" else strengths)]
        if is_main:
            print(f"MNIST: {images}; device {device}; {len(runs)} runs of "
                  f"{settings.epochs} epoch(s), batch {settings.batch_size}", flush=True)
        rows = []
        for kind, strength in runs:
            row = run_one(kind, strength, settings, data, device, out, is_main)
            if row is None:
                continue
            rows.append({key: row[key] for key in RESULT_COLUMNS})
            print(f"{kind:>4} strength {format_strength(row['strength']):>6}: train MSE "
                  f"{row['train_mse']:.5f}, test MSE {row['test_mse']:.5f}, mean |z| "
                  f"{row['latent_mean_abs']:.3g}, {row['train_time_s']:.1f} s", flush=True)
    if not is_main:
        return None
    data_facts = {"train_images": int(train_x.shape[0]), "train_subset": settings.train_subset,
                  "validation_images_left_out": int(split.validation_images.shape[0]),
                  "test_images": int(test_x.shape[0]), "test_subset": settings.test_subset,
                  "full_test_set": settings.test_subset is None}
    results = write_results(rows, out, {
        "rows": rows, "data": data_facts, "penalty_normalisation": PENALTY_NORMALISATION,
        "settings": asdict(settings), "command": command})
    figures = write_mse_figures(out, rows, regularizers, strengths)
    test_part = ("the full test set" if settings.test_subset is None else
                 f"the first {test_x.shape[0]} test images only (a subset: --test-subset, "
                 "which --quick sets), not the full test set")
    write_html_report(out / "report.html", "MNIST autoencoder: the cost of a structured latent", [
        ("Settings", [
            f"{images}; {settings.epochs} epoch(s), batch {settings.batch_size}, Adam lr "
            f"{settings.lr:g}, seed {settings.seed}, device {device}. The validation images "
            f"are not trained on. Test MSE is on {test_part}.",
            "Every penalty (L1, L2, GSR on the 4x8 torus) is a batch mean of a per-image sum "
            "over the latent units. MSE is the pure reconstruction error, without any "
            "penalty.",
            f"Command: {command}",
        ]),
        ("Results", [rows, *figures]),
    ])
    print(f"done in {time.perf_counter() - started:.1f} s; test MSE on {test_part}")
    print(f"results: {results.resolve()}")
    return results


def write_mse_figures(out: Path, rows: list[dict], regularizers: list[str],
                      strengths: list[float]) -> list[Path]:
    """Test and train MSE against the strength, one curve per penalty (none when no
    strength was run)."""
    if not strengths:
        return []
    figures = []
    for split in ("test", "train"):
        curves = {}
        for kind in regularizers:
            chosen = [r for r in rows if r["regularizer"] == kind]
            # the unpenalised run is drawn as a flat line across the strengths
            values = ([chosen[0][f"{split}_mse"]] * len(strengths) if kind == "none"
                      else [r[f"{split}_mse"] for r in chosen])
            curves[kind.upper() if kind != "none" else "none (no penalty)"] = values
        path = out / f"{split}_mse_vs_strength.png"
        plotting.plot_curves(strengths, curves, xlabel="penalty strength",
                             ylabel=f"{split} reconstruction MSE", logy=True,
                             title=f"{split.capitalize()} MSE of the MNIST autoencoder",
                             path=path)
        figures.append(path)
    return figures


def main(argv: Sequence[str] | None = None) -> Path | None:
    """``python -m pipelines.reconstruction_cost [options]``; returns ``results.csv``."""
    return run_command(ReconstructionCostSettings, run, argv)


if __name__ == "__main__":
    run_cli(main)
