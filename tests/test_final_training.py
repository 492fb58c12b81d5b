"""nasps train: a searched child trained again with a grid, on Ray; the weights saved are the
chosen trial's, and the test score recorded is theirs."""

import contextlib
import hashlib
import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from nasps.children import CellLanguageModel, build_conv_net
from nasps.config import (
    DigitsDatasetConfig,
    FinalTrainingConfig,
    ImageClassificationEvaluatorConfig,
    PtbDatasetConfig,
    config_from_dict,
)
from nasps.data.images import _test_split, load_image_splits
from nasps.data.text import load_text_splits
from nasps.errors import ConfigError, UserInputError
from nasps.training.image import accuracy
from nasps.training.language import perplexity
from nasps.views.export import export
from tests.conftest import NASPS, ROOT, random_search
from tests.test_export import load_module


def ptb_folder(folder):
    """Mikolov's format (train, valid, test), with a small regular language to learn."""
    import random
    rng = random.Random(0)
    subjects, verbs, objects = ["the cat", "a dog", "the bird", "my friend"], ["sees", "likes", "eats"], \
        ["the fish", "a ball", "some bread", "<unk>"]
    for split, lines in (("train", 3000), ("valid", 200), ("test", 200)):
        text = "\n".join(f" {rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} "
                         for _ in range(lines))
        (folder / f"ptb.{split}.txt").write_text(text + "\n")
    return folder


def train(tmp_path, arch, config_text, *extra):
    path = tmp_path / "train.yaml"
    path.write_text(config_text)
    return subprocess.run(NASPS + ["train", "--arch", str(arch), "--config", str(path), *extra],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conv")
    space = {"type": "conv", "num_filters": [4, 8], "curriculum": {"start_depth": 2, "add_layers": 0},
             "hyperparameters": [{"name": "batch_size", "choices": [32]}]}
    return random_search(tmp, space, {"type": "image_classification", "epochs": 1, "crop_padding": 0,
                               "flip": False})


def test_conv_grid_keeps_the_best_by_validation_and_saves_its_weights(ray_session, conv_run, tmp_path):
    out = tmp_path / "final"
    done = train(tmp_path, f"{conv_run}:2", """
epochs: 3
width_multiplier: 1.5
grid: {learning_rate: [0.1, 0.01], bn_epsilon: [0.001]}
cpus_per_trial: 1
weights_format: safetensors
""", "--out", str(out), "--address", ray_session)
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "training.json").read_text())
    assert record["rank"] == 2 and len(record["trials"]) == 2
    assert [t["settings"] for t in record["trials"]] == [{"learning_rate": 0.1, "bn_epsilon": 0.001},
                                                        {"learning_rate": 0.01, "bn_epsilon": 0.001}]
    scores = [t["val_accuracy"] for t in record["trials"]]
    assert record["chosen_trial"] == scores.index(max(scores))
    assert all("test_accuracy" not in t for t in record["trials"])  # the test chose nothing
    assert record["evaluator"]["epochs"] == 3 and record["evaluator"]["batch_size"] == 32  # the child's own
    weights_file = out / "weights.safetensors"
    assert hashlib.sha256(weights_file.read_bytes()).hexdigest() == record["weights"]["sha256"]

    # The saved weights are the chosen trial's: rebuilt, they score the recorded test accuracy.
    model = build_conv_net(record["architecture"], 1, 10, 1.5, 0.001)
    model.load_state_dict(load_file(weights_file))
    data = load_image_splits(DigitsDatasetConfig(), None, 0, with_test=True)
    test = accuracy(model, data.test_x, data.test_y, 256, contextlib.nullcontext)
    assert test == pytest.approx(record["test"]["test_accuracy"])
    assert record["test"]["test_accuracy"] > 0.3  # well above chance (0.1) after 3 epochs
    assert model.layers[0].op[0].out_channels == round(1.5 * record["architecture"]["layers"][0]["num_filters"])

    # Exported, the same weights take the raw test images (pixels in [0, 1], as a user has
    # them) and score exactly the test accuracy nasps reported; training.json says how.
    exported_files = export(conv_run, 2, tmp_path / "export")
    module = load_module(exported_files[-1])
    exported = module.build_model(width_multiplier=1.5, bn_epsilon=0.001)
    exported.load_state_dict(load_file(weights_file))
    raw_x, raw_y = _test_split(DigitsDatasetConfig())
    assert float(raw_x.min()) >= 0 and float(raw_x.max()) <= 1
    assert accuracy(exported.eval(), raw_x, raw_y, 256, contextlib.nullcontext) == record["test"]["test_accuracy"]
    assert record["input"]["mean"] == module.INPUT["mean"] and record["input"]["std"] == module.INPUT["std"]

    # The output is never overwritten.
    again = train(tmp_path, f"{conv_run}:2", "epochs: 1\n", "--out", str(out), "--address", ray_session)
    assert again.returncode == 2 and "already holds" in again.stderr
    assert hashlib.sha256(weights_file.read_bytes()).hexdigest() == record["weights"]["sha256"]


