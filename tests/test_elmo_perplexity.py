"""`lmforge evaluate --task perplexity` on a biLM (ELMo, Peters et al. 2018 §3.1): the forward and the
backward LM's held-out perplexity, checked against the training loss on one window and against a
direct re-computation from the full logits over strided windows."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_elmo_tasks import word_tokenizer

from lmforge.cli import main as cli
from lmforge.elmo_config import ElmoConfig
from lmforge.models import TaskModel, load_model, save_model
from lmforge.perplexity import windows

LINES = ["the cat sat on the mat .", "", "a dog ran after the cat and the cat ran .",
         "the bird sang a long song today", "rain fell on the mat and the dog sat ."]


def tiny_bilm(tmp_path, encoder: str = "char_cnn"):
    tok = word_tokenizer(LINES * 2)
    config = ElmoConfig(vocab_size=tok.get_vocab_size(), filters=((1, 4), (2, 4), (3, 8)), n_highway=1, lstm_dim=16,
                        projection_dim=8, max_characters_per_token=12, dropout=0.0, token_encoder=encoder)
    torch.manual_seed(0)
    directory = save_model(TaskModel(config, {"lm": {"kind": "bilm"}}), tmp_path / "elmo", tok)
    (tmp_path / "text.txt").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return directory, tok, load_model(directory).eval()


def file_ids(tok) -> list[int]:
    """Each non-blank line's words, then [SEP] (the biLM's </S>), as `prepare --format lines` streams them."""
    sep = tok.token_to_id("[SEP]")
    return [i for line in LINES if line for i in (*tok.encode(line, add_special_tokens=False).ids, sep)]


def evaluate_json(capsys, *args) -> dict:
    capsys.readouterr()
    assert cli.main(["evaluate", "--task", "perplexity", "--no-progress", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def model_inputs(model, tok, ids: list[int]) -> dict[str, torch.Tensor]:
    x = torch.tensor([ids])
    mask = torch.ones_like(x)
    return {"input_ids": x, "attention_mask": mask, **model.backbone.inputs_for_tokenizer(tok)(x, mask)}


@pytest.mark.parametrize("encoder", ["char_cnn", "word_embedding"])
def test_one_window_equals_the_training_loss_of_each_direction(tmp_path, capsys, encoder):
    directory, tok, model = tiny_bilm(tmp_path, encoder)
    ids = file_ids(tok)
    result = evaluate_json(capsys, "--model", directory, "--input", tmp_path / "text.txt", "--max-length", 64)
    assert result["objective"] == "bilm" and result["tokens"] == len(ids)
    assert result["tokens_scored"] == {"forward": len(ids) - 1, "backward": len(ids) - 1}
    with torch.inference_mode():  # the objective's loss path: labels are the ids themselves
        out = model(**model_inputs(model, tok, ids), lm_labels=torch.tensor([ids])).heads["lm"]
    for direction in ("forward", "backward"):
        nll = float(out.direction_loss[direction]) / out.direction_n[direction]
        assert result[f"{direction}_perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    mean = (math.log(result["forward_perplexity"]) + math.log(result["backward_perplexity"])) / 2
    assert result["perplexity"] == pytest.approx(math.exp(mean), rel=1e-6)


@pytest.mark.parametrize("encoder", ["char_cnn", "word_embedding"])
def test_strided_windows_score_each_token_once_with_its_sides_context(tmp_path, capsys, encoder):
    """Forward: a token is scored in the earliest window that holds it after some context (the most
    context before it); backward: in the latest window that holds the token after it (the most after)."""
    directory, tok, model = tiny_bilm(tmp_path, encoder)
    ids = file_ids(tok)
    length, stride = 12, 5
    spans = [(b, e) for b, e, _ in windows(len(ids), length, stride)]
    assert len(spans) > 3 and spans[-1][1] - spans[-1][0] < length  # a shorter last window batches alone
    with torch.inference_mode():
        logp = [model(**model_inputs(model, tok, ids[b:e])).heads["lm"].logits[:, 0].log_softmax(-1)
                for b, e in spans]  # (2, T, V) per window: forward next-token, backward previous-token
    nll = {"forward": 0.0, "backward": 0.0}
    for t in range(len(ids)):
        if t > 0:
            k = min(k for k, (b, e) in enumerate(spans) if b < t < e)
            nll["forward"] -= float(logp[k][0, t - 1 - spans[k][0], ids[t]])
        if t < len(ids) - 1:
            k = max(k for k, (b, e) in enumerate(spans) if b <= t and t + 1 < e)
            nll["backward"] -= float(logp[k][1, t + 1 - spans[k][0], ids[t]])
    result = evaluate_json(capsys, "--model", directory, "--input", tmp_path / "text.txt", "--max-length", length,
                           "--stride", stride, "--batch-size", 3)
    assert result["tokens_scored"] == {"forward": len(ids) - 1, "backward": len(ids) - 1}
    for direction in ("forward", "backward"):
        assert result[f"{direction}_perplexity"] == pytest.approx(math.exp(nll[direction] / (len(ids) - 1)),
                                                                  rel=1e-4)


def test_direction_loss_scores_the_rows_it_is_given():
    """The head's held-out scoring equals cross-entropy over that direction's full logits."""
    config = ElmoConfig(vocab_size=20, token_encoder="word_embedding", lstm_dim=8, projection_dim=4, dropout=0.0)
    torch.manual_seed(0)
    model = TaskModel(config, {"lm": {"kind": "bilm"}}).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    head = model.heads["lm"]
    with torch.inference_mode():
        hidden = model.backbone(ids).last_hidden_state[0]  # (T, 2P)
        logits = model(ids).heads["lm"].logits[:, 0]  # (2, T, V): forward, backward
        forward = head.direction_loss(hidden[:3], ids[0, 1:], "forward")  # t predicts t + 1
        backward = head.direction_loss(hidden[1:], ids[0, :3], "backward")  # t predicts t - 1
    assert torch.allclose(forward, torch.nn.functional.cross_entropy(logits[0, :3], ids[0, 1:]), atol=1e-6)
    assert torch.allclose(backward, torch.nn.functional.cross_entropy(logits[1, 1:], ids[0, :3]), atol=1e-6)
