"""Fine-tuning tasks by name: readers, encoders, decoders and metrics of each benchmark."""

from __future__ import annotations

from lmforge.choices import TASK_NAMES  # the CLI's list; tests check that every name resolves here
from lmforge.tasks.base import Encoded, Task, TaskOptions, pad_batch
from lmforge.tasks.classification import GLUE, GlueTask, TextClassificationTask, nsmc_task
from lmforge.tasks.io import DataError
from lmforge.tasks.multiple_choice import SwagTask
from lmforge.tasks.qa import SquadTask
from lmforge.tasks.tagging import TaggingTask, iob1_to_iob2, read_conll

# Default max sequence lengths: BERT's GLUE/SWAG runs use 128, SQuAD 384 (§4.2); CoNLL sentences need more.
DEFAULT_MAX_LENGTH = {"squad": 384, "ner": 256, "conll2003": 256}


def get_task(name: str, options: TaskOptions | None = None) -> Task:
    options = options or TaskOptions()
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"sst": "sst2", "stsb": "stsb", "mnlim": "mnli", "squadv2": "squad", "squad2": "squad",
               "korquad": "squad", "conll": "conll2003"}
    key = aliases.get(key, key)
    if key in GLUE:
        return GlueTask(key, options)
    if key == "nsmc":
        return nsmc_task(options)
    if key in ("classification", "regression"):
        options.regression = options.regression or key == "regression"
        return TextClassificationTask(options)
    if key == "squad":
        return SquadTask(options)
    if key in ("ner", "conll2003"):
        return TaggingTask(options)
    if key == "swag":
        return SwagTask(options)
    raise ValueError(f"unknown task {name!r}; known: {', '.join(TASK_NAMES)}")


def default_max_length(name: str) -> int:
    return DEFAULT_MAX_LENGTH.get(name.lower(), 128)


__all__ = ["DataError", "Encoded", "GLUE", "TASK_NAMES", "Task", "TaskOptions", "default_max_length",
           "get_task", "iob1_to_iob2", "pad_batch", "read_conll"]
