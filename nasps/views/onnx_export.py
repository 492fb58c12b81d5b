"""``nasps export --format onnx``: the exported ``model.py``'s network as an ONNX graph.

The graph is traced from ``build_model()`` of the very ``model.py`` source that ``nasps export``
writes, so it is that network, input normalisation included; with ``--weights`` (the weights
file of ``nasps train``, beside its ``training.json``) it holds the trained weights, otherwise
the initial ones of ``torch.manual_seed(0); build_model()``. Before anything is written,
onnxruntime runs the graph on a seeded random batch of another size than the traced one, and
its outputs must be PyTorch's; a graph that computes something else is an error.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import types
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from nasps.errors import ExportFailed, MissingExtra, UserInputError
from nasps.views.export import MODEL_FILE, ONNX_FILE

log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # of the largest output magnitude (plus 1): float32 kernels differ in rounding only
TRACE_BATCH, CHECK_BATCH = 2, 3  # the check runs another batch size than the trace: the axis is dynamic
OUTPUTS = {"conv": ["logits"], "rnn_cell": ["logits", "next_h", "next_c"]}


def require_onnx() -> None:
    """The one-line error where the extra is missing (torch.onnx's exporter needs onnxscript,
    and torch 2.6 or later: the extra's own torch)."""
    if torch.__version__ < "2.6":
        raise MissingExtra("--format onnx", "onnx")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise MissingExtra("--format onnx", "onnx") from None


class LanguageModelStep(nn.Module):
    """One time step of the language model, its state as two tensors, as nn.LSTM keeps it:
    tokens (1, B), h and c (layers, B, hidden) -> logits (1, B, vocab), next h and c. The export
    unrolls the model's loop over time to the traced length, so one step per call is what
    scores a text of any length."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        logits, state = self.model(tokens, list(zip(h.unbind(0), c.unbind(0))))
        return logits, torch.stack([s[0] for s in state]), torch.stack([s[1] for s in state])


def load_trained(path: Path, arch: dict, what: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """``training.json`` beside ``path`` and the state dict in ``path``, checked to be the
    weights that record describes, of the architecture ``arch`` (``what`` names it)."""
    from nasps.training.final import RECORD_FILE
    if not path.is_file():
        raise UserInputError(f"--weights {path}: no such file")
    record_path = path.parent / RECORD_FILE
    if not record_path.is_file():
        raise UserInputError(f"--weights {path}: no {RECORD_FILE} beside it (nasps train writes the two together)")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{record_path}: cannot read ({exc})") from None
    weights = record.get("weights") if isinstance(record, dict) else None
    if not isinstance(weights, dict) or weights.get("file") != path.name:
        raise UserInputError(f"--weights {path}: {record_path} does not describe this file")
    if hashlib.sha256(path.read_bytes()).hexdigest() != weights.get("sha256"):
        raise UserInputError(f"--weights {path}: its sha256 is not the one {record_path} records")
    if record.get("architecture") != arch:
        raise UserInputError(f"--weights {path}: trained child {record.get('child_id')} of {record.get('run_dir')}, "
                             f"another architecture than {what}")
    if record.get("space") == "conv" and not record.get("input"):
        raise UserInputError(f"--weights {path}: {record_path} does not say how the images were normalised "
                             "(a nasps train older than export --format onnx)")
    if weights.get("format") == "safetensors":
        from safetensors.torch import load_file
        return record, load_file(str(path))
    return record, torch.load(path, weights_only=True)


def _trained_arguments(space: str, record: dict) -> dict:
    """The build_model() arguments that nasps train built its network with."""
    model, evaluator = record["model"], record["evaluator"]
    if space == "conv":
        return {"in_channels": model["in_channels"], "num_classes": model["num_classes"],
                "width_multiplier": record["width_multiplier"], "bn_epsilon": evaluator["bn_epsilon"],
                "input_mean": record["input"]["mean"], "input_std": record["input"]["std"]}
    return {"vocab_size": model["vocab_size"], "hidden_size": model["hidden_size"],
            "num_layers": evaluator["num_layers"], "dropout": evaluator["dropout"],
            "tie_weights": evaluator["tie_weights"]}


def _network(source: str, space: str, trained: Optional[tuple[dict, dict]]) -> tuple[nn.Module, Optional[dict]]:
    """model.py's build_model() (with trained weights, where given) in eval mode, and the
    images it takes (conv)."""
    module = types.ModuleType("nasps_exported_model")
    exec(compile(source, MODEL_FILE, "exec"), module.__dict__)  # the file export writes, nothing else
    arguments = _trained_arguments(space, trained[0]) if trained else {}
    missing = [name for name, p in inspect.signature(module.build_model).parameters.items()
               if p.default is p.empty and name not in arguments]
    if missing:
        raise UserInputError(f"--format onnx: build_model() needs {', '.join(missing)}, which this run cannot tell (a "
                             "python evaluator, or data not on this machine); --weights FILE of nasps train can")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = module.build_model(**arguments)
    if trained:
        model.load_state_dict(trained[1])
    images = trained[0]["input"] if trained else getattr(module, "INPUT", None)
    return (model if space == "conv" else LanguageModelStep(model)).eval(), images


def _example(model: nn.Module, space: str, images: Optional[dict], batch: int) -> dict[str, torch.Tensor]:
    """A seeded random batch: raw pixels in [0, 1], or tokens with a random state."""
    g = torch.Generator().manual_seed(batch)
    if space == "conv":
        return {"image": torch.rand(batch, images["channels"], images["height"], images["width"], generator=g)}
    lm = model.model
    state = (len(lm.cells), batch, lm.hidden_size)
    return {"tokens": torch.randint(lm.decoder.out_features, (1, batch), generator=g),
            "h": torch.randn(state, generator=g), "c": torch.randn(state, generator=g)}


def _to_onnx(model: nn.Module, space: str, example: dict[str, torch.Tensor]) -> bytes:
    batch = torch.export.Dim("batch")
    axes = {"image": {0: batch}, "tokens": {1: batch}, "h": {1: batch}, "c": {1: batch}}
    # The exporter's optimiser logs each of its passes at INFO, nasps's own level.
    chatty = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]
    levels = [logger.level for logger in chatty]
    with warnings.catch_warnings():
        # h and c share the tokens' batch axis, which the exporter reports once per extra input.
        warnings.filterwarnings("ignore", message="# The axis name")
        try:
            for logger in chatty:
                logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
            program = torch.onnx.export(model, tuple(example.values()), input_names=list(example),
                                        output_names=OUTPUTS[space], dynamic_shapes={k: axes[k] for k in example},
                                        dynamo=True, verbose=False)
        finally:
            for logger, level in zip(chatty, levels):
                logger.setLevel(level)
    return program.model_proto.SerializeToString()


def check_graph(graph: bytes, model: nn.Module, example: dict[str, torch.Tensor]) -> float:
    """onnxruntime's outputs of ``graph`` on ``example`` against ``model``'s: the largest
    absolute difference, or ExportFailed where it is over the tolerance."""
    import onnxruntime
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    got = session.run(None, {name: t.numpy() for name, t in example.items()})
    with torch.no_grad():
        want = model(*example.values())
    want = want if isinstance(want, tuple) else (want,)
    worst = max(float((torch.from_numpy(g) - w).abs().max()) for g, w in zip(got, want))
    scale = max(float(w.abs().max()) for w in want)
    if not worst <= TOLERANCE * (1 + scale):  # a NaN fails too
        raise ExportFailed(f"{ONNX_FILE}: onnxruntime's output differs from PyTorch's by {worst:.3g} "
                           f"(tolerance {TOLERANCE * (1 + scale):.3g}); nothing was written")
    return worst


def onnx_graph(source: str, space: str, trained: Optional[tuple[dict, dict]] = None) -> bytes:
    """The graph of ``source``'s build_model() (``trained``: ``load_trained``'s record and
    weights), with a dynamic batch axis, checked against PyTorch."""
    model, images = _network(source, space, trained)
    graph = _to_onnx(model, space, _example(model, space, images, TRACE_BATCH))
    worst = check_graph(graph, model, _example(model, space, images, CHECK_BATCH))
    log.info("%s: onnxruntime gives PyTorch's outputs on a random batch of %d (largest difference %.2g)",
             ONNX_FILE, CHECK_BATCH, worst)
    return graph
