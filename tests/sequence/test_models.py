"""vislab.sequence.models: the captioners and the seq2seq models.

Oracles: the training path (``forward``, teacher forcing) against the decoding path (``start`` then
``step`` fed the same tokens); greedy decoding against beam search of width 1; beam search's
log-probabilities against ``forward``'s; a source decoded alone and unpadded against the same
source padded in a batch; sizes and shapes computed by hand; and the overfit of a tiny fixed batch,
which greedy decoding must then reproduce.
"""

import math

import pytest
import torch

from vislab.errors import UserError
from vislab.models.registry import create_model, list_models, model_kind
from vislab.sequence import models  # noqa: F401  (registers the models)
from vislab.sequence.decode import beam_search, greedy_decode
from vislab.sequence.text import (
    EOS_INDEX,
    PAD_INDEX,
    SOS_INDEX,
    Vocab,
    masked_cross_entropy,
    prepare_batch,
    prepare_targets,
)

CAPTIONERS = ["caption_transformer", "show_attend_tell", "show_tell"]
SEQ2SEQ = ["seq2seq_attention", "seq2seq_lstm"]
V = 12                                  # 4 special tokens + 8 words
TOL = {"rtol": 1e-5, "atol": 1e-5}
SMALL = {"img_size": 32, "backbone_kwargs": {"widths": (8, 16, 32)}, "embed_dim": 32, "hidden_dim": 64}


def build(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=V, **kwargs)


def rand_tokens(*shape: int, seed: int = 0) -> torch.Tensor:
    """Word ids (no special token)."""
    return torch.randint(4, V, shape, generator=torch.Generator().manual_seed(seed))


