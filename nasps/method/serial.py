"""The reference search loop: sample -> evaluate -> update, in one process.

This is the whole method readable top to bottom. The Ray runtime (``nasps.runtime``) calls the
same pieces (Controller, Ledger, ParameterShard, run_child) in a distributed arrangement; tests
check the two agree. The loop here is one replica, one shard and children trained one by one.
"""

from __future__ import annotations

from pathlib import Path

from nasps.config import Config
from nasps.evaluators import build_evaluator, run_child
from nasps.method.controller import Controller
from nasps.method.parameter_server import AdamSettings, ParameterShard
from nasps.policies import build_policy
from nasps.spaces import build_space
from nasps.state.ledger import Ledger, Progress, PushReport
from nasps.state.rundir import open_new_store
from nasps.state.store import PushRow
from nasps.views.board import open_board
from nasps.views.mlflow_log import check_mlflow, open_mlflow


def adam_settings(config: Config) -> AdamSettings:
    strategy = config.strategy
    lr = strategy.learning_rate_for(config.space.type) if hasattr(strategy, "learning_rate_for") else 0.0
    beta1, beta2 = getattr(strategy, "adam_betas", (0.9, 0.999))
    return AdamSettings(learning_rate=lr, beta1=beta1, beta2=beta2)


def open_views(run_dir: str | Path, config: Config) -> list:
    """The views that follow the run's store and are on: TensorBoard, MLflow. Each has
    ``follow()`` and ``close()``, and a failure in one costs that view only."""
    return [view for view in (open_board(run_dir, config), open_mlflow(run_dir, config)) if view is not None]


def run_serial(config: Config, run_dir: str | Path) -> tuple[Progress, ParameterShard]:
    check_mlflow(config)
    space = build_space(config.space)
    policy = build_policy(config.strategy, space.decisions())
    evaluator = build_evaluator(config.evaluator)
    store = open_new_store(run_dir, config)
    ledger = Ledger(store, config.budget.children, config.budget.sample_cap,
                    max_consecutive_failures=config.budget.max_consecutive_failures,
                    recent=config.strategy.recent_children, early_stopping=config.evaluator.early_stopping)
    views = open_views(run_dir, config)
    shard = ParameterShard(0, policy.initial_params(config.seed), adam_settings(config))
    controller = Controller(0, space, policy, config.strategy,
                            config.cluster.children_per_replica, config.seed)
    try:
        while not ledger.done:
            params, version = shard.pull()
            controller.observe(*ledger.recent_since(controller.known))
            batch, archs = controller.sample(params, ledger.progress.samples)
            admissions = ledger.admit(archs)
            outcomes = [None] * len(archs)
            # Trained children first, so a repeat within the batch can reuse their result.
            for i, (arch, admission) in enumerate(zip(archs, admissions)):
                if admission.kind == "run":
                    result = run_child(evaluator, arch, ledger.thresholds().get(arch.depth, {}))
                    outcomes[i] = ledger.record(arch, result, 0, version)
            for i, (arch, admission) in enumerate(zip(archs, admissions)):
                if admission.kind in ("cached", "wait"):
                    outcomes[i] = ledger.record_cached(arch, 0, version)
            scored = controller.feedback(batch.actions, outcomes)
            gradient = controller.gradient(params, scored)
            if gradient is not None:
                seq = controller.next_seq()
                receipt = shard.push("0", seq, gradient, version)
                push = PushRow(0, seq, 0, version, receipt.version, receipt.staleness, receipt.applied)
                ledger.record_push(PushReport(0, seq, tuple(x.child_id for x in scored), receipt.staleness,
                                              (push,), controller.round_stats(seq, batch.entropies, scored,
                                                                              archs[0].depth)))
            for view in views:
                view.follow()
        return ledger.progress, shard
    finally:
        ledger.close()
        for view in views:
            view.close()
