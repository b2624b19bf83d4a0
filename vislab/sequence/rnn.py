"""Recurrent cells and layers, written gate by gate (003, "Recurrent Neural Networks").

A cell is one step of the recurrence: the new hidden state from the input and the previous
state.  A layer unrolls its cell over the sequence, once per direction and layer, and
backpropagation through time (BPTT) is autograd through that unrolled graph, each step sharing
the same weights.

- :class:`RNNCell`: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, ``act`` tanh or relu.
- :class:`LSTMCell`: input, forget, cell-candidate and output gates ``i, f, g, o``;
  ``c_t = f * c_{t-1} + i * g`` is the constant error carousel (the cell state flows on,
  scaled by the forget gate alone, so its gradient does not vanish through a squashing
  non-linearity at every step), and ``h_t = o * tanh(c_t)``.
- :class:`GRUCell`: reset and update gates ``r, z`` and a candidate
  ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``; ``h_t = (1 - z) * n + z * h_{t-1}``,
  the update gate doing the work of the LSTM's forget and input gates together.

The layers :class:`RNN`, :class:`LSTM` and :class:`GRU` take torch's constructor arguments and
name and shape their parameters exactly as ``torch.nn.RNN``/``LSTM``/``GRU`` do, so a state dict
moves either way and :meth:`from_torch` copies a torch module.  They stack layers (dropout
between them, not after the last), run bidirectionally (the reverse direction reads each
sequence from its own last valid step), accept a ``PackedSequence`` of variable-length
sequences, and can learn their initial state (``learn_init``) instead of starting from zeros.

:func:`gradient_norms_over_lag` measures the vanishing gradient: how strongly the last hidden
state still depends on an input ``k`` steps back, for a simple RNN and an LSTM.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from vislab.errors import UserError

State = tuple[Tensor, ...]   # (h,) for the RNN and the GRU, (h, c) for the LSTM

NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


# --- cells ------------------------------------------------------------------------------------

class _Cell(nn.Module):
    """Weights ``weight_ih (G*H, F)``, ``weight_hh (G*H, H)``, ``bias_ih``, ``bias_hh (G*H,)``
    for the ``G`` gates of a cell, named as torch's cells name them; ``recurrence`` is the step."""

    num_gates: int
    num_states: int = 1
    torch_type: type[nn.Module]

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        kw = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        gates = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size, **kw))
        self.bias_ih = nn.Parameter(torch.empty(gates, **kw)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(gates, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialisation: every weight and bias uniform on ``±1/sqrt(hidden_size)``."""
        _uniform_init(self.parameters(), self.hidden_size)

    def step(self, input: Tensor, state: State) -> State:
        """One step on ``(B, F)`` inputs: project the input, then the cell's recurrence."""
        gi = F.linear(input, self.weight_ih, self.bias_ih)
        return self.recurrence(gi, state, self.weight_hh, self.bias_hh)

    def recurrence(self, gi: Tensor, state: State, weight_hh: Tensor, bias_hh: Tensor | None) -> State:
        raise NotImplementedError

    def _run(self, input: Tensor, hx: Tensor | tuple[Tensor, ...] | None) -> tuple[State, bool]:
        """The new state for a ``(B, F)`` or unbatched ``(F,)`` input and ``hx`` of the same
        batching (zeros when ``None``); also whether the input was unbatched."""
        if input.dim() not in (1, 2):
            raise UserError(f"{type(self).__name__} expects a (B, F) or (F,) input, got shape {tuple(input.shape)}")
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        if hx is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_size)
            state = (zeros,) * self.num_states
        else:
            state = (hx,) if isinstance(hx, Tensor) else tuple(hx)
            state = tuple(h.unsqueeze(0) if unbatched else h for h in state)
        return self.step(x, state), unbatched

    @classmethod
    def from_torch(cls, module: nn.Module) -> Self:
        """The equivalent vislab cell with ``module``'s weights copied."""
        if type(module) is not cls.torch_type:
            raise UserError(f"{cls.__name__}.from_torch takes a torch.nn.{cls.torch_type.__name__}, "
                            f"got {type(module).__name__}")
        p = module.weight_ih
        cell = cls(module.input_size, module.hidden_size, module.bias, device=p.device, dtype=p.dtype,
                   **cls._torch_kwargs(module))
        cell.load_state_dict(module.state_dict())
        return cell

    @classmethod
    def _torch_kwargs(cls, module: nn.Module) -> dict:
        return {}

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(_Cell):
    """The simple recurrent cell: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``.

    Args:
        input_size: features ``F`` of each input.
        hidden_size: size ``H`` of the hidden state.
        bias: whether the two biases exist.
        nonlinearity: ``"tanh"`` or ``"relu"``.
    """

    num_gates = 1
    torch_type = nn.RNNCell

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        if nonlinearity not in NONLINEARITIES:
            raise UserError(f"unknown nonlinearity {nonlinearity!r}: use 'tanh' or 'relu'")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:   # (B, F), (B, H) -> (B, H)
        (h,), unbatched = self._run(input, hx)
        return h.squeeze(0) if unbatched else h

    def recurrence(self, gi: Tensor, state: State, weight_hh: Tensor, bias_hh: Tensor | None) -> State:
        (h,) = state
        return (NONLINEARITIES[self.nonlinearity](gi + F.linear(h, weight_hh, bias_hh)),)

    @classmethod
    def _torch_kwargs(cls, module: nn.Module) -> dict:
        return {"nonlinearity": module.nonlinearity}

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}")


