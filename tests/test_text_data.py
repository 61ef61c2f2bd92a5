"""The offline text corpus (docstrings of the standard library), its split, and its encoding."""

from __future__ import annotations

import bisect
import inspect

import pytest
import torch

from gsr_pyg.data.text import (
    STDLIB_MODULES,
    CharVocabulary,
    Docstring,
    corpus_fingerprint,
    encode_chunks,
    sentences,
    split_by_module,
    stdlib_docstrings,
    text_chunks,
)


def test_docstrings_of_a_module_its_functions_and_no_repeats():
    docs = stdlib_docstrings(["bisect", "heapq"])
    assert docs[0] == Docstring("bisect", "bisect", inspect.getdoc(bisect))
    names = [(d.module, d.name) for d in docs]
    assert ("heapq", "heapq") in names and ("heapq", "merge") in names
    assert len({d.text for d in docs}) == len(docs)  # repeats left out
    assert all(d.text.strip() for d in docs)  # no empty docstrings


def test_class_methods_are_taken_and_inherited_docstrings_only_once():
    docs = stdlib_docstrings(["fractions"])
    names = {d.name for d in docs}
    assert "Fraction" in names and "Fraction.limit_denominator" in names
    # the documented corpus is large enough to train a character model on
    all_docs = stdlib_docstrings()
    assert sum(len(d.text) for d in all_docs) > 300_000
    assert len({d.module for d in all_docs}) == len(STDLIB_MODULES)


def test_a_module_that_does_not_import_is_refused():
    with pytest.raises(ValueError, match="'no_such_module_xyz' in modules does not import"):
        stdlib_docstrings(["bisect", "no_such_module_xyz"])
    with pytest.raises(TypeError, match="non-empty sequence of module names"):
        stdlib_docstrings("bisect")


def test_fingerprint_changes_with_the_corpus():
    docs = stdlib_docstrings(["bisect"])
    assert corpus_fingerprint(docs) == corpus_fingerprint(list(docs))
    changed = [Docstring(docs[0].module, docs[0].name, docs[0].text + "!")] + docs[1:]
    assert corpus_fingerprint(changed) != corpus_fingerprint(docs)


def test_split_by_module_is_a_partition_of_whole_modules():
    docs = stdlib_docstrings()
    train, validation, test = split_by_module(docs)
    modules = [{d.module for d in part} for part in (train, validation, test)]
    assert not (modules[0] & modules[1]) and not (modules[0] & modules[2])
    assert not (modules[1] & modules[2])
    assert len(train) + len(validation) + len(test) == len(docs)
    assert len(modules[1]) >= 8 and len(modules[2]) >= 8
    with pytest.raises(ValueError, match="at least num_parts=10 modules"):
        split_by_module(docs[:3])


def test_text_chunks_keep_every_word_within_the_length():
    docs = stdlib_docstrings(["textwrap", "bisect"])
    chunks = text_chunks(docs, 65)
    assert all(2 <= len(c) <= 65 for c in chunks)
    # cut only at spaces or paragraph breaks: the words come out in order, none lost
    # (words longer than the chunk are the exception, cut where they must be)
    words = [w for d in docs for w in d.text.split()]
    assert [w for c in chunks for w in c.split()] == words
    assert text_chunks([Docstring("m", "f", "x" * 10)], 4) == ["xxxx", "xxxx", "xx"]


def test_vocabulary_round_trip_and_unknown_characters():
    vocab = CharVocabulary()
    text = "def f(x):\n\treturn x ** 2  # 100%"
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.encode("é€").tolist() == [vocab.unknown_id] * 2
    assert vocab.decode(vocab.encode("aé")) == "a?"
    assert len(set(vocab.encode(vocab.chars).tolist())) == len(vocab) - 2


def test_encode_chunks_pads_inputs_and_masks_targets():
    vocab = CharVocabulary()
    x, y = encode_chunks(["hello", "hi"], vocab, 6)
    assert vocab.decode(x[0]) == "hell" and vocab.decode(y[0][y[0] >= 0]) == "ello"
    assert x[1].tolist()[1:] == [vocab.pad_id] * 5 and y[1].tolist()[1:] == [-100] * 5
    assert torch.equal(x != vocab.pad_id, y != -100)
    with pytest.raises(ValueError, match="chunk 0 has 8 characters; encode_chunks takes 2 to"):
        encode_chunks(["abcdefgh"], vocab, 6)


def test_sentences_leave_out_code_and_lists_and_respect_the_lengths():
    doc = Docstring("m", "f", "First sentence here. Second one, e.g. this! Third?\n\n"
                              ">>> f(1)\n2\n\n- a list item\n\n    indented code\n\n"
                              "A short. A much longer closing sentence\nover two lines.")
    assert sentences([doc], min_chars=9) == [
        ("m", "First sentence here."), ("m", "Second one, e.g. this!"),
        ("m", "A much longer closing sentence over two lines.")]
    assert sentences([doc], min_chars=5, max_chars=21) == [
        ("m", "First sentence here."), ("m", "Third?"), ("m", "A short.")]
    train, _, test = split_by_module(stdlib_docstrings())
    assert len(sentences(train)) > 3000 and len(sentences(test)) > 300
