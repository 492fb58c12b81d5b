"""The typed, frozen config tree of a search, and its strict YAML loader.

A config file is YAML read with ``yaml.safe_load``. It becomes a tree of frozen dataclasses;
every field carries a one-line doc and its allowed range. Unknown keys, wrong types and
out-of-range values are rejected with the dotted key named (and, for a typo, the closest valid
key suggested). Sections whose meaning depends on a ``type`` key (``space``, ``strategy``,
``evaluator``) are tagged unions: each type has its own dataclass and accepts only its keys.

Each part of nasps receives only its own section (``SpaceConfig`` for a space, and so on).
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import itertools
import math
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    ClassVar,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import yaml

from nasps.errors import ConfigError

Choice = Union[bool, int, float, str]


def option(default: Any, doc: str, **checks: Any) -> Any:
    """A config field with a default, a one-line doc and optional range checks.

    Checks: ``min``/``max`` (inclusive), ``above`` (exclusive lower bound), ``below``
    (exclusive upper bound), ``min_items`` for lists.
    """
    if isinstance(default, (list, dict)):
        raise TypeError("mutable defaults must be tuples or default_factory")
    return field(default=default, metadata={"doc": doc, **checks})


def required(doc: str, **checks: Any) -> Any:
    return field(metadata={"doc": doc, "required": True, **checks})


def python_only(doc: str) -> Any:
    """A field that only Python sets (``nasps.search(evaluator=fn)``): no YAML key, never written
    to a run directory, not part of a config's equality."""
    return field(default=None, compare=False, repr=False, metadata={"doc": doc, "python_only": True})


def yaml_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config dataclass that a YAML file may set."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("python_only")]


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True, kw_only=True)
class DecisionConfig:
    """One decision of a categorical space: a name and the values it may take."""

    name: str = required("name of the decision; the key of this value in an architecture")
    choices: tuple[Choice, ...] = required("the values this decision may take, in order", min_items=1)

    def check(self, key: str) -> None:
        if not self.name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", self.name):
            raise ConfigError(f"{key}.name: {self.name!r} is not a valid decision name "
                              "(letters, digits, '_', '-', '.'; not starting with a digit)")
        seen = set()
        for value in self.choices:
            marker = (type(value).__name__, value)
            if marker in seen:
                raise ConfigError(f"{key}.choices: {value!r} is listed twice")
            seen.add(marker)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{key}.choices: {value!r} is not a finite number")


@dataclass(frozen=True, kw_only=True)
class CategoricalSpaceConfig:
    """An ordered list of named decisions, each picking one value from its list."""

    type: Literal["categorical"] = option("categorical", "search space type")
    decisions: tuple[DecisionConfig, ...] = required(
        "the decisions, in the order the policy makes them", min_items=1)

    def check(self, key: str) -> None:
        _check_unique_names(f"{key}.decisions", self.decisions)


def _check_choices(key: str, values: Sequence[Any], allowed: Sequence[Any] = (), minimum: int = 1) -> None:
    """A list of choices: no repeats, each allowed (when ``allowed`` is given) or >= ``minimum``."""
    for i, value in enumerate(values):
        if values.index(value) != i:
            raise ConfigError(f"{key}: {value!r} is listed twice")
        if allowed and value not in allowed:
            raise ConfigError(f"{key}[{i}]: must be one of {', '.join(map(str, allowed))}; got {value!r}")
        if not allowed and value < minimum:
            raise ConfigError(f"{key}[{i}]: must be >= {minimum}, got {value}")


def _check_unique_names(key: str, decisions: Sequence[DecisionConfig]) -> None:
    names = [d.name for d in decisions]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{key}: the name {name!r} is used twice")


@dataclass(frozen=True, kw_only=True)
class CurriculumConfig:
    """The depth curriculum: children start shallow and grow as the search goes on."""

    start_depth: int = option(6, "layers of the first children", min=1)
    add_layers: int = option(2, "layers added at each step (0 = the depth never changes)", min=0)
    every_children: int = option(
        1600, "children sampled, all replicas together, between two steps", min=1)
    max_depth: int = option(24, "the depth stops growing here", min=1)

    def check(self, key: str) -> None:
        if self.add_layers and self.start_depth > self.max_depth:
            raise ConfigError(f"{key}.start_depth: {self.start_depth} is above max_depth {self.max_depth}")

    @property
    def deepest(self) -> int:
        """The largest depth the curriculum reaches (max_depth only matters when it grows)."""
        return self.max_depth if self.add_layers else self.start_depth

    def depth_at(self, samples: int) -> int:
        steps = samples // self.every_children
        return min(self.deepest, self.start_depth + steps * self.add_layers)


CONV_LAYER_TYPES = ("conv", "max_pool", "avg_pool")


