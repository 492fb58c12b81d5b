"""nasps export --format onnx: model.onnx computes what the exported model.py's network does,
for any batch size, with its initial weights or with those of nasps train; bad input is one line."""

import sys

import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from nasps.config import DigitsDatasetConfig, FinalTrainingConfig, PtbDatasetConfig, config_from_dict
from nasps.data.images import _test_split
from nasps.data.text import batchify, load_text_splits
from nasps.errors import ExportFailed
from nasps.training.final import check_out_dir, prepare, save, train_trial
from nasps.views.onnx_export import check_graph
from tests.conftest import random_search
from tests.test_export import load_module
from tests.test_final_training import ptb_folder


def nasps(capsys, *argv) -> tuple[int, str, str]:
    """``nasps ARGV`` in this process: (exit status, stdout, stderr)."""
    from nasps import cli
    capsys.readouterr()
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's errors
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def final_weights(run, out, training: dict):
    """nasps train's weights file of rank 1, one grid point, without Ray."""
    job = prepare(str(run), config_from_dict(training, FinalTrainingConfig))
    record, weights = train_trial(job, 0)
    return save(check_out_dir(out), job, [record], record, weights)[0], record


def run_graph(path, **inputs) -> list:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(o) for o in session.run(None, {k: v.numpy() for k, v in inputs.items()})]


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    space = {"type": "conv", "num_filters": [4, 8], "curriculum": {"start_depth": 2, "add_layers": 0}}
    return random_search(tmp_path_factory.mktemp("conv"), space,
                         {"type": "image_classification", "epochs": 1, "crop_padding": 0, "flip": False}, children=2)


def test_conv_graph_is_model_py_network_with_its_initial_weights(conv_run, tmp_path, capsys):
    out = tmp_path / "out"
    status, stdout, err = nasps(capsys, "export", conv_run, "--rank", 2, "--out", out, "--format", "onnx")
    assert status == 0, err
    assert f"wrote {out / 'model.onnx'} (initial weights" in stdout and (out / "model.py").exists()
    module = load_module(out / "model.py")
    torch.manual_seed(0)
    model = module.build_model().eval()  # digits: raw pixels in, normalised inside, as in the graph
    with torch.no_grad():
        for batch in (1, 5):  # traced with 2: the batch axis is dynamic
            raw = torch.rand(batch, 1, 8, 8)
            torch.testing.assert_close(run_graph(out / "model.onnx", image=raw)[0], model(raw), atol=1e-5, rtol=1e-5)
    # A graph that computes another network is refused.
    torch.manual_seed(1)
    other = module.build_model().eval()
    with pytest.raises(ExportFailed, match="differs from PyTorch's"):
        check_graph((out / "model.onnx").read_bytes(), other, {"image": torch.rand(3, 1, 8, 8)})


def test_conv_graph_holds_the_trained_weights_and_scores_as_pytorch(conv_run, tmp_path, capsys):
    weights, record = final_weights(conv_run, tmp_path / "final", {
        "epochs": 1, "width_multiplier": 1.5, "grid": {"bn_epsilon": [0.001]}, "weights_format": "safetensors"})
    out = tmp_path / "out"
    status, stdout, err = nasps(capsys, "export", conv_run, "--out", out, "--format", "onnx", "--weights", weights)
    assert status == 0, err
    assert f"(the trained weights of {weights})" in stdout
    exported = load_module(out / "model.py").build_model(width_multiplier=1.5, bn_epsilon=0.001)
    exported.load_state_dict(load_file(weights))
    raw_x, raw_y = _test_split(DigitsDatasetConfig())  # pixels in [0, 1], as a user has them
    with torch.no_grad():
        want = exported.eval()(raw_x)
    got = run_graph(out / "model.onnx", image=raw_x)[0]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert (got.argmax(1) == raw_y).float().mean().item() == pytest.approx(record["test_accuracy"])

    # Those weights are rank 1's: the child of rank 2 is another network.
    status, _, err = nasps(capsys, "export", conv_run, "--rank", 2, "--out", tmp_path / "two", "--format", "onnx",
                           "--weights", weights)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "another architecture than rank 2" in err
    assert not (tmp_path / "two").exists()


def test_language_model_graph_steps_through_a_text(tmp_path, capsys):
    run = random_search(tmp_path, {"type": "rnn_cell", "base": 2}, {"type": "python", "target": "tests.toys:cell_toy"})
    status, _, err = nasps(capsys, "export", run, "--out", tmp_path / "out", "--format", "onnx")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "needs vocab_size" in err  # a python evaluator
    assert not (tmp_path / "out").exists()

    ptb = ptb_folder(tmp_path)
    weights, record = final_weights(run, tmp_path / "final", {"epochs": 1, "evaluator": {
        "type": "language_model", "dataset": {"type": "ptb", "root": str(ptb)}, "hidden_size": 8, "batch_size": 4,
        "bptt": 5, "max_tokens_per_epoch": 500, "dropout": 0.0}})
    status, stdout, err = nasps(capsys, "export", run, "--out", tmp_path / "out", "--format", "onnx",
                                "--weights", weights)
    assert status == 0, err
    model = load_module(tmp_path / "out" / "model.py").build_model(vocab_size=record["vocab_size"], hidden_size=8)
    model.load_state_dict(torch.load(weights, weights_only=True))
    text = batchify(load_text_splits(PtbDatasetConfig(root=str(ptb)), 0, with_test=True).test, 4)[:12]
    with torch.no_grad():
        want = model.eval()(text, model.initial_state(4))[0]
    # The graph is one step: the state goes round, a token at a time, for a batch of 4 (traced with 2).
    h = c = torch.zeros(2, 4, 8)
    steps = []
    for t in range(len(text)):
        logits, h, c = run_graph(tmp_path / "out" / "model.onnx", tokens=text[t:t + 1], h=h, c=c)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps), want, atol=1e-4, rtol=1e-4)


def test_bad_export_input_is_one_line(conv_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    cases = [(["--format", "tf"], "argument --format: invalid choice: 'tf'"),
             (["--weights", tmp_path / "weights.pt"], "--weights: only --format onnx puts weights in a file"),
             (["--format", "onnx", "--weights", tmp_path / "weights.pt"], "no such file")]
    for extra, needle in cases:
        status, _, err = nasps(capsys, "export", conv_run, "--out", out, *extra)
        assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an import of a missing package does
    status, _, err = nasps(capsys, "export", conv_run, "--out", out, "--format", "onnx")
    assert (status, err) == (2, "nasps: error: --format onnx needs the onnx extra: pip install 'nasps[onnx]'\n")
    assert not out.exists()
