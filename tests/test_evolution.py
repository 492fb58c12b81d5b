"""Regularised (aging) evolution: the population, the mutation, the tournament, every space, a
toy objective against random search, and a population that survives a resume on Ray."""

import statistics

import pytest
import torch

from nasps.config import ConfigError, config_from_dict
from nasps.evaluators import ChildResult
from nasps.method.controller import Controller
from nasps.method.evolution import AgingEvolution
from nasps.method.serial import run_serial
from nasps.policies import build_policy
from nasps.runtime.driver import run_search
from nasps.spaces import Architecture, Decision, build_space
from nasps.state.ledger import Ledger, Member
from nasps.state.rundir import open_for_resume, open_new_store
from nasps.state.store import ResultsStore
from tests.conftest import TOY_SPACE, toy_config

EVOLUTION = {"type": "evolution", "population": 5, "sample_size": 2}


def decisions(*sizes):
    return [Decision(f"d{i}", n, "x") for i, n in enumerate(sizes)]


def distance(a, b) -> int:
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


def child(value: dict, reward: float, status: str = "ok") -> tuple[Architecture, ChildResult]:
    result = ChildResult(status=status, reward=reward if status == "ok" else None, metrics={}, error=None,
                         worker="w", started_at=0.0, finished_at=1.0)
    return Architecture.from_value("categorical", value), result


def test_the_oldest_member_leaves_not_the_worst(tmp_path):
    ledger = Ledger(open_new_store(tmp_path / "run", toy_config()), 10, 100, recent=3)
    archs = [child({"a": i}, reward) for i, reward in enumerate([0.9, 0.1, 0.5])]
    archs.append(child({"a": 3}, 0.0, status="failed"))  # no reward: not a member
    archs.append(child({"a": 4}, 0.2))
    ledger.admit([a for a, _ in archs])
    ledger.record_all([(a, r, 0) for a, r in archs], 0)
    ledger.admit([archs[0][0]])
    ledger.record_cached(archs[0][0], 0, 0)  # a repeat is not trained: not a member either
    assert list(ledger.recent) == [Member({"a": 1}, 0.1), Member({"a": 2}, 0.5), Member({"a": 4}, 0.2)]
    # A replica asks for what it has not seen: after the first 2 of the 4 that ever joined.
    assert ledger.recent_since(2) == ((Member({"a": 2}, 0.5), Member({"a": 4}, 0.2)), 4)
    assert ledger.recent_since(0) == (tuple(ledger.recent), 4)  # the oldest has left
    ledger.close()
    # The population is the store's: a ledger rebuilt from it (a resume, a restarted recorder) has it.
    rebuilt = Ledger(ResultsStore(tmp_path / "run" / "results.sqlite"), 10, 100, recent=3)
    assert rebuilt.recent_end == 4
    assert list(rebuilt.recent) == [Member({"a": 1}, 0.1), Member({"a": 2}, 0.5), Member({"a": 4}, 0.2)]
    rebuilt.close()


def test_a_mutation_changes_exactly_one_decision_to_another_value():
    evolution = AgingEvolution(decisions(1, 2, 5, 3), population=4, sample_size=2)
    generator = torch.Generator().manual_seed(0)
    seen = {i: set() for i in range(4)}
    for _ in range(400):
        parent = tuple(int(torch.randint(n, (1,), generator=generator)) for n in (1, 2, 5, 3))
        mutant = evolution.mutate(parent, generator)
        changed = [i for i in range(4) if mutant[i] != parent[i]]
        assert len(changed) == 1 and changed[0] != 0  # a one-choice decision has nothing to change to
        assert 0 <= mutant[changed[0]] < (1, 2, 5, 3)[changed[0]]
        seen[changed[0]].add(mutant[changed[0]])
    assert seen == {0: set(), 1: {0, 1}, 2: {0, 1, 2, 3, 4}, 3: {0, 1, 2}}  # every other value comes up


def test_random_until_the_population_is_full_then_mutants_of_the_tournament_winner():
    evolution = AgingEvolution(decisions(1000, 1000, 1000), population=4, sample_size=4)
    generator = torch.Generator().manual_seed(0)
    best = (7, 7, 7)
    members = [(best, 0.9), ((1, 2, 3), 0.2), ((4, 5, 6), 0.5)]
    # Three members of four: random proposals, not one mutation away from any member.
    assert all(min(distance(p, m) for m, _ in members) > 1 for p in evolution.propose(members, 20, 3, generator))
    # Full, and the tournament draws all four: every proposal is the best member, mutated once.
    members.append(((9, 9, 9), 0.1))
    assert all(distance(p, best) == 1 for p in evolution.propose(members, 20, 3, generator))
    # Only the last `population` children are members: the oldest, the best here, has left.
    members.append(((5, 5, 5), 0.3))
    proposals = evolution.propose(members, 20, 3, generator)
    assert all(distance(p, (4, 5, 6)) == 1 for p in proposals)


