"""The config tree: every kind of bad input is named by its dotted key."""

import dataclasses

import pytest
import yaml

from nasps.config import Config, apply_override, config_from_dict, config_to_dict, describe, dump_config, load_config
from nasps.errors import ConfigError
from tests.conftest import TOY_SPACE, toy_config


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def base():
    return {"space": TOY_SPACE, "evaluator": {"type": "python", "target": "tests.toys:match_fraction"}}


def error_of(raw) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    return str(info.value)


def test_defaults_fill_in_and_values_are_typed():
    config = config_from_dict(base())
    assert config.strategy.type == "reinforce" and config.strategy.policy == "factorized"
    assert config.cluster.parameter_servers == 1 and config.budget.children == 100
    assert config.space.decisions[2].choices == (0.1, 0.5, 0.9)
    assert config.budget.sample_cap == 2000
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3  # frozen


def test_unknown_key_suggests_the_closest():
    raw = base() | {"strategy": {"type": "reinforce", "learning_rat": 0.1}}
    assert error_of(raw) == "strategy.learning_rat: unknown key (did you mean 'strategy.learning_rate'?)"
    assert "valid keys" in error_of(base() | {"zzz": 1})


def test_key_of_another_type_is_unknown():
    # `policy` belongs to reinforce; random search accepts only its own keys.
    msg = error_of(base() | {"strategy": {"type": "random", "policy": "factorized"}})
    assert msg.startswith("strategy.policy: unknown key")


@pytest.mark.parametrize("section, value, expected", [
    ({"budget": {"children": "ten"}}, None, "budget.children: must be an integer, got a string 'ten'"),
    ({"budget": {"children": 2.5}}, None, "budget.children: must be an integer, got a number 2.5"),
    ({"budget": {"children": True}}, None, "budget.children: must be an integer, got a boolean True"),
    ({"budget": {"children": 0}}, None, "budget.children: must be >= 1, got 0"),
    ({"strategy": {"learning_rate": 0}}, None, "strategy.learning_rate: must be > 0.0, got 0.0"),
    ({"strategy": {"baseline_decay": 1.0}}, None, "strategy.baseline_decay: must be < 1.0, got 1.0"),
    ({"strategy": {"type": "annealing"}}, None,
     "strategy.type: must be one of reinforce, random, evolution; got 'annealing'"),
    ({"strategy": {"policy": "transformer"}}, None,
     "strategy.policy: must be one of factorized, lstm; got 'transformer'"),
    ({"strategy": {"lstm": {"hidden_size": 0}}}, None, "strategy.lstm.hidden_size: must be >= 1, got 0"),
    ({"strategy": {"lstm": {"tanh_constant": -1}}}, None,
     "strategy.lstm.tanh_constant: must be > 0.0, got -1.0"),
    ({"cluster": {"cpus_per_child": -1}}, None, "cluster.cpus_per_child: must be >= 0.0, got -1.0"),
    ({"cluster": {"gpus_per_child": 1.5}}, None, "cluster.gpus_per_child: above 1 it must be a whole number, got 1.5"),
    ({"cluster": [1, 2]}, None, "cluster: must be a mapping, got a list"),
    ({"seed": -1}, None, "seed: must be >= 0, got -1"),
    ({"strategy": {"adam_betas": [0.9]}}, None, "strategy.adam_betas: must be a list of 2 values, got 1"),
    ({"strategy": {"adam_betas": [0.9, 1.5]}}, None, "strategy.adam_betas[1]: must be in [0, 1), got 1.5"),
    ({"strategy": {"learning_rate": 10 ** 400}}, None,
     "strategy.learning_rate: must be a finite number, got an integer too large for one"),
])
def test_wrong_types_and_ranges_name_the_key(section, value, expected):
    assert error_of(base() | section) == expected


def test_space_errors_name_the_decision():
    space = {"type": "categorical", "decisions": [{"name": "a", "choices": []}]}
    assert error_of(base() | {"space": space}) == "space.decisions[0].choices: needs at least 1 item(s), got 0"
    space = {"type": "categorical", "decisions": [{"name": "a", "choices": [1, 1]}]}
    assert error_of(base() | {"space": space}) == "space.decisions[0].choices: 1 is listed twice"
    space = {"type": "categorical", "decisions": [{"name": "a", "choices": [1]}, {"name": "a", "choices": [2]}]}
    assert error_of(base() | {"space": space}) == "space.decisions: the name 'a' is used twice"
    space = {"type": "categorical", "decisions": [{"choices": [1]}]}
    assert error_of(base() | {"space": space}).startswith("space.decisions[0].name: missing required key")
    space = {"type": "categorical", "decisions": [{"name": "a", "choices": [[1, 2]]}]}
    assert error_of(base() | {"space": space}).startswith("space.decisions[0].choices[0]: must be")


def test_missing_sections_and_bad_target():
    assert error_of({"space": TOY_SPACE}).startswith("evaluator: missing required key")
    raw = base() | {"evaluator": {"type": "python", "target": "no colon"}}
    assert error_of(raw) == "evaluator.target: 'no colon' is not of the form 'package.module:function'"


@pytest.mark.parametrize("text, expected", [
    ("", "the file is empty"),
    ("a: [1, 2", "not valid YAML at line"),
    ("- 1\n- 2\n", "must be a mapping of keys to values, got a list"),
    ("!!python/object/apply:os.system ['true']", "not valid YAML"),
])
def test_bad_files(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value)


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_are_typed_and_nested(tmp_path):
    path = write(tmp_path, yaml.safe_dump(base()))
    config = load_config(path, ["budget.children=7", "strategy.learning_rate=1e-3",
                                "cluster.runtime_env={env_vars: {A: b}}", "strategy.failure_reward=-1"])
    assert config.budget.children == 7
    assert config.strategy.learning_rate == 0.001
    assert config.cluster.runtime_env == {"env_vars": {"A": "b"}}
    assert config.strategy.failure_reward == -1.0
    with pytest.raises(ConfigError, match="budget.childrn: unknown key"):
        load_config(path, ["budget.childrn=3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["budget.children"])
    raw = base()
    with pytest.raises(ConfigError, match="seed is not a section"):
        apply_override(raw | {"seed": 1}, "seed.x=1")


def test_resolved_config_round_trips(tmp_path):
    config = toy_config(budget={"children": 5, "max_samples": 50})
    again = config_from_dict(yaml.safe_load(dump_config(config)))
    assert again == config
    assert config_to_dict(again)["space"]["decisions"][0] == {"name": "a", "choices": [0, 1, 2, 3]}


def test_every_key_is_documented():
    rows = describe(Config)
    keys = {k for k, _, _ in rows}
    for contract in ["space.type", "space.decisions", "strategy.type", "evaluator.type",
                     "cluster.parameter_servers", "cluster.replicas", "cluster.children_per_replica",
                     "cluster.cpus_per_child", "cluster.gpus_per_child", "budget.children", "seed"]:
        assert contract in keys
    assert all(doc for _, _, doc in rows)
