"""`lmforge generate`: continue prompts with a decoder (GPT) or an encoder-decoder model.

One prompt (`--prompt`) streams its continuation to the terminal; a file of prompts (`--input`, one per
line) is generated in left-padded batches. `--out` gets one JSON object per prompt:
{"prompt", "text" (the continuation only), "tokens" (its ids)}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmforge.cli.main import UserError

GENERATION_CONFIG = "generation_config.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="continue prompts with a GPT-style or encoder-decoder model",
                              description=__doc__.splitlines()[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR", help="lmforge or HuggingFace model directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="one prompt; its continuation streams to the terminal")
    source.add_argument("--input", metavar="FILE", help="UTF-8 file, one prompt per line")
    p.add_argument("--out", metavar="FILE.jsonl", help="one JSON object per prompt (required with --input)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--strategy", choices=("greedy", "sample", "beam"), default="greedy")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling: divide logits by T")
    p.add_argument("--top-k", type=int, default=0, help="sampling: keep the K most probable tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sampling: nucleus mass p in (0, 1] (1: off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL penalty r (1: off)")
    p.add_argument("--num-beams", type=int, default=4, help="beam search: beams kept")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="beam search: score = sum log p / generated_length ** A")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per batch (--input)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast matmuls")
    p.set_defaults(func=run)


def special_ids(model_dir: Path, tokenizer) -> dict[str, int | None]:
    """eos/pad/decoder-start ids: generation_config.json when the model has one, else the tokenizer's."""
    from lmforge.tokenizers import special_tokens

    special = special_tokens(tokenizer)
    ids = {"eos_token_id": special.eos, "pad_token_id": special.pad, "decoder_start_token_id": None}
    path = model_dir / GENERATION_CONFIG
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: line {err.lineno}: invalid JSON ({err.msg})") from None
        for key in ids:
            value = saved.get(key)
            if isinstance(value, list):  # HF allows several EOS ids; lmforge stops at the first
                value = value[0] if value else None
            if value is not None:
                ids[key] = int(value)
    vocab = tokenizer.get_vocab_size()
    for key, value in ids.items():
        if value is not None and not 0 <= value < vocab:
            raise UserError(f"{model_dir}: {key} {value} is outside the {vocab}-token vocabulary")
    return ids


def read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompt is not None:
        return [args.prompt]
    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"{path}: input file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err.reason})") from None
    return lines


def run(args: argparse.Namespace) -> int:
    import torch

    from lmforge import translate
    from lmforge.convert import load_pretrained
    from lmforge.finetune import resolve_device
    from lmforge.generate import GenerationConfig, generate, lm_head
    from lmforge.tokenizers import load_tokenizer

    if args.input is not None and not args.out:
        raise UserError("--input needs --out FILE.jsonl")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    model_dir = Path(args.model)
    prompts = read_prompts(args)
    for number, prompt in enumerate(prompts, start=1):
        if not prompt.strip():
            where = f"{args.input}: line {number}: " if args.input else ""
            raise UserError(f"{where}empty prompt")
    model = load_pretrained(model_dir)
    lm_head(model)  # a model without a causal LM head cannot generate: a one-line error
    tokenizer = load_tokenizer(model_dir)
    seq2seq = hasattr(model.backbone, "encode")
    source_end = [translate.special_ids(tokenizer, model)[0]] if seq2seq else []
    ids = special_ids(model_dir, tokenizer)
    if ids["decoder_start_token_id"] is None:  # an encoder-decoder's own start token (Marian/T5: the pad id)
        ids["decoder_start_token_id"] = getattr(model.config, "decoder_start_id", None)
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens, strategy=args.strategy, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty, num_beams=args.num_beams,
        length_penalty=args.length_penalty, seed=args.seed, **ids)
    device = resolve_device(args.device)
    model.to(device).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    stream = args.prompt is not None  # one prompt: its continuation appears as it is generated
    records = []
    with autocast:
        for start in range(0, len(prompts), args.batch_size):
            chunk = prompts[start:start + args.batch_size]
            encoded = [tokenizer.encode(p, add_special_tokens=False).ids for p in chunk]
            for offset, tokens in enumerate(encoded):
                if not tokens:
                    raise UserError(f"prompt {start + offset + 1} has no tokens after tokenization")
            input_ids, mask = _batch(encoded, config.fill_id, source_end, seq2seq, device)
            on_token = _streamer(tokenizer) if stream and config.strategy != "beam" else None
            result = generate(model, input_ids, mask, config, on_token=on_token)
            for prompt, tokens in zip(chunk, result.tokens):
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                records.append({"prompt": prompt, "text": text, "tokens": tokens})
    if stream:
        if config.strategy == "beam":
            print(records[0]["text"], end="")
        print()
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        print(f"generate: {len(records)} continuations -> {out}", file=sys.stderr)
    return 0


def _batch(encoded: list[list[int]], pad: int, source_end: list[int], seq2seq: bool, device):
    """Decoder prompts are left-padded (positions count real tokens). An encoder-decoder's sources end
    with the end-of-sentence token, as in training (lmforge.translate; Marian and T5 append </s>), and
    are right-padded: the encoder's positions count from its first token, padding or not."""
    import torch

    rows = [t + source_end for t in encoded]
    width = max(map(len, rows))
    fills = [[pad] * (width - len(t)) for t in rows]
    ones = [[1] * len(t) for t in rows]
    zeros = [[0] * (width - len(t)) for t in rows]
    if seq2seq:
        ids, mask = [t + f for t, f in zip(rows, fills)], [o + z for o, z in zip(ones, zeros)]
    else:
        ids, mask = [f + t for t, f in zip(rows, fills)], [z + o for o, z in zip(ones, zeros)]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


def _streamer(tokenizer):
    """Print each new piece of text as tokens arrive (decoding the whole continuation each time keeps
    multi-token characters, e.g. UTF-8 bytes split over byte-level tokens, whole)."""
    generated: list[int] = []
    shown = ""

    def on_token(ids) -> None:
        nonlocal shown
        generated.append(int(ids[0]))
        text = tokenizer.decode(generated, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next byte
            return
        print(text[len(shown):], end="", flush=True)
        shown = text

    return on_token
