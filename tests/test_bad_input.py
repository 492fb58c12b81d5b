"""Bad input of every kind: one line on stderr naming the key, file or value, exit status 2, no
traceback, and nothing already written (results, configs, checkpoints) changed by it.

The per-key cases are generated from the config dataclasses (the tree ``describe()`` documents):
for every key of every section variant, an unknown sibling key, values of the wrong type, values
just outside the key's range and, for a required key, its absence. They run in-process through
``nasps.cli.main`` (a subprocess per case would take minutes); a few representative cases run as
real subprocesses to prove the command's own exit status and stderr.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import shutil
import sqlite3
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest
import yaml

from nasps import cli
from nasps.config import Config, FinalTrainingConfig, config_from_dict, describe, load_config, yaml_fields
from tests.conftest import NASPS, ROOT, TOY_SPACE, block_ray, run_cli

DATA = "@DATA@"  # stands for the module's data folder (files that pass the dataset checks)

PYTHON = {"type": "python", "target": "tests.toys:match_fraction"}
SEARCH = {"strategy": {"type": "reinforce", "policy": "lstm", "learning_rate": 0.2,
                       "lstm": {"hidden_size": 8, "temperature": 2.0, "tanh_constant": 2.5}},
          "cluster": {"cpus_per_child": 0, "runtime_env": {}}, "budget": {"children": 4, "max_samples": 40},
          "logging": {"tensorboard": False}, "checkpoint": {"every_s": 5.0, "every_updates": 2}, "seed": 0}
CONV_SPACE = {"type": "conv", "filter_heights": [1, 3], "filter_widths": [1, 3], "num_filters": [4, 8],
              "strides": [1], "layer_types": ["conv", "max_pool"], "skip_connections": True,
              "hyperparameters": [{"name": "learning_rate", "choices": [0.1, 0.05]}],
              "curriculum": {"start_depth": 2, "add_layers": 1, "every_children": 4, "max_depth": 4}}
RNN_SPACE = {"type": "rnn_cell", "base": 4, "combinations": ["add", "elem_mult"], "activations": ["tanh", "relu"],
             "hyperparameters": [{"name": "dropout", "choices": [0.1, 0.2]}]}
IMAGES = {"type": "image_classification", "epochs": 1, "batch_size": 16, "validation_size": 100}
TEXT = {"type": "language_model", "epochs": 1, "batch_size": 4, "max_tokens_per_epoch": 1000}
DATASETS = {"digits": {"type": "digits"},
            "cifar10": {"type": "cifar10", "root": f"{DATA}/cifar10", "download": False},
            "image_folder": {"type": "image_folder", "root": f"{DATA}/folder", "image_size": 8, "grayscale": True},
            "ptb": {"type": "ptb", "root": f"{DATA}/ptb", "level": "word"},
            "text": {"type": "text", "path": f"{DATA}/text.txt", "validation_fraction": 0.2}}

# Valid configs that between them hold every section variant. Each key is tested in the first one
# that has it; `random` adds the random strategy and `rnn_python` a recurrent space scored by Python.
EARLY_STOPPING = {"grace_epochs": 2, "keep_quantile": 0.5, "min_children": 5}
MLFLOW = {"tracking_uri": "http://127.0.0.1:5000", "experiment": "nasps"}  # validate sends nothing to it
SEARCH_BASES = {
    "categorical": {"space": TOY_SPACE, "evaluator": PYTHON, **SEARCH},
    "random": {"space": TOY_SPACE, "evaluator": PYTHON, **SEARCH, "strategy": {"type": "random"},
               "logging": {"tensorboard": False, "mlflow": MLFLOW}},
    "evolution": {"space": TOY_SPACE, "evaluator": {**PYTHON, "early_stopping": EARLY_STOPPING}, **SEARCH,
                  "strategy": {"type": "evolution"}},
    "conv_digits": {"space": CONV_SPACE, "evaluator": {**IMAGES, "dataset": DATASETS["digits"]}, **SEARCH},
    "conv_cifar10": {"space": CONV_SPACE, "evaluator": {**IMAGES, "dataset": DATASETS["cifar10"]}, **SEARCH},
    "conv_folder": {"space": CONV_SPACE, "evaluator": {**IMAGES, "dataset": DATASETS["image_folder"]}, **SEARCH},
    "rnn_ptb": {"space": RNN_SPACE, "evaluator": {**TEXT, "dataset": DATASETS["ptb"]}, **SEARCH},
    "rnn_text": {"space": RNN_SPACE, "evaluator": {**TEXT, "dataset": DATASETS["text"]}, **SEARCH},
}
# `nasps train --config`: its own root (FinalTrainingConfig), against a conv or an rnn_cell run.
TRAIN = {"epochs": 1, "width_multiplier": 1.0, "grid": {"learning_rate": [0.1, 0.05]}, "cpus_per_trial": 1.0,
         "gpus_per_trial": 0.0, "weights_format": "state_dict", "seed": 0}
TRAIN_BASES = {
    "train_digits": ("conv", {**TRAIN, "evaluator": {**IMAGES, "dataset": DATASETS["digits"]}}),
    "train_cifar10": ("conv", {**TRAIN, "evaluator": {**IMAGES, "dataset": DATASETS["cifar10"]}}),
    "train_folder": ("conv", {**TRAIN, "evaluator": {**IMAGES, "dataset": DATASETS["image_folder"]}}),
    "train_ptb": ("rnn", {**TRAIN, "grid": {"dropout": [0.1]}, "evaluator": {**TEXT, "dataset": DATASETS["ptb"]}}),
    "train_text": ("rnn", {**TRAIN, "grid": {"dropout": [0.1]},
                           "evaluator": {**TEXT, "dataset": DATASETS["text"], "early_stopping": EARLY_STOPPING}}),
}


# --------------------------------------------------------------------------- generating the cases


@dataclass(frozen=True)
class Case:
    """One bad config: ``raw`` (with DATA placeholders), and what its one line must contain."""

    id: str
    root: str                 # "search" or "train"
    base: str                 # the SEARCH_BASES / TRAIN_BASES entry it was made from
    raw: Any
    key: str                  # the dotted key at fault (indexed: space.decisions[0].name)
    needles: tuple[str, ...]  # further text the line must contain


def _strip_none(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType):
        args = get_args(tp)
        rest = tuple(a for a in args if a is not type(None))
        return (rest[0] if len(rest) == 1 else Union[rest]), len(rest) < len(args)
    return tp, False


def _is_section(tp: Any) -> bool:
    if dataclasses.is_dataclass(tp):
        return True
    return get_origin(tp) in (Union, types.UnionType) and all(dataclasses.is_dataclass(a) for a in get_args(tp))


def wrong_values(tp: Any) -> list[tuple[str, Any]]:
    """Values of the wrong type for a field of type ``tp`` (null too, unless the field takes it)."""
    t, nullable = _strip_none(tp)
    null = [] if nullable else [("null", None)]
    origin = get_origin(t)
    if _is_section(t):
        return [("list", [1]), ("number", 3), *null]
    if origin is Literal:
        return [("number", 7), ("list", [get_args(t)[0]]), *null]
    if t is bool:
        return [("string", "yes"), ("number", 1), *null]
    if t is int:
        return [("string", "many"), ("fraction", 2.5), ("boolean", True), *null]
    if t is float:
        return [("string", "fast"), ("boolean", True), ("list", [1.0]), ("nan", math.nan), ("inf", math.inf), *null]
    if t is str:
        return [("number", 5), ("list", ["a"]), *null]
    if origin is tuple:
        args = get_args(t)
        out = [("mapping", {"a": 1}), ("string", "abc"), *null]
        if len(args) == 2 and args[1] is Ellipsis:
            out.append(("bad item", [wrong_values(args[0])[0][1]]))
        else:
            out += [("short", list(range(len(args) - 1))), ("bad item", ["x"] * len(args))]
        return out
    if origin is dict:
        return [("list", [1, 2]), ("string", "abc"), *null]
    if origin in (Union, types.UnionType):  # a choice: boolean, integer, number or string
        return [("mapping", {"a": 1}), ("list", [1])]
    raise AssertionError(f"no wrong values for {tp!r}: add them here")


def out_of_range(tp: Any, meta: dict) -> list[tuple[str, Any, list[str]]]:
    """(label, value just outside the range, text the line must contain) for each bound."""
    t, _ = _strip_none(tp)
    out = []
    if "min" in meta:
        out.append(("below min", meta["min"] - 1 if t is int else meta["min"] - 0.001, [f">= {meta['min']}"]))
    if "max" in meta:
        out.append(("above max", meta["max"] + 1 if t is int else meta["max"] + 0.001, [f"<= {meta['max']}"]))
    if "above" in meta:
        out.append(("at exclusive lower bound", meta["above"], [f"> {meta['above']}"]))
    if "below" in meta:
        out.append(("at exclusive upper bound", meta["below"], [f"< {meta['below']}"]))
    if "min_items" in meta:
        out.append(("too few items", [], [f"at least {meta['min_items']}"]))
    if get_origin(t) is Literal:
        allowed = [str(a) for a in get_args(t)]
        # A `type` picks the section's variant: the line lists the variants, not this one's name.
        out.append(("not allowed", "bogus", ["must be one of"] + ([] if len(allowed) == 1 else allowed)))
    return out


def _fields(obj: Any, prefix: str, path: tuple):
    """(dotted key, raw path of the section, owner class, field, type) for every field under ``obj``."""
    hints = get_type_hints(type(obj))
    for f in yaml_fields(type(obj)):
        key = f"{prefix}.{f.name}" if prefix else f.name
        yield key, path, type(obj), f, hints[f.name]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _fields(value, key, path + (f.name,))
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            yield from _fields(value[0], f"{key}[0]", path + (f.name, 0))


def _section(raw: dict, path: tuple) -> dict:
    node = raw
    for part in path:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    return node


def _with(raw: dict, path: tuple, name: str, value: Any = None, *, delete: bool = False) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(raw))  # a deep copy
    section = _section(raw, path)
    if delete:
        del section[name]
    else:
        section[name] = value
    return raw


def described(key: str) -> str:
    return re.sub(r"\[\d+\]", "[]", key)


def generate(root_name: str, root: type, bases: dict[str, dict]) -> list[Case]:
    cases, seen = [], set()
    for base_name, raw in bases.items():
        for key, path, owner, f, tp in _fields(config_from_dict(raw, root), "", ()):
            if (described(key), owner) in seen:
                continue
            seen.add((described(key), owner))
            # (kind, bad config, text the line must contain, the key at fault)
            bad = [("unknown sibling", _with(raw, path, f.name + "_typo", 1), [f"did you mean '{key}'"],
                    f"{key}_typo")]
            bad += [(f"wrong type {label}", _with(raw, path, f.name, value),
                     ["must be a finite number" if label in ("nan", "inf") else "must"], key)
                    for label, value in wrong_values(tp)]
            if not _is_section(tp):
                bad += [(label, _with(raw, path, f.name, value), needles, key)
                        for label, value, needles in out_of_range(tp, f.metadata)]
            if f.metadata.get("required") and f.name in _section(yaml.safe_load(yaml.safe_dump(raw)), path):
                bad.append(("missing", _with(raw, path, f.name, delete=True), ["missing required key"], key))
            cases += [Case(f"{root_name}:{described(key)}@{owner.__name__}:{kind}", root_name, base_name, config,
                           at, tuple(needles)) for kind, config, needles, at in bad]
    return cases


SEARCH_CASES = generate("search", Config, SEARCH_BASES)
TRAIN_CASES = generate("train", FinalTrainingConfig, {k: raw for k, (_, raw) in TRAIN_BASES.items()})
TRAIN_RUN = {k: run for k, (run, _) in TRAIN_BASES.items()}


def _search(base: str, **changes) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(SEARCH_BASES[base]))
    for dotted, value in changes.items():
        *parents, name = dotted.split("__")
        _section(raw, tuple(int(p) if p.isdigit() else p for p in parents))[name] = value
    return raw


# Ranges that a section's own check() enforces (choices, tree sizes, the depth curriculum...),
# plus keys that must agree with each other, and evaluator targets that do not import.
CHECKED = [
    ("categorical", {"space__decisions__0__name": "1st"}, "space.decisions[0].name", ["not a valid decision name"]),
    ("categorical", {"space__decisions__0__choices": [1, 1]}, "space.decisions[0].choices", ["listed twice"]),
    ("categorical", {"space__decisions__0__choices": [1.0, math.nan]}, "space.decisions[0].choices[1]",
     ["must be a finite number"]),
    ("categorical", {"space__decisions__1__name": "a"}, "space.decisions", ["'a' is used twice"]),
    ("conv_digits", {"space__filter_heights": [0, 3]}, "space.filter_heights[0]", [">= 1"]),
    ("conv_digits", {"space__num_filters": [4, 4]}, "space.num_filters", ["listed twice"]),
    ("conv_digits", {"space__strides": [-1]}, "space.strides[0]", [">= 1"]),
    ("conv_digits", {"space__layer_types": ["conv", "dense"]}, "space.layer_types[1]",
     ["conv, max_pool, avg_pool"]),
    ("conv_digits", {"space__curriculum": {"start_depth": 9, "add_layers": 1, "max_depth": 4}},
     "space.curriculum.start_depth", ["max_depth 4"]),
    ("conv_digits", {"space__filter_heights": [3], "space__filter_widths": [3], "space__num_filters": [4],
                     "space__layer_types": ["conv"], "space__skip_connections": False},
     "space.curriculum.add_layers", ["set it to 0"]),
    ("conv_digits", {"space__hyperparameters": [{"name": "dropout", "choices": [0.1]}]},
     "space.hyperparameters[0].name", ["not a trainer setting"]),
    ("conv_digits", {"space__hyperparameters": [{"name": "learning_rate", "choices": [0.1, -0.1]}]},
     "space.hyperparameters[0].choices[1]", ["> 0.0"]),
    ("conv_digits", {"space__hyperparameters": [{"name": "epochs", "choices": ["many"]}]},
     "space.hyperparameters[0].choices[0]", ["must be an integer"]),
    ("conv_digits", {"space__hyperparameters": [{"name": "lr", "choices": [1]}, {"name": "lr", "choices": [2]}]},
     "space.hyperparameters", ["used twice"]),
    ("rnn_ptb", {"space__base": 3}, "space.base", ["2, 4, 8, 16"]),
    ("rnn_ptb", {"space__combinations": ["add", "sub"]}, "space.combinations[1]", ["add, elem_mult, max"]),
    ("rnn_ptb", {"space__activations": ["tanh", "gelu"]}, "space.activations[1]", ["identity, tanh"]),
    ("rnn_ptb", {"space__activations": ["tanh", "tanh"]}, "space.activations", ["listed twice"]),
    ("rnn_ptb", {"space__hyperparameters": [{"name": "momentum", "choices": [0.9]}]},
     "space.hyperparameters[0].name", ["not a trainer setting"]),
    ("rnn_ptb", {"space__hyperparameters": [{"name": "dropout", "choices": [1.0]}]},
     "space.hyperparameters[0].choices[0]", ["< 1.0"]),
    ("categorical", {"strategy__adam_betas": [1.0, 0.999]}, "strategy.adam_betas[0]", ["[0, 1)"]),
    ("categorical", {"strategy__adam_betas": [0.9, -0.1]}, "strategy.adam_betas[1]", ["[0, 1)"]),
    ("categorical", {"cluster__gpus_per_child": 1.5}, "cluster.gpus_per_child", ["whole number"]),
    ("categorical", {"evaluator__target": "tests.toys.match_fraction"}, "evaluator.target",
     ["'package.module:function'"]),
    ("categorical", {"evaluator__target": "nowhere_at_all:fn"}, "evaluator.target", ["cannot import module"]),
    ("categorical", {"evaluator__target": "tests.toys:nope"}, "evaluator.target", ["no attribute 'nope'"]),
    ("categorical", {"evaluator__target": "tests.toys:TARGET"}, "evaluator.target", ["not callable"]),
    ("categorical", {"evaluator": {**IMAGES, "dataset": {"type": "digits"}}}, "evaluator.type",
     ["trains conv networks"]),
    ("conv_digits", {"evaluator": {**TEXT, "dataset": DATASETS["ptb"]}}, "evaluator.type",
     ["trains rnn_cell networks"]),
    ("conv_digits", {"evaluator__dataset": DATASETS["ptb"]}, "evaluator.dataset.type", ["digits, cifar10"]),
    ("rnn_ptb", {"evaluator__dataset": {"type": "digits"}}, "evaluator.dataset.type", ["ptb, text"]),
    ("categorical", {"space__decisions": [{"name": "a", "choices": [1]}, 5]}, "space.decisions[1]",
     ["must be a mapping"]),
    ("categorical", {"cluster__runtime_env": {1: "x"}}, "cluster.runtime_env", ["keys must be strings"]),
    ("random", {"logging__mlflow__tracking_uri": " "}, "logging.mlflow.tracking_uri", ["must not be empty"]),
    ("random", {"logging__mlflow__experiment": ""}, "logging.mlflow.experiment", ["must not be empty"]),
]


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Just enough files for each dataset's availability check."""
    root = tmp_path_factory.mktemp("data")
    (root / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    (root / "cifar10" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    for name in ("cats", "dogs"):
        (root / "folder" / name).mkdir(parents=True)
    (root / "ptb").mkdir()
    for split in ("train", "valid", "test"):
        (root / "ptb" / f"ptb.{split}.txt").write_text("the cat sat on the mat\n" * 20)
    (root / "text.txt").write_text("a plain text file, modelled character by character. " * 20)
    return root


def _fill(value: Any, data: Path) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, data) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, data) for v in value]
    if isinstance(value, str) and value.startswith(DATA):
        return str(data) + value[len(DATA):]
    return value


