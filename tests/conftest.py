"""Shared fixtures: the real-data folder, deterministic seeds, fp32 defaults, a session's HF checkpoints."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("LMFORGE_DATA", REPO.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """A file or folder under the shared data; skip the test if it is missing (fail under CI=true)."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        reason = f"shared data not found: {path} (set LMFORGE_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def torchrun(log_dir: Path) -> list[str]:
    """The command that starts 2 local ranks on free ports. Its logs go to `log_dir`: left to itself,
    torchrun makes a torchelastic_* folder in /tmp for every run and never deletes it."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
            "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", "--log-dir", str(log_dir)]


@pytest.fixture
def shared_data():
    return data_path


@pytest.fixture(scope="session")
def hf_checkpoints():
    """Random HF checkpoints that parity cases share, in a folder deleted when the session ends (a test
    run leaves nothing in /tmp)."""
    from parity_helpers import CheckpointStore

    with tempfile.TemporaryDirectory(prefix="lmforge-hf-") as root:
        yield CheckpointStore(Path(root))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)
