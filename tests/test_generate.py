"""Generation: cached logits equal uncached ones; greedy and beam outputs equal transformers' `generate`
on the same converted weights (GPT-2 and GPT-1, random tiny configs, left-padded batches); seeded
sampling is reproducible; warpers follow their definitions; bad requests are refused."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _beam_helpers import eos_that_drops_a_prompt

from lmforge.generate import GenerationConfig, Stepper, apply_repetition_penalty, generate, lm_head, warp

transformers = pytest.importorskip("transformers")

from lmforge.convert import load_hf  # noqa: E402

VOCAB = 61
PAD = 0


def hf_decoder(family: str, tmp_path, seed: int = 0, sharpen: float = 40.0):
    torch.manual_seed(seed)
    if family == "gpt2":
        config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
                                         eos_token_id=None)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.OpenAIGPTConfig(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = transformers.OpenAIGPTLMHeadModel(config)
    with torch.no_grad():  # larger logits than the 0.02 init: sharper, less tie-prone distributions
        model.lm_head.weight.mul_(sharpen)
    model.eval()
    model.save_pretrained(tmp_path / family)
    ours = load_hf(tmp_path / family).eval()
    return model, ours


def prompts():
    torch.manual_seed(7)
    ids = torch.randint(1, VOCAB, (3, 6))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding
    mask[2, :4] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def hf_generate(model, ids, mask, new: int, eos: int | None, **kw) -> list[list[int]]:
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=0,
                         pad_token_id=PAD, eos_token_id=eos, do_sample=False, **kw)
    rows = []
    for row in out[:, ids.shape[1]:].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos) + 1]
        rows.append(row)
    return rows


@pytest.mark.parametrize("family", ["gpt2", "openai-gpt"])
def test_cached_step_logits_equal_uncached_logits(family, tmp_path):
    _, ours = hf_decoder(family, tmp_path)
    ids, mask = prompts()
    new = torch.randint(1, VOCAB, (3, 5))
    config = GenerationConfig(max_new_tokens=5)
    stepper = Stepper(ours, ids, mask, config, total=11)
    cached = [stepper.start()] + [stepper.logits(new[:, t:t + 1]) for t in range(4)]
    head = lm_head(ours)
    for t in range(5):
        full_ids = torch.cat([ids, new[:, :t]], 1)
        full_mask = torch.cat([mask, torch.ones(3, t, dtype=torch.long)], 1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            hidden = ours.backbone(full_ids, full_mask, position_ids=positions).last_hidden_state
        torch.testing.assert_close(cached[t], head.logits(hidden[:, -1]).float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "openai-gpt"])
def test_greedy_equals_transformers(family, tmp_path):
    hf, ours = hf_decoder(family, tmp_path)
    ids, mask = prompts()
    got = generate(ours, ids, mask, GenerationConfig(max_new_tokens=12, pad_token_id=PAD)).tokens
    assert got == hf_generate(hf, ids, mask, 12, None)
    eos = got[0][3]  # a token greedy reaches: rows stop there
    got = generate(ours, ids, mask, GenerationConfig(max_new_tokens=12, eos_token_id=eos, pad_token_id=PAD)).tokens
    assert got == hf_generate(hf, ids, mask, 12, eos)
    assert got[0][-1] == eos and len(got[0]) <= 4  # stops at the first EOS


@pytest.mark.parametrize("family", ["gpt2", "openai-gpt"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.6])
def test_beam_search_equals_transformers(family, length_penalty, tmp_path):
    hf, ours = hf_decoder(family, tmp_path, seed=1)
    ids, mask = prompts()
    config = GenerationConfig(strategy="beam", num_beams=3, max_new_tokens=10, pad_token_id=PAD,
                              length_penalty=length_penalty)
    got = generate(ours, ids, mask, config).tokens
    assert got == hf_generate(hf, ids, mask, 10, None, num_beams=3, length_penalty=length_penalty)
    # with an EOS that the beams meet, finished hypotheses compete with live ones
    eos = got[1][2]
    config.eos_token_id = eos
    got = generate(ours, ids, mask, config).tokens
    assert got == hf_generate(hf, ids, mask, 10, eos, num_beams=3, length_penalty=length_penalty)


def test_beam_search_drops_finished_prompts_and_continues_the_rest_as_alone(tmp_path, monkeypatch):
    """A prompt whose search is over leaves the batch (its cache rows, mask and positions are dropped); the
    others, left-padded, continue as they do alone, and as transformers does."""
    hf, ours = hf_decoder("gpt2", tmp_path, sharpen=5.0)
    ids, mask = prompts()
    # length_penalty < 1 lets a finished search end before max_new_tokens (the bound on a live beam's
    # score falls as it grows); with 1.0 the repetitive loops of a tiny random model never let one end
    config = GenerationConfig(strategy="beam", num_beams=2, max_new_tokens=40, pad_token_id=PAD, length_penalty=0.6)
    eos, got, rows_left = eos_that_drops_a_prompt(monkeypatch, lambda c: generate(ours, ids, mask, c).tokens,
                                                  config, range(1, VOCAB))
    config = dataclasses.replace(config, eos_token_id=eos)
    assert rows_left < 2 * len(ids)
    alone = [generate(ours, ids[i:i + 1, int((mask[i] == 0).sum()):], None, config).tokens[0] for i in range(len(ids))]
    assert got == alone
    assert got == hf_generate(hf, ids, mask, 40, eos, num_beams=2, length_penalty=0.6)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_generation_without_cache_equals_generation_with_cache(strategy, tmp_path):
    _, ours = hf_decoder("gpt2", tmp_path)
    ids, mask = prompts()
    config = GenerationConfig(strategy=strategy, num_beams=2, max_new_tokens=9)
    cached = generate(ours, ids, mask, config).tokens
    config.use_cache = False
    assert generate(ours, ids, mask, config).tokens == cached


def test_a_padded_prompt_generates_what_it_generates_alone(tmp_path):
    _, ours = hf_decoder("gpt2", tmp_path)
    ids, mask = prompts()
    batch = generate(ours, ids, mask, GenerationConfig(max_new_tokens=8)).tokens
    alone = generate(ours, ids[2:, 4:], None, GenerationConfig(max_new_tokens=8)).tokens
    assert batch[2] == alone[0]


def test_seeded_sampling_is_reproducible_and_seed_dependent(tmp_path):
    _, ours = hf_decoder("gpt2", tmp_path, sharpen=1.0)  # flat distributions: samples differ by seed
    ids, mask = prompts()
    config = GenerationConfig(strategy="sample", max_new_tokens=16, temperature=1.5, top_k=20, top_p=0.9, seed=3)
    first = generate(ours, ids, mask, config).tokens
    assert generate(ours, ids, mask, config).tokens == first
    config.seed = 4
    assert generate(ours, ids, mask, config).tokens != first


def test_warpers_follow_their_definitions():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    top_k = warp(logits, GenerationConfig(top_k=2))
    assert torch.isinf(top_k[0, 2:]).all() and torch.isfinite(top_k[0, :2]).all()
    probs = logits.softmax(-1)[0]  # 0.636, 0.234, 0.086, ...
    nucleus = warp(logits, GenerationConfig(top_p=0.8))  # 0.636 < 0.8 <= 0.636 + 0.234: two tokens
    assert torch.isfinite(nucleus[0, :2]).all() and torch.isinf(nucleus[0, 2:]).all()
    assert probs[0] < 0.8 < probs[0] + probs[1]
    only_one = warp(logits, GenerationConfig(top_p=0.01))  # at least one token is always kept
    assert torch.isfinite(only_one[0, 0]) and torch.isinf(only_one[0, 1:]).all()
    hot = warp(logits, GenerationConfig(temperature=2.0))
    torch.testing.assert_close(hot, logits / 2)
    seen = torch.tensor([[True, False, False, True, False]])
    penalised = apply_repetition_penalty(torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0]]), seen, 2.0)
    torch.testing.assert_close(penalised, torch.tensor([[1.0, 1.0, 0.5, -2.0, 3.0]]))


def test_bad_requests_are_refused(tmp_path):
    _, ours = hf_decoder("gpt2", tmp_path)
    ids, mask = prompts()
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=1.5)
    with pytest.raises(ValueError, match="num_beams"):
        GenerationConfig(strategy="beam", num_beams=0)
    with pytest.raises(ValueError, match="positions"):
        generate(ours, ids, mask, GenerationConfig(max_new_tokens=80))
    with pytest.raises(ValueError, match="empty prompt"):
        generate(ours, ids, torch.zeros_like(mask), GenerationConfig())


# ------------------------------------------------------------------------------------- the CLI
def gpt2_model_dir(tmp_path, shared_data):
    """A tiny random GPT-2 with a byte-level BPE tokenizer trained on tiny Shakespeare."""
    from lmforge.config import ModelConfig
    from lmforge.models import TaskModel, save_model
    from lmforge.tokenizers import special_tokens, train_tokenizer

    corpus = shared_data("tinyshakespeare", "input.txt")
    tokenizer = train_tokenizer("bpe", [corpus], 300, family="gpt2")
    eos = special_tokens(tokenizer).eos
    config = ModelConfig.from_name("gpt2", hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=64,
                                   vocab_size=tokenizer.get_vocab_size())
    model = TaskModel(config, {"lm": {"kind": "clm"}})
    save_model(model, tmp_path / "gpt", tokenizer)
    return tmp_path / "gpt", tokenizer, eos


def test_cli_generates_jsonl_and_streams_one_prompt(tmp_path, shared_data, capsys):
    import json

    from lmforge.cli.main import main

    model_dir, tokenizer, _ = gpt2_model_dir(tmp_path, shared_data)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\n")
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--model", str(model_dir), "--input", str(prompts), "--out", str(out),
                 "--max-new-tokens", "7", "--batch-size", "2"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["First Citizen:", "Before we proceed any further, hear me speak.", "All:"]
    for record in records:
        assert 1 <= len(record["tokens"]) <= 7
        assert record["text"] == tokenizer.decode(record["tokens"], skip_special_tokens=True)
    # batched (left-padded) prompts generate what each generates alone
    alone = tmp_path / "alone.jsonl"
    assert main(["generate", "--model", str(model_dir), "--prompt", "All:", "--out", str(alone),
                 "--max-new-tokens", "7"]) == 0
    assert json.loads(alone.read_text())["tokens"] == records[2]["tokens"]
    streamed = capsys.readouterr().out
    assert records[2]["text"] in streamed


@pytest.mark.parametrize("args, message", [
    (["--top-p", "0"], "top_p"),
    (["--num-beams", "0", "--strategy", "beam"], "num_beams"),
    (["--max-new-tokens", "100"], "positions"),
    (["--prompt", " "], "empty prompt"),
])
def test_cli_refuses_bad_requests_in_one_line(tmp_path, shared_data, capsys, args, message):
    from lmforge.cli.main import main

    model_dir, _, _ = gpt2_model_dir(tmp_path, shared_data)
    base = ["generate", "--model", str(model_dir)]
    if "--prompt" not in args:
        base += ["--prompt", "All:"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_a_model_without_a_decoder(tmp_path, capsys):
    from lmforge.cli.main import main
    from lmforge.config import ModelConfig
    from lmforge.models import TaskModel, save_model

    save_model(TaskModel(ModelConfig.from_name("bert-tiny", vocab_size=50), {"mlm": {"kind": "mlm"}}), tmp_path)
    assert main(["generate", "--model", str(tmp_path), "--prompt", "hello"]) == 2
    assert "causal LM head" in capsys.readouterr().err


def test_export_carries_special_ids_inside_the_vocabulary(tmp_path, shared_data):
    import json

    from lmforge.cli.main import main

    model_dir, tokenizer, eos = gpt2_model_dir(tmp_path, shared_data)
    assert main(["convert", "--to-hf", str(model_dir), "--out", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    vocab = tokenizer.get_vocab_size()
    assert config["eos_token_id"] == eos and config["bos_token_id"] == eos < vocab  # not GPT-2's 50256
    assert config["pad_token_id"] == eos  # GPT-2 pads with <|endoftext|>: batched classification finds the end
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == eos
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert hf.generation_config.eos_token_id == eos
