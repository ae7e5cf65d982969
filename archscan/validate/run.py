"""`validate`: attack the model for real and put the achieved quality next to scan's prediction.

Each image is one client with batch 1 (one shared gradient per image); the attacks batch the
independent problems.  PSNR uses peak 1 on images in [0, 1].

Two ways to pick "the" reconstruction of an image from many (attacks, and with ``--budget`` the
configurations of each attack's grid, :mod:`archscan.attacks.tuning`):

* **oracle best** (``best``, ``best_psnr``): the highest PSNR.  It needs the true image, so no
  attacker can make this choice; it is the upper bound on attacker strength, and what the zoo
  calibration (Spearman against the prediction) uses.
* **objective-selected** (``selected``, ``selected_psnr``): the lowest gradient-matching distance
  ``match = 1 - cos(grad(x_hat), grad*)`` over all parameters, recomputed in float64 from the
  clamped reconstruction with the labels the attack used.  It needs only the observed gradients:
  a realisable attacker.  (Each attack's own objective is reported too, as ``objective``, but
  objectives with different TV weights or losses are not comparable, so they choose only between
  restarts inside one configuration.)
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from archscan import config
from archscan.errors import InputError, TraceError
from archscan.validate.attacks.tuning import (  # FAST_SETTINGS: --fast's iteration counts
    BUDGETS,
    FAST_SETTINGS,
)


@dataclass(frozen=True)
class ValidateOptions:
    scan: config.ScanOptions
    attacks: tuple = config.DEFAULT_ATTACKS
    images: str | None = None        # None: bundled photos; "synthetic"; or a folder
    n_images: int = 4
    device: str = "cpu"
    fast: bool = False
    settings: dict = field(default_factory=dict)   # per attack: settings on top of every configuration
    budget: str | None = None        # None: each attack's one configuration; else a grid (tuning.BUDGETS)


def check_attacks(names) -> tuple:
    from archscan.validate.attacks import ATTACKS
    bad = [n for n in names if n not in ATTACKS]
    if bad:
        raise InputError(f"--attacks: unknown attack {bad[0]!r}; choose from {', '.join(sorted(ATTACKS))}")
    return tuple(names)


def check_budget(budget: str | None) -> str | None:
    if budget is not None and budget not in BUDGETS:
        raise InputError(f"--budget {budget}: choose from {', '.join(BUDGETS)}")
    return budget


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
        report = scan(spec, options)
    except TraceError as e:
        return None, str(e)
    s, opt = report.scores, report.scores.optimisation
    return {"verdict": s.verdict, "leakage_score": s.leakage_score,
            "predicted_psnr": s.predicted_psnr, "image_status": report.image.status,
            "chain_verdict": s.chain.verdict, "optimisation_verdict": opt.verdict,
            "optimisation_status": opt.status,
            "psnr_interval": list(opt.psnr_interval) if opt.psnr_interval else None}, None


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


def run_grid(name: str, target, opts: ValidateOptions) -> tuple[list, str | None]:
    """Every configuration of ``name``'s grid at ``opts.budget``: ``[(settings, Reconstruction)]``.

    Configurations are batched where the attack can (Inverting Gradients); on a GPU
    out-of-memory the grid runs one configuration at a time, each with the batch splitting of
    :func:`run_attack`.
    """
    from archscan.validate.attacks import get_attack
    from archscan.validate.attacks.tuning import configurations
    configs = configurations(name, opts.budget, opts.settings.get(name))
    attack = get_attack(name)
    try:
        return list(zip(configs, attack.reconstruct_grid(target, configs, seed=opts.scan.seed))), None
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
    out, notes = [], set()
    for c in configs:
        one = get_attack(name, **c)
        try:
            rec = one.reconstruct(target, seed=opts.scan.seed)
        except torch.cuda.OutOfMemoryError:
            rec, note = _split_on_oom(one, target, opts)
            notes.add(note)
        out.append((c, rec))
    return out, "; ".join(["GPU out of memory: configurations ran one at a time", *sorted(notes)])


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


def make_client(model, images, opts: ValidateOptions, num_classes: int, device, first_index: int = 0):
    """Each image is a client's private batch of one -- or, with ``--batch-size B``, the images
    are one client's batch whose summed gradient is shared; labels are fixed (i mod classes, i
    counted from ``first_index``: a sweep task attacks image i alone).  The client applies
    ``--defence`` to its update before sharing it: the attacks see only that.  With FedAvg local
    steps on a batch the steps see the whole batch, so DP clips the client's whole update (DP-FedAvg's
    convention) rather than each image's gradient."""
    from dataclasses import replace

    from archscan.defences import apply_defences, apply_to_batch
    from archscan.validate.attacks import make_target
    labels = (first_index + torch.arange(len(images))) % max(1, num_classes)
    joint = opts.scan.batch_size > 1 and opts.scan.fedavg.unrolled
    target = make_target(model, images, labels, reveal_labels=opts.scan.labels == "known", per_sample=not joint,
                         device=device, dtype=torch.float64, train=opts.scan.bn_mode == "train",
                         fedavg=opts.scan.fedavg)
    if joint:
        return replace(target, gradients=apply_defences(opts.scan.defences, target.gradients, opts.scan.seed,
                                                        per_sample=False))
    if opts.scan.batch_size > 1:        # per-image gradients first: DP clips each image before the sum
        return replace(target, gradients=apply_to_batch(opts.scan.defences, target.gradients, opts.scan.seed),
                       per_sample=False)
    if not opts.scan.defences:
        return target
    return replace(target, gradients=apply_defences(opts.scan.defences, target.gradients, opts.scan.seed,
                                                    per_sample=True, first_index=first_index))


