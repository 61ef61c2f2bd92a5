"""Faults: a learned-graph run killed with SIGKILL at random points resumes to exactly the
result of an uninterrupted run, and never leaves a partially written file visible."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from small_run import make_trainer  # noqa: E402

from gsr_pyg.training import load_snapshot  # noqa: E402


def _final(run_dir):
    trainer, loader = make_trainer(run_dir)
    history = trainer.fit(loader)
    return ({k: v.clone() for k, v in trainer.model.state_dict().items()},
            [(s, d.edge_index, d.edge_weight) for s, d in history.snapshots],
            (Path(run_dir) / "metrics.jsonl").read_text())


def _visible_files_are_complete(run_dir: Path) -> None:
    """Every visible file parses: no partial JSON line, snapshot or checkpoint."""
    for path in run_dir.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue  # hidden names are temporary files, never read
        if path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.name == "checkpoint.pt":
            torch.load(path, weights_only=True)
        elif path.suffix == ".pt":
            load_snapshot(path)


@pytest.mark.slow
def test_ten_random_kills_then_resume_equal_an_uninterrupted_run(tmp_path):
    reference = _final(tmp_path / "straight")
    run_dir = tmp_path / "killed"
    # same thread count as this process: float sums depend on it
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    rng = random.Random(0)
    kills = 0
    for _ in range(10):
        proc = subprocess.Popen([sys.executable, str(HERE / "small_run.py"), str(run_dir),
                                 "--sleep", "0.01"], env=env, stdout=subprocess.PIPE, text=True)
        # kill after a random number of training steps of this attempt
        for _ in range(rng.randint(1, 12)):
            if not proc.stdout.readline():
                break
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        proc.stdout.close()
        _visible_files_are_complete(run_dir)
        if (run_dir / "summary.json").exists():
            break
    assert kills >= 5
    resumed = _final(run_dir)
    for key, value in reference[0].items():
        assert torch.equal(value, resumed[0][key]), key
    assert len(reference[1]) == len(resumed[1])
    for (sa, ea, wa), (sb, eb, wb) in zip(reference[1], resumed[1]):
        assert sa == sb and torch.equal(ea, eb) and torch.equal(wa, wb)
    assert reference[2] == resumed[2]
    _visible_files_are_complete(run_dir)


def test_checkpoint_with_a_malicious_pickle_is_refused(tmp_path):
    trainer, loader = make_trainer(tmp_path / "run")
    trainer.fit(loader)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": 1, "payload": Payload()}, tmp_path / "run" / "checkpoint.pt")
    again, loader = make_trainer(tmp_path / "run")
    with pytest.raises(ValueError, match="checkpoint file .* cannot be read"):
        again.fit(loader)
    assert not marker.exists()
