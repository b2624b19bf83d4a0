"""vislab.sequence.text: the tokenizer, the vocabulary and its special tokens, the notes' six
steps of batch preparation on a hand example, and the masked cross-entropy against
torch.nn.functional.cross_entropy with ignore_index."""

import json

import pytest
import torch
import torch.nn.functional as F

from vislab.errors import UserError
from vislab.sequence.text import (
    EOS,
    EOS_INDEX,
    PAD,
    PAD_INDEX,
    SOS,
    SOS_INDEX,
    UNK,
    UNK_INDEX,
    Batch,
    Vocab,
    masked_cross_entropy,
    prepare_batch,
    prepare_targets,
    tokenize,
)

CORPUS = ["A red shirt, left.", "a blue shirt", "The red hat", "a red hat"]
# counts: a 3, red 3, shirt 2, hat 2, blue 1, the 1, "," 1, left 1, "." 1


def test_tokenize():
    assert tokenize("A red shirt, left.") == ["a", "red", "shirt", ",", "left", "."]
    assert tokenize("  Two  spaces\tand\nlines!? ") == ["two", "spaces", "and", "lines", "!", "?"]
    assert tokenize("it's 2 <eos>") == ["it", "'", "s", "2", "<", "eos", ">"]
    assert tokenize("") == []
    with pytest.raises(UserError):
        tokenize(["a"])


def test_special_indices():
    v = Vocab.build(CORPUS)
    assert (PAD_INDEX, SOS_INDEX, EOS_INDEX, UNK_INDEX) == (0, 1, 2, 3)
    assert v.itos[:4] == [PAD, SOS, EOS, UNK] == ["<pad>", "<sos>", "<eos>", "<unk>"]
    assert [v.stoi[t] for t in (PAD, SOS, EOS, UNK)] == [0, 1, 2, 3]
    assert (v.pad_index, v.sos_index, v.eos_index, v.unk_index) == (0, 1, 2, 3)
    assert Vocab([]).itos == [PAD, SOS, EOS, UNK]


def test_build_orders_by_frequency_then_alphabet():
    v = Vocab.build(CORPUS)
    # frequency descending; ties alphabetical ("," < "." < "blue" < "left" < "the")
    assert v.itos[4:] == ["a", "red", "hat", "shirt", ",", ".", "blue", "left", "the"]
    assert len(v) == 13
    # the same corpus in another order gives the same indices
    assert Vocab.build(CORPUS[::-1]).itos == v.itos
    # token lists are taken as they are
    assert Vocab.build([tokenize(s) for s in CORPUS]).itos == v.itos


def test_min_freq_cut():
    assert Vocab.build(CORPUS, min_freq=2).itos[4:] == ["a", "red", "hat", "shirt"]
    assert Vocab.build(CORPUS, min_freq=3).itos[4:] == ["a", "red"]
    assert Vocab.build(CORPUS, min_freq=4).itos[4:] == []
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UserError):
            Vocab.build(CORPUS, min_freq=bad)


def test_encode_oov_and_round_trip():
    v = Vocab.build(CORPUS, min_freq=2)
    assert v.encode(["a", "red", "shirt"]) == [4, 5, 7]
    assert v.encode(["a", "green", "shirt", "left"]) == [4, UNK_INDEX, 7, UNK_INDEX]
    assert v.encode("A red HAT") == [4, 5, 6]
    tokens = ["red", "hat", "a", "shirt"]
    assert v.decode(v.encode(tokens)) == tokens
    assert v.decode(torch.tensor(v.encode(tokens))) == tokens
    assert v.decode(v.encode(["green", "hat"])) == [UNK, "hat"]


def test_decode_stops_at_eos_and_strips():
    v = Vocab.build(CORPUS, min_freq=2)
    ids = [SOS_INDEX, 4, 5, EOS_INDEX, 6, PAD_INDEX]
    assert v.decode(ids) == ["a", "red"]
    assert v.decode(ids, strip_special=False) == [SOS, "a", "red", EOS]
    assert v.decode([4, PAD_INDEX, 5]) == ["a", "red"]
    assert v.decode([4, PAD_INDEX, 5], strip_special=False) == ["a", PAD, "red"]
    assert v.decode([EOS_INDEX, 4]) == []
    with pytest.raises(UserError):
        v.decode([len(v)])
    with pytest.raises(UserError):
        v.decode(torch.zeros(2, 2, dtype=torch.long))


def test_to_dict_from_dict():
    v = Vocab.build(CORPUS)
    state = json.loads(json.dumps(v.to_dict()))   # plain JSON values
    w = Vocab.from_dict(state)
    assert w.itos == v.itos and w.stoi == v.stoi
    assert w.encode(["blue", "nope"]) == v.encode(["blue", "nope"])
    with pytest.raises(UserError):
        Vocab.from_dict({"itos": ["a", "b"]})


def test_vocab_rejects_specials_and_duplicates():
    with pytest.raises(UserError):
        Vocab(["a", EOS])
    with pytest.raises(UserError):
        Vocab(["a", "b", "a"])


# --- the six steps ------------------------------------------------------------------------------

SRC_VOCAB = Vocab(["je", "suis", "un", "chat"])             # je 4, suis 5, un 6, chat 7
TGT_VOCAB = Vocab(["i", "am", "a", "cat", "."])            # i 4, am 5, a 6, cat 7, . 8


def hand_batch() -> Batch:
    # step 1: the sampled pairs; "chien" and "dog" are out of vocabulary (step 6)
    sources = [["je", "suis", "un", "chat"], ["un", "chien"], ["chat"]]
    targets = [["i", "am", "a", "cat"], ["a", "dog", "."], []]
    return prepare_batch(sources, targets, SRC_VOCAB, TGT_VOCAB)


