"""Exact per-layer cost of any ``nn.Module``: output shape, parameters, MACs, FLOPs, other ops,
activation memory, receptive field and depth.

The model runs once under a ``TorchDispatchMode`` that sees every aten op (so matmuls, attention,
residual adds and functional calls count, not only modules with hooks), while forward hooks keep
the stack of modules the op belongs to.  By default the run is on ``meta`` tensors: shapes flow,
no arithmetic is done, so ViT-B/16 at 224x224 is counted in a fraction of a second.

Conventions (docs/analysis.md has the full table):

* **MACs** are the multiply-accumulates of convolutions, linear layers, matmuls and attention
  (QK^T and AV): torchvision's and fvcore's convention; biases are not MACs.
* **FLOPs = 2 x MACs.**
* **Other ops** count everything else one op per arithmetic step and element: BN (eval) 2, an
  add 1, a ReLU 1 comparison, a k x k max-pool k*k-1 comparisons per output, a bias 1 add...
* **Activation memory** is the bytes of each row's output when the row allocated it (an
  in-place ReLU or a view costs 0), so the total is the memory of all distinct layer outputs.
* **Receptive field** size, jump and start follow the standard recurrence through convolutions
  and pooling (``size += (k_eff-1)*jump; start += ((k_eff-1)/2 - pad)*jump; jump *= stride``),
  take the hull where branches join, and become ``"global"`` after a reduction over space.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakTensorKeyDictionary

aten = torch.ops.aten

GLOBAL = "global"      # a unit that depends on the whole input
_FOLDED = "folded"     # positions folded into the last dim (after flatten): known per element only


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one unit of a ``(B, C, H, W)`` map, per axis ``(h, w)`` in input pixels.

    ``size``: extent of the field; ``jump``: input pixels between two adjacent units;
    ``start``: centre of unit 0's field (pixel ``i`` is centred at ``i``; may be negative or x.5).
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]

    def window(self, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
               dilation: Sequence[int]) -> ReceptiveField:
        """The field after a sliding window (convolution or pooling) on this map."""
        ks = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        return ReceptiveField(
            size=tuple(r + (k - 1) * j for r, k, j in zip(self.size, ks, self.jump)),
            jump=tuple(j * s for j, s in zip(self.jump, stride)),
            start=tuple(st + ((k - 1) / 2 - p) * j
                        for st, k, p, j in zip(self.start, ks, padding, self.jump)))

    @staticmethod
    def hull(fields: Sequence[ReceptiveField]) -> ReceptiveField | None:
        """The smallest field holding all ``fields`` (branches joined by add or cat); ``None``
        when their jumps differ (the maps are not aligned)."""
        if len({f.jump for f in fields}) != 1:
            return None
        size, start = [], []
        for a in range(2):
            lo = min(f.start[a] - (f.size[a] - 1) / 2 for f in fields)
            hi = max(f.start[a] + (f.size[a] - 1) / 2 for f in fields)
            size.append(round(hi - lo) + 1)
            start.append((lo + hi) / 2)
        return ReceptiveField(tuple(size), fields[0].jump, tuple(start))


RF = ReceptiveField | str | None   # ReceptiveField, GLOBAL, or None (not followed)


@dataclass
class LayerRow:
    """One module call (or the ops a module with submodules runs itself, ``own=True``)."""

    name: str                     # module path, "" for the model itself
    kind: str                     # module class
    own: bool = False
    out_shape: tuple[int, ...] = ()
    params: int = 0               # parameters this row used first
    macs: int = 0
    other_ops: int = 0
    act_bytes: int = 0
    rf: RF = None

    @property
    def flops(self) -> int:
        """FLOPs of the MACs: 2 x MACs."""
        return 2 * self.macs


@dataclass
class Summary:
    """Rows (one per module call that computed something) and totals; see the module docstring."""

    model: str
    input_size: tuple[int, ...]
    batch_size: int
    dtype: str
    counted_on: str               # "meta" (shapes only) or the device that really computed
    rows: list[LayerRow]
    params: int                   # every parameter of the model, shared ones once
    trainable_params: int
    depth: int                    # conv/linear layers on the longest input -> output path
    uncounted: dict[str, int] = field(default_factory=dict)   # aten op -> calls without a rule

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def other_ops(self) -> int:
        return sum(r.other_ops for r in self.rows)

    @property
    def total_flops(self) -> int:
        """FLOPs of everything: 2 x MACs + other ops."""
        return self.flops + self.other_ops

    @property
    def act_bytes(self) -> int:
        return sum(r.act_bytes for r in self.rows)

    @property
    def params_used(self) -> int:
        """Parameters the forward pass touched (less than ``params`` when some are unused, e.g.
        auxiliary heads that only run in training)."""
        return sum(r.params for r in self.rows)

    def totals(self) -> dict[str, int]:
        return dict(params=self.params, trainable_params=self.trainable_params,
                    params_used=self.params_used, macs=self.macs, flops=self.flops,
                    other_ops=self.other_ops, total_flops=self.total_flops,
                    act_bytes=self.act_bytes, depth=self.depth)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (``rf``: ``{size, jump, start}``, ``"global"`` or ``None``)."""
        rows = []
        for r in self.rows:
            d = asdict(r)
            d["out_shape"] = list(r.out_shape)
            d["flops"] = r.flops
            d["rf"] = _rf_json(r.rf)
            rows.append(d)
        return dict(model=self.model, input_size=list(self.input_size), batch_size=self.batch_size,
                    dtype=self.dtype, counted_on=self.counted_on,
                    conventions="FLOPs = 2 x MACs; other_ops = BN, pooling, activations, adds, "
                                "biases (see docs/analysis.md)",
                    rows=rows, totals=self.totals(), uncounted=dict(self.uncounted))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def table(self) -> str:
        """The per-layer table with totals at the bottom, as ``vislab summary`` prints it."""
        head = ("layer", "type", "output", "params", "MACs", "FLOPs", "other ops", "act bytes",
                "RF", "jump", "start")
        lines = [head]
        for r in self.rows:
            rf = r.rf
            rf_cols = ((_axes(rf.size), _axes(rf.jump), _axes(rf.start))
                       if isinstance(rf, ReceptiveField) else (rf or "-", "", ""))
            lines.append((r.name or "(model)", r.kind + ("*" if r.own else ""),
                          "x".join(map(str, r.out_shape)), f"{r.params:,}", f"{r.macs:,}",
                          f"{r.flops:,}", f"{r.other_ops:,}", f"{r.act_bytes:,}", *rf_cols))
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        left = {0, 1, 2}
        out = [f"{self.model}: input {self.batch_size}x{'x'.join(map(str, self.input_size))} "
               f"{self.dtype}, counted on {self.counted_on}"]
        for line in lines:
            out.append("  ".join(c.ljust(w) if i in left else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        out.insert(2, "-" * len(out[1]))
        t = self.totals()
        out += ["-" * len(out[1]),
                "* ops the module runs itself, outside its submodules (e.g. a residual add)",
                f"params                                      {self.params:,} "
                f"(trainable {self.trainable_params:,}"
                + (f", used in this forward {self.params_used:,})"
                   if self.params_used != self.params else ")"),
                f"MACs (conv, linear, matmul, attention)      {_giga(t['macs'])}",
                f"FLOPs = 2 x MACs                            {_giga(t['flops'])}",
                f"other ops (BN, pool, activations, adds)     {_giga(t['other_ops'])}",
                f"all FLOPs = 2 x MACs + other ops            {_giga(t['total_flops'])}",
                f"activation memory (layer outputs)           {t['act_bytes']:,} bytes "
                f"({t['act_bytes'] / 2**20:.2f} MiB)",
                f"depth (conv/linear on the longest path)     {self.depth}"]
        if self.uncounted:
            out.append("not counted (no rule): "
                       + ", ".join(f"{k} x{v}" for k, v in sorted(self.uncounted.items())))
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()


def _giga(n: int) -> str:
    return f"{n:,} ({n / 1e9:.3f} G)"


def _axes(pair: tuple[float, float]) -> str:
    a, b = (f"{v:g}" for v in pair)
    return a if a == b else f"{a}x{b}"


def _rf_json(rf: RF) -> dict | str | None:
    if isinstance(rf, ReceptiveField):
        return dict(size=list(rf.size), jump=list(rf.jump), start=list(rf.start))
    return rf if rf == GLOBAL else None


# ------------------------------------------------------------------------------ op rules

def _packets(*names: str) -> set:
    """aten overload packets by name, with their in-place ``name_`` variants where they exist."""
    return {getattr(aten, n) for name in names for n in (name, name + "_") if hasattr(aten, n)}


# Pointwise ops: cost per output element (transcendental functions count 1).
_POINTWISE: dict = {}
for _cost, _names in {
    1: ("add", "sub", "rsub", "mul", "div", "relu", "threshold", "clamp_min", "clamp_max",
        "maximum", "minimum", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "reciprocal", "square",
        "pow", "tanh", "erf", "where", "masked_fill", "sign", "eq", "ne", "lt", "le", "gt", "ge"),
    2: ("hardtanh", "leaky_relu", "addcmul", "addcdiv", "lerp"),   # hardtanh = relu6: 2 compares
    3: ("sigmoid", "softplus"),             # sigmoid: exp, add, divide; softplus: exp, add, log
    4: ("silu", "hardsigmoid", "elu"),      # x*sigmoid(x); relu6(x+3)/6; compare, exp, sub, mul
    5: ("hardswish", "mish"),               # x*relu6(x+3)/6; x*tanh(softplus(x))
}.items():
    _POINTWISE.update(dict.fromkeys(_packets(*_names), _cost))

_BATCH_NORM = _packets("native_batch_norm", "_native_batch_norm_legit",
                       "_native_batch_norm_legit_no_training", "cudnn_batch_norm",
                       "miopen_batch_norm")
_SOFTMAX = _packets("_softmax", "_safe_softmax", "_log_softmax")
_MEAN = _packets("mean")
_REDUCE = _packets("sum", "amax", "amin", "max", "min", "prod", "logsumexp")
_NORM2 = _packets("linalg_vector_norm")
_CONV = _packets("convolution", "_convolution")
_MATMUL = _packets("mm", "addmm", "bmm", "baddbmm", "mv", "addmv", "dot")
_MAX_POOL = _packets("max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
                     "max_pool2d_with_indices", "max_pool3d_with_indices")
_AVG_POOL = _packets("avg_pool1d", "avg_pool2d", "avg_pool3d")
_ADAPTIVE = _packets("_adaptive_avg_pool2d", "adaptive_max_pool2d")
_SDPA = _packets("_scaled_dot_product_flash_attention_for_cpu",
                 "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                 "_scaled_dot_product_cudnn_attention",
                 "_scaled_dot_product_fused_attention_overrideable")
# Data movement and tensor creation: no arithmetic.
_FREE = _packets("cat", "stack", "clone", "copy", "_to_copy", "contiguous", "detach",
                 "_unsafe_view", "as_strided", "constant_pad_nd", "index", "index_select",
                 "gather", "embedding", "repeat", "roll", "flip", "upsample_nearest2d",
                 "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones",
                 "ones_like", "full", "full_like", "new_empty", "new_empty_strided", "new_zeros",
                 "new_ones", "new_full", "arange", "fill", "zero", "lift_fresh", "lift_fresh_copy",
                 "scalar_tensor", "_local_scalar_dense", "bernoulli", "native_dropout", "rand",
                 "randn", "rand_like", "randn_like")
# Ops that move data without moving positions: a map keeps its field (views are checked by shape).
_LAYOUT = _packets("cat", "stack", "clone", "copy", "_to_copy", "contiguous", "detach")
_CAT = _packets("cat", "stack")
_CLAMP = _packets("clamp")
_GELU = _packets("gelu")
_NORM = _packets("native_layer_norm", "native_group_norm")


def _named(func, args: tuple, kwargs: dict) -> dict[str, Any]:
    """An aten call's arguments by schema name."""
    return {a.name: v for a, v in zip(func._schema.arguments, args)} | kwargs


def _pool_args(func, args: tuple, kwargs: dict) -> tuple[list[int], ...]:
    """(kernel, stride, padding, dilation) of a ``max_pool``/``avg_pool`` aten call, each over all
    pooled dims (1, 2 or 3, from the op's name)."""
    named = _named(func, args, kwargs)
    nd = int(func.__name__.split("pool")[1][0])

    def full(v: Any, default: Any) -> list[int]:
        v = default if v is None or (isinstance(v, (list, tuple)) and not v) else v
        v = list(v) if isinstance(v, (list, tuple)) else [v]
        return v * nd if len(v) == 1 else v

    k = full(named["kernel_size"], 1)
    return k, full(named.get("stride"), k), full(named.get("padding"), 0), \
        full(named.get("dilation"), 1)


def _adaptive_bins(n_in: int, n_out: int) -> list[int]:
    """Bin lengths of adaptive pooling (bin ``i`` spans ``floor(i*n/m)`` to ``ceil((i+1)*n/m)``)."""
    return [math.ceil((i + 1) * n_in / n_out) - (i * n_in) // n_out for i in range(n_out)]


def _cost(func, args: tuple, kwargs: dict, out: Tensor) -> tuple[int, int] | None:
    """(MACs, other ops) of one aten call; ``None`` when vislab has no rule for it."""
    op = func.overloadpacket
    n = out.numel()
    if op in _CONV:
        x, w, bias, transposed = args[0], args[1], args[2], args[6]
        macs = (x if transposed else out).numel() * math.prod(w.shape[1:])
        return macs, n if bias is not None else 0
    if op in _MATMUL:
        a, b = (args[1], args[2]) if op in (aten.addmm, aten.baddbmm, aten.addmv) else args[:2]
        macs = math.prod(a.shape) * (b.shape[-1] if b.ndim > 1 else 1)
        return macs, n if op in (aten.addmm, aten.baddbmm, aten.addmv) else 0
    if op in _SDPA:
        q, k, v = args[:3]
        named = _named(func, args, kwargs)
        scores = math.prod(q.shape[:-1]) * k.shape[-2]                 # B*H*L*S
        macs = scores * (q.shape[-1] + v.shape[-1])                    # QK^T and AV
        masked = named.get("is_causal") is True or any(
            isinstance(named.get(a), Tensor) for a in ("attn_mask", "attn_bias"))
        scaling = q.numel() + k.numel()        # q and k times sqrt(scale), as torch's math path
        return macs, scaling + scores * (5 + int(masked))     # softmax 5, mask 1 per score
    if op in _POINTWISE:
        return 0, _POINTWISE[op] * n
    if op in _CLAMP:
        named = _named(func, args, kwargs)
        return 0, sum(named.get(b) is not None for b in ("min", "max")) * n
    if op in _GELU:
        return 0, (9 if _named(func, args, kwargs).get("approximate") == "tanh" else 5) * n
    if op in _BATCH_NORM:
        return 0, (6 if _named(func, args, kwargs).get("training") is True else 2) * n
    if op in _NORM:
        return 0, (7 if _named(func, args, kwargs).get("weight") is not None else 5) * n
    if op in _SOFTMAX:
        return 0, 5 * n
    if op in _MAX_POOL:
        return 0, n * (math.prod(_pool_args(func, args, kwargs)[0]) - 1)
    if op in _AVG_POOL:
        return 0, n * math.prod(_pool_args(func, args, kwargs)[0])
    if op in _ADAPTIVE:
        x = args[0]
        h = _adaptive_bins(x.shape[-2], out.shape[-2])
        w = _adaptive_bins(x.shape[-1], out.shape[-1])
        area = sum(h) * sum(w) * math.prod(out.shape[:-2])
        return 0, area if op is aten._adaptive_avg_pool2d else area - n
    if op in _MEAN:
        return 0, args[0].numel()
    if op in _REDUCE:
        return 0, n if func._overloadname == "other" else args[0].numel() - n   # max(a, b)
    if op in _NORM2:
        return 0, 2 * args[0].numel()          # square and add per element, a root per output
    if op in _FREE or func.is_view:
        return 0, 0
    return None


# ----------------------------------------------------------------------- receptive fields

def _spatial_dims(x: Tensor, dims: Any) -> bool:
    """Whether reducing ``x`` over ``dims`` (``None``: all) touches its last two (spatial) dims."""
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return True
    dims = dims if isinstance(dims, (list, tuple)) else [dims]
    return any(d % x.ndim >= x.ndim - 2 for d in dims)


def _rf_rule(func, args: tuple, kwargs: dict, out: Tensor, x: Tensor, fields: list[RF]) -> RF:
    """Field of ``out`` given the fields of the activation inputs (``x`` is the first one)."""
    op = func.overloadpacket
    if GLOBAL in fields:                   # depends on something that depends on everything
        return GLOBAL
    if None in fields:
        return None
    if _FOLDED in fields:
        if op in _MATMUL or op in _MEAN or op in _REDUCE or op in _NORM2 or op in _SOFTMAX:
            return GLOBAL
        pointwise = op in _POINTWISE or op in _LAYOUT or func.is_view
        return _FOLDED if pointwise and all(f == _FOLDED for f in fields) \
            and out.shape == x.shape else None
    if op in _MATMUL or op in _SDPA or op in _NORM:
        return GLOBAL                      # contracts or normalises over a spatial dim
    if op in _MEAN or op in _REDUCE or op in _NORM2 or op in _SOFTMAX:
        return GLOBAL if _spatial_dims(x, _named(func, args, kwargs).get("dim")) else fields[0]
    if op in _CONV:
        w, stride, padding, dilation, transposed = args[1], args[3], args[4], args[5], args[6]
        if transposed or w.ndim != 4:
            return None
        return fields[0].window(w.shape[2:], stride, padding, dilation)
    if op in _MAX_POOL or op in _AVG_POOL:       # a window over the last two (spatial) dims
        pool = _pool_args(func, args, kwargs)
        return fields[0].window(*(v[-2:] for v in pool)) if len(pool[0]) > 1 else None
    if op in _ADAPTIVE:
        (hi, wi), (ho, wo) = x.shape[-2:], out.shape[-2:]
        if (ho, wo) == (1, 1):
            return GLOBAL
        if hi % ho or wi % wo:
            return None                    # unequal bins: no single recurrence
        k = (hi // ho, wi // wo)
        return fields[0].window(k, k, (0, 0), (1, 1))
    if op is aten.permute:
        return fields[0] if [d % x.ndim for d in args[1]][-2:] == [x.ndim - 2, x.ndim - 1] \
            else None
    if op is aten.transpose:
        d0, d1 = args[1] % x.ndim, args[2] % x.ndim
        return fields[0] if d0 == d1 or max(d0, d1) < x.ndim - 2 else None
    if op in (aten.view, aten._unsafe_view, aten.reshape) and x.ndim >= 3 and out.ndim == 2 \
            and out.shape[0] == x.shape[0]:
        return _FOLDED                     # flatten(1): positions go into the feature dim
    if op in _CAT and _spatial_dims(out, args[1] if len(args) > 1 else 0):
        return None
    if op in _POINTWISE or op in _BATCH_NORM or op in _LAYOUT or op in _CLAMP or op in _GELU \
            or func.is_view:
        if out.ndim < 2 or out.shape[-2:] != x.shape[-2:]:
            return None
        return ReceptiveField.hull(fields)
    return None


# --------------------------------------------------------------------------------- tracer

@dataclass
class _State:
    """What the tracer knows of a tensor: field, weight layers behind it, whether it is a weight."""

    rf: RF = None
    depth: int = 0
    weight: bool = False


@dataclass
class _Frame:
    name: str
    module: nn.Module
    row: int | None = None      # the open row of this call, if any


class _Tracer(TorchDispatchMode):
    """Counts every aten op into the row of the innermost module call on the stack."""

    def __init__(self, params: dict[int, Tensor]) -> None:
        super().__init__()
        self.params = params                        # id -> parameter tensor used by the forward
        self.seen: set[int] = set()
        self.stack: list[_Frame] = []
        self.rows: list[LayerRow] = []
        self.last_out: list[Tensor | None] = []     # per row: output of its last op
        self.alloc: dict[int, int] = {}             # storage -> row that allocated it
        self.state = WeakTensorKeyDictionary()
        self.uncounted: Counter[str] = Counter()
        for p in params.values():
            self.state[p] = _State(weight=True)

    # module stack, driven by forward hooks
    def enter(self, name: str, module: nn.Module, *_: Any) -> None:
        if self.stack:
            self.stack[-1].row = None
        self.stack.append(_Frame(name, module))

    def leave(self, *_: Any) -> None:
        self.stack.pop()
        if self.stack:
            self.stack[-1].row = None               # ops after a child call start a new row

    def _row(self) -> int:
        frame = self.stack[-1]
        if frame.row is None:
            own = next(iter(frame.module.children()), None) is not None
            self.rows.append(LayerRow(frame.name, type(frame.module).__name__, own=own))
            self.last_out.append(None)
            frame.row = len(self.rows) - 1
        return frame.row

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.stack:
            self._record(func, args, kwargs, out)
        return out

    def _record(self, func, args: tuple, kwargs: dict, out: Any) -> None:
        outs = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
        if not outs:
            return
        ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        i = self._row()
        row = self.rows[i]
        for t in ins:
            if id(t) in self.params and id(t) not in self.seen:
                self.seen.add(id(t))
                row.params += t.numel()
        cost = _cost(func, args, kwargs, outs[0])
        if cost is None:
            self.uncounted[str(func.overloadpacket)] += 1
        else:
            row.macs += cost[0]
            row.other_ops += cost[1]
        states = [self.state.get(t) for t in ins]
        acts = [(t, s) for t, s in zip(ins, states) if s is not None and not s.weight]
        if acts:
            weighted = any(s is not None and s.weight for s in states)
            layer = func.overloadpacket in _CONV or func.overloadpacket in _MATMUL
            depth = max(s.depth for _, s in acts) + int(layer and weighted)
            rf = _rf_rule(func, args, kwargs, outs[0], acts[0][0], [s.rf for _, s in acts])
            new = _State(rf, depth)
        elif any(s is not None for s in states):
            new = _State(weight=True)               # computed from weights only
        else:
            return
        for t in outs:
            self.state[t] = new
        self.last_out[i] = outs[0]
        if all(r.alias_info is None for r in func._schema.returns):
            for t in outs:
                self.alloc[_storage(t)] = i

    def finish(self) -> list[LayerRow]:
        """Rows with their output shape, bytes and field; rows that computed nothing dropped."""
        rows = []
        for i, (row, out) in enumerate(zip(self.rows, self.last_out)):
            if out is None:
                continue
            row.out_shape = tuple(out.shape)
            row.act_bytes = out.numel() * out.element_size() if self.alloc.get(_storage(out)) == i \
                else 0
            state = self.state.get(out)
            row.rf = state.rf if state is not None and state.rf != _FOLDED else None
            if row.params or row.macs or row.other_ops or row.act_bytes:
                rows.append(row)
        return rows


def _storage(t: Tensor) -> int:
    return t.untyped_storage()._cdata


# ------------------------------------------------------------------------------ summarize

def summarize(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), *,
              batch_size: int = 1, dtype: torch.dtype | None = None, meta: bool = True,
              name: str | None = None) -> Summary:
    """Count ``model`` on one batch of shape ``(batch_size, *input_size)``, in eval mode; the
    input has ``dtype`` (default: that of the model's first floating-point parameter, else float32).

    With ``meta=True`` the parameters are swapped for ``meta`` tensors (the model is not changed
    and nothing is computed); a model whose forward needs real values (``.item()``, data-dependent
    shapes) is then run for real on its own device, with random input.

    Example::

        s = summarize(torchvision.models.resnet18(), (3, 224, 224))
        s.params, s.macs, s.rows[0].rf     # 11689512, 1814073344, ReceptiveField(...)
    """
    input_size = tuple(int(v) for v in input_size)
    if not input_size or min(input_size) < 1 or batch_size < 1:
        raise ValueError(f"input_size {input_size} and batch_size {batch_size} must be positive")
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                     torch.float32)
    modes = {m: m.training for m in model.modules()}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    # The fused nn.MultiheadAttention fast path is one opaque op: take the ops path.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        try:
            tracer, out, where = _run(model, input_size, batch_size, dtype, meta=meta)
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            if not meta or any(t.is_meta for t in model.parameters()):
                raise                    # a real error, or no real values to fall back on
            tracer, out, where = _run(model, input_size, batch_size, dtype, meta=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for m, training in modes.items():
            m.training = training
    depth = max((tracer.state[t].depth for t in tree_leaves(out)
                 if isinstance(t, Tensor) and t in tracer.state), default=0)
    params = list(model.parameters())
    return Summary(model=name or type(model).__name__, input_size=input_size,
                   batch_size=batch_size, dtype=str(dtype).removeprefix("torch."),
                   counted_on=where, rows=tracer.finish(),
                   params=sum(p.numel() for p in params),
                   trainable_params=sum(p.numel() for p in params if p.requires_grad),
                   depth=depth, uncounted=dict(tracer.uncounted))


def meta_twins(model: nn.Module) -> dict[str, Tensor]:
    """A ``meta`` twin of every parameter and buffer by name (tied tensors share one twin), for
    ``torch.func.functional_call``: the model runs on shapes only and is left untouched."""
    twins: dict[int, Tensor] = {}
    return {n: twins.setdefault(id(t), torch.empty_like(t, device="meta"))
            for n, t in [*model.named_parameters(remove_duplicate=False),
                         *model.named_buffers(remove_duplicate=False)]}


def _run(model: nn.Module, input_size: tuple[int, ...], batch_size: int, dtype: torch.dtype,
         meta: bool) -> tuple[_Tracer, Any, str]:
    first = next(model.parameters(), None)
    device = torch.device("meta") if meta else (first.device if first is not None
                                                 else torch.device("cpu"))
    if meta:
        swap = meta_twins(model)
        params = {id(swap[n]): swap[n] for n, _ in model.named_parameters()}
    else:
        swap, params = {}, {id(p): p for p in model.parameters()}
    with torch.inference_mode(False):    # a caller's inference mode would hide the ops from the tracer
        x = torch.randn(batch_size, *input_size, dtype=dtype, device=device,
                        generator=None if meta else torch.Generator(device).manual_seed(0))
    tracer = _Tracer(params)
    tracer.state[x] = _State(ReceptiveField((1, 1), (1, 1), (0.0, 0.0)) if x.ndim == 4 else None)
    handles = []
    for name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(partial(tracer.enter, name, m)))
        handles.append(m.register_forward_hook(tracer.leave, always_call=True))
    cached = _cached_tensors(model) if meta else []
    try:
        with torch.inference_mode(False), torch.no_grad(), tracer:
            out = torch.func.functional_call(model, swap, (x,)) if meta else model(x)
    finally:
        for h in handles:
            h.remove()
        for m, key, value in cached:     # a forward that caches tensors must not keep meta ones
            setattr(m, key, value)
    return tracer, out, "meta" if meta else str(device)


def _cached_tensors(model: nn.Module) -> list[tuple[nn.Module, str, Any]]:
    """Tensors (or lists of tensors) that modules keep as plain attributes, neither parameters nor
    buffers: a forward may replace them with tensors on its input's device (torchvision's
    ``AnchorGenerator.cell_anchors``), which on the meta pass would leave the model unusable."""
    out = []
    for m in model.modules():
        for key, value in vars(m).items():
            if key.startswith("_"):
                continue
            if isinstance(value, Tensor) or (isinstance(value, (list, tuple)) and value
                                              and all(isinstance(v, Tensor) for v in value)):
                out.append((m, key, value))
    return out


__all__ = ["GLOBAL", "LayerRow", "ReceptiveField", "Summary", "meta_twins", "summarize"]
