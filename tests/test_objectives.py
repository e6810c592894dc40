"""Objectives: MLM statistics and whole words, NSP/SOP pairs against the source, CLM blocks, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.data.pretraining import ObjectiveConfig, PretrainingDataset
from lmforge.data.shards import open_split
from lmforge.objectives.masking import IGNORE, MaskingSpec, mask_tokens

SYLLABLES = ["ka", "lo", "mi", "ren", "tos", "vu", "shal", "de", "qui", "bar", "nes", "po"]


def _corpus(n_docs: int = 40, seed: int = 0) -> list[list[str]]:
    """Documents of sentences of made-up words (letters only, so every tokenizer agrees what a word
    is); each sentence starts with a unique marker word so it can be found in the source."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        sents = []
        for _ in range(int(rng.integers(4, 12))):
            words = ["".join(rng.choice(SYLLABLES, size=rng.integers(1, 5))) for _ in range(rng.integers(3, 14))]
            sents.append(" ".join(words))
        docs.append(sents)
    return docs


def _train_tokenizer(kind: str, docs: list[list[str]]) -> Tokenizer:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    text = [s for d in docs for s in d]
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer()
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials)
    elif kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=100, special_tokens=specials, unk_token="[UNK]")
    tok.train_from_iterator(text, trainer)
    return tok


@pytest.fixture(scope="module")
def docs():
    return _corpus()


@pytest.fixture(scope="module", params=["wordpiece", "bpe", "unigram"])
def prepared(request, tmp_path_factory, docs):
    root = tmp_path_factory.mktemp(request.param)
    tok = _train_tokenizer(request.param, docs)
    (root / "tok").mkdir()
    tok.save(str(root / "tok" / "tokenizer.json"))
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(d) for d in docs) + "\n")
    prepare(PrepareConfig(tokenizer=str(root / "tok"), inputs=[str(corpus)], out=str(root / "out"), progress=False))
    return root / "out", tok, request.param


def _shards(out):
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    return open_split(out / "train", np.dtype(manifest["dtype"]), manifest["splits"]["train"]["shards"])


def test_word_starts_match_the_words_of_each_sentence(prepared, docs):
    out, tok, kind = prepared
    shard = _shards(out)[0]
    sentences = [s for d in docs for s in d]
    assert len(shard.sentences) - 1 == len(sentences)
    for i, text in enumerate(sentences):
        lo, hi = int(shard.sentences[i]), int(shard.sentences[i + 1])
        starts = shard.word_start(lo, hi)
        assert starts.sum() == len(text.split()), (kind, text)
        # each word's tokens decode back to that word
        ids = np.asarray(shard.tokens[lo:hi])
        cuts = np.flatnonzero(starts).tolist() + [hi - lo]
        words = [tok.decode(ids[a:b].tolist()).replace(" ", "") for a, b in zip(cuts[:-1], cuts[1:])]
        assert words == text.split(), (kind, text)


def test_mask_statistics_follow_bert():
    """BERT §3.1 / A.1: 15% selected; of those 80% [MASK], 10% random, 10% unchanged."""
    rng = np.random.default_rng(0)
    spec = MaskingSpec()
    vocab, mask_id = 1000, 4
    pool = np.arange(5, vocab)
    selected = masked = randomized = kept = total = 0
    for _ in range(100):
        ids = rng.integers(5, vocab, size=200)
        special = np.zeros(200, bool)
        special[[0, 199]] = True
        inputs, labels = mask_tokens(ids, np.ones(200, bool), special, rng, spec, mask_id, pool)
        sel = labels != IGNORE
        assert not sel[special].any()
        assert (labels[sel] == ids[sel]).all()
        assert (inputs[~sel] == ids[~sel]).all()
        total += 198
        selected += sel.sum()
        masked += (inputs[sel] == mask_id).sum()
        kept += (inputs[sel] == ids[sel]).sum()
        randomized += ((inputs[sel] != mask_id) & (inputs[sel] != ids[sel])).sum()
    assert abs(selected / total - 0.15) < 0.005  # count-based selection: round(198 * 0.15) each
    assert abs(masked / selected - 0.8) < 0.03
    # a random draw can hit the original id (1/995), so "random" and "unchanged" are ~10% each
    assert abs(randomized / selected - 0.1) < 0.025
    assert abs(kept / selected - 0.1) < 0.025


def test_mlm_rate_is_configurable_and_random_tokens_are_never_special():
    rng = np.random.default_rng(1)
    spec = MaskingSpec(rate=0.3, mask_token_prob=0.0, random_token_prob=1.0)
    ids = rng.integers(5, 50, size=1000)
    inputs, labels = mask_tokens(ids, np.ones(1000, bool), np.zeros(1000, bool), rng, spec, 4, np.arange(5, 50))
    assert (labels != IGNORE).sum() == 300
    assert inputs.min() >= 5


