"""Scans shared by test_gate/test_formats/test_config/test_compare: every (spec, options) is scanned
once per session (``cached_scan`` has ``archscan.api.scan``'s signature, so the CLI can be pointed at
it), plus the helpers the golden files need (deterministic reports, regeneration switch)."""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path

from archscan import api
from archscan.config import ScanOptions
from archscan.report.records import ScanReport

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"
ZOO = "examples/paper_zoo.py"   # relative: tests run with the repository root as working directory
FIXED_TIME = "2026-01-01T00:00:00+00:00"
REGEN = os.environ.get("ARCHSCAN_REGEN_GOLDEN") == "1"

_real_scan = api.scan
_cache: dict = {}


def cached_scan(spec, options):
    key = (spec, repr(options), None if os.path.isabs(spec) else os.getcwd())
    if key not in _cache:
        before = os.environ.get("ARCHSCAN_FIXED_TIME")
        os.environ["ARCHSCAN_FIXED_TIME"] = FIXED_TIME
        try:
            _cache[key] = _real_scan(spec, options)
        finally:
            if before is None:
                os.environ.pop("ARCHSCAN_FIXED_TIME", None)
            else:
                os.environ["ARCHSCAN_FIXED_TIME"] = before
    return copy.deepcopy(_cache[key])


def zoo_report(name: str, **options) -> ScanReport:
    """The report of examples/paper_zoo.py:NAME at 3x32x32 (a fresh copy each call)."""
    return cached_scan(f"{ZOO}:{name}", ScanOptions(input_shape=(3, 32, 32), **options))


def variant(report: ScanReport, edit) -> ScanReport:
    """``report`` with ``edit(d)`` applied to its JSON dict ``d``, read back: a hand-made report
    (another verdict, a weaker layer) built the way a stored report is read."""
    d = report.to_dict()
    edit(d)
    return ScanReport.from_dict(d).with_(gate=report.gate, suggestions=report.suggestions)


def _round(value):
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def normalise(report: ScanReport) -> ScanReport:
    """What may differ between machines and runs: versions, timings, time stamp, float noise."""
    def edit(out):
        out.update(_round(copy.deepcopy(out)))
        out["tool"] = {k: ("X" if k != "name" else v) for k, v in out.get("tool", {}).items()}
        out["created"] = FIXED_TIME
        out["timing"] = {}
        for layer in out["layers"]:
            layer["seconds"] = 0.0
    return variant(report, edit)


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; ARCHSCAN_REGEN_GOLDEN=1 rewrites the file instead."""
    path = GOLDEN / name
    if REGEN or not path.exists():
        path.write_text(text, encoding="utf-8")
        if not REGEN:
            raise AssertionError(f"golden file {path} was missing and has been written; run again")
        return
    expected = path.read_text(encoding="utf-8")
    if text == expected:
        return
    assert same_up_to_rounding(text, expected), \
        f"{name} differs from the golden file; if intended: ARCHSCAN_REGEN_GOLDEN=1 pytest"


# A number standing on its own (not the digits inside a hash or a name)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")
GOLDEN_RTOL = 1e-3   # the optimisation view's float32 products round differently on other CPUs


def same_up_to_rounding(text: str, expected: str) -> bool:
    """Everything but the numbers identical, and every number within GOLDEN_RTOL (relative) of the
    golden one: the same run on another CPU (another SIMD path in torch's kernels) moves the
    optimisation view's figures in the fourth digit; a real change moves far more."""
    if _NUMBER.sub("#", text) != _NUMBER.sub("#", expected):
        return False
    got, want = _NUMBER.findall(text), _NUMBER.findall(expected)
    return all(abs(float(a) - float(b)) <= GOLDEN_RTOL * max(abs(float(b)), 1e-3) for a, b in zip(got, want))
