"""Names the library's docstring examples use without importing them (as in the docs)."""

import pytest
import torch
from torch_geometric.data import Data


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(torch=torch, Data=Data)
