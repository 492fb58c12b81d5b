"""The rnn_cell space's networks (Zoph & Le 2017, section 3.4): a cell value in, a recurrent
cell ``(x_t, (h, c)) -> (h, c)`` out, and the 2-layer language model the paper trains it in.

The tree follows ``nasps.spaces.rnn_cell``: leaf n joins W_n x_t and U_n h_{t-1}; internal node
n joins nodes 2(n - base) and 2(n - base) + 1; c_{t-1} is injected into one node right after it
is computed; c_t is one node's value before its activation; h_t is the root's output.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

COMBINE = {
    "add": torch.add,
    "elem_mult": torch.mul,
    "max": torch.maximum,
}
ACTIVATE = {
    "identity": lambda z: z,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "sin": torch.sin,
}


class TreeCell(nn.Module):
    """One recurrent cell of the space. The input projections of all leaves are one matrix, so a
    whole sequence's W x_t can be computed in one product (``project_inputs``)."""

    def __init__(self, value: dict, input_size: int, hidden_size: int):
        super().__init__()
        self.base = value["base"]
        self.nodes = [(node["combine"], node["activation"]) for node in value["nodes"]]
        inject = value["inject"]
        self.inject = (inject["node"], inject["combine"], inject["activation"])
        self.cell_output = value["cell_output"]
        self.hidden_size = hidden_size
        self.w = nn.Linear(input_size, self.base * hidden_size)  # W_n x_t for every leaf n
        self.u = nn.Linear(hidden_size, self.base * hidden_size, bias=False)  # U_n h_{t-1}

    def project_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.w(x)

    def step(self, wx: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step from the projected input ``wx`` (see ``project_inputs``)."""
        h, c = state
        wxs = wx.chunk(self.base, dim=-1)
        uhs = self.u(h).chunk(self.base, dim=-1)
        inject_node, inject_combine, inject_activation = self.inject
        a: list[Optional[torch.Tensor]] = [None] * len(self.nodes)
        c_new = None
        for n, (combine, activation) in enumerate(self.nodes):
            if n < self.base:
                left, right = wxs[n], uhs[n]
            else:
                left, right = a[2 * (n - self.base)], a[2 * (n - self.base) + 1]
            z = COMBINE[combine](left, right)
            if n == self.cell_output:
                c_new = z
            a[n] = ACTIVATE[activation](z)
            if n == inject_node:
                a[n] = ACTIVATE[inject_activation](COMBINE[inject_combine](a[n], c))
        return a[-1], c_new

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.step(self.project_inputs(x), state)


class CellLanguageModel(nn.Module):
    """Embedding -> dropout -> stacked TreeCells -> dropout -> linear decoder (optionally tied to
    the embedding, which needs embedding size = hidden size).

    Initialised as PyTorch's word language model and AWD-LSTM are: embedding (and an untied
    decoder) uniform in +-0.1, decoder bias 0, cell weights uniform in +-1/sqrt(hidden) (the
    ``nn.Linear`` default, as for an LSTM). nn.Embedding's own N(0, 1), tied to the decoder,
    gives logits of standard deviation ~sqrt(hidden): perplexities of 1e7 and more before any
    training, where guessing uniformly scores the vocabulary size.
    """

    INIT_RANGE = 0.1

    def __init__(self, value: dict, vocab_size: int, hidden_size: int, num_layers: int = 2,
                 dropout: float = 0.2, tie_weights: bool = True):
        super().__init__()
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.cells = nn.ModuleList([TreeCell(value, hidden_size, hidden_size) for _ in range(num_layers)])
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            self.decoder.weight = self.embedding.weight
        with torch.no_grad():
            self.embedding.weight.uniform_(-self.INIT_RANGE, self.INIT_RANGE)
            if not tie_weights:
                self.decoder.weight.uniform_(-self.INIT_RANGE, self.INIT_RANGE)
            self.decoder.bias.zero_()

    def initial_state(self, batch: int, device=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        zeros = torch.zeros(batch, self.hidden_size, device=device)
        return [(zeros, zeros) for _ in self.cells]

    def forward(self, tokens: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]]):
        """tokens (T, B) -> logits (T, B, vocab) and the state after the last step."""
        x = self.dropout(self.embedding(tokens))
        new_state = []
        for cell, layer_state in zip(self.cells, state):
            projected = cell.project_inputs(x)  # the whole sequence in one product
            outputs = []
            for t in range(tokens.shape[0]):
                layer_state = cell.step(projected[t], layer_state)
                outputs.append(layer_state[0])
            x = self.dropout(torch.stack(outputs))
            new_state.append(layer_state)
        return self.decoder(x), new_state
