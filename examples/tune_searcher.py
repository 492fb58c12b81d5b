"""nasps's controller inside your own Ray Tune experiment, with ASHA deciding how long each
trial trains.

Each trial is a scikit-learn multilayer perceptron on its handwritten digits whose shape the
controller chooses; the trial reports its validation accuracy after every epoch, ASHA stops
the unpromising ones, and the controller learns from every trial's last score. Run it as

    python examples/tune_searcher.py --trials 40

(`pip install 'nasps[tune]'`).
"""

from __future__ import annotations

import argparse

SPACE = {"type": "categorical", "decisions": [
    {"name": "layers", "choices": [1, 2, 3]},
    {"name": "width", "choices": [8, 16, 32, 64]},
    {"name": "activation", "choices": ["identity", "logistic", "tanh", "relu"]},
    {"name": "alpha", "choices": [1e-4, 1e-2, 1.0]},
]}


def train(config: dict) -> None:
    """A Tune trainable: ``config["arch"]`` is the architecture the searcher proposed."""
    import warnings

    import numpy as np
    from ray import tune
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    arch = config["arch"]
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.5, random_state=0)
    model = MLPClassifier(hidden_layer_sizes=(arch["width"],) * arch["layers"], activation=arch["activation"],
                          alpha=arch["alpha"], learning_rate_init=0.01, random_state=0)
    for _ in range(config["epochs"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one epoch per call does not converge, by design
            model.partial_fit(x_train, y_train, classes=np.arange(10))
        tune.report({"val_accuracy": model.score(x_val, y_val)})


def main() -> None:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from nasps.tune import NaspsSearcher

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--storage", default=None, help="where Tune keeps the experiment (default ~/ray_results)")
    args = parser.parse_args()

    searcher = NaspsSearcher(SPACE, {"type": "reinforce", "policy": "lstm"}, children_per_update=4,
                             max_trials=args.trials)
    tuner = tune.Tuner(
        train, param_space={"epochs": args.epochs},
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=ASHAScheduler(max_t=args.epochs, grace_period=1),
                                    num_samples=args.trials, metric="val_accuracy", mode="max", reuse_actors=True),
        run_config=tune.RunConfig(storage_path=args.storage, verbose=0))
    best = tuner.fit().get_best_result()
    print(f"best: {best.config['arch']} val_accuracy {best.metrics['val_accuracy']:.3f} "
          f"after {searcher.updates} controller updates")


if __name__ == "__main__":
    main()
