"""The head-to-head pipeline of the topographic objectives: its runs, numbers, choice on
validation, figures and resume; the pieces it is made of."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gsr_pyg.capture import ActivationCapture
from gsr_pyg.data.text import CharVocabulary
from gsr_pyg.models import CharTransformer
from pipelines import topographic_comparison as tc
from pipelines._cli import parse_settings

sys.path.insert(0, str(Path(__file__).parent))
from test_mnist_pipeline import _check_png, _read_csv, write_small_mnist  # noqa: E402


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    return write_small_mnist(tmp_path_factory.mktemp("mnist"))


def _settings_argv(data: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--train-subset", "1500",
            "--validation-images", "300", "--test-subset", "300", "--mnist-epochs", "2",
            "--text-steps", "60", "--eval-sequences", "100", "--laplacian-strengths", "0.01",
            "0.1", "--rayleigh-strengths", "0.3", "--spatial-strengths", "3",
            "--weight-strengths", "0.03", "--device", "cpu",
            "--threads", "1", "--quiet"]


def test_pipeline_runs_every_objective_chooses_on_validation_and_resumes(mnist_dir, tmp_path):
    out = tmp_path / "tc"
    argv = _settings_argv(mnist_dir, out)
    report = tc.main(argv)
    columns, rows = _read_csv(out / "results.csv")
    assert columns == tc.RESULT_COLUMNS
    runs = [(r["task"], r["objective"], float(r["strength"])) for r in rows]
    expected = [("none", 0.0), ("layout", 0.0), ("laplacian", 0.01), ("laplacian", 0.1),
                ("laplacian_rayleigh", 0.3), ("spatial_correlation", 3.0),
                ("weight_smoothness", 0.03)]
    assert runs == [(task, *run) for task in ("mnist", "text") for run in expected]
    by_run = {run: row for run, row in zip(runs, rows)}
    for (task, objective, _), row in by_run.items():
        if objective != "layout":
            assert int(row["steps"]) == (24 if task == "mnist" else 60)  # 2 x ceil(1500/128)
    # both tasks learn: far better than chance (90% error; log2(99) = 6.6 bits per character)
    assert float(by_run[("mnist", "none", 0.0)]["test_cost"]) < 40
    assert float(by_run[("text", "none", 0.0)]["test_cost"]) < 4.6
    for task in ("mnist", "text"):
        none = by_run[(task, "none", 0.0)]
        # without an objective the group maps have no order on the sheet; every objective
        # gives them some, and the best run a clear one
        assert abs(float(none["test_morans_i"])) < 0.1
        assert 0.9 < float(none["test_smoothness_ratio"]) < 1.1
        best = {objective: max((row for (t, o, _), row in by_run.items()
                                if (t, o) == (task, objective)),
                               key=lambda row: float(row["test_morans_i"]))
                for objective in tc.OBJECTIVES[1:]}
        for row in best.values():
            assert float(row["test_morans_i"]) > float(none["test_morans_i"]) + 0.05
            assert float(row["test_smoothness_ratio"]) < float(none["test_smoothness_ratio"])
        top = max(best.values(), key=lambda row: float(row["test_morans_i"]))
        assert float(top["test_morans_i"]) > 0.3 and float(top["test_smoothness_ratio"]) < 0.7
    for task in ("mnist", "text"):
        # a layout permutes the units of the run without an objective: the same function,
        # so the same cost, and more order on the sheet
        none, placed = by_run[(task, "none", 0.0)], by_run[(task, "layout", 0.0)]
        assert float(placed["test_cost"]) == pytest.approx(float(none["test_cost"]), rel=1e-5)
        assert float(placed["test_unit_smoothness_ratio"]) < float(
            none["test_unit_smoothness_ratio"]) - 0.1
    content = json.loads((out / "results.json").read_text())
    assert content["data"]["mnist"] == {"train": 1500, "validation": 300, "test": 300}
    assert content["data"]["text"]["test_characters"] > 1000
    # the choice: per objective, the best validation Moran's I within the cost tolerance
    for task, tolerance in (("mnist", 0.5), ("text", 0.05)):
        task_rows = [r for r in content["rows"] if r["task"] == task]
        limit = task_rows[0]["validation_cost"] + tolerance
        for objective in tc.OBJECTIVES[1:]:
            fit = [r for r in task_rows if r["objective"] == objective
                   and r["validation_cost"] <= limit]
            best = max(fit, key=lambda r: r["validation_morans_i"], default=None)
            marked = [r for r in task_rows if r["objective"] == objective and r["chosen"]]
            assert marked == ([best] if best else [])
            assert content["chosen"][task][objective] == (None if best is None else {
                "strength": best["strength"], "test_cost": best["test_cost"],
                "test_morans_i": best["test_morans_i"]})
    for name in ("tradeoff.png", "maps_mnist.png", "maps_text.png"):
        _check_png(out / name)
    assert report == out / "report.html" and "Topographic objectives" in report.read_text()

    # a second call resumes: every run is finished, nothing is trained again
    checkpoints = sorted((out / "runs").glob("*/*/checkpoint.pt"))
    assert len(checkpoints) == 12
    stamps = [path.stat().st_mtime_ns for path in checkpoints]
    tc.main(argv)
    assert [path.stat().st_mtime_ns for path in checkpoints] == stamps
    again = _read_csv(out / "results.csv")[1]
    timeless = [{k: v for k, v in r.items() if k != "train_time_s"} for r in (*rows, *again)]
    assert timeless[len(rows):] == timeless[:len(rows)]


def _row(objective: str, strength: float, cost: float, moran: float) -> dict:
    return {"objective": objective, "strength": strength, "validation_cost": cost,
            "validation_morans_i": moran, "chosen": False}


def test_mark_chosen_takes_the_most_structure_within_the_tolerance():
    task = type("T", (), {"max_cost_increase": 0.5})()
    rows = [_row("none", 0.0, 1.0, 0.0), _row("laplacian", 0.01, 1.2, 0.4),
            _row("laplacian", 0.1, 1.5, 0.7), _row("laplacian", 1.0, 1.6, 0.9),
            _row("weight_smoothness", 1.0, 2.0, 0.5)]
    chosen = tc.mark_chosen(rows, task)
    # 0.1 is the best within 1.0 + 0.5; 1.0 has more structure but costs too much
    assert chosen == {"laplacian": rows[2], "weight_smoothness": None}
    assert [r["chosen"] for r in rows] == [False, False, True, False, False]
    # without the run that sets the bar nothing is chosen
    assert tc.mark_chosen(rows[1:], task) == {}


def test_character_groups():
    vocab = CharVocabulary()
    groups = tc.character_groups(vocab.encode(" \naxB7.\té"))
    names = [tc.CHAR_GROUPS[g] for g in groups.tolist()]
    assert names == ["space", "newline", "vowel", "consonant", "upper case", "digit",
                     "punctuation and other", "punctuation and other", "punctuation and other"]


def test_language_model_evaluation_counts_only_real_tokens():
    torch.manual_seed(0)
    model = CharTransformer(len(CharVocabulary()), context=8, d_model=16, num_heads=2, d_ff=12)
    inputs = torch.tensor([[20, 21, 22, 0, 0], [23, 24, 25, 26, 27]])
    targets = torch.tensor([[21, 22, 30, -100, -100], [24, 25, 26, 27, 28]])
    found = tc.evaluate_language_model(model, inputs, targets, torch.device("cpu"))
    with torch.no_grad(), ActivationCapture(model, [model.gsr_layer], node_dim=-1) as capture:
        logits = model(inputs)
        units = capture.output(model.gsr_layer)
    real = targets != -100
    nats = F.cross_entropy(logits[real], targets[real])
    assert found.loss == pytest.approx(float(nats), rel=1e-6)
    assert found.cost == pytest.approx(float(nats) / math.log(2), rel=1e-6)
    assert torch.equal(found.samples, units[inputs != 0])  # 8 real tokens, not 10
    assert found.groups.tolist() == tc.character_groups(inputs[inputs != 0]).tolist()


def test_settings_strength_ladders_and_quick_preset():
    full = parse_settings(tc.TopographicComparisonSettings, [])
    assert full.strengths("mnist", "weight_smoothness") == [1e-3, 1e-2, 1e-1]
    assert full.strengths("text", "none") == [0.0]
    given = parse_settings(tc.TopographicComparisonSettings,
                           ["--weight-strengths", "0.1", "0.01", "0.1"])
    assert given.strengths("text", "weight_smoothness") == [0.01, 0.1]
    quick = parse_settings(tc.TopographicComparisonSettings, ["--quick"])
    assert (quick.train_subset, quick.mnist_epochs, quick.text_steps) == (8000, 1, 200)
