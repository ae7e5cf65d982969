"""Which edits to try for a report: the bias of every Linear the report says leaks its input, every
invertible activation type swapped for ReLU, stride / pooling / fewer filters at the conv layers
where the attack reaches the image, and the client's batch size and BatchNorm mode."""
from __future__ import annotations

from torch import nn

from archscan.layers import REGISTRY
from archscan.layers.flow import Invertible
from archscan.config import SUGGEST_BATCH_STEPS as BATCH_STEPS, SUGGEST_CONVS, SUGGEST_COST as COST
from archscan.report.records import ScanReport
from archscan.suggest.edits import Edit


def candidates(report: ScanReport, module: nn.Module | None, options) -> list[Edit]:
    """Every edit worth a rescan, smallest first (ties: report order)."""
    edits = []
    if module is not None:
        total = max(sum(p.numel() for p in module.parameters()), 1)
        node_paths = {n.name: n.module_path for n in report.nodes}
        paths = {l.name: node_paths.get(l.node or l.name) for l in report.layers}
        sources = {l.name: l.source for l in report.layers}
        edits += _biases(report, module, paths, total)
        edits += _activations(report, module)
        edits += _convs(report, module, paths, sources, total)
    edits += _settings(report, options)
    return sorted(edits, key=lambda e: e.cost)


def _biases(report, module, paths, total) -> list[Edit]:
    out = []
    for f in report.findings:
        path = paths.get(f.layer)
        sub = _submodule(module, path)
        if f.rule_id == "AS002" and getattr(sub, "bias", None) is not None:
            out.append(Edit("no-bias", f"{f.layer}: remove the bias ({type(sub).__name__}(..., bias=False))",
                            COST["no-bias"] + sub.bias.numel() / total, path, (f.layer,), f.source))
    return out


def inverted_by_chain(module: nn.Module) -> bool:
    """An activation module whose layer family the chain inverts (scan's own vocabulary: Softplus,
    Sigmoid, Tanh, LeakyReLU, ELU, GELU, SiLU, Hardswish ...; not ReLU, ReLU6, Hardtanh)."""
    kind = REGISTRY.for_module(module)
    return kind is not None and isinstance(kind.flow, Invertible)


def _activations(report, module) -> list[Edit]:
    """One edit per invertible activation type used as a module: all of them become ReLU."""
    kinds: dict = {}
    for path, sub in module.named_modules():
        if path and inverted_by_chain(sub):
            kinds.setdefault(type(sub).__name__, []).append(path)
    out = []
    for name, paths in kinds.items():
        nodes = [n for n in report.nodes if n.module_path in paths]
        n = len(paths)
        out.append(Edit("activation", f"ReLU instead of {name} ({n} layer{'s' * (n > 1)}): the chain cannot invert it",
                        COST["activation"], layers=tuple(x.module_path or x.name for x in nodes),
                        source=nodes[0].source if nodes else None, value=name))
    return out


def _convs(report, module, paths, sources, total) -> list[Edit]:
    out = []
    for name in _culprit_convs(report, module, paths):
        path, conv = paths[name], module.get_submodule(paths[name])
        share = conv.weight.numel() / total
        where = dict(target=path, layers=(name,), source=sources.get(name))
        stride = "x".join(str(2 * s) for s in conv.stride)
        out.append(Edit("stride", f"{name}: stride {stride}", COST["stride"], **where))
        out.append(Edit("pool", f"{name}: a 2x2 max-pool after it", COST["pool"], **where))
        if conv.groups == 1 and conv.out_channels >= 2:
            keep = conv.out_channels // 2
            out.append(Edit("filters", f"{name}: {keep} filter{'s' * (keep > 1)} instead of {conv.out_channels}",
                            COST["filters"] + share / 2, **where))
    return out


def _culprit_convs(report, module, paths) -> list[str]:
    """Conv layers to edit: where the chain determines the image first, then those the attack
    reaches, then the others, nearest the image first; ``config.SUGGEST_CONVS`` of them."""
    convs = [l.name for l in report.layers if isinstance(_submodule(module, paths.get(l.name)), nn.Conv2d)]
    via = [report.image.via] if report.image.via in convs else []
    reached = [n for n in convs if report.layer(n).attack.rank > 0]
    return list(dict.fromkeys(via + reached + convs))[:SUGGEST_CONVS]


def _settings(report, options) -> list[Edit]:
    b = options.batch_size
    out = [Edit("batch-size", f"batch size {b * k} instead of {b}", cost, value=b * k)
           for k, cost in BATCH_STEPS.items()]
    has_bn = any(n.kind == "batchnorm" for n in report.nodes)
    if has_bn and options.bn_mode == "eval":
        out.append(Edit("bn-train", "BatchNorm in train mode (batch statistics)", COST["bn-train"], value="train"))
    return out


def _submodule(module, path):
    if module is None or path is None:
        return None
    try:
        return module.get_submodule(path) if path else module
    except AttributeError:
        return None
