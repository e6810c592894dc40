"""HF directory <-> TaskModel, and directory-to-directory conversion with the tokenizer files.

A conversion carries everything a user of the other side needs: the tokenizer (an export without
one is refused), the sentence-transformers files of a sentence-transformers checkpoint (so it
exports back as one), and on export a model card (`README.md`, see `card.py`)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Collection
from pathlib import Path

from lmforge.atomic import write_text_atomic
from lmforge.config import is_lmforge_dir
from lmforge.convert.card import CARD_FILE, SENTENCE_TRANSFORMERS_FILES, SOURCE_FILE, model_card, source_record
from lmforge.convert.families import adapter_for, adapter_of
from lmforge.convert.generation import write_special_ids
from lmforge.convert.hf_config import from_hf_config, to_hf_config
from lmforge.convert.hf_io import read_hf_config, read_hf_weights, strip_prefix
from lmforge.convert.mapping import CompiledMap, compile_map, hf_to_ours, ours_to_hf
from lmforge.models.task_model import TaskModel, load_model, load_state, save_model
from lmforge.tokenizers import TOKENIZER_FILES, load_tokenizer, require_model_tokenizer, write_hf_tokenizer_files
from lmforge.weights import save_weights

log = logging.getLogger(__name__)


def load_hf(hf_dir: str | Path) -> TaskModel:
    """A HuggingFace checkpoint of one of the families in `convert.families`, as a TaskModel with
    the heads its `architectures` names (BertForPreTraining -> {"mlm", "nsp"}, ...)."""
    hf_dir = Path(hf_dir)
    hf_config = read_hf_config(hf_dir)
    where = str(hf_dir / "config.json")
    adapter = adapter_for(hf_config, where)
    raw, path = read_hf_weights(hf_dir)
    state, _ = strip_prefix(raw, adapter.base_prefix, str(path))
    info = from_hf_config(hf_config, where, state_keys=set(state))
    model = TaskModel(info.config, info.heads, init=False)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    ours, dropped = hf_to_ours(state, _compiled(model, expected), expected, _tie_partners(model), str(path))
    if dropped:
        log.warning("%s: %d tensors of heads that %s does not use were dropped: %s",
                    path, len(dropped), info.architecture, ", ".join(dropped))
    load_state(model, ours, str(path))
    return model


def _compiled(model: TaskModel, params: Collection[str]) -> CompiledMap:
    """The model's family key map, expanded for its layer ranges and heads."""
    adapter = adapter_of(model.config.family)
    kinds = {name: spec["kind"] for name, spec in model.head_specs().items()}
    return compile_map(adapter.key_map(model.config), adapter.ranges(model.config), kinds, params)


def _tie_partners(model: TaskModel) -> dict[str, str]:
    """Each later name of a shared parameter -> the first name (what `state_dict` saves)."""
    first: dict[int, str] = {}
    partners: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            partners[name] = first[id(param)]
        else:
            first[id(param)] = name
    return partners


