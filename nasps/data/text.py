"""Text datasets for language-model children, tokenised once per worker and kept as tensors.

- ``ptb``: Mikolov's Penn Treebank files in ``root``: ``ptb.{train,valid}.txt`` (word level) or
  ``ptb.char.{train,valid}.txt`` (character level: one symbol per space-separated token, ``_``
  between words). Each line ends with an ``<eos>`` token. Children are scored on the valid
  file; the test file is never read during a search.
- ``text``: any plain UTF-8 text file, character level. A seeded random block of
  ``validation_fraction`` of it is the validation split; the rest is the training split.

The vocabulary is the training split's tokens in order of first appearance; a validation token
the training split never had becomes ``<unk>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from nasps.config import PtbDatasetConfig, TextDatasetConfig
from nasps.errors import UserInputError

EOS, UNK = "<eos>", "<unk>"


@dataclass(frozen=True)
class TextSplits:
    train: torch.Tensor  # token ids, one long sequence
    valid: torch.Tensor
    vocab: tuple[str, ...]
    name: str
    test: Optional[torch.Tensor] = None  # only for final training (``with_test``), never in a search

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def to(self, device: torch.device) -> "TextSplits":
        test = self.test.to(device) if self.test is not None else None
        return TextSplits(self.train.to(device), self.valid.to(device), self.vocab, self.name, test)


def _ptb_files(config: PtbDatasetConfig) -> tuple[Path, Path]:
    root = Path(config.root).expanduser()
    infix = "ptb.char." if config.level == "char" else "ptb."
    return root / f"{infix}train.txt", root / f"{infix}valid.txt"


def check_available(config, with_test: bool = False) -> None:
    """The one-line error a user needs when the files are not there (before Ray starts). A
    text dataset's splits are in the files checked here, with or without ``with_test``."""
    paths = _ptb_files(config) if isinstance(config, PtbDatasetConfig) else (Path(config.path).expanduser(),)
    where = "evaluator.dataset.root" if isinstance(config, PtbDatasetConfig) else "evaluator.dataset.path"
    for path in paths:
        if not path.is_file():
            raise UserInputError(f"{where}: no file {path}" + (
                "; put Mikolov's ptb.train.txt and ptb.valid.txt (or ptb.char.*.txt) there"
                if isinstance(config, PtbDatasetConfig) else ""))
        text = _read(path, where)  # not UTF-8, or unreadable: one line here, not a failure per child
        if isinstance(config, TextDatasetConfig):
            _validation_size(text, config, path)


def _validation_size(text: str, config: TextDatasetConfig, path: Path) -> int:
    size = int(len(text) * config.validation_fraction)
    if size < 2 or len(text) - size < 2:
        raise UserInputError(f"evaluator.dataset.path: {path} is too short to split "
                             f"({len(text)} characters)")
    return size


def _read(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{key}: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserInputError(f"{key}: cannot read {path} ({exc.strerror or exc})") from None


def _ptb_tokens(path: Path) -> list[str]:
    """Mikolov's format: words separated by spaces, an end-of-sentence token after each line."""
    return [t for line in _read(path, "evaluator.dataset.root").splitlines() for t in line.split() + [EOS]]


def load_text_splits(config, seed: int, with_test: bool = False) -> TextSplits:
    """Train and validation tokens; ``with_test`` adds ptb's test file (a plain text file has
    no test split)."""
    check_available(config)
    test_tokens = None
    if isinstance(config, PtbDatasetConfig):
        train_path, valid_path = _ptb_files(config)
        train_tokens = _ptb_tokens(train_path)
        valid_tokens = _ptb_tokens(valid_path)
        name = f"ptb ({config.level})"
        if with_test:
            test_path = train_path.with_name(train_path.name.replace("train", "test"))
            if not test_path.is_file():
                raise UserInputError(f"evaluator.dataset.root: no test file {test_path}")
            test_tokens = _ptb_tokens(test_path)
    elif isinstance(config, TextDatasetConfig):
        path = Path(config.path).expanduser()
        text = _read(path, "evaluator.dataset.path")
        size = _validation_size(text, config, path)
        start = int(torch.randint(0, len(text) - size + 1, (1,),
                                  generator=torch.Generator().manual_seed(seed)))
        valid_tokens = list(text[start:start + size])
        train_tokens = list(text[:start] + text[start + size:])
        name = f"text {path.name}"
    else:
        raise TypeError(f"no text dataset for {type(config).__name__}")
    vocab = {}
    for token in train_tokens:
        vocab.setdefault(token, len(vocab))
    unk = vocab.setdefault(UNK, len(vocab))
    train = torch.tensor([vocab[t] for t in train_tokens], dtype=torch.long)
    valid = torch.tensor([vocab.get(t, unk) for t in valid_tokens], dtype=torch.long)
    test = (torch.tensor([vocab.get(t, unk) for t in test_tokens], dtype=torch.long)
            if test_tokens is not None else None)
    return TextSplits(train, valid, tuple(vocab), name, test)


def batchify(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """One long sequence -> (steps, batch_size) columns, dropping the ragged end."""
    steps = len(tokens) // batch_size
    return tokens[:steps * batch_size].view(batch_size, steps).t().contiguous()
