"""T5's span corruption (Raffel et al. §3.1.4, §3.3.4), its tokenizer template (sentinels at the end of the
vocabulary), and pre-training a T5 through `lmforge pretrain` with configs/t5.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmforge.objectives.span_corruption import (
    SpanCorruption,
    SpanCorruptionSettings,
    corrupt,
    corrupted_lengths,
    noise_mask,
    raw_length,
    span_counts,
)

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------- the definitions
@pytest.mark.parametrize("budget,raw,target", [(512, 568, 114), (128, 141, 29)])
def test_raw_length_fills_the_input_budget_exactly(budget, raw, target):
    """The issue's numbers: 568 raw tokens -> 512 input / 114 target tokens; 141 -> 128 / 29."""
    assert raw_length(budget, 0.15, 3.0) == raw
    assert corrupted_lengths(raw, 0.15, 3.0) == (budget, target)
    assert corrupted_lengths(raw + 1, 0.15, 3.0)[0] > budget  # the longest that fits


def runs(mask: np.ndarray) -> list[tuple[bool, int]]:
    """(is_noise, length) of each run of the mask."""
    out: list[tuple[bool, int]] = []
    for value in mask.tolist():
        if out and out[-1][0] == value:
            out[-1] = (value, out[-1][1] + 1)
        else:
            out.append((value, 1))
    return out


@pytest.mark.parametrize("length", list(range(2, 31)) + [141, 568])
def test_noise_mask_follows_the_reference_definition(length):
    """round(L * 0.15) clamped to [1, L - 1] noise tokens in max(1, round(noise / 3)) non-empty spans,
    interleaved with as many non-empty kept spans, kept first."""
    noise = min(max(round(length * 0.15), 1), length - 1)
    spans = max(round(noise / 3), 1)
    assert span_counts(length, 0.15, 3.0) == (noise, spans)
    for seed in range(20):
        mask = noise_mask(length, 0.15, 3.0, np.random.default_rng(seed))
        assert mask.shape == (length,) and mask.sum() == noise
        r = runs(mask)
        assert [v for v, _ in r] == [False, True] * spans  # kept, noise, kept, noise, ...: ends with noise
        assert all(n > 0 for _, n in r)


def test_one_token_keeps_its_token():
    """The reference masks a 1-token text as if it had 2 tokens and cuts the mask: nothing is corrupted,
    the kept run still becomes a sentinel in the target."""
    mask = noise_mask(1, 0.15, 3.0, np.random.default_rng(0))
    assert mask.tolist() == [False]
    source, target = corrupt(np.array([7]), mask, 999, 1)
    assert source.tolist() == [7, 1] and target.tolist() == [999, 1]


def test_span_lengths_average_the_mean_span_length():
    rng = np.random.default_rng(0)
    lengths = [n for _ in range(300) for v, n in runs(noise_mask(568, 0.15, 3.0, rng)) if v]
    assert 2.9 < np.mean(lengths) < 3.2  # 85 noise tokens in 28 spans: 3.04 per span


@pytest.mark.parametrize("length", list(range(2, 31)) + [568])
def test_each_span_becomes_one_sentinel_and_the_text_is_recoverable(length):
    vocab, eos = 1000, 1
    tokens = np.arange(10, 10 + length)
    mask = noise_mask(length, 0.15, 3.0, np.random.default_rng(length))
    source, target = corrupt(tokens, mask, vocab - 1, eos)
    assert (len(source), len(target)) == corrupted_lengths(length, 0.15, 3.0)
    assert source[-1] == eos and target[-1] == eos
    sentinels = [t for t in source.tolist() if t >= vocab - 100]
    assert sentinels == list(range(vocab - 1, vocab - 1 - len(sentinels), -1))  # <extra_id_0>, 1, 2 ...
    assert sentinels == [t for t in target.tolist() if t >= vocab - 100]
    # the input's sentinel k stands for the noise that follows sentinel k in the target
    spans, current = {}, None
    for t in target[:-1].tolist():
        if t >= vocab - 100:
            current = spans.setdefault(t, [])
        else:
            current.append(t)
    restored = [x for t in source[:-1].tolist() for x in (spans[t] if t in spans else [t])]
    assert restored == tokens.tolist()


