"""The pipelines' command line (``pipelines/_cli.py``): a settings dataclass becomes options
and a --config file; the command line wins over the file, the file over --quick, --quick over
the full settings. The settings of the learned-graph pipelines, and what the pipeline modules
may import. (Refused command lines and files are in tests/bad_input_cases.py.)"""

from __future__ import annotations

import ast
import json
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import pytest

from pipelines import _cli, learned_graph, mnist_grid, reconstruction_cost, single_cell
from pipelines._cli import option, positive_int
from pipelines._graph_learning import preset_settings
from pipelines.learned_graph import _probability

GRID = mnist_grid.MnistGridSettings
COST = reconstruction_cost.ReconstructionCostSettings
LEARNED = learned_graph.LearnedGraphSettings
SINGLE = single_cell.SingleCellSettings
PIPELINES = Path(__file__).parent.parent / "pipelines"

# The options of each script in the order of its --help, and the options of each argument
# group, as the scripts had them before they were built from settings classes.
MNIST_COMMON = ["--seed", "--device", "--data", "--out", "--quick", "--train-subset",
                "--test-subset", "--threads", "--quiet", "--config"]
RUN_COMMON = ["--seed", "--device", "--out", "--quick", "--threads", "--quiet", "--config"]
OVERRIDES = ["--warmup-steps", "--refresh-every", "--learning-steps", "--weight", "--lr",
             "--batch-size"]
ORIGINAL_OPTIONS = {
    GRID: ["-h", "--weights", "--conv-head", "--epochs", "--batch-size", "--lr",
           "--spectral-response", "--heat-t", "--high-pass-cutoff", "--power-p",
           *MNIST_COMMON],
    COST: ["-h", "--regularizers", "--strengths", "--epochs", "--batch-size", "--lr",
           *MNIST_COMMON],
    LEARNED: ["-h", "--benchmark", "--modules", "--within-corr", "--shift", "--noise",
              "--active-per-sample", "--perturb", "--shuffle-features", "--samples",
              "--eval-samples", "--presets", *OVERRIDES, *RUN_COMMON],
    SINGLE: ["-h", "--data", "--layer", "--genes", "--hvg", "--scale", "--label-columns",
             "--pseudotime-column", "--preset", *OVERRIDES, "--holdout", "--latent-dim",
             "--noise-std", "--module-method", "--num-modules", "--top-genes", "--min-loading",
             "--relative-loading", "--embedding", *RUN_COMMON],
}
ORIGINAL_GROUPS = {
    GRID: {"options": ORIGINAL_OPTIONS[GRID]},
    COST: {"options": ORIGINAL_OPTIONS[COST]},
    LEARNED: {
        "options": ["-h", *RUN_COMMON],
        "data (gsr_pyg.data.planted_modules)": [
            "--benchmark", "--modules", "--within-corr", "--shift", "--noise",
            "--active-per-sample", "--perturb", "--shuffle-features", "--samples",
            "--eval-samples"],
        "training (override both presets)": ["--presets", *OVERRIDES]},
    SINGLE: {
        "options": ["-h", *RUN_COMMON],
        "data": ["--data", "--layer", "--genes", "--hvg", "--scale", "--label-columns",
                 "--pseudotime-column"],
        "model and training": ["--preset", *OVERRIDES, "--holdout", "--latent-dim",
                               "--noise-std"],
        "read-outs": ["--module-method", "--num-modules", "--top-genes", "--min-loading",
                      "--relative-loading", "--embedding"]},
}


def _help_options(settings_class) -> tuple[list[str], dict[str, list[str]]]:
    """The options of --help's usage line, in order, and the options of each section."""
    parser = _cli.build_parser(settings_class)
    usage = re.findall(r"\[(-h|--[a-z-]+)", parser.format_usage())
    sections: dict[str, list[str]] = {}
    title = None
    for line in parser.format_help().splitlines():
        if re.fullmatch(r"\S.*:", line) and not line.startswith("usage:"):
            title = line[:-1]
            sections[title] = []
        elif title is not None and re.match(r"  (-h|--[a-z-]+)", line):
            sections[title].append(line.split()[0].rstrip(","))
    return usage, sections


