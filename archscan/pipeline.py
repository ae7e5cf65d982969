"""The scan pipeline: load -> trace -> graph -> systems and ranks -> propagation -> scores -> report.

Never prints, never exits: returns a ScanReport or raises ArchscanError."""
from __future__ import annotations

import os
import time

from archscan import config
from archscan.analysis.propagate import KNOWN, UNKNOWN, Val, propagate
from archscan.analysis.scores import copa_index, predicted_quality, ra_index, verdict
from archscan.analysis.systems import build_system, pullback_rows
from archscan.errors import InputError, UnsupportedLayerError
from archscan.model.graph import build_graph, parametric_order
from archscan.model.load import load_model, load_weights
from archscan.model.trace import trace_model
from archscan.report.layers import coverage, findings, layer_record
from archscan.report.records import ScanReport, now, relpath, tool_info


def scan(spec: str, options: config.ScanOptions) -> ScanReport:
    """Trace the model, build and rank every layer's system, propagate, score."""
    t0 = time.perf_counter()
    _validate(spec, options)
    loaded = load_model(spec, options.model_args, options.num_classes)
    if options.weights and loaded.module is not None:
        load_weights(loaded.module, options.weights)
    traced = trace_model(loaded, options.input_shape)
    g = build_graph(traced.nodes)
    _strict_check(traced.nodes)
    t1 = time.perf_counter()
    systems = {n.name: build_system(g, n, options.draws, options.seed, options.relu_active)
               for n in parametric_order(g)}
    t2 = time.perf_counter()
    state = propagate(g, systems, bn_train=options.bn_mode == "train")
    captured = _capture(loaded, options)
    report = _assemble(spec, options, traced, g, systems, state, captured, loaded)
    report.timing.update({"trace_s": round(t1 - t0, 3), "ranks_s": round(t2 - t1, 3),
                          "total_s": round(time.perf_counter() - t0, 3)})
    return report


def _validate(spec: str, options: config.ScanOptions) -> None:
    if options.input_shape is None and not spec.endswith(".pt2"):
        raise InputError("--input-shape is required (C,H,W), e.g. --input-shape 3,32,32")
    if not 0.0 < options.relu_active <= 1.0:
        raise InputError(f"--relu-active {options.relu_active}: must be in (0, 1]")
    if options.batch_size < 1:
        raise InputError(f"--batch-size {options.batch_size}: must be >= 1")


def _strict_check(nodes) -> None:
    if os.environ.get("ARCHSCAN_STRICT") == "1":
        bad = [n for n in nodes if n.outcome == "unsupported"]
        if bad:
            raise UnsupportedLayerError(f"unsupported op {bad[0].op_type} at {bad[0].module_path or bad[0].name}")


def _image(g, state):
    inputs = [n for n in g.nodes if g.nodes[n]["layer"].kind == "input"]
    name = inputs[0]
    return name, g.nodes[name]["layer"], state.val.get(name, Val())


def _capture(loaded, options):
    """With given weights: the layers' own values on a probe image, for conditioning."""
    if not options.weights or loaded.module is None:
        return None
    from archscan.analysis.prior import prior_images
    from archscan.model.capture import capture
    probe = prior_images(tuple(options.input_shape), 1, options.seed)[0].reshape(options.input_shape)
    return capture(loaded.module, probe)


def _local(loaded, options, shape, chain_quality) -> dict | None:
    """The Jacobian identifiability step: always with --local on; in auto mode when the chain
    analysis does not already find the image determined (and within the time budget)."""
    if options.local == "off" or loaded is None or loaded.module is None:
        return None
    if options.local == "auto" and chain_quality["leakage_score"] >= config.VERDICT_LEAKS:
        return None
    from archscan.analysis.local import local_identifiability
    from archscan.analysis.prior import prior_images
    from archscan.analysis.scores import local_quality
    image = prior_images(shape, 1, options.seed)[0].reshape(shape)
    budget = float("inf") if options.local == "on" else options.local_budget
    res = local_identifiability(loaded.module, image, budget, options.seed, train=options.bn_mode == "train",
                                tau=config.LOCAL_TAU)
    out = {"rank": res.rank, "unknowns": res.unknowns, "deficiency": res.unknowns - res.rank if not res.skipped else None,
           "gap": res.gap, "sigma_min_ratio": res.sigma_min_ratio, "tau": config.LOCAL_TAU,
           "seconds": round(res.seconds, 2), "skipped": res.skipped, "method": "numerical rank of S J, J = d grads / d image"}
    if not res.skipped:
        out["quality"] = local_quality(res, shape, options.seed)
        out["leakage_score"] = out["quality"]["leakage_score"]
    return out


def _assemble(spec, options, traced, g, systems, state, captured=None, loaded=None) -> ScanReport:
    from archscan.analysis.conditioning import layer_conditioning
    order = list(systems.values())
    pull = {name: pullback_rows(s, systems) for name, s in systems.items()}
    layers = [layer_record(s, state, pull[s.node.name], layer_conditioning(s, captured)) for s in order]
    name, node, img = _image(g, state)
    via = systems.get(state.via.get(name))
    rows = state.layer_rank.get(via.node.name, (0, "-"))[1] if via else "-"
    shape = node.out_shape[1:] if node.out_shape else options.input_shape
    quality = predicted_quality(img, via, rows, tuple(shape), options.seed)
    local = _local(loaded, options, tuple(shape), quality)
    if local and local.get("quality") and local["quality"]["leakage_score"] > quality["leakage_score"]:
        quality = {**local["quality"], "chain_leakage_score": quality["leakage_score"]}
    status = "determined" if img.level == KNOWN else ("blocked" if img.level == UNKNOWN else "partial")
    image = {"status": status, "unknowns": node.out_size, "deficiency": node.out_size if img.level == UNKNOWN else img.d,
             "via": via.node.module_path or via.node.name if via else None, "relu_masked": img.masked}
    scores = {"copa_index": copa_index([l["deficiency"] for l in layers]),
              "ra_index": ra_index([(s.unknowns, s.ranks.rows_gradient, s.ranks.rows_forward) for s in order]),
              **quality, "verdict": verdict(quality["leakage_score"]),
              "local": {k: v for k, v in local.items() if k != "quality"} if local else None}
    model = {"spec": spec, "input_shape": list(shape), "class": traced.model_class,
             "trace_method": traced.method, "parametric_layers": len(order)}
    found = findings(g, systems, state, layers, image, scores, options.batch_size)
    return ScanReport(model=model, threat_model=options.threat_model(), layers=layers,
                      nodes=_node_list(g), image=image, scores=scores, coverage=coverage(g),
                      findings=found, timing={}, tool=tool_info(), created=now())


def _node_list(g) -> list:
    out = []
    for n in g.nodes:
        layer = g.nodes[n]["layer"]
        out.append({"name": layer.name, "kind": layer.kind, "op": layer.op_type,
                    "module_path": layer.module_path, "outcome": layer.outcome,
                    "reason": layer.reason, "source": relpath(layer.source)})
    return out
