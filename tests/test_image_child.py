"""Training conv children on images: digits, a user's image folder, failures as statuses."""

import subprocess

import pytest
import torch

from nasps.config import config_from_dict
from nasps.data.images import load_image_splits
from nasps.errors import ConfigError
from nasps.evaluators import build_evaluator, run_child
from nasps.evaluators.image import reward_of
from nasps.spaces import Architecture
from nasps.training.devices import pick_precision
from tests.conftest import NASPS, ROOT

LAYER = {"type": "conv", "filter_height": 3, "filter_width": 3, "num_filters": 16, "stride": 1}


def chain(depth=3, hyperparameters=None, **layer):
    layers = [{**LAYER, **layer, "inputs": [i - 1] if i else []} for i in range(depth)]
    return Architecture.from_value("conv", {"layers": layers, "hyperparameters": hyperparameters or {}})


def evaluator(**settings):
    raw = {"type": "image_classification", "epochs": 4, "batch_size": 64, "crop_padding": 1,
           "flip": False, "learning_rate": 0.05, **settings}
    return build_evaluator(config_from_dict({"space": {"type": "conv"}, "evaluator": raw}).evaluator)


def test_a_tiny_digits_child_learns():
    torch.set_num_threads(1)
    result = run_child(evaluator(reward="accuracy"), chain())
    assert result.status == "ok", result.error
    m = result.metrics
    assert m["val_accuracy"] > 0.6  # chance is 0.1
    assert result.reward == m["val_accuracy"] and len(m["val_accuracies"]) == m["epochs"] == 4
    assert m["params"] > 0 and m["train_loss"] < 2.3 and m["images_per_s"] > 0


def test_validation_is_a_seeded_subset_of_the_training_split():
    from nasps.config import DigitsDatasetConfig
    a = load_image_splits(DigitsDatasetConfig(), None, seed=0)
    b = load_image_splits(DigitsDatasetConfig(), None, seed=0)
    c = load_image_splits(DigitsDatasetConfig(), None, seed=1)
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)
    total = len(a.train_x) + len(a.val_x)
    assert total == 1797 - int(1797 * 0.2)  # the test fifth of the digits is never loaded
    assert len(a.val_x) == int(total * 0.2) and a.channels == 1 and a.num_classes == 10


def test_rewards():
    accs = [0.2, 0.5, 0.9, 0.6, 0.7, 0.8, 0.75]
    assert reward_of("accuracy", accs) == 0.75
    assert reward_of("best_accuracy", accs) == 0.9
    assert reward_of("accuracy_cubed_last5", accs) == pytest.approx(0.9 ** 3)  # last 5: 0.9 .. 0.75


def test_hyperparameter_decisions_reach_the_trainer():
    ev = evaluator()
    result = run_child(ev, chain(depth=1, hyperparameters={"epochs": 2, "learning_rate": 0.01}))
    assert result.status == "ok" and result.metrics["epochs"] == 2
    assert ev.settings_for({"learning_rate": 0.01}).learning_rate == 0.01


def test_a_blown_up_child_is_diverged():
    result = run_child(evaluator(epochs=2), chain(depth=1, hyperparameters={"learning_rate": 1e30}))
    assert result.status == "diverged" and result.reward is None and "loss" in result.error


def test_a_slow_child_is_timeout():
    result = run_child(evaluator(timeout_s=0.001), chain())
    assert result.status == "timeout" and result.reward is None


def test_out_of_memory_is_a_status_and_the_worker_goes_on():
    ev = evaluator(epochs=1)
    # Layer 1 would need a 1e6 x 1e6 x 1 x 1 weight: 4 TB, refused by the allocator at once.
    huge = chain(depth=2, num_filters=1_000_000, filter_height=1, filter_width=1)
    result = run_child(ev, huge)
    assert result.status == "oom" and "memory" in result.error
    assert run_child(ev, chain(depth=1)).status == "ok"


def test_image_folder_of_generated_pngs(tmp_path):
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for name, level in (("dark", 40), ("bright", 210)):
        (tmp_path / name).mkdir()
        for i in range(15):
            noise = torch.randint(-30, 30, (10, 12, 3), generator=g)
            pixels = (noise + level).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    (tmp_path / "dark" / "notes.txt").write_text("not an image")
    dataset = {"type": "image_folder", "root": str(tmp_path), "image_size": 8}
    result = run_child(evaluator(dataset=dataset, validation_size=6, epochs=6, reward="accuracy"),
                       chain(depth=2))
    assert result.status == "ok", result.error
    assert result.reward >= 5 / 6  # dark against bright
    from nasps.config import ImageFolderDatasetConfig
    splits = load_image_splits(ImageFolderDatasetConfig(root=str(tmp_path), image_size=8), 6, 0)
    assert splits.train_x.shape == (24, 3, 8, 8) and splits.num_classes == 2


