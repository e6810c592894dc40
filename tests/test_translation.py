"""Translation end to end (Vaswani et al. 2017): parallel text -> joint tokenizer -> `lmforge prepare
--format parallel` -> the `translation` objective under `lmforge pretrain` (exact resume) -> checkpoint
averaging -> `lmforge evaluate --task translation` (beam search, sacreBLEU) -> HF Marian export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmforge.cli.main import main
from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.data.pretraining import ObjectiveConfig, PretrainingDataset
from lmforge.heads import IGNORE
from lmforge.pretrain import pretrain
from lmforge.tokenizers import train_tokenizer, write_hf_tokenizer_files
from lmforge.train.config import load_config
from lmforge.weights import load_weights

# a toy language pair: each source word has one target word, the target order is reversed
WORDS = ["haus", "baum", "kind", "hund", "katze", "mann", "frau", "ball", "rot", "blau", "gross", "klein"]
GLOSS = dict(zip(WORDS, ["house", "tree", "child", "dog", "cat", "man", "woman", "ball", "red", "blue",
                         "big", "small"]))


def toy_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    sources = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 7)))) for _ in range(n)]
    return sources, [" ".join(GLOSS[w] for w in reversed(s.split())) for s in sources]


def write(path, lines: list[str]):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Aligned files (one empty target and one length-ratio outlier among them), a joint Marian tokenizer
    trained on both sides, and the prepared pairs."""
    root = tmp_path_factory.mktemp("mt")
    sources, targets = toy_pairs(300)
    sources[5], targets[5] = "haus baum", ""  # empty side
    sources[9], targets[9] = "haus", " ".join(["house"] * 12)  # 1 vs 12 words
    src, tgt = write(root / "train.de", sources), write(root / "train.en", targets)
    tokenizer = train_tokenizer("bpe", [src, tgt], 300, family="marian", min_frequency=1)
    write_hf_tokenizer_files(tokenizer, root / "tok", "marian")
    valid_src, valid_tgt = toy_pairs(40, seed=1)
    vs, vt = write(root / "valid.de", valid_src), write(root / "valid.en", valid_tgt)
    manifest = prepare(PrepareConfig(tokenizer=str(root / "tok"), inputs=[str(src), str(tgt)], out=str(root / "data"),
                                     format="parallel", valid=[str(vs), str(vt)], progress=False))
    return dict(root=root, src=src, tgt=tgt, sources=sources, targets=targets, tokenizer=tokenizer,
                manifest=manifest, data=root / "data", valid=(vs, vt))


# ----------------------------------------------------------------------------------- prepare
def test_prepare_keeps_pairs_and_counts_what_it_skips(corpus):
    manifest = corpus["manifest"]
    stats = manifest["parallel"]["train"]
    assert (stats["lines"], stats["pairs"], stats["empty"], stats["ratio_outliers"]) == (300, 298, 1, 1)
    assert any("train.en" in note or "train.de:6" in note for note in stats["examples"])
    train = manifest["splits"]["train"]
    assert (train["documents"], train["sentences"]) == (298, 2 * 298)  # a pair = a document of two sentences
    assert manifest["parallel"]["valid"]["pairs"] == manifest["splits"]["valid"]["documents"] == 40


def test_prepare_refuses_misaligned_files_naming_them(corpus, tmp_path, capsys):
    short = write(tmp_path / "short.en", corpus["targets"][:-1])
    with pytest.raises(ValueError, match=r"train.de has 300 lines but .*short.en has 299"):
        prepare(PrepareConfig(tokenizer=str(corpus["root"] / "tok"), inputs=[str(corpus["src"]), str(short)],
                              out=str(tmp_path / "out"), format="parallel", progress=False))
    bad = write(tmp_path / "pairs.tsv", ["haus\thouse", "baum\ttree\textra"])
    code = main(["prepare", "--format", "parallel", "--tokenizer", str(corpus["root"] / "tok"), "--input", str(bad),
                 "--out", str(tmp_path / "out2"), "--quiet"])
    assert code == 2
    assert "pairs.tsv:2: expected 2 tab-separated columns" in capsys.readouterr().err
    code = main(["prepare", "--format", "parallel", "--tokenizer", str(corpus["root"] / "tok"),
                 "--input", str(bad), str(bad), str(bad), "--out", str(tmp_path / "out3"), "--quiet"])
    assert code == 2 and "takes a source and a target file" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- objective
