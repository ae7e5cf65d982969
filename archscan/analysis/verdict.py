"""The model's verdict from its two views: what closed-form attacks solve layer by layer (the
chain) and what optimisation attacks recover (the Jacobian of the gradient map).  RESISTANT must be
earned: it needs both views, so a view that did not run makes the answer UNVERIFIED, never safe."""
from __future__ import annotations

from dataclasses import dataclass, field

from archscan import config
from archscan.defences import adds_noise, unmodelled_note
from archscan.fedavg import chain_note
from archscan.terms import Verdict, ViewStatus


def verdict_of(score: float) -> Verdict:
    """Thresholds on a leakage score (share of the image's variance recoverable)."""
    if score >= config.VERDICT_LEAKS:
        return Verdict.LEAKS
    return Verdict.PARTIAL if score >= config.VERDICT_PARTIAL else Verdict.RESISTANT


@dataclass(frozen=True)
class Quality:
    """A view's prediction: leakage score, expected MSE and PSNR of the reconstruction."""

    leakage_score: float
    predicted_mse: float
    predicted_psnr: float
    method: str
    prior_images: int

    @property
    def verdict(self) -> Verdict:
        return verdict_of(self.leakage_score)


@dataclass(frozen=True)
class ChainView:
    """Closed-form attacks: the layer chain from the output down to the image."""

    quality: Quality
    image_status: str            # determined | partial | blocked
    deficiency: int              # image directions the chain leaves undetermined
    masked: bool                 # known only on a ReLU's active entries
    via: str | None              # the layer that determines (part of) the image, if any
    stopped_at: str | None       # the op nearest the image where the chain loses the value


@dataclass(frozen=True)
class OptimisationView:
    """Optimisation attacks: what gradient matching resolves, from the spectrum of d(gradients)/d(image)."""

    status: ViewStatus
    reason: str = ""
    quality: Quality | None = None
    leakage_interval: tuple[float, float] | None = None
    psnr_interval: tuple[float, float] | None = None
    directions: dict | None = None      # recoverable directions: estimate, lo, hi, of
    details: dict = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict | None:
        return self.quality.verdict if self.status == ViewStatus.RAN and self.quality else None


@dataclass(frozen=True)
class Decision:
    """The model's verdict, which view decided it, why (``note``) and that view's figures."""

    verdict: Verdict
    decided_by: str              # chain | optimisation
    note: str
    quality: Quality


def combine(chain: ChainView, opt: OptimisationView, unsupported: tuple[str, ...] = (),
            defences: tuple = (), fedavg=None) -> Decision:
    """The model's verdict and the figures of the view that decides it (the larger leakage).
    ``unsupported``: ops no layer family handles; the note says how the verdict treated them.
    ``defences``: with Gaussian noise on the update the chain's exact solve does not apply, so the
    optimisation view (which models the noise) decides alone; likewise ``fedavg`` with more than
    one local step (the update is not one gradient at the shared weights)."""
    inexact = _chain_inexact(defences, fedavg)
    if opt.status == ViewStatus.RAN and inexact:
        note = _join(inexact, _unsupported_note(unsupported, opt) if unsupported else "", unmodelled_note(defences))
        return Decision(opt.verdict, "optimisation", note, opt.quality)
    if inexact:        # the view that should decide did not run: the chain's figure, never safe
        return Decision(Verdict.worst(chain.quality.verdict, Verdict.UNVERIFIED), "chain",
                        _join(inexact, f"the optimisation-attack view did not run: {opt.reason}",
                              _unsupported_note(unsupported, opt) if unsupported else "",
                              unmodelled_note(defences)), chain.quality)
    use_opt = opt.verdict is not None and opt.quality.leakage_score > chain.quality.leakage_score
    best = opt.quality if use_opt else chain.quality
    if opt.status == ViewStatus.RAN:
        verdict = Verdict.worst(chain.quality.verdict, opt.verdict)
        note = ""
    elif opt.status == ViewStatus.NOT_NEEDED:
        verdict, note = chain.quality.verdict, ""
    else:
        verdict = Verdict.worst(chain.quality.verdict, Verdict.UNVERIFIED)
        note = f"the optimisation-attack view did not run: {opt.reason}"
    if unsupported:
        note = _join(note, _unsupported_note(unsupported, opt))
    note = _join(note, unmodelled_note(defences))
    return Decision(verdict, "optimisation" if use_opt else "chain", note, best)


def _chain_inexact(defences: tuple, fedavg) -> str:
    """Why the closed-form chain (exact gradients, one step) does not decide, or ''."""
    if adds_noise(defences):
        return ("the shared update carries Gaussian noise: the closed-form chain assumes exact gradients, "
                "so the verdict is the optimisation view's, which loses every direction below the noise")
    if fedavg is not None and fedavg.unrolled:
        return chain_note(fedavg)
    return ""


def _join(*notes: str) -> str:
    return "; ".join(filter(None, notes))


def _unsupported_note(ops: tuple[str, ...], opt: OptimisationView) -> str:
    kinds = sorted(set(ops))
    shown = ", ".join(kinds[:4]) + (f" and {len(kinds) - 4} more" if len(kinds) > 4 else "")
    how = ("the optimisation view differentiated them exactly" if opt.status == ViewStatus.RAN
           else "nothing checked them: the verdict is not verified")
    return (f"{len(ops)} op{'s' if len(ops) > 1 else ''} no layer family handles ({shown}): the chain treats "
            f"them as transparent for values and opaque for gradients until their output is known; {how}")
