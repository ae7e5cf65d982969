"""The project's vocabulary as enums: one spelling of every verdict, in one place.

Members are ``str`` subclasses, so they compare equal to their value, serialise to it in JSON and
print as it; the order of ``Verdict`` is the order of severity (the gate compares ranks).
"""
from __future__ import annotations

from enum import Enum


class _Term(str, Enum):
    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class Verdict(_Term):
    """What the model gives away, worst last.

    UNVERIFIED: no view found the image recoverable, but a view that could have (the optimisation
    attacks' estimate) did not run or finish; it is never a safe answer.
    """

    RESISTANT = "RESISTANT"
    UNVERIFIED = "UNVERIFIED"
    PARTIAL = "PARTIAL"
    LEAKS = "LEAKS"

    @property
    def rank(self) -> int:
        return list(Verdict).index(self)

    @classmethod
    def worst(cls, *verdicts: "Verdict") -> "Verdict":
        return max((cls(v) for v in verdicts), key=lambda v: v.rank)


class ViewStatus(_Term):
    """Whether the optimisation-attack view ran."""

    RAN = "ran"                  # estimated within its budget
    NOT_NEEDED = "not_needed"    # the chain already determines the image
    OFF = "off"                  # --local off: an explicit, recorded opt-out
    SKIPPED = "skipped"          # could not fit its budget (time or memory)
    FAILED = "failed"            # could not be computed (an op without a second derivative, a .pt2 ...)


class Determination(_Term):
    """How much of a tensor (a layer's input, the image) the attacker's rows determine."""

    BLOCKED = "blocked"          # nothing
    PARTIAL = "partial"          # a subspace; a null space of the reported deficiency is left
    DETERMINED = "determined"    # every entry
    LEAK_SOURCE = "leak_source"  # a layer that gives its input away on its own (dW / db), no solve needed
