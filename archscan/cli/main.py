"""archscan command line: parse -> api -> formatter -> exit code (0 ok, 1 gate, 2 input/trace error).

Options left off the command line come from ``[tool.archscan]`` in the nearest pyproject.toml
(``archscan.config.pyproject``), then from the defaults below; the gate is ``scan --fail-under/--fail-on/
--baseline`` (``archscan.policy``).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from archscan import __version__
from archscan.cli import boundary
from archscan.cli.boundary import EXIT_GATE, EXIT_INTERRUPTED, EXIT_OK
from archscan.cli.settings import add_defence_option, add_fedavg_options, defences_of, fedavg_of, no_config, settings
from archscan.config.values import spec_file
from archscan.cli.sweep import add_sweep_parser, run_sweep
from archscan.cli.validate import add_validate_parser, run_validate
from archscan.errors import InputError

# the formatter registry's names (formatters.REGISTRY; tests/test_records.py keeps them equal), spelled
# here so that building the parser does not import the renderers
FORMATS = ("text", "json", "sarif", "junit", "markdown", "html", "github", "gitlab")
COMPARE_FORMATS = ("text", "json", "markdown")
THREAT_DEFAULTS = {"input_shape": None, "num_classes": None, "model_args": {}, "batch_size": 1,
                   "labels": "inferred", "bn_mode": "eval", "relu_active": 0.5, "seed": 0,
                   "local": "auto", "local_budget": None, "device": "cpu", "strict": False, "defence": None,
                   "fedavg_steps": None, "fedavg_lr": None}
SCAN_DEFAULTS = {**THREAT_DEFAULTS, "model": None, "weights": None, "fail_under": None, "fail_on": None,
                 "baseline": None, "exit_zero": False, "format": ["text"], "output": None, "quiet": False,
                 "select": None, "ignore": None, "suggest": "off"}


def _model_options(p, weights: bool = True) -> None:
    """Model and threat-model flags; every default is None so that [tool.archscan] can fill it."""
    p.add_argument("--input-shape", help="C,H,W of one image, e.g. 3,32,32")
    p.add_argument("--num-classes", type=int, help="passed to the factory when it takes num_classes")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="extra keyword argument for the factory (repeatable)")
    if weights:
        p.add_argument("--weights", help="state_dict checkpoint (loaded with weights_only=True)")
    p.add_argument("--batch-size", type=int, help="clients' batch size (default 1)")
    p.add_argument("--labels", choices=("known", "inferred"), help="default inferred")
    p.add_argument("--bn-mode", choices=("eval", "train"), help="default eval")
    p.add_argument("--relu-active", type=float, help="active fraction of ReLU outputs (default 0.5)")
    p.add_argument("--seed", type=int, help="default 0")
    add_defence_option(p)
    add_fedavg_options(p)
    p.add_argument("--local", choices=("auto", "on", "off"),
                   help="the optimisation-attack view (what Inverting Gradients / DLG recover, from the spectrum "
                        "of d(gradients)/d(image)). auto (default): whenever the layer chain does not already "
                        "determine the image; on: always; off: skip it (recorded; a chain-RESISTANT model is "
                        "then UNVERIFIED)")
    p.add_argument("--device", help="where the optimisation-attack view runs: cpu (default) or cuda[:N]")
    p.add_argument("--strict", action="store_true", default=None,
                   help="an op no layer family handles is an error (exit 2) instead of a finding")
    p.add_argument("--local-budget", type=float, metavar="SECONDS",
                   help="time budget of the optimisation-attack view (default: what its minimum accuracy needs, "
                        "up to 10 minutes)")


def _common_options(p) -> None:
    p.add_argument("-o", "--output", help="write the report (the format without a path) to this file")
    p.add_argument("-q", "--quiet", action="store_true", default=None,
                   help="text: verdict and gate only; no progress bar")
    p.add_argument("--config", help="read [tool.archscan] from this pyproject.toml (default: discovered)")
    p.add_argument("--no-config", action="store_true", help="ignore [tool.archscan]")
    p.add_argument("--color", "--colour", dest="color", choices=("auto", "always", "never"), default="auto",
                   help="colour in the text report (auto: on a terminal, honouring NO_COLOR and FORCE_COLOR)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _scan_parser(sub, name: str = "scan",
                 help: str = "static leakage analysis of a model (with an optional gate)") -> None:
    p = sub.add_parser(name, help=help)
    p.add_argument("model", nargs="?",
                   help="path/to/file.py:NAME, package.module:NAME, or a torch.export .pt2 file "
                        "(default: model in [tool.archscan])")
    _model_options(p)
    g = p.add_argument_group("gate (exit 1 when a check fails)" if name == "scan" else
                             "gate (what a change must pass; suggest itself exits 0)")
    g.add_argument("--fail-under", type=float, metavar="SCORE",
                   help="fail when the resistance score (1 - leakage score) is below SCORE, in [0, 1]")
    g.add_argument("--fail-on", choices=("partial", "leaks"), help="fail on this verdict or a worse one")
    g.add_argument("--baseline", metavar="REPORT.json", help="fail only on regressions against this stored report")
    g.add_argument("--exit-zero", action="store_true", default=None, help="report only: exit 0 even when the gate fails")
    if name == "scan":
        g.add_argument("--suggest", choices=("off", "on-fail", "on"),
                       help="rescan small changes of the model (bias, activation, stride, pooling, filters) and of the "
                            "client's setting, and report the smallest that passes the gate (without a gate: that "
                            "improves the verdict). on-fail: only when the gate fails; on: whenever the model is not "
                            "RESISTANT; default off (`archscan suggest` tries every change)")
    p.add_argument("--select", metavar="IDS", help="report only these finding ids or prefixes (AS001,AS02)")
    p.add_argument("--ignore", metavar="IDS", help="hide these finding ids or prefixes; a layer's own line can say "
                   "`# archscan: ignore[AS003]` (never changes the verdict or the gate)")
    p.add_argument("--format", action="append", metavar="FORMAT[:PATH]",
                   help=f"one of {', '.join(FORMATS)}, to stdout or to PATH (repeatable; default text)")
    _common_options(p)


def _compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="scan several models under one threat model, side by side")
    p.add_argument("models", nargs="+", metavar="MODEL", help="two or more model specs, as for scan")
    _model_options(p, weights=False)
    p.add_argument("--format", choices=COMPARE_FORMATS, default="text")
    _common_options(p)


def _init_parser(sub) -> None:
    p = sub.add_parser("init", help="write a commented default [tool.archscan] table into pyproject.toml")
    p.add_argument("--model", help="model spec to fill in")
    p.add_argument("--input-shape", help="C,H,W to fill in")
    p.add_argument("--file", default="pyproject.toml", help="the file to append to (created when missing)")
    p.add_argument("--print", action="store_true", dest="print_only", help="print the table, write nothing")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _rule_parser(sub) -> None:
    p = sub.add_parser("rule", help="explain a finding id (AS001...), or list them all")
    p.add_argument("id", nargs="?", help="a finding or gate-check id, e.g. AS003")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run_rule(args) -> int:
    from archscan.report.catalogue import RULES, rule_page
    if args.id is None:
        for rid in sorted(RULES):
            print(f"{rid}  {RULES[rid].level:<7}  {RULES[rid].short}")
        return EXIT_OK
    rid = args.id.strip().upper()
    if rid not in RULES:
        raise InputError(f"rule {args.id}: no such id (ids: {', '.join(sorted(RULES))})")
    sys.stdout.write(rule_page(RULES[rid]))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archscan", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"archscan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _scan_parser(sub)
    _scan_parser(sub, "suggest", "rescan small changes of the model and of the client's setting; report what each "
                 "measured and the smallest that passes the gate (without a gate: that improves the verdict)")
    _compare_parser(sub)
    _init_parser(sub)
    add_validate_parser(sub)
    add_sweep_parser(sub)
    _rule_parser(sub)
    return parser


def _options(s: dict):
    from archscan.config import ScanOptions
    from archscan.config.values import parse_shape
    return ScanOptions(input_shape=parse_shape(s["input_shape"]), num_classes=s["num_classes"],
                       batch_size=s["batch_size"], labels=s["labels"], bn_mode=s["bn_mode"],
                       relu_active=float(s["relu_active"]), seed=s["seed"], weights=s.get("weights"),
                       model_args=s["model_args"], local=s.get("local") or "auto",
                       local_budget=s.get("local_budget"), device=_device(s.get("device") or "cpu"),
                       strict=bool(s.get("strict")) or os.environ.get("ARCHSCAN_STRICT") == "1", defences=defences_of(s.get("defence")),
                       fedavg=fedavg_of(s))


def _device(name: str) -> str:
    import torch
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available on this machine")
    try:
        return str(torch.device(name))
    except RuntimeError as e:
        raise InputError(f"--device {name}: {e}") from e


def _policy(s: dict):
    from archscan.config.pyproject import load_baseline
    from archscan.report.gate import Policy, baseline_report
    if s["fail_under"] is not None and not 0.0 <= s["fail_under"] <= 1.0:
        raise InputError(f"--fail-under {s['fail_under']}: must be in [0, 1] (a resistance score, 1 - leakage score)")
    baseline = baseline_report(load_baseline(s["baseline"]), s["baseline"]) if s["baseline"] else None
    return Policy(fail_under=s["fail_under"], fail_on=s["fail_on"], baseline=baseline, baseline_path=s["baseline"])


def _inputs(s: dict, args) -> dict:
    """What the user gave that an output must never overwrite."""
    model = spec_file(s["model"])
    from archscan.config.pyproject import find_pyproject
    config = getattr(args, "config", None) or (None if no_config(args) else find_pyproject())
    return {"model's file": model if os.path.isfile(model) else None, "--weights checkpoint": s.get("weights"),
            "--baseline report": s.get("baseline"), "configuration file": str(config) if config else None}


def run_scan(args) -> int:
    from archscan.pipeline import load, scan_loaded
    from archscan.cli import progress
    from archscan.formatters.outputs import check_outputs, parse_outputs, write_outputs
    from archscan.report import suppress
    from archscan.report.gate import evaluate
    s = settings(args, SCAN_DEFAULTS)
    if not s["model"]:
        raise InputError("scan: give a MODEL (path/to/file.py:NAME) or set model in [tool.archscan]")
    outputs, policy, options = parse_outputs(s["format"], s["output"]), _policy(s), _options(s)
    select, ignore = suppress.parse_ids(s["select"], "--select"), suppress.parse_ids(s["ignore"], "--ignore")
    check_outputs(outputs, _inputs(s, args))
    mode = "all" if args.command == "suggest" else s["suggest"]
    with progress.Progress(f"scanning {s['model']}", enabled=progress.wanted(quiet=s["quiet"])) as bar, \
            boundary.model_output_to_stderr():
        loaded = load(s["model"], options)
        report = _suggestions(scan_loaded(loaded, options), loaded, options, policy, mode, bar)
    report = suppress.apply(report, select, ignore)
    if policy.active:
        report = report.with_(gate=evaluate(report, policy))
    shown = write_outputs(report, outputs, quiet=s["quiet"], colour=args.color)
    return EXIT_OK if args.command == "suggest" else _gate_exit(report, shown, s)


def _suggestions(report, loaded, options, policy, mode: str, bar):
    """The report with its ``suggestions`` per ``--suggest`` (off | on-fail | on) or ``archscan
    suggest`` (all)."""
    from archscan.suggest import needed, suggest
    if mode == "off" or (mode == "on-fail" and not (policy.active and needed(report, policy))):
        return report
    def step(i, n, edit):
        bar.update(i, f"trying {edit.change} ({i + 1}/{n})")
    return report.with_(suggestions=suggest(loaded, report, options, policy, first_only=mode != "all",
                                            on_candidate=step))


def _gate_exit(report, shown: bool, s: dict) -> int:
    """Say the gate's outcome on stderr (unless the text report on stdout already did); exit code."""
    from archscan.formatters.text import gate
    g = report.gate
    if g is None:
        return EXIT_OK
    if not shown and (not g.passed or not s["quiet"]):
        lines = gate(report)
        sys.stderr.write("\n".join(["archscan: " + " ".join(lines[0].split())] + lines[1:]) + "\n")
    return EXIT_OK if g.passed or s["exit_zero"] else EXIT_GATE


