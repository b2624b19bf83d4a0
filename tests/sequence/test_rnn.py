"""vislab.sequence.rnn against torch.nn.RNN/LSTM/GRU and their cells: the same weights give the
same outputs, final states and gradients (of every parameter, the input and the initial state),
dense or packed; and the notes' vanishing gradient, measured."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from vislab.errors import UserError
from vislab.sequence.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, gradient_norms_over_lag

F_IN, H, T, B = 5, 6, 7, 4
F64 = torch.float64

# name -> (torch layer, vislab layer, torch cell, vislab cell, extra constructor arguments)
KINDS = {
    "rnn_tanh": (nn.RNN, RNN, nn.RNNCell, RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, RNN, nn.RNNCell, RNNCell, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTM, LSTM, nn.LSTMCell, LSTMCell, {}),
    "gru": (nn.GRU, GRU, nn.GRUCell, GRUCell, {}),
}
CONFIGS = {
    "single": {},
    "two_layers": {"num_layers": 2},
    "bidirectional": {"bidirectional": True},
    "two_layers_bidirectional": {"num_layers": 2, "bidirectional": True},
    "batch_first": {"batch_first": True, "num_layers": 2},
    "no_bias": {"bias": False, "bidirectional": True},
}


def make_pair(kind: str, via: str = "from_torch", **kwargs):
    """A torch layer and the vislab layer holding the same weights: copied by ``from_torch``, or
    drawn by vislab and loaded into torch (``via="load_into_torch"``)."""
    torch_layer, ours_layer, _, _, extra = KINDS[kind]
    torch.manual_seed(0)
    ref = torch_layer(F_IN, H, **extra, **kwargs, dtype=F64)
    if via == "from_torch":
        ours = ours_layer.from_torch(ref)
    else:
        torch.manual_seed(1)
        ours = ours_layer(F_IN, H, **extra, **kwargs, dtype=F64)
        ref.load_state_dict(ours.state_dict())
    return ref, ours


def as_tuple(h):
    return h if isinstance(h, tuple) else (h,)


def initial_state(kind: str, layer, batch: int = B):
    gen = torch.Generator().manual_seed(2)
    shape = (layer.num_layers * (2 if layer.bidirectional else 1), batch, H)
    states = tuple(torch.randn(shape, generator=gen, dtype=F64) for _ in range(2 if kind == "lstm" else 1))
    return states if kind == "lstm" else states[0]


def run(module, x, hx=None, lengths=None, enforce_sorted=True):
    """Forward, then backward of a fixed random projection of the output and the final states;
    returns the output, the final states and the gradients of the parameters, ``x`` and ``hx``."""
    x = x.clone().requires_grad_(True)
    if hx is not None:
        hx = tuple(h.clone().requires_grad_(True) for h in as_tuple(hx))
    inp = x if lengths is None else pack_padded_sequence(x, lengths, batch_first=module.batch_first,
                                                         enforce_sorted=enforce_sorted)
    out, h_n = module(inp, None if hx is None else hx if len(hx) == 2 else hx[0])
    gen = torch.Generator().manual_seed(3)
    out_t = out.data if isinstance(out, PackedSequence) else out
    loss = (out_t * torch.randn(out_t.shape, generator=gen, dtype=F64)).sum()
    for h in as_tuple(h_n):
        loss = loss + (h * torch.randn(h.shape, generator=gen, dtype=F64)).sum()
    loss.backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    grads["input"] = x.grad
    for i, h in enumerate(hx or ()):
        grads[f"hx{i}"] = h.grad
    return out, as_tuple(h_n), grads


def assert_same(ref_result, ours_result):
    (out_r, h_r, g_r), (out_o, h_o, g_o) = ref_result, ours_result
    if isinstance(out_r, PackedSequence):
        assert isinstance(out_o, PackedSequence)
        for a, b in zip(out_r, out_o):
            if a is None:
                assert b is None
            else:
                torch.testing.assert_close(b, a)
    else:
        torch.testing.assert_close(out_o, out_r)
    assert len(h_o) == len(h_r)
    for a, b in zip(h_r, h_o):
        torch.testing.assert_close(b, a)
    assert g_o.keys() == g_r.keys()
    for name in g_r:
        torch.testing.assert_close(g_o[name], g_r[name], msg=lambda m, name=name: f"gradient of {name}: {m}")


def sequence(batch_first: bool = False, batch: int = B, length: int = T):
    gen = torch.Generator().manual_seed(4)
    shape = (batch, length, F_IN) if batch_first else (length, batch, F_IN)
    return torch.randn(shape, generator=gen, dtype=F64)


@pytest.mark.parametrize("with_hx", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("kind", KINDS)
def test_layer_matches_torch(kind, config, with_hx):
    ref, ours = make_pair(kind, **CONFIGS[config])
    x = sequence(ref.batch_first)
    hx = initial_state(kind, ref) if with_hx else None
    assert_same(run(ref, x, hx), run(ours, x, hx))


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_loads_into_torch(kind):
    ref, ours = make_pair(kind, via="load_into_torch", num_layers=2, bidirectional=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = sequence()
    assert_same(run(ref, x, initial_state(kind, ref)), run(ours, x, initial_state(kind, ref)))


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("config", ["single", "two_layers_bidirectional", "batch_first"])
@pytest.mark.parametrize("kind", KINDS)
def test_packed_matches_torch(kind, config, enforce_sorted):
    ref, ours = make_pair(kind, **CONFIGS[config])
    lengths = torch.tensor([7, 5, 5, 2]) if enforce_sorted else torch.tensor([3, 7, 1, 5])
    x = sequence(ref.batch_first)
    for hx in (None, initial_state(kind, ref)):
        assert_same(run(ref, x, hx, lengths, enforce_sorted), run(ours, x, hx, lengths, enforce_sorted))


def test_packed_reverse_starts_at_each_last_step():
    """The reverse direction of a packed sequence equals running that sequence alone, reversed."""
    _, ours = make_pair("gru", bidirectional=True)
    lengths = torch.tensor([3, 7, 1, 5])
    x = sequence()
    out, h_n = ours(pack_padded_sequence(x, lengths, enforce_sorted=False))
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(out)
    for b, n in enumerate(lengths.tolist()):
        alone, h_alone = ours(x[:n, b:b + 1])
        torch.testing.assert_close(padded[:n, b:b + 1], alone)
        torch.testing.assert_close(h_n[:, b:b + 1], h_alone)


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_matches_torch(kind):
    ref, ours = make_pair(kind, num_layers=2, bidirectional=True)
    x = sequence()[:, 0]
    hx = tuple(h[:, 0] for h in as_tuple(initial_state(kind, ref)))
    hx = hx if kind == "lstm" else hx[0]
    assert_same(run(ref, x, hx), run(ours, x, hx))


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_cell_matches_torch(kind, batched):
    _, _, torch_cell, ours_cell, extra = KINDS[kind]
    torch.manual_seed(0)
    ref = torch_cell(F_IN, H, **extra, dtype=F64)
    ours = ours_cell.from_torch(ref)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(B, F_IN, generator=gen, dtype=F64)
    hx = tuple(torch.randn(B, H, generator=gen, dtype=F64) for _ in range(2 if kind == "lstm" else 1))
    if not batched:
        x, hx = x[0], tuple(h[0] for h in hx)
    for state in (None, hx if kind == "lstm" else hx[0]):
        results = []
        for cell in (ref, ours):
            cell.zero_grad()
            h = as_tuple(cell(x, state))
            sum(s.sin().sum() for s in h).backward()
            results.append((h, {n: p.grad.clone() for n, p in cell.named_parameters()}))
        (h_r, g_r), (h_o, g_o) = results
        for a, b in zip(h_r, h_o):
            torch.testing.assert_close(b, a)
        for name in g_r:
            torch.testing.assert_close(g_o[name], g_r[name])


@pytest.mark.parametrize("kind", KINDS)
def test_initialisation_is_torchs(kind):
    """Under the same seed, the same uniform draws in the same order: identical parameters."""
    torch_layer, ours_layer, _, _, extra = KINDS[kind]
    torch.manual_seed(7)
    ref = torch_layer(F_IN, H, num_layers=2, bidirectional=True, **extra)
    torch.manual_seed(7)
    ours = ours_layer(F_IN, H, num_layers=2, bidirectional=True, **extra)
    for (name_r, p_r), (name_o, p_o) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        assert name_o == name_r
        torch.testing.assert_close(p_o, p_r, rtol=0, atol=0)
    assert max(p.abs().max() for p in ours.parameters()) <= H ** -0.5


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_between_layers(kind):
    ref, ours = make_pair(kind, num_layers=3, dropout=0.5, bidirectional=True)
    x = sequence()
    ref.eval(), ours.eval()
    assert_same(run(ref, x), run(ours, x))
    # p = 1 drops every input to layers 2 and 3, deterministically: equal to torch's only if
    # dropout acts where torch's does (not on the input: layer 1's final state would change;
    # not after the last layer: the output would be zero).
    ref, ours = make_pair(kind, num_layers=3, dropout=1.0)
    ref.train(), ours.train()
    out_r, h_r = ref(x)
    out_o, h_o = ours(x)
    torch.testing.assert_close(out_o, out_r)
    torch.testing.assert_close(as_tuple(h_o), as_tuple(h_r))
    assert out_o.abs().sum() > 0


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_learned_initial_state(kind):
    _, ours_layer, _, _, extra = KINDS[kind]
    torch.manual_seed(0)
    layer = ours_layer(F_IN, H, num_layers=2, bidirectional=True, learn_init=True, **extra, dtype=F64)
    names = ["h0", "c0"] if kind == "lstm" else ["h0"]
    params = dict(layer.named_parameters())
    for name in names:
        assert params[name].shape == (4, H)
        assert torch.equal(params[name], torch.zeros(4, H, dtype=F64))   # starts as torch's zero state
    with torch.no_grad():
        for name in names:
            params[name].normal_()
    x = sequence()
    out, h_n = layer(x)
    # the learned state is what the layer starts from when forward is given none ...
    given = tuple(params[n].detach().unsqueeze(1).expand(4, B, H) for n in names)
    out_given, _ = layer(x, given if kind == "lstm" else given[0])
    torch.testing.assert_close(out, out_given)
    # ... and BPTT carries the error back to it
    (out.sum() + sum(h.sum() for h in as_tuple(h_n))).backward()
    for name in names:
        assert params[name].grad is not None and params[name].grad.abs().min() > 0
    # a torch state dict lacks only the learned state
    ref = KINDS[kind][0](F_IN, H, num_layers=2, bidirectional=True, **extra, dtype=F64)
    missing, unexpected = layer.load_state_dict(ref.state_dict(), strict=False)
    assert sorted(missing) == sorted(names) and not unexpected


def test_from_torch_refuses_what_it_cannot_copy():
    with pytest.raises(UserError, match="torch.nn.LSTM"):
        LSTM.from_torch(nn.GRU(3, 4))
    with pytest.raises(UserError, match="proj_size"):
        LSTM.from_torch(nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(UserError, match="torch.nn.RNNCell"):
        RNNCell.from_torch(nn.RNN(3, 4))


def test_bad_inputs_name_the_problem():
    layer = LSTM(F_IN, H, num_layers=2)
    with pytest.raises(UserError, match="input_size=5"):
        layer(torch.randn(T, B, F_IN + 1))
    with pytest.raises(UserError, match=r"\(2, 4, 6\)"):
        layer(torch.randn(T, B, F_IN), (torch.zeros(1, B, H), torch.zeros(1, B, H)))
    with pytest.raises(UserError, match="tuple"):
        layer(torch.randn(T, B, F_IN), torch.zeros(2, B, H))
    with pytest.raises(UserError, match="nonlinearity"):
        RNN(F_IN, H, nonlinearity="sigmoid")
    with pytest.raises(UserError, match="dropout"):
        GRU(F_IN, H, num_layers=2, dropout=1.5)


def test_rnn_gradient_vanishes_much_faster_than_lstms():
    """The notes' vanishing gradient: from lag 1 to lag 50 the simple RNN's gradient falls by
    more than 10^10, the LSTM's (forget gate open, the constant error carousel) by about 10^4."""
    rnn = gradient_norms_over_lag("rnn", steps=60, seed=0)
    lstm = gradient_norms_over_lag("lstm", steps=60, seed=0)
    assert rnn.shape == lstm.shape == (60,)
    rnn_ratio, lstm_ratio = rnn[1] / rnn[50], lstm[1] / lstm[50]
    assert rnn_ratio > 1e10
    assert lstm_ratio < 1e6
    assert rnn_ratio > 1e4 * lstm_ratio
