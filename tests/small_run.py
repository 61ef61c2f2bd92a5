"""A small learned-graph run used by the resume tests (also run as a subprocess).

    python tests/small_run.py RUN_DIR [--sleep SECONDS]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gsr_pyg.learn import CoactivationGraph
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.training import GSRTrainer, LearningSchedule


def make_trainer(run_dir, sleep: float = 0.0, verbose: bool = False):
    torch.manual_seed(0)
    data = torch.randn(96, 6) @ torch.randn(6, 12)
    loader = DataLoader(TensorDataset(data), batch_size=16, shuffle=True)
    model = nn.Sequential()
    model.add_module("enc", nn.Linear(12, 16))
    model.add_module("latent", nn.Tanh())
    model.add_module("drop", nn.Dropout(0.2))
    model.add_module("dec", nn.Linear(16, 12))
    reg = GraphSpectralRegularizer(model, {"latent": 16}, weight=1e-2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_fn(output, target):
        if sleep:  # slowed down for kill tests, which read these lines to time the kill
            time.sleep(sleep)
            print("step", flush=True)
        return nn.functional.mse_loss(output, target)

    schedule = LearningSchedule(warmup_steps=10, refresh_every=5, max_learning_steps=40,
                                after_stop_steps=5, stop="never")
    learners = {"latent": CoactivationGraph(k=3, features="stats", metric="correlation")}
    trainer = GSRTrainer(model, reg, opt, loss_fn, schedule=schedule, learn=learners,
                         run_dir=run_dir, checkpoint_every=7, log_every=3, seed=0,
                         verbose=verbose)
    return trainer, loader


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    trainer, loader = make_trainer(args.run_dir, args.sleep)
    trainer.fit(loader)
