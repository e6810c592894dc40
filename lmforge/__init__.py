"""lmforge: train your own Transformer language models, from raw text to a HuggingFace checkpoint."""

__version__ = "0.1.0"

from lmforge.config import ModelConfig  # noqa: E402
from lmforge.convert import load_pretrained  # noqa: E402  (an lmforge or a HuggingFace directory)
from lmforge.models import TaskModel, build_model, load_model, save_model  # noqa: E402

__all__ = ["ModelConfig", "TaskModel", "build_model", "load_model", "load_pretrained", "save_model", "__version__"]
