"""Translation speed, lmforge vs transformers' MarianMTModel on the same weights, in one process.

    python bench/bench_translation.py --prepared OUT/prepared --model OUT/final --source test.de.gz
                                      [--steps 4] [--max-tokens 2048] [--sentences 200] [--rounds 2]
Training: both models start from the same initial weights (ours saved, loaded by `MarianMTModel`), take
the same token-budget batches of the prepared pairs (the translation objective's, Vaswani et al. §5.1)
with dropout 0.1, label-smoothed cross-entropy (eps 0.1, §5.4; HF's from its (N, V) logits) and the
same fused Adam (beta 0.9/0.98, eps 1e-9); tokens/s counts source + target tokens, first step untimed.
Decoding: the first --sentences of --source with --model (lmforge and its HF export), beam 4, alpha 0.6,
at most source + 50 tokens (§6.1), the same length-sorted batches on both sides; prints sentences/s, the
ratio and how many outputs are identical. Sides alternate each round, the best round is kept.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from lmforge.config import ModelConfig
from lmforge.convert import load_pretrained, save_hf
from lmforge.data.pretraining import ObjectiveConfig, PretrainingDataset
from lmforge.models import TaskModel
from lmforge.tasks.text import load_task_tokenizer
from lmforge.train.optim import build_optimizer
from lmforge.translate import TranslateConfig, translate

HEAD = "seq2seq_lm"


def training(args) -> None:
    import transformers

    data = PretrainingDataset(args.prepared, ObjectiveConfig(kind="translation", max_seq_len=128,
                                                              max_tokens=args.max_tokens), seed=0)
    batches = [data.collate([data[i]]) for i in range(args.steps + 1)]
    config = ModelConfig.from_name(args.preset, vocab_size=data.vocab_size, pad_token_id=data.special.pad)
    torch.manual_seed(0)
    ours = TaskModel(config, {HEAD: {"kind": "seq2seq_lm", "label_smoothing": 0.1}})
    with tempfile.TemporaryDirectory() as tmp:
        save_hf(ours, tmp)
        hf = transformers.MarianMTModel.from_pretrained(tmp)
    ours.train()
    hf.train()

    def our_loss(batch):
        return ours(**batch).loss

    def hf_loss(batch):
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")}
        logits = hf(**inputs).logits
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), label_smoothing=0.1)

    sides = {}
    for name, model, loss_fn in (("lmforge", ours, our_loss), ("transformers", hf, hf_loss)):
        optimizer = build_optimizer(model, 1e-4, 0.0, (0.9, 0.98), 1e-9)

        def step(batch, model=model, loss_fn=loss_fn, optimizer=optimizer):
            loss_fn(batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step(batches[0])  # warm-up, untimed
        sides[name] = step
    tokens = sum(int(b["attention_mask"].sum() + b["decoder_attention_mask"].sum()) for b in batches[1:])
    best = {name: float("inf") for name in sides}
    for _ in range(args.rounds):
        for name, step in sides.items():
            start = time.perf_counter()
            for batch in batches[1:]:
                step(batch)
            best[name] = min(best[name], time.perf_counter() - start)
    rate = {name: tokens / seconds for name, seconds in best.items()}
    print(f"training: {args.preset} ({sum(p.numel() for p in ours.parameters()) / 1e6:.2f}M parameters), "
          f"{args.steps} batches of <= {args.max_tokens} tokens per side ({tokens} tokens), best of {args.rounds}")
    print("| | transformers | lmforge | ratio |\n|---|---|---|---|")
    print(f"| training tokens/s | {rate['transformers']:,.0f} | {rate['lmforge']:,.0f} | "
          f"{rate['lmforge'] / rate['transformers']:.2f}x |", flush=True)


def decoding(args) -> None:
    import transformers

    opener = gzip.open if args.source.endswith(".gz") else open
    with opener(args.source, "rt", encoding="utf-8") as handle:
        sentences = [line.strip() for line in handle][: args.sentences]
    ours = load_pretrained(args.model).eval()
    tokenizer = load_task_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        from lmforge.convert import convert_to_hf

        convert_to_hf(args.model, Path(tmp) / "hf")
        hf = transformers.MarianMTModel.from_pretrained(Path(tmp) / "hf").eval()
        hf_tok = transformers.AutoTokenizer.from_pretrained(Path(tmp) / "hf")
    config = TranslateConfig(num_beams=4, length_penalty=0.6, batch_size=args.batch_size)
    limit = ours.backbone.max_length() - 1
    order = sorted(range(len(sentences)), key=lambda i: len(tokenizer.encode(sentences[i], add_special_tokens=False)))

    def run_ours() -> list[str]:
        return translate(ours, tokenizer, sentences, config).texts

    def run_hf() -> list[str]:
        texts = [""] * len(sentences)
        for lo in range(0, len(order), args.batch_size):
            chunk = order[lo:lo + args.batch_size]
            batch = hf_tok([sentences[i] for i in chunk], padding=True, return_tensors="pt")
            with torch.no_grad():
                out = hf.generate(**batch, num_beams=4, length_penalty=0.6, do_sample=False,
                                  max_new_tokens=min(batch["input_ids"].shape[1] + 50, limit),
                                  eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id)
            for i, text in zip(chunk, hf_tok.batch_decode(out, skip_special_tokens=True)):
                texts[i] = text.strip()
        return texts

    best = {"lmforge": float("inf"), "transformers": float("inf")}
    outputs = {}
    for _ in range(args.rounds):
        for name, fn in (("lmforge", run_ours), ("transformers", run_hf)):
            start = time.perf_counter()
            outputs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    same = sum(a == b for a, b in zip(outputs["lmforge"], outputs["transformers"]))
    rate = {name: len(sentences) / seconds for name, seconds in best.items()}
    print(f"decoding: {args.model}, {len(sentences)} sentences of {args.source}, beam 4, alpha 0.6, batches of "
          f"{args.batch_size}, best of {args.rounds}")
    print("| | transformers | lmforge | ratio | same outputs |\n|---|---|---|---|---|")
    print(f"| beam-4 sentences/s | {rate['transformers']:.2f} | {rate['lmforge']:.2f} | "
          f"{rate['lmforge'] / rate['transformers']:.2f}x | {same}/{len(sentences)} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", help="parallel data of `lmforge prepare --format parallel` (training bench)")
    parser.add_argument("--preset", default="transformer-small")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per round")
    parser.add_argument("--max-tokens", type=int, default=2048, help="token budget per batch and side")
    parser.add_argument("--model", help="a trained lmforge translation model (decoding bench)")
    parser.add_argument("--source", help="sentences to translate, one per line (plain or .gz)")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per decoding batch")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not args.prepared and not args.model:
        parser.error("give --prepared (training) and/or --model with --source (decoding)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load:.1f} at start")
    if args.prepared:
        training(args)
    if args.model:
        if not args.source:
            parser.error("--model needs --source")
        decoding(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
