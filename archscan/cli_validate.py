"""`archscan validate`: parse -> api.validate -> formatter -> exit code."""
from __future__ import annotations


def add_validate_parser(sub) -> None:
    p = sub.add_parser("validate", help="run real reconstruction attacks and compare with the prediction")
    p.add_argument("model", nargs="?", help="as for scan; omit with --zoo")
    p.add_argument("--zoo", help="a manifest.toml: validate every model in it and report the Spearman correlation")


def run_validate(args) -> int:
    from .errors import InputError
    raise InputError("validate: not implemented yet")
