"""`lmforge evaluate`: score a fine-tuned run on a labelled split. Stdout carries only the JSON result
(progress and messages go to stderr), which is also written to a file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmforge.cli._task_args import add_task_arguments, bounded, saved_task


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a fine-tuned model on a labelled split, a language "
                                               "model's perplexity on a text file (--task perplexity), or a "
                                               "translation model's BLEU/chrF (--task translation)")
    add_task_arguments(p, required=False)
    p.add_argument("--model", required=True, help="run directory written by `lmforge finetune`; with "
                                                  "--task perplexity a pre-trained CLM/MLM (lmforge or HF) "
                                                  "or biLM (ELMo: forward and backward perplexity)")
    p.add_argument("--data", help="task directory or file (required unless --task perplexity)")
    p.add_argument("--input", help="--task perplexity: UTF-8 text file to score")
    p.add_argument("--stride", type=bounded(int, least=1),
                   help="--task perplexity: tokens between window starts (default: half a window)")
    p.add_argument("--max-tokens", type=bounded(int, least=2),
                   help="--task perplexity: score only the first N tokens of --input")
    p.add_argument("--source", help="--task translation: sentences to translate, one per line (plain or .gz)")
    p.add_argument("--reference", help="--task translation: their reference translations, line-aligned")
    p.add_argument("--hypotheses", help="--task translation: also write the translations here, one per line")
    p.add_argument("--strategy", choices=("beam", "greedy"), default="beam",
                   help="--task translation: decoding (default: %(default)s)")
    p.add_argument("--num-beams", type=bounded(int, least=1), default=4,
                   help="--task translation: beams (default %(default)s, Vaswani et al. §6.1)")
    p.add_argument("--length-penalty", type=float, default=0.6,
                   help="--task translation: alpha of score / length**alpha (default %(default)s, §6.1)")
    p.add_argument("--split", default="dev", help="dev (default), test, train, or a task split such as "
                                                  "dev_mismatched")
    p.add_argument("--out", help="where to write the metrics JSON (default RUN_DIR/eval_<task>_<split>.json)")
    p.add_argument("--max-length", type=bounded(int, least=8), help="default: the run's")
    p.add_argument("--batch-size", type=bounded(int, least=1), default=128, help="default: %(default)s")
    p.add_argument("--limit", type=bounded(int, least=1), help="first N examples only")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.task or "").lower() == "perplexity":
        return run_perplexity(args)
    if (args.task or "").lower() == "translation":
        return run_translation(args)
    if not args.data:
        raise ValueError("--data is required (the labelled data to score)")
    from lmforge import finetune_inputs, gpt_finetuning
    from lmforge.finetune import evaluate_examples, load_finetuned, resolve_device
    from lmforge.finetune_data import saved_split
    from lmforge.tasks.text import load_task_tokenizer

    model, saved = load_finetuned(args.model)
    task = gpt_finetuning.task_for(model, saved_task(args, saved))
    examples = saved_split(task, Path(args.data), args.split, saved)[: args.limit]
    device = resolve_device(args.device)
    tokenizer = load_task_tokenizer(args.model)
    task = finetune_inputs.task_for(model, tokenizer, task)
    _, scores = evaluate_examples(model.to(device), task, examples, tokenizer,
                                  args.max_length or saved.get("max_length", 128), args.batch_size, device,
                                  progress=not args.no_progress)
    result = {"task": task.name, "split": args.split, "examples": len(examples), "metric_scale": "percent",
              **scores}
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(args.out) if args.out else Path(args.model) / f"eval_{task.name}_{args.split}.json"
    out.write_text(text + "\n")
    return 0


def run_perplexity(args: argparse.Namespace) -> int:
    """CLM perplexity over strided windows, MLM pseudo-perplexity, or a biLM's two perplexities
    (lmforge/perplexity.py)."""
    from lmforge.convert import load_pretrained
    from lmforge.finetune import resolve_device
    from lmforge.perplexity import PerplexityConfig, perplexity
    from lmforge.tasks.text import load_task_tokenizer

    if not args.input:
        raise ValueError("--task perplexity needs --input FILE (the text to score)")
    cfg = PerplexityConfig(max_length=args.max_length, stride=args.stride, batch_size=args.batch_size,
                           max_tokens=args.max_tokens, progress=not args.no_progress)
    result = perplexity(load_pretrained(args.model), load_task_tokenizer(args.model), args.input, cfg,
                        resolve_device(args.device))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def run_translation(args: argparse.Namespace) -> int:
    """Beam-decode --source and score it against --reference with sacreBLEU (lmforge/translate.py)."""
    import sys
    import time

    from lmforge.convert import load_pretrained
    from lmforge.data.parallel import read_aligned
    from lmforge.finetune import resolve_device
    from lmforge.tasks.text import load_task_tokenizer
    from lmforge.translate import TranslateConfig, check_translator, score, translate, write_lines

    if not args.source or not args.reference:
        raise ValueError("--task translation needs --source FILE and --reference FILE (line-aligned)")
    sources, references = read_aligned(args.source, args.reference)
    sources, references = sources[: args.limit], references[: args.limit]
    model = load_pretrained(args.model)
    check_translator(model, args.model)
    config = TranslateConfig(strategy=args.strategy, num_beams=args.num_beams, length_penalty=args.length_penalty,
                             batch_size=args.batch_size, progress=not args.no_progress)
    began = time.perf_counter()
    out = translate(model, load_task_tokenizer(args.model), sources, config, resolve_device(args.device))
    seconds = time.perf_counter() - began
    if out.truncated:
        print(f"evaluate: {out.truncated} sources longer than the model's positions were truncated", file=sys.stderr)
    result = {"task": "translation", "source": str(args.source), "reference": str(args.reference),
              "sentences": len(sources), **score(out.texts, references), "strategy": args.strategy,
              "num_beams": args.num_beams if args.strategy == "beam" else 1, "length_penalty": args.length_penalty,
              "truncated_sources": out.truncated, "decode_seconds": round(seconds, 2)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.hypotheses:
        write_lines(args.hypotheses, out.texts)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0
