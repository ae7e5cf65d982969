"""Per-layer report records, findings and coverage, built from the analysis records."""
from __future__ import annotations

from archscan.analysis.propagate import exposes_gradient
from archscan.layers import REGISTRY
from archscan.model.graph import per_sample
from archscan.report.records import (AttackRows, Bound, ChainScores, Coverage, Finding, ImageRecord, LayerRecord,
                                     OptimisationScores, Pullback, Ranks, ReluRecord, Rows, Scores, relpath)
from archscan.terms import Determination, Verdict, ViewStatus


def _bound(b) -> Bound:
    return Bound(b.lo, b.hi, b.exact, b.method)


def layer_status(system, state) -> tuple[Determination, int, str]:
    rank, rows = state.layer_rank.get(system.node.name, (0, "-"))
    if rank == 0:
        return Determination.BLOCKED, 0, rows
    if system.leak_source and rank == system.unknowns:
        return Determination.LEAK_SOURCE, rank, rows
    return (Determination.DETERMINED if rank == system.unknowns else Determination.PARTIAL), rank, rows


def layer_record(system, state, pull_rows: int, conditioning: dict | None = None) -> LayerRecord:
    r, node = system.ranks, system.node
    status, used, rows = layer_status(system, state)
    params, kernel, stride = geometry_fields(system)
    return LayerRecord(
        name=node.module_path or node.name, node=node.name, type=node.op_type, source=relpath(node.source),
        in_shape=_shape(per_sample(node.in_shapes[0], node.batch)), out_shape=_shape(per_sample(node.out_shape, node.batch)),
        params=params, kernel=kernel, stride=stride, unknowns=r.unknowns,
        rows=Rows(r.rows_forward, r.rows_gradient, r.rows_padding),
        ranks=Ranks(_bound(r.forward), _bound(r.gradient), _bound(r.stack)),
        rank=r.stack.value, rank_exact=r.stack.exact, deficiency=r.deficiency, uncovered_unknowns=r.uncovered,
        pullback=Pullback(pull_rows, system.pullback_linear, min(pull_rows, r.deficiency) if system.pullback_linear else 0),
        relu=_relu(system.relu), max_batch=system.max_batch,
        attack=AttackRows(rows, used, r.unknowns - used if used else r.unknowns),
        status=status, conditioning=conditioning, seconds=round(system.seconds, 4))


def _shape(shape) -> tuple[int, ...] | None:
    return None if shape is None else tuple(shape)


