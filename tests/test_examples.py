"""The examples in examples/ run as a user runs them, on a tiny budget, against the session's Ray."""

import os
import statistics
import subprocess
import sys

import pytest

import nasps
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"


@pytest.fixture
def on_the_test_ray(ray_address, monkeypatch):
    """A script or a notebook joins the session's Ray through RAY_ADDRESS, as on a cluster."""
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return ray_address


def test_the_notebook_searches_with_its_own_function_and_shows_its_figures(on_the_test_ray, tmp_path, monkeypatch):
    import nbclient
    import nbformat
    monkeypatch.setenv("NASPS_EXAMPLE_CHILDREN", "4")
    notebook = nbformat.read(EXAMPLES / "search_in_a_notebook.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = {i: [o for o in cell.get("outputs", []) if "data" in o] for i, cell in enumerate(notebook.cells)}
    shown = [set(o["data"]) for cell in outputs.values() for o in cell]
    assert any("image/png" in data for data in shown), shown  # run.figures()["rewards"], drawn inline
    assert any("text/html" in data for data in shown)  # run.to_pandas()
    (run_dir,) = (tmp_path / "runs").iterdir()
    trained = [c for c in nasps.load(run_dir).children() if not c.cached]
    assert len(trained) == 4 and all(c.status == "ok" for c in trained)
    # The rewards are what the notebook's own function gives, run here on the best child.
    cell = next(c.source for c in notebook.cells if c.source.startswith("def score("))
    namespace = {}
    exec(cell, namespace)
    best = max(trained, key=lambda c: c.reward)
    assert namespace["score"](best.arch)["reward"] == pytest.approx(best.reward)
    assert best.reward > 0.2  # chance is 0.1


def test_the_custom_space_script_trains_its_own_nets_and_stops_hopeless_ones(on_the_test_ray, tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLES / "custom_space.py"), "--children", "6", "--epochs", "2",
                          "--run-dir", str(tmp_path / "run")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    children = [c for c in nasps.load(tmp_path / "run").children() if not c.cached]
    assert len(children) == 6 and {c.status for c in children} <= {"ok", "stopped"}
    assert all(c.metrics["curve"] and c.metrics["curve"][0][0] == 1 for c in children)  # reported each epoch
    # The median rule after 4 children: a child below the median of the earlier ones' first
    # epochs stops after it; every other child trains both epochs.
    for n, child in enumerate(sorted(children, key=lambda c: c.started_at)):
        earlier = sorted(c.metrics["curve"][0][1] for c in children if c.finished_at < child.started_at)
        first = child.metrics["curve"][0][1]
        if len(earlier) >= 4 and first < statistics.median(earlier):
            assert child.status == "stopped" and len(child.metrics["curve"]) == 1, (n, first, earlier)
        elif len(earlier) >= 4 and first > statistics.median(earlier):
            assert child.status == "ok" and len(child.metrics["curve"]) == 2, (n, first, earlier)
    assert max(c.reward for c in children) > 0.5  # chance is 0.1
    assert "children stopped early" in out.stdout and "1. child" in out.stdout


def test_the_tune_example_runs_the_controller_inside_a_tuner_with_asha(on_the_test_ray, tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLES / "tune_searcher.py"), "--trials", "8", "--epochs", "3",
                          "--storage", str(tmp_path / "tune")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    best = out.stdout.strip().splitlines()[-1]
    assert best.startswith("best: {") and "'layers': " in best and "after 2 controller updates" in best, out.stdout
    accuracy = float(best.split("val_accuracy ")[1].split()[0])
    assert 0.3 < accuracy <= 1.0  # chance is 0.1
