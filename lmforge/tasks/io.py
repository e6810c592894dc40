"""Reading benchmark files as they ship, with every error naming file, line and problem.

GLUE writes TSV without quoting (`csv.QUOTE_NONE`): sentences contain `"` that must stay literal.
Some files start with a UTF-8 BOM (MRPC), so text is read as `utf-8-sig`. Parquet and Arrow files
(HF `datasets` exports) are read through lmforge.data.columnar; their "line" is the row number.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.columnar import read_table, table_columns, table_kind


class DataError(ValueError):
    """A malformed input file; the message names file, line and problem."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


@dataclass
class Row:
    line: int  # 1-based line number in the file (the first line of a multi-line CSV record)
    values: list[str]


def table_format(path: Path) -> str:
    if table_kind(path):
        return table_kind(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "tsv"  # .tsv, .txt (NSMC), no suffix


def read_rows(path: str | Path, fmt: str | None = None) -> Iterator[Row]:
    """Rows of a TSV (no quoting) or CSV (standard quoting) file, blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = fmt or table_format(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        if fmt == "tsv":
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        elif fmt == "csv":
            reader = csv.reader(handle)
        else:
            raise ValueError(f"{path}: read_rows handles tsv/csv, not {fmt!r}")
        start = 1
        try:
            for values in reader:
                line, start = start, reader.line_num + 1
                if values and any(v.strip() for v in values):
                    yield Row(line, values)
        except csv.Error as err:
            raise DataError(path, reader.line_num, f"unreadable {fmt.upper()} ({err})") from None
        except UnicodeDecodeError as err:
            raise DataError(path, None, f"not UTF-8 text ({err})") from None


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(encoding="utf-8-sig") as handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(path, number, f"invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataError(path, number, "expected a JSON object per line")
            yield number, record


def read_records(path: str | Path, columns: list[str], fmt: str | None = None) -> Iterator[tuple[int, dict]]:
    """(line, {column: text}) for a headed TSV/CSV, JSONL, Parquet or Arrow file; every named column
    must exist."""
    path = Path(path)
    fmt = fmt or table_format(path)
    if fmt in ("parquet", "arrow"):
        yield from read_table(path, columns, fmt)
        return
    if fmt == "jsonl":
        for line, record in read_jsonl(path):
            absent = [c for c in columns if c not in record]
            if absent:
                raise DataError(path, line, f"missing field(s) {absent}")
            yield line, {c: record[c] for c in columns}
        return
    rows = read_rows(path, fmt)
    header = next(rows, None)
    if header is None:
        raise DataError(path, None, "empty file")
    names = [h.strip() for h in header.values]
    absent = [c for c in columns if c not in names]
    if absent:
        raise DataError(path, header.line, f"header has no column(s) {absent}; it has {names}")
    index = {c: names.index(c) for c in columns}
    for row in rows:
        if len(row.values) != len(names):
            raise DataError(path, row.line, f"expected {len(names)} columns, found {len(row.values)}")
        yield row.line, {c: row.values[i] for c, i in index.items()}


def has_column(path: str | Path, column: str, fmt: str | None = None) -> bool:
    """Whether a headed TSV/CSV, Parquet or Arrow file has `column` (JSONL: True, checked per line)."""
    path = Path(path)
    fmt = fmt or table_format(path)
    if fmt == "jsonl":
        return True
    if fmt in ("parquet", "arrow"):
        return column in table_columns(path, fmt)
    header = next(read_rows(path, fmt), None)
    return header is not None and column in [v.strip() for v in header.values]


def parse_slice(text: str | None) -> slice:
    """'0:40', '-8:', ':100' -> slice; None or '' -> everything."""
    if not text:
        return slice(None)
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError(f"bad slice {text!r}; expected START:END such as 0:40 or -8:")
    try:
        start, end = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise ValueError(f"bad slice {text!r}; START and END must be integers") from None
    return slice(start, end)
