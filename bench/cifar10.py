"""A 15-layer conv child on CIFAR-10: nasps's trainer against a plain PyTorch loop (for a GPU).

Both train the same 15-layer child (nasps's builder, same initial weights) for the same epochs
with the same SGD settings and augmentation (random 4-pixel-padded crops, flips). nasps keeps
the decoded images on the device and augments there, with channels_last and the precision
`auto` picks (bf16 on Ampere and later) on CUDA. The plain loop is what one writes by hand:
torchvision's ImageFolder over the JPEG files, a DataLoader with worker processes and
per-image transforms, fp32. Printed: images/s, wall time and test accuracy of each, the ratio
nasps / plain (target on a GPU: >= 3), and nasps's model-FLOPs utilisation: the child's
training FLOPs per image (3x its forward pass, counted by torch's FlopCounterMode) times
images/s, over the GPU's dense bf16 peak (--peak-tflops, 989 for an H100 or H200).

Data: ../shared/data/cifar10-jpeg.tar.gz (or --archive), extracted to a temporary folder.

    python bench/cifar10.py [--epochs 5] [--limit N] [--device auto] [--workers 8]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nasps.children import build_conv_net  # noqa: E402
from nasps.config import ImageFolderDatasetConfig  # noqa: E402
from nasps.data.images import ImageSplits, load_image_splits  # noqa: E402
from nasps.training.devices import pick_device, pick_precision  # noqa: E402
from nasps.training.image import TrainSettings, accuracy, train_classifier  # noqa: E402

BATCH, LR, MEAN, STD = 128, 0.1, (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)
H100_BF16_TFLOPS = 989.0  # dense, an H100's or H200's


def fifteen_layers() -> dict:
    """A 15-layer child like the paper's: 3x3 and 5x5 filters, 36 or 48 of them, and skip
    connections from every third layer to the ones after it."""
    layers = []
    for i in range(15):
        inputs = sorted({i - 1, *range(0, i - 1, 3)}) if i else []
        layers.append({"type": "conv", "filter_height": 3 if i % 2 else 5, "filter_width": 3 if i % 2 else 5,
                       "num_filters": 48 if i % 3 == 0 else 36, "stride": 1, "inputs": inputs})
    return {"layers": layers, "hyperparameters": {}}


def test_split(folder: Path, limit: int | None, device) -> ImageSplits:
    """The test images, normalised by their own channel statistics (CIFAR-10's train and test
    statistics agree closely); validation_size 1 leaves all but one of them in train_x."""
    splits = load_image_splits(ImageFolderDatasetConfig(root=str(folder), image_size=32), 1, seed=0)
    x, y = splits.train_x, splits.train_y
    if limit:
        x, y = x[:limit], y[:limit]
    return ImageSplits(x.to(device), y.to(device), x[:1].to(device), y[:1].to(device), 10, "test")


def forward_flops(model: torch.nn.Module, image: torch.Tensor) -> float:
    """FLOPs of one image's forward pass (a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image.float().contiguous())
    model.train()
    return float(counter.get_total_flops())


def plain_loop(value: dict, train_dir: Path, epochs: int, device, workers: int, limit: int | None):
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    data = datasets.ImageFolder(str(train_dir), transform=transform)
    if limit:
        data = Subset(data, torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:limit].tolist())
    loader = DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_conv_net(value, 3, 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=1e-4)
    total = epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return model, epochs * len(data) / wall, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="use only this many training images (a dry run)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the plain loop")
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_TFLOPS,
                        help="the GPU's dense bf16 peak, for the MFU")
    args = parser.parse_args()
    if not args.archive.is_file():
        print(f"bench/cifar10: no {args.archive} (the benchmark did not run)")
        return
    device = pick_device(args.device)
    if device.type == "cpu" and args.limit is None:
        print("bench/cifar10: no GPU here; five epochs of CIFAR-10 on a CPU take hours (the benchmark "
              "did not run; --limit 1000 --epochs 1 makes a CPU dry run)")
        return
    value = fifteen_layers()
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(args.archive) as archive:
            archive.extractall(tmp, filter="data")
        folder = next(p for p in Path(tmp).rglob("train") if p.is_dir()).parent
        t0 = time.perf_counter()
        splits = load_image_splits(ImageFolderDatasetConfig(root=str(folder / "train"), image_size=32),
                                   args.limit // 10 if args.limit else 5000, seed=0)
        if args.limit:
            splits = ImageSplits(splits.train_x[:args.limit], splits.train_y[:args.limit], splits.val_x,
                                 splits.val_y, 10, splits.name)
        splits = splits.to(device)
        load_s = time.perf_counter() - t0
        settings = TrainSettings(epochs=args.epochs, batch_size=BATCH, learning_rate=LR, momentum=0.9,
                                 nesterov=True, weight_decay=1e-4, schedule="cosine", crop_padding=4, flip=True)
        torch.manual_seed(0)
        model = build_conv_net(value, 3, 10)
        start = time.perf_counter()
        record = train_classifier(model, splits, settings, device, seed=0)
        ours_wall = time.perf_counter() - start
        test = test_split(folder / "test", args.limit, device)
        ours_test = accuracy(model, test.train_x, test.train_y, BATCH, pick_precision("auto", device).autocast)
        flops = 3 * forward_flops(model, test.train_x[:1])
        plain_model, plain_rate, plain_wall = plain_loop(value, folder / "train", args.epochs, device,
                                                         args.workers, args.limit)
        plain_test = accuracy(plain_model, test.train_x, test.train_y, BATCH, contextlib.nullcontext)
    params = sum(p.numel() for p in model.parameters())
    print(f"CIFAR-10, 15-layer child ({params} parameters), {args.epochs} epochs, batch {BATCH}, "
          f"{len(splits.train_x)} training images, device {device}; nasps loaded the JPEGs in {load_s:.0f} s")
    print(f"nasps  {record.images_per_s:8.0f} images/s  wall {ours_wall:7.1f} s  test accuracy {ours_test:.4f}  "
          f"(last validation {record.val_accuracies[-1]:.4f})")
    print(f"plain  {plain_rate:8.0f} images/s  wall {plain_wall:7.1f} s  test accuracy {plain_test:.4f}")
    print(f"ratio nasps / plain: {record.images_per_s / plain_rate:.2f} (images/s), "
          f"{plain_wall / ours_wall:.2f} (wall time)")
    achieved = record.images_per_s * flops
    print(f"nasps in {record.precision}: {flops / 1e6:.1f} MFLOP per training image, {achieved / 1e12:.2f} TFLOP/s, "
          f"MFU {100 * achieved / (args.peak_tflops * 1e12):.1f}% of {args.peak_tflops:g} TFLOP/s")


if __name__ == "__main__":
    main()
