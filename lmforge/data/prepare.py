"""`lmforge prepare`: stream raw text through the tokenizer into memory-mapped shards.

The main process reads and chunks records, a Pool of workers encodes chunks (encode_batch), and
the main process writes results back in submission order. At most 2 * workers chunks are in
flight, so memory stays bounded; because order is kept and the train/valid choice is a hash of
(seed, document number), the output is byte-identical for any worker count.

Everything is written into a temporary sibling of `--out` that replaces it only when complete, so
an error or a kill at any moment leaves the previous prepared data as it was. The result holds a
copy of the tokenizer (`tokenizer/`), which `lmforge pretrain` ships with the model it trains.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lmforge.data.encode import (
    EncodedChunk,
    encode_chunk,
    file_sha256,
    init_worker,
    load_tokenizer,
    special_tokens,
    tokenizer_file,
)
from lmforge.data.parallel import pair_records, read_parallel
from lmforge.data.reader import ReadStats, check_input, expand_inputs, is_compressed, read_records
from lmforge.data.shards import _SplitWriter, token_dtype
from lmforge.tokenizers import copy_tokenizer_files, vocab_fingerprint

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"  # the copy of the tokenizer inside a prepared folder
FORMAT_VERSION = 1


@dataclass(kw_only=True)
class PrepareConfig:
    tokenizer: str
    inputs: list[str]
    out: str
    format: str = "auto"
    text_field: str = "text"  # JSONL field / Parquet or Arrow column holding the document
    workers: int = 1
    valid_fraction: float = 0.0
    valid: list[str] = field(default_factory=list)
    shard_tokens: int = 50_000_000
    seed: int = 0
    chunk_bytes: int = 1 << 20  # text per worker task
    progress: bool = True

    def __post_init__(self) -> None:
        if self.format not in ("auto", "bert", "lines", "jsonl", "parallel"):
            raise ValueError(f"--format must be auto, bert, lines, jsonl or parallel, not {self.format!r}")
        if self.format == "parallel":
            for name, files in (("--input", self.inputs), ("--valid", self.valid)):
                if len(files) > 2 or (name == "--input" and not files):
                    raise ValueError(f"--format parallel: {name} takes a source and a target file, or one "
                                     f".tsv/.jsonl file of pairs; got {len(files)} files")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"--valid-fraction must be in [0, 1), got {self.valid_fraction}")
        if self.valid_fraction and self.valid:
            raise ValueError("give either --valid-fraction or --valid files, not both")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.shard_tokens < 1:
            raise ValueError(f"--shard-tokens must be >= 1, got {self.shard_tokens}")


def _unit_hash(seed: int, index: int) -> float:
    """splitmix64 of (seed, index) as a float in [0, 1): a stateless per-document coin."""
    mask = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


def _chunks(records: Iterator[tuple[bool, str]], chunk_bytes: int) -> Iterator[list[tuple[bool, str]]]:
    chunk, size = [], 0
    for rec in records:
        chunk.append(rec)
        size += len(rec[1])
        if size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _ordered_map(chunks: Iterator[list], workers: int, tok_path: str) -> Iterator[EncodedChunk]:
    """encode_chunk over chunks, in order, with bounded look-ahead (Pool.imap would read everything)."""
    if workers == 1:
        init_worker(tok_path)
        for chunk in chunks:
            yield encode_chunk(chunk)
        return
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers, initializer=init_worker, initargs=(tok_path,)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(encode_chunk, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class _Router:
    """Assigns each document to train or valid and feeds the writers."""

    def __init__(self, writers: dict[str, _SplitWriter], valid_fraction: float, seed: int) -> None:
        self.writers = writers
        self.valid_fraction = valid_fraction
        self.seed = seed
        self.doc = -1
        self.empty_after_tokenization = 0
        self._open_has_tokens = True

    def feed(self, enc: EncodedChunk, force_split: str | None = None) -> None:
        doc_of = self.doc + np.cumsum(enc.new_doc)  # (S,) document number of each sentence
        starts = np.concatenate([[0], np.cumsum(enc.lengths)])
        # documents whose sentences all tokenized to nothing are counted, not written
        docs = np.unique(doc_of)
        has = np.isin(docs, doc_of[enc.lengths > 0])
        if docs[0] == self.doc:
            has[0] |= self._open_has_tokens
        elif self.doc >= 0 and not self._open_has_tokens:
            self.empty_after_tokenization += 1
        self.empty_after_tokenization += int((~has[:-1]).sum())
        self._open_has_tokens = bool(has[-1])
        keep = np.flatnonzero(enc.lengths > 0)
        if len(keep):
            # runs of kept sentences that belong to one document
            kept_docs = doc_of[keep]
            bounds = np.flatnonzero(np.diff(kept_docs)) + 1
            for run in np.split(keep, bounds):
                doc = int(doc_of[run[0]])
                lo, hi = starts[run[0]], starts[run[-1] + 1]
                split = force_split or ("valid" if self.valid_fraction and _unit_hash(self.seed, doc) < self.valid_fraction else "train")
                # tokens of a run are contiguous: empty sentences inside it contribute none
                self.writers[split].add(doc, enc.ids[lo:hi], enc.word_start[lo:hi], enc.lengths[run])
        self.doc = int(doc_of[-1])

    def finish(self) -> None:
        if self.doc >= 0 and not self._open_has_tokens:
            self.empty_after_tokenization += 1
        self._open_has_tokens = True


def prepare(config: PrepareConfig) -> dict:
    """Run the whole pipeline; returns the manifest (also written to <out>/manifest.json)."""
    tok_path = tokenizer_file(config.tokenizer)
    tok = load_tokenizer(config.tokenizer)
    train_files = expand_inputs(config.inputs)
    valid_files = expand_inputs(config.valid) if config.valid else []
    for path in train_files + valid_files:
        check_input(path, config.text_field)  # refuse binary files, tables without the column, before any work
    out = Path(config.out)
    check_out(out)
    work = _work_dir(out)
    log.info("writing into %s; it replaces %s when complete", work, out)
    try:
        manifest = _prepare_into(work, config, tok, tok_path, train_files, valid_files)
        _replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _prepare_into(out: Path, config: PrepareConfig, tok, tok_path: Path, train_files: list[Path],
                  valid_files: list[Path]) -> dict:
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    dtype = token_dtype(vocab_size)
    special = special_tokens(tok)
    splits = ["train"] + (["valid"] if config.valid_fraction or valid_files else [])
    writers = {s: _SplitWriter(out / s, dtype, config.shard_tokens) for s in splits}
    router = _Router(writers, config.valid_fraction, config.seed)
    stats = ReadStats()
    # the bar counts decompressed bytes: a percentage of the files' sizes only holds for plain text
    files = train_files + valid_files
    total_bytes = None if any(map(is_compressed, files)) else sum(p.stat().st_size for p in files)
    began = time.perf_counter()
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="prepare", disable=not config.progress, smoothing=0.1)
    pair_stats: dict[str, dict] = {}
    for files, forced in ((train_files, None), (valid_files, "valid")):
        if not files:
            continue
        if config.format == "parallel":
            records = _pair_records(files, stats, pair_stats, forced or "train")
        else:
            records = read_records(files, config.format, config.text_field, stats)
        done = stats.bytes
        for enc in _ordered_map(_chunks(records, config.chunk_bytes), config.workers, str(tok_path)):
            router.feed(enc, forced)
            bar.update(stats.bytes - done)
            done = stats.bytes
    router.finish()
    bar.close()
    for w in writers.values():
        w.close()
    elapsed = time.perf_counter() - began
    if writers["train"].tokens == 0:
        raise ValueError(
            f"no text found in {', '.join(map(str, train_files))} (format {config.format}); "
            f"skipped: {stats.empty_files} empty files, {stats.empty_documents} empty documents, "
            f"{stats.bad_jsonl_rows} bad JSONL rows"
        )
    copy_tokenizer_files(config.tokenizer, out / TOKENIZER_DIR)
    manifest = dict(
        format_version=FORMAT_VERSION,
        # `dir` is the copy beside the data; `path` where it came from; vocab_sha256 identifies it
        # whatever its file's bytes (lmforge.tokenizers.vocab_fingerprint)
        tokenizer=dict(dir=TOKENIZER_DIR, path=str(tok_path.resolve()), sha256=file_sha256(tok_path),
                       vocab_sha256=vocab_fingerprint(tok)),
        vocab_size=vocab_size,
        dtype=dtype.name,
        special_tokens=special.to_dict(),
        splits={s: w.summary() for s, w in writers.items()},
        read=stats.to_dict() | dict(empty_documents_after_tokenization=router.empty_after_tokenization),
        **({"parallel": pair_stats} if pair_stats else {}),
        config=asdict(config) | dict(inputs=[str(p) for p in train_files], valid=[str(p) for p in valid_files]),
        seconds=round(elapsed, 3),
        mb_per_s=round(stats.bytes / 1e6 / max(elapsed, 1e-9), 3),
    )
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))  # last: its presence means "complete"
    return manifest


def _pair_records(files: list[Path], stats: ReadStats, pair_stats: dict[str, dict],
                  split: str) -> Iterator[tuple[bool, str]]:
    """Parallel text as records: one document per kept pair, source sentence then target sentence
    (lmforge.data.parallel; misaligned files are refused, bad pairs skipped and counted)."""
    pairs = read_parallel(files[0], files[1] if len(files) > 1 else None)
    stats.files += len(files)
    stats.bytes += sum(len(text.encode("utf-8")) + 1 for text in pairs.sources + pairs.targets)  # kept text
    stats.documents += pairs.stats.pairs
    stats.invalid_utf8_lines += pairs.stats.invalid_utf8_lines
    pair_stats[split] = pairs.stats.to_dict()
    return pair_records(pairs)


def check_out(out: Path) -> None:
    """`--out` may be new, empty, or earlier prepared data (replaced); anything else is refused,
    so a typo never deletes an unrelated folder."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: --out exists and is not a directory; name a folder for the prepared data")
    if out.is_dir() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise ValueError(f"{out}: --out is a non-empty folder that is not prepared data (no {MANIFEST}); "
                         f"choose a new or empty folder")


