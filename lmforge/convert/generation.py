"""What an exported HF directory needs to generate and to batch: special-token ids inside its vocabulary.

transformers' GPT-2/GPT-1 configs default to bos = eos = 50256 (OpenAI's vocabulary); a model trained
on a 2,000-token tokenizer would then carry an id it does not have, never stop generating, and its
sequence classifier could not find the last real token of a padded batch (it looks for `pad_token_id`).
So the ids are taken from the tokenizer that travels with the model: config.json gets bos/eos/pad, and
a `generation_config.json` records them for `generate` (transformers' and lmforge's).
"""

from __future__ import annotations

import json
from pathlib import Path

GENERATION_CONFIG = "generation_config.json"


def write_special_ids(out_dir: Path, vocab_size: int, decoder: bool) -> None:
    """Patch config.json with the tokenizer's bos/eos/pad ids; write generation_config.json for decoders.
    Without a tokenizer in `out_dir`, ids outside the vocabulary are removed rather than kept wrong."""
    from lmforge.tokenizers import load_tokenizer, special_tokens

    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    try:
        special = special_tokens(load_tokenizer(out_dir))
        ids = {"bos_token_id": special.bos, "eos_token_id": special.eos,
               "pad_token_id": special.pad if special.pad is not None else special.eos}
    except (FileNotFoundError, ValueError):
        ids = {key: config.get(key) for key in ("bos_token_id", "eos_token_id", "pad_token_id")}
    ids = {key: value if value is not None and 0 <= value < vocab_size else None for key, value in ids.items()}
    config.update({k: v for k, v in ids.items() if v is not None or k in config})
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    if decoder:
        (out_dir / GENERATION_CONFIG).write_text(json.dumps({k: v for k, v in ids.items() if v is not None},
                                                            indent=2) + "\n")
