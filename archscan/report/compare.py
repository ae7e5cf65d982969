"""`archscan compare`: several models scanned under one threat model, side by side.

The comparison is a plain dict (``kind: "comparison"``): one row per model (verdict, leakage
score, COPA index, predicted PSNR, worst layer) and one row per layer name, aligned across the
models, with each model's figures for that layer and whether they differ.  Layers with the same
name and type in every model are the shared structure (e.g. two widths of one conv).
"""
from __future__ import annotations

from pathlib import Path

from archscan.config.values import spec_file
from archscan.errors import InputError

SCHEMA_VERSION = "1.0"
CELL_KEYS = ("unknowns", "rank", "deficiency", "attack_rank", "status")


def precheck(specs: list[str]) -> None:
    """Missing model files fail before the first (slow) scan starts."""
    for spec in specs:
        where = spec_file(spec)
        if (where.endswith((".py", ".pt2")) or "/" in where) and not Path(where).is_file():
            raise InputError(f"{where}: no such file")


def comparison(reports: list[dict]) -> dict:
    labels = model_labels([r["model"]["spec"] for r in reports])
    diff = layer_diff(reports)
    first = reports[0]
    return {"schema_version": SCHEMA_VERSION, "kind": "comparison", "created": first.get("created", ""),
            "tool": first.get("tool", {}), "threat_model": first["threat_model"],
            "models": [model_row(r, label) for r, label in zip(reports, labels)],
            "layers": diff, "shared_layers": sum(1 for row in diff if row["shared"])}


def model_labels(specs: list[str]) -> list[str]:
    """The factory names when they tell the models apart, else the full specs."""
    short = [s.rpartition(":")[2] if ":" in s and not s.endswith(".pt2") else Path(s).name for s in specs]
    return short if len(set(short)) == len(short) else list(specs)


def worst_layer(report: dict) -> dict | None:
    """The layer nearest the image whose input the attack determines the most (highest fraction)."""
    best = None
    for layer in report["layers"]:
        frac = layer["attack"]["rank"] / layer["unknowns"] if layer["unknowns"] else 0.0
        if frac > 0 and (best is None or frac > best["fraction"] + 1e-12):
            best = {"name": layer["name"], "status": layer["status"], "fraction": round(frac, 4),
                    "source": layer.get("source")}
    return best


def model_row(report: dict, label: str) -> dict:
    s = report["scores"]
    return {"label": label, "spec": report["model"]["spec"], "class": report["model"]["class"],
            "verdict": s["verdict"], "leakage_score": s["leakage_score"], "copa_index": s["copa_index"],
            "ra_index": s["ra_index"], "predicted_psnr": s["predicted_psnr"], "image": report["image"],
            "worst_layer": worst_layer(report)}


def _cell(layer: dict | None) -> dict | None:
    if layer is None:
        return None
    return {"type": layer["type"], "in_shape": layer["in_shape"], "out_shape": layer["out_shape"],
            "unknowns": layer["unknowns"], "rank": layer["rank"], "deficiency": layer["deficiency"],
            "attack_rank": layer["attack"]["rank"], "attack_rows": layer["attack"]["rows"], "status": layer["status"]}


def layer_order(reports: list[dict]) -> list[str]:
    """Every layer name once, in the order they first appear (forward order of each model)."""
    return list(dict.fromkeys(l["name"] for r in reports for l in r["layers"]))


def layer_diff(reports: list[dict]) -> list[dict]:
    by_name = [{l["name"]: l for l in r["layers"]} for r in reports]
    rows = []
    for name in layer_order(reports):
        cells = [_cell(m.get(name)) for m in by_name]
        present = [c for c in cells if c is not None]
        shared = len(present) == len(cells) and len({c["type"] for c in present}) == 1
        changed = not shared or len({tuple(c[k] for k in CELL_KEYS) for c in present}) > 1
        rows.append({"name": name, "type": present[0]["type"], "shared": shared, "changed": changed, "cells": cells})
    return rows
