"""The ``gsr-pyg`` command (also ``python -m pipelines``): list, run and find the reports of
the pipelines.

::

    gsr-pyg list                                 # every pipeline and what it does
    gsr-pyg run mnist_grid --quick               # = python -m pipelines.mnist_grid --quick
    gsr-pyg run learned_graph --help             # a pipeline's own options
    gsr-pyg report mnist_grid --quick            # the path of that run's report.html
    gsr-pyg report mnist_grid --out runs/demo --open   # ... and open it in a browser

``report`` takes the pipeline's own options (``--out``, ``--config``, ``--quick``) to find
the run's output folder, as the pipeline itself would.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
import webbrowser
from collections.abc import Sequence
from pathlib import Path

from ._cli import parse_settings, run_cli

PACKAGE = Path(__file__).parent
REPORT = "report.html"


def pipeline_names() -> list[str]:
    """The pipelines: the modules of this package that are not private (``_x``)."""
    return sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_"))


def _settings_node(tree: ast.Module) -> ast.ClassDef | None:
    """The settings class of a pipeline's source: the class that sets ``prog``."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                        and item.target.id == "prog"):
                    return node
    return None


def describe(name: str) -> str:
    """A pipeline's ``description``, read from its source (importing every pipeline would
    take torch and each one's data modules: seconds each)."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    node = _settings_node(tree)
    for item in node.body if node is not None else ():
        if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                and item.target.id == "description" and item.value is not None):
            return " ".join(ast.literal_eval(item.value).split())
    docstring = ast.get_docstring(tree) or ""
    return docstring.split("\n\n")[0].replace("\n", " ")


def _check_name(name: str, parser: argparse.ArgumentParser) -> str:
    names = pipeline_names()
    if name not in names:
        parser.error(f"no pipeline {name!r}; the pipelines are: {', '.join(names)} "
                     "(gsr-pyg list)")
    return name


def _settings_class(module) -> type:
    """The settings dataclass of an imported pipeline (the class that sets ``prog``)."""
    for value in vars(module).values():
        if (isinstance(value, type) and value.__module__ == module.__name__
                and isinstance(getattr(value, "prog", None), str)):
            return value
    raise ValueError(f"pipeline {module.__name__} has no settings class")


def report_path(name: str, options: Sequence[str] = ()) -> Path:
    """The ``report.html`` of the run of pipeline ``name`` that ``options`` describe (its
    ``--out``, ``--config``, ``--quick``; default: the pipeline's default folder)."""
    module = importlib.import_module(f"pipelines.{name}")
    settings = parse_settings(_settings_class(module), list(options))
    return Path(settings.out) / REPORT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gsr-pyg", description="Graph spectral regularization: list the pipelines, run "
        "one, find the report of a run.", epilog="gsr-pyg list | gsr-pyg run NAME [its "
        "options, --help for them] | gsr-pyg report NAME [--open] [its --out / --config / "
        "--quick]")
    parser.add_argument("command", choices=("list", "run", "report"),
                        help="list the pipelines, run one, or print the path of a run's "
                             "report.html")
    parser.add_argument("name", nargs="?", metavar="NAME", help="the pipeline (gsr-pyg list)")
    parser.add_argument("options", nargs=argparse.REMAINDER, metavar="...",
                        help="run: the pipeline's options; report: --open and the options "
                             "that say where the run is")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``gsr-pyg COMMAND ...``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else [str(word) for word in argv]
    parser = build_parser()
    if not argv:
        parser.error("a command is required: list, run or report")
    args = parser.parse_args(argv)
    if args.command == "list":
        if args.name is not None:
            parser.error(f"list takes no arguments, got {' '.join(argv[1:])}")
        names = pipeline_names()
        width = max(map(len, names))
        for name in names:
            print(f"{name:<{width}}  {describe(name)}")
        return 0
    if args.name is None:
        parser.error(f"{args.command} needs the name of a pipeline (gsr-pyg list)")
    name = _check_name(args.name, parser)
    if args.command == "run":
        module = importlib.import_module(f"pipelines.{name}")
        run_cli(lambda: module.main(args.options))
        return 0
    options = [word for word in args.options if word != "--open"]
    path = report_path(name, options)
    if not path.is_file():
        print(f"gsr-pyg: error: no report at {path}; run: gsr-pyg run "
              f"{' '.join([name, *options])}", file=sys.stderr)
        return 1
    print(path.resolve())
    if "--open" in args.options:
        webbrowser.open(path.resolve().as_uri())
    return 0


if __name__ == "__main__":
    sys.exit(main())