def test_settings_are_validated():
    with pytest.raises(ValueError, match="noise_density"):
        SpanCorruptionSettings(noise_density=1.5)
    with pytest.raises(ValueError, match="mean_noise_span_length"):
        SpanCorruptionSettings(mean_noise_span_length=0.5)


# ----------------------------------------------------------------------------------- tokenizer
WORDS = ("the cat dog sat on mat ran fast slow big small red blue house tree car road river sky sun moon "
         "boat field hill rain snow wind light dark old new").split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("t5data") / "corpus.txt"
    with open(path, "w") as handle:
        for _ in range(400):
            for _ in range(int(rng.integers(2, 5))):
                handle.write(" ".join(rng.choice(WORDS, int(rng.integers(5, 14)))) + " .\n")
            handle.write("\n")
    return path


@pytest.fixture(scope="module")
def tok_dir(corpus, tmp_path_factory) -> Path:
    from lmforge.tokenizers import train_tokenizer, write_hf_tokenizer_files

    tok = train_tokenizer("unigram", [corpus], 250, family="t5", min_frequency=1)
    return write_hf_tokenizer_files(tok, tmp_path_factory.mktemp("t5tok"), "t5")


def test_tokenizer_template_ends_texts_with_eos_and_counts_sentinels_down(tok_dir):
    from lmforge.tokenizers import load_tokenizer, special_tokens

    tok = load_tokenizer(tok_dir)
    size = tok.get_vocab_size()
    assert 103 < size <= 250  # a small corpus may give fewer pieces than asked
    assert [tok.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]
    assert tok.token_to_id("<extra_id_0>") == size - 1 and tok.token_to_id("<extra_id_99>") == size - 100
    special = special_tokens(tok)
    assert (special.pad, special.eos, special.unk) == (0, 1, 2)
    assert set(range(size - 100, size)) <= set(special.all_ids)
    ids = tok.encode("the cat sat <extra_id_3> .").ids
    assert ids[-1] == 1 and size - 4 in ids
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(tok_dir)
    assert hf("the cat sat <extra_id_3> .").input_ids == ids


def test_a_sentencepiece_t5_folder_loads_with_the_same_ids(corpus, tmp_path):
    """spiece.model (+ tokenizer_config's extra_ids): the ids SentencePiece gives, </s> appended, and the
    sentinels after the pieces, <extra_id_0> last."""
    spm = pytest.importorskip("sentencepiece")
    from lmforge.tokenizers import load_tokenizer

    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "spiece"), vocab_size=60,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    (tmp_path / "spiece.vocab").unlink()
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 100}))
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    tok = load_tokenizer(tmp_path)
    for text in ("the cat sat", "  The  DOG\tran fast . ", "Ｆｕｌｌ width ½ café", "zebra Ω"):
        assert tok.encode(text).ids == sp.encode(text) + [1], text
    size = sp.get_piece_size() + 100
    assert tok.get_vocab_size() == size and tok.token_to_id("<extra_id_0>") == size - 1
    assert tok.encode("the <extra_id_2> cat").ids == sp.encode("the") + [size - 3] + sp.encode("cat") + [1]
    (tmp_path / "tokenizer_config.json").unlink()  # an ALBERT-style folder is not read as T5
    with pytest.raises(FileNotFoundError, match="SentencePiece"):
        load_tokenizer(tmp_path)


# ----------------------------------------------------------------------------------- pre-training
@pytest.fixture(scope="module")
def prepared(corpus, tok_dir, tmp_path_factory) -> Path:
    from lmforge.data.prepare import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("t5prepared") / "data"
    prepare(PrepareConfig(tokenizer=str(tok_dir), inputs=[str(corpus)], out=str(out), valid_fraction=0.1,
                          progress=False))
    return out


def test_examples_from_the_corpus_fill_the_budget(prepared):
    from lmforge.data.pretraining import Corpus

    corpus = Corpus(prepared)
    objective = SpanCorruption(32)
    assert objective.raw_length == raw_length(32)
    layout = objective.layout(corpus, np.random.default_rng(0))
    from lmforge.objectives.base import ExampleRandom

    example = objective.example(corpus, layout, 0, ExampleRandom(0, 0, 0))
    assert len(example["input_ids"]) == 32
    assert len(example["target_ids"]) == corrupted_lengths(objective.raw_length, 0.15, 3.0)[1]
    other_epoch = objective.example(corpus, layout, 0, ExampleRandom(0, 1, 0))
    assert not np.array_equal(example["input_ids"], other_epoch["input_ids"])  # new spans each epoch
    batch = objective.collate([example, other_epoch], corpus.special)
    assert batch["decoder_input_ids"][0, 0] == corpus.special.pad  # T5 starts decoding from <pad>
    assert batch["labels"][0].tolist()[: len(example["target_ids"])] == example["target_ids"].tolist()