def save_hf(model: TaskModel, out_dir: str | Path) -> Path:
    """Write `config.json` + `model.safetensors` that transformers loads with AutoModel / the
    AutoModelFor* class matching the model's heads."""
    out_dir = Path(out_dir)
    specs = model.head_specs()
    hf_config = to_hf_config(model.config, specs)
    full = model.state_dict()
    cmap = _compiled(model, full.keys())
    tied = model.tied_keys()
    state = {k: v.detach() for k, v in full.items() if k not in tied}
    hf_state = ours_to_hf(state, cmap, f"{model.config.family} model")
    if specs and adapter_of(model.config.family).base_prefix:  # head models: backbone under the base prefix
        backbone = cmap.backbone_names()
        prefix = adapter_of(model.config.family).base_prefix + "."
        hf_state = {(prefix + k if k in backbone else k): v for k, v in hf_state.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(hf_state, out_dir / "model.safetensors", metadata={"format": "pt"})
    write_text_atomic(out_dir / "config.json", json.dumps(hf_config, indent=2) + "\n")
    return out_dir


def load_pretrained(path: str | Path) -> TaskModel:
    """An lmforge model directory or a HuggingFace one, whichever `path` is."""
    path = Path(path)
    if is_lmforge_dir(path):
        return load_model(path)
    if (path / "config.json").is_file():
        return load_hf(path)
    raise FileNotFoundError(f"{path}: neither an lmforge nor a HuggingFace model directory (no config.json)")


def convert_from_hf(hf_dir: str | Path, out_dir: str | Path, hub_id: str | None = None) -> Path:
    """An lmforge model directory from a HuggingFace one: weights, config, tokenizer, the
    sentence-transformers files if any, and `lmforge_source.json` (where it came from: the Hub
    README's front matter and `hub_id`, the checkpoint's Hub name when given) for model cards."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    model = load_hf(hf_dir)
    _refuse_same(hf_dir, out_dir)
    save_model(model, out_dir)
    _copy_tokenizer(hf_dir, out_dir, model.config.family, to_hf=False)
    _copy_sentence_transformers(hf_dir, out_dir)
    write_text_atomic(out_dir / SOURCE_FILE, json.dumps(source_record(hf_dir, hub_id), indent=2) + "\n")
    return out_dir


def convert_to_hf(our_dir: str | Path, out_dir: str | Path) -> Path:
    """A HuggingFace directory from an lmforge one: config.json + model.safetensors, the tokenizer
    files transformers expects (a model without a tokenizer is refused), the sentence-transformers
    files it came with, and a model card (README.md) from what its run directory recorded."""
    our_dir, out_dir = Path(our_dir), Path(out_dir)
    model = load_model(our_dir)
    require_model_tokenizer(our_dir, model.config.vocab_size)  # before anything is written
    _refuse_same(our_dir, out_dir)
    save_hf(model, out_dir)
    _copy_tokenizer(our_dir, out_dir, model.config.family, to_hf=True)
    write_special_ids(out_dir, model.config.vocab_size, decoder=bool(model.config.causal))
    sentence_transformers = _copy_sentence_transformers(our_dir, out_dir)
    kinds = [spec["kind"] for spec in model.head_specs().values()]
    card = model_card(our_dir, kinds, model.config.family, sentence_transformers)
    write_text_atomic(out_dir / CARD_FILE, card)
    return out_dir


def _copy_sentence_transformers(src: Path, dst: Path) -> bool:
    """modules.json, its module folders (pooling, normalisation, dense layers) and the
    sentence-transformers configs, as they are; True when there were any."""
    modules = src / "modules.json"
    if not modules.is_file():
        return False
    for name in SENTENCE_TRANSFORMERS_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    try:
        entries = json.loads(modules.read_text())
    except ValueError:
        raise ValueError(f"{modules}: invalid JSON") from None
    for entry in entries if isinstance(entries, list) else []:
        path = entry.get("path") if isinstance(entry, dict) else None
        if path and (src / path).is_dir():
            if (dst / path).exists():
                shutil.rmtree(dst / path)
            shutil.copytree(src / path, dst / path)
    return True


def _refuse_same(src: Path, dst: Path) -> None:
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: output directory is the input directory; choose another")


def _copy_tokenizer(src: Path, dst: Path, family: str, to_hf: bool) -> None:
    """Through lmforge.tokenizers (it writes the files transformers expects, and builds
    tokenizer.json from HF vocab files); files it cannot read are copied as they are."""
    present = [name for name in TOKENIZER_FILES if (src / name).is_file()]
    if not present:
        return
    tokenizer = None
    try:
        tokenizer = load_tokenizer(src)
    except (ValueError, FileNotFoundError) as err:  # e.g. a sentencepiece-only HF directory
        log.warning("%s: tokenizer files copied as they are (%s)", src, err)
    if tokenizer is not None:
        if to_hf:
            write_hf_tokenizer_files(tokenizer, dst, family)
        else:
            tokenizer.save(str(dst / "tokenizer.json"))
        present = [n for n in present if not (dst / n).exists()]  # the rest as they are (vocab.txt ...)
    for name in present:
        shutil.copyfile(src / name, dst / name)
