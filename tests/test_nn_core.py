"""The core's building blocks: attention masks with a bias, the KV cache, norms, gated feed-forward,
encoder-decoder stacks, attention scores on request."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lmforge.config import CheckpointConfig, ModelConfig
from lmforge.models import TaskModel, load_model, save_model
from lmforge.models.seq2seq import EncoderDecoder
from lmforge.nn.attention import attend
from lmforge.nn.cache import KVCache
from lmforge.nn.feedforward import FeedForward
from lmforge.nn.masks import AttnMask, self_attention_mask
from lmforge.nn.norms import RMSNorm
from lmforge.nn.projection import output_projection

TINY = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37, vocab_size=99,
            max_position_embeddings=64, dropout=0.0, attention_dropout=0.0)


def tiny_gpt2(**overrides) -> TaskModel:
    return TaskModel(ModelConfig.from_name("gpt2", **{**TINY, **overrides}), {"lm": {"kind": "clm"}}).eval()


def left_padded(batch: int = 3, length: int = 9, vocab: int = 99):
    ids = torch.randint(0, vocab, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, :3] = 0  # left padding
    mask[2, :6] = 0
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)  # real tokens count from 0 after the padding


@pytest.mark.parametrize("causal", [False, True])
def test_bias_and_keep_give_the_same_result_on_sdpa_and_written_out_paths(causal):
    q, k, v = (torch.randn(2, 3, 6, 8) for _ in range(3))
    padding = torch.ones(2, 6, dtype=torch.long)
    padding[1, 4:] = 0
    bias = torch.randn(1, 3, 6, 6)
    mask = self_attention_mask(padding, causal, 6).with_bias(bias)
    fused, _ = attend(q, k, v, mask)
    written, scores = attend(q, k, v, mask, need_weights=True)
    torch.testing.assert_close(fused, written)
    torch.testing.assert_close(scores, q @ k.transpose(-1, -2) / 8 ** 0.5 + bias)
    # reference: the additive form written by hand
    keep = padding.bool()[:, None, None, :] & (torch.ones(6, 6).tril().bool() if causal else True)
    ref = ((q @ k.transpose(-1, -2) / 8 ** 0.5 + bias).masked_fill(~keep, float("-inf")).softmax(-1)) @ v
    torch.testing.assert_close(fused, ref)


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_training_attention_written_out_on_cpu_equals_sdpa(causal):
    """bf16 attention that needs gradients takes the written-out path on CPU at short lengths (faster
    to differentiate there than SDPA's kernel) and gives SDPA's output and gradients within bf16 rounding."""
    import lmforge.nn.attention as attention

    padding = torch.ones(2, 6, dtype=torch.long)
    padding[1, 4:] = 0
    mask = self_attention_mask(padding, causal, 6)
    leaves = [torch.randn(2, 3, 6, 8, requires_grad=True) for _ in range(3)]
    q, k, v = (x.bfloat16() for x in leaves)
    assert attention._written_out_trains_faster(q, k) and not attention._written_out_trains_faster(q.float(), k)
    grad = torch.randn(2, 3, 6, 8, dtype=torch.bfloat16)
    written = attend(q, k, v, mask)[0]
    got = torch.autograd.grad(written, leaves, grad)
    attn_mask, is_causal = mask.for_sdpa(q.dtype)
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    expected = torch.autograd.grad(fused, leaves, grad)
    torch.testing.assert_close(written, fused, rtol=2e-2, atol=2e-2)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=3e-2, atol=3e-2)
    with torch.no_grad():  # without gradients SDPA is the faster one
        assert not attention._written_out_trains_faster(q, k)


def test_causal_flag_with_a_bias_spells_the_triangle_out():
    q, k, v = (torch.randn(1, 2, 5, 4) for _ in range(3))
    bias = torch.randn(1, 2, 5, 5)
    mask = AttnMask(is_causal=True).with_bias(bias)
    assert not mask.is_causal and mask.keep is not None
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.masked_fill(~torch.ones(5, 5).tril().bool(), -1e9))
    torch.testing.assert_close(attend(q, k, v, mask)[0], ref)


def test_cached_decoding_equals_the_full_forward_with_left_padding():
    torch.manual_seed(1)
    model = tiny_gpt2()
    ids, mask = left_padded()
    with torch.no_grad():
        full = model.backbone(ids, mask, position_ids=positions(mask)).last_hidden_state
        cache = KVCache()
        prompt = 5
        first = model.backbone(ids[:, :prompt], mask[:, :prompt], position_ids=positions(mask)[:, :prompt],
                               cache=cache).last_hidden_state
        steps = [first]
        for t in range(prompt, ids.shape[1]):
            step = model.backbone(ids[:, t:t + 1], mask[:, :t + 1], position_ids=positions(mask)[:, t:t + 1],
                                  cache=cache)
            steps.append(step.last_hidden_state)
    cached = torch.cat(steps, dim=1)
    real = mask.bool()
    torch.testing.assert_close(cached[real], full[real], atol=1e-5, rtol=1e-5)
    assert cache.length == ids.shape[1]


def test_cache_grows_past_its_capacity_and_reorders_beams():
    cache = KVCache(capacity=2)
    k = torch.arange(2 * 1 * 3 * 2, dtype=torch.float).view(2, 1, 3, 2)
    got_k, _ = cache.update(0, k, k)
    cache.advance(3)
    more = torch.full((2, 1, 1, 2), -1.0)
    got_k, _ = cache.update(0, more, more)
    cache.advance(1)
    assert got_k.shape == (2, 1, 4, 2)
    torch.testing.assert_close(got_k[:, :, :3], k)
    cache.reorder(torch.tensor([1, 1]))
    k2, _ = cache.update(0, more[:, :, :0], more[:, :, :0])
    torch.testing.assert_close(k2[0], k2[1])
    torch.testing.assert_close(k2[0, :, :3], k[1])


def test_cache_drops_rows_with_their_cross_attention_states():
    cache = KVCache(capacity=8)
    k = torch.arange(3 * 1 * 2 * 2, dtype=torch.float).view(3, 1, 2, 2)
    cache.update(0, k, k)
    cache.advance(2)
    memory = torch.arange(3, dtype=torch.float).view(3, 1, 1, 1).expand(3, 1, 5, 2)
    cache.cross(0, lambda: (memory, memory))
    cache.reorder(torch.tensor([2, 0]), sources=torch.tensor([2, 0]))  # source 1 is done; 2 and 0 stay
    got_k, _ = cache.update(0, k[:2, :, :0], k[:2, :, :0])
    torch.testing.assert_close(got_k, k[[2, 0]])
    cross_k, _ = cache.cross(0, lambda: pytest.fail("cross keys/values are kept, not recomputed"))
    torch.testing.assert_close(cross_k, memory[[2, 0]])


@pytest.mark.parametrize("shape", [(1, 64), (3, 64), (2, 5, 64), (40, 64), (3, 9, 64)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("vocab", [300, 2500])  # one column block; several, the last one partial
def test_output_projection_is_linear(shape, with_bias, vocab):
    torch.manual_seed(0)
    x, weight = torch.randn(shape), torch.randn(vocab, 64)
    bias = torch.randn(vocab) if with_bias else None
    with torch.no_grad():
        got = output_projection(x, weight, bias)
    assert got.shape == (*shape[:-1], vocab) and got.is_contiguous()
    torch.testing.assert_close(got, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    x.requires_grad_(True)  # with autograd it is F.linear itself
    output_projection(x, weight, bias).sum().backward()
    assert x.grad is not None


def test_rms_norm_is_the_t5_formula():
    norm = RMSNorm(8, eps=1e-6)
    norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 8)
    expected = norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), expected)
    assert norm(x.bfloat16()).dtype == torch.float32  # computed in fp32, weight fp32


def test_gated_feed_forward():
    ff = FeedForward(8, 16, "gelu", gated=True, bias=False)
    x = torch.randn(2, 8)
    expected = ff.fc_out(F.gelu(ff.fc_in(x)) * ff.fc_up(x))
    torch.testing.assert_close(ff(x), expected)
    assert ff.fc_in.bias is None and ff.fc_out.bias is None


def tiny_seq2seq() -> EncoderDecoder:
    config = ModelConfig.from_name("bert-tiny", **{**TINY, "num_decoder_layers": 3, "pooler": False, "classifier_style": "first_mlp",
                                                   "type_vocab_size": 0})
    return EncoderDecoder(config).eval()


def test_encoder_decoder_cached_decoding_equals_teacher_forcing():
    torch.manual_seed(2)
    model = tiny_seq2seq()
    src = torch.randint(0, 99, (2, 7))
    src_mask = torch.ones(2, 7, dtype=torch.long)
    src_mask[1, 5:] = 0
    tgt = torch.randint(0, 99, (2, 6))
    with torch.no_grad():
        full = model(src, src_mask, tgt).last_hidden_state
        encoded = model.encode(src, src_mask)
        cache = KVCache()
        steps = [model.decode(tgt[:, t:t + 1], encoded, cache=cache).last_hidden_state for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert model.decoder.embeddings.tok is model.encoder.embeddings.tok  # one token table (§3.4)


def test_cross_attention_memory_shared_by_consecutive_query_rows_equals_it_repeated():
    """Beam search decodes g rows per source against one row of encoder states: the same result as the
    states repeated per row, with and without a cache, source padding included."""
    torch.manual_seed(5)
    model = tiny_seq2seq()
    src = torch.randint(0, 99, (2, 7))
    src_mask = torch.ones(2, 7, dtype=torch.long)
    src_mask[0, 4:] = 0
    tgt = torch.randint(0, 99, (6, 5))  # 3 rows per source
    with torch.no_grad():
        encoded = model.encode(src, src_mask)
        repeated = model.encode(src.repeat_interleave(3, 0), src_mask.repeat_interleave(3, 0))
        shared = model.decode(tgt, encoded).last_hidden_state
        torch.testing.assert_close(shared, model.decode(tgt, repeated).last_hidden_state, atol=1e-5, rtol=1e-5)
        cache = KVCache()
        steps = [model.decode(tgt[:, t:t + 1], encoded, cache=cache).last_hidden_state for t in range(5)]
        torch.testing.assert_close(torch.cat(steps, 1), shared, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="cannot share"):
            model.decode(tgt[:5], encoded)


def test_encoder_decoder_ignores_source_padding():
    torch.manual_seed(3)
    model = tiny_seq2seq()
    src = torch.randint(0, 99, (1, 5))
    tgt = torch.randint(0, 99, (1, 4))
    padded = torch.cat([src, torch.randint(0, 99, (1, 3))], 1)
    mask = torch.tensor([[1] * 5 + [0] * 3])
    with torch.no_grad():
        alone = model(src, None, tgt).last_hidden_state
        with_pad = model(padded, mask, tgt).last_hidden_state
    torch.testing.assert_close(alone, with_pad, atol=1e-5, rtol=1e-5)


def test_encoder_decoder_task_model_saves_and_loads(tmp_path):
    config = ModelConfig.from_name("bert-tiny", **{**TINY, "num_decoder_layers": 1, "pooler": False,
                                                   "classifier_style": "first_mlp"})
    model = TaskModel(config, {"lm": {"kind": "clm"}}).eval()
    assert config.arch == "encoder-decoder"
    save_model(model, tmp_path)
    assert CheckpointConfig.load(tmp_path).model.arch == "encoder-decoder"
    loaded = load_model(tmp_path).eval()
    batch = dict(input_ids=torch.randint(0, 99, (2, 5)), decoder_input_ids=torch.randint(0, 99, (2, 4)))
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).backbone.last_hidden_state,
                                   model(**batch).backbone.last_hidden_state, atol=0, rtol=0)


def test_attention_scores_on_request():
    model = TaskModel(ModelConfig.from_name("bert-tiny", **TINY)).eval()
    ids = torch.randint(0, 99, (2, 6))
    with torch.no_grad():
        out = model.backbone(ids, output_attentions=True, output_hidden_states=True)
        plain = model.backbone(ids).last_hidden_state
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 6, 6)
    torch.testing.assert_close(out.last_hidden_state, plain)  # the written-out path computes the same
    layer = model.backbone.layers[0]
    q, k, _ = layer.attn._heads(layer.attn.qkv(out.hidden_states[0]), 3)
    torch.testing.assert_close(out.attentions[0], q @ k.transpose(-1, -2) / 8 ** 0.5)
