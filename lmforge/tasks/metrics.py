"""Benchmark metrics, each as its benchmark defines it; library implementations where one exists.

Every score is on one scale, percent (0-100; correlations x 100 as the GLUE leaderboard shows them),
so the summary, `evaluate` and the benchmark tables read alike for every task.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

PERCENT = 100.0


def accuracy(gold: list, pred: list) -> dict[str, float]:
    return {"accuracy": PERCENT * float(accuracy_score(gold, pred))}


def binary_f1(gold: list, pred: list, positive: str) -> float:
    return PERCENT * float(f1_score(gold, pred, pos_label=positive, zero_division=0))


def macro_f1(gold: list, pred: list) -> float:
    return PERCENT * float(f1_score(gold, pred, average="macro", zero_division=0))


def f1_accuracy(gold: list, pred: list, positive: str = "1") -> dict[str, float]:
    """MRPC and QQP (GLUE, Wang et al. 2019 §3): F1 of the positive class, and accuracy."""
    return {"f1": binary_f1(gold, pred, positive), **accuracy(gold, pred)}


def matthews(gold: list, pred: list) -> dict[str, float]:
    """CoLA (GLUE): Matthews correlation coefficient."""
    return {"matthews_corr": PERCENT * float(matthews_corrcoef(gold, pred))}


def pearson_spearman(gold: list[float], pred: list[float]) -> dict[str, float]:
    """STS-B (GLUE): Pearson and Spearman correlation of predicted and gold similarity (x 100)."""
    gold_a, pred_a = np.asarray(gold, dtype=float), np.asarray(pred, dtype=float)
    if len(gold_a) < 2 or np.all(pred_a == pred_a[0]) or np.all(gold_a == gold_a[0]):
        return {"pearson": 0.0, "spearman": 0.0}  # correlation is undefined for a constant
    pearson = PERCENT * float(pearsonr(gold_a, pred_a)[0])
    spearman = PERCENT * float(spearmanr(gold_a, pred_a)[0])
    return {"pearson": pearson, "spearman": spearman, "corr": (pearson + spearman) / 2}


# --- SQuAD, as the official evaluate-v1.1.py / evaluate-v2.0.py scripts define it ---

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace (official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of normalized answers. Two empty answers (v2 no-answer) match with F1 = 1."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(golds: list[list[str]], predictions: list[str]) -> dict[str, float]:
    """EM and F1 in percent, each the max over the gold answers of a question, averaged over questions.
    A question without gold answers (v2 unanswerable) has the single gold answer ''."""
    if not golds:
        return {"exact_match": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for answers, pred in zip(golds, predictions, strict=True):
        answers = answers or [""]
        em += max(squad_exact(pred, a) for a in answers)
        f1 += max(squad_f1(pred, a) for a in answers)
    return {"exact_match": PERCENT * em / len(golds), "f1": PERCENT * f1 / len(golds)}


def seqeval_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """CoNLL-2003 entity-level precision/recall/F1 (seqeval, IOB2 tags), in percent, plus token accuracy."""
    from seqeval.metrics import f1_score as ent_f1
    from seqeval.metrics import precision_score, recall_score

    flat_gold = [t for s in gold for t in s]
    flat_pred = [t for s in pred for t in s]
    return {
        "f1": PERCENT * float(ent_f1(gold, pred, zero_division=0)),
        "precision": PERCENT * float(precision_score(gold, pred, zero_division=0)),
        "recall": PERCENT * float(recall_score(gold, pred, zero_division=0)),
        "accuracy": PERCENT * float(accuracy_score(flat_gold, flat_pred)) if flat_gold else 0.0,
    }
