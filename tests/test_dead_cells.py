"""Dead rnn_cell cells: those whose h_t cannot depend on the input, found before training and
drawn again by every strategy."""

import pytest
import torch

from nasps.children import TreeCell
from nasps.config import config_from_dict
from nasps.method.serial import run_serial
from nasps.policies import build_policy
from nasps.spaces import build_space
from nasps.spaces.rnn_cell import cell_is_dead
from nasps.state.store import ResultsStore

WIDE = {"type": "rnn_cell", "base": 8, "combinations": ["add", "elem_mult", "max"],
        "activations": ["identity", "tanh", "sigmoid", "relu", "sin"]}


def base2(nodes, inject=(0, "add", "identity"), cell_output=0) -> dict:
    """A base-2 cell value from (combine, activation) for nodes 0, 1 (the leaves) and 2 (the root)."""
    return {"base": 2, "nodes": [{"combine": c, "activation": a} for c, a in nodes],
            "inject": dict(zip(("node", "combine", "activation"), inject)), "cell_output": cell_output,
            "hyperparameters": {}}


@pytest.mark.parametrize("value, dead", [
    # A leaf joined by add carries W x_t whatever h is.
    (base2([("add", "tanh"), ("elem_mult", "relu"), ("elem_mult", "sigmoid")]), False),
    # Every leaf is W x ⊙ U h, zero from h_0 = 0, and so is all that follows: dead.
    (base2([("elem_mult", "identity"), ("elem_mult", "tanh"), ("add", "relu")]), True),
    # sigmoid(0) = 0.5: h_1 is a constant other than zero, so at t = 2 W x ⊙ U h_1 varies.
    (base2([("elem_mult", "sigmoid"), ("elem_mult", "identity"), ("add", "identity")],
           inject=(1, "elem_mult", "identity"), cell_output=1), False),
    # The same but the root multiplies that constant by the zero leaf: h stays 0 for ever.
    (base2([("elem_mult", "sigmoid"), ("elem_mult", "identity"), ("elem_mult", "identity")],
           inject=(1, "elem_mult", "identity"), cell_output=1), True),
    # Alive through the memory only: h_1 = 0 ⊙ (W x + U h) = 0, but c_1 = W x + U h varies, and
    # at t = 2 it is added into the zero leaf.
    (base2([("elem_mult", "identity"), ("add", "identity"), ("elem_mult", "identity")],
           inject=(0, "add", "identity"), cell_output=1), False),
])
def test_dead_cells_worked_out_by_hand(value, dead):
    assert cell_is_dead(value) is dead


def hidden_states_vary(value: dict, seed: int, steps: int = 12) -> bool:
    """Does h_t of the real cell, with random weights, differ between input sequences at any step?"""
    torch.manual_seed(seed)
    cell = TreeCell(value, input_size=6, hidden_size=8).double()
    h = c = torch.zeros(16, 8, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(steps):
            h, c = cell(torch.randn(16, 6, dtype=torch.float64), (h, c))
            if not torch.equal(h, h[:1].expand_as(h)):
                return True
    return False


@pytest.mark.parametrize("base", [2, 8])
def test_the_rule_agrees_with_the_network_it_describes(base):
    """On uniform draws of the space with every combination and activation, a cell is dead by the
    rule exactly when the TreeCell it builds, with random weights, gives every input sequence the
    same h_t at every step."""
    space = build_space(config_from_dict({"space": dict(WIDE, base=base, skip_dead_cells=False),
                                          "evaluator": {"target": "tests.toys:cell_toy"}}).space)
    generator = torch.Generator().manual_seed(base)
    verdicts = []
    for i in range(300):
        actions = [int(torch.randint(d.num_choices, (1,), generator=generator)) for d in space.decisions()]
        value = space.decode(actions).as_dict()
        verdicts.append((cell_is_dead(value), not hidden_states_vary(value, seed=i)))
    disagreements = [i for i, (rule, network) in enumerate(verdicts) if rule != network]
    assert not disagreements, f"the rule and the network disagree on draws {disagreements}"
    dead = sum(rule for rule, _ in verdicts)
    assert 10 <= dead <= 290, f"{dead} of 300 dead: the draws should hold both kinds"


def cell_search(tmp_path, strategy: dict, skip: bool, name: str) -> list[dict]:
    config = config_from_dict({"space": {"type": "rnn_cell", "base": 2, "skip_dead_cells": skip},
                               "evaluator": {"target": "tests.toys:cell_toy"}, "strategy": strategy,
                               "budget": {"children": 40}, "seed": 3})
    run_serial(config, tmp_path / name)
    store = ResultsStore(tmp_path / name / "results.sqlite")
    try:
        return [row.arch for row in store.children() if not row.cached]
    finally:
        store.close()


@pytest.mark.parametrize("strategy", [
    {"type": "random"},
    {"type": "evolution", "population": 10, "sample_size": 3},
    {"type": "reinforce", "policy": "lstm"},  # screens its samples after 10 children
])
def test_no_strategy_trains_a_dead_cell_unless_told_to(tmp_path, strategy):
    """A base-2 cell is dead about one time in three, so 40 children without the check hold some."""
    name = strategy["type"]
    kept = cell_search(tmp_path, strategy, skip=True, name=f"{name}-skip")
    assert len(kept) == 40 and not [a for a in kept if cell_is_dead(a)]
    trained = cell_search(tmp_path, strategy, skip=False, name=f"{name}-all")
    assert sum(cell_is_dead(a) for a in trained) >= 3


def test_sampling_ends_even_where_every_cell_is_dead():
    """With elem_mult the only combination and no sigmoid, every cell is dead: after its redraws
    the controller hands them over to train rather than loop."""
    from nasps.method.controller import Controller

    config = config_from_dict({"space": {"type": "rnn_cell", "base": 2, "combinations": ["elem_mult"],
                                         "activations": ["identity", "tanh"]},
                               "evaluator": {"target": "tests.toys:cell_toy"}, "strategy": {"type": "random"}})
    space = build_space(config.space)
    policy = build_policy(config.strategy, space.decisions())
    batch, archs = Controller(0, space, policy, config.strategy, 4, 0).sample(policy.initial_params(0))
    assert len(archs) == 4 and all(cell_is_dead(a.as_dict()) for a in archs)
