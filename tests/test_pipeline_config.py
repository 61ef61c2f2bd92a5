"""--config files of the pipeline scripts: values reach the settings, the command line wins
over the file and the file over --quick. (Refused files are in tests/bad_input_cases.py.)"""

from __future__ import annotations

import json

from pipelines import _common, mnist_grid


def _settings(argv):
    args = _common.parse_arguments(mnist_grid.build_parser(), argv)
    return args, _common.resolve_settings(args, mnist_grid.FULL_SETTINGS,
                                          mnist_grid.QUICK_SETTINGS)


def test_toml_values_are_read_with_the_option_types(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('epochs = 2\nbatch-size = 64\nweights = [0, 0.05]\nconv_head = true\n'
                    'out = "runs/x"\n')
    found = _common.read_config(mnist_grid.build_parser(), path)
    assert found == {"epochs": 2, "batch_size": 64, "weights": [0.0, 0.05], "conv_head": True,
                     "out": "runs/x"}
    assert isinstance(found["weights"][0], float)


def test_the_command_line_wins_over_the_file_and_the_file_over_quick(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"epochs": 3, "lr": 0.5, "quick": True}))
    args, settings = _settings(["--config", str(path), "--lr", "0.25"])
    assert args.quick is True
    assert settings["epochs"] == 3                 # file over the quick preset (1)
    assert settings["lr"] == 0.25                  # command line over the file
    assert settings["batch_size"] == mnist_grid.QUICK_SETTINGS["batch_size"]  # quick remains
    _, plain = _settings([])
    assert plain["epochs"] == mnist_grid.FULL_SETTINGS["epochs"]


def test_a_false_flag_in_the_file_leaves_the_default(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("conv_head = false\n")
    args, _ = _settings(["--config", str(path)])
    assert args.conv_head is False
    args, _ = _settings(["--config", str(path), "--conv-head"])
    assert args.conv_head is True
