"""Where a command's settings come from: the command line over [tool.archscan] over the command's
defaults, the same for scan, compare and validate."""
from __future__ import annotations

import os

from archscan.defences import parse_defences


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


def add_defence_option(p) -> None:
    p.add_argument("--defence", action="append", metavar="KIND:K=V,...",
                   help="a defence the client applies to its update, in order (repeatable): "
                        "dp:sigma=S[,clip=C] (DP-SGD clipping and Gaussian noise), prune:ratio=R, quant:bits=B")


def add_fedavg_options(p) -> None:
    p.add_argument("--fedavg-steps", type=int, metavar="E",
                   help="FedAvg: the client runs E local SGD steps and shares its weight change (default 1: "
                        "one gradient)")
    p.add_argument("--fedavg-lr", type=float, metavar="LR",
                   help="learning rate of those steps, on the loss summed over the client's batch (default 0.01)")


def fedavg_of(s: dict):
    """The settings' fedavg_steps / fedavg_lr -> LocalSteps (checked)."""
    from archscan.fedavg import local_steps
    return local_steps(s.get("fedavg_steps"), s.get("fedavg_lr"))


def defences_of(value) -> tuple:
    """--defence / [tool.archscan] defence (a string or a list) -> Defence tuple."""
    return parse_defences([value] if isinstance(value, str) else value)
