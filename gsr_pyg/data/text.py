r"""An English text corpus on every machine: the docstrings of the Python standard library.

A language model needs text, and no text may be downloaded at run time. Every Python
installation carries hundreds of thousands of characters of English prose in the docstrings
of its standard library. :func:`stdlib_docstrings` collects them (module, class, function and
method docstrings, through :func:`inspect.getdoc`) from a fixed list of pure-Python modules;
:func:`split_by_module` puts whole modules into the training, validation and test parts, so
that held-out text is about other topics than the training text; :class:`CharVocabulary` and
:func:`encode_chunks` turn text into padded character sequences for a causal language model.

The corpus depends on the Python version (docstrings change between releases): record
:func:`corpus_fingerprint` beside every result computed from it.

Example:
    >>> docs = stdlib_docstrings(["bisect"])
    >>> docs[0].module, docs[0].name
    ('bisect', 'bisect')
    >>> vocab = CharVocabulary()
    >>> vocab.decode(vocab.encode("Insert item x."))
    'Insert item x.'
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import string
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gsr_pyg._validation import check_int, describe

__all__ = [
    "STDLIB_MODULES",
    "CharVocabulary",
    "Docstring",
    "corpus_fingerprint",
    "encode_chunks",
    "sentences",
    "split_by_module",
    "stdlib_docstrings",
    "text_chunks",
]

#: Pure-Python standard-library modules present in Python 3.10 to 3.13 that import without
#: side effects (no GUI, no network) and document themselves in English.
STDLIB_MODULES = (
    "abc", "argparse", "ast", "base64", "bisect", "calendar", "cmd", "codecs", "collections",
    "colorsys", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "email.message", "enum", "filecmp", "fileinput", "fnmatch",
    "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib",
    "heapq", "hmac", "html.parser", "http.client", "imaplib", "inspect", "io", "ipaddress",
    "itertools", "json", "logging", "mailbox", "mimetypes", "numbers", "operator", "optparse",
    "os", "pathlib", "pickle", "pickletools", "pprint", "queue", "quopri", "random", "re",
    "reprlib", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "smtplib",
    "socket", "socketserver", "statistics", "string", "struct", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace", "traceback", "typing",
    "unittest.case", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref",
    "xml.dom.minidom", "zipfile", "plistlib",
)


@dataclass(frozen=True)
class Docstring:
    """One docstring: the module it comes from, the object's qualified name, the text."""

    module: str
    name: str
    text: str


def _public_members(module) -> list[tuple[str, object]]:
    """``(qualified name, object)`` of the module's public classes and functions defined in
    it, and of those classes' public methods, in definition order."""
    members = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            members.append((name, obj))
        elif inspect.isclass(obj):
            members.append((name, obj))
            members += [(f"{name}.{method}", value) for method, value in vars(obj).items()
                        if not method.startswith("_") and inspect.isfunction(value)]
    return members


def stdlib_docstrings(modules: Sequence[str] = STDLIB_MODULES) -> list[Docstring]:
    """The docstrings of ``modules``: each module's own, then its public classes, functions
    and methods', in definition order; empty ones and repeats (inherited docstrings) left
    out.

    Args:
        modules: importable module names (default: :data:`STDLIB_MODULES`). A module that
            does not import is refused: leaving it out would change the corpus silently.

    Returns:
        list of :class:`Docstring`.
    """
    if isinstance(modules, str) or not isinstance(modules, Sequence) or not modules:
        raise TypeError(f"modules must be a non-empty sequence of module names, got "
                        f"{describe(modules)}")
    seen, docs = set(), []
    for module_name in modules:
        if not isinstance(module_name, str):
            raise TypeError(f"modules must hold module names (str), got {describe(module_name)}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"module {module_name!r} in modules does not import here: "
                             f"{err}") from None
        with warnings.catch_warnings():  # reading typing's deprecated aliases warns
            warnings.simplefilter("ignore", DeprecationWarning)
            texts = [(name, inspect.getdoc(obj))
                     for name, obj in [(module_name, module), *_public_members(module)]]
        for name, text in texts:
            if text and text not in seen:
                seen.add(text)
                docs.append(Docstring(module_name, name, text))
    return docs


def corpus_fingerprint(docs: Sequence[Docstring]) -> str:
    """The first 16 hex digits of the SHA-256 of the corpus (names and texts in order):
    equal fingerprints, equal corpus."""
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(f"{doc.module}\0{doc.name}\0{doc.text}\0".encode())
    return digest.hexdigest()[:16]


