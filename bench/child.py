"""Child training speed: images/s of nasps's image trainer against a plain PyTorch loop.

Both train the same conv child (built by nasps's builder from the same seed) on the same digits
training split with the same SGD settings, batch size, epochs and augmentation (random crops of
the padded image). The plain loop is what one writes by hand: a ``TensorDataset`` with a
per-image torchvision transform, a shuffling ``DataLoader`` and the optimizer step. The ratio
is nasps / plain; above 1 nasps is faster.

    python bench/child.py [--epochs 3] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nasps.children import build_conv_net  # noqa: E402
from nasps.config import DigitsDatasetConfig  # noqa: E402
from nasps.data.images import load_image_splits  # noqa: E402
from nasps.training.image import TrainSettings, train_classifier  # noqa: E402

BATCH = 64
LR = 0.05


def child_value(depth: int) -> dict:
    """A chain of 3x3 convs with 32 filters and a skip from every second layer to the last."""
    layers = []
    for i in range(depth):
        inputs = [i - 1] if i else []
        if i == depth - 1:
            inputs = sorted(set(inputs + list(range(0, depth - 1, 2))))
        layers.append({"type": "conv", "filter_height": 3, "filter_width": 3, "num_filters": 32,
                       "stride": 1, "inputs": inputs})
    return {"layers": layers, "hyperparameters": {}}


class Augmented(Dataset):
    """Per-image random crop of the zero-padded image, as a torchvision transform would do."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, padding: int):
        from torchvision.transforms import v2
        self.x, self.y = x, y
        self.crop = v2.RandomCrop(x.shape[-1], padding=padding)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.crop(self.x[i]), self.y[i]


def plain_loop(model, data, epochs: int, padding: int) -> float:
    """Images per second of the hand-written loop (training only)."""
    loader = DataLoader(Augmented(data.train_x, data.train_y, padding), batch_size=BATCH, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=1e-4)
    total = epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return epochs * len(data.train_x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a worker of 1 CPU uses 1)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each; the best counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_image_splits(DigitsDatasetConfig(), None, seed=0)
    settings = TrainSettings(epochs=args.epochs, batch_size=BATCH, learning_rate=LR, momentum=0.9,
                             nesterov=True, weight_decay=1e-4, schedule="cosine", crop_padding=1, flip=False)
    print(f"child training on digits ({len(data.train_x)} training images, 8x8), batch {BATCH}, "
          f"{args.epochs} epochs, {args.threads} thread(s), CPU; best of {args.repeats}; ratio = nasps / plain")
    print(f"{'layers':>6} {'params':>8}  {'nasps img/s':>11} {'plain img/s':>11} {'ratio':>5}")
    for depth in (3, 6, 12):
        value = child_value(depth)
        ours, plain = [], []
        for _ in range(args.repeats):
            torch.manual_seed(0)
            model = build_conv_net(value, data.channels, data.num_classes)
            ours.append(train_classifier(model, data, settings, torch.device("cpu"), seed=0).images_per_s)
            torch.manual_seed(0)
            model = build_conv_net(value, data.channels, data.num_classes)
            plain.append(plain_loop(model, data, args.epochs, padding=1))
        params = sum(p.numel() for p in model.parameters())
        print(f"{depth:>6} {params:>8}  {max(ours):>11.0f} {max(plain):>11.0f} {max(ours) / max(plain):>5.2f}",
              flush=True)


if __name__ == "__main__":
    main()
