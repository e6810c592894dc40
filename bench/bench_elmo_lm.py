"""ELMo at CPU size, issue 14's measurement in one command (Peters et al. 2018 §3, §5.1):

1. a word vocabulary of WikiText-2 (`lmforge tokenizer train --kind word`: every word of its 33,278, so
   nothing but WikiText's own <unk> is unknown) and the corpus prepared one line a document;
2. the char-CNN ELMo (`lmforge pretrain --config elmo`) and the word-level LSTM LM of the same size
   (the same command with `model.preset=elmo-cpu-word`: the same biLSTM, softmax, objective and data,
   a word embedding table as token layer), each for the same wall-clock budget (--minutes); held-out
   evaluation only at the end, so every minute of the budget trains;
3. forward / backward perplexity of both on wiki.test.tokens (`lmforge evaluate --task perplexity`,
   windows of the recipe's 64 tokens every 32);
4. what pre-training buys under frozen features (§3.3): CoNLL-2003 eng.testb entity F1 (epoch chosen on
   eng.testa) and SST-2 dev accuracy of the trained char ELMo vs the same ELMo randomly initialised,
   each `lmforge finetune` with the model's defaults (feature-based: frozen biLM, scalar mix, task
   biLSTM, output layer); `--task-rnn 0` gives the heads no biLSTM (a linear layer over the mix);
5. the same on few labels: SST-2 on its first --few-labels training sentences (8,000, the slice of the T5
   comparison in bench_pretrained_vs_random.py), fine-tuned with --seeds, mean dev accuracy reported.

Every step runs the CLI exactly as a user would (a subprocess per command, this checkout first on the
path); the commands are printed and recorded.

    python bench/bench_elmo_lm.py --minutes 30          # the measurement (2-2.5 hours on 2 idle cores)
    python bench/bench_elmo_lm.py --quick               # every step at toy scale (a few minutes)
    python bench/bench_elmo_lm.py --minutes 30 --work W --reuse   # redo only the runs deleted from W
    python bench/bench_elmo_lm.py --models char --work W --reuse --task-rnn 0 --tasks-dir linear  # one more head
    python bench/bench_elmo_lm.py --work W --reuse --tasks sst2_few   # the biLMs of W, one task comparison
Results: bench/results/elmo_lm[_quick].json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DATA = Path(os.environ.get("LMFORGE_DATA", ROOT.parent / "shared" / "data"))
WIKI = DATA / "wikitext-2"
MODELS = {"char": ("ELMo (char CNN)", "elmo-cpu"), "word": ("word-level LSTM LM", "elmo-cpu-word")}
WORD_VOCAB = 33300  # room for all 33,277 words of wiki.train.tokens and the 5 specials
TASKS = ("ner", "sst2", "sst2_few")  # CoNLL-2003, SST-2, SST-2 on --few-labels sentences
QUICK = {"minutes": 0.5, "max_tokens": 3000, "limit": 300, "eval_limit": 200, "epochs": 1}


def lmforge(*args: object) -> tuple[str, float]:
    """Run `python -m lmforge ARGS` with this checkout first on the path; stdout and seconds taken."""
    args = tuple(map(str, args))
    print("$ lmforge " + " ".join(args), file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lmforge", *args], env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"lmforge {' '.join(args)} failed with exit status {done.returncode}")
    return done.stdout, time.perf_counter() - start


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def pretrain_and_score(name: str, work: Path, args: argparse.Namespace, window: int) -> dict:
    """One biLM: pretrain for the budget, then its perplexity on wiki.test.tokens."""
    run = work / name
    overrides = [f"run_dir={run}", f"data.prepared_dir={work / 'data'}", f"model.preset={MODELS[name][1]}",
                 f"schedule.time_budget_minutes={args.minutes}", "eval.every_steps=1000000000",
                 "checkpoint.every_steps=1000000000", "system.progress_bar=false"]
    if args.quick:
        overrides += ["eval.max_batches=2", "system.threads=1"]
    reused = args.reuse and (run / "final").is_dir()
    seconds = None if reused else lmforge("pretrain", "--config", "elmo", *overrides)[1]
    history = records(run)
    trained = [r for r in history if "tokens" in r][-1]  # the last training record (the final one has eval too)
    valid = [r for r in history if "eval_loss" in r][-1]
    limit = ("--max-tokens", args.max_tokens) if args.max_tokens else ()
    test = cached(run / "test_perplexity.json", reused, lambda: lmforge(
        "evaluate", "--task", "perplexity", "--model", run / "final", "--input", WIKI / "wiki.test.tokens",
        "--max-length", window, "--stride", window // 2, "--no-progress", *limit)[0])
    return {"preset": MODELS[name][1], "steps": trained["step"], "tokens_trained": trained["tokens"],
            "train_seconds": trained["elapsed_s"], "command_seconds": seconds, "reused": reused,
            "valid_forward_perplexity": valid["eval_forward_perplexity"],
            "valid_backward_perplexity": valid["eval_backward_perplexity"], "test": test}


def cached(path: Path, reuse: bool, score: Callable[[], str]) -> dict:
    """A score's JSON, kept beside its run: read back when the run is reused, else computed and written."""
    if not (reuse and path.is_file()):
        path.write_text(score())
    return json.loads(path.read_text())


