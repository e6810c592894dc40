"""CLM training throughput, lmforge vs transformers GPT2LMHeadModel, same config/batch, one process.

    python bench/bench_clm.py [--steps 20] [--batch 32] [--seq 128] [--preset gpt2-mini]
        [--precision fp32|bf16|both] [--threads N]
Prints tokens/s of both and the ratio (ours / HF; target >= 1.3x on CPU in fp32, >= 2x in bf16); with
`--precision both` also lmforge bf16 / fp32 (target >= 1.5x on a CPU with AVX512-BF16 or AMX).
"""

from _common import clm_batch, compare_training

if __name__ == "__main__":
    compare_training("CLM", "gpt2-mini", {"lm": {"kind": "clm"}}, "lm_labels", clm_batch, need_causal=True)
