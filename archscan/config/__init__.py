"""Every default and tolerance in one frozen record."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from archscan.defences import adds_noise
from archscan.fedavg import LocalSteps

VERDICT_LEAKS = 0.95      # leakage score at or above: the image is (almost) fully recoverable
VERDICT_PARTIAL = 0.25    # at or above (and below LEAKS): a substantial part is recoverable
DEFAULT_ATTACKS = ("prior", "analytic", "rgap", "hybrid", "ig", "april")  # validate's default set
PRIOR_IMAGES = 24         # natural-image crops behind the predicted PSNR
DENSE_PROJECTOR_MAX = 3500  # unknowns up to which the null-space projector is computed densely
PSNR_CAP = 150.0          # float64 round-off floor for a determined image
LOCAL_TAU = 0.013         # the optimisation attacks' resolution, relative to LOCAL_REFERENCE (calibrated 2026-12-02: docs/scores.md)
LOCAL_REFERENCE = "gradient"    # threshold t = tau^2 * ||g||^2 / ||x - mu||^2 (the gradient's own scale)
LOCAL_FUNCTIONAL = "soft"       # weak energy v' t^2 (A + t)^-2 v (spectrum/estimate.py)
SYMMETRY_DELTA = 0.366    # at or below: the gradients cannot tell the image from its mirror / 1/8 shift (analysis/symmetry.py);
                          # fitted 2026-12-03 on the held-in networks (benchmarks/symmetry_fit.py: the geometric middle of
                          # the interval (0.236, 0.569) that separates them; docs/scores.md)
# archscan suggest (docs/suggest.md): each edit's size, the batch sizes tried (multiple -> size), and
# how many conv layers the stride / pool / filter edits are tried at
SUGGEST_COST = {"no-bias": 1.0, "activation": 2.0, "bn-train": 2.0, "stride": 3.0, "pool": 3.0, "filters": 4.0}
SUGGEST_BATCH_STEPS = {2: 2.0, 4: 3.0, 8: 4.0}
SUGGEST_CONVS = 2
LOCAL_SAMPLES = 8         # prior samples (each its own linearisation point) in the optimisation view
LOCAL_STEPS = 40          # Lanczos steps per sample at most (soft quadrature converges once steps >~ 1/tau)
LOCAL_PROBES = 2          # random probes for the count of recoverable directions
LOCAL_PRODUCTS = 150      # products with A the view plans for a model of LOCAL_REFERENCE_MACS (~60 s on 2 CPU cores)
LOCAL_REFERENCE_MACS = 5.6e8  # a CIFAR ResNet-18's multiply-accumulates per forward pass
LOCAL_MIN_PRODUCTS = 150  # never fewer: an ImageNet ResNet-18 gets 2 samples x 25 steps (~3-4 min on 2 CPU cores)
LOCAL_MIN_SAMPLES = 2     # samples the view always keeps; steps come before more samples
LOCAL_BUDGET_S = None     # wall-clock cap of the view: None = LOCAL_BUDGET_MAX_S; hit only on a slow machine
LOCAL_BUDGET_MAX_S = 600.0  # never more than this (10 min) unless --local-budget asks


@dataclass(frozen=True)
class ScanOptions:
    """What the user asked for; recorded in every report as the threat model."""

    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    batch_size: int = 1
    labels: str = "inferred"          # "known" | "inferred"
    bn_mode: str = "eval"             # "eval" | "train"
    relu_active: float = 0.5
    seed: int = 0
    draws: int = 2
    weights: str | None = None
    model_args: dict = field(default_factory=dict)
    local: str = "auto"               # "auto" | "on" | "off": the optimisation-attack view
    local_budget: float | None = LOCAL_BUDGET_S
    device: str = "cpu"               # where the optimisation view's products run (cuda[:N] when there is one)
    strict: bool = False              # an op no layer family handles is an error (exit 2), not a finding
    defences: tuple = ()              # archscan.defences.Defence, applied to the update in this order
    fedavg: LocalSteps = LocalSteps()  # the client's local SGD steps before it shares its update

    @property
    def noisy(self) -> bool:
        """A defence adds Gaussian noise: the chain's exact-gradient reasoning no longer applies."""
        return adds_noise(self.defences)

    @property
    def chain_exact(self) -> bool:
        """The shared update is one exact gradient at the shared weights, what the closed-form
        chain reasons about: no Gaussian noise and a single local step."""
        return not self.noisy and not self.fedavg.unrolled

    def threat_model(self) -> dict:
        d = asdict(self)
        return {
            "batch_size": d["batch_size"], "labels": d["labels"],
            "weights": "given" if self.weights else "generic", "bn_mode": d["bn_mode"],
            "relu_active_fraction": d["relu_active"], "seed": d["seed"], "rank_draws": d["draws"],
            "optimisation_view": d["local"], "optimisation_budget_s": d["local_budget"],
            "defences": [x.to_dict() for x in self.defences], "fedavg": self.fedavg.to_dict(),
            "attacker": "knows the architecture, every weight and every shared gradient",
        }
