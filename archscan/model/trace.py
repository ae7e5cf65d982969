"""torch.fx first (stack traces recorded, shapes propagated on a probe); torch.export as the fallback and for
.pt2 programs.  Output: LayerNode records -- the last step that touches torch modules."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import re
from dataclasses import dataclass

import torch
from torch import fx, nn

from archscan.errors import InputError, TraceError
from archscan.layers import REGISTRY
from archscan.layers.base import traced_shape
from archscan.layers.flow import CONSTANT, IGNORE, INPUT, OUTPUT, UNSUPPORTED
from archscan.model.fxgraph import traced   # the one fx trace, shared with the attacks
from archscan.model.graph import LayerNode
from archscan.model.load import LoadedModel, creation_site, user_frame

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


@dataclass
class TraceResult:
    nodes: list
    method: str            # "fx" | "export"
    model_class: str


def source_of(stack_trace: str | None) -> str | None:
    """The last user frame (not torch, not archscan) of a recorded stack trace, as file:line."""
    if not stack_trace:
        return None
    frames = [m for m in _FRAME.finditer(stack_trace)
              if "site-packages" not in m.group(1) and "/torch/" not in m.group(1)]
    return f"{frames[-1].group(1)}:{frames[-1].group(2)}" if frames else None


def trace_model(loaded: LoadedModel, input_shape) -> TraceResult:
    if loaded.program is not None:
        return TraceResult(_export_nodes(loaded.program), "export", "ExportedProgram")
    model = loaded.module.eval()
    example = torch.randn(1, *input_shape)
    _check_forward(model, example, loaded)
    try:
        nodes = _fx_nodes(model, example)
    except Exception as fx_error:
        try:
            nodes = _exported_nodes(model, example)
        except Exception as ex_error:
            raise TraceError(_trace_message(loaded, fx_error, ex_error)) from ex_error
        return TraceResult(nodes, "export", type(model).__name__)
    return _more_complete(TraceResult(nodes, "fx", type(model).__name__), model, example)


def _more_complete(fx_result: TraceResult, model, example) -> TraceResult:
    """Where the fx trace keeps ops archscan does not know (functions a library marks as fx leaves,
    such as torchvision's shifted-window attention), torch.export traces through them: its program
    is used when it leaves fewer unsupported ops."""
    gaps = sum(n.outcome == "unsupported" for n in fx_result.nodes)
    if not gaps:
        return fx_result
    try:
        nodes = _exported_nodes(model, example)
    except Exception:   # noqa: BLE001 - the fx trace stands
        return fx_result
    return TraceResult(nodes, "export", fx_result.model_class) if sum(n.outcome == "unsupported" for n in nodes) < gaps else fx_result


def _exported_nodes(model, example) -> list:
    """The model's torch.export program (non-strict, its logs silenced) as layer records."""
    with _quiet_torch():
        return _export_nodes(torch.export.export(model, (example,), strict=False))


def _check_forward(model: nn.Module, example, loaded: LoadedModel) -> None:
    entered = []
    hooks = [m.register_forward_pre_hook(lambda mod, _a, name=name: entered.append(name))
             for name, m in model.named_modules() if name and not list(m.children())]
    try:
        with torch.no_grad():
            out = model(example)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:240] if str(e).strip() else type(e).__name__
        raise InputError(f"{loaded.spec}: model does not accept a float image of shape "
                         f"{tuple(example.shape)}: {first} ({_culprit(model, entered, e, loaded)})") from e
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"{loaded.spec}: not an image classifier: expected logits of shape (1, classes), got {got}")


def _culprit(model, entered, error, loaded) -> str:
    """Where a failed forward broke: the user's frame, else the last layer entered."""
    frame = user_frame(error, loaded.source_file)
    if frame or not entered:
        return frame or "in forward"
    site = creation_site(model.get_submodule(entered[-1]))
    return f"at module {entered[-1]}" + (f", {site}" if site else "")


