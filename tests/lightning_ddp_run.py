"""One Lightning run with GSRCallback, in one process or under torchrun (DDP on CPU processes):
``python tests/lightning_ddp_run.py OUT [--devices 2] [--batch-size 8] [--resume CKPT]``.
Rank 0 writes ``OUT/result.pt``: the final parameters and the learned graphs."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from test_integrations_lightning import AutoEncoder, callback_for, data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--resume", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = AutoEncoder()
    callback = callback_for(module, smoothness_permutations=0)
    trainer = pl.Trainer(
        max_epochs=100, accelerator="cpu", devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto", use_distributed_sampler=False,
        logger=pl.loggers.CSVLogger(args.out, name="logs"),
        callbacks=[callback, pl.callbacks.ModelCheckpoint(
            dirpath=args.out / "checkpoints", every_n_epochs=1, save_top_k=-1)],
        enable_progress_bar=False, enable_model_summary=False)
    dataset = TensorDataset(data())
    # each process its share of every global batch, in order (Lightning's own sampler
    # shuffles under DDP): the global batches of one process with devices * batch_size
    sampler = (DistributedSampler(dataset, num_replicas=args.devices,
                                  rank=int(os.environ["RANK"]), shuffle=False)
               if args.devices > 1 else None)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader, ckpt_path=args.resume)
    if trainer.is_global_zero:
        torch.save({"params": module.state_dict(), "steps": callback.progress.step,
                    "snapshots": [(step, graph.edge_index) for step, graph
                                  in callback.history.snapshots]}, args.out / "result.pt")


if __name__ == "__main__":
    main()
