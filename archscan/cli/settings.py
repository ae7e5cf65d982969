"""Where a command's settings come from: the command line over [tool.archscan] over the command's
defaults, the same for scan, compare and validate."""
from __future__ import annotations

import os


def settings(args, defaults: dict) -> dict:
    """Command line over [tool.archscan] over ``defaults`` (only the keys in ``defaults``)."""
    from archscan.config.pyproject import FileConfig, load, merge
    from archscan.model.load import parse_model_args
    cli = {k: getattr(args, k, None) for k in defaults}
    cli["model_args"] = parse_model_args(args.model_arg) if getattr(args, "model_arg", None) else None
    file = FileConfig() if no_config(args) else load(getattr(args, "config", None))
    return merge(cli, file, defaults)


def no_config(args) -> bool:
    """--no-config or ARCHSCAN_NO_CONFIG=1 (CI on untrusted pull requests: their pyproject.toml
    could name any model file, which is code that runs)."""
    return bool(getattr(args, "no_config", False)) or os.environ.get("ARCHSCAN_NO_CONFIG") == "1"
