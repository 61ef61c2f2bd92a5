"""A small two-layer learned-graph run for the distributed tests.

    python tests/ddp_run.py RUN_DIR --batch-size B            # one process
    torchrun --nproc_per_node=2 tests/ddp_run.py RUN_DIR --batch-size B/2
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gsr_pyg.learn import CoactivationGraph
from gsr_pyg.regularizer import GraphSpectralRegularizer
from gsr_pyg.training import GSRTrainer, LearningSchedule, setup_distributed


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args(argv)
    rank, world, device = setup_distributed("cpu")
    torch.manual_seed(0)
    data = torch.randn(256, 5) @ torch.randn(5, 12)
    loader = DataLoader(TensorDataset(data), batch_size=args.batch_size, shuffle=False)
    model = nn.Sequential()
    model.add_module("enc", nn.Linear(12, 16))
    model.add_module("latent", nn.Tanh())
    model.add_module("mid", nn.Linear(16, 10))
    model.add_module("code", nn.Tanh())
    model.add_module("dec", nn.Linear(10, 12))
    reg = GraphSpectralRegularizer(model, {"latent": 16, "code": 10}, weight=1e-2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_fn(output, target):
        if args.sleep:
            time.sleep(args.sleep)
        return nn.functional.mse_loss(output, target)

    schedule = LearningSchedule(warmup_steps=6, refresh_every=4, max_learning_steps=24,
                                after_stop_steps=3, stop="never")
    learn = {"latent": CoactivationGraph(k=4),  # the reference: current (global) batch
             "code": CoactivationGraph.recommended(k=3)}  # statistics reduced over processes
    trainer = GSRTrainer(model, reg, opt, loss_fn, schedule=schedule, learn=learn,
                         run_dir=args.run_dir, checkpoint_every=5, log_every=2, seed=0,
                         device=device, verbose=False)
    trainer.fit(loader)
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
