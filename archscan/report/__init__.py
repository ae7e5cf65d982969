"""The report stage: typed records, per-layer entries and findings, the finding catalogue,
the gate and comparisons."""
