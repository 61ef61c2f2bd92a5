"""Nothing untrusted is executed, and runs write only where they are told.

The source is read as Python syntax trees (not as text, so comments and docstrings do not
count): no ``eval``/``exec``, every ``torch.load`` has ``weights_only=True``, pickles are read
only by the restricted unpickler of ``gsr_pyg/data/mnist.py``, and no module imports a
serialisation library that can run code. Covered elsewhere, not repeated here: a checkpoint
carrying a code payload is refused (``tests/test_faults.py``), ``RestrictedUnpickler`` refuses
``os.system`` (``tests/test_mnist_data.py``) and ``load_mnist`` refuses a pickle calling
``exec`` (``tests/bad_input_cases.py``).
"""

from __future__ import annotations

import ast
import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gsr_pyg.learn import CoactivationGraph
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.training import GSRTrainer, LearningSchedule, load_snapshot

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("gsr_pyg", "pipelines", "bench", "tools")
UNPICKLER_MODULE = Path("gsr_pyg/data/mnist.py")
# serialisation libraries that can run code while loading
UNSAFE_MODULES = {"yaml", "marshal", "shelve", "dill", "cloudpickle", "joblib", "jsonpickle"}
PICKLE_READERS = {"load", "loads", "Unpickler"}


def _sources() -> list[Path]:
    files = [p for folder in SCANNED for p in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 20  # the scan sees the code base
    return files


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for an Attribute chain, ``eval`` for a Name, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword_is_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in call.keywords)


def violations(source: str, path: Path) -> list[str]:
    """Every unsafe construct in ``source`` as ``'path:line: what'``."""
    found = []
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> module.attribute it was imported as
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
                if alias.name.split(".")[0] in UNSAFE_MODULES:
                    found.append(f"{path}:{node.lineno}: imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            if node.module.split(".")[0] in UNSAFE_MODULES:
                found.append(f"{path}:{node.lineno}: imports from {node.module}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = _resolve(_dotted(base), aliases)
                if name == "pickle.Unpickler" and path != UNPICKLER_MODULE:
                    found.append(f"{path}:{node.lineno}: subclasses pickle.Unpickler")
        if not isinstance(node, ast.Call):
            continue
        name = _resolve(_dotted(node.func), aliases)
        where = f"{path}:{node.lineno}"
        if name in ("eval", "exec", "builtins.eval", "builtins.exec", "compile"):
            found.append(f"{where}: calls {name}")
        elif name == "torch.load" and not _keyword_is_true(node, "weights_only"):
            found.append(f"{where}: torch.load without weights_only=True")
        elif name in {f"pickle.{r}" for r in PICKLE_READERS} and path != UNPICKLER_MODULE:
            found.append(f"{where}: calls {name} outside the restricted unpickler module")
        elif name in ("numpy.load", "np.load") and any(
                k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant)
                                                 and k.value.value is False)
                for k in node.keywords):
            found.append(f"{where}: numpy.load with allow_pickle")
        elif name.endswith("read_pickle") or name in ("torch.jit.load", "os.system",
                                                       "os.popen"):
            found.append(f"{where}: calls {name}")
    return found


def _resolve(name: str, aliases: dict[str, str]) -> str:
    """``name`` with its first part replaced by what it was imported as."""
    if not name:
        return name
    head, _, rest = name.partition(".")
    full = aliases.get(head, head)
    full = {"np": "numpy"}.get(full, full)
    return f"{full}.{rest}" if rest else full


def test_the_scanner_finds_each_unsafe_construct():
    snippet = """
import pickle, yaml
import torch as T
from torch import load
from pickle import loads as read
eval("1")
exec("x = 1")
T.load("f.pt")
load("f.pt", weights_only=False)
T.load("f.pt", weights_only=True)
read(b"")
pickle.Unpickler(f).load()
import numpy as np
np.load("a.npy", allow_pickle=True)
class Mine(pickle.Unpickler):
    pass
"""
    found = violations(snippet, Path("pipelines/example.py"))
    expected = ["imports yaml", "calls eval", "calls exec", "torch.load without weights_only",
                "calls pickle.loads outside", "calls pickle.Unpickler outside",
                "numpy.load with allow_pickle", "subclasses pickle.Unpickler"]
    for what in expected:
        assert any(what in line for line in found), (what, found)
    assert sum("torch.load without" in line for line in found) == 2  # lines 8 and 9, not 10
    # the same pickle reading is allowed in the restricted unpickler's module
    assert not [f for f in violations("import pickle\nclass U(pickle.Unpickler):\n    pass\n",
                                      UNPICKLER_MODULE) if "Unpickler" in f]


def test_the_code_base_runs_nothing_it_reads():
    found, loads = [], 0
    for path in _sources():
        source = path.read_text(encoding="utf-8")
        found += violations(source, path.relative_to(ROOT))
        loads += sum(isinstance(node, ast.Call) and _dotted(node.func) == "torch.load"
                     for node in ast.walk(ast.parse(source)))
    assert not found, "\n".join(found)
    assert loads >= 1  # checkpoints are read somewhere, and the scan saw it


def test_the_unpickler_module_reads_pickles_only_through_the_restricted_unpickler():
    tree = ast.parse((ROOT / UNPICKLER_MODULE).read_text(encoding="utf-8"))
    unpicklers = [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                  and any(_dotted(b) == "pickle.Unpickler" for b in node.bases)]
    assert unpicklers == ["RestrictedUnpickler"]
    calls = {_dotted(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert not calls & {"pickle.load", "pickle.loads", "pickle.Unpickler"}


def test_a_snapshot_carrying_a_code_payload_is_refused(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "0000_step10.pt"
    torch.save({"edge_index": torch.zeros(2, 0, dtype=torch.long), "payload": Payload()}, path)
    with pytest.raises(ValueError, match=r"snapshot file '.*0000_step10\.pt' cannot be read"):
        load_snapshot(path)
    assert not marker.exists()


def test_a_run_writes_only_inside_its_run_dir(tmp_path, monkeypatch):
    """Layer names become folder names: a name with path separators stays inside."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    torch.manual_seed(0)
    layer = "/etc/latent"
    model = nn.Sequential(OrderedDict([("enc", nn.Linear(6, 8)), (layer, nn.Tanh()),
                                       ("dec", nn.Linear(8, 6))]))
    reg = GraphSpectralRegularizer(model, {layer: 8}, weight=1e-2)
    schedule = LearningSchedule(warmup_steps=2, refresh_every=2, max_learning_steps=4,
                                after_stop_steps=0, stop="never")
    run_dir = tmp_path / "runs" / "one"
    trainer = GSRTrainer(model, reg, torch.optim.SGD(model.parameters(), lr=1e-2),
                         nn.functional.mse_loss, schedule=schedule,
                         learn={layer: CoactivationGraph(k=3)}, run_dir=run_dir,
                         checkpoint_every=2, smoothness_permutations=0, verbose=False)
    loader = DataLoader(TensorDataset(torch.randn(16, 6)), batch_size=8)
    history = trainer.fit(loader)
    assert len(history) == 2  # snapshots at learning steps 0 and 2
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    outside = [p for p in written if run_dir not in p.parents]
    assert not outside, outside
    snapshots = sorted((run_dir / "snapshots").rglob("*.pt"))
    assert [p.parent.parent for p in snapshots] == [run_dir / "snapshots"] * 2
    assert not any(work.iterdir())
