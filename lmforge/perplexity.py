"""Perplexity of a pre-trained language model on any text file (`lmforge evaluate --task perplexity`).

CLM (GPT): strided sliding windows as HuggingFace's perplexity guide defines them
(https://huggingface.co/docs/transformers/perplexity): the file is one token sequence; a window of
`max_length` tokens starts every `stride` tokens, and only its tokens not scored by an earlier window
are scored (the rest is context). PPL = exp(total NLL / tokens scored); the first token, having no
context, is never scored.

MLM (BERT family): pseudo-perplexity, Salazar et al. 2020, "Masked Language Model Scoring" (ACL), §2:
every token is masked in turn and scored by log P(w_t | W without t); PPPL = exp(-1/N sum_t log P).
Each token is scored inside the same strided windows (wrapped in the tokenizer's [CLS] ... [SEP]),
so its context is up to `max_length` tokens around it, as the CLM's is before it.

biLM (ELMo, Peters et al. 2018 §3.1): the file is read as `lmforge prepare --format lines` streams a
pre-training corpus, each non-blank line followed by the end-of-text token (the biLM's </S>, which
bilm-tf's test data also ends every line with), so held-out text looks like the training stream. Both
LMs run over the same strided windows in one pass: the forward LM scores a window's tokens as the CLM's rule does (those after what
an earlier window scored), the backward LM its mirror image (the tokens before the next window's
start), so each direction scores every token but the file's first (forward) or last (backward) once.
Reported per direction, and as exp of their mean NLL (bilm-tf's `test` averages the two losses).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from lmforge.heads.lm import IGNORE
from lmforge.models import TaskModel

LM_KINDS = ("clm", "mlm", "bilm")
MASK_TOKENS = ("[MASK]", "<mask>")


@dataclass(frozen=True)
class PerplexityConfig:
    max_length: int | None = None  # tokens per window; None -> the model's positions
    stride: int | None = None  # None -> max_length // 2 (the guide uses 512 of 1024)
    batch_size: int = 32  # MLM: masked copies scored per forward pass
    max_tokens: int | None = None  # score only the first N tokens of the file
    progress: bool = False


def lm_head_name(model: TaskModel) -> str:
    """The model's CLM, MLM or biLM head; a fine-tuned or encoder-only model has none."""
    found = [name for name, head in model.heads.items() if head.kind in LM_KINDS]
    if not found:
        kinds = [head.kind for head in model.heads.values()]
        raise ValueError(f"the model has no CLM, MLM or biLM head (heads: {kinds or 'none'}); perplexity needs one")
    return found[0]


def windows(n_tokens: int, max_length: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(begin, end, first scored position) per window, HF's loop: `trg_len = end - prev_end`."""
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + max_length, n_tokens)
        yield begin, end, max(begin, prev_end)
        prev_end = end
        if end == n_tokens:
            break


def read_ids(tokenizer: Tokenizer, path: Path, max_tokens: int | None) -> list[int]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None
    ids = tokenizer.encode(text, add_special_tokens=False).ids[:max_tokens]
    if len(ids) < 2:
        raise ValueError(f"{path}: {len(ids)} token(s); perplexity needs at least 2")
    return ids


def read_line_ids(tokenizer: Tokenizer, path: Path, max_tokens: int | None) -> list[int]:
    """Every non-blank line's ids, each followed by the end-of-text id (eos, else sep)."""
    from lmforge.tokenizers import special_tokens

    special = special_tokens(tokenizer)
    end = special.eos if special.eos is not None else special.sep
    if end is None:
        raise ValueError("the tokenizer has no end-of-text token (eos or [SEP]) to close each line with")
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None
    ids = [i for enc in tokenizer.encode_batch(lines, add_special_tokens=False) for i in (*enc.ids, end)]
    if len(ids[:max_tokens]) < 2:
        raise ValueError(f"{path}: {len(ids[:max_tokens])} token(s); perplexity needs at least 2")
    return ids[:max_tokens]


