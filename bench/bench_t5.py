"""T5 span-corruption training throughput, lmforge vs transformers T5ForConditionalGeneration, same config and
batches, one process (the style of bench_mlm.py).

    python bench/bench_t5.py [--preset t5-mini] [--seq 128] [--batch 16] [--steps 12]
        [--precision fp32|bf16|both] [--threads N]
Batches are built by lmforge's span-corruption code (Raffel et al. §3.1.4: 15% noise, mean span 3) from
random token streams of the raw length that fills `--seq` input tokens (141 raw -> 128 input / 29 target).
Both sides: fused AdamW, warmup steps untimed, timed in alternating rounds. Prints tokens/s (encoder input
tokens) of both and the ratio (target >= 1.5x), by wall clock and by the process's CPU time (on a machine
shared with other jobs the CPU-time ratio is the steadier one: a busy patch stretches wall time, not CPU).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import numpy as np
import torch
from _common import Batch, hf_model, train_step

from lmforge.config import ModelConfig
from lmforge.data.translation import collate_pairs
from lmforge.objectives.span_corruption import corrupt, noise_mask, raw_length

PAD, EOS = 0, 1  # T5's ids


def span_corruption_batch(vocab: int, size: int, seq: int, rng: np.random.Generator) -> Batch:
    """`size` rows of `seq` input tokens exactly: random texts of the raw length, corrupted."""
    raw = raw_length(seq)
    pairs = []
    for _ in range(size):
        tokens = rng.integers(2, vocab - 100, raw)  # below the 100 sentinels
        pairs.append(corrupt(tokens, noise_mask(raw, 0.15, 3.0, rng), vocab - 1, EOS))
    return collate_pairs([s.tolist() for s, _ in pairs], [t.tolist() for _, t in pairs], PAD, PAD)


def main() -> None:
    from lmforge.models import TaskModel
    from lmforge.train.optim import build_optimizer
    from lmforge.train.trainer import autocast

    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="t5-mini")
    parser.add_argument("--seq", type=int, default=128, help="encoder input tokens per row")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the sides")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "both"))
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch's default")
    parser.add_argument("--dropout", type=float, default=None,
                        help="every dropout rate (the t5 recipe pre-trains with 0); default: the preset's 0.1")
    parser.add_argument("--output-std", type=float, default=None,
                        help="redraw the untied output layer N(0, std^2) on both sides; default: T5's init, std 1, "
                             "whose initial softmax underflows into fp32 subnormals (see lmforge.nn.cross_entropy)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rates = {} if args.dropout is None else dict.fromkeys(("dropout", "attention_dropout", "ffn_dropout"), args.dropout)
    cfg = ModelConfig.from_name(args.preset, **rates)
    rng = np.random.default_rng(0)
    data = [span_corruption_batch(cfg.vocab_size, args.batch, args.seq, rng) for _ in range(args.warmup + args.steps)]
    heads = {"lm": {"kind": "seq2seq_lm"}}
    ours = TaskModel(cfg, heads).train()
    if args.output_std is not None:
        if cfg.tie_word_embeddings:
            parser.error("--output-std redraws an untied output layer; this preset ties it")
        torch.nn.init.normal_(ours.heads["lm"].decoder.weight, std=args.output_std)
    hf = hf_model(cfg, heads).train()
    if not cfg.tie_word_embeddings:  # transformers 5 builds every T5 tied; untie it as the preset is
        hf.lm_head.weight = torch.nn.Parameter(hf.lm_head.weight.detach().clone())
    hf.load_state_dict(ours_as_hf(ours))  # same weights (not needed for speed; keeps the losses comparable)
    ours_opt = build_optimizer(ours, 1e-4)
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True)
    precisions = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
    cpu = torch.device("cpu")
    steps: dict[str, Callable[[Batch], None]] = {}
    for precision in precisions:
        context = functools.partial(autocast, cpu, precision)
        steps[f"hf {precision}"] = train_step(lambda b: hf(**b).loss, hf_opt, context)
        steps[f"ours {precision}"] = train_step(lambda b: ours(**b).loss, ours_opt, context)
    wall, cpu = timed_rounds(steps, data, args.steps, args.warmup, args.rounds)
    target = data[0]["labels"].shape[1]
    for precision in precisions:
        for clock, tps in (("wall", wall), ("cpu", cpu)):
            hf_tps, ours_tps = tps[f"hf {precision}"], tps[f"ours {precision}"]
            print(f"{args.preset} span corruption input {args.seq} (raw {raw_length(args.seq)}, target {target}) "
                  f"batch {args.batch} {precision} ({torch.get_num_threads()} threads, {args.steps} timed steps, "
                  f"dropout {cfg.dropout}, output std {args.output_std or 'T5 init'}), "
                  f"{clock} time: transformers {hf_tps:,.0f} tok/s, lmforge {ours_tps:,.0f} tok/s, "
                  f"ratio {ours_tps / hf_tps:.2f}x")


def timed_rounds(steps: dict[str, Callable[[Batch], None]], data: list[Batch], count: int, warmup: int,
                 rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Tokens per second of each side by wall clock and by process CPU time, in alternating rounds over the
    same batches after `warmup` untimed steps (as _common.interleaved_throughput, with a second clock)."""
    for step in steps.values():
        for batch in data[:warmup]:
            step(batch)
    timed = data[warmup:warmup + count]
    wall, cpu = dict.fromkeys(steps, 0.0), dict.fromkeys(steps, 0.0)
    for r in range(rounds):
        part = timed[r * len(timed) // rounds:(r + 1) * len(timed) // rounds]
        for name, step in steps.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for batch in part:
                step(batch)
            wall[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - start_cpu
    tokens = sum(b["input_ids"].numel() for b in timed)
    return {n: tokens / s for n, s in wall.items()}, {n: tokens / s for n, s in cpu.items()}


def ours_as_hf(model) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Our weights under HF's names (lmforge.convert's key map), with the tied copies HF expects."""
    from lmforge.convert.api import _compiled
    from lmforge.convert.mapping import ours_to_hf

    state = {k: v for k, v in model.state_dict().items() if k not in model.tied_keys()}
    hf_state = ours_to_hf(state, _compiled(model, state.keys()), "t5")
    for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        hf_state[alias] = hf_state["shared.weight"]
    if model.config.tie_word_embeddings:
        hf_state["lm_head.weight"] = hf_state["shared.weight"]
    return hf_state


if __name__ == "__main__":
    main()
