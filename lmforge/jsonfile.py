"""Reading the JSON files lmforge and HF write (config.json, manifest.json, index files) so that a
missing or broken file is one line naming the path, and the line where the JSON breaks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_json(path: Path, missing: str = "file not found") -> Any:
    """The parsed file; FileNotFoundError '<path>: <missing>' or ValueError '<path>: line N: invalid JSON'."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {missing}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from None
