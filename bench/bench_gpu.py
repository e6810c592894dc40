"""GPU training throughput and MFU, lmforge vs transformers, one process, one GPU: BERT MLM
(vs BertForMaskedLM) or GPT-2 CLM (vs GPT2LMHeadModel).

    python bench/bench_gpu.py [--objective mlm|clm] [--preset P] [--seq T] [--batch B] [--steps 50]
                              [--compile] [--peak-tflops 989]
Defaults: mlm = bert-base-uncased, seq 128, batch 128; clm = gpt2 (124M), seq 1024, batch 16.
Without CUDA it prints a message and exits 0. A CPU smoke run of the same code path:
    python bench/bench_gpu.py --device cpu --dtype float32 --preset bert-tiny --batch 4 --steps 2

MFU uses ONE FLOP definition for both sides (PaLM, Chowdhery et al. 2022, App. B):
    training FLOPs = 6 x (matmul params of the blocks) x tokens + 12 x L x T x H x tokens
                   + 6 x (matmul params of the LM head) x predicted positions
i.e. the head counts only where a token is predicted: the ~15% masked positions for MLM, T - 1 of T
positions for CLM. lmforge runs its head there only; transformers runs it at every position, so its
extra head work earns no MFU (its executed-FLOP utilisation is printed too). Embedding lookups,
norms and softmax are not counted. Each side's result is printed as soon as it is measured, and
once more as a `RESULT` line that bench/gpu_table.py turns into a table.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback

import torch
from _common import IGNORE, clm_batch, hf_model, mlm_batch, throughput, train_step

from lmforge.config import ModelConfig
from lmforge.models import TaskModel
from lmforge.train.optim import build_optimizer

# objective -> default preset/seq/batch, our heads and label keyword, the batch maker
OBJECTIVES = {
    "mlm": dict(preset="bert-base-uncased", seq=128, batch=128, heads={"mlm": {"kind": "mlm"}},
                label_key="mlm_labels", make_batch=mlm_batch, causal=False),
    "clm": dict(preset="gpt2", seq=1024, batch=16, heads={"lm": {"kind": "clm"}},
                label_key="lm_labels", make_batch=clm_batch, causal=True),
}

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


def flops_per_step(cfg: ModelConfig, objective: str, tokens: int, seq: int, head_positions: int) -> float:
    """Training FLOPs of one step (forward + backward = 3 x forward = 6 x params per token).

    blocks per layer: q, k, v, out (4 H^2) + FFN (2 H I); attention scores and weighted sum:
    2 x 2 x T x H per token forward -> 12 L T H per token for training (causal attention counted in
    full, as nanoGPT and PaLM do). Head: the MLM transform (H x E) when there is one, then the tied
    decoder to the vocabulary (E x V), at `head_positions`: the predicted positions for the shared
    definition, every position for what a full-sequence head executes."""
    h, i, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    e = cfg.embedding_size or h
    blocks = layers * (4 * h * h + 2 * h * i) + (e * h if e != h else 0)  # + ALBERT-style projection
    head = (h * e if objective == "mlm" else 0) + e * cfg.vocab_size
    return 6.0 * blocks * tokens + 12.0 * layers * seq * h * tokens + 6.0 * head * head_positions


def predicted_positions(objective: str, labels: torch.Tensor) -> int:
    """Positions with a target: MLM's masked ones; CLM's every position that has a next token."""
    if objective == "clm":
        return int(labels[:, 1:].ne(IGNORE).sum())
    return int(labels.ne(IGNORE).sum())


def keep_loss_eager() -> str:
    """Under torch.compile, run the LM heads' chunked `linear_cross_entropy` eagerly, unless the library
    already does. Dynamo unrolls its Python loop over row chunks into the graph, so compile time grows
    with the chunk count: gpt2-mini, 1 layer, seq 512 x 2 (4 chunks) took 169 s to compile on the
    2-core CPU against 47 s with one chunk and 29 s with the loss left eager; GPT-2 at seq 1024 x 16
    has 49 chunks. The loop is already one fused pass per chunk, so compiling it gains little."""
    import lmforge.heads.lm as lm

    if getattr(lm.linear_cross_entropy, "_torchdynamo_disable", False):
        return ""
    lm.linear_cross_entropy = torch.compiler.disable(lm.linear_cross_entropy)
    return "linear_cross_entropy left eager under compile"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objective", default="mlm", choices=sorted(OBJECTIVES))
    parser.add_argument("--preset", default=None, help="default: bert-base-uncased (mlm), gpt2 (clm)")
    parser.add_argument("--seq", type=int, default=None, help="default: 128 (mlm), 1024 (clm)")
    parser.add_argument("--batch", type=int, default=None, help="default: 128 (mlm), 16 (clm)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (at least 10 with --compile)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                        help="bfloat16 = autocast over fp32 weights (mixed precision training)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense TFLOP/s of the device (default: from the table of known GPUs)")
    args = parser.parse_args()
    spec = OBJECTIVES[args.objective]
    preset = args.preset or spec["preset"]
    seq = args.seq or spec["seq"]
    batch = args.batch or spec["batch"]

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

    cfg = ModelConfig.from_name(preset)
    if cfg.causal != spec["causal"]:
        parser.error(f"--preset {preset} does not fit the {args.objective} objective")
    if seq > cfg.max_position_embeddings:
        parser.error(f"--seq {seq} exceeds the preset's {cfg.max_position_embeddings} positions")
    gen = torch.Generator().manual_seed(0)
    warmup = max(args.warmup, 10) if args.compile else args.warmup
    data = [{k: v.to(device) for k, v in spec["make_batch"](cfg.vocab_size, batch, seq, gen).items()}
            for _ in range(warmup + args.steps)]
    tokens = batch * seq
    predicted = predicted_positions(args.objective, data[0]["labels"])  # the same in every batch
    per_token = flops_per_step(cfg, args.objective, tokens, seq, predicted) / tokens
    hf_executed = flops_per_step(cfg, args.objective, tokens, seq, tokens) / tokens
    mode = "compiled" if args.compile else "eager"
    print(f"{preset} {args.objective.upper()} seq {seq} batch {batch} {args.dtype} {mode} on {name}, "
          f"{args.steps} timed steps after {warmup} warmup", flush=True)
    print(f"  FLOPs/token (head at the {predicted / tokens:.0%} predicted positions only, both sides): "
          f"{per_token / 1e9:.3f} GFLOP; transformers executes {hf_executed / 1e9:.3f} GFLOP (head everywhere)",
          flush=True)

    def autocast() -> contextlib.AbstractContextManager:
        if args.dtype == "bfloat16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results: dict[str, float] = {}

    def run(label: str, build) -> None:
        """Build, time and report one side; a failure is printed and the other side still runs."""
        try:
            model, loss_fn, optimizer, note = build()
            tps = throughput(train_step(loss_fn, optimizer, autocast), data, args.steps, warmup, sync)
        except Exception:  # a benchmark reports what broke and goes on with the other side
            traceback.print_exc()
            print(f"RESULT|{args.objective}|{preset}|{seq}|{batch}|{args.dtype}|{mode}|{label}|failed|||",
                  flush=True)
            return
        results[label] = tps
        memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}" if device.type == "cuda" else ""
        line = f"  {label:>12}: {tps:,.0f} tok/s"
        mfu = executed = ""
        if peak:
            mfu = f"{tps * per_token / (peak * 1e12):.1%}"
            line += f", MFU {mfu}"
            if label == "transformers":
                executed = f"{tps * hf_executed / (peak * 1e12):.1%}"
                line += f" (executed-FLOP utilisation {executed})"
        if device.type == "cuda":
            line += f", peak memory {memory} GiB"
            torch.cuda.reset_peak_memory_stats(device)
        print(line + (f" [{note}]" if note else ""), flush=True)
        print(f"RESULT|{args.objective}|{preset}|{seq}|{batch}|{args.dtype}|{mode}|{label}|{tps:.0f}|{mfu}|"
              f"{executed}|{memory}", flush=True)

    def build_hf():
        hf = hf_model(cfg, spec["heads"]).to(device).train()
        forward = torch.compile(hf) if args.compile else hf
        attn = f"attention: {getattr(hf.config, '_attn_implementation', '?')}"
        return hf, lambda b: forward(**b).loss, torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True), attn

    def build_ours():
        ours = TaskModel(cfg, spec["heads"]).to(device).train()
        note = keep_loss_eager() if args.compile else ""
        forward = torch.compile(ours) if args.compile else ours
        key = spec["label_key"]
        return (ours, lambda b: forward(b["input_ids"], b["attention_mask"], **{key: b["labels"]}).loss,
                build_optimizer(ours, 1e-4), note)  # fused AdamW, as the peer's

    # one model on the device at a time, so neither side's memory or allocator state helps the other
    run("transformers", build_hf)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    run("lmforge", build_ours)
    if len(results) == 2:
        print(f"  ratio lmforge / transformers: {results['lmforge'] / results['transformers']:.2f}x"
              + (f"; peak {peak:g} TFLOP/s" if peak else "; MFU n/a (unknown peak: pass --peak-tflops)"))
    return 0 if len(results) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