def split_by_module(docs: Sequence[Docstring], num_parts: int = 10
                    ) -> tuple[list[Docstring], list[Docstring], list[Docstring]]:
    """``(train, validation, test)``: whole modules, so held-out text is on other topics.

    The modules, sorted by name, are dealt into ``num_parts`` parts in turn; part 0 is the
    test set, part ``num_parts // 2`` the validation set, the rest the training set.

    Example:
        >>> docs = [Docstring(m, m, "text") for m in "abcdefghij"]
        >>> [[d.module for d in part] for part in split_by_module(docs, num_parts=5)]
        [['b', 'd', 'e', 'g', 'i', 'j'], ['c', 'h'], ['a', 'f']]
    """
    num_parts = check_int(num_parts, "num_parts", minimum=3)
    modules = sorted({doc.module for doc in docs})
    if len(modules) < num_parts:
        raise ValueError(f"split_by_module needs at least num_parts={num_parts} modules to "
                         f"give every part one, got {len(modules)}")
    part = {module: index % num_parts for index, module in enumerate(modules)}
    test = [d for d in docs if part[d.module] == 0]
    validation = [d for d in docs if part[d.module] == num_parts // 2]
    train = [d for d in docs if part[d.module] not in (0, num_parts // 2)]
    return train, validation, test


class CharVocabulary:
    """Characters to token ids: 0 is padding, 1 stands for every character outside the
    vocabulary, then tab, newline and the 95 printable ASCII characters (space included).

    Example:
        >>> vocab = CharVocabulary()
        >>> len(vocab), vocab.encode("a\u00e9").tolist(), vocab.decode([2, 0])
        (99, [14, 1], '\\t')
    """

    pad_id = 0
    unknown_id = 1

    def __init__(self) -> None:
        chars = "\t\n" + "".join(c for c in string.printable if c.isprintable())
        self.chars = chars
        self._ids = {c: i + 2 for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.chars) + 2

    def encode(self, text: str) -> torch.Tensor:
        """Token ids ``[len(text)]`` (int64)."""
        return torch.tensor([self._ids.get(c, self.unknown_id) for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        """The text of ``ids``; padding is dropped and unknown characters read ``?``."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return "".join("?" if i == self.unknown_id else self.chars[i - 2]
                       for i in ids if i != self.pad_id)


def text_chunks(docs: Sequence[Docstring], length: int) -> list[str]:
    """The docstrings cut into pieces of at most ``length`` characters: paragraph by
    paragraph (blank lines), paragraphs packed together while they fit, a longer paragraph
    cut at the last space that fits (at ``length`` when there is none). Pieces of one
    character (nothing to predict from) are left out.

    Example:
        >>> text_chunks([Docstring("m", "f", "One two.\\n\\nThree four five six.")], 12)
        ['One two.', 'Three four', 'five six.']
    """
    length = check_int(length, "length", minimum=2)
    chunks = []
    for doc in docs:
        current = ""
        for paragraph in (p.strip() for p in doc.text.split("\n\n")):
            if not paragraph:
                continue
            joined = f"{current}\n\n{paragraph}" if current else paragraph
            if len(joined) <= length:
                current = joined
                continue
            if current:
                chunks.append(current)
            while len(paragraph) > length:
                cut = paragraph.rfind(" ", 1, length + 1)
                cut = length if cut <= 0 else cut
                chunks.append(paragraph[:cut].rstrip())
                paragraph = paragraph[cut:].lstrip()
            current = paragraph
        if current:
            chunks.append(current)
    return [chunk for chunk in chunks if len(chunk) >= 2]


def encode_chunks(chunks: Sequence[str], vocab: CharVocabulary, length: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-character training pairs ``(inputs, targets)``, both ``[len(chunks), length]``.

    Chunk ``c`` (at most ``length + 1`` characters, as :func:`text_chunks` with
    ``length + 1`` gives) becomes inputs ``c[:-1]`` and targets ``c[1:]``, right-padded:
    inputs with ``vocab.pad_id``, targets with ``-100`` (the ``ignore_index`` of
    :func:`torch.nn.functional.cross_entropy`). ``inputs != vocab.pad_id`` is the padding
    mask of the real positions.

    Example:
        >>> x, y = encode_chunks(["abc"], CharVocabulary(), 4)
        >>> x.tolist(), y.tolist()
        ([[14, 15, 0, 0]], [[15, 16, -100, -100]])
    """
    length = check_int(length, "length", minimum=1)
    inputs = torch.full((len(chunks), length), vocab.pad_id, dtype=torch.long)
    targets = torch.full((len(chunks), length), -100, dtype=torch.long)
    for row, chunk in enumerate(chunks):
        if not 2 <= len(chunk) <= length + 1:
            raise ValueError(f"chunk {row} has {len(chunk)} characters; encode_chunks takes "
                             f"2 to length + 1 = {length + 1} (cut the text with "
                             f"text_chunks(docs, {length + 1}))")
        ids = vocab.encode(chunk)
        inputs[row, :len(chunk) - 1] = ids[:-1]
        targets[row, :len(chunk) - 1] = ids[1:]
    return inputs, targets


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def sentences(docs: Sequence[Docstring], min_chars: int = 20,
              max_chars: int = 300) -> list[tuple[str, str]]:
    """English sentences of the docstrings, as ``(module, sentence)`` pairs, in order.

    Each paragraph (blank-line separated) that reads as prose is joined into one line and cut
    after ``.``, ``!`` or ``?`` followed by a capital letter. Paragraphs that look like code,
    doctests, tables or lists (a line starting with ``>>>``, ``...``, ``-``, ``*``, ``|``, a
    digit and ``.``, or indented) are left out, as are sentences shorter than ``min_chars`` or
    longer than ``max_chars`` characters.

    Example:
        >>> sentences([Docstring("m", "f", "Return x. Then y follows.\\n\\n>>> f(1)")],
        ...           min_chars=5)
        [('m', 'Return x.'), ('m', 'Then y follows.')]
    """
    min_chars = check_int(min_chars, "min_chars", minimum=1)
    max_chars = check_int(max_chars, "max_chars", minimum=min_chars)
    found = []
    for doc in docs:
        for paragraph in doc.text.split("\n\n"):
            lines = paragraph.strip("\n").splitlines()
            if not lines or any(_not_prose(line) for line in lines):
                continue
            text = " ".join(line.strip() for line in lines)
            found += [(doc.module, sentence) for sentence in _SENTENCE_END.split(text)
                      if min_chars <= len(sentence) <= max_chars]
    return found


def _not_prose(line: str) -> bool:
    stripped = line.strip()
    return (line[:1].isspace() or stripped.startswith((">>>", "...", "-", "*", "|", "+"))
            or bool(re.match(r"\d+\.", stripped)))