class LSTMCell(_Cell):
    """The long short-term memory cell, its four gates in torch's order ``i, f, g, o``.

    Args:
        input_size: features ``F`` of each input.
        hidden_size: size ``H`` of the hidden and the cell state.
        bias: whether the two biases exist.
    """

    num_gates = 4
    num_states = 2
    torch_type = nn.LSTMCell

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        (h, c), unbatched = self._run(input, hx)
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)

    def recurrence(self, gi: Tensor, state: State, weight_hh: Tensor, bias_hh: Tensor | None) -> State:
        h, c = state
        i, f, g, o = (gi + F.linear(h, weight_hh, bias_hh)).chunk(4, dim=1)
        i = torch.sigmoid(i)         # input gate: how much of the candidate to store
        f = torch.sigmoid(f)         # forget gate: how much of the old memory to keep
        g = torch.tanh(g)            # cell candidate, in [-1, 1]
        o = torch.sigmoid(o)         # output gate: how much of the memory to reveal
        c = f * c + i * g            # the constant error carousel
        return o * torch.tanh(c), c


class GRUCell(_Cell):
    """The gated recurrent unit, its gates in torch's order ``r, z, n``; the reset gate scales
    ``W_hn h + b_hn`` (bias included), as torch and cuDNN do.

    Args:
        input_size: features ``F`` of each input.
        hidden_size: size ``H`` of the hidden state.
        bias: whether the two biases exist.
    """

    num_gates = 3
    torch_type = nn.GRUCell

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        (h,), unbatched = self._run(input, hx)
        return h.squeeze(0) if unbatched else h

    def recurrence(self, gi: Tensor, state: State, weight_hh: Tensor, bias_hh: Tensor | None) -> State:
        (h,) = state
        i_r, i_z, i_n = gi.chunk(3, dim=1)
        h_r, h_z, h_n = F.linear(h, weight_hh, bias_hh).chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)     # reset gate: how much of the past enters the candidate
        z = torch.sigmoid(i_z + h_z)     # update gate: keep the old state (1) or take the new (0)
        n = torch.tanh(i_n + r * h_n)    # candidate state
        return ((1 - z) * n + z * h,)


# --- layers -----------------------------------------------------------------------------------

