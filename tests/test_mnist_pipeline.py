"""The MNIST pipelines on a small MNIST subset (or upscaled 8x8 digits): their numbers, files
and report, resuming, and a run under torchrun."""

from __future__ import annotations

import csv
import functools
import gzip
import json
import re
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
from matplotlib import image as mpimg

from gsr_pyg.capture import ActivationCapture
from gsr_pyg.data.mnist import load_mnist
from gsr_pyg.graphs import torus
from gsr_pyg.models import DenseAutoencoder, MNISTClassifier
from gsr_pyg.regularizer import GraphSpectralRegularizer
from pipelines import mnist_grid, reconstruction_cost
from pipelines._runtime import resolve_device

sys.path.insert(0, str(Path(__file__).parent))
from launch import run, torchrun  # noqa: E402
from test_mnist_data import idx_bytes  # noqa: E402

TRAIN_IMAGES = 2000
TEST_IMAGES = 500

@functools.lru_cache(maxsize=1)
def _small_mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """2,000 + 500 real MNIST images; without MNIST installed, the 8x8 digits upscaled."""
    try:
        train_x, train_y, test_x, test_y = load_mnist()
        return (train_x[:TRAIN_IMAGES], train_y[:TRAIN_IMAGES], test_x[:TEST_IMAGES],
                test_y[:TEST_IMAGES])
    except FileNotFoundError:
        from gsr_pyg.data.mnist import load_digits_8x8

        images, labels = load_digits_8x8()
        # 8x8 -> 24x24 by repetition, padded to 28x28 like MNIST's centred digits
        images = torch.nn.functional.pad(images.repeat_interleave(3, 2).repeat_interleave(3, 3),
                                         (2, 2, 2, 2))
        split = 1400
        return images[:split], labels[:split], images[split:], labels[split:]


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    """The subset as gzipped IDX files, read back through ``--data``."""
    return write_small_mnist(tmp_path_factory.mktemp("mnist"))


