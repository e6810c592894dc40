"""`lmforge finetune`: a pre-trained model + a task head, trained on a benchmark or the user's data.

Settings come from one typed config (lmforge.finetune.FinetuneConfig), filled as `pretrain`'s is: an
optional YAML file (`--config`), then `key=value` overrides, then the flags given; a misspelt key is
an error. A flag left out takes the config's value, and a hyper-parameter left out everywhere comes
from the task type's recipe."""

from __future__ import annotations

import argparse
import json

from lmforge.cli._task_args import _FIELDS as OPTION_FIELDS
from lmforge.cli._task_args import add_task_arguments, bounded

# flag -> FinetuneConfig field, where the names differ
RENAMED = {"no_progress": "progress"}


def register(subparsers: argparse._SubParsersAction) -> None:
    from lmforge.finetune_defaults import defaults_help

    p = subparsers.add_parser(
        "finetune", help="fine-tune a pre-trained model on a task",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Values not given come from --config/key=value, else from the task type's recipe (BERT §4 / "
                    "A.3 grids, chosen by measurement: lmforge/finetune_defaults.py). The best dev checkpoint is "
                    "kept unless --no-select-best. Several processes: `torchrun --nproc_per_node N -m lmforge "
                    "finetune ...` (DDP; --batch-size stays the global batch).",
        epilog=defaults_help())
    add_task_arguments(p, required=False)
    p._option_string_actions["--task"].help = "the task (or `task:` in --config)"
    p.add_argument("--config", metavar="FILE", help="YAML file with FinetuneConfig keys (task, model, lr, options.*, ...)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. lr=3e-5 options.doc_stride=64")
    p.add_argument("--print-config", action="store_true", help="print the merged configuration and exit")
    p.add_argument("--model", help="pre-trained model directory (lmforge or HF)")
    p.add_argument("--data", help="task directory or file (one file: --dev-fraction is held out)")
    p.add_argument("--out", help="run directory to write")
    p.add_argument("--lr", type=bounded(float, above=0), help="peak learning rate (default: by task type)")
    p.add_argument("--batch-size", type=bounded(int, least=1),
                   help="examples per optimizer step over all processes (default: by task type)")
    p.add_argument("--grad-accum", type=bounded(int, least=1),
                   help="micro-batches per step: each is batch-size / (grad-accum x processes) (default: 1)")
    p.add_argument("--epochs", type=bounded(float, above=0), help="default: by task type")
    p.add_argument("--warmup-ratio", type=bounded(float, least=0, below=1),
                   help="share of steps with linear warmup (default: 0.1)")
    p.add_argument("--max-length", type=bounded(int, least=8),
                   help="max tokens per input (task default: 128, CoNLL 256, SQuAD 384)")
    p.add_argument("--weight-decay", type=bounded(float, least=0), help="default: 0.01")
    p.add_argument("--max-grad-norm", type=bounded(float, least=0), help="gradient clipping, 0: off (default: 1.0)")
    p.add_argument("--seed", type=int, help="default: 42")
    p.add_argument("--eval-every", type=bounded(int, least=0),
                   help="steps between dev evaluations, 0: once an epoch (default: --evals-per-epoch)")
    p.add_argument("--evals-per-epoch", type=bounded(int, least=1),
                   help="dev evaluations per epoch (default: by task type)")
    p.add_argument("--select-best", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the best dev checkpoint (default) or, with --no-select-best, the final one")
    p.add_argument("--patience", type=bounded(int, least=0),
                   help="early stopping: stop after this many dev evaluations without a new best (default: 0, off)")
    p.add_argument("--dropout", type=bounded(float, least=0, below=1), metavar="P",
                   help="set every dropout rate of the model (residual, attention, FFN inner, classifier) to P; "
                        "T5 v1.1 pre-trains without dropout and fine-tunes with 0.1 (default: the model's own)")
    p.add_argument("--dev-fraction", type=bounded(float, least=0, below=1),
                   help="share of a single --data file held out as dev, seeded; 0: no dev (default: 0.1)")
    p.add_argument("--eval-batch-size", type=bounded(int, least=1), help="default: 128")
    p.add_argument("--limit", type=bounded(int, least=1), help="use the first N training examples only")
    p.add_argument("--eval-limit", type=bounded(int, least=1), help="use the first N dev examples only")
    p.add_argument("--device", help="auto (CUDA if present; default), cpu, cuda, cuda:1, ...")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (default: on CUDA)")
    p.add_argument("--update-backbone", action="store_true", default=None,
                   help="train the pre-trained weights too where the model is used frozen by default (ELMo: "
                        "Peters et al. 2018 §3.3 freezes the biLM and learns only the scalar mix and the head)")
    p.add_argument("--task-rnn", type=bounded(int, least=0), metavar="LAYERS",
                   help="biLSTM layers between the features and the task's output layer, the task RNN of Peters "
                        "et al. 2018 §3.3; 0: a linear head (default: the model's; ELMo 1, others 0)")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an earlier fine-tuning run in --out")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue the interrupted run in --out from its last checkpoint (same arguments)")
    p.add_argument("--no-progress", action="store_false", default=None, help="no progress bars")
    distill = p.add_argument_group(
        "task-specific distillation", "the student (--model's architecture, optionally cut to --student-layers, "
        "starting from the teacher's weights) also learns from a fine-tuned teacher: loss = alpha-ce x T² "
        "KL(teacher/T || student/T) + alpha-task x its own loss [+ alpha-layers x TinyBERT's layer losses] "
        "(Hinton et al. 2015 §2; DistilBERT §3, §4.2; TinyBERT §3.1); defaults measured in lmforge/task_distill.py")
    distill.add_argument("--teacher", metavar="RUN_DIR",
                         help="a finished fine-tuning run of the same task and labels (same tokenizer); "
                              "read, frozen, never saved")
    distill.add_argument("--distill-temperature", type=bounded(float, above=0), metavar="T",
                         help="T (default: 2.0, DistilBERT's)")
    distill.add_argument("--distill-alpha-ce", type=bounded(float, least=0), metavar="W",
                         help="weight of the teacher's soft targets (default: 0.5)")
    distill.add_argument("--distill-alpha-task", type=bounded(float, least=0), metavar="W",
                         help="weight of the gold labels (default: 0.5)")
    distill.add_argument("--distill-alpha-layers", type=bounded(float, least=0), metavar="W",
                         help="weight of TinyBERT's layer losses: attention scores and hidden states through the "
                              "uniform layer map, MSE (Jiao et al. 2020 §3.1; default: 0)")
    distill.add_argument("--student-init", choices=("teacher", "model"),
                         help="the student's starting weights: the teacher's (one layer in N/K, pooler and task "
                              "head; default with --teacher) or --model's with a new head")
    distill.add_argument("--student-layers", type=bounded(int, least=1), metavar="K",
                         help="keep K of --model's N layers, one in N/K from the bottom (DistilBERT §3); "
                              "K divides N (default: all), with or without --teacher")
    p.set_defaults(func=run)


def given_values(args: argparse.Namespace) -> dict:
    """The flags on the command line, as FinetuneConfig keys (options.* for the data-reading ones)."""
    from lmforge.finetune import FinetuneConfig

    fields = set(FinetuneConfig.__dataclass_fields__)
    values = {RENAMED.get(k, k): v for k, v in vars(args).items()
              if v is not None and RENAMED.get(k, k) in fields and k not in ("options",)}
    options = {name: getattr(args, name) for name in OPTION_FIELDS if getattr(args, name, None) is not None}
    return {**values, **({"options": options} if options else {})}


def run(args: argparse.Namespace) -> int:
    from lmforge.finetune import FinetuneConfig, finetune
    from lmforge.train.config import load_structured

    cfg = load_structured(FinetuneConfig, args.config, args.overrides, given_values(args))
    if args.print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(OmegaConf.structured(cfg)), end="")
        return 0
    summary = finetune(cfg)
    if summary:  # rank 0 under torchrun
        print(json.dumps(summary, indent=2))
    return 0
