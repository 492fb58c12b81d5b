"""The LSTM controller's own cost: sample m = 8 conv architectures with anchors, and compute the
REINFORCE gradient of their log-probabilities, at 6, 12 and 24 layers, on this CPU.

The reference is a plain PyTorch loop doing the same number of steps of the same shapes with
``nn.LSTMCell`` and ``nn.Linear`` (softmax heads, no anchors): the ratio says what the flat
parameter vector, the kind heads and the anchor attention cost over the bare recurrence.

    python bench/controller.py [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nasps.config import config_from_dict  # noqa: E402
from nasps.method.reinforce import policy_gradient  # noqa: E402
from nasps.policies import build_policy  # noqa: E402
from nasps.spaces import build_space  # noqa: E402

M = 8
DEPTHS = (6, 12, 24)


def best_ms(fn, repeats: int) -> float:
    """The fastest of ``repeats`` runs: the least disturbed by whatever else the machine does."""
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def plain_loop(steps: int, hidden: int, generator: torch.Generator):
    """The reference: a 2-layer LSTMCell stack sampling one of 4 tokens per step."""
    cells = nn.ModuleList([nn.LSTMCell(hidden, hidden) for _ in range(2)])
    head, embed = nn.Linear(hidden, 4), nn.Embedding(4, hidden)

    def run(with_grad: bool):
        with torch.set_grad_enabled(with_grad):
            x = torch.zeros(M, hidden)
            state = [(torch.zeros(M, hidden), torch.zeros(M, hidden)) for _ in cells]
            log_prob = torch.zeros(M)
            for _ in range(steps):
                for i, cell in enumerate(cells):
                    state[i] = cell(x, state[i])
                    x = state[i][0]
                logp = torch.log_softmax(head(x), dim=1)
                action = torch.multinomial(logp.exp(), 1, generator=generator)
                log_prob = log_prob + logp.gather(1, action).squeeze(1)
                x = embed(action.squeeze(1))
            if with_grad:
                log_prob.sum().backward()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a replica uses 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = {"space": {"type": "conv", "curriculum": {"start_depth": 6, "max_depth": max(DEPTHS)}},
           "evaluator": {"type": "python", "target": "unused:unused"},
           "strategy": {"type": "reinforce", "policy": "lstm"}}
    config = config_from_dict(raw)
    space = build_space(config.space)
    policy = build_policy(config.strategy, space.decisions())
    params = policy.initial_params(0)
    generator = torch.Generator().manual_seed(0)
    print(f"LSTM controller ({policy.num_params} parameters), m = {M}, conv space with anchors, "
          f"{args.threads} thread(s); best of {args.repeats}; ratio = nasps / plain PyTorch loop")
    print(f"{'layers':>6} {'decisions':>9} {'steps':>5}  {'sample ms':>9} {'ratio':>5}  "
          f"{'gradient ms':>11} {'ratio':>5}")
    for depth in DEPTHS:
        measure(space, policy, params, generator, depth, config.strategy.lstm.hidden_size, args.repeats)


def measure(space, policy, params, generator, depth: int, hidden: int, repeats: int) -> None:
    length = len(space.decisions(depth))
    steps = len(policy.program(length))
    batch = policy.sample(params, M, generator, length)
    rewards = [0.1 * k for k in range(M)]
    sample_ms = best_ms(lambda: policy.sample(params, M, generator, length), repeats)
    gradient_ms = best_ms(lambda: policy_gradient(policy, params, batch.actions, rewards, 0.3,
                                                    baseline_decay=0.95), repeats)
    reference = plain_loop(steps, hidden, generator)
    plain_sample = best_ms(lambda: reference(False), repeats)
    plain_gradient = best_ms(lambda: reference(True), repeats)
    print(f"{depth:>6} {length:>9} {steps:>5}  {sample_ms:>9.1f} {sample_ms / plain_sample:>5.2f}  "
          f"{gradient_ms:>11.1f} {gradient_ms / plain_gradient:>5.2f}", flush=True)

if __name__ == "__main__":
    main()
