"""Versioned JSON (schema in docs/report-schema.md)."""
import json


def render(report: dict, stream) -> None:
    json.dump(report, stream, indent=2, sort_keys=False, default=str)
    stream.write("\n")
