"""Recurrent cells and language-model children: the cell is its equations, the model learns."""

import subprocess

import pytest
import torch

from nasps.children import CellLanguageModel, TreeCell
from nasps.config import PtbDatasetConfig, TextDatasetConfig, config_from_dict
from nasps.data.text import EOS, UNK, load_text_splits
from nasps.errors import UserInputError
from nasps.evaluators import build_evaluator, run_child
from nasps.policies import build_policy
from nasps.spaces import build_space
from nasps.training.language import perplexity
from tests.conftest import NASPS, ROOT

PAPER_CELL = [0, 1, 1, 3, 1, 2, 0, 0, 3, 1]  # the base-2 cell of the paper's figure 5


def space(**raw):
    return build_space(config_from_dict({"space": {"type": "rnn_cell", **raw},
                                         "evaluator": {"target": "a:b"}}).space)


def test_the_paper_cell_computes_its_equations():
    arch = space(base=2).decode(PAPER_CELL).as_dict()
    torch.manual_seed(0)
    cell = TreeCell(arch, input_size=5, hidden_size=4)
    x, h, c = torch.randn(3, 5), torch.randn(3, 4), torch.randn(3, 4)
    h_t, c_t = cell(x, (h, c))
    w0x, w1x = cell.w(x).chunk(2, dim=1)
    u0h, u1h = cell.u(h).chunk(2, dim=1)
    a0 = torch.tanh(w0x + u0h)           # a0 = tanh(W0·x_t + U0·h_{t-1})
    a0 = torch.relu(a0 + c)              # a0 ← relu(a0 + c_{t-1})
    a1 = torch.relu(w1x * u1h)           # a1 = relu((W1·x_t) ⊙ (U1·h_{t-1}))
    a2 = torch.sigmoid(a0 * a1)          # a2 = sigmoid(a0 ⊙ a1)
    torch.testing.assert_close(c_t, w1x * u1h)  # c_t = (W1·x_t) ⊙ (U1·h_{t-1})
    torch.testing.assert_close(h_t, a2)  # h_t = a2


def test_the_space_writes_an_lstm_as_a_base_8_tree():
    """bench/ptb.py compares this cell with nn.LSTM: it must be an LSTM, gate for gate."""
    from bench.ptb import lstm_like_cell
    torch.manual_seed(0)
    cell = TreeCell(lstm_like_cell(), input_size=5, hidden_size=4)
    x, h, c = torch.randn(3, 5), torch.randn(3, 4), torch.randn(3, 4)
    h_t, c_t = cell(x, (h, c))
    z = [wx + uh for wx, uh in zip(cell.w(x).chunk(8, dim=1), cell.u(h).chunk(8, dim=1))]
    i, g = torch.sigmoid(z[0]), torch.tanh(z[1])
    f, o = torch.sigmoid(z[2] + z[3]), torch.sigmoid(z[4] + z[5] + z[6] + z[7])
    torch.testing.assert_close(c_t, f * c + i * g)
    torch.testing.assert_close(h_t, o * torch.tanh(f * c + i * g))


def test_every_sampled_cell_builds_and_trains_a_step():
    big = space(base=8, combinations=["add", "elem_mult", "max"],
                activations=["identity", "tanh", "sigmoid", "relu", "sin"])
    cfg = config_from_dict({"space": {"type": "rnn_cell"}, "evaluator": {"target": "a:b"},
                            "strategy": {"policy": "lstm"}})
    policy = build_policy(cfg.strategy, big.decisions())
    batch = policy.sample(policy.initial_params(0) * 10, 12, torch.Generator().manual_seed(0))
    for actions in batch.actions:
        model = CellLanguageModel(big.decode(actions).as_dict(), vocab_size=11, hidden_size=6)
        tokens = torch.randint(0, 11, (5, 3))
        logits, state = model(tokens, model.initial_state(3))
        assert logits.shape == (5, 3, 11) and len(state) == 2
        logits.logsumexp(-1).sum().backward()
        assert all(p.grad is not None for p in model.parameters())


def ptb_files(folder, char=False):
    infix = "ptb.char." if char else "ptb."
    lines = {"train": ["the cat sat", "the dog ran <unk>"], "valid": ["the cat ran", "a bird"]}
    if char:
        lines = {k: [" ".join(line.replace(" ", "_")) for line in v] for k, v in lines.items()}
    for split, text in lines.items():
        (folder / f"{infix}{split}.txt").write_text("\n".join(f" {line} " for line in text) + "\n")