def test_missing_cifar10_is_one_clear_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("space: {type: conv}\n"
                      f"evaluator: {{type: image_classification, dataset: {{type: cifar10, root: {tmp_path}}}}}\n")
    done = subprocess.run(NASPS + ["validate", str(config)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "evaluator.dataset.root" in lines[0] and "cifar-10-batches-py" in lines[0]


@pytest.mark.parametrize("raw, message", [
    ({"space": {"type": "categorical", "decisions": [{"name": "a", "choices": [1]}]}},
     "evaluator.type: image_classification trains conv networks; space.type is categorical, not conv"),
    ({"space": {"type": "conv", "hyperparameters": [{"name": "lr", "choices": [0.1]}]}},
     "space.hyperparameters[0].name: 'lr' is not a trainer setting "
     "(one of learning_rate, momentum, weight_decay, batch_size, epochs)"),
    ({"space": {"type": "conv", "hyperparameters": [{"name": "epochs", "choices": [0, 1]}]}},
     "space.hyperparameters[0].choices[0]: must be >= 1, got 0"),
    ({"space": {"type": "conv", "hyperparameters": [{"name": "learning_rate", "choices": ["fast"]}]}},
     "space.hyperparameters[0].choices[0]: must be a number, got a string 'fast'"),
])
def test_evaluator_and_space_must_agree(raw, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict({**raw, "evaluator": {"type": "image_classification"}})
    assert str(info.value) == message


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_precision_auto_picks_by_device_and_gpu():
    cuda = torch.device("cuda")  # a name only: nothing runs on it here
    assert pick_precision("auto", torch.device("cpu")).name == "fp32"
    assert pick_precision("auto", cuda, bf16_supported=True).name == "bf16"
    assert pick_precision("auto", cuda, bf16_supported=False).name == "fp16"  # V100, T4
    assert [pick_precision(name, cuda).name for name in ("bf16", "fp16", "fp32")] == ["bf16", "fp16", "fp32"]


@pytest.mark.parametrize("name, dtype, scaled", [("bf16", torch.bfloat16, False), ("fp16", torch.float16, True),
                                                 ("fp32", torch.float32, False)])
def test_each_precision_autocasts_to_its_type_and_only_fp16_scales_gradients(name, dtype, scaled):
    precision = pick_precision(name, torch.device("cpu"))
    with precision.autocast():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == dtype
    assert precision.scaler().is_enabled() == scaled


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_digits_child_learns_in_low_precision_on_the_cpu_as_in_fp32(precision):
    """A two-layer child (fp16 convolutions are slow on a CPU): well above chance (0.1), and
    near the same child trained in fp32."""
    torch.set_num_threads(1)
    low, full = (run_child(evaluator(reward="accuracy", precision=p), chain(depth=2)) for p in (precision, "fp32"))
    assert low.status == full.status == "ok", low.error
    assert (low.metrics["precision"], full.metrics["precision"]) == (precision, "fp32")
    assert low.metrics["val_accuracy"] > 0.3 and abs(low.metrics["val_accuracy"] - full.metrics["val_accuracy"]) < 0.1


@pytest.mark.gpu
@needs_cuda
def test_a_digits_child_on_the_gpu_learns_as_on_the_cpu():
    """The CUDA path (resident data on the GPU, channels_last, autocast as auto picks); its CPU twin is
    test_a_tiny_digits_child_learns."""
    ev = evaluator(reward="accuracy", device="cuda")
    result = run_child(ev, chain())
    assert result.status == "ok", result.error
    assert ev.data.train_x.is_cuda and result.metrics["val_accuracy"] > 0.6
    assert result.metrics["precision"] == ("bf16" if torch.cuda.is_bf16_supported(including_emulation=False)
                                           else "fp16")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_a_digits_child_on_the_gpu_learns_in_each_precision(precision):
    """Their CPU twins: test_a_digits_child_learns_in_low_precision_on_the_cpu_as_in_fp32 and
    test_a_tiny_digits_child_learns (fp32)."""
    result = run_child(evaluator(reward="accuracy", device="cuda", precision=precision), chain())
    assert result.status == "ok", result.error
    assert result.metrics["precision"] == precision and result.metrics["val_accuracy"] > 0.6


@pytest.mark.gpu
@needs_cuda
def test_cuda_out_of_memory_is_a_status_and_the_worker_goes_on():
    ev = evaluator(epochs=1, device="cuda", batch_size=4096)
    huge = chain(depth=2, num_filters=1_000_000, filter_height=1, filter_width=1)
    assert run_child(ev, huge).status == "oom"
    assert run_child(ev, chain(depth=1)).status == "ok"


@pytest.mark.slow
def test_compiled_child_trains():
    """evaluator.compile: torch.compile on CPU (about 30 s of compilation)."""
    result = run_child(evaluator(compile=True, epochs=1, reward="accuracy"), chain(depth=1))
    assert result.status == "ok", result.error
    assert result.metrics["val_accuracy"] > 0.1 and result.metrics["params"] > 0


def test_an_empty_class_folder_is_one_clear_error(tmp_path):
    from PIL import Image

    from nasps.config import ImageFolderDatasetConfig
    from nasps.errors import UserInputError
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    Image.new("RGB", (4, 4)).save(tmp_path / "cats" / "a.png")
    with pytest.raises(UserInputError, match="class folder .*dogs holds no images"):
        load_image_splits(ImageFolderDatasetConfig(root=str(tmp_path)), 1, 0)
