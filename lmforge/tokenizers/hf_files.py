"""Read and write tokenizer directories: lmforge's and HuggingFace's (current and older formats).

Writing picks `tokenizer_class` for transformers 5, where the model-specific classes
(BertTokenizer, RobertaTokenizer, AlbertTokenizer, ...) do not load tokenizer.json as it is: they
take its vocabulary and rebuild normaliser and pre-tokeniser from tokenizer_config.json. That is
exact for a canonical BERT WordPiece pipeline (written out with explicit do_lower_case and
strip_accents=False, else BertTokenizer would strip accents and break Hangul), so such tokenizers
are written as BertTokenizer. Everything else is written as PreTrainedTokenizerFast, which loads
tokenizer.json verbatim (transformers 4 and 5), so ids match ours exactly.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, models

from lmforge.atomic import atomic_path, write_text_atomic
from lmforge.tokenizers import pipeline
from lmforge.tokenizers.families import TEMPLATES, FamilyTemplate
from lmforge.tokenizers.special import special_tokens
from lmforge.tokenizers.train import finish_tokenizer

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_MAP_FILE = "special_tokens_map.json"
# every file a tokenizer directory may hold (lmforge's and HF fast/slow layouts): what travels with a model
TOKENIZER_FILES = (TOKENIZER_FILE, CONFIG_FILE, SPECIAL_MAP_FILE, "vocab.txt", "vocab.json", "merges.txt",
                   "added_tokens.json", "spiece.model")
_BERT_LIKE = ("bert", "electra", "distilbert")
_MAX_LENGTH_SENTINEL = 10**6  # HF writes int(1e30) for "no limit"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _token_str(value: Any) -> str | None:
    """tokenizer_config stores special tokens as strings or AddedToken dicts."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _tokenizer_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    return _read_json(path) if path.is_file() else {}


def _add_specials(tokenizer: Tokenizer, names: list[str | None], lstrip: set[str] = frozenset()) -> None:
    present = [n for n in dict.fromkeys(names) if n is not None and tokenizer.token_to_id(n) is not None]
    tokenizer.add_special_tokens(
        [AddedToken(n, special=True, normalized=False, lstrip=n in lstrip) for n in present]
    )


def _from_bert_vocab(directory: Path, config: dict[str, Any]) -> Tokenizer:
    path = directory / "vocab.txt"
    vocab: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            vocab.setdefault(line.rstrip("\n"), index)  # HF keeps the first id of a duplicated line
    if not vocab:
        raise ValueError(f"{path}: empty vocabulary")
    tmpl = TEMPLATES["bert"]
    names = {role: _token_str(config.get(f"{role}_token")) or getattr(tmpl, role)
             for role in ("pad", "unk", "cls", "sep", "mask")}
    if names["unk"] not in vocab:
        raise ValueError(f"{path}: unknown token {names['unk']!r} is not in the vocabulary")
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=names["unk"], max_input_chars_per_word=100))
    tokenizer.normalizer = pipeline.legacy_bert_normalizer(
        lowercase=bool(config.get("do_lower_case", True)),
        strip_accents=config.get("strip_accents"),
        chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
    )
    tokenizer.pre_tokenizer = pipeline.pre_tokenizer("wordpiece")
    tokenizer.decoder = pipeline.decoder("wordpiece")
    _add_specials(tokenizer, list(names.values()))
    for role in ("cls", "sep"):
        if tokenizer.token_to_id(names[role]) is None:
            raise ValueError(f"{path}: {role} token {names[role]!r} is not in the vocabulary")
    tmpl = FamilyTemplate(**{**tmpl.__dict__, **names})
    return finish_tokenizer(tokenizer, tmpl, _max_length(config))