def test_examples_are_token_budget_batches_of_eos_terminated_pairs(corpus):
    config = ObjectiveConfig(kind="translation", max_seq_len=16, max_tokens=64)
    data = PretrainingDataset(corpus["data"], config)
    eos, pad = data.special.eos, data.special.pad
    tok = corpus["tokenizer"]
    kept = [(s, t) for s, t in zip(corpus["sources"], corpus["targets"])
            if s and t and max(len(s.split()), len(t.split())) <= 9 * min(len(s.split()), len(t.split()))]
    expected = sorted((tuple(tok.encode(s, add_special_tokens=False).ids + [eos]),
                       tuple(tok.encode(t, add_special_tokens=False).ids + [eos])) for s, t in kept)
    expected = [p for p in expected if len(p[0]) <= 16 and len(p[1]) <= 16]
    seen = []
    for i in range(len(data)):
        ex = data[i]
        width = max(len(x) for x in ex["sources"] + ex["targets"])
        assert len(ex["sources"]) * width <= 64  # the budget, padding included (§5.1)
        seen += [(tuple(s.tolist()), tuple(t.tolist())) for s, t in zip(ex["sources"], ex["targets"])]
    assert sorted(seen) == expected  # every pair that fits, exactly once
    assert data.layout.too_long == len(kept) - len(expected)
    batch = data.collate([data[0], data[1]])
    n = len(data[0]["sources"]) + len(data[1]["sources"])
    assert batch["input_ids"].shape[0] == n and batch["labels"].shape[0] == n
    labels = batch["labels"]
    assert torch.equal(batch["decoder_input_ids"][:, 0], torch.full((n,), pad))  # Marian starts from pad
    body = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE, pad)
    assert torch.equal(batch["decoder_input_ids"][:, 1:], body)
    last = batch["decoder_attention_mask"].sum(1) - 1
    assert torch.equal(labels[torch.arange(n), last], torch.full((n,), eos))


def test_refuses_a_model_without_decoder_and_data_that_is_not_pairs(corpus, tmp_path):
    from lmforge.train.models import build_pretraining_model

    config = load_config(None, ["objective.kind=translation", "model.preset=bert-tiny"])
    with pytest.raises(ValueError, match="needs an encoder-decoder"):
        build_pretraining_model(config, 300, 0)
    mono = prepare(PrepareConfig(tokenizer=str(corpus["root"] / "tok"), inputs=[str(corpus["tgt"])],
                                 out=str(tmp_path / "mono"), format="lines", progress=False))
    assert mono["splits"]["train"]["documents"] > 0
    with pytest.raises(ValueError, match="not parallel text"):
        PretrainingDataset(tmp_path / "mono", ObjectiveConfig(kind="translation", max_seq_len=16))


