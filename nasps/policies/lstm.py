"""The paper's controller: an LSTM that makes one decision per step (Zoph & Le 2017, 3.1-3.3).

At each step the 2-layer LSTM reads the embedding of the previous decision's token and a
softmax head for the decision's kind (filter height, number of filters, ...) picks the next
token. Decisions of one kind share a head and an embedding; the LSTM itself is shared by all.

Skip connections use anchor points. Spaces made of layers run one anchor step at the start of
each layer i; its top hidden state is layer i's anchor state a_i, and each earlier layer j
feeds layer i with probability

    P(j -> i) = sigmoid(v^T tanh(W_prev a_j + W_curr a_i)).

The next input is then the mean of the chosen a_j (sum / (1 + count)), or the start embedding
when layer i has no earlier layers. Each pick's log-probability enters the REINFORCE sum with
the rest.

All parameters live in one flat vector that the parameter servers split; ``_Params`` reads
named views of it, so the gradient flows to the flat vector. Its size does not depend on the
number of decisions, so a growing depth curriculum keeps the same vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from nasps.config import LSTMPolicyConfig
from nasps.policies.base import SampledBatch, score_by_length
from nasps.spaces import ANCHOR, Decision


@dataclass(frozen=True)
class _Step:
    """One LSTM step: a softmax decision (``index`` into the actions) or a layer's anchor step
    (``sources``: the anchor decisions' indices into the actions, for layers 0..i-1 in order)."""

    kind: str
    index: int = -1
    layer: int = -1
    sources: tuple[int, ...] = field(default=())


class _Params:
    """Named views into the flat parameter vector."""

    def __init__(self, flat: torch.Tensor, layout: dict[str, tuple[int, tuple[int, ...]]]):
        for name, (offset, shape) in layout.items():
            setattr(self, name, flat[offset:offset + math.prod(shape)].view(shape))

    def get(self, name: str) -> torch.Tensor:
        return getattr(self, name)


class LSTMPolicy:
    learns = True

    def __init__(self, decisions: Sequence[Decision], config: LSTMPolicyConfig):
        self.config = config
        self.decisions = tuple(decisions)
        self.hidden = config.hidden_size
        self.layers = config.num_layers
        self.kinds: dict[str, int] = {}  # kind -> number of choices, in first-seen order
        for d in self.decisions:
            if d.kind == ANCHOR:
                continue
            if self.kinds.setdefault(d.kind, d.num_choices) != d.num_choices:
                raise ValueError(f"decisions of kind {d.kind!r} have different numbers of choices")
        self.anchors = any(d.kind == ANCHOR for d in self.decisions)

        H = self.hidden
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in range(self.layers):
            shapes[f"lstm{layer}_w"] = (4 * H, 2 * H)  # [W_ih | W_hh] applied to [x, h]
            shapes[f"lstm{layer}_b"] = (4 * H,)
        shapes["start"] = (H,)
        for k, n in enumerate(self.kinds.values()):
            shapes[f"head{k}_w"] = (n, H)
            shapes[f"head{k}_b"] = (n,)
            shapes[f"embed{k}"] = (n, H)
        if self.anchors:
            shapes["attn_prev"] = (H, H)
            shapes["attn_curr"] = (H, H)
            shapes["attn_v"] = (H,)
        self._layout: dict[str, tuple[int, tuple[int, ...]]] = {}
        offset = 0
        for name, shape in shapes.items():
            self._layout[name] = (offset, shape)
            offset += math.prod(shape)
        self.num_params = offset
        self._kind_index = {kind: k for k, kind in enumerate(self.kinds)}
        self._programs: dict[int, list[_Step]] = {}

    # ------------------------------------------------------------------ structure

    def program(self, length: int) -> list[_Step]:
        """The LSTM steps that make the first ``length`` decisions."""
        if length not in self._programs:
            self._programs[length] = self._compile(self.decisions[:length])
        return self._programs[length]

    def _compile(self, decisions: Sequence[Decision]) -> list[_Step]:
        steps: list[_Step] = []
        layer = -1
        for i, d in enumerate(decisions):
            if self.anchors and d.layer is not None and d.layer != layer:
                # Every layer up to this one gets its anchor step, also a layer whose own
                # choices are all fixed (it makes no decision but later layers attend to it).
                for skipped in range(layer + 1, d.layer + 1):
                    steps.append(_Step(ANCHOR, layer=skipped))
                layer = d.layer
            if d.kind == ANCHOR:
                anchor = steps[-1]
                if anchor.kind != ANCHOR or anchor.layer != d.layer or d.source != len(anchor.sources):
                    raise ValueError(f"decision {d.name!r}: a layer's anchor decisions must come first, "
                                     "one per earlier layer in order")
                steps[-1] = _Step(ANCHOR, layer=layer, sources=anchor.sources + (i,))
            else:
                steps.append(_Step(d.kind, index=i))
        return steps

    # ------------------------------------------------------------------ the interface

    def initial_params(self, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        r = self.config.init_range
        return (torch.rand(self.num_params, generator=generator, dtype=torch.float32) * 2 - 1) * r

    def sample(self, params: torch.Tensor, m: int, generator: torch.Generator,
               length: Optional[int] = None) -> SampledBatch:
        length = len(self.decisions) if length is None else length
        with torch.no_grad():
            actions, log_probs, entropies = self._run(params, m, length, generator=generator)
        return SampledBatch(tuple(map(tuple, actions.tolist())), tuple(log_probs.tolist()),
                            tuple(entropies.tolist()))

    def log_probs(self, params: torch.Tensor,
                  actions: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        def score(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            _, log_prob, entropy = self._run(params, rows.shape[0], rows.shape[1], forced=rows)
            return log_prob, entropy
        return score_by_length(actions, score)

    # ------------------------------------------------------------------ the controller

    def _shape_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if self.config.temperature is not None:
            logits = logits / self.config.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * torch.tanh(logits)
        return logits

    def _run(self, flat: torch.Tensor, m: int, length: int, *, generator: Optional[torch.Generator] = None,
             forced: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Walk the controller for m sequences: sample (with ``generator``) or score ``forced``
        actions. Returns actions (m, length), log P (m,) and the entropy summed along each."""
        p = _Params(flat, self._layout)
        H = self.hidden
        h = [flat.new_zeros(m, H) for _ in range(self.layers)]
        c = [flat.new_zeros(m, H) for _ in range(self.layers)]
        x = p.start.expand(m, H)
        actions = torch.zeros(m, length, dtype=torch.long) if forced is None else forced
        log_prob = flat.new_zeros(m)
        entropy = flat.new_zeros(m)
        anchor_states: dict[int, torch.Tensor] = {}  # layer -> a_j, (m, H)
        anchor_keys: dict[int, torch.Tensor] = {}  # layer -> W_prev a_j, (m, H)
        for step in self.program(length):
            for layer in range(self.layers):
                gates = torch.cat([x, h[layer]], dim=1) @ p.get(f"lstm{layer}_w").T + p.get(f"lstm{layer}_b")
                i, f, g, o = gates.chunk(4, dim=1)
                c[layer] = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
                h[layer] = torch.sigmoid(o) * torch.tanh(c[layer])
                x = h[layer]
            top = h[-1]
            if step.kind == ANCHOR:
                x, log_prob, entropy = self._anchor_step(p, step, top, anchor_states, anchor_keys,
                                                         actions, generator, log_prob, entropy)
                continue
            k = self._kind_index[step.kind]
            logits = self._shape_logits(top @ p.get(f"head{k}_w").T + p.get(f"head{k}_b"))
            logp = F.log_softmax(logits, dim=1)
            if forced is None:
                actions[:, step.index] = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
            chosen = actions[:, step.index]
            log_prob = log_prob + logp.gather(1, chosen[:, None]).squeeze(1)
            entropy = entropy - (logp.exp() * logp).sum(dim=1)
            x = p.get(f"embed{k}")[chosen]
        return actions, log_prob, entropy

    def _anchor_step(self, p: _Params, step: _Step, top: torch.Tensor, states: dict, keys: dict,
                     actions: torch.Tensor, generator, log_prob: torch.Tensor,
                     entropy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer i's anchor step: pick its inputs among layers 0..i-1. Returns the next LSTM
        input and the running log-probability and entropy."""
        next_input = p.start.expand_as(top)  # layer 0 has no earlier layer to read
        if step.sources:
            earlier = range(len(step.sources))
            query = top @ p.attn_curr.T  # (m, H)
            attention = torch.tanh(torch.stack([keys[j] for j in earlier], dim=1) + query[:, None, :])
            logits = self._shape_logits(attention @ p.attn_v)  # (m, i)
            columns = list(step.sources)
            if generator is not None:
                actions[:, columns] = torch.bernoulli(torch.sigmoid(logits), generator=generator).long()
            picks = actions[:, columns].to(logits.dtype)
            log_on, log_off = F.logsigmoid(logits), F.logsigmoid(-logits)
            log_prob = log_prob + (picks * log_on + (1 - picks) * log_off).sum(dim=1)
            entropy = entropy - (log_on.exp() * log_on + log_off.exp() * log_off).sum(dim=1)
            chosen = torch.stack([states[j] for j in earlier], dim=1)  # (m, i, H)
            next_input = (picks[:, :, None] * chosen).sum(dim=1) / (1 + picks.sum(dim=1, keepdim=True))
        states[step.layer] = top
        keys[step.layer] = top @ p.attn_prev.T
        return next_input, log_prob, entropy
