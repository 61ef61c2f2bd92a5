"""The Hugging Face Trainer callback on a tiny random BERT: the penalty over the real tokens
(a hand computation), lowered by training, learned graphs, and the state in checkpoints."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from gsr_pyg import GraphSpectralRegularizer, graphs
from gsr_pyg.hookable import expose_activations
from gsr_pyg.learn import CoactivationGraph
from gsr_pyg.spectral import laplacian
from gsr_pyg.training import LearningSchedule

sys.path.insert(0, str(Path(__file__).parent))
from test_hookable import tiny_hf  # noqa: E402

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from gsr_pyg.integrations.huggingface import (  # noqa: E402
    STATE_FILE,
    GSRCallback,
    RegularizedTrainer,
)

UNITS = "bert.encoder.layer.1.intermediate.intermediate_act_fn"  # 36 MLP units: a 6x6 sheet
SEQ = 8


class Classifier(nn.Module):
    """The tiny random BERT with a linear head on the first token; returns the loss."""

    def __init__(self):
        super().__init__()
        self.bert = tiny_hf("bert").train()
        expose_activations(self.bert)  # the MLP activation becomes a hookable module
        self.head = nn.Linear(16, 2)

    def forward(self, input_ids, attention_mask, labels):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return {"loss": nn.functional.cross_entropy(self.head(hidden[:, 0]), labels)}


def dataset(n: int = 64) -> list[dict]:
    """Sequences of 3 to 8 real tokens, padded to 8 (id 0, mask 0)."""
    g = torch.Generator().manual_seed(1)
    items = []
    for _ in range(n):
        length = int(torch.randint(3, SEQ + 1, (1,), generator=g))
        ids = torch.randint(1, 50, (SEQ,), generator=g)
        mask = (torch.arange(SEQ) < length).long()
        items.append({"input_ids": ids * mask, "attention_mask": mask,
                      "labels": torch.tensor(int(ids[0]) % 2)})
    return items


def arguments(out, **options) -> transformers.TrainingArguments:
    settings = dict(output_dir=str(out), per_device_train_batch_size=8, learning_rate=3e-3,
                    logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                    disable_tqdm=True, seed=0, dataloader_num_workers=0)
    return transformers.TrainingArguments(**{**settings, **options})


def train(model, callback, out, resume=None, **options):
    trainer = RegularizedTrainer(model=model, args=arguments(out, **options),
                                 train_dataset=dataset(), callbacks=[callback])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_penalty_skips_padding_and_goes_down(tmp_path):
    torch.manual_seed(0)
    model = Classifier()
    sheet = graphs.grid(6, 6)
    reg = GraphSpectralRegularizer(model, {UNITS: sheet}, node_dim=-1, weight=0.5)
    seen = []  # every training forward's MLP units and mask
    model.get_submodule(UNITS).register_forward_hook(
        lambda module, args, out: seen.append(out.detach().clone()))
    masks = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: masks.append(kwargs["attention_mask"].clone()),
        with_kwargs=True)
    callback = GSRCallback(reg, smoothness_permutations=0)
    trainer = train(model, callback, tmp_path, max_steps=40)
    assert callback.progress.step == trainer.state.global_step == 40
    rows = callback.history.metrics
    assert [row["step"] for row in rows] == list(range(40))  # logging_steps=1: every step

    # the penalty of a step: weight * mean over the REAL tokens of a^T L a (hand computation)
    L = laplacian(sheet, dense=True)
    for step in (0, 17, 39):
        units, mask = seen[step], masks[step].bool()
        assert not bool(mask.all())  # the batch has padding
        real = units[mask]
        by_hand = 0.5 * torch.einsum("sn,nm,sm->s", real, L, real).mean()
        assert rows[step][UNITS]["penalty"] == pytest.approx(float(by_hand), rel=1e-5)
        everything = units.reshape(-1, 36)
        with_padding = 0.5 * torch.einsum("sn,nm,sm->s", everything, L, everything).mean()
        assert abs(float(with_padding) - float(by_hand)) > 1e-3 * float(by_hand)

    # the Trainer trained on task loss + penalty, and logged both
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 40
    for entry, row in zip(logs, rows):
        assert entry["gsr/bert.encoder.layer.1.intermediate.intermediate_act_fn/penalty"] == \
            pytest.approx(row[UNITS]["penalty"])
        assert entry["loss"] == pytest.approx(row["task_loss"] + row[UNITS]["penalty"],
                                              rel=1e-4)
    first = sum(row[UNITS]["penalty"] for row in rows[:5]) / 5
    last = sum(row[UNITS]["penalty"] for row in rows[-5:]) / 5
    assert last < 0.5 * first  # training lowered the penalty


def test_learned_graph_snapshots_and_resume_from_a_checkpoint(tmp_path):
    schedule = LearningSchedule(warmup_steps=4, refresh_every=4, max_learning_steps=8,
                                stop="never")

    def run(out, resume=None, **options):
        torch.manual_seed(0)
        model = Classifier()
        reg = GraphSpectralRegularizer(model, {UNITS: 36}, node_dim=-1, weight=0.5)
        callback = GSRCallback(reg, learn={UNITS: CoactivationGraph(k=4)}, schedule=schedule,
                               smoothness_permutations=0)
        trainer = train(model, callback, out, resume=resume, max_steps=100, **options)
        return trainer, callback, model

    trainer, callback, model = run(tmp_path / "whole")
    # the schedule ends the run: 4 warm-up and 8 learning steps, graphs at steps 4 and 8
    assert trainer.state.global_step == callback.progress.step == 12
    assert callback.history.snapshot_steps(UNITS) == [4, 8]
    folder = tmp_path / "whole" / "snapshots" / UNITS
    assert sorted(p.name for p in folder.glob("*.pt")) == ["0000_step4.pt", "0001_step8.pt"]
    assert callback.reg.graph(UNITS).num_edges > 0

    # a checkpoint at step 6 holds the callback's state; resuming from it learns the same
    # graph at step 8 as the uninterrupted run and ends with its parameters
    _, first, _ = run(tmp_path / "cut", save_strategy="steps", save_steps=6)
    assert (tmp_path / "cut" / "checkpoint-6" / STATE_FILE).exists()
    _, resumed, resumed_model = run(tmp_path / "cut",
                                    resume=str(tmp_path / "cut" / "checkpoint-6"))
    assert resumed.progress.step == 12
    assert resumed.history.snapshot_steps(UNITS) == [4, 8]
    got, want = resumed.history.snapshots[-1][1], callback.history.snapshots[-1][1]
    assert torch.equal(got.edge_index, want.edge_index)
    assert torch.equal(resumed.reg.graph(UNITS).edge_index, callback.reg.graph(UNITS).edge_index)
    for name, value in resumed_model.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[name], rtol=1e-5, atol=1e-6)


def test_refusals(tmp_path):
    model = Classifier()
    reg = GraphSpectralRegularizer(model, {UNITS: 36}, node_dim=-1, weight=0.5)
    with pytest.raises(ValueError, match="after_stop_steps=0"):
        GSRCallback(reg, learn={UNITS: CoactivationGraph(k=4)},
                    schedule=LearningSchedule(after_stop_steps=0))
    with pytest.raises(TypeError, match="mask_key must be the name of an input"):
        GSRCallback(reg, mask_key=3)
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be 1, got 2"):
        train(model, GSRCallback(reg), tmp_path, max_steps=2, gradient_accumulation_steps=2)
    # a plain Trainer never adds the penalty: refused at the first step, not ignored
    plain = transformers.Trainer(model=model, args=arguments(tmp_path, max_steps=1),
                                 train_dataset=dataset(), callbacks=[GSRCallback(reg)])
    with pytest.raises(RuntimeError, match="the Trainer must be a GSRLossMixin"):
        plain.train()
    with pytest.raises(ValueError, match="exactly one GSRCallback"):
        RegularizedTrainer(model=model, args=arguments(tmp_path, max_steps=1),
                           train_dataset=dataset()).train()