def gradient_match(target, images: torch.Tensor, labels) -> list[float]:
    """``1 - cos(grad(x_hat), grad*)`` per image over all shared parameter gradients (float64).

    What a real attacker can evaluate: the gradients its reconstruction produces (with the labels
    it used, or the iDLG-inferred ones) against the observed ones, one client at a time.
    """
    from archscan.validate.attacks.analytic import labels_per_problem
    from archscan.validate.attacks.base import cosine_distance, observe_gradients, prepare_model
    model = prepare_model(target.model, target.device, torch.float64)
    names = [n for n, p in model.named_parameters() if n in target.gradients]
    if labels is None:
        labels = labels_per_problem(target).flatten()
    out = []
    per = 1 if target.per_sample else target.batch_size   # a summed batch: one match, for every image
    for i, prob in enumerate(target.problems()):
        x = images[i * per:(i + 1) * per].to(target.device, torch.float64)
        y = labels[i * per:(i + 1) * per].to(target.device)
        with torch.enable_grad():   # the update x_hat would give: the gradient, or the client's local steps
            grads = observe_gradients(model, x, y, fedavg=target.fedavg)
        mine = [grads[n] for n in names]
        observed = [prob.gradients[n].to(target.device, torch.float64) for n in names]
        out += [float(cosine_distance([g.unsqueeze(0) for g in mine], [o.unsqueeze(0) for o in observed])[0])] * per
    return out


