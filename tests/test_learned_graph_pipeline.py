"""The planted-module pipeline: outputs, numbers against references, resume, errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch
from torch_geometric.data import Data

from gsr_pyg import metrics, readouts
from pipelines import learned_graph
from pipelines._cli import run_cli
from pipelines._learned_graph_outputs import stability

sys.path.insert(0, str(Path(__file__).parent))
from launch import run, torchrun  # noqa: E402

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
    assert html.count("data:image/png;base64,") == 9  # 4 figures per preset + the spectrum
    for baseline in ("louvain_corr", "average_corr", "kmeans_pca"):
        assert f"ARI {baseline}" in html  # the baselines beside every result
    assert "src=\"http" not in html
    for preset in ("reference", "recommended"):
        for stem in ("graph_evolution", "final_graph", "correlations", "modules"):
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
    assert results["settings"]["data"]["within_corr"] == [0.9]  # over the hub benchmark's
    assert results["settings"]["data"]["shift"] == 10.0
    assert results["settings"]["presets"]["recommended"]["stop"] == "never"
    assert results["settings"]["presets"]["reference"]["learner"] == "reference"
    runs = {row["preset"]: row for row in results["runs"]}
    for row in runs.values():
        assert row["planted_modules"] == 3
        assert row["components"] == 1
        assert row["neuron_modules"] >= 3
        # every neuron module carries one of the 3 feature modules
        assert row["feature_modules"] == 3
        assert row["carrying_modules"] == row["neuron_modules"]
        assert 0 <= row["negative_modules"] < row["neuron_modules"]
        assert 0 < row["edge_jaccard_last"] <= 1
    # the recommended preset never stops: 200 learning steps, one graph every 50
    assert runs["recommended"]["steps"] == 400
    assert runs["recommended"]["graphs_learned"] == 4
    assert runs["recommended"]["stopped"] is False
    # the reference stops at its first disconnected graph, then trains 200 steps more
    assert runs["reference"]["stopped"] is True
    assert runs["reference"]["steps"] < 600
    summary = {row["preset"]: row for row in results["summary"]}
    for preset, row in runs.items():
        assert summary[preset]["seeds"] == 1
        assert summary[preset]["ari_graph_mean"] == pytest.approx(row["ari_graph"])
        assert summary[preset]["ari_graph_std"] == 0.0
        assert summary[preset]["seed_pairs"] == 0  # one seed: nothing to compare
    carried = results["neuron_modules_seed0"]["recommended"]
    assert len(carried) == runs["recommended"]["neuron_modules"]
    assert sum(entry["neurons"] for entry in carried) == learned_graph.LATENT_DIM
    assert {entry["feature_module"] for entry in carried} == {0, 1, 2}


def test_easy_planted_modules_are_found(easy_run):
    # 3 well separated modules of 4 features: both presets find them (ARI and NMI 1.0 with
    # the settings of EASY, seed 0), the graph is modular, and neurons that carry the same
    # planted module are linked more than by chance
    out, _ = easy_run
    runs = {row["preset"]: row for row in _results(out)["runs"]}
    for row in runs.values():
        assert row["ari_graph"] == 1.0 and row["nmi_graph"] == 1.0
        for baseline in ("louvain_corr", "average_corr", "kmeans_pca"):
            assert row[f"ari_{baseline}"] == 1.0 and row[f"modules_{baseline}"] == 3
        assert row["modularity"] > 0.5
        assert row["planted_modularity"] > 0.2
        # a model that predicts the mean sample has an MSE of about the feature variance
        # (about 23 here); the autoencoder reconstructs far better
        assert row["mse"] < 0.5


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
    assert max(modules) + 1 == runs["recommended"]["neuron_modules"]


def test_second_call_resumes_without_training(easy_run):
    out, _ = easy_run
    before = _results(out)["runs"]
    checkpoint = out / "runs" / "recommended_seed0" / "checkpoint.pt"
    stamp = checkpoint.stat().st_mtime_ns
    threads = torch.get_num_threads()
    learned_graph.main([*EASY, "--out", str(out), "--presets", "recommended", "--threads", "1"])
    assert torch.get_num_threads() == threads  # restored
    assert checkpoint.stat().st_mtime_ns == stamp  # nothing trained again
    after = _results(out)["runs"]
    assert len(after) == 1
    first = next(row for row in before if row["preset"] == "recommended")
    assert after[0]["ari_graph"] == first["ari_graph"]
    assert after[0]["mse"] == pytest.approx(first["mse"])
    assert after[0]["train_time_s"] == pytest.approx(first["train_time_s"], abs=2.0)


def test_command_line_prints_the_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["learned_graph", "--seed", "-2", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(learned_graph.main)
    assert exit_info.value.code == 2
    assert "learned_graph: error: --seed must be >= 0" in capsys.readouterr().err


def test_benchmarks_and_the_options_over_them():
    unequal = learned_graph.LearnedGraphSettings(benchmark="unequal").data()
    assert unequal["modules"] == [4, 6, 8, 10, 12, 15]
    assert unequal["within_corr"] == [0.5, 0.46, 0.42, 0.38, 0.34, 0.3]
    assert (unequal["active_per_sample"], unequal["shift"], unequal["shuffle_features"]) == (
        2, 3.0, True)
    assert learned_graph.LearnedGraphSettings(benchmark="8x5").data()["modules"] == [5] * 8
    changed = learned_graph.LearnedGraphSettings(benchmark="unequal", shift=5.0,
                                                 modules=[3, 4], within_corr=[0.4]).data()
    assert (changed["shift"], changed["modules"], changed["within_corr"]) == (5.0, [3, 4],
                                                                              [0.4])
    with pytest.raises(ValueError, match="--within-corr must be one value or one per module"):
        learned_graph.LearnedGraphSettings(benchmark="unequal", modules=[3, 4])
    with pytest.raises(ValueError, match="--active-per-sample must be at most"):
        learned_graph.LearnedGraphSettings(modules=[3], active_per_sample=2)


def test_stability_matches_features_across_shuffled_seeds():
    # two seeds with the same modules in different column orders: perfectly stable; a third
    # whose modules split one planted module: ARI below 1 against both
    def detail(order, labels, edges):
        order = torch.tensor(order)
        unshuffled = torch.empty_like(order)
        unshuffled[order] = torch.arange(order.numel())
        columns = {int(f): c for c, f in enumerate(order)}  # unshuffled feature -> column
        edge_index = torch.tensor([[columns[a] for a, b in edges] + [columns[b] for a, b in edges],
                                   [columns[b] for a, b in edges] + [columns[a] for a, b in edges]])
        clustering = metrics.Clustering(torch.tensor(labels), 2, {})
        return {"unshuffled": unshuffled,
                "found": {"features": readouts.FeatureModules(
                              torch.tensor(labels), 2, {}, None, None, None, None, None, None),
                          "baselines": {m: clustering for m in readouts.BASELINE_METHODS},
                          "feature_graph": Data(edge_index=edge_index, num_nodes=4)}}

    # unshuffled features 0, 1 form one module and 2, 3 another
    first = detail([0, 1, 2, 3], [0, 0, 1, 1], [(0, 1), (2, 3)])
    second = detail([2, 0, 3, 1], [1, 0, 1, 0], [(0, 1), (2, 3)])
    third = detail([0, 1, 2, 3], [0, 1, 2, 2], [(2, 3)])
    assert stability({0: first, 1: second}) == {
        "seed_pairs": 1, "ari_between_seeds_graph": 1.0,
        **{f"ari_between_seeds_{m}": 1.0 for m in readouts.BASELINE_METHODS},
        "feature_graph_jaccard": 1.0}
    three = stability({0: first, 1: second, 2: third})
    assert three["seed_pairs"] == 3
    assert three["ari_between_seeds_graph"] == pytest.approx(
        (1.0 + 2 * metrics.adjusted_rand_index([0, 0, 1, 1], [0, 1, 2, 2])) / 3)
    assert three["feature_graph_jaccard"] == pytest.approx((1.0 + 0.5 + 0.5) / 3)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(),
                    reason="torch.distributed is not available")
def test_runs_under_torchrun(tmp_path):
    # two CPU processes train together (one process group: the checkpoint says so) and only
    # rank 0 reads out and writes
    out = tmp_path / "ddp"
    done = run(torchrun("-m", "pipelines.learned_graph", "--out", str(out), "--presets",
                        "recommended", "--modules", "3", "3", "--samples", "512",
                        "--eval-samples", "256", "--warmup-steps", "20", "--refresh-every",
                        "10", "--learning-steps", "20", "--quiet"), cwd=tmp_path)
    assert done.stdout.count("report: ") == 1  # rank 0 only
    state = torch.load(out / "runs" / "recommended_seed0" / "checkpoint.pt",
                       weights_only=True)
    assert state["world_size"] == 2
    runs = _results(out)["runs"]
    assert [(row["preset"], row["steps"], row["graphs_learned"]) for row in runs] == [
        ("recommended", 40, 2)]
    assert (out / "report.html").exists()
    assert not list(out.rglob("*.tmp*"))