def geometry_fields(system) -> tuple[int, tuple | None, tuple | None]:
    """The layer's size as torchinfo shows it: params (weights + bias), and for a convolution
    its kernel and stride (h, w) (None for a Linear, whose geometry is a 1x1 conv)."""
    g, node = system.geometry, system.node
    conv = REGISTRY[node.kind].family == "conv"
    params = g.F * (g.C // g.groups) * g.kh * g.kw + (g.F if node.params.get("bias") else 0)
    return params, (g.kh, g.kw) if conv else None, (g.sh, g.sw) if conv else None


def _relu(stats) -> ReluRecord | None:
    if stats is None:
        return None
    return ReluRecord(stats.active_fraction, stats.samples, stats.expected_rank_hi, stats.expected_rank_lo,
                      stats.p_determined, stats.exact)


def scores_record(decision, chain, opt, copa: int, ra: int) -> Scores:
    """The report's scores: the decision of ``analysis.verdict.combine`` and both views' figures."""
    q = decision.quality
    return Scores(copa, ra, decision.verdict, decision.decided_by, decision.note, q.leakage_score, q.predicted_mse,
                  q.predicted_psnr, q.prior_images, q.method, _chain_scores(chain), _optimisation_scores(opt))


def _chain_scores(chain) -> ChainScores:
    q = chain.quality
    return ChainScores(q.verdict, q.leakage_score, q.predicted_mse, q.predicted_psnr, q.prior_images, q.method,
                       Determination(chain.image_status), chain.via, chain.stopped_at)


def _optimisation_scores(opt) -> OptimisationScores:
    q = opt.quality
    figures = {} if q is None else {"leakage_score": q.leakage_score, "predicted_mse": q.predicted_mse,
                                    "predicted_psnr": q.predicted_psnr, "prior_images": q.prior_images,
                                    "prediction_method": q.method}
    return OptimisationScores(opt.status, opt.reason, opt.verdict, **figures, leakage_interval=opt.leakage_interval,
                              psnr_interval=opt.psnr_interval, directions=opt.directions, details=opt.details)


def image_record(chain, unknowns: int) -> ImageRecord:
    return ImageRecord(Determination(chain.image_status), unknowns, chain.deficiency, chain.via, chain.masked)


def coverage(g) -> Coverage:
    counts = {"handled": 0, "ignored": 0, "unsupported": 0}
    for n in g.nodes:
        counts[g.nodes[n]["layer"].outcome] += 1
    denom = counts["handled"] + counts["unsupported"]
    return Coverage(**counts, fraction=round(counts["handled"] / denom, 4) if denom else 1.0)


def findings(g, systems, state, layers: list[LayerRecord], image: ImageRecord, scores: Scores, batch_size: int = 1,
             inexact: bool = False) -> list[Finding]:
    """``inexact``: the shared update is not one exact gradient (Gaussian noise, FedAvg local steps),
    so a chain-determined image is a warning and the optimisation view's figure decides."""
    out = []
    if batch_size > 1:
        out.extend(_batch_findings(layers, batch_size))
    out.extend(view_findings(scores))
    if image.status == Determination.DETERMINED and not inexact:
        out.append(Finding("AS001", "error", f"the training image is fully determined by the shared "
                           f"gradients (via {image.via}): exact reconstruction is possible",
                           image.via, _source_of(layers, image.via)))
    elif image.status == Determination.DETERMINED:   # the defence's noise decides; the chain's fact still matters
        out.append(Finding("AS001", "warning", f"the training image is fully determined by exact gradients "
                           f"(via {image.via}); the shared update is not one exact gradient (noise or local "
                           f"steps), so the verdict is what survives ({scores.predicted_psnr} dB predicted)",
                           image.via, _source_of(layers, image.via)))
    for rec in layers:
        out.extend(_layer_findings(rec))
    for n in g.nodes:
        layer = g.nodes[n]["layer"]
        if exposes_gradient(g, n):
            out.append(Finding("AS004", "warning", "a learned tensor added here (e.g. a positional embedding) "
                               "exposes the gradient of this activation directly", layer.module_path or layer.name,
                               relpath(layer.source)))
        if layer.outcome == "unsupported":
            out.append(Finding("AS100", "warning", f"unsupported op {layer.op_type} ({layer.reason}); the chain "
                               "passes values through it but gradients only once its output is known (docs/theory.md, "
                               "unknown ops); counted against coverage",
                               layer.module_path or layer.name, relpath(layer.source)))
        elif layer.flow.name == "ambiguous":
            out.append(Finding("AS102", "note", f"{layer.op_type} has two pre-images for negative outputs; "
                               "archscan assumes the attacker resolves them (conservative)",
                               layer.module_path or layer.name, relpath(layer.source)))
    return out


def view_findings(scores: Scores) -> list[Finding]:
    """What the optimisation-attack view found, or why it could not say."""
    opt, chain = scores.optimisation, scores.chain
    if opt.status == ViewStatus.OFF:
        return [Finding("AS030", "note", "the optimisation-attack view was switched off (--local off): this "
                        f"verdict comes from the layer-by-layer chain only, so it is at least {Verdict.UNVERIFIED}; "
                        "optimisation attacks (DLG, Inverting Gradients) may recover more", None, None)]
    if opt.status in (ViewStatus.SKIPPED, ViewStatus.FAILED):
        return [Finding("AS031", "warning", f"the optimisation-attack view could not run ({opt.reason}): "
                        f"the verdict is {scores.verdict}, not a verified result", None, None)]
    if opt.status != ViewStatus.RAN or opt.verdict == Verdict.RESISTANT:
        return []
    level = "error" if opt.verdict == Verdict.LEAKS else "warning"
    d = opt.directions or {}
    dirs = f"{d['estimate']} of {d['of']} image directions above the attack's resolution, " if d else ""
    return [Finding("AS005", level, f"optimisation attacks (Inverting Gradients, DLG) can recover "
                    f"{100 * opt.leakage_score:.0f}% of the image's variance: {dirs}predicted PSNR "
                    f"{opt.predicted_psnr:.1f} dB (closed-form chain: image {chain.image_status})", None, None)]


def _source_of(layers: list[LayerRecord], name):
    return next((l.source for l in layers if l.name == name), None)


def _layer_findings(rec: LayerRecord) -> list[Finding]:
    out, name, src = [], rec.name, rec.source
    if rec.status == Determination.LEAK_SOURCE:
        out.append(Finding("AS002", "warning", f"{rec.type} with bias leaks its input on its own "
                           f"({rec.unknowns} values) through dW/db", name, src))
    elif rec.status == Determination.DETERMINED:
        out.append(Finding("AS003", "warning", f"input of {name} is fully determined by its gradient system "
                           f"(rank {rec.attack.rank} = {rec.unknowns} unknowns, rows {rec.attack.rows})",
                           name, src))
    elif rec.status == Determination.PARTIAL:
        out.append(Finding("AS010", "note", f"input of {name} is partially determined: deficiency "
                           f"{rec.attack.deficiency} of {rec.unknowns}", name, src))
    if not rec.rank_exact:
        st = rec.ranks.stack
        out.append(Finding("AS101", "note", f"rank of {name} bounded in [{st.lo}, {st.hi}], not exact; "
                           "the upper bound is used (attacker-favourable)", name, src))
    return out


def _batch_findings(layers, batch_size: int) -> list:
    """Scores are computed at batch 1 (the attacker-favourable case); say which layers a batch of
    ``batch_size`` would push past what their gradient rows can separate."""
    out = []
    for rec in layers:
        if rec.status in (Determination.DETERMINED, Determination.LEAK_SOURCE) and batch_size > rec.max_batch:
            out.append(Finding("AS020", "note", f"at batch {batch_size} the gradient rows of {rec.name} cannot "
                               f"separate the samples (largest batch by count: {rec.max_batch}); scores assume "
                               "batch 1, the attacker-favourable case", rec.name, rec.source))
    return out

