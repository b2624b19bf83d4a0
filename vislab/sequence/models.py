"""Sequence models: image captioners and text-to-text encoder-decoders (003, "Seq2Seq and Word
Embedding", "Attention Mechanism in seq2seq models", "Transformers"; 002, "TEXT RAPRESENTATION").

Each is a conditional language model ``p(y_t | y_<t, x)`` with two faces that compute the same
function:

- ``forward(x, tgt_in) -> logits (B, T, V)``: teacher forcing, the decoder fed the ground truth
  ``tgt_in = <sos> y_1 .. y_n`` (:func:`vislab.sequence.text.prepare_targets`); the loss is
  :func:`~vislab.sequence.text.masked_cross_entropy` against ``tgt_out``.
- ``start(x) -> state`` and ``step(tokens (N,), state) -> (log_probs (N, V), state)``: one
  decoding step, the ``step_fn`` of :func:`~vislab.sequence.decode.greedy_decode` and
  :func:`~vislab.sequence.decode.beam_search`.  A state is a dict of tensors, batch (hypotheses)
  along dim 0, so beam search reorders it with ``index_select``.

The recurrent models run one private ``_advance`` for both faces (teacher forcing unrolls it over
``tgt_in``), the Transformer one ``decode`` over a causally masked prefix; decoding a
teacher-forced prefix step by step gives ``forward``'s ``log_softmax`` at every position.

Captioners (kind ``"captioning"``): the encoder is a registry classifier's ``forward_features``
(its head dropped), the ``(B, C, h, w)`` map flattened to ``h * w`` vectors, the *memory*.

- :class:`ShowTell`: Vinyals et al., "Show and Tell" (CVPR 2015).  The pooled image feature enters
  the LSTM once, as its input at step -1; the image is not seen again.
- :class:`ShowAttendTell`: Xu et al., "Show, Attend and Tell" (ICML 2015), soft attention.
  At every step additive attention over the ``h * w`` annotation vectors, the previous hidden
  state the query, gives the context fed to the LSTM with the word.
- :class:`CaptionTransformer`: a Transformer decoder (Vaswani et al. 2017) cross-attending to
  the feature map as tokens.

Seq2seq (kind ``"seq2seq"``): :class:`Seq2Seq`, an LSTM encoder and an LSTM decoder, the
decoder starting from the encoder's final state (the notes' context vector), with or without
Bahdanau attention over every encoder output (Bahdanau et al., ICLR 2015).

Importing this module registers ``show_tell``, ``show_attend_tell``, ``caption_transformer``,
``seq2seq_lstm`` and ``seq2seq_attention``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from vislab.errors import UserError
from vislab.models.registry import create_model, register_model
from vislab.sequence.attention import (
    AdditiveAttention,
    TransformerDecoderLayer,
    causal_mask,
    sinusoidal_positional_encoding,
)
from vislab.sequence.rnn import LSTM, LSTMCell
from vislab.sequence.text import PAD_INDEX, SPECIALS

__all__ = ["CaptionTransformer", "Captioner", "Seq2Seq", "ShowAttendTell", "ShowTell", "sinusoidal_2d"]

State = dict[str, Tensor]


def _check_vocab(num_classes: int, name: str = "num_classes") -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= len(SPECIALS):
        raise UserError(f"{name} is the vocabulary size, the {len(SPECIALS)} special tokens included: "
                        f"give an integer > {len(SPECIALS)}, got {num_classes!r}")


def _check_tokens(tokens: Tensor, name: str, dim: int, batch: int | None = None) -> None:
    if tokens.dim() != dim or tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        shape = "(B, T)" if dim == 2 else "(N,)"
        raise UserError(f"{name} must be integer token ids of shape {shape}, got {tokens.dtype} "
                        f"{tuple(tokens.shape)}")
    if batch is not None and tokens.shape[0] != batch:
        raise UserError(f"{name} has {tokens.shape[0]} sequences for a batch of {batch}: give one per example")


def sinusoidal_2d(height: int, width: int, dim: int, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """``(height * width, dim)`` position code of a feature map flattened row by row: the first
    ``dim / 2`` channels are the 1-D sinusoidal code of the row, the others that of the column
    (the 2-D code of DETR, Carion et al. 2020, on integer positions)."""
    if dim % 2:
        raise UserError(f"the 2-D position code splits dim between rows and columns: give an even dim, got {dim}")
    rows = sinusoidal_positional_encoding(height, dim // 2, device, dtype)   # (h, D/2)
    cols = sinusoidal_positional_encoding(width, dim // 2, device, dtype)    # (w, D/2)
    grid = torch.cat([rows[:, None].expand(-1, width, -1), cols[None].expand(height, -1, -1)], dim=-1)
    return grid.flatten(0, 1)                                                # (h*w, D)


# --- the shared parts -------------------------------------------------------------------------

class _RecurrentDecoding:
    """Teacher forcing and decoding through one recurrence step, so both compute one function.

    Subclasses have ``embed`` (the target word embedding) and ``_advance(x (N, E), state) ->
    (logits (N, V), state)``: one step from an embedded input token.  A state holding
    ``"attention"`` after a step has it collected over the steps by :meth:`_unroll`.
    """

    embed: nn.Embedding

    def _advance(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """``tokens (N,)``, the previous tokens (``<sos>`` first) -> ``log_probs (N, V)`` of the next."""
        _check_tokens(tokens, "tokens", 1)
        logits, state = self._advance(self.embed(tokens), state)
        return logits.log_softmax(dim=-1), state

    def _unroll(self, tgt_in: Tensor, state: State) -> tuple[Tensor, Tensor | None]:
        """Logits ``(B, T, V)`` for ``tgt_in (B, T)`` from ``state``, and the attention weights of
        every step ``(B, T, S)`` (None without attention)."""
        emb = self.embed(tgt_in)                                     # (B, T, E)
        logits, attention = [], []
        for t in range(tgt_in.shape[1]):
            out, state = self._advance(emb[:, t], state)
            logits.append(out)
            if "attention" in state:
                attention.append(state["attention"])
        return torch.stack(logits, dim=1), torch.stack(attention, dim=1) if attention else None


class Captioner(nn.Module):
    """The image side shared by the captioners: a registry backbone's ``forward_features``.

    Args:
        num_classes: vocabulary size ``V``, special tokens included (``<pad>`` = 0).
        in_chans: image channels.
        img_size: the input side for which :attr:`feature_size` is computed; other sizes work,
            with another number of feature vectors.
        backbone: a registered classifier whose ``forward_features`` gives ``(B, C, h, w)``.
        backbone_kwargs: keyword arguments of the backbone's factory (``widths``, ``small_input``...).
    """

    kind = "captioning"

    def __init__(self, num_classes: int, in_chans: int, img_size: int, backbone: str,
                 backbone_kwargs: dict | None) -> None:
        super().__init__()
        _check_vocab(num_classes)
        kwargs = dict(backbone_kwargs or {})
        self.vocab_size, self.in_chans, self.img_size = num_classes, in_chans, img_size
        self.encoder = create_model(backbone, num_classes=1, in_chans=in_chans, **kwargs)
        self.encoder.reset_classifier(0)                 # the classifier head is not used
        with torch.device("meta"):                       # shapes only: no memory, no compute
            probe = create_model(backbone, num_classes=1, in_chans=in_chans, **kwargs).eval()
            fmap = probe.forward_features(torch.empty(1, in_chans, img_size, img_size))
        if fmap.dim() != 4:
            raise UserError(f"backbone {backbone!r} gives features of shape {tuple(fmap.shape[1:])}, not a map "
                            "(C, h, w): use a convolutional backbone such as small_cnn or resnet18")
        self.num_features = fmap.shape[1]                # C
        self.feature_size: tuple[int, int] = tuple(fmap.shape[2:])   # (h, w) for img_size inputs

    def features(self, images: Tensor) -> Tensor:       # (B, C_in, H, W) -> (B, C, h, w)
        if images.dim() != 4 or images.shape[1] != self.in_chans:
            raise UserError(f"expected images (B, {self.in_chans}, H, W), got shape {tuple(images.shape)}")
        return self.encoder.forward_features(images)

    def encode(self, images: Tensor) -> Tensor:         # (B, C_in, H, W) -> (B, h*w, C)
        """The feature map flattened row by row to ``h * w`` vectors."""
        return self.features(images).flatten(2).transpose(1, 2)

    def start(self, images: Tensor) -> State:
        raise NotImplementedError

    def forward(self, images: Tensor, tgt_in: Tensor) -> Tensor:
        raise NotImplementedError

    def _check(self, images: Tensor, tgt_in: Tensor) -> None:
        _check_tokens(tgt_in, "tgt_in", 2, batch=images.shape[0])


# --- captioners -------------------------------------------------------------------------------

class ShowTell(_RecurrentDecoding, Captioner):
    """Show and Tell (Vinyals et al. 2015): ``x_{-1} = W_I CNN(I)``, ``x_t = W_e S_t``,
    ``p_{t+1} = LSTM(x_t)``.

    The image is the LSTM's input at step -1, from a zero state, as in the paper (Sec. 3.1: fed
    once; feeding it at every step overfits); ``start`` runs that step, so the state ``<sos>``
    is fed to already holds the image.  ``CNN(I)`` is the feature map averaged over ``h * w``.

    State: ``memory (N, h*w, C)`` (the feature vectors, not read after ``start``), ``h``, ``c``
    ``(N, hidden_dim)``.

    Args:
        num_classes, in_chans, img_size, backbone, backbone_kwargs: see :class:`Captioner`.
        embed_dim: width of the word embedding and of the projected image.
        hidden_dim: LSTM width.
        dropout: on the LSTM's inputs and on its output before the classifier.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 64, backbone: str = "small_cnn",
                 backbone_kwargs: dict | None = None, embed_dim: int = 128, hidden_dim: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__(num_classes, in_chans, img_size, backbone, backbone_kwargs)
        self.image_proj = nn.Linear(self.num_features, embed_dim)                     # W_I
        self.embed = nn.Embedding(num_classes, embed_dim, padding_idx=PAD_INDEX)      # W_e
        self.cell = LSTMCell(embed_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_dim, num_classes)

    def start(self, images: Tensor) -> State:
        memory = self.encode(images)                                 # (B, h*w, C)
        image = self.image_proj(memory.mean(dim=1))                  # x_{-1}: (B, E)
        h, c = self.cell(self.dropout(image))                        # from the zero state
        return {"memory": memory, "h": h, "c": c}

    def _advance(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = self.cell(self.dropout(x), (state["h"], state["c"]))
        return self.fc(self.dropout(h)), {**state, "h": h, "c": c}

    def forward(self, images: Tensor, tgt_in: Tensor) -> Tensor:   # (B, C, H, W), (B, T) -> (B, T, V)
        self._check(images, tgt_in)
        return self._unroll(tgt_in, self.start(images))[0]


class ShowAttendTell(_RecurrentDecoding, Captioner):
    """Show, Attend and Tell (Xu et al. 2015), soft ("deterministic") attention.

    The feature vectors, projected to ``attention_dim``, are the annotation vectors ``a_i``.
    ``h_0 = f_init,h(mean a)``, ``c_0 = f_init,c(mean a)`` (linear layers).  At step ``t``:
    ``alpha = softmax_i(v^T tanh(W_h h_{t-1} + W_a a_i))`` (:class:`AdditiveAttention`), context
    ``z_t = beta_t sum_i alpha_i a_i`` with the gating scalar ``beta_t = sigmoid(f_beta(h_{t-1}))``
    (Sec. 4.2.1; ``gate=False``: ``beta_t = 1``), ``(h_t, c_t) = LSTM([E y_{t-1}; z_t])`` and the
    logits a linear map of ``[h_t; z_t]``.

    :attr:`last_attention` keeps the weights of the last ``forward``, ``(B, T, h*w)`` in the
    autograd graph, for the doubly stochastic regulariser ``lambda sum_i (1 - sum_t alpha_ti)^2``
    (Sec. 4.2.1; mask the padded steps).

    State: ``memory (N, h*w, attention_dim)`` (the annotation vectors), ``h``, ``c``
    ``(N, hidden_dim)``, and after a step ``attention (N, h*w)``, that step's weights.

    Args:
        num_classes, in_chans, img_size, backbone, backbone_kwargs: see :class:`Captioner`.
        embed_dim: word embedding width.
        hidden_dim: LSTM width (the attention's query).
        dropout: on the word embedding and before the classifier.
        attention_dim: width of the annotation vectors and of the attention's hidden layer.
        gate: the gating scalar ``beta``.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 64, backbone: str = "small_cnn",
                 backbone_kwargs: dict | None = None, embed_dim: int = 128, hidden_dim: int = 256,
                 dropout: float = 0.1, attention_dim: int = 128, gate: bool = True) -> None:
        super().__init__(num_classes, in_chans, img_size, backbone, backbone_kwargs)
        self.annotate = nn.Linear(self.num_features, attention_dim)                   # a_i
        self.init_h = nn.Linear(attention_dim, hidden_dim)                            # f_init,h
        self.init_c = nn.Linear(attention_dim, hidden_dim)                            # f_init,c
        self.attention = AdditiveAttention(hidden_dim, attention_dim, attention_dim)
        self.gate = nn.Linear(hidden_dim, 1) if gate else None                        # f_beta
        self.embed = nn.Embedding(num_classes, embed_dim, padding_idx=PAD_INDEX)
        self.cell = LSTMCell(embed_dim + attention_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_dim + attention_dim, num_classes)
        self.last_attention: Tensor | None = None

    def start(self, images: Tensor) -> State:
        memory = self.annotate(self.encode(images))                  # (B, h*w, D)
        mean = memory.mean(dim=1)                                    # (B, D)
        return {"memory": memory, "h": self.init_h(mean), "c": self.init_c(mean)}

    def _advance(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        h, memory = state["h"], state["memory"]
        context, alpha = self.attention(h, memory)                   # (N, D), (N, h*w)
        if self.gate is not None:
            context = torch.sigmoid(self.gate(h)) * context          # beta_t in (0, 1)
        h, c = self.cell(torch.cat([self.dropout(x), context], dim=1), (h, state["c"]))
        logits = self.fc(self.dropout(torch.cat([h, context], dim=1)))
        return logits, {**state, "h": h, "c": c, "attention": alpha}

    def forward(self, images: Tensor, tgt_in: Tensor) -> Tensor:   # (B, C, H, W), (B, T) -> (B, T, V)
        self._check(images, tgt_in)
        logits, self.last_attention = self._unroll(tgt_in, self.start(images))
        return logits


class CaptionTransformer(Captioner):
    """A Transformer decoder over the image's feature vectors.

    Memory: the feature vectors projected to ``d_model = embed_dim`` plus :func:`sinusoidal_2d`
    of their (row, column).  Decoder: word embedding ``* sqrt(d_model)`` (Vaswani et al. 2017,
    Sec. 3.4) plus the 1-D sinusoidal code, then ``num_layers`` :class:`TransformerDecoderLayer`
    (causally masked self-attention, cross-attention to the memory, feed-forward of width
    ``hidden_dim``), pre-norm with a final LayerNorm by default, and a linear map to ``V``.

    ``step`` runs the decoder over the whole prefix and keeps the last position: simple and
    exact (no key/value cache), ``O(T^2)`` over a caption, which is short.

    State: ``memory (N, h*w, d_model)`` and ``tokens (N, t)``, the inputs fed so far, ``<sos>``
    first (``(N, 0)`` after ``start``).

    Args:
        num_classes, in_chans, img_size, backbone, backbone_kwargs: see :class:`Captioner`.
        embed_dim: ``d_model``.
        hidden_dim: feed-forward width.
        dropout: inside the layers and on the summed embeddings.
        num_layers: decoder layers.
        nhead: attention heads.
        norm_first: pre-norm layers (and a final LayerNorm) instead of the paper's post-norm.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, img_size: int = 64, backbone: str = "small_cnn",
                 backbone_kwargs: dict | None = None, embed_dim: int = 128, hidden_dim: int = 256,
                 dropout: float = 0.1, num_layers: int = 2, nhead: int = 4, norm_first: bool = True) -> None:
        super().__init__(num_classes, in_chans, img_size, backbone, backbone_kwargs)
        self.d_model = embed_dim
        self.image_proj = nn.Linear(self.num_features, embed_dim)
        self.embed = nn.Embedding(num_classes, embed_dim, padding_idx=PAD_INDEX)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(TransformerDecoderLayer(embed_dim, nhead, hidden_dim, dropout, norm_first)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()
        self.fc = nn.Linear(embed_dim, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        """Word embeddings ``N(0, 1 / d_model)``: times ``sqrt(d_model)`` they enter with unit
        variance, the scale of the position code (``nn.Embedding``'s ``N(0, 1)`` would make them
        ``sqrt(d_model)`` times larger and drown it)."""
        nn.init.normal_(self.embed.weight, std=self.d_model ** -0.5)
        with torch.no_grad():
            self.embed.weight[PAD_INDEX].zero_()

    def start(self, images: Tensor) -> State:
        fmap = self.features(images)                                 # (B, C, h, w)
        B, _, h, w = fmap.shape
        pos = sinusoidal_2d(h, w, self.d_model, fmap.device, fmap.dtype)
        memory = self.image_proj(fmap.flatten(2).transpose(1, 2)) + pos   # (B, h*w, D)
        return {"memory": memory, "tokens": torch.empty(B, 0, dtype=torch.long, device=images.device)}

    def decode(self, tokens: Tensor, memory: Tensor) -> Tensor:     # (B, T), (B, S, D) -> (B, T, V)
        """Logits at every position of ``tokens``, each seeing the tokens up to itself."""
        T, D = tokens.shape[1], self.d_model
        x = self.embed(tokens) * math.sqrt(D) + sinusoidal_positional_encoding(T, D, memory.device, memory.dtype)
        x = self.dropout(x)
        mask = causal_mask(T, device=tokens.device)
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=mask)
        return self.fc(self.norm(x))

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """``tokens (N,)``, the previous tokens (``<sos>`` first) -> ``log_probs (N, V)`` of the next."""
        _check_tokens(tokens, "tokens", 1)
        prefix = torch.cat([state["tokens"], tokens[:, None]], dim=1)        # (N, t+1)
        logits = self.decode(prefix, state["memory"])[:, -1]
        return logits.log_softmax(dim=-1), {**state, "tokens": prefix}

    def forward(self, images: Tensor, tgt_in: Tensor) -> Tensor:   # (B, C, H, W), (B, T) -> (B, T, V)
        self._check(images, tgt_in)
        return self.decode(tgt_in, self.start(images)["memory"])


# --- seq2seq ----------------------------------------------------------------------------------

class Seq2Seq(_RecurrentDecoding, nn.Module):
    """An LSTM encoder-decoder (Sutskever et al. 2014), with Bahdanau attention optionally.

    The encoder (a one-layer :class:`~vislab.sequence.rnn.LSTM`) reads the source packed by
    length, so padding changes neither its outputs nor its final state ``(h, c)``, taken at each
    sequence's last real token; the decoder (an :class:`~vislab.sequence.rnn.LSTMCell`) starts
    from that state.  Without attention the source is seen only through that state (the fixed
    context vector: the notes' bottleneck).  With attention, at every step
    ``alpha = softmax_j(v^T tanh(W_s s_{t-1} + W_h h_j))`` over the encoder outputs ``h_j``,
    padding masked out, the context ``sum_j alpha_j h_j`` is fed to the cell with the word
    and to the output layer with the new state.

    State: ``h``, ``c`` ``(N, hidden_dim)``; with attention also ``memory (N, S, hidden_dim)``
    (the encoder outputs), ``mask (N, S)`` bool (True on the padding) and after a step
    ``attention (N, S)``.  :attr:`last_attention` keeps the weights of the last ``forward``
    ``(B, T, S)`` (None without attention).

    Args:
        num_classes: target vocabulary size (``<pad>`` = 0).
        src_vocab: source vocabulary size (default ``num_classes``).
        embed_dim: width of both word embeddings.
        hidden_dim: encoder and decoder width.
        dropout: on the embeddings and before the classifier.
        attention: Bahdanau attention over the encoder outputs.
    """

    kind = "seq2seq"

    def __init__(self, num_classes: int, src_vocab: int | None = None, embed_dim: int = 64, hidden_dim: int = 128,
                 dropout: float = 0.1, attention: bool = False) -> None:
        super().__init__()
        src_vocab = num_classes if src_vocab is None else src_vocab
        _check_vocab(num_classes)
        _check_vocab(src_vocab, "src_vocab")
        self.vocab_size, self.src_vocab = num_classes, src_vocab
        context = hidden_dim if attention else 0
        self.src_embed = nn.Embedding(src_vocab, embed_dim, padding_idx=PAD_INDEX)
        self.encoder = LSTM(embed_dim, hidden_dim, batch_first=True)
        self.embed = nn.Embedding(num_classes, embed_dim, padding_idx=PAD_INDEX)
        self.attention = AdditiveAttention(hidden_dim, hidden_dim, hidden_dim) if attention else None
        self.cell = LSTMCell(embed_dim + context, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_dim + context, num_classes)
        self.last_attention: Tensor | None = None

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``src (B, S)``, ``src_lengths (B,)`` -> outputs ``(B, S, H)`` (zeros on the padding) and
        the final ``h``, ``c`` ``(B, H)``."""
        _check_tokens(src, "src", 2)
        if src_lengths.shape != src.shape[:1] or src_lengths.is_floating_point():
            raise UserError(f"src_lengths must be integers (B,) = ({src.shape[0]},), got {src_lengths.dtype} "
                            f"{tuple(src_lengths.shape)}")
        lengths = src_lengths.cpu()
        if not bool(((lengths >= 1) & (lengths <= src.shape[1])).all()):
            raise UserError(f"src_lengths must lie in [1, {src.shape[1]}] (the padded width), got {lengths.tolist()}")
        packed = pack_padded_sequence(self.dropout(self.src_embed(src)), lengths, batch_first=True,
                                      enforce_sorted=False)
        out, (h, c) = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        return out, h[-1], c[-1]

    def start(self, src: Tensor, src_lengths: Tensor) -> State:
        memory, h, c = self.encode(src, src_lengths)
        if self.attention is None:
            return {"h": h, "c": c}
        mask = torch.arange(src.shape[1], device=src.device)[None] >= src_lengths.to(src.device)[:, None]
        return {"memory": memory, "mask": mask, "h": h, "c": c}

    def _advance(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        x, h, c = self.dropout(x), state["h"], state["c"]
        if self.attention is None:
            h, c = self.cell(x, (h, c))
            return self.fc(self.dropout(h)), {**state, "h": h, "c": c}
        context, alpha = self.attention(h, state["memory"], mask=state["mask"])    # (N, H), (N, S)
        h, c = self.cell(torch.cat([x, context], dim=1), (h, c))
        logits = self.fc(self.dropout(torch.cat([h, context], dim=1)))
        return logits, {**state, "h": h, "c": c, "attention": alpha}

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:   # -> (B, T, V)
        _check_tokens(tgt_in, "tgt_in", 2, batch=src.shape[0])
        logits, self.last_attention = self._unroll(tgt_in, self.start(src, src_lengths))
        return logits


# --- registered factories ---------------------------------------------------------------------

@register_model(kind="captioning")
def show_tell(num_classes: int, in_chans: int = 3, img_size: int = 64, backbone: str = "small_cnn",
              backbone_kwargs: dict | None = None, embed_dim: int = 128, hidden_dim: int = 256,
              dropout: float = 0.1) -> ShowTell:
    """Show and Tell: the image as the LSTM's first input."""
    return ShowTell(num_classes, in_chans, img_size, backbone, backbone_kwargs, embed_dim, hidden_dim, dropout)


@register_model(kind="captioning")
def show_attend_tell(num_classes: int, in_chans: int = 3, img_size: int = 64, backbone: str = "small_cnn",
                     backbone_kwargs: dict | None = None, embed_dim: int = 128, hidden_dim: int = 256,
                     dropout: float = 0.1, attention_dim: int = 128, gate: bool = True) -> ShowAttendTell:
    """Show, Attend and Tell: soft additive attention over the feature map at every word."""
    return ShowAttendTell(num_classes, in_chans, img_size, backbone, backbone_kwargs, embed_dim, hidden_dim,
                          dropout, attention_dim, gate)


@register_model(kind="captioning")
def caption_transformer(num_classes: int, in_chans: int = 3, img_size: int = 64, backbone: str = "small_cnn",
                        backbone_kwargs: dict | None = None, embed_dim: int = 128, hidden_dim: int = 256,
                        dropout: float = 0.1, num_layers: int = 2, nhead: int = 4,
                        norm_first: bool = True) -> CaptionTransformer:
    """A two-layer Transformer decoder cross-attending to the feature map."""
    return CaptionTransformer(num_classes, in_chans, img_size, backbone, backbone_kwargs, embed_dim, hidden_dim,
                              dropout, num_layers, nhead, norm_first)


@register_model(kind="seq2seq")
def seq2seq_lstm(num_classes: int, in_chans: int | None = None, src_vocab: int | None = None, embed_dim: int = 64,
                 hidden_dim: int = 128, dropout: float = 0.1, attention: bool = False) -> Seq2Seq:
    """LSTM encoder-decoder through the encoder's final state (``attention=True``: Bahdanau's).
    ``in_chans`` is ignored: :func:`~vislab.models.registry.create_model` passes it to every factory."""
    return Seq2Seq(num_classes, src_vocab, embed_dim, hidden_dim, dropout, attention)


@register_model(kind="seq2seq")
def seq2seq_attention(num_classes: int, in_chans: int | None = None, src_vocab: int | None = None,
                      embed_dim: int = 64, hidden_dim: int = 128, dropout: float = 0.1) -> Seq2Seq:
    """LSTM encoder-decoder with Bahdanau attention over the encoder outputs."""
    return Seq2Seq(num_classes, src_vocab, embed_dim, hidden_dim, dropout, attention=True)
