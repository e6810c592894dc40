"""GPU MLM training throughput and MFU, lmforge vs transformers BertForMaskedLM, one process, one GPU.

    python bench/bench_gpu.py [--preset bert-base-uncased] [--seq 128] [--batch 128] [--steps 50]
                              [--compile] [--peak-tflops 989]
Without CUDA it prints a message and exits 0. A CPU smoke run of the same code path:
    python bench/bench_gpu.py --device cpu --dtype float32 --preset bert-tiny --batch 4 --steps 2

MFU uses ONE FLOP definition for both sides (PaLM, Chowdhery et al. 2022, App. B):
    training FLOPs = 6 x (matmul params of the encoder) x tokens + 12 x L x T x H x tokens
                   + 6 x (matmul params of the MLM head) x predicted positions
i.e. the MLM head counts only at the ~15% masked positions, the work an MLM step needs. lmforge runs
the head there only; transformers runs it at every position, so its extra head work earns no MFU
(its executed-FLOP utilisation is printed too). Embedding lookups, norms and softmax are not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch
from _common import hf_model, mlm_batch, throughput, train_step

from lmforge.config import ModelConfig
from lmforge.models import TaskModel
from lmforge.train.optim import build_optimizer

HEADS = {"mlm": {"kind": "mlm"}}

# dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets; first match wins
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
)


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def flops_per_step(cfg: ModelConfig, tokens: int, predicted: int, seq: int, head_positions: int) -> float:
    """Training FLOPs of one step (forward + backward = 3 x forward = 6 x params per token).

    encoder per layer: q, k, v, out (4 H^2) + FFN (2 H I); attention scores and weighted sum:
    2 x 2 x T x H per token forward -> 12 L T H per token for training. MLM head: transform (H^2,
    or E x H with factorised embeddings) + tied decoder to the vocabulary (E x V), at `head_positions`.
    `predicted` is the number of masked positions; pass head_positions=predicted for the shared
    definition, head_positions=tokens for what a full-sequence head executes."""
    h, i, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    e = cfg.embedding_size or h
    encoder = layers * (4 * h * h + 2 * h * i) + (e * h if e != h else 0)  # + ALBERT-style projection
    head = h * e + e * cfg.vocab_size
    return 6.0 * encoder * tokens + 12.0 * layers * seq * h * tokens + 6.0 * head * head_positions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="bert-base-uncased")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (more with --compile)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                        help="bfloat16 = autocast over fp32 weights (mixed precision training)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense TFLOP/s of the device (default: from the table of known GPUs)")
    args = parser.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: CUDA is not available; skipping (use --device cpu --dtype float32 for a smoke run)")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # both sides; matters only for fp32 runs
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = args.peak_tflops if args.peak_tflops is not None else (peak_tflops(name) if device.type == "cuda" else None)
    if args.dtype == "float32" and args.peak_tflops is None:
        peak = None  # the table holds bf16 peaks; give --peak-tflops for an fp32/TF32 MFU

    cfg = ModelConfig.from_name(args.preset)
    if args.seq > cfg.max_position_embeddings:
        parser.error(f"--seq {args.seq} exceeds the preset's {cfg.max_position_embeddings} positions")
    gen = torch.Generator().manual_seed(0)
    warmup = max(args.warmup, 10) if args.compile else args.warmup
    data = [{k: v.to(device) for k, v in mlm_batch(cfg.vocab_size, args.batch, args.seq, gen).items()}
            for _ in range(warmup + args.steps)]
    tokens = args.batch * args.seq
    predicted = int(data[0]["labels"].ne(-100).sum())  # the same in every batch (fixed count per row)

    def autocast() -> contextlib.AbstractContextManager:
        if args.dtype == "bfloat16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fused = True  # both sides use the fused AdamW kernel (CPU and CUDA), as HF Trainer does on torch >= 2.8

    def run(label: str, model: torch.nn.Module, loss_fn, optimizer) -> float:
        step = train_step(loss_fn, optimizer, autocast)
        tps = throughput(step, data, args.steps, warmup, sync)
        if device.type == "cuda":
            print(f"  {label}: peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
            torch.cuda.reset_peak_memory_stats(device)
        return tps

    # one model on the device at a time, so neither side's memory or allocator state helps the other
    hf = hf_model(cfg, HEADS).to(device).train()
    attn = getattr(hf.config, "_attn_implementation", "?")
    hf_forward = torch.compile(hf) if args.compile else hf
    hf_tps = run("transformers", hf, lambda b: hf_forward(**b).loss,
                 torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=fused))
    hf = hf_forward = None  # release before our model is built
    if device.type == "cuda":
        torch.cuda.empty_cache()

    ours = TaskModel(cfg, HEADS).to(device).train()
    ours_forward = torch.compile(ours) if args.compile else ours
    ours_tps = run("lmforge", ours,
                   lambda b: ours_forward(b["input_ids"], b["attention_mask"], mlm_labels=b["labels"]).loss,
                   build_optimizer(ours, 1e-4))  # fused AdamW on CUDA

    per_token = flops_per_step(cfg, tokens, predicted, args.seq, predicted) / tokens
    hf_executed = flops_per_step(cfg, tokens, predicted, args.seq, tokens) / tokens
    print(f"{args.preset} MLM seq {args.seq} batch {args.batch} {args.dtype}"
          f"{' compiled' if args.compile else ''} on {name}, {args.steps} timed steps after {warmup} warmup "
          f"(transformers attention: {attn})")
    print(f"  FLOPs/token (MLM head at the {predicted / tokens:.0%} masked positions only, both sides): "
          f"{per_token / 1e9:.3f} GFLOP; transformers executes {hf_executed / 1e9:.3f} GFLOP (head everywhere)")
    for label, tps in (("transformers", hf_tps), ("lmforge", ours_tps)):
        line = f"  {label:>12}: {tps:,.0f} tok/s"
        if peak:
            line += f", MFU {tps * per_token / (peak * 1e12):.1%}"
            if label == "transformers":
                line += f" (executed-FLOP utilisation {tps * hf_executed / (peak * 1e12):.1%})"
        print(line)
    print(f"  ratio lmforge / transformers: {ours_tps / hf_tps:.2f}x"
          + (f"; peak {peak:g} TFLOP/s" if peak else "; MFU n/a (unknown peak: pass --peak-tflops)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
