"""Text generation: one decoding loop for every generator (GPT decoders, encoder-decoders), with a KV cache.

Strategies:
- greedy: the most probable token each step;
- sample: logits warped in the order repetition penalty -> temperature -> top-k -> top-p (nucleus,
  Holtzman et al. 2020 §3.1: the smallest set of tokens whose probability mass reaches p, at least
  one token kept) -> a draw from a seeded generator;
- beam: beam search keeping `num_beams` hypotheses. A hypothesis ends at EOS; its score is
  sum(log p) / L**alpha where L counts only generated tokens, EOS included (the prompt never counts),
  alpha = `length_penalty` (the "alpha" of Wu et al. 2016 §7 applied as a plain power, as fairseq and
  transformers do; Vaswani et al. §6.1 use alpha = 0.6). Each step looks at the 2 x num_beams best
  continuations, so EOS candidates can finish a hypothesis while num_beams others go on; a batch item
  stops once it has num_beams finished hypotheses and no live beam can beat the worst of them; once a
  quarter of the batch has stopped, those prompts' rows leave it (with their cache and, for an
  encoder-decoder, encoder states), so later steps compute the live rows only (transformers keeps
  computing finished rows). The beams of one prompt start identical, so the prompt (or decoder start
  token) runs once per prompt before they split; an encoder-decoder's beams share one encoding of
  their source (cross-attention reads it once per source, lmforge.nn.attention).
The repetition penalty is CTRL's (Keskar et al. 2019 §4.1): the logit of every token already in the
prompt or output is divided by r when positive, multiplied by r when negative.

Prompts are left-padded; positions count from each prompt's first real token, so a padded prompt
generates exactly what it generates alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.nn import functional as F

from lmforge.models.backbone import BackboneOutput
from lmforge.nn.cache import KVCache

Strategy = Literal["greedy", "sample", "beam"]
STRATEGIES = ("greedy", "sample", "beam")
# Beam search drops finished prompts from the batch once they are at least 1/DROP_FRACTION of it: each
# drop copies the whole cache, so dropping every one as it finishes cost more than it saved (De->En
# Multi30k, 128 sentences in batches of 64, on a loaded machine: never 17.8 s, each at once 15.0 s, a
# quarter 11.6 s; a second loaded run gave a third 16.6, a quarter 14.6, a sixth 15.9, an eighth 13.3 s,
# so the fraction is a rough choice, not a tuned optimum).
DROP_FRACTION = 4


@dataclass(kw_only=True)
class GenerationConfig:
    max_new_tokens: int = 64
    strategy: Strategy = "greedy"
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    repetition_penalty: float = 1.0  # 1.0 = off
    num_beams: int = 4
    length_penalty: float = 1.0
    eos_token_id: int | None = None
    pad_token_id: int | None = None  # fills finished rows; None -> eos, else 0
    decoder_start_token_id: int | None = None  # encoder-decoders: the first decoder input
    seed: int = 0
    use_cache: bool = True  # False: re-run the whole sequence each step (for benchmarks and checks)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {self.strategy!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")

    @property
    def fill_id(self) -> int:
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_token_id if self.eos_token_id is not None else 0


@dataclass
class GenerationOutput:
    tokens: list[list[int]]  # per prompt: the generated ids only (EOS included when reached)
    scores: list[float] | None = None  # beam search: the chosen hypothesis' length-normalised score


# ------------------------------------------------------------------------------------- stepping
LM_HEAD_KINDS = ("clm", "seq2seq_lm")  # heads whose `logits` score the next token


def lm_head(model: torch.nn.Module) -> torch.nn.Module:
    """The language-model head of a TaskModel (kind "clm", or "seq2seq_lm" on an encoder-decoder)."""
    for head in model.heads.values():
        if head.kind in LM_HEAD_KINDS:
            return head
    raise ValueError(f"the model has no causal LM head (heads: {sorted(model.heads)}); "
                     "generation needs a decoder with an LM head (GPT, or an encoder-decoder)")


class Stepper:
    """Feeds tokens through a model with a KV cache and returns next-token logits (rows, V).

    Decoder-only: the prompt is the prefix. Encoder-decoder: the prompt is the source, encoded once;
    the decoder starts from `decoder_start_token_id`. `group` rows follow each prompt (beam search's
    beams): they start identical, so the prompt (or start token) runs once per prompt and its state is
    then copied to the group's rows; an encoder-decoder's rows keep sharing the one encoding of their
    source (cross-attention with fewer memory rows than queries, lmforge.nn.attention)."""

    def __init__(self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 config: GenerationConfig, total: int, group: int = 1) -> None:
        self.backbone = model.backbone
        self.head = lm_head(model)
        self.seq2seq = hasattr(self.backbone, "encode")
        self.cache = KVCache(capacity=total) if config.use_cache else None
        self.group = group
        rows = input_ids.shape[0]  # one per prompt until `start` has run
        self.fed = input_ids.new_zeros(rows, 0)  # without a cache: every token fed so far
        self.mask = attention_mask.new_zeros(rows, 0)  # every position fed so far, 1 = real
        self.count = attention_mask.new_zeros(rows, 1)  # real tokens fed so far
        if self.seq2seq:
            if config.decoder_start_token_id is None:
                raise ValueError("an encoder-decoder needs decoder_start_token_id to start decoding")
            self.encoded = self.backbone.encode(input_ids, attention_mask)  # one row per source
            self.first = torch.full((rows, 1), config.decoder_start_token_id, device=input_ids.device)
            self.first_mask = None
        else:
            self.first, self.first_mask = input_ids, attention_mask

    def logits(self, tokens: torch.Tensor, new_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: (rows, T) new inputs (`new_mask` marks their padding) -> (rows, V) next-token logits."""
        if new_mask is None:
            new_mask = torch.ones_like(tokens)
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        if tokens.shape[1] > 1:  # a left-padded prompt: positions count real tokens only
            positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -tokens.shape[1]:]
        else:
            positions = self.count
        self.count = self.count + new_mask.sum(-1, keepdim=True)
        if self.cache is None:  # no cache: the whole sequence again, every step
            self.fed = torch.cat([self.fed, tokens], dim=1)
            tokens, positions = self.fed, (self.mask.cumsum(-1) - 1).clamp(min=0)
        if self.seq2seq:
            out = self.backbone.decode(tokens, self.encoded, self.mask, cache=self.cache, position_ids=positions)
        else:
            out = self.backbone(tokens, self.mask, position_ids=positions, cache=self.cache)
        return self.head.logits(out.last_hidden_state[:, -1]).float()  # (rows, V)

    def start(self) -> torch.Tensor:
        """Logits after the prompt (decoder) or the start token (encoder-decoder), `group` rows per prompt."""
        logits = self.logits(self.first, self.first_mask)
        if self.group > 1:  # (P, V) -> (P * group, V), the state likewise
            index = torch.arange(logits.shape[0], device=logits.device).repeat_interleave(self.group)
            self.reorder(index)
            logits = logits.index_select(0, index)
        return logits

    def reorder(self, index: torch.Tensor, *, across_sources: bool = False) -> None:
        """Row i of the decoder's state becomes row index[i]. Beam search's `origin` moves rows only within
        one prompt's beams, so what depends on the prompt alone — the encoder's states and mask, the
        cache's cross-attention keys/values, one row per prompt — is left as it is; an index that drops
        finished prompts passes `across_sources=True` (whole groups: index[i * group] // group is the
        prompt of rows i * group ..) and those move too."""
        sources = index.view(-1, self.group)[:, 0] // self.group if across_sources else None
        if self.cache is not None:
            self.cache.reorder(index, sources)
        if sources is not None and self.seq2seq:
            mask = self.encoded.attention_mask
            self.encoded = BackboneOutput(last_hidden_state=self.encoded.last_hidden_state.index_select(0, sources),
                                          attention_mask=None if mask is None else mask.index_select(0, sources))
        self.fed = self.fed.index_select(0, index)
        self.mask = self.mask.index_select(0, index)
        self.count = self.count.index_select(0, index)


