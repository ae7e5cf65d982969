"""Versioned JSON (schema in docs/report-schema.md)."""
import json


def render(report, stream) -> None:
    """``report``: a ScanReport (its ``to_dict()``: the one place the scan report becomes a dict)."""
    json.dump(report.to_dict(), stream, indent=2, sort_keys=False, default=str)
    stream.write("\n")
