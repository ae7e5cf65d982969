"""`archscan validate`: parse -> validation -> formatter -> exit code."""
from __future__ import annotations

import io
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from archscan.cli.settings import add_defence_option, add_fedavg_options
from archscan.config import DEFAULT_ATTACKS


def add_validate_parser(sub) -> None:
    p = sub.add_parser("validate", help="run real reconstruction attacks and compare with the prediction")
    p.add_argument("model", nargs="?", help="as for scan; omit with --zoo")
    p.add_argument("--zoo", help="a manifest.toml: validate every model in it and report the Spearman correlation")
    p.add_argument("--all", action="store_true", help="with --zoo: include models marked fast = false")
    p.add_argument("--input-shape", help="C,H,W of one image, e.g. 3,32,32")
    p.add_argument("--num-classes", type=int, help="passed to the factory when it takes num_classes")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="passed to the factory")
    p.add_argument("--weights", help="state_dict checkpoint (loaded with weights_only=True)")
    p.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS),
                   help="comma-separated: prior, analytic, rgap, hybrid, ig, dlg, april")
    p.add_argument("--images", default="4", help="a number of bundled photos, a folder of PNG/JPEG, or 'synthetic'")
    p.add_argument("--n-images", type=int, default=None, help="with --images DIR/synthetic: how many")
    p.add_argument("--device", help="cpu (default) or cuda[:N]")
    p.add_argument("--fast", action="store_true", help="fewer optimisation steps (tests, quick looks)")
    p.add_argument("--budget", choices=("fast", "default", "thorough"),
                   help="tuned attacks: run each optimisation attack over a hyperparameter grid of this size "
                        "and report every configuration, the oracle best (by PSNR) and the objective-selected "
                        "one (by gradient match); without it each attack runs its one default configuration")
    p.add_argument("--set", action="append", default=[], metavar="ATTACK.KEY=VALUE", dest="set_",
                   help="an attack setting applied to every run of that attack, e.g. ig.iterations=300")
    p.add_argument("--batch-size", type=int,
                   help="the images are one client's batch whose summed gradient is shared (B = the number of "
                        "images); default 1: every image is its own client")
    p.add_argument("--labels", choices=("known", "inferred"), help="default inferred")
    p.add_argument("--bn-mode", choices=("eval", "train"), help="default eval")
    p.add_argument("--seed", type=int, help="every random draw (weights, images, attacks, defence noise) from it; default 0")
    add_defence_option(p)
    add_fedavg_options(p)
    p.add_argument("--local", choices=("auto", "on", "off"),
                   help="scan's optimisation-attack view in the prediction (default auto, as scan)")
    p.add_argument("--format", choices=("text", "json", "html", "markdown"), default="text",
                   help="the report on stdout and in -o (html: one self-contained page with the reconstruction "
                        "grid, or for --zoo the table, scatter and Spearman interval; markdown: a CI step summary)")
    p.add_argument("-o", "--output", help="a folder: report.json/.txt/.html, grid.png (or scatter.png) go there")
    p.add_argument("--config", help="read [tool.archscan] from this pyproject.toml (default: discovered)")
    p.add_argument("--no-config", action="store_true", help="ignore [tool.archscan]")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


# What validate takes from [tool.archscan] (the model and its threat model), with scan's defaults
VALIDATE_DEFAULTS = {"model": None, "input_shape": None, "num_classes": None, "model_args": {}, "weights": None,
                     "labels": "inferred", "bn_mode": "eval", "seed": 0, "local": "auto", "device": "cpu",
                     "batch_size": 1,
                     "defence": None, "fedavg_steps": None, "fedavg_lr": None}


