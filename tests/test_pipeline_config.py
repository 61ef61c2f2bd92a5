"""The pipelines' command line (``pipelines/_cli.py``): a settings dataclass becomes options
and a --config file; the command line wins over the file, the file over --quick, --quick over
the full settings. (Refused command lines and files are in tests/bad_input_cases.py.)"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import ClassVar

import pytest

from pipelines import _cli, mnist_grid, reconstruction_cost
from pipelines._cli import non_negative_float, option, positive_int

GRID = mnist_grid.MnistGridSettings
COST = reconstruction_cost.ReconstructionCostSettings


def _long_options(settings_class) -> list[str]:
    """The long options that --help lists, in order."""
    text = _cli.build_parser(settings_class).format_help().split("options:", 1)[1]
    return re.findall(r"^  (--[a-z-]+)", text, flags=re.MULTILINE)


def test_every_flag_of_the_scripts_is_kept():
    common = ["--seed", "--device", "--data", "--train-subset", "--test-subset", "--threads",
              "--quiet", "--quick", "--config"]
    assert _long_options(GRID) == ["--weights", "--conv-head", "--epochs",
                                   "--batch-size", "--lr", "--out", *common]
    assert _long_options(COST) == ["--regularizers", "--strengths", "--epochs",
                                   "--batch-size", "--lr", "--out", *common]


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
                       "--epochs 2 --out 'runs/a b' --seed 3")
    assert _cli.parse_settings(GRID, shlex.split(command)[3:]) == settings
    assert _cli.command_line(GRID()) == "python -m pipelines.mnist_grid"


def test_run_command_passes_the_command_as_typed():
    seen = []
    result = _cli.run_command(GRID, lambda settings, command: seen.append((settings, command))
                              or "done", ["--quick", "--lr", "0.5"])
    assert result == "done"
    assert seen == [(GRID(weights=[0.0, 0.01], epochs=1, batch_size=128, lr=0.5),
                     "python -m pipelines.mnist_grid --quick --lr 0.5")]


@_cli.value_type("a number in [0, 1]")
def _probability(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise ValueError(text)
    return value


@dataclass(frozen=True)
class _Toy:
    """Settings without a quick preset, with a flag spelling, a group, an optional list."""

    prog: ClassVar[str] = "python -m pipelines.toy"
    description: ClassVar[str] = "A toy pipeline."

    steps: int = option(10, "steps", type=positive_int, flag="--learning-steps",
                        group="training")
    within: float = option(0.6, "correlation", type=_probability, group="data")
    columns: list[str] = option([], "columns", nargs="*", metavar="COLUMN")
    scale: str = option("standard", "scaling", choices=("standard", "none"))

    def __post_init__(self) -> None:
        _cli.check_settings(self)
        if self.steps > 100 and self.scale == "none":
            raise ValueError("--learning-steps above 100 needs scaling")


def test_option_spelling_groups_and_types_of_a_settings_class(tmp_path, capsys):
    help_text = _cli.build_parser(_Toy).format_help()
    assert "--quick" not in help_text  # no quick() preset, no --quick
    assert re.search(r"training:\n  --learning-steps STEPS", help_text)
    assert re.search(r"data:\n  --within WITHIN", help_text)
    settings = _cli.parse_settings(_Toy, ["--learning-steps", "5", "--columns"])
    assert (settings.steps, settings.columns) == (5, [])
    assert _Toy().columns is not _Toy().columns  # a list default is not shared
    path = tmp_path / "c.toml"
    path.write_text('learning-steps = 7\ncolumns = ["a", "b"]\nwithin = 1\n')
    assert _cli.read_config(_Toy, path) == {"steps": 7, "columns": ["a", "b"], "within": 1.0}
    path.write_text("steps = 7\n")  # the key is the option's name, not the field's
    with pytest.raises(ValueError, match=r"unknown key 'steps'; known keys: columns, "
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
