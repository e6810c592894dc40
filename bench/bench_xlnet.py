"""XLNet permutation-LM pre-training throughput, lmforge vs transformers, same config, same text, one process.

    python bench/bench_xlnet.py [--steps 8] [--batch 16] [--seq 128] [--preset xlnet-cpu] [--threads N]

Each side turns the same token rows into a batch with its own pipeline and trains on it; the batch
building is timed with the step. transformers: `DataCollatorForPermutationLanguageModeling`
(plm_probability 1/6, max_span_length 5: the paper's K = 6 and 5-token spans) feeding
`XLNetLMHeadModel` (its collator predicts with target_mapping = eye(T), so the query stream runs at
every position and logits are made for all of them). lmforge: `objective.kind=plm` (A <sep> B <sep>
<cls> rows, num_predict = T / 6 targets, the query stream at those rows only) feeding the TaskModel
with the `plm` head. Sides alternate in rounds over the same rows, so a busy machine slows both alike.
Prints tokens/s of both and the ratio (ours / HF; target >= 1.5x).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def hf_tokenizer(vocab_size: int):
    """A word-level tokenizer with XLNet's special tokens: the collator only reads the special ids."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from lmforge.tokenizers.families import template

    specials = template("xlnet").specials
    vocab = {t: i for i, t in enumerate([*specials, *(f"w{i}" for i in range(vocab_size - len(specials)))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.add_special_tokens(list(specials))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   cls_token="<cls>", sep_token="<sep>", pad_token="<pad>", mask_token="<mask>")


def main() -> None:
    from _common import hf_model
    from transformers import DataCollatorForPermutationLanguageModeling

    from lmforge.models import TaskModel
    from lmforge.objectives.plm import PermutationLM, PLMSettings, build_example
    from lmforge.tokenizers import special_tokens
    from lmforge.train.optim import build_optimizer
    from lmforge.xlnet_config import XLNetConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="xlnet-cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128, help="even (HF's collator needs it)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.seq % 2:
        parser.error("--seq must be even: transformers' PLM collator refuses odd lengths")
    cfg = XLNetConfig.from_name(args.preset, dropout=0.1, attention_dropout=0.1)
    tok = hf_tokenizer(cfg.vocab_size)
    special = special_tokens(tok.backend_tokenizer)
    rng = np.random.default_rng(0)
    first = len(special.all_ids)
    text = args.seq - 3  # A <sep> B <sep> <cls>
    rows = []
    for _ in range((args.warmup + args.steps) * args.batch):
        ids = rng.integers(first, cfg.vocab_size, text)
        starts = rng.random(text) < 0.7  # ~1.4 pieces per word
        starts[0] = True
        rows.append((ids[: text // 2], ids[text // 2:], starts[: text // 2], starts[text // 2:]))
    batches = [rows[i * args.batch:(i + 1) * args.batch] for i in range(args.warmup + args.steps)]

    collator = DataCollatorForPermutationLanguageModeling(tokenizer=tok, plm_probability=1 / 6, max_span_length=5)
    objective = PermutationLM(args.seq, PLMSettings())
    settings = objective.settings

    def hf_batch(batch):
        return collator([[*a, special.sep, *b, special.sep, special.cls] for a, b, _, _ in batch])

    def ours_batch(batch):
        examples = [build_example([a, b], [wa, wb], special, settings, rng) for a, b, wa, wb in batch]
        return objective.collate(examples, special)

    torch.manual_seed(0)
    heads = {"plm": {"kind": "plm"}}
    ours = TaskModel(cfg, heads).train()
    ours_opt = build_optimizer(ours, 1e-4)
    hf = hf_model(cfg, heads).train()
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True)

    def step(model, optimizer, make):
        def run(batch):
            loss = model(**make(batch)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return run

    sides = {"hf": step(hf, hf_opt, hf_batch), "ours": step(ours, ours_opt, ours_batch)}
    for run in sides.values():
        for batch in batches[: args.warmup]:
            run(batch)
    timed = batches[args.warmup:]
    seconds = dict.fromkeys(sides, 0.0)
    for r in range(args.rounds):
        part = timed[r * len(timed) // args.rounds:(r + 1) * len(timed) // args.rounds]
        for name, run in sides.items():
            start = time.perf_counter()
            for batch in part:
                run(batch)
            seconds[name] += time.perf_counter() - start
    tokens = len(timed) * args.batch * args.seq
    hf_tps, ours_tps = tokens / seconds["hf"], tokens / seconds["ours"]
    load = " ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
    print(f"{args.preset} PLM seq {args.seq} batch {args.batch} fp32 ({torch.get_num_threads()} threads, "
          f"{args.steps} timed steps, load average {load}): transformers {hf_tps:,.0f} tok/s, "
          f"lmforge {ours_tps:,.0f} tok/s, ratio {ours_tps / hf_tps:.2f}x")


if __name__ == "__main__":
    main()
