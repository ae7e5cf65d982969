"""The scan pipeline: load -> trace -> graph -> systems and ranks -> propagation -> the two views
(closed-form chain, optimisation attacks) -> verdict -> report.

Never prints, never exits: returns a ScanReport or raises ArchscanError.
"""
from __future__ import annotations

import time

from archscan import config
from archscan.analysis.local import global_pool_of, optimisation_view
from archscan.analysis.memory import check_scan_fits
from archscan.analysis.propagate import propagate
from archscan.analysis.scores import chain_view, copa_index, ra_index
from archscan.analysis.systems import build_system, forward_macs, pullback_rows
from archscan.analysis.verdict import combine
from archscan.errors import InputError, UnsupportedLayerError
from archscan.model.graph import build_graph, parametric_order
from archscan.config.values import check_batch_size, check_seed
from archscan.model.footprint import activation_values
from archscan.model.load import check_finite, load_model, load_weights
from archscan.model.trace import trace_model
from archscan.report.layers import coverage, findings, image_record, layer_record, scores_record
from archscan.report.records import ModelInfo, NodeRecord, ScanReport, ThreatModel, now, relpath, tool_info


class _Stages:
    """Wall time of each named stage, for the report's timing block."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.seconds: dict = {}

    def mark(self, stage: str) -> None:
        t = time.perf_counter()
        self.seconds[f"{stage}_s"] = round(t - self.last, 3)
        self.last = t

    def total(self) -> dict:
        return {**self.seconds, "total_s": round(time.perf_counter() - self.start, 3)}


def scan(spec: str, options: config.ScanOptions) -> ScanReport:
    """Trace the model, rank every layer's system, propagate, take both views, score."""
    clock = _Stages()                     # the trace stage's time includes building the model
    return scan_loaded(load(spec, options), options, clock)


def load(spec: str, options: config.ScanOptions):
    """The model of ``spec`` built (seeded from ``options.seed``), its weights loaded, checked."""
    _validate(spec, options)
    loaded = load_model(spec, options.model_args, options.num_classes, options.seed)
    if options.weights and loaded.module is not None:
        load_weights(loaded.module, options.weights)
    _check_loaded(spec, loaded, options)
    return loaded


def scan_loaded(loaded, options: config.ScanOptions, clock: _Stages | None = None) -> ScanReport:
    """``scan`` of a model already built: what ``archscan suggest`` rescans after editing it."""
    clock = clock or _Stages()
    spec = loaded.spec
    traced = trace_model(loaded, options.input_shape)
    g = build_graph(traced.nodes)
    _check_program_shape(spec, g, options)
    _strict_check(traced.nodes, options.strict)
    clock.mark("trace")
    systems = {n.name: build_system(g, n, options.draws, options.seed, options.relu_active)
               for n in parametric_order(g)}
    clock.mark("ranks")
    state = propagate(g, systems, bn_train=options.bn_mode == "train")
    shape = _image_shape(g, options)
    chain = chain_view(g, systems, state, shape, options.seed)
    clock.mark("chain")
    activations = sum(g.nodes[n]["layer"].out_size for n in g.nodes)
    optimisation = optimisation_view(loaded.module, options, shape, chain, activations, forward_macs(systems),
                                     global_pool_of(g))
    clock.mark("optimisation")
    report = _assemble(spec, options, traced, g, systems, state, chain, optimisation, _capture(loaded, options))
    return report.with_(timing=clock.total())


def _validate(spec: str, options: config.ScanOptions) -> None:
    if options.input_shape is None and not spec.endswith(".pt2"):
        raise InputError("--input-shape is required (C,H,W), e.g. --input-shape 3,32,32")
    if not 0.0 < options.relu_active <= 1.0:
        raise InputError(f"--relu-active {options.relu_active}: must be in (0, 1]")
    check_batch_size(options.batch_size)
    check_seed(options.seed)
    if options.num_classes is not None and options.num_classes < 1:
        raise InputError(f"--num-classes {options.num_classes}: must be >= 1")
    if options.local_budget is not None and options.local_budget <= 0:
        raise InputError(f"--local-budget {options.local_budget}: must be > 0 seconds")


