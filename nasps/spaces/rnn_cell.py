"""The ``rnn_cell`` space: the paper's recurrent cell as a tree (Zoph & Le 2017, section 3.4).

The tree has ``base`` leaves and ``2*base - 1`` nodes. Leaf n joins the two inputs,
W_n x_t and U_n h_{t-1}; internal node n joins nodes 2(n - base) and 2(n - base) + 1; the last
node is the root and its output is h_t. Every node has a combination (add, elem_mult, max) and
an activation. Then the cell memory: c_{t-1} is injected into one non-root node k (a_k becomes
act(comb(a_k, c_{t-1})), right after a_k is computed), and c_t is the output of one non-root
node before its activation. The value, as JSON::

    {"base": 2,
     "nodes": [{"combine": "add", "activation": "tanh"}, ...],     # 2*base - 1 nodes
     "inject": {"node": 0, "combine": "add", "activation": "relu"},
     "cell_output": 1,
     "hyperparameters": {}}

Decisions: the hyperparameters, each node's combination and activation in node order, the
inject node, combination and activation, and the node c_t is taken from.

Some cells are dead: from h_0 = c_0 = 0 their h_t never depends on the input, whatever the
weights (an elem_mult of U h_{t-1} with a zero state stays zero, for one). Trained, a dead cell
learns the output's frequencies and nothing else; ``cell_is_dead`` finds them before training.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from nasps.config import RnnCellSpaceConfig
from nasps.spaces.base import Architecture, Decision
from nasps.spaces.choices import ChoiceList, Hyperparameters


def node_inputs(base: int, node: int) -> tuple[int, int] | None:
    """The two child nodes of an internal node (None for a leaf)."""
    if node < base:
        return None
    left = 2 * (node - base)
    return left, left + 1


# What a node's value is, seen from the input, in a cell run from h_0 = c_0 = 0: zero, a
# constant other than zero (sigmoid(0) = 0.5, and what follows from it), or varying with x_t.
# In this order a node joined by add or max is the larger of its two sides.
ZERO, CONSTANT, VARIES = 0, 1, 2


def _join(combine: str, left: int, right: int) -> int:
    if combine == "elem_mult" and ZERO in (left, right):
        return ZERO
    return max(left, right)


def _activate(activation: str, kind: int) -> int:
    return CONSTANT if kind == ZERO and activation == "sigmoid" else kind


def _cell_step(value: dict, h: int, c: int) -> tuple[int, int]:
    """What h_t and c_t are, given what h_{t-1} and c_{t-1} are (as TreeCell.step computes)."""
    base, inject = value["base"], value["inject"]
    kinds, joined = [], []
    for n, node in enumerate(value["nodes"]):
        children = node_inputs(base, n)
        # A leaf's W_n x_t has a bias and varies with x_t; U_n h_{t-1} is what h_{t-1} is.
        z = _join(node["combine"], VARIES, h) if children is None else \
            _join(node["combine"], kinds[children[0]], kinds[children[1]])
        a = _activate(node["activation"], z)
        if n == inject["node"]:
            a = _activate(inject["activation"], _join(inject["combine"], a, c))
        joined.append(z)
        kinds.append(a)
    return kinds[-1], joined[value["cell_output"]]


def cell_is_dead(value: dict) -> bool:
    """True when h_t cannot depend on the input at any step, whatever the weights: followed from
    h_0 = c_0 = 0 until the (h, c) kinds repeat, h never varies."""
    state, seen = (ZERO, ZERO), set()
    while state not in seen:
        if state[0] == VARIES:
            return False
        seen.add(state)
        state = _cell_step(value, *state)
    return True


class RnnCellSpace:
    type_name = "rnn_cell"

    def __init__(self, config: RnnCellSpaceConfig):
        self.base = config.base
        self.skip_dead_cells = config.skip_dead_cells
        self.num_nodes = 2 * config.base - 1
        self.hyperparameters = Hyperparameters(config.hyperparameters)
        self.combine = ChoiceList("combine", config.combinations)
        self.activation = ChoiceList("activation", config.activations)
        non_root = list(range(self.num_nodes - 1))
        self.inject_node = ChoiceList("inject_node", non_root)
        self.cell_output = ChoiceList("cell_output", non_root)
        decisions = self.hyperparameters.decisions()
        for n in range(self.num_nodes):
            decisions += self.combine.decision(f"node{n}.combine")
            decisions += self.activation.decision(f"node{n}.activation")
        decisions += self.inject_node.decision("inject.node")
        decisions += self.combine.decision("inject.combine")
        decisions += self.activation.decision("inject.activation")
        decisions += self.cell_output.decision("cell_output")
        self._decisions = tuple(decisions)

    def decisions(self, depth: Optional[int] = None) -> Sequence[Decision]:
        return self._decisions

    def depth_at(self, samples: int) -> Optional[int]:
        return None

    def decode(self, actions: Sequence[int]) -> Architecture:
        if len(actions) != len(self._decisions):
            raise ValueError(f"expected {len(self._decisions)} actions, got {len(actions)}")
        queue = [int(a) for a in actions]
        hyperparameters = self.hyperparameters.take(queue)
        nodes = [{"combine": self.combine.take(queue, f"node {n} combine"),
                  "activation": self.activation.take(queue, f"node {n} activation")}
                 for n in range(self.num_nodes)]
        inject = {"node": self.inject_node.take(queue, "inject node"),
                  "combine": self.combine.take(queue, "inject combine"),
                  "activation": self.activation.take(queue, "inject activation")}
        value = {"base": self.base, "nodes": nodes, "inject": inject,
                 "cell_output": self.cell_output.take(queue, "cell output"),
                 "hyperparameters": hyperparameters}
        return Architecture.from_value(self.type_name, value)

    def encode(self, arch: Architecture) -> list[int]:
        value = self.validate(arch)
        actions = self.hyperparameters.indices(value["hyperparameters"])
        for n, node in enumerate(value["nodes"]):
            actions += self.combine.index(node["combine"], f"node {n} combine")
            actions += self.activation.index(node["activation"], f"node {n} activation")
        inject = value["inject"]
        actions += self.inject_node.index(inject["node"], "inject node")
        actions += self.combine.index(inject["combine"], "inject combine")
        actions += self.activation.index(inject["activation"], "inject activation")
        actions += self.cell_output.index(value["cell_output"], "cell output")
        return actions

    def can_learn(self, arch: Architecture) -> bool:
        """False for a dead cell (see ``cell_is_dead``) while ``space.skip_dead_cells`` is on."""
        return not (self.skip_dead_cells and cell_is_dead(arch.as_dict()))

    def validate(self, arch: Architecture) -> dict:
        """The architecture's value, checked against this space (ValueError naming the problem)."""
        if arch.space != self.type_name:
            raise ValueError(f"a {arch.space} architecture is not a {self.type_name} one")
        value = arch.as_dict()
        keys = {"base", "nodes", "inject", "cell_output", "hyperparameters"}
        if set(value) != keys:
            raise ValueError(f"an rnn_cell architecture has the keys {sorted(keys)}, got {sorted(value)}")
        if type(value["base"]) is not int or value["base"] != self.base:
            raise ValueError(f"base {value['base']!r}: this space's cells have base {self.base}")
        nodes = value["nodes"]
        if not isinstance(nodes, list) or len(nodes) != self.num_nodes:
            raise ValueError(f"a base-{self.base} cell has {self.num_nodes} nodes")
        for n, node in enumerate(nodes):
            if not isinstance(node, dict) or set(node) != {"combine", "activation"}:
                raise ValueError(f"node {n}: needs exactly 'combine' and 'activation'")
            self.combine.index(node["combine"], f"node {n} combine")
            self.activation.index(node["activation"], f"node {n} activation")
        inject = value["inject"]
        if not isinstance(inject, dict) or set(inject) != {"node", "combine", "activation"}:
            raise ValueError("inject: needs exactly 'node', 'combine' and 'activation'")
        self.inject_node.index(inject["node"], "inject node")
        self.combine.index(inject["combine"], "inject combine")
        self.activation.index(inject["activation"], "inject activation")
        self.cell_output.index(value["cell_output"], "cell output")
        if not isinstance(value["hyperparameters"], dict):
            raise ValueError("hyperparameters must be a mapping of name to value")
        self.hyperparameters.indices(value["hyperparameters"])
        return value


