"""Language-model child speed on Penn Treebank: tokens/s of nasps's trainer against a plain loop.

Both train the same base-8 cell (a stable hand-picked one: some sampled cells diverge at lr 20) in the same
2-layer language model, from the same initial weights, with SGD, clipping and truncated BPTT on
../shared/data/ptb (or --root). The plain loop is what one writes by hand: every time step
calls the cell on that step's embedding (``cell(x_t, state)``), where nasps projects the whole
sequence's inputs in one product first. Ratio = nasps / plain; above 1 nasps is faster.

    python bench/ptb.py [--root DIR] [--max-tokens N] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nasps.children import CellLanguageModel  # noqa: E402
from nasps.config import PtbDatasetConfig  # noqa: E402
from nasps.data.text import batchify, load_text_splits  # noqa: E402
from nasps.training.language import LMSettings, train_language_model  # noqa: E402

BATCH, BPTT, HIDDEN, LR, CLIP = 20, 35, 200, 20.0, 0.25


def stable_cell(base: int) -> dict:
    """A base-8 cell that trains at lr 20 without diverging: every node adds and applies tanh,
    c_{t-1} is added into leaf 0 (then sigmoid), and c_t is leaf 1 before its tanh."""
    nodes = [{"combine": "add", "activation": "tanh"} for _ in range(2 * base - 1)]
    return {"base": base, "nodes": nodes, "inject": {"node": 0, "combine": "add", "activation": "sigmoid"},
            "cell_output": 1, "hyperparameters": {}}


def plain_epoch(model: CellLanguageModel, tokens: torch.Tensor, max_tokens: int) -> float:
    """Tokens per second of a hand-written truncated-BPTT loop, one step at a time."""
    columns = batchify(tokens, BATCH)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    state = model.initial_state(BATCH)
    seen = 0
    start = time.perf_counter()
    for begin in range(0, columns.shape[0] - 1, BPTT):
        inputs = columns[begin:begin + BPTT]
        targets = columns[begin + 1:begin + 1 + len(inputs)]
        inputs = inputs[:len(targets)]
        state = [(h.detach(), c.detach()) for h, c in state]
        x = model.dropout(model.embedding(inputs))
        new_state = []
        for cell, layer_state in zip(model.cells, state):
            outputs = []
            for t in range(len(inputs)):
                layer_state = cell(x[t], layer_state)
                outputs.append(layer_state[0])
            x = model.dropout(torch.stack(outputs))
            new_state.append(layer_state)
        state = new_state
        logits = model.decoder(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        seen += targets.numel()
        if seen >= max_tokens:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "ptb")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="stop the epoch after this many training tokens (default: the whole epoch)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not (args.root / "ptb.train.txt").is_file():
        print(f"bench/ptb: no ptb.train.txt under {args.root}; pass --root (the benchmark did not run)")
        return
    torch.set_num_threads(args.threads)
    data = load_text_splits(PtbDatasetConfig(root=str(args.root)), seed=0)
    value = stable_cell(8)
    max_tokens = args.max_tokens or len(data.train)
    torch.manual_seed(0)
    model = CellLanguageModel(value, data.vocab_size, HIDDEN)
    params = sum(p.numel() for p in model.parameters())
    settings = LMSettings(epochs=1, batch_size=BATCH, bptt=BPTT, learning_rate=LR, clip=CLIP,
                          max_tokens_per_epoch=max_tokens)
    ours = train_language_model(model, data, settings, torch.device("cpu")).tokens_per_s
    torch.manual_seed(0)
    plain = plain_epoch(CellLanguageModel(value, data.vocab_size, HIDDEN), data.train, max_tokens)
    print(f"PTB word level, base-8 cell, 2 layers x {HIDDEN}, {params} parameters, batch {BATCH}, "
          f"bptt {BPTT}, {min(max_tokens, len(data.train))} training tokens, {args.threads} thread(s), CPU")
    print(f"nasps {ours:.0f} tokens/s, plain loop {plain:.0f} tokens/s, ratio {ours / plain:.2f}")


if __name__ == "__main__":
    main()
