"""The command line of every pipeline: a settings dataclass becomes its options and --config.

A pipeline is a dataclass of settings (the full, paper settings as defaults, a ``quick()``
preset), a ``run(settings, command=None) -> Path`` and a one-line ``main``::

    @dataclass(frozen=True)
    class ToySettings:
        prog: ClassVar[str] = "python -m pipelines.toy"        # usage line and report
        description: ClassVar[str] = "Train the toy model."    # --help text
        quick_help: ClassVar[str] = "a 1-epoch demo"    # optional: --quick's help text
        epochs: int = option(40, "epochs (default 40; --quick: 1)", type=positive_int)
        weights: list = option([0.0, 0.1], "penalty weights", type=non_negative_float, nargs="+")
        conv_head: bool = option(False, "a bool default False is a flag (--conv-head)")

        def __post_init__(self): check_settings(self)   # then ValueError for combinations

        @classmethod
        def quick(cls) -> ToySettings: return cls(epochs=1)   # offers --quick when defined

    def main(argv: Sequence[str] | None = None) -> Path:
        return run_command(ToySettings, run, argv)   # run(settings, command=<typed line>)

    if __name__ == "__main__":
        run_cli(main)

Each setting is taken, in order of precedence, from what the command line gives explicitly, a
``--config`` file (TOML or JSON, parsed as data, never evaluated; keys are the option names,
``batch_size`` or ``batch-size``, plus ``quick``), the ``quick()`` preset when asked for, and
the class defaults. A field ``batch_size`` is the option ``--batch-size``; ``option(...)``
takes argparse's ``type``, ``nargs``, ``choices`` and ``metavar`` and an argument ``group``
title. --help lists the options of the class that first declares them, most derived class
first (a pipeline's own options lead; a field a subclass redeclares keeps its place), with
``--quick`` right after ``--out`` and ``--config`` last. A refused command line, config file or
combination (a ValueError or TypeError from the dataclass) exits with argparse's usage line
and ``error: ...`` (status 2) before anything runs; errors of the run itself propagate from
``main(argv)`` and become ``<name>: error: ...`` with status 2 under ``run_cli``. Custom
``type`` functions are made by ``number_type``, which also says what they expect in messages
about config values.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import inspect
import io
import json
import math
import os
import pickle
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: JSON configs only
    tomllib = None

SettingsT = TypeVar("SettingsT")
ResultT = TypeVar("ResultT")
CONFIG_HELP = ("settings from a .toml or .json file whose keys are the long option names "
               "(e.g. batch_size = 128); the command line wins")
# field metadata of an option: its argparse keyword arguments, and its argument group
_OPTION, _GROUP = "pipelines.option", "pipelines.group"


def number_type(parse: type[int] | type[float], expected: str,
                accept: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse type: ``parse(text)`` (``int`` or ``float``), refused unless
    ``accept(value)``; messages say ``expected`` (``"an integer >= 1"``)."""
    kind = "an integer" if parse is int else "a number"

    def convert(text: str) -> float:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    convert.expected = expected  # for messages about config values and settings
    return convert


#: argparse type: a finite number >= 0.
non_negative_float = number_type(float, "a finite number >= 0",
                                 lambda value: math.isfinite(value) and value >= 0)
#: argparse type: an integer >= 1.
positive_int = number_type(int, "an integer >= 1", lambda value: value >= 1)


def option(default: Any, help: str, *, type: Callable | None = None,
           nargs: str | int | None = None,
           choices: Sequence | None = None, metavar: str | tuple[str, ...] | None = None,
           group: str | None = None) -> Any:
    """A settings field that is also a command-line option (argparse's meanings; a ``bool``
    default False without ``type`` is a flag). A list default is copied for each instance."""
    if isinstance(default, bool) and type is None:
        if default:
            raise ValueError("a flag (a bool option) must default to False: the command line "
                             "can only switch it on")
        argparse_kwargs = {"action": "store_true", "help": help}
    else:
        argparse_kwargs = {"help": help, "type": type, "nargs": nargs, "metavar": metavar,
                           "choices": tuple(choices) if choices is not None else None}
    metadata = {_OPTION: argparse_kwargs, _GROUP: group}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _options(settings_class: type) -> dict[str, dataclasses.Field]:
    """The option fields by name, in --help order: by the class that first declares them,
    most derived class first; in a class, in the order it declares them."""
    mro = settings_class.__mro__
    first = {}
    for index in reversed(range(len(mro))):
        for name in inspect.get_annotations(mro[index]):
            first.setdefault(name, index)
    fields = [field for field in dataclasses.fields(settings_class) if _OPTION in field.metadata]
    return {field.name: field for field in sorted(fields, key=lambda f: first[f.name])}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _kwargs(field: dataclasses.Field) -> dict:
    return field.metadata[_OPTION]


