"""`validate`: attack the model for real and put the achieved quality next to scan's prediction.

Each image is one client with batch 1 (one shared gradient per image); the attacks batch the
independent problems.  PSNR uses peak 1 on images in [0, 1].
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from archscan import config
from archscan.errors import InputError, TraceError

FAST_SETTINGS = {"ig": {"iterations": 300}, "hybrid": {"iterations": 60}, "dlg": {"iterations": 20}}


@dataclass(frozen=True)
class ValidateOptions:
    scan: config.ScanOptions
    attacks: tuple = config.DEFAULT_ATTACKS
    images: str | None = None        # None: bundled photos; "synthetic"; or a folder
    n_images: int = 4
    device: str = "cpu"
    fast: bool = False
    settings: dict = field(default_factory=dict)


def check_attacks(names) -> tuple:
    from archscan.validate.attacks import ATTACKS
    bad = [n for n in names if n not in ATTACKS]
    if bad:
        raise InputError(f"--attacks: unknown attack {bad[0]!r}; choose from {', '.join(sorted(ATTACKS))}")
    return tuple(names)


def check_device(device: str) -> torch.device:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available on this machine")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise InputError(f"--device {device}: {e}") from e


def prediction(spec: str, options: config.ScanOptions) -> tuple[dict | None, str | None]:
    """scan's prediction, or None with the reason when the model cannot be analysed (attacks still run)."""
    from archscan.pipeline import scan
    try:
        report = scan(spec, options).to_dict()
    except TraceError as e:
        return None, str(e)
    s = report["scores"]
    return {"verdict": s["verdict"], "leakage_score": s["leakage_score"],
            "predicted_psnr": s["predicted_psnr"], "image_status": report["image"]["status"]}, None


def load_batch(opts: ValidateOptions, shape) -> tuple[torch.Tensor, list]:
    from archscan.images import load_images
    try:
        return load_images(opts.images, opts.n_images, tuple(shape), seed=opts.scan.seed)
    except ValueError as e:
        raise InputError(f"--images {opts.images}: {e}") from e


def attack_settings(name: str, opts: ValidateOptions) -> dict:
    base = dict(FAST_SETTINGS.get(name, {})) if opts.fast else {}
    base.update(opts.settings.get(name, {}))
    return base


def run_attack(name: str, target, opts: ValidateOptions):
    """Run one attack; on a GPU out-of-memory, retry on smaller batches and say what fitted."""
    from archscan.validate.attacks import get_attack
    attack = get_attack(name, **attack_settings(name, opts))
    try:
        return attack.reconstruct(target, seed=opts.scan.seed), None
    except torch.cuda.OutOfMemoryError:
        return _split_on_oom(attack, target, opts)


def _split_on_oom(attack, target, opts):
    problems = target.problems()
    size = max(1, len(problems) // 2)
    while True:
        try:
            parts = [attack.reconstruct(_merge(problems[i:i + size]), seed=opts.scan.seed)
                     for i in range(0, len(problems), size)]
            images = torch.cat([p.images for p in parts])
            rec = parts[0]
            return type(rec)(images, rec.attack, sum(p.iterations for p in parts), sum(p.seconds for p in parts),
                             rec.settings), f"GPU out of memory: ran in batches of {size}"
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            torch.cuda.empty_cache()
            size = max(1, size // 2)


def _merge(problems):
    from archscan.validate.attacks.base import Target
    first = problems[0]
    grads = {k: torch.cat([p.gradients[k].unsqueeze(0) if not p.per_sample else p.gradients[k] for p in problems])
             for k in first.gradients}
    labels = None if first.labels is None else torch.cat([p.labels for p in problems])
    return Target(first.model, first.input_shape, labels, grads, first.device, first.dtype,
                  batch_size=len(problems), per_sample=True)


def make_client(model, images, opts: ValidateOptions, num_classes: int, device):
    """Each image is a client's private batch of one; labels are fixed (i mod classes)."""
    from archscan.validate.attacks import make_target
    labels = torch.arange(len(images)) % max(1, num_classes)
    return make_target(model, images, labels, reveal_labels=opts.scan.labels == "known", per_sample=True,
                       device=device, dtype=torch.float64, train=opts.scan.bn_mode == "train")


def score_reconstruction(rec, images, names) -> list[dict]:
    from archscan.validate.metrics import psnr, ssim
    if rec.skipped:
        return []
    p = psnr(rec.images.cpu(), images.to(rec.images.dtype))
    s = ssim(rec.images.cpu(), images.to(rec.images.dtype))
    per = rec.seconds / max(1, len(images))
    return [{"attack": rec.attack, "image": n, "psnr": round(float(pi), 3), "ssim": round(float(si), 4),
             "seconds": round(per, 4), "iterations": rec.iterations} for n, pi, si in zip(names, p, s)]


def best_per_image(results: list[dict], names) -> dict:
    best = {}
    for r in results:
        if r["image"] not in best or r["psnr"] > best[r["image"]]["psnr"]:
            best[r["image"]] = {"attack": r["attack"], "psnr": r["psnr"]}
    return {n: best[n] for n in names if n in best}


def validate(spec: str, opts: ValidateOptions, grid_path: str | None = None) -> dict:
    """Attack ``spec`` with every requested attack; return the validation report dict."""
    from archscan.model.load import load_model, load_weights
    check_attacks(opts.attacks)
    device = check_device(opts.device)
    pred, why = prediction(spec, opts.scan)
    loaded = load_model(spec, opts.scan.model_args, opts.scan.num_classes, opts.scan.seed)
    if loaded.module is None:
        raise InputError(f"{spec}: validate needs the model's source (.pt2 programs cannot be re-run for attacks)")
    if opts.scan.weights:
        load_weights(loaded.module, opts.scan.weights)
    model = loaded.module.eval()
    images, names = load_batch(opts, opts.scan.input_shape)
    with torch.no_grad():
        classes = model(images[:1].float()).shape[-1]
    target = make_client(model, images, opts, classes, device)
    runs, results = [], []
    for name in opts.attacks:
        rec, note = run_attack(name, target, opts)
        runs.append({"attack": name, "skipped": rec.skipped, "seconds": round(rec.seconds, 3),
                     "iterations": rec.iterations, "settings": _plain(rec.settings), "note": note})
        results += score_reconstruction(rec, images, names)
        if not rec.skipped:
            runs[-1]["_images"] = rec.images.detach().cpu().float()
    best = best_per_image(results, names)
    report = _assemble(spec, opts, pred, why, names, runs, results, best, device)
    if grid_path:
        from archscan.validate.plots import reconstruction_grid
        report["grid_png"] = reconstruction_grid(images, names, runs, grid_path)
    for r in runs:
        r.pop("_images", None)
    return report


def _plain(settings: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in settings.items()}


def _assemble(spec, opts, pred, why, names, runs, results, best, device) -> dict:
    from archscan.report.records import now, tool_info
    best_psnr = statistics.median(b["psnr"] for b in best.values()) if best else None
    return {
        "schema_version": "1.0", "kind": "validation", "tool": tool_info(), "created": now(),
        "model": {"spec": spec, "input_shape": list(opts.scan.input_shape)},
        "threat_model": opts.scan.threat_model(), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "images": {"source": opts.images or "bundled photos (scikit-image)", "names": names,
                   "scaling": "[0, 1], PSNR peak 1"},
        "prediction": pred, "prediction_skipped": why,
        "attacks": [{k: v for k, v in r.items() if k != "_images"} for r in runs],
        "results": results, "best": best, "best_psnr": best_psnr,
    }
