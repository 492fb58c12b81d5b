"""The Python API: nasps.search / resume / load and Run, as a script or a notebook uses them."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

import nasps
from nasps import cli
from nasps.config import Config, config_from_dict, config_to_dict
from nasps.state.store import ResultsStore
from tests.conftest import ROOT, TOY_SPACE, query, random_search

RAW = {"space": TOY_SPACE, "strategy": {"type": "reinforce", "learning_rate": 0.2},
       "cluster": {"cpus_per_child": 0}, "budget": {"children": 12}, "logging": {"tensorboard": False}}


def weighted(weights):
    """A closure over a local: Ray must ship the function itself, not a name to import."""
    return lambda arch: sum(w * (arch[k] == 1 or arch[k] == "y") for k, w in weights.items())


def test_a_lambda_searches_on_the_runtime_and_the_run_reads_back(ray_session, tmp_path, capsys):
    score = weighted({"a": 0.5, "b": 0.25, "d": 0.125})
    run = nasps.search(RAW, run_dir=tmp_path / "run", evaluator=score, progress=False)
    children = run.children()
    trained = [c for c in children if not c.cached]
    assert len(trained) == 12 and all(c.status == "ok" for c in children)
    assert all(c.reward == pytest.approx(score(c.arch)) for c in children)  # the lambda scored them
    assert {tuple(c.arch) for c in children} == {("a", "b", "c", "d")}
    best = run.best(3)
    assert [c.reward for c in best] == sorted((c.reward for c in trained), reverse=True)[:3]
    assert best[0].timings["duration_s"] >= 0 and best[0].timings["finished_at"] >= best[0].timings["started_at"]
    assert run.summary.trained == 12 and run.summary.top[0].id == best[0].id
    # The run directory is the CLI's: its config names the lambda, `nasps report` reads it.
    assert run.config.evaluator.target == "__main__:weighted_locals_lambda"
    capsys.readouterr()
    assert cli.main(["report", str(run.run_dir), "--no-plots", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["top"][0]["id"] == best[0].id

    frame = run.to_pandas()
    assert len(frame) == len(children) and frame.index.name == "id"
    assert list(frame["reward"]) == [c.reward for c in children]
    assert list(frame["arch.a"]) == [c.arch["a"] for c in children]

    figures = run.figures()
    from matplotlib.figure import Figure
    assert {"rewards", "control", "controller"} <= set(figures)
    assert all(isinstance(f, Figure) and f.axes for f in figures.values())

    written = run.export(1, tmp_path / "out")
    assert [p.name for p in written] == ["architecture.json"]
    assert json.loads(written[0].read_text())["architecture"] == best[0].arch


def test_resume_continues_with_the_callable_and_refuses_without_it(ray_session, tmp_path):
    score = weighted({"a": 1.0, "c": 0.5})
    run_dir = tmp_path / "run"
    nasps.search({**RAW, "budget": {"children": 6}}, run_dir=run_dir, evaluator=score, progress=False)
    before = (run_dir / "config.yaml").read_text()
    # The lambda cannot be imported by its target: the run says how to give it again, and
    # nothing in the run directory changes.
    with pytest.raises(nasps.UserInputError, match=r"^evaluator.target: __main__:weighted_locals_lambda was a "
                                                   r"function of the Python session .* evaluator=fn\)$"):
        nasps.resume(run_dir, budget={"children": 10}, progress=False)
    assert (run_dir / "config.yaml").read_text() == before
    with pytest.raises(nasps.UserInputError, match="budget.* and cluster.*"):
        nasps.resume(run_dir, evaluator=score, seed=3)

    run = nasps.resume(run_dir, evaluator=score, progress=False, **{"budget.children": 10})
    trained = [c for c in run.children() if not c.cached]
    assert len(trained) == 10 and all(c.reward == pytest.approx(score(c.arch)) for c in trained)
    assert run.config.budget.children == 10
    # Its budget met, a resume has nothing to do and starts nothing: the store's record of
    # resumes stays as it was.
    resumes = ResultsStore(run_dir / "results.sqlite", readonly=True).meta()["resumed_at"]
    again = nasps.resume(run_dir, evaluator=score, progress=False)
    assert len(again.children()) == len(run.children())
    assert ResultsStore(run_dir / "results.sqlite", readonly=True).meta()["resumed_at"] == resumes


def test_load_reads_a_run_while_its_search_writes_it(ray_session, tmp_path):
    run_dir = tmp_path / "run"
    config = {**RAW, "budget": {"children": 16}, "cluster": {"cpus_per_child": 0, "children_per_replica": 2}}
    slow = lambda arch: time.sleep(0.15) or float(arch["a"])  # noqa: E731 (a lambda is what is tested)
    search = threading.Thread(target=nasps.search, args=(config,),
                              kwargs={"run_dir": run_dir, "evaluator": slow, "progress": False})
    search.start()
    seen = []
    try:
        deadline = time.time() + 120
        while search.is_alive() and time.time() < deadline:
            if (run_dir / "results.sqlite").exists():
                seen.append(len(nasps.load(run_dir).children()))
            time.sleep(0.05)
    finally:
        search.join(timeout=120)
    final = len(nasps.load(run_dir).children())
    assert seen == sorted(seen) and any(0 < n < final for n in seen)  # read mid-search, never going back
    assert query(run_dir, "SELECT COUNT(*) FROM children WHERE cached = 0") == [(16,)]


def test_a_config_built_in_python_is_validated_like_a_file(tmp_path, monkeypatch):
    from tests.conftest import block_ray
    block_ray(monkeypatch)
    config = config_from_dict({**RAW, "evaluator": {"type": "python", "target": "tests.toys:match_fraction"}})
    import dataclasses
    # A Config made in Python is checked when it is made, as a file is when it is loaded.
    with pytest.raises(nasps.ConfigError, match=r"^budget.children: must be >= 1, got 0$"):
        dataclasses.replace(config, budget=dataclasses.replace(config.budget, children=0))
    with pytest.raises(nasps.ConfigError, match=r"^space.decisions\[0\].choices: needs at least 1 item"):
        Config(space=dataclasses.replace(config.space, decisions=(
            dataclasses.replace(config.space.decisions[0], choices=()),)), evaluator=config.evaluator)
    with pytest.raises(nasps.ConfigError, match=r"^seed: must be >= 0, got -1$"):
        Config(space=config.space, evaluator=config.evaluator, seed=-1)
    with pytest.raises(nasps.ConfigError, match=r"^budget.childen: unknown key \(did you mean 'budget.children'\?\)$"):
        nasps.search({**RAW, "budget": {"childen": 3}}, evaluator=len, run_dir=tmp_path / "b")
    with pytest.raises(nasps.ConfigError, match="^evaluator: missing required key"):
        nasps.search(RAW, run_dir=tmp_path / "c")
    with pytest.raises(nasps.UserInputError, match="^evaluator: must be a callable"):
        nasps.search(RAW, evaluator="tests.toys:match_fraction", run_dir=tmp_path / "d")
    image = {"type": "image_classification", "dataset": {"type": "digits"}}
    with pytest.raises(nasps.UserInputError, match="evaluator.type is image_classification"):
        nasps.search({**RAW, "evaluator": image}, evaluator=len, run_dir=tmp_path / "e")
    with pytest.raises(nasps.ConfigError, match="no such config file"):
        nasps.search(tmp_path / "missing.yaml")
    with pytest.raises(nasps.UserInputError, match="not a nasps run directory"):
        nasps.load(tmp_path)
    lock = threading.Lock()  # a callable Ray cannot pickle
    with pytest.raises(nasps.UserInputError, match="^evaluator: .* cannot be sent to the Ray workers"):
        nasps.search({**RAW, "evaluator": {"type": "python"}}, evaluator=lambda arch: lock.locked() or 1.0,
                     run_dir=tmp_path / "f")
    assert not any(tmp_path.iterdir())  # nothing was created for any of them
    # A YAML path and a Config are the same search as the dict they hold.
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({**RAW, "evaluator": {"type": "python", "target": "tests.toys:match_fraction"}}))
    from nasps.api import resolve_config
    assert resolve_config(path) == resolve_config(config) == config
    assert resolve_config(config_to_dict(config), evaluator=len).evaluator.function is len
    assert isinstance(resolve_config(RAW, evaluator=len), Config)


def test_a_plain_python_process_reads_a_run_and_draws_it_without_touching_the_backend(tmp_path):
    run_dir = random_search(tmp_path, TOY_SPACE, {"type": "python", "target": "tests.toys:match_fraction"},
                            children=8)
    script = f"""