@pytest.mark.parametrize("settings_class", list(ORIGINAL_OPTIONS), ids=lambda c: c.prog)
def test_help_lists_the_original_options_in_the_original_order(settings_class):
    usage, sections = _help_options(settings_class)
    assert usage == ORIGINAL_OPTIONS[settings_class]
    assert sections == ORIGINAL_GROUPS[settings_class]


def test_toml_values_are_read_with_the_option_types(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('epochs = 2\nbatch-size = 64\nweights = [0, 0.05]\nconv_head = true\n'
                    'out = "runs/x"\n')
    found = _cli.read_config(GRID, path)
    assert found == {"epochs": 2, "batch_size": 64, "weights": [0.0, 0.05], "conv_head": True,
                     "out": "runs/x"}
    assert isinstance(found["weights"][0], float)


def test_the_command_line_wins_over_the_file_and_the_file_over_quick(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"epochs": 3, "lr": 0.5, "quick": True}))
    settings = _cli.parse_settings(GRID, ["--config", str(path), "--lr", "0.25"])
    assert settings.epochs == 3                    # file over the quick preset (1)
    assert settings.lr == 0.25                     # command line over the file
    assert settings.batch_size == GRID.quick().batch_size == 128  # quick remains
    assert settings.weights == [0.0, 0.01]
    plain = _cli.parse_settings(GRID, [])
    assert plain == GRID() and plain.epochs == 40 and plain.batch_size == 500
    # an explicit option over --quick, and --quick from the command line over the file
    path.write_text(json.dumps({"quick": False, "seed": 7}))
    settings = _cli.parse_settings(GRID, ["--config", str(path), "--quick", "--epochs", "2"])
    assert (settings.epochs, settings.batch_size, settings.seed) == (2, 128, 7)


def test_quick_presets_of_the_scripts():
    assert _cli.parse_settings(GRID, ["--quick", "--epochs", "3"]) == GRID(
        weights=[0.0, 0.01], epochs=3, batch_size=128, lr=1e-3)
    quick = _cli.parse_settings(COST, ["--quick", "--train-subset", "100"])
    assert (quick.strengths, quick.epochs, quick.train_subset, quick.test_subset) == (
        [1e-4, 1e-2, 1.0, 1e2], 2, 100, 1000)
    full = _cli.parse_settings(COST, [])
    assert full.strengths == [10.0 ** k for k in range(-5, 6)]
    assert (full.train_subset, full.test_subset, full.batch_size) == (None, None, 32)