def write_small_mnist(directory: Path) -> Path:
    """The subset as gzipped IDX files in ``directory``; returns it."""
    train_x, train_y, test_x, test_y = _small_mnist()
    for stem, images, labels in (("train", train_x, train_y), ("t10k", test_x, test_y)):
        pixels = (images[:, 0] * 255).round().clamp(0, 255).numpy()
        (directory / f"{stem}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(pixels)))
        (directory / f"{stem}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(labels.numpy())))
    return directory


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def _check_png(path: Path) -> None:
    """The file decodes as an image that is not blank (several distinct colours)."""
    assert path.is_file(), path
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, path
    rgb = (pixels[..., :3] * 255).round().astype(np.int64)
    colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert colours.size > 10, f"{path} has only {colours.size} colours"
    assert pixels[..., :3].std() > 0.05, f"{path} is nearly uniform"


def _validation_start() -> int:
    """Where the validation images of the small MNIST begin: its last sixth is held out
    (10,000 of MNIST's 60,000)."""
    total = len(_small_mnist()[0])
    return total - total // 6


def test_mnist_grid_pipeline(mnist_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    report = mnist_grid.main([
        "--data", str(mnist_dir), "--out", str(out), "--weights", "0", "0.1",
        "--epochs", "1", "--batch-size", "50", "--lr", "1e-3", "--device", "cpu",
        "--train-subset", "2000", "--threads", "1", "--seed", "0", "--quiet",
    ])
    assert report == out / "report.html"
    # the validation images are not trained on, whatever --train-subset asks for
    train_images = _validation_start()
    expected_steps = -(-train_images // 50)
    config = json.loads((out / "runs" / "w0.1" / "config.json").read_text())
    assert config["user.train_images"] == train_images
    printed = capsys.readouterr().out
    validation_images = len(_small_mnist()[0]) - train_images
    assert (f"MNIST: {train_images} training (--train-subset 2000), {validation_images} "
            f"validation and {len(_small_mnist()[2])} test images") in printed

    columns, rows = _read_csv(out / "results.csv")
    assert columns == mnist_grid.RESULT_COLUMNS
    assert [float(r["weight"]) for r in rows] == [0.0, 0.1]
    assert json.loads((out / "results.json").read_text())[1]["weight"] == 0.1
    for row in rows:
        assert float(row["test_accuracy"]) > 0.5  # chance is 0.1
        assert int(row["steps"]) == expected_steps
        assert float(row["train_time_s"]) > 0
        assert 0 < float(row["test_loss"]) < 2.3  # below the loss of a uniform guess
    unpenalised, penalised = (float(r["morans_i"]) for r in rows)
    # The grid penalty makes the centred class maps smooth on the grid; without it the
    # neurons are unordered and Moran's I is near its null value -1/63.
    assert abs(unpenalised) < 0.2
    assert penalised > unpenalised + 0.05
    assert float(rows[1]["smoothness_ratio"]) < float(rows[0]["smoothness_ratio"])

    pngs = sorted(out.glob("*.png"))
    for tag in ("0", "0.1"):
        for stem in ("class_maps", "class_maps_centered", "segmentation", "examples"):
            assert out / f"{stem}_w{tag}.png" in pngs
    assert out / "weight_comparison.png" in pngs
    for path in pngs:
        _check_png(path)

    text = report.read_text()
    assert text.count("data:image/png;base64,") == len(pngs)
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # nothing loaded from a network

    grid = nx.read_graphml(out / "grid.graphml")
    assert (grid.number_of_nodes(), grid.number_of_edges()) == (64, 112)
    assert grid.nodes["9"]["x"] == 1.0 and grid.nodes["9"]["y"] == 6.0  # row 1, column 1

    # the saved model gives back the reported accuracies: validation on the last training
    # images of the files, test on the test images
    model = MNISTClassifier()
    model.load_state_dict(torch.load(out / "model_w0.1.pt", weights_only=True))
    model.eval()
    train_x, train_y, test_x, test_y = _small_mnist()
    start = _validation_start()
    for images, labels, column in ((train_x[start:], train_y[start:], "validation_accuracy"),
                                   (test_x, test_y, "test_accuracy")):
        with torch.no_grad():
            pixels = (images * 255).round() / 255  # as stored in the IDX files
            accuracy = (model(pixels).argmax(1) == labels).float().mean().item()
        assert accuracy == pytest.approx(float(rows[1][column]), abs=1e-6)
    assert (out / "runs" / "w0.1" / "checkpoint.pt").is_file()

    # the choice reads validation numbers only: 0.1 is chosen when its validation accuracy
    # is within 0.5 points of weight 0's
    within = (float(rows[1]["validation_accuracy"])
              >= float(rows[0]["validation_accuracy"]) - 0.005)
    assert [r["chosen"] for r in rows] == ["False", str(within)]
    assert "The recommended weight is chosen on the validation images alone" in text
    assert ("no weight within the tolerance" in text) == (not within)


def _number(value: str) -> object:
    """A CSV cell as the JSON holds it: int, float or the string."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _mean_image_mse(mnist_dir: Path, train: int, test: int) -> float:
    """Test MSE of the constant model that outputs the mean training image, on the pixels
    the pipeline reads (the IDX files of ``mnist_dir``)."""
    train_x, _, test_x, _ = load_mnist(str(mnist_dir))
    mean_image = train_x[:train].flatten(1).double().mean(dim=0)
    return float((test_x[:test].flatten(1).double() - mean_image).square().mean())


def test_reconstruction_cost_pipeline_and_resume(mnist_dir, tmp_path):
    out = tmp_path / "rc"
    argv = ["--data", str(mnist_dir), "--out", str(out), "--strengths", "0.01", "100",
            "--epochs", "3", "--lr", "3e-3", "--train-subset", "1600", "--test-subset", "200",
            "--device", "cpu", "--threads", "1", "--quiet"]
    results = reconstruction_cost.main(argv)
    columns, rows = _read_csv(results)
    assert columns == reconstruction_cost.RESULT_COLUMNS
    runs = [(r["regularizer"], float(r["strength"])) for r in rows]
    assert runs == [("none", 0.0), ("l1", 0.01), ("l1", 100.0), ("l2", 0.01), ("l2", 100.0),
                    ("gsr", 0.01), ("gsr", 100.0)]
    by_run = {run: row for run, row in zip(runs, rows)}
    for row in rows:
        assert int(row["steps"]) == 150  # 3 epochs of 1600 images / batch 32
        # pure reconstruction error of [0, 1] pixels: never the penalty-inflated loss
        assert 0 < float(row["train_mse"]) < 0.2 and 0 < float(row["test_mse"]) < 0.2
    # The model that answers every test image with the mean training image sets the bar: the
    # unpenalised autoencoder and a weak GSR penalty reconstruct clearly better, while a strong
    # L1 penalty shrinks the code to almost nothing and leaves about the mean image.
    mean_image_mse = _mean_image_mse(mnist_dir, train=1600, test=200)
    none = by_run[("none", 0.0)]
    assert float(none["test_mse"]) < 0.7 * mean_image_mse
    assert float(by_run[("gsr", 0.01)]["test_mse"]) < 0.85 * mean_image_mse
    assert 0.95 * mean_image_mse < float(by_run[("l1", 100.0)]["test_mse"]) < 1.05 * mean_image_mse
    assert all(float(row["test_mse"]) < 1.05 * mean_image_mse for row in rows)
    # a strong L1 penalty shrinks the code; a strong GSR penalty smooths it on the torus
    assert float(by_run[("l1", 100.0)]["latent_mean_abs"]) < 0.1 * float(none["latent_mean_abs"])
    gsr_ratios = [float(by_run[("gsr", s)]["latent_smoothness_ratio"]) for s in (0.01, 100.0)]
    assert max(gsr_ratios) < float(none["latent_smoothness_ratio"])
    assert min(gsr_ratios) < float(none["latent_smoothness_ratio"]) - 0.2
    for name in ("test_mse_vs_strength.png", "train_mse_vs_strength.png"):
        _check_png(out / name)
    # the outputs say that the test MSE is on a subset
    content = json.loads((out / "results.json").read_text())
    assert content["data"] == {"train_images": 1600, "train_subset": 1600,
                               "validation_images_left_out": len(_small_mnist()[0]) // 6,
                               "test_images": 200, "test_subset": 200, "full_test_set": False}
    assert content["rows"] == json.loads(json.dumps(
        [{k: _number(v) for k, v in r.items()} for r in rows]))
    assert content["penalty_normalisation"] == "batch mean"
    html = (out / "report.html").read_text()
    assert "Test MSE is on the first 200 test images only (a subset" in html
    config = json.loads((out / "runs" / "l1_s100" / "config.json").read_text())
    assert config["user.penalty_normalisation"] == "batch mean"

    # a second call resumes: every run is finished, so nothing is trained again
    checkpoints = sorted((out / "runs").glob("*/checkpoint.pt"))
    assert len(checkpoints) == 7
    stamps = [path.stat().st_mtime_ns for path in checkpoints]
    reconstruction_cost.main(argv)
    assert [path.stat().st_mtime_ns for path in checkpoints] == stamps
    _, again = _read_csv(results)
    assert [(r["steps"], r["train_mse"], r["test_mse"]) for r in again] == [
        (r["steps"], r["train_mse"], r["test_mse"]) for r in rows]


def test_resolve_device_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="--device"):
        resolve_device("not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def _grid_row(weight, response, validation, moran, test, test_moran):
    return {"weight": weight, "spectral_response": response, "validation_accuracy": validation,
            "validation_morans_i": moran, "chosen": False, "test_accuracy": test,
            "morans_i": test_moran}


def test_mark_chosen_reads_only_validation_numbers():
    rows = [_grid_row(0.0, "none", 0.990, 0.04, 0.990, 0.04),
            _grid_row(0.001, "laplacian", 0.989, 0.50, 0.995, 0.90),
            _grid_row(0.01, "laplacian", 0.9855, 0.75, 0.970, 0.60),
            _grid_row(0.1, "laplacian", 0.984, 0.85, 0.990, 0.95),
            _grid_row(0.01, "heat", 0.980, 0.80, 0.990, 0.90)]
    chosen = mnist_grid.mark_chosen(rows)
    # 0.01 is 0.45 points below weight 0 on validation (within 0.5) with the most order;
    # 0.1 (0.6 points) is out though its test numbers are the best; heat has no weight
    # within the tolerance
    assert chosen == {"laplacian": rows[2], "heat": None}
    assert [r["chosen"] for r in rows] == [False, False, True, False, False]
    assert mnist_grid.mark_chosen(rows[1:]) == {}  # without weight 0 nothing is chosen


def test_pick_examples_puts_errors_last_and_one_correct_per_class():
    labels = torch.tensor([3, 0, 0, 1, 7, 2, 1, 5])
    predictions = torch.tensor([3, 0, 4, 1, 1, 2, 1, 5])
    chosen = mnist_grid.pick_examples(labels, predictions, num_correct=3, num_wrong=2)
    # wrong: indices 2 and 4; correct, by class: 0 -> 1, 1 -> 3, 2 -> 5
    assert chosen.tolist() == [1, 3, 5, 2, 4]
    only_wrong = mnist_grid.pick_examples(labels, predictions, num_correct=0, num_wrong=1)
    assert only_wrong.tolist() == [2]


def test_activity_penalty_reads_the_latent_of_the_same_forward_pass():
    torch.manual_seed(0)
    model = DenseAutoencoder(12, hidden=(8,), latent_dim=4, noise_std=0.0)
    x = torch.rand(5, 12)
    z = model.encode(x).detach()
    mse = torch.nn.functional.mse_loss(model(x), x).detach()
    with ActivationCapture(model, [model.gsr_layer]) as capture:
        # batch means of per-image sums, like the GSR penalty
        expected = {"none": mse, "gsr": mse, "l1": mse + 0.3 * z.abs().sum() / 5,
                    "l2": mse + 0.3 * 0.5 * z.square().sum() / 5}
        for kind, value in expected.items():
            loss_fn = reconstruction_cost.ActivityPenaltyLoss(capture, model.gsr_layer, kind,
                                                              0.3)
            loss = loss_fn(model(x), x)
            torch.testing.assert_close(loss, value)
        # the penalty trains the model: the gradient is that of MSE + L2 term (the last kind)
        loss_fn(model(x), x).backward()
        through_capture = model.latent.weight.grad.clone()
        model.zero_grad()
        direct = (torch.nn.functional.mse_loss(model(x), x)
                  + 0.15 * model.encode(x).square().sum() / 5)
        direct.backward()
        torch.testing.assert_close(through_capture, model.latent.weight.grad)
        assert through_capture.abs().sum() > 0


def test_every_penalty_has_the_same_normalisation():
    """The same images twice in a batch: a batch mean does not change, a batch sum would
    double. L1, L2 and the regularizer's GSR penalty (4x8 torus) all stay the same."""
    torch.manual_seed(0)
    model = DenseAutoencoder(12, hidden=(8,), latent_dim=32, noise_std=0.0)
    x = torch.rand(5, 12)
    reg = GraphSpectralRegularizer(model, {model.gsr_layer: torus(4, 8)}, weight=0.3)
    with ActivationCapture(model, [model.gsr_layer]) as capture, torch.no_grad():
        for kind in ("l1", "l2"):
            loss_fn = reconstruction_cost.ActivityPenaltyLoss(capture, model.gsr_layer, kind,
                                                              0.3)
            once, twice = (float(loss_fn(model(b), b)) for b in (x, torch.cat([x, x])))
            assert twice == pytest.approx(once, rel=1e-6)
            assert once > float(torch.nn.functional.mse_loss(model(x), x)) + 1e-3
        penalties = []
        for batch in (x, torch.cat([x, x])):
            model(batch)
            penalties.append(float(reg.penalty()))
        z = model.encode(x).detach().double()
        edges = [(r * 8 + c, r * 8 + (c + 1) % 8) for r in range(4) for c in range(8)] + [
            (r * 8 + c, ((r + 1) % 4) * 8 + c) for r in range(4) for c in range(8)]
        by_hand = sum(float((z[:, i] - z[:, j]).square().mean()) for i, j in edges)
        assert penalties[0] == pytest.approx(0.3 * by_hand, rel=1e-5)
        assert penalties[1] == pytest.approx(penalties[0], rel=1e-6)
    reg.detach()


@pytest.mark.skipif(not torch.distributed.is_available(),
                    reason="torch.distributed is not available")
def test_reconstruction_cost_under_torchrun(mnist_dir, tmp_path):
    """Two processes train together (a step sees 2 x 32 images) and only rank 0 writes."""
    out = tmp_path / "rc2"
    done = run(torchrun("-m", "pipelines.reconstruction_cost", "--data", str(mnist_dir), "--out",
                        str(out), "--regularizers", "none", "gsr", "--strengths", "1",
                        "--epochs", "1", "--train-subset", "640", "--test-subset", "100",
                        "--device", "cpu", "--threads", "1", "--quiet"))
    columns, rows = _read_csv(out / "results.csv")
    assert [(r["regularizer"], float(r["strength"])) for r in rows] == [("none", 0.0),
                                                                       ("gsr", 1.0)]
    assert [int(r["steps"]) for r in rows] == [10, 10]  # 640 images / (2 processes x 32)
    assert done.stdout.count("results: ") == 1  # one process reports
    assert (out / "report.html").is_file() and not list(out.rglob("*.tmp"))
