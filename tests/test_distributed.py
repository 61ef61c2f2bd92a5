"""GSRTrainer under torchrun: 2 CPU processes (gloo) against one process on the same global
batches, and a killed 2-process run that resumes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gsr_pyg.training import load_snapshot

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from launch import env, run, torchrun  # noqa: E402

SCRIPT = HERE / "ddp_run.py"
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")


def _torchrun(run_dir, batch_size, sleep=0.0):
    return torchrun(str(SCRIPT), str(run_dir), "--batch-size", str(batch_size), "--sleep",
                    str(sleep))


def _single(run_dir, batch_size):
    return [sys.executable, str(SCRIPT), str(run_dir), "--batch-size", str(batch_size)]


def _results(run_dir):
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    snaps = {}
    for layer in ("latent", "code"):
        files = sorted((run_dir / "snapshots" / layer).glob("*.pt"))
        snaps[layer] = [load_snapshot(f) for f in files]
    return state, snaps


def _compare(a, b, atol):
    state_a, snaps_a = a
    state_b, snaps_b = b
    for key, value in state_a["model"].items():
        assert torch.allclose(value, state_b["model"][key], atol=atol), key
    for layer in snaps_a:
        assert len(snaps_a[layer]) == len(snaps_b[layer]) == 6
        for ga, gb in zip(snaps_a[layer], snaps_b[layer]):
            assert ga.step == gb.step
            assert torch.equal(ga.edge_index, gb.edge_index)
            assert torch.allclose(ga.edge_weight, gb.edge_weight)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """One uninterrupted 2-process run, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("ddp") / "two"
    run(_torchrun(run_dir, 16))
    return run_dir


def test_two_processes_equal_one_process_on_the_same_global_batches(two_process_run, tmp_path):
    run(_single(tmp_path / "one", 32))
    _compare(_results(tmp_path / "one"), _results(two_process_run), atol=1e-5)
    assert (two_process_run / "summary.json").exists()
    assert not list(two_process_run.rglob("*.tmp"))


def test_killed_two_process_run_resumes(two_process_run, tmp_path):
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(_torchrun(run_dir, 16, sleep=0.15), env=env(),
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (run_dir / "summary.json").exists()
    run(_torchrun(run_dir, 16))
    _compare(_results(two_process_run), _results(run_dir), atol=0)


def test_resume_with_another_world_size_is_refused(two_process_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(two_process_run, run_dir)
    done = subprocess.run(_single(run_dir, 32), env=env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode != 0
    assert "written by 2 process(es) but this run has 1" in done.stderr


def _pipeline(name, out, *argv):
    return torchrun("-m", f"pipelines.{name}", "--out", str(out), "--quiet", "--threads", "1",
                    *argv)


def test_mnist_pipeline_under_torchrun(tmp_path):
    out = tmp_path / "mnist"
    run(_pipeline("mnist_grid", out, "--train-subset", "1024", "--test-subset", "300",
                  "--epochs", "1", "--weights", "0", "0.01", "--batch-size", "64"))
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 3
    # one epoch of 1024 images in global batches of 2 x 64
    assert all(row.split(",")[-1] == "8" for row in rows[1:])
    assert (out / "report.html").exists() and (out / "model_w0.01.pt").exists()
    assert not list(out.rglob("*.tmp*"))


@pytest.mark.slow
def test_single_cell_pipeline_under_torchrun(tmp_path):
    out = tmp_path / "krumsiek11"
    run(_pipeline("single_cell", out, "--quick"))
    assert (out / "report.html").exists() and (out / "neuron_graph.graphml").exists()
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["phase"] == "done" and summary["latent"]["graphs_learned"] >= 1
