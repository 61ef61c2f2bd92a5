"""A self-contained HTML report: headings, paragraphs, tables and inline images.

The file needs nothing beside it: images are embedded as base64 ``data:`` URIs and the
style sheet is inline, so a report can be mailed or archived as one file and opened offline.

Example::

    write_html_report("run/report.html", "MNIST, 8x8 grid", [
        ("Accuracy", ["Test accuracy per penalty weight.",
                      [{"weight": 0.0, "accuracy": 0.991}, {"weight": 0.01, "accuracy": 0.989}]]),
        ("Class maps", [Path("run/class_maps.png")]),
    ])
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._validation import describe
from .files import atomic_write

__all__ = ["write_html_report"]

_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; line-height: 1.5; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: right; }
th { background: #f3f3f3; }
td.text { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #666; font-size: 0.9em; }
"""


def _format_cell(value) -> tuple[str, bool]:
    """The text of a table cell and whether it is text (left-aligned) rather than a number."""
    if value is None:
        return "", True
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # 0-d tensors and numpy scalars
    if isinstance(value, bool):
        return str(value), True
    if isinstance(value, numbers.Integral):
        return str(int(value)), False
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return str(value), False
        return f"{value:.4g}", False
    return str(value), True


def _table_html(rows: Sequence[Mapping]) -> str:
    columns: list = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    head = "".join(f"<th>{html.escape(str(key))}</th>" for key in columns)
    body = []
    for row in rows:
        cells = []
        for key in columns:
            text, is_text = _format_cell(row.get(key))
            css = ' class="text"' if is_text else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body)
            + "\n</tbody>\n</table>")


def _image_html(data: bytes, mime: str, caption: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    text = html.escape(caption)
    return (f'<figure><img src="data:{mime};base64,{encoded}" alt="{text}">'
            f"<figcaption>{text}</figcaption></figure>")


def _item_html(item, where: str) -> str:
    if isinstance(item, str):
        return f"<p>{html.escape(item)}</p>"
    if isinstance(item, os.PathLike):
        path = Path(item)
        mime = _IMAGE_TYPES.get(path.suffix.lower())
        if mime is None:
            raise ValueError(f"{where} must be an image file ({', '.join(_IMAGE_TYPES)}), got "
                             f"{str(path)!r}")
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image file {str(path)!r} does not exist")
        return _image_html(path.read_bytes(), mime, path.name)
    if hasattr(item, "savefig") and hasattr(item, "canvas"):  # a matplotlib Figure
        buffer = io.BytesIO()
        item.savefig(buffer, format="png", dpi=120)
        label = item.get_suptitle() if hasattr(item, "get_suptitle") else ""
        return _image_html(buffer.getvalue(), "image/png", label or "figure")
    if isinstance(item, Sequence) and item and all(isinstance(r, Mapping) for r in item):
        return _table_html(item)
    if isinstance(item, Sequence) and len(item) == 0:
        return '<p class="empty">(empty table)</p>'
    raise TypeError(
        f"{where} must be a str (paragraph), a pathlib.Path (image), a matplotlib Figure or "
        f"a list of dicts (table), got {describe(item)}"
    )


def write_html_report(path: str | os.PathLike, title: str,
                      sections: Sequence[tuple[str, Sequence]]) -> Path:
    """Write a self-contained HTML report, atomically.

    Each section is ``(heading, items)``; each item is

    * a ``str``: a paragraph (always text, never read as a file name);
    * a :class:`pathlib.Path` (any ``os.PathLike``) to a PNG/JPEG/GIF/SVG file: embedded as a
      base64 ``data:`` URI, captioned with the file name;
    * a matplotlib ``Figure``: rendered to PNG and embedded the same way;
    * a list of dicts: a table whose columns are the keys in order of first appearance
      (missing cells stay empty, floats are shown with 4 significant digits).

    All text is HTML-escaped. The page loads no external resource.

    Args:
        path: the ``.html`` file to write (parent folders are created).
        title: page title and top heading.
        sections: ``[(heading, [item, ...]), ...]``.

    Returns:
        The path written.

    Example::

        >>> write_html_report("report.html", "Run 3", [("Result", ["MSE 0.021", [{"a": 1}]])])
        PosixPath('report.html')
    """
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {describe(title)}")
    if isinstance(sections, str | bytes) or not isinstance(sections, Sequence):
        raise TypeError(f"sections must be a list of (heading, items), got {describe(sections)}")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for number, section in enumerate(sections):
        if not (isinstance(section, tuple | list) and len(section) == 2):
            raise TypeError(f"sections[{number}] must be a (heading, items) pair, got "
                            f"{describe(section)}")
        heading, items = section
        if isinstance(items, str | bytes | os.PathLike) or not isinstance(items, Sequence):
            raise TypeError(f"sections[{number}] items must be a list, got {describe(items)}")
        parts.append(f"<section>\n<h2>{html.escape(str(heading))}</h2>")
        for position, item in enumerate(items):
            parts.append(_item_html(item, f"sections[{number}] item {position}"))
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    document = "\n".join(parts).encode("utf-8")
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(document))
    return path
