"""vislab.sequence.attention against torch.nn.MultiheadAttention, torch.nn.TransformerDecoderLayer
and torch.nn.functional.scaled_dot_product_attention with copied weights, and against the
formulas written out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vislab.errors import UserError
from vislab.sequence.attention import (
    AdditiveAttention,
    MultiHeadAttention,
    TransformerDecoderLayer,
    causal_mask,
    scaled_dot_product_attention,
    sinusoidal_positional_encoding,
)

TOL = dict(rtol=1e-5, atol=1e-5)
B, L, S, E, H = 3, 5, 7, 16, 4


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def padding(lengths: list[int], size: int) -> torch.Tensor:
    """(len(lengths), size) bool, True past each length."""
    return torch.arange(size)[None] >= torch.tensor(lengths)[:, None]


def assert_same_grads(ours: nn.Module, ref: nn.Module, inputs: list[torch.Tensor], ref_inputs: list[torch.Tensor]):
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, **TOL, msg=name)
    for x, y in zip(inputs, ref_inputs):
        torch.testing.assert_close(x.grad, y.grad, **TOL)


def test_sdpa_matches_torch_functional_with_its_opposite_bool_convention():
    q, k, v = randn(B, H, L, 8, seed=1), randn(B, H, S, 8, seed=2), randn(B, H, S, 6, seed=3)
    blocked = torch.rand(L, S, generator=torch.Generator().manual_seed(4)) < 0.4
    blocked[:, 0] = False                                   # every query keeps a key
    out, w = scaled_dot_product_attention(q, k, v, blocked)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=~blocked), **TOL)
    assert (w[..., blocked] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, L), **TOL)
    additive = randn(L, S, seed=5)
    out, w = scaled_dot_product_attention(q, k, v, additive)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=additive), **TOL)
    torch.testing.assert_close(w, torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8) + additive, -1), **TOL)


def torch_pair(bias=True, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(E, H, dropout=dropout, bias=bias, batch_first=True)
    with torch.no_grad():                        # biases start at zero: make them count
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return MultiHeadAttention.from_torch(ref), ref


def attn_masks(kind: str, T: int, S_: int):
    """(attn_mask, key_padding_mask) for one of the mask cases."""
    causal = causal_mask(T) if T == S_ else None
    kpm = padding([S_, S_ - 2, S_ - 3], S_)
    return {
        "none": (None, None),
        "causal_bool": (causal, None),
        "causal_float": (nn.Transformer.generate_square_subsequent_mask(T) if T == S_ else None, None),
        "padding_bool": (None, kpm),
        "padding_float": (None, torch.zeros(B, S_).masked_fill(kpm, float("-inf"))),
        "causal_and_padding": (causal, kpm),
        "float_random": (randn(T, S_, seed=9), None),
        "per_head": (torch.rand(B * H, T, S_, generator=torch.Generator().manual_seed(3)) < 0.3, kpm),
    }[kind]


MASK_CASES = [(mode, kind) for mode in ("self", "cross")
              for kind in ("none", "causal_bool", "causal_float", "padding_bool", "padding_float",
                           "causal_and_padding", "float_random", "per_head")
              if mode == "self" or not kind.startswith("causal")]      # a causal mask is square


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode,mask_kind", MASK_CASES)
def test_multihead_attention_matches_torch(mode, mask_kind, bias, average):
    ours, ref = torch_pair(bias=bias)
    S_ = L if mode == "self" else S
    attn_mask, kpm = attn_masks(mask_kind, L, S_)
    if mask_kind == "per_head":
        attn_mask[..., 0] = False                   # no query loses every key
    x, mem = randn(B, L, E, seed=1), randn(B, S_, E, seed=2)
    inputs = [x.clone().requires_grad_()] + ([] if mode == "self" else [mem.clone().requires_grad_()])
    ref_inputs = [t.clone().detach().requires_grad_() for t in inputs]

    def run(module, xs):
        kv = xs[0] if mode == "self" else xs[1]
        return module(xs[0], kv, kv, key_padding_mask=kpm, attn_mask=attn_mask, average_attn_weights=average)

    out, w = run(ours, inputs)
    ref_out, ref_w = run(ref, ref_inputs)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(w, ref_w, **TOL)
    assert w.shape == ((B, L, S_) if average else (B, H, L, S_))
    g_out, g_w = randn(*out.shape, seed=7), randn(*w.shape, seed=8)
    ((out * g_out).sum() + (w * g_w).sum()).backward()
    ((ref_out * g_out).sum() + (ref_w * g_w).sum()).backward()
    assert_same_grads(ours, ref, inputs, ref_inputs)


def test_multihead_attention_eval_without_weights_matches_torch_fast_path():
    ours, ref = torch_pair()
    ours.eval(), ref.eval()
    x, kpm = randn(B, L, E), padding([L, 3, 2], L)
    with torch.no_grad():                           # torch takes its fused inference path here
        out, w = ours(x, x, x, key_padding_mask=kpm, need_weights=False)
        ref_out, _ = ref(x, x, x, key_padding_mask=kpm, need_weights=False)
    assert w is None
    keep = ~padding([L, 3, 2], L)                   # the fused path zeroes padded query rows
    torch.testing.assert_close(out[keep], ref_out[keep], **TOL)


def test_multihead_attention_dropout_matches_torch_with_the_same_seed():
    ours, ref = torch_pair(dropout=0.3)
    x = randn(B, L, E)
    torch.manual_seed(5)
    out, w = ours(x, x, x)
    torch.manual_seed(5)
    ref_out, ref_w = ref(x, x, x)
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(w, ref_w, **TOL)
    assert ours.training and not torch.equal(out, ours.eval()(x, x, x)[0])


def test_multihead_attention_state_dict_and_init_like_torch():
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(E, H, batch_first=True)
    torch.manual_seed(0)
    ours = MultiHeadAttention(E, H)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for (name, p), q in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert p.shape == q.shape, name
    assert (ours.in_proj_bias == 0).all() and (ours.out_proj.bias == 0).all()
    bound = math.sqrt(6 / (E + 3 * E))                                 # Xavier-uniform of a (3E, E) matrix
    assert ours.in_proj_weight.abs().max() <= bound
    ref.load_state_dict(ours.state_dict())                             # and back
    no_bias = MultiHeadAttention(E, H, bias=False)
    assert no_bias.state_dict().keys() == nn.MultiheadAttention(E, H, bias=False).state_dict().keys()


def test_multihead_attention_errors():
    with pytest.raises(UserError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(UserError, match="kdim"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(E, H, kdim=8, vdim=8))
    mha = MultiHeadAttention(E, H)
    x = randn(B, L, E)
    with pytest.raises(UserError, match="batch-first"):
        mha(x[0], x[0], x[0])
    with pytest.raises(UserError, match="attn_mask has shape"):
        mha(x, x, x, attn_mask=causal_mask(L + 1))
    with pytest.raises(UserError, match="key_padding_mask has shape"):
        mha(x, x, x, key_padding_mask=padding([1, 2], L))
    with pytest.raises(UserError, match="dtype"):
        mha(x, x, x, attn_mask=causal_mask(L).long())


def decoder_pair(norm_first: bool, seed=0):
    torch.manual_seed(seed)
    ref = nn.TransformerDecoderLayer(E, H, dim_feedforward=24, dropout=0.0, norm_first=norm_first, batch_first=True)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return TransformerDecoderLayer.from_torch(ref), ref


@pytest.mark.parametrize("tgt_mask_kind", ["bool", "float"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(norm_first, tgt_mask_kind):
    ours, ref = decoder_pair(norm_first)
    tgt_mask, tgt_kpm, mem_kpm = causal_mask(L), padding([L, L - 1, 3], L), padding([S, 4, 2], S)
    if tgt_mask_kind == "float":                    # torch deprecates mixing bool and float masks
        tgt_mask, tgt_kpm, mem_kpm = (torch.zeros(m.shape).masked_fill(m, float("-inf"))
                                      for m in (tgt_mask, tgt_kpm, mem_kpm))
    inputs = [randn(B, L, E, seed=1).requires_grad_(), randn(B, S, E, seed=2).requires_grad_()]
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    masks = dict(tgt_mask=tgt_mask, tgt_key_padding_mask=tgt_kpm, memory_key_padding_mask=mem_kpm)
    out = ours(*inputs, **masks)
    ref_out = ref(*ref_inputs, **masks)
    torch.testing.assert_close(out, ref_out, **TOL)
    g = randn(*out.shape, seed=3)
    (out * g).sum().backward()
    (ref_out * g).sum().backward()
    assert_same_grads(ours, ref, inputs, ref_inputs)


def test_decoder_layer_memory_mask_and_state_dict():
    ours, ref = decoder_pair(norm_first=False, seed=1)
    x, mem = randn(B, L, E, seed=1), randn(B, S, E, seed=2)
    memory_mask = torch.rand(L, S, generator=torch.Generator().manual_seed(0)) < 0.5
    memory_mask[:, 0] = False
    torch.testing.assert_close(ours(x, mem, memory_mask=memory_mask), ref(x, mem, memory_mask=memory_mask), **TOL)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    fresh = TransformerDecoderLayer(E, H, 24)
    fresh.load_state_dict(ref.state_dict())
    torch.testing.assert_close(fresh(x, mem), ref(x, mem), **TOL)
    with pytest.raises(UserError, match="ReLU"):
        TransformerDecoderLayer.from_torch(nn.TransformerDecoderLayer(E, H, 24, activation="gelu"))


def test_sinusoidal_positional_encoding_hand_values():
    pe = sinusoidal_positional_encoding(3, 4, dtype=torch.float64)
    # dim 4: frequencies 1 and 1/10000^(2/4) = 1/100
    expected = torch.tensor([[0.0, 1.0, 0.0, 1.0],
                             [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
                             [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)]], dtype=torch.float64)
    torch.testing.assert_close(pe, expected, rtol=0, atol=1e-15)
    pe = sinusoidal_positional_encoding(50, 10)
    for pos in (0, 7, 49):
        for i in range(10):
            angle = pos / 10000 ** (2 * (i // 2) / 10)
            assert pe[pos, i].item() == pytest.approx(math.sin(angle) if i % 2 == 0 else math.cos(angle), abs=1e-6)
    odd = sinusoidal_positional_encoding(4, 5)
    assert odd.shape == (4, 5) and odd[1, 4].item() == pytest.approx(math.sin(1 / 10000 ** (4 / 5)), abs=1e-7)


def test_causal_mask_is_torch_square_subsequent_mask():
    assert torch.equal(causal_mask(6), nn.Transformer.generate_square_subsequent_mask(6) == float("-inf"))
    assert causal_mask(3).tolist() == [[False, True, True], [False, False, True], [False, False, False]]


def additive_by_hand(att: AdditiveAttention, q, keys, values, mask):
    """e_bj = v . tanh(W_q q_b + W_k k_bj), a softmax over the unmasked keys, context sum_j a_j v_j:
    one query and one key at a time."""
    Wq, Wk, v = att.query_proj.weight, att.key_proj.weight, att.score.weight[0]
    ctx, weights = [], []
    for b in range(q.shape[0]):
        e = torch.stack([v @ torch.tanh(Wq @ q[b] + Wk @ keys[b, j]) for j in range(keys.shape[1])])
        keep = ~mask[b]
        a = torch.zeros_like(e)
        a[keep] = torch.exp(e[keep]) / torch.exp(e[keep]).sum()
        weights.append(a)
        ctx.append(sum(a[j] * values[b, j] for j in range(keys.shape[1])))
    return torch.stack(ctx), torch.stack(weights)


def test_additive_attention():
    torch.manual_seed(0)
    att = AdditiveAttention(query_dim=6, key_dim=5, hidden_dim=8)
    q, keys, values = randn(B, 6, seed=1), randn(B, S, 5, seed=2), randn(B, S, 3, seed=3)
    mask = padding([S, 4, 1], S)
    ctx, w = att(q, keys, values, mask)
    assert ctx.shape == (B, 3) and w.shape == (B, S)
    torch.testing.assert_close(w.sum(-1), torch.ones(B), **TOL)
    assert (w[mask] == 0).all() and w[2, 0] == 1                  # one key left: all the weight
    ref_ctx, ref_w = additive_by_hand(att, q, keys, values, mask)
    torch.testing.assert_close(ctx, ref_ctx, **TOL)
    torch.testing.assert_close(w, ref_w, **TOL)
    # masked keys and values do not matter
    keys2, values2 = keys.clone(), values.clone()
    keys2[mask], values2[mask] = 100.0, -100.0
    ctx2, w2 = att(q, keys2, values2, mask)
    torch.testing.assert_close(ctx2, ctx, rtol=0, atol=0)
    torch.testing.assert_close(w2, w, rtol=0, atol=0)
    # several queries at once, values defaulting to the keys (the encoder states)
    qs = randn(B, L, 6, seed=4)
    ctx_l, w_l = att(qs, keys, mask=mask)
    assert ctx_l.shape == (B, L, 5) and w_l.shape == (B, L, S)
    for t in range(L):
        torch.testing.assert_close(ctx_l[:, t], att(qs[:, t], keys, keys, mask)[0], **TOL)
    with pytest.raises(UserError, match="bool"):
        att(q, keys, values, mask.float())
