"""Names the command line offers as choices, as plain tuples with no imports.

`lmforge finetune --help` and `lmforge tokenizer train --help` list them; importing the modules that
own them (lmforge.tasks, lmforge.tokenizers) would pull in torch and `tokenizers` and make `--help`
take seconds. The owners use these tuples, and a test checks that every name still resolves there.
(Tokenizer families are not listed: `--family` is checked when the command runs.)
"""

from __future__ import annotations

GLUE_TASKS: tuple[str, ...] = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
# every name lmforge.tasks.get_task accepts (besides aliases)
TASK_NAMES: tuple[str, ...] = (*GLUE_TASKS, "nsmc", "classification", "regression", "squad", "ner", "conll2003",
                               "swag")
# what an encoder-decoder (T5) fine-tunes on as text to text (lmforge.text_to_text owns their formats)
TEXT_TASKS: tuple[str, ...] = (*GLUE_TASKS, "squad", "multi30k", "text2text")
# generic task data files: the format is inferred from the suffix unless --format names it
TASK_DATA_FORMATS: tuple[str, ...] = ("tsv", "csv", "jsonl", "parquet", "arrow")

TOKENIZER_KINDS: tuple[str, ...] = ("wordpiece", "bpe", "unigram", "word")
