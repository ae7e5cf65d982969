"""The gate: pure functions of a report (and a baseline report) -> GateResult.

A policy has up to three parts, each optional: ``fail_under`` (a minimum *resistance score*,
1 - leakage score, so that higher is safer as in every ``--fail-under``), ``fail_on`` (the verdict
that fails: ``partial`` fails PARTIAL and LEAKS, ``leaks`` fails LEAKS) and ``baseline`` (a stored
report: then only regressions fail).  Every check names the layers responsible: the layers whose
change would pass it when ``archscan suggest`` measured that (the report's ``suggestions``), else
without a baseline the layers through which the attack reaches the image, with one the layers
that got worse.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from archscan.errors import InputError
from archscan.report.jsonable import MissingField
from archscan.report.records import Check, GatePolicy, GateResult, LayerRecord, ScanReport
from archscan.terms import Determination, Verdict, ViewStatus

__all__ = ["Check", "GateResult", "Policy", "baseline_report", "evaluate", "exposed_layers", "fixing_layers", "resistance", "responsible"]

VERDICT_RANK = {v.value: v.rank for v in Verdict}
# --fail-on partial fails everything not shown safe: UNVERIFIED, PARTIAL and LEAKS
FAIL_ON = {"partial": Verdict.UNVERIFIED, "leaks": Verdict.LEAKS}
STATUS_RANK = {Determination.BLOCKED: 0, Determination.PARTIAL: 1, Determination.DETERMINED: 2,
               Determination.LEAK_SOURCE: 2}
SCORE_TOLERANCE = 1e-3     # a leakage score may move this much against the baseline (prior sampling)
EXPOSURE_TOLERANCE = 1e-9  # a layer's determined fraction may not grow at all


@dataclass(frozen=True)
class Policy:
    fail_under: float | None = None   # minimum resistance score (1 - leakage score), in [0, 1]
    fail_on: str | None = None        # "partial" | "leaks"
    baseline: ScanReport | None = field(default=None, compare=False, repr=False)
    baseline_path: str | None = None

    @property
    def active(self) -> bool:
        return self.fail_under is not None or self.fail_on is not None or self.baseline is not None

    def describe(self) -> GatePolicy:
        spec = self.baseline.model.spec if self.baseline is not None and self.baseline.model else None
        return GatePolicy(self.fail_under, self.fail_on, self.baseline_path, spec)


def baseline_report(data: dict, path: str) -> ScanReport:
    """A stored JSON report (``config.pyproject.load_baseline``) as a record; a report of an older
    schema may lack blocks the gate does not read, never those it does."""
    try:
        base = ScanReport.from_dict(data, lenient=True)
    except (MissingField, TypeError, ValueError) as e:
        raise InputError(f"--baseline {path}: not an archscan report this version can read ({e})") from e
    s = base.scores
    if s is None or s.leakage_score is None or s.verdict is None or not _layers_readable(base.layers):
        raise InputError(f"--baseline {path}: the report lacks its scores or its layers' status; "
                         "write a new baseline with --format json")
    return base


def _layers_readable(layers) -> bool:
    return layers is not None and all(l.status is not None and l.attack is not None and l.unknowns is not None
                                      for l in layers)


def resistance(report: ScanReport) -> float:
    """The gate's score: 1 - leakage score (1 = nothing of the image is determined)."""
    return round(1.0 - float(report.scores.leakage_score), 6)


def responsible(report: ScanReport) -> tuple[str, ...]:
    """The layers to change: those whose measured edit passes the gate (``report.suggestions``),
    else every layer the attack reaches."""
    return fixing_layers(report) or exposed_layers(report)


def fixing_layers(report: ScanReport) -> tuple[str, ...]:
    """Layers of the rescanned edits that passed the gate (empty when none did or none were tried)."""
    s = report.suggestions
    if s is None or s.target != "gate":
        return ()
    return tuple(dict.fromkeys(n for o in s.outcomes if o.gate_passed for n in o.edit.layers))


def fix_phrase(report: ScanReport) -> str:
    """'; measured fix: ...' when ``archscan suggest`` found an edit that passes this gate."""
    s = report.suggestions
    if s is None or s.target != "gate" or s.best is None:
        return ""
    return (f"; measured fix: {s.best.edit.change} (rescanned: verdict {s.best.verdict}, "
            f"leakage score {s.best.leakage_score:.3f})")


def exposed_layers(report: ScanReport) -> tuple[str, ...]:
    """Layers whose input the attack determines in part or in full, nearest the image first."""
    return tuple(l.name for l in report.layers if l.attack.rank > 0)


def evaluate(report: ScanReport, policy: Policy) -> GateResult:
    """Every check the policy asks for; with a baseline, failures already in it pass as accepted."""
    checks = threshold_checks(report, policy)
    if policy.baseline is not None:
        check_same_model(report, policy.baseline, policy.baseline_path)
        known = {c.id for c in threshold_checks(policy.baseline, policy) if not c.passed}
        checks = [_accepted(c) if c.id in known and not c.passed else c for c in checks]
        checks += regression_checks(report, policy.baseline)
    return GateResult(policy.describe(), resistance(report), tuple(checks))