def test_a_false_flag_in_the_file_leaves_the_default(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("conv_head = false\n")
    assert _cli.parse_settings(GRID, ["--config", str(path)]).conv_head is False
    assert _cli.parse_settings(GRID, ["--config", str(path), "--conv-head"]).conv_head is True


def test_settings_from_python_are_checked_like_the_command_line():
    with pytest.raises(ValueError, match=r"^epochs expects an integer >= 1, got 0$"):
        GRID(epochs=0)
    with pytest.raises(ValueError, match=r"^weights\[1\] expects a finite number >= 0, got -1"):
        GRID(weights=[0.0, -1])
    with pytest.raises(ValueError, match=r"^conv_head is a flag: expected true or false"):
        GRID(conv_head="yes")
    with pytest.raises(ValueError, match=r"regularizers\[0\] expects one of 'none', 'l1'"):
        COST(regularizers=["l3"])
    with pytest.raises(ValueError, match=r"--device must name a torch device"):
        GRID(device="gpu")
    assert GRID(lr=1, train_subset=5).lr == 1.0  # converted as the option converts


def test_command_line_of_settings_gives_them_back():
    settings = GRID(weights=[0.0, 1e-5], conv_head=True, epochs=2, out="runs/a b", seed=3)
    command = _cli.command_line(settings)
    assert command == ("python -m pipelines.mnist_grid --weights 0.0 1e-05 --conv-head "
                       "--epochs 2 --seed 3 --out 'runs/a b'")
    assert _cli.parse_settings(GRID, shlex.split(command)[3:]) == settings
    assert _cli.command_line(GRID()) == "python -m pipelines.mnist_grid"
    assert _cli.report_command(settings, None) == command
    assert _cli.report_command(settings, "as typed") == "as typed"


def test_command_line_adds_quick_only_when_it_gives_the_settings_back():
    # after_stop_steps is no option: only --quick sets it (to 50, with a short schedule)
    for settings in (LEARNED.quick(), replace(LEARNED.quick(), samples=100, seed=[1, 2]),
                     SINGLE.quick(), replace(SINGLE.quick(), preset="reference")):
        command = _cli.command_line(settings)
        assert command.endswith(" --quick")
        assert _cli.parse_settings(type(settings), shlex.split(command)[3:]) == settings
    assert _cli.command_line(LEARNED.quick()) == (
        "python -m pipelines.learned_graph --samples 4096 --eval-samples 2048 --warmup-steps "
        "300 --refresh-every 50 --learning-steps 300 --quick")
    # the quick value of after_stop_steps without the rest of the quick settings: --quick
    # would give other settings, so the command says what it cannot give
    assert _cli.command_line(replace(LEARNED(), after_stop_steps=50)) == (
        "python -m pipelines.learned_graph (after_stop_steps=50: no command-line option)")
    assert _cli.command_line(replace(SINGLE.quick(), after_stop_steps=7)) == (
        "python -m pipelines.single_cell --warmup-steps 300 --refresh-every 50 "
        "--learning-steps 300 (after_stop_steps=7: no command-line option)")
    assert _cli.command_line(replace(LEARNED(), lr=0.5)) == (
        "python -m pipelines.learned_graph --lr 0.5")


def test_run_command_passes_the_command_as_typed():
    seen = []
    result = _cli.run_command(GRID, lambda settings, command: seen.append((settings, command))
                              or "done", ["--quick", "--lr", "0.5"])
    assert result == "done"
    assert seen == [(GRID(weights=[0.0, 0.01], epochs=1, batch_size=128, lr=0.5),
                     "python -m pipelines.mnist_grid --quick --lr 0.5")]


@dataclass(frozen=True)
class _Toy:
    """Settings without a quick preset, with groups, a custom type, an optional list."""

    prog: ClassVar[str] = "python -m pipelines.toy"
    description: ClassVar[str] = "A toy pipeline."

    learning_steps: int = option(10, "steps", type=positive_int, group="training")
    within: float = option(0.6, "correlation", type=_probability, group="data")
    columns: list[str] = option([], "columns", nargs="*", metavar="COLUMN")
    scale: str = option("standard", "scaling", choices=("standard", "none"))

    def __post_init__(self) -> None:
        _cli.check_settings(self)
        if self.learning_steps > 100 and self.scale == "none":
            raise ValueError("--learning-steps above 100 needs scaling")


def test_option_names_groups_and_types_of_a_settings_class(tmp_path, capsys):
    help_text = _cli.build_parser(_Toy).format_help()
    assert "--quick" not in help_text  # no quick() preset, no --quick
    assert re.search(r"training:\n  --learning-steps LEARNING_STEPS", help_text)
    assert re.search(r"data:\n  --within WITHIN", help_text)
    settings = _cli.parse_settings(_Toy, ["--learning-steps", "5", "--columns"])
    assert (settings.learning_steps, settings.columns) == (5, [])
    assert _Toy().columns is not _Toy().columns  # a list default is not shared
    path = tmp_path / "c.toml"
    path.write_text('learning-steps = 7\ncolumns = ["a", "b"]\nwithin = 1\n')
    assert _cli.read_config(_Toy, path) == {"learning_steps": 7, "columns": ["a", "b"],
                                            "within": 1.0}
    path.write_text("learning = 7\n")
    with pytest.raises(ValueError, match=r"unknown key 'learning'; did you mean "
                                         r"learning_steps\? known keys: columns, "
                                         r"learning_steps, scale, within$"):
        _cli.read_config(_Toy, path)
    path.write_text("within = 1.5\n")
    with pytest.raises(ValueError, match=r"key 'within' expects a number in \[0, 1\], got 1\.5"):
        _cli.read_config(_Toy, path)
    path.write_text("quick = true\n")
    with pytest.raises(ValueError, match=r"unknown key 'quick'"):
        _cli.read_config(_Toy, path)
    # a combination the class refuses ends like any refused option
    with pytest.raises(SystemExit) as exit_info:
        _cli.parse_settings(_Toy, ["--learning-steps", "200", "--scale", "none"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(
        "python -m pipelines.toy: error: --learning-steps above 100 needs scaling\n")


def test_a_flag_defaulting_to_true_is_refused():
    with pytest.raises(ValueError, match="must default to False"):
        option(True, "a flag that could never be switched off")


# --------------------------------------------------------------------------- learned graphs
def test_presets_and_quick_schedule_are_shared():
    for settings_class in (LEARNED, SINGLE):
        quick = settings_class.quick()
        reference = preset_settings("reference", quick)
        assert reference == {"warmup_steps": 300, "refresh_every": 50,
                             "max_learning_steps": 300, "after_stop_steps": 50,
                             "stop": "disconnected", "learner": "reference", "batch_size": 32,
                             "lr": 1e-3, "weight": 1e-3}
        # a preset that never stops keeps no steps after a stop
        assert preset_settings("recommended", quick)["after_stop_steps"] == 0
        assert preset_settings("recommended", settings_class())["warmup_steps"] == 2000
        # explicit options win over --quick
        explicit = replace(quick, learning_steps=100, weight=0.01)
        assert preset_settings("reference", explicit)["max_learning_steps"] == 100
        assert preset_settings("recommended", explicit)["weight"] == 0.01


def test_num_modules_only_with_the_spectral_cut(tmp_path, capsys):
    # --num-modules sets k of the spectral cut; with another cut it would be ignored (and
    # still recorded in results.json), so it is refused
    message = ("--num-modules is the k of --module-method spectral; --module-method louvain "
               "takes no --num-modules")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SINGLE(num_modules=4)
    with pytest.raises(SystemExit) as exit_info:
        _cli.parse_settings(SINGLE, ["--num-modules", "4"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(f"error: {message}\n")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"module_method": "components", "num_modules": 3}))
    with pytest.raises(SystemExit):
        _cli.parse_settings(SINGLE, ["--config", str(path)])
    assert "--module-method components takes no --num-modules" in capsys.readouterr().err
    spectral = _cli.parse_settings(SINGLE, ["--module-method", "spectral", "--num-modules", "4"])
    assert (spectral.module_method, spectral.num_modules) == ("spectral", 4)
    assert SINGLE().num_modules is None


# --------------------------------------------------------------------------- imports
def _imported_modules(source: str) -> set[str]:
    """The full names of the modules (and of the names in them) that a module of
    ``pipelines/`` imports: ``from . import x`` is ``pipelines.x``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level <= 1, "pipelines is a top-level package"
            base = ".".join(filter(None, ["pipelines" if node.level else "", node.module]))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_pipeline_module_imports_a_script():
    # what several scripts need lives in the library or in pipelines/_*.py
    scripts = {f"pipelines.{path.stem}" for path in PIPELINES.glob("[!_]*.py")}
    assert scripts == {"pipelines.learned_graph", "pipelines.single_cell",
                       "pipelines.mnist_grid", "pipelines.reconstruction_cost",
                       "pipelines.topographic_comparison", "pipelines.pretrained_topography"}
    modules = sorted(PIPELINES.glob("*.py"))
    assert len(modules) > len(scripts) + 3  # the _*.py modules are scanned too
    for path in modules:
        imported = _imported_modules(path.read_text(encoding="utf-8"))
        assert not imported & scripts, (path.name, imported & scripts)
    # the scan sees through relative imports and is not fooled by a library module of the
    # same last name
    assert _imported_modules("from . import single_cell") & scripts
    assert _imported_modules("from .mnist_grid import evaluate") & scripts
    assert _imported_modules("import pipelines.learned_graph as lg") & scripts
    assert not _imported_modules("from gsr_pyg.data.single_cell import load_anndata\n"
                                 "from ._single_cell_io import results_json") & scripts
