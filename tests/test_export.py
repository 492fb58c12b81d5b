"""What scripts and users take away from a run: nasps export (a standalone file that rebuilds the
searched network with torch alone) and nasps report --format json."""

import ast
import importlib.util
import json
import subprocess

import torch

from nasps.children import CellLanguageModel, build_conv_net
from nasps.config import DigitsDatasetConfig
from nasps.data.images import load_image_splits
from tests.conftest import NASPS, ROOT, random_search


def load_module(path):
    spec = importlib.util.spec_from_file_location(f"exported_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def imported_roots(path) -> set:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    return roots


def test_conv_export_equals_nasps_builder(tmp_path):
    space = {"type": "conv", "num_filters": [4, 8], "curriculum": {"start_depth": 3, "add_layers": 0}}
    run = random_search(tmp_path, space,
                        {"type": "image_classification", "epochs": 1, "crop_padding": 0, "flip": False})
    done = subprocess.run(NASPS + ["export", str(run), "--rank", "2", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "out" / "architecture.json").read_text())
    assert record["rank"] == 2 and record["space"] == "conv" and len(record["architecture"]["layers"]) == 3
    model_file = tmp_path / "out" / "model.py"
    assert imported_roots(model_file) <= {"__future__", "typing", "torch"}
    exported = load_module(model_file).build_model()  # digits: 1 channel, 10 classes by default
    ours = build_conv_net(record["architecture"], 1, 10)
    exported.load_state_dict(ours.state_dict())  # the normalisation is no weight: the same state dict
    # The exported model takes raw pixels and normalises them with the statistics the search's
    # children were trained with; nasps's own takes them normalised.
    splits = load_image_splits(DigitsDatasetConfig(), None, 0)
    inputs = record["input"]
    assert (inputs["channels"], inputs["height"], inputs["width"]) == (1, 8, 8)
    assert inputs["mean"] == list(splits.input_mean) and inputs["std"] == list(splits.input_std)
    raw = torch.rand(4, 1, 8, 8)
    normalised = (raw - torch.tensor(inputs["mean"]).view(1, -1, 1, 1)) / torch.tensor(inputs["std"]).view(1, -1, 1, 1)
    torch.testing.assert_close(exported.eval()(raw), ours.eval()(normalised))

    # Where the run's image folder is not on the exporting machine, its shapes and statistics
    # become required arguments of a model.py that is still valid Python.
    from nasps.state.store import ResultsStore
    from nasps.views.export import standalone_source
    store = ResultsStore(run / "results.sqlite", readonly=True)
    config_raw = store.meta()["config"]
    store.close()
    config_raw["evaluator"]["dataset"] = {"type": "image_folder", "root": str(tmp_path / "absent")}
    namespace = {}
    exec(compile(standalone_source(record["architecture"], config_raw, None), "model.py", "exec"), namespace)
    rebuilt = namespace["build_model"](1, 10, input_mean=inputs["mean"], input_std=inputs["std"])
    rebuilt.load_state_dict(ours.state_dict())
    torch.testing.assert_close(rebuilt.eval()(raw), ours.eval()(normalised))


def test_rnn_cell_export_equals_nasps_builder(tmp_path):
    space = {"type": "rnn_cell", "base": 4, "hyperparameters": [{"name": "tied", "choices": [True]}]}
    run = random_search(tmp_path, space, {"type": "python", "target": "tests.toys:cell_toy"})
    done = subprocess.run(NASPS + ["export", str(run), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    arch = json.loads((tmp_path / "out" / "architecture.json").read_text())["architecture"]
    module = load_module(tmp_path / "out" / "model.py")
    assert module.ARCHITECTURE == arch and arch["hyperparameters"] == {"tied": True}  # True, not JSON's true
    exported = module.build_model(vocab_size=13, hidden_size=6)  # a python evaluator: no vocabulary known
    ours = CellLanguageModel(arch, 13, 6)
    exported.load_state_dict(ours.state_dict())
    tokens = torch.randint(0, 13, (5, 2))
    torch.testing.assert_close(exported.eval()(tokens, exported.initial_state(2))[0],
                               ours.eval()(tokens, ours.initial_state(2))[0])
    assert module.build_cell(3, 6)(torch.randn(2, 3), (torch.zeros(2, 6), torch.zeros(2, 6)))[0].shape == (2, 6)


def test_export_never_overwrites_and_bad_ranks_are_one_line(tmp_path):
    run = random_search(tmp_path, {"type": "rnn_cell", "base": 2}, {"type": "python", "target": "tests.toys:cell_toy"})
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.py").write_text("# mine\n")
    for args, needle in ((["--out", str(out)], "already holds model.py"),
                         (["--rank", "9", "--out", str(tmp_path / "x")], "--rank 9:"),
                         (["--out", str(tmp_path / "y")], None)):
        done = subprocess.run(NASPS + ["export", str(run), *args], capture_output=True, text=True, cwd=ROOT)
        if needle is None:
            assert done.returncode == 0
            continue
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and needle in done.stderr
    assert (out / "model.py").read_text() == "# mine\n" and not (out / "architecture.json").exists()


def test_report_json_has_the_stores_numbers(tmp_path):
    from nasps.state.store import ResultsStore
    run = random_search(tmp_path, {"type": "rnn_cell", "base": 2}, {"type": "python", "target": "tests.toys:cell_toy"},
                 children=8)
    done = subprocess.run(NASPS + ["report", str(run), "--top", "3", "--format", "json"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    store = ResultsStore(run / "results.sqlite")
    rows = store.children(order="reward")
    store.close()
    ranked = [r for r in rows if r.status == "ok" and not r.cached][:3]
    assert report["children"] == len(rows) and report["trained"] == sum(not r.cached for r in rows)
    assert [t["id"] for t in report["top"]] == [r.id for r in ranked]
    assert [t["reward"] for t in report["top"]] == [r.reward for r in ranked]
    assert report["top"][0]["arch"] == ranked[0].arch and report["top"][0]["rank"] == 1