@contextlib.contextmanager
def _quiet_torch():
    """torch.export logs guard failures and graph dumps to stderr; the user gets our one line."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _trace_message(loaded, fx_error, ex_error) -> str:
    where = user_frame(fx_error, loaded.source_file) or user_frame(ex_error, loaded.source_file)
    reason = str(fx_error).strip().splitlines()[0][:200]
    return (f"{loaded.spec}: cannot trace {type(loaded.module).__name__} with torch.fx ({reason}) "
            f"nor torch.export ({type(ex_error).__name__}); data-dependent control flow? {where}").strip()


def _fx_nodes(model: nn.Module, example) -> list:
    gm = traced(model, example)
    modules = dict(model.named_modules())
    return _fold_constants([_fx_node(n, modules, gm) for n in gm.graph.nodes])


def _no_tensor_out(n) -> bool:
    """The op produced no tensor at all (``x.shape[1] // 2``, ``torch._assert(...)``): shape
    propagation recorded no tensor metadata, not even inside a tuple."""
    if "tensor_meta" in n.meta or isinstance(n.meta.get("val"), torch.Tensor):
        return False
    val = n.meta.get("val")
    return not isinstance(val, (list, tuple)) or not any(isinstance(v, torch.Tensor) for v in val)


def _tensor_inputs(node) -> list:
    return [a for a in node.all_input_nodes]


def _fx_node(n, modules, gm) -> LayerNode:
    if n.op == "placeholder":
        return _record(n, "input", INPUT, "input", "", None)
    if n.op == "output":
        return _record(n, "output", OUTPUT, "output", "", None, outcome="ignored", reason="output marker")
    if n.op == "get_attr":
        return _record(n, "constant", CONSTANT, "parameter", n.target, None, outcome="ignored",
                       reason="a learned constant the attacker knows")
    if n.op == "call_module":
        mod = modules[n.target]
        rule = REGISTRY.for_module(mod)
        node = _classify(n, rule, type(mod).__name__, n.target, mod)
        site = creation_site(mod)
        return dataclasses.replace(node, source=site) if site else node
    if n.op == "call_method":
        return _classify(n, REGISTRY.for_method(n.target), f".{n.target}()", _module_path(n), None)
    rule = REGISTRY.for_function(n.target)
    node = _classify(n, rule, getattr(n.target, "__name__", str(n.target)), _module_path(n), None)
    weight = n.args[1] if len(n.args) > 1 and isinstance(n.args[1], fx.Node) and n.args[1].op == "get_attr" else None
    return _named_by_weight(node, weight.target if weight is not None else None)


def _owner(fqn: str) -> str:
    """``attn.out_proj.weight`` -> ``attn.out_proj``; ``attn.in_proj_weight`` -> ``attn.in_proj``."""
    return fqn[:-7] if fqn.endswith((".weight", "_weight")) else fqn


def _named_by_weight(node: LayerNode, fqn: str | None) -> LayerNode:
    """A functional Linear or conv (``F.linear(x, self.attn.in_proj_weight)``) is named after its
    weight's owner and typed as its family's module, in the fx trace and in a .pt2 program alike."""
    if fqn is None or not node.flow.parametric:
        return node
    kind = REGISTRY[node.kind]
    return dataclasses.replace(node, module_path=_owner(fqn), op_type=kind.modules[0].__name__ if kind.modules else node.op_type)


def _module_path(n) -> str:
    stack = n.meta.get("nn_module_stack")
    if stack:
        return list(stack.values())[-1][0] if isinstance(list(stack.values())[-1], tuple) else str(list(stack)[-1])
    return ""


def _classify(n, rule, op_type, path, module) -> LayerNode:
    if (rule is None or rule.family == "select") and _no_tensor_out(n):   # x.shape[1], a shape assert
        return _record(n, "shape_arithmetic", IGNORE, op_type, path, None, outcome="ignored",
                       reason="shape arithmetic or a shape assertion: no tensor reaches the attack")
    if rule is None:
        return _record(n, "unsupported", UNSUPPORTED, op_type, path, None, outcome="unsupported",
                       reason=f"no archscan rule for {op_type}")
    try:
        params = rule.extract(module, n.args, n.kwargs)
    except Exception as e:  # a rule that cannot read its parameters is a gap, not a crash
        if rule.otherwise:
            return _classify(n, dataclasses.replace(REGISTRY[rule.otherwise], otherwise=""), op_type, path, module)
        return _record(n, "unsupported", UNSUPPORTED, op_type, path, None, outcome="unsupported",
                       reason=f"{rule.kind}: {e}")
    params.update(_weight_shapes(n, rule))
    outcome = "ignored" if rule.flow is IGNORE else "handled"
    return _record(n, rule.kind, rule.flow, op_type, path, params, outcome=outcome, reason=rule.why if outcome == "ignored" else "")


def _weight_shapes(n, rule) -> dict:
    """For functional conv/linear calls: channel counts from the weight argument's shape."""
    if not rule.flow.parametric or len(n.args) < 2:
        return {}
    shape = traced_shape(n.args[1])
    return rule.weight_params(shape) if shape is not None and rule.weight_params else {}


def _record(n, kind, flow, op_type, path, params, outcome="handled", reason="") -> LayerNode:
    nodes = _tensor_inputs(n)
    params = dict(params or {})
    data = params.pop("_data_arg", None)   # a family saying which argument is the layer's input
    if data is not None and n.args[data] in nodes:
        nodes = [n.args[data]] + [a for a in nodes if a is not n.args[data]]
    inputs = tuple(a.name for a in nodes)
    in_shapes = tuple(traced_shape(a) for a in nodes)
    return LayerNode(name=n.name, kind=kind, flow=flow, op_type=op_type, module_path=path or "",
                     inputs=inputs, in_shapes=in_shapes, out_shape=traced_shape(n), params=params or {},
                     source=source_of(n.meta.get("stack_trace")), outcome=outcome, reason=reason)


_MODES = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _fold_padding(nodes: list) -> list:
    """torch.export writes ``Conv2d(padding_mode='reflect')`` as ``aten.pad(reflect)`` then a conv
    without padding; the conv's system is built as fx sees it: the padding folded back into the
    conv (its border columns fold onto interior pixels), the pad left unread."""
    by_name = {n.name: n for n in nodes}
    readers: dict = {}
    for n in nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n)
    out = []
    for n in nodes:
        pad = by_name.get(n.inputs[0]) if n.kind == "conv2d" and n.inputs else None
        if pad is not None and pad.kind == "pad" and _foldable(pad, n) and len(readers.get(pad.name, ())) == 1:
            l, r, t, b = pad.params["pad"]
            n = dataclasses.replace(n, inputs=(pad.inputs[0],) + n.inputs[1:], in_shapes=(pad.in_shapes[0],) + n.in_shapes[1:],
                                    params={**n.params, "padding": (t, l), "padding_mode": _MODES[pad.params["mode"]]})
        out.append(n)
    return out


