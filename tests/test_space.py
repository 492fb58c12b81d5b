"""The categorical space: decode/encode, immutable JSON values, canonical hashes."""

import dataclasses
import itertools
import json

import pytest

from nasps.config import config_from_dict
from nasps.spaces import Architecture, build_space
from tests.conftest import toy_config

NB201_OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


def nb201_space():
    decisions = [{"name": e, "choices": NB201_OPS} for e in ["e01", "e02", "e12", "e03", "e13", "e23"]]
    raw = {"space": {"type": "categorical", "decisions": decisions},
           "evaluator": {"type": "python", "target": "m:f"}}
    return build_space(config_from_dict(raw).space)


def test_nb201_cell_space_has_every_cell_once():
    space = nb201_space()
    assert [d.num_choices for d in space.decisions()] == [5] * 6
    hashes = {space.decode(a).hash for a in itertools.product(range(5), repeat=6)}
    assert len(hashes) == space.size == 15_625


def test_decode_encode_round_trip_and_json():
    space = build_space(toy_config().space)
    for actions in itertools.product(range(4), range(3), range(3), range(4)):
        arch = space.decode(actions)
        assert space.encode(arch) == list(actions)
        again = Architecture.from_value(arch.space, json.loads(json.dumps(arch.as_dict())))
        assert again == arch and again.hash == arch.hash
    assert space.decode([2, 1, 1, 2]).as_dict() == {"a": 2, "b": "y", "c": 0.5, "d": 3}


def test_hash_is_canonical_and_types_matter():
    a = Architecture.from_value("categorical", {"x": 1, "y": "z"})
    b = Architecture.from_value("categorical", {"y": "z", "x": 1})
    assert a == b and a.hash == b.hash
    assert Architecture.from_value("categorical", {"x": 1.0, "y": "z"}).hash != a.hash
    assert Architecture.from_value("conv", {"x": 1, "y": "z"}).hash != a.hash


def test_architecture_is_immutable_and_copies_out():
    arch = build_space(toy_config().space).decode([0, 0, 0, 0])
    value = arch.as_dict()
    value["a"] = 99
    assert arch.as_dict()["a"] == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.json_text = "{}"


def test_bad_actions_are_rejected():
    space = build_space(toy_config().space)
    with pytest.raises(ValueError, match="out of range"):
        space.decode([4, 0, 0, 0])
    with pytest.raises(ValueError, match="expected 4 actions"):
        space.decode([0, 0])
    with pytest.raises(ValueError):
        space.encode(Architecture.from_value("categorical", {"a": 0}))
