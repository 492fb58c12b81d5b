"""``nasps export``: a searched architecture as JSON and as a standalone PyTorch file (and, with
``--format onnx``, as an ONNX graph: ``nasps.views.onnx_export``).

The PyTorch file is nasps's own builder module (``nasps/children/conv.py`` or ``rnn.py``, which
import nothing but torch) copied verbatim, followed by the architecture and a ``build_model()``.
So the exported network is the searched network by construction, and it runs where only torch
is installed. Shapes the run's dataset fixes (image channels, classes, vocabulary) become the
defaults of ``build_model``; where the run does not know them they are required arguments.
"""

from __future__ import annotations

import inspect
import json
import pprint
from pathlib import Path
from typing import Any, Optional

from nasps.config import (
    ImageClassificationEvaluatorConfig,
    LanguageModelEvaluatorConfig,
    config_from_dict,
)
from nasps.errors import UserInputError
from nasps.spaces import describe
from nasps.state.store import STORE_NAME, ChildRow, ResultsStore, ranked_children

ARCH_FILE, MODEL_FILE, ONNX_FILE = "architecture.json", "model.py", "model.onnx"


def ranked_child(run_dir: Path, rank: int) -> tuple[ChildRow, dict]:
    """The child at ``rank`` (1 = best reward among trained, ok children) and the run's config."""
    if not run_dir.is_dir():
        raise UserInputError(f"{run_dir}: no such run directory")
    store = ResultsStore(run_dir / STORE_NAME, readonly=True)
    try:
        ranked = ranked_children(store.children())
        config = store.meta().get("config")
    finally:
        store.close()
    if not ranked:
        raise UserInputError(f"{run_dir}: no child finished with status ok yet")
    if not 1 <= rank <= len(ranked):
        raise UserInputError(f"--rank {rank}: {run_dir} has {len(ranked)} ranked children (1..{len(ranked)})")
    if config is None:
        raise UserInputError(f"{run_dir / STORE_NAME}: the store has no config (not written by nasps search)")
    return ranked[rank - 1], config


def _image_shapes(evaluator) -> tuple[Optional[int], Optional[int]]:
    """(in_channels, num_classes) that the run's image dataset fixes, where known."""
    if not isinstance(evaluator, ImageClassificationEvaluatorConfig):
        return None, None
    from nasps.data.images import known_shape
    return known_shape(evaluator.dataset)


def image_input(evaluator) -> Optional[dict]:
    """The raw images the run's conv children were trained on and how they were normalised
    (``ImageSplits.preprocessing``), where the dataset is on this machine."""
    if not isinstance(evaluator, ImageClassificationEvaluatorConfig):
        return None
    from nasps.data.images import load_image_splits
    try:
        return load_image_splits(evaluator.dataset, evaluator.validation_size, evaluator.seed).preprocessing
    except UserInputError:
        return None  # the images are not on this machine: build_model asks for the statistics


def _vocab_size(evaluator) -> Optional[int]:
    if not isinstance(evaluator, LanguageModelEvaluatorConfig):
        return None
    from nasps.data.text import load_text_splits
    try:
        return load_text_splits(evaluator.dataset, evaluator.seed).vocab_size
    except UserInputError:
        return None  # the data is not on this machine: build_model asks for it


def _arg(name: str, default: Any) -> str:
    return f"{name}: int" if default is None else f"{name}: int = {default!r}"


