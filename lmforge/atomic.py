"""Atomic file writes that end with the permissions a plain `open(path, "w")` would give.

`tempfile.mkstemp` creates its file with mode 0600 whatever the umask, and `os.replace` keeps that
mode: a model, tokenizer or embedding file written that way cannot be read by another user, a
container or a serving account. Here the temporary file gets `0666 & ~umask` before it is renamed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """The process umask (os.umask can only be read by setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` to write into; renamed onto `path` when the block ends
    normally, removed when it raises. A crash leaves the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # after writing: some writers replace the file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