def _options(args):
    from archscan.config import ScanOptions
    from archscan.errors import InputError
    from archscan.config.values import check_batch_size, check_seed, parse_shape
    from archscan.validate.run import ValidateOptions, check_attacks
    from archscan.cli.settings import defences_of, fedavg_of, settings
    s = settings(args, VALIDATE_DEFAULTS)
    if not args.zoo:
        args.model = s["model"]
    source, n = (None, int(args.images)) if args.images.isdigit() else (args.images, args.n_images or 4)
    if n < 1:
        raise InputError("--images: need at least one image")
    check_seed(s["seed"])
    check_batch_size(s["batch_size"])
    if s["batch_size"] > 1 and n != s["batch_size"]:
        raise InputError(f"--batch-size {s['batch_size']}: validate attacks one client's batch; give "
                         f"--images {s['batch_size']} (got {n} images)")
    scan = ScanOptions(batch_size=s["batch_size"], input_shape=parse_shape(s["input_shape"]), num_classes=s["num_classes"],
                       labels=s["labels"], bn_mode=s["bn_mode"], seed=s["seed"], weights=s["weights"],
                       model_args=s["model_args"], local=s["local"], defences=defences_of(s["defence"]),
                       fedavg=fedavg_of(s))
    attacks = check_attacks([a.strip() for a in args.attacks.split(",") if a.strip()])
    return ValidateOptions(scan=scan, attacks=attacks, images=source, n_images=n, device=s["device"], fast=args.fast,
                           settings=parse_settings(args.set_), budget=args.budget)


def parse_settings(items: list) -> dict:
    """``["ig.iterations=300", "dlg.init=prior"]`` -> ``{"ig": {"iterations": 300}, "dlg": {"init": "prior"}}``."""
    from archscan.errors import InputError
    from archscan.validate.attacks import ATTACKS
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        attack, dot, name = key.strip().partition(".")
        if not sep or not dot or attack not in ATTACKS or name not in ATTACKS[attack].defaults:
            raise InputError(f"--set {item}: expected ATTACK.KEY=VALUE with a known attack and setting "
                             f"(e.g. ig.iterations=300)")
        out.setdefault(attack, {})[name] = _value(raw.strip(), ATTACKS[attack].defaults[name])
    return out


def _value(raw: str, default):
    from archscan.errors import InputError
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if raw.lower() in ("none", "null"):
        return None
    try:
        return int(raw) if isinstance(default, int) and not isinstance(default, bool) else float(raw)
    except ValueError:
        if isinstance(default, (int, float)) and not isinstance(default, bool) and raw != "prior":
            raise InputError(f"--set: {raw!r} is not a number") from None
        return raw


def run_validate(args) -> int:
    from archscan.errors import InputError
    from archscan.cli.boundary import model_output_to_stderr
    from archscan.formatters import render
    from archscan.formatters.outputs import Output, check_outputs, write_file
    opts = _options(args)
    out = Path(args.output) if args.output else None
    name = {"json": "report.json", "html": "report.html", "markdown": "report.md"}.get(args.format, "report.txt")
    if out:
        if out.exists() and not out.is_dir():
            raise InputError(f"-o {out}: validate writes a folder (report, grid.png); that is a file")
        check_outputs([Output(args.format, str(out / name))], _inputs(args))
        out.mkdir(parents=True, exist_ok=True)
    with model_output_to_stderr(), _figures(out, args.format) as figures:
        report = _run(args, opts, figures)
        page = io.StringIO()       # while the figures exist: the HTML page embeds them
        render(report, args.format, page)
    if out:
        write_file(str(out / name), lambda fh: fh.write(page.getvalue()))
    sys.stdout.write(page.getvalue())
    return 0


@contextmanager
def _figures(out: Path | None, fmt: str):
    """Where the grid / scatter PNGs go: the output folder; for an HTML page without one, a
    temporary folder (the page embeds them); else nowhere."""
    if out is not None or fmt != "html":
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="archscan-validate-") as tmp:
        yield Path(tmp)


def _inputs(args) -> dict:
    from archscan.config.values import spec_file
    return {"model's file": spec_file(args.model or ""),
            "--zoo manifest": args.zoo, "--weights checkpoint": getattr(args, "weights", None)}


def _run(args, opts, out):
    from archscan.errors import InputError
    if args.zoo:
        from archscan.validate.zoo import validate_zoo
        report = validate_zoo(args.zoo, opts, args.all, str(out / "scatter.png") if out else None)
    else:
        if not args.model:
            raise InputError("validate: give a MODEL or --zoo manifest.toml")
        if opts.scan.input_shape is None:
            raise InputError("--input-shape is required (C,H,W), e.g. --input-shape 3,32,32")
        from archscan.validate.run import validate
        report = validate(args.model, opts, str(out / "grid.png") if out else None)
    return report