def test_a_tokenizer_without_sentinels_is_refused(corpus, tmp_path):
    from lmforge.data.prepare import PrepareConfig, prepare
    from lmforge.data.pretraining import Corpus
    from lmforge.tokenizers import train_tokenizer, write_hf_tokenizer_files

    tok = write_hf_tokenizer_files(train_tokenizer("unigram", [corpus], 150, family="albert", min_frequency=1),
                                   tmp_path / "tok", "albert")
    prepare(PrepareConfig(tokenizer=str(tok), inputs=[str(corpus)], out=str(tmp_path / "data"), progress=False))
    with pytest.raises(ValueError, match="sentinel"):
        SpanCorruption(32).layout(Corpus(tmp_path / "data"), np.random.default_rng(0))


def test_pretrain_with_the_t5_recipe_learns_and_exports(prepared, tmp_path, capsys):
    """`lmforge pretrain --config configs/t5.yaml` on a tiny T5: the loss falls, and the model exports to a
    T5ForConditionalGeneration that loads in transformers."""
    from lmforge.cli import main as cli_main

    run_dir = tmp_path / "run"
    overrides = {"run_dir": run_dir, "data.prepared_dir": prepared, "objective.max_seq_len": 32,
                 "model.overrides.hidden_size": 32, "model.overrides.num_heads": 2,
                 "model.overrides.attention_head_size": 16, "model.overrides.num_layers": 2,
                 "model.overrides.num_decoder_layers": 2, "model.overrides.intermediate_size": 48,
                 "optim.batch_size": 8, "optim.grad_accum": 1, "schedule.max_steps": 30, "schedule.warmup": 0.1,
                 "eval.every_steps": 0, "eval.max_batches": 2, "checkpoint.every_steps": 0, "system.log_every": 1,
                 "system.progress_bar": "false", "system.threads": 1, "export.hf": "true"}
    code = cli_main.main(["pretrain", "--config", str(REPO / "configs" / "t5.yaml"),
                          *[f"{k}={v}" for k, v in overrides.items()]])
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in lines if "loss" in row and row.get("split", "train") == "train"]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    transformers = pytest.importorskip("transformers")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(run_dir / "hf")
    assert hf.config.feed_forward_proj == "gated-gelu" and hf.config.num_heads == 2


def test_an_encoder_only_model_is_refused():
    from lmforge.config import ModelConfig

    with pytest.raises(ValueError, match="encoder-decoder"):
        SpanCorruption(32).check_model(ModelConfig.from_name("t5-mini", num_decoder_layers=0))


def test_adamw_scale_moves_each_tensor_by_a_fraction_of_its_rms():
    """Same gradients, tensors of RMS 0.1 and 10 (and one below the 1e-3 floor): the steps scale with
    max(1e-3, RMS); the first Adam step is lr * sign(grad) per element."""
    import torch

    from lmforge.train.adamw_scale import AdamWScale

    grad = torch.randn(64, 8)
    params = [torch.nn.Parameter(torch.ones(64, 8) * s) for s in (0.1, 10.0, 1e-5)]
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = grad.clone()
    AdamWScale(params, lr=0.01, eps=1e-12).step()
    for p, b, rms in zip(params, before, (0.1, 10.0, 1e-3)):
        torch.testing.assert_close(b - p.detach(), 0.01 * rms * grad.sign(), rtol=1e-4, atol=1e-9)


def test_the_t5_recipe():
    from lmforge.objectives.registry import make_objective
    from lmforge.train.config import load_config

    config = load_config("t5")
    objective = make_objective(config.objective)
    assert objective.kind == "span_corruption" and objective.raw_length == 568  # 512 inputs
    assert config.model.preset == "t5-v1_1-small" and config.model.overrides["dropout"] == 0.0
    assert config.optim.scale_by_rms and config.optim.lr == 2e-2
    assert config.optim.batch_size * config.optim.grad_accum == 128