@dataclass(frozen=True, kw_only=True)
class ConvSpaceConfig:
    """The paper's convolutional networks: per layer a filter size, filter count, stride and
    (with anchors) which earlier layers feed it. A list of one value fixes that value."""

    type: Literal["conv"] = option("conv", "search space type")
    filter_heights: tuple[int, ...] = option((1, 3, 5, 7), "filter heights a layer may take", min_items=1)
    filter_widths: tuple[int, ...] = option((1, 3, 5, 7), "filter widths a layer may take", min_items=1)
    num_filters: tuple[int, ...] = option((24, 36, 48, 64), "output channels a conv layer may take",
                                          min_items=1)
    strides: tuple[int, ...] = option((1,), "strides a layer may take; [1] fixes it, [1, 2, 3] predicts it",
                                      min_items=1)
    layer_types: tuple[str, ...] = option(
        ("conv",), "layer types: conv, max_pool, avg_pool (pooling keeps its input's channels)",
        min_items=1)
    skip_connections: bool = option(
        True, "anchor points: each layer picks which earlier layers feed it (else a plain chain)")
    hyperparameters: tuple[DecisionConfig, ...] = option(
        (), "decisions made once per child, e.g. {name: learning_rate, choices: [0.1, 0.05]}")
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig,
                                         metadata={"doc": "the depth curriculum"})

    def check(self, key: str) -> None:
        for name in ("filter_heights", "filter_widths", "num_filters", "strides"):
            _check_choices(f"{key}.{name}", getattr(self, name))
        _check_choices(f"{key}.layer_types", self.layer_types, CONV_LAYER_TYPES)
        _check_unique_names(f"{key}.hyperparameters", self.hyperparameters)
        lists = (self.filter_heights, self.filter_widths, self.num_filters, self.strides, self.layer_types)
        decides = self.skip_connections or any(len(values) > 1 for values in lists)
        if self.curriculum.add_layers and not decides:
            # Every depth would be the same sequence of decisions: the depth could not be read back.
            raise ConfigError(f"{key}.curriculum.add_layers: the layers make no decision (each list has one "
                              "value and skip_connections is false), so the depth cannot grow; set it to 0")


RNN_COMBINATIONS = ("add", "elem_mult", "max")
RNN_ACTIVATIONS = ("identity", "tanh", "sigmoid", "relu", "sin")


@dataclass(frozen=True, kw_only=True)
class RnnCellSpaceConfig:
    """The paper's recurrent cell: a binary tree of `base` leaves over (x_t, h_{t-1}), each node
    a combination and an activation, with c_{t-1} injected into one node and c_t taken from one."""

    type: Literal["rnn_cell"] = option("rnn_cell", "search space type")
    base: int = option(8, "leaves of the tree: 2, 4, 8 or 16 (the paper's cells have 8)")
    combinations: tuple[str, ...] = option(
        ("add", "elem_mult"), "how a node joins its two inputs: add, elem_mult, max", min_items=1)
    activations: tuple[str, ...] = option(
        ("identity", "tanh", "sigmoid", "relu"), "a node's activation: identity, tanh, sigmoid, relu, sin",
        min_items=1)
    hyperparameters: tuple[DecisionConfig, ...] = option(
        (), "decisions made once per child, e.g. {name: learning_rate, choices: [20, 10]}")
    skip_dead_cells: bool = option(
        True, "draw again, untrained, a cell whose h_t cannot depend on its input (it would learn only "
        "the output's frequencies); false trains them, as the paper did")

    def check(self, key: str) -> None:
        if self.base not in (2, 4, 8, 16):
            raise ConfigError(f"{key}.base: must be one of 2, 4, 8, 16; got {self.base}")
        _check_choices(f"{key}.combinations", self.combinations, RNN_COMBINATIONS)
        _check_choices(f"{key}.activations", self.activations, RNN_ACTIVATIONS)
        _check_unique_names(f"{key}.hyperparameters", self.hyperparameters)


# A tagged union: a section without a `type` key is the first of these.
SpaceConfig = Union[CategoricalSpaceConfig, ConvSpaceConfig, RnnCellSpaceConfig]


@dataclass(frozen=True, kw_only=True)
class RandomStrategyConfig:
    """Random search: every decision uniform and independent. The baseline to beat."""

    type: Literal["random"] = option("random", "search strategy type")

    @property
    def recent_children(self) -> int:
        return 0  # it proposes from no earlier child


@dataclass(frozen=True, kw_only=True)
class LSTMPolicyConfig:
    """The paper's controller: an LSTM that emits one decision per step (section 3.1). The paper
    samples from its raw logits; the defaults soften them (temperature 5, tanh 2.5), which is
    what lets it learn at the budgets of 100 to 2,000 children that people run."""

    hidden_size: int = option(35, "hidden units per LSTM layer (also the embedding size)", min=1)
    num_layers: int = option(2, "stacked LSTM layers", min=1)
    init_range: float = option(0.08, "parameters start uniform in [-init_range, init_range]", above=0.0)
    temperature: Union[float, None] = option(
        5.0, "logits are divided by this before sampling (null = off, as in the paper)", min=0.01)
    tanh_constant: Union[float, None] = option(
        2.5, "logits become C*tanh(logits), bounding them to [-C, C] (null = off, as in the paper)",
        above=0.0)


@dataclass(frozen=True, kw_only=True)
class ScreeningConfig:
    """A reward predictor fitted on the children trained so far screens the controller's
    samples: of ``candidates`` samples, the one it ranks best among those not trained yet is
    trained (nasps.method.predictor)."""

    candidates: int = option(8, "architectures the policy samples for each child trained; the reward "
                                "predictor's favourite among those not trained yet is trained (1 = off: "
                                "every sample is trained)", min=1)
    warmup: int = option(10, "children that trained ok before the predictor screens; until then the "
                             "policy's samples are trained as drawn", min=1)
    history: int = option(1000, "the predictor learns from the last this many children that trained ok",
                          min=1)
    ridge: float = option(3.0, "the ridge regression's regularisation", above=0.0)


