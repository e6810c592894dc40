"""Stream text lines from any number of plain or gzip files, one line at a time.

The tokenizer trainers take an iterator, so the corpus is never held in memory. Files are checked
before training starts (missing, empty, binary) so a bad path fails in a second, not after an hour;
an undecodable line met later still names its file and line.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

_SNIFF_BYTES = 8192


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def check_corpus_file(path: str | Path) -> Path:
    """Fail early, naming the file, if it cannot be a UTF-8 text corpus."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: corpus file not found")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, expected a text file")
    try:
        with _open_binary(path) as handle:
            head = handle.read(_SNIFF_BYTES)
    except (OSError, EOFError) as err:  # e.g. a truncated or fake .gz
        raise ValueError(f"{path}: cannot read ({err})") from None
    if not head.strip():
        raise ValueError(f"{path}: corpus file is empty")
    if b"\x00" in head:
        raise ValueError(
            f"{path}: looks binary (NUL bytes in the first {len(head)} bytes), expected UTF-8 text"
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        cut = len(head) == _SNIFF_BYTES and err.reason == "unexpected end of data"
        if not cut:  # a multi-byte character cut at the sniff boundary is fine
            line = head[: err.start].count(b"\n") + 1
            raise ValueError(f"{path}: line {line}: not UTF-8 text ({err.reason})") from None
    return path


def iter_lines(files: Iterable[str | Path], *, skip_blank: bool = True) -> Iterator[str]:
    """Lines (without newline) of every file in turn; blank lines skipped by default."""
    for path in map(Path, files):
        with _open_binary(path) as raw:
            for number, line in enumerate(raw, start=1):
                try:
                    text = line.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as err:
                    raise ValueError(f"{path}: line {number}: not UTF-8 text ({err.reason})") from None
                if skip_blank and not text.strip():
                    continue
                yield text


def batched_lines(files: Iterable[str | Path], batch_size: int = 1000) -> Iterator[list[str]]:
    """Lines grouped in lists: `train_from_iterator` is faster on batches than on single strings."""
    batch: list[str] = []
    for line in iter_lines(files):
        batch.append(line)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
