"""Streaming raw-text readers: files/globs (plain, .gz or .zst text; Parquet/Arrow through
lmforge.data.columnar) -> (starts_document, text) records.

Everything streams line by line with a bounded read size, so a 10 MB line or a 100 GB corpus
never sits in memory whole. Problems that can be skipped (bad UTF-8, empty files, empty documents,
malformed JSONL rows) are counted in `ReadStats`; problems that cannot (binary files, missing
files, a compressed file cut short) raise a ValueError/FileNotFoundError naming the file.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from lmforge.data.columnar import check_columns, table_kind, table_texts

Format = Literal["auto", "bert", "lines", "jsonl"]

READ_LIMIT = 1 << 20  # bytes per readline call: longer lines arrive in pieces
MAX_PIECE_CHARS = 10_000  # longest text handed to the tokenizer at once (BPE on a huge "word" is slow)
SNIFF_BYTES = 1 << 16
MAX_JSON_LINE = 64 << 20  # a JSONL row must be parsed whole; longer rows are skipped and counted

# WikiText article titles are ` = Title = `; sections are ` = = Section = = ` (and deeper).
_TITLE = re.compile(r"^ ?= (?!=)(.*\S) = ?$")
_HEADING = re.compile(r"^ ?(=(?: =)*) (.*\S) \1 ?$")
# WikiText is pre-tokenized: a sentence ends with a free-standing . ? or ! token.
_WIKITEXT_SENTENCE_END = re.compile(r"(?<= [.?!]) +(?=\S)")


@dataclass
class ReadStats:
    """What was read and what was skipped; written to manifest.json and printed as the summary."""

    files: int = 0
    bytes: int = 0
    lines: int = 0
    documents: int = 0
    invalid_utf8_lines: int = 0
    empty_files: int = 0
    empty_documents: int = 0
    long_lines_chunked: int = 0
    bad_jsonl_rows: int = 0
    examples: list[str] = field(default_factory=list)  # first few "file:line: problem" notes

    def note(self, message: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(message)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files named directly or by glob, in the given order (each glob sorted), without duplicates."""
    files: list[Path] = []
    seen: set[Path] = set()
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matches:
                raise FileNotFoundError(f"{pattern}: the pattern matches no files")
        else:
            path = Path(pattern)
            if path.is_dir():
                raise IsADirectoryError(f"{path}: is a directory; pass files or a glob like {path}/*.txt")
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such file")
            matches = [path]
        for path in matches:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                files.append(path)
    return files


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def open_binary(path: str | Path) -> IO[bytes]:
    """The file's bytes, decompressed when it is gzip or zstd (recognised by magic bytes, not name;
    zstd needs the optional `zstandard` package). A .gz/.zst name on other data is refused."""
    path = Path(path)
    raw = open(path, "rb")
    magic = raw.read(4)
    raw.seek(0)
    if magic[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic == ZSTD_MAGIC:
        try:
            return io.BufferedReader(_ZstdReader(raw))
        except ImportError:
            raw.close()
            raise ValueError(f"{path}: zstd-compressed; install the `zstandard` package "
                             f"(pip install zstandard) to read it") from None
    suffix = path.suffix.lower()
    if suffix in (".gz", ".zst", ".zstd"):
        raw.close()
        raise ValueError(f"{path}: cannot read: named {suffix} but is not {'gzip' if suffix == '.gz' else 'zstd'} data")
    return raw


def is_compressed(path: Path) -> bool:
    """Whether the text read differs in size from the file (gzip, zstd, Parquet, Arrow)."""
    if table_kind(path):
        return True
    with open(path, "rb") as handle:
        magic = handle.read(4)
    return magic[:2] == GZIP_MAGIC or magic == ZSTD_MAGIC


class _ZstdReader(io.RawIOBase):
    """Decompressed bytes of a zstd file (concatenated frames too). Unlike zstandard's stream_reader
    it raises EOFError when the file ends inside a frame, as gzip does, so a cut-off .zst is an error."""

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard

        self._raw, self._new = raw, zstandard.ZstdDecompressor().decompressobj
        self._frame, self._pending, self._in_frame = self._new(), b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            data = self._raw.read(1 << 20)
            if not data:
                if self._in_frame:
                    raise EOFError("zstd file ended before the end of its frame")
                return 0
            while data:
                if self._frame.eof:  # the next frame of a multi-frame file
                    self._frame = self._new()
                self._pending += self._frame.decompress(data)
                self._in_frame = not self._frame.eof
                data = self._frame.unused_data if self._frame.eof else b""
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def read_error(path: Path, lineno: int, err: BaseException) -> ValueError:
    """One line for a file that cannot be read to its end (a .gz cut short, a bad CRC, a disk error)."""
    kind = "truncated or corrupt compressed file" if not isinstance(err, PermissionError) else "unreadable"
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    return ValueError(f"{path}: {kind}: reading stopped after line {lineno} ({detail})")


def read_head(path: Path, size: int) -> bytes:
    """The first `size` decompressed bytes; a file that cannot be read is a ValueError naming it."""
    try:
        with open_binary(path) as fh:
            return fh.read(size)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - OSError, EOFError, zlib/zstd errors: a truncated or fake archive
        raise ValueError(f"{path}: cannot read ({err})") from None


def sniff(path: Path) -> bytes:
    """The first block of decompressed bytes; refuses binary files (NUL bytes) by name."""
    head = read_head(path, SNIFF_BYTES)
    if b"\x00" in head:
        raise ValueError(f"{path}: looks like a binary file (NUL bytes in the first {SNIFF_BYTES} bytes); refusing it")
    return head


def check_input(path: Path, text_field: str = "text") -> None:
    """Refuse, before any work, a file that cannot be read: binary text files, Parquet/Arrow files
    without a `text_field` text column."""
    if table_kind(path):
        check_columns(path, [text_field], text=True)
    else:
        sniff(path)


def detect_format(path: Path, head: bytes) -> str:
    """jsonl if the first non-empty line is a JSON object; wikitext if titles appear; else bert."""
    lines = head.decode("utf-8", errors="replace").splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    if first.startswith("{"):
        try:
            if isinstance(json.loads(first), dict):
                return "jsonl"
        except ValueError:
            pass
    return "wikitext" if any(_TITLE.match(line) for line in lines) else "bert"


def _read_lines(fh: IO[bytes], path: Path, stats: ReadStats) -> Iterator[tuple[int, str, bool, bool]]:
    """(line number, text, is_continuation, ends_line) with bounded reads; a long line comes in
    pieces cut at whitespace (or a UTF-8 character boundary), each piece decoded on its own."""
    lineno = 0
    carry = b""
    continuing = False
    while True:
        try:
            chunk = fh.readline(READ_LIMIT)
        except Exception as err:  # noqa: BLE001 - EOFError, BadGzipFile, zlib.error, zstd errors
            raise read_error(path, lineno, err) from None
        if not chunk and not carry:
            return
        stats.bytes += len(chunk)
        data = carry + chunk
        carry = b""
        complete = data.endswith(b"\n") or not chunk
        if not complete:
            cut = max(data.rfind(b" "), data.rfind(b"\t"))
            if cut <= 0:  # no whitespace: cut before the last (possibly partial) character
                cut = len(data) - 1
                while cut > 1 and (data[cut] & 0xC0) == 0x80:
                    cut -= 1
            data, carry = data[:cut], data[cut:]
            if not continuing:
                stats.long_lines_chunked += 1
        if not continuing:
            lineno += 1
            stats.lines += 1
        text = decode_line(data, path, lineno, stats)
        yield lineno, text.rstrip("\r\n") if complete else text, continuing, complete
        continuing = not complete


def decode_line(raw: bytes, path: Path, lineno: int, stats: Any) -> str:
    """UTF-8 text of one line; invalid bytes become U+FFFD, counted in `stats.invalid_utf8_lines` and
    noted with file and line (prepare, tokenizer training and parallel text all read this way)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        stats.invalid_utf8_lines += 1
        stats.note(f"{path}:{lineno}: invalid UTF-8 at byte {err.start}; replaced with U+FFFD")
        return raw.decode("utf-8", errors="replace")


def _pieces(text: str) -> Iterator[str]:
    """Split text longer than MAX_PIECE_CHARS at whitespace so the tokenizer never sees huge strings."""
    while len(text) > MAX_PIECE_CHARS:
        cut = text.rfind(" ", MAX_PIECE_CHARS // 2, MAX_PIECE_CHARS)
        cut = MAX_PIECE_CHARS if cut <= 0 else cut
        yield text[:cut]
        text = text[cut:]
    yield text


def _text_pieces(text: str) -> Iterator[str]:
    return (piece.strip() for piece in _pieces(text.strip()) if piece.strip())


def read_records(
    paths: list[Path], fmt: Format = "auto", text_field: str = "text", stats: ReadStats | None = None
) -> Iterator[tuple[bool, str]]:
    """Stream (starts_document, sentence_text) over all files.

    bert:     one sentence per line, blank line between documents (google-research/bert format).
    wikitext: (auto-detected bert variant) ` = Title = ` lines start documents; blank lines and
              ` = = Section = = ` markup only separate paragraphs; paragraphs split into sentences.
    lines:    one document per line.
    jsonl:    one JSON object per line, the document in `text_field`.
    Parquet/Arrow files (by suffix, whatever `fmt` says): one document per row, in column `text_field`.
    A file always starts a new document. Empty files and documents are skipped and counted.
    """
    stats = stats if stats is not None else ReadStats()
    for path in paths:
        if table_kind(path):
            stats.files += 1
            yield from _documents(table_texts(path, text_field, stats), stats)
            continue
        head = sniff(path)
        stats.files += 1
        if not head.strip():
            stats.empty_files += 1
            stats.note(f"{path}: empty file; skipped")
            continue
        kind = detect_format(path, head) if fmt == "auto" else fmt
        if kind == "bert" and detect_format(path, head) == "wikitext":
            kind = "wikitext"  # titles, not blank lines, delimit WikiText articles
        with open_binary(path) as fh:
            yield from _records(kind, _read_lines(fh, path, stats), path, text_field, stats)


def _records(kind, lines, path, text_field, stats) -> Iterator[tuple[bool, str]]:
    """The per-format state machine; `new_doc` is True until the open document yields text."""
    new_doc, has_text = True, False
    json_parts: list[str] = []
    json_bytes = 0

    def close_doc() -> None:
        nonlocal new_doc, has_text
        if has_text:
            stats.documents += 1
        elif kind in ("lines", "jsonl"):
            stats.empty_documents += 1
        new_doc, has_text = True, False

    for lineno, line, continuing, complete in lines:
        if kind == "jsonl":  # a JSON row must be parsed whole: gather its pieces (bounded)
            if json_bytes <= MAX_JSON_LINE:
                json_parts.append(line)
                json_bytes += len(line)
            if not complete:
                continue
            whole, json_parts, too_long, json_bytes = "".join(json_parts), [], json_bytes > MAX_JSON_LINE, 0
            if too_long:
                stats.bad_jsonl_rows += 1
                stats.note(f"{path}:{lineno}: JSON row longer than {MAX_JSON_LINE} characters; skipped")
                continue
            if not whole.strip():
                continue
            text = _jsonl_text(whole, lineno, path, text_field, stats)
            if text is None:
                continue
            parts = [text]
        elif kind == "lines":
            if not continuing:
                close_doc() if (has_text or lineno > 1) else None
            parts = [line]
        elif kind == "wikitext":
            title = None if continuing else _TITLE.match(line)
            heading = None if continuing else _HEADING.match(line)
            if title:
                if has_text:
                    close_doc()
                parts = [title.group(1)]
            elif heading:
                parts = [heading.group(2)]
            else:  # blank lines only separate paragraphs inside an article
                parts = _WIKITEXT_SENTENCE_END.split(line.strip())
        else:  # bert: a blank line ends the document
            if not continuing and not line.strip():
                if has_text:
                    close_doc()
                continue
            parts = [line]
        for part in parts:
            for piece in _text_pieces(part):
                yield new_doc, piece
                new_doc, has_text = False, True
        if kind == "jsonl":
            close_doc()
    if has_text or kind == "lines":
        close_doc()


def _documents(texts: Iterator[str], stats: ReadStats) -> Iterator[tuple[bool, str]]:
    """Records of whole non-blank documents (one a row), cut into pieces the tokenizer takes at once."""
    for text in texts:
        stats.documents += 1
        for i, piece in enumerate(_text_pieces(text)):
            yield i == 0, piece


def _jsonl_text(line: str, lineno: int, path: Path, text_field: str, stats: ReadStats) -> str | None:
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except ValueError as err:
        stats.bad_jsonl_rows += 1
        stats.note(f"{path}:{lineno}: not valid JSON ({err}); skipped")
        return None
    if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
        stats.bad_jsonl_rows += 1
        stats.note(f"{path}:{lineno}: no string field {text_field!r}; skipped")
        return None
    return row[text_field]


__all__ = ["ReadStats", "check_input", "expand_inputs", "is_compressed", "open_binary", "read_error", "read_records", "sniff", "detect_format", "io"]
