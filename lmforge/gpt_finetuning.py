"""Fine-tuning a left-to-right decoder as GPT-1 does it (Radford et al. 2018, §3.2-3.3).

A causal model cannot read a sentence pair as BERT does, so GPT-1 turns every task into one token
sequence with added special tokens (§3.3 "Task-specific input transformations"):
- classification: `<s> text <e>`; entailment: `<s> premise $ hypothesis <e>`;
- similarity (no inherent order): both orders `<s> A $ B <e>` and `<s> B $ A <e>`, processed
  independently, their final states added element-wise before the linear layer (lmforge's
  "similarity" head; GPT-1 §4.2 uses it for MRPC, QQP and STS-B);
- multiple choice: `<s> context $ answer <e>` per candidate, a softmax over the candidates.
The start `<s>`, delimiter `$` and extract `<e>` tokens are new rows of the token table, randomly
initialised (§3.3) and tied to the LM head like the rest. The task head reads the extract token's state:
it is the last real token, which the `last_token` classifier style reads.

§3.2 adds the language-modelling loss of the task's own text as an auxiliary objective,
L3 = L2 + λ L1 with λ = 0.5 (§4.1 "we add auxiliary language modeling objective ... with weight λ = 0.5"):
here a second head (causal LM, loss weight 0.5) trained with the task head and dropped before saving.
The token names follow transformers' OpenAI GPT fine-tuning example (`_start_`, `_delimiter_`, `_classify_`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, processors

from lmforge.heads import IGNORE, build_head
from lmforge.nn.init import init_weights

START, DELIMITER, EXTRACT = "_start_", "_delimiter_", "_classify_"
AUX_HEAD = "aux_lm"
AUX_LM_WEIGHT = 0.5  # λ, §3.2 / §4.1
SIMILARITY_TASKS = frozenset({"mrpc", "qqp", "stsb"})  # §4.2 "Semantic Similarity"


def applies(model: Any) -> bool:
    """GPT-1's recipe is for left-to-right decoders (encoders read pairs with [SEP] and segments)."""
    return bool(getattr(model.config, "causal", False)) and not getattr(model.config, "num_decoder_layers", 0)


def add_transform_tokens(tokenizer: Tokenizer) -> Tokenizer:
    """Add the start/delimiter/extract tokens (if missing) and wrap single texts and pairs with them."""
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in (START, DELIMITER, EXTRACT)])
    ids = {t: tokenizer.token_to_id(t) for t in (START, DELIMITER, EXTRACT)}
    template = processors.TemplateProcessing(
        single=f"{START} $A:0 {EXTRACT}", pair=f"{START} $A:0 {DELIMITER} $B:0 {EXTRACT}",
        special_tokens=list(ids.items()))
    byte_level = processors.ByteLevel(trim_offsets=False)  # keep byte-level offsets as GPT-2's files have them
    tokenizer.post_processor = processors.Sequence([byte_level, template])
    return tokenizer


def has_transform_tokens(tokenizer: Tokenizer) -> bool:
    return all(tokenizer.token_to_id(t) is not None for t in (START, DELIMITER, EXTRACT))


class BothOrders:
    """A pair task seen by a decoder as GPT-1's similarity task: every feature holds both orders."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def head_spec(self, label_names: list[str] | None) -> dict[str, Any]:
        return {**self.task.head_spec(label_names), "kind": "similarity"}

    def encode(self, examples: list[Any], tokenizer: Tokenizer, max_length: int,
               label_names: list[str] | None, train: bool):
        forward = self.task.encode(examples, tokenizer, max_length, label_names, train)
        swapped = [dataclasses.replace(e, text_a=e.text_b, text_b=e.text_a) for e in examples]
        backward = self.task.encode(swapped, tokenizer, max_length, label_names, train)
        for a, b in zip(forward.features, backward.features):
            a["input_ids"] = [a["input_ids"], b["input_ids"]]  # (2, T) per example: both orders
            a["token_type_ids"] = [a["token_type_ids"], b["token_type_ids"]]
        return forward


def task_for(model: Any, task: Any) -> Any:
    """The task as this model reads it: both orders when the model has a similarity head."""
    head = model.heads["task"] if "task" in model.heads else None
    if head is not None and head.kind == "similarity" and not isinstance(task, BothOrders):
        return BothOrders(task)
    return task


def adapt(model: Any, tokenizer: Tokenizer, task: Any, head_name: str) -> tuple[Any, Tokenizer, Any]:
    """Prepare a decoder, its tokenizer and the task for GPT-1 fine-tuning (no-op for other models)."""
    if not applies(model):
        return model, tokenizer, task
    if not has_transform_tokens(tokenizer):
        tokenizer = add_transform_tokens(tokenizer)
    if tokenizer.get_vocab_size() > model.config.vocab_size:
        model.resize_vocabulary(tokenizer.get_vocab_size())
    if getattr(task, "name", None) in SIMILARITY_TASKS and getattr(task, "pairs", False):
        task = BothOrders(task)
        spec = {**model.heads[head_name].spec(), "kind": "similarity"}
        spec.pop("style", None)
        model.heads[head_name] = build_head(model.config, model.backbone, spec).to(
            next(model.parameters()).device)
        init_weights(model.heads[head_name], model.config)
    if AUX_HEAD not in model.heads:
        aux = build_head(model.config, model.backbone, {"kind": "clm", "label_key": "aux_lm_labels",
                                                       "loss_weight": AUX_LM_WEIGHT})
        model.heads[AUX_HEAD] = aux.to(next(model.parameters()).device)  # tied: no new parameters
    return model, tokenizer, task


def with_lm_labels(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The auxiliary LM's targets: the input text itself, padding ignored (both orders flattened)."""
    if AUX_HEAD not in model.heads:
        return batch
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = ids.masked_fill(mask == 0, IGNORE)
    return {**batch, "aux_lm_labels": labels.flatten(0, 1) if labels.dim() == 3 else labels}


def drop_aux_head(model: Any) -> None:
    """The auxiliary LM head only trains; the saved model keeps the task head (and exports as HF's
    sequence-classification class)."""
    if AUX_HEAD in model.heads:
        del model.heads[AUX_HEAD]