@dataclass(frozen=True, kw_only=True)
class ReinforceStrategyConfig:
    """REINFORCE with an exponential-moving-average baseline (Zoph & Le 2017, section 3.2)."""

    type: Literal["reinforce"] = option("reinforce", "search strategy type")
    policy: Literal["factorized", "lstm"] = option(
        "factorized", "the policy: factorized (one logit vector per decision) or lstm (the paper's)")
    lstm: LSTMPolicyConfig = field(default_factory=LSTMPolicyConfig,
                                   metadata={"doc": "the LSTM controller (policy: lstm)"})
    learning_rate: Union[float, None] = option(
        None, "Adam learning rate; null = the policy's default (factorized 0.05, lstm 0.01; the paper's "
              "6e-4, 5e-4 on rnn_cell, are for 12,800 children)", above=0.0)
    adam_betas: tuple[float, float] = option((0.9, 0.999), "Adam's (beta1, beta2)")
    baseline_decay: float = option(
        0.95, "decay of the reward moving average b: b <- decay*b + (1-decay)*R", min=0.0, below=1.0)
    entropy_weight: Union[float, None] = option(
        None, "weight of the policy-entropy bonus added to the objective (0 = off); null = the policy's "
              "default (lstm 0.001, factorized 0)", min=0.0)
    normalize_advantages: bool = option(
        False, "divide each batch's advantages R-b by their standard deviation")
    learn_from_repeats: bool = option(
        True, "architectures sampled again (cached rows) enter the gradient like new ones")
    failure_reward: Union[float, None] = option(
        None, "reward given to failed or diverged children; null leaves them out of the gradient")
    screening: ScreeningConfig = field(default_factory=ScreeningConfig,
                                       metadata={"doc": "the reward predictor that screens samples"})

    def check(self, key: str) -> None:
        for i, beta in enumerate(self.adam_betas):
            if not 0.0 <= beta < 1.0:
                raise ConfigError(f"{key}.adam_betas[{i}]: must be in [0, 1), got {beta}")
        if self.failure_reward is not None and not math.isfinite(self.failure_reward):
            raise ConfigError(f"{key}.failure_reward: must be a finite number or null")

    def learning_rate_for(self, space_type: str) -> float:
        """The learning rate in force: the configured one, or the policy's default. The LSTM's
        is 0.01 on every space; the paper's 6e-4 (5e-4 on rnn_cell) moved its policy over 12,800
        children pushed by 100 replicas, and barely moves it in a few hundred."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 0.01 if self.policy == "lstm" else 0.05

    @property
    def entropy_weight_in_force(self) -> float:
        """The configured entropy bonus, or the policy's default (keeps the LSTM from settling
        on a few architectures in the first hundred children)."""
        if self.entropy_weight is not None:
            return self.entropy_weight
        return 1e-3 if self.policy == "lstm" else 0.0

    @property
    def recent_children(self) -> int:
        """How many of the last children that trained ok the controller proposes from."""
        return self.screening.history if self.screening.candidates > 1 else 0


@dataclass(frozen=True, kw_only=True)
class EvolutionStrategyConfig:
    """Regularised (aging) evolution (Real et al. 2019): mutants of the best of a few members of
    a population made of the last children trained; the oldest leaves, not the worst."""

    type: Literal["evolution"] = option("evolution", "search strategy type")
    population: int = option(10, "the population is the last this many children that trained ok; "
                                 "until it is full, children are random", min=2)
    sample_size: int = option(3, "members drawn at random for each mutant; the best of them is its parent",
                              min=1)

    @property
    def recent_children(self) -> int:
        return self.population

    def check(self, key: str) -> None:
        if self.sample_size > self.population:
            raise ConfigError(f"{key}.sample_size: {self.sample_size} is more than the population "
                              f"({self.population})")


# A tagged union: the first type is the one a section without a `type` key gets.
StrategyConfig = Union[ReinforceStrategyConfig, RandomStrategyConfig, EvolutionStrategyConfig]


@dataclass(frozen=True, kw_only=True)
class EarlyStoppingConfig:
    """Stops a child whose validation score after epoch e is below a quantile of the scores the
    run's earlier children of its depth had after epoch e (Google Vizier's median stopping rule
    at 0.5). A python evaluator's epochs are the steps it reports. The defaults are those of
    Optuna's median pruner: from the first epoch on, once 5 children have a score there."""

    grace_epochs: int = option(1, "epochs every child trains before it may be stopped", min=1)
    keep_quantile: float = option(
        0.5, "a child stops when its score is below this quantile of the earlier children's at the "
             "same epoch (0.5: the median rule; lower keeps more)", above=0.0, below=1.0)
    min_children: int = option(5, "earlier children that must have a score at an epoch before any child "
                                  "is stopped there", min=1)


EARLY_STOPPING_DOC = "stop hopeless children early (null = off: every child trains to the end)"


