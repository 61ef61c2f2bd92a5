"""The spectral-response experiment of ``pipelines.mnist_grid`` (heat and high_pass penalties at
the laplacian's strength), the grid-spectrum figures of the MNIST and learned-graph pipelines,
and ``gsr_pyg.plotting.plot_graph_spectrum``."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from gsr_pyg.capture import ActivationCapture
from gsr_pyg.data.mnist import load_mnist
from gsr_pyg.graphs import ring
from gsr_pyg.metrics import graph_fourier_energy
from gsr_pyg.models import MNISTClassifier
from gsr_pyg.plotting import plot_graph_spectrum
from pipelines import learned_graph, mnist_grid
from pipelines._cli import parse_settings

sys.path.insert(0, str(Path(__file__).parent))
from test_mnist_pipeline import _check_png, _read_csv, write_small_mnist  # noqa: E402

TRAIN = 300
ARGV = ["--weights", "0", "0.1", "--spectral-response", "laplacian", "heat", "high_pass",
        "--epochs", "1", "--batch-size", "50", "--lr", "1e-3", "--train-subset", str(TRAIN),
        "--test-subset", "200", "--device", "cpu", "--threads", "1", "--seed", "0", "--quiet"]
RUNS = [(0.0, "none", "0"), (0.1, "laplacian", "0.1"), (0.1, "heat", "0.1_heat_t1"),
        (0.1, "high_pass", "0.1_high_pass_cutoff1")]


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    return write_small_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="module")
def spectral_run(mnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("spectral")
    assert mnist_grid.main(["--data", str(mnist_dir), "--out", str(out), *ARGV]) == (
        out / "report.html")
    return out


def _grid_eigenbasis() -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of D - A of the 4-neighbour 8x8 grid, nodes row-major (networkx)."""
    grid = nx.grid_2d_graph(8, 8)
    laplacian = nx.laplacian_matrix(grid, nodelist=sorted(grid.nodes)).toarray()
    return np.linalg.eigh(laplacian.astype(np.float64))


def _responses(eigenvalues: np.ndarray) -> dict[str, np.ndarray]:
    lam = np.clip(eigenvalues, 0.0, None)

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    return {"laplacian": lam, "heat": 1.0 - np.exp(-lam),  # t = 1
            "high_pass": (sigmoid(10.0 * (lam - 1.0)) - sigmoid(-10.0))  # cutoff 1
            / (1.0 - sigmoid(-10.0))}


