"""GPU-hours of a conv search on CIFAR-10, from its children's training FLOPs and a GPU's rate.

A child's training costs about 3 forward passes per image (forward, and the backward's two
products), so a search's work is, summed over its children,

    3 x forward FLOPs per image x training images x epochs x (epochs trained / planned),

where the forward FLOPs of each depth of the curriculum are averaged over architectures drawn
uniformly from the space (what the controller samples before it has learnt; FlopCounterMode
counts the convolutions and the classifier, a multiply-add as 2, on this CPU). The GPU does
``mfu`` x its peak of that work per second, all its packed children together: measure it with
``make bench-gpu`` (bench/cifar10.py prints the MFU of a 15-layer child), or take the default
0.10 as a guess until then. Early stopping trains a fraction of the planned epochs
(``--epochs-trained``; bench/early_stopping.py measures it, 0.7 on the default search).

    python bench/gpu_hours.py [configs/cifar10.yaml configs/cifar10_1gpu.yaml] [--mfu 0.1]
        [--peak-tflops 989] [--epochs-trained 1.0] [--samples 16]
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cifar10 import H100_BF16_TFLOPS, forward_flops  # noqa: E402
from nasps.children import build_conv_net  # noqa: E402
from nasps.config import load_config  # noqa: E402
from nasps.data.images import CIFAR10_VALIDATION  # noqa: E402
from nasps.spaces import build_space  # noqa: E402

CIFAR10_TRAIN = 50_000


def mean_forward_flops(space, depth: int, samples: int, rng: random.Random) -> float:
    """Forward FLOPs per 32x32 image, averaged over uniform draws of ``depth`` layers."""
    image = torch.zeros(1, 3, 32, 32)
    total = 0.0
    for _ in range(samples):
        actions = [rng.randrange(d.num_choices) for d in space.decisions(depth)]
        total += forward_flops(build_conv_net(space.decode(actions).as_dict(), 3, 10), image)
    return total / samples


def children_per_depth(config) -> dict[int, int]:
    """How many of a search's children each depth of its curriculum has."""
    space = build_space(config.space)
    return dict(Counter(space.depth_at(s) for s in range(config.budget.children)))


def search_flops(config, samples: int, epochs_trained: float, seed: int = 0) -> tuple[float, dict[int, int]]:
    """The training FLOPs of a whole search, and how many of its children each depth has."""
    space = build_space(config.space)
    per_depth = children_per_depth(config)
    images = CIFAR10_TRAIN - (config.evaluator.validation_size or CIFAR10_VALIDATION)
    rng = random.Random(seed)
    flops = sum(n * 3 * mean_forward_flops(space, depth, samples, rng) for depth, n in per_depth.items())
    return flops * images * config.evaluator.epochs * epochs_trained, per_depth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path,
                        default=[ROOT / "configs" / "cifar10.yaml", ROOT / "configs" / "cifar10_1gpu.yaml"])
    parser.add_argument("--mfu", type=float, default=0.10,
                        help="the share of the GPU's peak its children achieve together (default: a guess)")
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_TFLOPS,
                        help="the GPU's dense bf16 peak (989 for an H100 or H200)")
    parser.add_argument("--epochs-trained", type=float, default=None,
                        help="epochs trained / planned (default: 0.7 where the config stops children early, else 1)")
    parser.add_argument("--samples", type=int, default=16, help="architectures drawn per depth")
    args = parser.parse_args()
    rate = args.mfu * args.peak_tflops * 1e12
    print(f"at {100 * args.mfu:g}% of {args.peak_tflops:g} TFLOP/s = {rate / 1e12:.0f} TFLOP/s achieved")
    for path in args.configs:
        config = load_config(path)
        epochs_trained = args.epochs_trained if args.epochs_trained is not None else \
            0.7 if config.evaluator.early_stopping is not None else 1.0
        flops, per_depth = search_flops(config, args.samples, epochs_trained)
        depths = f"{min(per_depth)}-{max(per_depth)}" if len(per_depth) > 1 else f"{min(per_depth)}"
        print(f"{path.name}: {config.budget.children} children of {depths} layers, {config.evaluator.epochs} "
              f"epochs x {epochs_trained:g} trained: {flops / 1e18:.2f} EFLOP, "
              f"{flops / rate / 3600:.1f} GPU-hours")


if __name__ == "__main__":
    main()
