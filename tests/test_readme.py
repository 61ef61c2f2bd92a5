"""The README's Python examples run as written and give the outputs the README states."""

import re
import runpy
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"
TEXT = README.read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)


def stated(pattern: str, block: str) -> float:
    """A number the README states in an example's comments."""
    match = re.search(pattern, block)
    assert match, f"the README example no longer states {pattern!r}"
    return float(match.group(1).replace(",", ""))


def run_block(index: int, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)  # examples write files and run directories
    script = tmp_path / f"readme_example_{index}.py"
    script.write_text(BLOCKS[index])
    return runpy.run_path(str(script), run_name="__readme__")


def test_every_readme_example_has_its_test():
    assert len(BLOCKS) == 3  # a new example gets a test below that checks what it states


def test_quick_start_gives_what_it_states(tmp_path, monkeypatch):
    block = BLOCKS[0]
    names = run_block(0, tmp_path, monkeypatch)
    grid = names["grid"]
    assert grid.num_nodes == stated(r"Data: (\d+) nodes", block)
    assert grid.num_edges // 2 == stated(r"(\d+) undirected edges", block)
    assert tuple(names["hidden"].shape) == (
        stated(r"\[([\d,]+), \d+\]", block), stated(r"\[[\d,]+, (\d+)\]", block))
    assert float(names["accuracy"]) > stated(r"accuracy above ([\d.]+)", block)
    assert float(names["ratio"]) < stated(r"ratio below ([\d.]+)", block)
    import gsr_pyg
    back = gsr_pyg.graphs.read_graphml(tmp_path / "grid.graphml")
    assert back.num_edges == grid.num_edges and back.pos.tolist() == grid.pos.tolist()


def test_learned_graph_example_gives_what_it_states(tmp_path, monkeypatch):
    block = BLOCKS[1]
    names = run_block(1, tmp_path, monkeypatch)
    history = names["history"]
    assert len(history.snapshots) == stated(r"(\d+) snapshots", block)
    step, graph = names["step"], names["graph"]
    assert step == history.snapshot_steps()[-1] and graph.num_nodes == 20
    assert names["G"].number_of_nodes() == 20
    assert names["G"].number_of_edges() == graph.num_edges // 2



def test_transformer_example_gives_what_it_states(tmp_path, monkeypatch):
    block = BLOCKS[2]
    names = run_block(2, tmp_path, monkeypatch)
    mask, hidden, tokens = names["mask"], names["hidden"], names["tokens"]
    # the sheet has 64 units; the rows are the real tokens of the mask, padding left out
    assert names["sheet"].num_nodes == stated(r"the (\d+) MLP units", block) == 64
    assert tuple(tokens.shape[:2]) == tuple(mask.shape)
    assert not bool(mask.all()) and bool(mask[:, 0].all())  # some padding, no empty sequence
    assert tuple(hidden.shape) == (int(mask.sum()), 64)
    assert names["reg"].node_dim("activation") == -1
    assert float(names["ratio"]) < stated(r"ratio below ([\d.]+)", block)

    # "about 1.0 at weight 0": the same example without the penalty
    weight = re.search(r"weight=([\d.]+)", block).group(0)
    unregularized = block.replace(weight, "weight=0.0")
    (tmp_path / "weight0.py").write_text(unregularized)
    ratio0 = runpy.run_path(str(tmp_path / "weight0.py"), run_name="__readme__")["ratio"]
    assert abs(float(ratio0) - stated(r"about ([\d.]+) at weight 0", block)) < 0.15
