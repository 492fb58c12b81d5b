"""Small evaluators for the tests: real functions, cheap enough to run hundreds of times."""

import math
import os
import time

# The one best architecture of the toy objective: reward 1.0 only here.
TARGET = {"a": 2, "b": "y", "c": 0.5, "d": 3}


def match_fraction(arch: dict) -> float:
    """Fraction of decisions that match TARGET: one best architecture, smooth around it."""
    return sum(arch[k] == v for k, v in TARGET.items()) / len(TARGET)


def match_fraction_slow(arch: dict) -> dict:
    time.sleep(0.02)
    return {"reward": match_fraction(arch), "metrics": {"pid": os.getpid()}}


def sleep_then_score(arch: dict) -> float:
    time.sleep(float(os.environ.get("NASPS_TOY_SLEEP", "0.2")))
    return match_fraction(arch)


def flaky(arch: dict):
    """Fails in every way a user's function can, depending on the architecture."""
    if arch["a"] == 0:
        raise ValueError("a = 0 is not supported")
    if arch["a"] == 1:
        return math.nan
    if arch["a"] == 3:
        return "not a number"
    return match_fraction(arch)


def crash_on_a0(arch: dict) -> float:
    """Kills its own worker process for a = 0, as a segfault or the OOM killer would."""
    if arch["a"] == 0:
        os._exit(1)
    return match_fraction(arch)


def conv_toy(arch: dict) -> float:
    """A conv architecture's score: how many layers use 3-high filters and take skip inputs."""
    layers = arch["layers"]
    return sum(0.5 * (layer["filter_height"] == 3) + 0.5 * bool(layer["inputs"]) for layer in layers) / len(layers)


def cell_toy(arch: dict) -> float:
    """An rnn_cell architecture's score: the fraction of its nodes that use tanh."""
    return sum(node["activation"] == "tanh" for node in arch["nodes"]) / len(arch["nodes"])


def gpu_probe(arch: dict) -> dict:
    """Which GPUs Ray gave this child's worker and what CUDA sees, held for 1.5 s so that
    children overlap (the placement test needs them all running at once)."""
    import ray  # only inside a Ray worker; the module itself stays free of Ray

    started = time.time()
    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    time.sleep(1.5)
    return {"reward": match_fraction(arch),
            "metrics": {"gpu_ids": gpu_ids, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "pid": os.getpid(), "started": started, "finished": time.time()}}


def crash_once(arch: dict) -> dict:
    """Kills its worker process the first time it sees an architecture (a marker file under
    NASPS_TOY_DIR remembers), and scores it on the retry."""
    import hashlib
    marker = os.path.join(os.environ["NASPS_TOY_DIR"], hashlib.sha256(repr(sorted(arch.items())).encode()).hexdigest())
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return {"reward": match_fraction(arch), "metrics": {"pid": os.getpid()}}


def count_calls(arch: dict) -> float:
    """Appends each call to NASPS_TOY_DIR/calls (one line per call); any space, any reward."""
    line = repr(sorted(arch.items()))
    with open(os.path.join(os.environ["NASPS_TOY_DIR"], "calls"), "a") as calls:
        calls.write(line + "\n")
    return len(line) % 7 / 7


def slow_when_a3(arch: dict) -> dict:
    """0.05 s, or 0.6 s when a = 3: children of a round that differ in cost, fixed per architecture."""
    time.sleep(0.6 if arch["a"] == 3 else 0.05)
    return {"reward": match_fraction(arch), "metrics": {"pid": os.getpid()}}


def hang_when_a0(arch: dict) -> float:
    """Never returns for a = 0 (a deadlock, a stuck data loader), as no deadline of its own can stop."""
    while arch["a"] == 0:
        time.sleep(3600)
    return match_fraction(arch)


def broken_unless_fixed(arch: dict) -> float:
    """Raises for every architecture until the file NASPS_TOY_DIR/fixed exists (the user fixed it)."""
    if not os.path.exists(os.path.join(os.environ["NASPS_TOY_DIR"], "fixed")):
        raise RuntimeError("the evaluator is broken: no such dataset /data/missing")
    return match_fraction(arch)


def match_fraction_counted(arch: dict) -> dict:
    """match_fraction_slow that also appends each call to NASPS_TOY_DIR/calls."""
    with open(os.path.join(os.environ["NASPS_TOY_DIR"], "calls"), "a") as calls:
        calls.write(repr(sorted(arch.items())) + "\n")
    return match_fraction_slow(arch)


def fails_every_way(arch: dict):
    """flaky, and for a = 0 kills its own worker process, as a segfault or the OOM killer would."""
    if arch["a"] == 0:
        os._exit(1)
    if arch["a"] == 2 and arch["b"] == "x":
        raise ValueError("b = x is not supported with a = 2")
    return flaky(arch)


def conv_slow_when_wide(arch: dict) -> float:
    """conv_toy, after 0.6 s when the first layer has the wider filter count, else 0.05 s."""
    time.sleep(0.6 if arch["layers"][0]["num_filters"] == 16 else 0.05)
    return conv_toy(arch)


def learning_curve(arch: dict, report) -> dict:
    """A child that climbs to its match fraction over 10 steps, reporting each; it stops when
    told to, with the score it has then."""
    target, score = match_fraction(arch), 0.0
    for step in range(1, 11):
        score = target * step / 10
        if report(step, score):
            break
    return {"reward": score, "metrics": {"epochs": step, "planned_epochs": 10}}


def match_with_metrics(arch: dict) -> dict:
    """match_fraction with metrics of every kind beside it; fails for a = 0."""
    if arch["a"] == 0:
        raise ValueError("a = 0 is not supported")
    reward = match_fraction(arch)
    return {"reward": reward, "metrics": {"matches": 4 * reward, "acc@1": reward, "note": "text", "curve": [1, 2],
                                          "flag": True, "missing": math.nan}}


def climb(config: dict) -> None:
    """A Ray Tune trial that climbs to its architecture's match fraction in 4 steps, reporting
    each as ``score``, with the param_space's ``epochs`` alongside."""
    from ray import tune  # only inside a Tune trial; the module itself stays free of Ray

    target = match_fraction(config["arch"])
    for step in range(1, 5):
        tune.report({"score": target * step / 4, "epochs": config["epochs"]})
