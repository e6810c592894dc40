"""HF directory <-> TaskModel, and directory-to-directory conversion with the tokenizer files."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Collection
from pathlib import Path

from lmforge.config import is_lmforge_dir
from lmforge.convert.families import adapter_for, adapter_of
from lmforge.convert.generation import write_special_ids
from lmforge.convert.hf_config import from_hf_config, to_hf_config
from lmforge.convert.hf_io import read_hf_config, read_hf_weights, strip_prefix
from lmforge.convert.mapping import CompiledMap, compile_map, hf_to_ours, ours_to_hf
from lmforge.models.task_model import TaskModel, load_model, load_state, save_model
from lmforge.weights import save_weights

log = logging.getLogger(__name__)

# what travels with the weights: the fast-tokenizer file and the slow tokenizers' vocabularies
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json", "spiece.model")


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
    if specs:  # head models keep the backbone under the base-model prefix
        backbone = cmap.backbone_names()
        prefix = adapter_of(model.config.family).base_prefix + "."
        hf_state = {(prefix + k if k in backbone else k): v for k, v in hf_state.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(hf_state, out_dir / "model.safetensors", metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return out_dir


def load_pretrained(path: str | Path) -> TaskModel:
    """An lmforge model directory or a HuggingFace one, whichever `path` is."""
    path = Path(path)
    if is_lmforge_dir(path):
        return load_model(path)
    if (path / "config.json").is_file():
        return load_hf(path)
    raise FileNotFoundError(f"{path}: neither an lmforge nor a HuggingFace model directory (no config.json)")


def convert_from_hf(hf_dir: str | Path, out_dir: str | Path) -> Path:
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    model = load_hf(hf_dir)
    _refuse_same(hf_dir, out_dir)
    save_model(model, out_dir)
    _copy_tokenizer(hf_dir, out_dir, model.config.family, to_hf=False)
    return out_dir


def convert_to_hf(our_dir: str | Path, out_dir: str | Path) -> Path:
    our_dir, out_dir = Path(our_dir), Path(out_dir)
    model = load_model(our_dir)
    _refuse_same(our_dir, out_dir)
    save_hf(model, out_dir)
    _copy_tokenizer(our_dir, out_dir, model.config.family, to_hf=True)
    write_special_ids(out_dir, model.config.vocab_size, decoder=bool(model.config.causal))
    return out_dir


def _refuse_same(src: Path, dst: Path) -> None:
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: output directory is the input directory; choose another")


def _copy_tokenizer(src: Path, dst: Path, family: str, to_hf: bool) -> None:
    """Use lmforge.tokenizers when it is there (it writes the files transformers expects, and
    builds tokenizer.json from HF vocab files); otherwise copy the files as they are."""
    present = [name for name in TOKENIZER_FILES if (src / name).is_file()]
    if not present:
        return
    try:
        from lmforge.tokenizers import load_tokenizer, write_hf_tokenizer_files
    except ImportError:
        load_tokenizer = write_hf_tokenizer_files = None  # type: ignore[assignment]
    tokenizer = None
    if load_tokenizer is not None:
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