def _foldable(pad, conv) -> bool:
    amounts = pad.params.get("pad")
    return (pad.params.get("mode") in _MODES and amounts is not None and len(amounts) == 4
            and amounts[0] == amounts[1] and amounts[2] == amounts[3] and tuple(conv.params.get("padding", ())) == (0, 0)
            and pad.in_shapes and pad.in_shapes[0] is not None and len(pad.in_shapes[0]) == 4)


def _export_type(n, rule, name: str) -> str:
    """The module class an aten op was the call of (``aten.conv2d.default`` inside a Conv2d is a
    ``Conv2d``), as the fx trace names it; the aten name where the op is not a module's."""
    stack = n.meta.get("nn_module_stack")
    if rule is None or not rule.modules or not stack:
        return name
    kind = list(stack.values())[-1][1]
    cls = getattr(kind, "__name__", None) or str(kind).rsplit(".", 1)[-1]
    return cls if any(cls.endswith(m.__name__) for m in rule.modules) else name


def _export_nodes(program) -> list:
    sig = program.graph_signature
    consts = set(sig.inputs_to_parameters) | set(sig.inputs_to_buffers)
    consts |= set(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    out = []
    for n in program.graph.nodes:
        if n.op == "placeholder" and n.name in consts:
            out.append(_record(n, "constant", CONSTANT, "parameter", "", None, outcome="ignored",
                               reason="a learned constant the attacker knows"))
        elif n.op == "placeholder":
            out.append(_record(n, "input", INPUT, "input", "", None))
        elif n.op == "output":
            out.append(_record(n, "output", OUTPUT, "output", "", None, outcome="ignored", reason="output marker"))
        elif isinstance(n.target, torch._ops.OpOverload):
            name, rule = str(n.target), REGISTRY.for_aten(str(n.target))
            node = _classify(n, rule, _export_type(n, rule, name), _module_path(n), None)
            weight = n.args[1] if len(n.args) > 1 and isinstance(n.args[1], fx.Node) else None
            fqn = sig.inputs_to_parameters.get(weight.name) if weight is not None else None
            out.append(node if fqn is None or node.module_path == _owner(fqn) else _named_by_weight(node, fqn))
        else:   # a Python callable in the program (operator.getitem on a split's pieces)
            out.append(_classify(n, REGISTRY.for_function(n.target), getattr(n.target, "__name__", str(n.target)),
                                 _module_path(n), None))
    image = next((n for n in out if n.kind == "input" and n.out_shape), None)
    batch = image.out_shape[0] if image is not None and image.out_shape[0] > 0 else 1   # the input spec's batch
    return _fold_constants(_fold_padding([dataclasses.replace(n, batch=batch) for n in out] if batch != 1 else out))


_RANDOM = re.compile(r"rand|normal|bernoulli|uniform|multinomial|poisson|exponential|cauchy|geometric")


def _fold_constants(nodes: list) -> list:
    """An op no family knows whose tensor inputs are all learned constants (or that has none:
    ``new_zeros``, a mask filled from shapes) computes a constant the attacker computes too; a
    random draw (noise a defence adds) is not one."""
    constant = set()
    out = []
    for n in nodes:
        if n.flow.seeds_known:
            constant.add(n.name)
        elif (n.inputs or n.outcome == "unsupported") and all(i in constant for i in n.inputs) \
                and not _RANDOM.search(n.op_type) and n.kind not in ("input", "output"):
            constant.add(n.name)   # computed from constants: a handled op keeps its kind, an unknown one is folded
            if n.outcome == "unsupported":
                n = dataclasses.replace(n, kind="constant", flow=CONSTANT, outcome="ignored",
                                        reason="computed from learned constants and shapes alone: known to the attacker")
        out.append(n)
    return out
