"""`[tool.archscan]` in pyproject.toml: found by walking up from the working directory, checked key by
key, merged under the command line (a flag given on the command line always wins).

Keys are the long option names, dashes or underscores alike (``input-shape`` = ``input_shape``).
Relative paths in the file (model file, weights, baseline, output files) are relative to the
pyproject.toml that holds them, wherever archscan runs from.
"""
from __future__ import annotations

import difflib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from archscan.config.values import check_batch_size, parse_shape
from archscan.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# key -> accepted TOML types; the value check happens before any work starts
KEYS = {
    "model": (str,), "input_shape": (str, list), "num_classes": (int,), "model_args": (dict,),
    "weights": (str,), "batch_size": (int,), "labels": (str,), "bn_mode": (str,),
    "relu_active": (float, int), "seed": (int,), "local": (str,), "local_budget": (float, int), "device": (str,), "strict": (bool,), "fail_under": (float, int), "fail_on": (str,),
    "baseline": (str,), "exit_zero": (bool,), "format": (str, list), "output": (str,), "quiet": (bool,),
    "select": (str, list), "ignore": (str, list), "defence": (str, list),
    "fedavg_steps": (int,), "fedavg_lr": (float, int), "suggest": (str,),
}
CHOICES = {"labels": ("known", "inferred"), "bn_mode": ("eval", "train"), "fail_on": ("partial", "leaks"),
           "local": ("auto", "on", "off"), "suggest": ("off", "on-fail", "on")}
PATH_KEYS = ("weights", "baseline", "output")


@dataclass(frozen=True)
class FileConfig:
    path: Path | None = None                     # the pyproject.toml read, None when none was
    values: dict = field(default_factory=dict)   # checked, normalised keys; paths made usable from cwd


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml at or above ``start``, not above the repository root (a folder
    holding ``.git``), when it has a [tool.archscan] table: a file of another project further up
    never applies, and a broken one there never stops archscan."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate if "archscan" in _read(candidate).get("tool", {}) else None
        if (folder / ".git").exists():
            return None
    return None


def load(path: str | Path | None = None, start: Path | None = None) -> FileConfig:
    """The [tool.archscan] table of ``path`` (or of the discovered pyproject.toml), checked."""
    found = Path(path) if path else find_pyproject(start)
    if found is None:
        return FileConfig()
    if not found.is_file():
        raise InputError(f"--config {found}: no such file")
    data = _read(found)
    table = data.get("tool", {}).get("archscan")
    if table is None:
        raise InputError(f"--config {found}: has no [tool.archscan] table{_misplaced_table(data)}")
    if not isinstance(table, dict):
        raise InputError(f"{found}: tool.archscan must be a table ([tool.archscan]), not {type(table).__name__}")
    values = {_key(found, k, v): v for k, v in table.items()}
    for key, value in values.items():
        _check(found, key, value)
    _check_outputs_inside(found, values)
    return FileConfig(found, _resolve_paths(found.parent, values))


def _misplaced_table(data: dict) -> str:
    """A hint when the keys are there under another name ([archscan], [tool.arch-scan], ...)."""
    for where, table in (("[archscan]", data.get("archscan")), *(
            (f"[tool.{k}]", v) for k, v in data.get("tool", {}).items() if k != "archscan")):
        if isinstance(table, dict) and difflib.get_close_matches("archscan", [where.strip("[]").split(".")[-1]], 1, 0.75):
            return f" (found {where}: rename it [tool.archscan])"
    return ""


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({e})") from e
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from e


def _key(path: Path, key: str, value=None) -> str:
    """The normalised key; an unknown one is refused with the nearest known key, and a sub-table
    ([tool.archscan.something]) is named as misplaced."""
    norm = key.replace("-", "_")
    if norm in KEYS:
        return norm
    dashed = sorted(k.replace("_", "-") for k in KEYS)
    if isinstance(value, dict):
        inner = [k for k in value if k.replace("-", "_") in KEYS]
        if inner:
            raise InputError(f"{path}: [tool.archscan.{key}] is misplaced: write {', '.join(inner)} directly "
                             f"under [tool.archscan] (archscan reads no sub-tables but model-args)")
    close = difflib.get_close_matches(norm.replace("_", "-"), dashed, 1, 0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(dashed)}"
    raise InputError(f"{path}: [tool.archscan] unknown key {key!r} ({hint})")