@dataclass(frozen=True, kw_only=True)
class PythonEvaluatorConfig:
    """Scores an architecture by calling a user's function ``fn(arch) -> reward``."""

    type: Literal["python"] = option("python", "evaluator type")
    target: str = required("the function to call, as 'package.module:function'")
    timeout_s: Union[float, None] = option(
        None, "a child still running this long after it was sent ends as timeout: its worker is killed "
              "and replaced (null = no deadline)", above=0.0)
    early_stopping: Union[EarlyStoppingConfig, None] = option(None, EARLY_STOPPING_DOC)
    function: Optional[Callable[..., Any]] = python_only(
        "the function itself, when nasps.search(evaluator=fn) gave one; target then names it")

    def check(self, key: str) -> None:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.target):
            raise ConfigError(f"{key}.target: {self.target!r} is not of the form "
                              "'package.module:function'")


@dataclass(frozen=True, kw_only=True)
class DigitsDatasetConfig:
    """scikit-learn's handwritten digits: 8x8 grey, 10 classes, shipped with scikit-learn."""

    type: Literal["digits"] = option("digits", "dataset type")


@dataclass(frozen=True, kw_only=True)
class Cifar10DatasetConfig:
    """CIFAR-10 in torchvision's format (the cifar-10-batches-py folder)."""

    type: Literal["cifar10"] = option("cifar10", "dataset type")
    root: str = option("~/.cache/nasps/cifar10", "folder that holds (or will hold) cifar-10-batches-py")
    download: bool = option(False, "fetch CIFAR-10 into root when it is not there")


@dataclass(frozen=True, kw_only=True)
class ImageFolderDatasetConfig:
    """A user's images in root/<class>/<image> folders (torchvision's ImageFolder layout)."""

    type: Literal["image_folder"] = option("image_folder", "dataset type")
    root: str = required("folder with one sub-folder of images per class")
    test_root: Union[str, None] = option(
        None, "a folder of the same class folders holding test images, read only by nasps train "
              "(never by a search); null = no test split")
    image_size: int = option(32, "images are resized to image_size x image_size pixels", min=1)
    grayscale: bool = option(False, "read images as one grey channel instead of RGB")


ImageDatasetConfig = Union[DigitsDatasetConfig, Cifar10DatasetConfig, ImageFolderDatasetConfig]

# Trainer settings that a conv space's `hyperparameters` decision of the same name overrides.
TRAINER_HYPERPARAMETERS = ("learning_rate", "momentum", "weight_decay", "batch_size", "epochs")


@dataclass(frozen=True, kw_only=True)
class ImageClassificationEvaluatorConfig:
    """Trains each conv child on an image dataset with SGD and scores it on the validation split.
    Defaults are the paper's CIFAR-10 settings."""

    TRAINS: ClassVar[str] = "conv"  # the space whose networks it trains (and nasps train trains)
    SETTINGS: ClassVar[tuple[str, ...]] = TRAINER_HYPERPARAMETERS  # what space.hyperparameters may choose

    type: Literal["image_classification"] = option("image_classification", "evaluator type")
    dataset: ImageDatasetConfig = field(default_factory=DigitsDatasetConfig,
                                        metadata={"doc": "the images children learn"})
    validation_size: Union[int, None] = option(
        None, "training images held out, at random (seeded), to score children; null = 5000 for "
        "cifar10, 20% otherwise", min=1)
    epochs: int = option(50, "training epochs of each child", min=1)
    batch_size: int = option(128, "images per SGD step", min=1)
    learning_rate: float = option(0.1, "SGD learning rate at the start of the schedule", above=0.0)
    momentum: float = option(0.9, "SGD momentum", min=0.0, below=1.0)
    nesterov: bool = option(True, "Nesterov momentum")
    weight_decay: float = option(1e-4, "L2 weight decay", min=0.0)
    bn_epsilon: float = option(1e-5, "batch norm epsilon of every conv layer", above=0.0)
    lr_decay_epoch: Union[int, None] = option(
        None, "with schedule step: the epoch where the learning rate drops 10x "
              "(null: 10x at half of the epochs, 100x at three quarters)", min=1)
    schedule: Literal["cosine", "step", "constant"] = option(
        "cosine", "learning-rate schedule over the epochs: cosine, step (x0.1 at 50% and 75%), constant")
    crop_padding: int = option(4, "augmentation: random crops of the image padded by this many pixels "
                               "(0 = off)", min=0)
    flip: bool = option(True, "augmentation: random horizontal flips")
    reward: Literal["accuracy_cubed_last5", "accuracy", "best_accuracy"] = option(
        "accuracy_cubed_last5", "the reward: best validation accuracy of the last 5 epochs, cubed "
        "(the paper's); the last epoch's; or the best epoch's")
    timeout_s: Union[float, None] = option(None, "a child training longer than this ends as timeout",
                                           above=0.0)
    early_stopping: Union[EarlyStoppingConfig, None] = option(None, EARLY_STOPPING_DOC)
    device: Literal["auto", "cpu", "cuda"] = option("auto", "where children train; auto = cuda when there is one")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = option(
        "auto", "what children compute in: auto = bf16 on GPUs that have it (Ampere and later), fp16 with "
                "a gradient scaler on older ones (V100, T4), fp32 on CPU")
    compile: bool = option(False, "torch.compile each child (pays off for long trainings on GPU)")
    seed: int = option(0, "seed of the validation split and of each child's initial weights", min=0)


