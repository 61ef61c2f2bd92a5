"""Docstring examples run as tests: the names they use without importing them (as in the
docs), and a scratch folder as the working directory for the files they write."""

import pytest
import torch
from _pytest.doctest import DoctestItem
from torch_geometric.data import Data


@pytest.fixture(autouse=True)
def _doctest_setting(request, doctest_namespace):
    if isinstance(request.node, DoctestItem):
        doctest_namespace.update(torch=torch, Data=Data)
        request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("tmp_path"))
