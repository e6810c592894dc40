"""Readers, conversions, windowing and metrics of lmforge.tasks, checked by hand and against libraries."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from _finetune_helpers import tiny_tokenizer
from conftest import data_path
from seqeval.metrics.sequence_labeling import get_entities

from lmforge.finetune_data import length_grouped_batches
from lmforge.tasks import DataError, Encoded, TaskOptions, get_task, iob1_to_iob2, pad_batch, read_conll
from lmforge.tasks.metrics import normalize_answer, squad_f1, squad_scores
from lmforge.tasks.text import pair_template

# --- SQuAD metric: hand-checked cases of the official evaluate-v1.1.py definition ---

def test_normalize_answer_official_steps():
    assert normalize_answer("The  Quick, brown FOX!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_squad_em_f1_hand_checked():
    # pred tokens {cat, sat}, gold {cat, sat, on}: P = 1, R = 2/3, F1 = 0.8
    assert squad_f1("the cat sat", "a cat sat on") == pytest.approx(0.8)
    assert squad_f1("x", "y") == 0.0
    assert squad_f1("", "") == 1.0  # v2 no-answer predicted as no-answer
    scores = squad_scores([["Denver Broncos", "the Broncos"], ["1945"]], ["broncos", "in 1945"])
    # q1: EM via "the Broncos" -> "broncos"; q2: EM 0, F1: P=1/2, R=1 -> 2/3
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)


# --- CoNLL ---

def test_iob1_to_iob2_cases():
    assert iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC"]) == ["B-PER", "I-PER", "O", "B-LOC"]
    assert iob1_to_iob2(["I-ORG", "B-ORG", "I-PER"]) == ["B-ORG", "B-ORG", "B-PER"]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]
    assert iob1_to_iob2(iob2) == iob2  # valid IOB2 is unchanged


def test_conll_reader_matches_seqeval_entities():
    path = data_path("conll2003", "eng.testa")
    sentences = read_conll(path)
    assert len(sentences) == 3250  # the README's official count
    raw = []
    with open(path) as handle:
        block = []
        for line in handle:
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if block:
                    raw.append(block)
                block = []
                continue
            block.append(cols[-1])
        if block:
            raw.append(block)
    # IOB1 entities (seqeval reads I- starts leniently) equal the IOB2 entities of the conversion
    for original, sentence in zip(raw, sentences):
        assert get_entities(original) == get_entities(sentence.tags)


def test_conll_wrong_columns_names_file_and_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("EU NNP I-NP I-ORG\nrejects VBZ I-VP O\n\nGerman JJ I-NP\n")
    with pytest.raises(DataError, match=r"bad\.conll:4: expected 4 columns, found 3"):
        read_conll(path)


def test_conll_bad_tag(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("EU NNP I-NP PERSON\n")
    with pytest.raises(DataError, match=r"bad\.conll:1: bad tag 'PERSON'"):
        read_conll(path)


# --- GLUE readers ---

def test_glue_mrpc_bom_header_and_quotes():
    examples = get_task("mrpc").read(data_path("glue", "MRPC"), "dev")
    assert len(examples) == 408
    assert examples[0].text_b.startswith('" The foodservice')  # quotes kept literally (QUOTE_NONE)
    assert {e.label for e in examples} == {"0", "1"}


def test_glue_cola_without_header(tmp_path):
    (tmp_path / "train.tsv").write_text("gj04\t1\t\tOur friends won't buy this analysis.\n"
                                        "gj04\t0\t*\tThey drank the pub.\n")
    examples = get_task("cola").read(tmp_path, "train")
    assert [e.label for e in examples] == ["1", "0"]
    assert examples[1].text_a == "They drank the pub."


def test_glue_wrong_column_count_names_line(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood film\t1\nbad film\t0\textra\n")
    with pytest.raises(DataError, match=r"train\.tsv:3: expected 2 columns, found 3"):
        get_task("sst2").read(tmp_path, "train")


def test_glue_bad_label_names_line(tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood film\t1\nbad film\tnegative\n")
    with pytest.raises(DataError, match=r"dev\.tsv:3: bad label 'negative'"):
        get_task("sst2").read(tmp_path, "dev")


def test_stsb_is_regression_and_mnli_layout(tmp_path):
    examples = get_task("stsb").read(data_path("glue", "STS-B"), "dev")
    assert len(examples) == 1500 and isinstance(examples[0].label, float)
    header = "\t".join(["index", "promptID", "pairID", "genre", "s1b", "s2b", "s1p", "s2p", "sentence1",
                        "sentence2", "label1", "gold_label"])
    (tmp_path / "dev_matched.tsv").write_text(header + "\n" + "\t".join(
        ["0", "1", "1e", "fiction", "x", "y", "x", "y", "A man eats.", "Someone eats.", "entailment",
         "entailment"]) + "\n")
    [example] = get_task("mnli").read(tmp_path, "dev")
    assert (example.text_a, example.text_b, example.label) == ("A man eats.", "Someone eats.", "entailment")


def test_generic_jsonl_labels_discovered(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"t": f"text {i}", "y": str(i % 3)}) for i in range(12)) + "\n")
    task = get_task("classification", TaskOptions(text_column="t", label_column="y"))
    examples = task.read(path, "train")
    assert task.label_names(examples) == ["0", "1", "2"]
    path.write_text('{"t": "a", "y": "1"}\n{"t": "b"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl:2: missing field"):
        task.read(path, "train")


# --- SQuAD reading, windows and decoding ---

def _squad_doc(context: str, answer: str, start: int) -> dict:
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "Where is the answer?", "answers": [{"text": answer, "answer_start": start}]}]}]}]}


def test_squad_answer_not_in_context_names_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_squad_doc("The cat sat on the mat.", "dog", 4), indent=1))
    with pytest.raises(DataError, match=r"bad\.json:\d+: question q1: answer 'dog' is not in its context"):
        get_task("squad").read(path, "train")


def test_squad_windows_map_answer_back_to_text(tmp_path):
    filler = " ".join(f"word{i % 17} filler" for i in range(120))
    context = f"{filler} The treasure lies under Oakwood Bridge tonight. {filler}"
    start = context.index("Oakwood Bridge")
    path = tmp_path / "q.json"
    path.write_text(json.dumps(_squad_doc(context, "Oakwood Bridge", start)))
    tok = tiny_tokenizer([context, "Where is the answer?"], vocab_size=200)
    task = get_task("squad", TaskOptions(doc_stride=32))
    examples = task.read(path, "train")
    encoded = task.encode(examples, tok, 64, None, train=True)
    assert len(encoded.features) > 3  # a long context gives several overlapping windows
    template = pair_template(tok)
    logits = []
    hits = 0
    for f in encoded.features:
        scores = np.zeros((len(f["input_ids"]), 2), dtype=np.float32)
        assert len(f["input_ids"]) <= 64 and f["input_ids"][0] == template.prefix[0]
        if f["start_positions"] > 0:
            hits += 1
            s, e = f["start_positions"], f["end_positions"]
            ctx = f["context_start"]
            assert context[f["offsets"][s - ctx][0]:f["offsets"][e - ctx][1]] == "Oakwood Bridge"
            scores[s, 0] = scores[e, 1] = 10.0
        logits.append(scores)
    assert hits >= 1
    assert task.decode(examples, encoded, logits, None) == ["Oakwood Bridge"]


# --- batching ---

def test_length_grouped_batches_cover_everything_once():
    lengths = [random.Random(1).randint(3, 60) for _ in range(1000)]
    batches = length_grouped_batches(lengths, 32, random.Random(0), group=4)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 10  # sorted inside chunks: little padding per batch


def test_pad_batch_dynamic_padding():
    batch = pad_batch([{"input_ids": [2, 5, 3], "token_type_ids": [0, 0, 0], "labels": [1, -100, 0]},
                       {"input_ids": [2, 3], "token_type_ids": [0, 0], "labels": [0, 1]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[1, -100, 0], [0, 1, -100]]
    assert isinstance(Encoded([]).features, list)