def _is_flag(field: dataclasses.Field) -> bool:
    return _kwargs(field).get("action") == "store_true"


def build_parser(settings_class: type) -> argparse.ArgumentParser:
    """The argparse parser of ``settings_class``: one option per field made with ``option``,
    ``--quick`` when the class has a ``quick()`` preset, and ``--config``. Every default is
    ``argparse.SUPPRESS``, so a parsed namespace holds only what the command line gave."""
    parser = argparse.ArgumentParser(prog=settings_class.prog,
                                     description=settings_class.description,
                                     argument_default=argparse.SUPPRESS)

    def add_quick() -> None:
        parser.add_argument("--quick", action="store_true",
                            help=getattr(settings_class, "quick_help",
                                         "the short demo settings (explicit options still win)"))

    options = _options(settings_class)
    offers_quick = hasattr(settings_class, "quick")
    groups: dict[str | None, Any] = {None: parser}
    for name, field in options.items():
        title = field.metadata[_GROUP]
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        groups[title].add_argument(_flag(name), **_kwargs(field))
        if name == "out" and offers_quick:
            add_quick()
    if offers_quick and "out" not in options:
        add_quick()
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    return parser


def read_config(settings_class: type, path: str | os.PathLike) -> dict:
    """The settings of a TOML or JSON config file as ``{field name: value}`` (and ``quick``),
    each value checked against its option. Raises ValueError naming the file, the key and
    what was expected."""
    path = Path(path)
    where = f"config file {str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{where} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(f"{where} must end in .toml or .json, got {suffix or 'no suffix'!r}")
    if suffix == ".toml" and tomllib is None:
        raise ValueError(f"{where}: TOML needs Python 3.11 or later; write it as JSON")
    try:  # both decoders raise ValueError subclasses; neither evaluates anything
        text = path.read_text(encoding="utf-8")
        content = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except ValueError as err:
        raise ValueError(f"{where} is not valid {suffix[1:].upper()}: {err}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{where} must hold a table of settings, got a "
                         f"{type(content).__name__}")
    options = _options(settings_class)
    known = sorted([*options, *(["quick"] if hasattr(settings_class, "quick") else [])])
    settings = {}
    for key, value in content.items():
        name = key.replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(f"{where}: unknown key {key!r}; {hint}known keys: "
                             f"{', '.join(known)}")
        if name == "quick":
            settings["quick"] = _flag_value(f"{where}: key {key!r}", value)
        else:
            settings[name] = _value(options[name], f"{where}: key {key!r}", value)
    return settings


def _flag_value(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} is a flag: expected true or false, got {value!r}")
    return value


def _value(field: dataclasses.Field, where: str, value: object) -> object:
    """``value`` checked (and converted) as the option's type, nargs and choices."""
    if _is_flag(field):
        return _flag_value(where, value)
    kwargs = _kwargs(field)
    nargs = kwargs["nargs"]
    if nargs in ("+", "*") or isinstance(nargs, int):
        count = f"a list of {nargs}" if isinstance(nargs, int) else "a list"
        if (not isinstance(value, (list, tuple)) or (nargs == "+" and not value)
                or (isinstance(nargs, int) and len(value) != nargs)):
            raise ValueError(f"{where} expects {count}, each {_expected(kwargs)}, got {value!r}")
        return [_scalar(kwargs, f"{where}[{i}]", item) for i, item in enumerate(value)]
    return _scalar(kwargs, where, value)


def _expected(kwargs: dict) -> str:
    if kwargs["choices"] is not None:
        return "one of " + ", ".join(repr(c) for c in kwargs["choices"])
    if kwargs["type"] in (None, str):
        return "a string"
    names = {int: "an integer", float: "a number"}
    return names.get(kwargs["type"]) or getattr(kwargs["type"], "expected", "a number")


