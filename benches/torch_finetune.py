#!/usr/bin/env python3
"""PyTorch CPU peer of `headstart finetune`'s speed benchmark: trains VGG-16's block5 (three 3x3
conv 512 + ReLU, 2x2 max pool) and the seed head (Flatten -> Dense 256 relu -> Dropout 0.5 -> Dense 1)
on the cached block4_pool outputs of a headstart finetune run (`<out>.inputs.h5`, split `train`),
with RMSprop at the same rate and batch size. Weights are random (as the VGG-16-shaped base is).

Usage: torch_finetune.py INPUTS.h5 [--epochs 1] [--batch-size 20] [--lr 1e-5] [--threads N]
Prints one JSON line: seconds per epoch, rows, final training loss.
"""
import argparse, json, time

import h5py
import numpy as np
import torch
from torch import nn

ap = argparse.ArgumentParser()
ap.add_argument("inputs")
ap.add_argument("--epochs", type=int, default=1)
ap.add_argument("--batch-size", type=int, default=20)
ap.add_argument("--lr", type=float, default=1e-5)
ap.add_argument("--threads", type=int, default=0)
a = ap.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
torch.manual_seed(42)
with h5py.File(a.inputs, "r") as f:
    x = torch.from_numpy(f["train/features"][()].astype(np.float32))
    y = torch.from_numpy(f["train/labels"][()].astype(np.float32))
c = x.shape[1]
block = nn.Sequential(
    nn.Conv2d(c, 512, 3, padding=1), nn.ReLU(),
    nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(),
    nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(),
    nn.MaxPool2d(2),
)
with torch.no_grad():
    feat = block(x[:1]).numel()
model = nn.Sequential(block, nn.Flatten(), nn.Linear(feat, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 1))
# Keras RMSprop: rho 0.9, eps 1e-7 (PyTorch's alpha is Keras' rho).
opt = torch.optim.RMSprop(model.parameters(), lr=a.lr, alpha=0.9, eps=1e-7)
loss_fn = nn.BCEWithLogitsLoss()
times, last = [], None
for epoch in range(a.epochs):
    t = time.perf_counter()
    perm = torch.randperm(len(x))
    total = 0.0
    for i in range(0, len(x), a.batch_size):
        idx = perm[i:i + a.batch_size]
        opt.zero_grad()
        loss = loss_fn(model(x[idx]).squeeze(1), y[idx])
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    times.append(time.perf_counter() - t)
    last = total / len(x)
print(json.dumps({"seconds_per_epoch": sum(times) / len(times), "rows": len(x), "loss": last,
                  "threads": torch.get_num_threads(), "torch": torch.__version__}))
