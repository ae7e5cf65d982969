"""`archscan sweep SWEEP.toml`: models x images x attacks x configurations x defences as independent
tasks, run on Ray (a local cluster by default, any cluster with ``--ray-address``) or serially,
with results in a resumable store (:mod:`archscan.validate.store`).

The sweep file (TOML; paths relative to its folder)::

    seed = 0
    images = 2                       # bundled photos, or images = "synthetic" with n_images = K
    attacks = ["prior", "ig"]
    budget = "fast"                  # optional: each attack's tuning grid (validate --budget)
    set = { ig = { iterations = 200 } }       # optional: on top of every configuration (--set)
    configurations = { ig = [{ tv = 1e-2 }, { tv = 1e-4 }] }   # optional: an attack's own list
                                     # (instead of its budget grid or its one default)
    defences = [[], ["dp:sigma=0.01,clip=1"]] # optional: each entry one defended setting
    [[model]]                        # as in examples/manifest.toml
    spec = "paper_zoo.py:lenet5"
    input_shape = [3, 32, 32]
    num_classes = 10
    # or, instead of (or besides) [[model]] tables, a zoo manifest's fast models:
    manifest = "../examples/manifest.toml"
    select = ["lenet5", "cnn6_d"]    # optional: only these (factory names)

One task is one image attacked with one configuration of one attack under one defence setting,
or one prediction (scan) per model and defence setting.  A task is a pure function of its
description: it seeds everything from ``seed`` (weights, the attack, the defence's noise for that
image), runs single-threaded, and returns a record without timing, so the Ray and the serial run
give byte-identical stores and reports.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import tomllib

from archscan.errors import ArchscanError, InputError
from archscan.validate.store import ResultStore, task_key

SWEEP_KEYS = {"seed", "images", "n_images", "attacks", "budget", "set", "configurations", "defences", "model",
              "device", "manifest", "select"}
MAX_RETRIES = 3   # a task whose worker dies (killed, out of memory) runs again up to this often


# --------------------------------------------------------------------------------------------
# the sweep file -> tasks


def read_sweep(path: str) -> dict:
    """The parsed, checked sweep file; model specs made absolute (workers may run elsewhere)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such sweep file")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({e})") from e
    unknown = sorted(set(data) - SWEEP_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(SWEEP_KEYS))})")
    base = p.resolve().parent
    models = list(data.get("model") or []) + _manifest_models(path, base, data)
    if not models:
        raise InputError(f"{path}: no [[model]] table and no manifest")
    for i, m in enumerate(models):
        if "spec" not in m or "input_shape" not in m:
            raise InputError(f"{path}: [[model]] #{i + 1} needs spec and input_shape")
    from archscan.defences import parse_defences
    from archscan.validate.run import check_attacks, check_budget
    check_attacks(data.get("attacks", ["prior", "ig"]))
    check_budget(data.get("budget"))
    settings = [tuple(str(d) for d in parse_defences(s)) for s in data.get("defences", [[]])]
    configs = _check_configurations(path, data.get("configurations", {}), data.get("attacks", ["prior", "ig"]))
    return {
        "seed": int(data.get("seed", 0)), "images": data.get("images", 2), "n_images": data.get("n_images"),
        "attacks": list(data.get("attacks", ["prior", "ig"])), "budget": data.get("budget"),
        "set": data.get("set", {}), "configurations": configs, "defences": settings, "device": data.get("device", "cpu"),
        "models": [{"spec": _absolute(base, m["spec"]), "name": m["spec"].split(":")[-1],
                    "input_shape": list(m["input_shape"]), "num_classes": m.get("num_classes")} for m in models],
    }


def _manifest_models(path: str, base: Path, data: dict) -> list:
    """The fast models of ``manifest`` (specs relative to the repository holding it), ``select``ed."""
    if "manifest" not in data:
        if "select" in data:
            raise InputError(f"{path}: select needs a manifest")
        return []
    from archscan.validate.zoo import read_manifest
    entries = read_manifest(str((base / data["manifest"]).resolve()), include_slow=False)
    chosen = data.get("select")
    names = {e["spec"].split(":")[-1] for e in entries}
    for name in chosen or []:
        if name not in names:
            raise InputError(f"{path}: select {name!r} is not a fast model of {data['manifest']}")
    return [{**e, "spec": _resolved(e["resolved"])} for e in entries
            if chosen is None or e["spec"].split(":")[-1] in chosen]


def _resolved(spec: str) -> str:
    file, sep, factory = spec.rpartition(":")
    return f"{Path(file).resolve()}:{factory}" if sep and file.endswith(".py") else spec


def _check_configurations(path: str, configs: dict, attacks: list) -> dict:
    """``{attack: [settings, ...]}`` for attacks of the sweep, every key a setting of that attack."""
    from archscan.validate.attacks import ATTACKS
    for attack, items in configs.items():
        if attack not in attacks or not isinstance(items, list) or not items:
            raise InputError(f"{path}: configurations.{attack}: a non-empty list, for an attack in `attacks`")
        for c in items:
            bad = sorted(set(c) - set(ATTACKS[attack].defaults)) if isinstance(c, dict) else ["(not a table)"]
            if bad:
                raise InputError(f"{path}: configurations.{attack}: {bad[0]} is not a setting of {attack} "
                                 f"(settings: {', '.join(sorted(ATTACKS[attack].defaults))})")
    return configs


