"""The one torch.fx trace of a module, for scan (``trace.py``) and the closed-form attacks alike.

:func:`trace` records the module's ``forward`` with ``torch.fx`` (stack traces kept, so scan can
name the user's source line); :func:`propagate` runs a probe through it so every node carries
its ``tensor_meta``; :func:`traced` does both.  Nothing is memoised: a trace reads the module as it
is now (its train/eval flags, its submodules), and every caller here traces a module of its own.
"""
from __future__ import annotations

import os
import sys

import torch
from torch import fx, nn
from torch.nn import functional as F
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import TensorMetadata

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


class _Tracer(fx.Tracer):
    """``fx.Tracer`` that records each node's stack trace itself (torch's own recording,
    ``record_stack_traces``, symbolises through its profiler and filters with
    ``torch.fx.experimental.symbolic_shapes``, which import dynamo and inductor: about a second
    per process on torch 2.13, for the file and line that ``trace.source_of`` reads), and that
    enters ``nn.MultiheadAttention`` (:func:`_attention_through`) instead of keeping it a leaf."""

    def call_module(self, m, forward, args, kwargs):
        if isinstance(m, nn.MultiheadAttention) and _plain_attention(m, args, kwargs):
            path = self.path_of_module(m)
            self.module_stack[path] = (path, type(m))   # its nodes are named after the module
            try:
                return _attention_through(m, *args, **kwargs)
            finally:
                self.module_stack.popitem(last=True)
        return super().call_module(m, forward, args, kwargs)

    def create_node(self, *args, **kwargs):
        node = super().create_node(*args, **kwargs)
        if not node.stack_trace:
            node.stack_trace = _user_stack(sys._getframe(1))
        return node


def _plain_attention(m: nn.MultiheadAttention, args, kwargs) -> bool:
    """The case :func:`_attention_through` spells out: one projection matrix, no masks, no extra
    key/value biases, eval-mode dropout (anything else stays one opaque module call)."""
    names = ("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")
    given = dict(zip(names, args[3:]), **kwargs)
    return (m._qkv_same_embed_dim and m.bias_k is None and not m.add_zero_attn and len(args) >= 3
            and (m.dropout == 0.0 or not m.training) and given.get("key_padding_mask") is None
            and given.get("attn_mask") is None and not given.get("is_causal", False))


def _attention_through(m: nn.MultiheadAttention, query, key, value, key_padding_mask=None, need_weights=True,
                       attn_mask=None, average_attn_weights=True, is_causal=False):
    """``nn.MultiheadAttention.forward`` in traceable ops, so that its projections appear as the
    Linears they are (applied at every token) and the batch stays the first dimension:
    in-projection, heads, scaled dot-product attention, out-projection.  Equal to the module's
    output (tests/test_layer_rules.py checks it); the attention weights when asked for."""
    same = query is key and key is value
    if not m.batch_first:                        # (L, N, E) -> (N, L, E)
        query = query.transpose(0, 1)
        key, value = (query, query) if same else (key.transpose(0, 1), value.transpose(0, 1))
    w, b = m.in_proj_weight, m.in_proj_bias
    if same:
        q, k, v = F.linear(query, w, b).chunk(3, dim=-1)
    else:
        (wq, wk, wv), (bq, bk, bv) = w.chunk(3), (b.chunk(3) if b is not None else (None,) * 3)
        q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
    heads = (m.num_heads, m.head_dim)
    q, k, v = (t.unflatten(-1, heads).transpose(1, 2) for t in (q, k, v))   # (N, H, L, d)
    if need_weights:
        weights = torch.softmax(q @ k.transpose(-2, -1) / m.head_dim ** 0.5, dim=-1)
        o = weights @ v
        weights = weights.mean(1) if average_attn_weights else weights
    else:
        o, weights = F.scaled_dot_product_attention(q, k, v), None
    out = F.linear(o.transpose(1, 2).flatten(2), m.out_proj.weight, m.out_proj.bias)   # named after out_proj
    return (out if m.batch_first else out.transpose(0, 1)), weights


def _user_stack(frame) -> str | None:
    """The frames from the outermost ``forward`` on, torch's own files left out, formatted as
    ``traceback`` does (``File "...", line N, in name``); None outside any forward."""
    frames = []
    while frame is not None:
        frames.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    frames.reverse()
    first = next((i for i, (_, _, name) in enumerate(frames) if name == "forward"), None)
    if first is None:
        return None
    keep = [f'  File "{file}", line {line}, in {name}' for file, line, name in frames[first:]
            if not file.startswith(_TORCH_DIR)]
    return "\n".join(keep) or None


def trace(model: nn.Module) -> fx.GraphModule:
    """``model`` symbolically traced (as ``torch.fx.symbolic_trace``, with stack traces recorded).

    Raises whatever torch.fx raises for a forward it cannot trace (data-dependent control flow,
    unsupported Python); callers turn that into their own message.
    """
    tracer = _Tracer()
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


_INDEX_MAX = 1 << 22   # entries of an integer buffer kept as an index value

_FORMATS = ((torch.contiguous_format, None), (torch.channels_last, 4), (torch.channels_last_3d, 5))


def _tensor_meta(t: torch.Tensor) -> TensorMetadata:
    """``ShapeProp``'s record of a tensor, its memory format read with the tensor's own
    ``is_contiguous`` (torch's helper for it imports sympy to allow symbolic shapes)."""
    strided = t.layout == torch.strided
    fmt = next((f for f, dims in _FORMATS if strided and dims in (None, t.dim()) and t.is_contiguous(memory_format=f)), None)
    return TensorMetadata(t.shape, t.dtype, t.requires_grad, t.stride() if strided else (), fmt, False, {})


class _Shapes(fx.Interpreter):
    """What ``ShapeProp`` records (``meta["tensor_meta"]`` and ``meta["type"]`` of every node) on
    real tensors only: ``ShapeProp.run_node`` imports ``symbolic_shapes`` (sympy) for fake-tensor
    support archscan does not use."""

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        tensors = []

        def meta_of(obj):
            if isinstance(obj, torch.Tensor):
                tensors.append(obj)
                return _tensor_meta(obj)
            return obj

        meta = map_aggregate(result, meta_of)
        if tensors:
            n.meta["tensor_meta"] = meta
        elif _is_shape_value(result):
            n.meta["value"] = result     # shape arithmetic's number, for the families that index with it
        if n.op == "get_attr" and isinstance(result, torch.Tensor) and not result.is_floating_point() \
                and result.numel() <= _INDEX_MAX:
            n.meta["value"] = result.detach().clone()   # an index buffer (LeViT's attention-bias indices)
        n.meta["type"] = type(result)
        return result


def _is_shape_value(v) -> bool:
    return isinstance(v, (int, bool)) or (isinstance(v, (tuple, list, torch.Size)) and all(isinstance(i, int) for i in v))


def propagate(gm: fx.GraphModule, probe: torch.Tensor) -> fx.GraphModule:
    """Run ``gm`` on ``probe`` so every node's ``meta["tensor_meta"]`` holds its shape (and dtype)."""
    _Shapes(gm).run(probe)
    return gm


def traced(model: nn.Module, probe: torch.Tensor | None = None) -> fx.GraphModule:
    """:func:`trace`, then :func:`propagate` on ``probe`` when one is given."""
    gm = trace(model)
    return gm if probe is None else propagate(gm, probe)