def _work_dir(out: Path) -> Path:
    """A fresh temporary sibling of `out`; leftovers of killed runs (their process gone) are removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in sorted(out.parent.glob(f".{out.name}.tmp-*")):
        pid = stale.name.rsplit("-", 2)[-2]
        if pid.isdigit() and _alive(int(pid)):
            continue
        if stale.name.endswith("-old") and not out.exists() and (stale / MANIFEST).is_file():
            os.rename(stale, out)  # killed between the two renames of _replace: put the old data back
        else:
            shutil.rmtree(stale, ignore_errors=True)
    work = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    return work


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return True


def _replace(work: Path, out: Path) -> None:
    """Put the finished `work` folder at `out`: the old data is moved aside, then deleted."""
    if not out.exists():
        os.rename(work, out)
        return
    old = out.parent / f".{out.name}.tmp-{os.getpid()}-old"
    os.rename(out, old)
    os.rename(work, out)
    shutil.rmtree(old, ignore_errors=True)


def summary_lines(manifest: dict) -> list[str]:
    """Human-readable result, including everything skipped."""
    read = manifest["read"]
    lines = [
        f"read {read['files']} files, {read['bytes'] / 1e6:.1f} MB, {read['documents']} documents "
        f"in {manifest['seconds']:.1f}s ({manifest['mb_per_s']:.2f} MB/s)"
    ]
    for split, info in manifest["splits"].items():
        lines.append(
            f"{split}: {info['tokens']} tokens, {info['sentences']} sentences, {info['documents']} documents, "
            f"{len(info['shards'])} shards ({manifest['dtype']})"
        )
    skipped = {
        "empty files": read["empty_files"],
        "empty documents": read["empty_documents"] + read["empty_documents_after_tokenization"],
        "lines with invalid UTF-8 (replaced)": read["invalid_utf8_lines"],
        "long lines chunked": read["long_lines_chunked"],
        "bad JSONL rows": read["bad_jsonl_rows"],
    }
    lines.append("skipped/repaired: " + ", ".join(f"{v} {k}" for k, v in skipped.items()))
    lines.extend(f"  {note}" for note in read["examples"])
    for split, pairs in manifest.get("parallel", {}).items():
        lines.append(f"{split} pairs: {pairs['pairs']} kept of {pairs['lines']}; skipped {pairs['empty']} with an "
                     f"empty side, {pairs['ratio_outliers']} length-ratio outliers")
        lines.extend(f"  {note}" for note in pairs["examples"])
    return lines
