"""HuggingFace checkpoints both ways: config, weights (declarative key maps) and heads.

`load_hf(dir)` reads a transformers checkpoint of BERT, RoBERTa, ALBERT, ELECTRA, DistilBERT,
OpenAI GPT or GPT-2 into a TaskModel; `save_hf(model, dir)` writes one that transformers loads.
Each HF family is one module of `convert.families` (its `Adapter`: names, config both ways, head
styles, key-map rules), registered in `ADAPTERS` by model_type; `convert.mapping` runs the rules.
"""

from lmforge.convert.api import (
    convert_from_hf,
    convert_to_hf,
    load_hf,
    load_pretrained,
    save_hf,
)
from lmforge.convert.families import ADAPTERS
from lmforge.convert.hf_config import ConfigError, from_hf_config, to_hf_config
from lmforge.convert.mapping import ConversionError

__all__ = [
    "ADAPTERS",
    "ConfigError",
    "ConversionError",
    "convert_from_hf",
    "convert_to_hf",
    "from_hf_config",
    "load_hf",
    "load_pretrained",
    "save_hf",
    "to_hf_config",
]
