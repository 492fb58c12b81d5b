"""A python evaluator: train a small MLP on scikit-learn's handwritten digits, score it.

The architecture chooses the MLP's depth, width, activation and learning rate. The reward is
the accuracy on a seeded validation split of the training data (the test split is never
used). The digits ship with scikit-learn: nothing is downloaded. The data is loaded once per
worker process and stays resident between children.
"""

from __future__ import annotations

import functools
import time

import torch
from torch import nn

EPOCHS = 40          # full passes over the 1,437 training images
BATCH_SIZE = 128     # images per step
VALIDATION = 360     # images held out of the training set for the reward


@functools.lru_cache(maxsize=1)
def load_digits_split(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, train = order[:VALIDATION], order[VALIDATION:]
    return x[train], y[train], x[val], y[val]


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def build_mlp(depth: int, width: int, activation: str) -> nn.Module:
    layers, features = [], 64
    for _ in range(depth):
        layers += [nn.Linear(features, width), ACTIVATIONS[activation]()]
        features = width
    layers.append(nn.Linear(features, 10))
    return nn.Sequential(*layers)


def evaluate(arch: dict) -> dict:
    """Train the MLP that ``arch`` describes; reward = validation accuracy (a fraction)."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    x_train, y_train, x_val, y_val = load_digits_split()
    torch.manual_seed(0)
    model = build_mlp(int(arch["depth"]), int(arch["width"]), str(arch["activation"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(arch["learning_rate"]))
    loss = torch.zeros(())
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(x_train)).split(BATCH_SIZE):
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
    params = sum(p.numel() for p in model.parameters())
    return {"reward": accuracy,
            "metrics": {"val_accuracy": accuracy, "train_loss": loss.item(), "params": params,
                        "epochs": EPOCHS, "train_s": time.perf_counter() - start}}