def task_scores(task: str, model: Path, out: Path, args: argparse.Namespace, extra: tuple = ()) -> dict:
    """`lmforge finetune` with the model's defaults (and `extra` flags); CoNLL is then scored on eng.testb."""
    data = DATA / ("conll2003" if task == "ner" else "glue/SST-2")
    quick = (("--limit", args.limit, "--eval-limit", args.eval_limit, "--epochs", args.epochs)
             if args.quick else ())
    head = ("--task-rnn", args.task_rnn) if args.task_rnn is not None else ()
    reused = args.reuse and (out / "summary.json").is_file()
    seconds = None if reused else lmforge("finetune", "--task", task, "--model", model, "--data", data, "--out",
                                          out, "--no-progress", *quick, *head, *extra)[1]
    summary = json.loads((out / "summary.json").read_text())
    result = {"dev": summary["selected"][summary["main_metric"]], "selected_step": summary["selected"]["step"],
              "steps": summary["steps"], "seconds": seconds, "train_examples": summary["train_examples"],
              "reused": reused}
    if task == "ner":
        result["test"] = cached(out / "test_scores.json", reused, lambda: lmforge(
            "evaluate", "--model", out, "--data", data, "--split", "test", "--no-progress",
            *(("--limit", args.eval_limit) if args.quick else ()))[0])["f1"]
    return result


def few_label_scores(model: Path, out: Path, args: argparse.Namespace) -> dict:
    """SST-2 on its first --few-labels sentences, once per seed; dev accuracy of each and their mean."""
    limit = min(args.few_labels, args.limit) if args.quick else args.few_labels
    runs = [task_scores("sst2", model, Path(f"{out}-seed{seed}"), args, ("--limit", limit, "--seed", seed))
            for seed in args.seeds]
    return {"runs": runs, "dev": sum(run["dev"] for run in runs) / len(runs), "train_examples": limit,
            "seeds": args.seeds}