@dataclass(frozen=True, kw_only=True)
class PtbDatasetConfig:
    """Mikolov's Penn Treebank files: ptb.{train,valid}.txt or ptb.char.{train,valid}.txt."""

    type: Literal["ptb"] = option("ptb", "dataset type")
    root: str = required("folder holding the ptb.*.txt files")
    level: Literal["word", "char"] = option("word", "word or char (the ptb.char.*.txt files)")


@dataclass(frozen=True, kw_only=True)
class TextDatasetConfig:
    """Any plain UTF-8 text file, modelled character by character."""

    type: Literal["text"] = option("text", "dataset type")
    path: str = required("the text file")
    validation_fraction: float = option(
        0.1, "share of the text, one seeded random block, that scores children", above=0.0, below=1.0)


TextDatasetUnion = Union[PtbDatasetConfig, TextDatasetConfig]

# Language-model settings that an rnn_cell space's `hyperparameters` decision of the same name overrides.
LM_HYPERPARAMETERS = ("learning_rate", "dropout", "batch_size", "epochs")


@dataclass(frozen=True, kw_only=True)
class LanguageModelEvaluatorConfig:
    """Trains each rnn_cell child as a 2-layer language model and scores it by validation
    perplexity: reward c / ppl^2 (the paper's, c = 80)."""

    TRAINS: ClassVar[str] = "rnn_cell"
    SETTINGS: ClassVar[tuple[str, ...]] = LM_HYPERPARAMETERS

    type: Literal["language_model"] = option("language_model", "evaluator type")
    dataset: TextDatasetUnion = required("the text children model")
    epochs: int = option(35, "training epochs of each child (the paper's 35)", min=1)
    max_tokens_per_epoch: Union[int, None] = option(
        None, "stop an epoch after this many training tokens (null = the whole split)", min=1)
    batch_size: int = option(20, "sequences trained side by side", min=1)
    bptt: int = option(35, "steps of truncated back-propagation through time", min=1)
    hidden_size: int = option(200, "units of each cell layer (and the embedding)", min=1)
    num_layers: int = option(2, "stacked cell layers", min=1)
    dropout: float = option(0.2, "dropout on the embedding and between layers", min=0.0, below=1.0)
    tie_weights: bool = option(True, "share the embedding and the output layer's weights")
    learning_rate: float = option(5.0, "SGD learning rate; divided by 4 when validation does not improve",
                                  above=0.0)
    clip: float = option(0.25, "gradient-norm clipping", above=0.0)
    reward_constant: float = option(80.0, "c in the reward c / ppl^2", above=0.0)
    timeout_s: Union[float, None] = option(None, "a child training longer than this ends as timeout",
                                           above=0.0)
    early_stopping: Union[EarlyStoppingConfig, None] = option(None, EARLY_STOPPING_DOC)
    device: Literal["auto", "cpu", "cuda"] = option("auto", "where children train; auto = cuda when there is one")
    seed: int = option(0, "seed of the validation block (text) and of each child's initial weights", min=0)


# A tagged union: a section without a `type` key is the first of these.
EvaluatorConfig = Union[PythonEvaluatorConfig, ImageClassificationEvaluatorConfig, LanguageModelEvaluatorConfig]


def trainer_of(space_type: str) -> Optional[type]:
    """The evaluator config type that trains the networks of ``space_type`` (None: no network)."""
    return next((t for t in get_args(EvaluatorConfig) if getattr(t, "TRAINS", None) == space_type), None)


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """How many of each actor run, and what each child may use."""

    parameter_servers: int = option(1, "S: parameter-server shards that split the policy", min=1)
    replicas: int = option(1, "K: controller replicas sampling and pushing on their own", min=1)
    children_per_replica: int = option(1, "m: children each replica samples per update", min=1)
    cpus_per_child: float = option(1.0, "CPUs reserved for each child worker (0 allowed)", min=0.0)
    gpus_per_child: float = option(
        0.0, "GPUs reserved for each child worker; fractions pack several on one GPU", min=0.0)
    runtime_env: dict[str, Any] = field(default_factory=dict, metadata={
        "doc": "Ray runtime_env for all actors (working_dir, py_modules, pip, env_vars)"})
    resources_per_child: dict[str, Any] = field(default_factory=dict, metadata={
        "doc": "custom Ray resources reserved for each child worker, e.g. {large_gpu: 1}"})
    max_retries: int = option(
        1, "a child whose worker process dies (killed, node lost) is trained again on a new worker "
           "this many times, then recorded as failed", min=0)
    rounds: Literal["rolling", "barrier"] = option(
        "rolling", "rolling: a worker that finishes gets its next child at once, and every m finished "
                   "children make one update; barrier: the paper's rounds of m, each waiting for its slowest")

    def check(self, key: str) -> None:
        if self.gpus_per_child > 1 and not float(self.gpus_per_child).is_integer():
            raise ConfigError(f"{key}.gpus_per_child: above 1 it must be a whole number, "
                              f"got {self.gpus_per_child}")
        for name, amount in self.resources_per_child.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ConfigError(f"{key}.resources_per_child.{name}: not a custom resource; "
                                  "use cpus_per_child or gpus_per_child")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) \
                    or amount <= 0:
                raise ConfigError(f"{key}.resources_per_child.{name}: must be a number > 0, got {amount!r}")