def check_same_model(report: ScanReport, baseline: ScanReport, path: str | None) -> None:
    """A baseline is a report of this model: same image shape and at least one layer in common
    (a report of another network would make every comparison meaningless -- and could pass)."""
    base, now = baseline.model, report.model
    where = f"--baseline {path}" if path else "--baseline"
    if base is not None and base.input_shape and tuple(base.input_shape) != tuple(now.input_shape):
        raise InputError(f"{where}: a report at input shape {_shape(base.input_shape)}, this scan is at "
                         f"{_shape(now.input_shape)}; write a new baseline for this shape")
    theirs, ours = {l.name for l in baseline.layers}, {l.name for l in report.layers}
    if theirs and ours and not theirs & ours:
        raise InputError(f"{where}: a report of another model ({base.spec if base else '?'}: no layer in common "
                         f"with {now.spec}); write a new baseline for this model")


def _shape(s) -> str:
    return ",".join(str(v) for v in s)


def threshold_checks(report: ScanReport, policy: Policy) -> list[Check]:
    out = []
    if policy.fail_under is not None:
        out.append(check_fail_under(report, policy.fail_under))
    if policy.fail_on is not None:
        out.append(check_fail_on(report, policy.fail_on))
    return out


def check_fail_under(report: ScanReport, minimum: float) -> Check:
    r, s = resistance(report), report.scores
    unverified = _unverified(report)
    ok = r >= minimum and not (unverified and minimum > 0)
    msg = (f"resistance {r:.3f} (1 - leakage score {s.leakage_score:.3f}) is "
           f"{'at or above' if r >= minimum else 'below'} --fail-under {minimum:g}; {_image_phrase(report)}")
    if unverified and minimum > 0:
        msg += f"; not established: {unverified}"
    msg += "" if ok else fix_phrase(report)
    return Check("fail-under", "AS200", f"fail-under {minimum:g}", ok, msg, () if ok else responsible(report))


def check_fail_on(report: ScanReport, fail_on: str) -> Check:
    verdict = report.scores.verdict
    ok = VERDICT_RANK[verdict] < VERDICT_RANK[FAIL_ON[fail_on]]
    msg = (f"verdict {verdict} (leakage score {report.scores.leakage_score:.3f}) "
           f"{'is below' if ok else 'reaches'} --fail-on {fail_on}; {_image_phrase(report)}")
    msg += "" if ok else fix_phrase(report)
    return Check("fail-on", "AS201", f"fail-on {fail_on}", ok, msg, () if ok else responsible(report))


def _unverified(report: ScanReport) -> str:
    """Why the resistance score is not a verified figure ('' when it is): the optimisation-attack
    view did not run, so only the chain's (optimistic) figure exists.  A report of an older schema
    without the view counts as verified (it had no such view to miss)."""
    s = report.scores
    status = s.optimisation.status if s.optimisation is not None else ViewStatus.RAN
    if s.verdict == Verdict.LEAKS or status in (ViewStatus.RAN, ViewStatus.NOT_NEEDED):
        return ""
    return s.verdict_note or "the optimisation-attack view did not run"


def _image_phrase(report: ScanReport) -> str:
    img = report.image
    via = f" via {img.via}" if img.via else ""
    return f"the image is {img.status}{via} (deficiency {img.deficiency} of {img.unknowns})"


def _accepted(check: Check) -> Check:
    return Check(check.id, check.rule_id, check.title, True,
                 check.message + " - already so in the baseline, not a regression", ())


def regression_checks(report: ScanReport, baseline: ScanReport) -> list[Check]:
    worse = layer_regressions(report, baseline)
    names = tuple(w["name"] for w in worse) or exposed_layers(report)
    return [_score_check(report, baseline, names), _verdict_check(report, baseline, names),
            _layers_check(worse, report, baseline)]


def _score_check(report: ScanReport, baseline: ScanReport, names) -> Check:
    now, before = report.scores.leakage_score, baseline.scores.leakage_score
    ok = now <= before + SCORE_TOLERANCE
    msg = f"leakage score {before:.3f} in the baseline, {now:.3f} now" + ("" if ok else " (regression)")
    return Check("baseline-score", "AS202", "baseline: leakage score", ok, msg, () if ok else names)


def _verdict_check(report: ScanReport, baseline: ScanReport, names) -> Check:
    now, before = report.scores.verdict, baseline.scores.verdict
    ok = VERDICT_RANK[now] <= VERDICT_RANK[before]
    msg = f"verdict {before} in the baseline, {now} now" + ("" if ok else " (regression)")
    return Check("baseline-verdict", "AS202", "baseline: verdict", ok, msg, () if ok else names)


def _layers_check(worse: list[dict], report: ScanReport, baseline: ScanReport) -> Check:
    new = sorted({l.name for l in report.layers} - {l.name for l in baseline.layers})
    if not worse:
        msg = "no layer's input is more determined than in the baseline"
    else:
        msg = "more determined than in the baseline: " + "; ".join(w["change"] for w in worse)
    if new:
        msg += f" (not in the baseline, not compared: {', '.join(new)})"
    return Check("baseline-layers", "AS202", "baseline: layers", not worse, msg, tuple(w["name"] for w in worse))


def layer_regressions(report: ScanReport, baseline: ScanReport) -> list[dict]:
    """Layers (matched by name) whose status rose or whose determined fraction grew."""
    before = {l.name: l for l in baseline.layers}
    out = []
    for layer in report.layers:
        old = before.get(layer.name)
        if old is not None and _worse(layer, old):
            out.append({"name": layer.name, "change": f"{layer.name}: {_state(old)} -> {_state(layer)}"})
    return out


def _worse(layer: LayerRecord, old: LayerRecord) -> bool:
    if STATUS_RANK[layer.status] > STATUS_RANK[old.status]:
        return True
    return layer.exposure > old.exposure + EXPOSURE_TOLERANCE


def _state(layer: LayerRecord) -> str:
    return f"{layer.status} (rank {layer.attack.rank} of {layer.unknowns})"