def write(tmp_path: Path, raw: Any, data: Path, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(_fill(raw, data), sort_keys=False))
    return path


def _search_run(tmp: Path, name: str, space: dict, target: str, children: int = 4) -> Path:
    from nasps.method.serial import run_serial
    config = config_from_dict({"space": space, "evaluator": {"type": "python", "target": target},
                               "strategy": {"type": "random"}, "cluster": {"cpus_per_child": 0},
                               "budget": {"children": children, "max_samples": 100 * children},
                               "logging": {"tensorboard": False}})
    run_serial(config, tmp / name)
    return tmp / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Finished searches (in-process, a fraction of a second each) to train, report and export."""
    tmp = tmp_path_factory.mktemp("runs")
    conv = {"type": "conv", "num_filters": [4, 8], "curriculum": {"start_depth": 2, "add_layers": 0}}
    return {"conv": _search_run(tmp, "conv", conv, "tests.toys:conv_toy"),
            "rnn": _search_run(tmp, "rnn", {"type": "rnn_cell", "base": 4}, "tests.toys:cell_toy"),
            "categorical": _search_run(tmp, "categorical", TOY_SPACE, "tests.toys:match_fraction")}


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    block_ray(monkeypatch)


def assert_one_line(status: int, err: str, *needles: str) -> str:
    assert status == 2, f"exit status {status}, stderr: {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def names_key(line: str, key: str) -> bool:
    """The line names ``key`` itself (or one of its items, or its type) as the thing at fault."""
    return re.search(rf"(^|: |--set ){re.escape(key)}(\[\d+\])*(\.type)?: ", line.removeprefix("nasps: error: ")) \
        is not None


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``: what nothing may change."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def nasps(*args) -> subprocess.CompletedProcess:
    return subprocess.run(NASPS + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- the generated corpus


def test_the_corpus_covers_every_documented_key():
    for root, cases in ((Config, SEARCH_CASES), (FinalTrainingConfig, TRAIN_CASES)):
        tested = {described(c.key) for c in cases}
        documented = {key for key, _, _ in describe(root)}
        assert documented <= tested, f"keys with no bad-input case: {sorted(documented - tested)}"
    assert len(SEARCH_CASES) + len(TRAIN_CASES) > 600


def test_describe_says_required_only_of_required_keys():
    """`(required)` in describe() (the README's table) only for a key a config must give."""
    for root, bases in ((Config, SEARCH_BASES), (FinalTrainingConfig, {k: r for k, (_, r) in TRAIN_BASES.items()})):
        required = {described(key) for raw in bases.values()
                    for key, _, _, f, _ in _fields(config_from_dict(raw, root), "", ()) if f.metadata.get("required")}
        wrong = [key for key, default, _ in describe(root) if default == "(required)" and key not in required]
        assert not wrong, f"describe() says (required) of keys that have a default: {wrong}"


@pytest.mark.parametrize("name", list(SEARCH_BASES))
def test_every_search_base_is_valid(capsys, tmp_path, data, name):
    status, err = run_cli(capsys, "validate", write(tmp_path, SEARCH_BASES[name], data))
    assert status == 0, err


@pytest.mark.parametrize("name", list(TRAIN_BASES))
def test_every_train_base_is_valid(tmp_path, data, runs, name):
    from nasps.training.final import prepare
    run, raw = TRAIN_BASES[name]
    training = load_config(write(tmp_path, raw, data), root=FinalTrainingConfig)
    assert prepare(str(runs[run]), training).trials


@pytest.mark.parametrize("case", SEARCH_CASES, ids=lambda c: c.id)
def test_validate_rejects_each_bad_key(capsys, tmp_path, data, case):
    path = write(tmp_path, case.raw, data)
    line = assert_one_line(*run_cli(capsys, "validate", path), str(path), *case.needles)
    assert names_key(line, case.key), f"{case.key} is not named as the key at fault: {line!r}"


@pytest.mark.parametrize("case", TRAIN_CASES, ids=lambda c: c.id)
def test_train_rejects_each_bad_key(capsys, tmp_path, data, runs, case):
    path = write(tmp_path, case.raw, data)
    before = fingerprint(runs[TRAIN_RUN[case.base]])
    line = assert_one_line(*run_cli(capsys, "train", "--arch", runs[TRAIN_RUN[case.base]], "--config", path,
                                    "--out", tmp_path / "final"), *case.needles)
    assert names_key(line, case.key), f"{case.key} is not named as the key at fault: {line!r}"
    assert fingerprint(runs[TRAIN_RUN[case.base]]) == before
    assert not (tmp_path / "final").exists()


@pytest.mark.parametrize("base, changes, key, needles", CHECKED, ids=[f"{c[2]}:{'/'.join(c[3])}" for c in CHECKED])
def test_validate_rejects_values_that_checks_rule_out(capsys, tmp_path, data, base, changes, key, needles):
    path = write(tmp_path, _search(base, **changes), data)
    line = assert_one_line(*run_cli(capsys, "validate", path), str(path), *needles)
    assert names_key(line, key), f"{key} is not named as the key at fault: {line!r}"


# --------------------------------------------------------------------------- whole files and overrides


@pytest.mark.parametrize("content, needles", [
    (b"", ["the file is empty"]),
    (b"# only a comment\n", ["the file is empty"]),
    (b"space: [\n", ["not valid YAML", "line"]),
    (b"space:\n\tdecisions: []\n", ["not valid YAML"]),
    (b"key: value: other\n", ["not valid YAML"]),
    (b"- space\n- evaluator\n", ["must be a mapping", "a list"]),
    (b"42\n", ["must be a mapping", "an integer"]),
    (b"just some words\n", ["must be a mapping", "a string"]),
    (b"\xff\xfe\x00 not text", ["cannot read"]),
    (b"!!python/object/apply:os.system ['true']\n", ["not valid YAML"]),
    (b"space: *nowhere\n", ["not valid YAML"]),
], ids=["empty", "comment only", "unclosed", "tab", "two colons", "a list", "a scalar", "a string",
        "not utf-8", "python tag", "unknown alias"])
def test_files_that_are_no_config(capsys, tmp_path, content, needles):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert_one_line(*run_cli(capsys, "validate", path), str(path), *needles)


def test_paths_that_are_no_config_file(capsys, tmp_path):
    assert_one_line(*run_cli(capsys, "validate", tmp_path), str(tmp_path), "is a directory")
    assert_one_line(*run_cli(capsys, "validate", tmp_path / "missing.yaml"), "missing.yaml", "no such config file")
    (tmp_path / "file").write_text("")
    assert_one_line(*run_cli(capsys, "validate", tmp_path / "file" / "c.yaml"), "file/c.yaml")
    assert_one_line(*run_cli(capsys, "search", "--config", tmp_path), str(tmp_path), "is a directory")


@pytest.mark.parametrize("override, needles", [
    ("budget.children", ["--set 'budget.children'", "KEY=VALUE"]),
    ("=5", ["KEY=VALUE"]),
    ("budget..children=5", ["KEY=VALUE"]),
    ("budget.children=", ["budget.children: must be an integer"]),
    ("budget.children=[1, 2", ["budget.children: must be an integer"]),
    ("space.decisions.x=1", ["--set space.decisions.x", "space.decisions is not a section"]),
    ("seed.deeper=1", ["--set seed.deeper", "seed is not a section"]),
    ("budget.childen=5", ["budget.childen: unknown key", "did you mean 'budget.children'"]),
    ("nosuchsection.key=1", ["nosuchsection: unknown key"]),
    ("strategy={type: genetic}", ["strategy.type", "reinforce, random, evolution"]),
    ("strategy={type: evolution, population: 3, sample_size: 4}", ["strategy.sample_size: 4", "population (3)"]),
    ("strategy.screening.candidates=0", ["strategy.screening.candidates: must be >= 1"]),
    ("strategy.screening.ridge=0", ["strategy.screening.ridge"]),
    ("strategy={type: random, screening: {candidates: 4}}", ["strategy.screening: unknown key"]),
    ("evaluator.early_stopping.keep_quantile=1", ["evaluator.early_stopping.keep_quantile: must be <"]),
    ("evaluator.early_stopping.min_children=0", ["evaluator.early_stopping.min_children: must be >= 1"]),
    ("evaluator.early_stopping.grace_epoch=2", ["evaluator.early_stopping.grace_epoch: unknown key",
                                                 "did you mean 'evaluator.early_stopping.grace_epochs'"]),
    ("evaluator.early_stopping=5", ["evaluator.early_stopping: must be a mapping or null"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_overrides(capsys, tmp_path, data, override, needles):
    path = write(tmp_path, SEARCH_BASES["categorical"], data)
    assert_one_line(*run_cli(capsys, "validate", path, "--set", override), *needles)


# --------------------------------------------------------------------------- datasets


@pytest.mark.parametrize("dataset, space, key, needles", [
    ({"type": "cifar10", "root": "{tmp}/empty"}, CONV_SPACE, "evaluator.dataset.root", ["no CIFAR-10", "download"]),
    ({"type": "cifar10", "root": "{tmp}/nowhere"}, CONV_SPACE, "evaluator.dataset.root", ["no CIFAR-10"]),
    ({"type": "cifar10", "root": "{tmp}/batch_is_a_dir"}, CONV_SPACE, "evaluator.dataset.root", ["no CIFAR-10"]),
    ({"type": "image_folder", "root": "{tmp}/nowhere"}, CONV_SPACE, "evaluator.dataset.root", ["{tmp}/nowhere"]),
    ({"type": "image_folder", "root": "{tmp}/a_file"}, CONV_SPACE, "evaluator.dataset.root", ["{tmp}/a_file"]),
    ({"type": "image_folder", "root": "{tmp}/empty"}, CONV_SPACE, "evaluator.dataset.root", ["two class folders"]),
    ({"type": "ptb", "root": "{tmp}/nowhere"}, RNN_SPACE, "evaluator.dataset.root", ["ptb.train.txt"]),
    ({"type": "ptb", "root": "{tmp}/half_ptb"}, RNN_SPACE, "evaluator.dataset.root", ["ptb.valid.txt"]),
    ({"type": "ptb", "root": "{tmp}/half_ptb", "level": "char"}, RNN_SPACE, "evaluator.dataset.root",
     ["ptb.char.train.txt"]),
    ({"type": "text", "path": "{tmp}/nowhere.txt"}, RNN_SPACE, "evaluator.dataset.path", ["{tmp}/nowhere.txt"]),
    ({"type": "text", "path": "{tmp}/empty"}, RNN_SPACE, "evaluator.dataset.path", ["{tmp}/empty"]),
    # Files that are there but cannot be used: found out now, not by every child of the search.
    ({"type": "text", "path": "{tmp}/latin1.txt"}, RNN_SPACE, "evaluator.dataset.path", ["{tmp}/latin1.txt"]),
    ({"type": "text", "path": "{tmp}/short.txt"}, RNN_SPACE, "evaluator.dataset.path", ["too short"]),
], ids=["cifar10 empty root", "cifar10 missing root", "cifar10 batch is a folder", "image_folder missing root",
        "image_folder root is a file", "image_folder without classes", "ptb missing root", "ptb without valid",
        "ptb char missing", "text missing", "text is a folder", "text not utf-8", "text too short"])
def test_missing_or_unusable_datasets(capsys, tmp_path, dataset, space, key, needles):
    (tmp_path / "empty").mkdir()
    (tmp_path / "batch_is_a_dir" / "cifar-10-batches-py" / "data_batch_1").mkdir(parents=True)
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "half_ptb").mkdir()
    (tmp_path / "half_ptb" / "ptb.train.txt").write_text("a b c\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e, ".encode("latin-1") * 50)
    (tmp_path / "short.txt").write_text("ab")
    evaluator = {**(IMAGES if space is CONV_SPACE else TEXT),
                 "dataset": {k: v.format(tmp=tmp_path) for k, v in dataset.items()}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({"space": space, "evaluator": evaluator, **SEARCH}))
    needles = [n.format(tmp=tmp_path) for n in needles]
    line = assert_one_line(*run_cli(capsys, "validate", path), str(path), *needles)
    assert names_key(line, key), line
    # `search` stops at the same line, before it makes a run directory.
    line = assert_one_line(*run_cli(capsys, "search", "--config", path, "--run-dir", tmp_path / "run"), *needles)
    assert names_key(line, key) and not (tmp_path / "run").exists(), line


# --------------------------------------------------------------------------- run directories


def test_run_dirs_that_cannot_be_written(capsys, tmp_path, data):
    path = write(tmp_path, SEARCH_BASES["categorical"], data)
    (tmp_path / "a_file").write_text("keep me")
    for run_dir, needles in [(tmp_path / "a_file" / "run", ["cannot create"]),
                             (tmp_path / "a_file", ["exists and is not a directory"]),
                             (Path("/proc/nasps-bad-input/run"), ["cannot create"]),
                             (Path("/proc/self/nasps-run"), ["cannot create"])]:
        assert_one_line(*run_cli(capsys, "search", "--config", path, "--run-dir", run_dir),
                        f"--run-dir {run_dir}", *needles)
    assert (tmp_path / "a_file").read_text() == "keep me"


@pytest.mark.parametrize("keep", [("config.yaml", "results.sqlite"), ("results.sqlite",), ("config.yaml",),
                                  ("checkpoint.pt",)], ids="+".join)
def test_a_run_dir_that_holds_a_search_is_never_reused(capsys, tmp_path, data, runs, keep):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["categorical"], run_dir)
    if "checkpoint.pt" in keep:
        (run_dir / "checkpoint.pt").write_bytes(b"an earlier search's learning state")
    for name in {"config.yaml", "results.sqlite"} - set(keep):
        (run_dir / name).unlink()
    before = fingerprint(run_dir)
    path = write(tmp_path, SEARCH_BASES["categorical"], data)
    assert_one_line(*run_cli(capsys, "search", "--config", path, "--run-dir", run_dir),
                    f"--run-dir {run_dir}", "already holds a search")
    assert fingerprint(run_dir) == before


def test_bad_resumes_change_nothing(capsys, tmp_path, runs):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["categorical"], run_dir)
    before = fingerprint(run_dir)
    for args, needles in [
        (["--resume", run_dir, "--run-dir", tmp_path / "other"], ["--run-dir", "--resume"]),
        (["--resume", run_dir, "--config", tmp_path / "x.yaml"], ["--config", "--resume"]),
        ([], ["--config", "--resume"]),
        (["--resume", tmp_path / "nowhere"], ["--resume", "no such run directory"]),
        (["--resume", run_dir, "--set", "space.type=conv"], ["--set space.type", "budget.* and cluster.*"]),
        (["--resume", run_dir, "--set", "budget.children=lots"], ["budget.children: must be an integer"]),
        (["--resume", run_dir, "--set", "cluster.replicas=0"], ["cluster.replicas: must be >= 1"]),
        (["--resume", run_dir, "--set", "budget.childrn=9"], ["budget.childrn: unknown key"]),
    ]:
        assert_one_line(*run_cli(capsys, "search", *args), *needles)
        assert fingerprint(run_dir) == before, args


def test_a_resume_whose_evaluator_no_longer_imports_changes_nothing(capsys, tmp_path, monkeypatch):
    """The evaluator is checked before the store's meta or config.yaml are rewritten."""
    (tmp_path / "gone_evaluator.py").write_text("def score(arch):\n    return 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = _search_run(tmp_path, "run", TOY_SPACE, "gone_evaluator:score", children=3)
    monkeypatch.delitem(sys.modules, "gone_evaluator")
    (tmp_path / "gone_evaluator.py").unlink()
    before = fingerprint(run_dir)
    assert_one_line(*run_cli(capsys, "search", "--resume", run_dir, "--set", "budget.children=6"),
                    "evaluator.target", "gone_evaluator")
    assert fingerprint(run_dir) == before
    (tmp_path / "gone_evaluator.py").write_text("def score(arch):\n    return 0.5\n")
    with pytest.raises(AssertionError, match="accepted"):  # back in place, the resume goes ahead
        run_cli(capsys, "search", "--resume", run_dir, "--set", "budget.children=6")


def test_a_resume_with_the_budget_met_says_so_and_starts_nothing(capsys, tmp_path):
    run_dir = _search_run(tmp_path, "run", TOY_SPACE, "tests.toys:match_fraction", children=3)
    before = fingerprint(run_dir)
    for extra in ([], ["--set", "budget.children=2"]):
        capsys.readouterr()
        assert cli.main(["search", "--resume", str(run_dir), *extra]) == 0  # Ray would fail the test (no_ray)
        out, err = capsys.readouterr()
        assert out.strip().splitlines() == [f"nasps: nothing to do: {run_dir} has trained 3 children and "
                                            f"budget.children is {2 if extra else 3}; --set budget.children=N "
                                            "with a larger N continues it"] and not err
        assert fingerprint(run_dir) == before
    with pytest.raises(AssertionError, match="accepted"):  # a larger budget goes ahead
        run_cli(capsys, "search", "--resume", run_dir, "--set", "budget.children=4")


# --------------------------------------------------------------------------- damaged results stores


def _damaged(data: bytes, kind: str, table_page: int) -> bytes:
    page = 4096
    if kind == "truncated to half":
        return data[:len(data) // 2]
    if kind == "truncated to 100 bytes":
        return data[:100]
    if kind == "empty":
        return b""
    if kind == "not a database":
        return b"this is not a database" * 100
    if kind == "bad header":
        return b"SQLite format 2\x00" + data[16:]
    if kind == "children table overwritten":
        start = (table_page - 1) * page
        return data[:start] + b"\xff" * page + data[start + page:]
    raise AssertionError(kind)


DAMAGES = ["truncated to half", "truncated to 100 bytes", "empty", "not a database", "bad header",
           "children table overwritten"]


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("command", ["report", "report --no-plots", "report --format json", "export", "train"])
def test_damaged_results_store(capsys, tmp_path, data, runs, damage, command):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["conv"], run_dir)
    store = run_dir / "results.sqlite"
    probe = shutil.copy(store, tmp_path / "probe.sqlite")  # SQLite leaves -wal and -shm files by what it opens
    db = sqlite3.connect(probe)
    page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'children'").fetchone()[0]
    db.close()
    store.write_bytes(_damaged(store.read_bytes(), damage, page))
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "results.sqlite"]
    before = fingerprint(run_dir)
    args = {"export": ["export", run_dir, "--out", tmp_path / "out"],
            "train": ["train", "--arch", run_dir, "--config",
                      write(tmp_path, TRAIN_BASES["train_digits"][1], data), "--out", tmp_path / "out"]
            }.get(command, [*command.split()[:1], run_dir, *command.split()[1:]])
    assert_one_line(*run_cli(capsys, *args), str(store))
    after = fingerprint(run_dir)  # may add plots, and the -wal and -shm files SQLite opens with
    assert {name: after.get(name) for name in before} == before
    assert not (tmp_path / "out").exists()


def test_bad_report_export_and_train_arguments(capsys, tmp_path, data, runs):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["conv"], run_dir)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "architecture.json").write_text("mine")
    (tmp_path / "taken" / "training.json").write_text("mine too")
    (tmp_path / "a_file").write_text("keep me")
    train = write(tmp_path, TRAIN_BASES["train_digits"][1], data, "train.yaml")
    before = fingerprint(run_dir)
    for args, needles in [
        (["report", tmp_path / "nowhere"], ["nowhere", "no such run directory"]),
        (["report", tmp_path / "a_file"], ["a_file"]),
        (["report", tmp_path], [str(tmp_path), "no results store"]),
        (["report", run_dir, "--top", "-1"], ["--top -1"]),
        (["report", run_dir, "--top", "many"], ["--top", "many"]),
        (["report", run_dir, "--format", "xml"], ["--format", "xml"]),
        (["report", run_dir, "--compare", tmp_path / "nowhere"], ["nowhere", "no such run directory"]),
        (["export", run_dir, "--rank", "0", "--out", tmp_path / "out"], ["--rank 0"]),
        (["export", run_dir, "--rank", "99", "--out", tmp_path / "out"], ["--rank 99"]),
        (["export", run_dir, "--out", tmp_path / "taken"], ["--out", "architecture.json"]),
        (["export", run_dir, "--out", tmp_path / "a_file"], ["--out", "a_file"]),
        (["export", run_dir, "--out", tmp_path / "a_file" / "out"], ["--out", "a_file"]),
        (["export", run_dir], ["--out"]),
        (["train", "--arch", tmp_path / "nowhere", "--config", train], ["nowhere", "no such run directory"]),
        (["train", "--arch", f"{run_dir}:0", "--config", train], ["--arch", "ranks start at 1"]),
        (["train", "--arch", f"{run_dir}:best", "--config", train], ["--arch", "whole number"]),
        (["train", "--arch", f"{run_dir}:99", "--config", train], ["--rank 99"]),
        (["train", "--arch", runs["categorical"], "--config", train], ["--arch", "categorical"]),
        (["train", "--arch", run_dir, "--config", train, "--out", tmp_path / "taken"], ["--out", "training.json"]),
        (["train", "--arch", run_dir, "--config", train, "--out", tmp_path / "a_file" / "out"], ["--out", "a_file"]),
        (["train", "--arch", run_dir, "--config", tmp_path / "nowhere.yaml"], ["nowhere.yaml", "no such config"]),
        (["train", "--arch", run_dir, "--config", write(tmp_path, {**TRAIN, "evaluator": None}, data, "n.yaml")],
         ["evaluator.type", "image_classification", "python"]),
        (["train", "--arch", run_dir, "--config",
          write(tmp_path, {**TRAIN, "evaluator": {**TEXT, "dataset": DATASETS["ptb"]}}, data, "lm.yaml")],
         ["evaluator.type", "language_model"]),
        (["train", "--arch", run_dir, "--config", train, "--set", "seed=-1"], ["seed: must be >= 0"]),
        (["nonsense"], ["invalid choice"]),
    ]:
        assert_one_line(*run_cli(capsys, *args), *needles)
    assert fingerprint(run_dir) == before
    assert (tmp_path / "taken" / "architecture.json").read_text() == "mine"
    assert (tmp_path / "taken" / "training.json").read_text() == "mine too"
    assert (tmp_path / "a_file").read_text() == "keep me" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("grid, key, needles", [
    ({"dropout": [0.1]}, "grid.dropout", ["not a setting of evaluator type image_classification"]),
    ({"dataset": [{"type": "digits"}]}, "grid.dataset", ["not a setting"]),
    ({"seed": [1, 2]}, "grid.seed", ["not a setting"]),
    ({"learning_rate": 0.1}, "grid.learning_rate", ["non-empty list"]),
    ({"learning_rate": []}, "grid.learning_rate", ["non-empty list"]),
    ({"learning_rate": [0.1, -0.1]}, "grid.learning_rate[1]", ["> 0.0"]),
    ({"learning_rate": [0.1, "fast"]}, "grid.learning_rate[1]", ["must be a number"]),
    ({"momentum": [1.0]}, "grid.momentum[0]", ["< 1.0"]),
    ({"epochs": [2.5]}, "grid.epochs[0]", ["must be an integer"]),
    ({"lr_decay_epoch": [0]}, "grid.lr_decay_epoch[0]", [">= 1"]),
    ({"schedule": ["linear"]}, "grid.schedule[0]", ["cosine, step, constant"]),
    ({"nesterov": ["yes"]}, "grid.nesterov[0]", ["true or false"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_grids(capsys, tmp_path, data, runs, grid, key, needles):
    path = write(tmp_path, {**TRAIN_BASES["train_digits"][1], "grid": grid}, data)
    line = assert_one_line(*run_cli(capsys, "train", "--arch", runs["conv"], "--config", path,
                                    "--out", tmp_path / "out"), *needles)
    assert names_key(line, key), line


# --------------------------------------------------------------------------- as a user runs it


def test_representative_cases_as_real_commands(tmp_path, data, runs):
    """The command itself: exit status 2, one line on stderr, no traceback, no logging."""
    def check(result, *needles):
        assert_one_line(result.returncode, result.stderr, *needles)

    bad = write(tmp_path, _search("conv_digits", strategy__lstm__hiden_size=8), data, "typo.yaml")
    check(nasps("validate", bad), str(bad), "strategy.lstm.hiden_size: unknown key",
          "did you mean 'strategy.lstm.hidden_size'")
    bad = write(tmp_path, _search("conv_folder", evaluator__dataset__image_size="big"), data, "type.yaml")
    check(nasps("validate", bad), "evaluator.dataset.image_size: must be an integer")
    bad = write(tmp_path, _search("categorical", strategy__baseline_decay=1.0), data, "range.yaml")
    check(nasps("validate", bad), "strategy.baseline_decay: must be < 1.0")
    (tmp_path / "list.yaml").write_text("- space\n- evaluator\n")
    check(nasps("validate", tmp_path / "list.yaml"), "list.yaml", "must be a mapping")

    good = write(tmp_path, SEARCH_BASES["categorical"], data, "good.yaml")
    (tmp_path / "a_file").write_text("")
    check(nasps("search", "--config", good, "--run-dir", tmp_path / "a_file" / "run"), "--run-dir", "cannot create")
    run_dir = tmp_path / "run"
    shutil.copytree(runs["categorical"], run_dir)
    before = fingerprint(run_dir)
    check(nasps("search", "--config", good, "--run-dir", run_dir), "already holds a search")
    store = run_dir / "results.sqlite"
    store.write_bytes(store.read_bytes()[:len(store.read_bytes()) // 2])
    truncated = fingerprint(run_dir)
    check(nasps("report", run_dir), str(store))
    check(nasps("export", run_dir, "--out", tmp_path / "out"), str(store))
    assert fingerprint(run_dir) == truncated and truncated["config.yaml"] == before["config.yaml"]

    train = write(tmp_path, {**TRAIN_BASES["train_digits"][1], "width_multiplier": 0}, data, "train.yaml")
    check(nasps("train", "--arch", runs["conv"], "--config", train), "width_multiplier: must be > 0.0")
