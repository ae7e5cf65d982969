"""The library verbs.  Never print, never exit: return records or raise ArchscanError."""
from __future__ import annotations

from archscan.errors import InputError
from archscan.pipeline import scan
from archscan.report.compare import Comparison, comparison, precheck
from archscan.report.records import ScanReport

__all__ = ["compare", "gate", "scan", "suggest"]


def compare(specs: list, options, on_model=None) -> Comparison:
    """Scan every spec under the same options; one comparison record (``archscan.report.compare``).

    ``on_model(i, spec)`` is called before each scan."""
    specs = list(specs)
    if len(specs) < 2:
        raise InputError("compare: give at least two models")
    precheck(specs)
    reports = []
    for i, spec in enumerate(specs):
        if on_model is not None:
            on_model(i, spec)
        reports.append(scan(spec, options))
    return comparison(reports)


def gate(report: ScanReport, fail_under: float | None = None, fail_on: str | None = None,
         baseline: ScanReport | None = None):
    """Apply a gate policy to a report (``scan(...)``): a ``report.records.GateResult``."""
    from archscan.report.gate import Policy, evaluate
    return evaluate(report, Policy(fail_under=fail_under, fail_on=fail_on, baseline=baseline))


def suggest(spec: str, options, fail_under: float | None = None, fail_on: str | None = None) -> ScanReport:
    """Scan ``spec``, then rescan every candidate change (``archscan.suggest``): the report with
    its ``suggestions`` (aimed at the gate when a policy is given, else at a better verdict) and,
    with a policy, its ``gate``."""
    from archscan.pipeline import load, scan_loaded
    from archscan.report.gate import Policy, evaluate
    from archscan.suggest import suggest as rescan
    policy = Policy(fail_under=fail_under, fail_on=fail_on)
    loaded = load(spec, options)
    report = scan_loaded(loaded, options)
    report = report.with_(suggestions=rescan(loaded, report, options, policy))
    return report.with_(gate=evaluate(report, policy)) if policy.active else report