def images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def padded_source(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(3, 6)`` sources of lengths 6, 3, 4 (the last token ``<eos>``), padded with ``<pad>``."""
    lengths = torch.tensor([6, 3, 4])
    src = rand_tokens(3, 6, seed=seed)
    src[torch.arange(3), lengths - 1] = EOS_INDEX
    src[torch.arange(6)[None] >= lengths[:, None]] = PAD_INDEX
    return src, lengths


def model_inputs(name: str, n: int = 3):
    """The source arguments of ``forward`` and ``start``: images, or padded text and lengths."""
    return (images(n),) if name in CAPTIONERS else padded_source()


def teacher_forced_log_probs(model, inputs, tgt_in: torch.Tensor) -> torch.Tensor:
    """``(B, T, V)`` log-probabilities from ``start`` and ``step`` fed ``tgt_in`` one token at a time."""
    state, out = model.start(*inputs), []
    for t in range(tgt_in.shape[1]):
        log_p, state = model.step(tgt_in[:, t], state)
        out.append(log_p)
    return torch.stack(out, dim=1)


# --- registry and construction ----------------------------------------------------------------

def test_registry_lists_the_sequence_models_by_kind():
    assert list_models(kind="captioning") == CAPTIONERS
    assert list_models(kind="seq2seq") == SEQ2SEQ
    assert not set(CAPTIONERS + SEQ2SEQ) & set(list_models())       # classifiers only by default
    for name in CAPTIONERS + SEQ2SEQ:
        kind = "captioning" if name in CAPTIONERS else "seq2seq"
        assert model_kind(name) == kind
        assert build(name).kind == kind


@pytest.mark.parametrize("name", CAPTIONERS + SEQ2SEQ)
def test_models_build_on_the_meta_device(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=V)
    assert all(p.is_meta for p in model.parameters())
    assert model.vocab_size == V
    if name in CAPTIONERS:
        assert model.feature_size == (16, 16)      # small_cnn: two 2x2 max-pools, 64 / 4


def test_feature_size_follows_backbone_and_img_size():
    with torch.device("meta"):
        r18 = create_model("show_attend_tell", num_classes=V, backbone="resnet18",
                           backbone_kwargs={"small_input": True})
        big = create_model("show_tell", num_classes=V, img_size=96)
    assert r18.feature_size == (8, 8) and r18.num_features == 512    # small_input ResNet: stride 8
    assert big.feature_size == (24, 24)


# --- shapes and states ------------------------------------------------------------------------

@pytest.mark.parametrize("name", CAPTIONERS)
def test_captioner_shapes_and_state(name):
    model = build(name).eval()
    x, tgt_in = images(2), rand_tokens(2, 5)
    assert model(x, tgt_in).shape == (2, 5, V)
    state = model.start(x)
    memory_width = {"show_tell": 64, "show_attend_tell": 128, "caption_transformer": 128}[name]
    assert state["memory"].shape == (2, 16 * 16, memory_width)
    log_p, state = model.step(torch.full((2,), SOS_INDEX), state)
    assert log_p.shape == (2, V)
    torch.testing.assert_close(log_p.logsumexp(-1), torch.zeros(2), **TOL)
    if name == "caption_transformer":
        assert state["tokens"].tolist() == [[SOS_INDEX], [SOS_INDEX]]
    else:
        assert state["h"].shape == state["c"].shape == (2, 256)
    if name == "show_attend_tell":
        assert state["attention"].shape == (2, 256)


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_seq2seq_shapes_and_state(name):
    model = build(name).eval()
    src, lengths = padded_source()
    assert model(src, lengths, rand_tokens(3, 4)).shape == (3, 4, V)
    state = model.start(src, lengths)
    expected = {"h", "c"} | ({"memory", "mask"} if name == "seq2seq_attention" else set())
    assert set(state) == expected
    assert state["h"].shape == (3, 128)
    if name == "seq2seq_attention":
        assert state["memory"].shape == (3, 6, 128)
        assert state["mask"].tolist() == [[False] * 6, [False] * 3 + [True] * 3, [False] * 4 + [True] * 2]


def test_src_vocab_defaults_to_target_vocab():
    assert build("seq2seq_lstm").src_embed.num_embeddings == V
    assert build("seq2seq_lstm", src_vocab=20).src_embed.num_embeddings == 20


# --- the decoding path computes the training path's function ----------------------------------

@pytest.mark.parametrize("name", CAPTIONERS + SEQ2SEQ)
def test_step_by_step_reproduces_forward(name):
    model = build(name).eval()
    inputs = model_inputs(name)
    tgt_in = torch.cat([torch.full((3, 1), SOS_INDEX), rand_tokens(3, 5, seed=1)], dim=1)
    with torch.no_grad():
        expected = model(*inputs, tgt_in).log_softmax(-1)
        torch.testing.assert_close(teacher_forced_log_probs(model, inputs, tgt_in), expected, **TOL)


@pytest.mark.parametrize("name", CAPTIONERS + SEQ2SEQ)
def test_greedy_is_beam_search_of_width_one(name):
    model = build(name).eval()
    inputs = model_inputs(name)
    greedy = greedy_decode(model.step, model.start(*inputs), 3, SOS_INDEX, EOS_INDEX, max_len=7)
    for b, hyp in enumerate(greedy):
        one = tuple(x[b:b + 1] for x in inputs)
        (beam,) = beam_search(model.step, model.start(*one), SOS_INDEX, EOS_INDEX, beam_width=1, max_len=7)
        assert beam.tokens == hyp.tokens
        assert math.isclose(beam.log_prob, hyp.log_prob, rel_tol=1e-5, abs_tol=1e-5)


@pytest.mark.parametrize("name", CAPTIONERS + SEQ2SEQ)
def test_beam_search_log_probs_are_the_models(name):
    """Beam search reorders the state dict with index_select; each hypothesis's log-probability
    must be what ``forward`` gives its tokens."""
    model = build(name).eval()
    inputs = tuple(x[1:2] for x in model_inputs(name))
    hyps = beam_search(model.step, model.start(*inputs), SOS_INDEX, EOS_INDEX, beam_width=3, max_len=5)
    assert len(hyps) == 3
    for hyp in hyps:
        tgt_in = torch.tensor([[SOS_INDEX, *hyp.tokens[:-1]]])
        with torch.no_grad():
            log_p = model(*inputs, tgt_in).log_softmax(-1)[0]
        assert math.isclose(float(log_p.gather(1, torch.tensor(hyp.tokens)[:, None]).sum()), hyp.log_prob,
                            rel_tol=1e-4, abs_tol=1e-4)


# --- attention --------------------------------------------------------------------------------

def test_show_attend_tell_attention_is_a_distribution_over_the_map():
    model = build("show_attend_tell").eval()
    x, tgt_in = images(2), rand_tokens(2, 4)
    model.train()
    model(x, tgt_in)
    assert model.last_attention.requires_grad                      # for the doubly stochastic penalty
    model.eval()
    with torch.no_grad():
        model(x, tgt_in)
        attention = model.last_attention
        assert attention.shape == (2, 4, 16 * 16)
        assert bool((attention >= 0).all())
        torch.testing.assert_close(attention.sum(-1), torch.ones(2, 4), **TOL)
        state = model.start(x)
        for t in range(4):
            _, state = model.step(tgt_in[:, t], state)
            torch.testing.assert_close(state["attention"], attention[:, t], **TOL)


def test_seq2seq_attention_ignores_padding():
    model = build("seq2seq_attention").eval()
    src, lengths = padded_source()
    tgt_in = rand_tokens(3, 4, seed=2)
    with torch.no_grad():
        model(src, lengths, tgt_in)
    attention = model.last_attention                                     # (B, T, S)
    pad = torch.arange(6)[None] >= lengths[:, None]                      # (B, S)
    assert bool((attention.masked_select(pad[:, None].expand_as(attention)) == 0).all())
    torch.testing.assert_close(attention.sum(-1), torch.ones(3, 4), **TOL)


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_seq2seq_padding_changes_nothing(name):
    """A source padded in a batch, with any ids in its padding, decodes as it does alone."""
    model = build(name).eval()
    src, lengths = padded_source()
    tgt_in = rand_tokens(3, 4, seed=2)
    noisy = torch.where(src == PAD_INDEX, rand_tokens(3, 6, seed=3), src)
    with torch.no_grad():
        batched = model(src, lengths, tgt_in)
        torch.testing.assert_close(model(noisy, lengths, tgt_in), batched, **TOL)
        for b, n in enumerate(lengths.tolist()):
            alone = model(src[b:b + 1, :n], lengths[b:b + 1], tgt_in[b:b + 1])
            torch.testing.assert_close(alone[0], batched[b], **TOL)


# --- overfitting a tiny batch -----------------------------------------------------------------

def overfit(model, inputs, batch, steps: int = 100, lr: float = 3e-3) -> None:
    """Adam on the teacher-forced loss (1e-2 spikes the Transformer now and then; 3e-3 brings every
    model below 0.02 in 100 steps over 12 seeds tried)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = masked_cross_entropy(model(*inputs, batch.tgt_in), batch.tgt_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def assert_memorised(model, inputs, batch) -> None:
    with torch.no_grad():
        predicted = model(*inputs, batch.tgt_in).argmax(-1)
    assert bool((predicted == batch.tgt_out)[batch.tgt_mask].all()), "teacher-forced accuracy below 100%"
    hyps = greedy_decode(model.step, model.start(*inputs), len(batch.tgt_in), SOS_INDEX, EOS_INDEX, max_len=10)
    expected = [row[:n] for row, n in zip(batch.tgt_out.tolist(), batch.tgt_lengths.tolist())]
    assert [h.tokens for h in hyps] == expected


VOCAB = Vocab(list("abcdefgh"))
assert len(VOCAB) == V


def random_words(n: int, lengths: list[int], seed: int = 0) -> list[list[str]]:
    ids = rand_tokens(n, max(lengths), seed=seed).tolist()
    return [[VOCAB.itos[i] for i in row[:k]] for row, k in zip(ids, lengths)]


@pytest.mark.parametrize("name", CAPTIONERS)
def test_captioner_overfits_four_captions(name):
    captions = random_words(4, [5] * 4)
    batch = prepare_targets(captions, VOCAB)
    model = build(name, **SMALL, dropout=0.0)
    inputs = (images(4, size=32),)
    overfit(model, inputs, batch)
    assert_memorised(model, inputs, batch)


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_seq2seq_learns_to_reverse(name):
    sources = random_words(4, [5, 4, 3, 5])
    batch = prepare_batch(sources, [s[::-1] for s in sources], VOCAB, VOCAB)
    model = build(name, dropout=0.0)
    inputs = (batch.src, batch.src_lengths)
    overfit(model, inputs, batch)
    assert_memorised(model, inputs, batch)


# --- bad input --------------------------------------------------------------------------------

def test_bad_inputs_raise_user_errors():
    model = build("show_tell").eval()
    with pytest.raises(UserError, match="tgt_in"):
        model(images(2), torch.rand(2, 5))
    with pytest.raises(UserError, match="tgt_in"):
        model(images(2), rand_tokens(3, 5))
    with pytest.raises(UserError, match="images"):
        model(torch.rand(2, 1, 64, 64), rand_tokens(2, 5))
    with pytest.raises(UserError, match="vocabulary size"):
        create_model("show_tell", num_classes=3)
    with pytest.raises(UserError, match="not a map"), torch.device("meta"):
        create_model("show_tell", num_classes=V, backbone="vit_ti_16", img_size=32,
                     backbone_kwargs={"img_size": 32})
    seq = build("seq2seq_attention")
    src, lengths = padded_source()
    with pytest.raises(UserError, match="src_lengths"):
        seq(src, torch.tensor([7, 3, 4]), rand_tokens(3, 2))
    with pytest.raises(UserError, match="src_lengths"):
        seq(src, lengths[:2], rand_tokens(3, 2))