def test_whole_word_masking_masks_complete_words(prepared):
    out, tok, kind = prepared
    ds = PretrainingDataset(out, ObjectiveConfig(kind="mlm", max_seq_len=64, whole_word_masking=True), seed=3)
    shard = _shards(out)[0]
    partial = checked = 0
    for index in range(len(ds)):
        u0, u1 = ds.layout.examples[index], ds.layout.examples[index + 1]
        ex = ds[index]
        selected = ex["mlm_labels"] != IGNORE
        # the example's text tokens, without [CLS]/[SEP], with their word starts from the shard
        is_text = np.isin(np.arange(len(selected)), np.flatnonzero(_text_positions(ds, ex)))
        lo, hi = int(ds.layout.unit_lo[u0]), int(ds.layout.unit_hi[u1 - 1])
        starts = shard.word_start(lo, hi)
        sel = selected[is_text]
        assert len(sel) == hi - lo
        for word in np.split(np.arange(hi - lo), np.flatnonzero(starts)[1:]):
            checked += 1
            partial += 0 < sel[word].sum() < len(word)
    assert checked > 500
    assert partial == 0


def _text_positions(ds, ex):
    special = set(ds.special.all_ids)
    original = np.where(ex["mlm_labels"] != IGNORE, ex["mlm_labels"], ex["input_ids"])
    return ~np.isin(original, list(special))


def test_special_tokens_are_never_masked(prepared):
    out, _, _ = prepared
    for kind in ("mlm", "mlm_nsp", "mlm_sop"):
        ds = PretrainingDataset(out, ObjectiveConfig(kind=kind, max_seq_len=48, mlm_probability=0.5))
        batch = ds.collate([ds[i] for i in range(min(len(ds), 64))])
        ids, labels = batch["input_ids"], batch["mlm_labels"]
        original = np.where(labels != IGNORE, labels, ids)
        is_special = np.isin(original, list(ds.special.all_ids))
        assert (labels.numpy()[is_special] == IGNORE).all()
        assert (original[is_special] == ids.numpy()[is_special]).all()
        assert (labels[batch["attention_mask"] == 0] == IGNORE).all()


def test_static_masks_repeat_and_dynamic_masks_change(prepared):
    out, _, _ = prepared
    for dynamic in (False, True):
        ds = PretrainingDataset(out, ObjectiveConfig(kind="mlm", max_seq_len=64, dynamic_masking=dynamic))
        ds.set_epoch(0)
        first = [ds[i]["mlm_labels"] for i in range(20)]
        ds.set_epoch(1)
        second = [ds[i]["mlm_labels"] for i in range(20)]
        same = sum(np.array_equal(a, b) for a, b in zip(first, second))
        assert same == (20 if not dynamic else same)
        if dynamic:
            assert same < 3


