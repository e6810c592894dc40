"""Reading parallel text: two aligned files (line i of one translates line i of the other), or one TSV
with two columns, or one JSONL file with two string fields; plain, .gz or .zst (lmforge.data.reader).

What cannot be a corpus is refused with the file and line: files whose line counts differ (the pairs
would be shifted against each other from the first missing line on), a TSV row without exactly two
columns, a JSONL row without the two fields. What is only a bad pair is skipped and counted, with the
first few locations: a pair with an empty side, and a length-ratio outlier — one side more than
`max_ratio` times as many words as the other (default 9, the ratio of Moses' clean-corpus-n.perl),
almost always a misalignment or a sentence left untranslated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.data.reader import decode_line, open_binary, read_error

MAX_RATIO = 9.0


@dataclass
class ParallelStats:
    """What was read, kept and skipped; `examples` holds the first "file:line: problem" notes."""

    lines: int = 0
    pairs: int = 0
    empty: int = 0
    ratio_outliers: int = 0
    invalid_utf8_lines: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(message)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ParallelText:
    sources: list[str]
    targets: list[str]
    stats: ParallelStats


def _lines(path: Path, stats: ParallelStats) -> Iterator[tuple[int, str]]:
    """(line number, text without the newline); invalid UTF-8 is replaced and counted."""
    lineno = 0
    with open_binary(path) as fh:
        while True:
            try:
                raw = fh.readline()
            except Exception as err:  # noqa: BLE001 - EOFError, BadGzipFile, zlib/zstd errors
                raise read_error(path, lineno, err) from None
            if not raw:
                return
            lineno += 1
            yield lineno, decode_line(raw, path, lineno, stats).rstrip("\r\n")


def _aligned(source: Path, target: Path, stats: ParallelStats) -> Iterator[tuple[str, str, str]]:
    """(location, source, target) from two files read in step; refuses files of different lengths."""
    src, tgt = _lines(source, stats), _lines(target, stats)
    count = 0
    for count, a in src:
        b = next(tgt, None)
        if b is None:
            total = count + sum(1 for _ in src)
            raise ValueError(f"{source} has {total} lines but {target} has {count - 1}: the files are not aligned")
        yield f"{source}:{count}", a, b[1]
    extra = sum(1 for _ in tgt)
    if extra:
        raise ValueError(f"{target} has {count + extra} lines but {source} has {count}: the files are not aligned")


def _tsv(path: Path, stats: ParallelStats) -> Iterator[tuple[str, str, str]]:
    for lineno, text in _lines(path, stats):
        columns = text.split("\t")
        if len(columns) != 2:
            raise ValueError(f"{path}:{lineno}: expected 2 tab-separated columns (source, target), got {len(columns)}")
        yield f"{path}:{lineno}", columns[0], columns[1]


def _jsonl(path: Path, fields: tuple[str, str], stats: ParallelStats) -> Iterator[tuple[str, str, str]]:
    for lineno, text in _lines(path, stats):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({err})") from None
        values = [row.get(name) if isinstance(row, dict) else None for name in fields]
        if not all(isinstance(v, str) for v in values):
            raise ValueError(f"{path}:{lineno}: expected string fields {list(fields)}")
        yield f"{path}:{lineno}", values[0], values[1]


def _rows(source: Path, target: Path | None, fields: tuple[str, str],
          stats: ParallelStats) -> Iterator[tuple[str, str, str]]:
    if target is not None:
        return _aligned(source, target, stats)
    name = source.name.lower().removesuffix(".gz").removesuffix(".zst")
    if name.endswith(".tsv"):
        return _tsv(source, stats)
    if name.endswith((".jsonl", ".json")):
        return _jsonl(source, fields, stats)
    raise ValueError(f"{source}: one file must be a .tsv (two columns) or .jsonl (fields {list(fields)}); "
                     "otherwise give the source and the target file")


def read_aligned(source: str | Path, target: str | Path) -> tuple[list[str], list[str]]:
    """Every line of two aligned files, for scoring a test set (nothing may be skipped there): files of
    different lengths and empty source lines are refused with the file and line."""
    stats = ParallelStats()
    sources: list[str] = []
    targets: list[str] = []
    for where, a, b in _aligned(Path(source), Path(target), stats):
        if not a.strip():
            raise ValueError(f"{where}: empty source line; every line of a test set must be translated")
        sources.append(a.strip())
        targets.append(b.strip())
    return sources, targets


def pair_records(pairs: ParallelText) -> Iterator[tuple[bool, str]]:
    """The pairs as `lmforge prepare` records: each pair one document of two sentences, source first."""
    for a, b in zip(pairs.sources, pairs.targets):
        yield True, a
        yield False, b


def read_parallel(source: str | Path, target: str | Path | None = None, *,
                  fields: tuple[str, str] = ("source", "target"), max_ratio: float = MAX_RATIO) -> ParallelText:
    """The kept pairs (whitespace around each side stripped) and what was skipped (module docstring)."""
    if max_ratio < 1:
        raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
    stats = ParallelStats()
    sources: list[str] = []
    targets: list[str] = []
    for where, a, b in _rows(Path(source), Path(target) if target is not None else None, fields, stats):
        stats.lines += 1
        a, b = a.strip(), b.strip()
        if not a or not b:
            stats.empty += 1
            stats.note(f"{where}: empty {'source' if not a else 'target'}; pair skipped")
            continue
        words_a, words_b = len(a.split()), len(b.split())
        if max(words_a, words_b) > max_ratio * min(words_a, words_b):
            stats.ratio_outliers += 1
            stats.note(f"{where}: {words_a} vs {words_b} words (ratio above {max_ratio:g}); pair skipped")
            continue
        sources.append(a)
        targets.append(b)
    stats.pairs = len(sources)
    return ParallelText(sources, targets, stats)
