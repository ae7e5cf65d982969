"""The records of ``archscan suggest`` / ``scan --suggest``: a candidate edit, what its rescan
measured, the whole search.  ``archscan.suggest`` builds them; the report carries them; every
formatter renders them.  Pure data: applying an edit lives in ``suggest/edits.py``."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Edit:
    kind: str                 # no-bias | activation | stride | pool | filters | batch-size | bn-train
    change: str               # what changes, in words: "fc: remove the bias"
    cost: float
    target: str | None = None  # module path (architecture edits); None for a setting
    layers: tuple = ()         # the report's layer / node names the edit changes
    source: str | None = None  # file:line of the first of them
    value: object = None       # the activation type's name, the new batch size ...

    @property
    def architecture(self) -> bool:
        return self.kind not in ("batch-size", "bn-train")

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.target or self.value}"

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "change": self.change, "cost": round(self.cost, 4),
                "layers": list(self.layers), "module": self.target, "source": self.source,
                "architecture": self.architecture}


@dataclass(frozen=True)
class Outcome:
    """One candidate edit and what the rescan measured (``error`` when it could not be applied)."""
    edit: Edit
    error: str = ""
    verdict: str | None = None
    decided_by: str | None = None
    leakage_score: float | None = None
    predicted_psnr: float | None = None
    gate_passed: bool | None = None
    works: bool = False

    def to_dict(self) -> dict:
        return {**self.edit.to_dict(), "error": self.error, "verdict": self.verdict, "decided_by": self.decided_by,
                "leakage_score": self.leakage_score, "predicted_psnr": self.predicted_psnr,
                "gate_passed": self.gate_passed, "works": self.works}


@dataclass(frozen=True)
class Suggestions:
    target: str                   # "gate": the gate must pass; "verdict": a better verdict
    baseline: dict                # the model's own verdict, leakage score, predicted PSNR, gate
    outcomes: tuple[Outcome, ...]
    complete: bool                # every candidate was rescanned (False: stopped at the first that works)
    seconds: float

    @property
    def best(self) -> Outcome | None:
        """The smallest edit that works (candidates are tried smallest first)."""
        return next((o for o in self.outcomes if o.works), None)

    def to_dict(self) -> dict:
        best = self.best
        return {"target": self.target, "baseline": self.baseline, "best": best.edit.id if best else None,
                "complete": self.complete, "tried": len(self.outcomes),
                "outcomes": [o.to_dict() for o in self.outcomes], "seconds": round(self.seconds, 3)}

    __json__ = to_dict
