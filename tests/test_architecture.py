"""The package layout is the pipeline: imports point down it, never up, and never in a cycle.

Every import is read from the source (function-level imports included), so a lazy import cannot
hide a cycle.  archscan reaches the rank engine only through ``archscan_kernels``' public names.
"""
from __future__ import annotations

import ast
from pathlib import Path

import archscan_kernels
import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "archscan"

# Lowest first: a module may import modules of its own stage or of a lower one.
STAGES = {
    "errors": 0, "config": 0, "images": 0, "terms": 0, "defences": 0, "fedavg": 0,
    "layers": 1,
    "model": 2,
    "analysis": 3,
    "report": 4,
    "formatters": 5,
    "pipeline": 6,
    "validate": 7, "suggest": 7,
    "api": 8,
    "cli": 9, "pytest_plugin": 9,
    "__main__": 10,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every import statement of the file."""
    out = []
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "errors"   # `archscan` itself: the version only


def resolved(target: str, names: list[str]) -> list[str]:
    """``from archscan.x import y`` imports module archscan.x.y when that is a module."""
    mods = []
    for n in names or [None]:
        sub = f"{target}.{n}" if n else target
        path = ROOT / sub.replace(".", "/")
        mods.append(sub if (path.with_suffix(".py").exists() or (path / "__init__.py").exists()) else target)
    return mods


def archscan_edges() -> list[tuple[str, str, str]]:
    edges = []
    for path in sources():
        me = module_name(path)
        for target, names, line in imports(path):
            if target == "archscan" or target.startswith("archscan."):
                for mod in resolved(target, names):
                    edges.append((me, mod, f"{path.relative_to(ROOT)}:{line}"))
    return edges


def test_every_top_level_module_has_a_stage():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
            if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()}
    assert tops <= set(STAGES), f"give these a stage in STAGES: {sorted(tops - set(STAGES))}"


def test_imports_point_down_the_pipeline():
    upward = []
    for me, mod, where in archscan_edges():
        a, b = stage(me), stage(mod)
        if mod != "archscan" and STAGES[b] > STAGES[a]:
            upward.append(f"{where}: {me} ({a}) imports {mod} ({b})")
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    g = nx.DiGraph()
    for me, mod, _ in archscan_edges():
        if me != mod and not me.startswith(mod + ".") and mod != "archscan":  # a package importing its parent's __init__
            g.add_edge(me, mod)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, cycles[:5]


def test_kernels_are_reached_through_their_public_names_only():
    public = set(archscan_kernels.__all__)
    bad = []
    for path in sources():
        for target, names, line in imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target.startswith("archscan_kernels."):
                bad.append(f"{where}: imports the private module {target}")
            elif target == "archscan_kernels":
                bad += [f"{where}: {n} is not in archscan_kernels.__all__" for n in names if n not in public]
    assert not bad, "\n".join(bad)


def test_every_package_is_installed():
    """pyproject.toml lists every package explicitly (package-dir maps kernels/): none may be missing."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