class _RecurrentLayer(nn.Module):
    """A stack of ``num_layers`` recurrent layers, one or two directions each, unrolling the
    cell class ``cell_type``; parameters named ``weight_ih_l{k}[_reverse]`` etc. as in torch."""

    cell_type: type[_Cell]
    torch_type: type[nn.RNNBase]

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 learn_init: bool = False, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        if not isinstance(num_layers, int) or num_layers < 1:
            raise UserError(f"num_layers must be a positive integer, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1:
            raise UserError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout={dropout} acts between stacked layers only; with num_layers=1 it does "
                          "nothing (as in torch)", stacklevel=2)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.learn_init = bidirectional, learn_init
        self.num_directions = 2 if bidirectional else 1
        kw = {"device": device, "dtype": dtype}
        gates = self.cell_type.num_gates * hidden_size
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * self.num_directions
            for direction in range(self.num_directions):
                w_ih, w_hh, b_ih, b_hh = self._names(layer, direction)
                self.register_parameter(w_ih, nn.Parameter(torch.empty(gates, in_size, **kw)))
                self.register_parameter(w_hh, nn.Parameter(torch.empty(gates, hidden_size, **kw)))
                if bias:
                    self.register_parameter(b_ih, nn.Parameter(torch.empty(gates, **kw)))
                    self.register_parameter(b_hh, nn.Parameter(torch.empty(gates, **kw)))
        if learn_init:
            # Zeros: the fixed state torch starts from, so a fresh layer computes what torch's
            # does, and BPTT then carries the error back to the initial state to learn it.
            shape = (num_layers * self.num_directions, hidden_size)
            self.h0 = nn.Parameter(torch.zeros(shape, **kw))
            if self.cell_type.num_states == 2:
                self.c0 = nn.Parameter(torch.zeros(shape, **kw))
        self.reset_parameters()

    @staticmethod
    def _names(layer: int, direction: int) -> tuple[str, str, str, str]:
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        return tuple(name + suffix for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def _weights(self, layer: int, direction: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        return tuple(getattr(self, name, None) for name in self._names(layer, direction))

    def _initial_params(self) -> list[Tensor]:
        return [self.h0, self.c0] if self.cell_type.num_states == 2 else [self.h0]

    def reset_parameters(self) -> None:
        """torch's initialisation: every weight and bias uniform on ``±1/sqrt(hidden_size)``;
        a learned initial state is left as it is."""
        initial = {id(p) for p in self._initial_params()} if self.learn_init else set()
        _uniform_init((p for p in self.parameters() if id(p) not in initial), self.hidden_size)

    def recurrence(self, gi: Tensor, state: State, weight_hh: Tensor, bias_hh: Tensor | None) -> State:
        """The cell's step from the projected input ``gi (B, G*H)``: the cell class's own
        method, so the gates are written once; it reads no attribute but ``nonlinearity``,
        which :class:`RNN` has as :class:`RNNCell` does."""
        return self.cell_type.recurrence(self, gi, state, weight_hh, bias_hh)

    def _forward(self, input: Tensor | PackedSequence,
                 hx: Tensor | tuple[Tensor, ...] | None) -> tuple[Tensor | PackedSequence, State]:
        """Run every layer and direction; the output as the input came (packed, batch-first,
        unbatched) and the final states ``(L*D, B, H)`` each (``(L*D, H)`` unbatched)."""
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            steps = batch_sizes.tolist()
            batch, unbatched = steps[0], False
        else:
            if input.dim() not in (2, 3):
                raise UserError(f"{type(self).__name__} expects a (T, B, F) input ((B, T, F) with batch_first, "
                                f"(T, F) unbatched) or a PackedSequence, got shape {tuple(input.shape)}")
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else input.transpose(0, 1) if self.batch_first else input
            length, batch = x.shape[:2]
            data, steps = x.reshape(length * batch, x.shape[2]), [batch] * length
            sorted_indices = unsorted_indices = None
        if data.shape[-1] != self.input_size:
            raise UserError(f"{type(self).__name__} was built for input_size={self.input_size}, "
                            f"got inputs with {data.shape[-1]} features")
        state = self._initial_state(hx, batch, data, unbatched, sorted_indices)

        finals = []
        layer_input = data                                           # (N, F): the steps, one after another
        for layer in range(self.num_layers):
            if layer > 0:
                layer_input = F.dropout(layer_input, self.dropout, self.training)
            outputs = []
            for direction in range(self.num_directions):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, direction)
                gi = F.linear(layer_input, w_ih, b_ih).split(steps)   # the input projection, all steps at once
                k = layer * self.num_directions + direction
                scan = self._scan_reverse if direction else self._scan_forward
                out, final = scan(gi, tuple(s[k] for s in state), w_hh, b_hh)
                outputs.append(out)
                finals.append(final)
            layer_input = torch.cat(outputs, dim=1)                  # (N, D*H)
        h_n = tuple(torch.stack(s) for s in zip(*finals))            # (L*D, B, H) each

        if isinstance(input, PackedSequence):
            if unsorted_indices is not None:
                h_n = tuple(h.index_select(1, unsorted_indices) for h in h_n)
            return PackedSequence(layer_input, batch_sizes, sorted_indices, unsorted_indices), h_n
        output = layer_input.view(length, batch, -1)
        if unbatched:
            return output.squeeze(1), tuple(h.squeeze(1) for h in h_n)
        return (output.transpose(0, 1) if self.batch_first else output), h_n

    def _initial_state(self, hx: Tensor | tuple[Tensor, ...] | None, batch: int, data: Tensor,
                       unbatched: bool, sorted_indices: Tensor | None) -> State:
        """The initial states ``(L*D, B, H)`` in the order the sequences are processed: ``hx``,
        the learned state, or zeros."""
        num_states = self.cell_type.num_states
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if hx is None:
            if self.learn_init:
                return tuple(p.unsqueeze(1).expand(shape) for p in self._initial_params())
            return (data.new_zeros(shape),) * num_states
        state = (hx,) if isinstance(hx, Tensor) else tuple(hx)
        if len(state) != num_states or not all(isinstance(h, Tensor) for h in state):
            raise UserError(f"{type(self).__name__} takes its initial state as "
                            + ("a tuple (h_0, c_0)" if num_states == 2 else "one tensor h_0"))
        expected = (shape[0], shape[2]) if unbatched else shape
        for h in state:
            if tuple(h.shape) != expected:
                raise UserError(f"{type(self).__name__} expects an initial state of shape {expected} "
                                f"(layers * directions, batch, hidden), got {tuple(h.shape)}")
        if unbatched:
            state = tuple(h.unsqueeze(1) for h in state)
        if sorted_indices is not None:
            state = tuple(h.index_select(1, sorted_indices) for h in state)
        return state

    def _scan_forward(self, gi: tuple[Tensor, ...], state: State, weight_hh: Tensor,
                      bias_hh: Tensor | None) -> tuple[Tensor, State]:
        """Left to right over the steps ``gi`` (``(B_t, G*H)`` each, ``B_t`` not increasing: the
        longest sequences first).  A sequence that ends leaves the batch, its state set aside
        as its final one."""
        outputs, ended = [], []
        for g in gi:
            active = g.shape[0]
            if active < state[0].shape[0]:
                ended.append(tuple(s[active:] for s in state))
                state = tuple(s[:active] for s in state)
            state = self.recurrence(g, state, weight_hh, bias_hh)
            outputs.append(state[0])
        ended.append(state)
        return torch.cat(outputs), tuple(torch.cat(parts[::-1]) for parts in zip(*ended))

    def _scan_reverse(self, gi: tuple[Tensor, ...], state0: State, weight_hh: Tensor,
                      bias_hh: Tensor | None) -> tuple[Tensor, State]:
        """Right to left: a sequence joins the batch, from its initial state, at its own last
        valid step."""
        outputs = []
        state = tuple(s[:gi[-1].shape[0]] for s in state0)
        for g in reversed(gi):
            active = g.shape[0]
            if active > state[0].shape[0]:
                state = tuple(torch.cat([s, s0[s.shape[0]:active]]) for s, s0 in zip(state, state0))
            state = self.recurrence(g, state, weight_hh, bias_hh)
            outputs.append(state[0])
        return torch.cat(outputs[::-1]), state

    @classmethod
    def from_torch(cls, module: nn.RNNBase) -> Self:
        """The equivalent vislab layer with ``module``'s weights copied (same device, dtype and
        training mode)."""
        if type(module) is not cls.torch_type:
            raise UserError(f"{cls.__name__}.from_torch takes a torch.nn.{cls.torch_type.__name__}, "
                            f"got {type(module).__name__}")
        if getattr(module, "proj_size", 0):
            raise UserError("vislab's LSTM has no projection: from_torch needs an LSTM with proj_size=0")
        p = module.weight_ih_l0
        layer = cls(module.input_size, module.hidden_size, num_layers=module.num_layers, bias=module.bias,
                    batch_first=module.batch_first, dropout=module.dropout, bidirectional=module.bidirectional,
                    device=p.device, dtype=p.dtype, **cls._torch_kwargs(module))
        layer.load_state_dict(module.state_dict())
        return layer.train(module.training)

    @classmethod
    def _torch_kwargs(cls, module: nn.RNNBase) -> dict:
        return {}

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False), ("learn_init", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s


class RNN(_RecurrentLayer):
    """The simple recurrent layer (Elman network), ``torch.nn.RNN``'s twin.

    Args:
        input_size: features ``F`` of each step.
        hidden_size: size ``H`` of the hidden state.
        num_layers: stacked layers, each reading the previous one's outputs.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        bias: whether the biases exist.
        batch_first: inputs and outputs are ``(B, T, F)`` rather than ``(T, B, F)``.
        dropout: dropout on the outputs of every layer but the last, in training.
        bidirectional: a second layer reads each sequence right to left; outputs concatenated.
        learn_init: learn the initial state ``h0 (L*D, H)``, used when forward gets none.
    """

    cell_type = RNNCell
    torch_type = nn.RNN

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 *, learn_init: bool = False, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        if nonlinearity not in NONLINEARITIES:
            raise UserError(f"unknown nonlinearity {nonlinearity!r}: use 'tanh' or 'relu'")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         learn_init=learn_init, device=device, dtype=dtype)

    def forward(self, input: Tensor | PackedSequence,
                hx: Tensor | None = None) -> tuple[Tensor | PackedSequence, Tensor]:
        """``(T, B, F)`` and ``h_0 (L*D, B, H)`` -> output ``(T, B, D*H)``, ``h_n (L*D, B, H)``."""
        output, (h_n,) = self._forward(input, hx)
        return output, h_n

    @classmethod
    def _torch_kwargs(cls, module: nn.RNNBase) -> dict:
        return {"nonlinearity": module.nonlinearity}

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}")


