"""`archscan sweep`: parse -> tasks -> Ray (or serial) into the result store -> report."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a sweep file (models x images x attacks x configurations x defences) "
                                     "on Ray or serially, resumably")
    p.add_argument("sweep", help="a sweep .toml (see docs/sweeps.md)")
    p.add_argument("-o", "--output", required=True,
                   help="the result store folder: one file per finished task; a rerun skips them")
    p.add_argument("--serial", action="store_true", help="run the tasks in this process, one after the other "
                                                         "(same results as Ray; no Ray needed)")
    p.add_argument("--ray-address", help="a running Ray cluster (e.g. 127.0.0.1:6379 or auto); default: start a "
                                         "local one with every core")
    p.add_argument("--gpus-per-task", type=float, default=None,
                   help="GPUs each task requests (default 1 when the sweep's device is cuda, else 0)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="the report on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run_sweep(args) -> int:
    from archscan.cli.boundary import model_output_to_stderr
    from archscan.errors import InputError
    from archscan.formatters.outputs import Output, check_outputs
    from archscan.validate import sweep as sw
    from archscan.validate.store import ResultStore
    spec = sw.read_sweep(args.sweep)
    out = Path(args.output)
    check_outputs([Output("json", str(out / "report.json"))], {"sweep file": args.sweep})
    if args.gpus_per_task is not None and args.gpus_per_task < 0:
        raise InputError(f"--gpus-per-task {args.gpus_per_task}: must be >= 0")
    gpus = args.gpus_per_task if args.gpus_per_task is not None else (1.0 if spec["device"].startswith("cuda") else 0.0)
    store = ResultStore(out)
    todo = sw.tasks(spec)
    with model_output_to_stderr():
        counts = sw.execute(todo, store, backend="serial" if args.serial else "ray", address=args.ray_address,
                            gpus_per_task=gpus, progress=_progress)
    rep = sw.report(spec, store)
    from archscan.formatters.validation_html import render as render_html
    texts = {"json": json.dumps(rep, indent=1, sort_keys=True) + "\n", "text": sw.render(rep)}
    (out / "report.json").write_text(texts["json"])
    (out / "report.txt").write_text(texts["text"])
    (out / "report.html").write_text(render_html(rep))
    print(f"archscan: {counts['ran']} task(s) ran on {counts['backend']}, {counts['cached']} were already in "
          f"{out}", file=sys.stderr)
    sys.stdout.write(texts[args.format])
    return 0


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\r[{done}/{total}] tasks", end="" if done < total else "\n", file=sys.stderr, flush=True)
