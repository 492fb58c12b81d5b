"""Your own search space and trainer, searched from a script.

The space is a handful of decisions about a small PyTorch conv net (depth, filters, kernel,
pooling, learning rate); the evaluator builds that net, trains it on scikit-learn's
handwritten digits and reports its validation accuracy after every epoch, so that
`early_stopping` can stop the hopeless ones. Run it as

    python examples/custom_space.py --children 40

and read the run afterwards with `nasps report runs/custom-space` or `nasps.load(...)`.
"""

from __future__ import annotations

import argparse

import nasps

SPACE = {"type": "categorical", "decisions": [
    {"name": "depth", "choices": [1, 2, 3]},
    {"name": "filters", "choices": [4, 8, 16]},
    {"name": "kernel", "choices": [1, 3, 5]},
    {"name": "pool", "choices": ["none", "max", "avg"]},
    {"name": "learning_rate", "choices": [0.3, 0.1, 0.03]},
]}


def build(arch: dict):
    from torch import nn
    layers, channels = [], 1
    for _ in range(arch["depth"]):
        layers += [nn.Conv2d(channels, arch["filters"], arch["kernel"], padding=arch["kernel"] // 2),
                   nn.BatchNorm2d(arch["filters"]), nn.ReLU()]
        channels = arch["filters"]
    if arch["pool"] != "none":
        layers.append(nn.MaxPool2d(2) if arch["pool"] == "max" else nn.AvgPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, 10))


def digits():
    import torch
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(y)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return (x[order[:1000]], y[order[:1000]]), (x[order[1000:]], y[order[1000:]])


def trainer(epochs: int):
    """The evaluator: ``score(arch, report)`` trains for ``epochs`` and reports each one."""
    def score(arch: dict, report) -> float:
        import torch
        torch.manual_seed(0)
        (x, y), (x_val, y_val) = digits()
        model = build(arch)
        optimizer = torch.optim.SGD(model.parameters(), lr=arch["learning_rate"], momentum=0.9)
        accuracy = 0.0
        for epoch in range(1, epochs + 1):
            model.train()
            for batch in torch.randperm(len(y)).split(50):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
            if report(epoch, accuracy):  # below the run's median at this epoch: stop here
                break
        return accuracy
    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--run-dir", default="runs/custom-space")
    args = parser.parse_args()
    config = {"space": SPACE,
              "evaluator": {"type": "python", "early_stopping": {"grace_epochs": 1, "min_children": 4}},
              "strategy": {"type": "reinforce", "policy": "lstm"},
              "budget": {"children": args.children}}
    run = nasps.search(config, evaluator=trainer(args.epochs), run_dir=args.run_dir)
    print(f"{run.summary.stopped} of {run.summary.trained} children stopped early")
    for rank, child in enumerate(run.best(3), 1):
        print(f"{rank}. child {child.id}: validation accuracy {child.reward:.3f}  {child.arch}")


if __name__ == "__main__":
    main()