@dataclass(frozen=True, kw_only=True)
class BudgetConfig:
    """When the search stops."""

    children: int = option(100, "children trained (finished rows with cached = 0)", min=1)
    max_samples: Union[int, None] = option(
        None, "cap on architectures sampled, cached repeats included; null = 20 x children", min=1)
    max_consecutive_failures: Union[int, None] = option(
        20, "stop the search (exit 1) when this many children in a row end failed, diverged or timeout "
            "(null = never)", min=1)

    @property
    def sample_cap(self) -> int:
        return self.max_samples if self.max_samples is not None else 20 * self.children


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """How often the learning state is saved to RUN_DIR/checkpoint.pt (for --resume)."""

    every_s: float = option(60.0, "save at least this often, in seconds, while the policy changes",
                            above=0.0)
    every_updates: int = option(100, "save after this many controller updates (all replicas)", min=1)


@dataclass(frozen=True, kw_only=True)
class MlflowConfig:
    """Where a search is logged in MLflow (nasps.views.mlflow_log): one run, which a resume continues."""

    tracking_uri: Union[str, None] = option(
        None, "the tracking server (http://host:5000) or store (sqlite:///mlflow.db); null = MLflow's "
              "default: MLFLOW_TRACKING_URI, else its local store")
    experiment: str = option("nasps", "the MLflow experiment the run goes in (made when missing)")

    def check(self, key: str) -> None:
        if self.tracking_uri is not None and not self.tracking_uri.strip():
            raise ConfigError(f"{key}.tracking_uri: must not be empty (null = MLflow's default)")
        if not self.experiment.strip():
            raise ConfigError(f"{key}.experiment: must not be empty")


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    """What a search writes besides its results store."""

    tensorboard: bool = option(True, "write TensorBoard event files under RUN_DIR/tb")
    mlflow: Union[MlflowConfig, None] = option(
        None, "log the search to MLflow (pip install 'nasps[mlflow]'); null = off, {} = MLflow's defaults")


_LOADING = contextvars.ContextVar("loading", default=False)


class _CheckedWhenBuilt:
    """A root config made in Python (``Config(...)``, ``dataclasses.replace``) is checked as the
    loader checks a file, with the same one-line errors naming the dotted key."""

    def __post_init__(self) -> None:
        if not _LOADING.get():  # the loader checks as it builds
            config_from_dict(config_to_dict(self), type(self))


@dataclass(frozen=True, kw_only=True)
class Config(_CheckedWhenBuilt):
    """A whole search: what to search, how, how to score, where to run, when to stop."""

    space: SpaceConfig = required("the search space")
    evaluator: EvaluatorConfig = required("how a child is scored")
    strategy: StrategyConfig = field(default_factory=ReinforceStrategyConfig,
                                     metadata={"doc": "how architectures are chosen"})
    cluster: ClusterConfig = field(default_factory=ClusterConfig,
                                   metadata={"doc": "actors and resources"})
    budget: BudgetConfig = field(default_factory=BudgetConfig, metadata={"doc": "when to stop"})
    logging: LoggingConfig = field(default_factory=LoggingConfig,
                                   metadata={"doc": "what a search writes besides its results"})
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig,
                                         metadata={"doc": "when the learning state is saved"})
    seed: int = option(0, "seed of every random choice nasps makes", min=0)

    def check(self, key: str) -> None:
        wanted = getattr(self.evaluator, "TRAINS", None)
        if wanted is None:  # a python evaluator scores any space
            return
        settings = self.evaluator.SETTINGS
        if self.space.type != wanted:
            raise ConfigError(f"evaluator.type: {self.evaluator.type} trains {wanted} networks; "
                              f"space.type is {self.space.type}, not {wanted}")
        fields = {f.name: f for f in dataclasses.fields(type(self.evaluator))}
        hints = get_type_hints(type(self.evaluator))
        for i, decision in enumerate(self.space.hyperparameters):
            if decision.name not in settings:
                raise ConfigError(f"space.hyperparameters[{i}].name: {decision.name!r} is not a trainer "
                                  f"setting (one of {', '.join(settings)})")
            # Each choice must be a value the evaluator's own key would accept.
            for j, value in enumerate(decision.choices):
                where = f"space.hyperparameters[{i}].choices[{j}]"
                _check_range(_convert(value, hints[decision.name], where), fields[decision.name].metadata, where)


