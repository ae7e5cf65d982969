"""`archscan validate`: parse -> validation -> formatter -> exit code."""
from __future__ import annotations

import json
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
    p.add_argument("--format", choices=("text", "json", "html"), default="text",
                   help="the report on stdout and in -o (html: one self-contained page with the reconstruction "
                        "grid, or for --zoo the table, scatter and Spearman interval)")
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
    from archscan.formatters.outputs import Output, check_outputs, write_outputs
    opts = _options(args)
    out = Path(args.output) if args.output else None
    name = {"json": "report.json", "html": "report.html"}.get(args.format, "report.txt")
    if out:
        if out.exists() and not out.is_dir():
            raise InputError(f"-o {out}: validate writes a folder (report, grid.png); that is a file")
        check_outputs([Output(args.format, str(out / name))], _inputs(args))
        out.mkdir(parents=True, exist_ok=True)
    with model_output_to_stderr(), _figures(out, args.format) as figures:
        report = _run(args, opts, figures)
        text = _render(report, args.format)
    if out:
        write_outputs(text, [Output(args.format, str(out / name))], renderers={args.format: lambda t, fh: fh.write(t)})
    sys.stdout.write(text)
    return 0


def _render(report: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2) + "\n"
    if fmt == "html":
        from archscan.formatters.validation_html import render
        return render(report)
    return render_text(report)


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


def render_text(report: dict) -> str:
    if report.get("kind") == "zoo-validation":
        lines = [f"{'model':<30} {'chain':<10} {'optimis.':<10} {'verdict':<10} {'pred dB':>8} {'best dB':>8} "
                 f"{'SSIM':>5} {'err':>6} {'sel dB':>7}  best attack"]
        for r in report["models"]:
            lines.append(f"{r['spec'].split('/')[-1]:<30} {str(r.get('chain_verdict')):<10} "
                         f"{str(r.get('optimisation_verdict')):<10} {str(r['verdict']):<10} "
                         f"{_f(r['predicted_psnr'], 1):>8} {_f(r['best_psnr'], 1):>8} {_f(r.get('best_ssim'), 2):>5} "
                         f"{_f(r.get('error_db'), 1):>6} {_f(r.get('selected_psnr'), 1):>7}  {','.join(r['best_attacks'])}")
        lines.append(f"within 4 dB (clipped): {report.get('within_4db')}")
        lines.append(f"Spearman (predicted vs best achieved PSNR, both clipped at the 8-bit ceiling "
                     f"{report['quality_ceiling_db']} dB): {report['spearman']} "
                     f"[95% bootstrap {report.get('spearman_interval')}]  (unclipped: "
                     f"{report['spearman_raw']}; against the objective-selected PSNR: "
                     f"{report.get('spearman_selected')})")
        return "\n".join(lines) + "\n"
    pred = report["prediction"] or {}
    if report.get("budget"):
        lines = _render_tuned(report)
    else:
        lines = [f"{'attack':<9} {'image':<22} {'PSNR dB':>8} {'SSIM':>6} {'s/img':>7}"]
        lines += [f"{r['attack']:<9} {r['image']:<22} {r['psnr']:>8.2f} {r['ssim']:>6.3f} {r['seconds']:>7.3f}"
                  for r in report["results"]]
    lines += [f"skipped {a['attack']}: {a['skipped']}" for a in report["attacks"] if a["skipped"]]
    lines.append(f"predicted  {pred.get('verdict')}  leakage score {pred.get('leakage_score')}  "
                 f"predicted PSNR {pred.get('predicted_psnr')} dB" if pred else
                 f"predicted  n/a ({report['prediction_skipped']})")
    lines.append(f"achieved   best PSNR (median over images of the best attack) {_f(report['best_psnr'], 2)} dB "
                 f"on {report['device']}")
    if report["threat_model"].get("defences"):
        from archscan.defences import spelled
        lines.append(f"defences   {spelled(report['threat_model']['defences'])} (the attacks saw the defended update)")
    if report["threat_model"].get("fedavg", {}).get("local_steps", 1) > 1:
        from archscan.fedavg import suffix
        lines.append(f"client     {suffix(report['threat_model'])[2:]}: the attacks matched the simulated update; "
                     f"closed-form attacks do not apply")
    lines.append(f"           objective-selected PSNR (lowest gradient match, no true image needed) "
                 f"{_f(report.get('selected_psnr'), 2)} dB")
    return "\n".join(lines) + "\n"


def _render_tuned(report: dict) -> list:
    """Per attack and image: the oracle-best and the objective-selected configuration."""
    lines = [f"budget {report['budget']}: every configuration's PSNR, SSIM, objective, match and seconds are in "
             f"--format json",
             f"{'attack':<8} {'configs':>7} {'image':<20} {'oracle dB':>9}  {'oracle configuration':<34} "
             f"{'selected dB':>11}  selected configuration"]
    for a in report["attacks"]:
        if a.get("skipped") or "oracle" not in a:
            continue
        for image, o in a["oracle"].items():
            sel = a["selected"].get(image, {})
            lines.append(f"{a['attack']:<8} {a['configurations']:>7} {image:<20} {o['psnr']:>9.2f}  "
                         f"{o['label'][:34]:<34} {_f(sel.get('psnr'), 2):>11}  {sel.get('label', '-')}")
    for image, b in report["best"].items():
        sel = report["selected"].get(image, {})
        lines.append(f"best     {image}: oracle {b['psnr']:.2f} dB ({b['attack']} {b.get('label', '')}), "
                     f"selected {_f(sel.get('psnr'), 2)} dB ({sel.get('attack')} {sel.get('label', '')}, "
                     f"match {sel.get('match')})")
    return lines


def _f(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"
