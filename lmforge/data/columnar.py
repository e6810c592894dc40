"""Parquet and Arrow files, read a batch of rows at a time (the optional `datasets` extra: pyarrow).

pyarrow alone is enough: Parquet is read through `ParquetFile.iter_batches` (a row group at a time,
only the named columns), Arrow IPC files -- the file format, and the stream format HF `datasets`
keeps its cache in -- a record batch at a time. Rows reach Python BATCH_ROWS at a time, so a large
file never sits in memory whole (reading a 220 MB Arrow stream grew RSS by ~50 MB). The format comes
from the suffix (`.parquet`, `.arrow`) unless the caller names it. Every problem is one ValueError
naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TABLE_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow"}
BATCH_ROWS = 256  # rows converted to Python objects at once (a row may hold a whole document)
INSTALL_HINT = "pip install 'lmforge[datasets]'"


def table_kind(path: str | Path) -> str | None:
    """'parquet' or 'arrow' for a columnar file (by suffix), None for text."""
    return TABLE_SUFFIXES.get(Path(path).suffix.lower())


def _pyarrow(path: Path):
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise ValueError(f"{path}: reading Parquet/Arrow files needs pyarrow: {INSTALL_HINT}") from None
    return pyarrow


def _problem(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def _open(path: Path, kind: str | None) -> Iterator[tuple[Any, Callable[[list[str]], Iterator[Any]]]]:
    """(schema, batches): `batches(columns)` streams record batches holding only those columns."""
    pa = _pyarrow(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    kind = kind or table_kind(path) or "parquet"
    handle = None
    try:
        if kind == "parquet":
            handle = pa.parquet.ParquetFile(path)
            schema = handle.schema_arrow

            def batches(columns: list[str]) -> Iterator[Any]:
                return handle.iter_batches(batch_size=BATCH_ROWS, columns=columns, use_pandas_metadata=False)
        elif kind == "arrow":
            handle = pa.OSFile(str(path))  # not memory-mapped: RSS would grow to the file's size
            try:
                reader = pa.ipc.open_file(handle)
                schema = reader.schema

                def batches(columns: list[str]) -> Iterator[Any]:
                    return (reader.get_batch(i).select(columns) for i in range(reader.num_record_batches))
            except pa.ArrowInvalid:  # not the file format: the stream format (`datasets` cache files)
                handle.seek(0)
                stream = pa.ipc.open_stream(handle)
                schema = stream.schema

                def batches(columns: list[str]) -> Iterator[Any]:
                    return (batch.select(columns) for batch in stream)
        else:
            raise ValueError(f"{path}: unknown table format {kind!r}; expected parquet or arrow")
    except (pa.ArrowException, OSError) as err:
        if handle is not None:
            handle.close()
        raise ValueError(f"{path}: cannot read as {kind.capitalize()} ({_problem(err)})") from None
    try:
        yield schema, batches
    finally:
        handle.close()


def _is_text(pa, kind) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or getattr(pa.types, "is_string_view",
                                                                                  lambda _: False)(kind)


def table_columns(path: str | Path, kind: str | None = None) -> list[str]:
    with _open(Path(path), kind) as (schema, _):
        return list(schema.names)


def check_columns(path: str | Path, columns: list[str], kind: str | None = None, text: bool = False) -> None:
    """One line naming the file and its columns when one of `columns` is missing (or, with `text`,
    does not hold strings); checked before any row is read."""
    path = Path(path)
    with _open(path, kind) as (schema, _):
        _check(path, schema, columns, text)


def _check(path: Path, schema, columns: list[str], text: bool) -> None:
    names = list(schema.names)
    absent = [c for c in columns if c not in names]
    if absent:
        raise ValueError(f"{path}: no column(s) {absent}; it has {names}")
    if text:
        pa = _pyarrow(path)
        for column in columns:
            kind = schema.field(column).type
            if not _is_text(pa, kind):
                raise ValueError(f"{path}: column {column!r} holds {kind}, not text; name a text column")


def read_table(path: str | Path, columns: list[str], kind: str | None = None,
               text: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number from 1, {column: value}) for every row; values are Python objects (None for null)."""
    path = Path(path)
    with _open(path, kind) as (schema, batches):
        _check(path, schema, columns, text)
        pa = _pyarrow(path)
        row = 0
        stream = batches(columns)
        while True:
            try:
                batch = next(stream, None)
            except (pa.ArrowException, OSError) as err:
                raise ValueError(f"{path}: cannot read past row {row} ({_problem(err)})") from None
            if batch is None:
                return
            for start in range(0, batch.num_rows, BATCH_ROWS):
                part = batch.slice(start, BATCH_ROWS)
                for values in zip(*(part.column(c).to_pylist() for c in columns)):
                    row += 1
                    yield row, dict(zip(columns, values))


def table_texts(path: str | Path, column: str, stats: Any) -> Iterator[str]:
    """The texts of one column, a row at a time, for `prepare` and tokenizer training. Null and blank
    rows are skipped and counted as empty documents (as empty JSONL documents are); `stats` is a
    lmforge.data.reader.ReadStats (lines counts rows, bytes the UTF-8 text read)."""
    rows = 0
    for rows, values in read_table(path, [column], text=True):
        text = values[column]
        stats.lines += 1
        if text is None or not text.strip():
            stats.empty_documents += 1
            stats.note(f"{path}:{rows}: {'null' if text is None else 'empty'} {column!r}; skipped")
            continue
        stats.bytes += len(text.encode("utf-8", errors="replace"))
        yield text
    if rows == 0:
        stats.empty_files += 1
        stats.note(f"{path}: no rows; skipped")
