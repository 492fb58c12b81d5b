"""The `ray up` files under cluster/: valid for Ray's cluster launcher, and safe as we mean them.

Validation runs the offline half of what `ray up` does before it talks to a cloud:
`prepare_config` (Ray's defaults for the provider filled in, setup commands merged, on-premise
files given their node type) then `validate_config` (Ray's own ray-schema.json, plus its checks on
node types and worker counts). The file as written is also checked against the same schema, so a
misspelt key fails here even where `prepare_config` would trip over it first. Neither step
imports boto3 or needs credentials or a network; resolving instance types, key pairs and
security groups is the online half, left to `ray up`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_FILES = sorted((ROOT / "cluster").glob("*.yaml"))
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
START_KEYS = ("head_start_ray_commands", "worker_start_ray_commands")
SETUP_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")


def load(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def validated(raw: dict) -> dict:
    """The config `ray up` would go on with; raises jsonschema.ValidationError on a bad file."""
    jsonschema.validate(raw, SCHEMA)
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def ray_start_calls(command: str) -> list[tuple[dict[str, str], list[str]]]:
    """Each `ray start` in a shell command: (VAR=value prefixes, arguments after `start`)."""
    calls = []
    for part in re.split(r";|&&|\|\|", command):
        words = shlex.split(part)
        env = {}
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        if words[:2] == ["ray", "start"]:
            calls.append((env, words[2:]))
    return calls


def flag(args: list[str], name: str) -> str | None:
    """The value of --name=VALUE or --name VALUE among a command's arguments."""
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


@pytest.fixture(params=CLUSTER_FILES, ids=lambda p: p.name)
def cluster_file(request) -> Path:
    return request.param


def test_both_cluster_files_exist():
    assert {p.name for p in CLUSTER_FILES} >= {"aws.yaml", "onprem.yaml"}


def test_ray_accepts_the_file(cluster_file):
    validated(load(cluster_file))


def test_dashboard_is_bound_to_loopback_on_the_head(cluster_file):
    config = validated(load(cluster_file))
    heads = [args for cmd in config["head_start_ray_commands"] for _, args in ray_start_calls(cmd)
             if "--head" in args]
    assert len(heads) == 1, "exactly one `ray start --head` in head_start_ray_commands"
    assert flag(heads[0], "--dashboard-host") == "127.0.0.1"


def test_every_ray_start_runs_with_token_auth(cluster_file):
    config = validated(load(cluster_file))
    for key in START_KEYS:
        calls = [call for cmd in config[key] for call in ray_start_calls(cmd)]
        assert calls, f"{key} starts no Ray"
        for env, _ in calls:
            assert env.get("RAY_AUTH_MODE") == "token", f"{key}: `ray start` without RAY_AUTH_MODE=token"


def test_no_command_turns_token_auth_off(cluster_file):
    config = validated(load(cluster_file))
    commands = [cmd for key in START_KEYS + SETUP_KEYS for cmd in config[key]]
    for cmd in commands:
        assert all(mode == "token" for mode in re.findall(r"RAY_AUTH_MODE=['\"]?(\w*)", cmd)), cmd
        assert not re.search(r"\bunset\s+RAY_AUTH_MODE\b", cmd), cmd
    # Every node gets the token the head was started with: the one `ray up` runs with.
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def test_setup_installs_nasps_from_the_mounted_checkout(cluster_file):
    config = validated(load(cluster_file))
    mounts = [remote for remote, local in config["file_mounts"].items()
              if (ROOT / os.path.expanduser(local)).resolve() == ROOT]
    assert len(mounts) == 1, "file_mounts syncs this checkout to exactly one place"
    install = re.compile(rf"\bpip install\b.*\s-e\s+{re.escape(mounts[0])}/?(\s|$)")
    for key in ("head_setup_commands", "worker_setup_commands"):  # setup_commands merged in
        assert any(install.search(cmd) for cmd in config[key]), f"{key} does not install nasps"


def test_nodes_get_the_ray_version_of_this_machine(cluster_file):
    config = validated(load(cluster_file))
    pinned = {v for cmd in config["setup_commands"] for v in re.findall(r"ray\[default\]==([\w.]+)", cmd)}
    assert pinned == {ray.__version__}


def test_aws_gpu_workers_declare_gpus_and_the_head_none():
    config = validated(load(ROOT / "cluster" / "aws.yaml"))
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU") == 0, "the head declares GPU: 0, whatever its instance type"
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    gpu_workers = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_workers, "no worker type declares GPUs"
    for name, t in gpu_workers.items():
        assert t["min_workers"] == 0 and t["max_workers"] >= 1, f"{name} does not scale from zero"


BREAKAGES = {
    # a misspelt key (worker_start_ray_commands) is unknown to the schema
    "unknown_top_level_key": lambda raw: raw.update(worker_start_commands=raw["worker_start_ray_commands"]),
    # commands are a list, not one shell line
    "commands_as_a_string": lambda raw: raw.update(head_start_ray_commands=" && ".join(raw["head_start_ray_commands"])),
    "max_workers_as_a_string": lambda raw: raw.update(max_workers="four"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_copy_is_rejected(cluster_file, breakage):
    raw = load(cluster_file)
    validated(copy.deepcopy(raw))
    BREAKAGES[breakage](raw)
    with pytest.raises(jsonschema.ValidationError):
        validated(raw)


def test_ray_itself_rejects_a_broken_prepared_config():
    """The schema check of the prepared config (what `ray up` runs) fails on its own too."""
    config = prepare_config(load(ROOT / "cluster" / "aws.yaml"))
    validate_config(copy.deepcopy(config))
    config["max_wokers"] = 4
    with pytest.raises(jsonschema.ValidationError):
        validate_config(config)
