"""Language-model children on Penn Treebank: speed against a plain loop, quality against nn.LSTM.

Both train the same cell (the LSTM written as a base-8 tree of the paper's space) in the same
2-layer language model, from the same initial weights, with SGD, clipping and truncated BPTT on
../shared/data/ptb (or --root). The plain loop is what one writes by hand: every time step
calls the cell on that step's embedding (``cell(x_t, state)``), where nasps projects the whole
sequence's inputs in one product first. Ratio = nasps / plain; above 1 nasps is faster.

Quality: the same cell and a ``torch.nn.LSTM`` of the same size, each in the same language
model (embedding, dropout, tied decoder, nasps's initialisation), trained by nasps's trainer with
the evaluator's default settings on the same tokens: validation perplexity of each, and the
ratio cell / LSTM (1.10 = the cell is 10% worse).

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
from nasps.config import LanguageModelEvaluatorConfig, PtbDatasetConfig  # noqa: E402
from nasps.data.text import batchify, load_text_splits  # noqa: E402
from nasps.training.language import LMSettings, train_language_model  # noqa: E402

BATCH, BPTT, HIDDEN, LR, CLIP = 20, 35, 200, 20.0, 0.25


class LSTMLanguageModel(CellLanguageModel):
    """The reference: nasps's language model with nn.LSTM in place of the searched cells."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int = 2, dropout: float = 0.2):
        super().__init__(lstm_like_cell(), vocab_size, hidden_size, num_layers, dropout, True)
        del self.cells
        self.lstm = torch.nn.LSTM(hidden_size, hidden_size, num_layers, dropout=dropout)

    def initial_state(self, batch: int, device=None):
        zeros = torch.zeros(self.lstm.num_layers, batch, self.hidden_size, device=device)
        return [(zeros, zeros)]

    def forward(self, tokens: torch.Tensor, state):
        outputs, (h, c) = self.lstm(self.dropout(self.embedding(tokens)), state[0])
        return self.decoder(self.dropout(outputs)), [(h, c)]


def lstm_like_cell() -> dict:
    """The LSTM written in the paper's base-8 tree: leaves 0 and 1 are the input gate and the
    candidate (i * g at node 8); leaves 2 and 3 sum into the forget gate (node 9), which c_{t-1}
    is multiplied into; node 12 adds the two, c_t = f * c_{t-1} + i * g, and applies tanh;
    leaves 4 to 7 sum into the output gate (node 13); the root is h_t = o * tanh(c_t)."""
    nodes = [("add", "sigmoid"), ("add", "tanh")] + [("add", "identity")] * 6 + [
        ("elem_mult", "identity"), ("add", "sigmoid"), ("add", "identity"), ("add", "identity"),
        ("add", "tanh"), ("add", "sigmoid"), ("elem_mult", "identity")]
    return {"base": 8, "nodes": [{"combine": c, "activation": a} for c, a in nodes],
            "inject": {"node": 9, "combine": "elem_mult", "activation": "identity"},
            "cell_output": 12, "hyperparameters": {}}


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
    value = lstm_like_cell()
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

    defaults = LanguageModelEvaluatorConfig(dataset=PtbDatasetConfig(root=str(args.root)))
    quality = LMSettings(epochs=1, batch_size=defaults.batch_size, bptt=defaults.bptt,
                         learning_rate=defaults.learning_rate, clip=defaults.clip, max_tokens_per_epoch=max_tokens)
    perplexities = {}
    for name, build in (("cell", lambda: CellLanguageModel(value, data.vocab_size, HIDDEN)),
                        ("nn.LSTM", lambda: LSTMLanguageModel(data.vocab_size, HIDDEN))):
        torch.manual_seed(0)
        perplexities[name] = train_language_model(build(), data, quality, torch.device("cpu")).val_perplexities[-1]
    print(f"quality after {min(max_tokens, len(data.train))} tokens at the evaluator's defaults (lr "
          f"{defaults.learning_rate}, clip {defaults.clip}): validation perplexity cell {perplexities['cell']:.1f}, "
          f"nn.LSTM {perplexities['nn.LSTM']:.1f}, ratio {perplexities['cell'] / perplexities['nn.LSTM']:.3f} "
          f"(target <= 1.10)")


if __name__ == "__main__":
    main()
