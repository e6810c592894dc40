"""Text-to-text fine-tuning (Raffel et al. 2020 §2.4): with an encoder-decoder (T5), every task is input
text -> target text, trained with the model's own LM head and scored by generating.

An existing task keeps its reader and its official metric; this module only writes its examples as text
(the formats of the paper's Appendix D: a task prefix, named fields, label words) and reads generated
text back into the task's predictions. An output that is not one of the task's label words counts wrong
(it can match no gold label); an STS-B output that is not a number scores as -1, as T5's postprocessor
does. Tasks: the GLUE tasks, SQuAD (`question: … context: …` -> the answer text), Multi30k De->En
(`translate German to English: …`, sacreBLEU) and `text2text`, a file with --source-column and
--target-column (exact match and sacreBLEU).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lmforge.choices import TEXT_TASKS
from lmforge.data.translation import collate_pairs
from lmforge.tasks import Encoded, Task, TaskOptions, get_task
from lmforge.tasks.base import split_path
from lmforge.tasks.io import DataError, read_records

HEAD_KIND = "seq2seq_lm"

# Appendix D: the prefix, the fields in order (name, "a" | "b" of the GLUE example) and the label words
GLUE_FORMATS: dict[str, tuple[str, tuple[tuple[str, str], ...], dict[str, str] | None]] = {
    "cola": ("cola", (("sentence", "a"),), {"0": "unacceptable", "1": "acceptable"}),
    "sst2": ("sst2", (("sentence", "a"),), {"0": "negative", "1": "positive"}),
    "mrpc": ("mrpc", (("sentence1", "a"), ("sentence2", "b")), {"0": "not_equivalent", "1": "equivalent"}),
    "qqp": ("qqp", (("question1", "a"), ("question2", "b")), {"0": "not_duplicate", "1": "duplicate"}),
    "stsb": ("stsb", (("sentence1", "a"), ("sentence2", "b")), None),
    "mnli": ("mnli", (("hypothesis", "b"), ("premise", "a")), None),  # label words are the labels
    "qnli": ("qnli", (("question", "a"), ("sentence", "b")), None),
    "rte": ("rte", (("sentence1", "a"), ("sentence2", "b")), None),
    "wnli": ("wnli", (("sentence1", "a"), ("sentence2", "b")), {"0": "not_entailment", "1": "entailment"}),
}
MULTI30K = {"train": "train", "dev": "val", "test": "test_2016_flickr"}


@dataclass
class Pair:
    source: str
    target: str | None  # None when unlabelled
    example: Any  # the wrapped task's example, for its metric


def stsb_text(score: float) -> str:
    """T5's STS-B target: the score rounded to the nearest 0.2, with one decimal ("3.8")."""
    return f"{round(score * 5) / 5:.1f}"


