"""The GPU-hours estimate (bench/gpu_hours.py): a search's training FLOPs against a count by
hand, and the one-GPU config sized with it to about an hour."""

from pathlib import Path

import pytest

from bench.gpu_hours import children_per_depth, search_flops
from nasps.config import config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_a_search_s_training_flops_match_a_count_by_hand():
    config = config_from_dict({
        "space": {"type": "conv", "filter_heights": [3], "filter_widths": [3], "num_filters": [8],
                  "skip_connections": False, "curriculum": {"start_depth": 1, "add_layers": 0}},
        "evaluator": {"type": "image_classification", "dataset": {"type": "cifar10"},
                      "validation_size": 5000, "epochs": 2},
        "budget": {"children": 10}})
    # One 3x3 conv from 3 to 8 channels on 32x32 (a multiply-add is 2 FLOPs), then the 8 -> 10
    # classifier; training is 3 forward passes, over 45,000 images, 2 epochs, 10 children.
    forward = 2 * 32 * 32 * 3 * 8 * 9 + 2 * 8 * 10
    flops, per_depth = search_flops(config, samples=2, epochs_trained=0.5)
    assert per_depth == {1: 10}
    assert flops == pytest.approx(3 * forward * 45_000 * 2 * 0.5 * 10)


def test_the_one_gpu_search_is_about_an_hour_at_a_tenth_of_an_h100():
    config = load_config(ROOT / "configs" / "cifar10_1gpu.yaml")
    assert config.cluster.gpus_per_child == 0.25 and config.evaluator.early_stopping is not None
    assert config.space.skip_connections and config.space.curriculum.add_layers
    flops, per_depth = search_flops(config, samples=8, epochs_trained=0.7)
    assert per_depth == {6: 80, 8: 80, 10: 80, 12: 80}
    assert 0.7 < flops / (0.1 * 989e12) / 3600 < 1.4
    # The paper's search, for the README's table: 1,600 children at each of 6, 8, ..., 20 layers.
    paper = load_config(ROOT / "configs" / "cifar10.yaml")
    assert children_per_depth(paper) == {depth: 1600 for depth in range(6, 21, 2)}