def _grid_activations(model: MNISTClassifier, images: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad(), ActivationCapture(model, [model.gsr_layer]) as capture:
        model(images)
        return capture.output(model.gsr_layer).double().numpy()


def test_rows_name_the_response_and_carry_the_matched_weight(spectral_run, mnist_dir):
    columns, rows = _read_csv(spectral_run / "results.csv")
    assert columns == mnist_grid.RESULT_COLUMNS
    assert "spectral_response" in columns and columns[-1] == "steps"
    assert [(float(r["weight"]), r["spectral_response"]) for r in rows] == [
        (weight, response) for weight, response, _ in RUNS]
    assert json.loads((spectral_run / "results.json").read_text())[2]["spectral_response"] == (
        "heat")
    by_response = {r["spectral_response"]: r for r in rows}
    assert float(by_response["none"]["penalty_weight"]) == 0.0
    assert float(by_response["laplacian"]["penalty_weight"]) == 0.1
    # the reference: on the initial model's grid activations of the training images, the
    # mean a^T L a over the mean a^T h(L) a from a dense numpy eigendecomposition
    torch.manual_seed(0)
    model = MNISTClassifier(grid_shape=(8, 8), conv_head=False)
    train_x = load_mnist(str(mnist_dir))[0][:min(TRAIN, mnist_grid.MATCH_IMAGES)]
    coefficients = _grid_activations(model, train_x) @ _grid_eigenbasis()[1]
    energy = np.square(coefficients).mean(axis=0)
    h = _responses(_grid_eigenbasis()[0])
    for response in ("heat", "high_pass"):
        scale = float(h["laplacian"] @ energy) / float(h[response] @ energy)
        assert 1.5 < scale < 20  # both responses are <= 1, the grid's lambda reaches 7.7
        assert float(by_response[response]["penalty_weight"]) == pytest.approx(
            0.1 * scale, rel=1e-3)
    for row in rows:
        assert int(row["steps"]) == math.ceil(TRAIN / 50)


def test_each_response_trains_its_own_penalty(spectral_run):
    _, rows = _read_csv(spectral_run / "results.csv")
    runs = spectral_run / "runs"
    config = {tag: json.loads((runs / f"w{tag}" / "config.json").read_text())
              for _, _, tag in RUNS}
    layer = {tag: c["regularizer"]["layers"]["grid"] for tag, c in config.items()}
    assert layer["0.1"]["spectral_response"] == "laplacian"
    assert layer["0.1_heat_t1"]["spectral_response"] == {
        "response": "heat", "params": {"t": 1.0}, "method": "auto", "order": 20}
    assert layer["0.1_high_pass_cutoff1"]["spectral_response"]["params"] == {
        "cutoff": 1.0, "sharpness": 10.0}
    for tag, row in zip((tag for *_, tag in RUNS), rows):
        assert layer[tag]["weight"].startswith("ConstantWeight(")
        assert float(layer[tag]["weight"][15:-1]) == float(row["penalty_weight"])
    # laplacian runs keep the config (and so the run directories) they always had
    assert {key for key in config["0.1"] if key.startswith("user.")} == {
        "user.pipeline", "user.weight", "user.epochs", "user.batch_size", "user.lr",
        "user.conv_head", "user.train_images"}

    def first_step(tag):
        line = (runs / f"w{tag}" / "metrics.jsonl").read_text().splitlines()[0]
        return json.loads(line)["grid"]

    # same initial model and first batch (the logged penalty is weighted): the heat form
    # a^T h(L) a of that batch is far below a^T L a, and its matched weight brings the
    # weighted penalties close together
    laplacian, heat = first_step("0.1"), first_step("0.1_heat_t1")
    assert heat["penalty"] / heat["weight"] < laplacian["penalty"] / laplacian["weight"] / 1.5
    assert heat["penalty"] == pytest.approx(laplacian["penalty"], rel=0.25)
    # three penalties, three different models
    states = [torch.load(spectral_run / f"model_w{tag}.pt", weights_only=True)
              for _, _, tag in RUNS[1:]]
    for one, other in ((0, 1), (0, 2), (1, 2)):
        assert not torch.equal(states[one]["grid.0.weight"], states[other]["grid.0.weight"])
    losses = [float(row["test_loss"]) for row in rows[1:]]
    assert len(set(losses)) == 3


def test_spectrum_figure_and_json_hold_the_test_spectra(spectral_run, mnist_dir):
    for stem in ("graph_spectrum", "response_comparison", "weight_comparison"):
        _check_png(spectral_run / f"{stem}.png")
    for _, _, tag in RUNS:
        _check_png(spectral_run / f"class_maps_centered_w{tag}.png")
    pngs = sorted(spectral_run.glob("*.png"))
    html = (spectral_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs)
    assert "Weight 0.1, heat (t=1)" in html

    spectrum = json.loads((spectral_run / "graph_spectrum.json").read_text())
    eigenvalues, vectors = _grid_eigenbasis()
    assert np.allclose(spectrum["eigenvalues"], eigenvalues, atol=1e-9)
    assert [(run["tag"], run["spectral_response"]) for run in spectrum["runs"]] == [
        (tag, response) for _, response, tag in RUNS]
    # the heat model's test activations, against a numpy eigendecomposition: the energy of
    # each distinct eigenvalue (a repeated one's share depends on the basis; the sum does not)
    model = MNISTClassifier(grid_shape=(8, 8), conv_head=False)
    model.load_state_dict(torch.load(spectral_run / "model_w0.1_heat_t1.pt", weights_only=True))
    test_x = load_mnist(str(mnist_dir))[2][:200]
    activations = _grid_activations(model, test_x)
    run = spectrum["runs"][2]
    distinct = np.unique(np.round(eigenvalues, 8))
    for kind, signal in (("raw", activations), ("centred", activations - activations.mean(0))):
        energy = np.square(signal @ vectors).mean(axis=0)
        found = np.asarray(run[kind])
        assert found.sum() == pytest.approx(np.square(signal).sum(axis=1).mean(), rel=1e-5)
        for value in distinct:
            same = np.abs(eigenvalues - value) < 1e-6
            assert found[same].sum() == pytest.approx(energy[same].sum(), rel=1e-4, abs=1e-9)


def test_a_second_call_resumes_without_training(spectral_run, mnist_dir, tmp_path):
    # the heat run again: its weight is matched again, to the same value, so its run
    # directory (whose config holds the weight) resumes instead of refusing
    out = tmp_path / "again"
    shutil.copytree(spectral_run, out)
    before = _read_csv(out / "results.csv")[1][2]
    checkpoint = out / "runs" / "w0.1_heat_t1" / "checkpoint.pt"
    stamp = checkpoint.stat().st_mtime_ns
    argv = [*ARGV]
    argv[argv.index("--weights") + 1:argv.index("--epochs")] = [
        "0.1", "--spectral-response", "heat"]
    mnist_grid.main(["--data", str(mnist_dir), "--out", str(out), *argv])
    assert checkpoint.stat().st_mtime_ns == stamp
    (after,) = _read_csv(out / "results.csv")[1]
    for key in ("weight", "spectral_response", "penalty_weight", "test_accuracy", "morans_i",
                "steps"):
        assert after[key] == before[key]
    assert float(after["train_time_s"]) == pytest.approx(float(before["train_time_s"]),
                                                         abs=2.0)


def test_settings_of_the_responses(capsys):
    settings = parse_settings(mnist_grid.MnistGridSettings, [
        "--weights", "0", "0.01", "0.01", "--spectral-response", "heat", "laplacian", "heat",
        "power", "--heat-t", "2.5", "--power-p", "3"])
    runs = mnist_grid.plan_runs(settings)
    assert [(run.weight, run.response, run.tag) for run in runs] == [
        (0.0, "none", "0"), (0.01, "heat", "0.01_heat_t2.5"), (0.01, "laplacian", "0.01"),
        (0.01, "power", "0.01_power_p3")]
    assert runs[1].spectral_filter.params == {"t": 2.5}
    assert runs[1].label == "weight 0.01, heat (t=2.5)"
    assert runs[2].spectral_filter is None  # laplacian: the penalty as it always was
    assert mnist_grid.MnistGridSettings().spectral_response == ["laplacian"]
    for argv, message in ((["--heat-t", "0"], "expected a finite number > 0"),
                          (["--high-pass-cutoff", "inf"], "expected a finite number > 0"),
                          (["--spectral-response", "cosine"], "invalid choice: 'cosine'")):
        with pytest.raises(SystemExit) as exit_info:
            parse_settings(mnist_grid.MnistGridSettings, argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"spectral_response\[0\] expects one of 'laplacian'"):
        mnist_grid.MnistGridSettings(spectral_response=["cosine"])
    with pytest.raises(ValueError, match=r"^heat_t expects a finite number > 0, got -1"):
        mnist_grid.MnistGridSettings(heat_t=-1)


def test_learned_graph_report_shows_the_latent_spectrum(tmp_path):
    out = tmp_path / "learned"
    report = learned_graph.main([
        "--out", str(out), "--presets", "recommended", "--modules", "3", "3", "--samples",
        "512", "--eval-samples", "256", "--warmup-steps", "20", "--refresh-every", "10",
        "--learning-steps", "20", "--quiet"])
    _check_png(out / "graph_spectrum.png")
    html = report.read_text()
    assert "Graph spectrum (seed 0)" in html
    assert html.count("data:image/png;base64,") == 5  # 4 figures of the preset + spectrum


def test_learned_graph_spectrum_lines(tmp_path, monkeypatch):
    # a latent smooth on its graph (a ring) has its energy at the low frequencies; in a
    # random order of the neurons it spreads over the spectrum
    from pipelines import _learned_graph_outputs as outputs

    drawn = {}
    monkeypatch.setattr(outputs.plotting, "plot_graph_spectrum",
                        lambda spectra, **kwargs: drawn.update(spectra))
    angle = torch.arange(24, dtype=torch.float64) * 2 * math.pi / 24
    phase = torch.rand(400, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    latent = torch.cos(angle + 2 * math.pi * phase)  # the lowest non-zero frequency
    outputs.spectrum_figure({"p": {"graph": ring(24), "latent": latent}}, tmp_path, seed=0)
    assert list(drawn) == ["p", "p, neurons shuffled"]
    ordered, shuffled = drawn["p"], drawn["p, neurons shuffled"]
    assert ordered.edges.tolist() == pytest.approx(np.linspace(0, 2, 21).tolist())
    lowest = 1 - math.cos(2 * math.pi / 24)  # of the ring's normalized Laplacian
    band = int(lowest // 0.1)
    assert float(ordered.energy[band]) == pytest.approx(float(ordered.energy.sum()), rel=1e-9)
    assert float(shuffled.energy.sum()) == pytest.approx(float(ordered.energy.sum()), rel=1e-9)
    assert float(shuffled.energy[band]) < 0.5 * float(shuffled.energy.sum())


# --------------------------------------------------------------------------- the figure
def test_plot_graph_spectrum_averages_a_repeated_eigenvalue():
    fig = plot_graph_spectrum([{"a": ([0.0, 1.0, 1.0 + 1e-12, 3.0], [4.0, 1.0, 3.0, 2.0])},
                               {"a": ([0.0, 2.0], [1.0, 1.0]), "b": ([0.0, 2.0], [3.0, 1.0])}],
                              titles=["one", "two"], markers={"cutoff": 1.5})
    first, second = fig.axes[0], fig.axes[1]
    line = first.lines[0]
    assert line.get_xdata().tolist() == pytest.approx([0.0, 1.0, 3.0])
    assert line.get_ydata().tolist() == pytest.approx([0.4, 0.2, 0.2])  # 4/10, (1+3)/2/10
    assert first.get_yscale() == "log" and first.get_title() == "one"
    assert first.get_ylabel() == "energy per eigenvector (fraction of the total)"
    assert first.lines[0].get_color() == second.lines[0].get_color()  # label "a"
    assert second.lines[1].get_ydata().tolist() == pytest.approx([0.75, 0.25])
    assert [ln.get_xdata()[0] for ln in first.lines[1:]] == [1.5]  # the marker
    raw = plot_graph_spectrum({"a": ([0.0, 1.0], [2.0, 0.0])}, normalize=False, logy=False)
    assert raw.axes[0].lines[0].get_ydata().tolist() == [2.0, 0.0]
    assert raw.axes[0].get_ylabel() == "energy per eigenvector"


def test_plot_graph_spectrum_draws_bands_as_steps(tmp_path):
    x = torch.randn(50, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    banded = graph_fourier_energy(x, ring(24), "sym", bands=8)
    path = tmp_path / "bands.png"
    fig = plot_graph_spectrum({"x": banded}, logy=False, path=path)
    (steps,) = fig.axes[0].patches
    values, edges, _ = steps.get_data()
    assert np.allclose(edges, banded.edges.numpy())
    assert np.allclose(values, (banded.energy / banded.energy.sum()).numpy())
    assert fig.axes[0].get_ylabel() == "energy per band (fraction of the total)"
    _check_png(path)


_PATH = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
_GOOD = ([0.0, 1.0, 3.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"spectra": []}, TypeError, r"spectra must be a mapping \{label: spectrum\} or a "
                                 r"non-empty list"),
    ({"spectra": "x"}, TypeError, "spectra must be a mapping"),
    ({"spectra": [{}]}, TypeError, r"spectra\[0\] must be a non-empty mapping"),
    ({"spectra": {"a": [1.0, 2.0, 3.0]}}, TypeError,
     r"spectra\['a'\] must be a SpectralEnergy .* or a pair \(frequencies, energy\), got"),
    ({"spectra": {"a": ([0.0, 1.0], [1.0])}}, ValueError,
     r"spectra\['a'\] must have one energy per frequency \(at least one\), got 2 "
     r"frequencies and 1 energies"),
    ({"spectra": {"a": ([], [])}}, ValueError, "must have one energy per frequency"),
    ({"spectra": {"a": ([0.0, 1.0], [1.0, -0.5])}}, ValueError,
     r"spectra\['a'\] energies must be >= 0, got -0.5"),
    ({"spectra": {"a": ([-1.0, 1.0], [1.0, 1.0])}}, ValueError,
     r"frequencies must be >= 0 \(Laplacian eigenvalues\), got -1"),
    ({"spectra": {"a": ([0.0, 1.0], [1.0, float("nan")])}}, ValueError,
     "must hold finite frequencies and energies"),
    ({"spectra": {"a": ([[0.0, 1.0]], [[1.0, 1.0]])}}, ValueError,
     r"spectra\['a'\] frequencies must be 1-D, got shape \(1, 2\)"),
    ({"spectra": {"a": ([0.0, 1.0], [0.0, 0.0])}}, ValueError,
     "spectrum 'a' has no energy to normalize"),
    ({"spectra": {"a": _GOOD}, "titles": ["x", "y"]}, ValueError,
     r"titles must have one title per panel \(1\), got \['x', 'y'\]"),
    ({"spectra": {"a": _GOOD}, "markers": [1.0]}, TypeError,
     r"markers must be a mapping \{label: frequency\}, got \[1.0\]"),
    ({"spectra": {"a": _GOOD}, "markers": {"c": -1.0}}, ValueError,
     r"markers\['c'\] must be finite and >= 0, got -1.0"),
])
def test_plot_graph_spectrum_refusals(kwargs, error, message):
    with pytest.raises(error, match=message):
        plot_graph_spectrum(**kwargs)


def test_plot_graph_spectrum_refuses_bad_band_edges():
    banded = graph_fourier_energy(torch.tensor([[0.0, 1.0, 3.0]]), _PATH, bands=2)
    with pytest.raises(ValueError, match=r"spectra\['a'\] edges must be 3 non-decreasing band "
                                         r"edges, got 2"):
        plot_graph_spectrum({"a": banded._replace(edges=banded.edges[:2])})
    with pytest.raises(ValueError, match="edges must be 3 non-decreasing"):
        plot_graph_spectrum({"a": banded._replace(edges=banded.edges.flip(0))})