def test_ptb_loader_reads_mikolovs_format(tmp_path):
    ptb_files(tmp_path)
    splits = load_text_splits(PtbDatasetConfig(root=str(tmp_path)), seed=0)
    assert splits.vocab[:4] == ("the", "cat", "sat", EOS) and UNK in splits.vocab
    assert len(splits.train) == 3 + 1 + 4 + 1
    words = [splits.vocab[i] for i in splits.valid]
    assert words == ["the", "cat", "ran", EOS, UNK, UNK, EOS]  # 'a' and 'bird' are unknown


def test_ptb_char_level(tmp_path):
    ptb_files(tmp_path, char=True)
    splits = load_text_splits(PtbDatasetConfig(root=str(tmp_path), level="char"), seed=0)
    assert splits.vocab[:4] == ("t", "h", "e", "_")
    assert [splits.vocab[i] for i in splits.train[:5]] == ["t", "h", "e", "_", "c"]


def test_missing_ptb_is_one_clear_line(tmp_path):
    with pytest.raises(UserInputError, match="evaluator.dataset.root: no file .*ptb.train.txt"):
        load_text_splits(PtbDatasetConfig(root=str(tmp_path / "nowhere")), seed=0)
    config = tmp_path / "c.yaml"
    config.write_text(f"space: {{type: rnn_cell}}\nevaluator: {{type: language_model, dataset: "
                      f"{{type: ptb, root: {tmp_path}}}}}\n")
    done = subprocess.run(NASPS + ["validate", str(config)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "ptb.train.txt" in done.stderr


def test_a_tiny_language_model_lowers_its_perplexity(tmp_path):
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    words = ["abc ", "abd ", "bca ", "cab "]
    text = "".join(words[int(i)] for i in torch.randint(0, 4, (1500,), generator=g))
    (tmp_path / "t.txt").write_text(text)
    cfg = config_from_dict({
        "space": {"type": "rnn_cell", "base": 2},
        "evaluator": {"type": "language_model", "dataset": {"type": "text", "path": str(tmp_path / "t.txt")},
                      "epochs": 3, "hidden_size": 24, "bptt": 20, "batch_size": 16, "learning_rate": 5.0,
                      "dropout": 0.0}})
    arch = space(base=2).decode([0, 1, 1, 3, 0, 1, 0, 0, 1, 1])  # add/tanh leaves and root
    result = run_child(build_evaluator(cfg.evaluator), arch)
    assert result.status == "ok", result.error
    ppl = result.metrics["val_perplexities"]
    assert ppl[-1] < ppl[0] and ppl[-1] < 3.0  # 6 symbols; the text is nearly predictable
    assert result.reward == pytest.approx(80.0 / min(ppl) ** 2)
    assert result.metrics["tokens_per_s"] > 0 and result.metrics["params"] > 0


def test_text_validation_is_a_seeded_block(tmp_path):
    (tmp_path / "t.txt").write_text("".join(chr(97 + i % 26) for i in range(1000)))
    a = load_text_splits(TextDatasetConfig(path=str(tmp_path / "t.txt")), seed=0)
    b = load_text_splits(TextDatasetConfig(path=str(tmp_path / "t.txt")), seed=1)
    assert len(a.valid) == 100 and len(a.train) == 900
    assert not torch.equal(a.valid, b.valid)


def test_a_diverging_language_model_is_diverged(tmp_path):
    (tmp_path / "t.txt").write_text("abcd" * 300)
    cfg = config_from_dict({
        "space": {"type": "rnn_cell", "base": 2, "hyperparameters": [{"name": "learning_rate", "choices": [1e30]}]},
        "evaluator": {"type": "language_model", "dataset": {"type": "text", "path": str(tmp_path / "t.txt")},
                      "epochs": 2, "hidden_size": 8, "clip": 1e30}})
    arch = space(base=2, hyperparameters=[{"name": "learning_rate", "choices": [1e30]}]).decode(PAPER_CELL)
    result = run_child(build_evaluator(cfg.evaluator), arch)
    assert result.status == "diverged", (result.status, result.error)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_language_model_child_on_the_gpu(tmp_path):
    """The CUDA path of the language-model trainer; its CPU twin is
    test_a_tiny_language_model_lowers_its_perplexity."""
    (tmp_path / "t.txt").write_text("abcabd" * 400)
    cfg = config_from_dict({
        "space": {"type": "rnn_cell", "base": 2},
        "evaluator": {"type": "language_model", "dataset": {"type": "text", "path": str(tmp_path / "t.txt")},
                      "epochs": 2, "hidden_size": 16, "device": "cuda", "learning_rate": 5.0}})
    ev = build_evaluator(cfg.evaluator)
    result = run_child(ev, space(base=2).decode([0, 1, 1, 3, 0, 1, 0, 0, 1, 1]))
    assert result.status == "ok", result.error
    assert ev.data.train.is_cuda


def test_a_text_too_short_fails_its_children_clearly(tmp_path):
    """A split too short to batch must not give every child a perfect-looking reward."""
    (tmp_path / "t.txt").write_text("abcabcabcabcabcabcabcabcabcabcabc")
    cfg = config_from_dict({
        "space": {"type": "rnn_cell", "base": 2},
        "evaluator": {"type": "language_model", "dataset": {"type": "text", "path": str(tmp_path / "t.txt")},
                      "epochs": 1, "hidden_size": 8}})
    result = run_child(build_evaluator(cfg.evaluator), space(base=2).decode(PAPER_CELL))
    assert result.status == "failed" and result.reward is None
    assert "too few for batch_size 20" in result.error


def sampled_cells(n, seed, **raw):
    cell_space = space(**raw)
    g = torch.Generator().manual_seed(seed)
    return [cell_space.decode([int(torch.randint(d.num_choices, (1,), generator=g)) for d in cell_space.decisions()])
            for _ in range(n)]


def test_every_sampled_cell_starts_near_uniform_guessing():
    """Before training a language model guesses about uniformly: perplexity near the vocabulary
    size on random tokens, whatever the cell (identity, relu and elem_mult chains included)."""
    torch.manual_seed(0)
    vocab = 1000
    tokens = torch.randint(0, vocab, (3000,))
    cells = sampled_cells(20, 0, base=8, combinations=["add", "elem_mult", "max"],
                          activations=["identity", "tanh", "sigmoid", "relu", "sin"])
    for arch in cells:
        model = CellLanguageModel(arch.as_dict(), vocab, 64, 2, 0.0, True)
        assert vocab / 2 < perplexity(model, tokens, 35) < 2 * vocab, arch.as_dict()


def markov_ptb(folder, vocab=40, words=12000, seed=0):
    """ptb.{train,valid}.txt of a random Markov chain in which each word has 3 likely
    successors: learnable to a perplexity near 3, where guessing scores ``vocab``."""
    g = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, vocab, (vocab, 3), generator=g)
    chain, word = [], 0
    for _ in range(words):
        word = int(successors[word, int(torch.randint(0, 3, (1,), generator=g))])
        chain.append(f"w{word}")
    lines = [" ".join(chain[i:i + 20]) for i in range(0, len(chain), 20)]
    cut = len(lines) * 9 // 10
    (folder / "ptb.train.txt").write_text("\n".join(lines[:cut]) + "\n")
    (folder / "ptb.valid.txt").write_text("\n".join(lines[cut:]) + "\n")


def test_every_sampled_cell_of_the_paper_space_learns(tmp_path):
    """The paper's space (add and elem_mult; identity, tanh, sigmoid and relu) with the
    evaluator's default learning rate and clipping: each cell ends below guessing (at 20, the
    reference models' rate for an LSTM, half of these went above it), at most one diverges, and
    a cell that can carry its input learns the chain."""
    torch.set_num_threads(1)
    markov_ptb(tmp_path)
    raw = {"base": 4, "combinations": ["add", "elem_mult"], "activations": ["identity", "tanh", "sigmoid", "relu"]}
    cfg = config_from_dict({"space": {"type": "rnn_cell", **raw}, "evaluator": {
        "type": "language_model", "dataset": {"type": "ptb", "root": str(tmp_path)}, "epochs": 2,
        "hidden_size": 32, "dropout": 0.0, "batch_size": 8, "bptt": 20}})
    evaluator = build_evaluator(cfg.evaluator)
    results = [run_child(evaluator, arch) for arch in sampled_cells(8, 1, **raw)]
    assert {r.status for r in results} <= {"ok", "diverged"}, [r.error for r in results]
    assert sum(r.status == "diverged" for r in results) <= 1
    vocab = len(load_text_splits(PtbDatasetConfig(root=str(tmp_path)), 0).vocab)
    learned = [r.metrics["best_val_perplexity"] for r in results if r.status == "ok"]
    assert all(ppl < vocab for ppl in learned), learned
    assert min(learned) < 10, learned  # 3 likely successors: a cell that carries its input gets near 3