def test_cell_training_with_its_own_evaluator_reports_test_perplexity(ray_session, tmp_path):
    run = random_search(tmp_path, {"type": "rnn_cell", "base": 2}, {"type": "python", "target": "tests.toys:cell_toy"})
    ptb = ptb_folder(tmp_path)
    out = tmp_path / "final"
    done = train(tmp_path, run, f"""
evaluator: {{type: language_model, dataset: {{type: ptb, root: {ptb}}}, hidden_size: 16, batch_size: 8,
            bptt: 10, max_tokens_per_epoch: 2000, dropout: 0.0}}
epochs: 1
grid: {{learning_rate: [5.0]}}
""", "--out", str(out), "--address", ray_session)
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "training.json").read_text())
    model = CellLanguageModel(record["architecture"], record["model"]["vocab_size"], 16, 2, 0.0, True)
    model.load_state_dict(torch.load(out / "weights.pt", weights_only=True))
    data = load_text_splits(PtbDatasetConfig(root=str(ptb)), 0, with_test=True)
    assert perplexity(model.eval(), data.test, 10) == pytest.approx(record["test"]["test_perplexity"], rel=1e-4)
    assert record["test"]["test_perplexity"] < record["model"]["vocab_size"]  # it learned something


def test_bad_training_configs_are_one_line(conv_run, tmp_path, bad_input_cli):
    def refused(arch, config_text):
        path = tmp_path / "train.yaml"
        path.write_text(config_text)
        return bad_input_cli("train", "--arch", arch, "--config", path)

    cases = [("grid: {nope: [1]}\n", "grid.nope: not a setting of evaluator type image_classification"),
             ("grid: {learning_rate: 0.1}\n", "grid.learning_rate: must be a non-empty list"),
             ("grid: {momentum: [2.0]}\n", "grid.momentum[0]: must be < 1.0"),
             ("width_multiplier: 0\n", "width_multiplier: must be > 0.0"),
             ("epochs: [1]\n", "epochs: must be"),
             ("grid: {lr_decay_epoch: [1, 2]}\n", "grid.lr_decay_epoch: has no effect here")]
    for text, needle in cases:
        status, err = refused(conv_run, text)
        assert status == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    for arch, needle in ((f"{conv_run}:9", "--rank 9"), (tmp_path / "nowhere", "no such run directory")):
        status, err = refused(arch, "epochs: 1\n")
        assert status == 2 and needle in err, err
    assert not (conv_run / "final-rank1").exists()