# ----------------------------------------------------------------------------------- training
def overrides(corpus, run_dir, **extra: str) -> list[str]:
    items = {
        "run_dir": str(run_dir), "data.prepared_dir": str(corpus["data"]), "model.preset": "transformer-small",
        "model.overrides.hidden_size": "32", "model.overrides.num_heads": "2", "model.overrides.num_layers": "1",
        "model.overrides.num_decoder_layers": "1", "model.overrides.intermediate_size": "64",
        "model.overrides.max_position_embeddings": "32", "objective.max_seq_len": "16", "objective.max_tokens": "96",
        "optim.lr": "3e-3", "schedule.warmup": "0.1", "schedule.max_steps": "8", "schedule.time_budget_minutes": "0",
        "checkpoint.every_steps": "4", "checkpoint.keep_last": "2", "eval.every_steps": "0", "eval.max_batches": "2",
        "system.log_every": "1", "system.progress_bar": "false", "system.threads": "1",
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


class Stop(Exception):
    pass


def test_recipe_is_the_papers_optimiser_and_resume_is_exact(corpus, tmp_path):
    recipe = load_config("transformer", overrides(corpus, tmp_path / "straight"))
    assert (recipe.optim.beta1, recipe.optim.beta2, recipe.optim.eps, recipe.optim.weight_decay) == (0.9, 0.98, 1e-9, 0)
    assert recipe.schedule.kind == "inverse_sqrt" and recipe.objective.label_smoothing == 0.1  # §5.3, §5.4
    straight = pretrain(recipe)
    losses = [r["loss"] for r in straight.history]
    assert losses[-1] < losses[0]

    def stop(step, record):
        if step == 6:
            raise Stop

    broken = load_config("transformer", overrides(corpus, tmp_path / "broken"))
    with pytest.raises(Stop):
        pretrain(broken, callbacks=(stop,))
    resumed = pretrain(broken, resume=True)
    assert [r["loss"] for r in resumed.history] == losses[4:]  # steps 5-8 again, float for float
    a = load_weights(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_weights(tmp_path / "broken" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    pretrain(load_config("transformer", overrides(corpus, run, **{"schedule.max_steps": "30"})))
    return run


def test_average_command_averages_the_last_checkpoints(trained, tmp_path):
    out = tmp_path / "avg"
    assert main(["average", "--run", str(trained), "--last", "2", "--out", str(out)]) == 0
    steps = sorted((trained / "checkpoints").glob("step-*"))[-2:]
    a, b = (load_weights(s / "model.safetensors") for s in steps)
    got = load_weights(out / "model.safetensors")
    for key in got:
        torch.testing.assert_close(got[key], (a[key].double() + b[key].double()).div(2).float())
    assert (out / "tokenizer.json").is_file()
    assert main(["average", "--run", str(trained), "--last", "3", "--out", str(tmp_path / "x")]) == 2


def test_evaluate_translation_prints_bleu_and_chrf_with_signatures(corpus, trained, tmp_path, capsys):
    vs, vt = corpus["valid"]
    model = str(trained / "final")
    hyp = tmp_path / "hyp.en"
    code = main(["evaluate", "--task", "translation", "--model", model, "--source", str(vs), "--reference", str(vt),
                 "--hypotheses", str(hyp), "--num-beams", "2", "--no-progress"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sentences"] == 40 and 0 <= result["bleu"] <= 100 and 0 <= result["chrf"] <= 100
    assert result["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert result["chrf_signature"].startswith("nrefs:1|case:mixed")
    lines = hyp.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 40
    # scored against its own output every n-gram matches: BLEU 100 (whatever the model learnt)
    assert main(["evaluate", "--task", "translation", "--model", model, "--source", str(vs), "--reference",
                 str(hyp), "--num-beams", "2", "--no-progress"]) == 0
    if all(lines):
        assert json.loads(capsys.readouterr().out)["bleu"] == 100.0
    else:
        capsys.readouterr()
    misaligned = write(tmp_path / "short.en", lines[:-1])
    assert main(["evaluate", "--task", "translation", "--model", model, "--source", str(vs), "--reference",
                 str(misaligned)]) == 2
    assert "not aligned" in capsys.readouterr().err


def test_evaluate_refuses_a_model_without_decoder(corpus, tmp_path, capsys):
    from lmforge.config import ModelConfig
    from lmforge.models import TaskModel, save_model

    encoder = TaskModel(ModelConfig.from_name("bert-tiny", vocab_size=300, hidden_size=16, num_heads=2, num_layers=1,
                                              intermediate_size=32), {"mlm": {"kind": "mlm"}})
    save_model(encoder, tmp_path / "bert")
    corpus["tokenizer"].save(str(tmp_path / "bert" / "tokenizer.json"))
    vs, vt = corpus["valid"]
    assert main(["evaluate", "--task", "translation", "--model", str(tmp_path / "bert"), "--source", str(vs),
                 "--reference", str(vt)]) == 2
    assert "has no decoder" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- HF export
def test_marian_export_loads_in_transformers_with_marians_tokenizer(corpus, trained, tmp_path):
    transformers = pytest.importorskip("transformers")
    from lmforge.convert import convert_to_hf
    from lmforge.translate import TranslateConfig, translate

    out = convert_to_hf(trained / "final", tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    encoded = hf_tok(["haus baum", "rot"], padding=True)
    assert set(encoded) == {"input_ids", "attention_mask"}  # Marian takes no token_type_ids
    eos = corpus["tokenizer"].token_to_id("</s>")
    assert encoded["input_ids"][1][:sum(encoded["attention_mask"][1])][-1] == eos  # </s> appended
    assert hf_tok.eos_token_id == eos and hf_tok.pad_token_id == corpus["tokenizer"].token_to_id("<pad>")
    model = transformers.MarianMTModel.from_pretrained(out).eval()
    assert model.config.decoder_start_token_id == hf_tok.pad_token_id
    # HF beam search on the exported weights, fed the tokenizer's own encoding, translates as lmforge does
    from lmforge.convert import load_pretrained
    from lmforge.tasks.text import load_task_tokenizer

    sources = [line for line in corpus["valid"][0].read_text().splitlines()[:6]]
    ours = translate(load_pretrained(trained / "final"), load_task_tokenizer(trained / "final"), sources,
                     TranslateConfig(num_beams=3, batch_size=8))
    batch = hf_tok(sources, padding=True, return_tensors="pt")
    limit = min(batch["input_ids"].shape[1] + 50, model.config.max_position_embeddings - 1)  # source + 50 (§6.1)
    with torch.no_grad():
        generated = model.generate(**batch, num_beams=3, length_penalty=0.6, max_new_tokens=limit, eos_token_id=eos,
                                   pad_token_id=hf_tok.pad_token_id, do_sample=False)
    theirs = hf_tok.batch_decode(generated, skip_special_tokens=True)
    assert [t.strip() for t in theirs] == ours.texts


def test_generate_translates_a_batch_as_it_translates_each_source_alone(corpus, tmp_path):
    """`lmforge generate` with an encoder-decoder: sources end with </s> and are right-padded, so a batch of
    sources of different lengths gives what each gives alone. The model is random, with large weights and a sharpened last LayerNorm, so its tokens depend on
    the whole source."""
    from lmforge.config import ModelConfig
    from lmforge.models import TaskModel, save_model

    tok = corpus["tokenizer"]
    torch.manual_seed(0)
    config = ModelConfig.from_name("transformer-small", vocab_size=tok.get_vocab_size(), hidden_size=32, num_heads=2,
                                   num_layers=2, num_decoder_layers=2, intermediate_size=64, max_position_embeddings=64,
                                   pad_token_id=tok.token_to_id("<pad>"), dropout=0.0)
    model = TaskModel(config, {"seq2seq_lm": {"kind": "seq2seq_lm"}})
    with torch.no_grad():  # weights far from the small init: the cross-attention carries the source
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(std=0.3)
        model.backbone.decoder.layers[-1].norm2.weight.mul_(30.0)
    save_model(model, tmp_path / "model")
    tok.save(str(tmp_path / "model" / "tokenizer.json"))
    sources = corpus["valid"][0].read_text().splitlines()[:5]
    assert len({len(s.split()) for s in sources}) > 1
    inputs = write(tmp_path / "src.txt", sources)
    outputs = []
    for batch in ("5", "1"):
        out = tmp_path / f"out{batch}.jsonl"
        assert main(["generate", "--model", str(tmp_path / "model"), "--input", str(inputs), "--out", str(out),
                     "--batch-size", batch, "--max-new-tokens", "12", "--device", "cpu"]) == 0
        outputs.append([json.loads(line)["tokens"] for line in out.read_text().splitlines()])
    assert len({tuple(t) for t in outputs[1]}) > 1  # the output depends on the source
    assert outputs[0] == outputs[1]
