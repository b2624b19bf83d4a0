"""Attention written out (003, "Transformers"; 002, "ATTENTION (in RNN)", "TRANSFORMER").

- :func:`scaled_dot_product_attention`: ``softmax(Q K^T / sqrt(d) + mask) V`` (Vaswani et al.,
  "Attention Is All You Need", NeurIPS 2017, Eq. 1), returning the output and the weights.
- :class:`MultiHeadAttention`: ``h`` heads of width ``d = E / h`` side by side, their outputs
  concatenated and projected.  Parameters named and shaped as ``torch.nn.MultiheadAttention``'s
  (``in_proj_weight (3E, E)``: query, key and value projections stacked; ``in_proj_bias (3E,)``;
  ``out_proj``), so state dicts move either way; always batch-first.
- :class:`AdditiveAttention`: Bahdanau et al., "Neural Machine Translation by Jointly Learning
  to Align and Translate" (ICLR 2015): ``score(q, k) = v^T tanh(W_q q + W_k k)``.
- :class:`TransformerDecoderLayer`: masked self-attention, cross-attention to the encoder's
  memory, feed-forward, each with a residual and a LayerNorm, after (post-norm, the paper) or
  before (pre-norm) the sublayer; submodules named as ``torch.nn.TransformerDecoderLayer``'s.
- :func:`sinusoidal_positional_encoding` and :func:`causal_mask`.

Masks follow ``torch.nn.MultiheadAttention``: a bool mask is True where attention is NOT allowed
(``causal_mask`` is True above the diagonal, a key padding mask True at the padding); a float
mask is added to the scores (``-inf`` blocks, 0 lets through).  ``attn_mask`` is ``(L, S)`` for
every sequence and head or ``(B * h, L, S)`` per sequence and head (index ``b * h + head``);
``key_padding_mask`` is ``(B, S)``.  Beware that ``torch.nn.functional.scaled_dot_product_attention``
reads a bool mask the other way round (True = take part).  A query whose every key is masked gets
NaN weights and output, as in torch's ``MultiheadAttention``; mask padding keys, never every key.
"""

from __future__ import annotations

import math
from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.errors import UserError

__all__ = [
    "AdditiveAttention",
    "MultiHeadAttention",
    "TransformerDecoderLayer",
    "causal_mask",
    "scaled_dot_product_attention",
    "sinusoidal_positional_encoding",
]