def stsb_value(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return -1.0  # T5's string_to_float default: a non-number is a wrong score


def bleu_and_exact(references: list[str], predictions: list[str]) -> dict[str, float]:
    import sacrebleu

    exact = 100.0 * float(np.mean([p.strip() == r.strip() for p, r in zip(predictions, references)]))
    return {"bleu": sacrebleu.corpus_bleu(predictions, [references]).score, "exact_match": exact}


class TextToTextTask(Task):
    """A task as (source text, target text) pairs. It predicts by generating (lmforge.generate); `answer`
    reads a generated text as the wrapped task's prediction, for the metric and for `lmforge predict`
    alike, so dev scores, `evaluate` and predictions files agree."""

    head_kind = HEAD_KIND
    task_type = "text_to_text"

    def __init__(self, name: str, options: TaskOptions, to_pairs: Callable[[Path, str], list[Pair]],
                 score: Callable[[list[Pair], list[str]], dict[str, float]], main_metric: str,
                 paths: Callable[[Path, str], Path], max_target_length: int = 64, *,
                 answer: Callable[[str], Any] | None = None,
                 record: Callable[[Pair, Any], dict[str, Any]] | None = None) -> None:
        super().__init__(options)
        self.name, self.main_metric, self.max_target_length = name, main_metric, max_target_length
        self._to_pairs, self._score, self._paths = to_pairs, score, paths
        self._answer, self._record = answer or (lambda text: text), record or _text_record

    def path_of(self, data: Path, split: str) -> Path:
        return self._paths(Path(data), split)

    def read(self, data: Path, split: str) -> list[Pair]:
        return self._to_pairs(Path(data), split)

    def is_labelled(self, example: Pair) -> bool:
        return example.target is not None

    def where(self, example: Pair, data: Path) -> str:
        return super().where(example.example, data)  # the wrapped task's example knows its file and line

    def encode(self, examples: list[Pair], tokenizer: Any, max_length: int, label_names: list[str] | None,
               train: bool) -> Encoded:
        """Sources cut to max_length and targets to max_target_length tokens, both ending with </s>."""
        eos = tokenizer.token_to_id("</s>")
        sources = tokenizer.encode_batch([e.source for e in examples])
        targets = tokenizer.encode_batch([e.target or "" for e in examples])
        features = []
        for i, (src, tgt) in enumerate(zip(sources, targets)):
            feature: dict[str, Any] = {"input_ids": src.ids[: max_length - 1] + [eos], "example_index": i}
            if examples[i].target is not None:
                feature["target_ids"] = tgt.ids[: self.max_target_length - 1] + [eos]
            features.append(feature)
        return Encoded(features)

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
        return collate_pairs([f["input_ids"] for f in features], [f["target_ids"] for f in features], pad_id, pad_id)

    def decode(self, examples: list[Pair], encoded: Encoded, logits: list[np.ndarray],
               label_names: list[str] | None) -> list[Any]:
        raise NotImplementedError("text-to-text tasks predict by generating: TextToTextTask.predict")

    def answer(self, text: str) -> Any:
        """The wrapped task's prediction for one generated text; None where it is no label word."""
        return self._answer(text)

    def metrics(self, examples: list[Pair], predictions: list[str]) -> dict[str, float]:
        """The wrapped task's metric of the generated texts (an output that is no label word counts wrong)."""
        return self._score(examples, predictions)

    def prediction_record(self, example: Pair, prediction: str) -> dict[str, Any]:
        """The wrapped task's line of `lmforge predict` (labels as its label names, null for an output that
        is no label word) and the generated text itself."""
        return {**self._record(example, self.answer(prediction)), "generated": prediction}

    def generate(self, model: Any, examples: list[Pair], tokenizer: Any, max_length: int, batch_size: int,
                 device: torch.device, progress: bool = False) -> list[str]:
        """Greedy decoding, batches sorted by source length; the texts without special tokens."""
        from lmforge.generate import GenerationConfig, generate

        encoded = self.encode([Pair(e.source, None, e.example) for e in examples], tokenizer, max_length, None, False)
        eos, pad = tokenizer.token_to_id("</s>"), model.config.pad_token_id or 0
        config = GenerationConfig(max_new_tokens=self.max_target_length, eos_token_id=eos, pad_token_id=pad,
                                  decoder_start_token_id=model.config.decoder_start_id)
        order = sorted(range(len(examples)), key=lambda i: len(encoded.features[i]["input_ids"]))
        texts: list[str] = [""] * len(examples)
        starts = range(0, len(order), batch_size)
        for at in tqdm(starts, desc="generate", unit="batch", leave=False, disable=not progress):
            chunk = order[at:at + batch_size]
            batch = collate_pairs([encoded.features[i]["input_ids"] for i in chunk], [[eos]] * len(chunk), pad, pad)
            tokens = generate(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), config).tokens
            for i, row in zip(chunk, tokens):
                texts[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
        return texts

    def predict(self, model: Any, examples: list[Pair], tokenizer: Any, max_length: int, batch_size: int,
                device: torch.device, autocast: Any, progress: bool = False) -> list[str]:
        """The generated text of every example, with the model in eval mode (restored after)."""
        was_training = model.training
        model.eval()
        with torch.inference_mode(), autocast:
            texts = self.generate(model, examples, tokenizer, max_length, batch_size, device, progress)
        model.train(was_training)
        return texts


def _text_record(pair: Pair, answer: Any) -> dict[str, Any]:
    """A predictions line of a task with no encoder counterpart (Multi30k, text2text)."""
    record: dict[str, Any] = {"source": pair.source, "prediction": answer}
    if pair.target is not None:
        record["target"] = pair.target
    return record


# ------------------------------------------------------------------------------------------ the tasks
def _glue(name: str, options: TaskOptions) -> TextToTextTask:
    inner = get_task(name, options)
    prefix, fields, words = GLUE_FORMATS[name]
    regression = inner.spec.labels is None
    to_word = words or {label: label for label in inner.spec.labels or ()}
    from_word = {w: label for label, w in to_word.items()}

    def source(e: Any) -> str:
        return " ".join([prefix] + [f"{field}: {e.text_a if side == 'a' else e.text_b}" for field, side in fields])

    def to_pairs(data: Path, split: str) -> list[Pair]:
        pairs = []
        for e in inner.read(data, split):
            target = None if e.label is None else stsb_text(e.label) if regression else to_word[e.label]
            pairs.append(Pair(source(e), target, e))
        return pairs

    def answer(text: str) -> str | float | None:
        """The label (or STS-B score) a generated text names; None for a word that is no label."""
        return stsb_value(text) if regression else from_word.get(text)

    def score(examples: list[Pair], predictions: list[str]) -> dict[str, float]:
        answers = [answer(t) for t in predictions]
        if not regression:  # a word that is no label maps to no label, so it matches no gold one
            answers = [f"<invalid: {t}>" if a is None else a for a, t in zip(answers, predictions)]
        return inner.metrics([p.example for p in examples], answers)

    return TextToTextTask(name, options, to_pairs, score, inner.main_metric, inner.path_of, max_target_length=8,
                          answer=answer, record=lambda pair, label: inner.prediction_record(pair.example, label))


def _squad(options: TaskOptions) -> TextToTextTask:
    inner = get_task("squad", options)

    def to_pairs(data: Path, split: str) -> list[Pair]:
        return [Pair(f"question: {e.question} context: {e.context}", e.answers[0]["text"] if e.answers else None, e)
                for e in inner.read(data, split)]

    def score(examples: list[Pair], predictions: list[str]) -> dict[str, float]:
        return inner.metrics([p.example for p in examples], predictions)

    return TextToTextTask("squad", options, to_pairs, score, inner.main_metric, inner.path_of,
                          record=lambda pair, text: inner.prediction_record(pair.example, text))


def _multi30k(options: TaskOptions) -> TextToTextTask:
    """Multi30k De->En: train/val/test_2016_flickr .de/.en files (optionally .gz)."""

    def side(data: Path, split: str, lang: str) -> Path:
        name = f"{MULTI30K.get(split, split)}.{lang}"
        for path in (data / name, data / f"{name}.gz"):
            if path.is_file():
                return path
        raise FileNotFoundError(f"{data}: no {split} file {name}(.gz)")

    def to_pairs(data: Path, split: str) -> list[Pair]:
        from lmforge.data.parallel import read_parallel

        text = read_parallel(side(data, split, "de"), side(data, split, "en"))
        return [Pair(f"translate German to English: {de}", en, en) for de, en in zip(text.sources, text.targets)]

    def score(examples: list[Pair], predictions: list[str]) -> dict[str, float]:
        return bleu_and_exact([p.target for p in examples], predictions)

    return TextToTextTask("multi30k", options, to_pairs, score, "bleu", lambda d, s: side(d, s, "de"))


def _generic(options: TaskOptions) -> TextToTextTask:
    if not options.source_column or not options.target_column:
        raise ValueError("task text2text needs --source-column and --target-column")

    def to_pairs(data: Path, split: str) -> list[Pair]:
        path = split_path(data, split, {}, options)
        want = [options.source_column] + ([options.target_column] if split in ("train", "dev") else [])
        pairs = []
        for line, record in read_records(path, want, options.format):
            source, target = record[options.source_column], record.get(options.target_column)
            if not isinstance(source, str) or (target is not None and not isinstance(target, str)):
                raise DataError(path, line, f"columns {want} must hold text")
            pairs.append(Pair(source, target, target))
        return pairs

    def score(examples: list[Pair], predictions: list[str]) -> dict[str, float]:
        return bleu_and_exact([p.target for p in examples], predictions)

    return TextToTextTask("text2text", options, to_pairs, score, "exact_match",
                          lambda d, s: split_path(d, s, {}, options))


def text_task_key(name: str) -> str:
    """A text-to-text task name as get_text_task knows it ("SST-2" -> "sst2"); unknown names unchanged."""
    key = name.lower().replace("-", "").replace("_", "")
    return {"sst": "sst2", "multi30kdeen": "multi30k", "squadv1": "squad"}.get(key, key)


def get_text_task(name: str, options: TaskOptions | None = None) -> TextToTextTask:
    options = options or TaskOptions()
    key = text_task_key(name)
    if key in GLUE_FORMATS:
        return _glue(key, options)
    if key == "squad":
        return _squad(options)
    if key == "multi30k":
        return _multi30k(options)
    if key == "text2text":
        return _generic(options)
    raise ValueError(f"unknown text-to-text task {name!r}; known: {', '.join(TEXT_TASKS)}")


def is_encoder_decoder(model_dir: str | Path) -> bool:
    """Whether a model directory (lmforge or HF) holds an encoder-decoder, which fine-tunes text to text."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return False
    data = json.loads(path.read_text())
    if data.get("format") == "lmforge":
        return bool(data.get("model", {}).get("num_decoder_layers"))
    return bool(data.get("is_encoder_decoder"))


def load_model(model_dir: str | Path, head: str) -> Any:
    """The pre-trained encoder-decoder with its own LM head (T5 fine-tunes the head it pre-trained: an
    untied v1.1 output projection is kept, not re-drawn), the head renamed to `head`."""
    from lmforge.convert import load_pretrained
    from lmforge.models import TaskModel
    from lmforge.nn.init import init_weights

    source = load_pretrained(model_dir)
    old = next((name for name, spec in source.head_specs().items() if spec["kind"] == HEAD_KIND), None)
    model = TaskModel(source.config, {head: {"kind": HEAD_KIND}}, init=False)
    if old is None:  # a bare encoder-decoder (HF T5Model): a new projection, tied or drawn as at init
        init_weights(model.heads[head], source.config)
    state = {k.replace(f"heads.{old}.", f"heads.{head}.") if old else k: v for k, v in source.state_dict().items()
             if k.startswith("backbone.") or (old and k.startswith(f"heads.{old}."))}
    model.load_state_dict(state, strict=old is not None)
    return model
