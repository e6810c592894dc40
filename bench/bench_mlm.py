"""MLM training throughput, lmforge vs transformers BertForMaskedLM, same config/batch, one process.

    python bench/bench_mlm.py [--steps 20] [--batch 32] [--seq 128] [--preset bert-mini]
        [--precision fp32|bf16|both] [--threads N]
Prints tokens/s of both and the ratio (ours / HF; target >= 3x on CPU, in fp32 and in bf16); with
`--precision both` also lmforge bf16 / fp32 (target >= 1.5x on a CPU with AVX512-BF16 or AMX).
"""

from _common import compare_training, mlm_batch

if __name__ == "__main__":
    compare_training("MLM", "bert-mini", {"mlm": {"kind": "mlm"}}, "mlm_labels", mlm_batch, need_causal=False)
