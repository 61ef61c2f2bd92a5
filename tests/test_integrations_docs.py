"""docs/integrations.md: its Python examples run as pasted and give what they state."""

from __future__ import annotations

import re
import runpy
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_readme import stated  # noqa: E402

DOC = Path(__file__).parents[1] / "docs" / "integrations.md"
TEXT = DOC.read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)


def run_block(index: int, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)  # the examples write run directories
    script = tmp_path / f"integrations_example_{index}.py"
    script.write_text(BLOCKS[index])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on data-loader workers
        return runpy.run_path(str(script), run_name="__integrations__")


def test_every_example_has_its_test():
    assert len(BLOCKS) == 2  # a new example gets a test below that checks what it states


def test_lightning_example(tmp_path, monkeypatch):
    pytest.importorskip("pytorch_lightning")
    block = BLOCKS[0]
    names = run_block(0, tmp_path, monkeypatch)
    trainer, callback, history = names["trainer"], names["callback"], names["history"]
    assert trainer.global_step == callback.progress.step == stated(r"run: (\d+) steps", block)
    assert len(history) == stated(r"(\d+) snapshots", block)
    folder = Path(trainer.log_dir) / "snapshots" / "model.latent"
    assert len(list(folder.glob("*.pt"))) == len(history)
    assert names["step"] == history.snapshot_steps()[-1] and names["graph"].num_nodes == 20
    header = (Path(trainer.log_dir) / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in ("penalty", "weight", "edges", "components", "smoothness_ratio"):
        assert f"gsr/model.latent/{name}" in header


def test_hugging_face_example(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    block = BLOCKS[1]
    names = run_block(1, tmp_path, monkeypatch)
    penalty = names["penalty"]
    assert len(penalty) == 10  # logging_steps=10 over max_steps=100
    assert "below half its start" in block and penalty[-1] < 0.5 * penalty[0]
    assert names["trainer"].state.global_step == 100
