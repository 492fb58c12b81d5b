"""`nasps schema`: the JSON Schema editors check config files with, made from the config dataclasses."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from nasps import cli
from nasps.config import Config, FinalTrainingConfig, json_schema
from tests.test_bad_input import SEARCH_BASES, SEARCH_CASES, TRAIN_BASES, TRAIN_CASES

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
# JSON has no NaN or infinity: a schema cannot refuse what a JSON document cannot hold.
NOT_JSON = ("wrong type nan", "wrong type inf")


def validator(root):
    schema = json_schema(root)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_is_valid_under_the_schema(path):
    errors = [e.message for e in validator(Config).iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


@pytest.mark.parametrize("root, bases, cases", [
    (Config, SEARCH_BASES, SEARCH_CASES),
    (FinalTrainingConfig, {k: raw for k, (_, raw) in TRAIN_BASES.items()}, TRAIN_CASES)], ids=["search", "train"])
def test_the_schema_takes_the_valid_corpus_and_refuses_its_bad_cases(root, bases, cases):
    check = validator(root)
    assert [name for name, raw in bases.items() if not check.is_valid(raw)] == []
    accepted = [c.id for c in cases if not c.id.endswith(NOT_JSON) and check.is_valid(c.raw)]
    assert accepted == []
    assert len(cases) > 300  # the corpus is there: every key's wrong types, ranges, typos


def test_nasps_schema_prints_it(capsys):
    assert cli.main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(json_schema(Config)))
    assert printed["properties"]["budget"] == {"$ref": "#/$defs/BudgetConfig", "description": "when to stop",
                                               "default": printed["properties"]["budget"]["default"]}
    children = printed["$defs"]["BudgetConfig"]["properties"]["children"]
    assert children["type"] == "integer" and children["minimum"] == 1 and children["description"]
    assert cli.main(["schema", "--final-training"]) == 0
    assert "grid" in json.loads(capsys.readouterr().out)["properties"]