def _joined(combine: str, left: str, right: str) -> str:
    if combine == "add":
        return f"{left} + {right}"
    if combine == "elem_mult":
        return f"{_term(left)} ⊙ {_term(right)}"
    return f"max({left}, {right})"


def _term(text: str) -> str:
    """Parenthesised unless it is a single name (a3, c_{t-1})."""
    return text if re.fullmatch(r"a\d+|c_\{t-1\}", text) else f"({text})"


def _activated(activation: str, text: str) -> str:
    return text if activation == "identity" else f"{activation}({text})"


def cell_equations(value: dict) -> list[str]:
    """A cell as equations, one per line, in the order they are computed: a_n for each node,
    the injection of c_{t-1}, then c_t and h_t."""
    base, nodes, inject = value["base"], value["nodes"], value["inject"]
    lines, before_activation = [], {}
    for n, node in enumerate(nodes):
        children = node_inputs(base, n)
        left, right = (f"W{n}·x_t", f"U{n}·h_{{t-1}}") if children is None else (
            f"a{children[0]}", f"a{children[1]}")
        joined = _joined(node["combine"], left, right)
        before_activation[n] = joined
        lines.append(f"a{n} = {_activated(node['activation'], joined)}")
        if n == inject["node"]:
            injected = _joined(inject["combine"], f"a{n}", "c_{t-1}")
            lines.append(f"a{n} ← {_activated(inject['activation'], injected)}")
    lines.append(f"c_t = {before_activation[value['cell_output']]}")
    lines.append(f"h_t = a{len(nodes) - 1}")
    return lines