def run_compare(args) -> int:
    from archscan.api import compare
    from archscan.cli import progress
    from archscan.formatters.outputs import Output, check_outputs, write_outputs
    s = settings(args, {**THREAT_DEFAULTS, "quiet": False})
    outputs = [Output(args.format, args.output)]
    check_outputs(outputs, {f"model file {m}": spec_file(m) for m in args.models})
    with progress.Progress("comparing", total=len(args.models), enabled=progress.wanted(quiet=s["quiet"])) as bar, \
            boundary.model_output_to_stderr():
        result = compare(args.models, _options(s), on_model=lambda i, spec: bar.update(i, f"scanning {spec}"))
    write_outputs(result, outputs)
    return EXIT_OK


def run_init(args) -> int:
    from archscan.config.pyproject import template, write_template
    if args.print_only:
        sys.stdout.write(template(args.model, args.input_shape))
        return EXIT_OK
    write_template(Path(args.file), args.model, args.input_shape)
    print(f"archscan: wrote a [tool.archscan] table to {args.file}; edit it, then run `archscan scan`")
    return EXIT_OK


def main(argv=None) -> int:
    """The command line; the exit codes are ``archscan.cli.boundary``'s (0/1/2/3/130/141)."""
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    debug = getattr(args, "debug", False) or os.environ.get("ARCHSCAN_DEBUG") == "1"
    handlers = {"scan": run_scan, "suggest": run_scan, "compare": run_compare, "init": run_init, "validate": run_validate, "sweep": run_sweep,
                "rule": run_rule}
    return boundary.run(handlers[args.command], args, debug)