def _scalar(kwargs: dict, where: str, value: object) -> object:
    convert = kwargs["type"]
    textual = convert in (None, str)
    if textual and isinstance(value, os.PathLike):  # out=Path(...) from Python
        value = os.fspath(value)
    if isinstance(value, bool) or not isinstance(value, str if textual else (int, float)):
        raise ValueError(f"{where} expects {_expected(kwargs)}, got {value!r}")
    if not textual:
        try:
            value = convert(str(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            raise ValueError(f"{where} expects {_expected(kwargs)}, got {value!r}") from None
    if kwargs["choices"] is not None and value not in kwargs["choices"]:
        raise ValueError(f"{where} expects {_expected(kwargs)}, got {value!r}")
    return value


def check_settings(settings: object) -> None:
    """Check every option field of a settings instance as its option would (type, nargs,
    choices; None stays allowed where it is the default) and store the converted values.
    Call it first in ``__post_init__``; raises ValueError naming the field."""
    for name, field in _options(type(settings)).items():
        value = getattr(settings, name)
        if value is None and field.default is None:
            continue
        object.__setattr__(settings, name, _value(field, name, value))  # frozen ones too


def parse_settings(settings_class: type[SettingsT],
                   argv: Sequence[str] | None = None) -> SettingsT:
    """The settings that ``argv`` asks for: explicit options, over the ``--config`` file,
    over ``quick()`` when asked for, over the class defaults. A refused option, file or
    combination exits with the usage line and ``error: ...`` (status 2)."""
    parser = build_parser(settings_class)
    given = vars(parser.parse_args(argv))
    from_file = {}
    if given.get("config") is not None:
        try:
            from_file = read_config(settings_class, given["config"])
        except ValueError as err:
            parser.error(str(err))
    given.pop("config", None)
    quick_in_file = from_file.pop("quick", False)
    quick = given.pop("quick", quick_in_file)
    try:
        base = settings_class.quick() if quick else settings_class()
        return dataclasses.replace(base, **{**from_file, **given})
    except (ValueError, TypeError) as err:
        parser.error(str(err))


def command_line(settings: object) -> str:
    """A command that gives ``settings``: ``prog``, every option that differs from the class
    default and, when only that gives the settings back, ``--quick`` (which also sets fields
    that are no option). Settings that no command gives end with a note naming the fields
    that are no option: ``(after_stop_steps=7: no command-line option)``."""
    settings_class = type(settings)
    default = settings_class()
    argv = []
    for name, field in _options(settings_class).items():
        value = getattr(settings, name)
        if value == getattr(default, name):
            continue
        argv.append(_flag(name))
        if not _is_flag(field):
            argv += [str(item) for item in (value if isinstance(value, list) else [value])]
    tries = [argv, [*argv, "--quick"]] if hasattr(settings_class, "quick") else [argv]
    for words in tries:
        if _parsed_quietly(settings_class, words) == settings:
            return " ".join([settings_class.prog, *map(shlex.quote, words)])
    line = " ".join([settings_class.prog, *map(shlex.quote, argv)])
    others = [f"{field.name}={getattr(settings, field.name)}"
              for field in dataclasses.fields(settings_class) if _OPTION not in field.metadata
              and getattr(settings, field.name) != getattr(default, field.name)]
    return f"{line} ({', '.join(others)}: no command-line option)" if others else line


def _parsed_quietly(settings_class: type[SettingsT], argv: list[str]) -> SettingsT | None:
    """The settings ``argv`` gives, or None when it is refused (nothing printed)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return parse_settings(settings_class, argv)
    except SystemExit:
        return None


def report_command(settings: object, command: str | None) -> str:
    """The command line a report shows: ``command`` as typed when given, else one that gives
    ``settings`` (:func:`command_line`: a run started from Python)."""
    return command_line(settings) if command is None else command


def run_command(settings_class: type[SettingsT], run: Callable[..., ResultT],
                argv: Sequence[str] | None = None) -> ResultT:
    """``run(settings, command=...)`` with the settings ``argv`` (default ``sys.argv[1:]``)
    asks for; ``command`` is the command line as typed, for the report."""
    argv = sys.argv[1:] if argv is None else [str(word) for word in argv]
    settings = parse_settings(settings_class, argv)
    return run(settings, command=" ".join([settings_class.prog, *argv]))


def run_cli(main: Callable[[], object]) -> None:
    """Run a pipeline's ``main`` from the command line: a bad input found while running (a
    missing or damaged file, a value the data cannot take) ends with ``<name>: error:
    <message>`` and exit status 2, not a traceback."""
    try:
        main()
    except (ValueError, TypeError, OSError, pickle.UnpicklingError) as err:
        print(f"{Path(sys.argv[0]).stem}: error: {err}", file=sys.stderr)
        sys.exit(2)
