"""lmforge: train your own Transformer language models, from raw text to a HuggingFace checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.lazy import lazy_exports

__version__ = "0.1.0"

# The public names are imported on first use (PEP 562), so `import lmforge` -- and with it
# `lmforge --help` / `--version` -- does not pay for torch.
_EXPORTS = {
    "ModelConfig": "lmforge.config",
    "load_pretrained": "lmforge.convert",  # an lmforge or a HuggingFace directory
    "TaskModel": "lmforge.models",
    "build_model": "lmforge.models",
    "load_model": "lmforge.models",
    "save_model": "lmforge.models",
}

if TYPE_CHECKING:
    from lmforge.config import ModelConfig
    from lmforge.convert import load_pretrained
    from lmforge.models import TaskModel, build_model, load_model, save_model


__getattr__ = lazy_exports("lmforge", _EXPORTS, globals())


__all__ = ["ModelConfig", "TaskModel", "build_model", "load_model", "load_pretrained", "save_model", "__version__"]
