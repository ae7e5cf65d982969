"""The catalogue of rule ids: one stable id per kind of finding or gate check.

Findings are made in ``report/layers.py``, gate checks in ``report/gate.py``; formatters (SARIF above all,
where GitHub keys alerts on the id) look the id up here.  Ids never change meaning and are never
reused; a test fails when a module emits an id missing from this table.
"""
from __future__ import annotations

from dataclasses import dataclass

TAGS = ("security", "privacy", "gradient-leakage", "federated-learning")


@dataclass(frozen=True)
class Rule:
    id: str
    name: str                # kebab-case, stable
    short: str               # one line
    full: str                # a paragraph
    level: str               # default SARIF level: error | warning | note
    security_severity: float  # 0.0-10.0, GitHub: >= 7 high, >= 4 medium, else low

    @property
    def tags(self) -> tuple[str, ...]:
        return TAGS + (("gate",) if self.id.startswith("AS2") else ())


_RULES = (
    Rule("AS001", "image-determined", "The training image is fully determined by the shared gradients",
         "The gradients shared in one training step determine every pixel of the input image: an attacker "
         "who knows the architecture and the weights reconstructs it exactly (R-GAP style). Reduce what "
         "the layer nearest the image exposes (fewer output channels or a larger stride in the first "
         "layers), or break the chain with pooling after a non-invertible activation.", "error", 8.5),
    Rule("AS002", "layer-leaks-input", "A layer leaks its input on its own through its weight and bias gradients",
         "A Linear layer with bias applied at one position exposes its input x = dW_j / db_j for any "
         "output j with a non-zero bias gradient: the layer's input is recovered without solving any system.",
         "warning", 6.5),
    Rule("AS003", "layer-input-determined", "A layer's input is fully determined by its gradient system",
         "The forward rows W and gradient rows K the attacker can form at this layer have full column rank: "
         "the layer's input is recovered exactly and the attack can continue below it.", "warning", 5.0),
    Rule("AS004", "activation-gradient-exposed", "A learned additive tensor exposes an activation's gradient",
         "A learned tensor added to an activation of its own size (e.g. a positional embedding) has that "
         "activation's gradient as its own gradient, which the client shares.", "warning", 5.0),
    Rule("AS005", "optimisation-recoverable", "Optimisation attacks can recover the training image",
         "The spectrum of d(shared gradients)/d(image) at natural images shows that gradient matching "
         "(Inverting Gradients, DLG) resolves most of the image's variance, even where the layer-by-layer "
         "chain is blocked (ReLU, pooling): the prediction is the prior-weighted energy of the directions "
         "whose singular value is above the attack's calibrated resolution (docs/scores.md).", "error", 8.0),
    Rule("AS010", "layer-input-partial", "A layer's input is partially determined",
         "The attacker's rows at this layer have a rank below the number of unknowns: part of the input "
         "is determined, a null space of the reported deficiency is not.", "note", 3.0),
    Rule("AS020", "batch-exceeds-separable", "The batch exceeds what a layer's gradient rows can separate",
         "At the configured batch size the gradient rows of this layer cannot determine every sample; "
         "scores are computed at batch 1, the attacker-favourable case.", "note", 2.0),
    Rule("AS030", "chain-only-verdict", "The verdict comes from the layer-by-layer chain only",
         "The optimisation-attack view was switched off (--local off). Optimisation attacks (DLG, Inverting "
         "Gradients) solve the whole system at once and may recover more than the layer chain shows, so a "
         "model that the chain calls RESISTANT is reported UNVERIFIED.", "note", 3.0),
    Rule("AS031", "optimisation-view-not-run", "The optimisation-attack view could not run",
         "The estimate of what optimisation attacks recover did not run or finish (over its time or memory "
         "budget, an op without a second derivative, a program that cannot be differentiated). A model no "
         "view finds leaking is then UNVERIFIED, never RESISTANT; give a larger --local-budget or a GPU.",
         "warning", 5.0),
    Rule("AS100", "unsupported-op", "An op no rule handles (treated as transparent to the attacker)",
         "The traced graph contains an op archscan has no rule for. It is assumed to let the attacker "
         "through (conservative) and counts against coverage.", "warning", 4.0),
    Rule("AS101", "rank-bounded", "A rank was bounded, not computed exactly",
         "The rank engine could not certify the exact rank; the upper bound is used (attacker-favourable).",
         "note", 1.0),
    Rule("AS102", "ambiguous-activation", "An activation with two pre-images is assumed resolved",
         "The activation has two pre-images for negative outputs; archscan assumes the attacker resolves "
         "them (conservative).", "note", 1.0),
    Rule("AS200", "gate-fail-under", "The resistance score is below the configured minimum (--fail-under)",
         "Gate: the resistance score (1 - leakage score) is below the threshold set by --fail-under or "
         "fail-under in [tool.archscan]. With --suggest (or suggest = \"on-fail\" in [tool.archscan], which "
         "`archscan init` writes) archscan rescans small changes of the model and names the layers whose "
         "measured change passes the gate, with the smallest fix in the message; otherwise the layers named are "
         "those through which the attack reaches the image. `archscan suggest MODEL` tries every change.",
         "error", 8.0),
    Rule("AS201", "gate-fail-on", "The verdict reaches the configured failing verdict (--fail-on)",
         "Gate: the model's verdict is at or above the one set by --fail-on (partial or leaks). With "
         "--suggest (suggest = \"on-fail\" in [tool.archscan]) the layers named are those whose rescanned change "
         "passes the gate and the message gives the smallest such fix; otherwise they are the layers through "
         "which the attack reaches the image. `archscan suggest MODEL` tries every change.", "error", 8.0),
    Rule("AS202", "gate-baseline-regression", "Leakage regressed against the baseline report (--baseline)",
         "Gate: compared with the stored baseline report, the leakage score or the verdict got worse, or a "
         "layer's input became more determined. The layers named are those that changed.", "error", 8.0),
)

RULES: dict[str, Rule] = {r.id: r for r in _RULES}


def rule(rule_id: str) -> Rule:
    """The catalogued rule, or a generic one for an id this version does not know (never fails)."""
    return RULES.get(rule_id) or Rule(rule_id, f"rule-{rule_id.lower()}", rule_id, rule_id, "warning", 5.0)


def rule_page(r: Rule) -> str:
    """One rule as Markdown (``archscan rule ID`` and ``docs/rules.md``)."""
    return (f"## {r.id} {r.name}\n\n**{r.short}.** {r.full}\n\n"
            f"Default level `{r.level}`, security severity {r.security_severity:.1f}; tags {', '.join(r.tags)}.\n")


def rules_document() -> str:
    """docs/rules.md: every rule, in id order (a test keeps the file in step with this table)."""
    head = ("# archscan rules\n\nEvery finding and gate check has a stable id; ids never change meaning "
            "and are never reused. `archscan rule ID` prints one; SARIF results link here.\n")
    return "\n".join([head] + [rule_page(RULES[i]) for i in sorted(RULES)])

