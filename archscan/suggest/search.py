"""Rescan the model under every candidate edit, smallest first, and name the smallest that works.

"Works" is the gate passing when a gate policy is given, else a better verdict than the model's.
Every figure in the result is a real rescan's (same options, same seed); nothing is extrapolated.
"""
from __future__ import annotations

import time

from archscan.errors import ArchscanError
from archscan.model.load import LoadedModel
from archscan.pipeline import scan_loaded
from archscan.report.gate import VERDICT_RANK, evaluate
from archscan.report.records import ScanReport
from archscan.suggest.adapt import fit_downstream
from archscan.suggest.candidates import candidates
from archscan.report.suggestions import Edit, Outcome, Suggestions
from archscan.suggest.edits import apply
from archscan.terms import Verdict


def needed(report: ScanReport, policy=None) -> bool:
    """Something to fix: the gate fails (with a policy) or the verdict is not RESISTANT."""
    if policy is not None and policy.active:
        return not evaluate(report, policy).passed
    return report.scores.verdict != Verdict.RESISTANT


def suggest(loaded: LoadedModel, report: ScanReport, options, policy=None, first_only: bool = False,
            on_candidate=None) -> Suggestions:
    """Rescan ``loaded`` under each candidate edit of ``report``'s model; ``first_only`` stops at
    the first (smallest) edit that works.  ``on_candidate(i, n, edit)`` is called before each rescan."""
    start = time.perf_counter()
    gate = policy if policy is not None and policy.active else None
    base = _baseline(report, gate)
    edits = candidates(report, loaded.module, options) if needed(report, gate) else []
    outcomes = []
    for i, edit in enumerate(edits):
        if on_candidate is not None:
            on_candidate(i, len(edits), edit)
        outcomes.append(_try(edit, loaded, options, gate, base))
        if first_only and outcomes[-1].works:
            break
    return Suggestions("gate" if gate else "verdict", base, tuple(outcomes), len(outcomes) == len(edits),
                       time.perf_counter() - start)


def _baseline(report: ScanReport, gate) -> dict:
    s = report.scores
    return {"verdict": s.verdict, "leakage_score": s.leakage_score, "predicted_psnr": s.predicted_psnr,
            "gate_passed": evaluate(report, gate).passed if gate else None}


def _try(edit: Edit, loaded: LoadedModel, options, gate, base: dict) -> Outcome:
    try:
        model, opts = apply(edit, loaded.module, options)
        if edit.architecture:
            fit_downstream(model, opts.input_shape, opts.seed)
        edited = LoadedModel(model, loaded.program, loaded.spec, loaded.source_file)
        rep = scan_loaded(edited, opts)
        passed = evaluate(rep, gate).passed if gate else None
    except (ArchscanError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as e:
        return Outcome(edit, error=_first_line(e))
    s = rep.scores
    works = passed if gate else VERDICT_RANK[s.verdict] < VERDICT_RANK[base["verdict"]]
    return Outcome(edit, verdict=s.verdict, decided_by=s.decided_by, leakage_score=s.leakage_score,
                   predicted_psnr=s.predicted_psnr, gate_passed=passed, works=bool(works))


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]