def _check_loaded(spec: str, loaded, options) -> None:
    """Before the first real forward pass: weights that are numbers, a size that fits."""
    check_finite(loaded, spec)
    if loaded.module is not None and options.input_shape is not None:
        check_scan_fits(activation_values(loaded.module, options.input_shape),
                        sum(p.numel() for p in loaded.module.parameters()),
                        f"{spec} at --input-shape {','.join(map(str, options.input_shape))}")


def _check_program_shape(spec: str, g, options) -> None:
    """A .pt2 program fixes its input shape: a different --input-shape is an error, not ignored."""
    if not spec.endswith(".pt2") or options.input_shape is None:
        return
    shape = _image_shape(g, options)
    if tuple(shape) != tuple(options.input_shape):
        raise InputError(f"{spec}: the program takes images of shape {','.join(map(str, shape))}, "
                         f"not --input-shape {','.join(map(str, options.input_shape))}")


def _strict_check(nodes, strict: bool) -> None:
    if strict:
        bad = [n for n in nodes if n.outcome == "unsupported"]
        if bad:
            raise UnsupportedLayerError(f"unsupported op {bad[0].op_type} at {bad[0].module_path or bad[0].name}")


def _image_shape(g, options) -> tuple:
    node = next(g.nodes[n]["layer"] for n in g.nodes if g.nodes[n]["layer"].kind == "input")
    return tuple(node.out_shape[1:]) if node.out_shape else tuple(options.input_shape)


def _capture(loaded, options):
    """With given weights: the layers' own values on a probe image, for conditioning."""
    if not options.weights or loaded.module is None:
        return None
    from archscan.analysis.prior import prior_images
    from archscan.model.capture import capture
    probe = prior_images(tuple(options.input_shape), 1, options.seed)[0].reshape(options.input_shape)
    return capture(loaded.module, probe)


def _assemble(spec, options, traced, g, systems, state, chain, optimisation, captured) -> ScanReport:
    from archscan.analysis.conditioning import layer_conditioning
    order = list(systems.values())
    layers = [layer_record(s, state, pullback_rows(s, systems), layer_conditioning(s, captured)) for s in order]
    unknowns = next(g.nodes[n]["layer"].out_size for n in g.nodes if g.nodes[n]["layer"].kind == "input")
    image = image_record(chain, unknowns)
    decision = combine(chain, optimisation, _unsupported(g), options.defences, options.fedavg)
    scores = scores_record(decision, chain, optimisation, copa_index([l.deficiency for l in layers]),
                           ra_index([(s.unknowns, s.ranks.rows_gradient, s.ranks.rows_forward) for s in order]))
    model = ModelInfo(spec, tuple(_image_shape(g, options)), traced.model_class, traced.method, len(order))
    found = findings(g, systems, state, layers, image, scores, options.batch_size, not options.chain_exact)
    return ScanReport(model=model, threat_model=_threat_model(options), layers=tuple(layers),
                      nodes=_node_list(g), image=image, scores=scores, coverage=coverage(g),
                      findings=tuple(found), tool=tool_info(), created=now())


def _threat_model(options) -> ThreatModel:
    t = options.threat_model()
    return ThreatModel(**{**t, "defences": tuple(t["defences"])})


def _unsupported(g) -> tuple[str, ...]:
    return tuple(g.nodes[n]["layer"].op_type for n in g.nodes if g.nodes[n]["layer"].outcome == "unsupported")


def _node_list(g) -> tuple[NodeRecord, ...]:
    layers = (g.nodes[n]["layer"] for n in g.nodes)
    return tuple(NodeRecord(l.name, l.kind, l.op_type, l.module_path, l.outcome, l.reason, relpath(l.source))
                 for l in layers)