def tables(record: dict) -> str:
    lines = ["| biLM | preset | steps | tokens trained | test forward ppl | test backward ppl | test ppl "
             "(mean NLL) | valid forward / backward ppl |", "|---|---|---|---|---|---|---|---|"]
    for name, result in record["lm"].items():
        test = result["test"]
        lines.append(f"| {MODELS[name][0]} | {result['preset']} | {result['steps']} | {result['tokens_trained']:,} | "
                     f"{test['forward_perplexity']:.1f} | {test['backward_perplexity']:.1f} | "
                     f"{test['perplexity']:.1f} | {result['valid_forward_perplexity']:.1f} / "
                     f"{result['valid_backward_perplexity']:.1f} |")
    lines += ["", "| task (frozen features) | metric | trained ELMo | random-init ELMo |", "|---|---|---|---|"]
    tasks = record["tasks"]
    if "ner" in tasks:
        lines.append(f"| CoNLL-2003 | eng.testb entity F1 (epoch on eng.testa) | {tasks['ner']['trained']['test']:.1f} "
                     f"| {tasks['ner']['random']['test']:.1f} |")
    if "sst2" in tasks:
        lines.append(f"| SST-2 | dev accuracy | {tasks['sst2']['trained']['dev']:.1f} | "
                     f"{tasks['sst2']['random']['dev']:.1f} |")
    if "sst2_few" in tasks:
        few = record["tasks"]["sst2_few"]
        lines.append(f"| SST-2, first {few['trained']['train_examples']:,} sentences | dev accuracy, mean of seeds "
                     f"{', '.join(map(str, few['trained']['seeds']))} | {few['trained']['dev']:.1f} | "
                     f"{few['random']['dev']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, help="pre-training budget of each biLM (default: the recipe's 30)")
    parser.add_argument("--quick", action="store_true", help="toy scale: 0.5-minute budgets on one thread, the "
                        "first 3,000 test tokens, 300 task examples, 1 epoch")
    parser.add_argument("--work", type=Path, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="result JSON (default bench/results/elmo_lm[_quick].json)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of the biLMs to train and score "
                        "(char, word; default both); the task runs need char")
    parser.add_argument("--task-rnn", type=int, help="the heads' biLSTM layers (finetune --task-rnn; default: "
                        "the model's)")
    parser.add_argument("--tasks-dir", default="", help="prefix of the task runs' folders under --work, to "
                        "keep the runs of another head beside them")
    parser.add_argument("--tasks", type=lambda text: text.split(","), default=list(TASKS),
                        help=f"comma list of the task comparisons to run (default all: {', '.join(TASKS)})")
    parser.add_argument("--few-labels", type=int, default=8000, help="SST-2 training sentences of the few-label "
                        "comparison (0: skip it)")
    parser.add_argument("--seeds", type=lambda text: [int(seed) for seed in text.split(",")], default=[0, 1],
                        help="fine-tuning seeds of the few-label comparison (comma list)")
    parser.add_argument("--reuse", action="store_true", help="with --work: a run already finished there (a biLM's "
                        "final/, a task's summary.json) is reused with its scores; delete a run to redo it")
    args = parser.parse_args()
    if set(args.tasks) - set(TASKS):
        raise SystemExit(f"--tasks: a comma list of {', '.join(TASKS)}, got {','.join(args.tasks)!r}")
    from bench_pretrained_vs_random import random_twin

    from lmforge.train.config import load_config

    recipe = load_config("elmo", [])
    args.minutes = args.minutes or (QUICK["minutes"] if args.quick else recipe.schedule.time_budget_minutes)
    for key in ("max_tokens", "limit", "eval_limit", "epochs"):
        setattr(args, key, QUICK[key] if args.quick else None)
    if not (WIKI / "wiki.train.tokens").is_file():
        raise SystemExit(f"{WIKI}: WikiText-2 not found (set LMFORGE_DATA)")
    started, load_before = time.time(), os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        if not (args.reuse and (work / "data").is_dir()):
            lmforge("tokenizer", "train", "--kind", "word", "--no-lowercase", "--vocab-size", WORD_VOCAB,
                    "--corpus", WIKI / "wiki.train.tokens", "--out", work / "tok")
            lmforge("prepare", "--tokenizer", work / "tok", "--input", WIKI / "wiki.train.tokens", "--valid",
                    WIKI / "wiki.valid.tokens", "--format", "lines", "--workers", 2, "--out", work / "data")
        names = [name.strip() for name in args.models.split(",") if name.strip()]
        if "char" not in names or set(names) - set(MODELS):
            raise SystemExit(f"--models: a comma list of {', '.join(MODELS)} with char in it, got {args.models!r}")
        lm = {name: pretrain_and_score(name, work, args, recipe.objective.max_seq_len) for name in names}
        random = work / "random" if args.reuse and (work / "random").is_dir() else random_twin(
            work / "char" / "final", work / "random", 0)
        elmo = {"trained": work / "char" / "final", "random": random}
        tasks = {task: {side: task_scores(task, path, work / f"{args.tasks_dir}{task}-{side}", args)
                        for side, path in elmo.items()}
                 for task in ("ner", "sst2") if task in args.tasks}
        if args.few_labels and "sst2_few" in args.tasks:
            tasks["sst2_few"] = {side: few_label_scores(path, work / f"{args.tasks_dir}sst2-{args.few_labels}-{side}",
                                                        args) for side, path in elmo.items()}
    record = {"minutes_per_model": args.minutes, "quick": args.quick, "lm": lm, "task_rnn": args.task_rnn, "tasks": tasks,
              "wall_seconds": time.time() - started,
              "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                       text=True).stdout.strip(),
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "load_average_before": load_before, "load_average_after": os.getloadavg()}}
    out = args.out or ROOT / "bench" / "results" / f"elmo_lm{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(tables(record))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
