"""pytest plugin (entry point ``pytest11``; loaded wherever archscan is installed).

Fixtures ``archscan_scan`` (scan -> report dict) and ``assert_leakage``; the function
``assert_leakage`` is importable from here too::

    def test_model_does_not_leak(assert_leakage):
        assert_leakage("models/net.py:build", (3, 32, 32), min_score=0.5, fail_on="leaks")

``model`` is a spec string, an ``nn.Module`` or a factory; the thresholds are the gate's
(``min_score`` = ``--fail-under``, a minimum resistance score 1 - leakage score; ``fail_on`` =
``--fail-on``; ``baseline`` = ``--baseline``).  With neither ``min_score`` nor ``fail_on`` the model
must not LEAK.  A failure's message is the per-layer table, the verdict and the failed checks.
A relative file spec (``models/net.py:build``, ``model.pt2``) is relative to pytest's rootdir (where
``pytest.ini``/``pyproject.toml`` is), so the test passes whether pytest runs from the project or
from ``tests/``; one that is only found from the working directory is read from there.
Nothing heavy (torch) is imported until a fixture is used.
"""
from __future__ import annotations

import itertools
import sys
import types
from pathlib import Path

import pytest

_LIVE = "archscan_pytest_models"   # a module holding live models so the loader can find them
_counter = itertools.count()
_ROOT: list[Path] = []   # pytest's rootdir, once pytest has configured


def pytest_configure(config) -> None:
    _ROOT[:] = [Path(config.rootpath)]


def _from_root(spec: str) -> str:
    """A relative file spec re-anchored at the rootdir (left alone when it is not a file there)."""
    where, sep, name = spec.rpartition(":") if not spec.endswith(".pt2") else (spec, "", "")
    is_file = where.endswith((".py", ".pt2")) or "/" in where or "\\" in where
    if not _ROOT or not is_file or Path(where).is_absolute():
        return spec
    anchored = _ROOT[0] / where
    if anchored.is_file() or not Path(where).is_file():
        return f"{anchored}{sep}{name}"
    return spec


def _as_spec(model) -> tuple[str, str]:
    """(spec, display name): strings pass through; modules and factories are registered by name."""
    if isinstance(model, str):
        return _from_root(model), model
    holder = sys.modules.setdefault(_LIVE, types.ModuleType(_LIVE))
    holder.__archscan_live__ = True   # objects the caller passed in Python: any factory is theirs to give
    name = f"m{next(_counter)}"
    setattr(holder, name, model)
    shown = getattr(model, "__name__", None) or type(model).__name__   # a class or factory, else an instance
    return f"{_LIVE}:{name}", f"<{shown}>"


def scan_report(model, input_shape, **options) -> dict:
    """Scan ``model`` (spec, nn.Module or factory) at ``input_shape`` (C, H, W); the report as its
    JSON dict (docs/report-schema.md), the form a test asserts on.
    ``options`` are ScanOptions fields (num_classes, batch_size, labels, bn_mode, seed, ...)."""
    return _scan(model, input_shape, **options).to_dict()


def _scan(model, input_shape, **options):
    from dataclasses import replace

    from archscan.api import scan
    from archscan.config import ScanOptions
    from archscan.config.values import parse_shape
    shape = parse_shape(input_shape, "input_shape")
    spec, shown = _as_spec(model)
    try:
        report = scan(spec, ScanOptions(input_shape=shape, **options))
    finally:
        if spec.startswith(_LIVE + ":"):
            delattr(sys.modules[_LIVE], spec.split(":", 1)[1])
    return report.with_(model=replace(report.model, spec=shown))


def assert_leakage(model, input_shape, min_score: float | None = None, fail_on: str | None = None,
                   baseline: dict | str | None = None, **options) -> dict:
    """Scan and apply the gate; AssertionError with the per-layer table when a check fails.
    ``baseline``: a stored JSON report, as a path or its dict.
    Returns the report dict (with its ``gate``) when every check passes."""
    from archscan.config.pyproject import load_baseline
    from archscan.report.gate import Policy, baseline_report, evaluate
    if min_score is None and fail_on is None and baseline is None:
        fail_on = "leaks"
    where = baseline if isinstance(baseline, str) else "(dict)"
    if baseline is not None:
        baseline = baseline_report(load_baseline(baseline) if isinstance(baseline, str) else baseline, where)
    report = _scan(model, input_shape, **options)
    report = report.with_(gate=evaluate(report, Policy(fail_under=min_score, fail_on=fail_on, baseline=baseline)))
    if not report.gate.passed:
        raise AssertionError(failure_message(report))
    return report.to_dict()


def failure_message(report) -> str:
    from archscan.formatters import text
    return "\n".join([f"archscan: {report.model.spec} fails the leakage gate", ""] + text.table(report)
                     + [text.summary(report)[2]] + text.gate(report))


@pytest.fixture
def archscan_scan():
    """``archscan_scan(model, input_shape, **options) -> report dict``."""
    return scan_report


@pytest.fixture(name="assert_leakage")
def _assert_leakage_fixture():
    """``assert_leakage(model, input_shape, min_score=None, fail_on=None, baseline=None, **options)``."""
    return assert_leakage