def _check(path: Path, key: str, value) -> None:
    name = key.replace("_", "-")
    if isinstance(value, bool) and bool not in KEYS[key] or not isinstance(value, KEYS[key]):
        kinds = " or ".join(t.__name__ for t in KEYS[key])
        raise InputError(f"{path}: [tool.archscan] {name} = {value!r}: expected {kinds}")
    if key in CHOICES and value not in CHOICES[key]:
        raise InputError(f"{path}: [tool.archscan] {name} = {value!r}: choose from {', '.join(CHOICES[key])}")
    if key == "format":
        items = [value] if isinstance(value, str) else value
        if not all(isinstance(v, str) for v in items):
            raise InputError(f"{path}: [tool.archscan] format: expected a string or a list of strings")
    if key == "input_shape":
        parse_shape(value, f"{path}: [tool.archscan] input-shape =")
    if key == "batch_size":
        check_batch_size(value, f"{path}: [tool.archscan] batch-size =")
    if key in ("fedavg_steps", "fedavg_lr"):
        from archscan.fedavg import local_steps
        local_steps(value if key == "fedavg_steps" else None, value if key == "fedavg_lr" else None,
                    f"{path}: [tool.archscan] {name} = {value!r}")


def _check_outputs_inside(path: Path, values: dict) -> None:
    """Report files named in a config stay inside its project (the folder of the pyproject.toml):
    a repository's config must not write into the home directory or beside other projects.  The
    command line can still write anywhere."""
    items = [values["output"]] if "output" in values else []
    formats = values.get("format", [])
    for item in [formats] if isinstance(formats, str) else formats:
        fmt, sep, target = item.partition(":")
        if sep and target and target != "-":
            items.append(target)
    root = path.parent.resolve()
    for target in items:
        full = Path(target).expanduser()
        full = (full if full.is_absolute() else root / full).resolve()
        if full != root and root not in full.parents:
            raise InputError(f"{path}: [tool.archscan] writes {target!r} outside this project ({root}); "
                             f"name such a path on the command line instead")


def _resolve_paths(base: Path, values: dict) -> dict:
    out = dict(values)
    for key in PATH_KEYS:
        if key in out:
            out[key] = near(base, out[key])
    if "model" in out:
        out["model"] = resolve_model(base, out["model"])
    if "format" in out:
        items = [out["format"]] if isinstance(out["format"], str) else out["format"]
        out["format"] = [_resolve_format(base, f) for f in items]
    if isinstance(out.get("input_shape"), list):
        out["input_shape"] = ",".join(str(v) for v in out["input_shape"])
    return out


def near(base: Path, value: str) -> str:
    """A path written relative to ``base``, re-expressed relative to the working directory."""
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = base / p
    try:
        rel = os.path.relpath(p)
    except ValueError:  # another drive (Windows)
        return str(p)
    return rel if not rel.startswith("..") else str(p.resolve())


def resolve_model(base: Path, spec: str) -> str:
    """file.py:NAME and .pt2 specs are paths; package.module:NAME is left alone."""
    if spec.endswith(".pt2"):
        return near(base, spec)
    where, sep, name = spec.rpartition(":")
    if sep and (where.endswith(".py") or "/" in where or "\\" in where):
        return f"{near(base, where)}:{name}"
    return spec


def _resolve_format(base: Path, item: str) -> str:
    fmt, sep, target = item.partition(":")
    return f"{fmt}:{near(base, target)}" if sep and target and target != "-" else item


def merge(cli: dict, file: FileConfig, defaults: dict) -> dict:
    """Command line over file over defaults; ``None`` on the command line means not given.
    ``model_args`` merge key by key (the command line's keys win)."""
    out = {}
    for key, default in defaults.items():
        given = cli.get(key)
        out[key] = given if given is not None else file.values.get(key, default)
    if "model_args" in defaults:
        out["model_args"] = {**file.values.get("model_args", {}), **(cli.get("model_args") or {})}
    return out