def test_grid_points_are_every_combination_in_order():
    training = config_from_dict({"grid": {"learning_rate": [0.1, 0.05], "lr_decay_epoch": [None, 3]}},
                                FinalTrainingConfig)
    step = ImageClassificationEvaluatorConfig(schedule="step")
    trials = training.trials(step)
    assert trials == [{"learning_rate": 0.1, "lr_decay_epoch": None}, {"learning_rate": 0.1, "lr_decay_epoch": 3},
                      {"learning_rate": 0.05, "lr_decay_epoch": None}, {"learning_rate": 0.05, "lr_decay_epoch": 3}]
    assert len(config_from_dict({"grid": {"lr_decay_epoch": [1, 2]}}, FinalTrainingConfig).trials(step)) == 2
    either = config_from_dict({"grid": {"lr_decay_epoch": [1, 2], "schedule": ["cosine", "step"]}}, FinalTrainingConfig)
    assert len(either.trials(ImageClassificationEvaluatorConfig())) == 4
    for grid, needle in (({"lr_decay_epoch": [1, 2]}, "grid.lr_decay_epoch: has no effect here (only schedule step "
                                                       "uses it, and the schedule is cosine)"),
                         ({"reward": ["accuracy", "best_accuracy"]}, "grid.reward: has no effect here"),
                         ({"timeout_s": [60.0]}, "grid.timeout_s: has no effect here")):
        with pytest.raises(ConfigError) as ignored:
            config_from_dict({"grid": grid}, FinalTrainingConfig).trials(ImageClassificationEvaluatorConfig())
        assert needle in str(ignored.value)
    with pytest.raises(ConfigError, match="grid.lr_decay_epoch\\[0\\]: must be >= 1"):
        config_from_dict({"grid": {"lr_decay_epoch": [0]}}, FinalTrainingConfig).trials(
            ImageClassificationEvaluatorConfig())


def png_classes(folder, count, seed):
    """Two classes of generated 10x12 PNGs: dark and bright, with noise."""
    from PIL import Image
    g = torch.Generator().manual_seed(seed)
    for name, level in (("dark", 40), ("bright", 210)):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            noise = torch.randint(-30, 30, (10, 12, 3), generator=g)
            Image.fromarray((noise + level).clamp(0, 255).to(torch.uint8).numpy()).save(folder / name / f"{i}.png")


def test_an_image_folder_test_root_is_read_by_final_training_only(tmp_path):
    from nasps.training.final import prepare, train_trial
    png_classes(tmp_path / "train", 12, 0)
    png_classes(tmp_path / "test", 5, 1)
    dataset = {"type": "image_folder", "root": str(tmp_path / "train"), "image_size": 8,
               "test_root": str(tmp_path / "nowhere")}  # a search never reads it
    space = {"type": "conv", "num_filters": [4], "curriculum": {"start_depth": 2, "add_layers": 0}}
    run = random_search(tmp_path, space, {"type": "image_classification", "epochs": 2, "validation_size": 4,
                                          "dataset": dataset, "reward": "accuracy"}, children=2)

    def trained(test_root):
        evaluator = {"type": "image_classification", "epochs": 8, "batch_size": 8, "validation_size": 4,
                     "reward": "accuracy", "dataset": {**dataset, "test_root": test_root}}
        job = prepare(str(run), config_from_dict({"evaluator": evaluator}, FinalTrainingConfig))
        return train_trial(job, 0)[0]

    with pytest.raises(UserInputError, match="evaluator.dataset.test_root: .*nowhere is not a folder"):
        trained(str(tmp_path / "nowhere"))
    assert trained(None)["test_accuracy"] is None  # no test split, as before
    record = trained(str(tmp_path / "test"))
    assert record["test_accuracy"] == pytest.approx(round(record["test_accuracy"] * 10) / 10)  # of 10 images
    assert record["test_accuracy"] >= 0.9  # dark against bright
    (tmp_path / "test" / "grey").mkdir()
    with pytest.raises(UserInputError, match="test_root: .* has the classes bright, dark, grey, not those of the root"):
        trained(str(tmp_path / "test"))
