"""The planted-module pipeline: outputs, numbers against references, resume, errors."""

from __future__ import annotations

import csv
import json

import networkx as nx
import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torch_geometric.data import Data

from pipelines import learned_graph
from pipelines._common import run_cli

# An easy case: three well separated modules, a short schedule.
EASY = ["--modules", "4", "4", "4", "--within-corr", "0.9", "--samples", "2048",
        "--eval-samples", "1024", "--warmup-steps", "200", "--refresh-every", "50",
        "--learning-steps", "200", "--seed", "0", "--quiet"]


@pytest.fixture(scope="module")
def easy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("learned_graph")
    report = learned_graph.main([*EASY, "--out", str(out)])
    return out, report


def _results(out):
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_writes_every_output(easy_run):
    out, report = easy_run
    assert report == out / "report.html"
    html = report.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 6  # 3 figures per preset, one seed
    assert "src=\"http" not in html
    for preset in ("reference", "recommended"):
        for stem in ("graph_evolution", "final_graph", "correlations"):
            assert (out / f"{stem}_{preset}.png").stat().st_size > 10_000
        run_dir = out / "runs" / f"{preset}_seed0"
        assert (run_dir / "checkpoint.pt").exists()
        assert sorted(run_dir.glob("snapshots/latent/*.graphml"))
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["preset"] for row in rows] == ["reference", "recommended"]


def test_results_fields_and_summary(easy_run):
    out, _ = easy_run
    results = _results(out)
    assert results["settings"]["data"]["modules"] == [4, 4, 4]
    assert results["settings"]["presets"]["recommended"]["stop"] == "never"
    assert results["settings"]["presets"]["reference"]["learner"] == "reference"
    runs = {row["preset"]: row for row in results["runs"]}
    for row in runs.values():
        assert row["planted_modules"] == 3
        assert row["components"] >= 1
        assert 0.0 < row["mse"] < 5.0
        for method in learned_graph.MODULE_METHODS:
            assert -0.5 <= row[f"ari_{method}"] <= 1.0
            assert 0.0 <= row[f"nmi_{method}"] <= 1.0
    # the recommended preset never stops: 200 learning steps, one graph every 50
    assert runs["recommended"]["steps"] == 400
    assert runs["recommended"]["graphs_learned"] == 4
    summary = {row["preset"]: row for row in results["summary"]}
    for preset, row in runs.items():
        assert summary[preset]["seeds"] == 1
        assert summary[preset]["ari_louvain_mean"] == pytest.approx(row["ari_louvain"])
        assert summary[preset]["ari_louvain_std"] == 0.0


def test_easy_planted_modules_are_found(easy_run):
    out, _ = easy_run
    runs = {row["preset"]: row for row in _results(out)["runs"]}
    assert runs["recommended"]["ari_louvain"] >= 0.8
    assert runs["recommended"]["modularity"] > 0.3


def test_graphml_matches_results(easy_run):
    out, _ = easy_run
    runs = {row["preset"]: row for row in _results(out)["runs"]}
    graph = nx.read_graphml(out / "graph_recommended_seed0.graphml")
    assert graph.number_of_nodes() == learned_graph.LATENT_DIM
    assert graph.number_of_edges() == runs["recommended"]["edges"]
    assert nx.number_connected_components(graph) == runs["recommended"]["components"]
    planted = {data["planted_module"] for _, data in graph.nodes(data=True)}
    assert planted <= {0, 1, 2}
    modules = [data["neuron_module"] for _, data in graph.nodes(data=True)]
    assert max(modules) + 1 == runs["recommended"]["louvain_modules"]


def test_second_call_resumes_without_training(easy_run):
    out, _ = easy_run
    before = _results(out)["runs"]
    threads = torch.get_num_threads()
    learned_graph.main([*EASY, "--out", str(out), "--presets", "recommended", "--threads", "1"])
    assert torch.get_num_threads() == threads  # restored
    after = _results(out)["runs"]
    assert len(after) == 1
    first = next(row for row in before if row["preset"] == "recommended")
    assert after[0]["ari_louvain"] == first["ari_louvain"]
    assert after[0]["mse"] == pytest.approx(first["mse"])
    assert after[0]["train_time_s"] == pytest.approx(first["train_time_s"], abs=2.0)


def test_neuron_planted_modules_matches_numpy():
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(200, 6, generator=generator, dtype=torch.float64)
    latent = torch.cat([inputs[:, :2] @ torch.randn(2, 3, generator=generator,
                                                    dtype=torch.float64),
                        inputs[:, 3:] @ torch.randn(3, 2, generator=generator,
                                                    dtype=torch.float64)], dim=1)
    feature_module = torch.tensor([0, 0, 0, 1, 1, 1])
    got = learned_graph.neuron_planted_modules(inputs, latent, feature_module)
    corr = np.abs(np.corrcoef(latent.numpy().T, inputs.numpy().T)[:5, 5:])
    expected = np.stack([corr[:, :3].mean(1), corr[:, 3:].mean(1)], axis=1).argmax(1)
    assert got.tolist() == expected.tolist() == [0, 0, 0, 1, 1]


def test_extract_modules_on_two_cliques():
    # neurons 0-2 and 3-5 form two triangles joined by one edge; neurons 0-2 copy feature 0,
    # neurons 3-5 copy feature 1 (plus noise): features 0, 2 and 1, 3 form two modules.
    pairs = [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)]
    edge_index = torch.tensor(pairs + [(b, a) for a, b in pairs]).t()
    graph = Data(edge_index=edge_index, edge_weight=torch.ones(edge_index.size(1)),
                 num_nodes=6)
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(500, 2, generator=generator)
    inputs = torch.cat([base, base + 0.3 * torch.randn(500, 2, generator=generator)], dim=1)
    latent = base[:, [0, 0, 0, 1, 1, 1]] + 0.1 * torch.randn(500, 6, generator=generator)
    found = learned_graph.extract_modules(graph, inputs, latent, num_modules=2)
    truth = [0, 1, 0, 1]
    for method in ("louvain", "spectral"):
        assert found[method]["neurons"].tolist() == [0, 0, 0, 1, 1, 1]
        features = found[method]["features"].tolist()
        assert adjusted_rand_score(truth, features) == 1.0
        assert normalized_mutual_info_score(truth, features) == 1.0
    # one component: every feature in module 0
    assert found["components"]["features"].tolist() == [0, 0, 0, 0]


def test_command_line_prints_the_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["learned_graph", "--seed", "-2", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(learned_graph.main)
    assert exit_info.value.code == 2
    assert "learned_graph: error: --seed must be >= 0" in capsys.readouterr().err