def test_prepare_batch_hand_example():
    b = hand_batch()
    # step 2: <eos> appended; step 4: padded to this batch's longest (5); steps 5-6: ids, OOV -> <unk>
    assert torch.equal(b.src, torch.tensor([[4, 5, 6, 7, 2],
                                            [6, 3, 2, 0, 0],
                                            [7, 2, 0, 0, 0]]))
    assert torch.equal(b.src_lengths, torch.tensor([5, 3, 2]))
    # step 3: <sos> + target (teacher forcing input), target + <eos> (what is predicted)
    assert torch.equal(b.tgt_in, torch.tensor([[1, 4, 5, 6, 7],
                                               [1, 6, 3, 8, 0],
                                               [1, 0, 0, 0, 0]]))
    assert torch.equal(b.tgt_out, torch.tensor([[4, 5, 6, 7, 2],
                                                [6, 3, 8, 2, 0],
                                                [2, 0, 0, 0, 0]]))
    assert torch.equal(b.tgt_mask, torch.tensor([[1, 1, 1, 1, 1],
                                                 [1, 1, 1, 1, 0],
                                                 [1, 0, 0, 0, 0]], dtype=torch.bool))
    assert torch.equal(b.tgt_lengths, torch.tensor([5, 4, 1]))
    # tgt_out is tgt_in shifted left by one, with <eos> at each end
    assert torch.equal(b.tgt_in[:, 1:][b.tgt_mask[:, 1:]], b.tgt_out[:, :-1][b.tgt_mask[:, 1:]])
    assert b.src.dtype == b.tgt_in.dtype == b.tgt_out.dtype == torch.long
    assert torch.equal(b.src_padding_mask, b.src == PAD_INDEX)


def test_padding_is_per_batch():
    b = prepare_batch(["je"], ["i am"], SRC_VOCAB, TGT_VOCAB)
    assert b.src.shape == (1, 2) and b.tgt_in.shape == (1, 3)


def test_prepare_batch_takes_strings():
    b = prepare_batch(["Je suis un chat", "Un chien", "Chat"], ["I am a cat", "A dog.", ""],
                      SRC_VOCAB, TGT_VOCAB)
    ref = hand_batch()
    for name in ("src", "src_lengths", "tgt_in", "tgt_out", "tgt_mask", "tgt_lengths"):
        assert torch.equal(getattr(b, name), getattr(ref, name)), name


def test_prepare_targets_for_captioning():
    t = prepare_targets(["a cat .", "i"], TGT_VOCAB)
    assert torch.equal(t.tgt_in, torch.tensor([[1, 6, 7, 8], [1, 4, 0, 0]]))
    assert torch.equal(t.tgt_out, torch.tensor([[6, 7, 8, 2], [4, 2, 0, 0]]))
    assert torch.equal(t.tgt_mask, t.tgt_out != PAD_INDEX)
    assert torch.equal(t.tgt_lengths, torch.tensor([4, 2]))
    assert not hasattr(t, "src")


def test_batch_to_device():
    b = hand_batch().to("cpu")
    assert isinstance(b, Batch) and b.src.device.type == "cpu"


def test_prepare_batch_errors():
    with pytest.raises(UserError):
        prepare_batch(["je"], ["i", "am"], SRC_VOCAB, TGT_VOCAB)
    with pytest.raises(UserError):
        prepare_batch([], [], SRC_VOCAB, TGT_VOCAB)
    with pytest.raises(UserError):
        prepare_targets("a cat", TGT_VOCAB)


# --- the loss -----------------------------------------------------------------------------------

def test_masked_cross_entropy_equals_ignore_index():
    b = hand_batch()
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(*b.tgt_out.shape, len(TGT_VOCAB), generator=gen, dtype=torch.float64, requires_grad=True)
    ours = masked_cross_entropy(logits, b.tgt_out, PAD_INDEX)
    ref = F.cross_entropy(logits.flatten(0, 1), b.tgt_out.flatten(), ignore_index=PAD_INDEX)
    torch.testing.assert_close(ours, ref)
    # by hand: mean over the 10 real tokens of -log softmax at the target
    log_p = torch.log_softmax(logits.detach(), -1)
    terms = [-log_p[i, t, b.tgt_out[i, t]] for i in range(3) for t in range(5) if b.tgt_mask[i, t]]
    assert len(terms) == 10
    torch.testing.assert_close(ours.detach(), sum(terms) / 10)
    g_ours, = torch.autograd.grad(ours, logits)
    g_ref, = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref)
    assert torch.all(g_ours[~b.tgt_mask] == 0)


def test_masked_cross_entropy_ignores_padding_logits():
    b = hand_batch()
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(*b.tgt_out.shape, len(TGT_VOCAB), generator=gen)
    base = masked_cross_entropy(logits, b.tgt_out, PAD_INDEX)
    for fill in (torch.randn(logits.shape, generator=gen) * 1e3, torch.full(logits.shape, float("inf")),
                 torch.full(logits.shape, float("nan"))):
        changed = torch.where(b.tgt_mask[..., None], logits, fill)
        assert torch.equal(masked_cross_entropy(changed, b.tgt_out, PAD_INDEX), base)


def test_masked_cross_entropy_errors():
    with pytest.raises(UserError):
        masked_cross_entropy(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long), PAD_INDEX)
    with pytest.raises(UserError):
        masked_cross_entropy(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), PAD_INDEX)