def clm_nll(model: TaskModel, head: str, ids: list[int], cfg: PerplexityConfig, length: int, stride: int,
            device: torch.device) -> tuple[float, int]:
    """Total NLL and tokens scored over strided windows."""
    key = model.heads[head].label_key
    total, count = 0.0, 0
    spans = list(windows(len(ids), length, stride))
    for begin, end, first in tqdm(spans, desc="perplexity", unit="window", leave=False, disable=not cfg.progress):
        window = torch.tensor([ids[begin:end]], device=device)  # (1, T)
        labels = window.clone()
        labels[:, : first - begin] = IGNORE  # context only: scored by an earlier window
        scored = int(labels[:, 1:].ne(IGNORE).sum())  # the head predicts position t from t-1
        if scored == 0:
            continue
        out = model(window, torch.ones_like(window), heads=(head,), **{key: labels}).heads[head]
        total += float(out.loss) * scored
        count += scored
    return total, count


def single_template(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the post-processor puts before and after one text ([CLS] / [SEP])."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    full = tokenizer.post_process(plain, None, add_special_tokens=True)
    at = [i for i, special in enumerate(full.special_tokens_mask) if not special]
    return full.ids[: at[0]], full.ids[at[-1] + 1:]


def mask_id(tokenizer: Tokenizer) -> int:
    for token in MASK_TOKENS:
        found = tokenizer.token_to_id(token)
        if found is not None:
            return found
    raise ValueError(f"the tokenizer has no mask token ({' or '.join(MASK_TOKENS)}); pseudo-perplexity needs one")


def mlm_nll(model: TaskModel, head: str, ids: list[int], cfg: PerplexityConfig, length: int, stride: int,
            tokenizer: Tokenizer, device: torch.device) -> tuple[float, int]:
    """Total pseudo-NLL: each token masked alone in a copy of its window, copies batched."""
    key = model.heads[head].label_key
    prefix, suffix = single_template(tokenizer)
    mask = mask_id(tokenizer)
    total, count = 0.0, 0
    spans = list(windows(len(ids), length, stride))
    bar = tqdm(total=len(ids), desc="pseudo-perplexity", unit="token", leave=False, disable=not cfg.progress)
    for begin, end, first in spans:
        window = torch.tensor(prefix + ids[begin:end] + suffix, device=device)  # (T,)
        targets = [len(prefix) + t - begin for t in range(first, end)]
        for at in range(0, len(targets), cfg.batch_size):
            chunk = torch.tensor(targets[at:at + cfg.batch_size], device=device)  # (B,)
            rows = torch.arange(len(chunk), device=device)
            inputs = window.repeat(len(chunk), 1)  # (B, T): one copy per masked token
            labels = torch.full_like(inputs, IGNORE)
            labels[rows, chunk] = inputs[rows, chunk]
            inputs[rows, chunk] = mask
            out = model(inputs, torch.ones_like(inputs), heads=(head,), **{key: labels}).heads[head]
            total += float(out.loss) * len(chunk)
            count += len(chunk)
            bar.update(len(chunk))
    bar.close()
    return total, count


def bilm_nll(model: TaskModel, head: str, ids: list[int], cfg: PerplexityConfig, length: int, stride: int,
             tokenizer: Tokenizer, device: torch.device) -> dict[str, tuple[float, int]]:
    """Total NLL and tokens scored per direction; windows of one length are batched."""
    from lmforge.features import extra_inputs
    from lmforge.heads.bilm import DIRECTIONS

    lm, extra = model.heads[head], extra_inputs(model.backbone, tokenizer)
    spans = list(windows(len(ids), length, stride))
    # the backward LM scores a window's tokens up to where the next window begins (the last: all but its end)
    stops = [spans[k + 1][0] if k + 1 < len(spans) else spans[k][1] - 1 for k in range(len(spans))]
    totals = {direction: [0.0, 0] for direction in DIRECTIONS}
    by_length: dict[int, list[int]] = {}  # windows of one length batch together (only the last is shorter)
    for k, (begin, end, _) in enumerate(spans):
        by_length.setdefault(end - begin, []).append(k)
    groups = [same[at:at + cfg.batch_size] for same in by_length.values() for at in range(0, len(same), cfg.batch_size)]
    targets_of = torch.tensor(ids, device=device)
    for group in tqdm(groups, desc="perplexity", unit="batch", leave=False, disable=not cfg.progress):
        window = torch.tensor([ids[spans[k][0]:spans[k][1]] for k in group], device=device)  # (B, T)
        mask = torch.ones_like(window)
        hidden = model.backbone(window, mask, **extra(window, mask)).last_hidden_state  # (B, T, 2P)
        rows: dict[str, list[tuple[int, int, int]]] = {direction: [] for direction in DIRECTIONS}
        for row, k in enumerate(group):
            begin, end, first = spans[k]
            # (row, state position, target position): t-1 predicts t forward, t+1 predicts t backward
            rows["forward"] += [(row, t - 1 - begin, t) for t in range(max(first, begin + 1), end)]
            rows["backward"] += [(row, t + 1 - begin, t) for t in range(begin, min(stops[k], end - 1))]
        for direction, picked in rows.items():
            if not picked:
                continue
            at = torch.tensor(picked, device=device)  # (N, 3)
            loss = lm.direction_loss(hidden[at[:, 0], at[:, 1]], targets_of[at[:, 2]], direction)
            totals[direction][0] += float(loss) * len(picked)
            totals[direction][1] += len(picked)
    return {direction: (total, count) for direction, (total, count) in totals.items()}


def perplexity(model: TaskModel, tokenizer: Tokenizer, path: str | Path, cfg: PerplexityConfig,
               device: torch.device) -> dict[str, Any]:
    """Perplexity (CLM), pseudo-perplexity (MLM) or both directions' perplexity (biLM) of the text in
    `path`, as a JSON-ready dict."""
    path = Path(path)
    head = lm_head_name(model)
    kind = model.heads[head].kind
    positions = model.config.max_position_embeddings - model.config.position_offset
    max_length = cfg.max_length or positions
    if max_length > positions:
        raise ValueError(f"--max-length {max_length} exceeds the model's {positions} positions")
    specials = sum(map(len, single_template(tokenizer))) if kind == "mlm" else 0
    length = max_length - specials  # text tokens per window
    if length < 1:
        raise ValueError(f"--max-length {max_length} leaves no room between the special tokens")
    stride = cfg.stride or max(1, length // 2)
    if stride > length:
        raise ValueError(f"--stride {stride} is longer than a window's {length} text tokens")
    ids = (read_line_ids if kind == "bilm" else read_ids)(tokenizer, path, cfg.max_tokens)
    model = model.to(device).eval()
    with torch.inference_mode():
        if kind == "bilm":
            return bilm_result(bilm_nll(model, head, ids, cfg, length, stride, tokenizer, device),
                               path, len(ids), max_length, stride)
        if kind == "clm":
            total, count = clm_nll(model, head, ids, cfg, length, stride, device)
            method = "strided sliding windows (HF perplexity guide)"
        else:
            total, count = mlm_nll(model, head, ids, cfg, length, stride, tokenizer, device)
            method = "pseudo-perplexity (Salazar et al. 2020, §2): each token masked in turn"
    nll = total / count
    return {"task": "perplexity", "input": str(path), "objective": kind, "method": method,
            "perplexity": math.exp(nll), "nll_per_token": nll, "tokens": len(ids), "tokens_scored": count,
            "max_length": max_length, "stride": stride}


def bilm_result(sums: dict[str, tuple[float, int]], path: Path, tokens: int, max_length: int,
                stride: int) -> dict[str, Any]:
    nll = {direction: total / count for direction, (total, count) in sums.items()}
    mean = sum(nll.values()) / len(nll)
    return {"task": "perplexity", "input": str(path), "objective": "bilm",
            "method": "forward and backward LM over strided windows (each scores its side's context)",
            "perplexity": math.exp(mean), "nll_per_token": mean,
            **{f"{direction}_perplexity": math.exp(value) for direction, value in nll.items()},
            "tokens": tokens, "tokens_scored": {direction: count for direction, (_, count) in sums.items()},
            "max_length": max_length, "stride": stride}
