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
``--config`` file (TOML or JSON, parsed as data, never evaluated; keys are the long option
names, ``batch_size`` or ``batch-size``, plus ``quick``), the ``quick()`` preset when asked
for, and the class defaults. ``option(...)`` takes argparse's ``type``, ``nargs``,
``choices``, ``metavar``, a ``flag`` spelling (default ``--field-name``) and an argument
``group`` title. A refused command line, config file or combination (a ValueError or
TypeError from the dataclass) exits with argparse's usage line and ``error: ...`` (status 2)
before anything runs; errors of the run itself propagate from ``main(argv)`` and become
``<name>: error: ...`` with status 2 under ``run_cli``. Custom ``type`` functions say what
they expect with ``@value_type("a number in [0, 1]")`` (or are made by ``number_type``), for
messages about config values.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
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
_OPTION = "pipelines.option"  # the metadata key that marks a field as an option


def value_type(expected: str) -> Callable[[Callable], Callable]:
    """Mark an argparse ``type`` function with what it expects (``"an integer >= 1"``);
    messages about config values and settings quote it."""
    def mark(parse: Callable) -> Callable:
        parse.expected = expected
        return parse
    return mark


def number_type(parse: type[int] | type[float], expected: str,
                accept: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse type: ``parse(text)`` (``int`` or ``float``), refused unless
    ``accept(value)``; messages say ``expected`` (``"an integer >= 1"``)."""
    kind = "an integer" if parse is int else "a number"

    @value_type(expected)
    def convert(text: str) -> float:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return convert


#: argparse type: a finite number >= 0.
non_negative_float = number_type(float, "a finite number >= 0",
                                 lambda value: math.isfinite(value) and value >= 0)
#: argparse type: an integer >= 1.
positive_int = number_type(int, "an integer >= 1", lambda value: value >= 1)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """How one settings field appears on the command line."""

    help: str
    type: Callable | None
    nargs: str | None
    choices: tuple | None
    metavar: str | None
    flag: str | None
    group: str | None


def option(default: Any, help: str, *, type: Callable | None = None, nargs: str | None = None,
           choices: Sequence | None = None, metavar: str | None = None,
           flag: str | None = None, group: str | None = None) -> Any:
    """A settings field that is also a command-line option (argparse's meanings; a ``bool``
    default False without ``type`` is a flag). A list default is copied for each instance."""
    if isinstance(default, bool) and default and type is None:
        raise ValueError("a flag (a bool option) must default to False: the command line "
                         "can only switch it on")
    spec = _Spec(help, type, nargs, tuple(choices) if choices is not None else None, metavar,
                 flag, group)
    metadata = {_OPTION: spec}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _options(settings_class: type) -> dict[str, tuple[dataclasses.Field, _Spec]]:
    """Config key (long option name with underscores) -> (field, spec). The fields a class
    declares come before those it inherits, so a pipeline's own options lead its --help."""
    declared: list[str] = []
    for cls in settings_class.__mro__:
        declared += [name for name in inspect.get_annotations(cls)
                     if name not in declared]
    found = {}
    for field in sorted(dataclasses.fields(settings_class), key=lambda f: declared.index(f.name)):
        spec = field.metadata.get(_OPTION)
        if spec is not None:
            key = (spec.flag or field.name).lstrip("-").replace("-", "_")
            found[key] = (field, spec)
    return found


def _is_flag(field: dataclasses.Field, spec: _Spec) -> bool:
    return spec.type is None and isinstance(field.default, bool)


def build_parser(settings_class: type) -> argparse.ArgumentParser:
    """The argparse parser of ``settings_class``: one option per field made with ``option``,
    ``--quick`` when the class has a ``quick()`` preset, and ``--config``. Every default is
    ``argparse.SUPPRESS``, so a parsed namespace holds only what the command line gave."""
    parser = argparse.ArgumentParser(prog=settings_class.prog,
                                     description=settings_class.description,
                                     argument_default=argparse.SUPPRESS)
    groups: dict[str | None, Any] = {None: parser}
    for key, (field, spec) in _options(settings_class).items():
        if spec.group not in groups:
            groups[spec.group] = parser.add_argument_group(spec.group)
        flag = spec.flag or "--" + key.replace("_", "-")
        if _is_flag(field, spec):
            groups[spec.group].add_argument(flag, dest=field.name, action="store_true",
                                            help=spec.help)
            continue
        extra = {name: value for name, value in (("type", spec.type), ("nargs", spec.nargs),
                                                 ("choices", spec.choices),
                                                 ("metavar", spec.metavar)) if value is not None}
        groups[spec.group].add_argument(flag, dest=field.name, help=spec.help, **extra)
    if hasattr(settings_class, "quick"):
        parser.add_argument("--quick", action="store_true",
                            help=getattr(settings_class, "quick_help",
                                         "the short demo settings (explicit options still win)"))
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
            field, spec = options[name]
            settings[field.name] = _value(field, spec, f"{where}: key {key!r}", value)
    return settings


def _flag_value(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} is a flag: expected true or false, got {value!r}")
    return value


def _value(field: dataclasses.Field, spec: _Spec, where: str, value: object) -> object:
    """``value`` checked (and converted) as the option's type, nargs and choices."""
    if _is_flag(field, spec):
        return _flag_value(where, value)
    if spec.nargs in ("+", "*"):
        if not isinstance(value, (list, tuple)) or (spec.nargs == "+" and not value):
            raise ValueError(f"{where} expects a list, each {_expected(spec)}, got {value!r}")
        return [_scalar(spec, f"{where}[{i}]", item) for i, item in enumerate(value)]
    return _scalar(spec, where, value)


def _expected(spec: _Spec) -> str:
    if spec.choices is not None:
        return "one of " + ", ".join(repr(c) for c in spec.choices)
    if spec.type in (None, str):
        return "a string"
    names = {int: "an integer", float: "a number"}
    return names.get(spec.type) or getattr(spec.type, "expected", "a number")


def _scalar(spec: _Spec, where: str, value: object) -> object:
    textual = spec.type in (None, str)
    if textual and isinstance(value, os.PathLike):  # out=Path(...) from Python
        value = os.fspath(value)
    if isinstance(value, bool) or not isinstance(value, str if textual else (int, float)):
        raise ValueError(f"{where} expects {_expected(spec)}, got {value!r}")
    if not textual:
        try:
            value = spec.type(str(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            raise ValueError(f"{where} expects {_expected(spec)}, got {value!r}") from None
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{where} expects {_expected(spec)}, got {value!r}")
    return value


def check_settings(settings: object) -> None:
    """Check every option field of a settings instance as its option would (type, nargs,
    choices; None stays allowed where it is the default) and store the converted values.
    Call it first in ``__post_init__``; raises ValueError naming the field."""
    for field, spec in _options(type(settings)).values():
        value = getattr(settings, field.name)
        if value is None and field.default is None:
            continue
        checked = _value(field, spec, field.name, value)
        object.__setattr__(settings, field.name, checked)  # frozen dataclasses too


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
    """A command that gives ``settings``: ``prog`` and every option that differs from the
    class default."""
    words = [type(settings).prog]
    default = type(settings)()
    for key, (field, spec) in _options(type(settings)).items():
        value = getattr(settings, field.name)
        if value == getattr(default, field.name):
            continue
        flag = spec.flag or "--" + key.replace("_", "-")
        if _is_flag(field, spec):
            words.append(flag)
        else:
            items = value if isinstance(value, list) else [value]
            words += [flag, *(shlex.quote(str(item)) for item in items)]
    return " ".join(words)


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