def _additive(mask: Tensor, dtype: torch.dtype, name: str) -> Tensor:
    """A bool mask (True = blocked) as 0 / -inf to add to the scores; a float mask as it is."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    if not mask.is_floating_point():
        raise UserError(f"{name} has dtype {mask.dtype}: give a bool mask (True = blocked) or a float one (added)")
    return mask.to(dtype)


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                                 dropout_p: float = 0.0) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T / sqrt(d) + mask) v`` for ``q (..., L, d)``, ``k (..., S, d)``,
    ``v (..., S, d_v)``: returns the output ``(..., L, d_v)`` and the weights ``(..., L, S)``.

    ``mask`` broadcasts to ``(..., L, S)``: bool True = the query may not look at the key, float =
    added to the scores.  ``dropout_p`` drops attention weights (pass 0 in evaluation).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])          # (..., L, S)
    if mask is not None:
        scores = scores + _additive(mask, scores.dtype, "mask")
    weights = scores.softmax(dim=-1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v, weights


def causal_mask(size: int, device: torch.device | str | None = None) -> Tensor:
    """``(size, size)`` bool, True above the diagonal: position ``i`` may look at ``j <= i`` only.
    The bool form of ``torch.nn.Transformer.generate_square_subsequent_mask``."""
    return torch.ones(size, size, dtype=torch.bool, device=device).triu(1)


def sinusoidal_positional_encoding(length: int, dim: int, device: torch.device | str | None = None,
                                   dtype: torch.dtype = torch.float32) -> Tensor:
    """``(length, dim)``: ``PE[pos, 2i] = sin(pos / 10000^(2i/dim))``, ``PE[pos, 2i+1] =
    cos(pos / 10000^(2i/dim))`` (Vaswani et al. 2017, Sec. 3.5), computed in float64.  An odd
    ``dim`` ends with a sine."""
    if length < 0 or dim < 1:
        raise UserError(f"need length >= 0 and dim >= 1, got length={length}, dim={dim}")
    pos = torch.arange(length, dtype=torch.float64, device=device)[:, None]
    freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)   # (ceil(dim/2),)
    angle = pos * freq                                                                       # (length, ceil(dim/2))
    pe = torch.empty(length, dim, dtype=torch.float64, device=device)
    pe[:, 0::2] = angle.sin()
    pe[:, 1::2] = angle[:, :dim // 2].cos()
    return pe.to(dtype)


class MultiHeadAttention(nn.Module):
    """Multi-head attention laid out like ``torch.nn.MultiheadAttention(batch_first=True)``.

    Args:
        embed_dim: model width ``E`` of queries, keys and values.
        num_heads: ``h``; each head has width ``E / h``.
        dropout: dropout on the attention weights (training only).
        bias: biases of the input and output projections.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads:
            raise UserError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}: pick a divisor")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim = embed_dim // num_heads
        factory = dict(device=device, dtype=dtype)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
        self.register_parameter("in_proj_bias", nn.Parameter(torch.empty(3 * embed_dim, **factory)) if bias else None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.init_weights()

    def init_weights(self) -> None:
        """torch's initialisation: Xavier-uniform input projections, ``nn.Linear``'s default for
        the output projection, zero biases."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        self.out_proj.reset_parameters()
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> Self:
        """The equivalent module with ``module``'s weights copied (same device, dtype and training
        mode); vislab's is batch-first whatever ``module.batch_first`` says."""
        if not isinstance(module, nn.MultiheadAttention):
            raise UserError("MultiHeadAttention.from_torch takes a torch.nn.MultiheadAttention, "
                            f"got {type(module).__name__}")
        if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
            raise UserError("vislab's MultiHeadAttention has no kdim/vdim, add_bias_kv or add_zero_attn: "
                            "from_torch needs a torch module built without them")
        p = module.in_proj_weight
        mha = cls(module.embed_dim, module.num_heads, module.dropout, bias=module.in_proj_bias is not None,
                  device=p.device, dtype=p.dtype)
        mha.load_state_dict(module.state_dict())
        return mha.train(module.training)

    def _mask(self, attn_mask: Tensor | None, key_padding_mask: Tensor | None, B: int, L: int, S: int,
              dtype: torch.dtype) -> Tensor | None:
        """The two masks as one additive mask broadcastable to ``(B, h, L, S)``."""
        mask = None
        if attn_mask is not None:
            if attn_mask.shape == (L, S):
                mask = _additive(attn_mask, dtype, "attn_mask")
            elif attn_mask.shape == (B * self.num_heads, L, S):
                mask = _additive(attn_mask, dtype, "attn_mask").view(B, self.num_heads, L, S)
            else:
                raise UserError(f"attn_mask has shape {tuple(attn_mask.shape)}: expected (L, S) = {(L, S)} "
                                f"or (B * num_heads, L, S) = {(B * self.num_heads, L, S)}")
        if key_padding_mask is not None:
            if key_padding_mask.shape != (B, S):
                raise UserError(f"key_padding_mask has shape {tuple(key_padding_mask.shape)}: "
                                f"expected (B, S) = {(B, S)}")
            pad = _additive(key_padding_mask, dtype, "key_padding_mask")[:, None, None, :]   # (B, 1, 1, S)
            mask = pad if mask is None else mask + pad
        return mask

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                attn_mask: Tensor | None = None, need_weights: bool = True,
                average_attn_weights: bool = True) -> tuple[Tensor, Tensor | None]:
        """``query (B, L, E)``, ``key`` and ``value (B, S, E)`` -> output ``(B, L, E)`` and the
        weights: ``(B, L, S)`` averaged over the heads, ``(B, h, L, S)`` if not
        ``average_attn_weights``, None if not ``need_weights``.  Masks: module docstring."""
        E = self.embed_dim
        if query.dim() != 3 or key.dim() != 3 or key.shape != value.shape or query.shape[-1] != E \
                or key.shape[0] != query.shape[0] or key.shape[-1] != E:
            raise UserError(f"expected batch-first query (B, L, {E}) and key = value shapes (B, S, {E}), "
                            f"got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
        (B, L, _), S, h = query.shape, key.shape[1], self.num_heads
        biases = (None,) * 3 if self.in_proj_bias is None else self.in_proj_bias.chunk(3)
        q, k, v = (F.linear(x, w, b).view(B, -1, h, self.head_dim).transpose(1, 2)          # (B, h, L or S, d)
                   for x, w, b in zip((query, key, value), self.in_proj_weight.chunk(3), biases))
        mask = self._mask(attn_mask, key_padding_mask, B, L, S, q.dtype)
        out, weights = scaled_dot_product_attention(q, k, v, mask, self.dropout if self.training else 0.0)
        out = self.out_proj(out.transpose(1, 2).reshape(B, L, E))                           # heads concatenated
        if not need_weights:
            return out, None
        return out, weights.mean(dim=1) if average_attn_weights else weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"


class AdditiveAttention(nn.Module):
    """Bahdanau attention: ``e_j = v^T tanh(W_q q + W_k k_j)``, ``a = softmax(e)`` over the keys,
    context ``sum_j a_j v_j`` (the values are the keys unless given), without biases as in the
    paper.

    Args:
        query_dim: width of the query (the decoder state).
        key_dim: width of the keys (the encoder states).
        hidden_dim: width of the alignment model's hidden layer.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False, **factory)    # W_q
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=False, **factory)        # W_k
        self.score = nn.Linear(hidden_dim, 1, bias=False, **factory)                 # v^T

    def forward(self, query: Tensor, keys: Tensor, values: Tensor | None = None,
                mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``query (B, Dq)`` or ``(B, L, Dq)``, ``keys (B, S, Dk)``, ``values (B, S, Dv)``, ``mask
        (B, S)`` bool, True at keys to ignore (padding) -> context ``(B, Dv)`` or ``(B, L, Dv)``
        and weights ``(B, S)`` or ``(B, L, S)``."""
        values = keys if values is None else values
        single = query.dim() == 2
        q = query[:, None] if single else query                                      # (B, L, Dq)
        hidden = torch.tanh(self.query_proj(q)[:, :, None] + self.key_proj(keys)[:, None])  # (B, L, S, H)
        scores = self.score(hidden).squeeze(-1)                                      # (B, L, S)
        if mask is not None:
            if mask.dtype != torch.bool or mask.shape != keys.shape[:2]:
                raise UserError(f"mask must be bool of shape (B, S) = {tuple(keys.shape[:2])}, True at keys to "
                                f"ignore; got {mask.dtype} {tuple(mask.shape)}")
            scores = scores.masked_fill(mask[:, None], float("-inf"))
        weights = scores.softmax(dim=-1)
        context = weights @ values                                                   # (B, L, Dv)
        return (context[:, 0], weights[:, 0]) if single else (context, weights)


class TransformerDecoderLayer(nn.Module):
    """One decoder layer of Vaswani et al. 2017 (Fig. 1, right), batch-first, ReLU feed-forward.

    Post-norm (``norm_first=False``, the paper): ``x = norm(x + sublayer(x))``; pre-norm:
    ``x = x + sublayer(norm(x))``.  Submodules and parameters are named as
    ``torch.nn.TransformerDecoderLayer``'s, so its state dict loads here and back.

    Args:
        d_model: model width.
        nhead: attention heads.
        dim_feedforward: hidden width of the feed-forward network.
        dropout: on the attention weights, inside the feed-forward and on each sublayer's output.
        norm_first: pre-norm instead of post-norm.
        layer_norm_eps: LayerNorm epsilon.
        bias: biases of the linear layers and the LayerNorms.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0,
                 norm_first: bool = False, layer_norm_eps: float = 1e-5, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout, bias, **factory)
        self.multihead_attn = MultiHeadAttention(d_model, nhead, dropout, bias, **factory)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **factory)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model, layer_norm_eps, bias=bias, **factory)
                                              for _ in range(3))
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))

    @classmethod
    def from_torch(cls, module: nn.TransformerDecoderLayer) -> Self:
        """The equivalent layer with ``module``'s weights copied (same device, dtype and training
        mode); batch-first whatever ``module`` is."""
        if not isinstance(module, nn.TransformerDecoderLayer):
            raise UserError(f"TransformerDecoderLayer.from_torch takes a torch.nn.TransformerDecoderLayer, "
                            f"got {type(module).__name__}")
        if not (module.activation is F.relu or isinstance(module.activation, nn.ReLU)):
            raise UserError(f"vislab's TransformerDecoderLayer uses ReLU; the torch layer has {module.activation}")
        p = module.linear1.weight
        layer = cls(module.linear1.in_features, module.self_attn.num_heads, module.linear1.out_features,
                    dropout=module.dropout.p, norm_first=module.norm_first, layer_norm_eps=module.norm1.eps,
                    bias=module.linear1.bias is not None, device=p.device, dtype=p.dtype)
        layer.load_state_dict(module.state_dict())
        return layer.train(module.training)

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None,
                memory_mask: Tensor | None = None, tgt_key_padding_mask: Tensor | None = None,
                memory_key_padding_mask: Tensor | None = None) -> Tensor:   # (B, T, D), (B, S, D) -> (B, T, D)
        """``tgt_mask`` is usually :func:`causal_mask` ``(T)``; masks as in :class:`MultiHeadAttention`."""
        x = tgt
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), tgt_mask, tgt_key_padding_mask)
            x = x + self._cross_attention(self.norm2(x), memory, memory_mask, memory_key_padding_mask)
            x = x + self._feed_forward(self.norm3(x))
        else:
            x = self.norm1(x + self._self_attention(x, tgt_mask, tgt_key_padding_mask))
            x = self.norm2(x + self._cross_attention(x, memory, memory_mask, memory_key_padding_mask))
            x = self.norm3(x + self._feed_forward(x))
        return x

    def _self_attention(self, x: Tensor, mask: Tensor | None, padding: Tensor | None) -> Tensor:
        x = self.self_attn(x, x, x, key_padding_mask=padding, attn_mask=mask, need_weights=False)[0]
        return self.dropout1(x)

    def _cross_attention(self, x: Tensor, memory: Tensor, mask: Tensor | None, padding: Tensor | None) -> Tensor:
        x = self.multihead_attn(x, memory, memory, key_padding_mask=padding, attn_mask=mask, need_weights=False)[0]
        return self.dropout2(x)

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x)))))