def test_same_seed_epoch_index_gives_same_example(prepared):
    out, _, _ = prepared
    for kind in ("mlm", "mlm_nsp", "mlm_sop", "clm"):
        cfg = ObjectiveConfig(kind=kind, max_seq_len=40)
        a = PretrainingDataset(out, cfg, seed=7)
        b = PretrainingDataset(out, cfg, seed=7)
        a.set_epoch(2), b.set_epoch(2)
        _ = [b[i] for i in reversed(range(len(b)))]  # access order must not matter
        for i in (0, len(a) // 2, len(a) - 1):
            ea, eb = a[i], b[i]
            assert ea.keys() == eb.keys()
            for key in ea:
                assert np.array_equal(ea[key], eb[key]), (kind, key)
        c = PretrainingDataset(out, cfg, seed=8)
        if kind != "clm":
            assert any(not np.array_equal(a[i]["input_ids"], c[i]["input_ids"]) for i in range(10))


def test_nsp_labels_balanced_and_actual_next_follows(prepared):
    out, _, _ = prepared
    # a chunk of a single sentence always gets a random B (reference behaviour), so the balance is
    # ~50% only when several sentences fit in a sequence, (WikiText-2 with WordPiece: 0.56 random at 128 tokens, 0.52 at 256)
    ds = PretrainingDataset(out, ObjectiveConfig(kind="mlm_nsp", max_seq_len=256))
    p = ds.layout
    assert abs(p.label.mean() - 0.5) < 0.1

    def doc_of(tok_pos):
        return ds.corpus.sent_doc[np.searchsorted(ds.corpus.sent_lo, tok_pos, side="right") - 1]

    real = p.label == 0
    assert (p.b_start[real] == p.a_end[real]).all()  # B starts where A ends in the source
    assert (doc_of(p.a_start[real]) == doc_of(p.b_start[real])).all()
    rand = ~real
    assert (doc_of(p.a_start[rand]) != doc_of(p.b_start[rand])).all()
    # the built example holds exactly A then B when nothing was truncated
    for i in np.flatnonzero(real)[:30]:
        ex = ds[i]
        original = np.where(ex["mlm_labels"] != IGNORE, ex["mlm_labels"], ex["input_ids"])
        a, _ = ds.corpus.read(int(p.a_start[i]), int(p.a_end[i]))
        b, _ = ds.corpus.read(int(p.b_start[i]), int(p.b_end[i]))
        if len(a) + len(b) <= 253:
            expect = np.concatenate([[ds.special.cls], a, [ds.special.sep], b, [ds.special.sep]])
            assert np.array_equal(original, expect)
            assert ex["token_type_ids"].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert len(ex["input_ids"]) <= 256


def test_sop_swapped_pairs_are_reversed_real_pairs(prepared):
    out, _, _ = prepared
    ds = PretrainingDataset(out, ObjectiveConfig(kind="mlm_sop", max_seq_len=64))
    p = ds.layout
    assert abs(p.label.mean() - 0.5) < 0.1
    in_order, swapped = p.label == 0, p.label == 1
    assert (p.a_end[in_order] == p.b_start[in_order]).all()
    assert (p.b_end[swapped] == p.a_start[swapped]).all()  # B is the real A, A the real continuation
    batch = ds.collate([ds[i] for i in range(8)])
    assert batch["sop_labels"].tolist() == p.label[:8].tolist()


def test_full_sentences_pack_with_separator_between_documents(prepared):
    out, _, _ = prepared
    ds = PretrainingDataset(out, ObjectiveConfig(kind="mlm", max_seq_len=64))
    crossings = 0
    total_text = 0
    for i in range(len(ds)):
        ex = ds[i]
        original = np.where(ex["mlm_labels"] != IGNORE, ex["mlm_labels"], ex["input_ids"])
        assert len(original) <= 64 and original[0] == ds.special.cls and original[-1] == ds.special.sep
        u0, u1 = ds.layout.examples[i], ds.layout.examples[i + 1]
        changes = int((np.diff(ds.layout.unit_doc[u0:u1]) != 0).sum())
        assert (original == ds.special.sep).sum() == 1 + changes
        crossings += changes
        total_text += int((~np.isin(original, [ds.special.cls, ds.special.sep])).sum())
    assert crossings > 0
    assert total_text == ds.manifest["splits"]["train"]["tokens"]  # every token used exactly once


def test_clm_blocks_hold_documents_and_separators(prepared):
    out, _, _ = prepared
    ds = PretrainingDataset(out, ObjectiveConfig(kind="clm", max_seq_len=32))
    shard = _shards(out)[0]
    stream = []
    for d in range(len(shard.documents) - 1):
        lo = shard.sentences[shard.documents[d]]
        hi = shard.sentences[shard.documents[d + 1]]
        stream.extend(np.asarray(shard.tokens[lo:hi]).tolist() + [ds.corpus.document_end])
    blocks = [ds[i]["input_ids"] for i in range(len(ds))]
    assert all(len(b) == 32 for b in blocks[:-1])
    assert np.concatenate(blocks).tolist() == stream
    batch = ds.collate([ds[len(ds) - 1], ds[0]])
    assert (batch["lm_labels"][batch["attention_mask"] == 0] == IGNORE).all()
    assert (batch["lm_labels"][batch["attention_mask"] == 1] == batch["input_ids"][batch["attention_mask"] == 1]).all()


def test_collate_keys_follow_the_contract(prepared):
    out, _, _ = prepared
    expect = {
        "mlm": {"input_ids", "attention_mask", "mlm_labels"},
        "electra": {"input_ids", "attention_mask", "mlm_labels"},
        "mlm_nsp": {"input_ids", "attention_mask", "token_type_ids", "mlm_labels", "nsp_labels"},
        "mlm_sop": {"input_ids", "attention_mask", "token_type_ids", "mlm_labels", "sop_labels"},
        "clm": {"input_ids", "attention_mask", "lm_labels"},
    }
    for kind, keys in expect.items():
        ds = PretrainingDataset(out, ObjectiveConfig(kind=kind, max_seq_len=32))
        batch = ds.collate([ds[0], ds[1], ds[2]])
        assert set(batch) == keys
        assert all(v.dtype.is_floating_point is False for v in batch.values())


def test_dataset_pickles_for_dataloader_workers(prepared):
    import pickle

    out, _, _ = prepared
    ds = PretrainingDataset(out, ObjectiveConfig(kind="mlm", max_seq_len=32))
    clone = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(clone[5]["input_ids"], ds[5]["input_ids"])


def test_bad_objective_settings_are_refused(prepared):
    out, _, _ = prepared
    with pytest.raises(ValueError, match="kind"):
        ObjectiveConfig(kind="mlm_xyz")
    with pytest.raises(ValueError, match="mask_token_prob"):
        ObjectiveConfig(mask_token_prob=0.95, random_token_prob=0.1)
    with pytest.raises(FileNotFoundError, match="valid"):
        PretrainingDataset(out, ObjectiveConfig(), split="valid")