def _absolute(base: Path, spec: str) -> str:
    file, sep, factory = spec.rpartition(":")
    if not sep or not file.endswith(".py"):
        return spec                      # a module spec: importable wherever archscan is
    path = (base / file).resolve()
    if not path.is_file():
        raise InputError(f"[[model]] spec {spec!r}: no such file {path}")
    return f"{path}:{factory}"


def tasks(sweep: dict) -> list[dict]:
    """Every task of the sweep, in a fixed order (models, defences, then predictions before attacks)."""
    from archscan.validate.attacks.tuning import configurations
    source, n = _image_source(sweep)
    out = []
    for m in sweep["models"]:
        for defences in sweep["defences"]:
            common = {"model": m, "seed": sweep["seed"], "defences": list(defences), "device": sweep["device"]}
            out.append({"kind": "predict", **common})
            for attack in sweep["attacks"]:
                configs = _configs(sweep, attack, configurations)
                for c, settings in enumerate(configs):
                    for i in range(n):
                        out.append({"kind": "attack", **common, "images": {"source": source, "n": n, "index": i},
                                    "attack": attack, "config": c, "settings": settings})
    return out


def _configs(sweep: dict, attack: str, grid) -> list:
    """The attack's listed configurations, else its budget grid, else its one default; ``set`` on top."""
    extra = sweep["set"].get(attack, {})
    if attack in sweep.get("configurations", {}):
        return [{**c, **extra} for c in sweep["configurations"][attack]]
    return grid(attack, sweep["budget"], extra) if sweep["budget"] else [dict(extra)]


def _image_source(sweep: dict) -> tuple:
    images = sweep["images"]
    if isinstance(images, int):
        return None, images
    return images, int(sweep["n_images"] or 4)


# --------------------------------------------------------------------------------------------
# one task


def run_task(task: dict) -> dict:
    """The record of one task (no timing): a prediction or one image's reconstruction quality."""
    import torch
    torch.set_num_threads(1)
    return _predict(task) if task["kind"] == "predict" else _attack(task)


def _scan_options(task: dict, local: str = "auto"):
    from archscan.config import ScanOptions
    from archscan.defences import parse_defences
    m = task["model"]
    return ScanOptions(input_shape=tuple(m["input_shape"]), num_classes=m["num_classes"], seed=task["seed"],
                       defences=parse_defences(task["defences"]), local=local)


def _predict(task: dict) -> dict:
    from archscan.validate.run import prediction
    pred, why = prediction(task["model"]["spec"], _scan_options(task))
    return {"prediction": pred, "skipped": why}


def _attack(task: dict) -> dict:
    import torch

    from archscan.validate.attacks import ATTACKS, get_attack
    from archscan.validate.attacks.tuning import label
    from archscan.validate.run import ValidateOptions, load_batch, load_seeded, make_client, score_reconstruction
    scan = _scan_options(task, local="off")
    opts = ValidateOptions(scan=scan, images=task["images"]["source"], n_images=task["images"]["n"])
    model = load_seeded(task["model"]["spec"], opts)
    images, names = load_batch(opts, scan.input_shape)
    i = task["images"]["index"]
    x, name = images[i:i + 1], names[i]
    with torch.no_grad():
        classes = model(x.float()).shape[-1]
    target = make_client(model, x, opts, classes, torch.device(task["device"]), first_index=i)
    rec = get_attack(task["attack"], **task["settings"]).reconstruct(target, seed=scan.seed)
    defaults = ATTACKS[task["attack"]].defaults
    rows = score_reconstruction(rec, x, [name], target, f"{task['attack']}#{task['config']}",
                                label(task["attack"], {**defaults, **task["settings"]}, defaults))
    row = rows[0] if rows else {"attack": task["attack"], "image": name, "skipped": rec.skipped}
    row.pop("seconds", None)
    return {"row": row, "skipped": rec.skipped}


def timed(fn, task: dict) -> tuple[dict, float]:
    start = time.perf_counter()
    record = fn(task)
    return record, time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# running them


def execute(all_tasks: list, store: ResultStore, backend: str = "ray", address: str | None = None,
            gpus_per_task: float = 0.0, fn=run_task, progress=None) -> dict:
    """Run every task whose result the store lacks; return counts (total, done before, ran)."""
    keyed = [(task_key(t), t) for t in all_tasks]
    todo = [(k, t) for k, t in keyed if not store.has(k)]
    counts = {"tasks": len(keyed), "cached": len(keyed) - len(todo), "ran": 0, "backend": backend}
    if backend == "serial":
        for k, t in todo:
            record, seconds = timed(fn, t)
            store.put(k, {"task": t, **record}, seconds)
            counts["ran"] += 1
            _tick(progress, counts)
        return counts
    return _execute_ray(todo, store, address, gpus_per_task, fn, progress, counts)


