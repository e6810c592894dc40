"""Extractive QA on SQuAD v1.1/v2.0 JSON (KorQuAD uses the same format), BERT §4.2-4.3.

Long contexts are cut into windows of the document tokens that start every `doc_stride` tokens
(Google's run_squad.py); a token's score is read only from the window where it has the most
context on both sides. Answers are mapped back to the original text through character offsets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from lmforge.tasks.base import Encoded, Task, mark_padding, split_path, summary_index, unpad
from lmforge.tasks.io import DataError, parse_slice
from lmforge.tasks.metrics import squad_scores
from lmforge.tasks.text import pair_template, summary_last


@dataclass
class QAExample:
    qid: str
    question: str
    context: str
    answers: list[dict[str, Any]]  # [{"text", "answer_start"}]; empty for v2 unanswerable
    is_impossible: bool
    source: str


def _line_of(raw: str, needle: str) -> int | None:
    at = raw.find(needle)
    return raw.count("\n", 0, at) + 1 if at >= 0 else None


class SquadTask(Task):
    name = "squad"
    head_kind = "qa"
    main_metric = "f1"
    task_type = "qa"
    files = {"train": ("train-v1.1.json", "train-v2.0.json", "train.json"),
             "dev": ("dev-v1.1.json", "dev-v2.0.json", "dev.json")}

    def path_of(self, data: Path, split: str) -> Path:
        return split_path(data, split, self.files, self.options)

    def same_examples(self, data: Path, split_a: str, split_b: str) -> bool:
        """One file with the same article slice for both splits (different slices never overlap)."""
        slices = {"train": self.options.train_articles, "dev": self.options.eval_articles}
        return super().same_examples(data, split_a, split_b) and slices.get(split_a) == slices.get(split_b)

    def holdout_key(self, example: QAExample) -> str:
        return example.context  # the questions of one paragraph stay on one side

    def is_labelled(self, example: QAExample) -> bool:
        return example.is_impossible or bool(example.answers)

    def read(self, data: Path, split: str) -> list[QAExample]:
        path = self.path_of(Path(data), split)
        raw = path.read_text(encoding="utf-8-sig")
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as err:
            raise DataError(path, err.lineno, f"invalid JSON ({err.msg})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise DataError(path, 1, 'not SQuAD JSON: expected {"data": [articles...]}')
        articles = doc["data"]
        chosen = {"train": self.options.train_articles, "dev": self.options.eval_articles}.get(split)
        articles = articles[parse_slice(chosen)]
        examples = []
        for article in articles:
            for paragraph in article.get("paragraphs", []):
                context = paragraph.get("context")
                if not isinstance(context, str):
                    raise DataError(path, None, f"article {article.get('title')!r}: a paragraph has no context")
                for qa in paragraph.get("qas", []):
                    examples.append(self._example(qa, context, path, raw, split))
        if not examples:
            raise DataError(path, None, f"no questions in the selected articles ({chosen or 'all'})")
        if self.options.version_2 is None:
            self.options.version_2 = any(e.is_impossible for e in examples)
        return examples

    def _example(self, qa: dict, context: str, path: Path, raw: str, split: str) -> QAExample:
        qid = str(qa.get("id", ""))
        line = _line_of(raw, f'"{qid}"') if qid else None
        if not qid or not isinstance(qa.get("question"), str):
            raise DataError(path, line, "a question has no id or no question text")
        impossible = bool(qa.get("is_impossible", False))
        answers = [] if impossible else list(qa.get("answers", []))
        for answer in answers:
            text, start = answer.get("text"), answer.get("answer_start")
            if not isinstance(text, str) or not isinstance(start, int):
                raise DataError(path, line, f"question {qid}: answer needs text and an integer answer_start")
            if context[start:start + len(text)] != text:
                raise DataError(path, line, f"question {qid}: answer {text!r} is not in its context at "
                                            f"character {start} (found {context[start:start + len(text)]!r})")
        if split in ("train", "dev") and not impossible and not answers:
            raise DataError(path, line, f"question {qid}: no answers and not marked is_impossible")
        return QAExample(qid, qa["question"], context, answers, impossible, str(path))

    def head_spec(self, label_names: list[str] | None) -> dict[str, Any]:
        return {"kind": "qa"}

    def encode(self, examples: list[QAExample], tokenizer: Tokenizer, max_length: int,
               label_names: list[str] | None, train: bool) -> Encoded:
        opts = self.options
        template = pair_template(tokenizer)
        last = summary_last(tokenizer)  # XLNet: <cls>, the "no answer" position, is the last token
        questions = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)
        contexts = tokenizer.encode_batch([e.context for e in examples], add_special_tokens=False)
        features: list[dict[str, Any]] = []
        for index, (example, q_enc, c_enc) in enumerate(zip(examples, questions, contexts)):
            q_ids = q_enc.ids[:opts.max_query_length]
            room = max_length - len(q_ids) - template.num_special
            if room < 1:
                raise ValueError(f"max_length {max_length} leaves no room for the context")
            doc_ids, offsets = c_enc.ids, c_enc.offsets
            windows = []
            start = 0
            while True:  # run_squad.py: windows start every doc_stride tokens until the end is covered
                length = min(len(doc_ids) - start, room)
                windows.append((start, length))
                if start + length >= len(doc_ids):
                    break
                start += min(length, opts.doc_stride)
            answer_span = self._answer_tokens(example, offsets) if train else None
            for w_start, w_len in windows:
                ids, types, ctx_at = template.build(q_ids, doc_ids[w_start:w_start + w_len])
                feature: dict[str, Any] = {
                    "input_ids": ids, "token_type_ids": types, "example_index": index,
                    "context_start": ctx_at, "offsets": offsets[w_start:w_start + w_len],
                    "max_context": [_is_max_context(windows, (w_start, w_len), w_start + i) for i in range(w_len)],
                }
                if train:
                    s = e = len(ids) - 1 if last else 0  # [CLS]: no answer in this window (or v2 unanswerable)
                    if answer_span is not None:
                        a_s, a_e = answer_span
                        if w_start <= a_s and a_e < w_start + w_len:
                            s, e = a_s - w_start + ctx_at, a_e - w_start + ctx_at
                    feature["start_positions"], feature["end_positions"] = s, e
                features.append(feature)
        return Encoded(mark_padding(features, tokenizer))

    @staticmethod
    def _answer_tokens(example: QAExample, offsets: list[tuple[int, int]]) -> tuple[int, int] | None:
        """Token span of the first gold answer: first token ending after its start, last token starting
        before its end (offsets are character positions in the original context)."""
        if example.is_impossible or not example.answers:
            return None
        answer = example.answers[0]
        c_start = answer["answer_start"]
        c_end = c_start + len(answer["text"])
        tokens = [i for i, (s, e) in enumerate(offsets) if e > c_start and s < c_end]
        if not tokens:
            return None  # answer made only of characters the tokenizer drops (whitespace)
        return tokens[0], tokens[-1]

    def trim_logits(self, feature: dict[str, Any], logits: Any) -> np.ndarray:
        return unpad(feature, logits).float().cpu().numpy()  # (T, 2)

    def decode(self, examples: list[QAExample], encoded: Encoded, logits: list[np.ndarray],
               label_names: list[str] | None) -> list[str]:
        """n-best span search (BERT §4.2): score = start + end logit over valid spans; v2 answers ''
        when the [CLS] null score beats the best span by more than the threshold (BERT §4.3)."""
        opts = self.options
        by_example: dict[int, list[int]] = {}
        for i, feature in enumerate(encoded.features):
            by_example.setdefault(feature["example_index"], []).append(i)
        answers = []
        for index, example in enumerate(examples):
            best_score, best_text = -np.inf, ""
            null_score = np.inf
            for i in by_example.get(index, []):
                feature, scores = encoded.features[i], logits[i]
                start_logits, end_logits = scores[:, 0], scores[:, 1]
                null = summary_index(feature)
                null_score = min(null_score, float(start_logits[null] + end_logits[null]))
                ctx = feature["context_start"]
                n_ctx = len(feature["offsets"])
                starts = np.argsort(-start_logits)[: opts.n_best]
                ends = np.argsort(-end_logits)[: opts.n_best]
                for s in starts:
                    if not ctx <= s < ctx + n_ctx or not feature["max_context"][s - ctx]:
                        continue
                    for e in ends:
                        if not s <= e < ctx + n_ctx or e - s + 1 > opts.max_answer_length:
                            continue
                        score = float(start_logits[s] + end_logits[e])
                        if score > best_score:
                            char_start = feature["offsets"][s - ctx][0]
                            char_end = feature["offsets"][e - ctx][1]
                            best_score, best_text = score, example.context[char_start:char_end]
            if opts.version_2 and (best_score == -np.inf or null_score - best_score > opts.null_score_threshold):
                best_text = ""
            answers.append(best_text)
        return answers

    def metrics(self, examples: list[QAExample], predictions: list[str]) -> dict[str, float]:
        return squad_scores([[a["text"] for a in e.answers] for e in examples], predictions)

    def prediction_record(self, example: QAExample, prediction: str) -> dict[str, Any]:
        record: dict[str, Any] = {"id": example.qid, "question": example.question, "prediction": prediction}
        if example.answers or example.is_impossible:
            record["answers"] = [a["text"] for a in example.answers]
        return record


def _is_max_context(windows: list[tuple[int, int]], current: tuple[int, int], position: int) -> bool:
    """run_squad.py's _check_is_max_context: context = min(left, right) + 0.01 * window length."""
    best, best_window = None, None
    for start, length in windows:
        end = start + length - 1
        if not start <= position <= end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best is None or score > best:
            best, best_window = score, (start, length)
    return best_window == current