@dataclass(frozen=True, kw_only=True)
class FinalTrainingConfig(_CheckedWhenBuilt):
    """``nasps train``: the final training of a searched architecture (a config file of its own).

    Every combination of the ``grid`` lists is trained, in parallel on Ray; the one with the best
    validation score is kept and scored on the test split."""

    evaluator: Union[ImageClassificationEvaluatorConfig, LanguageModelEvaluatorConfig, None] = option(
        None, "how to train; null = the search's own evaluator section (read from the run directory)")
    epochs: Union[int, None] = option(None, "training epochs (null = the evaluator's)", min=1)
    width_multiplier: float = option(
        1.0, "scales every conv layer's filters, or the language model's hidden units", above=0.0)
    grid: dict[str, Any] = field(default_factory=dict, metadata={
        "doc": "evaluator settings to try, each a list of values, e.g. {learning_rate: [0.1, 0.05], "
               "weight_decay: [1e-4, 5e-4], bn_epsilon: [1e-5, 1e-3], lr_decay_epoch: [20, 30]}"})
    cpus_per_trial: float = option(1.0, "CPUs reserved for each grid point's training", min=0.0)
    gpus_per_trial: float = option(0.0, "GPUs reserved for each grid point's training", min=0.0)
    weights_format: Literal["state_dict", "safetensors"] = option(
        "state_dict", "state_dict: weights.pt for torch.load(weights_only=True); safetensors: "
                      "weights.safetensors")
    seed: int = option(0, "seed of the initial weights and of the data order", min=0)

    def trials(self, evaluator: EvaluatorConfig) -> list[dict[str, Any]]:
        """The grid's combinations as evaluator settings, each checked like the evaluator's own key."""
        fields = {f.name: f for f in dataclasses.fields(type(evaluator))}
        hints = get_type_hints(type(evaluator))
        settable = [n for n, f in fields.items() if n not in ("type", "dataset", "device", "seed")
                    and not dataclasses.is_dataclass(hints[n])]
        axes = []
        for name, values in self.grid.items():
            if name not in settable:
                raise ConfigError(f"grid.{name}: not a setting of evaluator type {evaluator.type} "
                                  f"(one of {', '.join(settable)})")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{name}: must be a non-empty list of values, got {values!r}")
            checked = []
            for i, value in enumerate(values):
                converted = _convert(value, hints[name], f"grid.{name}[{i}]")
                _check_range(converted, fields[name].metadata, f"grid.{name}[{i}]")
                checked.append(converted)
            axes.append([(name, v) for v in checked])
        trials = [dict(combination) for combination in itertools.product(*axes)]
        for name in self.grid:
            why = _no_effect_in_final_training(name, evaluator, trials)
            if why:
                raise ConfigError(f"grid.{name}: has no effect here ({why}); every value would train the same")
        return trials


def _no_effect_in_final_training(name: str, evaluator, trials: list[dict[str, Any]]) -> Optional[str]:
    """Why a grid key cannot change what final training does, or None when it can."""
    if name in ("reward", "reward_constant"):
        return "final training chooses by validation score, not by the search's reward"
    if name == "timeout_s":
        return "final training has no deadline"
    if name == "lr_decay_epoch":
        schedules = {trial.get("schedule", getattr(evaluator, "schedule", None)) for trial in trials}
        if "step" not in schedules:
            return f"only schedule step uses it, and the schedule is {', '.join(sorted(schedules))}"
    return None


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: Sequence[str] = (), root: type = Config) -> Any:
    """Read a YAML config, apply ``--set KEY=VALUE`` overrides, validate. Errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({_reason(exc)})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of keys to values, got {_kind(raw)}")
    try:
        for item in overrides:
            apply_override(raw, item)
        return config_from_dict(raw, root)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def apply_override(raw: dict, item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML."""
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. budget.children=50")
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(raw: Mapping[str, Any], root: type = Config) -> Any:
    """``root`` is Config (a search) or FinalTrainingConfig (``nasps train``)."""
    loading = _LOADING.set(True)
    try:
        return _build(root, raw, "")
    finally:
        _LOADING.reset(loading)


def config_to_dict(config: Any) -> Any:
    """The config as plain YAML-able data (lists for tuples), for writing to a run directory."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in yaml_fields(type(config))}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: config_to_dict(v) for k, v in config.items()}
    return config


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """Every key with its default and doc: (dotted key, default, doc), for documentation."""
    rows = []
    hints = get_type_hints(cls)
    for f in yaml_fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if get_origin(tp) is tuple and dataclasses.is_dataclass(get_args(tp)[0]):
            default = "(required)" if f.default is dataclasses.MISSING else repr(list(f.default))
            rows.append((key, default, f.metadata.get("doc", "")))
            rows.extend(describe(get_args(tp)[0], key + "[]."))
            continue
        variants = [a for a in get_args(tp) if dataclasses.is_dataclass(a)] or [tp]
        if dataclasses.is_dataclass(variants[0]):
            seen = {r[0] for r in rows}
            for variant in variants:
                rows.extend(r for r in describe(variant, key + ".") if r[0] not in seen)
                seen = {r[0] for r in rows}
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((key, default, f.metadata.get("doc", "")))
    return rows


def json_schema(root: type = Config) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a config file, from the same dataclasses the loader reads:
    for editors that complete and check YAML (``nasps schema``). The loader stays the judge; the
    schema says less (a section's own ``check``, such as unique decision names, is not in it)."""
    defs: dict[str, Any] = {}
    top = _object_schema(root, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"nasps {'search' if root is Config else 'final training'} config", **top, "$defs": defs}


_RANGE_KEYWORDS = {"min": "minimum", "max": "maximum", "above": "exclusiveMinimum", "below": "exclusiveMaximum",
                   "min_items": "minItems"}


