"""`lmforge evaluate --task perplexity`: CLM perplexity over strided windows and MLM pseudo-perplexity,
each checked against a direct re-computation from the model's full logits."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _finetune_helpers import tiny_tokenizer

from lmforge.cli import main as cli
from lmforge.models import build_model, load_model, save_model

TEXT = ("the quick brown fox jumps over the lazy dog . a stitch in time saves nine . "
        "all that glitters is not gold . the early bird catches the worm . ") * 6


@pytest.fixture(autouse=True)
def _only_our_commands(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", {k: cli.COMMANDS[k] for k in ("finetune", "evaluate", "predict")})


def tiny_lm(tmp_path, kind: str):
    tok = tiny_tokenizer([TEXT], vocab_size=120)
    torch.manual_seed(0)
    preset = "gpt2-mini" if kind == "clm" else "bert-tiny"
    model = build_model(preset, {"lm": {"kind": kind}}, vocab_size=tok.get_vocab_size(), hidden_size=32,
                        num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64,
                        dropout=0.0, attention_dropout=0.0)
    directory = save_model(model, tmp_path / kind, tok)
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    return directory, tok, load_model(directory).eval()


def evaluate_json(capsys, *args) -> dict:
    capsys.readouterr()
    assert cli.main(["evaluate", "--task", "perplexity", "--no-progress", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def full_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        x = torch.tensor([ids])
        return model(x, torch.ones_like(x)).heads["lm"].logits[0].float()  # (T, V)


@pytest.mark.parametrize("stride", [16, 40])
def test_clm_perplexity_matches_the_hf_guide_loop(tmp_path, capsys, stride):
    directory, tok, model = tiny_lm(tmp_path, "clm")
    ids = tok.encode(TEXT, add_special_tokens=False).ids
    assert len(ids) > 64  # several windows
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):  # https://huggingface.co/docs/transformers/perplexity
        end = min(begin + 40, len(ids))
        trg_len = end - prev_end
        logp = full_logits(model, ids[begin:end]).log_softmax(-1)
        targets = torch.tensor(ids[begin:end])
        targets[: len(targets) - trg_len] = -100
        for t in range(1, len(targets)):
            if targets[t] != -100:
                nll -= float(logp[t - 1, targets[t]])
                count += 1
        prev_end = end
        if end == len(ids):
            break
    result = evaluate_json(capsys, "--model", directory, "--input", tmp_path / "text.txt", "--max-length", 40,
                           "--stride", stride)
    assert result["objective"] == "clm" and result["tokens_scored"] == count
    if stride < 40:  # overlapping windows score every token but the first; disjoint ones lose each first token
        assert count == len(ids) - 1
    assert result["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_mlm_pseudo_perplexity_masks_each_token_once(tmp_path, capsys):
    directory, tok, model = tiny_lm(tmp_path, "mlm")
    short = tmp_path / "short.txt"
    short.write_text("the quick brown fox jumps over the lazy dog .", encoding="utf-8")
    ids = tok.encode(short.read_text(), add_special_tokens=False).ids
    cls, sep, mask = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"), tok.token_to_id("[MASK]")
    nll = 0.0
    for t in range(len(ids)):  # Salazar et al. 2020: score each token with it alone masked
        masked = [cls, *ids[:t], mask, *ids[t + 1:], sep]
        nll -= float(full_logits(model, masked).log_softmax(-1)[t + 1, ids[t]])
    result = evaluate_json(capsys, "--model", directory, "--input", short, "--batch-size", 3)
    assert result["objective"] == "mlm" and result["tokens_scored"] == len(ids)
    assert result["perplexity"] == pytest.approx(math.exp(nll / len(ids)), rel=1e-4)
    # a file longer than a window: every token is still scored exactly once
    long = evaluate_json(capsys, "--model", directory, "--input", tmp_path / "text.txt", "--max-length", 24)
    assert long["tokens_scored"] == long["tokens"] == len(tok.encode(TEXT, add_special_tokens=False).ids)


def test_perplexity_needs_a_language_model_head(tmp_path, capsys):
    tok = tiny_tokenizer([TEXT], vocab_size=120)
    model = build_model("bert-tiny", {"task": {"kind": "classification", "num_labels": 2}},
                        vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=1, num_heads=2,
                        intermediate_size=64)
    directory = save_model(model, tmp_path / "clf", tok)
    (tmp_path / "t.txt").write_text(TEXT)
    capsys.readouterr()
    assert cli.main(["evaluate", "--task", "perplexity", "--model", str(directory), "--input",
                     str(tmp_path / "t.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CLM, MLM or biLM head" in err
