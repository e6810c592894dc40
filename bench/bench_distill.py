"""Distillation step throughput: lmforge's `distill` objective (DistilBERT §2: 5 L_ce at T=2 + 2 L_mlm
+ 1 L_cos) against the plain loop with transformers models on the same batches: a no-grad
BertForMaskedLM teacher forward, then a student BertForMaskedLM step with the same three losses
computed as DistilBERT's distiller.py does (full (B, T, V) logits of both, KLDivLoss(batchmean) x T²
on the real tokens, CosineEmbeddingLoss on the last hidden states). Same configs, AdamW on both.

    python bench/bench_distill.py [--preset bert-base-uncased] [--student-layers 6] [--seq 128]
                                  [--batch 64] [--steps 20] [--device auto] [--dtype bfloat16]
CPU smoke run:  python bench/bench_distill.py --device cpu --dtype float32 --preset bert-mini --batch 8 --steps 3
Prints tokens/s of both and the ratio (ours / plain; target >= 1.5x), then a `RESULT` line.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable

import torch
from _common import hf_model, mlm_batch, throughput, train_step
from torch import nn
from torch.nn import functional as F

from lmforge.config import ModelConfig
from lmforge.models import TaskModel
from lmforge.objectives.distill import DistilBert, DistillSettings, init_from_teacher
from lmforge.train.optim import build_optimizer

HEADS = {"mlm": {"kind": "mlm"}}
SETTINGS = DistillSettings(teacher="(in memory)")  # the DistilBERT weights and T = 2


def plain_loss(teacher: nn.Module, student: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The distiller.py step: teacher forward without grad, student forward, the three losses on the
    materialised (B, T, V) logits."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        t = teacher(**inputs, output_hidden_states=True)
    s = student(**inputs, labels=batch["labels"], output_hidden_states=True)
    real = batch["attention_mask"].bool()
    temperature = SETTINGS.temperature
    s_logits, t_logits = s.logits[real], t.logits[real]  # (N, V) each
    ce = F.kl_div(F.log_softmax(s_logits / temperature, -1), F.softmax(t_logits / temperature, -1),
                  reduction="batchmean") * temperature ** 2
    s_last, t_last = s.hidden_states[-1][real], t.hidden_states[-1][real]  # (N, H)
    cos = F.cosine_embedding_loss(s_last, t_last, s_last.new_ones(s_last.shape[0]))
    return SETTINGS.alpha_ce * ce + SETTINGS.alpha_mlm * s.loss + SETTINGS.alpha_cos * cos


def measure_ours(teacher_cfg: ModelConfig, student_cfg: ModelConfig, data: list, args: argparse.Namespace,
                 device: torch.device, autocast: Callable, sync: Callable) -> float:
    """tokens/s of lmforge's DistilBERT step (student from every other teacher layer)."""
    teacher, student = TaskModel(teacher_cfg, HEADS), TaskModel(student_cfg, HEADS)
    init_from_teacher(student, teacher)
    ours = DistilBert(student, teacher, SETTINGS).to(device).train()
    step = train_step(lambda b: ours(b["input_ids"], b["attention_mask"], mlm_labels=b["labels"]).loss,
                      build_optimizer(ours, 1e-4), autocast)
    return throughput(step, data, args.steps, args.warmup, sync)


def measure_plain(teacher_cfg: ModelConfig, student_cfg: ModelConfig, data: list, args: argparse.Namespace,
                  device: torch.device, autocast: Callable, sync: Callable) -> float:
    """tokens/s of the plain loop with transformers models."""
    teacher = hf_model(teacher_cfg, HEADS).to(device).eval().requires_grad_(False)
    student = hf_model(student_cfg, HEADS).to(device).train()
    step = train_step(lambda b: plain_loss(teacher, student, b),
                      torch.optim.AdamW(student.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda")),
                      autocast)
    return throughput(step, data, args.steps, args.warmup, sync)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="bert-base-uncased", help="the teacher's preset")
    parser.add_argument("--student-layers", type=int, default=0, help="0 = half the teacher's (DistilBERT)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    teacher_cfg = ModelConfig.from_name(args.preset)
    student_cfg = teacher_cfg.replace(num_layers=args.student_layers or teacher_cfg.num_layers // 2)
    gen = torch.Generator().manual_seed(0)
    data = [{k: v.to(device) for k, v in mlm_batch(teacher_cfg.vocab_size, args.batch, args.seq, gen).items()}
            for _ in range(args.warmup + args.steps)]
    use_autocast = device.type == "cuda" and args.dtype == "bfloat16"

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_autocast else contextlib.nullcontext()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    peaks = {}
    for name, measure in (("ours", measure_ours), ("plain", measure_plain)):
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the other side's models are gone; each starts from the same memory
            torch.cuda.reset_peak_memory_stats()
        peaks[name + "_tps"] = measure(teacher_cfg, student_cfg, data, args, device, autocast, sync)
        peaks[name + "_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    ours_tps, plain_tps = peaks["ours_tps"], peaks["plain_tps"]

    where = f"{device.type} {args.dtype}" + (f" {torch.get_num_threads()} threads" if device.type == "cpu" else "")
    print(f"{args.preset} -> {student_cfg.num_layers} layers, DistilBERT step, seq {args.seq} batch {args.batch} "
          f"({where}, {args.steps} timed steps): transformers loop {plain_tps:,.0f} tok/s, "
          f"lmforge distill {ours_tps:,.0f} tok/s, ratio {ours_tps / plain_tps:.2f}x"
          + (f"; peak GPU memory {peaks['plain_gib']:.1f} vs {peaks['ours_gib']:.1f} GiB" if device.type == "cuda" else ""))
    print(f"RESULT bench_distill preset={args.preset} student_layers={student_cfg.num_layers} seq={args.seq} "
          f"batch={args.batch} device={device.type} dtype={args.dtype} plain_tok_s={plain_tps:.0f} "
          f"ours_tok_s={ours_tps:.0f} ratio={ours_tps / plain_tps:.3f} plain_peak_gib={peaks['plain_gib']:.2f} "
          f"ours_peak_gib={peaks['ours_gib']:.2f}")


if __name__ == "__main__":
    main()
