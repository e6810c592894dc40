"""Tiny models and tokenizers for the fine-tuning tests (bert-tiny sized and smaller)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from lmforge.models import build_model, save_model


def tiny_tokenizer(texts: list[str], vocab_size: int = 600) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special,
                                                              show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def tiny_model_dir(directory: Path, texts: list[str], max_positions: int = 512) -> Path:
    tok = tiny_tokenizer(texts)
    model = build_model("bert-tiny", vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=1,
                        num_heads=2, intermediate_size=64, max_position_embeddings=max_positions,
                        dropout=0.0, attention_dropout=0.0)
    return save_model(model, directory, tok)


def assert_refuses_other_tasks(cli_main, run: Path, data: Path, tmp_path: Path, capsys) -> None:
    """A run fine-tuned for SST-2, given `--task mrpc` (evaluate) or `--task ner` (predict): exit 2 and one
    line naming both tasks."""
    assert cli_main(["evaluate", "--task", "mrpc", "--model", str(run), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert "fine-tuned for 'sst2', not 'mrpc'" in err and len(err.splitlines()) == 1
    assert cli_main(["predict", "--task", "ner", "--model", str(run), "--input", str(data / "dev.tsv"),
                     "--out", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert "fine-tuned for 'sst2', not 'ner'" in err and len(err.splitlines()) == 1