def _execute_ray(todo, store, address, gpus_per_task, fn, progress, counts) -> dict:
    import os
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")     # a scan never phones home
    try:
        import ray
    except ImportError:
        raise InputError("Ray is not installed: pip install 'archscan[ray]', or run with --serial") from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": worker_env()})
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(f"--ray-address {address}: cannot connect ({str(e).splitlines()[0][:200]})") from e
    try:
        remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=MAX_RETRIES)(timed)
        pending = {remote.remote(fn, t): (k, t) for k, t in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            k, t = pending.pop(done[0])
            record, seconds = _get(ray, done[0])
            store.put(k, {"task": t, **record}, seconds)
            counts["ran"] += 1
            _tick(progress, counts)
    finally:
        if started:
            ray.shutdown()
    return counts


def _get(ray, ref):
    """A task's result; archscan's own errors raised in a worker come back as themselves (one
    clear line, exit 2), not wrapped in Ray's task error."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, ArchscanError):
            raise cause from None
        raise


def worker_env() -> dict:
    """Every task is single-threaded (one CPU each): BLAS and OpenMP pools of one thread, or
    OpenBLAS's spinning threads oversubscribe the cores (measured: a 12 s task took 300-400 s with
    four running on two cores); the driver's numba cache, when it set one."""
    import os
    env = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    if os.environ.get("NUMBA_CACHE_DIR"):
        env["NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"]
    return env


def _tick(progress, counts: dict) -> None:
    if progress is not None:
        progress(counts["cached"] + counts["ran"], counts["tasks"])


# --------------------------------------------------------------------------------------------
# the report: a pure function of the store


def report(sweep: dict, store: ResultStore) -> dict:
    """Per model and defence setting: the prediction, the oracle best per image over every attack
    and configuration, its median over images; Spearman over the rows (clipped at the 8-bit
    ceiling).  Tasks missing from the store are counted, never guessed."""
    from archscan.validate.zoo import QUALITY_CEILING_DB, clipped, spearman, spearman_interval
    every = tasks(sweep)
    keys = [task_key(t) for t in every]
    groups: dict = {}                       # (model name, defences) -> [(task, record)] found in the store
    for t, k in zip(every, keys):
        if store.has(k):
            groups.setdefault((t["model"]["name"], tuple(t["defences"])), []).append((t, store.get(k)))
    missing = sum(not store.has(k) for k in keys)
    rows = [_row(m, list(d), groups.get((m["name"], tuple(d)), [])) for m in sweep["models"] for d in sweep["defences"]]
    usable = [r for r in rows if r["predicted_psnr"] is not None and r["best_psnr"] is not None]
    pred, best = clipped([r["predicted_psnr"] for r in usable]), clipped([r["best_psnr"] for r in usable])
    return {"schema_version": "1.0", "kind": "sweep", "tasks": len(every), "missing": missing,
            "seed": sweep["seed"], "attacks": sweep["attacks"], "budget": sweep["budget"], "rows": rows,
            "quality_ceiling_db": round(QUALITY_CEILING_DB, 3),
            "spearman": spearman(pred, best), "spearman_interval": spearman_interval(pred, best, sweep["seed"])}


def _row(model: dict, defences: list, entries: list) -> dict:
    pred = next((rec.get("prediction") for t, rec in entries if t["kind"] == "predict"), None) or {}
    best: dict = {}
    for t, rec in entries:
        row = rec.get("row") or {}
        if t["kind"] != "attack" or "psnr" not in row:
            continue
        if row["image"] not in best or row["psnr"] > best[row["image"]]["psnr"]:
            best[row["image"]] = {k: row[k] for k in ("attack", "label", "psnr", "ssim") if k in row}
    psnrs = [b["psnr"] for b in best.values()]
    return {"model": model["name"], "defences": defences, "verdict": pred.get("verdict"),
            "predicted_psnr": pred.get("predicted_psnr"), "psnr_interval": pred.get("psnr_interval"),
            "best_psnr": statistics.median(psnrs) if psnrs else None,
            "best_ssim": statistics.median(b["ssim"] for b in best.values()) if best else None,
            "best": dict(sorted(best.items()))}


def render(rep: dict) -> str:
    lines = [f"{'model':<22} {'defences':<28} {'verdict':<11} {'pred dB':>8} {'best dB':>8} {'SSIM':>5}  best attack"]
    for r in rep["rows"]:
        d = ", ".join(r["defences"]) or "none"
        attacks = ", ".join(sorted({f"{b['attack']} {b.get('label', '')}".strip() for b in r["best"].values()}))
        lines.append(f"{r['model']:<22} {d:<28} {str(r['verdict']):<11} {_f(r['predicted_psnr']):>8} "
                     f"{_f(r['best_psnr']):>8} {_f(r['best_ssim'], 2):>5}  {attacks}")
    lines.append(f"tasks {rep['tasks']} ({rep['missing']} missing); Spearman (clipped at {rep['quality_ceiling_db']} dB): "
                 f"{rep['spearman']} (95% bootstrap {rep.get('spearman_interval')})")
    return "\n".join(lines) + "\n"


def _f(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