def standalone_source(value: dict, config_raw: dict, inputs: Optional[dict] = None) -> Optional[str]:
    """A Python file that rebuilds ``value`` with torch only; None for spaces without a network.
    ``inputs``: a conv network's preprocessing (``image_input``), or None where it is unknown."""
    config = config_from_dict(config_raw)
    space_type = config.space.type
    architecture = pprint.pformat(value, width=100)  # a Python literal (True, None), not JSON
    if space_type == "conv":
        from nasps.children import conv as module
        channels, classes = _image_shapes(config.evaluator)
        eps = getattr(config.evaluator, "bn_epsilon", 1e-5)
        known = inputs is not None
        statistics = ("input_mean: Sequence[float] = INPUT['mean'], input_std: Sequence[float] = INPUT['std']"
                      if known else "*, input_mean: Sequence[float], input_std: Sequence[float]")
        tail = f'''

# --------------------------------------------------------------------------- exported by nasps
ARCHITECTURE = {architecture}

# The images the search trained on{"" if known else ": unknown (the dataset was not on the exporting machine)"}
INPUT = {pprint.pformat(inputs, width=100)}


def build_model({_arg("in_channels", channels if classes is not None else None)}, {_arg("num_classes", classes)},
                width_multiplier: float = 1.0, bn_epsilon: float = {eps!r},
                {statistics}) -> ConvNet:
    """The searched network, freshly initialised. It takes raw images, float pixels in [0, 1]
    of shape (N, C, H, W), and normalises them per channel with input_mean and input_std, the
    training split's statistics (INPUT), as the search did before training it."""
    return ConvNet(ARCHITECTURE, in_channels, num_classes, width_multiplier, bn_epsilon, input_mean, input_std)
'''
    elif space_type == "rnn_cell":
        from nasps.children import rnn as module
        lm = config.evaluator if isinstance(config.evaluator, LanguageModelEvaluatorConfig) else None
        hidden = lm.hidden_size if lm else 200
        layers, dropout, tie = (lm.num_layers, lm.dropout, lm.tie_weights) if lm else (2, 0.2, True)
        tail = f'''

# --------------------------------------------------------------------------- exported by nasps
ARCHITECTURE = {architecture}


def build_model({_arg("vocab_size", _vocab_size(config.evaluator))}, hidden_size: int = {hidden},
                num_layers: int = {layers}, dropout: float = {dropout}, tie_weights: bool = {tie}) -> CellLanguageModel:
    """The searched cell in the language model it was scored in, freshly initialised."""
    return CellLanguageModel(ARCHITECTURE, vocab_size, hidden_size, num_layers, dropout, tie_weights)


def build_cell(input_size: int, hidden_size: int) -> TreeCell:
    """The searched cell alone: (x_t, (h, c)) -> (h, c)."""
    return TreeCell(ARCHITECTURE, input_size, hidden_size)
'''
    else:
        return None
    header = "# Exported by nasps: the searched architecture with nasps's builder; needs only torch.\n"
    return header + inspect.getsource(module) + tail


def export(run_dir: str | Path, rank: int, out: str | Path, onnx: bool = False,
           weights: Optional[str | Path] = None) -> list[Path]:
    """Write ``architecture.json`` (and ``model.py`` when the space builds a network) into ``out``;
    ``onnx``: ``model.onnx`` too, with the trained ``weights`` of nasps train where given
    (``nasps.views.onnx_export``). Files already there are never overwritten."""
    run_dir, out = Path(run_dir), Path(out)
    if weights is not None and not onnx:
        raise UserInputError("--weights: only --format onnx puts weights in a file; model.py's build_model() "
                             "loads them with load_state_dict")
    if onnx:
        from nasps.views.onnx_export import require_onnx
        require_onnx()
    row, config_raw = ranked_child(run_dir, rank)
    space = config_raw["space"]["type"]
    inputs = image_input(config_from_dict(config_raw).evaluator) if space == "conv" else None
    source = standalone_source(row.arch, config_raw, inputs)
    targets: dict[str, str | bytes] = {
        ARCH_FILE: json.dumps({"rank": rank, "child_id": row.id, "reward": row.reward,
                               "metrics": row.metrics, "space": space,
                               "architecture": row.arch, "summary": describe(row.arch),
                               "input": inputs},
                              indent=2, sort_keys=True) + "\n"}
    if source is not None:
        targets[MODEL_FILE] = source
    if onnx and source is None:
        raise UserInputError(f"--format onnx: a {space} architecture has no network to export")
    taken = [name for name in [*targets, *([ONNX_FILE] if onnx else [])] if (out / name).exists()]
    if taken:
        raise UserInputError(f"--out {out}: already holds {', '.join(taken)}; choose another folder")
    if onnx:
        from nasps.views.onnx_export import load_trained, onnx_graph
        trained = load_trained(Path(weights), row.arch, f"rank {rank} of {run_dir}") if weights else None
        targets[ONNX_FILE] = onnx_graph(source, space, trained)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, content in targets.items():
            tmp = out / (name + ".tmp")
            if isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                tmp.write_text(content, encoding="utf-8")
            tmp.replace(out / name)
            written.append(out / name)
    except OSError as exc:
        raise UserInputError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    return written