def test_a_tournament_of_a_few_favours_the_better_members():
    evolution = AgingEvolution(decisions(1000, 1000), population=10, sample_size=3)
    members = [((i, i), i / 10) for i in range(10)]  # member i has reward i / 10
    generator = torch.Generator().manual_seed(1)
    proposals = evolution.propose(members, 2000, 2, generator)
    parents = [min(range(10), key=lambda i: distance(p, (i, i))) for p in proposals]
    # The parent is the best of 3 drawn out of 10: member i wins with chance C(i, 2) / C(10, 3).
    for i in range(10):
        assert parents.count(i) / 2000 == pytest.approx(i * (i - 1) / 2 / 120, abs=0.03)


def test_a_deeper_curriculum_step_keeps_the_parents_prefix():
    evolution = AgingEvolution(decisions(1000, 1000, 1000, 1000, 1000), population=2, sample_size=2)
    generator = torch.Generator().manual_seed(0)
    members = [((1, 2, 3), 0.5), ((4, 5, 6), 0.9)]
    for proposal in evolution.propose(members, 50, 5, generator):
        assert len(proposal) == 5 and distance(proposal[:3], (4, 5, 6)) <= 1


@pytest.mark.parametrize("space", [
    TOY_SPACE,
    {"type": "conv", "skip_connections": True, "curriculum": {"start_depth": 2, "add_layers": 1,
                                                              "every_children": 5, "max_depth": 4}},
    {"type": "rnn_cell", "base": 4},
])
def test_evolution_proposes_valid_architectures_in_every_space(space):
    config = config_from_dict({"space": space, "evaluator": {"target": "a:b"}, "strategy": EVOLUTION})
    built = build_space(config.space)
    controller = Controller(0, built, build_policy(config.strategy, built.decisions()), config.strategy, 4, 0)
    for samples in range(0, 30, 4):
        _, archs = controller.sample(torch.zeros(0), samples)
        for arch in archs:
            assert built.decode(built.encode(arch)) == arch  # a valid architecture of the space
            assert arch.depth == built.depth_at(samples)
        controller.observe([Member(a.as_dict(), float(k)) for k, a in enumerate(archs)], samples + 4)


def test_a_sample_size_above_the_population_is_refused():
    with pytest.raises(ConfigError, match="strategy.sample_size"):
        toy_config(strategy={"type": "evolution", "population": 3, "sample_size": 4})


def best_after(strategy: dict, seed: int, tmp_path, children: int = 30) -> float:
    config = toy_config(strategy=strategy, budget={"children": children, "max_samples": 3000}, seed=seed)
    run_serial(config, tmp_path / f"{strategy['type']}-{seed}")
    store = ResultsStore(tmp_path / f"{strategy['type']}-{seed}" / "results.sqlite")
    try:
        return max(r.reward for r in store.children() if not r.cached)
    finally:
        store.close()


def test_evolution_beats_random_search_on_the_toy(tmp_path):
    """30 children of the 144 toy architectures, over 20 seeds: random search finds the one best
    architecture about one time in ten (2 of these 20); evolution climbs to it from its
    population more than half of the time (12)."""
    evolution = [best_after(EVOLUTION, seed, tmp_path) for seed in range(20)]
    random = [best_after({"type": "random"}, seed, tmp_path) for seed in range(20)]
    assert statistics.fmean(evolution) >= statistics.fmean(random) + 0.1
    assert evolution.count(1.0) >= 10 and random.count(1.0) <= 4


WIDE_SPACE = {"type": "categorical", "decisions": TOY_SPACE["decisions"] + [
    {"name": "e", "choices": list(range(1000))}, {"name": "f", "choices": list(range(1000))}]}


def test_evolution_on_ray_keeps_its_population_across_a_resume(ray_session, tmp_path):
    """Two replicas, then a resume with a larger budget. The first children are random; every
    child of the resumed run is one decision away from an earlier one (its parent), from its
    very first, whose parents come from the store. (Two random children of this space are
    that close with a chance of about 1e-6.)"""
    config = toy_config(space=WIDE_SPACE, strategy=EVOLUTION, budget={"children": 12},
                        cluster={"replicas": 2, "children_per_replica": 2, "cpus_per_child": 0})
    first = run_search(config, tmp_path / "run")
    assert first.shard_versions == []  # no policy to serve
    run_search(open_for_resume(tmp_path / "run", ["budget.children=24"]), tmp_path / "run", resume=True)
    store = ResultsStore(tmp_path / "run" / "results.sqlite")
    try:
        trained = [r for r in store.children() if not r.cached]
    finally:
        store.close()
    space = build_space(config.space)
    actions = [space.encode(Architecture.from_value("categorical", r.arch)) for r in trained]
    assert len(trained) == 24 and all(r.status == "ok" for r in trained)
    mutants = {k for k in range(len(actions)) if any(distance(actions[k], actions[j]) == 1 for j in range(k))}
    assert not mutants & set(range(5))  # random until the population was full
    assert set(range(12, 24)) <= mutants  # the resumed run started from the stored population