class LSTM(_RecurrentLayer):
    """The LSTM layer, ``torch.nn.LSTM``'s twin (without ``proj_size``).

    Args:
        input_size: features ``F`` of each step.
        hidden_size: size ``H`` of the hidden and the cell state.
        num_layers: stacked layers, each reading the previous one's outputs.
        bias: whether the biases exist.
        batch_first: inputs and outputs are ``(B, T, F)`` rather than ``(T, B, F)``.
        dropout: dropout on the outputs of every layer but the last, in training.
        bidirectional: a second layer reads each sequence right to left; outputs concatenated.
        learn_init: learn the initial states ``h0``, ``c0 (L*D, H)``, used when forward gets none.
    """

    cell_type = LSTMCell
    torch_type = nn.LSTM

    def forward(self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        """``(T, B, F)`` and ``(h_0, c_0)`` -> output ``(T, B, D*H)``, ``(h_n, c_n)``."""
        output, (h_n, c_n) = self._forward(input, hx)
        return output, (h_n, c_n)


class GRU(_RecurrentLayer):
    """The GRU layer, ``torch.nn.GRU``'s twin.

    Args:
        input_size: features ``F`` of each step.
        hidden_size: size ``H`` of the hidden state.
        num_layers: stacked layers, each reading the previous one's outputs.
        bias: whether the biases exist.
        batch_first: inputs and outputs are ``(B, T, F)`` rather than ``(T, B, F)``.
        dropout: dropout on the outputs of every layer but the last, in training.
        bidirectional: a second layer reads each sequence right to left; outputs concatenated.
        learn_init: learn the initial state ``h0 (L*D, H)``, used when forward gets none.
    """

    cell_type = GRUCell
    torch_type = nn.GRU

    def forward(self, input: Tensor | PackedSequence,
                hx: Tensor | None = None) -> tuple[Tensor | PackedSequence, Tensor]:
        """``(T, B, F)`` and ``h_0 (L*D, B, H)`` -> output ``(T, B, D*H)``, ``h_n (L*D, B, H)``."""
        output, (h_n,) = self._forward(input, hx)
        return output, h_n


# --- the vanishing gradient -------------------------------------------------------------------

LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def gradient_norms_over_lag(cell: str, steps: int = 100, hidden_size: int = 64, input_size: int = 16,
                            seed: int = 0, forget_bias: float | None = 1.0) -> np.ndarray:
    """``||d (u . h_T) / d x_{T-k}||`` for every lag ``k = 0 .. steps-1`` (``(steps,)``, float64).

    A freshly initialised one-layer ``cell`` (``"rnn"`` (tanh), ``"lstm"`` or ``"gru"``, torch's
    initialisation) reads ``steps`` standard-normal inputs; the scalar is the last hidden state
    projected on a fixed random unit vector ``u``.  BPTT multiplies the gradient by one step's
    Jacobian per lag: for the simple RNN that is ``diag(tanh') W_hh``, contracting, so the norm
    falls geometrically with the lag; the LSTM's cell state passes it on scaled by the forget
    gate alone (the constant error carousel), so it falls as fast as the forget gate closes
    (003, "Recurrent Neural Networks").  Computed in float64, so a gradient of 1e-30 is still
    a number.

    ``forget_bias`` is the LSTM forget gate's total bias (``bias_ih``'s forget slice; ``bias_hh``'s
    is zeroed).  torch draws it like every other bias, so the gate starts near 0.5 and halves
    the carousel's error at every step; 1 starts it open (Gers et al. 2000, Jozefowicz et al.
    2015; Keras' ``unit_forget_bias``).  ``None`` keeps torch's initialisation.
    """
    if cell not in LAYERS:
        raise UserError(f"unknown cell {cell!r}: use one of {', '.join(LAYERS)}")
    if steps < 1:
        raise UserError(f"steps must be at least 1, got {steps}")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = LAYERS[cell](input_size, hidden_size, dtype=torch.float64)
    if cell == "lstm" and forget_bias is not None:
        with torch.no_grad():
            forget = slice(hidden_size, 2 * hidden_size)      # gates i, f, g, o
            layer.bias_ih_l0[forget] = forget_bias
            layer.bias_hh_l0[forget] = 0.0
    x = torch.randn(steps, 1, input_size, generator=gen, dtype=torch.float64, requires_grad=True)
    u = torch.randn(hidden_size, generator=gen, dtype=torch.float64)
    output, _ = layer(x)
    (grad,) = torch.autograd.grad(output[-1, 0] @ (u / u.norm()), x)
    return grad[:, 0].norm(dim=1).flip(0).numpy()


# --- helpers ----------------------------------------------------------------------------------

def _check_sizes(input_size: int, hidden_size: int) -> None:
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")


def _uniform_init(params, hidden_size: int) -> None:
    bound = 1.0 / math.sqrt(hidden_size)
    for p in params:
        nn.init.uniform_(p, -bound, bound)