def _from_bpe_files(directory: Path, config: dict[str, Any]) -> Tokenizer:
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab = _read_json(vocab_path)
    try:
        model = models.BPE.from_file(str(vocab_path), str(merges_path))
    except Exception as err:  # tokenizers raises a bare Exception for bad merges
        raise ValueError(f"{merges_path}: cannot read BPE merges ({err})") from None
    is_roberta = str(config.get("tokenizer_class", "")).startswith("Roberta") or (
        "tokenizer_class" not in config and "<s>" in vocab and "<mask>" in vocab
    )
    tmpl = TEMPLATES["roberta" if is_roberta else "gpt2"]
    tokenizer = Tokenizer(model)
    prefix_space = bool(config.get("add_prefix_space"))
    tokenizer.pre_tokenizer = pipeline.pre_tokenizer("bpe", add_prefix_space=prefix_space)
    tokenizer.decoder = pipeline.decoder("bpe")
    _add_specials(tokenizer, list(tmpl.specials), {tmpl.mask} if tmpl.mask_lstrip else set())
    missing = [t for t in tmpl.specials if t not in vocab]
    if missing:
        raise ValueError(f"{vocab_path}: {tmpl.name} special tokens {missing} are not in the vocabulary")
    return finish_tokenizer(tokenizer, tmpl, _max_length(config))


def _max_length(config: dict[str, Any]) -> int | None:
    value = config.get("model_max_length")
    return int(value) if isinstance(value, (int, float)) and 0 < value < _MAX_LENGTH_SENTINEL else None


