"""`archscan validate`: parse -> validation -> formatter -> exit code."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from archscan.config import DEFAULT_ATTACKS


def add_validate_parser(sub) -> None:
    p = sub.add_parser("validate", help="run real reconstruction attacks and compare with the prediction")
    p.add_argument("model", nargs="?", help="as for scan; omit with --zoo")
    p.add_argument("--zoo", help="a manifest.toml: validate every model in it and report the Spearman correlation")
    p.add_argument("--all", action="store_true", help="with --zoo: include models marked fast = false")
    p.add_argument("--input-shape", help="C,H,W of one image, e.g. 3,32,32")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--weights")
    p.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS),
                   help="comma-separated: prior, analytic, rgap, hybrid, ig, dlg, april")
    p.add_argument("--images", default="4", help="a number of bundled photos, a folder of PNG/JPEG, or 'synthetic'")
    p.add_argument("--n-images", type=int, default=None, help="with --images DIR/synthetic: how many")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--fast", action="store_true", help="fewer optimisation steps (tests, quick looks)")
    p.add_argument("--labels", choices=("known", "inferred"), default="inferred")
    p.add_argument("--bn-mode", choices=("eval", "train"), default="eval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--local", choices=("auto", "on", "off"), default="auto",
                   help="scan's optimisation-attack view in the prediction (default auto, as scan)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("-o", "--output", help="a folder: report.json/.txt, grid.png (or scatter.png) go there")
    p.add_argument("--debug", action="store_true")


def _options(args):
    from archscan.config import ScanOptions
    from archscan.errors import InputError
    from archscan.model.load import parse_model_args, parse_shape
    from archscan.validate.run import ValidateOptions, check_attacks
    source, n = (None, int(args.images)) if args.images.isdigit() else (args.images, args.n_images or 4)
    if n < 1:
        raise InputError("--images: need at least one image")
    scan = ScanOptions(input_shape=parse_shape(args.input_shape), num_classes=args.num_classes,
                       labels=args.labels, bn_mode=args.bn_mode, seed=args.seed, weights=args.weights,
                       model_args=parse_model_args(args.model_arg), local=args.local)
    attacks = check_attacks([a.strip() for a in args.attacks.split(",") if a.strip()])
    return ValidateOptions(scan=scan, attacks=attacks, images=source, n_images=n, device=args.device, fast=args.fast)


def run_validate(args) -> int:
    from archscan.errors import InputError
    opts = _options(args)
    out = Path(args.output) if args.output else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
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
    text = json.dumps(report, indent=2) + "\n" if args.format == "json" else render_text(report)
    if out:
        (out / ("report.json" if args.format == "json" else "report.txt")).write_text(text)
    sys.stdout.write(text)
    return 0


def render_text(report: dict) -> str:
    if report.get("kind") == "zoo-validation":
        lines = [f"{'model':<34} {'verdict':<9} {'score':>6} {'pred dB':>8} {'best dB':>8}  best attack"]
        for r in report["models"]:
            lines.append(f"{r['spec'].split('/')[-1]:<34} {str(r['verdict']):<9} {_f(r['leakage_score'], 3):>6} "
                         f"{_f(r['predicted_psnr'], 1):>8} {_f(r['best_psnr'], 1):>8}  {','.join(r['best_attacks'])}")
        lines.append(f"Spearman (predicted vs best achieved PSNR, both clipped at the 8-bit ceiling "
                     f"{report['quality_ceiling_db']} dB): {report['spearman']}  (unclipped: "
                     f"{report['spearman_raw']})")
        return "\n".join(lines) + "\n"
    pred = report["prediction"] or {}
    lines = [f"{'attack':<9} {'image':<22} {'PSNR dB':>8} {'SSIM':>6} {'s/img':>7}"]
    lines += [f"{r['attack']:<9} {r['image']:<22} {r['psnr']:>8.2f} {r['ssim']:>6.3f} {r['seconds']:>7.3f}"
              for r in report["results"]]
    lines += [f"skipped {a['attack']}: {a['skipped']}" for a in report["attacks"] if a["skipped"]]
    lines.append(f"predicted  {pred.get('verdict')}  leakage score {pred.get('leakage_score')}  "
                 f"predicted PSNR {pred.get('predicted_psnr')} dB" if pred else
                 f"predicted  n/a ({report['prediction_skipped']})")
    lines.append(f"achieved   best PSNR (median over images of the best attack) {_f(report['best_psnr'], 2)} dB "
                 f"on {report['device']}")
    return "\n".join(lines) + "\n"


def _f(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"
