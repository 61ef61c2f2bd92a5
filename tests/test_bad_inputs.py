"""Every bad input of the registry (tests/bad_input_cases.py) gets its registered outcome, and
docs/reliability.md shows each of them with the message users see."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bad_input_cases import CASES, SURFACES, run, verdict  # noqa: E402

DOC = HERE.parent / "docs" / "reliability.md"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, tmp_path, request):
    if case.skip is not None and (reason := case.skip()):
        pytest.skip(reason)
    if case.known_issue:
        request.applymarker(pytest.mark.xfail(reason=case.known_issue, strict=True))
    problem = verdict(case, run(case, tmp_path))
    assert problem is None, problem


def test_registry_is_well_formed():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    for case in CASES:
        assert case.surface in SURFACES, case.surface
        if case.error is None:
            assert case.check is not None and case.outcome, case.id
        else:
            re.compile(case.match)
            assert case.check is None and not case.outcome, case.id


# The inputs the reliability issue names, as (surface, words of the case's input or call).
REQUIRED = [
    ("regularizer", "5-node graph on a 4-feature layer"),
    ("regularizer", "one direction only"),
    ("regularizer", "negative edge weight"),
    ("regularizer", "NaN edge weight"),
    ("regularizer", "Inf edge weight"),
    ("regularizer", "self-loop"),
    ("regularizer", "unknown layer"),
    ("regularizer", "output is a tuple"),
    ("regularizer", "output is 1-D"),
    ("regularizer", "NaN activations"),
    ("regularizer", "Inf activations"),
    ("regularizer", "'rw'"),
    ("regularizer", "empty graph"),
    ("spectral", "empty graph"),
    ("graphs", "empty graph"),
    ("learn", "k = 0"),
    ("learn", "k = 6 for 6 neurons"),
    ("learn", "constant neuron"),
    ("learn", "one sample"),
    ("learn", "NaN activation"),
    ("pipeline", "read-only directory"),
    ("pipeline", "below a regular file"),
    ("pipeline", "checkpoint.pt cut to half"),
    ("pipeline", "empty checkpoint.pt"),
    ("pipeline", "resume with another learner"),
    ("data", "empty file"),
    ("data", "magic"),
    ("data", "payload calls exec"),
    ("data", "no cells"),
    ("data", "no genes"),
    ("scripts", "unknown key"),
    ("scripts", "a string for an integer"),
    ("scripts", "--out below a regular file"),
]


@pytest.mark.parametrize("surface, words", REQUIRED)
def test_the_issue_inputs_are_registered(surface, words):
    assert any(case.surface == surface and words in f"{case.call} {case.input}"
               for case in CASES), (surface, words)


def _doc_rows() -> dict[str, list[str]]:
    """Case id -> the cells of its row in docs/reliability.md."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        found = re.match(r'\| <a id="([^"]+)"></a>', line)
        if found:
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[found.group(1)] = cells
    return rows


def test_reliability_doc_lists_every_case_with_its_message():
    rows = _doc_rows()
    assert set(rows) == {case.id for case in CASES}, (
        "docs/reliability.md is out of date: run tools/write_reliability_doc.py")
    for case in CASES:
        cells = rows[case.id]
        message = cells[-1].strip("`").strip().replace(" ⏎ ", "\n").replace("\\|", "|")
        if case.error is not None and not case.known_issue and "skipped" not in cells[2]:
            assert cells[2].startswith(f"`{case.error.__name__}`"), (case.id, cells[2])
            # paths of the run that wrote the doc are shown as <tmp>
            assert re.search(case.match, message.replace("<tmp>", "/tmp/x")), (case.id, message)