def _read_tokenizer_json(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception with serde's message
        raise ValueError(f"{path}: not a valid tokenizer.json ({err})") from None


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """A tokenizer from an lmforge or HF directory: tokenizer.json if there is one, else BERT's
    vocab.txt or GPT-2/RoBERTa's vocab.json + merges.txt, with the family's post-processing."""
    directory = Path(directory)
    if directory.is_file() and directory.suffix == ".json":  # a tokenizer.json named directly
        return _read_tokenizer_json(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: tokenizer directory not found")
    config = _tokenizer_config(directory)
    if (directory / TOKENIZER_FILE).is_file():
        return _read_tokenizer_json(directory / TOKENIZER_FILE)
    if (directory / "vocab.txt").is_file():
        return _from_bert_vocab(directory, config)
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return _from_bpe_files(directory, config)
    if (directory / "spiece.model").is_file() and _is_t5(directory, config):
        from lmforge.tokenizers.sentencepiece_model import read_spiece

        return read_spiece(directory / "spiece.model", int(config.get("extra_ids", 100)), _max_length(config))
    hint = ""
    if any((directory / n).is_file() for n in ("spiece.model", "sentencepiece.bpe.model")):
        hint = (" (a SentencePiece .model is not read directly: load it once with transformers' "
                "AutoTokenizer and save_pretrained to get a tokenizer.json)")
    raise FileNotFoundError(
        f"{directory}: no tokenizer found: expected tokenizer.json, vocab.txt (BERT) "
        f"or vocab.json + merges.txt (GPT-2/RoBERTa){hint}"
    )


def _is_t5(directory: Path, config: dict[str, Any]) -> bool:
    """A T5 SentencePiece folder: its tokenizer_config names T5Tokenizer or has `extra_ids`, or its model
    config says model_type t5 (ALBERT ships a spiece.model too, with another template)."""
    if str(config.get("tokenizer_class", "")).startswith("T5") or "extra_ids" in config:
        return True
    model_config = directory / "config.json"
    return model_config.is_file() and _read_json(model_config).get("model_type") == "t5"


def has_tokenizer(directory: str | Path) -> bool:
    """Whether `load_tokenizer(directory)` has files to read."""
    directory = Path(directory)
    return (directory / TOKENIZER_FILE).is_file() or (directory / "vocab.txt").is_file() or (
        (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file())


def require_model_tokenizer(model_dir: str | Path, vocab_size: int | None = None) -> Tokenizer:
    """The tokenizer saved in a model directory, or a one-line error naming the directory.

    A model without its tokenizer is unusable (nobody can reproduce its ids), so exporting or
    fine-tuning one is refused rather than producing a model that silently reads [UNK]s.
    `vocab_size` (the model's embedding rows) is checked too: a larger tokenizer would index past it."""
    model_dir = Path(model_dir)
    if not has_tokenizer(model_dir):
        raise FileNotFoundError(
            f"{model_dir}: the model directory has no tokenizer (tokenizer.json, vocab.txt or vocab.json + "
            f"merges.txt); copy in the tokenizer it was trained with (e.g. the `tokenizer/` folder "
            f"`lmforge prepare` wrote beside the data)")
    tokenizer = load_tokenizer(model_dir)
    if vocab_size is not None:
        check_vocab_fits(tokenizer, vocab_size, str(model_dir))
    return tokenizer


def check_vocab_fits(tokenizer: Tokenizer, vocab_size: int, where: str) -> None:
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise ValueError(f"{where}: the tokenizer has {size} tokens but the model only {vocab_size} embedding "
                         f"rows; tokenizer and model do not belong together")


def vocab_fingerprint(tokenizer: Tokenizer) -> str:
    """sha256 of the token -> id table (added tokens included). Unlike the file's hash it survives
    re-serialisation (convert, save_pretrained), and it changes whenever an id would mean another token."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    table = sorted(vocab.items(), key=lambda item: (item[1], item[0]))
    return hashlib.sha256(json.dumps(table, ensure_ascii=False).encode("utf-8")).hexdigest()


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> list[Path]:
    """Copy the tokenizer files of directory `src` (or a tokenizer.json named directly) into `dst`."""
    src, dst = Path(src), Path(dst)
    files = [src] if src.is_file() else [src / name for name in TOKENIZER_FILES if (src / name).is_file()]
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in files:
        target = dst / (TOKENIZER_FILE if src.is_file() else path.name)
        shutil.copyfile(path, target)
        copied.append(target)
    return copied


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _canonical_bert(tokenizer: Tokenizer) -> dict[str, Any] | None:
    """BertTokenizer arguments that rebuild this tokenizer exactly, or None if it is not one."""
    data = json.loads(tokenizer.to_str())
    norm, pre, model, dec = (data.get(k) or {} for k in ("normalizer", "pre_tokenizer", "model", "decoder"))
    if (norm.get("type"), pre.get("type"), model.get("type"), dec.get("type")) != (
        "BertNormalizer", "BertPreTokenizer", "WordPiece", "WordPiece"
    ):
        return None
    if not norm.get("clean_text", True) or model.get("continuing_subword_prefix") != "##":
        return None
    strip = norm.get("strip_accents")
    return {
        "do_lower_case": bool(norm.get("lowercase")),
        # None would mean "follow do_lower_case"; write the value the normaliser really uses
        "strip_accents": bool(norm.get("lowercase")) if strip is None else bool(strip),
        "tokenize_chinese_chars": bool(norm.get("handle_chinese_chars", True)),
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_hf_tokenizer_files(tokenizer: Tokenizer, out_dir: str | Path, family: str,
                             *, model_max_length: int | None = None) -> Path:
    """tokenizer.json + tokenizer_config.json + special_tokens_map.json, loadable by
    `transformers.AutoTokenizer.from_pretrained(out_dir)` as a fast tokenizer with our ids."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmpl = TEMPLATES.get(family, TEMPLATES["gpt2" if family == "openai-gpt" else "bert"])
    ids = special_tokens(tokenizer)
    id_to_token = tokenizer.id_to_token
    roles = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
    tokens = {role: id_to_token(getattr(ids, role)) for role in roles if getattr(ids, role) is not None}
    if model_max_length is None:
        truncation = tokenizer.truncation
        model_max_length = truncation["max_length"] if truncation else tmpl.model_max_length

    with atomic_path(out_dir / TOKENIZER_FILE) as tmp:
        tokenizer.save(str(tmp))

    bert_args = _canonical_bert(tokenizer) if family in _BERT_LIKE else None
    config: dict[str, Any] = {
        "tokenizer_class": "BertTokenizer" if bert_args is not None else "PreTrainedTokenizerFast",
        **(bert_args or {}),
        "model_max_length": model_max_length,
        "model_input_names": list(tmpl.model_input_names),
        "padding_side": tmpl.padding_side,
        "clean_up_tokenization_spaces": False,
        **{f"{role}_token": tok for role, tok in tokens.items()},
    }
    _write_json(out_dir / CONFIG_FILE, config)
    _write_json(out_dir / SPECIAL_MAP_FILE, {f"{role}_token": tok for role, tok in tokens.items()})
    return out_dir