import matplotlib
matplotlib.use("svg")
import nasps
run = nasps.load({str(run_dir)!r})
figures = run.figures()
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
figures["rewards"].savefig({str(tmp_path / "rewards.png")!r})
print(len(run.children()), run.best()[0].reward, sorted(figures))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    count, reward, names = out.stdout.split(" ", 2)
    assert int(count) == 8 and float(reward) == max(r for (r,) in query(run_dir, "SELECT reward FROM children"))
    assert "rewards" in names and (tmp_path / "rewards.png").stat().st_size > 1000


def test_the_readmes_python_section_runs_as_written_on_an_embedded_ray(tmp_path):
    """The README's example, run as a user would: a plain script with its own embedded Ray."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### From Python"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("```\n", 10)]
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "{'depth': 1, 'width': 64}" in out.stdout
    run = nasps.load(tmp_path / "runs" / "from-python")
    assert len([c for c in run.children() if not c.cached]) == 9


CTRL_C_SEARCH = """
import sys, time
import nasps
space = {"type": "categorical", "decisions": [{"name": "a", "choices": list(range(100))},
                                              {"name": "b", "choices": list(range(100))}]}
nasps.search({"space": space, "strategy": {"type": "reinforce", "learning_rate": 0.1},
              "cluster": {"children_per_replica": 2, "cpus_per_child": 0},
              "budget": {"children": 500}, "logging": {"tensorboard": False}},
             evaluator=lambda arch: time.sleep(0.2) or arch["a"] / 100, run_dir=sys.argv[1], address=sys.argv[2],
             progress=False)
"""


def test_ctrl_c_stops_a_python_search_as_in_a_terminal_and_resume_continues_it(ray_session, tmp_path):
    run_dir = tmp_path / "run"
    search = subprocess.Popen([sys.executable, "-c", CTRL_C_SEARCH, str(run_dir), ray_session], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and search.poll() is None:
            if (run_dir / "results.sqlite").exists() and query(run_dir, "SELECT COUNT(*) FROM children")[0][0] >= 4:
                break
            time.sleep(0.2)
        search.send_signal(signal.SIGINT)
        _, err = search.communicate(timeout=120)
    finally:
        search.kill()
    assert f"nasps: interrupted; finished children are kept in {run_dir}; nasps.resume(" in err, err[-2000:]
    assert (run_dir / "checkpoint.pt").is_file(), err[-3000:]
    trained = query(run_dir, "SELECT COUNT(*) FROM children WHERE cached = 0")[0][0]
    assert 4 <= trained < 500
    run = nasps.resume(run_dir, evaluator=lambda arch: arch["a"] / 100, budget={"children": trained + 3},
                       progress=False)
    children = [c for c in run.children() if not c.cached]
    assert len(children) == trained + 3 and all(c.reward == c.arch["a"] / 100 for c in children)