def score_reconstruction(rec, images, names, target=None, config: str | None = None,
                         label: str | None = None) -> list[dict]:
    """One row per image: PSNR, SSIM, seconds; with ``target`` also the attack's own final
    objective (``objective``, when it reports one), the gradient match and the image's TV."""
    from archscan.validate.attacks.base import total_variation
    from archscan.validate.metrics import psnr, ssim
    if rec.skipped:
        return []
    if target is not None and not target.per_sample and target.batch_size > 1:
        rec = _in_image_order(rec, images)
    p = psnr(rec.images.cpu(), images.to(rec.images.dtype))
    s = ssim(rec.images.cpu(), images.to(rec.images.dtype))
    per = rec.seconds / max(1, len(images))
    rows = [{"attack": rec.attack, "image": n, "psnr": round(float(pi), 3), "ssim": round(float(si), 4),
             "seconds": round(per, 4), "iterations": rec.iterations} for n, pi, si in zip(names, p, s)]
    if target is not None:
        match = gradient_match(target, rec.images, rec.labels)
        own = rec.info.get("final_objective") if isinstance(rec.info, dict) else None
        tv = total_variation(rec.images.detach().cpu().double()).tolist()
        for i, row in enumerate(rows):
            if config is not None:
                row.update(config=config, label=label)
            mine = own[i * len(own) // len(rows)] if own else None   # a summed batch: one objective for all
            row["objective"] = None if mine is None else _num(mine)
            row["match"] = _num(match[i])
            row["tv"] = round(float(tv[i]), 6)
    return rows


def _in_image_order(rec, images):
    """A batch attack returns its B images in any order: pair each true image with the
    reconstruction that minimises the total squared error (an assignment; what an attacker's
    order is worth, not a guess), and reorder images and labels to match."""
    from dataclasses import replace

    from scipy.optimize import linear_sum_assignment
    got = rec.images.detach().cpu().double().flatten(1)
    cost = torch.cdist(images.double().flatten(1), got).pow(2).numpy()
    _, cols = linear_sum_assignment(cost)
    order = torch.as_tensor(cols)
    labels = rec.labels[order.to(rec.labels.device)] if rec.labels is not None and len(rec.labels) == len(order) else rec.labels
    return replace(rec, images=rec.images[order.to(rec.images.device)], labels=labels)


def _num(v: float) -> float | None:
    v = float(v)
    return None if v != v else float(f"{v:.6g}")


def best_per_image(results: list[dict], names) -> dict:
    """Oracle best: the highest PSNR per image (needs the true image)."""
    best = {}
    for r in results:
        if r["image"] not in best or r["psnr"] > best[r["image"]]["psnr"]:
            best[r["image"]] = {"attack": r["attack"], "psnr": r["psnr"], "ssim": r["ssim"],
                                **{k: r[k] for k in ("config", "label", "match") if k in r}}
    return {n: best[n] for n in names if n in best}


def selected_per_image(results: list[dict], names) -> dict:
    """Objective-selected: the lowest gradient match per image (what an attacker can choose);
    rows without a match (NaN) never win, ties keep the first row."""
    best = {}
    for r in results:
        m = r.get("match")
        if m is None:
            continue
        if r["image"] not in best or m < best[r["image"]]["match"]:
            best[r["image"]] = {"attack": r["attack"], "psnr": r["psnr"], "match": m,
                                **{k: r[k] for k in ("config", "label") if k in r}}
    return {n: best[n] for n in names if n in best}


def load_seeded(spec: str, opts: ValidateOptions):
    """The model, its weights drawn from ``seed`` (the global RNG is left as it was), in eval mode.

    Seeding the construction makes a validation independent of what ran before it in the same
    process (a zoo run, a test session): the same spec and seed give the same weights.
    """
    from archscan.model.load import load_model, load_weights
    loaded = load_model(spec, opts.scan.model_args, opts.scan.num_classes, opts.scan.seed)  # seeded in fork_rng
    if loaded.module is None:
        raise InputError(f"{spec}: validate needs the model's source (.pt2 programs cannot be re-run for attacks)")
    if opts.scan.weights:
        load_weights(loaded.module, opts.scan.weights)
    return loaded.module.eval()


def validate(spec: str, opts: ValidateOptions, grid_path: str | None = None) -> dict:
    """Attack ``spec`` with every requested attack (over its grid with ``opts.budget``); return
    the validation report dict."""
    check_attacks(opts.attacks)
    check_budget(opts.budget)
    device = check_device(opts.device)
    pred, why = prediction(spec, opts.scan)
    model = load_seeded(spec, opts)
    images, names = load_batch(opts, opts.scan.input_shape)
    with torch.no_grad():
        classes = model(images[:1].float()).shape[-1]
    target = make_client(model, images, opts, classes, device)
    runs, results = [], []
    for name in opts.attacks:
        if opts.budget is None:
            rec, note = run_attack(name, target, opts)
            runs.append({"attack": name, "skipped": rec.skipped, "seconds": round(rec.seconds, 3),
                         "iterations": rec.iterations, "settings": _plain(rec.settings), "note": note})
            results += score_reconstruction(rec, images, names, target)
            if not rec.skipped:
                runs[-1]["_images"] = rec.images.detach().cpu().float()
            continue
        runs.append(_run_tuned(name, target, opts, images, names, results))
    best = best_per_image(results, names)
    report = _assemble(spec, opts, pred, why, names, runs, results, best, device)
    if grid_path:
        from archscan.validate.plots import reconstruction_grid
        report["grid_png"] = reconstruction_grid(images, names, runs, grid_path)
    for r in runs:
        r.pop("_images", None)
    return report


def _run_tuned(name: str, target, opts: ValidateOptions, images, names, results: list) -> dict:
    """Run ``name``'s grid, append one result row per configuration and image to ``results`` and
    return the attack's run record (its grid, per-image oracle and selected configurations)."""
    from archscan.validate.attacks import ATTACKS
    from archscan.validate.attacks.tuning import label
    start = time.perf_counter()
    pairs, note = run_grid(name, target, opts)
    seconds = time.perf_counter() - start
    defaults = ATTACKS[name].defaults
    grid, mine, kept = [], [], {}
    for i, (conf, rec) in enumerate(pairs):
        cid, text = f"{name}#{i}", label(name, {**defaults, **conf}, defaults)
        grid.append({"config": cid, "label": text, "settings": _plain({**defaults, **conf}),
                     "skipped": rec.skipped, "seconds": round(rec.seconds, 3), "iterations": rec.iterations})
        rows = score_reconstruction(rec, images, names, target, cid, text)
        mine += rows
        if not rec.skipped:
            kept[cid] = rec.images.detach().cpu().float()
    results += mine
    skipped = pairs[0][1].skipped if pairs and all(r.skipped for _, r in pairs) else None
    run = {"attack": name, "skipped": skipped, "seconds": round(seconds, 3), "budget": opts.budget,
           "configurations": len(pairs), "iterations": sum(r.iterations for _, r in pairs),
           "settings": grid[0]["settings"] if grid else {}, "note": note, "grid": grid,
           "oracle": best_per_image(mine, names), "selected": selected_per_image(mine, names)}
    if kept:  # the grid figure shows each attack's oracle-best configuration per image
        run["_images"] = torch.stack([kept[run["oracle"][n]["config"]][i] for i, n in enumerate(names)])
    return run


def _plain(settings: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in settings.items()}


def _assemble(spec, opts, pred, why, names, runs, results, best, device) -> dict:
    from archscan.report.records import now, tool_info
    best_psnr = statistics.median(b["psnr"] for b in best.values()) if best else None
    best_ssim = statistics.median(b["ssim"] for b in best.values()) if best else None
    selected = selected_per_image(results, names)
    selected_psnr = statistics.median(b["psnr"] for b in selected.values()) if selected else None
    return {
        "schema_version": "1.0", "kind": "validation", "tool": tool_info(), "created": now(),
        "model": {"spec": spec, "input_shape": list(opts.scan.input_shape)},
        "threat_model": opts.scan.threat_model(), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "images": {"source": opts.images or "bundled photos (scikit-image)", "names": names,
                   "scaling": "[0, 1], PSNR peak 1"},
        "prediction": pred, "prediction_skipped": why,
        "attacks": [{k: v for k, v in r.items() if k != "_images"} for r in runs],
        "budget": opts.budget,
        "selection": {"best": "oracle: highest PSNR over every attack and configuration (needs the true image; "
                              "the upper bound on attacker strength, used by the zoo calibration)",
                      "selected": "realisable: lowest gradient match 1 - cos(grad(x_hat), grad*) over every "
                                  "attack and configuration (needs only the observed gradients)"},
        "results": results, "best": best, "best_psnr": best_psnr, "best_ssim": best_ssim,
        "selected": selected, "selected_psnr": selected_psnr,
    }
