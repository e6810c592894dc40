"""Fine-tuning hyper-parameters by task type, used when the command line leaves them out.

The values come from the grids of BERT (Devlin et al. 2019, §4.1-4.4 and Appendix A.3: lr in
{5e-5, 4e-5, 3e-5, 2e-5}, batch in {16, 32}, 2-4 epochs, 10% linear warmup; SQuAD 2-3 epochs at
5e-5, batch 32; SWAG 3 epochs at 2e-5, batch 16) and CoNLL-2003 practice (more epochs than GLUE, the
epoch chosen on eng.testa), narrowed by runs of all-MiniLM-L6-v2 on the shared data. Each recipe's
`evidence` names the run that chose it; `python bench/bench_defaults.py --table` prints the scores the
defaults give, measured with the CLI exactly as a user runs it.

A task type, not a dataset, picks the recipe: every task of one type (all single-sentence
classifiers, all sentence-pair classifiers, ...) gets the same values, data we have or not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

TASK_TYPES = ("classification", "pair_classification", "regression", "tagging", "qa", "multiple_choice",
              "text_to_text")


@dataclass(frozen=True)
class Recipe:
    """What `lmforge finetune` uses for a task type when a flag is not given."""

    lr: float
    batch_size: int
    epochs: float
    warmup_ratio: float = 0.1
    evals_per_epoch: int = 1  # dev scored this many times an epoch and after the last step
    evidence: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    # SST-2 (67k sentences): final models at the end of a run scored 89.2-89.7 for five settings of the
    # BERT grid; lr 5e-5, batch 16, 2 epochs with dev scored five times an epoch and the best kept: 90.3.
    "classification": Recipe(5e-5, 16, 2.0, evals_per_epoch=5,
                             evidence="SST-2: 90.3 with dev scored 5x/epoch vs 89.2-89.7 for final models "
                                      "of the BERT grid (bench/results/sst2_*.json)"),
    # MRPC (3.7k pairs): BERT §4.1 notes small GLUE sets need the grid's larger number of steps;
    # 3 epochs at 5e-5, batch 32 gave F1 85.4 for the final model; scoring dev 5x/epoch adds selection.
    "pair_classification": Recipe(5e-5, 32, 3.0, evals_per_epoch=5,
                                  evidence="MRPC: F1 85.4 for the final model at 3 epochs, lr 5e-5, "
                                           "batch 32 (bench/results/mrpc_3ep.json)"),
    # STS-B (5.7k pairs): the same setting gave Pearson 84.7 for the final model.
    "regression": Recipe(5e-5, 32, 3.0, evals_per_epoch=5,
                         evidence="STS-B: Pearson 84.7 for the final model at 3 epochs, lr 5e-5, batch 32 "
                                  "(bench/results/stsb_3ep.json)"),
    # CoNLL-2003: 3 epochs at 3e-5 gave eng.testb F1 83.1; 5 epochs at 5e-5 with the epoch chosen on
    # eng.testa gave 85.9 (dev F1 84.1 / 87.8 / 89.5 / 89.3 / 89.8 after each epoch).
    "tagging": Recipe(5e-5, 32, 5.0, evals_per_epoch=1,
                      evidence="CoNLL-2003: eng.testb F1 85.9 at 5 epochs, lr 5e-5, epoch chosen on eng.testa, "
                               "vs 83.1 at 3 epochs, lr 3e-5 (bench/results/conll2003_5ep.json, issue 17)"),
    # SQuAD v1.1: BERT §4.2 trains 3 epochs at 5e-5, batch 32; HF's run_qa 2 epochs. One epoch on the
    # 9k questions of 40 articles gave EM 34.4 / F1 50.3; the no-flag 2-epoch run is bench_defaults' squad.
    "qa": Recipe(5e-5, 32, 2.0, evals_per_epoch=1,
                 evidence="SQuAD (first 40 / last 8 articles): F1 50.3 after a single epoch "
                          "(bench/results/squad_1ep.json); BERT §4.2 uses 2-3 epochs at 5e-5; 2 epochs "
                          "not yet measured here"),
    # SWAG: BERT §4.4, 3 epochs at 2e-5, batch 16. No SWAG data here: the paper's values, unmeasured.
    "multiple_choice": Recipe(2e-5, 16, 3.0, evals_per_epoch=1,
                              evidence="BERT §4.4 (SWAG); not measured here (no SWAG data)"),
    # T5 text to text (lmforge.text_to_text): T5 §3.1.2 fine-tunes at a constant 1e-3 with Adafactor; with
    # AdamW a smaller peak is used. Not measured here yet.
    "text_to_text": Recipe(3e-4, 32, 3.0, evals_per_epoch=1,
                           evidence="T5 §3.1.2 (Adafactor, constant 1e-3); AdamW 3e-4 not yet measured here"),
}


# A frozen backbone (feature-based: ELMo §3.3) leaves only a new head and the scalar mix to train,
# from scratch, where the rates above, made for updating a pre-trained Transformer, would barely move it.
# Peters et al. 2018's task models (deep biLSTM-CRFs and the like) train at Adam's 1e-3 for many epochs;
# lmforge's head is one linear layer over standardized layers, and within the task types' epochs 1e-2
# gets further: frozen elmo-cpu, CoNLL slice of 1,871 sentences, dev F1 11.4 vs 5.5 after 2 epochs;
# SST-2, 2,000 sentences, 56.8 vs 54.5 (a head trained on cached features: equal after 1,180 steps).
# With the task biLSTM (lmforge/nn/task_rnn.py, ELMo's default head) 1e-2 still beat 1e-3: SST-2, 8,000
# sentences, one epoch, on a 30-minute elmo-cpu, 67.7 vs 63.9.
FEATURE_BASED_LR = 1e-2


def recipe_for(task_type: str) -> Recipe:
    try:
        return RECIPES[task_type]
    except KeyError:
        raise ValueError(f"no fine-tuning defaults for task type {task_type!r}; known: {', '.join(RECIPES)}") from None


def defaults_help() -> str:
    """The recipes as lines for `lmforge finetune --help`."""
    lines = ["defaults by task type (a flag overrides one value):"]
    for name, r in RECIPES.items():
        lines.append(f"  {name:<20} lr {r.lr:g}, batch {r.batch_size}, {r.epochs:g} epochs, "
                     f"warmup {r.warmup_ratio:g}, dev scored {r.evals_per_epoch}x/epoch, best kept")
    return "\n".join(lines)