# ------------------------------------------------------------------------------------- warpers
def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL §4.1. seen: (rows, V) bool, tokens already in the prompt or the output."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def warp(logits: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """temperature -> top-k -> top-p; removed tokens get -inf."""
    logits = logits / config.temperature
    if config.top_k > 0 and config.top_k < logits.shape[-1]:
        kth = logits.topk(config.top_k, dim=-1).values[:, -1:]  # (rows, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
        drop_sorted = before >= config.top_p  # the first token (before = 0) is always kept
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


# ------------------------------------------------------------------------------------- loops
@torch.no_grad()
def generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             config: GenerationConfig | None = None,
             on_token: Callable[[torch.Tensor], Any] | None = None) -> GenerationOutput:
    """Continue each (left-padded) prompt. `on_token(ids (B,))` sees every step's tokens (streaming).
    Returns the generated ids per prompt, without padding."""
    config = config or GenerationConfig()
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError("input_ids must be (batch, length) with at least one token per prompt")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if bool((attention_mask.sum(-1) == 0).any()):
        raise ValueError("an empty prompt: every prompt needs at least one token")
    seq2seq = hasattr(model.backbone, "encode")
    decoded_prompt = 1 if seq2seq else input_ids.shape[1]
    if decoded_prompt + config.max_new_tokens > model.backbone.max_length():
        raise ValueError(f"prompt length {decoded_prompt} + max_new_tokens {config.max_new_tokens} exceeds the "
                         f"model's {model.backbone.max_length()} positions")
    was_training = model.training
    model.eval()
    try:
        if config.strategy == "beam":
            return _beam_search(model, input_ids, attention_mask, config)
        return _greedy_or_sample(model, input_ids, attention_mask, config, on_token)
    finally:
        model.train(was_training)


def _seen_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab: int, seq2seq: bool) -> torch.Tensor:
    seen = torch.zeros(input_ids.shape[0], vocab, dtype=torch.bool, device=input_ids.device)
    if not seq2seq:  # a decoder's prompt is part of its text; a source sentence is not
        seen.scatter_(1, input_ids.masked_fill(attention_mask == 0, 0), attention_mask.bool())
    return seen


def _greedy_or_sample(model, input_ids, attention_mask, config, on_token) -> GenerationOutput:
    stepper = Stepper(model, input_ids, attention_mask, config, input_ids.shape[1] + config.max_new_tokens)
    rows = input_ids.shape[0]
    generator = torch.Generator(device=input_ids.device).manual_seed(config.seed)
    finished = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
    out: list[torch.Tensor] = []
    tokens = None
    seen = None
    for _ in range(config.max_new_tokens):
        logits = stepper.start() if tokens is None else stepper.logits(tokens)
        if config.repetition_penalty != 1.0:
            if seen is None:
                seen = _seen_tokens(input_ids, attention_mask, logits.shape[-1], stepper.seq2seq)
            logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
        if config.strategy == "greedy":
            chosen = logits.argmax(dim=-1)
        else:
            probs = warp(logits, config).softmax(dim=-1)
            chosen = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        chosen = chosen.masked_fill(finished, config.fill_id)  # (rows,)
        out.append(chosen)
        if on_token is not None:
            on_token(chosen)
        if seen is not None:
            seen[torch.arange(rows, device=seen.device), chosen] = True
        if config.eos_token_id is not None:
            finished |= chosen == config.eos_token_id
            if bool(finished.all()):
                break
        tokens = chosen[:, None]
    return GenerationOutput(tokens=_trim(torch.stack(out, 1), config.eos_token_id))


def _trim(ids: torch.Tensor, eos: int | None) -> list[list[int]]:
    """Each row up to and including its first EOS."""
    result = []
    for row in ids.tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos) + 1]
        result.append(row)
    return result


@dataclass
class _Hypotheses:
    """The finished hypotheses of one batch item, best num_beams kept."""

    num_beams: int
    length_penalty: float
    items: list[tuple[float, list[int]]]

    def add(self, tokens: list[int], sum_logprobs: float) -> None:
        score = sum_logprobs / (len(tokens) ** self.length_penalty)
        if len(self.items) < self.num_beams or score > self.worst():
            self.items.append((score, tokens))
            self.items.sort(key=lambda item: item[0], reverse=True)
            del self.items[self.num_beams:]

    def worst(self) -> float:
        return self.items[-1][0] if self.items else -math.inf

    def done(self, best_running: float, generated: int) -> bool:
        """Full, and the best live beam, even ending now, would not beat the worst kept hypothesis."""
        if len(self.items) < self.num_beams:
            return False
        return self.worst() >= best_running / (generated ** self.length_penalty)


def _beam_search(model, input_ids, attention_mask, config: GenerationConfig) -> GenerationOutput:
    batch, beams = input_ids.shape[0], config.num_beams
    device = input_ids.device
    rows = torch.arange(batch, device=device).repeat_interleave(beams)  # (B*nb,)
    stepper = Stepper(model, input_ids, attention_mask, config, input_ids.shape[1] + config.max_new_tokens,
                      group=beams)
    scores = torch.zeros(batch, beams, device=device)
    scores[:, 1:] = -1e9  # all beams start identical: only the first may expand at step 1
    hyps = [_Hypotheses(beams, config.length_penalty, []) for _ in range(batch)]
    live = list(range(batch))  # the prompts in the batch; their rows, nb each, in this order
    done = [False] * batch
    sequences = torch.zeros(batch * beams, 0, dtype=torch.long, device=device)
    seen = None
    tokens = None
    eos = config.eos_token_id
    for step in range(1, config.max_new_tokens + 1):
        logits = stepper.start() if tokens is None else stepper.logits(tokens)
        if config.repetition_penalty != 1.0:
            if seen is None:
                seen = _seen_tokens(input_ids[rows], attention_mask[rows], logits.shape[-1], stepper.seq2seq)
            logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
        n, vocab = len(live), logits.shape[-1]
        total = F.log_softmax(logits, dim=-1).add_(scores.view(-1, 1))  # (n*nb, V) sums of log-probs
        top, index = total.view(n, beams * vocab).topk(2 * beams, dim=-1)  # (n, 2nb)
        source, token = index // vocab, index % vocab  # beam of origin, next token
        top_l, source_l, token_l = top.tolist(), source.tolist(), token.tolist()
        # per live prompt, its num_beams continuations (Python lists: one tensor each at the end)
        kept_scores = [[-1e9] * beams for _ in range(n)]
        kept_source = [[0] * beams for _ in range(n)]
        kept_token = [[config.fill_id] * beams for _ in range(n)]
        for i, b in enumerate(live):
            if done[b]:
                continue  # finished, not yet dropped: its rows keep -1e9 scores and are never read
            kept = 0
            for rank in range(2 * beams):
                if eos is not None and token_l[i][rank] == eos:
                    if rank < beams:  # an EOS among the best num_beams finishes a hypothesis
                        row = i * beams + source_l[i][rank]
                        hyps[b].add(sequences[row].tolist() + [eos], top_l[i][rank])
                    continue
                kept_scores[i][kept], kept_source[i][kept] = top_l[i][rank], source_l[i][rank]
                kept_token[i][kept] = token_l[i][rank]
                kept += 1
                if kept == beams:
                    break
            done[b] = hyps[b].done(kept_scores[i][0], step)  # no live beam can win any more
        next_scores = torch.tensor(kept_scores, dtype=scores.dtype, device=device)  # (n, nb)
        next_source = torch.tensor(kept_source, device=device)
        next_token = torch.tensor(kept_token, device=device)
        origin = (torch.arange(n, device=device)[:, None] * beams + next_source).view(-1)  # (n*nb,)
        still = [i for i, b in enumerate(live) if not done[b]]  # positions in `live` of the prompts going on
        if not still:
            break
        drop = (n - len(still)) * DROP_FRACTION >= n  # a quarter of the batch or more has finished
        if drop:  # finished prompts leave the batch: later steps compute only the live rows
            kept_items = torch.tensor(still, device=device)
            kept_rows = (kept_items[:, None] * beams + torch.arange(beams, device=device)).view(-1)
            origin, next_scores, next_token = origin[kept_rows], next_scores[kept_items], next_token[kept_items]
            live = [live[i] for i in still]
        sequences = torch.cat([sequences.index_select(0, origin), next_token.view(-1, 1)], dim=1)
        scores = next_scores
        stepper.reorder(origin, across_sources=drop)
        if seen is not None:
            seen = seen.index_select(0, origin)
            seen[torch.arange(seen.shape[0], device=seen.device), next_token.view(-1)] = True
        tokens = next_token.view(-1, 1)
    for i, b in enumerate(live):  # out of budget: the live beams compete with the finished hypotheses
        if done[b]:
            continue
        for k in range(beams):
            hyps[b].add(sequences[i * beams + k].tolist(), float(scores[i, k]))
    best = [h.items[0] for h in hyps]
    return GenerationOutput(tokens=[t for _, t in best], scores=[s for s, _ in best])
