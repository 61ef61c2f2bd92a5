"""The ``gsr-pyg`` command. ``list`` and (slow) ``run learned_graph --quick`` run as the
installed script from outside the checkout, so the installed packages are what it imports;
the other tests call its ``main`` in this process (a new process spends most of a short run
importing torch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.__main__ import describe, main, pipeline_names

SCRIPT = Path(sys.executable).parent / "gsr-pyg"
# a short learned-graph run: the --quick settings, fewer samples and steps, one preset
SHORT = ["--quick", "--presets", "recommended", "--samples", "256", "--eval-samples", "256",
         "--warmup-steps", "10", "--refresh-every", "5", "--learning-steps", "10", "--quiet"]


def gsr_pyg(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    assert SCRIPT.exists(), (f"{SCRIPT} is missing: install the project (pip install -e . "
                             "or any make target)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_list_names_every_pipeline_with_its_description(tmp_path):
    done = gsr_pyg("list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == pipeline_names() == sorted(
        p.stem for p in (Path(__file__).parents[1] / "pipelines").glob("[!_]*.py"))
    assert {"mnist_grid", "learned_graph", "single_cell"} <= set(names)
    from pipelines.learned_graph import LearnedGraphSettings

    line = lines[names.index("learned_graph")]
    assert line.split(None, 1)[1] == " ".join(LearnedGraphSettings.description.split())


def test_run_a_pipeline_then_find_its_report(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["gsr-pyg"])
    assert main(["run", "learned_graph", *SHORT, "--out", "lg"]) == 0
    report = tmp_path / "lg" / "report.html"
    assert report.is_file() and f"report: {report.resolve()}" in capsys.readouterr().out
    assert (tmp_path / "lg" / "results.json").is_file()
    assert main(["report", "learned_graph", "--out", "lg"]) == 0
    assert capsys.readouterr().out.strip() == str(report.resolve())
    # an absolute --out, from another folder
    monkeypatch.chdir(Path(__file__).parent)
    assert main(["report", "learned_graph", "--out", str(tmp_path / "lg")]) == 0
    assert capsys.readouterr().out.strip() == str(report.resolve())


@pytest.mark.slow
def test_quick_learned_graph_from_the_installed_command(tmp_path):
    done = gsr_pyg("run", "learned_graph", "--quick", "--out", "quick", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = tmp_path / "quick" / "report.html"
    assert report.is_file() and f"report: {report.resolve()}" in done.stdout
    assert (tmp_path / "quick" / "results.json").is_file()
    found = gsr_pyg("report", "learned_graph", "--quick", "--out", "quick", cwd=tmp_path)
    assert found.returncode == 0 and found.stdout.strip() == str(report.resolve())


def test_a_pipelines_own_options_and_errors_pass_through(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "learned_graph", "--help"])
    assert exit_info.value.code == 0 and "--warmup-steps" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "learned_graph", "--samples", "0"])
    assert exit_info.value.code == 2
    assert "--samples: expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_refusals(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "learned_graph", "--out", "nowhere"]) == 1
    assert ("no report at nowhere/report.html; run: gsr-pyg run learned_graph --out nowhere"
            in capsys.readouterr().err)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "no_such_pipeline"])
    assert exit_info.value.code == 2
    assert "no pipeline 'no_such_pipeline'; the pipelines are: learned_graph" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run"])
    assert "run needs the name of a pipeline" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])
    assert "a command is required: list, run or report" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["list", "extra"])
    assert "list takes no arguments" in capsys.readouterr().err


def test_descriptions_come_from_the_sources():
    for name in pipeline_names():
        assert len(describe(name)) > 40  # each pipeline says what it does
