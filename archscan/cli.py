"""archscan command line: parse -> api -> formatter -> exit code (0 ok, 1 gate, 2 input/trace error)."""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .cli_validate import add_validate_parser, run_validate
from .errors import ArchscanError

EXIT_OK, EXIT_GATE, EXIT_INPUT = 0, 1, 2


def _scan_parser(sub) -> None:
    p = sub.add_parser("scan", help="static leakage analysis of a model")
    p.add_argument("model", help="path/to/file.py:NAME, package.module:NAME, or a torch.export .pt2 file")
    p.add_argument("--input-shape", help="C,H,W of one image, e.g. 3,32,32")
    p.add_argument("--num-classes", type=int, help="passed to the factory when it takes num_classes")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra keyword argument for the factory (repeatable)")
    p.add_argument("--weights", help="state_dict checkpoint (loaded with weights_only=True)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--labels", choices=("known", "inferred"), default="inferred")
    p.add_argument("--bn-mode", choices=("eval", "train"), default="eval")
    p.add_argument("--relu-active", type=float, default=0.5, help="active fraction of ReLU outputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("-o", "--output", help="write the report to this file instead of stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archscan", description=__doc__)
    parser.add_argument("--version", action="version", version=f"archscan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _scan_parser(sub)
    add_validate_parser(sub)
    return parser


def _options(args):
    from .config import ScanOptions
    from .loader import parse_model_args, parse_shape
    return ScanOptions(input_shape=parse_shape(args.input_shape), num_classes=args.num_classes,
                       batch_size=args.batch_size, labels=args.labels, bn_mode=args.bn_mode,
                       relu_active=args.relu_active, seed=args.seed, weights=args.weights,
                       model_args=parse_model_args(args.model_arg))


def run_scan(args) -> int:
    from .api import scan
    from .formatters import render
    report = scan(args.model, _options(args)).to_dict()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            render(report, args.format, fh)
    else:
        render(report, args.format, sys.stdout)
    return EXIT_OK


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("ARCHSCAN_DEBUG") == "1"
    try:
        return {"scan": run_scan, "validate": run_validate}[args.command](args)
    except ArchscanError as e:
        if debug:
            raise
        print(f"archscan: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as e:
        if debug:
            raise
        print(f"archscan: error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return EXIT_INPUT
