"""Stream text lines from any number of plain or compressed files, one line at a time.

The tokenizer trainers take an iterator, so the corpus is never held in memory. Files are checked
before training starts (missing, empty, binary) so a bad path fails in a second, not after an hour.
Invalid UTF-8 is handled as `lmforge prepare` handles it: replaced with U+FFFD and counted, so the
tokenizer is trained on exactly the text the data will be prepared from. Files are opened by
`lmforge.data.reader.open_binary` (gzip recognised by its magic bytes, as prepare does); Parquet and
Arrow files give one text a row from a column, read as prepare reads them (lmforge.data.columnar).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from lmforge.data.columnar import check_columns, table_kind, table_texts
from lmforge.data.reader import ReadStats, decode_line, open_binary, read_error, read_head

_SNIFF_BYTES = 8192


def check_corpus_file(path: str | Path, text_column: str = "text") -> Path:
    """Fail early, naming the file, if it cannot be a UTF-8 text corpus (or a Parquet/Arrow file with
    a `text_column` of strings)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: corpus file not found")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, expected a text file")
    if table_kind(path):
        check_columns(path, [text_column], text=True)
        return path
    head = read_head(path, _SNIFF_BYTES)
    if not head.strip():
        raise ValueError(f"{path}: corpus file is empty")
    if b"\x00" in head:
        raise ValueError(
            f"{path}: looks binary (NUL bytes in the first {len(head)} bytes), expected UTF-8 text"
        )
    return path


def iter_lines(files: Iterable[str | Path], *, skip_blank: bool = True,
               stats: ReadStats | None = None, text_column: str = "text") -> Iterator[str]:
    """Lines (without newline) of every file in turn; blank lines skipped by default. Invalid UTF-8
    is replaced with U+FFFD and counted in `stats` (prepare's ReadStats: lines, invalid_utf8_lines,
    examples); a truncated compressed file is a ValueError. A Parquet/Arrow file gives the text of
    each row (the whole document, as prepare encodes it); null and blank rows are skipped and counted."""
    stats = stats if stats is not None else ReadStats()
    for path in map(Path, files):
        if table_kind(path):
            yield from table_texts(path, text_column, stats)
            continue
        with open_binary(path) as raw:
            number = 0
            while True:
                try:
                    line = raw.readline()
                except Exception as err:  # noqa: BLE001 - EOFError, BadGzipFile, zlib.error, ...
                    raise read_error(path, number, err) from None
                if not line:
                    break
                number += 1
                stats.lines += 1
                text = decode_line(line, path, number, stats).rstrip("\r\n")
                if skip_blank and not text.strip():
                    continue
                yield text


def batched_lines(files: Iterable[str | Path], batch_size: int = 1000,
                  stats: ReadStats | None = None, text_column: str = "text") -> Iterator[list[str]]:
    """Lines grouped in lists: `train_from_iterator` is faster on batches than on single strings."""
    batch: list[str] = []
    for line in iter_lines(files, stats=stats, text_column=text_column):
        batch.append(line)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
