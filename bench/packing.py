"""Small children sharing one GPU, as `cluster.gpus_per_child` packs them, without Ray.

1, 2, 4 and 8 processes each train a small child of their own (6 layers, 24-36 filters) on
their own copy of the data on the device, started together, as packed child workers do. Printed
for each count: the aggregate images/s (all images trained / the group's wall time), its ratio
to one child alone (target for 4: >= 2.5), each process's GPU memory peak, and the ideal
(count x one child's rate). Runs without Ray, so a GPU machine with PyTorch alone can run it.

Data: CIFAR-10 from ../shared/data/cifar10-jpeg.tar.gz (or --archive; copy it into a
git-ignored folder such as bench/data/ where ../shared is not there), or --dataset digits, which
needs no file (a CPU dry run: python bench/packing.py --dataset digits --device cpu).

    python bench/packing.py [--children 1 2 4 8] [--epochs 2] [--device auto] [--archive PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nasps.children import build_conv_net  # noqa: E402
from nasps.config import DigitsDatasetConfig, ImageFolderDatasetConfig  # noqa: E402
from nasps.data.images import ImageSplits, load_image_splits  # noqa: E402
from nasps.training.devices import pick_device  # noqa: E402
from nasps.training.image import TrainSettings, train_classifier  # noqa: E402

BATCH, LR = 128, 0.05


def small_child() -> dict:
    """6 layers of 24 to 36 filters, 3x3 and 5x5, a skip from the first to the fourth."""
    layers = []
    for i in range(6):
        inputs = [i - 1] if i else []
        if i == 3:
            inputs = [0, 2]
        layers.append({"type": "conv", "filter_height": 3 if i % 2 else 5, "filter_width": 3 if i % 2 else 5,
                       "num_filters": (24, 36)[i % 2], "stride": 1, "inputs": inputs})
    return {"layers": layers, "hyperparameters": {}}


def child_process(rank: int, data_file: str, device_name: str, epochs: int, ready, go, results) -> None:
    device = torch.device(device_name)
    torch.set_num_threads(1)
    splits = ImageSplits(**torch.load(data_file, weights_only=True)).to(device)  # its own copy, as a worker's
    settings = TrainSettings(epochs=epochs, batch_size=BATCH, learning_rate=LR, momentum=0.9, nesterov=True,
                             weight_decay=1e-4, schedule="cosine", crop_padding=2, flip=False)
    torch.manual_seed(rank)
    model = build_conv_net(small_child(), splits.channels, splits.num_classes)
    train_classifier(model, splits, dataclasses.replace(settings, epochs=1), device, seed=rank)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ready.wait()
    go.wait()
    start = time.time()
    record = train_classifier(model, splits, settings, device, seed=rank)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    results.put((rank, start, time.time(), record.images, peak))


def run_group(count: int, data_file: Path, device: torch.device, epochs: int) -> dict:
    context = mp.get_context("spawn")
    ready, go, results = context.Barrier(count + 1), context.Barrier(count + 1), context.Queue()
    processes = [context.Process(target=child_process, args=(r, str(data_file), str(device), epochs, ready, go,
                                                             results)) for r in range(count)]
    for p in processes:
        p.start()
    ready.wait(timeout=600)  # every child loaded and warmed up
    go.wait(timeout=60)
    rows = [results.get(timeout=1800) for _ in processes]
    for p in processes:
        p.join(timeout=60)
    wall = max(end for _, _, end, _, _ in rows) - min(start for _, start, _, _, _ in rows)
    return {"images_per_s": sum(images for *_, images, _ in rows) / wall,
            "peak_mib": max(peak for *_, peak in rows) / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dataset", default="cifar10", choices=["cifar10", "digits"])
    parser.add_argument("--archive", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
    parser.add_argument("--limit", type=int, default=None, help="train on only this many images")
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type == "cpu" and args.dataset == "cifar10" and args.limit is None:
        print("bench/packing: no GPU here; packed CIFAR-10 children on a CPU say nothing of a GPU (the "
              "benchmark did not run; --dataset digits --device cpu makes a dry run)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.dataset == "digits":
            dataset = DigitsDatasetConfig()
        elif not args.archive.is_file():
            print(f"bench/packing: no {args.archive} (the benchmark did not run; --dataset digits needs no file)")
            return
        else:
            with tarfile.open(args.archive) as archive:
                archive.extractall(tmp, filter="data")
            train = next(p for p in Path(tmp).rglob("train") if p.is_dir())
            dataset = ImageFolderDatasetConfig(root=str(train), image_size=32)
        # Decoded once here; each process loads the tensors and puts its own copy on the device.
        splits = load_image_splits(dataset, None, seed=0)
        if args.limit:
            splits = ImageSplits(splits.train_x[:args.limit], splits.train_y[:args.limit], splits.val_x,
                                 splits.val_y, splits.num_classes, splits.name)
        data_file = Path(tmp) / "splits.pt"
        torch.save({f.name: getattr(splits, f.name) for f in dataclasses.fields(splits)}, data_file)
        mib = sum(t.numel() * t.element_size() for t in (splits.train_x, splits.val_x)) / 2 ** 20
        print(f"packing: a 6-layer child per process on {device}, {args.dataset} ({len(splits.train_x)} training "
              f"images, {mib:.1f} MiB of them per copy), {args.epochs} epochs, batch {BATCH}")
        print(f"{'children':>8}  {'images/s':>10}  {'vs one':>7}  {'ideal':>6}  {'GPU MiB each':>12}")
        one = None
        for count in args.children:
            found = run_group(count, data_file, device, args.epochs)
            one = one or found["images_per_s"] / count
            print(f"{count:>8}  {found['images_per_s']:>10.0f}  {found['images_per_s'] / one:>7.2f}  {count:>6}  "
                  f"{found['peak_mib']:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