def load_baseline(path: str) -> dict:
    """A stored JSON report (``archscan scan --format json``), checked enough to compare against."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--baseline {path}: no such file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"--baseline {path}: not a JSON report ({e})") from e
    if not isinstance(data, dict) or not {"scores", "layers", "schema_version"} <= set(data):
        raise InputError(f"--baseline {path}: not an archscan report (write one with --format json)")
    if str(data["schema_version"]).split(".")[0] not in ("1", "2"):
        raise InputError(f"--baseline {path}: schema_version {data['schema_version']} is not supported")
    return data


TEMPLATE = """\
[tool.archscan]
# archscan reads this table wherever it runs below this file; command-line flags override it.
# Relative paths are relative to this file.
#
# The model: path/to/file.py:NAME, package.module:NAME (an nn.Module subclass or a factory), or a
# torch.export .pt2 file; and one image's shape C,H,W (no batch dimension).
{model}
{input_shape}
# num-classes = 10                    # passed to the factory when it takes num_classes
# model-args = {{ width = 16 }}         # extra keyword arguments for the factory
# weights = "checkpoints/model.pt"    # a state_dict, loaded with weights_only=True

# Threat model (the defaults are shown).
# batch-size = 1                      # scores are for batch 1, the attacker-favourable case
# labels = "inferred"                 # "known" | "inferred" (iDLG)
# bn-mode = "eval"                    # "eval" | "train"
# relu-active = 0.5                   # active fraction of ReLU outputs
# seed = 0
# local = "auto"                      # the optimisation-attack view: "auto" | "on" | "off" (off: never RESISTANT)
# local-budget = 60                   # its time budget in seconds (default: sized to the model, at most 600)
# device = "cpu"                      # where it runs: "cpu" | "cuda" | "cuda:N"
# strict = false                      # an op no layer family handles is an error, not a finding
# defence = ["dp:sigma=0.01,clip=1"]  # what the client applies to its update: dp, prune:ratio=R, quant:bits=B
# fedavg-steps = 1                    # FedAvg: local SGD steps before the client shares its weight change
# fedavg-lr = 0.01                    # their learning rate (on the loss summed over the client's batch)

# Gate: `archscan scan` exits 1 when a check fails, naming the layers responsible.
fail-on = "leaks"                     # "partial" (fails UNVERIFIED, PARTIAL and LEAKS) | "leaks"
# fail-under = 0.5                    # minimum resistance score = 1 - leakage score
# baseline = "archscan-baseline.json" # a stored `--format json` report: fail only on regressions
# exit-zero = false                   # report only, never exit 1
suggest = "on-fail"                   # when the gate fails, rescan small changes and name the smallest
#                                     # that passes it ("off" | "on-fail" | "on"; `archscan suggest` tries all)
# select = ["AS00", "AS02"]          # report only these findings (ids or prefixes)
# ignore = ["AS030"]                  # hide these (also `# archscan: ignore[AS003]` on a layer's line);
#                                     # neither changes the verdict or the gate

# Outputs: FORMAT or FORMAT:PATH; formats text, json, sarif, junit, markdown, html, github, gitlab.
# format = ["text", "sarif:archscan.sarif", "markdown:archscan.md"]
"""


def template(model: str | None = None, input_shape: str | None = None) -> str:
    """The commented default [tool.archscan] table (model and shape filled in when given)."""
    m = f"model = {json.dumps(model)}" if model else '# model = "models/net.py:build_model"'
    if input_shape:
        shape = "input-shape = [" + ", ".join(map(str, parse_shape(input_shape))) + "]"
    else:
        shape = "# input-shape = [3, 32, 32]"
    return TEMPLATE.format(model=m, input_shape=shape)


def write_template(path: Path, model: str | None = None, input_shape: str | None = None) -> str:
    """Append the table to ``path`` (created when missing); refuse when one is already there."""
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    if existing:
        try:
            parsed = tomllib.loads(existing)
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{path}: not valid TOML ({e}); not modified") from e
        if "archscan" in parsed.get("tool", {}):
            raise InputError(f"{path}: already has a [tool.archscan] table; not modified")
    text = template(model, input_shape)
    joined = existing + ("\n" if existing and not existing.endswith("\n") else "") + ("\n" if existing else "") + text
    tomllib.loads(joined)  # what is written must parse
    path.write_text(joined, encoding="utf-8")
    return text