def _schema_of(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # taken, while its fields are made
            defs[tp.__name__] = _object_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin in (Union, types.UnionType):
        tagged = [a for a in args if dataclasses.is_dataclass(a) and "type" in get_type_hints(a)]
        if tagged:  # picked by `type`: only the first, the loader's default, may leave it out
            variants = [_schema_of(tagged[0], defs)]
            variants += [{**_schema_of(a, defs), "required": ["type"]} for a in tagged[1:]]
            return {"oneOf": variants + ([{"type": "null"}] if type(None) in args else [])}
        return {"anyOf": [_schema_of(a, defs) for a in args]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema_of(args[0], defs)}
        return {"type": "array", "prefixItems": [_schema_of(a, defs) for a in args],
                "minItems": len(args), "maxItems": len(args)}
    if origin is dict:
        return {"type": "object"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    return {"type": simple[tp]} if tp in simple else {}


def _object_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = get_type_hints(cls)
    properties, required_keys = {}, []
    for f in yaml_fields(cls):
        prop = _schema_of(hints[f.name], defs)
        prop.update({_RANGE_KEYWORDS[k]: v for k, v in f.metadata.items() if k in _RANGE_KEYWORDS})
        prop["description"] = f.metadata.get("doc", "")
        if f.metadata.get("required"):
            required_keys.append(f.name)
        elif f.default is not dataclasses.MISSING:
            prop["default"] = config_to_dict(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            prop["default"] = config_to_dict(f.default_factory())
        properties[f.name] = prop
    return {"type": "object", "description": (cls.__doc__ or "").strip().split("\n")[0],
            "properties": properties, "additionalProperties": False, "required": required_keys}


# --------------------------------------------------------------------------- internals


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: must be a mapping, got {_kind(raw)}")
    fields = {f.name: f for f in yaml_fields(cls)}
    for name in raw:
        if name not in fields:
            key = _join(prefix, str(name))
            close = difflib.get_close_matches(str(name), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean '{_join(prefix, close[0])}'?)" if close else (
                f" (valid keys: {', '.join(fields)})")
            raise ConfigError(f"{key}: unknown key{hint}")
    hints = get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name in raw:
            values[name] = _convert(raw[name], hints[name], key)
            _check_range(values[name], f.metadata, key)
        elif f.metadata.get("required"):
            raise ConfigError(f"{key}: missing required key ({f.metadata.get('doc', '')})")
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check(prefix or "config")
    return obj


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(value, get_args(tp), key)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, allowed))}; got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {_kind(value)} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {_kind(value)} {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; users mean a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {_kind(value)} {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ConfigError(f"{key}: must be a finite number, got an integer too large for one") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {_kind(value)} {value!r}")
        return value
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: must be a list, got {_kind(value)} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: must be a list of {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {_kind(value)} {value!r}")
        for k in value:
            if not isinstance(k, str):
                raise ConfigError(f"{key}: keys must be strings, got {k!r}")
        return dict(value)
    raise TypeError(f"config type {tp!r} of {key} is not supported")


def _convert_union(value: Any, args: tuple, key: str) -> Any:
    options = [a for a in args if a is not type(None)]
    if value is None:
        if len(options) < len(args):
            return None
        raise ConfigError(f"{key}: must not be null")
    tagged = [a for a in options if dataclasses.is_dataclass(a)]
    if len(tagged) == 1 and "type" not in get_type_hints(tagged[0]):  # an optional section
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping or null, got {_kind(value)} {value!r}")
        return _build(tagged[0], value, key)
    if tagged:
        # A section picked by its `type` key: each type accepts only its own keys.
        by_type = {get_args(get_type_hints(a)["type"])[0]: a for a in tagged}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {_kind(value)} {value!r}")
        chosen = value.get("type", dataclasses.fields(tagged[0])[0].default)
        if not isinstance(chosen, str) or chosen not in by_type:  # a list or mapping is not hashable
            raise ConfigError(f"{key}.type: must be one of {', '.join(by_type)}; got {chosen!r}")
        return _build(by_type[chosen], value, key)
    if bool in options and isinstance(value, bool):
        return value
    if float in options and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and not (int in options and isinstance(value, int)):
        return _convert(value, float, key)  # its own line (not finite) says more than "must be a number or null"
    for option_type in options:
        if option_type is bool:
            continue
        try:
            return _convert(value, option_type, key)
        except ConfigError:
            continue
    names = " or ".join(_kind_of_type(a) for a in args)
    raise ConfigError(f"{key}: must be {names}, got {_kind(value)} {value!r}")


def _kind_of_type(tp: Any) -> str:
    return {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
            str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _check_range(value: Any, meta: Mapping[str, Any], key: str) -> None:
    if value is None:
        return
    if "min_items" in meta and len(value) < meta["min_items"]:
        raise ConfigError(f"{key}: needs at least {meta['min_items']} item(s), got {len(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            raise ConfigError(f"{key}: must be >= {meta['min']}, got {value}")
        if "max" in meta and value > meta["max"]:
            raise ConfigError(f"{key}: must be <= {meta['max']}, got {value}")
        if "above" in meta and value <= meta["above"]:
            raise ConfigError(f"{key}: must be > {meta['above']}, got {value}")
        if "below" in meta and value >= meta["below"]:
            raise ConfigError(f"{key}: must be < {meta['below']}, got {value}")
